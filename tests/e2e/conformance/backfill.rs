//! The backfill scenarios (DESIGN §1.8): writers (inserts, updates, deletes) run
//! throughout the backfill, then every key's last received event is compared with the
//! table: the subscriber must end with exactly the current rows.

use std::{
    collections::{BTreeMap, HashSet},
    time::Duration,
};

use reqwest::Method;
use serde_json::{json, Value};

use super::{Fixture, Writers};
use crate::harness::*;

/// Rows in the table before the backfill starts.
pub const ROWS: i64 = 20_000;

/// Each key's state as the receiver's events leave it (arrival order, once per event
/// id): `v` of its last event, or absent after a delete. Also how many distinct read
/// events came.
pub fn replay<F: Fixture>(fx: &F, received: &[Received]) -> (BTreeMap<i64, i64>, usize) {
    let mut seen = HashSet::new();
    let mut state = BTreeMap::new();
    let mut reads = 0;
    for r in received.iter().filter(|r| (200..300).contains(&r.status)) {
        if !seen.insert(r.id.clone()) {
            continue;
        }
        let e = r.json();
        let id = fx.key_of(&e);
        match e["op"].as_str().expect("op") {
            "delete" => {
                state.remove(&id);
            }
            op => {
                if op == "read" {
                    reads += 1;
                    assert!(e["before"].is_null() && e["txn"].is_null(), "{e}");
                }
                state.insert(id, e["after"]["v"].as_i64().expect("v"));
            }
        }
    }
    (state, reads)
}

/// Waits until the backfill ends, returning it; `completed` expected.
pub async fn wait_backfill_ended(api: &Api, id: &str, timeout: Duration) -> Value {
    eventually("the backfill to end", timeout, || async {
        let (status, b) = api
            .call(Method::GET, &format!("/v1/backfills/{id}"), None)
            .await;
        assert_eq!(status, 200, "{b}");
        (b["state"] != "running").then_some(b)
    })
    .await
}

/// Waits until the receiver's events leave every key as the table has it.
pub async fn wait_converged<F: Fixture>(fx: &F, rx: &TestReceiver, timeout: Duration) -> usize {
    let table = fx.rows().await;
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let (state, reads) = replay(fx, &rx.requests());
        if state == table {
            return reads;
        }
        if std::time::Instant::now() > deadline {
            let missing = table.keys().filter(|k| !state.contains_key(k)).count();
            let extra = state.keys().filter(|k| !table.contains_key(k)).count();
            let stale = table
                .iter()
                .filter(|(k, v)| state.get(k).is_some_and(|s| s != *v))
                .count();
            let extras: Vec<&i64> = state
                .keys()
                .filter(|k| !table.contains_key(k))
                .take(5)
                .collect();
            panic!(
                "the subscriber's rows differ from the table: {missing} missing, {extra} \
                 resurrected or extra (e.g. {extras:?}), {stale} stale (table {} rows, \
                 subscriber {})",
                table.len(),
                state.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The scenario: a table of [`ROWS`] rows, writers throughout, a backfill on one
/// subscription; that subscriber ends with exactly the table, the other subscriber
/// (all events, live) gets changes but no read event, and the backfill reports every
/// table done.
pub async fn under_writes<F: Fixture>(fx: F) {
    fx.fill(ROWS).await;
    let store = TestDb::new("store").await;
    let relay = start_relay(test_config(&store.url(), &fx.source_toml())).await;
    let api = Api::new(relay.api_addr);
    let rx = TestReceiver::start().await;
    let other = TestReceiver::start().await;
    let sub = api
        .subscribe(&rx.url, json!({ "event_types": ["items.*"] }))
        .await;
    api.subscribe(&other.url, json!({ "event_types": null }))
        .await;
    let writers = Writers::start(&fx, 4, ROWS + 1).await;
    // changes flow before and during the backfill
    other
        .wait_for("live changes", Duration::from_secs(30), |r| r.len() >= 20)
        .await;
    let (status, bf) = api
        .call(
            Method::POST,
            &format!("/v1/subscriptions/{}/backfill", sub["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(status, 202, "{bf}");
    assert_eq!(bf["state"], "running");
    assert_eq!(bf["rows"], 0);
    assert_eq!(bf["tables"], json!([fx.table()]));
    let id = bf["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("bf_"), "{id}");
    let ended = wait_backfill_ended(&api, &id, Duration::from_secs(180)).await;
    let writes = writers.stop().await;
    assert_eq!(ended["state"], "completed", "{ended}");
    assert_eq!(ended["tables_done"], 1, "{ended}");
    let reads = wait_converged(&fx, &rx, Duration::from_secs(180)).await;
    println!("backfill under {writes} writes: {reads} rows read, {ended}");
    assert_eq!(
        ended["rows"], reads as i64,
        "rows reported = read events sent"
    );
    assert!(
        reads > (ROWS as usize) / 2,
        "most rows came as read events ({reads})"
    );
    let metrics = reqwest::get(format!("{}/metrics", api.base))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    assert_eq!(
        sample(&metrics, "hookrelay_backfills_running"),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, &fx.rows_read_series()),
        Some(reads as f64),
        "every row this process read is counted"
    );
    let others = other.requests();
    let other_reads = others.iter().filter(|r| r.json()["op"] == "read").count();
    assert_eq!(other_reads, 0, "another subscription gets no read event");
    assert!(
        others.len() > 20,
        "the other subscription kept getting changes"
    );
    let (status, list) = api
        .call(
            Method::GET,
            &format!(
                "/v1/backfills?subscription_id={}",
                sub["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(list["data"][0]["id"], id.as_str());
    let (status, _) = api
        .call(Method::DELETE, &format!("/v1/backfills/{id}"), None)
        .await;
    assert_eq!(status, 409, "an ended backfill cannot be cancelled");
    relay.shutdown().await;
}

/// The same with `kill -9` of hookrelay at random moments during the backfill (read
/// slowly, so the kills land in it): it resumes from the stored progress and the
/// subscriber still ends with exactly the table.
pub async fn survives_kill_9<F: Fixture>(fx: F) {
    fx.fill(ROWS).await;
    let store = TestDb::new("store").await;
    let mut cfg = test_config(&store.url(), &fx.source_toml());
    cfg.backfill.max_rows_per_second = 1000;
    let dir = std::env::temp_dir().join(format!("hookrelay-bf-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = write_config(&cfg, &dir);
    let rx = TestReceiver::start().await;
    let (sub, id) = {
        let relay = start_relay(cfg.clone()).await;
        let api = Api::new(relay.api_addr);
        let sub = api
            .subscribe(
                &rx.url,
                json!({ "event_types": ["items.*"], "backfill": true }),
            )
            .await;
        let id = sub["backfill"]["id"]
            .as_str()
            .expect("backfill in the answer")
            .to_owned();
        relay.shutdown().await;
        (sub, id)
    };
    let writers = Writers::start(&fx, 4, ROWS + 1).await;
    kill_9_at_random_moments(&file, 4, 1500..3000).await;
    let relay = start_relay(cfg).await;
    let api = Api::new(relay.api_addr);
    let (_, mid) = api
        .call(Method::GET, &format!("/v1/backfills/{id}"), None)
        .await;
    let ended = wait_backfill_ended(&api, &id, Duration::from_secs(180)).await;
    let writes = writers.stop().await;
    assert_eq!(ended["state"], "completed", "{ended}");
    let reads = wait_converged(&fx, &rx, Duration::from_secs(180)).await;
    println!("backfill with kill -9 x4 under {writes} writes: {mid} then {ended}");
    assert!(
        mid["rows"].as_i64().unwrap() < ROWS,
        "the kills landed during the backfill: {mid}"
    );
    assert_eq!(
        ended["rows"], reads as i64,
        "rows reported = read events sent"
    );
    assert_eq!(ended["subscription_id"], sub["id"]);
    relay.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Cancelling: the backfill stops, no chunk after the cancel is sent, and a second
/// cancel is a 409.
pub async fn cancel<F: Fixture>(fx: F) {
    fx.fill(ROWS).await;
    let store = TestDb::new("store").await;
    let mut cfg = test_config(&store.url(), &fx.source_toml());
    // slow enough that the cancel lands long before the end, however loaded the machine
    cfg.backfill.max_rows_per_second = 200;
    let relay = start_relay(cfg).await;
    let api = Api::new(relay.api_addr);
    let rx = TestReceiver::start().await;
    let sub = api
        .subscribe(&rx.url, json!({ "event_types": ["items.*"] }))
        .await;
    let (status, bf) = api
        .call(
            Method::POST,
            &format!("/v1/subscriptions/{}/backfill", sub["id"].as_str().unwrap()),
            Some(json!({ "tables": [fx.table()] })),
        )
        .await;
    assert_eq!(status, 202, "{bf}");
    let id = bf["id"].as_str().unwrap().to_owned();
    eventually("some rows read", Duration::from_secs(60), || async {
        let (_, b) = api
            .call(Method::GET, &format!("/v1/backfills/{id}"), None)
            .await;
        (b["rows"].as_i64().unwrap_or(0) >= 200).then_some(())
    })
    .await;
    let (status, cancelled) = api
        .call(Method::DELETE, &format!("/v1/backfills/{id}"), None)
        .await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["state"], "cancelled");
    let (status, _) = api
        .call(Method::DELETE, &format!("/v1/backfills/{id}"), None)
        .await;
    assert_eq!(status, 409);
    // every read event the store holds arrives, and they are what it reports: nothing
    // past the cancel was stored
    let (_, now) = api
        .call(Method::GET, &format!("/v1/backfills/{id}"), None)
        .await;
    let rows = now["rows"].as_i64().unwrap();
    assert!(rows < ROWS, "cancelled before the end: {now}");
    rx.wait_for("the stored read events", Duration::from_secs(120), |r| {
        replay(&fx, r).1 as i64 >= rows
    })
    .await;
    let (_, later) = api
        .call(Method::GET, &format!("/v1/backfills/{id}"), None)
        .await;
    assert_eq!(later["rows"], rows, "no chunk was stored after the cancel");
    assert_eq!(later["state"], "cancelled");
    let (status, problem) = api
        .call(
            Method::POST,
            &format!("/v1/subscriptions/{}/backfill", sub["id"].as_str().unwrap()),
            Some(json!({ "tables": ["public.nope"] })),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("tables[0]"),
        "{problem}"
    );
    relay.shutdown().await;
}
