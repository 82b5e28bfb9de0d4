//! Delivery benchmark: how soon a decision reaches a webhook receiver, how many deliveries a second
//! a real `hoop serve` process makes, and what configured webhooks cost the decision rate.
//!
//!   cargo build --release && cargo run --release --example deliveries -- sqlite
//!   HOOP_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo run --release --example deliveries -- postgres
//!
//! Like `decisions`, it starts `target/release/hoop serve` on a fresh database pinned to one core
//! and drives it from another (Postgres itself is not pinned). The webhook receivers run in this
//! process, beside the load generator: plain hyper servers on 127.0.0.1 that answer 200 at once and
//! note when each event's body has arrived. The webhooks subscribe to the decision events
//! (`access_request.approved` and `…rejected`); with HOOP_BENCH_EVENTS=all they subscribe to
//! `access_request.*`, so each submission is delivered too (`created`) and each approval twice
//! (`group_approved`, then `approved`).
//!
//! - latency: one webhook. Alice submits and bob approves one request at a time, 200 a second
//!   (2,000 requests after 50 not counted, while connections warm up). Each is timed from just
//!   before the approval is sent (so the interval holds the commit, which precedes the reply) to
//!   the receiver holding the `approved` event.
//! - in flight: the same server. Alice submits 1,000 held requests, then bob approves them all over
//!   32 connections as fast as the server answers; deliveries a second are counted from the first
//!   approval sent to the last delivery received, and the lag is from the last approval's reply to
//!   the last delivery.
//! - decision rate: `decisions`' approve phase (32 connections, closed loop) over N requests
//!   (default 15,000), on a server with no webhook and then on one with two (two receivers), in
//!   one run. After the approvals it waits for the deliveries still owed, and says how far behind
//!   they were and what the server's CPU spent on each.
//!
//! Any reply that is not 2xx stops the run, and so does a delivery that never arrives.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use support::{
    Call, Conn, Cpu, Hoop, approvals, drive, ms, pin_load_generator, report, submission, submit,
    submitted_id, until,
};

/// A Standard Webhooks secret (the reference libraries' test secret).
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// The latency phase's pace: slow enough that nothing queues.
const PACE: f64 = 200.0;
const PACED: usize = 2_000;
/// Paced requests not counted: the server's connections to the receiver open during these.
const WARM_UP: usize = 50;
const IN_FLIGHT: usize = 1_000;
const CLIENTS: usize = 32;
/// The longest wait for deliveries still owed: past it the run fails rather than hang.
const DRAIN: Duration = Duration::from_secs(300);

fn main() -> anyhow::Result<()> {
    let backend = std::env::args().nth(1).unwrap_or_else(|| "sqlite".into());
    let n: usize = match std::env::args().nth(2) {
        Some(n) => n.parse()?,
        None => 15_000,
    };
    anyhow::ensure!(n > 0, "N must be at least 1");
    let events = match std::env::var("HOOP_BENCH_EVENTS").as_deref() {
        Ok("all") => Events::All,
        Ok("decisions") | Err(_) => Events::Decisions,
        Ok(other) => anyhow::bail!("HOOP_BENCH_EVENTS={other}: use decisions or all"),
    };
    let server_core = pin_load_generator(&backend)?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(bench(&backend, n, events, server_core))
}

async fn bench(backend: &str, n: usize, events: Events, core: Option<usize>) -> anyhow::Result<()> {
    hoopbot::install_crypto_provider();
    let started = Instant::now();
    println!("{backend}: webhooks subscribe to {}", events.toml());

    let receiver = Receiver::start().await?;
    let hoop = Hoop::start(
        backend,
        "deliveries",
        core,
        &webhook("receiver", receiver.port, events),
    )
    .await?;
    latency(backend, &hoop, &receiver, events).await?;
    in_flight(backend, &hoop, &receiver, events).await?;
    hoop.stop().await?;

    for hooks in [0, 2] {
        decision_rate(backend, n, hooks, events, core).await?;
    }
    println!(
        "{backend}: whole run {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Requests submitted and approved one at a time: approval sent → `approved` at the receiver.
async fn latency(
    backend: &str,
    hoop: &Hoop,
    receiver: &Receiver,
    events: Events,
) -> anyhow::Result<()> {
    let mut conn = Conn::open(hoop.port).await?;
    let total = WARM_UP + PACED;
    // Per request: its id, when its approval was sent, and when the reply came.
    let mut sent = Vec::with_capacity(total);
    let started = Instant::now();
    for i in 0..total {
        until(started + Duration::from_secs_f64(i as f64 / PACE)).await;
        let (status, body) = conn.send(submission(&hoop.alice, i)).await?;
        anyhow::ensure!(status.is_success(), "submit: {status}");
        let id = submitted_id(&body)?;
        let approve = Call::post(
            format!("/api/v1/access-requests/{id}/approve"),
            &hoop.bob,
            None,
        );
        let before = Instant::now();
        let (status, _) = conn.send(approve).await?;
        let replied = Instant::now();
        anyhow::ensure!(status.is_success(), "approve: {status}");
        sent.push((id, before, replied));
    }
    let paced_for = started.elapsed();
    let arrivals = receiver
        .take_when(
            total * events.per_approval(),
            total * events.per_submission(),
        )
        .await?;
    let approved: HashMap<&str, Instant> = arrivals
        .iter()
        .filter(|a| a.event == "access_request.approved")
        .map(|a| (a.request_id.as_str(), a.at))
        .collect();
    let mut to_receiver = Vec::with_capacity(PACED);
    let mut to_reply = Vec::with_capacity(PACED);
    let mut reply_to_receiver = Vec::with_capacity(PACED);
    for (id, before, replied) in &sent[WARM_UP..] {
        let at = *approved
            .get(id.as_str())
            .ok_or_else(|| anyhow::anyhow!("no approved event for {id}"))?;
        to_receiver.push(at.saturating_duration_since(*before));
        to_reply.push(replied.duration_since(*before));
        // Signed: the webhook can arrive before the reply does.
        reply_to_receiver.push(
            ms(at.saturating_duration_since(*replied)) - ms(replied.saturating_duration_since(at)),
        );
    }
    to_receiver.sort_unstable();
    to_reply.sort_unstable();
    reply_to_receiver.sort_unstable_by(f64::total_cmp);
    println!(
        "{backend} latency: {PACED} requests at {PACE:.0}/s ({:.1} s) · approval sent → receiver has `approved`: p50 {:.2} ms · p99 {:.2} ms · max {:.2} ms · approval sent → its reply: p50 {:.2} ms · p99 {:.2} ms · reply → receiver: p50 {:.2} ms · p99 {:.2} ms",
        paced_for.as_secs_f64(),
        ms(to_receiver[PACED / 2]),
        ms(to_receiver[PACED * 99 / 100]),
        ms(to_receiver[PACED - 1]),
        ms(to_reply[PACED / 2]),
        ms(to_reply[PACED * 99 / 100]),
        reply_to_receiver[PACED / 2],
        reply_to_receiver[PACED * 99 / 100],
    );
    Ok(())
}

/// 1,000 held requests approved as fast as the server answers: how fast their deliveries follow.
async fn in_flight(
    backend: &str,
    hoop: &Hoop,
    receiver: &Receiver,
    events: Events,
) -> anyhow::Result<()> {
    let (ids, _) = submit(hoop.port, &hoop.alice, IN_FLIGHT).await?;
    // With every event subscribed, the submissions' own deliveries land first.
    receiver
        .take_when(0, IN_FLIGHT * events.per_submission())
        .await?;
    let first = Instant::now();
    let approve = approvals(ids, &hoop.bob);
    let (_, run) = drive(hoop.port, CLIENTS, IN_FLIGHT, None, approve, |_| Ok(())).await?;
    let decided = Instant::now();
    let arrivals = receiver
        .take_when(IN_FLIGHT * events.per_approval(), 0)
        .await?;
    let delivered = arrivals.len();
    let last = arrivals.iter().map(|a| a.at).max().unwrap_or(decided);
    let mut times: Vec<Duration> = arrivals.iter().map(|a| a.at - first).collect();
    times.sort_unstable();
    let span = last - first;
    println!(
        "{backend} in flight: {IN_FLIGHT} approvals in {:.2} s ({:.0}/s) · {delivered} deliveries, the last {:.2} s after the first approval was sent: {:.0} deliveries/s · half arrived by {:.2} s · the last {:.2} s after the last approval's reply",
        run.elapsed.as_secs_f64(),
        IN_FLIGHT as f64 / run.elapsed.as_secs_f64(),
        span.as_secs_f64(),
        delivered as f64 / span.as_secs_f64(),
        times[delivered / 2].as_secs_f64(),
        last.saturating_duration_since(decided).as_secs_f64(),
    );
    Ok(())
}

/// `decisions`' closed-loop approve phase over `n` requests, with `hooks` webhooks configured.
async fn decision_rate(
    backend: &str,
    n: usize,
    hooks: usize,
    events: Events,
    core: Option<usize>,
) -> anyhow::Result<()> {
    let mut receivers = Vec::with_capacity(hooks);
    let mut config = String::new();
    for i in 0..hooks {
        let receiver = Receiver::start().await?;
        config += &webhook(&format!("receiver-{i}"), receiver.port, events);
        receivers.push(receiver);
    }
    let hoop = Hoop::start(backend, "deliveries", core, &config).await?;
    let (ids, _) = submit(hoop.port, &hoop.alice, n).await?;
    for receiver in &receivers {
        receiver.take_when(0, n * events.per_submission()).await?;
    }
    let cpu = Cpu::now(hoop.pid())?;
    let approve = approvals(ids, &hoop.bob);
    let (_, run) = drive(hoop.port, CLIENTS, n, None, approve, |_| Ok(())).await?;
    let decided = Instant::now();
    let phase = format!("approve, {hooks} webhooks");
    report(backend, &phase, "approvals", &run, cpu.since()?);
    if hooks == 0 {
        return hoop.stop().await;
    }
    // What is still owed is delivered with nothing else going on: the server's CPU time over it
    // is what deliveries cost.
    let cpu = Cpu::now(hoop.pid())?;
    let owed = n * events.per_approval() * hooks;
    let by_then: usize = receivers.iter().map(Receiver::len).sum();
    let mut last = decided;
    for receiver in &receivers {
        let arrivals = receiver.take_when(n * events.per_approval(), 0).await?;
        last = arrivals.iter().map(|a| a.at).fold(last, Instant::max);
    }
    let after = owed - by_then;
    let server = match cpu.since()?.server {
        Some(s) => format!("{s:.2} s ({:.0} µs a delivery)", s / after as f64 * 1e6),
        None => "not readable from /proc".into(),
    };
    let drained = last.saturating_duration_since(decided).as_secs_f64();
    println!(
        "{backend} approve, {hooks} webhooks: {by_then} of {owed} deliveries had arrived when the approvals ended; the last arrived {drained:.2} s after the last approval ({:.0} deliveries/s from the first approval; the {after} after the approvals at {:.0}/s, server CPU {server})",
        owed as f64 / (last - (decided - run.elapsed)).as_secs_f64(),
        after as f64 / drained,
    );
    hoop.stop().await
}

/// What the webhooks subscribe to.
#[derive(Clone, Copy)]
enum Events {
    /// `access_request.approved` and `access_request.rejected`.
    Decisions,
    /// `access_request.*`.
    All,
}

impl Events {
    fn toml(self) -> &'static str {
        match self {
            Events::Decisions => r#"["access_request.approved", "access_request.rejected"]"#,
            Events::All => r#"["access_request.*"]"#,
        }
    }

    /// Deliveries to each webhook per approval that completes a request (one approval group).
    fn per_approval(self) -> usize {
        match self {
            Events::Decisions => 1,
            Events::All => 2,
        }
    }

    /// Deliveries to each webhook per submission (`created`).
    fn per_submission(self) -> usize {
        match self {
            Events::Decisions => 0,
            Events::All => 1,
        }
    }
}

/// A `[[webhooks]]` entry for a receiver on 127.0.0.1 (a private address, so allowed explicitly).
fn webhook(name: &str, port: u16, events: Events) -> String {
    format!(
        "\n[[webhooks]]\nname = \"{name}\"\nurl = \"http://127.0.0.1:{port}/hook\"\n\
         secret = \"{SECRET}\"\nevents = {}\nallow_private = true\n",
        events.toml()
    )
}

/// One event as it reached a receiver.
struct Arrival {
    event: String,
    request_id: String,
    /// When its whole body had been read.
    at: Instant,
}

/// A loopback webhook receiver: answers 200 at once and notes each event's arrival. It checks no
/// signature (the API tests do), so that what it costs is only reading the request.
struct Receiver {
    port: u16,
    log: Arc<Mutex<Log>>,
    accepting: tokio::task::JoinHandle<()>,
}

/// What a receiver has been sent since it was last emptied.
#[derive(Default)]
struct Log {
    arrivals: Vec<Arrival>,
    /// How many of them are `access_request.created`.
    created: usize,
}

impl Receiver {
    async fn start() -> anyhow::Result<Receiver> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let log: Arc<Mutex<Log>> = Arc::default();
        let kept = log.clone();
        let accepting = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                let log = kept.clone();
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let log = log.clone();
                    async move {
                        let body = request.into_body().collect().await?.to_bytes();
                        let at = Instant::now();
                        let status = match serde_json::from_slice::<Event>(&body) {
                            Ok(event) => {
                                let mut log = log.lock().expect("receiver log");
                                log.created += usize::from(event.kind == "access_request.created");
                                log.arrivals.push(Arrival {
                                    event: event.kind,
                                    request_id: event.data.id,
                                    at,
                                });
                                StatusCode::OK
                            }
                            Err(_) => StatusCode::BAD_REQUEST,
                        };
                        let mut reply = Response::new(Full::new(Bytes::new()));
                        *reply.status_mut() = status;
                        Ok::<_, hyper::Error>(reply)
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        Ok(Receiver {
            port,
            log,
            accepting,
        })
    }

    fn len(&self) -> usize {
        self.log.lock().expect("receiver log").arrivals.len()
    }

    /// Waits (up to [`DRAIN`]) until `changes` events other than `created` and `created` ones
    /// have arrived, then hands over everything received so far.
    async fn take_when(&self, changes: usize, created: usize) -> anyhow::Result<Vec<Arrival>> {
        let deadline = Instant::now() + DRAIN;
        loop {
            {
                let mut log = self.log.lock().expect("receiver log");
                let others = log.arrivals.len() - log.created;
                if others >= changes && log.created >= created {
                    return Ok(std::mem::take(&mut *log).arrivals);
                }
                if Instant::now() > deadline {
                    anyhow::bail!(
                        "after {DRAIN:?}, {others} of {changes} deliveries of decisions and {} of {created} of submissions",
                        log.created
                    );
                }
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

/// The part of a webhook body the receiver reads.
#[derive(serde::Deserialize)]
struct Event {
    #[serde(rename = "type")]
    kind: String,
    data: EventData,
}

#[derive(serde::Deserialize)]
struct EventData {
    id: String,
}
