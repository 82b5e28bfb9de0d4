//! Delivery: telling the world what happened to requests. Every state change commits outbox
//! entries (`access_request.approved`, …) with the request as it was right after it; the
//! [`Worker`] fans each one out into one delivery per destination that wants it and delivers
//! them, retrying with backoff until each is delivered or given up.
//!
//! The worker knows nothing of any destination: each kind (webhooks, Slack; Teams later)
//! is a [`Notifier`] that says which of its destinations an event goes to and makes one attempt
//! at a delivery.

use std::collections::BTreeSet;
use std::time::Duration;

use async_trait::async_trait;

use crate::store::{Delivery, Route};

mod webhooks;
mod worker;

pub use webhooks::Webhooks;
pub use worker::{Step, Worker};

/// Every event type an outbox entry can carry.
pub const EVENTS: [&str; 9] = [
    "access_request.created",
    "access_request.group_approved",
    "access_request.approved",
    "access_request.rejected",
    "access_request.expired",
    "access_request.cancelled",
    "access_request.running",
    "access_request.executed",
    "access_request.failed",
];

/// The event types `patterns` subscribe to: exact types, or `access_request.*` (or `*`) for all.
/// Unknown types are an error, so a typo never silently subscribes to nothing.
pub fn subscribed(patterns: &[String]) -> Result<BTreeSet<String>, String> {
    if patterns.is_empty() {
        return Err("subscribes to no events; list some, or \"access_request.*\"".into());
    }
    let mut events = BTreeSet::new();
    for pattern in patterns {
        match pattern.as_str() {
            "*" | "access_request.*" => events.extend(EVENTS.iter().map(|e| e.to_string())),
            exact if EVENTS.contains(&exact) => {
                events.insert(exact.to_string());
            }
            unknown => {
                return Err(format!(
                    "{unknown:?} is not an event type; known: access_request.* or {}",
                    EVENTS.join(", ")
                ));
            }
        }
    }
    Ok(events)
}

/// One kind of destination.
#[async_trait]
pub trait Notifier: Send + Sync {
    /// The kind, as deliveries record it: `webhook`.
    fn kind(&self) -> &'static str;
    /// Every configured destination of this kind.
    fn destinations(&self) -> Vec<String>;
    /// The destinations of this kind that receive `event`.
    fn routes(&self, event: &str) -> Vec<Route>;
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_expand_wildcards_and_refuse_unknown_types() {
        let all = subscribed(&["access_request.*".into()]).unwrap();
        assert_eq!(all.len(), EVENTS.len());
        let some = subscribed(&[
            "access_request.approved".into(),
            "access_request.rejected".into(),
        ])
        .unwrap();
        assert_eq!(
            some.into_iter().collect::<Vec<_>>(),
            ["access_request.approved", "access_request.rejected"]
        );
        let typo = subscribed(&["access_request.aproved".into()]).unwrap_err();
        assert!(
            typo.contains("\"access_request.aproved\" is not an event type"),
            "{typo}"
        );
        assert!(subscribed(&[]).is_err());
    }
}
