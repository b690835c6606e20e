//! One subscription whose sealed secret cannot be opened (its row tampered with)
//! holds up only itself (DESIGN §1.7): the relay starts, the source keeps capturing,
//! `/readyz` stays 200, the other subscription gets every change, and the tampered
//! one's deliveries wait (pending, no attempt spent), with the reason on the
//! subscription and a gauge in `/metrics`. Rotating its secret lets them go.

use std::time::Duration;

use serde_json::json;

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_secret_holds_up_only_its_subscription() {
    let env = Env::new().await;
    let relay = start_relay(env.config()).await;
    let api = Api::new(relay.api_addr);
    let (rx_tampered, rx_healthy) = (TestReceiver::start().await, TestReceiver::start().await);
    let tampered = api.subscribe(&rx_tampered.url, json!({})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let healthy = api.subscribe(&rx_healthy.url, json!({})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    relay.shutdown().await;

    // The tampered row holds the other subscription's sealed secret: well-formed,
    // under the right key, but bound to another subscription, so it does not open.
    env.store
        .connect()
        .await
        .execute(
            "update hookrelay.subscriptions
                set secret = (select secret from hookrelay.subscriptions where id = $2)
              where id = $1",
            &[&tampered, &healthy],
        )
        .await
        .unwrap();

    // Start-up goes on, and the source captures.
    let relay = start_relay(env.config()).await;
    let api = Api::new(relay.api_addr);
    let source = env.source.connect().await;
    source
        .batch_execute("insert into public.orders (id, status) values (1, 'new'), (2, 'new')")
        .await
        .unwrap();
    rx_healthy.wait_delivered(2, WAIT).await;
    source
        .batch_execute("insert into public.orders (id, status) values (3, 'new')")
        .await
        .unwrap();
    rx_healthy.wait_delivered(3, WAIT).await;
    assert!(
        rx_tampered.requests().is_empty(),
        "nothing is sent without its real secret"
    );

    let ready = reqwest::get(format!("http://{}/readyz", relay.api_addr))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200, "{}", ready.text().await.unwrap());
    let (_, shop) = api
        .call(reqwest::Method::GET, "/v1/sources/shop", None)
        .await;
    assert_eq!(shop["state"], "running", "{shop}");

    let (_, shown) = api
        .call(
            reqwest::Method::GET,
            &format!("/v1/subscriptions/{tampered}"),
            None,
        )
        .await;
    let why = shown["secret_error"].as_str().unwrap_or_default();
    assert!(why.contains("altered"), "{shown}");
    let (_, other) = api
        .call(
            reqwest::Method::GET,
            &format!("/v1/subscriptions/{healthy}"),
            None,
        )
        .await;
    assert!(other["secret_error"].is_null(), "{other}");

    let metrics = reqwest::get(format!("http://{}/metrics", relay.api_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let gauge =
        format!("hookrelay_subscription_secret_unreadable{{subscription_id=\"{tampered}\"}}");
    assert_eq!(sample(&metrics, &gauge), Some(1.0), "{metrics}");

    // Its deliveries wait, pending, with no attempt spent on them.
    let (_, page) = api
        .call(
            reqwest::Method::GET,
            &format!("/v1/deliveries?subscription_id={tampered}"),
            None,
        )
        .await;
    let waiting = page["data"].as_array().unwrap();
    assert_eq!(waiting.len(), 3, "{page}");
    for d in waiting {
        assert_eq!(d["status"], "pending", "{d}");
        assert_eq!(d["attempt_count"], 0, "{d}");
    }

    // A new secret, with no grace for the unreadable one, lets them go.
    let (status, rotated) = api
        .call(
            reqwest::Method::POST,
            &format!("/v1/subscriptions/{tampered}/rotate-secret"),
            Some(json!({"grace": "0s"})),
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    let secret = rotated["secret"].as_str().unwrap().to_owned();
    let got = rx_tampered.wait_delivered(3, WAIT).await;
    assert!(got.iter().all(|r| verify_signature(&secret, r)));
    let metrics = reqwest::get(format!("http://{}/metrics", relay.api_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(sample(&metrics, &gauge), None, "{metrics}");
    relay.shutdown().await;
}
