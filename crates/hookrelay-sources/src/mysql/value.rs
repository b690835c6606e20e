//! MySQL/MariaDB binlog values → the contract's JSON (DESIGN §1.3), as one pure
//! function of (column, value). The binlog carries values in the server's storage
//! form, independent of the writer's session: TIMESTAMP is Unix seconds, DATETIME is
//! the wall-clock value (read as UTC), strings are bytes in the column's charset.
//! So the same committed value always gives the same bytes, whoever wrote it.

use std::fmt::Write as _;

use base64::{engine::general_purpose::STANDARD, Engine};
use chrono::{DateTime, SecondsFormat, Utc};
use mysql_async::{
    binlog::{
        jsonb::{JsonContainer, JsonDom, JsonNumber, JsonScalar},
        value::BinlogValue,
    },
    consts::ColumnType,
    Value,
};

/// How a column's bytes are text, from its collation's character set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Charset {
    /// `binary` (BLOB, BINARY, VARBINARY): base64.
    Binary,
    /// utf8mb3/utf8mb4/ascii: the bytes are UTF-8.
    Utf8,
    /// MySQL's `latin1` is Windows-1252.
    Latin1,
    /// Anything else: decoded as UTF-8, invalid bytes replaced (and named in the docs).
    Other,
}

/// What the value mapping needs to know about one column, taken from the table map
/// event (with `binlog_row_metadata = FULL`) and, for MariaDB JSON, the schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnSpec {
    pub name: String,
    pub ty: ColumnType,
    /// The table map's per-column metadata bytes (scale, fsp, lengths).
    pub meta: Vec<u8>,
    pub unsigned: bool,
    pub charset: Charset,
    /// ENUM or SET member names, in definition order.
    pub members: Vec<String>,
    /// A MariaDB JSON column (LONGTEXT with a `json_valid` check): nested, not a string.
    pub json: bool,
}

impl ColumnSpec {
    /// Fractional-second digits of TIME2/DATETIME2/TIMESTAMP2 columns.
    fn fsp(&self) -> usize {
        usize::from(self.meta.first().copied().unwrap_or(0).min(6))
    }

    /// CHAR/BINARY column length in bytes (the same decoding the server uses).
    fn string_len(&self) -> usize {
        match self.meta.as_slice() {
            [b0, b1, ..] if *b0 >= 1 => {
                let (b0, b1) = (usize::from(*b0), usize::from(*b1));
                if b0 & 0x30 != 0x30 {
                    b1 | (((b0 & 0x30) ^ 0x30) << 4)
                } else {
                    b1
                }
            }
            [b0, b1, ..] => usize::from(*b0) | (usize::from(*b1) << 8),
            _ => 0,
        }
    }
}

/// A value the mapping cannot express (never guessed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {reason}")]
pub struct ValueError {
    pub column: String,
    pub reason: String,
}

const MAX_EXACT: i128 = 1 << 53;

/// Appends `value` of `col` to `out` as JSON.
pub fn to_json(
    col: &ColumnSpec,
    value: &BinlogValue<'_>,
    out: &mut String,
) -> Result<(), ValueError> {
    let bad = |reason: String| ValueError {
        column: col.name.clone(),
        reason,
    };
    let v = match value {
        BinlogValue::Value(v) => v,
        BinlogValue::Jsonb(doc) => {
            let dom = doc
                .clone()
                .parse()
                .map_err(|e| bad(format!("binary JSON: {e}")))?;
            push_jsonb(out, &dom);
            return Ok(());
        }
        BinlogValue::JsonDiff(_) => {
            return Err(bad(
                "partial JSON update (binlog_row_value_options = PARTIAL_JSON) carries no full value; set binlog_row_value_options = ''".into(),
            ))
        }
    };
    use ColumnType::*;
    match (col.ty, v) {
        (_, Value::NULL) => out.push_str("null"),
        (MYSQL_TYPE_YEAR, Value::Bytes(b)) => {
            // The decoder adds 1900 to the stored byte; 0 is YEAR 0000, never 1900.
            let year: i64 = std::str::from_utf8(b)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| bad("YEAR is not a number".into()))?;
            push_int(out, if year == 1900 { 0 } else { year.into() });
        }
        (_, Value::Int(i)) if col.ty == MYSQL_TYPE_ENUM => {
            // 0 is the empty string MySQL stores for an invalid member.
            let name = match usize::try_from(*i) {
                Ok(0) => "",
                Ok(n) => col.members.get(n - 1).map(String::as_str).ok_or_else(|| {
                    bad(format!(
                        "ENUM index {n} beyond its {} members",
                        col.members.len()
                    ))
                })?,
                Err(_) => return Err(bad(format!("ENUM index {i}"))),
            };
            push_str(out, name);
        }
        (MYSQL_TYPE_TIMESTAMP, Value::Int(secs)) => push_timestamp(out, *secs, 0, 0),
        (MYSQL_TYPE_INT24, Value::Int(i)) if !col.unsigned && *i >= 1 << 23 => {
            // mysql_common 0.37 reads a signed MEDIUMINT without sign extension.
            push_int(out, i128::from(*i) - (1 << 24));
        }
        (_, Value::Int(i)) => push_int(out, (*i).into()),
        (_, Value::UInt(u)) => push_int(out, (*u).into()),
        (_, Value::Float(f)) => push_float(out, f64::from(*f), || serde_json::to_string(f)),
        (_, Value::Double(d)) => push_float(out, *d, || serde_json::to_string(d)),
        (MYSQL_TYPE_DATE | MYSQL_TYPE_NEWDATE, Value::Date(y, m, d, ..)) => {
            let _ = write!(out, "\"{}-{m:02}-{d:02}\"", year4(i32::from(*y)));
        }
        (_, Value::Date(y, mo, d, h, mi, s, us)) => {
            if *mo == 0 || *d == 0 {
                // A zero date has no instant: the server's own text form.
                let _ = write!(out, "\"{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}\"");
            } else {
                let _ = write!(
                    out,
                    "\"{}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}",
                    year4(i32::from(*y))
                );
                push_fraction(out, *us, col.fsp());
                out.push_str("Z\"");
            }
        }
        (_, Value::Time(neg, days, h, m, s, us)) => {
            let hours = u64::from(*days) * 24 + u64::from(*h);
            let sign = if *neg { "-" } else { "" };
            let _ = write!(out, "\"{sign}{hours:02}:{m:02}:{s:02}");
            push_fraction(out, *us, col.fsp());
            out.push('"');
        }
        (MYSQL_TYPE_TIMESTAMP2, Value::Bytes(b)) => {
            // "seconds[.micros]" since the epoch, UTC whatever the session time zone.
            let text = std::str::from_utf8(b).map_err(|_| bad("TIMESTAMP text".into()))?;
            let (secs, micros) = match text.split_once('.') {
                Some((s, f)) => (s, f.parse::<u32>().ok()),
                None => (text, Some(0)),
            };
            match (secs.parse::<i64>(), micros) {
                (Ok(secs), Some(us)) => push_timestamp(out, secs, us, col.fsp()),
                _ => return Err(bad(format!("TIMESTAMP {text:?}"))),
            }
        }
        (MYSQL_TYPE_NEWDECIMAL | MYSQL_TYPE_DECIMAL, Value::Bytes(b)) => {
            // Exact, with the column's scale ("19.90"), as the server prints it.
            let text = std::str::from_utf8(b).map_err(|_| bad("DECIMAL text".into()))?;
            push_str(out, text);
        }
        (MYSQL_TYPE_BIT, Value::Bytes(b)) => {
            // A bit string of the column's width, as PostgreSQL's bit(n): "0101".
            let width = usize::from(col.meta.get(1).copied().unwrap_or(0)) * 8
                + usize::from(col.meta.first().copied().unwrap_or(0));
            let total = b.len() * 8;
            out.push('"');
            for i in total.saturating_sub(width)..total {
                let byte = b[i / 8];
                out.push(if byte & (0x80 >> (i % 8)) != 0 {
                    '1'
                } else {
                    '0'
                });
            }
            out.push('"');
        }
        (MYSQL_TYPE_SET, Value::Bytes(b)) => {
            // A little-endian bitmask over the members; the server's comma-joined form.
            let mut names = Vec::new();
            for (i, name) in col.members.iter().enumerate() {
                if b.get(i / 8).is_some_and(|byte| byte & (1 << (i % 8)) != 0) {
                    names.push(name.as_str());
                }
            }
            push_str(out, &names.join(","));
        }
        (MYSQL_TYPE_JSON, Value::Bytes(b)) => push_json_text(out, b),
        (MYSQL_TYPE_GEOMETRY | MYSQL_TYPE_VECTOR, Value::Bytes(b)) => push_base64(out, b),
        (MYSQL_TYPE_STRING, Value::Bytes(b)) if col.charset == Charset::Binary => {
            // BINARY(n) is stored without its trailing 0x00 padding; readers get n bytes.
            let mut padded = b.clone();
            if padded.len() < col.string_len() {
                padded.resize(col.string_len(), 0);
            }
            push_base64(out, &padded);
        }
        (_, Value::Bytes(b)) => match col.charset {
            Charset::Binary => push_base64(out, b),
            _ if col.json => push_json_text(out, b),
            Charset::Latin1 => push_str(out, &decode_cp1252(b)),
            Charset::Utf8 | Charset::Other => push_str(out, &String::from_utf8_lossy(b)),
        },
    }
    Ok(())
}

/// Integers within ±2^53 as numbers, beyond as strings.
fn push_int(out: &mut String, i: i128) {
    if (-MAX_EXACT..=MAX_EXACT).contains(&i) {
        let _ = write!(out, "{i}");
    } else {
        let _ = write!(out, "\"{i}\"");
    }
}

/// Shortest round-trip form; NaN and infinities as strings.
fn push_float(out: &mut String, v: f64, shortest: impl FnOnce() -> serde_json::Result<String>) {
    if v.is_nan() {
        out.push_str("\"NaN\"");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 {
            "\"Infinity\""
        } else {
            "\"-Infinity\""
        });
    } else {
        match shortest() {
            Ok(s) => out.push_str(&s),
            Err(_) => out.push_str("null"),
        }
    }
}

fn push_timestamp(out: &mut String, secs: i64, micros: u32, fsp: usize) {
    if secs == 0 && micros == 0 {
        // TIMESTAMP's zero value is '0000-00-00 00:00:00', not the epoch.
        out.push_str("\"0000-00-00 00:00:00\"");
        return;
    }
    let Some(t) = DateTime::<Utc>::from_timestamp(secs, micros * 1000) else {
        let _ = write!(out, "\"{secs}\"");
        return;
    };
    out.push('"');
    out.push_str(
        t.to_rfc3339_opts(SecondsFormat::Secs, true)
            .trim_end_matches('Z'),
    );
    push_fraction(out, micros, fsp);
    out.push_str("Z\"");
}

/// `.ffffff` cut to the column's `fsp` digits (none for fsp 0).
fn push_fraction(out: &mut String, micros: u32, fsp: usize) {
    if fsp > 0 {
        let digits = format!("{micros:06}");
        out.push('.');
        out.push_str(&digits[..fsp]);
    }
}

/// Years 0000–9999 as four digits (DESIGN §1.3); MySQL has no others.
fn year4(y: i32) -> String {
    format!("{y:04}")
}

fn push_base64(out: &mut String, b: &[u8]) {
    out.push('"');
    STANDARD.encode_string(b, out);
    out.push('"');
}

fn push_str(out: &mut String, s: &str) {
    // serde_json's escaping: `\u0000` for NUL, every other control escaped.
    match serde_json::to_string(s) {
        Ok(q) => out.push_str(&q),
        Err(_) => out.push_str("null"),
    }
}

fn push_json(out: &mut String, v: &serde_json::Value) {
    match serde_json::to_string(v) {
        Ok(q) => out.push_str(&q),
        Err(_) => out.push_str("null"),
    }
}

/// JSON stored as text (MariaDB's JSON is LONGTEXT): nested when it is valid JSON,
/// else the text as a string. The document is re-emitted from its own text, only the
/// whitespace between tokens dropped: every number as written (never through an
/// `f64`, so `12345678901234567890.5`, `1e400` and `-0` arrive as stored), strings
/// with their escapes as written, members in their stored order. Parsing into a
/// `serde_json::Value` instead lost digits, and serde_json's `arbitrary_precision`
/// would change how every other crate of the workspace reads numbers.
fn push_json_text(out: &mut String, b: &[u8]) {
    match std::str::from_utf8(b)
        .ok()
        .filter(|text| serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok())
    {
        Some(text) => push_minified(out, text),
        None => push_str(out, &String::from_utf8_lossy(b)),
    }
}

/// `text` (valid JSON) without the whitespace outside its strings.
fn push_minified(out: &mut String, text: &str) {
    out.reserve(text.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in text.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            in_string = c == '"';
            out.push(c);
        }
    }
}

/// MySQL 8's binary JSON as the server prints it. Its number types stay distinct:
/// integers exact (64-bit ones too), a DECIMAL (an opaque value in the binary
/// format) in its plain digits with its scale, a double in its shortest round-trip
/// form, written as DOUBLE columns are (`1e+300`). Strings, dates and times and other opaque values as mysql_common renders
/// them; members in the order the binary format keeps them (sorted by key).
fn push_jsonb(out: &mut String, v: &JsonDom) {
    match v {
        JsonDom::Container(JsonContainer::Array(items)) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_jsonb(out, item);
            }
            out.push(']');
        }
        JsonDom::Container(JsonContainer::Object(members)) => {
            out.push('{');
            for (i, (key, item)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_str(out, key);
                out.push(':');
                push_jsonb(out, item);
            }
            out.push('}');
        }
        JsonDom::Scalar(JsonScalar::Number(n)) => {
            let _ = match n {
                JsonNumber::Int(i) => write!(out, "{i}"),
                JsonNumber::Uint(u) => write!(out, "{u}"),
                JsonNumber::Decimal(d) => write!(out, "{d}"),
                // A JSON document holds no NaN or infinity.
                JsonNumber::Double(f) => match serde_json::Number::from_f64(*f) {
                    Some(n) => write!(out, "{n}"),
                    None => write!(out, "null"),
                },
            };
        }
        JsonDom::Scalar(other) => push_json(out, &serde_json::Value::from(other.clone())),
    }
}

/// Windows-1252, which is what MySQL calls `latin1`: 0x80–0x9F are typographic
/// characters, the five bytes Windows leaves undefined map to their C1 controls.
pub fn decode_cp1252(b: &[u8]) -> String {
    const HIGH: [char; 32] = [
        '€', '\u{81}', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\u{8d}', 'Ž',
        '\u{8f}', '\u{90}', '‘', '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', '\u{9d}',
        'ž', 'Ÿ',
    ];
    b.iter()
        .map(|&c| match c {
            0x80..=0x9f => HIGH[usize::from(c - 0x80)],
            _ => char::from(c),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ColumnType::*;

    fn col(ty: ColumnType, meta: &[u8]) -> ColumnSpec {
        ColumnSpec {
            name: "c".into(),
            ty,
            meta: meta.to_vec(),
            unsigned: false,
            charset: Charset::Utf8,
            members: Vec::new(),
            json: false,
        }
    }

    fn unsigned(mut c: ColumnSpec) -> ColumnSpec {
        c.unsigned = true;
        c
    }

    fn render(c: &ColumnSpec, v: Value) -> String {
        let mut out = String::new();
        to_json(c, &BinlogValue::Value(v), &mut out).expect("maps");
        out
    }

    /// Golden cases: (column, binlog value as the decoder yields it, JSON).
    #[test]
    fn golden_values() {
        let bytes = |s: &str| Value::Bytes(s.as_bytes().to_vec());
        let mut binary = col(MYSQL_TYPE_BLOB, &[2]);
        binary.charset = Charset::Binary;
        // BINARY(4): real type 254 (0xfe), length 4.
        let mut binary4 = col(MYSQL_TYPE_STRING, &[0xfe, 4]);
        binary4.charset = Charset::Binary;
        let mut latin1 = col(MYSQL_TYPE_VARCHAR, &[20, 0]);
        latin1.charset = Charset::Latin1;
        let mut status = col(MYSQL_TYPE_ENUM, &[0xf7, 1]);
        status.members = vec!["new".into(), "paid".into()];
        let mut tags = col(MYSQL_TYPE_SET, &[0xf8, 1]);
        tags.members = vec!["a".into(), "b".into(), "c".into()];
        let mut mariadb_json = col(MYSQL_TYPE_BLOB, &[4]);
        mariadb_json.json = true;
        let cases: Vec<(ColumnSpec, Value, &str)> = vec![
            (col(MYSQL_TYPE_LONG, &[]), Value::NULL, "null"),
            (col(MYSQL_TYPE_TINY, &[]), Value::Int(-128), "-128"),
            (
                col(MYSQL_TYPE_LONGLONG, &[]),
                Value::Int(1 << 53),
                "9007199254740992",
            ),
            (
                col(MYSQL_TYPE_LONGLONG, &[]),
                Value::Int((1 << 53) + 1),
                "\"9007199254740993\"",
            ),
            (
                col(MYSQL_TYPE_LONGLONG, &[]),
                Value::Int(-(1 << 53)),
                "-9007199254740992",
            ),
            (
                col(MYSQL_TYPE_LONGLONG, &[]),
                Value::Int(i64::MIN),
                "\"-9223372036854775808\"",
            ),
            (
                col(MYSQL_TYPE_LONGLONG, &[]),
                Value::UInt(u64::MAX),
                "\"18446744073709551615\"",
            ),
            (
                col(MYSQL_TYPE_LONG, &[]),
                Value::UInt(4294967295),
                "4294967295",
            ),
            (
                col(MYSQL_TYPE_INT24, &[]),
                Value::Int(0x80_0000),
                "-8388608",
            ),
            (col(MYSQL_TYPE_INT24, &[]), Value::Int(0xff_ffff), "-1"),
            (col(MYSQL_TYPE_INT24, &[]), Value::Int(0x7f_ffff), "8388607"),
            (
                unsigned(col(MYSQL_TYPE_INT24, &[])),
                Value::Int(0xff_ffff),
                "16777215",
            ),
            (col(MYSQL_TYPE_FLOAT, &[4]), Value::Float(1.1), "1.1"),
            (
                col(MYSQL_TYPE_DOUBLE, &[8]),
                Value::Double(0.1 + 0.2),
                "0.30000000000000004",
            ),
            (col(MYSQL_TYPE_DOUBLE, &[8]), Value::Double(1e300), "1e+300"),
            (
                col(MYSQL_TYPE_NEWDECIMAL, &[12, 2]),
                bytes("19.90"),
                "\"19.90\"",
            ),
            (
                col(MYSQL_TYPE_NEWDECIMAL, &[12, 2]),
                bytes("-0.05"),
                "\"-0.05\"",
            ),
            (col(MYSQL_TYPE_YEAR, &[]), bytes("2024"), "2024"),
            (col(MYSQL_TYPE_YEAR, &[]), bytes("1900"), "0"),
            (
                col(MYSQL_TYPE_NEWDATE, &[]),
                Value::Date(2026, 2, 3, 0, 0, 0, 0),
                "\"2026-02-03\"",
            ),
            (
                col(MYSQL_TYPE_NEWDATE, &[]),
                Value::Date(1, 1, 1, 0, 0, 0, 0),
                "\"0001-01-01\"",
            ),
            (
                col(MYSQL_TYPE_DATETIME2, &[6]),
                Value::Date(2026, 11, 22, 20, 1, 2, 345_600),
                "\"2026-11-22T20:01:02.345600Z\"",
            ),
            (
                col(MYSQL_TYPE_DATETIME2, &[3]),
                Value::Date(2026, 11, 22, 20, 1, 2, 345_000),
                "\"2026-11-22T20:01:02.345Z\"",
            ),
            (
                col(MYSQL_TYPE_DATETIME2, &[0]),
                Value::Date(2026, 11, 22, 20, 1, 2, 0),
                "\"2026-11-22T20:01:02Z\"",
            ),
            (
                col(MYSQL_TYPE_DATETIME2, &[0]),
                Value::Date(0, 0, 0, 0, 0, 0, 0),
                "\"0000-00-00 00:00:00\"",
            ),
            (
                col(MYSQL_TYPE_TIMESTAMP2, &[0]),
                bytes("1795377662"),
                "\"2026-11-22T20:01:02Z\"",
            ),
            (
                col(MYSQL_TYPE_TIMESTAMP2, &[6]),
                bytes("1795377662.000120"),
                "\"2026-11-22T20:01:02.000120Z\"",
            ),
            (
                col(MYSQL_TYPE_TIMESTAMP2, &[2]),
                bytes("1795377662.120000"),
                "\"2026-11-22T20:01:02.12Z\"",
            ),
            (
                col(MYSQL_TYPE_TIMESTAMP2, &[0]),
                bytes("0"),
                "\"0000-00-00 00:00:00\"",
            ),
            (
                col(MYSQL_TYPE_TIME2, &[0]),
                Value::Time(false, 0, 1, 2, 3, 0),
                "\"01:02:03\"",
            ),
            (
                col(MYSQL_TYPE_TIME2, &[6]),
                Value::Time(true, 34, 22, 59, 59, 5),
                "\"-838:59:59.000005\"",
            ),
            (col(MYSQL_TYPE_BIT, &[1, 0]), Value::Bytes(vec![1]), "\"1\""),
            (
                col(MYSQL_TYPE_BIT, &[2, 1]),
                Value::Bytes(vec![0b10, 0b0000_0101]),
                "\"1000000101\"",
            ),
            (status.clone(), Value::Int(2), "\"paid\""),
            (status, Value::Int(0), "\"\""),
            (tags.clone(), Value::Bytes(vec![0b101]), "\"a,c\""),
            (tags, Value::Bytes(vec![0]), "\"\""),
            (binary, Value::Bytes(vec![0, 1, 0xff]), "\"AAH/\""),
            (
                binary4.clone(),
                Value::Bytes(vec![b'a', b'b']),
                "\"YWIAAA==\"",
            ),
            (binary4, Value::Bytes(vec![1, 2, 3, 4]), "\"AQIDBA==\""),
            (
                col(MYSQL_TYPE_VARCHAR, &[80, 0]),
                bytes("Grüße 🎉\0\"q\""),
                "\"Grüße 🎉\\u0000\\\"q\\\"\"",
            ),
            (latin1, Value::Bytes(vec![b'c', 0xe9, 0x80]), "\"cé€\""),
            (
                mariadb_json.clone(),
                bytes(r#"{"a": [1, 2.5, null], "b": "x"}"#),
                r#"{"a":[1,2.5,null],"b":"x"}"#,
            ),
            (mariadb_json, bytes("not json"), "\"not json\""),
            (
                col(MYSQL_TYPE_BLOB, &[2]),
                bytes("plain text"),
                "\"plain text\"",
            ),
        ];
        for (c, v, want) in cases {
            let shown = format!("{:?} {v:?}", c.ty);
            assert_eq!(render(&c, v), want, "{shown}");
        }
    }

    /// MariaDB JSON (text): every number token arrives exactly as written, nested
    /// arrays included; only the whitespace between tokens goes.
    #[test]
    fn mariadb_json_numbers_are_kept_as_written() {
        let mut c = col(MYSQL_TYPE_BLOB, &[4]);
        c.json = true;
        let cases = [
            (
                r#"{"big": 12345678901234567890.5}"#,
                r#"{"big":12345678901234567890.5}"#,
            ),
            (
                r#"{"i": 123456789012345678901234567890, "n": -9223372036854775809}"#,
                r#"{"i":123456789012345678901234567890,"n":-9223372036854775809}"#,
            ),
            (
                "[0.1000000000000000055511151231257827021181583404541015625, 3.14159265358979323846264338327950288]",
                "[0.1000000000000000055511151231257827021181583404541015625,3.14159265358979323846264338327950288]",
            ),
            ("[1e400, 1E-7, 2.50e+3, -1.0e-0]", "[1e400,1E-7,2.50e+3,-1.0e-0]"),
            ("[-0, -0.0, 0, 0.00]", "[-0,-0.0,0,0.00]"),
            (
                "{\"m\": [[1, [2.000, [18446744073709551616]]], []],\n \"z\" : {}}",
                r#"{"m":[[1,[2.000,[18446744073709551616]]],[]],"z":{}}"#,
            ),
            // Members in their stored order, strings with their escapes as written.
            (
                r#"{"b": "a b\u0041\"", "a": " x "}"#,
                r#"{"b":"a b\u0041\"","a":" x "}"#,
            ),
            ("  7  ", "7"),
            // Not JSON (a bare control character in a string): the text as a string.
            ("[\"a\u{1}\"]", "\"[\\\"a\\u0001\\\"]\""),
            ("[1,]", "\"[1,]\""),
        ];
        for (stored, want) in cases {
            let v = Value::Bytes(stored.as_bytes().to_vec());
            assert_eq!(render(&c, v), want, "{stored}");
        }
    }

    fn jsonb(v: mysql_async::binlog::jsonb::Value<'static>) -> JsonDom {
        v.parse().expect("parses")
    }

    /// A DECIMAL inside MySQL 8's binary JSON: an opaque value holding precision,
    /// scale and the binary decimal (as the server writes it).
    fn decimal(packed: &[u8]) -> JsonDom {
        jsonb(mysql_async::binlog::jsonb::Value::Opaque(
            mysql_async::binlog::jsonb::OpaqueValue::new(MYSQL_TYPE_NEWDECIMAL, packed.to_vec()),
        ))
    }

    /// MySQL 8 binary JSON: integers, decimals and doubles each as the server prints
    /// them, none through an f64 it did not hold.
    #[test]
    fn mysql_binary_json_numbers_keep_their_type() {
        use mysql_async::binlog::jsonb::Value as J;
        let arr = |items: Vec<JsonDom>| JsonDom::Container(JsonContainer::Array(items));
        let cases: Vec<(JsonDom, &str)> = vec![
            (jsonb(J::U64(u64::MAX)), "18446744073709551615"),
            (jsonb(J::I64(i64::MIN)), "-9223372036854775808"),
            (jsonb(J::I16(-7)), "-7"),
            // 12345678901234567890.50 as DECIMAL(22,2)
            (
                decimal(&[22, 2, 140, 20, 154, 164, 53, 13, 251, 56, 210, 50]),
                "12345678901234567890.50",
            ),
            // -0.000000000000000000001 as DECIMAL(22,21)
            (
                decimal(&[
                    22, 21, 127, 255, 255, 255, 255, 255, 255, 255, 255, 255, 254,
                ]),
                "-0.000000000000000000001",
            ),
            (decimal(&[3, 2, 129, 50]), "1.50"),
            // A double is all the binary format keeps of 12345678901234567890.5.
            (
                jsonb(J::F64(12345678901234567890.5)),
                "1.2345678901234567e+19",
            ),
            (jsonb(J::F64(1e300)), "1e+300"),
            (jsonb(J::F64(-0.0)), "-0.0"),
            (jsonb(J::F64(0.1)), "0.1"),
            (
                arr(vec![
                    jsonb(J::I32(1)),
                    arr(vec![
                        decimal(&[3, 2, 129, 50]),
                        arr(vec![jsonb(J::F64(2.5e-8))]),
                    ]),
                    arr(vec![]),
                ]),
                "[1,[1.50,[2.5e-8]],[]]",
            ),
        ];
        for (dom, want) in cases {
            let mut out = String::new();
            push_jsonb(&mut out, &dom);
            assert_eq!(out, want, "{dom:?}");
        }
    }

    #[test]
    fn mismatched_values_are_refused_not_guessed() {
        let mut out = String::new();
        let err = to_json(
            &col(MYSQL_TYPE_ENUM, &[0xf7, 1]),
            &BinlogValue::Value(Value::Int(3)),
            &mut out,
        )
        .unwrap_err();
        assert!(err.to_string().contains("beyond its 0 members"), "{err}");
        assert!(to_json(
            &col(MYSQL_TYPE_TIMESTAMP2, &[0]),
            &BinlogValue::Value(Value::Bytes(b"x".to_vec())),
            &mut out
        )
        .is_err());
        assert!(to_json(
            &col(MYSQL_TYPE_JSON, &[4]),
            &BinlogValue::JsonDiff(Vec::new()),
            &mut out
        )
        .is_err());
    }
}
