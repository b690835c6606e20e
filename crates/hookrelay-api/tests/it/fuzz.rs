//! Random request bodies and query strings against the live router: every
//! answer is below 500, and every refusal is a problem+json document. Bodies that
//! happen to be valid are simply accepted.

use axum::http::Method;
use proptest::prelude::*;
use serde_json::{json, Value};

use crate::harness::TestApi;

/// JSON values with the strings a hostile caller sends: NUL, control characters,
/// lone-surrogate escapes are not representable here, so raw bodies cover those.
fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        "\\PC{0,12}|[\\x00-\\x1f]{0,3}|https?://[a-z0-9.:%@]{0,20}/?|\\*?[a-z.*?]{0,8}"
            .prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("url".to_owned()),
                    Just("event_types".to_owned()),
                    Just("sources".to_owned()),
                    Just("headers".to_owned()),
                    Just("secret".to_owned()),
                    Just("ordering".to_owned()),
                    Just("enabled".to_owned()),
                    Just("description".to_owned()),
                    Just("subscription_id".to_owned()),
                    Just("status".to_owned()),
                    Just("since".to_owned()),
                    Just("grace".to_owned()),
                    "\\PC{0,6}",
                ],
                inner,
                0..5,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn body() -> impl Strategy<Value = String> {
    prop_oneof![
        value().prop_map(|v| v.to_string()),
        proptest::collection::vec(any::<u8>(), 0..64)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        "\\{\"url\": \"[^\"]{0,10}(\\\\u0000|\\\\ud800|\\\\)?\"\\}",
    ]
}

fn query() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        (
            prop_oneof![
                Just("limit"),
                Just("cursor"),
                Just("status"),
                Just("since"),
                Just("until"),
                Just("event_type"),
                Just("subscription_id"),
                Just("source"),
                Just("x")
            ],
            "[a-zA-Z0-9%+:.-]{0,12}",
        ),
        0..4,
    )
    .prop_map(|pairs| {
        pairs
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&")
    })
}

#[test]
fn random_input_never_gets_a_5xx() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let api = rt.block_on(TestApi::new());
    let sub = rt.block_on(api.subscribe(json!({"url": "https://example.com/"})));
    let sub_path = format!("/v1/subscriptions/{}", sub["id"].as_str().expect("id"));
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(300));
    let targets = (0..5usize, body(), query());
    let outcome = runner.run(&targets, |(route, body, query)| {
        let (method, path) = match route {
            0 => (Method::POST, "/v1/subscriptions".to_owned()),
            1 => (Method::PATCH, sub_path.clone()),
            2 => (Method::POST, "/v1/replay".to_owned()),
            3 => (Method::GET, format!("/v1/deliveries?{query}")),
            _ => (Method::GET, format!("/v1/events?{query}")),
        };
        let res = rt.block_on(api.raw(method.clone(), &path, &body));
        prop_assert!(
            res.status.as_u16() < 500,
            "{method} {path} {body:?} → {} {}",
            res.status,
            String::from_utf8_lossy(&res.body)
        );
        if res.status.is_client_error() {
            prop_assert_eq!(res.content_type(), "application/problem+json");
        }
        Ok(())
    });
    if let Err(e) = outcome {
        panic!("{e}");
    }
}
