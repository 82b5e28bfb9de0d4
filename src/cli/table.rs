//! Renders execution results for a terminal exactly as psql's default aligned format does, so
//! output through hoopbot reads like output from psql itself.

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
/// characters, 2 for East Asian wide characters and emoji, 1 otherwise. The common ranges of
/// the Unicode tables psql uses, not all of them.
fn char_width(c: char) -> usize {
    const ZERO: &[(u32, u32)] = &[
        (0x0300, 0x036F),
        (0x0483, 0x0489),
        (0x0591, 0x05BD),
        (0x05BF, 0x05BF),
        (0x05C1, 0x05C2),
        (0x05C4, 0x05C5),
        (0x05C7, 0x05C7),
        (0x0610, 0x061A),
        (0x064B, 0x065F),
        (0x0670, 0x0670),
        (0x06D6, 0x06DC),
        (0x06DF, 0x06E4),
        (0x06E7, 0x06E8),
        (0x06EA, 0x06ED),
        (0x0900, 0x0902),
        (0x093C, 0x093C),
        (0x0941, 0x0948),
        (0x094D, 0x094D),
        (0x0E31, 0x0E31),
        (0x0E34, 0x0E3A),
        (0x0E47, 0x0E4E),
        (0x1AB0, 0x1AFF),
        (0x1DC0, 0x1DFF),
        (0x200B, 0x200F),
        (0x202A, 0x202E),
        (0x2060, 0x2064),
        (0x20D0, 0x20F0),
        (0xFE00, 0xFE0F),
        (0xFE20, 0xFE2F),
        (0xFEFF, 0xFEFF),
        (0xE0100, 0xE01EF),
    ];
    const WIDE: &[(u32, u32)] = &[
        (0x1100, 0x115F),
        (0x231A, 0x231B),
        (0x2329, 0x232A),
        (0x23E9, 0x23EC),
        (0x23F0, 0x23F0),
        (0x23F3, 0x23F3),
        (0x25FD, 0x25FE),
        (0x2614, 0x2615),
        (0x2648, 0x2653),
        (0x267F, 0x267F),
        (0x2693, 0x2693),
        (0x26A1, 0x26A1),
        (0x26AA, 0x26AB),
        (0x26BD, 0x26BE),
        (0x26C4, 0x26C5),
        (0x26CE, 0x26CE),
        (0x26D4, 0x26D4),
        (0x26EA, 0x26EA),
        (0x26F2, 0x26F3),
        (0x26F5, 0x26F5),
        (0x26FA, 0x26FA),
        (0x26FD, 0x26FD),
        (0x2705, 0x2705),
        (0x270A, 0x270B),
        (0x2728, 0x2728),
        (0x274C, 0x274C),
        (0x274E, 0x274E),
        (0x2753, 0x2755),
        (0x2757, 0x2757),
        (0x2795, 0x2797),
        (0x27B0, 0x27B0),
        (0x27BF, 0x27BF),
        (0x2B1B, 0x2B1C),
        (0x2B50, 0x2B50),
        (0x2B55, 0x2B55),
        (0x2E80, 0x303E),
        (0x3041, 0x33FF),
        (0x3400, 0x4DBF),
        (0x4E00, 0x9FFF),
        (0xA000, 0xA4CF),
        (0xA960, 0xA97F),
        (0xAC00, 0xD7A3),
        (0xF900, 0xFAFF),
        (0xFE10, 0xFE19),
        (0xFE30, 0xFE6F),
        (0xFF00, 0xFF60),
        (0xFFE0, 0xFFE6),
        (0x16FE0, 0x16FE4),
        (0x17000, 0x18CFF),
        (0x1B000, 0x1B2FF),
        (0x1F004, 0x1F004),
        (0x1F0CF, 0x1F0CF),
        (0x1F18E, 0x1F18E),
        (0x1F191, 0x1F19A),
        (0x1F200, 0x1F251),
        (0x1F300, 0x1F64F),
        (0x1F680, 0x1F6FF),
        (0x1F7E0, 0x1F7EB),
        (0x1F90C, 0x1F9FF),
        (0x1FA70, 0x1FAFF),
        (0x20000, 0x2FFFD),
        (0x30000, 0x3FFFD),
    ];
    let code = c as u32;
    let within = |table: &[(u32, u32)]| {
        table
            .binary_search_by(|&(lo, hi)| {
                if hi < code {
                    std::cmp::Ordering::Less
                } else if lo > code {
                    std::cmp::Ordering::Greater
                } else {
                    std::cmp::Ordering::Equal
                }
            })
            .is_ok()
    };
    if within(ZERO) {
        0
    } else if within(WIDE) {
        2
    } else {
        1
    }
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
