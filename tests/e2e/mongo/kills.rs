//! `kill -9` of the hookrelay binary at random moments while a writer updates
//! documents through the wire-protocol test server: every change arrives, a
//! duplicate only with its first webhook-id, in per-`_id` order.
//!
//! The test server lives in this test process, so it (and its oplog) stays up across
//! the child's kills, as a real replica set would.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use mongodb::bson::doc;

use super::MongoEnv;
use crate::harness::*;

const KEYS: i64 = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_hookrelay_loses_nothing_and_keeps_id_order() {
    let env = MongoEnv::new().await;
    // Post-images on: each update's `after` is that change's, so the versions that
    // arrive can be checked against the writes (a lookup could skip some).
    env.server.enable_pre_images("app", "orders");
    let cfg = env.config("");
    let dir = std::env::temp_dir().join(format!(
        "hookrelay-mongokill-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg_file = write_config(&cfg, &dir);
    let rx = TestReceiver::start().await;
    {
        // Subscribe, and store the first resume token (the stream opens from "now"
        // and commits that token first), through a short-lived in-process relay.
        let relay = env.relay("", &rx).await;
        eventually("the first checkpoint", super::WAIT, || async {
            env.checkpoint().await
        })
        .await;
        relay.shutdown().await;
    }

    // One writer through the real driver: inserts the keys, then bumps their
    // versions round-robin, about 100 writes a second; `ledger` holds every
    // acknowledged (_id, version).
    let ledger: Arc<Mutex<Vec<(i64, i64)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (ledger, stop) = (ledger.clone(), stop.clone());
        let orders = env.orders().await;
        tokio::spawn(async move {
            for id in 1..=KEYS {
                orders
                    .insert_one(doc! { "_id": id, "version": 0_i64 })
                    .await
                    .expect("insert");
                ledger.lock().unwrap().push((id, 0));
            }
            let mut pace = tokio::time::interval(Duration::from_millis(10));
            let mut i = 0i64;
            while !stop.load(Ordering::SeqCst) {
                pace.tick().await;
                let id = i % KEYS + 1;
                let version = i / KEYS + 1;
                orders
                    .update_one(doc! { "_id": id }, doc! { "$set": { "version": version } })
                    .await
                    .expect("update");
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
        .wait_delivered(committed.len(), Duration::from_secs(60))
        .await;
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);

    // A change delivered twice carries its first webhook-id both times.
    let mut ids_of: HashMap<String, HashSet<String>> = HashMap::new();
    for r in &got {
        let body = r.json();
        ids_of
            .entry(body["source"]["position"].as_str().unwrap().to_owned())
            .or_default()
            .insert(r.id.clone());
    }
    let split: Vec<_> = ids_of.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(
        split.is_empty(),
        "a change under two webhook-ids: {split:?}"
    );
    assert_eq!(
        ids_of.len(),
        committed.len(),
        "one event per acknowledged write, no more"
    );

    // Versions of each _id in the order their first delivery arrived.
    let mut seen = HashSet::new();
    let mut arrived: HashMap<i64, Vec<i64>> = HashMap::new();
    for r in &got {
        if seen.insert(r.id.clone()) {
            let body = r.json();
            let id = body["key"]["_id"].as_i64().unwrap();
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
        "every version of every _id, in write order"
    );
}
