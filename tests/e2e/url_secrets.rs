//! Endpoint URLs are credentials (a token in the path, `?api_key=…`): after failed
//! attempts (connection refused, a redirect whose Location carries a token too), the
//! trace log, the stored attempts and deliveries, the API's delivery view and
//! `/metrics` name the endpoint by scheme, host and port only, and the store keeps the
//! URL sealed. The whole URL is shown where the API shows the subscription itself.

use std::{
    process::{Command, Stdio},
    sync::Arc,
    time::Duration,
};

use serde_json::{json, Value};

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(60);
const QUERY_SECRET: &str = "sk_live_Q9x7querysecret";
const PATH_SECRET: &str = "T0PATHSECRET";
const LOCATION_SECRET: &str = "LOC4TIONSECRET";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_attempts_name_the_endpoint_by_its_origin_only() {
    let env = Env::new().await;
    let mut cfg = env.config();
    let port = free_port();
    cfg.api.listen = format!("127.0.0.1:{port}").parse().unwrap();
    let dir =
        std::env::temp_dir().join(format!("hookrelay-urls-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = write_config(&cfg, &dir);
    let log_path = dir.join("stderr.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_hookrelay"))
        .args(["run", "--config", config.to_str().unwrap()])
        .env("HOOKRELAY_MASTER_KEY", TEST_MASTER_KEY)
        .env("RUST_LOG", "trace")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .expect("spawn hookrelay");
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    eventually("hookrelay run to be ready", WAIT, || async {
        let r = reqwest::get(format!("http://{addr}/readyz")).await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    let api = Api::new(addr);

    let dead = free_port();
    let redirecting = TestReceiver::scripted(Arc::new(|_, _| Reply {
        status: 302,
        headers: vec![(
            "location",
            format!("https://elsewhere.example/callback?token={LOCATION_SECRET}"),
        )],
        ..Default::default()
    }))
    .await;
    let urls = [
        format!("http://127.0.0.1:{dead}/h?api_key={QUERY_SECRET}"),
        format!("http://127.0.0.1:{dead}/services/{PATH_SECRET}/B0/XX"),
        format!("{}?api_key={QUERY_SECRET}", redirecting.url),
    ];
    let mut subs = Vec::new();
    for url in &urls {
        subs.push(api.subscribe(url, json!({})).await);
    }
    env.source
        .connect()
        .await
        .batch_execute("insert into public.orders (id, status) values (1, 'new')")
        .await
        .unwrap();

    // Two failed attempts of each subscription's delivery, as the API shows them.
    let mut errors: Vec<String> = Vec::new();
    for sub in &subs {
        let id = sub["id"].as_str().unwrap();
        let detail: Value = eventually(&format!("two failed attempts of {id}"), WAIT, || async {
            let (_, page) = api
                .call(
                    reqwest::Method::GET,
                    &format!("/v1/deliveries?subscription_id={id}"),
                    None,
                )
                .await;
            let delivery = page["data"].as_array()?.first()?["id"].as_i64()?;
            let (_, detail) = api
                .call(
                    reqwest::Method::GET,
                    &format!("/v1/deliveries/{delivery}"),
                    None,
                )
                .await;
            (detail["attempts"].as_array()?.len() >= 2).then_some(detail)
        })
        .await;
        let text = detail.to_string();
        for secret in [QUERY_SECRET, PATH_SECRET, LOCATION_SECRET] {
            assert!(
                !text.contains(secret),
                "the delivery view shows {secret}: {text}"
            );
        }
        for a in detail["attempts"].as_array().unwrap() {
            errors.push(a["error"].as_str().unwrap_or_default().to_owned());
        }
        // The subscription itself shows the whole URL.
        let (_, shown) = api
            .call(
                reqwest::Method::GET,
                &format!("/v1/subscriptions/{id}"),
                None,
            )
            .await;
        assert_eq!(shown["url"], sub["url"]);
    }
    // The errors still say where: scheme, host and port.
    let refused = format!("http://127.0.0.1:{dead}");
    assert!(errors.iter().any(|e| e.contains(&refused)), "{errors:?}");
    assert!(
        errors
            .iter()
            .any(|e| e.contains("Location: https://elsewhere.example:443")),
        "{errors:?}"
    );

    let metrics = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(&log_path).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(log.contains("attempt failed"), "the failures were logged");
    for secret in [QUERY_SECRET, PATH_SECRET, LOCATION_SECRET] {
        if let Some(line) = log.lines().find(|l| l.contains(secret)) {
            panic!("{secret} in the trace log: {line}");
        }
        assert!(!metrics.contains(secret), "{secret} in /metrics");
    }

    // The store: every row of attempts, deliveries and subscriptions (whose URL is
    // sealed under the master key), as text.
    let store = env.store.connect().await;
    for table in ["attempts", "deliveries", "subscriptions"] {
        let row = store
            .query_one(
                &format!(
                    "select count(*) filter (where t::text like '%' || $1 || '%'
                                                or t::text like '%' || $2 || '%'
                                                or t::text like '%' || $3 || '%'),
                            count(*)
                       from hookrelay.{table} t"
                ),
                &[&QUERY_SECRET, &PATH_SECRET, &LOCATION_SECRET],
            )
            .await
            .unwrap();
        let (hits, rows): (i64, i64) = (row.get(0), row.get(1));
        assert!(rows > 0, "no rows in {table}");
        assert_eq!(
            hits, 0,
            "{hits} of {rows} rows of {table} hold a URL secret"
        );
    }
}
