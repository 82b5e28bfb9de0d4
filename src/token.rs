//! API and agent tokens. A token is shown once when created; only its SHA-256 is stored.

use rand::RngCore;

use crate::domain::Millis;
use crate::store::{Store, StoreResult, TokenSubject};

/// Creates a token for `subject` and returns it in clear text, the only time it exists as such.
pub async fn create(store: &dyn Store, subject: &TokenSubject, now: Millis) -> StoreResult<String> {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    let token = format!("hoop_{}", hex::encode(bytes));
    store.insert_token(&digest(&token), subject, now).await?;
    Ok(token)
}

/// What is stored and looked up for a token.
pub fn digest(token: &str) -> String {
    crate::domain::command_sha256(token)
}
