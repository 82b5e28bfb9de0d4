//! The HTTP surfaces: the JSON API for people and programs, the agent protocol, and health checks.

mod agent;
mod api;
mod error;
mod extract;
mod head_limit;
mod slack;

pub use extract::Source;
pub use slack::MAX_SLACK_BODY_BYTES;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Extension, Router};
use tower_http::trace::TraceLayer;

use self::head_limit::HeadLimitLayer;
use crate::config::Config;
use crate::error::Error;
use crate::service::Hoop;
use crate::slack::Slack;

/// A request head (request line and headers) larger than this gets 431 `too_large`. The HTTP
/// server's own buffer is larger (see `app.rs`), so that this check, with its JSON reply, is the
/// one that refuses all but absurd heads.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// How long a request body may take to arrive, from the end of its headers.
#[derive(Debug, Clone, Copy)]
pub struct BodyReadTimeout(pub Duration);

/// Every route hoopbot serves, with the body limits and timeouts of `config`.
pub fn router(hoop: Hoop, config: &Config, slack: Option<Arc<Slack>>) -> anyhow::Result<Router> {
    // JSON may escape one byte of a command as six (`\u0001`): the body may be six times the
    // command limit plus the other fields, and the command limit itself is checked on the command.
    let body_limit = config.server.max_command_bytes * 6 + 64 * 1024;
    let body_read_timeout = config.server.body_read_timeout;
    let slack_routes = slack.map(slack::router).unwrap_or_default();
    Ok(Router::new()
        .nest("/api/v1", api::router().merge(agent::router(config)))
        .merge(slack_routes)
        .merge(crate::web::router(config)?)
        .route("/api/v1/openapi.json", get(openapi))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .fallback(|| async { Error::NotFound("no such endpoint".into()) })
        .method_not_allowed_fallback(|| async {
            Error::InvalidInput("this endpoint does not accept that HTTP method".into())
        })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(Extension(BodyReadTimeout(body_read_timeout)))
        .layer(HeadLimitLayer)
        .layer(error::JsonErrorsLayer)
        .layer(TraceLayer::new_for_http())
        .with_state(hoop))
}

/// The API's OpenAPI description, as kept in `docs/openapi.json`.
async fn openapi() -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        include_str!("../../docs/openapi.json"),
    )
}

/// Ready when the database answers.
async fn ready(State(hoop): State<Hoop>) -> Result<&'static str, (StatusCode, String)> {
    match hoop.ready().await {
        Ok(()) => Ok("ready"),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            Err((
                StatusCode::SERVICE_UNAVAILABLE,
                "database unreachable".into(),
            ))
        }
    }
}
