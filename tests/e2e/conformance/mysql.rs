//! Every scenario on a MariaDB source (binlog on), and what only a MySQL backfill has
//! to show: a read event carries exactly the bytes the row's insert
//! did, written under a hostile session, and a composite key with a DECIMAL part is
//! walked chunk by chunk without a row lost or repeated.

use std::{collections::BTreeMap, future::Future, pin::Pin, time::Duration};

use mysql_async::{prelude::Queryable, Conn};
use reqwest::Method;
use serde_json::{json, Value};

use super::{backfill::wait_backfill_ended, Fixture, Writer};
use crate::{
    harness::*,
    mysql::{exec, mysql_config, shop, Binlog, MariaDbInstance},
};

/// A MariaDB with binlog on and database `shop`, the table `shop.items (id bigint
/// primary key, v bigint, note text, at timestamp(3))`.
pub struct Mysql {
    my: MariaDbInstance,
}

impl Mysql {
    pub async fn new() -> Self {
        Self { my: shop().await }
    }
}

struct MyWriter(Conn);

impl Writer for MyWriter {
    fn insert(&mut self, id: i64) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            self.0
                .exec_drop(
                    "INSERT INTO items (id, v, note) VALUES (?, 0, 'new')",
                    (id,),
                )
                .await
                .expect("insert");
        })
    }

    fn bump(&mut self, id: i64) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            self.0
                .exec_drop("UPDATE items SET v = v + 1 WHERE id = ?", (id,))
                .await
                .expect("update");
        })
    }

    fn delete(&mut self, id: i64) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            self.0
                .exec_drop("DELETE FROM items WHERE id = ?", (id,))
                .await
                .expect("delete");
        })
    }
}

impl Fixture for Mysql {
    fn source_toml(&self) -> String {
        format!(
            r#"
[[sources]]
name = "src"
kind = "mysql"
url = "{}"
tables = ["shop.items"]
batch_size = 500
"#,
            self.my.url("shop")
        )
    }

    fn table(&self) -> &'static str {
        "shop.items"
    }

    fn rows_read_series(&self) -> String {
        r#"hookrelay_backfill_rows_read_total{source="src",kind="mysql"}"#.to_owned()
    }

    async fn fill(&self, n: i64) {
        let mut c = self.my.connect("shop").await;
        exec(
            &mut c,
            "CREATE TABLE items (
                id BIGINT PRIMARY KEY, v BIGINT NOT NULL, note TEXT,
                at TIMESTAMP(3) NOT NULL DEFAULT '2026-01-02 03:04:05.678') ENGINE=InnoDB",
        )
        .await;
        if n > 0 {
            exec(
                &mut c,
                &format!(
                    "INSERT INTO items (id, v, note)
                     SELECT seq, 0, CONCAT('row ', seq) FROM seq_1_to_{n}"
                ),
            )
            .await;
        }
    }

    async fn writer(&self) -> Box<dyn Writer> {
        Box::new(MyWriter(self.my.connect("shop").await))
    }

    async fn readers(&self) -> Option<i64> {
        let mut c = self.my.connect("mysql").await;
        let n: Option<i64> = c
            .query_first(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%'",
            )
            .await
            .expect("count binlog readers");
        let _ = c.disconnect().await;
        n
    }

    async fn rows(&self) -> BTreeMap<i64, i64> {
        self.my
            .connect("shop")
            .await
            .query::<(i64, i64), _>("SELECT id, v FROM items")
            .await
            .expect("read items")
            .into_iter()
            .collect()
    }
}

super::scenarios!(Mysql::new().await);

/// Rows of every type family, inserted under a hostile session (another time zone,
/// latin1 client, zero key on an AUTO_INCREMENT column) while hookrelay captures:
/// each row's read event carries exactly its insert event's `after`. The composite key
/// (tenant, DECIMAL amount, id) spans several chunks, read without loss or repeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_event_carries_the_bytes_of_the_rows_insert() {
    let my = shop().await;
    let mut c = my.connect("shop").await;
    exec(
        &mut c,
        "CREATE TABLE typed (
            tenant VARCHAR(10) NOT NULL, amount DECIMAL(12,2) NOT NULL,
            id INT NOT NULL AUTO_INCREMENT,
            f FLOAT, db DOUBLE, ts TIMESTAMP(3) NULL, dt DATETIME(6), tm TIME(6),
            e ENUM('new','paid','void'), s SET('a','b','c'), b4 BINARY(4), bt BIT(10),
            j JSON, l VARCHAR(20) CHARACTER SET latin1, u VARCHAR(20) CHARACTER SET utf8mb4,
            secret VARCHAR(20),
            gv BIGINT AS (id * 10) VIRTUAL,
            PRIMARY KEY (tenant, amount, id), KEY (id)
         ) ENGINE=InnoDB",
    )
    .await;
    let store = TestDb::new("store").await;
    let mut cfg = mysql_config(
        &store.url(),
        &my.url("shop"),
        &["shop.typed"],
        r#"exclude_columns = ["shop.typed.secret"]"#,
    );
    cfg.backfill.max_rows_per_second = 0;
    let relay = start_relay(cfg).await;
    let api = Api::new(relay.api_addr);
    let rx = TestReceiver::start().await;
    let sub = api
        .subscribe(&rx.url, json!({ "event_types": ["typed.*"] }))
        .await;

    exec(
        &mut c,
        "SET time_zone = '-09:30', NAMES latin1, sql_mode = 'NO_AUTO_VALUE_ON_ZERO'",
    )
    .await;
    exec(
        &mut c,
        "INSERT INTO typed (tenant, amount, id, f, db, ts, dt, tm, e, s, b4, bt, j, l, u, secret)
         VALUES ('a', 0.00, 0, 1.1, 0.1e0 + 0.2e0, '2026-03-29 01:30:00.125',
                 '2026-11-22 20:01:02.345600', '-100:02:03.5', 'paid', 'c,a', 'ab',
                 b'1000000101', '{\"a\": [1, 2.5e0, null], \"n\": 12345678901234567890}',
                 'café', 'Grüße', 'hidden')",
    )
    .await;
    exec(
        &mut c,
        "INSERT INTO typed (tenant, amount, id, f, ts, e, l)
         SELECT CASE seq % 3 WHEN 0 THEN 'a' WHEN 1 THEN 'b' ELSE 'c' END,
                (seq % 7) + 0.05, seq, seq / 3, FROM_UNIXTIME(1700000000 + seq), 'new', 'x'
           FROM seq_1_to_2499",
    )
    .await;
    let inserts = rx.wait_delivered(2500, Duration::from_secs(60)).await;
    let after_of = |events: &[Received], op: &str| -> BTreeMap<String, Value> {
        events
            .iter()
            .map(Received::json)
            .filter(|e| e["op"] == op)
            .map(|e| (e["key"].to_string(), e["after"].clone()))
            .collect()
    };
    let inserted = after_of(&inserts, "insert");
    assert_eq!(inserted.len(), 2500);

    let (status, bf) = api
        .call(
            Method::POST,
            &format!("/v1/subscriptions/{}/backfill", sub["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(status, 202, "{bf}");
    let ended =
        wait_backfill_ended(&api, bf["id"].as_str().unwrap(), Duration::from_secs(120)).await;
    assert_eq!(ended["state"], "completed", "{ended}");
    assert_eq!(ended["rows"], 2500, "{ended}");
    let all = rx.wait_delivered(5000, Duration::from_secs(60)).await;
    let reads: Vec<Value> = all
        .iter()
        .map(Received::json)
        .filter(|e| e["op"] == "read")
        .collect();
    assert_eq!(reads.len(), 2500, "each row read once");
    assert_eq!(reads[0]["type"], "typed.read");
    assert!(reads[0]["before"].is_null() && reads[0]["txn"].is_null());
    let read = after_of(&all, "read");
    assert_eq!(read.len(), 2500, "no key read twice");
    for (key, after) in &inserted {
        assert_eq!(read.get(key), Some(after), "row {key}");
    }
    let hostile = &read[r#"{"tenant":"a","amount":"0.00","id":0}"#];
    assert!(hostile.get("secret").is_none(), "{hostile}");
    assert_eq!(hostile["ts"], "2026-03-29T11:00:00.125Z", "{hostile}");
    relay.shutdown().await;
}

/// A user that may not write the `hookrelay` database gets a failed backfill that
/// says what to grant; capture goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_without_a_writable_hookrelay_database_fails_with_the_grant() {
    let my = shop().await;
    let mut c = my.connect("shop").await;
    exec(
        &mut c,
        "CREATE TABLE items (id BIGINT PRIMARY KEY, v BIGINT NOT NULL) ENGINE=InnoDB",
    )
    .await;
    exec(&mut c, "INSERT INTO items VALUES (1, 0), (2, 0)").await;
    exec(&mut c, "CREATE USER 'reader'@'%'").await;
    exec(
        &mut c,
        "GRANT SELECT, REPLICATION SLAVE, REPLICATION CLIENT, BINLOG MONITOR ON *.* TO 'reader'@'%'",
    )
    .await;
    let url = my.url("shop").replace("root@", "reader@");
    let store = TestDb::new("store").await;
    let relay = start_relay(mysql_config(&store.url(), &url, &["shop.items"], "")).await;
    let api = Api::new(relay.api_addr);
    let rx = TestReceiver::start().await;
    let sub = api
        .subscribe(
            &rx.url,
            json!({ "event_types": ["items.*"], "backfill": true }),
        )
        .await;
    let id = sub["backfill"]["id"].as_str().expect("backfill").to_owned();
    let ended = wait_backfill_ended(&api, &id, Duration::from_secs(60)).await;
    assert_eq!(ended["state"], "failed", "{ended}");
    let error = ended["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("GRANT") && error.contains("`hookrelay`.*") && error.contains("'reader'@"),
        "{error}"
    );
    exec(&mut c, "UPDATE items SET v = 1 WHERE id = 2").await;
    let got = rx.wait_delivered(1, Duration::from_secs(30)).await;
    assert_eq!(got[0].json()["op"], "update", "capture goes on");
    relay.shutdown().await;
}

/// A server whose binlog leaves out the `hookrelay` database: the backfill's chunk
/// never comes back, and once the reader is past where it would be, the backfill fails
/// saying what to check; capture goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_through_a_binlog_without_the_hookrelay_database_fails_with_the_hint() {
    crate::harness::init_logs();
    let my = MariaDbInstance::start(Binlog::Ignoring("hookrelay")).await;
    let mut c = my.connect("mysql").await;
    exec(&mut c, "CREATE DATABASE shop").await;
    exec(
        &mut c,
        "CREATE TABLE shop.items (id BIGINT PRIMARY KEY, v BIGINT NOT NULL) ENGINE=InnoDB",
    )
    .await;
    exec(&mut c, "INSERT INTO shop.items VALUES (1, 0), (2, 0)").await;
    let store = TestDb::new("store").await;
    let relay = start_relay(mysql_config(
        &store.url(),
        &my.url("shop"),
        &["shop.items"],
        "",
    ))
    .await;
    let api = Api::new(relay.api_addr);
    let rx = TestReceiver::start().await;
    let sub = api
        .subscribe(
            &rx.url,
            json!({ "event_types": ["items.*"], "backfill": true }),
        )
        .await;
    let id = sub["backfill"]["id"].as_str().expect("backfill").to_owned();
    // changes keep coming, so the reader passes the chunk's place in the binlog
    let ended = eventually("the backfill to end", Duration::from_secs(60), || async {
        exec(
            &mut my.connect("shop").await,
            "UPDATE items SET v = v + 1 WHERE id = 1",
        )
        .await;
        let (_, b) = api
            .call(Method::GET, &format!("/v1/backfills/{id}"), None)
            .await;
        (b["state"] != "running").then_some(b)
    })
    .await;
    assert_eq!(ended["state"], "failed", "{ended}");
    let error = ended["error"].as_str().unwrap_or_default();
    assert!(error.contains("binlog_ignore_db"), "{error}");
    let got = rx.wait_delivered(1, Duration::from_secs(30)).await;
    assert_eq!(got[0].json()["op"], "update", "capture goes on");
    relay.shutdown().await;
}

/// A long transaction holding a row of the table (changed, not yet committed) does
/// not hold the backfill back nor join it in a lock: the chunk reads the row's
/// committed state, changes of other rows keep arriving, and the held change, once
/// committed, arrives after the row's read event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_held_by_a_long_transaction_neither_blocks_nor_is_overtaken() {
    let my = shop().await;
    let mut c = my.connect("shop").await;
    exec(
        &mut c,
        "CREATE TABLE items (id BIGINT PRIMARY KEY, v BIGINT NOT NULL) ENGINE=InnoDB",
    )
    .await;
    exec(&mut c, "INSERT INTO items SELECT seq, 0 FROM seq_1_to_50").await;
    let store = TestDb::new("store").await;
    let relay = start_relay(mysql_config(
        &store.url(),
        &my.url("shop"),
        &["shop.items"],
        "",
    ))
    .await;
    let api = Api::new(relay.api_addr);
    let rx = TestReceiver::start().await;
    let sub = api
        .subscribe(&rx.url, json!({ "event_types": ["items.*"] }))
        .await;

    let mut holder = my.connect("shop").await;
    exec(&mut holder, "START TRANSACTION").await;
    exec(&mut holder, "UPDATE items SET v = 99 WHERE id = 7").await;
    exec(&mut c, "UPDATE items SET v = 1 WHERE id = 40").await;
    rx.wait_delivered(1, Duration::from_secs(30)).await;
    let (status, bf) = api
        .call(
            Method::POST,
            &format!("/v1/subscriptions/{}/backfill", sub["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(status, 202, "{bf}");
    let id = bf["id"].as_str().unwrap().to_owned();
    let ended = wait_backfill_ended(&api, &id, Duration::from_secs(60)).await;
    assert_eq!(ended["state"], "completed", "{ended}");
    assert_eq!(ended["rows"], 50, "{ended}");
    exec(&mut c, "UPDATE items SET v = 2 WHERE id = 40").await;
    rx.wait_delivered(52, Duration::from_secs(30)).await;
    exec(&mut holder, "COMMIT").await;
    let got = rx.wait_delivered(53, Duration::from_secs(30)).await;
    let of_7: Vec<(String, i64)> = got
        .iter()
        .map(Received::json)
        .filter(|e| e["key"]["id"] == 7)
        .map(|e| {
            (
                e["op"].as_str().unwrap().to_owned(),
                e["after"]["v"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        of_7,
        [("read".to_owned(), 0), ("update".to_owned(), 99)],
        "the committed state, then the held change"
    );
    relay.shutdown().await;
}
