//! The bench's webhook receiver: axum on 127.0.0.1, HTTP/1.1 keep-alive, one path
//! per endpoint (`/e/<n>`), each with its own secret and scripted behaviour.
//!
//! ```text
//!  POST /e/<n> ─▶ verify webhook-signature (SigningKey of endpoint n) ──bad──▶ 400
//!              ─▶ parse {id, op, committed_at, captured_at} from the raw body
//!              ─▶ mode: ok | delay | slow-or-timeout | refuse (503) | hang (until up)
//!              ─▶ 2xx: first time this id is seen → latency = receipt − committed_at,
//!                      (backfill `read` events counted apart), else a duplicate
//! ```
//!
//! Receipt time is taken when the request arrives, before any scripted delay.

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::{Arc, Mutex, RwLock},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Context;
use axum::{
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    routing::post,
    Router,
};
use hookrelay_core::signature::SigningKey;
use serde::Deserialize;
use tokio::sync::watch;

/// How an endpoint answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// 200 at once.
    Ok,
    /// 200 after this long.
    Delay(Duration),
    /// The bad neighbour: every request waits 2 s; then half of them (by event id)
    /// answer 200 and the other half hang past hookrelay's timeout.
    SlowOrTimeout,
    /// 503 at once (no Retry-After).
    Refuse,
    /// Accept and never answer until the mode changes; then 503.
    Hang,
}

/// What one endpoint has seen.
#[derive(Debug, Default)]
struct Record {
    /// Every request that passed routing, whatever became of it.
    requests: u64,
    seen: HashSet<Box<str>>,
    /// Distinct events with `op = "read"` (backfilled rows).
    reads: u64,
    /// Per first 2xx: receipt − committed_at, µs.
    latency_us: Vec<i64>,
    /// Per first 2xx: captured_at − committed_at (the source's share), µs.
    capture_us: Vec<i64>,
    /// Per first 2xx: receipt time, Unix µs.
    arrival_us: Vec<i64>,
    duplicates: u64,
    bad_signatures: u64,
    bad_bodies: u64,
    /// Requests answered with something other than 2xx (refused, timed out, held).
    not_accepted: u64,
}

struct Endpoint {
    key: SigningKey,
    mode: watch::Sender<Mode>,
    rec: Mutex<Record>,
}

/// A summary of one endpoint.
#[derive(Debug, Clone, Default)]
pub struct EndpointStats {
    /// Requests that arrived (including ones answered non-2xx or abandoned by the
    /// sender before the answer).
    pub requests: u64,
    pub received: u64,
    /// Of `received`, backfill `read` events.
    pub reads: u64,
    pub duplicates: u64,
    pub bad_signatures: u64,
    pub bad_bodies: u64,
    pub not_accepted: u64,
    pub first_arrival_us: Option<i64>,
    pub last_arrival_us: Option<i64>,
}

/// The receiver shared by every workload; `reset` gives it fresh endpoints.
#[derive(Clone)]
pub struct Receiver {
    addr: SocketAddr,
    endpoints: Arc<RwLock<Vec<Arc<Endpoint>>>>,
}

/// A fresh endpoint: where hookrelay should POST and with which secret it signs.
#[derive(Debug, Clone)]
pub struct EndpointInfo {
    pub url: String,
    pub secret: String,
}

impl Receiver {
    /// Binds 127.0.0.1:0 and serves until the process ends.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the receiver on 127.0.0.1")?;
        let addr = listener.local_addr()?;
        let endpoints: Arc<RwLock<Vec<Arc<Endpoint>>>> = Arc::default();
        let app = Router::new()
            .route("/e/{n}", post(hook))
            .with_state(endpoints.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("bench receiver stopped: {e}");
            }
        });
        Ok(Self { addr, endpoints })
    }

    /// Replaces every endpoint with `n` fresh ones answering 200.
    pub fn reset(&self, n: usize) -> anyhow::Result<Vec<EndpointInfo>> {
        let mut fresh = Vec::with_capacity(n);
        let mut infos = Vec::with_capacity(n);
        for i in 0..n {
            let secret = SigningKey::generate_secret();
            let key = SigningKey::from_secret(&secret)
                .map_err(|e| anyhow::anyhow!("generated secret refused: {e}"))?;
            let (mode, _) = watch::channel(Mode::Ok);
            fresh.push(Arc::new(Endpoint {
                key,
                mode,
                rec: Mutex::default(),
            }));
            infos.push(EndpointInfo {
                url: format!("http://{}/e/{i}", self.addr),
                secret,
            });
        }
        let old = {
            let mut eps = self.write()?;
            std::mem::replace(&mut *eps, fresh)
        };
        // Release anything still held by the previous workload.
        for ep in old {
            ep.mode.send_replace(Mode::Ok);
        }
        Ok(infos)
    }

    pub fn set_mode(&self, n: usize, mode: Mode) -> anyhow::Result<()> {
        let eps = self.read()?;
        let ep = eps
            .get(n)
            .with_context(|| format!("no receiver endpoint {n}"))?;
        ep.mode.send_replace(mode);
        Ok(())
    }

    /// Distinct events answered 2xx at endpoint `n`.
    pub fn received(&self, n: usize) -> u64 {
        self.with_record(n, |r| r.seen.len() as u64).unwrap_or(0)
    }

    pub fn stats(&self, n: usize) -> EndpointStats {
        self.with_record(n, |r| EndpointStats {
            requests: r.requests,
            received: r.seen.len() as u64,
            reads: r.reads,
            duplicates: r.duplicates,
            bad_signatures: r.bad_signatures,
            bad_bodies: r.bad_bodies,
            not_accepted: r.not_accepted,
            first_arrival_us: r.arrival_us.iter().copied().min(),
            last_arrival_us: r.arrival_us.iter().copied().max(),
        })
        .unwrap_or_default()
    }

    /// Latencies (µs) of every first 2xx at the given endpoints.
    pub fn latencies_us(&self, ns: &[usize]) -> Vec<i64> {
        let mut out = Vec::new();
        for &n in ns {
            if let Some(v) = self.with_record(n, |r| r.latency_us.clone()) {
                out.extend(v);
            }
        }
        out
    }

    /// captured_at − committed_at (µs) of every first 2xx at the given endpoints.
    pub fn capture_us(&self, ns: &[usize]) -> Vec<i64> {
        let mut out = Vec::new();
        for &n in ns {
            if let Some(v) = self.with_record(n, |r| r.capture_us.clone()) {
                out.extend(v);
            }
        }
        out
    }

    /// Latencies and the source's share of them (µs), as [`Self::latencies_us`] and
    /// [`Self::capture_us`], of the events at endpoint `n` committed within `from_us..to_us`
    /// (Unix µs): one phase of a workload.
    pub fn latencies_committed_in(
        &self,
        n: usize,
        (from_us, to_us): (i64, i64),
    ) -> (Vec<i64>, Vec<i64>) {
        self.with_record(n, |r| {
            (0..r.latency_us.len())
                .filter(|&i| (from_us..to_us).contains(&(r.arrival_us[i] - r.latency_us[i])))
                .map(|i| (r.latency_us[i], r.capture_us[i]))
                .unzip()
        })
        .unwrap_or_default()
    }

    /// Receipt times (Unix µs) of every first 2xx at the given endpoints.
    pub fn arrivals_us(&self, ns: &[usize]) -> Vec<i64> {
        let mut out = Vec::new();
        for &n in ns {
            if let Some(v) = self.with_record(n, |r| r.arrival_us.clone()) {
                out.extend(v);
            }
        }
        out
    }

    fn with_record<T>(&self, n: usize, f: impl FnOnce(&Record) -> T) -> Option<T> {
        let ep = self.read().ok()?.get(n)?.clone();
        let rec = ep.rec.lock().ok()?;
        Some(f(&rec))
    }

    fn read(&self) -> anyhow::Result<std::sync::RwLockReadGuard<'_, Vec<Arc<Endpoint>>>> {
        self.endpoints
            .read()
            .map_err(|_| anyhow::anyhow!("receiver state poisoned"))
    }

    fn write(&self) -> anyhow::Result<std::sync::RwLockWriteGuard<'_, Vec<Arc<Endpoint>>>> {
        self.endpoints
            .write()
            .map_err(|_| anyhow::anyhow!("receiver state poisoned"))
    }
}

pub fn unix_us(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

#[derive(Deserialize)]
struct Probe<'a> {
    id: &'a str,
    op: &'a str,
    committed_at: &'a str,
    captured_at: &'a str,
}

/// True when one of the `v1,` entries is the HMAC of `"<id>.<ts>.<body>"`.
pub fn verify(key: &SigningKey, headers: &HeaderMap, body: &[u8]) -> bool {
    let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(id), Some(ts), Some(sig)) = (
        h("webhook-id"),
        h("webhook-timestamp").and_then(|t| t.parse::<i64>().ok()),
        h("webhook-signature"),
    ) else {
        return false;
    };
    let expected = key.sign(id, ts, body);
    sig.split(' ')
        .any(|entry| entry.strip_prefix("v1,") == Some(expected.as_str()))
}

async fn hook(
    State(endpoints): State<Arc<RwLock<Vec<Arc<Endpoint>>>>>,
    Path(n): Path<usize>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let received_at = unix_us(SystemTime::now());
    let ep = match endpoints.read().ok().and_then(|eps| eps.get(n).cloned()) {
        Some(ep) => ep,
        None => return StatusCode::NOT_FOUND,
    };
    let bump = |f: fn(&mut Record)| {
        if let Ok(mut r) = ep.rec.lock() {
            f(&mut r);
        }
    };
    bump(|r| r.requests += 1);
    if !verify(&ep.key, &headers, &body) {
        bump(|r| r.bad_signatures += 1);
        return StatusCode::BAD_REQUEST;
    }
    let probe: Probe = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(_) => {
            bump(|r| r.bad_bodies += 1);
            return StatusCode::BAD_REQUEST;
        }
    };
    let parse = |t: &str| chrono::DateTime::parse_from_rfc3339(t).map(|t| t.timestamp_micros());
    let (Ok(committed_us), Ok(captured_us)) = (parse(probe.committed_at), parse(probe.captured_at))
    else {
        bump(|r| r.bad_bodies += 1);
        return StatusCode::BAD_REQUEST;
    };

    let mode = *ep.mode.borrow();
    match mode {
        Mode::Ok => {}
        Mode::Delay(d) => tokio::time::sleep(d).await,
        Mode::SlowOrTimeout => {
            tokio::time::sleep(Duration::from_secs(2)).await;
            if probe.id.bytes().map(u64::from).sum::<u64>() % 2 == 1 {
                // Past hookrelay's attempt timeout; it gives up first.
                tokio::time::sleep(Duration::from_secs(30)).await;
                bump(|r| r.not_accepted += 1);
                return StatusCode::GATEWAY_TIMEOUT;
            }
        }
        Mode::Refuse => {
            bump(|r| r.not_accepted += 1);
            return StatusCode::SERVICE_UNAVAILABLE;
        }
        Mode::Hang => {
            let mut rx = ep.mode.subscribe();
            let _ = rx.wait_for(|m| *m != Mode::Hang).await;
            bump(|r| r.not_accepted += 1);
            return StatusCode::SERVICE_UNAVAILABLE;
        }
    }

    if let Ok(mut r) = ep.rec.lock() {
        if r.seen.insert(probe.id.into()) {
            r.latency_us.push(received_at - committed_us);
            r.capture_us.push(captured_us - committed_us);
            r.arrival_us.push(received_at);
            r.reads += u64::from(probe.op == "read");
        } else {
            r.duplicates += 1;
        }
    }
    StatusCode::NO_CONTENT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_any_listed_signature() {
        let key = SigningKey::from_secret(&SigningKey::generate_secret()).unwrap();
        let other = SigningKey::from_secret(&SigningKey::generate_secret()).unwrap();
        let body = br#"{"id":"evt_1"}"#;
        let mut h = HeaderMap::new();
        h.insert("webhook-id", "evt_1".parse().unwrap());
        h.insert("webhook-timestamp", "1700000000".parse().unwrap());
        let sig = format!(
            "v1,{} v1,{}",
            other.sign("evt_1", 1_700_000_000, body),
            key.sign("evt_1", 1_700_000_000, body)
        );
        h.insert("webhook-signature", sig.parse().unwrap());
        assert!(verify(&key, &h, body));
        assert!(!verify(&key, &h, b"{}"));
        h.remove("webhook-timestamp");
        assert!(!verify(&key, &h, body));
    }
}
