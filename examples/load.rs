//! Load generator: measures hoopbot's decision throughput and the approval → agent latency against
//! a real server on loopback.
//!
//!   cargo run --release --example load -- sqlite
//!   HOOP_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test cargo run --release --example load -- postgres
//!
//! Phase 1 submits REQUESTS held requests that need one approval group, then approves them all over
//! HTTP with CONCURRENCY clients: decisions per second and per-call latency (authenticate, read,
//! decide, compare-and-set with audit and outbox, reply). Phase 2 approves requests one at a time while an
//! agent long-polls for jobs, and times from sending the final approval to the agent holding the job.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hoopbot::app::App;
use hoopbot::client::Client;
use hoopbot::config::Config;
use hoopbot::domain::Clock;
use hoopbot::store::TokenSubject;
use hoopbot::token::Operator;

const REQUESTS: usize = 4000;
const CONCURRENCY: usize = 32;
const HANDOFFS: usize = 200;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    hoopbot::install_crypto_provider();
    let backend = std::env::args().nth(1).unwrap_or_else(|| "sqlite".into());
    let dir = tempfile::tempdir()?;
    let (database_url, cleanup) = match backend.as_str() {
        "sqlite" => (
            format!("sqlite://{}", dir.path().join("load.db").display()),
            None,
        ),
        "postgres" => {
            let admin = std::env::var("HOOP_TEST_POSTGRES_URL")
                .map_err(|_| anyhow::anyhow!("set HOOP_TEST_POSTGRES_URL for the postgres run"))?;
            let name = format!("hoop_load_{:08x}", rand::random::<u32>());
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(&admin).await?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("create database {name}")))
                .execute(&mut conn)
                .await?;
            let base = admin
                .rsplit_once('/')
                .map(|(b, _)| b.to_string())
                .unwrap_or(admin.clone());
            (format!("{base}/{name}"), Some((admin, name)))
        }
        other => anyhow::bail!("unknown backend {other}; use sqlite or postgres"),
    };
    let config = Config::parse(
        &format!(
            r#"[server]
listen = "127.0.0.1:0"
database_url = "{database_url}"
audit_key = "load-generator-audit-key-0123456789abcdef"
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
name = "one-group"
type = "postgres"
agent = "bench"
[connections.access_requests]
approval_groups = ["dba-team"]
# Phase 2 on a connection of its own, so phase 1's approved jobs are not in its way.
[[connections]]
name = "handoff"
type = "postgres"
agent = "bench"
[connections.access_requests]
approval_groups = ["dba-team"]
"#
        ),
        "load config",
    )?;
    let app = App::build(config, Clock::system()).await?;
    let hoop = app.hoop.clone();
    let base = format!("http://{}", app.local_addr());
    tokio::spawn(app.run(std::future::pending()));
    let token = |subject| {
        let hoop = hoop.clone();
        async move { hoop.issue_token(&subject, None, &Operator::system()).await }
    };
    let alice = Client::new(
        &base,
        &token(TokenSubject::User("alice@x.com".parse()?)).await?,
    );
    let bob = Client::new(
        &base,
        &token(TokenSubject::User("bob@x.com".parse()?)).await?,
    );
    let agent = Client::new(&base, &token(TokenSubject::Agent("bench".into())).await?);

    // Phase 1: decision throughput.
    let mut ids = Vec::with_capacity(REQUESTS);
    for i in 0..REQUESTS {
        ids.push(
            alice
                .submit("one-group", &format!("UPDATE t SET x = {i}"), None)
                .await?
                .id,
        );
    }
    let queue = Arc::new(std::sync::Mutex::new(ids));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..CONCURRENCY {
        let (queue, bob) = (queue.clone(), bob.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let Some(id) = queue.lock().unwrap().pop() else {
                    break;
                };
                let t = Instant::now();
                bob.approve(&id, None).await.expect("approved");
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await?);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    println!(
        "{backend}: {REQUESTS} approvals, {CONCURRENCY} clients: {:.0}/s, p50 {:.2} ms, p99 {:.2} ms",
        REQUESTS as f64 / elapsed.as_secs_f64(),
        ms(latencies[latencies.len() / 2]),
        ms(latencies[latencies.len() * 99 / 100]),
    );

    // Phase 2: final approval → the agent holds the job.
    let mut handoffs = Vec::new();
    for i in 0..HANDOFFS {
        let id = alice
            .submit("handoff", &format!("SELECT {i}"), None)
            .await?
            .id;
        let waiting = {
            let agent = agent.clone();
            let handoff = "handoff".parse()?;
            tokio::spawn(async move {
                let job = agent.claim(&[handoff], Duration::from_secs(10)).await;
                (Instant::now(), job)
            })
        };
        tokio::time::sleep(Duration::from_millis(5)).await; // let the claim park
        let approved_at = Instant::now();
        bob.approve(&id, None).await?;
        let (claimed_at, job) = waiting.await?;
        assert_eq!(job?.job.map(|j| j.id), Some(id));
        handoffs.push(claimed_at.saturating_duration_since(approved_at));
    }
    handoffs.sort();
    println!(
        "{backend}: final approval sent → agent has the job: p50 {:.2} ms, p99 {:.2} ms ({HANDOFFS} jobs)",
        ms(handoffs[HANDOFFS / 2]),
        ms(handoffs[HANDOFFS * 99 / 100]),
    );

    if let Some((admin, name)) = cleanup {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&admin).await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "drop database {name} with (force)"
        )))
        .execute(&mut conn)
        .await?;
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
