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

/// The same rule as the SQL `LIKE`, for code that filters without the store: `?` is
/// one character (not one byte: `?rders.*` matches `ørders.update`, as `LIKE`'s `_`
/// does).
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
    let (p, t): (Vec<char>, Vec<char>) = (glob.chars().collect(), text.chars().collect());
    go(&p, &t)
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
    fn globs_validate() {
        assert_eq!(validate_glob(""), Err(GlobError::Empty));
        assert_eq!(validate_glob("orders\n.*"), Err(GlobError::BadChar('\n')));
        assert_eq!(validate_glob("a\u{7f}"), Err(GlobError::BadChar('\u{7f}')));
        assert!(validate_glob("order-items.*").is_ok());
        assert!(validate_glob("Order Items.*").is_ok());
        assert!(validate_glob("100%_off.*").is_ok());
    }
}

/// Random globs and texts (issue 12): the in-process matcher and the SQL `LIKE`
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
                Just(" ")
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
        fn any_string_validates_or_names_its_fault(glob in "\\PC*|[\\x00-\\x20]*") {
            match validate_glob(&glob) {
                Ok(()) => prop_assert!(!glob.is_empty() && !glob.chars().any(char::is_control)),
                Err(GlobError::Empty) => prop_assert!(glob.is_empty()),
                Err(GlobError::BadChar(c)) => prop_assert!(c.is_control() && glob.contains(c)),
            }
        }
    }
}
