//! A leader cut off by a silent network partition (DESIGN §1.11): another process takes
//! over within 30 s, nothing is lost, per-key order holds, and once the network heals
//! exactly one process leads.
//!
//! ```text
//!   host: writer, receiver, process B ── 127.0.0.1 ──┬─ store PostgreSQL
//!                                                    └─ source PostgreSQL
//!   namespace: process A ══ link 0 (veth) ══ store PostgreSQL   (host end's address)
//!                        ══ link 1 (veth) ══ source PostgreSQL  (host end's address)
//!                        ══ link 0 ══ receiver
//! ```
//!
//! A starts first and leads; B waits on standby. Cutting a link takes its namespace
//! end down: the host's packets stop arriving with no RST and no FIN, as when a host
//! dies or a switch fails. A takeover is seen in the store, where an event committed at
//! the source after the cut can only have been captured by B (A cannot reach the
//! source), and in B's `/v1/sources` (running, with events it captured). The tests
//! need `ip netns` (root); elsewhere they say SKIPPED and return.

use std::{
    path::{Path, PathBuf},
    process::Child,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use hookrelay_core::Config;
use serde_json::{json, Value};

use super::{let_commit, netns::Netns, wait_nothing_lost, Generator, PgInstance};
use crate::harness::*;

/// DESIGN §1.11: a cut-off leader is replaced within this.
const TAKEOVER_BOUND: Duration = Duration::from_secs(30);
/// How long the partition lasts: longer than the bound, so a takeover has to happen
/// while the old leader is still cut off.
const CUT_LENGTH: Duration = Duration::from_secs(40);
const STORE_LINK: usize = 0;
const SOURCE_LINK: usize = 1;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_everything_is_replaced_within_30s() {
    partition_scenario("whole-machine cut", &[STORE_LINK, SOURCE_LINK]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_its_source_only_is_replaced_within_30s() {
    partition_scenario("source-only cut", &[SOURCE_LINK]).await;
}

async fn partition_scenario(what: &str, cut: &[usize]) {
    init_logs();
    let ns = match Netns::create(2) {
        Ok(ns) => ns,
        Err(e) => {
            eprintln!(
                "SKIPPED: partition test ({what}) needs ip netns (root / CAP_NET_ADMIN): {e}"
            );
            return;
        }
    };
    let cluster = Cluster::start(ns).await;
    let store = connect(&cluster.store_pg.url("store")).await;
    let leader = lock_holders(&store).await;
    assert!(
        leader.len() == 1 && leader[0].ends_with(&format!("-{}", cluster.a.pid())),
        "A leads before the cut: {leader:?}"
    );

    let gen = Generator::paced(
        &cluster.source_pg.url("shop"),
        2,
        50,
        Duration::from_millis(50),
    );
    let_commit(&gen, 100).await;
    // Changes flow (captured by A) before the cut.
    cluster.rx.wait_delivered(50, Duration::from_secs(60)).await;

    for &link in cut {
        cluster.ns.cut(link);
    }
    // Taken once the links are down: a change whose trigger ran after this cannot
    // have reached A.
    let cut_at: DateTime<Utc> = Utc::now();
    let cut_started = Instant::now();
    eprintln!("{what}: cut at {cut_at}");

    let took = takeover(&cluster, &store, cut_at, cut_started).await;
    let holders = lock_holders(&store).await;
    println!("{what}: takeover {took:?} after the cut; the source lock is now held by {holders:?}");

    tokio::time::sleep_until((cut_started + CUT_LENGTH).into()).await;
    for &link in cut {
        cluster.ns.heal(link);
    }
    eprintln!("{what}: healed after {:?}", cut_started.elapsed());
    let_commit(&gen, 50).await;
    let ledger = gen.stop().await;

    let report = wait_nothing_lost(&cluster.rx, &ledger, Duration::from_secs(120)).await;
    println!("{what}: {}", report.summary());
    report.assert_clean();

    let leader = one_leader_after_healing(&cluster, &store).await;
    println!("{what}: after healing, {leader} leads");
}

/// How long after the cut a change committed after the cut reached the store, once
/// B also reports that it captured events.
async fn takeover(
    cluster: &Cluster,
    store: &tokio_postgres::Client,
    cut_at: DateTime<Utc>,
    cut: Instant,
) -> Duration {
    let mut reached_store = None;
    loop {
        if reached_store.is_none() {
            let captured: i64 = store
                .query_one(
                    "select count(*) from hookrelay.events
                      where source = 'shop' and committed_at > $1",
                    &[&cut_at],
                )
                .await
                .expect("count events after the cut")
                .get(0);
            if captured > 0 {
                reached_store = Some(cut.elapsed());
            }
        }
        let b = cluster.b.source_view().await;
        let b_captured = b
            .as_ref()
            .is_some_and(|v| v["state"] == "running" && v["events_captured"].as_u64() > Some(0));
        if let (Some(took), true) = (reached_store, b_captured) {
            return took;
        }
        if cut.elapsed() > TAKEOVER_BOUND {
            let holders = lock_holders(store).await;
            panic!(
                "no takeover within {TAKEOVER_BOUND:?}: a change committed after the cut reached \
                 the store: {}; B's /v1/sources: {}; the source lock is held by {holders:?} \
                 (A is pid {}, B is pid {})",
                reached_store.map_or("no".to_owned(), |t| format!("after {t:?}")),
                shown(&b),
                cluster.a.pid(),
                cluster.b.pid(),
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls until exactly one of A and B reports `running` in its `/v1/sources`, it is
/// the leader it names, and it holds the store's only lock on the source. Returns
/// which one.
async fn one_leader_after_healing(
    cluster: &Cluster,
    store: &tokio_postgres::Client,
) -> &'static str {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let a = cluster.a.source_view().await;
        let b = cluster.b.source_view().await;
        let holders = lock_holders(store).await;
        let running: Vec<&RelayProcess> = [(&cluster.a, &a), (&cluster.b, &b)]
            .into_iter()
            .filter(|(_, v)| v.as_ref().is_some_and(|v| v["state"] == "running"))
            .map(|(p, _)| p)
            .collect();
        if let [only] = running[..] {
            let view = if only.who == "A" { &a } else { &b };
            let names_itself = view
                .as_ref()
                .is_some_and(|v| v["leader"]["is_this_process"] == true);
            let holds_lock =
                holders.len() == 1 && holders[0].ends_with(&format!("-{}", only.pid()));
            if names_itself && holds_lock {
                return only.who;
            }
        }
        if Instant::now() > deadline {
            panic!(
                "after healing, not exactly one leader: A's /v1/sources {}, B's {}, \
                 store lock holders {holders:?}",
                shown(&a),
                shown(&b),
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A process's view of the source as JSON, for a failure message.
fn shown(view: &Option<Value>) -> String {
    view.as_ref()
        .map_or("(no answer)".to_owned(), |v| v.to_string())
}

/// The `application_name` of every session holding the source's leadership lock.
async fn lock_holders(store: &tokio_postgres::Client) -> Vec<String> {
    store
        .query(
            "select a.application_name
               from pg_locks l join pg_stat_activity a on a.pid = l.pid
              where l.locktype = 'advisory' and l.granted and l.objsubid = 1
                and l.database = (select oid from pg_database where datname = current_database())
                and l.classid = ((hashtextextended('hookrelay.source:shop', 0) >> 32) & 4294967295)::oid
                and l.objid = (hashtextextended('hookrelay.source:shop', 0) & 4294967295)::oid",
            &[],
        )
        .await
        .expect("lock holders")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Everything one scenario runs. Fields drop in order: the processes first, then the
/// namespace they ran in, then the databases.
struct Cluster {
    a: RelayProcess,
    b: RelayProcess,
    rx: TestReceiver,
    ns: Netns,
    store_pg: PgInstance,
    source_pg: PgInstance,
    _dir: TempDir,
}

impl Cluster {
    /// Both databases, the receiver, A leading from inside the namespace with a
    /// subscription to the receiver, and B on standby outside.
    async fn start(ns: Netns) -> Self {
        let (store_link, source_link) = (&ns.links[STORE_LINK], &ns.links[SOURCE_LINK]);
        let store_pg = PgInstance::start_also_on(&[store_link.host_ip.into()], &[&store_link.net]);
        store_pg.create_db("store").await;
        let source_pg =
            PgInstance::start_also_on(&[source_link.host_ip.into()], &[&source_link.net]);
        source_pg.create_db("shop").await;
        create_orders(&connect(&source_pg.url("shop")).await).await;
        let rx = TestReceiver::scripted_at(
            store_link.host_ip.into(),
            0,
            std::sync::Arc::new(|_, _| Reply::ok()),
        )
        .await;
        let dir = TempDir::new();

        // A reaches both databases and the receiver over the links only.
        let mut cfg_a = relay_config(
            &store_pg.url_via(store_link.host_ip.into(), "store"),
            &source_pg.url_via(source_link.host_ip.into(), "shop"),
        );
        cfg_a.api.listen = (store_link.ns_ip, 8080).into();
        allow_receiver(&mut cfg_a, &store_link.net);
        let a = RelayProcess::spawn("A", &cfg_a, &dir.0, Some(&ns));
        eventually("A to lead the source", Duration::from_secs(60), || async {
            a.source_view()
                .await
                .is_some_and(|v| v["state"] == "running")
                .then_some(())
        })
        .await;
        Api::new(cfg_a.api.listen)
            .subscribe(&rx.url, json!({}))
            .await;

        let mut cfg_b = relay_config(&store_pg.url("store"), &source_pg.url("shop"));
        cfg_b.api.listen = ([127, 0, 0, 1], free_port()).into();
        allow_receiver(&mut cfg_b, &store_link.net);
        let b = RelayProcess::spawn("B", &cfg_b, &dir.0, None);
        eventually("B to wait on standby", Duration::from_secs(60), || async {
            b.source_view()
                .await
                .is_some_and(|v| v["state"] == "standby" && v["ready"] == true)
                .then_some(())
        })
        .await;
        Self {
            a,
            b,
            rx,
            ns,
            store_pg,
            source_pg,
            _dir: dir,
        }
    }
}

/// The receiver listens on the store link's host address, which both processes reach.
fn allow_receiver(cfg: &mut Config, net: &str) {
    cfg.dispatch
        .allow_networks
        .push(net.parse().expect("link network"));
}

/// `hookrelay run` as a child process (inside the namespace or not), its log in a
/// file; killed when dropped, with the log's tail shown if the test failed.
struct RelayProcess {
    who: &'static str,
    child: Child,
    log: PathBuf,
    api: String,
    http: reqwest::Client,
}

impl RelayProcess {
    fn spawn(who: &'static str, cfg: &Config, dir: &Path, ns: Option<&Netns>) -> Self {
        let own = dir.join(who);
        std::fs::create_dir_all(&own).expect("process dir");
        let file = write_config(cfg, &own);
        let log = own.join("hookrelay.log");
        let out = std::fs::File::create(&log).expect("log file");
        let exe = env!("CARGO_BIN_EXE_hookrelay");
        let mut cmd = match ns {
            Some(ns) => ns.command(exe),
            None => std::process::Command::new(exe),
        };
        let child = cmd
            .args(["run", "--config"])
            .arg(&file)
            .env("HOOKRELAY_MASTER_KEY", TEST_MASTER_KEY)
            .env("RUST_LOG", "info")
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .spawn()
            .expect("spawn hookrelay");
        Self {
            who,
            child,
            log,
            api: format!("http://{}", cfg.api.listen),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(3))
                .build()
                .expect("http client"),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The one source as this process's `/v1/sources` shows it; `None` while the
    /// process or its store cannot answer.
    async fn source_view(&self) -> Option<Value> {
        let resp = self
            .http
            .get(format!("{}/v1/sources", self.api))
            .bearer_auth(TOKEN)
            .send()
            .await
            .ok()?;
        if !resp.status().is_success() {
            return None;
        }
        let body: Value = resp.json().await.ok()?;
        body["data"].get(0).cloned()
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(25)..];
            eprintln!(
                "--- last lines of process {} (pid {}) ---\n{}",
                self.who,
                self.child.id(),
                tail.join("\n")
            );
        }
    }
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "hookrelay-partition-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
