//! Memory stays bounded when work piles up (DESIGN §1.1.4): a dead endpoint with a
//! large backlog, and one huge transaction. hookrelay runs as a child process so its
//! own peak RSS can be read. Short sizes in CI; `FAULTS_LONG=1` uses
//! 1,000,000.

use std::{
    collections::HashMap,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::json;

use super::long_mode;
use crate::harness::*;

const BIN: &str = env!("CARGO_BIN_EXE_hookrelay");
/// The bound the contract's "bounded memory" is held to here.
const RSS_LIMIT_MIB: f64 = 128.0;

struct Child9 {
    child: Child,
    api: Api,
    _dir: std::path::PathBuf,
}

impl Drop for Child9 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

async fn spawn_relay(env: &Env, per_subscription: usize) -> Child9 {
    let mut cfg = env.config();
    let port = free_port();
    cfg.api.listen = format!("127.0.0.1:{port}").parse().unwrap();
    cfg.dispatch.workers = 64;
    cfg.dispatch.per_subscription = per_subscription;
    cfg.dispatch.max_attempts = 1000;
    cfg.sources[0].batch_size = 2000;
    let dir = std::env::temp_dir().join(format!(
        "hookrelay-backlog-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = write_config(&cfg, &dir);
    let child = Command::new(BIN)
        .args(["run", "--config", path.to_str().unwrap()])
        .env("HOOKRELAY_MASTER_KEY", TEST_MASTER_KEY)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn hookrelay");
    let api = Api::new(format!("127.0.0.1:{port}").parse().unwrap());
    eventually("the child's API", Duration::from_secs(30), || async {
        reqwest::get(format!("{}/healthz", api.base))
            .await
            .ok()
            .filter(|r| r.status() == 200)
            .map(|_| ())
    })
    .await;
    // The source has installed its trigger once its checkpoint row exists or the
    // journal table does; wait for the trigger itself.
    let db = env.source.connect().await;
    eventually("the capture trigger", Duration::from_secs(30), || async {
        let n: i64 = db
            .query_one(
                "select count(*) from pg_trigger where tgname = 'hookrelay_shop_ins'",
                &[],
            )
            .await
            .ok()?
            .get(0);
        (n == 1).then_some(())
    })
    .await;
    Child9 {
        child,
        api,
        _dir: dir,
    }
}

async fn count(db: &tokio_postgres::Client, sql: &str) -> i64 {
    db.query_one(sql, &[]).await.expect(sql).get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_endpoint_backlog_drains_in_key_order_with_bounded_memory() {
    let n: i64 = if long_mode() { 1_000_000 } else { 3_000 };
    let env = Env::new().await;
    let relay = spawn_relay(&env, 8).await;
    let port = free_port(); // the endpoint is down: nothing listens here yet
    let url = format!("http://127.0.0.1:{port}/hook");
    relay.api.subscribe(&url, json!({})).await;

    let db = env.source.connect().await;
    db.batch_execute(&format!(
        "insert into orders (id, status) select g, 'backlog' from generate_series(1, {n}) g;
         update orders set version = 1 where id % 10 = 0;"
    ))
    .await
    .unwrap();
    let expected = n + n / 10;
    let store = env.store.connect().await;
    eventually(
        "the backlog to be stored",
        Duration::from_secs(600),
        || async { (count(&store, DELIVERIES_STORED).await == expected).then_some(()) },
    )
    .await;
    let rss_backlog = peak_rss_mib(relay.child.id());

    // The endpoint comes back.
    let started = Instant::now();
    let rx = TestReceiver::scripted_on(port, Arc::new(|_, _| Reply::ok())).await;
    rx.wait_delivered(expected as usize, Duration::from_secs(1200))
        .await;
    let drain = started.elapsed();
    let rss_peak = peak_rss_mib(relay.child.id());
    println!(
        "backlog of {expected}: peak RSS {rss_backlog:.1} MiB while down, {rss_peak:.1} MiB after draining in {drain:.1?} \
         ({:.0} events/s); max concurrent requests {}",
        expected as f64 / drain.as_secs_f64(),
        rx.max_concurrency()
    );
    // Per-key order held through the outage: version 0 before version 1 for every key.
    let mut seen: HashMap<i64, i64> = HashMap::new();
    let mut ok = rx.delivered();
    ok.sort_by_key(|r| r.at);
    for r in &ok {
        let b = r.json();
        let (k, v) = (
            b["key"]["id"].as_i64().unwrap(),
            b["after"]["version"].as_i64().unwrap(),
        );
        if let Some(prev) = seen.insert(k, v) {
            assert!(prev < v, "key {k}: version {v} after {prev}");
        }
    }
    assert_eq!(seen.len() as i64, n);
    assert!(
        rx.max_concurrency() <= 8,
        "per-subscription concurrency exceeded: {}",
        rx.max_concurrency()
    );
    assert!(rss_peak < RSS_LIMIT_MIB, "peak RSS {rss_peak:.1} MiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_huge_transaction_arrives_whole_with_bounded_memory() {
    let n: i64 = if long_mode() { 1_000_000 } else { 20_000 };
    let env = Env::new().await;
    let relay = spawn_relay(&env, 32).await;
    let rx = TestReceiver::start().await;
    relay.api.subscribe(&rx.url, json!({})).await;
    let db = env.source.connect().await;
    let started = Instant::now();
    db.batch_execute(&format!(
        "insert into orders (id, status) select g, 'huge' from generate_series(1, {n}) g"
    ))
    .await
    .unwrap();
    let got = rx
        .wait_delivered(n as usize, Duration::from_secs(1800))
        .await;
    let took = started.elapsed();
    let rss = peak_rss_mib(relay.child.id());
    println!(
        "one transaction of {n} rows: delivered in {took:.1?} ({:.0} events/s), peak RSS {rss:.1} MiB",
        n as f64 / took.as_secs_f64()
    );
    let txids: std::collections::HashSet<String> = got
        .iter()
        .map(|r| r.json()["txn"]["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(txids.len(), 1);
    assert!(rss < RSS_LIMIT_MIB, "peak RSS {rss:.1} MiB");
}
