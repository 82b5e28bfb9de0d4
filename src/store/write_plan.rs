//! What one group commit writes, worked out without a database. The writer (`Writer::try_commit`
//! in `sql.rs`) only runs the statements; the rules of which rows a group inserts and changes, and
//! what follows from the compare-and-sets that won, live here:
//!
//! 1. [`inserts`]: the new requests and their approval groups;
//! 2. [`reads`]: the requests the group's decisions are made on, read in its transaction;
//! 3. [`Plan::new`], given those requests: each write's change, and [`Plan::compare_and_sets`];
//! 4. [`Plan::settle`], given the requests whose compare-and-set won: the group approvals to
//!    record, the outbox entries and audit events in order, what to announce, and each caller's
//!    outcome.

use std::collections::{HashMap, HashSet};

use super::group_commit::{Outcome, Write};
use super::sql::rows;
use super::{AuditEntry, Change, OutboxEntry, StoreError, StoreResult};
use crate::domain::{AccessRequest, Millis, Status};

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

/// A group's writes with the change each makes of the requests as read.
pub(super) struct Plan<'w> {
    writes: &'w [Write],
    /// The requests [`reads`] named, by id, as the transaction read them.
    read: HashMap<String, AccessRequest>,
    /// The changes the `Decide` writes made, by the index of their write.
    made: Vec<Option<Change>>,
}

/// What follows from a group's compare-and-sets, given which of them won.
pub(super) struct Settled<'p> {
    /// Group approvals of the changes that won. The compare-and-set held the version each
    /// decision was made on, so each group is still pending.
    pub approvals: Vec<rows::Approval<'p>>,
    /// Outbox entries (request id, time, entry), in order: the new requests', then the changes
    /// that won's, each in the order of its write.
    pub outbox: Vec<(&'p str, Millis, &'p OutboxEntry)>,
    /// Audit events (request or subject id, time, entry), in order: the new requests' and the
    /// `Audit` writes', then the changes that won's, each in the order of its write.
    pub audit: Vec<(&'p str, Millis, &'p AuditEntry)>,
    /// What to tell waiters once committed: each new request, and each change that won.
    pub announced: Vec<(String, Option<Status>)>,
    /// Each write's outcome, in order: [`StoreError::Conflict`] for a compare-and-set that lost;
    /// for a `Decide`, the request as read (`None`: there is no such request).
    pub outcomes: Vec<Outcome>,
}

impl<'w> Plan<'w> {
    /// Each write's change: an `Apply` as given, a `Decide` as its closure makes it of its request
    /// as `read` (none if it makes none, or the request does not exist).
    pub(super) fn new(writes: &'w [Write], read: HashMap<String, AccessRequest>) -> Plan<'w> {
        let made = writes
            .iter()
            .map(|write| match write {
                Write::Decide { request_id, decide } => read.get(request_id).and_then(|r| decide(r)),
                _ => None,
            })
            .collect();
        Plan {
            writes,
            read,
            made,
        }
    }

    /// The change write `i` makes, if any.
    fn change_of(&self, i: usize) -> Option<&Change> {
        match &self.writes[i] {
            Write::Apply(change) => Some(change),
            Write::Decide { .. } => self.made[i].as_ref(),
            Write::Insert { .. } | Write::Audit { .. } => None,
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
                let result = change
                    .result
                    .as_ref()
                    .map(serde_json::to_string)
                    .transpose()
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
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

    /// What the group writes after its compare-and-sets, and answers, given the ids of the
    /// requests whose compare-and-set `won`. A change that lost contributes nothing.
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
            match write {
                Write::Insert {
                    new,
                    audit: events,
                    outbox: entries,
                } => {
                    outbox.extend(entries.iter().map(|e| (new.id.as_str(), new.created_at, e)));
                    audit.extend(events.iter().map(|e| (new.id.as_str(), new.created_at, e)));
                    announced.push((new.id.clone(), Some(new.status)));
                }
                Write::Audit {
                    subject_id,
                    at,
                    audit: events,
                } => audit.extend(events.iter().map(|e| (subject_id.as_str(), *at, e))),
                Write::Apply(_) | Write::Decide { .. } => {}
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
                match write {
                    _ if lost => Err(StoreError::Conflict),
                    Write::Decide { request_id, .. } => Ok(self.read.get(request_id).cloned()),
                    Write::Insert { .. } | Write::Apply(_) | Write::Audit { .. } => Ok(None),
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
