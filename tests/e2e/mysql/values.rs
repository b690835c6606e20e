//! Golden values from a real server (DESIGN §1.3), written under a non-UTC session
//! time zone: the JSON must not depend on the writer's session. Generated columns
//! arrive like any other: with `binlog_row_image = FULL`, MariaDB 10.11 logs the
//! values of STORED *and* VIRTUAL generated columns (`gs`, `gv`).

use std::time::Duration;

use serde_json::{json, Value};

use super::{exec, mysql_config, shop};
use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_family_maps_exactly() {
    let my = shop().await;
    let mut c = my.connect("shop").await;
    exec(
        &mut c,
        "CREATE TABLE vals (
            id INT PRIMARY KEY,
            d DECIMAL(12,2), dn DECIMAL(5,3),
            bu BIGINT UNSIGNED, bi BIGINT, small BIGINT, ti TINYINT, tu TINYINT UNSIGNED,
            mi MEDIUMINT, iu INT UNSIGNED,
            f FLOAT, db DOUBLE,
            dt DATETIME(6), dt0 DATETIME, ts TIMESTAMP(3) NULL, ts0 TIMESTAMP NULL,
            dd DATE, tm TIME(6), y YEAR,
            e ENUM('new','paid','void'), s SET('a','b','c'),
            b4 BINARY(4), vb VARBINARY(10), bl BLOB,
            j JSON,
            u VARCHAR(50) CHARACTER SET utf8mb4, ch CHAR(5), l VARCHAR(20) CHARACTER SET latin1,
            bt BIT(10),
            n INT NULL,
            gv BIGINT AS (id * 10) VIRTUAL,
            gs DECIMAL(13,2) AS (d * 2) STORED
         ) ENGINE=InnoDB",
    )
    .await;
    let store = TestDb::new("store").await;
    let relay = start_relay(mysql_config(
        &store.url(),
        &my.url("shop"),
        &["shop.vals"],
        "",
    ))
    .await;
    let api = Api::new(relay.api_addr);
    let rx = TestReceiver::start().await;
    api.subscribe(&rx.url, json!({ "event_types": ["vals.*"] }))
        .await;

    exec(&mut c, "SET time_zone = '+05:30', NAMES utf8mb4").await;
    exec(
        &mut c,
        "INSERT INTO vals VALUES (1,
            19.9, -0.5,
            18446744073709551615, -9223372036854775808, 9007199254740992, -128, 255,
            -8388608, 4294967295,
            1.1, 0.1e0 + 0.2e0,
            '2026-11-22 20:01:02.345600', '2026-11-22 20:01:02', '2026-11-23 01:31:02.125', '2026-11-23 01:31:02',
            '2026-02-03', '-100:02:03.5', 2024,
            'paid', 'c,a',
            'ab', X'00FF', X'DEADBEEF',
            '{\"a\": [1, 2.5, null], \"b\": {\"c\": \"x\"}}',
            'Grüße 🎉', 'ab   ', 'café',
            b'1000000101',
            NULL,
            DEFAULT, DEFAULT)",
    )
    .await;
    exec(&mut c, "INSERT INTO vals (id) VALUES (2)").await;

    let got = rx.wait_delivered(2, Duration::from_secs(60)).await;
    let row = |id: i64| -> Value {
        got.iter()
            .map(Received::json)
            .find(|b| b["key"]["id"] == id)
            .unwrap_or_else(|| panic!("row {id}"))["after"]
            .clone()
    };
    let want = json!({
        "id": 1,
        "d": "19.90", "dn": "-0.500",
        "bu": "18446744073709551615", "bi": "-9223372036854775808", "small": 9007199254740992_i64,
        "ti": -128, "tu": 255, "mi": -8388608, "iu": 4294967295_u64,
        "f": 1.1, "db": 0.30000000000000004,
        "dt": "2026-11-22T20:01:02.345600Z", "dt0": "2026-11-22T20:01:02Z",
        "ts": "2026-11-22T20:01:02.125Z", "ts0": "2026-11-22T20:01:02Z",
        "dd": "2026-02-03", "tm": "-100:02:03.500000", "y": 2024,
        "e": "paid", "s": "a,c",
        "b4": "YWIAAA==", "vb": "AP8=", "bl": "3q2+7w==",
        "j": { "a": [1, 2.5, null], "b": { "c": "x" } },
        "u": "Grüße 🎉", "ch": "ab", "l": "café",
        "bt": "1000000101",
        "n": null,
        "gv": 10, "gs": "39.80"
    });
    let have = row(1);
    for (k, v) in want.as_object().unwrap() {
        assert_eq!(&have[k], v, "column {k}: {have}");
    }
    assert_eq!(
        have.as_object().unwrap().len(),
        want.as_object().unwrap().len()
    );
    // FLOAT keeps its shortest single-precision form in the raw body, not 1.100000023841858.
    let body = std::str::from_utf8(
        &got.iter()
            .find(|r| r.json()["key"]["id"] == 1)
            .unwrap()
            .body,
    )
    .unwrap()
    .to_owned();
    assert!(body.contains("\"f\":1.1,"), "{body}");
    // Row 2 gave only its id: every other column NULL, except the VIRTUAL column,
    // which MariaDB computes and logs (20 = id * 10); the STORED one follows d (NULL).
    let nulls = row(2);
    assert_eq!(nulls["gv"], 20, "{nulls}");
    assert!(
        nulls
            .as_object()
            .unwrap()
            .iter()
            .all(|(k, v)| k == "id" || k == "gv" || v.is_null()),
        "{nulls}"
    );
    relay.shutdown().await;
}

/// A JSON column's numbers arrive as stored, digit for digit: big integers, long
/// decimals, exponents, negative zero, nested arrays of them. (MariaDB keeps JSON as
/// text; parsed into an f64, `12345678901234567890.5` became `1.2345678901234567e19`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_numbers_arrive_as_written() {
    let my = shop().await;
    let mut c = my.connect("shop").await;
    exec(&mut c, "CREATE TABLE docs (id INT PRIMARY KEY, j JSON)").await;
    let store = TestDb::new("store").await;
    let relay = start_relay(mysql_config(
        &store.url(),
        &my.url("shop"),
        &["shop.docs"],
        "",
    ))
    .await;
    let api = Api::new(relay.api_addr);
    let rx = TestReceiver::start().await;
    api.subscribe(&rx.url, json!({ "event_types": ["docs.*"] }))
        .await;

    let stored = r#"{"big": 12345678901234567890.5,
        "ints": [123456789012345678901234567890, -9223372036854775809, 18446744073709551616],
        "long": 0.1000000000000000055511151231257827021181583404541015625,
        "exp": [1e400, 1E-7, 2.50e+3, -1.0e-0],
        "zero": [-0, -0.0, 0.00],
        "nested": [[1, [2.000, [3.14159265358979323846264338327950288]]], []]}"#;
    exec(&mut c, &format!("INSERT INTO docs VALUES (1, '{stored}')")).await;
    let got = rx.wait_delivered(1, Duration::from_secs(60)).await;
    let body = std::str::from_utf8(&got[0].body).expect("utf-8").to_owned();
    let want = concat!(
        r#""j":{"big":12345678901234567890.5,"#,
        r#""ints":[123456789012345678901234567890,-9223372036854775809,18446744073709551616],"#,
        r#""long":0.1000000000000000055511151231257827021181583404541015625,"#,
        r#""exp":[1e400,1E-7,2.50e+3,-1.0e-0],"#,
        r#""zero":[-0,-0.0,0.00],"#,
        r#""nested":[[1,[2.000,[3.14159265358979323846264338327950288]]],[]]}"#,
    );
    assert!(body.contains(want), "{body}");
    relay.shutdown().await;
}
