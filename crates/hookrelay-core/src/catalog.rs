//! The event types the configured sources can emit, so the admin API can refuse a
//! subscription filter that would never match anything (a typo in a source name or a
//! glob is otherwise a subscription that silently gets nothing).
//!
//! A type is `<table>.<op>` (DESIGN §1.3): the table without its schema (MongoDB:
//! the collection without its database), `op` one of `insert`, `update`, `delete`,
//! and `truncate` for PostgreSQL. A MongoDB source watching `db.*` may emit any
//! collection name, so its types are the globs `?*.<op>`.

use crate::{
    config::{split_qualified, SourceConfig, SourceKind},
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
    /// The watched tables as configured (`schema.table`), for backfills.
    qualified: Vec<String>,
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
                let qualified = match s.kind {
                    SourceKind::Postgres | SourceKind::Mysql => s.tables.clone(),
                    SourceKind::Mongodb => s.collections.clone(),
                };
                CatalogSource {
                    name: s.name.clone(),
                    kind: s.kind,
                    tables,
                    qualified,
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

/// What a backfill reads: one source's tables, as configured (`schema.table`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackfillPlan {
    pub source: String,
    pub tables: Vec<String>,
}

/// Why a backfill request cannot be planned: the request field at fault and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackfillRefusal {
    pub field: String,
    pub reason: String,
}

/// What a subscription's own filters let through (absent: everything).
#[derive(Debug, Clone, Copy, Default)]
pub struct SubscriptionFilters<'a> {
    pub sources: Option<&'a [String]>,
    pub event_types: Option<&'a [String]>,
}

impl SubscriptionFilters<'_> {
    fn admits(&self, source: &str, table: &str) -> bool {
        self.sources.is_none_or(|s| s.iter().any(|n| n == source))
            && self.event_types.is_none_or(|globs| {
                let ty = format!("{table}.{}", Op::Read.as_str());
                globs.iter().any(|g| glob_matches(g, &ty))
            })
    }
}

/// Source kinds whose backfill is implemented.
fn backfills(kind: SourceKind) -> bool {
    matches!(
        kind,
        SourceKind::Postgres | SourceKind::Mysql | SourceKind::Mongodb
    )
}

impl Catalog {
    /// Which source and tables a backfill for a subscription reads (DESIGN §1.8):
    /// the `tables` asked for, or every watched table whose `<table>.read` events the
    /// subscription's filters can match; one source, named or the only one that fits.
    pub fn backfill_plan(
        &self,
        source: Option<&str>,
        tables: Option<&[String]>,
        filters: SubscriptionFilters<'_>,
    ) -> Result<BackfillPlan, BackfillRefusal> {
        let refuse = |field: &str, reason: String| BackfillRefusal {
            field: field.to_owned(),
            reason,
        };
        let candidates: Vec<&CatalogSource> = match source {
            Some(name) => {
                let Some(s) = self.sources.iter().find(|s| s.name == name) else {
                    return Err(refuse(
                        "source",
                        format!(
                            "{name:?} is not a configured source (configured: {})",
                            self.source_names().join(", ")
                        ),
                    ));
                };
                vec![s]
            }
            None => self.sources.iter().collect(),
        };
        let plans: Vec<BackfillPlan> = match tables {
            Some([]) => return Err(refuse("tables", "is empty: name at least one table, or leave it out for every table the subscription matches".into())),
            Some(asked) => {
                let mut plans: Vec<BackfillPlan> = Vec::new();
                for (i, t) in asked.iter().enumerate() {
                    let wanted = split_qualified(t);
                    // named exactly, or matched by one of the source's globs
                    let owner = candidates.iter().find(|s| {
                        s.qualified.iter().any(|q| {
                            q == t
                                || wanted.as_ref().is_some_and(|(schema, table)| {
                                    TablePattern::parse(q).is_some_and(|p| p.matches(schema, table))
                                })
                        })
                    });
                    let Some(owner) = owner else {
                        return Err(refuse(
                            &format!("tables[{i}]"),
                            format!("{t:?} is not a watched table{}", match source {
                                Some(s) => format!(" of source {s}"),
                                None => String::new(),
                            }),
                        ));
                    };
                    let name = wanted.map(|(_, table)| table).unwrap_or_default();
                    if !filters.admits(&owner.name, &name) {
                        return Err(refuse(
                            &format!("tables[{i}]"),
                            format!("the subscription's sources and event_types do not match {name}.read events"),
                        ));
                    }
                    match plans.iter_mut().find(|p| p.source == owner.name) {
                        Some(p) if !p.tables.contains(t) => p.tables.push(t.clone()),
                        Some(_) => {}
                        None => plans.push(BackfillPlan {
                            source: owner.name.clone(),
                            tables: vec![t.clone()],
                        }),
                    }
                }
                plans
            }
            None => candidates
                .iter()
                .map(|s| BackfillPlan {
                    source: s.name.clone(),
                    tables: s
                        .qualified
                        .iter()
                        // the tables named exactly; a glob's tables are read when named
                        .filter(|q| {
                            TablePattern::parse(q).is_some_and(|p| {
                                p.exact()
                                    .is_some_and(|(_, table)| filters.admits(&s.name, table))
                            })
                        })
                        .cloned()
                        .collect(),
                })
                .filter(|p| !p.tables.is_empty())
                .collect(),
        };
        let plan = match <[BackfillPlan; 1]>::try_from(plans) {
            Ok([plan]) => plan,
            Err(plans) if plans.is_empty() => {
                // Without `tables`, only tables named exactly are read: say how to
                // read those a pattern matches.
                let patterns: Vec<&str> = candidates
                    .iter()
                    .flat_map(|s| s.qualified.iter())
                    .filter(|q| TablePattern::parse(q).is_some_and(|p| p.exact().is_none()))
                    .map(String::as_str)
                    .collect();
                let hint = if tables.is_none() && !patterns.is_empty() {
                    format!(
                        "; tables a pattern matches ({}) are backfilled when named: \
                         {{\"tables\": [\"schema.table\", …]}}",
                        patterns.join(", ")
                    )
                } else {
                    String::new()
                };
                return Err(refuse(
                    "tables",
                    format!(
                        "the subscription's sources and event_types match no watched table{hint}"
                    ),
                ));
            }
            Err(plans) => {
                let names: Vec<&str> = plans.iter().map(|p| p.source.as_str()).collect();
                return Err(refuse(
                    "source",
                    format!(
                        "the tables span several sources ({}); a backfill reads one: name it",
                        names.join(", ")
                    ),
                ));
            }
        };
        let kind = self
            .sources
            .iter()
            .find(|s| s.name == plan.source)
            .map(|s| s.kind);
        match kind {
            Some(kind) if backfills(kind) => Ok(plan),
            Some(kind) => Err(refuse(
                "source",
                format!(
                    "source {} is a {} source; backfill supports postgres, mysql and mongodb sources only so far",
                    plan.source,
                    kind.as_str()
                ),
            )),
            None => Err(refuse(
                "source",
                format!("{} is not configured", plan.source),
            )),
        }
    }
}

/// The operations a source of `kind` reports.
fn ops(kind: SourceKind) -> &'static [Op] {
    match kind {
        SourceKind::Postgres => &[Op::Insert, Op::Update, Op::Delete, Op::Truncate, Op::Read],
        SourceKind::Mysql | SourceKind::Mongodb => &[Op::Insert, Op::Update, Op::Delete, Op::Read],
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

    /// (catalog, source asked, tables asked, the subscription's filters, the plan or
    /// the refused field)
    type Case<'a> = (
        &'a Catalog,
        Option<&'a str>,
        Option<Vec<String>>,
        SubscriptionFilters<'a>,
        Result<BackfillPlan, String>,
    );

    #[test]
    fn a_backfill_of_pattern_tables_says_to_name_them() {
        let c = Catalog::new(&[source("shop", "postgres", &["public.*"])]);
        let refused = c
            .backfill_plan(None, None, SubscriptionFilters::default())
            .unwrap_err();
        assert_eq!(refused.field, "tables");
        assert!(
            refused
                .reason
                .contains("(public.*) are backfilled when named"),
            "{}",
            refused.reason
        );
        let named = ["public.orders".to_owned()];
        let plan = c
            .backfill_plan(None, Some(&named), SubscriptionFilters::default())
            .unwrap();
        assert_eq!(plan.tables, named);
    }

    #[test]
    fn backfills_are_planned_against_the_sources_and_the_subscription() {
        let c = Catalog::new(&[
            source("shop", "postgres", &["public.orders", "public.customers"]),
            source("legacy", "mysql", &["shop.accounts"]),
        ]);
        let pg_only = Catalog::new(&[source(
            "shop",
            "postgres",
            &["public.orders", "public.customers"],
        )]);
        let all = SubscriptionFilters::default();
        let orders_only = ["orders.*".to_owned()];
        let inserts = ["*.insert".to_owned()];
        let shop = ["shop".to_owned()];
        let ok = |source: &str, tables: &[&str]| {
            Ok(BackfillPlan {
                source: source.to_owned(),
                tables: tables.iter().map(|t| t.to_string()).collect(),
            })
        };
        let no = |field: &str| field.to_owned();
        let t = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let docs = Catalog::new(&[source("docs", "mongodb", &["app.invoices", "crm.*"])]);
        let cases: Vec<Case> = vec![
            (
                &pg_only,
                None,
                None,
                all,
                ok("shop", &["public.orders", "public.customers"]),
            ),
            // MongoDB: collections named exactly, or one a glob matches when named
            (&docs, None, None, all, ok("docs", &["app.invoices"])),
            (
                &docs,
                Some("docs"),
                Some(t(&["crm.leads"])),
                all,
                ok("docs", &["crm.leads"]),
            ),
            (
                &docs,
                None,
                Some(t(&["app.nope"])),
                all,
                Err(no("tables[0]")),
            ),
            (
                &pg_only,
                None,
                None,
                SubscriptionFilters {
                    event_types: Some(&orders_only),
                    sources: None,
                },
                ok("shop", &["public.orders"]),
            ),
            (
                &pg_only,
                None,
                None,
                SubscriptionFilters {
                    event_types: Some(&inserts),
                    sources: None,
                },
                Err(no("tables")),
            ),
            (
                &pg_only,
                None,
                Some(t(&["public.customers"])),
                all,
                ok("shop", &["public.customers"]),
            ),
            (
                &pg_only,
                None,
                Some(t(&["public.nope"])),
                all,
                Err(no("tables[0]")),
            ),
            (
                &pg_only,
                None,
                Some(t(&["public.customers"])),
                SubscriptionFilters {
                    event_types: Some(&orders_only),
                    sources: None,
                },
                Err(no("tables[0]")),
            ),
            (&pg_only, None, Some(vec![]), all, Err(no("tables"))),
            (&pg_only, Some("nope"), None, all, Err(no("source"))),
            (&c, None, None, all, Err(no("source"))),
            (
                &c,
                None,
                None,
                SubscriptionFilters {
                    sources: Some(&shop),
                    event_types: None,
                },
                ok("shop", &["public.orders", "public.customers"]),
            ),
            (
                &c,
                Some("shop"),
                None,
                all,
                ok("shop", &["public.orders", "public.customers"]),
            ),
            (
                &c,
                Some("legacy"),
                None,
                all,
                ok("legacy", &["shop.accounts"]),
            ),
            (
                &c,
                None,
                Some(t(&["shop.accounts"])),
                all,
                ok("legacy", &["shop.accounts"]),
            ),
            (
                &c,
                None,
                Some(t(&["public.orders", "shop.accounts"])),
                all,
                Err(no("source")),
            ),
        ];
        for (catalog, src, tables, filters, want) in cases {
            let got = catalog
                .backfill_plan(src, tables.as_deref(), filters)
                .map_err(|r| r.field);
            assert_eq!(got, want, "{src:?} {tables:?}");
        }
    }
}
