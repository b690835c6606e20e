//! Start-up and readiness (DESIGN §1.3): any number of sources and processes may set
//! up on one source database at the same moment without an error, `/readyz` answers
//! 200 only once every source captures, and a change committed after that arrives.

use std::{
    collections::BTreeSet,
    process::{Command, Stdio},
    time::Duration,
};

use hookrelay::Relay;
use hookrelay_core::Config;
use serde_json::{json, Value};

use crate::harness::*;

const SOURCES: usize = 5;
const WAIT: Duration = Duration::from_secs(30);

/// `/readyz` of a relay: status code and body.
async fn readyz(relay: &Relay) -> (u16, Value) {
    let resp = reqwest::get(format!("http://{}/readyz", relay.api_addr))
        .await
        .expect("readyz");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Polls `/readyz` until it answers 200.
async fn wait_ready(relay: &Relay) {
    eventually("/readyz to answer 200", WAIT, || async {
        (readyz(relay).await.0 == 200).then_some(())
    })
    .await;
}

fn last_error(relay: &Relay, source: &str) -> Option<String> {
    relay
        .sources()
        .iter()
        .find(|(name, _)| name == source)
        .and_then(|(_, s)| s.snapshot().last_error)
}

/// `SOURCES` sources on one source database, source `s<i>` watching `orders_<i>`.
fn many_sources(env: &Env) -> Config {
    let mut cfg = env.config();
    let base = cfg.sources[0].clone();
    cfg.sources = (1..=SOURCES)
        .map(|i| {
            let mut s = base.clone();
            s.name = format!("s{i}");
            s.tables = vec![format!("public.orders_{i}")];
            s
        })
        .collect();
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_sources_and_processes_start_together_without_error_or_loss() {
    for round in 0..3 {
        let env = Env::new().await;
        let db = env.source.connect().await;
        for i in 1..=SOURCES {
            db.batch_execute(&format!(
                "create table orders_{i} (id bigint primary key, status text not null)"
            ))
            .await
            .unwrap();
        }
        let cfg = many_sources(&env);
        // Two processes' worth of relays (each its own connections), started at once:
        // ten setups race on the fresh database's shared objects.
        let (a, b) = tokio::join!(Relay::start(cfg.clone()), Relay::start(cfg));
        let (a, b) = (a.expect("relay a starts"), b.expect("relay b starts"));
        let rx = TestReceiver::start().await;
        Api::new(a.api_addr)
            .subscribe(&rx.url, json!({ "event_types": ["*"] }))
            .await;
        wait_ready(&a).await;
        wait_ready(&b).await;

        // Committed after both answered ready: every one must arrive.
        for i in 1..=SOURCES {
            db.execute(
                &format!("insert into orders_{i} (id, status) values ($1, 'new')"),
                &[&(round as i64)],
            )
            .await
            .unwrap();
        }
        let got = rx.wait_delivered(SOURCES, WAIT).await;
        let tables: BTreeSet<String> = got
            .iter()
            .map(|r| r.json()["source"]["table"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(tables.len(), SOURCES, "round {round}: {tables:?}");

        for relay in [&a, &b] {
            for (name, _) in relay.sources() {
                assert_eq!(
                    last_error(relay, name),
                    None,
                    "round {round}: source {name} hit a setup error"
                );
            }
        }
        a.shutdown().await;
        b.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_naming_a_source_that_cannot_finish_setup() {
    let env = Env::new().await;
    let mut cfg = env.config();
    let mut broken = cfg.sources[0].clone();
    broken.name = "broken".into();
    broken.tables = vec!["public.missing".into()];
    cfg.sources.push(broken);
    let relay = Relay::start(cfg).await.expect("relay starts");

    eventually("source broken to fail its setup", WAIT, || async {
        last_error(&relay, "broken").map(|_| ())
    })
    .await;
    let error = last_error(&relay, "broken").unwrap_or_default();
    assert!(error.contains("public.missing"), "{error}");
    // The healthy source is capturing, the broken one holds readiness back, named.
    eventually("source shop to capture", WAIT, || async {
        relay.sources()[0].1.snapshot().is_ready().then_some(())
    })
    .await;
    let (status, body) = readyz(&relay).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        body["sources"],
        json!([{ "name": "broken", "state": "error", "ready": false }]),
        "{body}"
    );
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("broken") && !detail.contains("shop"),
        "{detail}"
    );

    // Once the table exists the source finishes its setup and readiness follows.
    env.source
        .connect()
        .await
        .batch_execute("create table missing (id bigint primary key)")
        .await
        .unwrap();
    wait_ready(&relay).await;
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setup_error_names_the_object_and_the_sqlstate() {
    let env = Env::new().await;
    // A constraint trigger under the name hookrelay's trigger needs: Postgres refuses
    // to replace it.
    env.source
        .connect()
        .await
        .batch_execute(
            "create function not_ours() returns trigger language plpgsql as $$ begin return null; end $$;
             create constraint trigger hookrelay_shop_ins after insert on orders
                for each row execute function not_ours();",
        )
        .await
        .unwrap();
    let relay = Relay::start(env.config()).await.expect("relay starts");
    let error = eventually("the setup to fail", WAIT, || async {
        last_error(&relay, "shop")
    })
    .await;
    assert!(
        error.contains("trigger hookrelay_shop_ins on public.orders")
            && error.contains("SQLSTATE 42710")
            && error.contains("is a constraint trigger")
            && !error.contains("db error"),
        "{error}"
    );
    assert_eq!(readyz(&relay).await.0, 503);
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_is_ready_only_once_the_capture_is_installed() {
    let env = Env::new().await;
    // The test plays a leader that has not installed capture yet: it holds the
    // source's leadership lock in the store.
    let leader = env.store.connect().await;
    leader
        .execute(
            "select pg_advisory_lock(hashtextextended('hookrelay.source:' || $1, 0))",
            &[&"shop"],
        )
        .await
        .unwrap();
    let b = Relay::start(env.config()).await.expect("relay b starts");
    eventually("relay b to be on standby", WAIT, || async {
        (b.sources()[0].1.snapshot().state == hookrelay_sources::SourceState::Standby).then_some(())
    })
    .await;
    let (status, body) = readyz(&b).await;
    assert_eq!(status, 503, "no trigger anywhere yet: {body}");
    assert_eq!(
        body["sources"],
        json!([{ "name": "shop", "state": "standby", "ready": false }])
    );

    // The "leader" goes away: b takes over and captures.
    drop(leader);
    wait_ready(&b).await;
    // A second process on standby is ready: b's capture is installed.
    let c = Relay::start(env.config()).await.expect("relay c starts");
    wait_ready(&c).await;
    assert_eq!(
        c.sources()[0].1.snapshot().state,
        hookrelay_sources::SourceState::Standby
    );
    c.shutdown().await;
    b.shutdown().await;
}

/// `hookrelay run` as a user starts it: one "capturing" line per source, and
/// `/readyz` 200 only after all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_logs_capturing_once_per_source() {
    let env = Env::new().await;
    let db = env.source.connect().await;
    for i in 1..=SOURCES {
        db.batch_execute(&format!(
            "create table orders_{i} (id bigint primary key, status text not null)"
        ))
        .await
        .unwrap();
    }
    let mut cfg = many_sources(&env);
    let port = free_port();
    cfg.api.listen = format!("127.0.0.1:{port}").parse().unwrap();
    let dir =
        std::env::temp_dir().join(format!("hookrelay-ready-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = write_config(&cfg, &dir);
    let log_path = dir.join("stderr.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_hookrelay"))
        .args(["run", "--config", config.to_str().unwrap()])
        .env("HOOKRELAY_MASTER_KEY", TEST_MASTER_KEY)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .expect("spawn hookrelay");
    let url = format!("http://127.0.0.1:{port}/readyz");
    let ready = tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(r) = reqwest::get(&url).await {
                if r.status() == 200 {
                    // Read the log as it stood when readiness was first answered.
                    return std::fs::read_to_string(&log_path).unwrap();
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    let log = ready.expect("hookrelay run answers /readyz 200");
    let _ = std::fs::remove_dir_all(&dir);
    for i in 1..=SOURCES {
        let lines = log
            .lines()
            .filter(|l| l.contains(&format!("source{{source=s{i}}}")) && l.contains(" capturing "))
            .count();
        assert_eq!(lines, 1, "source s{i}: {lines} capturing lines in\n{log}");
    }
    assert!(!log.contains("db error"), "{log}");
}
