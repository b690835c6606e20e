//! Bad input, table-driven: every case is answered as problem+json with the status the
//! contract gives (400 unreadable, 422 unacceptable) and names the field at fault.

use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::harness::TestApi;

const BAD: StatusCode = StatusCode::BAD_REQUEST;
const UNACCEPTABLE: StatusCode = StatusCode::UNPROCESSABLE_ENTITY;

#[tokio::test]
async fn bad_input_names_the_field() {
    let api = TestApi::new().await;
    let sub = api.subscribe(json!({"url": "https://example.com/"})).await;
    let sub_path = format!("/v1/subscriptions/{}", sub["id"].as_str().expect("id"));
    let rotate_path = format!("{sub_path}/rotate-secret");
    let long = "x".repeat(1025);
    let subs = "/v1/subscriptions";
    let with_url = |extra: serde_json::Value| {
        let mut body = json!({"url": "https://example.com/"});
        for (k, v) in extra.as_object().expect("object") {
            body[k] = v.clone();
        }
        body.to_string()
    };
    // (case, method, path, body, status, field)
    let cases: Vec<(&str, Method, &str, String, StatusCode, &str)> = vec![
        (
            "malformed JSON",
            Method::POST,
            subs,
            r#"{"url": "#.into(),
            BAD,
            "body",
        ),
        (
            "trailing bytes",
            Method::POST,
            subs,
            r#"{"url": "https://example.com/"} x"#.into(),
            BAD,
            "body",
        ),
        ("empty body", Method::POST, subs, "".into(), BAD, "body"),
        (
            "not an object",
            Method::POST,
            subs,
            "[1]".into(),
            BAD,
            "body",
        ),
        ("missing url", Method::POST, subs, "{}".into(), BAD, "url"),
        (
            "url wrong type",
            Method::POST,
            subs,
            r#"{"url": 5}"#.into(),
            BAD,
            "url",
        ),
        (
            "enabled wrong type",
            Method::POST,
            subs,
            with_url(json!({"enabled": "yes"})),
            BAD,
            "enabled",
        ),
        (
            "event type wrong type",
            Method::POST,
            subs,
            with_url(json!({"event_types": ["a.b", 3]})),
            BAD,
            "event_types[1]",
        ),
        (
            "header value wrong type",
            Method::POST,
            subs,
            with_url(json!({"headers": {"X-A": 1}})),
            BAD,
            "headers.X-A",
        ),
        (
            "unknown field",
            Method::POST,
            subs,
            with_url(json!({"colour": "red"})),
            BAD,
            "colour",
        ),
        (
            "not a url",
            Method::POST,
            subs,
            r#"{"url": "not a url"}"#.into(),
            UNACCEPTABLE,
            "url",
        ),
        (
            "relative url",
            Method::POST,
            subs,
            r#"{"url": "/hooks"}"#.into(),
            UNACCEPTABLE,
            "url",
        ),
        (
            "ftp url",
            Method::POST,
            subs,
            r#"{"url": "ftp://example.com/"}"#.into(),
            UNACCEPTABLE,
            "url",
        ),
        (
            "loopback url",
            Method::POST,
            subs,
            r#"{"url": "http://127.0.0.1:9000/"}"#.into(),
            UNACCEPTABLE,
            "url",
        ),
        (
            "private url",
            Method::POST,
            subs,
            r#"{"url": "http://10.1.2.3/"}"#.into(),
            UNACCEPTABLE,
            "url",
        ),
        (
            "metadata url",
            Method::POST,
            subs,
            r#"{"url": "http://169.254.169.254/"}"#.into(),
            UNACCEPTABLE,
            "url",
        ),
        (
            "localhost url",
            Method::POST,
            subs,
            r#"{"url": "http://localhost:8080/"}"#.into(),
            UNACCEPTABLE,
            "url",
        ),
        (
            "ipv6 loopback url",
            Method::POST,
            subs,
            r#"{"url": "http://[::1]/"}"#.into(),
            UNACCEPTABLE,
            "url",
        ),
        (
            "bad glob",
            Method::POST,
            subs,
            with_url(json!({"event_types": ["orders.*", "orders\ndrop"]})),
            UNACCEPTABLE,
            "event_types[1]",
        ),
        (
            "empty event types",
            Method::POST,
            subs,
            with_url(json!({"event_types": []})),
            UNACCEPTABLE,
            "event_types",
        ),
        (
            "bad source",
            Method::POST,
            subs,
            with_url(json!({"sources": ["Shop"]})),
            UNACCEPTABLE,
            "sources[0]",
        ),
        (
            "reserved header",
            Method::POST,
            subs,
            with_url(json!({"headers": {"Content-Type": "text/plain"}})),
            UNACCEPTABLE,
            "headers.Content-Type",
        ),
        (
            "signature header",
            Method::POST,
            subs,
            with_url(json!({"headers": {"webhook-signature": "v1,x"}})),
            UNACCEPTABLE,
            "headers.webhook-signature",
        ),
        (
            "bad header name",
            Method::POST,
            subs,
            with_url(json!({"headers": {"X A": "1"}})),
            UNACCEPTABLE,
            "headers.X A",
        ),
        (
            "bad header value",
            Method::POST,
            subs,
            with_url(json!({"headers": {"X-A": "a\r\nb"}})),
            UNACCEPTABLE,
            "headers.X-A",
        ),
        (
            "bad ordering",
            Method::POST,
            subs,
            with_url(json!({"ordering": "fifo"})),
            UNACCEPTABLE,
            "ordering",
        ),
        (
            "bad secret",
            Method::POST,
            subs,
            with_url(json!({"secret": "hunter2"})),
            UNACCEPTABLE,
            "secret",
        ),
        (
            "short secret",
            Method::POST,
            subs,
            with_url(json!({"secret": "whsec_AAAA"})),
            UNACCEPTABLE,
            "secret",
        ),
        (
            "long description",
            Method::POST,
            subs,
            with_url(json!({"description": long})),
            UNACCEPTABLE,
            "description",
        ),
        (
            "patch url null",
            Method::PATCH,
            &sub_path,
            r#"{"url": null}"#.into(),
            BAD,
            "url",
        ),
        (
            "patch secret",
            Method::PATCH,
            &sub_path,
            r#"{"secret": "whsec_x"}"#.into(),
            BAD,
            "secret",
        ),
        (
            "patch private url",
            Method::PATCH,
            &sub_path,
            r#"{"url": "http://192.168.1.1/"}"#.into(),
            UNACCEPTABLE,
            "url",
        ),
        (
            "patch bad glob",
            Method::PATCH,
            &sub_path,
            r#"{"event_types": ["a\tb"]}"#.into(),
            UNACCEPTABLE,
            "event_types[0]",
        ),
        (
            "patch malformed",
            Method::PATCH,
            &sub_path,
            "{".into(),
            BAD,
            "body",
        ),
        (
            "rotate bad grace",
            Method::POST,
            &rotate_path,
            r#"{"grace": "soon"}"#.into(),
            UNACCEPTABLE,
            "grace",
        ),
        (
            "rotate huge grace",
            Method::POST,
            &rotate_path,
            r#"{"grace": "400d"}"#.into(),
            UNACCEPTABLE,
            "grace",
        ),
        (
            "rotate unknown field",
            Method::POST,
            &rotate_path,
            r#"{"secret": "x"}"#.into(),
            BAD,
            "secret",
        ),
        (
            "delivery id not a number",
            Method::GET,
            "/v1/deliveries/abc",
            "".into(),
            BAD,
            "id",
        ),
        (
            "delivery id zero",
            Method::GET,
            "/v1/deliveries/0",
            "".into(),
            BAD,
            "id",
        ),
        (
            "delivery id too big",
            Method::GET,
            "/v1/deliveries/99999999999999999999",
            "".into(),
            BAD,
            "id",
        ),
        (
            "replay id not a number",
            Method::POST,
            "/v1/deliveries/x/replay",
            "".into(),
            BAD,
            "id",
        ),
        (
            "bad status filter",
            Method::GET,
            "/v1/deliveries?status=lost",
            "".into(),
            BAD,
            "status",
        ),
        (
            "limit zero",
            Method::GET,
            "/v1/deliveries?limit=0",
            "".into(),
            BAD,
            "limit",
        ),
        (
            "limit too big",
            Method::GET,
            "/v1/deliveries?limit=1001",
            "".into(),
            BAD,
            "limit",
        ),
        (
            "limit not a number",
            Method::GET,
            "/v1/deliveries?limit=ten",
            "".into(),
            BAD,
            "limit",
        ),
        (
            "bad since",
            Method::GET,
            "/v1/deliveries?since=yesterday",
            "".into(),
            BAD,
            "since",
        ),
        (
            "since without offset",
            Method::GET,
            "/v1/deliveries?since=2026-01-01T00:00:00",
            "".into(),
            BAD,
            "since",
        ),
        (
            "bad until",
            Method::GET,
            "/v1/deliveries?until=2026-13-01T00:00:00Z",
            "".into(),
            BAD,
            "until",
        ),
        (
            "bad cursor",
            Method::GET,
            "/v1/deliveries?cursor=garbage",
            "".into(),
            BAD,
            "cursor",
        ),
        (
            "unknown query param",
            Method::GET,
            "/v1/deliveries?colour=red",
            "".into(),
            BAD,
            "colour",
        ),
        (
            "repeated query param",
            Method::GET,
            "/v1/deliveries?status=failed&status=pending",
            "".into(),
            BAD,
            "status",
        ),
        (
            "events bad limit",
            Method::GET,
            "/v1/events?limit=-1",
            "".into(),
            BAD,
            "limit",
        ),
        (
            "events bad since",
            Method::GET,
            "/v1/events?since=now",
            "".into(),
            BAD,
            "since",
        ),
        (
            "events unknown param",
            Method::GET,
            "/v1/events?status=failed",
            "".into(),
            BAD,
            "status",
        ),
        (
            "bulk replay without subscription",
            Method::POST,
            "/v1/replay",
            "{}".into(),
            BAD,
            "subscription_id",
        ),
        (
            "bulk replay bad status",
            Method::POST,
            "/v1/replay",
            r#"{"subscription_id": "sub_x", "status": "lost"}"#.into(),
            UNACCEPTABLE,
            "status",
        ),
        (
            "bulk replay bad since",
            Method::POST,
            "/v1/replay",
            r#"{"subscription_id": "sub_x", "since": "monday"}"#.into(),
            UNACCEPTABLE,
            "since",
        ),
        (
            "bulk replay wrong type",
            Method::POST,
            "/v1/replay",
            r#"{"subscription_id": 7}"#.into(),
            BAD,
            "subscription_id",
        ),
    ];
    for (case, method, path, body, status, field) in cases {
        let res = api.raw(method, path, &body).await;
        res.assert_problem(status, Some(field), case);
        let detail = res.json()["detail"].as_str().unwrap_or_default().to_owned();
        assert!(!detail.is_empty(), "{case}: empty detail");
    }
    // Nothing above was saved.
    let list = api.get("/v1/subscriptions").await.json();
    assert_eq!(list["data"].as_array().expect("data").len(), 1);
}

#[tokio::test]
async fn allow_networks_admit_private_endpoints() {
    let api = TestApi::with(|s| {
        s.allow_networks = vec!["127.0.0.0/8".parse().expect("cidr")];
    })
    .await;
    for url in ["http://127.0.0.1:9000/hook", "http://localhost:9000/hook"] {
        let res = api.post("/v1/subscriptions", json!({"url": url})).await;
        assert_eq!(
            res.status,
            StatusCode::CREATED,
            "{url}: {}",
            String::from_utf8_lossy(&res.body)
        );
        assert_eq!(res.json()["url"], url);
    }
    for url in ["http://10.0.0.1/", "http://[::1]/"] {
        api.post("/v1/subscriptions", json!({"url": url}))
            .await
            .assert_problem(UNACCEPTABLE, Some("url"), url);
    }
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let api = TestApi::new().await;
    let body = format!(
        r#"{{"url": "https://example.com/", "description": "{}"}}"#,
        "x".repeat(300 * 1024)
    );
    api.raw(Method::POST, "/v1/subscriptions", &body)
        .await
        .assert_problem(StatusCode::PAYLOAD_TOO_LARGE, None, "300 KiB body");
}

/// A NUL fits in JSON (`\u0000`) and in a URL (`%00`) but in no store column: every
/// string field, path segment and query parameter that carries one is a 400 naming it,
/// never a 500.
#[tokio::test]
async fn nul_anywhere_is_a_bad_request_naming_the_field() {
    let api = TestApi::new().await;
    let sub = api.subscribe(json!({"url": "https://example.com/"})).await;
    let id = sub["id"].as_str().expect("id").to_owned();
    let sub_path = format!("/v1/subscriptions/{id}");
    let nul = "a\u{0}b";
    let create = |field: &str, value: serde_json::Value| {
        let mut body = json!({"url": "https://example.com/"});
        body[field] = value;
        body.to_string()
    };
    // (method, path, body, field)
    let mut cases: Vec<(Method, String, String, &str)> = vec![
        (
            Method::POST,
            "/v1/subscriptions".into(),
            json!({"url": format!("https://example.com/{nul}")}).to_string(),
            "url",
        ),
        (
            Method::POST,
            "/v1/subscriptions".into(),
            create("description", json!(nul)),
            "description",
        ),
        (
            Method::POST,
            "/v1/subscriptions".into(),
            create("secret", json!(nul)),
            "secret",
        ),
        (
            Method::POST,
            "/v1/subscriptions".into(),
            create("ordering", json!(nul)),
            "ordering",
        ),
        (
            Method::POST,
            "/v1/subscriptions".into(),
            create("event_types", json!(["orders.*", nul])),
            "event_types[1]",
        ),
        (
            Method::POST,
            "/v1/subscriptions".into(),
            create("sources", json!([nul])),
            "sources[0]",
        ),
        (
            Method::POST,
            "/v1/subscriptions".into(),
            create("headers", json!({"X-A": nul})),
            "headers.X-A",
        ),
        (
            Method::POST,
            "/v1/subscriptions".into(),
            create("headers", json!({nul: "v"})),
            "headers",
        ),
        (
            Method::PATCH,
            sub_path.clone(),
            json!({"url": format!("https://example.com/{nul}")}).to_string(),
            "url",
        ),
        (
            Method::PATCH,
            sub_path.clone(),
            json!({"description": nul}).to_string(),
            "description",
        ),
        (
            Method::PATCH,
            sub_path.clone(),
            json!({"event_types": [nul]}).to_string(),
            "event_types[0]",
        ),
        (
            Method::PATCH,
            sub_path.clone(),
            json!({"sources": [nul]}).to_string(),
            "sources[0]",
        ),
        (
            Method::PATCH,
            sub_path.clone(),
            json!({"headers": {"X-A": nul}}).to_string(),
            "headers.X-A",
        ),
        (
            Method::PATCH,
            sub_path.clone(),
            json!({"ordering": nul}).to_string(),
            "ordering",
        ),
        (
            Method::POST,
            format!("{sub_path}/rotate-secret"),
            json!({"grace": nul}).to_string(),
            "grace",
        ),
        (
            Method::POST,
            "/v1/replay".into(),
            json!({"subscription_id": nul}).to_string(),
            "subscription_id",
        ),
        (
            Method::POST,
            "/v1/replay".into(),
            json!({"subscription_id": id, "status": nul}).to_string(),
            "status",
        ),
        (
            Method::POST,
            "/v1/replay".into(),
            json!({"subscription_id": id, "event_type": nul}).to_string(),
            "event_type",
        ),
        (
            Method::POST,
            "/v1/replay".into(),
            json!({"subscription_id": id, "since": nul}).to_string(),
            "since",
        ),
    ];
    for path in [
        "/v1/subscriptions/sub%00x",
        "/v1/subscriptions/sub%00x/rotate-secret",
        "/v1/events/evt%00x",
        "/v1/deliveries/1%00",
        "/v1/deliveries/1%00/replay",
    ] {
        let method = if path.ends_with("rotate-secret") || path.ends_with("replay") {
            Method::POST
        } else {
            Method::GET
        };
        cases.push((method, path.into(), String::new(), "id"));
    }
    cases.push((
        Method::PATCH,
        "/v1/subscriptions/sub%00x".into(),
        "{}".into(),
        "id",
    ));
    cases.push((
        Method::DELETE,
        "/v1/subscriptions/sub%00x".into(),
        String::new(),
        "id",
    ));
    for param in ["source", "event_type", "since", "until", "limit", "cursor"] {
        cases.push((
            Method::GET,
            format!("/v1/events?{param}=a%00b"),
            String::new(),
            param,
        ));
    }
    for param in [
        "subscription_id",
        "status",
        "event_type",
        "since",
        "until",
        "limit",
        "cursor",
    ] {
        cases.push((
            Method::GET,
            format!("/v1/deliveries?{param}=a%00b"),
            String::new(),
            param,
        ));
    }
    for (method, path, body, field) in cases {
        let case = format!("{method} {path} {body}");
        api.raw(method, &path, &body)
            .await
            .assert_problem(BAD, Some(field), &case);
    }
    // Nothing above was saved or changed.
    let list = api.get("/v1/subscriptions").await.json();
    assert_eq!(list["data"].as_array().expect("data").len(), 1);
    assert_eq!(list["data"][0]["url"], "https://example.com/");
}
