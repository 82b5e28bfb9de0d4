//! Decision benchmark: how many held requests and approvals a real `hoop serve` process on one core
//! takes over HTTP, driven from the other core.
//!
//!   cargo build --release && cargo run --release --example decisions -- sqlite 60000
//!   HOOP_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo run --release --example decisions -- postgres 60000
//!
//! It starts `target/release/hoop serve` (built beside this example) on a fresh database, pinned to
//! one core, and pins itself to another, so the figures are those of one server core and not of
//! the server and the load sharing cores (Postgres itself is not pinned). Its client is plain
//! hyper over keep-alive connections, a few microseconds of CPU a call, so one core of it can
//! drive far more than the server takes today. Alice (engineering) submits; bob (dba-team), whose
//! one approval `prod-db` needs, approves.
//!
//! - submit: alice submits N held requests (default 60,000) over 32 connections, closed loop (each
//!   connection sends its next request as soon as the last is answered): the most requests a
//!   second the server can hold — token check, policy, insert with its audit events and outbox
//!   entry, read back — and each call's latency under that load.
//! - approve: bob approves two thirds of them, each once, the same way: the most decisions a
//!   second — token check, read, compare-and-set with audit event and outbox entry, reply.
//! - paced: bob approves the last third open loop at a fixed rate (HOOP_BENCH_RATE, default 5,000
//!   a second) over 32 connections: latency at a given load rather than at saturation. Each
//!   approval is due at start + i/rate and timed from then, so if the server falls behind, the
//!   wait for a free connection counts too.
//!
//! Each phase reports calls a second, p50, p99 and max latency, and the CPU time the server and
//! this load generator spent (from /proc; the server's is left out where its entry cannot be
//! read, e.g. with /proc mounted hidepid=2). The load generator's share of its core says how much
//! more it could drive; in the paced phase it includes waiting for each approval's due time. Any
//! reply that is not 2xx stops the run, with how many there were.

mod support;

use support::{Cpu, Hoop, approvals, drive, pin_load_generator, report, submit};

const CLIENTS: usize = 32;
const RATE: f64 = 5000.0;

fn main() -> anyhow::Result<()> {
    let backend = std::env::args().nth(1).unwrap_or_else(|| "sqlite".into());
    let n: usize = match std::env::args().nth(2) {
        Some(n) => n.parse()?,
        None => 60_000,
    };
    anyhow::ensure!(n >= 3, "N must be at least 3: one request for each phase");
    let rate: f64 = match std::env::var("HOOP_BENCH_RATE") {
        Ok(rate) => rate.parse()?,
        Err(_) => RATE,
    };
    anyhow::ensure!(rate > 0.0, "HOOP_BENCH_RATE must be above 0");

    // Pinned before the runtime exists, so every thread it starts inherits the core.
    let server_core = pin_load_generator(&backend)?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(bench(&backend, n, rate, server_core))
}

async fn bench(backend: &str, n: usize, rate: f64, core: Option<usize>) -> anyhow::Result<()> {
    hoopbot::install_crypto_provider();
    let hoop = Hoop::start(backend, "decisions", core, "").await?;
    let port = hoop.port;

    let cpu = Cpu::now(hoop.pid())?;
    let (mut ids, run) = submit(port, &hoop.alice, n).await?;
    report(backend, "submit", "held requests", &run, cpu.since()?);

    let paced = ids.split_off(n * 2 / 3);
    let cpu = Cpu::now(hoop.pid())?;
    let approve = approvals(ids, &hoop.bob);
    let (_, run) = drive(port, CLIENTS, n * 2 / 3, None, approve, |_| Ok(())).await?;
    report(backend, "approve", "approvals", &run, cpu.since()?);

    let cpu = Cpu::now(hoop.pid())?;
    let (count, approve) = (paced.len(), approvals(paced, &hoop.bob));
    let (_, run) = drive(port, CLIENTS, count, Some(rate), approve, |_| Ok(())).await?;
    let offered = format!("approvals offered at {rate:.0}/s");
    report(backend, "paced", &offered, &run, cpu.since()?);

    hoop.stop().await
}
