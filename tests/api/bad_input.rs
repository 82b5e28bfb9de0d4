//! Every 4xx of the API: the right status and code, a JSON error body, and nothing changed.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Backend, MAX_COMMAND_BYTES, Reply, TestApp};
use crate::on_both_backends;

on_both_backends!(bad_requests_get_clean_errors_and_change_nothing);

/// Runs `call` and checks its status, error code, and that no request, audit event or outbox entry
/// changed.
async fn refused(
    app: &TestApp,
    expected: (StatusCode, &str),
    reply: Reply,
    before: &impl PartialEq<Snapshot>,
) {
    assert_eq!((reply.status, reply.code()), expected, "{:?}", reply.body);
    assert!(
        reply.body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    let after = app.snapshot().await;
    assert!(
        before == &after,
        "a refused call changed state: {expected:?}"
    );
}

type Snapshot = (
    Vec<hoopbot::domain::AccessRequest>,
    hoopbot::audit::Head,
    usize,
);

async fn bad_requests_get_clean_errors_and_change_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = app.held("SELECT 1").await;
    app.approve("bob@x.com", &id, None).await;
    let closed = app.held("SELECT 2").await;
    app.reject("sam@x.com", &closed, "no").await;
    let racer = app.agent_token("racer").await;
    let before = app.snapshot().await;
    // Each refused call: the expected (status, code), and nothing changed.
    macro_rules! refused {
        ($expected:expr, $reply:expr) => {
            refused(&app, $expected, $reply, &before).await
        };
    }
    let exec = app.url("/api/v1/exec");
    let alice = app.token("alice@x.com").to_string();

    // 400 invalid_input
    let bad = (StatusCode::BAD_REQUEST, "invalid_input");
    let raw = |body: &'static str| {
        app.client
            .post(&exec)
            .bearer_auth(&alice)
            .header("content-type", "application/json")
            .body(body)
    };
    refused!(
        bad,
        app.send(raw("{\"connection\": \"prod-db\", \"command\": "))
            .await
    );
    refused!(
        bad,
        app.send(raw(
            "{\"connection\": \"prod-db\", \"command\": \"x\", \"sudo\": true}",
        ))
        .await
    );
    refused!(bad, app.send(raw("{\"connection\": \"prod-db\"}")).await);
    refused!(
        bad,
        app.send(raw("{\"connection\": \"prod-db\", \"command\": 42}"))
            .await
    );
    refused!(bad, app.send(raw("")).await);
    refused!(bad, app.submit("alice@x.com", "prod-db", " ").await);
    // A name that cannot be a connection's is bad input; a well-formed unknown one is not found
    // (below).
    for malformed in ["prod db", "prod\0db", "", "prod-db\n"] {
        let reply = app.submit("alice@x.com", malformed, "SELECT 1").await;
        assert!(
            reply.body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("is not a connection name")),
            "{:?}",
            reply.body
        );
        refused!(bad, reply);
    }
    let claim = |connection: &str| {
        app.client
            .post(app.url("/api/v1/agent/jobs/claim"))
            .bearer_auth(&racer)
            .json(&json!({ "connections": [connection], "timeout_s": 0 }))
    };
    refused!(bad, app.send(claim("counter db")).await);
    refused!(
        bad,
        app.submit("alice@x.com", "prod-db", "SELECT 1\0; DROP TABLE x")
            .await
    );
    refused!(
        bad,
        app.get("bob@x.com", "/api/v1/access-requests?status=done")
            .await
    );
    refused!(
        bad,
        app.get("bob@x.com", "/api/v1/access-requests?limit=0")
            .await
    );
    refused!(
        bad,
        app.get("bob@x.com", "/api/v1/access-requests?colour=red")
            .await
    );
    refused!(
        bad,
        app.get(
            "bob@x.com",
            &format!("/api/v1/access-requests/{id}/wait?timeout_s=9999"),
        )
        .await
    );
    refused!(bad, app.reject("sam@x.com", &id, " ").await);
    refused!(bad, app.reject("sam@x.com", &id, "no\0pe").await);
    refused!(
        bad,
        app.get("bob@x.com", "/api/v1/access-requests?connection=prod%00db")
            .await
    );
    refused!(bad, app.reject("sam@x.com", &id, &"x".repeat(5000)).await);
    // A path that is not UTF-8 once decoded (the router's own reply was text/plain).
    refused!(
        bad,
        app.get("bob@x.com", "/api/v1/access-requests/%FF%FE").await
    );
    let nul_justification =
        json!({"connection": "prod-db", "command": "SELECT 1", "justification": "a\0b"});
    refused!(
        bad,
        app.post("alice@x.com", "/api/v1/exec", Some(nul_justification))
            .await
    );
    refused!(
        bad,
        app.post(
            "sam@x.com",
            &format!("/api/v1/access-requests/{id}/approve"),
            Some(json!({"group": 1})),
        )
        .await
    );

    // 401 unauthenticated
    let unauth = (StatusCode::UNAUTHORIZED, "unauthenticated");
    refused!(
        unauth,
        app.send(
            app.client
                .post(&exec)
                .json(&json!({"connection": "prod-db", "command": "x"})),
        )
        .await
    );
    refused!(
        unauth,
        app.send(
            app.client
                .post(&exec)
                .bearer_auth("hoop_nope")
                .json(&json!({"connection": "prod-db", "command": "x"})),
        )
        .await
    );
    refused!(
        unauth,
        app.send(
            app.client
                .get(app.url(&format!("/api/v1/access-requests/{id}")))
                .header("authorization", "Basic abc"),
        )
        .await
    );

    // 403
    refused!(
        (StatusCode::FORBIDDEN, "not_in_group"),
        app.approve("eve@x.com", &id, None).await
    );
    refused!(
        (StatusCode::FORBIDDEN, "not_in_group"),
        app.approve("dora@x.com", &id, Some("security")).await
    );
    refused!(
        (StatusCode::FORBIDDEN, "self_approval"),
        app.approve("alice@x.com", &id, None).await
    );
    refused!(
        (StatusCode::FORBIDDEN, "forbidden"),
        app.cancel("sam@x.com", &id).await
    );

    // 404
    let missing = (StatusCode::NOT_FOUND, "not_found");
    refused!(
        missing,
        app.get("bob@x.com", "/api/v1/access-requests/no-such-id")
            .await
    );
    refused!(missing, app.approve("bob@x.com", "no-such-id", None).await);
    refused!(
        missing,
        app.get("bob@x.com", "/api/v1/access-requests/abc%00def")
            .await
    );
    refused!(
        missing,
        app.submit("alice@x.com", "nope-db", "SELECT 1").await
    );
    refused!(missing, app.get("bob@x.com", "/api/v1/nothing-here").await);

    // 409
    refused!(
        (StatusCode::CONFLICT, "already_approved_by_you"),
        app.approve("bob@x.com", &id, Some("dba-team")).await
    );
    refused!(
        (StatusCode::CONFLICT, "already_decided"),
        app.approve("dora@x.com", &id, Some("dba-team")).await
    );
    refused!(
        (StatusCode::CONFLICT, "already_decided"),
        app.approve("bob@x.com", &closed, None).await
    );

    // 413 too_large: over the command limit, and over the body limit
    let too_large = (StatusCode::PAYLOAD_TOO_LARGE, "too_large");
    let big = "x".repeat(MAX_COMMAND_BYTES + 1);
    refused!(too_large, app.submit("alice@x.com", "prod-db", &big).await);
    let huge = "y".repeat(MAX_COMMAND_BYTES * 6 + 64 * 1024);
    refused!(too_large, app.submit("alice@x.com", "prod-db", &huge).await);

    // 431 too_large: headers far over the limit (beyond where the HTTP library, left to itself,
    // answered with a bare 431).
    let padded = app
        .client
        .get(app.url(&format!("/api/v1/access-requests/{id}")))
        .bearer_auth(&alice)
        .header("x-padding", "p".repeat(500 * 1024));
    refused!(
        (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "too_large"),
        app.send(padded).await
    );

    // 415 wrong content type
    let form = app
        .client
        .post(&exec)
        .bearer_auth(&alice)
        .header("content-type", "text/plain")
        .body("SELECT 1");
    refused!(
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
        app.send(form).await
    );

    // 409 expired last, since it moves the request on.
    app.advance(std::time::Duration::from_secs(3600));
    let late = app.approve("sam@x.com", &id, None).await;
    assert_eq!(
        (late.status, late.code()),
        (StatusCode::CONFLICT, "expired")
    );
    let security = &app.request(&id).await["approval_groups"][1];
    assert_eq!(
        (&security["status"], &security["decided_by"]),
        (&serde_json::json!("closed"), &serde_json::Value::Null),
        "the late approval was not recorded"
    );
}
