use serde::{Deserialize, Serialize};

use super::{AutoApproval, Millis};

/// Where an access request is in its life. See `docs/architecture.md` for the transitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    Approved,
    Rejected,
    Expired,
    Cancelled,
    Running,
    Executed,
    Failed,
}

impl Status {
    pub const ALL: [Status; 8] = [
        Status::Pending,
        Status::Approved,
        Status::Rejected,
        Status::Expired,
        Status::Cancelled,
        Status::Running,
        Status::Executed,
        Status::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Approved => "approved",
            Status::Rejected => "rejected",
            Status::Expired => "expired",
            Status::Cancelled => "cancelled",
            Status::Running => "running",
            Status::Executed => "executed",
            Status::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// No transition leaves a terminal status.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Status::Rejected
                | Status::Expired
                | Status::Cancelled
                | Status::Executed
                | Status::Failed
        )
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupStatus {
    Pending,
    Approved,
}

/// One approval group of a request, snapshotted from the policy at submission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupApproval {
    pub group: String,
    pub status: GroupStatus,
    pub decided_by: Option<String>,
    pub decided_at: Option<Millis>,
    /// The surface the decision came through: api, slack, teams, web.
    pub via: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub by: String,
    pub reason: String,
    pub at: Millis,
    pub via: String,
}

/// What running the command produced, as reported by the agent.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ExecutionResult {
    /// One entry per statement that produced a result set or a row count.
    #[serde(default)]
    pub results: Vec<StatementResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Set when the command failed: the database's or the program's own message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// True when the output was cut at the configured cap.
    #[serde(default)]
    pub truncated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
}

/// The outcome of one SQL statement: a result set, or a count of rows affected.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StatementResult {
    /// Column names; empty for statements that return no rows.
    #[serde(default)]
    pub columns: Vec<String>,
    /// Each cell rendered as text, `None` for SQL NULL.
    #[serde(default)]
    pub rows: Vec<Vec<Option<String>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_affected: Option<u64>,
    /// The psql-style tag for statements without a result set, e.g. `UPDATE 1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

/// A command held (or let through) by hoopbot, with everything decided about it so far.
/// Serialized as the outbox keeps it (the state an event announces), without the offer's id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessRequest {
    pub id: String,
    pub connection: String,
    /// The exact text that was submitted and will run.
    pub command: String,
    pub command_sha256: String,
    pub requester: String,
    pub justification: Option<String>,
    pub status: Status,
    pub created_at: Millis,
    pub expires_at: Millis,
    pub decided_at: Option<Millis>,
    /// Goes up by one on every change, so waiters can ask "anything newer than N?".
    pub version: i64,
    pub approval_groups: Vec<GroupApproval>,
    pub rejection: Option<Rejection>,
    pub result: Option<ExecutionResult>,
    /// The agent running (or that ran) the command.
    pub claimed_by: Option<String>,
    /// Why it was approved without review, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_approval: Option<AutoApproval>,
    /// The id of the offer `claimed_by` holds on this job (see `Store::claim_next`); only the
    /// agent that received it may start the job. Never shown outside the agent protocol.
    #[serde(skip)]
    pub offer: Option<String>,
}

impl AccessRequest {
    pub fn is_expired_at(&self, now: Millis) -> bool {
        now >= self.expires_at
    }

    pub fn pending_groups(&self) -> impl Iterator<Item = &GroupApproval> {
        self.approval_groups
            .iter()
            .filter(|g| g.status == GroupStatus::Pending)
    }
}
