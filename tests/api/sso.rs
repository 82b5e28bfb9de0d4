//! Single sign-on through an OpenID Connect identity provider (a fake one on loopback, see
//! `fake_idp`), as a browser goes through it with cookies by hand: a configured user signs in
//! with their config groups and the claimed ones; someone not in the config only when
//! `oidc.allow_unlisted_users` says so; an ID token with a wrong nonce, audience, expiry, key or an
//! unverified email signs nobody in; a sign-on cannot be finished in another browser or twice.
//! And tokens that expire: an expired one is told to log in again; and `hoop login` through the
//! browser, end to end.

use std::collections::BTreeSet;

use reqwest::StatusCode;
use reqwest::header::{LOCATION, SET_COOKIE};

use crate::fake_idp::{FakeIdp, Flaw, Person};
use crate::helpers::{Backend, TestApp};
use crate::on_both_backends;
use crate::web::{browser, csrf_in, page, post};

on_both_backends!(
    a_listed_user_signs_in_through_the_identity_provider,
    someone_not_in_the_config_signs_in_only_when_allowed,
    a_flawed_id_token_signs_nobody_in,
    a_sign_on_is_finished_once_and_only_in_the_browser_that_began_it,
    an_expired_token_is_told_to_log_in_again,
    hoop_login_signs_in_through_the_browser,
    a_login_code_is_redeemed_once_and_only_with_its_secret,
    a_flood_of_sign_on_starts_is_bounded,
);

/// Where the server sends the browser back to, as the test reaches it.
fn reachable(app: &TestApp, location: &str) -> String {
    location.replace("http://hoop.test", &app.url(""))
}

fn set_cookie(reply: &reqwest::Response, name: &str) -> Option<String> {
    reply
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")) && !v.starts_with(&format!("{name}=;")))
        .map(|v| v.split(';').next().unwrap().to_string())
}

/// The first half of a sign-on: to the provider and back. The callback URL and the cookie that
/// binds the sign-on to this browser.
async fn to_the_provider_and_back(app: &TestApp, next: &str) -> (String, String) {
    let start = browser()
        .get(app.url(&format!(
            "/login/oidc?{}",
            serde_urlencoded::to_string([("next", next)]).unwrap()
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(start.status(), StatusCode::SEE_OTHER);
    let state_cookie = set_cookie(&start, "hoop_sign_in").expect("the sign-on's cookie");
    let to_idp = start.headers()[LOCATION].to_str().unwrap().to_string();
    let back = browser().get(&to_idp).send().await.unwrap();
    assert_eq!(back.status(), StatusCode::SEE_OTHER, "{to_idp}");
    let callback = back.headers()[LOCATION].to_str().unwrap().to_string();
    (reachable(app, &callback), state_cookie)
}

/// A whole sign-on as whoever the provider signs in next: the session cookie and where it went,
/// or the refusal's status and page.
async fn sign_on(app: &TestApp, next: &str) -> Result<(String, String), (StatusCode, String)> {
    let (callback, state_cookie) = to_the_provider_and_back(app, next).await;
    let done = browser()
        .get(&callback)
        .header("cookie", &state_cookie)
        .send()
        .await
        .unwrap();
    match set_cookie(&done, "hoop_session") {
        Some(session) => {
            assert_eq!(done.status(), StatusCode::SEE_OTHER);
            let to = done.headers()[LOCATION].to_str().unwrap().to_string();
            Ok((session, to))
        }
        None => {
            // A page for the person in the browser, not an API error.
            let kind = done.headers()["content-type"].to_str().unwrap().to_string();
            assert!(kind.starts_with("text/html"), "{kind}");
            let status = done.status();
            let page = done.text().await.unwrap();
            assert!(page.starts_with("<!DOCTYPE html>"), "{page}");
            Err((status, page))
        }
    }
}

fn person(email: &str, groups: &[&str], flaw: Option<Flaw>) -> Person {
    Person {
        email: email.into(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        flaw,
    }
}

async fn token_events(app: &TestApp) -> Vec<hoopbot::audit::AuditEvent> {
    let events = app.store().await.audit_events(None).await.unwrap();
    events
        .into_iter()
        .filter(|e| e.request_id.starts_with("token:"))
        .collect()
}

async fn a_listed_user_signs_in_through_the_identity_provider(backend: Backend) {
    let idp = FakeIdp::start().await;
    let app = TestApp::spawn_with(backend, &idp.config("groups_claim = \"groups\"")).await;
    let (status, login) = page(&app, "", "/login?next=/run").await;
    assert_eq!(status, StatusCode::OK);
    assert!(login.contains("Sign in with Test IdP"), "{login}");
    assert!(login.contains("/login/oidc?next=%2Frun"), "{login}");

    // Bob is dba-team in the config; the provider also says security.
    idp.sign_in_next(person("bob@x.com", &["security"], None));
    let (session, to) = sign_on(&app, "/run").await.expect("signed in");
    assert_eq!(to, "/run");
    let asked = idp.authorizations().pop().unwrap();
    assert_eq!(asked["code_challenge_method"], "S256");
    assert!(
        asked["scope"].split(' ').any(|s| s == "openid"),
        "{asked:?}"
    );
    assert!(asked["nonce"].len() >= 16, "{asked:?}");

    let (status, run) = page(&app, &session, "/run").await;
    assert_eq!(status, StatusCode::OK);
    assert!(run.contains("bob@x.com"), "{run}");
    let me = app
        .hoop
        .signed_in(session.strip_prefix("hoop_session=").unwrap())
        .await
        .unwrap()
        .expect("an open session");
    assert_eq!(
        me.user.groups,
        BTreeSet::from(["dba-team".to_string(), "security".to_string()])
    );

    // The sign-on made a token that expires (12 h by default), audited as Bob's on the web.
    let made = token_events(&app).await;
    let made = made.last().expect("a token_created event");
    assert_eq!(made.kind, "token_created");
    assert_eq!(
        (made.actor.as_str(), made.channel.as_str()),
        ("bob@x.com", "web")
    );
    assert!(made.detail["expires_at"].is_string(), "{:?}", made.detail);
    assert_eq!(
        made.detail["claimed_groups"],
        serde_json::json!(["security"])
    );

    // Bob approves for both of his groups now.
    let id = app.held("DELETE FROM sessions WHERE expired").await;
    let (_, request) = page(&app, &session, &format!("/access-requests/{id}")).await;
    assert!(request.contains("Approve as dba-team"), "{request}");
    assert!(request.contains("Approve as security"), "{request}");
}

async fn someone_not_in_the_config_signs_in_only_when_allowed(backend: Backend) {
    let idp = FakeIdp::start().await;
    let app = TestApp::spawn_with(backend, &idp.config("groups_claim = \"groups\"")).await;
    idp.sign_in_next(person("erin@x.com", &["security"], None));
    let (status, refusal) = sign_on(&app, "/access-requests").await.unwrap_err();
    assert_eq!(status, StatusCode::FORBIDDEN, "{refusal}");
    assert!(refusal.contains("erin@x.com"), "{refusal}");
    assert!(
        token_events(&app).await.is_empty(),
        "no token for someone refused"
    );

    let idp = FakeIdp::start().await;
    let app = TestApp::spawn_with(
        backend,
        &idp.config("groups_claim = \"groups\"\nallow_unlisted_users = true"),
    )
    .await;
    let id = app
        .held("UPDATE users SET status='inactive' WHERE id=7")
        .await;
    idp.sign_in_next(person("erin@x.com", &["security"], None));
    let (session, _) = sign_on(&app, "/access-requests").await.expect("signed in");
    let (_, html) = page(&app, &session, &format!("/access-requests/{id}")).await;
    assert!(html.contains("Approve as security"), "{html}");
    assert!(!html.contains("Approve as dba-team"), "{html}");
    let approved = post(
        &app,
        &session,
        &format!("/access-requests/{id}/approve"),
        &[("csrf", &csrf_in(&html)), ("group", "security")],
    )
    .await;
    assert_eq!(approved.status(), StatusCode::SEE_OTHER);
    let request = app
        .get("alice@x.com", &format!("/api/v1/access-requests/{id}"))
        .await;
    let security = request.body["approval_groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group"] == "security")
        .unwrap()
        .clone();
    assert_eq!(security["decided_by"], "erin@x.com", "{security}");
    assert_eq!(security["via"], "web");

    // Someone unlisted whose provider names no group is signed in, and may approve nothing.
    idp.sign_in_next(person("frank@x.com", &[], None));
    let (session, _) = sign_on(&app, "/access-requests").await.expect("signed in");
    let (_, html) = page(&app, &session, &format!("/access-requests/{id}")).await;
    assert!(!html.contains("Approve as"), "{html}");
}

async fn a_flawed_id_token_signs_nobody_in(backend: Backend) {
    let idp = FakeIdp::start().await;
    let app = TestApp::spawn_with(backend, &idp.config("")).await;
    for flaw in [
        Flaw::WrongNonce,
        Flaw::WrongAudience,
        Flaw::Expired,
        Flaw::ForeignKey,
        Flaw::UnverifiedEmail,
    ] {
        idp.sign_in_next(person("bob@x.com", &[], Some(flaw)));
        let (status, page) = sign_on(&app, "/access-requests")
            .await
            .expect_err(&format!("{flaw:?} must not sign in"));
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{flaw:?}: {page}");
        assert!(page.contains("Sign in"), "{flaw:?}: {page}");
    }
    assert!(token_events(&app).await.is_empty(), "no token was made");
    // The same provider, unflawed, signs Bob in: the refusals were the flaws'.
    idp.sign_in_next(person("bob@x.com", &[], None));
    sign_on(&app, "/access-requests").await.expect("signed in");
}

async fn a_sign_on_is_finished_once_and_only_in_the_browser_that_began_it(backend: Backend) {
    let idp = FakeIdp::start().await;
    let app = TestApp::spawn_with(backend, &idp.config("")).await;
    // An attacker's own sign-on, finished in the victim's browser (login CSRF): refused.
    let (callback, _attackers_cookie) = to_the_provider_and_back(&app, "/").await;
    let victim = browser().get(&callback).send().await.unwrap();
    assert_eq!(victim.status(), StatusCode::UNAUTHORIZED);
    assert!(set_cookie(&victim, "hoop_session").is_none());

    // Finished where it began, once; the same return again signs nobody in.
    let (callback, state_cookie) = to_the_provider_and_back(&app, "/").await;
    let first = browser()
        .get(&callback)
        .header("cookie", &state_cookie)
        .send()
        .await
        .unwrap();
    assert!(set_cookie(&first, "hoop_session").is_some());
    let again = browser()
        .get(&callback)
        .header("cookie", &state_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED);
    assert!(set_cookie(&again, "hoop_session").is_none());
    assert_eq!(token_events(&app).await.len(), 1);

    // The provider saying no is shown, as text.
    let said = browser()
        .get(app.url(
            "/login/oidc/callback?error=access_denied&error_description=%3Cb%3Enope%3C%2Fb%3E",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(said.status(), StatusCode::UNAUTHORIZED);
    let text = said.text().await.unwrap();
    assert!(text.contains("&lt;b&gt;nope"), "{text}");
}

async fn an_expired_token_is_told_to_log_in_again(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app
        .hoop
        .issue_token(
            &hoopbot::store::TokenSubject::User("bob@x.com".parse().unwrap()),
            Some(std::time::Duration::from_secs(60 * 60)),
            &hoopbot::token::Operator::system(),
        )
        .await
        .unwrap();
    let me = |token: String| {
        let app = &app;
        async move {
            app.client
                .get(app.url("/api/v1/me"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(me(token.clone()).await.status(), StatusCode::OK);
    let session = browser()
        .post(app.url("/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(
            serde_urlencoded::to_string([("token", token.as_str()), ("next", "/access-requests")])
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let session = set_cookie(&session, "hoop_session").expect("signed in");
    assert_eq!(
        page(&app, &session, "/access-requests").await.0,
        StatusCode::OK
    );

    app.advance(std::time::Duration::from_secs(60 * 60 + 1));
    // The token cache may hold it for a moment; expiry is checked on every use all the same.
    let reply = me(token.clone()).await;
    assert_eq!(reply.status(), StatusCode::UNAUTHORIZED);
    let body: serde_json::Value = reply.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("expired"), "{message}");
    assert!(message.contains("hoop login"), "{message}");
    // Its web session ends with it.
    let (status, _) = page(&app, &session, "/access-requests").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    // And it signs in no new one.
    let again = browser()
        .post(app.url("/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(
            serde_urlencoded::to_string([("token", token.as_str()), ("next", "/access-requests")])
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED);
    assert!(again.text().await.unwrap().contains("expired"));
}

async fn hoop_login_signs_in_through_the_browser(backend: Backend) {
    use tokio::io::AsyncBufReadExt;
    let idp = FakeIdp::start().await;
    let app = TestApp::spawn_with(backend, &idp.config("token_ttl = \"8h\"")).await;
    let home = tempfile::tempdir().unwrap();
    let mut login = tokio::process::Command::new(env!("CARGO_BIN_EXE_hoop"))
        .args(["login", "--url", &app.url(""), "--no-browser"])
        .env("HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path())
        .env_remove("HOOP_URL")
        .env_remove("HOOP_TOKEN")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut said = tokio::io::BufReader::new(login.stderr.take().unwrap()).lines();
    let sign_in_page = loop {
        let line = said
            .next_line()
            .await
            .unwrap()
            .expect("hoop login printed the page");
        if let Some(at) = line.find("http://") {
            break line[at..].trim().to_string();
        }
    };
    assert!(sign_in_page.contains("/login/cli?port="), "{sign_in_page}");

    // The browser, signed out: to the sign-in page and back, by single sign-on.
    let first = browser().get(&sign_in_page).send().await.unwrap();
    assert_eq!(first.status(), StatusCode::SEE_OTHER);
    let to_login = first.headers()[LOCATION].to_str().unwrap().to_string();
    assert!(to_login.starts_with("/login?next="), "{to_login}");
    let next: std::collections::HashMap<String, String> =
        serde_urlencoded::from_str(to_login.split_once('?').unwrap().1).unwrap();
    idp.sign_in_next(person("bob@x.com", &[], None));
    let (session, back) = sign_on(&app, &next["next"]).await.expect("signed in");
    assert!(back.starts_with("/login/cli?"), "{back}");

    let asked = browser()
        .get(app.url(&back))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    let csp = asked.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    let port = sign_in_page
        .split("port=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .to_string();
    assert!(
        csp.contains(&format!("form-action 'self' http://127.0.0.1:{port}")),
        "{csp}"
    );
    let html = asked.text().await.unwrap();
    assert!(html.contains("bob@x.com") && html.contains("8h"), "{html}");
    let field = |name: &str| {
        let at = html.find(&format!("name=\"{name}\" value=\"")).unwrap() + name.len() + 15;
        html[at..].split('"').next().unwrap().to_string()
    };
    let form = [
        ("csrf", csrf_in(&html)),
        ("port", field("port")),
        ("challenge", field("challenge")),
        ("state", field("state")),
    ];
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // Without the session's CSRF token nothing is granted.
    let mut forged = form.clone();
    forged[0].1 = "0000";
    let refused = post(&app, &session, "/login/cli", &forged).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);

    let allowed = post(&app, &session, "/login/cli", &form).await;
    assert_eq!(allowed.status(), StatusCode::SEE_OTHER);
    let to_cli = allowed.headers()[LOCATION].to_str().unwrap().to_string();
    assert!(
        to_cli.starts_with(&format!("http://127.0.0.1:{port}/callback?code=")),
        "{to_cli}"
    );
    let landed = browser().get(&to_cli).send().await.unwrap();
    assert!(landed.text().await.unwrap().contains("Signed in"));

    let out = tokio::time::timeout(std::time::Duration::from_secs(30), login.wait_with_output())
        .await
        .expect("hoop login ends")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("as bob@x.com until"), "{stdout}");
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(home.path().join("hoop/credentials.json")).unwrap())
            .unwrap();
    let token = saved["token"].as_str().unwrap();
    let me = app
        .client
        .get(app.url("/api/v1/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::OK);
    assert_eq!(
        me.json::<serde_json::Value>().await.unwrap()["email"],
        "bob@x.com"
    );
    // The command line's token, audited as Bob's from the CLI, lasts `token_ttl`.
    let made = token_events(&app).await;
    let made = made.last().unwrap();
    assert_eq!(
        (made.actor.as_str(), made.channel.as_str()),
        ("bob@x.com", "cli")
    );
    let lasts = hoopbot::domain::Millis::from(8 * 60 * 60 * 1000);
    let expires_at =
        chrono::DateTime::parse_from_rfc3339(made.detail["expires_at"].as_str().unwrap())
            .unwrap()
            .timestamp_millis();
    assert!(
        (expires_at - made.at - lasts).abs() < 1000,
        "{:?}",
        made.detail
    );

    // The code was spent by the command line: nobody redeems it again.
    let code = to_cli
        .split("code=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    let again = app
        .client
        .post(app.url("/api/v1/login/token"))
        .json(&serde_json::json!({ "code": code, "verifier": "anything" }))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED);
}

async fn a_login_code_is_redeemed_once_and_only_with_its_secret(backend: Backend) {
    use base64::Engine;
    use sha2::Digest;
    let app = TestApp::spawn(backend).await;
    let session = browser()
        .post(app.url("/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(
            serde_urlencoded::to_string([("token", app.token("bob@x.com")), ("next", "/")])
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let cookie = set_cookie(&session, "hoop_session").unwrap();
    let me = app
        .hoop
        .signed_in(cookie.strip_prefix("hoop_session=").unwrap())
        .await
        .unwrap()
        .unwrap();
    let verifier = "the-secret-only-hoop-login-knows-0123456789";
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()));
    let redeem = |code: String, verifier: &'static str| {
        let app = &app;
        async move {
            app.client
                .post(app.url("/api/v1/login/token"))
                .json(&serde_json::json!({ "code": code, "verifier": verifier }))
                .send()
                .await
                .unwrap()
        }
    };

    // A wrong secret: refused, and the code is spent.
    let code = app.hoop.grant_cli(&me, &challenge).await.unwrap();
    assert_eq!(
        redeem(code.clone(), "a-guess").await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        redeem(code, verifier).await.status(),
        StatusCode::UNAUTHORIZED
    );

    // The right one, once; a token signed in with a token (no single sign-on) lasts 12 h.
    let code = app.hoop.grant_cli(&me, &challenge).await.unwrap();
    let granted = redeem(code.clone(), verifier).await;
    assert_eq!(granted.status(), StatusCode::OK);
    let body: serde_json::Value = granted.json().await.unwrap();
    assert_eq!(body["email"], "bob@x.com");
    assert_eq!(
        redeem(code, verifier).await.status(),
        StatusCode::UNAUTHORIZED
    );

    // A code that lapsed (10 minutes) is refused.
    let code = app.hoop.grant_cli(&me, &challenge).await.unwrap();
    app.advance(std::time::Duration::from_secs(10 * 60 + 1));
    assert_eq!(
        redeem(code, verifier).await.status(),
        StatusCode::UNAUTHORIZED
    );

    // A damaged challenge is refused before anything is kept.
    assert!(app.hoop.grant_cli(&me, "short").await.is_err());
}

async fn a_flood_of_sign_on_starts_is_bounded(backend: Backend) {
    let idp = FakeIdp::start().await;
    let app = TestApp::spawn_with(backend, &idp.config("")).await;
    // As many sign-ons under way as are kept (started by anyone: starting needs no credential).
    crate::helpers::execute_sql(
        &app.db.url,
        "insert into sign_in_attempt (state_sha256, nonce, pkce_verifier, next, expires_at) \
         with recursive n(i) as (select 1 union all select i + 1 from n where i < 10000) \
         select 'flood-' || i, 'n', 'v', '/', 9999999999999 from n"
            .into(),
    )
    .await;
    let refused = browser().get(app.url("/login/oidc")).send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(set_cookie(&refused, "hoop_sign_in").is_none());
    assert!(refused.text().await.unwrap().contains("too many sign-ins"));
    // Once they lapse, sign-ons start again.
    crate::helpers::execute_sql(
        &app.db.url,
        "delete from sign_in_attempt where state_sha256 like 'flood-%'".into(),
    )
    .await;
    idp.sign_in_next(person("bob@x.com", &[], None));
    sign_on(&app, "/").await.expect("signed in");
}
