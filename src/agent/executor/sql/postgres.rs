//! Postgres: connecting with the server's own float output, `statement_timeout`, and cells as the
//! server's text, exactly as psql prints them.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgQueryResult, PgRow, Postgres};
use sqlx::{AssertSqlSafe, ConnectOptions, Row, TypeInfo, ValueRef};

use super::Backend;
use super::cells::placeholder;
use super::statements::Dialect;

impl Backend for Postgres {
    const DIALECT: Dialect = Dialect::Postgres;
    const COUNTS_ONLY_DML: bool = false;

    async fn connect(url: &str) -> Result<Self::Connection, sqlx::Error> {
        PgConnectOptions::from_str(url)?
            // Leave float output to the server's default, as psql does.
            .extra_float_digits(None)
            .disable_statement_logging()
            .connect()
            .await
    }

    async fn limit(conn: &mut Self::Connection, timeout: Duration) -> Result<(), sqlx::Error> {
        // 0 would mean "no timeout".
        let ms = timeout.as_millis().max(1);
        let sql = format!("SET statement_timeout = {ms}");
        sqlx::raw_sql(AssertSqlSafe(sql)).execute(conn).await?;
        Ok(())
    }

    fn is_timeout(e: &sqlx::Error) -> bool {
        // 57014 (query_canceled) is also a cancel by an administrator; the message tells them apart.
        matches!(e, sqlx::Error::Database(db)
            if db.code().as_deref() == Some("57014") && db.message().contains("statement timeout"))
    }

    fn rows_affected(done: &PgQueryResult) -> u64 {
        done.rows_affected()
    }

    fn cell(row: &PgRow, index: usize) -> Option<String> {
        let Ok(value) = row.try_get_raw(index) else {
            return Some(placeholder("unreadable"));
        };
        if value.is_null() {
            return None;
        }
        // Batches run over the simple query protocol, where every value arrives as the server's
        // own text output: exactly what psql prints (t/f, \x hex, numeric in full, ...).
        Some(match value.as_bytes() {
            Ok(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            Err(_) => placeholder(value.type_info().name()),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::agent::executor::execute;
    use crate::agent::executor::sql::testing::{
        TestDb, assert_success, cells, rows, tagged, target, with_database, with_userinfo,
    };
    use crate::config::{
        ConnectionTarget, ConnectionType, DEFAULT_MAX_OUTPUT_BYTES, DEFAULT_MAX_ROWS,
    };
    use crate::domain::StatementResult;

    #[tokio::test]
    async fn postgres_runs_several_statements_in_order() {
        let Some(db) = TestDb::create(ConnectionType::Postgres).await else {
            return;
        };
        let result = db
            .run(
                "CREATE TABLE people (id int PRIMARY KEY, name text);\n\
                 INSERT INTO people VALUES (1, 'ann'), (2, 'bob'), (3, NULL);\n\
                 UPDATE people SET name = 'bo' WHERE id = 2;\n\
                 SELECT id, name FROM people ORDER BY id;\n\
                 DELETE FROM people WHERE id = 3 RETURNING id;\n\
                 SELECT * FROM people WHERE false;\n\
                 UPDATE people SET name = 'x' WHERE false",
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
                tagged("UPDATE 0", Some(0)),
            ]
        );
    }

    #[tokio::test]
    async fn postgres_bodies_with_semicolons_stay_one_statement() {
        let Some(db) = TestDb::create(ConnectionType::Postgres).await else {
            return;
        };
        let result = db
            .run(
                "CREATE FUNCTION two() RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN 2; END; $$;\n\
                 CREATE FUNCTION three() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 3; END;\n\
                 SELECT two() + three() AS five",
            )
            .await;
        assert_success(&result);
        assert_eq!(
            result.results,
            [
                tagged("CREATE FUNCTION", None),
                tagged("CREATE FUNCTION", None),
                rows(&["five"], &[&["5"]]),
            ]
        );
    }

    #[tokio::test]
    async fn postgres_values_print_as_psql_prints_them() {
        let Some(db) = TestDb::create(ConnectionType::Postgres).await else {
            return;
        };
        let result = db
            .run(
                "CREATE TYPE mood AS ENUM ('happy');\n\
                 SELECT NULL::int AS n, 42::int AS i, 9007199254740993::bigint AS big, \
                 2.5::float8 AS f, 0.1::float4 AS r, 1.50::numeric AS num, \
                 2^100::numeric AS huge, true AS t, false AS f2, 'héllo'::text AS txt, \
                 '\\x00ff'::bytea AS bin, '2024-02-29'::date AS d, \
                 '2024-02-29 13:45:01.5'::timestamp AS ts, \
                 '2024-02-29 13:45:01+02'::timestamptz AS tstz, \
                 '{\"a\": [1, 2]}'::json AS j, '{\"a\":   [1, 2]}'::jsonb AS jb, \
                 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid AS u, \
                 '1 day 02:00'::interval AS iv, ARRAY[1,2,NULL] AS arr, \
                 'happy'::mood AS e, '(1,2)'::point AS pt, 1e300::float8 * 10 AS big_f",
            )
            .await;
        assert_success(&result);
        assert_eq!(result.results.len(), 2);
        let row = &result.results[1];
        let expected = [
            ("n", "NULL"),
            ("i", "42"),
            ("big", "9007199254740993"),
            ("f", "2.5"),
            ("r", "0.1"),
            ("num", "1.50"),
            ("huge", "1267650600228229401496703205376.0000000000000000"),
            ("t", "t"),
            ("f2", "f"),
            ("txt", "héllo"),
            ("bin", "\\x00ff"),
            ("d", "2024-02-29"),
            ("ts", "2024-02-29 13:45:01.5"),
            // sqlx sessions run in UTC.
            ("tstz", "2024-02-29 11:45:01+00"),
            ("j", "{\"a\": [1, 2]}"),
            ("jb", "{\"a\": [1, 2]}"),
            ("u", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
            ("iv", "1 day 02:00:00"),
            ("arr", "{1,2,NULL}"),
            ("e", "happy"),
            ("pt", "(1,2)"),
            ("big_f", "1e+301"),
        ];
        assert_eq!(row.columns, expected.map(|(c, _)| c));
        assert_eq!(row.rows, [cells(&expected.map(|(_, v)| v))]);
    }

    #[tokio::test]
    async fn postgres_output_stops_at_the_caps_but_the_batch_runs_to_the_end() {
        let Some(db) = TestDb::create(ConnectionType::Postgres).await else {
            return;
        };
        let capped = |max_rows, max_output_bytes| ConnectionTarget {
            max_rows,
            max_output_bytes,
            ..db.target()
        };
        let result = execute(
            &capped(3, DEFAULT_MAX_OUTPUT_BYTES),
            "SELECT g FROM generate_series(1, 10) g; CREATE TABLE after_cap (x int); SELECT 1",
        )
        .await;
        assert_eq!(result.error, None);
        assert!(result.truncated);
        assert_eq!(result.results, [rows(&["g"], &[&["1"], &["2"], &["3"]])]);
        let after = db.run("SELECT count(*) FROM after_cap").await;
        assert_eq!(after.results, [rows(&["count"], &[&["0"]])]);

        let result = execute(
            &capped(DEFAULT_MAX_ROWS, 250),
            "SELECT repeat('x', 100) AS r FROM generate_series(1, 10)",
        )
        .await;
        assert!(result.truncated);
        assert_eq!(result.results[0].rows.len(), 2);
    }

    #[tokio::test]
    async fn postgres_errors_are_the_servers_own_words() {
        let Some(db) = TestDb::create(ConnectionType::Postgres).await else {
            return;
        };
        let result = db.run("SELECT * FROM nope").await;
        assert_eq!(
            result.error.as_deref(),
            Some("relation \"nope\" does not exist")
        );
        assert!(result.results.is_empty());

        // Like psql: what ran before the failing statement is shown, nothing after it runs.
        let result = db
            .run("SELECT 1 AS one; SELECT * FROM nope; SELECT 3")
            .await;
        assert_eq!(
            result.error.as_deref(),
            Some("relation \"nope\" does not exist")
        );
        assert_eq!(result.results, [rows(&["one"], &[&["1"]])]);

        let result = db
            .run("CREATE TABLE u (id int PRIMARY KEY); INSERT INTO u VALUES (1), (1)")
            .await;
        assert_eq!(
            result.error.as_deref(),
            Some(
                "duplicate key value violates unique constraint \"u_pkey\"\n\
                 DETAIL: Key (id)=(1) already exists."
            )
        );

        let result = db.run("COPY (SELECT 1) TO STDOUT").await;
        let error = result.error.expect("an error");
        assert!(
            error.starts_with("COPY FROM STDIN and COPY TO STDOUT are not supported"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn postgres_connection_failures_are_reported() {
        let Some(db) = TestDb::create(ConnectionType::Postgres).await else {
            return;
        };
        let missing = with_database(&db.url, &format!("{}_missing", db.name));
        let result = execute(&target(ConnectionType::Postgres, &missing), "SELECT 1").await;
        let error = result.error.expect("an error");
        assert!(error.starts_with("cannot connect: "), "{error}");
        assert!(
            error.contains(&format!("database \"{}_missing\" does not exist", db.name)),
            "{error}"
        );

        let no_role = with_userinfo(&db.url, "hoop_no_such_role");
        let result = execute(&target(ConnectionType::Postgres, &no_role), "SELECT 1").await;
        let error = result.error.expect("an error");
        assert!(
            error.contains("role \"hoop_no_such_role\" does not exist"),
            "{error}"
        );

        // Nothing listens on port 1.
        let result = execute(
            &target(
                ConnectionType::Postgres,
                "postgres://postgres@127.0.0.1:1/postgres",
            ),
            "SELECT 1",
        )
        .await;
        let error = result.error.expect("an error");
        assert!(error.contains("Connection refused"), "{error}");
        assert!(result.results.is_empty());
    }

    #[tokio::test]
    async fn postgres_statements_time_out() {
        let Some(db) = TestDb::create(ConnectionType::Postgres).await else {
            return;
        };
        let limited = ConnectionTarget {
            statement_timeout: Some(Duration::from_secs(1)),
            ..db.target()
        };
        let result = execute(&limited, "SELECT 1 AS fast; SELECT pg_sleep(5)").await;
        assert_eq!(
            result.error.as_deref(),
            Some("statement timed out after 1s (canceling statement due to statement timeout)")
        );
        // Postgres runs a batch as one transaction, but what it already sent is still shown.
        assert_eq!(result.results, [rows(&["fast"], &[&["1"]])]);
    }
}
