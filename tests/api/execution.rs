//! Agents running approved jobs through the agent protocol: exactly once, the exact command, and a
//! clean record when something goes wrong.

use std::process::{Command, Stdio};
use std::time::Duration;

use hoopbot::config::{ConnectionTarget, ConnectionType};
use hoopbot::store::TokenSelector;
use reqwest::StatusCode;
use serde_json::json;
use sqlx::Connection;

use crate::helpers::{Backend, Reply, TestApp, until};
use crate::on_both_backends;

on_both_backends!(
    eight_agents_run_two_hundred_jobs_exactly_once,
    a_tampered_command_is_refused_and_recorded,
    a_killed_agent_leaves_its_job_failed_and_never_rerun,
    database_errors_come_back_as_failed_results,
    agents_only_claim_their_own_connections,
    heartbeats_keep_a_job_and_only_its_agent_may_report,
    an_offer_nobody_starts_returns_to_approved_and_then_runs_once,
    a_result_of_megabytes_is_taken,
    an_approved_job_no_agent_picks_up_fails_at_its_deadline,
    an_approved_job_can_be_withdrawn_until_an_agent_starts_it,
    a_revoked_token_gets_no_job_even_while_its_long_poll_waits,
    the_agent_name_embedded_is_reserved,
    sweeps_at_once_move_each_request_once,
    a_sweep_skips_rows_another_replica_holds,
    restarts_while_jobs_flow_lose_no_job_and_run_none_twice,
);

/// The reproduction of lost claims: agents stop (and the server restarts) again and again while
/// jobs flow, each stop landing while claims are in flight. Whatever was claimed but not started
/// when an agent stopped comes back; in the end every job has run exactly once and none failed.
async fn restarts_while_jobs_flow_lose_no_job_and_run_none_twice(backend: Backend) {
    let mut app = TestApp::spawn(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let target = counter_db(&dir).await;
    let mut ids = Vec::new();
    for round in 0..12 {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut agents = Vec::new();
        for _ in 0..2 {
            let agent = app
                .agent("racer", vec![("counter".into(), sqlite_target(&target))])
                .await;
            let stopped = stopped.clone();
            agents.push(tokio::spawn(async move { agent.run(stopped).await }));
        }
        let before = runs(&target).await.len();
        for job in 0..5 {
            let n = round * 5 + job;
            let command = format!(
                "insert into runs (job, n) values ({n}, 1) on conflict (job) do update set n = n + 1"
            );
            // Not `approved()`: a running agent may have taken the job before the reply is read.
            let reply = app.submit("alice@x.com", "counter", &command).await;
            assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
            ids.push(reply.body["id"].as_str().unwrap().to_string());
        }
        // Stop everything as soon as this round's jobs are flowing, with more still being claimed.
        until(Duration::from_secs(30), "this round's jobs run", || async {
            runs(&target).await.len() > before
        })
        .await;
        stop.send_replace(true);
        for agent in agents {
            agent.await.unwrap().unwrap();
        }
        // The server restarts too (on a new port, so only once its agents are gone).
        app.stop_and_start().await;
    }
    // Offers that were never started lapse and go back to approved; one more agent drains them.
    app.advance(hoopbot::service::OFFER_TIME + Duration::from_secs(1));
    app.hoop.sweep().await.unwrap();
    let agent = app
        .agent("racer", vec![("counter".into(), sqlite_target(&target))])
        .await;
    while agent.run_once(Duration::ZERO).await.unwrap().is_some() {}

    let counted = runs(&target).await;
    assert_eq!(counted.len(), ids.len(), "every job ran");
    assert!(
        counted.iter().all(|(_, n)| *n == 1),
        "a job ran twice: {counted:?}"
    );
    for id in &ids {
        assert_eq!(app.request(id).await["status"], "executed", "{id}");
    }
}

/// POSTs `body` to the agent protocol's `path` with `token`.
async fn agent_call(app: &TestApp, token: &str, path: &str, body: serde_json::Value) -> Reply {
    app.send(
        app.client
            .post(app.url(&format!("/api/v1/agent{path}")))
            .bearer_auth(token)
            .json(&body),
    )
    .await
}

/// Claims the next job over HTTP without starting it; returns its id and offer.
async fn offered(app: &TestApp, token: &str) -> (String, String) {
    let claimed = agent_call(app, token, "/jobs/claim", json!({ "timeout_s": 0 })).await;
    assert_eq!(claimed.status, StatusCode::OK, "{:?}", claimed.body);
    assert_eq!(claimed.body["job"]["status"], "approved");
    (
        claimed.body["job"]["id"].as_str().unwrap().to_string(),
        claimed.body["offer"].as_str().unwrap().to_string(),
    )
}

async fn an_offer_nobody_starts_returns_to_approved_and_then_runs_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let target = counter_db(&dir).await;
    let id = approved(&app, "counter", "insert into runs values (1, 1)").await;
    // An agent claims and then stops (or never hears the reply) before starting the job.
    let gone = app.agent_token("racer").await;
    let (offered_id, stale_offer) = offered(&app, &gone).await;
    assert_eq!(offered_id, id);
    assert_eq!(
        app.request(&id).await["status"],
        "approved",
        "nothing runs yet"
    );

    let agent = app
        .agent("racer", vec![("counter".into(), sqlite_target(&target))])
        .await;
    assert_eq!(
        agent.run_once(Duration::ZERO).await.unwrap(),
        None,
        "an offered job is no one else's while the offer holds"
    );
    assert_eq!(app.hoop.sweep().await.unwrap(), 0);
    app.advance(hoopbot::service::OFFER_TIME + Duration::from_secs(1));
    assert_eq!(
        app.hoop.sweep().await.unwrap(),
        1,
        "the lapsed offer returns"
    );
    assert_eq!(app.request(&id).await["status"], "approved");

    assert_eq!(
        agent.run_once(Duration::ZERO).await.unwrap(),
        Some(id.clone())
    );
    assert_eq!(runs(&target).await, [(1, 1)], "ran exactly once");
    assert_eq!(app.request(&id).await["status"], "executed");
    // The first agent coming back with its old offer may not start (or run) it again.
    let late = agent_call(
        &app,
        &gone,
        &format!("/jobs/{id}/start"),
        json!({ "offer": stale_offer }),
    )
    .await;
    assert_eq!(
        (late.status, late.code()),
        (StatusCode::CONFLICT, "already_decided")
    );
    assert_eq!(
        app.audit_kinds(&id).await,
        [
            "created",
            "auto_approved",
            "claimed",
            "offer_lapsed",
            "claimed",
            "started",
            "executed"
        ]
    );

    // The server's own agent drops its claim the same way when it stops mid-claim: a claim
    // future dropped after the offer committed leaves the job approved, to return at the lapse.
    let second = approved(&app, "counter", "insert into runs values (2, 1)").await;
    let connections = ["counter".parse().unwrap()];
    let claimed = app
        .hoop
        .claim("racer", None, &connections, Duration::ZERO)
        .await
        .unwrap()
        .unwrap();
    drop(claimed); // never started
    assert_eq!(app.request(&second).await["status"], "approved");
    // A start with a made-up offer is refused too.
    let guessed = agent_call(
        &app,
        &gone,
        &format!("/jobs/{second}/start"),
        json!({ "offer": "guess" }),
    )
    .await;
    assert_eq!(guessed.status, StatusCode::CONFLICT);
    app.advance(hoopbot::service::OFFER_TIME + Duration::from_secs(1));
    assert_eq!(app.hoop.sweep().await.unwrap(), 1);
    assert_eq!(agent.run_once(Duration::ZERO).await.unwrap(), Some(second));
    assert_eq!(runs(&target).await, [(1, 1), (2, 1)]);
}

async fn a_result_of_megabytes_is_taken(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // 3 MB of output: far over the command-sized body limit every other route keeps.
    let id = approved(
        &app,
        "box",
        "head -c 3000000 /dev/zero | tr '\\0' x; exit 4",
    )
    .await;
    let target = ConnectionTarget {
        kind: ConnectionType::Command,
        url: None,
        command: Some(vec!["bash".into()]),
        statement_timeout: Some(Duration::from_secs(30)),
        max_rows: 100,
        max_output_bytes: hoopbot::config::DEFAULT_MAX_OUTPUT_BYTES,
        env: Default::default(),
    };
    let agent = app.agent("racer", vec![("box".into(), target)]).await;
    assert_eq!(
        agent.run_once(Duration::ZERO).await.unwrap(),
        Some(id.clone())
    );
    let request = app.request(&id).await;
    assert_eq!(
        request["status"], "executed",
        "{:?}",
        request["result"]["error"]
    );
    assert_eq!(request["result"]["exit_code"], 4);
    let stdout = request["result"]["stdout"].as_str().unwrap();
    assert_eq!(stdout.len(), 3_000_000);
    assert!(stdout.bytes().all(|b| b == b'x'));
}

async fn an_approved_job_no_agent_picks_up_fails_at_its_deadline(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let target = counter_db(&dir).await;
    let id = approved(&app, "counter", "insert into runs values (1, 1)").await;
    app.advance(Duration::from_secs(10 * 60));
    // The deadline holds even before any sweep: an agent turning up now gets nothing.
    let agent = app
        .agent("racer", vec![("counter".into(), sqlite_target(&target))])
        .await;
    assert_eq!(agent.run_once(Duration::ZERO).await.unwrap(), None);
    assert_eq!(runs(&target).await, []);

    assert_eq!(app.hoop.sweep().await.unwrap(), 1);
    let request = app.request(&id).await;
    assert_eq!(request["status"], "failed");
    assert_eq!(request["result"]["error"], "no agent picked it up");
    assert_eq!(
        app.audit_kinds(&id).await,
        ["created", "auto_approved", "failed"]
    );
    let outbox = app.store().await.outbox().await.unwrap();
    assert!(
        outbox
            .iter()
            .any(|o| o.request_id == id && o.topic == "access_request.failed"),
        "{outbox:?}"
    );
    assert_eq!(app.hoop.sweep().await.unwrap(), 0, "and never twice");

    // Inside the deadline (by more than this test takes), the job still runs.
    let fresh = approved(&app, "counter", "insert into runs values (2, 1)").await;
    app.advance(Duration::from_secs(10 * 60 - 30));
    assert_eq!(app.hoop.sweep().await.unwrap(), 0);
    assert_eq!(agent.run_once(Duration::ZERO).await.unwrap(), Some(fresh));
    assert_eq!(runs(&target).await, [(2, 1)]);
}

async fn an_approved_job_can_be_withdrawn_until_an_agent_starts_it(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let target = counter_db(&dir).await;
    let agent = app
        .agent("racer", vec![("counter".into(), sqlite_target(&target))])
        .await;

    let waiting = approved(&app, "counter", "insert into runs values (1, 1)").await;
    let by_other = app.cancel("bob@x.com", &waiting).await;
    assert_eq!(
        (by_other.status, by_other.code()),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    let cancelled = app.cancel("alice@x.com", &waiting).await;
    assert_eq!(cancelled.status, StatusCode::OK, "{:?}", cancelled.body);
    assert_eq!(cancelled.body["status"], "cancelled");
    assert_eq!(
        app.audit_kinds(&waiting).await,
        ["created", "auto_approved", "cancelled"]
    );

    // Offered but not started: an admin withdraws it, and the agent's start then loses.
    let offered_job = approved(&app, "counter", "insert into runs values (2, 1)").await;
    let token = app.agent_token("racer").await;
    let (id, offer) = offered(&app, &token).await;
    assert_eq!(id, offered_job);
    assert_eq!(
        app.cancel("root@x.com", &id).await.body["status"],
        "cancelled"
    );
    let start = agent_call(
        &app,
        &token,
        &format!("/jobs/{id}/start"),
        json!({ "offer": offer }),
    )
    .await;
    assert_eq!(
        (start.status, start.code()),
        (StatusCode::CONFLICT, "already_decided")
    );
    assert_eq!(agent.run_once(Duration::ZERO).await.unwrap(), None);
    assert_eq!(runs(&target).await, [], "nothing withdrawn ever ran");

    // Once started, the command may be running: too late.
    let started = approved(&app, "counter", "insert into runs values (3, 1)").await;
    let (id, offer) = offered(&app, &token).await;
    assert_eq!(id, started);
    let ok = agent_call(
        &app,
        &token,
        &format!("/jobs/{id}/start"),
        json!({ "offer": offer }),
    )
    .await;
    assert_eq!(ok.body["job"]["status"], "running");
    // Starting again with the same offer (a lost reply) answers with the running job.
    let again = agent_call(
        &app,
        &token,
        &format!("/jobs/{id}/start"),
        json!({ "offer": offer }),
    )
    .await;
    assert_eq!(again.status, StatusCode::OK, "{:?}", again.body);
    assert_eq!(again.body["job"]["version"], ok.body["job"]["version"]);
    let late = app.cancel("alice@x.com", &id).await;
    assert_eq!(
        (late.status, late.code()),
        (StatusCode::CONFLICT, "already_decided")
    );
}

/// Revokes `token`; returns how many tokens that revoked.
async fn revoke(app: &TestApp, token: &str) -> usize {
    let selector = TokenSelector::Digest(hoopbot::token::digest(token));
    let audit = |token: &hoopbot::store::TokenRecord| hoopbot::store::SubjectEvent {
        subject_id: format!("token:{}", hoopbot::token::id(&token.sha256)),
        entry: hoopbot::store::AuditEntry::system(
            hoopbot::audit::AuditKind::TokenRevoked,
            serde_json::json!({}),
        ),
    };
    app.store()
        .await
        .revoke_tokens(&selector, app.hoop.clock.now(), &audit)
        .await
        .unwrap()
        .len()
}

async fn a_revoked_token_gets_no_job_even_while_its_long_poll_waits(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // A long poll that authenticated before the revoke, waiting in the service.
    let token = app.agent_token("racer").await;
    let digest = hoopbot::token::digest(&token);
    let hoop = app.hoop.clone();
    let waiting = tokio::spawn(async move {
        hoop.claim(
            "racer",
            Some(&digest),
            &["counter".parse().unwrap()],
            Duration::from_secs(30),
        )
        .await
    });
    assert_eq!(revoke(&app, &token).await, 1);
    let id = approved(&app, "counter", "select 1").await;
    match waiting.await.unwrap() {
        Err(hoopbot::error::Error::Unauthenticated(_)) => {}
        other => panic!("a revoked token's poll must not get a job: {other:?}"),
    }
    assert_eq!(app.request(&id).await["status"], "approved");
    assert_eq!(app.audit_kinds(&id).await, ["created", "auto_approved"]);
    app.cancel("alice@x.com", &id).await;

    // The same over HTTP: the poll's answer is 401, never the job.
    let token = app.agent_token("racer").await;
    let polling = tokio::spawn(
        app.client
            .post(app.url("/api/v1/agent/jobs/claim"))
            .bearer_auth(&token)
            .json(&json!({ "timeout_s": 30 }))
            .send(),
    );
    assert_eq!(revoke(&app, &token).await, 1);
    let id = approved(&app, "counter", "select 2").await;
    let reply = polling.await.unwrap().unwrap();
    assert_eq!(reply.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.audit_kinds(&id).await, ["created", "auto_approved"]);
}

async fn the_agent_name_embedded_is_reserved(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // A token made for that name some other way (an older hoopbot) is refused at the API.
    let token = app.agent_token("embedded").await;
    let claim = agent_call(&app, &token, "/jobs/claim", json!({ "timeout_s": 0 })).await;
    assert_eq!(
        (claim.status, claim.code()),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    assert!(
        claim.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("reserved"),
        "{:?}",
        claim.body
    );

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hoop.toml");
    std::fs::write(
        &config,
        format!("[server]\ndatabase_url = \"{}\"\n", app.db.url),
    )
    .unwrap();
    let before = app.hoop.tokens().await.unwrap().len();
    let out = Command::new(env!("CARGO_BIN_EXE_hoop"))
        .args(["token", "create", "--agent", "embedded", "--config"])
        .arg(&config)
        .env("HOOP_LOG", "error")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "no token printed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the agent name embedded is reserved"),
        "{stderr}"
    );
    assert_eq!(app.hoop.tokens().await.unwrap().len(), before);
}

async fn sweeps_at_once_move_each_request_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut ids = Vec::new();
    for i in 0..40 {
        ids.push(app.held(&format!("SELECT {i}")).await);
    }
    app.advance(Duration::from_secs(30 * 60));
    let (a, b) = tokio::join!(app.hoop.sweep(), app.hoop.sweep());
    assert_eq!(a.unwrap() + b.unwrap(), 40);
    for id in ids.iter().step_by(7) {
        assert_eq!(app.audit_kinds(id).await, ["created", "held", "expired"]);
    }
    let expired = app
        .store()
        .await
        .outbox()
        .await
        .unwrap()
        .iter()
        .filter(|o| o.topic == "access_request.expired")
        .count();
    assert_eq!(expired, 40);
}

/// On Postgres a replica skips the rows another one is moving instead of waiting for them and then
/// redoing the work. (SQLite has one writer at a time; there is nothing to skip.)
async fn a_sweep_skips_rows_another_replica_holds(backend: Backend) {
    if backend == Backend::Sqlite {
        return;
    }
    let app = TestApp::spawn(backend).await;
    let held = app.held("SELECT 1").await;
    let free = app.held("SELECT 2").await;
    app.advance(Duration::from_secs(30 * 60));
    // Another replica's sweep, mid-transaction, holding one overdue row.
    let mut other = sqlx::PgConnection::connect(&app.db.url).await.unwrap();
    sqlx::raw_sql("begin").execute(&mut other).await.unwrap();
    sqlx::query("select id from access_request where id = $1 for update")
        .bind(&held)
        .execute(&mut other)
        .await
        .unwrap();
    // A guard against a hang (waiting on the held row), not a timing assertion.
    let moved = tokio::time::timeout(Duration::from_secs(60), app.hoop.sweep())
        .await
        .expect("the sweep does not wait for rows another replica holds")
        .unwrap();
    assert_eq!(moved, 1);
    assert_eq!(app.request(&free).await["status"], "expired");
    sqlx::raw_sql("rollback").execute(&mut other).await.unwrap();
    assert_eq!(app.hoop.sweep().await.unwrap(), 1);
    assert_eq!(app.audit_kinds(&held).await, ["created", "held", "expired"]);
}

async fn heartbeats_keep_a_job_and_only_its_agent_may_report(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = approved(&app, "counter", "select 1").await;
    let racer = app.agent_token("racer").await;
    let call = |token: &str, path: String, body: serde_json::Value| {
        app.send(
            app.client
                .post(app.url(&path))
                .bearer_auth(token)
                .json(&body),
        )
    };
    let claimed = call(
        &racer,
        "/api/v1/agent/jobs/claim".into(),
        json!({ "timeout_s": 0 }),
    )
    .await;
    assert_eq!(claimed.body["job"]["id"], id.as_str());
    // A claim is an offer: the job runs only once its agent starts it.
    assert_eq!(claimed.body["job"]["status"], "approved");
    assert_eq!(claimed.body["offer_s"], 10);
    let offer = claimed.body["offer"].as_str().unwrap().to_string();
    let started = call(
        &racer,
        format!("/api/v1/agent/jobs/{id}/start"),
        json!({ "offer": offer }),
    )
    .await;
    assert_eq!(started.body["job"]["status"], "running");
    assert_eq!(started.body["lease_s"], 30);

    app.advance(Duration::from_secs(20));
    let beat = call(
        &racer,
        format!("/api/v1/agent/jobs/{id}/heartbeat"),
        json!({}),
    )
    .await;
    assert_eq!(beat.status, StatusCode::OK, "{:?}", beat.body);
    app.advance(Duration::from_secs(20)); // 40 s after the claim, 20 s after the heartbeat
    assert_eq!(
        app.hoop.sweep().await.unwrap(),
        0,
        "the heartbeat extended the lease"
    );

    // Another agent can neither heartbeat nor report this job.
    let other = app.agent_token("other").await;
    let stolen = call(
        &other,
        format!("/api/v1/agent/jobs/{id}/result"),
        json!({ "results": [] }),
    )
    .await;
    assert_eq!(
        (stolen.status, stolen.code()),
        (StatusCode::FORBIDDEN, "forbidden")
    );

    app.advance(Duration::from_secs(11)); // past the extended lease
    assert_eq!(app.hoop.sweep().await.unwrap(), 1);
    // The agent was only slow: its late result is kept in the audit trail, the status stays.
    let late = call(
        &racer,
        format!("/api/v1/agent/jobs/{id}/result"),
        json!({ "results": [], "exit_code": 0 }),
    )
    .await;
    assert_eq!(late.status, StatusCode::OK, "{:?}", late.body);
    assert_eq!(late.body["job"]["status"], "failed");
    let request = app.request(&id).await;
    assert_eq!(request["result"]["error"], "agent lost; outcome unknown");
    // One late result per job: another is refused and leaves no trace.
    let twice = call(
        &racer,
        format!("/api/v1/agent/jobs/{id}/result"),
        json!({ "results": [], "exit_code": 1 }),
    )
    .await;
    assert_eq!(
        (twice.status, twice.code()),
        (StatusCode::CONFLICT, "already_decided")
    );
    assert_eq!(
        app.audit_kinds(&id).await,
        [
            "created",
            "auto_approved",
            "claimed",
            "started",
            "failed",
            "late_result"
        ]
    );
    // Anything more about a finished job is refused.
    let again = call(
        &racer,
        format!("/api/v1/agent/jobs/{id}/heartbeat"),
        json!({}),
    )
    .await;
    assert_eq!(
        (again.status, again.code()),
        (StatusCode::CONFLICT, "already_decided")
    );
}

pub(crate) fn sqlite_target(url: &str) -> ConnectionTarget {
    ConnectionTarget {
        kind: ConnectionType::Sqlite,
        url: Some(url.into()),
        command: None,
        statement_timeout: Some(Duration::from_secs(30)),
        max_rows: 10_000,
        max_output_bytes: 1 << 20,
        env: Default::default(),
    }
}

/// A SQLite target database with a `runs` table counting executions per job.
async fn counter_db(dir: &tempfile::TempDir) -> String {
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("target.db").display()
    );
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::raw_sql("pragma journal_mode = wal; create table runs (job integer primary key, n integer not null)")
        .execute(&mut conn)
        .await
        .unwrap();
    url
}

async fn runs(url: &str) -> Vec<(i64, i64)> {
    let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
    sqlx::query_as("select job, n from runs order by job")
        .fetch_all(&mut conn)
        .await
        .unwrap()
}

/// Submits `command` as alice on a connection that needs no approval; returns its id.
async fn approved(app: &TestApp, connection: &str, command: &str) -> String {
    let reply = app.submit("alice@x.com", connection, command).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    assert_eq!(reply.body["status"], "approved");
    reply.body["id"].as_str().unwrap().to_string()
}

async fn eight_agents_run_two_hundred_jobs_exactly_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let target = counter_db(&dir).await;
    let mut ids = Vec::new();
    for job in 0..200 {
        let command = format!(
            "insert into runs (job, n) values ({job}, 1) on conflict (job) do update set n = n + 1"
        );
        ids.push(approved(&app, "counter", &command).await);
    }
    let mut workers = Vec::new();
    for _ in 0..8 {
        let agent = app
            .agent("racer", vec![("counter".into(), sqlite_target(&target))])
            .await;
        workers.push(tokio::spawn(async move {
            let mut ran = 0;
            while agent.run_once(Duration::ZERO).await.unwrap().is_some() {
                ran += 1;
            }
            ran
        }));
    }
    let mut total = 0;
    for worker in workers {
        total += worker.await.unwrap();
    }
    assert_eq!(total, 200, "every job claimed once");
    let counted = runs(&target).await;
    assert_eq!(counted.len(), 200);
    assert!(
        counted.iter().all(|(_, n)| *n == 1),
        "a job ran twice: {counted:?}"
    );
    for id in ids.iter().step_by(37) {
        let request = app.request(id).await;
        assert_eq!(request["status"], "executed");
        assert_eq!(request["result"]["agent"], "racer");
        assert_eq!(request["result"]["results"][0]["rows_affected"], 1);
        assert_eq!(
            app.audit_kinds(id).await,
            ["created", "auto_approved", "claimed", "started", "executed"]
        );
    }
}

async fn a_tampered_command_is_refused_and_recorded(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let target = counter_db(&dir).await;
    let id = approved(&app, "counter", "insert into runs values (1, 1)").await;
    // Someone with database access swaps the approved command.
    let swap =
        "update access_request set command = 'insert into runs values (666, 1)' where id = $1";
    if app.db.url.starts_with("sqlite:") {
        let mut conn = sqlx::SqliteConnection::connect(&app.db.url).await.unwrap();
        sqlx::query(swap)
            .bind(&id)
            .execute(&mut conn)
            .await
            .unwrap();
    } else {
        let mut conn = sqlx::PgConnection::connect(&app.db.url).await.unwrap();
        sqlx::query(swap)
            .bind(&id)
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let agent = app
        .agent("racer", vec![("counter".into(), sqlite_target(&target))])
        .await;
    assert_eq!(
        agent.run_once(Duration::ZERO).await.unwrap(),
        Some(id.clone())
    );

    assert_eq!(runs(&target).await, [], "nothing ran");
    let request = app.request(&id).await;
    assert_eq!(request["status"], "failed");
    let error = request["result"]["error"].as_str().unwrap();
    assert!(
        error.contains("refused by agent racer") && error.contains("does not match the approved"),
        "{error}"
    );
    assert_eq!(
        app.audit_kinds(&id).await,
        ["created", "auto_approved", "claimed", "started", "failed"]
    );
}

async fn a_killed_agent_leaves_its_job_failed_and_never_rerun(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("started");
    // The job records that it started, then runs long enough for the agent to be killed mid-job;
    // the orphaned job then ends by itself.
    // Long enough that a loaded machine still sees it running before the kill.
    let command = format!("echo started >> {}; sleep 20", marker.display());
    let id = approved(&app, "box", &command).await;
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nserver_url = \"{}\"\ntoken = \"{}\"\n[[connections]]\nname = \"box\"\ntype = \"command\"\ncommand = [\"bash\"]\n",
            app.url(""),
            app.agent_token("racer").await
        ),
    )
    .unwrap();
    let mut agent = Command::new(env!("CARGO_BIN_EXE_hoop"))
        .args(["agent", "--config"])
        .arg(&config)
        .env("HOOP_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    until(
        Duration::from_secs(30),
        "the job is running and has started its work",
        || async {
            let status = app.request(&id).await["status"].clone();
            assert!(
                status == "approved" || status == "running",
                "the job ended before the agent could be killed: {status}"
            );
            marker.exists() && status == "running"
        },
    )
    .await;
    agent.kill().unwrap(); // SIGKILL: no chance to report
    agent.wait().unwrap();

    assert_eq!(app.hoop.sweep().await.unwrap(), 0, "the lease still holds");
    app.advance(Duration::from_secs(60));
    assert_eq!(app.hoop.sweep().await.unwrap(), 1);
    let request = app.request(&id).await;
    assert_eq!(request["status"], "failed");
    assert_eq!(request["result"]["error"], "agent lost; outcome unknown");

    // Another agent of the same name finds nothing to do: the job is never re-run by itself.
    let target = ConnectionTarget {
        kind: ConnectionType::Command,
        url: None,
        command: Some(vec!["bash".into()]),
        statement_timeout: None,
        max_rows: 100,
        max_output_bytes: 1 << 16,
        env: Default::default(),
    };
    let second = app.agent("racer", vec![("box".into(), target)]).await;
    assert_eq!(second.run_once(Duration::ZERO).await.unwrap(), None);
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "started\n");
}

async fn database_errors_come_back_as_failed_results(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let target = counter_db(&dir).await;
    let unknown_table = approved(&app, "counter", "select * from no_such_table").await;
    let agent = app
        .agent("racer", vec![("counter".into(), sqlite_target(&target))])
        .await;
    agent.run_once(Duration::ZERO).await.unwrap();
    let request = app.request(&unknown_table).await;
    assert_eq!(request["status"], "failed");
    assert!(
        request["result"]["error"]
            .as_str()
            .unwrap()
            .contains("no such table: no_such_table"),
        "{request}"
    );

    let unreachable = approved(&app, "counter", "select 1").await;
    let missing = format!("sqlite://{}", dir.path().join("missing/nope.db").display());
    let agent = app
        .agent("racer", vec![("counter".into(), sqlite_target(&missing))])
        .await;
    agent.run_once(Duration::ZERO).await.unwrap();
    let request = app.request(&unreachable).await;
    assert_eq!(request["status"], "failed");
    assert!(
        request["result"]["error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{request}"
    );
}

async fn agents_only_claim_their_own_connections(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    approved(&app, "counter", "select 1").await;
    let stranger = app.agent_token("stranger").await;
    let claim = app
        .send(
            app.client
                .post(app.url("/api/v1/agent/jobs/claim"))
                .bearer_auth(&stranger)
                .json(&json!({ "connections": ["counter"], "timeout_s": 0 })),
        )
        .await;
    assert_eq!(
        (claim.status, claim.code()),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    let nothing = app
        .send(
            app.client
                .post(app.url("/api/v1/agent/jobs/claim"))
                .bearer_auth(&stranger)
                .json(&json!({ "timeout_s": 0 })),
        )
        .await;
    assert_eq!(nothing.body["job"], serde_json::Value::Null);
    // `hoop agent` configured for a connection the server does not give it says so and stops.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nserver_url = \"{}\"\ntoken = \"{stranger}\"\n[[connections]]\nname = \"counter\"\ntype = \"sqlite\"\nurl = \"sqlite://x.db\"\n",
            app.url("")
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hoop"))
        .args(["agent", "--config"])
        .arg(&config)
        .env("HOOP_LOG", "error")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the server refused this agent: connection \"counter\" is not assigned to agent stranger"),
        "{stderr}"
    );

    // A user token cannot claim jobs, and an agent token cannot approve.
    let as_user = app
        .post(
            "bob@x.com",
            "/api/v1/agent/jobs/claim",
            Some(json!({ "timeout_s": 0 })),
        )
        .await;
    assert_eq!(
        (as_user.status, as_user.code()),
        (StatusCode::FORBIDDEN, "forbidden")
    );
}
