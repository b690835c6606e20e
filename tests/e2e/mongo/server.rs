//! A small MongoDB wire-protocol server for tests: no MongoDB server can be installed
//! here, so the real `mongodb` driver and hookrelay's reader talk OP_MSG over TCP to
//! this one instead.
//!
//! It answers `hello` as the primary of a one-node replica set (or as a standalone),
//! holds documents written through `insert`/`update`/`delete` (and transactions
//! committed with `commitTransaction`), and turns each write into a change event in
//! an in-memory oplog. `aggregate` with `$changeStream` opens a cursor honouring
//! `startAfter`/`resumeAfter`, `fullDocument`, `fullDocumentBeforeChange` (for
//! collections with pre-images on) and a `$match` of `$or`/`$in`/equality; `getMore`
//! returns what is new with a `postBatchResumeToken`, or an empty batch after
//! `maxTimeMS`. What a one-node fake cannot produce by itself is scripted from
//! MongoDB's documentation: a resume token older than the oplog fails with
//! ChangeStreamHistoryLost (286) after [`MongoServer::truncate_history`]; a dropped
//! collection gives `drop` then `invalidate` on a collection stream. Every
//! `$changeStream` stage the driver sent is recorded, so tests can see where a
//! restarted reader resumed.
//!
//! `fullDocument` behaves as MongoDB documents it: `updateLookup` gives an update the
//! document as it is when the batch is read (so rapid updates can all show the last
//! one's state), `whenAvailable` and `required` give the post-image of that change
//! where the collection has `changeStreamPreAndPostImages` on (set by `create`,
//! `collMod` or [`MongoServer::enable_pre_images`]); without it `whenAvailable` gives
//! none and `required` fails the cursor.
//!
//! `find` behaves as MongoDB documents it for what the reader asks: a filter of
//! equality, `$gt`/`$gte`/`$lt`/`$lte` (with type bracketing: a comparison matches
//! only values of the operand's type bracket), `$type` and `$or`; `sort` on one field
//! in BSON comparison order across types; `limit`; a first batch of 101 documents
//! (or `batchSize`) and the rest by `getMore`; `hint` only `{_id: 1}` (the one
//! index here). `update` knows `$set`, `$unset` and `$inc`; `delete` with `limit: 0`
//! removes every match. [`MongoServer::refuse_writes`] makes writes to one
//! collection fail as an unprivileged user's do (Unauthorized, 13).

use std::{
    cmp::Ordering,
    collections::{HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use mongodb::bson::{doc, oid::ObjectId, Bson, DateTime, Document, Timestamp};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Notify,
};

const OP_MSG: i32 = 2013;

/// One oplog entry: a write, with the images a change stream may show.
#[derive(Clone)]
struct Entry {
    seq: u64,
    db: String,
    coll: String,
    op: &'static str,
    key: Bson,
    before: Option<Document>,
    after: Option<Document>,
    update: Option<Document>,
    txn: Option<(Bson, i64)>,
    time: Timestamp,
}

/// A write inside an open transaction: (db, collection, op, statement).
type BufferedWrite = (String, String, &'static str, Document);

struct Cursor {
    db: String,
    /// `None`: every collection (database or cluster stream).
    coll: Option<String>,
    cluster: bool,
    next_seq: u64,
    filter: Document,
    full_document: String,
    before_change: String,
    ns: String,
}

#[derive(Default)]
struct State {
    docs: HashMap<(String, String), Vec<Document>>,
    pre_images: HashSet<(String, String)>,
    oplog: Vec<Entry>,
    /// Entries before this seq were rolled off the oplog.
    first_seq: u64,
    next_seq: u64,
    cursors: HashMap<i64, Cursor>,
    next_cursor: i64,
    recorded: Vec<Document>,
    fail_aggregates: Vec<i32>,
    /// Transactions in progress: (lsid, txnNumber) → buffered writes.
    open_txns: HashMap<(String, i64), Vec<BufferedWrite>>,
    /// Open `find` cursors: id → (namespace, documents left, batchSize).
    finds: HashMap<i64, (String, VecDeque<Document>, Option<usize>)>,
    /// Collections (db, coll) whose writes fail with Unauthorized.
    refused: HashSet<(String, String)>,
    /// Writes to apply right after the next `find` on (db, coll) has read its
    /// documents: (op, statement) as `update`/`delete` take them.
    after_find: HashMap<(String, String), Vec<(&'static str, Document)>>,
}

/// The test server; stops when dropped.
pub struct MongoServer {
    pub addr: String,
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MongoServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MongoServer {
    /// A one-node replica set `rs0`.
    pub async fn start() -> Self {
        Self::spawn(true).await
    }

    /// A standalone server (no change streams).
    pub async fn standalone() -> Self {
        Self::spawn(false).await
    }

    async fn spawn(replica_set: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let state = Arc::new(Mutex::new(State {
            first_seq: 1,
            next_seq: 1,
            next_cursor: 1000,
            ..Default::default()
        }));
        let changed = Arc::new(Notify::new());
        let server = Server {
            addr: addr.clone(),
            replica_set,
            state: state.clone(),
            changed: changed.clone(),
        };
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let server = server.clone();
                tokio::spawn(async move { server.serve(sock).await });
            }
        });
        Self {
            addr,
            state,
            changed,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!(
            "mongodb://{}/?replicaSet=rs0&serverSelectionTimeoutMS=5000",
            self.addr
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("server state")
    }

    /// `changeStreamPreAndPostImages: {enabled: true}` on a collection.
    /// The collection exists from then on, as one created with the option does.
    pub fn enable_pre_images(&self, db: &str, coll: &str) {
        let mut st = self.lock();
        st.docs.entry((db.into(), coll.into())).or_default();
        st.pre_images.insert((db.into(), coll.into()));
    }

    /// Forgets every change so far, as an oplog that rolled over does.
    pub fn truncate_history(&self) {
        let mut st = self.lock();
        st.first_seq = st.next_seq;
        st.oplog.clear();
    }

    /// The next `n` `$changeStream` aggregates fail with server error `code`.
    pub fn fail_next_aggregates(&self, code: i32, n: usize) {
        self.lock()
            .fail_aggregates
            .extend(std::iter::repeat_n(code, n));
    }

    /// Drops a collection: a `drop` event (and `invalidate` on collection streams).
    pub fn drop_collection(&self, db: &str, coll: &str) {
        let mut st = self.lock();
        st.docs.remove(&(db.to_owned(), coll.to_owned()));
        append(
            &mut st,
            db,
            coll,
            "drop",
            Bson::Null,
            None,
            None,
            None,
            None,
        );
        drop(st);
        self.changed.notify_waiters();
    }

    /// Writes to `db.coll` fail from now on with Unauthorized (13), as those of a
    /// user without the insert action on it do.
    pub fn refuse_writes(&self, db: &str, coll: &str) {
        self.lock().refused.insert((db.into(), coll.into()));
    }

    /// Right after the next `find` on `db.coll` has read its documents, and before
    /// it answers, applies `writes` (`("update", {q, u})`, `("delete", {q})`): a
    /// writer that commits between a backfill's read and its high watermark.
    pub fn after_next_find(&self, db: &str, coll: &str, writes: Vec<(&'static str, Document)>) {
        self.lock()
            .after_find
            .insert((db.into(), coll.into()), writes);
    }

    /// Every `$changeStream` stage received, in order.
    pub fn change_stream_stages(&self) -> Vec<Document> {
        self.lock().recorded.clone()
    }

    /// The resume token of change number `seq` (from 1).
    pub fn token_of(seq: u64) -> Document {
        doc! { "_data": token_data(seq, false) }
    }

    /// The same token as relaxed Extended JSON, the way events carry it.
    pub fn token_of_json(seq: u64) -> String {
        format!(r#"{{"_data":"{}"}}"#, token_data(seq, false))
    }
}

fn token_data(seq: u64, invalidate: bool) -> String {
    format!("82{seq:016X}{}", if invalidate { "01" } else { "00" })
}

/// (seq, whether it is an invalidate's token)
fn parse_token(token: &Document) -> Option<(u64, bool)> {
    let data = token.get_str("_data").ok()?;
    let hex = data.strip_prefix("82")?;
    let seq = u64::from_str_radix(hex.get(..16)?, 16).ok()?;
    Some((seq, hex.get(16..) == Some("01")))
}

#[allow(clippy::too_many_arguments)]
fn append(
    st: &mut State,
    db: &str,
    coll: &str,
    op: &'static str,
    key: Bson,
    before: Option<Document>,
    after: Option<Document>,
    update: Option<Document>,
    txn: Option<(Bson, i64)>,
) {
    let seq = st.next_seq;
    st.next_seq += 1;
    let secs = (chrono::Utc::now().timestamp()) as u32;
    let time = match (&txn, st.oplog.last()) {
        // One transaction commits at one cluster time.
        (Some(t), Some(last)) if last.txn.as_ref() == Some(t) => last.time,
        _ => Timestamp {
            time: secs,
            increment: seq as u32,
        },
    };
    st.oplog.push(Entry {
        seq,
        db: db.into(),
        coll: coll.into(),
        op,
        key,
        before,
        after,
        update,
        txn,
        time,
    });
}

#[derive(Clone)]
struct Server {
    addr: String,
    replica_set: bool,
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
}

impl Server {
    async fn serve(&self, mut sock: TcpStream) {
        loop {
            let mut header = [0u8; 16];
            if sock.read_exact(&mut header).await.is_err() {
                return;
            }
            let field =
                |i: usize| i32::from_le_bytes(header[i..i + 4].try_into().expect("4 bytes"));
            let (len, request_id, op) = (field(0), field(4), field(12));
            let mut body = vec![0u8; (len as usize).saturating_sub(16)];
            if sock.read_exact(&mut body).await.is_err() || op != OP_MSG {
                return;
            }
            let Some(cmd) = parse_op_msg(&body) else {
                return;
            };
            let reply = self.command(cmd).await;
            let mut payload = Vec::new();
            reply.to_writer(&mut payload).expect("encode reply");
            let mut out = Vec::with_capacity(payload.len() + 21);
            out.extend_from_slice(&((payload.len() + 21) as i32).to_le_bytes());
            out.extend_from_slice(&0i32.to_le_bytes());
            out.extend_from_slice(&request_id.to_le_bytes());
            out.extend_from_slice(&OP_MSG.to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes());
            out.push(0);
            out.extend_from_slice(&payload);
            if sock.write_all(&out).await.is_err() {
                return;
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("server state")
    }

    async fn command(&self, cmd: Document) -> Document {
        let name = cmd.keys().next().cloned().unwrap_or_default();
        let db = cmd.get_str("$db").unwrap_or("admin").to_owned();
        match name.as_str() {
            "hello" | "isMaster" | "ismaster" => self.hello(),
            "ping" | "endSessions" | "abortTransaction" => doc! { "ok": 1 },
            "buildInfo" | "buildinfo" => {
                doc! { "version": "7.0.0", "versionArray": [7, 0, 0, 0], "ok": 1 }
            }
            "connectionStatus" => doc! {
                "authInfo": { "authenticatedUsers": [], "authenticatedUserRoles": [], "authenticatedUserPrivileges": [] },
                "ok": 1,
            },
            "listCollections" => self.list_collections(&db),
            "create" | "collMod" => {
                let coll = cmd.get_str(&name).unwrap_or_default().to_owned();
                let on = cmd
                    .get_document("changeStreamPreAndPostImages")
                    .and_then(|o| o.get_bool("enabled"))
                    .ok();
                let mut st = self.lock();
                let key = (db.clone(), coll);
                st.docs.entry(key.clone()).or_default();
                match on {
                    Some(true) => {
                        st.pre_images.insert(key);
                    }
                    Some(false) => {
                        st.pre_images.remove(&key);
                    }
                    None => {}
                }
                doc! { "ok": 1 }
            }
            "find" => self.find(&db, &cmd),
            "killCursors" => {
                let ids = cmd.get_array("cursors").cloned().unwrap_or_default();
                let mut st = self.lock();
                for id in &ids {
                    if let Some(id) = id.as_i64() {
                        st.cursors.remove(&id);
                        st.finds.remove(&id);
                    }
                }
                doc! { "cursorsKilled": ids, "ok": 1 }
            }
            "insert" | "update" | "delete" => self.write(&name, &db, &cmd),
            "commitTransaction" => self.commit_transaction(&cmd),
            "aggregate" => self.aggregate(&db, &cmd),
            "getMore" => self.get_more(&cmd).await,
            other => error(
                59,
                "CommandNotFound",
                &format!("no such command: '{other}'"),
            ),
        }
    }

    fn hello(&self) -> Document {
        let mut reply = doc! {
            "helloOk": true,
            "isWritablePrimary": true,
            "ismaster": true,
            "maxBsonObjectSize": 16_777_216,
            "maxMessageSizeBytes": 48_000_000,
            "maxWriteBatchSize": 100_000,
            "localTime": DateTime::now(),
            "logicalSessionTimeoutMinutes": 30,
            "connectionId": 1,
            "minWireVersion": 0,
            "maxWireVersion": 21,
            "readOnly": false,
            "ok": 1,
        };
        if self.replica_set {
            reply.insert("setName", "rs0");
            reply.insert("setVersion", 1);
            reply.insert(
                "electionId",
                ObjectId::parse_str("7fffffff0000000000000001").expect("oid"),
            );
            reply.insert("hosts", vec![self.addr.clone()]);
            reply.insert("primary", self.addr.clone());
            reply.insert("me", self.addr.clone());
        }
        reply
    }

    fn list_collections(&self, db: &str) -> Document {
        let st = self.lock();
        let batch: Vec<Document> = st
            .docs
            .keys()
            .filter(|(d, _)| d == db)
            .map(|(_, c)| {
                let on = st.pre_images.contains(&(db.to_owned(), c.clone()));
                doc! { "name": c, "type": "collection", "options": { "changeStreamPreAndPostImages": { "enabled": on } } }
            })
            .collect();
        doc! { "cursor": { "id": 0_i64, "ns": format!("{db}.$cmd.listCollections"), "firstBatch": batch }, "ok": 1 }
    }

    /// `find`: filter, sort, limit, first batch (see the module doc).
    fn find(&self, db: &str, cmd: &Document) -> Document {
        let coll = cmd.get_str("find").unwrap_or_default().to_owned();
        let ns = format!("{db}.{coll}");
        if let Ok(hint) = cmd.get_document("hint") {
            if *hint != doc! { "_id": 1 } {
                return error(
                    2,
                    "BadValue",
                    "hint provided does not correspond to an existing index",
                );
            }
        }
        let filter = cmd.get_document("filter").cloned().unwrap_or_default();
        let mut st = self.lock();
        let mut found: Vec<Document> = st
            .docs
            .get(&(db.to_owned(), coll.clone()))
            .map(|docs| {
                docs.iter()
                    .filter(|d| matches(d, &filter))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        if let Some((field, dir)) = cmd.get_document("sort").ok().and_then(|s| s.iter().next()) {
            let desc = dir.as_i32() == Some(-1) || dir.as_i64() == Some(-1);
            let missing = Bson::Null;
            found.sort_by(|a, b| {
                let o = compare(
                    lookup(a, field).unwrap_or(&missing),
                    lookup(b, field).unwrap_or(&missing),
                );
                if desc {
                    o.reverse()
                } else {
                    o
                }
            });
        }
        if let Some(limit) = cmd.get_i64("limit").ok().filter(|l| *l > 0) {
            found.truncate(limit as usize);
        }
        if let Some(writes) = st.after_find.remove(&(db.to_owned(), coll.clone())) {
            for (op, item) in writes {
                apply(&mut st, db, &coll, op, item, None);
            }
            self.changed.notify_waiters();
        }
        let batch_size = cmd
            .get_i64("batchSize")
            .ok()
            .or(cmd.get_i32("batchSize").ok().map(i64::from));
        let first = batch_size.map_or(101, |b| b as usize);
        let mut rest: VecDeque<Document> = found.into();
        let batch: Vec<Document> = rest.drain(..first.min(rest.len())).collect();
        let id = if rest.is_empty() {
            0
        } else {
            let id = st.next_cursor;
            st.next_cursor += 1;
            st.finds
                .insert(id, (ns.clone(), rest, batch_size.map(|b| b as usize)));
            id
        };
        doc! { "cursor": { "id": id, "ns": ns, "firstBatch": batch }, "ok": 1 }
    }

    /// `getMore` on a `find` cursor: the next `batchSize` documents, or all the rest.
    fn find_more(&self, id: i64, cmd: &Document) -> Option<Document> {
        let mut st = self.lock();
        let (ns, rest, size) = st.finds.get_mut(&id)?;
        let n = cmd
            .get_i64("batchSize")
            .ok()
            .or(cmd.get_i32("batchSize").ok().map(i64::from))
            .map(|b| b as usize)
            .or(*size)
            .unwrap_or(usize::MAX);
        let batch: Vec<Document> = rest.drain(..n.min(rest.len())).collect();
        let ns = ns.clone();
        let open = !rest.is_empty();
        if !open {
            st.finds.remove(&id);
        }
        Some(doc! {
            "cursor": { "id": if open { id } else { 0 }, "ns": ns, "nextBatch": batch },
            "ok": 1,
        })
    }

    fn write(&self, name: &str, db: &str, cmd: &Document) -> Document {
        let coll = cmd.get_str(name).unwrap_or_default().to_owned();
        if self.lock().refused.contains(&(db.to_owned(), coll.clone())) {
            return error(
                13,
                "Unauthorized",
                &format!("not authorized on {db} to execute command {{ {name}: \"{coll}\" }}"),
            );
        }
        let field = match name {
            "insert" => "documents",
            "update" => "updates",
            _ => "deletes",
        };
        let items: Vec<Document> = cmd
            .get_array(field)
            .map(|a| a.iter().filter_map(|b| b.as_document().cloned()).collect())
            .unwrap_or_default();
        let op: &'static str = match name {
            "insert" => "insert",
            "update" => "update",
            _ => "delete",
        };
        let n = items.len() as i32;
        if cmd.get_bool("autocommit") == Ok(false) {
            let key = (lsid_key(cmd), cmd.get_i64("txnNumber").unwrap_or_default());
            let mut st = self.lock();
            let buf = st.open_txns.entry(key).or_default();
            buf.extend(
                items
                    .into_iter()
                    .map(|i| (db.to_owned(), coll.clone(), op, i)),
            );
            return doc! { "n": n, "nModified": n, "ok": 1 };
        }
        let mut st = self.lock();
        let mut done = 0;
        for item in items {
            // `limit: 0`: every document that matches
            let every = op == "delete" && item.get_i32("limit") == Ok(0);
            loop {
                let n = apply(&mut st, db, &coll, op, item.clone(), None);
                done += n;
                if !every || n == 0 {
                    break;
                }
            }
        }
        drop(st);
        self.changed.notify_waiters();
        doc! { "n": done, "nModified": done, "ok": 1 }
    }

    fn commit_transaction(&self, cmd: &Document) -> Document {
        let number = cmd.get_i64("txnNumber").unwrap_or_default();
        let key = (lsid_key(cmd), number);
        let lsid = cmd
            .get_document("lsid")
            .ok()
            .and_then(|l| l.get("id").cloned())
            .unwrap_or(Bson::Null);
        let mut st = self.lock();
        let writes = st.open_txns.remove(&key).unwrap_or_default();
        for (db, coll, op, item) in writes {
            apply(&mut st, &db, &coll, op, item, Some((lsid.clone(), number)));
        }
        drop(st);
        self.changed.notify_waiters();
        doc! { "ok": 1 }
    }

    fn aggregate(&self, db: &str, cmd: &Document) -> Document {
        let pipeline = cmd.get_array("pipeline").cloned().unwrap_or_default();
        let Some(stage) = pipeline
            .first()
            .and_then(Bson::as_document)
            .and_then(|s| s.get_document("$changeStream").ok())
            .cloned()
        else {
            return error(40324, "Location40324", "only $changeStream aggregates here");
        };
        let mut st = self.lock();
        st.recorded.push(stage.clone());
        if !self.replica_set {
            return error(
                40573,
                "Location40573",
                "The $changeStream stage is only supported on replica sets",
            );
        }
        if !st.fail_aggregates.is_empty() {
            let code = st.fail_aggregates.remove(0);
            return error(code, "Scripted", "scripted failure");
        }
        let token = stage
            .get_document("startAfter")
            .or_else(|_| stage.get_document("resumeAfter"))
            .ok();
        let next_seq = match token {
            None => st.next_seq,
            Some(t) => match parse_token(t) {
                None => return error(260, "InvalidResumeToken", "cannot parse the resume token"),
                Some((_, true)) if stage.contains_key("resumeAfter") => {
                    return error(
                        260,
                        "InvalidResumeToken",
                        "cannot resume after an invalidate; use startAfter",
                    )
                }
                Some((seq, _)) if seq + 1 < st.first_seq => {
                    return doc! {
                        "ok": 0, "code": 286, "codeName": "ChangeStreamHistoryLost",
                        "errmsg": "Resume of change stream was not possible, as the resume point may no longer be in the oplog.",
                        "errorLabels": ["NonResumableChangeStreamError"],
                    };
                }
                Some((seq, _)) => seq + 1,
            },
        };
        let cluster = stage.get_bool("allChangesForCluster") == Ok(true);
        let coll = cmd.get_str("aggregate").ok().map(str::to_owned);
        let filter = pipeline
            .iter()
            .filter_map(Bson::as_document)
            .filter_map(|s| s.get_document("$match").ok())
            .next()
            .cloned()
            .unwrap_or_default();
        let ns = match &coll {
            Some(c) => format!("{db}.{c}"),
            None => format!("{db}.$cmd.aggregate"),
        };
        let id = st.next_cursor;
        st.next_cursor += 1;
        st.cursors.insert(
            id,
            Cursor {
                db: db.to_owned(),
                coll,
                cluster,
                next_seq,
                filter,
                full_document: stage
                    .get_str("fullDocument")
                    .unwrap_or("default")
                    .to_owned(),
                before_change: stage
                    .get_str("fullDocumentBeforeChange")
                    .unwrap_or("off")
                    .to_owned(),
                ns: ns.clone(),
            },
        );
        let (batch, token, open) = match take_batch(&mut st, id) {
            Ok(b) => b,
            Err(e) => return e,
        };
        doc! {
            "cursor": { "id": if open { id } else { 0 }, "ns": ns, "firstBatch": batch, "postBatchResumeToken": token },
            "ok": 1,
        }
    }

    async fn get_more(&self, cmd: &Document) -> Document {
        let id = cmd.get_i64("getMore").unwrap_or_default();
        if let Some(reply) = self.find_more(id, cmd) {
            return reply;
        }
        let wait = Duration::from_millis(cmd.get_i64("maxTimeMS").map_or(1000, |m| m as u64));
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.changed.notified();
            {
                let mut st = self.lock();
                let Some(ns) = st.cursors.get(&id).map(|c| c.ns.clone()) else {
                    return error(43, "CursorNotFound", &format!("cursor id {id} not found"));
                };
                let (batch, token, open) = match take_batch(&mut st, id) {
                    Ok(b) => b,
                    Err(e) => return e,
                };
                if !batch.is_empty() || tokio::time::Instant::now() >= deadline {
                    if !open {
                        st.cursors.remove(&id);
                    }
                    return doc! {
                        "cursor": { "id": if open { id } else { 0 }, "ns": ns, "nextBatch": batch, "postBatchResumeToken": token },
                        "ok": 1,
                    };
                }
            }
            let _ = tokio::time::timeout_at(deadline, notified).await;
        }
    }
}

fn lsid_key(cmd: &Document) -> String {
    cmd.get_document("lsid")
        .map(|l| format!("{l}"))
        .unwrap_or_default()
}

/// Applies one write to the documents and the oplog; how many documents it touched.
fn apply(
    st: &mut State,
    db: &str,
    coll: &str,
    op: &'static str,
    item: Document,
    txn: Option<(Bson, i64)>,
) -> i32 {
    let key = (db.to_owned(), coll.to_owned());
    let docs = st.docs.entry(key).or_default();
    match op {
        "insert" => {
            let mut d = item;
            if !d.contains_key("_id") {
                let mut with_id = doc! { "_id": ObjectId::new() };
                with_id.extend(d);
                d = with_id;
            }
            let id = d.get("_id").cloned().unwrap_or(Bson::Null);
            docs.push(d.clone());
            append(st, db, coll, "insert", id, None, Some(d), None, txn);
            1
        }
        "update" => {
            let q = item.get_document("q").cloned().unwrap_or_default();
            let u = item.get_document("u").cloned().unwrap_or_default();
            let Some(i) = docs.iter().position(|d| matches(d, &q)) else {
                return 0;
            };
            let before = docs[i].clone();
            let id = before.get("_id").cloned().unwrap_or(Bson::Null);
            let operators = u.keys().any(|k| k.starts_with('$'));
            let after = if operators {
                let mut d = before.clone();
                for (k, v) in u.get_document("$set").cloned().unwrap_or_default() {
                    d.insert(k, v);
                }
                for (k, _) in u.get_document("$unset").cloned().unwrap_or_default() {
                    d.remove(&k);
                }
                for (k, by) in u.get_document("$inc").cloned().unwrap_or_default() {
                    let sum = match (d.get(&k), &by) {
                        (Some(Bson::Int64(a)), b) => {
                            Bson::Int64(a + b.as_i64().or(b.as_i32().map(i64::from)).unwrap_or(0))
                        }
                        (Some(Bson::Int32(a)), Bson::Int32(b)) => Bson::Int32(a + b),
                        (Some(Bson::Int32(a)), b) => {
                            Bson::Int64(i64::from(*a) + b.as_i64().unwrap_or(0))
                        }
                        (None, b) => b.clone(),
                        (Some(other), _) => other.clone(),
                    };
                    d.insert(k, sum);
                }
                d
            } else {
                let mut d = doc! { "_id": id.clone() };
                d.extend(u.clone());
                d
            };
            docs[i] = after.clone();
            let (op, update) = if operators {
                (
                    "update",
                    Some(
                        doc! { "updatedFields": u.get_document("$set").cloned().unwrap_or_default(), "removedFields": [] },
                    ),
                )
            } else {
                ("replace", None)
            };
            append(st, db, coll, op, id, Some(before), Some(after), update, txn);
            1
        }
        _ => {
            let q = item.get_document("q").cloned().unwrap_or_default();
            let Some(i) = docs.iter().position(|d| matches(d, &q)) else {
                return 0;
            };
            let before = docs.remove(i);
            let id = before.get("_id").cloned().unwrap_or(Bson::Null);
            append(st, db, coll, "delete", id, Some(before), None, None, txn);
            1
        }
    }
}

/// The next batch for cursor `id`: change events, the post-batch resume token, and
/// whether the cursor stays open (an invalidate closes it); or the error that fails
/// the cursor (`fullDocument: "required"` and a change without a post-image).
fn take_batch(st: &mut State, id: i64) -> Result<(Vec<Document>, Document, bool), Document> {
    let pre_images = st.pre_images.clone();
    let head = st.next_seq - 1;
    let Some(cur) = st.cursors.get_mut(&id) else {
        return Ok((Vec::new(), MongoServer::token_of(head), false));
    };
    let mut batch = Vec::new();
    let mut token = MongoServer::token_of(head);
    let mut open = true;
    let from = cur.next_seq;
    // The oplog holds seqs first_seq, first_seq + 1, … in order: start at `from`
    // rather than scan tens of thousands of entries on every getMore.
    let skip = usize::try_from(from.saturating_sub(st.first_seq)).unwrap_or(usize::MAX);
    for e in st.oplog.iter().skip(skip) {
        cur.next_seq = e.seq + 1;
        let in_scope =
            cur.cluster || (e.db == cur.db && cur.coll.as_ref().is_none_or(|c| *c == e.coll));
        if !in_scope {
            continue;
        }
        let mut ev = doc! {
            "_id": MongoServer::token_of(e.seq),
            "operationType": e.op,
            "clusterTime": e.time,
            "wallTime": DateTime::from_millis(i64::from(e.time.time) * 1000 + 123),
            "ns": { "db": &e.db, "coll": &e.coll },
        };
        if e.op != "drop" {
            ev.insert("documentKey", doc! { "_id": e.key.clone() });
        }
        if let Some(u) = &e.update {
            ev.insert("updateDescription", u.clone());
        }
        let images = pre_images.contains(&(e.db.clone(), e.coll.clone()));
        let full = match (e.op, cur.full_document.as_str()) {
            ("insert" | "replace", _) => e.after.clone().map(Bson::Document),
            // The document now, not at the change; null once it is gone.
            ("update", "updateLookup") => Some(
                st.docs
                    .get(&(e.db.clone(), e.coll.clone()))
                    .and_then(|docs| docs.iter().find(|d| d.get("_id") == Some(&e.key)))
                    .cloned()
                    .map_or(Bson::Null, Bson::Document),
            ),
            ("update", "whenAvailable" | "required") if images => {
                e.after.clone().map(Bson::Document)
            }
            ("update", "required") => {
                return Err(error(
                    280,
                    "ChangeStreamFatalError",
                    "Change stream was configured to require a post-image for all update, delete and replace events, but no post-image was available",
                ))
            }
            _ => None,
        };
        if let Some(full) = full {
            ev.insert("fullDocument", full);
        }
        let wants_before = matches!(cur.before_change.as_str(), "whenAvailable" | "required");
        if wants_before
            && e.before.is_some()
            && pre_images.contains(&(e.db.clone(), e.coll.clone()))
        {
            ev.insert("fullDocumentBeforeChange", e.before.clone());
        }
        if let Some((lsid, n)) = &e.txn {
            ev.insert("lsid", doc! { "id": lsid.clone() });
            ev.insert("txnNumber", *n);
        }
        if !matches(&ev, &cur.filter) {
            continue;
        }
        token = MongoServer::token_of(e.seq);
        batch.push(ev);
        if e.op == "drop" && cur.coll.is_some() {
            let data = token_data(e.seq, true);
            batch.push(doc! { "_id": { "_data": &data }, "operationType": "invalidate", "clusterTime": e.time });
            token = doc! { "_data": data };
            open = false;
            break;
        }
    }
    Ok((batch, token, open))
}

/// A `$match` filter: `$or`, `$and`, `$in`, `$eq` and equality on dotted paths.
fn matches(doc: &Document, filter: &Document) -> bool {
    filter.iter().all(|(k, cond)| match k.as_str() {
        "$or" => cond.as_array().is_some_and(|a| {
            a.iter()
                .filter_map(Bson::as_document)
                .any(|f| matches(doc, f))
        }),
        "$and" => cond.as_array().is_some_and(|a| {
            a.iter()
                .filter_map(Bson::as_document)
                .all(|f| matches(doc, f))
        }),
        path => {
            let value = lookup(doc, path);
            match cond.as_document() {
                Some(c) if c.keys().next().is_some_and(|k| k.starts_with('$')) => {
                    c.iter().all(|(op, operand)| operator(value, op, operand))
                }
                _ => value == Some(cond),
            }
        }
    })
}

/// One query operator on a field's value (`None`: the field is missing).
fn operator(value: Option<&Bson>, op: &str, operand: &Bson) -> bool {
    let compared = |want: &[Ordering]| {
        value.is_some_and(|v| {
            // type bracketing: only values of the operand's bracket compare; NaN only
            // equals NaN
            let nan = |b: &Bson| matches!(b, Bson::Double(f) if f.is_nan());
            if nan(operand) || nan(v) {
                return nan(operand) && nan(v) && want.contains(&Ordering::Equal);
            }
            bracket(v) == bracket(operand) && want.contains(&compare(v, operand))
        })
    };
    match op {
        "$in" => operand
            .as_array()
            .is_some_and(|a| value.is_some_and(|v| a.contains(v))),
        "$eq" => value == Some(operand),
        "$gt" => compared(&[Ordering::Greater]),
        "$gte" => compared(&[Ordering::Greater, Ordering::Equal]),
        "$lt" => compared(&[Ordering::Less]),
        "$lte" => compared(&[Ordering::Less, Ordering::Equal]),
        "$type" => {
            let names: Vec<&str> = match operand {
                Bson::Array(a) => a.iter().filter_map(Bson::as_str).collect(),
                Bson::String(s) => vec![s.as_str()],
                _ => Vec::new(),
            };
            value.is_some_and(|v| names.contains(&type_alias(v)))
        }
        _ => false,
    }
}

/// MongoDB's comparison/sort order of BSON type brackets (its documented list).
fn bracket(v: &Bson) -> u8 {
    match v {
        Bson::MinKey => 0,
        Bson::Undefined => 1,
        Bson::Null => 2,
        Bson::Double(_) | Bson::Int32(_) | Bson::Int64(_) | Bson::Decimal128(_) => 3,
        Bson::String(_) | Bson::Symbol(_) => 4,
        Bson::Document(_) => 5,
        Bson::Array(_) => 6,
        Bson::Binary(_) => 7,
        Bson::ObjectId(_) => 8,
        Bson::Boolean(_) => 9,
        Bson::DateTime(_) => 10,
        Bson::Timestamp(_) => 11,
        Bson::RegularExpression(_) => 12,
        Bson::DbPointer(_) => 13,
        Bson::JavaScriptCode(_) => 14,
        Bson::JavaScriptCodeWithScope(_) => 15,
        Bson::MaxKey => 16,
    }
}

fn type_alias(v: &Bson) -> &'static str {
    match v {
        Bson::MinKey => "minKey",
        Bson::Undefined => "undefined",
        Bson::Null => "null",
        Bson::Double(_) => "double",
        Bson::Int32(_) => "int",
        Bson::Int64(_) => "long",
        Bson::Decimal128(_) => "decimal",
        Bson::String(_) => "string",
        Bson::Symbol(_) => "symbol",
        Bson::Document(_) => "object",
        Bson::Array(_) => "array",
        Bson::Binary(_) => "binData",
        Bson::ObjectId(_) => "objectId",
        Bson::Boolean(_) => "bool",
        Bson::DateTime(_) => "date",
        Bson::Timestamp(_) => "timestamp",
        Bson::RegularExpression(_) => "regex",
        Bson::DbPointer(_) => "dbPointer",
        Bson::JavaScriptCode(_) => "javascript",
        Bson::JavaScriptCodeWithScope(_) => "javascriptWithScope",
        Bson::MaxKey => "maxKey",
    }
}

/// BSON comparison order: bracket first, then within it (numbers by value with NaN
/// lowest, strings by bytes, documents field by field, ObjectIds by bytes…).
fn compare(a: &Bson, b: &Bson) -> Ordering {
    let num = |v: &Bson| match v {
        Bson::Double(f) => *f,
        Bson::Int32(i) => f64::from(*i),
        Bson::Int64(i) => *i as f64,
        Bson::Decimal128(d) => d.to_string().parse().unwrap_or(f64::NAN),
        _ => 0.0,
    };
    bracket(a).cmp(&bracket(b)).then_with(|| match (a, b) {
        (Bson::String(x) | Bson::Symbol(x), Bson::String(y) | Bson::Symbol(y)) => {
            x.as_bytes().cmp(y.as_bytes())
        }
        (Bson::Document(x), Bson::Document(y)) => {
            for ((kx, vx), (ky, vy)) in x.iter().zip(y.iter()) {
                let o = bracket(vx)
                    .cmp(&bracket(vy))
                    .then_with(|| kx.as_bytes().cmp(ky.as_bytes()))
                    .then_with(|| compare(vx, vy));
                if o != Ordering::Equal {
                    return o;
                }
            }
            x.len().cmp(&y.len())
        }
        (Bson::ObjectId(x), Bson::ObjectId(y)) => x.bytes().cmp(&y.bytes()),
        (Bson::Boolean(x), Bson::Boolean(y)) => x.cmp(y),
        (Bson::DateTime(x), Bson::DateTime(y)) => x.cmp(y),
        (Bson::Timestamp(x), Bson::Timestamp(y)) => {
            (x.time, x.increment).cmp(&(y.time, y.increment))
        }
        (Bson::Binary(x), Bson::Binary(y)) => x
            .bytes
            .len()
            .cmp(&y.bytes.len())
            .then_with(|| u8::from(x.subtype).cmp(&u8::from(y.subtype)))
            .then_with(|| x.bytes.cmp(&y.bytes)),
        _ if bracket(a) == 3 => match (num(a).is_nan(), num(b).is_nan()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Less,
            (false, true) => Ordering::Greater,
            (false, false) => num(a).partial_cmp(&num(b)).unwrap_or(Ordering::Equal),
        },
        _ => Ordering::Equal,
    })
}

fn lookup<'a>(doc: &'a Document, path: &str) -> Option<&'a Bson> {
    let mut parts = path.split('.');
    let mut cur = doc.get(parts.next()?)?;
    for p in parts {
        cur = cur.as_document()?.get(p)?;
    }
    Some(cur)
}

fn error(code: i32, name: &str, msg: &str) -> Document {
    doc! { "ok": 0, "code": code, "codeName": name, "errmsg": msg }
}

/// An OP_MSG body: flag bits, then a kind-0 section (the command) and kind-1
/// sections (document sequences, e.g. `documents` of an insert) folded into it.
fn parse_op_msg(body: &[u8]) -> Option<Document> {
    let flags = u32::from_le_bytes(body.get(..4)?.try_into().ok()?);
    let end = if flags & 1 == 1 {
        body.len() - 4
    } else {
        body.len()
    };
    let mut at = 4;
    let mut cmd: Option<Document> = None;
    let mut sequences: Vec<(String, Vec<Bson>)> = Vec::new();
    while at < end {
        let kind = body[at];
        at += 1;
        let size = i32::from_le_bytes(body.get(at..at + 4)?.try_into().ok()?) as usize;
        match kind {
            0 => {
                cmd = Some(Document::from_reader(body.get(at..at + size)?).ok()?);
                at += size;
            }
            1 => {
                let section = body.get(at + 4..at + size)?;
                let nul = section.iter().position(|b| *b == 0)?;
                let name = String::from_utf8(section[..nul].to_vec()).ok()?;
                let mut docs = Vec::new();
                let mut p = nul + 1;
                while p < section.len() {
                    let len = i32::from_le_bytes(section.get(p..p + 4)?.try_into().ok()?) as usize;
                    docs.push(Bson::Document(
                        Document::from_reader(section.get(p..p + len)?).ok()?,
                    ));
                    p += len;
                }
                sequences.push((name, docs));
                at += size;
            }
            _ => return None,
        }
    }
    let mut cmd = cmd?;
    for (name, docs) in sequences {
        cmd.insert(name, docs);
    }
    Some(cmd)
}
