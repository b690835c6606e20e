//! The example receivers in `examples/receivers/` (Python, Node, Rust), each run as a
//! child process on a free port against a real hookrelay delivery: the first delivery
//! is verified once, a replay (same webhook-id) is recognised as a duplicate, and
//! requests with a tampered body, a stale timestamp or no headers are refused with a
//! 4xx. A missing `python3` or `node` fails the test, naming what to install.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::{engine::general_purpose::STANDARD, Engine};
use hmac::{Hmac, Mac};
use rand::RngCore;
use reqwest::Method;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(60);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// An example receiver running as a child process, its stdout collected line by line.
struct ReceiverProcess {
    what: &'static str,
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    port: u16,
}

impl ReceiverProcess {
    fn spawn(what: &'static str, mut cmd: Command, secret: &str) -> Self {
        let port = free_port();
        cmd.arg(port.to_string())
            .env("WEBHOOK_SECRET", secret)
            .env("HOST", "127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let program = cmd.get_program().to_string_lossy().into_owned();
        let mut child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot start the {what} receiver with `{program}`: {e}; install it (python3 3.10+ / Node 20+) to run this test")
        });
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().expect("stdout piped");
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().expect("lines lock").push(line);
            }
        });
        Self {
            what,
            child,
            lines,
            port,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("lines lock").clone()
    }

    /// Waits for a stdout line starting with `prefix`, failing early if the process died.
    async fn wait_line(&mut self, prefix: &str) -> String {
        let what = format!("the {} receiver to print {prefix:?}", self.what);
        let lines = self.lines.clone();
        let mut exited = None;
        let found = eventually(&what, WAIT, || {
            let hit = lines
                .lock()
                .expect("lines lock")
                .iter()
                .find(|l| l.starts_with(prefix))
                .cloned();
            if hit.is_none() && exited.is_none() {
                exited = self.child.try_wait().expect("try_wait");
            }
            let dead = exited.map(|s| format!("exited: {s}"));
            async move { hit.or(dead) }
        })
        .await;
        assert!(
            found.starts_with(prefix),
            "the {} receiver {found} before printing {prefix:?}; stdout: {:?}",
            self.what,
            self.lines()
        );
        found
    }
}

impl Drop for ReceiverProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn sign(secret: &str, id: &str, ts: u64, body: &[u8]) -> String {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").expect("whsec_"))
        .expect("base64");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("hmac key");
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// `webhook-id`, `webhook-timestamp`, `webhook-signature`.
type WebhookHeaders<'a> = (&'a str, u64, &'a str);

/// POSTs `body` with the given webhook headers (None = left out) and returns the status.
async fn post(url: &str, headers: Option<WebhookHeaders<'_>>, body: &[u8]) -> u16 {
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some((id, ts, sig)) = headers {
        req = req
            .header("webhook-id", id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", sig);
    }
    req.send()
        .await
        .expect("post to receiver")
        .status()
        .as_u16()
}

async fn verifies_a_real_delivery(what: &'static str, cmd: Command) {
    let env = Env::new().await;
    let relay = start_relay(env.config()).await;
    let api = Api::new(relay.api_addr);
    let mut key = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut key);
    let secret = format!("whsec_{}", STANDARD.encode(key));

    let mut rx = ReceiverProcess::spawn(what, cmd, &secret);
    rx.wait_line("listening on").await;
    let sub = api.subscribe(&rx.url(), json!({ "secret": secret })).await;
    let sub_id = sub["id"].as_str().expect("subscription id").to_owned();

    env.source
        .connect()
        .await
        .batch_execute("insert into orders (id, status) values (1, 'new')")
        .await
        .expect("insert");
    let line = rx.wait_line("verified ").await;
    let delivered: Vec<Value> =
        eventually("the delivery to be recorded as succeeded", WAIT, || {
            let api = api.clone();
            let q = format!("/v1/deliveries?subscription_id={sub_id}&status=succeeded");
            async move {
                let (_, page) = api.call(Method::GET, &q, None).await;
                let data = page["data"].as_array().cloned().unwrap_or_default();
                (!data.is_empty()).then_some(data)
            }
        })
        .await;
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    let event_id = delivered[0]["event_id"].as_str().expect("event_id");
    assert_eq!(line, format!("verified {event_id} orders.insert"));

    // A replay sends the same webhook-id again, freshly signed: a duplicate, answered 200.
    let (status, body) = api
        .call(
            Method::POST,
            &format!("/v1/deliveries/{}/replay", delivered[0]["id"]),
            None,
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        rx.wait_line("duplicate ").await,
        format!("duplicate {event_id}")
    );

    // Requests signed here: a good one proves this signing matches, so the refusals
    // below are for the reason each one names.
    let url = rx.url();
    let body = br#"{"id":"evt_forged","type":"orders.insert"}"#;
    let now = unix_now();
    let good = sign(&secret, "evt_by_test", now, body);
    let rotated = format!("v1,{} {good}", STANDARD.encode([7u8; 32]));
    assert_eq!(
        post(&url, Some(("evt_by_test", now, &rotated)), body).await,
        200,
        "{what}: a valid signature among several (a rotation) is accepted"
    );
    let tampered = br#"{"id":"evt_forged","type":"orders.delete"}"#;
    let stale = now - 600;
    let cases: [(&str, Option<WebhookHeaders>, &[u8]); 4] = [
        (
            "a tampered body",
            Some(("evt_by_test2", now, &good)),
            tampered,
        ),
        (
            "a valid signature on a 10-minute-old timestamp",
            Some((
                "evt_by_test3",
                stale,
                &sign(&secret, "evt_by_test3", stale, body),
            )),
            body,
        ),
        (
            "a bad signature and an old timestamp",
            Some(("evt_by_test4", stale, "v1,AAAA")),
            body,
        ),
        ("no webhook headers", None, body),
    ];
    for (case, headers, body) in cases {
        let status = post(&url, headers, body).await;
        assert!(
            (400..500).contains(&status),
            "{what}: {case} must be refused with a 4xx, got {status}"
        );
    }
    let lines = rx.lines();
    let verified: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("verified "))
        .collect();
    assert_eq!(
        verified,
        [
            &format!("verified {event_id} orders.insert"),
            &"verified evt_by_test orders.insert".to_owned()
        ],
        "{what}: stdout {lines:?}"
    );
    eventually("four refusals printed", WAIT, || {
        let n = rx
            .lines()
            .iter()
            .filter(|l| l.starts_with("refused "))
            .count();
        async move { (n == 4).then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_receiver_verifies_a_real_delivery() {
    let mut cmd = Command::new("python3");
    cmd.arg(repo_root().join("examples/receivers/python/receiver.py"));
    verifies_a_real_delivery("python", cmd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_receiver_verifies_a_real_delivery() {
    let mut cmd = Command::new("node");
    cmd.arg(repo_root().join("examples/receivers/node/receiver.mjs"));
    verifies_a_real_delivery("node", cmd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_receiver_verifies_a_real_delivery() {
    let exe = tokio::task::spawn_blocking(build_rust_receiver)
        .await
        .expect("build task");
    verifies_a_real_delivery("rust", Command::new(exe)).await;
}

/// Builds `hookrelay-example-receiver` with the cargo that built this test (a binary
/// of another package has no `CARGO_BIN_EXE_…`), and returns its path.
fn build_rust_receiver() -> PathBuf {
    let out = Command::new(env!("CARGO"))
        .args([
            "build",
            "--locked",
            "-p",
            "hookrelay-example-receiver",
            "--message-format=json-render-diagnostics",
        ])
        .current_dir(repo_root())
        .stderr(Stdio::inherit())
        .output()
        .expect("run cargo build");
    assert!(
        out.status.success(),
        "cargo build -p hookrelay-example-receiver failed"
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|m| {
            (m["reason"] == "compiler-artifact"
                && m["target"]["name"] == "hookrelay-example-receiver")
                .then(|| m["executable"].as_str().map(PathBuf::from))
                .flatten()
        })
        .expect("cargo reported the receiver's executable")
}
