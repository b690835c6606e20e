//! Per-subscription circuit breaking: after a run of failed attempts
//! (`dispatch.circuit.failures`) an endpoint gets no deliveries for a cool-down, then
//! one probe; a failed probe doubles the cool-down (1 s up to
//! `dispatch.circuit.max_cooldown`), a success closes the circuit. A dead endpoint's
//! backlog then waits in the store instead of being retried in full every backoff
//! period (DESIGN §1.1.4), and its deliveries keep their attempt budget; they still
//! end `failed` once older than `dispatch.max_age` (the store's expiry sweep), tried
//! or not. `failures = 0` turns the breaker off: failures are counted (for the
//! subscription view) but never open the circuit.
//!
//! [`Breakers::record`] says what an attempt changed, so the dispatcher publishes a
//! circuit (`DispatchStats`, read by the admin API and `/metrics`) only when it counts
//! a failure or closes again: a healthy subscription's deliveries publish nothing.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use hookrelay_core::config::CircuitConfig;

/// The first cool-down; each failed probe doubles it.
const MIN_COOLDOWN: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct Circuit {
    failures: u32,
    /// How many times in a row the circuit opened (grows the cool-down).
    opened: u32,
    open_until: Option<Instant>,
}

/// What the claimer may take from a subscription right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Closed,
    /// Cooling down: nothing.
    Open,
    /// One probe at a time.
    HalfOpen,
}

/// What one recorded attempt did to its subscription's circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// A success with no failures before it: nothing changed.
    Unchanged,
    /// A success ended a run of failures: the circuit is closed.
    Closed,
    /// A failure; `opened_for` is the cool-down when it opened the circuit.
    Failed { opened_for: Option<Duration> },
}

#[derive(Debug, Default)]
pub struct Breakers {
    circuits: HashMap<String, Circuit>,
    cfg: CircuitConfig,
}

impl Breakers {
    pub fn new(cfg: CircuitConfig) -> Self {
        Self {
            circuits: HashMap::new(),
            cfg,
        }
    }

    pub fn record(&mut self, subscription: &str, success: bool, now: Instant) -> Recorded {
        if success {
            return match self.circuits.remove(subscription) {
                Some(_) => Recorded::Closed,
                None => Recorded::Unchanged,
            };
        }
        let c = self.circuits.entry(subscription.to_owned()).or_default();
        c.failures = c.failures.saturating_add(1);
        if self.cfg.is_off() {
            return Recorded::Failed { opened_for: None };
        }
        let probing = c.open_until.is_some_and(|t| now >= t);
        if c.failures >= self.cfg.failures || probing {
            c.opened += 1;
            let cooldown = MIN_COOLDOWN
                .saturating_mul(1 << (c.opened - 1).min(16))
                .min(self.cfg.max_cooldown.max(MIN_COOLDOWN));
            c.open_until = Some(now + cooldown);
            c.failures = 0;
            return Recorded::Failed {
                opened_for: Some(cooldown),
            };
        }
        Recorded::Failed { opened_for: None }
    }

    pub fn admission(&self, subscription: &str, now: Instant) -> Admission {
        match self.circuits.get(subscription).and_then(|c| c.open_until) {
            None => Admission::Closed,
            Some(t) if now < t => Admission::Open,
            Some(_) => Admission::HalfOpen,
        }
    }

    /// Subscriptions that are not fully closed, with their admission.
    pub fn restricted(&self, now: Instant) -> impl Iterator<Item = (&str, Admission)> {
        self.circuits
            .iter()
            .filter(|(_, c)| c.open_until.is_some())
            .map(move |(k, _)| (k.as_str(), self.admission(k, now)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAILURE_THRESHOLD: u32 = 10;
    const MAX_COOLDOWN: Duration = Duration::from_secs(60);

    #[test]
    fn opens_after_a_run_of_failures_and_probes_after_the_cooldown() {
        let mut b = Breakers::new(CircuitConfig::default());
        let t = Instant::now();
        assert_eq!(b.record("s", true, t), Recorded::Unchanged);
        for _ in 0..FAILURE_THRESHOLD - 1 {
            assert_eq!(
                b.record("s", false, t),
                Recorded::Failed { opened_for: None }
            );
        }
        assert_eq!(
            b.admission("s", t),
            Admission::Closed,
            "below the threshold"
        );
        assert_eq!(
            b.record("s", false, t),
            Recorded::Failed {
                opened_for: Some(MIN_COOLDOWN)
            }
        );
        assert_eq!(b.admission("s", t), Admission::Open);
        assert_eq!(b.admission("s", t + MIN_COOLDOWN), Admission::HalfOpen);
        // A failed probe reopens for twice as long.
        assert_eq!(
            b.record("s", false, t + MIN_COOLDOWN),
            Recorded::Failed {
                opened_for: Some(MIN_COOLDOWN * 2)
            }
        );
        assert_eq!(b.admission("s", t + MIN_COOLDOWN * 2), Admission::Open);
        assert_eq!(b.admission("s", t + MIN_COOLDOWN * 3), Admission::HalfOpen);
        // A successful probe closes it.
        assert_eq!(b.record("s", true, t + MIN_COOLDOWN * 3), Recorded::Closed);
        assert_eq!(b.admission("s", t + MIN_COOLDOWN * 3), Admission::Closed);
        assert_eq!(b.restricted(t).count(), 0);
    }

    #[test]
    fn a_success_resets_the_run_and_other_subscriptions_are_unaffected() {
        let mut b = Breakers::new(CircuitConfig::default());
        let t = Instant::now();
        for i in 0..FAILURE_THRESHOLD * 2 {
            b.record("s", i % 5 == 4, t);
        }
        assert_eq!(b.admission("s", t), Admission::Closed);
        for _ in 0..FAILURE_THRESHOLD {
            b.record("dead", false, t);
        }
        assert_eq!(b.admission("dead", t), Admission::Open);
        assert_eq!(b.admission("s", t), Admission::Closed);
    }

    #[test]
    fn cooldown_is_capped() {
        let mut b = Breakers::new(CircuitConfig::default());
        let mut t = Instant::now();
        for _ in 0..FAILURE_THRESHOLD {
            b.record("s", false, t);
        }
        for _ in 0..20 {
            t += MAX_COOLDOWN;
            b.record("s", false, t); // failed probe
        }
        assert_eq!(
            b.admission("s", t + MAX_COOLDOWN - Duration::from_millis(1)),
            Admission::Open
        );
        assert_eq!(b.admission("s", t + MAX_COOLDOWN), Admission::HalfOpen);
    }

    #[test]
    fn threshold_and_cap_come_from_the_config() {
        let mut b = Breakers::new(CircuitConfig {
            failures: 3,
            max_cooldown: Duration::from_secs(4),
        });
        let mut t = Instant::now();
        for _ in 0..2 {
            b.record("s", false, t);
        }
        assert_eq!(b.admission("s", t), Admission::Closed);
        b.record("s", false, t);
        assert_eq!(b.admission("s", t), Admission::Open, "opens at 3");
        let mut cooldowns = Vec::new();
        for _ in 0..5 {
            t += Duration::from_secs(10);
            match b.record("s", false, t) {
                Recorded::Failed { opened_for } => cooldowns.push(opened_for.unwrap()),
                other => panic!("{other:?}"),
            }
        }
        let secs: Vec<u64> = cooldowns.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [2, 4, 4, 4, 4], "doubling, capped at max_cooldown");
    }

    #[test]
    fn failures_zero_never_opens() {
        let mut b = Breakers::new(CircuitConfig {
            failures: 0,
            max_cooldown: Duration::from_secs(60),
        });
        let t = Instant::now();
        for _ in 0..1000 {
            assert_eq!(
                b.record("s", false, t),
                Recorded::Failed { opened_for: None }
            );
        }
        assert_eq!(b.admission("s", t), Admission::Closed);
        assert_eq!(b.restricted(t).count(), 0);
        assert_eq!(b.record("s", true, t), Recorded::Closed, "the run ends");
    }
}
