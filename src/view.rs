//! The JSON shapes of the API, owned by both sides: the server writes them (`http`) and its clients
//! (the CLI, agents) read them. Times are RFC 3339 UTC; the shapes are a fixed contract.

use serde::{Deserialize, Serialize};

use crate::audit::AuditEvent;
use crate::domain::{
    AccessRequest, AutoApproval, ExecutionResult, GroupApproval, GroupStatus, Status, YouMay,
    rfc3339,
};
use crate::sentences::Words;
use crate::store::{AttemptRecord, DeliveryRecord, DeliveryState, PostedMessage};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AccessRequestView {
    pub id: String,
    pub url: String,
    pub connection: String,
    pub command: String,
    pub command_sha256: String,
    pub requester: String,
    pub justification: Option<String>,
    pub status: Status,
    pub created_at: String,
    pub expires_at: String,
    pub decided_at: Option<String>,
    pub version: i64,
    pub approval_groups: Vec<GroupView>,
    pub rejection: Option<RejectionView>,
    pub result: Option<ExecutionResult>,
    /// Why it was approved without review, when it was (nobody reviewed it: say so).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_approval: Option<AutoApprovalView>,
    /// Where the request stands, in the sentence every surface says (see `sentences`).
    pub summary: String,
    /// What the reader (the token's user) may do with the request now. On reads only: a write's
    /// reply and a webhook's data are about the request, not about a reader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub you_may: Option<YouMay>,
    /// What each destination (webhook, chat) was told of this request, oldest event first. Left
    /// out of the request a webhook event carries, which is the request as of that event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliveries: Option<Vec<DeliveryView>>,
    /// Where chat messages about this request were posted (each copy of a Slack card), and the
    /// version each shows. Read with `deliveries`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<MessageView>>,
}

/// Why a request was approved without review.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AutoApprovalView {
    /// `admin`, `exempt_group`, `approval_not_required` or `access_requests_disabled`.
    pub reason: String,
    /// The exempt group the requester is in, for `exempt_group`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The reason as a person reads it: "requested by an admin".
    pub description: String,
}

impl AutoApprovalView {
    fn of(why: &AutoApproval) -> AutoApprovalView {
        AutoApprovalView {
            reason: why.code().to_string(),
            group: match why {
                AutoApproval::Exempt { group } => Some(group.clone()),
                _ => None,
            },
            description: why.describe(),
        }
    }
}

/// One chat message about a request: a Slack card in a channel or a DM, or the requester's
/// outcome DM.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MessageView {
    /// `slack`.
    pub kind: String,
    /// Which copy: `channel:<id>`, `dm:<user>` (an approver's copy), `outcome:<user>` (the
    /// requester's).
    pub copy: String,
    /// The conversation it is in, once posted.
    pub channel: Option<String>,
    /// The request version it shows.
    pub version: i64,
    pub posted_at: String,
    pub updated_at: String,
    /// Set when the copy can never be posted or updated: Slack's error (`not_in_channel`, …).
    pub gone: Option<String>,
}

impl From<PostedMessage> for MessageView {
    fn from(m: PostedMessage) -> MessageView {
        MessageView {
            channel: m.external["channel"].as_str().map(str::to_string),
            gone: m.external["gone"].as_str().map(str::to_string),
            kind: m.kind,
            copy: m.destination,
            version: m.version,
            posted_at: rfc3339(m.posted_at),
            updated_at: rfc3339(m.updated_at),
        }
    }
}

/// One event's delivery to one destination. Every field is present, `null` when unknown.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeliveryView {
    pub destination: String,
    pub kind: String,
    pub event: String,
    pub version: i64,
    pub state: DeliveryState,
    pub attempts: i64,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub delivered_at: Option<String>,
    pub next_attempt_at: Option<String>,
}

impl From<DeliveryRecord> for DeliveryView {
    fn from(d: DeliveryRecord) -> DeliveryView {
        DeliveryView {
            destination: d.destination,
            kind: d.kind,
            event: d.event,
            version: d.version,
            state: d.state,
            attempts: d.attempts,
            last_status: d.last_status,
            last_error: d.last_error,
            delivered_at: d.delivered_at.map(rfc3339),
            next_attempt_at: d.next_attempt_at.map(rfc3339),
        }
    }
}

/// A configured webhook endpoint and how its deliveries stand.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WebhookView {
    pub name: String,
    /// Scheme, host and path only: a query string may carry a token.
    pub url: String,
    pub events: Vec<String>,
    pub include_command: bool,
    pub allow_private: bool,
    pub give_up_after: String,
    /// `enabled`, or `disabled` once its receiver answered 410 Gone at this URL.
    pub state: String,
    pub disabled_at: Option<String>,
    pub disabled_reason: Option<String>,
    pub pending: i64,
    pub delivered: i64,
    pub given_up: i64,
    pub dropped: i64,
}

/// One attempt at a delivery (or a test ping), as `GET /api/v1/webhooks/{name}/deliveries` lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AttemptView {
    pub id: i64,
    pub at: String,
    pub event: String,
    pub request_id: Option<String>,
    pub attempt: i64,
    pub status: Option<i64>,
    pub latency_ms: i64,
    pub error: Option<String>,
}

impl From<AttemptRecord> for AttemptView {
    fn from(a: AttemptRecord) -> AttemptView {
        AttemptView {
            id: a.id,
            at: rfc3339(a.attempted.at),
            event: a.event,
            request_id: a.request_id,
            attempt: a.attempt,
            status: a.attempted.status,
            latency_ms: a.attempted.latency_ms,
            error: a.attempted.error,
        }
    }
}

/// A page of attempts, newest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttemptPage {
    pub items: Vec<AttemptView>,
    pub next_cursor: Option<String>,
}

/// What a test ping got.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PingView {
    pub webhook: String,
    pub webhook_id: String,
    pub delivered: bool,
    pub status: Option<i64>,
    pub latency_ms: i64,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GroupView {
    pub group: String,
    pub status: GroupViewStatus,
    pub decided_by: Option<String>,
    pub decided_at: Option<String>,
    pub via: Option<String>,
}

impl GroupView {
    /// The group as the domain holds it, so clients say its state in the shared words.
    pub fn approval(&self) -> GroupApproval {
        GroupApproval {
            group: self.group.clone(),
            status: match self.status {
                GroupViewStatus::Approved => GroupStatus::Approved,
                GroupViewStatus::Pending | GroupViewStatus::Closed => GroupStatus::Pending,
            },
            decided_by: self.decided_by.clone(),
            decided_at: self.decided_at.as_deref().and_then(|t| {
                chrono::DateTime::parse_from_rfc3339(t)
                    .ok()
                    .map(|t| t.timestamp_millis())
            }),
            via: self.via.clone(),
        }
    }
}

/// A group's status as shown: stored groups are `pending` or `approved`; a group still pending
/// when its request is no longer pending (rejected, expired, cancelled) is shown `closed`, as
/// nobody can approve for it any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupViewStatus {
    Pending,
    Approved,
    Closed,
}

impl GroupViewStatus {
    fn of(group: GroupStatus, request: Status) -> GroupViewStatus {
        match (group, request) {
            (GroupStatus::Approved, _) => GroupViewStatus::Approved,
            (GroupStatus::Pending, Status::Pending) => GroupViewStatus::Pending,
            (GroupStatus::Pending, _) => GroupViewStatus::Closed,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RejectionView {
    pub by: String,
    pub reason: String,
    pub at: String,
    pub via: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditEventView {
    pub seq: i64,
    pub request_id: String,
    pub kind: String,
    pub actor: String,
    pub channel: String,
    pub at: String,
    pub detail: serde_json::Value,
    pub hash: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Page {
    pub items: Vec<AccessRequestView>,
    pub next_cursor: Option<String>,
}

/// `text` as one URL path segment: anything but unreserved characters percent-encoded, so a
/// name or id cannot reach another path (`../me`).
pub fn segment(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Where people reach request `id` (every surface links to it).
pub fn request_url(public_url: &str, id: &str) -> String {
    format!("{public_url}/access-requests/{id}")
}

impl AccessRequestView {
    pub fn new(request: AccessRequest, public_url: &str) -> AccessRequestView {
        let summary = Words::PLAIN.status_sentence(&request);
        AccessRequestView {
            url: request_url(public_url, &request.id),
            id: request.id,
            connection: request.connection,
            command: request.command,
            command_sha256: request.command_sha256,
            requester: request.requester,
            justification: request.justification,
            status: request.status,
            created_at: rfc3339(request.created_at),
            expires_at: rfc3339(request.expires_at),
            decided_at: request.decided_at.map(rfc3339),
            version: request.version,
            approval_groups: request
                .approval_groups
                .into_iter()
                .map(|g| GroupView {
                    group: g.group,
                    status: GroupViewStatus::of(g.status, request.status),
                    decided_by: g.decided_by,
                    decided_at: g.decided_at.map(rfc3339),
                    via: g.via,
                })
                .collect(),
            rejection: request.rejection.map(|r| RejectionView {
                by: r.by,
                reason: r.reason,
                at: rfc3339(r.at),
                via: r.via,
            }),
            result: request.result,
            auto_approval: request.auto_approval.as_ref().map(AutoApprovalView::of),
            summary,
            you_may: None,
            deliveries: None,
            messages: None,
        }
    }

    /// This view with what its reader may do with the request now.
    pub fn with_you_may(mut self, you_may: YouMay) -> AccessRequestView {
        self.you_may = Some(you_may);
        self
    }

    /// This view with the request's deliveries and the chat messages they posted.
    pub fn with_deliveries(
        mut self,
        deliveries: Vec<DeliveryRecord>,
        messages: Vec<PostedMessage>,
    ) -> AccessRequestView {
        self.deliveries = Some(deliveries.into_iter().map(DeliveryView::from).collect());
        self.messages = Some(messages.into_iter().map(MessageView::from).collect());
        self
    }
}

impl From<AuditEvent> for AuditEventView {
    fn from(e: AuditEvent) -> AuditEventView {
        AuditEventView {
            seq: e.seq,
            request_id: e.request_id,
            kind: e.kind,
            actor: e.actor,
            channel: e.channel,
            at: rfc3339(e.at),
            detail: e.detail,
            hash: e.hash,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::GroupViewStatus;
    use crate::domain::{GroupStatus, Status};

    #[test]
    fn groups_still_pending_close_with_their_request() {
        for status in Status::ALL {
            let approved = GroupViewStatus::of(GroupStatus::Approved, status);
            assert_eq!(approved, GroupViewStatus::Approved, "{status}");
            let open = GroupViewStatus::of(GroupStatus::Pending, status);
            let expected = if status == Status::Pending {
                GroupViewStatus::Pending
            } else {
                GroupViewStatus::Closed
            };
            assert_eq!(open, expected, "{status}");
        }
    }
}
