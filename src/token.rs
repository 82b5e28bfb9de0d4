//! API and agent tokens. A token is shown once when created; only its SHA-256 is stored.
//!
//! Issuing and revoking are use cases of the service ([`crate::service::Hoop::issue_token`] and
//! [`crate::service::Hoop::revoke_tokens`]), built on `issue` and `revoke` here, which record who
//! did it in the audit trail, in the transaction that makes the change. Token events are not
//! about a request: their `request_id` is `token:<id>`, where the id is the first [`ID_LEN`] hex
//! digits of the token's SHA-256 (never the token itself).

use anyhow::Context;
use rand::RngCore;

use crate::audit::AuditKind;
use crate::domain::{Millis, Surface};
use crate::store::{
    AuditEntry, Store, StoreResult, SubjectEvent, TokenRecord, TokenSelector, TokenSubject,
    TokenTerms,
};

/// How many hex digits of a token's SHA-256 name it in `hoop token list` and the audit trail.
pub const ID_LEN: usize = 12;

/// Who issues or revokes tokens, as the audit trail records them.
#[derive(Debug, Clone)]
pub struct Operator {
    pub actor: String,
    pub channel: Surface,
}

impl Operator {
    /// The person running the `hoop` command line: their OS user, or `cli` when it is unknown.
    pub fn cli() -> Operator {
        let user = ["USER", "LOGNAME"]
            .iter()
            .find_map(|var| std::env::var(var).ok().filter(|u| !u.trim().is_empty()));
        Operator {
            actor: user.unwrap_or_else(|| "cli".into()),
            channel: Surface::Cli,
        }
    }

    /// hoopbot itself (the demo's tokens), as in [`AuditEntry::system`].
    pub fn system() -> Operator {
        Operator {
            actor: "hoopbot".into(),
            channel: Surface::System,
        }
    }

    /// The audit event of `kind` about the token with SHA-256 `digest`, under `token:<id>`.
    fn event(
        &self,
        kind: AuditKind,
        subject: &TokenSubject,
        terms: &TokenTerms,
        digest: &str,
    ) -> SubjectEvent {
        let (subject_kind, name) = match subject {
            TokenSubject::User(email) => ("user", email.as_str()),
            TokenSubject::Agent(name) => ("agent", name.as_str()),
        };
        SubjectEvent {
            subject_id: audit_id(digest),
            entry: AuditEntry {
                kind,
                actor: self.actor.clone(),
                channel: self.channel,
                detail: {
                    let mut detail = serde_json::json!({
                        "token_id": id(digest),
                        "subject_kind": subject_kind,
                        "subject": name,
                    });
                    if let Some(at) = terms.expires_at {
                        detail["expires_at"] = crate::domain::rfc3339(at).into();
                    }
                    if let Some(groups) = &terms.claimed_groups {
                        detail["claimed_groups"] = serde_json::json!(groups);
                    }
                    detail
                },
            },
        }
    }
}

/// Creates a token for `subject` and returns it in clear text, the only time it exists as such.
/// Records no audit event: for test fixtures. Operators' tokens go through `issue`, by way of
/// the service.
pub async fn create(store: &dyn Store, subject: &TokenSubject, now: Millis) -> StoreResult<String> {
    let token = generate();
    store
        .insert_token(&digest(&token), subject, &TokenTerms::default(), now, &[])
        .await?;
    Ok(token)
}

/// Creates a token for `subject` on behalf of `by`, with a `token_created` audit event in the
/// same transaction, and returns it in clear text: no token is ever usable without its trace.
pub(crate) async fn issue(
    store: &dyn Store,
    subject: &TokenSubject,
    terms: &TokenTerms,
    by: &Operator,
    now: Millis,
) -> anyhow::Result<String> {
    let token = generate();
    let digest = digest(&token);
    let event = by.event(AuditKind::TokenCreated, subject, terms, &digest);
    store
        .insert_token(&digest, subject, terms, now, &[event])
        .await
        .context("cannot issue the token")?;
    Ok(token)
}

/// Which tokens an operator revokes.
#[derive(Debug, Clone)]
pub enum Revocation {
    /// The token itself, as issued.
    Token(String),
    /// A token's id (a prefix of its SHA-256, as `hoop token list` shows it).
    Id(String),
    /// Every token of a user or agent.
    Subject(TokenSubject),
}

/// Revokes the tokens `which` names on behalf of `by`, with a `token_revoked` audit event for each
/// in the same transaction, and returns the ones that were still active.
pub(crate) async fn revoke(
    store: &dyn Store,
    which: Revocation,
    by: &Operator,
    now: Millis,
) -> anyhow::Result<Vec<TokenRecord>> {
    let selector = match which {
        Revocation::Token(token) => TokenSelector::Digest(digest(&token)),
        Revocation::Subject(subject) => TokenSelector::Subject(subject),
        Revocation::Id(prefix) => TokenSelector::Digest(resolve(store, &prefix).await?),
    };
    let audit = |token: &TokenRecord| {
        by.event(
            AuditKind::TokenRevoked,
            &token.subject,
            &TokenTerms::default(),
            &token.sha256,
        )
    };
    Ok(store.revoke_tokens(&selector, now, &audit).await?)
}

/// The one token whose SHA-256 starts with `prefix`.
async fn resolve(store: &dyn Store, prefix: &str) -> anyhow::Result<String> {
    let prefix = prefix.trim().to_ascii_lowercase();
    anyhow::ensure!(
        prefix.len() >= 4 && prefix.chars().all(|c| c.is_ascii_hexdigit()),
        "a token id is at least 4 hex digits, as `hoop token list` shows it (got {prefix:?})"
    );
    let matching: Vec<TokenRecord> = store
        .list_tokens()
        .await?
        .into_iter()
        .filter(|t| t.sha256.starts_with(&prefix))
        .collect();
    match matching.as_slice() {
        [one] => Ok(one.sha256.clone()),
        [] => anyhow::bail!("no token has the id {prefix}; see `hoop token list`"),
        many => anyhow::bail!(
            "the id {prefix} is ambiguous: {} tokens start with it; give more digits",
            many.len()
        ),
    }
}

/// What is stored and looked up for a token.
pub fn digest(token: &str) -> String {
    crate::domain::command_sha256(token)
}

/// A token's id: the first [`ID_LEN`] hex digits of its SHA-256.
pub fn id(digest: &str) -> &str {
    &digest[..digest.len().min(ID_LEN)]
}

/// The audit trail's `request_id` for events about a token.
fn audit_id(digest: &str) -> String {
    format!("token:{}", id(digest))
}

fn generate() -> String {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    format!("hoop_{}", hex::encode(bytes))
}
