use super::you_may::{WhyNot, you_may};
use super::{AccessRequest, GroupApproval, Identity, Millis, Status};

/// What a person asks to do with a pending request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Approve for `group`, or for the first pending group the approver belongs to.
    Approve {
        group: Option<String>,
    },
    Reject {
        reason: String,
    },
    /// The requester (or an admin) withdraws the request.
    Cancel,
}

/// What a permitted decision does to the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `group` is satisfied; `completes` when it was the last pending group.
    GroupApproved {
        group: String,
        completes: bool,
    },
    Rejected {
        reason: String,
    },
    Cancelled,
}

/// Why a decision is refused. Each maps to one API error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecisionError {
    #[error("this request is already {0}")]
    AlreadyDecided(Status),
    #[error("group {0} has already been approved by {1}")]
    GroupAlreadyApproved(String, String),
    #[error("this request expired before the decision")]
    Expired,
    #[error("you cannot approve or reject your own request")]
    SelfApproval,
    #[error("{0}")]
    NotInGroup(String),
    #[error(
        "you already approved this request for group {0}; another person must approve the rest"
    )]
    AlreadyApprovedByYou(String),
    #[error("only the requester or an admin can cancel a request")]
    NotRequester,
    #[error("a rejection needs a reason")]
    ReasonRequired,
}

/// Checks `decision` by `actor` against the request as it is at `now`.
///
/// The caller applies the outcome with a compare-and-set on the request's version, so a decision
/// that was valid for a state that changed meanwhile is re-checked, never applied blindly.
pub fn decide(
    request: &AccessRequest,
    actor: &Identity,
    decision: &Decision,
    now: Millis,
) -> Result<Outcome, DecisionError> {
    // An approved job that no agent has started yet can still be withdrawn: otherwise a job whose
    // agent never comes could not be stopped by anyone until its pickup deadline.
    if request.status == Status::Approved && *decision == Decision::Cancel {
        return cancel(request, actor);
    }
    if request.status == Status::Expired
        || (request.status == Status::Pending && request.is_expired_at(now))
    {
        return Err(DecisionError::Expired);
    }
    if request.status != Status::Pending {
        return Err(DecisionError::AlreadyDecided(request.status));
    }
    match decision {
        Decision::Approve { group } => approve(request, actor, group.as_deref(), now),
        Decision::Reject { reason } => reject(request, actor, reason, now),
        Decision::Cancel => cancel(request, actor),
    }
}

fn cancel(request: &AccessRequest, actor: &Identity) -> Result<Outcome, DecisionError> {
    if actor.email.as_str() == request.requester || actor.is_admin {
        Ok(Outcome::Cancelled)
    } else {
        Err(DecisionError::NotRequester)
    }
}

fn approve(
    request: &AccessRequest,
    actor: &Identity,
    group: Option<&str>,
    now: Millis,
) -> Result<Outcome, DecisionError> {
    let may = you_may(request, actor, now);
    match &may.why_not {
        Some(WhyNot::OwnRequest) => return Err(DecisionError::SelfApproval),
        Some(WhyNot::AlreadyApproved { group }) => {
            return Err(DecisionError::AlreadyApprovedByYou(group.clone()));
        }
        _ => {}
    }
    let target = match group {
        Some(name) if may.approve_as.iter().any(|g| g == name) => name,
        Some(name) => {
            let Some(target) = request.approval_groups.iter().find(|g| g.group == name) else {
                return Err(DecisionError::NotInGroup(format!(
                    "group {name} is not an approval group of this request"
                )));
            };
            if !actor.in_group(name) {
                return Err(DecisionError::NotInGroup(format!(
                    "you are not a member of group {name}"
                )));
            }
            return Err(already_approved(target));
        }
        None => match may.approve_as.first() {
            Some(first) => first.as_str(),
            None => {
                // Say who got there first when one of the person's groups is already approved.
                return Err(
                    match request
                        .approval_groups
                        .iter()
                        .find(|g| actor.in_group(&g.group))
                    {
                        Some(decided) => already_approved(decided),
                        None => DecisionError::NotInGroup(format!(
                            "you are not a member of any approval group of this request ({})",
                            group_names(request)
                        )),
                    },
                );
            }
        },
    };
    let completes = request.pending_groups().count() == 1;
    Ok(Outcome::GroupApproved {
        group: target.to_string(),
        completes,
    })
}

fn already_approved(group: &GroupApproval) -> DecisionError {
    DecisionError::GroupAlreadyApproved(
        group.group.clone(),
        group.decided_by.clone().unwrap_or_default(),
    )
}

fn reject(
    request: &AccessRequest,
    actor: &Identity,
    reason: &str,
    now: Millis,
) -> Result<Outcome, DecisionError> {
    let may = you_may(request, actor, now);
    if may.why_not == Some(WhyNot::OwnRequest) {
        return Err(DecisionError::SelfApproval);
    }
    if !may.reject {
        return Err(DecisionError::NotInGroup(format!(
            "only members of the approval groups ({}) can reject this request",
            group_names(request)
        )));
    }
    let reason = reason.trim();
    // A reason the requester cannot see (only zero-width or other invisible characters) is none.
    if !reason
        .chars()
        .any(|c| !c.is_whitespace() && !crate::display::is_hidden(c))
    {
        return Err(DecisionError::ReasonRequired);
    }
    Ok(Outcome::Rejected {
        reason: reason.to_string(),
    })
}

fn group_names(request: &AccessRequest) -> String {
    request
        .approval_groups
        .iter()
        .map(|g| g.group.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::testing::{NOW, People, people, request, user};

    fn approve(g: Option<&str>) -> Decision {
        Decision::Approve {
            group: g.map(Into::into),
        }
    }

    /// Name, request, actor, decision, expected outcome.
    type Case<'a> = (
        &'a str,
        AccessRequest,
        &'a Identity,
        Decision,
        Result<Outcome, DecisionError>,
    );

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
        let reject = |r: &str| Decision::Reject { reason: r.into() };
        let group_approved = |g: &str, completes| {
            Ok(Outcome::GroupApproved {
                group: g.into(),
                completes,
            })
        };

        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            ("member approves their group", request(&[]), &bob, approve(Some("dba-team")), group_approved("dba-team", false)),
            ("group is picked when omitted", request(&[]), &sam, approve(None), group_approved("security", false)),
            ("last group completes", request(&[("dba-team", "bob@x")]), &sam, approve(None), group_approved("security", true)),
            ("two groups need two people", request(&[("dba-team", "bo@x")]), &both, approve(Some("security")),
                Err(DecisionError::AlreadyApprovedByYou("dba-team".into()))),
            ("one person in both groups satisfies one", request(&[]), &both, approve(None), group_approved("dba-team", false)),
            ("requester in an approval group cannot approve", request(&[]), &alice, approve(Some("dba-team")), Err(DecisionError::SelfApproval)),
            ("approver must be in the group", request(&[]), &bob, approve(Some("security")),
                Err(DecisionError::NotInGroup("you are not a member of group security".into()))),
            ("non-member cannot approve", request(&[]), &eve, approve(None),
                Err(DecisionError::NotInGroup("you are not a member of any approval group of this request (dba-team, security)".into()))),
            ("unknown group", request(&[]), &bob, approve(Some("nope")),
                Err(DecisionError::NotInGroup("group nope is not an approval group of this request".into()))),
            ("a decided group stays decided", request(&[("dba-team", "bob@x")]), &dan, approve(None),
                Err(DecisionError::GroupAlreadyApproved("dba-team".into(), "bob@x".into()))),
            ("same approver twice", request(&[("dba-team", "bob@x")]), &bob, approve(Some("dba-team")),
                Err(DecisionError::AlreadyApprovedByYou("dba-team".into()))),
            ("any eligible rejection wins", request(&[("dba-team", "bob@x")]), &sam, reject("not now"),
                Ok(Outcome::Rejected { reason: "not now".into() })),
            ("the approver of another group may still reject", request(&[("dba-team", "bob@x")]), &bob, reject(" risky "),
                Ok(Outcome::Rejected { reason: "risky".into() })),
            ("rejection needs a reason", request(&[]), &sam, reject("  "), Err(DecisionError::ReasonRequired)),
            ("an invisible reason is none", request(&[]), &sam, reject("\u{200b}\u{2800} \u{3164}"), Err(DecisionError::ReasonRequired)),
            ("outsiders cannot reject", request(&[]), &eve, reject("no"),
                Err(DecisionError::NotInGroup("only members of the approval groups (dba-team, security) can reject this request".into()))),
            ("admins can reject", request(&[]), &root, reject("freeze"), Ok(Outcome::Rejected { reason: "freeze".into() })),
            ("requester cannot reject their own", request(&[]), &alice, reject("oops"), Err(DecisionError::SelfApproval)),
            ("requester cancels", request(&[]), &alice, Decision::Cancel, Ok(Outcome::Cancelled)),
            ("admin cancels", request(&[]), &root, Decision::Cancel, Ok(Outcome::Cancelled)),
            ("others cannot cancel", request(&[]), &bob, Decision::Cancel, Err(DecisionError::NotRequester)),
        ];
        for (name, req, actor, decision, expected) in cases {
            assert_eq!(decide(&req, actor, &decision, NOW), expected, "{name}");
        }
    }

    #[test]
    fn decisions_after_expiry_fail_even_before_the_sweeper() {
        let bob = user("bob@x", &["dba-team"]);
        let req = request(&[]);
        for decision in [
            approve(None),
            Decision::Reject { reason: "x".into() },
            Decision::Cancel,
        ] {
            assert_eq!(
                decide(&req, &bob, &decision, req.expires_at),
                Err(DecisionError::Expired)
            );
        }
        let mut swept = request(&[]);
        swept.status = Status::Expired;
        assert_eq!(
            decide(&swept, &bob, &approve(None), NOW),
            Err(DecisionError::Expired)
        );
    }

    #[test]
    fn an_approved_job_not_yet_started_can_be_cancelled_by_its_requester_or_an_admin() {
        let alice = user("alice@x", &["engineering"]);
        let root = user("root@x", &["admin"]);
        let bob = user("bob@x", &["dba-team"]);
        let mut approved = request(&[("dba-team", "bob@x"), ("security", "sam@x")]);
        approved.status = Status::Approved;
        // Past the approval deadline too: that deadline is for deciding, not for withdrawing.
        let later = approved.expires_at + 1;
        assert_eq!(
            decide(&approved, &alice, &Decision::Cancel, later),
            Ok(Outcome::Cancelled)
        );
        assert_eq!(
            decide(&approved, &root, &Decision::Cancel, NOW),
            Ok(Outcome::Cancelled)
        );
        assert_eq!(
            decide(&approved, &bob, &Decision::Cancel, NOW),
            Err(DecisionError::NotRequester)
        );
        // Only withdrawing: an approved job cannot be rejected or approved again.
        assert_eq!(
            decide(
                &approved,
                &root,
                &Decision::Reject {
                    reason: "no".into()
                },
                NOW
            ),
            Err(DecisionError::AlreadyDecided(Status::Approved))
        );
        // Offered to an agent but not started: still withdrawable (the start loses the race).
        approved.claimed_by = Some("edge".into());
        approved.offer = Some("offer-1".into());
        assert_eq!(
            decide(&approved, &alice, &Decision::Cancel, NOW),
            Ok(Outcome::Cancelled)
        );
        // Once an agent has started it, the command may be running: too late to cancel.
        for status in [Status::Running, Status::Executed, Status::Failed] {
            approved.status = status;
            assert_eq!(
                decide(&approved, &alice, &Decision::Cancel, NOW),
                Err(DecisionError::AlreadyDecided(status))
            );
        }
    }

    #[test]
    fn decided_requests_refuse_everything() {
        let sam = user("sam@x", &["security"]);
        for status in [
            Status::Approved,
            Status::Rejected,
            Status::Cancelled,
            Status::Executed,
        ] {
            let mut req = request(&[]);
            req.status = status;
            assert_eq!(
                decide(&req, &sam, &approve(None), NOW),
                Err(DecisionError::AlreadyDecided(status))
            );
        }
    }
}
