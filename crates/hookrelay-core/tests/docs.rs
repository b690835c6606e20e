//! The user's documentation kept honest against the code and itself:
//!
//! - `docs/configuration.md`'s key tables against the config structs in
//!   `crates/hookrelay-core/src/config.rs`: every key the structs read (nested tables
//!   and `sources[].…` included) has a row and every row is a key; a row that says
//!   "required" is a key whose absence the loader refuses, and a row whose default is
//!   a value is a key that, set to that value, loads the same config as leaving it out;
//! - every relative link in README.md and docs/ reaches a file;
//! - README.md stays a front door (at most 400 lines), and neither it, docs/, the
//!   code's comments nor the tests name tracker tickets or work sessions: a comment
//!   says what and why, and `git log` keeps the history.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

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
        table(
            "[api]",
            &[
                ("tokens", r#"["readme-token"]"#),
                ("health_listen", r#""127.0.0.1:8081""#),
            ],
        ),
        table("[dispatch]", &[]),
        table("[log]", &[]),
        table("[retention]", &[]),
        table("[backfill]", &[]),
        table(
            "[[sources]]",
            &[
                ("name", r#""pg""#),
                ("kind", r#""postgres""#),
                ("url", r#""postgres://u@db/shop""#),
                ("tables", r#"["public.orders"]"#),
                ("exclude_columns", r#"["public.orders.card"]"#),
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
                ("exclude_fields", r#"["app.orders.card"]"#),
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

/// (table header, key inside it) for a documented key: `dispatch.backoff` → (`[dispatch]`,
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

/// The repository's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The rows of the key tables in `docs/configuration.md`'s `## Keys` section: key →
/// default cell.
fn readme_rows() -> BTreeMap<String, String> {
    let page = std::fs::read_to_string(root().join("docs/configuration.md"))
        .expect("read docs/configuration.md");
    let section = page
        .split("\n## Keys\n")
        .nth(1)
        .expect("docs/configuration.md has a `## Keys` section");
    let section = section.split("\n## ").next().unwrap_or(section);
    let mut rows = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let key = cells[1].trim_matches('`').to_owned();
        let previous = rows.insert(key.clone(), cells[2].to_owned());
        assert!(
            previous.is_none(),
            "docs/configuration.md: the row `{key}` appears twice"
        );
    }
    assert!(
        rows.len() > 10,
        "docs/configuration.md: key tables not found: {rows:?}"
    );
    rows
}

#[test]
fn the_configuration_page_documents_every_key_of_the_config_structs() {
    let full = full();
    let serialized = load(&full).expect("the full test config loads");
    let mut struct_keys = BTreeSet::new();
    leaf_keys(&serialized, "", &mut struct_keys);
    // The optional keys without a default value, left out.
    let base_tables = [
        "sources[].server_id",
        "api.health_listen",
        "sources[].exclude_columns",
        "sources[].exclude_fields",
    ]
    .into_iter()
    .fold(full.clone(), |t, key| without(&t, key));
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
        "config keys missing from docs/configuration.md: {missing:?}"
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
        "docs/configuration.md rows that are no config key: {unknown:?}"
    );

    let mut problems = Vec::new();
    for (key, default) in &rows {
        let required_by_loader = load(&without(&full, key)).is_err();
        let says_required = default.starts_with("required");
        if says_required != required_by_loader {
            problems.push(format!(
                "`{key}`: the page says {default:?}, but leaving it out {}",
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
                        "`{key}`: the page gives no value as its default ({default:?}), but it is {value}"
                    ));
                }
                continue;
            }
        };
        // Set to the page's default (as TOML, or else as a TOML string), each table
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
                            "`{key}`: the page's default {default} is not the default (in {})",
                            render(&tables[i..=i])
                        ));
                    }
                    break;
                }
            }
        }
        if !loaded_somewhere {
            problems.push(format!(
                "`{key}`: the page's default {default} does not load"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "docs/configuration.md:\n{}",
        problems.join("\n")
    );
}

/// The value at a documented key in a serialized config (`sources[].x` in any source).
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

/// README.md and every Markdown page under docs/.
fn pages() -> Vec<(PathBuf, String)> {
    let mut paths = vec![root().join("README.md")];
    let mut dirs = vec![root().join("docs")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read docs/") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                paths.push(path);
            }
        }
    }
    paths
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("read page");
            (p, text)
        })
        .collect()
}

/// The targets of a page's Markdown links, `[text](target)`, without their `#anchor`.
fn link_targets(text: &str) -> Vec<&str> {
    text.split("](")
        .skip(1)
        .filter_map(|rest| rest.split_once(')').map(|(t, _)| t))
        .map(|t| t.split('#').next().unwrap_or(t).trim())
        .collect()
}

#[test]
fn relative_links_in_the_readme_and_docs_resolve() {
    let mut broken = Vec::new();
    let pages = pages();
    assert!(pages.len() >= 8, "README.md and the docs/ pages");
    for (path, text) in &pages {
        for target in link_targets(text) {
            let external = target.contains(':') || target.is_empty();
            if !external && !path.parent().expect("dir").join(target).exists() {
                broken.push(format!("{} -> {target}", path.display()));
            }
        }
    }
    assert!(broken.is_empty(), "broken links: {broken:#?}");
}

#[test]
fn the_readme_is_a_front_door() {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let lines = readme.lines().count();
    assert!(
        lines <= 400,
        "README.md has {lines} lines; reference belongs in docs/"
    );
    // The two commands, as `.ci/run` and a new user run them.
    for command in [
        "scripts/run.sh",
        "bash scripts/test.sh",
        "webhook-signature",
    ] {
        assert!(
            readme.contains(command),
            "README.md does not show {command}"
        );
    }
}

/// A ticket number ("issue" or "pass" then a number) or a work session (an ordinal
/// then "pass"), with any spacing, also across a comment's line break.
fn tracker_words(text: &str) -> Vec<String> {
    let words: Vec<String> = text
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .collect();
    let ordinals = [
        "first", "second", "third", "fourth", "fifth", "sixth", "seventh",
    ];
    words
        .windows(2)
        .filter(|w| {
            ((w[0] == "issue" || w[0] == "pass") && w[1].chars().all(|c| c.is_ascii_digit()))
                || (ordinals.contains(&w[0].as_str()) && w[1] == "pass")
        })
        .map(|w| w.join(" "))
        .collect()
}

#[test]
fn no_tracker_numbers_or_work_sessions_in_docs_code_or_tests() {
    let mut files: Vec<PathBuf> = pages().into_iter().map(|(p, _)| p).collect();
    let mut dirs: Vec<PathBuf> = ["crates", "tests", "scripts", "deploy", "examples", "sql"]
        .iter()
        .map(|d| root().join(d))
        .collect();
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("entry").path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if path.is_dir() {
                if name != "target" && name != "node_modules" {
                    dirs.push(path);
                }
                continue;
            }
            // An applied migration is checksummed by the store's migration runner:
            // changing its text, comments included, stops start-up. They keep theirs.
            let applied_migration =
                path.parent().is_some_and(|p| p.ends_with("sql")) && name.starts_with('V');
            let text_file = ["rs", "md", "sh", "sql", "toml", "yaml", "py", "mjs"]
                .iter()
                .any(|e| path.extension().is_some_and(|x| x == *e));
            if text_file && !applied_migration {
                files.push(path);
            }
        }
    }
    files.push(root().join("Cargo.toml"));
    let mut found = Vec::new();
    for path in files {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        for hit in tracker_words(&text) {
            found.push(format!("{}: {hit:?}", path.display()));
        }
    }
    assert!(
        found.is_empty(),
        "say what and why instead of naming a ticket or a session:\n{}",
        found.join("\n")
    );
}

#[test]
fn tracker_words_are_found_across_comment_lines() {
    let ticket = format!("see {}\n    // 14 for", "issue");
    assert_eq!(tracker_words(&ticket), [format!("{} 14", "issue")]);
    // Spelled apart here, or this file would hold what it looks for.
    let word = concat!("pa", "ss");
    let session = format!("the Third  {word}");
    assert_eq!(tracker_words(&session), [format!("third {word}")]);
    assert!(tracker_words("a pass that issues 3 claims; passes 2 and 3").is_empty());
}
