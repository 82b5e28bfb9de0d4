//! A replica that is told to stop (a rolling restart) finishes the delivery calls it has started
//! and records their outcome, starts no new ones, and hands back the claims of attempts it could
//! not finish: the next replica updates the card the stopping one posted, instead of posting a
//! second one, and takes up what was left at once, not when the claims' leases run out.

use std::sync::Arc;
use std::time::Duration;

use hoopbot::app::delivery_ports;
use hoopbot::changes::ChangeHub;
use hoopbot::config::Config;
use hoopbot::delivery::{Webhooks, Worker};
use hoopbot::domain::Clock;
use tokio::sync::watch;

use crate::fake_slack::{CHANNEL, Failure, FakeSlack};
use crate::helpers::{Backend, TestApp, test_config_text, until};
use crate::on_both_backends;
use crate::receiver::{Receiver, Reply};
use crate::webhooks::SECRET;

on_both_backends!(
    a_stopping_replica_finishes_its_slack_call_and_the_next_updates_that_card,
    a_stopping_replica_hands_back_the_claims_it_cannot_finish,
);

/// Runs `worker` until the returned sender says stop; the handle ends once it has drained.
fn run(worker: Arc<Worker>) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let (stop, stopped) = watch::channel(false);
    (stop, tokio::spawn(worker.run(stopped)))
}

/// The channel card's post takes 7 s to answer and the replica is told to stop meanwhile: the
/// post is finished and recorded before the worker ends, so the next replica updates that card
/// when the request is approved, and the channel holds one card.
async fn a_stopping_replica_finishes_its_slack_call_and_the_next_updates_that_card(
    backend: Backend,
) {
    let slack = FakeSlack::start().await;
    slack.fail("chat.postMessage", [Failure::Slow(Duration::from_secs(7))]);
    let app = TestApp::spawn_with(backend, &slack.config("")).await;
    let (stop, stopped) = run(app.delivery_worker());
    let id = app.held("DELETE FROM orders WHERE id = 7").await;
    until(
        Duration::from_secs(10),
        "the card is being posted",
        || async { !slack.calls_of("chat.postMessage").is_empty() },
    )
    .await;
    stop.send(true).unwrap();
    stopped.await.unwrap();

    let next = app.skewed_replica(0).await;
    let (_stop, _running) = run(next.delivery_worker());
    app.approve("bob@x.com", &id, None).await;
    app.approve("sam@x.com", &id, None).await;
    until(Duration::from_secs(15), "the card is updated", || async {
        slack
            .calls_of("chat.update")
            .iter()
            .any(|call| call.body["channel"] == CHANNEL)
    })
    .await;
    let posts: Vec<_> = slack
        .calls_of("chat.postMessage")
        .into_iter()
        .filter(|call| call.body["channel"] == CHANNEL)
        .collect();
    assert_eq!(posts.len(), 1, "one card in the channel: {posts:#?}");
}

/// A webhook whose receiver takes a minute, and a worker that drains for a second: the attempt
/// is dropped, its claim handed back, and the next replica tries again at once (not after the
/// claim's 65 s lease).
async fn a_stopping_replica_hands_back_the_claims_it_cannot_finish(backend: Backend) {
    let receiver = Receiver::start(SECRET).await;
    receiver.plan(vec![Reply::Delay(Duration::from_secs(60))]);
    let hook = format!(
        "\n[[webhooks]]\nname = \"slow\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\n\
         events = [\"access_request.created\"]\ntimeout = \"60s\"\nallow_private = true\n",
        receiver.url()
    );
    let app = TestApp::spawn_with(backend, &hook).await;
    let config = Config::parse(&(test_config_text(&app.db.url) + &hook), "test config").unwrap();
    let ports = delivery_ports(
        app.store().await,
        ChangeHub::new(),
        Clock::shifted(app.now.clone()),
    );
    let webhooks = Arc::new(Webhooks::new(&config).unwrap());
    let worker = Worker::new(ports, vec![webhooks]).with_drain(Duration::from_secs(1));
    let (stop, stopped) = run(Arc::new(worker));

    let id = app.held("SELECT 1").await;
    until(Duration::from_secs(10), "the first attempt", || async {
        receiver.requests().len() == 1
    })
    .await;
    stop.send(true).unwrap();
    stopped.await.unwrap();

    let next = app.skewed_replica(0).await;
    let (_stop, _running) = run(next.delivery_worker());
    until(Duration::from_secs(15), "a second attempt", || async {
        receiver.requests().len() == 2
    })
    .await;
    let second = &receiver.requests()[1];
    assert_eq!(second.body["data"]["id"], id.as_str());
    assert_eq!(second.reply, Reply::Status(200));
}
