//! Whether the long-running tasks of a process are still running: `hookrelay run`
//! marks one ended when it stops without being asked to (a panic, a return), and
//! `/readyz` reports it, naming the task, until the process is gone.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

/// Shared by the task watcher (which writes) and the API (which reads).
#[derive(Debug, Clone, Default)]
pub struct TaskHealth(Arc<Mutex<BTreeMap<String, Option<String>>>>);

impl TaskHealth {
    /// `name` runs.
    pub fn running(&self, name: &str) {
        self.lock().insert(name.to_owned(), None);
    }

    /// `name` ended unexpectedly, because `why`.
    pub fn ended(&self, name: &str, why: &str) {
        self.lock().insert(name.to_owned(), Some(why.to_owned()));
    }

    /// The tasks that ended unexpectedly, with why.
    pub fn ended_tasks(&self) -> Vec<(String, String)> {
        self.lock()
            .iter()
            .filter_map(|(name, why)| Some((name.clone(), why.clone()?)))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Option<String>>> {
        // Only whole inserts happen under the lock: a poisoned map is still whole.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ended_tasks_are_reported() {
        let health = TaskHealth::default();
        health.running("dispatcher");
        health.running("source shop");
        assert!(health.ended_tasks().is_empty());
        health.ended("source shop", "panicked: boom");
        assert_eq!(
            health.ended_tasks(),
            [("source shop".to_owned(), "panicked: boom".to_owned())]
        );
    }
}
