//! Read iterators: one stream forward or backward, and `$all` in commit order.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use super::Found;
use super::event::{EventId, Position, RecordedEvent};
use crate::error::{Error, Result};
use crate::format::{self, FrameHeader, FrameKind};
use crate::log::LogFrames;
use crate::segment::FrameBytes;

/// What a stream reader needs: the frame of a stream holding a version, confirmed by its
/// stream name, among the frames below `visible`.
pub(crate) trait FrameLookup: Send + Sync + fmt::Debug {
    fn resolve(&self, stream: &str, version: u64, visible: u64) -> Result<Option<Found>>;
}

/// A reader's view: the store and the visibility bound at the reader's creation.
#[derive(Debug, Clone)]
pub(crate) struct Lookup {
    pub(crate) inner: Arc<dyn FrameLookup>,
    pub(crate) visible: u64,
}

pub(crate) fn check_stream_name(stream: &str) -> Result<()> {
    if stream.is_empty() {
        return Err(Error::InvalidArgument(
            "a stream name must not be empty".into(),
        ));
    }
    Ok(())
}

/// Events in a frame, for verification counts.
pub(crate) fn events_in_frame(header: &FrameHeader, bytes: &FrameBytes) -> u64 {
    match header.kind {
        FrameKind::Events => format::decode_events_summary(bytes.body())
            .map(|(_, _, n)| u64::from(n))
            .unwrap_or(0),
        FrameKind::Checkpoint | FrameKind::Snapshot => 0,
    }
}

/// Decodes the events of a frame into `out` (versions within `range` only).
fn decode_into(
    locate: &dyn Fn(u64) -> (std::path::PathBuf, u64),
    header: &FrameHeader,
    bytes: &FrameBytes,
    expect_stream: Option<&str>,
    keep: impl Fn(u64) -> bool,
    out: &mut Vec<RecordedEvent>,
) -> Result<()> {
    let corrupted = |reason: String| {
        let (file, offset) = locate(header.position);
        Error::Corrupted {
            file,
            offset,
            reason,
        }
    };
    let body = format::decode_events_body(bytes.body()).map_err(|e| corrupted(e.to_string()))?;
    if let Some(s) = expect_stream
        && body.stream != s
    {
        return Err(corrupted(format!(
            "index points at a frame of stream {:?}, not {s:?}",
            body.stream
        )));
    }
    let stream: Arc<str> = Arc::from(body.stream);
    for (i, e) in body.events.iter().enumerate() {
        let version = body.first_version.saturating_add(i as u64);
        if !keep(version) {
            continue;
        }
        out.push(RecordedEvent {
            stream: Arc::clone(&stream),
            version,
            position: Position(header.position),
            id: EventId(e.id),
            event_type: e.event_type.to_string(),
            timestamp_us: e.timestamp_us,
            metadata: e.metadata.to_vec(),
            data: e.data.to_vec(),
        });
    }
    Ok(())
}

/// The events of one stream, in version order (forward or backward). Created by
/// [`Store::read_stream`](crate::Store::read_stream) and
/// [`Store::read_stream_backward`](crate::Store::read_stream_backward).
///
/// It sees the appends that were committed when it was created. Each step looks up one
/// append in the index and reads only that frame: reading a stream never scans the log.
#[derive(Debug)]
pub struct StreamEvents {
    lookup: Lookup,
    stream: String,
    /// Next version to look up; `None` when done.
    next: Option<u64>,
    backward: bool,
    buffer: VecDeque<RecordedEvent>,
}

impl StreamEvents {
    pub(crate) fn forward(lookup: Lookup, stream: &str, from: u64) -> Self {
        StreamEvents {
            lookup,
            stream: stream.to_string(),
            next: Some(from),
            backward: false,
            buffer: VecDeque::new(),
        }
    }

    pub(crate) fn backward(lookup: Lookup, stream: &str, from: Option<u64>) -> Self {
        StreamEvents {
            lookup,
            stream: stream.to_string(),
            next: Some(from.unwrap_or(u64::MAX)),
            backward: true,
            buffer: VecDeque::new(),
        }
    }

    fn fill(&mut self) -> Result<()> {
        while self.buffer.is_empty() {
            let Some(version) = self.next else {
                return Ok(());
            };
            let visible = self.lookup.visible;
            let found = self.lookup.inner.resolve(&self.stream, version, visible)?;
            let Some(found) = found else {
                self.next = None;
                return Ok(());
            };
            let entry = found.entry;
            let last = entry
                .first_version
                .saturating_add(u64::from(entry.count))
                .saturating_sub(1);
            // Backward from past the end starts at the last version.
            let version = version.min(last);
            // Sized by what the frame holds (decode_into), never by the index entry's
            // count, which comes from a file and is not trusted for allocation.
            let mut events = Vec::new();
            let backward = self.backward;
            let no_file = |p: u64| (std::path::PathBuf::from(super::SEGMENTS_DIR), p);
            decode_into(
                &no_file,
                &found.header,
                &found.bytes,
                Some(&self.stream),
                |v| if backward { v <= version } else { v >= version },
                &mut events,
            )?;
            if backward {
                events.reverse();
                self.next = entry.first_version.checked_sub(1);
            } else {
                self.next = last.checked_add(1);
            }
            self.buffer.extend(events);
        }
        Ok(())
    }
}

impl Iterator for StreamEvents {
    type Item = Result<RecordedEvent>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Err(e) = self.fill() {
            self.next = None;
            self.buffer.clear();
            return Some(Err(e));
        }
        self.buffer.pop_front().map(Ok)
    }
}

/// Every event of every stream in commit order. Created by
/// [`Store::read_all`](crate::Store::read_all); sees the appends committed when it was created.
#[derive(Debug)]
pub struct AllEvents {
    frames: LogFrames,
    buffer: VecDeque<RecordedEvent>,
    failed: bool,
}

impl AllEvents {
    pub(crate) fn new(frames: LogFrames) -> Self {
        AllEvents {
            frames,
            buffer: VecDeque::new(),
            failed: false,
        }
    }

    /// Where the next unread append starts: pass it to `read_all` to resume after the
    /// events read so far (valid once the events of the current append are all read).
    pub fn next_position(&self) -> Position {
        Position(self.frames.next_position())
    }
}

impl Iterator for AllEvents {
    type Item = Result<RecordedEvent>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(e) = self.buffer.pop_front() {
                return Some(Ok(e));
            }
            if self.failed {
                return None;
            }
            let (header, bytes) = match self.frames.next()? {
                Ok(f) => f,
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            };
            if header.kind != FrameKind::Events {
                continue;
            }
            let mut events = Vec::new();
            let log = self.frames.log();
            if let Err(e) = decode_into(
                &|p| log.locate(p),
                &header,
                &bytes,
                None,
                |_| true,
                &mut events,
            ) {
                self.failed = true;
                return Some(Err(e));
            }
            self.buffer.extend(events);
        }
    }
}
