//! Filters on row content in the batch commit (DESIGN §1.9). The batch statement
//! matches unfiltered subscriptions in SQL as before; for the filtered ones whose
//! other filters match, each event is tested here, once per event and subscription,
//! inside the transaction that stores it, so a subscription saved before a change is
//! the one that judges it.
//!
//! ```text
//!  FILTER_CANDIDATES (per batch) ─▶ passes: each event's variables built once, each
//!  candidate's compiled filter run ─▶ FILTERED_DELIVERIES (the pairs that passed)
//! ```
//!
//! A filter that fails for an event (a missing field, a bad conversion) is false for
//! it and counted per subscription (`/metrics`); nothing else is held up.

use std::{
    collections::HashMap,
    sync::{Mutex, MutexGuard},
};

use hookrelay_core::{
    row_filter::{EventVars, RowFilter},
    ChangeEvent,
};

/// Compiled filters kept at most; past it the cache starts again (a store rarely has
/// this many distinct expressions).
const COMPILED_KEPT: usize = 10_000;

/// A filtered subscription whose other filters match one of a batch's (source, type).
pub(crate) struct Candidate {
    pub source: String,
    pub event_type: String,
    pub subscription: String,
    pub filter: String,
}

/// A candidate subscription and its compiled filter (`None`: does not compile).
type Judge<'a> = (&'a str, Option<RowFilter>);

/// The (event id, subscription id) pairs whose filter passed, as two arrays.
#[derive(Default)]
pub(crate) struct Passed {
    pub events: Vec<String>,
    pub subscriptions: Vec<String>,
}

impl Passed {
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

/// Compiled filters by text, and each subscription's run-time failures.
#[derive(Default)]
pub struct RowFilters {
    /// `None`: the stored text does not compile (it did when it was saved).
    compiled: Mutex<HashMap<String, Option<RowFilter>>>,
    failures: Mutex<HashMap<String, u64>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl RowFilters {
    fn compiled(&self, text: &str) -> Option<RowFilter> {
        let mut cache = lock(&self.compiled);
        if let Some(f) = cache.get(text) {
            return f.clone();
        }
        if cache.len() >= COMPILED_KEPT {
            cache.clear();
        }
        let f = match RowFilter::compile(text) {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::warn!(filter = text, error = %e, "a stored filter does not compile; it passes nothing");
                None
            }
        };
        cache.insert(text.to_owned(), f.clone());
        f
    }

    /// Tests each event against the candidates for its (source, type).
    pub(crate) fn passes(&self, events: &[ChangeEvent], candidates: &[Candidate]) -> Passed {
        let mut by_kind: HashMap<(&str, &str), Vec<Judge<'_>>> = HashMap::new();
        for c in candidates {
            by_kind
                .entry((c.source.as_str(), c.event_type.as_str()))
                .or_default()
                .push((c.subscription.as_str(), self.compiled(&c.filter)));
        }
        let mut passed = Passed::default();
        let mut failed: HashMap<&str, u64> = HashMap::new();
        for event in events {
            let Some(subs) = by_kind.get(&(event.source.as_str(), event.event_type.as_str()))
            else {
                continue;
            };
            let vars = match EventVars::from_body(&event.body) {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(event = %event.id, error = %e, "event body unreadable for filters");
                    for (sub, _) in subs {
                        *failed.entry(sub).or_default() += 1;
                    }
                    continue;
                }
            };
            for (sub, filter) in subs {
                let verdict = match filter {
                    Some(f) => f.matches(&vars),
                    None => Err("the stored filter does not compile".to_owned()),
                };
                match verdict {
                    Ok(true) => {
                        passed.events.push(event.id.clone());
                        passed.subscriptions.push((*sub).to_owned());
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::debug!(subscription = sub, event = %event.id, error = %e, "filter failed for this event; not sent");
                        *failed.entry(sub).or_default() += 1;
                    }
                }
            }
        }
        if !failed.is_empty() {
            let mut counts = lock(&self.failures);
            for (sub, n) in failed {
                *counts.entry(sub.to_owned()).or_default() += n;
            }
        }
        passed
    }

    /// Each subscription's filter failures since start (counted as false).
    pub fn failures(&self) -> Vec<(String, u64)> {
        lock(&self.failures)
            .iter()
            .map(|(s, n)| (s.clone(), *n))
            .collect()
    }
}
