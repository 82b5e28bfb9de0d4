//! Runs one approved command against its connection target: SQL through a fresh database
//! connection, or a program with the command on its stdin.

mod command;
mod sql;

use chrono::SecondsFormat;

use crate::config::{ConnectionTarget, ConnectionType};
use crate::domain::ExecutionResult;

/// Runs `command` (the exact approved text) against `target`. Never panics; every failure (can't
/// connect, wrong password, unknown table, timeout, program not found) comes back as an
/// `ExecutionResult` with `error: Some(<the database's or OS's own message>)`.
pub async fn execute(target: &ConnectionTarget, command: &str) -> ExecutionResult {
    let started_at = now();
    // A task of its own turns a panic deep in a driver into an error result instead of taking the
    // agent down; the guard cancels the task (and so kills a running program) if we are dropped.
    let task = tokio::spawn(run(target.clone(), command.to_string()));
    let _guard = AbortOnDrop(task.abort_handle());
    let mut result = match task.await {
        Ok(result) => result,
        Err(e) => ExecutionResult {
            error: Some(format!("the executor failed: {}", panic_message(e))),
            ..ExecutionResult::default()
        },
    };
    result.started_at = Some(started_at);
    result.finished_at = Some(now());
    result
}

async fn run(target: ConnectionTarget, command: String) -> ExecutionResult {
    match target.kind {
        ConnectionType::Command => command::run(&target, &command).await,
        ConnectionType::Postgres => sql::run::<sqlx::Postgres>(&target, &command).await,
        ConnectionType::Mysql => sql::run::<sqlx::MySql>(&target, &command).await,
        ConnectionType::Sqlite => sql::run::<sqlx::Sqlite>(&target, &command).await,
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn panic_message(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panicked".to_string()),
        Err(e) => e.to_string(),
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A readable duration for messages: `30s`, `1m 30s`, `500ms`.
fn human(d: std::time::Duration) -> String {
    humantime::format_duration(d).to_string()
}
