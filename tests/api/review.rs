//! Found by following the README as a new user and attacking a real `hoop serve`: each test here
//! failed before its fix.

use std::process::{Command, Output};

use hoopbot::app::App;
use hoopbot::config::Config;
use hoopbot::domain::Clock;

use crate::helpers::{AUDIT_KEY, Backend, TestDb, inspect, test_config_text};
use crate::on_both_backends;

on_both_backends!(serve_refuses_an_audit_key_the_trail_was_not_written_with);

/// `hoop ARGS` run in `dir`, with no config from the environment.
fn hoop_in(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hoop"))
        .args(args)
        .current_dir(dir)
        .env_remove("HOOP_CONFIG")
        .env_remove("HOOP_AUDIT_KEY")
        .env_remove("HOOP_DATABASE_URL")
        .env("HOOP_LOG", "error")
        .output()
        .expect("hoop runs")
}

/// The README's demo had no way to run `hoop audit verify` or `checkpoint`: they refuse without
/// a config, and the demo has none. `--demo` opens the demo's database and key where it ran, and
/// only there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_audit_trail_can_be_verified_and_checkpointed() {
    let dir = tempfile::tempdir().unwrap();
    let nowhere = hoop_in(dir.path(), &["audit", "verify", "--demo"]);
    let stderr = String::from_utf8_lossy(&nowhere.stderr);
    assert_eq!(nowhere.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no demo in"), "{stderr}");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing created"
    );

    // A demo that ran in `dir`: its database and key file, with token events in the chain.
    let mut config =
        hoopbot::demo::config_with_key_file(&dir.path().join("hoop-demo.audit-key")).unwrap();
    let url = format!("sqlite://{}", dir.path().join("hoop-demo.db").display());
    config.server.database_url = url.clone().into();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    let app = App::build(config, Clock::system()).await.unwrap();
    hoopbot::demo::fresh_tokens(&app.hoop).await.unwrap();
    let head = inspect(&url).await.audit_head().await.unwrap();
    assert!(head.seq > 0);

    let verified = hoop_in(dir.path(), &["audit", "verify", "--demo"]);
    let stdout = String::from_utf8_lossy(&verified.stdout);
    assert!(
        verified.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&verified.stderr)
    );
    assert!(
        stdout.starts_with(&format!("audit trail intact: {} events", head.seq)),
        "{stdout}"
    );
    let checkpoint = hoop_in(dir.path(), &["audit", "checkpoint", "--demo"]);
    assert!(checkpoint.status.success());
    assert_eq!(
        String::from_utf8_lossy(&checkpoint.stdout),
        format!("{}:{}\n", head.seq, head.hash)
    );
}

/// A server on `database_url` keyed with `key`.
async fn build_with_key(database_url: &str, key: &str) -> anyhow::Result<App> {
    let text = test_config_text(database_url).replace(AUDIT_KEY, key);
    let config = Config::parse(&text, "test config").unwrap();
    App::build(config, Clock::system()).await
}

/// Reproduced: `hoop serve` with a mistyped `HOOP_AUDIT_KEY` started and appended events under the
/// wrong key, and from then on `hoop audit verify` reported the trail as forged.
async fn serve_refuses_an_audit_key_the_trail_was_not_written_with(backend: Backend) {
    let db = TestDb::new(backend).await;
    let other_key = "another-deployments-key-0123456789abcdef";
    // An empty trail says nothing about the key: any key may start it.
    drop(build_with_key(&db.url, other_key).await.expect("starts"));
    let app = build_with_key(&db.url, AUDIT_KEY).await.unwrap();
    app.hoop
        .issue_token(
            &hoopbot::store::TokenSubject::Agent("edge".into()),
            None,
            &hoopbot::token::Operator::system(),
        )
        .await
        .unwrap();
    let store = inspect(&db.url).await;
    let head = store.audit_head().await.unwrap();
    drop(app);

    let err = build_with_key(&db.url, other_key)
        .await
        .err()
        .expect("refused");
    assert!(
        format!("{err:#}").contains("the audit key is not the one this database's audit trail"),
        "{err:#}"
    );
    let _app = build_with_key(&db.url, AUDIT_KEY)
        .await
        .expect("its own key");
    assert_eq!(store.audit_head().await.unwrap(), head);
}

/// Reproduced: `hoop audit verify -c /etc/hoop/hoop.toml` run from another directory took the
/// config's relative `sqlite://hoop.db` from there, created an empty database and said "audit
/// trail intact: 0 events". The audit commands never create a database.
#[test]
fn audit_commands_refuse_a_database_that_does_not_exist() {
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("hoop.toml");
    std::fs::write(
        &config,
        format!("[server]\ndatabase_url = \"sqlite://hoop.db\"\naudit_key = \"{AUDIT_KEY}\"\n"),
    )
    .unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let config = config.display().to_string();
    for command in ["verify", "checkpoint", "export"] {
        let out = hoop_in(elsewhere.path(), &["audit", command, "-c", &config]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{command}: {stderr}");
        assert!(
            stderr.contains("no database at sqlite://hoop.db")
                && stderr.contains("a relative path is taken from the current directory"),
            "{command}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{command}");
    }
    assert_eq!(
        std::fs::read_dir(elsewhere.path()).unwrap().count(),
        0,
        "no database was created"
    );
}

/// Reproduced: an agent token's refusal reason (or a job id in the path) with a newline wrote a
/// forged line into the server's log (`… INFO hoopbot::service: job finished … status=executed`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_cannot_forge_server_log_lines() {
    use crate::processes::{free_port, hoop};
    hoopbot::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("hoop.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\ndatabase_url = \"sqlite://{}\"\n\
             audit_key = \"{AUDIT_KEY}\"\n\n[[connections]]\nname = \"box\"\n\
             type = \"command\"\nagent = \"edge\"\n",
            dir.path().join("hoop.db").display()
        ),
    )
    .unwrap();
    let created = hoop()
        .args(["token", "create", "--agent", "edge", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let token = String::from_utf8(created.stdout)
        .unwrap()
        .trim()
        .to_string();
    let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
    let mut server = hoop()
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    crate::helpers::until(
        std::time::Duration::from_secs(30),
        "the server comes up",
        || async { http.get(format!("{base}/healthz")).send().await.is_ok() },
    )
    .await;
    let forged = "FORGED  INFO hoopbot::service: job finished status=executed";
    let reply = http
        .post(format!("{base}/api/v1/agent/jobs/x%0A{forged}/refuse"))
        .bearer_auth(&token)
        .json(&serde_json::json!({ "reason": format!("x\n{forged}") }))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), reqwest::StatusCode::NOT_FOUND);
    let _ = server.kill();
    let _ = server.wait();
    let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap();
    assert!(log.contains("agent refused a job"), "{log}");
    assert!(!log.lines().any(|line| line.starts_with("FORGED")), "{log}");
}
