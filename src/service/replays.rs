//! Refusing replays: a signed request from a chat (a Slack request signature) is acted on once, by
//! whichever replica sees it first. Its signature is remembered, as a SHA-256, for as long as it
//! could still pass its time check; the sweeper forgets it after that.

use std::time::Duration;

use sha2::{Digest, Sha256};

use super::Hoop;
use crate::domain::Millis;
use crate::error::Result;
use crate::store::Sighting;

/// The longest a chat's signature may pass its time check in all (Slack: 300 s either side of
/// its timestamp). A surface whose signatures pass for longer must not use this check.
pub const SIGNATURES_PASS_FOR_AT_MOST: Duration = Duration::from_secs(10 * 60);

/// How long a signature is remembered: as long as any can pass, and a margin, because replicas
/// check the time by their own clocks, which may disagree (`hoop serve` warns past 2 s).
const REMEMBERED_FOR: Duration =
    Duration::from_secs(SIGNATURES_PASS_FOR_AT_MOST.as_secs() + 5 * 60);

/// Signatures one sweep forgets at most: well above what a second brings at full speed, so the
/// table does not grow, and a backlog is worked off over a few sweeps instead of one long delete.
const FORGET_BATCH: i64 = 50_000;

/// A signed chat request, to be acted on once: what is remembered of its signature (the
/// SHA-256). A decision can carry it ([`Hoop::decide_once`]), so the sighting is recorded in the
/// decision's own write instead of one of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    sha256: String,
}

impl Signed {
    pub fn new(signature: &str) -> Signed {
        Signed {
            sha256: hex::encode(Sha256::digest(signature.as_bytes())),
        }
    }

    /// The sighting of this signature at `at`, as the store records it.
    pub(super) fn seen_at(&self, at: Millis) -> Sighting {
        Sighting {
            sha256: self.sha256.clone(),
            at,
        }
    }
}

impl Hoop {
    /// Whether `signed` is seen here for the first time, on any replica; it is remembered from
    /// now on.
    pub async fn first_sighting(&self, signed: &Signed) -> Result<bool> {
        Ok(self
            .store
            .first_sighting(&signed.sha256, self.clock.now())
            .await?)
    }

    /// Forgets signatures that could no longer pass their time check (part of a sweep).
    pub(super) async fn forget_old_signatures(&self, now: Millis) -> Result<u64> {
        let before = now - REMEMBERED_FOR.as_millis() as Millis;
        Ok(self.store.forget_signatures(before, FORGET_BATCH).await?)
    }
}
