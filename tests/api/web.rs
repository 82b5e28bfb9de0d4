//! The web app over HTTP, as a browser uses it (cookies by hand, no redirects followed): signing in
//! with a token, the request page showing the exact command escaped, approving and rejecting with
//! the session's CSRF token (`via = "web"`), and what ends a session.

use hoopbot::store::TokenSubject;
use hoopbot::token::{Operator, Revocation};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_SECURITY_POLICY, LOCATION, SET_COOKIE, X_FRAME_OPTIONS};

use crate::helpers::{Backend, TestApp};
use crate::on_both_backends;

on_both_backends!(
    signed_out_pages_lead_to_sign_in_and_back,
    an_approver_reviews_and_approves_in_the_browser,
    a_form_without_the_sessions_csrf_token_changes_nothing,
    a_command_written_to_break_the_page_shows_literally,
    signing_out_or_revoking_the_token_ends_the_session,
    a_command_run_from_the_run_page_is_submitted_as_typed,
    a_slack_account_is_linked_from_its_link_page_after_seeing_whose_it_is,
    a_request_page_hears_of_a_change_made_anywhere,
    an_executed_request_shows_its_result_as_psql_prints_it,
    an_approver_sees_what_waits_for_them_first,
    a_request_page_says_where_its_notifications_went,
    an_admin_revokes_a_token_and_its_sessions_end,
);

pub(crate) fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A browser session of `email`: the cookie the sign-in set.
pub(crate) async fn sign_in(app: &TestApp, email: &str) -> String {
    let reply = browser()
        .post(app.url("/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(
            serde_urlencoded::to_string([
                ("token", app.token(email)),
                ("next", "/access-requests"),
            ])
            .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::SEE_OTHER);
    let cookie = reply.headers()[SET_COOKIE].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    cookie.split(';').next().unwrap().to_string()
}

pub(crate) async fn page(app: &TestApp, cookie: &str, path: &str) -> (StatusCode, String) {
    let reply = browser()
        .get(app.url(path))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    (reply.status(), reply.text().await.unwrap())
}

/// The CSRF token the page's forms carry.
pub(crate) fn csrf_in(html: &str) -> String {
    let at = html
        .find("name=\"csrf\" value=\"")
        .expect("a form with the CSRF token")
        + 19;
    html[at..].split('"').next().unwrap().to_string()
}

pub async fn post(
    app: &TestApp,
    cookie: &str,
    path: &str,
    form: &[(&str, &str)],
) -> reqwest::Response {
    browser()
        .post(app.url(path))
        .header("cookie", cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(serde_urlencoded::to_string(form).unwrap())
        .send()
        .await
        .unwrap()
}

async fn signed_out_pages_lead_to_sign_in_and_back(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = app.held("SELECT 1").await;
    let reply = browser()
        .get(app.url(&format!("/access-requests/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::SEE_OTHER);
    let to = reply.headers()[LOCATION].to_str().unwrap();
    assert_eq!(to, format!("/login?next=%2Faccess-requests%2F{id}"));

    let form = browser().get(app.url(to)).send().await.unwrap();
    assert_eq!(form.status(), StatusCode::OK);
    assert!(form.text().await.unwrap().contains("name=\"token\""));

    // A wrong token: the page says so, and no cookie is set.
    let wrong = browser()
        .post(app.url("/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(serde_urlencoded::to_string([("token", "hoop_not-a-token"), ("next", "/")]).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(wrong.headers().get(SET_COOKIE).is_none());
    assert!(
        wrong
            .text()
            .await
            .unwrap()
            .contains("unknown or revoked token")
    );

    // Signing in returns to the page asked for; not to another site.
    let next = format!("/access-requests/{id}");
    let reply = browser()
        .post(app.url("/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(
            serde_urlencoded::to_string([
                ("token", app.token("bob@x.com")),
                ("next", next.as_str()),
            ])
            .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(reply.headers()[LOCATION].to_str().unwrap(), next);
    let reply = browser()
        .post(app.url("/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(
            serde_urlencoded::to_string([
                ("token", app.token("bob@x.com")),
                ("next", "//evil.example/"),
            ])
            .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        reply.headers()[LOCATION].to_str().unwrap(),
        "/access-requests"
    );
}

async fn an_approver_reviews_and_approves_in_the_browser(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = app
        .held("UPDATE users SET status='inactive' WHERE id=123")
        .await;
    let bob = sign_in(&app, "bob@x.com").await;

    let list = page(&app, &bob, "/access-requests?status=pending").await;
    assert_eq!(list.0, StatusCode::OK);
    assert!(
        list.1.contains(&format!("/access-requests/{id}")),
        "{}",
        list.1
    );

    let reply = browser()
        .get(app.url(&format!("/access-requests/{id}")))
        .header("cookie", &bob)
        .send()
        .await
        .unwrap();
    let csp = reply.headers()[CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"));
    assert_eq!(reply.headers()[X_FRAME_OPTIONS], "DENY");
    let html = reply.text().await.unwrap();
    assert!(
        html.contains("UPDATE users SET status='inactive' WHERE id=123"),
        "{html}"
    );
    assert!(
        html.contains("Waiting for approval from dba-team, security."),
        "{html}"
    );
    // The one rule: Bob may approve for dba-team (not security) and reject.
    assert!(html.contains("Approve as dba-team"));
    assert!(!html.contains("Approve as security"));
    assert!(html.contains("Reason for rejecting"));

    let csrf = csrf_in(&html);
    let path = format!("/access-requests/{id}/approve");
    let reply = post(&app, &bob, &path, &[("csrf", &csrf), ("group", "dba-team")]).await;
    assert_eq!(reply.status(), StatusCode::SEE_OTHER);
    let request = app
        .get("alice@x.com", &format!("/api/v1/access-requests/{id}"))
        .await;
    assert_eq!(
        request.body["approval_groups"][0]["decided_by"],
        "bob@x.com"
    );
    assert_eq!(request.body["approval_groups"][0]["via"], "web");

    // Approving again: the page says why not, and the refusal has its status.
    let (_, html) = page(&app, &bob, &format!("/access-requests/{id}")).await;
    assert!(html.contains("You approved it for dba-team"), "{html}");
    let again = post(&app, &bob, &path, &[("csrf", &csrf), ("group", "dba-team")]).await;
    assert_eq!(again.status(), StatusCode::CONFLICT);

    // Alice may not decide her own request; Sam rejects with a reason, which is required.
    let alice = sign_in(&app, "alice@x.com").await;
    let (_, html) = page(&app, &alice, &format!("/access-requests/{id}")).await;
    assert!(html.contains("This is your own request"), "{html}");
    assert!(!html.contains("Approve as"));
    let sam = sign_in(&app, "sam@x.com").await;
    let (_, html) = page(&app, &sam, &format!("/access-requests/{id}")).await;
    let csrf = csrf_in(&html);
    let reject = format!("/access-requests/{id}/reject");
    let empty = post(&app, &sam, &reject, &[("csrf", &csrf), ("reason", "  ")]).await;
    assert_eq!(empty.status(), StatusCode::BAD_REQUEST);
    let done = post(
        &app,
        &sam,
        &reject,
        &[("csrf", &csrf), ("reason", "wrong table")],
    )
    .await;
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    let request = app
        .get("alice@x.com", &format!("/api/v1/access-requests/{id}"))
        .await;
    assert_eq!(request.body["status"], "rejected");
    assert_eq!(request.body["rejection"]["via"], "web");
    assert_eq!(request.body["rejection"]["reason"], "wrong table");
}

async fn a_form_without_the_sessions_csrf_token_changes_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = app.held("DELETE FROM orders").await;
    let bob = sign_in(&app, "bob@x.com").await;
    let sam = sign_in(&app, "sam@x.com").await;
    let (_, sams_page) = page(&app, &sam, &format!("/access-requests/{id}")).await;
    let path = format!("/access-requests/{id}/approve");
    for csrf in ["", "not-the-token", csrf_in(&sams_page).as_str()] {
        let reply = post(&app, &bob, &path, &[("csrf", csrf), ("group", "dba-team")]).await;
        assert_eq!(reply.status(), StatusCode::FORBIDDEN, "{csrf:?}");
    }
    let request = app
        .get("alice@x.com", &format!("/api/v1/access-requests/{id}"))
        .await;
    assert_eq!(request.body["version"], 1);
}

async fn a_command_written_to_break_the_page_shows_literally(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let command = "SELECT '</pre><script>alert(1)</script><!--' -- \u{200b}\u{202e}";
    let reply = app.submit("alice@x.com", "prod-db", command).await;
    let id = reply.body["id"].as_str().unwrap().to_string();
    let bob = sign_in(&app, "bob@x.com").await;
    let (_, html) = page(&app, &bob, &format!("/access-requests/{id}")).await;
    assert!(!html.contains("<script>alert(1)"), "{html}");
    assert!(
        html.contains("&lt;/pre&gt;&lt;script&gt;alert(1)&lt;/script&gt;&lt;!--"),
        "{html}"
    );
    // Hidden and bidi characters are shown, with the warning every surface gives.
    assert!(
        html.contains("\\u{200b}") && html.contains("\\u{202e}"),
        "{html}"
    );
    assert!(html.contains("⚠ Warning"), "{html}");
    // The page's one script is the app's own file; none came with the command.
    assert_eq!(html.matches("<script").count(), 1, "{html}");
    assert!(html.contains("<script src=\"/static/app.js\" defer></script>"));
}

async fn signing_out_or_revoking_the_token_ends_the_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let bob = sign_in(&app, "bob@x.com").await;
    let (status, html) = page(&app, &bob, "/access-requests").await;
    assert_eq!(status, StatusCode::OK);
    let out = post(&app, &bob, "/logout", &[("csrf", &csrf_in(&html))]).await;
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        page(&app, &bob, "/access-requests").await.0,
        StatusCode::SEE_OTHER
    );

    let sam = sign_in(&app, "sam@x.com").await;
    assert_eq!(page(&app, &sam, "/access-requests").await.0, StatusCode::OK);
    app.hoop
        .revoke_tokens(
            Revocation::Subject(TokenSubject::User("sam@x.com".parse().unwrap())),
            &Operator::cli(),
        )
        .await
        .unwrap();
    assert_eq!(
        page(&app, &sam, "/access-requests").await.0,
        StatusCode::SEE_OTHER
    );
}

async fn a_command_run_from_the_run_page_is_submitted_as_typed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = sign_in(&app, "alice@x.com").await;
    let (status, html) = page(&app, &alice, "/run").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains("<option value=\"prod-db\">prod-db</option>"),
        "{html}"
    );
    let csrf = csrf_in(&html);

    // Without the session's token: refused, and nothing is submitted.
    let forged = post(
        &app,
        &alice,
        "/run",
        &[
            ("csrf", "x"),
            ("connection", "prod-db"),
            ("command", "DROP TABLE users"),
        ],
    )
    .await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    let listed = app.get("alice@x.com", "/api/v1/access-requests").await;
    assert_eq!(listed.body["items"].as_array().unwrap().len(), 0);

    // An unknown connection: the page says so and keeps what was typed.
    let unknown = post(
        &app,
        &alice,
        "/run",
        &[
            ("csrf", &csrf),
            ("connection", "nowhere"),
            ("command", "SELECT 42"),
        ],
    )
    .await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let html = unknown.text().await.unwrap();
    // The Run page again, saying why: a page, not an API error.
    assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
    assert!(
        html.contains("connection &quot;nowhere&quot; not found"),
        "{html}"
    );
    assert!(html.contains(">SELECT 42</textarea>"), "{html}");

    // The browser sends the textarea's line breaks as CRLF; the command is what was typed.
    let sent = post(
        &app,
        &alice,
        "/run",
        &[
            ("csrf", &csrf),
            ("connection", "prod-db"),
            ("command", "UPDATE t SET a = 1\r\nWHERE id = 7"),
            ("justification", "TICKET-9"),
        ],
    )
    .await;
    assert_eq!(sent.status(), StatusCode::SEE_OTHER);
    let location = sent.headers()[LOCATION].to_str().unwrap().to_string();
    let id = location.trim_start_matches("/access-requests/");
    let request = app
        .get("alice@x.com", &format!("/api/v1/access-requests/{id}"))
        .await;
    assert_eq!(request.body["command"], "UPDATE t SET a = 1\nWHERE id = 7");
    assert_eq!(request.body["justification"], "TICKET-9");
    assert_eq!(request.body["status"], "pending");
    let audit = app
        .get("root@x.com", &format!("/api/v1/access-requests/{id}/audit"))
        .await;
    assert_eq!(audit.body["items"][0]["channel"], "web");
    let (_, html) = page(&app, &alice, &location).await;
    assert!(
        html.contains("Waiting for approval from dba-team, security."),
        "{html}"
    );
}

async fn a_slack_account_is_linked_from_its_link_page_after_seeing_whose_it_is(backend: Backend) {
    let (_slack, app) = crate::slack::with_slack(backend, "").await;
    let answer = crate::slack::slash(&app, "U0BOB", "subscribe").await;
    let code = crate::slack::code_in(&answer);
    let link = format!("/link/{code}");
    assert!(
        answer.contains(&format!("<http://hoop.test{link}|this link>")),
        "{answer}"
    );

    // Looking shows whose account it is, and links nothing.
    let bob = sign_in(&app, "bob@x.com").await;
    let (status, html) = page(&app, &bob, &link).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains("Link Slack account <code>U0BOB</code> to you, <strong>bob@x.com</strong>?"),
        "{html}"
    );
    assert!(
        crate::slack::slash(&app, "U0BOB", "status")
            .await
            .contains("not linked")
    );

    // Linking takes the session's own form.
    let forged = post(&app, &bob, &link, &[("csrf", "forged")]).await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert!(
        crate::slack::slash(&app, "U0BOB", "status")
            .await
            .contains("not linked")
    );
    let linked = post(&app, &bob, &link, &[("csrf", &csrf_in(&html))]).await;
    assert_eq!(linked.status(), StatusCode::OK);
    let html = linked.text().await.unwrap();
    assert!(
        html.contains("You will get a DM for each request waiting for dba-team"),
        "{html}"
    );
    assert!(
        crate::slack::slash(&app, "U0BOB", "status")
            .await
            .contains("Linked to *bob@x.com*")
    );
    let events = app
        .store()
        .await
        .audit_events(Some("slack:U0BOB"))
        .await
        .unwrap();
    assert_eq!(events.last().unwrap().kind, "account_linked");
    assert_eq!(events.last().unwrap().channel, "web");

    // Used once; and looking at codes is no way around the limit on wrong ones.
    let (status, html) = page(&app, &bob, &link).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(page(&app, &bob, "/link/AAAA-AAAA").await.0);
    }
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
}

/// The stream a request page listens to: nothing while nothing happens, then `changed` with the
/// new version when someone approves through the API.
async fn a_request_page_hears_of_a_change_made_anywhere(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = app.held("DELETE FROM sessions").await;
    let bob = sign_in(&app, "bob@x.com").await;
    let (_, html) = page(&app, &bob, &format!("/access-requests/{id}")).await;
    let live = format!("/access-requests/{id}/events?version=1");
    assert!(html.contains(&format!("data-live=\"{live}\"")), "{html}");

    let reply = browser()
        .get(app.url(&live))
        .header("cookie", &bob)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::OK);
    assert_eq!(reply.headers()["content-type"], "text/event-stream");
    let mut stream = reply;
    app.until_parked(&id).await;
    app.approve("sam@x.com", &id, None).await;
    let heard = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        let mut text = String::new();
        while let Some(chunk) = stream.chunk().await.unwrap() {
            text.push_str(&String::from_utf8_lossy(&chunk));
            if text.contains("event: changed") && text.contains("data: 2") {
                return text;
            }
        }
        text
    })
    .await
    .expect("the change is heard");
    assert!(heard.contains("event: changed\ndata: 2"), "{heard}");

    // Signed out, the stream is the way to sign in, as the page is.
    let signed_out = browser().get(app.url(&live)).send().await.unwrap();
    assert_eq!(signed_out.status(), StatusCode::SEE_OTHER);
}

/// A command run from the Run page on a connection with no review: once the agent has run it,
/// its page shows the rows as psql prints them.
async fn an_executed_request_shows_its_result_as_psql_prints_it(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let target = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", target.path().join("t.db").display());
    let alice = sign_in(&app, "alice@x.com").await;
    let (_, html) = page(&app, &alice, "/run").await;
    let sent = post(
        &app,
        &alice,
        "/run",
        &[
            ("csrf", &csrf_in(&html)),
            ("connection", "counter"),
            ("command", "select 1 as n, '<b>x</b>' as label"),
        ],
    )
    .await;
    let location = sent.headers()[LOCATION].to_str().unwrap().to_string();
    let target = crate::execution::sqlite_target(&url);
    let agent = app.agent("racer", vec![("counter".into(), target)]).await;
    assert!(
        agent
            .run_once(std::time::Duration::ZERO)
            .await
            .unwrap()
            .is_some()
    );

    let (_, html) = page(&app, &alice, &location).await;
    assert!(html.contains("Executed: 1 row"), "{html}");
    let table = " n |  label   \n---+----------\n 1 | &lt;b&gt;x&lt;/b&gt;\n(1 row)";
    assert!(html.contains(table), "{html}");
}

/// An approver's list starts with what waits for them (the one rule, not only the status); the
/// whole list is one link away, and someone in no approval group starts there.
async fn an_approver_sees_what_waits_for_them_first(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let waiting = app.held("SELECT 'waits for bob'").await;
    let done = app.held("SELECT 'bob approved this one'").await;
    app.approve("bob@x.com", &done, None).await;
    let bob = sign_in(&app, "bob@x.com").await;

    let (_, html) = page(&app, &bob, "/access-requests").await;
    assert!(
        html.contains("aria-current=\"page\">Waiting for me"),
        "{html}"
    );
    assert!(
        html.contains(&format!("/access-requests/{waiting}")),
        "{html}"
    );
    assert!(
        !html.contains(&format!("/access-requests/{done}")),
        "{html}"
    );
    assert!(html.contains("0 of 2 approved; expires"), "{html}");

    // The database picks the requests still waiting for a group: dba-team's is given on one.
    let awaiting = |groups: &[&str]| {
        let app = &app;
        let filter = hoopbot::store::ListFilter {
            status: Some(hoopbot::domain::Status::Pending),
            awaiting: Some(groups.iter().map(|g| g.to_string()).collect()),
            limit: 50,
            ..Default::default()
        };
        async move {
            let listed = app.store().await.list_requests(&filter).await.unwrap();
            listed.into_iter().map(|r| r.id).collect::<Vec<_>>()
        }
    };
    assert_eq!(awaiting(&["dba-team"]).await, vec![waiting.clone()]);
    assert_eq!(
        awaiting(&["security", "sre"]).await,
        vec![done.clone(), waiting.clone()]
    );
    assert!(awaiting(&[]).await.is_empty());

    let (_, all) = page(&app, &bob, "/access-requests?view=all").await;
    assert!(
        all.contains(&format!("/access-requests/{waiting}"))
            && all.contains(&format!("/access-requests/{done}"))
    );
    assert!(all.contains("1 of 2 approved"), "{all}");

    let alice = sign_in(&app, "alice@x.com").await;
    let (_, html) = page(&app, &alice, "/access-requests").await;
    assert!(html.contains("aria-current=\"page\">All"), "{html}");
    assert!(html.contains(&format!("/access-requests/{done}")));

    // Filtered by requester: only Eve's.
    let eves = app.submit("eve@x.com", "prod-db", "SELECT 'eve'").await;
    let eves = eves.body["id"].as_str().unwrap();
    let (_, html) = page(
        &app,
        &alice,
        "/access-requests?view=all&requester=eve%40x.com",
    )
    .await;
    assert!(html.contains(&format!("/access-requests/{eves}")), "{html}");
    assert!(
        !html.contains(&format!("/access-requests/{done}")),
        "{html}"
    );
    assert!(html.contains("name=\"requester\" type=\"email\""), "{html}");
    // A page at a time: with 50 newer ones waiting too, the first is on the next page.
    for n in 0..50 {
        app.held(&format!("SELECT {n}")).await;
    }
    let (_, first) = page(&app, &bob, "/access-requests").await;
    assert_eq!(first.matches("<tr>").count() - 1, 50, "{first}");
    assert!(!first.contains(&format!("/access-requests/{waiting}\"")));
    let older = first
        .split("href=\"")
        .map(|rest| rest.split('"').next().unwrap().replace("&amp;", "&"))
        .find(|href| href.contains("before="))
        .expect("a link to older requests");
    assert!(
        older.starts_with("/access-requests?view=mine&before="),
        "{older}"
    );
    let (_, second) = page(&app, &bob, &older).await;
    assert!(
        second.contains(&format!("/access-requests/{waiting}\"")),
        "{second}"
    );
    assert!(
        !second.contains(&format!("/access-requests/{done}\"")),
        "{second}"
    );
}

async fn a_request_page_says_where_its_notifications_went(backend: Backend) {
    let siem = crate::receiver::Receiver::start(crate::webhooks::SECRET).await;
    siem.plan(vec![crate::receiver::Reply::Status(503)]);
    let config = crate::webhooks::webhook("siem", &siem.url(), "allow_private = true");
    let app = TestApp::spawn_with(backend, &config).await;
    let id = app.held("SELECT 1").await;
    crate::webhooks::drain(&app.delivery_worker()).await;
    let bob = sign_in(&app, "bob@x.com").await;
    let (_, html) = page(&app, &bob, &format!("/access-requests/{id}")).await;
    let row = "<td>webhook: siem</td><td>access_request.created</td><td>pending</td><td>1</td><td>HTTP 503 Service Unavailable";
    assert!(html.contains(row), "{html}");
}

async fn an_admin_revokes_a_token_and_its_sessions_end(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let expiring = app
        .hoop
        .issue_token(
            &TokenSubject::Agent("edge".into()),
            Some(std::time::Duration::from_secs(3600)),
            &Operator::system(),
        )
        .await
        .unwrap();
    let expiring = hoopbot::token::id(&hoopbot::token::digest(&expiring)).to_string();
    let sam = sign_in(&app, "sam@x.com").await;
    let bob = sign_in(&app, "bob@x.com").await;
    assert_eq!(
        page(&app, &bob, "/admin/tokens").await.0,
        StatusCode::FORBIDDEN
    );

    let root = sign_in(&app, "root@x.com").await;
    let (status, html) = page(&app, &root, "/admin/tokens").await;
    assert_eq!(status, StatusCode::OK);
    let sams = hoopbot::token::id(&hoopbot::token::digest(app.token("sam@x.com"))).to_string();
    assert!(
        html.contains(&format!("<code>{sams}</code></td><td>sam@x.com</td>")),
        "{html}"
    );
    assert!(
        !html.contains(app.token("sam@x.com")),
        "the page never shows a token"
    );
    // When each token stops working by itself, if it does.
    assert!(html.contains("<th>Expires</th>"), "{html}");
    assert!(
        html.contains(&format!("<code>{sams}</code></td><td>sam@x.com</td><td>"))
            && html.contains("when revoked"),
        "{html}"
    );
    let row = html[html.find(&format!("<code>{expiring}</code>")).unwrap()..]
        .split("</tr>")
        .next()
        .unwrap();
    // Created and expires, both times.
    assert_eq!(row.matches(" UTC</td>").count(), 2, "{row}");

    // Bob cannot revoke with a form of his own; root can.
    let bobs_page = page(&app, &bob, "/access-requests").await.1;
    let refused = post(
        &app,
        &bob,
        "/admin/tokens/revoke",
        &[("csrf", &csrf_in(&bobs_page)), ("id", &sams)],
    )
    .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(page(&app, &sam, "/access-requests").await.0, StatusCode::OK);
    let revoked = post(
        &app,
        &root,
        "/admin/tokens/revoke",
        &[("csrf", &csrf_in(&html)), ("id", &sams)],
    )
    .await;
    assert_eq!(revoked.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        page(&app, &sam, "/access-requests").await.0,
        StatusCode::SEE_OTHER
    );
    let (_, html) = page(&app, &root, "/admin/tokens").await;
    assert!(html.contains("revoked "), "{html}");
    let events = app
        .store()
        .await
        .audit_events(Some(&format!("token:{sams}")))
        .await
        .unwrap();
    let last = events.last().unwrap();
    assert_eq!(
        (
            last.kind.as_str(),
            last.actor.as_str(),
            last.channel.as_str()
        ),
        ("token_revoked", "root@x.com", "web")
    );
}
