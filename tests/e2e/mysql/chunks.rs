//! A large transaction is committed to the store in chunks while the checkpoint stays
//! before it. The reader "dies" between chunks (failpoint `mysql.after_chunk`, three
//! times): it reads the whole transaction again from the checkpoint, and the chunks
//! already stored dedupe on their event ids, so every row is delivered exactly once.

use std::time::Duration;

use serde_json::json;

use super::{exec, mysql_config, shop};
use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_between_chunks_of_one_transaction_duplicates_nothing() {
    let scenario = fail::FailScenario::setup();
    let my = shop().await;
    let mut c = my.connect("shop").await;
    exec(
        &mut c,
        "CREATE TABLE orders (id BIGINT PRIMARY KEY, status VARCHAR(20) NOT NULL)",
    )
    .await;
    let store = TestDb::new("store").await;
    let relay = start_relay(mysql_config(
        &store.url(),
        &my.url("shop"),
        &["shop.orders"],
        "",
    ))
    .await;
    let api = Api::new(relay.api_addr);
    let rx = TestReceiver::start().await;
    api.subscribe(&rx.url, json!({})).await;
    fail::cfg("mysql.after_chunk", "3*return").unwrap();
    // 5,000 rows, batch_size 500: ten chunks.
    exec(
        &mut c,
        "INSERT INTO orders SELECT seq, 'bulk' FROM seq_1_to_5000",
    )
    .await;
    exec(&mut c, "INSERT INTO orders VALUES (5001, 'marker')").await;
    let got = rx.wait_delivered(5001, Duration::from_secs(60)).await;
    assert_eq!(got.len(), 5001);
    assert_eq!(rx.requests().len(), 5001, "no webhook-id sent twice");
    let failures = relay.sources()[0]
        .1
        .snapshot()
        .last_error
        .unwrap_or_default();
    assert!(
        failures.contains("failpoint mysql.after_chunk"),
        "the failpoint fired: {failures:?}"
    );
    let db = store.connect().await;
    let row = db
        .query_one(
            &format!("select (select count(*) from hookrelay.events), ({DELIVERIES_STORED})"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, i64>(0), row.get::<_, i64>(1)),
        (5001, 5001),
        "re-read chunks stored once, with one delivery each"
    );
    relay.shutdown().await;
    scenario.teardown();
}
