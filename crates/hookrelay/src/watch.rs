//! Every long-running task of `hookrelay run` (each source's supervisor, the
//! dispatcher, retention, the listeners) has an owner that notices when it ends.
//!
//! ```text
//!  spawn_watched(name, task) ── runs the task in a task of its own and waits for it
//!      ends after stop was asked          ─▶ nothing to say
//!      ends before (a panic, a return)    ─▶ ERROR "task … ended unexpectedly; stopping"
//!                                           /readyz 503 naming it (TaskHealth)
//!                                           `failed` fires: `run` shuts down and exits 1
//! ```
//!
//! The process stops rather than restarting the task in place: the sources already
//! retry every error with backoff inside their supervisor and the dispatcher retries
//! its store calls, so a task that still ends has met a bug, and a fresh process
//! (the orchestrator's restart, with its own backoff) is the state to trust.

use std::{future::Future, sync::Arc};

use hookrelay_core::tasks::TaskHealth;
use tokio::{
    sync::Mutex,
    task::{JoinHandle, JoinSet},
};
use tokio_util::sync::CancellationToken;

/// Why the process must stop: the first task that ended unexpectedly.
#[derive(Debug, Clone, Default)]
pub struct Failure {
    fired: CancellationToken,
    first: Arc<Mutex<Option<String>>>,
}

impl Failure {
    /// Completes once a watched task has ended unexpectedly, with what happened.
    pub async fn wait(&self) -> String {
        self.fired.cancelled().await;
        self.first.lock().await.clone().unwrap_or_default()
    }

    async fn fire(&self, what: String) {
        let mut first = self.first.lock().await;
        if first.is_none() {
            *first = Some(what);
        }
        self.fired.cancel();
    }
}

/// Aborts the watched task when its watcher is aborted (a shutdown past its grace).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Spawns `task` into `tasks` under `name`, watched: an end before `stop` is
/// cancelled is logged, marked in `health` and fires `failure`.
pub fn spawn_watched(
    tasks: &mut JoinSet<()>,
    name: String,
    task: impl Future<Output = ()> + Send + 'static,
    stop: &CancellationToken,
    health: &TaskHealth,
    failure: &Failure,
) {
    let (stop, health, failure) = (stop.clone(), health.clone(), failure.clone());
    health.running(&name);
    tasks.spawn(async move {
        let mut inner = AbortOnDrop(tokio::spawn(task));
        let ended = (&mut inner.0).await;
        if stop.is_cancelled() {
            return;
        }
        let why = match ended {
            Ok(()) => "returned".to_owned(),
            Err(e) if e.is_panic() => format!("panicked: {}", panic_message(e.into_panic())),
            Err(e) => e.to_string(),
        };
        tracing::error!(
            task = %name,
            cause = %why,
            "a task of hookrelay ended unexpectedly; stopping the process so that its \
             supervisor (systemd, Kubernetes, …) restarts it"
        );
        health.ended(&name, &why);
        failure
            .fire(format!("task {name} ended unexpectedly ({why})"))
            .await;
    });
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_task_is_reported_and_fires_the_failure() {
        let (mut tasks, stop, health, failure) = (
            JoinSet::new(),
            CancellationToken::new(),
            TaskHealth::default(),
            Failure::default(),
        );
        spawn_watched(
            &mut tasks,
            "source shop".into(),
            std::future::pending(),
            &stop,
            &health,
            &failure,
        );
        spawn_watched(
            &mut tasks,
            "dispatcher".into(),
            async { panic!("boom") },
            &stop,
            &health,
            &failure,
        );
        let what = failure.wait().await;
        assert!(
            what.contains("dispatcher") && what.contains("boom"),
            "{what}"
        );
        assert_eq!(
            health.ended_tasks(),
            [("dispatcher".to_owned(), "panicked: boom".to_owned())]
        );
        tasks.abort_all();
    }

    #[tokio::test]
    async fn an_end_after_stop_is_no_failure() {
        let (mut tasks, stop, health, failure) = (
            JoinSet::new(),
            CancellationToken::new(),
            TaskHealth::default(),
            Failure::default(),
        );
        let token = stop.clone();
        spawn_watched(
            &mut tasks,
            "retention".into(),
            async move { token.cancelled().await },
            &stop,
            &health,
            &failure,
        );
        stop.cancel();
        while tasks.join_next().await.is_some() {}
        assert!(health.ended_tasks().is_empty());
        assert!(!failure.fired.is_cancelled());
    }
}
