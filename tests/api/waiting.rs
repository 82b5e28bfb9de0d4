//! Waiting costs nothing while nothing changes: waiters sleep until woken, and each replica has one
//! change poll that relays changes it was not told about (from another replica or process).

use std::time::Duration;

use hoopbot::changes::ChangeHub;
use hoopbot::store::ChangePoll;

use crate::helpers::{Backend, TestApp, execute_sql};
use crate::on_both_backends;

on_both_backends!(the_change_poll_relays_each_change_once_even_out_of_order);

async fn the_change_poll_relays_each_change_once_even_out_of_order(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let store = app.store().await;
    let mut poll = ChangePoll::start(store.as_ref()).await.unwrap();
    // A replica that heard of nothing: only its poll can wake its waiters.
    let hub = ChangeHub::new();

    let first = app.held("SELECT 1").await;
    let watch = hub.watch(&first);
    let woken = watch.notify().notified();
    tokio::pin!(woken);
    woken.as_mut().enable();
    assert_eq!(poll.poll(store.as_ref(), &hub).await.unwrap(), 1);
    tokio::time::timeout(Duration::from_secs(5), woken)
        .await
        .expect("the waiter is woken");
    assert_eq!(poll.poll(store.as_ref(), &hub).await.unwrap(), 0, "once");

    // Two changes commit out of order: the one with the lower outbox id becomes visible only
    // after the poll has seen the higher one (transactions on Postgres do that).
    let early = app.held("SELECT 2").await;
    let late = app.held("SELECT 3").await;
    let outbox = store.outbox().await.unwrap();
    let hidden = outbox
        .iter()
        .find(|o| o.request_id == early)
        .unwrap()
        .clone();
    assert!(
        outbox
            .iter()
            .any(|o| o.request_id == late && o.id > hidden.id)
    );
    execute_sql(
        &app.db.url,
        format!("delete from outbox where id = {}", hidden.id),
    )
    .await;
    assert_eq!(poll.poll(store.as_ref(), &hub).await.unwrap(), 1);

    let overriding = if backend == Backend::Postgres {
        "overriding system value"
    } else {
        ""
    };
    execute_sql(
        &app.db.url,
        format!(
            "insert into outbox (id, request_id, topic, payload, created_at, next_attempt_at) {overriding} \
             values ({}, '{}', '{}', {}, {}, {})",
            hidden.id,
            hidden.request_id,
            hidden.topic,
            hidden.payload.map_or("null".to_string(), |p| format!("'{p}'")),
            hidden.created_at,
            hidden.created_at
        ),
    )
    .await;
    let watch = hub.watch(&early);
    let woken = watch.notify().notified();
    tokio::pin!(woken);
    woken.as_mut().enable();
    assert_eq!(poll.poll(store.as_ref(), &hub).await.unwrap(), 1);
    tokio::time::timeout(Duration::from_secs(5), woken)
        .await
        .expect("the late change wakes its waiter");
    assert_eq!(poll.poll(store.as_ref(), &hub).await.unwrap(), 0);
}
