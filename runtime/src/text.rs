//! Text from elsewhere (request bodies, monitored hosts, other tenants)
//! made safe to show: control characters (C0, DEL, C1) and the Unicode
//! bidirectional formatting characters (which reorder what a terminal or
//! a mail reader displays) become visible escapes. One function for the
//! terminal (`sondectl`), log lines and notifications; one for JSON text.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` must not reach a terminal or a reader as it is.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
        )
}

/// A value (a name, a comment, a table cell, a label) with every unsafe
/// character, line breaks included, written as `\u{…}`: it stays on its
/// line and cannot fake another. A backslash is left as it is: nothing
/// here is parsed back.
pub fn safe(s: &str) -> Cow<'_, str> {
    escape(s, false, |c, out| {
        let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
    })
}

/// A whole rendered text (lines built by the program) escaped as [`safe`]
/// does, but for its own line breaks.
pub fn safe_lines(s: &str) -> Cow<'_, str> {
    escape(s, true, |c, out| {
        let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
    })
}

/// Serialised JSON with every unsafe character left in it (DEL, C1,
/// bidi: `serde_json` writes them raw) written as a JSON `\uXXXX` escape;
/// the document means the same (its line breaks are outside strings).
pub fn safe_json(s: &str) -> Cow<'_, str> {
    escape(s, true, |c, out| {
        let _ = write!(out, "\\u{:04x}", u32::from(c));
    })
}

fn escape(s: &str, lines: bool, write: impl Fn(char, &mut String)) -> Cow<'_, str> {
    let keep = |c: char| (lines && c == '\n') || !is_unsafe(c);
    if s.chars().all(keep) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if keep(c) {
            out.push(c);
        } else {
            write(c, &mut out);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_controls_and_bidi_and_keeps_the_rest() {
        let hostile = "ok\u{1b}]0;owned\u{7}\u{1b}[2J\r\nfake line \u{202e}cod.exe \u{9b}31m é";
        assert_eq!(
            safe(hostile),
            "ok\\u{1b}]0;owned\\u{7}\\u{1b}[2J\\u{d}\\u{a}fake line \\u{202e}cod.exe \\u{9b}31m é"
        );
        assert_eq!(safe_lines("a\u{1b}\nb\r\n"), "a\\u{1b}\nb\\u{d}\n");
        assert!(matches!(safe("plain ünïcode → text"), Cow::Borrowed(_)));
        let json =
            serde_json::to_string(&serde_json::json!({"c": "a\u{7f}\u{202e}b\u{1b}"})).unwrap();
        let cleaned = safe_json(&json);
        assert!(
            !cleaned.chars().any(|c| c != '\n' && is_unsafe(c)),
            "{cleaned}"
        );
        let back: serde_json::Value = serde_json::from_str(&cleaned).unwrap();
        assert_eq!(back["c"], "a\u{7f}\u{202e}b\u{1b}");
    }
}
