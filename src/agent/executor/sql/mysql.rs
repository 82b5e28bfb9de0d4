//! MySQL and MariaDB: connecting without sqlx's session changes, the statement timeout under
//! either server's name for it, and cells as text with binary strings in hex.

use std::str::FromStr;
use std::time::Duration;

use sqlx::mysql::{
    MySql, MySqlConnectOptions, MySqlDatabaseError, MySqlQueryResult, MySqlRow, MySqlTypeInfo,
};
use sqlx::{AssertSqlSafe, ConnectOptions, Decode, Row, Type, TypeInfo, ValueRef};

use super::Backend;
use super::cells::{hex_bytes, placeholder};
use super::statements::Dialect;

impl Backend for MySql {
    const DIALECT: Dialect = Dialect::Mysql;
    const COUNTS_ONLY_DML: bool = false;

    async fn connect(url: &str) -> Result<Self::Connection, sqlx::Error> {
        MySqlConnectOptions::from_str(url)?
            // sqlx would otherwise change sql_mode and the time zone; the approved command must
            // run in the session the server configures, as it would in the mysql client.
            .pipes_as_concat(false)
            .no_engine_substitution(false)
            .timezone(None)
            .disable_statement_logging()
            .connect()
            .await
    }

    async fn limit(conn: &mut Self::Connection, timeout: Duration) -> Result<(), sqlx::Error> {
        let seconds = timeout.as_secs_f64().max(0.001);
        let mariadb = format!("SET SESSION max_statement_time = {seconds:.3}");
        match sqlx::raw_sql(AssertSqlSafe(mariadb))
            .execute(&mut *conn)
            .await
        {
            // MySQL has no max_statement_time (1193: unknown system variable); its nearest is
            // max_execution_time, in milliseconds, which covers SELECT only.
            Err(sqlx::Error::Database(db))
                if db
                    .try_downcast_ref::<MySqlDatabaseError>()
                    .is_some_and(|e| e.number() == 1193) =>
            {
                let ms = timeout.as_millis().max(1);
                let mysql = format!("SET SESSION max_execution_time = {ms}");
                sqlx::raw_sql(AssertSqlSafe(mysql)).execute(conn).await?;
                Ok(())
            }
            other => other.map(drop),
        }
    }

    fn is_timeout(e: &sqlx::Error) -> bool {
        // MariaDB's ER_STATEMENT_TIMEOUT and MySQL's ER_QUERY_TIMEOUT.
        matches!(e, sqlx::Error::Database(db)
            if db.try_downcast_ref::<MySqlDatabaseError>()
                .is_some_and(|e| matches!(e.number(), 1969 | 3024)))
    }

    fn rows_affected(done: &MySqlQueryResult) -> u64 {
        done.rows_affected()
    }

    fn cell(row: &MySqlRow, index: usize) -> Option<String> {
        let Ok(value) = row.try_get_raw(index) else {
            return Some(placeholder("unreadable"));
        };
        if value.is_null() {
            return None;
        }
        let type_info = value.type_info().into_owned();
        // Batches use the text protocol: every value is the server's text, as the mysql client
        // prints it, except binary strings, which are shown in hex.
        Some(match <&[u8] as Decode<MySql>>::decode(value) {
            Ok(bytes) if is_binary_mysql(&type_info) => hex_bytes(bytes),
            Ok(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            Err(_) => placeholder(type_info.name()),
        })
    }
}

/// BINARY, VARBINARY and BLOB columns, BIT and GEOMETRY. A string column is binary when its
/// collation is `binary`, which sqlx's `str` compatibility check tests (the BINARY column flag is
/// also set for text in `_bin` collations, so it cannot tell).
fn is_binary_mysql(type_info: &MySqlTypeInfo) -> bool {
    let string_column = <[u8] as Type<MySql>>::compatible(type_info);
    let text = <str as Type<MySql>>::compatible(type_info);
    (string_column && !text) || matches!(type_info.name(), "BIT" | "GEOMETRY")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::agent::executor::execute;
    use crate::agent::executor::sql::testing::{
        TestDb, assert_success, cells, rows, tagged, target, with_userinfo,
    };
    use crate::config::{ConnectionTarget, ConnectionType};

    #[tokio::test]
    async fn mysql_runs_several_statements_in_order() {
        let Some(db) = TestDb::create(ConnectionType::Mysql).await else {
            return;
        };
        let result = db
            .run(
                "CREATE TABLE people (id int PRIMARY KEY, name text);\n\
                 INSERT INTO people VALUES (1, 'ann'), (2, 'bob'), (3, NULL);\n\
                 UPDATE people SET name = 'bo' WHERE id = 2;\n\
                 SELECT id, name FROM people ORDER BY id;\n\
                 DELETE FROM people WHERE id = 3;\n\
                 SELECT * FROM people WHERE false;\n\
                 SELECT 'a' || 'b' AS ored",
            )
            .await;
        assert_success(&result);
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
                tagged("DELETE 1", Some(1)),
                rows(&["id", "name"], &[]),
                // The server's sql_mode, untouched: || is OR, not concatenation.
                rows(&["ored"], &[&["0"]]),
            ]
        );
    }

    #[tokio::test]
    async fn mysql_bodies_with_semicolons_stay_one_statement() {
        let Some(db) = TestDb::create(ConnectionType::Mysql).await else {
            return;
        };
        let result = db
            .run(
                "CREATE TABLE t (a int, b int);\n\
                 CREATE TRIGGER fill BEFORE INSERT ON t FOR EACH ROW \
                 BEGIN SET NEW.b = NEW.a * 2; IF NEW.a > 1 THEN SET NEW.b = 0; END IF; END;\n\
                 INSERT INTO t (a) VALUES (1);\n\
                 SELECT a, b FROM t",
            )
            .await;
        assert_success(&result);
        assert_eq!(
            result.results,
            [
                tagged("CREATE TABLE", None),
                tagged("CREATE TRIGGER", None),
                tagged("INSERT 0 1", Some(1)),
                rows(&["a", "b"], &[&["1", "2"]]),
            ]
        );
    }

    #[tokio::test]
    async fn mysql_values_print_as_text_and_binary_as_hex() {
        let Some(db) = TestDb::create(ConnectionType::Mysql).await else {
            return;
        };
        let result = db
            .run(
                "CREATE TABLE v (b BIT(8), e ENUM('small', 'large'), bin VARBINARY(4), \
                 u UUID, j JSON, ts TIMESTAMP(3), tm TIME);\n\
                 INSERT INTO v VALUES (b'101', 'large', x'00ff', \
                 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{\"a\": [1, 2]}', \
                 '2024-02-29 13:45:01.500', '-01:02:03');\n\
                 SELECT NULL AS n, 42 AS i, 18446744073709551615 AS big, 2.5e0 AS f, \
                 CAST(1.5 AS DECIMAL(10, 2)) AS num, TRUE AS t, 'héllo' AS txt, \
                 DATE '2024-02-29' AS d, v.* FROM v",
            )
            .await;
        assert_success(&result);
        let row = &result.results[2];
        let expected = [
            ("n", "NULL"),
            ("i", "42"),
            ("big", "18446744073709551615"),
            ("f", "2.5"),
            ("num", "1.50"),
            ("t", "1"),
            ("txt", "héllo"),
            ("d", "2024-02-29"),
            ("b", "\\x05"),
            ("e", "large"),
            ("bin", "\\x00ff"),
            ("u", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
            ("j", "{\"a\": [1, 2]}"),
            ("ts", "2024-02-29 13:45:01.500"),
            ("tm", "-01:02:03"),
        ];
        assert_eq!(row.columns, expected.map(|(c, _)| c));
        assert_eq!(row.rows, [cells(&expected.map(|(_, v)| v))]);
    }

    #[tokio::test]
    async fn mysql_output_stops_at_the_caps_but_the_batch_runs_to_the_end() {
        let Some(db) = TestDb::create(ConnectionType::Mysql).await else {
            return;
        };
        let capped = ConnectionTarget {
            max_rows: 2,
            ..db.target()
        };
        let result = execute(
            &capped,
            "SELECT seq FROM seq_1_to_10; CREATE TABLE after_cap (x int); SELECT 1",
        )
        .await;
        assert_eq!(result.error, None);
        assert!(result.truncated);
        assert_eq!(result.results, [rows(&["seq"], &[&["1"], &["2"]])]);
        let after = db.run("SELECT count(*) AS n FROM after_cap").await;
        assert_eq!(after.results, [rows(&["n"], &[&["0"]])]);
    }

    #[tokio::test]
    async fn mysql_errors_are_the_servers_own_words() {
        let Some(db) = TestDb::create(ConnectionType::Mysql).await else {
            return;
        };
        let result = db
            .run("SELECT 1 AS one; SELECT * FROM nope; SELECT 3")
            .await;
        assert_eq!(
            result.error,
            Some(format!("Table '{}.nope' doesn't exist", db.name))
        );
        assert_eq!(result.results, [rows(&["one"], &[&["1"]])]);

        let wrong_password = with_userinfo(&db.url, "root:hoop-wrong-password");
        let result = execute(&target(ConnectionType::Mysql, &wrong_password), "SELECT 1").await;
        let error = result.error.expect("an error");
        assert!(
            error.starts_with("cannot connect: Access denied for user 'root'"),
            "{error}"
        );

        let result = execute(
            &target(ConnectionType::Mysql, "mysql://root@127.0.0.1:1/test"),
            "SELECT 1",
        )
        .await;
        let error = result.error.expect("an error");
        assert!(error.contains("Connection refused"), "{error}");
    }

    #[tokio::test]
    async fn mysql_statements_time_out() {
        let Some(db) = TestDb::create(ConnectionType::Mysql).await else {
            return;
        };
        let limited = ConnectionTarget {
            statement_timeout: Some(Duration::from_secs(1)),
            ..db.target()
        };
        let result = execute(&limited, "SELECT 1 AS fast; SELECT SLEEP(5)").await;
        assert_eq!(
            result.error.as_deref(),
            Some(
                "statement timed out after 1s \
                 (Query execution was interrupted (max_statement_time exceeded))"
            )
        );
        assert_eq!(result.results, [rows(&["fast"], &[&["1"]])]);
    }
}
