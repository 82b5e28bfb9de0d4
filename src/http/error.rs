//! Every error reply is `{"error": {"code", "message"}}`: ours, and — through [`JsonErrorsLayer`] —
//! the plain-text ones axum's own extractors and fallbacks would send.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::Json;
use axum::extract::Request;
use axum::http::header::{CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use futures_util::future::{Either, Map, Ready, Then, ready};
use serde_json::json;
use tower::{Layer, Service};

use crate::error::Error;

impl Error {
    pub fn status(&self) -> StatusCode {
        match self {
            Error::InvalidInput(_) => StatusCode::BAD_REQUEST,
            Error::Unauthenticated(_) | Error::Replayed => StatusCode::UNAUTHORIZED,
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
            Error::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
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
        let mut response = (status, Json(body)).into_response();
        if let Error::RateLimited { retry_after, .. } = &self {
            // Whole seconds, rounded up: a client that waits this long is let in.
            let seconds = retry_after.as_millis().div_ceil(1000).max(1);
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(seconds as u64));
        }
        response
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
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        s if s.is_server_error() => "internal",
        _ => "invalid_input",
    }
}

/// A layer that turns every error reply that is not JSON (axum's rejections say "Invalid URL"
/// and the like in text/plain) into our error shape, keeping its status and, for client errors,
/// its text. A plain tower layer rather than axum's `map_response`, which boxes a future around
/// every request for its whole life: a parked long poll should cost as little as possible.
#[derive(Clone, Copy)]
pub struct JsonErrorsLayer;

impl<S> Layer<S> for JsonErrorsLayer {
    type Service = JsonErrors<S>;

    fn layer(&self, inner: S) -> JsonErrors<S> {
        JsonErrors(inner)
    }
}

#[derive(Clone)]
pub struct JsonErrors<S>(S);

type Reply = Result<Response, Infallible>;
/// Only error replies that need rewriting (rare) are boxed.
type Rewrite = Map<Pin<Box<dyn Future<Output = Response> + Send>>, fn(Response) -> Reply>;
type Finish = fn(Reply) -> Either<Rewrite, Ready<Reply>>;

impl<S> Service<Request> for JsonErrors<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Then<S::Future, Either<Rewrite, Ready<Reply>>, Finish>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        self.0.call(request).then(finish as Finish)
    }
}

fn finish(reply: Reply) -> Either<Rewrite, Ready<Reply>> {
    let Ok(response) = reply;
    if needs_rewrite(&response) {
        let rewrite: Pin<Box<dyn Future<Output = Response> + Send>> = Box::pin(rewrite(response));
        Either::Left(rewrite.map(Ok as fn(Response) -> Reply))
    } else {
        Either::Right(ready(Ok(response)))
    }
}

/// An error reply not yet in a shape of ours: neither our JSON nor a web app page (a whole page
/// that says what went wrong, for a person in a browser).
fn needs_rewrite(response: &Response) -> bool {
    let status = response.status();
    let ours = response.headers().get(CONTENT_TYPE).is_some_and(|v| {
        v == HeaderValue::from_static("application/json") || v.as_bytes().starts_with(b"text/html")
    });
    (status.is_client_error() || status.is_server_error()) && !ours
}

/// `response`, an error reply that is not JSON, in our error shape.
async fn rewrite(response: Response) -> Response {
    let status = response.status();
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
