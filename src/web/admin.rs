//! Admin pages: the API tokens, each with its id, holder and state, and a form to revoke one
//! (audited as `token_revoked`, by the signed-in admin, `via` web). Revoking a token ends the
//! web sessions it opened. Admins only: anyone else gets 403.

use axum::extract::{Form, State};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

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

pub async fn tokens(State(hoop): State<Hoop>, browser: Browser) -> Response {
    let me = match browser.signed_in() {
        Ok(me) => me,
        Err(to_sign_in) => return to_sign_in.into_response(),
    };
    if let Err(e) = admin(&me) {
        return pages::error(Some(&me), &e);
    }
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
