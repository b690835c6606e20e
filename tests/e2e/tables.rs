//! Table shapes: names that need quoting, TRUNCATE, and a table that fails
//! its checks (no trigger, named in the source's error).

use std::time::Duration;

use serde_json::json;

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quoted_names_are_captured_and_truncate_is_one_event() {
    let env = Env::new().await;
    let db = env.source.connect().await;
    db.batch_execute(
        r#"create schema "Sales";
           create table "Sales"."Order Items" (id int primary key, "Qty" int)"#,
    )
    .await
    .unwrap();
    let mut cfg = env.config();
    cfg.sources[0].tables = vec![r#""Sales"."Order Items""#.into()];
    let relay = start_relay(cfg).await;
    let api = Api::new(relay.api_addr);
    let rx = TestReceiver::start().await;
    api.subscribe(&rx.url, json!({"event_types": ["Order Items.*"]}))
        .await;

    db.batch_execute(
        r#"insert into "Sales"."Order Items" values (1, 5), (2, 6);
           truncate "Sales"."Order Items";
           insert into "Sales"."Order Items" values (3, 7);"#,
    )
    .await
    .unwrap();
    let got = rx.wait_delivered(4, WAIT).await;
    let mut events: Vec<serde_json::Value> = got.iter().map(|r| r.json()).collect();
    events.sort_by_key(|e| e["txn"]["seq"].as_u64());
    let shape: Vec<(String, serde_json::Value)> = events
        .iter()
        .map(|e| (e["type"].as_str().unwrap().to_owned(), e["key"].clone()))
        .collect();
    assert_eq!(
        shape,
        [
            ("Order Items.insert".to_owned(), json!({"id": 1})),
            ("Order Items.insert".to_owned(), json!({"id": 2})),
            ("Order Items.truncate".to_owned(), json!(null)),
            ("Order Items.insert".to_owned(), json!({"id": 3})),
        ]
    );
    let truncate = &events[2];
    assert_eq!(truncate["op"], "truncate");
    assert!(
        truncate["before"].is_null() && truncate["after"].is_null(),
        "{truncate}"
    );
    assert_eq!(truncate["source"]["schema"], "Sales");
    assert_eq!(truncate["source"]["table"], "Order Items");
    assert_eq!(events[0]["after"], json!({"id": 1, "Qty": 5}));
    // One transaction: one txn id, seq in commit order.
    assert!(events
        .iter()
        .all(|e| e["txn"]["id"] == events[0]["txn"]["id"]));
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_without_a_primary_key_gets_no_trigger_and_is_named() {
    let env = Env::new().await;
    let db = env.source.connect().await;
    db.batch_execute("create table public.nokey (v int)")
        .await
        .unwrap();
    // First the table is captured while it still has a key...
    db.batch_execute("alter table public.nokey add column id int primary key")
        .await
        .unwrap();
    let mut cfg = env.config();
    cfg.sources[0].tables = vec!["public.orders".into(), "public.nokey".into()];
    let relay = start_relay(cfg.clone()).await;
    relay.shutdown().await;
    let triggers_on = |table: &'static str| {
        let db = &db;
        async move {
            db.query_one(
                "select count(*) from pg_trigger where tgrelid = $1::text::regclass and tgname like 'hookrelay%'",
                &[&table],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
        }
    };
    assert_eq!(triggers_on("public.nokey").await, 4);

    // ...then loses it: the next start removes its triggers and names it, while the
    // other table keeps being captured.
    db.batch_execute("alter table public.nokey drop constraint nokey_pkey")
        .await
        .unwrap();
    let relay = hookrelay::Relay::start(cfg).await.expect("relay starts");
    let (_, status) = relay.sources()[0].clone();
    let error = eventually("the source to report the table", WAIT, || async {
        status.snapshot().last_error
    })
    .await;
    assert!(error.contains("public.nokey has no primary key"), "{error}");
    assert!(
        !relay.is_ready(),
        "a source that cannot capture every table is not ready"
    );
    assert_eq!(triggers_on("public.nokey").await, 0);
    assert_eq!(triggers_on("public.orders").await, 4);
    relay.shutdown().await;
}
