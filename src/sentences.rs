//! The words every surface says about a request: its headline, the sentence that says where it
//! stands, the requester's outcome sentence, each approval group's state, the result summary, the
//! note under a command cut short, why a person may not act, and why a decision was refused.
//!
//! Written once, here, so the CLI, the API's `summary`, Slack's cards (and the web app and Teams)
//! say the same thing in the same words. Surfaces lay the words out; none keeps its own `match` on
//! a status to produce text. Text other people wrote (names, reasons, errors) goes into a sentence
//! through [`Words::field`]: on one line ([`display::single_line`]), escaped for the surface's
//! markup, and cut visibly at the surface's limit.

use crate::display::{self, single_line};
use crate::domain::{
    AccessRequest, ExecutionResult, GroupApproval, GroupStatus, Millis, Status, WhyNot,
};

/// How one surface writes sentences: how it escapes other people's text for its markup, and how
/// long each kind of text may be there.
#[derive(Debug, Clone, Copy)]
pub struct Words {
    /// Escapes a piece of user text so that the surface's markup reads it as text.
    pub escape: fn(&str) -> String,
    /// Bytes of a name (requester, connection, group, approver, agent) or a request id.
    pub name_max: usize,
    /// Bytes of how a decision came in (api, slack, …).
    pub via_max: usize,
    /// Bytes of a rejection's reason or a failure's error.
    pub reason_max: usize,
    /// Bytes of a one-line result summary.
    pub summary_max: usize,
    /// Bytes of group names listed before the rest are counted.
    pub group_list_max: usize,
}

impl Words {
    /// Plain text, nothing cut: the CLI and the API.
    pub const PLAIN: Words = Words {
        escape: str::to_string,
        name_max: usize::MAX,
        via_max: usize::MAX,
        reason_max: usize::MAX,
        summary_max: usize::MAX,
        group_list_max: usize::MAX,
    };

    /// These words with reasons and errors cut to `reason_max` bytes (and names no longer).
    pub fn with_reason_max(self, reason_max: usize) -> Words {
        Words {
            reason_max,
            name_max: self.name_max.min(reason_max),
            ..self
        }
    }

    /// User text as a field of a sentence: one line, escaped, at most `max` bytes, ending in "…"
    /// when cut. The cut falls between characters of the original text, so never inside an
    /// escape (`\u{…}`, `&amp;`).
    pub fn field(&self, text: &str, max: usize) -> String {
        let whole = (self.escape)(&single_line(text));
        if whole.len() <= max {
            return whole;
        }
        let budget = max.saturating_sub('…'.len_utf8());
        let mut out = String::new();
        let mut buf = [0u8; 4];
        for c in text.chars() {
            let piece = (self.escape)(&single_line(c.encode_utf8(&mut buf)));
            if out.len() + piece.len() > budget {
                break;
            }
            out.push_str(&piece);
        }
        out.push('…');
        out
    }

    /// A name or id as a field.
    pub fn name(&self, text: &str) -> String {
        self.field(text, self.name_max)
    }

    /// Where the request stands, as a sentence naming who and why: "Rejected by sam@x (slack):
    /// wrong table".
    pub fn status_sentence(&self, request: &AccessRequest) -> String {
        match request.status {
            Status::Pending => format!("Waiting for approval from {}.", self.waiting_for(request)),
            Status::Approved => match &request.auto_approval {
                Some(why) => format!(
                    "Approved without review ({}); waiting for an agent to run it on {}.",
                    self.field(&why.describe(), self.reason_max),
                    self.name(&request.connection)
                ),
                None => format!(
                    "Approved; waiting for an agent to run it on {}.",
                    self.name(&request.connection)
                ),
            },
            Status::Rejected => match &request.rejection {
                Some(r) => format!(
                    "Rejected by {} ({}): {}",
                    self.name(&r.by),
                    self.field(&r.via, self.via_max),
                    self.field(&r.reason, self.reason_max)
                ),
                None => "Rejected.".to_string(),
            },
            Status::Expired => format!(
                "Expired at {}, after {}, without approval from {}.",
                utc(request.expires_at),
                lifetime(request),
                self.waiting_for(request)
            ),
            Status::Cancelled => match request.decided_at {
                Some(at) => format!("Cancelled at {}.", utc(at)),
                None => "Cancelled.".to_string(),
            },
            Status::Running => format!("Running on {}.", self.agent(request)),
            Status::Executed => match self.summary(request.result.as_ref()) {
                Some(summary) => format!("Executed: {summary}"),
                None => "Executed.".to_string(),
            },
            Status::Failed => format!("Failed: {}", self.failure(request)),
        }
    }

    /// The outcome told to the requester: "Your command on prod-db was approved by bob@x for
    /// dba-team; it runs when an agent picks it up."
    pub fn outcome_sentence(&self, request: &AccessRequest) -> String {
        let on = format!("Your command on {}", self.name(&request.connection));
        match request.status {
            Status::Pending => format!(
                "{on} is waiting for approval from {}.",
                self.waiting_for(request)
            ),
            Status::Approved => match self.approvers(request) {
                Some(approvers) => {
                    format!("{on} was approved by {approvers}; it runs when an agent picks it up.")
                }
                None => format!("{on} was approved; it runs when an agent picks it up."),
            },
            Status::Rejected => match &request.rejection {
                Some(r) => format!(
                    "{on} was rejected by {} ({}): {}",
                    self.name(&r.by),
                    self.field(&r.via, self.via_max),
                    self.field(&r.reason, self.reason_max)
                ),
                None => format!("{on} was rejected."),
            },
            Status::Expired => format!(
                "{on} expired at {}, after {}, without approval from {}.",
                utc(request.expires_at),
                lifetime(request),
                self.waiting_for(request)
            ),
            Status::Cancelled => format!("{on} was cancelled."),
            Status::Running => format!("{on} is running on {}.", self.agent(request)),
            Status::Executed => match self.summary(request.result.as_ref()) {
                Some(summary) => format!("{on} was executed: {summary}"),
                None => format!("{on} was executed."),
            },
            Status::Failed => format!("{on} failed: {}", self.failure(request)),
        }
    }

    /// "Without review: requested by an admin." for a request approved at once, in every state
    /// it goes through; nothing for one that was held for approval.
    pub fn without_review(&self, request: &AccessRequest) -> Option<String> {
        let why = request.auto_approval.as_ref()?;
        Some(format!(
            "Without review: {}.",
            self.field(&why.describe(), self.reason_max)
        ))
    }

    /// A notification's one line: who wants what where, and the outcome once there is one.
    pub fn notification(&self, request: &AccessRequest) -> String {
        let requester = self.name(&request.requester);
        let connection = self.name(&request.connection);
        match (request.status, &request.rejection) {
            (Status::Pending, _) => {
                format!("{requester} wants to run a command on {connection} — approval needed")
            }
            (Status::Rejected, Some(r)) => format!(
                "{requester} wants to run a command on {connection}: Rejected by {}",
                self.name(&r.by)
            ),
            (status, _) => format!(
                "{requester} wants to run a command on {connection}: {}",
                headline(status)
            ),
        }
    }

    /// One approval group's state: "approved by bob@x (slack)", "waiting", or "closed (the
    /// request is expired)" for a group nobody can approve for any more.
    pub fn group_state(&self, group: &GroupApproval, request: Status) -> String {
        match (group.status, request) {
            (GroupStatus::Approved, _) => format!(
                "approved by {} ({})",
                self.name(group.decided_by.as_deref().unwrap_or("?")),
                self.field(group.via.as_deref().unwrap_or("?"), self.via_max)
            ),
            (GroupStatus::Pending, Status::Pending) => "waiting".to_string(),
            (GroupStatus::Pending, status) => format!("closed (the request is {status})"),
        }
    }

    /// What running produced, on one line: each statement's tag (`UPDATE 1`) or row count, the
    /// exit code, and whether the output was cut. `None` when the result says nothing.
    pub fn summary(&self, result: Option<&ExecutionResult>) -> Option<String> {
        const LISTED: usize = 5;
        let result = result?;
        let mut parts: Vec<String> = result
            .results
            .iter()
            .take(LISTED)
            .map(|s| match (&s.tag, s.columns.is_empty(), s.rows_affected) {
                (Some(tag), _, _) => tag.clone(),
                (None, false, _) => plural(s.rows.len(), "row", "rows"),
                (None, true, Some(n)) => format!("{} affected", plural(n as usize, "row", "rows")),
                (None, true, None) => "done".to_string(),
            })
            .collect();
        if result.results.len() > LISTED {
            parts.push(format!(
                "and {} more statements",
                result.results.len() - LISTED
            ));
        }
        if let Some(code) = result.exit_code {
            parts.push(format!("exit code {code}"));
        }
        if parts.is_empty() {
            return None;
        }
        let mut summary = self.field(&parts.join(", "), self.summary_max);
        if result.truncated {
            summary.push_str(" (output truncated)");
        }
        Some(summary)
    }

    /// Said where a command stops being shown: how much is missing, the start of its SHA-256,
    /// and where to read all of it; the surface puts the request's link right after it.
    pub fn long_command_note(&self, request: &AccessRequest, not_shown: usize) -> String {
        format!(
            "⚠ {not_shown} more characters of this command are not shown here (the command's \
             SHA-256 starts {}). Read all of it before you decide, with `hoop requests show {}` \
             or at ",
            self.sha_start(request),
            self.name(&request.id)
        )
    }

    /// The start of the command's SHA-256, as the agent checks it.
    pub fn sha_start(&self, request: &AccessRequest) -> String {
        self.name(&request.command_sha256.chars().take(12).collect::<String>())
    }

    /// The display rules' warnings about a command, one sentence each of at most `max` bytes.
    pub fn command_warnings(&self, command: &str, max: usize) -> Vec<String> {
        display::command(command)
            .warnings
            .iter()
            .map(|warning| format!("⚠ Warning: {}", self.field(&warning.to_string(), max)))
            .collect()
    }

    /// Why a person may not approve a request now.
    pub fn why_not(&self, why: &WhyNot) -> String {
        match why {
            WhyNot::OwnRequest => {
                "This is your own request: someone else has to approve or reject it.".into()
            }
            WhyNot::NotInPendingGroup => {
                "You are not in any approval group this request still waits for.".into()
            }
            WhyNot::AlreadyApproved { group } => format!(
                "You approved it for {}; another person must approve the rest.",
                self.name(group)
            ),
            WhyNot::Decided { status } => format!("It is already {status}."),
            WhyNot::Expired => "It expired before a decision.".into(),
        }
    }

    /// What a linked chat account will be sent, for a person in `approval_groups` (their groups
    /// that approve requests on some connection): only approvers are asked to approve; everyone
    /// hears how their own held requests end (a request nobody had to approve has no messages).
    pub fn what_a_link_brings(&self, approval_groups: &[String]) -> String {
        const OWN: &str = "a DM with the outcome of each of your own requests that needed approval";
        if approval_groups.is_empty() {
            return format!(
                "You are in no approval group, so you will get no requests to approve: only {OWN}."
            );
        }
        let groups = self.list(approval_groups.iter().map(|g| self.name(g)).collect());
        format!(
            "You will get a DM for each request waiting for {groups} (but your own), and {OWN}."
        )
    }

    /// Why a decision was refused, for the person who asked, from the API's error `code` and
    /// `message`; `request` (as it is now) says how an already decided request was decided.
    pub fn refusal(&self, code: &str, message: &str, request: Option<&AccessRequest>) -> String {
        let message = sentence(&self.field(message, self.reason_max));
        match code {
            "not_in_group" => format!(
                "You are not in that approval group, so your decision cannot count for it. {message}"
            ),
            "self_approval" => "This is your own request: someone else has to approve or reject \
                 it. You can cancel it with `hoop requests cancel`."
                .into(),
            "already_approved_by_you" => {
                format!("Your approval is already recorded; nothing more was done. {message}")
            }
            "already_decided" => match request {
                Some(request) => format!("Nothing was done: {}", self.decided(request)),
                None => format!("Nothing was done: {message}"),
            },
            "expired" => "This request expired before your decision; nothing was done.".into(),
            "not_found" => "hoopbot has no such request; nothing was done.".into(),
            "invalid_input" => format!("Not done: {message}"),
            "forbidden" => format!("Not allowed: {message}"),
            _ => TROUBLE.into(),
        }
    }

    /// How a request that can no longer be decided was decided, and by whom.
    fn decided(&self, request: &AccessRequest) -> String {
        match request.status {
            Status::Pending => format!(
                "this group was already approved ({}).",
                self.approvers(request).unwrap_or_default()
            ),
            Status::Rejected => match &request.rejection {
                Some(r) => format!(
                    "it was already rejected by {}: {}",
                    self.name(&r.by),
                    self.field(&r.reason, self.reason_max)
                ),
                None => "it was already rejected.".into(),
            },
            Status::Expired => "it expired without a decision.".into(),
            Status::Cancelled => "it was cancelled.".into(),
            _ => format!(
                "it was already approved ({}).",
                self.approvers(request).unwrap_or_default()
            ),
        }
    }

    /// "bob@x for dba-team, sam@x for security", for the groups approved so far.
    fn approvers(&self, request: &AccessRequest) -> Option<String> {
        let approvals: Vec<String> = request
            .approval_groups
            .iter()
            .filter_map(|g| {
                let by = g.decided_by.as_deref()?;
                Some(format!("{} for {}", self.name(by), self.name(&g.group)))
            })
            .collect();
        (!approvals.is_empty()).then(|| self.list(approvals))
    }

    /// The groups the request still waits for.
    fn waiting_for(&self, request: &AccessRequest) -> String {
        let names: Vec<String> = request
            .pending_groups()
            .map(|g| self.name(&g.group))
            .collect();
        if names.is_empty() {
            return "nobody".to_string();
        }
        self.list(names)
    }

    /// Items joined with commas up to `group_list_max` bytes, the rest counted.
    fn list(&self, items: Vec<String>) -> String {
        let mut out = String::new();
        for (listed, item) in items.iter().enumerate() {
            if !out.is_empty() && out.len() + item.len() > self.group_list_max {
                out.push_str(&format!(" and {} more", items.len() - listed));
                break;
            }
            if !out.is_empty() {
                out.push_str(", ");
            }
            out.push_str(item);
        }
        out
    }

    /// Why a request failed.
    fn failure(&self, request: &AccessRequest) -> String {
        let error = request.result.as_ref().and_then(|r| r.error.as_deref());
        self.field(error.unwrap_or("unknown error"), self.reason_max)
    }

    /// The agent running (or that ran) the request.
    fn agent(&self, request: &AccessRequest) -> String {
        match &request.claimed_by {
            Some(agent) => self.name(agent),
            None => format!("an agent for {}", self.name(&request.connection)),
        }
    }
}

/// Where a request stands, in a few words: "Waiting for approval", "Approved", "Rejected", …
pub fn headline(status: Status) -> &'static str {
    match status {
        Status::Pending => "Waiting for approval",
        Status::Approved => "Approved",
        Status::Rejected => "Rejected",
        Status::Expired => "Expired",
        Status::Cancelled => "Cancelled",
        Status::Running => "Running",
        Status::Executed => "Executed",
        Status::Failed => "Failed",
    }
}

/// A symbol for the status, shown beside the words (never instead of them).
pub fn symbol(status: Status) -> &'static str {
    match status {
        Status::Pending => "⏳",
        Status::Approved | Status::Executed => "✅",
        Status::Rejected => "⛔",
        Status::Expired => "⏰",
        Status::Cancelled => "✖️",
        Status::Running => "⚙️",
        Status::Failed => "❌",
    }
}

/// A group's state as a mark: ✓ approved, ○ waiting, ✗ closed.
pub fn group_mark(group: &GroupApproval, request: Status) -> &'static str {
    match (group.status, request) {
        (GroupStatus::Approved, _) => "✓",
        (GroupStatus::Pending, Status::Pending) => "○",
        (GroupStatus::Pending, _) => "✗",
    }
}

/// What a person is told when the server failed them: nothing was recorded.
pub const TROUBLE: &str =
    "Something went wrong on the hoopbot server; nothing was recorded. Try again in a moment.";

/// A time as `2026-12-06 10:15 UTC`.
pub fn utc(ms: Millis) -> String {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(t) => t.format("%Y-%m-%d %H:%M UTC").to_string(),
        None => format!("{ms} ms after 1970"),
    }
}

/// How long the request could wait for its approvals, e.g. "30m".
fn lifetime(request: &AccessRequest) -> String {
    let secs = (request.expires_at - request.created_at).max(0) / 1000;
    humantime::format_duration(std::time::Duration::from_secs(secs as u64)).to_string()
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `text` as a sentence of its own: capital first letter, final full stop.
fn sentence(text: &str) -> String {
    let mut chars = text.chars();
    let mut out: String = chars
        .next()
        .map(|c| c.to_uppercase().collect())
        .unwrap_or_default();
    out.push_str(chars.as_str());
    if !out.ends_with('.') {
        out.push('.');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Rejection, StatementResult};

    const T0: Millis = 1_796_550_300_000; // 2026-12-06 09:45 UTC

    fn group(name: &str, by: Option<&str>) -> GroupApproval {
        GroupApproval {
            group: name.into(),
            status: if by.is_some() {
                GroupStatus::Approved
            } else {
                GroupStatus::Pending
            },
            decided_by: by.map(Into::into),
            decided_at: by.map(|_| T0 + 60_000),
            via: by.map(|_| "slack".into()),
        }
    }

    fn request(status: Status) -> AccessRequest {
        AccessRequest {
            id: "req-1".into(),
            connection: "prod-db".into(),
            command: "UPDATE users SET status='inactive' WHERE id=123".into(),
            command_sha256: crate::domain::command_sha256("x"),
            requester: "alice@x".into(),
            justification: None,
            status,
            created_at: T0,
            expires_at: T0 + 30 * 60_000,
            decided_at: (status != Status::Pending).then_some(T0 + 5 * 60_000),
            version: 3,
            approval_groups: vec![group("dba-team", Some("bob@x")), group("security", None)],
            rejection: None,
            result: None,
            claimed_by: None,
            auto_approval: None,
            offer: None,
        }
    }

    /// A request sam rejected through `via` for `reason`.
    fn rejected(reason: &str, via: &str) -> AccessRequest {
        let mut r = request(Status::Rejected);
        r.rejection = Some(Rejection {
            by: "sam@x".into(),
            reason: reason.into(),
            at: T0,
            via: via.into(),
        });
        r
    }

    #[test]
    fn every_status_has_its_sentence() {
        let words = Words::PLAIN;
        let rejected = rejected("wrong table", "slack");
        let mut approved = request(Status::Approved);
        approved.approval_groups[1] = group("security", Some("sam@x"));
        let mut executed = request(Status::Executed);
        executed.result = Some(ExecutionResult {
            results: vec![StatementResult {
                tag: Some("UPDATE 1".into()),
                rows_affected: Some(1),
                ..Default::default()
            }],
            ..Default::default()
        });
        let mut failed = request(Status::Failed);
        failed.result = Some(ExecutionResult {
            error: Some("agent lost; outcome unknown".into()),
            ..Default::default()
        });
        let mut running = request(Status::Running);
        running.claimed_by = Some("edge-1".into());
        #[rustfmt::skip]
        let cases = [
            (request(Status::Pending), "Waiting for approval from security.",
                "Your command on prod-db is waiting for approval from security."),
            (approved, "Approved; waiting for an agent to run it on prod-db.",
                "Your command on prod-db was approved by bob@x for dba-team, sam@x for security; it runs when an agent picks it up."),
            (rejected, "Rejected by sam@x (slack): wrong table",
                "Your command on prod-db was rejected by sam@x (slack): wrong table"),
            (request(Status::Expired), "Expired at 2026-12-06 10:15 UTC, after 30m, without approval from security.",
                "Your command on prod-db expired at 2026-12-06 10:15 UTC, after 30m, without approval from security."),
            (request(Status::Cancelled), "Cancelled at 2026-12-06 09:50 UTC.", "Your command on prod-db was cancelled."),
            (running, "Running on edge-1.", "Your command on prod-db is running on edge-1."),
            (executed, "Executed: UPDATE 1", "Your command on prod-db was executed: UPDATE 1"),
            (failed, "Failed: agent lost; outcome unknown", "Your command on prod-db failed: agent lost; outcome unknown"),
        ];
        for (request, status, outcome) in cases {
            assert_eq!(words.status_sentence(&request), status);
            assert_eq!(words.outcome_sentence(&request), outcome);
        }
    }

    #[test]
    fn groups_are_waiting_approved_or_closed() {
        let words = Words::PLAIN;
        let pending = request(Status::Pending);
        let approved = &pending.approval_groups[0];
        let waiting = &pending.approval_groups[1];
        assert_eq!(
            words.group_state(approved, Status::Pending),
            "approved by bob@x (slack)"
        );
        assert_eq!(group_mark(approved, Status::Pending), "✓");
        assert_eq!(words.group_state(waiting, Status::Pending), "waiting");
        assert_eq!(group_mark(waiting, Status::Pending), "○");
        assert_eq!(
            words.group_state(waiting, Status::Rejected),
            "closed (the request is rejected)"
        );
        assert_eq!(group_mark(waiting, Status::Rejected), "✗");
    }

    /// A surface's words escape other people's text, keep it on one line, and cut it between
    /// whole escapes.
    #[test]
    fn user_text_is_one_escaped_line_cut_visibly() {
        fn angle(text: &str) -> String {
            text.replace('<', "&lt;")
        }
        let words = Words {
            escape: angle,
            reason_max: 12,
            ..Words::PLAIN
        };
        let rejected = rejected("a<b\nc<d<e<f<g", "api");
        assert_eq!(
            words.status_sentence(&rejected),
            "Rejected by sam@x (api): a&lt;b\\nc…"
        );
        assert_eq!(Words::PLAIN.field("x\u{202e}y", 100), "x\\u{202e}y");
    }

    #[test]
    fn refusals_say_why_nothing_was_done() {
        let words = Words::PLAIN;
        let rejected = rejected("wrong table", "api");
        #[rustfmt::skip]
        let cases = [
            ("not_in_group", "you are not a member of group security", None,
                "You are not in that approval group, so your decision cannot count for it. You are not a member of group security."),
            ("self_approval", "", None, "This is your own request: someone else has to approve or reject it. You can cancel it with `hoop requests cancel`."),
            ("already_approved_by_you", "you already approved this request for group dba-team", None,
                "Your approval is already recorded; nothing more was done. You already approved this request for group dba-team."),
            ("already_decided", "this request is already rejected", Some(&rejected),
                "Nothing was done: it was already rejected by sam@x: wrong table"),
            ("already_decided", "this request is already rejected", None, "Nothing was done: This request is already rejected."),
            ("expired", "", None, "This request expired before your decision; nothing was done."),
            ("not_found", "", None, "hoopbot has no such request; nothing was done."),
            ("internal", "db down", None, TROUBLE),
        ];
        for (code, message, now, said) in cases {
            assert_eq!(words.refusal(code, message, now), said, "{code}");
        }
    }

    #[test]
    fn each_reason_not_to_approve_is_said() {
        let words = Words::PLAIN;
        let cases = [
            (WhyNot::OwnRequest, "This is your own request"),
            (WhyNot::NotInPendingGroup, "not in any approval group"),
            (
                WhyNot::AlreadyApproved {
                    group: "dba-team".into(),
                },
                "You approved it for dba-team",
            ),
            (
                WhyNot::Decided {
                    status: Status::Approved,
                },
                "It is already approved.",
            ),
            (WhyNot::Expired, "It expired"),
        ];
        for (why, said) in cases {
            assert!(words.why_not(&why).contains(said), "{why:?}");
        }
    }

    #[test]
    fn a_link_promises_approvals_only_to_approvers() {
        let words = Words::PLAIN;
        let nobody = words.what_a_link_brings(&[]);
        assert!(nobody.contains("no approval group"), "{nobody}");
        assert!(nobody.contains("no requests to approve"), "{nobody}");
        assert!(
            nobody.contains("outcome of each of your own requests"),
            "{nobody}"
        );
        let approver = words.what_a_link_brings(&["dba-team".into(), "security".into()]);
        assert!(
            approver.contains("each request waiting for dba-team, security"),
            "{approver}"
        );
        assert!(
            approver.contains("outcome of each of your own"),
            "{approver}"
        );
    }
}
