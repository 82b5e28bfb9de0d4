//! Waiter benchmark: what N clients long-polling `GET …/wait` cost a real `hoop serve` process
//! while nothing changes (resident memory, CPU), and how soon each is woken by its change.
//!
//!   cargo build --release && cargo run --release --example waiters -- sqlite 10000
//!   HOOP_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo run --release --example waiters -- postgres 10000
//!
//! It starts `target/release/hoop serve` (built beside this example) on a fresh database, submits N
//! held requests, parks one waiter per request, measures the server's RSS and CPU time over 20 idle
//! seconds (from /proc), then approves WAKES of the requests one at a time and times from sending
//! each approval to its waiter's reply.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const IDLE: Duration = Duration::from_secs(20);
const WAKES: usize = 200;
const SUBMITTERS: usize = 32;
const AUDIT_KEY: &str = "waiter-benchmark-audit-key-0123456789abcdef";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    hoopbot::install_crypto_provider();
    let backend = std::env::args().nth(1).unwrap_or_else(|| "sqlite".into());
    let waiters: usize = match std::env::args().nth(2) {
        Some(n) => n.parse()?,
        None => 10_000,
    };
    let hoop = hoop_binary()?;
    let dir = tempfile::tempdir()?;
    let scratch = Scratch::new(&backend, dir.path()).await?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let config = dir.path().join("hoop.toml");
    std::fs::write(
        &config,
        format!(
            r#"[server]
listen = "127.0.0.1:{port}"
database_url = "{url}"
audit_key = "{AUDIT_KEY}"
[[users]]
email = "alice@x.com"
groups = ["engineering"]
[[users]]
email = "bob@x.com"
groups = ["dba-team"]
[[users]]
email = "root@x.com"
groups = ["admin"]
[[connections]]
name = "prod-db"
type = "postgres"
agent = "bench"
[connections.access_requests]
approval_groups = ["dba-team"]
timeout = "1h"
"#,
            url = scratch.url
        ),
    )?;
    let token = |email: &str| -> anyhow::Result<String> {
        let out = Command::new(&hoop)
            .args(["token", "create", email, "--config"])
            .arg(&config)
            .env("HOOP_LOG", "error")
            .stderr(Stdio::null())
            .output()?;
        anyhow::ensure!(out.status.success(), "hoop token create failed");
        Ok(String::from_utf8(out.stdout)?.trim().to_string())
    };
    let (alice, bob) = (token("alice@x.com")?, token("bob@x.com")?);
    let mut server = Server(
        Command::new(&hoop)
            .args(["serve", "--config"])
            .arg(&config)
            .env("HOOP_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let pid = server.0.id();
    let base = format!("http://127.0.0.1:{port}/api/v1");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(waiters + 100)
        .build()?;
    until_healthy(&http, port).await?;

    // N held requests.
    let started = Instant::now();
    let ids = submit(&http, &base, &alice, waiters).await?;
    println!(
        "{backend}: submitted {waiters} requests in {:.1}s",
        started.elapsed().as_secs_f64()
    );

    // One long-polling waiter per request; each records when its reply came.
    let mut parked = Vec::with_capacity(waiters);
    for id in &ids {
        let request = http
            .get(format!("{base}/access-requests/{id}/wait"))
            .query(&[("version", "1"), ("timeout_s", "300")])
            .bearer_auth(&alice);
        parked.push(tokio::spawn(async move {
            let reply = request.send().await.and_then(|r| r.error_for_status());
            let woken_at = Instant::now();
            let body: Value = match reply {
                Ok(reply) => reply.json().await.unwrap_or(Value::Null),
                Err(e) => json!({ "error": e.to_string() }),
            };
            (woken_at, body)
        }));
    }
    let before = rss_kib(pid)?;
    let connections = until_connections(port, waiters).await?;
    println!(
        "{backend}: {connections} connections open to the server (RSS {:.1} MiB before the waiters)",
        before as f64 / 1024.0
    );
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Idle: nothing changes.
    let cpu_before = cpu_ticks(pid)?;
    let mut rss_peak = 0;
    let mut rss_last = 0;
    let idle_started = Instant::now();
    while idle_started.elapsed() < IDLE {
        tokio::time::sleep(Duration::from_secs(1)).await;
        rss_last = rss_kib(pid)?;
        rss_peak = rss_peak.max(rss_last);
    }
    let ticks = cpu_ticks(pid)? - cpu_before;
    // SAFETY: sysconf only reads a system constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu_seconds = ticks as f64 / per_second;
    println!(
        "{backend}: {waiters} waiters idle for {}s: server RSS {:.1} MiB at the end ({:.1} MiB at most), CPU {:.2}s ({:.2}% of a core)",
        IDLE.as_secs(),
        rss_last as f64 / 1024.0,
        rss_peak as f64 / 1024.0,
        cpu_seconds,
        cpu_seconds / IDLE.as_secs_f64() * 100.0
    );

    // Wake-ups: approve requests one at a time; time until each one's waiter has its reply.
    let mut latencies = Vec::with_capacity(WAKES);
    let mut parked = parked.into_iter();
    for id in ids.iter().take(WAKES) {
        let waiter = parked.next().expect("one waiter per request");
        let sent = Instant::now();
        let approved = http
            .post(format!("{base}/access-requests/{id}/approve"))
            .bearer_auth(&bob)
            .send()
            .await?;
        anyhow::ensure!(
            approved.status().is_success(),
            "approve: {}",
            approved.status()
        );
        let (woken_at, body) = waiter.await?;
        anyhow::ensure!(body["status"] == "approved", "waiter of {id} got {body}");
        latencies.push(woken_at.saturating_duration_since(sent));
    }
    latencies.sort();
    println!(
        "{backend}: approval sent → its waiter has the reply: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({WAKES} wake-ups among {waiters} waiters)",
        ms(latencies[WAKES / 2]),
        ms(latencies[WAKES * 99 / 100]),
        ms(latencies[WAKES - 1]),
    );

    server.stop();
    for waiter in parked {
        waiter.abort();
    }
    scratch.drop_database().await?;
    Ok(())
}

/// `hoop` as built beside this example (target/release/hoop for a release example).
fn hoop_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let hoop = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("hoop"))
        .filter(|p| p.exists())
        .ok_or_else(|| anyhow::anyhow!("build the server first: cargo build --release"))?;
    Ok(hoop)
}

/// The database the server runs on: a SQLite file, or a scratch Postgres database.
struct Scratch {
    url: String,
    postgres: Option<(String, String)>,
}

impl Scratch {
    async fn new(backend: &str, dir: &Path) -> anyhow::Result<Scratch> {
        use sqlx::Connection;
        match backend {
            "sqlite" => Ok(Scratch {
                url: format!("sqlite://{}", dir.join("waiters.db").display()),
                postgres: None,
            }),
            "postgres" => {
                let admin = std::env::var("HOOP_TEST_POSTGRES_URL").map_err(|_| {
                    anyhow::anyhow!("set HOOP_TEST_POSTGRES_URL for the postgres run")
                })?;
                let name = format!("hoop_waiters_{:08x}", rand::random::<u32>());
                let mut conn = sqlx::PgConnection::connect(&admin).await?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("create database {name}")))
                    .execute(&mut conn)
                    .await?;
                let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
                Ok(Scratch {
                    url: format!("{base}/{name}"),
                    postgres: Some((admin.clone(), name)),
                })
            }
            other => anyhow::bail!("unknown backend {other}; use sqlite or postgres"),
        }
    }

    async fn drop_database(self) -> anyhow::Result<()> {
        use sqlx::Connection;
        if let Some((admin, name)) = self.postgres {
            let mut conn = sqlx::PgConnection::connect(&admin).await?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "drop database {name} with (force)"
            )))
            .execute(&mut conn)
            .await?;
        }
        Ok(())
    }
}

/// The server process; stopped (SIGTERM, then waited for) when dropped.
struct Server(Child);

impl Server {
    fn stop(&mut self) {
        // SAFETY: kill(2) on our own child, by its pid.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            self.stop();
        }
    }
}

async fn until_healthy(http: &reqwest::Client, port: u16) -> anyhow::Result<()> {
    for _ in 0..300 {
        if let Ok(reply) = http
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
            && reply.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("the server did not become ready")
}

/// Submits `n` held requests with a few concurrent clients; returns their ids in order.
async fn submit(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    n: usize,
) -> anyhow::Result<Vec<String>> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..SUBMITTERS {
        let (http, base, token, next) = (
            http.clone(),
            base.to_string(),
            token.to_string(),
            next.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= n {
                    return Ok::<_, anyhow::Error>(ids);
                }
                let reply: Value = http
                    .post(format!("{base}/exec"))
                    .bearer_auth(&token)
                    .json(&json!({ "connection": "prod-db", "command": format!("UPDATE t SET x = {i}") }))
                    .send()
                    .await?
                    .error_for_status()?
                    .json()
                    .await?;
                ids.push((i, reply["id"].as_str().unwrap_or_default().to_string()));
            }
        }));
    }
    let mut ids = Vec::with_capacity(n);
    for worker in workers {
        ids.extend(worker.await??);
    }
    ids.sort();
    Ok(ids.into_iter().map(|(_, id)| id).collect())
}

/// Waits until at least `n` connections to `port` are established; returns how many. Read from
/// /proc/net/tcp, since the server's own /proc entries are root's (it makes itself non-dumpable).
async fn until_connections(port: u16, n: usize) -> anyhow::Result<usize> {
    let local = format!(":{port:04X}");
    for _ in 0..1200 {
        let table = std::fs::read_to_string("/proc/net/tcp")?;
        let established = table
            .lines()
            .skip(1)
            .filter(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                // local_address, rem_address, state (01: established), on the server's side.
                fields.len() > 3 && fields[1].ends_with(&local) && fields[3] == "01"
            })
            .count();
        if established >= n {
            return Ok(established);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("the waiters did not all connect")
}

/// The process's user + system CPU time, in clock ticks.
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .map(|(_, rest)| rest)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let field =
        |n: usize| -> anyhow::Result<u64> { Ok(fields.get(n - 3).unwrap_or(&"0").parse()?) };
    Ok(field(14)? + field(15)?)
}

/// The process's resident set size, in KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or_else(|| anyhow::anyhow!("no VmRSS"))?;
    Ok(line.split_whitespace().nth(1).unwrap_or("0").parse()?)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
