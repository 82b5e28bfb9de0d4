//! Linking chat accounts (a Slack user) to hoopbot users, so a click in chat acts as the person
//! behind it. A link needs proof from both sides: the chat says who clicked (a signed request),
//! and the hoopbot user confirms the one-time code shown there while signed in (`hoop subscribe
//! CODE`). Where the operator allows it, a chat email the chat itself has verified links at once.
//! Every link and unlink commits with its audit event, under `<kind>:<account>`, in one
//! transaction: none is ever in effect without its trace. A code refused is audited too, under
//! the user who sent it, and wrong codes are counted to stop guessing (`link_attempts`).

use std::net::IpAddr;
use std::time::Duration;

use rand::Rng;
use sha2::{Digest, Sha256};

use super::Hoop;
use crate::audit::AuditKind;
use crate::domain::{Email, Identity, Millis, Surface};
use crate::error::{Error, Result};
use crate::store::{AuditEntry, LinkedAccount, Redeemed, SubjectEvent};

/// How long a code shown in chat can be confirmed.
pub const LINK_CODE_TTL: Duration = Duration::from_secs(10 * 60);
/// Letters and digits nobody confuses when reading them off a screen (no 0/O, 1/I/L, U).
const CODE_ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTVWXYZ23456789";
/// 8 characters from 30: about 6.5 × 10¹¹ codes, against a handful live for 10 minutes.
const CODE_LEN: usize = 8;

/// A code to confirm, as the chat shows it (`ABCD-EFGH`).
#[derive(Debug, Clone)]
pub struct LinkCode {
    pub code: String,
    pub expires_at: Millis,
}

impl Hoop {
    /// Starts linking `account` of chat `kind`: a one-time code its owner confirms while signed in
    /// to hoopbot. Only the code's SHA-256 is kept.
    pub async fn start_link(&self, kind: &str, account: &str) -> Result<LinkCode> {
        let code: String = {
            let mut rng = rand::rng();
            (0..CODE_LEN)
                .map(|_| CODE_ALPHABET[rng.random_range(0..CODE_ALPHABET.len())] as char)
                .collect()
        };
        let now = self.clock.now();
        let expires_at = now + LINK_CODE_TTL.as_millis() as Millis;
        self.store
            .insert_link_code(&code_sha256(&code), kind, account, now, expires_at)
            .await?;
        Ok(LinkCode {
            code: format!("{}-{}", &code[..4], &code[4..]),
            expires_at,
        })
    }

    /// Confirms a code on behalf of the signed-in `user`, who sent it from `source` (their
    /// address, when known): the chat account it was shown to is linked to them. A code links
    /// once, within [`LINK_CODE_TTL`]. Every code refused is audited (`link_code_refused`, under
    /// `user:<email>`, with why and from where, never the code), and past
    /// [`LINK_FAILURES_PER_USER`](super::LINK_FAILURES_PER_USER) refused in a window (or
    /// [`LINK_FAILURES_PER_SOURCE`](super::LINK_FAILURES_PER_SOURCE) from one address) every
    /// confirmation is refused with [`Error::RateLimited`], right codes too, until it ends.
    pub async fn confirm_link(
        &self,
        user: &Identity,
        code: &str,
        source: Option<IpAddr>,
        via: Surface,
    ) -> Result<LinkedAccount> {
        let (attempt, normalized) = self.link_attempt(user, code, source).await?;
        let now = self.clock.now();
        let refused = |reason: &str| refusal_event(user, reason, source);
        let audit = |outcome: &Redeemed| match outcome {
            Redeemed::Linked(link) => {
                link_event(AuditKind::AccountLinked, link, user.email.as_str(), via)
            }
            Redeemed::Unknown => refused("unknown"),
            Redeemed::Expired => refused("expired"),
            Redeemed::AlreadyUsed => refused("used"),
        };
        match self
            .store
            .redeem_link_code(&code_sha256(&normalized), user.email.as_str(), now, &audit)
            .await?
        {
            Redeemed::Linked(link) => {
                self.link_attempts.succeeded(attempt);
                tracing::info!(kind = %link.kind, account = %link.account, email = %link.email, "chat account linked");
                Ok(link)
            }
            Redeemed::Unknown => Err(Error::NotFound(
                "no such link code; run /hoop subscribe again for a new one".into(),
            )),
            Redeemed::Expired => Err(Error::Expired(format!(
                "this link code has expired (codes last {} minutes); run /hoop subscribe again",
                LINK_CODE_TTL.as_secs() / 60
            ))),
            Redeemed::AlreadyUsed => Err(Error::AlreadyDecided(
                "this link code has already been used; run /hoop subscribe again for a new one"
                    .into(),
            )),
        }
    }

    /// The chat account (kind, account) that link code `code` was shown to, for `user` to see
    /// before confirming it: a code is checked as [`Hoop::confirm_link`] checks it, under the same
    /// limit on wrong codes (a wrong one counts and is audited), so the page that shows it is no
    /// way around that limit.
    pub async fn link_code_holder(
        &self,
        user: &Identity,
        code: &str,
        source: Option<IpAddr>,
    ) -> Result<(String, String)> {
        let (attempt, normalized) = self.link_attempt(user, code, source).await?;
        let now = self.clock.now();
        match self
            .store
            .link_code_holder(&code_sha256(&normalized), now)
            .await?
        {
            Some(holder) => {
                self.link_attempts.succeeded(attempt);
                Ok(holder)
            }
            None => {
                self.store
                    .append_account_events(now, &[refusal_event(user, "unknown", source)])
                    .await?;
                Err(Error::NotFound(
                    "no such link code, or it was used or has expired; run /hoop subscribe again"
                        .into(),
                ))
            }
        }
    }

    /// Starts checking a link code: within the limit on wrong codes (else `rate_limited`), and
    /// well-formed (else `invalid_input`, audited). The attempt counts as wrong until
    /// `link_attempts.succeeded` gives it back.
    async fn link_attempt(
        &self,
        user: &Identity,
        code: &str,
        source: Option<IpAddr>,
    ) -> Result<(super::link_attempts::Attempt, String)> {
        let attempt = self
            .link_attempts
            .begin(user.email.as_str(), source)
            .map_err(|retry_after| Error::RateLimited {
                message: format!(
                    "too many wrong link codes; try again in {} seconds",
                    retry_after.as_millis().div_ceil(1000).max(1)
                ),
                retry_after,
            })?;
        let normalized: String = code
            .chars()
            .filter(|c| !matches!(c, '-' | ' '))
            .map(|c| c.to_ascii_uppercase())
            .collect();
        if normalized.len() != CODE_LEN || !normalized.bytes().all(|b| CODE_ALPHABET.contains(&b)) {
            self.store
                .append_account_events(
                    self.clock.now(),
                    &[refusal_event(user, "malformed", source)],
                )
                .await?;
            return Err(Error::InvalidInput(
                "that is not a link code; run /hoop subscribe in Slack and copy the code it shows (like ABCD-EFGH)"
                    .into(),
            ));
        }
        Ok((attempt, normalized))
    }

    /// The groups of `user` that approve requests on some connection: a linked chat account
    /// gets a DM for each request waiting for one of them.
    pub fn approval_groups_of(&self, user: &Identity) -> Vec<String> {
        user.groups
            .iter()
            .filter(|group| {
                self.config.connections.iter().any(|c| {
                    c.policy.enabled && c.policy.approval_groups.iter().any(|g| &g == group)
                })
            })
            .cloned()
            .collect()
    }

    /// Links `account` to the configured user with `email`, which the chat has verified belongs
    /// to the account. `None` when no configured user has that email.
    pub async fn link_verified_email(
        &self,
        kind: &str,
        account: &str,
        email: &str,
    ) -> Result<Option<LinkedAccount>> {
        let Some(user) = Email::parse(email).ok().and_then(|e| self.identity(&e)) else {
            return Ok(None);
        };
        let now = self.clock.now();
        let link = LinkedAccount {
            kind: kind.to_string(),
            account: account.to_string(),
            email: user.email.as_str().to_string(),
            linked_at: now,
            linked_by: "email".into(),
        };
        let event = link_event(AuditKind::AccountLinked, &link, "hoopbot", Surface::System);
        self.store.link_account(&link, &[event]).await?;
        tracing::info!(kind, account, email = %link.email, "chat account linked by its verified email");
        Ok(Some(link))
    }

    /// Removes `account`'s link, as its owner asked from the chat.
    pub async fn unlink(
        &self,
        kind: &str,
        account: &str,
        via: Surface,
    ) -> Result<Option<LinkedAccount>> {
        let audit =
            |link: &LinkedAccount| link_event(AuditKind::AccountUnlinked, link, &link.email, via);
        Ok(self
            .store
            .unlink_account(kind, account, self.clock.now(), &audit)
            .await?)
    }

    /// The hoopbot user behind a chat account, with their groups as the config says now; `None`
    /// when the account is not linked or its user is no longer configured.
    pub async fn linked_identity(&self, kind: &str, account: &str) -> Result<Option<Identity>> {
        let Some(link) = self.store.linked_account(kind, account).await? else {
            return Ok(None);
        };
        Ok(Email::parse(&link.email)
            .ok()
            .and_then(|e| self.identity(&e)))
    }

    /// The accounts of `kind` linked to any of `emails`.
    pub async fn linked_accounts(&self, kind: &str, emails: &[&str]) -> Result<Vec<LinkedAccount>> {
        Ok(self.store.accounts_of(kind, emails).await?)
    }
}

/// The audit event of a link or an unlink, under `<kind>:<account>`.
fn link_event(kind: AuditKind, link: &LinkedAccount, actor: &str, via: Surface) -> SubjectEvent {
    SubjectEvent {
        subject_id: format!("{}:{}", link.kind, link.account),
        entry: AuditEntry {
            kind,
            actor: actor.to_string(),
            channel: via,
            detail: serde_json::json!({
                "chat": link.kind,
                "account": link.account,
                "email": link.email,
                "linked_by": link.linked_by,
            }),
        },
    }
}

/// The audit event of a code refused to `user`: why, and from which address.
fn refusal_event(user: &Identity, reason: &str, source: Option<IpAddr>) -> SubjectEvent {
    SubjectEvent {
        subject_id: format!("user:{}", user.email.as_str()),
        entry: AuditEntry {
            kind: AuditKind::LinkCodeRefused,
            actor: user.email.as_str().to_string(),
            channel: Surface::Api,
            detail: serde_json::json!({
                "reason": reason,
                "source": source.map(|ip| ip.to_string()),
            }),
        },
    }
}

fn code_sha256(code: &str) -> String {
    hex::encode(Sha256::digest(code.as_bytes()))
}
