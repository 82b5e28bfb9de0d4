//! Agents running approved jobs through the agent protocol: exactly once, the exact command, and a
//! clean record when something goes wrong.

use std::process::{Command, Stdio};
use std::time::Duration;

use hoopbot::config::{ConnectionTarget, ConnectionType};
use reqwest::StatusCode;
use serde_json::json;
use sqlx::Connection;

use crate::helpers::{Backend, TestApp};
use crate::on_both_backends;

on_both_backends!(
    eight_agents_run_two_hundred_jobs_exactly_once,
    a_tampered_command_is_refused_and_recorded,
    a_killed_agent_leaves_its_job_failed_and_never_rerun,
    database_errors_come_back_as_failed_results,
    agents_only_claim_their_own_connections,
    heartbeats_keep_a_job_and_only_its_agent_may_report,
);

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
    assert_eq!(claimed.body["job"]["status"], "running");
    assert_eq!(claimed.body["lease_s"], 30);

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
    assert_eq!(
        app.audit_kinds(&id).await,
        [
            "created",
            "auto_approved",
            "claimed",
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

fn sqlite_target(url: &str) -> ConnectionTarget {
    ConnectionTarget {
        kind: ConnectionType::Sqlite,
        url: Some(url.into()),
        command: None,
        statement_timeout: Some(Duration::from_secs(30)),
        max_rows: 10_000,
        max_output_bytes: 1 << 20,
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
            ["created", "auto_approved", "claimed", "executed"]
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
        ["created", "auto_approved", "claimed", "failed"]
    );
}

async fn a_killed_agent_leaves_its_job_failed_and_never_rerun(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("started");
    // The job records that it started, then runs long enough for the agent to be killed mid-job;
    // the orphaned job then ends by itself.
    let command = format!("echo started >> {}; sleep 5", marker.display());
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
    // Wait until the job is running and has started its work.
    let mut version = 0;
    while !marker.exists() || app.request(&id).await["status"] != "running" {
        let waited = app
            .get(
                "alice@x.com",
                &format!("/api/v1/access-requests/{id}/wait?version={version}&timeout_s=5"),
            )
            .await;
        version = waited.body["version"].as_i64().unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
