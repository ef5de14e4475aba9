//! The `log` layer: the ordered set of segments, rollover, position → segment, the written
//! and durable watermarks, and recovery of the tail. Knows frames, not streams.
//!
//! Positions are continuous across segments: a segment whose file is `n` bytes long and
//! starts at `base` is followed by the segment starting at `base + n`.
//!
//! - `appender`: the writer's end (positions, encoded bytes not yet written);
//! - `recovery`: opening, and the recovery rule;
//! - `verify`: checking every frame without writing;
//! - `frames`: walking frames in order.

mod appender;
mod cut;
mod frames;
mod recovery;
mod sync_times;
mod verify;

pub use appender::{Appender, Chunk};
pub use frames::LogFrames;
pub use recovery::{Known, LogRecovery, TailKind, TruncatedTail};
pub(crate) use recovery::{check_covered, list_segment_files, open_segments};
pub use sync_times::{SYNC_BUCKET_BOUNDS_US, SyncStats};
pub(crate) use verify::verify_segments;
pub use verify::{Damage, VerifyReport};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};

use crate::error::{Error, Result};
use crate::format::{FrameHeader, SEGMENT_HEADER_LEN};
use crate::io::Storage;
use crate::segment::{FrameBytes, Segment};

/// The ordered set of segments.
#[derive(Debug)]
pub struct Log {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    /// Segment file kind of this log.
    kind: u32,
    segment_size: u64,
    read_only: bool,
    segments: RwLock<Vec<Arc<Segment>>>,
    /// Serializes writes and rollover.
    write_lock: Mutex<()>,
    /// End of the bytes handed to the OS.
    written: AtomicU64,
    /// End of the bytes known to be on disk.
    durable: AtomicU64,
    poisoned: AtomicBool,
    /// Zeroed bytes to keep written ahead of `written` in the active segment (0: none).
    preallocate: u64,
    /// End of the active segment's file: `written` plus the zeroed space ahead of it.
    reserved: AtomicU64,
    /// Commits end on multiples of this many bytes of their segment file (0: packed).
    align: u64,
    /// Sequential reads map the active segment's written part too
    /// ([`Log::with_active_mapping`]); the log then refuses [`Log::truncate_to`].
    map_active: bool,
    /// How long the commit syncs took.
    sync_times: sync_times::SyncTimes,
}

impl Log {
    /// Keeps `bytes` of zeros written ahead of the log's end in the active segment, so
    /// that appends overwrite allocated blocks instead of growing the file: an `fdatasync`
    /// then flushes data only, while one that follows a size change also commits the file
    /// system's journal. For logs synced after every append; elsewhere it only doubles
    /// the bytes written. The zeros are cut off when a segment is sealed and at
    /// [`Log::trim`]; after a crash, recovery cuts them as a zero-filled tail.
    pub fn with_preallocation(mut self, bytes: u64) -> Self {
        if !self.read_only {
            self.preallocate = bytes;
        }
        self
    }

    /// Lets sequential reads ([`Log::frames`]) of the active segment go through a memory
    /// map of its written part, as they do for sealed segments, instead of copying it out
    /// of the page cache with `pread`. For a writer's log whose written bytes are never
    /// cut while it is open (the event log): a mapped page cut from its file would fault
    /// on access, so such a log refuses [`Log::truncate_to`]. A read-only log never maps
    /// its active segment: the writer that owns it may cut its zeroed tail at any time.
    pub fn with_active_mapping(mut self) -> Self {
        self.map_active = !self.read_only;
        self
    }

    /// Makes the writer's commits sector-aligned: new segments start their first frame at
    /// `bytes` (the header padded up to it), and the writer starts a new segment rather
    /// than append to one whose end is not on such a boundary (see
    /// [`Appender::reserve_padding`] for the commits themselves).
    pub fn with_commit_alignment(mut self, bytes: u64) -> Self {
        if !self.read_only {
            self.align = bytes;
        }
        self
    }

    /// Where a new segment's first frame starts, relative to its base.
    fn first_frame_offset(&self) -> u64 {
        self.align.max(SEGMENT_HEADER_LEN as u64)
    }

    /// Cuts the zeroed space ahead of the log's end and syncs (at a clean close, so that
    /// the next open finds the log ending at its last frame).
    ///
    /// # Errors
    /// [`Error::Poisoned`] if the log is; the I/O error otherwise.
    pub fn trim(&self) -> Result<()> {
        if self.preallocate == 0 {
            return Ok(());
        }
        if self.is_poisoned() {
            return Err(Error::Poisoned);
        }
        let _guard = self.write_lock.lock();
        let end = self.written();
        if self.reserved.load(Ordering::Acquire) <= end {
            return Ok(());
        }
        let active = self.active()?;
        active
            .truncate(end.saturating_sub(active.base()))
            .and_then(|()| active.sync())
            .map_err(|e| self.poison(e))?;
        self.reserved.store(end, Ordering::Release);
        Ok(())
    }

    /// After a write that ends at `end`: tops up the zeroed space ahead of it when less
    /// than half of [`Log::with_preallocation`]'s amount is left.
    fn reserve_ahead(&self, active: &Segment, end: u64) -> Result<()> {
        let reserved = self.reserved.load(Ordering::Acquire);
        if self.preallocate == 0 || end.saturating_add(self.preallocate / 2) <= reserved {
            return Ok(());
        }
        let cap = active.base().saturating_add(self.segment_size);
        let target = end.saturating_add(self.preallocate).min(cap);
        let from = reserved.max(end);
        if target <= from {
            return Ok(());
        }
        let zeros = vec![0u8; usize::try_from(target - from).unwrap_or(0)];
        active.write_at(&zeros, from.saturating_sub(active.base()))?;
        self.reserved.store(target, Ordering::Release);
        Ok(())
    }

    /// An appender positioned at the end of the log.
    pub fn appender(&self) -> Appender {
        let segments = self.segments.read();
        let active_base = segments.last().map_or(0, |s| s.base());
        let head = self.written.load(Ordering::Acquire);
        // Never append to a segment of an older format, nor (aligned) after bytes that
        // do not end on a boundary: the next write would touch their last sector.
        let old_format = segments
            .last()
            .and_then(|s| s.version())
            .is_some_and(|v| v < crate::format::FORMAT_VERSION);
        let unaligned =
            self.align > 0 && !head.saturating_sub(active_base).is_multiple_of(self.align);
        Appender {
            segment_size: self.segment_size,
            active_base,
            head,
            chunks: Vec::new(),
            spare: Vec::new(),
            roll_next: old_format || unaligned,
            first_frame_offset: self.first_frame_offset(),
        }
    }

    /// For a read-only log beside a live writer: reads stop at `end` (what the writer
    /// published as visible), whatever lies beyond it in the files.
    pub fn clamp_to(&self, end: u64) {
        if self.read_only {
            self.written.fetch_min(end, Ordering::AcqRel);
            self.durable.fetch_min(end, Ordering::AcqRel);
        }
    }

    /// For a read-only log beside a live writer, the first half of following it: takes in
    /// the segments the writer started meanwhile, up to `end` (the ones before them are
    /// sealed by now: the writer seals a segment before it starts the next), so that
    /// [`Log::frames`] reads up to `end`, without moving the end readers see (the follower
    /// indexes the new frames first; [`Log::publish_followed`] is the second half).
    /// Returns the end readers see; does nothing unless `end` is past it.
    ///
    /// # Errors
    /// I/O errors listing or opening segment files; [`Error::UnsupportedFormat`] for a
    /// segment of a newer format.
    pub fn follow_files(&self, end: u64) -> Result<u64> {
        let old = self.written();
        if !self.read_only || end <= old {
            return Ok(old);
        }
        let last_base = self.active()?.base();
        let known_end = {
            let active = self.active()?;
            active.base().saturating_add(active.file_len()?)
        };
        if end > known_end || end > last_base.saturating_add(self.segment_size) {
            let mut segments = self.segments.write();
            for (base, path) in recovery::list_segment_files(self.storage.as_ref(), &self.dir)? {
                if base <= last_base || base > end {
                    continue;
                }
                if let Some(prev) = segments.last() {
                    prev.seal()?;
                }
                segments.push(Arc::new(Segment::open(
                    self.storage.as_ref(),
                    &path,
                    base,
                    self.kind,
                    true,
                )?));
            }
        }
        Ok(old)
    }

    /// The second half of following a live writer ([`Log::follow_files`]): readers see up
    /// to `end`.
    pub fn publish_followed(&self, end: u64) {
        if self.read_only {
            self.written.fetch_max(end, Ordering::AcqRel);
            self.durable.fetch_max(end, Ordering::AcqRel);
        }
    }

    /// End of the bytes handed to the OS.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    /// End of the bytes known to be on disk.
    pub fn durable(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    /// Whether a write or sync has failed.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    /// Tells the storage that the frames at `positions` (ascending) will be read with
    /// [`Log::read_frame`] soon; see [`Segment::will_read_frames`]. A hint only.
    pub fn will_read_frames(&self, positions: &[u64]) {
        let segments = self.segments.read().clone();
        let mut rest = positions;
        while let Some(&first) = rest.first() {
            let idx = segments.partition_point(|s| s.base() <= first);
            // The positions up to the next segment's base are this segment's.
            let end = segments.get(idx).map_or(u64::MAX, |s| s.base());
            let n = rest.partition_point(|&p| p < end).max(1);
            let (here, after) = rest.split_at(n.min(rest.len()));
            rest = after;
            let Some(seg) = idx.checked_sub(1).and_then(|i| segments.get(i)) else {
                continue;
            };
            if seg.is_compacted() {
                seg.will_read_blocks(here);
            } else {
                let offsets: Vec<u64> =
                    here.iter().map(|&p| p.saturating_sub(seg.base())).collect();
                seg.will_read_frames(&offsets);
            }
        }
    }

    /// Marks the log poisoned; returns the error to pass on.
    fn poison(&self, e: Error) -> Error {
        self.poisoned.store(true, Ordering::Release);
        e
    }

    /// Writes encoded chunks in order, creating new segments where they start. A new
    /// segment is created only after the previous one is synced, so every segment header
    /// attests everything before it.
    ///
    /// # Errors
    /// [`Error::Poisoned`] if the log already is; otherwise the I/O error, which poisons it.
    pub fn write(&self, chunks: &[Chunk]) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        let _guard = self.write_lock.lock();
        for chunk in chunks {
            if self.is_poisoned() {
                return Err(Error::Poisoned);
            }
            let active = self.active()?;
            let active = if active.base() == chunk.segment_base {
                active
            } else {
                self.roll(&active, chunk.segment_base)
                    .map_err(|e| self.poison(e))?
            };
            let offset = chunk.start.saturating_sub(active.base());
            active
                .write_at(&chunk.bytes, offset)
                .map_err(|e| self.poison(e))?;
            let end = chunk.start.saturating_add(chunk.bytes.len() as u64);
            self.written.store(end, Ordering::Release);
            self.reserve_ahead(&active, end)
                .map_err(|e| self.poison(e))?;
        }
        Ok(())
    }

    fn roll(&self, old: &Arc<Segment>, base: u64) -> Result<Arc<Segment>> {
        // A sealed segment ends at its last frame: cut the zeroed space, then sync (the
        // new length is durable before the next segment exists).
        if self.reserved.load(Ordering::Acquire) > base {
            old.truncate(base.saturating_sub(old.base()))?;
        }
        old.sync()?;
        self.durable.fetch_max(self.written(), Ordering::AcqRel);
        old.seal()?;
        let new = Arc::new(Segment::create_aligned(
            self.storage.as_ref(),
            &self.dir,
            base,
            self.kind,
            self.align,
        )?);
        self.segments.write().push(Arc::clone(&new));
        self.reserved.store(
            base.saturating_add(self.first_frame_offset()),
            Ordering::Release,
        );
        Ok(new)
    }

    fn active(&self) -> Result<Arc<Segment>> {
        // `open` guarantees at least one segment, and none is ever removed.
        self.segments
            .read()
            .last()
            .cloned()
            .ok_or_else(|| Error::InvalidArgument("the log has no segment".into()))
    }

    /// Makes everything written so far durable (`fdatasync` of the active segment; older
    /// segments were synced when they were sealed). Returns the new durable position.
    ///
    /// # Errors
    /// [`Error::Poisoned`] if the log already is; otherwise the sync error, which poisons
    /// it: a failed sync is never retried (the kernel may have dropped the dirty pages and
    /// would report the next sync clean).
    pub fn sync(&self) -> Result<u64> {
        if self.is_poisoned() {
            return Err(Error::Poisoned);
        }
        if self.read_only {
            return Ok(self.durable());
        }
        let (active, target) = {
            let _guard = self.write_lock.lock();
            (self.active()?, self.written())
        };
        if target <= self.durable() {
            return Ok(self.durable());
        }
        let started = std::time::Instant::now();
        active.sync().map_err(|e| self.poison(e))?;
        self.sync_times.record(started.elapsed());
        if self.is_poisoned() {
            return Err(Error::Poisoned);
        }
        Ok(self.durable.fetch_max(target, Ordering::AcqRel).max(target))
    }

    /// How long the syncs of [`Log::sync`] took so far.
    pub fn sync_stats(&self) -> SyncStats {
        self.sync_times.stats()
    }

    /// The segment holding logical `position`.
    fn segment_for(&self, position: u64) -> Option<Arc<Segment>> {
        let segments = self.segments.read();
        let idx = segments.partition_point(|s| s.base() <= position);
        segments.get(idx.checked_sub(1)?).cloned()
    }

    /// A sequential reader of `seg` for frames below log position `limit` (written
    /// bytes): through a mapping of the active segment's written part where
    /// [`Log::with_active_mapping`] allows it.
    fn sequential_reader(&self, seg: &Arc<Segment>, limit: u64) -> crate::segment::SegmentReader {
        if self.map_active {
            seg.reader_upto(limit.saturating_sub(seg.base()))
        } else {
            seg.reader()
        }
    }

    /// Reads and checks the frame at `position`, which must end at or below `limit`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when no frame can start there, [`Error::Corrupted`] when
    /// the frame does not check, [`Error::Io`] on read failure.
    pub fn read_frame(&self, position: u64, limit: u64) -> Result<(FrameHeader, FrameBytes)> {
        let seg = self.segment_for(position).ok_or_else(|| {
            Error::InvalidArgument(format!("position {position} is not in the log"))
        })?;
        seg.read_frame(position, limit.saturating_sub(seg.base()))
    }

    /// The first valid frame that starts at or after `position` (any position, not only a
    /// frame's) and ends at or below `limit`, in the segment holding `position`; `None`
    /// when there is none. Frames know their own position and are checked by CRC, so a
    /// match inside another frame's bytes is not taken for a frame.
    ///
    /// # Errors
    /// [`Error::Io`] on read failure.
    pub fn frame_from(
        &self,
        position: u64,
        limit: u64,
    ) -> Result<Option<(FrameHeader, FrameBytes)>> {
        self.frame_from_in(position, limit, false)
    }

    /// [`Log::frame_from`], but a block of a rewritten segment that does not check (where
    /// the next surviving frame would be) is reported as [`Error::Corrupted`] instead of
    /// taken for the end of the segment: for a walk that passes over a rewritten
    /// segment's gaps, which it cannot tell from damage otherwise.
    ///
    /// # Errors
    /// [`Error::Io`] on read failure; [`Error::Corrupted`] as said.
    pub fn frame_from_checked(
        &self,
        position: u64,
        limit: u64,
    ) -> Result<Option<(FrameHeader, FrameBytes)>> {
        self.frame_from_in(position, limit, true)
    }

    fn frame_from_in(
        &self,
        position: u64,
        limit: u64,
        report_damage: bool,
    ) -> Result<Option<(FrameHeader, FrameBytes)>> {
        let Some(seg) = self.segment_for(position) else {
            return Ok(None);
        };
        if seg.is_compacted() {
            let mut reader = seg.point_reader();
            let Some(at) = reader.next_frame_at_or_after(position)? else {
                return Ok(None);
            };
            return match reader.frame_at(at, limit.saturating_sub(seg.base())) {
                Ok((h, bytes)) if at.saturating_add(h.frame_len()) <= limit => Ok(Some((h, bytes))),
                Ok(_) => Ok(None),
                Err(Error::Io { context, source }) => Err(Error::Io { context, source }),
                Err(e @ Error::Corrupted { .. }) if report_damage => Err(e),
                Err(_) => Ok(None),
            };
        }
        let from = position
            .max(seg.first_frame_position())
            .saturating_sub(seg.base());
        let end = limit.saturating_sub(seg.base());
        let seg_end = seg.file_len()?.min(end);
        let mut reader = seg.point_reader();
        let Some(offset) = reader.resync(from, seg_end)? else {
            return Ok(None);
        };
        Ok(reader.frame_at_offset(offset, seg_end)?.ok())
    }

    /// Whether the segment holding `position` is a rewritten one, whose surviving frames
    /// may have gaps between them (where a scavenge removed frames).
    pub fn is_rewritten_at(&self, position: u64) -> bool {
        self.segment_for(position)
            .is_some_and(|seg| seg.is_compacted())
    }

    /// Whether `position` is where a segment starts (where a reader that finished the
    /// segment before it stands).
    pub fn is_segment_base(&self, position: u64) -> bool {
        self.segments
            .read()
            .binary_search_by_key(&position, |s| s.base())
            .is_ok()
    }

    /// Bases of the segments, oldest first.
    pub fn segment_bases(&self) -> Vec<u64> {
        self.segments.read().iter().map(|s| s.base()).collect()
    }

    /// Frames from `from` (a frame position, a segment base, or 0) up to `limit`, in order.
    pub fn frames(self: &Arc<Self>, from: u64, limit: u64) -> LogFrames {
        LogFrames {
            log: Arc::clone(self),
            next: from,
            limit,
            reader: None,
            failed: false,
        }
    }

    /// The file and file offset holding logical `position` (for error messages).
    pub fn locate(&self, position: u64) -> (PathBuf, u64) {
        match self.segment_for(position) {
            Some(seg) => (
                seg.path().to_path_buf(),
                position.saturating_sub(seg.base()),
            ),
            None => (self.dir.clone(), position),
        }
    }

    /// Puts a rewritten segment (`bytes`, a whole file of format 3's rewritten kind) in
    /// place of the sealed segment starting at `base`, crash-safely: the bytes go to a
    /// temporary file beside it, which is synced, renamed over the segment's file (an
    /// atomic switch), and the directory synced. From then on readers read the new file;
    /// those already reading the old one go on reading it (its file stays open while they
    /// hold it). A crash leaves either file whole; a temporary file left behind is removed
    /// at the next open. Returns the new segment.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when no sealed segment starts at `base` (the active
    /// segment is never rewritten); [`Error::Corrupted`] when the new file does not check;
    /// I/O errors (the old file then stays in force).
    pub fn replace_segment(&self, base: u64, bytes: &[u8]) -> Result<Arc<Segment>> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        let old = {
            let segments = self.segments.read();
            let i = segments
                .binary_search_by_key(&base, |s| s.base())
                .map_err(|_| Error::InvalidArgument(format!("no segment starts at {base}")))?;
            if i + 1 >= segments.len() {
                return Err(Error::InvalidArgument(format!(
                    "the segment at {base} is the active one"
                )));
            }
            segments.get(i).cloned()
        }
        .ok_or_else(|| Error::InvalidArgument(format!("no segment starts at {base}")))?;
        let path = old.path().to_path_buf();
        let temp = temp_rewrite_path(&path);
        let ctx = |what: &str, p: &std::path::Path| format!("{what} {}", p.display());
        if self
            .storage
            .exists(&temp)
            .map_err(|e| Error::io(ctx("stat", &temp), e))?
        {
            self.storage
                .remove(&temp)
                .map_err(|e| Error::io(ctx("remove", &temp), e))?;
        }
        let file = self
            .storage
            .create(&temp)
            .map_err(|e| Error::io(ctx("create", &temp), e))?;
        file.write_at(bytes, 0)
            .and_then(|()| file.sync_data())
            .map_err(|e| Error::io(ctx("write", &temp), e))?;
        drop(file);
        let new = Arc::new(Segment::open(
            self.storage.as_ref(),
            &temp,
            base,
            self.kind,
            true,
        )?);
        let logical = match new.check_header()? {
            Ok(_) => new.logical_len()?,
            Err(reason) => {
                let _ = self.storage.remove(&temp);
                return Err(Error::corrupted(temp, 0, reason.to_string()));
            }
        };
        if logical != old.logical_len()? {
            let _ = self.storage.remove(&temp);
            return Err(Error::InvalidArgument(format!(
                "a rewrite of the segment at {base} must end where it ends"
            )));
        }
        self.storage
            .rename(&temp, &path)
            .map_err(|e| Error::io(ctx("rename over", &path), e))?;
        self.storage
            .sync_dir(&self.dir)
            .map_err(|e| Error::io(ctx("sync", &self.dir), e))?;
        let new = Arc::new(Segment::open(
            self.storage.as_ref(),
            &path,
            base,
            self.kind,
            true,
        )?);
        if let Err(reason) = new.check_header()? {
            return Err(Error::corrupted(path, 0, reason.to_string()));
        }
        new.seal()?;
        // Its block map, loaded now: `Segment::is_compacted` (which readers ask to find a
        // frame by position) answers from the loaded map, as for every segment an open
        // found rewritten.
        new.compact_map()?;
        let mut segments = self.segments.write();
        if let Ok(i) = segments.binary_search_by_key(&base, |s| s.base())
            && let Some(slot) = segments.get_mut(i)
        {
            *slot = Arc::clone(&new);
        }
        Ok(new)
    }

    /// The segments, oldest first.
    pub fn segments(&self) -> Vec<Arc<Segment>> {
        self.segments.read().clone()
    }

    /// Segment files with their lengths, oldest first.
    ///
    /// # Errors
    /// I/O errors reading file lengths.
    pub fn segment_files(&self) -> Result<Vec<(PathBuf, u64)>> {
        let segments = self.segments.read().clone();
        segments
            .iter()
            .map(|s| Ok((s.path().to_path_buf(), s.file_len()?)))
            .collect()
    }
}

/// Where [`Log::replace_segment`] writes a rewritten segment before the switch: the
/// segment's name plus `.rewrite` (not a segment name: listings pass over it).
pub fn temp_rewrite_path(segment: &Path) -> PathBuf {
    let mut name = segment.as_os_str().to_os_string();
    name.push(".rewrite");
    PathBuf::from(name)
}
