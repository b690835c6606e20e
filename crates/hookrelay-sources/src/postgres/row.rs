//! Row images: the trigger journals `to_json(row)` text, cheap on the writer's commit
//! path; the reader turns it into the contract's value mapping (DESIGN §1.3) here,
//! off that path. Only columns whose JSON form differs from the contract are touched;
//! every other value passes through as its raw JSON text.

use std::{borrow::Cow, collections::HashMap, fmt::Write as _};

use base64::{engine::general_purpose::STANDARD, Engine};
use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// How a column's `to_json` form must change to meet the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    /// numeric, money: exact decimal → JSON string.
    Decimal,
    /// bigint: string when beyond ±2^53.
    Int8,
    /// timestamptz: normalise the session's offset to UTC `Z`.
    TimestampTz,
    /// timestamp without time zone: read as UTC.
    Timestamp,
    /// bytea: `\x…` hex → base64.
    Bytes,
}

impl ColumnKind {
    /// From `format_type` / `regtype` text; `None` = pass through.
    pub fn from_type_name(name: &str) -> Option<Self> {
        Some(match name {
            "numeric" | "money" => ColumnKind::Decimal,
            "bigint" => ColumnKind::Int8,
            "timestamp with time zone" => ColumnKind::TimestampTz,
            "timestamp without time zone" => ColumnKind::Timestamp,
            "bytea" => ColumnKind::Bytes,
            n if n.starts_with("numeric(") => ColumnKind::Decimal,
            n if n.starts_with("timestamp(")
                && n.ends_with("with time zone")
                && !n.contains("without") =>
            {
                ColumnKind::TimestampTz
            }
            n if n.starts_with("timestamp(") => ColumnKind::Timestamp,
            _ => return None,
        })
    }
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
                Some(kind) => convert(*kind, raw.get(), out),
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

const MAX_SAFE_INT: i64 = 1 << 53;

/// Writes `raw` (a `to_json` value) in the contract's form.
fn convert(kind: ColumnKind, raw: &str, out: &mut String) {
    if raw == "null" {
        out.push_str(raw);
        return;
    }
    match kind {
        ColumnKind::Decimal => {
            if raw.starts_with('"') {
                out.push_str(raw); // NaN, Infinity, money's text form
            } else {
                push_json_str(out, raw);
            }
        }
        ColumnKind::Int8 => match raw.parse::<i64>() {
            Ok(v) if v.abs() > MAX_SAFE_INT => push_json_str(out, raw),
            _ => out.push_str(raw),
        },
        ColumnKind::TimestampTz => {
            match unquote(raw).and_then(|s| DateTime::parse_from_rfc3339(s).ok()) {
                Some(t) => push_json_str(
                    out,
                    &t.with_timezone(&Utc)
                        .to_rfc3339_opts(SecondsFormat::AutoSi, true),
                ),
                None => out.push_str(raw), // infinity, -infinity, BC dates
            }
        }
        ColumnKind::Timestamp => {
            match unquote(raw)
                .and_then(|s| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").ok())
            {
                Some(t) => push_json_str(
                    out,
                    &t.and_utc().to_rfc3339_opts(SecondsFormat::AutoSi, true),
                ),
                None => out.push_str(raw),
            }
        }
        ColumnKind::Bytes => match unquote(raw)
            .and_then(|s| s.strip_prefix("\\\\x"))
            .and_then(|h| hex::decode(h).ok())
        {
            Some(bytes) => push_json_str(out, &STANDARD.encode(bytes)),
            None => out.push_str(raw),
        },
    }
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
        let kinds: HashMap<String, ColumnKind> =
            kinds.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        let key: Vec<String> = key.iter().map(|k| k.to_string()).collect();
        let (mut out, mut key_out) = (String::new(), String::new());
        Image::parse(text)
            .unwrap()
            .render(&kinds, &key, &mut out, &mut key_out);
        (out, key_out)
    }

    #[test]
    fn values_follow_the_contract() {
        use ColumnKind::*;
        let cases: &[(&str, ColumnKind, &str)] = &[
            ("19.99", Decimal, r#""19.99""#),
            (
                "12345678901234567890.000000001",
                Decimal,
                r#""12345678901234567890.000000001""#,
            ),
            (r#""NaN""#, Decimal, r#""NaN""#),
            ("42", Int8, "42"),
            ("9007199254740993", Int8, r#""9007199254740993""#),
            ("-9007199254740993", Int8, r#""-9007199254740993""#),
            (
                r#""2026-11-22T21:01:02.345+01:00""#,
                TimestampTz,
                r#""2026-11-22T20:01:02.345Z""#,
            ),
            (
                r#""2026-11-22T20:01:02+00:00""#,
                TimestampTz,
                r#""2026-11-22T20:01:02Z""#,
            ),
            (r#""infinity""#, TimestampTz, r#""infinity""#),
            (
                r#""2026-11-22T20:01:02.5""#,
                Timestamp,
                r#""2026-11-22T20:01:02.500Z""#,
            ),
            (r#""\\x68656c6c6f""#, Bytes, r#""aGVsbG8=""#),
            ("null", Decimal, "null"),
        ];
        for (raw, kind, want) in cases {
            let mut out = String::new();
            convert(*kind, raw, &mut out);
            assert_eq!(out, *want, "{raw} as {kind:?}");
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

    #[test]
    fn type_names_map_to_kinds() {
        assert_eq!(
            ColumnKind::from_type_name("numeric(10,2)"),
            Some(ColumnKind::Decimal)
        );
        assert_eq!(
            ColumnKind::from_type_name("timestamp(3) with time zone"),
            Some(ColumnKind::TimestampTz)
        );
        assert_eq!(
            ColumnKind::from_type_name("timestamp(3) without time zone"),
            Some(ColumnKind::Timestamp)
        );
        assert_eq!(ColumnKind::from_type_name("integer"), None);
        assert_eq!(ColumnKind::from_type_name("numeric[]"), None);
    }
}
