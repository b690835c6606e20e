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
            "url": "https://example.com/hook",
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
    for secret in [&first, &second, "receiver-token-123", "billing", "whsec_"] {
        assert!(!row.contains(secret), "{secret:?} in the raw row: {row}");
    }
    assert!(row.contains("hrenc:v1:"), "sealed values: {row}");

    // The API and the claim still see the real values.
    let got = api.get(&format!("/v1/subscriptions/{id}")).await.json();
    assert_eq!(got["headers"]["Authorization"], "Bearer receiver-token-123");
    let claimed = claim_all(api.store()).await;
    assert_eq!(claimed.len(), 1);
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
        // The claim refuses rather than handing out something that is not the secret
        // (its lease stays taken, so the next store finds nothing due).
        if claims {
            let claim = store
                .claim_due_deliveries("wrong", 10, std::time::Duration::from_secs(60), 10, &[])
                .await;
            assert!(matches!(claim, Err(StoreError::Secret(_))), "{claim:?}");
        }
        assert!(store.get_subscription(&id).await.is_err());
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
    assert!(api.store().get_subscription(id).await.is_err(), "old key");
    let rotated = api.db.store_with(Secrets::Sealed(new));
    let got = rotated.get_subscription(id).await.expect("new key opens");
    assert_eq!(got.headers["X-Key"], "k-777");
    api.store()
        .commit_batch("shop", &[event(1, "orders.insert", Utc::now())], "1")
        .await
        .expect("commit");
    assert_eq!(claim_all(&rotated).await[0].secrets[..], [secret]);
}
