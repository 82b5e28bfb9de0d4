//! The token use cases: issuing and revoking API and agent tokens, each recorded in the audit
//! trail (see [`crate::token`]), and listing them. The demo and `hoop token …` both go through
//! these, so every surface that hands out tokens obeys the same rules.

use anyhow::Context;

use super::Hoop;
use crate::config::EMBEDDED_AGENT;
use crate::error::Result;
use crate::store::{TokenRecord, TokenSubject, TokenTerms};
use crate::token::{Operator, Revocation};

impl Hoop {
    /// Issues a token for `subject` on behalf of `by`, lasting `expires_in` (or until revoked),
    /// with a `token_created` audit event, and
    /// returns it in clear text, the only time it exists as such. A user must be in the config
    /// (the token names them as the config spells them); no token may act as the server's own
    /// in-process agent, or it could take the jobs of the connections the server runs itself.
    pub async fn issue_token(
        &self,
        subject: &TokenSubject,
        expires_in: Option<std::time::Duration>,
        by: &Operator,
    ) -> anyhow::Result<String> {
        let subject = match subject {
            TokenSubject::Agent(agent) if agent == EMBEDDED_AGENT => anyhow::bail!(
                "the agent name {agent} is reserved for the connections `hoop serve` runs itself; choose another name"
            ),
            TokenSubject::Agent(agent) => TokenSubject::Agent(agent.clone()),
            TokenSubject::User(email) => {
                let user = self.config.user(email).with_context(|| {
                    format!("{email} is not a user in the config; add it under [[users]] first")
                })?;
                TokenSubject::User(user.email.clone())
            }
        };
        let now = self.clock.now();
        let terms = TokenTerms {
            expires_at: expires_in.map(|d| now + d.as_millis() as crate::domain::Millis),
            claimed_groups: None,
        };
        crate::token::issue(self.store.as_ref(), &subject, &terms, by, now).await
    }

    /// Revokes the tokens `which` names on behalf of `by`, with a `token_revoked` audit event for
    /// each, and returns the ones that were still active. This replica stops accepting them at
    /// once; others within [`crate::store::TOKEN_TTL`].
    pub async fn revoke_tokens(
        &self,
        which: Revocation,
        by: &Operator,
    ) -> anyhow::Result<Vec<TokenRecord>> {
        crate::token::revoke(self.store.as_ref(), which, by, self.clock.now()).await
    }

    /// Every issued token, revoked ones included (their SHA-256s, never the tokens).
    pub async fn tokens(&self) -> Result<Vec<TokenRecord>> {
        Ok(self.store.list_tokens().await?)
    }
}
