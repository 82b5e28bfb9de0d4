//! Webhooks end to end: a loopback receiver that checks every signature with the independent
//! `standardwebhooks` crate, and a delivery worker the tests step one delivery at a time, moving
//! the clock instead of sleeping.

use std::collections::HashSet;
use std::time::Duration;

use hoopbot::delivery::{Step, Worker};
use reqwest::StatusCode;
use serde_json::Value;

use crate::fake_slack::FakeSlack;
use crate::helpers::{Backend, TestApp, eventually, execute_sql};
use crate::on_both_backends;
use crate::receiver::{Receiver, Reply};

/// A Standard Webhooks secret (the reference libraries' test secret).
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

on_both_backends!(
    every_change_reaches_the_receiver_signed_and_in_order,
    a_failing_receiver_still_gets_every_event_once_in_order,
    a_receiver_down_for_the_whole_window_is_given_up,
    private_addresses_are_refused_without_allow_private,
    a_gone_receiver_switches_its_webhook_off,
    admins_list_webhooks_page_their_attempts_and_send_pings,
    the_cli_shows_webhooks_their_attempts_and_each_requests_deliveries,
    a_webhook_removed_from_the_config_is_given_up_at_once,
    an_unreadable_snapshot_is_given_up_at_once,
    a_webhook_claim_lapses_after_a_webhook_attempt_not_slacks,
);

/// A `[[webhooks]]` entry delivering every event to `url`, with `extra` lines.
pub fn webhook(name: &str, url: &str, extra: &str) -> String {
    format!(
        "\n[[webhooks]]\nname = \"{name}\"\nurl = \"{url}\"\nsecret = \"{SECRET}\"\n\
         events = [\"access_request.*\"]\ntimeout = \"2s\"\n{extra}\n"
    )
}

/// A server with one webhook, `siem`, and its receiver.
async fn with_siem(backend: Backend) -> (Receiver, TestApp) {
    let siem = Receiver::start(SECRET).await;
    let app = TestApp::spawn_with(
        backend,
        &webhook("siem", &siem.url(), "allow_private = true"),
    )
    .await;
    (siem, app)
}

/// Delivers until nothing is due; returns what each step did.
pub async fn drain(worker: &Worker) -> Vec<Step> {
    let mut steps = Vec::new();
    loop {
        match worker.deliver_next().await.unwrap() {
            Step::Empty => return steps,
            step => steps.push(step),
        }
        assert!(steps.len() < 1_000, "the worker never runs dry: {steps:?}");
    }
}

/// Request `id`'s deliveries as the API shows them.
async fn deliveries(app: &TestApp, id: &str) -> Vec<Value> {
    let request = app
        .get("alice@x.com", &format!("/api/v1/access-requests/{id}"))
        .await;
    assert_eq!(request.status, StatusCode::OK, "{:?}", request.body);
    request.body["deliveries"].as_array().unwrap().clone()
}

/// A held request approved by both of its groups: four events (created, two group approvals,
/// approved).
async fn approved(app: &TestApp, command: &str) -> String {
    let id = app.held(command).await;
    assert_eq!(
        app.approve("bob@x.com", &id, None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.approve("sam@x.com", &id, None).await.status,
        StatusCode::OK
    );
    id
}

fn field<'a>(received: &'a [crate::receiver::Received], path: &[&str]) -> Vec<&'a Value> {
    received
        .iter()
        .map(|r| path.iter().fold(&r.body, |value, key| &value[*key]))
        .collect()
}

fn millis(rfc3339: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339.as_str().expect("a time"))
        .unwrap()
        .timestamp_millis()
}

async fn every_change_reaches_the_receiver_signed_and_in_order(backend: Backend) {
    let siem = Receiver::start(SECRET).await;
    let hidden = Receiver::start(SECRET).await;
    let config = webhook("siem", &siem.url(), "allow_private = true")
        + &webhook(
            "no-command",
            &hidden.url(),
            "allow_private = true\ninclude_command = false",
        );
    let app = TestApp::spawn_with(backend, &config).await;
    let command = "UPDATE users SET status='inactive' WHERE id=123";
    let id = approved(&app, command).await;

    let worker = app.delivery_worker();
    assert_eq!(drain(&worker).await, vec![Step::Delivered; 8]);

    let got = siem.wait_for(4, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 4);
    assert!(got.iter().all(|r| r.verified), "{got:#?}");
    let types: Vec<&str> = field(&got, &["type"])
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "access_request.created",
            "access_request.group_approved",
            "access_request.group_approved",
            "access_request.approved"
        ]
    );
    // Each event carries the request as it was right after its change.
    let versions: Vec<i64> = field(&got, &["data", "version"])
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(versions, [1, 2, 3, 3]);
    let statuses: Vec<&Value> = field(&got, &["data", "status"]);
    assert_eq!(statuses, ["pending", "pending", "approved", "approved"]);
    assert_eq!(
        got[1].body["data"]["approval_groups"][0]["decided_by"],
        "bob@x.com"
    );
    assert_eq!(
        got[1].body["data"]["approval_groups"][1]["decided_by"],
        Value::Null
    );
    assert_eq!(
        got[3].body["data"]["approval_groups"][1]["decided_by"],
        "sam@x.com"
    );
    assert!(
        got.iter()
            .all(|r| r.body["data"]["command"] == command && r.body["data"]["id"] == id.as_str())
    );
    assert_eq!(
        got[0].body["data"]["url"],
        format!("http://hoop.test/access-requests/{id}")
    );
    assert!(
        got.iter()
            .all(|r| r.body["data"].get("deliveries").is_none()
                && r.body["data"].get("messages").is_none())
    );
    assert!(millis(&got[0].body["timestamp"]) <= millis(&got[3].body["timestamp"]));
    let ids: HashSet<&str> = got.iter().map(|r| r.id.as_deref().unwrap()).collect();
    assert_eq!(ids.len(), 4, "one webhook-id per event");

    // The endpoint without the command gets its SHA-256 and length instead.
    let blind = hidden.wait_for(4, Duration::from_secs(5)).await;
    assert!(blind.iter().all(|r| r.verified));
    for r in &blind {
        let data = r.body["data"].as_object().unwrap();
        assert!(!data.contains_key("command"), "{data:?}");
        assert_eq!(data["command_bytes"], command.len());
        assert_eq!(
            data["command_sha256"],
            got[0].body["data"]["command_sha256"]
        );
    }
    // The same event has the same id at every endpoint.
    assert_eq!(
        blind.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        got.iter().map(|r| r.id.clone()).collect::<Vec<_>>()
    );

    // The request's own JSON says what each destination got, every field present.
    let deliveries = deliveries(&app, &id).await;
    assert_eq!(deliveries.len(), 8);
    for d in &deliveries {
        let keys: HashSet<&str> = d.as_object().unwrap().keys().map(String::as_str).collect();
        for key in [
            "destination",
            "kind",
            "state",
            "attempts",
            "last_status",
            "last_error",
            "delivered_at",
        ] {
            assert!(keys.contains(key), "{key} missing from {d}");
        }
        assert_eq!(d["kind"], "webhook");
        assert_eq!(d["state"], "delivered");
        assert_eq!(d["attempts"], 1);
        assert_eq!(d["last_status"], 200);
        assert_eq!(d["last_error"], Value::Null);
        assert!(d["delivered_at"].is_string());
    }
}

async fn a_failing_receiver_still_gets_every_event_once_in_order(backend: Backend) {
    let (siem, app) = with_siem(backend).await;
    siem.plan(vec![
        Reply::Status(500),
        Reply::TooManyRequests {
            retry_after_secs: 30,
        },
        Reply::Drop,
    ]);
    let id = approved(&app, "SELECT 1").await;
    let worker = app.delivery_worker();

    assert_eq!(worker.deliver_next().await.unwrap(), Step::Retry);
    // The later events wait behind the first: none overtakes it.
    assert_eq!(worker.deliver_next().await.unwrap(), Step::Empty);
    let first = deliveries(&app, &id).await[0].clone();
    assert_eq!(
        (
            first["state"].as_str(),
            first["attempts"].as_i64(),
            first["last_status"].as_i64()
        ),
        (Some("pending"), Some(1), Some(500))
    );
    // The first retry comes within seconds.
    let wait = millis(&first["next_attempt_at"]) - app.hoop.now().await.unwrap();
    assert!((0..=2_000).contains(&wait), "first retry in {wait} ms");

    app.advance(Duration::from_secs(2));
    assert_eq!(worker.deliver_next().await.unwrap(), Step::Retry);
    let throttled = deliveries(&app, &id).await[0].clone();
    assert_eq!(throttled["last_status"], 429);
    // Retry-After is honoured: not due before its 30 seconds.
    app.advance(Duration::from_secs(25));
    assert_eq!(worker.deliver_next().await.unwrap(), Step::Empty);
    app.advance(Duration::from_secs(6));
    assert_eq!(worker.deliver_next().await.unwrap(), Step::Retry);
    let dropped = deliveries(&app, &id).await[0].clone();
    assert_eq!(dropped["last_status"], Value::Null);
    assert!(
        dropped["last_error"].as_str().unwrap().len() > 5,
        "{dropped}"
    );

    app.advance(Duration::from_secs(60));
    assert_eq!(drain(&worker).await, vec![Step::Delivered; 4]);

    let got = siem.requests();
    assert_eq!(got.len(), 7, "three failures, then four deliveries");
    assert!(got.iter().all(|r| r.verified));
    // The failed attempts and the success are one event, by its id.
    assert!(got[..4].iter().all(|r| r.id == got[0].id));
    let mut seen = HashSet::new();
    let unique: Vec<&str> = got
        .iter()
        .filter(|r| seen.insert(r.id.clone()))
        .map(|r| r.body["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        unique,
        [
            "access_request.created",
            "access_request.group_approved",
            "access_request.group_approved",
            "access_request.approved"
        ]
    );
    let first = deliveries(&app, &id).await[0].clone();
    assert_eq!(
        (first["state"].as_str(), first["attempts"].as_i64()),
        (Some("delivered"), Some(4))
    );
}

async fn a_receiver_down_for_the_whole_window_is_given_up(backend: Backend) {
    let down = Receiver::start(SECRET).await;
    down.set_down(true);
    let up = Receiver::start(SECRET).await;
    let config = webhook(
        "down",
        &down.url(),
        "allow_private = true\ngive_up_after = \"10s\"",
    ) + &webhook("up", &up.url(), "allow_private = true");
    let app = TestApp::spawn_with(backend, &config).await;
    // The request flow does not wait for deliveries.
    let id = approved(&app, "SELECT 1").await;
    assert_eq!(app.request(&id).await["status"], "approved");

    let worker = app.delivery_worker();
    for _ in 0..100 {
        if worker.deliver_next().await.unwrap() == Step::Empty {
            let all = deliveries(&app, &id).await;
            if all.iter().all(|d| d["state"] != "pending") {
                break;
            }
            app.advance(Duration::from_secs(5));
        }
    }
    let all = deliveries(&app, &id).await;
    let states = |to: &str| -> Vec<String> {
        all.iter()
            .filter(|d| d["destination"] == to)
            .map(|d| d["state"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(states("down"), ["given_up"; 4]);
    assert_eq!(states("up"), ["delivered"; 4]);
    assert_eq!(up.requests().len(), 4);
    assert!(down.requests().is_empty());

    // Each give-up is in the audit trail with the last error.
    let events = app.store().await.audit_events(Some(&id)).await.unwrap();
    let given_up: Vec<_> = events
        .iter()
        .filter(|e| e.kind == "delivery_given_up")
        .collect();
    assert_eq!(given_up.len(), 4);
    assert_eq!(given_up[0].detail["destination"], "down");
    assert_eq!(given_up[0].detail["event"], "access_request.created");
    assert!(
        given_up[0].detail["last_error"]
            .as_str()
            .is_some_and(|e| !e.is_empty())
    );
    assert!(given_up[0].detail["attempts"].as_i64().unwrap() >= 2);
}

async fn private_addresses_are_refused_without_allow_private(backend: Backend) {
    let receiver = Receiver::start(SECRET).await;
    let port = receiver
        .url()
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches("/hook")
        .to_string();
    // One by IP literal, one by a name that resolves to loopback (checked by the resolver).
    let config = webhook("literal", &receiver.url(), "")
        + &webhook("named", &format!("http://localhost:{port}/hook"), "");
    let app = TestApp::spawn_with(backend, &config).await;
    let id = app.held("SELECT 1").await;
    let worker = app.delivery_worker();
    assert_eq!(drain(&worker).await, [Step::Retry, Step::Retry]);
    for d in deliveries(&app, &id).await {
        assert_eq!(d["state"], "pending");
        let error = d["last_error"].as_str().unwrap();
        assert!(error.contains("allow_private"), "{error}");
        assert!(
            error.contains("127.0.0.1") || error.contains("::1"),
            "{error}"
        );
    }
    let ping = app
        .post("root@x.com", "/api/v1/webhooks/named/test", None)
        .await;
    assert_eq!(ping.status, StatusCode::OK);
    assert_eq!(ping.body["delivered"], false);
    assert!(
        ping.body["error"]
            .as_str()
            .unwrap()
            .contains("allow_private")
    );
    assert!(
        receiver.requests().is_empty(),
        "nothing reached the private address"
    );
}

async fn a_gone_receiver_switches_its_webhook_off(backend: Backend) {
    let (siem, app) = with_siem(backend).await;
    siem.plan(vec![Reply::Status(410)]);
    let id = app.held("SELECT 1").await;
    let worker = app.delivery_worker();
    assert_eq!(drain(&worker).await, [Step::Disabled]);

    let hooks = app.get("root@x.com", "/api/v1/webhooks").await;
    assert_eq!(hooks.status, StatusCode::OK);
    assert_eq!(hooks.body["items"][0]["state"], "disabled");
    assert!(
        hooks.body["items"][0]["disabled_reason"]
            .as_str()
            .unwrap()
            .contains("410")
    );
    let audit = app
        .store()
        .await
        .audit_events(Some("webhook:siem"))
        .await
        .unwrap();
    assert_eq!(
        audit.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        ["destination_disabled"]
    );

    // Nothing more goes to it.
    assert_eq!(
        app.approve("bob@x.com", &id, None).await.status,
        StatusCode::OK
    );
    app.held("SELECT 2").await;
    assert_eq!(drain(&worker).await, []);
    let states: Vec<Value> = deliveries(&app, &id)
        .await
        .iter()
        .map(|d| d["state"].clone())
        .collect();
    assert_eq!(states, ["dropped"]);
    assert_eq!(siem.requests().len(), 1);
}

async fn admins_list_webhooks_page_their_attempts_and_send_pings(backend: Backend) {
    let siem = Receiver::start(SECRET).await;
    let app = TestApp::spawn_with(
        backend,
        &webhook(
            "siem",
            &format!("{}?token=hunter2", siem.url()),
            "allow_private = true",
        ),
    )
    .await;
    let denied = app.get("bob@x.com", "/api/v1/webhooks").await;
    assert_eq!(
        (denied.status, denied.code()),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    let hooks = app.get("root@x.com", "/api/v1/webhooks").await;
    assert_eq!(hooks.status, StatusCode::OK);
    let hook = &hooks.body["items"][0];
    assert_eq!(hook["name"], "siem");
    assert_eq!(hook["url"], siem.url(), "the query string is not shown");
    assert_eq!(hook["state"], "enabled");
    assert_eq!(
        hook["events"].as_array().unwrap().len(),
        hoopbot::domain::Event::ALL.len()
    );

    siem.plan(vec![Reply::Status(500), Reply::Status(503)]);
    let mut answers = Vec::new();
    for _ in 0..4 {
        let ping = app
            .post("root@x.com", "/api/v1/webhooks/siem/test", None)
            .await;
        assert_eq!(ping.status, StatusCode::OK, "{:?}", ping.body);
        answers.push((
            ping.body["delivered"].as_bool().unwrap(),
            ping.body["status"].as_i64(),
        ));
    }
    assert_eq!(
        answers,
        [
            (false, Some(500)),
            (false, Some(503)),
            (true, Some(200)),
            (true, Some(200))
        ]
    );
    let pings = siem.requests();
    assert_eq!(pings.len(), 4);
    assert!(pings.iter().all(|r| r.verified && r.body["type"] == "ping"));

    // Newest first, two at a time.
    let page = app
        .get("root@x.com", "/api/v1/webhooks/siem/deliveries?limit=2")
        .await;
    assert_eq!(page.status, StatusCode::OK);
    let statuses: Vec<i64> = page.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status"].as_i64().unwrap())
        .collect();
    assert_eq!(statuses, [200, 200]);
    let cursor = page.body["next_cursor"].as_str().unwrap().to_string();
    let next = app
        .get(
            "root@x.com",
            &format!("/api/v1/webhooks/siem/deliveries?limit=2&cursor={cursor}"),
        )
        .await;
    let statuses: Vec<i64> = next.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status"].as_i64().unwrap())
        .collect();
    assert_eq!(statuses, [503, 500]);
    assert_eq!(next.body["next_cursor"], Value::Null);
    let item = &next.body["items"][0];
    assert!(item["latency_ms"].is_i64() && item["at"].is_string() && item["event"] == "ping");

    // A failed delivery's error, which every reader of the request sees, leaves the URL (and
    // the token in its query string) out.
    siem.set_down(true);
    let id = app.held("SELECT 1").await;
    assert_eq!(drain(&app.delivery_worker()).await, [Step::Retry]);
    let error = deliveries(&app, &id).await[0]["last_error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        !error.contains("hunter2") && !error.contains("/hook"),
        "{error}"
    );
    assert!(error.contains("error sending request"), "{error}");
    siem.set_down(false);

    let unknown = app
        .get("root@x.com", "/api/v1/webhooks/nope/deliveries")
        .await;
    assert_eq!(
        (unknown.status, unknown.code()),
        (StatusCode::NOT_FOUND, "not_found")
    );
    let bad = app
        .get("root@x.com", "/api/v1/webhooks/siem/deliveries?cursor=abc")
        .await;
    assert_eq!(
        (bad.status, bad.code()),
        (StatusCode::BAD_REQUEST, "invalid_input")
    );
    let not_admin = app
        .post("bob@x.com", "/api/v1/webhooks/siem/test", None)
        .await;
    assert_eq!(not_admin.status, StatusCode::FORBIDDEN);
    assert_eq!(siem.requests().len(), 4, "a refused ping sends nothing");
}

async fn the_cli_shows_webhooks_their_attempts_and_each_requests_deliveries(backend: Backend) {
    use crate::cli::{cli, text};
    let (siem, app) = with_siem(backend).await;
    siem.plan(vec![Reply::Status(503)]);
    let id = app.held("SELECT 1").await;
    let worker = app.delivery_worker();
    assert_eq!(drain(&worker).await, [Step::Retry]);

    let show = cli(&app, "bob@x.com", &["requests", "show", &id]).await;
    assert!(show.status.success(), "{}", text(&show.stderr));
    let shown = text(&show.stdout);
    assert!(
        shown.contains("Deliveries\n  webhook siem v1 created: failed HTTP 503, retry at "),
        "{shown}"
    );
    assert!(
        shown.contains("(1 attempt): HTTP 503 Service Unavailable"),
        "{shown}"
    );

    let list = cli(&app, "root@x.com", &["webhooks", "list"]).await;
    assert!(list.status.success(), "{}", text(&list.stderr));
    let listed = text(&list.stdout);
    assert!(listed.starts_with("NAME  STATE    URL"), "{listed}");
    assert!(
        listed.contains(&format!("siem  enabled  {}  1", siem.url())),
        "{listed}"
    );

    let ping = cli(&app, "root@x.com", &["webhooks", "test", "siem"]).await;
    assert!(ping.status.success(), "{}", text(&ping.stderr));
    assert!(
        text(&ping.stdout).starts_with("Ping to siem delivered (HTTP 200, "),
        "{}",
        text(&ping.stdout)
    );

    let attempts = cli(
        &app,
        "root@x.com",
        &["webhooks", "deliveries", "siem", "--limit", "1"],
    )
    .await;
    assert!(attempts.status.success(), "{}", text(&attempts.stderr));
    let page = text(&attempts.stdout);
    assert!(page.contains("ping"), "{page}");
    assert!(
        page.contains("More: hoop webhooks deliveries siem --cursor "),
        "{page}"
    );

    // Not an admin: a clear refusal and a failing exit code; an unknown name, the same.
    let denied = cli(&app, "bob@x.com", &["webhooks", "list"]).await;
    assert!(!denied.status.success());
    assert!(
        text(&denied.stderr).contains("only admins may list webhooks"),
        "{}",
        text(&denied.stderr)
    );
    let unknown = cli(&app, "root@x.com", &["webhooks", "test", "../me"]).await;
    assert!(!unknown.status.success());
    assert!(
        text(&unknown.stderr).contains("webhook \"../me\" not found; configured: siem"),
        "{}",
        text(&unknown.stderr)
    );

    siem.set_down(true);
    let failed = cli(&app, "root@x.com", &["webhooks", "test", "siem"]).await;
    assert!(!failed.status.success());
    assert!(
        text(&failed.stderr).starts_with("Ping to siem failed ("),
        "{}",
        text(&failed.stderr)
    );
}

/// Two `hoop serve` processes on one Postgres: a replica killed (SIGKILL) in the middle of a
/// delivery leaves it to the other, which finishes it once the claim lapses; and with both
/// running, each event is delivered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_deliver_each_event_once_and_finish_a_killed_replicas_delivery() {
    use crate::helpers::{POSTGRES_ENV, TestDb, postgres_url, skip, test_config_text};
    use crate::processes::{free_port, hoop};
    use crate::write_path::{ServerProcess, assert_chain_intact, until_ready};
    use std::process::Stdio;
    if postgres_url().is_none() {
        skip(POSTGRES_ENV);
        return;
    }
    hoopbot::install_crypto_provider();
    let db = TestDb::new(Backend::Postgres).await;
    let receiver = Receiver::start(SECRET).await;
    let dir = tempfile::tempdir().unwrap();
    let config = |port: u16| {
        let path = dir.path().join(format!("hoop-{port}.toml"));
        let text = test_config_text(&db.url).replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{port}\""),
        ) + &webhook("siem", &receiver.url(), "allow_private = true");
        std::fs::write(&path, text).unwrap();
        path
    };
    let serve = |port: u16| {
        ServerProcess(
            hoop()
                .args(["serve", "--config"])
                .arg(config(port))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let (a, b) = (free_port(), free_port());
    let token = |email: &str| {
        let out = hoop()
            .args(["token", "create", email, "--config"])
            .arg(config(a))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let (alice, bob) = (token("alice@x.com"), token("bob@x.com"));
    let http = reqwest::Client::new();
    let submit = |port: u16, command: String| {
        let (http, alice) = (http.clone(), alice.clone());
        async move {
            let reply = http
                .post(format!("http://127.0.0.1:{port}/api/v1/exec"))
                .bearer_auth(&alice)
                .json(&serde_json::json!({ "connection": "prod-db", "command": command }))
                .send()
                .await
                .unwrap();
            assert_eq!(reply.status(), StatusCode::CREATED);
            reply.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };

    // Replica A takes the first delivery; the receiver holds on to it, and A is killed.
    receiver.plan(vec![Reply::Delay(Duration::from_secs(30))]);
    let mut replica_a = serve(a);
    until_ready(&http, a).await;
    let first = submit(a, "SELECT 'first'".into()).await;
    let held = receiver.wait_for(1, Duration::from_secs(10)).await;
    replica_a.kill();
    // Replica B finishes it once A's claim lapses (the webhook's 2 s timeout and a margin).
    let _replica_b = serve(b);
    until_ready(&http, b).await;
    let got = receiver.wait_for(2, Duration::from_secs(30)).await;
    assert_eq!(got[1].id, held[0].id, "the same event, by its webhook-id");
    assert!(got.iter().all(|r| r.verified));

    // Both replicas running: every event once.
    let _replica_a = serve(a);
    until_ready(&http, a).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        let port = if i % 2 == 0 { a } else { b };
        ids.push(submit(port, format!("SELECT {i}")).await);
    }
    for (i, id) in ids.iter().enumerate() {
        let port = if i % 2 == 0 { b } else { a };
        let reply = http
            .post(format!(
                "http://127.0.0.1:{port}/api/v1/access-requests/{id}/approve"
            ))
            .bearer_auth(&bob)
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), StatusCode::OK);
    }
    receiver.wait_for(2 + 40, Duration::from_secs(30)).await;
    // Every delivery recorded as delivered at its first attempt: attempts are counted when a
    // replica claims a delivery, before it sends, so no duplicate can be on its way after this.
    let store = hoopbot::store::connect(&db.url, hoopbot::changes::ChangeHub::new(), None)
        .await
        .unwrap();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let settled = eventually(Duration::from_secs(30), || async {
        let deliveries = store.deliveries_of(&ids).await.unwrap();
        if deliveries.len() == 40
            && deliveries
                .iter()
                .all(|d| d.state == hoopbot::store::DeliveryState::Delivered)
        {
            Ok(deliveries)
        } else {
            Err(format!("40 deliveries delivered: {deliveries:#?}"))
        }
    })
    .await;
    assert!(settled.iter().all(|d| d.attempts == 1), "{settled:#?}");
    let all = receiver.requests().into_iter().skip(2).collect::<Vec<_>>();
    assert!(all.iter().all(|r| r.verified));
    let mut per_event = std::collections::HashMap::new();
    for r in &all {
        *per_event.entry(r.id.clone().unwrap()).or_insert(0) += 1;
    }
    assert_eq!(
        per_event.len(),
        40,
        "created and group_approved of 20 requests"
    );
    assert!(per_event.values().all(|&n| n == 1), "{per_event:?}");

    let first_deliveries = store.deliveries_of(&[first.as_str()]).await.unwrap();
    assert_eq!(first_deliveries.len(), 1);
    assert_eq!(
        (first_deliveries[0].state, first_deliveries[0].attempts),
        (hoopbot::store::DeliveryState::Delivered, 2),
        "one attempt by the killed replica, one by the other"
    );
    assert_chain_intact(&db.url).await;
}

async fn a_webhook_removed_from_the_config_is_given_up_at_once(backend: Backend) {
    let (siem, app) = with_siem(backend).await;
    siem.set_down(true);
    let id = app.held("SELECT 1").await;
    assert_eq!(drain(&app.delivery_worker()).await, [Step::Retry]);
    // A replica whose config no longer has the webhook: nobody to deliver to, nothing to wait for.
    app.advance(Duration::from_secs(5));
    let ports = hoopbot::app::delivery_ports(
        app.store().await,
        hoopbot::changes::ChangeHub::new(),
        hoopbot::domain::Clock::shifted(app.now.clone()),
    );
    let without = Worker::new(ports, Vec::new());
    assert_eq!(without.deliver_next().await.unwrap(), Step::GaveUp);
    let delivery = deliveries(&app, &id).await[0].clone();
    assert_eq!(delivery["state"], "given_up");
    assert_eq!(
        delivery["last_error"],
        "webhook siem is no longer configured"
    );
    let events = app.store().await.audit_events(Some(&id)).await.unwrap();
    assert_eq!(events.last().unwrap().kind, "delivery_given_up");
}

async fn an_unreadable_snapshot_is_given_up_at_once(backend: Backend) {
    let (siem, app) = with_siem(backend).await;
    // One snapshot that is not JSON at all, and one that no longer reads as a request (as a
    // renamed field would leave it).
    let garbled = app.held("SELECT 1").await;
    let outdated = app.held("SELECT 2").await;
    execute_sql(
        &app.db.url,
        format!("update outbox set payload = '{{not json' where request_id = '{garbled}'"),
    )
    .await;
    execute_sql(
        &app.db.url,
        format!(
            "update outbox set payload = '{{\"version\": 1, \"request\": {{\"id\": \"{outdated}\"}}}}' \
             where request_id = '{outdated}'"
        ),
    )
    .await;
    // Retrying would read the same snapshot again: each is given up on its first attempt.
    assert_eq!(
        drain(&app.delivery_worker()).await,
        [Step::GaveUp, Step::GaveUp]
    );
    assert!(siem.requests().is_empty());
    for (id, why) in [
        (&garbled, "key must be a string"),
        (&outdated, "missing field"),
    ] {
        let delivery = deliveries(&app, id).await[0].clone();
        assert_eq!(
            (&delivery["state"], &delivery["attempts"]),
            (&Value::from("given_up"), &Value::from(1))
        );
        let error = delivery["last_error"].as_str().unwrap();
        assert!(
            error.starts_with("the event's snapshot cannot be read") && error.contains(why),
            "{error}"
        );
        let events = app.store().await.audit_events(Some(id)).await.unwrap();
        let given_up = events.last().unwrap();
        assert_eq!(given_up.kind, "delivery_given_up");
        assert_eq!(given_up.detail["last_error"], error);
    }
}

/// A replica killed while a webhook receiver holds its attempt leaves a claim that lapses after
/// the webhook's own timeout and margin, even with Slack (whose attempts take longer) configured.
async fn a_webhook_claim_lapses_after_a_webhook_attempt_not_slacks(backend: Backend) {
    let siem = Receiver::start(SECRET).await;
    let slack = FakeSlack::start().await;
    let config = slack.config("")
        + &format!(
            "\n[[webhooks]]\nname = \"siem\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\n\
             events = [\"access_request.*\"]\ntimeout = \"10s\"\nallow_private = true\n",
            siem.url()
        );
    let app = TestApp::spawn_with(backend, &config).await;
    app.held("SELECT 1").await;
    // The webhook's delivery is claimed first; its receiver holds on to it, and the attempt dies.
    siem.plan(vec![Reply::Delay(Duration::from_secs(60))]);
    let worker = app.delivery_worker();
    let attempt = tokio::spawn(async move { worker.deliver_next().await });
    siem.wait_for(1, Duration::from_secs(10)).await;
    attempt.abort();
    // Slack's delivery of the same event is not held up by it.
    let worker = app.delivery_worker();
    assert_eq!(worker.deliver_next().await.unwrap(), Step::Delivered);
    assert_eq!(worker.deliver_next().await.unwrap(), Step::Empty);
    // The webhook's claim lapses after its 10 s timeout and the 5 s margin, not Slack's minute.
    app.advance(Duration::from_secs(16));
    assert_eq!(worker.deliver_next().await.unwrap(), Step::Delivered);
    let got = siem.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(got[1].id, got[0].id, "the same event, by its webhook-id");
}
