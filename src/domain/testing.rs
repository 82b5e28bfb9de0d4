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
        auto_approval: None,
        offer: None,
    }
}

/// The people of the domain's decision tables: alice requests (and is in dba-team), bob and dan
/// are in dba-team, sam in security, bo in both, eve in neither, root is an admin.
pub struct People {
    pub alice: Identity,
    pub bob: Identity,
    pub sam: Identity,
    pub both: Identity,
    pub eve: Identity,
    pub root: Identity,
    pub dan: Identity,
}

pub fn people() -> People {
    People {
        alice: user("alice@x", &["engineering", "dba-team"]),
        bob: user("bob@x", &["dba-team"]),
        sam: user("sam@x", &["security"]),
        both: user("bo@x", &["dba-team", "security"]),
        eve: user("eve@x", &["engineering"]),
        root: user("root@x", &["admin"]),
        dan: user("dan@x", &["dba-team"]),
    }
}
