//! Collecting the stream: rows and completions become one result per statement, within the row
//! and byte caps, and each is labelled with its psql-style tag (`UPDATE 1`, `SELECT 3`) when the
//! split lines up with what the server ran.

use super::kind::{Kind, classify};
use super::statements::Statement;
use crate::domain::StatementResult;

/// One statement's output as it came off the stream.
#[derive(Default)]
pub(super) struct Raw {
    pub(super) columns: Vec<String>,
    rows: Vec<Vec<Option<String>>>,
    /// Rows the statement produced, including any not kept because of the caps.
    pub(super) rows_seen: u64,
    affected: u64,
}

pub(super) struct Collector {
    max_rows: usize,
    max_bytes: usize,
    rows: usize,
    bytes: usize,
    pub(super) truncated: bool,
    /// Set once the statement that hit a cap is recorded: later ones run but are not recorded.
    stopped: bool,
    /// Statements the server completed.
    pub(super) executed: usize,
    pub(super) results: Vec<Raw>,
    current: Raw,
}

impl Collector {
    pub(super) fn new(max_rows: usize, max_bytes: usize) -> Collector {
        Collector {
            max_rows,
            max_bytes,
            rows: 0,
            bytes: 0,
            truncated: false,
            stopped: false,
            executed: 0,
            results: Vec::new(),
            current: Raw::default(),
        }
    }

    /// Takes a row. Past a cap rows are still read (the rest of the batch must run) but dropped
    /// unrendered.
    pub(super) fn row(
        &mut self,
        columns: impl FnOnce() -> Vec<String>,
        cells: impl FnOnce() -> Vec<Option<String>>,
    ) {
        if self.current.rows_seen == 0 {
            self.current.columns = columns();
        }
        self.current.rows_seen += 1;
        if self.truncated {
            return;
        }
        let cells = cells();
        let size: usize = cells.iter().flatten().map(String::len).sum();
        if self.rows >= self.max_rows || self.bytes + size > self.max_bytes {
            self.truncated = true;
            return;
        }
        self.rows += 1;
        self.bytes += size;
        self.current.rows.push(cells);
    }

    pub(super) fn statement_done(&mut self, affected: u64) {
        let mut raw = std::mem::take(&mut self.current);
        raw.affected = affected;
        if !self.stopped {
            self.results.push(raw);
            self.stopped = self.truncated;
        }
        self.executed += 1;
    }

    /// Labels each result with its statement's tag, if the split lines up with what ran.
    pub(super) fn finish(
        self,
        statements: &[Statement<'_>],
        complete: bool,
        counts_only_dml: bool,
    ) -> Vec<StatementResult> {
        let aligned = if complete {
            self.executed == statements.len()
        } else {
            self.executed <= statements.len()
        };
        self.results
            .into_iter()
            .enumerate()
            .map(|(i, raw)| {
                let kind = aligned.then(|| classify(&statements[i].words));
                label(raw, kind, counts_only_dml)
            })
            .collect()
    }
}

fn label(raw: Raw, kind: Option<Kind>, counts_only_dml: bool) -> StatementResult {
    let has_result_set = raw.rows_seen > 0 || !raw.columns.is_empty();
    let (rows_affected, tag) = match kind {
        Some(Kind::Dml { verb, .. }) => {
            // A RETURNING statement's rows are the rows it changed.
            let n = raw
                .affected
                .max(if has_result_set { raw.rows_seen } else { 0 });
            (Some(n), Some(dml_tag(&verb, n)))
        }
        _ if has_result_set => (None, None),
        Some(Kind::Rows) => {
            let n = if counts_only_dml { 0 } else { raw.affected };
            (Some(n), Some(format!("SELECT {n}")))
        }
        Some(Kind::CreateAs { .. }) if !counts_only_dml => {
            (Some(raw.affected), Some(format!("SELECT {}", raw.affected)))
        }
        Some(Kind::CreateAs { tag } | Kind::Other(tag)) => (None, Some(tag)),
        None => (Some(raw.affected), Some(format!("OK {}", raw.affected))),
    };
    StatementResult {
        columns: raw.columns,
        rows: raw.rows,
        rows_affected,
        tag,
    }
}

fn dml_tag(verb: &str, n: u64) -> String {
    match verb {
        // The 0 is the OID Postgres used to report for single-row inserts; psql still shows it.
        "INSERT" => format!("INSERT 0 {n}"),
        _ => format!("{verb} {n}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::executor::sql::statements::{Dialect, split};

    #[test]
    fn results_that_do_not_line_up_with_the_split_keep_a_generic_tag() {
        // MySQL's CALL returns a result set and a completion for one statement.
        let mut out = Collector::new(10, 1000);
        out.row(|| vec!["a".into()], || vec![Some("1".into())]);
        out.statement_done(0);
        out.statement_done(0);
        let statements = split("call p()", Dialect::Mysql);
        let results = out.finish(&statements, true, false);
        assert_eq!(results.len(), 2);
        assert_eq!(results[0].columns, ["a"]);
        assert_eq!(results[0].tag, None);
        assert_eq!(results[1].tag.as_deref(), Some("OK 0"));
    }

    #[test]
    fn inserts_are_tagged_like_psql() {
        assert_eq!(dml_tag("INSERT", 3), "INSERT 0 3");
        assert_eq!(dml_tag("DELETE", 0), "DELETE 0");
    }
}
