//! Filters on row content (DESIGN §1.9): a subscription's `filter` is a CEL
//! expression (the cel-rust interpreter) over the event as its body carries it, so a
//! decimal is a string (`double(after.total) > 100.0`) and a timestamp is RFC 3339.
//!
//! ```text
//!  filter text ──compile (API: 422 naming `filter` and the position)──▶ RowFilter
//!  event body ──EventVars::from_body (once per event)─┐
//!                                                     ├─▶ matches ─▶ true: a delivery
//!  RowFilter (one per filtered subscription) ─────────┘    false, or an error: none
//! ```
//!
//! An expression that fails for one event (a missing field, a bad conversion, null)
//! counts as false for that event; the caller counts it, nothing else stops.

use std::{collections::HashMap, sync::Arc};

use cel::{objects::Key, Context, Program, Value};

/// The variables a filter can use, as the event carries them.
pub const VARIABLES: [&str; 7] = ["op", "source", "schema", "table", "key", "before", "after"];

/// Why a filter was refused when it was saved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("must not be empty")]
    Empty,
    #[error("at line {line}, column {column}: {message}")]
    Syntax {
        line: isize,
        column: isize,
        message: String,
    },
    #[error("unknown variable `{0}` (known: op, source, schema, table, key, before, after)")]
    UnknownVariable(String),
}

/// A compiled filter; cheap to share.
#[derive(Clone)]
pub struct RowFilter(Arc<Program>);

impl std::fmt::Debug for RowFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowFilter").finish_non_exhaustive()
    }
}

impl RowFilter {
    /// Parses `text` and checks that it names only the event's variables.
    pub fn compile(text: &str) -> Result<Self, FilterError> {
        if text.trim().is_empty() {
            return Err(FilterError::Empty);
        }
        let program = Program::compile(text).map_err(|errors| {
            let first = errors.errors.first();
            FilterError::Syntax {
                line: first.map_or(1, |e| e.pos.0.max(1)),
                column: first.map_or(1, |e| e.pos.1.max(1)),
                message: first.map_or_else(|| errors.to_string(), |e| e.msg.clone()),
            }
        })?;
        if let Some(unknown) = program
            .references()
            .variables()
            .into_iter()
            .find(|v| !VARIABLES.contains(v))
        {
            return Err(FilterError::UnknownVariable(unknown.to_owned()));
        }
        Ok(Self(Arc::new(program)))
    }

    /// Does the event pass? `Err` says why it could not be told (counted as false).
    pub fn matches(&self, event: &EventVars) -> Result<bool, String> {
        match self.0.execute(&event.context) {
            Ok(Value::Bool(b)) => Ok(b),
            Ok(other) => Err(format!(
                "the filter gave {:?}, not a boolean",
                other.type_of()
            )),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// One event's variables, built once and shared by every filter it is tested with.
pub struct EventVars {
    context: Context<'static, 'static>,
}

impl EventVars {
    /// From the event's body (the §1.3 envelope).
    pub fn from_body(body: &str) -> Result<Self, String> {
        let mut event: serde_json::Value =
            serde_json::from_str(body).map_err(|e| format!("event body: {e}"))?;
        let mut take = |path: &[&str]| -> serde_json::Value {
            let mut at = &mut event;
            for p in path {
                at = match at.get_mut(*p) {
                    Some(v) => v,
                    None => return serde_json::Value::Null,
                };
            }
            at.take()
        };
        let vars = [
            ("op", take(&["op"])),
            ("source", take(&["source", "name"])),
            ("schema", take(&["source", "schema"])),
            ("table", take(&["source", "table"])),
            ("key", take(&["key"])),
            ("before", take(&["before"])),
            ("after", take(&["after"])),
        ];
        let mut context = Context::default();
        for (name, value) in vars {
            context.add_variable_from_value(name, cel_value(value));
        }
        Ok(Self { context })
    }
}

/// JSON as CEL sees it: integers as `int` (so `after.qty > 3` compares as written),
/// other numbers as `double`, objects as maps with string keys.
fn cel_value(v: serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => match n.as_u64() {
                Some(u) => Value::UInt(u),
                None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
        },
        serde_json::Value::String(s) => Value::String(Arc::new(s)),
        serde_json::Value::Array(a) => {
            Value::List(Arc::new(a.into_iter().map(cel_value).collect()))
        }
        serde_json::Value::Object(o) => {
            let map: HashMap<Key, Value> = o
                .into_iter()
                .map(|(k, v)| (Key::String(Arc::new(k)), cel_value(v)))
                .collect();
            Value::from(map)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(op: &str, before: serde_json::Value, after: serde_json::Value) -> String {
        serde_json::json!({
            "id": "evt_x", "type": format!("orders.{op}"),
            "source": {"name": "shop", "kind": "postgres", "database": "shop",
                       "schema": "public", "table": "orders", "position": "1"},
            "op": op, "key": {"id": 42}, "before": before, "after": after,
            "txn": {"id": "1", "seq": 0},
            "committed_at": "2026-11-22T20:01:02.345Z", "captured_at": "2026-11-22T20:01:02.351Z"
        })
        .to_string()
    }

    fn eval(filter: &str, body: &str) -> Result<bool, String> {
        let f = RowFilter::compile(filter).expect("compiles");
        f.matches(&EventVars::from_body(body).expect("body"))
    }

    #[test]
    fn filters_over_real_envelopes() {
        use serde_json::json;
        let update = envelope(
            "update",
            json!({"id": 42, "status": "pending", "total": "19.99", "big": "9007199254740993"}),
            json!({"id": 42, "status": "paid", "total": "119.99", "big": "9007199254740993",
                   "qty": 4, "ratio": 0.5, "address": {"city": "Lyon"}, "note": null}),
        );
        let insert = envelope("insert", json!(null), json!({"id": 42, "status": "new"}));
        let delete = envelope("delete", json!({"id": 42, "status": "paid"}), json!(null));
        let truncate = envelope("truncate", json!(null), json!(null));
        let read = envelope("read", json!(null), json!({"id": 42, "status": "paid"}));
        let cases: &[(&str, &str, Result<bool, ()>)] = &[
            (
                r#"op == "update" && before.status != after.status"#,
                &update,
                Ok(true),
            ),
            (
                r#"op == "update" && before.status != after.status"#,
                &insert,
                Ok(false),
            ),
            ("double(after.total) > 100.0", &update, Ok(true)),
            ("after.qty > 3 && after.ratio < 1.0", &update, Ok(true)),
            (r#"after.big == "9007199254740993""#, &update, Ok(true)),
            (r#"after.address.city == "Lyon""#, &update, Ok(true)),
            ("after.note == null", &update, Ok(true)),
            ("key.id == 42", &delete, Ok(true)),
            (r#"table == "orders" && op == "delete""#, &delete, Ok(true)),
            (
                r#"schema == "public" && source == "shop""#,
                &truncate,
                Ok(true),
            ),
            (r#"op == "read""#, &read, Ok(true)),
            ("has(after.status)", &read, Ok(true)),
            ("has(after.missing)", &read, Ok(false)),
            // run-time failures: counted as false by the caller
            ("after.missing == 1", &update, Err(())),
            ("after.status == 1 || after.status > 2", &insert, Err(())),
            ("before.status", &delete, Err(())),
            ("after.status == \"x\"", &delete, Err(())),
            ("double(after.status) > 1.0", &insert, Err(())),
        ];
        for (filter, body, want) in cases {
            let got = eval(filter, body);
            assert_eq!(got.is_ok(), want.is_ok(), "{filter}: {got:?}");
            if let (Ok(got), Ok(want)) = (&got, want) {
                assert_eq!(got, want, "{filter}");
            }
        }
    }

    #[test]
    fn a_bad_expression_says_where() {
        match RowFilter::compile("after.total >") {
            Err(FilterError::Syntax { line, column, .. }) => assert_eq!((line, column), (1, 14)),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            RowFilter::compile("row.total > 1").err(),
            Some(FilterError::UnknownVariable("row".into()))
        );
        assert_eq!(RowFilter::compile("  ").err(), Some(FilterError::Empty));
    }
}
