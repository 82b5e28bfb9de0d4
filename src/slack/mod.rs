//! Slack: verifying that a request came from Slack.

pub mod signature;
