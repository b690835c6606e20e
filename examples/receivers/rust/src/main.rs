//! A hookrelay webhook receiver (axum).
//!
//! ```text
//! WEBHOOK_SECRET=whsec_... cargo run -p hookrelay-example-receiver -- [PORT]   (default 9000)
//! ```
//!
//! Every POST is checked before anything else:
//! 1. `webhook-id`, `webhook-timestamp` and `webhook-signature` are present (else 400);
//! 2. the timestamp is within `TOLERANCE` of now, so a captured request cannot be
//!    replayed later (else 401);
//! 3. one of the space-separated `v1,<base64>` signatures (several during a secret
//!    rotation) equals HMAC-SHA256(key, `"<id>.<timestamp>.<raw body>"`), key being the
//!    base64-decoded part of the secret after `whsec_` (else 401).
//!
//! Then it dedupes on `webhook-id` (delivery is at-least-once: a retry or replay
//! carries the same id) and prints one line per event: `verified <id> <type>` the first
//! time, `duplicate <id>` after. Both answer 200, so hookrelay stops sending. A real
//! receiver keeps the seen ids where its work is stored (a unique key), in the same
//! transaction as the work, rather than in memory.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{body::Bytes, extract::State, http::HeaderMap, http::StatusCode, routing::post, Router};
use base64::{engine::general_purpose::STANDARD, Engine};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

const TOLERANCE: Duration = Duration::from_secs(300);

struct Receiver {
    key: Vec<u8>,
    seen: Mutex<HashSet<String>>,
}

/// Why a request was refused.
enum Refused {
    Malformed(&'static str),
    Unauthentic(String),
}

/// `Ok(id)` if the request is genuine and fresh.
fn verify(key: &[u8], headers: &HeaderMap, body: &[u8]) -> Result<String, Refused> {
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(id), Some(ts), Some(sigs)) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    ) else {
        return Err(Refused::Malformed("missing webhook headers"));
    };
    let sent: u64 = ts
        .parse()
        .map_err(|_| Refused::Malformed("bad webhook-timestamp"))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    if now.abs_diff(sent) > TOLERANCE.as_secs() {
        return Err(Refused::Unauthentic(format!(
            "timestamp {ts} is outside the {}s tolerance",
            TOLERANCE.as_secs()
        )));
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(body); // the raw bytes: never re-serialize before verifying
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    if sigs
        .split(' ')
        .any(|s| bool::from(s.as_bytes().ct_eq(expected.as_bytes())))
    {
        Ok(id.to_owned())
    } else {
        Err(Refused::Unauthentic("no matching signature".into()))
    }
}

async fn receive(State(rx): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let id = match verify(&rx.key, &headers, &body) {
        Ok(id) => id,
        Err(refused) => {
            let (status, why) = match refused {
                Refused::Malformed(why) => (StatusCode::BAD_REQUEST, why.to_owned()),
                Refused::Unauthentic(why) => (StatusCode::UNAUTHORIZED, why),
            };
            let id = headers.get("webhook-id").and_then(|v| v.to_str().ok());
            println!("refused {}: {why}", id.unwrap_or("None"));
            return status;
        }
    };
    if rx.seen.lock().expect("seen lock").insert(id.clone()) {
        let event: serde_json::Value = match serde_json::from_slice(&body) {
            Ok(event) => event,
            Err(_) => return StatusCode::BAD_REQUEST,
        };
        // ... do the work here ...
        println!("verified {id} {}", event["type"].as_str().unwrap_or("?"));
    } else {
        println!("duplicate {id}");
    }
    StatusCode::OK
}

#[tokio::main]
async fn main() {
    let secret = std::env::var("WEBHOOK_SECRET").expect("set WEBHOOK_SECRET=whsec_…");
    let key = STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .expect("WEBHOOK_SECRET: the part after whsec_ must be base64");
    let port: u16 = std::env::args()
        .nth(1)
        .map_or(9000, |p| p.parse().expect("PORT must be a number"));
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let rx = Arc::new(Receiver {
        key,
        seen: Mutex::default(),
    });
    let app = Router::new()
        .route("/{*path}", post(receive))
        .route("/", post(receive))
        .with_state(rx);
    let listener = tokio::net::TcpListener::bind((host.as_str(), port))
        .await
        .expect("bind");
    println!("listening on {host}:{port}");
    axum::serve(listener, app).await.expect("serve");
}
