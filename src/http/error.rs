//! Every error reply is `{"error": {"code", "message"}}`: ours, and — through [`json_errors`] — the
//! plain-text ones axum's own extractors and fallbacks would send.

use axum::Json;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::Error;

impl Error {
    pub fn status(&self) -> StatusCode {
        match self {
            Error::InvalidInput(_) => StatusCode::BAD_REQUEST,
            Error::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) | Error::NotInGroup(_) | Error::SelfApproval => {
                StatusCode::FORBIDDEN
            }
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::AlreadyDecided(_) | Error::Expired(_) | Error::AlreadyApprovedByYou(_) => {
                StatusCode::CONFLICT
            }
            Error::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        // Internal details go to the log, never to the client.
        let message = match &self {
            Error::Internal(e) => {
                tracing::error!(error = ?e, "internal error");
                "internal error; see the server log".to_string()
            }
            other => other.to_string(),
        };
        let body = json!({ "error": { "code": self.code(), "message": message } });
        (status, Json(body)).into_response()
    }
}

/// The error code for a status when the reply did not come from an [`Error`].
fn code_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::UNAUTHORIZED => "unauthenticated",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::REQUEST_TIMEOUT => "timeout",
        StatusCode::PAYLOAD_TOO_LARGE
        | StatusCode::URI_TOO_LONG
        | StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        s if s.is_server_error() => "internal",
        _ => "invalid_input",
    }
}

/// Turns an error reply that is not JSON (axum's rejections say "Invalid URL" and the like in
/// text/plain) into our error shape, keeping its status and, for client errors, its text.
pub async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v == HeaderValue::from_static("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let text = match axum::body::to_bytes(response.into_body(), 64 * 1024).await {
        // A plain-text 500 could hold anything; client errors and "unavailable" say what to fix.
        Ok(bytes) if status.is_client_error() || status == StatusCode::SERVICE_UNAVAILABLE => {
            String::from_utf8_lossy(&bytes).trim().to_string()
        }
        _ => String::new(),
    };
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("request refused")
            .to_string()
    } else {
        text
    };
    let body = json!({ "error": { "code": code_for(status), "message": message } });
    (status, Json(body)).into_response()
}
