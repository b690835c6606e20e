//! Databases going away under load: the source restarted, the store restarted, the
//! LISTEN connection killed, and transactions committing out of journal-id order.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;

use super::{let_commit, wait_nothing_lost, Generator, PgInstance};
use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_restart_under_load_loses_nothing() {
    init_logs();
    let pg = PgInstance::start();
    pg.create_db("shop").await;
    create_orders(&connect(&pg.url("shop")).await).await;
    let store = TestDb::new("store").await;
    let relay = start_relay(relay_config(&store.url(), &pg.url("shop"))).await;
    let api = Api::new(relay.api_addr);
    let rx = TestReceiver::start().await;
    api.subscribe(&rx.url, json!({})).await;

    let gen = Generator::start(&pg.url("shop"), 4, 50);
    for _ in 0..2 {
        let_commit(&gen, 100).await;
        pg.restart_immediate();
    }
    let_commit(&gen, 100).await;
    let ledger = gen.stop().await;
    let report = wait_nothing_lost(&rx, &ledger, Duration::from_secs(120)).await;
    println!("source restarted twice: {}", report.summary());
    report.assert_clean();
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_restart_under_load_loses_nothing_and_readyz_tells() {
    init_logs();
    let pg = PgInstance::start();
    pg.create_db("store").await;
    let source = TestDb::new("src").await;
    create_orders(&source.connect().await).await;
    let relay = start_relay(relay_config(&pg.url("store"), &source.url())).await;
    let api = Api::new(relay.api_addr);
    let rx = TestReceiver::start().await;
    api.subscribe(&rx.url, json!({})).await;
    let readyz = || async {
        let resp = reqwest::get(format!("{}/readyz", api.base))
            .await
            .expect("readyz");
        resp.status().as_u16()
    };
    assert_eq!(readyz().await, 200);

    let gen = Generator::start(&source.url(), 4, 50);
    let_commit(&gen, 100).await;
    pg.crash();
    eventually(
        "/readyz to report not ready",
        Duration::from_secs(30),
        || async { (readyz().await == 503).then_some(()) },
    )
    .await;
    let_commit(&gen, 100).await; // changes keep committing to the source meanwhile
    pg.start_again();
    eventually(
        "/readyz to report ready again",
        Duration::from_secs(60),
        || async { (readyz().await == 200).then_some(()) },
    )
    .await;
    let_commit(&gen, 100).await;
    let ledger = gen.stop().await;
    let report = wait_nothing_lost(&rx, &ledger, Duration::from_secs(120)).await;
    println!("store restarted: {}", report.summary());
    report.assert_clean();
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_listen_connection_loses_no_wakeup() {
    let env = Env::new().await;
    let (relay, _api, rx, _sub) = env.relay_with_receiver().await;
    let db = env.source.connect().await;
    let killed: i64 = db
        .query_one(
            "select count(pg_terminate_backend(pid)) from pg_stat_activity
              where datname = current_database() and application_name = 'hookrelay:shop'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        killed, 1,
        "the reader's LISTEN connection was found and killed"
    );
    let committed = Instant::now();
    db.batch_execute("insert into orders (id, status) values (1, 'after-kill')")
        .await
        .unwrap();
    rx.wait_delivered(1, Duration::from_secs(30)).await;
    let took = committed.elapsed();
    // Reconnect backoff (≤ 400 ms on a first failure) + one poll interval (200 ms) +
    // delivery; generous for a loaded CI machine.
    assert!(
        took < Duration::from_secs(5),
        "delivered {took:?} after the commit"
    );
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_commits_are_both_delivered() {
    let env = Env::new().await;
    let (relay, api, rx, _sub) = env.relay_with_receiver().await;
    let mut a = env.source.connect().await;
    let b = env.source.connect().await;
    // A takes the lower journal id and stays open...
    let tx_a = a.transaction().await.unwrap();
    tx_a.execute("insert into orders (id, status) values (1, 'a')", &[])
        .await
        .unwrap();
    // ...while B takes a higher one and commits first.
    b.batch_execute("insert into orders (id, status) values (2, 'b')")
        .await
        .unwrap();
    let got = rx.wait_delivered(1, Duration::from_secs(30)).await;
    assert_eq!(got[0].json()["key"]["id"], 2);
    tx_a.commit().await.unwrap();
    let got = rx.wait_delivered(2, Duration::from_secs(30)).await;
    let ids: Vec<i64> = got
        .iter()
        .map(|r| r.json()["key"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [2, 1]);
    let journal_ids: Vec<u64> = got
        .iter()
        .map(|r| r.json()["txn"]["id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(
        journal_ids[1] < journal_ids[0],
        "A's transaction started first"
    );
    let (_, events) = api.call(Method::GET, "/v1/events", None).await;
    assert_eq!(events["data"].as_array().unwrap().len(), 2);
    relay.shutdown().await;
}

/// SIGTERM while the store is down: the process exits within `dispatch.shutdown_grace`
/// (it neither waits for the store nor retries outcomes forever), and once the store
/// is back a restarted relay delivers everything committed meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_the_store_is_down_stops_within_the_grace() {
    const GRACE: Duration = Duration::from_secs(2);
    init_logs();
    let pg = PgInstance::start();
    pg.create_db("store").await;
    let source = TestDb::new("src").await;
    create_orders(&source.connect().await).await;
    let mut cfg = relay_config(&pg.url("store"), &source.url());
    let rx = TestReceiver::start().await;
    {
        let relay = start_relay(cfg.clone()).await;
        Api::new(relay.api_addr).subscribe(&rx.url, json!({})).await;
        relay.shutdown().await;
    }
    let port = free_port();
    cfg.api.listen = format!("127.0.0.1:{port}").parse().unwrap();
    cfg.dispatch.shutdown_grace = GRACE;
    let dir =
        std::env::temp_dir().join(format!("hookrelay-term-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = write_config(&cfg, &dir);
    let mut child = spawn_run(&file);
    let readyz = || async move {
        match reqwest::get(format!("http://127.0.0.1:{port}/readyz")).await {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        }
    };
    eventually("the child to be ready", Duration::from_secs(60), || async {
        (readyz().await == 200).then_some(())
    })
    .await;
    let db = source.connect().await;
    db.batch_execute(
        "insert into orders (id, status) select g, 'before' from generate_series(1, 20) g",
    )
    .await
    .unwrap();
    rx.wait_delivered(20, Duration::from_secs(60)).await;

    pg.crash();
    db.batch_execute(
        "insert into orders (id, status) select g, 'down' from generate_series(21, 40) g",
    )
    .await
    .unwrap();
    eventually(
        "/readyz to see the store down",
        Duration::from_secs(30),
        || async { (readyz().await == 503).then_some(()) },
    )
    .await;
    let pid = child.id().to_string();
    let signalled = std::time::Instant::now();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill -TERM");
    assert!(killed.success());
    let (status, took) = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break (status, signalled.elapsed());
        }
        assert!(
            signalled.elapsed() < GRACE * 10,
            "still running {:?} after SIGTERM",
            signalled.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        took < GRACE + Duration::from_millis(1500),
        "exited {took:?} after SIGTERM; the grace is {GRACE:?}"
    );
    assert!(status.success(), "a clean exit: {status}");

    pg.start_again();
    let relay = start_relay(relay_config(&pg.url("store"), &source.url())).await;
    rx.wait_delivered(40, Duration::from_secs(60)).await;
    relay.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
