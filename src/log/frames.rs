//! Walking the frames of a log in order, across segments.

use std::sync::Arc;

use super::Log;
use crate::error::Result;
use crate::format::{FrameHeader, SEGMENT_HEADER_LEN};
use crate::segment::{FrameBytes, SegmentReader};

/// Iterator over the frames of the log, see [`Log::frames`].
#[derive(Debug)]
pub struct LogFrames {
    pub(super) log: Arc<Log>,
    pub(super) next: u64,
    pub(super) limit: u64,
    pub(super) reader: Option<SegmentReader>,
    pub(super) failed: bool,
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
                    self.reader
                        .insert(self.log.sequential_reader(&seg, self.limit))
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
            let seg_end = reader.segment().sealed_end().unwrap_or(u64::MAX);
            if reader.segment().is_compacted() && self.next < seg_end {
                // A rewritten segment: the next frame is the next one a scavenge kept.
                self.next = match reader.next_frame_at_or_after(self.next) {
                    Ok(Some(p)) => p.min(seg_end),
                    Ok(None) => seg_end,
                    Err(_) => self.next,
                };
                if self.next >= self.limit {
                    return None;
                }
            }
            if self.next >= seg_end {
                // Move on to the next segment, which starts where this one ends.
                let next_seg = self.log.segment_for(self.next)?;
                if next_seg.base() == base {
                    return None;
                }
                self.reader = Some(self.log.sequential_reader(&next_seg, self.limit));
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
