//! Nothing secret reaches the log: `hookrelay run` at
//! `RUST_LOG=trace`, a subscription with a given secret and a custom header, a
//! delivery through it, a key rotation; then the whole log is scanned for every
//! secret, token and header value written during the run, and checked for the ids
//! its lines must carry. It runs once with a master
//! key and once in plaintext mode, where the database client's own parameter logging
//! would show the secrets if it were not silenced.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::json;

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_log_holds_no_secret_token_or_header_value() {
    scan_a_run(false).await;
    scan_a_run(true).await;
}

async fn scan_a_run(plaintext: bool) {
    let env = Env::new().await;
    let mut cfg = env.config();
    cfg.store.insecure_plaintext_secrets = plaintext;
    let port = free_port();
    cfg.api.listen = format!("127.0.0.1:{port}").parse().unwrap();
    let dir =
        std::env::temp_dir().join(format!("hookrelay-leaks-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = write_config(&cfg, &dir);
    let log_path = dir.join("stderr.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hookrelay"));
    if plaintext {
        cmd.env_remove("HOOKRELAY_MASTER_KEY");
    } else {
        cmd.env("HOOKRELAY_MASTER_KEY", TEST_MASTER_KEY);
    }
    let mut child = cmd
        .args(["run", "--config", config.to_str().unwrap()])
        .env("RUST_LOG", "trace")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .expect("spawn hookrelay");
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let ready = format!("http://{addr}/readyz");
    eventually("hookrelay run to be ready", WAIT, || async {
        let r = reqwest::get(&ready).await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;

    let rx = TestReceiver::start().await;
    let api = Api::new(addr);
    let secret = "whsec_bGVha3MtdGVzdC1zZWNyZXQtYnl0ZXMtMDAwMQ==";
    let header_value = "Bearer receiver-credential-5f1c9";
    let sub = api
        .subscribe(
            &rx.url,
            json!({"secret": secret, "headers": {"Authorization": header_value}}),
        )
        .await;
    let id = sub["id"].as_str().unwrap();
    env.source
        .connect()
        .await
        .batch_execute("insert into public.orders (id, status) values (1, 'new')")
        .await
        .unwrap();
    let got = rx.wait_delivered(1, WAIT).await;
    assert!(
        verify_signature(secret, &got[0]),
        "signed with the given secret"
    );
    assert_eq!(got[0].headers["authorization"], header_value);
    let (status, rotated) = api
        .call(
            reqwest::Method::POST,
            &format!("/v1/subscriptions/{id}/rotate-secret"),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 200);
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    // The attempt's own log line comes before its outcome is recorded: wait for the
    // outcome, not just for the receiver, before the process is stopped.
    eventually("the delivery's outcome to be recorded", WAIT, || {
        let api = api.clone();
        let path = format!("/v1/deliveries?subscription_id={id}");
        async move {
            let (_, listed) = api.call(reqwest::Method::GET, &path, None).await;
            (listed["data"][0]["status"] == "succeeded").then_some(())
        }
    })
    .await;

    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(&log_path).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        log.lines().count() > 100,
        "trace logging was on: {} lines",
        log.lines().count()
    );
    let key_part = secret.trim_start_matches("whsec_");
    for (what, needle) in [
        ("secret", key_part),
        ("rotated secret", new_secret.trim_start_matches("whsec_")),
        ("header value", "receiver-credential-5f1c9"),
        ("admin token", TOKEN),
        ("master key", TEST_MASTER_KEY),
    ] {
        if let Some(line) = log.lines().find(|l| l.contains(needle)) {
            panic!("{what} in the trace log (plaintext mode: {plaintext}): {line}");
        }
    }

    // What the log must hold: each line carries the ids it is about.
    let line = |what: &str| {
        log.lines()
            .find(|l| l.contains(what))
            .unwrap_or_else(|| panic!("no {what:?} line in the log"))
    };
    let attempt = line("attempt finished");
    for field in [
        "delivery_id=",
        &format!("subscription_id={id}"),
        "event_id=evt_",
    ] {
        assert!(attempt.contains(field), "{field} missing: {attempt}");
    }
    let rotate = line("rotate-secret");
    assert!(
        rotate.contains(&format!("path=/v1/subscriptions/{id}/rotate-secret")),
        "API lines name the path and its ids: {rotate}"
    );
    let capture = log
        .lines()
        .find(|l| l.contains("hookrelay_sources") && l.contains("source{"))
        .unwrap_or_else(|| panic!("no source line in the log"));
    assert!(capture.contains("source=shop"), "{capture}");
}
