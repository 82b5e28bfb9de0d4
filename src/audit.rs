//! The audit trail's keyed hash chain.
//!
//! Every event's hash is an HMAC-SHA256, keyed with `[server] audit_key` (a secret that lives in the
//! environment, never in the database), over its own fields and the previous event's hash. Someone
//! who can write the database but does not have the key cannot forge, edit, delete or reorder an
//! event without [`verify`] noticing: the hashes after it would have to be recomputed, and that
//! takes the key. What the key alone cannot show is a tail cut off together with a rewound head;
//! a [`Checkpoint`] kept elsewhere (`hoop audit checkpoint`) covers that. `docs/security.md` says
//! exactly what the chain proves and what it does not.

use std::fmt;
use std::str::FromStr;

use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretSlice};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::domain::Millis;

/// The shortest `audit_key` accepted: 32 characters, e.g. `openssl rand -hex 32` gives 64.
pub const MIN_KEY_LEN: usize = 32;

/// The secret the chain's hashes are keyed with.
#[derive(Clone)]
pub struct AuditKey(SecretSlice<u8>);

impl AuditKey {
    /// A key from the configured text; refuses one too short to resist guessing.
    pub fn new(text: &str) -> Result<AuditKey, String> {
        if text.len() < MIN_KEY_LEN {
            return Err(format!(
                "must be at least {MIN_KEY_LEN} characters (it is {}); generate one with `openssl rand -hex 32`",
                text.len()
            ));
        }
        Ok(AuditKey(text.as_bytes().to_vec().into()))
    }
}

impl fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuditKey([REDACTED])")
    }
}

/// What an audit event records. Stored as its snake_case name (`as_str`), which is what
/// `hoop audit export` and the API show; events read back keep that name as text, so a trail
/// written by a newer version still reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditKind {
    Created,
    Held,
    AutoApproved,
    GroupApproved,
    Approved,
    Rejected,
    Expired,
    Cancelled,
    Claimed,
    OfferLapsed,
    Started,
    Executed,
    Failed,
    LateResult,
    TokenCreated,
    TokenRevoked,
    /// A delivery (a webhook call, a chat message) retried until its time ran out.
    DeliveryGivenUp,
    /// A destination's receiver asked for nothing more (a webhook's 410).
    DestinationDisabled,
    /// A chat account (a Slack user) was linked to a hoopbot user.
    AccountLinked,
    /// A chat account's link was removed.
    AccountUnlinked,
    /// A link code was refused (unknown, expired, used or malformed): a typo, or someone guessing.
    LinkCodeRefused,
}

impl AuditKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            AuditKind::Created => "created",
            AuditKind::Held => "held",
            AuditKind::AutoApproved => "auto_approved",
            AuditKind::GroupApproved => "group_approved",
            AuditKind::Approved => "approved",
            AuditKind::Rejected => "rejected",
            AuditKind::Expired => "expired",
            AuditKind::Cancelled => "cancelled",
            AuditKind::Claimed => "claimed",
            AuditKind::OfferLapsed => "offer_lapsed",
            AuditKind::Started => "started",
            AuditKind::Executed => "executed",
            AuditKind::Failed => "failed",
            AuditKind::LateResult => "late_result",
            AuditKind::TokenCreated => "token_created",
            AuditKind::TokenRevoked => "token_revoked",
            AuditKind::DeliveryGivenUp => "delivery_given_up",
            AuditKind::DestinationDisabled => "destination_disabled",
            AuditKind::AccountLinked => "account_linked",
            AuditKind::AccountUnlinked => "account_unlinked",
            AuditKind::LinkCodeRefused => "link_code_refused",
        }
    }
}

impl fmt::Display for AuditKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One recorded event, as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEvent {
    pub seq: i64,
    pub request_id: String,
    /// What happened: created, held, auto_approved, group_approved, approved, rejected, expired,
    /// cancelled, claimed, executed, failed, …
    pub kind: String,
    /// Who did it: a user's email, an agent's name, or `hoopbot` for the system itself.
    pub actor: String,
    /// Where it came from: api, slack, teams, web, agent, system.
    pub channel: String,
    pub at: Millis,
    pub detail: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}

/// The keyed hash of `event` chained to `prev_hash`; `event.hash` and `event.prev_hash` are not
/// read.
pub fn event_hash(key: &AuditKey, prev_hash: &str, event: &AuditEvent) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(key.0.expose_secret()).expect("HMAC takes keys of any size");
    for_each_field(prev_hash, event, |bytes| mac.update(bytes));
    hex::encode(mac.finalize().into_bytes())
}

/// The unkeyed hash events had before the chain was keyed; only events up to the head's
/// `unkeyed_until` (those stored before the upgrade) are checked this way.
fn legacy_event_hash(prev_hash: &str, event: &AuditEvent) -> String {
    let mut hasher = Sha256::new();
    for_each_field(prev_hash, event, |bytes| hasher.update(bytes));
    hex::encode(hasher.finalize())
}

/// Feeds the hashed fields, each length-prefixed so "ab"+"c" and "a"+"bc" hash differently.
fn for_each_field(prev_hash: &str, event: &AuditEvent, mut feed: impl FnMut(&[u8])) {
    for field in [
        prev_hash,
        &event.seq.to_string(),
        &event.request_id,
        &event.kind,
        &event.actor,
        &event.channel,
        &event.at.to_string(),
        &event.detail.to_string(),
    ] {
        feed(&(field.len() as u64).to_be_bytes());
        feed(field.as_bytes());
    }
}

/// The chain's head as stored: the last event's sequence number and hash, and how many of the
/// first events predate the keyed chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub seq: i64,
    pub hash: String,
    pub unkeyed_until: i64,
}

/// An event's sequence number and hash, written down by the operator somewhere the database's
/// writers cannot reach (`hoop audit checkpoint`), printed and parsed as `SEQ:HASH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub seq: i64,
    pub hash: String,
}

impl fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.seq, self.hash)
    }
}

impl FromStr for Checkpoint {
    type Err = String;

    fn from_str(text: &str) -> Result<Checkpoint, String> {
        let bad = || {
            format!(
                "{text:?} is not a checkpoint like 42:3f9a… (as `hoop audit checkpoint` prints)"
            )
        };
        let (seq, hash) = text.trim().split_once(':').ok_or_else(bad)?;
        let seq: i64 = seq.parse().map_err(|_| bad())?;
        let hash = hash.to_ascii_lowercase();
        if seq < 1 || hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        Ok(Checkpoint { seq, hash })
    }
}

/// Why the chain does not verify.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("event {seq} is missing (the chain jumps from {prev} to {seq_found})")]
    Missing { prev: i64, seq: i64, seq_found: i64 },
    #[error(
        "event {seq} was altered or forged: its hash does not match its contents under this audit key"
    )]
    Altered { seq: i64 },
    #[error("event {seq} does not follow event {prev}: the chain was rewritten")]
    Broken { seq: i64, prev: i64 },
    #[error(
        "the chain ends at event {last} but its head says {head}: events at the end were deleted or added"
    )]
    HeadMismatch { last: i64, head: i64 },
    #[error(
        "the chain ends at event {last} but checkpoint {seq} was taken: events at the end were removed and the head rewound"
    )]
    BeforeCheckpoint { last: i64, seq: i64 },
    #[error("event {seq} does not match its checkpoint: the chain up to it was rewritten")]
    CheckpointMismatch { seq: i64 },
    /// Everything else verified, but events up to `until` carry unkeyed hashes and no checkpoint
    /// at or after `until` vouches for them. The mark is a plain number in the database: raised
    /// to the head, it would let anyone who can write the database rewrite the whole chain with
    /// unkeyed hashes, so unkeyed events count only when a checkpoint pins them.
    #[error(
        "events 1 to {until} carry unkeyed hashes (from before the chain was keyed, or a raised \
         mark), which anyone who can write the database could have rewritten; pass a checkpoint \
         taken at or after event {until} (--checkpoint SEQ:HASH) to vouch for them"
    )]
    UnkeyedUnpinned { until: i64 },
}

/// Whether `event` (the chain's last) was written with `key`, so that a server started with a
/// mistyped or another deployment's key refuses to start instead of appending events no one can
/// verify. Events up to `head.unkeyed_until` carry no key and say nothing.
pub fn written_with(key: &AuditKey, event: &AuditEvent, head: &Head) -> bool {
    event.seq <= head.unkeyed_until || event_hash(key, &event.prev_hash, event) == event.hash
}

/// Checks every event in `events` (in sequence order) against its predecessor, the chain head and
/// each checkpoint.
pub fn verify(
    key: &AuditKey,
    events: &[AuditEvent],
    head: &Head,
    checkpoints: &[Checkpoint],
) -> Result<(), ChainError> {
    let mut prev_seq = 0;
    let mut prev_hash = String::new();
    for event in events {
        if event.seq != prev_seq + 1 {
            return Err(ChainError::Missing {
                prev: prev_seq,
                seq: prev_seq + 1,
                seq_found: event.seq,
            });
        }
        let expected = if event.seq <= head.unkeyed_until {
            legacy_event_hash(&event.prev_hash, event)
        } else {
            event_hash(key, &event.prev_hash, event)
        };
        if expected != event.hash {
            return Err(ChainError::Altered { seq: event.seq });
        }
        if event.prev_hash != prev_hash {
            return Err(ChainError::Broken {
                seq: event.seq,
                prev: prev_seq,
            });
        }
        if let Some(checkpoint) = checkpoints.iter().find(|c| c.seq == event.seq)
            && checkpoint.hash != event.hash
        {
            return Err(ChainError::CheckpointMismatch { seq: event.seq });
        }
        prev_seq = event.seq;
        prev_hash = event.hash.clone();
    }
    if let Some(beyond) = checkpoints.iter().find(|c| c.seq > prev_seq) {
        return Err(ChainError::BeforeCheckpoint {
            last: prev_seq,
            seq: beyond.seq,
        });
    }
    if prev_seq != head.seq || prev_hash != head.hash {
        return Err(ChainError::HeadMismatch {
            last: prev_seq,
            head: head.seq,
        });
    }
    // Last, so that this error means "intact, but partly unkeyed and unpinned".
    let unkeyed = head.unkeyed_until.min(head.seq);
    if unkeyed > 0 && !checkpoints.iter().any(|c| c.seq >= unkeyed) {
        return Err(ChainError::UnkeyedUnpinned { until: unkeyed });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> AuditKey {
        AuditKey::new("0123456789abcdef0123456789abcdef").unwrap()
    }

    /// A valid chain of `n` events under `key`, and its head.
    fn chain(key: &AuditKey, n: i64) -> (Vec<AuditEvent>, Head) {
        let mut events = Vec::new();
        let mut prev = String::new();
        for seq in 1..=n {
            let mut event = AuditEvent {
                seq,
                request_id: "r1".into(),
                kind: "approved".into(),
                actor: "bob@x.com".into(),
                channel: "api".into(),
                at: 1_700_000_000_000 + seq,
                detail: serde_json::json!({ "group": "dba-team" }),
                prev_hash: prev.clone(),
                hash: String::new(),
            };
            event.hash = event_hash(key, &prev, &event);
            prev = event.hash.clone();
            events.push(event);
        }
        let head = Head {
            seq: n,
            hash: prev,
            unkeyed_until: 0,
        };
        (events, head)
    }

    fn rehash(key: &AuditKey, events: &mut [AuditEvent]) -> Head {
        let mut prev = String::new();
        for event in events.iter_mut() {
            event.prev_hash = prev.clone();
            event.hash = event_hash(key, &prev, event);
            prev = event.hash.clone();
        }
        let last = events.last().unwrap();
        Head {
            seq: last.seq,
            hash: last.hash.clone(),
            unkeyed_until: 0,
        }
    }

    #[test]
    fn an_intact_chain_verifies_with_its_key_and_checkpoints() {
        let (events, head) = chain(&key(), 5);
        let checkpoint = Checkpoint {
            seq: 3,
            hash: events[2].hash.clone(),
        };
        assert_eq!(verify(&key(), &events, &head, &[checkpoint]), Ok(()));
    }

    #[test]
    fn a_chain_rewritten_without_the_key_does_not_verify() {
        let (mut events, _) = chain(&key(), 5);
        // Someone with write access to the database but another key rewrites who approved, and
        // recomputes every hash and the head as best they can.
        events[1].actor = "mallory@x.com".into();
        let forger = AuditKey::new("a different key of thirty-two chars").unwrap();
        let forged_head = rehash(&forger, &mut events);
        assert_eq!(
            verify(&key(), &events, &forged_head, &[]),
            Err(ChainError::Altered { seq: 1 })
        );
    }

    #[test]
    fn edits_deletions_and_reordering_are_caught() {
        let (events, head) = chain(&key(), 5);
        let mut edited = events.clone();
        edited[3].detail = serde_json::json!({ "group": "security" });
        assert_eq!(
            verify(&key(), &edited, &head, &[]),
            Err(ChainError::Altered { seq: 4 })
        );

        let mut deleted = events.clone();
        deleted.remove(2);
        assert_eq!(
            verify(&key(), &deleted, &head, &[]),
            Err(ChainError::Missing {
                prev: 2,
                seq: 3,
                seq_found: 4
            })
        );

        let mut swapped = events.clone();
        swapped.swap(1, 2);
        (swapped[1].seq, swapped[2].seq) = (2, 3);
        assert!(verify(&key(), &swapped, &head, &[]).is_err());
    }

    #[test]
    fn a_truncated_tail_with_a_rewound_head_is_caught_only_by_a_checkpoint() {
        let (events, _) = chain(&key(), 5);
        let checkpoint = Checkpoint {
            seq: 5,
            hash: events[4].hash.clone(),
        };
        // The last two events are deleted and the head rewound to event 3: consistent in itself.
        let truncated = &events[..3];
        let rewound = Head {
            seq: 3,
            hash: events[2].hash.clone(),
            unkeyed_until: 0,
        };
        assert_eq!(verify(&key(), truncated, &rewound, &[]), Ok(()));
        assert_eq!(
            verify(&key(), truncated, &rewound, &[checkpoint]),
            Err(ChainError::BeforeCheckpoint { last: 3, seq: 5 })
        );
    }

    #[test]
    fn a_checkpoint_pins_the_chain_up_to_it() {
        let (events, head) = chain(&key(), 4);
        let wrong = Checkpoint {
            seq: 2,
            hash: "0".repeat(64),
        };
        assert_eq!(
            verify(&key(), &events, &head, &[wrong]),
            Err(ChainError::CheckpointMismatch { seq: 2 })
        );
    }

    #[test]
    fn events_from_before_the_upgrade_keep_their_unkeyed_hashes() {
        let (mut events, _) = chain(&key(), 4);
        let mut prev = String::new();
        for event in events.iter_mut().take(2) {
            event.prev_hash = prev.clone();
            event.hash = legacy_event_hash(&prev, event);
            prev = event.hash.clone();
        }
        for event in events.iter_mut().skip(2) {
            event.prev_hash = prev.clone();
            event.hash = event_hash(&key(), &prev, event);
            prev = event.hash.clone();
        }
        let head = Head {
            seq: 4,
            hash: prev,
            unkeyed_until: 2,
        };
        // Unkeyed events count only under a checkpoint at or after the mark.
        assert_eq!(
            verify(&key(), &events, &head, &[]),
            Err(ChainError::UnkeyedUnpinned { until: 2 })
        );
        let pin = Checkpoint {
            seq: 3,
            hash: events[2].hash.clone(),
        };
        assert_eq!(verify(&key(), &events, &head, &[pin]), Ok(()));
        // An unkeyed hash past the upgrade point is a forgery.
        let head_claiming_less = Head {
            unkeyed_until: 1,
            ..head
        };
        assert_eq!(
            verify(&key(), &events, &head_claiming_less, &[]),
            Err(ChainError::Altered { seq: 2 })
        );
    }

    /// Reproduced: on a keyed chain, someone without the key rewrote every event with unkeyed
    /// hashes and raised `unkeyed_until` to the head; verify said "intact".
    #[test]
    fn a_chain_rewritten_unkeyed_with_a_raised_mark_does_not_verify() {
        let (mut events, head) = chain(&key(), 4);
        let checkpoint = Checkpoint {
            seq: 4,
            hash: head.hash.clone(),
        };
        events[1].actor = "mallory@x.com".into();
        let mut prev = String::new();
        for event in events.iter_mut() {
            event.prev_hash = prev.clone();
            event.hash = legacy_event_hash(&prev, event);
            prev = event.hash.clone();
        }
        let forged = Head {
            seq: 4,
            hash: prev,
            unkeyed_until: 4,
        };
        assert_eq!(
            verify(&key(), &events, &forged, &[]),
            Err(ChainError::UnkeyedUnpinned { until: 4 })
        );
        assert_eq!(
            verify(&key(), &events, &forged, &[checkpoint]),
            Err(ChainError::CheckpointMismatch { seq: 4 })
        );
        let beyond_head = Head {
            unkeyed_until: 99,
            ..forged
        };
        assert_eq!(
            verify(&key(), &events, &beyond_head, &[]),
            Err(ChainError::UnkeyedUnpinned { until: 4 })
        );
    }

    #[test]
    fn checkpoints_parse_and_print_alike() {
        let text = format!("42:{}", "ab".repeat(32));
        let checkpoint: Checkpoint = text.parse().unwrap();
        assert_eq!(checkpoint.to_string(), text);
        for bad in ["", "42", "x:ab", "0:ab", &format!("42:{}", "zz".repeat(32))] {
            assert!(bad.parse::<Checkpoint>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn short_keys_are_refused_and_keys_never_print() {
        assert!(AuditKey::new("short").is_err());
        assert_eq!(format!("{:?}", key()), "AuditKey([REDACTED])");
    }
}
