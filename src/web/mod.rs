//! The web app: server-rendered pages over the same service calls as the API. Sign in with an
//! API token (a server-side session held by an HttpOnly cookie), see the requests, review one
//! with its exact command, approve or reject it (`via = "web"`). Pages work without JavaScript;
//! every form carries the session's CSRF token; every page is sent with a strict
//! Content-Security-Policy and may not be framed.

mod admin;
mod cli_login;
mod live;
mod pages;
mod run;
mod session;
mod sso;

use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use self::session::{Browser, CsrfForm, check_csrf};
use crate::domain::{self, Decision, Status, Surface};
use crate::error::Error;
use crate::http::Source;
use crate::service::Hoop;
use crate::store::ListFilter;

/// Requests one list page shows at most.
const PAGE: i64 = 50;

/// The web app's pages; with `[oidc]` configured, single sign-on too.
pub fn router(config: &crate::config::Config) -> anyhow::Result<Router<Hoop>> {
    let pages = pages_router();
    Ok(match &config.oidc {
        Some(oidc) => {
            let sso = sso::SingleSignOn::new(oidc, &config.server.public_url)?;
            pages.layer(axum::Extension(std::sync::Arc::new(sso)))
        }
        None => pages,
    })
}

fn pages_router() -> Router<Hoop> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/access-requests") }))
        .route("/login", get(session::login_page).post(session::login))
        .route("/logout", post(session::logout))
        .route("/login/oidc", get(sso::start))
        .route("/login/oidc/callback", get(sso::callback))
        .route("/login/cli", get(cli_login::page).post(cli_login::allow))
        .route("/access-requests", get(list))
        .route("/access-requests/{id}", get(show))
        .route("/access-requests/{id}/approve", post(approve))
        .route("/access-requests/{id}/reject", post(reject))
        .route("/access-requests/{id}/events", get(live::changes))
        .route("/run", get(run::run_page).post(run::run))
        .route("/link/{code}", get(link_page).post(link))
        .route("/admin/tokens", get(admin::tokens))
        .route("/admin/tokens/revoke", post(admin::revoke))
        .route("/admin/audit", get(admin::audit))
        .route("/admin/webhooks", get(admin::webhooks))
        .route("/admin/config", get(admin::config))
        .route("/static/app.css", get(stylesheet))
        .route("/static/app.js", get(script))
        .layer(axum::middleware::map_response(security_headers))
}

/// Every page's Content-Security-Policy: scripts and styles only from this server, no inline
/// ones, forms only to it, and no framing (an Approve button under someone else's page is the
/// classic attack).
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// [`POLICY`], with forms also allowed to end at `target` (the `hoop login` page's loopback port).
fn policy_with_form_target(target: &str) -> String {
    POLICY.replace(
        "form-action 'self'",
        &format!("form-action 'self' {target}"),
    )
}

/// What every page is sent with: [`POLICY`], `X-Frame-Options: DENY`, no sniffing, and no full
/// URL sent elsewhere.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    // A page may set a Content-Security-Policy of its own (the `hoop login` page): it is kept.
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, POLICY),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
    ] {
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
    response
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("app.css"),
    )
        .into_response()
}

async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("app.js"),
    )
        .into_response()
}

#[derive(Deserialize)]
struct ListQuery {
    /// `mine` (waiting for me) or `all`; an approver sees `mine` unless they filter.
    view: Option<String>,
    status: Option<String>,
    connection: Option<String>,
    requester: Option<String>,
    before: Option<String>,
}

async fn list(
    State(hoop): State<Hoop>,
    browser: Browser,
    Query(query): Query<ListQuery>,
) -> Response {
    let me = match browser.signed_in() {
        Ok(me) => me,
        Err(to_sign_in) => return to_sign_in.into_response(),
    };
    let status = match query.status.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(word) => match Status::parse(word) {
            Some(status) => Some(status),
            None => {
                let error = Error::InvalidInput(format!("{word:?} is not a status"));
                return pages::error(Some(&me), &error);
            }
        },
    };
    let connection = query.connection.filter(|c| !c.is_empty());
    // As the store keeps it: the config's spelling of a user's email.
    let requester = query
        .requester
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty())
        .map(|r| match domain::Email::parse(&r) {
            Ok(email) => hoop
                .identity(&email)
                .map_or(r, |user| user.email.as_str().to_string()),
            Err(_) => r,
        });
    let filtered =
        status.is_some() || connection.is_some() || requester.is_some() || query.before.is_some();
    let view = match query.view.as_deref() {
        Some("mine") => pages::View::WaitingForMe,
        Some("all") => pages::View::All,
        _ if !filtered && !hoop.approval_groups_of(&me.user).is_empty() => {
            pages::View::WaitingForMe
        }
        _ => pages::View::All,
    };
    let filter = match view {
        // The pending requests still waiting for one of the reader's groups, found by the
        // database a page at a time; the one rule then keeps those they may approve now.
        pages::View::WaitingForMe => ListFilter {
            awaiting: Some(me.user.groups.iter().cloned().collect()),
            status: Some(Status::Pending),
            connection: None,
            requester: None,
            before_id: query.before,
            limit: PAGE,
        },
        pages::View::All => ListFilter {
            awaiting: None,
            status,
            connection,
            requester,
            before_id: query.before,
            limit: PAGE,
        },
    };
    let listed = async {
        let mut requests = hoop.list(&filter).await?;
        // Older ones follow the last one read, whether or not the rule keeps it.
        let older = (requests.len() as i64 == PAGE)
            .then(|| requests.last().map(|r| r.id.clone()))
            .flatten();
        if view == pages::View::WaitingForMe {
            let now = hoop.now().await?;
            requests.retain(|r| domain::you_may(r, &me.user, now).may_approve());
        }
        Ok::<_, Error>((requests, older))
    };
    match listed.await {
        Ok((requests, older)) => {
            pages::list(&me, view, &requests, &filter, older.as_deref()).into_response()
        }
        Err(e) => pages::error(Some(&me), &e),
    }
}

async fn show(State(hoop): State<Hoop>, browser: Browser, Path(id): Path<String>) -> Response {
    let me = match browser.signed_in() {
        Ok(me) => me,
        Err(to_sign_in) => return to_sign_in.into_response(),
    };
    let shown = async {
        let request = hoop.get(&id).await?;
        let you_may = domain::you_may(&request, &me.user, hoop.now().await?);
        let trail = hoop.audit_trail(&id).await?;
        // Where its notifications went: the deliveries the API's view of it lists.
        let deliveries = hoop
            .view(&me.user, request.clone())
            .await?
            .deliveries
            .unwrap_or_default();
        Ok::<_, Error>(pages::request(&me, &request, &you_may, &trail, &deliveries))
    };
    match shown.await {
        Ok(page) => page.into_response(),
        Err(e) => pages::error(Some(&me), &e),
    }
}

#[derive(Deserialize)]
struct ApproveForm {
    csrf: String,
    group: Option<String>,
}

#[derive(Deserialize)]
struct RejectForm {
    csrf: String,
    #[serde(default)]
    reason: String,
}

impl CsrfForm for ApproveForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

impl CsrfForm for RejectForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

async fn approve(
    State(hoop): State<Hoop>,
    browser: Browser,
    Path(id): Path<String>,
    Form(form): Form<ApproveForm>,
) -> Response {
    let group = form.group.clone().filter(|g| !g.is_empty());
    decide(&hoop, browser, &id, &form, Decision::Approve { group }).await
}

async fn reject(
    State(hoop): State<Hoop>,
    browser: Browser,
    Path(id): Path<String>,
    Form(form): Form<RejectForm>,
) -> Response {
    let reason = form.reason.trim().to_string();
    if reason.is_empty() {
        let me = browser.signed_in().ok();
        let error = Error::InvalidInput("a rejection needs a reason".into());
        return pages::error(me.as_ref(), &error);
    }
    decide(&hoop, browser, &id, &form, Decision::Reject { reason }).await
}

/// A decision from a form: signed in, the form's CSRF token the session's, then the same use case
/// as the API's. On success, back to the request page (a reload does not post again).
async fn decide(
    hoop: &Hoop,
    browser: Browser,
    id: &str,
    form: &impl CsrfForm,
    decision: Decision,
) -> Response {
    let me = match browser.signed_in() {
        Ok(me) => me,
        Err(to_sign_in) => return to_sign_in.into_response(),
    };
    if let Err(refused) = check_csrf(&me, form) {
        return pages::error(Some(&me), &refused);
    }
    match hoop.decide(&me.user, id, decision, Surface::Web).await {
        Ok(_) => Redirect::to(&pages::request_path(id)).into_response(),
        Err(e) => pages::error(Some(&me), &e),
    }
}

/// The confirmation page for a `/hoop subscribe` code: which chat account would be linked to
/// whom, before anything is linked (so nobody links someone else's account by following their
/// link). Looking a code up counts against the same limit on wrong codes as confirming one.
async fn link_page(
    State(hoop): State<Hoop>,
    browser: Browser,
    Source(source): Source,
    Path(code): Path<String>,
) -> Response {
    let me = match browser.signed_in() {
        Ok(me) => me,
        Err(to_sign_in) => return to_sign_in.into_response(),
    };
    match hoop.link_code_holder(&me.user, &code, source).await {
        Ok((kind, account)) => pages::link(&me, &code, &kind, &account).into_response(),
        Err(e) => pages::error(Some(&me), &e),
    }
}

#[derive(Deserialize)]
struct LinkForm {
    csrf: String,
}

impl CsrfForm for LinkForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// Links the account on a POST with the session's CSRF token: the same use case as
/// `POST /api/v1/chat-links`, audited the same way (`via` web).
async fn link(
    State(hoop): State<Hoop>,
    browser: Browser,
    Source(source): Source,
    Path(code): Path<String>,
    Form(form): Form<LinkForm>,
) -> Response {
    let me = match browser.signed_in() {
        Ok(me) => me,
        Err(to_sign_in) => return to_sign_in.into_response(),
    };
    if let Err(refused) = check_csrf(&me, &form) {
        return pages::error(Some(&me), &refused);
    }
    match hoop
        .confirm_link(&me.user, &code, source, Surface::Web)
        .await
    {
        Ok(link) => {
            let groups = hoop.approval_groups_of(&me.user);
            pages::linked(&me, &link.kind, &link.account, &groups).into_response()
        }
        Err(e) => pages::error(Some(&me), &e),
    }
}

/// The status a page about `error` is sent with.
fn status_of(error: &Error) -> StatusCode {
    if let Error::Internal(e) = error {
        tracing::error!(error = ?e, "internal error on a web page");
    }
    error.status()
}
