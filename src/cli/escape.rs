//! Text from requests shown in a terminal exactly, but inert: control characters and bidirectional
//! overrides are shown as escapes, so a command cannot repaint the approver's screen, hide part of
//! itself (`\r`, ANSI sequences) or reorder what is displayed (Trojan Source).

/// `text` with everything a terminal would interpret, other than newlines and tabs, made visible.
pub fn terminal_safe(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' | '\t' => out.push(c),
            c if c.is_control() || is_bidi_control(c) => {
                out.push_str(&c.escape_unicode().to_string());
            }
            c => out.push(c),
        }
    }
    out
}

/// The Unicode characters that change the display order of the text around them.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::terminal_safe;

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
            ("naïve 名前 ✓", "naïve 名前 ✓"),
        ];
        for (raw, shown) in cases {
            assert_eq!(terminal_safe(raw), shown, "{raw:?}");
        }
    }
}
