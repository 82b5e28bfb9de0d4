//! Refusing replays: a signed request from a chat (a Slack request signature) is acted on once, by
//! whichever replica sees it first. Its signature is remembered, as a SHA-256, for as long as it
//! could still pass its time check.

use std::time::Duration;

use sha2::{Digest, Sha256};

use super::Hoop;
use crate::domain::Millis;
use crate::error::Result;

/// Added to how long a signature passes its time check before it is forgotten: replicas check
/// the time by their own clocks, which may disagree (`hoop serve` warns past 2 s).
const CLOCK_MARGIN: Duration = Duration::from_secs(5 * 60);

impl Hoop {
    /// Whether `signature` is seen here for the first time, on any replica; it is remembered
    /// from now on. `passes_for` is how long one signature can pass its time check in all (for
    /// Slack, 300 s either side of its timestamp): until then a replay must still be caught.
    pub async fn first_sighting_of_signature(
        &self,
        signature: &str,
        passes_for: Duration,
    ) -> Result<bool> {
        let now = self.clock.now();
        let remembered_for = (passes_for + CLOCK_MARGIN).as_millis() as Millis;
        let sha256 = hex::encode(Sha256::digest(signature.as_bytes()));
        Ok(self
            .store
            .first_sighting(&sha256, now, now - remembered_for)
            .await?)
    }
}
