//! The pages, as maud templates: every piece of text from a request goes through maud's escaping,
//! and a command is shown through the display rules (hidden characters made visible) in a
//! `<pre>`, so what an approver reads is exactly what will run. Status words and sentences are
//! the ones every surface says (`sentences::Words::PLAIN`); which buttons show is the one rule
//! (`domain::you_may`).

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

use crate::audit::AuditEvent;
use crate::display;
use crate::domain::{AccessRequest, YouMay};
use crate::error::Error;
use crate::sentences::{self, Words};
use crate::service::SignedIn;
use crate::store::{ListFilter, TokenRecord, TokenSubject};
use crate::table;
use crate::token;
use crate::view::{DeliveryView, segment};

const WORDS: Words = Words::PLAIN;

/// The longest a warning about a command's hidden characters is shown.
const WARNING_MAX: usize = 2_000;
/// The longest a reason may be typed (the service refuses longer ones).
const REASON_MAX: usize = 2_000;

pub fn request_path(id: &str) -> String {
    format!("/access-requests/{}", segment(id))
}

/// A whole page: `title`, who is signed in (with the sign-out form), and `main`.
pub fn page(title: &str, me: Option<&SignedIn>, main: Markup) -> Html<String> {
    live_page(title, me, None, main)
}

/// A page that reloads when what it shows changes: `live` is its events' URL.
fn live_page(title: &str, me: Option<&SignedIn>, live: Option<&str>, main: Markup) -> Html<String> {
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    meta name="color-scheme" content="light dark";
                    title { (title) " · hoopbot" }
                    link rel="stylesheet" href="/static/app.css";
                    script src="/static/app.js" defer {}
                }
                body {
                    header {
                        nav aria-label="Main" {
                            a href="/access-requests" { "Access Requests" } " · "
                            a href="/run" { "Run a command" }
                        }
                        @if me.is_some_and(|me| me.user.is_admin) {
                            nav aria-label="Admin" class="admin" {
                                "Admin: "
                                a href="/admin/tokens" { "Tokens" } " · "
                                a href="/admin/audit" { "Audit log" } " · "
                                a href="/admin/webhooks" { "Webhooks" } " · "
                                a href="/admin/config" { "Configuration" }
                            }
                        }
                        @if let Some(me) = me {
                            form method="post" action="/logout" class="signed-in" {
                                span { "Signed in as " strong { (me.user.email.as_str()) } }
                                input type="hidden" name="csrf" value=(me.csrf);
                                button type="submit" { "Sign out" }
                            }
                        }
                    }
                    main data-live=[live] { (main) }
                }
            }
        }
        .into_string(),
    )
}

/// The sign-in page: single sign-on first when the server has it, then an API token.
pub fn login(next: &str, sso: Option<&str>, refused: Option<&str>) -> Html<String> {
    let with_provider = serde_urlencoded::to_string([("next", next)]).unwrap_or_default();
    page(
        "Sign in",
        None,
        html! {
            h1 { "Sign in" }
            @if let Some(refused) = refused {
                p class="refusal" role="alert" { (refused) }
            }
            @if let Some(provider) = sso {
                p { a class="button" href={ "/login/oidc?" (with_provider) } { "Sign in with " (provider) } }
                p class="hint" { "Or with an API token:" }
            }
            form method="post" action="/login" {
                label for="token" { "API token" }
                p class="hint" { "Create one with " code { "hoop token create you@company.com" } "." }
                input id="token" name="token" type="password" autocomplete="off" required autofocus;
                input type="hidden" name="next" value=(next);
                button type="submit" { "Sign in" }
            }
        },
    )
}

/// `hoop login` asks for a token: whose it will be, how long it lasts, and the button that allows
/// it.
pub fn cli_login(
    me: &SignedIn,
    port: u16,
    challenge: &str,
    state: &str,
    lasts: std::time::Duration,
) -> Html<String> {
    page(
        "Sign in the command line",
        Some(me),
        html! {
            h1 { "Sign in the command line" }
            p {
                "A " code { "hoop login" } " on this computer asks to act as "
                strong { (me.user.email.as_str()) } ". It gets a token of its own that lasts "
                (humantime::format_duration(lasts)) "."
            }
            p class="hint" { "Allow it only if you just ran " code { "hoop login" } " yourself." }
            form method="post" action="/login/cli" {
                input type="hidden" name="csrf" value=(me.csrf);
                input type="hidden" name="port" value=(port);
                input type="hidden" name="challenge" value=(challenge);
                input type="hidden" name="state" value=(state);
                button type="submit" { "Allow" }
            }
        },
    )
}

/// A page about `error`: what went wrong, and nothing done.
pub fn error(me: Option<&SignedIn>, error: &Error) -> Response {
    let status = super::status_of(error);
    let message = error_message(error);
    let title = match status {
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::CONFLICT => "Already decided",
        StatusCode::FORBIDDEN => "Not allowed",
        StatusCode::UNAUTHORIZED => "Not signed in",
        _ => "Nothing was done",
    };
    let body = page(
        title,
        me,
        html! {
            h1 { (title) }
            p class="refusal" role="alert" { (message) }
            p { a href="/access-requests" { "Back to the requests" } }
        },
    );
    (status, body).into_response()
}

/// Which requests the list shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// Pending requests the reader may approve now (an approver's default).
    WaitingForMe,
    /// Every request, newest first, filtered as asked.
    All,
}

pub fn list(
    me: &SignedIn,
    view: View,
    requests: &[AccessRequest],
    filter: &ListFilter,
    older: Option<&str>,
) -> Html<String> {
    let chosen = filter.status.map(|s| s.as_str()).unwrap_or_default();
    let older = older.map(|before| {
        if view == View::WaitingForMe {
            return format!("/access-requests?view=mine&before={}", segment(before));
        }
        let mut query = vec![("view", "all"), ("before", before)];
        if !chosen.is_empty() {
            query.push(("status", chosen));
        }
        if let Some(connection) = &filter.connection {
            query.push(("connection", connection));
        }
        if let Some(requester) = &filter.requester {
            query.push(("requester", requester));
        }
        format!(
            "/access-requests?{}",
            serde_urlencoded::to_string(query).unwrap_or_default()
        )
    });
    page(
        "Access Requests",
        Some(me),
        html! {
            h1 { "Access Requests" }
            nav class="views" aria-label="Views" {
                a href="/access-requests?view=mine" aria-current=[(view == View::WaitingForMe).then_some("page")] { "Waiting for me" }
                " · "
                a href="/access-requests?view=all" aria-current=[(view == View::All).then_some("page")] { "All" }
            }
            @if view == View::All {
                form method="get" action="/access-requests" class="filters" {
                    input type="hidden" name="view" value="all";
                    label for="status" { "Status" }
                    select id="status" name="status" {
                        option value="" selected[chosen.is_empty()] { "any" }
                        @for status in ["pending", "approved", "rejected", "expired", "cancelled", "running", "executed", "failed"] {
                            option value=(status) selected[chosen == status] { (status) }
                        }
                    }
                    label for="connection" { "Connection" }
                    input id="connection" name="connection" value=(filter.connection.as_deref().unwrap_or_default());
                    label for="requester" { "Requester" }
                    input id="requester" name="requester" type="email" placeholder="someone@company.com" value=(filter.requester.as_deref().unwrap_or_default());
                    button type="submit" { "Filter" }
                }
            }
            @if requests.is_empty() {
                p { @if view == View::WaitingForMe { "Nothing is waiting for you." } @else { "No requests." } }
            } @else {
                table {
                    thead { tr { th { "Status" } th { "Requester" } th { "Connection" } th { "Command" } th { "Groups" } th { "Created" } } }
                    tbody {
                        @for request in requests {
                            tr {
                                td { span class={ "status " (request.status.as_str()) } { (request.status.as_str()) } }
                                td { (request.requester) }
                                td { (request.connection) }
                                td { a href=(request_path(&request.id)) { code { (first_line(&request.command)) } } }
                                td { (progress(request)) }
                                td { (sentences::utc(request.created_at)) }
                            }
                        }
                    }
                }
            }
            @if let Some(older) = older {
                p { a href=(older) { "Older requests" } }
            }
        },
    )
}

/// How far a request's approval got: "1 of 2 groups; expires 17:58 UTC" while pending.
fn progress(request: &AccessRequest) -> String {
    let total = request.approval_groups.len();
    if total == 0 {
        return "none needed".into();
    }
    let approved = total - request.pending_groups().count();
    let groups = format!("{approved} of {total} approved");
    match request.status {
        crate::domain::Status::Pending => {
            format!("{groups}; expires {}", sentences::utc(request.expires_at))
        }
        _ => groups,
    }
}

/// The Run page: a connection, the command, a justification. After a refusal, the command typed
/// is kept, with why it was refused.
pub fn run(me: &SignedIn, connections: &[String], refused: Option<(&str, &Error)>) -> Html<String> {
    let typed = refused.map(|(command, _)| command).unwrap_or_default();
    page(
        "Run a command",
        Some(me),
        html! {
            h1 { "Run a command" }
            @if let Some((_, error)) = refused {
                p class="refusal" role="alert" { (error_message(error)) }
            }
            form method="post" action="/run" class="run" enctype="multipart/form-data" {
                input type="hidden" name="csrf" value=(me.csrf);
                label for="connection" { "Connection" }
                select id="connection" name="connection" required {
                    @for name in connections { option value=(name) { (name) } }
                }
                label for="command" { "Command" }
                textarea id="command" name="command" rows="8" spellcheck="false" class="command" { (typed) }
                label for="script" { "or upload a script" }
                input id="script" name="script" type="file";
                label for="justification" { "Justification" }
                input id="justification" name="justification" maxlength="1000";
                p class="hint" {
                    "It runs exactly as typed, or as the file holds it (UTF-8 text), once approved \
                     where the connection's policy asks for approval. In the command, Tab types a \
                     tab; press Escape, then Tab, to move on."
                }
                button type="submit" { "Submit" }
            }
        },
    )
}

/// Whose chat account a code links, and the button that links it.
pub fn link(me: &SignedIn, code: &str, kind: &str, account: &str) -> Html<String> {
    page(
        "Link a chat account",
        Some(me),
        html! {
            h1 { "Link a chat account" }
            p {
                "Link " (chat_name(kind)) " account " code { (account) } " to you, "
                strong { (me.user.email.as_str()) } "?"
            }
            p class="hint" {
                "Its clicks will then count as yours. Link it only if you ran /hoop subscribe yourself \
                 and it showed this code."
            }
            form method="post" action={ "/link/" (segment(code)) } {
                input type="hidden" name="csrf" value=(me.csrf);
                button type="submit" { "Link this account" }
            }
        },
    )
}

/// The account is linked: what that brings.
pub fn linked(
    me: &SignedIn,
    kind: &str,
    account: &str,
    approval_groups: &[String],
) -> Html<String> {
    page(
        "Linked",
        Some(me),
        html! {
            h1 { "Linked" }
            p {
                (chat_name(kind)) " account " code { (account) } " is linked to "
                strong { (me.user.email.as_str()) } "."
            }
            p { (WORDS.what_a_link_brings(approval_groups)) }
        },
    )
}

fn chat_name(kind: &str) -> &str {
    match kind {
        "slack" => "Slack",
        other => other,
    }
}

/// Every API token: its id (the first digits of its SHA-256, never the token), whose it is, when
/// it was made, and a form to revoke each active one.
pub fn tokens(me: &SignedIn, tokens: &[TokenRecord]) -> Html<String> {
    page(
        "Tokens",
        Some(me),
        html! {
            h1 { "Tokens" }
            p class="hint" { "Revoking a token ends the web sessions signed in with it." }
            table {
                thead { tr { th { "Id" } th { "Holder" } th { "Created" } th { "Expires" } th { "State" } } }
                tbody {
                    @for token in tokens {
                        tr {
                            td { code { (token::id(&token.sha256)) } }
                            td { (holder(&token.subject)) }
                            td { (sentences::utc(token.created_at)) }
                            td {
                                @match token.terms.expires_at {
                                    Some(at) => { (sentences::utc(at)) }
                                    None => { "when revoked" }
                                }
                            }
                            td {
                                @match token.revoked_at {
                                    Some(at) => { "revoked " (sentences::utc(at)) }
                                    None => {
                                        form method="post" action="/admin/tokens/revoke" {
                                            input type="hidden" name="csrf" value=(me.csrf);
                                            input type="hidden" name="id" value=(token::id(&token.sha256));
                                            button type="submit" { "Revoke" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

fn holder(subject: &TokenSubject) -> String {
    match subject {
        TokenSubject::User(email) => email.as_str().to_string(),
        TokenSubject::Agent(name) => format!("agent {name}"),
    }
}

/// What a page says of `error`: internal details stay in the server's log.
fn error_message(error: &Error) -> String {
    match error {
        Error::Internal(_) => "Something went wrong on the server; see its log.".to_string(),
        other => other.to_string(),
    }
}

/// A command's first line as the display rules show it, cut at 120 characters.
fn first_line(command: &str) -> String {
    let shown = display::command(command).text;
    let line = shown.lines().next().unwrap_or_default();
    let mut cut: String = line.chars().take(120).collect();
    if cut.len() < line.len() || shown.lines().nth(1).is_some() {
        cut.push('…');
    }
    cut
}

pub fn request(
    me: &SignedIn,
    request: &AccessRequest,
    you_may: &YouMay,
    trail: &[AuditEvent],
    deliveries: &[DeliveryView],
) -> Html<String> {
    let shown = display::command(&request.command);
    let path = request_path(&request.id);
    let live = format!("{path}/events?version={}", request.version);
    let live = (!request.status.is_terminal()).then_some(live.as_str());
    live_page(
        &format!("Request {}", request.id),
        Some(me),
        live,
        html! {
            @if live.is_some() {
                p id="changed" class="warning" role="status" hidden {
                    "This request has changed since this page was loaded. "
                    a href=(path) { "Reload" } " to see it."
                }
            }
            h1 {
                (sentences::headline(request.status)) " "
                span class={ "status " (request.status.as_str()) } { (request.status.as_str()) }
            }
            p class="summary" { (WORDS.status_sentence(request)) }
            @if let Some(without_review) = WORDS.without_review(request) {
                p class="warning" { (without_review) }
            }
            dl class="facts" {
                dt { "Request" } dd { code { (request.id) } }
                dt { "Requester" } dd { (request.requester) }
                dt { "Connection" } dd { (request.connection) }
                dt { "Created" } dd { (sentences::utc(request.created_at)) }
                dt { "Expires" }
                dd {
                    @if request.status == crate::domain::Status::Pending {
                        // app.js counts down to it; without JavaScript the time stands.
                        time datetime=(crate::domain::rfc3339(request.expires_at)) data-countdown {
                            (sentences::utc(request.expires_at))
                        }
                    } @else {
                        (sentences::utc(request.expires_at))
                    }
                }
                dt { "Justification" } dd { (request.justification.as_deref().unwrap_or("none given")) }
            }
            section aria-labelledby="command" {
                h2 id="command" { "Command" }
                @for warning in WORDS.command_warnings(&request.command, WARNING_MAX) {
                    p class="warning" role="alert" { (warning) }
                }
                p class="hint" {
                    (request.command.len()) " bytes · SHA-256 " code { (request.command_sha256) }
                }
                // Focusable, so a keyboard can scroll a line wider than the window.
                pre class="command" tabindex="0" {
                    code {
                        @for line in shown.text.split('\n') {
                            span class="line" { (line) } "\n"
                        }
                    }
                }
            }
            @if !request.approval_groups.is_empty() {
                section aria-labelledby="approvals" {
                    h2 id="approvals" { "Approvals" }
                    ul class="groups" {
                        @for group in &request.approval_groups {
                            li {
                                (sentences::group_mark(group, request.status)) " "
                                strong { (group.group) } " — " (WORDS.group_state(group, request.status))
                            }
                        }
                    }
                }
            }
            section aria-labelledby="decide" {
                h2 id="decide" { "Your decision" }
                @if let Some(why) = you_may.why_not.as_ref().filter(|_| you_may.approve_as.is_empty()) {
                    p { (WORDS.why_not(why)) }
                }
                @for group in &you_may.approve_as {
                    form method="post" action={ (path) "/approve" } class="decision" {
                        input type="hidden" name="csrf" value=(me.csrf);
                        input type="hidden" name="group" value=(group);
                        button type="submit" class="approve" { "Approve as " (group) }
                    }
                }
                @if you_may.reject {
                    form method="post" action={ (path) "/reject" } class="decision" {
                        input type="hidden" name="csrf" value=(me.csrf);
                        label for="reason" { "Reason for rejecting" }
                        textarea id="reason" name="reason" required maxlength=(REASON_MAX) rows="2" {}
                        button type="submit" class="reject" { "Reject" }
                    }
                }
            }
            @if let Some(result) = &request.result {
                section aria-labelledby="result" {
                    h2 id="result" { "Result" }
                    @if let Some(summary) = WORDS.summary(Some(result)) {
                        p { (summary) }
                    }
                    @if let Some(error) = &result.error {
                        p class="refusal" { (error) }
                    }
                    // As psql prints it (or the program's own output), control characters shown;
                    // focusable, as the command is, for a table wider than the window.
                    pre class="result" tabindex="0" { (table::render(result)) }
                }
            }
            @if !deliveries.is_empty() {
                section aria-labelledby="notifications" {
                    h2 id="notifications" { "Notifications" }
                    table {
                        thead { tr { th { "Destination" } th { "Event" } th { "State" } th { "Attempts" } th { "Last error" } } }
                        tbody {
                            @for delivery in deliveries {
                                tr {
                                    td { (delivery.kind) ": " (delivery.destination) }
                                    td { (delivery.event) }
                                    td { (delivery.state.as_str()) }
                                    td { (delivery.attempts) }
                                    td { (delivery.last_error.as_deref().unwrap_or("")) }
                                }
                            }
                        }
                    }
                }
            }
            section aria-labelledby="timeline" {
                h2 id="timeline" { "Audit timeline" }
                ol class="timeline" {
                    @for event in trail {
                        li {
                            (sentences::utc(event.at)) " · " strong { (event.kind) }
                            " by " (event.actor) " (" (event.channel) ")"
                        }
                    }
                }
            }
        },
    )
}
