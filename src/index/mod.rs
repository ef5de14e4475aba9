//! The `index` layer: stream → frames. For now an in-memory map rebuilt from the log at
//! open; it holds one small entry per frame (24 bytes) and per stream, never event bytes.
//! The persistent, bounded-memory index of ARCHITECTURE.md replaces it (issue 3).

use std::collections::HashMap;
use std::sync::Arc;

/// Where one append of a stream lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameRef {
    /// Version of the frame's first event.
    pub first_version: u64,
    /// Number of events in the frame.
    pub count: u32,
    /// Position of the frame.
    pub position: u64,
}

impl FrameRef {
    /// Version of the frame's last event.
    pub fn last_version(&self) -> u64 {
        self.first_version
            .saturating_add(u64::from(self.count))
            .saturating_sub(1)
    }
}

#[derive(Debug, Default)]
struct StreamEntry {
    frames: Vec<FrameRef>,
    /// Id of the first event of the latest frame: lets an append tell cheaply whether it
    /// may be a retry of the stream's last append.
    last_first_id: [u8; 16],
}

/// The stream index.
#[derive(Debug, Default)]
pub struct StreamIndex {
    streams: HashMap<Arc<str>, StreamEntry>,
    frames: u64,
}

impl StreamIndex {
    /// Records a frame of `stream`. Frames of a stream are recorded in version order.
    pub fn record(&mut self, stream: &str, frame: FrameRef, first_id: [u8; 16]) {
        let entry = match self.streams.get_mut(stream) {
            Some(e) => e,
            None => self.streams.entry(Arc::from(stream)).or_default(),
        };
        debug_assert!(
            entry
                .frames
                .last()
                .is_none_or(|f| f.last_version() + 1 == frame.first_version),
            "frames of a stream must be recorded gap-free"
        );
        entry.frames.push(frame);
        entry.last_first_id = first_id;
        self.frames += 1;
    }

    /// The stream's last version, `None` when it has no events.
    pub fn last_version(&self, stream: &str) -> Option<u64> {
        self.streams
            .get(stream)
            .and_then(|e| e.frames.last())
            .map(FrameRef::last_version)
    }

    /// The stream's latest frame and the id of its first event.
    pub fn last_frame(&self, stream: &str) -> Option<(FrameRef, [u8; 16])> {
        let e = self.streams.get(stream)?;
        Some((*e.frames.last()?, e.last_first_id))
    }

    /// The frame holding `version` of `stream`.
    pub fn frame_of(&self, stream: &str, version: u64) -> Option<FrameRef> {
        let frames = &self.streams.get(stream)?.frames;
        let idx = frames.partition_point(|f| f.last_version() < version);
        frames
            .get(idx)
            .copied()
            .filter(|f| f.first_version <= version)
    }

    /// Number of streams.
    pub fn stream_count(&self) -> u64 {
        self.streams.len() as u64
    }

    /// Number of frames recorded.
    pub fn frame_count(&self) -> u64 {
        self.frames
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(first_version: u64, count: u32, position: u64) -> FrameRef {
        FrameRef {
            first_version,
            count,
            position,
        }
    }

    #[test]
    fn finds_the_frame_holding_each_version() {
        let mut idx = StreamIndex::default();
        idx.record("a", f(0, 3, 32), [1; 16]);
        idx.record("b", f(0, 1, 100), [2; 16]);
        idx.record("a", f(3, 2, 200), [3; 16]);
        assert_eq!(idx.last_version("a"), Some(4));
        assert_eq!(idx.last_version("b"), Some(0));
        assert_eq!(idx.last_version("c"), None);
        assert_eq!(idx.frame_of("a", 0), Some(f(0, 3, 32)));
        assert_eq!(idx.frame_of("a", 2), Some(f(0, 3, 32)));
        assert_eq!(idx.frame_of("a", 3), Some(f(3, 2, 200)));
        assert_eq!(idx.frame_of("a", 4), Some(f(3, 2, 200)));
        assert_eq!(idx.frame_of("a", 5), None);
        assert_eq!(idx.last_frame("a"), Some((f(3, 2, 200), [3; 16])));
        assert_eq!(idx.stream_count(), 2);
        assert_eq!(idx.frame_count(), 3);
    }
}
