//! Connection poolers: a PgBouncer (Debian's `pgbouncer`, started here with its own
//! config and port, `scripts/test.sh` installs it) in front of the PostgreSQL the
//! tests use. In transaction mode the store and a source are each refused with a
//! message that says what to use instead, for one `hookrelay run` and for two; in
//! session mode, and directly, nothing is refused.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use hookrelay::Relay;
use hookrelay_store::{pooler::transaction_pooler, PgConnector};

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(60);
const REFUSAL: &str = "the URL leads through a connection pooler in transaction mode";

pub struct PgBouncer {
    dir: PathBuf,
    pub port: u16,
    child: Child,
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false)
}

fn pgbouncer_bin() -> PathBuf {
    [
        "/usr/sbin/pgbouncer",
        "/usr/bin/pgbouncer",
        "/usr/local/bin/pgbouncer",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .expect("pgbouncer is missing: apt-get install pgbouncer (scripts/test.sh does this)")
}

impl PgBouncer {
    /// A PgBouncer on a free port with `pool_mode = mode`, in front of the
    /// PostgreSQL on 127.0.0.1:5432 (every database, trusted users).
    pub async fn start(mode: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "hookrelay-pgbouncer-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).expect("pgbouncer dir");
        let port = free_port();
        std::fs::write(dir.join("userlist.txt"), "\"postgres\" \"\"\n").expect("userlist");
        let ini = dir.join("pgbouncer.ini");
        std::fs::write(
            &ini,
            format!(
                "[databases]\n* = host=127.0.0.1 port=5432\n\
                 [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\n\
                 unix_socket_dir =\nauth_type = trust\nauth_file = {dir}/userlist.txt\n\
                 pool_mode = {mode}\ndefault_pool_size = 4\nmax_client_conn = 200\n\
                 ignore_startup_parameters = options,extra_float_digits\n\
                 logfile = {dir}/pgbouncer.log\npidfile = {dir}/pgbouncer.pid\n",
                dir = dir.display()
            ),
        )
        .expect("ini");
        // PgBouncer will not run as root.
        let mut cmd = Command::new(pgbouncer_bin());
        if is_root() {
            let _ = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .output();
            cmd.args(["-u", "postgres"]);
        }
        let child = cmd
            .arg(&ini)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn pgbouncer");
        let bouncer = Self { dir, port, child };
        let url = bouncer.url("postgres");
        eventually("pgbouncer to accept connections", WAIT, || {
            let url = url.clone();
            async move {
                let connector = PgConnector::from_url(&url).ok()?;
                let (c, conn) = connector.connect().await.ok()?;
                tokio::spawn(conn);
                c.simple_query("select 1").await.ok().map(|_| ())
            }
        })
        .await;
        bouncer
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_tells_transaction_pooling_from_sessions() {
    let db = TestDb::new("probe").await;
    let direct = PgConnector::from_url(&db.url()).expect("url");
    assert_eq!(transaction_pooler(&direct).await.expect("probe"), None);

    let session = PgBouncer::start("session").await;
    let through = PgConnector::from_url(&session.url(&db.name)).expect("url");
    assert_eq!(transaction_pooler(&through).await.expect("probe"), None);

    let transaction = PgBouncer::start("transaction").await;
    let through = PgConnector::from_url(&transaction.url(&db.name)).expect("url");
    let why = transaction_pooler(&through)
        .await
        .expect("probe")
        .expect("a transaction pooler is found");
    assert!(why.contains(REFUSAL), "{why}");
    assert!(why.contains("use the direct URL"), "{why}");

    // Processes starting together probe the same pooler at once; each still finds it.
    let probes: Vec<_> = (0..4)
        .map(|_| {
            let url = transaction.url(&db.name);
            tokio::spawn(async move {
                let through = PgConnector::from_url(&url).expect("url");
                transaction_pooler(&through).await.expect("probe")
            })
        })
        .collect();
    for probe in probes {
        let found = probe.await.expect("probe task");
        assert!(
            found.is_some_and(|why| why.contains(REFUSAL)),
            "a concurrent probe missed the pooler"
        );
    }
}

/// `hookrelay run` as a child process with stderr kept; `None` while it runs.
fn spawn_run_piped(cfg_file: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_hookrelay"))
        .args(["run", "--config"])
        .arg(cfg_file)
        .env("HOOKRELAY_MASTER_KEY", TEST_MASTER_KEY)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn hookrelay")
}

/// Waits (bounded) for `child` to exit; kills it and fails if it keeps running.
async fn exit_of(mut child: Child) -> (i32, String) {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut err);
            }
            return (status.code().unwrap_or(-1), err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("hookrelay run kept running behind a transaction pooler");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_behind_a_transaction_pooler_is_refused_by_one_process_and_by_two() {
    let env = Env::new().await;
    let bouncer = PgBouncer::start("transaction").await;
    let mut cfg = env.config();
    cfg.store.url = bouncer.url(&env.store.name);
    let dir = std::env::temp_dir().join(format!(
        "hookrelay-pooler-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = write_config(&cfg, &dir);

    let (code, err) = exit_of(spawn_run_piped(&file)).await;
    assert_ne!(code, 0);
    assert!(err.contains(REFUSAL) && err.contains("store.url"), "{err}");

    let (first, second) = (spawn_run_piped(&file), spawn_run_piped(&file));
    for (code, err) in [exit_of(first).await, exit_of(second).await] {
        assert_ne!(code, 0);
        assert!(err.contains(REFUSAL), "{err}");
    }

    let (code, out, _) =
        crate::cli::hookrelay(&["check", "--config", file.to_str().expect("path")], &[]);
    assert_ne!(code, 0);
    assert!(
        out.contains(&format!("FAIL  store.url: {REFUSAL}")),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn last_error(relay: &Relay, source: &str) -> Option<String> {
    relay
        .sources()
        .iter()
        .find(|(name, _)| name == source)
        .and_then(|(_, s)| s.snapshot().last_error)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_behind_a_transaction_pooler_is_refused() {
    let env = Env::new().await;
    let bouncer = PgBouncer::start("transaction").await;
    let cfg = relay_config(&env.store.url(), &bouncer.url(&env.source.name));
    let relay = Relay::start(cfg.clone()).await.expect("relay starts");
    let err = eventually("the source to report the pooler", WAIT, || {
        let e = last_error(&relay, "shop");
        async move { e }
    })
    .await;
    assert!(
        err.contains(&format!("source shop url: {REFUSAL}")),
        "{err}"
    );
    assert!(!relay.is_ready());
    relay.shutdown().await;

    let dir = std::env::temp_dir().join(format!(
        "hookrelay-pooler-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = write_config(&cfg, &dir);
    let (code, out, _) =
        crate::cli::hookrelay(&["check", "--config", file.to_str().expect("path")], &[]);
    assert_ne!(code, 0);
    assert!(
        out.contains("ok    store connections keep their sessions"),
        "{out}"
    );
    assert!(
        out.contains(&format!("FAIL  source shop: source shop url: {REFUSAL}")),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
