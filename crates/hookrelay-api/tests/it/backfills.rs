//! `/v1/subscriptions/{id}/backfill` and `/v1/backfills`: what is accepted, what is
//! refused with a 422 naming the field, cancelling.

use axum::http::StatusCode;
use serde_json::json;

use crate::harness::TestApi;

#[tokio::test]
async fn a_backfill_is_planned_from_the_subscription_and_the_configuration() {
    let api = TestApi::new().await;
    let sub = api
        .subscribe(json!({"url": "https://a.example.com/", "event_types": ["orders.*"]}))
        .await;
    let id = sub["id"].as_str().expect("id");
    // `orders.*` matches orders.read: only public.orders, of the one postgres source
    let res = api
        .raw(
            axum::http::Method::POST,
            &format!("/v1/subscriptions/{id}/backfill"),
            "",
        )
        .await;
    assert_eq!(res.status, StatusCode::ACCEPTED);
    let bf = res.json();
    assert!(bf["id"].as_str().unwrap().starts_with("bf_"), "{bf}");
    assert_eq!(bf["subscription_id"], id);
    assert_eq!(bf["source"], "shop");
    assert_eq!(bf["state"], "running");
    assert_eq!(bf["tables"], json!(["public.orders"]));
    assert_eq!(bf["rows"], 0);
    assert_eq!(bf["tables_done"], 0);
    let bf_id = bf["id"].as_str().unwrap();

    let got = api.get(&format!("/v1/backfills/{bf_id}")).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.json()["id"], bf_id);
    let listed = api
        .get(&format!("/v1/backfills?subscription_id={id}"))
        .await;
    assert_eq!(listed.json()["data"][0]["id"], bf_id);
    let none = api.get("/v1/backfills?subscription_id=sub_nope").await;
    assert_eq!(none.json()["data"], json!([]));

    let cancelled = api.delete(&format!("/v1/backfills/{bf_id}")).await;
    assert_eq!(cancelled.status, StatusCode::OK);
    assert_eq!(cancelled.json()["state"], "cancelled");
    assert!(cancelled.json()["ended_at"].is_string());
    let again = api.delete(&format!("/v1/backfills/{bf_id}")).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(
        api.get("/v1/backfills/bf_nope").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.delete("/v1/backfills/bf_nope").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_backfill_that_cannot_be_served_is_a_422_naming_the_field() {
    let api = TestApi::new().await;
    let all = api
        .subscribe(json!({"url": "https://a.example.com/"}))
        .await;
    let all = all["id"].as_str().expect("id");
    let cases = [
        // tables of several sources match: name one
        (json!({}), "source"),
        (json!({"source": "nope"}), "source"),
        (json!({"tables": ["public.nope"]}), "tables[0]"),
        (
            json!({"tables": ["public.orders", "public.nope"]}),
            "tables[1]",
        ),
        (json!({"tables": []}), "tables"),
    ];
    for (body, field) in cases {
        let res = api
            .post(&format!("/v1/subscriptions/{all}/backfill"), body.clone())
            .await;
        assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(res.json()["field"], field, "{body}: {}", res.json());
    }
    let ok = api
        .post(
            &format!("/v1/subscriptions/{all}/backfill"),
            json!({"source": "shop"}),
        )
        .await;
    assert_eq!(ok.status, StatusCode::ACCEPTED);
    assert_eq!(
        ok.json()["tables"],
        json!(["public.orders", "public.customers"])
    );
    let mysql = api
        .post(
            &format!("/v1/subscriptions/{all}/backfill"),
            json!({"tables": ["shop.invoices"]}),
        )
        .await;
    assert_eq!(mysql.status, StatusCode::ACCEPTED, "{}", mysql.json());
    assert_eq!(mysql.json()["source"], "legacy");
    let docs = api
        .post(
            &format!("/v1/subscriptions/{all}/backfill"),
            json!({"source": "docs"}),
        )
        .await;
    assert_eq!(docs.status, StatusCode::ACCEPTED, "{}", docs.json());
    assert_eq!(docs.json()["tables"], json!(["app.notes"]));
    let unknown = api
        .post("/v1/subscriptions/sub_nope/backfill", json!({}))
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let typo = api
        .post(
            &format!("/v1/subscriptions/{all}/backfill"),
            json!({"table": ["public.orders"]}),
        )
        .await;
    assert_eq!(typo.status, StatusCode::BAD_REQUEST);

    // on create: planned first, so a refused backfill creates no subscription
    let before = api.get("/v1/subscriptions").await.json()["data"]
        .as_array()
        .unwrap()
        .len();
    let refused = api
        .post(
            "/v1/subscriptions",
            json!({"url": "https://b.example.com/", "backfill": true}),
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(refused.json()["field"], "backfill");
    let after = api.get("/v1/subscriptions").await.json()["data"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(before, after);
    let created = api
        .post(
            "/v1/subscriptions",
            json!({"url": "https://b.example.com/", "sources": ["shop"], "backfill": true}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let body = created.json();
    assert_eq!(body["backfill"]["state"], "running", "{body}");
    assert_eq!(body["backfill"]["subscription_id"], body["id"]);
}
