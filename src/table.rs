//! Renders execution results exactly as psql's default aligned format does, so output through
//! hoopbot reads like output from psql itself: in a terminal (the CLI) and on a request page.

use crate::domain::{ExecutionResult, StatementResult};

/// Renders a result for a terminal, psql-style.
///
/// Each result set is a psql table followed, as in psql, by a blank line; a statement without one
/// prints its tag (`UPDATE 1`). A command connection's stdout is printed as it is. Errors are
/// left to the caller.
pub fn render(result: &ExecutionResult) -> String {
    let mut out = String::new();
    for statement in &result.results {
        render_statement(&mut out, statement);
    }
    if let Some(stdout) = &result.stdout {
        out.push_str(stdout);
    }
    if result.truncated {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str("(output truncated at the configured limit)\n");
    }
    out
}

/// A plain listing for hoopbot's own lists (requests, webhooks, attempts): a header row, then
/// rows, each column padded to its widest cell as a terminal shows it. Cells must be one line.
pub fn columns(headers: &[&str], rows: &[Vec<String>]) -> String {
    let width = |text: &str| text.chars().map(char_width).sum::<usize>();
    let widths: Vec<usize> = (0..headers.len())
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| width(c))
                .chain([width(headers[i])])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (cell, w) in cells.zip(&widths) {
            text.push_str(cell);
            spaces(&mut text, w.saturating_sub(width(cell)) + 2);
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

fn render_statement(out: &mut String, statement: &StatementResult) {
    if !statement.columns.is_empty() || !statement.rows.is_empty() {
        render_table(out, &statement.columns, &statement.rows);
    }
    // psql prints the tag after a result set only for INSERT/UPDATE/DELETE ... RETURNING; the
    // executor sets a tag on a result set in exactly those cases.
    if let Some(tag) = &statement.tag {
        out.push_str(tag);
        out.push('\n');
    }
}

/// One cell as psql lays it out: split into lines, control characters made visible.
struct Cell {
    lines: Vec<Line>,
}

struct Line {
    text: String,
    width: usize,
}

impl Cell {
    fn line(&self, index: usize) -> Option<&Line> {
        self.lines.get(index)
    }
}

/// psql's aligned format with its defaults (border 1, ASCII lines): centered headers, `|` between
/// columns, `+` marking a cell that continues on the next line.
fn render_table(out: &mut String, columns: &[String], rows: &[Vec<Option<String>>]) {
    let headers: Vec<Cell> = columns.iter().map(|c| format_cell(c)).collect();
    let cells: Vec<Vec<Cell>> = rows
        .iter()
        .map(|row| {
            (0..columns.len())
                .map(|j| format_cell(row.get(j).and_then(|v| v.as_deref()).unwrap_or("")))
                .collect()
        })
        .collect();
    let widths: Vec<usize> = (0..columns.len())
        .map(|j| {
            std::iter::once(&headers[j])
                .chain(cells.iter().map(|row| &row[j]))
                .flat_map(|cell| cell.lines.iter().map(|l| l.width))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let right: Vec<bool> = (0..columns.len())
        .map(|j| is_numeric_column(rows, j))
        .collect();
    let last = columns.len().saturating_sub(1);

    let header_lines = headers.iter().map(|h| h.lines.len()).max().unwrap_or(0);
    for k in 0..header_lines {
        for (j, header) in headers.iter().enumerate() {
            out.push(' ');
            match header.line(k) {
                Some(line) => {
                    let pad = widths[j] - line.width;
                    spaces(out, pad / 2);
                    out.push_str(&line.text);
                    spaces(out, pad - pad / 2);
                }
                None => spaces(out, widths[j]),
            }
            out.push(if header.line(k + 1).is_some() {
                '+'
            } else {
                ' '
            });
            if j < last {
                out.push('|');
            }
        }
        out.push('\n');
    }

    out.push('-');
    let rules: Vec<String> = widths.iter().map(|&w| "-".repeat(w)).collect();
    out.push_str(&rules.join("-+-"));
    out.push_str("-\n");

    for row in &cells {
        let height = row.iter().map(|c| c.lines.len()).max().unwrap_or(0);
        for k in 0..height {
            for (j, cell) in row.iter().enumerate() {
                out.push(' ');
                let Some(line) = cell.line(k) else {
                    // This cell has no more lines: pad, unless it is the last column.
                    if j < last {
                        spaces(out, widths[j]);
                        out.push_str(" |");
                    }
                    continue;
                };
                let continues = cell.line(k + 1).is_some();
                let pad = widths[j] - line.width;
                if right[j] {
                    spaces(out, pad);
                    out.push_str(&line.text);
                } else {
                    out.push_str(&line.text);
                    if j < last || continues {
                        spaces(out, pad);
                    }
                }
                if continues {
                    out.push('+');
                } else if j < last {
                    out.push(' ');
                }
                if j < last {
                    out.push('|');
                }
            }
            out.push('\n');
        }
    }

    let noun = if rows.len() == 1 { "row" } else { "rows" };
    out.push_str(&format!("({} {noun})\n\n", rows.len()));
}

fn spaces(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n(' ', n));
}

/// psql right-aligns numeric columns. Only the text is known here, so a column counts as numeric
/// when it has a value and every value is a number.
fn is_numeric_column(rows: &[Vec<Option<String>>], column: usize) -> bool {
    let mut values = rows
        .iter()
        .filter_map(|row| row.get(column).and_then(|v| v.as_deref()))
        .peekable();
    values.peek().is_some() && values.all(is_number)
}

fn is_number(s: &str) -> bool {
    if matches!(s, "NaN" | "Infinity" | "-Infinity") {
        return true;
    }
    let s = s.strip_prefix(['-', '+']).unwrap_or(s);
    let (mantissa, exponent) = match s.split_once(['e', 'E']) {
        Some((m, e)) => (m, Some(e.strip_prefix(['-', '+']).unwrap_or(e))),
        None => (s, None),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    !(whole.is_empty() && fraction.is_empty())
        && digits(whole)
        && digits(fraction)
        && exponent.is_none_or(|e| !e.is_empty() && digits(e))
}

/// Splits a value into display lines the way psql does: a newline starts a new line, a tab
/// advances to the next multiple of 8, `\r` and other control characters are shown escaped, and
/// so are bidirectional controls and invisible characters (see `crate::display`).
fn format_cell(value: &str) -> Cell {
    let mut lines = Vec::new();
    let mut text = String::new();
    let mut width = 0;
    for c in value.chars() {
        match c {
            '\n' => {
                lines.push(Line {
                    text: std::mem::take(&mut text),
                    width,
                });
                width = 0;
            }
            '\r' => {
                text.push_str("\\r");
                width += 2;
            }
            '\t' => loop {
                text.push(' ');
                width += 1;
                if width % 8 == 0 {
                    break;
                }
            },
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let escaped = format!("\\x{:02X}", c as u32);
                width += escaped.len();
                text.push_str(&escaped);
            }
            c if (0x80..0xa0).contains(&(c as u32)) => {
                let escaped = format!("\\u{:04X}", c as u32);
                width += escaped.len();
                text.push_str(&escaped);
            }
            // Beyond psql: bidirectional controls and invisible characters in a value could
            // reorder or hide what an approver reads, so they are escaped as everywhere else.
            c if crate::display::is_hidden(c) => {
                let escaped = c.escape_unicode().to_string();
                width += escaped.len();
                text.push_str(&escaped);
            }
            c => {
                text.push(c);
                width += char_width(c);
            }
        }
    }
    lines.push(Line { text, width });
    Cell { lines }
}

/// Terminal columns a printable character takes: 0 for combining marks and zero-width
/// characters, 2 for East Asian wide characters and emoji, 1 otherwise (Unicode's East Asian
/// Width tables, as terminals use them).
fn char_width(c: char) -> usize {
    unicode_width::UnicodeWidthChar::width(c).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    //! Expected outputs are psql 15's own, captured with `psql -X -c '<query>'` against a real
    //! server; each test rebuilds the result that query returns.

    use super::*;

    fn set(columns: &[&str], rows: &[&[Option<&str>]]) -> StatementResult {
        StatementResult {
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: rows
                .iter()
                .map(|row| row.iter().map(|v| v.map(str::to_string)).collect())
                .collect(),
            ..StatementResult::default()
        }
    }

    fn tag(tag: &str, rows_affected: Option<u64>) -> StatementResult {
        StatementResult {
            tag: Some(tag.into()),
            rows_affected,
            ..StatementResult::default()
        }
    }

    fn results(results: Vec<StatementResult>) -> ExecutionResult {
        ExecutionResult {
            results,
            ..ExecutionResult::default()
        }
    }

    /// `select 12345 as count`
    const COUNT: &str = concat!(" count \n", "-------\n", " 12345\n", "(1 row)\n", "\n",);

    #[test]
    fn listings_pad_columns_by_their_terminal_width() {
        let rows = vec![
            vec!["生产库".to_string(), "1".to_string()],
            vec!["prod".to_string(), "22".to_string()],
        ];
        assert_eq!(
            columns(&["NAME", "N"], &rows),
            "NAME    N\n生产库  1\nprod    22\n"
        );
    }

    #[test]
    fn a_single_number() {
        let result = results(vec![set(&["count"], &[&[Some("12345")]])]);
        assert_eq!(render(&result), COUNT);
    }

    /// `select * from (values (1, 'alice', 10.5, null::text), (22, null, -3, 'x'),
    /// (333, 'bob', null, 'longer text')) as t(id, name, score, note)`
    const MIXED: &str = concat!(
        " id  | name  | score |    note     \n",
        "-----+-------+-------+-------------\n",
        "   1 | alice |  10.5 | \n",
        "  22 |       |    -3 | x\n",
        " 333 | bob   |       | longer text\n",
        "(3 rows)\n",
        "\n",
    );

    #[test]
    fn numbers_go_right_text_left_and_nulls_are_empty() {
        let result = results(vec![set(
            &["id", "name", "score", "note"],
            &[
                &[Some("1"), Some("alice"), Some("10.5"), None],
                &[Some("22"), None, Some("-3"), Some("x")],
                &[Some("333"), Some("bob"), None, Some("longer text")],
            ],
        )]);
        assert_eq!(render(&result), MIXED);
    }

    /// `select 'abc' as "a longer header", 1 as x`
    const HEADER: &str = concat!(
        " a longer header | x \n",
        "-----------------+---\n",
        " abc             | 1\n",
        "(1 row)\n",
        "\n",
    );

    #[test]
    fn a_header_wider_than_its_values_sets_the_width() {
        let result = results(vec![set(
            &["a longer header", "x"],
            &[&[Some("abc"), Some("1")]],
        )]);
        assert_eq!(render(&result), HEADER);
    }

    /// `select 1 as a, 'x' as b where false`
    const EMPTY: &str = concat!(" a | b \n", "---+---\n", "(0 rows)\n", "\n",);

    #[test]
    fn no_rows_still_shows_the_columns() {
        let result = results(vec![set(&["a", "b"], &[])]);
        assert_eq!(render(&result), EMPTY);
    }

    /// `select;`
    const NO_COLUMNS: &str = concat!("--\n", "(1 row)\n", "\n",);

    #[test]
    fn a_row_without_columns() {
        let result = results(vec![set(&[], &[&[]])]);
        assert_eq!(render(&result), NO_COLUMNS);
    }

    /// `select 1 as id, E'line1\nline2 longer' as txt, 42 as n, null::text as nul
    /// union all select 2, 'short', 7, E'a\nb\nc'`
    const MULTILINE: &str = concat!(
        " id |     txt      | n  | nul \n",
        "----+--------------+----+-----\n",
        "  1 | line1       +| 42 | \n",
        "    | line2 longer |    | \n",
        "  2 | short        |  7 | a  +\n",
        "    |              |    | b  +\n",
        "    |              |    | c\n",
        "(2 rows)\n",
        "\n",
    );

    #[test]
    fn multi_line_cells_continue_with_a_plus() {
        let result = results(vec![set(
            &["id", "txt", "n", "nul"],
            &[
                &[Some("1"), Some("line1\nline2 longer"), Some("42"), None],
                &[Some("2"), Some("short"), Some("7"), Some("a\nb\nc")],
            ],
        )]);
        assert_eq!(render(&result), MULTILINE);
    }

    /// `select E'a\nb' as "multi\nhead", E'x\ny\nz' as c2, 'q' as c3`
    const MULTI_HEADER: &str = concat!(
        " multi+| c2 | c3 \n",
        " head  |    |    \n",
        "-------+----+----\n",
        " a    +| x +| q\n",
        " b     | y +| \n",
        "       | z  | \n",
        "(1 row)\n",
        "\n",
    );

    #[test]
    fn multi_line_headers() {
        let result = results(vec![set(
            &["multi\nhead", "c2", "c3"],
            &[&[Some("a\nb"), Some("x\ny\nz"), Some("q")]],
        )]);
        assert_eq!(render(&result), MULTI_HEADER);
    }

    /// `select E'a\tb' as tab, E'c\rd' as cr, 'é日本' as uni, E'\x01' as ctl, 'a😀b' as emoji`
    const SPECIAL: &str = concat!(
        "    tab    |  cr  |  uni  | ctl  | emoji \n",
        "-----------+------+-------+------+-------\n",
        " a       b | c\\rd | é日本 | \\x01 | a😀b\n",
        "(1 row)\n",
        "\n",
    );

    #[test]
    fn widths_follow_the_unicode_tables_not_a_subset_of_them() {
        // Combining marks the earlier hand-made table missed (Devanagari stress, Tamil vowel sign)
        // take no column; Hangul, CJK and emoji take two.
        for (c, width) in [
            ('a', 1),
            ('\u{0951}', 0),
            ('\u{0BC0}', 0),
            ('\u{0301}', 0),
            ('한', 2),
            ('日', 2),
            ('\u{1F9D1}', 2),
        ] {
            assert_eq!(super::char_width(c), width, "{c:?}");
        }
    }

    #[test]
    fn tabs_control_characters_and_wide_characters() {
        let result = results(vec![set(
            &["tab", "cr", "uni", "ctl", "emoji"],
            &[&[
                Some("a\tb"),
                Some("c\rd"),
                Some("é日本"),
                Some("\u{1}"),
                Some("a😀b"),
            ]],
        )]);
        assert_eq!(render(&result), SPECIAL);
    }

    #[test]
    fn bidi_and_invisible_characters_are_escaped_and_aligned() {
        let result = results(vec![set(
            &["name", "n"],
            &[
                &[Some("admin\u{200b}"), Some("1")],
                &[Some("x\u{202e}yz\u{2069}"), Some("2")],
                &[Some("plain"), Some("3")],
            ],
        )]);
        assert_eq!(
            render(&result),
            concat!(
                "        name         | n \n",
                "---------------------+---\n",
                " admin\\u{200b}       | 1\n",
                " x\\u{202e}yz\\u{2069} | 2\n",
                " plain               | 3\n",
                "(3 rows)\n",
                "\n",
            )
        );
    }

    /// `create temp table t(id int, name text); insert into t values (1,'a'),(2,null);
    /// update t set name='x' where id = 1 returning id, name; select * from t order by id;
    /// delete from t`
    const SEVERAL: &str = concat!(
        "CREATE TABLE\n",
        "INSERT 0 2\n",
        " id | name \n",
        "----+------\n",
        "  1 | x\n",
        "(1 row)\n",
        "\n",
        "UPDATE 1\n",
        " id | name \n",
        "----+------\n",
        "  1 | x\n",
        "  2 | \n",
        "(2 rows)\n",
        "\n",
        "DELETE 2\n",
    );

    #[test]
    fn several_statements_in_order_with_their_tags() {
        let returning = StatementResult {
            tag: Some("UPDATE 1".into()),
            rows_affected: Some(1),
            ..set(&["id", "name"], &[&[Some("1"), Some("x")]])
        };
        let result = results(vec![
            tag("CREATE TABLE", None),
            tag("INSERT 0 2", Some(2)),
            returning,
            set(
                &["id", "name"],
                &[&[Some("1"), Some("x")], &[Some("2"), None]],
            ),
            tag("DELETE 2", Some(2)),
        ]);
        assert_eq!(render(&result), SEVERAL);
    }

    #[test]
    fn truncation_is_noted_last() {
        let result = ExecutionResult {
            truncated: true,
            ..results(vec![set(&["count"], &[&[Some("12345")]])])
        };
        assert_eq!(
            render(&result),
            format!("{COUNT}(output truncated at the configured limit)\n")
        );
    }

    #[test]
    fn command_output_is_printed_as_it_is() {
        let result = ExecutionResult {
            stdout: Some("hello | world\n  spaced".into()),
            stderr: Some("not shown here".into()),
            exit_code: Some(0),
            ..ExecutionResult::default()
        };
        assert_eq!(render(&result), "hello | world\n  spaced");
        let truncated = ExecutionResult {
            truncated: true,
            ..result
        };
        assert_eq!(
            render(&truncated),
            "hello | world\n  spaced\n(output truncated at the configured limit)\n"
        );
    }

    #[test]
    fn errors_are_left_to_the_caller() {
        let result = ExecutionResult {
            error: Some("relation \"nope\" does not exist".into()),
            ..ExecutionResult::default()
        };
        assert_eq!(render(&result), "");
    }

    #[test]
    fn what_counts_as_a_number() {
        for yes in [
            "0", "-3", "+4", "10.5", ".5", "5.", "1e+15", "1.5E-300", "NaN", "Infinity",
        ] {
            assert!(is_number(yes), "{yes}");
        }
        for no in [
            "", "-", ".", "1e", "1.2.3", "12abc", "0x1F", "t", "1 2", "inf",
        ] {
            assert!(!is_number(no), "{no}");
        }
    }

    #[test]
    fn rows_shorter_than_the_columns_do_not_panic() {
        let result = results(vec![set(&["a", "b"], &[&[Some("1")]])]);
        assert_eq!(render(&result), " a | b \n---+---\n 1 | \n(1 row)\n\n");
    }
}
