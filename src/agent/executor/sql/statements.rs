//! Splitting a batch into statements the way the server will, with each dialect's strings,
//! quoted identifiers, comments and BEGIN ... END bodies. Only used to label results, so it is
//! kept apart from running them: the server, not this split, decides what runs.

/// Whose rules for strings, identifiers and comments apply when splitting statements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::agent::executor) enum Dialect {
    Postgres,
    Mysql,
    Sqlite,
}

/// One statement of a batch: its text and its words (keywords and bare identifiers, upper-cased),
/// without strings, quoted identifiers and comments.
#[derive(Debug)]
pub(super) struct Statement<'a> {
    pub(super) text: &'a str,
    pub(super) words: Vec<Word>,
}

#[derive(Debug)]
pub(super) struct Word {
    pub(super) text: String,
    /// Parenthesis depth: 0 is the statement's own level.
    pub(super) depth: u32,
}

/// Splits a batch at the semicolons that end statements, skipping those inside strings, quoted
/// identifiers, comments, dollar quotes, parentheses and BEGIN ... END bodies. Statements that are
/// only whitespace and comments are dropped, as the servers skip them.
pub(super) fn split(sql: &str, dialect: Dialect) -> Vec<Statement<'_>> {
    Splitter {
        sql,
        bytes: sql.as_bytes(),
        dialect,
        at: 0,
    }
    .run()
}

struct Splitter<'a> {
    sql: &'a str,
    bytes: &'a [u8],
    dialect: Dialect,
    at: usize,
}

/// BEGIN ... END and CASE ... END nesting, so semicolons inside a trigger, procedure or
/// `BEGIN ATOMIC` body do not end the statement.
#[derive(Default)]
struct Blocks {
    depth: u32,
    /// An END was seen; whether it closes a block depends on the next word (END IF does not).
    pending_end: bool,
}

impl Blocks {
    fn settle(&mut self) {
        if std::mem::take(&mut self.pending_end) {
            self.depth = self.depth.saturating_sub(1);
        }
    }

    fn word(&mut self, word: &str, previous: &[Word]) {
        if std::mem::take(&mut self.pending_end) {
            match word {
                // Closers of statements that never opened a block.
                "IF" | "LOOP" | "WHILE" | "REPEAT" | "FOR" => return,
                // END CASE closes the CASE; the word opens nothing.
                "CASE" => {
                    self.depth = self.depth.saturating_sub(1);
                    return;
                }
                _ => self.depth = self.depth.saturating_sub(1),
            }
        }
        match word {
            "CASE" => self.depth += 1,
            // BEGIN as the first word starts a transaction, anywhere else a body; MariaDB's
            // anonymous `BEGIN NOT ATOMIC` is the exception.
            "BEGIN" if !previous.is_empty() => self.depth += 1,
            "ATOMIC"
                if previous.len() == 2
                    && previous[0].text == "BEGIN"
                    && previous[1].text == "NOT" =>
            {
                self.depth += 1
            }
            "END" if self.depth > 0 => self.pending_end = true,
            _ => {}
        }
    }
}

impl<'a> Splitter<'a> {
    fn peek(&self, offset: usize) -> Option<u8> {
        self.bytes.get(self.at + offset).copied()
    }

    fn run(mut self) -> Vec<Statement<'a>> {
        let mut statements = Vec::new();
        let mut start = 0;
        let mut words: Vec<Word> = Vec::new();
        let mut parens = 0u32;
        let mut blocks = Blocks::default();
        let mut has_code = false;
        // Inside MySQL's /*! ... */, whose content runs as code.
        let mut in_versioned_comment = false;
        while let Some(c) = self.peek(0) {
            if c.is_ascii_whitespace() {
                self.at += 1;
                continue;
            }
            if self.comment() {
                continue;
            }
            if self.dialect == Dialect::Mysql && c == b'/' && self.peek(1) == Some(b'*') {
                // A versioned comment, /*!50001 ... */ or /*M! ... */ (plain ones were
                // skipped above): its content is code.
                self.at += 2;
                while self
                    .peek(0)
                    .is_some_and(|b| b == b'!' || b == b'M' || b.is_ascii_digit())
                {
                    self.at += 1;
                }
                in_versioned_comment = true;
                continue;
            }
            if in_versioned_comment && c == b'*' && self.peek(1) == Some(b'/') {
                self.at += 2;
                in_versioned_comment = false;
                continue;
            }
            if is_word_start(c) {
                let begin = self.at;
                while self.peek(0).is_some_and(is_word_byte) {
                    self.at += 1;
                }
                let text =
                    String::from_utf8_lossy(&self.bytes[begin..self.at]).to_ascii_uppercase();
                // A prefixed string: E'...' (Postgres escapes), X'..', N'..', B'..'.
                if self.peek(0) == Some(b'\'') && text.len() == 1 {
                    let escapes = self.dialect == Dialect::Mysql || text == "E";
                    self.quoted(b'\'', escapes);
                } else {
                    blocks.word(&text, &words);
                    words.push(Word {
                        text,
                        depth: parens,
                    });
                }
                has_code = true;
                continue;
            }
            blocks.settle();
            if c == b';' && parens == 0 && blocks.depth == 0 {
                self.push(&mut statements, start, self.at, &mut words, has_code);
                self.at += 1;
                start = self.at;
                has_code = false;
                continue;
            }
            has_code = true;
            match c {
                b'\'' => self.quoted(b'\'', self.dialect == Dialect::Mysql),
                // A string in MySQL, an identifier elsewhere.
                b'"' => self.quoted(b'"', self.dialect == Dialect::Mysql),
                b'`' if self.dialect != Dialect::Postgres => self.quoted(b'`', false),
                b'[' if self.dialect == Dialect::Sqlite => {
                    self.at = self
                        .find_from(self.at + 1, b"]")
                        .map_or(self.bytes.len(), |e| e + 1);
                }
                b'$' if self.dialect == Dialect::Postgres => self.dollar(),
                b'(' => {
                    parens += 1;
                    self.at += 1;
                }
                b')' => {
                    parens = parens.saturating_sub(1);
                    self.at += 1;
                }
                _ => self.at += 1,
            }
        }
        self.push(
            &mut statements,
            start,
            self.bytes.len(),
            &mut words,
            has_code,
        );
        statements
    }

    fn push(
        &self,
        statements: &mut Vec<Statement<'a>>,
        start: usize,
        end: usize,
        words: &mut Vec<Word>,
        has_code: bool,
    ) {
        let words = std::mem::take(words);
        if has_code {
            statements.push(Statement {
                // Both ends are at ASCII bytes (a semicolon) or the ends of the text.
                text: self.sql.get(start..end).unwrap_or_default().trim(),
                words,
            });
        }
    }

    /// Skips a comment at the cursor, if there is one.
    fn comment(&mut self) -> bool {
        let (c, next) = (self.peek(0), self.peek(1));
        let line = match (c, next) {
            // MySQL needs whitespace after `--`; `1--1` is arithmetic there.
            (Some(b'-'), Some(b'-')) => {
                self.dialect != Dialect::Mysql
                    || self
                        .peek(2)
                        .is_none_or(|b| b.is_ascii_whitespace() || b.is_ascii_control())
            }
            (Some(b'#'), _) => self.dialect == Dialect::Mysql,
            _ => false,
        };
        if line {
            self.at = self
                .find_from(self.at, b"\n")
                .map_or(self.bytes.len(), |e| e + 1);
            return true;
        }
        if c != Some(b'/') || next != Some(b'*') {
            return false;
        }
        let versioned = self.dialect == Dialect::Mysql
            && (self.peek(2) == Some(b'!')
                || (self.peek(2) == Some(b'M') && self.peek(3) == Some(b'!')));
        if versioned {
            // Left to the caller: its content is code.
            return false;
        }
        self.at += 2;
        // Postgres block comments nest; the others end at the first */.
        let mut depth = 1;
        while depth > 0 {
            match (self.peek(0), self.peek(1)) {
                (None, _) => break,
                (Some(b'*'), Some(b'/')) => {
                    depth -= 1;
                    self.at += 2;
                }
                (Some(b'/'), Some(b'*')) if self.dialect == Dialect::Postgres => {
                    depth += 1;
                    self.at += 2;
                }
                _ => self.at += 1,
            }
        }
        true
    }

    /// Skips a quoted string or identifier; a doubled quote is a literal quote, and with
    /// `escapes` a backslash escapes the next character.
    fn quoted(&mut self, quote: u8, escapes: bool) {
        self.at += 1;
        while let Some(c) = self.peek(0) {
            self.at += 1;
            if escapes && c == b'\\' {
                self.at += 1;
            } else if c == quote {
                if self.peek(0) == Some(quote) {
                    self.at += 1;
                } else {
                    return;
                }
            }
        }
        self.at = self.at.min(self.bytes.len());
    }

    /// Skips a Postgres dollar-quoted string ($$...$$ or $tag$...$tag$); a `$` that opens none
    /// (a parameter such as $1) is passed over.
    fn dollar(&mut self) {
        let rest = &self.bytes[self.at + 1..];
        let tag_len = rest
            .iter()
            .take_while(|&&b| b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80)
            .count();
        let opens =
            rest.get(tag_len) == Some(&b'$') && rest.first().is_none_or(|b| !b.is_ascii_digit());
        if !opens {
            self.at += 1;
            return;
        }
        let delimiter_end = self.at + tag_len + 2;
        let delimiter = &self.bytes[self.at..delimiter_end];
        self.at = self
            .find_from(delimiter_end, delimiter)
            .map_or(self.bytes.len(), |e| e + delimiter.len());
    }

    fn find_from(&self, from: usize, needle: &[u8]) -> Option<usize> {
        self.bytes
            .get(from..)?
            .windows(needle.len())
            .position(|w| w == needle)
            .map(|p| from + p)
    }
}

fn is_word_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::executor::sql::kind::{Kind, classify};

    fn texts(sql: &str, dialect: Dialect) -> Vec<&str> {
        split(sql, dialect).into_iter().map(|s| s.text).collect()
    }

    #[test]
    fn postgres_splits_only_at_real_statement_ends() {
        let sql = "select 'a;b', \"x;y\", $$c;d$$, $tag$ e;$$f $tag$, E'\\';', $1;\n\
                   -- a comment; with semicolons\n\
                   select /* a; /* nested; */ b; */ 2;;\n\
                   create function f() returns int language sql begin atomic select 1; end;\n\
                   select case when true then 1 end; -- trailing comment";
        assert_eq!(
            texts(sql, Dialect::Postgres),
            [
                "select 'a;b', \"x;y\", $$c;d$$, $tag$ e;$$f $tag$, E'\\';', $1",
                "-- a comment; with semicolons\nselect /* a; /* nested; */ b; */ 2",
                "create function f() returns int language sql begin atomic select 1; end",
                "select case when true then 1 end",
            ]
        );
        assert!(
            texts(
                "  -- only a comment;\n /* and; another */ ",
                Dialect::Postgres
            )
            .is_empty()
        );
    }

    #[test]
    fn mysql_splits_only_at_real_statement_ends() {
        let sql = "select 'it\\'s;', \"q;\", `a;b`; # hash comment;\n\
                   select 1--1;\n\
                   create procedure p() begin select 1; if 1 then select 2; end if; \
                   case when 1 then select 3; end case; end;\n\
                   /*!40101 SET NAMES utf8mb4 */;";
        let statements = split(sql, Dialect::Mysql);
        assert_eq!(statements.len(), 4, "{statements:#?}");
        assert_eq!(statements[1].text, "# hash comment;\nselect 1--1");
        assert!(statements[2].text.ends_with("end case; end"));
        assert_eq!(classify(&statements[3].words), Kind::Other("SET".into()));
    }

    #[test]
    fn sqlite_splits_only_at_real_statement_ends() {
        let sql = "create trigger tr after insert on t begin update t set a = 1; \
                   select case when 1 then 2 end; end; select [a;b] from t";
        assert_eq!(
            texts(sql, Dialect::Sqlite),
            [
                "create trigger tr after insert on t begin update t set a = 1; \
                 select case when 1 then 2 end; end",
                "select [a;b] from t",
            ]
        );
    }
}
