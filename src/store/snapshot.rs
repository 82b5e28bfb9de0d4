//! The outbox snapshot: the request as a change left it, kept as JSON text with the outbox entry
//! until every destination has been told. Its format is the domain types' serde form, so a field
//! renamed there would change it; the golden test below pins it, because snapshots written by one
//! version of hoopbot are delivered by the next.

use serde::{Deserialize, Serialize};

use crate::domain::AccessRequest;

/// `request` as an outbox entry stores it: its version (which the fan-out reads without reading
/// the rest) and the request.
pub fn write(request: &AccessRequest) -> String {
    #[derive(Serialize)]
    struct Snapshot<'a> {
        version: i64,
        request: &'a AccessRequest,
    }
    serde_json::to_string(&Snapshot {
        version: request.version,
        request,
    })
    .expect("a request serializes")
}

/// The request a stored snapshot holds; the error says why it cannot be read (then it never
/// can be, however often it is tried).
pub fn read(text: &str) -> Result<AccessRequest, String> {
    #[derive(Deserialize)]
    struct Snapshot {
        request: AccessRequest,
    }
    serde_json::from_str::<Snapshot>(text)
        .map(|snapshot| snapshot.request)
        .map_err(|e| format!("the event's snapshot cannot be read: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{
        AutoApproval, ExecutionResult, GroupApproval, GroupStatus, Rejection, StatementResult,
        Status,
    };

    /// A snapshot as hoopbot has written it: every field of the request set (a request cannot
    /// be both rejected and executed, but the format must hold every field at once).
    const GOLDEN: &str = include_str!("snapshot.golden.json");

    fn every_field_set() -> AccessRequest {
        AccessRequest {
            id: "0190f5c2-7a3e-7b41-9c55-2f6d0e8a1b2c".into(),
            connection: "prod-db".into(),
            command: "UPDATE accounts SET locked = true WHERE id = 42;".into(),
            command_sha256: "9f2c4b1e6a7d8c3b5e0f1a2d4c6b8e7f9a1c3e5d7b9f0a2c4e6d8b0f1a3c5e7d"
                .into(),
            requester: "alice@x.com".into(),
            justification: Some("ticket OPS-123".into()),
            status: Status::Executed,
            created_at: 1_733_500_000_000,
            expires_at: 1_733_503_600_000,
            decided_at: Some(1_733_500_060_000),
            version: 5,
            approval_groups: vec![
                GroupApproval {
                    group: "dba-team".into(),
                    status: GroupStatus::Approved,
                    decided_by: Some("bob@x.com".into()),
                    decided_at: Some(1_733_500_030_000),
                    via: Some("slack".into()),
                },
                GroupApproval {
                    group: "security".into(),
                    status: GroupStatus::Pending,
                    decided_by: None,
                    decided_at: None,
                    via: None,
                },
            ],
            rejection: Some(Rejection {
                by: "sam@x.com".into(),
                reason: "wrong table".into(),
                at: 1_733_500_045_000,
                via: "api".into(),
            }),
            result: Some(ExecutionResult {
                results: vec![
                    StatementResult {
                        columns: vec!["id".into(), "note".into()],
                        rows: vec![vec![Some("42".into()), None]],
                        rows_affected: None,
                        tag: None,
                    },
                    StatementResult {
                        columns: Vec::new(),
                        rows: Vec::new(),
                        rows_affected: Some(1),
                        tag: Some("UPDATE 1".into()),
                    },
                ],
                stdout: Some("done\n".into()),
                stderr: Some("warning: slow\n".into()),
                exit_code: Some(0),
                error: Some("partly failed".into()),
                truncated: true,
                agent: Some("racer".into()),
                started_at: Some("2024-12-06T15:47:41Z".into()),
                finished_at: Some("2024-12-06T15:47:42Z".into()),
            }),
            claimed_by: Some("racer".into()),
            auto_approval: Some(AutoApproval::Exempt {
                group: "sre".into(),
            }),
            // Never part of a snapshot: only the agent that holds the offer may know it.
            offer: Some("offer-secret".into()),
        }
    }

    #[test]
    fn a_snapshot_is_written_as_the_golden_one() {
        let json = |text: &str| serde_json::from_str::<serde_json::Value>(text).unwrap();
        assert_eq!(json(&write(&every_field_set())), json(GOLDEN));
    }

    #[test]
    fn the_golden_snapshot_reads_back_as_the_request() {
        let read = read(GOLDEN).expect("the golden snapshot reads");
        assert_eq!(
            read,
            AccessRequest {
                offer: None,
                ..every_field_set()
            }
        );
    }

    #[test]
    fn a_snapshot_from_before_auto_approvals_were_kept_reads_without_one() {
        let mut older: serde_json::Value = serde_json::from_str(GOLDEN).unwrap();
        older["request"]
            .as_object_mut()
            .unwrap()
            .remove("auto_approval");
        let read = read(&older.to_string()).expect("an older snapshot reads");
        assert_eq!(read.auto_approval, None);
        assert_eq!(read.claimed_by.as_deref(), Some("racer"));
    }

    #[test]
    fn a_snapshot_that_no_longer_fits_says_why() {
        let error = read(r#"{"version":1,"request":{"id":"x"}}"#).unwrap_err();
        assert!(error.contains("missing field `connection`"), "{error}");
        assert!(read("{not json").is_err());
    }
}
