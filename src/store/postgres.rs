//! Postgres: for several replicas. Claims use `FOR UPDATE SKIP LOCKED`, and every committed change
//! is announced with NOTIFY (after its commit) so waiters on any replica wake at once.

use std::sync::Arc;
use std::time::Duration;

use sqlx::Row;
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use tokio::task::JoinHandle;

use super::sql::{REQUEST_COLUMNS, placeholders};
use super::*;
use crate::domain::{GroupApproval, GroupStatus};

const CHANNEL: &str = "hoop_changes";

pub struct PostgresStore {
    pool: PgPool,
    changes: Arc<ChangeHub>,
    audit_key: Option<AuditKey>,
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
        let listener = tokio::spawn(forward_notifications(pool.clone(), changes.clone()));
        Ok(PostgresStore {
            pool,
            changes,
            audit_key,
            listener,
        })
    }

    async fn run_migrations(&self) -> StoreResult<()> {
        sqlx::migrate!("./migrations/postgres")
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Database(e.into()))
    }

    /// Wakes waiters on other replicas with one NOTIFY per change, sent after the commit: NOTIFY
    /// inside a transaction takes a cluster-wide lock from pre-commit to commit.
    async fn announce(&self, changes: &[(&str, Option<Status>)]) -> StoreResult<()> {
        let payloads: Vec<String> = changes
            .iter()
            .map(|(id, status)| match status {
                Some(status) => format!("{id} {status}"),
                None => id.to_string(),
            })
            .collect();
        sqlx::query("select pg_notify($1, payload) from unnest($2::text[]) as payload")
            .bind(CHANNEL)
            .bind(payloads)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

impl PostgresStore {
    /// The database's clock, not this replica's: replicas whose clocks drift apart still agree
    /// on every deadline and lease.
    async fn clock(&self, clock: &crate::service::Clock) -> StoreResult<Millis> {
        let now: i64 = sqlx::query_scalar(
            "select (extract(epoch from clock_timestamp()) * 1000)::bigint + $1",
        )
        .bind(clock.offset())
        .fetch_one(&self.pool)
        .await?;
        Ok(now)
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// Relays NOTIFYs from every replica to this one's waiters. Waiters also poll, so a gap while
/// reconnecting delays a wake-up but loses nothing.
async fn forward_notifications(pool: PgPool, changes: Arc<ChangeHub>) {
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(listener) => listener,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for changes; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(e) = listener.listen(CHANNEL).await {
            tracing::warn!(error = %e, "cannot listen for changes; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        loop {
            match listener.recv().await {
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
    decision_time = "greatest($12, (extract(epoch from clock_timestamp()) * 1000)::bigint)",
    sweep_begin = "begin"
);
