//! Read iterators: one stream forward or backward, and `$all` in commit order.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use super::event::{EventId, Position, RecordedEvent};
use crate::error::{Error, Result};
use crate::format::{self, FrameHeader, FrameKind};
use crate::index::FrameRef;
use crate::log::{Log, LogFrames};
use crate::segment::FrameBytes;

/// What a stream reader needs of the index.
pub(crate) trait FrameLookup: Send + Sync + fmt::Debug {
    fn frame_of(&self, stream: &str, version: u64) -> Option<FrameRef>;
    fn last_version(&self, stream: &str) -> Option<u64>;
}

#[derive(Debug, Clone)]
pub(crate) struct IndexHandle(pub(crate) Arc<dyn FrameLookup>);

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
        FrameKind::Checkpoint => 0,
    }
}

/// Decodes the events of a frame into `out` (versions within `range` only).
fn decode_into(
    log: &Log,
    header: &FrameHeader,
    bytes: &FrameBytes,
    expect_stream: Option<&str>,
    keep: impl Fn(u64) -> bool,
    out: &mut Vec<RecordedEvent>,
) -> Result<()> {
    let corrupted = |reason: String| {
        let (file, offset) = log.locate(header.position);
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
    log: Arc<Log>,
    index: IndexHandle,
    stream: String,
    /// Next version to look up; `None` when done.
    next: Option<u64>,
    backward: bool,
    visible: u64,
    buffer: VecDeque<RecordedEvent>,
}

impl StreamEvents {
    pub(crate) fn forward(
        log: Arc<Log>,
        index: IndexHandle,
        stream: &str,
        from: u64,
        visible: u64,
    ) -> Self {
        StreamEvents {
            log,
            index,
            stream: stream.to_string(),
            next: Some(from),
            backward: false,
            visible,
            buffer: VecDeque::new(),
        }
    }

    pub(crate) fn backward(
        log: Arc<Log>,
        index: IndexHandle,
        stream: &str,
        from: Option<u64>,
        visible: u64,
    ) -> Self {
        let next = from.or_else(|| index.0.last_version(stream));
        StreamEvents {
            log,
            index,
            stream: stream.to_string(),
            next,
            backward: true,
            visible,
            buffer: VecDeque::new(),
        }
    }

    fn fill(&mut self) -> Result<()> {
        while self.buffer.is_empty() {
            let Some(version) = self.next else {
                return Ok(());
            };
            let Some(frame) = self.index.0.frame_of(&self.stream, version) else {
                // Backward from past the end: start at the last version.
                self.next = match self.index.0.last_version(&self.stream) {
                    Some(last) if self.backward && last < version => Some(last),
                    _ => None,
                };
                continue;
            };
            if frame.position >= self.visible {
                // Not committed when this reader started.
                self.next = if self.backward {
                    frame.first_version.checked_sub(1)
                } else {
                    None
                };
                continue;
            }
            let (header, bytes) = self.log.read_frame(frame.position, self.visible)?;
            let mut events = Vec::with_capacity(frame.count as usize);
            let backward = self.backward;
            decode_into(
                &self.log,
                &header,
                &bytes,
                Some(&self.stream),
                |v| if backward { v <= version } else { v >= version },
                &mut events,
            )?;
            if backward {
                events.reverse();
                self.next = frame.first_version.checked_sub(1);
            } else {
                self.next = frame.last_version().checked_add(1);
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
            if let Err(e) = decode_into(
                self.frames.log(),
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
