//! Signing in. The web app's session: an API token given on the sign-in page, or a sign-on the
//! identity provider vouched for, opens a server-side session that the browser holds by a random
//! cookie. The session acts with its token for as long as the token stands (revoking it, or its
//! expiry, ends the session) and at most [`SESSION_TTL`]; signing out ends it at once.
//!
//! A sign-on makes a token of its own, which lasts `oidc.token_ttl` and carries the groups the
//! identity provider listed; `hoop login` in a browser hands a signed-in person's command line a
//! token of the same kind. Only SHA-256s of cookies, tokens and codes are kept.

use std::collections::BTreeSet;
use std::time::Duration;

use base64::Engine;
use sha2::{Digest, Sha256};

use super::Hoop;
use crate::domain::{Email, Identity, Millis, Surface};
use crate::error::{Error, Result};
use crate::store::{ActiveToken, CliGrant, SignInAttempt, TokenSubject, TokenTerms, WebSession};
use crate::token::Operator;

/// How long a web session lasts at most.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 60 * 60);

/// A signed-in browser: who it acts as, the token its forms carry, and the API token it acts
/// with.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub user: Identity,
    pub csrf: String,
    pub token_sha256: String,
}

/// A new session's cookie value (the only time it exists in clear) and what it signs in.
pub struct NewSession {
    pub cookie: String,
    pub signed_in: SignedIn,
}

/// Someone the identity provider vouched for, from a checked ID token.
#[derive(Debug, Clone)]
pub struct Vouched {
    pub email: Email,
    /// The groups its groups claim listed; empty when none is configured.
    pub groups: BTreeSet<String>,
}

/// A token handed to `hoop login`.
pub struct CliToken {
    pub token: String,
    pub user: Identity,
    pub expires_at: Millis,
}

fn random() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

fn millis(d: Duration) -> Millis {
    d.as_millis() as Millis
}

impl Hoop {
    /// Opens a session for the user whose API token `token` is; `unauthenticated` for an
    /// unknown, revoked or expired token, `forbidden` for an agent's.
    pub async fn sign_in(&self, token: &str) -> Result<NewSession> {
        let (token, token_sha256) = self.authenticate(token.trim()).await?;
        let user = self.holder(&token)?;
        self.open_session(user, token_sha256).await
    }

    /// Opens a session for someone the identity provider vouched for: a configured user (with
    /// their config groups, and the claimed ones), or, with `oidc.allow_unlisted_users`, anyone,
    /// with the claimed groups only. The session acts with a new token that lasts
    /// `oidc.token_ttl`, audited as made by that person on the web.
    pub async fn sign_in_vouched(&self, vouched: Vouched) -> Result<NewSession> {
        // The token is never shown: the browser holds the session's cookie instead.
        let (_, token_sha256, user) = self.token_for_vouched(&vouched).await?;
        self.open_session(user, token_sha256).await
    }

    async fn token_for_vouched(&self, vouched: &Vouched) -> Result<(String, String, Identity)> {
        let oidc = self.config.oidc.as_ref().ok_or_else(|| {
            Error::InvalidInput("single sign-on is not configured on this server".into())
        })?;
        let subject = match self.config.user(&vouched.email) {
            Some(listed) => TokenSubject::User(listed.email.clone()),
            None if oidc.allow_unlisted_users => TokenSubject::User(vouched.email.clone()),
            None => {
                tracing::warn!(email = %vouched.email.as_str(), "refused a sign-on of someone not in the config");
                return Err(Error::Forbidden(format!(
                    "the identity provider signed you in as {}, who is not a user here; ask an admin to add you under [[users]]",
                    vouched.email.as_str()
                )));
            }
        };
        let terms = TokenTerms {
            expires_at: Some(self.clock.now() + millis(oidc.token_ttl)),
            claimed_groups: Some(vouched.groups.clone()),
        };
        let active = ActiveToken {
            subject: subject.clone(),
            terms: terms.clone(),
        };
        let user = self.holder(&active)?;
        let by = Operator {
            actor: user.email.as_str().to_string(),
            channel: Surface::Web,
        };
        let token =
            crate::token::issue(self.store.as_ref(), &subject, &terms, &by, self.clock.now())
                .await
                .map_err(Error::Internal)?;
        let token_sha256 = crate::token::digest(&token);
        Ok((token, token_sha256, user))
    }

    async fn open_session(&self, user: Identity, token_sha256: String) -> Result<NewSession> {
        let now = self.clock.now();
        let cookie = random();
        let session = WebSession {
            sha256: crate::token::digest(&cookie),
            token_sha256,
            csrf: random(),
            created_at: now,
            expires_at: now + millis(SESSION_TTL),
        };
        self.store.start_session(&session).await?;
        tracing::info!(user = %user.email.as_str(), "signed in to the web app");
        Ok(NewSession {
            cookie,
            signed_in: SignedIn {
                user,
                csrf: session.csrf,
                token_sha256: session.token_sha256,
            },
        })
    }

    /// Who the session behind `cookie` acts as; `None` when there is no such session, it ended
    /// or expired, or its token was revoked or expired.
    pub async fn signed_in(&self, cookie: &str) -> Result<Option<SignedIn>> {
        let Some(session) = self
            .store
            .find_session(&crate::token::digest(cookie), self.clock.now())
            .await?
        else {
            return Ok(None);
        };
        let Some(token) = self.store.find_token(&session.token_sha256).await? else {
            return Ok(None);
        };
        if token.terms.expired(self.clock.now()) {
            return Ok(None);
        }
        Ok(Some(SignedIn {
            user: self.holder(&token)?,
            csrf: session.csrf,
            token_sha256: session.token_sha256,
        }))
    }

    /// Keeps a single sign-on under way until the browser is back from the identity provider.
    pub async fn start_sign_in(&self, attempt: &SignInAttempt) -> Result<()> {
        match self.store.start_sign_in(attempt).await? {
            true => Ok(()),
            false => {
                tracing::warn!("refused a single sign-on: too many are under way");
                Err(Error::RateLimited {
                    message: "too many sign-ins are under way; try again in a minute".into(),
                    retry_after: Duration::from_secs(60),
                })
            }
        }
    }

    /// Takes the single sign-on `state` names, once, unless it lapsed.
    pub async fn take_sign_in(&self, state: &str) -> Result<Option<SignInAttempt>> {
        Ok(self
            .store
            .take_sign_in(&crate::token::digest(state), self.now().await?)
            .await?)
    }

    /// Ends the session behind `cookie`, if open.
    pub async fn sign_out(&self, cookie: &str) -> Result<()> {
        self.store
            .end_session(&crate::token::digest(cookie), self.clock.now())
            .await?;
        Ok(())
    }

    /// The signed-in `me` allows a `hoop login` on their computer, which asked with `challenge`
    /// (base64url of the SHA-256 of a secret only it knows): the code it is handed, redeemable
    /// once, within minutes, with that secret.
    pub async fn grant_cli(&self, me: &SignedIn, challenge: &str) -> Result<String> {
        let challenge = challenge.trim();
        let well_formed = challenge.len() == 43
            && base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(challenge)
                .is_ok_and(|d| d.len() == 32);
        if !well_formed {
            return Err(Error::InvalidInput(
                "the sign-in link from `hoop login` is damaged (its challenge is not a SHA-256); run `hoop login` again".into(),
            ));
        }
        let code = random();
        self.store
            .grant_cli(&CliGrant {
                code_sha256: crate::token::digest(&code),
                challenge: challenge.to_string(),
                token_sha256: me.token_sha256.clone(),
                expires_at: self.clock.now() + millis(crate::store::SIGN_IN_STEP_TTL),
            })
            .await?;
        tracing::info!(user = %me.user.email.as_str(), "allowed a hoop login");
        Ok(code)
    }

    /// `hoop login` redeems the code its browser handed it, with the secret behind the grant's
    /// challenge: a new token for the same person, with the same claimed groups, lasting
    /// `oidc.token_ttl` (or [`crate::config::DEFAULT_TOKEN_TTL`] without single sign-on).
    /// Anything amiss (unknown, used or lapsed code, wrong secret, the browser's token revoked
    /// since) is `unauthenticated`, and the code is spent either way.
    pub async fn redeem_cli_grant(&self, code: &str, verifier: &str) -> Result<CliToken> {
        let refused = || {
            Error::Unauthenticated(
                "this sign-in is unknown, used or lapsed; run `hoop login` again".into(),
            )
        };
        let grant = self
            .store
            .take_cli_grant(&crate::token::digest(code.trim()), self.clock.now())
            .await?
            .ok_or_else(refused)?;
        let answer = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(Sha256::digest(verifier.trim().as_bytes()));
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            answer.as_bytes(),
            grant.challenge.as_bytes(),
        )) {
            return Err(refused());
        }
        let browsers = self
            .store
            .find_token(&grant.token_sha256)
            .await?
            .filter(|t| !t.terms.expired(self.clock.now()))
            .ok_or_else(refused)?;
        let user = self.holder(&browsers)?;
        let ttl = self.sso_token_ttl();
        let terms = TokenTerms {
            expires_at: Some(self.clock.now() + millis(ttl)),
            claimed_groups: browsers.terms.claimed_groups.clone(),
        };
        let by = Operator {
            actor: user.email.as_str().to_string(),
            channel: Surface::Cli,
        };
        let token = crate::token::issue(
            self.store.as_ref(),
            &browsers.subject,
            &terms,
            &by,
            self.clock.now(),
        )
        .await
        .map_err(Error::Internal)?;
        tracing::info!(user = %user.email.as_str(), "hoop login signed in");
        Ok(CliToken {
            token,
            user,
            expires_at: terms.expires_at.expect("set above"),
        })
    }

    /// How long a token made by signing in (single sign-on, `hoop login`) lasts.
    pub fn sso_token_ttl(&self) -> Duration {
        self.config
            .oidc
            .as_ref()
            .map_or(crate::config::DEFAULT_TOKEN_TTL, |o| o.token_ttl)
    }

    /// The person a user token acts for, with their groups now: a configured user's groups, and
    /// those the identity provider claimed when the token was made (while a groups claim is
    /// configured); someone not in the config only while `oidc.allow_unlisted_users` lets
    /// sign-ons in. Agents' tokens act for nobody here.
    pub fn holder(&self, token: &ActiveToken) -> Result<Identity> {
        let email = match &token.subject {
            TokenSubject::User(email) => email,
            TokenSubject::Agent(_) => {
                return Err(Error::Forbidden(
                    "an agent token acts for no person; use a user's token".into(),
                ));
            }
        };
        let oidc = self.config.oidc.as_ref();
        let claimed = token
            .terms
            .claimed_groups
            .as_ref()
            .filter(|_| oidc.is_some_and(|o| o.groups_claim.is_some()));
        let mut user = match self.identity(email) {
            Some(user) => user,
            None if token.terms.claimed_groups.is_some()
                && oidc.is_some_and(|o| o.allow_unlisted_users) =>
            {
                Identity {
                    email: email.clone(),
                    groups: BTreeSet::new(),
                    is_admin: false,
                }
            }
            None => {
                return Err(Error::Forbidden(format!(
                    "user {email} is no longer in the configuration"
                )));
            }
        };
        if let Some(claimed) = claimed {
            user.groups.extend(claimed.iter().cloned());
            user.is_admin = user.groups.contains(&self.config.server.admin_group);
        }
        Ok(user)
    }
}
