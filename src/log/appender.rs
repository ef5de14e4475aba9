//! The writer's end of the log: positions for new frames, and their encoded bytes until
//! they are written.

use crate::format::{FRAME_HEADER_LEN, SEGMENT_HEADER_LEN};

/// Bytes encoded for one segment, not yet written.
#[derive(Debug)]
pub struct Chunk {
    pub(super) segment_base: u64,
    pub(super) start: u64,
    pub(super) bytes: Vec<u8>,
}

/// The in-memory end of the log on the writer's side: assigns positions to new frames and
/// holds their encoded bytes until they are written. Owned by the store's writer state.
#[derive(Debug)]
pub struct Appender {
    pub(super) segment_size: u64,
    pub(super) active_base: u64,
    pub(super) head: u64,
    pub(super) chunks: Vec<Chunk>,
    /// A written chunk's buffer, kept to encode the next one into.
    pub(super) spare: Vec<u8>,
    /// The next frame starts a new segment whatever room is left: the active segment is
    /// of an older format version, which this build never appends to.
    pub(super) roll_next: bool,
    /// Where the first frame of a new segment starts: after the header, or after the
    /// header's padding to the commit alignment.
    pub(super) first_frame_offset: u64,
}

/// Largest buffer [`Appender::recycle`] keeps.
const MAX_SPARE_BYTES: usize = 4 << 20;

impl Appender {
    /// The position the next frame would get (if it fits the active segment).
    pub fn head(&self) -> u64 {
        self.head
    }

    /// Reserves room for a frame of `len` bytes, rolling to a new segment when it would not
    /// fit in the active one. Returns the frame's position and the buffer to encode it into
    /// (the frame must be appended to the buffer's end).
    pub fn reserve(&mut self, len: u64) -> (u64, &mut Vec<u8>) {
        let used = self.head.saturating_sub(self.active_base);
        let has_frames = used > self.first_frame_offset.max(SEGMENT_HEADER_LEN as u64);
        if self.roll_next || (has_frames && used.saturating_add(len) > self.segment_size) {
            self.roll_next = false;
            self.active_base = self.head;
            self.head = self.head.saturating_add(self.first_frame_offset);
        }
        let position = self.head;
        self.head = self.head.saturating_add(len);
        let active_base = self.active_base;
        let contiguous = self.chunks.last().is_some_and(|c| {
            c.segment_base == active_base
                && c.start.saturating_add(c.bytes.len() as u64) == position
        });
        if !contiguous {
            let mut bytes = std::mem::take(&mut self.spare);
            bytes.clear();
            bytes.reserve(usize::try_from(len).unwrap_or(0));
            self.chunks.push(Chunk {
                segment_base: active_base,
                start: position,
                bytes,
            });
        }
        match self.chunks.last_mut() {
            Some(c) => (position, &mut c.bytes),
            None => unreachable!("a chunk was just pushed"),
        }
    }

    /// Reserves a padding frame (returned as position, length and buffer, for the caller
    /// to encode) that makes the next frame start at a multiple of `align` bytes of its
    /// segment file, or `None` when it already does. The padding is at least a frame
    /// header long, so it may reach past one boundary to the next.
    pub fn reserve_padding(&mut self, align: u64) -> Option<(u64, usize, &mut Vec<u8>)> {
        if align == 0 || self.roll_next {
            return None;
        }
        let offset = self.head.saturating_sub(self.active_base);
        let rem = offset % align;
        if rem == 0 || offset <= SEGMENT_HEADER_LEN as u64 {
            return None;
        }
        let mut len = align - rem;
        if len < FRAME_HEADER_LEN as u64 {
            len = len.saturating_add(align);
        }
        // Padding never starts a new segment: where it does not fit, the segment ends
        // early instead (the next frame rolls over).
        if offset.saturating_add(len) > self.segment_size {
            return None;
        }
        let (position, buf) = self.reserve(len);
        Some((position, usize::try_from(len).unwrap_or(0), buf))
    }

    /// Makes the next frame start a new segment (sealing the active one when written).
    pub fn roll_next_segment(&mut self) {
        self.roll_next = true;
    }

    /// Bytes of frames in the active segment (appended, written or not).
    pub fn active_frame_bytes(&self) -> u64 {
        self.head
            .saturating_sub(self.active_base)
            .saturating_sub(self.first_frame_offset.max(SEGMENT_HEADER_LEN as u64))
    }

    /// Takes the encoded bytes, to be written with [`Log::write`].
    pub fn take(&mut self) -> Vec<Chunk> {
        std::mem::take(&mut self.chunks)
    }

    /// Gives back written chunks so their memory is reused for the next frames.
    pub fn recycle(&mut self, chunks: Vec<Chunk>) {
        if let Some(c) = chunks.into_iter().max_by_key(|c| c.bytes.capacity())
            && c.bytes.capacity() <= MAX_SPARE_BYTES
            && c.bytes.capacity() > self.spare.capacity()
        {
            self.spare = c.bytes;
        }
    }

    /// The encoded bytes of a frame that is not yet written, if `position` is one.
    pub fn pending_frame(&self, position: u64) -> Option<&[u8]> {
        let chunk = self.chunks.iter().find(|c| {
            position >= c.start && position < c.start.saturating_add(c.bytes.len() as u64)
        })?;
        let at = usize::try_from(position.saturating_sub(chunk.start)).ok()?;
        chunk.bytes.get(at..)
    }
}
