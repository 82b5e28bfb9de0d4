//! Postgres, MySQL/MariaDB and SQLite connections: the approved text runs as one multi-statement
//! batch on a fresh connection, so the server decides where statements begin and end.
//!
//! Results come back as a stream of rows, each statement closed by a completion carrying its row
//! count, for all three drivers. Completions therefore mark the statement boundaries. Tags such as
//! `UPDATE 1` need the statement's leading keywords, which the server does not report, so the text
//! is split here too, the same way, only to label results: when that split does not line up
//! with what the server ran, results keep their rows and counts under a generic tag.
//!
//! This file holds the entry point and what each database must provide ([`Backend`]). `session`
//! runs one batch on one connection; `postgres`, `mysql` and `sqlite` are the three backends;
//! `cells` renders values the drivers do not give as text; `results` collects the stream and
//! labels it; `statements` splits the text the way the server does; `kind` says what each
//! statement is.

use std::future::Future;
use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::{Database, Executor};

use crate::config::ConnectionTarget;
use crate::domain::ExecutionResult;

mod cells;
mod kind;
mod mysql;
mod postgres;
mod results;
mod session;
mod sqlite;
mod statements;
#[cfg(test)]
mod testing;

use results::Collector;
use session::session;
use statements::{Dialect, split};

/// Runs `command` as one batch on a fresh connection to `target.url`.
pub(super) async fn run<DB: Backend>(target: &ConnectionTarget, command: &str) -> ExecutionResult
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let Some(url) = target.url.as_ref().map(ExposeSecret::expose_secret) else {
        return ExecutionResult {
            error: Some("this connection has no `url` to connect to".into()),
            ..ExecutionResult::default()
        };
    };
    let statements = split(command, DB::DIALECT);
    let mut out = Collector::new(target.max_rows, target.max_output_bytes);
    let error = session::<DB>(
        url,
        command,
        &statements,
        target.statement_timeout,
        &mut out,
    )
    .await
    .err();
    let complete = error.is_none();
    ExecutionResult {
        truncated: out.truncated,
        results: out.finish(&statements, complete, DB::COUNTS_ONLY_DML),
        error,
        ..ExecutionResult::default()
    }
}

/// What differs between the databases: connecting, the server-side timeout, counts and cells.
pub(super) trait Backend: Database {
    const DIALECT: Dialect;
    /// SQLite only reports changes made by INSERT, UPDATE and DELETE; its count after any other
    /// statement is left over from an earlier one.
    const COUNTS_ONLY_DML: bool;

    fn connect(url: &str) -> impl Future<Output = Result<Self::Connection, sqlx::Error>> + Send;
    /// Makes the server cancel any statement running longer than `timeout`.
    fn limit(
        conn: &mut Self::Connection,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;
    /// Whether `e` is the server cancelling a statement for running past the timeout.
    fn is_timeout(e: &sqlx::Error) -> bool;
    fn rows_affected(done: &Self::QueryResult) -> u64;
    /// Cell `index` as text, `None` for NULL.
    fn cell(row: &Self::Row, index: usize) -> Option<String>;
}
