//! The group-committed write path: what a failed group commit, a killed server and racing writers
//! leave behind. Every acknowledged write is stored and audited; every refused one left nothing.

use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use sqlx::Connection;

use crate::helpers::*;
use crate::on_both_backends;
use crate::processes::{free_port, hoop};

on_both_backends!(
    a_failed_group_commit_fails_only_its_own_write,
    acknowledged_writes_survive_a_kill_during_group_commits,
    racing_approvals_in_one_group_have_one_winner,
);

/// A transaction that holds the audit chain's head (SQLite: the whole write lock) until released,
/// so the writer's next commit waits and the writes behind it queue up into one group.
enum HeadLock {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl HeadLock {
    async fn take(url: &str) -> HeadLock {
        if url.starts_with("sqlite:") {
            let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
            sqlx::raw_sql("begin immediate; update audit_head set seq = seq where id = 1")
                .execute(&mut conn)
                .await
                .unwrap();
            HeadLock::Sqlite(conn)
        } else {
            let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::raw_sql("begin; update audit_head set seq = seq where id = 1")
                .execute(&mut conn)
                .await
                .unwrap();
            HeadLock::Postgres(conn)
        }
    }

    async fn release(self) {
        match self {
            HeadLock::Sqlite(mut conn) => {
                sqlx::raw_sql("commit").execute(&mut conn).await.unwrap();
            }
            HeadLock::Postgres(mut conn) => {
                sqlx::raw_sql("commit").execute(&mut conn).await.unwrap();
            }
        }
    }
}

/// Makes the database refuse any audit event that mentions "poison": on SQLite as the event is
/// inserted, on Postgres only at commit (a deferred constraint trigger), so the group's commit
/// itself fails.
fn poison(url: &str) -> String {
    if url.starts_with("sqlite:") {
        "create trigger poison before insert on audit_event when new.detail like '%poison%' \
         begin select raise(abort, 'refused by a test trigger'); end"
            .into()
    } else {
        "create function poison() returns trigger language plpgsql as $$ begin \
         if new.detail like '%poison%' then raise exception 'refused by a test trigger'; end if; \
         return new; end $$; \
         create constraint trigger poison after insert on audit_event \
         deferrable initially deferred for each row execute function poison()"
            .into()
    }
}

/// Returns once the server's writer, held up by a [`HeadLock`], has `n` writes waiting.
async fn until_writes_waiting(app: &TestApp, n: usize) {
    until(
        Duration::from_secs(30),
        &format!("{n} writes waiting for the writer"),
        || async { app.hoop.writes_waiting() == n },
    )
    .await;
}

async fn a_failed_group_commit_fails_only_its_own_write(backend: Backend) {
    let app = Arc::new(TestApp::spawn(backend).await);
    let mut ids = Vec::new();
    for i in 0..12 {
        ids.push(app.held(&format!("SELECT {i}")).await);
    }
    execute_sql(&app.db.url, poison(&app.db.url)).await;

    let lock = HeadLock::take(&app.db.url).await;
    let mut approvals = Vec::new();
    for id in &ids[1..] {
        let (app, id) = (app.clone(), id.clone());
        approvals.push(tokio::spawn(async move {
            app.approve("bob@x.com", &id, None).await
        }));
    }
    until_writes_waiting(&app, 11).await;
    // Queued behind the approvals, so it shares their group.
    let poisoned = {
        let (app, id) = (app.clone(), ids[0].clone());
        tokio::spawn(async move { app.reject("sam@x.com", &id, "poison").await })
    };
    until_writes_waiting(&app, 12).await;
    lock.release().await;

    let refused = poisoned.await.unwrap();
    assert_eq!(
        (refused.status, refused.code()),
        (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        "{:?}",
        refused.body
    );
    for approval in approvals {
        let reply = approval.await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    }

    // Nothing of the refused write is stored: not the rejection, not its version, not an event.
    let untouched = app.request(&ids[0]).await;
    assert_eq!(untouched["status"], "pending");
    assert_eq!(untouched["version"], 1);
    assert!(untouched["rejection"].is_null());
    assert_eq!(app.audit_kinds(&ids[0]).await, ["created", "held"]);
    // Everyone else's decision is.
    for id in &ids[1..] {
        let approved = app.request(id).await;
        assert_eq!(approved["version"], 2, "{approved}");
        assert_eq!(approved["approval_groups"][0]["decided_by"], "bob@x.com");
        assert_eq!(
            app.audit_kinds(id).await,
            ["created", "held", "group_approved"]
        );
    }
    assert_chain_intact(&app.db.url).await;
}

/// Each of 40 requests approved at once by a different group's approver, twice over: one group
/// commit sees two compare-and-sets on one request, and only one may win with the version both
/// read; the other decides again on what won.
async fn racing_approvals_in_one_group_have_one_winner(backend: Backend) {
    let app = Arc::new(TestApp::spawn(backend).await);
    let mut ids = Vec::new();
    for i in 0..40 {
        ids.push(app.held(&format!("SELECT {i}")).await);
    }
    let lock = HeadLock::take(&app.db.url).await;
    let mut decisions = Vec::new();
    for id in &ids {
        for who in ["bob@x.com", "dora@x.com", "sam@x.com"] {
            let (app, id) = (app.clone(), id.clone());
            decisions.push(tokio::spawn(async move {
                (who, app.approve(who, &id, None).await)
            }));
        }
    }
    until_writes_waiting(&app, decisions.len()).await;
    lock.release().await;
    let mut dba_wins = 0;
    for decision in decisions {
        let (who, reply) = decision.await.unwrap();
        match (who, reply.status) {
            ("sam@x.com", StatusCode::OK) => {}
            ("bob@x.com" | "dora@x.com", StatusCode::OK) => dba_wins += 1,
            ("bob@x.com" | "dora@x.com", StatusCode::CONFLICT) => {
                assert_eq!(reply.code(), "already_decided", "{:?}", reply.body)
            }
            other => panic!("{other:?}: {:?}", reply.body),
        }
    }
    assert_eq!(dba_wins, ids.len(), "one dba-team approval per request");
    for id in &ids {
        let approved = app.request(id).await;
        assert_eq!(approved["status"], "approved", "{approved}");
        assert_eq!(approved["version"], 3, "{approved}");
        let kinds = app.audit_kinds(id).await;
        assert_eq!(
            kinds
                .iter()
                .filter(|k| k.as_str() == "group_approved")
                .count(),
            2,
            "{kinds:?}"
        );
    }
    assert_chain_intact(&app.db.url).await;
}

/// `hoop serve` killed with SIGKILL while approvals stream in: every approval it acknowledged is
/// in the database with its audit event, and the chain is intact.
async fn acknowledged_writes_survive_a_kill_during_group_commits(backend: Backend) {
    hoopbot::install_crypto_provider();
    let db = TestDb::new(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("hoop.toml");
    std::fs::write(
        &config,
        test_config_text(&db.url).replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{port}\""),
        ),
    )
    .unwrap();
    let token = |email: &str| {
        let out = hoop()
            .args(["token", "create", email, "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let (alice, bob) = (token("alice@x.com"), token("bob@x.com"));
    let mut server = ServerProcess(
        hoop()
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}/api/v1");
    let http = reqwest::Client::new();
    until_ready(&http, port).await;

    let mut ids = Vec::new();
    for i in 0..400 {
        let reply = http
            .post(format!("{base}/exec"))
            .bearer_auth(&alice)
            .json(&serde_json::json!({ "connection": "prod-db", "command": format!("SELECT {i}") }))
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), StatusCode::CREATED);
        let body: serde_json::Value = reply.json().await.unwrap();
        ids.push(body["id"].as_str().unwrap().to_string());
    }

    // Sixteen approvers stream approvals; the server is killed once 100 are acknowledged.
    let queue = Arc::new(std::sync::Mutex::new(ids));
    let acknowledged = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut approvers = Vec::new();
    for _ in 0..16 {
        let (http, base, bob, queue, acknowledged) = (
            http.clone(),
            base.clone(),
            bob.clone(),
            queue.clone(),
            acknowledged.clone(),
        );
        approvers.push(tokio::spawn(async move {
            loop {
                let Some(id) = queue.lock().unwrap().pop() else {
                    return;
                };
                let sent = http
                    .post(format!("{base}/access-requests/{id}/approve"))
                    .bearer_auth(&bob)
                    .send()
                    .await;
                match sent {
                    Ok(reply) if reply.status() == StatusCode::OK => {
                        acknowledged.lock().unwrap().push(id)
                    }
                    // The server is gone: nothing more will be acknowledged.
                    _ => return,
                }
            }
        }));
    }
    until(
        Duration::from_secs(60),
        "100 approvals acknowledged",
        || async { acknowledged.lock().unwrap().len() >= 100 },
    )
    .await;
    server.kill();
    for approver in approvers {
        approver.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() < 400,
        "the kill came after every approval"
    );

    let store = hoopbot::store::connect(
        &db.url,
        hoopbot::changes::ChangeHub::new(),
        Some(hoopbot::audit::AuditKey::new(AUDIT_KEY).unwrap()),
    )
    .await
    .unwrap();
    for id in &acknowledged {
        let request = store.get_request(id).await.unwrap().unwrap();
        assert_eq!(
            request.approval_groups[0].decided_by.as_deref(),
            Some("bob@x.com"),
            "acknowledged approval of {id} lost"
        );
        let kinds: Vec<String> = store
            .audit_events(Some(id))
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(kinds, ["created", "held", "group_approved"], "{id}");
    }
    assert_chain_intact(&db.url).await;
}

/// The server process; killed outright (SIGKILL, this process only) when asked or dropped.
pub struct ServerProcess(pub Child);

impl ServerProcess {
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

pub async fn until_ready(http: &reqwest::Client, port: u16) {
    let what = format!("hoop serve on port {port} becomes ready");
    until(Duration::from_secs(10), &what, || async {
        http.get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
            .is_ok_and(|reply| reply.status().is_success())
    })
    .await
}

/// The whole audit trail verifies against the test key.
pub async fn assert_chain_intact(url: &str) {
    let store = hoopbot::store::connect(url, hoopbot::changes::ChangeHub::new(), None)
        .await
        .unwrap();
    let events = store.audit_events(None).await.unwrap();
    let head = store.audit_head().await.unwrap();
    let key = hoopbot::audit::AuditKey::new(AUDIT_KEY).unwrap();
    hoopbot::audit::verify(&key, &events, &head, &[]).unwrap();
    assert_eq!(head.seq, events.len() as i64);
}
