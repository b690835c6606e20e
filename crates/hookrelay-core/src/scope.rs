//! Capture scope: which tables a source captures (`tables = ["public.*",
//! "sales.order_*"]`, `collections = ["crm.*"]`) and which columns or fields never
//! leave it (`exclude_columns = ["public.users.password_hash", "*.*.ssn"]`,
//! `exclude_fields = ["app.users.profile.ssn"]`).
//!
//! Every kind shares one pattern syntax: dot-separated names, each either plain
//! (letters, digits, `_`, `$`, and the wildcards `*` for any run of characters and `?`
//! for one, matched by [`glob_matches`], the same rule subscription filters use) or
//! double-quoted like SQL (`"Sales"."Order Items"`, a `"` inside doubled), which is
//! taken literally, wildcards included.

use crate::filter::{glob_matches, glob_to_like};

/// One name of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamePart {
    /// Matches only this name.
    Exact(String),
    /// A glob over names (`order_*`, `*`).
    Glob(String),
}

impl NamePart {
    pub fn matches(&self, name: &str) -> bool {
        match self {
            NamePart::Exact(n) => n == name,
            NamePart::Glob(g) => glob_matches(g, name),
        }
    }

    /// The same test as a SQL `LIKE` pattern (backslash escapes).
    pub fn to_like(&self) -> String {
        match self {
            NamePart::Exact(n) => like_literal(n),
            NamePart::Glob(g) => glob_to_like(g),
        }
    }

    /// As a glob, for overlap checks (an exact name is its own glob).
    pub fn as_glob(&self) -> &str {
        match self {
            NamePart::Exact(n) | NamePart::Glob(n) => n,
        }
    }
}

/// `LIKE` for an exact name: only the `LIKE` wildcards and the escape are escaped.
fn like_literal(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    for c in name.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Splits `s` into exactly `n` dot-separated names (the last one may be followed by
/// `.rest` when `rest_allowed`, returned unparsed).
fn split_parts(s: &str, n: usize, rest_allowed: bool) -> Option<(Vec<NamePart>, Option<&str>)> {
    let mut parts = Vec::with_capacity(n);
    let mut rest = s;
    for i in 0..n {
        let (part, after) = one_name(rest)?;
        parts.push(part);
        if i + 1 < n {
            rest = after.strip_prefix('.')?;
        } else if after.is_empty() {
            return Some((parts, None));
        } else if rest_allowed {
            let tail = after.strip_prefix('.')?;
            return (!tail.is_empty()).then_some((parts, Some(tail)));
        } else {
            return None;
        }
    }
    None
}

/// The name at the start of `s` and what follows it.
fn one_name(s: &str) -> Option<(NamePart, &str)> {
    if let Some(quoted) = s.strip_prefix('"') {
        let (name, rest) = crate::config::unquote(quoted)?;
        let ok = !name.is_empty() && name.len() <= 63 && !name.contains('\0');
        return ok.then_some((NamePart::Exact(name), rest));
    }
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '$' | '*' | '?')))
        .unwrap_or(s.len());
    let name = &s[..end];
    if name.is_empty() || name.len() > 63 || name.as_bytes()[0].is_ascii_digit() {
        return None;
    }
    let part = if name.contains(['*', '?']) {
        NamePart::Glob(name.to_owned())
    } else {
        NamePart::Exact(name.to_owned())
    };
    Some((part, &s[end..]))
}

/// One `tables` entry: `schema.table` (MySQL: `database.table`), either part a glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablePattern {
    pub schema: NamePart,
    pub table: NamePart,
}

impl TablePattern {
    pub fn parse(s: &str) -> Option<Self> {
        let (mut p, _) = split_parts(s, 2, false)?;
        let table = p.pop()?;
        let schema = p.pop()?;
        Some(Self { schema, table })
    }

    pub fn matches(&self, schema: &str, table: &str) -> bool {
        self.schema.matches(schema) && self.table.matches(table)
    }

    /// The one table this pattern names, when it has no wildcard.
    pub fn exact(&self) -> Option<(&str, &str)> {
        match (&self.schema, &self.table) {
            (NamePart::Exact(s), NamePart::Exact(t)) => Some((s, t)),
            _ => None,
        }
    }
}

/// One `exclude_columns` entry: `schema.table.column`, any part a glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnPattern {
    pub table: TablePattern,
    pub column: NamePart,
}

impl ColumnPattern {
    pub fn parse(s: &str) -> Option<Self> {
        let (mut p, _) = split_parts(s, 3, false)?;
        let column = p.pop()?;
        let table = p.pop()?;
        let schema = p.pop()?;
        Some(Self {
            table: TablePattern { schema, table },
            column,
        })
    }
}

/// One `exclude_fields` entry (MongoDB): `db.collection.path.to.field`; the database
/// and collection may be globs (a collection whose name holds a dot is quoted), the
/// path is literal, dots going into embedded documents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPattern {
    pub collection: TablePattern,
    pub path: Vec<String>,
}

impl FieldPattern {
    pub fn parse(s: &str) -> Option<Self> {
        let (mut p, rest) = split_parts(s, 2, true)?;
        let path: Vec<String> = rest?.split('.').map(str::to_owned).collect();
        if path.iter().any(String::is_empty) {
            return None;
        }
        let table = p.pop()?;
        let schema = p.pop()?;
        Some(Self {
            collection: TablePattern { schema, table },
            path,
        })
    }
}

/// What a PostgreSQL or MySQL source captures: the tables its patterns match and,
/// of each, every column no exclusion matches.
#[derive(Debug, Clone, Default)]
pub struct TableScope {
    pub tables: Vec<TablePattern>,
    pub exclude: Vec<ColumnPattern>,
}

impl TableScope {
    /// From `tables` and `exclude_columns` as configured; the error names the entry.
    pub fn parse(tables: &[String], exclude: &[String]) -> Result<Self, String> {
        let tables = tables
            .iter()
            .map(|t| {
                TablePattern::parse(t).ok_or_else(|| format!("table {t:?} is not schema.table"))
            })
            .collect::<Result<_, _>>()?;
        let exclude = exclude
            .iter()
            .map(|c| {
                ColumnPattern::parse(c).ok_or_else(|| {
                    format!("exclude_columns entry {c:?} is not schema.table.column")
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { tables, exclude })
    }

    /// Whether some pattern matches the table.
    pub fn captures(&self, schema: &str, table: &str) -> bool {
        self.tables.iter().any(|p| p.matches(schema, table))
    }

    /// Whether a pattern without wildcards names the table (so a problem with it is
    /// fatal, not a notice).
    pub fn names(&self, schema: &str, table: &str) -> bool {
        self.tables
            .iter()
            .any(|p| p.exact() == Some((schema, table)))
    }

    /// The tables named without wildcards.
    pub fn named(&self) -> Vec<(String, String)> {
        self.tables
            .iter()
            .filter_map(|p| p.exact().map(|(s, t)| (s.to_owned(), t.to_owned())))
            .collect()
    }

    /// Whether the column is left out of every event.
    pub fn excludes(&self, schema: &str, table: &str, column: &str) -> bool {
        self.exclude
            .iter()
            .any(|e| e.table.matches(schema, table) && e.column.matches(column))
    }

    /// The exclusions that apply to a table, as `LIKE` patterns over column names.
    pub fn excluded_likes(&self, schema: &str, table: &str) -> Vec<String> {
        self.exclude
            .iter()
            .filter(|e| e.table.matches(schema, table))
            .map(|e| e.column.to_like())
            .collect()
    }

    /// The first primary-key column an exclusion would remove: such a config is
    /// refused (the key is each event's identity and order).
    pub fn excluded_key<'k>(
        &self,
        schema: &str,
        table: &str,
        key: &'k [String],
    ) -> Option<&'k str> {
        key.iter()
            .find(|k| self.excludes(schema, table, k))
            .map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(s: &str) -> NamePart {
        one_name(s).expect("a name").0
    }

    #[test]
    fn names_match_exactly_or_by_glob() {
        let cases = [
            ("orders", "orders", true),
            ("orders", "orders2", false),
            ("order_*", "order_items", true),
            ("order_*", "order_", true),
            ("order_*", "orders", false),
            ("*", "anything", true),
            ("t?", "t1", true),
            ("t?", "t12", false),
            ("*_log", "audit_log", true),
            ("\"a*\"", "a*", true),
            ("\"a*\"", "ab", false),
            ("\"Order Items\"", "Order Items", true),
        ];
        for (pattern, name, want) in cases {
            assert_eq!(part(pattern).matches(name), want, "{pattern} vs {name}");
        }
    }

    #[test]
    fn table_patterns_parse() {
        let p = TablePattern::parse("public.*").unwrap();
        assert!(p.matches("public", "orders") && !p.matches("sales", "orders"));
        assert_eq!(p.exact(), None);
        let p = TablePattern::parse(r#""Sales"."Order Items""#).unwrap();
        assert_eq!(p.exact(), Some(("Sales", "Order Items")));
        let p = TablePattern::parse("*.order_*").unwrap();
        assert!(p.matches("x", "order_1") && !p.matches("x", "orders"));
        for bad in [
            "orders",
            "public.",
            ".x",
            "a.b.c",
            "1a.b",
            "a b.c",
            "public.*x y",
            "",
        ] {
            assert_eq!(TablePattern::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn like_translation_escapes_what_is_literal() {
        let cases = [
            ("order_*", "order\\_%"),
            ("t?", "t_"),
            ("\"50%_off\"", "50\\%\\_off"),
            ("\"a*\"", "a*"),
            ("plain", "plain"),
        ];
        for (pattern, like) in cases {
            assert_eq!(part(pattern).to_like(), like, "{pattern}");
        }
    }

    #[test]
    fn column_and_field_patterns_parse() {
        let c = ColumnPattern::parse("*.*.ssn").unwrap();
        assert!(c.table.matches("a", "b") && c.column.matches("ssn") && !c.column.matches("ssn2"));
        assert_eq!(ColumnPattern::parse("public.users"), None);
        assert_eq!(ColumnPattern::parse("a.b.c.d"), None);
        let f = FieldPattern::parse("app.users.profile.ssn").unwrap();
        assert!(f.collection.matches("app", "users"));
        assert_eq!(f.path, ["profile", "ssn"]);
        let f = FieldPattern::parse(r#"app."a.b".x"#).unwrap();
        assert!(f.collection.matches("app", "a.b"));
        for bad in ["app.users", "app.users.", "app.users.a..b", "app"] {
            assert_eq!(FieldPattern::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn scope_captures_names_and_excludes() {
        let s = TableScope::parse(
            &["public.*".into(), "sales.orders".into()],
            &["public.users.password_hash".into(), "*.*.ssn".into()],
        )
        .unwrap();
        assert!(s.captures("public", "anything") && s.captures("sales", "orders"));
        assert!(!s.captures("sales", "other"));
        assert!(s.names("sales", "orders") && !s.names("public", "users"));
        assert_eq!(s.named(), [("sales".to_owned(), "orders".to_owned())]);
        assert!(s.excludes("public", "users", "password_hash"));
        assert!(!s.excludes("public", "admins", "password_hash"));
        assert!(s.excludes("sales", "orders", "ssn"));
        assert_eq!(
            s.excluded_likes("public", "users"),
            ["password\\_hash", "ssn"]
        );
        assert_eq!(s.excluded_likes("sales", "orders"), ["ssn"]);
        let key = ["id".to_owned(), "ssn".to_owned()];
        assert_eq!(s.excluded_key("x", "y", &key), Some("ssn"));
        assert_eq!(s.excluded_key("x", "y", &key[..1]), None);
        assert!(TableScope::parse(&["public".into()], &[]).is_err());
        assert!(TableScope::parse(&["a.b".into()], &["a.b".into()]).is_err());
    }
}
