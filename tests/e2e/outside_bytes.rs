//! DESIGN §1.7: bytes from outside never stall the pipeline. Receivers answering bytes
//! no `text` column can hold, and an outcome the store refuses outright, are recorded
//! without holding up anyone else.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(60);
const ROWS: usize = 30;

/// An endpoint that answers every request with exactly `response` (a whole HTTP/1.1
/// response, which HTTP libraries would not let a test server write).
async fn answering(response: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let response = response.clone();
            tokio::spawn(async move {
                if read_request(&mut sock).await {
                    let _ = sock.write_all(&response).await;
                    let _ = sock.shutdown().await;
                }
            });
        }
    });
    format!("http://{addr}/hook")
}

/// Reads one request (head and `content-length` body); false if the peer went away.
async fn read_request(sock: &mut tokio::net::TcpStream) -> bool {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return true;
            }
        }
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn response_200(extra_header: &[u8], body: &[u8]) -> Vec<u8> {
    let mut r = b"HTTP/1.1 200 OK\r\nconnection: close\r\n".to_vec();
    r.extend_from_slice(extra_header);
    r.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
    r.extend_from_slice(body);
    r
}

/// Every delivery of `sub_id`, once all `n` have `status`.
async fn all_in_status(api: &Api, sub_id: &str, status: &str, n: usize) -> Vec<Value> {
    eventually(
        &format!("{n} deliveries of {sub_id} to be {status}"),
        WAIT,
        || async {
            let (_, page) = api
                .call(
                    Method::GET,
                    &format!("/v1/deliveries?subscription_id={sub_id}&status={status}&limit=100"),
                    None,
                )
                .await;
            let data = page["data"].as_array()?.clone();
            (data.len() == n).then_some(data)
        },
    )
    .await
}

async fn first_attempt(api: &Api, delivery: &Value) -> Value {
    let (status, detail) = api
        .call(
            Method::GET,
            &format!("/v1/deliveries/{}", delivery["id"]),
            None,
        )
        .await;
    assert_eq!(status, 200, "{detail}");
    detail["attempts"][0].clone()
}

async fn insert_rows(env: &Env) {
    env.source
        .connect()
        .await
        .batch_execute(&format!(
            "insert into orders (id, status) select g, 'new' from generate_series(1, {ROWS}) g"
        ))
        .await
        .unwrap();
}

/// The healthy receiver got every event exactly once: nothing was re-sent because an
/// outcome could not be recorded.
async fn assert_exactly_once(rx: &TestReceiver) {
    rx.wait_delivered(ROWS, WAIT).await;
    let requests = rx.requests();
    assert_eq!(
        requests.len(),
        ROWS,
        "each event exactly once; got {} requests for {} ids",
        requests.len(),
        rx.distinct_delivered()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_answers_are_stored_readably_and_hold_up_nobody() {
    let env = Env::new().await;
    let (relay, api, healthy, _) = env.relay_with_receiver().await;
    // (name, response, the body the API shows as text, the exact bytes)
    let cases: Vec<(&str, Vec<u8>, String, Vec<u8>)> = vec![
        (
            "nul",
            response_200(b"", b"ok\0nul"),
            "ok\u{0}nul".into(),
            b"ok\0nul".to_vec(),
        ),
        (
            "invalid utf-8",
            response_200(b"", b"bad \xff\xfe end"),
            "bad \u{FFFD}\u{FFFD} end".into(),
            b"bad \xff\xfe end".to_vec(),
        ),
        (
            "header bytes >= 0x80",
            response_200(b"x-odd: caf\xe9 \xff\r\nretry-after: \xe9\r\n", b"fine"),
            "fine".into(),
            b"fine".to_vec(),
        ),
        (
            "64 NUL bytes",
            response_200(b"", &[0u8; 64]),
            "\u{0}".repeat(64),
            vec![0u8; 64],
        ),
    ];
    let mut subs = Vec::new();
    for (name, response, text, bytes) in cases {
        let sub = api.subscribe(&answering(response).await, json!({})).await;
        subs.push((name, sub["id"].as_str().unwrap().to_owned(), text, bytes));
    }
    insert_rows(&env).await;

    assert_exactly_once(&healthy).await;
    for (name, sub_id, text, bytes) in subs {
        let done = all_in_status(&api, &sub_id, "succeeded", ROWS).await;
        let attempt = first_attempt(&api, &done[0]).await;
        assert_eq!(attempt["status_code"], 200, "{name}: {attempt}");
        assert_eq!(attempt["response_body"], text.as_str(), "{name}: {attempt}");
        use base64::Engine as _;
        assert_eq!(
            attempt["response_body_base64"],
            base64::engine::general_purpose::STANDARD.encode(&bytes),
            "{name}: {attempt}"
        );
    }
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_the_store_refuses_is_isolated_from_its_batch() {
    let env = Env::new().await;
    let (relay, api, healthy, _) = env.relay_with_receiver().await;
    // A constraint stands in for any row the store refuses (SQLSTATE 23514): every
    // attempt whose body holds "POISON" fails its whole outcome batch, whether kept as
    // an attempt row or a first success, in a receipt (sql/V17) or on its delivery's
    // row (sql/V9).
    env.store
        .connect()
        .await
        .batch_execute(
            "alter table hookrelay.attempts add constraint poison
               check (response_body is null or position('POISON'::bytea in response_body) = 0);
             create function hookrelay.no_poison(bodies bytea[]) returns bool
               language sql immutable
               as $$ select not exists (select from unnest(bodies) b
                                         where position('POISON'::bytea in b) > 0) $$;
             alter table hookrelay.receipts add constraint poison
               check (hookrelay.no_poison(bodies));
             alter table hookrelay.deliveries add constraint poison
               check (first_attempt_body is null
                      or position('POISON'::bytea in first_attempt_body) = 0)",
        )
        .await
        .unwrap();
    let poison = api
        .subscribe(&answering(response_200(b"", b"POISON")).await, json!({}))
        .await;
    let poison_id = poison["id"].as_str().unwrap();
    insert_rows(&env).await;

    assert_exactly_once(&healthy).await;
    let done = all_in_status(&api, poison_id, "succeeded", ROWS).await;
    for d in &done {
        let attempt = first_attempt(&api, d).await;
        assert_eq!(attempt["status_code"], 200, "{attempt}");
        assert!(attempt["response_body"].is_null(), "{attempt}");
        let note = attempt["error"].as_str().unwrap_or_default();
        assert!(
            note.contains("could not store") && note.contains("23514"),
            "the attempt says why its details are missing: {attempt}"
        );
    }
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_that_cannot_become_an_event_is_set_aside_not_retried_forever() {
    let env = Env::new().await;
    let (relay, _api, rx, _) = env.relay_with_receiver().await;
    let db = env.source.connect().await;
    // A journal row no reader can turn into an event, between two good changes.
    db.batch_execute(
        "insert into orders (id, status) values (1, 'before');
         insert into hookrelay.journal (source, seq, schema_name, table_name, op, after)
              values ('shop', 1000, 'public', 'orders', 'MERGE?', '{\"id\": 99}');
         insert into orders (id, status) values (2, 'after');
         -- a statement's chunk with one bad image among good ones: only it is set aside
         insert into hookrelay.journal (source, seq, schema_name, table_name, op, rows, after)
              values ('shop', 2000, 'public', 'orders', 'INSERT', 3,
                      '[{\"id\": 10}, 5, {\"id\": 12}]');
         -- a chunk that does not hold what it says: set aside whole
         insert into hookrelay.journal (source, seq, schema_name, table_name, op, rows, after)
              values ('shop', 3000, 'public', 'orders', 'INSERT', 2, '[{\"id\": 77}]');",
    )
    .await
    .unwrap();
    let got = rx.wait_delivered(4, WAIT).await;
    let mut keys: Vec<i64> = got
        .iter()
        .map(|r| r.json()["key"]["id"].as_i64().unwrap())
        .collect();
    keys.sort_unstable(); // different keys: no order between them
    assert_eq!(keys, [1, 2, 10, 12]);
    let store = relay_store(&env).await;
    let rejected = eventually("the bad changes to be set aside", WAIT, || async {
        let r = store.rejected_changes("shop", 10).await.ok()?;
        (r.len() >= 3).then_some(r)
    })
    .await;
    assert_eq!(rejected.len(), 3, "{rejected:?}");
    let find = |needle: &str| {
        rejected
            .iter()
            .find(|r| r.raw.contains(needle))
            .unwrap_or_else(|| panic!("no rejected change holding {needle}: {rejected:?}"))
    };
    // By reason and content together: a bare "99" or "77" can also turn up in another
    // rejected row's transaction id or timestamp.
    let has = |reason: &str, raw: &str| {
        rejected
            .iter()
            .any(|r| r.reason.contains(reason) && r.raw.contains(raw))
    };
    assert!(has("MERGE?", "99"), "{rejected:?}");
    let element = find("\"seq\":2001");
    assert!(element.position.contains("/2001"), "{element:?}");
    assert!(has("holds 1", "77"), "{rejected:?}");
    let left: i64 = db
        .query_one("select count(*) from hookrelay.journal", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "the journal drained past the bad row");
    relay.shutdown().await;
}

async fn relay_store(env: &Env) -> hookrelay_store::Store {
    hookrelay_store::Store::connect(&env.store.url(), 2).expect("store")
}
