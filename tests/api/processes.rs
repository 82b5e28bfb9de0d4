//! The whole story with real processes: `hoop serve`, `hoop agent` and `hoop exec` as a user runs
//! them, against real Postgres, MariaDB, SQLite and bash targets.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use sqlx::Connection;

use crate::helpers::{POSTGRES_ENV, eventually, postgres_url, replace_database, until};

pub const MYSQL_ENV: &str = "HOOP_TEST_MYSQL_URL";

pub fn hoop() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hoop"));
    command
        .env("HOOP_LOG", "warn")
        .env_remove("HOOP_CONFIG")
        .env_remove("HOOP_URL")
        .env_remove("HOOP_TOKEN")
        .env_remove("HOOP_AUDIT_KEY");
    command
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `hoop serve` and `hoop agent`, with tokens for alice (requester), bob (dba-team) and
/// sam (security). Both processes are killed when it is dropped.
pub struct Stack {
    pub dir: tempfile::TempDir,
    pub url: String,
    pub tokens: std::collections::HashMap<&'static str, String>,
    server: Child,
    server_config: PathBuf,
    agent: Option<Child>,
    http: reqwest::Client,
}

impl Stack {
    /// `connection` is the `[[connections]]` entry's type-specific lines for the agent's config
    /// (e.g. `type = "sqlite"\nurl = "…"`); `timeout` is the approval timeout.
    pub async fn start(connection: &str, timeout: &str) -> Stack {
        hoopbot::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let kind = connection.lines().find(|l| l.starts_with("type")).unwrap();
        let server_config = dir.path().join("hoop.toml");
        std::fs::write(
            &server_config,
            format!(
                r#"[server]
listen = "127.0.0.1:{port}"
public_url = "{url}"
database_url = "sqlite://{db}"
audit_key = "{audit_key}"

[[users]]
email = "alice@x.com"
groups = ["engineering"]
[[users]]
email = "bob@x.com"
groups = ["dba-team"]
[[users]]
email = "sam@x.com"
groups = ["security"]

[[connections]]
name = "target"
{kind}
agent = "edge"
[connections.access_requests]
approval_groups = ["dba-team", "security"]
timeout = "{timeout}"
"#,
                db = dir.path().join("hoop.db").display(),
                audit_key = crate::helpers::AUDIT_KEY,
            ),
        )
        .unwrap();
        let token = |args: &[&str]| {
            let out = hoop()
                .args(["token", "create"])
                .args(args)
                .arg("--config")
                .arg(&server_config)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        };
        let mut tokens = std::collections::HashMap::new();
        for who in ["alice@x.com", "bob@x.com", "sam@x.com"] {
            tokens.insert(who, token(&[who]));
        }
        let agent_token = token(&["--agent", "edge"]);
        let server = serve(&server_config);
        let agent_config = dir.path().join("agent.toml");
        std::fs::write(
            &agent_config,
            format!("[agent]\nserver_url = \"{url}\"\ntoken = \"{agent_token}\"\n\n[[connections]]\nname = \"target\"\n{connection}\n"),
        )
        .unwrap();
        let agent = hoop()
            .args(["agent", "--config"])
            .arg(&agent_config)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stack = Stack {
            dir,
            url,
            tokens,
            server,
            server_config,
            agent: Some(agent),
            http: reqwest::Client::new(),
        };
        stack.until_healthy().await;
        stack
    }

    /// Kills the server outright and starts it again on the same port and database.
    pub async fn restart_server(&mut self, down_for: Duration) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        tokio::time::sleep(down_for).await;
        self.server = serve(&self.server_config);
        self.until_healthy().await;
    }

    async fn until_healthy(&self) {
        let what = format!("hoop serve comes up at {}", self.url);
        until(Duration::from_secs(10), &what, || async {
            self.http
                .get(format!("{}/healthz", self.url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await
    }

    /// `hoop exec target …` as alice, started in the background with its output captured.
    pub fn exec(&self, args: &[&str]) -> Child {
        hoop()
            .args(["exec", "target"])
            .args(args)
            .env("HOOP_URL", &self.url)
            .env("HOOP_TOKEN", &self.tokens["alice@x.com"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Any `hoop` command as `who`.
    pub fn hoop_as(&self, who: &str, args: &[&str]) -> Output {
        hoop()
            .args(args)
            .env("HOOP_URL", &self.url)
            .env("HOOP_TOKEN", &self.tokens[who])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    pub async fn api(
        &self,
        who: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Value {
        let mut request = self
            .http
            .request(method, format!("{}/api/v1{path}", self.url))
            .bearer_auth(&self.tokens[who]);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.unwrap().json().await.unwrap()
    }

    /// The id of the pending request, once `hoop exec` has submitted it.
    pub async fn pending_request(&self) -> String {
        eventually(Duration::from_secs(10), || async {
            let page = self
                .api(
                    "bob@x.com",
                    reqwest::Method::GET,
                    "/access-requests?status=pending",
                    None,
                )
                .await;
            page["items"][0]["id"]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| "a pending request (none yet)".to_string())
        })
        .await
    }

    pub async fn approve_as_both(&self, id: &str) {
        for who in ["bob@x.com", "sam@x.com"] {
            let reply = self
                .api(
                    who,
                    reqwest::Method::POST,
                    &format!("/access-requests/{id}/approve"),
                    None,
                )
                .await;
            assert!(reply["error"].is_null(), "{reply}");
        }
    }

    pub fn stop_agent(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            let _ = agent.kill();
            let _ = agent.wait();
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.stop_agent();
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

fn serve(config: &Path) -> Child {
    hoop()
        .args(["serve", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

/// Waits for a background `hoop` process and returns (exit code, stdout, stderr).
pub async fn finished(child: Child) -> (i32, String, String) {
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Submits `command` with `hoop exec`, approves it as bob and sam, and returns what exec printed.
async fn approved_run(stack: &Stack, command: &str) -> (i32, String, String) {
    let exec = stack.exec(&["-i", command]);
    let id = stack.pending_request().await;
    stack.approve_as_both(&id).await;
    finished(exec).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_target_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let target = sqlite_with_users(dir.path()).await;
    let stack = Stack::start(&format!("type = \"sqlite\"\nurl = \"{target}\""), "30m").await;
    let exec = stack.exec(&["-i", "SELECT count(*) AS count FROM users"]);
    let id = stack.pending_request().await;
    stack.approve_as_both(&id).await;
    let (code, stdout, stderr) = finished(exec).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, " count \n-------\n     3\n(1 row)\n\n");
    // The id on its own line as well as in the URL.
    assert!(
        stderr.starts_with(&format!(
            "Request {id} is pending.\nWaiting for approval at {}/access-requests/{id}",
            stack.url
        )),
        "{stderr}"
    );
    assert!(
        !stderr.contains('⣾') && !stderr.contains('\r'),
        "no spinner without a terminal: {stderr:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_gets_a_spinner_with_group_progress() {
    let stack = Stack::start("type = \"command\"\ncommand = [\"bash\"]", "30m").await;
    // `script` runs exec under a pseudo-terminal, as a person's shell would.
    let mut exec = Command::new("script")
        .args([
            "-qec",
            &format!("{} exec target -i 'echo done'", env!("CARGO_BIN_EXE_hoop")),
            "/dev/null",
        ])
        .env("HOOP_URL", &stack.url)
        .env("HOOP_TOKEN", &stack.tokens["alice@x.com"])
        .env("HOOP_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The screen arrives in chunks; the second approval waits until the first shows on it.
    let (chunks_tx, mut chunks) = tokio::sync::mpsc::unbounded_channel();
    let mut stdout = exec.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = stdout.read(&mut buf) {
            let _ = chunks_tx.send(buf[..n].to_vec());
        }
    });
    let mut screen = Vec::new();
    let id = stack.pending_request().await;
    stack
        .api(
            "bob@x.com",
            reqwest::Method::POST,
            &format!("/access-requests/{id}/approve"),
            None,
        )
        .await;
    let shown = tokio::time::timeout(Duration::from_secs(30), async {
        while !String::from_utf8_lossy(&screen).contains("dba-team ✓ bob@x.com · security …") {
            screen.extend(
                chunks
                    .recv()
                    .await
                    .expect("exec ended before showing bob's approval"),
            );
        }
    })
    .await;
    assert!(
        shown.is_ok(),
        "exec did not show bob's approval within 30 s: {}",
        String::from_utf8_lossy(&screen)
    );
    stack
        .api(
            "sam@x.com",
            reqwest::Method::POST,
            &format!("/access-requests/{id}/approve"),
            None,
        )
        .await;
    let ended = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(chunk) = chunks.recv().await {
            screen.extend(chunk);
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "exec did not end within 60 s: {}",
        String::from_utf8_lossy(&screen)
    );
    let code = tokio::task::spawn_blocking(move || exec.wait())
        .await
        .unwrap()
        .unwrap()
        .code();
    let screen = String::from_utf8_lossy(&screen).into_owned();
    assert_eq!(code, Some(0), "{screen}");
    assert!(
        screen.contains(&format!(
            "Request {id} is pending.\r\nWaiting for approval at {}/access-requests/{id}\r\n\r\x1b[2K⣾ Waiting for approval... dba-team … · security …",
            stack.url
        )),
        "{screen:?}"
    );
    assert!(
        screen.contains("dba-team ✓ bob@x.com · security …"),
        "{screen:?}"
    );
    assert!(
        screen.contains("\r\x1b[2K"),
        "the spinner redraws its line: {screen:?}"
    );
    assert!(screen.ends_with("done\r\n"), "{screen:?}");
}

async fn sqlite_with_users(dir: &Path) -> String {
    let url = format!("sqlite://{}?mode=rwc", dir.join("shop.db").display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::raw_sql("create table users (id integer primary key, status text); insert into users (status) values ('active'), ('active'), ('active')")
        .execute(&mut conn)
        .await
        .unwrap();
    url
}

/// Runs `test` against a database of its own on the server at `admin`, created and filled with
/// `setup`, and removed afterwards with `drop` (`{name}` stands for its name).
async fn with_scratch_database<C, Fut>(
    admin: &str,
    setup: &'static str,
    drop: &str,
    test: impl FnOnce(String) -> Fut,
) where
    C: Connection,
    for<'c> &'c mut C: sqlx::Executor<'c, Database = C::Database>,
    Fut: std::future::Future<Output = ()>,
{
    let name = format!("hoop_target_{:016x}", rand::random::<u64>());
    let mut conn = C::connect(admin).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("create database {name}")))
        .execute(&mut conn)
        .await
        .unwrap();
    let url = replace_database(admin, &name);
    let mut target = C::connect(&url).await.unwrap();
    sqlx::raw_sql(setup).execute(&mut target).await.unwrap();
    target.close().await.unwrap();
    test(url).await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(drop.replace("{name}", &name)))
        .execute(&mut conn)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_target_end_to_end() {
    let Some(admin) = postgres_url() else {
        crate::helpers::skip(POSTGRES_ENV);
        return;
    };
    let setup = "create table users (id serial primary key, status text); \
                 insert into users (status) select 'active' from generate_series(1, 12345)";
    with_scratch_database::<sqlx::PgConnection, _>(
        &admin,
        setup,
        "drop database {name} with (force)",
        |url| async move {
            let stack = Stack::start(&format!("type = \"postgres\"\nurl = \"{url}\""), "30m").await;
            let (code, stdout, stderr) = approved_run(&stack, "SELECT count(*) FROM users").await;
            assert_eq!(code, 0, "{stderr}");
            assert_eq!(stdout, " count \n-------\n 12345\n(1 row)\n\n");
            let (code, stdout, stderr) =
                approved_run(&stack, "UPDATE users SET status='inactive' WHERE id=123").await;
            assert_eq!(code, 0, "{stderr}");
            assert_eq!(stdout, "UPDATE 1\n");
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_target_end_to_end() {
    let Some(admin) = std::env::var(MYSQL_ENV).ok().filter(|u| !u.is_empty()) else {
        crate::helpers::skip(MYSQL_ENV);
        return;
    };
    let setup = "create table users (id int primary key auto_increment, status text); \
                 insert into users (status) values ('active'), ('active')";
    with_scratch_database::<sqlx::MySqlConnection, _>(
        &admin,
        setup,
        "drop database {name}",
        |url| async move {
            let stack = Stack::start(&format!("type = \"mysql\"\nurl = \"{url}\""), "30m").await;
            let (code, stdout, stderr) =
                approved_run(&stack, "SELECT count(*) AS count FROM users").await;
            assert_eq!(code, 0, "{stderr}");
            assert_eq!(stdout, " count \n-------\n     2\n(1 row)\n\n");
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bash_target_passes_the_exact_text_and_the_exit_code() {
    let stack = Stack::start("type = \"command\"\ncommand = [\"bash\"]", "30m").await;
    // Quotes and $(…) reach bash exactly as approved: bash expands them, not us.
    let (code, stdout, stderr) =
        approved_run(&stack, "echo \"it's $((6 * 7))\"; echo oops >&2; exit 3").await;
    assert_eq!(code, 3, "{stderr}");
    assert_eq!(stdout, "it's 42\n");
    assert!(stderr.contains("oops"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_reports_an_expiry_and_how_long_it_waited() {
    let stack = Stack::start("type = \"command\"\ncommand = [\"bash\"]", "2s").await;
    let (code, _, stderr) = finished(stack.exec(&["-i", "echo late"])).await;
    assert_eq!(code, 1);
    assert!(
        stderr.contains(", after 2s, without approval from dba-team, security."),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_reports_rejection_cancels_and_resumes() {
    let stack = Stack::start("type = \"command\"\ncommand = [\"bash\"]", "30m").await;

    // Rejection: who and why, exit code 1.
    let exec = stack.exec(&["-i", "rm -rf /tmp/nothing"]);
    let id = stack.pending_request().await;
    let reply = stack.hoop_as(
        "sam@x.com",
        &["requests", "reject", &id, "--reason", "use the runbook"],
    );
    assert!(
        reply.status.success(),
        "{}",
        String::from_utf8_lossy(&reply.stderr)
    );
    let (code, _, stderr) = finished(exec).await;
    assert_eq!(code, 1);
    assert!(
        stderr.contains("Rejected by sam@x.com (api): use the runbook"),
        "{stderr}"
    );

    // Ctrl-C while waiting withdraws the request and exits 130.
    let exec = stack.exec(&["-i", "echo never"]);
    let id = stack.pending_request().await;
    // SAFETY: kill(2) on a child process we own.
    unsafe { libc::kill(exec.id() as i32, libc::SIGINT) };
    let (code, _, stderr) = finished(exec).await;
    assert_eq!(code, 130, "{stderr}");
    assert!(
        stderr.contains(&format!("Cancelled request {id}.")),
        "{stderr}"
    );
    let request = stack
        .api(
            "bob@x.com",
            reqwest::Method::GET,
            &format!("/access-requests/{id}"),
            None,
        )
        .await;
    assert_eq!(request["status"], "cancelled");

    // --no-wait, then approvals from the terminal, then `requests wait` prints the result.
    let out = stack.hoop_as(
        "alice@x.com",
        &["exec", "target", "--no-wait", "-i", "echo resumed"],
    );
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let id = stdout.lines().next().unwrap().to_string();
    assert_eq!(
        stdout.lines().nth(1).unwrap(),
        format!("{}/access-requests/{id}", stack.url)
    );
    for (who, group) in [("bob@x.com", "dba-team"), ("sam@x.com", "security")] {
        let out = stack.hoop_as(who, &["requests", "approve", &id, "--group", group]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = stack.hoop_as("alice@x.com", &["requests", "wait", &id]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "resumed\n");
    assert!(out.status.success());

    // -o json: the final request with its result.
    let out = stack.hoop_as("alice@x.com", &["requests", "wait", &id, "-o", "json"]);
    let request: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(request["status"], "executed");
    assert_eq!(request["result"]["stdout"], "resumed\n");
    assert_eq!(request["result"]["exit_code"], 0);
    assert_eq!(request["result"]["agent"], "edge");

    // A second approval attempt says why it was refused and exits non-zero.
    let out = stack.hoop_as("bob@x.com", &["requests", "approve", &id]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already executed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_come_from_files_and_stdin_exactly() {
    let stack = Stack::start("type = \"command\"\ncommand = [\"bash\"]", "30m").await;
    let script = stack.path("job.sh");
    std::fs::write(&script, "printf '%s|' one 'two three'\necho\n").unwrap();
    let exec = stack.exec(&["-f", script.to_str().unwrap(), "-j", "TICKET-7"]);
    let id = stack.pending_request().await;
    let request = stack
        .api(
            "bob@x.com",
            reqwest::Method::GET,
            &format!("/access-requests/{id}"),
            None,
        )
        .await;
    assert_eq!(request["command"], "printf '%s|' one 'two three'\necho\n");
    assert_eq!(request["justification"], "TICKET-7");
    stack.approve_as_both(&id).await;
    let (code, stdout, stderr) = finished(exec).await;
    assert_eq!((code, stdout.as_str()), (0, "one|two three|\n"), "{stderr}");

    let mut piped = hoop()
        .args(["exec", "target"])
        .env("HOOP_URL", &stack.url)
        .env("HOOP_TOKEN", &stack.tokens["alice@x.com"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    piped
        .stdin
        .take()
        .unwrap()
        .write_all(b"echo from stdin")
        .unwrap();
    let id = stack.pending_request().await;
    stack.approve_as_both(&id).await;
    let (code, stdout, _) = finished(piped).await;
    assert_eq!((code, stdout.as_str()), (0, "from stdin\n"));

    // An approver's terminal shows control characters in a command, it does not obey them.
    let sneaky = "rm -rf /srv/data\r\x1b[2Kecho harmless";
    let out = stack.hoop_as(
        "alice@x.com",
        &["exec", "target", "--no-wait", "-i", sneaky],
    );
    let id = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap()
        .to_string();
    let shown = stack.hoop_as("bob@x.com", &["requests", "show", &id]);
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.contains("rm -rf /srv/data\\u{d}\\u{1b}[2Kecho harmless"),
        "{shown}"
    );
    assert!(
        !shown.contains('\x1b') && !shown.contains('\r'),
        "{shown:?}"
    );
    let listed = stack.hoop_as("bob@x.com", &["requests", "list", "--status", "pending"]);
    assert!(!String::from_utf8_lossy(&listed.stdout).contains('\x1b'));

    let unknown = stack.hoop_as("alice@x.com", &["exec", "nope", "-i", "echo"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("connection \"nope\" not found"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_rides_out_a_server_restart() {
    let mut stack = Stack::start("type = \"command\"\ncommand = [\"bash\"]", "30m").await;
    let exec = stack.exec(&["-i", "echo survived"]);
    let id = stack.pending_request().await;
    stack.restart_server(Duration::from_millis(1500)).await;
    stack.approve_as_both(&id).await;
    let (code, stdout, stderr) = finished(exec).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, "survived\n");
    assert!(stderr.contains("Lost contact with the server"), "{stderr}");
    assert!(
        stderr.contains(&format!("hoop requests wait {id}")),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_stores_credentials_privately() {
    let stack = Stack::start("type = \"command\"\ncommand = [\"bash\"]", "30m").await;
    let home = stack.path("home");
    let out = hoop()
        .args([
            "login",
            "--url",
            &stack.url,
            "--token",
            &stack.tokens["alice@x.com"],
        ])
        .env("XDG_CONFIG_HOME", &home)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("as alice@x.com"));
    let file = home.join("hoop/credentials.json");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let list = hoop()
        .args(["requests", "list"])
        .env("XDG_CONFIG_HOME", &home)
        .output()
        .unwrap();
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&list.stdout),
        "No access requests.\n"
    );

    let bad = hoop()
        .args(["login", "--url", &stack.url, "--token", "hoop_wrong"])
        .env("XDG_CONFIG_HOME", stack.path("other"))
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown or revoked token"));
}

/// The README's first command: `hoop serve` with no config runs the demo, whose `demo-db` the server
/// runs itself; a held command is approved from the terminal and its table printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_a_held_command_end_to_end() {
    hoopbot::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut server = hoop()
        .arg("serve")
        .current_dir(dir.path())
        .env("HOOP_LISTEN", format!("127.0.0.1:{port}"))
        .env("HOOP_PUBLIC_URL", &url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The demo prints `export NAME=token   # email [groups]` for each user.
    let stdout = server.stdout.take().unwrap();
    let tokens = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut tokens = std::collections::HashMap::new();
        let mut lines = std::io::BufReader::new(stdout).lines();
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some((name, rest)) = line
                .trim()
                .strip_prefix("export ")
                .and_then(|l| l.split_once('='))
            {
                tokens.insert(
                    name.to_string(),
                    rest.split_whitespace().next().unwrap().to_string(),
                );
            }
            if tokens.len() == 4 {
                break;
            }
        }
        // The rest of what the server prints is not needed here.
        std::thread::spawn(move || lines.for_each(drop));
        tokens
    })
    .await
    .unwrap();
    let as_user = |name: &str| {
        let mut command = hoop();
        command
            .env("HOOP_URL", &url)
            .env("HOOP_TOKEN", &tokens[name])
            .stdin(Stdio::null());
        command
    };
    let exec = as_user("ALICE")
        .args(["exec", "demo-db", "-i", "SELECT count(*) FROM users"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let id = eventually(Duration::from_secs(10), || async {
        let list = as_user("BOB")
            .args(["requests", "list", "--status", "pending"])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&list.stdout);
        match stdout.lines().nth(1) {
            Some(row) => Ok(row.split_whitespace().next().unwrap().to_string()),
            None => Err(format!(
                "a pending request in `hoop requests list`: {stdout}"
            )),
        }
    })
    .await;
    for approver in ["BOB", "SAM"] {
        let out = as_user(approver)
            .args(["requests", "approve", &id])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (code, stdout, stderr) = finished(exec).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, " count(*) \n----------\n    12345\n(1 row)\n\n");
    let audit = as_user("SAM")
        .args(["requests", "show", &id])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&audit.stdout).contains("Status      executed"));

    // SIGTERM stops the server gracefully.
    // SAFETY: kill(2) on a child process we own, by its pid.
    unsafe { libc::kill(server.id() as i32, libc::SIGTERM) };
    let status = tokio::task::spawn_blocking(move || server.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_bad_config_stops_the_server_with_the_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hoop.toml");
    std::fs::write(
        &config,
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[[users]]\nemail = \"a@x.com\"\ngroups = [\"dba\"]\n\n[[connections]]\nname = \"db\"\ntype = \"postgres\"\n[connections.access_requests]\napproval_groups = [\"dba\", \"secruity\"]\n",
    )
    .unwrap();
    let out = hoop()
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:12: connections[0].access_requests.approval_groups: unknown group \"secruity\"",
            config.display()
        )),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_says_when_no_agent_picks_up_an_approved_command() {
    let mut stack = Stack::start("type = \"command\"\ncommand = [\"bash\"]", "30m").await;
    stack.stop_agent();
    let mut exec = stack.exec(&["-i", "echo nobody runs me"]);
    let id = stack.pending_request().await;
    stack.approve_as_both(&id).await;
    // Read stderr until the hint shows (it comes after 15 s without an agent), then press Ctrl-C.
    // The reader then goes away: exec must not crash writing to a closed stderr.
    let stderr = exec.stderr.take().unwrap();
    let seen = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut seen = String::new();
        for line in std::io::BufReader::new(stderr).lines() {
            let line = line.unwrap();
            seen.push_str(&line);
            seen.push('\n');
            if line.contains("no agent has picked it up yet") {
                break;
            }
        }
        seen
    })
    .await
    .unwrap();
    assert!(
        seen.contains(
            "Approved, but no agent has picked it up yet: is an agent running for target?"
        ),
        "{seen}"
    );
    // SAFETY: kill(2) on a child process we own, by its pid.
    unsafe { libc::kill(exec.id() as i32, libc::SIGINT) };
    let status = tokio::task::spawn_blocking(move || exec.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(130));
    let request = stack
        .api(
            "bob@x.com",
            reqwest::Method::GET,
            &format!("/access-requests/{id}"),
            None,
        )
        .await;
    assert_eq!(
        request["status"], "approved",
        "an approved command is not withdrawn by Ctrl-C"
    );
}
