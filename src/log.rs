//! The `log` layer: the ordered set of segments, rollover, position → segment, the written
//! and durable watermarks, and recovery of the tail. Knows frames, not streams.
//!
//! Positions are continuous across segments: a segment whose file is `n` bytes long and
//! starts at `base` is followed by the segment starting at `base + n`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};

use crate::error::{Error, Result};
use crate::format::{FrameHeader, FrameKind, SEGMENT_HEADER_LEN};
use crate::io::Storage;
use crate::segment::{FrameBytes, ScanEnd, Segment, SegmentReader, parse_segment_file_name};

/// What recovery found and did when the log was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// Segment files opened.
    pub segments: usize,
    /// Valid frames found (events and checkpoints).
    pub frames: u64,
    /// Whether the log ended with a clean-close checkpoint frame.
    pub clean_shutdown: bool,
    /// The highest position that any valid frame or segment header attests as durable.
    pub attested_position: u64,
    /// A torn or zero-filled tail that was cut off (or, read-only, would have been).
    pub truncated: Option<TruncatedTail>,
    /// Segment files removed because their creation never completed (bad header, nothing
    /// attested in them).
    pub removed_segments: Vec<PathBuf>,
    /// The log was scanned from this position on; what lies before was covered by the
    /// index and not scanned (verify checks it).
    pub replayed_from: u64,
    /// What opening the index found (tables, covered position, rebuilds).
    pub index: crate::index::IndexReport,
    /// What opening the snapshot files found.
    pub snapshots: crate::snapshot::SnapshotReport,
}

impl RecoveryReport {
    /// Whether recovery changed or would change anything on disk.
    pub fn is_clean(&self) -> bool {
        self.truncated.is_none() && self.removed_segments.is_empty()
    }
}

/// A cut-off tail of the last segment.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TruncatedTail {
    /// The segment file.
    pub file: PathBuf,
    /// File offset where the cut starts.
    pub offset: u64,
    /// Logical position where the cut starts (the new end of the log).
    pub position: u64,
    /// Frames dropped: the damaged one and any valid-looking ones after it.
    pub frames_dropped: u64,
    /// Bytes dropped.
    pub bytes_dropped: u64,
    /// Why the bytes could not be kept (e.g. "checksum mismatch…", "zero-filled tail").
    pub reason: String,
}

/// One damaged place found by [`Log::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Damage {
    /// The file.
    pub file: PathBuf,
    /// File offset of the damaged frame.
    pub offset: u64,
    /// What is wrong.
    pub reason: String,
    /// `true` when the damage lies in the unattested tail of the log: the remains of a
    /// crash, which recovery truncates, not corruption.
    pub torn_tail: bool,
}

/// What [`Log::verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Segment files checked.
    pub segments: usize,
    /// Valid frames.
    pub frames: u64,
    /// Events in valid frames.
    pub events: u64,
    /// Bytes checked.
    pub bytes: u64,
    /// Every damaged place, corruption and torn tail alike.
    pub damage: Vec<Damage>,
    /// Disagreements between the index and the log (fixed by rebuilding the index).
    pub index_problems: Vec<String>,
}

impl VerifyReport {
    /// Damage that is corruption (attested data), not a torn tail.
    pub fn corruption(&self) -> impl Iterator<Item = &Damage> {
        self.damage.iter().filter(|d| !d.torn_tail)
    }
}

/// Bytes encoded for one segment, not yet written.
#[derive(Debug)]
pub struct Chunk {
    segment_base: u64,
    start: u64,
    bytes: Vec<u8>,
}

/// The in-memory end of the log on the writer's side: assigns positions to new frames and
/// holds their encoded bytes until they are written. Owned by the store's writer state.
#[derive(Debug)]
pub struct Appender {
    segment_size: u64,
    active_base: u64,
    head: u64,
    chunks: Vec<Chunk>,
    /// A written chunk's buffer, kept to encode the next one into.
    spare: Vec<u8>,
}

/// Largest buffer [`Appender::recycle`] keeps.
const MAX_SPARE_BYTES: usize = 4 << 20;

impl Appender {
    /// The position the next frame would get (if it fits the active segment).
    pub fn head(&self) -> u64 {
        self.head
    }

    /// Reserves room for a frame of `len` bytes, rolling to a new segment when it would not
    /// fit in the active one. Returns the frame's position and the buffer to encode it into
    /// (the frame must be appended to the buffer's end).
    pub fn reserve(&mut self, len: u64) -> (u64, &mut Vec<u8>) {
        let used = self.head.saturating_sub(self.active_base);
        let has_frames = used > SEGMENT_HEADER_LEN as u64;
        if has_frames && used.saturating_add(len) > self.segment_size {
            self.active_base = self.head;
            self.head = self.head.saturating_add(SEGMENT_HEADER_LEN as u64);
        }
        let position = self.head;
        self.head = self.head.saturating_add(len);
        let active_base = self.active_base;
        let contiguous = self.chunks.last().is_some_and(|c| {
            c.segment_base == active_base
                && c.start.saturating_add(c.bytes.len() as u64) == position
        });
        if !contiguous {
            let mut bytes = std::mem::take(&mut self.spare);
            bytes.clear();
            bytes.reserve(usize::try_from(len).unwrap_or(0));
            self.chunks.push(Chunk {
                segment_base: active_base,
                start: position,
                bytes,
            });
        }
        match self.chunks.last_mut() {
            Some(c) => (position, &mut c.bytes),
            None => unreachable!("a chunk was just pushed"),
        }
    }

    /// Takes the encoded bytes, to be written with [`Log::write`].
    pub fn take(&mut self) -> Vec<Chunk> {
        std::mem::take(&mut self.chunks)
    }

    /// Gives back written chunks so their memory is reused for the next frames.
    pub fn recycle(&mut self, chunks: Vec<Chunk>) {
        if let Some(c) = chunks.into_iter().max_by_key(|c| c.bytes.capacity())
            && c.bytes.capacity() <= MAX_SPARE_BYTES
            && c.bytes.capacity() > self.spare.capacity()
        {
            self.spare = c.bytes;
        }
    }

    /// Whether encoded bytes are waiting to be written.
    pub fn has_pending(&self) -> bool {
        !self.chunks.is_empty()
    }

    /// The encoded bytes of a frame that is not yet written, if `position` is one.
    pub fn pending_frame(&self, position: u64) -> Option<&[u8]> {
        let chunk = self.chunks.iter().find(|c| {
            position >= c.start && position < c.start.saturating_add(c.bytes.len() as u64)
        })?;
        let at = usize::try_from(position.saturating_sub(chunk.start)).ok()?;
        chunk.bytes.get(at..)
    }
}

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
}

impl Log {
    /// Opens (or creates) the log in `dir` and recovers its tail: checks every frame of
    /// every segment, calling `visit` with each valid frame that is kept (and the segment
    /// holding it), in log order.
    ///
    /// The recovery rule: a damaged frame below the highest attested watermark is
    /// corruption and fails the open; one above it is a torn tail, cut off (unless
    /// `read_only`) and reported.
    ///
    /// # Errors
    /// [`Error::Corrupted`] for corruption, [`Error::UnsupportedFormat`] for a segment of a
    /// newer format (left untouched, even as the last segment), [`Error::Io`] for I/O
    /// failures, and any error `visit` returns.
    pub fn open(
        storage: Arc<dyn Storage>,
        dir: &Path,
        kind: u32,
        segment_size: u64,
        read_only: bool,
        replay_from: impl FnOnce(&[Arc<Segment>]) -> u64,
        mut visit: impl FnMut(&Segment, &FrameHeader, &FrameBytes) -> Result<()>,
    ) -> Result<(Log, RecoveryReport)> {
        let mut report = RecoveryReport::default();
        let mut segments = open_segments(storage.as_ref(), dir, kind, read_only)?;
        if segments.is_empty() {
            if read_only {
                return Err(Error::InvalidArgument(format!(
                    "no segment files in {}",
                    dir.display()
                )));
            }
            segments.push(Arc::new(Segment::create(storage.as_ref(), dir, 0, kind)?));
        }
        // Everything below `replay_from` is known to the caller (indexed and durable): its
        // segments are not scanned, and it counts as attested.
        let replay_from = replay_from(&segments);
        report.replayed_from = replay_from;
        let mut attested = replay_from;
        let mut last_kind = None;
        let count = segments.len();
        let mut end = 0u64;
        for (i, seg) in segments.clone().iter().enumerate() {
            let is_last = i + 1 == count;
            let len = seg.file_len()?;
            let skip_frames = !is_last && seg.base().saturating_add(len) <= replay_from;
            match seg.check_header()? {
                Ok(h) => attested = attested.max(h.base_position),
                Err(reason) if is_last => {
                    // A new segment whose creation did not complete. Nothing in it can be
                    // acknowledged unless a valid frame in it says otherwise.
                    let mut reader = seg.reader();
                    if let Some(at) = reader.resync(SEGMENT_HEADER_LEN as u64, len)? {
                        return Err(Error::corrupted(
                            seg.path(),
                            0,
                            format!(
                                "bad segment header ({reason}) before a valid frame at offset {at}"
                            ),
                        ));
                    }
                    report.removed_segments.push(seg.path().to_path_buf());
                    segments.pop();
                    if !read_only {
                        storage.remove(seg.path()).map_err(|e| {
                            Error::io(format!("remove {}", seg.path().display()), e)
                        })?;
                        storage
                            .sync_dir(dir)
                            .map_err(|e| Error::io(format!("sync {}", dir.display()), e))?;
                        if segments.is_empty() {
                            segments.push(Arc::new(Segment::create(
                                storage.as_ref(),
                                dir,
                                0,
                                kind,
                            )?));
                            end = SEGMENT_HEADER_LEN as u64;
                        }
                    }
                    break;
                }
                Err(reason) => {
                    return Err(Error::corrupted(
                        seg.path(),
                        0,
                        format!("bad segment header: {reason}"),
                    ));
                }
            }
            if skip_frames {
                end = seg.base().saturating_add(len);
                continue;
            }
            let mut reader = seg.reader();
            let scan_from = replay_from.saturating_sub(seg.base()).clamp(
                SEGMENT_HEADER_LEN as u64,
                len.max(SEGMENT_HEADER_LEN as u64),
            );
            let how = reader.scan(scan_from, len, |h, bytes| {
                attested = attested.max(h.watermark);
                report.frames += 1;
                last_kind = Some(h.kind);
                visit(seg, h, bytes)
            })?;
            end = seg.base().saturating_add(len);
            let (offset, reason) = match how {
                ScanEnd::Clean { .. } => continue,
                ScanEnd::ZeroTail { offset, .. } => (offset, "zero-filled tail".to_string()),
                ScanEnd::Damaged { offset, reason } => (offset, reason.to_string()),
            };
            if !is_last {
                return Err(Error::corrupted(seg.path(), offset, reason));
            }
            // Look past the damage: valid frames after it may attest it.
            let mut dropped = 0u64;
            let mut from = offset.saturating_add(1);
            while let Some(at) = reader.resync(from, len)? {
                if let Ok((h, _)) = reader.frame_at_offset(at, len)? {
                    attested = attested.max(h.watermark);
                    dropped += 1;
                    from = at.saturating_add(h.frame_len());
                } else {
                    from = at.saturating_add(1);
                }
            }
            let position = seg.base().saturating_add(offset);
            if position < attested {
                return Err(Error::corrupted(
                    seg.path(),
                    offset,
                    format!("{reason} (below the attested durable position {attested})"),
                ));
            }
            if reason != "zero-filled tail" {
                dropped += 1;
            }
            report.truncated = Some(TruncatedTail {
                file: seg.path().to_path_buf(),
                offset,
                position,
                frames_dropped: dropped,
                bytes_dropped: len.saturating_sub(offset),
                reason,
            });
            end = position;
            if !read_only {
                seg.truncate(offset)?;
            }
        }
        // Seal every segment but the last; the last is the active one.
        let count = segments.len();
        for seg in segments.iter().take(count.saturating_sub(1)) {
            seg.seal()?;
        }
        let active = segments
            .last()
            .cloned()
            .ok_or_else(|| Error::InvalidArgument(format!("no segments in {}", dir.display())))?;
        if end < active.first_frame_position() {
            end = active.base().saturating_add(active.file_len()?);
        }
        report.segments = segments.len();
        report.attested_position = attested;
        report.clean_shutdown = last_kind == Some(FrameKind::Checkpoint) && report.is_clean();
        let durable = if read_only {
            end
        } else if report.clean_shutdown {
            // Everything up to the closing checkpoint was synced before it was written (its
            // watermark says so); only the checkpoint itself may not be. No sync needed:
            // new frames attest no more than the checkpoint's watermark until the next one.
            attested.min(end)
        } else {
            // What survived a crash may still be only in the OS cache: make it durable
            // before any new frame attests it.
            active.sync()?;
            end
        };
        let log = Log {
            storage,
            dir: dir.to_path_buf(),
            kind,
            segment_size,
            read_only,
            segments: RwLock::new(segments),
            write_lock: Mutex::new(()),
            written: AtomicU64::new(end),
            durable: AtomicU64::new(durable),
            poisoned: AtomicBool::new(false),
            preallocate: 0,
            reserved: AtomicU64::new(end),
        };
        Ok((log, report))
    }

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
        Appender {
            segment_size: self.segment_size,
            active_base,
            head: self.written.load(Ordering::Acquire),
            chunks: Vec::new(),
            spare: Vec::new(),
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
        let new = Arc::new(Segment::create(
            self.storage.as_ref(),
            &self.dir,
            base,
            self.kind,
        )?);
        self.segments.write().push(Arc::clone(&new));
        self.reserved.store(
            base.saturating_add(SEGMENT_HEADER_LEN as u64),
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
        active.sync().map_err(|e| self.poison(e))?;
        if self.is_poisoned() {
            return Err(Error::Poisoned);
        }
        Ok(self.durable.fetch_max(target, Ordering::AcqRel).max(target))
    }

    /// The segment holding logical `position`.
    fn segment_for(&self, position: u64) -> Option<Arc<Segment>> {
        let segments = self.segments.read();
        let idx = segments.partition_point(|s| s.base() <= position);
        segments.get(idx.checked_sub(1)?).cloned()
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

    /// Checks every frame of every segment up to `limit`, going on past damage, and
    /// classifies each damaged place by the recovery rule. `count_events` tells how many
    /// events a valid frame holds. Never writes.
    ///
    /// # Errors
    /// I/O errors.
    pub fn verify(
        &self,
        limit: u64,
        mut progress: impl FnMut(u64),
        count_events: impl Fn(&FrameHeader, &FrameBytes) -> u64,
    ) -> Result<VerifyReport> {
        let segments = self.segments.read().clone();
        verify_segments(&segments, limit, &mut progress, &count_events)
    }
}

/// Checks segments without a [`Log`] (used by `verify` of a directory that may not open).
pub(crate) fn verify_segments(
    segments: &[Arc<Segment>],
    limit: u64,
    progress: &mut dyn FnMut(u64),
    count_events: &dyn Fn(&FrameHeader, &FrameBytes) -> u64,
) -> Result<VerifyReport> {
    let mut report = VerifyReport {
        segments: segments.len(),
        ..VerifyReport::default()
    };
    let mut attested = 0u64;
    let mut damage = Vec::new();
    for seg in segments {
        let len = seg.file_len()?.min(limit.saturating_sub(seg.base()));
        match seg.check_header()? {
            Ok(h) => attested = attested.max(h.base_position),
            Err(reason) => {
                damage.push((seg.path().to_path_buf(), seg.base(), 0, reason.to_string()))
            }
        }
        let mut reader = seg.reader();
        let mut from = SEGMENT_HEADER_LEN as u64;
        while from < len {
            let how = reader.scan(from, len, |h, bytes| {
                attested = attested.max(h.watermark);
                report.frames += 1;
                report.events += count_events(h, bytes);
                report.bytes += h.frame_len();
                progress(h.frame_len());
                Ok(())
            })?;
            match how {
                ScanEnd::Clean { .. } => break,
                ScanEnd::ZeroTail { offset, .. } => {
                    damage.push((
                        seg.path().to_path_buf(),
                        seg.base(),
                        offset,
                        "zero-filled tail".into(),
                    ));
                    break;
                }
                ScanEnd::Damaged { offset, reason } => {
                    damage.push((
                        seg.path().to_path_buf(),
                        seg.base(),
                        offset,
                        reason.to_string(),
                    ));
                    match reader.resync(offset.saturating_add(1), len)? {
                        Some(next) => from = next,
                        None => break,
                    }
                }
            }
        }
    }
    let last_base = segments.last().map_or(0, |s| s.base());
    report.damage = damage
        .into_iter()
        .map(|(file, base, offset, reason)| Damage {
            torn_tail: base == last_base && base.saturating_add(offset) >= attested,
            file,
            offset,
            reason,
        })
        .collect();
    Ok(report)
}

/// Lists and opens the segment files of `dir`, sorted, checking that they are contiguous.
pub(crate) fn open_segments(
    storage: &dyn Storage,
    dir: &Path,
    kind: u32,
    read_only: bool,
) -> Result<Vec<Arc<Segment>>> {
    let mut bases: Vec<u64> = storage
        .list(dir)
        .map_err(|e| Error::io(format!("list {}", dir.display()), e))?
        .iter()
        .filter_map(|n| parse_segment_file_name(n))
        .collect();
    bases.sort_unstable();
    let mut segments: Vec<Arc<Segment>> = Vec::with_capacity(bases.len());
    for base in bases {
        let path = dir.join(crate::segment::segment_file_name(base));
        let seg = Arc::new(Segment::open(storage, &path, base, kind, read_only)?);
        if let Some(prev) = segments.last() {
            let prev_len = prev.file_len()?;
            let expected = prev.base().saturating_add(prev_len);
            if expected != base {
                return Err(Error::corrupted(
                    prev.path(),
                    prev_len,
                    format!(
                        "segment ends at position {expected} but the next one starts at {base}"
                    ),
                ));
            }
        }
        segments.push(seg);
    }
    Ok(segments)
}

/// Iterator over the frames of the log, see [`Log::frames`].
#[derive(Debug)]
pub struct LogFrames {
    log: Arc<Log>,
    next: u64,
    limit: u64,
    reader: Option<SegmentReader>,
    failed: bool,
}

impl LogFrames {
    /// The log being read.
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// The log being read, shared.
    pub fn log_arc(&self) -> &Arc<Log> {
        &self.log
    }

    /// Position of the next frame the iterator would read.
    pub fn next_position(&self) -> u64 {
        self.next
    }
}

impl LogFrames {
    /// Moves to the segment holding the next frame; returns the frame's position and the
    /// file offset its segment may be read to, or `None` at the end.
    fn locate_next(&mut self) -> Option<(u64, u64)> {
        loop {
            let reader = match &mut self.reader {
                Some(r) if self.next >= r.segment().base() => r,
                _ => {
                    let seg = self.log.segment_for(self.next)?;
                    self.reader.insert(seg.reader())
                }
            };
            let base = reader.segment().base();
            if self.next < base.saturating_add(SEGMENT_HEADER_LEN as u64) {
                self.next = base.saturating_add(SEGMENT_HEADER_LEN as u64);
            }
            if self.next >= self.limit {
                return None;
            }
            // A sealed segment's length is known; a segment that was not sealed when the
            // reader was made was the active one, which holds everything below `limit`
            // (the log's end when the iterator was made). No stat per frame.
            let seg_end = reader
                .segment()
                .sealed_len()
                .map_or(u64::MAX, |len| base.saturating_add(len));
            if self.next >= seg_end {
                // Move on to the next segment, which starts where this one ends.
                let next_seg = self.log.segment_for(self.next)?;
                if next_seg.base() == base {
                    return None;
                }
                self.reader = Some(next_seg.reader());
                continue;
            }
            return Some((self.next, self.limit.min(seg_end).saturating_sub(base)));
        }
    }

    /// Reads the next frame with `read` (given the reader, the frame's position and the
    /// offset the segment may be read to) and moves past it; a failure ends the walk.
    fn advance<'a, T>(
        &'a mut self,
        read: impl FnOnce(&'a mut SegmentReader, u64, u64) -> Result<(FrameHeader, T)>,
    ) -> Option<Result<(FrameHeader, T)>> {
        if self.failed {
            return None;
        }
        let (position, limit) = self.locate_next()?;
        let reader = self.reader.as_mut()?;
        match read(reader, position, limit) {
            Ok((h, frame)) => {
                self.next = position.saturating_add(h.frame_len());
                Some(Ok((h, frame)))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }

    /// Reads the next frame and hands it to `visit` borrowed from the reader's buffer or
    /// mapping (no allocation per frame); `None` at the end.
    ///
    /// # Errors
    /// As the iterator: a frame that does not check or an I/O error, after which the
    /// iterator ends.
    pub fn next_with<R>(
        &mut self,
        visit: impl FnOnce(&FrameHeader, &[u8]) -> R,
    ) -> Option<Result<R>> {
        self.advance(|r, position, limit| r.frame_ref_at(position, limit))
            .map(|read| read.map(|(h, bytes)| visit(&h, bytes)))
    }
}

impl Iterator for LogFrames {
    type Item = Result<(FrameHeader, FrameBytes)>;

    fn next(&mut self) -> Option<Self::Item> {
        self.advance(|r, position, limit| r.frame_at(position, limit))
    }
}
