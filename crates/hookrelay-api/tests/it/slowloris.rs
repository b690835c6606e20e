//! Slow clients against the real admin listener (`hookrelay_api::serve` on a socket):
//! partial headers, silence, stalled bodies and idle keep-alives are all closed by the
//! server within the configured limits, the number of open connections never passes
//! the cap, and a well-behaved client is still answered meanwhile.

use std::time::{Duration, Instant};

use hookrelay_api::{serve, ConnectionGauge, ServeLimits};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use crate::harness::{TestApi, TOKEN};

const CAP: usize = 16;

async fn start(api: &TestApi) -> (std::net::SocketAddr, ConnectionGauge) {
    start_with(
        api,
        ServeLimits {
            header_read_timeout: Duration::from_millis(300),
            idle_timeout: Duration::from_millis(600),
            max_connections: CAP,
            max_connections_per_peer: CAP,
        },
    )
    .await
}

async fn start_with(api: &TestApi, limits: ServeLimits) -> (std::net::SocketAddr, ConnectionGauge) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let gauge = ConnectionGauge::default();
    tokio::spawn(serve(
        listener,
        hookrelay_api::router(api.state.clone()),
        limits,
        gauge.clone(),
        std::future::pending(),
    ));
    (addr, gauge)
}

/// Reads until the server closes the connection; returns what it sent.
async fn read_to_close(sock: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    tokio::time::timeout(within, async {
        let mut buf = [0u8; 1024];
        loop {
            match sock.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .ok()?;
    Some(got)
}

async fn healthz(addr: std::net::SocketAddr) -> String {
    let mut sock = TcpStream::connect(addr).await.expect("connect");
    sock.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .expect("write");
    let got = read_to_close(&mut sock, Duration::from_secs(30))
        .await
        .expect("answered");
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_and_capped() {
    let api = TestApi::new().await;
    let (addr, gauge) = start(&api).await;

    // 200 attackers: half send a partial header, half nothing at all.
    let mut attackers = Vec::new();
    for i in 0..200 {
        let mut sock = TcpStream::connect(addr).await.expect("connect");
        if i % 2 == 0 {
            sock.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: ")
                .await
                .expect("write");
        }
        attackers.push(sock);
    }
    // A polite client is answered while the attack lasts.
    let polite = tokio::spawn(healthz(addr));
    let started = Instant::now();
    let mut peak = 0;
    for sock in &mut attackers {
        peak = peak.max(gauge.open());
        // Each one is closed by the server (never answered with a 200).
        let got = read_to_close(sock, Duration::from_secs(30))
            .await
            .expect("the server closes a slow connection");
        assert!(!String::from_utf8_lossy(&got).contains("200 OK"));
    }
    let answer = polite.await.expect("polite client");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(peak <= CAP, "open connections peaked at {peak}, cap {CAP}");
    // 200 connections, CAP at a time, each cut at 300 ms: about 4 s; far less than
    // "forever".
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_bodies_and_idle_keep_alives_are_closed() {
    let api = TestApi::new().await;
    let (addr, gauge) = start(&api).await;

    // Headers promise a body that never comes: the idle limit closes it.
    let mut stalled = TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST /v1/replay HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\n\
         content-type: application/json\r\ncontent-length: 100\r\n\r\n{{"
    );
    stalled.write_all(head.as_bytes()).await.expect("write");
    let t = Instant::now();
    read_to_close(&mut stalled, Duration::from_secs(10))
        .await
        .expect("stalled body closed");
    assert!(
        t.elapsed() >= Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );

    // A keep-alive connection left idle after its answer is closed too.
    let mut idle = TcpStream::connect(addr).await.expect("connect");
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    let got = read_to_close(&mut idle, Duration::from_secs(10))
        .await
        .expect("idle keep-alive closed");
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));

    // Both gone from the server's side as well.
    let deadline = Instant::now() + Duration::from_secs(10);
    while gauge.open() > 0 {
        assert!(Instant::now() < deadline, "{} still open", gauge.open());
        tokio::task::yield_now().await;
    }
}

/// A connection from `from` (any address of 127.0.0.0/8 is this host) to `addr`.
async fn connect_from(from: [u8; 4], addr: std::net::SocketAddr) -> TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.bind(std::net::SocketAddr::from((from, 0)))
        .expect("bind");
    sock.connect(addr).await.expect("connect")
}

/// One peer flooding past its cap loses its own oldest half-open connections; another
/// peer's connections are untouched and it is still answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_peer_costs_only_itself() {
    let api = TestApi::new().await;
    let (addr, gauge) = start_with(
        &api,
        ServeLimits {
            header_read_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            max_connections: 64,
            max_connections_per_peer: 8,
        },
    )
    .await;
    // The bystander's half-open connections, opened first (the oldest of all).
    let mut bystander = Vec::new();
    for _ in 0..4 {
        let mut sock = connect_from([127, 0, 0, 2], addr).await;
        sock.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
            .await
            .expect("write");
        bystander.push(sock);
    }
    let mut flood = Vec::new();
    for _ in 0..40 {
        let mut sock = connect_from([127, 0, 0, 1], addr).await;
        sock.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
            .await
            .expect("write");
        flood.push(sock);
    }
    // The flooder's first 32 are closed by the server to make room for its newest...
    for sock in &mut flood[..32] {
        read_to_close(sock, Duration::from_secs(10))
            .await
            .expect("the flooder's older connections are closed");
    }
    assert!(
        gauge.open() <= 4 + 8,
        "{} connections hold a slot",
        gauge.open()
    );
    // ...and the bystander's are all still open: each finishes its request now.
    for sock in &mut bystander {
        sock.write_all(b"connection: close\r\n\r\n")
            .await
            .expect("write");
        let got = read_to_close(sock, Duration::from_secs(10))
            .await
            .expect("answered");
        assert!(
            String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&got)
        );
    }
    // The flooder itself is still served: its newest connection pushes out an old one.
    let mut late = connect_from([127, 0, 0, 1], addr).await;
    late.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .expect("write");
    let got = read_to_close(&mut late, Duration::from_secs(10))
        .await
        .expect("answered");
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
}

/// A request head well past `MAX_HEAD_BYTES` is answered 431 at once, not buffered
/// (the bound is the read buffer's: a head that arrives whole in one read can pass it
/// by that read's size).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_request_head_is_refused() {
    let api = TestApi::new().await;
    let (addr, _) = start(&api).await;
    let mut sock = TcpStream::connect(addr).await.expect("connect");
    let filler = "a".repeat(hookrelay_api::MAX_HEAD_BYTES * 2);
    let head = format!("GET /healthz HTTP/1.1\r\nhost: x\r\nx-filler: {filler}\r\n\r\n");
    // The server may close before it has read everything: a failed write is fine.
    let _ = sock.write_all(head.as_bytes()).await;
    let got = read_to_close(&mut sock, Duration::from_secs(10))
        .await
        .expect("answered and closed");
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 431"), "{got}");
    // Within the limit, the same request is answered.
    let mut sock = TcpStream::connect(addr).await.expect("connect");
    let filler = "a".repeat(hookrelay_api::MAX_HEAD_BYTES / 2);
    let head = format!(
        "GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\nx-filler: {filler}\r\n\r\n"
    );
    sock.write_all(head.as_bytes()).await.expect("write");
    let got = read_to_close(&mut sock, Duration::from_secs(10))
        .await
        .expect("answered");
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
}
