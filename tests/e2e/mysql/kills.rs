//! `kill -9` of the hookrelay binary at random moments while a writer updates rows
//! of a MariaDB source: every committed version of every row arrives, in per-key
//! order.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use serde_json::json;

use super::{exec, mysql_config, shop};
use crate::harness::*;

const KEYS: i64 = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_hookrelay_loses_nothing_and_keeps_key_order() {
    let my = shop().await;
    let mut c = my.connect("shop").await;
    exec(
        &mut c,
        "CREATE TABLE orders (id BIGINT PRIMARY KEY, version INT NOT NULL) ENGINE=InnoDB",
    )
    .await;
    let store = TestDb::new("store").await;
    let cfg = mysql_config(&store.url(), &my.url("shop"), &["shop.orders"], "");
    let dir = std::env::temp_dir().join(format!(
        "hookrelay-mykill-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg_file = write_config(&cfg, &dir);
    let rx = TestReceiver::start().await;
    {
        // Subscribe (and take the first checkpoint) through a short-lived relay.
        let relay = start_relay(cfg.clone()).await;
        Api::new(relay.api_addr).subscribe(&rx.url, json!({})).await;
        relay.shutdown().await;
    }

    // One writer: inserts the keys, then bumps their versions round-robin, about
    // 200 commits a second; `ledger` holds every committed (key, version).
    let ledger: Arc<Mutex<Vec<(i64, i64)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (ledger, stop) = (ledger.clone(), stop.clone());
        let mut c = my.connect("shop").await;
        tokio::spawn(async move {
            for id in 1..=KEYS {
                exec(&mut c, &format!("INSERT INTO orders VALUES ({id}, 0)")).await;
                ledger.lock().unwrap().push((id, 0));
            }
            let mut pace = tokio::time::interval(Duration::from_millis(5));
            let mut i = 0i64;
            while !stop.load(Ordering::SeqCst) {
                pace.tick().await;
                let id = i % KEYS + 1;
                let version = i / KEYS + 1;
                exec(
                    &mut c,
                    &format!("UPDATE orders SET version = {version} WHERE id = {id}"),
                )
                .await;
                ledger.lock().unwrap().push((id, version));
                i += 1;
            }
        })
    };

    crate::harness::kill_9_at_random_moments(&cfg_file, 3, 300..1500).await;
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    let committed = ledger.lock().unwrap().clone();
    assert!(
        committed.len() > 100,
        "the writer made progress ({})",
        committed.len()
    );

    let mut child = crate::harness::spawn_run(&cfg_file);
    let got = rx
        .wait_delivered(committed.len(), Duration::from_secs(120))
        .await;
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);

    // Versions of each key in the order their first delivery arrived.
    let mut seen = std::collections::HashSet::new();
    let mut arrived: HashMap<i64, Vec<i64>> = HashMap::new();
    for r in &got {
        if seen.insert(r.id.clone()) {
            let body = r.json();
            let id = body["key"]["id"].as_i64().unwrap();
            arrived
                .entry(id)
                .or_default()
                .push(body["after"]["version"].as_i64().unwrap());
        }
    }
    let mut expected: HashMap<i64, Vec<i64>> = HashMap::new();
    for (id, v) in committed {
        expected.entry(id).or_default().push(v);
    }
    assert_eq!(
        arrived, expected,
        "every version of every key, in commit order"
    );
}
