//! The event types the configured sources can emit, so the admin API can refuse a
//! subscription filter that would never match anything (a typo in a source name or a
//! glob is otherwise a subscription that silently gets nothing).
//!
//! A type is `<table>.<op>` (DESIGN §1.3): the table without its schema (MongoDB:
//! the collection without its database), `op` one of `insert`, `update`, `delete`,
//! and `truncate` for PostgreSQL. A MongoDB source watching `db.*` may emit any
//! collection name, so its types are the globs `?*.<op>`.

use crate::{
    config::{SourceConfig, SourceKind},
    filter::{glob_matches, globs_overlap},
    scope::{NamePart, TablePattern},
    Op,
};

/// What each configured source can emit.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    sources: Vec<CatalogSource>,
}

#[derive(Debug, Clone)]
struct CatalogSource {
    name: String,
    kind: SourceKind,
    tables: Vec<Table>,
}

#[derive(Debug, Clone)]
enum Table {
    Named(String),
    /// A MongoDB `db.*`: any collection of that database.
    Any,
    /// A `tables` glob (`public.order_*`): any table its table part matches.
    Glob(String),
}

impl Catalog {
    /// From the `[[sources]]` as configured (already validated).
    pub fn new(sources: &[SourceConfig]) -> Self {
        let sources = sources
            .iter()
            .map(|s| {
                let tables = match s.kind {
                    SourceKind::Postgres | SourceKind::Mysql => s
                        .tables
                        .iter()
                        .filter_map(|t| TablePattern::parse(t))
                        .map(|p| match p.table {
                            NamePart::Exact(table) => Table::Named(table),
                            NamePart::Glob(glob) => Table::Glob(glob),
                        })
                        .collect(),
                    SourceKind::Mongodb => s
                        .collections
                        .iter()
                        .filter_map(|c| c.split_once('.'))
                        .map(|(_, coll)| match coll {
                            "*" => Table::Any,
                            glob if glob.contains(['*', '?']) => Table::Glob(glob.to_owned()),
                            coll => Table::Named(coll.to_owned()),
                        })
                        .collect(),
                };
                CatalogSource {
                    name: s.name.clone(),
                    kind: s.kind,
                    tables,
                }
            })
            .collect();
        Self { sources }
    }

    /// Is `name` a configured source?
    pub fn has_source(&self, name: &str) -> bool {
        self.sources.iter().any(|s| s.name == name)
    }

    /// The configured source names, in configuration order (for messages).
    pub fn source_names(&self) -> Vec<&str> {
        self.sources.iter().map(|s| s.name.as_str()).collect()
    }

    /// Can an event the sources named in `only` (every source when `None`; unknown
    /// names are ignored) emit match `glob`?
    pub fn glob_can_match(&self, glob: &str, only: Option<&[String]>) -> bool {
        self.sources
            .iter()
            .filter(|s| only.is_none_or(|names| names.contains(&s.name)))
            .any(|s| {
                ops(s.kind).iter().any(|op| {
                    s.tables.iter().any(|t| match t {
                        Table::Named(table) => {
                            glob_matches(glob, &format!("{table}.{}", op.as_str()))
                        }
                        Table::Any => globs_overlap(glob, &format!("?*.{}", op.as_str())),
                        Table::Glob(table) => {
                            globs_overlap(glob, &format!("{table}.{}", op.as_str()))
                        }
                    })
                })
            })
    }
}

/// The operations a source of `kind` reports.
fn ops(kind: SourceKind) -> &'static [Op] {
    match kind {
        SourceKind::Postgres => &[Op::Insert, Op::Update, Op::Delete, Op::Truncate],
        SourceKind::Mysql | SourceKind::Mongodb => &[Op::Insert, Op::Update, Op::Delete],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(name: &str, kind: &str, tables: &[&str]) -> SourceConfig {
        let key = if kind == "mongodb" {
            "collections"
        } else {
            "tables"
        };
        let mut v = serde_json::json!({"name": name, "kind": kind, "url": "x://y"});
        v[key] = serde_json::json!(tables);
        serde_json::from_value(v).expect("source config")
    }

    fn catalog() -> Catalog {
        Catalog::new(&[
            source(
                "shop",
                "postgres",
                &["public.orders", r#""Sales"."Order Items""#],
            ),
            source("legacy", "mysql", &["shop.customers", "shop.order_*"]),
            source("docs", "mongodb", &["app.invoices", "crm.*"]),
        ])
    }

    #[test]
    fn sources_are_known_by_name() {
        let c = catalog();
        assert!(c.has_source("shop") && c.has_source("docs"));
        assert!(!c.has_source("Shop") && !c.has_source("nope"));
        assert_eq!(c.source_names(), ["shop", "legacy", "docs"]);
    }

    #[test]
    fn globs_are_checked_against_the_types_the_sources_emit() {
        let c = catalog();
        let shop = ["shop".to_owned()];
        let legacy = ["legacy".to_owned()];
        let invoices_only = Catalog::new(&[source("docs", "mongodb", &["app.invoices"])]);
        let cases: [(&Catalog, &str, Option<&[String]>, bool); 19] = [
            (&c, "order_lines.insert", Some(&legacy), true),
            (&c, "order_*.delete", Some(&legacy), true),
            (&c, "orders.insert", Some(&legacy), false),
            (&c, "orders.*", None, true),
            (&c, "orders.insert", Some(&shop), true),
            (&c, "orders.truncate", Some(&shop), true),
            (&c, "Order Items.delete", Some(&shop), true),
            (&c, "public.orders.*", Some(&shop), false),
            (&c, "order.*", Some(&shop), false),
            (&c, "orders.upsert", Some(&shop), false),
            (&c, "*.delete", Some(&shop), true),
            (&c, "customers.*", Some(&shop), false),
            (&c, "customers.*", Some(&legacy), true),
            (&c, "customers.truncate", Some(&legacy), false),
            // crm.* may emit any collection
            (&c, "anything.insert", None, true),
            (&c, "anything.truncate", None, false),
            (&invoices_only, "invoices.?pdate", None, true),
            (&invoices_only, "anything.insert", None, false),
            (&c, "orders.*", Some(&["nope".to_owned()]), false),
        ];
        for (catalog, glob, only, want) in cases {
            assert_eq!(
                catalog.glob_can_match(glob, only),
                want,
                "{glob} in {only:?}"
            );
        }
        assert!(!Catalog::default().glob_can_match("*", None), "no sources");
    }
}
