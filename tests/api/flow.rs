//! The access-request flow through the API, on both backends.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{Backend, TestApp};
use crate::on_both_backends;
use crate::webhooks::webhook;

on_both_backends!(
    two_groups_approve_and_a_waiter_wakes,
    a_rejection_with_its_reason_ends_the_request,
    requests_expire_at_their_deadline,
    the_requester_cancels,
    exempt_admin_and_unprotected_commands_are_approved_and_recorded,
    an_admin_is_reviewed_where_the_connection_says_so,
    fifty_concurrent_approvals_make_one_decision,
    a_restart_keeps_pending_requests_and_their_deadlines,
    listing_filters_and_pages_newest_first,
    every_change_queues_an_outbox_entry,
    a_change_on_one_replica_wakes_a_waiter_on_another,
    health_and_readiness,
    shutdown_answers_long_polls_at_once,
    the_store_refuses_a_decision_past_the_deadline,
);

/// The deadline is enforced in the compare-and-set itself, so a decision checked just before the
/// deadline but written just after it cannot land.
async fn the_store_refuses_a_decision_past_the_deadline(backend: Backend) {
    use hoopbot::domain::Status;
    use hoopbot::store::{Change, StoreError};
    let app = TestApp::spawn(backend).await;
    let id = app.held("SELECT 1").await;
    let store = app.store().await;
    let request = store.get_request(&id).await.unwrap().unwrap();
    let cancel_at = |at| {
        let mut change = Change::to(&request, at);
        change.status = Some(Status::Cancelled);
        change.before_deadline = Some(at);
        change
    };
    let late = store.apply(&cancel_at(request.expires_at)).await;
    assert!(matches!(late, Err(StoreError::Conflict)), "{late:?}");
    assert_eq!(app.request(&id).await["status"], "pending");
    store
        .apply(&cancel_at(request.expires_at - 1))
        .await
        .unwrap();
    assert_eq!(app.request(&id).await["status"], "cancelled");
}

async fn shutdown_answers_long_polls_at_once(backend: Backend) {
    let mut app = TestApp::spawn(backend).await;
    let id = app.held("SELECT 1").await;
    let waiter = app.spawn_wait(&id, 1, 300);
    // Once the waiter is parked, stop. Draining must not sit on the five-minute poll until it runs
    // out; the generous bound only tells a hang from an answer.
    app.until_parked(&id).await;
    tokio::time::timeout(Duration::from_secs(120), app.stop())
        .await
        .expect("shutdown waited for the long poll to time out");
    let answer = waiter.await.unwrap();
    assert_eq!(answer["status"], "pending");
    assert_eq!(answer["version"], 1);
    app.stop_and_start().await;
    assert_eq!(
        app.request(&id).await["status"],
        "pending",
        "nothing changed on the way down"
    );
}

async fn a_change_on_one_replica_wakes_a_waiter_on_another(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let other = app.replica().await;
    let id = app.held("SELECT 1").await;
    let waiter = app.spawn_wait(&id, 1, 60);
    app.until_parked(&id).await;
    let approved = other.approve("bob@x.com", &id, None).await;
    assert_eq!(approved.status, StatusCode::OK);
    let woken = waiter.await.unwrap();
    assert_eq!(woken["version"], 2);
    assert_eq!(woken["approval_groups"][0]["decided_by"], "bob@x.com");
}

async fn health_and_readiness(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for (path, body) in [("/healthz", "ok"), ("/readyz", "ready")] {
        let reply = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(reply.status(), StatusCode::OK);
        assert_eq!(reply.text().await.unwrap(), body);
    }
}

async fn two_groups_approve_and_a_waiter_wakes(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = app
        .held("UPDATE users SET status='inactive' WHERE id=123")
        .await;
    let created = app.request(&id).await;
    assert_eq!(
        created["command"],
        "UPDATE users SET status='inactive' WHERE id=123"
    );
    assert_eq!(
        created["command_sha256"],
        hoopbot::domain::command_sha256("UPDATE users SET status='inactive' WHERE id=123")
    );
    assert_eq!(
        created["url"],
        format!("http://hoop.test/access-requests/{id}")
    );
    assert_eq!(created["version"], 1);

    // A waiter parked on version 1 is woken by the first approval.
    let waiter = app.spawn_wait(&id, 1, 60);
    app.until_parked(&id).await;
    let first = app.approve("bob@x.com", &id, Some("dba-team")).await;
    assert_eq!(first.status, StatusCode::OK, "{:?}", first.body);
    assert_eq!(first.body["status"], "pending");
    let woken = waiter.await.unwrap();
    assert_eq!(woken["version"], 2);
    assert_eq!(woken["approval_groups"][0]["decided_by"], "bob@x.com");
    assert_eq!(woken["approval_groups"][0]["via"], "api");
    assert_eq!(stored(woken), first.body, "the reply is what was stored");

    let second = app.approve("sam@x.com", &id, None).await;
    assert_eq!(second.status, StatusCode::OK, "{:?}", second.body);
    assert_eq!(second.body["status"], "approved");
    assert_eq!(second.body["approval_groups"][1]["group"], "security");
    assert_eq!(second.body["approval_groups"][1]["decided_by"], "sam@x.com");
    assert!(second.body["decided_at"].is_string());
    assert_eq!(
        second.body,
        stored(app.request(&id).await),
        "the reply is what was stored"
    );

    // A wait on an old version returns at once with the current state.
    let now = app
        .get(
            "alice@x.com",
            &format!("/api/v1/access-requests/{id}/wait?version=1&timeout_s=60"),
        )
        .await;
    assert_eq!(now.body["status"], "approved");
    assert_eq!(now.body["version"], 3);
    assert_eq!(
        app.audit_kinds(&id).await,
        [
            "created",
            "held",
            "group_approved",
            "group_approved",
            "approved"
        ]
    );
}

async fn a_rejection_with_its_reason_ends_the_request(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = app.held("DROP TABLE users").await;
    app.approve("bob@x.com", &id, None).await;
    let rejected = app.reject("sam@x.com", &id, "not during the freeze").await;
    assert_eq!(rejected.status, StatusCode::OK, "{:?}", rejected.body);
    assert_eq!(rejected.body["status"], "rejected");
    assert_eq!(rejected.body["rejection"]["by"], "sam@x.com");
    assert_eq!(
        rejected.body["rejection"]["reason"],
        "not during the freeze"
    );
    assert_eq!(rejected.body["rejection"]["via"], "api");
    assert_eq!(
        rejected.body,
        stored(app.request(&id).await),
        "the reply is what was stored"
    );
    let late = app.approve("dora@x.com", &id, None).await;
    assert_eq!(
        (late.status, late.code()),
        (StatusCode::CONFLICT, "already_decided")
    );
    assert_eq!(
        app.audit_kinds(&id).await,
        ["created", "held", "group_approved", "rejected"]
    );
}

async fn requests_expire_at_their_deadline(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let swept = app.held("SELECT 1").await;
    let lazy = app.held("SELECT 2").await;
    app.advance(Duration::from_secs(30 * 60));

    // A decision after the deadline is refused even though no sweep has run yet.
    let late = app.approve("bob@x.com", &lazy, None).await;
    assert_eq!(
        (late.status, late.code()),
        (StatusCode::CONFLICT, "expired")
    );
    assert_eq!(app.request(&lazy).await["status"], "expired");

    assert_eq!(
        app.hoop.sweep().await.unwrap(),
        1,
        "the sweeper expires the other one"
    );
    let expired = app.request(&swept).await;
    assert_eq!(expired["status"], "expired");
    assert_eq!(app.hoop.sweep().await.unwrap(), 0, "and never twice");
    assert_eq!(
        app.audit_kinds(&swept).await,
        ["created", "held", "expired"]
    );
    let reject = app.reject("sam@x.com", &swept, "too late").await;
    assert_eq!(
        (reject.status, reject.code()),
        (StatusCode::CONFLICT, "expired")
    );
}

async fn the_requester_cancels(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = app.held("SELECT 1").await;
    let by_other = app.cancel("bob@x.com", &id).await;
    assert_eq!(
        (by_other.status, by_other.code()),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    let cancelled = app.cancel("alice@x.com", &id).await;
    assert_eq!(cancelled.status, StatusCode::OK);
    assert_eq!(cancelled.body["status"], "cancelled");
    let again = app.cancel("alice@x.com", &id).await;
    assert_eq!(
        (again.status, again.code()),
        (StatusCode::CONFLICT, "already_decided")
    );
    let by_admin = app.held("SELECT 2").await;
    assert_eq!(
        app.cancel("root@x.com", &by_admin).await.body["status"],
        "cancelled"
    );
    assert_eq!(app.audit_kinds(&id).await, ["created", "held", "cancelled"]);
}

async fn exempt_admin_and_unprotected_commands_are_approved_and_recorded(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for (who, connection, reason) in [
        ("eve@x.com", "prod-db", "exempt_group"),
        ("root@x.com", "prod-db", "admin"),
        ("alice@x.com", "scratch-db", "access_requests_disabled"),
    ] {
        let reply = app.submit(who, connection, "SELECT 1").await;
        assert_eq!(reply.status, StatusCode::CREATED);
        assert_eq!(reply.body["status"], "approved", "{who} on {connection}");
        assert_eq!(reply.body["approval_groups"], Value::Array(vec![]));
        let id = reply.body["id"].as_str().unwrap();
        let audit = app
            .get("root@x.com", &format!("/api/v1/access-requests/{id}/audit"))
            .await;
        let events = audit.body["items"].as_array().unwrap();
        assert_eq!(events[1]["kind"], "auto_approved");
        assert_eq!(events[1]["detail"]["reason"], reason);
    }
}

/// `admin_auto_approve = false`: an admin's own command waits for the approval groups like
/// anyone's, and the admin cannot approve it themselves.
async fn an_admin_is_reviewed_where_the_connection_says_so(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        "[[connections]]\nname = \"reviewed-db\"\ntype = \"postgres\"\n\
         [connections.access_requests]\napproval_groups = [\"dba-team\"]\n\
         admin_auto_approve = false\n",
    )
    .await;
    let reply = app
        .submit("root@x.com", "reviewed-db", "DROP TABLE audit")
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    assert_eq!(reply.body["status"], "pending");
    let id = reply.body["id"].as_str().unwrap();
    let own = app.approve("root@x.com", id, None).await;
    assert_eq!(own.code(), "self_approval", "{:?}", own.body);
    let approved = app.approve("bob@x.com", id, None).await;
    assert_eq!(approved.body["status"], "approved", "{:?}", approved.body);
    // The same admin on a connection that keeps the default still runs at once.
    let reply = app.submit("root@x.com", "prod-db", "SELECT 1").await;
    assert_eq!(reply.body["status"], "approved");
}

async fn fifty_concurrent_approvals_make_one_decision(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = app.held("DELETE FROM sessions").await;
    // Double clicks from one approver and a race with another member of the same group.
    let calls = (0..50).map(|i| {
        let who = if i % 2 == 0 {
            "bob@x.com"
        } else {
            "dora@x.com"
        };
        app.approve(who, &id, Some("dba-team"))
    });
    let replies = futures_util::future::join_all(calls).await;
    let ok = replies
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .count();
    let conflicts: Vec<&str> = replies
        .iter()
        .filter(|r| r.status == StatusCode::CONFLICT)
        .map(|r| r.code())
        .collect();
    assert_eq!(ok, 1, "{replies:?}");
    assert_eq!(conflicts.len(), 49, "{replies:?}");
    assert!(
        conflicts
            .iter()
            .all(|c| ["already_decided", "already_approved_by_you"].contains(c))
    );
    let request = app.request(&id).await;
    assert_eq!(request["version"], 2);
    assert_eq!(request["status"], "pending");
    assert_eq!(
        app.audit_kinds(&id).await,
        ["created", "held", "group_approved"]
    );
}

async fn a_restart_keeps_pending_requests_and_their_deadlines(backend: Backend) {
    let mut app = TestApp::spawn(backend).await;
    let first = app.held("SELECT 1").await;
    let second = app.held("SELECT 2").await;
    app.approve("bob@x.com", &first, None).await;
    let before = (app.request(&first).await, app.request(&second).await);

    app.stop_and_start().await;

    assert_eq!(
        (app.request(&first).await, app.request(&second).await),
        before
    );
    let approved = app.approve("sam@x.com", &first, None).await;
    assert_eq!(approved.body["status"], "approved");
    app.advance(Duration::from_secs(30 * 60));
    // The pending one expires; the approved one, which no agent ever picked up, fails.
    assert_eq!(app.hoop.sweep().await.unwrap(), 2);
    assert_eq!(app.request(&second).await["status"], "expired");
    assert_eq!(app.request(&first).await["status"], "failed");
}

async fn listing_filters_and_pages_newest_first(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(app.held(&format!("SELECT {i}")).await);
    }
    app.reject("sam@x.com", &ids[1], "no").await;
    let rejected = app
        .get("bob@x.com", "/api/v1/access-requests?status=rejected")
        .await;
    let items = rejected.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], ids[1].as_str());

    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = app
            .get(
                "bob@x.com",
                &format!("/api/v1/access-requests?connection=prod-db&limit=2&cursor={cursor}"),
            )
            .await;
        assert_eq!(page.status, StatusCode::OK, "{:?}", page.body);
        seen.extend(
            page.body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["id"].as_str().unwrap().to_string()),
        );
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = next.to_string(),
            None => break,
        }
    }
    ids.reverse();
    assert_eq!(seen, ids, "every request once, newest first");
    let mine = app
        .get("bob@x.com", "/api/v1/access-requests?requester=eve@x.com")
        .await;
    assert_eq!(mine.body["items"], Value::Array(vec![]));
}

async fn every_change_queues_an_outbox_entry(backend: Backend) {
    // With a destination, so that entries carry their snapshots (its worker does not run).
    let siem = webhook("siem", "http://127.0.0.1:9/", "allow_private = true");
    let app = TestApp::spawn_with(backend, &siem).await;
    let id = app.held("SELECT 1").await;
    app.approve("bob@x.com", &id, None).await;
    app.approve("sam@x.com", &id, None).await;
    let outbox = app.store().await.outbox().await.unwrap();
    let topics: Vec<&str> = outbox.iter().map(|o| o.topic.as_str()).collect();
    // The approval that completes the request announces its group, then the request.
    assert_eq!(
        topics,
        [
            "access_request.created",
            "access_request.group_approved",
            "access_request.group_approved",
            "access_request.approved"
        ]
    );
    assert!(outbox.iter().all(|o| o.request_id == id));
    // Each entry carries the request as it was right after its change.
    let states: Vec<(i64, &str)> = outbox
        .iter()
        .map(|o| {
            let payload = o.payload.as_ref().unwrap();
            assert_eq!(payload["version"], payload["request"]["version"]);
            (
                payload["version"].as_i64().unwrap(),
                payload["request"]["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            (1, "pending"),
            (2, "pending"),
            (3, "approved"),
            (3, "approved")
        ]
    );
    assert_eq!(
        outbox[1].payload.as_ref().unwrap()["request"]["approval_groups"][0]["decided_by"],
        "bob@x.com"
    );
    assert_eq!(
        outbox[0].payload.as_ref().unwrap()["request"]["command"],
        "SELECT 1"
    );
}

/// A request as read, less what only a read carries: `deliveries` and `messages`, which must be
/// there and empty (no destination is configured here), and the reader's `you_may`.
fn stored(mut read: Value) -> Value {
    for key in ["deliveries", "messages"] {
        let found = read.as_object_mut().unwrap().remove(key);
        assert_eq!(found, Some(Value::Array(vec![])), "{key}");
    }
    // What the reader may do is about the reader, not the request: reads carry it, writes not.
    let you_may = read.as_object_mut().unwrap().remove("you_may");
    assert!(
        you_may.is_some_and(|y| y.is_object()),
        "reads carry you_may"
    );
    read
}
