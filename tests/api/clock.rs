//! One clock: on Postgres every deadline, lease and decision time is the database's, so replicas
//! whose own clocks drift apart still agree on what is expired.

use std::time::Duration;

use hoopbot::domain::{Decision, Status, Surface};
use reqwest::StatusCode;

use crate::helpers::{Backend, TestApp, postgres_url, skip};

const BEHIND: i64 = -30_000;
const AHEAD: i64 = 40_000;

async fn postgres_app() -> Option<TestApp> {
    if postgres_url().is_none() {
        skip(crate::helpers::POSTGRES_ENV);
        return None;
    }
    Some(TestApp::spawn(Backend::Postgres).await)
}

/// Reproduced with a replica 30 s behind: approvals after the real deadline were accepted and
/// `decided_at` came before `created_at`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_behind_accepts_nothing_after_the_deadline() {
    let Some(app) = postgres_app().await else {
        return;
    };
    let behind = app.skewed_replica(BEHIND).await;
    assert!(behind.clock_skew().await.unwrap() < -29_000);
    let bob = behind.identity(&"bob@x.com".parse().unwrap()).unwrap();

    let id = app.held("SELECT 1").await;
    let approved = behind
        .decide(&bob, &id, Decision::Approve { group: None }, Surface::Api)
        .await
        .unwrap();
    let created_at = approved.created_at;
    let group = &approved.approval_groups[0];
    assert!(
        group.decided_at.unwrap() >= created_at,
        "decided {} before created {created_at}",
        group.decided_at.unwrap()
    );

    // 30 min and 5 s later by the database; 29 min 35 s by the lagging replica's own clock.
    let late = app.held("SELECT 2").await;
    app.advance(Duration::from_secs(30 * 60 + 5));
    let refused = behind
        .decide(&bob, &late, Decision::Approve { group: None }, Surface::Api)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), "expired");
    assert_eq!(app.request(&late).await["status"], "expired");
}

/// Reproduced with a replica 40 s ahead: it expired requests early and failed healthy jobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_ahead_expires_nothing_early_and_fails_no_live_job() {
    let Some(app) = postgres_app().await else {
        return;
    };
    let ahead = app.skewed_replica(AHEAD).await;
    assert!(ahead.clock_skew().await.unwrap() > 39_000);

    let id = app.held("SELECT 1").await;
    // 29 min 30 s by the database: 30 min 10 s by the hasty replica's clock.
    app.advance(Duration::from_secs(29 * 60 + 30));
    assert_eq!(ahead.sweep().await.unwrap(), 0);
    assert_eq!(ahead.get(&id).await.unwrap().status, Status::Pending);
    let sam = ahead.identity(&"sam@x.com".parse().unwrap()).unwrap();
    ahead
        .decide(&sam, &id, Decision::Approve { group: None }, Surface::Api)
        .await
        .expect("still in time");

    // A job started 20 s ago with a 30 s lease is alive, whatever the hasty clock says.
    let reply = app.submit("alice@x.com", "counter", "select 1").await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let job = reply.body["id"].as_str().unwrap().to_string();
    let offered = app
        .hoop
        .claim("racer", None, &["counter".parse().unwrap()], Duration::ZERO)
        .await
        .unwrap()
        .expect("a job");
    assert_eq!(offered.id, job);
    let offer = offered.offer.unwrap();
    app.hoop.start("racer", &job, &offer).await.unwrap();
    app.advance(Duration::from_secs(20));
    assert_eq!(ahead.sweep().await.unwrap(), 0);
    assert_eq!(app.request(&job).await["status"], "running");
}
