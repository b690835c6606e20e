//! `hookrelay demo`: a self-contained tour on a local PostgreSQL (DESIGN §1.6).
//!
//! ```text
//!  scratch databases ─▶ hookrelay (in this process) ─▶ built-in receiver (verifies
//!  orders table          store + source + API           every signature, fails one
//!       ▲                       ▲                       attempt on purpose)
//!       └── writer: inserts, updates, deletes            │
//!                               └── admin API calls ◀────┘ subscription, replay
//! ```
//!
//! Everything it creates (two databases named `hookrelay_demo_*`) is dropped when it
//! ends, on Ctrl-C or after `--exit-after`.

use std::{
    collections::HashMap,
    io::Write as _,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;
use axum::{body::Bytes, extract::State, http::HeaderMap, http::StatusCode, routing::post, Router};
use hookrelay_core::{signature::SigningKey, Config};
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::Relay;

/// What `hookrelay demo` is asked to do.
pub struct DemoOptions {
    /// A PostgreSQL server to make scratch databases on (any database on it).
    pub database_url: String,
    /// Changes to write.
    pub events: usize,
    /// Stop once the tour is done instead of serving until Ctrl-C.
    pub exit_after: bool,
}

/// Rows the demo writes to, so changes to one key show per-key order.
const KEYS: usize = 5;

/// The event whose first attempt the receiver refuses, to show a retry.
const FAIL_ONCE: usize = 3;

pub async fn demo(opts: DemoOptions) -> anyhow::Result<()> {
    let admin = connect(&opts.database_url).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot reach PostgreSQL at {}: {e}\n\
             The demo needs a PostgreSQL server it may create databases on. Start one \
             (Debian: `apt-get install postgresql && pg_ctlcluster 15 main start`), or \
             point DATABASE_URL (or --database-url) at one, e.g. \
             postgres://postgres@127.0.0.1:5432/postgres",
            hookrelay_core::config::redact_url(&opts.database_url)
        )
    })?;
    let tag = ulid::Ulid::new().to_string().to_ascii_lowercase();
    let dbs = Scratch {
        admin,
        names: vec![
            format!("hookrelay_demo_store_{tag}"),
            format!("hookrelay_demo_shop_{tag}"),
        ],
    };
    let result = tour(&opts, &dbs).await;
    dbs.drop_all().await;
    result
}

async fn tour(opts: &DemoOptions, dbs: &Scratch) -> anyhow::Result<()> {
    for name in &dbs.names {
        dbs.admin
            .batch_execute(&format!("create database \"{name}\""))
            .await
            .with_context(|| format!("creating scratch database {name}"))?;
    }
    let store_url = with_database(&opts.database_url, &dbs.names[0])?;
    let shop_url = with_database(&opts.database_url, &dbs.names[1])?;
    let shop = connect(&shop_url).await?;
    shop.batch_execute(
        "create table public.orders (
            id bigint primary key,
            status text not null,
            total numeric(12, 2) not null,
            updated_at timestamptz not null default now())",
    )
    .await?;
    say(&format!(
        "created scratch databases {} (store) and {} (source, table orders)",
        dbs.names[0], dbs.names[1]
    ));

    let receiver = Receiver::start().await?;
    let token = format!("demo-{}", ulid::Ulid::new());
    let cfg = Config::from_toml(&format!(
        r#"
[store]
url = "{store_url}"
pool_size = 4
[api]
listen = "127.0.0.1:0"
tokens = ["{token}"]
[dispatch]
workers = 16
timeout = "5s"
max_attempts = 5
backoff = {{ initial = "300ms", max = "2s", multiplier = 2.0 }}
allow_networks = ["127.0.0.0/8"]
poll_interval = "100ms"
[[sources]]
name = "shop"
kind = "postgres"
url = "{shop_url}"
tables = ["public.orders"]
poll_interval = "250ms"
"#
    ))?;
    // Secrets are sealed as in production, under a key that lives as long as the
    // scratch store does.
    let mut cfg = cfg;
    cfg.store.master_key = Some(hookrelay_core::sealing::MasterKey::from_base64(
        &hookrelay_core::sealing::MasterKey::generate_base64(),
    )?);
    let relay = Relay::start(cfg).await?;
    let result = show(opts, &relay, &receiver, &shop, &shop_url, &token).await;
    relay.shutdown().await;
    result
}

/// The tour proper, with hookrelay running.
async fn show(
    opts: &DemoOptions,
    relay: &Relay,
    receiver: &Receiver,
    shop: &tokio_postgres::Client,
    shop_url: &str,
    token: &str,
) -> anyhow::Result<()> {
    let api = Api {
        http: reqwest::Client::new(),
        base: format!("http://{}", relay.api_addr),
        token: token.to_owned(),
    };
    wait_until("hookrelay to capture", Duration::from_secs(30), || {
        std::future::ready(relay.is_ready())
    })
    .await?;
    say(&format!(
        "hookrelay is capturing public.orders; admin API on {}",
        relay.api_addr
    ));

    let sub = api
        .post(
            "/v1/subscriptions",
            json!({"url": receiver.url(), "event_types": ["orders.*"], "description": "demo receiver"}),
        )
        .await?;
    let secret = sub["secret"]
        .as_str()
        .context("subscription secret")?
        .to_owned();
    receiver.set_secret(&secret)?;
    say(&format!(
        "subscribed {} to orders.* through POST /v1/subscriptions ({})",
        receiver.url(),
        sub["id"].as_str().unwrap_or("?")
    ));

    // The writer: a stream over a few keys, so per-key order is visible.
    let started = Instant::now();
    for n in 0..opts.events {
        let key = (n % KEYS) as i64 + 1;
        let round = n / KEYS;
        let sql = match round % 3 {
            0 if round > 0 => format!("delete from orders where id = {key}"),
            0 => format!("insert into orders (id, status, total) values ({key}, 'new', {n}.50)"),
            1 => format!(
                "insert into orders (id, status, total) values ({key}, 'new', {n}.50)
                 on conflict (id) do update set status = 'paid', total = {n}.50, updated_at = now()"
            ),
            _ => {
                format!("update orders set status = 'shipped', updated_at = now() where id = {key}")
            }
        };
        shop.batch_execute(&sql).await?;
    }
    say(&format!(
        "wrote {} changes to orders over {KEYS} keys",
        opts.events
    ));

    let expected = opts.events;
    receiver
        .wait(|s| s.delivered.len() >= expected, Duration::from_secs(60))
        .await?;
    let summary = receiver.summary();
    say(&format!(
        "{}/{} events delivered and verified in {:.1}s; {} retried after a refused attempt; \
         per-key order {}",
        summary.verified,
        expected,
        started.elapsed().as_secs_f64(),
        summary.retried,
        if summary.order_ok { "kept" } else { "BROKEN" }
    ));

    // Replay: the same event, the same webhook-id, sent again on request.
    let page = api
        .get(&format!(
            "/v1/deliveries?subscription_id={}&status=succeeded&limit=1",
            sub["id"].as_str().unwrap_or_default()
        ))
        .await?;
    let delivery = page["data"][0].clone();
    let event_id = delivery["event_id"].as_str().unwrap_or_default().to_owned();
    api.post(
        &format!("/v1/deliveries/{}/replay", delivery["id"]),
        json!({}),
    )
    .await?;
    receiver
        .wait(
            |s| s.received.get(&event_id).copied().unwrap_or(0) >= 2,
            Duration::from_secs(30),
        )
        .await?;
    say(&format!(
        "replayed delivery {} through POST /v1/deliveries/{{id}}/replay: {event_id} arrived again with the same webhook-id",
        delivery["id"]
    ));

    let ok = summary.verified == expected && summary.order_ok && summary.bad_signatures == 0;
    if !opts.exit_after {
        println!(
            "\nTry the admin API while the demo runs (Ctrl-C stops it and drops the scratch databases):\n\
             \x20 curl -s {base}/v1/deliveries?limit=5 -H 'authorization: Bearer {token}'\n\
             \x20 curl -s {base}/v1/events?limit=5 -H 'authorization: Bearer {token}'\n\
             \x20 psql '{shop}' -c \"insert into orders (id, status, total) values (100, 'new', 1)\"\n",
            base = api.base,
            shop = hookrelay_core::config::redact_url(shop_url),
        );
        let _ = tokio::signal::ctrl_c().await;
        say("stopping");
    }
    if ok {
        say("demo finished: every event arrived, signed and in per-key order");
        Ok(())
    } else {
        anyhow::bail!(
            "the demo saw problems: {} of {expected} verified, {} bad signatures, per-key order {}",
            summary.verified,
            summary.bad_signatures,
            if summary.order_ok { "kept" } else { "broken" }
        )
    }
}

fn say(line: &str) {
    println!("[demo] {line}");
    let _ = std::io::stdout().flush();
}

async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let connector = hookrelay_store::PgConnector::from_url(url)?;
    let (client, conn) = connector
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!(hookrelay_store::describe_pg(&e)))?;
    tokio::spawn(conn);
    Ok(client)
}

/// `url` with its database replaced by `db`.
fn with_database(url: &str, db: &str) -> anyhow::Result<String> {
    let mut u = url::Url::parse(url).context("DATABASE_URL is not a URL")?;
    u.set_path(&format!("/{db}"));
    Ok(u.to_string())
}

async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut cond: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !cond().await {
        if Instant::now() > deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// The scratch databases, dropped at the end whatever happened.
struct Scratch {
    admin: tokio_postgres::Client,
    names: Vec<String>,
}

impl Scratch {
    async fn drop_all(&self) {
        for name in &self.names {
            let sql = format!("drop database if exists \"{name}\" with (force)");
            if let Err(e) = self.admin.batch_execute(&sql).await {
                eprintln!(
                    "[demo] could not drop {name}: {}",
                    hookrelay_store::describe_pg(&e)
                );
            }
        }
    }
}

struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await?;
        answer(resp).await
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await?;
        answer(resp).await
    }
}

async fn answer(resp: reqwest::Response) -> anyhow::Result<Value> {
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        anyhow::bail!("admin API answered {status}: {body}");
    }
    Ok(body)
}

/// What the receiver has seen.
#[derive(Default)]
struct Seen {
    /// Requests per webhook-id.
    received: HashMap<String, usize>,
    /// Event ids answered 2xx.
    delivered: std::collections::HashSet<String>,
    /// The last `after.updated_at` (or delete) position per key, to check order.
    last_seq: HashMap<String, (String, u64)>,
    order_ok: bool,
    bad_signatures: usize,
    retried: usize,
    arrivals: usize,
}

struct Summary {
    verified: usize,
    retried: usize,
    bad_signatures: usize,
    order_ok: bool,
}

#[derive(Clone)]
struct Receiver {
    addr: SocketAddr,
    state: Arc<ReceiverState>,
}

struct ReceiverState {
    key: Mutex<Option<SigningKey>>,
    seen: Mutex<Seen>,
    changed: Notify,
}

impl Receiver {
    async fn start() -> anyhow::Result<Self> {
        let state = Arc::new(ReceiverState {
            key: Mutex::new(None),
            seen: Mutex::new(Seen {
                order_ok: true,
                ..Seen::default()
            }),
            changed: Notify::new(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = Router::new()
            .route("/webhook", post(receive))
            .with_state(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, state })
    }

    fn url(&self) -> String {
        format!("http://{}/webhook", self.addr)
    }

    fn set_secret(&self, secret: &str) -> anyhow::Result<()> {
        let key = SigningKey::from_secret(secret).context("the subscription's secret")?;
        if let Ok(mut k) = self.state.key.lock() {
            *k = Some(key);
        }
        Ok(())
    }

    async fn wait(&self, cond: impl Fn(&Seen) -> bool, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.state.changed.notified();
            if self.state.seen.lock().map(|s| cond(&s)).unwrap_or(false) {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                anyhow::bail!("timed out after {timeout:?} waiting for the receiver");
            }
        }
    }

    fn summary(&self) -> Summary {
        let s = self.state.seen.lock().unwrap_or_else(|p| p.into_inner());
        Summary {
            verified: s.delivered.len(),
            retried: s.retried,
            bad_signatures: s.bad_signatures,
            order_ok: s.order_ok,
        }
    }
}

async fn receive(
    State(st): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    let (id, ts, sig) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    );
    let verified = match (
        st.key.lock().ok().and_then(|k| k.clone()),
        ts.parse::<i64>(),
    ) {
        (Some(key), Ok(ts)) => {
            let expected = format!("v1,{}", key.sign(id, ts, &body));
            sig.split(' ').any(|s| s == expected)
        }
        _ => false,
    };
    let event: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut seen = match st.seen.lock() {
        Ok(s) => s,
        Err(p) => p.into_inner(),
    };
    seen.arrivals += 1;
    let attempt = {
        let n = seen.received.entry(id.to_owned()).or_default();
        *n += 1;
        *n
    };
    let status = if !verified {
        seen.bad_signatures += 1;
        println!("  ✗ {id} signature did NOT verify");
        StatusCode::UNAUTHORIZED
    } else if seen.arrivals == FAIL_ONCE && attempt == 1 {
        println!(
            "  ! {id} {} refused on purpose (503): hookrelay will retry it",
            event["type"].as_str().unwrap_or("?")
        );
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        let key = event["key"].to_string();
        let txn: u64 = event["txn"]["id"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        // First delivery of this event (a replay comes again later): a later
        // transaction on the same key must not have arrived before it.
        if seen.delivered.insert(id.to_owned()) {
            if let Some((_, last)) = seen.last_seq.get(&key) {
                if *last > txn {
                    seen.order_ok = false;
                }
            }
            seen.last_seq.insert(key.clone(), (id.to_owned(), txn));
            if attempt > 1 {
                seen.retried += 1;
            }
        }
        println!(
            "  ✓ {id} {:<15} key {key:<10} signature ok{}",
            event["type"].as_str().unwrap_or("?"),
            if attempt > 1 {
                format!(" (attempt {attempt})")
            } else {
                String::new()
            }
        );
        StatusCode::OK
    };
    drop(seen);
    st.changed.notify_waiters();
    status
}
