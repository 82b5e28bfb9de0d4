//! The audit trail's hash chain. Every event's hash covers its own fields and the previous event's
//! hash, and the chain's head (last sequence number and hash) is kept in its own row, so editing,
//! deleting or reordering any event — including the last — is detected by [`verify`].

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::domain::Millis;

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

/// The hash of `event` chained to `prev_hash`; `event.hash` and `event.prev_hash` are not read.
pub fn event_hash(prev_hash: &str, event: &AuditEvent) -> String {
    let mut hasher = Sha256::new();
    // Length-prefixing each field keeps "ab"+"c" and "a"+"bc" from hashing alike.
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
        hasher.update((field.len() as u64).to_be_bytes());
        hasher.update(field.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// Why the chain does not verify.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("event {seq} is missing (the chain jumps from {prev} to {seq_found})")]
    Missing { prev: i64, seq: i64, seq_found: i64 },
    #[error("event {seq} was altered: its hash does not match its contents")]
    Altered { seq: i64 },
    #[error("event {seq} does not follow event {prev}: the chain was rewritten")]
    Broken { seq: i64, prev: i64 },
    #[error(
        "the chain ends at event {last} but its head says {head}: events at the end were deleted or added"
    )]
    HeadMismatch { last: i64, head: i64 },
}

/// Checks every event in `events` (in sequence order) against its predecessor and the chain head.
pub fn verify(events: &[AuditEvent], head_seq: i64, head_hash: &str) -> Result<(), ChainError> {
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
        if event_hash(&event.prev_hash, event) != event.hash {
            return Err(ChainError::Altered { seq: event.seq });
        }
        if event.prev_hash != prev_hash {
            return Err(ChainError::Broken {
                seq: event.seq,
                prev: prev_seq,
            });
        }
        prev_seq = event.seq;
        prev_hash = event.hash.clone();
    }
    if prev_seq != head_seq || prev_hash != head_hash {
        return Err(ChainError::HeadMismatch {
            last: prev_seq,
            head: head_seq,
        });
    }
    Ok(())
}
