//! What the examples that drive a real `hoop serve` process share: the server on a scratch
//! database with a token for a requester and an approver, and an HTTP/1 client cheap enough that
//! one core of load generator can keep a server busy.
//!
//! A directory of its own without `main.rs`, so cargo does not take it for an example.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;

const SUBMITTERS: usize = 32;
const AUDIT_KEY: &str = "benchmark-audit-key-0123456789abcdef";

/// `hoop serve` on a fresh database, with tokens for alice (engineering, who submits) and bob
/// (dba-team, who approves `prod-db`).
pub struct Hoop {
    pub port: u16,
    pub alice: String,
    pub bob: String,
    server: Server,
    scratch: Scratch,
    _dir: tempfile::TempDir,
}

impl Hoop {
    /// Starts the server on `backend` (sqlite or postgres; `name` names the scratch database), on
    /// `core` alone if given, with `extra` appended to its config (e.g. `[[webhooks]]`), and waits
    /// until it is ready.
    #[allow(dead_code, reason = "the clicks benchmark adds serve flags")]
    pub async fn start(
        backend: &str,
        name: &str,
        core: Option<usize>,
        extra: &str,
    ) -> anyhow::Result<Hoop> {
        Hoop::start_with(backend, name, core, extra, &[]).await
    }

    /// [`Hoop::start`], with `flags` added to `hoop serve`.
    pub async fn start_with(
        backend: &str,
        name: &str,
        core: Option<usize>,
        extra: &str,
        flags: &[&str],
    ) -> anyhow::Result<Hoop> {
        let hoop = hoop_binary()?;
        let dir = tempfile::tempdir()?;
        let scratch = Scratch::new(backend, name, dir.path()).await?;
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
{extra}"#,
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
        let mut serve = Command::new(&hoop);
        serve
            .args(["serve", "--config"])
            .arg(&config)
            .args(flags)
            .env("HOOP_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(core) = core {
            // SAFETY: between fork and exec only sched_setaffinity(2) runs, which allocates
            // nothing and takes no lock.
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut serve, move || pin(0, core))
            };
        }
        let server = Server(serve.spawn()?);
        until_healthy(port).await?;
        Ok(Hoop {
            port,
            alice,
            bob,
            server,
            scratch,
            _dir: dir,
        })
    }

    pub fn pid(&self) -> u32 {
        self.server.0.id()
    }

    /// Brings the database's planner statistics up to date after a bulk load, as Postgres's
    /// autovacuum does on its own within a minute or so of one; until then it plans as if the
    /// tables were nearly empty (a filtered list took 1–2 s a page at 100,000 requests, 0.05 ms
    /// after). Nothing to do on SQLite, whose planner needs no statistics for these queries.
    #[allow(dead_code, reason = "only the pages benchmark loads enough to need it")]
    pub async fn settle(&self) -> anyhow::Result<()> {
        use sqlx::Connection;
        if self.scratch.postgres.is_some() {
            let mut conn = sqlx::PgConnection::connect(&self.scratch.url).await?;
            sqlx::raw_sql("analyze").execute(&mut conn).await?;
        }
        Ok(())
    }

    /// Stops the server and drops the scratch database.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.server.stop();
        self.scratch.drop_database().await
    }
}

/// Runs process `pid` (0: this one) on `core` alone.
pub fn pin(pid: libc::pid_t, core: usize) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is a plain bit set; the CPU_* helpers and sched_setaffinity(2) only read
    // and write the set given.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        if libc::sched_setaffinity(pid, size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Pins this process to the first core it may run on and returns the second, for the server
/// (`None`, leaving both unpinned, on a single core). Call it before the runtime exists, so every
/// thread the runtime starts inherits the core.
#[allow(dead_code, reason = "waiters runs unpinned and times its calls itself")]
pub fn pin_load_generator(backend: &str) -> anyhow::Result<Option<usize>> {
    match allowed_cores()?[..] {
        [load, server, ..] => {
            pin(0, load)?;
            println!("{backend}: load generator on core {load}, server on core {server}");
            Ok(Some(server))
        }
        _ => {
            println!("{backend}: one core only: server and load generator share it, unpinned");
            Ok(None)
        }
    }
}

/// The cores this process may run on.
fn allowed_cores() -> anyhow::Result<Vec<usize>> {
    // SAFETY: cpu_set_t is a plain bit set, which sched_getaffinity(2) fills and CPU_ISSET reads.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok((0..libc::CPU_SETSIZE as usize)
            .filter(|&core| libc::CPU_ISSET(core, &set))
            .collect())
    }
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
    async fn new(backend: &str, name: &str, dir: &Path) -> anyhow::Result<Scratch> {
        use sqlx::Connection;
        match backend {
            "sqlite" => Ok(Scratch {
                url: format!("sqlite://{}", dir.join(format!("{name}.db")).display()),
                postgres: None,
            }),
            "postgres" => {
                let admin = std::env::var("HOOP_TEST_POSTGRES_URL").map_err(|_| {
                    anyhow::anyhow!("set HOOP_TEST_POSTGRES_URL for the postgres run")
                })?;
                let name = format!("hoop_{name}_{:08x}", rand::random::<u32>());
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

    async fn drop_database(&self) -> anyhow::Result<()> {
        use sqlx::Connection;
        if let Some((admin, name)) = &self.postgres {
            let mut conn = sqlx::PgConnection::connect(admin).await?;
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

async fn until_healthy(port: u16) -> anyhow::Result<()> {
    for _ in 0..300 {
        if let Ok(mut conn) = Conn::open(port).await
            && let Ok((status, _)) = conn.send(Call::get("/readyz")).await
            && status.is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("the server did not become ready")
}

/// One HTTP call to the server.
pub struct Call {
    method: Method,
    path: String,
    token: Option<String>,
    body: Option<String>,
    /// For bodies that are not JSON, with the headers that go with them (a Slack signature).
    form: Option<Vec<(&'static str, String)>>,
    /// A web session's cookie (`hoop_session=…`).
    cookie: Option<String>,
}

impl Call {
    fn get(path: &str) -> Call {
        Call {
            method: Method::GET,
            path: path.to_string(),
            token: None,
            body: None,
            form: None,
            cookie: None,
        }
    }

    /// A page, as the browser holding `cookie` asks for it.
    #[allow(dead_code, reason = "only the pages benchmark signs in to the web app")]
    pub fn page(path: &str, cookie: &str) -> Call {
        Call {
            cookie: Some(cookie.to_string()),
            ..Call::get(path)
        }
    }

    /// A POST as the holder of `token`, with a JSON body or none.
    pub fn post(path: String, token: &str, body: Option<String>) -> Call {
        Call {
            method: Method::POST,
            path,
            token: Some(token.to_string()),
            body,
            form: None,
            cookie: None,
        }
    }

    /// A GET as the holder of `token`.
    #[allow(dead_code, reason = "only the clicks benchmark reads requests back")]
    pub fn get_as(path: &str, token: &str) -> Call {
        Call {
            token: Some(token.to_string()),
            ..Call::get(path)
        }
    }

    /// A form POST with no token, as Slack sends one, with `headers` (its signature).
    #[allow(dead_code, reason = "only the clicks benchmark plays Slack")]
    pub fn form(path: &str, body: String, headers: Vec<(&'static str, String)>) -> Call {
        Call {
            method: Method::POST,
            path: path.to_string(),
            token: None,
            body: Some(body),
            form: Some(headers),
            cookie: None,
        }
    }
}

/// One keep-alive HTTP/1 connection to the server.
pub struct Conn(SendRequest<Full<Bytes>>);

impl Conn {
    pub async fn open(port: u16) -> anyhow::Result<Conn> {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream.set_nodelay(true)?;
        let (send, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        // The connection's reads and writes; it ends when `send` is dropped.
        tokio::spawn(connection);
        Ok(Conn(send))
    }

    /// Sends `call`; returns the reply's status and body.
    pub async fn send(&mut self, call: Call) -> anyhow::Result<(StatusCode, Bytes)> {
        let mut request = Request::builder()
            .method(call.method)
            .uri(call.path)
            .header(HOST, "127.0.0.1");
        if let Some(token) = call.token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        if let Some(cookie) = call.cookie {
            request = request.header(hyper::header::COOKIE, cookie);
        }
        match call.form {
            Some(headers) => {
                request = request.header(CONTENT_TYPE, "application/x-www-form-urlencoded");
                for (name, value) in headers {
                    request = request.header(name, value);
                }
            }
            None if call.body.is_some() => {
                request = request.header(CONTENT_TYPE, "application/json");
            }
            None => {}
        }
        let request = request.body(Full::new(Bytes::from(call.body.unwrap_or_default())))?;
        self.0.ready().await?;
        let reply = self.0.send_request(request).await?;
        let status = reply.status();
        Ok((status, reply.into_body().collect().await?.to_bytes()))
    }
}

/// What a run of calls measured.
pub struct Run {
    /// From the first call to the last reply.
    pub elapsed: Duration,
    /// Each call's time to its reply, shortest first.
    #[allow(
        dead_code,
        reason = "each example compiles this module; waiters times its submissions as a whole"
    )]
    pub latencies: Vec<Duration>,
}

/// Makes calls 0..n over `clients` keep-alive connections and times each; `parse` reads what is
/// needed from each 2xx reply, and the parsed replies come back in call order. Any reply that is
/// not 2xx fails the run, once all calls are made, with how many there were.
///
/// Without a `rate` the loop is closed: each connection sends its next call as soon as the last
/// is answered, which measures the most the server can take. With one it is open: call i is due
/// at start + i/rate and its latency counts from then rather than from when it could be sent, so
/// a server that falls behind is charged for the queue it causes instead of slowing the load
/// down (no coordinated omission).
pub async fn drive<T: Send + 'static>(
    port: u16,
    clients: usize,
    n: usize,
    rate: Option<f64>,
    call: impl Fn(usize) -> Call + Send + Sync + 'static,
    parse: impl Fn(&[u8]) -> anyhow::Result<T> + Send + Sync + 'static,
) -> anyhow::Result<(Vec<T>, Run)> {
    let mut conns = Vec::with_capacity(clients);
    for _ in 0..clients {
        conns.push(Conn::open(port).await?);
    }
    let (call, parse) = (Arc::new(call), Arc::new(parse));
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::with_capacity(clients);
    for mut conn in conns {
        let (call, parse, next) = (call.clone(), parse.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut done = Vec::new();
            let mut failed = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, anyhow::Error>((done, failed));
                }
                let due = match rate {
                    Some(rate) => {
                        let due = started + Duration::from_secs_f64(i as f64 / rate);
                        until(due).await;
                        due
                    }
                    None => Instant::now(),
                };
                let (status, body) = conn.send(call(i)).await?;
                let latency = due.elapsed();
                if status.is_success() {
                    done.push((i, parse(&body)?, latency));
                } else {
                    failed.push((status, body));
                }
            }
        }));
    }
    let mut done = Vec::with_capacity(n);
    let mut failed = Vec::new();
    for worker in workers {
        let (d, f) = worker.await??;
        done.extend(d);
        failed.extend(f);
    }
    let elapsed = started.elapsed();
    if let Some((status, body)) = failed.first() {
        anyhow::bail!(
            "{} of {n} replies were not 2xx; the first: {status} {}",
            failed.len(),
            String::from_utf8_lossy(body)
        );
    }
    done.sort_unstable_by_key(|(i, ..)| *i);
    let mut latencies: Vec<Duration> = done.iter().map(|(.., latency)| *latency).collect();
    latencies.sort_unstable();
    let replies = done.into_iter().map(|(_, reply, _)| reply).collect();
    Ok((replies, Run { elapsed, latencies }))
}

/// Returns at `at`. Tokio's timer counts whole milliseconds, so it sleeps to within one and
/// yields from there: calls leave when due, not in a burst at the next millisecond tick.
pub async fn until(at: Instant) {
    if let Some(far) = at.checked_duration_since(Instant::now() + Duration::from_millis(1)) {
        tokio::time::sleep(far).await;
    }
    while Instant::now() < at {
        tokio::task::yield_now().await;
    }
}

/// Submits `n` held requests for `prod-db` as the holder of `token` with 32 connections, closed
/// loop; returns their ids in order.
pub async fn submit(port: u16, token: &str, n: usize) -> anyhow::Result<(Vec<String>, Run)> {
    let token = token.to_string();
    drive(
        port,
        SUBMITTERS,
        n,
        None,
        move |i| submission(&token, i),
        submitted_id,
    )
    .await
}

/// Submission number `i`: a held request for `prod-db`, as the holder of `token`.
pub fn submission(token: &str, i: usize) -> Call {
    let body = format!(r#"{{"connection":"prod-db","command":"UPDATE t SET x = {i}"}}"#);
    Call::post("/api/v1/exec".into(), token, Some(body))
}

/// The id of the request a submission's reply describes.
pub fn submitted_id(body: &[u8]) -> anyhow::Result<String> {
    #[derive(serde::Deserialize)]
    struct Submitted {
        id: String,
    }
    Ok(serde_json::from_slice::<Submitted>(body)?.id)
}

/// Bob's approval of each of `ids`, by index.
#[allow(dead_code, reason = "waiters runs unpinned and times its calls itself")]
pub fn approvals(ids: Vec<String>, bob: &str) -> impl Fn(usize) -> Call + Send + Sync + 'static {
    let bob = bob.to_string();
    move |i| {
        Call::post(
            format!("/api/v1/access-requests/{}/approve", ids[i]),
            &bob,
            None,
        )
    }
}

/// The process's user + system CPU time, in clock ticks.
pub fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
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

/// Clock ticks in seconds.
pub fn ticks_to_seconds(ticks: u64) -> f64 {
    // SAFETY: sysconf only reads a system constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks as f64 / per_second
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One line for a phase, e.g. `sqlite approve: 40000 approvals in 26.1 s: 1532/s · p50 …`.
#[allow(dead_code, reason = "waiters runs unpinned and times its calls itself")]
pub fn report(backend: &str, phase: &str, what: &str, run: &Run, cpu: Spent) {
    let calls = run.latencies.len();
    let per_call = |seconds: f64| seconds / calls as f64 * 1e6;
    let server = match cpu.server {
        Some(s) => format!("{s:.2} s ({:.0} µs a call)", per_call(s)),
        None => "not readable from /proc".into(),
    };
    println!(
        "{backend} {phase}: {calls} {what} in {:.1} s: {:.0}/s · p50 {:.2} ms · p99 {:.2} ms · max {:.2} ms · 0 non-2xx · CPU: server {server}, load generator {:.2} s ({:.0} µs a call)",
        run.elapsed.as_secs_f64(),
        calls as f64 / run.elapsed.as_secs_f64(),
        ms(run.latencies[calls / 2]),
        ms(run.latencies[calls * 99 / 100]),
        ms(run.latencies[calls - 1]),
        cpu.load,
        per_call(cpu.load),
    );
}

/// CPU time used so far by the server (if its /proc entry can be read) and by this process.
#[allow(dead_code, reason = "waiters runs unpinned and times its calls itself")]
pub struct Cpu {
    server_pid: u32,
    server: Option<u64>,
    load: u64,
}

/// CPU seconds spent since a `Cpu` reading.
pub struct Spent {
    pub server: Option<f64>,
    pub load: f64,
}

#[allow(dead_code, reason = "waiters runs unpinned and times its calls itself")]
impl Cpu {
    pub fn now(server_pid: u32) -> anyhow::Result<Cpu> {
        Ok(Cpu {
            server_pid,
            server: cpu_ticks(server_pid).ok(),
            load: cpu_ticks(std::process::id())?,
        })
    }

    pub fn since(self) -> anyhow::Result<Spent> {
        let now = Cpu::now(self.server_pid)?;
        Ok(Spent {
            server: self
                .server
                .zip(now.server)
                .map(|(then, now)| ticks_to_seconds(now - then)),
            load: ticks_to_seconds(now.load - self.load),
        })
    }
}

/// Signs the holder of `token` in as a browser does; returns the session's cookie.
#[allow(dead_code, reason = "only the web benchmarks sign in")]
pub async fn sign_in(port: u16, token: &str) -> anyhow::Result<String> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let reply = client
        .post(format!("http://127.0.0.1:{port}/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(serde_urlencoded::to_string([
            ("token", token),
            ("next", "/"),
        ])?)
        .send()
        .await?;
    anyhow::ensure!(
        reply.status() == reqwest::StatusCode::SEE_OTHER,
        "signing in answered {}",
        reply.status()
    );
    let cookie = reply
        .headers()
        .get("set-cookie")
        .and_then(|c| c.to_str().ok())
        .and_then(|c| c.split(';').next())
        .ok_or_else(|| anyhow::anyhow!("signing in set no cookie"))?;
    Ok(cookie.to_string())
}

/// Process `pid`'s resident set size (VmRSS), in KiB.
#[allow(
    dead_code,
    reason = "only the waiters and live pages benchmarks read memory"
)]
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or_else(|| anyhow::anyhow!("no VmRSS"))?;
    Ok(line.split_whitespace().nth(1).unwrap_or("0").parse()?)
}
