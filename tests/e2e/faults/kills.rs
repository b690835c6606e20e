//! `kill -9` of hookrelay at random moments under steady load.

use std::time::Duration;

use serde_json::json;

use super::{long_mode, wait_nothing_lost, Generator};
use crate::harness::*;

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
    let gen = Generator::start(&env.source.url(), 4, 50);
    let kills = if long_mode() { 50 } else { 5 };
    kill_9_at_random_moments(&cfg, kills, 200..1500).await;
    let ledger = gen.stop().await;
    let mut child = spawn_run(&cfg);
    let committed = ledger.len();
    let report = wait_nothing_lost(&rx, &ledger, Duration::from_secs(180)).await;
    let _ = child.kill();
    let _ = child.wait();
    println!("kill -9 x{kills}: {}", report.summary());
    assert!(committed > 100, "the generator made progress ({committed})");
    report.assert_clean();
    let _ = std::fs::remove_dir_all(&dir);
}
