//! The rules of hoopbot as pure types and functions: who must approve what, and which decisions are
//! allowed. Nothing here does I/O, so every rule is tested as a plain function.

mod clock;
mod decision;
mod event;
mod names;
mod policy;
mod request;
mod surface;
#[cfg(test)]
mod testing;
mod you_may;

pub use clock::{Clock, rfc3339};
pub use decision::{Decision, DecisionError, Outcome, decide};
pub use event::Event;
pub use names::{ConnectionName, Email, InvalidName};
pub use policy::{Admission, AutoApproval, Identity, Policy, RequireApprovalFor, admit};
pub use request::{
    AccessRequest, ExecutionResult, GroupApproval, GroupStatus, Rejection, StatementResult, Status,
};
pub use surface::Surface;
pub use you_may::{WhyNot, YouMay, you_may};

/// Milliseconds since the Unix epoch. Stored as a plain integer so both databases compare and index
/// times the same way; converted to RFC 3339 only at the edges.
pub type Millis = i64;

/// Hex SHA-256 of a command's exact bytes: what approvers saw is what the agent must run.
pub fn command_sha256(command: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(command.as_bytes()))
}
