//! Each destination's share of this replica's delivery attempts: at most [`PER_DESTINATION`] in
//! flight at once. A receiver that answers slowly, or a Slack that hangs, then fills only its own
//! share, and every other destination's deliveries go out as fast as they come.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::domain::Millis;
use crate::store::{self, Delivery};

/// Attempts one destination may have in flight at once, on one replica.
pub const PER_DESTINATION: usize = 16;

/// The attempts under way.
#[derive(Clone, Default)]
pub(super) struct Shares {
    busy: Arc<Mutex<Busy>>,
}

#[derive(Default)]
struct Busy {
    /// How many attempts, by (kind, destination).
    by_destination: HashMap<(String, String), usize>,
    /// The claims they hold: delivery id → the claim's lease.
    claims: HashMap<i64, Millis>,
}

/// One attempt's place in its destination's share, given back when it is dropped: when the
/// attempt ends, fails or panics alike.
pub(super) struct Place {
    shares: Shares,
    destination: (String, String),
    delivery: i64,
}

impl Shares {
    /// A place for an attempt at `delivery`. Claims never take more than a destination's free
    /// share, so this only counts.
    pub(super) fn take(&self, delivery: &Delivery) -> Place {
        let destination = (delivery.kind.clone(), delivery.destination.clone());
        let mut busy = self.lock();
        *busy.by_destination.entry(destination.clone()).or_default() += 1;
        busy.claims.insert(delivery.id, delivery.lease_until);
        Place {
            shares: self.clone(),
            destination,
            delivery: delivery.id,
        }
    }

    /// The claims of the attempts under way: (delivery id, lease).
    pub(super) fn claims(&self) -> Vec<(i64, Millis)> {
        let mut claims: Vec<_> = self
            .lock()
            .claims
            .iter()
            .map(|(id, lease)| (*id, *lease))
            .collect();
        claims.sort();
        claims
    }

    /// What a claim may take now.
    pub(super) fn free(&self) -> store::Shares {
        store::Shares {
            each: PER_DESTINATION as i64,
            busy: self
                .lock()
                .by_destination
                .iter()
                .map(|((kind, destination), busy)| {
                    (kind.clone(), destination.clone(), *busy as i64)
                })
                .collect(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Busy> {
        // Counting cannot leave the map half-changed, so a poisoned lock is still right.
        self.busy
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut busy = self.shares.lock();
        busy.claims.remove(&self.delivery);
        if let Some(count) = busy.by_destination.get_mut(&self.destination) {
            *count -= 1;
            if *count == 0 {
                busy.by_destination.remove(&self.destination);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(id: i64, kind: &str, destination: &str) -> Delivery {
        Delivery {
            id,
            outbox_id: id,
            request_id: format!("r{id}"),
            kind: kind.into(),
            destination: destination.into(),
            event: "access_request.created".into(),
            version: 1,
            payload: String::new(),
            event_at: 0,
            attempt: 1,
            give_up_at: 60_000,
            lease_until: 1_000 + id,
        }
    }

    #[test]
    fn a_place_is_given_back_when_its_attempt_ends() {
        let shares = Shares::default();
        let first = shares.take(&delivery(1, "webhook", "slow"));
        let second = shares.take(&delivery(2, "webhook", "slow"));
        let other = shares.take(&delivery(3, "slack", "workspace"));
        let mut busy = shares.free().busy;
        busy.sort();
        assert_eq!(
            busy,
            vec![
                ("slack".into(), "workspace".into(), 1),
                ("webhook".into(), "slow".into(), 2)
            ]
        );
        assert_eq!(shares.claims(), vec![(1, 1_001), (2, 1_002), (3, 1_003)]);
        drop((first, other));
        assert_eq!(
            shares.free().busy,
            vec![("webhook".into(), "slow".into(), 1)]
        );
        assert_eq!(shares.claims(), vec![(2, 1_002)]);
        drop(second);
        assert!(shares.free().busy.is_empty());
        assert!(shares.claims().is_empty());
        assert_eq!(shares.free().each, PER_DESTINATION as i64);
    }
}
