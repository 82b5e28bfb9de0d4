//! Slack end to end: a fake Slack Web API on loopback, signed requests shaped like Slack's, and
//! the delivery worker stepped by the test. Cards are read back from what the fake received.

use std::time::Duration;

use hoopbot::delivery::Step;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::fake_slack::{self, CHANNEL, Failure, FakeSlack, send_signed};
use crate::helpers::{Backend, TestApp, eventually, execute_sql};
use crate::on_both_backends;
use crate::webhooks::drain;

on_both_backends!(
    a_held_command_is_posted_as_a_card_with_the_exact_command,
    two_approvers_click_and_every_copy_of_the_card_follows,
    a_rejection_through_the_modal_reaches_the_requester_with_its_reason,
    refused_and_repeated_clicks_say_why_and_change_nothing,
    an_expired_request_updates_its_card,
    slack_errors_and_rate_limits_are_retried_without_a_second_card,
    another_instance_updates_a_card_the_first_posted,
    a_code_links_only_when_its_owner_confirms_it_and_only_once,
    a_verified_slack_email_links_at_once_when_allowed,
    a_copy_that_cannot_be_posted_is_given_up_and_the_others_still_go,
    an_older_state_never_overwrites_a_newer_card,
    a_member_of_two_groups_who_approved_one_is_offered_the_other_nowhere,
    a_snapshot_that_cannot_be_read_is_given_up_at_once,
);

const BOB: &str = "U0BOB";
const SAM: &str = "U0SAM";
const ALICE: &str = "U0ALICE";
const EVE: &str = "U0EVE";
/// Bo is in both approval groups (see [`BOTH_GROUPS`]).
const BO: &str = "U0BO";
const BOTH_GROUPS: &str =
    "[[users]]\nemail = \"bo@x.com\"\ngroups = [\"dba-team\", \"security\"]\n";

/// A server with `[slack]` pointing at a fresh fake.
pub(crate) async fn with_slack(backend: Backend, extra: &str) -> (FakeSlack, TestApp) {
    let slack = FakeSlack::start().await;
    let app = TestApp::spawn_with(backend, &slack.config(extra)).await;
    (slack, app)
}

/// Sends `/hoop <text>` as Slack user `user`; returns the ephemeral answer's text.
pub(crate) async fn slash(app: &TestApp, user: &str, text: &str) -> String {
    let reply = send_signed(
        &app.client,
        &app.url("/slack/commands"),
        "application/x-www-form-urlencoded",
        fake_slack::command_form(user, text),
    )
    .await;
    assert_eq!(reply.status(), StatusCode::OK);
    let body: Value = reply.json().await.unwrap();
    assert_eq!(body["response_type"], "ephemeral");
    body["text"].as_str().unwrap().to_string()
}

/// Links Slack user `user` to `email` the way a person does: `/hoop subscribe` in Slack, then the
/// code confirmed with their own API token.
pub(crate) async fn link(app: &TestApp, user: &str, email: &str) {
    let answer = slash(app, user, "subscribe").await;
    let code = code_in(&answer);
    let reply = app
        .post(email, "/api/v1/chat-links", Some(json!({ "code": code })))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.body["account"], user);
}

/// The code in `/hoop subscribe`'s answer (`hoop subscribe ABCD-EFGH`).
pub(crate) fn code_in(answer: &str) -> String {
    let start = answer
        .find("hoop subscribe ")
        .expect("a code in the answer")
        + "hoop subscribe ".len();
    answer[start..start + 9].to_string()
}

/// The text of every `rich_text_preformatted` element in `blocks`, joined.
fn preformatted(blocks: &Value) -> String {
    let mut out = String::new();
    for block in blocks.as_array().into_iter().flatten() {
        for element in block["elements"].as_array().into_iter().flatten() {
            if element["type"] == "rich_text_preformatted" {
                for text in element["elements"].as_array().into_iter().flatten() {
                    out.push_str(text["text"].as_str().unwrap_or_default());
                }
            }
        }
    }
    out
}

/// Every button in `blocks`: (action_id, value, text).
fn buttons(blocks: &Value) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for block in blocks.as_array().into_iter().flatten() {
        for element in block["elements"].as_array().into_iter().flatten() {
            if element["type"] == "button" {
                out.push((
                    element["action_id"].as_str().unwrap().to_string(),
                    element["value"].as_str().unwrap_or_default().to_string(),
                    element["text"]["text"].as_str().unwrap().to_string(),
                ));
            }
        }
    }
    out
}

/// The button whose text is `text` on `card`: (action_id, value).
pub(crate) fn button(card: &Value, text: &str) -> (String, String) {
    let found = buttons(&card["blocks"]);
    found
        .iter()
        .find(|(_, _, t)| t == text)
        .map(|(a, v, _)| (a.clone(), v.clone()))
        .unwrap_or_else(|| panic!("no button {text:?} in {found:?}"))
}

/// All the visible text of a message (its blocks as JSON), for "does it say …" checks.
fn said(message: &Value) -> String {
    message["blocks"].to_string()
}

pub(crate) async fn click(
    app: &TestApp,
    user: &str,
    card: &Value,
    text: &str,
) -> reqwest::Response {
    let (action_id, value) = button(card, text);
    send_signed(
        &app.client,
        &app.url("/slack/interactions"),
        "application/x-www-form-urlencoded",
        fake_slack::click_form(user, CHANNEL, card, &action_id, &value),
    )
    .await
}

/// Waits for the fake to have received `n` calls of `method` (replies sent after the ack).
pub(crate) async fn until_calls(
    slack: &FakeSlack,
    method: &str,
    n: usize,
) -> Vec<fake_slack::Call> {
    eventually(Duration::from_secs(10), || async {
        let calls = slack.calls_of(method);
        if calls.len() >= n {
            Ok(calls)
        } else {
            Err(format!("expected {n} calls of {method}, got {calls:?}"))
        }
    })
    .await
}

/// The card posted to the channel, as last posted or updated.
pub(crate) fn channel_card(slack: &FakeSlack) -> Value {
    slack
        .calls()
        .into_iter()
        .rfind(|c| {
            matches!(c.method.as_str(), "chat.postMessage" | "chat.update")
                && c.body["channel"] == CHANNEL
        })
        .expect("a card in the channel")
        .body
}

async fn a_held_command_is_posted_as_a_card_with_the_exact_command(backend: Backend) {
    let (slack, app) = with_slack(backend, "").await;
    link(&app, BOB, "bob@x.com").await;
    link(&app, ALICE, "alice@x.com").await;
    let command = "UPDATE users SET role='admin\u{200b}' WHERE id=1; -- ``` <!channel> <@U123> *bold* <https://x|Approve> &lt;";
    let id = app.held(command).await;
    assert_eq!(drain(&app.delivery_worker()).await, vec![Step::Delivered]);

    let posts = slack.calls_of("chat.postMessage");
    let card = &posts
        .iter()
        .find(|c| c.body["channel"] == CHANNEL)
        .expect("a channel card")
        .body;
    assert_eq!(
        slack.calls()[0].authorization.as_deref(),
        Some(format!("Bearer {}", fake_slack::BOT_TOKEN).as_str())
    );
    // The exact command, with the invisible character made visible and nothing else touched.
    assert_eq!(
        preformatted(&card["blocks"]),
        command.replace('\u{200b}', "\\u{200b}")
    );
    let text = said(card);
    assert!(text.contains("invisible character"), "{text}");
    assert!(text.contains(&id), "the card names the request: {text}");
    assert!(
        text.contains(&format!("http://hoop.test/access-requests/{id}")),
        "{text}"
    );
    assert!(
        !card["text"].as_str().unwrap().contains("<!channel>"),
        "the notification text never holds the command"
    );
    // One approve button per pending group, and Reject.
    let all: Vec<String> = buttons(&card["blocks"]).into_iter().map(|b| b.2).collect();
    assert_eq!(
        all,
        ["Approve as dba-team", "Approve as security", "Reject"]
    );
    // Bob (dba-team, linked) gets a DM copy with his own group only; Alice, the requester, none.
    let dm = posts
        .iter()
        .find(|c| c.body["channel"] == format!("D{BOB}"))
        .unwrap_or_else(|| {
            panic!(
                "a DM to bob: {:?}",
                slack
                    .calls()
                    .iter()
                    .map(|c| (c.method.clone(), c.body["channel"].clone()))
                    .collect::<Vec<_>>()
            )
        });
    let mine: Vec<String> = buttons(&dm.body["blocks"])
        .into_iter()
        .map(|b| b.2)
        .collect();
    assert_eq!(mine, ["Approve as dba-team", "Reject"]);
    assert!(
        posts
            .iter()
            .all(|c| c.body["channel"] != format!("D{ALICE}"))
    );
    assert_eq!(posts.len(), 2);
    // Where the card went is in the request's own JSON: the delivery, and each copy.
    let request = app.request(&id).await;
    let deliveries = request["deliveries"].as_array().unwrap();
    assert!(
        deliveries
            .iter()
            .any(|d| d["kind"] == "slack" && d["state"] == "delivered"),
        "{deliveries:?}"
    );
    let copies: Vec<(&str, &str)> = request["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["copy"].as_str().unwrap(), m["channel"].as_str().unwrap()))
        .collect();
    let dm = format!("D{BOB}");
    assert_eq!(
        copies,
        [
            (format!("channel:{CHANNEL}").as_str(), CHANNEL),
            (format!("dm:{BOB}").as_str(), dm.as_str())
        ]
    );
}

async fn two_approvers_click_and_every_copy_of_the_card_follows(backend: Backend) {
    let (slack, app) = with_slack(backend, "").await;
    link(&app, BOB, "bob@x.com").await;
    link(&app, SAM, "sam@x.com").await;
    link(&app, ALICE, "alice@x.com").await;
    let id = app.held("DELETE FROM sessions").await;
    let worker = app.delivery_worker();
    drain(&worker).await;
    let card = channel_card(&slack);

    let reply = click(&app, BOB, &card, "Approve as dba-team").await;
    assert_eq!(reply.status(), StatusCode::OK);
    let request = app.request(&id).await;
    assert_eq!(request["approval_groups"][0]["decided_by"], "bob@x.com");
    assert_eq!(request["approval_groups"][0]["via"], "slack");
    assert_eq!(request["status"], "pending");
    drain(&worker).await;
    // The channel card and both DMs (bob's and sam's) now show bob's approval.
    let updates = slack.calls_of("chat.update");
    let channels: Vec<&str> = updates
        .iter()
        .map(|c| c.body["channel"].as_str().unwrap())
        .collect();
    assert_eq!(updates.len(), 3, "{channels:?}");
    for update in &updates {
        assert!(said(&update.body).contains("bob@x.com"), "{}", update.body);
    }
    let card = channel_card(&slack);
    let left: Vec<String> = buttons(&card["blocks"]).into_iter().map(|b| b.2).collect();
    assert_eq!(left, ["Approve as security", "Reject"]);

    let reply = click(&app, SAM, &card, "Approve as security").await;
    assert_eq!(reply.status(), StatusCode::OK);
    assert_eq!(app.request(&id).await["status"], "approved");
    drain(&worker).await;
    let card = channel_card(&slack);
    assert!(
        buttons(&card["blocks"]).is_empty(),
        "no decision buttons once decided"
    );
    assert!(said(&card).contains("Approved"), "{card}");
    // Every copy was updated again, and the requester heard the outcome.
    assert_eq!(slack.calls_of("chat.update").len(), 6);
    let outcome = slack
        .calls_of("chat.postMessage")
        .into_iter()
        .find(|c| c.body["channel"] == format!("D{ALICE}"))
        .expect("the requester's outcome DM");
    assert!(
        outcome.body.to_string().to_lowercase().contains("approved"),
        "{}",
        outcome.body
    );
}

async fn a_rejection_through_the_modal_reaches_the_requester_with_its_reason(backend: Backend) {
    let (slack, app) = with_slack(backend, "").await;
    link(&app, BOB, "bob@x.com").await;
    link(&app, ALICE, "alice@x.com").await;
    let id = app.held("DROP TABLE users").await;
    let worker = app.delivery_worker();
    drain(&worker).await;
    let card = channel_card(&slack);

    let reply = click(&app, BOB, &card, "Reject").await;
    assert_eq!(reply.status(), StatusCode::OK);
    let opened = until_calls(&slack, "views.open", 1).await;
    assert!(
        opened[0].body["trigger_id"]
            .as_str()
            .unwrap()
            .ends_with(BOB)
    );
    let view = &opened[0].body["view"];
    assert_eq!(view["callback_id"], "reject_reason");
    assert_eq!(
        app.request(&id).await["status"],
        "pending",
        "opening the modal decides nothing"
    );

    let reason = "not during the freeze <!here> & *no*";
    let reply = send_signed(
        &app.client,
        &app.url("/slack/interactions"),
        "application/x-www-form-urlencoded",
        fake_slack::reason_form(BOB, view, reason),
    )
    .await;
    assert_eq!(reply.status(), StatusCode::OK);
    let answer: Value = reply.json().await.unwrap();
    assert_eq!(answer["response_action"], "clear");
    let request = app.request(&id).await;
    assert_eq!(request["status"], "rejected");
    assert_eq!(request["rejection"]["by"], "bob@x.com");
    assert_eq!(request["rejection"]["reason"], reason);
    assert_eq!(request["rejection"]["via"], "slack");

    drain(&worker).await;
    let card = channel_card(&slack);
    let shown = said(&card);
    assert!(shown.contains("Rejected by bob@x.com"), "{shown}");
    assert!(
        shown.contains("not during the freeze &lt;!here&gt; &amp;"),
        "escaped: {shown}"
    );
    assert!(buttons(&card["blocks"]).is_empty());
    let dm = slack
        .calls_of("chat.postMessage")
        .into_iter()
        .find(|c| c.body["channel"] == format!("D{ALICE}"))
        .expect("the requester's DM");
    let dm = dm.body.to_string();
    assert!(
        dm.contains("bob@x.com") && dm.contains("not during the freeze"),
        "{dm}"
    );
}

async fn refused_and_repeated_clicks_say_why_and_change_nothing(backend: Backend) {
    let (slack, app) = with_slack(backend, "").await;
    link(&app, BOB, "bob@x.com").await;
    link(&app, ALICE, "alice@x.com").await;
    link(&app, EVE, "eve@x.com").await;
    let id = app.held("TRUNCATE audit").await;
    drain(&app.delivery_worker()).await;
    let card = channel_card(&slack);
    let version = app.request(&id).await["version"].clone();

    let refusals = [
        ("U0STRANGER", "Approve as dba-team", "not linked"),
        (ALICE, "Approve as dba-team", "your own request"),
        (EVE, "Approve as dba-team", "not in that approval group"),
        (ALICE, "Reject", "your own request"),
    ];
    for (n, (user, button, why)) in refusals.iter().enumerate() {
        let reply = click(&app, user, &card, button).await;
        assert_eq!(reply.status(), StatusCode::OK);
        let said = until_calls(&slack, "chat.postEphemeral", n + 1).await;
        let last = &said[n].body;
        assert_eq!(last["user"], *user);
        assert!(
            last["text"].as_str().unwrap().contains(why),
            "{user}: {last}"
        );
        assert_eq!(
            app.request(&id).await["version"],
            version,
            "a refused click changes nothing"
        );
    }
    assert!(
        slack.calls_of("views.open").is_empty(),
        "no modal for someone who cannot reject"
    );

    // A double click: one decision, the second told it is already recorded.
    assert_eq!(
        click(&app, BOB, &card, "Approve as dba-team")
            .await
            .status(),
        StatusCode::OK
    );
    let after_first = app.request(&id).await["version"].clone();
    assert_eq!(
        click(&app, BOB, &card, "Approve as dba-team")
            .await
            .status(),
        StatusCode::OK
    );
    let said = until_calls(&slack, "chat.postEphemeral", refusals.len() + 1).await;
    assert!(
        said.last().unwrap().body["text"]
            .as_str()
            .unwrap()
            .contains("already recorded")
    );
    assert_eq!(app.request(&id).await["version"], after_first);
    let kinds = app.audit_kinds(&id).await;
    assert_eq!(
        kinds.iter().filter(|k| *k == "group_approved").count(),
        1,
        "{kinds:?}"
    );
    // Unlinked, eve's clicks stop counting at once, though her link was just used.
    assert!(slash(&app, EVE, "unsubscribe").await.contains("Unlinked"));
    assert_eq!(
        click(&app, EVE, &card, "Approve as security")
            .await
            .status(),
        StatusCode::OK
    );
    let said = until_calls(&slack, "chat.postEphemeral", refusals.len() + 2).await;
    let last = said.last().unwrap().body["text"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(last.contains("not linked"), "{last}");
}

async fn an_expired_request_updates_its_card(backend: Backend) {
    let (slack, app) = with_slack(backend, "").await;
    let id = app.held("VACUUM FULL").await;
    let worker = app.delivery_worker();
    drain(&worker).await;
    app.advance(Duration::from_secs(31 * 60));
    app.hoop.sweep().await.unwrap();
    assert_eq!(app.request(&id).await["status"], "expired");
    assert_eq!(drain(&worker).await, [Step::Delivered]);
    let card = channel_card(&slack);
    assert!(said(&card).contains("Expired"), "{card}");
    assert!(buttons(&card["blocks"]).is_empty());
}

async fn slack_errors_and_rate_limits_are_retried_without_a_second_card(backend: Backend) {
    let (slack, app) = with_slack(backend, "").await;
    slack.fail(
        "chat.postMessage",
        [
            Failure::Status(500),
            Failure::TooManyRequests {
                retry_after_secs: 30,
            },
        ],
    );
    let id = app.held("SELECT 1").await;
    let worker = app.delivery_worker();
    assert_eq!(drain(&worker).await, [Step::Retry]);
    app.advance(Duration::from_secs(5));
    assert_eq!(drain(&worker).await, [Step::Retry], "the 429");
    // Slack said 30 s: nothing is tried before that.
    app.advance(Duration::from_secs(20));
    assert_eq!(drain(&worker).await, []);
    app.advance(Duration::from_secs(15));
    assert_eq!(drain(&worker).await, [Step::Delivered]);
    let posts = slack.calls_of("chat.postMessage");
    assert_eq!(posts.len(), 3, "two failures, then the card");
    let request = app.request(&id).await;
    let delivery = request["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["kind"] == "slack")
        .unwrap()
        .clone();
    assert_eq!(delivery["state"], "delivered");
    assert_eq!(delivery["attempts"], 3);
    // A failed update is retried on the same message, never posted again.
    slack.fail("chat.update", [Failure::Status(503)]);
    app.approve("bob@x.com", &id, None).await;
    assert_eq!(drain(&worker).await, [Step::Retry]);
    app.advance(Duration::from_secs(5));
    assert_eq!(drain(&worker).await, [Step::Delivered]);
    assert_eq!(slack.calls_of("chat.postMessage").len(), 3);
    let updates = slack.calls_of("chat.update");
    assert_eq!(updates.len(), 2);
    assert_eq!(
        updates[1].body["ts"],
        posts[2]
            .body
            .get("ts")
            .cloned()
            .unwrap_or(updates[0].body["ts"].clone())
    );
    // Someone deleted the card in Slack: that copy is left alone, and the delivery is done.
    slack.fail("chat.update", [Failure::Refuse("message_not_found")]);
    app.reject("sam@x.com", &id, "wrong window").await;
    assert_eq!(drain(&worker).await, [Step::Delivered]);
    assert_eq!(slack.calls_of("chat.postMessage").len(), 3);
}

async fn another_instance_updates_a_card_the_first_posted(backend: Backend) {
    let (slack, app) = with_slack(backend, "").await;
    let id = app.held("UPDATE accounts SET locked = true").await;
    drain(&app.delivery_worker()).await;
    let posted = slack.calls_of("chat.postMessage");
    assert_eq!(posted.len(), 1);
    // Another instance on the same database approves and delivers: it edits the same message.
    let other = app.skewed_replica(0).await;
    let bob = other.identity(&"bob@x.com".parse().unwrap()).unwrap();
    other
        .decide(
            &bob,
            &id,
            hoopbot::domain::Decision::Approve { group: None },
            hoopbot::domain::Surface::Api,
        )
        .await
        .unwrap();
    assert_eq!(drain(&other.delivery_worker()).await, [Step::Delivered]);
    let updates = slack.calls_of("chat.update");
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].body["channel"], CHANNEL);
    assert!(said(&updates[0].body).contains("bob@x.com"));
    assert_eq!(
        slack.calls_of("chat.postMessage").len(),
        1,
        "no second card"
    );
}

async fn a_code_links_only_when_its_owner_confirms_it_and_only_once(backend: Backend) {
    let (slack, app) = with_slack(backend, "").await;
    let _ = &slack;
    let answer = slash(&app, BOB, "subscribe").await;
    let code = code_in(&answer);
    // Until confirmed, bob's clicks are not his.
    assert!(slash(&app, BOB, "status").await.contains("not linked"));
    // Only a signed-in user can confirm; whoever confirms is who the account becomes.
    let anonymous = app
        .client
        .post(app.url("/api/v1/chat-links"))
        .json(&json!({ "code": code }))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let garbage = app
        .post(
            "bob@x.com",
            "/api/v1/chat-links",
            Some(json!({ "code": "<script>" })),
        )
        .await;
    assert_eq!(garbage.status, StatusCode::BAD_REQUEST);
    let wrong = app
        .post(
            "bob@x.com",
            "/api/v1/chat-links",
            Some(json!({ "code": "ABCD-EFGH" })),
        )
        .await;
    assert_eq!(wrong.code(), "not_found");
    let ok = app
        .post(
            "bob@x.com",
            "/api/v1/chat-links",
            Some(json!({ "code": code.to_lowercase() })),
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{:?}", ok.body);
    assert_eq!(ok.body["email"], "bob@x.com");
    assert!(
        slash(&app, BOB, "status")
            .await
            .contains("Linked to *bob@x.com*")
    );
    // Reused: refused, even by someone else.
    let again = app
        .post(
            "eve@x.com",
            "/api/v1/chat-links",
            Some(json!({ "code": code })),
        )
        .await;
    assert_eq!(again.code(), "already_decided");
    // Expired after 10 minutes.
    let code = code_in(&slash(&app, SAM, "subscribe").await);
    app.advance(Duration::from_secs(10 * 60 + 1));
    let late = app
        .post(
            "sam@x.com",
            "/api/v1/chat-links",
            Some(json!({ "code": code })),
        )
        .await;
    assert_eq!(late.code(), "expired");
    assert!(slash(&app, SAM, "status").await.contains("not linked"));
    // The link and its removal are in the audit trail.
    assert!(slash(&app, BOB, "unsubscribe").await.contains("Unlinked"));
    let events = app
        .store()
        .await
        .audit_events(Some(&format!("slack:{BOB}")))
        .await
        .unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["account_linked", "account_unlinked"]);
}

async fn a_verified_slack_email_links_at_once_when_allowed(backend: Backend) {
    let (slack, app) = with_slack(backend, "link_by_email = true").await;
    slack.user(BOB, "BOB@x.com", true);
    slack.user(SAM, "sam@x.com", false);
    let answer = slash(&app, BOB, "subscribe").await;
    assert!(
        answer.contains("Linked to *bob@x.com* by your verified Slack email"),
        "{answer}"
    );
    // Unconfirmed email: a code instead.
    let answer = slash(&app, SAM, "subscribe").await;
    assert!(answer.contains("hoop subscribe "), "{answer}");
    assert!(slash(&app, SAM, "status").await.contains("not linked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_forged_and_stale_requests_get_401_and_change_nothing() {
    let (slack, app) = with_slack(Backend::Sqlite, "").await;
    link(&app, BOB, "bob@x.com").await;
    let id = app.held("DELETE FROM orders").await;
    drain(&app.delivery_worker()).await;
    let card = channel_card(&slack);
    let (action_id, value) = button(&card, "Approve as dba-team");
    let body = fake_slack::click_form(BOB, CHANNEL, &card, &action_id, &value);
    let url = app.url("/slack/interactions");
    let form = "application/x-www-form-urlencoded";
    let now = chrono::Utc::now().timestamp();
    let sign = |ts: i64, body: &str| {
        hoopbot::slack::signature::sign(
            fake_slack::SIGNING_SECRET,
            &ts.to_string(),
            body.as_bytes(),
        )
    };
    let attempts = [
        ("unsigned", None, None, body.clone()),
        (
            "another secret",
            Some(now),
            Some(hoopbot::slack::signature::sign(
                "not-the-secret",
                &now.to_string(),
                body.as_bytes(),
            )),
            body.clone(),
        ),
        (
            "tampered body",
            Some(now),
            Some(sign(now, &body)),
            body.replace("U0BOB", "U0EVE"),
        ),
        (
            "six minutes old",
            Some(now - 360),
            Some(sign(now - 360, &body)),
            body.clone(),
        ),
        (
            "six minutes ahead",
            Some(now + 360),
            Some(sign(now + 360, &body)),
            body.clone(),
        ),
    ];
    for (what, ts, signature, sent) in attempts {
        let mut request = app
            .client
            .post(&url)
            .header("content-type", form)
            .body(sent);
        if let Some(ts) = ts {
            request = request.header("x-slack-request-timestamp", ts.to_string());
        }
        if let Some(signature) = signature {
            request = request.header("x-slack-signature", signature);
        }
        let reply = request.send().await.unwrap();
        assert_eq!(reply.status(), StatusCode::UNAUTHORIZED, "{what}");
        let error: Value = reply.json().await.unwrap();
        assert_eq!(error["error"]["code"], "unauthenticated", "{what}");
    }
    for path in ["/slack/commands", "/slack/events"] {
        let reply = app
            .client
            .post(app.url(path))
            .body("text=status")
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    let request = app.request(&id).await;
    assert_eq!(request["approval_groups"][0]["status"], "pending");
    assert_eq!(request["version"], 1);
    // Signed, the same click counts.
    let reply = send_signed(&app.client, &url, form, body).await;
    assert_eq!(reply.status(), StatusCode::OK);
    assert_eq!(
        app.request(&id).await["approval_groups"][0]["decided_by"],
        "bob@x.com"
    );
    // Signed garbage is a clear 400, not a panic.
    let reply = send_signed(&app.client, &url, form, "payload=%7Bnot-json".into()).await;
    assert_eq!(reply.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_events_url_answers_its_challenge_and_unknown_commands_get_help() {
    let (_slack, app) = with_slack(Backend::Sqlite, "").await;
    let reply = send_signed(
        &app.client,
        &app.url("/slack/events"),
        "application/json",
        json!({ "token": "x", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P", "type": "url_verification" }).to_string(),
    )
    .await;
    assert_eq!(reply.status(), StatusCode::OK);
    let body: Value = reply.json().await.unwrap();
    assert_eq!(
        body["challenge"],
        "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    );
    let help = slash(&app, BOB, "approve everything").await;
    assert!(help.starts_with("I don't know `approve`"), "{help}");
    assert!(help.contains("/hoop subscribe"), "{help}");
    assert!(slash(&app, BOB, "").await.contains("/hoop status"));
}

/// Socket Mode against a fake Slack socket: envelopes are acknowledged with their `envelope_id`
/// (a command's with its answer), a click decides before its acknowledgement, and after Slack asks
/// a socket to go (`disconnect`), or a socket drops, hoopbot opens one new connection, which
/// handles the next envelope.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_mode_acknowledges_envelopes_and_reconnects() {
    use hoopbot::slack::socket_mode::SOCKETS;
    let socket_server = fake_slack::SocketServer::start().await;
    let slack = FakeSlack::start().await;
    slack.socket_url(socket_server.url());
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &slack.config("app_token = \"xapp-1-A0HOOP-test\""),
    )
    .await;
    let mut socket = socket_server.next().await;
    let opened = slack.calls_of("apps.connections.open");
    assert_eq!(
        opened[0].authorization.as_deref(),
        Some("Bearer xapp-1-A0HOOP-test")
    );

    // Slack's own slash-command envelope, for /hoop: answered in the acknowledgement.
    let fixtures = fake_slack::envelopes();
    let mut command = fixtures["envelopes"][0].clone();
    command["payload"]["command"] = json!("/hoop");
    command["payload"]["text"] = json!("subscribe");
    command["payload"]["user_id"] = json!(BOB);
    // As Slack's fixture has it, from another workspace (T111): refused, no code.
    let ack = fake_slack::exchange(&mut socket, &command).await;
    let answer = ack["payload"]["text"].as_str().unwrap_or_default();
    assert!(answer.contains("serves another Slack workspace"), "{ack}");
    assert!(!answer.contains("hoop subscribe "), "{ack}");
    command["envelope_id"] = json!("c0ffee00-0000-4000-8000-000000000000");
    command["payload"]["team_id"] = json!(fake_slack::TEAM);
    let ack = fake_slack::exchange(&mut socket, &command).await;
    let answer = ack["payload"]["text"]
        .as_str()
        .expect("the answer rides on the ack");
    let code = code_in(answer);
    let linked = app
        .post(
            "bob@x.com",
            "/api/v1/chat-links",
            Some(json!({ "code": code })),
        )
        .await;
    assert_eq!(linked.status, StatusCode::OK);

    // hoopbot keeps SOCKETS sockets, the later ones opened a few seconds after the first: once
    // all are open, any further connection is a reconnect.
    let mut others = Vec::new();
    for _ in 1..SOCKETS {
        others.push(socket_server.next().await);
    }
    assert_eq!(socket_server.opened(), u64::from(SOCKETS));

    // A `disconnect` message: hoopbot leaves that socket and opens one new connection.
    use futures_util::SinkExt;
    socket
        .send(tokio_tungstenite::tungstenite::Message::text(
            fixtures["disconnect"].to_string(),
        ))
        .await
        .unwrap();
    fake_slack::until_closed(&mut socket).await;
    let mut socket = socket_server.next().await;
    assert_eq!(socket_server.opened(), u64::from(SOCKETS) + 1);

    // A click through the new connection: decided before it is acknowledged.
    let id = app.held("DELETE FROM carts").await;
    drain(&app.delivery_worker()).await;
    let card = channel_card(&slack);
    let (action_id, value) = button(&card, "Approve as dba-team");
    let form = fake_slack::click_form(BOB, CHANNEL, &card, &action_id, &value);
    let payload: String = serde_urlencoded::from_str::<Vec<(String, String)>>(&form).unwrap()[0]
        .1
        .clone();
    let click = json!({
        "envelope_id": "c0ffee00-0000-4000-8000-000000000001",
        "payload": serde_json::from_str::<Value>(&payload).unwrap(),
        "type": "interactive",
        "accepts_response_payload": false
    });
    // The same click from another workspace is acknowledged, and decides nothing.
    let mut foreign = click.clone();
    foreign["envelope_id"] = json!("c0ffee00-0000-4000-8000-0000000000f0");
    foreign["payload"]["team"]["id"] = json!("T0OTHER");
    let ack = fake_slack::exchange(&mut socket, &foreign).await;
    assert_eq!(ack["envelope_id"], "c0ffee00-0000-4000-8000-0000000000f0");
    assert_eq!(app.request(&id).await["version"], 1, "nothing decided");
    let ack = fake_slack::exchange(&mut socket, &click).await;
    assert_eq!(ack["envelope_id"], "c0ffee00-0000-4000-8000-000000000001");
    let request = app.request(&id).await;
    assert_eq!(request["approval_groups"][0]["decided_by"], "bob@x.com");
    assert_eq!(request["approval_groups"][0]["via"], "slack");

    // The socket drops without a word: hoopbot connects again, once, and answers through it.
    drop(socket);
    let mut socket = socket_server.next().await;
    assert_eq!(socket_server.opened(), u64::from(SOCKETS) + 2);
    let mut status = command.clone();
    status["envelope_id"] = json!("c0ffee00-0000-4000-8000-000000000002");
    status["payload"]["text"] = json!("status");
    let ack = fake_slack::exchange(&mut socket, &status).await;
    let answer = ack["payload"]["text"].as_str().unwrap_or_default();
    assert!(answer.starts_with("Linked to *bob@x.com*"), "{ack}");
    assert_eq!(
        slack.calls_of("apps.connections.open").len() as u64,
        socket_server.opened(),
        "one apps.connections.open per connection"
    );
}

/// `hoop doctor`'s checks: what works is said, and what does not says what to fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_doctor_checks_the_token_each_channel_and_the_public_url() {
    let slack = FakeSlack::start().await;
    let db = crate::helpers::TestDb::new(Backend::Sqlite).await;
    let text = crate::helpers::test_config_text(&db.url).replace(
        "name = \"scratch-db\"\ntype = \"postgres\"",
        "name = \"scratch-db\"\ntype = \"postgres\"\nslack_channel = \"C0ARCHIVED\"",
    ) + &slack.config("");
    let config = hoopbot::config::Config::parse(&text, "test").unwrap();
    slack.fail("conversations.info", [Failure::Refuse("channel_not_found")]);
    let findings = hoopbot::doctor::check(&config).await;
    let line = |check: &str| {
        findings
            .iter()
            .find(|f| f.check == check)
            .unwrap_or_else(|| panic!("no {check} in {findings:?}"))
            .clone()
    };
    assert!(line("Slack bot token").ok);
    assert!(
        line("Slack bot token")
            .detail
            .contains("hoopbot in workspace Hoop Test")
    );
    let default = line(&format!("Slack channel {CHANNEL}"));
    assert!(
        !default.ok && default.detail.contains("use the channel's id"),
        "{default:?}"
    );
    assert!(
        line("Slack channel C0ARCHIVED").ok,
        "the second channel answered"
    );
    let public = line("public URL");
    assert!(!public.ok, "{public:?}");
    assert!(
        public.detail.contains("Socket Mode"),
        "says what to do: {public:?}"
    );
    // Sam is security's only member, and prod-db holds his own requests for security.
    let lone = line("approval group security of prod-db");
    assert!(
        !lone.ok && lone.detail.contains("sam@x.com") && lone.detail.contains("only expire"),
        "{lone:?}"
    );
    // A revoked token: said, and the checks that need it are not run.
    slack.fail("auth.test", [Failure::Refuse("invalid_auth")]);
    let findings = hoopbot::doctor::check(&config).await;
    let token = findings
        .iter()
        .find(|f| f.check == "Slack bot token")
        .unwrap();
    assert!(
        !token.ok && token.detail.contains("OAuth & Permissions"),
        "{token:?}"
    );
    assert!(
        findings
            .iter()
            .all(|f| !f.check.starts_with("Slack channel"))
    );
}

async fn a_copy_that_cannot_be_posted_is_given_up_and_the_others_still_go(backend: Backend) {
    let (slack, app) = with_slack(backend, "").await;
    link(&app, BOB, "bob@x.com").await;
    // The bot was never invited to the channel: the channel card cannot be posted.
    slack.fail("chat.postMessage", [Failure::Refuse("not_in_channel")]);
    let id = app.held("DELETE FROM invoices").await;
    let worker = app.delivery_worker();
    assert_eq!(drain(&worker).await, [Step::Delivered]);
    let posts = slack.calls_of("chat.postMessage");
    assert_eq!(
        posts.len(),
        2,
        "the channel card was tried, bob's DM went out"
    );
    assert_eq!(posts[1].body["channel"], format!("D{BOB}"));
    // Said in the delivery, for "my approver didn't get it".
    let request = app.request(&id).await;
    let delivery = &request["deliveries"][0];
    assert_eq!(delivery["state"], "delivered");
    assert!(
        delivery["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("channel:C0HOOPCARDS: not_in_channel"),
        "{delivery}"
    );
    let channel_copy = request["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["copy"] == format!("channel:{CHANNEL}"))
        .unwrap()
        .clone();
    assert_eq!(channel_copy["gone"], "not_in_channel");
    let shown = crate::cli::cli(&app, "alice@x.com", &["requests", "show", &id]).await;
    let shown = crate::cli::text(&shown.stdout);
    assert!(
        shown.contains(&format!(
            "slack channel:{CHANNEL}: given up: not_in_channel"
        )),
        "{shown}"
    );
    // Later changes update the DM and leave the given-up copy alone.
    app.approve("bob@x.com", &id, None).await;
    assert_eq!(drain(&worker).await, [Step::Delivered]);
    let updates = slack.calls_of("chat.update");
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].body["channel"], format!("D{BOB}"));
    assert_eq!(slack.calls_of("chat.postMessage").len(), 2);
}

/// `hoop subscribe CODE` links as the logged-in user and says so; a bad code fails with a message
/// and a non-zero exit. `hoop doctor` exits 1 when a check fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hoop_subscribe_and_hoop_doctor_on_the_command_line() {
    let (slack, app) = with_slack(Backend::Sqlite, "").await;
    let code = code_in(&slash(&app, BOB, "subscribe").await);
    let out = crate::cli::cli(&app, "bob@x.com", &["subscribe", &code]).await;
    assert!(out.status.success(), "{}", crate::cli::text(&out.stderr));
    let said = crate::cli::text(&out.stdout);
    assert!(
        said.contains(&format!("Linked Slack account {BOB} to bob@x.com")),
        "{said}"
    );
    let again = crate::cli::cli(&app, "bob@x.com", &["subscribe", &code]).await;
    assert!(!again.status.success());
    assert!(
        crate::cli::text(&again.stderr).contains("already been used"),
        "{}",
        crate::cli::text(&again.stderr)
    );
    let garbage = crate::cli::cli(&app, "bob@x.com", &["subscribe", "not a code"]).await;
    assert!(!garbage.status.success());
    assert!(crate::cli::text(&garbage.stderr).contains("not a link code"));

    // The doctor, on a config file whose channel Slack does not know.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hoop.toml");
    std::fs::write(
        &path,
        crate::helpers::test_config_text(&app.db.url) + &slack.config(""),
    )
    .unwrap();
    slack.fail("conversations.info", [Failure::Refuse("channel_not_found")]);
    let mut doctor = crate::processes::hoop();
    doctor.args(["doctor", "--config"]).arg(&path);
    let out = tokio::task::spawn_blocking(move || doctor.output().unwrap())
        .await
        .unwrap();
    let said = crate::cli::text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("ok   Slack bot token: works"), "{said}");
    assert!(
        said.contains(&format!("FAIL Slack channel {CHANNEL}: not found")),
        "{said}"
    );
}

async fn an_older_state_never_overwrites_a_newer_card(backend: Backend) {
    let (slack, app) = with_slack(backend, "").await;
    let id = app.held("SELECT 2").await;
    let worker = app.delivery_worker();
    assert_eq!(drain(&worker).await, [Step::Delivered]);
    // The card already shows a newer state than the next delivery carries (as another replica
    // would have recorded it).
    let store = app.store().await;
    let key = format!("channel:{CHANNEL}");
    let mut posted = store.posted("slack", &key, &id).await.unwrap().unwrap();
    posted.version = 5;
    store.save_posted(&posted).await.unwrap();
    app.approve("bob@x.com", &id, None).await;
    assert_eq!(drain(&worker).await, [Step::Delivered]);
    assert!(
        slack.calls_of("chat.update").is_empty(),
        "version 2 was not applied over 5"
    );
    assert_eq!(
        store
            .posted("slack", &key, &id)
            .await
            .unwrap()
            .unwrap()
            .version,
        5
    );
}

/// The one rule decides what every surface offers: a member of two approval groups who approved
/// one is offered the other nowhere (DM buttons, `/hoop status`, the API's `you_may`), though they
/// may still reject; the other group's members still are.
async fn a_member_of_two_groups_who_approved_one_is_offered_the_other_nowhere(backend: Backend) {
    let (slack, mut app) = with_slack(backend, BOTH_GROUPS).await;
    app.token_for("bo@x.com").await;
    link(&app, BO, "bo@x.com").await;
    link(&app, SAM, "sam@x.com").await;
    let id = app.held("DELETE FROM sessions WHERE expired").await;
    let worker = app.delivery_worker();
    drain(&worker).await;
    let dm_of = |user: &str| {
        slack
            .calls()
            .into_iter()
            .rfind(|c| {
                matches!(c.method.as_str(), "chat.postMessage" | "chat.update")
                    && c.body["channel"] == format!("D{user}")
            })
            .unwrap_or_else(|| panic!("a DM to {user}"))
            .body
    };
    let offered = |card: &Value| -> Vec<String> {
        buttons(&card["blocks"]).into_iter().map(|b| b.2).collect()
    };
    assert_eq!(
        offered(&dm_of(BO)),
        ["Approve as dba-team", "Approve as security", "Reject"]
    );
    assert!(slash(&app, BO, "status").await.contains(&id));

    let reply = click(&app, BO, &dm_of(BO), "Approve as dba-team").await;
    assert_eq!(reply.status(), StatusCode::OK);
    drain(&worker).await;
    assert_eq!(
        app.request(&id).await["approval_groups"][0]["decided_by"],
        "bo@x.com"
    );

    // Bo's copy offers no other group, only Reject; Sam's and the channel's still offer security.
    assert_eq!(offered(&dm_of(BO)), ["Reject"]);
    assert_eq!(offered(&dm_of(SAM)), ["Approve as security", "Reject"]);
    assert_eq!(
        offered(&channel_card(&slack)),
        ["Approve as security", "Reject"]
    );
    // Not waiting for Bo any more; still waiting for Sam.
    let status = slash(&app, BO, "status").await;
    let waiting = status.split("Your own pending requests").next().unwrap();
    assert!(!waiting.contains(&id), "{status}");
    assert!(slash(&app, SAM, "status").await.contains(&id));
    // The API says the same to each reader.
    let request = app
        .get("bo@x.com", &format!("/api/v1/access-requests/{id}"))
        .await;
    assert_eq!(
        request.body["you_may"],
        json!({"approve_as": [], "reject": true,
               "why_not": {"code": "already_approved", "group": "dba-team"}})
    );
    let request = app
        .get("sam@x.com", &format!("/api/v1/access-requests/{id}"))
        .await;
    assert_eq!(
        request.body["you_may"],
        json!({"approve_as": ["security"], "reject": true, "why_not": null})
    );
    let request = app
        .get("alice@x.com", &format!("/api/v1/access-requests/{id}"))
        .await;
    assert_eq!(
        request.body["you_may"],
        json!({"approve_as": [], "reject": false, "why_not": {"code": "own_request"}})
    );
    assert_eq!(
        request.body["summary"],
        "Waiting for approval from security."
    );
    // Clicking the other group anyway changes nothing and says why.
    let channel = channel_card(&slack);
    let reply = click(&app, BO, &channel, "Approve as security").await;
    assert_eq!(reply.status(), StatusCode::OK);
    assert_eq!(app.request(&id).await["status"], "pending");
}

async fn a_snapshot_that_cannot_be_read_is_given_up_at_once(backend: Backend) {
    let (slack, app) = with_slack(backend, "").await;
    let id = app.held("UPDATE accounts SET locked = true").await;
    // A status this version does not know, as a renamed one would leave the stored snapshot.
    execute_sql(
        &app.db.url,
        format!(
            "update outbox set payload = replace(payload, '\"status\":\"pending\"', \
             '\"status\":\"on_hold\"') where request_id = '{id}'"
        ),
    )
    .await;
    // Retrying would read the same snapshot again: it is given up on its first attempt.
    assert_eq!(drain(&app.delivery_worker()).await, [Step::GaveUp]);
    assert!(slack.calls_of("chat.postMessage").is_empty());
    let events = app.store().await.audit_events(Some(&id)).await.unwrap();
    let given_up = events.last().unwrap();
    assert_eq!(given_up.kind, "delivery_given_up");
    assert_eq!(given_up.detail["kind"], "slack");
    assert_eq!(given_up.detail["attempts"], 1);
    let error = given_up.detail["last_error"].as_str().unwrap();
    assert!(
        error.starts_with("the event's snapshot cannot be read") && error.contains("on_hold"),
        "{error}"
    );
}
