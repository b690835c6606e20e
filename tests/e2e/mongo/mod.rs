//! MongoDB sources end to end: the real `mongodb` driver and hookrelay's reader over
//! TCP against the wire-protocol server in `server.rs`, a real store, and webhooks at
//! a real HTTP receiver.

pub mod server;

use std::time::Duration;

use hookrelay::Relay;
use hookrelay_core::Config;
use mongodb::{
    bson::{doc, Binary, Bson, Decimal128, Document},
    Client, Collection,
};
use serde_json::{json, Value};

use crate::harness::*;
use server::MongoServer;

const WAIT: Duration = Duration::from_secs(60);

/// A store database, a MongoDB test server and a relay config watching `app.orders`.
struct MongoEnv {
    store: TestDb,
    server: MongoServer,
    /// Where the relay and the writers connect: the test server, or a real replica
    /// set for [`MongoEnv::real_or_test_server`].
    url: String,
}

/// Runs the tests that take it against a real replica set instead of the test server.
const REAL_URL_VAR: &str = "HOOKRELAY_TEST_MONGODB_URL";

impl MongoEnv {
    async fn new() -> Self {
        init_logs();
        let server = MongoServer::start().await;
        Self {
            store: TestDb::new("store").await,
            url: server.url(),
            server,
        }
    }

    /// The replica set named by `HOOKRELAY_TEST_MONGODB_URL` when set, else the test
    /// server; says which on stdout and returns it as a label.
    async fn real_or_test_server() -> (Self, &'static str) {
        let mut env = Self::new().await;
        match std::env::var(REAL_URL_VAR) {
            Ok(url) if !url.trim().is_empty() => {
                println!("{REAL_URL_VAR} is set: running against the real replica set there");
                env.url = url.trim().to_owned();
                (env, "a real replica set")
            }
            _ => {
                println!(
                    "{REAL_URL_VAR} is unset: running against the wire-protocol test server at {}",
                    env.server.addr
                );
                (env, "the wire-protocol test server")
            }
        }
    }

    fn config(&self, extra: &str) -> Config {
        let text = format!(
            r#"
[store]
url = "{store}"
pool_size = 4
[api]
listen = "127.0.0.1:0"
tokens = ["{TOKEN}"]
[dispatch]
workers = 8
timeout = "3s"
backoff = {{ initial = "50ms", max = "400ms", multiplier = 2.0 }}
allow_networks = ["127.0.0.0/8"]
poll_interval = "100ms"
[[sources]]
name = "docs"
kind = "mongodb"
url = "{url}"
collections = ["app.orders"]
poll_interval = "300ms"
{extra}
"#,
            store = self.store.url(),
            url = self.url,
        );
        crate::harness::with_test_master_key(Config::from_toml(&text).expect("test config"))
    }

    async fn orders(&self) -> Collection<Document> {
        let client = Client::with_uri_str(&self.url).await.expect("driver");
        client.database("app").collection("orders")
    }

    /// A relay on this env, a receiver, and a subscription to `orders.*` there.
    async fn relay(&self, extra: &str, rx: &TestReceiver) -> Relay {
        let relay = start_relay(self.config(extra)).await;
        let api = Api::new(relay.api_addr);
        let (status, subs) = api
            .call(reqwest::Method::GET, "/v1/subscriptions", None)
            .await;
        assert_eq!(status, 200);
        let listed = subs["data"]
            .as_array()
            .or(subs.as_array())
            .map_or(0, Vec::len);
        if listed == 0 {
            api.subscribe(&rx.url, json!({})).await;
        }
        relay
    }

    /// Turns pre- and post-images on for `app.<coll>` through the driver, creating it
    /// if need be (works on the test server and a real replica set alike).
    async fn keep_images(&self, coll: &str) {
        let client = Client::with_uri_str(&self.url).await.expect("driver");
        let app = client.database("app");
        let on = doc! { "enabled": true };
        let created = app
            .run_command(doc! { "create": coll, "changeStreamPreAndPostImages": on.clone() })
            .await;
        if created.is_err() {
            app.run_command(doc! { "collMod": coll, "changeStreamPreAndPostImages": on })
                .await
                .expect("collMod");
        }
    }

    async fn checkpoint(&self) -> Option<String> {
        let db = self.store.connect().await;
        db.query_opt(
            "select position from hookrelay.checkpoints where source = 'docs'",
            &[],
        )
        .await
        .expect("checkpoint")
        .map(|r| r.get(0))
    }
}

/// Event bodies in change-stream order: per-key ordering lets different documents'
/// webhooks arrive in any order, and the test server's tokens sort as its oplog does.
fn bodies(got: &[Received]) -> Vec<Value> {
    let mut b: Vec<Value> = got.iter().map(Received::json).collect();
    b.sort_by_key(|e| {
        e["source"]["position"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    });
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_update_replace_delete_and_a_transaction_arrive_as_events() {
    let env = MongoEnv::new().await;
    env.server.enable_pre_images("app", "orders");
    let rx = TestReceiver::start().await;
    let relay = env.relay("", &rx).await;
    let orders = env.orders().await;
    let total: Decimal128 = "19.99".parse().unwrap();
    orders
        .insert_one(doc! { "_id": 1, "status": "new", "total": total })
        .await
        .unwrap();
    orders
        .update_one(doc! { "_id": 1 }, doc! { "$set": { "status": "paid" } })
        .await
        .unwrap();
    orders
        .replace_one(doc! { "_id": 1 }, doc! { "status": "shipped" })
        .await
        .unwrap();
    orders.delete_one(doc! { "_id": 1 }).await.unwrap();
    // Not watched: never an event.
    orders
        .client()
        .database("app")
        .collection::<Document>("users")
        .insert_one(doc! { "_id": 9 })
        .await
        .unwrap();
    let client = orders.client().clone();
    let mut session = client.start_session().await.unwrap();
    session.start_transaction().await.unwrap();
    orders
        .insert_one(doc! { "_id": 2, "status": "new" })
        .session(&mut session)
        .await
        .unwrap();
    orders
        .insert_one(doc! { "_id": 3, "status": "new" })
        .session(&mut session)
        .await
        .unwrap();
    session.commit_transaction().await.unwrap();

    let got = bodies(&rx.wait_delivered(6, WAIT).await);
    let ops: Vec<(&str, &str)> = got
        .iter()
        .map(|b| (b["type"].as_str().unwrap(), b["op"].as_str().unwrap()))
        .collect();
    assert_eq!(
        ops,
        [
            ("orders.insert", "insert"),
            ("orders.update", "update"),
            ("orders.update", "update"),
            ("orders.delete", "delete"),
            ("orders.insert", "insert"),
            ("orders.insert", "insert"),
        ]
    );
    let (ins, upd, rep, del) = (&got[0], &got[1], &got[2], &got[3]);
    assert_eq!(ins["key"], json!({ "_id": 1 }));
    assert_eq!(ins["before"], Value::Null);
    assert_eq!(
        ins["after"],
        json!({ "_id": 1, "status": "new", "total": "19.99" })
    );
    assert_eq!(ins["source"]["kind"], "mongodb");
    assert_eq!(ins["source"]["schema"], "app");
    assert_eq!(ins["source"]["database"], "app");
    assert_eq!(ins["source"]["table"], "orders");
    assert_eq!(
        ins["source"]["position"].as_str().unwrap(),
        MongoServer::token_of_json(1),
        "position is the resume token"
    );
    assert_eq!(upd["before"]["status"], "new", "pre-image");
    assert_eq!(upd["after"]["status"], "paid", "post-image");
    assert_eq!(rep["before"]["status"], "paid");
    assert_eq!(
        rep["after"],
        json!({ "_id": 1, "status": "shipped" }),
        "replace: the whole document"
    );
    assert_eq!(del["before"]["status"], "shipped");
    assert_eq!(del["after"], Value::Null);
    assert_eq!(del["key"], json!({ "_id": 1 }));
    // Single writes are their own transaction, named by cluster time.
    let single: Vec<&Value> = got[..4].iter().map(|b| &b["txn"]).collect();
    for t in &single {
        assert_eq!(t["seq"], 0);
    }
    let distinct: std::collections::HashSet<_> =
        single.iter().map(|t| t["id"].to_string()).collect();
    assert_eq!(distinct.len(), 4, "{single:?}");
    // The transaction's two inserts: one lsid:txnNumber id, seq 0 and 1.
    let (t2, t3) = (&got[4]["txn"], &got[5]["txn"]);
    assert_eq!(t2["id"], t3["id"]);
    assert!(t2["id"].as_str().unwrap().contains(':'), "{t2}");
    assert_eq!((t2["seq"].as_u64(), t3["seq"].as_u64()), (Some(0), Some(1)));
    // Nothing from app.users, even later.
    assert!(rx
        .delivered()
        .iter()
        .all(|r| r.json()["source"]["table"] == "orders"));
    // The reader asked for what the contract needs.
    // (app.orders keeps post-images: each update's `after` is that change's.)
    let stage = &env.server.change_stream_stages()[0];
    assert_eq!(stage.get_str("fullDocument"), Ok("whenAvailable"));
    assert_eq!(
        stage.get_str("fullDocumentBeforeChange"),
        Ok("whenAvailable")
    );
    relay.shutdown().await;
}

/// The basic pipeline, and the one test that runs against a real replica set when
/// `HOOKRELAY_TEST_MONGODB_URL` is set (else, and saying so, the test server). Only
/// what any MongoDB 6.0+ replica set gives: fresh `_id`s so earlier runs' documents
/// do not matter, and no pre-image assertions (they depend on the collection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_update_delete_arrive_from_the_test_server_or_a_real_replica_set() {
    let (env, target) = MongoEnv::real_or_test_server().await;
    // Post-images on, so the update's `after` is that change's even though the
    // delete follows at once (a lookup would find nothing).
    env.keep_images("orders").await;
    let rx = TestReceiver::start().await;
    let relay = env.relay("", &rx).await;
    let orders = env.orders().await;
    let id = uuid::Uuid::new_v4().simple().to_string();
    orders
        .insert_one(doc! { "_id": &id, "status": "new" })
        .await
        .unwrap();
    orders
        .update_one(doc! { "_id": &id }, doc! { "$set": { "status": "paid" } })
        .await
        .unwrap();
    orders.delete_one(doc! { "_id": &id }).await.unwrap();

    let mine = |log: &[Received]| -> Vec<Value> {
        let mut seen = std::collections::HashSet::new();
        let mine: Vec<Received> = log
            .iter()
            .filter(|r| (200..300).contains(&r.status) && r.json()["key"]["_id"] == id)
            .filter(|r| seen.insert(r.id.clone()))
            .cloned()
            .collect();
        bodies(&mine)
    };
    let log = rx
        .wait_for(&format!("3 events of {id} from {target}"), WAIT, |log| {
            mine(log).len() >= 3
        })
        .await;
    let got = mine(&log);
    let ops: Vec<&str> = got.iter().map(|b| b["op"].as_str().unwrap()).collect();
    assert_eq!(ops, ["insert", "update", "delete"], "from {target}");
    assert_eq!(got[0]["after"], json!({ "_id": id, "status": "new" }));
    assert_eq!(got[1]["after"]["status"], "paid", "post-image ({target})");
    assert_eq!(got[2]["after"], Value::Null);
    for b in &got {
        assert_eq!(b["type"], format!("orders.{}", b["op"].as_str().unwrap()));
        assert_eq!(b["key"], json!({ "_id": id }));
        assert_eq!(b["source"]["kind"], "mongodb");
        assert_eq!(b["source"]["database"], "app");
        assert_eq!(b["source"]["table"], "orders");
        assert!(
            b["source"]["position"]
                .as_str()
                .unwrap()
                .starts_with(r#"{"_data":""#),
            "the resume token: {b}"
        );
        assert_eq!(b["txn"]["seq"], 0, "a single write is its own transaction");
    }
    if target == "the wire-protocol test server" {
        assert!(
            !env.server.change_stream_stages().is_empty(),
            "the test server served the stream"
        );
    }
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_after_the_stored_token_with_nothing_lost_or_repeated() {
    let env = MongoEnv::new().await;
    let rx = TestReceiver::start().await;
    let relay = env.relay("", &rx).await;
    let orders = env.orders().await;
    for id in 1..=2 {
        orders.insert_one(doc! { "_id": id }).await.unwrap();
    }
    let first = bodies(&rx.wait_delivered(2, WAIT).await);
    relay.shutdown().await;
    let stored = env.checkpoint().await.expect("a checkpoint");
    // Different keys: they may arrive in either order; the later commit is _id 2.
    let last = first
        .iter()
        .find(|b| b["key"]["_id"] == 2)
        .expect("the second insert");
    assert_eq!(
        stored,
        last["source"]["position"].as_str().unwrap(),
        "checkpoint = last event's token"
    );

    // Committed while hookrelay is down.
    for id in 3..=4 {
        orders.insert_one(doc! { "_id": id }).await.unwrap();
    }
    orders.delete_one(doc! { "_id": 1 }).await.unwrap();
    // The primary steps down as the reader reopens: retried, nothing lost.
    env.server.fail_next_aggregates(10107, 1);

    let relay = env.relay("", &rx).await;
    let all = rx.wait_delivered(5, WAIT).await;
    let stages = env.server.change_stream_stages();
    let resumed = stages
        .last()
        .unwrap()
        .get_document("startAfter")
        .expect("reopened after a token");
    assert_eq!(
        serde_json::to_string(&Bson::Document(resumed.clone()).into_relaxed_extjson()).unwrap(),
        stored,
        "the restarted reader resumed from the stored token"
    );
    let keys: Vec<String> = bodies(&all)
        .iter()
        .map(|b| format!("{} {}", b["op"], b["key"]["_id"]))
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            "\"delete\" 1",
            "\"insert\" 1",
            "\"insert\" 2",
            "\"insert\" 3",
            "\"insert\" 4"
        ],
        "nothing lost or repeated: {keys:?}"
    );
    // Order holds per key (only); different keys may overtake each other.
    let at = |k: &str| keys.iter().position(|x| x == k).unwrap();
    assert!(at("\"insert\" 1") < at("\"delete\" 1"), "{keys:?}");
    let ids: std::collections::HashSet<_> = all.iter().map(|r| r.id.clone()).collect();
    assert_eq!(ids.len(), all.len(), "each event delivered once");
    let before: std::collections::HashSet<String> = all[..2].iter().map(|r| r.id.clone()).collect();
    let first_ids: std::collections::HashSet<String> = first
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(before, first_ids, "the restart sent nothing again");
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_lost_fails_by_default_and_restarts_from_now_when_asked() {
    let env = MongoEnv::new().await;
    let rx = TestReceiver::start().await;
    let relay = env.relay("", &rx).await;
    let orders = env.orders().await;
    orders.insert_one(doc! { "_id": 1 }).await.unwrap();
    rx.wait_delivered(1, WAIT).await;
    relay.shutdown().await;
    orders.insert_one(doc! { "_id": 2 }).await.unwrap(); // lost with the oplog
    env.server.truncate_history();

    // fail (the default): an error state, retried with backoff, never ready.
    let relay = Relay::start(env.config("")).await.expect("relay starts");
    let err = eventually("the history-lost error", WAIT, || {
        let snap = relay.sources()[0].1.snapshot();
        async move { snap.last_error.filter(|e| e.contains("history lost")) }
    })
    .await;
    assert!(err.contains("no longer in the oplog"), "{err}");
    assert!(!relay.is_ready());
    let attempts = env.server.change_stream_stages().len();
    relay.shutdown().await;
    assert!(attempts <= 4, "no tight loop: {attempts} aggregates");

    // restart_from_now: captures from now; the lost change never arrives.
    let relay = env
        .relay("on_history_lost = \"restart_from_now\"", &rx)
        .await;
    let notice = newest_notice(&relay).await;
    assert_eq!(notice["kind"], "history_lost", "{notice}");
    assert!(
        notice["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("history lost"),
        "{notice}"
    );
    assert!(env
        .server
        .change_stream_stages()
        .last()
        .unwrap()
        .get("startAfter")
        .is_none());
    orders.insert_one(doc! { "_id": 3 }).await.unwrap();
    let got = bodies(&rx.wait_delivered(2, WAIT).await);
    assert_eq!(got[1]["key"], json!({ "_id": 3 }));
    assert!(got.iter().all(|b| b["key"] != json!({ "_id": 2 })));
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_collection_is_reported_and_capture_goes_on_after_the_invalidate() {
    let env = MongoEnv::new().await;
    let rx = TestReceiver::start().await;
    let relay = env.relay("", &rx).await;
    let orders = env.orders().await;
    orders.insert_one(doc! { "_id": 1 }).await.unwrap();
    rx.wait_delivered(1, WAIT).await;
    env.server.drop_collection("app", "orders");
    eventually("the reader to reopen after the invalidate", WAIT, || {
        let stages = env.server.change_stream_stages();
        async move { (stages.len() >= 2).then_some(()) }
    })
    .await;
    let reopened = env.server.change_stream_stages()[1].clone();
    let token = reopened
        .get_document("startAfter")
        .expect("startAfter the invalidate");
    assert!(
        token.get_str("_data").unwrap().ends_with("01"),
        "the invalidate's token: {token}"
    );
    let notice = newest_notice(&relay).await;
    assert!(
        notice["kind"] == "invalidated" || notice["kind"] == "dropped",
        "{notice}"
    );
    orders.insert_one(doc! { "_id": 2 }).await.unwrap();
    let got = bodies(&rx.wait_delivered(2, WAIT).await);
    assert_eq!(got.len(), 2, "the drop is not an event");
    assert_eq!(got[1]["key"], json!({ "_id": 2 }));
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bson_values_arrive_as_the_golden_json() {
    let env = MongoEnv::new().await;
    let rx = TestReceiver::start().await;
    let relay = env.relay("", &rx).await;
    let orders = env.orders().await;
    let uuid = hex_bytes("0123456789abcdef0123456789abcdef");
    let value = doc! {
        "_id": mongodb::bson::oid::ObjectId::parse_str("5f43a1b2c3d4e5f60718293a").unwrap(),
        "z": 1,
        "big": 9_007_199_254_740_993_i64,
        "small": -9_007_199_254_740_992_i64,
        "price": "1.5E+3".parse::<Decimal128>().unwrap(),
        "tiny": "-1.23E-7".parse::<Decimal128>().unwrap(),
        "ratio": 0.1,
        "nan": f64::NAN,
        "inf": f64::NEG_INFINITY,
        "at": mongodb::bson::DateTime::from_millis(1_795_377_662_000),
        "bytes": Binary { subtype: mongodb::bson::spec::BinarySubtype::Generic, bytes: b"hi\x00\xff".to_vec() },
        "uuid": Binary { subtype: mongodb::bson::spec::BinarySubtype::Uuid, bytes: uuid },
        "ts": mongodb::bson::Timestamp { time: 7, increment: 9 },
        "re": mongodb::bson::Regex { pattern: "^a".into(), options: "mi".into() },
        "min": Bson::MinKey,
        "max": Bson::MaxKey,
        "code": Bson::JavaScriptCode("f()".into()),
        "nested": { "b": [1, { "c": Bson::Null }, "x\u{0}y"], "a": true },
    };
    orders.insert_one(value).await.unwrap();
    let got = rx.wait_delivered(1, WAIT).await;
    let body = std::str::from_utf8(&got[0].body).unwrap();
    let golden = concat!(
        r#""after":{"_id":"5f43a1b2c3d4e5f60718293a","z":1,"big":"9007199254740993","#,
        r#""small":-9007199254740992,"price":"1500","tiny":"-0.000000123","ratio":0.1,"#,
        r#""nan":"NaN","inf":"-Infinity","at":"2026-11-22T20:01:02.000Z","bytes":"aGkA/w==","#,
        r#""uuid":"01234567-89ab-cdef-0123-456789abcdef","ts":{"$timestamp":{"t":7,"i":9}},"#,
        r#""re":{"$regularExpression":{"pattern":"^a","options":"im"}},"min":{"$minKey":1},"#,
        r#""max":{"$maxKey":1},"code":{"$code":"f()"},"#,
        r#""nested":{"b":[1,{"c":null},"x\u0000y"],"a":true}}"#,
    );
    assert!(body.contains(golden), "body {body}\nwants {golden}");
    assert!(
        body.contains(r#""key":{"_id":"5f43a1b2c3d4e5f60718293a"}"#),
        "{body}"
    );
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_a_standalone_and_collections_without_pre_images() {
    let env = MongoEnv::new().await;
    let cfg = env.config("");
    let orders = env.orders().await;
    orders.insert_one(doc! { "_id": 1 }).await.unwrap();
    let notes = hookrelay_sources::mongodb::check(&cfg.sources[0])
        .await
        .expect("usable");
    assert!(
        notes
            .iter()
            .any(|n| n.contains("pre-images are off for app.orders")),
        "{notes:?}"
    );
    let mut required = cfg.sources[0].clone();
    required.post_images = hookrelay_core::config::PostImages::Required;
    let err = hookrelay_sources::mongodb::check(&required)
        .await
        .expect_err("required without images")
        .to_string();
    assert!(
        err.contains("post_images = \"required\" but app.orders keeps no post-images"),
        "{err}"
    );
    env.server.enable_pre_images("app", "orders");
    let notes = hookrelay_sources::mongodb::check(&cfg.sources[0])
        .await
        .expect("usable");
    assert_eq!(
        notes,
        ["app.orders keeps pre- and post-images: an update's \"before\" and \"after\" are the document just before and just after that change"]
    );
    assert!(hookrelay_sources::mongodb::check(&required).await.is_ok());

    let standalone = MongoServer::standalone().await;
    let mut src = cfg.sources[0].clone();
    src.url = standalone.url();
    let err = hookrelay_sources::mongodb::check(&src)
        .await
        .expect_err("standalone")
        .to_string();
    assert!(err.contains("standalone"), "{err}");
}

fn hex_bytes(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Five rapid updates of one document per collection, written while no relay runs, so
/// the stream reads them all at once when it starts again. Returns the events' `after`
/// versions per collection, in change order, the `fullDocument` mode the stream asked
/// for, and the newest notice `/v1/sources` showed.
async fn rapid_updates(
    env: &MongoEnv,
    collections: &[&str],
) -> (Vec<(String, Vec<i64>)>, String, Value) {
    let rx = TestReceiver::start().await;
    let mut cfg = env.config("");
    cfg.sources[0].collections = collections.iter().map(|c| format!("app.{c}")).collect();
    let start = |cfg: Config| async {
        let relay = start_relay(cfg).await;
        let api = Api::new(relay.api_addr);
        (relay, api)
    };
    // The first run subscribes and takes the resume point.
    let (relay, api) = start(cfg.clone()).await;
    let types: Vec<String> = collections.iter().map(|c| format!("{c}.*")).collect();
    api.subscribe(&rx.url, json!({ "event_types": types }))
        .await;
    eventually("the first checkpoint", WAIT, || async {
        env.checkpoint().await
    })
    .await;
    relay.shutdown().await;

    let client = Client::with_uri_str(&env.url).await.expect("driver");
    for coll in collections {
        let c = client.database("app").collection::<Document>(coll);
        c.insert_one(doc! { "_id": 1, "version": 0_i64 })
            .await
            .unwrap();
        for v in 1..=5_i64 {
            c.update_one(doc! { "_id": 1 }, doc! { "$set": { "version": v } })
                .await
                .unwrap();
        }
    }
    let stages_before = env.server.change_stream_stages().len();
    let (relay, _api) = start(cfg).await;
    let got = bodies(&rx.wait_delivered(6 * collections.len(), WAIT).await);
    let notice = newest_notice(&relay).await;
    relay.shutdown().await;
    let mode = env.server.change_stream_stages()[stages_before]
        .get_str("fullDocument")
        .unwrap_or("default")
        .to_owned();
    let per_coll = collections
        .iter()
        .map(|coll| {
            let versions = got
                .iter()
                .filter(|b| b["source"]["table"] == *coll)
                .map(|b| b["after"]["version"].as_i64().expect("after.version"))
                .collect();
            ((*coll).to_owned(), versions)
        })
        .collect();
    (per_coll, mode, notice)
}

/// Where a collection keeps post-images, each update arrives with the document just
/// after that change; in the same stream, a collection without them gets the document
/// as it is when the change is read (hookrelay looks it up), here the last version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_updates_arrive_with_the_post_image_of_each_change_where_images_are_on() {
    let env = MongoEnv::new().await;
    env.keep_images("orders").await;
    let (got, mode, notice) = rapid_updates(&env, &["orders", "items"]).await;
    assert_eq!(mode, "whenAvailable");
    assert_eq!(notice["kind"], "update_images", "{notice}");
    assert_eq!(
        notice["detail"],
        "an update's \"after\": app.items: lookup, app.orders: post-image"
    );
    assert_eq!(
        got,
        [
            ("orders".to_owned(), vec![0, 1, 2, 3, 4, 5]),
            ("items".to_owned(), vec![0, 5, 5, 5, 5, 5]),
        ]
    );
}

/// Without post-images anywhere the server looks each update up (`updateLookup`):
/// rapid updates read together all show the last state. (The contrast that makes the
/// test above one that can fail.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_post_images_updates_show_the_document_when_read() {
    let env = MongoEnv::new().await;
    let (got, mode, notice) = rapid_updates(&env, &["orders"]).await;
    assert_eq!(mode, "updateLookup");
    assert_eq!(
        notice["detail"], "an update's \"after\": app.orders: lookup",
        "{notice}"
    );
    assert_eq!(got, [("orders".to_owned(), vec![0, 5, 5, 5, 5, 5])]);
}

/// `post_images = "required"`: the stream asks for them, and each change has its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_post_images_are_asked_for() {
    let env = MongoEnv::new().await;
    env.keep_images("orders").await;
    let rx = TestReceiver::start().await;
    let relay = env.relay("post_images = \"required\"", &rx).await;
    let orders = env.orders().await;
    orders
        .insert_one(doc! { "_id": 1, "version": 0_i64 })
        .await
        .unwrap();
    orders
        .update_one(doc! { "_id": 1 }, doc! { "$set": { "version": 1_i64 } })
        .await
        .unwrap();
    let got = bodies(&rx.wait_delivered(2, WAIT).await);
    relay.shutdown().await;
    assert_eq!(got[1]["after"]["version"], 1);
    let stage = &env.server.change_stream_stages()[0];
    assert_eq!(stage.get_str("fullDocument"), Ok("required"), "{stage}");
}

/// The newest notice `/v1/sources` shows for the (only) source.
async fn newest_notice(relay: &Relay) -> Value {
    let (status, body) = Api::new(relay.api_addr)
        .call(reqwest::Method::GET, "/v1/sources", None)
        .await;
    assert_eq!(status, 200, "{body}");
    let notices = body["data"][0]["notices"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    notices.last().cloned().unwrap_or(Value::Null)
}

/// A row filter over a nested field of a document: only the orders shipped to Lyon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_selects_documents_by_a_nested_field() {
    let env = MongoEnv::new().await;
    let all = TestReceiver::start().await;
    let relay = env.relay("", &all).await;
    let lyon = TestReceiver::start().await;
    let api = Api::new(relay.api_addr);
    let sub = api
        .subscribe(
            &lyon.url,
            json!({ "filter": "after.address.city == \"Lyon\"" }),
        )
        .await;
    let orders = env.orders().await;
    for (id, city) in [(1, "Paris"), (2, "Lyon"), (3, "Lyon")] {
        orders
            .insert_one(doc! { "_id": id, "address": { "city": city } })
            .await
            .unwrap();
    }
    orders.delete_one(doc! { "_id": 2 }).await.unwrap();
    all.wait_delivered(4, WAIT).await;
    let got = bodies(&lyon.wait_delivered(2, WAIT).await);
    let keys: Vec<&Value> = got.iter().map(|b| &b["key"]["_id"]).collect();
    assert_eq!(keys, [&json!(2), &json!(3)]);
    // All four events are stored (the other subscription got them), and a filter is
    // judged as its event is stored: the two are all it was given.
    let (_, listed) = api
        .call(
            reqwest::Method::GET,
            &format!(
                "/v1/deliveries?subscription_id={}",
                sub["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(listed["data"].as_array().map(Vec::len), Some(2), "{listed}");
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn excluded_fields_are_in_no_event_and_not_in_the_store() {
    let env = MongoEnv::new().await;
    env.server.enable_pre_images("app", "orders");
    let rx = TestReceiver::start().await;
    let relay = env
        .relay(
            r#"exclude_fields = ["app.orders.card", "app.*.customer.ssn"]"#,
            &rx,
        )
        .await;
    let orders = env.orders().await;
    orders
        .insert_one(doc! {
            "_id": 1, "status": "new", "card": "4111-SECRET",
            "customer": { "name": "Ann", "ssn": "SSN-1", "address": { "ssn": "kept: not this path" } },
        })
        .await
        .unwrap();
    orders
        .update_one(
            doc! { "_id": 1 },
            // The whole sub-document (the test server's $set takes no dotted paths).
            doc! { "$set": { "status": "paid", "customer": {
                "name": "Ann", "ssn": "SSN-2", "address": { "ssn": "kept: not this path" },
            } } },
        )
        .await
        .unwrap();
    orders.delete_one(doc! { "_id": 1 }).await.unwrap();

    let got = bodies(&rx.wait_delivered(3, WAIT).await);
    let kept = json!({ "_id": 1, "status": "new",
                       "customer": { "name": "Ann", "address": { "ssn": "kept: not this path" } } });
    let paid = json!({ "_id": 1, "status": "paid",
                       "customer": { "name": "Ann", "address": { "ssn": "kept: not this path" } } });
    let shape: Vec<(&str, Value, Value, Value)> = got
        .iter()
        .map(|b| {
            (
                b["type"].as_str().unwrap(),
                b["key"].clone(),
                b["before"].clone(),
                b["after"].clone(),
            )
        })
        .collect();
    assert_eq!(
        shape,
        [
            (
                "orders.insert",
                json!({"_id": 1}),
                Value::Null,
                kept.clone()
            ),
            ("orders.update", json!({"_id": 1}), kept, paid.clone()),
            ("orders.delete", json!({"_id": 1}), paid, Value::Null),
        ]
    );
    let stored: Vec<String> = env
        .store
        .connect()
        .await
        .query("select body from hookrelay.events", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(stored.len(), 3);
    for body in &stored {
        for secret in ["SECRET", "SSN-", "\"card\""] {
            assert!(!body.contains(secret), "{secret} in {body}");
        }
    }
    relay.shutdown().await;
}
