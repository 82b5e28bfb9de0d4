//! `/api/v1`: submit commands, read and list access requests, wait for changes, decide; and, for
//! admins, the webhook endpoints and their deliveries.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::{Body, MaybeBody, Params, Source, User};
use crate::domain::{ConnectionName, Decision, Status, Surface};
use crate::error::{Error, Result};
use crate::service::{Hoop, Submission};
use crate::store::ListFilter;
use crate::view::{AccessRequestView, AttemptPage, AttemptView, AuditEventView, Page, PingView};

/// The surface recorded for decisions made through this API.
const CHANNEL: Surface = Surface::Api;
const DEFAULT_PAGE: i64 = 50;
const MAX_PAGE: i64 = 200;
const DEFAULT_WAIT: u64 = 30;
const MAX_WAIT: u64 = 300;

pub fn router() -> Router<Hoop> {
    Router::new()
        .route("/me", get(me))
        .route("/exec", post(exec))
        .route("/access-requests", get(list))
        .route("/access-requests/{id}", get(show))
        .route("/access-requests/{id}/wait", get(wait))
        .route("/access-requests/{id}/approve", post(approve))
        .route("/access-requests/{id}/reject", post(reject))
        .route("/access-requests/{id}/cancel", post(cancel))
        .route("/access-requests/{id}/audit", get(audit))
        .route("/chat-links", post(confirm_link))
        .route("/login/token", post(cli_token))
        .route("/webhooks", get(webhooks))
        .route("/webhooks/{name}/deliveries", get(webhook_deliveries))
        .route("/webhooks/{name}/test", post(webhook_test))
}

/// Who the token belongs to, with their current groups.
async fn me(User(user): User) -> Json<Value> {
    Json(json!({ "email": user.email, "groups": user.groups, "is_admin": user.is_admin }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CliTokenBody {
    code: String,
    verifier: String,
}

/// `hoop login` in a browser: the code the signed-in browser handed the command line, and the
/// secret it asked with, for a token of its own. No bearer token: the pair is the credential.
async fn cli_token(
    State(hoop): State<Hoop>,
    Body(body): Body<CliTokenBody>,
) -> Result<Json<Value>> {
    let granted = hoop.redeem_cli_grant(&body.code, &body.verifier).await?;
    Ok(Json(json!({
        "token": granted.token,
        "email": granted.user.email,
        "groups": granted.user.groups,
        "expires_at": crate::domain::rfc3339(granted.expires_at),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecBody {
    /// Parsed here: a malformed name is `invalid_input`; a well-formed unknown one `not_found`.
    connection: ConnectionName,
    command: String,
    #[serde(default)]
    justification: Option<String>,
}

async fn exec(
    State(hoop): State<Hoop>,
    User(user): User,
    Body(body): Body<ExecBody>,
) -> Result<(StatusCode, Json<AccessRequestView>)> {
    let submission = Submission {
        connection: body.connection,
        command: body.command,
        justification: body.justification,
    };
    let request = hoop.submit(&user, submission, CHANNEL).await?;
    Ok((StatusCode::CREATED, Json(hoop.reply(request))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<String>,
    connection: Option<String>,
    requester: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

async fn list(
    State(hoop): State<Hoop>,
    User(user): User,
    Params(query): Params<ListQuery>,
) -> Result<Json<Page>> {
    let status = match query.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(Status::parse(s).ok_or_else(|| {
            Error::InvalidInput(format!(
                "unknown status {s:?}; use one of {}",
                Status::ALL.map(Status::as_str).join(", ")
            ))
        })?),
    };
    let limit = page_limit(query.limit)?;
    let filter = ListFilter {
        awaiting: None,
        status,
        connection: query.connection,
        requester: query.requester,
        before_id: query.cursor.filter(|c| !c.is_empty()),
        // One extra row tells whether there is a next page.
        limit: limit + 1,
    };
    let mut items = hoop.list(&filter).await?;
    let next_cursor = if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items.last().map(|r| r.id.clone())
    } else {
        None
    };
    Ok(Json(Page {
        items: hoop.views(&user, items).await?,
        next_cursor,
    }))
}

async fn show(
    State(hoop): State<Hoop>,
    User(user): User,
    Path(id): Path<String>,
) -> Result<Json<AccessRequestView>> {
    Ok(Json(hoop.view(&user, hoop.get(&id).await?).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WaitQuery {
    #[serde(default)]
    version: i64,
    timeout_s: Option<u64>,
}

async fn wait(
    State(hoop): State<Hoop>,
    User(user): User,
    Path(id): Path<String>,
    Params(query): Params<WaitQuery>,
) -> Result<Json<AccessRequestView>> {
    let timeout = query.timeout_s.unwrap_or(DEFAULT_WAIT);
    if timeout > MAX_WAIT {
        return Err(Error::InvalidInput(format!(
            "timeout_s must be at most {MAX_WAIT}"
        )));
    }
    let request = hoop
        .wait(&id, query.version, Duration::from_secs(timeout))
        .await?;
    Ok(Json(hoop.view(&user, request).await?))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ApproveBody {
    group: Option<String>,
}

async fn approve(
    State(hoop): State<Hoop>,
    User(user): User,
    Path(id): Path<String>,
    MaybeBody(body): MaybeBody<ApproveBody>,
) -> Result<Json<AccessRequestView>> {
    let decision = Decision::Approve {
        group: body.group.filter(|g| !g.is_empty()),
    };
    let decided = hoop.decide(&user, &id, decision, CHANNEL).await?;
    Ok(Json(hoop.reply(decided)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RejectBody {
    reason: String,
}

async fn reject(
    State(hoop): State<Hoop>,
    User(user): User,
    Path(id): Path<String>,
    Body(body): Body<RejectBody>,
) -> Result<Json<AccessRequestView>> {
    let decision = Decision::Reject {
        reason: body.reason,
    };
    let decided = hoop.decide(&user, &id, decision, CHANNEL).await?;
    Ok(Json(hoop.reply(decided)))
}

async fn cancel(
    State(hoop): State<Hoop>,
    User(user): User,
    Path(id): Path<String>,
) -> Result<Json<AccessRequestView>> {
    let decided = hoop.decide(&user, &id, Decision::Cancel, CHANNEL).await?;
    Ok(Json(hoop.reply(decided)))
}

async fn audit(
    State(hoop): State<Hoop>,
    User(_): User,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let events: Vec<AuditEventView> = hoop
        .audit_trail(&id)
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(Json(json!({ "items": events })))
}

async fn webhooks(State(hoop): State<Hoop>, User(user): User) -> Result<Json<Value>> {
    Ok(Json(json!({ "items": hoop.webhooks(&user).await? })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AttemptsQuery {
    limit: Option<i64>,
    cursor: Option<String>,
}

/// Every attempt at webhook `name` (deliveries and test pings), newest first.
async fn webhook_deliveries(
    State(hoop): State<Hoop>,
    User(user): User,
    Path(name): Path<String>,
    Params(query): Params<AttemptsQuery>,
) -> Result<Json<AttemptPage>> {
    let limit = page_limit(query.limit)?;
    let before = match query.cursor.as_deref() {
        None | Some("") => None,
        Some(cursor) => Some(cursor.parse::<i64>().map_err(|_| {
            Error::InvalidInput(format!("cursor {cursor:?} is not one this API gave out"))
        })?),
    };
    let mut items = hoop
        .webhook_attempts(&user, &name, before, limit + 1)
        .await?;
    let next_cursor = if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items.last().map(|a| a.id.to_string())
    } else {
        None
    };
    Ok(Json(AttemptPage {
        items: items.into_iter().map(AttemptView::from).collect(),
        next_cursor,
    }))
}

/// Sends webhook `name` a signed `ping` now.
async fn webhook_test(
    State(hoop): State<Hoop>,
    User(user): User,
    Path(name): Path<String>,
) -> Result<Json<PingView>> {
    Ok(Json(hoop.ping_webhook(&user, &name).await?))
}

/// A page size between 1 and [`MAX_PAGE`].
fn page_limit(limit: Option<i64>) -> Result<i64> {
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(Error::InvalidInput(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    Ok(limit)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LinkBody {
    code: String,
}

/// Confirms a one-time code shown in chat (`/hoop subscribe`): the chat account it was shown to
/// is linked to the signed-in user.
async fn confirm_link(
    State(hoop): State<Hoop>,
    Source(source): Source,
    User(user): User,
    Body(body): Body<LinkBody>,
) -> Result<Json<Value>> {
    let link = hoop
        .confirm_link(&user, &body.code, source, Surface::Api)
        .await?;
    Ok(Json(json!({
        "chat": link.kind,
        "account": link.account,
        "email": link.email,
        "linked_at": crate::domain::rfc3339(link.linked_at),
        "approval_groups": hoop.approval_groups_of(&user),
    })))
}
