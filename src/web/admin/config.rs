//! `/admin/config`: the configuration the server runs with, as TOML, every secret masked by its
//! type (`Config::shown`).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::html;

use super::signed_in_admin;
use crate::config::MASK;
use crate::service::Hoop;
use crate::web::pages;
use crate::web::session::Browser;

pub async fn config(State(hoop): State<Hoop>, browser: Browser) -> Response {
    let me = match signed_in_admin(browser) {
        Ok(me) => me,
        Err(page) => return *page,
    };
    let shown = match hoop.effective_config(&me.user) {
        Ok(shown) => shown,
        Err(e) => return pages::error(Some(&me), &e),
    };
    pages::page(
        "Configuration",
        Some(&me),
        html! {
            h1 { "Configuration" }
            p class="hint" {
                "As the server loaded it: defaults filled in, environment variables substituted. \
                 Every secret shows as " code { (MASK) } "."
            }
            pre class="config" { code { (shown) } }
        },
    )
    .into_response()
}
