//! The change poll: each replica's fallback for wake-ups it was not told about. Once a second it
//! reads the changes committed since its last look — by any replica, or by another process on
//! the same SQLite file — and relays them to this replica's [`ChangeHub`], so a lost NOTIFY costs
//! a second, never a wake-up.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{Store, StoreResult};
use crate::changes::ChangeHub;

/// How often each replica looks for changes it was not told about.
const CHANGE_POLL: Duration = Duration::from_secs(1);
/// How far back each poll looks again: on Postgres an outbox id can become visible after a higher
/// one (transactions commit out of order), so the last ids seen are not a safe place to resume.
const OVERLAP: i64 = 500;
/// Changes read per query.
const BATCH: i64 = 2_000;

/// The one fallback poll of a replica: relays every committed change, from any replica or
/// process, to this replica's waiters.
pub struct ChangePoll {
    /// The newest change seen.
    last: i64,
    /// Changes seen within the overlap window, so each is relayed once.
    recent: BTreeSet<i64>,
}

impl ChangePoll {
    /// Starts after the newest change committed so far: waiters read the database when they
    /// start, so older changes are already reflected.
    pub async fn start(store: &dyn Store) -> StoreResult<ChangePoll> {
        let last = store.last_change().await?;
        let recent = store
            .changes_since(last - OVERLAP, BATCH)
            .await?
            .into_iter()
            .map(|c| c.seq)
            .collect();
        Ok(ChangePoll { last, recent })
    }

    /// Relays the changes committed since the last poll; returns how many.
    pub async fn poll(&mut self, store: &dyn Store, hub: &ChangeHub) -> StoreResult<usize> {
        let mut relayed = 0;
        loop {
            let batch = store.changes_since(self.last - OVERLAP, BATCH).await?;
            let full = batch.len() as i64 == BATCH;
            let before = self.last;
            for change in batch {
                if self.recent.insert(change.seq) {
                    hub.publish(&change.request_id, change.status);
                    relayed += 1;
                }
                self.last = self.last.max(change.seq);
            }
            let window = self.last - OVERLAP;
            self.recent.retain(|&seq| seq > window);
            if !full || self.last == before {
                return Ok(relayed);
            }
        }
    }
}

/// Runs this replica's `poll` until `stop` turns true.
pub async fn poll_forever(
    mut poll: ChangePoll,
    store: Arc<dyn Store>,
    hub: Arc<ChangeHub>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(CHANGE_POLL) => {}
            _ = stop.changed() => return,
        }
        if let Err(e) = poll.poll(store.as_ref(), &hub).await {
            tracing::warn!(error = %e, "cannot poll for changes; will retry");
        }
    }
}
