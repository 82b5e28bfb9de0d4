//! A run that skipped review is seen where reviews are: an admin's own command and an exempt
//! group's are approved at once, and say why in the API (`auto_approval`, `summary`), in an
//! `access_request.auto_approved` event after `created`, and on a card in the connection's
//! channel that says "Without review". A command on a connection with no review to skip gets
//! the event, and no card.

use serde_json::Value;

use crate::fake_slack::{CHANNEL, FakeSlack};
use crate::helpers::{Backend, TestApp};
use crate::on_both_backends;
use crate::receiver::Receiver;
use crate::webhooks::{SECRET, drain, webhook};

on_both_backends!(a_run_that_skipped_review_is_announced_and_shown_in_the_channel);

async fn a_run_that_skipped_review_is_announced_and_shown_in_the_channel(backend: Backend) {
    let slack = FakeSlack::start().await;
    let siem = Receiver::start(SECRET).await;
    let config = slack.config("") + &webhook("siem", &siem.url(), "allow_private = true");
    let app = TestApp::spawn_with(backend, &config).await;

    // root is an admin; eve is in sre, exempt on prod-db; scratch-db asks for no review at all.
    let admin = app
        .submit("root@x.com", "prod-db", "DELETE FROM sessions")
        .await;
    let exempt = app.submit("eve@x.com", "prod-db", "VACUUM orders").await;
    let unreviewed = app.submit("alice@x.com", "scratch-db", "SELECT 1").await;
    for reply in [&admin, &exempt, &unreviewed] {
        assert_eq!(reply.body["status"], "approved", "{:?}", reply.body);
    }
    assert_eq!(
        admin.body["auto_approval"],
        serde_json::json!({ "reason": "admin", "description": "requested by an admin" })
    );
    assert_eq!(exempt.body["auto_approval"]["reason"], "exempt_group");
    assert_eq!(exempt.body["auto_approval"]["group"], "sre");
    assert_eq!(
        unreviewed.body["auto_approval"]["reason"],
        "access_requests_disabled"
    );
    let summary = admin.body["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("Approved without review (requested by an admin);"),
        "{summary}"
    );
    // As the API reads it back, not only as the submission answered.
    let id = |reply: &crate::helpers::Reply| reply.body["id"].as_str().unwrap().to_string();
    let read = app
        .get(
            "root@x.com",
            &format!("/api/v1/access-requests/{}", id(&admin)),
        )
        .await;
    assert_eq!(read.body["auto_approval"]["reason"], "admin");

    drain(&app.delivery_worker()).await;

    // Every auto-approval is announced, right after its `created`.
    let received = siem.wait_for(6, std::time::Duration::from_secs(5)).await;
    for reply in [&admin, &exempt, &unreviewed] {
        let events: Vec<&Value> = received
            .iter()
            .filter(|r| r.body["data"]["id"] == reply.body["id"])
            .map(|r| &r.body["type"])
            .collect();
        assert_eq!(
            events,
            ["access_request.created", "access_request.auto_approved"]
        );
    }
    let announced = received
        .iter()
        .find(|r| {
            r.body["type"] == "access_request.auto_approved"
                && r.body["data"]["id"] == admin.body["id"]
        })
        .unwrap();
    assert_eq!(announced.body["data"]["auto_approval"]["reason"], "admin");

    // A card in the channel for each skipped review, saying so; none for the connection with no
    // review, and no DM for anyone.
    let cards: Vec<String> = slack
        .calls_of("chat.postMessage")
        .into_iter()
        .filter(|call| call.body["channel"] == CHANNEL)
        .map(|call| call.body.to_string())
        .collect();
    assert_eq!(cards.len(), 2, "{cards:#?}");
    assert!(
        cards.iter().any(
            |c| c.contains("Without review: requested by an admin.") && c.contains(&id(&admin))
        )
    );
    assert!(cards.iter().any(
        |c| c.contains("Without review: requester is in exempt group sre.")
            && c.contains(&id(&exempt))
    ));
    assert!(!cards.iter().any(|c| c.contains(&id(&unreviewed))));
    assert!(slack.calls_of("conversations.open").is_empty());
}
