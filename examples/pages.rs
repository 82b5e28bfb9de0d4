//! Web page benchmark: how fast a real `hoop serve` on one core renders the web app's pages for a
//! signed-in browser, with many requests in its database.
//!
//!   cargo build --release && ./target/release/examples/pages sqlite 100000
//!   HOOP_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test \
//!     ./target/release/examples/pages postgres 100000
//!
//! Server and load generator are pinned to a core each, as in `decisions`. Alice submits N held
//! requests (default 100,000); on Postgres the tables are then analyzed, as autovacuum would soon
//! after such a load; Bob signs in once through `/login` with his token, and his
//! session's cookie is then sent with every page:
//!
//! - request page: `GET /access-requests/{id}` for ids across the whole table, closed loop over 32
//!   connections — the exact command, groups, the one rule's buttons, the audit timeline and where
//!   its notifications went, rendered server-side.
//! - list, filtered: `GET /access-requests?view=all&status=pending&connection=prod-db`, the newest
//!   50 of the N.
//! - waiting for me: `GET /access-requests` as Bob, the pending requests he may approve (the list
//!   looks through the newest 500 pending ones).
//!
//! Each phase reports pages a second, p50, p99 and max latency, and both sides' CPU time.

mod support;

use support::{Call, Cpu, Hoop, drive, pin_load_generator, report, sign_in, submit};

const CLIENTS: usize = 32;

fn main() -> anyhow::Result<()> {
    let backend = std::env::args().nth(1).unwrap_or_else(|| "sqlite".into());
    let n: usize = match std::env::args().nth(2) {
        Some(n) => n.parse()?,
        None => 100_000,
    };
    anyhow::ensure!(n >= 1, "N must be at least 1");
    let server_core = pin_load_generator(&backend)?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(bench(&backend, n, server_core))
}

async fn bench(backend: &str, n: usize, core: Option<usize>) -> anyhow::Result<()> {
    hoopbot::install_crypto_provider();
    let hoop = Hoop::start(backend, "pages", core, "").await?;
    let port = hoop.port;
    let cpu = Cpu::now(hoop.pid())?;
    let (ids, run) = submit(port, &hoop.alice, n).await?;
    report(backend, "setup", "held requests", &run, cpu.since()?);
    hoop.settle().await?;
    let cookie = sign_in(port, &hoop.bob).await?;

    let pages = 20_000;
    let cpu = Cpu::now(hoop.pid())?;
    let page = {
        let cookie = cookie.clone();
        // Every 7th id, round the table: pages of old and new requests alike.
        move |i: usize| {
            Call::page(
                &format!("/access-requests/{}", ids[i * 7 % ids.len()]),
                &cookie,
            )
        }
    };
    let (_, run) = drive(port, CLIENTS, pages, None, page, |_| Ok(())).await?;
    report(backend, "request", "request pages", &run, cpu.since()?);

    let lists = 2_000;
    let cpu = Cpu::now(hoop.pid())?;
    let filtered = {
        let cookie = cookie.clone();
        move |_| {
            Call::page(
                "/access-requests?view=all&status=pending&connection=prod-db",
                &cookie,
            )
        }
    };
    let (_, run) = drive(port, CLIENTS, lists, None, filtered, |_| Ok(())).await?;
    report(backend, "list", "filtered list pages", &run, cpu.since()?);

    let cpu = Cpu::now(hoop.pid())?;
    let waiting = move |_| Call::page("/access-requests", &cookie);
    let (_, run) = drive(port, CLIENTS, lists, None, waiting, |_| Ok(())).await?;
    report(
        backend,
        "mine",
        "'waiting for me' pages",
        &run,
        cpu.since()?,
    );

    hoop.stop().await
}
