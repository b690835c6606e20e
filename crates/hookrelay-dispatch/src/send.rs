//! One attempt: sign, POST, read at most 4 KiB of the answer, and decide the next
//! step. The stage types keep the order: a `ClaimedDelivery` goes in, an `Outcome`
//! ready for the recorder comes out.

use std::time::{Duration, Instant, SystemTime};

use chrono::Utc;
use hookrelay_core::{
    backoff,
    config::DispatchConfig,
    origin::origin,
    signature::{signature_header, SigningKey},
};
use hookrelay_store::{ClaimedDelivery, Outcome, OutcomeStatus};
use reqwest::header::{HeaderName, HeaderValue, CONTENT_TYPE, LOCATION, RETRY_AFTER};

use crate::classify::{classify, Verdict};

/// Bytes of a response body kept with the attempt.
pub const BODY_LIMIT: usize = 4096;

/// A subscription's endpoint and signing keys, parsed once for all of its deliveries
/// in a claim rather than once per delivery (the URL parse alone was 3 % of
/// hookrelay's CPU in bench workload 3). An error is what every attempt then reports.
pub type Target = Result<Endpoint, String>;

#[derive(Debug)]
pub struct Endpoint {
    url: reqwest::Url,
    keys: Vec<SigningKey>,
}

/// `d`'s [`Target`], from its subscription's URL and secrets.
pub fn target(d: &ClaimedDelivery) -> Target {
    let url = reqwest::Url::parse(&d.url).map_err(|e| format!("bad endpoint url: {e}"))?;
    let keys: Vec<SigningKey> = d
        .secrets
        .iter()
        .filter_map(|s| SigningKey::from_secret(s).ok())
        .collect();
    if keys.is_empty() {
        return Err("subscription has no valid signing secret".into());
    }
    Ok(Endpoint { url, keys })
}

/// Sends `d` once with `client` (built by [`crate::build_client`] from the same `cfg`)
/// and says what the delivery becomes.
pub async fn attempt(
    client: &reqwest::Client,
    cfg: &DispatchConfig,
    d: ClaimedDelivery,
) -> Outcome {
    let to = target(&d);
    attempt_to(client, cfg, d, &to).await
}

/// [`attempt`] with `d`'s target already parsed.
pub async fn attempt_to(
    client: &reqwest::Client,
    cfg: &DispatchConfig,
    d: ClaimedDelivery,
    to: &Target,
) -> Outcome {
    let started_at = Utc::now();
    let clock = Instant::now();
    let result = match to {
        Ok(endpoint) => post(client, cfg, endpoint, &d).await,
        Err(e) => Err(e.clone()),
    };
    let duration_ms = i32::try_from(clock.elapsed().as_millis()).unwrap_or(i32::MAX);
    let (code, error, body, verdict) = match result {
        Ok(resp) => {
            let verdict = classify(Some(resp.status), resp.retry_after);
            let error = match verdict {
                Verdict::Succeeded => None,
                // A Location can carry the same credentials as the endpoint URL: its
                // origin only.
                _ if (300..400).contains(&resp.status) => Some(format!(
                    "HTTP {}: redirects are not followed{}",
                    resp.status,
                    resp.location
                        .map(|l| format!(" (Location: {})", origin(&l)))
                        .unwrap_or_default()
                )),
                _ => Some(format!("HTTP {}", resp.status)),
            };
            (Some(i32::from(resp.status)), error, resp.body, verdict)
        }
        Err(e) => (None, Some(e), None, Verdict::Retry { not_before: None }),
    };
    let status = match verdict {
        Verdict::Succeeded => OutcomeStatus::Succeeded,
        Verdict::Gone => OutcomeStatus::Gone,
        Verdict::Retry { .. } if d.attempt >= cfg.max_attempts as i32 => OutcomeStatus::Failed,
        Verdict::Retry { not_before } => {
            let jittered = backoff::retry_delay(
                &cfg.backoff,
                d.attempt.max(1) as u32,
                &mut rand::thread_rng(),
            );
            let delay = not_before.map_or(jittered, |floor| jittered.max(floor));
            let at = Utc::now()
                + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::hours(24));
            OutcomeStatus::Retry { at }
        }
    };
    Outcome {
        delivery_id: d.delivery_id,
        attempt: d.attempt,
        subscription_id: d.subscription_id,
        started_at,
        duration_ms,
        status_code: code,
        error,
        response_body: body,
        status,
        run: d.run,
    }
}

struct Response {
    status: u16,
    retry_after: Option<Duration>,
    location: Option<String>,
    body: Option<Vec<u8>>,
}

async fn post(
    client: &reqwest::Client,
    cfg: &DispatchConfig,
    to: &Endpoint,
    d: &ClaimedDelivery,
) -> Result<Response, String> {
    crate::client::check_target(&to.url, cfg).await?;
    let ts = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let signature = signature_header(&to.keys, &d.event_id, ts, &d.body);
    let mut req = client
        .post(to.url.clone())
        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
        .header("webhook-id", d.event_id.as_str())
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", signature);
    for (name, value) in d.headers.iter() {
        if let (Ok(n), Ok(v)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) {
            req = req.header(n, v);
        }
    }
    let mut resp = req
        .body(d.body.clone())
        .send()
        .await
        .map_err(|e| describe(e, &to.url))?;
    let status = resp.status().as_u16();
    let header = |name| {
        resp.headers()
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .map(str::to_owned)
    };
    let retry_after =
        header(RETRY_AFTER).and_then(|v| backoff::parse_retry_after(&v, SystemTime::now()));
    let location = header(LOCATION);
    let mut body = Vec::new();
    // Read at most BODY_LIMIT bytes; a huge or endless body is cut off, not drained.
    while body.len() < BODY_LIMIT {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                let take = chunk.len().min(BODY_LIMIT - body.len());
                body.extend_from_slice(&chunk[..take]);
            }
            Ok(None) => break,
            Err(_) => break, // the status already decided the outcome
        }
    }
    let body = (!body.is_empty()).then_some(body);
    Ok(Response {
        status,
        retry_after,
        location,
        body,
    })
}

/// A short, stable description of a transport failure, naming the endpoint by its
/// origin only: reqwest's own text quotes the whole URL, credentials and all.
fn describe(e: reqwest::Error, endpoint: &reqwest::Url) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_request() {
        "request failed"
    } else {
        "error"
    };
    let e = e.without_url();
    let mut msg = format!("{kind}: {} ({e})", origin(endpoint.as_str()));
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}
