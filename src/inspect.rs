//! Read-only inspection of a store directory: [`verify_dir`] and [`dump`]. Neither ever
//! writes, and both go on past damage, decoding as much of a damaged file as they can.

// What a dump shows of a frame, and how segment files are named: what tools need of the
// layout, without the engine's layers.
pub use crate::format::{FrameHeader, FrameKind};
pub use crate::segment::{parse_segment_file_name, segment_file_name};

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::{self, FRAME_HEADER_LEN, SEGMENT_HEADER_LEN, SEGMENT_KIND_EVENTS};
use crate::index::{Hashing, Index};
use crate::io::{FsStorage, Storage};
use crate::log::{VerifyReport, list_segment_files, open_segments, verify_segments};
use crate::segment::{ScanEnd, Segment};
use crate::store::{
    EventId, INDEX_DIR, LOCK_FILE, Position, RecordedEvent, SEGMENTS_DIR, SNAPSHOTS_DIR,
};

/// Checks every frame of every segment in the store at `dir`, the index files against the
/// log, and every frame of the snapshot files, without opening it for writing (a shared lock keeps writers out meanwhile). Damage is classified by the
/// recovery rule: corruption of attested data, or a torn tail that recovery would cut.
/// `progress` is called with the size of each frame checked.
///
/// # Errors
/// [`Error::Locked`] while a writer has the store open; [`Error::Corrupted`] when the
/// segment files do not line up; [`Error::UnsupportedFormat`] when a segment or index file
/// was written by a newer streamlog; [`Error::InvalidArgument`] when `dir` holds no store;
/// [`Error::Io`] on read failure.
pub fn verify_dir(dir: &Path, mut progress: impl FnMut(u64)) -> Result<VerifyReport> {
    let storage = FsStorage;
    let segments_dir = dir.join(SEGMENTS_DIR);
    if !segments_dir.is_dir() {
        return Err(Error::InvalidArgument(format!(
            "no streamlog store in {}",
            dir.display()
        )));
    }
    let lock_path = dir.join(LOCK_FILE);
    let lock = storage
        .try_lock(&lock_path, true)
        .map_err(|e| Error::io(format!("lock {}", lock_path.display()), e))?;
    // Beside a live writer, check what it published as written: its unfinished tail is
    // not damage.
    let limit = match lock {
        Some(_) => u64::MAX,
        None => crate::store::read_live(&storage, dir)?.ok_or(Error::Locked { path: lock_path })?,
    };
    let _lock = lock;
    let segments = open_segments(&storage, &segments_dir, SEGMENT_KIND_EVENTS, true)?;
    for seg in segments.iter().take(segments.len().saturating_sub(1)) {
        seg.seal()?;
    }
    let continuity = std::cell::RefCell::new(
        crate::index::VersionContinuity::default()
            .with_removed(crate::index::Hashing::Standard, removed_runs(&segments)),
    );
    let mut report = verify_segments(&segments, limit, &mut progress, &|h, bytes| {
        crate::store::count_and_check_versions(&continuity, h, bytes.body())
    })?;
    report.version_problems = continuity.into_inner().into_problems();
    // A scavenge a crash interrupted leaves index files that may still name removed
    // frames: the next open rebuilds the index from the segments (the marker says so), so
    // they are not checked against the log.
    let interrupted_scavenge = dir.join(crate::store::SCAVENGE_MARKER).exists();
    if !interrupted_scavenge {
        report.index_problems = check_index(dir, &segments)?;
    }
    // The snapshot files, opened read-only as a store's first use of them would.
    let snapshots = crate::snapshot::SnapshotStore::open(
        Arc::new(storage),
        &dir.join(SNAPSHOTS_DIR),
        Hashing::Standard,
        crate::Options::default().segment_size_bytes,
        true,
    );
    report.snapshots = snapshots.verify(&mut progress)?;
    Ok(report)
}

/// What the rewritten segments among `segments` record as removed (damaged ones are
/// passed over: verification reports them).
pub(crate) fn removed_runs(segments: &[Arc<Segment>]) -> Vec<crate::format::compact::RemovedRun> {
    segments
        .iter()
        .filter_map(|s| s.compact_map().ok().flatten())
        .flat_map(|m| m.removed().to_vec())
        .collect()
}

/// Checks the index files against the log: the manifest and every table block decode, the
/// manifest describes this log, and every append below the covered position is found
/// through the index at its position, with no other entries.
fn check_index(dir: &Path, segments: &[Arc<Segment>]) -> Result<Vec<String>> {
    let index_dir = dir.join(INDEX_DIR);
    let mut problems = Vec::new();
    if !index_dir.is_dir() {
        return Ok(problems);
    }
    let (index, report) =
        Index::open(Arc::new(FsStorage), &index_dir, Hashing::Standard, 16, true)?;
    if let Some(why) = report.rebuilt {
        problems.push(format!("index: {why}"));
        return Ok(problems);
    }
    let manifest = index.manifest();
    if let Err(why) = crate::log::check_covered(
        segments,
        manifest.covered_position,
        manifest.last_frame_position,
        manifest.last_frame_crc,
    ) {
        problems.push(format!("index: {why}"));
        return Ok(problems);
    }
    let covered = manifest.covered_position;
    let found = index.check_against_log(covered, |visit| {
        let mut log_damaged = false;
        for seg in segments {
            let end = seg.logical_len()?.min(covered.saturating_sub(seg.base()));
            if end <= SEGMENT_HEADER_LEN as u64 {
                continue;
            }
            let how = seg
                .reader()
                .scan(SEGMENT_HEADER_LEN as u64, end, |h, bytes| {
                    if h.kind == FrameKind::Events
                        && let Ok((stream, first_version, count)) =
                            format::decode_events_summary(h, bytes.body())
                    {
                        visit(stream, first_version, count, h.position);
                    }
                    Ok(())
                })?;
            log_damaged |= !matches!(how, ScanEnd::Clean { .. });
        }
        Ok(log_damaged)
    })?;
    problems.extend(found.into_iter().map(|p| format!("index: {p}")));
    Ok(problems)
}

/// One item of a [`dump`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DumpItem {
    /// A segment file's header.
    Segment {
        /// The file.
        file: PathBuf,
        /// Its length.
        len: u64,
        /// The base position from the header, or why the header is bad.
        header: std::result::Result<u64, String>,
    },
    /// A valid frame.
    Frame {
        /// The file.
        file: PathBuf,
        /// File offset.
        offset: u64,
        /// The frame header.
        header: FrameHeader,
        /// Its events (empty for a checkpoint).
        events: Vec<RecordedEvent>,
    },
    /// A damaged frame: what could be decoded of it.
    Damaged {
        /// The file.
        file: PathBuf,
        /// File offset.
        offset: u64,
        /// What is wrong.
        reason: String,
        /// The header, if its fields decode.
        header: Option<FrameHeader>,
        /// Bytes skipped until the next valid frame (or the end of the file).
        skipped: u64,
    },
    /// Zeros from `offset` to the end of the file.
    ZeroTail {
        /// The file.
        file: PathBuf,
        /// File offset where the zeros start.
        offset: u64,
        /// How many.
        bytes: u64,
    },
}

/// Decodes the frames of every segment of the store at `dir` (or of the one segment file
/// `segment`, a path or a name in `DIR/segments`), including damaged ones, and hands each
/// to `visit`. Takes no lock and never writes: it can look at a store in use.
///
/// # Errors
/// [`Error::InvalidArgument`] when there is nothing to dump; [`Error::UnsupportedFormat`]
/// at a segment written by a newer streamlog (its frames would be misread); [`Error::Io`]
/// on read failure; any error of `visit`.
pub fn dump(
    dir: &Path,
    segment: Option<&Path>,
    mut visit: impl FnMut(DumpItem) -> Result<()>,
) -> Result<()> {
    let storage = FsStorage;
    let segments_dir = dir.join(SEGMENTS_DIR);
    let segments: Vec<Arc<Segment>> = match segment {
        Some(p) => {
            let path = if p.exists() {
                p.to_path_buf()
            } else {
                segments_dir.join(p)
            };
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            let base = parse_segment_file_name(name).unwrap_or(0);
            vec![Arc::new(Segment::open(
                &storage,
                &path,
                base,
                SEGMENT_KIND_EVENTS,
                true,
            )?)]
        }
        None => {
            if !segments_dir.is_dir() {
                return Err(Error::InvalidArgument(format!(
                    "no streamlog store in {}",
                    dir.display()
                )));
            }
            // Listed like the log lists them, but not required to be contiguous: a dump
            // shows every segment, gaps and overlaps included.
            list_segment_files(&storage, &segments_dir)?
                .into_iter()
                .map(|(base, path)| {
                    Segment::open(&storage, &path, base, SEGMENT_KIND_EVENTS, true).map(Arc::new)
                })
                .collect::<Result<_>>()?
        }
    };
    for seg in segments {
        dump_segment(&seg, &mut visit)?;
    }
    Ok(())
}

fn dump_segment(seg: &Arc<Segment>, visit: &mut impl FnMut(DumpItem) -> Result<()>) -> Result<()> {
    let file = seg.path().to_path_buf();
    let len = seg.file_len()?;
    let header = seg
        .check_header()?
        .map(|h| h.base_position)
        .map_err(|e| e.to_string());
    visit(DumpItem::Segment {
        file: file.clone(),
        len,
        header,
    })?;
    // A rewritten segment's frames are found by position (offsets from its base, up to
    // its logical end), not by file offset.
    let len = match seg.compact_map() {
        Ok(Some(map)) => map.logical_end().saturating_sub(seg.base()),
        _ => len,
    };
    let mut reader = seg.reader();
    let mut from = SEGMENT_HEADER_LEN as u64;
    while from < len {
        let how = reader.scan(from, len, |h, bytes| {
            let mut events = Vec::new();
            if h.kind == FrameKind::Events
                && let Ok(body) = format::decode_events_body(h, bytes.body())
            {
                let stream: Arc<str> = Arc::from(body.stream);
                for (i, e) in body.events.iter().enumerate() {
                    events.push(RecordedEvent {
                        stream: Arc::clone(&stream),
                        version: body.first_version.saturating_add(i as u64),
                        position: Position(h.position),
                        append_index: u32::try_from(i).unwrap_or(u32::MAX),
                        id: EventId(e.id),
                        event_type: e.event_type.to_string(),
                        timestamp_us: e.timestamp_us,
                        committed_at_us: body.committed_at_us,
                        schema_version: e.schema_version,
                        metadata: e.metadata.to_vec(),
                        data: e.data.to_vec(),
                    });
                }
            }
            visit(DumpItem::Frame {
                file: file.clone(),
                offset: h.position.saturating_sub(seg.base()),
                header: *h,
                events,
            })
        })?;
        match how {
            ScanEnd::Clean { .. } => break,
            ScanEnd::ZeroTail { offset, bytes } => {
                visit(DumpItem::ZeroTail {
                    file: file.clone(),
                    offset,
                    bytes,
                })?;
                break;
            }
            ScanEnd::Damaged { offset, reason } => {
                let raw = reader.raw(offset, FRAME_HEADER_LEN)?;
                let next = reader.resync(offset.saturating_add(1), len)?;
                visit(DumpItem::Damaged {
                    file: file.clone(),
                    offset,
                    reason: reason.to_string(),
                    header: format::decode_frame_header(&raw).ok(),
                    skipped: next.unwrap_or(len).saturating_sub(offset),
                })?;
                match next {
                    Some(n) => from = n,
                    None => break,
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::{ExpectedVersion, NewEvent, Options, Store};

    /// Writes three or more segments, closes, and removes the second one: a gap.
    fn store_with_a_missing_segment(dir: &Path) -> Vec<u64> {
        let options = Options::default().with_segment_size_bytes(4096);
        let store = Store::open_with(dir, options).unwrap();
        for i in 0..60u32 {
            store
                .append("s", ExpectedVersion::Any, [NewEvent::new("E", [0u8; 200])])
                .unwrap_or_else(|e| panic!("append {i}: {e}"));
        }
        store.close().unwrap();
        let segments_dir = dir.join(SEGMENTS_DIR);
        let files = list_segment_files(&FsStorage, &segments_dir).unwrap();
        assert!(files.len() >= 3, "{files:?}");
        std::fs::remove_file(&files[1].1).unwrap();
        // Not a segment name: ignored by the listing.
        std::fs::write(segments_dir.join("notes.txt"), b"x").unwrap();
        files
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != 1)
            .map(|(_, (base, _))| *base)
            .collect()
    }

    #[test]
    fn dump_goes_on_past_a_gap_between_segments_that_verify_reports() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let bases = store_with_a_missing_segment(&dir);
        let mut dumped = Vec::new();
        let mut frames = 0;
        dump(&dir, None, |item| {
            match item {
                DumpItem::Segment { header, .. } => dumped.push(header.unwrap()),
                DumpItem::Frame { .. } => frames += 1,
                other => panic!("unexpected {other:?}"),
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(dumped, bases);
        assert!(frames > 0);
        assert!(matches!(
            verify_dir(&dir, |_| {}),
            Err(Error::Corrupted { .. })
        ));
    }
}
