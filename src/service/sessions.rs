//! The web app's sign-in: an API token, given once on the sign-in page, opens a server-side
//! session that the browser holds by a random cookie. The session acts as the token's user for as
//! long as the token stands (revoking it ends the session) and at most [`SESSION_TTL`]; signing
//! out ends it at once. Only SHA-256s of the cookie and the token are kept.

use std::time::Duration;

use super::Hoop;
use crate::domain::{Identity, Millis};
use crate::error::{Error, Result};
use crate::store::{TokenSubject, WebSession};

/// How long a web session lasts at most.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 60 * 60);

/// A signed-in browser: who it acts as, and the token its forms carry.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub user: Identity,
    pub csrf: String,
}

/// A new session's cookie value (the only time it exists in clear) and what it signs in.
pub struct NewSession {
    pub cookie: String,
    pub signed_in: SignedIn,
}

fn random() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

impl Hoop {
    /// Opens a session for the user whose API token `token` is; `unauthenticated` for an
    /// unknown or revoked token, `forbidden` for an agent's.
    pub async fn sign_in(&self, token: &str) -> Result<NewSession> {
        let (subject, token_sha256) = self.authenticate(token.trim()).await?;
        let user = self.user_of(subject)?;
        let now = self.clock.now();
        let cookie = random();
        let session = WebSession {
            sha256: crate::token::digest(&cookie),
            token_sha256,
            csrf: random(),
            created_at: now,
            expires_at: now + SESSION_TTL.as_millis() as Millis,
        };
        self.store.start_session(&session).await?;
        tracing::info!(user = %user.email.as_str(), "signed in to the web app");
        Ok(NewSession {
            cookie,
            signed_in: SignedIn {
                user,
                csrf: session.csrf,
            },
        })
    }

    /// Who the session behind `cookie` acts as; `None` when there is no such session, it ended
    /// or expired, or its token was revoked.
    pub async fn signed_in(&self, cookie: &str) -> Result<Option<SignedIn>> {
        let Some(session) = self
            .store
            .find_session(&crate::token::digest(cookie), self.clock.now())
            .await?
        else {
            return Ok(None);
        };
        let Some(subject) = self.store.find_token(&session.token_sha256).await? else {
            return Ok(None);
        };
        Ok(Some(SignedIn {
            user: self.user_of(subject)?,
            csrf: session.csrf,
        }))
    }

    /// Ends the session behind `cookie`, if open.
    pub async fn sign_out(&self, cookie: &str) -> Result<()> {
        self.store
            .end_session(&crate::token::digest(cookie), self.clock.now())
            .await?;
        Ok(())
    }

    /// The configured user a token names; agents do not sign in.
    fn user_of(&self, subject: TokenSubject) -> Result<Identity> {
        match subject {
            TokenSubject::User(email) => self.identity(&email).ok_or_else(|| {
                Error::Forbidden(format!("user {email} is no longer in the configuration"))
            }),
            TokenSubject::Agent(_) => Err(Error::Forbidden(
                "an agent token cannot sign in; use a user's token".into(),
            )),
        }
    }
}
