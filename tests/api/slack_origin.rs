//! Where a signed request from Slack comes from: it must name the workspace the bot token belongs
//! to (and the configured app), and it is acted on once, whichever replica gets it.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::fake_slack::{self, CHANNEL, SIGNING_SECRET, send_signed};
use hoopbot::service::Signed;

use crate::helpers::{Backend, TestApp};
use crate::on_both_backends;
use crate::slack::{button, channel_card, code_in, link, with_slack};
use crate::webhooks::drain;

on_both_backends!(
    a_slack_that_never_says_its_workspace_still_gets_an_answer_in_time,
    requests_from_another_workspace_or_app_are_refused_and_change_nothing,
    a_replayed_request_is_refused_on_every_replica,
    a_replayed_click_decides_once_and_opens_one_modal,
    a_signature_is_remembered_until_it_could_no_longer_pass,
    the_sweep_forgets_signatures_once_they_could_no_longer_pass,
);

const BOB: &str = "U0BOB";
const FORM: &str = "application/x-www-form-urlencoded";

/// While `auth.test` hangs (from the start on), a request from Slack is not held up past
/// `WORKSPACE_WAIT`: it is refused, in time for Slack to show something, and nothing is done.
async fn a_slack_that_never_says_its_workspace_still_gets_an_answer_in_time(backend: Backend) {
    let slack = fake_slack::FakeSlack::start().await;
    slack.fail(
        "auth.test",
        [fake_slack::Failure::Hang, fake_slack::Failure::Hang],
    );
    let app = TestApp::spawn_with(backend, &slack.config("")).await;
    assert!(hoopbot::slack::WORKSPACE_WAIT < std::time::Duration::from_millis(2500));
    // The web client's own timeout is 10 s: an answer well before it shows the wait was bounded.
    let reply = tokio::time::timeout(
        std::time::Duration::from_secs(6),
        send_signed(
            &app.client,
            &app.url("/slack/commands"),
            FORM,
            fake_slack::command_form(BOB, "subscribe"),
        ),
    )
    .await
    .expect("answered before Slack's API gave up");
    assert_eq!(reply.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body: Value = reply.json().await.unwrap();
    assert_eq!(body["error"]["code"], "internal", "{body}");
    // Nothing else was asked of Slack for it.
    assert!(
        slack.calls().iter().all(|c| c.method == "auth.test"),
        "{:?}",
        slack.calls().iter().map(|c| &c.method).collect::<Vec<_>>()
    );
}

/// A request changed the way `change` says, and how it must be refused: (what, status, change).
type Tampered = (&'static str, StatusCode, fn(&mut Value));

/// Sends `body` to `url` with exactly these headers, as a replayer would.
async fn send_as(
    client: &reqwest::Client,
    url: &str,
    timestamp: &str,
    signature: &str,
    body: &str,
) -> reqwest::Response {
    client
        .post(url)
        .header("content-type", FORM)
        .header("x-slack-request-timestamp", timestamp)
        .header("x-slack-signature", signature)
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

/// How many link codes the server has issued.
async fn link_codes(app: &TestApp) -> i64 {
    use sqlx::Connection;
    let url = &app.db.url;
    let sql = "select count(*) from link_code";
    if url.starts_with("sqlite:") {
        let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap()
    } else {
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap()
    }
}

async fn assert_refused(reply: reqwest::Response, status: StatusCode, what: &str) {
    assert_eq!(reply.status(), status, "{what}");
    let error: Value = reply.json().await.unwrap();
    let code = if status == StatusCode::BAD_REQUEST {
        "invalid_input"
    } else {
        "unauthenticated"
    };
    assert_eq!(error["error"]["code"], code, "{what}: {error}");
}

async fn requests_from_another_workspace_or_app_are_refused_and_change_nothing(backend: Backend) {
    let (slack, app) = with_slack(backend, "").await;
    link(&app, BOB, "bob@x.com").await;
    let id = app.held("DELETE FROM orders").await;
    drain(&app.delivery_worker()).await;
    let card = channel_card(&slack);
    let (action_id, value) = button(&card, "Approve as dba-team");
    let interactions = app.url("/slack/interactions");
    let commands = app.url("/slack/commands");
    let new_click = || fake_slack::click_form(BOB, CHANNEL, &card, &action_id, &value);

    let clicks: [Tampered; 6] = [
        ("another team", StatusCode::UNAUTHORIZED, |p| {
            p["team"]["id"] = json!("T0OTHER")
        }),
        ("no team", StatusCode::BAD_REQUEST, |p| {
            p.as_object_mut().unwrap().remove("team");
        }),
        ("an empty team id", StatusCode::BAD_REQUEST, |p| {
            p["team"]["id"] = json!("")
        }),
        ("another org", StatusCode::UNAUTHORIZED, |p| {
            p["enterprise"] = json!({ "id": "E0OTHER", "name": "Other" })
        }),
        ("another app", StatusCode::UNAUTHORIZED, |p| {
            p["api_app_id"] = json!("A0OTHER")
        }),
        ("no app", StatusCode::BAD_REQUEST, |p| {
            p.as_object_mut().unwrap().remove("api_app_id");
        }),
    ];
    for (what, status, change) in clicks {
        let body = fake_slack::altered(&new_click(), change);
        let reply = send_signed(&app.client, &interactions, FORM, body).await;
        assert_refused(reply, status, what).await;
    }
    // The reject modal's submission, from another team: the request stays pending.
    let view = json!({ "type": "modal", "callback_id": "reject_reason",
                       "private_metadata": json!({ "request_id": id }).to_string(),
                       "title": { "type": "plain_text", "text": "Reject request" }, "blocks": [] });
    let submission = fake_slack::altered(&fake_slack::reason_form(BOB, &view, "no"), |p| {
        p["team"]["id"] = json!("T0OTHER")
    });
    let reply = send_signed(&app.client, &interactions, FORM, submission).await;
    assert_refused(reply, StatusCode::UNAUTHORIZED, "a modal from another team").await;
    let request = app.request(&id).await;
    assert_eq!(request["status"], "pending");
    assert_eq!(request["version"], 1, "nothing was decided");

    // Slash commands: `/hoop subscribe` from another team, or none, issues no code.
    let before = link_codes(&app).await;
    let subscribe = || fake_slack::command_form("U0NEW", "subscribe");
    let commands_sent: [Tampered; 4] = [
        (
            "a command from another team",
            StatusCode::UNAUTHORIZED,
            |f| f["team_id"] = json!("T0OTHER"),
        ),
        ("a command with no team", StatusCode::BAD_REQUEST, |f| {
            f.as_object_mut().unwrap().remove("team_id");
        }),
        (
            "a command from another org",
            StatusCode::UNAUTHORIZED,
            |f| f["enterprise_id"] = json!("E0OTHER"),
        ),
        ("a command for another app", StatusCode::UNAUTHORIZED, |f| {
            f["api_app_id"] = json!("A0OTHER")
        }),
    ];
    for (what, status, change) in commands_sent {
        let body = fake_slack::altered(&subscribe(), change);
        let reply = send_signed(&app.client, &commands, FORM, body).await;
        assert_refused(reply, status, what).await;
    }
    assert_eq!(link_codes(&app).await, before, "no code was issued");
    assert_eq!(
        slack.calls_of("auth.test").len(),
        1,
        "the workspace is asked of Slack once"
    );

    // From this workspace and app, the same click and command work.
    let reply = send_signed(&app.client, &interactions, FORM, new_click()).await;
    assert_eq!(reply.status(), StatusCode::OK);
    assert_eq!(
        app.request(&id).await["approval_groups"][0]["decided_by"],
        "bob@x.com"
    );
    let reply = send_signed(&app.client, &commands, FORM, subscribe()).await;
    assert_eq!(reply.status(), StatusCode::OK);
    assert_eq!(link_codes(&app).await, before + 1);
}

async fn a_replayed_request_is_refused_on_every_replica(backend: Backend) {
    let (_slack, app) = with_slack(backend, "").await;
    let replica = app.replica().await;
    let commands = app.url("/slack/commands");
    let timestamp = chrono::Utc::now().timestamp().to_string();
    let body = fake_slack::command_form(BOB, "subscribe");
    let signature = hoopbot::slack::signature::sign(SIGNING_SECRET, &timestamp, body.as_bytes());

    let reply = send_as(&app.client, &commands, &timestamp, &signature, &body).await;
    assert_eq!(reply.status(), StatusCode::OK);
    let answer: Value = reply.json().await.unwrap();
    let code = code_in(answer["text"].as_str().unwrap());
    assert_eq!(link_codes(&app).await, 1);

    // The captured request, sent again to the same server and to another replica.
    let again = send_as(&app.client, &commands, &timestamp, &signature, &body).await;
    assert_refused(again, StatusCode::UNAUTHORIZED, "the replay").await;
    let elsewhere = send_as(
        &app.client,
        &replica.url("/slack/commands"),
        &timestamp,
        &signature,
        &body,
    )
    .await;
    assert_refused(
        elsewhere,
        StatusCode::UNAUTHORIZED,
        "the replay on a replica",
    )
    .await;
    assert_eq!(link_codes(&app).await, 1, "no second code was issued");

    // Another request in the same second is a request of its own, on either replica.
    for url in [commands.clone(), replica.url("/slack/commands")] {
        let other = fake_slack::command_form(BOB, "help");
        let signature =
            hoopbot::slack::signature::sign(SIGNING_SECRET, &timestamp, other.as_bytes());
        let reply = send_as(&app.client, &url, &timestamp, &signature, &other).await;
        assert_eq!(reply.status(), StatusCode::OK, "{url}");
    }
    // The first request's code still links the account it was shown to.
    let linked = app
        .post(
            "bob@x.com",
            "/api/v1/chat-links",
            Some(json!({ "code": code })),
        )
        .await;
    assert_eq!(linked.status, StatusCode::OK, "{:?}", linked.body);
}

/// The store's record of signatures: the first sighting is new, the next is not, also when both
/// share one group commit; forgetting drops what was seen before its cut-off (so the table stays
/// small), and only that, at most as many as asked.
async fn a_signature_is_remembered_until_it_could_no_longer_pass(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let store = app.store().await;
    assert!(store.first_sighting("old", 1_000).await.unwrap());
    assert!(store.first_sighting("older", 500).await.unwrap());
    assert!(store.first_sighting("recent", 5_000).await.unwrap());
    assert!(!store.first_sighting("old", 5_000).await.unwrap());
    // Sent at once, the same signature many times: the writer takes them into as few groups as
    // it can, and exactly one is new.
    let at_once =
        futures_util::future::join_all((0..8).map(|_| store.first_sighting("burst", 6_000)));
    let new = at_once
        .await
        .into_iter()
        .map(Result::unwrap)
        .filter(|new| *new);
    assert_eq!(new.count(), 1);

    // Forgetting what was seen before 2 s, one at a time: "old" and "older", not "recent".
    assert_eq!(store.forget_signatures(2_000, 1).await.unwrap(), 1);
    assert_eq!(store.forget_signatures(2_000, 10).await.unwrap(), 1);
    assert_eq!(store.forget_signatures(2_000, 10).await.unwrap(), 0);
    assert!(store.first_sighting("old", 10_000).await.unwrap());
    assert!(store.first_sighting("older", 10_000).await.unwrap());
    assert!(!store.first_sighting("recent", 10_000).await.unwrap());
}

/// The sweeper forgets a signature only once it could no longer pass anywhere: 10 minutes of
/// Slack's window and 5 of clock margin. Before that, a replay is still caught after a sweep.
async fn the_sweep_forgets_signatures_once_they_could_no_longer_pass(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    assert!(
        app.hoop
            .first_sighting(&Signed::new("v0=abc"))
            .await
            .unwrap()
    );

    app.advance(Duration::from_secs(14 * 60));
    app.hoop.sweep().await.unwrap();
    assert!(
        !app.hoop
            .first_sighting(&Signed::new("v0=abc"))
            .await
            .unwrap()
    );

    // 15 min and 1 s after its first sighting (the second, at 14 min, was not recorded).
    app.advance(Duration::from_secs(60 + 1));
    app.hoop.sweep().await.unwrap();
    assert!(
        app.hoop
            .first_sighting(&Signed::new("v0=abc"))
            .await
            .unwrap()
    );
}

/// A click's signature is recorded in its decision's own write: the same signed click sent six
/// times at once, to two replicas, decides once and the other five are refused; a replayed
/// Reject click opens the modal once.
async fn a_replayed_click_decides_once_and_opens_one_modal(backend: Backend) {
    let (slack, app) = with_slack(backend, "").await;
    link(&app, BOB, "bob@x.com").await;
    let id = app.held("DELETE FROM orders WHERE id = 1").await;
    drain(&app.delivery_worker()).await;
    let card = channel_card(&slack);
    let replica = app.replica().await;
    let timestamp = chrono::Utc::now().timestamp().to_string();
    let signed = |text: &str| {
        let (action_id, value) = button(&card, text);
        let body = fake_slack::click_form(BOB, CHANNEL, &card, &action_id, &value);
        let signature =
            hoopbot::slack::signature::sign(SIGNING_SECRET, &timestamp, body.as_bytes());
        (body, signature)
    };

    let (body, signature) = signed("Approve as dba-team");
    let urls = [
        app.url("/slack/interactions"),
        replica.url("/slack/interactions"),
    ];
    let sends = (0..6).map(|i| send_as(&app.client, &urls[i % 2], &timestamp, &signature, &body));
    let statuses: Vec<StatusCode> = futures_util::future::join_all(sends)
        .await
        .iter()
        .map(|reply| reply.status())
        .collect();
    let accepted = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    assert_eq!((accepted, refused), (1, 5), "{statuses:?}");
    let request = app
        .get("alice@x.com", &format!("/api/v1/access-requests/{id}"))
        .await;
    assert_eq!(request.body["version"], 2);
    assert_eq!(
        request.body["approval_groups"][0]["decided_by"],
        "bob@x.com"
    );
    let approvals = app.audit_kinds(&id).await;
    assert_eq!(
        approvals.iter().filter(|k| *k == "group_approved").count(),
        1
    );

    let (body, signature) = signed("Reject");
    let first = send_as(&app.client, &urls[0], &timestamp, &signature, &body).await;
    assert_eq!(first.status(), StatusCode::OK);
    let again = send_as(&app.client, &urls[1], &timestamp, &signature, &body).await;
    assert_refused(again, StatusCode::UNAUTHORIZED, "the replayed Reject").await;
    crate::slack::until_calls(&slack, "views.open", 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(slack.calls_of("views.open").len(), 1);
}
