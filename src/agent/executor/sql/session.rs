//! One batch on one fresh connection, the same for every database: connecting, the statement
//! timeout (the server's, with a client-side one behind it), streaming the results into the
//! collector, and errors in the database's own words. What differs per database is behind
//! [`Backend`]; this is the part that must behave alike for all three.

use std::time::Duration;

use futures_util::TryStreamExt;
use sqlx::postgres::PgDatabaseError;
use sqlx::{AssertSqlSafe, Column, Connection, Either, Executor, Row, SqlSafeStr, Statement as _};

use super::Backend;
use super::kind::classify;
use super::results::Collector;
use super::statements::Statement;
use crate::agent::executor::human;

/// How long to wait for a connection before giving up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Extra time the client-side timeout allows, so the server's own statement timeout (and its
/// clearer message) normally fires first.
const TIMEOUT_GRACE: Duration = Duration::from_secs(2);

/// Connects, runs the batch into `out`, and fills in the columns of empty result sets.
pub(super) async fn session<DB: Backend>(
    url: &str,
    command: &str,
    statements: &[Statement<'_>],
    timeout: Option<Duration>,
    out: &mut Collector,
) -> Result<(), String>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let mut conn = match tokio::time::timeout(CONNECT_TIMEOUT, DB::connect(url)).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => return Err(format!("cannot connect: {}", message(&e))),
        Err(_) => {
            return Err(format!(
                "cannot connect: no answer within {}",
                human(CONNECT_TIMEOUT)
            ));
        }
    };
    let work = async {
        if let Some(limit) = timeout {
            DB::limit(&mut conn, limit)
                .await
                .map_err(|e| format!("cannot set the statement timeout: {}", message(&e)))?;
        }
        let ran = stream::<DB>(&mut conn, command, out)
            .await
            .map_err(|e| match timeout {
                Some(limit) if DB::is_timeout(&e) => {
                    format!(
                        "statement timed out after {} ({})",
                        human(limit),
                        message(&e)
                    )
                }
                _ => message(&e),
            });
        if ran.is_ok() {
            describe_empty_results::<DB>(&mut conn, statements, out).await;
        }
        ran
    };
    let ran = match timeout {
        Some(limit) => tokio::time::timeout(limit + TIMEOUT_GRACE, work)
            .await
            .unwrap_or_else(|_| Err(format!("statement timed out after {}", human(limit)))),
        None => work.await,
    };
    // A clean goodbye spares the server an "unexpected EOF" in its log; failure here changes
    // nothing for the result.
    let _ = tokio::time::timeout(TIMEOUT_GRACE, conn.close()).await;
    ran
}

async fn stream<DB: Backend>(
    conn: &mut DB::Connection,
    command: &str,
    out: &mut Collector,
) -> Result<(), sqlx::Error>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let mut items = sqlx::raw_sql(AssertSqlSafe(command)).fetch_many(&mut *conn);
    while let Some(item) = items.try_next().await? {
        match item {
            Either::Left(done) => out.statement_done(DB::rows_affected(&done)),
            Either::Right(row) => out.row(
                || row.columns().iter().map(|c| c.name().to_string()).collect(),
                || (0..row.len()).map(|i| DB::cell(&row, i)).collect(),
            ),
        }
    }
    Ok(())
}

/// A query that returned no rows still shows its columns, as psql does. The stream only carries
/// column names on rows, so prepare (never execute) the statement again to learn them.
async fn describe_empty_results<DB: Backend>(
    conn: &mut DB::Connection,
    statements: &[Statement<'_>],
    out: &mut Collector,
) where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    if out.executed != statements.len() {
        return;
    }
    for (raw, statement) in out.results.iter_mut().zip(statements) {
        if raw.rows_seen > 0 || !classify(&statement.words).returns_rows() {
            continue;
        }
        let sql = AssertSqlSafe(statement.text.to_string()).into_sql_str();
        if let Ok(prepared) = (&mut *conn).prepare(sql).await {
            raw.columns = prepared
                .columns()
                .iter()
                .map(|c| c.name().to_string())
                .collect();
        }
    }
}

/// The text of an error as the database or the OS put it, without sqlx's framing.
fn message(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => {
            let mut text = db.message().to_string();
            if let Some(pg) = db.try_downcast_ref::<PgDatabaseError>() {
                if let Some(detail) = pg.detail() {
                    text.push_str(&format!("\nDETAIL: {detail}"));
                }
                if let Some(hint) = pg.hint() {
                    text.push_str(&format!("\nHINT: {hint}"));
                }
            }
            text
        }
        sqlx::Error::Io(io) => io.to_string(),
        // The server waits for the client to stream the data, which only psql's COPY handling
        // does; the driver sees a message it does not expect.
        sqlx::Error::Protocol(text)
            if text.contains("CopyInResponse") || text.contains("CopyOutResponse") =>
        {
            "COPY FROM STDIN and COPY TO STDOUT are not supported: they need psql to stream the \
             data. Copy to or from a file on the server, or use INSERT and SELECT."
                .into()
        }
        other => other.to_string(),
    }
}
