//! What one group commit writes, worked out without a database. The writer (`Writer::try_commit`
//! in `sql.rs`) only runs the statements; the rules of which rows a group inserts and changes, and
//! what follows from the compare-and-sets that won, live here:
//!
//! 1. [`inserts`]: the new requests and their approval groups;
//! 2. [`reads`]: the requests the group's decisions are made on, read in its transaction;
//! 3. [`sightings`]: the signatures seen, inserted unless seen before, and [`sighted`]: which
//!    writes saw theirs first;
//! 4. [`Plan::new`], given those requests and sightings: each write's change (none for a
//!    decision whose signature was seen before), and [`Plan::compare_and_sets`];
//! 5. [`Plan::settle`], given the requests whose compare-and-set won: the group approvals to
//!    record, the outbox entries and audit events in order, what to announce, and each caller's
//!    outcome.

use std::collections::{HashMap, HashSet};

use super::group_commit::{Outcome, Write};
use super::sql::rows;
use super::{AuditEntry, Change, OutboxEntry, Sighting, StoreError, StoreResult};
use crate::domain::{AccessRequest, Millis, Status};

/// The result `change` records, as the `result` column holds it (JSON text).
pub(super) fn result_json(change: &Change) -> StoreResult<Option<String>> {
    change
        .result
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// The rows a group inserts, in the order of its writes.
pub(super) struct Inserts<'w> {
    pub requests: Vec<rows::NewRequest<'w>>,
    /// Every new request's approval groups, each pending, in the policy's order.
    pub groups: Vec<rows::Group<'w>>,
}

/// The new requests of `writes`, with their approval groups.
pub(super) fn inserts(writes: &[Write]) -> Inserts<'_> {
    let mut inserts = Inserts {
        requests: Vec::new(),
        groups: Vec::new(),
    };
    for write in writes {
        if let Write::Insert { new, .. } = write {
            inserts.requests.push(rows::NewRequest {
                id: &new.id,
                connection: &new.connection,
                command: &new.command,
                command_sha256: &new.command_sha256,
                requester: &new.requester,
                justification: new.justification.as_deref(),
                status: new.status.as_str(),
                created_at: new.created_at,
                expires_at: new.expires_at,
                decided_at: new.decided_at,
                auto_approval: new
                    .auto_approval
                    .as_ref()
                    .map(|why| serde_json::to_string(why).expect("a reason serializes")),
            });
            for (position, group) in new.approval_groups.iter().enumerate() {
                inserts.groups.push(rows::Group {
                    id: &new.id,
                    position,
                    group,
                });
            }
        }
    }
    inserts
}

/// The requests the decisions of `writes` are made on: read in the group's transaction, so
/// (on SQLite, which it holds the write lock of) they cannot change before the compare-and-set.
pub(super) fn reads(writes: &[Write]) -> Vec<rows::Id<'_>> {
    writes
        .iter()
        .filter_map(|write| match write {
            Write::Decide { request_id, .. } => Some(rows::Id { id: request_id }),
            _ => None,
        })
        .collect()
}

/// The signature write `i` records as seen, if any: a sighting's, or a decision's `once`.
fn sighting_of(write: &Write) -> Option<&Sighting> {
    match write {
        Write::Sighting(sighting) => Some(sighting),
        Write::Decide { once, .. } => once.as_ref(),
        _ => None,
    }
}

/// The signatures `writes` record as seen, for an insert that skips those seen before and
/// returns the others (see [`sighted`]).
pub(super) fn sightings(writes: &[Write]) -> Vec<rows::Sighting<'_>> {
    writes
        .iter()
        .filter_map(sighting_of)
        .map(|s| rows::Sighting {
            sha256: &s.sha256,
            at: s.at,
        })
        .collect()
}

/// For each write that records a signature, whether it is that signature's first sighting:
/// the insert returned it (`inserted`) and no earlier write of the group has it. (A group holds
/// at most one write per subject, but a decision's subject is its request, so two writes may
/// bring the same signature: only the first is new.)
pub(super) fn sighted(writes: &[Write], inserted: &HashSet<String>) -> Vec<Option<bool>> {
    let mut taken = HashSet::new();
    writes
        .iter()
        .map(|write| {
            let sha256 = &sighting_of(write)?.sha256;
            Some(inserted.contains(sha256) && taken.insert(sha256.as_str()))
        })
        .collect()
}

/// A group's writes with the change each makes of the requests as read.
pub(super) struct Plan<'w> {
    writes: &'w [Write],
    /// The requests [`reads`] named, by id, as the transaction read them.
    read: HashMap<String, AccessRequest>,
    /// The changes the `Decide` writes made, by the index of their write.
    made: Vec<Option<Change>>,
    /// For each write that records a signature, whether it is new (see [`sighted`]).
    sighted: Vec<Option<bool>>,
}

/// What follows from a group's compare-and-sets, given which of them won.
pub(super) struct Settled<'p> {
    /// Group approvals of the changes that won. The compare-and-set held the version each
    /// decision was made on, so each group is still pending.
    pub approvals: Vec<rows::Approval<'p>>,
    /// Outbox entries (request id, time, entry), in order: the new requests', then the changes
    /// that won's, each in the order of its write.
    pub outbox: Vec<(&'p str, Millis, &'p OutboxEntry)>,
    /// Audit events (request id, time, entry), in the same order as the outbox.
    pub audit: Vec<(&'p str, Millis, &'p AuditEntry)>,
    /// What to tell waiters once committed: each new request, and each change that won.
    pub announced: Vec<(String, Option<Status>)>,
    /// Each write's outcome, in order: [`StoreError::Conflict`] for a compare-and-set that lost;
    /// for a `Decide`, the request as read (`None`: there is no such request).
    pub outcomes: Vec<Outcome>,
}

impl<'w> Plan<'w> {
    /// Each write's change: an `Apply` as given, a `Decide` as its closure makes it of its request
    /// as `read` (none if it makes none, the request does not exist, or the signature it came
    /// with was seen before).
    pub(super) fn new(
        writes: &'w [Write],
        read: HashMap<String, AccessRequest>,
        sighted: Vec<Option<bool>>,
    ) -> Plan<'w> {
        let made = writes
            .iter()
            .zip(&sighted)
            .map(|(write, sighted)| match write {
                Write::Decide { .. } if *sighted == Some(false) => None,
                Write::Decide {
                    request_id, decide, ..
                } => read.get(request_id).and_then(decide),
                _ => None,
            })
            .collect();
        Plan {
            writes,
            read,
            made,
            sighted,
        }
    }

    /// The change write `i` makes, if any.
    fn change_of(&self, i: usize) -> Option<&Change> {
        match &self.writes[i] {
            Write::Apply(change) => Some(change),
            Write::Decide { .. } => self.made[i].as_ref(),
            Write::Insert { .. } | Write::Sighting(_) => None,
        }
    }

    /// Every change, in the order of its write.
    fn changes(&self) -> impl Iterator<Item = &Change> {
        (0..self.writes.len()).filter_map(|i| self.change_of(i))
    }

    /// One compare-and-set row per change: it applies only if its request is still at the
    /// version and status it was read at (and, for a decision, before its deadline).
    pub(super) fn compare_and_sets(&self) -> StoreResult<Vec<rows::Change<'_>>> {
        self.changes()
            .map(|change| {
                let rejection = change.rejection.as_ref();
                let result = result_json(change)?;
                Ok(rows::Change {
                    id: &change.request_id,
                    expected_version: change.expected_version,
                    expected_status: change.expected_status.as_str(),
                    status: change.status.map(|s| s.as_str()),
                    decided_at: change.decided_at,
                    rejected_by: rejection.map(|r| r.by.as_str()),
                    rejection_reason: rejection.map(|r| r.reason.as_str()),
                    rejected_at: rejection.map(|r| r.at),
                    rejected_via: rejection.map(|r| r.via.as_str()),
                    result,
                    lease_until: change.lease_until,
                    before_deadline: change.before_deadline,
                })
            })
            .collect()
    }

    /// What the group writes after its compare-and-sets, and answers, given the requests whose
    /// compare-and-set `won`. A change that lost contributes nothing.
    pub(super) fn settle(&self, won: &HashSet<String>) -> Settled<'_> {
        // One write per request in a group, so its request id says whether its change won.
        let applied: Vec<&Change> = self
            .changes()
            .filter(|change| won.contains(&change.request_id))
            .collect();
        let approvals = applied
            .iter()
            .filter_map(|change| {
                let decision = change.group_approval.as_ref()?;
                Some(rows::Approval {
                    id: &change.request_id,
                    group: &decision.group,
                    by: &decision.by,
                    at: change.at,
                    via: &decision.via,
                })
            })
            .collect();
        let mut outbox = Vec::new();
        let mut audit = Vec::new();
        let mut announced = Vec::new();
        for write in self.writes {
            if let Write::Insert {
                new,
                audit: events,
                outbox: entries,
            } = write
            {
                outbox.extend(entries.iter().map(|e| (new.id.as_str(), new.created_at, e)));
                audit.extend(events.iter().map(|e| (new.id.as_str(), new.created_at, e)));
                announced.push((new.id.clone(), Some(new.status)));
            }
        }
        for change in &applied {
            let id = change.request_id.as_str();
            outbox.extend(change.outbox.iter().map(|e| (id, change.at, e)));
            audit.extend(change.audit.iter().map(|e| (id, change.at, e)));
            announced.push((change.request_id.clone(), change.status));
        }
        let outcomes = self
            .writes
            .iter()
            .enumerate()
            .map(|(i, write)| {
                let lost = self
                    .change_of(i)
                    .is_some_and(|change| !won.contains(&change.request_id));
                let replayed = self.sighted[i] == Some(false);
                match write {
                    _ if lost => Err(StoreError::Conflict),
                    Write::Decide { .. } if replayed => Err(StoreError::Replayed),
                    Write::Decide { request_id, .. } => Ok(self.read.get(request_id).cloned()),
                    Write::Sighting(_) if replayed => Err(StoreError::Conflict),
                    Write::Insert { .. } | Write::Apply(_) | Write::Sighting(_) => Ok(None),
                }
            })
            .collect();
        Settled {
            approvals,
            outbox,
            audit,
            announced,
            outcomes,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::{Value, json};

    use super::*;
    use crate::audit::AuditKind;
    use crate::domain::Rejection;
    use crate::store::{GroupDecision, NewRequest};

    fn new_request(id: &str, groups: &[&str]) -> NewRequest {
        NewRequest {
            id: id.into(),
            connection: "prod-db".into(),
            command: "SELECT 1".into(),
            command_sha256: crate::domain::command_sha256("SELECT 1"),
            requester: "alice@x.com".into(),
            justification: None,
            status: Status::Pending,
            created_at: 1_000,
            expires_at: 61_000,
            decided_at: None,
            approval_groups: groups.iter().map(|g| g.to_string()).collect(),
            auto_approval: None,
        }
    }

    /// An event whose actor names it, so the order of events can be read off.
    fn event(name: &str) -> AuditEntry {
        AuditEntry {
            kind: AuditKind::Created,
            actor: name.into(),
            channel: crate::domain::Surface::Api,
            detail: json!({}),
        }
    }

    fn entry(topic: &str, request: &AccessRequest) -> OutboxEntry {
        OutboxEntry {
            topic: topic.into(),
            request: Arc::new(request.clone()),
        }
    }

    fn insert(id: &str, groups: &[&str]) -> Write {
        let new = new_request(id, groups);
        let stored = new.clone().stored();
        Write::Insert {
            new: Box::new(new),
            audit: vec![event(&format!("{id} created"))],
            outbox: vec![entry("access_request.created", &stored)],
        }
    }

    /// A pending request `id` as stored, at version 3.
    fn read(id: &str, groups: &[&str]) -> AccessRequest {
        AccessRequest {
            version: 3,
            ..new_request(id, groups).stored()
        }
    }

    /// `bob`'s approval for `group` of `request`, with its event and outbox entry.
    fn approval(request: &AccessRequest, group: &str) -> Change {
        let mut change = Change::to(request, 2_000);
        change.group_approval = Some(GroupDecision {
            group: group.into(),
            by: "bob@x.com".into(),
            via: "api".into(),
        });
        change.before_deadline = Some(2_000);
        change
            .audit
            .push(event(&format!("{} approved", request.id)));
        change.outbox = vec![entry("access_request.group_approved", request)];
        change
    }

    /// A rejection of any request read, made by its `Decide` write.
    fn rejecting(id: &str) -> Write {
        Write::Decide {
            request_id: id.into(),
            decide: Box::new(|request| {
                let mut change = Change::to(request, 2_000);
                change.status = Some(Status::Rejected);
                change.decided_at = Some(2_000);
                change.rejection = Some(Rejection {
                    by: "sam@x.com".into(),
                    reason: "wrong table".into(),
                    at: 2_000,
                    via: "slack".into(),
                });
                change
                    .audit
                    .push(event(&format!("{} rejected", request.id)));
                change.outbox = vec![entry("access_request.rejected", request)];
                Some(change)
            }),
            once: None,
        }
    }

    fn reading(requests: &[AccessRequest]) -> HashMap<String, AccessRequest> {
        requests.iter().map(|r| (r.id.clone(), r.clone())).collect()
    }

    fn won(ids: &[&str]) -> HashSet<String> {
        ids.iter().map(|id| id.to_string()).collect()
    }

    fn json_of<T: serde::Serialize>(rows: &T) -> Value {
        serde_json::to_value(rows).unwrap()
    }

    /// The actors of the events (see [`event`]), in order.
    fn audit_order(settled: &Settled) -> Vec<String> {
        settled
            .audit
            .iter()
            .map(|(_, _, e)| e.actor.clone())
            .collect()
    }

    fn outbox_order(settled: &Settled) -> Vec<(String, String)> {
        settled
            .outbox
            .iter()
            .map(|(id, _, e)| (id.to_string(), e.topic.clone()))
            .collect()
    }

    #[test]
    fn new_requests_are_inserted_with_their_groups_in_order() {
        let mut writes = vec![insert("r1", &["dba-team", "security"]), insert("r2", &[])];
        if let Write::Insert { new, .. } = &mut writes[1] {
            new.auto_approval = Some(crate::domain::AutoApproval::Exempt {
                group: "sre".into(),
            });
        }
        let inserts = inserts(&writes);
        assert_eq!(
            json_of(&inserts.requests),
            json!([
                {"id": "r1", "connection": "prod-db", "command": "SELECT 1",
                 "command_sha256": crate::domain::command_sha256("SELECT 1"),
                 "requester": "alice@x.com", "justification": null, "status": "pending",
                 "created_at": 1_000, "expires_at": 61_000, "decided_at": null,
                 "auto_approval": null},
                {"id": "r2", "connection": "prod-db", "command": "SELECT 1",
                 "command_sha256": crate::domain::command_sha256("SELECT 1"),
                 "requester": "alice@x.com", "justification": null, "status": "pending",
                 "created_at": 1_000, "expires_at": 61_000, "decided_at": null,
                 "auto_approval": r#"{"reason":"exempt_group","group":"sre"}"#},
            ])
        );
        assert_eq!(
            json_of(&inserts.groups),
            json!([
                {"id": "r1", "position": 0, "group": "dba-team"},
                {"id": "r1", "position": 1, "group": "security"},
            ])
        );
        assert!(reads(&writes).is_empty());

        let plan = Plan::new(&writes, HashMap::new(), sighted(&writes, &HashSet::new()));
        assert!(plan.compare_and_sets().unwrap().is_empty());
        let settled = plan.settle(&HashSet::new());
        assert!(settled.approvals.is_empty());
        assert_eq!(audit_order(&settled), ["r1 created", "r2 created"]);
        assert_eq!(
            outbox_order(&settled),
            [
                ("r1".into(), "access_request.created".into()),
                ("r2".into(), "access_request.created".into())
            ]
        );
        assert!(settled.audit.iter().all(|(_, at, _)| *at == 1_000));
        assert_eq!(
            settled.announced,
            [
                ("r1".to_string(), Some(Status::Pending)),
                ("r2".to_string(), Some(Status::Pending))
            ]
        );
        assert!(matches!(settled.outcomes[..], [Ok(None), Ok(None)]));
    }

    #[test]
    fn a_decision_becomes_a_compare_and_set_on_the_version_it_was_made_on() {
        let r1 = read("r1", &["dba-team"]);
        let writes = vec![rejecting("r1")];
        assert_eq!(json_of(&reads(&writes)), json!([{"id": "r1"}]));

        let plan = Plan::new(
            &writes,
            reading(std::slice::from_ref(&r1)),
            sighted(&writes, &HashSet::new()),
        );
        assert_eq!(
            json_of(&plan.compare_and_sets().unwrap()),
            json!([{
                "id": "r1", "expected_version": 3, "expected_status": "pending",
                "status": "rejected", "decided_at": 2_000, "rejected_by": "sam@x.com",
                "rejection_reason": "wrong table", "rejected_at": 2_000, "rejected_via": "slack",
                "result": null, "lease_until": null, "before_deadline": null,
            }])
        );
        let settled = plan.settle(&won(&["r1"]));
        assert_eq!(audit_order(&settled), ["r1 rejected"]);
        assert_eq!(
            outbox_order(&settled),
            [("r1".into(), "access_request.rejected".into())]
        );
        assert_eq!(
            settled.announced,
            [("r1".to_string(), Some(Status::Rejected))]
        );
        // The caller hears the request as read, to build its answer from.
        assert!(matches!(&settled.outcomes[..], [Ok(Some(r))] if *r == r1));
    }

    /// A decision that came with a signature seen before makes no change and answers
    /// `Replayed`; of two writes bringing the same new signature, only the first is new.
    #[test]
    fn a_decision_whose_signature_was_seen_before_is_not_made() {
        let (r1, r2) = (read("r1", &["dba-team"]), read("r2", &["dba-team"]));
        let signed = |id: &str, sha256: &str| {
            let mut write = rejecting(id);
            if let Write::Decide { once, .. } = &mut write {
                *once = Some(Sighting {
                    sha256: sha256.into(),
                    at: 2_000,
                });
            }
            write
        };
        let writes = vec![
            signed("r1", "seen"),
            signed("r2", "new"),
            Write::Sighting(Sighting {
                sha256: "new".into(),
                at: 2_000,
            }),
        ];
        assert_eq!(
            json_of(&sightings(&writes)),
            json!([{"sha256": "seen", "at": 2_000}, {"sha256": "new", "at": 2_000},
                   {"sha256": "new", "at": 2_000}])
        );
        // The insert returned only "new": "seen" was there before.
        let sighted = sighted(&writes, &won(&["new"]));
        assert_eq!(sighted, [Some(false), Some(true), Some(false)]);

        let plan = Plan::new(&writes, reading(&[r1, r2.clone()]), sighted);
        let compare_and_sets = json_of(&plan.compare_and_sets().unwrap());
        assert_eq!(compare_and_sets.as_array().unwrap().len(), 1);
        assert_eq!(compare_and_sets[0]["id"], "r2");
        let settled = plan.settle(&won(&["r2"]));
        assert_eq!(audit_order(&settled), ["r2 rejected"]);
        assert!(matches!(
            &settled.outcomes[..],
            [Err(StoreError::Replayed), Ok(Some(r)), Err(StoreError::Conflict)] if *r == r2
        ));
    }

    #[test]
    fn a_decision_that_makes_no_change_writes_nothing_and_answers_the_request_read() {
        let r1 = read("r1", &["dba-team"]);
        let writes = vec![Write::Decide {
            request_id: "r1".into(),
            decide: Box::new(|_| None),
            once: None,
        }];
        let plan = Plan::new(
            &writes,
            reading(std::slice::from_ref(&r1)),
            sighted(&writes, &HashSet::new()),
        );
        assert!(plan.compare_and_sets().unwrap().is_empty());
        let settled = plan.settle(&HashSet::new());
        assert!(settled.approvals.is_empty());
        assert!(settled.outbox.is_empty() && settled.audit.is_empty());
        assert!(settled.announced.is_empty());
        assert!(matches!(&settled.outcomes[..], [Ok(Some(r))] if *r == r1));
    }

    #[test]
    fn a_decision_on_a_missing_request_is_not_made_and_answers_none() {
        let writes = vec![rejecting("gone")];
        let plan = Plan::new(&writes, HashMap::new(), sighted(&writes, &HashSet::new()));
        assert!(plan.compare_and_sets().unwrap().is_empty());
        let settled = plan.settle(&HashSet::new());
        assert!(settled.outbox.is_empty() && settled.audit.is_empty());
        assert!(settled.announced.is_empty());
        assert!(matches!(settled.outcomes[..], [Ok(None)]));
    }

    #[test]
    fn a_lost_compare_and_set_is_a_conflict_and_contributes_nothing() {
        let (r1, r2) = (read("r1", &["dba-team"]), read("r2", &["dba-team"]));
        let writes = vec![
            Write::Apply(Box::new(approval(&r1, "dba-team"))),
            Write::Apply(Box::new(approval(&r2, "dba-team"))),
            rejecting("r3"),
        ];
        let r3 = read("r3", &[]);
        let plan = Plan::new(&writes, reading(&[r3]), sighted(&writes, &HashSet::new()));
        assert_eq!(plan.compare_and_sets().unwrap().len(), 3);
        // r1's and r3's requests changed since they were read.
        let settled = plan.settle(&won(&["r2"]));
        assert_eq!(
            json_of(&settled.approvals),
            json!([{"id": "r2", "group": "dba-team", "by": "bob@x.com", "at": 2_000, "via": "api"}])
        );
        assert_eq!(audit_order(&settled), ["r2 approved"]);
        assert_eq!(
            outbox_order(&settled),
            [("r2".into(), "access_request.group_approved".into())]
        );
        assert_eq!(settled.announced, [("r2".to_string(), None)]);
        assert!(matches!(
            settled.outcomes[..],
            [
                Err(StoreError::Conflict),
                Ok(None),
                Err(StoreError::Conflict)
            ]
        ));
    }

    #[test]
    fn events_and_entries_follow_the_writes_new_requests_first() {
        let (r1, r2) = (read("r1", &["dba-team"]), read("r2", &[]));
        let writes = vec![
            Write::Apply(Box::new(approval(&r1, "dba-team"))),
            insert("n1", &[]),
            rejecting("r2"),
            insert("n2", &["security"]),
        ];
        let plan = Plan::new(&writes, reading(&[r2]), sighted(&writes, &HashSet::new()));
        let settled = plan.settle(&won(&["r1", "r2"]));
        assert_eq!(
            audit_order(&settled),
            ["n1 created", "n2 created", "r1 approved", "r2 rejected"]
        );
        let subjects: Vec<&str> = settled.audit.iter().map(|(id, _, _)| *id).collect();
        assert_eq!(subjects, ["n1", "n2", "r1", "r2"]);
        assert_eq!(
            outbox_order(&settled),
            [
                ("n1".into(), "access_request.created".into()),
                ("n2".into(), "access_request.created".into()),
                ("r1".into(), "access_request.group_approved".into()),
                ("r2".into(), "access_request.rejected".into()),
            ]
        );
        assert_eq!(
            settled.announced,
            [
                ("n1".to_string(), Some(Status::Pending)),
                ("n2".to_string(), Some(Status::Pending)),
                ("r1".to_string(), None),
                ("r2".to_string(), Some(Status::Rejected)),
            ]
        );
    }
}
