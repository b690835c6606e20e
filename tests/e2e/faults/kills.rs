//! `kill -9` of hookrelay at random moments under steady load.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use rand::Rng;
use serde_json::json;

use super::{long_mode, wait_nothing_lost, Generator};
use crate::harness::*;

const BIN: &str = env!("CARGO_BIN_EXE_hookrelay");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_nothing() {
    let env = Env::new().await;
    let dir =
        std::env::temp_dir().join(format!("hookrelay-kill-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = env.config_toml_file(&dir);
    let rx = TestReceiver::start().await;
    {
        // Subscribe through the API of a short-lived in-process relay.
        let relay = start_relay(env.config()).await;
        Api::new(relay.api_addr).subscribe(&rx.url, json!({})).await;
        relay.shutdown().await;
    }
    let spawn = || {
        Command::new(BIN)
            .args(["run", "--config", cfg.to_str().unwrap()])
            .env("HOOKRELAY_MASTER_KEY", TEST_MASTER_KEY)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn hookrelay")
    };

    let gen = Generator::start(&env.source.url(), 4, 50);
    let kills = if long_mode() { 50 } else { 5 };
    for _ in 0..kills {
        let mut child = spawn();
        let alive = Duration::from_millis(rand::thread_rng().gen_range(200..1500));
        tokio::time::sleep(alive).await; // a random moment, not a condition
        child.kill().expect("kill -9");
        let _ = child.wait();
    }
    let ledger = gen.stop().await;
    let mut child = spawn();
    let committed = ledger.len();
    let report = wait_nothing_lost(&rx, &ledger, Duration::from_secs(180)).await;
    let _ = child.kill();
    let _ = child.wait();
    println!("kill -9 x{kills}: {}", report.summary());
    assert!(committed > 100, "the generator made progress ({committed})");
    report.assert_clean();
    let _ = std::fs::remove_dir_all(&dir);
}
