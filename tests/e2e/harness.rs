//! The shared test harness: fresh databases, a relay on 127.0.0.1:0, a scripted
//! receiver, and waits that poll a condition (never a bare sleep).

use std::{
    collections::HashMap,
    future::Future,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    body::Bytes,
    extract::{ConnectInfo, State},
    http::HeaderMap,
    response::IntoResponse,
    routing::post,
    Router,
};
use base64::{engine::general_purpose::STANDARD, Engine};
use hmac::{Hmac, Mac};
use hookrelay::Relay;
use hookrelay_core::Config;
use hookrelay_store::{
    model::{NewSubscription, OrderingMode},
    ClaimedDelivery, Outcome, OutcomeStatus,
};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::sync::Notify;
use tokio_postgres::NoTls;

pub const PG: &str = "postgres://postgres@127.0.0.1:5432";
pub const TOKEN: &str = "e2e-admin-token";

/// How many deliveries the store holds: rows, the elements of receipts (first
/// attempts that succeeded leave their row for one), and the open elements of runs
/// (those with neither yet).
pub const DELIVERIES_STORED: &str = "select (select count(*) from hookrelay.deliveries)
          + (select coalesce(sum(cardinality(delivery_ids)), 0)::bigint from hookrelay.receipts)
          + (select count(*) from hookrelay.runs r
              cross join lateral unnest(r.delivery_ids) as x(id)
              where not exists (select from hookrelay.deliveries d where d.id = x.id)
                and not exists (select from hookrelay.receipts c
                                 where int8range(c.first_delivery, c.last_delivery, '[]') @> x.id
                                   and x.id = any (c.delivery_ids)))";
/// Every delivery the store holds before anything is sent, as rows of
/// `(subscription_id, event_seq)`: delivery rows and the open elements of runs (a
/// subquery to select from, aliased by the caller).
pub const FANNED_OUT: &str = "(select subscription_id, event_seq from hookrelay.deliveries
     union all
     select r.subscription_id, x.seq from hookrelay.runs r
      cross join lateral unnest(r.delivery_ids, r.event_seqs) as x(id, seq)
      where not exists (select from hookrelay.deliveries d where d.id = x.id))";

/// The master key every e2e relay runs with (base64 of 32 bytes), so the suite
/// exercises sealed secrets; a spawned binary gets it as `HOOKRELAY_MASTER_KEY`.
pub const TEST_MASTER_KEY: &str = "aG9va3JlbGF5LWUyZS10ZXN0LW1hc3Rlci1rZXktMzI=";

/// Installs a test logger once when `RUST_LOG` is set.
pub fn init_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var("RUST_LOG").is_ok() {
            let _ = tracing_subscriber::fmt()
                .with_test_writer()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .try_init();
        }
    });
}

/// A fresh, uniquely named database, dropped when the value is dropped.
pub struct TestDb {
    pub name: String,
}

impl TestDb {
    pub async fn new(tag: &str) -> Self {
        let name = format!("hookrelay_e2e_{tag}_{}", uuid::Uuid::new_v4().simple());
        admin(&format!("create database \"{name}\"")).await;
        Self { name }
    }

    pub fn url(&self) -> String {
        format!("{PG}/{}", self.name)
    }

    pub async fn connect(&self) -> tokio_postgres::Client {
        connect(&self.url()).await
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop from a fresh thread: we may be inside a runtime that is shutting down.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(admin(&format!(
                "drop database if exists \"{name}\" with (force)"
            )));
        })
        .join();
    }
}

async fn admin(sql: &str) {
    let c = connect(&format!("{PG}/postgres")).await;
    c.batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    tokio::spawn(conn);
    client
}

/// A store database and a source database with an `orders` table.
pub struct Env {
    pub store: TestDb,
    pub source: TestDb,
}

impl Env {
    pub async fn new() -> Self {
        init_logs();
        let env = Self {
            store: TestDb::new("store").await,
            source: TestDb::new("src").await,
        };
        create_orders(&env.source.connect().await).await;
        env
    }

    /// A test config: fast backoff and polling so tests finish quickly.
    pub fn config(&self) -> Config {
        relay_config(&self.store.url(), &self.source.url())
    }

    pub fn config_toml_file(&self, dir: &std::path::Path) -> std::path::PathBuf {
        write_config(&self.config(), dir)
    }
}

/// Writes `cfg` as `hookrelay.toml` in `dir`, for the binary.
pub fn write_config(cfg: &Config, dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("hookrelay.toml");
    std::fs::write(&path, toml_of(cfg)).expect("write config");
    path
}

/// The watched table: `version` lets the fault suite check per-key order.
pub async fn create_orders(db: &tokio_postgres::Client) {
    db.batch_execute(
        "create table public.orders (
            id bigint primary key,
            status text not null,
            total numeric(12,2) not null default 0,
            version int not null default 0,
            updated_at timestamptz not null default now()
         )",
    )
    .await
    .expect("create orders");
}

/// Fast backoff and polling so tests finish quickly.
pub fn relay_config(store_url: &str, source_url: &str) -> Config {
    test_config(
        store_url,
        &format!(
            r#"
[[sources]]
name = "shop"
kind = "postgres"
url = "{source_url}"
tables = ["public.orders"]
poll_interval = "200ms"
batch_size = 500
"#
        ),
    )
}

/// The test settings every in-process relay shares (fast backoff and polling, the
/// test token, local receivers allowed, the test master key) with `sources` (TOML
/// `[[sources]]` tables) appended.
pub fn test_config(store_url: &str, sources: &str) -> Config {
    let text = format!(
        r#"
[store]
url = "{store_url}"
pool_size = 8
[api]
listen = "127.0.0.1:0"
tokens = ["{TOKEN}"]
[dispatch]
workers = 16
timeout = "3s"
max_attempts = 4
backoff = {{ initial = "50ms", max = "400ms", multiplier = 2.0 }}
allow_networks = ["127.0.0.0/8"]
poll_interval = "100ms"
{sources}"#
    );
    with_test_master_key(Config::from_toml(&text).expect("test config"))
}

/// `hookrelay run --config cfg_file` as a child process, quiet, with the test master
/// key (a config file never holds the key).
pub fn spawn_run(cfg_file: &std::path::Path) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_hookrelay"))
        .args(["run", "--config"])
        .arg(cfg_file)
        .env("HOOKRELAY_MASTER_KEY", TEST_MASTER_KEY)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn hookrelay")
}

/// Starts `hookrelay run` `times` times and `kill -9`s each after a random moment of
/// `alive_ms` milliseconds (a random moment, not a condition).
pub async fn kill_9_at_random_moments(
    cfg_file: &std::path::Path,
    times: usize,
    alive_ms: std::ops::Range<u64>,
) {
    for _ in 0..times {
        let mut child = spawn_run(cfg_file);
        let alive = Duration::from_millis(rand::Rng::gen_range(
            &mut rand::thread_rng(),
            alive_ms.clone(),
        ));
        tokio::time::sleep(alive).await;
        child.kill().expect("kill -9");
        let _ = child.wait();
    }
}

/// `cfg` sealing secrets under [`TEST_MASTER_KEY`], as `run` requires; a binary started
/// from a file written with [`write_config`] needs `HOOKRELAY_MASTER_KEY` set instead
/// (the key is never written into a file).
pub fn with_test_master_key(mut cfg: Config) -> Config {
    cfg.store.master_key = Some(
        hookrelay_core::sealing::MasterKey::from_base64(TEST_MASTER_KEY).expect("test master key"),
    );
    cfg
}

fn toml_of(cfg: &Config) -> String {
    // Config serializes with humantime durations; figment reads them back.
    let v = serde_json::to_value(cfg).expect("config to json");
    json_to_toml(&v)
}

fn json_to_toml(v: &Value) -> String {
    fn scalar(v: &Value) -> String {
        match v {
            Value::String(s) => format!("{s:?}"),
            Value::Array(a) => format!("[{}]", a.iter().map(scalar).collect::<Vec<_>>().join(", ")),
            Value::Object(o) => {
                format!(
                    "{{ {} }}",
                    o.iter()
                        .map(|(k, v)| format!("{k} = {}", scalar(v)))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
            other => other.to_string(),
        }
    }
    let mut out = String::new();
    let Value::Object(top) = v else { return out };
    for (section, body) in top {
        match body {
            Value::Object(fields) => {
                out.push_str(&format!("[{section}]\n"));
                for (k, v) in fields {
                    if !v.is_null() {
                        out.push_str(&format!("{k} = {}\n", scalar(v)));
                    }
                }
            }
            Value::Array(items) => {
                for item in items {
                    out.push_str(&format!("[[{section}]]\n"));
                    if let Value::Object(fields) = item {
                        for (k, v) in fields {
                            out.push_str(&format!("{k} = {}\n", scalar(v)));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    out
}

impl Env {
    /// The common start of a test: a relay on this env, its API, a receiver that
    /// answers 200, and a subscription to `orders.*` there (returned with its secret).
    pub async fn relay_with_receiver(&self) -> (Relay, Api, TestReceiver, Value) {
        let relay = start_relay(self.config()).await;
        let api = Api::new(relay.api_addr);
        let rx = TestReceiver::start().await;
        let sub = api.subscribe(&rx.url, json!({})).await;
        (relay, api, rx, sub)
    }
}

/// Starts a relay in-process and waits until it is ready: every source capturing
/// (triggers installed), here or by the process that leads it, so changes the test
/// commits next are journalled.
pub async fn start_relay(cfg: Config) -> Relay {
    let relay = Relay::start(cfg).await.expect("relay starts");
    eventually("the relay to be ready", Duration::from_secs(30), || {
        let ready = relay.is_ready();
        async move { ready.then_some(()) }
    })
    .await;
    relay
}

/// The admin API over real HTTP.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
}

impl Api {
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
        }
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("api call");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("api body");
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    pub async fn subscribe(&self, url: &str, extra: Value) -> Value {
        let mut body = json!({ "url": url, "event_types": ["orders.*"] });
        if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
            b.extend(e);
        }
        let (status, sub) = self
            .call(reqwest::Method::POST, "/v1/subscriptions", Some(body))
            .await;
        assert_eq!(status, 201, "create subscription: {sub}");
        sub
    }
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: Bytes,
    pub headers: HeaderMap,
    pub at: Instant,
    pub done: Instant,
    /// Status the receiver answered.
    pub status: u16,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("body is JSON")
    }
}

/// What the receiver answers: given the request and how many times this webhook-id
/// was seen before, a status, extra headers and a delay.
pub type Script = Arc<dyn Fn(&Value, usize) -> Reply + Send + Sync>;

#[derive(Debug, Clone, Default)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub delay: Duration,
}

impl Reply {
    pub fn ok() -> Self {
        Self {
            status: 200,
            ..Default::default()
        }
    }
    pub fn status(status: u16) -> Self {
        Self {
            status,
            ..Default::default()
        }
    }
}

#[derive(Clone)]
struct ReceiverState {
    log: Arc<Mutex<Vec<Received>>>,
    seen: Arc<Mutex<HashMap<String, usize>>>,
    script: Arc<Mutex<Script>>,
    changed: Arc<Notify>,
    /// Distinct webhook-ids answered 2xx, kept as requests arrive so waits stay O(1).
    ok_ids: Arc<Mutex<std::collections::HashSet<String>>>,
    /// Requests being answered right now, and the most ever at once.
    in_flight: Arc<std::sync::atomic::AtomicUsize>,
    max_in_flight: Arc<std::sync::atomic::AtomicUsize>,
    /// The client end of every connection a request came on.
    peers: Arc<Mutex<std::collections::HashSet<std::net::SocketAddr>>>,
}

/// An HTTP receiver on 127.0.0.1 that records every request.
pub struct TestReceiver {
    pub url: String,
    state: ReceiverState,
}

impl TestReceiver {
    pub async fn start() -> Self {
        Self::scripted(Arc::new(|_, _| Reply::ok())).await
    }

    pub async fn scripted(script: Script) -> Self {
        Self::scripted_on(0, script).await
    }

    /// A receiver on a given port (0 = any), e.g. one that was down until now.
    pub async fn scripted_on(port: u16, script: Script) -> Self {
        Self::scripted_at(std::net::Ipv4Addr::LOCALHOST.into(), port, script).await
    }

    /// A receiver on another local address, e.g. one a network namespace reaches.
    pub async fn scripted_at(ip: std::net::IpAddr, port: u16, script: Script) -> Self {
        let state = ReceiverState {
            log: Arc::default(),
            seen: Arc::default(),
            script: Arc::new(Mutex::new(script)),
            changed: Arc::new(Notify::new()),
            ok_ids: Arc::default(),
            in_flight: Arc::default(),
            max_in_flight: Arc::default(),
            peers: Arc::default(),
        };
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind((ip, port))
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url: format!("http://{addr}/hook"),
            state,
        }
    }

    pub fn set_script(&self, script: Script) {
        *self.state.script.lock().expect("script lock") = script;
    }

    pub fn requests(&self) -> Vec<Received> {
        self.state.log.lock().expect("log lock").clone()
    }

    /// Distinct webhook-ids answered 2xx so far (kept as requests arrive, O(1)).
    pub fn distinct_delivered(&self) -> usize {
        self.state.ok_ids.lock().expect("ids lock").len()
    }

    /// The most requests this receiver ever had in flight at once.
    pub fn max_concurrency(&self) -> usize {
        self.state
            .max_in_flight
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// How many connections requests came on so far.
    pub fn connections(&self) -> usize {
        self.state.peers.lock().expect("peers lock").len()
    }

    /// Requests answered 2xx, in arrival order.
    pub fn delivered(&self) -> Vec<Received> {
        self.requests()
            .into_iter()
            .filter(|r| (200..300).contains(&r.status))
            .collect()
    }

    /// Waits until `cond` holds over the request log, re-checking on every request.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        cond: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.state.changed.notified();
            {
                let log = self.state.log.lock().expect("log lock");
                if cond(&log) {
                    return log.clone();
                }
            }
            let log_len = self.state.log.lock().expect("log lock").len();
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!("timed out after {timeout:?} waiting for {what}; receiver saw {log_len} request(s)");
            }
            let _ = tokio::time::timeout(left, notified).await;
        }
    }

    /// Waits until `n` distinct webhook-ids were answered 2xx.
    pub async fn wait_delivered(&self, n: usize, timeout: Duration) -> Vec<Received> {
        self.wait_for(&format!("{n} distinct delivered events"), timeout, |_| {
            self.distinct_delivered() >= n
        })
        .await;
        self.delivered()
    }
}

async fn receive(
    State(st): State<ReceiverState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let at = Instant::now();
    st.peers.lock().expect("peers lock").insert(peer);
    let now = st
        .in_flight
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        + 1;
    st.max_in_flight
        .fetch_max(now, std::sync::atomic::Ordering::SeqCst);
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let id = h("webhook-id");
    let n = {
        let mut seen = st.seen.lock().expect("seen lock");
        let c = seen.entry(id.clone()).or_default();
        *c += 1;
        *c - 1
    };
    let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let script = st.script.lock().expect("script lock").clone();
    let reply = script(&value, n);
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let rec = Received {
        id,
        timestamp: h("webhook-timestamp"),
        signature: h("webhook-signature"),
        body,
        headers: headers.clone(),
        at,
        done: Instant::now(),
        status: reply.status,
    };
    // Logged before it counts as delivered, so a wait that sees the count also sees
    // the request in the log.
    let ok_id = (200..300).contains(&reply.status).then(|| rec.id.clone());
    st.log.lock().expect("log lock").push(rec);
    if let Some(id) = ok_id {
        st.ok_ids.lock().expect("ids lock").insert(id);
    }
    st.in_flight
        .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    st.changed.notify_waiters();
    let mut resp = axum::http::Response::builder().status(reply.status);
    for (k, v) in reply.headers {
        resp = resp.header(k, v);
    }
    resp.body(axum::body::Body::empty()).expect("response")
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Peak resident memory (VmHWM) of a process, in MiB.
pub fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// An independent Standard Webhooks verification: recompute the HMAC from the raw body.
pub fn verify_signature(secret: &str, r: &Received) -> bool {
    let Some(b64) = secret.strip_prefix("whsec_") else {
        return false;
    };
    let Ok(key) = STANDARD.decode(b64) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("hmac key");
    mac.update(format!("{}.{}.", r.id, r.timestamp).as_bytes());
    mac.update(&r.body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    r.signature.split(' ').any(|s| s == expected)
}

/// Polls `f` until it returns `Some`, for conditions only the store or API can tell.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of the sample `series` (`name{labels}`) in Prometheus text, if present.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A subscription to `url` as store-level tests make one: every type and source,
/// per-key order, enabled, a fixed secret.
pub fn subscription_to(url: &str) -> NewSubscription {
    NewSubscription {
        filter: None,
        url: url.into(),
        description: String::new(),
        event_types: None,
        sources: None,
        headers: Default::default(),
        ordering: OrderingMode::Key,
        enabled: true,
        secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
    }
}

/// One finished attempt of `d`, as the dispatcher records it: answered 200 when it
/// succeeded, 500 otherwise.
pub fn outcome(d: &ClaimedDelivery, status: OutcomeStatus) -> Outcome {
    let ok = status == OutcomeStatus::Succeeded;
    Outcome {
        delivery_id: d.delivery_id,
        attempt: d.attempt,
        subscription_id: d.subscription_id.clone(),
        started_at: chrono::Utc::now(),
        duration_ms: 3,
        status_code: Some(if ok { 200 } else { 500 }),
        error: (!ok).then(|| "HTTP 500".into()),
        response_body: None,
        status,
        run: d.run.clone(),
    }
}
