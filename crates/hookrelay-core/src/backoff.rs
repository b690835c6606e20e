//! When to try a delivery again: exponential backoff with full jitter, and the
//! receiver's `Retry-After` as a floor.

use std::time::{Duration, SystemTime};

use rand::Rng;

use crate::config::BackoffConfig;

/// The longest `Retry-After` we honour; a receiver asking for more gets this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// The upper bound of the jitter window before the `attempt`-th retry (1-based):
/// `min(max, initial * multiplier^(attempt-1))`.
pub fn backoff_cap(policy: &BackoffConfig, attempt: u32) -> Duration {
    let exp = attempt.saturating_sub(1).min(64) as i32;
    let secs = policy.initial.as_secs_f64() * policy.multiplier.powi(exp);
    let max = policy.max.as_secs_f64();
    Duration::from_secs_f64(if secs.is_finite() { secs.min(max) } else { max })
}

/// Full jitter (AWS architecture blog): a uniform pick in `[0, cap]`, so retries of
/// many deliveries that failed together spread out instead of arriving in waves.
pub fn retry_delay(policy: &BackoffConfig, attempt: u32, rng: &mut impl Rng) -> Duration {
    let cap = backoff_cap(policy, attempt);
    if cap.is_zero() {
        return cap;
    }
    Duration::from_secs_f64(rng.gen_range(0.0..=cap.as_secs_f64()))
}

/// Parses a `Retry-After` header: delta-seconds or an HTTP-date. `None` when absent,
/// malformed or in the past.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    at.duration_since(now).ok().map(|d| d.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, SeedableRng};

    fn policy() -> BackoffConfig {
        BackoffConfig {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(3600),
            multiplier: 2.0,
        }
    }

    #[test]
    fn cap_grows_exponentially_then_saturates() {
        let cases = [
            (1, 1),
            (2, 2),
            (3, 4),
            (4, 8),
            (12, 2048),
            (13, 3600),
            (200, 3600),
        ];
        for (attempt, secs) in cases {
            assert_eq!(
                backoff_cap(&policy(), attempt),
                Duration::from_secs(secs),
                "attempt {attempt}"
            );
        }
    }

    #[test]
    fn delay_stays_inside_the_jitter_window_and_varies() {
        let mut rng = StdRng::seed_from_u64(7);
        let delays: Vec<Duration> = (0..200)
            .map(|_| retry_delay(&policy(), 4, &mut rng))
            .collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(8)));
        let distinct: std::collections::HashSet<_> = delays.iter().collect();
        assert!(distinct.len() > 150, "full jitter should spread delays");
        assert!(delays.iter().any(|d| *d < Duration::from_secs(2)));
        assert!(delays.iter().any(|d| *d > Duration::from_secs(6)));
    }

    #[test]
    fn retry_after_forms() {
        let now = httpdate::parse_http_date("Sun, 22 Nov 2026 20:00:00 GMT").unwrap();
        let cases: [(&str, Option<u64>); 7] = [
            ("5", Some(5)),
            (" 120 ", Some(120)),
            ("Sun, 22 Nov 2026 20:00:30 GMT", Some(30)),
            ("Sun, 22 Nov 2026 19:00:00 GMT", None),
            ("soon", None),
            ("-3", None),
            ("999999999", Some(MAX_RETRY_AFTER.as_secs())),
        ];
        for (header, want) in cases {
            assert_eq!(
                parse_retry_after(header, now),
                want.map(Duration::from_secs),
                "{header:?}"
            );
        }
    }
}
