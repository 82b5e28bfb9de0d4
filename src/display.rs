//! How text that users wrote is shown, on every surface (the CLI now; Slack, Teams and the web app
//! next). What an approver sees must be what runs, so nothing may hide, reorder or forge text:
//!
//! - [`command`] shows a command verbatim, except that every character a reader cannot see is
//!   made visible as an escape (`\u{200b}`), with [`Warning`]s naming each invisible, bidirectional
//!   control or mixed-script character by line and column;
//! - [`single_line`] shows a one-line field (justification, reason, name, error) on one line, so it
//!   can never look like more output of the surface itself;
//! - [`visible`] shows other multi-line text, such as a program's output, with the same escapes.
//!
//! The server stores and runs the exact text; only its display is made inert. Escapes are Rust's
//! `\u{…}` form, so the exact characters can be read off the screen.

use std::fmt;

use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
use unicode_script::{Script, UnicodeScript};

/// A command as an approver should see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShownCommand {
    /// The command with every hidden character escaped; newlines and tabs kept.
    pub text: String,
    /// One warning per kind of suspicious content found, in the order of [`Suspicion`].
    pub warnings: Vec<Warning>,
}

/// Shows a command for approval: see [`ShownCommand`].
pub fn command(command: &str) -> ShownCommand {
    let mut invisible = Vec::new();
    let mut bidi = Vec::new();
    for (c, line, column) in positions(command) {
        let found = match class(c) {
            Class::Bidi => &mut bidi,
            // Newlines and tabs are a command's own layout, shown as they are.
            Class::Invisible if !matches!(c, '\n' | '\t') => &mut invisible,
            _ => continue,
        };
        found.push(Finding {
            line,
            column,
            what: code_point(c),
        });
    }
    let (mixed, look_alike): (Vec<_>, Vec<_>) = mixed_script_words(command)
        .into_iter()
        .partition(|(kind, _)| *kind == Suspicion::MixedScript);
    let findings = |words: Vec<(Suspicion, Finding)>| words.into_iter().map(|(_, f)| f).collect();
    let warnings = [
        (Suspicion::Invisible, invisible),
        (Suspicion::Bidi, bidi),
        (Suspicion::MixedScript, findings(mixed)),
        (Suspicion::LookAlike, findings(look_alike)),
    ]
    .into_iter()
    .filter(|(_, found)| !found.is_empty())
    .map(|(kind, found)| Warning { kind, found })
    .collect();
    ShownCommand {
        text: visible(command),
        warnings,
    }
}

/// Multi-line text with every hidden character escaped; newlines and tabs are kept.
pub fn visible(text: &str) -> String {
    escape(text, |c| matches!(c, '\n' | '\t'))
}

/// A field meant to be one line, shown as one line: newlines, carriage returns and tabs become
/// `\n`, `\r` and `\t`, every other hidden character an escape.
pub fn single_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_hidden(c) => out.push_str(&c.escape_unicode().to_string()),
            c => out.push(c),
        }
    }
    out
}

/// Whether `c` must be shown as an escape: a reader cannot see it, or it changes how the text
/// around it is drawn. Control characters (newlines and tabs included: callers decide whether to
/// keep those), bidirectional controls, format characters (Cf), line and paragraph separators
/// (Zl, Zp), private-use (Co) and unassigned (Cn) code points, default-ignorable code points such
/// as the Hangul fillers and the soft hyphen, spaces other than the ASCII one, and the blank
/// braille pattern.
pub fn is_hidden(c: char) -> bool {
    class(c) != Class::Shown
}

fn escape(text: &str, keep: impl Fn(char) -> bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if keep(c) || !is_hidden(c) {
            out.push(c);
        } else {
            out.push_str(&c.escape_unicode().to_string());
        }
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Shown,
    Invisible,
    Bidi,
}

fn class(c: char) -> Class {
    if is_bidi_control(c) {
        return Class::Bidi;
    }
    if c == ' ' || c.is_ascii_graphic() {
        return Class::Shown;
    }
    let hidden_category = matches!(
        c.general_category(),
        GeneralCategory::Control
            | GeneralCategory::Format
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
            | GeneralCategory::PrivateUse
            | GeneralCategory::Unassigned
            | GeneralCategory::Surrogate
            // Look like an ASCII space but are not one (U+00A0, U+2003, U+3000, ...).
            | GeneralCategory::SpaceSeparator
    );
    if hidden_category || is_default_ignorable(c) || is_blank_glyph(c) {
        Class::Invisible
    } else {
        Class::Shown
    }
}

/// The Unicode characters that change the display order of the text around them.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Default_Ignorable_Code_Point (Unicode's DerivedCoreProperties.txt): code points a renderer
/// shows as nothing. Most are also Cf or Cn; this adds the fillers and marks that are letters or
/// combining marks by category but draw nothing (U+115F, U+1160, U+3164, U+FFA0, U+034F, the
/// variation selectors, ...).
fn is_default_ignorable(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'..='\u{1160}'
            | '\u{17B4}'..='\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF0}'..='\u{FFF8}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E0FFF}'
    )
}

/// Characters that are neither spaces nor default-ignorable but are drawn as an empty cell: the
/// blank braille pattern U+2800 shows like a space (reproduced in `hoop requests show`).
fn is_blank_glyph(c: char) -> bool {
    c == '\u{2800}'
}

/// Each character with its line and column (both from 1; columns count characters). Only `\n`
/// starts a line, as it does on screen once other control characters are escaped.
fn positions(text: &str) -> impl Iterator<Item = (char, usize, usize)> + '_ {
    let (mut line, mut column) = (1, 0);
    text.chars().map(move |c| {
        column += 1;
        let at = (c, line, column);
        if c == '\n' {
            line += 1;
            column = 0;
        }
        at
    })
}

/// Words whose letters come from scripts that are not normally written together, the usual sign
/// of a look-alike letter (Cyrillic `а` in `аdmin`). Following Unicode's "highly restrictive"
/// level (UTS #39), one script is fine, and so is Latin with Han and the Japanese kana, with Han
/// and Bopomofo, or with Han and Hangul.
fn mixed_script_words(text: &str) -> Vec<(Suspicion, Finding)> {
    let mut found = Vec::new();
    let mut word: Vec<(char, usize, usize)> = Vec::new();
    let in_word = |c: char| c.is_alphanumeric() || c == '_' || c.script() == Script::Inherited;
    for (c, line, column) in positions(text).chain([('\n', 0, 0)]) {
        if in_word(c) && !is_hidden(c) {
            word.push((c, line, column));
            continue;
        }
        if let Some(finding) = mixed_script(&word) {
            found.push(finding);
        }
        word.clear();
    }
    found
}

fn mixed_script(word: &[(char, usize, usize)]) -> Option<(Suspicion, Finding)> {
    let &(_, line, column) = word.first()?;
    let mut scripts: Vec<(Script, usize)> = Vec::new();
    for &(c, ..) in word {
        let script = c.script();
        if matches!(script, Script::Common | Script::Inherited | Script::Unknown) {
            continue;
        }
        match scripts.iter_mut().find(|(s, _)| *s == script) {
            Some((_, count)) => *count += 1,
            None => scripts.push((script, 1)),
        }
    }
    let names: Vec<Script> = scripts.iter().map(|(s, _)| *s).collect();
    if let [script] = names[..]
        && script != Script::Latin
        && word
            .iter()
            .all(|&(c, ..)| c.script() != script || looks_latin(c))
    {
        // One script, but every letter of it has a Latin twin: `'ВОВ'` reads as `'BOB'`.
        let shown: String = word.iter().map(|&(c, ..)| c).collect();
        let what = format!("\"{}\" ({})", visible(&shown), script.full_name());
        return Some((Suspicion::LookAlike, Finding { line, column, what }));
    }
    if writes_together(&names) {
        return None;
    }
    // The script most of the word is in; the letters of the others are the suspects.
    let (main, _) = *scripts
        .iter()
        .rev()
        .max_by_key(|(_, count)| *count)
        .expect("a mixed word has scripts");
    let mut suspects: Vec<String> = Vec::new();
    for &(c, ..) in word {
        let script = c.script();
        if script == main || matches!(script, Script::Common | Script::Inherited) {
            continue;
        }
        let suspect = format!("{} {}", script.full_name(), code_point(c));
        if !suspects.contains(&suspect) {
            suspects.push(suspect);
        }
    }
    let shown: String = word.iter().map(|&(c, ..)| c).collect();
    let what = format!(
        "\"{}\" ({} among {} letters)",
        visible(&shown),
        suspects.join(", "),
        main.full_name()
    );
    Some((Suspicion::MixedScript, Finding { line, column, what }))
}

/// Cyrillic and Greek letters drawn like a Latin letter in common fonts (from Unicode's
/// confusables, UTS #39): a word made only of them passes for a Latin word.
fn looks_latin(c: char) -> bool {
    matches!(
        c,
        'а' | 'е'
            | 'о'
            | 'р'
            | 'с'
            | 'у'
            | 'х'
            | 'ѕ'
            | 'і'
            | 'ј'
            | 'һ'
            | 'ԁ'
            | 'ԛ'
            | 'ԝ'
            | 'ӏ'
            | 'А'
            | 'В'
            | 'Е'
            | 'К'
            | 'М'
            | 'Н'
            | 'О'
            | 'Р'
            | 'С'
            | 'Т'
            | 'Х'
            | 'Ѕ'
            | 'І'
            | 'Ј'
            | 'Ү'
            | 'Ԛ'
            | 'Ԝ'
            | 'Ӏ'
            | 'Α'
            | 'Β'
            | 'Ε'
            | 'Ζ'
            | 'Η'
            | 'Ι'
            | 'Κ'
            | 'Μ'
            | 'Ν'
            | 'Ο'
            | 'Ρ'
            | 'Τ'
            | 'Υ'
            | 'Χ'
            | 'ο'
            | 'ν'
            | 'ι'
            | 'κ'
            | 'ρ'
            | 'υ'
            | 'χ'
            | 'α'
    )
}

/// Whether a word's scripts are ones written together (UTS #39, highly restrictive).
fn writes_together(scripts: &[Script]) -> bool {
    use Script::{Bopomofo, Han, Hangul, Hiragana, Katakana, Latin};
    let within = |allowed: &[Script]| scripts.iter().all(|s| allowed.contains(s));
    scripts.len() <= 1
        || within(&[Latin, Han, Hiragana, Katakana])
        || within(&[Latin, Han, Bopomofo])
        || within(&[Latin, Han, Hangul])
}

fn code_point(c: char) -> String {
    format!("U+{:04X}", c as u32)
}

/// What kind of thing a [`Warning`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suspicion {
    /// Characters nobody can see: zero-width, format, control, filler, unusual space,
    /// private-use or unassigned characters.
    Invisible,
    /// Characters that reorder the text around them (Trojan Source).
    Bidi,
    /// Words mixing letters of scripts that are not written together (look-alike letters).
    MixedScript,
    /// Words written wholly in another script's look-alikes of Latin letters (`ВОВ` for `BOB`).
    LookAlike,
}

/// One suspicious character or word, and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The line, from 1.
    pub line: usize,
    /// The column in characters, from 1; for a word, where it starts.
    pub column: usize,
    /// What was found, ready to show: `U+200B`, or a word and the letters that do not belong.
    pub what: String,
}

/// A warning to show with a command, e.g. "this command contains 1 invisible character (U+200B
/// at line 1, column 31)". Its `Display` is that sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// What was found.
    pub kind: Suspicion,
    /// Every occurrence, in the order of the text.
    pub found: Vec<Finding>,
}

/// Occurrences named in a warning; the rest are counted.
const LISTED: usize = 5;

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.found.len();
        let (one, many) = match self.kind {
            Suspicion::Invisible => ("invisible character", "invisible characters"),
            Suspicion::Bidi => (
                "bidirectional control character",
                "bidirectional control characters",
            ),
            Suspicion::MixedScript => ("word mixing scripts", "words mixing scripts"),
            Suspicion::LookAlike => (
                "word made of look-alikes of Latin letters",
                "words made of look-alikes of Latin letters",
            ),
        };
        let listed: Vec<String> = self
            .found
            .iter()
            .take(LISTED)
            .map(|x| format!("{} at line {}, column {}", x.what, x.line, x.column))
            .collect();
        let more = match n.saturating_sub(LISTED) {
            0 => String::new(),
            rest => format!("; and {rest} more"),
        };
        write!(
            f,
            "this command contains {n} {} ({}{more})",
            if n == 1 { one } else { many },
            listed.join("; ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_and_bidi_characters_are_shown_not_obeyed() {
        let cases = [
            ("SELECT 1;\n\tSELECT 2", "SELECT 1;\n\tSELECT 2"),
            (
                "DROP TABLE users;\rSELECT 1",
                "DROP TABLE users;\\u{d}SELECT 1",
            ),
            (
                "rm -rf /\x1b[2K\x1b[1Aecho hi",
                "rm -rf /\\u{1b}[2K\\u{1b}[1Aecho hi",
            ),
            (
                "x = 'admin\u{202E} \u{2066}// ok\u{2069}'",
                "x = 'admin\\u{202e} \\u{2066}// ok\\u{2069}'",
            ),
            ("del\u{7f} c1\u{9b}", "del\\u{7f} c1\\u{9b}"),
            ("naïve 名前 ✓ привет", "naïve 名前 ✓ привет"),
        ];
        for (raw, shown) in cases {
            assert_eq!(visible(raw), shown, "{raw:?}");
        }
    }

    #[test]
    fn every_invisible_class_is_escaped() {
        let hidden = [
            ('\u{200B}', "zero-width space (Cf)"),
            ('\u{2060}', "word joiner (Cf)"),
            ('\u{FEFF}', "byte-order mark (Cf)"),
            ('\u{E0041}', "tag letter (Cf)"),
            ('\u{2028}', "line separator (Zl)"),
            ('\u{2029}', "paragraph separator (Zp)"),
            ('\u{E000}', "private use (Co)"),
            ('\u{F0000}', "supplementary private use (Co)"),
            ('\u{0378}', "unassigned (Cn)"),
            ('\u{3164}', "Hangul filler"),
            ('\u{115F}', "Hangul choseong filler"),
            ('\u{1160}', "Hangul jungseong filler"),
            ('\u{FFA0}', "halfwidth Hangul filler"),
            ('\u{00AD}', "soft hyphen"),
            ('\u{034F}', "combining grapheme joiner"),
            ('\u{FE0F}', "variation selector"),
            ('\u{00A0}', "no-break space"),
            ('\u{3000}', "ideographic space"),
            ('\u{0000}', "NUL"),
            ('\u{0085}', "next line (C1)"),
            ('\u{2800}', "blank braille pattern"),
        ];
        for (c, name) in hidden {
            assert!(is_hidden(c), "{name}");
            let text = format!("a{c}b");
            let escaped = format!("a\\u{{{:x}}}b", c as u32);
            assert_eq!(visible(&text), escaped, "{name}");
            assert_eq!(single_line(&text), escaped, "{name}");
            let shown = command(&text);
            assert_eq!(shown.text, escaped, "{name}");
            assert_eq!(shown.warnings.len(), 1, "{name}");
            assert_eq!(shown.warnings[0].kind, Suspicion::Invisible, "{name}");
        }
        for c in ['a', 'é', 'Ж', '名', '✓', '€', ' ', '~', 'ع'] {
            assert!(!is_hidden(c), "{c}");
        }
    }

    #[test]
    fn the_reproduced_command_shows_its_zero_width_space() {
        let shown = command("DELETE FROM accts WHERE name <> 'admin\u{200b}';");
        assert_eq!(
            shown.text,
            "DELETE FROM accts WHERE name <> 'admin\\u{200b}';"
        );
        let warnings: Vec<String> = shown.warnings.iter().map(ToString::to_string).collect();
        assert_eq!(
            warnings,
            ["this command contains 1 invisible character (U+200B at line 1, column 39)"]
        );
    }

    #[test]
    fn warnings_count_lines_and_columns_in_characters() {
        let shown = command("SELECT 'é\u{200b}';\n\tSELECT\u{00a0}2;\n-- 名\u{2060}");
        assert_eq!(
            shown.warnings[0].to_string(),
            "this command contains 3 invisible characters (U+200B at line 1, column 10; \
             U+00A0 at line 2, column 8; U+2060 at line 3, column 5)"
        );
        assert_eq!(shown.warnings.len(), 1);
    }

    #[test]
    fn long_lists_are_cut_and_counted() {
        let shown = command(&"x\u{200b}".repeat(7));
        assert_eq!(
            shown.warnings[0].to_string(),
            "this command contains 7 invisible characters (U+200B at line 1, column 2; \
             U+200B at line 1, column 4; U+200B at line 1, column 6; U+200B at line 1, column 8; \
             U+200B at line 1, column 10; and 2 more)"
        );
    }

    #[test]
    fn bidi_controls_get_a_warning_of_their_own() {
        let shown = command("x = 1 \u{202E}-- \u{2066}ok\u{2069}\r");
        let warnings: Vec<String> = shown.warnings.iter().map(ToString::to_string).collect();
        assert_eq!(
            warnings,
            [
                "this command contains 1 invisible character (U+000D at line 1, column 15)",
                "this command contains 3 bidirectional control characters (U+202E at line 1, \
                 column 7; U+2066 at line 1, column 11; U+2069 at line 1, column 14)",
            ]
        );
    }

    #[test]
    fn words_mixing_latin_and_cyrillic_are_named() {
        // The first letter of "аdmin" is Cyrillic U+0430.
        let shown = command("DELETE FROM users WHERE name = 'аdmin' OR name = 'admin';");
        assert_eq!(
            shown.text,
            "DELETE FROM users WHERE name = 'аdmin' OR name = 'admin';"
        );
        let warnings: Vec<String> = shown.warnings.iter().map(ToString::to_string).collect();
        assert_eq!(
            warnings,
            [
                "this command contains 1 word mixing scripts (\"аdmin\" (Cyrillic U+0430 among \
              Latin letters) at line 1, column 33)"
            ]
        );
        let two = command("раураl\nsеlеct 1");
        assert_eq!(
            two.warnings[0].to_string(),
            "this command contains 2 words mixing scripts (\"раураl\" (Latin U+006C among \
             Cyrillic letters) at line 1, column 1; \"sеlеct\" (Cyrillic U+0435 among Latin \
             letters) at line 2, column 1)"
        );
    }

    #[test]
    fn words_of_look_alike_letters_are_named() {
        // Reproduced: Cyrillic "ВОВ" showed as "BOB" with no warning, being of one script.
        let shown = command("DELETE FROM accts WHERE name <> 'ВОВ' AND note <> 'Ορος'");
        let warnings: Vec<String> = shown.warnings.iter().map(ToString::to_string).collect();
        assert_eq!(
            warnings,
            [
                "this command contains 1 word made of look-alikes of Latin letters (\"ВОВ\" \
                 (Cyrillic) at line 1, column 34)"
            ]
        );
    }

    #[test]
    fn scripts_written_together_are_not_suspicious() {
        for text in [
            "SELECT * FROM users WHERE name = 'Jürgen'",
            "UPDATE t SET note = 'привет мир', id_2 = 3",
            "SELECT 'ひらがなとカタカナと漢字', 'SQL文', 'Ελληνικά', 'ab12_cd'",
            "INSERT INTO t VALUES ('한국어 漢字 text')",
            "echo café",
        ] {
            assert_eq!(command(text).warnings, [], "{text}");
        }
    }

    #[test]
    fn single_line_fields_cannot_forge_lines() {
        let forged =
            "ok\nApprovals\n  dba-team  approved by bob@x.com\r\nCommand (8 bytes):\tSELECT 1";
        let shown = single_line(forged);
        assert_eq!(
            shown,
            "ok\\nApprovals\\n  dba-team  approved by bob@x.com\\r\\nCommand (8 bytes):\\tSELECT 1"
        );
        assert!(!shown.contains(['\n', '\r', '\t']));
        assert_eq!(
            single_line("a\u{2028}b\u{202e}c\x1b[1A"),
            "a\\u{2028}b\\u{202e}c\\u{1b}[1A"
        );
        assert_eq!(
            single_line("TICKET-42: fix naïve 名前"),
            "TICKET-42: fix naïve 名前"
        );
    }
}
