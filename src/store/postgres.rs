//! Postgres: for several replicas. Claims use `FOR UPDATE SKIP LOCKED`, and every committed change
//! is announced with NOTIFY (after its commit) so waiters on any replica wake at once.

use std::sync::Arc;
use std::time::Duration;

use sqlx::Row;
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use tokio::task::JoinHandle;

use super::group_commit::{Committer, GroupCommit, Outcome, Write};
use super::sql::{
    DestinationsSeen, REQUEST_COLUMNS, REQUEST_WITH_GROUPS, json_array, placeholders, rows,
};
use super::token_cache::TokenCache;
use super::*;
use crate::domain::{GroupApproval, GroupStatus};

const CHANNEL: &str = "hoop_changes";
/// How long a measured difference between the database's clock and this process's is used.
const CLOCK_REMEASURE: Duration = Duration::from_secs(1);
/// Revocations, so every replica forgets the tokens it cached.
const REVOCATIONS: &str = "hoop_revocations";

pub struct PostgresStore {
    pool: PgPool,
    changes: Arc<ChangeHub>,
    audit_key: Option<AuditKey>,
    destinations: Arc<DestinationsSeen>,
    writes: GroupCommit,
    tokens: Arc<TokenCache>,
    /// When the database's clock was last compared with this process's, and how far ahead it
    /// was (ms).
    clock_difference: std::sync::Mutex<Option<(std::time::Instant, Millis)>>,
    listener: JoinHandle<()>,
}

impl PostgresStore {
    pub async fn connect(
        url: &str,
        changes: Arc<ChangeHub>,
        audit_key: Option<AuditKey>,
    ) -> Result<PostgresStore, sqlx::Error> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        let tokens = Arc::new(TokenCache::default());
        let listener = tokio::spawn(forward_notifications(
            pool.clone(),
            changes.clone(),
            tokens.clone(),
        ));
        let destinations = Arc::new(DestinationsSeen::default());
        Ok(PostgresStore {
            writes: Writer::start(&pool, &changes, &audit_key, &destinations),
            tokens,
            clock_difference: std::sync::Mutex::new(None),
            pool,
            changes,
            audit_key,
            destinations,
            listener,
        })
    }

    async fn run_migrations(&self) -> StoreResult<()> {
        sqlx::migrate!("./migrations/postgres")
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Database(e.into()))
    }
}

/// Wakes waiters on other replicas with one NOTIFY per change, sent after the commit (NOTIFY inside
/// a transaction takes a cluster-wide lock from pre-commit to commit) and without holding up the
/// caller: a lost one is made up by each replica's change poll.
fn announce(pool: &PgPool, changes: Vec<(String, Option<Status>)>) {
    let payloads: Vec<String> = changes
        .into_iter()
        .map(|(id, status)| match status {
            Some(status) => format!("{id} {status}"),
            None => id,
        })
        .collect();
    let pool = pool.clone();
    tokio::spawn(async move {
        let sent = sqlx::query("select pg_notify($1, payload) from unnest($2::text[]) as payload")
            .bind(CHANNEL)
            .bind(payloads)
            .execute(&pool)
            .await;
        if let Err(e) = sent {
            tracing::warn!(error = %e, "cannot announce changes to other replicas; their poll will find them");
        }
    });
}

/// Tells every replica that tokens were revoked, after the revocation committed.
async fn announce_revocation(pool: &PgPool) {
    if let Err(e) = sqlx::query("select pg_notify($1, '')")
        .bind(REVOCATIONS)
        .execute(pool)
        .await
    {
        tracing::warn!(error = %e, "cannot tell other replicas of a revocation; they forget cached tokens within {}", humantime::format_duration(super::TOKEN_TTL));
    }
}

impl PostgresStore {
    /// The database's clock, not this replica's: replicas whose clocks drift apart still agree
    /// on every deadline and lease. Read from this process's clock plus the difference last
    /// measured, which is measured again once it is [`CLOCK_REMEASURE`] old, so a busy replica
    /// does not ask the database the time on every call. (Deadlines are checked again by the
    /// database itself as each decision is written.)
    async fn clock(&self, clock: &crate::domain::Clock) -> StoreResult<Millis> {
        if let Some((measured_at, difference)) = *self.clock_difference.lock().expect("clock lock")
            && measured_at.elapsed() < CLOCK_REMEASURE
        {
            return Ok(clock.now() + difference);
        }
        let before = clock.now();
        let now: i64 = sqlx::query_scalar(
            "select (extract(epoch from clock_timestamp()) * 1000)::bigint + $1",
        )
        .bind(clock.offset())
        .fetch_one(&self.pool)
        .await?;
        let after = clock.now();
        // The database read its clock somewhere between the two local readings.
        let difference = now - (before + (after - before) / 2);
        *self.clock_difference.lock().expect("clock lock") =
            Some((std::time::Instant::now(), difference));
        Ok(now)
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// Relays NOTIFYs from every replica to this one's waiters and token cache. Waiters also poll and
/// cached tokens expire, so a gap while reconnecting delays a wake-up but loses nothing.
async fn forward_notifications(pool: PgPool, changes: Arc<ChangeHub>, tokens: Arc<TokenCache>) {
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(listener) => listener,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for changes; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(e) = listener.listen_all([CHANNEL, REVOCATIONS]).await {
            tracing::warn!(error = %e, "cannot listen for changes; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        // A revocation may have gone unheard while not listening.
        tokens.revoked();
        loop {
            match listener.recv().await {
                Ok(note) if note.channel() == REVOCATIONS => tokens.revoked(),
                Ok(note) => {
                    let mut parts = note.payload().splitn(2, ' ');
                    let id = parts.next().unwrap_or_default();
                    let status = parts.next().and_then(Status::parse);
                    changes.publish(id, status);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "change notifications interrupted; reconnecting");
                    break;
                }
            }
        }
    }
}

sql_store!(
    PostgresStore,
    sqlx::Postgres,
    claim_lock = " for update skip locked",
    json_rows = "(select value, key from jsonb_array_elements($1::jsonb) with ordinality as e(value, key) \
                 limit $2) as c",
    decision_time = "greatest(cast(c.value ->> 'before_deadline' as bigint), \
                     (extract(epoch from clock_timestamp()) * 1000)::bigint)",
    write_begin = "begin"
);

delivery_store!(
    PostgresStore,
    sqlx::Postgres,
    claim_lock = " for update skip locked",
    // One replica fans out at a time, so deliveries are created once and in outbox order.
    fan_out_lock = "select pg_advisory_xact_lock(7411001)",
    json_rows = "(select value, key from jsonb_array_elements($1::jsonb) with ordinality as e(value, key) \
                 limit $2) as c",
    write_begin = "begin"
);

account_store!(PostgresStore, write_begin = "begin");

signature_store!(PostgresStore);
session_store!(PostgresStore);
