//! Which namespaces a source watches (`collections = ["app.orders", "crm.*"]`), the
//! narrowest change stream that covers them, and the `$match` stage that keeps the
//! server from sending the rest.
//!
//! The narrowest stream needs the fewest privileges: one collection → a collection
//! stream; one database → a database stream; several databases → a cluster stream.

use ::mongodb::bson::{doc, Bson, Document};
use hookrelay_core::{filter::glob_matches, scope::FieldPattern};

/// One `collections` entry: a database and a collection, or every collection in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Pattern {
    pub db: String,
    /// `None` for `db.*`.
    pub coll: Option<String>,
    /// `coll` is a glob (`order_*`, matched as `tables` globs are).
    pub glob: bool,
}

impl Pattern {
    /// Whether the pattern takes collection `coll` of its database.
    pub fn takes(&self, coll: &str) -> bool {
        match &self.coll {
            None => true,
            Some(c) if self.glob => glob_matches(c, coll),
            Some(c) => c == coll,
        }
    }
}

/// The change stream to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Target {
    Collection { db: String, coll: String },
    Database(String),
    Cluster,
}

#[derive(Debug, Clone)]
pub(super) struct Scope {
    pub patterns: Vec<Pattern>,
    /// `exclude_fields`: left out of every event.
    pub exclude: Vec<FieldPattern>,
}

impl Scope {
    /// Parses `db.collection` / `db.*` (database names hold no dot; collection names
    /// may).
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        let mut patterns = Vec::with_capacity(entries.len());
        for e in entries {
            let (db, coll) = e
                .split_once('.')
                .filter(|(d, c)| !d.is_empty() && !c.is_empty())
                .ok_or_else(|| format!("{e:?} is not of the form \"db.collection\" or \"db.*\""))?;
            patterns.push(Pattern {
                db: db.to_owned(),
                coll: (coll != "*").then(|| coll.to_owned()),
                glob: coll != "*" && coll.contains(['*', '?']),
            });
        }
        if patterns.is_empty() {
            return Err("no collections listed".into());
        }
        Ok(Self {
            patterns,
            exclude: Vec::new(),
        })
    }

    /// With `exclude_fields` (`db.collection.path.to.field`, db and collection may be
    /// globs).
    pub fn excluding(mut self, fields: &[String]) -> Result<Self, String> {
        self.exclude = fields
            .iter()
            .map(|f| {
                FieldPattern::parse(f)
                    .ok_or_else(|| format!("exclude_fields entry {f:?} is not db.collection.field"))
            })
            .collect::<Result<_, _>>()?;
        Ok(self)
    }

    /// The field paths excluded from `db.coll`'s documents.
    pub fn excluded_paths(&self, db: &str, coll: &str) -> Vec<&[String]> {
        self.exclude
            .iter()
            .filter(|f| f.collection.matches(db, coll))
            .map(|f| f.path.as_slice())
            .collect()
    }

    pub fn target(&self) -> Target {
        let first = &self.patterns[0];
        if self.patterns.iter().any(|p| p.db != first.db) {
            return Target::Cluster;
        }
        match (&first.coll, self.patterns.len()) {
            (Some(coll), 1) if !first.glob => Target::Collection {
                db: first.db.clone(),
                coll: coll.clone(),
            },
            _ => Target::Database(first.db.clone()),
        }
    }

    /// Whether changes to `db.coll` become events.
    pub fn watches(&self, db: &str, coll: &str) -> bool {
        self.patterns.iter().any(|p| p.db == db && p.takes(coll))
    }

    pub fn watches_db(&self, db: &str) -> bool {
        self.patterns.iter().any(|p| p.db == db)
    }

    /// `[{$match: {$or: [...]}}]`: the watched namespaces, plus the events without a
    /// collection that still concern them (`invalidate`, `dropDatabase`).
    pub fn pipeline(&self) -> Vec<Document> {
        let mut or: Vec<Bson> = Vec::new();
        let mut dbs: Vec<&str> = Vec::new();
        for p in &self.patterns {
            if !dbs.contains(&p.db.as_str()) {
                dbs.push(&p.db);
            }
        }
        for db in dbs {
            let of_db: Vec<&Pattern> = self.patterns.iter().filter(|p| p.db == db).collect();
            // A glob takes the whole database from the server; the reader keeps the
            // collections it matches (`watches`).
            if of_db.iter().any(|p| p.coll.is_none() || p.glob) {
                or.push(Bson::Document(doc! { "ns.db": db }));
            } else {
                let colls: Vec<Bson> = of_db
                    .iter()
                    .filter_map(|p| p.coll.clone().map(Bson::String))
                    .collect();
                or.push(Bson::Document(
                    doc! { "ns.db": db, "ns.coll": { "$in": colls } },
                ));
            }
        }
        or.push(Bson::Document(
            doc! { "operationType": { "$in": ["invalidate", "dropDatabase"] } },
        ));
        vec![doc! { "$match": { "$or": or } }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(e: &[&str]) -> Scope {
        Scope::parse(&e.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn narrowest_stream() {
        assert_eq!(
            scope(&["app.orders"]).target(),
            Target::Collection {
                db: "app".into(),
                coll: "orders".into()
            }
        );
        assert_eq!(
            scope(&["app.orders", "app.users"]).target(),
            Target::Database("app".into())
        );
        assert_eq!(scope(&["app.*"]).target(), Target::Database("app".into()));
        assert_eq!(scope(&["app.orders", "crm.*"]).target(), Target::Cluster);
    }

    #[test]
    fn patterns() {
        let s = scope(&["app.orders", "crm.*", "app.a.b"]);
        assert!(s.watches("app", "orders") && s.watches("crm", "x") && s.watches("app", "a.b"));
        assert!(!s.watches("app", "users") && !s.watches("other", "orders"));
        let g = scope(&["app.order_*"]);
        assert_eq!(g.target(), Target::Database("app".into()));
        assert!(g.watches("app", "order_lines") && !g.watches("app", "orders"));
        assert_eq!(
            g.pipeline(),
            vec![doc! { "$match": { "$or": [
                { "ns.db": "app" },
                { "operationType": { "$in": ["invalidate", "dropDatabase"] } },
            ] } }]
        );
        for bad in ["orders", ".x", "app.", ""] {
            assert!(Scope::parse(&[bad.to_string()]).is_err(), "{bad}");
        }
        assert_eq!(
            s.pipeline(),
            vec![doc! { "$match": { "$or": [
                { "ns.db": "app", "ns.coll": { "$in": ["orders", "a.b"] } },
                { "ns.db": "crm" },
                { "operationType": { "$in": ["invalidate", "dropDatabase"] } },
            ] } }]
        );
    }
}
