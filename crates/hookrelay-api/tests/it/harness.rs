//! The shared harness: `TestDb` (a fresh, UUID-named database, migrated, dropped
//! after), `TestApi` (the router over it) and helpers to make events and outcomes
//! through the store's public functions.

use std::{sync::Arc, time::Duration};

use axum::{
    body::{to_bytes, Body},
    http::{header, HeaderMap, Method, Request, StatusCode},
    Router,
};
use chrono::{DateTime, Utc};
use hookrelay_api::{router, ApiState};
use hookrelay_core::{
    catalog::Catalog,
    config::SourceConfig,
    event::{Envelope, Op, SourceRef, Timestamp, Txn},
    sealing::{MasterKey, Secrets},
    ChangeEvent,
};
use hookrelay_store::{ClaimedDelivery, Outcome, OutcomeStatus, Store};
use serde_json::{json, value::RawValue, Value};
use tokio_postgres::NoTls;
use tower::ServiceExt;

pub const PG: &str = "postgres://postgres@127.0.0.1:5432";
pub const TOKEN: &str = "test-token";

/// The master key the test store seals secrets with, so every API test runs against
/// sealed rows as production does.
pub fn test_key() -> MasterKey {
    MasterKey::from_bytes([7; 32])
}

/// A fresh database with the store schema; dropped (WITH FORCE) when the value is.
pub struct TestDb {
    pub name: String,
    pub store: Store,
}

impl TestDb {
    pub async fn new() -> Self {
        let name = format!("hookrelay_test_{}", uuid::Uuid::new_v4().simple());
        admin(&format!("create database \"{name}\"")).await;
        let store = Store::connect(&format!("{PG}/{name}"), 4)
            .expect("store url")
            .with_secrets(Secrets::Sealed(test_key()));
        store.migrate().await.expect("migrate");
        Self { name, store }
    }

    /// Another handle on the same database, keeping secrets as `secrets` says.
    pub fn store_with(&self, secrets: Secrets) -> Store {
        Store::connect(&format!("{PG}/{}", self.name), 2)
            .expect("store url")
            .with_secrets(secrets)
    }

    /// A plain connection, to read rows as they are stored.
    pub async fn raw_client(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&format!("{PG}/{}", self.name), NoTls)
            .await
            .expect("connect");
        tokio::spawn(conn);
        client
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // A fresh thread with its own runtime: Drop may run inside the test's runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(admin(&format!(
                "drop database if exists \"{name}\" with (force)"
            )));
        })
        .join();
    }
}

async fn admin(sql: &str) {
    let (client, conn) = tokio_postgres::connect(&format!("{PG}/postgres"), NoTls)
        .await
        .expect("connect to the postgres database");
    let conn = tokio::spawn(conn);
    client
        .batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    drop(client);
    let _ = conn.await;
}

/// The sources the API's tests pretend are configured: `shop` (postgres:
/// `public.orders`, `public.customers`), `legacy` (mysql: `shop.invoices`) and `docs`
/// (mongodb: `app.notes`).
pub fn test_catalog() -> Catalog {
    let sources: Vec<SourceConfig> = serde_json::from_value(json!([
        {"name": "shop", "kind": "postgres", "url": "postgres://x/shop",
         "tables": ["public.orders", "public.customers"]},
        {"name": "legacy", "kind": "mysql", "url": "mysql://x/shop", "tables": ["shop.invoices"]},
        {"name": "docs", "kind": "mongodb", "url": "mongodb://x", "collections": ["app.notes"]},
    ]))
    .expect("source configs");
    Catalog::new(&sources)
}

/// The router over a fresh database.
pub struct TestApi {
    pub db: TestDb,
    pub state: ApiState,
    app: Router,
}

/// A response, read whole.
pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl TestResponse {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{}: body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn content_type(&self) -> &str {
        self.headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// Asserts a problem+json answer with `status` that names `field` (if given).
    pub fn assert_problem(&self, status: StatusCode, field: Option<&str>, case: &str) {
        assert_eq!(
            self.status,
            status,
            "{case}: {}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(self.content_type(), "application/problem+json", "{case}");
        let p = self.json();
        assert_eq!(p["status"], status.as_u16(), "{case}: {p}");
        for key in ["type", "title", "detail"] {
            assert!(p[key].is_string(), "{case}: problem without {key}: {p}");
        }
        if let Some(field) = field {
            assert_eq!(p["field"], field, "{case}: {p}");
        }
    }
}

impl TestApi {
    pub async fn new() -> Self {
        Self::with(|_| {}).await
    }

    /// With the state adjusted by `f` (tokens, allow_networks, ...).
    pub async fn with(f: impl FnOnce(&mut ApiState)) -> Self {
        let db = TestDb::new().await;
        let mut state = ApiState {
            store: db.store.clone(),
            tokens: vec![TOKEN.to_owned()],
            insecure_no_auth: false,
            allow_networks: Vec::new(),
            dispatch_signal: Arc::default(),
            sources: Default::default(),
            catalog: Arc::new(test_catalog()),
            dispatch_stats: Arc::default(),
            test_sender: Default::default(),
            tasks: Default::default(),
        };
        f(&mut state);
        let app = router(state.clone());
        Self { db, state, app }
    }

    pub fn store(&self) -> &Store {
        &self.db.store
    }

    pub async fn send(&self, req: Request<Body>) -> TestResponse {
        let res = self.app.clone().oneshot(req).await.expect("infallible");
        let status = res.status();
        let headers = res.headers().clone();
        let body = to_bytes(res.into_body(), 16 << 20)
            .await
            .expect("body")
            .to_vec();
        TestResponse {
            status,
            headers,
            body,
        }
    }

    /// An authorized request with a raw body.
    pub async fn raw(&self, method: Method, path: &str, body: &str) -> TestResponse {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_owned()))
            .expect("request");
        self.send(req).await
    }

    pub async fn get(&self, path: &str) -> TestResponse {
        self.raw(Method::GET, path, "").await
    }

    pub async fn post(&self, path: &str, body: Value) -> TestResponse {
        self.raw(Method::POST, path, &body.to_string()).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> TestResponse {
        self.raw(Method::PATCH, path, &body.to_string()).await
    }

    pub async fn delete(&self, path: &str) -> TestResponse {
        self.raw(Method::DELETE, path, "").await
    }

    /// Creates a subscription through the API; returns its JSON (with `secret`).
    pub async fn subscribe(&self, body: Value) -> Value {
        let res = self.post("/v1/subscriptions", body).await;
        assert_eq!(
            res.status,
            StatusCode::CREATED,
            "{}",
            String::from_utf8_lossy(&res.body)
        );
        res.json()
    }

    /// Was the dispatcher asked to look at every delivery again (a replayed row may
    /// sit below its claim cursors)? Consumes the request.
    pub fn dispatcher_asked_to_rescan(&self) -> bool {
        self.state.dispatch_signal.take_due_from() == Some(0)
    }
}

/// A change event with a small envelope body; `n` makes the id and key unique.
pub fn event(n: u32, event_type: &str, committed_at: DateTime<Utc>) -> ChangeEvent {
    let id = format!("evt_test{n:04}");
    let (table, op) = event_type.split_once('.').unwrap_or(("t", "insert"));
    let op = match op {
        "update" => Op::Update,
        "delete" => Op::Delete,
        "truncate" => Op::Truncate,
        _ => Op::Insert,
    };
    let position = n.to_string();
    let key = RawValue::from_string(json!({"id": n}).to_string()).expect("key");
    let after =
        RawValue::from_string(json!({"id": n, "total": "19.99"}).to_string()).expect("after");
    // Built the way sources build events, so tests read real envelopes.
    let env = Envelope {
        id: &id,
        event_type,
        source: SourceRef {
            name: "shop",
            kind: "postgres",
            database: "shop",
            schema: "public",
            table,
            position: &position,
        },
        op,
        key: &key,
        before: None,
        after: Some(&after),
        txn: Some(Txn {
            id: &position,
            seq: 0,
        }),
        committed_at: Timestamp(committed_at),
        captured_at: Timestamp(committed_at),
    };
    ChangeEvent::from_envelope(&env, i64::from(n)).expect("envelope")
}

/// Claims every due delivery (as owner "test").
pub async fn claim_all(store: &Store) -> Vec<ClaimedDelivery> {
    store
        .claim_due_deliveries("test", 1000, Duration::from_secs(60), 1000, &[])
        .await
        .expect("claim")
        .deliveries
}

/// Records one attempt for `d` ending in `status`, answered with `code`.
pub fn outcome(d: &ClaimedDelivery, status: OutcomeStatus, code: i32) -> Outcome {
    let failed = !matches!(status, OutcomeStatus::Succeeded);
    Outcome {
        delivery_id: d.delivery_id,
        attempt: d.attempt,
        subscription_id: d.subscription_id.clone(),
        started_at: Utc::now(),
        duration_ms: 12,
        status_code: Some(code),
        error: failed.then(|| format!("endpoint answered {code}")),
        response_body: Some(format!("answer {code}").into_bytes()),
        status,
        run: d.run.clone(),
    }
}

/// The delivery ids of a listing page.
pub fn ids(page: &Value) -> Vec<i64> {
    page["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|d| d["id"].as_i64().expect("integer id"))
        .collect()
}

/// Every id of a delivery listing (`query` its filters, as `&k=v…`), following
/// `next_cursor` with pages of `limit`; and how many pages that took.
pub async fn all_pages(api: &TestApi, query: &str, limit: u32) -> (Vec<i64>, usize) {
    let mut out = Vec::new();
    let mut pages = 0;
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/deliveries?limit={limit}{query}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let res = api.get(&path).await;
        assert_eq!(res.status, StatusCode::OK, "{path}");
        let page = res.json();
        pages += 1;
        let got = ids(&page);
        assert!(got.len() <= limit as usize, "{path}");
        out.extend(got);
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
        assert!(pages < 100, "paging {query} does not end");
    }
    (out, pages)
}
