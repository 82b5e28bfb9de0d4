//! What the backends' tests share: a throwaway database per test on the servers CI provides,
//! targets for them, and the expected results written briefly.

use sqlx::{AssertSqlSafe, Connection};

use crate::agent::executor::execute;
use crate::config::{ConnectionTarget, ConnectionType, DEFAULT_MAX_OUTPUT_BYTES, DEFAULT_MAX_ROWS};
use crate::domain::{ExecutionResult, StatementResult};

pub(super) fn target(kind: ConnectionType, url: &str) -> ConnectionTarget {
    ConnectionTarget {
        kind,
        url: Some(url.into()),
        command: None,
        statement_timeout: None,
        max_rows: DEFAULT_MAX_ROWS,
        max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
        env: Default::default(),
    }
}

pub(super) fn cells(row: &[&str]) -> Vec<Option<String>> {
    row.iter()
        .map(|v| (*v != "NULL").then(|| v.to_string()))
        .collect()
}

pub(super) fn tagged(tag: &str, rows_affected: Option<u64>) -> StatementResult {
    StatementResult {
        tag: Some(tag.into()),
        rows_affected,
        ..StatementResult::default()
    }
}

pub(super) fn rows(columns: &[&str], rows: &[&[&str]]) -> StatementResult {
    StatementResult {
        columns: columns.iter().map(|c| c.to_string()).collect(),
        rows: rows.iter().map(|r| cells(r)).collect(),
        ..StatementResult::default()
    }
}

/// A database of its own for one test, created through the admin URL in `env` and dropped
/// when the test ends, however it ends.
pub(super) struct TestDb {
    kind: ConnectionType,
    admin: String,
    pub(super) name: String,
    pub(super) url: String,
}

impl TestDb {
    pub(super) async fn create(kind: ConnectionType) -> Option<TestDb> {
        let env = match kind {
            ConnectionType::Postgres => "HOOP_TEST_POSTGRES_URL",
            _ => "HOOP_TEST_MYSQL_URL",
        };
        let Ok(admin) = std::env::var(env) else {
            // Under CI the gap is a failure: CI must never go green without the databases.
            if std::env::var_os("CI").is_some() {
                panic!("{env} is not set, but CI is: this test needs that database in CI");
            }
            // Past the harness's output capture, so a plain `cargo test` shows the gap.
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "skipping: {env} not set");
            return None;
        };
        let name = format!("hoop_exec_{:016x}", rand::random::<u64>());
        admin_sql(kind, &admin, &format!("CREATE DATABASE {name}")).await;
        Some(TestDb {
            kind,
            url: with_database(&admin, &name),
            admin,
            name,
        })
    }

    pub(super) fn target(&self) -> ConnectionTarget {
        target(self.kind, &self.url)
    }

    pub(super) async fn run(&self, sql: &str) -> ExecutionResult {
        execute(&self.target(), sql).await
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let sql = match self.kind {
            ConnectionType::Postgres => {
                format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)
            }
            _ => format!("DROP DATABASE IF EXISTS {}", self.name),
        };
        let (kind, admin) = (self.kind, self.admin.clone());
        // Drop runs inside the test's runtime, which cannot be blocked on; use another.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime")
                .block_on(admin_sql(kind, &admin, &sql))
        })
        .join();
    }
}

async fn admin_sql(kind: ConnectionType, url: &str, sql: &str) {
    let sql = AssertSqlSafe(sql.to_string());
    match kind {
        ConnectionType::Postgres => {
            let mut conn = sqlx::PgConnection::connect(url)
                .await
                .expect("admin connection");
            sqlx::raw_sql(sql)
                .execute(&mut conn)
                .await
                .expect("admin statement");
        }
        _ => {
            let mut conn = sqlx::MySqlConnection::connect(url)
                .await
                .expect("admin connection");
            sqlx::raw_sql(sql)
                .execute(&mut conn)
                .await
                .expect("admin statement");
        }
    }
}

/// `url` with its database (path) replaced by `name`.
pub(super) fn with_database(url: &str, name: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL with a scheme");
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let query = rest.find('?').map_or("", |i| &rest[i..]);
    format!("{scheme}://{}/{name}{query}", &rest[..authority_end])
}

/// `url` with its user (and password) replaced by `userinfo`.
pub(super) fn with_userinfo(url: &str, userinfo: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL with a scheme");
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    format!("{scheme}://{userinfo}@{host}{path}")
}

pub(super) fn assert_success(result: &ExecutionResult) {
    assert_eq!(result.error, None, "{result:#?}");
    assert!(!result.truncated, "{result:#?}");
    assert!(result.started_at.is_some() && result.finished_at.is_some());
    assert_eq!(
        (&result.stdout, &result.stderr, result.exit_code),
        (&None, &None, None)
    );
}
