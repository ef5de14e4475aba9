//! The `format` layer: byte layout of segment headers and frames. Pure functions over
//! byte slices; decoding never panics, whatever the input (fuzzed in `fuzz/`).
//!
//! The layout is specified byte by byte in `docs/format.md`; change both together.
//! All integers are little-endian; every decoder of the crate (the index's too) reads them
//! through `le`.

#![deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use std::fmt;

pub mod compact;
pub(crate) mod le;

use le::Reader;

/// Magic at the start of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"SLOGSEG\0";
/// Current on-disk format version written into segment headers (6: a rewritten segment's
/// blocks have no header, their lengths, codec and CRC are in its packed block map,
/// [`compact::PACKED_MAP_VERSION`]; 5: a rewritten segment's
/// compressed blocks may use a dictionary stored in it, [`compact::Codec::ZstdDict`]; 4:
/// an events frame may carry a consumer checkpoint after its events,
/// [`EVENTS_FLAG_CHECKPOINT`]; 3: rewritten
/// segments exist; a segment of the log is laid out as in version 2 unless its kind is
/// [`compact::SEGMENT_KIND_COMPACTED`]).
pub const FORMAT_VERSION: u32 = 6;
/// The oldest format version this build reads (and appends after: see `docs/format.md`).
pub const OLDEST_FORMAT_VERSION: u32 = 1;
/// Segment file kind: a segment of the event log.
pub const SEGMENT_KIND_EVENTS: u32 = 1;
/// Segment file kind: a segment of the snapshot log.
pub const SEGMENT_KIND_SNAPSHOTS: u32 = 2;
/// Segment file kind: a segment of a replicated (raft) log, holding record frames whose
/// bodies the `cluster` layer encodes.
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
pub const SEGMENT_KIND_RAFT: u32 = 4;
/// Size of the segment header in bytes.
pub const SEGMENT_HEADER_LEN: usize = 32;

/// Magic at the start of every frame: the bytes `SLFR`.
pub const FRAME_MAGIC: u32 = u32::from_le_bytes(*b"SLFR");
/// Size of the frame header in bytes.
pub const FRAME_HEADER_LEN: usize = 32;
/// Offset of the first header byte covered by the CRC.
const FRAME_CRC_START: usize = 12;

/// Size of the fixed part of an events body (stream length, first version, count).
const EVENTS_BODY_FIXED: usize = 2 + 8 + 4;
/// Size of the fixed part of one event record.
const EVENT_FIXED: usize = 16 + 8 + 2 + 4 + 4;
/// What the second layout adds: the commit time before the body, a schema version per record.
const COMMIT_TIME_LEN: usize = 8;
const SCHEMA_VERSION_LEN: usize = 4;

/// Flag of an events frame (header byte 13): its body starts with the commit time and
/// each record carries a schema version (format 2). Events frames of format 1 have no
/// flag; every events frame this build writes has it.
pub const EVENTS_FLAG_COMMITTED: u8 = 0x01;
/// Flag of an events frame (format 4): a consumer checkpoint follows the last event
/// record ([`CheckpointTrailer`]), saved by the same atomic write as the events. Only
/// with [`EVENTS_FLAG_COMMITTED`].
pub const EVENTS_FLAG_CHECKPOINT: u8 = 0x02;
/// Longest checkpoint name a trailer holds (the names of `checkpoints/<name>` files).
pub const MAX_CHECKPOINT_NAME_LEN: usize = 128;
/// Fixed part of a checkpoint trailer: name length, position, skip.
const CHECKPOINT_TRAILER_FIXED: usize = 1 + 8 + 4;

/// A consumer checkpoint carried by an events frame: the consumer `name` has handled
/// everything before the resume token (`position`, `skip`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointTrailer<'a> {
    /// The checkpoint's name (1 to [`MAX_CHECKPOINT_NAME_LEN`] bytes).
    pub name: &'a str,
    /// The resume token's append position.
    pub position: u64,
    /// The resume token's count of events of that append already handled.
    pub skip: u32,
}

impl CheckpointTrailer<'_> {
    /// Encoded size of the trailer.
    pub fn encoded_len(&self) -> u64 {
        (CHECKPOINT_TRAILER_FIXED as u64).saturating_add(self.name.len() as u64)
    }
}

/// Why bytes could not be decoded. Displayed as the `reason` of `Error::Corrupted`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes than the structure needs.
    Truncated {
        /// Bytes needed.
        needed: u64,
        /// Bytes available.
        available: u64,
    },
    /// A magic number does not match.
    BadMagic,
    /// A format version this build does not read.
    UnsupportedVersion(u32),
    /// The checksum does not match the bytes.
    ChecksumMismatch {
        /// CRC stored in the data.
        stored: u32,
        /// CRC computed over the data.
        computed: u32,
    },
    /// The frame says it lives at another position than where it was found
    /// (misdirected or stale bytes).
    MisplacedFrame {
        /// Position stored in the frame header.
        stored: u64,
        /// Position where the frame was read.
        actual: u64,
    },
    /// A field holds a value outside its domain.
    Invalid(&'static str),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated { needed, available } => {
                write!(f, "truncated: needed {needed} bytes, {available} available")
            }
            DecodeError::BadMagic => write!(f, "bad magic number"),
            DecodeError::UnsupportedVersion(v) => write!(f, "unsupported format version {v}"),
            DecodeError::ChecksumMismatch { stored, computed } => write!(
                f,
                "checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
            ),
            DecodeError::MisplacedFrame { stored, actual } => write!(
                f,
                "frame claims position {stored} but was found at position {actual}"
            ),
            DecodeError::Invalid(what) => write!(f, "invalid field: {what}"),
        }
    }
}

impl std::error::Error for DecodeError {}

// ---------------------------------------------------------------------------------------
// Segment header
// ---------------------------------------------------------------------------------------

/// The header at the start of every segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Format version: [`FORMAT_VERSION`] for segments this build creates; segments of
    /// an older version (down to [`OLDEST_FORMAT_VERSION`]) are read, never appended to.
    pub version: u32,
    /// File kind ([`SEGMENT_KIND_EVENTS`]).
    pub kind: u32,
    /// Logical position of the segment's first byte (its header). Everything below it was
    /// durable when the segment was created.
    pub base_position: u64,
}

/// Encodes a segment header.
pub fn encode_segment_header(header: &SegmentHeader) -> [u8; SEGMENT_HEADER_LEN] {
    let mut out = [0u8; SEGMENT_HEADER_LEN];
    let mut body = Vec::with_capacity(SEGMENT_HEADER_LEN);
    body.extend_from_slice(&SEGMENT_MAGIC);
    body.extend_from_slice(&header.version.to_le_bytes());
    body.extend_from_slice(&header.kind.to_le_bytes());
    body.extend_from_slice(&header.base_position.to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes());
    let crc = crc32fast::hash(&body);
    body.extend_from_slice(&crc.to_le_bytes());
    out.copy_from_slice(&body);
    out
}

/// Decodes and checks a segment header from the first bytes of a file.
///
/// # Errors
/// [`DecodeError`] when the bytes are short, the magic or CRC is wrong, or the version is
/// not one this build reads (0, or newer than [`FORMAT_VERSION`]).
pub fn decode_segment_header(bytes: &[u8]) -> Result<SegmentHeader, DecodeError> {
    let mut r = Reader::new(bytes);
    let covered = r.take(SEGMENT_HEADER_LEN - 4)?;
    let stored = r.u32()?;
    let mut r = Reader::new(covered);
    if r.array::<8>()? != SEGMENT_MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let computed = crc32fast::hash(covered);
    if stored != computed {
        return Err(DecodeError::ChecksumMismatch { stored, computed });
    }
    let version = r.u32()?;
    if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    let kind = r.u32()?;
    let base_position = r.u64()?;
    if r.u32()? != 0 {
        return Err(DecodeError::Invalid("segment header reserved bytes"));
    }
    Ok(SegmentHeader {
        version,
        kind,
        base_position,
    })
}

// ---------------------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------------------

/// What a frame holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// One atomic append: 1..N events of one stream.
    Events,
    /// A body-less marker written at clean close; its watermark attests the whole log.
    Checkpoint,
    /// A snapshot of a stream's state (in snapshot segments only).
    Snapshot,
    /// Filler that ends a group commit on a sector boundary (format 2); holds no data.
    Padding,
    /// An opaque record: a body this layer does not interpret, framed and checked like
    /// every other frame (in raft log segments, one replicated log entry per frame).
    Record,
}

impl FrameKind {
    fn to_byte(self) -> u8 {
        match self {
            FrameKind::Events => 1,
            FrameKind::Checkpoint => 2,
            FrameKind::Snapshot => 3,
            FrameKind::Padding => 4,
            FrameKind::Record => 5,
        }
    }
    fn from_byte(b: u8) -> Result<Self, DecodeError> {
        match b {
            1 => Ok(FrameKind::Events),
            2 => Ok(FrameKind::Checkpoint),
            3 => Ok(FrameKind::Snapshot),
            4 => Ok(FrameKind::Padding),
            5 => Ok(FrameKind::Record),
            _ => Err(DecodeError::Invalid("frame kind")),
        }
    }
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Length of the body following the header.
    pub body_len: u32,
    /// Stored CRC over header bytes 12..32 and the body.
    pub crc: u32,
    /// What the body holds.
    pub kind: FrameKind,
    /// Flags: `EVENTS_FLAG_COMMITTED` on events frames of format 2 and later,
    /// `EVENTS_FLAG_CHECKPOINT` on those that carry a checkpoint; otherwise 0.
    pub flags: u8,
    /// The frame's own logical position.
    pub position: u64,
    /// Everything below this position was durable when the frame was written.
    pub watermark: u64,
}

impl FrameHeader {
    /// Whether this events frame has format 2's layout (commit time, schema versions).
    pub fn is_committed_layout(&self) -> bool {
        self.flags & EVENTS_FLAG_COMMITTED != 0
    }

    /// Whether this events frame carries a consumer checkpoint after its events (format 4).
    pub fn has_checkpoint(&self) -> bool {
        self.flags & EVENTS_FLAG_CHECKPOINT != 0
    }

    /// Total frame length: header plus body.
    pub fn frame_len(&self) -> u64 {
        (FRAME_HEADER_LEN as u64).saturating_add(u64::from(self.body_len))
    }
}

/// Decodes a frame header and checks its magic and reserved fields (not yet the CRC,
/// which covers the body too: see [`check_frame`]).
///
/// # Errors
/// [`DecodeError`] when the bytes are short or a field is out of its domain.
pub fn decode_frame_header(bytes: &[u8]) -> Result<FrameHeader, DecodeError> {
    let mut r = Reader::new(bytes);
    if r.u32()? != FRAME_MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let body_len = r.u32()?;
    let crc = r.u32()?;
    let kind = FrameKind::from_byte(r.u8()?)?;
    let flags = r.u8()?;
    let allowed = match kind {
        FrameKind::Events => EVENTS_FLAG_COMMITTED | EVENTS_FLAG_CHECKPOINT,
        FrameKind::Checkpoint | FrameKind::Snapshot | FrameKind::Padding | FrameKind::Record => 0,
    };
    if flags & !allowed != 0 {
        return Err(DecodeError::Invalid("frame flags"));
    }
    if flags & EVENTS_FLAG_CHECKPOINT != 0 && flags & EVENTS_FLAG_COMMITTED == 0 {
        return Err(DecodeError::Invalid(
            "checkpoint flag on an events frame of format 1's layout",
        ));
    }
    if r.u16()? != 0 {
        return Err(DecodeError::Invalid("frame header reserved bytes"));
    }
    let position = r.u64()?;
    let watermark = r.u64()?;
    if watermark > position {
        return Err(DecodeError::Invalid(
            "watermark above the frame's own position",
        ));
    }
    Ok(FrameHeader {
        body_len,
        crc,
        kind,
        flags,
        position,
        watermark,
    })
}

/// Checks a whole frame (`frame` = header bytes followed by the body) found at logical
/// position `at`: CRC and self-position.
///
/// # Errors
/// [`DecodeError::ChecksumMismatch`], [`DecodeError::MisplacedFrame`], or truncation.
pub fn check_frame(header: &FrameHeader, frame: &[u8], at: u64) -> Result<(), DecodeError> {
    let len = usize::try_from(header.frame_len()).map_err(|_| DecodeError::Invalid("length"))?;
    let covered = frame
        .get(FRAME_CRC_START..len)
        .ok_or(DecodeError::Truncated {
            needed: header.frame_len(),
            available: frame.len() as u64,
        })?;
    let computed = crc32fast::hash(covered);
    if computed != header.crc {
        return Err(DecodeError::ChecksumMismatch {
            stored: header.crc,
            computed,
        });
    }
    if header.position != at {
        return Err(DecodeError::MisplacedFrame {
            stored: header.position,
            actual: at,
        });
    }
    Ok(())
}

/// What encoding a frame produced: what the layers above keep of it, so that none of them
/// reads the header's bytes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoded {
    /// The frame's length in bytes, header included.
    pub len: usize,
    /// The frame's CRC (the index keeps the last indexed frame's, to recognise it).
    pub crc: u32,
}

/// Appends a frame to `out`: header with a placeholder CRC, then the body written by
/// `write_body`, then the CRC is filled in. In debug builds the frame is decoded and checked
/// right after encoding (the pair of the check every read makes).
fn encode_frame(
    out: &mut Vec<u8>,
    kind: FrameKind,
    flags: u8,
    position: u64,
    watermark: u64,
    write_body: impl FnOnce(&mut Vec<u8>),
) -> Encoded {
    let start = out.len();
    out.extend_from_slice(&FRAME_MAGIC.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes()); // body length, filled below
    out.extend_from_slice(&0u32.to_le_bytes()); // crc, filled below
    out.push(kind.to_byte());
    out.push(flags);
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&position.to_le_bytes());
    out.extend_from_slice(&watermark.to_le_bytes());
    write_body(out);
    let frame_len = out.len().saturating_sub(start);
    let body_len = u32::try_from(frame_len.saturating_sub(FRAME_HEADER_LEN)).unwrap_or(u32::MAX);
    let frame = out.get_mut(start..).unwrap_or_default();
    if let Some(b) = frame.get_mut(4..8) {
        b.copy_from_slice(&body_len.to_le_bytes());
    }
    let crc = crc32fast::hash(frame.get(FRAME_CRC_START..).unwrap_or_default());
    if let Some(b) = frame.get_mut(8..12) {
        b.copy_from_slice(&crc.to_le_bytes());
    }
    debug_assert!(
        decode_frame_header(frame).is_ok_and(|h| h.kind == kind
            && h.flags == flags
            && h.position == position
            && h.watermark == watermark
            && h.frame_len() == frame_len as u64
            && check_frame(&h, frame, position).is_ok()),
        "a frame just encoded does not decode"
    );
    Encoded {
        len: frame_len,
        crc,
    }
}

/// One event as it is laid out in a frame body (borrowed, for encoding and decoding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventRecord<'a> {
    /// 16-byte event id.
    pub id: [u8; 16],
    /// Microseconds since the Unix epoch: the time the writer gave the event (or its
    /// creation time), not the commit time.
    pub timestamp_us: i64,
    /// Schema version of the event's data (0: none given; always 0 in format 1).
    pub schema_version: u32,
    /// Event type name.
    pub event_type: &'a str,
    /// Opaque metadata bytes.
    pub metadata: &'a [u8],
    /// Opaque payload bytes.
    pub data: &'a [u8],
}

impl EventRecord<'_> {
    /// Encoded size of this record inside a frame body of format 2.
    pub fn encoded_len(&self) -> u64 {
        ((EVENT_FIXED + SCHEMA_VERSION_LEN) as u64)
            .saturating_add(self.event_type.len() as u64)
            .saturating_add(self.metadata.len() as u64)
            .saturating_add(self.data.len() as u64)
    }
}

/// Encoded body length of a format-2 events frame for `stream` holding `events`.
pub fn events_body_len(stream: &str, events: &[EventRecord<'_>]) -> u64 {
    events.iter().fold(
        ((EVENTS_BODY_FIXED + COMMIT_TIME_LEN) as u64).saturating_add(stream.len() as u64),
        |acc, e| acc.saturating_add(e.encoded_len()),
    )
}

/// The content of one events frame, for encoding.
#[derive(Debug, Clone, Copy)]
pub struct EventsFrame<'a> {
    /// Commit time in microseconds since the Unix epoch: `Some` writes format 2's layout
    /// (the only one the store writes); `None` writes format 1's, for tests of older stores.
    pub committed_at_us: Option<i64>,
    /// The stream.
    pub stream: &'a str,
    /// Version of the first event.
    pub first_version: u64,
    /// The events (1 or more).
    pub events: &'a [EventRecord<'a>],
    /// A consumer checkpoint saved with the events (format 4; only with a commit time).
    pub checkpoint: Option<CheckpointTrailer<'a>>,
}

/// Appends an events frame to `out`. The caller has checked the
/// limits: `stream` fits in a `u16` length, each type in a `u16`, each payload in a `u32`,
/// and the body in a `u32` (see `events_body_len`).
pub fn encode_events_frame(
    out: &mut Vec<u8>,
    position: u64,
    watermark: u64,
    frame: &EventsFrame<'_>,
) -> Encoded {
    let mut flags = match frame.committed_at_us {
        Some(_) => EVENTS_FLAG_COMMITTED,
        None => 0,
    };
    let EventsFrame {
        committed_at_us,
        stream,
        first_version,
        events,
        checkpoint,
    } = *frame;
    // Format 1's layout has no room for a checkpoint: the caller never asks for both.
    let checkpoint = checkpoint.filter(|_| committed_at_us.is_some());
    if checkpoint.is_some() {
        flags |= EVENTS_FLAG_CHECKPOINT;
    }
    encode_frame(out, FrameKind::Events, flags, position, watermark, |b| {
        if let Some(t) = committed_at_us {
            b.extend_from_slice(&t.to_le_bytes());
        }
        b.extend_from_slice(&(stream.len() as u16).to_le_bytes());
        b.extend_from_slice(stream.as_bytes());
        b.extend_from_slice(&first_version.to_le_bytes());
        b.extend_from_slice(&(events.len() as u32).to_le_bytes());
        for e in events {
            b.extend_from_slice(&e.id);
            b.extend_from_slice(&e.timestamp_us.to_le_bytes());
            if committed_at_us.is_some() {
                b.extend_from_slice(&e.schema_version.to_le_bytes());
            }
            b.extend_from_slice(&(e.event_type.len() as u16).to_le_bytes());
            b.extend_from_slice(e.event_type.as_bytes());
            b.extend_from_slice(&(e.metadata.len() as u32).to_le_bytes());
            b.extend_from_slice(e.metadata);
            b.extend_from_slice(&(e.data.len() as u32).to_le_bytes());
            b.extend_from_slice(e.data);
        }
        if let Some(c) = checkpoint {
            b.push(u8::try_from(c.name.len()).unwrap_or(u8::MAX));
            b.extend_from_slice(c.name.as_bytes());
            b.extend_from_slice(&c.position.to_le_bytes());
            b.extend_from_slice(&c.skip.to_le_bytes());
        }
    })
}

/// Appends a checkpoint frame (no body) to `out`.
pub fn encode_checkpoint_frame(out: &mut Vec<u8>, position: u64, watermark: u64) -> Encoded {
    encode_frame(out, FrameKind::Checkpoint, 0, position, watermark, |_| {})
}

/// Appends a record frame with the opaque `body` to `out`.
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
pub fn encode_record_frame(
    out: &mut Vec<u8>,
    position: u64,
    watermark: u64,
    body: &[u8],
) -> Encoded {
    encode_frame(out, FrameKind::Record, 0, position, watermark, |b| {
        b.extend_from_slice(body);
    })
}

/// Appends a padding frame of `len` bytes in all (at least [`FRAME_HEADER_LEN`]; its body
/// is zeros) to `out`.
pub fn encode_padding_frame(
    out: &mut Vec<u8>,
    position: u64,
    watermark: u64,
    len: usize,
) -> Encoded {
    let body = len.saturating_sub(FRAME_HEADER_LEN);
    encode_frame(out, FrameKind::Padding, 0, position, watermark, |b| {
        b.resize(b.len().saturating_add(body), 0);
    })
}

/// The decoded body of an events frame, borrowing from the frame bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsBody<'a> {
    /// When the append was committed, in microseconds since the Unix epoch (format 2;
    /// `None` for frames of format 1, which did not record it).
    pub committed_at_us: Option<i64>,
    /// The stream all events belong to.
    pub stream: &'a str,
    /// Version of the first event; event `i` has version `first_version + i`.
    pub first_version: u64,
    /// The events, in version order.
    pub events: Vec<EventRecord<'a>>,
    /// The consumer checkpoint saved with the events, if any (format 4).
    pub checkpoint: Option<CheckpointTrailer<'a>>,
}

/// The commit time of an events frame (format 2), without decoding its events; `None`
/// for frames of format 1 and frames of other kinds.
///
/// # Errors
/// [`DecodeError`] when the body is too short for it.
pub fn decode_commit_time(header: &FrameHeader, body: &[u8]) -> Result<Option<i64>, DecodeError> {
    if header.kind != FrameKind::Events || !header.is_committed_layout() {
        return Ok(None);
    }
    Reader::new(body).i64().map(Some)
}

/// Decodes just the stream name and version range of an events body (with the `header`
/// it follows), without the events.
///
/// # Errors
/// [`DecodeError`] when the body is malformed.
pub fn decode_events_summary<'b>(
    header: &FrameHeader,
    body: &'b [u8],
) -> Result<(&'b str, u64, u32), DecodeError> {
    let mut r = Reader::new(body);
    if header.is_committed_layout() {
        r.take(COMMIT_TIME_LEN)?;
    }
    let stream_len = usize::from(r.u16()?);
    let stream = r.str(stream_len, "stream name is not UTF-8")?;
    let first_version = r.u64()?;
    let count = r.u32()?;
    if count == 0 {
        return Err(DecodeError::Invalid("events frame with no events"));
    }
    if first_version.checked_add(u64::from(count)).is_none() {
        return Err(DecodeError::Invalid("version overflow"));
    }
    Ok((stream, first_version, count))
}

/// Decodes a whole events body (with the `header` it follows). Allocation is bounded by
/// the body's length.
///
/// # Errors
/// [`DecodeError`] when the body is malformed or has trailing bytes.
pub fn decode_events_body<'b>(
    header: &FrameHeader,
    body: &'b [u8],
) -> Result<EventsBody<'b>, DecodeError> {
    let committed = header.is_committed_layout();
    let (stream, first_version, count) = decode_events_summary(header, body)?;
    let mut r = Reader::new(body);
    let committed_at_us = if committed { Some(r.i64()?) } else { None };
    r.take(EVENTS_BODY_FIXED.saturating_add(stream.len()))?;
    let record_min = if committed {
        EVENT_FIXED + SCHEMA_VERSION_LEN
    } else {
        EVENT_FIXED
    };
    // Each event takes at least `record_min` bytes, so a lying count cannot make us
    // allocate more than the body can hold.
    if (count as usize) > r.remaining().checked_div(record_min).unwrap_or(0) {
        return Err(DecodeError::Invalid("event count larger than the body"));
    }
    let mut events = Vec::with_capacity(count as usize);
    // The events of one append mostly share a type: one that repeats the previous event's
    // bytes reuses its checked `&str` (a short compare instead of a UTF-8 check).
    let mut last_type: Option<(&[u8], &str)> = None;
    for _ in 0..count {
        let id = r.array::<16>()?;
        let timestamp_us = r.i64()?;
        let schema_version = if committed { r.u32()? } else { 0 };
        let type_len = usize::from(r.u16()?);
        let raw_type = r.take(type_len)?;
        let event_type = match last_type {
            Some((raw, checked)) if raw == raw_type => checked,
            _ => {
                let checked = std::str::from_utf8(raw_type)
                    .map_err(|_| DecodeError::Invalid("event type is not UTF-8"))?;
                last_type = Some((raw_type, checked));
                checked
            }
        };
        let meta_len = r.u32()? as usize;
        let metadata = r.take(meta_len)?;
        let data_len = r.u32()? as usize;
        let data = r.take(data_len)?;
        events.push(EventRecord {
            id,
            timestamp_us,
            schema_version,
            event_type,
            metadata,
            data,
        });
    }
    let checkpoint = if header.has_checkpoint() {
        let name_len = usize::from(r.u8()?);
        if name_len == 0 || name_len > MAX_CHECKPOINT_NAME_LEN {
            return Err(DecodeError::Invalid("checkpoint name length"));
        }
        let name = r.str(name_len, "checkpoint name is not UTF-8")?;
        Some(CheckpointTrailer {
            name,
            position: r.u64()?,
            skip: r.u32()?,
        })
    } else {
        None
    };
    if r.remaining() != 0 {
        return Err(DecodeError::Invalid("trailing bytes after the last event"));
    }
    Ok(EventsBody {
        committed_at_us,
        stream,
        first_version,
        events,
        checkpoint,
    })
}

/// The body of a snapshot frame, borrowing from the frame bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotBody<'a> {
    /// The stream.
    pub stream: &'a str,
    /// The stream version the state includes (the last event applied).
    pub version: u64,
    /// Schema tag of the state's encoding.
    pub schema: &'a str,
    /// The encoded state.
    pub payload: &'a [u8],
}

/// Encoded body length of a snapshot frame.
pub fn snapshot_body_len(body: &SnapshotBody<'_>) -> u64 {
    (2 + 8 + 2 + 4u64)
        .saturating_add(body.stream.len() as u64)
        .saturating_add(body.schema.len() as u64)
        .saturating_add(body.payload.len() as u64)
}

/// Appends a snapshot frame to `out`. The caller has checked that
/// stream and schema fit a `u16` length and the payload a `u32`.
pub fn encode_snapshot_frame(
    out: &mut Vec<u8>,
    position: u64,
    watermark: u64,
    body: &SnapshotBody<'_>,
) -> Encoded {
    encode_frame(out, FrameKind::Snapshot, 0, position, watermark, |b| {
        b.extend_from_slice(&(body.stream.len() as u16).to_le_bytes());
        b.extend_from_slice(body.stream.as_bytes());
        b.extend_from_slice(&body.version.to_le_bytes());
        b.extend_from_slice(&(body.schema.len() as u16).to_le_bytes());
        b.extend_from_slice(body.schema.as_bytes());
        b.extend_from_slice(&(body.payload.len() as u32).to_le_bytes());
        b.extend_from_slice(body.payload);
    })
}

/// Decodes a snapshot frame body.
///
/// # Errors
/// [`DecodeError`] when the body is malformed or has trailing bytes.
pub fn decode_snapshot_body(body: &[u8]) -> Result<SnapshotBody<'_>, DecodeError> {
    let mut r = Reader::new(body);
    let stream_len = usize::from(r.u16()?);
    let stream = r.str(stream_len, "stream name is not UTF-8")?;
    let version = r.u64()?;
    let schema_len = usize::from(r.u16()?);
    let schema = r.str(schema_len, "schema tag is not UTF-8")?;
    let payload_len = r.u32()? as usize;
    let payload = r.take(payload_len)?;
    if r.remaining() != 0 {
        return Err(DecodeError::Invalid(
            "trailing bytes after the snapshot payload",
        ));
    }
    Ok(SnapshotBody {
        stream,
        version,
        schema,
        payload,
    })
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used
)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record<'a>(t: &'a str, data: &'a [u8]) -> EventRecord<'a> {
        EventRecord {
            id: [7; 16],
            timestamp_us: 1_700_000_000_000_000,
            schema_version: 3,
            event_type: t,
            metadata: b"{}",
            data,
        }
    }

    #[test]
    fn segment_header_round_trips_and_detects_damage() {
        let h = SegmentHeader {
            version: FORMAT_VERSION,
            kind: SEGMENT_KIND_EVENTS,
            base_position: 268_435_456,
        };
        let bytes = encode_segment_header(&h);
        assert_eq!(decode_segment_header(&bytes), Ok(h));
        for i in 0..bytes.len() {
            let mut bad = bytes;
            bad[i] ^= 0x10;
            assert!(
                decode_segment_header(&bad).is_err(),
                "flip at byte {i} undetected"
            );
        }
        assert!(matches!(
            decode_segment_header(&bytes[..10]),
            Err(DecodeError::Truncated { .. })
        ));
    }

    #[test]
    fn events_frame_round_trips() {
        let events = [
            record("Deposited", b"{\"amount\":100}"),
            record("Withdrawn", b""),
        ];
        let mut buf = vec![0xAA; 5];
        let encoded = encode_events_frame(
            &mut buf,
            1000,
            500,
            &EventsFrame {
                committed_at_us: Some(1_700_000_000_123_456),
                stream: "account-42",
                first_version: 3,
                events: &events,
                checkpoint: None,
            },
        );
        let len = encoded.len;
        assert_eq!(len, buf.len() - 5);
        let frame = &buf[5..];
        let header = decode_frame_header(frame).unwrap();
        assert_eq!(header.position, 1000);
        assert_eq!(header.watermark, 500);
        assert_eq!(header.kind, FrameKind::Events);
        assert_eq!(header.frame_len(), len as u64);
        assert_eq!(header.crc, encoded.crc);
        assert_eq!(
            header.body_len as u64,
            events_body_len("account-42", &events)
        );
        check_frame(&header, frame, 1000).unwrap();
        let body = decode_events_body(&header, &frame[FRAME_HEADER_LEN..]).unwrap();
        assert_eq!(body.committed_at_us, Some(1_700_000_000_123_456));
        assert_eq!(
            decode_commit_time(&header, &frame[FRAME_HEADER_LEN..]),
            Ok(Some(1_700_000_000_123_456))
        );
        assert_eq!(body.stream, "account-42");
        assert_eq!(body.first_version, 3);
        assert_eq!(body.events, events);
    }

    #[test]
    fn padding_frames_have_the_asked_length_and_check() {
        for len in [32, 33, 4096] {
            let mut buf = Vec::new();
            let enc = encode_padding_frame(&mut buf, 8192, 4096, len);
            assert_eq!((enc.len, buf.len()), (len, len));
            let h = decode_frame_header(&buf).unwrap();
            assert_eq!((h.kind, h.flags), (FrameKind::Padding, 0));
            check_frame(&h, &buf, 8192).unwrap();
        }
    }

    #[test]
    fn flags_are_refused_where_they_mean_nothing() {
        let mut buf = Vec::new();
        encode_checkpoint_frame(&mut buf, 64, 64);
        buf[13] = EVENTS_FLAG_COMMITTED;
        assert_eq!(
            decode_frame_header(&buf),
            Err(DecodeError::Invalid("frame flags"))
        );
        let mut buf = Vec::new();
        let events = [record("T", b"x")];
        let frame = EventsFrame {
            committed_at_us: Some(1),
            stream: "s",
            first_version: 0,
            events: &events,
            checkpoint: None,
        };
        encode_events_frame(&mut buf, 64, 64, &frame);
        buf[13] |= 0x04;
        assert_eq!(
            decode_frame_header(&buf),
            Err(DecodeError::Invalid("frame flags"))
        );
        buf[13] = EVENTS_FLAG_CHECKPOINT;
        assert!(decode_frame_header(&buf).is_err());
    }

    #[test]
    fn a_checkpoint_trailer_round_trips_and_its_damage_is_refused() {
        let events = [record("T", b"x"), record("U", b"yy")];
        let checkpoint = CheckpointTrailer {
            name: "invoicer",
            position: 4096,
            skip: 1,
        };
        let frame = EventsFrame {
            committed_at_us: Some(7),
            stream: "s",
            first_version: 3,
            events: &events,
            checkpoint: Some(checkpoint),
        };
        let mut buf = Vec::new();
        let encoded = encode_events_frame(&mut buf, 64, 0, &frame);
        assert_eq!(
            encoded.len as u64,
            FRAME_HEADER_LEN as u64 + events_body_len("s", &events) + checkpoint.encoded_len()
        );
        let header = decode_frame_header(&buf).unwrap();
        assert!(header.has_checkpoint() && header.is_committed_layout());
        check_frame(&header, &buf, 64).unwrap();
        let body = decode_events_body(&header, &buf[FRAME_HEADER_LEN..]).unwrap();
        assert_eq!(body.checkpoint, Some(checkpoint));
        assert_eq!(body.events.len(), 2);
        // A trailer cut short, a bad name length, a byte too many: refused.
        let body_bytes = &buf[FRAME_HEADER_LEN..];
        assert!(decode_events_body(&header, &body_bytes[..body_bytes.len() - 1]).is_err());
        let mut longer = body_bytes.to_vec();
        longer.push(0);
        assert!(decode_events_body(&header, &longer).is_err());
        let name_len_at = body_bytes.len() - 12 - checkpoint.name.len() - 1;
        for bad in [0u8, 200] {
            let mut b = body_bytes.to_vec();
            b[name_len_at] = bad;
            assert!(
                decode_events_body(&header, &b).is_err(),
                "name length {bad}"
            );
        }
        // Without the flag, the trailer is trailing bytes.
        let mut plain = header;
        plain.flags = EVENTS_FLAG_COMMITTED;
        assert!(decode_events_body(&plain, body_bytes).is_err());
    }

    #[test]
    fn segment_headers_of_every_readable_version_decode() {
        for version in OLDEST_FORMAT_VERSION..=FORMAT_VERSION {
            let h = SegmentHeader {
                version,
                kind: SEGMENT_KIND_EVENTS,
                base_position: 0,
            };
            assert_eq!(decode_segment_header(&encode_segment_header(&h)), Ok(h));
        }
        for version in [0, FORMAT_VERSION + 1] {
            let h = SegmentHeader {
                version,
                kind: SEGMENT_KIND_EVENTS,
                base_position: 0,
            };
            assert_eq!(
                decode_segment_header(&encode_segment_header(&h)),
                Err(DecodeError::UnsupportedVersion(version))
            );
        }
    }

    #[test]
    fn frame_found_at_wrong_position_is_misplaced() {
        let mut buf = Vec::new();
        encode_checkpoint_frame(&mut buf, 64, 64);
        let header = decode_frame_header(&buf).unwrap();
        assert_eq!(
            check_frame(&header, &buf, 96),
            Err(DecodeError::MisplacedFrame {
                stored: 64,
                actual: 96
            })
        );
    }

    #[test]
    fn every_single_bit_flip_in_a_frame_is_detected() {
        for committed_at_us in [Some(77), None] {
            let mut buf = Vec::new();
            encode_events_frame(
                &mut buf,
                32,
                32,
                &EventsFrame {
                    committed_at_us,
                    stream: "s",
                    first_version: 0,
                    events: &[record("T", b"payload")],
                    checkpoint: None,
                },
            );
            for bit in 0..buf.len() * 8 {
                let mut bad = buf.clone();
                bad[bit / 8] ^= 1 << (bit % 8);
                let ok = decode_frame_header(&bad)
                    .and_then(|h| check_frame(&h, &bad, 32).map(|_| h))
                    .and_then(|h| {
                        decode_events_body(&h, &bad[FRAME_HEADER_LEN..h.frame_len() as usize])
                    });
                assert!(ok.is_err(), "bit flip {bit} was not detected");
            }
        }
    }

    #[test]
    fn lying_event_count_does_not_allocate_or_panic() {
        let mut frame = Vec::new();
        encode_checkpoint_frame(&mut frame, 32, 32);
        let mut header = decode_frame_header(&frame).unwrap();
        header.kind = FrameKind::Events;
        let mut body = Vec::new();
        body.extend_from_slice(&1u16.to_le_bytes());
        body.push(b's');
        body.extend_from_slice(&0u64.to_le_bytes());
        body.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            decode_events_body(&header, &body),
            Err(DecodeError::Invalid("event count larger than the body"))
        );
    }

    #[test]
    fn snapshot_frame_round_trips() {
        let body = SnapshotBody {
            stream: "account-42",
            version: 999,
            schema: "balance-v1",
            payload: b"\x01\x02",
        };
        let mut buf = Vec::new();
        let len = encode_snapshot_frame(&mut buf, 64, 32, &body).len;
        let h = decode_frame_header(&buf).unwrap();
        assert_eq!((h.kind, h.frame_len()), (FrameKind::Snapshot, len as u64));
        assert_eq!(h.body_len as u64, snapshot_body_len(&body));
        check_frame(&h, &buf, 64).unwrap();
        assert_eq!(
            decode_snapshot_body(&buf[FRAME_HEADER_LEN..]).unwrap(),
            body
        );
        assert!(decode_snapshot_body(&buf[FRAME_HEADER_LEN..buf.len() - 1]).is_err());
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_segment_header(&bytes);
            if let Ok(h) = decode_frame_header(&bytes) {
                let _ = check_frame(&h, &bytes, 0);
            }
            if let Ok(h) = decode_frame_header(&bytes) {
                let _ = decode_events_body(&h, bytes.get(FRAME_HEADER_LEN..).unwrap_or_default());
            }
            let _ = decode_snapshot_body(&bytes);
        }

        #[test]
        fn any_events_frame_round_trips(
            stream in "[a-z0-9-]{1,20}",
            first in 0u64..1_000_000,
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 1..8),
        ) {
            // Types repeat and change from event to event (a repeated type is checked once).
            let types = ["E", "E", "Été", "F"];
            let events: Vec<_> = payloads
                .iter()
                .map(|p| record(types[p.len() % types.len()], p))
                .collect();
            for committed_at_us in [Some(first as i64 - 500_000), None] {
                // Format 1 records carry no schema version: it reads back as 0.
                let events: Vec<_> = events
                    .iter()
                    .map(|e| EventRecord { schema_version: if committed_at_us.is_some() { e.schema_version } else { 0 }, ..*e })
                    .collect();
                let mut buf = Vec::new();
                let frame = EventsFrame { committed_at_us, stream: &stream, first_version: first, events: &events, checkpoint: None };
                encode_events_frame(&mut buf, 4096, 0, &frame);
                let h = decode_frame_header(&buf).unwrap();
                check_frame(&h, &buf, 4096).unwrap();
                let body = decode_events_body(&h, &buf[FRAME_HEADER_LEN..]).unwrap();
                prop_assert_eq!(body.committed_at_us, committed_at_us);
                prop_assert_eq!(body.stream, stream.as_str());
                prop_assert_eq!(body.first_version, first);
                prop_assert_eq!(body.events, events);
            }
        }
    }
}
