//! Extractors whose every rejection is our JSON error, so bad input never gets a bare text reply.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::StatusCode;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::BodyReadTimeout;
use crate::config::DEFAULT_BODY_READ_TIMEOUT;
use crate::config::EMBEDDED_AGENT;
use crate::domain::Identity;
use crate::error::Error;
use crate::service::Hoop;
use crate::store::{ActiveToken, TokenSubject};

/// The address the request came from: the connection's peer (a proxy in front of hoopbot is
/// the peer; its `X-Forwarded-For` is not trusted). `None` where the server did not record it.
pub struct Source(pub Option<std::net::IpAddr>);

impl<S: Sync> FromRequestParts<S> for Source {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>();
        Ok(Source(peer.map(|info| info.0.ip().to_canonical())))
    }
}

/// A JSON body, required.
pub struct Body<T>(pub T);

/// A JSON body that may be left out (read as `T::default()`), so `POST …/approve` needs none.
pub struct MaybeBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Hoop> for Body<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &Hoop) -> Result<Self, Error> {
        match read_json(req, state).await? {
            Some(value) => Ok(Body(value)),
            None => Err(Error::InvalidInput("a JSON body is required".into())),
        }
    }
}

impl<T: DeserializeOwned + Default> FromRequest<Hoop> for MaybeBody<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &Hoop) -> Result<Self, Error> {
        Ok(MaybeBody(read_json(req, state).await?.unwrap_or_default()))
    }
}

/// Reads a JSON body; `None` when the body is empty.
async fn read_json<T: DeserializeOwned>(req: Request, state: &Hoop) -> Result<Option<T>, Error> {
    let is_json = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| {
            let mime = mime.trim();
            mime.eq_ignore_ascii_case("application/json") || mime.ends_with("+json")
        });
    let bytes = read_body(req, state).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    if !is_json {
        return Err(Error::UnsupportedMediaType(
            "send the body as JSON with Content-Type: application/json".into(),
        ));
    }
    // Syntax errors, wrong types, missing and unknown fields: all the client's to fix.
    axum::Json::<T>::from_bytes(&bytes)
        .map(|axum::Json(value)| Some(value))
        .map_err(|e| Error::InvalidInput(e.body_text()))
}

/// A body as it arrived, read within the body timeout and the route's size limit: for bodies
/// that must be checked before they are parsed (Slack's signed requests).
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Error> {
        Ok(RawBody(read_body(req, state).await?))
    }
}

/// Reads a whole body: `timeout` (`server.body_read_timeout`) and the size limit apply.
async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, Error> {
    // A body that trickles in would hold its connection as long as the client likes.
    let timeout = req
        .extensions()
        .get::<BodyReadTimeout>()
        .map_or(DEFAULT_BODY_READ_TIMEOUT, |t| t.0);
    tokio::time::timeout(timeout, Bytes::from_request(req, state))
        .await
        .map_err(|_| {
            Error::Timeout(format!(
                "the request body did not arrive within {}",
                humantime::format_duration(timeout)
            ))
        })?
        .map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Error::TooLarge("the request body is too large".into())
            } else {
                Error::InvalidInput(e.body_text())
            }
        })
}

/// Query-string parameters.
pub struct Params<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<Hoop> for Params<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &Hoop) -> Result<Self, Error> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| Params(value))
            .map_err(|e| Error::InvalidInput(e.body_text()))
    }
}

/// The signed-in user, from `Authorization: Bearer <token>`.
pub struct User(pub Identity);

/// The calling agent, from an agent token: its name and the token's SHA-256 (which the claim
/// re-checks as it hands out a job).
pub struct Agent {
    pub name: String,
    pub token_sha256: String,
}

/// The caller's token and its SHA-256.
async fn bearer_token(parts: &Parts, hoop: &Hoop) -> Result<(ActiveToken, String), Error> {
    let header = parts.headers.get(AUTHORIZATION).ok_or_else(|| {
        Error::Unauthenticated("missing Authorization: Bearer <token> header".into())
    })?;
    let token = header
        .to_str()
        .ok()
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            Error::Unauthenticated("the Authorization header must be `Bearer <token>`".into())
        })?;
    hoop.authenticate(token).await
}

impl FromRequestParts<Hoop> for User {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, hoop: &Hoop) -> Result<Self, Error> {
        let (token, _) = bearer_token(parts, hoop).await?;
        match token.subject {
            TokenSubject::User(_) => hoop.holder(&token).map(User),
            TokenSubject::Agent(_) => Err(Error::Forbidden(
                "agent tokens can only use the agent protocol".into(),
            )),
        }
    }
}

impl FromRequestParts<Hoop> for Agent {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, hoop: &Hoop) -> Result<Self, Error> {
        let (token, token_sha256) = bearer_token(parts, hoop).await?;
        match (token.subject, token_sha256) {
            // The name of the server's own in-process agent: no token may act as it, or it
            // could take the jobs of the connections the server runs itself.
            (TokenSubject::Agent(name), _) if name == EMBEDDED_AGENT => {
                Err(Error::Forbidden(format!(
                    "the agent name {EMBEDDED_AGENT} is reserved for the server's own in-process agent; create a token for another name"
                )))
            }
            (TokenSubject::Agent(name), token_sha256) => Ok(Agent { name, token_sha256 }),
            (TokenSubject::User(_), _) => Err(Error::Forbidden(
                "this endpoint is for agents; use an agent token".into(),
            )),
        }
    }
}
