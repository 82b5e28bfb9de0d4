//! Web app sessions (see migrations/*/0008_web_sessions.sql): what a signed-in browser's cookie
//! stands for; and the steps on the way to one (0010_sign_in.sql): a single sign-on waiting for
//! the browser's return from the identity provider, and a `hoop login` waiting for its token.
//! Shared SQL for both backends, like signatures.rs.

use async_trait::async_trait;

use super::StoreResult;
use crate::domain::Millis;

/// How long a sign-in step (a sign-on's trip to the identity provider, a `hoop login` grant)
/// may take: a person typing a password, not a day.
pub const STEP_TTL: std::time::Duration = std::time::Duration::from_secs(10 * 60);
pub(crate) const STEP_TTL_MS: crate::domain::Millis = STEP_TTL.as_millis() as crate::domain::Millis;

/// Single sign-ons under way at most. Starting one needs no credential, so without a bound a
/// flood of starts would fill the table until they lapse; far more than people sign in at once.
pub const MAX_SIGN_INS_UNDER_WAY: i64 = 10_000;

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

/// A single sign-on under way: what the browser's return from the identity provider must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignInAttempt {
    /// The SHA-256 of the `state` the identity provider hands back.
    pub state_sha256: String,
    /// The ID token must carry it.
    pub nonce: String,
    /// The PKCE secret the authorization code is exchanged with.
    pub pkce_verifier: String,
    /// The local page to go to once signed in.
    pub next: String,
    pub expires_at: Millis,
}

/// A signed-in browser allowed `hoop login` on its computer to have a token: the command line
/// redeems the code it was handed, once, with the verifier behind `challenge`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliGrant {
    pub code_sha256: String,
    /// base64url(SHA-256(verifier)), as PKCE's S256.
    pub challenge: String,
    /// The browser session's token: the new token is for its holder, with its groups.
    pub token_sha256: String,
    pub expires_at: Millis,
}

#[async_trait]
pub trait Sessions: Send + Sync {
    /// Keeps a single sign-on under way (and forgets those that lapsed); false, keeping nothing,
    /// when [`MAX_SIGN_INS_UNDER_WAY`] are.
    async fn start_sign_in(&self, attempt: &SignInAttempt) -> StoreResult<bool>;
    /// Takes the sign-on whose `state` has SHA-256 `state_sha256`, once, unless it lapsed.
    async fn take_sign_in(
        &self,
        state_sha256: &str,
        now: Millis,
    ) -> StoreResult<Option<SignInAttempt>>;
    /// Keeps a grant to a command line (and forgets those that lapsed).
    async fn grant_cli(&self, grant: &CliGrant) -> StoreResult<()>;
    /// Takes the grant whose code has SHA-256 `code_sha256`, once, unless it lapsed.
    async fn take_cli_grant(&self, code_sha256: &str, now: Millis)
    -> StoreResult<Option<CliGrant>>;
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
            async fn start_sign_in(&self, attempt: &$crate::store::SignInAttempt) -> StoreResult<bool> {
                // Those that lapsed by the time this one began.
                sqlx::query("delete from sign_in_attempt where expires_at <= $1")
                    .bind(attempt.expires_at - $crate::store::sessions::STEP_TTL_MS)
                    .execute(&self.pool)
                    .await?;
                let under_way: i64 = sqlx::query_scalar("select count(*) from sign_in_attempt")
                    .fetch_one(&self.pool)
                    .await?;
                if under_way >= $crate::store::sessions::MAX_SIGN_INS_UNDER_WAY {
                    return Ok(false);
                }
                sqlx::query(
                    "insert into sign_in_attempt (state_sha256, nonce, pkce_verifier, next, expires_at) \
                     values ($1, $2, $3, $4, $5)",
                )
                .bind(&attempt.state_sha256)
                .bind(&attempt.nonce)
                .bind(&attempt.pkce_verifier)
                .bind(&attempt.next)
                .bind(attempt.expires_at)
                .execute(&self.pool)
                .await?;
                Ok(true)
            }

            async fn take_sign_in(
                &self,
                state_sha256: &str,
                now: $crate::domain::Millis,
            ) -> StoreResult<Option<$crate::store::SignInAttempt>> {
                let row = sqlx::query(
                    "delete from sign_in_attempt where state_sha256 = $1 \
                     returning state_sha256, nonce, pkce_verifier, next, expires_at",
                )
                .bind(state_sha256)
                .fetch_optional(&self.pool)
                .await?;
                let attempt = row
                    .map(|row| {
                        Ok::<_, $crate::store::StoreError>($crate::store::SignInAttempt {
                            state_sha256: row.try_get("state_sha256")?,
                            nonce: row.try_get("nonce")?,
                            pkce_verifier: row.try_get("pkce_verifier")?,
                            next: row.try_get("next")?,
                            expires_at: row.try_get("expires_at")?,
                        })
                    })
                    .transpose()?;
                Ok(attempt.filter(|a| a.expires_at > now))
            }

            async fn grant_cli(&self, grant: &$crate::store::CliGrant) -> StoreResult<()> {
                sqlx::query("delete from cli_grant where expires_at <= $1")
                    .bind(grant.expires_at - $crate::store::sessions::STEP_TTL_MS)
                    .execute(&self.pool)
                    .await?;
                sqlx::query(
                    "insert into cli_grant (code_sha256, challenge, token_sha256, expires_at) \
                     values ($1, $2, $3, $4)",
                )
                .bind(&grant.code_sha256)
                .bind(&grant.challenge)
                .bind(&grant.token_sha256)
                .bind(grant.expires_at)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn take_cli_grant(
                &self,
                code_sha256: &str,
                now: $crate::domain::Millis,
            ) -> StoreResult<Option<$crate::store::CliGrant>> {
                let row = sqlx::query(
                    "delete from cli_grant where code_sha256 = $1 \
                     returning code_sha256, challenge, token_sha256, expires_at",
                )
                .bind(code_sha256)
                .fetch_optional(&self.pool)
                .await?;
                let grant = row
                    .map(|row| {
                        Ok::<_, $crate::store::StoreError>($crate::store::CliGrant {
                            code_sha256: row.try_get("code_sha256")?,
                            challenge: row.try_get("challenge")?,
                            token_sha256: row.try_get("token_sha256")?,
                            expires_at: row.try_get("expires_at")?,
                        })
                    })
                    .transpose()?;
                Ok(grant.filter(|g| g.expires_at > now))
            }

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
