//! Scavenge (compaction) and erasure: sealed segments rewritten without their dead frames,
//! every surviving frame at its position (format 3's rewritten segments), the index
//! rewritten to match, and snapshots of hard-deleted streams dropped.
//!
//! A frame is dead when the stream metadata in force hides every event in it (deleted,
//! hard deleted, erased, expired, truncated or past `max_count`) and it is not the
//! stream's last append (which is kept, as KurrentDB keeps a stream's last event: the
//! next version and expected-version checks are found from it), unless the stream is hard
//! deleted. Only a prefix of each stream is removed: once a frame of a stream is kept,
//! its later frames are too, so a stream's surviving events are always consecutive. A
//! record of the system stream is dead when it is about an erased stream.

use std::time::{Duration, Instant};

use rustc_hash::{FxHashMap, FxHashSet};

use super::metadata::{self, METADATA_STREAM, Retention};
use super::{Inner, Store};
use crate::error::{Error, Result};
use crate::format::compact::{
    CompactWriter, DICT_BLOCK_TARGET_BYTES, DictionarySampler, RemovedRun,
};
use crate::format::{self, FRAME_HEADER_LEN, FrameHeader, FrameKind};
use crate::segment::{FrameBytes, Segment};

/// The file whose presence says a scavenge was under way: an open that finds it rebuilds
/// the index (derived data) from the segments, since the crash may have come between a
/// segment's switch and the index's rewrite.
pub const SCAVENGE_MARKER: &str = "SCAVENGING";

/// The zstd level rewritten segments are compressed at unless told otherwise: on the small
/// blocks a scavenge writes, with a dictionary, level 1 keeps as few bytes as level 3 and
/// runs faster (docs/design.md, "Compressed segments with a dictionary").
const DEFAULT_COMPRESSION_LEVEL: i32 = 1;

/// What to do in a scavenge ([`Store::scavenge`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScavengeOptions {
    max_bytes_per_s: Option<u64>,
    compression_level: Option<i32>,
    compress_all: bool,
    block_target_bytes: usize,
}

impl Default for ScavengeOptions {
    fn default() -> Self {
        ScavengeOptions {
            max_bytes_per_s: None,
            compression_level: Some(DEFAULT_COMPRESSION_LEVEL),
            compress_all: false,
            block_target_bytes: DICT_BLOCK_TARGET_BYTES,
        }
    }
}

impl ScavengeOptions {
    /// Reads the log no faster than `bytes_per_s` on average (sleeping between reads), so
    /// that appends and reads beside it keep the disk. Default: unthrottled.
    pub fn with_max_bytes_per_s(mut self, bytes_per_s: u64) -> Self {
        self.max_bytes_per_s = Some(bytes_per_s.max(1));
        self
    }

    /// The zstd level of rewritten segments' blocks (1..=22; 1 by default), or `None` to
    /// store them uncompressed. Compressed blocks share a dictionary of kept frames
    /// sampled across their segment, stored once in it. A block is stored as it is when
    /// compressing it does not make it smaller.
    pub fn with_compression(mut self, level: Option<i32>) -> Self {
        self.compression_level = level.map(|l| l.clamp(1, 22));
        self
    }

    /// Bytes of frames per compressed block, about (512 by default; at least one frame
    /// per block, and 16 MiB at most). A point read decodes one block: smaller blocks
    /// read faster, larger ones compress better (docs/design.md, "Compressed segments
    /// with a dictionary").
    pub fn with_block_target_bytes(mut self, bytes: usize) -> Self {
        self.block_target_bytes = bytes.clamp(1, 16 << 20);
        self
    }

    /// Also rewrites (compresses) sealed segments that hold nothing dead and were never
    /// rewritten, and seals the active segment first when it holds any frame, so that
    /// everything written so far is compressed (the next append starts a new segment).
    /// Default: only segments with something to remove are rewritten, and the active one
    /// is sealed only when it holds dead events.
    pub fn with_compress_all(mut self, all: bool) -> Self {
        self.compress_all = all;
        self
    }
}

/// What a scavenge did (or, from [`Store::reclaimable`], would do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScavengeReport {
    /// Segments read.
    pub segments_scanned: usize,
    /// Segments rewritten.
    pub segments_rewritten: usize,
    /// Bytes of the rewritten segments' files before.
    pub bytes_before: u64,
    /// Bytes of their files after.
    pub bytes_after: u64,
    /// Frames removed from the segments rewritten: appends, and markers (a clean close's
    /// checkpoint, padding), which a rewrite drops too. Markers alone are no reason to
    /// rewrite a segment.
    pub frames_removed: u64,
    /// Events removed.
    pub events_removed: u64,
    /// Bytes of the log's positions that held the removed frames (what a rewrite without
    /// compression gives back).
    pub dead_bytes: u64,
    /// Index entries removed.
    pub index_entries_removed: u64,
    /// Snapshots dropped (of hard-deleted and erased streams).
    pub snapshots_dropped: u64,
}

/// What a scavenge decides per stream, fixed when it starts.
#[derive(Debug)]
struct StreamFate {
    /// `None`: everything kept; `Some(None)`: hard deleted (nothing kept); else the rule.
    retention: Option<Option<Retention>>,
    /// The stream's last append: never removed unless it is hard deleted.
    last_position: Option<u64>,
    /// Still in the stream's dead prefix.
    prefix: bool,
}

/// Whether a frame is dead, and for a dead events frame its stream's index keys, first
/// version and event count.
type Verdict = (bool, Option<((u64, u32), u64, u32)>);

/// Decides, frame by frame in log order, what is dead.
struct Decider<'a> {
    inner: &'a Inner,
    visible: u64,
    now_us: i64,
    streams: FxHashMap<String, StreamFate>,
}

impl<'a> Decider<'a> {
    fn new(inner: &'a Inner) -> Self {
        Decider {
            inner,
            visible: inner.visible(),
            now_us: super::event::timestamp_us(inner.options.clock.now()),
            streams: FxHashMap::default(),
        }
    }

    fn fate(&mut self, stream: &str) -> Result<&mut StreamFate> {
        if !self.streams.contains_key(stream) {
            let rule = self.inner.registry.rule_at(stream, self.visible);
            // The stream's latest append as the writer sees it (appends go on meanwhile):
            // looking for the last one below a fixed end would pass over every append
            // made since, one index lookup each. Only a stream with a rule, or the system
            // stream, needs it: nothing of a stream without one is dead.
            let written = self.inner.log.written();
            let needs_last = rule.is_some() || stream == METADATA_STREAM;
            let last = if !needs_last {
                None
            } else {
                self.inner
                    .resolve(stream, u64::MAX, |pos| {
                        // Appends still in the writer's buffer are indexed already.
                        if pos >= written {
                            return Ok(None);
                        }
                        match self.inner.frame_at(pos, written) {
                            Ok(frame) => Ok(Some(frame)),
                            Err(Error::Scavenged { .. }) => Ok(None),
                            Err(e) => Err(e),
                        }
                    })?
                    .map(|f| f.entry)
            };
            let retention = match rule {
                None => None,
                Some(r) if r.tombstoned => Some(None),
                Some(r) => {
                    Retention::new(&r, last.map(|e| e.last_version()), self.now_us).map(Some)
                }
            };
            self.streams.insert(
                stream.to_string(),
                StreamFate {
                    retention,
                    last_position: last.map(|e| e.position),
                    prefix: true,
                },
            );
        }
        self.streams
            .get_mut(stream)
            .ok_or_else(|| Error::InvalidArgument("stream fate".into()))
    }

    /// Whether the frame is dead; `Some((stream keys, first version, count))` for a dead
    /// events frame.
    fn dead(&mut self, header: &FrameHeader, bytes: &FrameBytes) -> Result<Verdict> {
        match header.kind {
            FrameKind::Events => {}
            // Markers hold no data: a rewritten segment needs none of them (it is sealed,
            // and everything in it is attested by the segments after it).
            FrameKind::Checkpoint | FrameKind::Padding => return Ok((true, None)),
            FrameKind::Snapshot | FrameKind::Record => return Ok((false, None)),
        }
        let position = header.position;
        let body = format::decode_events_body(header, bytes.body())
            .map_err(|e| self.inner.corrupted_at(position, e))?;
        // Only a dead frame's summary is needed (for its removed run).
        let summary = |inner: &Inner| {
            Some((
                inner.index.keys(body.stream),
                body.first_version,
                u32::try_from(body.events.len()).unwrap_or(u32::MAX),
            ))
        };
        if body.stream == METADATA_STREAM {
            // Records of erased streams name them: they go. The stream's last record is
            // kept (its version numbers the next one).
            let fate = self.fate(METADATA_STREAM)?;
            if fate.last_position == Some(position) {
                return Ok((false, None));
            }
            let all_erased = body.events.iter().all(|e| {
                metadata::record_stream(e.event_type, e.data)
                    .is_some_and(|s| self.inner.registry.is_erased(&s))
            });
            return Ok((
                all_erased,
                all_erased.then(|| summary(self.inner)).flatten(),
            ));
        }
        // A consumer checkpoint the frame carries whose file is not written yet lives
        // only here until it is: the frame stays, and so do its stream's later frames.
        let holds_checkpoint = header.has_checkpoint()
            && self
                .inner
                .carries_pending_checkpoint(position.saturating_add(header.frame_len()));
        let committed = body.committed_at_us;
        let fate = self.fate(body.stream)?;
        let dead = match fate.retention {
            None => false,
            Some(None) => true,
            Some(Some(r)) => {
                fate.prefix
                    && fate.last_position != Some(position)
                    && body.events.iter().enumerate().all(|(i, e)| {
                        let version = body.first_version.saturating_add(i as u64);
                        !r.keeps(version, metadata::event_time_us(committed, e.timestamp_us))
                    })
            }
        };
        let dead = dead && !holds_checkpoint;
        if !dead {
            fate.prefix = false;
            return Ok((false, None));
        }
        Ok((true, summary(self.inner)))
    }
}

/// Paces reads to a rate.
struct Throttle {
    rate: Option<u64>,
    start: Instant,
    bytes: u64,
}

impl Throttle {
    fn new(rate: Option<u64>) -> Self {
        Throttle {
            rate,
            start: Instant::now(),
            bytes: 0,
        }
    }

    fn read(&mut self, bytes: u64) {
        self.bytes = self.bytes.saturating_add(bytes);
        if let Some(rate) = self.rate {
            let due = Duration::from_secs_f64(self.bytes as f64 / rate as f64);
            let elapsed = self.start.elapsed();
            if due > elapsed {
                std::thread::sleep(due - elapsed);
            }
        }
    }
}

/// One segment's verdict.
struct SegmentPlan {
    dead: Vec<u64>,
    /// The kept frames (position, bytes checked by the scan), in order, when the plan is
    /// for a rewrite: the rewrite takes them from here instead of reading and checking
    /// the segment a second time. Bytes of a mapped segment are borrowed from its map.
    kept: Option<Vec<(u64, FrameBytes)>>,
    /// Kept frames sampled for the dictionary of its rewrite (dead frames are never
    /// offered: an erased stream's bytes must not live on in a dictionary).
    sampler: DictionarySampler,
    runs: Vec<RemovedRun>,
    /// Index in `runs` of the last run of each stream (by its keys).
    last_run: FxHashMap<(u64, u32), usize>,
    frames_removed: u64,
    events_removed: u64,
    dead_bytes: u64,
    read_bytes: u64,
}

impl Store {
    /// Scavenges the store: rewrites its sealed segments without their dead frames (see
    /// below), each surviving frame kept byte for byte at its position, so that
    /// positions, resume tokens and checkpoints stay valid. The active segment is sealed
    /// first (the next append starts a new one), so what was deleted just now is
    /// reclaimed too. Segments are rewritten one at a time, crash-safely (new file,
    /// sync, atomic rename over the old one, sync of the directory); then the index is
    /// rewritten without their entries, and snapshots of hard-deleted streams are
    /// dropped. Appends, reads and subscriptions go on meanwhile: readers already in an
    /// old file finish it, and positions never change.
    ///
    /// Dead: every event of the frame hidden by the stream's metadata (deleted, hard
    /// deleted, erased, expired by `max_age`, below `truncate_before`, past `max_count`),
    /// in the stream's first frames (only a prefix of a stream is removed) and not its
    /// last frame unless it is hard deleted; clean-close and padding markers; records of
    /// erased streams in the system stream. What is removed stays removed when a rule is
    /// lifted later (reads start at the first surviving version). A rule changed while a
    /// scavenge runs may or may not be taken into account by it.
    ///
    /// Rewritten segments are compressed with zstd (see [`ScavengeOptions`]). A crash
    /// during a scavenge leaves each segment whole, old or new; the next open rebuilds
    /// the index, and the next scavenge goes on where it stopped.
    ///
    /// # Errors
    /// [`Error::ReadOnly`] on a read-only store; [`Error::UnsupportedFormat`] for snapshot
    /// files of a newer format (before anything is written); [`Error::Corrupted`] for
    /// damage met in a segment (nothing of that segment is rewritten); I/O errors
    /// (segments already switched stay switched, the rest stay as they were).
    pub fn scavenge(&self, options: &ScavengeOptions) -> Result<ScavengeReport> {
        self.scavenge_with(options, |_, _| {})
    }

    /// [`Store::scavenge`], calling `progress(bytes read, bytes to read)` as it goes.
    ///
    /// # Errors
    /// As [`Store::scavenge`].
    pub fn scavenge_with(
        &self,
        options: &ScavengeOptions,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<ScavengeReport> {
        let inner = &*self.inner;
        if inner.options.read_only {
            return Err(Error::ReadOnly);
        }
        let _one = inner.scavenging.lock();
        // The snapshot files are opened (at their first use) before anything is written:
        // a scavenge ends by dropping snapshots, and snapshot files it could not open
        // (a newer format) would stop it half done.
        inner.snapshots.report()?;
        // The active segment is sealed (and so rewritten below) when it holds dead events,
        // or, when everything is to be compressed, any events frame: markers (a seal's
        // padding, clean closes' checkpoints) alone are nothing to compress, and sealing
        // them would leave one more empty segment behind every run. The end first, then
        // the segment: appends may start a new segment meanwhile, and a segment sealed
        // since ends where its file does.
        let visible = inner.visible();
        if let Some(active) = inner.log.segments().last() {
            let end = match active.sealed_end() {
                Some(sealed) => sealed.min(visible),
                None => visible,
            };
            let seal = if options.compress_all && options.compression_level.is_some() {
                // The first events frame decides: no pass over the whole segment, which
                // the rewrite reads anyway.
                let mut frames = inner.log.frames(active.base(), end);
                frames
                    .find_map(|f| match f {
                        Ok((h, _)) if h.kind == FrameKind::Events => Some(Ok(true)),
                        Ok(_) => None,
                        Err(e) => Some(Err(e)),
                    })
                    .transpose()?
                    .unwrap_or(false)
            } else {
                let mut decider = Decider::new(inner);
                let mut unthrottled = Throttle::new(None);
                let offset = end.saturating_sub(active.base());
                plan_segment(&mut decider, active, offset, &mut unthrottled, false)?.events_removed
                    > 0
            };
            if seal {
                inner.seal_active_holding_more_than(0)?;
            }
        }
        let marker = inner.dir.join(SCAVENGE_MARKER);
        let storage = inner.options.storage.as_ref();
        storage
            .create(&marker)
            .and_then(|f| f.sync_data())
            .and_then(|()| storage.sync_dir(&inner.dir))
            .map_err(|e| Error::io(format!("create {}", marker.display()), e))?;
        let report = self.scavenge_segments(options, &mut progress, false)?;
        storage
            .remove(&marker)
            .and_then(|()| storage.sync_dir(&inner.dir))
            .map_err(|e| Error::io(format!("remove {}", marker.display()), e))?;
        Ok(report)
    }

    /// What a scavenge would remove now, without writing anything: dead frames, events
    /// and bytes in every segment, the active one included.
    ///
    /// # Errors
    /// [`Error::Corrupted`] for damage met; I/O errors.
    pub fn reclaimable(&self) -> Result<ScavengeReport> {
        self.scavenge_segments(&ScavengeOptions::default(), &mut |_, _| {}, true)
    }

    /// Erases `stream` for good: hard deletes it (recorded without its name: it can never
    /// be appended to, read or deleted again, as after [`Store::tombstone_stream`]), then
    /// scavenges every segment, rewrites the index and drops the stream's snapshots, so
    /// that afterwards none of the stream's events, metadata or name is in any file of the
    /// store. A stream already hard deleted can still be erased. Returns what the scavenge
    /// did.
    ///
    /// # Errors
    /// As [`Store::tombstone_stream`] (a stream already erased is no error: the scavenge
    /// runs again), and as [`Store::scavenge`].
    pub fn erase_stream(
        &self,
        stream: &str,
        expected: super::ExpectedVersion,
    ) -> Result<ScavengeReport> {
        // Nothing is recorded unless the scavenge after it can drop the stream's snapshots.
        self.inner.snapshots.report()?;
        if !self.inner.registry.is_erased(stream) {
            self.erase_record(stream, expected)?;
        }
        self.scavenge(&ScavengeOptions::default())
    }

    fn scavenge_segments(
        &self,
        options: &ScavengeOptions,
        progress: &mut dyn FnMut(u64, u64),
        dry_run: bool,
    ) -> Result<ScavengeReport> {
        let inner = &*self.inner;
        let visible = inner.visible();
        let mut decider = Decider::new(inner);
        let segments = inner.log.segments();
        let last = segments.len().saturating_sub(1);
        let total: u64 = segments.iter().map(|s| s.logical_len().unwrap_or(0)).sum();
        let mut throttle = Throttle::new(options.max_bytes_per_s);
        let mut report = ScavengeReport::default();
        let mut removed: FxHashSet<u64> = FxHashSet::default();
        let mut done = 0u64;
        let system_keys = inner.index.keys(METADATA_STREAM);
        let mut floors: FxHashMap<(u64, u32), u64> = FxHashMap::default();
        // A segment's rewrite (its dictionary and compression: most of a scavenge's CPU)
        // runs on a second thread while this one decides the next segment's frames. Every
        // file operation stays on this thread: segments are switched one at a time, in
        // log order (the next segment is read before the one before it is switched, which
        // no decision depends on).
        std::thread::scope(|scope| -> Result<()> {
            let mut pending: Option<PendingRewrite<'_, '_>> = None;
            for (i, seg) in segments.iter().enumerate() {
                // The active segment is rewritten only after the next scavenge seals it.
                let sealed = i < last;
                if !dry_run && !sealed {
                    break;
                }
                let end = if sealed {
                    seg.logical_len()?
                } else {
                    match seg.sealed_end() {
                        Some(sealed) => sealed.min(visible),
                        None => visible,
                    }
                    .saturating_sub(seg.base())
                };
                let plan = plan_segment(&mut decider, seg, end, &mut throttle, !dry_run)?;
                done = done.saturating_add(plan.read_bytes);
                progress(done, total);
                report.segments_scanned += 1;
                // Markers alone (a clean close's checkpoint, padding) are not worth a
                // rewrite.
                let rewrite = plan.events_removed > 0
                    || (options.compress_all
                        && !seg.is_compacted()
                        && options.compression_level.is_some()
                        && plan.kept.as_ref().is_some_and(|k| !k.is_empty()));
                if !rewrite {
                    // What stays in the file is not counted as removed (nor, by
                    // `reclaimable`, as reclaimable).
                    continue;
                }
                report.frames_removed += plan.frames_removed;
                report.events_removed += plan.events_removed;
                report.dead_bytes += plan.dead_bytes;
                if dry_run {
                    continue;
                }
                let before = seg.file_len()?;
                // Only sealed segments get here: `end` is the segment's logical length.
                let logical_end = seg.base().saturating_add(end);
                if let Some(done) = pending.take() {
                    done.switch(inner, &mut report, &mut floors, &mut removed, system_keys)?;
                }
                let base = seg.base();
                pending = Some(PendingRewrite {
                    seg,
                    before,
                    // A panic in the rewrite (a bug) becomes its error: the segment keeps
                    // its old file, and the scope never re-raises it on an error path.
                    work: scope.spawn(move || {
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            rewrite_segment(base, logical_end, plan, options)
                        }))
                        .unwrap_or_else(|_| Err(rewrite_panicked(base)))
                    }),
                });
            }
            if let Some(done) = pending.take() {
                done.switch(inner, &mut report, &mut floors, &mut removed, system_keys)?;
            }
            Ok(())
        })?;
        if dry_run {
            return Ok(report);
        }
        for (keys, floor) in floors {
            inner.registry.note_scavenged(keys, floor);
        }
        if !removed.is_empty() {
            report.index_entries_removed = inner.index.remove_entries(&|p| removed.contains(&p))?;
            // Decoded frames of removed positions must not outlive their files.
            inner.frames.lock().clear();
        }
        let registry = &inner.registry;
        // Snapshots of hard-deleted streams, and those whose versions are gone: a state
        // made of removed events must not outlive them.
        let (_, dropped) = inner
            .snapshots
            .reclaim_filtered(usize::MAX, &|stream, version| {
                registry.is_erased(stream)
                    || registry.latest(stream).is_some_and(|r| r.tombstoned)
                    || version < registry.scavenged_floor(stream)
            })?;
        report.snapshots_dropped = dropped;
        Ok(report)
    }
}

/// Reads a segment's frames up to `end` (an offset from its base) and decides what is dead;
/// `for_rewrite`: keeps the kept frames for [`rewrite_segment`].
fn plan_segment(
    decider: &mut Decider<'_>,
    seg: &std::sync::Arc<Segment>,
    end: u64,
    throttle: &mut Throttle,
    for_rewrite: bool,
) -> Result<SegmentPlan> {
    let mut plan = SegmentPlan {
        dead: Vec::new(),
        kept: for_rewrite.then(Vec::new),
        sampler: DictionarySampler::new(seg.first_frame_position(), seg.base().saturating_add(end)),
        runs: Vec::new(),
        last_run: FxHashMap::default(),
        frames_removed: 0,
        events_removed: 0,
        dead_bytes: 0,
        read_bytes: 0,
    };
    // Runs already removed from a rewritten segment stay on record.
    if let Some(map) = seg.compact_map()? {
        plan.runs.extend_from_slice(map.removed());
    }
    for (i, r) in plan.runs.iter().enumerate() {
        plan.last_run.insert((r.hash, r.check), i);
    }
    let mut reader = seg.reader();
    let how = reader.scan(format::SEGMENT_HEADER_LEN as u64, end, |h, bytes| {
        plan.read_bytes = plan.read_bytes.saturating_add(h.frame_len());
        throttle.read(h.frame_len());
        let (dead, summary) = decider.dead(h, bytes)?;
        if !dead {
            let len = usize::try_from(h.frame_len()).unwrap_or(usize::MAX);
            plan.sampler
                .offer(h.position, bytes.get(..len).unwrap_or_default());
            if let Some(kept) = &mut plan.kept {
                kept.push((h.position, bytes.clone()));
            }
            return Ok(());
        }
        plan.dead.push(h.position);
        plan.frames_removed += 1;
        plan.dead_bytes = plan.dead_bytes.saturating_add(h.frame_len());
        if let Some(((hash, check), first_version, count)) = summary {
            plan.events_removed += u64::from(count);
            let merged = plan
                .last_run
                .get(&(hash, check))
                .and_then(|&i| plan.runs.get_mut(i));
            match merged {
                Some(r) if r.first_version.saturating_add(r.count) == first_version => {
                    r.count = r.count.saturating_add(u64::from(count));
                }
                _ => {
                    plan.last_run.insert((hash, check), plan.runs.len());
                    plan.runs.push(RemovedRun {
                        hash,
                        check,
                        first_version,
                        count: u64::from(count),
                        position: h.position,
                    });
                }
            }
        }
        Ok(())
    })?;
    match how {
        crate::segment::ScanEnd::Clean { .. } => Ok(plan),
        crate::segment::ScanEnd::ZeroTail { .. } if !seg.is_sealed() => Ok(plan),
        crate::segment::ScanEnd::ZeroTail { offset, .. } => Err(Error::corrupted(
            seg.path(),
            offset,
            "zeros inside a sealed segment",
        )),
        crate::segment::ScanEnd::Damaged { offset, reason } => {
            Err(Error::corrupted(seg.path(), offset, reason.to_string()))
        }
    }
}

/// The error of a rewrite that panicked (a bug, not the caller's input nor the disk's):
/// the segment keeps its old file.
fn rewrite_panicked(base: u64) -> Error {
    Error::io(
        format!("rewrite the segment at {base}"),
        std::io::Error::other("the rewrite panicked; the segment keeps its file"),
    )
}

/// A segment's rewrite made on a second thread, switched in by the scavenge's own.
struct PendingRewrite<'scope, 'a> {
    seg: &'a std::sync::Arc<Segment>,
    /// Bytes of its file before.
    before: u64,
    work: std::thread::ScopedJoinHandle<'scope, Result<Rewritten>>,
}

/// What a segment's rewrite made: the file's bytes, the dead positions, and the removed
/// runs the file records (in position order).
struct Rewritten {
    bytes: Vec<u8>,
    dead: Vec<u64>,
    runs: Vec<RemovedRun>,
}

impl PendingRewrite<'_, '_> {
    /// Waits for the rewrite, switches the new file in, and accounts for it.
    fn switch(
        self,
        inner: &Inner,
        report: &mut ScavengeReport,
        floors: &mut FxHashMap<(u64, u32), u64>,
        removed: &mut FxHashSet<u64>,
        system_keys: (u64, u32),
    ) -> Result<()> {
        let Rewritten { bytes, dead, runs } = self
            .work
            .join()
            .map_err(|_| rewrite_panicked(self.seg.base()))??;
        inner.log.replace_segment(self.seg.base(), &bytes)?;
        report.segments_rewritten += 1;
        report.bytes_before += self.before;
        report.bytes_after += bytes.len() as u64;
        for run in &runs {
            if (run.hash, run.check) != system_keys {
                let floor = floors.entry((run.hash, run.check)).or_insert(0);
                *floor = (*floor).max(run.first_version.saturating_add(run.count));
            }
        }
        removed.extend(dead);
        Ok(())
    }
}

/// The rewritten file of the segment at `base` (ending at position `logical_end`) made of
/// the frames `plan` kept (checked when it read them): its blocks compressed with a
/// dictionary of the kept frames `plan` sampled, unless `options` say uncompressed.
/// No I/O: it runs beside the scavenge.
fn rewrite_segment(
    base: u64,
    logical_end: u64,
    plan: SegmentPlan,
    options: &ScavengeOptions,
) -> Result<Rewritten> {
    let mut writer = match options.compression_level {
        Some(level) => CompactWriter::with_dictionary(
            base,
            format::FORMAT_VERSION,
            level,
            &plan.sampler.finish(level),
            options.block_target_bytes,
        ),
        None => CompactWriter::new(base, format::FORMAT_VERSION),
    };
    let kept = plan
        .kept
        .ok_or_else(|| Error::InvalidArgument("a scavenge plan without its frames".into()))?;
    // Blocks are compressed on as many threads as there are cores (up to 4): a
    // segment's blocks are independent once its dictionary is made. A paced scavenge
    // (`max_bytes_per_s`) leaves the other cores alone.
    let threads = match options.max_bytes_per_s {
        Some(_) => 1,
        None => std::thread::available_parallelism().map_or(1, |n| n.get().min(4)),
    };
    writer.push_frames_parallel(&kept, threads);
    drop(kept);
    let mut runs = plan.runs;
    runs.sort_by_key(|r| r.position);
    Ok(Rewritten {
        bytes: writer.finish(logical_end, &runs),
        dead: plan.dead,
        runs,
    })
}

impl Inner {
    /// Seals the active segment when it holds more than `bytes` of frames: a padding frame
    /// (a header, no data) is committed as the first frame of a new segment, which seals
    /// the old one.
    pub(super) fn seal_active_holding_more_than(&self, bytes: u64) -> Result<()> {
        let end = {
            let mut writer = self.writer.lock();
            if writer.appender.active_frame_bytes() <= bytes {
                return Ok(());
            }
            writer.appender.roll_next_segment();
            let watermark = self.log.durable();
            let (position, buf) = writer.appender.reserve(FRAME_HEADER_LEN as u64);
            format::encode_padding_frame(buf, position, watermark, FRAME_HEADER_LEN);
            position.saturating_add(FRAME_HEADER_LEN as u64)
        };
        self.commit(end)
    }
}
