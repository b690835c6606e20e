//! Making text from outside storable. PostgreSQL `text` holds any UTF-8 except NUL;
//! Rust strings are already UTF-8, so NUL is the one byte left to deal with.

use std::borrow::Cow;

/// `s` with every NUL replaced by U+FFFD, borrowed when there is none (the usual case).
/// Used for free text hookrelay only keeps for people to read (attempt errors, reasons);
/// bytes that must stay exact are stored as `bytea` instead.
pub fn storable(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_nul_changes() {
        let cases = [
            ("", ""),
            ("plain", "plain"),
            ("ok\0nul", "ok\u{FFFD}nul"),
            ("\0\0", "\u{FFFD}\u{FFFD}"),
            ("héllo \u{FFFD}", "héllo \u{FFFD}"),
        ];
        for (input, want) in cases {
            assert_eq!(storable(input), want, "{input:?}");
        }
        assert!(matches!(storable("plain"), Cow::Borrowed(_)));
    }
}
