//! Guessing link codes: wrong codes are counted per user and per address, then refused with 429
//! for the rest of the window (a right code too), and every code refused is in the audit trail.

use std::time::Duration;

use hoopbot::service::{LINK_FAILURE_WINDOW, LINK_FAILURES_PER_SOURCE, LINK_FAILURES_PER_USER};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::fake_slack::{self, Failure, FakeSlack};
use crate::helpers::{Backend, TestApp};
use crate::on_both_backends;

on_both_backends!(
    after_ten_wrong_codes_even_the_right_one_waits_for_the_window,
    a_successful_confirmation_is_not_counted,
    one_address_is_limited_whoever_sends_the_codes,
    subscribe_answers_with_a_code_when_slack_does_not_say_the_email,
);

/// A code the test never issued; well formed, so it is looked up.
const WRONG: &str = "ABCD-EFGH";

/// What `POST /api/v1/chat-links` answered `who` for `code`: status, `Retry-After` in seconds,
/// body.
async fn confirm(app: &TestApp, who: &str, code: &str) -> (StatusCode, Option<u64>, Value) {
    let reply = app
        .client
        .post(app.url("/api/v1/chat-links"))
        .bearer_auth(app.token(who))
        .json(&json!({ "code": code }))
        .send()
        .await
        .unwrap();
    let status = reply.status();
    let retry_after = reply
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    (status, retry_after, reply.json().await.unwrap())
}

/// A fresh code for Slack user `account`, as `/hoop subscribe` would show it.
async fn code_for(app: &TestApp, account: &str) -> String {
    app.hoop.start_link("slack", account).await.unwrap().code
}

/// The `link_code_refused` events under `user:<email>`: (reason, source).
async fn refusals(app: &TestApp, email: &str) -> Vec<(String, String)> {
    let events = app
        .store()
        .await
        .audit_events(Some(&format!("user:{email}")))
        .await
        .unwrap();
    events
        .iter()
        .map(|e| {
            assert_eq!(e.kind, "link_code_refused");
            assert_eq!(e.actor, email);
            (
                e.detail["reason"].as_str().unwrap().to_string(),
                e.detail["source"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

async fn after_ten_wrong_codes_even_the_right_one_waits_for_the_window(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // One of each way to be wrong: expired, used, malformed, unknown.
    let expired = code_for(&app, "U0OLD").await;
    app.advance(Duration::from_secs(10 * 60 + 1));
    let used = code_for(&app, "U0DORA").await;
    assert_eq!(confirm(&app, "dora@x.com", &used).await.0, StatusCode::OK);
    let right = code_for(&app, "U0BOB").await;

    let mut wrong = vec![expired.as_str(), used.as_str(), "<script>"];
    wrong.resize(LINK_FAILURES_PER_USER as usize, WRONG);
    for (n, code) in wrong.iter().enumerate() {
        let (status, retry_after, body) = confirm(&app, "bob@x.com", code).await;
        assert_ne!(status, StatusCode::TOO_MANY_REQUESTS, "wrong code {n}");
        assert!(status.is_client_error(), "{status} {body}");
        assert_eq!(retry_after, None);
    }
    let (status, retry_after, body) = confirm(&app, "bob@x.com", &right).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");
    let retry_after = retry_after.expect("Retry-After");
    assert!(
        (1..=LINK_FAILURE_WINDOW.as_secs()).contains(&retry_after),
        "{retry_after}"
    );

    // Another user, from the same address, is not held up by bob's mistakes.
    assert_eq!(
        confirm(&app, "sam@x.com", WRONG).await.0,
        StatusCode::NOT_FOUND
    );

    // Every code refused is in the trail, with why and from where, and never the code; the
    // confirmation refused for the limit was not looked up, so it is not.
    let reasons = refusals(&app, "bob@x.com").await;
    let mut expected = vec!["expired", "used", "malformed"];
    expected.resize(LINK_FAILURES_PER_USER as usize, "unknown");
    assert_eq!(
        reasons.iter().map(|(r, _)| r.as_str()).collect::<Vec<_>>(),
        expected
    );
    assert!(reasons.iter().all(|(_, source)| source == "127.0.0.1"));
    let trail = serde_json::to_string(
        &app.store()
            .await
            .audit_events(Some("user:bob@x.com"))
            .await
            .unwrap()
            .iter()
            .map(|e| e.detail.clone())
            .collect::<Vec<_>>(),
    )
    .unwrap();
    for code in [&expired, &used, &right, &WRONG.to_string()] {
        assert!(!trail.contains(&code.replace('-', "")) && !trail.contains(code.as_str()));
    }

    // Once the window is over, the right code links.
    app.advance(LINK_FAILURE_WINDOW);
    let (status, _, body) = confirm(&app, "bob@x.com", &right).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["account"], "U0BOB");
}

async fn a_successful_confirmation_is_not_counted(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for _ in 1..LINK_FAILURES_PER_USER {
        assert_eq!(
            confirm(&app, "bob@x.com", WRONG).await.0,
            StatusCode::NOT_FOUND
        );
    }
    let right = code_for(&app, "U0BOB").await;
    assert_eq!(confirm(&app, "bob@x.com", &right).await.0, StatusCode::OK);
    // The success did not use up the last try.
    assert_eq!(
        confirm(&app, "bob@x.com", WRONG).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        confirm(&app, "bob@x.com", WRONG).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Only the failures are in the trail.
    assert_eq!(
        refusals(&app, "bob@x.com").await.len(),
        LINK_FAILURES_PER_USER as usize
    );
}

async fn one_address_is_limited_whoever_sends_the_codes(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let users = ["bob@x.com", "dora@x.com", "sam@x.com", "alice@x.com"];
    let per_user = LINK_FAILURES_PER_USER.min(LINK_FAILURES_PER_SOURCE.div_ceil(3));
    let mut sent = 0;
    for user in users {
        for _ in 0..per_user {
            if sent == LINK_FAILURES_PER_SOURCE {
                break;
            }
            assert_eq!(confirm(&app, user, WRONG).await.0, StatusCode::NOT_FOUND);
            sent += 1;
        }
    }
    assert_eq!(
        sent, LINK_FAILURES_PER_SOURCE,
        "the test's users sent enough"
    );
    // Someone who got no code wrong, from the same address.
    let (status, retry_after, _) = confirm(&app, "eve@x.com", WRONG).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(retry_after.is_some());
}

async fn subscribe_answers_with_a_code_when_slack_does_not_say_the_email(backend: Backend) {
    let slack = FakeSlack::start().await;
    let app = TestApp::spawn_with(backend, &slack.config("link_by_email = true")).await;
    slack.user("U0BOB", "bob@x.com", true);
    slack.fail("users.info", [Failure::Hang]);
    let url = app.url("/slack/commands");
    let reply = fake_slack::send_signed(
        &app.client,
        &url,
        "application/x-www-form-urlencoded",
        fake_slack::command_form("U0BOB", "subscribe"),
    );
    // Generous, for a loaded machine, yet short of the 10 s a hanging call used to take; the
    // bound itself is `EMAIL_LOOKUP_TIME`, tested against Slack's limit where it is defined.
    let reply = tokio::time::timeout(Duration::from_secs(8), reply)
        .await
        .expect("an answer while users.info hangs");
    assert_eq!(reply.status(), StatusCode::OK);
    let answer: Value = reply.json().await.unwrap();
    let text = answer["text"].as_str().unwrap();
    assert!(text.contains("hoop subscribe "), "a code instead: {text}");
    assert_eq!(
        slack.calls_of("users.info").len(),
        1,
        "the email was asked for"
    );
    // The code it gave links as any other.
    let start = text.find("hoop subscribe ").unwrap() + "hoop subscribe ".len();
    let (status, _, body) = confirm(&app, "bob@x.com", &text[start..start + 9]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["approval_groups"], json!(["dba-team"]));
}

/// What a link promises is what it brings: a person in no approval group is told they get the
/// outcomes of their own requests; an approver, the requests of their groups.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_confirmation_says_what_each_person_will_get() {
    let slack = FakeSlack::start().await;
    let app = TestApp::spawn_with(Backend::Sqlite, &slack.config("link_by_email = true")).await;
    slack.user("U0ALICE", "alice@x.com", true);
    slack.user("U0BOB", "bob@x.com", true);
    let answer = |user: &'static str| {
        let app = &app;
        async move {
            let reply = fake_slack::send_signed(
                &app.client,
                &app.url("/slack/commands"),
                "application/x-www-form-urlencoded",
                fake_slack::command_form(user, "subscribe"),
            )
            .await;
            let body: Value = reply.json().await.unwrap();
            body["text"].as_str().unwrap().to_string()
        }
    };
    let alice = answer("U0ALICE").await;
    assert!(alice.contains("Linked to *alice@x.com*"), "{alice}");
    assert!(alice.contains("no approval group"), "{alice}");
    assert!(!alice.contains("request you can approve"), "{alice}");
    let bob = answer("U0BOB").await;
    assert!(bob.contains("each request waiting for dba-team"), "{bob}");

    // Through the API (and so `hoop subscribe`): the groups it brings DMs for.
    let code = code_for(&app, "U0EVE").await;
    let (status, _, body) = confirm(&app, "alice@x.com", &code).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["approval_groups"], json!([]));
}
