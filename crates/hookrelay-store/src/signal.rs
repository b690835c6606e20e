//! How the writers of deliveries in this process tell its dispatcher about them.
//!
//! The dispatcher claims each subscription's pending deliveries by id from a cursor
//! (see `claim`). A batch that commits after a later-numbered one (two sources
//! committing at once) or a replay makes rows below a cursor due again; the signal
//! carries the lowest such id so the next claim looks there too.

use std::sync::atomic::{AtomicI64, Ordering};

use tokio::sync::Notify;

/// Wake-ups for the local dispatcher. Other processes sharing the store find the same
/// rows by polling and by their periodic rescan.
#[derive(Debug)]
pub struct DispatchSignal {
    notify: Notify,
    /// Lowest delivery id made due since the dispatcher last looked; `i64::MAX` = none.
    due_from: AtomicI64,
}

impl Default for DispatchSignal {
    fn default() -> Self {
        Self {
            notify: Notify::new(),
            due_from: AtomicI64::new(i64::MAX),
        }
    }
}

impl DispatchSignal {
    /// Deliveries with ids from `first_id` on were committed and are due now.
    pub fn due_from(&self, first_id: i64) {
        self.due_from.fetch_min(first_id, Ordering::AcqRel);
        self.notify.notify_one();
    }

    /// Deliveries anywhere may be due again (a replay): look from the start.
    pub fn rescan(&self) {
        self.due_from(0);
    }

    /// Something changed that may let a claim succeed (an outcome was recorded).
    pub fn wake(&self) {
        self.notify.notify_one();
    }

    /// The lowest id signalled since the last call, if any.
    pub fn take_due_from(&self) -> Option<i64> {
        match self.due_from.swap(i64::MAX, Ordering::AcqRel) {
            i64::MAX => None,
            id => Some(id),
        }
    }

    /// Resolves at the next signal (or at once if one arrived since the last wait).
    pub async fn notified(&self) {
        self.notify.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_lowest_id_until_taken() {
        let s = DispatchSignal::default();
        assert_eq!(s.take_due_from(), None);
        s.due_from(40);
        s.due_from(7);
        s.due_from(12);
        assert_eq!(s.take_due_from(), Some(7));
        assert_eq!(s.take_due_from(), None);
        s.rescan();
        assert_eq!(s.take_due_from(), Some(0));
    }
}
