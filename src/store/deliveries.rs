//! Storage of deliveries: what each destination (a webhook endpoint, a Slack workspace, later a
//! Teams conversation) is to be told of each outbox event, how each attempt went, which
//! destinations their receivers switched off, and where chat messages were posted.
//!
//! The SQL is written once, as a macro instantiated per backend next to `sql_store!` (see
//! `sql.rs` for why a macro). Claims take a lease rather than holding a transaction open across
//! the network call: a replica killed mid-delivery leaves the delivery to whoever claims it once
//! the lease has passed.

use async_trait::async_trait;

use super::{AuditEntry, StoreResult};
use crate::domain::Millis;

/// How many due deliveries a claim looks at for each it may take: enough that a destination with
/// a backlog at the front leaves room for the others' in the same claim, most of the time (and
/// once its share is taken it is not looked at, so in the next).
pub(super) const LOOKED_AT_PER_CLAIMED: i64 = 4;

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Not delivered yet: due at its next attempt time, or being delivered under a lease.
    Pending,
    Delivered,
    /// Retried until its destination's `give_up_after` ran out, or never possible (its snapshot
    /// cannot be read).
    GivenUp,
    /// Its destination was switched off by its receiver before it went out.
    Dropped,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::GivenUp => "given_up",
            DeliveryState::Dropped => "dropped",
        }
    }

    pub fn parse(s: &str) -> Option<DeliveryState> {
        [
            DeliveryState::Pending,
            DeliveryState::Delivered,
            DeliveryState::GivenUp,
            DeliveryState::Dropped,
        ]
        .into_iter()
        .find(|state| state.as_str() == s)
    }
}

/// One destination an event is routed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The kind of destination: `webhook`, `slack` (later `teams`).
    pub kind: &'static str,
    /// Its name within the kind (a webhook's configured name; `workspace` for Slack).
    pub destination: String,
    /// The SHA-256 of where it is sent: a destination its receiver switched off at this address
    /// gets nothing more until it points elsewhere.
    pub address_sha256: String,
    /// How long it is retried before it is given up.
    pub give_up_after: Millis,
}

/// A delivery claimed for one attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub id: i64,
    pub outbox_id: i64,
    pub request_id: String,
    pub kind: String,
    pub destination: String,
    /// The outbox topic: `access_request.approved`, …
    pub event: String,
    /// The request's version right after the change the event announces.
    pub version: i64,
    /// The outbox entry's snapshot as stored: the request as it was right after the change (see
    /// [`Delivery::request`]).
    pub payload: String,
    /// When the change was committed.
    pub event_at: Millis,
    /// This attempt's number, from 1.
    pub attempt: i64,
    pub give_up_at: Millis,
    /// The claim's lease; the outcome is recorded only while the delivery still holds it.
    pub lease_until: Millis,
}

impl Delivery {
    /// The request as the event left it; the error says why the snapshot cannot be read.
    pub fn request(&self) -> Result<crate::domain::AccessRequest, String> {
        super::snapshot::read(&self.payload)
    }
}

/// Until when a claim holds its deliveries, by their kind.
#[derive(Debug, Clone, PartialEq)]
pub struct Leases {
    /// Each kind's lease (its longest attempt, and a margin to record it).
    pub until: Vec<(&'static str, Millis)>,
    /// The lease of a delivery of any other kind.
    pub otherwise: Millis,
}

/// How many deliveries of each destination one claim may take: its share of the attempts in
/// flight on the claiming replica, less those it has under way.
#[derive(Debug, Clone, PartialEq)]
pub struct Shares {
    /// A destination's share: the most attempts it may have in flight at once.
    pub each: i64,
    /// The destinations with attempts under way: (kind, destination, how many).
    pub busy: Vec<(String, String, i64)>,
}

impl Shares {
    /// Every destination's whole share free.
    pub fn all_free(each: i64) -> Shares {
        Shares {
            each,
            busy: Vec::new(),
        }
    }
}

/// What became of one attempt at a delivery.
#[derive(Debug, Clone)]
pub struct Finished {
    pub delivery: Delivery,
    pub attempt: Attempted,
    pub next: Next,
    /// Recorded with the outcome, in its transaction: `(subject id, event)`.
    pub audit: Option<(String, AuditEntry)>,
}

/// One attempt's result, as `delivery_attempt` keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempted {
    pub at: Millis,
    /// The receiver's HTTP status (or the chat API's), when it answered.
    pub status: Option<i64>,
    pub latency_ms: i64,
    pub error: Option<String>,
}

/// What a delivery does after an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    Delivered,
    RetryAt(Millis),
    GiveUp,
    /// The receiver asked to be switched off: this and every other pending delivery to the
    /// destination is dropped, and no more are routed to the address (its SHA-256).
    Disable {
        reason: String,
        address_sha256: String,
    },
}

/// A delivery as the request's API JSON shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryRecord {
    pub id: i64,
    pub request_id: String,
    pub kind: String,
    pub destination: String,
    pub event: String,
    pub version: i64,
    pub state: DeliveryState,
    pub attempts: i64,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub delivered_at: Option<Millis>,
    pub next_attempt_at: Option<Millis>,
    /// When it was routed: right after the change it announces.
    pub created_at: Millis,
}

/// One recorded attempt (a test ping has no delivery and no request).
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRecord {
    pub id: i64,
    pub delivery_id: Option<i64>,
    pub kind: String,
    pub destination: String,
    pub request_id: Option<String>,
    pub event: String,
    pub attempt: i64,
    pub attempted: Attempted,
}

/// How a destination's deliveries stand, and whether its receiver switched it off.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DestinationStats {
    pub pending: i64,
    pub delivered: i64,
    pub given_up: i64,
    pub dropped: i64,
    /// When and why it was switched off, at the address given.
    pub disabled: Option<(Millis, String)>,
}

/// Where a message about a request was posted, so a later update can edit it from any replica.
#[derive(Debug, Clone, PartialEq)]
pub struct PostedMessage {
    pub kind: String,
    pub destination: String,
    pub request_id: String,
    /// The destination's own ids for the message (a Slack channel and ts, a Teams activity id).
    pub external: serde_json::Value,
    /// The request version the message shows.
    pub version: i64,
    pub posted_at: Millis,
    pub updated_at: Millis,
}

/// Which destinations an outbox event goes to, by its topic.
pub type Router<'a> = &'a (dyn Fn(&str) -> Vec<Route> + Send + Sync);

#[async_trait]
pub trait Deliveries: Send + Sync {
    /// Fans up to `limit` outbox events not yet fanned out into one pending delivery per route
    /// (of the destinations started before the event, see `start_destinations`), due at once,
    /// and marks them fanned out; returns how many events. One replica at a time
    /// (a lock), so deliveries are created once and in outbox order.
    async fn fan_out(&self, now: Millis, limit: i64, route: Router<'_>) -> StoreResult<usize>;
    /// Records `destinations` (kind, name) as configured from the newest outbox event on, unless
    /// they already are: each receives the events after that, never the history before it.
    async fn start_destinations(&self, destinations: &[(&str, &str)]) -> StoreResult<()>;
    /// Claims up to `limit` due deliveries, each until its kind's lease, counting the attempt,
    /// oldest due first, and of each destination no more than its free share (so a destination
    /// with a backlog cannot take every claim). Never two for one request and destination at
    /// once, and never one while an earlier event of its request to its destination is still
    /// pending, so a later state does not overtake an earlier one. Replicas claiming at once get
    /// different deliveries.
    async fn claim_deliveries(
        &self,
        now: Millis,
        leases: &Leases,
        shares: &Shares,
        limit: i64,
    ) -> StoreResult<Vec<Delivery>>;
    /// Records attempts and what follows each, with their audit events, in one transaction; a
    /// delivery moves only while its claim still holds its lease (a slow replica whose lease
    /// lapsed records its attempt and nothing more). Returns whether each moved.
    async fn finish_deliveries(&self, finished: &[Finished]) -> StoreResult<Vec<bool>>;
    /// Hands claims back (delivery id, lease) whose attempts were dropped unfinished: each
    /// pending delivery still under that claim is free to claim again at once. The attempt
    /// stays counted. Returns how many were handed back.
    async fn hand_back(&self, claims: &[(i64, Millis)]) -> StoreResult<u64>;
    /// Records an attempt that belongs to no delivery (a test ping).
    async fn record_attempt(
        &self,
        kind: &str,
        destination: &str,
        event: &str,
        attempted: &Attempted,
    ) -> StoreResult<()>;
    /// The deliveries of these requests, oldest first.
    async fn deliveries_of(&self, request_ids: &[&str]) -> StoreResult<Vec<DeliveryRecord>>;
    /// A destination's deliveries, newest first, below delivery id `before` when given.
    async fn deliveries_to(
        &self,
        kind: &str,
        destination: &str,
        before: Option<i64>,
        limit: i64,
    ) -> StoreResult<Vec<DeliveryRecord>>;
    /// A destination's attempts, newest first, below attempt id `before` when given.
    async fn attempts(
        &self,
        kind: &str,
        destination: &str,
        before: Option<i64>,
        limit: i64,
    ) -> StoreResult<Vec<AttemptRecord>>;
    /// How the deliveries to a destination stand; `address_sha256` says where it points now.
    async fn destination_stats(
        &self,
        kind: &str,
        destination: &str,
        address_sha256: &str,
    ) -> StoreResult<DestinationStats>;
    /// Records (or moves on) where a message about a request was posted.
    async fn save_posted(&self, message: &PostedMessage) -> StoreResult<()>;
    async fn posted(
        &self,
        kind: &str,
        destination: &str,
        request_id: &str,
    ) -> StoreResult<Option<PostedMessage>>;
    /// Every message of `kind` posted about a request (each copy of a chat card), oldest first.
    async fn posted_about(&self, kind: &str, request_id: &str) -> StoreResult<Vec<PostedMessage>>;
    /// Every chat message about these requests, of any kind, oldest first.
    async fn posted_for(&self, request_ids: &[&str]) -> StoreResult<Vec<PostedMessage>>;
}

/// One delivery row of a fan-out, as its JSON array carries it.
#[derive(serde::Serialize)]
pub(super) struct NewDeliveryRow<'a> {
    pub outbox_id: i64,
    pub request_id: &'a str,
    pub kind: &'a str,
    pub destination: &'a str,
    pub address_sha256: &'a str,
    pub event: &'a str,
    pub version: i64,
    pub give_up_at: Millis,
}

/// One finished attempt, as `finish_deliveries`' JSON array carries it.
#[derive(serde::Serialize)]
pub(super) struct FinishedRow<'a> {
    pub id: i64,
    pub lease_until: Millis,
    pub kind: &'a str,
    pub destination: &'a str,
    pub request_id: &'a str,
    pub event: &'a str,
    pub attempt: i64,
    pub at: Millis,
    pub status: Option<i64>,
    pub latency_ms: i64,
    pub error: Option<&'a str>,
    pub state: &'static str,
    pub next_attempt_at: Option<Millis>,
    pub delivered_at: Option<Millis>,
}

macro_rules! delivery_store {
    (
        $store:ty,
        $db:ty,
        claim_lock = $claim_lock:expr,
        fan_out_lock = $fan_out_lock:literal,
        json_rows = $json_rows:literal,
        write_begin = $write_begin:expr
    ) => {
        #[async_trait::async_trait]
        impl $crate::store::Deliveries for $store {
            async fn fan_out(
                &self,
                now: Millis,
                limit: i64,
                route: $crate::store::Router<'_>,
            ) -> StoreResult<usize> {
                // Most calls find nothing: a plain read says so without taking any lock.
                let waiting = sqlx::query("select id from outbox where delivered_at is null limit 1")
                    .fetch_optional(&self.pool)
                    .await?;
                if waiting.is_none() {
                    return Ok(0);
                }
                let mut tx = self.pool.begin_with($write_begin).await?;
                sqlx::query($fan_out_lock).execute(&mut *tx).await?;
                let events = sqlx::query(
                    "select id, request_id, topic, payload from outbox \
                     where delivered_at is null order by id limit $1",
                )
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?;
                if events.is_empty() {
                    return Ok(0);
                }
                let mut ids = Vec::with_capacity(events.len());
                let mut fanned = Vec::new();
                for row in &events {
                    let id: i64 = row.try_get("id")?;
                    let request_id: String = row.try_get("request_id")?;
                    let topic: String = row.try_get("topic")?;
                    ids.push(id);
                    // Written while no destination existed: it goes to none.
                    let Some(payload) = row.try_get::<Option<String>, _>("payload")? else {
                        continue;
                    };
                    let routes = route(&topic);
                    if routes.is_empty() {
                        continue;
                    }
                    let version = serde_json::from_str::<serde_json::Value>(&payload)
                        .ok()
                        .and_then(|p| p["version"].as_i64())
                        .unwrap_or(0);
                    fanned.push((id, request_id, topic, version, routes));
                }
                let rows: Vec<_> = fanned
                    .iter()
                    .flat_map(|(id, request_id, topic, version, routes)| {
                        routes.iter().map(move |r| $crate::store::deliveries::NewDeliveryRow {
                            outbox_id: *id,
                            request_id,
                            kind: r.kind,
                            destination: &r.destination,
                            address_sha256: &r.address_sha256,
                            event: topic,
                            version: *version,
                            give_up_at: now.saturating_add(r.give_up_after),
                        })
                    })
                    .collect();
                if !rows.is_empty() {
                    // Destinations their receiver switched off at this address get nothing.
                    sqlx::query(concat!(
                        "insert into delivery (outbox_id, request_id, kind, destination, event, \
                         version, state, attempts, created_at, next_attempt_at, give_up_at) \
                         select cast(c.value ->> 'outbox_id' as bigint), c.value ->> 'request_id', \
                         c.value ->> 'kind', c.value ->> 'destination', c.value ->> 'event', \
                         cast(c.value ->> 'version' as bigint), 'pending', 0, $3, $3, \
                         cast(c.value ->> 'give_up_at' as bigint) from ", $json_rows, " \
                         where not exists (select 1 from destination_disabled x \
                           where x.kind = c.value ->> 'kind' \
                           and x.destination = c.value ->> 'destination' \
                           and x.address_sha256 = c.value ->> 'address_sha256') \
                         and exists (select 1 from destination d \
                           where d.kind = c.value ->> 'kind' \
                           and d.destination = c.value ->> 'destination' \
                           and d.since_outbox_id < cast(c.value ->> 'outbox_id' as bigint)) \
                         order by c.key"
                    ))
                    .bind($crate::store::sql::json_array(&rows))
                    .bind(rows.len() as i64)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
                let marked = ids.iter().map(|id| serde_json::json!({ "id": id })).collect::<Vec<_>>();
                sqlx::query(concat!(
                    "update outbox set delivered_at = $3 where id in \
                     (select cast(c.value ->> 'id' as bigint) from ", $json_rows, ")"
                ))
                .bind($crate::store::sql::json_array(&marked))
                .bind(marked.len() as i64)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(ids.len())
            }

            async fn start_destinations(&self, destinations: &[(&str, &str)]) -> StoreResult<()> {
                if destinations.is_empty() {
                    return Ok(());
                }
                let mut tx = self.pool.begin_with($write_begin).await?;
                for (kind, destination) in destinations {
                    // `where true`: without it SQLite would read `on conflict` as the select's.
                    sqlx::query(
                        "insert into destination (kind, destination, since_outbox_id) \
                         select $1, $2, coalesce(max(id), 0) from outbox \
                         where true on conflict (kind, destination) do nothing",
                    )
                    .bind(kind)
                    .bind(destination)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                self.destinations.see();
                Ok(())
            }

            async fn claim_deliveries(
                &self,
                now: Millis,
                leases: &$crate::store::Leases,
                shares: &$crate::store::Shares,
                limit: i64,
            ) -> StoreResult<Vec<$crate::store::Delivery>> {
                let probe = sqlx::query(
                    "select id from delivery where state = 'pending' and next_attempt_at <= $1 \
                     and (lease_until is null or lease_until <= $1) limit 1",
                )
                .bind(now)
                .fetch_optional(&self.pool)
                .await?;
                if probe.is_none() {
                    return Ok(Vec::new());
                }
                // $1 now, $2 the lease of other kinds, $3 the limit, $4 how many due deliveries
                // are looked at, $5 a destination's whole share; then each kind's lease
                // (`case kind when $6 then $7 … else $2 end`), then the busy destinations.
                let mut next = 6;
                let mut placeholder = || {
                    next += 1;
                    format!("${}", next - 1)
                };
                let mut lease_until = String::new();
                for _ in &leases.until {
                    lease_until += &format!(" when {} then {}", placeholder(), placeholder());
                }
                let lease_until = match lease_until.is_empty() {
                    true => "$2".to_string(),
                    false => format!("case kind{lease_until} else $2 end"),
                };
                // A destination with no share left is not looked at; one with part of it left
                // is claimed up to that part (`case when kind = … and destination = … then …`).
                let mut unlooked = String::new();
                let mut share = String::new();
                for (_, _, busy) in &shares.busy {
                    let (kind, destination) = (placeholder(), placeholder());
                    if *busy >= shares.each {
                        unlooked += &format!(" and not (d.kind = {kind} and d.destination = {destination})");
                    } else {
                        share += &format!(
                            " when ranked.kind = {kind} and ranked.destination = {destination} then {}",
                            placeholder()
                        );
                    }
                }
                let share = match share.is_empty() {
                    true => "$5".to_string(),
                    false => format!("case{share} else $5 end"),
                };
                // Each destination's due deliveries are ranked oldest first, and taken up to its
                // share. (On Postgres the rows looked at are locked first, in a query of their
                // own: a window and a row lock cannot share one.)
                let claim = format!(
                    "update delivery set lease_until = {lease_until}, attempts = attempts + 1 \
                     where id in (select ranked.id from \
                        (select c.id, c.kind, c.destination, c.next_attempt_at, row_number() over \
                            (partition by c.kind, c.destination order by c.next_attempt_at, c.id) as place \
                         from (select d.id, d.kind, d.destination, d.next_attempt_at from delivery d \
                            where d.state = 'pending' and d.next_attempt_at <= $1 \
                            and (d.lease_until is null or d.lease_until <= $1){unlooked} \
                            and not exists (select 1 from delivery e where e.request_id = d.request_id \
                                and e.kind = d.kind and e.destination = d.destination \
                                and e.state = 'pending' and e.outbox_id < d.outbox_id) \
                            order by d.next_attempt_at, d.id limit $4{}) c) ranked \
                        where ranked.place <= {share} \
                        order by ranked.next_attempt_at, ranked.id limit $3) \
                     returning id, outbox_id, request_id, kind, destination, event, version, \
                        attempts, give_up_at, lease_until",
                    $claim_lock
                );
                let mut tx = self.pool.begin_with($write_begin).await?;
                let mut claim = sqlx::query(sqlx::AssertSqlSafe(claim))
                    .bind(now)
                    .bind(leases.otherwise)
                    .bind(limit)
                    .bind(limit.saturating_mul($crate::store::deliveries::LOOKED_AT_PER_CLAIMED))
                    .bind(shares.each);
                for (kind, until) in &leases.until {
                    claim = claim.bind(*kind).bind(*until);
                }
                for (kind, destination, busy) in &shares.busy {
                    claim = claim.bind(kind).bind(destination);
                    if *busy < shares.each {
                        claim = claim.bind(shares.each - busy);
                    }
                }
                let claimed = claim.fetch_all(&mut *tx).await?;
                if claimed.is_empty() {
                    return Ok(Vec::new());
                }
                let outbox_ids: Vec<i64> =
                    claimed.iter().map(|row| row.try_get("outbox_id")).collect::<Result<_, _>>()?;
                let sql = format!(
                    "select id, payload, created_at from outbox where id in ({})",
                    $crate::store::sql::placeholders(1, outbox_ids.len())
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for id in &outbox_ids {
                    query = query.bind(id);
                }
                let mut events = std::collections::HashMap::new();
                for row in query.fetch_all(&mut *tx).await? {
                    // Handed over as stored: one that cannot be read is its notifier's to give
                    // up, and must not keep every other delivery from being claimed.
                    let payload: String = row.try_get("payload")?;
                    events.insert(row.try_get::<i64, _>("id")?, (payload, row.try_get::<i64, _>("created_at")?));
                }
                tx.commit().await?;
                let mut deliveries = claimed
                    .iter()
                    .map(|row| {
                        let outbox_id: i64 = row.try_get("outbox_id")?;
                        let (payload, event_at) = events
                            .get(&outbox_id)
                            .cloned()
                            .ok_or_else(|| StoreError::Corrupt(format!("delivery of missing outbox entry {outbox_id}")))?;
                        Ok($crate::store::Delivery {
                            id: row.try_get("id")?,
                            outbox_id,
                            request_id: row.try_get("request_id")?,
                            kind: row.try_get("kind")?,
                            destination: row.try_get("destination")?,
                            event: row.try_get("event")?,
                            version: row.try_get("version")?,
                            payload,
                            event_at,
                            attempt: row.try_get("attempts")?,
                            give_up_at: row.try_get("give_up_at")?,
                            lease_until: row.try_get("lease_until")?,
                        })
                    })
                    .collect::<StoreResult<Vec<_>>>()?;
                deliveries.sort_by_key(|d| d.id);
                Ok(deliveries)
            }

            async fn finish_deliveries(&self, finished: &[$crate::store::Finished]) -> StoreResult<Vec<bool>> {
                use $crate::store::{DeliveryState, Next};
                if finished.is_empty() {
                    return Ok(Vec::new());
                }
                let rows: Vec<_> = finished
                    .iter()
                    .map(|f| {
                        let (state, next_attempt_at, delivered_at) = match &f.next {
                            Next::Delivered => (DeliveryState::Delivered, None, Some(f.attempt.at)),
                            Next::RetryAt(at) => (DeliveryState::Pending, Some(*at), None),
                            Next::GiveUp => (DeliveryState::GivenUp, None, None),
                            Next::Disable { .. } => (DeliveryState::Dropped, None, None),
                        };
                        $crate::store::deliveries::FinishedRow {
                            id: f.delivery.id,
                            lease_until: f.delivery.lease_until,
                            kind: &f.delivery.kind,
                            destination: &f.delivery.destination,
                            request_id: &f.delivery.request_id,
                            event: &f.delivery.event,
                            attempt: f.delivery.attempt,
                            at: f.attempt.at,
                            status: f.attempt.status,
                            latency_ms: f.attempt.latency_ms,
                            error: f.attempt.error.as_deref(),
                            state: state.as_str(),
                            next_attempt_at,
                            delivered_at,
                        }
                    })
                    .collect();
                let json = $crate::store::sql::json_array(&rows);
                let mut tx = self.pool.begin_with($write_begin).await?;
                // Every attempt, then every delivery whose claim still holds: one statement each,
                // however many finished together.
                sqlx::query(concat!(
                    "insert into delivery_attempt (delivery_id, kind, destination, request_id, event, \
                     attempt, at, status, latency_ms, error) \
                     select cast(c.value ->> 'id' as bigint), c.value ->> 'kind', \
                     c.value ->> 'destination', c.value ->> 'request_id', c.value ->> 'event', \
                     cast(c.value ->> 'attempt' as bigint), cast(c.value ->> 'at' as bigint), \
                     cast(c.value ->> 'status' as bigint), cast(c.value ->> 'latency_ms' as bigint), \
                     c.value ->> 'error' from ", $json_rows, " order by c.key"
                ))
                .bind(&json)
                .bind(rows.len() as i64)
                .execute(&mut *tx)
                .await?;
                let moved: std::collections::HashSet<i64> = sqlx::query_scalar(concat!(
                    "update delivery set state = c.value ->> 'state', \
                     next_attempt_at = coalesce(cast(c.value ->> 'next_attempt_at' as bigint), delivery.next_attempt_at), \
                     lease_until = null, last_status = cast(c.value ->> 'status' as bigint), \
                     last_error = c.value ->> 'error', \
                     delivered_at = cast(c.value ->> 'delivered_at' as bigint) \
                     from ", $json_rows, " \
                     where delivery.id = cast(c.value ->> 'id' as bigint) \
                     and delivery.lease_until = cast(c.value ->> 'lease_until' as bigint) \
                     and delivery.state = 'pending' returning id"
                ))
                .bind(&json)
                .bind(rows.len() as i64)
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .collect();
                let mut audit = Vec::new();
                for f in finished.iter().filter(|f| moved.contains(&f.delivery.id)) {
                    if let Next::Disable { reason, address_sha256 } = &f.next {
                        let delivery = &f.delivery;
                        sqlx::query(
                            "insert into destination_disabled (kind, destination, address_sha256, \
                             disabled_at, reason) values ($1, $2, $3, $4, $5) on conflict do nothing",
                        )
                        .bind(&delivery.kind)
                        .bind(&delivery.destination)
                        .bind(address_sha256)
                        .bind(f.attempt.at)
                        .bind(reason)
                        .execute(&mut *tx)
                        .await?;
                        sqlx::query(
                            "update delivery set state = 'dropped', lease_until = null, \
                             last_error = $3 where kind = $1 and destination = $2 and state = 'pending'",
                        )
                        .bind(&delivery.kind)
                        .bind(&delivery.destination)
                        .bind(reason)
                        .execute(&mut *tx)
                        .await?;
                    }
                    if let Some((subject, entry)) = &f.audit {
                        audit.push((subject.as_str(), f.attempt.at, entry));
                    }
                }
                // All of the batch's audit events with one bump of the chain's head.
                append_audit_events(&mut tx, self.audit_key.as_ref(), &audit).await?;
                tx.commit().await?;
                Ok(finished.iter().map(|f| moved.contains(&f.delivery.id)).collect())
            }

            async fn hand_back(&self, claims: &[(i64, Millis)]) -> StoreResult<u64> {
                if claims.is_empty() {
                    return Ok(0);
                }
                #[derive(serde::Serialize)]
                struct Claim {
                    id: i64,
                    lease_until: Millis,
                }
                let claims: Vec<Claim> = claims
                    .iter()
                    .map(|(id, lease_until)| Claim { id: *id, lease_until: *lease_until })
                    .collect();
                let handed = sqlx::query(concat!(
                    "update delivery set lease_until = null from ", $json_rows, " \
                     where delivery.id = cast(c.value ->> 'id' as bigint) \
                     and delivery.lease_until = cast(c.value ->> 'lease_until' as bigint) \
                     and delivery.state = 'pending'"
                ))
                .bind($crate::store::sql::json_array(&claims))
                .bind(claims.len() as i64)
                .execute(&self.pool)
                .await?;
                Ok(handed.rows_affected())
            }

            async fn record_attempt(
                &self,
                kind: &str,
                destination: &str,
                event: &str,
                attempted: &$crate::store::Attempted,
            ) -> StoreResult<()> {
                let mut tx = self.pool.begin_with($write_begin).await?;
                insert_attempt(&mut tx, None, kind, destination, None, event, 1, attempted).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn deliveries_of(&self, request_ids: &[&str]) -> StoreResult<Vec<$crate::store::DeliveryRecord>> {
                if request_ids.is_empty() {
                    return Ok(Vec::new());
                }
                let sql = format!(
                    "select {DELIVERY_COLUMNS} from delivery \
                     where request_id in ({}) order by outbox_id, kind, destination",
                    $crate::store::sql::placeholders(1, request_ids.len())
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for id in request_ids {
                    query = query.bind(*id);
                }
                query.fetch_all(&self.pool).await?.iter().map(delivery_record).collect()
            }

            async fn deliveries_to(
                &self,
                kind: &str,
                destination: &str,
                before: Option<i64>,
                limit: i64,
            ) -> StoreResult<Vec<$crate::store::DeliveryRecord>> {
                // Two statements, not `$3 is null or id < $3`, which keeps the planners off the
                // (kind, destination, id) index.
                let rows = match before {
                    Some(before) => {
                        let sql = format!(
                            "select {DELIVERY_COLUMNS} from delivery where kind = $1 and destination = $2 \
                             and id < $3 order by id desc limit $4"
                        );
                        sqlx::query(sqlx::AssertSqlSafe(sql))
                            .bind(kind)
                            .bind(destination)
                            .bind(before)
                            .bind(limit)
                            .fetch_all(&self.pool)
                            .await?
                    }
                    None => {
                        let sql = format!(
                            "select {DELIVERY_COLUMNS} from delivery where kind = $1 and destination = $2 \
                             order by id desc limit $3"
                        );
                        sqlx::query(sqlx::AssertSqlSafe(sql))
                            .bind(kind)
                            .bind(destination)
                            .bind(limit)
                            .fetch_all(&self.pool)
                            .await?
                    }
                };
                rows.iter().map(delivery_record).collect()
            }

            async fn attempts(
                &self,
                kind: &str,
                destination: &str,
                before: Option<i64>,
                limit: i64,
            ) -> StoreResult<Vec<$crate::store::AttemptRecord>> {
                sqlx::query(
                    "select id, delivery_id, kind, destination, request_id, event, attempt, at, \
                     status, latency_ms, error from delivery_attempt \
                     where kind = $1 and destination = $2 and ($3 is null or id < $3) \
                     order by id desc limit $4",
                )
                .bind(kind)
                .bind(destination)
                .bind(before)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(|row| {
                    Ok($crate::store::AttemptRecord {
                        id: row.try_get("id")?,
                        delivery_id: row.try_get("delivery_id")?,
                        kind: row.try_get("kind")?,
                        destination: row.try_get("destination")?,
                        request_id: row.try_get("request_id")?,
                        event: row.try_get("event")?,
                        attempt: row.try_get("attempt")?,
                        attempted: $crate::store::Attempted {
                            at: row.try_get("at")?,
                            status: row.try_get("status")?,
                            latency_ms: row.try_get("latency_ms")?,
                            error: row.try_get("error")?,
                        },
                    })
                })
                .collect()
            }

            async fn destination_stats(
                &self,
                kind: &str,
                destination: &str,
                address_sha256: &str,
            ) -> StoreResult<$crate::store::DestinationStats> {
                let mut stats = $crate::store::DestinationStats::default();
                let counts = sqlx::query(
                    "select state, count(*) as n from delivery where kind = $1 and destination = $2 \
                     group by state",
                )
                .bind(kind)
                .bind(destination)
                .fetch_all(&self.pool)
                .await?;
                for row in &counts {
                    let state: String = row.try_get("state")?;
                    let n: i64 = row.try_get("n")?;
                    match $crate::store::DeliveryState::parse(&state) {
                        Some($crate::store::DeliveryState::Pending) => stats.pending = n,
                        Some($crate::store::DeliveryState::Delivered) => stats.delivered = n,
                        Some($crate::store::DeliveryState::GivenUp) => stats.given_up = n,
                        Some($crate::store::DeliveryState::Dropped) => stats.dropped = n,
                        None => return Err(StoreError::Corrupt(format!("delivery state {state:?}"))),
                    }
                }
                let disabled = sqlx::query(
                    "select disabled_at, reason from destination_disabled \
                     where kind = $1 and destination = $2 and address_sha256 = $3",
                )
                .bind(kind)
                .bind(destination)
                .bind(address_sha256)
                .fetch_optional(&self.pool)
                .await?;
                stats.disabled = disabled
                    .map(|row| Ok::<_, sqlx::Error>((row.try_get("disabled_at")?, row.try_get("reason")?)))
                    .transpose()?;
                Ok(stats)
            }

            async fn save_posted(&self, message: &$crate::store::PostedMessage) -> StoreResult<()> {
                // A message showing an older version never replaces one showing a newer one.
                sqlx::query(
                    "insert into posted_message (kind, destination, request_id, external, version, \
                     posted_at, updated_at) values ($1, $2, $3, $4, $5, $6, $7) \
                     on conflict (kind, destination, request_id) do update set \
                     external = excluded.external, version = excluded.version, \
                     updated_at = excluded.updated_at \
                     where posted_message.version <= excluded.version",
                )
                .bind(&message.kind)
                .bind(&message.destination)
                .bind(&message.request_id)
                .bind(message.external.to_string())
                .bind(message.version)
                .bind(message.posted_at)
                .bind(message.updated_at)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn posted(
                &self,
                kind: &str,
                destination: &str,
                request_id: &str,
            ) -> StoreResult<Option<$crate::store::PostedMessage>> {
                let row = sqlx::query(
                    "select kind, destination, request_id, external, version, posted_at, updated_at \
                     from posted_message where kind = $1 and destination = $2 and request_id = $3",
                )
                .bind(kind)
                .bind(destination)
                .bind(request_id)
                .fetch_optional(&self.pool)
                .await?;
                row.map(|row| posted_message(&row)).transpose()
            }

            async fn posted_for(
                &self,
                request_ids: &[&str],
            ) -> StoreResult<Vec<$crate::store::PostedMessage>> {
                if request_ids.is_empty() {
                    return Ok(Vec::new());
                }
                let sql = format!(
                    "select kind, destination, request_id, external, version, posted_at, updated_at \
                     from posted_message where request_id in ({}) order by posted_at, destination",
                    placeholders(1, request_ids.len())
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for id in request_ids {
                    query = query.bind(*id);
                }
                let rows = query.fetch_all(&self.pool).await?;
                rows.iter().map(posted_message).collect()
            }

            async fn posted_about(
                &self,
                kind: &str,
                request_id: &str,
            ) -> StoreResult<Vec<$crate::store::PostedMessage>> {
                let rows = sqlx::query(
                    "select kind, destination, request_id, external, version, posted_at, updated_at \
                     from posted_message where kind = $1 and request_id = $2 \
                     order by posted_at, destination",
                )
                .bind(kind)
                .bind(request_id)
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(posted_message).collect()
            }
        }

        /// The columns [`delivery_record`] reads.
        const DELIVERY_COLUMNS: &str = "id, request_id, kind, destination, event, version, state, \
            attempts, last_status, last_error, delivered_at, next_attempt_at, created_at";

        fn delivery_record(row: &DbRow) -> StoreResult<$crate::store::DeliveryRecord> {
            let state: String = row.try_get("state")?;
            let state = $crate::store::DeliveryState::parse(&state)
                .ok_or_else(|| StoreError::Corrupt(format!("delivery state {state:?}")))?;
            Ok($crate::store::DeliveryRecord {
                id: row.try_get("id")?,
                request_id: row.try_get("request_id")?,
                kind: row.try_get("kind")?,
                destination: row.try_get("destination")?,
                event: row.try_get("event")?,
                version: row.try_get("version")?,
                attempts: row.try_get("attempts")?,
                last_status: row.try_get("last_status")?,
                last_error: row.try_get("last_error")?,
                delivered_at: row.try_get("delivered_at")?,
                next_attempt_at: (state == $crate::store::DeliveryState::Pending)
                    .then(|| row.try_get("next_attempt_at"))
                    .transpose()?,
                created_at: row.try_get("created_at")?,
                state,
            })
        }

        fn posted_message(row: &DbRow) -> StoreResult<$crate::store::PostedMessage> {
            let external: String = row.try_get("external")?;
            Ok($crate::store::PostedMessage {
                kind: row.try_get("kind")?,
                destination: row.try_get("destination")?,
                request_id: row.try_get("request_id")?,
                external: serde_json::from_str(&external)
                    .map_err(|e| StoreError::Corrupt(format!("posted message ids: {e}")))?,
                version: row.try_get("version")?,
                posted_at: row.try_get("posted_at")?,
                updated_at: row.try_get("updated_at")?,
            })
        }

        /// Inserts one `delivery_attempt` row.
        #[allow(clippy::too_many_arguments)]
        async fn insert_attempt(
            conn: &mut Conn,
            delivery_id: Option<i64>,
            kind: &str,
            destination: &str,
            request_id: Option<&str>,
            event: &str,
            attempt: i64,
            attempted: &$crate::store::Attempted,
        ) -> StoreResult<()> {
            sqlx::query(
                "insert into delivery_attempt (delivery_id, kind, destination, request_id, event, \
                 attempt, at, status, latency_ms, error) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(delivery_id)
            .bind(kind)
            .bind(destination)
            .bind(request_id)
            .bind(event)
            .bind(attempt)
            .bind(attempted.at)
            .bind(attempted.status)
            .bind(attempted.latency_ms)
            .bind(&attempted.error)
            .execute(&mut *conn)
            .await?;
            Ok(())
        }
    };
}
