//! The README's configuration table against the config structs in
//! `crates/hookrelay-core/src/config.rs`: every key the structs read (nested tables and
//! `sources[].…` included) has a row and every row is a key; a row that says
//! "required" is a key whose absence the loader refuses, and a row whose default is a
//! value is a key that, set to that value, loads the same config as leaving it out.

use std::collections::{BTreeMap, BTreeSet};

use hookrelay_core::Config;
use serde_json::Value;

/// One TOML table of a test config: its header and `key = value` lines.
#[derive(Clone)]
struct Table {
    header: &'static str,
    entries: Vec<(String, String)>,
}

fn table(header: &'static str, entries: &[(&str, &str)]) -> Table {
    Table {
        header,
        entries: entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// Every required key, one source of each kind, and `server_id` (optional, no default
/// value) so the key shows up when the config is serialized.
fn full() -> Vec<Table> {
    vec![
        table("[store]", &[("url", r#""postgres://u@db/store""#)]),
        table("[api]", &[("tokens", r#"["readme-token"]"#)]),
        table("[dispatch]", &[]),
        table("[log]", &[]),
        table("[retention]", &[]),
        table(
            "[[sources]]",
            &[
                ("name", r#""pg""#),
                ("kind", r#""postgres""#),
                ("url", r#""postgres://u@db/shop""#),
                ("tables", r#"["public.orders"]"#),
                ("exclude_columns", r#"["public.orders.note"]"#),
            ],
        ),
        table(
            "[[sources]]",
            &[
                ("name", r#""my""#),
                ("kind", r#""mysql""#),
                ("url", r#""mysql://u@db/shop""#),
                ("tables", r#"["shop.orders"]"#),
                ("server_id", "4242"),
            ],
        ),
        table(
            "[[sources]]",
            &[
                ("name", r#""mg""#),
                ("kind", r#""mongodb""#),
                ("url", r#""mongodb://db/?replicaSet=rs0""#),
                ("collections", r#"["app.orders"]"#),
                ("exclude_fields", r#"["app.orders.card.number"]"#),
            ],
        ),
    ]
}

fn render(tables: &[Table]) -> String {
    let mut out = String::new();
    for t in tables {
        out.push_str(t.header);
        out.push('\n');
        for (k, v) in &t.entries {
            out.push_str(&format!("{k} = {v}\n"));
        }
    }
    out
}

/// (table header, key inside it) for a README key: `dispatch.backoff` → (`[dispatch]`,
/// `backoff`), `sources[].batch_size` → (`[[sources]]`, `batch_size`).
fn locate(key: &str) -> (String, String) {
    if let Some(k) = key.strip_prefix("sources[].") {
        return ("[[sources]]".into(), k.into());
    }
    let (section, k) = key.split_once('.').expect("section.key");
    (format!("[{section}]"), k.into())
}

/// `full()` without `key` anywhere.
fn without(tables: &[Table], key: &str) -> Vec<Table> {
    let (header, k) = locate(key);
    let mut out = tables.to_vec();
    for t in out.iter_mut().filter(|t| t.header == header) {
        t.entries.retain(|(e, _)| *e != k);
    }
    out
}

fn load(tables: &[Table]) -> Result<Value, String> {
    Config::from_toml(&render(tables))
        .map(|c| serde_json::to_value(c).expect("config serializes"))
        .map_err(|e| e.to_string())
}

/// Leaf keys of a serialized config: `store.url`, `dispatch.backoff.initial`,
/// `sources[].name`.
fn leaf_keys(v: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(o) => {
            for (k, v) in o {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaf_keys(v, &path, out);
            }
        }
        Value::Array(items) if items.iter().all(Value::is_object) && !items.is_empty() => {
            for item in items {
                leaf_keys(item, &format!("{prefix}[]"), out);
            }
        }
        _ => {
            out.insert(prefix.to_owned());
        }
    }
}

/// The rows of the README's `## Configuration` table: key → default cell.
fn readme_rows() -> BTreeMap<String, String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("read README.md");
    let section = readme
        .split("\n## Configuration\n")
        .nth(1)
        .expect("README has a `## Configuration` section");
    let section = section.split("\n## ").next().unwrap_or(section);
    let mut rows = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let key = cells[1].trim_matches('`').to_owned();
        let previous = rows.insert(key.clone(), cells[2].to_owned());
        assert!(previous.is_none(), "README: the row `{key}` appears twice");
    }
    assert!(
        rows.len() > 10,
        "README configuration table not found: {rows:?}"
    );
    rows
}

#[test]
fn readme_configuration_table_matches_the_config_structs() {
    let full = full();
    let serialized = load(&full).expect("the full test config loads");
    let mut struct_keys = BTreeSet::new();
    leaf_keys(&serialized, "", &mut struct_keys);
    let base_tables = without(&full, "sources[].server_id");
    let base = load(&base_tables).expect("the config without server_id loads");
    let rows = readme_rows();

    // Every key has a row (its own, or its nested table's, e.g. `dispatch.backoff`).
    let covered = |leaf: &str| {
        rows.keys()
            .any(|row| leaf == row || leaf.starts_with(&format!("{row}.")))
    };
    let missing: Vec<&String> = struct_keys.iter().filter(|k| !covered(k)).collect();
    assert!(
        missing.is_empty(),
        "config keys missing from the README table: {missing:?}"
    );
    // Every row is a key (or a nested table of keys).
    let unknown: Vec<&String> = rows
        .keys()
        .filter(|row| {
            !struct_keys
                .iter()
                .any(|k| k == *row || k.starts_with(&format!("{row}.")))
        })
        .collect();
    assert!(
        unknown.is_empty(),
        "README rows that are no config key: {unknown:?}"
    );

    let mut problems = Vec::new();
    for (key, default) in &rows {
        let required_by_loader = load(&without(&full, key)).is_err();
        let says_required = default.starts_with("required");
        if says_required != required_by_loader {
            problems.push(format!(
                "`{key}`: the README says {default:?}, but leaving it out {}",
                if required_by_loader {
                    "is refused"
                } else {
                    "loads"
                }
            ));
            continue;
        }
        if says_required {
            continue;
        }
        // A default given as a value: `16`, `false`, `` `10s` ``, `` `[]` ``.
        let literal = match default.strip_prefix('`').and_then(|d| d.strip_suffix('`')) {
            Some(inner) if !inner.contains('`') => inner.to_owned(),
            _ if default.parse::<f64>().is_ok() || default == "true" || default == "false" => {
                default.clone()
            }
            _ => {
                // Prose ("derived from the name"): only for a key with no default value.
                if let Some(value) = pointer(&base, key) {
                    problems.push(format!(
                        "`{key}`: the README gives no value as its default ({default:?}), but it is {value}"
                    ));
                }
                continue;
            }
        };
        // Set to the README's default (as TOML, or else as a TOML string), each table
        // that takes it must load exactly the config that leaving it out gives.
        let (header, k) = locate(key);
        let mut loaded_somewhere = false;
        for (i, t) in base_tables.iter().enumerate() {
            if t.header != header {
                continue;
            }
            for value in [literal.clone(), format!("{literal:?}")] {
                let mut tables = base_tables.clone();
                tables[i].entries.push((k.clone(), value));
                if let Ok(got) = load(&tables) {
                    loaded_somewhere = true;
                    if got != base {
                        problems.push(format!(
                            "`{key}`: the README's default {default} is not the default (in {})",
                            render(&tables[i..=i])
                        ));
                    }
                    break;
                }
            }
        }
        if !loaded_somewhere {
            problems.push(format!(
                "`{key}`: the README's default {default} does not load"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "README configuration table:\n{}",
        problems.join("\n")
    );
}

/// The value at a README key in a serialized config (`sources[].x` in any source).
fn pointer<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    if let Some(k) = key.strip_prefix("sources[].") {
        return v["sources"]
            .as_array()?
            .iter()
            .find_map(|s| s.get(k).filter(|v| !v.is_null()));
    }
    let (section, k) = key.split_once('.')?;
    v.get(section)?.get(k).filter(|v| !v.is_null())
}
