//! Live pages: a request page listens to `/access-requests/{id}/events` (server-sent events) and
//! reloads when the request changes anywhere — through the API, Slack, another replica. The
//! stream is fed by the same wake-ups as the API's `wait` (`Hoop::wait`), so an open page costs no
//! database work while nothing happens.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde::Deserialize;

use super::pages;
use super::session::Browser;
use crate::service::Hoop;

/// How long one wait lasts before the stream waits again; a comment keeps the connection open
/// meanwhile, through proxies that close idle ones.
const WAIT: Duration = Duration::from_secs(25);

#[derive(Deserialize)]
pub struct Since {
    /// The version the page shows.
    version: i64,
}

/// `changed` (with the new version) each time the request moves past the version the page shows;
/// the stream ends when the request can change no more, or the server shuts down.
pub async fn changes(
    State(hoop): State<Hoop>,
    browser: Browser,
    Path(id): Path<String>,
    Query(since): Query<Since>,
) -> Response {
    let me = match browser.signed_in() {
        Ok(me) => me,
        Err(to_sign_in) => return to_sign_in.into_response(),
    };
    // Refused before the stream starts: an unknown request is a 404, as its page is.
    if let Err(e) = hoop.get(&id).await {
        return pages::error(Some(&me), &e);
    }
    Sse::new(stream(hoop, id, since.version))
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn stream(hoop: Hoop, id: String, version: i64) -> impl Stream<Item = Result<Event, Infallible>> {
    futures_util::stream::unfold(Some(version), move |seen| {
        let (hoop, id) = (hoop.clone(), id.clone());
        async move {
            let mut seen = seen?;
            loop {
                let request = match hoop.wait(&id, seen, WAIT).await {
                    Ok(request) => request,
                    Err(e) => {
                        tracing::debug!(error = %e, request_id = %id, "a live page's stream ends");
                        return None;
                    }
                };
                if request.version > seen {
                    seen = request.version;
                    let event = Event::default()
                        .event("changed")
                        .data(request.version.to_string());
                    // Nothing changes a request once it has run its course.
                    let next = (!request.status.is_terminal()).then_some(seen);
                    return Some((Ok(event), next));
                }
                // The server is shutting down: waits answer at once from here on.
                if hoop.changes.is_closed() {
                    return None;
                }
            }
        }
    })
}
