//! Subscription filters. `event_types` are globs over `<table>.<op>` (`orders.*`,
//! `*.delete`); the store matches them with SQL `LIKE`, so each glob is translated
//! once, when the subscription is saved, and matching happens inside the same store
//! transaction that writes the events.

/// Why a glob was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GlobError {
    #[error("must not be empty")]
    Empty,
    #[error("must not contain control characters (found {0:?})")]
    BadChar(char),
}

/// Checks a glob. Table names may hold any character (`"Order Items"` gives the type
/// `Order Items.insert`), and the `LIKE` translation escapes its own wildcards, so
/// only control characters are refused.
pub fn validate_glob(glob: &str) -> Result<(), GlobError> {
    if glob.is_empty() {
        return Err(GlobError::Empty);
    }
    match glob.chars().find(|c| c.is_control()) {
        Some(c) => Err(GlobError::BadChar(c)),
        None => Ok(()),
    }
}

/// `orders.*` → `orders.%`; `_`, `%` and `\` are escaped so only `*` and `?` are wild.
pub fn glob_to_like(glob: &str) -> String {
    let mut out = String::with_capacity(glob.len() + 4);
    for c in glob.chars() {
        match c {
            '*' => out.push('%'),
            '?' => out.push('_'),
            '%' | '_' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// The same rule as the SQL `LIKE`, for code that filters without the store. `?`
/// stands for one character, as `_` does in `LIKE` (not one byte: `café.*` and
/// `caf?.*` both match `café.insert`).
pub fn glob_matches(glob: &str, text: &str) -> bool {
    fn go(p: &[char], t: &[char]) -> bool {
        match (p.first(), t.first()) {
            (None, None) => true,
            (Some('*'), _) => go(&p[1..], t) || (!t.is_empty() && go(p, &t[1..])),
            (Some('?'), Some(_)) => go(&p[1..], &t[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &t[1..]),
            _ => false,
        }
    }
    let p: Vec<char> = glob.chars().collect();
    let t: Vec<char> = text.chars().collect();
    go(&p, &t)
}

/// Whether some text matches both globs: how a subscription's glob is checked against
/// a source that may emit any table name (a MongoDB `db.*`, whose types are `?*.<op>`).
/// With no wildcard in `b` it is [`glob_matches`]`(a, b)`.
pub fn globs_overlap(a: &str, b: &str) -> bool {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // can[i][j]: some text matches both a[i..] and b[j..]; filled from the ends.
    let mut can = vec![vec![false; b.len() + 1]; a.len() + 1];
    for i in (0..=a.len()).rev() {
        for j in (0..=b.len()).rev() {
            can[i][j] = match (a.get(i), b.get(j)) {
                (None, None) => true,
                // A star takes nothing, or the next character the other side gives
                // (after which it may take more).
                (Some('*'), other) => can[i + 1][j] || (other.is_some() && can[i][j + 1]),
                (other, Some('*')) => can[i][j + 1] || (other.is_some() && can[i + 1][j]),
                (Some(x), Some(y)) => (*x == '?' || *y == '?' || x == y) && can[i + 1][j + 1],
                _ => false,
            };
        }
    }
    can[0][0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_translate_to_like() {
        let cases = [
            ("orders.*", "orders.%"),
            ("*.delete", "%.delete"),
            ("order_items.insert", "order\\_items.insert"),
            ("a?c", "a_c"),
            ("*", "%"),
        ];
        for (glob, like) in cases {
            assert_eq!(glob_to_like(glob), like, "{glob}");
        }
    }

    #[test]
    fn globs_match() {
        let cases = [
            ("orders.*", "orders.update", true),
            ("orders.*", "orders_archive.update", false),
            ("*.delete", "customers.delete", true),
            ("*.delete", "customers.deleted", false),
            ("order_items.?nsert", "order_items.insert", true),
            ("*", "anything.at_all", true),
            ("orders.insert", "orders.insert", true),
            ("?rders.*", "ørders.update", true),
            ("ø?", "øx", true),
            ("?", "ø", true),
        ];
        for (glob, text, want) in cases {
            assert_eq!(glob_matches(glob, text), want, "{glob} vs {text}");
        }
    }

    #[test]
    fn globs_overlap_when_some_text_matches_both() {
        let cases = [
            ("orders.*", "?*.insert", true),
            ("*.delete", "?*.insert", false),
            ("*.delete", "?*.delete", true),
            (".delete", "?*.delete", false),
            ("*", "?*.truncate", true),
            ("a*b", "*c*", true),
            ("a?", "?b", true),
            ("a?", "b?", false),
            ("café.?nsert", "caf?.insert", true),
            ("orders.insert", "orders.insert", true),
            ("", "*", true),
            ("", "?", false),
        ];
        for (a, b, want) in cases {
            assert_eq!(globs_overlap(a, b), want, "{a} vs {b}");
            assert_eq!(globs_overlap(b, a), want, "{b} vs {a}");
        }
    }

    #[test]
    fn question_mark_is_one_character() {
        assert!(glob_matches("caf?.insert", "café.insert"));
        assert!(!glob_matches("caf??.insert", "café.insert"));
    }

    #[test]
    fn globs_validate() {
        assert_eq!(validate_glob(""), Err(GlobError::Empty));
        assert_eq!(validate_glob("orders\n.*"), Err(GlobError::BadChar('\n')));
        assert_eq!(validate_glob("a\u{7f}"), Err(GlobError::BadChar('\u{7f}')));
        assert!(validate_glob("order-items.*").is_ok());
        assert!(validate_glob("Order Items.*").is_ok());
        assert!(validate_glob("100%_off.*").is_ok());
    }
}

/// Random globs and texts: the in-process matcher and the SQL `LIKE`
/// pattern the store matches with agree, and neither panics.
#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    /// SQL `LIKE` with `\` as the escape character, as PostgreSQL reads the patterns
    /// `glob_to_like` writes (one character per `_`).
    fn like(p: &[char], t: &[char]) -> bool {
        match p.first() {
            None => t.is_empty(),
            Some('%') => like(&p[1..], t) || (!t.is_empty() && like(p, &t[1..])),
            Some('_') => !t.is_empty() && like(&p[1..], &t[1..]),
            Some('\\') if p.len() > 1 => t.first() == Some(&p[1]) && like(&p[2..], &t[1..]),
            Some(c) => t.first() == Some(c) && like(&p[1..], &t[1..]),
        }
    }

    fn pieces() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                Just("*"),
                Just("?"),
                Just("%"),
                Just("_"),
                Just("\\"),
                Just("."),
                Just("orders"),
                Just("a"),
                Just("insert"),
                Just("delete"),
                Just(" "),
                Just("é")
            ],
            0..8,
        )
        .prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn glob_and_like_agree(glob in pieces(), text in pieces()) {
            let pattern: Vec<char> = glob_to_like(&glob).chars().collect();
            let t: Vec<char> = text.chars().collect();
            prop_assert_eq!(glob_matches(&glob, &text), like(&pattern, &t), "glob {:?} text {:?}", glob, text);
        }

        #[test]
        fn overlap_with_a_plain_text_is_a_match(glob in pieces(), text in "[a-z._ %é]{0,10}") {
            prop_assert_eq!(globs_overlap(&glob, &text), glob_matches(&glob, &text), "glob {:?} text {:?}", glob, text);
        }

        #[test]
        fn any_string_validates_or_names_its_fault(glob in "\\PC*|[\\x00-\\x20]*") {
            match validate_glob(&glob) {
                Ok(()) => prop_assert!(!glob.is_empty() && !glob.chars().any(char::is_control)),
                Err(GlobError::Empty) => prop_assert!(glob.is_empty()),
                Err(GlobError::BadChar(c)) => prop_assert!(c.is_control() && glob.contains(c)),
            }
        }
    }
}
