use std::{
    collections::{HashMap, HashSet},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use hookrelay_core::{
    config::DispatchConfig,
    stats::{AttemptOutcome, DispatchStats},
};
use hookrelay_store::{
    expiry_interval, Claim, ClaimProgress, ClaimRoom, ClaimedDelivery, DispatchSignal, Offer,
    OutcomeStatus, Store,
};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

use crate::{
    breaker::{Admission, Breakers, Recorded},
    client::build_client,
    recorder::Recorder,
    send, ClientError,
};

/// A subscription may hold this many times its concurrency in claimed deliveries:
/// one batch sending, the rest waiting. Claims are then deep batches, not one
/// delivery per freed slot: a claim costs a fixed 0.3 ms of store time plus about
/// 6.5 µs a row (16 rows 0.45 ms, 90 rows 0.93 ms, 256 rows 2 ms on a 200,000-row
/// queue), so at 16 rows it capped one subscription near 9k deliveries/s. At 4 a
/// lone busy subscription was claimed 48 rows at a time; at 8, 112, and bench
/// workload 1 gained 3-4 % (alternating runs: 15.7-18.7k, mean 17.6k events/s, then
/// 16.4-19.7k, mean 18.2k; fan-out workload 3 did not change). The price is the lease,
/// which covers PREFETCH + 1 timeouts (a held delivery may wait behind PREFETCH - 1
/// batches): deliveries a crashed process held wait 95 s at the default 10 s
/// timeout, not 55 s, before another process takes them.
const PREFETCH: usize = 8;

/// A subscription is topped up once it holds no more than this many batches, so what
/// it holds lasts while the claim is in flight. At one batch (16 deliveries, about
/// 1.2 ms of sending at 13k/s) a busy subscription ran dry on every claim, which
/// takes 2-3 ms at that load (6 under heavier): in bench workload 1 the deliveries
/// lagged capture by 3.1-4.6 s. At four the claims are 64 rows or more instead of
/// 112, the lag fell to 1.8-2.3 s, and five alternating pairs of full runs went
/// from 10.8-14.2k (mean 13.1k) to 14.3-15.0k (mean 14.6k) events/s.
const REFILL_AT: usize = PREFETCH / 2;

/// How many more deliveries to claim for a subscription holding `held` (claimed, not
/// yet finished) with concurrency `cap`. A subscription is topped up only once no
/// more than `REFILL_AT` batches are left, so every claim for it is at least
/// `(PREFETCH - REFILL_AT) * cap` deep; an open circuit gets nothing and a half-open
/// one a single probe.
fn room(held: usize, cap: usize, admission: Admission) -> usize {
    match admission {
        Admission::Open => 0,
        Admission::HalfOpen => usize::from(held == 0),
        Admission::Closed if held > REFILL_AT * cap => 0,
        Admission::Closed => PREFETCH * cap - held,
    }
}

/// Per subscription: deliveries held, the semaphore that caps its concurrent sends,
/// and its circuit. Shared by the claimer and the workers.
#[derive(Default)]
struct Load {
    held: HashMap<String, usize>,
    gates: HashMap<String, Arc<Semaphore>>,
    breakers: Breakers,
    /// Subscriptions whose last claim found nothing more waiting: the ones this
    /// process offers room to fresh deliveries (see `hookrelay_store::Offer`), and
    /// whose finished deliveries need no claim to refill them.
    drained: HashSet<String>,
}

impl Load {
    /// The room of every subscription with any state; the others have the full
    /// `PREFETCH * cap`.
    fn rooms(&self, cap: usize, now: Instant) -> HashMap<&str, usize> {
        let mut rooms: HashMap<&str, usize> = HashMap::new();
        for sub in self
            .held
            .keys()
            .map(String::as_str)
            .chain(self.breakers.restricted(now).map(|(s, _)| s))
        {
            let held = self.held.get(sub).copied().unwrap_or(0);
            rooms.insert(sub, room(held, cap, self.breakers.admission(sub, now)));
        }
        rooms
    }

    fn gate(&mut self, sub: &str, cap: usize) -> Arc<Semaphore> {
        self.gates
            .entry(sub.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(cap)))
            .clone()
    }

    /// One of `sub`'s deliveries is done. True when that opened room for a claim
    /// (it is down to `REFILL_AT` batches, or holds nothing now) and something may be
    /// waiting for it, so the claimer is only woken when a claim can be a deep one.
    fn finished(&mut self, sub: &str, cap: usize) -> bool {
        let Some(n) = self.held.get_mut(sub) else {
            return false;
        };
        *n -= 1;
        let left = *n;
        if left == 0 {
            self.held.remove(sub);
            self.gates.remove(sub);
        }
        (left == REFILL_AT * cap || left == 0) && !self.drained.contains(sub)
    }
}

/// Deliveries leased per claim at most.
const MAX_CLAIM: usize = 256;

/// A cursor held below the same pending delivery this long (its key is blocked by a
/// slow or retrying earlier delivery) moves on; the next rescan looks at it again.
const STUCK_AFTER: Duration = Duration::from_millis(500);

/// Every cursor goes back to the start this often, to find what no cursor covers:
/// leases that expired (a crashed process), rows skipped while their key was blocked,
/// and rows other processes committed below a cursor.
const RESCAN_EVERY: Duration = Duration::from_secs(1);

/// Per subscription, the id below which the claimer does not look for pending
/// deliveries (see `hookrelay_store::claim`), so claims seek past finished rows.
struct Cursors {
    at: HashMap<String, Cursor>,
    rescanned: Instant,
}

#[derive(Default)]
struct Cursor {
    at: i64,
    /// The pending id the cursor is held below, and since when.
    held_by: Option<(i64, Instant)>,
}

impl Cursors {
    fn new(now: Instant) -> Self {
        Self {
            at: HashMap::new(),
            rescanned: now,
        }
    }

    /// Forgets every cursor when a rescan is due, or lowers them below `due_from`.
    fn rewind(&mut self, due_from: Option<i64>, now: Instant) {
        if now.duration_since(self.rescanned) >= RESCAN_EVERY || due_from == Some(0) {
            self.at.clear();
            self.rescanned = now;
        } else if let Some(first) = due_from {
            for c in self.at.values_mut() {
                c.at = c.at.min(first - 1);
            }
        }
    }

    /// Is any cursor held below a pending delivery (one whose key was blocked)?
    fn holding(&self) -> bool {
        self.at.values().any(|c| c.held_by.is_some())
    }

    fn cursor(&self, sub: &str) -> i64 {
        self.at.get(sub).map_or(0, |c| c.at)
    }

    fn advance(&mut self, p: ClaimProgress, now: Instant) {
        let c = self.at.entry(p.subscription_id).or_default();
        match p.hold {
            Some(hold) => {
                let since = match c.held_by {
                    Some((id, since)) if id == hold => since,
                    _ => now,
                };
                if now.duration_since(since) >= STUCK_AFTER {
                    c.at = c.at.max(p.reach.unwrap_or(hold));
                    c.held_by = None;
                } else {
                    c.at = c.at.max(hold - 1);
                    c.held_by = Some((hold, since));
                }
            }
            None => {
                c.at = c.at.max(p.reach.unwrap_or(c.at));
                c.held_by = None;
            }
        }
    }
}

/// Of the shutdown grace, what the dispatcher leaves for the rest of the process to
/// stop after it (log lines, closing connections).
const DRAIN_MARGIN: Duration = Duration::from_millis(500);

/// Time a lease outlives the attempt's own timeout, for recording the outcome.
const LEASE_MARGIN: Duration = Duration::from_secs(5);

/// How a claim round ended.
enum Round {
    /// Go round again at once (a full claim, a store error backed off, or a wait
    /// for room that may have ended).
    Again,
    /// Nothing more to claim now: offer room and wait.
    Settled,
    /// `stop` came during the claim.
    Stopped,
}

/// What the claim loop keeps from one round to the next.
struct Claiming {
    cursors: Cursors,
    /// The enabled subscriptions as of the last claim: while all of them are full a
    /// claim can take nothing, and a new subscription waits at most one poll
    /// interval to be seen.
    enabled: Vec<String>,
    last_claim: Instant,
    /// Claim at the next round whatever the signal says. True at the start:
    /// deliveries may be waiting from before.
    again: bool,
    store_failures: u32,
    /// What a subscription with nothing held may take.
    full_room: usize,
    /// A held delivery may wait for PREFETCH - 1 batches ahead of it, then send.
    lease: Duration,
}

impl Claiming {
    fn new(cfg: &DispatchConfig) -> Self {
        let now = Instant::now();
        Self {
            cursors: Cursors::new(now),
            enabled: Vec::new(),
            last_claim: now,
            again: true,
            store_failures: 0,
            full_room: PREFETCH * cfg.per_subscription,
            lease: cfg.timeout * (PREFETCH as u32 + 1) + LEASE_MARGIN,
        }
    }

    /// Each subscription's room and cursor for the next claim, or `None` when every
    /// enabled subscription is full and the last claim was within the poll interval.
    fn rooms(&self, pool: &Pool, per_subscription: usize, now: Instant) -> Option<Vec<ClaimRoom>> {
        let Ok(l) = pool.load.lock() else {
            return Some(Vec::new());
        };
        let mut rooms = l.rooms(per_subscription, now);
        let all_full = !self.enabled.is_empty()
            && self
                .enabled
                .iter()
                .all(|s| rooms.get(s.as_str()) == Some(&0));
        if all_full && now.duration_since(self.last_claim) < pool.poll_interval {
            return None;
        }
        for sub in self.cursors.at.keys() {
            rooms.entry(sub.as_str()).or_insert(self.full_room);
        }
        Some(
            rooms
                .into_iter()
                .map(|(sub, room)| ClaimRoom {
                    subscription_id: sub.to_owned(),
                    room,
                    cursor: self.cursors.cursor(sub),
                })
                .collect(),
        )
    }
}

/// The workers' side: what the process holds and sends, and where outcomes go.
struct Pool {
    /// `slots` bounds what this process holds (memory); `senders` what it sends at
    /// once.
    capacity: usize,
    slots: Arc<Semaphore>,
    senders: Arc<Semaphore>,
    load: Arc<Mutex<Load>>,
    tx: mpsc::Sender<hookrelay_store::Outcome>,
    /// Set while some key is blocked: only then can a recorded outcome make a claim
    /// worth running (otherwise the recorder's wake-ups ran empty claims).
    key_blocked: Arc<AtomicBool>,
    poll_interval: Duration,
}

impl Pool {
    fn new(cfg: &DispatchConfig) -> (Self, mpsc::Receiver<hookrelay_store::Outcome>) {
        let capacity = cfg.workers * PREFETCH;
        let (tx, rx) = mpsc::channel(cfg.workers * 2);
        let pool = Self {
            capacity,
            slots: Arc::new(Semaphore::new(capacity)),
            senders: Arc::new(Semaphore::new(cfg.workers)),
            load: Arc::new(Mutex::new(Load {
                breakers: Breakers::new(cfg.circuit.clone()),
                ..Load::default()
            })),
            tx,
            key_blocked: Arc::new(AtomicBool::new(false)),
            poll_interval: cfg.poll_interval,
        };
        (pool, rx)
    }
}

/// The claimer and its worker pool.
pub struct Dispatcher {
    store: Store,
    cfg: Arc<DispatchConfig>,
    client: reqwest::Client,
    owner: String,
    signal: Arc<DispatchSignal>,
    stats: Arc<DispatchStats>,
}

impl Dispatcher {
    /// `signal` is raised by whoever creates or re-schedules deliveries in this process.
    pub fn new(
        store: Store,
        cfg: DispatchConfig,
        owner: String,
        signal: Arc<DispatchSignal>,
    ) -> Result<Self, ClientError> {
        let client = build_client(&cfg)?;
        Ok(Self {
            store,
            cfg: Arc::new(cfg),
            client,
            owner,
            signal,
            stats: Arc::default(),
        })
    }

    /// Runs until `stop`; then stops claiming, lets in-flight attempts finish and
    /// records their outcomes, for at most `shutdown_grace`, before returning.
    ///
    /// ```text
    ///  ┌─▶ hand_over: send what batches leased to us at insert (no claim)
    ///  │      ▼
    ///  │   claim_round ── not asked, or no free slot ───────────────┐
    ///  │      │ every subscription full, claimed recently: wait ────┼─▶ (again)
    ///  │      │ store error: back off ──────────────────────────────┼─▶ (again)
    ///  │      │ a full claim: more may be due ──────────────────────┼─▶ (again)
    ///  │      ▼ took what there was                                  ▼
    ///  └── offer room to drained subscriptions, wait for a signal or the poll
    ///   stop ──▶ withdraw the offer ──▶ drain (bounded by the grace) ──▶ done
    /// ```
    pub async fn run(self, stop: CancellationToken) {
        let (pool, rx) = Pool::new(&self.cfg);
        let abandon = CancellationToken::new();
        let recorder = tokio::spawn(
            Recorder {
                store: self.store.clone(),
                owner: self.owner.clone(),
                signal: self.signal.clone(),
                key_blocked: pool.key_blocked.clone(),
                stats: self.stats.clone(),
            }
            .run(rx, abandon.clone()),
        );
        let maintenance = tokio::spawn(maintain(
            self.store.clone(),
            expiry_interval(self.cfg.max_age),
            self.signal.clone(),
            stop.clone(),
        ));
        info!(owner = %self.owner, workers = self.cfg.workers, "dispatcher started");
        let mut claiming = Claiming::new(&self.cfg);
        while !stop.is_cancelled() {
            self.hand_over(&pool).await;
            match self.claim_round(&mut claiming, &pool, &stop).await {
                Round::Stopped => break,
                Round::Again => continue,
                Round::Settled => {}
            }
            self.signal.offer(self.offer(
                &pool.load,
                pool.slots.available_permits(),
                claiming.lease,
                claiming.full_room,
            ));
            self.wait(&stop).await;
        }
        self.signal.offer(None);
        self.drain(pool, recorder, abandon).await;
        let _ = maintenance.await;
        info!("dispatcher stopped");
    }

    /// Sends the deliveries a batch of this process leased to us as it inserted them.
    async fn hand_over(&self, pool: &Pool) {
        let handed = self.signal.take_handed();
        if !handed.waiting.is_empty() {
            // Left for a claim: no longer drained, so room that opens is claimed.
            if let Ok(mut l) = pool.load.lock() {
                for sub in &handed.waiting {
                    l.drained.remove(sub);
                }
            }
        }
        if !handed.deliveries.is_empty() {
            tracing::trace!(handed = handed.deliveries.len(), "handed over");
            self.stats
                .handed_over
                .fetch_add(handed.deliveries.len() as u64, Ordering::Relaxed);
            self.spawn_all(handed.deliveries, pool).await;
        }
    }

    /// One claim, if one is asked for (new or re-scheduled deliveries, room opened, a
    /// full claim before, or the poll interval passed; not a hand-over alone, which
    /// leaves nothing to claim) and there is a free slot.
    async fn claim_round(
        &self,
        claiming: &mut Claiming,
        pool: &Pool,
        stop: &CancellationToken,
    ) -> Round {
        let asked = self.signal.take_claim()
            || std::mem::take(&mut claiming.again)
            || claiming.last_claim.elapsed() >= self.cfg.poll_interval;
        let free = pool.slots.available_permits();
        if free == 0 || !asked {
            return Round::Settled;
        }
        let want = free.min(MAX_CLAIM);
        let now = Instant::now();
        let due_from = self.signal.take_due_from();
        if due_from == Some(0) {
            // A replay: what it made due again is a backlog to claim first.
            if let Ok(mut l) = pool.load.lock() {
                l.drained.clear();
            }
        }
        claiming.cursors.rewind(due_from, now);
        let Some(rooms) = claiming.rooms(pool, self.cfg.per_subscription, now) else {
            // Every subscription is full and was claimed for recently: a claim could
            // take nothing. Look again once woken.
            self.wait(stop).await;
            claiming.again = true;
            return Round::Again;
        };
        claiming.last_claim = now;
        // Claims and offers share the room: no offer stands while a claim fills it.
        self.signal.offer(None);
        let t = Instant::now();
        // A store that does not answer must not hold up a stop: a claim dropped
        // mid-way at worst leaves leases to expire.
        let claim = tokio::select! {
            c = self.store.claim_due_deliveries(
                &self.owner, want, claiming.lease, claiming.full_room, &rooms) => c,
            _ = stop.cancelled() => return Round::Stopped,
        };
        tracing::trace!(us = t.elapsed().as_micros() as u64, "claim query");
        let claim = match claim {
            Ok(claim) => claim,
            Err(e) => {
                claiming.store_failures += 1;
                let delay = Duration::from_millis(100 * u64::from(claiming.store_failures.min(50)));
                warn!(error = %e, retry_in = ?delay, "claiming deliveries failed");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.cancelled() => {}
                }
                return Round::Again;
            }
        };
        claiming.store_failures = 0;
        let claimed = claim.deliveries.len();
        tracing::trace!(claimed, want, "claimed");
        note_drained(&pool.load, &claim);
        self.stats
            .claimed
            .fetch_add(claimed as u64, Ordering::Relaxed);
        let now = Instant::now();
        for p in claim.progress {
            claiming.cursors.advance(p, now);
        }
        pool.key_blocked
            .store(claiming.cursors.holding(), Ordering::Relaxed);
        claiming.enabled = claim.enabled;
        self.spawn_all(claim.deliveries, pool).await;
        if claimed > 0 && claimed == want {
            claiming.again = true;
            return Round::Again; // more may be due right now
        }
        Round::Settled
    }

    /// Waits for every worker to hand in its slot, then for the recorder, but no
    /// longer than the grace allows (bounded shutdown: SIGTERM must stop the process
    /// even while the store or an endpoint does not answer). What is still in flight
    /// or unrecorded then is left to lease expiry.
    async fn drain(
        &self,
        pool: Pool,
        mut recorder: tokio::task::JoinHandle<()>,
        abandon: CancellationToken,
    ) {
        let grace = self.cfg.shutdown_grace.saturating_sub(DRAIN_MARGIN);
        info!(grace = ?grace, "dispatcher stopping; waiting for in-flight deliveries");
        let deadline = tokio::time::Instant::now() + grace;
        let Pool {
            capacity,
            slots,
            tx,
            ..
        } = pool;
        let drained = tokio::time::timeout_at(deadline, async {
            let _all = slots.acquire_many(capacity as u32).await;
            drop(tx);
        })
        .await;
        if drained.is_err() {
            warn!(
                in_flight = capacity - slots.available_permits(),
                "shutdown grace elapsed with deliveries in flight; their leases will expire and they will be sent again"
            );
        }
        if tokio::time::timeout_at(deadline, &mut recorder)
            .await
            .is_err()
        {
            abandon.cancel();
            let _ = recorder.await;
        }
    }

    /// The one HTTP client (cheap to clone), for the admin API's test sends.
    pub fn client(&self) -> reqwest::Client {
        self.client.clone()
    }

    /// The live counters `/metrics` reads, and the circuits the subscription view shows.
    pub fn stats(&self) -> Arc<DispatchStats> {
        self.stats.clone()
    }

    /// Spawns `deliveries` (a claim's, or a batch's handed over), with one target per
    /// subscription: they carry the URL and secrets read once for all of them.
    async fn spawn_all(&self, deliveries: Vec<ClaimedDelivery>, pool: &Pool) {
        let mut targets: HashMap<String, Arc<send::Target>> = HashMap::new();
        for d in deliveries {
            let to = match targets.get(d.subscription_id.as_str()) {
                Some(to) => to.clone(),
                None => {
                    let to = Arc::new(send::target(&d));
                    targets.insert(d.subscription_id.clone(), to.clone());
                    to
                }
            };
            self.spawn_attempt(d, to, pool).await;
        }
    }

    /// Room for fresh deliveries, for the drained subscriptions with room, within
    /// the `free` slots this process has.
    fn offer(
        &self,
        load: &Arc<Mutex<Load>>,
        free: usize,
        lease: Duration,
        full_room: usize,
    ) -> Option<Offer> {
        let l = load.lock().ok()?;
        if l.drained.is_empty() || free == 0 {
            return None;
        }
        let now = Instant::now();
        let restricted = l.rooms(self.cfg.per_subscription, now);
        let mut left = free;
        let mut rooms = Vec::new();
        for sub in &l.drained {
            let room = restricted
                .get(sub.as_str())
                .copied()
                .unwrap_or(full_room)
                .min(left);
            if room > 0 {
                rooms.push((sub.clone(), room));
                left -= room;
            }
            if left == 0 {
                break;
            }
        }
        (!rooms.is_empty()).then(|| Offer {
            owner: self.owner.clone(),
            lease,
            rooms,
        })
    }

    /// Until something may be due: a signal, the poll interval, or `stop`.
    async fn wait(&self, stop: &CancellationToken) {
        tokio::select! {
            _ = self.signal.notified() => {}
            _ = tokio::time::sleep(self.cfg.poll_interval) => {}
            _ = stop.cancelled() => {}
        }
    }

    async fn spawn_attempt(&self, d: ClaimedDelivery, to: Arc<send::Target>, pool: &Pool) {
        let claimed_at = Instant::now();
        let Ok(slot) = pool.slots.clone().acquire_owned().await else {
            return; // the semaphore is never closed
        };
        let gate = match pool.load.lock() {
            Ok(mut l) => {
                *l.held.entry(d.subscription_id.clone()).or_default() += 1;
                l.gate(&d.subscription_id, self.cfg.per_subscription)
            }
            Err(_) => Arc::new(Semaphore::new(self.cfg.per_subscription)),
        };
        let span = tracing::info_span!(
            "delivery",
            delivery_id = d.delivery_id,
            subscription_id = %d.subscription_id,
            event_id = %d.event_id,
            attempt = d.attempt
        );
        let client = self.client.clone();
        let cfg = self.cfg.clone();
        let tx = pool.tx.clone();
        let load = pool.load.clone();
        let signal = self.signal.clone();
        let senders = pool.senders.clone();
        let stats = self.stats.clone();
        // Past this, the lease may run out mid-attempt and another process could
        // claim the delivery while we send: leave it to that process instead.
        let send_by = self.cfg.timeout * PREFETCH as u32;
        tokio::spawn(
            async move {
                let sub = d.subscription_id.clone();
                let permits: Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)> =
                    match (gate.acquire_owned().await, senders.acquire_owned().await) {
                        (Ok(g), Ok(w)) => Some((g, w)),
                        _ => None,
                    };
                if permits.is_some() && claimed_at.elapsed() <= send_by {
                    stats.started();
                    let outcome = send::attempt_to(&client, &cfg, d, &to).await;
                    stats.finished();
                    let kind = match outcome.status {
                        OutcomeStatus::Succeeded => AttemptOutcome::Succeeded,
                        OutcomeStatus::Retry { .. } => AttemptOutcome::Retrying,
                        OutcomeStatus::Failed => AttemptOutcome::Failed,
                        OutcomeStatus::Gone => AttemptOutcome::Gone,
                    };
                    stats.attempt(&sub, kind, Duration::from_millis(outcome.duration_ms.max(0) as u64));
                    let succeeded = matches!(outcome.status, OutcomeStatus::Succeeded | OutcomeStatus::Gone);
                    tracing::debug!(status = ?outcome.status, code = ?outcome.status_code, ms = outcome.duration_ms, "attempt finished");
                    if let Some(err) = &outcome.error {
                        tracing::info!(error = %err, "attempt failed");
                    }
                    if outcome_kept() {
                        let _ = tx.send(outcome).await;
                    }
                    let recorded = load
                        .lock()
                        .map(|mut l| l.breakers.record(&sub, succeeded, Instant::now()));
                    // Published after the load lock is released; a healthy
                    // subscription's successes publish nothing.
                    match recorded {
                        Ok(Recorded::Failed { opened_for }) => {
                            stats.circuit_failed(&sub, opened_for, chrono::Utc::now());
                        }
                        Ok(Recorded::Closed) => stats.circuit_closed(&sub),
                        Ok(Recorded::Unchanged) | Err(_) => {}
                    }
                } else {
                    tracing::warn!("held too long to send within its lease; leaving it for a later claim");
                }
                drop(permits);
                let opened = load.lock().map(|mut l| l.finished(&sub, cfg.per_subscription)).unwrap_or(true);
                drop(slot);
                if opened {
                    signal.wake();
                }
            }
            .instrument(span),
        );
    }
}

/// A subscription is drained when the claim looked at it, saw everything waiting
/// above its cursor and held nothing back: it took all there was. One the claim
/// found more waiting for is not; one it did not look at keeps its state.
fn note_drained(load: &Arc<Mutex<Load>>, claim: &Claim) {
    let Ok(mut l) = load.lock() else {
        return;
    };
    for p in &claim.progress {
        if p.all_seen && p.hold.is_none() {
            l.drained.insert(p.subscription_id.clone());
        } else {
            l.drained.remove(&p.subscription_id);
        }
    }
}

/// Keeps the queue's planner statistics fresh while deliveries pile in, and fails
/// deliveries past `dispatch.max_age` every `expire_every` (see
/// `hookrelay_store::expiry`): a periodic sweep, not part of the claim, because the
/// claim never looks at a subscription whose circuit is open, where they pile up.
async fn maintain(
    store: Store,
    expire_every: Duration,
    signal: Arc<DispatchSignal>,
    stop: CancellationToken,
) {
    let mut expired_at = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.cancelled() => return,
        }
        if let Err(e) = store.analyze_if_grown().await {
            tracing::debug!(error = %e, "analyze skipped");
        }
        if expired_at.elapsed() >= expire_every {
            expired_at = Instant::now();
            match store.expire_deliveries().await {
                Ok(Some(n)) if n > 0 => {
                    info!(deliveries = n, "deliveries past dispatch.max_age failed");
                    // An expired delivery may have held back later ones of its key.
                    signal.rescan();
                }
                Ok(_) => {}
                Err(e) => warn!(error = %e, "expiry sweep failed; trying again later"),
            }
        }
    }
}

/// False only when the fault suite loses an outcome after the receiver answered (as
/// if the process died there): the lease expires and the delivery is sent again.
fn outcome_kept() -> bool {
    fail::fail_point!("dispatch.before_record", |_| false);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_tops_up_only_deep_batches() {
        use Admission::*;
        let cases = [
            (0, 16, Closed, 128),
            (16, 16, Closed, 112),
            (64, 16, Closed, 64),
            (65, 16, Closed, 0),
            (128, 16, Closed, 0),
            (0, 16, Open, 0),
            (0, 16, HalfOpen, 1),
            (1, 16, HalfOpen, 0),
        ];
        for (held, cap, admission, want) in cases {
            assert_eq!(
                room(held, cap, admission),
                want,
                "held {held} cap {cap} {admission:?}"
            );
        }
    }

    fn progress(hold: Option<i64>, reach: Option<i64>) -> ClaimProgress {
        ClaimProgress {
            subscription_id: "sub_a".into(),
            hold,
            reach,
            all_seen: false,
        }
    }

    #[test]
    fn cursor_moves_to_reach_but_stays_below_what_it_left() {
        let t0 = Instant::now();
        let mut c = Cursors::new(t0);
        assert_eq!(c.cursor("sub_a"), 0);
        c.advance(progress(None, Some(40)), t0);
        assert_eq!(c.cursor("sub_a"), 40, "everything seen was taken");
        c.advance(progress(Some(45), Some(90)), t0);
        assert_eq!(
            c.cursor("sub_a"),
            44,
            "45 was left (blocked or over the limit)"
        );
        c.advance(progress(None, None), t0);
        assert_eq!(c.cursor("sub_a"), 44, "an empty look changes nothing");
        c.advance(progress(None, Some(30)), t0);
        assert_eq!(c.cursor("sub_a"), 44, "never moves back by itself");
    }

    #[test]
    fn a_cursor_held_too_long_moves_on() {
        let t0 = Instant::now();
        let mut c = Cursors::new(t0);
        c.advance(progress(Some(10), Some(50)), t0);
        c.advance(progress(Some(10), Some(60)), t0 + STUCK_AFTER / 2);
        assert_eq!(c.cursor("sub_a"), 9);
        c.advance(progress(Some(10), Some(70)), t0 + STUCK_AFTER);
        assert_eq!(c.cursor("sub_a"), 70, "the blocked row waits for a rescan");
        // A different row holding it starts a new clock.
        c.advance(progress(Some(75), Some(80)), t0 + STUCK_AFTER * 2);
        assert_eq!(c.cursor("sub_a"), 74);
    }

    #[test]
    fn rewinds_below_signalled_rows_and_rescans_periodically() {
        let t0 = Instant::now();
        let mut c = Cursors::new(t0);
        c.advance(progress(None, Some(100)), t0);
        c.rewind(Some(60), t0);
        assert_eq!(c.cursor("sub_a"), 59, "a batch committed below the cursor");
        c.rewind(Some(80), t0);
        assert_eq!(c.cursor("sub_a"), 59);
        c.rewind(None, t0 + RESCAN_EVERY / 2);
        assert_eq!(c.cursor("sub_a"), 59);
        c.rewind(None, t0 + RESCAN_EVERY);
        assert_eq!(c.cursor("sub_a"), 0, "periodic rescan from the start");
        c.advance(progress(None, Some(100)), t0 + RESCAN_EVERY);
        c.rewind(Some(0), t0 + RESCAN_EVERY);
        assert_eq!(c.cursor("sub_a"), 0, "a replay rescans at once");
    }
}
