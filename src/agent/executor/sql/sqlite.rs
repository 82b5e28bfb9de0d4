//! SQLite: opening an existing file only, confined to it (no ATTACH, no extensions), a progress
//! handler for the timeout, and cells by their storage class. The confinement reaches into
//! SQLite's C API, so its unsafe code stays here with the reasons it is sound.

use std::str::FromStr;
use std::time::{Duration, Instant};

use sqlx::sqlite::{Sqlite, SqliteConnectOptions, SqliteQueryResult, SqliteRow};
use sqlx::{ConnectOptions, Decode, Row, TypeInfo, ValueRef};

use super::Backend;
use super::cells::{float_text, hex_bytes, placeholder};
use super::statements::Dialect;

impl Backend for Sqlite {
    const DIALECT: Dialect = Dialect::Sqlite;
    const COUNTS_ONLY_DML: bool = true;

    async fn connect(url: &str) -> Result<Self::Connection, sqlx::Error> {
        // Not create_if_missing: a mistyped path must fail, not quietly make an empty database.
        let mut conn = SqliteConnectOptions::from_str(url)?
            .disable_statement_logging()
            .connect()
            .await?;
        confine(&mut conn).await?;
        Ok(conn)
    }

    async fn limit(conn: &mut Self::Connection, timeout: Duration) -> Result<(), sqlx::Error> {
        // SQLite has no statement timeout; a progress handler that starts failing at the
        // deadline interrupts whatever is running (SQLITE_INTERRUPT).
        let deadline = Instant::now() + timeout;
        conn.lock_handle()
            .await?
            .set_progress_handler(1000, move || Instant::now() < deadline);
        Ok(())
    }

    fn is_timeout(e: &sqlx::Error) -> bool {
        // Only our progress handler interrupts this connection.
        matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some("9"))
    }

    fn rows_affected(done: &SqliteQueryResult) -> u64 {
        done.rows_affected()
    }

    fn cell(row: &SqliteRow, index: usize) -> Option<String> {
        let Ok(value) = row.try_get_raw(index) else {
            return Some(placeholder("unreadable"));
        };
        if value.is_null() {
            return None;
        }
        // A non-NULL value's type is its storage class, whatever the column was declared as.
        let type_name = value.type_info().name().to_string();
        let text = match type_name.as_str() {
            "INTEGER" => <i64 as Decode<Sqlite>>::decode(value).map(|v| v.to_string()),
            "REAL" => <f64 as Decode<Sqlite>>::decode(value).map(float_text),
            "BLOB" => <Vec<u8> as Decode<Sqlite>>::decode(value).map(|b| hex_bytes(&b)),
            // Text that is not valid UTF-8 is still shown, lossily.
            _ => <Vec<u8> as Decode<Sqlite>>::decode(value)
                .map(|b| String::from_utf8_lossy(&b).into_owned()),
        };
        Some(text.unwrap_or_else(|_| placeholder(&type_name)))
    }
}

/// Keeps an approved command inside its own database file: no `ATTACH` (which could open
/// hoopbot's own database, or any file the process can write), no `DETACH`, no loading of
/// extensions. Enforced by SQLite itself — an attached-database limit of zero and an authorizer
/// that denies those actions — so no spelling of the statement gets past it.
async fn confine(conn: &mut sqlx::SqliteConnection) -> Result<(), sqlx::Error> {
    use libsqlite3_sys as ffi;
    let mut handle = conn.lock_handle().await?;
    let db = handle.as_raw_handle().as_ptr();
    // SAFETY: the handle is locked, so nothing else uses this connection meanwhile; the
    // authorizer is a plain function that keeps no state.
    let rc = unsafe {
        ffi::sqlite3_limit(db, ffi::SQLITE_LIMIT_ATTACHED, 0);
        ffi::sqlite3_set_authorizer(db, Some(authorize), std::ptr::null_mut())
    };
    if rc != ffi::SQLITE_OK {
        return Err(sqlx::Error::Protocol(format!(
            "cannot install the SQLite authorizer (code {rc})"
        )));
    }
    Ok(())
}

/// SQLite's authorizer callback: denies attaching and detaching databases and the
/// `load_extension` function, allows everything else.
unsafe extern "C" fn authorize(
    _user_data: *mut std::ffi::c_void,
    action: std::ffi::c_int,
    _arg1: *const std::ffi::c_char,
    arg2: *const std::ffi::c_char,
    _database: *const std::ffi::c_char,
    _trigger: *const std::ffi::c_char,
) -> std::ffi::c_int {
    use libsqlite3_sys as ffi;
    match action {
        ffi::SQLITE_ATTACH | ffi::SQLITE_DETACH => ffi::SQLITE_DENY,
        // For a function call the second argument is the function's name.
        ffi::SQLITE_FUNCTION if !arg2.is_null() => {
            // SAFETY: SQLite passes a NUL-terminated name that lives for this call.
            let name = unsafe { std::ffi::CStr::from_ptr(arg2) };
            if name.to_bytes().eq_ignore_ascii_case(b"load_extension") {
                ffi::SQLITE_DENY
            } else {
                ffi::SQLITE_OK
            }
        }
        _ => ffi::SQLITE_OK,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::agent::executor::execute;
    use crate::agent::executor::sql::testing::{assert_success, rows, tagged, target};
    use crate::config::{ConnectionTarget, ConnectionType};
    use crate::domain::StatementResult;

    /// An empty SQLite database in a temporary file.
    fn sqlite_db() -> (tempfile::NamedTempFile, ConnectionTarget) {
        let file = tempfile::NamedTempFile::new().expect("a temporary file");
        let url = format!("sqlite://{}", file.path().display());
        (file, target(ConnectionType::Sqlite, &url))
    }

    #[tokio::test]
    async fn sqlite_runs_several_statements_in_order() {
        let (_file, sqlite) = sqlite_db();
        let result = execute(
            &sqlite,
            "CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT);\n\
             INSERT INTO people VALUES (1, 'ann'), (2, 'bob'), (3, NULL);\n\
             UPDATE people SET name = 'bo' WHERE id = 2;\n\
             SELECT id, name FROM people ORDER BY id;\n\
             DELETE FROM people WHERE id = 3 RETURNING id;\n\
             SELECT * FROM people WHERE 0;\n\
             CREATE INDEX people_name ON people (name)",
        )
        .await;
        assert_success(&result);
        let returning = StatementResult {
            rows_affected: Some(1),
            tag: Some("DELETE 1".into()),
            ..rows(&["id"], &[&["3"]])
        };
        assert_eq!(
            result.results,
            [
                tagged("CREATE TABLE", None),
                tagged("INSERT 0 3", Some(3)),
                tagged("UPDATE 1", Some(1)),
                rows(
                    &["id", "name"],
                    &[&["1", "ann"], &["2", "bo"], &["3", "NULL"]]
                ),
                returning,
                rows(&["id", "name"], &[]),
                tagged("CREATE INDEX", None),
            ]
        );
    }

    #[tokio::test]
    async fn sqlite_values_print_by_their_storage_class() {
        let (_file, sqlite) = sqlite_db();
        let result = execute(
            &sqlite,
            "SELECT NULL AS n, 42 AS i, 2.5 AS f, 1e15 AS e, 'héllo' AS txt, x'00ff' AS bin, \
             CAST(x'ff' AS TEXT) AS bad_text",
        )
        .await;
        assert_success(&result);
        assert_eq!(
            result.results,
            [rows(
                &["n", "i", "f", "e", "txt", "bin", "bad_text"],
                &[&["NULL", "42", "2.5", "1e+15", "héllo", "\\x00ff", "\u{fffd}"]]
            )]
        );
    }

    #[tokio::test]
    async fn sqlite_failures_are_reported() {
        let (_file, sqlite) = sqlite_db();
        let result = execute(&sqlite, "SELECT 1 AS one; SELECT * FROM nope; SELECT 3").await;
        assert_eq!(result.error.as_deref(), Some("no such table: nope"));
        assert_eq!(result.results, [rows(&["one"], &[&["1"]])]);

        let missing = target(ConnectionType::Sqlite, "sqlite:///nonexistent/dir/hoop.db");
        let result = execute(&missing, "SELECT 1").await;
        let error = result.error.expect("an error");
        assert!(error.starts_with("cannot connect: "), "{error}");
        assert!(error.contains("unable to open database file"), "{error}");
    }

    #[tokio::test]
    async fn sqlite_commands_cannot_reach_other_database_files() {
        let (_file, sqlite) = sqlite_db();
        // Another database file the process can write, standing in for hoopbot's own.
        let (other, _) = sqlite_db();
        let other_path = other.path().display().to_string();
        let attempts = [
            format!("ATTACH DATABASE '{other_path}' AS h; CREATE TABLE h.api_token (x)"),
            format!("attach '{other_path}' as h"),
            format!("ATTACH DATABASE 'file:{other_path}?mode=rw' AS h"),
            "ATTACH DATABASE ':memory:' AS m".to_string(),
            "DETACH DATABASE main".to_string(),
            "SELECT load_extension('/nonexistent/evil.so')".to_string(),
            "SELECT LOAD_EXTENSION('/nonexistent/evil.so', 'entry')".to_string(),
        ];
        for sql in &attempts {
            let result = execute(&sqlite, sql).await;
            let error = result.error.unwrap_or_default();
            assert!(
                error.contains("not authorized") || error.contains("too many attached"),
                "{sql}: {error:?}"
            );
        }
        let untouched = std::fs::metadata(other.path()).unwrap().len();
        assert_eq!(untouched, 0, "nothing was written to the other file");
        // VACUUM INTO attaches its target file internally, so the authorizer refuses it too.
        let copy = other.path().with_extension("copy");
        let result = execute(&sqlite, &format!("VACUUM INTO '{}'", copy.display())).await;
        let error = result.error.unwrap_or_default();
        assert!(error.contains("authorization denied"), "{error:?}");
        assert!(!copy.exists(), "no copy of the database was written");

        // Everything else still works, including functions and its own schema.
        let result = execute(
            &sqlite,
            "CREATE TABLE t (x); INSERT INTO t VALUES (upper('a')); \
             SELECT x, (SELECT count(*) FROM sqlite_master) FROM t",
        )
        .await;
        assert_success(&result);
    }

    #[tokio::test]
    async fn sqlite_caps_and_timeouts() {
        let (_file, sqlite) = sqlite_db();
        let capped = ConnectionTarget {
            max_output_bytes: 10,
            ..sqlite.clone()
        };
        let result = execute(
            &capped,
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 100) \
             SELECT 'abcd' FROM c; CREATE TABLE after_cap (x)",
        )
        .await;
        assert_eq!(result.error, None);
        assert!(result.truncated);
        assert_eq!(result.results[0].rows.len(), 2);
        let after = execute(&sqlite, "SELECT count(*) AS n FROM after_cap").await;
        assert_eq!(after.results, [rows(&["n"], &[&["0"]])]);

        let limited = ConnectionTarget {
            statement_timeout: Some(Duration::from_secs(1)),
            ..sqlite
        };
        let result = execute(
            &limited,
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) \
             SELECT count(*) FROM c",
        )
        .await;
        assert_eq!(
            result.error.as_deref(),
            Some("statement timed out after 1s (interrupted)")
        );
    }
}
