use std::collections::BTreeSet;
use std::time::Duration;

use super::Email;

/// The access-request policy of one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Access requests on or off. Off means every command runs at once (and is still recorded).
    pub enabled: bool,
    /// One member of each of these groups must approve.
    pub approval_groups: Vec<String>,
    pub require_approval_for: RequireApprovalFor,
    /// Members of these groups bypass approval.
    pub exempt_groups: Vec<String>,
    /// Admins' own commands run at once (audited, and announced as run without review). When
    /// off, an admin's command is held like anyone's, unless an exempt group or
    /// `require_approval_for` lets it through.
    pub admin_auto_approve: bool,
    /// How long a request may stay pending.
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequireApprovalFor {
    All,
    /// Only members of these groups need approval.
    Groups(Vec<String>),
}

/// Who is acting: a configured user with their current groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// As the config spells it.
    pub email: Email,
    pub groups: BTreeSet<String>,
    pub is_admin: bool,
}

impl Identity {
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.contains(group)
    }
}

/// What the policy says about a new command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Hold it until one member of each group approves.
    Hold { approval_groups: Vec<String> },
    /// Approve it now; the reason goes into the audit trail.
    AutoApprove(AutoApproval),
}

/// Why a command was approved without review; kept with the request (as
/// `{"reason": "exempt_group", "group": "sre"}`), so every surface can say it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "reason")]
pub enum AutoApproval {
    #[serde(rename = "access_requests_disabled")]
    AccessRequestsDisabled,
    #[serde(rename = "admin")]
    Admin,
    #[serde(rename = "exempt_group")]
    Exempt { group: String },
    #[serde(rename = "approval_not_required")]
    NotRequiredForRequester,
}

impl AutoApproval {
    /// A short machine-readable reason for the audit trail.
    pub fn code(&self) -> &'static str {
        match self {
            AutoApproval::AccessRequestsDisabled => "access_requests_disabled",
            AutoApproval::Admin => "admin",
            AutoApproval::Exempt { .. } => "exempt_group",
            AutoApproval::NotRequiredForRequester => "approval_not_required",
        }
    }

    /// Whether the connection's review was skipped — an admin's own request, an exempt group's —
    /// rather than not asked for (no policy, or not for the requester's groups). Such a run is
    /// shown where reviews are (a card in the connection's channel).
    pub fn skipped_review(&self) -> bool {
        matches!(self, AutoApproval::Admin | AutoApproval::Exempt { .. })
    }

    /// The reason as a person reads it.
    pub fn describe(&self) -> String {
        match self {
            AutoApproval::AccessRequestsDisabled => {
                "access requests are disabled for this connection".to_string()
            }
            AutoApproval::Admin => "requested by an admin".to_string(),
            AutoApproval::Exempt { group } => format!("requester is in exempt group {group}"),
            AutoApproval::NotRequiredForRequester => {
                "approval is not required for the requester's groups".to_string()
            }
        }
    }
}

/// Decides whether `requester`'s command on a connection with `policy` is held or approved at once.
pub fn admit(policy: &Policy, requester: &Identity) -> Admission {
    if !policy.enabled {
        return Admission::AutoApprove(AutoApproval::AccessRequestsDisabled);
    }
    if requester.is_admin && policy.admin_auto_approve {
        return Admission::AutoApprove(AutoApproval::Admin);
    }
    if let Some(group) = policy.exempt_groups.iter().find(|g| requester.in_group(g)) {
        return Admission::AutoApprove(AutoApproval::Exempt {
            group: group.clone(),
        });
    }
    if let RequireApprovalFor::Groups(groups) = &policy.require_approval_for
        && !groups.iter().any(|g| requester.in_group(g))
    {
        return Admission::AutoApprove(AutoApproval::NotRequiredForRequester);
    }
    Admission::Hold {
        approval_groups: policy.approval_groups.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(email: &str, groups: &[&str]) -> Identity {
        Identity {
            email: Email::parse(email).unwrap(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            is_admin: groups.contains(&"admin"),
        }
    }

    fn policy() -> Policy {
        Policy {
            enabled: true,
            approval_groups: vec!["dba-team".into(), "security".into()],
            require_approval_for: RequireApprovalFor::All,
            exempt_groups: vec!["sre-oncall".into()],
            admin_auto_approve: true,
            timeout: Duration::from_secs(1800),
        }
    }

    #[test]
    fn admission_table() {
        let held = Admission::Hold {
            approval_groups: vec!["dba-team".into(), "security".into()],
        };
        let juniors_only = Policy {
            require_approval_for: RequireApprovalFor::Groups(vec!["juniors".into()]),
            ..policy()
        };
        let disabled = Policy {
            enabled: false,
            ..policy()
        };
        let admins_reviewed = Policy {
            admin_auto_approve: false,
            ..policy()
        };
        let admins_exempt = Policy {
            admin_auto_approve: false,
            exempt_groups: vec!["admin".into()],
            ..policy()
        };
        let cases: Vec<(&str, Policy, Identity, Admission)> = vec![
            (
                "everyone is held",
                policy(),
                user("a@x", &["engineering"]),
                held.clone(),
            ),
            (
                "approvers are held too",
                policy(),
                user("b@x", &["dba-team"]),
                held.clone(),
            ),
            (
                "disabled runs at once",
                disabled,
                user("a@x", &["engineering"]),
                Admission::AutoApprove(AutoApproval::AccessRequestsDisabled),
            ),
            (
                "admin auto-approves",
                policy(),
                user("root@x", &["admin"]),
                Admission::AutoApprove(AutoApproval::Admin),
            ),
            (
                "an admin is held where admins are reviewed",
                admins_reviewed,
                user("root@x", &["admin"]),
                held.clone(),
            ),
            (
                "an exempt admin group bypasses where admins are reviewed",
                admins_exempt,
                user("root@x", &["admin"]),
                Admission::AutoApprove(AutoApproval::Exempt {
                    group: "admin".into(),
                }),
            ),
            (
                "exempt bypasses",
                policy(),
                user("o@x", &["engineering", "sre-oncall"]),
                Admission::AutoApprove(AutoApproval::Exempt {
                    group: "sre-oncall".into(),
                }),
            ),
            (
                "listed group is held",
                juniors_only.clone(),
                user("j@x", &["juniors"]),
                held.clone(),
            ),
            (
                "unlisted group is not held",
                juniors_only,
                user("s@x", &["engineering"]),
                Admission::AutoApprove(AutoApproval::NotRequiredForRequester),
            ),
        ];
        for (name, policy, requester, expected) in cases {
            assert_eq!(admit(&policy, &requester), expected, "{name}");
        }
    }
}
