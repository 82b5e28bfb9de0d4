//! Refuses request heads over [`MAX_HEADER_BYTES`] before routing. A tower layer rather than an
//! axum `from_fn` middleware: that one boxes a future around every request for its whole life,
//! and a parked long poll should cost as little as possible (see docs/benchmarks.md).

use std::convert::Infallible;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::future::{Either, Ready, ready};
use tower::{Layer, Service};

use super::MAX_HEADER_BYTES;

#[derive(Clone, Copy)]
pub struct HeadLimitLayer;

impl<S> Layer<S> for HeadLimitLayer {
    type Service = HeadLimit<S>;

    fn layer(&self, inner: S) -> HeadLimit<S> {
        HeadLimit(inner)
    }
}

#[derive(Clone)]
pub struct HeadLimit<S>(S);

impl<S> Service<Request> for HeadLimit<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Ready<Result<Response, Infallible>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let size = request.uri().to_string().len()
            + request
                .headers()
                .iter()
                .map(|(name, value)| name.as_str().len() + value.len() + 4)
                .sum::<usize>();
        if size > MAX_HEADER_BYTES {
            let refused = (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!(
                    "the request's headers are too large ({size} bytes; at most {MAX_HEADER_BYTES})"
                ),
            )
                .into_response();
            return Either::Left(ready(Ok(refused)));
        }
        Either::Right(self.0.call(request))
    }
}
