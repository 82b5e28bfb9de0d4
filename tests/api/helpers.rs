//! A real hoopbot server on a random port, on SQLite or Postgres, with one database per test.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use hoopbot::app::App;
use hoopbot::config::Config;
use hoopbot::delivery::Worker;
use hoopbot::domain::Clock;
use hoopbot::service::Hoop;
use hoopbot::store::{Store, TokenSubject};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const POSTGRES_ENV: &str = "HOOP_TEST_POSTGRES_URL";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Generates one test per backend from an `async fn(Backend)`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::helpers::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if $crate::helpers::postgres_url().is_none() {
                    $crate::helpers::skip($crate::helpers::POSTGRES_ENV);
                    return;
                }
                super::$name($crate::helpers::Backend::Postgres).await
            }
        }
    )*};
}

/// Says a test is skipped for lack of a database URL. Written straight to stderr, past the test
/// harness's output capture, so a plain `cargo test` shows what it did not cover. Under CI (`CI`
/// set) it fails the test instead: CI must never go green without the databases.
pub fn skip(variable: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{variable} is not set, but CI is: this test needs that database in CI");
    }
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "skipping: {variable} not set");
}

pub fn postgres_url() -> Option<String> {
    std::env::var(POSTGRES_ENV).ok().filter(|u| !u.is_empty())
}

fn random_suffix() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// A database of its own for one test, dropped with it.
pub struct TestDb {
    pub url: String,
    postgres: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}", dir.path().join("hoop.db").display());
                TestDb {
                    url,
                    postgres: None,
                    _dir: Some(dir),
                }
            }
            Backend::Postgres => {
                let admin = postgres_url().expect("postgres url");
                let name = format!("hoop_test_{}", random_suffix());
                use sqlx::Connection;
                let mut conn = sqlx::PgConnection::connect(&admin)
                    .await
                    .expect("connect to postgres");
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("create database {name}")))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                let url = replace_database(&admin, &name);
                TestDb {
                    url,
                    postgres: Some((admin, name)),
                    _dir: None,
                }
            }
        }
    }
}

/// `url` with its database name replaced by `name`.
pub fn replace_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_part = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    format!("{host_part}/{name}{query}")
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((admin, name)) = self.postgres.take() {
            // Drop runs outside async context; a fresh runtime on a thread of its own does the cleanup.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    use sqlx::Connection;
                    if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                            "drop database if exists {name} with (force)"
                        )))
                        .execute(&mut conn)
                        .await;
                    }
                });
            })
            .join();
        }
    }
}

pub const USERS: &[(&str, &[&str])] = &[
    ("alice@x.com", &["engineering"]),
    ("bob@x.com", &["dba-team"]),
    ("dora@x.com", &["dba-team"]),
    ("sam@x.com", &["security"]),
    ("eve@x.com", &["engineering", "sre"]),
    ("root@x.com", &["admin"]),
];

/// The audit chain's key in every test config.
pub const AUDIT_KEY: &str = "test-audit-key-0123456789abcdef0123456789";

/// Commands above this many bytes are refused in tests (kept small to test 413 cheaply).
pub const MAX_COMMAND_BYTES: usize = 4096;

pub fn test_config(database_url: &str) -> Config {
    Config::parse(&test_config_text(database_url), "test config").expect("valid test config")
}

/// The text of [`test_config`], for tests that add to it.
pub fn test_config_text(database_url: &str) -> String {
    let mut text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\npublic_url = \"http://hoop.test\"\ndatabase_url = \"{database_url}\"\nmax_command_bytes = {MAX_COMMAND_BYTES}\naudit_key = \"{AUDIT_KEY}\"\n"
    );
    for (email, groups) in USERS {
        text.push_str(&format!(
            "[[users]]\nemail = \"{email}\"\ngroups = {groups:?}\n"
        ));
    }
    text.push_str(
        r#"
[[connections]]
name = "prod-db"
type = "postgres"
[connections.access_requests]
approval_groups = ["dba-team", "security"]
exempt_groups = ["sre"]
timeout = "30m"

[[connections]]
name = "scratch-db"
type = "postgres"

# Run by the remote agent "racer"; no approval needed, so jobs are ready at once.
[[connections]]
name = "counter"
type = "sqlite"
agent = "racer"

[[connections]]
name = "box"
type = "command"
agent = "racer"
"#,
    );
    text
}

/// Another replica's service and its delivery worker, without a server.
pub struct ReplicaService {
    pub hoop: Hoop,
    worker: Arc<Worker>,
}

impl ReplicaService {
    /// This replica's delivery worker, for tests to step.
    pub fn delivery_worker(&self) -> Arc<Worker> {
        self.worker.clone()
    }
}

impl std::ops::Deref for ReplicaService {
    type Target = Hoop;

    fn deref(&self) -> &Hoop {
        &self.hoop
    }
}

pub struct TestApp {
    pub addr: std::net::SocketAddr,
    pub hoop: Hoop,
    /// The server's delivery worker, which does not run by itself: tests step it.
    worker: Arc<Worker>,
    pub db: TestDb,
    /// Milliseconds added to the real clock; [`TestApp::advance`] moves it.
    pub now: Arc<AtomicI64>,
    pub tokens: HashMap<&'static str, String>,
    pub client: reqwest::Client,
    /// Config text added to [`test_config_text`] (webhooks), for this server and its replicas.
    extra_config: String,
    /// A store of the test's own on the server's database (see [`TestApp::store`]).
    store: tokio::sync::OnceCell<Arc<dyn Store>>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

/// Runs `sql` on the database at `url` directly, as someone with write access to it would.
pub async fn execute_sql(url: &str, sql: String) {
    use sqlx::Connection;
    let sql = sqlx::AssertSqlSafe(sql);
    if url.starts_with("sqlite:") {
        let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
    } else {
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
    }
}

/// A response: status and JSON body.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
}

impl Reply {
    /// The error code of an error reply.
    pub fn code(&self) -> &str {
        self.body["error"]["code"]
            .as_str()
            .unwrap_or("<no error code>")
    }
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> TestApp {
        TestApp::spawn_with(backend, "").await
    }

    /// A server whose config also has `extra_config` (e.g. `[[webhooks]]`). Its delivery worker
    /// does not run: tests step it with [`TestApp::delivery_worker`].
    pub async fn spawn_with(backend: Backend, extra_config: &str) -> TestApp {
        hoopbot::install_crypto_provider();
        let db = TestDb::new(backend).await;
        let now = Arc::new(AtomicI64::new(0));
        let (hoop, server) = start(&db.url, now.clone(), extra_config).await;
        let mut app = TestApp {
            addr: server.local_addr(),
            worker: server.delivery_worker(),
            hoop,
            db,
            now,
            tokens: HashMap::new(),
            client: reqwest::Client::new(),
            extra_config: extra_config.to_string(),
            store: tokio::sync::OnceCell::new(),
            stop: None,
            server: None,
        };
        app.launch(server);
        for (email, _) in USERS {
            let token = hoopbot::token::create(
                app.store().await.as_ref(),
                &TokenSubject::User(email.parse().unwrap()),
                app.hoop.clock.now(),
            )
            .await
            .unwrap();
            app.tokens.insert(email, token);
        }
        app
    }

    /// Gives `email`, a user the test added to the config, an API token like the others'.
    pub async fn token_for(&mut self, email: &'static str) {
        let token = hoopbot::token::create(
            self.store().await.as_ref(),
            &TokenSubject::User(email.parse().unwrap()),
            self.hoop.clock.now(),
        )
        .await
        .unwrap();
        self.tokens.insert(email, token);
    }

    /// A second server on the same database, sharing this one's clock and tokens.
    pub async fn replica(&self) -> Replica {
        let (_, app) = start(&self.db.url, self.now.clone(), &self.extra_config).await;
        let addr = app.local_addr();
        let (stop, stop_rx) = oneshot::channel::<()>();
        tokio::spawn(app.run(async move {
            let _ = stop_rx.await;
        }));
        Replica {
            addr,
            tokens: self.tokens.clone(),
            client: self.client.clone(),
            _stop: stop,
        }
    }

    /// The service of another replica on the same database, on a machine whose clock is `skew`
    /// ms off (negative: behind). Time moves for it as for this one.
    pub async fn skewed_replica(&self, skew: i64) -> ReplicaService {
        let (hoop, app) = start_with(
            &self.db.url,
            Clock::shifted(self.now.clone()).skewed(skew),
            &self.extra_config,
        )
        .await;
        ReplicaService {
            hoop,
            worker: app.delivery_worker(),
        }
    }

    /// The server's delivery worker, for tests to step (it does not run by itself).
    pub fn delivery_worker(&self) -> Arc<Worker> {
        self.worker.clone()
    }

    /// The server's database, to look at what it keeps (and to plant what a test needs) the way
    /// another process on the same database would: the service keeps its own store to itself.
    /// Opened on first use, then shared by the test.
    pub async fn store(&self) -> Arc<dyn Store> {
        self.store
            .get_or_init(|| inspect(&self.db.url))
            .await
            .clone()
    }

    /// A new token for agent `name`.
    pub async fn agent_token(&self, name: &str) -> String {
        hoopbot::token::create(
            self.store().await.as_ref(),
            &TokenSubject::Agent(name.to_string()),
            self.hoop.clock.now(),
        )
        .await
        .unwrap()
    }

    /// An agent talking HTTP to this server as `name`, running `targets` (by connection name).
    pub async fn agent(
        &self,
        name: &str,
        targets: Vec<(String, hoopbot::config::ConnectionTarget)>,
    ) -> hoopbot::agent::Agent {
        let client = hoopbot::client::Client::new(&self.url(""), &self.agent_token(name).await);
        let targets = targets
            .into_iter()
            .map(|(name, target)| (name.parse().expect("a connection name"), target));
        hoopbot::agent::Agent::new(Arc::new(hoopbot::agent::HttpQueue(client)), targets)
    }

    /// Stops the server (if running) and starts a new one on the same database.
    pub async fn stop_and_start(&mut self) {
        self.stop().await;
        let (_, app) = start(&self.db.url, self.now.clone(), &self.extra_config).await;
        self.launch(app);
    }

    fn launch(&mut self, app: App) {
        self.addr = app.local_addr();
        self.worker = app.delivery_worker();
        let hoop = app.hoop.clone();
        self.hoop = hoop;
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        self.stop = Some(stop_tx);
        self.server = Some(tokio::spawn(async move {
            app.run(async move {
                let _ = stop_rx.await;
            })
            .await
            .unwrap();
        }));
    }

    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap();
        }
    }

    pub fn advance(&self, by: std::time::Duration) {
        self.now.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn token(&self, email: &str) -> &str {
        &self.tokens[email]
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let response = request.send().await.expect("request sent");
        let status = response.status();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("JSON body, got {status} {text:?}"));
        Reply { status, body }
    }

    pub async fn post(&self, who: &str, path: &str, body: Option<Value>) -> Reply {
        let mut request = self
            .client
            .post(self.url(path))
            .bearer_auth(self.token(who));
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.send(request).await
    }

    pub async fn get(&self, who: &str, path: &str) -> Reply {
        self.send(self.client.get(self.url(path)).bearer_auth(self.token(who)))
            .await
    }

    pub async fn submit(&self, who: &str, connection: &str, command: &str) -> Reply {
        self.post(
            who,
            "/api/v1/exec",
            Some(json!({ "connection": connection, "command": command })),
        )
        .await
    }

    /// Starts a `wait` for request `id` past `version` (as alice, up to `timeout_s`) in the
    /// background.
    pub fn spawn_wait(&self, id: &str, version: i64, timeout_s: u64) -> JoinHandle<Value> {
        let request = self
            .client
            .get(self.url(&format!(
                "/api/v1/access-requests/{id}/wait?version={version}&timeout_s={timeout_s}"
            )))
            .bearer_auth(self.token("alice@x.com"));
        tokio::spawn(async move { request.send().await.unwrap().json::<Value>().await.unwrap() })
    }

    /// Returns once someone is waiting on request `id` on this server.
    pub async fn until_parked(&self, id: &str) {
        let what = format!("someone waiting on {id}");
        until(Duration::from_secs(10), &what, || async {
            self.hoop.changes.watchers(id) > 0
        })
        .await
    }

    /// Submits as alice on prod-db and returns the new request's id.
    pub async fn held(&self, command: &str) -> String {
        let reply = self.submit("alice@x.com", "prod-db", command).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
        assert_eq!(reply.body["status"], "pending");
        reply.body["id"].as_str().unwrap().to_string()
    }

    pub async fn approve(&self, who: &str, id: &str, group: Option<&str>) -> Reply {
        let body = group.map(|g| json!({ "group": g }));
        self.post(who, &format!("/api/v1/access-requests/{id}/approve"), body)
            .await
    }

    pub async fn reject(&self, who: &str, id: &str, reason: &str) -> Reply {
        self.post(
            who,
            &format!("/api/v1/access-requests/{id}/reject"),
            Some(json!({ "reason": reason })),
        )
        .await
    }

    pub async fn cancel(&self, who: &str, id: &str) -> Reply {
        self.post(who, &format!("/api/v1/access-requests/{id}/cancel"), None)
            .await
    }

    pub async fn request(&self, id: &str) -> Value {
        let reply = self
            .get("root@x.com", &format!("/api/v1/access-requests/{id}"))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        reply.body
    }

    /// The kinds of a request's audit events, in order.
    pub async fn audit_kinds(&self, id: &str) -> Vec<String> {
        let reply = self
            .get("root@x.com", &format!("/api/v1/access-requests/{id}/audit"))
            .await;
        assert_eq!(reply.status, StatusCode::OK);
        reply.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["kind"].as_str().unwrap().to_string())
            .collect()
    }

    /// Everything a bad request must leave untouched: requests, audit chain and outbox.
    pub async fn snapshot(
        &self,
    ) -> (
        Vec<hoopbot::domain::AccessRequest>,
        hoopbot::audit::Head,
        usize,
    ) {
        let store = self.store().await;
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
}

/// Another replica of a [`TestApp`]; stops when dropped.
pub struct Replica {
    addr: std::net::SocketAddr,
    tokens: HashMap<&'static str, String>,
    client: reqwest::Client,
    _stop: oneshot::Sender<()>,
}

impl Replica {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn get(&self, who: &str, path: &str) -> Reply {
        let response = self
            .client
            .get(format!("http://{}{path}", self.addr))
            .bearer_auth(&self.tokens[who])
            .send()
            .await
            .unwrap();
        Reply {
            status: response.status(),
            body: response.json().await.unwrap_or(Value::Null),
        }
    }

    pub async fn approve(&self, who: &str, id: &str, group: Option<&str>) -> Reply {
        let mut request = self
            .client
            .post(format!(
                "http://{}/api/v1/access-requests/{id}/approve",
                self.addr
            ))
            .bearer_auth(&self.tokens[who]);
        if let Some(group) = group {
            request = request.json(&json!({ "group": group }));
        }
        let response = request.send().await.unwrap();
        Reply {
            status: response.status(),
            body: response.json().await.unwrap(),
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A store of its own on the database at `url`, with the test audit key.
pub async fn inspect(url: &str) -> Arc<dyn Store> {
    hoopbot::store::connect(
        url,
        hoopbot::changes::ChangeHub::new(),
        Some(hoopbot::audit::AuditKey::new(AUDIT_KEY).unwrap()),
    )
    .await
    .expect("the test database opens")
}

async fn start(database_url: &str, now: Arc<AtomicI64>, extra_config: &str) -> (Hoop, App) {
    start_with(database_url, Clock::shifted(now), extra_config).await
}

async fn start_with(database_url: &str, clock: Clock, extra_config: &str) -> (Hoop, App) {
    let text = test_config_text(database_url) + extra_config;
    let config = Config::parse(&text, "test config").expect("valid test config");
    let app = App::build(config, clock)
        .await
        .expect("app builds")
        .without_background_sweeps()
        .without_background_deliveries()
        .without_embedded_agent();
    (app.hoop.clone(), app)
}

/// How often [`eventually`] asks again.
const POLL_EVERY: Duration = Duration::from_millis(10);

/// Asks `check` until it answers `Ok`, and returns that; `Err` says what is still missing. Fails
/// the test with the last such answer if none is `Ok` within `within` (a check that hangs counts
/// against the same deadline).
pub async fn eventually<T, F, Fut>(within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + within;
    let mut last = String::from("the check never finished");
    loop {
        match tokio::time::timeout_at(deadline, check()).await {
            Ok(Ok(done)) => return done,
            Ok(Err(missing)) => last = missing,
            Err(_) => {}
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {within:?}: {last}"
        );
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// Waits until `check` holds; fails the test saying `what` was awaited if not within `within`.
pub async fn until<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually(within, || {
        let holds = check();
        async move {
            if holds.await {
                Ok(())
            } else {
                Err(what.to_string())
            }
        }
    })
    .await
}
