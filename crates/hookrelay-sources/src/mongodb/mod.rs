//! The MongoDB source: a change stream over the watched collections, checkpointed by
//! resume token in the store.
//!
//! ```text
//!   listCollections: which watched collections keep post-images ──▶ fullDocument
//!   mode (updateLookup / whenAvailable / required, see `images`), logged per collection
//!   store checkpoint ──start_after──▶ aggregate [$changeStream, $match watched ns]
//!   (none: open from now, commit        │
//!    its resume token first)            ▼
//!                      ┌──────── getMore ◀──────────────────────────────┐
//!                      ▼                                                │
//!   events buffered? ──yes──▶ build events into the batch ──────────────┤
//!        │                   (an update without its post-image under
//!        │                    whenAvailable: find it by _id first)
//!        │ no (a getMore is on the wire)                                │
//!        ▼                                                              │
//!   BatchSink::commit(batch, upto = last event's token)  ── store txn ──┘
//!        (events + deliveries + checkpoint, one transaction)
//!   invalidate ─▶ commit, reopen with start_after(its token)
//! ```
//!
//! Acknowledging here is the checkpoint itself: the resume token is written in the
//! same store transaction as the events read up to it, and nothing is told to the
//! server. A crash before that commit leaves the old checkpoint: the next run starts
//! after it and reads those changes again, and since an event id is derived from the
//! source name and the change's resume token, they are the same events and dedupe in
//! the store. A crash after the commit resumes after the last stored event.
//!
//! A quiet stream still moves its checkpoint to the server's post-batch resume token
//! now and then, so a long lull on the watched collections while the oplog rolls over
//! does not strand the stored token outside the oplog. When it is outside anyway
//! (ChangeStreamHistoryLost), `on_history_lost` decides: `fail` stays in error (the
//! supervisor retries with backoff, so an operator sees it and nothing spins), and
//! `restart_from_now` logs the gap and captures from the server's current point.
//!
//! The stream always reopens with `startAfter`, which, unlike `resumeAfter`, also
//! accepts the token of an `invalidate` (a dropped or renamed watched collection or
//! database); on any other token the two are the same.
//!
//! Between stream reads the reader also runs backfills (see `backfill`): a chunk's
//! watermark documents come back through this stream, which is reopened after the
//! checkpoint to cover the watermark collection once a backfill is running.

mod backfill;
mod change;
mod check;
mod error;
mod images;
mod scope;
pub mod value;

use std::{
    future::Future,
    pin::pin,
    task::Poll,
    time::{Duration, Instant},
};

use ::mongodb::{
    bson::Document,
    change_stream::{
        event::{ChangeStreamEvent, OperationType, ResumeToken},
        ChangeStream,
    },
    options::{ClientOptions, FullDocumentBeforeChangeType, FullDocumentType},
    Client,
};
use chrono::Utc;
use hookrelay_core::{
    config::{OnHistoryLost, PostImages, SourceConfig},
    ChangeEvent,
};
use hookrelay_store::{model::RejectedChange, Store};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn, Instrument};

use crate::{BatchSink, Source, SourceError, SourceState, SourceStatus};
use backfill::{Backfiller, Mark, Reached, WATERMARKS};
use change::{parse_token, token_text, TxnCounter};
use scope::{Scope, Target};

/// How often a quiet stream moves its checkpoint to the server's latest token.
const IDLE_CHECKPOINT: Duration = Duration::from_secs(10);

type Stream = ChangeStream<ChangeStreamEvent<Document>>;

pub struct MongoSource {
    cfg: SourceConfig,
    scope: Scope,
    store: Store,
    /// Each watched collection's update mode as last shown in `/v1/sources`, so a
    /// reconnect that changes nothing adds no notice.
    shown_images: std::sync::Mutex<String>,
    /// `backfill.max_rows_per_second` (0: unlimited).
    backfill_rows_per_second: u32,
}

impl MongoSource {
    pub fn new(cfg: SourceConfig, store: Store) -> Result<Self, SourceError> {
        let scope = Scope::parse(&cfg.collections)
            .and_then(|s| s.excluding(&cfg.exclude_fields))
            .map_err(|e| SourceError::Setup(format!("source {} collections: {e}", cfg.name)))?;
        Ok(Self {
            cfg,
            scope,
            store,
            shown_images: std::sync::Mutex::default(),
            backfill_rows_per_second: 0,
        })
    }

    /// Reads backfills at most `n` documents per second
    /// (`backfill.max_rows_per_second`; 0: unlimited).
    pub fn with_backfill_rate(mut self, n: u32) -> Self {
        self.backfill_rows_per_second = n;
        self
    }

    async fn client(&self) -> Result<Client, SourceError> {
        let mut opts = ClientOptions::parse(&self.cfg.url).await?;
        opts.app_name = Some(format!("hookrelay:{}", self.cfg.name));
        // Bounded waits unless the URL sets its own (connectTimeoutMS,
        // serverSelectionTimeoutMS): a vanished server fails an operation in seconds.
        opts.connect_timeout.get_or_insert(CONNECT_TIMEOUT);
        opts.server_selection_timeout
            .get_or_insert(SERVER_SELECTION_TIMEOUT);
        Ok(Client::with_options(opts)?)
    }

    /// Opens the stream after `token`, or from the server's current point, with
    /// `full` as its `fullDocument` mode (see `images`); with `marks`, covering the
    /// backfill watermark collections too (see `backfill`).
    async fn open(
        &self,
        client: &Client,
        token: Option<ResumeToken>,
        full: FullDocumentType,
        marks: bool,
    ) -> Result<Stream, ::mongodb::error::Error> {
        let scope = if marks {
            self.scope.with_watermarks()
        } else {
            self.scope.clone()
        };
        let (database, collection);
        let watch = match scope.target() {
            Target::Collection { db, coll } => {
                collection = client.database(&db).collection::<Document>(&coll);
                collection.watch()
            }
            Target::Database(db) => {
                database = client.database(&db);
                database.watch()
            }
            Target::Cluster => client.watch(),
        };
        let watch = watch
            .pipeline(scope.pipeline())
            .full_document(full)
            .full_document_before_change(FullDocumentBeforeChangeType::WhenAvailable)
            .max_await_time(self.cfg.poll_interval);
        match token {
            Some(token) => watch.start_after(token).await,
            None => watch.await,
        }
    }
}

/// What `hookrelay check` reports for a mongodb source: `Err` for what stops capture
/// (a standalone server, missing privileges), `Ok(notes)` for what merely limits it
/// (pre-images off: `before` will be null).
pub async fn check(cfg: &SourceConfig) -> Result<Vec<String>, SourceError> {
    let scope = Scope::parse(&cfg.collections)
        .map_err(|e| SourceError::Setup(format!("collections: {e}")))?;
    check::check(cfg, &scope).await
}

/// How the driver will protect connections to `cfg`'s servers, from the URL's own
/// options (`tls=true`, `tlsCAFile=`, `tlsCertificateKeyFile=`,
/// `tlsAllowInvalidCertificates=`…; `mongodb+srv://` means TLS), which the driver reads
/// as they are: hookrelay passes the URL on unchanged.
pub async fn tls_report(cfg: &SourceConfig) -> Result<String, SourceError> {
    let opts = ::mongodb::options::ClientOptions::parse(&cfg.url).await?;
    Ok(check::describe_tls(opts.tls.as_ref()))
}

impl Source for MongoSource {
    fn name(&self) -> &str {
        &self.cfg.name
    }

    async fn run<S: BatchSink>(
        &self,
        sink: &S,
        status: &SourceStatus,
        stop: &CancellationToken,
    ) -> Result<(), SourceError> {
        let client = self.client().await?;
        let result = Reader::new(self, &client).run(sink, status, stop).await;
        client.shutdown().await;
        result
    }

    /// The resume point is taken once a checkpoint exists: it is written before the
    /// first run reports "capturing".
    async fn capture_installed(&self) -> Result<bool, SourceError> {
        Ok(self.store.load_checkpoint(&self.cfg.name).await?.is_some())
    }
}

/// One connected session of the reader.
struct Reader<'a> {
    src: &'a MongoSource,
    client: &'a Client,
    /// The stream's `fullDocument` mode, chosen when it first opens (see `images`).
    full: FullDocumentType,
    txns: TxnCounter,
    batch: Vec<ChangeEvent>,
    /// The token of the last change in `batch`.
    batch_upto: Option<String>,
    /// The checkpoint as last committed, and when.
    committed: Option<String>,
    committed_at: Instant,
    /// The backfill being read, if any (see `backfill`).
    backfill: Backfiller,
    /// The stream covers the watermark collections.
    marks_in_stream: bool,
}

impl<'a> Reader<'a> {
    fn new(src: &'a MongoSource, client: &'a Client) -> Self {
        Self {
            src,
            client,
            full: FullDocumentType::UpdateLookup,
            txns: TxnCounter::default(),
            batch: Vec::new(),
            batch_upto: None,
            committed: None,
            committed_at: Instant::now(),
            backfill: Backfiller::new(&src.cfg.name, src.backfill_rows_per_second),
            marks_in_stream: false,
        }
    }

    async fn run<S: BatchSink>(
        mut self,
        sink: &S,
        status: &SourceStatus,
        stop: &CancellationToken,
    ) -> Result<(), SourceError> {
        let name = &self.src.cfg.name;
        let stored = self.src.store.load_checkpoint(name).await?;
        let resume = stored
            .as_ref()
            .map(|c| parse_token(&c.position))
            .transpose()?;
        self.committed = stored.map(|c| c.position);
        self.full = self.choose_images(status).await?;
        let opened = cancellable(
            self.src
                .open(self.client, resume.clone(), self.full.clone(), false),
            stop,
        )
        .await;
        let mut stream = match opened {
            None => return Ok(()),
            Some(Ok(s)) => s,
            Some(Err(e)) if error::is_history_lost(&e) => {
                let lost_at = self.committed.clone().unwrap_or_default();
                match self.src.cfg.on_history_lost {
                    OnHistoryLost::Fail => {
                        error!(checkpoint = %lost_at, "the stored resume token is no longer in the oplog: changes since then are lost; set on_history_lost = \"restart_from_now\" to capture from now on");
                        return Err(SourceError::HistoryLost(format!(
                            "resume token {lost_at} is no longer in the oplog ({e}); on_history_lost = \"fail\""
                        )));
                    }
                    OnHistoryLost::RestartFromNow => {
                        error!(checkpoint = %lost_at, "the stored resume token is no longer in the oplog: changes since then are LOST; restarting from now (on_history_lost = \"restart_from_now\")");
                        status.notice(
                            "history_lost",
                            format!(
                                "history lost after {lost_at}; restarted from now at {}",
                                Utc::now().to_rfc3339()
                            ),
                        );
                        self.committed = None;
                        match cancellable(
                            self.src.open(self.client, None, self.full.clone(), false),
                            stop,
                        )
                        .await
                        {
                            None => return Ok(()),
                            Some(r) => r?,
                        }
                    }
                }
            }
            Some(Err(e)) => return Err(e.into()),
        };
        if self.committed.is_none() {
            // Take the resume point durably before reporting "capturing": a crash
            // right after must not restart from a later "now".
            let token = stream.resume_token().ok_or_else(|| {
                SourceError::Setup("the server gave no resume token (MongoDB 4.2+ needed)".into())
            })?;
            self.checkpoint(sink, token_text(&token)?).await?;
        }
        info!(collections = ?self.src.cfg.collections, "capturing");
        status.set_state(SourceState::Running);

        loop {
            let step = {
                let mut next = pin!(stream.next_if_any());
                match poll_once(&mut next).await {
                    Some(r) => r,
                    None => {
                        // Nothing buffered: a getMore is on the wire. Commit what has
                        // been read meanwhile, then wait for it (never dropping it
                        // mid-flight, which could skip the batch it brings).
                        self.flush(sink).await?;
                        // The driver has no socket timeout and its keepalives take
                        // minutes: a getMore that outlives its await time by
                        // `GETMORE_GRACE` went to a server that is gone. The stream is
                        // dropped with it and reopened from the stored checkpoint.
                        let bound = self.src.cfg.poll_interval + GETMORE_GRACE;
                        match cancellable(tokio::time::timeout(bound, next), stop).await {
                            None => return Ok(()),
                            Some(Ok(r)) => r,
                            Some(Err(_)) => {
                                return Err(SourceError::Database {
                                    message: format!(
                                        "the server did not answer a change stream read within {bound:?}"
                                    ),
                                    transient: true,
                                })
                            }
                        }
                    }
                }
            };
            match step? {
                Some(ev) => {
                    if let Some(token) = self.handle(sink, status, ev).await? {
                        // Invalidated: the stream is closed; continue after it.
                        self.flush(sink).await?;
                        self.checkpoint(sink, token_text(&token)?).await?;
                        let reopened = self.src.open(
                            self.client,
                            Some(token),
                            self.full.clone(),
                            self.marks_in_stream,
                        );
                        stream = match cancellable(reopened, stop).await {
                            None => return Ok(()),
                            Some(r) => r?,
                        };
                        info!("change stream reopened after the invalidate");
                    } else if self.batch.len() >= self.src.cfg.batch_size {
                        self.flush(sink).await?;
                    }
                }
                None => {
                    // An empty getMore: all caught up.
                    self.flush(sink).await?;
                    status.note_caught_up();
                    if self.committed_at.elapsed() >= IDLE_CHECKPOINT {
                        if let Some(token) = stream.resume_token() {
                            let text = token_text(&token)?;
                            if self.committed.as_deref() != Some(text.as_str()) {
                                self.checkpoint(sink, text).await?;
                            }
                        }
                    }
                }
            }
            if stop.is_cancelled() {
                return Ok(());
            }
            if let Some(wider) = self.backfill_tick(sink, stop).await? {
                stream = wider;
            }
        }
    }

    /// Lets the backfill start its next chunk when one is due (see `backfill`): the
    /// stream is first reopened to cover the watermark collection if it does not; a
    /// backfill whose collection or watermarks cannot be used ends as failed. Returns
    /// the reopened stream.
    async fn backfill_tick<S: BatchSink>(
        &mut self,
        sink: &S,
        stop: &CancellationToken,
    ) -> Result<Option<Stream>, SourceError> {
        if !self.backfill.chunk_due(sink.running_backfill()).await? {
            return Ok(None);
        }
        let mut wider = None;
        if !self.marks_in_stream {
            // Everything read so far is committed, so the wider stream starts right
            // after it (changes of the watched collections read again dedupe).
            self.flush(sink).await?;
            let token = self.committed.as_deref().map(parse_token).transpose()?;
            let opened = self.src.open(self.client, token, self.full.clone(), true);
            match cancellable(opened, stop).await {
                None => return Ok(None),
                Some(Ok(s)) => {
                    info!("change stream reopened to cover the backfill watermarks");
                    self.marks_in_stream = true;
                    wider = Some(s);
                }
                Some(Err(e)) if error::is_unauthorized(&e) => {
                    let (id, why) = self.backfill.give_up(format!(
                        "cannot watch the watermark collection {WATERMARKS} ({e}): grant the \
                         source's user the changeStream and find actions on each database \
                         a backfilled collection is in (e.g. the read role on it)"
                    ));
                    sink.fail_backfill(&id, &why).await?;
                    return Ok(None);
                }
                Some(Err(e)) => return Err(e.into()),
            }
        }
        let span = self.backfill.span();
        if let Some((id, why)) = self
            .backfill
            .open_window(self.client, &self.src.scope)
            .instrument(span)
            .await?
        {
            sink.fail_backfill(&id, &why).await?;
        }
        Ok(wider)
    }

    /// A watermark document came through the stream: the open window's high mark
    /// commits its chunk with the batch read so far, up to the mark.
    async fn watermark<S: BatchSink>(
        &mut self,
        sink: &S,
        ev: &ChangeStreamEvent<Document>,
    ) -> Result<(), SourceError> {
        let Some(doc) = ev
            .full_document
            .as_ref()
            .filter(|_| matches!(ev.operation_type, OperationType::Insert))
        else {
            return Ok(());
        };
        if self.backfill.mark_of(doc) != Mark::High {
            return Ok(());
        }
        let upto = token_text(&ev.id)?;
        let span = self.backfill.span();
        self.commit_chunk(sink, upto).instrument(span).await
    }

    /// Commits the open window's chunk with the batch, up to its high mark `upto`.
    async fn commit_chunk<S: BatchSink>(
        &mut self,
        sink: &S,
        upto: String,
    ) -> Result<(), SourceError> {
        match self.backfill.reached(Utc::now()) {
            Some(Reached::Chunk(chunk)) => {
                let events = std::mem::take(&mut self.batch);
                let (outcome, chunked) = sink.commit_with_backfill(&events, &upto, &chunk).await?;
                debug!(
                    read = events.len(),
                    backfilled = chunk.events.len(),
                    new_events = outcome.events,
                    deliveries = outcome.deliveries,
                    "batch committed with a backfill chunk"
                );
                self.batch_upto = None;
                self.committed = Some(upto);
                self.committed_at = Instant::now();
                self.backfill
                    .committed(&chunk, chunked.applied, chunked.completed);
                self.backfill.remove_marks(self.client).await;
            }
            Some(Reached::Failed(id, why)) => sink.fail_backfill(&id, &why).await?,
            None => {}
        }
        Ok(())
    }

    /// The stream's `fullDocument` mode for the watched collections as they are now,
    /// each collection's logged (see `images`). Without the right to list them, updates
    /// are looked up, unless post-images are required.
    async fn choose_images(&self, status: &SourceStatus) -> Result<FullDocumentType, SourceError> {
        let policy = self.src.cfg.post_images;
        let colls = match images::watched(self.client, &self.src.scope).await {
            Ok(colls) => colls,
            Err(e) if policy == PostImages::WhenAvailable => {
                warn!(error = %e, "cannot list the watched collections to see which keep post-images; every update's \"after\" is looked up when read");
                Vec::new()
            }
            Err(e) => return Err(e),
        };
        let (full, modes) = images::choose(policy, &colls);
        // One notice (kind `update_images`) in `/v1/sources` when the modes change.
        let shown: Vec<String> = modes
            .iter()
            .map(|(collection, mode)| format!("{collection}: {}", mode.as_str()))
            .collect();
        let shown = shown.join(", ");
        if let Ok(mut last) = self.src.shown_images.lock() {
            if *last != shown && !shown.is_empty() {
                status.notice("update_images", format!("an update's \"after\": {shown}"));
                *last = shown;
            }
        }
        for (collection, mode) in &modes {
            info!(%collection, after = mode.as_str(), "an update's \"after\": {}", match mode {
                images::AfterMode::PostImage => "the post-image of that change",
                images::AfterMode::Lookup => "the document when the change is read (post-images off)",
            });
        }
        Ok(full)
    }

    /// An update's document as it is now, for a collection whose change carries no
    /// post-image while the stream asks for them where available (see `images`):
    /// what `updateLookup` would have given. `None` once it is deleted.
    async fn look_up(
        &self,
        ev: &ChangeStreamEvent<Document>,
    ) -> Result<Option<Document>, SourceError> {
        let (Some(ns), Some(key)) = (&ev.ns, &ev.document_key) else {
            return Ok(None);
        };
        let Some(coll) = &ns.coll else {
            return Ok(None);
        };
        let found = self
            .client
            .database(&ns.db)
            .collection::<Document>(coll)
            .find_one(key.clone())
            .await?;
        Ok(found)
    }

    /// Adds an insert/update/replace/delete to the batch; logs what is not an event.
    /// Returns the token to reopen after when the stream was invalidated.
    async fn handle<S: BatchSink>(
        &mut self,
        sink: &S,
        status: &SourceStatus,
        mut ev: ChangeStreamEvent<Document>,
    ) -> Result<Option<ResumeToken>, SourceError> {
        let ns = ev
            .ns
            .as_ref()
            .map(|n| format!("{}.{}", n.db, n.coll.as_deref().unwrap_or("*")));
        // The backfill's watermarks are never events, whatever `collections` says.
        let is_mark = ev.ns.as_ref().is_some_and(|n| {
            n.coll.as_deref() == Some(WATERMARKS) && self.src.scope.watches_db(&n.db)
        });
        if is_mark {
            self.watermark(sink, &ev).await?;
            return Ok(None);
        }
        match &ev.operation_type {
            OperationType::Insert
            | OperationType::Update
            | OperationType::Replace
            | OperationType::Delete => {
                let watched = ev.ns.as_ref().is_some_and(|n| {
                    self.src
                        .scope
                        .watches(&n.db, n.coll.as_deref().unwrap_or_default())
                });
                if !watched {
                    return Ok(None);
                }
                if let (Some(ns), Some(id)) =
                    (&ev.ns, ev.document_key.as_ref().and_then(|k| k.get("_id")))
                {
                    self.backfill
                        .note_change(&ns.db, ns.coll.as_deref().unwrap_or_default(), id);
                }
                if matches!(ev.operation_type, OperationType::Update)
                    && ev.full_document.is_none()
                    && matches!(self.full, FullDocumentType::WhenAvailable)
                {
                    ev.full_document = self.look_up(&ev).await?;
                }
                if let Some(ns) = &ev.ns {
                    let paths = self
                        .src
                        .scope
                        .excluded_paths(&ns.db, ns.coll.as_deref().unwrap_or_default());
                    change::strip_fields(&mut ev, &paths);
                }
                match change::build(&self.src.cfg.name, &ev, &mut self.txns, Utc::now()) {
                    Ok(Some(event)) => {
                        self.batch.push(event);
                        self.batch_upto = Some(token_text(&ev.id)?);
                    }
                    Ok(None) => {}
                    // One change that cannot become an event is set aside, not
                    // retried forever in front of every change behind it.
                    Err(SourceError::BadChange { position, reason }) => {
                        error!(%position, %reason, "a change cannot become an event; set aside in hookrelay.rejected_changes");
                        sink.reject(&RejectedChange {
                            source: self.src.cfg.name.clone(),
                            position: position.clone(),
                            reason,
                            raw: format!("{ev:?}"),
                        })
                        .await?;
                        self.batch_upto = Some(position);
                    }
                    Err(e) => return Err(e),
                }
                Ok(None)
            }
            OperationType::Drop | OperationType::Rename | OperationType::DropDatabase => {
                let db_watched = ev
                    .ns
                    .as_ref()
                    .is_some_and(|n| self.src.scope.watches_db(&n.db));
                if db_watched {
                    let to = ev
                        .to
                        .as_ref()
                        .map(|t| format!(" to {}.{}", t.db, t.coll.as_deref().unwrap_or("")))
                        .unwrap_or_default();
                    let what = format!("{:?} of {}{to}", ev.operation_type, ns.unwrap_or_default())
                        .to_lowercase();
                    warn!(event = %what, "watched namespace changed; not an event");
                    let kind = match ev.operation_type {
                        OperationType::Rename => "renamed",
                        _ => "dropped",
                    };
                    status.notice(kind, what);
                }
                Ok(None)
            }
            OperationType::Invalidate => {
                warn!("change stream invalidated (watched collection or database dropped or renamed); reopening after it");
                status.notice(
                    "invalidated",
                    "change stream invalidated; reopened after it".into(),
                );
                Ok(Some(ev.id))
            }
            other => {
                debug!(op = ?other, "change stream event ignored");
                Ok(None)
            }
        }
    }

    /// Commits the batch and its checkpoint in one store transaction.
    async fn flush<S: BatchSink>(&mut self, sink: &S) -> Result<(), SourceError> {
        let Some(upto) = self.batch_upto.take() else {
            return Ok(());
        };
        let events = std::mem::take(&mut self.batch);
        let outcome = sink.commit(&events, &upto).await?;
        debug!(
            read = events.len(),
            new_events = outcome.events,
            deliveries = outcome.deliveries,
            "batch committed"
        );
        self.committed = Some(upto);
        self.committed_at = Instant::now();
        Ok(())
    }

    /// Moves the checkpoint without events.
    async fn checkpoint<S: BatchSink>(
        &mut self,
        sink: &S,
        token: String,
    ) -> Result<(), SourceError> {
        sink.commit(&[], &token).await?;
        self.committed = Some(token);
        self.committed_at = Instant::now();
        Ok(())
    }
}

/// Polls `fut` once: its output if ready now, else `None` (it stays pending).
async fn poll_once<F: Future + Unpin>(fut: &mut F) -> Option<F::Output> {
    std::future::poll_fn(|cx| match std::pin::Pin::new(&mut *fut).poll(cx) {
        Poll::Ready(v) => Poll::Ready(Some(v)),
        Poll::Pending => Poll::Ready(None),
    })
    .await
}

/// `fut`'s output, or `None` once `stop` fires.
/// How long a connection to the server may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an operation waits for a usable server.
const SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// How long past its await time a change stream read may take.
const GETMORE_GRACE: Duration = Duration::from_secs(10);

async fn cancellable<F: Future>(fut: F, stop: &CancellationToken) -> Option<F::Output> {
    tokio::select! {
        r = fut => Some(r),
        _ = stop.cancelled() => None,
    }
}
