//! What a statement is, from its leading words: a query, a change (and whether it returns rows),
//! a CREATE ... AS, or something reporting only its tag. This decides the psql-style tag and
//! whether an empty result still shows its columns.

use super::statements::Word;

/// What a statement is, as far as its result is concerned.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// A query: its result set is the output.
    Rows,
    /// INSERT, UPDATE, DELETE, MERGE, ...: a row count, and rows too with RETURNING.
    Dml { verb: String, returning: bool },
    /// CREATE TABLE ... AS SELECT: Postgres reports `SELECT n`; `tag` is the fallback.
    CreateAs { tag: String },
    /// Everything else reports just its tag, e.g. `CREATE TABLE`.
    Other(String),
}

impl Kind {
    /// Whether the statement has a result set even when it returns no rows.
    pub(super) fn returns_rows(&self) -> bool {
        matches!(
            self,
            Kind::Rows
                | Kind::Dml {
                    returning: true,
                    ..
                }
        )
    }
}

pub(super) fn classify(words: &[Word]) -> Kind {
    let word = |i: usize| words.get(i).map_or("", |w| w.text.as_str());
    let top_level = |name: &str| words.iter().skip(1).any(|w| w.depth == 0 && w.text == name);
    let dml = |verb: &str| Kind::Dml {
        verb: verb.to_string(),
        returning: top_level("RETURNING"),
    };
    match word(0) {
        // (SQLite's PRAGMA returns rows or not depending on the pragma: it falls through to
        // Other, and a result set, when there is one, is shown all the same.)
        "SELECT" | "VALUES" | "TABLE" | "SHOW" | "EXPLAIN" | "DESCRIBE" | "DESC" | "FETCH" => {
            Kind::Rows
        }
        // The statement after the common table expressions decides.
        "WITH" => match words.iter().skip(1).find(|w| {
            w.depth == 0
                && matches!(
                    w.text.as_str(),
                    "SELECT" | "INSERT" | "UPDATE" | "DELETE" | "MERGE" | "VALUES" | "TABLE"
                )
        }) {
            Some(w) if !matches!(w.text.as_str(), "SELECT" | "VALUES" | "TABLE") => dml(&w.text),
            _ => Kind::Rows,
        },
        verb @ ("INSERT" | "UPDATE" | "DELETE" | "MERGE" | "REPLACE" | "COPY") => dml(verb),
        "CREATE" => {
            let object = object(&words[1..]);
            let tag = format!("CREATE {object}");
            let from_query = top_level("SELECT") || top_level("VALUES") || top_level("EXECUTE");
            if matches!(object.as_str(), "TABLE" | "MATERIALIZED VIEW") && from_query {
                Kind::CreateAs { tag }
            } else {
                Kind::Other(tag)
            }
        }
        verb @ ("DROP" | "ALTER") => Kind::Other(format!("{verb} {}", object(&words[1..]))),
        // Postgres' tags for these.
        "START" => Kind::Other("START TRANSACTION".into()),
        "END" | "COMMIT" => Kind::Other("COMMIT".into()),
        "ABORT" | "ROLLBACK" => Kind::Other("ROLLBACK".into()),
        "TRUNCATE" => Kind::Other("TRUNCATE TABLE".into()),
        "LOCK" => Kind::Other("LOCK TABLE".into()),
        "REFRESH" => Kind::Other("REFRESH MATERIALIZED VIEW".into()),
        "DISCARD" => Kind::Other(format!("DISCARD {}", word(1))),
        "" => Kind::Other("OK".into()),
        other => Kind::Other(other.to_string()),
    }
}

/// The object kind a CREATE, DROP or ALTER names: `TABLE`, `INDEX`, `MATERIALIZED VIEW`, ...
fn object(words: &[Word]) -> String {
    const MODIFIERS: &[&str] = &[
        "OR",
        "REPLACE",
        "TEMP",
        "TEMPORARY",
        "UNIQUE",
        "UNLOGGED",
        "GLOBAL",
        "LOCAL",
        "RECURSIVE",
        "CONSTRAINT",
        "TRUSTED",
        "PROCEDURAL",
        "DEFINER",
        "ALGORITHM",
        "UNDEFINED",
        "MERGE",
        "TEMPTABLE",
        "SQL",
        "SECURITY",
        "INVOKER",
        "ONLINE",
        "OFFLINE",
        "FULLTEXT",
        "SPATIAL",
    ];
    // Object kinds spelled in several words, as (word, next word) pairs.
    const JOINED: &[(&str, &str)] = &[
        ("MATERIALIZED", "VIEW"),
        ("FOREIGN", "TABLE"),
        ("FOREIGN", "DATA"),
        ("DATA", "WRAPPER"),
        ("EVENT", "TRIGGER"),
        ("TEXT", "SEARCH"),
        ("SEARCH", "PARSER"),
        ("SEARCH", "DICTIONARY"),
        ("SEARCH", "TEMPLATE"),
        ("SEARCH", "CONFIGURATION"),
        ("ACCESS", "METHOD"),
        ("OPERATOR", "CLASS"),
        ("OPERATOR", "FAMILY"),
        ("USER", "MAPPING"),
    ];
    let mut rest = words
        .iter()
        .map(|w| w.text.as_str())
        .skip_while(|w| MODIFIERS.contains(w));
    let Some(first) = rest.next() else {
        return String::new();
    };
    let mut parts = vec![first];
    for next in rest {
        let last = parts[parts.len() - 1];
        if !JOINED.contains(&(last, next)) {
            break;
        }
        parts.push(next);
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::executor::sql::statements::{Dialect, split};

    fn tag_of(sql: &str) -> Kind {
        classify(&split(sql, Dialect::Postgres)[0].words)
    }

    #[test]
    fn statements_are_labelled_like_psql() {
        let other = |tag: &str| Kind::Other(tag.into());
        let dml = |verb: &str, returning| Kind::Dml {
            verb: verb.into(),
            returning,
        };
        assert_eq!(tag_of("select 1"), Kind::Rows);
        assert_eq!(tag_of("(select 1) union (select 2)"), Kind::Rows);
        assert_eq!(tag_of("with x as (select 1) select * from x"), Kind::Rows);
        assert_eq!(
            tag_of("with x as (select 1) delete from t using x returning t.id"),
            dml("DELETE", true)
        );
        assert_eq!(tag_of("insert into t select 1"), dml("INSERT", false));
        assert_eq!(
            tag_of("update t set a = (select 1 returning x)"),
            dml("UPDATE", false)
        );
        assert_eq!(tag_of("create table t (a int)"), other("CREATE TABLE"));
        assert_eq!(
            tag_of("create or replace temp view v as select 1"),
            other("CREATE VIEW")
        );
        assert_eq!(
            tag_of("CREATE UNIQUE INDEX CONCURRENTLY i ON t (a)"),
            other("CREATE INDEX")
        );
        assert_eq!(
            tag_of("create table t as select 1"),
            Kind::CreateAs {
                tag: "CREATE TABLE".into()
            }
        );
        assert_eq!(
            tag_of("create materialized view m as select 1"),
            Kind::CreateAs {
                tag: "CREATE MATERIALIZED VIEW".into()
            }
        );
        assert_eq!(
            tag_of("drop foreign data wrapper w"),
            other("DROP FOREIGN DATA WRAPPER")
        );
        assert_eq!(tag_of("drop table if exists t"), other("DROP TABLE"));
        assert_eq!(tag_of("alter table t add b int"), other("ALTER TABLE"));
        assert_eq!(tag_of("truncate t"), other("TRUNCATE TABLE"));
        assert_eq!(tag_of("begin"), other("BEGIN"));
        assert_eq!(tag_of("end"), other("COMMIT"));
        assert_eq!(tag_of("grant select on t to u"), other("GRANT"));
    }
}
