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

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use support::{Hoop, cpu_ticks, ms, rss_kib, submit, ticks_to_seconds};

const IDLE: Duration = Duration::from_secs(20);
const WAKES: usize = 200;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    hoopbot::install_crypto_provider();
    let backend = std::env::args().nth(1).unwrap_or_else(|| "sqlite".into());
    let waiters: usize = match std::env::args().nth(2) {
        Some(n) => n.parse()?,
        None => 10_000,
    };
    let hoop = Hoop::start(&backend, "waiters", None, "").await?;
    let (port, alice, bob, pid) = (hoop.port, &hoop.alice, &hoop.bob, hoop.pid());
    let base = format!("http://127.0.0.1:{port}/api/v1");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(waiters + 100)
        .build()?;

    // N held requests.
    let (ids, submitted) = submit(port, alice, waiters).await?;
    println!(
        "{backend}: submitted {waiters} requests in {:.1}s",
        submitted.elapsed.as_secs_f64()
    );

    // One long-polling waiter per request; each records when its reply came.
    let mut parked = Vec::with_capacity(waiters);
    for id in &ids {
        let request = http
            .get(format!("{base}/access-requests/{id}/wait"))
            .query(&[("version", "1"), ("timeout_s", "300")])
            .bearer_auth(alice);
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
    let cpu_seconds = ticks_to_seconds(ticks);
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
            .bearer_auth(bob)
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

    hoop.stop().await?;
    for waiter in parked {
        waiter.abort();
    }
    Ok(())
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
