//! Slack request signatures already accepted (see migrations/*/0006_slack_signatures.sql), so a
//! signed request is acted on once, by whichever replica gets it first. Shared SQL for both
//! backends, like accounts.rs.

use async_trait::async_trait;

use super::StoreResult;
use crate::domain::Millis;

/// Signatures forgotten (deleted) by one sighting at most, so a backlog is worked off a little at
/// a time instead of by one long statement.
pub const FORGET_BATCH: i64 = 100;

#[async_trait]
pub trait Signatures: Send + Sync {
    /// Records the signature whose SHA-256 is `sha256` as seen at `now`; true if it was not seen
    /// before (one insert that does nothing on a conflict, so two replicas that get the same
    /// request at once cannot both be told it is new). First forgets up to [`FORGET_BATCH`]
    /// signatures seen before `forget_before`, which could no longer pass their time check.
    async fn first_sighting(
        &self,
        sha256: &str,
        now: Millis,
        forget_before: Millis,
    ) -> StoreResult<bool>;
}

macro_rules! signature_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::Signatures for $store {
            async fn first_sighting(
                &self,
                sha256: &str,
                now: $crate::domain::Millis,
                forget_before: $crate::domain::Millis,
            ) -> StoreResult<bool> {
                sqlx::query(
                    "delete from slack_signature where sha256 in \
                     (select sha256 from slack_signature where seen_at < $1 limit $2)",
                )
                .bind(forget_before)
                .bind($crate::store::signatures::FORGET_BATCH)
                .execute(&self.pool)
                .await?;
                let inserted = sqlx::query(
                    "insert into slack_signature (sha256, seen_at) values ($1, $2) \
                     on conflict (sha256) do nothing",
                )
                .bind(sha256)
                .bind(now)
                .execute(&self.pool)
                .await?;
                Ok(inserted.rows_affected() == 1)
            }
        }
    };
}
