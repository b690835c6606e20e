//! Subscriptions: the happy path, secrets shown only on create/rotate, filters saved
//! so the store's fan-out honours them, deletes that take deliveries along.

use axum::http::StatusCode;
use chrono::Utc;
use hookrelay_core::signature::SigningKey;
use hookrelay_store::OutcomeStatus;
use serde_json::json;

use crate::harness::{claim_all, event, outcome, TestApi};

#[tokio::test]
async fn create_list_get_patch_delete() {
    let api = TestApi::new().await;
    let created = api
        .subscribe(json!({
            "url": "https://example.com/hooks",
            "event_types": ["orders.*", "*.delete"],
            "sources": ["shop"],
            "description": "billing",
            "headers": {"X-Team": "billing"},
        }))
        .await;
    let id = created["id"].as_str().expect("id").to_owned();
    assert!(id.starts_with("sub_") && id.len() == 30, "{id}");
    let secret = created["secret"].as_str().expect("secret on create");
    assert!(SigningKey::from_secret(secret).is_ok(), "{secret}");
    assert_eq!(created["url"], "https://example.com/hooks");
    assert_eq!(created["event_types"], json!(["orders.*", "*.delete"]));
    assert_eq!(created["sources"], json!(["shop"]));
    assert_eq!(created["headers"], json!({"X-Team": "billing"}));
    assert_eq!(created["ordering"], "key");
    assert_eq!(created["enabled"], true);
    assert_eq!(created["disabled_reason"], json!(null));

    let other = api
        .subscribe(json!({"url": "https://example.org/", "ordering": "none", "enabled": false}))
        .await;
    assert_eq!(other["event_types"], json!(null));
    assert_eq!(other["ordering"], "none");
    assert_eq!(other["enabled"], false);

    let res = api.get(&format!("/v1/subscriptions/{id}")).await;
    assert_eq!(res.status, StatusCode::OK);
    let got = res.json();
    assert!(got.get("secret").is_none(), "GET shows no secret: {got}");
    let mut without_secret = created.clone();
    without_secret
        .as_object_mut()
        .expect("object")
        .remove("secret");
    assert_eq!(got, without_secret);

    let list = api.get("/v1/subscriptions").await.json();
    let ids: Vec<&str> = list["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|s| s["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, [id.as_str(), other["id"].as_str().expect("id")]);
    assert!(list["data"]
        .as_array()
        .expect("data")
        .iter()
        .all(|s| s.get("secret").is_none()));

    let res = api
        .patch(
            &format!("/v1/subscriptions/{id}"),
            json!({"url": "https://example.com/v2", "event_types": null, "description": "v2",
                   "enabled": false}),
        )
        .await;
    assert_eq!(res.status, StatusCode::OK);
    let patched = res.json();
    assert!(patched.get("secret").is_none());
    assert_eq!(patched["url"], "https://example.com/v2");
    assert_eq!(patched["event_types"], json!(null));
    assert_eq!(patched["sources"], json!(["shop"]), "untouched");
    assert_eq!(
        patched["headers"],
        json!({"X-Team": "billing"}),
        "untouched"
    );
    assert_eq!(patched["description"], "v2");
    assert_eq!(patched["enabled"], false);
    assert!(patched["disabled_reason"].is_string());
    assert!(patched["updated_at"].as_str() > created["updated_at"].as_str());

    let res = api
        .patch(&format!("/v1/subscriptions/{id}"), json!({"enabled": true}))
        .await;
    assert_eq!(res.json()["enabled"], true);
    assert_eq!(
        res.json()["disabled_reason"],
        json!(null),
        "re-enabling clears it"
    );

    let res = api.delete(&format!("/v1/subscriptions/{id}")).await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    api.get(&format!("/v1/subscriptions/{id}"))
        .await
        .assert_problem(StatusCode::NOT_FOUND, None, "deleted");
    api.delete(&format!("/v1/subscriptions/{id}"))
        .await
        .assert_problem(StatusCode::NOT_FOUND, None, "deleted twice");
    let list = api.get("/v1/subscriptions").await.json();
    assert_eq!(list["data"].as_array().expect("data").len(), 1);
}

#[tokio::test]
async fn given_secret_signs_and_rotation_keeps_the_old_one_for_the_grace_period() {
    let api = TestApi::new().await;
    let mine = SigningKey::generate_secret();
    let sub = api
        .subscribe(json!({"url": "https://example.com/", "secret": mine}))
        .await;
    assert_eq!(sub["secret"], mine.as_str());
    let id = sub["id"].as_str().expect("id");

    let res = api
        .post(
            &format!("/v1/subscriptions/{id}/rotate-secret"),
            json!({"grace": "2h"}),
        )
        .await;
    assert_eq!(res.status, StatusCode::OK);
    let rotated = res.json();
    let new = rotated["secret"].as_str().expect("secret").to_owned();
    assert_ne!(new, mine);
    assert!(SigningKey::from_secret(&new).is_ok());
    assert_eq!(rotated.as_object().expect("object").len(), 1, "{rotated}");

    api.store()
        .commit_batch("shop", &[event(1, "orders.insert", Utc::now())], "1")
        .await
        .expect("commit");
    let claimed = claim_all(api.store()).await;
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].secrets[..], [new.clone(), mine.clone()]);

    // No body: the default grace; no grace: the old secret stops signing.
    let res = api
        .raw(
            axum::http::Method::POST,
            &format!("/v1/subscriptions/{id}/rotate-secret"),
            "",
        )
        .await;
    assert_eq!(
        res.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&res.body)
    );
    let newer = api
        .post(
            &format!("/v1/subscriptions/{id}/rotate-secret"),
            json!({"grace": "0s"}),
        )
        .await
        .json()["secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    api.store()
        .commit_batch("shop", &[event(2, "orders.insert", Utc::now())], "2")
        .await
        .expect("commit");
    let claimed = claim_all(api.store()).await;
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].secrets[..], [newer]);

    api.post("/v1/subscriptions/sub_nope/rotate-secret", json!({}))
        .await
        .assert_problem(StatusCode::NOT_FOUND, None, "rotate unknown");
}

#[tokio::test]
async fn saved_filters_decide_which_events_fan_out() {
    let api = TestApi::new().await;
    let orders = api
        .subscribe(json!({"url": "https://example.com/", "event_types": ["orders.*"]}))
        .await;
    let deletes = api
        .subscribe(json!({"url": "https://example.com/", "event_types": ["*.delete"]}))
        .await;
    // A source to be configured later.
    let other_source = api
        .post(
            "/v1/subscriptions?force=true",
            json!({"url": "https://example.com/", "sources": ["crm"]}),
        )
        .await
        .json();
    let now = Utc::now();
    let batch = [
        event(1, "orders.insert", now),
        event(2, "order_items.insert", now),
        event(3, "customers.delete", now),
        event(4, "orders.delete", now),
    ];
    let out = api
        .store()
        .commit_batch("shop", &batch, "4")
        .await
        .expect("commit");
    assert_eq!(out.deliveries, 4);
    assert_eq!(
        event_ids_of(&api, &orders).await,
        ["evt_test0001", "evt_test0004"]
    );
    assert_eq!(
        event_ids_of(&api, &deletes).await,
        ["evt_test0003", "evt_test0004"]
    );
    assert!(event_ids_of(&api, &other_source).await.is_empty());
}

/// The event ids a subscription got deliveries for, sorted.
async fn event_ids_of(api: &TestApi, sub: &serde_json::Value) -> Vec<String> {
    let path = format!(
        "/v1/deliveries?subscription_id={}",
        sub["id"].as_str().expect("id")
    );
    let page = api.get(&path).await.json();
    let mut ids: Vec<String> = page["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|d| d["event_id"].as_str().expect("event_id").to_owned())
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn delete_takes_deliveries_and_attempts_along() {
    let api = TestApi::new().await;
    let gone = api.subscribe(json!({"url": "https://example.com/"})).await;
    let kept = api.subscribe(json!({"url": "https://example.org/"})).await;
    let now = Utc::now();
    api.store()
        .commit_batch(
            "shop",
            &[
                event(1, "orders.insert", now),
                event(2, "orders.update", now),
            ],
            "2",
        )
        .await
        .expect("commit");
    let claimed = claim_all(api.store()).await;
    assert_eq!(claimed.len(), 4);
    let outcomes: Vec<_> = claimed
        .iter()
        .map(|d| outcome(d, OutcomeStatus::Failed, 500))
        .collect();
    api.store()
        .record_outcomes("test", &outcomes)
        .await
        .expect("record");
    let gone_id = gone["id"].as_str().expect("id");
    let gone_delivery = claimed
        .iter()
        .find(|d| d.subscription_id == gone_id)
        .expect("a delivery of the deleted subscription")
        .delivery_id;

    let res = api.delete(&format!("/v1/subscriptions/{gone_id}")).await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);

    let all = api.get("/v1/deliveries").await.json();
    let subs: Vec<&str> = all["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|d| d["subscription_id"].as_str().expect("subscription_id"))
        .collect();
    assert_eq!(subs, [kept["id"].as_str().expect("id"); 2]);
    api.get(&format!("/v1/deliveries/{gone_delivery}"))
        .await
        .assert_problem(
            StatusCode::NOT_FOUND,
            None,
            "delivery of a deleted subscription",
        );
}

/// `sources` and `event_types` against the configured sources (the harness's
/// `test_catalog`): unknown ones are a 422 naming the entry, `?force=true` takes them.
#[tokio::test]
async fn filters_are_checked_against_the_configured_sources() {
    let api = TestApi::new().await;
    let url = "https://example.com/hooks";
    let refused = [
        (
            json!({"url": url, "sources": ["shop", "nope"]}),
            "sources[1]",
            "nope",
        ),
        (
            json!({"url": url, "event_types": ["orders.*", "order.*"]}),
            "event_types[1]",
            "order.*",
        ),
        (
            json!({"url": url, "event_types": ["public.orders.insert"]}),
            "event_types[0]",
            "public.orders.insert",
        ),
        (
            json!({"url": url, "event_types": ["orders.upsert"]}),
            "event_types[0]",
            "orders.upsert",
        ),
        // mysql emits no truncate; invoices is a table of `legacy` only
        (
            json!({"url": url, "event_types": ["invoices.truncate"]}),
            "event_types[0]",
            "invoices.truncate",
        ),
        (
            json!({"url": url, "sources": ["shop"], "event_types": ["invoices.*"]}),
            "event_types[0]",
            "invoices.*",
        ),
    ];
    for (body, field, value) in &refused {
        let res = api.post("/v1/subscriptions", body.clone()).await;
        res.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, Some(field), field);
        let detail = res.json()["detail"].as_str().unwrap_or_default().to_owned();
        assert!(
            detail.contains(&format!("{value:?}")) && detail.contains("force=true"),
            "{field}: {detail}"
        );
        let res = api.post("/v1/subscriptions?force=true", body.clone()).await;
        assert_eq!(res.status, StatusCode::CREATED, "{field} with force");
        assert_eq!(res.json()["event_types"], body["event_types"]);
    }

    let accepted = [
        json!({"event_types": ["*.delete"]}),
        json!({"event_types": ["orders.truncate", "customers.?pdate"]}),
        json!({"event_types": ["invoices.*"], "sources": ["legacy"]}),
        json!({"event_types": ["notes.insert"], "sources": ["docs", "shop"]}),
        json!({"sources": ["docs"]}),
    ];
    for body in accepted {
        let mut body = body;
        body["url"] = json!(url);
        let res = api.post("/v1/subscriptions", body.clone()).await;
        assert_eq!(res.status, StatusCode::CREATED, "{body}: {}", res.json());
    }

    api.post("/v1/subscriptions?force=yes", json!({"url": url}))
        .await
        .assert_problem(StatusCode::BAD_REQUEST, Some("force"), "force=yes");

    // PATCH: the same rules, on the filters the subscription is left with.
    let sub = api
        .subscribe(json!({"url": url, "event_types": ["orders.*"]}))
        .await;
    let path = format!("/v1/subscriptions/{}", sub["id"].as_str().expect("id"));
    api.patch(&path, json!({"event_types": ["*.delete", "nope.*"]}))
        .await
        .assert_problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("event_types[1]"),
            "PATCH glob",
        );
    api.patch(&path, json!({"sources": ["nope"]}))
        .await
        .assert_problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("sources[0]"),
            "PATCH source",
        );
    // `legacy` emits no orders.*: the kept glob would match nothing.
    api.patch(&path, json!({"sources": ["legacy"]}))
        .await
        .assert_problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("event_types[0]"),
            "PATCH sources leaving the kept glob matching nothing",
        );
    let res = api
        .patch(
            &path,
            json!({"sources": ["legacy"], "event_types": ["*.delete"]}),
        )
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.json());
    let res = api
        .patch(
            &format!("{path}?force=true"),
            json!({"event_types": ["later.*"]}),
        )
        .await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.json()["event_types"], json!(["later.*"]));
    // A forced glob does not stand in the way of other changes.
    let res = api.patch(&path, json!({"description": "kept"})).await;
    assert_eq!(res.status, StatusCode::OK);
}

/// `limit`/`cursor` page the listing (10,000 subscriptions in one answer is slow); without them the answer is the plain
/// `{data}` it always was, every subscription oldest first.
#[tokio::test]
async fn the_listing_pages_with_limit_and_cursor() {
    let api = TestApi::new().await;
    let mut ids = Vec::new();
    for n in 0..5 {
        let s = api
            .subscribe(json!({"url": format!("https://example.com/{n}")}))
            .await;
        ids.push(s["id"].as_str().expect("id").to_owned());
    }
    let ids_of = |page: &serde_json::Value| -> Vec<String> {
        page["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|s| s["id"].as_str().expect("id").to_owned())
            .collect()
    };

    let all = api.get("/v1/subscriptions").await;
    assert_eq!(all.status, StatusCode::OK);
    let all = all.json();
    assert_eq!(
        all.as_object().expect("object").keys().collect::<Vec<_>>(),
        ["data"],
        "the unpaged listing keeps its shape: {all}"
    );
    // oldest first; two created within one microsecond go by id
    let mut listed = ids_of(&all);
    listed.sort_unstable();
    ids.sort_unstable();
    assert_eq!(listed, ids);
    let ids = ids_of(&all);

    let mut seen = Vec::new();
    let mut path = "/v1/subscriptions?limit=2".to_owned();
    let mut pages = 0;
    loop {
        let res = api.get(&path).await;
        assert_eq!(res.status, StatusCode::OK, "{path}");
        let page = res.json();
        pages += 1;
        let got = ids_of(&page);
        assert!(got.len() <= 2, "{page}");
        // every page has a next_cursor: a string, or null on the last page
        let next = page.get("next_cursor").expect("next_cursor").clone();
        seen.extend(got);
        match next.as_str() {
            Some(c) => path = format!("/v1/subscriptions?limit=2&cursor={c}"),
            None => {
                assert_eq!(next, json!(null));
                break;
            }
        }
    }
    assert_eq!(seen, ids);
    assert_eq!(pages, 3);

    // `cursor` alone pages with the default size; a deleted subscription's cursor
    // still continues after it.
    let first = api.get("/v1/subscriptions?limit=1").await.json();
    let cursor = first["next_cursor"].as_str().expect("cursor").to_owned();
    assert_eq!(
        api.delete(&format!("/v1/subscriptions/{}", ids[0]))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let rest = api
        .get(&format!("/v1/subscriptions?cursor={cursor}"))
        .await
        .json();
    assert_eq!(ids_of(&rest), ids[1..]);
    assert_eq!(rest["next_cursor"], json!(null));

    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("cursor=nope", "cursor"),
        ("limit=2&cursor=ZGx2OjU", "cursor"), // a delivery listing's cursor
    ] {
        api.get(&format!("/v1/subscriptions?{query}"))
            .await
            .assert_problem(StatusCode::BAD_REQUEST, Some(field), query);
    }
    let unknown = api.get("/v1/subscriptions?limt=2").await;
    assert_eq!(
        unknown.status,
        StatusCode::BAD_REQUEST,
        "a misspelt parameter"
    );
}

/// `search` finds subscriptions by a piece of their URL or description, any case,
/// `%` and `_` as plain text, in pages.
#[tokio::test]
async fn the_listing_searches_url_and_description() {
    let api = TestApi::new().await;
    let mut id = std::collections::HashMap::new();
    for (name, url, description) in [
        ("crm", "https://crm.example.com/hooks", "CRM sync"),
        ("billing", "https://pay.example.com/billing", "invoices"),
        (
            "warehouse",
            "https://dw.example.com/in",
            "Billing warehouse 100%",
        ),
        ("other", "https://other.example.com/", ""),
    ] {
        let s = api
            .subscribe(json!({"url": url, "description": description}))
            .await;
        id.insert(name, s["id"].as_str().expect("id").to_owned());
    }
    let found = |query: &str| {
        let api = &api;
        let path = format!("/v1/subscriptions?{query}");
        async move {
            let res = api.get(&path).await;
            assert_eq!(res.status, StatusCode::OK, "{path}");
            let page = res.json();
            assert!(
                page.get("next_cursor").is_some(),
                "a search is paged: {page}"
            );
            let ids: Vec<String> = page["data"]
                .as_array()
                .expect("data")
                .iter()
                .map(|s| s["id"].as_str().expect("id").to_owned())
                .collect();
            (ids, page["next_cursor"].clone())
        }
    };
    let (ids, next) = found("search=BILLING").await;
    assert_eq!(ids, [id["billing"].clone(), id["warehouse"].clone()]);
    assert_eq!(next, json!(null));
    assert_eq!(found("search=crm.example").await.0, [id["crm"].clone()]);
    assert_eq!(found("search=100%25").await.0, [id["warehouse"].clone()]);
    assert_eq!(found("search=_").await.0, Vec::<String>::new());
    assert_eq!(found("search=nowhere").await.0, Vec::<String>::new());

    // a search pages like the plain listing
    let (first, next) = found("search=billing&limit=1").await;
    assert_eq!(first, [id["billing"].clone()]);
    let cursor = next.as_str().expect("a next page").to_owned();
    let (rest, next) = found(&format!("search=billing&limit=1&cursor={cursor}")).await;
    assert_eq!(rest, [id["warehouse"].clone()]);
    assert_eq!(next, json!(null));

    let long = "x".repeat(1025);
    api.get(&format!("/v1/subscriptions?search={long}"))
        .await
        .assert_problem(StatusCode::BAD_REQUEST, Some("search"), "a long search");
}
