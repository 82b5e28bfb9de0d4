//! An approved command cannot reach hoopbot itself, and the audit trail cannot be rewritten by
//! someone who can write the database but does not hold the audit key.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use hoopbot::app::App;
use hoopbot::audit::{AuditEvent, AuditKey};
use hoopbot::config::{Config, ConnectionTarget, ConnectionType};
use hoopbot::domain::Clock;
use reqwest::StatusCode;
use sqlx::Connection;

use crate::helpers::{AUDIT_KEY, Backend, TestApp, TestDb, execute_sql, test_config_text, until};
use crate::on_both_backends;

on_both_backends!(
    the_chain_cannot_be_forged_without_its_key,
    a_checkpoint_catches_a_cut_off_tail,
    a_revoked_token_stops_working_on_every_replica
);

/// Tokens are cached for a moment; a revocation must not wait for that. The replica that revokes
/// refuses the token at once, and another replica (which had just cached it) refuses it too — on
/// Postgres because it hears the revocation, on SQLite once its second of trust is up.
async fn a_revoked_token_stops_working_on_every_replica(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let replica = app.replica().await;
    assert_eq!(
        replica.get("bob@x.com", "/api/v1/me").await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.get("bob@x.com", "/api/v1/me").await.status,
        StatusCode::OK
    );

    let revoked = app
        .hoop
        .revoke_tokens(
            hoopbot::token::Revocation::Subject(hoopbot::store::TokenSubject::User(
                "bob@x.com".parse().unwrap(),
            )),
            &hoopbot::token::Operator::system(),
        )
        .await
        .unwrap();
    assert_eq!(revoked.len(), 1);

    let here = app.get("bob@x.com", "/api/v1/me").await;
    assert_eq!(here.status, StatusCode::UNAUTHORIZED, "{:?}", here.body);
    until(
        Duration::from_secs(5),
        "the other replica refuses the revoked token",
        || async {
            replica.get("bob@x.com", "/api/v1/me").await.status == StatusCode::UNAUTHORIZED
        },
    )
    .await;
    assert_eq!(
        replica.get("sam@x.com", "/api/v1/me").await.status,
        StatusCode::OK,
        "others keep theirs"
    );
}

/// The path of a `sqlite://` URL.
fn sqlite_path(url: &str) -> &str {
    url.strip_prefix("sqlite://").unwrap()
}

/// Reproduced: an exempt user ran `ATTACH DATABASE '<hoop.db>' AS h; INSERT INTO h.api_token …`
/// on a SQLite connection and got an admin token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_command_cannot_attach_hoopbots_database() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let target_url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    sqlx::SqliteConnection::connect(&target_url)
        .await
        .unwrap()
        .close()
        .await
        .unwrap();

    let attack = format!(
        "ATTACH DATABASE '{}' AS h; \
         INSERT INTO h.api_token (token_sha256, subject, kind, created_at) \
         VALUES ('{}', 'root@x.com', 'user', 0)",
        sqlite_path(&app.db.url),
        hoopbot::token::digest("hoop_forged")
    );
    // `counter` needs no approval, like an exempt user's command.
    let reply = app.submit("alice@x.com", "counter", &attack).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    let id = reply.body["id"].as_str().unwrap();
    let target = ConnectionTarget {
        kind: ConnectionType::Sqlite,
        url: Some(target_url.into()),
        command: None,
        statement_timeout: Some(Duration::from_secs(10)),
        max_rows: 100,
        max_output_bytes: 1 << 16,
        env: Default::default(),
    };
    let agent = app.agent("racer", vec![("counter".into(), target)]).await;
    let tokens_before = app.hoop.tokens().await.unwrap().len();
    assert!(agent.run_once(Duration::ZERO).await.unwrap().is_some());

    let request = app.request(id).await;
    assert_eq!(request["status"], "failed");
    let error = request["result"]["error"].as_str().unwrap();
    assert!(error.contains("not authorized"), "{error}");
    assert_eq!(app.hoop.tokens().await.unwrap().len(), tokens_before);
    let forged = app
        .client
        .get(app.url("/api/v1/me"))
        .bearer_auth("hoop_forged")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);
}

/// The server refuses to start when a SQLite connection's file is its own database, however the
/// path is spelled: the same path, a symlink or a hard link — also one SQLite cannot open at
/// that moment — and when the file cannot be examined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_on_hoopbots_own_database_file_stops_the_server() {
    let db = TestDb::new(Backend::Sqlite).await;
    let own = std::path::PathBuf::from(sqlite_path(&db.url));
    // The file exists once a server has opened it.
    drop(
        build(&db.url, None)
            .await
            .expect("a server without such a connection starts"),
    );
    let dir = own.parent().unwrap();
    let symlink = dir.join("alias.db");
    std::os::unix::fs::symlink(&own, &symlink).unwrap();
    let hard_link = dir.join("hard.db");
    std::fs::hard_link(&own, &hard_link).unwrap();
    let spellings = [
        format!("sqlite://{}", own.display()),
        format!("sqlite://{}?mode=ro", symlink.display()),
        format!("sqlite:{}", hard_link.display()),
        // SQLite's own URI form, which it resolves itself: got past a check of the URL's path.
        format!("sqlite://file:{}", own.display()),
        format!("sqlite://file://localhost{}", symlink.display()),
        format!("sqlite://file:{}%3Fmode=ro", own.display()),
    ];
    for url in &spellings {
        let err = build(&db.url, Some(url)).await.err().expect("refused");
        assert!(
            format!("{err:#}").contains("connection mirror points at hoopbot's own database file"),
            "{url}: {err:#}"
        );
    }

    // A hard link SQLite cannot open at that moment is caught all the same: the file is
    // compared without opening it. Read-only on a link made just now (no `-shm` beside it yet),
    // and a link whose `-wal` name is taken by something that is no file.
    let fresh_link = dir.join("fresh.db");
    std::fs::hard_link(&own, &fresh_link).unwrap();
    let blocked_link = dir.join("blocked.db");
    std::fs::hard_link(&own, &blocked_link).unwrap();
    std::fs::create_dir(dir.join("blocked.db-wal")).unwrap();
    for url in [
        format!("sqlite://{}?mode=ro", fresh_link.display()),
        format!("sqlite://{}", blocked_link.display()),
    ] {
        let Err(err) = build(&db.url, Some(&url)).await else {
            panic!("{url}: not refused");
        };
        assert!(
            format!("{err:#}").contains("connection mirror points at hoopbot's own database file"),
            "{url}: {err:#}"
        );
    }
    // Opening it under another name would have given hoopbot's database a second `-wal`.
    assert!(!dir.join("fresh.db-wal").exists());

    // A file that cannot be examined could be that file: the server does not start.
    let looping = dir.join("loop.db");
    std::os::unix::fs::symlink(&looping, &looping).unwrap();
    let url = format!("sqlite://{}", looping.display());
    let err = build(&db.url, Some(&url)).await.err().expect("refused");
    assert!(
        format!("{err:#}").contains(&format!(
            "connection mirror: cannot examine its database file {}",
            looping.display()
        )),
        "{err:#}"
    );

    let elsewhere = format!("sqlite://{}?mode=rwc", dir.join("other.db").display());
    sqlx::SqliteConnection::connect(&elsewhere)
        .await
        .unwrap()
        .close()
        .await
        .unwrap();
    assert!(build(&db.url, Some(&elsewhere)).await.is_ok());
}

/// A server on `database_url`, with an embedded SQLite connection `mirror` on `target` if given.
async fn build(database_url: &str, target: Option<&str>) -> anyhow::Result<App> {
    let mut text = test_config_text(database_url);
    if let Some(target) = target {
        text.push_str(&format!(
            "\n[[connections]]\nname = \"mirror\"\ntype = \"sqlite\"\nurl = \"{target}\"\n"
        ));
    }
    let config = Config::parse(&text, "test config").unwrap();
    let now = Arc::new(AtomicI64::new(0));
    App::build(config, Clock::shifted(now)).await
}

/// A config file for the `hoop` binary on `app`'s database, with or without the audit key.
fn cli_config(app: &TestApp, with_key: bool) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hoop.toml");
    let key = if with_key {
        format!("audit_key = \"{AUDIT_KEY}\"\n")
    } else {
        String::new()
    };
    std::fs::write(
        &config,
        format!("[server]\ndatabase_url = \"{}\"\n{key}", app.db.url),
    )
    .unwrap();
    (dir, config)
}

fn hoop(config: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hoop"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env("HOOP_LOG", "error")
        .env_remove("HOOP_AUDIT_KEY")
        .output()
        .expect("hoop runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Someone who can write the database appends a fake approval and moves the head along with it,
/// hashing it as well as they can without the key: verify reports the forgery.
async fn the_chain_cannot_be_forged_without_its_key(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = app.held("DELETE FROM accts").await;
    app.approve("bob@x.com", &id, None).await;
    let (_dir, config) = cli_config(&app, true);
    let (code, out, err) = hoop(&config, &["audit", "verify"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("audit trail intact: 3 events"), "{out}");
    assert!(
        err.contains("--checkpoint"),
        "says what it cannot show: {err}"
    );

    let head = app.store().await.audit_head().await.unwrap();
    let mut forged = AuditEvent {
        seq: head.seq + 1,
        request_id: id.clone(),
        kind: "group_approved".into(),
        actor: "sam@x.com".into(),
        channel: "api".into(),
        at: chrono::Utc::now().timestamp_millis(),
        detail: serde_json::json!({ "group": "security" }),
        prev_hash: head.hash.clone(),
        hash: String::new(),
    };
    let guess = AuditKey::new("someone-else's-key-0123456789abcdef").unwrap();
    forged.hash = hoopbot::audit::event_hash(&guess, &forged.prev_hash, &forged);
    execute_sql(
        &app.db.url,
        format!(
            "insert into audit_event (seq, request_id, kind, actor, channel, at, detail, prev_hash, hash) \
             values ({}, '{}', 'group_approved', 'sam@x.com', 'api', {}, '{}', '{}', '{}'); \
             update audit_head set seq = {}, hash = '{}' where id = 1",
            forged.seq,
            forged.request_id,
            forged.at,
            forged.detail,
            forged.prev_hash,
            forged.hash,
            forged.seq,
            forged.hash
        ),
    )
    .await;
    let (code, _, err) = hoop(&config, &["audit", "verify"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!("event {} was altered or forged", forged.seq)),
        "{err}"
    );

    // Without the key nothing can be verified, and the command says so instead of "intact".
    let (_dir, keyless) = cli_config(&app, false);
    let (code, out, err) = hoop(&keyless, &["audit", "verify"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("no audit key"), "{err}");
}

/// Reproduced: deleting the last audit events and rewinding `audit_head` left `hoop audit verify`
/// saying intact. With a checkpoint taken before, it no longer does.
async fn a_checkpoint_catches_a_cut_off_tail(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = app.held("DELETE FROM accts").await;
    app.approve("bob@x.com", &id, None).await;
    app.reject("sam@x.com", &id, "not today").await;
    let (_dir, config) = cli_config(&app, true);

    let (code, checkpoint, err) = hoop(&config, &["audit", "checkpoint"]);
    assert_eq!(code, 0, "{err}");
    let checkpoint = checkpoint.trim().to_string();
    let head = app.store().await.audit_head().await.unwrap();
    assert_eq!(checkpoint, format!("{}:{}", head.seq, head.hash));
    let (code, out, err) = hoop(&config, &["audit", "verify", "--checkpoint", &checkpoint]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("matches checkpoint 4"), "{out}");

    // The rejection is cut off and the head rewound to the event before it.
    let events = app.store().await.audit_events(None).await.unwrap();
    let kept = &events[events.len() - 2];
    execute_sql(
        &app.db.url,
        format!(
            "delete from audit_event where seq > {}; update audit_head set seq = {}, hash = '{}' where id = 1",
            kept.seq, kept.seq, kept.hash
        ),
    )
    .await;
    let (code, _, _) = hoop(&config, &["audit", "verify"]);
    assert_eq!(
        code, 0,
        "consistent in itself: only a checkpoint shows the cut"
    );
    let (code, _, err) = hoop(&config, &["audit", "verify", "--checkpoint", &checkpoint]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("the chain ends at event 3 but checkpoint 4 was taken"),
        "{err}"
    );

    let (code, _, err) = hoop(&config, &["audit", "verify", "--checkpoint", "4:nothex"]);
    assert_eq!(code, 2, "a malformed checkpoint is a usage error: {err}");
    assert!(err.contains("is not a checkpoint like"), "{err}");
}

/// `hoop serve` will not run without an audit key, and says how to make one.
#[test]
fn serve_refuses_to_start_without_an_audit_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hoop.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndatabase_url = \"sqlite://{}\"\n",
            dir.path().join("hoop.db").display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hoop"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("HOOP_LOG", "error")
        .env_remove("HOOP_AUDIT_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no audit key"), "{err}");
    assert!(err.contains("openssl rand -hex 32"), "{err}");
}
