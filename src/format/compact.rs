//! Rewritten ("compacted") event segments, format 3: what a scavenge writes in place of a
//! sealed segment. The surviving frames are kept byte for byte (header, self-position,
//! CRC) and packed into blocks, each stored as is or compressed with zstd and checked by
//! a CRC over the stored bytes; a block map says where each block is and which position
//! its first frame has, so that every surviving frame keeps its logical position. A table
//! of removed runs (index-entry records: stream key, first version, count, position) says
//! what the scavenge took out, so that `verify` can still check each stream's versions
//! and readers know where a stream's surviving events begin.
//!
//! ```text
//! segment header (32 bytes, kind 3)
//! block*        block header (24 bytes) + stored bytes
//! block map     32 bytes per block
//! removed runs  32 bytes per run
//! footer        64 bytes
//! ```
//! Byte by byte in docs/format.md ("Rewritten segments").

use super::le::Reader;
use super::{DecodeError, FRAME_HEADER_LEN, SEGMENT_HEADER_LEN, decode_frame_header};

/// Segment file kind of a rewritten event segment (format 3).
pub const SEGMENT_KIND_COMPACTED: u32 = 3;
/// Magic of a block header: `SLBK`.
pub const BLOCK_MAGIC: [u8; 4] = *b"SLBK";
/// Size of a block header.
pub const BLOCK_HEADER_LEN: usize = 24;
/// Size of one block map record.
pub const BLOCK_MAP_RECORD_LEN: usize = 32;
/// Size of one removed-run record.
pub const REMOVED_RECORD_LEN: usize = 40;
/// Size of the footer at the end of the file.
pub const FOOTER_LEN: usize = 64;
/// Magic of the footer.
pub const FOOTER_MAGIC: [u8; 8] = *b"SLCMPEND";
/// Frames are packed into blocks of about this many raw bytes (a larger frame gets a
/// block of its own).
pub const BLOCK_TARGET_BYTES: usize = 16 * 1024;
/// Most raw bytes a block may declare (a frame's own limit is 4 GiB; a block holding
/// one such frame is allowed, nothing larger).
const MAX_RAW_BLOCK: u64 = u32::MAX as u64 + FRAME_HEADER_LEN as u64;

/// How a block's bytes are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// The frames as they are.
    Stored,
    /// A zstd frame holding the frames.
    Zstd,
}

impl Codec {
    fn to_byte(self) -> u8 {
        match self {
            Codec::Stored => 0,
            Codec::Zstd => 1,
        }
    }
    fn from_byte(b: u8) -> Result<Self, DecodeError> {
        match b {
            0 => Ok(Codec::Stored),
            1 => Ok(Codec::Zstd),
            _ => Err(DecodeError::Invalid("block codec")),
        }
    }
}

/// Where one block is, as the block map says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockRef {
    /// Position of the block's first frame.
    pub first_position: u64,
    /// File offset of the block header.
    pub file_offset: u64,
    /// Bytes stored after the header.
    pub stored_len: u32,
    /// Bytes of frames once decoded.
    pub raw_len: u32,
    /// How they are stored.
    pub codec: Codec,
}

/// A run of removed frames of one stream (the same fields as an index entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemovedRun {
    /// The stream's hash.
    pub hash: u64,
    /// The stream's check value.
    pub check: u32,
    /// Version of the first removed event.
    pub first_version: u64,
    /// Events removed (consecutive versions).
    pub count: u64,
    /// Position of the first removed frame.
    pub position: u64,
}

/// The footer: where the map and the removed runs are, and the segment's logical end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footer {
    /// The position the segment ends at (the next segment's base).
    pub logical_end: u64,
    /// Blocks in the map.
    pub blocks: u64,
    /// File offset of the block map.
    pub map_offset: u64,
    /// Removed runs.
    pub removed: u64,
    /// File offset of the removed runs (right after the map).
    pub removed_offset: u64,
    /// CRC-32 of the map and the removed runs.
    pub tables_crc: u32,
}

/// Encodes a block: header and stored bytes, appended to `out`.
pub fn encode_block(out: &mut Vec<u8>, codec: Codec, stored: &[u8], raw_len: u32) {
    let stored_len = u32::try_from(stored.len()).unwrap_or(u32::MAX);
    let mut header = Vec::with_capacity(BLOCK_HEADER_LEN);
    header.extend_from_slice(&BLOCK_MAGIC);
    header.push(codec.to_byte());
    header.extend_from_slice(&[0u8; 3]);
    header.extend_from_slice(&stored_len.to_le_bytes());
    header.extend_from_slice(&raw_len.to_le_bytes());
    header.extend_from_slice(&crc32fast::hash(stored).to_le_bytes());
    let crc = crc32fast::hash(&header);
    header.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(stored);
}

/// Decodes a block header: codec, stored length, raw length, CRC of the stored bytes.
///
/// # Errors
/// [`DecodeError`] when the bytes are short, the magic or CRC is wrong, or a field is out
/// of its domain.
pub fn decode_block_header(bytes: &[u8]) -> Result<(Codec, u32, u32, u32), DecodeError> {
    let mut r = Reader::new(bytes);
    let covered = r.take(BLOCK_HEADER_LEN - 4)?;
    let stored_crc = r.u32()?;
    let computed = crc32fast::hash(covered);
    if computed != stored_crc {
        return Err(DecodeError::ChecksumMismatch {
            stored: stored_crc,
            computed,
        });
    }
    let mut r = Reader::new(covered);
    if r.array::<4>()? != BLOCK_MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let codec = Codec::from_byte(r.u8()?)?;
    if r.array::<3>()? != [0u8; 3] {
        return Err(DecodeError::Invalid("block header reserved bytes"));
    }
    let stored_len = r.u32()?;
    let raw_len = r.u32()?;
    let data_crc = r.u32()?;
    Ok((codec, stored_len, raw_len, data_crc))
}

/// Checks a block's stored bytes against its header and decodes them into the frames
/// they hold (`raw_len` bytes).
///
/// # Errors
/// [`DecodeError::ChecksumMismatch`] for stored bytes that do not match their CRC (a
/// bit flip in a compressed block is reported here, before anything is decoded);
/// [`DecodeError::Invalid`] when decompression fails or yields another length.
pub fn decode_block(
    codec: Codec,
    stored: &[u8],
    raw_len: u32,
    data_crc: u32,
) -> Result<Vec<u8>, DecodeError> {
    let computed = crc32fast::hash(stored);
    if computed != data_crc {
        return Err(DecodeError::ChecksumMismatch {
            stored: data_crc,
            computed,
        });
    }
    let raw_len_usize = usize::try_from(raw_len).map_err(|_| DecodeError::Invalid("length"))?;
    let raw = match codec {
        Codec::Stored => stored.to_vec(),
        Codec::Zstd => zstd::bulk::decompress(stored, raw_len_usize)
            .map_err(|_| DecodeError::Invalid("compressed block does not decode"))?,
    };
    if raw.len() != raw_len_usize {
        return Err(DecodeError::Invalid("block decodes to another length"));
    }
    Ok(raw)
}

/// Encodes a block map record.
pub fn encode_block_ref(out: &mut Vec<u8>, block: &BlockRef) {
    out.extend_from_slice(&block.first_position.to_le_bytes());
    out.extend_from_slice(&block.file_offset.to_le_bytes());
    out.extend_from_slice(&block.stored_len.to_le_bytes());
    out.extend_from_slice(&block.raw_len.to_le_bytes());
    out.push(block.codec.to_byte());
    out.extend_from_slice(&[0u8; 7]);
}

/// Encodes a removed-run record.
pub fn encode_removed_run(out: &mut Vec<u8>, run: &RemovedRun) {
    out.extend_from_slice(&run.hash.to_le_bytes());
    out.extend_from_slice(&run.first_version.to_le_bytes());
    out.extend_from_slice(&run.position.to_le_bytes());
    out.extend_from_slice(&run.count.to_le_bytes());
    out.extend_from_slice(&run.check.to_le_bytes());
    out.extend_from_slice(&[0u8; 4]);
}

/// Encodes the footer.
pub fn encode_footer(footer: &Footer) -> [u8; FOOTER_LEN] {
    let mut body = Vec::with_capacity(FOOTER_LEN);
    body.extend_from_slice(&FOOTER_MAGIC);
    body.extend_from_slice(&footer.logical_end.to_le_bytes());
    body.extend_from_slice(&footer.blocks.to_le_bytes());
    body.extend_from_slice(&footer.map_offset.to_le_bytes());
    body.extend_from_slice(&footer.removed.to_le_bytes());
    body.extend_from_slice(&footer.removed_offset.to_le_bytes());
    body.extend_from_slice(&footer.tables_crc.to_le_bytes());
    body.extend_from_slice(&[0u8; 8]);
    let crc = crc32fast::hash(&body);
    body.extend_from_slice(&crc.to_le_bytes());
    let mut out = [0u8; FOOTER_LEN];
    out.copy_from_slice(&body);
    out
}

/// Decodes and checks the footer (the last [`FOOTER_LEN`] bytes of a file `file_len`
/// bytes long whose header says it starts at `base`).
///
/// # Errors
/// [`DecodeError`] when the footer does not check or places its tables outside the file.
pub fn decode_footer(bytes: &[u8], base: u64, file_len: u64) -> Result<Footer, DecodeError> {
    let mut r = Reader::new(bytes);
    let covered = r.take(FOOTER_LEN - 4)?;
    let stored = r.u32()?;
    let computed = crc32fast::hash(covered);
    if stored != computed {
        return Err(DecodeError::ChecksumMismatch { stored, computed });
    }
    let mut r = Reader::new(covered);
    if r.array::<8>()? != FOOTER_MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let footer = Footer {
        logical_end: r.u64()?,
        blocks: r.u64()?,
        map_offset: r.u64()?,
        removed: r.u64()?,
        removed_offset: r.u64()?,
        tables_crc: r.u32()?,
    };
    if r.array::<8>()? != [0u8; 8] {
        return Err(DecodeError::Invalid("footer reserved bytes"));
    }
    let tables_end = (FOOTER_LEN as u64)
        .checked_add(footer.removed_offset)
        .and_then(|e| {
            footer
                .removed
                .checked_mul(REMOVED_RECORD_LEN as u64)
                .and_then(|n| n.checked_add(e))
        });
    let map_end = footer
        .blocks
        .checked_mul(BLOCK_MAP_RECORD_LEN as u64)
        .and_then(|n| n.checked_add(footer.map_offset));
    if footer.map_offset < SEGMENT_HEADER_LEN as u64
        || map_end != Some(footer.removed_offset)
        || tables_end != Some(file_len)
    {
        return Err(DecodeError::Invalid(
            "footer places its tables outside the file",
        ));
    }
    if footer.logical_end < base.saturating_add(SEGMENT_HEADER_LEN as u64) {
        return Err(DecodeError::Invalid("logical end before the first frame"));
    }
    Ok(footer)
}

/// Decodes the block map and the removed runs (`tables` = the bytes from
/// `footer.map_offset` to the footer), checking their CRC and that blocks follow one
/// another in the file and in position, within `base..footer.logical_end`.
///
/// # Errors
/// [`DecodeError`] when the tables do not check.
pub fn decode_tables(
    tables: &[u8],
    footer: &Footer,
    base: u64,
) -> Result<(Vec<BlockRef>, Vec<RemovedRun>), DecodeError> {
    let computed = crc32fast::hash(tables);
    if computed != footer.tables_crc {
        return Err(DecodeError::ChecksumMismatch {
            stored: footer.tables_crc,
            computed,
        });
    }
    let mut r = Reader::new(tables);
    let n = usize::try_from(footer.blocks).map_err(|_| DecodeError::Invalid("block count"))?;
    let mut blocks = Vec::with_capacity(n.min(tables.len() / BLOCK_MAP_RECORD_LEN));
    let mut next_offset = SEGMENT_HEADER_LEN as u64;
    let mut min_position = base.saturating_add(SEGMENT_HEADER_LEN as u64);
    for _ in 0..n {
        let block = BlockRef {
            first_position: r.u64()?,
            file_offset: r.u64()?,
            stored_len: r.u32()?,
            raw_len: r.u32()?,
            codec: Codec::from_byte(r.u8()?)?,
        };
        if r.array::<7>()? != [0u8; 7] {
            return Err(DecodeError::Invalid("block map reserved bytes"));
        }
        let raw = u64::from(block.raw_len);
        if block.file_offset != next_offset
            || block.first_position < min_position
            || raw < FRAME_HEADER_LEN as u64
            || raw > MAX_RAW_BLOCK
            || block.first_position.saturating_add(raw) > footer.logical_end
        {
            return Err(DecodeError::Invalid("block map out of order"));
        }
        next_offset = block
            .file_offset
            .saturating_add(BLOCK_HEADER_LEN as u64)
            .saturating_add(u64::from(block.stored_len));
        min_position = block.first_position.saturating_add(raw);
        blocks.push(block);
    }
    if next_offset != footer.map_offset {
        return Err(DecodeError::Invalid(
            "blocks do not end where the map starts",
        ));
    }
    let n = usize::try_from(footer.removed).map_err(|_| DecodeError::Invalid("run count"))?;
    let mut removed = Vec::with_capacity(n.min(tables.len() / REMOVED_RECORD_LEN));
    for _ in 0..n {
        let run = RemovedRun {
            hash: r.u64()?,
            first_version: r.u64()?,
            position: r.u64()?,
            count: r.u64()?,
            check: r.u32()?,
        };
        if r.array::<4>()? != [0u8; 4] {
            return Err(DecodeError::Invalid("removed run reserved bytes"));
        }
        if run.count == 0 || run.position >= footer.logical_end || run.position < base {
            return Err(DecodeError::Invalid("removed run out of the segment"));
        }
        removed.push(run);
    }
    if r.remaining() != 0 {
        return Err(DecodeError::Invalid("bytes after the removed runs"));
    }
    Ok((blocks, removed))
}

/// Finds the frame at `position` in a decoded block whose first frame is at
/// `first_position`: `Ok(Some(offset))` in the block, `Ok(None)` when the block holds no
/// frame there (the scavenge removed it). Only the frame headers on the way are decoded;
/// the caller checks the frame it takes.
///
/// # Errors
/// [`DecodeError`] when a frame header in the block does not decode, or frames do not
/// follow one another in position.
pub fn find_in_block(
    raw: &[u8],
    first_position: u64,
    position: u64,
) -> Result<Option<usize>, DecodeError> {
    let mut offset = 0usize;
    let mut expected_min = first_position;
    while offset < raw.len() {
        let header = decode_frame_header(raw.get(offset..).unwrap_or_default())?;
        if header.position < expected_min {
            return Err(DecodeError::Invalid("frames of a block out of order"));
        }
        if offset == 0 && header.position != first_position {
            return Err(DecodeError::MisplacedFrame {
                stored: header.position,
                actual: first_position,
            });
        }
        if header.position == position {
            return Ok(Some(offset));
        }
        if header.position > position {
            return Ok(None);
        }
        let len =
            usize::try_from(header.frame_len()).map_err(|_| DecodeError::Invalid("length"))?;
        expected_min = header.position.saturating_add(header.frame_len());
        offset = offset.saturating_add(len);
    }
    Ok(None)
}

/// The positions of the frames of a decoded block, in order (each frame's header decoded,
/// not its CRC checked).
///
/// # Errors
/// As [`find_in_block`].
pub fn block_positions(raw: &[u8], first_position: u64) -> Result<Vec<(u64, usize)>, DecodeError> {
    let mut out = Vec::new();
    let mut offset = 0usize;
    let mut expected_min = first_position;
    while offset < raw.len() {
        let header = decode_frame_header(raw.get(offset..).unwrap_or_default())?;
        if header.position < expected_min || (offset == 0 && header.position != first_position) {
            return Err(DecodeError::Invalid("frames of a block out of order"));
        }
        out.push((header.position, offset));
        let len =
            usize::try_from(header.frame_len()).map_err(|_| DecodeError::Invalid("length"))?;
        if len > raw.len().saturating_sub(offset) {
            return Err(DecodeError::Truncated {
                needed: header.frame_len(),
                available: raw.len().saturating_sub(offset) as u64,
            });
        }
        expected_min = header.position.saturating_add(header.frame_len());
        offset = offset.saturating_add(len);
    }
    Ok(out)
}

/// Writes a rewritten segment from its surviving frames, in position order, into one
/// buffer: header, blocks (compressed with zstd at `level` when that makes them smaller
/// and `level` is not `None`), map, removed runs, footer.
#[derive(Debug)]
pub struct CompactWriter {
    out: Vec<u8>,
    blocks: Vec<BlockRef>,
    pending: Vec<u8>,
    pending_first: u64,
    level: Option<i32>,
    /// Raw bytes of frames taken in.
    pub raw_bytes: u64,
}

impl CompactWriter {
    /// Starts a rewritten segment at `base`, with header `version`.
    pub fn new(base: u64, version: u32, level: Option<i32>) -> Self {
        let header = super::encode_segment_header(&super::SegmentHeader {
            version,
            kind: SEGMENT_KIND_COMPACTED,
            base_position: base,
        });
        CompactWriter {
            out: header.to_vec(),
            blocks: Vec::new(),
            pending: Vec::new(),
            pending_first: 0,
            level,
            raw_bytes: 0,
        }
    }

    /// Takes in one surviving frame (its bytes exactly as read, header included), at
    /// `position`, after every frame taken so far.
    pub fn push_frame(&mut self, position: u64, frame: &[u8]) {
        if self.pending.is_empty() {
            self.pending_first = position;
        } else if self.pending.len().saturating_add(frame.len()) > BLOCK_TARGET_BYTES {
            self.finish_block();
            self.pending_first = position;
        }
        self.pending.extend_from_slice(frame);
        self.raw_bytes = self.raw_bytes.saturating_add(frame.len() as u64);
    }

    fn finish_block(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let raw_len = u32::try_from(self.pending.len()).unwrap_or(u32::MAX);
        let compressed = self
            .level
            .and_then(|level| zstd::bulk::compress(&self.pending, level).ok())
            .filter(|c| c.len() < self.pending.len());
        let (codec, stored): (Codec, &[u8]) = match &compressed {
            Some(c) => (Codec::Zstd, c),
            None => (Codec::Stored, &self.pending),
        };
        let block = BlockRef {
            first_position: self.pending_first,
            file_offset: self.out.len() as u64,
            stored_len: u32::try_from(stored.len()).unwrap_or(u32::MAX),
            raw_len,
            codec,
        };
        encode_block(&mut self.out, codec, stored, raw_len);
        self.blocks.push(block);
        self.pending.clear();
    }

    /// Ends the segment: the map, the removed runs, the footer. Returns the file's bytes.
    pub fn finish(mut self, logical_end: u64, removed: &[RemovedRun]) -> Vec<u8> {
        self.finish_block();
        let map_offset = self.out.len() as u64;
        let mut tables = Vec::new();
        for b in &self.blocks {
            encode_block_ref(&mut tables, b);
        }
        let removed_offset = map_offset.saturating_add(tables.len() as u64);
        for run in removed {
            encode_removed_run(&mut tables, run);
        }
        let footer = Footer {
            logical_end,
            blocks: self.blocks.len() as u64,
            map_offset,
            removed: removed.len() as u64,
            removed_offset,
            tables_crc: crc32fast::hash(&tables),
        };
        self.out.extend_from_slice(&tables);
        self.out.extend_from_slice(&encode_footer(&footer));
        self.out
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]
mod tests {
    use super::*;
    use crate::format::{EventRecord, EventsFrame, encode_events_frame};

    fn frame(position: u64, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let e = EventRecord {
            id: [7; 16],
            timestamp_us: 1,
            schema_version: 0,
            event_type: "T",
            metadata: b"",
            data,
        };
        encode_events_frame(
            &mut out,
            position,
            0,
            &EventsFrame {
                committed_at_us: Some(5),
                stream: "s",
                first_version: 0,
                events: std::slice::from_ref(&e),
                checkpoint: None,
            },
        );
        out
    }

    fn parse(bytes: &[u8], base: u64) -> (Footer, Vec<BlockRef>, Vec<RemovedRun>) {
        let footer =
            decode_footer(&bytes[bytes.len() - FOOTER_LEN..], base, bytes.len() as u64).unwrap();
        let tables = &bytes[footer.map_offset as usize..bytes.len() - FOOTER_LEN];
        let (blocks, removed) = decode_tables(tables, &footer, base).unwrap();
        (footer, blocks, removed)
    }

    #[test]
    fn frames_keep_their_positions_through_blocks_stored_or_compressed() {
        for level in [None, Some(3)] {
            let base = 1 << 20;
            let mut w = CompactWriter::new(base, 3, level);
            let mut positions = Vec::new();
            let mut p = base + 32;
            for i in 0..2000u64 {
                let f = frame(
                    p,
                    format!("{{\"n\":{i},\"pad\":\"aaaaaaaaaaaaaaaa\"}}").as_bytes(),
                );
                if i % 3 != 0 {
                    w.push_frame(p, &f);
                    positions.push(p);
                }
                p += f.len() as u64;
            }
            let run = RemovedRun {
                hash: 1,
                check: 2,
                first_version: 0,
                count: 667,
                position: base + 32,
            };
            let bytes = w.finish(p, &[run]);
            let (footer, blocks, removed) = parse(&bytes, base);
            assert_eq!(footer.logical_end, p);
            assert_eq!(removed, vec![run]);
            assert!(blocks.len() > 1);
            let mut found = Vec::new();
            for b in &blocks {
                let start = b.file_offset as usize;
                let (codec, stored_len, raw_len, crc) =
                    decode_block_header(&bytes[start..start + BLOCK_HEADER_LEN]).unwrap();
                assert_eq!(codec, b.codec);
                let stored = &bytes[start + BLOCK_HEADER_LEN..][..stored_len as usize];
                let raw = decode_block(codec, stored, raw_len, crc).unwrap();
                for (pos, off) in block_positions(&raw, b.first_position).unwrap() {
                    assert_eq!(
                        find_in_block(&raw, b.first_position, pos).unwrap(),
                        Some(off)
                    );
                    assert_eq!(
                        find_in_block(&raw, b.first_position, pos + 1).unwrap(),
                        None
                    );
                    found.push(pos);
                }
            }
            assert_eq!(found, positions);
            if level.is_some() {
                assert!(blocks.iter().all(|b| b.codec == Codec::Zstd));
            }
        }
    }

    #[test]
    fn a_flipped_bit_anywhere_is_reported() {
        let base = 0;
        let mut w = CompactWriter::new(base, 3, Some(3));
        let mut p = 32;
        for i in 0..50u64 {
            let f = frame(p, format!("{i:0>100}").as_bytes());
            w.push_frame(p, &f);
            p += f.len() as u64;
        }
        let bytes = w.finish(p, &[]);
        let (_, blocks, _) = parse(&bytes, base);
        let b = blocks[0];
        for i in (b.file_offset as usize)
            ..(b.file_offset as usize + BLOCK_HEADER_LEN + b.stored_len as usize)
        {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            let start = b.file_offset as usize;
            let ok = decode_block_header(&bad[start..start + BLOCK_HEADER_LEN]).and_then(
                |(codec, stored_len, raw_len, crc)| {
                    let stored = bad
                        .get(
                            start + BLOCK_HEADER_LEN
                                ..start + BLOCK_HEADER_LEN + stored_len as usize,
                        )
                        .ok_or(DecodeError::Invalid("short"))?;
                    decode_block(codec, stored, raw_len, crc)
                },
            );
            assert!(ok.is_err(), "flip at {i} not reported");
        }
        for i in bytes.len() - FOOTER_LEN..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 1;
            assert!(decode_footer(&bad[bad.len() - FOOTER_LEN..], base, bad.len() as u64).is_err());
        }
    }
}
