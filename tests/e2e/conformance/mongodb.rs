//! Every scenario on a MongoDB source: the real `mongodb` driver and hookrelay's
//! reader against the wire-protocol test server (`mongo/server.rs`), which keeps
//! running in the test process while `hookrelay run` is killed. Then what only a
//! MongoDB backfill has to show: `_id`s of mixed BSON types, a write between a
//! chunk's read and its high watermark, and a watermark collection the source's user
//! may not write.

use std::{collections::BTreeMap, future::Future, pin::Pin, time::Duration};

use mongodb::{
    bson::{doc, oid::ObjectId, Bson, Document},
    Client, Collection,
};
use reqwest::Method;
use serde_json::{json, Value};

use super::{backfill::wait_backfill_ended, Fixture, Writer};
use crate::{harness::*, mongo::server::MongoServer};

/// A test server with `app.items`: `{_id: <long>, v: <long>, note, at}`, keeping
/// pre- and post-images, so each update's `after` is the state that change left
/// (every version arrives, as the change scenarios require).
pub struct Mongo {
    server: MongoServer,
}

impl Mongo {
    pub async fn new() -> Self {
        init_logs();
        Self {
            server: MongoServer::start().await,
        }
    }

    async fn items(&self) -> Collection<Document> {
        Client::with_uri_str(self.server.url())
            .await
            .expect("driver")
            .database("app")
            .collection("items")
    }
}

struct MongoWriter(Collection<Document>);

impl Writer for MongoWriter {
    fn insert(&mut self, id: i64) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            self.0
                .insert_one(doc! { "_id": id, "v": 0_i64, "note": "new" })
                .await
                .expect("insert");
        })
    }

    fn bump(&mut self, id: i64) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            self.0
                .update_one(doc! { "_id": id }, doc! { "$inc": { "v": 1_i64 } })
                .await
                .expect("update");
        })
    }

    fn delete(&mut self, id: i64) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            self.0.delete_one(doc! { "_id": id }).await.expect("delete");
        })
    }
}

impl Fixture for Mongo {
    fn source_toml(&self) -> String {
        format!(
            r#"
[[sources]]
name = "src"
kind = "mongodb"
url = "{}"
collections = ["app.items"]
poll_interval = "200ms"
batch_size = 500
"#,
            self.server.url()
        )
    }

    fn table(&self) -> &'static str {
        "app.items"
    }

    fn key_of(&self, event: &Value) -> i64 {
        event["key"]["_id"].as_i64().expect("integer _id")
    }

    fn rows_read_series(&self) -> String {
        r#"hookrelay_backfill_rows_read_total{source="src",kind="mongodb"}"#.to_owned()
    }

    async fn fill(&self, n: i64) {
        self.server.enable_pre_images("app", "items");
        if n == 0 {
            return;
        }
        let at = mongodb::bson::DateTime::from_millis(1_767_323_045_678);
        let docs: Vec<Document> = (1..=n)
            .map(|i| doc! { "_id": i, "v": 0_i64, "note": format!("row {i}"), "at": at })
            .collect();
        self.items()
            .await
            .insert_many(docs)
            .await
            .expect("fill items");
    }

    async fn writer(&self) -> Box<dyn Writer> {
        Box::new(MongoWriter(self.items().await))
    }

    async fn rows(&self) -> BTreeMap<i64, i64> {
        let mut cursor = self.items().await.find(doc! {}).await.expect("find");
        let mut rows = BTreeMap::new();
        while cursor.advance().await.expect("read items") {
            let d = cursor.deserialize_current().expect("document");
            rows.insert(d.get_i64("_id").expect("_id"), d.get_i64("v").expect("v"));
        }
        rows
    }
}

super::scenarios!(Mongo::new().await);

/// A relay on `server` watching `collections`, reading backfills `rate` documents a
/// second, and a subscription to every event at `rx`.
async fn relay_with_subscription(
    server: &MongoServer,
    store: &TestDb,
    collections: &str,
    rate: u32,
    rx: &TestReceiver,
) -> (hookrelay::Relay, Api, Value) {
    let mut cfg = test_config(
        &store.url(),
        &format!(
            r#"
[[sources]]
name = "src"
kind = "mongodb"
url = "{}"
collections = {collections}
poll_interval = "200ms"
"#,
            server.url()
        ),
    );
    cfg.backfill.max_rows_per_second = rate;
    let relay = start_relay(cfg).await;
    let api = Api::new(relay.api_addr);
    let sub = api.subscribe(&rx.url, json!({ "event_types": null })).await;
    (relay, api, sub)
}

async fn start_backfill(api: &Api, sub: &Value, body: Value) -> String {
    let (status, bf) = api
        .call(
            Method::POST,
            &format!("/v1/subscriptions/{}/backfill", sub["id"].as_str().unwrap()),
            Some(body),
        )
        .await;
    assert_eq!(status, 202, "{bf}");
    bf["id"].as_str().unwrap().to_owned()
}

/// `_id`s of every common BSON type in one collection, read three at a time: each
/// arrives once as a read event with its key mapped as changes map it, although a
/// query's `$gt` never crosses from one type to the next; the watermark documents,
/// in a database watched whole (`app.*`), never become events, and are removed once
/// their chunk is committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_reads_ids_of_every_type_in_order() {
    init_logs();
    let server = MongoServer::start().await;
    let oid = ObjectId::parse_str("64b7f0c2a1b2c3d4e5f60718").unwrap();
    let ids: Vec<(Bson, Value)> = vec![
        (Bson::Null, json!(null)),
        (Bson::Int32(-3), json!(-3)),
        (Bson::Int64(2), json!(2)),
        (Bson::Double(2.5), json!(2.5)),
        (
            Bson::Int64(9_007_199_254_740_993),
            json!("9007199254740993"),
        ),
        (Bson::String("a".into()), json!("a")),
        (Bson::String("b".into()), json!("b")),
        (
            Bson::Document(doc! { "tenant": "t1", "n": 1 }),
            json!({ "tenant": "t1", "n": 1 }),
        ),
        (
            Bson::Document(doc! { "tenant": "t1", "n": 2 }),
            json!({ "tenant": "t1", "n": 2 }),
        ),
        (Bson::ObjectId(oid), json!("64b7f0c2a1b2c3d4e5f60718")),
        (Bson::Boolean(false), json!(false)),
        (Bson::Boolean(true), json!(true)),
        (
            Bson::DateTime(mongodb::bson::DateTime::from_millis(1_767_323_045_678)),
            json!("2026-01-02T03:04:05.678Z"),
        ),
    ];
    let client = Client::with_uri_str(server.url()).await.expect("driver");
    let mixed: Collection<Document> = client.database("app").collection("mixed");
    // inserted out of order: the backfill reads them in `_id` order all the same
    for (i, (id, _)) in ids.iter().enumerate().rev() {
        mixed
            .insert_one(doc! { "_id": id.clone(), "n": i as i64 })
            .await
            .expect("insert");
    }
    let store = TestDb::new("store").await;
    let rx = TestReceiver::start().await;
    let (relay, api, sub) = relay_with_subscription(&server, &store, r#"["app.*"]"#, 3, &rx).await;
    let id = start_backfill(&api, &sub, json!({ "tables": ["app.mixed"] })).await;
    let ended = wait_backfill_ended(&api, &id, Duration::from_secs(60)).await;
    assert_eq!(ended["state"], "completed", "{ended}");
    assert_eq!(ended["rows"], ids.len() as i64, "{ended}");
    let reads = rx
        .wait_for("every read event", Duration::from_secs(30), |r| {
            r.len() >= ids.len()
        })
        .await;
    // (deliveries of different keys may arrive in any order)
    let mut keys: Vec<String> = reads
        .iter()
        .map(|r| r.json())
        .filter(|e| e["op"] == "read")
        .map(|e| e["key"]["_id"].to_string())
        .collect();
    let mut want: Vec<String> = ids.iter().map(|(_, json)| json.to_string()).collect();
    keys.sort();
    want.sort();
    assert_eq!(keys, want, "each document once, of every type");
    // the marks were written (and removed) in app, a watched database: none of them,
    // nor their removal, is an event
    let types: Vec<String> = rx
        .requests()
        .iter()
        .map(|r| r.json()["type"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        types.iter().all(|t| t == "mixed.read"),
        "only read events: {types:?}"
    );
    let marks = client
        .database("app")
        .collection::<Document>("hookrelay_watermarks");
    eventually(
        "the marks of committed chunks removed",
        Duration::from_secs(30),
        || async {
            let mut c = marks.find(doc! {}).await.expect("find marks");
            let mut left = 0;
            while c.advance().await.expect("marks") {
                left += 1;
            }
            (left == 0).then_some(())
        },
    )
    .await;
    relay.shutdown().await;
}

/// A user who may not write the watermark collection: the backfill fails, saying
/// what to grant, and changes keep flowing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_without_the_insert_privilege_fails_naming_it() {
    init_logs();
    let server = MongoServer::start().await;
    server.refuse_writes("app", "hookrelay_watermarks");
    let client = Client::with_uri_str(server.url()).await.expect("driver");
    let items: Collection<Document> = client.database("app").collection("items");
    items
        .insert_one(doc! { "_id": 1_i64, "v": 0_i64 })
        .await
        .expect("insert");
    let store = TestDb::new("store").await;
    let rx = TestReceiver::start().await;
    let (relay, api, sub) =
        relay_with_subscription(&server, &store, r#"["app.items"]"#, 0, &rx).await;
    let id = start_backfill(&api, &sub, json!({})).await;
    let ended = wait_backfill_ended(&api, &id, Duration::from_secs(60)).await;
    assert_eq!(ended["state"], "failed", "{ended}");
    let error = ended["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("app.hookrelay_watermarks") && error.contains("insert"),
        "{error}"
    );
    items
        .insert_one(doc! { "_id": 2_i64, "v": 0_i64 })
        .await
        .expect("insert");
    rx.wait_for(
        "the change after the failure",
        Duration::from_secs(30),
        |r| {
            r.iter()
                .any(|r| r.json()["op"] == "insert" && r.json()["key"]["_id"] == 2)
        },
    )
    .await;
    assert!(
        rx.requests().iter().all(|r| r.json()["op"] != "read"),
        "no read event"
    );
    relay.shutdown().await;
}

/// A writer that commits between the chunk's read and its high watermark (scripted
/// right after the find): the chunk holds the old states, the stream brings the
/// changes between the marks, and those keys are dropped from the chunk. The
/// subscriber ends with the update, not the older read, and the deleted document
/// is not resurrected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_drops_what_changed_between_its_watermarks() {
    let fx = Mongo::new().await;
    let server = &fx.server;
    let items = fx.items().await;
    let docs: Vec<Document> = (1..=10_i64)
        .map(|i| doc! { "_id": i, "v": 0_i64 })
        .collect();
    items.insert_many(docs).await.expect("fill");
    let store = TestDb::new("store").await;
    let rx = TestReceiver::start().await;
    let (relay, api, sub) =
        relay_with_subscription(server, &store, r#"["app.items"]"#, 0, &rx).await;
    server.after_next_find(
        "app",
        "items",
        vec![
            (
                "update",
                doc! { "q": { "_id": 3_i64 }, "u": { "$set": { "v": 1_i64 } } },
            ),
            ("delete", doc! { "q": { "_id": 5_i64 }, "limit": 1 }),
        ],
    );
    let id = start_backfill(&api, &sub, json!({})).await;
    let ended = wait_backfill_ended(&api, &id, Duration::from_secs(60)).await;
    assert_eq!(ended["state"], "completed", "{ended}");
    assert_eq!(ended["rows"], 8, "{ended}");
    let got = rx
        .wait_for(
            "8 reads, the update and the delete",
            Duration::from_secs(30),
            |r| r.len() >= 10,
        )
        .await;
    let (state, reads) = super::backfill::replay(&fx, &got);
    assert_eq!(reads, 8);
    let want: BTreeMap<i64, i64> = (1..=10)
        .filter(|k| *k != 5)
        .map(|k| (k, i64::from(k == 3)))
        .collect();
    assert_eq!(
        state, want,
        "the update wins, the deleted document stays deleted"
    );
    let read_keys: Vec<i64> = got
        .iter()
        .map(|r| r.json())
        .filter(|e| e["op"] == "read")
        .filter_map(|e| e["key"]["_id"].as_i64())
        .collect();
    assert!(
        !read_keys.contains(&3) && !read_keys.contains(&5),
        "{read_keys:?}"
    );
    relay.shutdown().await;
}
