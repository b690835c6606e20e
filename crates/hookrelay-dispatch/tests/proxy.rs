//! Proxies cannot carry a delivery past the address guard: the
//! environment's proxy is ignored, and an explicit `dispatch.proxy` is used only for
//! targets the guard allows. Both "servers" here are real sockets on 127.0.0.1 that
//! record the request line they were sent. This test binary sets `HTTP_PROXY` and
//! friends for its whole process, so it lives alone in its own file.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use hookrelay_core::config::DispatchConfig;
use hookrelay_dispatch::{attempt, build_client};
use hookrelay_store::{ClaimedDelivery, OutcomeStatus};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

/// A socket that answers every HTTP request `200 ok` and records its request line.
struct Recorder {
    port: u16,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Recorder {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let seen = lines.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    // Headers, then the body its Content-Length announces.
                    let body_len = loop {
                        let n = sock.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..end]).to_string();
                            let len = head
                                .lines()
                                .find_map(|l| {
                                    let (k, v) = l.split_once(':')?;
                                    k.eq_ignore_ascii_case("content-length")
                                        .then(|| v.trim().parse::<usize>().ok())?
                                })
                                .unwrap_or(0);
                            seen.lock()
                                .unwrap()
                                .push(head.lines().next().unwrap_or("").to_owned());
                            break end + 4 + len;
                        }
                    };
                    while buf.len() < body_len {
                        let n = sock.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            break;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    let _ = sock
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                        )
                        .await;
                });
            }
        });
        Self { port, lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

fn delivery(url: String) -> ClaimedDelivery {
    ClaimedDelivery {
        delivery_id: 1,
        attempt: 1,
        subscription_id: "sub_test".into(),
        url: url.into(),
        secrets: ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned()].into(),
        headers: Arc::new([]),
        event_id: "evt_test".into(),
        body: "{}".into(),
        run: None,
    }
}

fn config(proxy: String, allow: &[&str]) -> DispatchConfig {
    DispatchConfig {
        timeout: Duration::from_secs(5),
        proxy,
        allow_networks: allow.iter().map(|n| n.parse().expect("cidr")).collect(),
        ..DispatchConfig::default()
    }
}

#[tokio::test]
async fn proxies_never_bypass_the_address_guard() {
    let proxy = Recorder::start().await;
    let target = Recorder::start().await;
    let proxy_url = format!("http://127.0.0.1:{}", proxy.port);
    for var in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "all_proxy",
    ] {
        std::env::set_var(var, &proxy_url);
    }
    std::env::remove_var("NO_PROXY");
    std::env::remove_var("no_proxy");
    // `localhost` resolves to 127.0.0.1: refused unless allowed, whatever the proxy.
    let by_name = format!("http://localhost:{}/hook", target.port);
    let by_ip = format!("http://127.0.0.1:{}/hook", target.port);

    // (case, dispatch.proxy, allow_networks, url, delivered?, through the proxy?)
    type Case<'a> = (&'a str, String, &'a [&'a str], &'a String, bool, bool);
    let cases: &[Case] = &[
        (
            "env proxy, name",
            String::new(),
            &[],
            &by_name,
            false,
            false,
        ),
        ("env proxy, ip", String::new(), &[], &by_ip, false, false),
        (
            "env proxy, allowed",
            String::new(),
            &["127.0.0.0/8"],
            &by_name,
            true,
            false,
        ),
        (
            "explicit proxy, name",
            proxy_url.clone(),
            &[],
            &by_name,
            false,
            false,
        ),
        (
            "explicit proxy, ip",
            proxy_url.clone(),
            &[],
            &by_ip,
            false,
            false,
        ),
        (
            "explicit proxy, allowed",
            proxy_url.clone(),
            &["127.0.0.0/8"],
            &by_name,
            true,
            true,
        ),
    ];
    for (case, proxy_cfg, allow, url, delivered, proxied) in cases {
        let cfg = config(proxy_cfg.clone(), allow);
        let client = build_client(&cfg).expect("client");
        let (before_proxy, before_target) = (proxy.lines().len(), target.lines().len());
        let outcome = attempt(&client, &cfg, delivery((*url).clone())).await;
        let through_proxy = proxy.lines()[before_proxy..].to_vec();
        let direct = target.lines()[before_target..].to_vec();
        if *delivered {
            assert_eq!(
                outcome.status,
                OutcomeStatus::Succeeded,
                "{case}: {outcome:?}"
            );
        } else {
            assert_ne!(outcome.status, OutcomeStatus::Succeeded, "{case}");
            let error = outcome.error.unwrap_or_default();
            assert!(error.contains("public address"), "{case}: {error}");
            assert!(
                through_proxy.is_empty() && direct.is_empty(),
                "{case}: sent"
            );
        }
        if *proxied {
            // A forward proxy is sent the absolute URL.
            assert_eq!(through_proxy, [format!("POST {url} HTTP/1.1")], "{case}");
            assert!(direct.is_empty(), "{case}");
        } else {
            assert!(
                through_proxy.is_empty(),
                "{case}: went through the env proxy"
            );
        }
    }
}
