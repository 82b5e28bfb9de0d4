//! `hoop audit verify` and `export` as a user runs them: the real binary against the real database.

use std::process::Command;

use reqwest::StatusCode;

use hoopbot::store::TokenSubject;
use hoopbot::token::{Operator, Revocation};

use crate::helpers::{Backend, TestApp, execute_sql};
use crate::on_both_backends;

on_both_backends!(
    audit_verify_detects_edited_reordered_cut_and_deleted_events,
    tokens_are_listed_and_revoked,
    creating_and_revoking_tokens_is_audited_by_id,
    server_side_commands_say_which_config_and_database,
    a_link_whose_audit_event_fails_is_not_made,
    an_unlink_whose_audit_event_fails_leaves_the_link,
    a_token_whose_audit_event_fails_is_not_issued,
    a_revocation_whose_audit_event_fails_leaves_the_token_working,
);

/// Makes the database refuse every insert into `table`, as a trigger (the same name on both
/// backends, for [`allow_inserts`]).
async fn refuse_inserts(app: &TestApp, table: &str) {
    let sql = if app.db.url.starts_with("sqlite:") {
        format!(
            "create trigger refuse_{table} before insert on {table} \
             begin select raise(abort, 'refused by a test trigger'); end"
        )
    } else {
        format!(
            "create or replace function refuse() returns trigger language plpgsql as $$ begin \
             raise exception 'refused by a test trigger'; end $$; \
             create trigger refuse_{table} before insert on {table} \
             for each row execute function refuse()"
        )
    };
    execute_sql(&app.db.url, sql).await;
}

async fn allow_inserts(app: &TestApp, table: &str) {
    let sql = if app.db.url.starts_with("sqlite:") {
        format!("drop trigger refuse_{table}")
    } else {
        format!("drop trigger refuse_{table} on {table}")
    };
    execute_sql(&app.db.url, sql).await;
}

/// The kinds of the audit events about `subject` (`slack:U1`, `token:<id>`).
async fn audited(app: &TestApp, subject: &str) -> Vec<String> {
    let events = app.store().await.audit_events(Some(subject)).await.unwrap();
    events.into_iter().map(|e| e.kind).collect()
}

/// A link is never in effect without its audit event: when the event cannot be written, neither
/// is the link, whether by code (which stays unused, so it can be confirmed again) or by
/// verified email.
async fn a_link_whose_audit_event_fails_is_not_made(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let bob = app.hoop.identity(&"bob@x.com".parse().unwrap()).unwrap();
    let code = app.hoop.start_link("slack", "U1").await.unwrap();
    refuse_inserts(&app, "audit_event").await;

    assert!(
        app.hoop
            .confirm_link(&bob, &code.code, None, hoopbot::domain::Surface::Api)
            .await
            .is_err()
    );
    assert_eq!(app.hoop.linked_identity("slack", "U1").await.unwrap(), None);
    let by_email = app
        .hoop
        .link_verified_email("slack", "U2", "bob@x.com")
        .await;
    assert!(by_email.is_err(), "{by_email:?}");
    assert_eq!(app.hoop.linked_identity("slack", "U2").await.unwrap(), None);

    allow_inserts(&app, "audit_event").await;
    assert!(audited(&app, "slack:U1").await.is_empty());
    assert!(audited(&app, "slack:U2").await.is_empty());
    let linked = app
        .hoop
        .confirm_link(&bob, &code.code, None, hoopbot::domain::Surface::Api)
        .await
        .unwrap();
    assert_eq!(linked.email, "bob@x.com");
    assert_eq!(audited(&app, "slack:U1").await, ["account_linked"]);
}

/// An unlink is never in effect without its audit event, and nothing has to write the link back:
/// inserts into `chat_account` are refused too, as by a database that went away after the
/// delete.
async fn an_unlink_whose_audit_event_fails_leaves_the_link(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let linked = app
        .hoop
        .link_verified_email("slack", "U1", "bob@x.com")
        .await
        .unwrap();
    assert!(linked.is_some());
    refuse_inserts(&app, "audit_event").await;
    refuse_inserts(&app, "chat_account").await;

    let unlinked = app
        .hoop
        .unlink("slack", "U1", hoopbot::domain::Surface::Slack)
        .await;
    assert!(unlinked.is_err(), "{unlinked:?}");
    let still = app.hoop.linked_identity("slack", "U1").await.unwrap();
    assert_eq!(
        still.map(|who| who.email.to_string()).as_deref(),
        Some("bob@x.com")
    );
    assert_eq!(audited(&app, "slack:U1").await, ["account_linked"]);
}

/// A token is never issued without its audit event: not even a revoked record of it is left.
async fn a_token_whose_audit_event_fails_is_not_issued(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let before = app.hoop.tokens().await.unwrap();
    refuse_inserts(&app, "audit_event").await;

    let issued = app
        .hoop
        .issue_token(
            &TokenSubject::Agent("edge".into()),
            None,
            &Operator::system(),
        )
        .await;
    assert!(issued.is_err(), "{issued:?}");
    assert_eq!(app.hoop.tokens().await.unwrap(), before);
}

/// A revocation is never in effect without its audit events: the token still works.
async fn a_revocation_whose_audit_event_fails_leaves_the_token_working(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let bob = TokenSubject::User("bob@x.com".parse().unwrap());
    refuse_inserts(&app, "audit_event").await;

    let revoked = app
        .hoop
        .revoke_tokens(Revocation::Subject(bob.clone()), &Operator::system())
        .await;
    assert!(revoked.is_err(), "{revoked:?}");
    let tokens = app.hoop.tokens().await.unwrap();
    let bobs: Vec<_> = tokens.iter().filter(|t| t.subject == bob).collect();
    assert!(bobs.len() == 1 && bobs[0].revoked_at.is_none(), "{bobs:?}");
    assert_eq!(
        app.get("bob@x.com", "/api/v1/me").await.status,
        StatusCode::OK
    );
}

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
    let columns =
        |line: &str| -> Vec<String> { line.split_whitespace().map(str::to_string).collect() };
    let bob = listed.lines().find(|l| l.contains("bob@x.com")).unwrap();
    assert!(columns(bob)[1] == "user" && !bob.ends_with(" -"), "{bob}");
    let sam = listed.lines().find(|l| l.contains("sam@x.com")).unwrap();
    assert!(sam.ends_with(" -"), "{sam}");
    assert!(
        listed
            .lines()
            .any(|l| columns(l)[1..3] == ["agent", "edge"]),
        "{listed}"
    );
    // Every token has its own id: the first 12 hex digits of its SHA-256.
    let ids: std::collections::BTreeSet<String> = listed
        .lines()
        .skip(1)
        .map(|l| columns(l)[0].clone())
        .collect();
    assert_eq!(ids.len(), listed.lines().count() - 1, "{listed}");
    assert!(
        ids.iter()
            .all(|id| id.len() == 12 && id.chars().all(|c| c.is_ascii_hexdigit())),
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

/// Runs `hoop` with `config` as the OS user `carol`.
fn hoop(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hoop"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env("HOOP_LOG", "error")
        .env("USER", "carol")
        .env_remove("LOGNAME")
        .output()
        .expect("hoop runs")
}

/// Every audit event, as `hoop audit export` writes them.
fn exported(config: &std::path::Path) -> Vec<serde_json::Value> {
    let export = hoop(config, &["audit", "export"]);
    assert!(export.status.success());
    String::from_utf8_lossy(&export.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn creating_and_revoking_tokens_is_audited_by_id(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_dir, config) = cli_config(&app);

    let created = hoop(&config, &["token", "create", "--agent", "edge"]);
    assert!(created.status.success());
    let token = String::from_utf8(created.stdout)
        .unwrap()
        .trim()
        .to_string();
    let digest = hoopbot::token::digest(&token);
    let id = &digest[..12];
    assert!(
        String::from_utf8_lossy(&created.stderr).contains(&format!("Its id is {id}.")),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );

    let revoked = hoop(&config, &["token", "revoke", "--id", id]);
    assert_eq!(
        String::from_utf8_lossy(&revoked.stdout),
        "Revoked 1 token.\n",
        "{}",
        String::from_utf8_lossy(&revoked.stderr)
    );
    let events = exported(&config);
    let about_it: Vec<_> = events
        .iter()
        .filter(|e| e["request_id"] == format!("token:{id}"))
        .collect();
    assert_eq!(about_it.len(), 2, "{events:#?}");
    for (event, kind) in about_it.iter().zip(["token_created", "token_revoked"]) {
        assert_eq!(event["kind"], kind);
        assert_eq!(event["actor"], "carol");
        assert_eq!(event["channel"], "cli");
        assert_eq!(
            event["detail"],
            serde_json::json!({"token_id": id, "subject_kind": "agent", "subject": "edge"})
        );
    }
    let text = serde_json::to_string(&events).unwrap();
    assert!(!text.contains(&token) && !text.contains(&digest), "{text}");
    assert!(hoop(&config, &["audit", "verify"]).status.success());

    // Two tokens whose ids share a prefix: the prefix is refused, a longer one picks one.
    let store = app.store().await;
    let now = app.hoop.clock.now();
    for digest in ["abcd0001", "abcd0002"] {
        let subject = hoopbot::store::TokenSubject::Agent("twin".into());
        store
            .insert_token(&digest.repeat(8), &subject, &Default::default(), now, &[])
            .await
            .unwrap();
    }
    let ambiguous = hoop(&config, &["token", "revoke", "--id", "abcd"]);
    assert_eq!(ambiguous.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&ambiguous.stderr)
            .contains("the id abcd is ambiguous: 2 tokens start with it"),
        "{}",
        String::from_utf8_lossy(&ambiguous.stderr)
    );
    let unknown = hoop(&config, &["token", "revoke", "--id", "0000ffff"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no token has the id 0000ffff"));
    let one = hoop(&config, &["token", "revoke", "--id", "ABCD0002"]);
    assert_eq!(String::from_utf8_lossy(&one.stdout), "Revoked 1 token.\n");
    let twins: Vec<_> = store
        .list_tokens()
        .await
        .unwrap()
        .into_iter()
        .filter(|t| t.sha256.starts_with("abcd"))
        .map(|t| (t.sha256[..8].to_string(), t.revoked_at.is_some()))
        .collect();
    assert_eq!(
        twins,
        [
            ("abcd0001".to_string(), false),
            ("abcd0002".to_string(), true)
        ]
    );
}

/// With no config given, `$HOOP_CONFIG` unset and no `./hoop.toml`, the server-side commands
/// refuse, naming where they looked, and create nothing (no demo database).
#[test]
fn server_side_commands_refuse_to_run_without_a_config() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["audit", "verify"][..],
        &["audit", "export"],
        &["migrate"],
        &["token", "list"],
        &["token", "create", "alice@example.com"],
        &["token", "revoke", "--user", "alice@example.com"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_hoop"))
            .args(args)
            .current_dir(dir.path())
            .env_remove("HOOP_CONFIG")
            .env("HOOP_LOG", "error")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains(
                "no server config: give --config FILE, set $HOOP_CONFIG, or run where hoop.toml is"
            ) && stderr.contains(&dir.path().join("hoop.toml").display().to_string()),
            "{args:?}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

async fn server_side_commands_say_which_config_and_database(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_dir, config) = cli_config(&app);
    let expected = format!(
        "config {}, database {}\n",
        config.display(),
        hoopbot::app::redact(&app.db.url)
    );
    for args in [
        &["audit", "verify"][..],
        &["audit", "export"],
        &["migrate"],
        &["token", "list"],
    ] {
        let out = hoop(&config, args);
        assert!(out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.starts_with(&expected), "{args:?}: {stderr}");
    }
}

pub(crate) async fn tamper(url: &str, sql: &'static str) {
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

async fn swap_events_3_and_4(url: &str) {
    tamper(url, "update audit_event set seq = -3 where seq = 3").await;
    tamper(url, "update audit_event set seq = 3 where seq = 4").await;
    tamper(url, "update audit_event set seq = 4 where seq = -3").await;
}

async fn audit_verify_detects_edited_reordered_cut_and_deleted_events(backend: Backend) {
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

    // Events 3 and 4 swap places: the approval now seems to come after the rejection.
    swap_events_3_and_4(&app.db.url).await;
    let reordered = hoop(&config, &["audit", "verify"]);
    assert_eq!(reordered.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&reordered.stderr).contains("event 3 was altered"),
        "{}",
        String::from_utf8_lossy(&reordered.stderr)
    );
    swap_events_3_and_4(&app.db.url).await;
    assert!(hoop(&config, &["audit", "verify"]).status.success());

    // The last event is cut off, the head left as it was. (Cut with the head rewound, only a
    // checkpoint shows it: `security::a_checkpoint_catches_a_cut_off_tail`.)
    tamper(
        &app.db.url,
        "create table kept as select * from audit_event where seq = 4",
    )
    .await;
    tamper(&app.db.url, "delete from audit_event where seq = 4").await;
    let truncated = hoop(&config, &["audit", "verify"]);
    assert_eq!(truncated.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&truncated.stderr)
            .contains("the chain ends at event 3 but its head says 4"),
        "{}",
        String::from_utf8_lossy(&truncated.stderr)
    );
    tamper(&app.db.url, "insert into audit_event select * from kept").await;
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
