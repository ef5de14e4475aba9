//! Raft log storage on the engine's own segmented, checksummed log: one record frame per
//! entry, in segments of their own kind under `DIR/log/`; the vote, the committed log id
//! and the purged log id in one state file replaced atomically (`DIR/log-state`).
//!
//! - **Append** writes the entries' frames (readable at once) and hands openraft's
//!   "flushed" callback to the log's flusher thread, which syncs the log (`fdatasync`)
//!   and only then calls it. The raft task goes on meanwhile, so the appends that arrive
//!   during one sync share the next (group commit); callbacks are answered in order.
//! - **Truncate** (a follower dropping uncommitted entries that conflict with the
//!   leader's) cuts the log at the first dropped entry's frame, durably, before returning
//!   (see [`Log::truncate_to`]): later appends then never sit in front of stale frames.
//!   It first waits until every append before it is flushed and answered, as purge does.
//! - **Purge** saves the purged log id first, then removes the segments that hold only
//!   purged entries; entries of a partly purged segment stay on disk and are skipped when
//!   the log is opened again.
//! - **The committed log id** is kept in memory and written with the state file at most
//!   every [`DEFAULT_SAVE_COMMITTED_EVERY`] (and with every vote or purge, and when the log
//!   is closed): openraft saves it after every commit, and an atomic replace (two syncs and
//!   a rename) there would sit between every commit and its apply. A saved id older than
//!   the real one is safe: openraft re-applies from the state machine's applied id at
//!   startup and learns the rest from the leader, as in standard raft, where the committed
//!   id is not saved at all.
//! - **Open** is the engine's recovery: a damaged frame below what a later frame or
//!   segment header attests is corruption and fails the open; above it, a torn tail, cut
//!   and reported. The entries that remain must come in increasing index order.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    CommittedLeaderId, Entry, EntryPayload, LogId, Membership, OptionalSend, RaftLogReader,
    StorageError, StorageIOError, Vote,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::command::{Command, Layout, MAX_COMMANDS_PER_BATCH, Proposal};
use super::meta;
use super::{NodeId, TypeConfig};
use crate::error::{Error, Result};
use crate::format::le::Reader;
use crate::format::{self, FRAME_HEADER_LEN, FrameKind, SEGMENT_KIND_RAFT};
use crate::io::{FsStorage, Storage, create_dir_durably};
use crate::log::{Known, Log, LogRecovery};

/// The state file's name in the log's directory.
const STATE_FILE: &str = "log-state";
/// The segments' directory in the log's directory.
const SEGMENTS_DIR: &str = "log";
/// Default size of a raft log segment: purging removes whole segments, so smaller ones
/// free space sooner after a snapshot.
pub const DEFAULT_RAFT_SEGMENT_BYTES: u64 = 64 << 20;
/// How often, at most, a new committed log id is written to the state file on its own
/// (see the module docs).
pub const DEFAULT_SAVE_COMMITTED_EVERY: std::time::Duration = std::time::Duration::from_millis(100);
/// Version byte at the start of every entry record.
const ENTRY_VERSION: u8 = 1;

const PAYLOAD_BLANK: u8 = 0;
const PAYLOAD_NORMAL: u8 = 1;
const PAYLOAD_MEMBERSHIP: u8 = 2;
/// A command other than an append (delete, tombstone, metadata), in its own layout, so
/// that appends keep the layout of the records written before these were replicated.
const PAYLOAD_CHANGE: u8 = 3;
/// A batch of commands (a [`Proposal::Batch`]): their count (u32), then per command its
/// payload kind (`1` or `3`), its length (u32) and its bytes in that layout.
const PAYLOAD_BATCH: u8 = 4;

/// What the state file holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct LogStateFile {
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
    purged: Option<LogId<NodeId>>,
}

/// The raft log of one node, on the engine's log (see the module docs). A cheap handle:
/// clones share the same log (openraft's log readers are clones).
#[derive(Debug, Clone)]
pub struct RaftLog {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug)]
struct Inner {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    log: Arc<Log>,
    /// Position and id of every entry after the purged one, by index.
    entries: BTreeMap<u64, (u64, LogId<NodeId>)>,
    state: LogStateFile,
    /// The committed id in `state` is newer than the one in the state file.
    committed_unsaved: bool,
    /// When the state file was last written, and how long a new committed id may wait.
    saved_at: std::time::Instant,
    save_committed_every: std::time::Duration,
    recovery: LogRecovery,
    flusher: Arc<Flusher>,
    /// The flusher's thread, joined when the log is dropped.
    flush_thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.flusher.queue.lock().stop = true;
        self.flusher.changed.notify_all();
        if let Some(t) = self.flush_thread.take() {
            let _ = t.join();
        }
        if self.committed_unsaved {
            // Best effort: an older committed id on disk is safe (see the module docs).
            let _ = meta::write_atomic(self.storage.as_ref(), &self.dir, STATE_FILE, &self.state);
        }
    }
}

impl Inner {
    /// Writes `state` (the whole state file, the newest committed id included) and makes
    /// it this log's state.
    fn write_state(&mut self, state: LogStateFile) -> Result<()> {
        meta::write_atomic(self.storage.as_ref(), &self.dir, STATE_FILE, &state)?;
        self.state = state;
        self.committed_unsaved = false;
        self.saved_at = std::time::Instant::now();
        Ok(())
    }
}

/// The appends waiting for their sync, shared by the raft task and the flusher thread.
struct Flusher {
    queue: Mutex<FlushQueue>,
    changed: parking_lot::Condvar,
}

#[derive(Default)]
struct FlushQueue {
    /// Callbacks of written appends, in the order of their writes.
    pending: Vec<LogFlushed<TypeConfig>>,
    /// Appends handed over so far, and those answered.
    submitted: u64,
    answered: u64,
    stop: bool,
}

impl Debug for Flusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flusher").finish_non_exhaustive()
    }
}

impl Flusher {
    /// The flusher thread: syncs the log once for everything written before the callbacks
    /// it takes, then answers them in order; drains what is queued before it stops.
    fn run(&self, log: &Log) {
        loop {
            let taken = {
                let mut q = self.queue.lock();
                while q.pending.is_empty() && !q.stop {
                    self.changed.wait(&mut q);
                }
                if q.pending.is_empty() {
                    return;
                }
                std::mem::take(&mut q.pending)
            };
            let n = taken.len() as u64;
            let synced = log.sync();
            for callback in taken {
                callback.log_io_completed(match &synced {
                    Ok(_) => Ok(()),
                    Err(e) => Err(std::io::Error::other(e.to_string())),
                });
            }
            let mut q = self.queue.lock();
            q.answered = q.answered.saturating_add(n);
            self.changed.notify_all();
        }
    }

    fn submit(&self, callback: LogFlushed<TypeConfig>) {
        let mut q = self.queue.lock();
        q.pending.push(callback);
        q.submitted = q.submitted.saturating_add(1);
        self.changed.notify_all();
    }

    /// Waits until every append handed over so far has been synced and answered.
    fn wait_answered(&self) {
        let mut q = self.queue.lock();
        while q.answered < q.submitted {
            self.changed.wait(&mut q);
        }
    }
}

impl RaftLog {
    /// Opens (or creates) the raft log in `dir` on the real file system, with segments of
    /// [`DEFAULT_RAFT_SEGMENT_BYTES`].
    ///
    /// # Errors
    /// As [`RaftLog::open_with`].
    pub fn open(dir: impl AsRef<Path>) -> Result<RaftLog> {
        Self::open_with(dir, Arc::new(FsStorage), DEFAULT_RAFT_SEGMENT_BYTES)
    }

    /// Opens (or creates) the raft log in `dir` through `storage` (the simulated disk in
    /// tests), with segments of `segment_bytes`.
    ///
    /// # Errors
    /// [`Error::Corrupted`] when a frame below the attested durable position is damaged,
    /// when a record does not decode, when the entries have a hole, or when the state file
    /// does not check; [`Error::Io`] for I/O failures.
    pub fn open_with(
        dir: impl AsRef<Path>,
        storage: Arc<dyn Storage>,
        segment_bytes: u64,
    ) -> Result<RaftLog> {
        let dir = dir.as_ref().to_path_buf();
        let segments_dir = dir.join(SEGMENTS_DIR);
        create_dir_durably(storage.as_ref(), &dir)
            .and_then(|()| create_dir_durably(storage.as_ref(), &segments_dir))
            .map_err(|e| Error::io(format!("create {}", segments_dir.display()), e))?;
        let state: LogStateFile =
            meta::read(storage.as_ref(), &dir, STATE_FILE)?.unwrap_or_default();
        let mut found: Vec<(u64, LogId<NodeId>)> = Vec::new();
        let (log, recovery) = Log::open(
            Arc::clone(&storage),
            &segments_dir,
            SEGMENT_KIND_RAFT,
            segment_bytes,
            false,
            None,
            |_| Known::default(),
            |seg, h, bytes| {
                if h.kind != FrameKind::Record {
                    return Err(Error::corrupted(
                        seg.path(),
                        h.position.saturating_sub(seg.base()),
                        format!("a {:?} frame in a raft log segment", h.kind),
                    ));
                }
                let id = decode_log_id(bytes.body()).map_err(|e| {
                    Error::corrupted(
                        seg.path(),
                        h.position.saturating_sub(seg.base()),
                        format!("raft entry: {e}"),
                    )
                })?;
                found.push((h.position, id));
                Ok(())
            },
        )?;
        // Raft takes every entry it finds as persisted (its votes and commits count on
        // them): what a crash left only in the OS cache is made durable first.
        log.sync()?;
        let purged_index = state.purged.map(|p| p.index);
        let mut entries: BTreeMap<u64, (u64, LogId<NodeId>)> = BTreeMap::new();
        for (position, id) in found {
            if purged_index.is_some_and(|p| id.index <= p) {
                continue;
            }
            // Appends only go forward (an append over older entries cuts them first).
            if let Some((&last, _)) = entries.last_key_value()
                && id.index <= last
            {
                let (file, offset) = log.locate(position);
                return Err(Error::corrupted(
                    file,
                    offset,
                    format!("raft entry {} after entry {last}", id.index),
                ));
            }
            entries.insert(id.index, (position, id));
        }
        let log = Arc::new(log);
        let flusher = Arc::new(Flusher {
            queue: Mutex::new(FlushQueue::default()),
            changed: parking_lot::Condvar::new(),
        });
        let flush_thread = {
            let (flusher, log) = (Arc::clone(&flusher), Arc::clone(&log));
            std::thread::Builder::new()
                .name("streamlog-raft-flush".into())
                .spawn(move || flusher.run(&log))
                .map_err(|e| Error::io("start the raft log's flusher thread", e))?
        };
        Ok(RaftLog {
            inner: Arc::new(Mutex::new(Inner {
                storage,
                dir,
                log,
                entries,
                state,
                committed_unsaved: false,
                saved_at: std::time::Instant::now(),
                save_committed_every: DEFAULT_SAVE_COMMITTED_EVERY,
                recovery,
                flusher,
                flush_thread: Some(flush_thread),
            })),
        })
    }

    /// The same log, writing a new committed log id to its state file on its own at most
    /// every `every` (default [`DEFAULT_SAVE_COMMITTED_EVERY`]; `Duration::ZERO` writes
    /// each one before `save_committed` returns).
    #[must_use]
    pub fn saving_committed_every(self, every: std::time::Duration) -> RaftLog {
        self.inner.lock().save_committed_every = every;
        self
    }

    /// How long the log's syncs took (each makes the entries before it durable).
    pub fn sync_stats(&self) -> crate::SyncStats {
        self.inner.lock().log.sync_stats()
    }

    /// Whether the log holds nothing a node ever wrote: no vote, no entry, nothing
    /// purged (a node that never took part in a cluster).
    pub fn is_blank(&self) -> bool {
        let inner = self.inner.lock();
        inner.entries.is_empty() && inner.state.vote.is_none() && inner.state.purged.is_none()
    }

    /// What recovery found and did when the log was opened (a torn tail cut, …).
    pub fn recovery_report(&self) -> LogRecovery {
        self.inner.lock().recovery.clone()
    }

    /// Ids of the entries held (after the purged one), oldest first.
    pub fn entry_ids(&self) -> Vec<LogId<NodeId>> {
        self.inner
            .lock()
            .entries
            .values()
            .map(|(_, id)| *id)
            .collect()
    }

    /// Number of segment files of the log.
    pub fn segment_count(&self) -> usize {
        self.inner.lock().log.segment_bases().len()
    }

    /// Reads the entries with indexes in `range` that the log holds.
    fn read_range(&self, range: impl RangeBounds<u64>) -> Result<Vec<Entry<TypeConfig>>> {
        let inner = self.inner.lock();
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => Bound::Included(e),
            Bound::Excluded(&e) => Bound::Excluded(e),
            Bound::Unbounded => Bound::Unbounded,
        };
        let limit = inner.log.written();
        let mut out = Vec::new();
        if matches!(end, Bound::Excluded(e) if e <= start) {
            return Ok(out);
        }
        for (position, id) in inner
            .entries
            .range((Bound::Included(start), end))
            .map(|(_, v)| v)
        {
            let (h, bytes) = inner.log.read_frame(*position, limit)?;
            let entry = decode_entry(bytes.body()).map_err(|e| {
                let (file, offset) = inner.log.locate(h.position);
                Error::corrupted(file, offset, format!("raft entry: {e}"))
            })?;
            if entry.log_id != *id {
                let (file, offset) = inner.log.locate(h.position);
                return Err(Error::corrupted(
                    file,
                    offset,
                    format!("raft entry {} where {} was recorded", entry.log_id, id),
                ));
            }
            out.push(entry);
        }
        Ok(out)
    }

    /// Writes `entries` (readable when this returns; durable once the flusher has synced
    /// the log after it). Entries must come in
    /// increasing index order; those at or before the purged one are dropped; one at or
    /// below an entry the log
    /// holds replaces it and everything after it (cut first, durably, as by a truncate).
    /// Openraft never leaves a hole; this layer does not assume it (its test suite
    /// appends with holes).
    fn write_entries(&self, entries: impl IntoIterator<Item = Entry<TypeConfig>>) -> Result<()> {
        // An entry at or before the purged one is covered by the state machine already
        // (openraft's test suite appends such entries after purging the log up to what
        // the state machine applied): it is not kept.
        let purged = self.inner.lock().state.purged.map(|p| p.index);
        let entries: Vec<Entry<TypeConfig>> = entries
            .into_iter()
            .filter(|e| purged.is_none_or(|p| e.log_id.index > p))
            .collect();
        let Some(first) = entries.first().map(|e| e.log_id.index) else {
            return Ok(());
        };
        if entries.windows(2).any(|w| match w {
            [a, b] => b.log_id.index <= a.log_id.index,
            _ => false,
        }) {
            return Err(Error::InvalidArgument(
                "raft entries to append are not in increasing index order".into(),
            ));
        }
        self.truncate_from(first)?;
        let mut inner = self.inner.lock();
        let mut appender = inner.log.appender();
        let watermark = inner.log.durable();
        let mut added = Vec::new();
        let mut body = Vec::new();
        for entry in entries {
            body.clear();
            encode_entry(&entry, &mut body)?;
            if u32::try_from(body.len()).is_err() {
                return Err(Error::TooLarge {
                    what: "raft entry bytes",
                    size: body.len() as u64,
                    limit: u64::from(u32::MAX),
                });
            }
            let len = FRAME_HEADER_LEN.saturating_add(body.len()) as u64;
            let (position, out) = appender.reserve(len);
            format::encode_record_frame(out, position, watermark, &body);
            added.push((position, entry.log_id));
        }
        inner.log.write(&appender.take())?;
        inner
            .entries
            .extend(added.into_iter().map(|(p, id)| (id.index, (p, id))));
        Ok(())
    }

    /// Drops the entries from `index` on, durably.
    fn truncate_from(&self, index: u64) -> Result<()> {
        if self.inner.lock().entries.range(index..).next().is_none() {
            return Ok(());
        }
        // Cut only what every earlier append's answer has already covered: a callback
        // answered after the cut would report entries flushed that are gone.
        self.flusher().wait_answered();
        let mut inner = self.inner.lock();
        let Some((_, &(position, _))) = inner.entries.range(index..).next() else {
            return Ok(());
        };
        inner.log.truncate_to(position)?;
        inner.entries.split_off(&index);
        Ok(())
    }

    /// Drops the entries up to `id` (included): the purged id is saved first, then the
    /// segments holding only purged entries are removed.
    fn purge_to(&self, id: LogId<NodeId>) -> Result<()> {
        self.flusher().wait_answered();
        let mut inner = self.inner.lock();
        if inner.state.purged.is_some_and(|p| p.index >= id.index) {
            return Ok(());
        }
        let mut state = inner.state.clone();
        state.purged = Some(id);
        inner.write_state(state)?;
        inner.entries = inner.entries.split_off(&id.index.saturating_add(1));
        let keep_from = inner
            .entries
            .first_key_value()
            .map_or_else(|| inner.log.written(), |(_, (p, _))| *p);
        inner.log.remove_segments_before(keep_from)?;
        Ok(())
    }

    fn flusher(&self) -> Arc<Flusher> {
        Arc::clone(&self.inner.lock().flusher)
    }

    fn save_state(&self, change: impl FnOnce(&mut LogStateFile)) -> Result<()> {
        let mut inner = self.inner.lock();
        let mut state = inner.state.clone();
        change(&mut state);
        inner.write_state(state)
    }
}

fn write_err(e: Error) -> StorageError<NodeId> {
    StorageIOError::write_logs(&e).into()
}

fn read_err(e: Error) -> StorageError<NodeId> {
    StorageIOError::read_logs(&e).into()
}

impl RaftLogReader<TypeConfig> for RaftLog {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> std::result::Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        self.read_range(range).map_err(read_err)
    }
}

impl RaftLogStorage<TypeConfig> for RaftLog {
    type LogReader = RaftLog;

    async fn get_log_state(
        &mut self,
    ) -> std::result::Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let inner = self.inner.lock();
        let last_purged_log_id = inner.state.purged;
        let last_log_id = inner
            .entries
            .last_key_value()
            .map(|(_, (_, id))| *id)
            .or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(
        &mut self,
        vote: &Vote<NodeId>,
    ) -> std::result::Result<(), StorageError<NodeId>> {
        let vote = *vote;
        self.save_state(|s| s.vote = Some(vote))
            .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(
        &mut self,
    ) -> std::result::Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.inner.lock().state.vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> std::result::Result<(), StorageError<NodeId>> {
        let mut inner = self.inner.lock();
        if inner.state.committed == committed {
            return Ok(());
        }
        if inner.saved_at.elapsed() < inner.save_committed_every {
            inner.state.committed = committed;
            inner.committed_unsaved = true;
            return Ok(());
        }
        let mut state = inner.state.clone();
        state.committed = committed;
        inner.write_state(state).map_err(write_err)
    }

    async fn read_committed(
        &mut self,
    ) -> std::result::Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self.inner.lock().state.committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> std::result::Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        match self.write_entries(entries) {
            Ok(()) => {
                self.flusher().submit(callback);
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(write_err(e))
            }
        }
    }

    async fn truncate(
        &mut self,
        log_id: LogId<NodeId>,
    ) -> std::result::Result<(), StorageError<NodeId>> {
        self.truncate_from(log_id.index).map_err(write_err)
    }

    async fn purge(
        &mut self,
        log_id: LogId<NodeId>,
    ) -> std::result::Result<(), StorageError<NodeId>> {
        self.purge_to(log_id).map_err(write_err)
    }
}

// ---------------------------------------------------------------------------------------
// Entry records (the body of a record frame; docs/format.md, "Raft log segments")
// ---------------------------------------------------------------------------------------

/// Appends an entry's record to `out`.
fn encode_entry(entry: &Entry<TypeConfig>, out: &mut Vec<u8>) -> Result<()> {
    out.push(ENTRY_VERSION);
    out.extend_from_slice(&entry.log_id.leader_id.term.to_le_bytes());
    out.extend_from_slice(&entry.log_id.leader_id.node_id.to_le_bytes());
    out.extend_from_slice(&entry.log_id.index.to_le_bytes());
    match &entry.payload {
        EntryPayload::Blank => out.push(PAYLOAD_BLANK),
        EntryPayload::Normal(Proposal::One(cmd)) => {
            out.push(payload_kind(cmd));
            cmd.encode(out);
        }
        EntryPayload::Normal(Proposal::Batch(cmds)) => {
            out.push(PAYLOAD_BATCH);
            let count = u32::try_from(cmds.len())
                .ok()
                .filter(|&n| n as usize <= MAX_COMMANDS_PER_BATCH)
                .ok_or_else(|| {
                    Error::InvalidArgument(format!("a batch of {} commands", cmds.len()))
                })?;
            out.extend_from_slice(&count.to_le_bytes());
            let mut bytes = Vec::new();
            for cmd in cmds {
                bytes.clear();
                cmd.encode(&mut bytes);
                let len = u32::try_from(bytes.len()).map_err(|_| Error::TooLarge {
                    what: "raft command bytes",
                    size: bytes.len() as u64,
                    limit: u64::from(u32::MAX),
                })?;
                out.push(payload_kind(cmd));
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(&bytes);
            }
        }
        EntryPayload::Membership(m) => {
            out.push(PAYLOAD_MEMBERSHIP);
            serde_json::to_writer(&mut *out, m)
                .map_err(|e| Error::InvalidArgument(format!("encode membership: {e}")))?;
        }
    }
    Ok(())
}

/// The payload kind of a single command's record.
fn payload_kind(cmd: &Command) -> u8 {
    match cmd.layout() {
        Layout::Append => PAYLOAD_NORMAL,
        Layout::Change => PAYLOAD_CHANGE,
    }
}

/// Decodes a batch's commands (after its payload kind).
fn decode_batch(r: &mut Reader<'_>) -> std::result::Result<Vec<Command>, format::DecodeError> {
    let count = r.u32()? as usize;
    if count > MAX_COMMANDS_PER_BATCH {
        return Err(format::DecodeError::Invalid("batch command count"));
    }
    let mut cmds = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let layout = match r.u8()? {
            PAYLOAD_NORMAL => Layout::Append,
            PAYLOAD_CHANGE => Layout::Change,
            _ => return Err(format::DecodeError::Invalid("batch command kind")),
        };
        let len = r.u32()? as usize;
        let mut one = Reader::new(r.take(len)?);
        cmds.push(Command::decode(&mut one, layout)?);
        if one.remaining() != 0 {
            return Err(format::DecodeError::Invalid("bytes after a batch command"));
        }
    }
    Ok(cmds)
}

/// The log id at the start of an entry record.
fn decode_log_id(body: &[u8]) -> std::result::Result<LogId<NodeId>, format::DecodeError> {
    let mut r = Reader::new(body);
    read_log_id(&mut r)
}

fn read_log_id(r: &mut Reader<'_>) -> std::result::Result<LogId<NodeId>, format::DecodeError> {
    if r.u8()? != ENTRY_VERSION {
        return Err(format::DecodeError::Invalid("raft entry version"));
    }
    let term = r.u64()?;
    let node = r.u64()?;
    let index = r.u64()?;
    Ok(LogId::new(CommittedLeaderId::new(term, node), index))
}

/// Decodes a whole entry record.
fn decode_entry(body: &[u8]) -> std::result::Result<Entry<TypeConfig>, format::DecodeError> {
    let mut r = Reader::new(body);
    let log_id = read_log_id(&mut r)?;
    let payload = match r.u8()? {
        PAYLOAD_BLANK => EntryPayload::Blank,
        PAYLOAD_NORMAL => {
            EntryPayload::Normal(Proposal::One(Command::decode(&mut r, Layout::Append)?))
        }
        PAYLOAD_CHANGE => {
            EntryPayload::Normal(Proposal::One(Command::decode(&mut r, Layout::Change)?))
        }
        PAYLOAD_BATCH => EntryPayload::Normal(Proposal::Batch(decode_batch(&mut r)?)),
        PAYLOAD_MEMBERSHIP => {
            let rest = r.take(r.remaining())?;
            let m: Membership<NodeId, openraft::BasicNode> = serde_json::from_slice(rest)
                .map_err(|_| format::DecodeError::Invalid("raft membership"))?;
            EntryPayload::Membership(m)
        }
        _ => return Err(format::DecodeError::Invalid("raft entry payload")),
    };
    if r.remaining() != 0 {
        return Err(format::DecodeError::Invalid("bytes after the raft entry"));
    }
    Ok(Entry { log_id, payload })
}

/// Most entries one [`decode_entries`] call accepts (a bound on what a damaged or hostile
/// message may ask for; openraft sends at most `max_payload_entries` at a time).
const MAX_WIRE_ENTRIES: usize = 1 << 20;

/// Encodes entries for the network between nodes: per entry, its record's length (u32)
/// and the record, exactly as the raft log stores it (docs/format.md, "Raft entries on
/// the wire").
///
/// # Errors
/// [`Error::InvalidArgument`] when an entry's record is longer than 4 GiB or its
/// membership cannot be encoded.
pub fn encode_entries(entries: &[Entry<TypeConfig>]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut record = Vec::new();
    for entry in entries {
        record.clear();
        encode_entry(entry, &mut record)?;
        let len = u32::try_from(record.len()).map_err(|_| {
            Error::InvalidArgument(format!(
                "raft entry {} is too large to send ({} bytes)",
                entry.log_id.index,
                record.len()
            ))
        })?;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&record);
    }
    Ok(out)
}

/// Decodes what [`encode_entries`] wrote.
///
/// # Errors
/// [`Error::InvalidArgument`] naming what does not decode (never a panic, whatever the
/// bytes).
pub fn decode_entries(bytes: &[u8]) -> Result<Vec<Entry<TypeConfig>>> {
    let bad = |what: format::DecodeError| {
        Error::InvalidArgument(format!("raft entries from the network: {what}"))
    };
    let mut r = Reader::new(bytes);
    let mut entries = Vec::new();
    while r.remaining() > 0 {
        if entries.len() >= MAX_WIRE_ENTRIES {
            return Err(bad(format::DecodeError::Invalid("too many entries")));
        }
        let len = r.u32().map_err(bad)?;
        let len = usize::try_from(len).map_err(|_| bad(format::DecodeError::Invalid("length")))?;
        let record = r.take(len).map_err(bad)?;
        entries.push(decode_entry(record).map_err(bad)?);
    }
    Ok(entries)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::{ExpectedVersion, NewEvent};

    fn batch_entry() -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(3, 2), 17),
            payload: EntryPayload::Normal(Proposal::Batch(vec![
                Command::append(
                    "a",
                    ExpectedVersion::Exact(4),
                    [NewEvent::new("E", b"one"), NewEvent::new("F", b"")],
                ),
                Command::tombstone("b", ExpectedVersion::Any),
                Command::append("c", ExpectedVersion::NoStream, [NewEvent::new("G", b"x")]),
            ])),
        }
    }

    #[test]
    fn a_batch_entry_decodes_to_what_was_encoded_and_every_truncation_is_an_error() {
        let entry = batch_entry();
        let mut record = Vec::new();
        encode_entry(&entry, &mut record).unwrap();
        assert_eq!(record[25], PAYLOAD_BATCH);
        assert_eq!(decode_entry(&record).unwrap(), entry);
        for len in 0..record.len() {
            assert!(decode_entry(&record[..len]).is_err(), "cut at {len}");
        }
        let mut longer = record.clone();
        longer.push(0);
        assert!(decode_entry(&longer).is_err());
        // A count past the bound, or an unknown command kind, is refused.
        let mut huge = record.clone();
        huge[26..30].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_entry(&huge).is_err());
        let mut kind = record.clone();
        kind[30] = PAYLOAD_MEMBERSHIP;
        assert!(decode_entry(&kind).is_err());
        // On the wire too.
        let wire = encode_entries(&[entry.clone(), entry.clone()]).unwrap();
        assert_eq!(decode_entries(&wire).unwrap(), vec![entry.clone(), entry]);
    }
}
