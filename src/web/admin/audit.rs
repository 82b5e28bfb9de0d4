//! `/admin/audit`: the audit log, filtered by subject (a request's id, `token:…`, `slack:…`),
//! actor and kind, newest first, with a link to older events; above it, whether the whole chain
//! verifies, as `hoop audit verify` says it.

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::signed_in_admin;
use crate::audit::AuditEvent;
use crate::error::Error;
use crate::sentences;
use crate::service::{Hoop, SignedIn};
use crate::store::{AuditFilter, ChainCheck};
use crate::web::pages;
use crate::web::session::Browser;

/// Events one page shows at most.
const PAGE: i64 = 50;

#[derive(Deserialize)]
pub struct AuditQuery {
    request: Option<String>,
    actor: Option<String>,
    kind: Option<String>,
    before: Option<String>,
}

pub async fn audit(
    State(hoop): State<Hoop>,
    browser: Browser,
    Query(query): Query<AuditQuery>,
) -> Response {
    let me = match signed_in_admin(browser) {
        Ok(me) => me,
        Err(page) => return *page,
    };
    let given = |value: Option<String>| {
        value
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let before_seq = match given(query.before) {
        None => None,
        Some(before) => match before.parse::<i64>() {
            Ok(seq) => Some(seq),
            Err(_) => {
                let error = Error::InvalidInput(format!("{before:?} is not an event number"));
                return pages::error(Some(&me), &error);
            }
        },
    };
    let filter = AuditFilter {
        request_id: given(query.request),
        actor: given(query.actor),
        kind: given(query.kind),
        before_seq,
        limit: PAGE,
    };
    let read = async {
        let events = hoop.audit_log(&me.user, &filter).await?;
        let check = hoop.verify_audit(&me.user).await?;
        Ok::<_, Error>((events, check))
    };
    match read.await {
        Ok((events, check)) => page(&me, &filter, &events, check.as_ref()).into_response(),
        Err(e) => pages::error(Some(&me), &e),
    }
}

fn page(
    me: &SignedIn,
    filter: &AuditFilter,
    events: &[AuditEvent],
    check: Option<&ChainCheck>,
) -> impl IntoResponse {
    let older = (events.len() as i64 == PAGE)
        .then(|| events.last().map(|e| older_link(filter, e.seq)))
        .flatten();
    pages::page(
        "Audit log",
        Some(me),
        html! {
            h1 { "Audit log" }
            (verification(check))
            form method="get" action="/admin/audit" class="filters" {
                label for="request" { "Request or subject" }
                input id="request" name="request" value=(filter.request_id.as_deref().unwrap_or_default());
                label for="actor" { "Actor" }
                input id="actor" name="actor" value=(filter.actor.as_deref().unwrap_or_default());
                label for="kind" { "Kind" }
                input id="kind" name="kind" value=(filter.kind.as_deref().unwrap_or_default()) placeholder="e.g. approved";
                button type="submit" { "Filter" }
            }
            @if events.is_empty() {
                p { "No events." }
            } @else {
                table class="audit" {
                    thead { tr { th { "#" } th { "Time" } th { "Subject" } th { "Kind" } th { "Actor" } th { "Via" } th { "Detail" } } }
                    tbody {
                        @for event in events {
                            tr {
                                td { (event.seq) }
                                td { (sentences::utc(event.at)) }
                                td { (subject(&event.request_id)) }
                                td { (event.kind) }
                                td { (event.actor) }
                                td { (event.channel) }
                                td { code { (event.detail.to_string()) } }
                            }
                        }
                    }
                }
            }
            @if let Some(older) = older {
                p { a href=(older) { "Older events" } }
            }
        },
    )
}

/// Whether the chain verifies; where it breaks when it does not.
fn verification(check: Option<&ChainCheck>) -> Markup {
    html! {
        @match check {
            None => p class="warning" { "The audit chain is not checked: this server has no audit key." },
            Some(ChainCheck { events, head, verdict: Ok(()) }) => {
                p class="summary" {
                    "The audit chain is intact: " (events.len()) " events, chain head "
                    code { (&head.hash[..head.hash.len().min(12)]) } "."
                }
                p class="hint" {
                    "Without a checkpoint this cannot show that events at the end were not cut off; "
                    code { "hoop audit verify --checkpoint SEQ:HASH" } " can."
                }
            }
            Some(ChainCheck { verdict: Err(broken), .. }) => {
                p class="refusal" role="alert" { "The audit chain does not verify: " (broken.to_string()) "." }
            }
        }
    }
}

/// A request's id links to its page; other subjects (`token:…`, `slack:…`) are shown as they are.
fn subject(id: &str) -> Markup {
    html! {
        @if id.contains(':') {
            code { (id) }
        } @else {
            a href=(pages::request_path(id)) { code { (id) } }
        }
    }
}

/// The next page: the same filters, events before `seq`.
fn older_link(filter: &AuditFilter, seq: i64) -> String {
    let before = seq.to_string();
    let query: Vec<(&str, &str)> = [
        ("request", filter.request_id.as_deref()),
        ("actor", filter.actor.as_deref()),
        ("kind", filter.kind.as_deref()),
        ("before", Some(before.as_str())),
    ]
    .into_iter()
    .filter_map(|(name, value)| Some((name, value?)))
    .collect();
    format!(
        "/admin/audit?{}",
        serde_urlencoded::to_string(query).unwrap_or_default()
    )
}
