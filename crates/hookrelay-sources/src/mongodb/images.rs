//! Where an update's `after` comes from, per watched collection.
//!
//! A change stream's `fullDocument` mode is one for the whole stream, so it is chosen
//! when the stream opens, from the watched collections that exist then:
//!
//! ```text
//!  post_images = "required"          ──▶ fullDocument: "required"; every collection
//!                                        must keep post-images (a change without one
//!                                        fails the stream: no looked-up document)
//!  some collection keeps post-images ──▶ fullDocument: "whenAvailable": those send the
//!                                        post-image of each change; for the others
//!                                        the reader looks the document up by _id
//!  none does                         ──▶ fullDocument: "updateLookup" (the server
//!                                        looks it up; no round trip of ours)
//! ```
//!
//! A lookup gives the document as it is when the change is read, which may already
//! hold later changes (rapid updates of one document can all arrive with the last
//! one's state); a post-image is the document right after that change. Turning images
//! on for a collection (`collMod` with `changeStreamPreAndPostImages: {enabled: true}`)
//! takes effect when the stream next opens (a restart of the source).

use ::mongodb::{
    bson::{doc, Bson, Document},
    options::FullDocumentType,
    Client,
};
use hookrelay_core::config::PostImages;

use super::scope::Scope;
use crate::SourceError;

/// How one collection's updates get their `after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterMode {
    /// The post-image of the change (pre-images too, for `before`).
    PostImage,
    /// The document looked up when the change is read.
    Lookup,
}

impl AfterMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AfterMode::PostImage => "post-image",
            AfterMode::Lookup => "lookup",
        }
    }
}

/// A watched collection that exists, and whether it keeps pre- and post-images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watched {
    pub db: String,
    pub coll: String,
    pub images: bool,
}

/// The stream's mode and each collection's, from what [`watched`] found.
pub fn choose(
    policy: PostImages,
    colls: &[Watched],
) -> (FullDocumentType, Vec<(String, AfterMode)>) {
    let full = match policy {
        PostImages::Required => FullDocumentType::Required,
        PostImages::WhenAvailable if colls.iter().any(|c| c.images) => {
            FullDocumentType::WhenAvailable
        }
        PostImages::WhenAvailable => FullDocumentType::UpdateLookup,
    };
    let modes = colls
        .iter()
        .map(|c| {
            let mode = if c.images || policy == PostImages::Required {
                AfterMode::PostImage
            } else {
                AfterMode::Lookup
            };
            (format!("{}.{}", c.db, c.coll), mode)
        })
        .collect();
    (full, modes)
}

/// The watched collections that exist now, with their image setting
/// (`listCollections` per watched database; system collections left out).
pub async fn watched(client: &Client, scope: &Scope) -> Result<Vec<Watched>, SourceError> {
    let mut dbs: Vec<&str> = Vec::new();
    for p in &scope.patterns {
        if !dbs.contains(&p.db.as_str()) {
            dbs.push(&p.db);
        }
    }
    let mut out = Vec::new();
    for db in dbs {
        let reply = client
            .database(db)
            .run_command(doc! { "listCollections": 1, "filter": { "type": "collection" } })
            .await?;
        let batch = reply
            .get_document("cursor")
            .and_then(|c| c.get_array("firstBatch"))
            .cloned()
            .unwrap_or_default();
        for c in batch.iter().filter_map(Bson::as_document) {
            let Ok(name) = c.get_str("name") else {
                continue;
            };
            if name.starts_with("system.") || !scope.watches(db, name) {
                continue;
            }
            out.push(Watched {
                db: db.to_owned(),
                coll: name.to_owned(),
                images: has_images(c),
            });
        }
    }
    // In name order, whatever order the server lists them in: the notice that shows
    // them changes only when the modes do.
    out.sort_by(|a, b| (&a.db, &a.coll).cmp(&(&b.db, &b.coll)));
    Ok(out)
}

/// `changeStreamPreAndPostImages: {enabled: true}` in a `listCollections` entry.
pub fn has_images(coll: &Document) -> bool {
    coll.get_document("options")
        .and_then(|o| o.get_document("changeStreamPreAndPostImages"))
        .and_then(|p| p.get_bool("enabled"))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(coll: &str, images: bool) -> Watched {
        Watched {
            db: "app".into(),
            coll: coll.into(),
            images,
        }
    }

    #[test]
    fn the_stream_mode_follows_the_collections() {
        use AfterMode::*;
        let (full, modes) = choose(PostImages::WhenAvailable, &[w("a", false), w("b", false)]);
        assert!(matches!(full, FullDocumentType::UpdateLookup));
        assert_eq!(modes, [("app.a".into(), Lookup), ("app.b".into(), Lookup)]);
        let (full, modes) = choose(PostImages::WhenAvailable, &[w("a", true), w("b", false)]);
        assert!(matches!(full, FullDocumentType::WhenAvailable));
        assert_eq!(
            modes,
            [("app.a".into(), PostImage), ("app.b".into(), Lookup)]
        );
        let (full, modes) = choose(PostImages::Required, &[w("a", true)]);
        assert!(matches!(full, FullDocumentType::Required));
        assert_eq!(modes, [("app.a".into(), PostImage)]);
        let (full, modes) = choose(PostImages::WhenAvailable, &[]);
        assert!(matches!(full, FullDocumentType::UpdateLookup));
        assert!(modes.is_empty());
    }
}
