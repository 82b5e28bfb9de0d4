//! The HTTP surfaces: the JSON API for people and programs, the agent protocol, and health checks.

mod agent;
mod api;
mod error;
mod extract;
pub mod view;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::get;
use tower_http::trace::TraceLayer;

use crate::error::Error;
use crate::service::Hoop;

/// Every route hoopbot serves.
pub fn router(hoop: Hoop) -> Router {
    // JSON escaping can double a command's size; anything beyond that is refused before parsing.
    let body_limit = hoop.config.server.max_command_bytes * 2 + 64 * 1024;
    Router::new()
        .nest("/api/v1", api::router().merge(agent::router(&hoop.config)))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .fallback(|| async { Error::NotFound("no such endpoint".into()) })
        .method_not_allowed_fallback(|| async {
            Error::InvalidInput("this endpoint does not accept that HTTP method".into())
        })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(TraceLayer::new_for_http())
        .with_state(hoop)
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
    match hoop.store.ping().await {
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
