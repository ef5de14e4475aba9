//! The `snapshot` layer: snapshot segment files and lookup of the latest snapshot of a
//! stream. Knows nothing of aggregates or replay policy (that is the store's).
//!
//! Layout: `snapshots/CURRENT` names the live generation; `snapshots/<generation>/` holds a
//! log of snapshot frames (`segments/`, segment kind 2) and its index (`index/`), keyed by
//! (stream hash, snapshot version) like the event index. Reclamation writes a new
//! generation holding the latest K snapshots of each stream, then switches `CURRENT`
//! atomically and removes the old generation.
//!
//! Snapshots are a cache: writes are not synced one by one (a clean close syncs them);
//! after a crash the latest ones may be gone, and a damaged snapshot log is discarded and
//! reported, never a reason to fail an open or a read.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};

use crate::error::{Error, Result};
use crate::format::{
    self, FRAME_HEADER_LEN, FrameHeader, FrameKind, SEGMENT_KIND_SNAPSHOTS, SnapshotBody,
};
use crate::index::{Hashing, Index, IndexedLogFiles, open_indexed_log};
use crate::io::Storage;
use crate::log::{Appender, Damage, Log};
use crate::segment::FrameBytes;

/// Name of the file naming the live generation.
pub const CURRENT_FILE: &str = "CURRENT";
const CURRENT_TMP_FILE: &str = "CURRENT.tmp";
/// Index entries kept in memory before a flush (snapshots are few).
const MEMTABLE_ENTRIES: usize = 4096;
/// Most candidate snapshots one lookup examines before giving up (bounded time).
const MAX_CANDIDATES: usize = 16;

/// A stored snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The stream.
    pub stream: String,
    /// The stream version the state includes.
    pub version: u64,
    /// Schema tag of the encoding.
    pub schema: String,
    /// The encoded state.
    pub data: Vec<u8>,
}

/// What opening the snapshot store found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SnapshotReport {
    /// The live generation.
    pub generation: u64,
    /// Snapshot frames found.
    pub snapshots: u64,
    /// Why the snapshot log was discarded, if it was (snapshots are a cache).
    pub discarded: Option<String>,
    /// Bytes of a torn tail cut off.
    pub truncated_bytes: u64,
}

/// What a verification of the snapshot files found ([`VerifyReport::snapshots`]
/// (crate::VerifyReport::snapshots)): every frame of the live generation checked (CRC,
/// position, structure), going on past damage, and damage classified as in the event
/// log. Snapshots are a cache: damage here loses no event (a load passes over a damaged
/// snapshot and replays), and a scavenge rewrites the files without it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SnapshotCheck {
    /// The live generation checked (0: none).
    pub generation: u64,
    /// Snapshot segment files checked.
    pub segments: usize,
    /// Valid snapshot frames.
    pub frames: u64,
    /// Bytes of valid frames.
    pub bytes: u64,
    /// Every damaged place: corruption, and a torn tail (the unattested end a crash left,
    /// which a writer's open cuts).
    pub damage: Vec<Damage>,
    /// Disagreements between the snapshot index and the frames (a damaged index table
    /// hides snapshots from every lookup), which a scavenge mends by rewriting the files.
    pub index_problems: Vec<String>,
    /// Why the files' open gave up the live generation (a damaged or lost `CURRENT`, a
    /// generation that does not open): a writer's open starts a new generation then.
    pub discarded: Option<String>,
    /// Why the files were not checked: written by a newer streamlog.
    pub not_checked: Option<String>,
}

impl SnapshotCheck {
    /// Damage that is corruption, not a torn tail.
    pub fn corruption(&self) -> impl Iterator<Item = &Damage> {
        self.damage.iter().filter(|d| !d.torn_tail)
    }

    /// Whether nothing at all was found: no damage (a torn tail included, as in
    /// [`VerifyReport::is_clean`](crate::VerifyReport::is_clean)) and no generation
    /// discarded.
    pub fn is_clean(&self) -> bool {
        self.damage.is_empty() && self.index_problems.is_empty() && self.discarded.is_none()
    }
}

#[derive(Debug)]
struct Generation {
    id: u64,
    log: Arc<Log>,
    index: Index,
    appender: Mutex<Appender>,
    count: AtomicU64,
}

/// The snapshot files of a store.
#[derive(Debug)]
pub struct SnapshotStore {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    hashing: Hashing,
    segment_size: u64,
    read_only: bool,
    /// The live generation, once opened (see [`SnapshotStore::open`]).
    live: RwLock<Option<Arc<Generation>>>,
    /// Whether the files were opened: `live` is then final until a reclamation.
    opened: AtomicBool,
    /// Serializes the first use's opening of the files, and holds what it found.
    opening: Mutex<SnapshotReport>,
    /// Serializes saves and reclamation.
    write: Mutex<()>,
}

impl SnapshotStore {
    /// The snapshot files in `dir`, opened (and created unless `read_only`) at their
    /// first use, not here: an open of the store after a crash reads none of their
    /// directories and files, which on a cold page cache are several waits for the disk.
    /// Damage found then is reported ([`SnapshotStore::report`]), never returned: a
    /// snapshot log that does not open is discarded.
    pub fn open(
        storage: Arc<dyn Storage>,
        dir: &Path,
        hashing: Hashing,
        segment_size: u64,
        read_only: bool,
    ) -> SnapshotStore {
        SnapshotStore {
            storage,
            dir: dir.to_path_buf(),
            hashing,
            segment_size,
            read_only,
            live: RwLock::new(None),
            opened: AtomicBool::new(false),
            opening: Mutex::new(SnapshotReport::default()),
            write: Mutex::new(()),
        }
    }

    /// What opening the snapshot files found; opens them if nothing has yet.
    ///
    /// # Errors
    /// As the first use of the files: see [`SnapshotStore::live`].
    pub fn report(&self) -> Result<SnapshotReport> {
        self.live()?;
        Ok(self.opening.lock().clone())
    }

    /// The live generation, opening the files at the first call.
    ///
    /// # Errors
    /// [`Error::UnsupportedFormat`] when the live generation was written in a newer format
    /// (it is left as it is: snapshots are droppable, but not by an older build); I/O
    /// errors that leave the directory unusable (creating a new generation). A failed
    /// open is tried again at the next call.
    fn live(&self) -> Result<Option<Arc<Generation>>> {
        if !self.opened.load(Ordering::Acquire) {
            let mut report = self.opening.lock();
            if !self.opened.load(Ordering::Acquire) {
                let mut found = SnapshotReport::default();
                let generation = self.open_live(&mut found)?;
                *self.live.write() = generation.map(Arc::new);
                *report = found;
                self.opened.store(true, Ordering::Release);
            }
        }
        Ok(self.live.read().clone())
    }

    fn open_live(&self, report: &mut SnapshotReport) -> Result<Option<Generation>> {
        let current = match self.read_current() {
            Ok(current) => current,
            Err(why) => {
                report.discarded = Some(why);
                None
            }
        };
        match current {
            // No `CURRENT` while generations past the first are there: it was lost (the
            // first generation alone may be the debris of its own creation, cut short
            // before `CURRENT` was written, and is taken up as it is).
            None if report.discarded.is_none() => {
                let highest = self.highest_generation();
                if highest > 1 {
                    report.discarded = Some(format!(
                        "{} is missing while generation directories up to {highest} are present",
                        self.dir.join(CURRENT_FILE).display()
                    ));
                }
            }
            // A generation `CURRENT` names but whose directory is gone is damage to
            // report, not a new generation to start quietly under its name.
            Some(id) => {
                let dir = self.generation_dir(id);
                if !self.storage.exists(&dir).unwrap_or(true) {
                    report.discarded = Some(format!(
                        "{} names generation {id}, whose directory {} is missing",
                        self.dir.join(CURRENT_FILE).display(),
                        dir.display()
                    ));
                }
            }
            None => {}
        }
        let generation = match current.filter(|_| report.discarded.is_none()) {
            Some(id) => match self.open_generation(id, report) {
                Ok(g) => Some(g),
                Err(e @ Error::UnsupportedFormat { .. }) => return Err(e),
                Err(e) => {
                    report.discarded = Some(e.to_string());
                    None
                }
            },
            None => None,
        };
        let generation = match (generation, self.read_only) {
            (Some(g), _) => Some(g),
            (None, true) => None,
            (None, false) => {
                // After damage, a number no directory holds: nothing of unknown standing is
                // taken up (and `remove_other_generations` clears it away).
                let id = if report.discarded.is_some() {
                    current
                        .unwrap_or(0)
                        .max(self.highest_generation())
                        .saturating_add(1)
                } else {
                    current.map_or(1, |c| c + 1)
                };
                let dir = self.generation_dir(id);
                let existed = self.storage.exists(&dir).unwrap_or(true);
                match self
                    .open_generation(id, report)
                    .and_then(|g| self.write_current(id).map(|()| g))
                {
                    Ok(g) => Some(g),
                    Err(e) => {
                        // A generation this call created and could not make live goes,
                        // so that retries (every use of the snapshots) do not pile them up.
                        if !existed {
                            let _ = self.remove_tree(&dir);
                        }
                        return Err(e);
                    }
                }
            }
        };
        if let Some(g) = &generation {
            report.generation = g.id;
            report.snapshots = g.count.load(Ordering::Relaxed);
            if !self.read_only {
                self.remove_other_generations(g.id)?;
            }
        }
        Ok(generation)
    }

    /// The highest number of a generation directory present (0: none).
    fn highest_generation(&self) -> u64 {
        self.storage
            .list(&self.dir)
            .unwrap_or_default()
            .iter()
            .filter_map(|n| generation_number(n))
            .max()
            .unwrap_or(0)
    }

    fn generation_dir(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id:020}"))
    }

    /// The generation `CURRENT` names: `None` when there is no `CURRENT` (no snapshot was
    /// ever saved), `Err` saying why when it does not name one.
    fn read_current(&self) -> std::result::Result<Option<u64>, String> {
        let path = self.dir.join(CURRENT_FILE);
        let bad = |why: &str| format!("{} {why}", path.display());
        match self.storage.exists(&path) {
            Ok(true) => {}
            Ok(false) => return Ok(None),
            Err(e) => return Err(bad(&format!("cannot be looked up: {e}"))),
        }
        let file = self
            .storage
            .open_read_only(&path)
            .map_err(|e| bad(&format!("does not open: {e}")))?;
        let mut buf = [0u8; 32];
        let n = file
            .read_at(&mut buf, 0)
            .map_err(|e| bad(&format!("does not read: {e}")))?;
        std::str::from_utf8(buf.get(..n).unwrap_or_default())
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .map(Some)
            .ok_or_else(|| bad("does not name a generation"))
    }

    fn write_current(&self, id: u64) -> Result<()> {
        let tmp = self.dir.join(CURRENT_TMP_FILE);
        let ctx = |what: &str| format!("{what} {}", tmp.display());
        if self
            .storage
            .exists(&tmp)
            .map_err(|e| Error::io(ctx("stat"), e))?
        {
            self.storage
                .remove(&tmp)
                .map_err(|e| Error::io(ctx("remove"), e))?;
        }
        let f = self
            .storage
            .create(&tmp)
            .map_err(|e| Error::io(ctx("create"), e))?;
        f.write_at(format!("{id}\n").as_bytes(), 0)
            .map_err(|e| Error::io(ctx("write"), e))?;
        f.sync_data().map_err(|e| Error::io(ctx("sync"), e))?;
        self.storage
            .rename(&tmp, &self.dir.join(CURRENT_FILE))
            .map_err(|e| Error::io(ctx("rename"), e))?;
        self.storage
            .sync_dir(&self.dir)
            .map_err(|e| Error::io(format!("sync {}", self.dir.display()), e))
    }

    fn open_generation(&self, id: u64, report: &mut SnapshotReport) -> Result<Generation> {
        let dir = self.generation_dir(id);
        let segments = dir.join("segments");
        if !self.read_only {
            crate::io::create_dir_durably(self.storage.as_ref(), &segments)
                .map_err(|e| Error::io(format!("create {}", segments.display()), e))?;
        }
        let files = IndexedLogFiles {
            index_dir: &dir.join("index"),
            segments_dir: &segments,
            kind: SEGMENT_KIND_SNAPSHOTS,
            segment_size: self.segment_size,
            memtable_entries: MEMTABLE_ENTRIES,
            hashing: self.hashing,
            read_only: self.read_only,
            rebuild: false,
            read_limit: None,
            covered_is_attested: false,
        };
        let (index, log, recovery, index_report) =
            open_indexed_log(&self.storage, files, snapshot_key, &mut |_| {})?;
        // What a crash left only in the OS cache is not synced here: a snapshot is readable
        // before it is durable anyway (see `save`), and the next sync covers it.
        let replayed = index_report.replayed_frames;
        report.truncated_bytes = recovery.truncated.map_or(0, |t| t.bytes_dropped);
        // The index's totals count covered snapshots plus the replayed ones.
        let count = index.totals().appends.max(replayed);
        let log = Arc::new(log);
        Ok(Generation {
            id,
            appender: Mutex::new(log.appender()),
            log,
            index,
            count: AtomicU64::new(count),
        })
    }

    fn remove_other_generations(&self, live: u64) -> Result<()> {
        let names = self
            .storage
            .list(&self.dir)
            .map_err(|e| Error::io(format!("list {}", self.dir.display()), e))?;
        for name in names {
            if generation_number(&name).is_some_and(|id| id != live) {
                self.remove_tree(&self.dir.join(name))?;
            }
        }
        Ok(())
    }

    fn remove_tree(&self, dir: &Path) -> Result<()> {
        let io = |what: &str, p: &Path, e| Error::io(format!("{what} {}", p.display()), e);
        for sub in ["segments", "index"] {
            let d = dir.join(sub);
            if let Ok(names) = self.storage.list(&d) {
                for n in names {
                    let p = d.join(n);
                    self.storage.remove(&p).map_err(|e| io("remove", &p, e))?;
                }
                self.storage
                    .remove_dir(&d)
                    .map_err(|e| io("remove", &d, e))?;
            }
        }
        self.storage
            .remove_dir(dir)
            .map_err(|e| io("remove", dir, e))?;
        self.storage
            .sync_dir(&self.dir)
            .map_err(|e| io("sync", &self.dir, e))
    }

    /// Stores a snapshot. It is readable at once and durable after the next
    /// [`SnapshotStore::sync`] (a clean close syncs).
    ///
    /// # Errors
    /// [`Error::ReadOnly`], [`Error::TooLarge`] beyond the frame limit, I/O errors.
    pub fn save(&self, snapshot: &SnapshotBody<'_>, max_frame_bytes: u64) -> Result<()> {
        // The generation is taken under the lock that reclamation holds while it replaces
        // it: a save never goes into a generation that is being left behind.
        let _w = self.write.lock();
        let g = self.live()?.ok_or(Error::ReadOnly)?;
        let len = format::snapshot_body_len(snapshot).saturating_add(FRAME_HEADER_LEN as u64);
        if len > max_frame_bytes {
            return Err(Error::TooLarge {
                what: "max_frame_bytes",
                size: len,
                limit: max_frame_bytes,
            });
        }
        Self::append(&g, snapshot, len)?;
        if g.index.memtable_full() {
            g.log.sync()?;
            g.index.freeze(g.appender.lock().head());
            g.index.flush_frozen()?;
            while g.index.merge_once()? {}
        }
        Ok(())
    }

    fn append(g: &Generation, snapshot: &SnapshotBody<'_>, len: u64) -> Result<()> {
        let mut appender = g.appender.lock();
        let watermark = g.log.durable();
        let (position, buf) = appender.reserve(len);
        let crc = format::encode_snapshot_frame(buf, position, watermark, snapshot).crc;
        let chunks = appender.take();
        g.log.write(&chunks)?;
        appender.recycle(chunks);
        g.index
            .record(snapshot.stream, snapshot.version, 1, position, crc, None);
        g.count.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The newest snapshot of `stream` at or below version `max_version` that `accept`
    /// takes, looking at most at a bounded number of candidates. Candidates that are
    /// damaged, newer than `max_version`, or refused are listed in the second value.
    ///
    /// # Errors
    /// None for damage (it is reported); only a failure to even look (index I/O).
    pub fn latest(
        &self,
        stream: &str,
        max_version: u64,
        accept: impl Fn(&SnapshotBody<'_>) -> std::result::Result<(), String>,
    ) -> Result<(Option<Snapshot>, Vec<String>)> {
        self.search(stream, max_version, false, accept)
    }

    /// [`SnapshotStore::latest`] looking only at snapshots at or below `max_version`
    /// (for a load as of a version in the past: later snapshots are not candidates, and
    /// are not reported).
    ///
    /// # Errors
    /// As [`SnapshotStore::latest`].
    pub fn latest_at_or_below(
        &self,
        stream: &str,
        max_version: u64,
        accept: impl Fn(&SnapshotBody<'_>) -> std::result::Result<(), String>,
    ) -> Result<(Option<Snapshot>, Vec<String>)> {
        self.search(stream, max_version, true, accept)
    }

    fn search(
        &self,
        stream: &str,
        max_version: u64,
        below_only: bool,
        accept: impl Fn(&SnapshotBody<'_>) -> std::result::Result<(), String>,
    ) -> Result<(Option<Snapshot>, Vec<String>)> {
        let mut ignored = Vec::new();
        let Some(g) = self.live()? else {
            return Ok((None, ignored));
        };
        let (hash, check) = g.index.keys(stream);
        let mut exclude = Vec::new();
        // From the bound down, so that snapshots after it never use up the candidates: a
        // reader beside a writer sees the stream a little behind the snapshots the writer
        // saves, and a log restored from a backup is behind its snapshots. The newest
        // snapshot past the bound is reported (one lookup), unless the search is of a
        // version in the past, where later snapshots are expected.
        if !below_only
            && max_version < u64::MAX
            && let Some(newer) = Self::newest_after(&g, stream, hash, check, max_version)
        {
            ignored.push(format!(
                "snapshot at version {newer} is newer than the stream (version {max_version})"
            ));
        }
        let mut version = max_version;
        for _ in 0..MAX_CANDIDATES {
            let entry = match g.index.floor(hash, check, version, &exclude) {
                Ok(Some(e)) => e,
                Ok(None) => break,
                Err(e) => {
                    ignored.push(format!("snapshot index: {e}"));
                    break;
                }
            };
            exclude.push(entry.position);
            let frame = match g.log.read_frame(entry.position, g.log.written()) {
                Ok((_, bytes)) => bytes,
                Err(e) => {
                    ignored.push(format!("snapshot at version {}: {e}", entry.first_version));
                    continue;
                }
            };
            let body = match format::decode_snapshot_body(frame.body()) {
                Ok(b) if b.stream == stream => b,
                Ok(_) => continue, // another stream sharing the keys
                Err(e) => {
                    ignored.push(format!("snapshot at version {}: {e}", entry.first_version));
                    continue;
                }
            };
            if body.version > max_version {
                // The index bounds the version: only a damaged index gets here. Never
                // offered: its state would hold events the reader does not have.
                continue;
            }
            if let Err(why) = accept(&body) {
                ignored.push(format!("snapshot at version {}: {why}", body.version));
                version = body.version;
                continue;
            }
            return Ok((
                Some(Snapshot {
                    stream: body.stream.to_string(),
                    version: body.version,
                    schema: body.schema.to_string(),
                    data: body.payload.to_vec(),
                }),
                ignored,
            ));
        }
        Ok((None, ignored))
    }

    /// The version of the newest snapshot of `stream` after `version`, if its frame reads
    /// (a damaged one is left to the search to report, if it ever gets there).
    fn newest_after(
        g: &Generation,
        stream: &str,
        hash: u64,
        check: u32,
        version: u64,
    ) -> Option<u64> {
        let mut exclude = Vec::new();
        for _ in 0..MAX_CANDIDATES {
            let entry = g.index.floor(hash, check, u64::MAX, &exclude).ok()??;
            if entry.first_version <= version {
                return None;
            }
            exclude.push(entry.position);
            let (_, frame) = g.log.read_frame(entry.position, g.log.written()).ok()?;
            match format::decode_snapshot_body(frame.body()) {
                Ok(b) if b.stream == stream => return Some(b.version),
                // Another stream sharing the keys: look further down.
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
        None
    }

    /// Checks every frame of the live generation's files, going on past damage
    /// ([`SnapshotCheck`]). Never writes: a writer whose files are open checks what it
    /// wrote; otherwise the files are opened read-only, afresh, and everything in them is
    /// checked (a live writer's unfinished frame at their end is then a torn tail, not
    /// corruption).
    ///
    /// # Errors
    /// I/O errors; files of a newer format are not an error but
    /// [`SnapshotCheck::not_checked`].
    pub fn verify(&self, progress: &mut dyn FnMut(u64)) -> Result<SnapshotCheck> {
        if !self.read_only && self.opened.load(Ordering::Acquire) {
            return self.verify_opened(progress);
        }
        // A writer's first use of the files would open them for writing (creating them,
        // cutting a torn tail, replacing a damaged generation): a check never writes, so
        // it opens them read-only, afresh. Beside a writer (another process) that
        // replaces the generation meanwhile, the files it found may vanish under it: when
        // `CURRENT` changed during a check that found the generation unusable, it looks
        // again, once.
        let mut again = true;
        loop {
            let fresh = SnapshotStore::open(
                Arc::clone(&self.storage),
                &self.dir,
                self.hashing,
                self.segment_size,
                true,
            );
            let before = fresh.read_current();
            let check = fresh.verify_opened(progress)?;
            if again && check.discarded.is_some() && fresh.read_current() != before {
                again = false;
                continue;
            }
            return Ok(check);
        }
    }

    /// [`SnapshotStore::verify`] of this store's own view of the files: the frames its
    /// writer wrote, or (read-only) everything the files hold, with what opening them
    /// found discarded.
    fn verify_opened(&self, progress: &mut dyn FnMut(u64)) -> Result<SnapshotCheck> {
        let mut check = SnapshotCheck::default();
        let live = match self.live() {
            Ok(live) => live,
            Err(e @ Error::UnsupportedFormat { .. }) => {
                check.not_checked = Some(e.to_string());
                return Ok(check);
            }
            Err(e) => return Err(e),
        };
        // A writer replaced what its open discarded (`snapshot_report` tells of it): only
        // a read-only open reports damage still on disk.
        if self.read_only {
            check.discarded = self.opening.lock().discarded.clone();
        }
        let Some(g) = live else {
            return Ok(check);
        };
        let limit = if self.read_only {
            u64::MAX
        } else {
            g.log.written()
        };
        let mut report = g.log.verify(limit, progress, |_, _| 0)?;
        // The log's rule calls damage past the last attested frame a torn tail, which an
        // open cuts. But an open replays (and so cuts) only what the index does not cover,
        // and snapshot frames are attested only by frames of a later open (no checkpoint
        // closes a snapshot log): damage the index covers stays until a scavenge
        // rewrites the files, so it is corruption.
        let covered = g.index.manifest().covered_position;
        for d in &mut report.damage {
            let base = d
                .file
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(crate::segment::parse_segment_file_name);
            if base.is_some_and(|b| b.saturating_add(d.offset) < covered) {
                d.torn_tail = false;
            }
        }
        check.index_problems = Self::index_problems(&g, limit, &mut |_, _| {})?.0;
        check.generation = g.id;
        check.segments = report.segments;
        check.frames = report.frames;
        check.bytes = report.bytes;
        check.damage = report.damage;
        Ok(check)
    }

    /// What is wrong between a generation's index and its intact frames below `limit`.
    /// Walks the generation's intact frames below `limit` once, showing each to `also`:
    /// returns what is wrong between its index and those frames, and whether any frame
    /// was damaged.
    fn index_problems(
        g: &Generation,
        limit: u64,
        also: &mut dyn FnMut(&FrameHeader, &FrameBytes),
    ) -> Result<(Vec<String>, bool)> {
        let end = limit.min(g.log.written());
        let mut damaged = false;
        let problems = g.index.check_against_log(end, |visit| {
            g.log.walk_intact(
                end,
                &mut |h, bytes| {
                    also(h, bytes);
                    if let Some((stream, version, count)) = snapshot_key(h, bytes.body()) {
                        visit(stream, version, count, h.position);
                    }
                    Ok(())
                },
                &mut |_, _, _| damaged = true,
            )?;
            Ok(damaged)
        })?;
        Ok((problems, damaged))
    }

    /// Makes every saved snapshot durable and the index of them persistent.
    ///
    /// # Errors
    /// I/O errors.
    pub fn sync(&self) -> Result<()> {
        // Files not opened yet hold nothing this process wrote.
        if !self.opened.load(Ordering::Acquire) {
            return Ok(());
        }
        let Some(g) = self.live()? else {
            return Ok(());
        };
        if self.read_only {
            return Ok(());
        }
        let _w = self.write.lock();
        g.log.sync()?;
        if g.index.freeze(g.appender.lock().head()) {
            g.index.flush_frozen()?;
        }
        Ok(())
    }

    /// Snapshots stored and the bytes of their segment files.
    ///
    /// # Errors
    /// I/O errors reading file sizes.
    pub fn stats(&self) -> Result<(u64, u64)> {
        let Some(g) = self.live()? else {
            return Ok((0, 0));
        };
        let bytes = g.log.segment_files()?.iter().map(|(_, l)| l).sum();
        Ok((g.count.load(Ordering::Relaxed), bytes))
    }

    /// Rewrites the snapshot files keeping only the latest `keep` snapshots of each
    /// stream: a new generation is written and synced, `CURRENT` is switched to it
    /// atomically, and the old generation is removed. A crash at any point leaves either
    /// generation whole. Reads go on against the old generation until the switch; saves
    /// wait. Returns (snapshots kept, snapshots dropped).
    ///
    /// # Errors
    /// I/O errors (the old generation stays in force).
    pub fn reclaim(&self, keep: usize) -> Result<(u64, u64)> {
        self.reclaim_filtered(keep, &|_, _| false)
    }

    /// [`SnapshotStore::reclaim`] that also drops every snapshot `drop_snapshot(stream, version)`
    /// names (of hard-deleted or erased streams, or of versions a scavenge removed).
    /// Writes nothing when there is nothing to drop and `keep` is `usize::MAX`.
    ///
    /// # Errors
    /// As [`SnapshotStore::reclaim`].
    pub fn reclaim_filtered(
        &self,
        keep: usize,
        drop_snapshot: &dyn Fn(&str, u64) -> bool,
    ) -> Result<(u64, u64)> {
        let Some(old) = self.live()? else {
            return Ok((0, 0));
        };
        if keep == usize::MAX {
            // A damaged frame is a reason to rewrite too: it may be of a stream being
            // erased (its name cannot be read to tell), and the rewrite leaves it out.
            // A damaged index hides snapshots from every lookup: the rewrite makes a new
            // one. (One walk of the frames finds all three reasons.)
            let mut any = false;
            let (problems, damaged) =
                Self::index_problems(&old, old.log.written(), &mut |h, bytes| {
                    any = any
                        || (h.kind == FrameKind::Snapshot
                            && format::decode_snapshot_body(bytes.body())
                                .is_ok_and(|b| drop_snapshot(b.stream, b.version)));
                })?;
            if !any && !damaged && problems.is_empty() {
                return Ok((old.index.totals().appends, 0));
            }
        }
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        let _w = self.write.lock();
        old.log.sync()?;
        let id = old.id + 1;
        let new_dir = self.generation_dir(id);
        if self
            .storage
            .exists(&new_dir)
            .map_err(|e| Error::io(format!("stat {}", new_dir.display()), e))?
        {
            self.remove_tree(&new_dir)?;
        }
        let new = self.open_generation(id, &mut SnapshotReport::default())?;
        let (mut kept, mut dropped, mut damaged) = (0u64, 0u64, 0u64);
        // Damaged frames are left out (and counted as dropped): snapshots are a cache,
        // and a damaged one must not stop every later rewrite, an erasure's included.
        old.log.walk_intact(
            old.log.written(),
            &mut |h, bytes| {
                if h.kind != FrameKind::Snapshot {
                    return Ok(());
                }
                let Ok(body) = format::decode_snapshot_body(bytes.body()) else {
                    dropped += 1;
                    return Ok(());
                };
                if !drop_snapshot(body.stream, body.version)
                    && (keep == usize::MAX || Self::among_latest(&old, &body, h.position, keep)?)
                {
                    let len =
                        format::snapshot_body_len(&body).saturating_add(FRAME_HEADER_LEN as u64);
                    Self::append(&new, &body, len)?;
                    kept += 1;
                } else {
                    dropped += 1;
                }
                Ok(())
            },
            &mut |_, _, _| damaged += 1,
        )?;
        dropped = dropped.saturating_add(damaged);
        new.log.sync()?;
        if new.index.freeze(new.appender.lock().head()) {
            new.index.flush_frozen()?;
        }
        self.write_current(id)?;
        *self.live.write() = Some(Arc::new(new));
        drop(old);
        self.remove_tree(&self.generation_dir(id - 1))?;
        Ok((kept, dropped))
    }

    /// Whether the snapshot at `position` is among the `keep` latest of its stream.
    fn among_latest(
        g: &Generation,
        body: &SnapshotBody<'_>,
        position: u64,
        keep: usize,
    ) -> Result<bool> {
        let (hash, check) = g.index.keys(body.stream);
        let mut exclude = Vec::new();
        let mut found = 0usize;
        while found < keep {
            let Some(e) = g.index.floor(hash, check, u64::MAX, &exclude)? else {
                return Ok(false);
            };
            if e.position == position {
                return Ok(true);
            }
            exclude.push(e.position);
            // Entries of another stream sharing the keys do not count, nor damaged frames
            // (the rewrite leaves them out).
            let bytes = match g.log.read_frame(e.position, g.log.written()) {
                Ok((_, bytes)) => bytes,
                Err(Error::Corrupted { .. }) => continue,
                Err(e) => return Err(e),
            };
            if format::decode_snapshot_body(bytes.body()).is_ok_and(|b| b.stream == body.stream) {
                found += 1;
            }
        }
        Ok(false)
    }
}

/// The index key of a snapshot frame: its stream and the version its state includes.
fn snapshot_key<'b>(header: &FrameHeader, body: &'b [u8]) -> Option<(&'b str, u64, u32)> {
    if header.kind != FrameKind::Snapshot {
        return None;
    }
    format::decode_snapshot_body(body)
        .ok()
        .map(|b| (b.stream, b.version, 1))
}

/// The number of a generation directory's name (20 decimal digits, as `generation_dir`
/// writes it); `None` for any other name.
fn generation_number(name: &str) -> Option<u64> {
    if name.len() == 20 && name.bytes().all(|b| b.is_ascii_digit()) {
        name.parse().ok()
    } else {
        None
    }
}
