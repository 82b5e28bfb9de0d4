//! Slack, where approvers live: request cards with the exact command, Approve and Reject buttons,
//! `/hoop` commands, and cards kept in step with their request through the delivery worker.

pub mod card;
mod clicks;
mod commands;
pub mod contract;
mod notifier;
pub mod signature;
pub mod socket_mode;
mod surface;
pub mod web;
mod workspace;

pub use clicks::{Click, Replayed};
pub use commands::Subcommand;
pub use notifier::SlackNotifier;
pub use surface::{KIND, Slack};
pub use workspace::{Foreign, NotAdmitted, Sender, WORKSPACE_WAIT, Workspace};
