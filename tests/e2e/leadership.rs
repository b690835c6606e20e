//! Source leadership across processes (DESIGN §1.11): every takeover bumps the
//! source's epoch, and the store refuses a batch or checkpoint committed under an
//! epoch that is over, so a deposed leader that comes back late never commits beside
//! the new one and a checkpoint never moves backwards.

use chrono::Utc;
use hookrelay_core::ChangeEvent;
use hookrelay_store::{Store, StoreError};

use crate::harness::*;

fn event(n: u32) -> ChangeEvent {
    ChangeEvent {
        id: format!("evt_lead{n:04}"),
        event_type: "orders.update".into(),
        source: "shop".into(),
        order_key: i64::from(n),
        committed_at: Utc::now(),
        body: format!("{{\"n\":{n}}}"),
    }
}

async fn stored_events(store: &TestDb) -> i64 {
    store
        .connect()
        .await
        .query_one(
            "select count(*) from hookrelay.events where id like 'evt_lead%'",
            &[],
        )
        .await
        .expect("count")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_under_an_epoch_that_is_over_is_refused_whole() {
    let env = Env::new().await;
    let store = Store::connect(&env.store.url(), 2).expect("store");
    store.migrate().await.expect("migrate");

    let first = store
        .try_lock_source("shop")
        .await
        .expect("lock")
        .expect("free");
    let old = first.epoch();
    store
        .commit_batch_offered("shop", &[event(1)], "10", None, Some(old))
        .await
        .expect("the leader commits");
    // Another process takes over once the first lock is gone.
    drop(first);
    let second = eventually("the lock to be free again", WAIT, || {
        let store = store.clone();
        async move { store.try_lock_source("shop").await.expect("lock") }
    })
    .await;
    assert_eq!(second.epoch(), old + 1, "a takeover bumps the epoch");
    store
        .commit_batch_offered("shop", &[event(2)], "20", None, Some(second.epoch()))
        .await
        .expect("the new leader commits");

    // The deposed leader's late batch: refused, with its events, and the checkpoint
    // stays where the new leader put it.
    let late = store
        .commit_batch_offered("shop", &[event(3)], "15", None, Some(old))
        .await;
    assert!(
        matches!(late, Err(StoreError::Fenced { epoch, .. }) if epoch == old),
        "{late:?}"
    );
    // Its checkpoint alone (an empty batch) is refused too.
    let late = store
        .commit_batch_offered("shop", &[], "16", None, Some(old))
        .await;
    assert!(matches!(late, Err(StoreError::Fenced { .. })), "{late:?}");
    let checkpoint = store.load_checkpoint("shop").await.expect("checkpoint");
    assert_eq!(checkpoint.map(|c| c.position).as_deref(), Some("20"));
    assert_eq!(
        stored_events(&env.store).await,
        2,
        "the refused event is not stored"
    );

    let leaders = store.leaders(&["shop".to_owned()]).await.expect("leaders");
    assert_eq!(leaders.len(), 1, "{leaders:?}");
    assert_eq!(leaders[0].epoch, Some(second.epoch()));
    assert!(leaders[0].confirmed_at.is_some());
}

const WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// A leader that does not notice it lost its lock (the failpoint) and commits a batch
/// after another process took over: the store refuses it, the leader steps down, and
/// the change arrives once, from the new leader.
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_leaders_late_commit_is_fenced_and_it_steps_down() {
    use hookrelay_sources::SourceState;
    use serde_json::json;

    let env = Env::new().await;
    let scenario = fail::FailScenario::setup();
    // The first lock taken (A's) is not watched.
    fail::cfg("leader.ignore_lost", "1*return").unwrap();
    let a = start_relay(env.config()).await;
    let rx = TestReceiver::start().await;
    Api::new(a.api_addr).subscribe(&rx.url, json!({})).await;
    let b = start_relay(env.config()).await;
    let state = |r: &hookrelay::Relay| r.sources()[0].1.snapshot();
    assert_eq!(state(&a).state, SourceState::Running);
    assert_eq!(state(&b).state, SourceState::Standby);
    let old = state(&a).epoch.expect("A leads under an epoch");

    // A reads the next change and holds its batch back; meanwhile its lock session
    // is ended, as a server does with a client that went silent.
    fail::cfg("source.before_commit", "1*return(6000)").unwrap();
    let db = env.source.connect().await;
    db.batch_execute("insert into orders (id, status) values (1, 'late')")
        .await
        .unwrap();
    let store_db = env.store.connect().await;
    eventually("A's lock session to be ended", WAIT, || {
        let store_db = &store_db;
        async move {
            let ended: i64 = store_db
                .query_one(
                    "select count(*) from (select pg_terminate_backend(pid) from pg_stat_activity
                      where application_name like 'hookrelay leader%'
                        and datname = current_database()) t",
                    &[],
                )
                .await
                .expect("terminate")
                .get(0);
            (ended > 0).then_some(())
        }
    })
    .await;
    eventually("B to take over", WAIT, || {
        let s = state(&b);
        async move { (s.state == SourceState::Running).then_some(s) }
    })
    .await;
    assert_eq!(state(&b).epoch, Some(old + 1));

    // A's late commit is refused and A goes back to standby.
    let a_after = eventually("A's late commit to be fenced", WAIT, || {
        let s = state(&a);
        async move { (s.fenced_commits > 0 && s.state == SourceState::Standby).then_some(s) }
    })
    .await;
    assert_eq!(a_after.fenced_commits, 1);
    assert!(a_after.notices.iter().any(|n| n.kind == "leadership_lost"));

    // The change arrives once, committed by B.
    db.batch_execute("insert into orders (id, status) values (2, 'marker')")
        .await
        .unwrap();
    let got = rx.wait_delivered(2, WAIT).await;
    assert_eq!(rx.requests().len(), 2, "each change once: {got:?}");
    assert_eq!(state(&b).state, SourceState::Running);
    let (_, sources) = Api::new(b.api_addr)
        .call(reqwest::Method::GET, "/v1/sources", None)
        .await;
    assert_eq!(sources["data"][0]["leader"]["epoch"], json!(old + 1));
    let (_, metrics) = Api::new(a.api_addr)
        .call(reqwest::Method::GET, "/metrics", None)
        .await;
    let metrics = metrics.as_str().unwrap_or_default().to_owned();
    assert_eq!(
        sample(
            &metrics,
            r#"hookrelay_source_fenced_commits_total{source="shop",kind="postgres"}"#
        ),
        Some(1.0),
        "{metrics}"
    );

    a.shutdown().await;
    b.shutdown().await;
    scenario.teardown();
}
