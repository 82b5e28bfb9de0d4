//! Web app sessions (see migrations/*/0008_web_sessions.sql): what a signed-in browser's cookie
//! stands for. Shared SQL for both backends, like signatures.rs.

use async_trait::async_trait;

use super::StoreResult;
use crate::domain::Millis;

/// A web session as kept: the SHA-256 of its cookie's value, never the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebSession {
    pub sha256: String,
    /// The API token it was opened with: the session acts as that token's user, while the
    /// token stands.
    pub token_sha256: String,
    /// The token its pages' forms carry (CSRF).
    pub csrf: String,
    pub created_at: Millis,
    pub expires_at: Millis,
}

#[async_trait]
pub trait Sessions: Send + Sync {
    async fn start_session(&self, session: &WebSession) -> StoreResult<()>;
    /// The session whose cookie has SHA-256 `sha256`, unless it ended or expired by `now`.
    async fn find_session(&self, sha256: &str, now: Millis) -> StoreResult<Option<WebSession>>;
    /// Ends the session (signing out); true if it was still open.
    async fn end_session(&self, sha256: &str, now: Millis) -> StoreResult<bool>;
}

macro_rules! session_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::Sessions for $store {
            async fn start_session(&self, session: &$crate::store::WebSession) -> StoreResult<()> {
                sqlx::query(
                    "insert into web_session (sha256, token_sha256, csrf, created_at, expires_at) \
                     values ($1, $2, $3, $4, $5)",
                )
                .bind(&session.sha256)
                .bind(&session.token_sha256)
                .bind(&session.csrf)
                .bind(session.created_at)
                .bind(session.expires_at)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn find_session(
                &self,
                sha256: &str,
                now: $crate::domain::Millis,
            ) -> StoreResult<Option<$crate::store::WebSession>> {
                let row = sqlx::query(
                    "select sha256, token_sha256, csrf, created_at, expires_at from web_session \
                     where sha256 = $1 and ended_at is null and expires_at > $2",
                )
                .bind(sha256)
                .bind(now)
                .fetch_optional(&self.pool)
                .await?;
                row.map(|row| {
                    Ok($crate::store::WebSession {
                        sha256: row.try_get("sha256")?,
                        token_sha256: row.try_get("token_sha256")?,
                        csrf: row.try_get("csrf")?,
                        created_at: row.try_get("created_at")?,
                        expires_at: row.try_get("expires_at")?,
                    })
                })
                .transpose()
            }

            async fn end_session(
                &self,
                sha256: &str,
                now: $crate::domain::Millis,
            ) -> StoreResult<bool> {
                let ended = sqlx::query(
                    "update web_session set ended_at = $2 where sha256 = $1 and ended_at is null",
                )
                .bind(sha256)
                .bind(now)
                .execute(&self.pool)
                .await?;
                Ok(ended.rows_affected() == 1)
            }
        }
    };
}
