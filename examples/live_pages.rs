//! Live pages benchmark: what P open request pages cost a real `hoop serve` on one core, and how
//! soon each page hears of a decision made through the API.
//!
//!   cargo build --release --bin hoop --example live_pages
//!   ./target/release/examples/live_pages sqlite 2000 500
//!   HOOP_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test \
//!     ./target/release/examples/live_pages postgres 2000 500
//!
//! Server and load generator are pinned to a core each, as in `pages`. Alice submits R held
//! requests (default 500); Bob signs in through `/login` SESSIONS times, as that many browsers
//! would. Then P pages (default 2,000) open what a request page's script listens to,
//! `GET /access-requests/{id}/events?version=1` with a session's cookie: page i on request i mod R
//! with session i mod SESSIONS, so each request has P/R pages open on it. Each page is a task
//! holding its own HTTP/1 connection and reading the stream until it hears `changed`.
//!
//! The server's resident memory (VmRSS, from /proc) is read before the pages open and each second
//! of IDLE seconds once every page has its stream, with its CPU time over that idle time. Then Bob
//! approves each request through the API, one at a time, and each of its pages' `changed` event is
//! timed from the moment the approval was sent and from the moment its reply came (the event may
//! come first: the server wakes the pages on commit, before it writes the API's reply).

mod support;

use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{ACCEPT, CONTENT_TYPE, COOKIE, HOST};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::task::JoinHandle;

use support::{
    Conn, Hoop, approvals, cpu_ticks, ms, pin_load_generator, rss_kib, sign_in, submit,
    ticks_to_seconds,
};

/// Browsers the pages are spread over (each with its own session).
const SESSIONS: usize = 100;
/// Pages opened at once while connecting.
const OPENING: usize = 100;
const IDLE: Duration = Duration::from_secs(10);
/// The longest a page may wait for its change before the run fails.
const HEARING: Duration = Duration::from_secs(10);

fn main() -> anyhow::Result<()> {
    let backend = std::env::args().nth(1).unwrap_or_else(|| "sqlite".into());
    let arg = |n: usize, default: usize| -> anyhow::Result<usize> {
        Ok(match std::env::args().nth(n) {
            Some(value) => value.parse()?,
            None => default,
        })
    };
    let (pages, requests) = (arg(2, 2_000)?, arg(3, 500)?);
    anyhow::ensure!(
        requests >= 1 && pages >= requests,
        "need at least one request and a page for each"
    );
    raise_open_files(pages)?;
    let server_core = pin_load_generator(&backend)?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(bench(&backend, pages, requests, server_core))
}

/// Each page is a socket on both sides; the server inherits this process's limit. A soft limit of
/// 1,024 (a common default) would refuse connections halfway, so it is raised to the hard limit.
fn raise_open_files(pages: usize) -> anyhow::Result<()> {
    // SAFETY: getrlimit(2) and setrlimit(2) only read and write the struct given.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        limit.rlim_cur = limit.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        // Pages, plus the server's database files, listener and the approver's connection.
        anyhow::ensure!(
            limit.rlim_cur as usize > pages + 200,
            "at most {} open files are allowed; {pages} pages need more",
            limit.rlim_cur
        );
    }
    Ok(())
}

async fn bench(
    backend: &str,
    pages: usize,
    requests: usize,
    core: Option<usize>,
) -> anyhow::Result<()> {
    hoopbot::install_crypto_provider();
    let hoop = Hoop::start(backend, "live", core, "").await?;
    let (port, pid) = (hoop.port, hoop.pid());
    let (ids, _) = submit(port, &hoop.alice, requests).await?;
    let mut cookies = Vec::with_capacity(SESSIONS);
    for _ in 0..SESSIONS {
        cookies.push(sign_in(port, &hoop.bob).await?);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = rss_kib(pid)?;

    // The pages, each listening on its own connection; page i watches request i mod R.
    let opened = Instant::now();
    let mut listening: Vec<Vec<JoinHandle<anyhow::Result<Instant>>>> =
        (0..requests).map(|_| Vec::new()).collect();
    for batch in (0..pages).collect::<Vec<_>>().chunks(OPENING) {
        let mut opening = Vec::with_capacity(batch.len());
        for &i in batch {
            let path = format!("/access-requests/{}/events?version=1", ids[i % requests]);
            let cookie = cookies[i % SESSIONS].clone();
            opening.push(tokio::spawn(
                async move { open(port, &path, &cookie).await },
            ));
        }
        for (&i, page) in batch.iter().zip(opening) {
            let stream = page.await??;
            listening[i % requests].push(tokio::spawn(hear(stream)));
        }
    }
    println!(
        "{backend}: {pages} pages open on {requests} requests in {:.1} s, over {SESSIONS} sessions (server RSS {:.1} MiB before)",
        opened.elapsed().as_secs_f64(),
        before as f64 / 1024.0
    );

    // Idle: every page has its stream, nothing changes.
    let cpu_before = cpu_ticks(pid)?;
    let (mut rss_last, mut rss_peak) = (0, 0);
    let idle_started = Instant::now();
    while idle_started.elapsed() < IDLE {
        tokio::time::sleep(Duration::from_secs(1)).await;
        rss_last = rss_kib(pid)?;
        rss_peak = rss_peak.max(rss_last);
    }
    let cpu_seconds = ticks_to_seconds(cpu_ticks(pid)? - cpu_before);
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "{backend}: {pages} pages idle for {} s: server RSS {:.1} MiB at the end, {:.1} MiB at most: +{:.1} MiB (+{:.1} MiB at most) over the {:.1} MiB before, {:.1} KiB a page; CPU {cpu_seconds:.2} s ({:.2}% of a core)",
        IDLE.as_secs(),
        mib(rss_last),
        mib(rss_peak),
        mib(rss_last.saturating_sub(before)),
        mib(rss_peak.saturating_sub(before)),
        mib(before),
        rss_last.saturating_sub(before) as f64 / pages as f64,
        cpu_seconds / IDLE.as_secs_f64() * 100.0
    );
    for (r, listeners) in listening.iter().enumerate() {
        if let Some(early) = listeners.iter().find(|page| page.is_finished()) {
            anyhow::bail!("a page on request {r} stopped before any decision: {early:?}");
        }
    }

    // Decisions through the API, one at a time; each page's `changed` timed from the approval.
    let approve = approvals(ids.clone(), &hoop.bob);
    let mut bob = Conn::open(port).await?;
    let (mut from_sent, mut from_reply) = (Vec::with_capacity(pages), Vec::with_capacity(pages));
    let mut before_reply = 0;
    for (r, listeners) in listening.into_iter().enumerate() {
        let sent = Instant::now();
        let (status, body) = bob.send(approve(r)).await?;
        let replied = Instant::now();
        anyhow::ensure!(
            status.is_success(),
            "approving {}: {status} {}",
            ids[r],
            String::from_utf8_lossy(&body)
        );
        for page in listeners {
            let heard = tokio::time::timeout(HEARING, page).await.map_err(|_| {
                anyhow::anyhow!("a page on {} heard nothing in {HEARING:?}", ids[r])
            })???;
            from_sent.push(heard.saturating_duration_since(sent));
            from_reply.push(heard.saturating_duration_since(replied));
            before_reply += usize::from(heard < replied);
        }
    }
    from_sent.sort_unstable();
    from_reply.sort_unstable();
    let spread = |d: &[Duration]| {
        format!(
            "p50 {:.2} ms · p99 {:.2} ms · max {:.2} ms",
            ms(d[d.len() / 2]),
            ms(d[d.len() * 99 / 100]),
            ms(d[d.len() - 1])
        )
    };
    println!(
        "{backend}: {requests} approvals through the API, one at a time; {pages} pages heard `changed`: from the approval sent {}; from its reply {} ({before_reply} pages heard it before the reply)",
        spread(&from_sent),
        spread(&from_reply),
    );
    hoop.stop().await
}

/// Opens a page's event stream on a connection of its own, as the page's `EventSource` does;
/// returns it once the server has answered 200 with `text/event-stream`, with the connection's
/// sender, which is held while the stream is read.
async fn open(port: u16, path: &str, cookie: &str) -> anyhow::Result<Page> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream.set_nodelay(true)?;
    let (mut send, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    // The connection's reads and writes; it lives while the stream is read.
    tokio::spawn(connection);
    let request = Request::get(path)
        .header(HOST, "127.0.0.1")
        .header(ACCEPT, "text/event-stream")
        .header(COOKIE, cookie)
        .body(Empty::<Bytes>::new())?;
    let reply = send.send_request(request).await?;
    let kind = reply.headers().get(CONTENT_TYPE).cloned();
    anyhow::ensure!(
        reply.status() == StatusCode::OK
            && kind
                .as_ref()
                .is_some_and(|k| k.as_bytes().starts_with(b"text/event-stream")),
        "{path} answered {} ({kind:?})",
        reply.status()
    );
    Ok((send, reply.into_body()))
}

type Page = (SendRequest<Empty<Bytes>>, Incoming);

/// Reads a page's stream until it says `changed`; returns when that came.
async fn hear((_send, mut stream): Page) -> anyhow::Result<Instant> {
    let mut read = Vec::new();
    while let Some(frame) = stream.frame().await {
        if let Ok(data) = frame?.into_data() {
            read.extend_from_slice(&data);
            if read.windows(15).any(|w| w == b"event: changed\n") {
                return Ok(Instant::now());
            }
        }
    }
    anyhow::bail!("the stream ended without a change")
}
