//! The hand-off between the writers of deliveries in this process and its
//! dispatcher: the whole protocol is here; the statements it drives are in `batch`
//! (lease at insert) and `claim` (claims by cursor).
//!
//! ```text
//!   dispatcher                         DispatchSignal                  source's batch (sink)
//!   ──────────                         ──────────────                  ─────────────────────
//!   a claim took all there was for S
//!   (S is drained) ──offer(owner, lease, room per drained S)──▶ offer
//!                                       take_offer ◀──────────────── before its commit
//!                                                   insert: S's fresh runs leased to the
//!                                                   owner, up to S's room, none of their
//!                                                   keys open, no older run of S waiting
//!                                       hand ◀─────────────────────── after the commit
//!   take_handed: send them, no claim ◀── handed + waiting
//!   S in `waiting` (deliveries left for
//!   a claim): no longer drained
//!                                       due_from(first waiting id) ◀─ after the commit
//!   take_due_from: cursors move below ◀─┘
//!   it, the next claim looks there        rescan (a replay, an expiry) = due_from(0)
//!   wake / take_claim: an outcome or room that may let a claim take something
//! ```
//!
//! A claim and an offer never stand at once (a claim withdraws the offer first), and
//! a batch takes the offer whole, so two batches never fill the same room. A crash
//! between the commit and the send leaves leased runs that another claim takes once
//! the lease runs out, as for claimed ones. Other processes sharing the store
//! see none of this: they find the same rows by polling and by their periodic rescan.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicI64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use tokio::sync::Notify;

use crate::ClaimedDelivery;

/// Room the local dispatcher has for fresh deliveries, leased to it at insert.
#[derive(Debug, Clone)]
pub struct Offer {
    /// The lease owner, as in a claim.
    pub owner: String,
    pub lease: Duration,
    /// Per subscription, at most this many of a batch's deliveries; only subscriptions
    /// the dispatcher found with nothing else waiting, so fresh deliveries never pass
    /// a backlog.
    pub rooms: Vec<(String, usize)>,
}

/// What a batch handed over: its leased deliveries, and the subscriptions it left
/// deliveries for a claim (they have something waiting again).
#[derive(Debug, Default)]
pub struct Handed {
    pub deliveries: Vec<ClaimedDelivery>,
    pub waiting: Vec<String>,
}

/// Wake-ups for the local dispatcher. Other processes sharing the store find the same
/// rows by polling and by their periodic rescan.
#[derive(Debug)]
pub struct DispatchSignal {
    notify: Notify,
    /// Lowest delivery id made due since the dispatcher last looked; `i64::MAX` = none.
    due_from: AtomicI64,
    /// Set by whatever may make a claim worth running (see `take_claim`).
    claim: AtomicBool,
    offer: Mutex<Option<Arc<Offer>>>,
    handed: Mutex<Handed>,
}

impl Default for DispatchSignal {
    fn default() -> Self {
        Self {
            notify: Notify::new(),
            due_from: AtomicI64::new(i64::MAX),
            claim: AtomicBool::new(false),
            offer: Mutex::new(None),
            handed: Mutex::new(Handed::default()),
        }
    }
}

impl DispatchSignal {
    /// Deliveries with ids from `first_id` on were committed and are due now.
    pub fn due_from(&self, first_id: i64) {
        self.due_from.fetch_min(first_id, Ordering::AcqRel);
        self.wake();
    }

    /// Deliveries anywhere may be due again (a replay): look from the start.
    pub fn rescan(&self) {
        self.due_from(0);
    }

    /// Something changed that may let a claim succeed (an outcome was recorded).
    pub fn wake(&self) {
        self.claim.store(true, Ordering::Release);
        self.notify.notify_one();
    }

    /// Whether anything asked for a claim since the last call (a hand-over alone
    /// does not).
    pub fn take_claim(&self) -> bool {
        self.claim.swap(false, Ordering::AcqRel)
    }

    /// The lowest id signalled since the last call, if any.
    pub fn take_due_from(&self) -> Option<i64> {
        match self.due_from.swap(i64::MAX, Ordering::AcqRel) {
            i64::MAX => None,
            id => Some(id),
        }
    }

    /// Replaces the standing offer (`None` withdraws it).
    pub fn offer(&self, offer: Option<Offer>) {
        *self.offer.lock().unwrap_or_else(|e| e.into_inner()) = offer.map(Arc::new);
    }

    /// Takes the standing offer, so two batches never fill the same room.
    pub fn take_offer(&self) -> Option<Arc<Offer>> {
        self.offer.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Committed deliveries leased to the dispatcher at insert: it sends them.
    pub fn hand(&self, handed: Handed) {
        if handed.deliveries.is_empty() && handed.waiting.is_empty() {
            return;
        }
        {
            let mut h = self.handed.lock().unwrap_or_else(|e| e.into_inner());
            h.deliveries.extend(handed.deliveries);
            h.waiting.extend(handed.waiting);
        }
        self.notify.notify_one();
    }

    /// Everything handed over since the last call.
    pub fn take_handed(&self) -> Handed {
        std::mem::take(&mut *self.handed.lock().unwrap_or_else(|e| e.into_inner()))
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
