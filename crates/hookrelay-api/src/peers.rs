//! Who holds the admin listener's connections, so one peer cannot hold them all.
//!
//! Every accepted connection gets a slot under its peer (an IPv4 address, or the /64
//! an IPv6 address is in: one host usually holds a whole /64). A peer at
//! `api.max_connections_per_peer`, or the listener at `api.max_connections`, makes
//! room by closing the oldest connection that is not serving a request (still waiting
//! for its request head, or idle between keep-alive requests) of that peer, or of the
//! peer holding the most; only when every candidate is mid-request is the newcomer
//! refused. So a flood of half-open connections costs its sender its own oldest
//! connections, never another peer's, and a request that arrives whole is never
//! locked out by connections that send nothing:
//!
//! ```text
//!  accept ─▶ admit(peer) ─┬─ room                        ─▶ slot (served)
//!                         ├─ peer or listener full, an idle
//!                         │  connection to close          ─▶ close it, slot (served)
//!                         └─ every candidate mid-request  ─▶ refused (closed at once)
//! ```
//!
//! Hand-rolled: hyper and tower limit requests (timeouts, concurrency), not who holds
//! the connections; no maintained crate does per-peer connection caps with eviction.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
};

use tokio::sync::Notify;

/// The unit a per-peer cap counts: an IPv4 address, or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum PeerKey {
    V4([u8; 4]),
    V6([u8; 8]),
}

impl PeerKey {
    pub(crate) fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => PeerKey::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => PeerKey::V4(v4.octets()),
                None => {
                    let o = v6.octets();
                    let mut prefix = [0u8; 8];
                    prefix.copy_from_slice(&o[..8]);
                    PeerKey::V6(prefix)
                }
            },
        }
    }
}

/// One open connection's shared state: whether it is serving a request, and the
/// signal that closes it.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    busy: AtomicUsize,
    close: Notify,
}

impl Slot {
    /// Marks the connection as serving a request until the guard is dropped.
    pub(crate) fn serving(self: &Arc<Self>) -> Serving {
        self.busy.fetch_add(1, Ordering::AcqRel);
        Serving(self.clone())
    }

    fn is_idle(&self) -> bool {
        self.busy.load(Ordering::Acquire) == 0
    }

    /// Completes once the table has chosen this connection to make room.
    pub(crate) async fn closed(&self) {
        self.close.notified().await;
    }
}

/// A request in progress on a connection.
pub(crate) struct Serving(Arc<Slot>);

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The connections of one listener, by peer.
#[derive(Debug)]
pub(crate) struct Connections {
    per_peer: usize,
    total: usize,
    inner: Mutex<Inner>,
    /// Mirrors the number of slots taken, for a gauge outside.
    gauge: Arc<AtomicUsize>,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    open: usize,
    /// Per peer, its connections oldest first (ids only grow).
    peers: HashMap<PeerKey, BTreeMap<u64, Arc<Slot>>>,
}

/// What [`Connections::admit`] decided.
pub(crate) enum Admission {
    /// Serve it; the guard frees the slot when dropped.
    Admitted(Admitted),
    /// Every connection that could make room is mid-request.
    Refused,
}

/// An admitted connection's place in the table, freed on drop.
pub(crate) struct Admitted {
    table: Arc<Connections>,
    peer: PeerKey,
    id: u64,
    pub(crate) slot: Arc<Slot>,
    /// Whether another connection was closed to make room.
    pub(crate) evicted: bool,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.table.remove(self.peer, self.id);
    }
}

impl Connections {
    /// At most `total` connections, `per_peer` of one peer; `gauge` follows the count.
    pub(crate) fn new(total: usize, per_peer: usize, gauge: Arc<AtomicUsize>) -> Arc<Self> {
        Arc::new(Self {
            total: total.max(1),
            per_peer: per_peer.max(1),
            inner: Mutex::default(),
            gauge,
        })
    }

    /// Open connections right now.
    #[cfg(test)]
    pub(crate) fn open(&self) -> usize {
        self.lock().open
    }

    /// Open connections of `ip`'s peer right now.
    #[cfg(test)]
    pub(crate) fn open_of(&self, ip: IpAddr) -> usize {
        self.lock()
            .peers
            .get(&PeerKey::of(ip))
            .map_or(0, BTreeMap::len)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain counters and maps behind.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a slot for a new connection from `ip`, closing an idle connection to make
    /// room when the peer or the listener is full.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Admission {
        let peer = PeerKey::of(ip);
        let mut inner = self.lock();
        let mut evicted = false;
        let before = inner.open;
        let held = inner.peers.get(&peer).map_or(0, BTreeMap::len);
        if held >= self.per_peer {
            if !inner.evict_oldest_idle(peer) {
                return Admission::Refused;
            }
            evicted = true;
        } else if inner.open >= self.total {
            // The peer holding the most connections gives one up.
            let largest = inner
                .peers
                .iter()
                .filter(|(_, conns)| conns.values().any(|s| s.is_idle()))
                .max_by_key(|(_, conns)| conns.len())
                .map(|(key, _)| *key);
            match largest {
                Some(victim) if inner.evict_oldest_idle(victim) => evicted = true,
                _ => return Admission::Refused,
            }
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let slot = Arc::new(Slot::default());
        inner
            .peers
            .entry(peer)
            .or_default()
            .insert(id, slot.clone());
        inner.open += 1;
        self.follow(before, inner.open);
        Admission::Admitted(Admitted {
            table: self.clone(),
            peer,
            id,
            slot,
            evicted,
        })
    }

    fn remove(&self, peer: PeerKey, id: u64) {
        let mut inner = self.lock();
        let before = inner.open;
        inner.take(peer, id);
        self.follow(before, inner.open);
    }

    /// Moves the gauge from `before` to `after` (under the table's lock).
    fn follow(&self, before: usize, after: usize) {
        if after > before {
            self.gauge.fetch_add(after - before, Ordering::Relaxed);
        } else {
            self.gauge.fetch_sub(before - after, Ordering::Relaxed);
        }
    }
}

impl Inner {
    /// Closes `peer`'s oldest connection not serving a request; false if it has none.
    fn evict_oldest_idle(&mut self, peer: PeerKey) -> bool {
        let victim = self
            .peers
            .get(&peer)
            .and_then(|conns| conns.iter().find(|(_, s)| s.is_idle()).map(|(id, _)| *id));
        match victim.and_then(|id| self.take(peer, id)) {
            Some(slot) => {
                // A permit is kept if the connection's task is not waiting yet.
                slot.close.notify_one();
                true
            }
            None => false,
        }
    }

    fn take(&mut self, peer: PeerKey, id: u64) -> Option<Arc<Slot>> {
        let conns = self.peers.get_mut(&peer)?;
        let slot = conns.remove(&id)?;
        if conns.is_empty() {
            self.peers.remove(&peer);
        }
        self.open -= 1;
        Some(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn admitted(a: Admission) -> Admitted {
        match a {
            Admission::Admitted(a) => a,
            Admission::Refused => panic!("refused"),
        }
    }

    #[test]
    fn peers_are_addresses_or_ipv6_64s() {
        assert_eq!(
            PeerKey::of(ip("10.0.0.1")),
            PeerKey::of(ip("::ffff:10.0.0.1"))
        );
        assert_ne!(PeerKey::of(ip("10.0.0.1")), PeerKey::of(ip("10.0.0.2")));
        assert_eq!(
            PeerKey::of(ip("2001:db8:1:2::1")),
            PeerKey::of(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            PeerKey::of(ip("2001:db8:1:2::1")),
            PeerKey::of(ip("2001:db8:1:3::1"))
        );
    }

    /// A peer at its cap loses its oldest idle connection to its newest one; one
    /// serving a request is kept; another peer is untouched.
    #[test]
    fn a_full_peer_gives_up_its_oldest_idle_connection() {
        let table = Connections::new(100, 3, Arc::default());
        let a = ip("10.0.0.1");
        let first = admitted(table.admit(a));
        let _busy = first.slot.serving();
        let second = admitted(table.admit(a));
        let third = admitted(table.admit(a));
        let other = admitted(table.admit(ip("10.0.0.2")));
        let fourth = admitted(table.admit(a));
        assert!(fourth.evicted);
        assert_eq!(table.open_of(a), 3);
        // `second` was the oldest idle one: its slot is gone and its task told.
        assert!(!table.lock().peers[&PeerKey::of(a)].contains_key(&second.id));
        assert!(table.lock().peers[&PeerKey::of(a)].contains_key(&first.id));
        assert!(!other.evicted);
        assert_eq!(table.open(), 4);
        // Dropping an evicted connection's guard later does not count it twice.
        drop(second);
        assert_eq!(table.open(), 4);
        drop((third, fourth, other, first));
        assert_eq!(table.open(), 0);
        assert!(table.lock().peers.is_empty());
    }

    #[test]
    fn a_peer_whose_connections_all_serve_requests_is_refused() {
        let table = Connections::new(100, 2, Arc::default());
        let a = ip("10.0.0.1");
        let one = admitted(table.admit(a));
        let two = admitted(table.admit(a));
        let _g1 = one.slot.serving();
        let _g2 = two.slot.serving();
        assert!(matches!(table.admit(a), Admission::Refused));
        assert!(matches!(
            table.admit(ip("10.0.0.2")),
            Admission::Admitted(_)
        ));
    }

    /// At the listener's cap, the peer holding the most connections gives one up.
    #[test]
    fn a_full_listener_takes_from_the_largest_peer() {
        let table = Connections::new(4, 4, Arc::default());
        let big = ip("10.0.0.1");
        let small = ip("10.0.0.2");
        let b: Vec<_> = (0..3).map(|_| admitted(table.admit(big))).collect();
        let s = admitted(table.admit(small));
        let newcomer = admitted(table.admit(ip("10.0.0.3")));
        assert!(newcomer.evicted);
        assert_eq!(table.open_of(big), 2);
        assert_eq!(table.open_of(small), 1);
        assert_eq!(table.open(), 4);
        drop((b, s, newcomer));
        assert_eq!(table.open(), 0);
    }

    #[tokio::test]
    async fn an_evicted_connection_is_told() {
        let table = Connections::new(10, 1, Arc::default());
        let a = ip("127.0.0.1");
        let old = admitted(table.admit(a));
        let _new = admitted(table.admit(a));
        // The notification was stored before anyone waited for it.
        tokio::time::timeout(std::time::Duration::from_secs(5), old.slot.closed())
            .await
            .expect("the evicted connection is told to close");
    }
}
