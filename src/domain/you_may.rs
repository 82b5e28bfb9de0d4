//! Who may act on a request now: the one rule every surface asks before it offers a button, lists
//! a request as waiting for someone, or opens a form, and that [`super::decide`] applies to the
//! decision itself. Asking it first means a surface never offers what the decision would refuse.

use serde::{Deserialize, Serialize};

use super::{AccessRequest, GroupStatus, Identity, Millis, Status};

/// What `person` may do with a request at a given time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct YouMay {
    /// The groups they may approve for now, in the request's order. One person satisfies at most
    /// one group, so once they approved for one this is empty.
    pub approve_as: Vec<String>,
    /// Whether they may reject it now (any member of an approval group, or an admin, but never
    /// the requester; approving for one group does not take that away).
    pub reject: bool,
    /// Why they may not approve, whenever `approve_as` is empty.
    pub why_not: Option<WhyNot>,
}

impl YouMay {
    /// Whether the request waits on this person: they may approve it for some group now.
    pub fn may_approve(&self) -> bool {
        !self.approve_as.is_empty()
    }
}

/// Why a person may not approve a request now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum WhyNot {
    /// It is their own request: someone else must decide it.
    OwnRequest,
    /// None of the groups still waiting is theirs.
    NotInPendingGroup,
    /// They already approved it for `group`; another person must approve the rest.
    AlreadyApproved { group: String },
    /// It is no longer pending.
    Decided { status: Status },
    /// Its deadline passed (swept or not).
    Expired,
}

/// What `person`, with their current groups, may do with `request` at `now`.
pub fn you_may(request: &AccessRequest, person: &Identity, now: Millis) -> YouMay {
    let nothing = |why: WhyNot| YouMay {
        approve_as: Vec::new(),
        reject: false,
        why_not: Some(why),
    };
    if request.status == Status::Expired
        || (request.status == Status::Pending && request.is_expired_at(now))
    {
        return nothing(WhyNot::Expired);
    }
    if request.status != Status::Pending {
        return nothing(WhyNot::Decided {
            status: request.status,
        });
    }
    if person.email.as_str() == request.requester {
        return nothing(WhyNot::OwnRequest);
    }
    let reject = person.is_admin
        || request
            .approval_groups
            .iter()
            .any(|g| person.in_group(&g.group));
    // One person satisfies at most one group: dual approval means two people.
    if let Some(mine) = approved_by(request, person) {
        return YouMay {
            approve_as: Vec::new(),
            reject,
            why_not: Some(WhyNot::AlreadyApproved {
                group: mine.to_string(),
            }),
        };
    }
    let approve_as: Vec<String> = request
        .pending_groups()
        .filter(|g| person.in_group(&g.group))
        .map(|g| g.group.clone())
        .collect();
    let why_not = approve_as.is_empty().then_some(WhyNot::NotInPendingGroup);
    YouMay {
        approve_as,
        reject,
        why_not,
    }
}

/// The group `person` already approved `request` for, if any.
pub(super) fn approved_by<'r>(request: &'r AccessRequest, person: &Identity) -> Option<&'r str> {
    request
        .approval_groups
        .iter()
        .find(|g| {
            g.status == GroupStatus::Approved
                && g.decided_by.as_deref() == Some(person.email.as_str())
        })
        .map(|g| g.group.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::testing::{NOW, People, people, request, user};

    fn may(approve_as: &[&str], reject: bool, why_not: Option<WhyNot>) -> YouMay {
        YouMay {
            approve_as: approve_as.iter().map(|g| g.to_string()).collect(),
            reject,
            why_not,
        }
    }

    #[test]
    fn decision_table() {
        let People {
            alice,
            bob,
            sam,
            both,
            eve,
            root,
            dan,
        } = people();
        let decided = |status| {
            let mut r = request(&[("dba-team", "bob@x"), ("security", "sam@x")]);
            r.status = status;
            r
        };
        let swept = {
            let mut r = request(&[]);
            r.status = Status::Expired;
            r
        };
        let overdue = {
            let mut r = request(&[]);
            r.expires_at = NOW;
            r
        };

        #[rustfmt::skip]
        let cases: Vec<(&str, AccessRequest, &Identity, YouMay)> = vec![
            ("a member may approve their group", request(&[]), &bob, may(&["dba-team"], true, None)),
            ("a member of two groups may approve either", request(&[]), &both, may(&["dba-team", "security"], true, None)),
            ("after approving one group, a member of two may approve no other, but may reject",
                request(&[("dba-team", "bo@x")]), &both,
                may(&[], true, Some(WhyNot::AlreadyApproved { group: "dba-team".into() }))),
            ("a group approved by someone else is not offered", request(&[("dba-team", "bob@x")]), &dan,
                may(&[], true, Some(WhyNot::NotInPendingGroup))),
            ("the other group is still offered", request(&[("dba-team", "bob@x")]), &sam, may(&["security"], true, None)),
            ("the requester may do nothing, even in an approval group", request(&[]), &alice,
                may(&[], false, Some(WhyNot::OwnRequest))),
            ("an outsider may do nothing", request(&[]), &eve, may(&[], false, Some(WhyNot::NotInPendingGroup))),
            ("an admin outside the groups may reject only", request(&[]), &root, may(&[], true, Some(WhyNot::NotInPendingGroup))),
            ("an expired request, swept", swept, &bob, may(&[], false, Some(WhyNot::Expired))),
            ("an expired request, not yet swept", overdue, &bob, may(&[], false, Some(WhyNot::Expired))),
            ("an approved request", decided(Status::Approved), &dan,
                may(&[], false, Some(WhyNot::Decided { status: Status::Approved }))),
            ("a rejected request", decided(Status::Rejected), &sam,
                may(&[], false, Some(WhyNot::Decided { status: Status::Rejected }))),
            ("a cancelled request, even to its requester", decided(Status::Cancelled), &alice,
                may(&[], false, Some(WhyNot::Decided { status: Status::Cancelled }))),
        ];
        for (name, req, person, expected) in cases {
            assert_eq!(you_may(&req, person, NOW), expected, "{name}");
        }
    }

    /// The rule and the decision never disagree: whatever the rule offers, `decide` accepts, and
    /// whatever it withholds, `decide` refuses.
    #[test]
    fn the_rule_and_the_decision_agree() {
        use crate::domain::{Decision, decide};
        let people = [
            user("alice@x", &["engineering", "dba-team"]),
            user("bob@x", &["dba-team"]),
            user("sam@x", &["security"]),
            user("bo@x", &["dba-team", "security"]),
            user("eve@x", &["engineering"]),
            user("root@x", &["admin"]),
        ];
        let states = [
            request(&[]),
            request(&[("dba-team", "bob@x")]),
            request(&[("dba-team", "bo@x")]),
            request(&[("security", "sam@x")]),
        ];
        for req in &states {
            for person in &people {
                let may = you_may(req, person, NOW);
                for group in ["dba-team", "security"] {
                    let approve = Decision::Approve {
                        group: Some(group.into()),
                    };
                    assert_eq!(
                        decide(req, person, &approve, NOW).is_ok(),
                        may.approve_as.iter().any(|g| g == group),
                        "{} approving for {group} on {:?}",
                        person.email,
                        req.approval_groups
                    );
                }
                let reject = Decision::Reject {
                    reason: "no".into(),
                };
                assert_eq!(
                    decide(req, person, &reject, NOW).is_ok(),
                    may.reject,
                    "{} rejecting",
                    person.email
                );
            }
        }
    }
}
