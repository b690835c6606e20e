//! A backlog written while `binlog_row_metadata` was not FULL: its table maps carry no
//! column names, so its rows cannot be labelled. hookrelay refuses them with their
//! binlog position and the setting to blame, and delivers nothing it would have to
//! guess; a server still at MINIMAL is refused at setup.

use std::time::Duration;

use mysql_async::prelude::Queryable;
use reqwest::Method;
use serde_json::{json, Value};

use super::{exec, mysql_config, shop};
use crate::harness::*;

const WAIT: Duration = Duration::from_secs(60);

async fn master_offset(c: &mut mysql_async::Conn) -> (String, u64) {
    let row: mysql_async::Row = c.query_first("SHOW MASTER STATUS").await.unwrap().unwrap();
    (row.get(0).unwrap(), row.get(1).unwrap())
}

async fn source_view(api: &Api) -> Value {
    let (status, body) = api.call(Method::GET, "/v1/sources/legacy", None).await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_without_full_metadata_is_refused_with_its_position() {
    let my = shop().await;
    let mut c = my.connect("shop").await;
    exec(
        &mut c,
        "CREATE TABLE orders (id INT PRIMARY KEY, status VARCHAR(20)) ENGINE=InnoDB",
    )
    .await;
    let store = TestDb::new("store").await;
    let cfg = mysql_config(&store.url(), &my.url("shop"), &["shop.orders"], "");
    let relay = start_relay(cfg.clone()).await;
    let rx = TestReceiver::start().await;
    Api::new(relay.api_addr).subscribe(&rx.url, json!({})).await;
    exec(&mut c, "INSERT INTO orders VALUES (1, 'full')").await;
    rx.wait_delivered(1, WAIT).await;
    relay.shutdown().await;

    // While hookrelay is down, rows are written with MINIMAL metadata (a global
    // setting, read by each new session).
    exec(&mut c, "SET GLOBAL binlog_row_metadata = MINIMAL").await;
    let mut w = my.connect("shop").await;
    let (file, from) = master_offset(&mut w).await;
    exec(&mut w, "INSERT INTO orders VALUES (2, 'minimal')").await;
    let (file_after, to) = master_offset(&mut w).await;
    assert_eq!(file, file_after);
    drop(w);

    // Still MINIMAL: refused at setup, naming the setting and its fix.
    let relay = hookrelay::Relay::start(cfg.clone())
        .await
        .expect("relay starts");
    let api = Api::new(relay.api_addr);
    let view = eventually("the source to refuse a MINIMAL server", WAIT, || async {
        let v = source_view(&api).await;
        (v["state"] == "error").then_some(v)
    })
    .await;
    let err = view["last_error"].as_str().unwrap_or_default().to_owned();
    assert!(
        err.contains("binlog_row_metadata is MINIMAL")
            && err.contains("SET GLOBAL binlog_row_metadata = 'FULL'"),
        "{err}"
    );
    relay.shutdown().await;

    // FULL again, and a row written with it after the MINIMAL one: the reader still
    // meets the MINIMAL table map first, refuses it with its position and does not
    // skip past it.
    exec(&mut c, "SET GLOBAL binlog_row_metadata = FULL").await;
    let mut w = my.connect("shop").await;
    exec(&mut w, "INSERT INTO orders VALUES (3, 'full-again')").await;
    drop(w);
    let relay = hookrelay::Relay::start(cfg).await.expect("relay starts");
    let api = Api::new(relay.api_addr);
    // Refused at least twice: the retry meets the same event and refuses again.
    let view = eventually("the source to refuse the backlog", WAIT, || async {
        let v = source_view(&api).await;
        (v["state"] == "error" && v["errors"].as_u64().unwrap_or(0) >= 2).then_some(v)
    })
    .await;
    let err = view["last_error"].as_str().unwrap_or_default().to_owned();
    assert!(
        err.contains("binlog_row_metadata was not FULL") && err.contains("shop.orders"),
        "{err}"
    );
    // `change binlog.000001:<end offset of the table map>: …`, inside the insert.
    let position = err.strip_prefix("change ").unwrap_or_default();
    let (pos_file, rest) = position.split_once(':').unwrap_or_default();
    assert_eq!(pos_file, file, "{err}");
    let offset: u64 = rest
        .split(':')
        .next()
        .and_then(|o| o.parse().ok())
        .unwrap_or_else(|| panic!("no offset in {err}"));
    assert!(
        from < offset && offset < to,
        "{from} < {offset} < {to}: {err}"
    );

    // Nothing guessed, nothing skipped: only the row written with FULL metadata
    // before the MINIMAL backlog is stored (and it was delivered).
    let db = store.connect().await;
    let stored: i64 = db
        .query_one(
            "select count(*) from hookrelay.events where source = 'legacy'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 1);
    let got = rx.requests();
    assert!(
        got.iter().all(|r| r.json()["key"]["id"] == 1),
        "only row 1 was delivered"
    );
    relay.shutdown().await;
}
