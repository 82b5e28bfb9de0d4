//! The delivery worker: one per replica. Each step fans new outbox events out into deliveries,
//! claims due ones under a lease, makes one attempt at each and records what followed. Replicas
//! claim different deliveries, and one killed mid-attempt leaves its claim to lapse and be taken
//! up by another; a receiver therefore sees each event at least once, and once in the usual
//! case, with the same `webhook-id` every time to de-duplicate on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::shares::{PER_DESTINATION, Shares};
use super::{Answer, Notifier, Stopping, Verdict};
use crate::audit::AuditKind;
use crate::changes::ChangeHub;
use crate::domain::{Event, Millis};
use crate::error::Result;
use crate::store::{
    Attempted, AuditEntry, Deliveries, Delivery, Finished, Leases, Next, Route, StoreResult,
};

/// The first retry comes within seconds; later ones double up to [`LONGEST_WAIT`].
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// The longest wait between attempts, also for a receiver's `Retry-After`.
const LONGEST_WAIT: Duration = Duration::from_secs(60 * 60);
/// How long past its longest attempt a claim holds, for the outcome to be recorded.
const LEASE_MARGIN: Duration = Duration::from_secs(5);
/// Outbox events fanned out per transaction.
const FAN_OUT_BATCH: i64 = 500;
/// How long a stopping worker waits for its attempts under way: longer than one call to Slack
/// may take (`slack::web`), so every call started is finished and its outcome recorded. Claims
/// still out then are handed back.
const DRAIN: Duration = Duration::from_secs(15);
/// How often an idle worker looks for retries that came due and for other replicas' events.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// After a round that found deliveries, how long the worker lets more gather before the next:
/// under load, rounds (each a few transactions on the database every decision also writes to)
/// take more deliveries each instead of coming faster. A lone event is not held up by it.
const GATHER: Duration = Duration::from_millis(2);

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Delivered,
    /// The attempt failed; the delivery is due again later.
    Retry,
    /// The attempt failed and the delivery's time ran out, or it could never be made.
    GaveUp,
    /// The receiver asked to be switched off.
    Disabled,
    /// Nothing was due.
    Empty,
}

/// Reads the time deliveries are scheduled by: the store's clock, which is the database's on
/// Postgres, so replicas whose own clocks drift apart agree on leases and retries.
#[async_trait]
pub trait DeliveryClock: Send + Sync {
    async fn now(&self) -> StoreResult<Millis>;
}

/// What the worker needs to do its work, and nothing more.
pub struct Ports {
    /// The outbox and the delivery tables.
    pub store: Arc<dyn Deliveries>,
    pub clock: Arc<dyn DeliveryClock>,
    /// Wakes the worker when a change is committed (its `deliveries` signal).
    pub changes: Arc<ChangeHub>,
}

pub struct Worker {
    store: Arc<dyn Deliveries>,
    clock: Arc<dyn DeliveryClock>,
    changes: Arc<ChangeHub>,
    notifiers: Vec<Arc<dyn Notifier>>,
    /// Set once this worker's destinations are recorded as started (see [`Worker::start`]).
    started: tokio::sync::OnceCell<()>,
    /// The attempts under way, by destination.
    shares: Shares,
    /// How long a stopping worker waits for its attempts under way.
    drain: Duration,
}

impl Worker {
    pub fn new(ports: Ports, notifiers: Vec<Arc<dyn Notifier>>) -> Worker {
        Worker {
            store: ports.store,
            clock: ports.clock,
            changes: ports.changes,
            notifiers,
            started: tokio::sync::OnceCell::new(),
            shares: Shares::default(),
            drain: DRAIN,
        }
    }

    /// With another drain time than [`DRAIN`] (tests, to see claims handed back).
    pub fn with_drain(mut self, drain: Duration) -> Worker {
        self.drain = drain;
        self
    }

    /// Delivers the next due delivery, if any: one step, for tests to drive without sleeping.
    pub async fn deliver_next(&self) -> Result<Step> {
        let Some(delivery) = self.claim(1).await?.pop() else {
            return Ok(Step::Empty);
        };
        let (finished, step) = self.attempt(delivery, &Stopping::never()).await?;
        self.record(vec![finished]).await?;
        Ok(step)
    }

    /// Delivers until `stop` turns true: attempts run side by side (up to [`PER_DESTINATION`]
    /// per destination), those that finish together are recorded in one transaction, and the
    /// worker sleeps while nothing is due, until a change is committed or a retry comes due.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let worker = self;
        let stopping = Stopping::new(stop.clone());
        if worker.destinations().is_empty() {
            // Nothing to deliver. (Until some replica has a destination, events are written
            // already fanned out, without their snapshot: see `store::sql::DestinationsSeen`.)
            return;
        }
        // Every destination's whole share, and one for deliveries to destinations no longer
        // configured (each given up at once).
        let most_in_flight = PER_DESTINATION * (worker.destinations().len() + 1);
        let mut in_flight: JoinSet<Result<(Finished, Step)>> = JoinSet::new();
        let mut trouble = trouble_backoff();
        loop {
            let changes = worker.changes.clone();
            let woken = changes.deliveries().notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            // What finished since the last round is recorded first, so the next event of each
            // of those requests can be claimed in this one.
            let mut finished = Vec::new();
            while let Some(done) = in_flight.try_join_next() {
                finished.push(done);
            }
            worker.record_all(finished).await;
            let room = most_in_flight.saturating_sub(in_flight.len());
            let claimed = if room > 0 {
                match worker.claim(room as i64).await {
                    Ok(claimed) => {
                        trouble = trouble_backoff();
                        claimed
                    }
                    Err(e) => {
                        let wait = trouble.next().unwrap_or(IDLE_POLL);
                        tracing::warn!(error = %e, "cannot claim deliveries; will retry");
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => continue,
                            _ = stop.changed() => break,
                        }
                    }
                }
            } else {
                Vec::new()
            };
            let found = !claimed.is_empty();
            for delivery in claimed {
                let (worker, stopping) = (worker.clone(), stopping.clone());
                let place = worker.shares.take(&delivery);
                in_flight.spawn(async move {
                    let _place = place;
                    worker.attempt(delivery, &stopping).await
                });
            }
            if found {
                // More may be due right away; let them gather first.
                tokio::select! {
                    _ = tokio::time::sleep(GATHER) => continue,
                    _ = stop.changed() => break,
                }
            }
            tokio::select! {
                _ = &mut woken => {}
                Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                    let mut finished = vec![done];
                    while let Some(done) = in_flight.try_join_next() {
                        finished.push(done);
                    }
                    worker.record_all(finished).await;
                }
                _ = tokio::time::sleep(IDLE_POLL) => {}
                _ = stop.changed() => break,
            }
        }
        worker.drain(in_flight).await;
    }

    /// Stopping: the attempts under way finish the calls they have started (and make no new
    /// ones, see [`Stopping`]) and are recorded; any still out after the drain time are dropped
    /// and their claims handed back, so another replica takes them up at once instead of when
    /// their leases run out.
    async fn drain(&self, mut in_flight: JoinSet<Result<(Finished, Step)>>) {
        let deadline = tokio::time::Instant::now() + self.drain;
        let mut finished = Vec::new();
        while let Ok(Some(done)) = tokio::time::timeout_at(deadline, in_flight.join_next()).await {
            finished.push(done);
        }
        self.record_all(finished).await;
        if in_flight.is_empty() {
            return;
        }
        let claims = self.shares.claims();
        in_flight.shutdown().await;
        match self.store.hand_back(&claims).await {
            Ok(handed) => {
                tracing::info!(
                    handed,
                    "stopping: delivery attempts still under way were dropped and their claims handed back"
                )
            }
            Err(e) => {
                tracing::warn!(error = %e, claims = claims.len(), "stopping: cannot hand claims back; they are taken up once their leases run out")
            }
        }
    }

    /// Every configured destination, as (kind, name).
    fn destinations(&self) -> Vec<(&'static str, String)> {
        self.notifiers
            .iter()
            .flat_map(|n| n.destinations().into_iter().map(|d| (n.kind(), d)))
            .collect()
    }

    /// Records this worker's destinations as started, once: a destination seen for the first
    /// time receives the events after the newest one, never the history before it.
    pub async fn start(&self) -> Result<()> {
        self.started
            .get_or_try_init(|| async {
                let destinations = self.destinations();
                let names: Vec<(&str, &str)> =
                    destinations.iter().map(|(k, d)| (*k, d.as_str())).collect();
                self.store.start_destinations(&names).await
            })
            .await?;
        Ok(())
    }

    /// Records the attempts of a batch that could be made; one that could not (its notifier
    /// failed to say, the clock could not be read) is retried once its claim lapses.
    async fn record_all(
        &self,
        batch: Vec<std::result::Result<Result<(Finished, Step)>, tokio::task::JoinError>>,
    ) {
        if batch.is_empty() {
            return;
        }
        let mut finished = Vec::with_capacity(batch.len());
        for done in batch {
            match done {
                Ok(Ok((attempt, _))) => finished.push(attempt),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "a delivery attempt failed; it is retried once its claim lapses")
                }
                Err(e) => {
                    tracing::error!(error = %e, "a delivery attempt panicked; it is retried once its claim lapses")
                }
            }
        }
        let count = finished.len();
        if let Err(e) = self.record(finished).await {
            tracing::warn!(error = %e, attempts = count, "cannot record delivery attempts; they are retried once their claims lapse");
        }
    }

    /// Records finished attempts in one transaction.
    async fn record(&self, finished: Vec<Finished>) -> Result<()> {
        let moved = self.store.finish_deliveries(&finished).await?;
        for (finished, moved) in finished.iter().zip(moved) {
            if !moved {
                tracing::warn!(delivery = finished.delivery.id, destination = %finished.delivery.destination, "the claim lapsed before the attempt was recorded; another replica may repeat it");
            }
        }
        Ok(())
    }

    /// Fans new events out, then claims up to `limit` due deliveries.
    async fn claim(&self, limit: i64) -> Result<Vec<Delivery>> {
        self.start().await?;
        let now = self.clock.now().await?;
        let route = |topic: &str| -> Vec<Route> {
            // A topic no event is named by (written by a newer version) goes nowhere.
            let Some(event) = Event::parse(topic) else {
                return Vec::new();
            };
            self.notifiers
                .iter()
                .flat_map(|n| n.routes(event))
                .collect()
        };
        while self.store.fan_out(now, FAN_OUT_BATCH, &route).await? as i64 == FAN_OUT_BATCH {}
        Ok(self
            .store
            .claim_deliveries(now, &self.leases(now), &self.shares.free(), limit)
            .await?)
    }

    /// How long a claim at `now` holds each kind's deliveries: that kind's longest attempt plus
    /// [`LEASE_MARGIN`], so a slow kind does not hold up another's retries after a replica dies.
    /// A kind no notifier takes any more is given up at once, so its claim needs only the margin.
    fn leases(&self, now: Millis) -> Leases {
        Leases {
            until: self
                .notifiers
                .iter()
                .map(|n| (n.kind(), now + millis(n.longest_attempt() + LEASE_MARGIN)))
                .collect(),
            otherwise: now + millis(LEASE_MARGIN),
        }
    }

    /// Makes one attempt at `delivery` and says what follows it, to be recorded.
    async fn attempt(&self, delivery: Delivery, stopping: &Stopping) -> Result<(Finished, Step)> {
        let notifier = self.notifiers.iter().find(|n| n.kind() == delivery.kind);
        let address = notifier.and_then(|n| n.address_sha256(&delivery.destination));
        let started = Instant::now();
        let answer = match (notifier, &address) {
            // Each kind bounds its own attempts; this is the backstop that keeps one that does
            // not from holding its share past its lease.
            (Some(notifier), Some(_)) => {
                let budget = notifier.longest_attempt();
                tokio::time::timeout(budget, notifier.deliver(&delivery, stopping))
                    .await
                    .unwrap_or_else(|_| Answer {
                        status: None,
                        error: Some(format!("no answer within {}s", budget.as_secs())),
                        verdict: Verdict::Retry { after: None },
                    })
            }
            // Removed from the config since: nobody to deliver to.
            _ => Answer {
                status: None,
                error: Some(format!(
                    "{} {} is no longer configured",
                    delivery.kind, delivery.destination
                )),
                verdict: Verdict::Retry { after: None },
            },
        };
        let attempt = Attempted {
            at: self.clock.now().await?,
            status: answer.status,
            latency_ms: i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX),
            error: answer.error.clone(),
        };
        let (next, step) = match (&answer.verdict, address) {
            (Verdict::Delivered, _) => (Next::Delivered, Step::Delivered),
            // No longer configured: there is nobody left to retry for.
            (_, None) => (Next::GiveUp, Step::GaveUp),
            // Retrying cannot help.
            (Verdict::GiveUp, Some(_)) => (Next::GiveUp, Step::GaveUp),
            // Nothing failed: due again at once, for whichever replica claims it first.
            (Verdict::Stopped, Some(_)) => (Next::RetryAt(attempt.at), Step::Retry),
            (Verdict::Disable, Some(address_sha256)) => (
                Next::Disable {
                    reason: answer.error.clone().unwrap_or_else(|| "410 Gone".into()),
                    address_sha256,
                },
                Step::Disabled,
            ),
            (Verdict::Retry { after }, Some(_)) => {
                let wait = self.wait_before(delivery.attempt, *after);
                let at = attempt.at.saturating_add(millis(wait));
                if at > delivery.give_up_at {
                    (Next::GiveUp, Step::GaveUp)
                } else {
                    (Next::RetryAt(at), Step::Retry)
                }
            }
        };
        let audit = self.audit(&delivery, &attempt, &next);
        match &next {
            Next::GiveUp => {
                tracing::warn!(delivery = delivery.id, request_id = %delivery.request_id, kind = %delivery.kind, destination = %delivery.destination, attempts = delivery.attempt, error = ?attempt.error, "delivery given up")
            }
            Next::Disable { .. } => {
                tracing::warn!(kind = %delivery.kind, destination = %delivery.destination, "the receiver asked to be switched off; its deliveries stop")
            }
            Next::RetryAt(at) => {
                tracing::info!(delivery = delivery.id, destination = %delivery.destination, status = ?attempt.status, error = ?attempt.error, retry_at = %crate::domain::rfc3339(*at), "delivery failed; will retry")
            }
            Next::Delivered => {
                tracing::debug!(delivery = delivery.id, destination = %delivery.destination, "delivered")
            }
        }
        let finished = Finished {
            delivery,
            attempt,
            next,
            audit,
        };
        Ok((finished, step))
    }

    /// How long to wait after failed attempt number `attempt`: exponentially longer (with jitter)
    /// from [`FIRST_RETRY`], and at least what the receiver asked for.
    fn wait_before(&self, attempt: i64, asked: Option<Duration>) -> Duration {
        let skip = usize::try_from(attempt.max(1) - 1).unwrap_or(usize::MAX);
        let backoff = crate::retry::backoff(FIRST_RETRY, LONGEST_WAIT)
            .nth(skip.min(64))
            .unwrap_or(LONGEST_WAIT);
        backoff.max(asked.unwrap_or_default().min(LONGEST_WAIT))
    }

    /// The audit event a give-up or a switch-off is recorded with.
    fn audit(
        &self,
        delivery: &Delivery,
        attempt: &Attempted,
        next: &Next,
    ) -> Option<(String, AuditEntry)> {
        match next {
            Next::GiveUp => Some((
                delivery.request_id.clone(),
                AuditEntry::system(
                    AuditKind::DeliveryGivenUp,
                    json!({
                        "kind": delivery.kind,
                        "destination": delivery.destination,
                        "event": delivery.event,
                        "version": delivery.version,
                        "attempts": delivery.attempt,
                        "last_status": attempt.status,
                        "last_error": attempt.error,
                    }),
                ),
            )),
            Next::Disable { reason, .. } => Some((
                format!("{}:{}", delivery.kind, delivery.destination),
                AuditEntry::system(
                    AuditKind::DestinationDisabled,
                    json!({
                        "kind": delivery.kind,
                        "destination": delivery.destination,
                        "reason": reason,
                        "status": attempt.status,
                    }),
                ),
            )),
            Next::Delivered | Next::RetryAt(_) => None,
        }
    }
}

/// Waits between failed claims (the database is unreachable): short at first, then longer.
fn trouble_backoff() -> impl Iterator<Item = Duration> {
    crate::retry::backoff(Duration::from_millis(100), Duration::from_secs(10))
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX / 4)
}
