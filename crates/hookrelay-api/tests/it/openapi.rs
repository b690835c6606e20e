//! `GET /openapi.json` walked against the live router: every documented operation is
//! routed, no documented path answers an undocumented method, the `/v1` paths are
//! exactly DESIGN §1.5's, and request bodies the schemas describe are accepted.

use std::collections::BTreeSet;

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
    ("post", "/v1/subscriptions/{id}/backfill"),
    ("get", "/v1/backfills"),
    ("get", "/v1/backfills/{id}"),
    ("delete", "/v1/backfills/{id}"),
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
    // `?force=true` on create and change, and the circuit in the subscription view.
    for (method, path) in [
        ("post", "/v1/subscriptions"),
        ("patch", "/v1/subscriptions/{id}"),
    ] {
        let params = spec["paths"][path][method]["parameters"].to_string();
        assert!(
            params.contains("\"name\":\"force\"") && params.contains("\"in\":\"query\""),
            "{method} {path}: {params}"
        );
    }
    let view = spec["components"]["schemas"]["SubscriptionView"].to_string();
    assert!(view.contains("\"circuit\""), "{view}");
    let states = spec["components"]["schemas"]["CircuitState"].to_string();
    for state in ["closed", "open", "half_open"] {
        assert!(states.contains(&format!("\"{state}\"")), "{states}");
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
    let backfill = api
        .post(
            &format!("/v1/subscriptions/{sub_id}/backfill"),
            json!({"source": "shop"}),
        )
        .await
        .json();
    let backfill_id = backfill["id"].as_str().expect("a backfill").to_owned();
    let spec = spec(&api).await;

    let concrete = |path: &str| {
        let id = if path.starts_with("/v1/deliveries/") {
            delivery_id.to_string()
        } else if path.starts_with("/v1/backfills/") {
            backfill_id.clone()
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

/// Why `value` does not fit `schema`, for the JSON Schema subset utoipa emits
/// (`$ref`, `allOf`, `oneOf`, `type`, `enum`, `properties`, `required`,
/// `additionalProperties`, `items`, `format: date-time`); `None` if it fits.
fn misfit(spec: &Value, schema: &Value, value: &Value, at: &str) -> Option<String> {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.trim_start_matches("#/components/schemas/");
        return misfit(spec, &spec["components"]["schemas"][name], value, at);
    }
    if let Some(all) = schema["allOf"].as_array() {
        return all.iter().find_map(|s| misfit(spec, s, value, at));
    }
    if let Some(one) = schema["oneOf"].as_array() {
        let fits = one
            .iter()
            .filter(|s| misfit(spec, s, value, at).is_none())
            .count();
        return (fits != 1).then(|| format!("{at}: {value} fits {fits} of oneOf"));
    }
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let type_ok = types.is_empty()
        || types.contains(&kind)
        || (kind == "integer" && types.contains(&"number"));
    if !type_ok {
        return Some(format!("{at}: {value} is not {types:?}"));
    }
    if let Some(allowed) = schema["enum"].as_array() {
        if !allowed.contains(value) {
            return Some(format!("{at}: {value} not in {allowed:?}"));
        }
    }
    if schema["format"] == "date-time" {
        if let Some(t) = value.as_str() {
            if chrono::DateTime::parse_from_rfc3339(t).is_err() {
                return Some(format!("{at}: {t} is not a date-time"));
            }
        }
    }
    if let Value::Array(items) = value {
        return items
            .iter()
            .enumerate()
            .find_map(|(i, v)| misfit(spec, &schema["items"], v, &format!("{at}[{i}]")));
    }
    let Value::Object(fields) = value else {
        return None;
    };
    for name in schema["required"].as_array().into_iter().flatten() {
        let name = name.as_str().unwrap_or_default();
        if !fields.contains_key(name) {
            return Some(format!("{at}: `{name}` is required"));
        }
    }
    for (name, v) in fields {
        let at = format!("{at}.{name}");
        let prop = match schema["properties"].get(name) {
            Some(p) => p,
            None if schema["additionalProperties"] == false => {
                return Some(format!("{at}: not a property"))
            }
            None => &schema["additionalProperties"],
        };
        if let Some(why) = misfit(spec, prop, v, &at) {
            return Some(why);
        }
    }
    None
}

fn request_schema<'a>(spec: &'a Value, method: &str, path: &str) -> &'a Value {
    &spec["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]
}

fn response_schema<'a>(spec: &'a Value, method: &str, path: &str, status: u16) -> &'a Value {
    &spec["paths"][path][method]["responses"][status.to_string()]["content"]["application/json"]
        ["schema"]
}

#[tokio::test]
async fn bodies_the_schemas_accept_are_accepted_and_answers_fit_theirs() {
    let api = TestApi::new().await;
    let spec = spec(&api).await;

    // Create: every documented property, then what the schema refuses.
    let create = request_schema(&spec, "post", "/v1/subscriptions");
    let full = json!({
        "url": "https://a.example.com/hook",
        "event_types": ["orders.*"],
        "sources": ["shop"],
        "description": "all of it",
        "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "headers": {"x-team": "billing"},
        "ordering": "none",
        "enabled": true,
        "filter": "op == \"update\" && before.status != after.status",
        "backfill": true,
    });
    // Compared as sets: a workspace build may turn on serde_json's preserve_order.
    let documented: BTreeSet<&String> = spec["components"]["schemas"]["CreateSubscription"]
        ["properties"]
        .as_object()
        .expect("properties")
        .keys()
        .collect();
    let sent: BTreeSet<&String> = full.as_object().expect("object").keys().collect();
    assert_eq!(documented, sent);
    assert_eq!(misfit(&spec, create, &full, "create"), None);
    let res = api.post("/v1/subscriptions", full).await;
    assert_eq!(res.status, StatusCode::CREATED);
    let created = res.json();
    let answer = response_schema(&spec, "post", "/v1/subscriptions", 201);
    assert_eq!(misfit(&spec, answer, &created, "201"), None);
    let minimal = json!({"url": "https://b.example.com/", "description": null});
    assert_eq!(misfit(&spec, create, &minimal, "minimal"), None);
    assert_eq!(
        api.post("/v1/subscriptions", minimal).await.status,
        StatusCode::CREATED
    );
    for refused in [
        json!({"description": "no url"}),
        json!({"url": "https://c.example.com/", "colour": "red"}),
        json!({"url": "https://c.example.com/", "enabled": "yes"}),
    ] {
        assert!(
            misfit(&spec, create, &refused, "refused").is_some(),
            "{refused}"
        );
        let res = api.post("/v1/subscriptions", refused.clone()).await;
        assert_eq!(res.status, StatusCode::BAD_REQUEST, "{refused}");
        let problem = response_schema(&spec, "post", "/v1/subscriptions", 400);
        assert!(problem.is_null(), "problems are application/problem+json");
        let problem = &spec["components"]["schemas"]["Problem"];
        assert_eq!(misfit(&spec, problem, &res.json(), "400"), None);
    }

    // PATCH, bulk replay and a delivery read: the documented shapes both ways.
    let id = created["id"].as_str().expect("id");
    let patch = json!({"description": null, "event_types": null, "ordering": "key"});
    let path = "/v1/subscriptions/{id}";
    assert_eq!(
        misfit(&spec, request_schema(&spec, "patch", path), &patch, "patch"),
        None
    );
    let res = api.patch(&format!("/v1/subscriptions/{id}"), patch).await;
    assert_eq!(res.status, StatusCode::OK);
    let answer = response_schema(&spec, "patch", path, 200);
    assert_eq!(misfit(&spec, answer, &res.json(), "patch 200"), None);

    api.store()
        .commit_batch("shop", &[event(1, "orders.insert", Utc::now())], "1")
        .await
        .expect("commit");
    let replay = json!({
        "subscription_id": id,
        "status": "pending",
        "since": "2020-01-01T00:00:00Z",
        "until": "2100-01-01T00:00:00+02:00",
        "event_type": "orders.insert",
    });
    let body = request_schema(&spec, "post", "/v1/replay");
    assert_eq!(misfit(&spec, body, &replay, "replay"), None);
    let res = api.post("/v1/replay", replay).await;
    assert_eq!(res.status, StatusCode::ACCEPTED);
    let answer = response_schema(&spec, "post", "/v1/replay", 202);
    assert_eq!(misfit(&spec, answer, &res.json(), "replay 202"), None);

    let page = api.get("/v1/deliveries").await.json();
    let answer = response_schema(&spec, "get", "/v1/deliveries", 200);
    assert_eq!(misfit(&spec, answer, &page, "deliveries 200"), None);
    let delivery = page["data"][0]["id"].as_i64().expect("a delivery");
    let res = api.get(&format!("/v1/deliveries/{delivery}")).await;
    let answer = response_schema(&spec, "get", "/v1/deliveries/{id}", 200);
    assert_eq!(misfit(&spec, answer, &res.json(), "delivery 200"), None);
}

fn problem_schema<'a>(spec: &'a Value, method: &str, path: &str, status: u16) -> &'a Value {
    &spec["paths"][path][method]["responses"][status.to_string()]["content"]
        ["application/problem+json"]["schema"]
}

#[tokio::test]
async fn events_are_documented_as_the_envelope_they_are() {
    let api = TestApi::new().await;
    let spec = spec(&api).await;
    api.store()
        .commit_batch("shop", &[event(1, "orders.update", Utc::now())], "1")
        .await
        .expect("commit");

    let page = api.get("/v1/events").await.json();
    let answer = response_schema(&spec, "get", "/v1/events", 200);
    assert_eq!(misfit(&spec, answer, &page, "events 200"), None);
    let envelope = page["data"][0].clone();
    assert_eq!(envelope["op"], "update");

    let id = envelope["id"].as_str().expect("id");
    let one = api.get(&format!("/v1/events/{id}")).await.json();
    let answer = response_schema(&spec, "get", "/v1/events/{id}", 200);
    assert_eq!(misfit(&spec, answer, &one, "event 200"), None);

    // The schema is the envelope, not any object: a field it does not know, or one
    // missing, does not fit.
    let mut extra = one.clone();
    extra["extra"] = json!(1);
    assert!(misfit(&spec, answer, &extra, "extra").is_some());
    let mut missing = one.clone();
    missing.as_object_mut().expect("object").remove("txn");
    assert!(misfit(&spec, answer, &missing, "missing").is_some());
}

#[tokio::test]
async fn readyz_answers_fit_the_documented_problem() {
    use hookrelay_api::SourcesReadiness;
    use hookrelay_core::status::SourceStatus;
    let api = TestApi::with(|s| {
        s.sources = SourcesReadiness::new(vec![SourceStatus::new("shop", "postgres")])
    })
    .await;
    let spec = spec(&api).await;
    let req = Request::builder()
        .uri("/readyz")
        .body(Body::empty())
        .expect("request");
    let res = api.send(req).await;
    assert_eq!(res.status, StatusCode::SERVICE_UNAVAILABLE);
    let schema = problem_schema(&spec, "get", "/readyz", 503);
    assert!(!schema.is_null(), "503 is documented as problem+json");
    let body = res.json();
    assert_eq!(misfit(&spec, schema, &body, "readyz 503"), None);
    let name = schema["$ref"].as_str().expect("a named schema");
    let resolved = &spec["components"]["schemas"][name.trim_start_matches("#/components/schemas/")];
    assert!(
        resolved["properties"]["sources"].is_object(),
        "`sources` is documented: {resolved}"
    );
}

/// Every operation has an `operationId`, unique across the document and shaped
/// `verbNoun` (what client generators turn into method names), so a generated client
/// has one method per operation.
#[tokio::test]
async fn every_operation_has_its_own_meaningful_operation_id() {
    let api = TestApi::new().await;
    let spec = spec(&api).await;
    let mut seen = BTreeSet::new();
    for (method, path) in operations(&spec) {
        let id = spec["paths"][&path][&method]["operationId"]
            .as_str()
            .unwrap_or_else(|| panic!("{method} {path}: no operationId"))
            .to_owned();
        let verb = [
            "list", "get", "create", "update", "delete", "replay", "rotate", "test", "start",
            "cancel",
        ]
        .into_iter()
        .find(|v| id.starts_with(v));
        assert!(
            verb.is_some_and(|v| id[v.len()..].starts_with(|c: char| c.is_ascii_uppercase()))
                && id.chars().all(|c| c.is_ascii_alphanumeric()),
            "{method} {path}: operationId {id:?} is not verbNoun"
        );
        assert!(seen.insert(id.clone()), "operationId {id:?} appears twice");
    }

    // A standard validator, where it is installed (`pip install
    // openapi-spec-validator`); elsewhere the checks above stand in for it.
    const VALIDATE: &str = "import json, sys\n\
        try:\n    from openapi_spec_validator import validate\n\
        except ImportError:\n    sys.exit(3)\n\
        validate(json.load(sys.stdin))\n";
    let doc = serde_json::to_vec(&spec).expect("spec");
    match crate::metrics::run_with_stdin("python3", &["-c", VALIDATE], &doc) {
        Some((true, _)) => {}
        Some((false, said)) if said.is_empty() => {
            eprintln!("openapi-spec-validator is not installed: checked above only")
        }
        Some((false, said)) => panic!("openapi-spec-validator refuses /openapi.json: {said}"),
        None => eprintln!("python3 is not installed: checked above only"),
    }
}

/// docs/api.md covers the API: every documented operation appears there as
/// `METHOD /path`, so a new route cannot ship without its page.
#[tokio::test]
async fn every_operation_appears_in_the_api_page() {
    let api = TestApi::new().await;
    let spec = spec(&api).await;
    let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/api.md"))
        .expect("read docs/api.md");
    let missing: Vec<String> = operations(&spec)
        .into_iter()
        .map(|(m, p)| format!("{} {p}", m.to_uppercase()))
        .filter(|op| !page.contains(op.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/api.md does not mention {missing:?}"
    );
}

/// The read parameters the console relies on are documented: where an event went
/// (`event_id` on deliveries) and a subscription search.
#[tokio::test]
async fn the_consoles_read_parameters_are_documented() {
    let api = TestApi::new().await;
    let spec = spec(&api).await;
    for (path, name) in [
        ("/v1/deliveries", "event_id"),
        ("/v1/subscriptions", "search"),
    ] {
        let params = spec["paths"][path]["get"]["parameters"]
            .as_array()
            .unwrap_or_else(|| panic!("GET {path} has parameters"));
        assert!(
            params
                .iter()
                .any(|p| p["name"] == name && p["in"] == "query"),
            "GET {path} documents ?{name}=: {params:?}"
        );
    }
}
