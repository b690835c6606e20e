//! Row changes in every statement and transaction shape arrive with the contract's
//! envelope; rolled-back ones never do; a restart resumes from the checkpoint; a
//! large transaction is stored whole in bounded batches; `check` names every missing
//! prerequisite.

use std::{collections::HashSet, time::Duration};

use hookrelay_sources::{mysql::MysqlSource, SourceState};
use mysql_async::prelude::Queryable;
use serde_json::{json, Value};

use super::{exec, mysql_config, shop, Binlog, MariaDbInstance};
use crate::harness::*;

const WAIT: Duration = Duration::from_secs(60);

async fn create_tables(my: &MariaDbInstance) {
    let mut c = my.connect("shop").await;
    exec(
        &mut c,
        "CREATE TABLE orders (id BIGINT PRIMARY KEY, status VARCHAR(20) NOT NULL,
                              total DECIMAL(12,2) NOT NULL DEFAULT 0) ENGINE=InnoDB",
    )
    .await;
    exec(
        &mut c,
        "CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(50)) ENGINE=InnoDB",
    )
    .await;
    exec(
        &mut c,
        "CREATE TABLE unwatched (id INT PRIMARY KEY, note TEXT) ENGINE=InnoDB",
    )
    .await;
}

fn bodies_of(got: &[Received]) -> Vec<Value> {
    got.iter().map(Received::json).collect()
}

fn find<'a>(bodies: &'a [Value], ty: &str, id: i64) -> &'a Value {
    bodies
        .iter()
        .find(|b| b["type"] == ty && b["key"]["id"] == id)
        .unwrap_or_else(|| panic!("no {ty} for id {id} among {bodies:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_and_transactions_arrive_with_the_contract_envelope() {
    let my = shop().await;
    create_tables(&my).await;
    let store = TestDb::new("store").await;
    let cfg = mysql_config(
        &store.url(),
        &my.url("shop"),
        &["shop.orders", "shop.customers"],
        "",
    );
    let relay = start_relay(cfg).await;
    let api = Api::new(relay.api_addr);
    let rx = TestReceiver::start().await;
    let sub = api
        .subscribe(&rx.url, json!({ "event_types": ["*"] }))
        .await;
    let secret = sub["secret"].as_str().expect("secret").to_owned();

    let mut c = my.connect("shop").await;
    for sql in [
        "INSERT INTO orders VALUES (1, 'new', 19.9)",
        "INSERT INTO orders VALUES (2, 'new', 1), (3, 'new', 2), (4, 'new', 3)",
        "UPDATE orders SET status = 'paid' WHERE id IN (2, 3)",
        "DELETE FROM orders WHERE id = 4",
        "INSERT INTO unwatched VALUES (1, 'not sent')",
    ] {
        exec(&mut c, sql).await;
    }
    // Several tables in one transaction, an unwatched one among them.
    let mut tx = c.start_transaction(Default::default()).await.unwrap();
    tx.query_drop("INSERT INTO customers VALUES (7, 'Ann')")
        .await
        .unwrap();
    tx.query_drop("INSERT INTO unwatched VALUES (2, 'not sent')")
        .await
        .unwrap();
    tx.query_drop("UPDATE orders SET total = 5 WHERE id = 1")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // Rolled back: never in the binlog, never sent.
    let mut tx = c.start_transaction(Default::default()).await.unwrap();
    tx.query_drop("INSERT INTO orders VALUES (99, 'ghost', 0)")
        .await
        .unwrap();
    tx.query_drop("UPDATE orders SET status = 'ghost' WHERE id = 1")
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    exec(&mut c, "INSERT INTO orders VALUES (100, 'marker', 0)").await;

    // The marker commits last; events are stored in binlog order, so once it is
    // delivered, all 10 changes before it are stored.
    rx.wait_for("the marker", WAIT, |log| {
        log.iter().any(|r| r.json()["key"]["id"] == 100)
    })
    .await;
    let got = rx.wait_delivered(10, WAIT).await;
    let bodies = bodies_of(&got);
    assert_eq!(
        bodies.len(),
        10,
        "exactly the committed changes: {bodies:#?}"
    );
    assert!(bodies
        .iter()
        .all(|b| b["key"]["id"] != 99 && b["after"]["status"] != "ghost"));
    assert!(bodies.iter().all(|b| b["source"]["table"] != "unwatched"));

    let ins = find(&bodies, "orders.insert", 1);
    assert_eq!(ins["op"], "insert");
    assert_eq!(ins["before"], Value::Null);
    assert_eq!(
        ins["after"],
        json!({ "id": 1, "status": "new", "total": "19.90" })
    );
    assert_eq!(ins["key"], json!({ "id": 1 }));
    assert_eq!(
        ins["source"],
        json!({ "name": "legacy", "kind": "mysql", "database": "shop", "schema": "shop",
                "table": "orders", "position": ins["source"]["position"].clone() })
    );
    let position = ins["source"]["position"].as_str().unwrap();
    assert!(
        position.starts_with("binlog.") && position.ends_with("/0"),
        "{position}"
    );
    let gtid = ins["txn"]["id"].as_str().unwrap();
    assert!(gtid.starts_with("0-1-"), "MariaDB GTID as txn.id: {gtid}");
    for field in ["committed_at", "captured_at"] {
        let t = ins[field].as_str().unwrap();
        assert!(
            t.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(t).is_ok(),
            "{t}"
        );
    }

    // One multi-row statement: one transaction, seq in row order.
    let multi: Vec<&Value> = (2..=4)
        .map(|id| find(&bodies, "orders.insert", id))
        .collect();
    assert!(multi
        .iter()
        .all(|b| b["txn"]["id"] == multi[0]["txn"]["id"]));
    assert_eq!(
        multi
            .iter()
            .map(|b| b["txn"]["seq"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [0, 1, 2]
    );
    for id in [2, 3] {
        let upd = find(&bodies, "orders.update", id);
        assert_eq!(upd["before"]["status"], "new");
        assert_eq!(upd["after"]["status"], "paid");
    }
    let del = find(&bodies, "orders.delete", 4);
    assert_eq!(del["after"], Value::Null);
    assert_eq!(
        del["before"],
        json!({ "id": 4, "status": "new", "total": "3.00" })
    );
    assert_eq!(del["key"], json!({ "id": 4 }));

    // The multi-table transaction: one txn.id, seq in statement order, the
    // unwatched table's row taking no seq.
    let cust = find(&bodies, "customers.insert", 7);
    let upd1 = find(&bodies, "orders.update", 1);
    assert_eq!(cust["txn"]["id"], upd1["txn"]["id"]);
    assert_eq!(
        (cust["txn"]["seq"].as_u64(), upd1["txn"]["seq"].as_u64()),
        (Some(0), Some(1))
    );
    let txns: HashSet<&str> = bodies
        .iter()
        .map(|b| b["txn"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        txns.len(),
        6,
        "six committed transactions touched watched tables"
    );

    for r in &got {
        assert!(verify_signature(&secret, r), "signature of {}", r.id);
    }
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_resumes_from_the_checkpoint_without_loss() {
    let my = shop().await;
    create_tables(&my).await;
    let store = TestDb::new("store").await;
    let cfg = mysql_config(&store.url(), &my.url("shop"), &["shop.orders"], "");
    let relay = start_relay(cfg.clone()).await;
    let api = Api::new(relay.api_addr);
    let rx = TestReceiver::start().await;
    api.subscribe(&rx.url, json!({})).await;
    let mut c = my.connect("shop").await;
    exec(&mut c, "INSERT INTO orders VALUES (1, 'before-stop', 1)").await;
    rx.wait_delivered(1, WAIT).await;
    relay.shutdown().await;

    exec(&mut c, "INSERT INTO orders VALUES (2, 'while-down', 2)").await;
    exec(
        &mut c,
        "UPDATE orders SET status = 'changed-while-down' WHERE id = 1",
    )
    .await;
    exec(&mut c, "FLUSH BINARY LOGS").await; // the backlog spans two binlog files
    exec(
        &mut c,
        "INSERT INTO orders SELECT seq, 'bulk', 0 FROM seq_100_to_399",
    )
    .await;

    let relay = start_relay(cfg).await;
    let got = rx.wait_delivered(303, WAIT).await;
    let bodies = bodies_of(&got);
    find(&bodies, "orders.insert", 2);
    assert_eq!(
        find(&bodies, "orders.update", 1)["after"]["status"],
        "changed-while-down"
    );
    assert_eq!(
        bodies
            .iter()
            .filter(|b| b["after"]["status"] == "bulk")
            .count(),
        300
    );
    // Nothing read twice: the store holds each change once.
    let (status, page) = Api::new(relay.api_addr)
        .call(reqwest::Method::GET, "/v1/events?limit=500", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(page["data"].as_array().unwrap().len(), 303);
    relay.shutdown().await;
}

/// 100,000 rows in one transaction, read with batch_size 500: every row stored once,
/// `txn.seq` numbering the whole transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_row_transaction_is_stored_whole() {
    let my = shop().await;
    create_tables(&my).await;
    let store = TestDb::new("store").await;
    let relay = start_relay(mysql_config(
        &store.url(),
        &my.url("shop"),
        &["shop.orders"],
        "",
    ))
    .await;
    let mut c = my.connect("shop").await;
    let started = std::time::Instant::now();
    exec(
        &mut c,
        "INSERT INTO orders SELECT seq, 'bulk', seq / 100 FROM seq_1_to_100000",
    )
    .await;
    let db = store.connect().await;
    let count = || async {
        db.query_one(
            "select count(*), count(distinct (body::jsonb -> 'txn' ->> 'seq')), count(distinct body::jsonb -> 'txn' ->> 'id')
               from hookrelay.events where source = 'legacy'",
            &[],
        )
        .await
        .unwrap()
    };
    eventually(
        "100,000 events stored",
        Duration::from_secs(120),
        || async {
            let row = count().await;
            (row.get::<_, i64>(0) >= 100_000).then_some(())
        },
    )
    .await;
    let row = count().await;
    let rss = peak_rss_mib(std::process::id());
    println!(
        "100,000-row transaction stored in {:?}; peak RSS of the test process {rss:.1} MiB",
        started.elapsed()
    );
    // Measured: 28 MiB in chunks of 500; 213 MiB with batch_size = 100000, where the
    // reader holds the whole transaction (and the store insert gets it in one go).
    assert!(rss < 64.0, "peak RSS {rss:.1} MiB");
    assert_eq!(row.get::<_, i64>(0), 100_000);
    assert_eq!(row.get::<_, i64>(1), 100_000, "seq 0..99999");
    assert_eq!(row.get::<_, i64>(2), 1, "one transaction id");
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_every_missing_prerequisite_with_its_fix() {
    init_logs();
    let off = MariaDbInstance::start(Binlog::Off).await;
    let mut c = off.connect("mysql").await;
    for sql in [
        "CREATE DATABASE shop",
        "CREATE TABLE shop.orders (id INT PRIMARY KEY)",
        "CREATE TABLE shop.nokey (id INT, note TEXT)",
        "CREATE USER 'cdc'@'127.0.0.1' IDENTIFIED BY 'pw'",
        "GRANT SELECT ON shop.* TO 'cdc'@'127.0.0.1'",
    ] {
        exec(&mut c, sql).await;
    }
    let url = format!("mysql://cdc:pw@127.0.0.1:{}/shop", off.port);
    let cfg = mysql_config(
        "postgres://unused@127.0.0.1/x",
        &url,
        &["shop.orders", "shop.nokey", "shop.missing"],
        "",
    );
    let (problems, notes) = MysqlSource::check(&cfg.sources[0])
        .await
        .expect("the server answers");
    assert!(notes.is_empty(), "{notes:?}");
    assert_eq!(problems.len(), 8, "one entry per problem: {problems:#?}");
    let err = problems.join("\n");
    for expected in [
        "log_bin is OFF",
        "binlog_format is MIXED: SET GLOBAL binlog_format = 'ROW';",
        "binlog_row_image is MINIMAL: SET GLOBAL binlog_row_image = 'FULL';",
        "binlog_row_metadata is NO_LOG: SET GLOBAL binlog_row_metadata = 'FULL';",
        "lacks REPLICATION SLAVE",
        "GRANT REPLICATION SLAVE ON *.* TO 'cdc'@'127.0.0.1';",
        "lacks REPLICATION CLIENT",
        "table shop.nokey has no primary key",
        "table shop.missing does not exist",
    ] {
        assert!(err.contains(expected), "{expected:?} missing from:\n{err}");
    }
    assert!(!err.contains("shop.orders"), "orders is fine: {err}");
    // Fix lines name the configured user: an administrator runs them.
    assert!(!err.contains("CURRENT_USER"), "{err}");
    assert!(
        err.contains("GRANT SELECT ON `shop`.`missing` TO 'cdc'@'127.0.0.1';"),
        "{err}"
    );

    // A user the server refuses: its message, and what to run for that user.
    let denied = mysql_config(
        "postgres://unused@127.0.0.1/x",
        &format!("mysql://cdc:wrong@127.0.0.1:{}/shop", off.port),
        &["shop.orders"],
        "",
    );
    let (problems, _) = MysqlSource::check(&denied.sources[0])
        .await
        .expect("a refusal is a problem, not an error");
    assert_eq!(problems.len(), 1, "{problems:#?}");
    for expected in [
        "the server refused user cdc",
        "Access denied",
        "GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'cdc'@'%';",
        "GRANT SELECT ON `shop`.`orders` TO 'cdc'@'%';",
    ] {
        assert!(
            problems[0].contains(expected),
            "{expected:?} missing from {problems:#?}"
        );
    }

    // The same tables on a ready server, as a user with the grants: nothing to fix.
    let ready = shop().await;
    let mut c = ready.connect("mysql").await;
    for sql in [
        "CREATE TABLE shop.orders (id INT PRIMARY KEY)",
        "CREATE USER 'cdc'@'127.0.0.1' IDENTIFIED BY 'pw'",
        "GRANT SELECT, REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'cdc'@'127.0.0.1'",
    ] {
        exec(&mut c, sql).await;
    }
    let url = format!("mysql://cdc:pw@127.0.0.1:{}/shop", ready.port);
    let cfg = mysql_config("postgres://unused@127.0.0.1/x", &url, &["shop.orders"], "");
    let (problems, notes) = MysqlSource::check(&cfg.sources[0])
        .await
        .expect("the server answers");
    assert!(problems.is_empty(), "a ready server passes: {problems:?}");
    assert!(notes.is_empty(), "{notes:?}");
}

/// Binlogs purged past the checkpoint: an explicit error state, never a silent skip;
/// `on_history_lost = "restart_from_now"` goes on from the current position.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purged_history_is_an_error_unless_the_operator_chose_to_go_on() {
    let my = shop().await;
    create_tables(&my).await;
    let store = TestDb::new("store").await;
    let cfg = mysql_config(&store.url(), &my.url("shop"), &["shop.orders"], "");
    start_relay(cfg.clone()).await.shutdown().await;
    let mut c = my.connect("shop").await;
    exec(&mut c, "INSERT INTO orders VALUES (1, 'lost', 0)").await;
    exec(&mut c, "FLUSH BINARY LOGS").await;
    let first: mysql_async::Row = c.query_first("SHOW BINARY LOGS").await.unwrap().unwrap();
    let first: String = first.get(0).unwrap();
    let current: mysql_async::Row = c.query_first("SHOW MASTER STATUS").await.unwrap().unwrap();
    let current: String = current.get(0).unwrap();
    // The server keeps a file a dump thread still reads; the stopped relay's
    // connection may linger for a moment.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        exec(&mut c, &format!("PURGE BINARY LOGS TO '{current}'")).await;
        let files: Vec<mysql_async::Row> = c.query("SHOW BINARY LOGS").await.unwrap();
        if !files
            .iter()
            .any(|r| r.get::<String, _>(0).as_ref() == Some(&first))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{first} was never purged"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let relay = hookrelay::Relay::start(cfg.clone())
        .await
        .expect("relay starts");
    let status = relay.sources()[0].1.clone();
    let err = eventually("the source to report lost history", WAIT, || {
        let status = status.clone();
        async move {
            let s = status.snapshot();
            (s.state == SourceState::Retrying).then_some(s.last_error.unwrap_or_default())
        }
    })
    .await;
    assert!(
        err.contains("history lost") && err.contains("restart_from_now"),
        "{err}"
    );
    relay.shutdown().await;

    let mut cfg = cfg;
    cfg.sources[0].on_history_lost = hookrelay_core::config::OnHistoryLost::RestartFromNow;
    let relay = start_relay(cfg).await;
    let api = Api::new(relay.api_addr);
    let rx = TestReceiver::start().await;
    api.subscribe(&rx.url, json!({})).await;
    exec(&mut c, "INSERT INTO orders VALUES (2, 'after', 0)").await;
    let got = rx.wait_delivered(1, WAIT).await;
    assert_eq!(got[0].json()["key"]["id"], 2);
    relay.shutdown().await;
}

/// `kill -9` of MariaDB between writes: the reader reconnects with backoff and
/// resumes from its checkpoint; every committed change arrives once per key version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_crash_loses_nothing() {
    let mut my = shop().await;
    create_tables(&my).await;
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
    let mut c = my.connect("shop").await;
    for id in 1..=50 {
        exec(
            &mut c,
            &format!("INSERT INTO orders VALUES ({id}, 'before-crash', 0)"),
        )
        .await;
    }
    drop(c);
    my.crash_and_restart().await;
    let mut c = my.connect("shop").await;
    for id in 51..=100 {
        exec(
            &mut c,
            &format!("INSERT INTO orders VALUES ({id}, 'after-crash', 0)"),
        )
        .await;
    }
    let got = rx.wait_delivered(100, WAIT).await;
    let keys: HashSet<i64> = got
        .iter()
        .map(|r| r.json()["key"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(keys, (1..=100).collect());
    relay.shutdown().await;
}

/// ALTER TABLE while running and while stopped: each row is labelled by the columns
/// it was written with (the table map's FULL metadata), never by today's schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alter_table_mid_stream_and_while_down_labels_rows_by_their_own_columns() {
    let my = shop().await;
    create_tables(&my).await;
    let store = TestDb::new("store").await;
    let cfg = mysql_config(&store.url(), &my.url("shop"), &["shop.orders"], "");
    let relay = start_relay(cfg.clone()).await;
    let api = Api::new(relay.api_addr);
    let rx = TestReceiver::start().await;
    api.subscribe(&rx.url, json!({})).await;
    let mut c = my.connect("shop").await;
    exec(&mut c, "INSERT INTO orders VALUES (1, 'a', 1)").await;
    exec(
        &mut c,
        "ALTER TABLE orders ADD COLUMN note VARCHAR(10) NULL AFTER id",
    )
    .await;
    exec(&mut c, "INSERT INTO orders VALUES (2, 'n2', 'b', 2)").await;
    rx.wait_delivered(2, WAIT).await;
    relay.shutdown().await;

    exec(&mut c, "INSERT INTO orders VALUES (3, 'n3', 'c', 3)").await;
    exec(
        &mut c,
        "ALTER TABLE orders DROP COLUMN status, CHANGE total amount DECIMAL(12,3) NOT NULL",
    )
    .await;
    exec(&mut c, "INSERT INTO orders VALUES (4, 'n4', 4.5)").await;
    let relay = start_relay(cfg).await;
    let got = rx.wait_delivered(4, WAIT).await;
    let bodies = bodies_of(&got);
    let after = |id: i64| find(&bodies, "orders.insert", id)["after"].clone();
    assert_eq!(after(1), json!({ "id": 1, "status": "a", "total": "1.00" }));
    assert_eq!(
        after(2),
        json!({ "id": 2, "note": "n2", "status": "b", "total": "2.00" })
    );
    assert_eq!(
        after(3),
        json!({ "id": 3, "note": "n3", "status": "c", "total": "3.00" })
    );
    assert_eq!(
        after(4),
        json!({ "id": 4, "note": "n4", "amount": "4.500" })
    );
    relay.shutdown().await;
}
