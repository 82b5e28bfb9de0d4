//! Requests and people for the domain's unit tests.

use super::{AccessRequest, GroupApproval, GroupStatus, Identity, Millis, Status};

pub const NOW: Millis = 1_000_000;

pub fn user(email: &str, groups: &[&str]) -> Identity {
    Identity {
        email: crate::domain::Email::parse(email).unwrap(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        is_admin: groups.contains(&"admin"),
    }
}

fn group(name: &str, approved_by: Option<&str>) -> GroupApproval {
    GroupApproval {
        group: name.into(),
        status: if approved_by.is_some() {
            GroupStatus::Approved
        } else {
            GroupStatus::Pending
        },
        decided_by: approved_by.map(Into::into),
        decided_at: approved_by.map(|_| NOW - 10),
        via: approved_by.map(|_| "api".into()),
    }
}

/// A pending request by alice needing dba-team and security, with `approved` groups decided.
pub fn request(approved: &[(&str, &str)]) -> AccessRequest {
    let by = |g: &str| approved.iter().find(|(n, _)| *n == g).map(|(_, who)| *who);
    AccessRequest {
        id: "r1".into(),
        connection: "prod-db".into(),
        command: "SELECT 1".into(),
        command_sha256: crate::domain::command_sha256("SELECT 1"),
        requester: "alice@x".into(),
        justification: None,
        status: Status::Pending,
        created_at: NOW - 100,
        expires_at: NOW + 100,
        decided_at: None,
        version: 1,
        approval_groups: vec![
            group("dba-team", by("dba-team")),
            group("security", by("security")),
        ],
        rejection: None,
        result: None,
        claimed_by: None,
        offer: None,
    }
}
