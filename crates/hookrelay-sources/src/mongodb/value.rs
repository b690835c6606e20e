//! BSON → JSON text, by the value rules of DESIGN §1.3: one pure function, the
//! reader only feeds it.
//!
//! Written straight to a `String` (not through `serde_json::Value`) so a document's
//! field order is kept and every number keeps its exact form.
//!
//! | BSON | JSON |
//! |---|---|
//! | Double | shortest round-trip number; `"NaN"`, `"Infinity"`, `"-Infinity"` |
//! | Int32, Int64 within ±2^53 | number; beyond (either sign) a string |
//! | Decimal128 | exact plain decimal string, never an exponent; `"NaN"`, `"Infinity"` |
//! | ObjectId | 24 hex digits |
//! | Date | RFC 3339 UTC, exactly 3 fractional digits; years outside 0000–9999 signed |
//! | Binary | standard base64; subtype 4 (UUID, 16 bytes) as the hyphenated string |
//! | Timestamp, Regex, MinKey, MaxKey, Code, DBPointer, Symbol, Undefined | relaxed Extended JSON v2 |
//! | Document, Array | recursively, field order kept |

use std::fmt::Write as _;

use base64::{engine::general_purpose::STANDARD, Engine};
use chrono::{Datelike, Timelike};
use mongodb::bson::{spec::BinarySubtype, Bson, Decimal128, Document};

const MAX_SAFE_INT: u64 = 1 << 53;

/// A document as a JSON object, fields in their stored order.
pub fn document_json(doc: &Document) -> String {
    let mut out = String::with_capacity(128);
    write_document(doc, &mut out);
    out
}

/// Appends `v` as JSON to `out`.
pub fn write_value(v: &Bson, out: &mut String) {
    match v {
        Bson::Null => out.push_str("null"),
        Bson::Boolean(b) => out.push_str(if *b { "true" } else { "false" }),
        Bson::Int32(i) => {
            let _ = write!(out, "{i}");
        }
        Bson::Int64(i) if i.unsigned_abs() > MAX_SAFE_INT => push_str(out, &i.to_string()),
        Bson::Int64(i) => {
            let _ = write!(out, "{i}");
        }
        Bson::Double(f) => write_double(*f, out),
        Bson::Decimal128(d) => push_str(out, &decimal_plain(d)),
        Bson::String(s) => push_str(out, s),
        Bson::ObjectId(oid) => push_str(out, &oid.to_hex()),
        Bson::DateTime(dt) => match date_text(dt.timestamp_millis()) {
            Some(text) => push_str(out, &text),
            // Beyond what a calendar can name: MongoDB's own text for it.
            None => {
                let _ = write!(
                    out,
                    r#"{{"$date":{{"$numberLong":"{}"}}}}"#,
                    dt.timestamp_millis()
                );
            }
        },
        Bson::Binary(b) => match (b.subtype, b.bytes.len()) {
            (BinarySubtype::Uuid, 16) => push_str(out, &uuid_text(&b.bytes)),
            _ => push_str(out, &STANDARD.encode(&b.bytes)),
        },
        Bson::Document(d) => write_document(d, out),
        Bson::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(item, out);
            }
            out.push(']');
        }
        Bson::Timestamp(ts) => {
            let _ = write!(
                out,
                r#"{{"$timestamp":{{"t":{},"i":{}}}}}"#,
                ts.time, ts.increment
            );
        }
        Bson::RegularExpression(re) => {
            // Extended JSON wants the options sorted.
            let mut opts: Vec<char> = re.options.chars().collect();
            opts.sort_unstable();
            let opts: String = opts.into_iter().collect();
            out.push_str(r#"{"$regularExpression":{"pattern":"#);
            push_str(out, &re.pattern);
            out.push_str(r#","options":"#);
            push_str(out, &opts);
            out.push_str("}}");
        }
        Bson::JavaScriptCode(code) => {
            out.push_str(r#"{"$code":"#);
            push_str(out, code);
            out.push('}');
        }
        Bson::JavaScriptCodeWithScope(c) => {
            out.push_str(r#"{"$code":"#);
            push_str(out, &c.code);
            out.push_str(r#","$scope":"#);
            write_document(&c.scope, out);
            out.push('}');
        }
        Bson::Symbol(s) => {
            out.push_str(r#"{"$symbol":"#);
            push_str(out, s);
            out.push('}');
        }
        Bson::Undefined => out.push_str(r#"{"$undefined":true}"#),
        Bson::MinKey => out.push_str(r#"{"$minKey":1}"#),
        Bson::MaxKey => out.push_str(r#"{"$maxKey":1}"#),
        // The driver keeps DBPointer's parts private; its relaxed Extended JSON is the
        // one public view of them.
        p @ Bson::DbPointer(_) => out.push_str(&p.clone().into_relaxed_extjson().to_string()),
    }
}

fn write_document(doc: &Document, out: &mut String) {
    out.push('{');
    for (i, (k, v)) in doc.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_str(out, k);
        out.push(':');
        write_value(v, out);
    }
    out.push('}');
}

/// A JSON string literal (NUL and control characters escaped).
fn push_str(out: &mut String, s: &str) {
    // Serializing a &str cannot fail.
    out.push_str(&serde_json::to_string(s).unwrap_or_default());
}

fn write_double(f: f64, out: &mut String) {
    if f.is_nan() {
        push_str(out, "NaN");
    } else if f.is_infinite() {
        push_str(out, if f > 0.0 { "Infinity" } else { "-Infinity" });
    } else {
        // serde_json prints finite floats in ryu's shortest round-trip form.
        out.push_str(&serde_json::to_string(&f).unwrap_or_default());
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`; years outside 0000–9999 in ISO 8601 expanded form.
fn date_text(ms: i64) -> Option<String> {
    let t = chrono::DateTime::from_timestamp_millis(ms)?;
    let year = t.year();
    let y = match year {
        0..=9999 => format!("{year:04}"),
        y if y > 9999 => format!("+{y}"),
        y => format!("-{:04}", y.unsigned_abs()),
    };
    Some(format!(
        "{y}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.timestamp_subsec_millis()
    ))
}

fn uuid_text(b: &[u8]) -> String {
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Decimal128 (IEEE 754-2008, binary integer decimal) in plain notation: the
/// coefficient's digits with the point placed by the exponent, zeros padded, never an
/// exponent, so `1E+3` is `"1000"` and `1.50` keeps its scale.
pub fn decimal_plain(d: &Decimal128) -> String {
    let bits = u128::from_le_bytes(d.bytes());
    let negative = bits >> 127 == 1;
    let combination = (bits >> 122) & 0x1F;
    if combination == 0x1F {
        return "NaN".into();
    }
    if combination == 0x1E {
        return if negative { "-Infinity" } else { "Infinity" }.into();
    }
    let max_coefficient: u128 = 10u128.pow(34) - 1;
    let (biased_exp, coefficient) = if (bits >> 125) & 0b11 == 0b11 {
        // The "11" form holds coefficients above 2^113: never canonical, so zero.
        ((bits >> 111) & 0x3FFF, 0)
    } else {
        let c = bits & ((1u128 << 113) - 1);
        (
            (bits >> 113) & 0x3FFF,
            if c > max_coefficient { 0 } else { c },
        )
    };
    let exp = biased_exp as i64 - 6176;
    let digits = coefficient.to_string();
    let mut out = String::with_capacity(digits.len() + 8);
    if negative {
        out.push('-');
    }
    if exp >= 0 {
        out.push_str(&digits);
        if coefficient != 0 {
            out.extend(std::iter::repeat_n('0', exp as usize));
        }
    } else {
        let scale = exp.unsigned_abs() as usize;
        if digits.len() > scale {
            let (int, frac) = digits.split_at(digits.len() - scale);
            out.push_str(int);
            out.push('.');
            out.push_str(frac);
        } else {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', scale - digits.len()));
            out.push_str(&digits);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use mongodb::bson::{
        doc, oid::ObjectId, Binary, DateTime, JavaScriptCodeWithScope, Regex, Timestamp,
    };

    use super::*;

    fn dec(s: &str) -> Bson {
        Bson::Decimal128(s.parse().unwrap())
    }

    fn bin(subtype: BinarySubtype, bytes: &[u8]) -> Bson {
        Bson::Binary(Binary {
            subtype,
            bytes: bytes.to_vec(),
        })
    }

    fn json(v: &Bson) -> String {
        let mut out = String::new();
        write_value(v, &mut out);
        out
    }

    #[test]
    fn golden_values() {
        // 51 BC, astronomical year -0050.
        let bc = chrono::NaiveDate::from_ymd_opt(-50, 1, 1)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp_millis();
        let big = format!(r#""1{}""#, "0".repeat(40));
        let uuid = hex::decode("0123456789abcdef0123456789abcdef").unwrap();
        let cases: Vec<(Bson, &str)> = vec![
            (Bson::Null, "null"),
            (Bson::Boolean(true), "true"),
            (Bson::Int32(-7), "-7"),
            (Bson::Int32(i32::MIN), "-2147483648"),
            (Bson::Int64(9_007_199_254_740_992), "9007199254740992"),
            (Bson::Int64(-9_007_199_254_740_992), "-9007199254740992"),
            (Bson::Int64(9_007_199_254_740_993), r#""9007199254740993""#),
            (
                Bson::Int64(-9_007_199_254_740_993),
                r#""-9007199254740993""#,
            ),
            (Bson::Int64(i64::MIN), r#""-9223372036854775808""#),
            (Bson::Int64(i64::MAX), r#""9223372036854775807""#),
            (Bson::Double(0.1), "0.1"),
            (Bson::Double(1.0), "1.0"),
            (Bson::Double(-2.5e-8), "-2.5e-8"),
            (Bson::Double(1e300), "1e+300"),
            (Bson::Double(f64::NAN), r#""NaN""#),
            (Bson::Double(f64::INFINITY), r#""Infinity""#),
            (Bson::Double(f64::NEG_INFINITY), r#""-Infinity""#),
            (dec("19.99"), r#""19.99""#),
            (dec("1.50"), r#""1.50""#),
            (dec("1E+3"), r#""1000""#),
            (dec("-1.23E-7"), r#""-0.000000123""#),
            (dec("0.000"), r#""0.000""#),
            (dec("-0"), r#""-0""#),
            (
                dec("9999999999999999999999999999999999"),
                r#""9999999999999999999999999999999999""#,
            ),
            (dec("1E+40"), &big),
            (dec("NaN"), r#""NaN""#),
            (dec("Infinity"), r#""Infinity""#),
            (dec("-Infinity"), r#""-Infinity""#),
            (Bson::String("a\"b\u{0}é".into()), r#""a\"b\u0000é""#),
            (
                Bson::ObjectId(ObjectId::parse_str("5f43a1b2c3d4e5f60718293a").unwrap()),
                r#""5f43a1b2c3d4e5f60718293a""#,
            ),
            (
                Bson::DateTime(DateTime::from_millis(1_795_377_662_345)),
                r#""2026-11-22T20:01:02.345Z""#,
            ),
            (
                Bson::DateTime(DateTime::from_millis(1_795_377_662_000)),
                r#""2026-11-22T20:01:02.000Z""#,
            ),
            (
                Bson::DateTime(DateTime::from_millis(-1)),
                r#""1969-12-31T23:59:59.999Z""#,
            ),
            (
                Bson::DateTime(DateTime::from_millis(bc)),
                r#""-0050-01-01T00:00:00.000Z""#,
            ),
            (
                Bson::DateTime(DateTime::from_millis(253_402_300_800_000)),
                r#""+10000-01-01T00:00:00.000Z""#,
            ),
            (
                Bson::DateTime(DateTime::from_millis(i64::MAX)),
                r#"{"$date":{"$numberLong":"9223372036854775807"}}"#,
            ),
            (bin(BinarySubtype::Generic, b"hi\x00\xff"), r#""aGkA/w==""#),
            (
                bin(BinarySubtype::Uuid, &uuid),
                r#""01234567-89ab-cdef-0123-456789abcdef""#,
            ),
            (
                bin(BinarySubtype::UuidOld, &uuid),
                r#""ASNFZ4mrze8BI0VniavN7w==""#,
            ),
            (bin(BinarySubtype::UserDefined(0x80), b""), r#""""#),
            (
                Bson::Timestamp(Timestamp {
                    time: 1_795_204_862,
                    increment: 7,
                }),
                r#"{"$timestamp":{"t":1795204862,"i":7}}"#,
            ),
            (
                Bson::RegularExpression(Regex {
                    pattern: "^a\\.b$".into(),
                    options: "mi".into(),
                }),
                r#"{"$regularExpression":{"pattern":"^a\\.b$","options":"im"}}"#,
            ),
            (Bson::MinKey, r#"{"$minKey":1}"#),
            (Bson::MaxKey, r#"{"$maxKey":1}"#),
            (
                Bson::JavaScriptCode("return 1".into()),
                r#"{"$code":"return 1"}"#,
            ),
            (
                Bson::JavaScriptCodeWithScope(JavaScriptCodeWithScope {
                    code: "x".into(),
                    scope: doc! { "x": 1 },
                }),
                r#"{"$code":"x","$scope":{"x":1}}"#,
            ),
            (Bson::Symbol("s".into()), r#"{"$symbol":"s"}"#),
            (Bson::Undefined, r#"{"$undefined":true}"#),
            (
                Bson::Document(
                    doc! { "z": 1, "a": { "m": [1, "x", { "k": Bson::Null }] }, "b": [] },
                ),
                r#"{"z":1,"a":{"m":[1,"x",{"k":null}]},"b":[]}"#,
            ),
            (
                Bson::Array(vec![
                    Bson::Int64(1 << 60),
                    Bson::Double(f64::NAN),
                    dec("2.0"),
                ]),
                r#"["1152921504606846976","NaN","2.0"]"#,
            ),
        ];
        for (value, want) in cases {
            assert_eq!(json(&value), want, "{value:?}");
            let parsed: Result<serde_json::Value, _> = serde_json::from_str(want);
            assert!(parsed.is_ok(), "golden {want} is JSON");
        }
    }

    #[test]
    fn dbpointer_is_relaxed_extended_json() {
        // DBPointer cannot be built through the driver's API; read one from raw BSON.
        let mut raw = Vec::new();
        let ns = b"app.orders\0";
        let mut body = Vec::new();
        body.push(0x0C);
        body.extend_from_slice(b"p\0");
        body.extend_from_slice(&(ns.len() as i32).to_le_bytes());
        body.extend_from_slice(ns);
        body.extend_from_slice(&hex::decode("5f43a1b2c3d4e5f60718293a").unwrap());
        raw.extend_from_slice(&((body.len() + 5) as i32).to_le_bytes());
        raw.extend_from_slice(&body);
        raw.push(0);
        let doc = Document::from_reader(&raw[..]).unwrap();
        assert_eq!(
            document_json(&doc),
            r#"{"p":{"$dbPointer":{"$ref":"app.orders","$id":{"$oid":"5f43a1b2c3d4e5f60718293a"}}}}"#
        );
    }

    #[test]
    fn non_canonical_decimal_is_zero() {
        // Combination bits "11" with a coefficient above 10^34 - 1: zero, per IEEE 754.
        let mut bits: u128 = 0b11 << 125;
        bits |= 6176u128 << 111;
        bits |= 1u128 << 100;
        let d = Decimal128::from_bytes(bits.to_le_bytes());
        assert_eq!(decimal_plain(&d), "0");
    }
}
