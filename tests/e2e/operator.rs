//! The operator surface (issue 11): `/v1/sources` and `/metrics`.

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_show_running_standby_and_error() {
    let env = Env::new().await;
    let (a, api, rx, _) = env.relay_with_receiver().await;
    env.source
        .connect()
        .await
        .batch_execute("insert into orders (id, status) values (1, 'new'), (2, 'new')")
        .await
        .unwrap();
    rx.wait_delivered(2, WAIT).await;

    let shop: Value = eventually("the source to report its events", WAIT, || async {
        let (status, body) = api.call(Method::GET, "/v1/sources/shop", None).await;
        assert_eq!(status, 200, "{body}");
        (body["events_captured"] == 2 && !body["position"].is_null()).then_some(body)
    })
    .await;
    assert_eq!(shop["kind"], "postgres");
    assert_eq!(shop["state"], "running");
    assert_eq!(shop["ready"], true);
    assert_eq!(shop["leader"]["is_this_process"], true, "{shop}");
    assert!(shop["lag_seconds"].as_f64().is_some(), "{shop}");
    assert!(shop["last_error"].is_null(), "{shop}");

    // A second process on the same store waits on standby behind the leader.
    let b = start_relay(env.config()).await;
    let api_b = Api::new(b.api_addr);
    let (_, list) = api_b.call(Method::GET, "/v1/sources", None).await;
    let view = &list["data"][0];
    assert_eq!(view["name"], "shop");
    assert_eq!(view["state"], "standby", "{list}");
    assert!(view["leader"]["process"].is_string(), "{list}");

    // A source whose database does not exist is in `error`, with the cause.
    let mut cfg = env.config();
    cfg.sources[0].name = "gone".into();
    cfg.sources[0].url = "postgres://postgres@127.0.0.1:5432/no_such_database_here".into();
    let c = hookrelay::Relay::start(cfg).await.expect("relay starts");
    let api_c = Api::new(c.api_addr);
    let gone: Value = eventually("the broken source to report an error", WAIT, || async {
        let (_, body) = api_c.call(Method::GET, "/v1/sources/gone", None).await;
        (body["state"] == "error").then_some(body)
    })
    .await;
    assert!(
        gone["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("no_such_database_here"),
        "{gone}"
    );
    assert!(gone["errors"].as_u64().unwrap_or(0) >= 1, "{gone}");
    let (status, body) = api_c.call(Method::GET, "/v1/sources/nope", None).await;
    assert_eq!(status, 404, "{body}");

    c.shutdown().await;
    b.shutdown().await;
    a.shutdown().await;
}
