//! Delivery: telling the world what happened to requests. Every state change commits outbox
//! entries (`access_request.approved`, …) with the request as it was right after it; the
//! [`Worker`] fans each one out into one delivery per destination that wants it and delivers
//! them, retrying with backoff until each is delivered or given up.
//!
//! The worker knows nothing of any destination: each kind (webhooks, Slack; Teams later)
//! is a [`Notifier`] that says which of its destinations an event goes to and makes one attempt
//! at a delivery.

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

use crate::domain::Event;
use crate::store::{Delivery, Route};

mod shares;
mod webhooks;
mod worker;

pub use shares::PER_DESTINATION;
pub use webhooks::Webhooks;
pub use worker::{DeliveryClock, Ports, Step, Worker};

/// One kind of destination.
#[async_trait]
pub trait Notifier: Send + Sync {
    /// The kind, as deliveries record it: `webhook`.
    fn kind(&self) -> &'static str;
    /// Every configured destination of this kind.
    fn destinations(&self) -> Vec<String>;
    /// The destinations of this kind that receive `event`.
    fn routes(&self, event: Event) -> Vec<Route>;
    /// The SHA-256 of where `destination` points now; `None` when it is no longer configured.
    fn address_sha256(&self, destination: &str) -> Option<String>;
    /// The longest one attempt can take: a claim holds its delivery at least this long.
    fn longest_attempt(&self) -> Duration;
    /// Makes one attempt at `delivery`. A kind that makes several calls in one attempt makes
    /// no new one once `stopping` is set, and answers [`Verdict::Stopped`].
    async fn deliver(&self, delivery: &Delivery, stopping: &Stopping) -> Answer;
}

/// Whether this replica is stopping. A stopping replica finishes the calls it has started (so
/// their outcome is recorded, and no card is posted twice) but starts no more: what is left of an
/// attempt is handed back, due at once for whichever replica claims it next.
#[derive(Clone)]
pub struct Stopping(watch::Receiver<bool>);

impl Stopping {
    /// Set once `stop` turns true.
    pub fn new(stop: watch::Receiver<bool>) -> Stopping {
        Stopping(stop)
    }

    /// Never set: for attempts made one at a time, by tests and tools.
    pub fn never() -> Stopping {
        Stopping(watch::channel(false).1)
    }

    pub fn is_set(&self) -> bool {
        *self.0.borrow()
    }

    /// Returns once set; never, if it cannot be any more.
    pub async fn set(&self) {
        let mut stop = self.0.clone();
        if stop.wait_for(|stopping| *stopping).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// How one attempt went.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The receiver's status, when it answered.
    pub status: Option<i64>,
    /// What went wrong, when something did.
    pub error: Option<String>,
    pub verdict: Verdict,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Delivered,
    /// Try again later: no sooner than `after` when the receiver said so (`Retry-After`).
    Retry {
        after: Option<Duration>,
    },
    /// The receiver wants nothing more (a webhook's 410 Gone).
    Disable,
    /// The attempt stopped between calls because this replica is stopping: nothing failed, so
    /// the delivery is due again at once, without a backoff.
    Stopped,
    /// This delivery can never be made, however often it is tried (its snapshot cannot be
    /// read): give it up now, with the answer's error as the reason.
    GiveUp,
}
