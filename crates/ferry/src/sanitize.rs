//! Text from registries (error messages, platform strings, annotations, names) is printed on
//! the user's terminal; a hostile registry must not be able to clear the screen, retitle the
//! window or reorder what is shown. Everything that reaches stderr passes through [`clean`],
//! which turns every control character into a visible escape.

use std::borrow::Cow;
use std::fmt::Write as _;

/// `text` with every C0 control (tab and newline too: one message is one line), DEL, C1
/// control and bidirectional formatting character replaced by a visible escape (`\x1b`,
/// `\n`, `\u{202e}`). An escape sequence loses its ESC, so the rest of it is shown as text.
/// Backslashes are left alone: the point is a safe terminal, not a reversible encoding.
pub fn clean(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if !is_unsafe(c) {
            out.push(c);
            continue;
        }
        let _ = match c {
            '\n' => out.write_str("\\n"),
            '\r' => out.write_str("\\r"),
            '\t' => out.write_str("\\t"),
            c if (c as u32) < 0x100 => write!(out, "\\x{:02x}", c as u32),
            c => write!(out, "\\u{{{:04x}}}", c as u32),
        };
    }
    Cow::Owned(out)
}

fn is_unsafe(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}'
        // Bidi embeddings, overrides and isolates (the "Trojan Source" set) and the marks.
        | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        | '\u{200e}' | '\u{200f}' | '\u{061c}'
    )
}

#[cfg(test)]
mod tests {
    use super::clean;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        let s =
            "GET https://r.example/v2/a/b/manifests/1 returned 404 (MANIFEST_UNKNOWN) → ünïcode";
        assert!(matches!(clean(s), std::borrow::Cow::Borrowed(x) if x == s));
    }

    #[test]
    fn escape_sequences_lose_their_escape() {
        assert_eq!(clean("a\x1b[2Jb"), "a\\x1b[2Jb");
        assert_eq!(clean("\x1b]0;pwned\x07title"), "\\x1b]0;pwned\\x07title");
    }

    #[test]
    fn every_c0_del_and_c1_control_is_escaped() {
        for c in (0u32..0x20).chain(0x7f..0xa0) {
            let ch = char::from_u32(c).unwrap();
            let out = clean(&ch.to_string()).into_owned();
            assert!(
                out.starts_with('\\') && out.chars().all(|c| c.is_ascii_graphic()),
                "{c:#x} became {out:?}"
            );
        }
        assert_eq!(clean("\u{9b}2J"), "\\x9b2J");
        assert_eq!(clean("a\nb\r\tc"), "a\\nb\\r\\tc");
    }

    #[test]
    fn bidi_controls_are_escaped() {
        for c in [
            '\u{202a}', '\u{202e}', '\u{2066}', '\u{2069}', '\u{200f}', '\u{061c}',
        ] {
            let out = clean(&format!("x{c}y")).into_owned();
            assert_eq!(out, format!("x\\u{{{:04x}}}y", c as u32));
        }
    }
}
