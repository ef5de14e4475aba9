//! What the store tells about itself: a summary ([`StoreInfo`]) and verification of every
//! frame and of the index against the log.

use std::path::PathBuf;

use super::{Durability, Position, Store};
use crate::error::Result;
use crate::format::{self, FrameKind};
use crate::index::IndexReport;
use crate::log::{LogRecovery, TruncatedTail, VerifyReport};

/// What recovery found and did when the store was opened: the log's tail and the index.
/// The snapshot files are opened at their first use and report apart
/// ([`Store::snapshot_report`]).
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
    pub index: IndexReport,
}

impl RecoveryReport {
    /// The log's part of the report, with the index's to come.
    pub(super) fn from_log(log: LogRecovery, index: IndexReport) -> Self {
        RecoveryReport {
            segments: log.segments,
            frames: log.frames,
            clean_shutdown: log.clean_shutdown,
            attested_position: log.attested_position,
            truncated: log.truncated,
            removed_segments: log.removed_segments,
            replayed_from: log.replayed_from,
            index,
        }
    }

    /// Whether recovery changed or would change anything on disk.
    pub fn is_clean(&self) -> bool {
        self.truncated.is_none() && self.removed_segments.is_empty()
    }
}

/// A summary of an open store.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreInfo {
    /// Segment files.
    pub segments: usize,
    /// Bytes of the log: the positions its segments cover (what they held before any
    /// scavenge rewrote them).
    pub bytes: u64,
    /// Bytes of the segment files on disk: less than [`StoreInfo::bytes`] once a scavenge
    /// removed frames or compressed segments.
    pub physical_bytes: u64,
    /// Events stored.
    pub events: u64,
    /// Streams with at least one event.
    pub streams: u64,
    /// Appends (frames of events) stored.
    pub appends: u64,
    /// End of the log: where the next append goes.
    pub head: Position,
    /// Everything below this is on disk. A read-only open cannot sync and takes what it
    /// finds as durable (its readers see all of it): after a crash of a `Buffered` or
    /// `Periodic` writer, part of that may still be only in the OS cache until the next
    /// writer syncs; `recovery_report().attested_position` is what is known durable.
    pub durable: Position,
    /// The durability mode in force.
    pub durability: Durability,
    /// Live index table files.
    pub index_tables: usize,
    /// Log position the index files cover (the log after it is replayed at open).
    pub index_covered: Position,
    /// The last error writing index files, if any (retried; no data is at risk).
    pub index_error: Option<String>,
    /// Index entries held in memory (the memtable, and a frozen one waiting to be
    /// written): bounded by about twice [`Options::memtable_entries`](crate::Options),
    /// in a read-only handle following a live writer too.
    pub index_memory_entries: usize,
    /// Snapshots stored.
    pub snapshots: u64,
    /// Bytes of the snapshot segment files.
    pub snapshot_bytes: u64,
}

/// How many events a valid frame holds; an events frame's versions go to `continuity`
/// (frames come in log order).
pub(crate) fn count_and_check_versions(
    continuity: &std::cell::RefCell<crate::index::VersionContinuity>,
    header: &crate::format::FrameHeader,
    body: &[u8],
) -> u64 {
    if header.kind != FrameKind::Events {
        return 0;
    }
    match format::decode_events_summary(header, body) {
        Ok((stream, first_version, count)) => {
            continuity
                .borrow_mut()
                .see(stream, first_version, count, header.position);
            u64::from(count)
        }
        Err(_) => 0,
    }
}

impl Store {
    /// How long the store's commit syncs (`fdatasync` of the active segment, one per group
    /// commit, or per [`Store::sync`]) have taken since it opened: a read-only view of
    /// counters the log keeps, for monitoring (the server's `/metrics`). Syncs made while
    /// sealing a segment are not counted; the one an open after a crash makes under
    /// [`Durability::Sync`](crate::Durability::Sync) is.
    pub fn sync_stats(&self) -> crate::SyncStats {
        self.inner.log.sync_stats()
    }

    /// A summary of the store. Opens the snapshot files if nothing has yet (it counts
    /// them).
    ///
    /// # Errors
    /// I/O errors reading file sizes; as [`Store::snapshot_report`] for the snapshot files
    /// ([`Error::UnsupportedFormat`](crate::Error::UnsupportedFormat) for ones of a newer
    /// format).
    pub fn info(&self) -> Result<StoreInfo> {
        let files = self.inner.log.segment_files()?;
        // Zeros preallocated past the end of the active segment are not the log's.
        let preallocated = match self.inner.log.segments().last() {
            Some(active) => active
                .file_len()?
                .saturating_sub(self.inner.log.written().saturating_sub(active.base())),
            None => 0,
        };
        let physical_bytes = files
            .iter()
            .map(|(_, len)| len)
            .sum::<u64>()
            .saturating_sub(preallocated);
        let (snapshots, snapshot_bytes) = self.inner.snapshots.stats()?;
        let totals = self.inner.index.totals();
        let manifest = self.inner.index.manifest();
        Ok(StoreInfo {
            segments: files.len(),
            // The log's bytes: positions count them, and the files' lengths may include
            // preallocated zeros past the end.
            bytes: self
                .inner
                .log
                .segments()
                .iter()
                .map(|s| s.logical_len())
                .sum::<Result<u64>>()?
                .min(self.inner.log.written()),
            physical_bytes,
            events: totals.events,
            streams: totals.streams,
            appends: totals.appends,
            head: Position(self.inner.log.written()),
            durable: Position(self.inner.log.durable()),
            durability: self.inner.options.durability,
            index_tables: self.inner.index.table_count(),
            index_covered: Position(manifest.covered_position),
            index_error: self.inner.index_error.lock().clone(),
            index_memory_entries: self.inner.index.memory_entries(),
            snapshots,
            snapshot_bytes,
        })
    }

    /// Checks every frame of every segment (CRC, position, structure), and the index
    /// against the log: every append must be found through the index at its position, and
    /// the index must hold no other entries; then every frame of the snapshot files
    /// ([`VerifyReport::snapshots`]). Reports what it found; never writes. `progress` is
    /// called with the bytes checked, as they go.
    ///
    /// # Errors
    /// I/O errors.
    pub fn verify(&self, mut progress: impl FnMut(u64)) -> Result<VerifyReport> {
        let visible = self.visible();
        let continuity =
            std::cell::RefCell::new(crate::index::VersionContinuity::default().with_removed(
                self.inner.index.hashing(),
                crate::inspect::removed_runs(&self.inner.log.segments()),
            ));
        let mut report = self.inner.log.verify(visible, &mut progress, |h, bytes| {
            count_and_check_versions(&continuity, h, bytes.body())
        })?;
        report.version_problems = continuity.into_inner().into_problems();
        report.index_problems = self.inner.index.check_against_log(visible, |visit| {
            for item in self.inner.log.frames(0, visible) {
                let Ok((header, bytes)) = item else {
                    return Ok(true);
                };
                if header.kind == FrameKind::Events
                    && let Ok((stream, first_version, count)) =
                        format::decode_events_summary(&header, bytes.body())
                {
                    visit(stream, first_version, count, header.position);
                }
            }
            Ok(false)
        })?;
        report.snapshots = self.inner.snapshots.verify(&mut progress)?;
        Ok(report)
    }
}
