//! Secrets at rest: what the raw store row holds, what a wrong or missing
//! key does, plaintext rows sealed at start-up, and master key rotation.

use chrono::Utc;
use hookrelay_core::sealing::{MasterKey, Secrets};
use hookrelay_store::StoreError;
use serde_json::json;

use crate::harness::*;

/// Every secret-bearing value, as the row's whole text: none may appear in it.
async fn raw_row(api: &TestApi, id: &str) -> String {
    api.db
        .raw_client()
        .await
        .query_one(
            "select s::text from hookrelay.subscriptions s where id = $1",
            &[&id],
        )
        .await
        .expect("row")
        .get(0)
}

/// A subscription with a secret, a rotated secret and a header value, plus one
/// delivery for it.
async fn subscription_with_everything(api: &TestApi) -> (String, String, String) {
    let sub = api
        .subscribe(json!({
            "url": "https://example.com/hook/url-token-4d2f?api_key=url-key-9e1a",
            "headers": {"Authorization": "Bearer receiver-token-123", "X-Team": "billing"},
        }))
        .await;
    let id = sub["id"].as_str().expect("id").to_owned();
    let first = sub["secret"].as_str().expect("secret").to_owned();
    let rotated = api
        .post(
            &format!("/v1/subscriptions/{id}/rotate-secret"),
            json!({"grace": "1h"}),
        )
        .await
        .json();
    let second = rotated["secret"].as_str().expect("secret").to_owned();
    api.store()
        .commit_batch("shop", &[event(1, "orders.insert", Utc::now())], "1")
        .await
        .expect("commit");
    (id, first, second)
}

#[tokio::test]
async fn the_raw_row_never_shows_a_secret_or_header_value() {
    let api = TestApi::new().await;
    let (id, first, second) = subscription_with_everything(&api).await;
    let row = raw_row(&api, &id).await;
    for secret in [
        &first,
        &second,
        "receiver-token-123",
        "billing",
        "whsec_",
        "url-token-4d2f",
        "url-key-9e1a",
        "example.com",
    ] {
        assert!(!row.contains(secret), "{secret:?} in the raw row: {row}");
    }
    assert!(row.contains("hrenc:v1:"), "sealed values: {row}");

    // The API and the claim still see the real values.
    let url = "https://example.com/hook/url-token-4d2f?api_key=url-key-9e1a";
    let got = api.get(&format!("/v1/subscriptions/{id}")).await.json();
    assert_eq!(got["headers"]["Authorization"], "Bearer receiver-token-123");
    assert_eq!(got["url"], url);
    let claimed = claim_all(api.store()).await;
    assert_eq!(claimed.len(), 1);
    assert_eq!(&*claimed[0].url, url);
    assert_eq!(claimed[0].secrets[..], [second, first]);
    assert!(claimed[0]
        .headers
        .contains(&("Authorization".into(), "Bearer receiver-token-123".into())));
}

#[tokio::test]
async fn a_wrong_or_missing_key_fails_closed_naming_the_key() {
    let api = TestApi::new().await;
    let (id, _, _) = subscription_with_everything(&api).await;
    let wrong = MasterKey::from_bytes([9; 32]);
    for (secrets, needle, claims) in [
        (Secrets::Sealed(wrong.clone()), wrong.id().to_owned(), true),
        (
            Secrets::Plaintext,
            "no HOOKRELAY_MASTER_KEY".to_owned(),
            false,
        ),
    ] {
        let store = api.db.store_with(secrets);
        let err = store.seal_plaintext_secrets().await.unwrap_err();
        assert!(matches!(err, StoreError::Secret(_)), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains(&needle) && msg.contains(test_key().id()),
            "{msg}"
        );
        // The claim hands out nothing that is not the secret: the subscription's
        // deliveries are parked (leased a while longer, the attempt given back), so the
        // next claim finds nothing due, and the subscription is named as unreadable.
        if claims {
            let claim = store
                .claim_due_deliveries("wrong", 10, std::time::Duration::from_secs(60), 10, &[])
                .await
                .expect("one unreadable subscription does not fail the claim");
            assert!(claim.deliveries.is_empty(), "{:?}", claim.deliveries);
            assert!(store.unreadable_secrets().contains_key(&id));
            let again = store
                .claim_due_deliveries("wrong", 10, std::time::Duration::from_secs(60), 10, &[])
                .await
                .expect("claim");
            assert!(again.deliveries.is_empty());
        }
        // The subscription still shows, without the values that do not open, and says
        // why.
        let shown = store.get_subscription(&id).await.expect("still shown");
        assert!(shown.headers.is_empty(), "{:?}", shown.headers);
        let why = shown.secret_error.expect("secret_error");
        assert!(why.contains(&needle), "{why}");
    }
    // Nothing was rewritten by the failed attempts: the right key still opens all.
    assert_eq!(
        api.store()
            .seal_plaintext_secrets()
            .await
            .expect("right key")
            .rewritten,
        0
    );
}

#[tokio::test]
async fn plaintext_rows_are_sealed_and_rotation_re_seals_everything() {
    let api = TestApi::new().await;
    // Written by a relay that ran in plaintext mode (or before encryption existed).
    let plain = api.db.store_with(Secrets::Plaintext);
    let state = hookrelay_api::ApiState {
        store: plain,
        ..api.state.clone()
    };
    let plain_api = hookrelay_api::router(state);
    let res = tower::ServiceExt::oneshot(
        plain_api,
        axum::http::Request::post("/v1/subscriptions")
            .header("authorization", format!("Bearer {TOKEN}"))
            .header("content-type", "application/json")
            .body(axum::body::Body::from(
                json!({"url": "https://example.com/", "headers": {"X-Key": "k-777"}}).to_string(),
            ))
            .expect("request"),
    )
    .await
    .expect("infallible");
    assert_eq!(res.status(), 201);
    let body = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .expect("body");
    let sub: serde_json::Value = serde_json::from_slice(&body).expect("json");
    let id = sub["id"].as_str().expect("id");
    let secret = sub["secret"].as_str().expect("secret").to_owned();
    assert!(raw_row(&api, id).await.contains(&secret), "plaintext mode");

    let report = api.store().seal_plaintext_secrets().await.expect("seal");
    assert_eq!((report.subscriptions, report.rewritten), (1, 1));
    let row = raw_row(&api, id).await;
    assert!(!row.contains(&secret) && !row.contains("k-777"), "{row}");

    let new = MasterKey::from_bytes([42; 32]);
    let report = api.store().rotate_master_key(&new).await.expect("rotate");
    assert_eq!(report.rewritten, 1);
    assert!(raw_row(&api, id).await.contains(new.id()));
    let stale = api.store().get_subscription(id).await.expect("shown");
    assert!(stale.secret_error.is_some(), "old key: {stale:?}");
    let rotated = api.db.store_with(Secrets::Sealed(new));
    let got = rotated.get_subscription(id).await.expect("new key opens");
    assert_eq!(got.headers["X-Key"], "k-777");
    api.store()
        .commit_batch("shop", &[event(1, "orders.insert", Utc::now())], "1")
        .await
        .expect("commit");
    assert_eq!(claim_all(&rotated).await[0].secrets[..], [secret]);
}

/// One tampered row (its sealed secret replaced by another subscription's, so it no
/// longer opens for this one) costs only its own subscription: start-up goes on and
/// reports it, a claim hands out the other subscription's delivery and parks its own
/// (pending, the attempt given back), the listing still shows both with the reason on
/// the tampered one. Rotating the master key refuses until it is fixed.
#[tokio::test]
async fn a_tampered_secret_fails_only_its_subscription() {
    let api = TestApi::new().await;
    let tampered = api.subscribe(json!({"url": "https://example.com/a"})).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let healthy = api.subscribe(json!({"url": "https://example.com/b"})).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    api.db
        .raw_client()
        .await
        .execute(
            "update hookrelay.subscriptions
                set secret = (select secret from hookrelay.subscriptions where id = $2)
              where id = $1",
            &[&tampered, &healthy],
        )
        .await
        .expect("tamper");

    let report = api
        .store()
        .seal_plaintext_secrets()
        .await
        .expect("start-up goes on");
    let named: Vec<&str> = report
        .unreadable
        .iter()
        .map(|(id, _)| id.as_str())
        .collect();
    assert_eq!(named, [tampered.as_str()]);
    assert!(report.unreadable[0].1.contains("altered"), "{:?}", report);
    let err = api
        .store()
        .rotate_master_key(&MasterKey::from_bytes([7; 32]))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Secret(_)), "{err}");

    api.store()
        .commit_batch("shop", &[event(1, "orders.insert", Utc::now())], "1")
        .await
        .expect("the batch commits");
    let claimed = claim_all(api.store()).await;
    let to: Vec<&str> = claimed.iter().map(|d| d.subscription_id.as_str()).collect();
    assert_eq!(to, [healthy.as_str()]);
    // Its delivery waits in its run, parked: leased a while longer so claims leave
    // it alone, with the attempt the lease counted given back.
    let (deliveries, leases, leased): (i32, i32, bool) = {
        let row = api
            .db
            .raw_client()
            .await
            .query_one(
                "select cardinality(delivery_ids), leases, lease_until > now()
                   from hookrelay.runs where subscription_id = $1",
                &[&tampered],
            )
            .await
            .expect("the tampered subscription's delivery");
        (row.get(0), row.get(1), row.get(2))
    };
    assert_eq!((deliveries, leases, leased), (1, 0, true));
    assert!(api.store().unreadable_secrets().contains_key(&tampered));

    let listed = api.get("/v1/subscriptions").await.json();
    let by_id = |id: &str| {
        listed["data"]
            .as_array()
            .expect("data")
            .iter()
            .find(|s| s["id"] == id)
            .cloned()
            .expect("listed")
    };
    assert!(by_id(&tampered)["secret_error"]
        .as_str()
        .is_some_and(|e| e.contains("altered")));
    assert!(by_id(&healthy)["secret_error"].is_null());
}
