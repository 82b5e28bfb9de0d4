//! Slack request signatures already accepted (see migrations/*/0006_slack_signatures.sql), so a
//! signed request is acted on once, by whichever replica gets it first. A sighting is one more
//! write of the group commit (`Write::Sighting`), so it shares its transaction and flush with the
//! decisions queued beside it instead of taking the write lock on its own; signatures that could
//! no longer pass their time check are forgotten by the sweeper, not on the request's path.

use async_trait::async_trait;

use super::StoreResult;
use crate::domain::Millis;

/// A chat request's signature seen at a time: its SHA-256, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sighting {
    pub sha256: String,
    pub at: Millis,
}

#[async_trait]
pub trait Signatures: Send + Sync {
    /// Records the signature whose SHA-256 is `sha256` as seen at `now`; true if it was not seen
    /// before (one insert that does nothing on a conflict, so two replicas that get the same
    /// request at once cannot both be told it is new).
    async fn first_sighting(&self, sha256: &str, now: Millis) -> StoreResult<bool>;

    /// Forgets at most `limit` signatures seen before `before`; how many it forgot.
    async fn forget_signatures(&self, before: Millis, limit: i64) -> StoreResult<u64>;
}

macro_rules! signature_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::Signatures for $store {
            async fn first_sighting(
                &self,
                sha256: &str,
                now: $crate::domain::Millis,
            ) -> StoreResult<bool> {
                let sighting = Write::Sighting($crate::store::Sighting {
                    sha256: sha256.to_string(),
                    at: now,
                });
                match self.writes.write(sighting).await {
                    Ok(_) => Ok(true),
                    Err(StoreError::Conflict) => Ok(false),
                    Err(e) => Err(e),
                }
            }

            async fn forget_signatures(
                &self,
                before: $crate::domain::Millis,
                limit: i64,
            ) -> StoreResult<u64> {
                let forgotten = sqlx::query(
                    "delete from slack_signature where sha256 in \
                     (select sha256 from slack_signature where seen_at < $1 limit $2)",
                )
                .bind(before)
                .bind(limit)
                .execute(&self.pool)
                .await?;
                Ok(forgotten.rows_affected())
            }
        }
    };
}
