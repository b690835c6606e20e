//! Which namespaces a source watches (`collections = ["app.orders", "crm.*"]`), the
//! narrowest change stream that covers them, and the `$match` stage that keeps the
//! server from sending the rest.
//!
//! The narrowest stream needs the fewest privileges: one collection → a collection
//! stream; one database → a database stream; several databases → a cluster stream.

use ::mongodb::bson::{doc, Bson, Document};
use hookrelay_core::{filter::glob_matches, scope::FieldPattern};

use super::backfill::WATERMARKS;

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

    /// Whether changes to `db.coll` become events. Never the backfill's watermark
    /// collection, whatever the patterns say (`app.*` included).
    pub fn watches(&self, db: &str, coll: &str) -> bool {
        coll != WATERMARKS && self.patterns.iter().any(|p| p.db == db && p.takes(coll))
    }

    /// The scope a stream needs while a backfill runs: the same, plus each watched
    /// database's watermark collection where no pattern takes the whole database
    /// already, so the watermarks come back through the stream (see `backfill`). A
    /// source watching one collection then opens a database stream.
    pub fn with_watermarks(&self) -> Scope {
        let mut wide = self.clone();
        for p in &self.patterns {
            let whole_db = self
                .patterns
                .iter()
                .any(|q| q.db == p.db && (q.coll.is_none() || q.glob));
            let listed = wide
                .patterns
                .iter()
                .any(|q| q.db == p.db && q.coll.as_deref() == Some(WATERMARKS));
            if !whole_db && !listed {
                wide.patterns.push(Pattern {
                    db: p.db.clone(),
                    coll: Some(WATERMARKS.to_owned()),
                    glob: false,
                });
            }
        }
        wide
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
        assert!(!scope(&["app.*"]).watches("app", "hookrelay_watermarks"));
        assert!(!scope(&["app.hook*"]).watches("app", "hookrelay_watermarks"));
        assert_eq!(
            s.pipeline(),
            vec![doc! { "$match": { "$or": [
                { "ns.db": "app", "ns.coll": { "$in": ["orders", "a.b"] } },
                { "ns.db": "crm" },
                { "operationType": { "$in": ["invalidate", "dropDatabase"] } },
            ] } }]
        );
    }

    #[test]
    fn a_backfill_widens_the_stream_to_the_watermark_collections() {
        let one = scope(&["app.orders"]).with_watermarks();
        assert_eq!(one.target(), Target::Database("app".into()));
        assert_eq!(
            one.pipeline(),
            vec![doc! { "$match": { "$or": [
                { "ns.db": "app", "ns.coll": { "$in": ["orders", "hookrelay_watermarks"] } },
                { "operationType": { "$in": ["invalidate", "dropDatabase"] } },
            ] } }]
        );
        assert!(!one.watches("app", "hookrelay_watermarks"));
        // a whole database already brings them; several databases, one each
        let whole = scope(&["app.*"]);
        assert_eq!(whole.with_watermarks().pipeline(), whole.pipeline());
        let two = scope(&["app.orders", "app.users", "crm.*"]).with_watermarks();
        assert_eq!(two.target(), Target::Cluster);
        assert_eq!(
            two.pipeline(),
            vec![doc! { "$match": { "$or": [
                { "ns.db": "app", "ns.coll": { "$in": ["orders", "users", "hookrelay_watermarks"] } },
                { "ns.db": "crm" },
                { "operationType": { "$in": ["invalidate", "dropDatabase"] } },
            ] } }]
        );
    }
}
