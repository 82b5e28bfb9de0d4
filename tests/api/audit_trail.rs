//! `hoop audit verify` and `export` as a user runs them: the real binary against the real database.

use std::process::Command;

use reqwest::StatusCode;

use crate::helpers::{Backend, TestApp};
use crate::on_both_backends;

on_both_backends!(
    audit_verify_detects_edited_and_deleted_events,
    tokens_are_listed_and_revoked
);

async fn tokens_are_listed_and_revoked(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_dir, config) = cli_config(&app);
    let created = hoop(&config, &["token", "create", "--agent", "edge"]);
    assert!(created.status.success());
    let agent_token = String::from_utf8(created.stdout)
        .unwrap()
        .trim()
        .to_string();

    assert_eq!(
        app.get("bob@x.com", "/api/v1/me").await.status,
        StatusCode::OK
    );
    let revoked = hoop(&config, &["token", "revoke", "--user", "bob@x.com"]);
    assert_eq!(
        String::from_utf8_lossy(&revoked.stdout),
        "Revoked 1 token.\n"
    );
    let refused = app.get("bob@x.com", "/api/v1/me").await;
    assert_eq!(
        (refused.status, refused.code()),
        (StatusCode::UNAUTHORIZED, "unauthenticated")
    );
    assert_eq!(
        app.get("sam@x.com", "/api/v1/me").await.status,
        StatusCode::OK,
        "others keep theirs"
    );

    let by_value = hoop(&config, &["token", "revoke", &agent_token]);
    assert_eq!(
        String::from_utf8_lossy(&by_value.stdout),
        "Revoked 1 token.\n"
    );
    let again = hoop(&config, &["token", "revoke", &agent_token]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("No active token matched"));

    let listed = String::from_utf8(hoop(&config, &["token", "list"]).stdout).unwrap();
    let bob = listed.lines().find(|l| l.contains("bob@x.com")).unwrap();
    assert!(bob.starts_with("user ") && !bob.ends_with(" -"), "{bob}");
    let sam = listed.lines().find(|l| l.contains("sam@x.com")).unwrap();
    assert!(sam.ends_with(" -"), "{sam}");
    assert!(
        listed.lines().any(|l| l.starts_with("agent  edge")),
        "{listed}"
    );
    assert!(
        !listed.contains("hoop_"),
        "no secrets in the list: {listed}"
    );
}

/// A config file for the `hoop` binary pointing at `app`'s database (kept while the dir lives).
fn cli_config(app: &TestApp) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hoop.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\ndatabase_url = \"{}\"\naudit_key = \"{}\"\n",
            app.db.url,
            crate::helpers::AUDIT_KEY
        ),
    )
    .unwrap();
    (dir, config)
}

fn hoop(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hoop"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env("HOOP_LOG", "error")
        .output()
        .expect("hoop runs")
}

async fn tamper(url: &str, sql: &'static str) {
    if url.starts_with("sqlite:") {
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    } else {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    }
}

async fn audit_verify_detects_edited_and_deleted_events(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = app.held("SELECT 1").await;
    app.approve("bob@x.com", &id, None).await;
    app.reject("sam@x.com", &id, "no").await;
    let (_dir, config) = cli_config(&app);

    let ok = hoop(&config, &["audit", "verify"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("audit trail intact: 4 events"));

    let export = hoop(&config, &["audit", "export"]);
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&export.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[3]["kind"], "rejected");
    assert_eq!(lines[3]["detail"]["reason"], "no");

    // Someone rewrites who rejected.
    tamper(
        &app.db.url,
        "update audit_event set actor = 'mallory@x.com' where seq = 4",
    )
    .await;
    let edited = hoop(&config, &["audit", "verify"]);
    assert_eq!(edited.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&edited.stderr).contains("event 4 was altered"),
        "{}",
        String::from_utf8_lossy(&edited.stderr)
    );

    // Put it back, then delete an event in the middle.
    tamper(
        &app.db.url,
        "update audit_event set actor = 'sam@x.com' where seq = 4",
    )
    .await;
    assert!(hoop(&config, &["audit", "verify"]).status.success());
    tamper(&app.db.url, "delete from audit_event where seq = 2").await;
    let deleted = hoop(&config, &["audit", "verify"]);
    assert_eq!(deleted.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&deleted.stderr).contains("event 2 is missing"),
        "{}",
        String::from_utf8_lossy(&deleted.stderr)
    );
}
