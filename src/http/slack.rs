//! Slack's HTTP endpoints: `/slack/commands`, `/slack/interactions` and `/slack/events`. Every
//! request's signature is checked on its raw body before anything parses it; an unsigned, forged,
//! stale or replayed request gets 401 and changes nothing. A command or interaction must then
//! name the workspace (and app) hoopbot serves, or it is refused too.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use secrecy::ExposeSecret;
use slack_morphism::prelude::*;

use super::extract::RawBody;
use crate::error::Error;
use crate::service::Signed;
use crate::slack::{Click, NotAdmitted, Replayed, Sender, Slack, signature};

/// Slack's payloads echo the card that was clicked, so they can be large; a card is well under
/// this (see `slack::card`), even URL-encoded.
pub const MAX_SLACK_BODY_BYTES: usize = 2 * 1024 * 1024;

/// How long one signature passes its time check in all: from [`signature::TOLERANCE_SECONDS`]
/// before its timestamp to as long after. A replay is caught for at least that long.
const SIGNATURE_PASSES_FOR: Duration =
    Duration::from_secs(2 * signature::TOLERANCE_SECONDS.unsigned_abs());
const _: () = assert!(
    SIGNATURE_PASSES_FOR.as_secs() <= crate::service::SIGNATURES_PASS_FOR_AT_MOST.as_secs(),
    "replays of Slack requests must be caught for as long as their signatures pass"
);

pub fn router<S>(slack: Arc<Slack>) -> Router<S> {
    Router::new()
        .route("/slack/commands", post(command))
        .route("/slack/interactions", post(interaction))
        .route("/slack/events", post(event))
        .layer(DefaultBodyLimit::max(MAX_SLACK_BODY_BYTES))
        .with_state(slack)
}

/// Whether Slack signed `body` with the app's secret, within five minutes of now, and this is the
/// first time any replica sees that signature; 401 if not.
async fn verified(slack: &Slack, headers: &HeaderMap, body: &Bytes) -> Result<(), Error> {
    let signed = signed(slack, headers, body)?;
    if !slack.hoop().first_sighting(&signed).await? {
        return Err(replayed());
    }
    Ok(())
}

/// A replay: 401, nothing done.
fn replayed() -> Error {
    tracing::warn!("refused a replayed request from Slack (its signature was seen before)");
    Error::Unauthenticated("this request from Slack was already received".into())
}

/// Whether Slack signed `body` with the app's secret, within five minutes of now; 401 if not.
/// The signature covers the timestamp and the body, so a different request has a different one;
/// the same one again is a replay (Slack does not resend a request it got an answer to), which
/// whoever acts on the request must refuse, with [`verified`] or in the decision's own write.
fn signed(slack: &Slack, headers: &HeaderMap, body: &Bytes) -> Result<Signed, Error> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let now = chrono::Utc::now().timestamp();
    let presented = header("x-slack-signature");
    signature::verify(
        slack.config().signing_secret.expose_secret(),
        header("x-slack-request-timestamp"),
        presented,
        body,
        now,
    )
    .map_err(|refused| {
        tracing::warn!(%refused, "refused a request claiming to come from Slack");
        Error::Unauthenticated("this request is not signed by Slack".into())
    })?;
    Ok(Signed::new(presented.unwrap_or_default()))
}

/// Whether `sender` is the workspace and app hoopbot serves: 401 if another, 400 if the payload
/// names none.
async fn admitted(slack: &Slack, sender: &Sender) -> Result<(), Error> {
    slack.admit(sender).await.map_err(|refused| match &refused {
        NotAdmitted::Foreign(foreign) => {
            tracing::warn!(%foreign, ?sender, "refused a signed request from Slack");
            if foreign.is_missing() {
                Error::InvalidInput(foreign.to_string())
            } else {
                Error::Unauthenticated(format!("{foreign}, not the one this server serves"))
            }
        }
        NotAdmitted::Unknown(_) => Error::Internal(refused.into()),
    })
}

async fn command(
    State(slack): State<Arc<Slack>>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, Error> {
    verified(&slack, &headers, &body).await?;
    let command: SlackCommandEvent = serde_urlencoded::from_bytes(&body)
        .map_err(|e| Error::InvalidInput(format!("not a slash command: {e}")))?;
    admitted(&slack, &Sender::of_command_form(&body)).await?;
    Ok(axum::Json(slack.slash_command(&command).await).into_response())
}

#[derive(serde::Deserialize)]
struct InteractionForm {
    payload: String,
}

async fn interaction(
    State(slack): State<Arc<Slack>>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, Error> {
    // A click's signature is recorded with the decision it makes (one write, not two); any other
    // interaction's before it is acted on.
    let signed = signed(&slack, &headers, &body)?;
    let form: InteractionForm = serde_urlencoded::from_bytes(&body)
        .map_err(|e| Error::InvalidInput(format!("not an interaction: {e}")))?;
    let not_an_interaction =
        |e: serde_json::Error| Error::InvalidInput(format!("not an interaction payload: {e}"));
    // A click, the common case, is read without the card it echoes; the rest in full. Every
    // kind carries the ids of its workspace and app where a click does.
    let click: Click = serde_json::from_str(&form.payload).map_err(not_an_interaction)?;
    admitted(&slack, &Sender::of_interaction(&click)).await?;
    if click.kind == "block_actions" {
        return match slack.click(click, Some(&signed)).await {
            Ok(()) => Ok(().into_response()),
            Err(Replayed) => Err(replayed()),
        };
    }
    if !slack.hoop().first_sighting(&signed).await? {
        return Err(replayed());
    }
    let event: SlackInteractionEvent =
        serde_json::from_str(&form.payload).map_err(not_an_interaction)?;
    Ok(match slack.interaction(event).await {
        SlackInteractionResponse::Empty => ().into_response(),
        SlackInteractionResponse::ViewSubmission(answer) => axum::Json(answer).into_response(),
        SlackInteractionResponse::BlockSuggestion(answer) => axum::Json(answer).into_response(),
    })
}

/// The Events API: hoopbot subscribes to no events, but Slack checks the URL with a challenge.
async fn event(
    State(slack): State<Arc<Slack>>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, Error> {
    verified(&slack, &headers, &body).await?;
    let event: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| Error::InvalidInput(format!("not an event: {e}")))?;
    Ok(match event["type"].as_str() {
        Some("url_verification") => {
            let challenge = event["challenge"].as_str().unwrap_or_default();
            axum::Json(serde_json::json!({ "challenge": challenge })).into_response()
        }
        _ => ().into_response(),
    })
}
