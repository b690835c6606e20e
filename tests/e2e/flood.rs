//! A connection flood against the real binary: one peer holds about 1,200 half-open
//! connections to the admin port (a request line and one header, then silence),
//! reopening each one the server closes, while probes measure how long `/healthz` (on
//! `api.health_listen`) and an authorized API call (on the flooded port itself, from
//! the same peer) take. Loopback only, bounded in connections (1,200 at a time) and
//! time (the flood stops when the probes are done, or after 60 s).

use std::{
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpStream},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use crate::harness::*;

const FLOOD: usize = 1_200;
const PROBES: usize = 5;
const HEALTH_WITHIN: Duration = Duration::from_secs(1);
const API_WITHIN: Duration = Duration::from_secs(2);

struct Flood {
    stop: Arc<AtomicBool>,
    /// Connections the flood holds open right now, as far as it has noticed.
    held: Arc<AtomicUsize>,
    /// Connections it opened in all.
    opened: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Flood {
    /// Starts flooding `addr` from a thread of its own (so the probes' runtime is not
    /// the flood's).
    fn start(addr: SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let held = Arc::new(AtomicUsize::new(0));
        let opened = Arc::new(AtomicUsize::new(0));
        let (s, h, o) = (stop.clone(), held.clone(), opened.clone());
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut socks: Vec<TcpStream> = Vec::with_capacity(FLOOD);
            let mut buf = [0u8; 256];
            while !s.load(Ordering::Relaxed) && Instant::now() < deadline {
                while socks.len() < FLOOD && !s.load(Ordering::Relaxed) {
                    let Ok(mut sock) = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                    else {
                        break;
                    };
                    if sock
                        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
                        .is_err()
                        || sock.set_nonblocking(true).is_err()
                    {
                        continue;
                    }
                    o.fetch_add(1, Ordering::Relaxed);
                    socks.push(sock);
                }
                // Drop what the server closed (or answered), to reopen it.
                socks.retain_mut(|sock| {
                    matches!(sock.read(&mut buf), Err(e) if e.kind() == ErrorKind::WouldBlock)
                });
                h.store(socks.len(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100)); // pacing, as a flooder would
            }
        });
        Self {
            stop,
            held,
            opened,
            thread: Some(thread),
        }
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A fresh connection per request, as a kubelet's probe or a script makes.
fn fresh_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

async fn timed(req: reqwest::RequestBuilder) -> (Duration, u16) {
    let t = Instant::now();
    let status = match req.send().await {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    };
    (t.elapsed(), status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_api_answer_during_a_connection_flood_from_one_peer() {
    let env = Env::new().await;
    let mut cfg = env.config();
    let (port, health_port) = (free_port(), free_port());
    cfg.api.listen = format!("127.0.0.1:{port}").parse().unwrap();
    cfg.api.health_listen = Some(format!("127.0.0.1:{health_port}").parse().unwrap());
    let dir =
        std::env::temp_dir().join(format!("hookrelay-flood-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = spawn_run(&write_config(&cfg, &dir));
    let api: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let health = format!("http://127.0.0.1:{health_port}");
    eventually(
        "hookrelay run to be ready on api.health_listen",
        Duration::from_secs(60),
        || async {
            let r = reqwest::get(format!("{health}/readyz")).await.ok()?;
            (r.status() == 200).then_some(())
        },
    )
    .await;

    let flood = Flood::start(api);
    eventually(
        "the flood to hold its connections",
        Duration::from_secs(30),
        || {
            let opened = flood.opened.load(Ordering::Relaxed);
            async move { (opened >= FLOOD).then_some(()) }
        },
    )
    .await;

    let client = fresh_client();
    let (mut worst_health, mut worst_api) = (Duration::ZERO, Duration::ZERO);
    let mut failures = Vec::new();
    for i in 0..PROBES {
        let (took, status) = timed(client.get(format!("{health}/healthz"))).await;
        worst_health = worst_health.max(took);
        if status != 200 || took > HEALTH_WITHIN {
            failures.push(format!("probe {i}: /healthz {status} in {took:?}"));
        }
        let (took, status) = timed(
            client
                .get(format!("http://{api}/v1/subscriptions"))
                .bearer_auth(TOKEN),
        )
        .await;
        worst_api = worst_api.max(took);
        if status != 200 || took > API_WITHIN {
            failures.push(format!(
                "probe {i}: GET /v1/subscriptions {status} in {took:?}"
            ));
        }
        // The flood keeps refilling between probes.
        let before = flood.opened.load(Ordering::Relaxed);
        eventually(
            "the flood to reopen connections",
            Duration::from_secs(10),
            || {
                let now = flood.opened.load(Ordering::Relaxed);
                async move { (now > before).then_some(()) }
            },
        )
        .await;
    }
    let (held, opened) = (
        flood.held.load(Ordering::Relaxed),
        flood.opened.load(Ordering::Relaxed),
    );
    drop(flood);
    println!(
        "flood of {FLOOD} half-open connections ({opened} opened, {held} held at the end): \
         /healthz worst {worst_health:?}, API worst {worst_api:?}"
    );
    let alive = child.try_wait().expect("child").is_none();
    let _ = child.kill();
    let _ = child.wait();
    assert!(alive, "hookrelay exited during the flood");
    assert!(
        opened >= FLOOD,
        "the flood opened only {opened} connections"
    );
    assert!(failures.is_empty(), "{failures:?}");
}
