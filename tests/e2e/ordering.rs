//! Per-key ordering (DESIGN §1.1.3): a later change to a row waits for the earlier
//! one's retries; other rows keep flowing.

use std::{sync::Arc, time::Duration};

use serde_json::json;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_key_waits_for_retries_other_keys_flow() {
    let env = Env::new().await;
    let relay = start_relay(env.config()).await;
    let api = Api::new(relay.api_addr);
    // Row 1's version-1 change is refused twice with Retry-After: 1 (≥ 2 s in all).
    let rx = TestReceiver::scripted(Arc::new(|body, n| {
        let is_slow = body["key"]["id"] == 1 && body["after"]["version"] == 1;
        if is_slow && n < 2 {
            Reply {
                status: 503,
                headers: vec![("retry-after", "1".into())],
                ..Default::default()
            }
        } else {
            Reply::ok()
        }
    }))
    .await;
    api.subscribe(&rx.url, json!({})).await;
    let db = env.source.connect().await;
    db.batch_execute("insert into orders (id, status) values (1, 'x'), (2, 'x')")
        .await
        .unwrap();
    for v in 1..=3 {
        db.batch_execute(&format!("update orders set version = {v} where id = 1"))
            .await
            .unwrap();
        db.batch_execute(&format!("update orders set version = {v} where id = 2"))
            .await
            .unwrap();
    }
    rx.wait_delivered(8, Duration::from_secs(60)).await;

    let all = rx.requests();
    let version = |r: &Received| r.json()["after"]["version"].as_i64().unwrap();
    let key = |r: &Received| r.json()["key"]["id"].as_i64().unwrap();
    let ok: Vec<&Received> = all.iter().filter(|r| r.status == 200).collect();
    let row1: Vec<i64> = ok
        .iter()
        .filter(|r| key(r) == 1)
        .map(|r| version(r))
        .collect();
    let row2: Vec<i64> = ok
        .iter()
        .filter(|r| key(r) == 2)
        .map(|r| version(r))
        .collect();
    assert_eq!(row1, [0, 1, 2, 3], "row 1 in commit order despite retries");
    assert_eq!(row2, [0, 1, 2, 3]);

    // Nothing later for row 1 was even attempted before version 1 succeeded.
    let v1_ok = ok
        .iter()
        .find(|r| key(r) == 1 && version(r) == 1)
        .unwrap()
        .done;
    let first_v2_try = all
        .iter()
        .filter(|r| key(r) == 1 && version(r) == 2)
        .map(|r| r.at)
        .min()
        .unwrap();
    assert!(
        first_v2_try >= v1_ok,
        "row 1 v2 attempted before v1 succeeded"
    );
    // Row 2 did not wait for row 1.
    let row2_done = ok
        .iter()
        .filter(|r| key(r) == 2)
        .map(|r| r.done)
        .max()
        .unwrap();
    assert!(row2_done < v1_ok, "row 2 was held up behind row 1");
    assert_eq!(all.iter().filter(|r| r.status == 503).count(), 2);
    relay.shutdown().await;
}

/// A subscription that keeps up gets its fresh deliveries handed over by the batch
/// that inserts them (leased at insert, no claim), and a later change to a row is
/// still not sent while an earlier one of that row is open: here row 1's first
/// update is refused until rows 2 and 3 have moved on three times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handed_over_deliveries_keep_per_key_order() {
    let env = Env::new().await;
    let mut cfg = env.config();
    cfg.dispatch.max_attempts = 100; // row 1's update retries until released
    let relay = start_relay(cfg).await;
    let api = Api::new(relay.api_addr);
    let release = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let gate = release.clone();
    let rx = TestReceiver::scripted(Arc::new(move |body, _| {
        let held = body["key"]["id"] == 1 && body["after"]["version"] == 1;
        if held && !gate.load(std::sync::atomic::Ordering::SeqCst) {
            Reply::status(500)
        } else {
            Reply::ok()
        }
    }))
    .await;
    api.subscribe(&rx.url, json!({})).await;
    let db = env.source.connect().await;
    // One change at a time, each delivered before the next is written: the first
    // goes through a claim, which finds the subscription with nothing else waiting;
    // the ones after it are handed over.
    for id in 1..=3 {
        db.batch_execute(&format!(
            "insert into orders (id, status) values ({id}, 'x')"
        ))
        .await
        .unwrap();
        rx.wait_delivered(id as usize, Duration::from_secs(60))
            .await;
    }
    let metrics = format!("{}/metrics", api.base);
    let handed = || async {
        let text = reqwest::get(&metrics).await.ok()?.text().await.ok()?;
        sample(
            &text,
            "hookrelay_deliveries_taken_total{how=\"handed_over\"}",
        )
    };
    eventually(
        "a delivery handed over",
        Duration::from_secs(30),
        || async { handed().await.filter(|n| *n >= 1.0) },
    )
    .await;

    // Row 1's update fails and is retried; rows 2 and 3 keep flowing, and row 1's
    // later updates wait behind it, whichever way they were taken.
    for v in 1..=3 {
        for id in 1..=3 {
            db.batch_execute(&format!("update orders set version = {v} where id = {id}"))
                .await
                .unwrap();
        }
    }
    rx.wait_for(
        "rows 2 and 3 at version 3",
        Duration::from_secs(60),
        |all| {
            all.iter()
                .filter(|r| r.status == 200 && r.json()["after"]["version"] == 3)
                .count()
                == 2
        },
    )
    .await;
    release.store(true, std::sync::atomic::Ordering::SeqCst);
    rx.wait_delivered(12, Duration::from_secs(60)).await;

    let all = rx.requests();
    let key = |r: &Received| r.json()["key"]["id"].as_i64().unwrap();
    let version = |r: &Received| r.json()["after"]["version"].as_i64().unwrap();
    for id in 1..=3 {
        let mut tries: Vec<i64> = all.iter().filter(|r| key(r) == id).map(&version).collect();
        tries.dedup();
        assert_eq!(
            tries,
            [0, 1, 2, 3],
            "row {id}: every attempt in commit order"
        );
    }
    assert!(
        all.iter().any(|r| key(r) == 1 && r.status == 500),
        "row 1's first update was refused at least once"
    );
    assert!(handed().await.is_some_and(|n| n >= 1.0));
    relay.shutdown().await;
}
