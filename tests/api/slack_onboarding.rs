//! Onboarding with `link_by_email`: approvers whose confirmed Slack email is a configured user's
//! get their DMs, and their clicks count, without ever running `/hoop subscribe`. Slack finds
//! them by email (`users.lookupByEmail`); the link is recorded as made by email and audited. An
//! email that finds no account to link is not asked about again soon, and an account already
//! linked by a code keeps its link.

use reqwest::StatusCode;

use crate::fake_slack::{CHANNEL, FakeSlack};
use crate::helpers::{Backend, TestApp};
use crate::on_both_backends;
use crate::slack::{channel_card, click, link};
use crate::webhooks::drain;

on_both_backends!(approvers_found_by_their_confirmed_email_get_dms_and_may_click);

async fn approvers_found_by_their_confirmed_email_get_dms_and_may_click(backend: Backend) {
    let slack = FakeSlack::start().await;
    let app = TestApp::spawn_with(backend, &slack.config("link_by_email = true")).await;
    // Sam links his Slack account by code; Slack then says that account's confirmed email is
    // dora@x (Dora is in dba-team, as Bob is). Bob's email is confirmed, in another case.
    link(&app, "U0SAMC", "sam@x.com").await;
    slack.user("U0SAMC", "dora@x.com", true);
    slack.user("U0BOB", "Bob@X.com", true);

    let id = app.held("DELETE FROM orders WHERE id = 9").await;
    drain(&app.delivery_worker()).await;

    // Bob is found and linked by email, audited as such, and gets his DM.
    let opened: Vec<String> = slack
        .calls_of("conversations.open")
        .iter()
        .map(|c| c.body["users"].to_string())
        .collect();
    assert!(opened.iter().any(|u| u.contains("U0BOB")), "{opened:?}");
    let store = app.store().await;
    let events = store.audit_events(Some("slack:U0BOB")).await.unwrap();
    let linked: Vec<_> = events
        .iter()
        .map(|e| (e.kind.as_str(), &e.detail))
        .collect();
    assert_eq!(linked.len(), 1, "{linked:?}");
    assert_eq!(linked[0].0, "account_linked");
    assert_eq!(linked[0].1["email"], "bob@x.com");
    assert_eq!(linked[0].1["linked_by"], "email");
    // Sam's account keeps the link its code made, and Dora is not linked to it.
    let sams = store.audit_events(Some("slack:U0SAMC")).await.unwrap();
    let links: Vec<_> = sams
        .iter()
        .map(|e| (e.kind.as_str(), e.detail["email"].clone()))
        .collect();
    assert_eq!(links, [("account_linked", serde_json::json!("sam@x.com"))]);

    // Bob's click counts as bob@x, though he never subscribed.
    let card = channel_card(&slack);
    let reply = click(&app, "U0BOB", &card, "Approve as dba-team").await;
    assert_eq!(reply.status(), StatusCode::OK);
    let request = app
        .get("alice@x.com", &format!("/api/v1/access-requests/{id}"))
        .await;
    assert_eq!(
        request.body["approval_groups"][0]["decided_by"],
        "bob@x.com"
    );
    assert_eq!(request.body["approval_groups"][0]["via"], "slack");

    // The next request asks Slack again about nobody: Bob is linked, and Dora's email found no
    // account it could link (asked again in an hour).
    let lookups = slack.calls_of("users.lookupByEmail").len();
    app.held("DELETE FROM orders WHERE id = 10").await;
    drain(&app.delivery_worker()).await;
    assert_eq!(slack.calls_of("users.lookupByEmail").len(), lookups);
    assert!(
        slack
            .calls_of("chat.postMessage")
            .iter()
            .any(|c| c.body["channel"] == CHANNEL)
    );
}
