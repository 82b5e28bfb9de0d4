//! The interaction contract: the ids hoopbot puts on its Slack buttons and modal, and reads back
//! from the payloads Slack sends when they are used. `docs/slack.md` documents them, so others can
//! script or load-test against them; keep the two in step.

use serde::{Deserialize, Serialize};

/// The `action_id` of an "Approve as <group>" button starts with this, followed by the group's
/// position in the request's approval groups (action ids must be unique within a block).
pub const APPROVE_ACTION_PREFIX: &str = "approve.";
/// The `action_id` of the "Reject" button, which opens the reason modal.
pub const REJECT_ACTION: &str = "reject";
/// The `callback_id` of the modal that asks for a rejection's reason.
pub const REJECT_MODAL: &str = "reject_reason";
/// The `block_id` and `action_id` of the modal's reason input.
pub const REASON_INPUT: &str = "reason";

/// The `value` of a decision button, JSON: which request, and for an approval which group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ButtonValue {
    pub request_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// The reject modal's `private_metadata`, JSON: the request it rejects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModalContext {
    pub request_id: String,
}

/// The `action_id` for approving as the group at `index` of the request's approval groups.
pub fn approve_action(index: usize) -> String {
    format!("{APPROVE_ACTION_PREFIX}{index}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn button_values_round_trip_and_leave_out_a_missing_group() {
        let reject = ButtonValue {
            request_id: "r1".into(),
            group: None,
        };
        let json = serde_json::to_string(&reject).unwrap();
        assert_eq!(json, r#"{"request_id":"r1"}"#);
        assert_eq!(serde_json::from_str::<ButtonValue>(&json).unwrap(), reject);
        assert_eq!(approve_action(2), "approve.2");
    }
}
