//! `/admin/webhooks`: each configured webhook (where it points, without the query string or
//! credentials, and which events it takes; never its secret), how its deliveries stand, and its
//! latest deliveries, each with its event, state, attempts, last answer and times.
//! `?name=…&before=…` pages through one webhook's older deliveries.

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::signed_in_admin;
use crate::error::Error;
use crate::sentences;
use crate::service::Hoop;
use crate::store::DeliveryRecord;
use crate::view::WebhookView;
use crate::web::pages;
use crate::web::session::Browser;

/// Deliveries shown of each webhook at most.
const RECENT: i64 = 25;

#[derive(Deserialize)]
pub struct WebhooksQuery {
    /// Only this webhook.
    name: Option<String>,
    /// Its deliveries older than this one.
    before: Option<String>,
}

pub async fn webhooks(
    State(hoop): State<Hoop>,
    browser: Browser,
    Query(query): Query<WebhooksQuery>,
) -> Response {
    let me = match signed_in_admin(browser) {
        Ok(me) => me,
        Err(page) => return *page,
    };
    let before = match query.before.as_deref().filter(|b| !b.is_empty()) {
        None => None,
        Some(before) => match before.parse::<i64>() {
            Ok(id) => Some(id),
            Err(_) => {
                let error = Error::InvalidInput(format!("{before:?} is not a delivery number"));
                return pages::error(Some(&me), &error);
            }
        },
    };
    let only = query.name.filter(|n| !n.is_empty());
    let read = async {
        let mut shown = Vec::new();
        for webhook in hoop.webhooks(&me.user).await? {
            if only.as_ref().is_some_and(|name| *name != webhook.name) {
                continue;
            }
            let deliveries = hoop
                .webhook_deliveries(&me.user, &webhook.name, before, RECENT)
                .await?;
            shown.push((webhook, deliveries));
        }
        if let Some(name) = &only
            && shown.is_empty()
        {
            return Err(Error::NotFound(format!("webhook {name:?} not found")));
        }
        Ok::<_, Error>(shown)
    };
    let shown = match read.await {
        Ok(shown) => shown,
        Err(e) => return pages::error(Some(&me), &e),
    };
    pages::page(
        "Webhooks",
        Some(&me),
        html! {
            h1 { "Webhooks" }
            @if shown.is_empty() {
                p { "No webhooks are configured." }
            }
            @for (webhook, deliveries) in &shown {
                (section(webhook, deliveries))
            }
        },
    )
    .into_response()
}

fn section(webhook: &WebhookView, deliveries: &[DeliveryRecord]) -> Markup {
    let heading = format!("webhook-{}", webhook.name);
    let older = (deliveries.len() as i64 == RECENT)
        .then(|| deliveries.last())
        .flatten()
        .map(|last| {
            let before = last.id.to_string();
            let query = [("name", webhook.name.as_str()), ("before", before.as_str())];
            format!(
                "/admin/webhooks?{}",
                serde_urlencoded::to_string(query).unwrap_or_default()
            )
        });
    html! {
        section aria-labelledby=(heading) {
            h2 id=(heading) { (webhook.name) }
            dl class="facts" {
                dt { "URL" } dd { code { (webhook.url) } }
                dt { "Events" } dd { (webhook.events.join(", ")) }
                dt { "Command" } dd { @if webhook.include_command { "sent" } @else { "only its SHA-256 and length" } }
                dt { "Retried for" } dd { (webhook.give_up_after) }
                dt { "State" }
                dd {
                    (webhook.state)
                    @if let Some(reason) = &webhook.disabled_reason {
                        " since " (webhook.disabled_at.as_deref().unwrap_or_default()) ": " (reason)
                    }
                }
                dt { "Deliveries" }
                dd {
                    (webhook.pending) " pending, " (webhook.delivered) " delivered, "
                    (webhook.given_up) " given up, " (webhook.dropped) " dropped"
                }
            }
            @if deliveries.is_empty() {
                p { "No deliveries." }
            } @else {
                table class="deliveries" {
                    thead {
                        tr {
                            th { "Request" } th { "Event" } th { "State" } th { "Attempts" }
                            th { "Last answer" } th { "Routed" } th { "Delivered or next attempt" }
                        }
                    }
                    tbody {
                        @for delivery in deliveries {
                            tr {
                                td { a href=(pages::request_path(&delivery.request_id)) { code { (delivery.request_id) } } }
                                td { (delivery.event) }
                                td { (delivery.state.as_str()) }
                                td { (delivery.attempts) }
                                td { (last_answer(delivery)) }
                                td { (sentences::utc(delivery.created_at)) }
                                td {
                                    @if let Some(at) = delivery.delivered_at {
                                        "delivered " (sentences::utc(at))
                                    } @else if let Some(at) = delivery.next_attempt_at {
                                        "next " (sentences::utc(at))
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if let Some(older) = older {
                p { a href=(older) { "Older deliveries of " (webhook.name) } }
            }
        }
    }
}

/// The receiver's last status and the error, as far as there were any.
fn last_answer(delivery: &DeliveryRecord) -> String {
    match (delivery.last_status, delivery.last_error.as_deref()) {
        (_, Some(error)) => error.to_string(),
        (Some(status), None) => format!("HTTP {status}"),
        (None, None) => String::new(),
    }
}
