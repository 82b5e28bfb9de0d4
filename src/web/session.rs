//! Signing in and out, and who a browser is: the session cookie (HttpOnly, SameSite=Lax, Secure
//! when the public URL is https) names a server-side session (`Hoop::signed_in`); every form
//! posts the session's CSRF token, compared in constant time.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Form, FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::pages;
use super::sso::SingleSignOn;
use crate::error::Error;
use crate::service::{Hoop, SESSION_TTL, SignedIn};

/// The session cookie's name.
const COOKIE: &str = "hoop_session";

/// A browser as it comes: signed in or not (then the way to the sign-in page, and back), and
/// its session cookie.
pub struct Browser {
    signed_in: Option<SignedIn>,
    cookie: Option<String>,
    /// Where to come back to after signing in: this page.
    here: String,
}

/// The way to the sign-in page, and back here afterwards.
pub struct ToSignIn(String);

impl IntoResponse for ToSignIn {
    fn into_response(self) -> Response {
        let query = serde_urlencoded::to_string([("next", self.0.as_str())]).unwrap_or_default();
        Redirect::to(&format!("/login?{query}")).into_response()
    }
}

impl Browser {
    /// Who is signed in, or the way to the sign-in page that returns here afterwards.
    pub fn signed_in(self) -> Result<SignedIn, ToSignIn> {
        self.signed_in.ok_or(ToSignIn(self.here))
    }
}

impl FromRequestParts<Hoop> for Browser {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, hoop: &Hoop) -> Result<Self, Response> {
        let cookie = session_cookie(parts);
        let signed_in = match &cookie {
            Some(cookie) => hoop
                .signed_in(cookie)
                .await
                .map_err(|e| pages::error(None, &e))?,
            None => None,
        };
        let here = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        Ok(Browser {
            signed_in,
            cookie,
            here,
        })
    }
}

/// The session cookie's value, if the request carries one.
fn session_cookie(parts: &Parts) -> Option<String> {
    cookie(&parts.headers, COOKIE)
}

/// The value of the cookie `name`, if the request carries it.
pub(super) fn cookie(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value.to_string())
        .filter(|value| !value.is_empty())
}

/// The `Secure` attribute for this server's cookies: only when it is reached by https.
pub(super) fn secure(hoop: &Hoop) -> &'static str {
    match hoop.public_url().starts_with("https://") {
        true => "; Secure",
        false => "",
    }
}

/// A form that carries the session's CSRF token.
pub trait CsrfForm {
    fn csrf(&self) -> &str;
}

/// Refuses a form whose CSRF token is not the session's (403, nothing done).
pub fn check_csrf(me: &SignedIn, form: &impl CsrfForm) -> Result<(), Error> {
    if bool::from(me.csrf.as_bytes().ct_eq(form.csrf().as_bytes())) {
        return Ok(());
    }
    tracing::warn!(user = %me.user.email.as_str(), "refused a web form without this session's CSRF token");
    Err(Error::Forbidden(
        "this form did not come from this session's page; reload the page and try again".into(),
    ))
}

#[derive(Deserialize)]
pub struct Next {
    next: Option<String>,
}

/// `next` if it is a page of this server (a path, not `//elsewhere`); otherwise the list.
pub(super) fn local(next: Option<&str>) -> String {
    match next {
        Some(path) if path.starts_with('/') && !path.starts_with("//") && !path.contains('\\') => {
            path.to_string()
        }
        _ => "/access-requests".to_string(),
    }
}

/// The name of the identity provider to offer, when single sign-on is configured.
fn sso_name(sso: &Option<Extension<Arc<SingleSignOn>>>) -> Option<&str> {
    sso.as_ref().map(|Extension(sso)| sso.name())
}

pub async fn login_page(
    browser: Browser,
    sso: Option<Extension<Arc<SingleSignOn>>>,
    Query(next): Query<Next>,
) -> Response {
    let next = local(next.next.as_deref());
    match browser.signed_in {
        Some(_) => Redirect::to(&next).into_response(),
        None => pages::login(&next, sso_name(&sso), None).into_response(),
    }
}

#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
    next: Option<String>,
}

pub async fn login(
    State(hoop): State<Hoop>,
    sso: Option<Extension<Arc<SingleSignOn>>>,
    Form(form): Form<LoginForm>,
) -> Response {
    let next = local(form.next.as_deref());
    let session = match hoop.sign_in(&form.token).await {
        Ok(session) => session,
        Err(e) => {
            let status = super::status_of(&e);
            return (
                status,
                pages::login(&next, sso_name(&sso), Some(&e.to_string())),
            )
                .into_response();
        }
    };
    let mut response = Redirect::to(&next).into_response();
    set_session_cookie(&hoop, &mut response, &session.cookie);
    response
}

/// Has the browser keep `cookie` as its session (`Secure` when the server is reached by https).
pub(super) fn set_session_cookie(hoop: &Hoop, response: &mut Response, cookie: &str) {
    let cookie = format!(
        "{COOKIE}={cookie}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{}",
        SESSION_TTL.as_secs(),
        secure(hoop)
    );
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

#[derive(Deserialize)]
pub struct LogoutForm {
    csrf: String,
}

impl CsrfForm for LogoutForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

pub async fn logout(
    State(hoop): State<Hoop>,
    browser: Browser,
    Form(form): Form<LogoutForm>,
) -> Response {
    let cookie = browser.cookie.clone();
    let me = match browser.signed_in() {
        Ok(me) => me,
        Err(to_sign_in) => return to_sign_in.into_response(),
    };
    if let Err(refused) = check_csrf(&me, &form) {
        return pages::error(Some(&me), &refused);
    }
    if let Some(cookie) = cookie
        && let Err(e) = hoop.sign_out(&cookie).await
    {
        return pages::error(Some(&me), &e);
    }
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("hoop_session=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pages_of_this_server_are_returned_to() {
        assert_eq!(
            local(Some("/access-requests/abc?x=1")),
            "/access-requests/abc?x=1"
        );
        for elsewhere in [
            "https://evil.example/",
            "//evil.example/",
            "/\\evil.example",
            "",
        ] {
            assert_eq!(local(Some(elsewhere)), "/access-requests", "{elsewhere}");
        }
        assert_eq!(local(None), "/access-requests");
    }
}
