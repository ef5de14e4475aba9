//! The `index` layer: `(stream hash, version) → position`, persistent and bounded in memory.
//!
//! One entry per append (frame): `(stream_hash, first_version, position) → (count, check,
//! commit time)`.
//! Recent entries live in a memtable; a full memtable is frozen and flushed to an immutable
//! sorted table file under `index/`; tables are merged so their number stays logarithmic in
//! the number of entries; a manifest (replaced atomically) names the live tables and the log
//! position they cover. The index knows nothing of frame bytes: lookups return candidate
//! entries and the store confirms each by the stream name in the frame it points at, so
//! hash collisions cost an extra frame read, never a wrong answer.

mod cache;
mod check;
pub use check::VersionContinuity;
mod manifest;
mod over_log;
mod table;

pub use cache::{StreamCache, StreamState};
pub use manifest::Manifest;
pub use over_log::{IndexedLogFiles, open_indexed_log};
pub use table::{
    Entry, NO_COMMIT_TIME, Table, last_version, parse_table_file_name, table_file_name, write_table,
};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::error::{Error, Result};
use crate::io::Storage;

/// The stream hash stored in the index: 64-bit FNV-1a of the stream name's UTF-8 bytes
/// (offset basis `0xcbf29ce484222325`, prime `0x100000001b3`). Part of the on-disk format.
pub fn stream_hash(stream: &str) -> u64 {
    stream.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The check stored beside the hash: CRC-32 (IEEE) of the stream name. Part of the
/// on-disk format.
pub fn stream_check(stream: &str) -> u32 {
    crc32fast::hash(stream.as_bytes())
}

/// The commit time an index entry records for the frame with this header and body: its
/// own (format 2), `i64::MIN` for an events frame of format 1 (which counts as committed
/// before every later frame), `None` for other kinds or a body too short to hold it.
pub fn commit_time_of(header: &crate::format::FrameHeader, body: &[u8]) -> Option<i64> {
    if header.kind != crate::format::FrameKind::Events {
        return None;
    }
    crate::format::decode_commit_time(header, body)
        .ok()
        .map(|t| t.unwrap_or(i64::MIN))
}

/// How keys are derived from stream names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Hashing {
    /// [`stream_hash`] and [`stream_check`].
    #[default]
    Standard,
    /// Every stream gets hash 0 and check 0: for tests of collision handling only.
    ForcedCollisions,
}

impl Hashing {
    /// The `(hash, check)` of a stream.
    pub fn keys(self, stream: &str) -> (u64, u32) {
        match self {
            Hashing::Standard => (stream_hash(stream), stream_check(stream)),
            Hashing::ForcedCollisions => (0, 0),
        }
    }
}

/// `(hash, first version, position) → (count, check, commit time or NO_COMMIT_TIME)`.
type Memtable = BTreeMap<(u64, u64, u64), (u32, u32, i64)>;

/// A manifest and the tables it names, as loaded at open.
type Loaded = (Manifest, Vec<Arc<Table>>);

/// Running totals of what the index covers (for `info` without scanning).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Events.
    pub events: u64,
    /// Appends (event frames).
    pub appends: u64,
    /// Streams with at least one entry: counted by their appends with first version 0,
    /// and no longer once a scavenge removes every entry of theirs
    /// ([`Index::remove_entries`]).
    pub streams: u64,
}

#[derive(Debug)]
struct Frozen {
    entries: Memtable,
    covered: u64,
    totals: Totals,
    last_frame: (u64, u32),
}

#[derive(Debug)]
struct State {
    memtable: Memtable,
    frozen: Option<Arc<Frozen>>,
    tables: Vec<Arc<Table>>,
    manifest: Manifest,
    totals: Totals,
    /// Position and CRC of the last frame recorded.
    last_frame: (u64, u32),
    /// Set by `reset`: the next flush removes every table file the new manifest does not
    /// name.
    reset: bool,
}

/// What opening the index found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct IndexReport {
    /// Live tables loaded.
    pub tables: usize,
    /// Entries in them.
    pub table_entries: u64,
    /// Log position the tables cover; the log is replayed from here.
    pub covered_position: u64,
    /// Frames replayed from the log into the memtable.
    pub replayed_frames: u64,
    /// Why the index was rebuilt from the segments, if it was.
    pub rebuilt: Option<String>,
    /// Index files removed because no manifest names them (debris of a crash).
    pub removed_files: Vec<PathBuf>,
}

/// The stream index.
#[derive(Debug)]
pub struct Index {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    hashing: Hashing,
    memtable_entries: usize,
    state: RwLock<State>,
    /// Serializes manifest writes (flushes and merges build on the latest manifest).
    manifest_lock: Mutex<()>,
    /// Serializes merges.
    merge_lock: Mutex<()>,
}

impl Index {
    /// Opens the index in `dir` (creating the directory). A missing, damaged or
    /// inconsistent index is discarded (its files removed unless `read_only`) and reported;
    /// the caller then replays the log from the covered position, 0 after a discard.
    ///
    /// # Errors
    /// [`Error::UnsupportedFormat`] when the manifest or a table it names was written in a
    /// newer format (they are left as they are, never replaced); I/O errors. Damage is
    /// never a reason to fail.
    pub fn open(
        storage: Arc<dyn Storage>,
        dir: &Path,
        hashing: Hashing,
        memtable_entries: usize,
        read_only: bool,
    ) -> Result<(Index, IndexReport)> {
        let mut report = IndexReport::default();
        if !read_only {
            crate::io::create_dir_durably(storage.as_ref(), dir)
                .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        }
        let exists = storage
            .exists(dir)
            .map_err(|e| Error::io(format!("stat {}", dir.display()), e))?;
        let (manifest, tables) = if exists {
            match Self::load(storage.as_ref(), dir)? {
                Ok(found) => found,
                Err(reason) => {
                    report.rebuilt = Some(reason);
                    (Manifest::default(), Vec::new())
                }
            }
        } else {
            (Manifest::default(), Vec::new())
        };
        let index = Index {
            storage,
            dir: dir.to_path_buf(),
            hashing,
            memtable_entries: memtable_entries.max(1),
            state: RwLock::new(State {
                memtable: Memtable::new(),
                frozen: None,
                tables,
                totals: Totals {
                    events: manifest.events,
                    appends: manifest.appends,
                    streams: manifest.streams,
                },
                last_frame: (manifest.last_frame_position, manifest.last_frame_crc),
                manifest,
                reset: false,
            }),
            manifest_lock: Mutex::new(()),
            merge_lock: Mutex::new(()),
        };
        if exists && !read_only {
            report.removed_files = index.remove_unlisted()?;
        }
        let state = index.state.read();
        report.tables = state.tables.len();
        report.table_entries = state.tables.iter().map(|t| t.len()).sum();
        report.covered_position = state.manifest.covered_position;
        drop(state);
        Ok((index, report))
    }

    /// Loads the manifest and its tables; `Ok(Err(reason))` when they cannot be trusted.
    fn load(storage: &dyn Storage, dir: &Path) -> Result<std::result::Result<Loaded, String>> {
        let manifest = match Manifest::load(storage, dir)? {
            None => return Ok(Ok((Manifest::default(), Vec::new()))),
            Some(Err(reason)) => return Ok(Err(format!("index manifest: {reason}"))),
            Some(Ok(m)) => m,
        };
        let mut tables = Vec::with_capacity(manifest.tables.len());
        for &id in &manifest.tables {
            match Table::open(storage, dir, id) {
                Ok(t) => tables.push(Arc::new(t)),
                Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                    return Ok(Err(format!(
                        "index table {} is missing",
                        table_file_name(id)
                    )));
                }
                Err(Error::Corrupted { reason, .. }) => {
                    return Ok(Err(format!(
                        "index table {}: {reason}",
                        table_file_name(id)
                    )));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Ok((manifest, tables)))
    }

    /// For a read-only handle that follows a live writer: takes in the tables the writer
    /// has flushed since this handle loaded its manifest, when they cover no more of the
    /// log than `followed` (what this handle has indexed), and drops the memtable entries
    /// they hold, so that the memtable stays as small as the writer's. Returns whether it
    /// did. A manifest or table that cannot be read now (a merge may have removed a table
    /// between the two reads) is left for the next call.
    ///
    /// # Errors
    /// I/O errors other than a missing file.
    pub fn adopt_flushed(&self, followed: u64) -> Result<bool> {
        let current = self.state.read().manifest.covered_position;
        // The manifest alone first (a few bytes): most calls end here.
        match Manifest::load(self.storage.as_ref(), &self.dir)? {
            Some(Ok(m)) if m.covered_position > current && m.covered_position <= followed => {}
            _ => return Ok(false),
        }
        let (manifest, tables) = match Self::load(self.storage.as_ref(), &self.dir)? {
            Ok(loaded) => loaded,
            Err(_) => return Ok(false),
        };
        if manifest.covered_position <= current || manifest.covered_position > followed {
            return Ok(false);
        }
        let mut s = self.state.write();
        if s.frozen.is_some() || s.manifest.covered_position != current {
            return Ok(false);
        }
        let covered = manifest.covered_position;
        s.memtable
            .retain(|&(_, _, position), _| position >= covered);
        s.tables = tables;
        s.manifest = manifest;
        Ok(true)
    }

    /// Removes index files that the manifest does not name.
    fn remove_unlisted(&self) -> Result<Vec<PathBuf>> {
        let live: Vec<u64> = self.state.read().manifest.tables.clone();
        let mut removed = Vec::new();
        for name in self
            .storage
            .list(&self.dir)
            .map_err(|e| Error::io(format!("list {}", self.dir.display()), e))?
        {
            let unlisted = match parse_table_file_name(&name) {
                Some(id) => !live.contains(&id),
                None => name == manifest::MANIFEST_TMP_FILE,
            };
            if unlisted {
                let path = self.dir.join(&name);
                self.storage
                    .remove(&path)
                    .map_err(|e| Error::io(format!("remove {}", path.display()), e))?;
                removed.push(path);
            }
        }
        if !removed.is_empty() {
            self.storage
                .sync_dir(&self.dir)
                .map_err(|e| Error::io(format!("sync {}", self.dir.display()), e))?;
        }
        Ok(removed)
    }

    /// Forgets every table and starts empty (covering nothing). The files are replaced at
    /// the next flush; until then the old manifest is left in place but no longer used.
    pub fn reset(&self) {
        let mut s = self.state.write();
        s.memtable.clear();
        s.frozen = None;
        s.tables.clear();
        s.totals = Totals::default();
        s.last_frame = (0, 0);
        s.reset = true;
        let next = s.manifest.next_table_id;
        s.manifest = Manifest {
            next_table_id: next,
            ..Manifest::default()
        };
    }

    /// The manifest in force: covered position and last frame identity.
    pub fn manifest(&self) -> Manifest {
        self.state.read().manifest.clone()
    }

    /// How stream names map to keys.
    pub fn hashing(&self) -> Hashing {
        self.hashing
    }

    /// The keys of a stream.
    pub fn keys(&self, stream: &str) -> (u64, u32) {
        self.hashing.keys(stream)
    }

    /// Records an append: `count` events of `stream` from `first_version` in the frame at
    /// `position`, whose stored CRC is `frame_crc`, committed at `committed_at_us` (see
    /// [`Entry::committed_at_us`]; `None` when it has none to record).
    pub fn record(
        &self,
        stream: &str,
        first_version: u64,
        count: u32,
        position: u64,
        frame_crc: u32,
        committed_at_us: Option<i64>,
    ) {
        let (hash, check) = self.keys(stream);
        let time = committed_at_us.unwrap_or(NO_COMMIT_TIME);
        let mut s = self.state.write();
        s.memtable
            .insert((hash, first_version, position), (count, check, time));
        s.totals.events = s.totals.events.saturating_add(u64::from(count));
        s.totals.appends = s.totals.appends.saturating_add(1);
        if first_version == 0 {
            s.totals.streams = s.totals.streams.saturating_add(1);
        }
        s.last_frame = (position, frame_crc);
    }

    /// Whether the memtable is full.
    pub fn memtable_full(&self) -> bool {
        self.state.read().memtable.len() >= self.memtable_entries
    }

    /// Entries in the memtable.
    pub fn memtable_len(&self) -> usize {
        self.state.read().memtable.len()
    }

    /// Entries in memory: the memtable and the frozen memtable waiting to be flushed.
    pub fn memory_entries(&self) -> usize {
        let s = self.state.read();
        s.memtable
            .len()
            .saturating_add(s.frozen.as_ref().map_or(0, |f| f.entries.len()))
    }

    /// The log position below which every frame is in a frozen memtable or a table: the
    /// memtable holds the frames from here on.
    pub fn memtable_start(&self) -> u64 {
        let s = self.state.read();
        s.frozen
            .as_ref()
            .map_or(s.manifest.covered_position, |f| f.covered)
    }

    /// The covered position of the frozen memtable waiting to be flushed, if any.
    pub fn frozen_covered(&self) -> Option<u64> {
        self.state.read().frozen.as_ref().map(|f| f.covered)
    }

    /// Whether a frozen memtable is waiting to be flushed.
    pub fn has_frozen(&self) -> bool {
        self.state.read().frozen.is_some()
    }

    /// Freezes the memtable, which covers every frame below `covered`. Returns `false`
    /// (and does nothing) when the memtable is empty or a frozen one is still unflushed.
    pub fn freeze(&self, covered: u64) -> bool {
        let mut s = self.state.write();
        if s.frozen.is_some() || (s.memtable.is_empty() && covered <= s.manifest.covered_position) {
            return false;
        }
        let entries = std::mem::take(&mut s.memtable);
        s.frozen = Some(Arc::new(Frozen {
            entries,
            covered,
            totals: s.totals,
            last_frame: s.last_frame,
        }));
        true
    }

    /// Writes the frozen memtable to a table and a new manifest naming it. The caller
    /// makes sure the log is durable through the frozen memtable's covered position first:
    /// the manifest attests it.
    ///
    /// # Errors
    /// I/O errors; the frozen memtable stays in place (and readable) on failure.
    pub fn flush_frozen(&self) -> Result<bool> {
        let _m = self.manifest_lock.lock();
        let Some(frozen) = self.state.read().frozen.clone() else {
            return Ok(false);
        };
        let id = self.next_table_id();
        let entries = frozen.entries.iter().map(memtable_entry);
        write_table(self.storage.as_ref(), &self.dir, id, entries)?;
        let table = Arc::new(Table::open(self.storage.as_ref(), &self.dir, id)?);
        let mut manifest = self.state.read().manifest.clone();
        manifest.tables.push(id);
        manifest.next_table_id = id + 1;
        manifest.covered_position = frozen.covered;
        manifest.last_frame_position = frozen.last_frame.0;
        manifest.last_frame_crc = frozen.last_frame.1;
        manifest.events = frozen.totals.events;
        manifest.appends = frozen.totals.appends;
        manifest.streams = frozen.totals.streams;
        manifest.store(self.storage.as_ref(), &self.dir)?;
        let reset = {
            let mut s = self.state.write();
            s.tables.push(table);
            s.manifest = manifest;
            s.frozen = None;
            std::mem::take(&mut s.reset)
        };
        if reset {
            self.remove_unlisted()?;
        }
        Ok(true)
    }

    fn next_table_id(&self) -> u64 {
        self.state.read().manifest.next_table_id
    }

    /// Merges the two newest tables when the newer is at least half the size of the older
    /// (so sizes grow geometrically and the table count stays logarithmic). Returns whether
    /// it merged. Readers keep using the old tables until the new one is in place.
    ///
    /// # Errors
    /// I/O errors and damaged table blocks.
    pub fn merge_once(&self) -> Result<bool> {
        let _merging = self.merge_lock.lock();
        let (older, newer) = {
            let s = self.state.read();
            let n = s.tables.len();
            match (
                n.checked_sub(2).and_then(|i| s.tables.get(i)),
                s.tables.last(),
            ) {
                (Some(a), Some(b)) if n >= 2 && b.len().saturating_mul(2) >= a.len() => {
                    (Arc::clone(a), Arc::clone(b))
                }
                _ => return Ok(false),
            }
        };
        let id = {
            let _m = self.manifest_lock.lock();
            let mut s = self.state.write();
            let id = s.manifest.next_table_id;
            s.manifest.next_table_id = id + 1;
            id
        };
        let mut a = older.iter();
        let mut b = newer.iter();
        let (mut x, mut y) = (a.next(), b.next());
        let merged = std::iter::from_fn(|| match (x, y) {
            (Some(p), Some(q)) if p.key() <= q.key() => {
                x = a.next();
                Some(p)
            }
            (_, Some(q)) => {
                y = b.next();
                Some(q)
            }
            (Some(p), None) => {
                x = a.next();
                Some(p)
            }
            (None, None) => None,
        });
        let written = write_table(self.storage.as_ref(), &self.dir, id, merged);
        if let Some(e) = a.failed.take().or_else(|| b.failed.take()) {
            let _ = self.storage.remove(&self.dir.join(table_file_name(id)));
            return Err(e);
        }
        written?;
        let table = Arc::new(Table::open(self.storage.as_ref(), &self.dir, id)?);
        {
            let _m = self.manifest_lock.lock();
            let mut manifest = self.state.read().manifest.clone();
            let Some(pos) = manifest.tables.iter().position(|&t| t == older.id()) else {
                return Ok(false);
            };
            manifest
                .tables
                .retain(|&t| t != older.id() && t != newer.id());
            manifest.tables.insert(pos, id);
            manifest.store(self.storage.as_ref(), &self.dir)?;
            let mut s = self.state.write();
            s.tables
                .retain(|t| t.id() != older.id() && t.id() != newer.id());
            s.tables.insert(pos, table);
            s.manifest.tables = manifest.tables;
        }
        for old in [older, newer] {
            // The manifest no longer names them; a crash before this leaves debris that the
            // next open removes.
            let _ = self.storage.remove(old.path());
        }
        Ok(true)
    }

    /// Counts the streams that have an entry not `removed`, key by key over every entry of
    /// `tables`, the frozen memtable and the memtable.
    ///
    /// # Errors
    /// A damaged table block.
    fn count_streams(
        &self,
        tables: &[Arc<Table>],
        removed: &dyn Fn(u64) -> bool,
    ) -> Result<StreamCount> {
        const IN_TABLES: u8 = 1;
        const IN_FROZEN: u8 = 2;
        let mut places: rustc_hash::FxHashMap<(u64, u32), u8> = Default::default();
        let mut see = |e: &Entry, place: u8| {
            if !removed(e.position) {
                *places.entry((e.hash, e.check)).or_insert(0) |= place;
            }
        };
        for table in tables {
            table.for_each(|e| {
                see(&e, IN_TABLES);
                Ok(())
            })?;
        }
        let counted_from = {
            let st = self.state.read();
            if let Some(frozen) = &st.frozen {
                for e in frozen.entries.iter().map(memtable_entry) {
                    see(&e, IN_FROZEN);
                }
            }
            for e in st.memtable.iter().map(memtable_entry) {
                see(&e, 0);
            }
            st.totals.streams
        };
        let count = |mask: u8| places.values().filter(|p| **p & mask != 0).count() as u64;
        Ok(StreamCount {
            all: places.len() as u64,
            in_tables: count(IN_TABLES),
            in_tables_or_frozen: count(IN_TABLES | IN_FROZEN),
            counted_from,
        })
    }

    /// Counts the streams anew, key by key over every entry, and keeps the count in the
    /// totals (the manifest file takes it when it is next written). For an index
    /// rebuilt from a log that a scavenge rewrote: appends count a stream by its first
    /// event (version 0), which a scavenge may have removed while later events remain.
    ///
    /// # Errors
    /// A damaged table block.
    pub fn recount_streams(&self) -> Result<()> {
        let _merging = self.merge_lock.lock();
        let _m = self.manifest_lock.lock();
        let tables = self.state.read().tables.clone();
        let streams = self.count_streams(&tables, &|_| false)?;
        let mut st = self.state.write();
        streams.apply_to(&mut st.totals);
        if let Some(frozen) = st.frozen.clone() {
            let mut totals = frozen.totals;
            totals.streams = streams.in_tables_or_frozen;
            st.frozen = Some(Arc::new(Frozen {
                entries: frozen.entries.clone(),
                covered: frozen.covered,
                totals,
                last_frame: frozen.last_frame,
            }));
        }
        st.manifest.streams = streams.in_tables;
        Ok(())
    }

    /// Removes the entries of the frames at the positions `removed` says (frames a
    /// scavenge took out of the log): each table holding any is rewritten without them
    /// and a new manifest names the new tables; the memtable and a frozen memtable are
    /// filtered in memory. The totals go down by what is removed. When the manifest's last
    /// frame is among them, the manifest no longer names one (that check of the index
    /// against its log is skipped until the next flush). Returns the entries removed.
    ///
    /// # Errors
    /// I/O errors and damaged table blocks (the old tables stay in force).
    pub fn remove_entries(&self, removed: &dyn Fn(u64) -> bool) -> Result<u64> {
        let _merging = self.merge_lock.lock();
        // Held throughout: no flush adds a table (or takes the frozen memtable) meanwhile.
        let _m = self.manifest_lock.lock();
        let tables = self.state.read().tables.clone();
        let mut replaced: Vec<(u64, Arc<Table>)> = Vec::new();
        let mut from_tables = Totals::default();
        // Events and appends are counted here, streams key by key (`count_streams`): a
        // stream stops counting only when no entry of it is left (one truncated, or
        // deleted and appended to again, keeps its newer entries and its count).
        let count = |t: &mut Totals, e: &Entry| {
            t.events = t.events.saturating_add(u64::from(e.count));
            t.appends = t.appends.saturating_add(1);
        };
        let streams = self.count_streams(&tables, removed)?;
        for table in &tables {
            let mut gone = Totals::default();
            table.for_each(|e| {
                if removed(e.position) {
                    count(&mut gone, &e);
                }
                Ok(())
            })?;
            if gone.appends == 0 {
                continue;
            }
            let id = {
                let mut st = self.state.write();
                let id = st.manifest.next_table_id;
                st.manifest.next_table_id = id + 1;
                id
            };
            let mut kept = Vec::new();
            table.for_each(|e| {
                if !removed(e.position) {
                    kept.push(e);
                }
                Ok(())
            })?;
            write_table(self.storage.as_ref(), &self.dir, id, kept.into_iter())?;
            replaced.push((
                table.id(),
                Arc::new(Table::open(self.storage.as_ref(), &self.dir, id)?),
            ));
            from_tables.events = from_tables.events.saturating_add(gone.events);
            from_tables.appends = from_tables.appends.saturating_add(gone.appends);
            from_tables.streams = from_tables.streams.saturating_add(gone.streams);
        }
        let sub = |t: &mut Totals, gone: &Totals| {
            t.events = t.events.saturating_sub(gone.events);
            t.appends = t.appends.saturating_sub(gone.appends);
            t.streams = t.streams.saturating_sub(gone.streams);
        };
        let mut manifest = self.state.read().manifest.clone();
        for (old, new) in &replaced {
            if let Some(slot) = manifest.tables.iter_mut().find(|t| **t == *old) {
                *slot = new.id();
            }
        }
        let mut manifest_totals = Totals {
            events: manifest.events,
            appends: manifest.appends,
            streams: manifest.streams,
        };
        sub(&mut manifest_totals, &from_tables);
        manifest_totals.streams = streams.in_tables;
        manifest.events = manifest_totals.events;
        manifest.appends = manifest_totals.appends;
        manifest.streams = manifest_totals.streams;
        if manifest.last_frame_position != 0 && removed(manifest.last_frame_position) {
            manifest.last_frame_position = 0;
            manifest.last_frame_crc = 0;
        }
        if !replaced.is_empty() || manifest != self.state.read().manifest {
            manifest.store(self.storage.as_ref(), &self.dir)?;
        }
        let mut total = from_tables;
        {
            let mut st = self.state.write();
            for (old, new) in &replaced {
                if let Some(slot) = st.tables.iter_mut().find(|t| t.id() == *old) {
                    *slot = Arc::clone(new);
                }
            }
            let mut gone = Totals::default();
            st.memtable.retain(|k, v| {
                let e = memtable_entry((k, v));
                let remove = removed(e.position);
                if remove {
                    count(&mut gone, &e);
                }
                !remove
            });
            if let Some(frozen) = st.frozen.clone() {
                let mut frozen_gone = Totals::default();
                let mut entries = frozen.entries.clone();
                entries.retain(|k, v| {
                    let e = memtable_entry((k, v));
                    let remove = removed(e.position);
                    if remove {
                        count(&mut frozen_gone, &e);
                    }
                    !remove
                });
                let mut totals = frozen.totals;
                sub(&mut totals, &from_tables);
                sub(&mut totals, &frozen_gone);
                totals.streams = streams.in_tables_or_frozen;
                let last_frame = if removed(frozen.last_frame.0) {
                    (0, 0)
                } else {
                    frozen.last_frame
                };
                st.frozen = Some(Arc::new(Frozen {
                    entries,
                    covered: frozen.covered,
                    totals,
                    last_frame,
                }));
                sub(&mut st.totals, &frozen_gone);
                total.appends = total.appends.saturating_add(frozen_gone.appends);
            }
            sub(&mut st.totals, &from_tables);
            sub(&mut st.totals, &gone);
            streams.apply_to(&mut st.totals);
            total.appends = total.appends.saturating_add(gone.appends);
            if st.last_frame.0 != 0 && removed(st.last_frame.0) {
                st.last_frame = (0, 0);
            }
            st.manifest = manifest;
        }
        for (old, _) in &replaced {
            // The manifest no longer names them; a crash before this leaves debris that the
            // next open removes.
            let _ = self.storage.remove(&self.dir.join(table_file_name(*old)));
        }
        Ok(total.appends)
    }

    /// The candidate entry for `version` of the stream with keys `(hash, check)`: the entry
    /// with the greatest first version at or below `version` whose check matches, skipping
    /// positions in `exclude` (entries already found to belong to a colliding stream).
    ///
    /// # Errors
    /// A damaged table block.
    pub fn floor(
        &self,
        hash: u64,
        check: u32,
        version: u64,
        exclude: &[u64],
    ) -> Result<Option<Entry>> {
        let wanted = |e: &Entry| e.check == check && !exclude.contains(&e.position);
        let (tables, frozen, mut best) = {
            let s = self.state.read();
            let best = memtable_floor(&s.memtable, hash, version, &wanted);
            (s.tables.clone(), s.frozen.clone(), best)
        };
        if let Some(f) = frozen {
            best = best.max(memtable_floor(&f.entries, hash, version, &wanted));
        }
        for t in tables.iter().rev() {
            let mut found = None;
            t.floor(hash, version, |e| {
                if wanted(&e) {
                    found = Some(e);
                    false
                } else {
                    true
                }
            })?;
            best = best.max(found);
        }
        Ok(best)
    }

    /// Up to about `limit` entries with `hash` and `check` whose key comes after
    /// `(hash, version, position)`, in key order (so by first version): the entries that
    /// follow a stream's append, read in one pass over the memtables and tables instead
    /// of one lookup per append. Fewer than `limit` may come back while more exist (each
    /// source is read `limit` entries ahead, and only what every source has covered is
    /// returned); an empty result means there are no more.
    ///
    /// # Errors
    /// A damaged table block.
    pub fn entries_after(
        &self,
        hash: u64,
        check: u32,
        version: u64,
        position: u64,
        limit: usize,
    ) -> Result<Vec<Entry>> {
        let limit = limit.max(1);
        let start = match position.checked_add(1) {
            Some(p) => (hash, version, p),
            None => match version.checked_add(1) {
                Some(v) => (hash, v, 0),
                None => return Ok(Vec::new()),
            },
        };
        let mut out = Vec::new();
        // The greatest key every source that stopped at `limit` has covered.
        let mut bound: Option<(u64, u64, u64)> = None;
        let cover = |got: &[Entry], bound: &mut Option<(u64, u64, u64)>| {
            if got.len() >= limit
                && let Some(last) = got.last()
            {
                *bound = Some(bound.map_or(last.key(), |b| b.min(last.key())));
            }
        };
        let from_memtable = |m: &Memtable| -> Vec<Entry> {
            m.range(start..=(hash, u64::MAX, u64::MAX))
                .map(memtable_entry)
                .filter(|e| e.check == check)
                .take(limit)
                .collect()
        };
        let (tables, frozen) = {
            let s = self.state.read();
            let got = from_memtable(&s.memtable);
            cover(&got, &mut bound);
            out.extend(got);
            (s.tables.clone(), s.frozen.clone())
        };
        if let Some(f) = frozen {
            let got = from_memtable(&f.entries);
            cover(&got, &mut bound);
            out.extend(got);
        }
        for t in &tables {
            let mut got = Vec::new();
            t.ceiling(start.0, start.1, start.2, |e| {
                if e.check == check {
                    got.push(e);
                }
                got.len() < limit
            })?;
            cover(&got, &mut bound);
            out.extend(got);
        }
        out.sort_unstable_by_key(Entry::key);
        out.dedup_by_key(|e| e.key());
        if let Some(b) = bound {
            out.retain(|e| e.key() <= b);
        }
        Ok(out)
    }

    /// Totals of what the index holds.
    pub fn totals(&self) -> Totals {
        self.state.read().totals
    }

    /// Number of live tables.
    pub fn table_count(&self) -> usize {
        self.state.read().tables.len()
    }

    /// Every entry of every source (memtable, frozen memtable, tables), in no particular
    /// order (for verification).
    ///
    /// # Errors
    /// A damaged table block, or any error of `visit`.
    pub fn for_each_entry(&self, mut visit: impl FnMut(Entry) -> Result<()>) -> Result<()> {
        let (mem, frozen, tables) = {
            let s = self.state.read();
            (s.memtable.clone(), s.frozen.clone(), s.tables.clone())
        };
        let frozen_entries = frozen.map(|f| f.entries.clone()).unwrap_or_default();
        for m in [&mem, &frozen_entries] {
            for kv in m {
                visit(memtable_entry(kv))?;
            }
        }
        for t in &tables {
            t.for_each(&mut visit)?;
        }
        Ok(())
    }
}

/// Streams with at least one entry, counted key by key over every entry of the index
/// ([`Index::count_streams`]): in all, in the tables (what the manifest's totals cover),
/// in the tables or the frozen memtable (what the frozen totals cover).
#[derive(Debug, Clone, Copy)]
struct StreamCount {
    all: u64,
    in_tables: u64,
    in_tables_or_frozen: u64,
    /// The running total when the memtable was counted: appends since then add to the
    /// count by their own rule.
    counted_from: u64,
}

impl StreamCount {
    /// Sets `totals.streams` to the count, keeping what appends since added.
    fn apply_to(&self, totals: &mut Totals) {
        let since = totals.streams.saturating_sub(self.counted_from);
        totals.streams = self.all.saturating_add(since);
    }
}

/// A memtable item as an [`Entry`].
fn memtable_entry(
    (&(hash, first_version, position), &(count, check, time)): (&(u64, u64, u64), &(u32, u32, i64)),
) -> Entry {
    Entry {
        hash,
        first_version,
        position,
        count,
        check,
        committed_at_us: Some(time).filter(|&t| t != NO_COMMIT_TIME),
    }
}

fn memtable_floor(
    m: &Memtable,
    hash: u64,
    version: u64,
    wanted: &impl Fn(&Entry) -> bool,
) -> Option<Entry> {
    m.range((hash, 0, 0)..=(hash, version, u64::MAX))
        .rev()
        .map(memtable_entry)
        .find(|e| wanted(e))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::io::FsStorage;

    #[test]
    fn stream_hash_is_stable() {
        // Part of the on-disk format: these values must never change.
        assert_eq!(stream_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(stream_hash("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(stream_check("account-42"), crc32fast::hash(b"account-42"));
    }

    #[test]
    fn entries_after_walks_every_source_in_key_order_batch_by_batch() {
        let dir = tempfile::tempdir().unwrap();
        let storage: Arc<dyn Storage> = Arc::new(FsStorage);
        // Every stream collides, so entries of three streams interleave under one key.
        let (idx, _) =
            Index::open(storage, dir.path(), Hashing::ForcedCollisions, 5, false).unwrap();
        let mut pos = 100;
        let mut expect = Vec::new();
        for v in 0..62u64 {
            let stream = ["a", "b", "c"][(v % 3) as usize];
            idx.record(stream, v / 3, 1, pos, 0, None);
            expect.push((v / 3, pos));
            pos += 10;
            if idx.memtable_full() {
                // The previous frozen memtable becomes a table; this one stays frozen.
                if idx.has_frozen() {
                    idx.flush_frozen().unwrap();
                    while idx.merge_once().unwrap() {}
                }
                assert!(idx.freeze(pos));
            }
        }
        assert!(idx.table_count() >= 1 && idx.has_frozen() && idx.memtable_len() > 0);
        expect.sort_unstable();
        for limit in [1, 2, 7, 128] {
            let mut got = Vec::new();
            let mut after = Entry {
                hash: 0,
                first_version: 0,
                position: 0,
                count: 0,
                check: 0,
                committed_at_us: None,
            };
            loop {
                let batch = idx
                    .entries_after(0, 0, after.first_version, after.position, limit)
                    .unwrap();
                let Some(last) = batch.last() else { break };
                after = *last;
                got.extend(batch.iter().map(|e| (e.first_version, e.position)));
            }
            assert_eq!(got, expect, "limit {limit}");
        }
        // Another check value sees nothing.
        assert!(idx.entries_after(0, 1, 0, 0, 10).unwrap().is_empty());
    }

    #[test]
    fn lookups_see_memtable_frozen_and_tables_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let storage: Arc<dyn Storage> = Arc::new(FsStorage);
        let (idx, report) = Index::open(
            Arc::clone(&storage),
            dir.path(),
            Hashing::Standard,
            4,
            false,
        )
        .unwrap();
        assert_eq!(report.covered_position, 0);
        let (h, c) = idx.keys("s");
        let mut pos = 100;
        for v in (0..40).step_by(2) {
            // Commit times of either kind: recorded, and format 1's.
            let time = if v % 4 == 0 {
                i64::MIN
            } else {
                v as i64 * 1000
            };
            idx.record("s", v, 2, pos, v as u32, Some(time));
            pos += 10;
            if idx.memtable_full() {
                assert!(idx.freeze(pos));
                idx.flush_frozen().unwrap();
                while idx.merge_once().unwrap() {}
            }
        }
        assert!(idx.table_count() <= 4, "tables: {}", idx.table_count());
        let time_of = |first: u64| {
            if first.is_multiple_of(4) {
                i64::MIN
            } else {
                first as i64 * 1000
            }
        };
        for v in 0..40u64 {
            let e = idx.floor(h, c, v, &[]).unwrap().unwrap();
            assert_eq!(e.first_version, v / 2 * 2);
            assert_eq!(e.committed_at_us, Some(time_of(e.first_version)));
        }
        assert_eq!(idx.floor(h, c ^ 1, 5, &[]).unwrap(), None);
        let last = idx.floor(h, c, u64::MAX, &[]).unwrap().unwrap();
        assert_eq!(last.first_version, 38);
        assert_eq!(idx.totals().events, 40);
        let covered = idx.manifest().covered_position;
        drop(idx);
        let (idx, report) = Index::open(storage, dir.path(), Hashing::Standard, 4, false).unwrap();
        assert_eq!(report.covered_position, covered);
        assert!(report.rebuilt.is_none());
        for v in 0..40u64 {
            let e = idx.floor(h, c, v, &[]).unwrap().unwrap();
            assert_eq!(e.first_version, v / 2 * 2);
            assert_eq!(
                e.committed_at_us,
                Some(time_of(e.first_version)),
                "after reopen"
            );
        }
    }
}
