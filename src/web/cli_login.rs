//! `hoop login` in a browser, as `gh auth login` and `tsh login` do it: the command line listens
//! on a loopback port and opens `/login/cli?port=…&challenge=…&state=…`. Here the signed-in person
//! (by single sign-on or a token, signing in first if need be) sees what is asked and allows it
//! with a form (POST, with the session's CSRF token, so no other page can allow it for them); the
//! browser is then sent to the command line's port with a one-time code, which the command line
//! redeems with the secret behind `challenge` (`POST /api/v1/login/token`).

use axum::extract::{Form, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::pages;
use super::session::{Browser, CsrfForm, check_csrf};
use crate::error::Error;
use crate::service::Hoop;

#[derive(Deserialize)]
pub struct Asked {
    port: Option<String>,
    challenge: Option<String>,
    state: Option<String>,
}

/// What the command line asked for, checked: its loopback port, its challenge and its state.
struct Ask {
    port: u16,
    challenge: String,
    state: String,
}

impl Asked {
    fn checked(self) -> Result<Ask, Error> {
        let damaged = || {
            Error::InvalidInput(
                "this sign-in link from `hoop login` is incomplete or damaged; run `hoop login` again".into(),
            )
        };
        let port = self
            .port
            .and_then(|p| p.parse::<u16>().ok())
            .filter(|&p| p != 0)
            .ok_or_else(damaged)?;
        let challenge = self
            .challenge
            .filter(|c| !c.is_empty())
            .ok_or_else(damaged)?;
        let state = self
            .state
            .filter(|s| {
                (8..=128).contains(&s.len()) && s.chars().all(|c| c.is_ascii_alphanumeric())
            })
            .ok_or_else(damaged)?;
        Ok(Ask {
            port,
            challenge,
            state,
        })
    }
}

/// `GET /login/cli`: what the command line asks, and a button to allow it.
pub async fn page(
    State(hoop): State<Hoop>,
    browser: Browser,
    Query(asked): Query<Asked>,
) -> Response {
    let me = match browser.signed_in() {
        Ok(me) => me,
        Err(to_sign_in) => return to_sign_in.into_response(),
    };
    let ask = match asked.checked() {
        Ok(ask) => ask,
        Err(e) => return pages::error(Some(&me), &e),
    };
    let lasts = hoop.sso_token_ttl();
    let mut response =
        pages::cli_login(&me, ask.port, &ask.challenge, &ask.state, lasts).into_response();
    // This page's form ends at the command line's loopback port (a redirect after the POST),
    // which the usual `form-action 'self'` would stop.
    let policy = super::policy_with_form_target(&format!("http://127.0.0.1:{}", ask.port));
    if let Ok(value) = HeaderValue::from_str(&policy) {
        response
            .headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, value);
    }
    response
}

#[derive(Deserialize)]
pub struct AllowForm {
    csrf: String,
    port: Option<String>,
    challenge: Option<String>,
    state: Option<String>,
}

impl CsrfForm for AllowForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST /login/cli`: allowed; off to the command line with a one-time code.
pub async fn allow(
    State(hoop): State<Hoop>,
    browser: Browser,
    Form(form): Form<AllowForm>,
) -> Response {
    let me = match browser.signed_in() {
        Ok(me) => me,
        Err(to_sign_in) => return to_sign_in.into_response(),
    };
    if let Err(e) = check_csrf(&me, &form) {
        return pages::error(Some(&me), &e);
    }
    let asked = Asked {
        port: form.port,
        challenge: form.challenge,
        state: form.state,
    };
    let granted = async {
        let ask = asked.checked()?;
        let code = hoop.grant_cli(&me, &ask.challenge).await?;
        Ok::<_, Error>((ask, code))
    };
    match granted.await {
        Ok((ask, code)) => {
            let query = serde_urlencoded::to_string([("code", code), ("state", ask.state)])
                .unwrap_or_default();
            Redirect::to(&format!("http://127.0.0.1:{}/callback?{query}", ask.port)).into_response()
        }
        Err(e) => pages::error(Some(&me), &e),
    }
}
