//! Admin pages: the API tokens (revoking one is audited as `token_revoked`, by the signed-in
//! admin, `via` web, and ends the web sessions it opened), the audit log with the chain's
//! verification, the webhooks with their deliveries, and the effective configuration with its
//! secrets masked. Admins only: anyone else gets 403.

mod audit;
mod config;
mod webhooks;

use axum::extract::{Form, State};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

pub use self::audit::audit;
pub use self::config::config;
pub use self::webhooks::webhooks;
use super::pages;
use super::session::{Browser, CsrfForm, check_csrf};
use crate::domain::Surface;
use crate::error::Error;
use crate::service::{Hoop, SignedIn};
use crate::token::{Operator, Revocation};

/// The signed-in admin, or why not.
fn admin(me: &SignedIn) -> Result<(), Error> {
    match me.user.is_admin {
        true => Ok(()),
        false => Err(Error::Forbidden("this page is for admins".into())),
    }
}

/// The signed-in admin; for anyone else, the page to send: the way to sign in, or 403.
fn signed_in_admin(browser: Browser) -> Result<SignedIn, Box<Response>> {
    let me = browser
        .signed_in()
        .map_err(|to_sign_in| Box::new(to_sign_in.into_response()))?;
    admin(&me).map_err(|e| Box::new(pages::error(Some(&me), &e)))?;
    Ok(me)
}

pub async fn tokens(State(hoop): State<Hoop>, browser: Browser) -> Response {
    let me = match signed_in_admin(browser) {
        Ok(me) => me,
        Err(page) => return *page,
    };
    match hoop.tokens().await {
        Ok(tokens) => pages::tokens(&me, &tokens).into_response(),
        Err(e) => pages::error(Some(&me), &e),
    }
}

#[derive(Deserialize)]
pub struct RevokeForm {
    csrf: String,
    id: String,
}

impl CsrfForm for RevokeForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

pub async fn revoke(
    State(hoop): State<Hoop>,
    browser: Browser,
    Form(form): Form<RevokeForm>,
) -> Response {
    let me = match browser.signed_in() {
        Ok(me) => me,
        Err(to_sign_in) => return to_sign_in.into_response(),
    };
    if let Err(e) = admin(&me).and_then(|()| check_csrf(&me, &form)) {
        return pages::error(Some(&me), &e);
    }
    let by = Operator {
        actor: me.user.email.as_str().to_string(),
        channel: Surface::Web,
    };
    match hoop.revoke_tokens(Revocation::Id(form.id), &by).await {
        Ok(_) => Redirect::to("/admin/tokens").into_response(),
        Err(e) => pages::error(Some(&me), &Error::InvalidInput(e.to_string())),
    }
}
