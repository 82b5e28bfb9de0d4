//! SQLite: the embedded default. One file in WAL mode; every write transaction starts with a write,
//! so concurrent writers queue on SQLite's lock (busy timeout) instead of failing on a stale snapshot.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::group_commit::{Committer, GroupCommit, Outcome, Write};
use super::sql::{
    DestinationsSeen, REQUEST_COLUMNS, REQUEST_WITH_GROUPS, json_array, placeholders, rows,
};
use super::token_cache::TokenCache;
use super::*;
use crate::domain::{GroupApproval, GroupStatus};

/// Pooled connections. Writes go through the one group-commit writer; these serve reads, sweeps
/// and claims. Few, because each one's page cache starts cold after every commit.
const READERS: u32 = 4;

pub struct SqliteStore {
    pool: SqlitePool,
    changes: Arc<ChangeHub>,
    audit_key: Option<AuditKey>,
    destinations: Arc<DestinationsSeen>,
    writes: GroupCommit,
    tokens: TokenCache,
    checkpoints: JoinHandle<()>,
}

impl SqliteStore {
    /// Opens (creating if missing) the database file named by a `sqlite://path` URL.
    pub async fn connect(
        url: &str,
        changes: Arc<ChangeHub>,
        audit_key: Option<AuditKey>,
    ) -> Result<SqliteStore, sqlx::Error> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            // No commit copies the log back into the database file itself (which would hold up
            // every write queued behind it): `checkpoints` does, beside the writer.
            .pragma("wal_autocheckpoint", "0");
        let pool = SqlitePoolOptions::new()
            .max_connections(READERS)
            .connect_with(options)
            .await?;
        let destinations = Arc::new(DestinationsSeen::default());
        Ok(SqliteStore {
            writes: Writer::start(&pool, &changes, &audit_key, &destinations),
            tokens: TokenCache::default(),
            checkpoints: tokio::spawn(checkpoints(pool.clone())),
            pool,
            changes,
            audit_key,
            destinations,
        })
    }

    async fn run_migrations(&self) -> StoreResult<()> {
        sqlx::migrate!("./migrations/sqlite")
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Database(e.into()))
    }

    /// SQLite has a single process, so its clock is this one's.
    async fn clock(&self, clock: &crate::domain::Clock) -> StoreResult<Millis> {
        Ok(clock.now())
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.checkpoints.abort();
    }
}

/// How often the write-ahead log is copied back into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// Copies the write-ahead log into the database file once a second, without waiting for or
/// blocking writers (a passive checkpoint), so the log stays short and no commit pays for it.
/// (SQLite also checkpoints when the last connection to the file closes.)
async fn checkpoints(pool: SqlitePool) {
    loop {
        tokio::time::sleep(CHECKPOINT_EVERY).await;
        if let Err(e) = sqlx::query("pragma wal_checkpoint(passive)")
            .execute(&pool)
            .await
        {
            tracing::warn!(error = %e, "cannot checkpoint the SQLite write-ahead log; retrying");
        }
    }
}

/// Nothing to send: waiters in this process were told already, and other processes on the same
/// file find the change through their poll.
fn announce(_pool: &SqlitePool, _changes: Vec<(String, Option<Status>)>) {}

/// Nothing to send either: a server on the same file trusts what it cached for a second at most.
async fn announce_revocation(_pool: &SqlitePool) {}

// Write transactions take the write lock up front, so two sweeps never read the same rows to move
// and no writer fails on a stale snapshot.
sql_store!(
    SqliteStore,
    sqlx::Sqlite,
    claim_lock = "",
    json_rows = "(select value, key from jsonb_each($1) limit $2) as c",
    decision_time = "cast(c.value ->> 'before_deadline' as bigint)",
    write_begin = "begin immediate"
);

delivery_store!(
    SqliteStore,
    sqlx::Sqlite,
    claim_lock = "",
    // One writer at a time on SQLite anyway (`begin immediate`).
    fan_out_lock = "select 1",
    json_rows = "(select value, key from jsonb_each($1) limit $2) as c",
    write_begin = "begin immediate"
);

account_store!(SqliteStore, write_begin = "begin immediate");

signature_store!(SqliteStore);
session_store!(SqliteStore);
