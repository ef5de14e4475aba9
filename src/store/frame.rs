//! Events frames decoded once: what stream readers get from a lookup, and what the frame
//! cache keeps, so that reading a cached stream again costs no checksum, no parsing and no
//! UTF-8 check per event.

use std::ops::ControlFlow;

use super::event::{EventId, EventView, Position};
use crate::format::{self, DecodeError, FrameHeader};
use crate::segment::FrameBytes;

/// A checked events frame with its events located in its bytes.
#[derive(Debug)]
pub(crate) struct DecodedFrame {
    header: FrameHeader,
    bytes: FrameBytes,
    stream: Box<str>,
    first_version: u64,
    committed_at_us: Option<i64>,
    /// The distinct event types, in order of first use (most appends have one).
    types: Vec<Box<str>>,
    events: Vec<Slot>,
}

/// One event: its fixed fields and where its variable ones are in the frame's bytes.
#[derive(Debug, Clone, Copy)]
struct Slot {
    id: [u8; 16],
    timestamp_us: i64,
    schema_version: u32,
    event_type: usize,
    metadata: (usize, usize),
    data: (usize, usize),
}

impl DecodedFrame {
    /// Decodes the events frame `bytes` (already checked against its CRC).
    ///
    /// # Errors
    /// [`DecodeError`] when it is not a well-formed events frame.
    pub(crate) fn decode(header: FrameHeader, bytes: FrameBytes) -> Result<Self, DecodeError> {
        let body = format::decode_events_body(&header, bytes.body())?;
        let base = bytes.as_ptr() as usize;
        // Where a slice borrowed from `bytes` lies in it.
        let range = |s: &[u8]| {
            let start = (s.as_ptr() as usize).wrapping_sub(base);
            (start, start.saturating_add(s.len()))
        };
        let mut types: Vec<Box<str>> = Vec::new();
        let mut events = Vec::with_capacity(body.events.len());
        for e in &body.events {
            let event_type = match types.iter().position(|t| **t == *e.event_type) {
                Some(i) => i,
                None => {
                    types.push(e.event_type.into());
                    types.len() - 1
                }
            };
            events.push(Slot {
                id: e.id,
                timestamp_us: e.timestamp_us,
                schema_version: e.schema_version,
                event_type,
                metadata: range(e.metadata),
                data: range(e.data),
            });
        }
        Ok(DecodedFrame {
            stream: body.stream.into(),
            first_version: body.first_version,
            committed_at_us: body.committed_at_us,
            types,
            events,
            header,
            bytes,
        })
    }

    /// The frame's header.
    pub(crate) fn header(&self) -> &FrameHeader {
        &self.header
    }

    /// The stream its events belong to.
    pub(crate) fn stream(&self) -> &str {
        &self.stream
    }

    /// When it was committed (`None` for format 1).
    pub(crate) fn committed_at_us(&self) -> Option<i64> {
        self.committed_at_us
    }

    /// Version of its first event.
    pub(crate) fn first_version(&self) -> u64 {
        self.first_version
    }

    /// Events in the frame.
    pub(crate) fn len(&self) -> usize {
        self.events.len()
    }

    /// Bytes it keeps in memory, about.
    pub(crate) fn weight(&self) -> usize {
        self.bytes
            .len()
            .saturating_add(self.events.len() * std::mem::size_of::<Slot>())
            .saturating_add(self.stream.len())
            .saturating_add(self.types.iter().map(|t| t.len() + 16).sum::<usize>())
            .saturating_add(std::mem::size_of::<Self>() + 64)
    }

    /// Event `i` of the frame.
    pub(crate) fn view(&self, i: usize) -> Option<EventView<'_>> {
        let s = self.events.get(i)?;
        Some(self.view_in(&self.bytes, i, s))
    }

    /// Event `i`, whose slot is `s`, of the frame whose bytes are `bytes` (taken from
    /// `self.bytes` once by a caller that views many events).
    #[inline(always)]
    fn view_in<'a>(&'a self, bytes: &'a [u8], i: usize, s: &Slot) -> EventView<'a> {
        let at = |(start, end): (usize, usize)| bytes.get(start..end).unwrap_or_default();
        EventView {
            stream: &self.stream,
            version: self.first_version.saturating_add(i as u64),
            position: Position(self.header.position),
            append_index: u32::try_from(i).unwrap_or(u32::MAX),
            id: EventId(s.id),
            event_type: self.types.get(s.event_type).map_or("", |t| t),
            timestamp_us: s.timestamp_us,
            committed_at_us: self.committed_at_us,
            schema_version: s.schema_version,
            metadata: at(s.metadata),
            data: at(s.data),
        }
    }

    /// Hands its events to `visit`, in version order or (`backward`) in reverse, skipping
    /// versions `keep` rejects, until `visit` breaks.
    #[inline]
    pub(crate) fn visit(
        &self,
        keep: impl Fn(u64) -> bool,
        backward: bool,
        mut visit: impl FnMut(EventView<'_>) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        // The frame's bytes once, not per event (they may sit behind a mapping).
        let bytes: &[u8] = &self.bytes;
        let mut step = |(i, s): (usize, &Slot)| {
            if !keep(self.first_version.saturating_add(i as u64)) {
                return ControlFlow::Continue(());
            }
            visit(self.view_in(bytes, i, s))
        };
        if backward {
            self.events.iter().enumerate().rev().try_for_each(&mut step)
        } else {
            self.events.iter().enumerate().try_for_each(&mut step)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::format::{EventRecord, decode_frame_header, encode_events_frame};

    #[test]
    fn views_are_the_frames_events_in_either_order() {
        let records: Vec<EventRecord<'_>> = [
            ("A", &b"m1"[..], &b"one"[..]),
            ("B", b"", b"two"),
            ("A", b"m3", b""),
        ]
        .iter()
        .enumerate()
        .map(|(i, (t, m, d))| EventRecord {
            id: [i as u8; 16],
            timestamp_us: -(i as i64),
            schema_version: i as u32,
            event_type: t,
            metadata: m,
            data: d,
        })
        .collect();
        let mut buf = Vec::new();
        let frame = format::EventsFrame {
            committed_at_us: Some(5),
            stream: "s-1",
            first_version: 7,
            events: &records,
            checkpoint: None,
        };
        encode_events_frame(&mut buf, 4096, 0, &frame);
        let header = decode_frame_header(&buf).unwrap();
        let frame = DecodedFrame::decode(header, FrameBytes::from_vec(buf)).unwrap();
        assert_eq!(
            (frame.stream(), frame.first_version(), frame.len()),
            ("s-1", 7, 3)
        );
        for (i, r) in records.iter().enumerate() {
            let v = frame.view(i).unwrap();
            assert_eq!(v.version, 7 + i as u64);
            assert_eq!(v.position, Position(4096));
            assert_eq!((v.id.0, v.timestamp_us), (r.id, r.timestamp_us));
            assert_eq!(
                (v.committed_at_us, v.schema_version),
                (Some(5), r.schema_version)
            );
            assert_eq!(
                (v.event_type, v.metadata, v.data),
                (r.event_type, r.metadata, r.data)
            );
        }
        assert!(frame.view(3).is_none());
        let mut seen = Vec::new();
        let flow = frame.visit(
            |v| v <= 8,
            true,
            |e| {
                seen.push(e.version);
                ControlFlow::Continue(())
            },
        );
        assert_eq!((flow, seen), (ControlFlow::Continue(()), vec![8, 7]));
        let mut seen = Vec::new();
        let flow = frame.visit(
            |_| true,
            false,
            |e| {
                seen.push(e.version);
                if e.version == 8 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            },
        );
        assert_eq!((flow, seen), (ControlFlow::Break(()), vec![7, 8]));
    }

    #[test]
    fn a_frame_that_is_not_an_events_frame_does_not_decode() {
        let mut buf = Vec::new();
        format::encode_checkpoint_frame(&mut buf, 4096, 0);
        let header = decode_frame_header(&buf).unwrap();
        assert!(DecodedFrame::decode(header, FrameBytes::from_vec(buf)).is_err());
    }
}
