//! Slack: verifying that a request came from Slack, and the ids of its buttons and modal.

pub mod contract;
pub mod signature;
