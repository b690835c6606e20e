//! Capture scope: table globs that pick up tables created later, and excluded columns
//! that never leave the source (PostgreSQL here; MariaDB in `mysql/scope.rs`).

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(60);

/// The events delivered, by table and then commit order.
fn events_of(got: &[Received]) -> Vec<Value> {
    let mut events: Vec<Value> = got.iter().map(|r| r.json()).collect();
    events.dedup_by(|a, b| a["id"] == b["id"]);
    events.sort_by_key(|e| {
        (
            e["source"]["table"].as_str().map(str::to_owned),
            e["txn"]["id"].as_str().and_then(|t| t.parse::<u64>().ok()),
            e["txn"]["seq"].as_u64(),
        )
    });
    events
}

async fn tables_of(api: &Api) -> Value {
    let (status, body) = api.call(Method::GET, "/v1/sources/shop", None).await;
    assert_eq!(status, 200, "{body}");
    body["tables"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_glob_captures_new_tables_at_once_and_excluded_columns_never_leave() {
    let env = Env::new().await;
    let db = env.source.connect().await;
    db.batch_execute(
        "create table public.users (id int primary key, email text, password_hash text, ssn text);
         create table public.nokey (a int);",
    )
    .await
    .unwrap();
    let mut cfg = env.config();
    cfg.sources[0].tables = vec!["public.*".into()];
    cfg.sources[0].exclude_columns = vec!["public.users.password_hash".into(), "*.*.ssn".into()];
    let relay = start_relay(cfg).await;
    let api = Api::new(relay.api_addr);
    let rx = TestReceiver::start().await;
    api.subscribe(&rx.url, json!({"event_types": ["*"]})).await;

    // The table without a key is skipped, with a notice; not fatal.
    let (_, shop) = api.call(Method::GET, "/v1/sources/shop", None).await;
    assert_eq!(shop["state"], "running", "{shop}");
    assert_eq!(
        shop["tables"],
        json!({
            "captured": ["public.orders", "public.users"],
            "skipped": [{"table": "public.nokey", "reason": "it has no primary key; hookrelay needs one for the event key and per-key ordering"}],
        })
    );
    let notices: Vec<(&str, &str)> = shop["notices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["kind"].as_str().unwrap(), n["detail"].as_str().unwrap()))
        .collect();
    assert_eq!(notices.len(), 1, "{shop}");
    assert_eq!(notices[0].0, "skipped");
    assert!(notices[0].1.starts_with("public.nokey: "), "{shop}");

    db.batch_execute(
        "insert into users values (1, 'a@x', 'HASH-1', 'SSN-1');
         update users set email = 'b@x' where id = 1;
         insert into users values (2, 'c@x', 'HASH-2', 'SSN-2'), (3, 'd@x', 'HASH-3', 'SSN-3');
         delete from users where id in (2, 3);
         insert into nokey values (1);",
    )
    .await
    .unwrap();
    // Created while hookrelay runs and written at once, in the creating transaction
    // and right after it.
    db.batch_execute(
        "begin;
         create table public.late (id int primary key, v text, ssn text);
         insert into late values (1, 'first', 'SSN-L1');
         commit;
         insert into late values (2, 'second', 'SSN-L2');",
    )
    .await
    .unwrap();

    let got = rx.wait_delivered(8, WAIT).await;
    let events = events_of(&got);
    let shape: Vec<(String, Value, Value, Value)> = events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_owned(),
                e["key"].clone(),
                e["before"].clone(),
                e["after"].clone(),
            )
        })
        .collect();
    assert_eq!(
        shape,
        [
            (
                "late.insert".to_owned(),
                json!({"id": 1}),
                json!(null),
                json!({"id": 1, "v": "first"})
            ),
            (
                "late.insert".to_owned(),
                json!({"id": 2}),
                json!(null),
                json!({"id": 2, "v": "second"})
            ),
            (
                "users.insert".to_owned(),
                json!({"id": 1}),
                json!(null),
                json!({"id": 1, "email": "a@x"})
            ),
            (
                "users.update".to_owned(),
                json!({"id": 1}),
                json!({"id": 1, "email": "a@x"}),
                json!({"id": 1, "email": "b@x"})
            ),
            (
                "users.insert".to_owned(),
                json!({"id": 2}),
                json!(null),
                json!({"id": 2, "email": "c@x"})
            ),
            (
                "users.insert".to_owned(),
                json!({"id": 3}),
                json!(null),
                json!({"id": 3, "email": "d@x"})
            ),
            (
                "users.delete".to_owned(),
                json!({"id": 2}),
                json!({"id": 2, "email": "c@x"}),
                json!(null)
            ),
            (
                "users.delete".to_owned(),
                json!({"id": 3}),
                json!({"id": 3, "email": "d@x"}),
                json!(null)
            ),
        ],
        "{events:#?}"
    );
    // Nothing excluded reached the store either.
    let store = env.store.connect().await;
    let bodies: Vec<String> = store
        .query("select body from hookrelay.events", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(bodies.len(), 8);
    for body in &bodies {
        for secret in ["HASH-", "SSN-", "password_hash", "\"ssn\""] {
            assert!(!body.contains(secret), "{secret} in {body}");
        }
    }

    // The new table is listed; dropped, its capture is removed.
    eventually("the new table listed", WAIT, || async {
        let t = tables_of(&api).await;
        (t["captured"] == json!(["public.late", "public.orders", "public.users"])).then_some(())
    })
    .await;
    db.batch_execute("drop table public.late").await.unwrap();
    eventually("the dropped table no longer listed", WAIT, || async {
        let t = tables_of(&api).await;
        (t["captured"] == json!(["public.orders", "public.users"])).then_some(())
    })
    .await;
    relay.shutdown().await;

    // With hookrelay stopped a change stays in the source's journal: without the
    // excluded columns there too.
    db.batch_execute("insert into users values (4, 'e@x', 'HASH-4', 'SSN-4')")
        .await
        .unwrap();
    let journalled: Vec<Value> = db
        .query("select after from hookrelay.journal", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(journalled, [json!({"id": 4, "email": "e@x"})]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn excluding_a_key_column_is_refused_naming_it() {
    let env = Env::new().await;
    let mut cfg = env.config();
    cfg.sources[0].exclude_columns = vec!["public.orders.id".into()];
    let relay = hookrelay::Relay::start(cfg).await.expect("relay starts");
    let api = Api::new(relay.api_addr);
    let shop = eventually("the source to fail setup", WAIT, || async {
        let (_, body) = api.call(Method::GET, "/v1/sources/shop", None).await;
        body["last_error"].is_string().then_some(body)
    })
    .await;
    let error = shop["last_error"].as_str().unwrap();
    assert!(
        error.contains(
            "exclude_columns would exclude public.orders.id, part of the table's primary key"
        ),
        "{error}"
    );
    assert_eq!(
        env.source
            .connect()
            .await
            .query_one(
                "select count(*) from pg_trigger where tgname like 'hookrelay%'",
                &[]
            )
            .await
            .unwrap()
            .get::<_, i64>(0),
        0,
        "no capture installed"
    );
    relay.shutdown().await;
}
