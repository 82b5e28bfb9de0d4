//! The delivery store on both backends: claims made at once by several workers never hand one
//! delivery out twice nor let a later event of a request overtake an earlier one, posted
//! messages keep the newest version they show, and a destination gets no events from before it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use hoopbot::store::{Attempted, Finished, Leases, Next, PostedMessage, Route, Shares};
use serde_json::json;

use crate::helpers::{Backend, TestApp};
use crate::on_both_backends;
use crate::webhooks::webhook;

on_both_backends!(
    concurrent_claims_hand_each_delivery_out_once_and_in_order,
    posted_messages_keep_the_newest_version_they_show,
    events_from_before_a_destination_are_never_delivered_to_it,
    a_claim_takes_no_more_of_a_destination_than_its_free_share,
);

fn routes(event: &str) -> Vec<Route> {
    ["first", "second"]
        .into_iter()
        .filter(|_| event.starts_with("access_request."))
        .map(|name| Route {
            kind: "webhook",
            destination: name.to_string(),
            address_sha256: format!("{name}-address"),
            give_up_after: 60_000,
        })
        .collect()
}

async fn concurrent_claims_hand_each_delivery_out_once_and_in_order(backend: Backend) {
    // The two destinations `routes` sends every event to, started as the server starts.
    let config = ["first", "second"]
        .map(|name| webhook(name, "http://127.0.0.1:9/", "allow_private = true"));
    let app = TestApp::spawn_with(backend, &config.concat()).await;
    let store = app.store().await;
    let now = app.hoop.now().await.unwrap();
    let mut ids = Vec::new();
    for i in 0..15 {
        let id = app.held(&format!("SELECT {i}")).await;
        app.approve("bob@x.com", &id, None).await;
        app.approve("sam@x.com", &id, None).await;
        ids.push(id);
    }
    // Four events per request (created, two group approvals, approved), two destinations each.
    assert_eq!(store.fan_out(now, 1_000, &routes).await.unwrap(), 60);
    assert_eq!(store.fan_out(now, 1_000, &routes).await.unwrap(), 0, "once");

    // Each kind's own lease: every claim here is a webhook's.
    let leases = Leases {
        until: vec![("slack", now + 65_000), ("webhook", now + 60_000)],
        otherwise: now + 5_000,
    };
    let claims = Arc::new(Mutex::new(Vec::new()));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (store, claims, leases) = (store.clone(), claims.clone(), leases.clone());
        workers.push(tokio::spawn(async move {
            let mut empty = 0;
            while empty < 20 {
                let batch = store
                    .claim_deliveries(now, &leases, &Shares::all_free(16), 7)
                    .await
                    .unwrap();
                if batch.is_empty() {
                    empty += 1;
                    tokio::task::yield_now().await;
                    continue;
                }
                empty = 0;
                let pairs: HashSet<_> = batch
                    .iter()
                    .map(|d| (d.request_id.clone(), d.destination.clone()))
                    .collect();
                assert_eq!(
                    pairs.len(),
                    batch.len(),
                    "two events of one request and destination in one batch"
                );
                for delivery in batch {
                    assert_eq!(delivery.lease_until, now + 60_000);
                    // Recorded in claim order, before the next claim can see it finished.
                    claims.lock().unwrap().push((
                        delivery.request_id.clone(),
                        delivery.destination.clone(),
                        delivery.outbox_id,
                        delivery.id,
                    ));
                    let finished = Finished {
                        attempt: Attempted {
                            at: now,
                            status: Some(200),
                            latency_ms: 1,
                            error: None,
                        },
                        next: Next::Delivered,
                        audit: None,
                        delivery,
                    };
                    assert_eq!(store.finish_deliveries(&[finished]).await.unwrap(), [true]);
                }
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }
    let claims = claims.lock().unwrap().clone();
    let unique: HashSet<i64> = claims.iter().map(|c| c.3).collect();
    assert_eq!(
        (claims.len(), unique.len()),
        (120, 120),
        "every delivery claimed exactly once"
    );
    let mut last: HashMap<(String, String), i64> = HashMap::new();
    for (request, destination, outbox_id, _) in &claims {
        if let Some(before) = last.insert((request.clone(), destination.clone()), *outbox_id) {
            assert!(
                before < *outbox_id,
                "a later event of {request} to {destination} went first"
            );
        }
    }
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let records = store.deliveries_of(&ids).await.unwrap();
    assert_eq!(records.len(), 120);
    assert!(
        records
            .iter()
            .all(|d| d.state == hoopbot::store::DeliveryState::Delivered && d.attempts == 1)
    );
}

async fn posted_messages_keep_the_newest_version_they_show(backend: Backend) {
    let mut app = TestApp::spawn(backend).await;
    let id = app.held("SELECT 1").await;
    let message = |version: i64, ts: &str| PostedMessage {
        kind: "slack".into(),
        destination: "C123".into(),
        request_id: id.clone(),
        external: json!({ "channel": "C123", "ts": ts }),
        version,
        posted_at: 1_000,
        updated_at: 1_000 + version,
    };
    let store = app.store().await;
    store.save_posted(&message(2, "1.2")).await.unwrap();
    // A late update showing an older version does not replace it.
    store.save_posted(&message(1, "1.1")).await.unwrap();
    assert_eq!(
        store.posted("slack", "C123", &id).await.unwrap(),
        Some(message(2, "1.2"))
    );
    store.save_posted(&message(3, "1.3")).await.unwrap();
    assert_eq!(store.posted("slack", "C999", &id).await.unwrap(), None);
    // Any replica, after any restart, finds it.
    app.stop_and_start().await;
    let other = crate::helpers::inspect(&app.db.url).await;
    assert_eq!(
        other.posted("slack", "C123", &id).await.unwrap(),
        Some(message(3, "1.3"))
    );
}

/// A destination receives the events from its first start on, never the history before it;
/// until one exists, events are written without their snapshot and never fanned out. A server
/// that did not start the destination itself (another replica did) learns of it from its next
/// write, which it sends nowhere, and writes snapshots from then on.
async fn events_from_before_a_destination_are_never_delivered_to_it(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let old = app.held("SELECT 'before the webhook'").await;
    let store = app.store().await;
    let now = app.hoop.now().await.unwrap();
    let outbox = store.outbox().await.unwrap();
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].payload, None);
    assert!(outbox[0].delivered_at.is_some(), "{outbox:?}");

    let destinations = [("webhook", "first"), ("webhook", "second")];
    store.start_destinations(&destinations).await.unwrap();
    let finding = app.held("SELECT 'the write that finds it'").await;
    let new = app.held("SELECT 'after it'").await;
    // Starting again (another replica, a restart) keeps where each destination started.
    store.start_destinations(&destinations).await.unwrap();
    let outbox = store.outbox().await.unwrap();
    assert_eq!(outbox.len(), 3);
    assert_eq!((&outbox[1].payload, outbox[1].delivered_at), (&None, None));
    assert_eq!(
        outbox[2].payload.as_ref().unwrap()["request"]["command"],
        "SELECT 'after it'"
    );
    assert_eq!(outbox[2].delivered_at, None);

    assert_eq!(store.fan_out(now, 1_000, &routes).await.unwrap(), 2);
    for nowhere in [&old, &finding] {
        let deliveries = store.deliveries_of(&[nowhere.as_str()]).await.unwrap();
        assert!(deliveries.is_empty(), "{deliveries:?}");
    }
    assert_eq!(store.deliveries_of(&[new.as_str()]).await.unwrap().len(), 2);
    assert!(
        store
            .outbox()
            .await
            .unwrap()
            .iter()
            .all(|o| o.delivered_at.is_some())
    );
}

/// A destination whose share is taken is not claimed from, however far ahead its backlog; one
/// whose share is partly taken is claimed from up to what is left; the others up to their whole
/// share. So a slow destination cannot take every claim.
async fn a_claim_takes_no_more_of_a_destination_than_its_free_share(backend: Backend) {
    let config = ["first", "second"]
        .map(|name| webhook(name, "http://127.0.0.1:9/", "allow_private = true"));
    let app = TestApp::spawn_with(backend, &config.concat()).await;
    let store = app.store().await;
    for i in 0..10 {
        app.held(&format!("SELECT {i}")).await;
    }
    let now = app.hoop.now().await.unwrap();
    // Only "first" gets the older half of the events: a backlog ahead of "second"'s.
    let first_only = |event: &str| -> Vec<Route> {
        routes(event)
            .into_iter()
            .filter(|r| r.destination == "first")
            .collect()
    };
    assert_eq!(store.fan_out(now, 5, &first_only).await.unwrap(), 5);
    assert_eq!(store.fan_out(now, 1_000, &routes).await.unwrap(), 5);
    let leases = Leases {
        until: vec![("webhook", now + 60_000)],
        otherwise: now + 5_000,
    };
    let count = |claimed: &[hoopbot::store::Delivery], name: &str| {
        claimed.iter().filter(|d| d.destination == name).count()
    };

    let first_full = Shares {
        each: 3,
        busy: vec![("webhook".into(), "first".into(), 3)],
    };
    let claimed = store
        .claim_deliveries(now, &leases, &first_full, 100)
        .await
        .unwrap();
    assert_eq!(
        (count(&claimed, "first"), count(&claimed, "second")),
        (0, 3)
    );

    let first_busy = Shares {
        each: 3,
        busy: vec![
            ("webhook".into(), "first".into(), 1),
            ("slack".into(), "slack".into(), 2),
        ],
    };
    let claimed = store
        .claim_deliveries(now, &leases, &first_busy, 100)
        .await
        .unwrap();
    assert_eq!(
        (count(&claimed, "first"), count(&claimed, "second")),
        (2, 2)
    );

    // The limit still holds across destinations, oldest due first.
    let claimed = store
        .claim_deliveries(now, &leases, &Shares::all_free(3), 2)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2);
}
