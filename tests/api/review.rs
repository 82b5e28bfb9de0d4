//! Found by following the README as a new user and attacking a real `hoop serve`: each test here
//! failed before its fix.

use std::process::{Command, Output};

use hoopbot::app::App;
use hoopbot::service::Clock;

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
    config.server.database_url =
        format!("sqlite://{}", dir.path().join("hoop-demo.db").display()).into();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    let app = App::build(config, Clock::system()).await.unwrap();
    hoopbot::demo::fresh_tokens(&app.hoop).await.unwrap();
    let head = app.hoop.store.audit_head().await.unwrap();
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
