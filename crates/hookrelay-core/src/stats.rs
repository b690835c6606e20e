//! Live counters the dispatcher keeps for `/metrics`: plain atomics and one histogram,
//! updated without allocating on the delivery path, read when Prometheus scrapes.
//! Also each subscription's circuit as the dispatcher left it, for the admin API's
//! subscription view: written only when a circuit counts a failure or closes again,
//! so a healthy subscription's deliveries never touch it. All of it is per process.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicI64, AtomicU64, Ordering},
        Mutex,
    },
    time::Duration,
};

use chrono::{DateTime, Utc};
use prometheus_client::metrics::histogram::Histogram;

/// What one attempt did to its delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    Succeeded,
    Retrying,
    Failed,
    /// 410: the subscription was disabled.
    Gone,
}

impl AttemptOutcome {
    pub const ALL: [AttemptOutcome; 4] = [
        AttemptOutcome::Succeeded,
        AttemptOutcome::Retrying,
        AttemptOutcome::Failed,
        AttemptOutcome::Gone,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Succeeded => "succeeded",
            AttemptOutcome::Retrying => "retrying",
            AttemptOutcome::Failed => "failed",
            AttemptOutcome::Gone => "gone",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Where a subscription's circuit stands (see `hookrelay-dispatch`'s breaker).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Deliveries flow.
    Closed,
    /// Cooling down after a run of failures: nothing is sent until `open_until`.
    Open,
    /// The cool-down is over: the next delivery is a probe, its success closes it.
    HalfOpen,
}

impl CircuitState {
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }
}

/// A subscription's circuit as the dispatcher last recorded it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Circuit {
    /// Failed attempts in a row since the last success.
    pub consecutive_failures: u32,
    /// When it first opened in this run of failures; `None` while closed.
    pub opened_at: Option<DateTime<Utc>>,
    /// The end of the current cool-down; `None` while closed.
    pub open_until: Option<DateTime<Utc>>,
}

impl Circuit {
    /// The state at `now`: an open circuit whose cool-down is over is half-open.
    pub fn state(&self, now: DateTime<Utc>) -> CircuitState {
        match self.open_until {
            None => CircuitState::Closed,
            Some(t) if now < t => CircuitState::Open,
            Some(_) => CircuitState::HalfOpen,
        }
    }
}

/// Bucket bounds of the attempt latency histogram, in seconds.
const LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The dispatcher's counters.
#[derive(Debug)]
pub struct DispatchStats {
    /// Attempts per subscription, by outcome.
    attempts: Mutex<HashMap<String, [u64; 4]>>,
    latency: Histogram,
    in_flight: AtomicI64,
    /// Outcome writes retried because the store was unreachable.
    pub recorder_retries: AtomicU64,
    /// Outcomes the store refused as they were (recorded without their details).
    pub recorder_refused: AtomicU64,
    /// Outcomes that could not be recorded at all (left to lease expiry).
    pub recorder_dropped: AtomicU64,
    /// Deliveries leased by a claim.
    pub claimed: AtomicU64,
    /// Deliveries leased at insert and handed over by a source's batch, no claim.
    pub handed_over: AtomicU64,
    /// Circuits that have counted a failure in this process; closed again once they
    /// recover (kept, so the gauge goes back to 0 rather than vanishing).
    circuits: Mutex<HashMap<String, Circuit>>,
}

impl Default for DispatchStats {
    fn default() -> Self {
        Self {
            attempts: Mutex::default(),
            latency: Histogram::new(LATENCY_BUCKETS),
            in_flight: AtomicI64::new(0),
            recorder_retries: AtomicU64::new(0),
            recorder_refused: AtomicU64::new(0),
            recorder_dropped: AtomicU64::new(0),
            claimed: AtomicU64::new(0),
            handed_over: AtomicU64::new(0),
            circuits: Mutex::default(),
        }
    }
}

impl DispatchStats {
    /// One finished attempt. Allocates only the first time a subscription is seen.
    pub fn attempt(&self, subscription_id: &str, outcome: AttemptOutcome, took: Duration) {
        self.latency.observe(took.as_secs_f64());
        if let Ok(mut m) = self.attempts.lock() {
            match m.get_mut(subscription_id) {
                Some(counts) => counts[outcome.index()] += 1,
                None => {
                    let mut counts = [0; 4];
                    counts[outcome.index()] = 1;
                    m.insert(subscription_id.to_owned(), counts);
                }
            }
        }
    }

    pub fn started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub fn finished(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn in_flight(&self) -> i64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// (subscription, outcome, attempts) for every count so far.
    pub fn attempts(&self) -> Vec<(String, AttemptOutcome, u64)> {
        let Ok(m) = self.attempts.lock() else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(m.len() * 2);
        for (sub, counts) in m.iter() {
            for o in AttemptOutcome::ALL {
                if counts[o.index()] > 0 {
                    out.push((sub.clone(), o, counts[o.index()]));
                }
            }
        }
        out.sort_by(|a, b| (&a.0, a.1.as_str()).cmp(&(&b.0, b.1.as_str())));
        out
    }

    /// The latency histogram (a handle on the same data), for registering.
    pub fn latency(&self) -> Histogram {
        self.latency.clone()
    }

    /// A failed attempt of `subscription_id`; `opened_for` is the cool-down when the
    /// failure opened (or reopened) its circuit. Allocates only for a subscription's
    /// first failure in this process.
    pub fn circuit_failed(
        &self,
        subscription_id: &str,
        opened_for: Option<Duration>,
        now: DateTime<Utc>,
    ) {
        let Ok(mut m) = self.circuits.lock() else {
            return;
        };
        let c = match m.get_mut(subscription_id) {
            Some(c) => c,
            None => m.entry(subscription_id.to_owned()).or_default(),
        };
        c.consecutive_failures = c.consecutive_failures.saturating_add(1);
        if let Some(cooldown) = opened_for {
            c.opened_at.get_or_insert(now);
            c.open_until = chrono::Duration::from_std(cooldown)
                .ok()
                .and_then(|d| now.checked_add_signed(d));
        }
    }

    /// A success closed the circuit of `subscription_id` (or ended its run of failures).
    pub fn circuit_closed(&self, subscription_id: &str) {
        if let Ok(mut m) = self.circuits.lock() {
            if let Some(c) = m.get_mut(subscription_id) {
                *c = Circuit::default();
            }
        }
    }

    /// The circuit of `subscription_id` (closed if it never failed here).
    pub fn circuit(&self, subscription_id: &str) -> Circuit {
        self.circuits
            .lock()
            .ok()
            .and_then(|m| m.get(subscription_id).copied())
            .unwrap_or_default()
    }

    /// Every circuit that has counted a failure in this process, by subscription.
    pub fn circuits(&self) -> Vec<(String, Circuit)> {
        let Ok(m) = self.circuits.lock() else {
            return Vec::new();
        };
        let mut out: Vec<_> = m.iter().map(|(k, c)| (k.clone(), *c)).collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_subscription_and_outcome() {
        let s = DispatchStats::default();
        s.attempt("sub_a", AttemptOutcome::Succeeded, Duration::from_millis(3));
        s.attempt("sub_a", AttemptOutcome::Succeeded, Duration::from_millis(3));
        s.attempt("sub_a", AttemptOutcome::Retrying, Duration::from_secs(2));
        s.attempt("sub_b", AttemptOutcome::Gone, Duration::from_millis(1));
        assert_eq!(
            s.attempts(),
            [
                ("sub_a".to_owned(), AttemptOutcome::Retrying, 1),
                ("sub_a".to_owned(), AttemptOutcome::Succeeded, 2),
                ("sub_b".to_owned(), AttemptOutcome::Gone, 1),
            ]
        );
        s.started();
        s.started();
        s.finished();
        assert_eq!(s.in_flight(), 1);
    }

    #[test]
    fn circuits_open_turn_half_open_and_close() {
        let s = DispatchStats::default();
        let t = DateTime::parse_from_rfc3339("2026-11-25T20:00:00Z")
            .expect("time")
            .with_timezone(&Utc);
        let secs = |n| chrono::Duration::seconds(n);
        assert_eq!(s.circuit("sub_a").state(t), CircuitState::Closed);
        s.circuit_failed("sub_a", None, t);
        s.circuit_failed("sub_a", Some(Duration::from_secs(1)), t);
        let c = s.circuit("sub_a");
        assert_eq!(c.consecutive_failures, 2);
        assert_eq!((c.opened_at, c.open_until), (Some(t), Some(t + secs(1))));
        assert_eq!(c.state(t), CircuitState::Open);
        assert_eq!(c.state(t + secs(1)), CircuitState::HalfOpen);
        // A failed probe reopens it; it has been open since the first time.
        s.circuit_failed("sub_a", Some(Duration::from_secs(2)), t + secs(1));
        let c = s.circuit("sub_a");
        assert_eq!((c.opened_at, c.open_until), (Some(t), Some(t + secs(3))));
        assert_eq!(c.consecutive_failures, 3);
        s.circuit_closed("sub_a");
        s.circuit_closed("sub_never_failed");
        assert_eq!(s.circuit("sub_a"), Circuit::default());
        assert_eq!(s.circuits(), [("sub_a".to_owned(), Circuit::default())]);
    }
}
