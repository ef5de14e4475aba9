//! Checking every frame of a log without writing, classifying damage by the recovery rule.

use std::path::PathBuf;
use std::sync::Arc;

use super::Log;
use crate::error::Result;
use crate::format::{FrameHeader, SEGMENT_HEADER_LEN};
use crate::segment::{FrameBytes, ScanEnd, Segment};

/// One damaged place found by verification ([`Store::verify`](crate::Store::verify),
/// [`inspect::verify_dir`](crate::inspect::verify_dir)).
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

/// What verification found: every frame checked, damage classified by the recovery rule,
/// and the index checked against the log.
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
    /// Appends whose first version does not follow their stream's previous append: frames
    /// that check (CRC, position) but could not have been written by the store.
    pub version_problems: Vec<String>,
    /// What the check of the snapshot files found (a store's verification; empty for a
    /// log alone).
    pub snapshots: crate::snapshot::SnapshotCheck,
}

impl VerifyReport {
    /// Whether nothing at all was found: no damage, no index or version problem, nothing
    /// in the snapshot files either.
    pub fn is_clean(&self) -> bool {
        self.damage.is_empty()
            && self.index_problems.is_empty()
            && self.version_problems.is_empty()
            && self.snapshots.is_clean()
    }

    /// Damage that is corruption (attested data), not a torn tail.
    pub fn corruption(&self) -> impl Iterator<Item = &Damage> {
        self.damage.iter().filter(|d| !d.torn_tail)
    }
}

impl Log {
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

    /// Visits every frame that checks, in order, up to `limit`, going on past damage as
    /// [`Log::verify`] does; `damaged` hears of each damaged place (the segment, the file
    /// offset, what is wrong). Never writes. For a rewrite of a log that must carry what
    /// is intact past what is not (the snapshot files: a cache, where a damaged frame is
    /// left out rather than stopping every rewrite for good).
    ///
    /// # Errors
    /// I/O errors; whatever `visit` returns.
    pub fn walk_intact(
        &self,
        limit: u64,
        visit: &mut dyn FnMut(&FrameHeader, &FrameBytes) -> Result<()>,
        damaged: &mut dyn FnMut(&Segment, u64, String),
    ) -> Result<()> {
        let segments = self.segments.read().clone();
        walk_segments(&segments, limit, visit, damaged)
    }
}

/// Visits every frame that checks in `segments` up to position `limit`, going on past
/// damage (found again by [`SegmentReader::resync`](crate::segment::SegmentReader::resync)),
/// and reports each damaged place to `damaged` by its file offset (in a rewritten
/// segment, the damaged block's): a header that does not check (offset 0), a
/// rewritten segment's dictionary that does not (once, not again for each block it
/// fails), a zero-filled tail, a frame or block that does not check.
fn walk_segments(
    segments: &[Arc<Segment>],
    limit: u64,
    visit: &mut dyn FnMut(&FrameHeader, &FrameBytes) -> Result<()>,
    damaged: &mut dyn FnMut(&Segment, u64, String),
) -> Result<()> {
    for seg in segments {
        let header = seg.check_header()?;
        let len = match seg.logical_len() {
            Ok(len) => len,
            Err(_) => seg.file_len()?,
        }
        .min(limit.saturating_sub(seg.base()));
        if let Err(reason) = header {
            damaged(seg, 0, reason.to_string());
        }
        // A dictionary that does not check is reported once: every block compressed with
        // it fails with the same reason, and is not reported again.
        // (A segment whose tables do not check was reported with its header above.)
        let dictionary_damage = seg.dictionary_damage().ok().flatten();
        if let Some(reason) = &dictionary_damage {
            damaged(
                seg,
                SEGMENT_HEADER_LEN as u64,
                format!("dictionary: {reason}"),
            );
        }
        let mut reader = seg.reader();
        let mut from = SEGMENT_HEADER_LEN as u64;
        while from < len {
            match reader.scan(from, len, |h, bytes| visit(h, bytes))? {
                ScanEnd::Clean { .. } => break,
                ScanEnd::ZeroTail { offset, .. } => {
                    damaged(seg, offset, "zero-filled tail".into());
                    break;
                }
                ScanEnd::Damaged { offset, reason } => {
                    if dictionary_damage.as_ref() != Some(&reason) {
                        damaged(seg, seg.file_offset_of(offset), reason.to_string());
                    }
                    match reader.resync(offset.saturating_add(1), len)? {
                        Some(next) => from = next,
                        None => break,
                    }
                }
            }
        }
    }
    Ok(())
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
    for seg in segments {
        if let Ok(h) = seg.check_header()? {
            attested = attested.max(h.base_position);
        }
    }
    let mut damage = Vec::new();
    walk_segments(
        segments,
        limit,
        &mut |h, bytes| {
            attested = attested.max(h.watermark);
            report.frames += 1;
            report.events += count_events(h, bytes);
            report.bytes += h.frame_len();
            progress(h.frame_len());
            Ok(())
        },
        &mut |seg, offset, reason| {
            // A rewritten segment's damage is never a torn tail (recovery never cuts one).
            // Elsewhere file offsets are positions less the base.
            damage.push((
                seg.path().to_path_buf(),
                seg.base(),
                offset,
                !seg.is_compacted(),
                reason,
            ))
        },
    )?;
    let last_base = segments.last().map_or(0, |s| s.base());
    report.damage = damage
        .into_iter()
        .map(|(file, base, offset, torn_possible, reason)| Damage {
            torn_tail: torn_possible
                && base == last_base
                && base.saturating_add(offset) >= attested,
            file,
            offset,
            reason,
        })
        .collect();
    Ok(report)
}
