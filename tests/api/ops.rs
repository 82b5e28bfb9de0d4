//! What an operator relies on: slow clients are cut off, limits apply to the command rather than
//! its encoding, the demo's old tokens die, audit times read as times, and database trouble is
//! reported in a line that names the server and hides the password.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use hoopbot::app::App;
use hoopbot::config::Config;
use hoopbot::domain::Clock;
use hoopbot::store::{Store, TokenSubject};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use crate::helpers::{
    Backend, POSTGRES_ENV, TestApp, TestDb, inspect, postgres_url, replace_database,
};
use crate::on_both_backends;

/// Far longer than any limit under test: only a hang reaches it.
const GENEROUS: Duration = Duration::from_secs(60);

/// A server on the test config as changed by `tweak`, with `limits`; stops when dropped.
struct Server {
    addr: std::net::SocketAddr,
    /// The server's database, as another process sees it.
    store: Arc<dyn Store>,
    _db: TestDb,
    _stop: oneshot::Sender<()>,
}

impl Server {
    async fn start(tweak: impl FnOnce(&mut Config)) -> Server {
        hoopbot::install_crypto_provider();
        let db = TestDb::new(Backend::Sqlite).await;
        let mut config = crate::helpers::test_config(&db.url);
        tweak(&mut config);
        let app = App::build(config, Clock::system())
            .await
            .unwrap()
            .without_background_sweeps()
            .without_embedded_agent();
        let addr = app.local_addr();
        let store = inspect(&db.url).await;
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(app.run(async move {
            let _ = stopped.await;
        }));
        Server {
            addr,
            store,
            _db: db,
            _stop: stop,
        }
    }

    async fn token(&self, email: &str) -> String {
        let subject = TokenSubject::User(email.parse().unwrap());
        hoopbot::token::create(self.store.as_ref(), &subject, Clock::system().now())
            .await
            .unwrap()
    }
}

/// Read timeouts short enough for a test, set as `hoop.toml` would set them.
fn short_timeouts(config: &mut Config) {
    let text = "[server]\nheader_read_timeout = \"500ms\"\nbody_read_timeout = \"500ms\"\n";
    let parsed = Config::parse(text, "test").unwrap();
    config.server.header_read_timeout = parsed.server.header_read_timeout;
    config.server.body_read_timeout = parsed.server.body_read_timeout;
    assert_eq!(
        config.server.header_read_timeout,
        Duration::from_millis(500)
    );
}

/// Everything the server sends until it closes the connection.
async fn until_closed(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    tokio::time::timeout(GENEROUS, stream.read_to_end(&mut received))
        .await
        .expect("the server closes a slow client's connection")
        .ok();
    String::from_utf8_lossy(&received).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_slow_to_send_its_headers_is_cut_off() {
    let server = Server::start(short_timeouts).await;
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"POST /api/v1/exec HTTP/1.1\r\nHost: hoop\r\n")
        .await
        .unwrap();
    let received = until_closed(&mut slow).await;
    assert!(
        received.is_empty() || received.starts_with("HTTP/1.1 408"),
        "{received:?}"
    );
    // An idle connection that never sends anything goes the same way.
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    until_closed(&mut idle).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_slow_to_send_its_body_gets_408_and_is_cut_off() {
    let server = Server::start(short_timeouts).await;
    let token = server.token("alice@x.com").await;
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /api/v1/exec HTTP/1.1\r\nHost: hoop\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"connection\""
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    let received = until_closed(&mut slow).await;
    assert!(received.starts_with("HTTP/1.1 408"), "{received:?}");
    let body = &received[received.find("\r\n\r\n").unwrap() + 4..];
    let body: Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["error"]["code"], "timeout", "{body}");
    let (requests, _, _) = snapshot(server.store.as_ref()).await;
    assert!(requests.is_empty(), "nothing was submitted");
}

/// Slack's endpoints read their signed bodies under the same timeout: a trickled click holds its
/// connection no longer than any other body, and decides nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slack_click_slow_to_send_its_body_gets_408() {
    let server = Server::start(|config| {
        short_timeouts(config);
        let slack = Config::parse(
            "[server]\n[slack]\nsigning_secret = \"s\"\nbot_token = \"xoxb-1\"\n\
             channel = \"C0123456789\"\napi_base_url = \"http://127.0.0.1:9\"\n",
            "test",
        )
        .unwrap();
        config.slack = slack.slack;
    })
    .await;
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    let head = "POST /slack/interactions HTTP/1.1\r\nHost: hoop\r\n\
                Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 4000\r\n\r\npayload=";
    slow.write_all(head.as_bytes()).await.unwrap();
    let received = until_closed(&mut slow).await;
    assert!(received.starts_with("HTTP/1.1 408"), "{received:?}");
    // And a body over the Slack limit is refused before anything reads it.
    let huge = "payload=".to_string() + &"x".repeat(hoopbot::http::MAX_SLACK_BODY_BYTES + 1);
    let reply = reqwest::Client::new()
        .post(format!("http://{}/slack/interactions", server.addr))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), reqwest::StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_wait_for_a_free_slot() {
    let server = Server::start(|config| config.server.max_connections = 1).await;
    let health = format!("http://{}/healthz", server.addr);
    let holder = TcpStream::connect(server.addr).await.unwrap();
    // Once the holder has the only slot, the next connection is not served…
    let mut waiting = tokio::spawn(async move { reqwest::get(health).await.unwrap().status() });
    // That it is not served can only be watched for a while.
    let served = tokio::time::timeout(Duration::from_millis(300), &mut waiting).await;
    assert!(
        served.is_err(),
        "a second connection was served: {served:?}"
    );
    // …until the holder goes away.
    drop(holder);
    let status = tokio::time::timeout(GENEROUS, waiting)
        .await
        .expect("served once a slot is free")
        .unwrap();
    assert_eq!(status, StatusCode::OK);
}

async fn snapshot(
    store: &dyn Store,
) -> (
    Vec<hoopbot::domain::AccessRequest>,
    hoopbot::audit::Head,
    usize,
) {
    let filter = hoopbot::store::ListFilter {
        limit: 10_000,
        ..Default::default()
    };
    (
        store.list_requests(&filter).await.unwrap(),
        store.audit_head().await.unwrap(),
        store.outbox().await.unwrap().len(),
    )
}

/// JSON escapes a control character as six bytes: the limit is on the command, not on that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_limit_applies_to_the_command_not_its_json_encoding() {
    const LIMIT: usize = 1024 * 1024;
    let server = Server::start(|config| {
        config.server.max_command_bytes = LIMIT;
    })
    .await;
    let token = server.token("alice@x.com").await;
    let client = reqwest::Client::new();
    let submit = |command: String| {
        client
            .post(format!("http://{}/api/v1/exec", server.addr))
            .bearer_auth(&token)
            .json(&json!({ "connection": "prod-db", "command": command }))
            .send()
    };
    let controls = "\u{1}".repeat(400 * 1024);
    let reply = submit(controls.clone()).await.unwrap();
    assert_eq!(reply.status(), StatusCode::CREATED);
    let created: Value = reply.json().await.unwrap();
    let stored = server
        .store
        .get_request(created["id"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.command, controls);

    let reply = submit("\u{1}".repeat(LIMIT + 1)).await.unwrap();
    assert_eq!(reply.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = reply.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_large");
    assert_eq!(
        body["error"]["message"],
        format!(
            "the command is {} bytes; the limit is {LIMIT} bytes",
            LIMIT + 1
        )
    );
}

/// Each demo start issues new tokens and revokes the earlier ones, audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_revokes_its_earlier_tokens_at_each_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut config =
        hoopbot::demo::config_with_key_file(&dir.path().join("demo.audit-key")).unwrap();
    let url = format!("sqlite://{}", dir.path().join("demo.db").display());
    config.server.database_url = url.clone().into();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    let app = App::build(config, Clock::system()).await.unwrap();
    let store = inspect(&url).await;
    let first = hoopbot::demo::fresh_tokens(&app.hoop).await.unwrap();
    let second = hoopbot::demo::fresh_tokens(&app.hoop).await.unwrap();
    assert_eq!(first.len(), 4);
    for ((email, old), (_, new)) in first.iter().zip(&second) {
        let digest = |t: &str| hoopbot::token::digest(t);
        assert_eq!(
            store.find_token(&digest(old)).await.unwrap(),
            None,
            "{email}"
        );
        assert_eq!(
            store
                .find_token(&digest(new))
                .await
                .unwrap()
                .map(|t| t.subject),
            Some(TokenSubject::User(email.parse().unwrap()))
        );
    }
    let tokens = store.list_tokens().await.unwrap();
    assert_eq!(tokens.iter().filter(|t| t.revoked_at.is_none()).count(), 4);
    let events = store.audit_events(None).await.unwrap();
    let kinds = |kind: &str| events.iter().filter(|e| e.kind == kind).count();
    assert_eq!((kinds("token_created"), kinds("token_revoked")), (8, 4));
}

on_both_backends!(audit_details_write_times_as_rfc3339);

async fn audit_details_write_times_as_rfc3339(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = app.held("SELECT 1").await;
    app.advance(Duration::from_secs(31 * 60));
    app.hoop.sweep().await.unwrap();
    let claimed = app
        .submit("alice@x.com", "counter", "UPDATE n SET v = v + 1")
        .await;
    assert_eq!(claimed.status, StatusCode::CREATED, "{:?}", claimed.body);
    let job = claimed.body["id"].as_str().unwrap().to_string();
    let agent = app.agent_token("racer").await;
    let reply = app
        .send(
            app.client
                .post(app.url("/api/v1/agent/jobs/claim"))
                .bearer_auth(agent)
                .json(&json!({})),
        )
        .await;
    assert_eq!(reply.body["job"]["id"], job.as_str(), "{:?}", reply.body);

    let is_time = |value: &Value| {
        value
            .as_str()
            .is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok())
    };
    let held = detail(&app, &id, "held").await;
    assert!(is_time(&held["expires_at"]), "{held}");
    let expired = detail(&app, &id, "expired").await;
    assert!(is_time(&expired["expires_at"]), "{expired}");
    let claim = detail(&app, &job, "claimed").await;
    assert!(is_time(&claim["offer_until"]), "{claim}");
}

/// The detail of request `id`'s first `kind` audit event.
async fn detail(app: &TestApp, id: &str, kind: &str) -> Value {
    let reply = app
        .get("root@x.com", &format!("/api/v1/access-requests/{id}/audit"))
        .await;
    let events = reply.body["items"].as_array().unwrap();
    let event = events.iter().find(|e| e["kind"] == kind);
    event.unwrap_or_else(|| panic!("no {kind} event"))["detail"].clone()
}

/// `hoop migrate` with `config` text written to a fresh directory: (exit code, stdout, stderr).
fn migrate(database_url: &str) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hoop.toml");
    std::fs::write(
        &config,
        format!("[server]\ndatabase_url = \"{database_url}\"\n"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hoop"))
        .args(["migrate", "--config"])
        .arg(&config)
        .env("HOOP_LOG", "error")
        .env_remove("HOOP_DATABASE_URL")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_unreachable_postgres_is_named_and_its_password_hidden() {
    // Nothing listens on port 1.
    let (code, _, stderr) = migrate("postgres://hoop:s3cret@127.0.0.1:1/hoop?password=s3cret");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("error: cannot reach Postgres at 127.0.0.1:1"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_postgres_database_is_named_with_its_server() {
    let Some(admin) = postgres_url() else {
        crate::helpers::skip(POSTGRES_ENV);
        return;
    };
    let missing = format!("hoop_missing_{:08x}", rand::random::<u32>());
    let url = format!("{}?password=s3cret", replace_database(&admin, &missing));
    let (code, _, stderr) = tokio::task::spawn_blocking(move || migrate(&url))
        .await
        .unwrap();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "error: database \"{missing}\" does not exist on 127.0.0.1:5432"
        )),
        "{stderr}"
    );
    assert!(
        !stderr.contains("at line") && !stderr.contains("s3cret"),
        "{stderr}"
    );
}

/// `hoop migrate` and `hoop token` name the database without a password given as a query
/// parameter, however its name is spelled: the driver decodes `pass%77ord` to `password`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_and_token_hide_a_password_given_as_a_query_parameter() {
    let Some(_) = postgres_url() else {
        crate::helpers::skip(POSTGRES_ENV);
        return;
    };
    let db = TestDb::new(Backend::Postgres).await;
    for key in ["password", "pass%77ord", "%70ASSWORD"] {
        // Postgres here trusts local connections, so the password is accepted and ignored.
        let url = format!("{}?sslmode=disable&{key}=s3cret", db.url);
        let (code, stdout, stderr) = tokio::task::spawn_blocking(move || migrate(&url))
            .await
            .unwrap();
        assert_eq!(code, Some(0), "{stderr}");
        // The name as written, the value hidden.
        assert_eq!(
            stdout,
            format!(
                "migrations applied to {}?sslmode=disable&{key}=***\n",
                db.url
            )
        );
        assert!(
            stderr.contains(&format!("{key}=***")) && !stderr.contains("s3cret"),
            "{stderr}"
        );
    }
    let url = format!("{}?pass%77ord=s3cret", db.url);
    let out = tokio::task::spawn_blocking(move || hoop_with(&url, &["token", "list"]))
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        printed.contains("pass%77ord=***") && !printed.contains("s3cret"),
        "{printed}"
    );
}

/// `hoop ARGS` with a config on `database_url` written to a fresh directory.
fn hoop_with(database_url: &str, args: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hoop.toml");
    std::fs::write(
        &config,
        format!("[server]\ndatabase_url = \"{database_url}\"\n"),
    )
    .unwrap();
    Command::new(env!("CARGO_BIN_EXE_hoop"))
        .args(args)
        .arg("--config")
        .arg(&config)
        .env("HOOP_LOG", "error")
        .env_remove("HOOP_DATABASE_URL")
        .output()
        .unwrap()
}

/// An `admin_group` nobody is in means nobody can act as an admin: `hoop serve` says so at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_warns_when_nobody_is_in_the_admin_group() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hoop.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndatabase_url = \"sqlite://{}\"\nadmin_group = \"admins\"\naudit_key = \"{}\"\n\n[[users]]\nemail = \"a@x.com\"\ngroups = [\"admin\"]\n",
            dir.path().join("hoop.db").display(),
            crate::helpers::AUDIT_KEY
        ),
    )
    .unwrap();
    let mut server = Command::new(env!("CARGO_BIN_EXE_hoop"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("HOOP_LOG", "warn")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = server.stderr.take().unwrap();
    let warning = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .find(|line| line.contains("no user is in the admin group"))
    });
    let warning = tokio::time::timeout(GENEROUS, warning).await;
    // SAFETY: kill(2) on a child process we own, by its pid.
    unsafe { libc::kill(server.id() as i32, libc::SIGTERM) };
    let _ = server.wait();
    let warning = warning.expect("the warning comes").unwrap();
    assert!(
        warning.is_some_and(|line| line.contains("admins")),
        "no warning"
    );
}
