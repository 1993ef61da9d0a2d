//! The embedded durable store: a fjall database owned by one thread. Shards never block on it:
//! they [`Store::submit`] records over a queue (bounded in bytes by `store.queue_max_bytes`)
//! and hear back through their mailboxes, via the `confirm` callback given at start.
//!
//! Group commit: the thread takes every request queued, waits for more until the oldest has
//! waited `store.group_commit_us` (or `store.group_commit_records` have come), writes them as
//! one batch and, under `durability = "fsync"`, calls `fdatasync` once for all of them before
//! confirming any. Under `"os"` it confirms once the batch reached the OS and syncs every
//! `store.sync_interval_ms`: a process crash loses nothing confirmed, a power loss may lose the
//! last interval.
//!
//! Opening reads everything the shards keep in memory (inbox messages, dedup keys) back; a
//! record that does not decode fails the start, naming it: the store never silently starts
//! empty.

mod codec;
mod dead_letters;

pub use dead_letters::DeadLetters;

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use wsedge_core::broker::{DeadLetter, Record, StoredMessage};

use crate::config::{Durability, StoreConfig};
use crate::metrics::{Metrics, StoreMetrics};

/// Tells shard `shard` that the write it made with `token` is durable (`true`) or failed.
pub type Confirm = Box<dyn Fn(usize, u64, bool) + Send>;

/// Why the store cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store at {path}: {source}")]
    Open { path: String, source: fjall::Error },
    #[error("cannot open the store at {path}: another wsedge is using it (one server per store directory: set store.path, or WSEDGE_STORE_PATH)")]
    Locked { path: String },
    #[error("the store at {path} is damaged: {keyspace} record {key}: {what}. It was not opened; restore it from a backup or move it away to start empty")]
    Corrupt {
        path: String,
        keyspace: &'static str,
        key: String,
        what: String,
    },
    #[error("cannot start the store thread: {0}")]
    Thread(io::Error),
}

/// What the store held at start, for the shards to take back.
#[derive(Debug, Default)]
pub struct Restored {
    /// (user, seq, message), in key order.
    pub inbox: Vec<(Arc<str>, u64, StoredMessage)>,
    /// (queue, seq, message) of durable groups, in key order.
    pub queues: Vec<(Arc<str>, u64, StoredMessage)>,
    /// The durable groups' queues.
    pub durable: Vec<Arc<str>>,
    /// (channel, seq, message) of scheduled publishes.
    pub schedules: Vec<(Arc<str>, u64, StoredMessage)>,
    /// (channel, offset, epoch, message) of durable channel history, in key order.
    pub history: Vec<(Arc<str>, u64, Arc<str>, StoredMessage)>,
    /// (key, expires_ms), unexpired only.
    pub dedup: Vec<(Box<str>, u64)>,
    pub dead_letters: usize,
}

/// The open database, before its thread starts.
pub struct Opened {
    db: Database,
    inbox: Keyspace,
    queues: Keyspace,
    durable: Keyspace,
    history: Keyspace,
    schedules: Keyspace,
    dlq: Keyspace,
    dedup: Keyspace,
    next_dead: u64,
    /// Dead letters held (for the metrics).
    dead_letters: u64,
    config: StoreConfig,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("config", &self.config)
            .finish()
    }
}

/// Opens (or creates) the store at `config.path` and reads back what the shards keep in memory;
/// dedup keys expired at `now_ms` are deleted.
pub fn open(config: &StoreConfig, now_ms: u64) -> Result<(Opened, Restored), StoreError> {
    let path = config.path.display().to_string();
    let open_err = |source| match source {
        fjall::Error::Locked => StoreError::Locked { path: path.clone() },
        source => StoreError::Open {
            path: path.clone(),
            source,
        },
    };
    if config.path.exists() && !config.path.is_dir() {
        let source = fjall::Error::Io(io::Error::other("not a directory"));
        return Err(open_err(source));
    }
    let db = Database::builder(&config.path)
        .worker_threads(1)
        .open()
        .map_err(open_err)?;
    let keyspace = |name| db.keyspace(name, KeyspaceCreateOptions::default);
    let inbox = keyspace("inbox").map_err(open_err)?;
    let queues = keyspace("queues").map_err(open_err)?;
    let durable = keyspace("durable").map_err(open_err)?;
    let history = keyspace("history").map_err(open_err)?;
    let schedules = keyspace("schedules").map_err(open_err)?;
    let dlq = keyspace("dlq").map_err(open_err)?;
    let dedup = keyspace("dedup").map_err(open_err)?;
    let corrupt = |keyspace, key: &[u8], what: String| StoreError::Corrupt {
        path: path.clone(),
        keyspace,
        key: String::from_utf8_lossy(key).into_owned(),
        what,
    };
    let mut restored = Restored::default();
    for (name, keyspace, into) in [
        ("inbox", &inbox, &mut restored.inbox),
        ("queues", &queues, &mut restored.queues),
        ("schedules", &schedules, &mut restored.schedules),
    ] {
        for item in keyspace.iter() {
            let (key, value) = item.into_inner().map_err(open_err)?;
            let (owner, seq) =
                codec::decode_inbox_key(&key).map_err(|e| corrupt(name, &key, e.to_string()))?;
            let message =
                codec::decode_message(&value).map_err(|e| corrupt(name, &key, e.to_string()))?;
            into.push((owner, seq, message));
        }
    }
    for item in history.iter() {
        let (key, value) = item.into_inner().map_err(open_err)?;
        let bad = |e: codec::Corrupt| corrupt("history", &key, e.to_string());
        let (channel, offset) = codec::decode_inbox_key(&key).map_err(bad)?;
        let (epoch, message) = codec::decode_history(&value).map_err(bad)?;
        restored.history.push((channel, offset, epoch, message));
    }
    for item in durable.iter() {
        let key = item.key().map_err(open_err)?;
        let queue = std::str::from_utf8(&key)
            .ok()
            .filter(|q| wsedge_core::broker::queue_group(q).is_some())
            .ok_or_else(|| corrupt("durable", &key, "not a group's queue".into()))?;
        restored.durable.push(queue.into());
    }
    // Messages of a group no longer durable (deleted while they were being written) go.
    let durable_set: std::collections::HashSet<Arc<str>> =
        restored.durable.iter().cloned().collect();
    let orphan = |q: &Arc<str>| !durable_set.contains(q);
    let orphans: Vec<Vec<u8>> = restored
        .queues
        .iter()
        .filter(|(q, _, _)| orphan(q))
        .map(|(q, seq, _)| codec::inbox_key(q, *seq))
        .collect();
    restored.queues.retain(|(q, _, _)| !orphan(q));
    let mut expired = Vec::new();
    for item in dedup.iter() {
        let (key, value) = item.into_inner().map_err(open_err)?;
        let expires = <[u8; 8]>::try_from(&*value)
            .map(u64::from_be_bytes)
            .map_err(|_| corrupt("dedup", &key, "not an expiry time".into()))?;
        let text = std::str::from_utf8(&key)
            .map_err(|_| corrupt("dedup", &key, "key is not UTF-8".into()))?;
        if expires <= now_ms {
            expired.push(key.clone());
        } else {
            restored.dedup.push((text.into(), expires));
        }
    }
    if !expired.is_empty() || !orphans.is_empty() {
        let mut batch = db.batch();
        for key in expired {
            batch.remove(&dedup, key);
        }
        for key in orphans {
            batch.remove(&queues, key);
        }
        batch.commit().map_err(open_err)?;
    }
    let mut next_dead = 1;
    if let Some(last) = dlq.last_key_value() {
        let (key, value) = last.into_inner().map_err(open_err)?;
        codec::decode_dead_letter(&value).map_err(|e| corrupt("dlq", &key, e.to_string()))?;
        let id = <[u8; 8]>::try_from(&*key)
            .map(u64::from_be_bytes)
            .map_err(|_| corrupt("dlq", &key, "not a dead-letter id".into()))?;
        next_dead = id + 1;
    }
    restored.dead_letters = dlq.len().map_err(open_err)?;
    let opened = Opened {
        db,
        inbox,
        queues,
        durable,
        history,
        schedules,
        dlq,
        dedup,
        next_dead,
        dead_letters: restored.dead_letters as u64,
        config: config.clone(),
    };
    Ok((opened, restored))
}

/// What the store thread takes: a write, a query, or the end.
enum Request {
    Write(Write),
    Query(DeadLetters),
    /// Fault injection (`[api] fault_injection`): block the store's thread for `ms`.
    Stall(u64),
    Stop,
}

/// A write waiting for the store thread.
struct Write {
    shard: usize,
    token: Option<u64>,
    records: Vec<Record>,
    bytes: usize,
    queued_at: Instant,
}

/// The running store: the queue to its thread.
#[derive(Debug)]
pub struct Store {
    tx: mpsc::Sender<Request>,
    queued: Arc<AtomicUsize>,
    max_bytes: usize,
}

impl std::fmt::Debug for Write {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Write").field("token", &self.token).finish()
    }
}

impl Opened {
    /// Starts the store thread; `confirm` is called on it for each write made with a token.
    /// The thread ends after [`Store::close`]; join it to know everything is synced.
    pub fn start(
        self,
        confirm: Confirm,
        metrics: Arc<Metrics>,
    ) -> Result<(Store, JoinHandle<()>), StoreError> {
        let (tx, rx) = mpsc::channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let max_bytes = self.config.queue_max_bytes;
        let counter = queued.clone();
        let thread = std::thread::Builder::new()
            .name("wsedge-store".into())
            .spawn(move || self.run(rx, counter, confirm, &metrics.store))
            .map_err(StoreError::Thread)?;
        let store = Store {
            tx,
            queued,
            max_bytes,
        };
        Ok((store, thread))
    }

    fn run(
        mut self,
        rx: mpsc::Receiver<Request>,
        queued: Arc<AtomicUsize>,
        confirm: Confirm,
        metrics: &StoreMetrics,
    ) {
        let mut batch: Vec<Write> = Vec::new();
        let mut queries: Vec<DeadLetters> = Vec::new();
        let mut last_sync = Instant::now();
        let mut dirty = false;
        loop {
            let first = match self.config.durability {
                Durability::Fsync => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Durability::Os => rx.recv_timeout(self.config.sync_interval),
            };
            let stop = match first {
                Ok(Request::Write(write)) => {
                    batch.push(write);
                    self.gather(&rx, &mut batch, &mut queries)
                }
                Ok(Request::Query(query)) => {
                    queries.push(query);
                    false
                }
                Ok(Request::Stall(ms)) => {
                    tracing::warn!(ms, "fault injection: stalling the store");
                    std::thread::sleep(Duration::from_millis(ms));
                    false
                }
                Ok(Request::Stop) | Err(RecvTimeoutError::Disconnected) => true,
                Err(RecvTimeoutError::Timeout) => false,
            };
            if !batch.is_empty() {
                let started = Instant::now();
                let ok = self.commit(&batch);
                metrics.fsync.observe(started.elapsed().as_micros() as u64);
                let records = batch.iter().map(|w| w.records.len()).sum::<usize>();
                if records > 0 {
                    metrics.batch.observe(records as u64);
                }
                if ok {
                    let dead = batch.iter().flat_map(|w| &w.records);
                    let dead = dead.filter(|r| matches!(r, Record::DeadLetter(_))).count();
                    self.dead_letters += dead as u64;
                } else {
                    metrics.failures.inc();
                }
                dirty = true;
                for write in batch.drain(..) {
                    queued.fetch_sub(write.bytes, Ordering::AcqRel);
                    if let Some(token) = write.token {
                        confirm(write.shard, token, ok);
                    }
                }
            }
            // Queries see every write queued before them.
            for query in queries.drain(..) {
                dead_letters::Dlq {
                    db: &self.db,
                    dlq: &self.dlq,
                    count: &mut self.dead_letters,
                }
                .answer(query);
            }
            metrics.dead_letters.set(self.dead_letters);
            let sync_due = last_sync.elapsed() >= self.config.sync_interval;
            if dirty && (stop || (self.config.durability == Durability::Os && sync_due)) {
                if let Err(e) = self.db.persist(PersistMode::SyncData) {
                    tracing::error!("store: sync failed: {e}");
                }
                dirty = false;
                last_sync = Instant::now();
            }
            if stop {
                return;
            }
        }
    }

    /// Adds to `batch` what comes until its oldest write has waited `group_commit` or it holds
    /// `group_commit_records` writes; true when the store is to stop.
    fn gather(
        &self,
        rx: &mpsc::Receiver<Request>,
        batch: &mut Vec<Write>,
        queries: &mut Vec<DeadLetters>,
    ) -> bool {
        let deadline = batch[0].queued_at + self.config.group_commit;
        while batch.len() < self.config.group_commit_records {
            let next = match rx.try_recv() {
                Ok(next) => Ok(next),
                Err(TryRecvError::Disconnected) => return true,
                Err(TryRecvError::Empty) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return false;
                    }
                    rx.recv_timeout(left)
                }
            };
            match next {
                Ok(Request::Write(write)) => batch.push(write),
                Ok(Request::Query(query)) => queries.push(query),
                Ok(Request::Stall(ms)) => std::thread::sleep(Duration::from_millis(ms)),
                Ok(Request::Stop) | Err(RecvTimeoutError::Disconnected) => return true,
                Err(RecvTimeoutError::Timeout) => return false,
            }
        }
        false
    }

    /// Writes `batch` as one atomic batch; under fsync durability, syncs it. False on failure.
    fn commit(&mut self, batch: &[Write]) -> bool {
        let mut write = self.db.batch();
        for record in batch.iter().flat_map(|w| &w.records) {
            match record {
                Record::InboxPut { user, seq, message } => {
                    let value = codec::message_value(message);
                    write.insert(&self.inbox, codec::inbox_key(user, *seq), value);
                }
                Record::InboxDelete { user, seq } => {
                    write.remove(&self.inbox, codec::inbox_key(user, *seq));
                }
                Record::QueuePut {
                    queue,
                    seq,
                    message,
                } => {
                    let value = codec::message_value(message);
                    write.insert(&self.queues, codec::inbox_key(queue, *seq), value);
                }
                Record::QueueDelete { queue, seq } => {
                    write.remove(&self.queues, codec::inbox_key(queue, *seq));
                }
                Record::Durable { queue } => {
                    write.insert(&self.durable, queue.as_bytes(), []);
                }
                Record::HistoryPut {
                    channel,
                    offset,
                    epoch,
                    message,
                } => {
                    let value = codec::encode_history(epoch, message);
                    write.insert(&self.history, codec::inbox_key(channel, *offset), value);
                }
                Record::SchedulePut {
                    channel,
                    seq,
                    message,
                } => {
                    let value = codec::message_value(message);
                    write.insert(&self.schedules, codec::inbox_key(channel, *seq), value);
                }
                Record::ScheduleDelete { channel, seq } => {
                    write.remove(&self.schedules, codec::inbox_key(channel, *seq));
                }
                Record::HistoryDelete { channel, offset } => {
                    write.remove(&self.history, codec::inbox_key(channel, *offset));
                }
                Record::DurableDelete { queue } => {
                    write.remove(&self.durable, queue.as_bytes());
                    // The queue's keys: its name's length and name, then the sequence numbers.
                    let mut prefix = codec::inbox_key(queue, 0);
                    prefix.truncate(prefix.len() - 8);
                    for item in self.queues.prefix(&prefix) {
                        match item.key() {
                            Ok(key) => write.remove(&self.queues, key),
                            Err(e) => tracing::error!("store: reading {queue}'s messages: {e}"),
                        }
                    }
                }
                Record::DeadLetter(dead) => {
                    let id = self.next_dead;
                    self.next_dead += 1;
                    write.insert(&self.dlq, id.to_be_bytes(), codec::encode_dead_letter(dead));
                }
                Record::Dedup { key, expires_ms } => {
                    write.insert(&self.dedup, key.as_bytes(), expires_ms.to_be_bytes());
                }
            }
        }
        let result = write.commit().and_then(|()| match self.config.durability {
            Durability::Fsync => self.db.persist(PersistMode::SyncData),
            Durability::Os => Ok(()),
        });
        match result {
            Ok(()) => true,
            Err(e) => {
                tracing::error!("store: a write of {} requests failed: {e}", batch.len());
                false
            }
        }
    }
}

impl Store {
    /// Queues `records` for the store; with `token`, shard `shard` is confirmed through the
    /// callback. False (nothing queued) when the queue holds `store.queue_max_bytes`.
    pub fn submit(&self, shard: usize, token: Option<u64>, records: Vec<Record>) -> bool {
        let bytes: usize = records.iter().map(record_bytes).sum();
        if self.queued.fetch_add(bytes, Ordering::AcqRel) + bytes > self.max_bytes {
            self.queued.fetch_sub(bytes, Ordering::AcqRel);
            return false;
        }
        let write = Write {
            shard,
            token,
            records,
            bytes,
            queued_at: Instant::now(),
        };
        if self.tx.send(Request::Write(write)).is_err() {
            tracing::error!("store: the store thread has stopped");
            return false;
        }
        true
    }

    /// Blocks the store's thread for `ms` (fault injection).
    pub fn stall(&self, ms: u64) {
        let _ = self.tx.send(Request::Stall(ms));
    }

    /// Asks the store thread `query` (answered after the writes queued before it).
    pub fn query(&self, query: DeadLetters) {
        let _ = self.tx.send(Request::Query(query));
    }

    /// Has the thread write what is queued, sync, and stop.
    pub fn close(&self) {
        let _ = self.tx.send(Request::Stop);
    }
}

/// The bytes a record holds while queued (an estimate: payload plus a fixed overhead).
fn record_bytes(record: &Record) -> usize {
    128 + match record {
        Record::InboxPut { message, .. }
        | Record::QueuePut { message, .. }
        | Record::HistoryPut { message, .. }
        | Record::SchedulePut { message, .. } => message.payload.len(),
        Record::DeadLetter(DeadLetter { message, .. }) => message.payload.len(),
        Record::InboxDelete { .. }
        | Record::QueueDelete { .. }
        | Record::Durable { .. }
        | Record::DurableDelete { .. }
        | Record::HistoryDelete { .. }
        | Record::ScheduleDelete { .. }
        | Record::Dedup { .. } => 0,
    }
}
