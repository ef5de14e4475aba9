//! Opening an index together with the log it indexes: the index's files first, then the
//! log, whose recovery replays every frame the index does not cover into it. Event and
//! snapshot logs both open this way; they differ only in how a frame names its key.

use std::path::Path;
use std::sync::Arc;

use super::{Hashing, Index, IndexReport};
use crate::error::Result;
use crate::format::FrameHeader;
use crate::io::Storage;
use crate::log::{Known, Log, LogRecovery, check_covered};

/// Where an indexed log lives and how to open it.
#[derive(Debug, Clone, Copy)]
pub struct IndexedLogFiles<'a> {
    /// Directory of the index files.
    pub index_dir: &'a Path,
    /// Directory of the segment files.
    pub segments_dir: &'a Path,
    /// Segment file kind of the log.
    pub kind: u32,
    /// Segment size for new segments.
    pub segment_size: u64,
    /// Memtable entries before a flush.
    pub memtable_entries: usize,
    /// Stream hashing of the index.
    pub hashing: Hashing,
    /// Open without writing anything.
    pub read_only: bool,
    /// Rebuild the index from the whole log, whatever its files say.
    pub rebuild: bool,
    /// Read-only beside a live writer: read nothing past this position.
    pub read_limit: Option<u64>,
    /// Whether the log's frames must all be kept (the event log): then what a stale
    /// index covered was durable once, and a log that ends before it, or is damaged
    /// below it, fails the open as corruption. A cache (the snapshot files) says `false`:
    /// its damaged tail is cut as a torn one, and what is intact before it kept.
    pub covered_is_attested: bool,
}

/// Opens the index in `files.index_dir`, then the log, replaying into the index every frame
/// it does not cover: all of them when a rebuild is asked or when the index's manifest does
/// not describe this log (its entries may then point anywhere). `key` names a frame's
/// index key `(stream, first version, count)`, or `None` for a frame the index does not
/// hold; `progress` is told each replayed frame's length. Returns the index, the log, the
/// log's recovery and the index's report (rebuilds and frames replayed).
///
/// # Errors
/// As [`Index::open`] and [`Log::open`].
pub fn open_indexed_log(
    storage: &Arc<dyn Storage>,
    files: IndexedLogFiles<'_>,
    key: impl for<'b> Fn(&FrameHeader, &'b [u8]) -> Option<(&'b str, u64, u32)>,
    progress: &mut dyn FnMut(u64),
) -> Result<(Index, Log, LogRecovery, IndexReport)> {
    let (index, mut report) = Index::open(
        Arc::clone(storage),
        files.index_dir,
        files.hashing,
        files.memtable_entries,
        files.read_only,
    )?;
    if files.rebuild {
        index.reset();
        report.rebuilt = Some("rebuild requested".into());
    }
    let manifest = index.manifest();
    let mut replayed = 0u64;
    let mut stale = None;
    let (log, recovery) = Log::open(
        Arc::clone(storage),
        files.segments_dir,
        files.kind,
        files.segment_size,
        files.read_only,
        files.read_limit,
        |segments| match check_covered(
            segments,
            manifest.covered_position,
            manifest.last_frame_position,
            manifest.last_frame_crc,
        ) {
            Ok(()) => Known {
                replay_from: manifest.covered_position,
                attested: manifest.covered_position,
            },
            // The index no longer describes the log: it is rebuilt from the whole log. But
            // what it covered was durable when it was written (the log is synced before an
            // index is), so a log that now ends before that, or is damaged below it, lost
            // acknowledged frames: that is the log's corruption, not a reason to rebuild
            // quietly over it.
            Err(reason) => {
                index.reset();
                stale = Some(reason);
                Known {
                    replay_from: 0,
                    attested: if files.covered_is_attested {
                        manifest.covered_position
                    } else {
                        0
                    },
                }
            }
        },
        |_segment, header, bytes| {
            if let Some((stream, first_version, count)) = key(header, bytes.body()) {
                index.record(
                    stream,
                    first_version,
                    count,
                    header.position,
                    header.crc,
                    super::commit_time_of(header, bytes.body()),
                );
                replayed += 1;
            }
            progress(header.frame_len());
            Ok(())
        },
    )?;
    if let Some(reason) = stale {
        report.rebuilt = Some(reason);
    }
    report.replayed_frames = replayed;
    Ok((index, log, recovery, report))
}
