//! Bearer tokens on /v1, none on the probes; unknown routes and methods answered as
//! problems too.

use std::sync::Arc;

use axum::{
    body::Body,
    http::{header, Method, Request, StatusCode},
};
use hookrelay_api::{router, ApiState, SourcesReadiness};
use hookrelay_core::status::{SourceState, SourceStatus};
use hookrelay_store::Store;
use tower::ServiceExt;

use crate::harness::{TestApi, TOKEN};

fn request(method: Method, path: &str, auth: Option<&str>) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(path);
    if let Some(auth) = auth {
        b = b.header(header::AUTHORIZATION, auth);
    }
    b.body(Body::empty()).expect("request")
}

#[tokio::test]
async fn v1_routes_need_a_valid_token() {
    let api = TestApi::new().await;
    let good = format!("Bearer {TOKEN}");
    let cases = [
        ("no header", None, StatusCode::UNAUTHORIZED),
        ("wrong token", Some("Bearer nope"), StatusCode::UNAUTHORIZED),
        (
            "token prefix",
            Some("Bearer test"),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "basic scheme",
            Some("Basic dGVzdC10b2tlbg=="),
            StatusCode::UNAUTHORIZED,
        ),
        ("good token", Some(good.as_str()), StatusCode::OK),
    ];
    for path in [
        "/v1/subscriptions",
        "/v1/deliveries",
        "/v1/events",
        "/v1/sources",
    ] {
        for (case, auth, want) in cases {
            let res = api.send(request(Method::GET, path, auth)).await;
            if want == StatusCode::UNAUTHORIZED {
                res.assert_problem(want, None, &format!("{path} {case}"));
                assert_eq!(
                    res.headers
                        .get(header::WWW_AUTHENTICATE)
                        .map(|v| v.as_bytes()),
                    Some(&b"Bearer"[..]),
                    "{path} {case}"
                );
            } else {
                assert_eq!(res.status, want, "{path} {case}");
            }
        }
    }
    // Auth comes before routing: unknown /v1 paths and methods look the same as
    // known ones without a token, so routes cannot be discovered.
    for (method, path) in [
        (Method::GET, "/v1/nope"),
        (Method::GET, "/v1"),
        (Method::GET, "/v1/"),
        (Method::DELETE, "/v1/events"),
        (Method::GET, "/v1/subscriptions/sub_x/secrets"),
    ] {
        let res = api.send(request(method.clone(), path, None)).await;
        res.assert_problem(StatusCode::UNAUTHORIZED, None, &format!("{method} {path}"));
    }
    // Auth comes before input checks: a bad body without a token is still a 401.
    api.send(request(Method::POST, "/v1/subscriptions", None))
        .await
        .assert_problem(StatusCode::UNAUTHORIZED, None, "post without token");
}

#[tokio::test]
async fn insecure_no_auth_serves_without_tokens() {
    let api = TestApi::with(|s| {
        s.tokens.clear();
        s.insecure_no_auth = true;
    })
    .await;
    let res = api
        .send(request(Method::GET, "/v1/subscriptions", None))
        .await;
    assert_eq!(res.status, StatusCode::OK);
}

#[tokio::test]
async fn probes_need_no_token() {
    let api = TestApi::new().await;
    let res = api.send(request(Method::GET, "/healthz", None)).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.json(), serde_json::json!({"status": "ok"}));
    let res = api.send(request(Method::GET, "/readyz", None)).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.json(), serde_json::json!({"status": "ready"}));
}

#[tokio::test]
async fn readyz_is_503_naming_the_sources_not_capturing_yet() {
    let source = |name: &str, state: SourceState| {
        let s = SourceStatus::new(name, "postgres");
        s.set_error("secret cause".into());
        s.set_state(state);
        s
    };
    let api = TestApi::with(|s| {
        s.sources = SourcesReadiness::new(vec![
            source("shop", SourceState::Running),
            source("legacy", SourceState::Starting),
            source("docs", SourceState::Standby),
        ])
    })
    .await;
    let res = api.send(request(Method::GET, "/readyz", None)).await;
    assert_eq!(res.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        res.headers.get(header::CONTENT_TYPE).map(|v| v.as_bytes()),
        Some(&b"application/problem+json"[..])
    );
    let p = res.json();
    assert_eq!(p["status"], 503);
    assert_eq!(
        p["detail"],
        "sources still setting up: legacy (connecting), docs (standby)"
    );
    assert_eq!(
        p["sources"],
        serde_json::json!([
            { "name": "legacy", "state": "connecting", "ready": false },
            { "name": "docs", "state": "standby", "ready": false },
        ])
    );
}

#[tokio::test]
async fn readyz_is_503_when_the_store_is_down() {
    // Nothing listens on port 1: connections are refused at once.
    let store = Store::connect("postgres://postgres@127.0.0.1:1/none", 1).expect("url");
    let app = router(ApiState {
        store,
        tokens: vec![TOKEN.to_owned()],
        insecure_no_auth: false,
        allow_networks: Vec::new(),
        dispatch_signal: Arc::default(),
        sources: Default::default(),
        catalog: Default::default(),
        dispatch_stats: Default::default(),
        test_sender: Default::default(),
        tasks: Default::default(),
    });
    let res = app
        .clone()
        .oneshot(request(Method::GET, "/readyz", None))
        .await
        .expect("infallible");
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        res.headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.as_bytes()),
        Some(&b"application/problem+json"[..])
    );
    // A store call through /v1 is a 503 too, and the body does not leak the cause.
    let res = app
        .oneshot(request(
            Method::GET,
            "/v1/subscriptions",
            Some(&format!("Bearer {TOKEN}")),
        ))
        .await
        .expect("infallible");
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .expect("body");
    let text = String::from_utf8_lossy(&body);
    assert!(
        !text.contains("127.0.0.1") && !text.contains("refused"),
        "{text}"
    );
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let api = TestApi::new().await;
    api.get("/v1/nope")
        .await
        .assert_problem(StatusCode::NOT_FOUND, None, "unknown /v1 route");
    api.get("/nope")
        .await
        .assert_problem(StatusCode::NOT_FOUND, None, "unknown route");
    api.delete("/v1/events").await.assert_problem(
        StatusCode::METHOD_NOT_ALLOWED,
        None,
        "DELETE /v1/events",
    );
    api.get("/v1/subscriptions/sub_nope").await.assert_problem(
        StatusCode::NOT_FOUND,
        None,
        "unknown subscription",
    );
    api.patch(
        "/v1/subscriptions/sub_nope",
        serde_json::json!({"enabled": true}),
    )
    .await
    .assert_problem(StatusCode::NOT_FOUND, None, "patch unknown subscription");
    api.get("/v1/events/evt_nope").await.assert_problem(
        StatusCode::NOT_FOUND,
        None,
        "unknown event",
    );
    api.get("/v1/deliveries/424242").await.assert_problem(
        StatusCode::NOT_FOUND,
        None,
        "unknown delivery",
    );
    api.post("/v1/deliveries/424242/replay", serde_json::json!({}))
        .await
        .assert_problem(StatusCode::NOT_FOUND, None, "replay unknown delivery");
    api.post(
        "/v1/replay",
        serde_json::json!({"subscription_id": "sub_nope"}),
    )
    .await
    .assert_problem(
        StatusCode::NOT_FOUND,
        None,
        "bulk replay unknown subscription",
    );
}
