//! Row images: the trigger journals `to_json(row)` text, cheap on the writer's commit
//! path; the reader turns it into the contract's value mapping (DESIGN §1.3) here,
//! off that path. Only columns whose JSON form differs from the contract are touched;
//! every other value passes through as its raw JSON text.
//!
//! The capture functions pin every setting that changes `to_json`'s output (time
//! zone UTC, ISO dates and intervals, shortest floats, hex bytea, C money; see
//! `setup.rs`), so the text read here does not depend on the writer's session, and
//! each rule below sees exactly one form per value.

use std::{borrow::Cow, collections::HashMap, fmt::Write as _};

use base64::{engine::general_purpose::STANDARD, Engine};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// How a value's `to_json` form must change to meet the contract; resolved from the
/// column's type (domains by their base type) by `meta`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnKind {
    /// numeric: exact decimal → JSON string (`NaN`, `Infinity` already are).
    Decimal,
    /// money, as `to_json` writes it under `lc_monetary = C` (`-$1,234.56`) → `"-1234.56"`.
    Money,
    /// bigint: string when beyond ±2^53.
    Int8,
    /// timestamptz (always `+00:00` here): `Z`, years per ISO 8601.
    TimestampTz,
    /// timestamp without time zone: read as UTC.
    Timestamp,
    /// date: years per ISO 8601 (`BC` → astronomical, beyond 9999 → `+`).
    Date,
    /// bytea: `\x…` hex → base64.
    Bytes,
    /// Each element (any dimension) by the element's kind.
    Array(Box<ColumnKind>),
    /// Each field by its kind; fields not listed pass through.
    Composite(HashMap<String, ColumnKind>),
}

/// A parsed row image: column names in table order, values as raw JSON.
pub struct Image<'a> {
    pub columns: Vec<(Cow<'a, str>, &'a RawValue)>,
}

impl<'a> Image<'a> {
    pub fn parse(text: &'a str) -> Result<Self, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(text);
        let columns = (&mut de).deserialize_map(ImageVisitor)?;
        de.end()?;
        Ok(Self { columns })
    }

    /// The contract form of the whole image, and of just the `key` columns.
    pub fn render(
        &self,
        kinds: &HashMap<String, ColumnKind>,
        key: &[String],
        out: &mut String,
        key_out: &mut String,
    ) {
        out.push('{');
        key_out.push('{');
        let mut first_key = true;
        for (i, (name, raw)) in self.columns.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let start = out.len();
            push_json_str(out, name);
            out.push(':');
            match kinds.get(name.as_ref()) {
                Some(kind) => convert(kind, raw.get(), out),
                None => out.push_str(raw.get()),
            }
            if key.iter().any(|k| k == name) {
                if !first_key {
                    key_out.push(',');
                }
                first_key = false;
                let rendered = &out[start..];
                key_out.push_str(rendered);
            }
        }
        out.push('}');
        key_out.push('}');
    }
}

struct ImageVisitor;

impl<'de> Visitor<'de> for ImageVisitor {
    type Value = Vec<(Cow<'de, str>, &'de RawValue)>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(map.size_hint().unwrap_or(8));
        while let Some(key) = map.next_key::<Key<'de>>()? {
            out.push((key.0, map.next_value::<&'de RawValue>()?));
        }
        Ok(out)
    }
}

/// A key that borrows from the input unless it has escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a column name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

const MAX_SAFE_INT: u64 = 1 << 53;

/// Writes `raw` (a `to_json` value) in the contract's form.
fn convert(kind: &ColumnKind, raw: &str, out: &mut String) {
    if raw == "null" {
        out.push_str(raw);
        return;
    }
    match kind {
        ColumnKind::Decimal => {
            if raw.starts_with('"') {
                out.push_str(raw); // NaN, Infinity, -Infinity
            } else {
                push_json_str(out, raw);
            }
        }
        ColumnKind::Money => match unquote(raw) {
            Some(text) => {
                let plain: String = text.chars().filter(|c| *c != '$' && *c != ',').collect();
                push_json_str(out, &plain);
            }
            None => out.push_str(raw),
        },
        ColumnKind::Int8 => match raw.parse::<i64>() {
            // unsigned_abs: i64::MIN has no positive counterpart
            Ok(v) if v.unsigned_abs() > MAX_SAFE_INT => push_json_str(out, raw),
            _ => out.push_str(raw),
        },
        ColumnKind::TimestampTz | ColumnKind::Timestamp => {
            match unquote(raw).and_then(iso_timestamp) {
                Some(t) => push_json_str(out, &t),
                None => out.push_str(raw), // infinity, -infinity
            }
        }
        ColumnKind::Date => match unquote(raw).and_then(|d| {
            let (d, bc) = strip_bc(d);
            iso_year(d, bc)
        }) {
            Some(d) => push_json_str(out, &d),
            None => out.push_str(raw),
        },
        ColumnKind::Bytes => match unquote(raw)
            .and_then(|s| s.strip_prefix("\\\\x"))
            .and_then(|h| hex::decode(h).ok())
        {
            Some(bytes) => push_json_str(out, &STANDARD.encode(bytes)),
            None => out.push_str(raw),
        },
        ColumnKind::Array(element) => match serde_json::from_str::<Vec<&RawValue>>(raw) {
            Ok(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    // A multi-dimensional array nests arrays of the same element kind.
                    if item.get().starts_with('[') {
                        convert(kind, item.get(), out);
                    } else {
                        convert(element, item.get(), out);
                    }
                }
                out.push(']');
            }
            Err(_) => out.push_str(raw),
        },
        ColumnKind::Composite(fields) => match Image::parse(raw) {
            Ok(img) => {
                let mut ignored = String::new();
                img.render(fields, &[], out, &mut ignored);
            }
            Err(_) => out.push_str(raw),
        },
    }
}

/// `2026-11-22T20:01:02.5+00:00` (to_json under UTC; ` BC` may follow) →
/// `2026-11-22T20:01:02.500Z`: fractions padded to 3 or 6 digits, years per ISO 8601.
fn iso_timestamp(text: &str) -> Option<String> {
    let (text, bc) = strip_bc(text);
    let text = text.strip_suffix("+00:00").unwrap_or(text);
    let (date, time) = text.split_once('T')?;
    let mut out = iso_year(date, bc)?;
    out.push('T');
    match time.split_once('.') {
        Some((hms, frac)) => {
            out.push_str(hms);
            out.push('.');
            out.push_str(frac);
            let width = if frac.len() <= 3 { 3 } else { 6 };
            for _ in frac.len()..width {
                out.push('0');
            }
        }
        None => out.push_str(time),
    }
    out.push('Z');
    Some(out)
}

fn strip_bc(text: &str) -> (&str, bool) {
    match text.strip_suffix(" BC") {
        Some(t) => (t, true),
        None => (text, false),
    }
}

/// `YYYY-MM-DD` with PostgreSQL's year (1 BC is year 1 with `bc`) → ISO 8601's
/// astronomical year: four digits within 0000–9999, else signed (`-0043`, `+12345`).
fn iso_year(date: &str, bc: bool) -> Option<String> {
    let (year, rest) = date.split_once('-')?;
    let year: i64 = year.parse().ok()?;
    let year = if bc { 1 - year } else { year };
    Some(if (0..=9999).contains(&year) {
        format!("{year:04}-{rest}")
    } else if year < 0 {
        format!("-{:04}-{rest}", -year)
    } else {
        format!("+{year}-{rest}")
    })
}

/// The contents of a JSON string literal without escapes, else `None`.
fn unquote(raw: &str) -> Option<&str> {
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    (!inner.contains('"')).then_some(inner)
}

fn push_json_str(out: &mut String, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        // Rare (escapes needed): let serde_json do it right.
        let _ = write!(out, "{}", serde_json::Value::String(s.to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(text: &str, kinds: &[(&str, ColumnKind)], key: &[&str]) -> (String, String) {
        let kinds: HashMap<String, ColumnKind> = kinds
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        let key: Vec<String> = key.iter().map(|k| k.to_string()).collect();
        let (mut out, mut key_out) = (String::new(), String::new());
        Image::parse(text)
            .unwrap()
            .render(&kinds, &key, &mut out, &mut key_out);
        (out, key_out)
    }

    /// (to_json's text under the pinned settings, kind, the contract's form)
    #[test]
    fn values_follow_the_contract() {
        use ColumnKind::*;
        let arr = |k: ColumnKind| Array(Box::new(k));
        let cases: Vec<(&str, ColumnKind, &str)> = vec![
            ("19.99", Decimal, r#""19.99""#),
            (
                "12345678901234567890.000000001",
                Decimal,
                r#""12345678901234567890.000000001""#,
            ),
            (r#""NaN""#, Decimal, r#""NaN""#),
            (r#""-Infinity""#, Decimal, r#""-Infinity""#),
            (r#""-$1,234,567.56""#, Money, r#""-1234567.56""#),
            (r#""$0.00""#, Money, r#""0.00""#),
            ("42", Int8, "42"),
            ("9007199254740992", Int8, "9007199254740992"),
            ("9007199254740993", Int8, r#""9007199254740993""#),
            ("-9007199254740993", Int8, r#""-9007199254740993""#),
            ("-9223372036854775808", Int8, r#""-9223372036854775808""#),
            (
                r#""2026-11-22T20:01:02.345+00:00""#,
                TimestampTz,
                r#""2026-11-22T20:01:02.345Z""#,
            ),
            (
                r#""2026-11-22T20:01:02+00:00""#,
                TimestampTz,
                r#""2026-11-22T20:01:02Z""#,
            ),
            (
                r#""2026-11-22T20:01:02.1234+00:00""#,
                TimestampTz,
                r#""2026-11-22T20:01:02.123400Z""#,
            ),
            (
                r#""0044-03-15T10:00:00+00:00 BC""#,
                TimestampTz,
                r#""-0043-03-15T10:00:00Z""#,
            ),
            (
                r#""0001-01-01T00:00:00+00:00 BC""#,
                TimestampTz,
                r#""0000-01-01T00:00:00Z""#,
            ),
            (
                r#""12345-01-01T00:00:00+00:00""#,
                TimestampTz,
                r#""+12345-01-01T00:00:00Z""#,
            ),
            (r#""infinity""#, TimestampTz, r#""infinity""#),
            (r#""-infinity""#, Timestamp, r#""-infinity""#),
            (
                r#""2026-11-22T20:01:02.5""#,
                Timestamp,
                r#""2026-11-22T20:01:02.500Z""#,
            ),
            (r#""2026-11-22""#, Date, r#""2026-11-22""#),
            (r#""0044-03-15 BC""#, Date, r#""-0043-03-15""#),
            (r#""12345-01-01""#, Date, r#""+12345-01-01""#),
            (r#""infinity""#, Date, r#""infinity""#),
            (r#""\\x68656c6c6f""#, Bytes, r#""aGVsbG8=""#),
            (r#""\\x""#, Bytes, r#""""#),
            ("null", Decimal, "null"),
            ("[1.5,null,2]", arr(Decimal), r#"["1.5",null,"2"]"#),
            (
                "[[1,9007199254740993],[3,4]]",
                arr(Int8),
                r#"[[1,"9007199254740993"],[3,4]]"#,
            ),
            ("[]", arr(Bytes), "[]"),
            (
                r#"{"f1":1.5,"f2":"\\xff","f3":"x"}"#,
                Composite(HashMap::from([
                    ("f1".to_owned(), Decimal),
                    ("f2".to_owned(), Bytes),
                ])),
                r#"{"f1":"1.5","f2":"/w==","f3":"x"}"#,
            ),
            (
                r#"[{"a":1.5},{"a":null}]"#,
                arr(Composite(HashMap::from([("a".to_owned(), Decimal)]))),
                r#"[{"a":"1.5"},{"a":null}]"#,
            ),
        ];
        for (raw, kind, want) in cases {
            let mut out = String::new();
            convert(&kind, raw, &mut out);
            assert_eq!(out, want, "{raw} as {kind:?}");
        }
    }

    #[test]
    fn images_keep_column_order_and_extract_the_key() {
        let (img, key) = render(
            r#"{"tenant":"a","id":42,"total":19.99,"meta":{"x":[1,2]},"name":"O\"Brien"}"#,
            &[("total", ColumnKind::Decimal)],
            &["tenant", "id"],
        );
        assert_eq!(
            img,
            r#"{"tenant":"a","id":42,"total":"19.99","meta":{"x":[1,2]},"name":"O\"Brien"}"#
        );
        assert_eq!(key, r#"{"tenant":"a","id":42}"#);
        serde_json::from_str::<serde_json::Value>(&img).unwrap();
    }

    #[test]
    fn escaped_column_names_survive() {
        let (img, key) = render(r#"{"we\"ird":1}"#, &[], &["we\"ird"]);
        assert_eq!(img, r#"{"we\"ird":1}"#);
        assert_eq!(key, r#"{"we\"ird":1}"#);
    }
}
