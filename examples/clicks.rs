//! Click benchmark: how many signed Slack `block_actions` approve clicks a real `hoop serve` on
//! one core decides over HTTP, driven from the other core, measured the same way as the API
//! approvals of `examples/decisions.rs`.
//!
//!   cargo build --release && cargo run --release --example clicks -- sqlite 60000
//!   HOOP_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test HOOP_BENCH_RATE=2000 \
//!     cargo run --release --example clicks -- postgres 60000
//!
//! The server has `[slack]` pointing at a minimal fake Web API in this process (every call
//! answered `ok` at once, no pacing: `message_interval = "1ms"`), so its delivery worker posts and
//! updates every card on the same core while the clicks arrive: a click's cost includes the card
//! updates it causes, though its reply never waits for them. Bob (dba-team) links his Slack
//! account the way a person does (`/hoop subscribe`, then the code through the API), so each
//! request also gets a DM copy. Alice submits N held requests (not timed here; see decisions).
//!
//! - click: bob approves two thirds of them with one click each, over 32 connections, closed loop.
//!   Each click is a ~3 KB form like Slack's: the whole card echoed back in `message`, URL-encoded,
//!   signed with the app's signing secret (v0). Bodies are built before the phase and signed as
//!   they are sent (a signature holds five minutes).
//! - With HOOP_BENCH_CARDS=0 the server runs with `--no-deliveries`: only what a click's reply
//!   waits for runs on its core (on Postgres, card updates can run on another replica), which is
//!   the same measurement as the API approvals of `decisions`.
//! - paced: the last third open loop at HOOP_BENCH_RATE clicks a second (default 4,000, half the
//!   SQLite target), timed from when each click is due.
//!
//! Every reply must be 200 and every click must decide: the run checks that each request is
//! approved (through the API) at the end.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};
use support::{Call, Conn, Cpu, Hoop, drive, pin_load_generator, report, submit};

const CLIENTS: usize = 32;
const RATE: f64 = 4000.0;
const SIGNING_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const CHANNEL: &str = "C0BENCHCARDS";
const BOB: &str = "U0BOB";

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
    let server_core = pin_load_generator(&backend)?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(bench(&backend, n, rate, server_core))
}

async fn bench(backend: &str, n: usize, rate: f64, core: Option<usize>) -> anyhow::Result<()> {
    hoopbot::install_crypto_provider();
    let slack = fake_slack_api().await?;
    let extra = format!(
        "[slack]\nsigning_secret = \"{SIGNING_SECRET}\"\nbot_token = \"xoxb-bench\"\n\
         channel = \"{CHANNEL}\"\napi_base_url = \"{slack}\"\nmessage_interval = \"1ms\"\n"
    );
    // HOOP_BENCH_CARDS=0: `hoop serve --no-deliveries`, so the server's core does only what a
    // click's reply waits for (its card updates would run on another replica).
    let cards = std::env::var("HOOP_BENCH_CARDS").map_or(true, |v| v != "0");
    let flags: &[&str] = if cards { &[] } else { &["--no-deliveries"] };
    let hoop = Hoop::start_with(backend, "clicks", core, &extra, flags).await?;
    let port = hoop.port;
    link_bob(port, &hoop.bob).await?;

    let (mut ids, _) = submit(port, &hoop.alice, n).await?;
    // The submissions' cards (a channel card and bob's DM each) are posted first, so the click
    // phases measure the clicks and the card updates they cause, not that backlog.
    if cards {
        until_idle(hoop.pid()).await?;
    }
    let paced = ids.split_off(n * 2 / 3);
    let card = card_blocks();
    let clicks: Vec<String> = ids.iter().map(|id| click(id, &card)).collect();
    let size = clicks.iter().map(String::len).sum::<usize>() / clicks.len();
    println!("{backend}: each click is a {size}-byte signed form");

    let cpu = Cpu::now(hoop.pid())?;
    let (_, run) = drive(
        port,
        CLIENTS,
        clicks.len(),
        None,
        signed(clicks),
        |_| Ok(()),
    )
    .await?;
    report(backend, "click", "approve clicks", &run, cpu.since()?);

    let clicks: Vec<String> = paced.iter().map(|id| click(id, &card)).collect();
    let cpu = Cpu::now(hoop.pid())?;
    let count = clicks.len();
    let (_, run) = drive(port, CLIENTS, count, Some(rate), signed(clicks), |_| Ok(())).await?;
    report(
        backend,
        "paced",
        &format!("clicks offered at {rate:.0}/s"),
        &run,
        cpu.since()?,
    );

    // Every click decided: each request is approved.
    ids.extend(paced);
    let mut conn = Conn::open(port).await?;
    for id in ids.iter().step_by((ids.len() / 50).max(1)) {
        let call = Call::get_as(&format!("/api/v1/access-requests/{id}"), &hoop.bob);
        let (status, body) = conn.send(call).await?;
        let request: Value = serde_json::from_slice(&body)?;
        anyhow::ensure!(
            status.is_success()
                && request["status"] == "approved"
                && request["approval_groups"][0]["via"] == "slack",
            "request {id} was not approved by its click: {request}"
        );
    }
    println!("{backend}: sampled requests are approved via slack");
    hoop.stop().await
}

/// The clicks, signed as they are sent (timestamps must be within five minutes).
fn signed(bodies: Vec<String>) -> impl Fn(usize) -> Call + Send + Sync + 'static {
    signed_to("/slack/interactions", bodies)
}

/// `bodies` posted to `path` as Slack posts them, signed as they are sent.
fn signed_to(
    path: &'static str,
    bodies: Vec<String>,
) -> impl Fn(usize) -> Call + Send + Sync + 'static {
    move |i| {
        let timestamp = chrono::Utc::now().timestamp().to_string();
        let signature =
            hoopbot::slack::signature::sign(SIGNING_SECRET, &timestamp, bodies[i].as_bytes());
        Call::form(
            path,
            bodies[i].clone(),
            vec![
                ("x-slack-request-timestamp", timestamp),
                ("x-slack-signature", signature),
            ],
        )
    }
}

/// Waits until the server's delivery worker has caught up: a second in which it used under 5% of
/// its core.
async fn until_idle(pid: u32) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    loop {
        let before = support::cpu_ticks(pid)?;
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        if support::ticks_to_seconds(support::cpu_ticks(pid)? - before) < 0.05 {
            println!(
                "server idle after {:.1} s of card posting",
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
    }
}

/// Links bob's Slack account: `/hoop subscribe` as Slack sends it, then the code as bob.
async fn link_bob(port: u16, bob: &str) -> anyhow::Result<()> {
    let mut conn = Conn::open(port).await?;
    let form = serde_urlencoded::to_string([
        ("team_id", "T0BENCH"),
        ("channel_id", CHANNEL),
        ("user_id", BOB),
        ("command", "/hoop"),
        ("text", "subscribe"),
        (
            "response_url",
            "https://hooks.slack.com/commands/T0BENCH/1/x",
        ),
        ("trigger_id", "1.2.3"),
    ])?;
    let (status, body) = conn
        .send(signed_to("/slack/commands", vec![form])(0))
        .await?;
    let body: Value = serde_json::from_slice(&body)?;
    anyhow::ensure!(status.is_success(), "/hoop subscribe failed: {body}");
    let text = body["text"].as_str().unwrap_or_default();
    let at = text
        .find("hoop subscribe ")
        .map(|i| i + 15)
        .ok_or_else(|| anyhow::anyhow!("no code in {text}"))?;
    let code = &text[at..at + 9];
    let call = Call::post(
        "/api/v1/chat-links".into(),
        bob,
        Some(json!({ "code": code }).to_string()),
    );
    let (status, body) = conn.send(call).await?;
    anyhow::ensure!(
        status.is_success(),
        "linking failed: {}",
        String::from_utf8_lossy(&body)
    );
    Ok(())
}

/// A pending card's blocks as hoopbot posts them, to echo back in each click as Slack does.
fn card_blocks() -> Value {
    let request: hoopbot::domain::AccessRequest = serde_json::from_value(json!({
        "id": "01a24af8-ea41-7483-a3ff-bd8a66659a92", "connection": "prod-db",
        "command": "UPDATE users SET status = 'inactive' WHERE last_login < now() - interval '2 years' AND plan = 'free'",
        "command_sha256": "b521e7595c8f3c1e0c9e6e0b8d1c3b5a9f0e4d2c1b0a99887766554433221100",
        "requester": "alice@x.com", "justification": "Quarterly clean-up of dormant free accounts (TICKET-4821)",
        "status": "pending", "created_at": 1796554212305i64, "expires_at": 1796557812305i64,
        "decided_at": null, "version": 1,
        "approval_groups": [{ "group": "dba-team", "status": "pending", "decided_by": null, "decided_at": null, "via": null }],
        "rejection": null, "result": null, "claimed_by": null
    }))
    .expect("a request");
    let card = hoopbot::slack::card::request_card(
        &request,
        "https://hoop.example.com/access-requests/01a24af8-ea41-7483-a3ff-bd8a66659a92",
        hoopbot::slack::card::Buttons::Pending,
    );
    json!({ "text": card.text, "blocks": card.blocks })
}

/// Bob's click on "Approve as dba-team" on request `id`'s card, as Slack posts it.
fn click(id: &str, card: &Value) -> String {
    static TRIGGER: AtomicU64 = AtomicU64::new(0);
    let value = json!({ "request_id": id, "group": "dba-team" }).to_string();
    let payload = json!({
        "type": "block_actions",
        "user": { "id": BOB, "username": "bob", "name": "bob", "team_id": "T0BENCH" },
        "api_app_id": "A0HOOP", "token": "deprecated-verification-token",
        "container": { "type": "message", "message_ts": "1796554212.000100", "channel_id": CHANNEL, "is_ephemeral": false },
        "trigger_id": format!("{}.1796554212.{:x}", TRIGGER.fetch_add(1, Ordering::Relaxed), 0xfeed),
        "team": { "id": "T0BENCH", "domain": "bench" },
        "enterprise": null, "is_enterprise_install": false,
        "channel": { "id": CHANNEL, "name": "db-approvals" },
        "message": { "type": "message", "subtype": "bot_message", "ts": "1796554212.000100", "bot_id": "B0BOT",
                     "user": "U0BOT", "app_id": "A0HOOP", "team": "T0BENCH",
                     "text": card["text"], "blocks": card["blocks"] },
        "state": { "values": {} },
        "response_url": "https://hooks.slack.com/actions/T0BENCH/1796554212/abcdefABCDEF0123456789",
        "actions": [{ "action_id": "approve.0", "block_id": "decide",
                      "text": { "type": "plain_text", "text": "Approve as dba-team", "emoji": false },
                      "value": value, "style": "primary", "type": "button", "action_ts": "1796554213.123456" }]
    });
    serde_urlencoded::to_string([("payload", payload.to_string())]).expect("a form")
}

/// A Slack Web API that answers every call `ok` at once; returns its base URL.
async fn fake_slack_api() -> anyhow::Result<String> {
    use axum::routing::on;
    let ts = Arc::new(AtomicU64::new(1));
    let answer = move |axum::extract::Path(method): axum::extract::Path<String>| {
        let n = ts.fetch_add(1, Ordering::Relaxed);
        async move {
            let ts = format!("1796554212.{n:06}");
            axum::Json(match method.as_str() {
                "conversations.open" => json!({ "ok": true, "channel": { "id": "D0BOB" } }),
                // The workspace every click must name (`team.id`).
                "auth.test" => json!({ "ok": true, "team_id": "T0BENCH", "user_id": "U0BOT" }),
                _ => json!({ "ok": true, "channel": CHANNEL, "ts": ts,
                             "message": { "ts": ts, "text": "" } }),
            })
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/api", listener.local_addr()?);
    // Slack's client asks some methods (auth.test) with GET, the rest with POST.
    let any = axum::routing::MethodFilter::GET.or(axum::routing::MethodFilter::POST);
    let app = axum::Router::new().route("/api/{method}", on(any, answer));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}
