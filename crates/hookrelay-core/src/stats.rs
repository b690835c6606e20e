//! Live counters the dispatcher keeps for `/metrics`: plain atomics and one histogram,
//! updated without allocating on the delivery path, read when Prometheus scrapes.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicI64, AtomicU64, Ordering},
        Mutex,
    },
    time::Duration,
};

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
}
