//! Opening a log: every segment checked, frames handed to the caller (who rebuilds what it
//! derives from them), and the tail recovered by the recovery rule.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};

use parking_lot::{Mutex, RwLock};

use super::Log;
use crate::error::{Error, Result};
use crate::format::{FrameHeader, FrameKind, SEGMENT_HEADER_LEN};
use crate::io::Storage;
use crate::segment::{FrameBytes, ScanEnd, Segment, SegmentReader, parse_segment_file_name};

/// The refusal of a read-only open of a log without a complete segment file (a writer's
/// open starts one).
fn no_segments(dir: &Path) -> Error {
    Error::InvalidArgument(format!(
        "no complete segment file in {}: the log's creation was interrupted before its first \
         segment was written (or its segments were removed); a writer's open starts an empty \
         log there",
        dir.display()
    ))
}

/// Most bytes of a log's tail hinted to the storage at once at open (see `check_covered`).
const TAIL_HINT_BYTES: u64 = 8 << 20;

/// What recovery found and did when the log was opened (the store adds the index's part
/// to make its [`RecoveryReport`](crate::RecoveryReport)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LogRecovery {
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
}

impl LogRecovery {
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
    /// What kind of tail it was.
    pub kind: TailKind,
    /// Why the bytes could not be kept (e.g. "checksum mismatch…", "zero-filled tail").
    pub reason: String,
}

/// The two kinds of tail that recovery cuts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TailKind {
    /// Zeros: preallocated space, or blocks a crash left allocated but unwritten. No frame
    /// is lost with them.
    ZeroFilled,
    /// A frame that does not check (a torn write) and anything after it.
    Torn,
}

/// Recovery's running state while it walks the segments.
struct Scan {
    report: LogRecovery,
    /// The highest position any valid frame or segment header attests as durable.
    attested: u64,
    last_kind: Option<FrameKind>,
    /// End of the log as recovered so far.
    end: u64,
}

/// What the caller of [`Log::open`] knows of the log before it is scanned (the default:
/// nothing, so the whole log is scanned, and only its own frames attest).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Known {
    /// Where the scan starts: frames before it are known (indexed), not visited.
    pub replay_from: u64,
    /// Up to where the log was durable once (an index's covered position, even of an
    /// index that no longer matches the log and is rebuilt): damage below it is
    /// corruption, and a log that ends before it lost frames.
    pub attested: u64,
}

impl Log {
    /// Opens (or creates) the log in `dir` and recovers its tail: checks every frame of
    /// every segment, calling `visit` with each valid frame that is kept (and the segment
    /// holding it), in log order.
    ///
    /// The recovery rule: a damaged frame below the highest attested watermark (or below
    /// what `known` says was durable) is corruption and fails the open; one above it is a
    /// torn tail, cut off (unless `read_only`) and reported. A writable open of a log
    /// that ends before what `known` says was durable fails too: frames are missing. A read-only open beside a live writer passes
    /// `read_limit`, the end the writer published, and nothing past it is read.
    ///
    /// What a crash left past the last known durable position may still be only in the
    /// OS cache, and the open does not sync it: [`Log::durable`] starts at what is known
    /// durable (new frames attest no more), and a caller whose readers must see only
    /// durable frames calls [`Log::sync`] first.
    ///
    /// # Errors
    /// [`Error::Corrupted`] for corruption, [`Error::UnsupportedFormat`] for a segment of a
    /// newer format (left untouched, even as the last segment), [`Error::Io`] for I/O
    /// failures, and any error `visit` returns.
    // Each argument is one independent fact about the log to open; a struct for them
    // would only be unpacked here.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        storage: Arc<dyn Storage>,
        dir: &Path,
        kind: u32,
        segment_size: u64,
        read_only: bool,
        read_limit: Option<u64>,
        known: impl FnOnce(&[Arc<Segment>]) -> Known,
        mut visit: impl FnMut(&Segment, &FrameHeader, &FrameBytes) -> Result<()>,
    ) -> Result<(Log, LogRecovery)> {
        if !read_only {
            // A rewrite a crash interrupted before its switch: the segment it was for is
            // whole, the temporary file is debris.
            for name in storage
                .list(dir)
                .map_err(|e| Error::io(format!("list {}", dir.display()), e))?
            {
                if name.ends_with(".seg.rewrite") {
                    let path = dir.join(&name);
                    storage
                        .remove(&path)
                        .map_err(|e| Error::io(format!("remove {}", path.display()), e))?;
                }
            }
        }
        let mut segments = open_segments(storage.as_ref(), dir, kind, read_only)?;
        // Beside a live writer, nothing past the end it published is read: the files
        // change there while they are scanned, and a scan could meet a stale buffer of
        // the tail before newer frames after it (and take that for corruption).
        let limit = read_limit.filter(|_| read_only).unwrap_or(u64::MAX);
        if segments.len() > 1 {
            let keep = segments.iter().filter(|s| s.base() < limit).count().max(1);
            segments.truncate(keep);
        }
        if segments.is_empty() {
            if read_only {
                return Err(no_segments(dir));
            }
            segments.push(Arc::new(Segment::create(storage.as_ref(), dir, 0, kind)?));
        }
        // Everything below `replay_from` is known to the caller (indexed and durable): its
        // segments are not scanned, and it counts as attested, as does everything below
        // `attested` (durable once, whether or not the caller still trusts what it built
        // over it).
        let Known {
            replay_from,
            attested: known_attested,
        } = known(&segments);
        let known_attested = known_attested.max(replay_from);
        let mut scan = Scan {
            report: LogRecovery {
                replayed_from: replay_from,
                ..LogRecovery::default()
            },
            attested: known_attested,
            last_kind: None,
            end: 0,
        };
        let count = segments.len();
        for (i, seg) in segments.clone().iter().enumerate() {
            let is_last = i + 1 == count;
            let len = seg.logical_len()?.min(limit.saturating_sub(seg.base()));
            match seg.check_header()? {
                Ok(h) => scan.attested = scan.attested.max(h.base_position),
                Err(reason) if is_last => {
                    scan.remove_unfinished(
                        storage.as_ref(),
                        dir,
                        kind,
                        read_only,
                        &mut segments,
                        &reason.to_string(),
                    )?;
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
            if !is_last && seg.base().saturating_add(len) <= replay_from {
                scan.end = seg.base().saturating_add(len);
                continue;
            }
            scan.scan_segment(seg, len, is_last, read_only, &mut visit)?;
        }
        // A rewritten segment is never appended to: when it is the last (the segment a
        // scavenge started after it did not survive a crash), a new one starts at its end.
        if let Some(last) = segments.last().cloned()
            && last.is_compacted()
            && !read_only
        {
            let end = last.logical_len()?.saturating_add(last.base());
            segments.push(Arc::new(Segment::create(storage.as_ref(), dir, end, kind)?));
            scan.end = end.saturating_add(SEGMENT_HEADER_LEN as u64);
        }
        // Seal every segment but the last; the last is the active one.
        for seg in segments.iter().take(segments.len().saturating_sub(1)) {
            seg.seal()?;
        }
        let active = segments.last().cloned().ok_or_else(|| no_segments(dir))?;
        let mut end = scan.end;
        if end < active.first_frame_position() {
            end = active.base().saturating_add(active.file_len()?);
        }
        // A log that ends before what was known durable lost frames: a file cut short or
        // removed, not a crash (a crash loses only what was never attested). Refused, as
        // corruption is: a writer must not take up the positions of frames once acknowledged.
        // (A read-only open beside a live writer may see a caller's knowledge ahead of the
        // end the writer published; it writes nothing, and says what it found.)
        if !read_only && end < known_attested {
            return Err(Error::corrupted(
                active.path(),
                end.saturating_sub(active.base()),
                format!(
                    "the log ends at position {end}, but frames up to {known_attested} were \
                     durable (its index was built over them): they are missing; rebuilding \
                     the index from the log as it is gives them up"
                ),
            ));
        }
        let mut report = scan.report;
        report.segments = segments.len();
        report.attested_position = scan.attested;
        report.clean_shutdown = scan.last_kind == Some(FrameKind::Checkpoint) && report.is_clean();
        let durable = if read_only {
            end
        } else if report.clean_shutdown {
            // Everything up to the closing checkpoint was synced before it was written (its
            // watermark says so); only the checkpoint itself may not be. No sync needed:
            // new frames attest no more than the checkpoint's watermark until the next one.
            scan.attested.min(end)
        } else if scan.attested.max(active.first_frame_position()) >= end
            && report.truncated.is_none()
        {
            // Nothing past what is known to be durable (the index's covered position, or
            // what a later frame or segment header attests), and nothing cut: there is
            // nothing to make durable. (An open after a crash right after a sync that the
            // index maintainer had caught up with costs no `fdatasync`.) An active segment
            // that holds only its header holds nothing to make durable either: no frame
            // lives there, and a header lost later makes an unfinished segment, which
            // recovery removes (the header was synced before any frame was written after
            // it, so the first commit into it syncs it again anyway).
            end
        } else {
            // What survived a crash may still be only in the OS cache. It is not made
            // durable here: new frames attest no more than what is known durable until a
            // sync makes the rest durable too. A caller that promises more (an event log
            // under `Durability::Sync`, whose readers see only durable frames; a raft log)
            // calls `Log::sync` before anything reads or builds on the tail.
            scan.attested.min(end)
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
            align: 0,
            map_active: false,
            sync_times: Default::default(),
        };
        Ok((log, report))
    }
}

impl Scan {
    /// The last segment's header is bad: a new segment whose creation did not complete.
    /// Nothing in it can be acknowledged unless a valid frame in it says otherwise (then it
    /// is corruption). Removes it (unless read-only), and starts a first segment if it was
    /// the only one.
    fn remove_unfinished(
        &mut self,
        storage: &dyn Storage,
        dir: &Path,
        kind: u32,
        read_only: bool,
        segments: &mut Vec<Arc<Segment>>,
        reason: &str,
    ) -> Result<()> {
        let Some(seg) = segments.pop() else {
            return Ok(());
        };
        let len = seg.file_len()?;
        if let Some(at) = seg.reader().resync(SEGMENT_HEADER_LEN as u64, len)? {
            return Err(Error::corrupted(
                seg.path(),
                0,
                format!("bad segment header ({reason}) before a valid frame at offset {at}"),
            ));
        }
        self.report.removed_segments.push(seg.path().to_path_buf());
        if read_only {
            return Ok(());
        }
        storage
            .remove(seg.path())
            .map_err(|e| Error::io(format!("remove {}", seg.path().display()), e))?;
        storage
            .sync_dir(dir)
            .map_err(|e| Error::io(format!("sync {}", dir.display()), e))?;
        if segments.is_empty() {
            segments.push(Arc::new(Segment::create(storage, dir, 0, kind)?));
            self.end = SEGMENT_HEADER_LEN as u64;
        }
        Ok(())
    }

    /// Checks the frames of one segment from where the caller's knowledge ends, handing
    /// each valid one to `visit`; a damaged place ends the scan: corruption in a sealed
    /// segment, a tail to recover in the last one.
    fn scan_segment(
        &mut self,
        seg: &Arc<Segment>,
        len: u64,
        is_last: bool,
        read_only: bool,
        visit: &mut impl FnMut(&Segment, &FrameHeader, &FrameBytes) -> Result<()>,
    ) -> Result<()> {
        let mut reader = seg.reader();
        let scan_from = self.report.replayed_from.saturating_sub(seg.base()).clamp(
            SEGMENT_HEADER_LEN as u64,
            len.max(SEGMENT_HEADER_LEN as u64),
        );
        let (attested, frames, last_kind) = (
            &mut self.attested,
            &mut self.report.frames,
            &mut self.last_kind,
        );
        let how = reader.scan(scan_from, len, |h, bytes| {
            *attested = (*attested).max(h.watermark);
            *frames += 1;
            // Padding holds nothing: a clean close's checkpoint followed by padding is
            // still the last word.
            if h.kind != FrameKind::Padding {
                *last_kind = Some(h.kind);
            }
            visit(seg, h, bytes)
        })?;
        self.end = seg.base().saturating_add(len);
        let (offset, kind, reason) = match how {
            ScanEnd::Clean { .. } => return Ok(()),
            ScanEnd::ZeroTail { offset, .. } => {
                (offset, TailKind::ZeroFilled, "zero-filled tail".to_string())
            }
            ScanEnd::Damaged { offset, reason } => (offset, TailKind::Torn, reason.to_string()),
        };
        // A rewritten segment was whole and synced before it was switched in: damage in it
        // is never a crash's torn tail, even as the last segment (a scavenge's next one
        // lost), and it is never cut (its offsets are positions, not file offsets; and
        // its readers map it).
        if !is_last || seg.is_compacted() {
            return Err(Error::corrupted(seg.path(), offset, reason));
        }
        self.cut_tail(seg, reader, len, offset, kind, reason, read_only)
    }

    /// The recovery rule at a damaged place of the last segment: valid frames past it may
    /// attest it (then it is corruption); otherwise it is a torn or zero-filled tail, cut
    /// off (unless read-only) and reported.
    #[allow(clippy::too_many_arguments)]
    fn cut_tail(
        &mut self,
        seg: &Arc<Segment>,
        mut reader: SegmentReader,
        len: u64,
        offset: u64,
        kind: TailKind,
        reason: String,
        read_only: bool,
    ) -> Result<()> {
        let mut dropped = 0u64;
        let mut from = offset.saturating_add(1);
        while let Some(at) = reader.resync(from, len)? {
            if let Ok((h, _)) = reader.frame_at_offset(at, len)? {
                self.attested = self.attested.max(h.watermark);
                dropped += 1;
                from = at.saturating_add(h.frame_len());
            } else {
                from = at.saturating_add(1);
            }
        }
        let position = seg.base().saturating_add(offset);
        if position < self.attested {
            return Err(Error::corrupted(
                seg.path(),
                offset,
                format!(
                    "{reason} (below the attested durable position {})",
                    self.attested
                ),
            ));
        }
        if kind == TailKind::Torn {
            dropped += 1;
        }
        self.report.truncated = Some(TruncatedTail {
            file: seg.path().to_path_buf(),
            offset,
            position,
            frames_dropped: dropped,
            bytes_dropped: len.saturating_sub(offset),
            kind,
            reason,
        });
        self.end = position;
        if !read_only {
            seg.truncate(offset)?;
        }
        Ok(())
    }
}

/// The segment files of `dir` as (base position, path), in log order. Files whose names
/// are not a segment's (20 digits + `.seg`) are ignored. Nothing is opened or checked:
/// [`open_segments`] adds that, and a dump of a damaged directory goes on without it.
///
/// # Errors
/// I/O errors listing the directory.
pub(crate) fn list_segment_files(storage: &dyn Storage, dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut files: Vec<(u64, PathBuf)> = storage
        .list(dir)
        .map_err(|e| Error::io(format!("list {}", dir.display()), e))?
        .into_iter()
        .filter_map(|name| parse_segment_file_name(&name).map(|base| (base, dir.join(name))))
        .collect();
    files.sort_unstable_by_key(|&(base, _)| base);
    Ok(files)
}

/// Lists and opens the segment files of `dir`, sorted, checking that they are contiguous.
pub(crate) fn open_segments(
    storage: &dyn Storage,
    dir: &Path,
    kind: u32,
    read_only: bool,
) -> Result<Vec<Arc<Segment>>> {
    let files = list_segment_files(storage, dir)?;
    let mut segments: Vec<Arc<Segment>> = Vec::with_capacity(files.len());
    for (base, path) in files {
        let seg = Arc::new(Segment::open(storage, &path, base, kind, read_only)?);
        if let Some(prev) = segments.last() {
            let prev_len = prev.logical_len()?;
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

/// Checks that an index built from this log still describes it: what it covers exists, and
/// the last frame it indexed (`last_frame_position`, with CRC `last_frame_crc`) is still
/// the same frame. An index of nothing (`covered_position` 0) always does.
///
/// # Errors
/// Why the index does not describe the log (it is then rebuilt, or reported).
pub(crate) fn check_covered(
    segments: &[Arc<Segment>],
    covered_position: u64,
    last_frame_position: u64,
    last_frame_crc: u32,
) -> std::result::Result<(), String> {
    if covered_position == 0 {
        return Ok(());
    }
    let end = match segments.last() {
        Some(seg) => seg
            .base()
            .saturating_add(seg.file_len().map_err(|e| e.to_string())?),
        None => 0,
    };
    if covered_position > end {
        return Err(format!(
            "the index covers the log up to position {covered_position} but the log ends at {end}"
        ));
    }
    if last_frame_position == 0 {
        return Ok(());
    }
    let pos = last_frame_position;
    let seg = segments
        .iter()
        .rev()
        .find(|s| s.base() <= pos)
        .ok_or_else(|| format!("the index's last frame at {pos} is not in the log"))?;
    let limit = seg.file_len().map_err(|e| e.to_string())?;
    // After a crash the page cache is cold: the segment's header, this frame and the tail
    // replayed after it are read next, each a wait for the disk. Asked for at once, they
    // come in one (the tail is at most a few MiB: the index is flushed by then).
    // (In a segment as written: a rewritten one's offsets are not positions.)
    let from = pos.saturating_sub(seg.base());
    if !seg.is_compacted() && from < limit && limit - from <= TAIL_HINT_BYTES {
        seg.will_read_ranges(&[(0, SEGMENT_HEADER_LEN as u64), (from, limit)]);
    }
    match seg.read_frame(pos, limit) {
        Ok((h, _)) if h.crc == last_frame_crc => Ok(()),
        Ok(_) => Err(format!(
            "the frame at {pos} is not the one the index was built from"
        )),
        Err(e) => Err(format!(
            "the index's last frame at {pos} does not read: {e}"
        )),
    }
}
