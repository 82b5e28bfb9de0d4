//! One slow destination does not hold up the others: each destination has its own share of a
//! replica's delivery attempts (`delivery::PER_DESTINATION` in flight at once), so a receiver
//! that takes its time, or a Slack that hangs, fills only its own share while every other
//! destination's deliveries go out as they come.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hoopbot::delivery::PER_DESTINATION;
use tokio::sync::watch;

use crate::fake_slack::{Failure, FakeSlack};
use crate::helpers::{Backend, TestApp, eventually};
use crate::on_both_backends;
use crate::receiver::{Receiver, Reply};
use crate::webhooks::{SECRET, webhook};

on_both_backends!(
    a_slow_receiver_delays_only_itself,
    a_hanging_slack_delays_only_itself,
);

/// More requests than a replica once had attempts in flight in all (64), so a slow destination
/// could have taken every one.
const REQUESTS: usize = 100;

/// A webhook whose receiver answers after a minute (as long as its `timeout` allows).
fn slow_webhook(url: &str) -> String {
    format!(
        "\n[[webhooks]]\nname = \"slow\"\nurl = \"{url}\"\nsecret = \"{SECRET}\"\n\
         events = [\"access_request.*\"]\ntimeout = \"60s\"\nallow_private = true\n"
    )
}

/// Starts the app's delivery worker in the background, as `hoop serve` does; it stops when the
/// returned sender is dropped.
fn deliver_in_background(app: &TestApp) -> watch::Sender<bool> {
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(app.delivery_worker().run(stopped));
    stop
}

/// Submits [`REQUESTS`] held requests; returns when each was submitted, by id.
async fn submit_all(app: &TestApp) -> HashMap<String, Instant> {
    let mut submitted = HashMap::new();
    for i in 0..REQUESTS {
        let id = app.held(&format!("SELECT {i}")).await;
        submitted.insert(id, Instant::now());
    }
    submitted
}

/// Waits until `healthy` has received every request's `created` event, and reports how long
/// each took from its submission (the figure docs/webhooks.md quotes; not asserted on, as a
/// loaded machine may take longer).
async fn all_reach(healthy: &Receiver, submitted: &HashMap<String, Instant>, what: &str) {
    let received = eventually(Duration::from_secs(30), || async {
        let received = healthy.requests();
        if received.len() >= REQUESTS {
            Ok(received)
        } else {
            Err(format!(
                "the healthy receiver has {} of {REQUESTS} events",
                received.len()
            ))
        }
    })
    .await;
    let mut latencies: Vec<Duration> = received
        .iter()
        .map(|r| {
            let id = r.body["data"]["id"].as_str().expect("a request id");
            r.arrived.duration_since(submitted[id])
        })
        .collect();
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100 - 1];
    eprintln!(
        "beside {what}: the healthy receiver's p99 is {p99:?}, its slowest {:?}",
        latencies.last().unwrap()
    );
}

/// A receiver that answers after a minute, beside a healthy one: the slow one gets exactly its
/// share of attempts at once, and the healthy one every event while the slow one's first
/// attempts are still waiting for their answers.
async fn a_slow_receiver_delays_only_itself(backend: Backend) {
    let slow = Receiver::start(SECRET).await;
    slow.plan(vec![Reply::Delay(Duration::from_secs(60)); REQUESTS]);
    let healthy = Receiver::start(SECRET).await;
    let config =
        slow_webhook(&slow.url()) + &webhook("healthy", &healthy.url(), "allow_private = true");
    let app = TestApp::spawn_with(backend, &config).await;
    let _deliveries = deliver_in_background(&app);

    let submitted = submit_all(&app).await;
    all_reach(&healthy, &submitted, "a receiver that takes a minute").await;

    // Its share filled, and no more: every attempt it got is still waiting for its answer.
    eventually(Duration::from_secs(10), || async {
        match slow.requests().len() {
            n if n == PER_DESTINATION => Ok(()),
            n => Err(format!("{n} attempts at the slow receiver")),
        }
    })
    .await;
    assert!(
        slow.requests()
            .iter()
            .all(|r| r.reply == Reply::Delay(Duration::from_secs(60)))
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        slow.requests().len(),
        PER_DESTINATION,
        "more than its share at once"
    );
}

/// A Slack whose `chat.postMessage` hangs, beside a healthy webhook: the webhook gets every
/// event before the first hanging call is given up on (after `slack::web`'s 10 s call timeout).
async fn a_hanging_slack_delays_only_itself(backend: Backend) {
    let slack = FakeSlack::start().await;
    slack.fail("chat.postMessage", vec![Failure::Hang; 4 * REQUESTS]);
    let healthy = Receiver::start(SECRET).await;
    let config = slack.config("") + &webhook("healthy", &healthy.url(), "allow_private = true");
    let app = TestApp::spawn_with(backend, &config).await;
    let _deliveries = deliver_in_background(&app);

    let submitted = submit_all(&app).await;
    all_reach(&healthy, &submitted, "a Slack that hangs").await;
    assert!(
        !slack.calls_of("chat.postMessage").is_empty(),
        "Slack was tried"
    );
    assert_eq!(
        slack.hangs_ended(),
        0,
        "the webhook waited for a hanging Slack call to time out"
    );
}
