//! `hookrelay check` for a MongoDB source: the server can run change streams, the
//! user may open this one, and which collections keep pre- and post-images: where
//! each update's `before` and `after` will come from (see `images`).

use std::time::Duration;

use ::mongodb::{
    bson::{doc, Bson, Document},
    options::ClientOptions,
    Client,
};
use hookrelay_core::config::{PostImages, SourceConfig};

use super::{
    images::has_images,
    scope::{Scope, Target},
};
use crate::SourceError;

/// The actions a change stream needs on what it watches.
const ACTIONS: [&str; 2] = ["changeStream", "find"];

pub(super) async fn check(cfg: &SourceConfig, scope: &Scope) -> Result<Vec<String>, SourceError> {
    let mut opts = ClientOptions::parse(&cfg.url).await?;
    opts.server_selection_timeout = Some(Duration::from_secs(5));
    opts.app_name = Some(format!("hookrelay-check:{}", cfg.name));
    // Ask the first host itself what it is: with `replicaSet=` in the url a standalone
    // would otherwise only show up as a server-selection timeout.
    let srv = cfg.url.starts_with("mongodb+srv://");
    if !srv && opts.hosts.len() == 1 {
        opts.direct_connection = Some(true);
        opts.repl_set_name = None;
    }
    let client = Client::with_options(opts)?;
    let result = inspect(&client, scope, cfg.post_images).await;
    client.shutdown().await;
    let (problems, notes) = result?;
    if problems.is_empty() {
        Ok(notes)
    } else {
        Err(SourceError::Setup(problems.join("; ")))
    }
}

async fn inspect(
    client: &Client,
    scope: &Scope,
    policy: PostImages,
) -> Result<(Vec<String>, Vec<String>), SourceError> {
    let admin = client.database("admin");
    let hello = admin.run_command(doc! { "hello": 1 }).await?;
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    let replica_set = hello.get_str("setName").is_ok();
    let mongos = hello.get_str("msg") == Ok("isdbgrid");
    if !replica_set && !mongos {
        problems.push("the server is a standalone: change streams need a replica set or a sharded cluster (start mongod with --replSet and run rs.initiate())".to_owned());
        return Ok((problems, notes));
    }

    let status = admin
        .run_command(doc! { "connectionStatus": 1, "showPrivileges": true })
        .await?;
    let auth = status.get_document("authInfo").ok();
    let users = auth
        .and_then(|a| a.get_array("authenticatedUsers").ok())
        .map_or(0, |u| u.len());
    if users > 0 {
        let privileges: Vec<&Document> = auth
            .and_then(|a| a.get_array("authenticatedUserPrivileges").ok())
            .map(|p| p.iter().filter_map(Bson::as_document).collect())
            .unwrap_or_default();
        let (db, coll, what) = match scope.target() {
            Target::Collection { db, coll } => (db.clone(), coll.clone(), format!("{db}.{coll}")),
            Target::Database(db) => (db.clone(), String::new(), format!("database {db}")),
            Target::Cluster => (
                String::new(),
                String::new(),
                "every database (the collections span several)".into(),
            ),
        };
        let missing: Vec<&str> = ACTIONS
            .into_iter()
            .filter(|action| !privileges.iter().any(|p| grants(p, action, &db, &coll)))
            .collect();
        if !missing.is_empty() {
            problems.push(format!(
                "the user lacks the {} privilege(s) on {what}",
                missing.join(" and ")
            ));
        }
    }

    let mut dbs: Vec<&str> = Vec::new();
    for p in &scope.patterns {
        if !dbs.contains(&p.db.as_str()) {
            dbs.push(&p.db);
        }
    }
    for db in dbs {
        let listed = client
            .database(db)
            .run_command(doc! { "listCollections": 1, "filter": { "type": "collection" } })
            .await;
        let batch = match listed {
            Ok(reply) => reply
                .get_document("cursor")
                .and_then(|c| c.get_array("firstBatch"))
                .cloned()
                .unwrap_or_default(),
            Err(e) => {
                notes.push(format!(
                    "cannot list the collections of {db} to see which keep pre-images: {e}"
                ));
                continue;
            }
        };
        let colls: Vec<(&str, bool)> = batch
            .iter()
            .filter_map(Bson::as_document)
            .filter_map(|c| Some((c.get_str("name").ok()?, has_images(c))))
            .collect();
        let mut found: Vec<(&str, bool)> = Vec::new();
        for p in scope.patterns.iter().filter(|p| p.db == db) {
            match &p.coll {
                Some(name) if !p.glob => match colls.iter().find(|(c, _)| c == name) {
                    None => notes.push(format!(
                        "{db}.{name} does not exist (yet); its changes are captured once it does"
                    )),
                    Some(c) => found.push(*c),
                },
                _ => found.extend(
                    colls
                        .iter()
                        .filter(|(c, _)| !c.starts_with("system.") && p.takes(c)),
                ),
            }
        }
        for (name, on) in found {
            match (on, policy) {
                (true, _) => notes.push(images_on(db, name)),
                (false, PostImages::WhenAvailable) => notes.push(images_off(db, name)),
                (false, PostImages::Required) => problems.push(format!(
                    "post_images = \"required\" but {db}.{name} keeps no post-images (collMod with changeStreamPreAndPostImages: {{ enabled: true }} turns them on)"
                )),
            }
        }
    }
    Ok((problems, notes))
}

fn images_off(db: &str, coll: &str) -> String {
    format!("pre-images are off for {db}.{coll}: its events will have \"before\": null, and an update's \"after\" is looked up when the change is read, so it may already hold later changes (collMod with changeStreamPreAndPostImages: {{ enabled: true }} turns images on)")
}

fn images_on(db: &str, coll: &str) -> String {
    format!("{db}.{coll} keeps pre- and post-images: an update's \"before\" and \"after\" are the document just before and just after that change")
}

/// Whether `privilege` allows `action` on `db.coll` (`""` = any, as in MongoDB's
/// resource documents).
fn grants(privilege: &Document, action: &str, db: &str, coll: &str) -> bool {
    let allows = privilege
        .get_array("actions")
        .is_ok_and(|a| a.iter().any(|x| x.as_str() == Some(action)));
    let Ok(res) = privilege.get_document("resource") else {
        return false;
    };
    if res.get_bool("anyResource") == Ok(true) {
        return allows;
    }
    let (Ok(rdb), Ok(rcoll)) = (res.get_str("db"), res.get_str("collection")) else {
        return false;
    };
    allows && (rdb.is_empty() || rdb == db) && (rcoll.is_empty() || rcoll == coll)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privilege_resources() {
        let p = |db: &str, coll: &str, actions: &[&str]| {
            doc! { "resource": { "db": db, "collection": coll }, "actions": actions }
        };
        assert!(grants(
            &p("app", "orders", &["find"]),
            "find",
            "app",
            "orders"
        ));
        assert!(grants(&p("app", "", &["find"]), "find", "app", "orders"));
        assert!(grants(
            &p("", "", &["changeStream"]),
            "changeStream",
            "",
            ""
        ));
        assert!(!grants(
            &p("app", "orders", &["find"]),
            "changeStream",
            "app",
            "orders"
        ));
        assert!(
            !grants(&p("app", "orders", &["find"]), "find", "app", ""),
            "a collection grant is not a database grant"
        );
        assert!(!grants(&p("crm", "", &["find"]), "find", "app", "orders"));
        let any = doc! { "resource": { "anyResource": true }, "actions": ["find"] };
        assert!(grants(&any, "find", "", ""));
    }
}

/// The driver's TLS settings in words, for `check`.
pub(super) fn describe_tls(tls: Option<&::mongodb::options::Tls>) -> String {
    use ::mongodb::options::Tls;
    match tls {
        None | Some(Tls::Disabled) => "not encrypted (no tls=true in the url)".into(),
        Some(Tls::Enabled(o)) => {
            let roots = o
                .ca_file_path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "the public CAs bundled with the driver".into());
            let verified = if o.allow_invalid_certificates == Some(true) {
                "certificate not verified (tlsAllowInvalidCertificates)".to_owned()
            } else {
                format!("certificate and host name verified against {roots}")
            };
            let client = if o.cert_key_file_path.is_some() {
                ", client certificate"
            } else {
                ""
            };
            format!("TLS ({verified}{client})")
        }
    }
}

#[cfg(test)]
mod tls_tests {
    use ::mongodb::options::ClientOptions;

    /// The url's TLS options reach the driver as written.
    #[tokio::test]
    async fn url_tls_options_reach_the_driver() {
        let cases = [
            ("mongodb://h:27017/?replicaSet=rs0", "not encrypted"),
            (
                "mongodb://h:27017/?tls=true&tlsCAFile=%2Fetc%2Fca.pem",
                "TLS (certificate and host name verified against /etc/ca.pem)",
            ),
            (
                "mongodb://h:27017/?tls=true&tlsAllowInvalidCertificates=true",
                "certificate not verified",
            ),
            (
                "mongodb://h:27017/?tls=true&tlsCertificateKeyFile=/me.pem",
                "client certificate",
            ),
        ];
        for (url, want) in cases {
            let opts = ClientOptions::parse(url).await.expect(url);
            let got = super::describe_tls(opts.tls.as_ref());
            assert!(got.contains(want), "{url}: {got}");
        }
    }
}
