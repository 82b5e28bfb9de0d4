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

use crate::domain::Event;
use crate::store::{Delivery, Route};

mod webhooks;
mod worker;

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
    /// Makes one attempt at `delivery`.
    async fn deliver(&self, delivery: &Delivery) -> Answer;
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
    /// This delivery can never be made, however often it is tried (its snapshot cannot be
    /// read): give it up now, with the answer's error as the reason.
    GiveUp,
}
