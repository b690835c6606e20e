//! Capture scope on MariaDB: a schema glob, a table created while hookrelay runs (from
//! its first table map), excluded columns never decoded nor stored, a matching table
//! without a key skipped with a notice, a dropped table no longer listed.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use super::{exec, mysql_config, shop};
use crate::harness::*;

const WAIT: Duration = Duration::from_secs(60);

async fn tables_of(api: &Api) -> Value {
    let (status, body) = api.call(Method::GET, "/v1/sources/legacy", None).await;
    assert_eq!(status, 200, "{body}");
    body["tables"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_glob_captures_new_tables_and_excluded_columns_are_never_decoded() {
    let my = shop().await;
    let mut c = my.connect("shop").await;
    exec(
        &mut c,
        "CREATE TABLE users (id INT PRIMARY KEY, email VARCHAR(50), password_hash VARCHAR(50), ssn VARCHAR(20)) ENGINE=InnoDB",
    )
    .await;
    exec(&mut c, "CREATE TABLE nopk (a INT) ENGINE=InnoDB").await;
    let store = TestDb::new("store").await;
    let cfg = mysql_config(
        &store.url(),
        &my.url("shop"),
        &["shop.*"],
        r#"exclude_columns = ["shop.users.password_hash", "*.*.ssn"]"#,
    );
    let relay = start_relay(cfg).await;
    let api = Api::new(relay.api_addr);
    let rx = TestReceiver::start().await;
    api.subscribe(&rx.url, json!({ "event_types": ["*"] }))
        .await;

    let (_, legacy) = api.call(Method::GET, "/v1/sources/legacy", None).await;
    assert_eq!(legacy["state"], "running", "{legacy}");
    assert_eq!(
        legacy["tables"],
        json!({
            "captured": ["shop.users"],
            "skipped": [{"table": "shop.nopk", "reason": "it has no primary key; hookrelay needs one for the event key and per-key ordering"}],
        })
    );
    let notices: Vec<&str> = legacy["notices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["kind"].as_str().unwrap())
        .collect();
    assert_eq!(notices, ["skipped"], "{legacy}");

    for sql in [
        "INSERT INTO users VALUES (1, 'a@x', 'HASH-1', 'SSN-1')",
        "UPDATE users SET email = 'b@x' WHERE id = 1",
        "DELETE FROM users WHERE id = 1",
        "INSERT INTO nopk VALUES (1)",
        // Created while hookrelay runs, written at once.
        "CREATE TABLE late (id INT PRIMARY KEY, v VARCHAR(20), ssn VARCHAR(20)) ENGINE=InnoDB",
        "INSERT INTO late VALUES (1, 'first', 'SSN-L1')",
        "INSERT INTO late VALUES (2, 'second', 'SSN-L2')",
    ] {
        exec(&mut c, sql).await;
    }
    let got = rx.wait_delivered(5, WAIT).await;
    let mut events: Vec<Value> = got.iter().map(Received::json).collect();
    events.dedup_by(|a, b| a["id"] == b["id"]);
    // Binlog order: the position's offset grows with each row event.
    events.sort_by_key(|e| {
        let pos = e["source"]["position"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let (file, rest) = pos.split_once(':').unwrap_or_default();
        let (offset, row) = rest.split_once('/').unwrap_or_default();
        (
            file.to_owned(),
            offset.parse::<u64>().unwrap_or_default(),
            row.parse::<u64>().unwrap_or_default(),
        )
    });
    let shape: Vec<(String, Value, Value, Value)> = events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_owned(),
                e["key"].clone(),
                e["before"].clone(),
                e["after"].clone(),
            )
        })
        .collect();
    assert_eq!(
        shape,
        [
            (
                "users.insert".to_owned(),
                json!({"id": 1}),
                json!(null),
                json!({"id": 1, "email": "a@x"})
            ),
            (
                "users.update".to_owned(),
                json!({"id": 1}),
                json!({"id": 1, "email": "a@x"}),
                json!({"id": 1, "email": "b@x"})
            ),
            (
                "users.delete".to_owned(),
                json!({"id": 1}),
                json!({"id": 1, "email": "b@x"}),
                json!(null)
            ),
            (
                "late.insert".to_owned(),
                json!({"id": 1}),
                json!(null),
                json!({"id": 1, "v": "first"})
            ),
            (
                "late.insert".to_owned(),
                json!({"id": 2}),
                json!(null),
                json!({"id": 2, "v": "second"})
            ),
        ],
        "{events:#?}"
    );
    let bodies: Vec<String> = store
        .connect()
        .await
        .query("select body from hookrelay.events", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(bodies.len(), 5);
    for body in &bodies {
        for secret in ["HASH-", "SSN-", "password_hash", "\"ssn\""] {
            assert!(!body.contains(secret), "{secret} in {body}");
        }
    }

    eventually("the new table listed", WAIT, || async {
        let t = tables_of(&api).await;
        (t["captured"] == json!(["shop.late", "shop.users"])).then_some(())
    })
    .await;
    exec(&mut c, "DROP TABLE late").await;
    eventually("the dropped table no longer listed", WAIT, || async {
        let t = tables_of(&api).await;
        (t["captured"] == json!(["shop.users"])).then_some(())
    })
    .await;
    relay.shutdown().await;
}
