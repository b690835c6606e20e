//! The whole path: committed changes in any transaction shape arrive, signed, with the
//! contract's envelope; rolled-back ones never do; nothing is lost across a stop or a
//! `kill -9`.

use std::{collections::HashSet, time::Duration};

use serde_json::json;

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_update_delete_arrive_signed_with_the_contract_envelope() {
    let env = Env::new().await;
    let (relay, api, rx, sub) = env.relay_with_receiver().await;
    let secret = sub["secret"].as_str().expect("secret").to_owned();
    assert!(secret.starts_with("whsec_"));

    let db = env.source.connect().await;
    db.batch_execute(
        "set timezone = 'Europe/Paris';
         insert into orders (id, status, total, updated_at) values (42, 'pending', 19.99, '2026-11-22 21:01:02.345+01');
         update orders set status = 'paid' where id = 42;
         delete from orders where id = 42;",
    )
    .await
    .unwrap();

    let got = rx.wait_delivered(3, WAIT).await;
    let bodies: Vec<_> = got.iter().map(|r| r.json()).collect();
    let types: Vec<&str> = bodies.iter().map(|b| b["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["orders.insert", "orders.update", "orders.delete"]);

    let ins = &bodies[0];
    assert_eq!(ins["op"], "insert");
    assert_eq!(ins["key"], json!({ "id": 42 }));
    assert_eq!(ins["before"], serde_json::Value::Null);
    assert_eq!(ins["after"]["total"], "19.99", "numeric is an exact string");
    assert_eq!(
        ins["after"]["updated_at"], "2026-11-22T20:01:02.345Z",
        "timestamps are UTC"
    );
    assert_eq!(ins["source"]["name"], "shop");
    assert_eq!(ins["source"]["kind"], "postgres");
    assert_eq!(ins["source"]["database"], env.source.name.as_str());
    assert_eq!(ins["source"]["schema"], "public");
    assert_eq!(ins["source"]["table"], "orders");
    assert!(ins["source"]["position"].is_string());
    assert!(ins["id"].as_str().unwrap().starts_with("evt_"));
    for field in ["committed_at", "captured_at"] {
        let t = ins[field].as_str().unwrap();
        assert!(
            t.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(t).is_ok(),
            "{field} = {t}"
        );
    }

    let upd = &bodies[1];
    assert_eq!(upd["before"]["status"], "pending");
    assert_eq!(upd["after"]["status"], "paid");
    let del = &bodies[2];
    assert_eq!(del["after"], serde_json::Value::Null);
    assert_eq!(del["before"]["status"], "paid");
    assert_eq!(del["key"], json!({ "id": 42 }));
    // One simple-query string is one implicit transaction: one txn id, seq 0, 1, 2.
    let txids: HashSet<_> = bodies.iter().map(|b| b["txn"]["id"].clone()).collect();
    assert_eq!(txids.len(), 1, "one transaction id");
    assert!(bodies[0]["txn"]["id"].is_string());
    let seqs: Vec<_> = bodies
        .iter()
        .map(|b| b["txn"]["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [0, 1, 2]);

    for r in &got {
        assert!(
            verify_signature(&secret, r),
            "signature of {} verifies",
            r.id
        );
        assert_eq!(
            r.id,
            r.json()["id"].as_str().unwrap(),
            "webhook-id is the event id"
        );
        assert_eq!(r.headers["content-type"], "application/json");
        assert!(r.headers["user-agent"]
            .to_str()
            .unwrap()
            .starts_with("hookrelay/"));
        let ts: i64 = r.timestamp.parse().unwrap();
        assert!((chrono::Utc::now().timestamp() - ts).abs() < 120);
    }
    // A tampered body does not verify: the check above can fail.
    let mut forged = got[0].clone();
    forged.body = axum::body::Bytes::from(forged.body.iter().rev().copied().collect::<Vec<u8>>());
    assert!(!verify_signature(&secret, &forged));

    // The stored event is the body that was sent.
    let (status, stored) = api
        .call(
            reqwest::Method::GET,
            &format!("/v1/events/{}", got[0].id),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(stored, bodies[0]);
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolled_back_changes_are_never_sent() {
    let env = Env::new().await;
    let (relay, api, rx, _sub) = env.relay_with_receiver().await;
    let mut db = env.source.connect().await;
    let tx = db.transaction().await.unwrap();
    tx.batch_execute("insert into orders (id, status) values (1, 'ghost'), (2, 'ghost')")
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    // A savepoint rolled back inside a committed transaction.
    let tx = db.transaction().await.unwrap();
    tx.batch_execute(
        "insert into orders (id, status) values (3, 'kept');
         savepoint s; insert into orders (id, status) values (4, 'ghost'); rollback to savepoint s;
         insert into orders (id, status) values (5, 'kept')",
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    // A later marker: once it arrived, everything committed before it has too.
    db.batch_execute("insert into orders (id, status) values (6, 'marker')")
        .await
        .unwrap();
    // Once the later marker is stored, everything committed before it is too (the
    // reader takes the journal in id order); rows 1, 2 and 4 never are.
    rx.wait_for("the marker", WAIT, |log| {
        log.iter().any(|r| r.json()["key"]["id"] == 6)
    })
    .await;
    let (status, page) = api
        .call(reqwest::Method::GET, "/v1/events?limit=100", None)
        .await;
    assert_eq!(status, 200);
    let mut stored: Vec<i64> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"]["id"].as_i64().unwrap())
        .collect();
    stored.sort_unstable();
    assert_eq!(stored, [3, 5, 6], "only committed changes become events");
    // Different rows may arrive in any order.
    let got = rx.wait_delivered(3, WAIT).await;
    let mut ids: Vec<i64> = got
        .iter()
        .map(|r| r.json()["key"]["id"].as_i64().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, [3, 5, 6], "only committed changes are sent");
    let seq_of = |id: i64| {
        got.iter()
            .map(|r| r.json())
            .find(|b| b["key"]["id"] == id)
            .unwrap()["txn"]["seq"]
            .as_u64()
            .unwrap()
    };
    assert!(
        seq_of(3) < seq_of(5),
        "txn.seq follows the order inside the transaction"
    );
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_row_transaction_arrives_whole() {
    let env = Env::new().await;
    let (relay, _api, rx, _sub) = env.relay_with_receiver().await;
    let db = env.source.connect().await;
    db.batch_execute(
        "insert into orders (id, status) select g, 'bulk' from generate_series(1, 10000) g",
    )
    .await
    .unwrap();
    let got = rx.wait_delivered(10_000, Duration::from_secs(180)).await;
    let keys: HashSet<i64> = got
        .iter()
        .map(|r| r.json()["key"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(keys.len(), 10_000);
    assert_eq!(keys, (1..=10_000).collect());
    let seqs: HashSet<u64> = got
        .iter()
        .map(|r| r.json()["txn"]["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        seqs,
        (0..10_000).collect(),
        "txn.seq numbers the whole transaction"
    );
    relay.shutdown().await;
}

/// Statements of many rows are journalled in chunks (see the postgres source's
/// `setup`): a single row in the one-change form, a small statement as one chunk, a
/// large one cut into chunks of 1,000. Across chunk boundaries and statements, one
/// transaction's changes keep one contiguous `txn.seq` and their commit order, per key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_statements_keep_numbering_and_order() {
    let env = Env::new().await;
    let (relay, _api, rx, _sub) = env.relay_with_receiver().await;
    relay.shutdown().await;
    let db = env.source.connect().await;
    db.batch_execute(
        "begin;
         insert into orders (id, status) select g, 'bulk' from generate_series(1, 2500) g;
         update orders set status = 'paid' where id = 2500;
         delete from orders where id <= 1200;
         insert into orders (id, status) select g, 'small' from generate_series(3001, 3040) g;
         insert into orders (id, status) values (3041, 'one');
         delete from orders where id between 3001 and 3003;
         delete from orders where id = 3041;
         commit",
    )
    .await
    .unwrap();
    let journal: Vec<(i32, Option<i32>)> = db
        .query("select seq, rows from hookrelay.journal order by id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        journal,
        [
            (0, Some(1000)),
            (1000, Some(1000)),
            (2000, Some(500)),
            (2500, None),
            (2501, Some(1000)),
            (3501, Some(200)),
            (3701, Some(40)),
            (3741, None),
            (3742, Some(3)),
            (3745, None),
        ],
        "journal rows: (first txn.seq, chunk size or none for one change)"
    );
    let relay = start_relay(env.config()).await;
    let got = rx.wait_delivered(3746, Duration::from_secs(120)).await;
    let mut seen: Vec<(u64, String, i64)> = got
        .iter()
        .map(|r| {
            let j = r.json();
            (
                j["txn"]["seq"].as_u64().unwrap(),
                j["op"].as_str().unwrap().to_owned(),
                j["key"]["id"].as_i64().unwrap(),
            )
        })
        .collect();
    seen.sort();
    let expected: Vec<(u64, String, i64)> = (1..=2500)
        .map(|k| ("insert", k))
        .chain([("update", 2500)])
        .chain((1..=1200).map(|k| ("delete", k)))
        .chain((3001..=3041).map(|k| ("insert", k)))
        .chain((3001..=3003).chain([3041]).map(|k| ("delete", k)))
        .enumerate()
        .map(|(seq, (op, k))| (seq as u64, op.to_owned(), k))
        .collect();
    assert_eq!(seen, expected, "one numbering, in statement and row order");
    // Per key, arrival follows commit order: each deleted row's insert came first.
    let mut first_seen = std::collections::HashMap::new();
    for r in &got {
        let j = r.json();
        let key = j["key"]["id"].as_i64().unwrap();
        let op = j["op"].as_str().unwrap().to_owned();
        first_seen.entry(key).or_insert(op);
    }
    assert!(first_seen.values().all(|op| op == "insert"));
    relay.shutdown().await;
}

/// Wide rows make smaller chunks: a chunk stops growing past 4 MiB of images, so no
/// statement's chunk nears PostgreSQL's 1 GB value limit (which would fail the
/// writer's statement).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wide_rows_are_journalled_in_smaller_chunks() {
    let env = Env::new().await;
    let (relay, _api, rx, _sub) = env.relay_with_receiver().await;
    relay.shutdown().await;
    let db = env.source.connect().await;
    db.batch_execute(
        "insert into orders (id, status) select g, repeat('w', 1500000) from generate_series(1, 10) g",
    )
    .await
    .unwrap();
    let chunks: Vec<(i32, i32, i32)> = db
        .query(
            "select seq, rows, octet_length(after::text) from hookrelay.journal order by id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert!(
        chunks.len() > 1,
        "one statement, several chunks: {chunks:?}"
    );
    let mut next_seq = 0;
    for &(seq, rows, bytes) in &chunks {
        assert_eq!(seq, next_seq, "chunks number the rows contiguously");
        next_seq += rows;
        assert!(bytes < 4 * 1_500_100 + 1_000, "{bytes} bytes in one chunk");
    }
    assert_eq!(next_seq, 10);

    let relay = start_relay(env.config()).await;
    let got = rx.wait_delivered(10, WAIT).await;
    let mut seqs: Vec<u64> = got
        .iter()
        .map(|r| {
            let j = r.json();
            assert_eq!(j["after"]["status"].as_str().map(str::len), Some(1_500_000));
            j["txn"]["seq"].as_u64().unwrap()
        })
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (0..10).collect::<Vec<_>>());
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_lose_nothing() {
    let env = Env::new().await;
    let (relay, _api, rx, _sub) = env.relay_with_receiver().await;
    let per_writer = 500i64;
    let mut writers = Vec::new();
    for w in 0..4i64 {
        let url = env.source.url();
        writers.push(tokio::spawn(async move {
            let db = connect(&url).await;
            for i in 0..per_writer {
                let id = w * 1_000_000 + i;
                // Mix single-row commits and small multi-statement transactions.
                if i % 10 == 0 {
                    db.batch_execute(&format!(
                        "begin; insert into orders (id, status) values ({id}, 'new'); update orders set status = 'paid' where id = {id}; commit"
                    ))
                    .await
                    .unwrap();
                } else {
                    db.execute("insert into orders (id, status) values ($1, 'new')", &[&id]).await.unwrap();
                }
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let expected = 4 * per_writer as usize + 4 * (per_writer as usize / 10);
    let got = rx.wait_delivered(expected, Duration::from_secs(120)).await;
    let ids: HashSet<&str> = got.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids.len(), expected);
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_made_while_stopped_arrive_after_restart() {
    let env = Env::new().await;
    let (relay, _api, rx, _sub) = env.relay_with_receiver().await;
    let db = env.source.connect().await;
    db.batch_execute("insert into orders (id, status) values (1, 'before-stop')")
        .await
        .unwrap();
    rx.wait_delivered(1, WAIT).await;
    relay.shutdown().await;

    db.batch_execute(
        "insert into orders (id, status) values (2, 'while-down');
         update orders set status = 'changed-while-down' where id = 1;
         insert into orders (id, status) select g, 'bulk-while-down' from generate_series(100, 399) g",
    )
    .await
    .unwrap();

    let relay = start_relay(env.config()).await;
    let got = rx.wait_delivered(303, WAIT).await;
    let statuses: HashSet<String> = got
        .iter()
        .map(|r| {
            r.json()["after"]["status"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert!(statuses.contains("while-down") && statuses.contains("changed-while-down"));
    assert_eq!(
        got.iter()
            .filter(|r| r.json()["after"]["status"] == "bulk-while-down")
            .count(),
        300
    );
    relay.shutdown().await;
}
