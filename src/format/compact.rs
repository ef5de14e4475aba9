//! Rewritten ("compacted") event segments, format 3: what a scavenge writes in place of a
//! sealed segment. The surviving frames are kept byte for byte (header, self-position,
//! CRC) and packed into blocks, each stored as is or compressed with zstd and checked by
//! a CRC over the stored bytes. Since format 5, compressed blocks are small (about
//! [`DICT_BLOCK_TARGET_BYTES`] of frames, so that a point read decodes little more than
//! its frame) and compressed with a dictionary stored once in the segment, trained by zstd
//! on kept frames sampled evenly across it ([`DictionarySampler`]) and checked by a CRC
//! before it is used. A
//! block map says where each block is and which position
//! its first frame has, so that every surviving frame keeps its logical position. A table
//! of removed runs (index-entry records: stream key, first version, count, position) says
//! what the scavenge took out, so that `verify` can still check each stream's versions
//! and readers know where a stream's surviving events begin.
//!
//! ```text
//! segment header (32 bytes, kind 3)
//! dictionary    the bytes the footer counts (format 5; none when it counts 0)
//! block*        stored bytes (formats 3-5: a 24-byte block header before them)
//! block map     a packed record per block (formats 3-5: 32 bytes per block)
//! removed runs  40 bytes per run
//! footer        64 bytes
//! ```
//!
//! Since format 6 a block is only its stored bytes: its lengths, codec and the CRC of its
//! stored bytes are in its block map record, packed (LEB128 numbers, the position as the
//! gap after the previous block), which the reader holds in memory from the open on.
//! Small compressed blocks are most of a compressed segment, and the 56 bytes of header
//! and fixed-size record each carried before were a quarter of its bytes.
//! Byte by byte in docs/format.md ("Rewritten segments").

use std::cell::RefCell;
use std::sync::Arc;

use zstd::zstd_safe::{CCtx, CDict, CParameter, DCtx, DDict};

use super::le::Reader;
use super::{DecodeError, FRAME_HEADER_LEN, FRAME_MAGIC, SEGMENT_HEADER_LEN, decode_frame_header};

/// Segment file kind of a rewritten event segment (format 3).
pub const SEGMENT_KIND_COMPACTED: u32 = 3;
/// Magic of a block header: `SLBK`.
pub const BLOCK_MAGIC: [u8; 4] = *b"SLBK";
/// Size of a block header (formats 3-5).
pub const BLOCK_HEADER_LEN: usize = 24;
/// Size of one block map record (formats 3-5).
pub const BLOCK_MAP_RECORD_LEN: usize = 32;
/// The format version from which blocks have no header and the block map is packed
/// (format 6): segments of an older version keep their layout.
pub const PACKED_MAP_VERSION: u32 = 6;
/// Smallest packed block map record: a one-byte gap, raw and stored lengths, the codec,
/// the 4-byte CRC.
const PACKED_RECORD_MIN: u64 = 8;
/// Size of one removed-run record.
pub const REMOVED_RECORD_LEN: usize = 40;
/// Size of the footer at the end of the file.
pub const FOOTER_LEN: usize = 64;
/// Magic of the footer.
pub const FOOTER_MAGIC: [u8; 8] = *b"SLCMPEND";
/// Frames are packed into blocks of about this many raw bytes when blocks are stored as
/// they are, or compressed without a dictionary (a larger frame gets a block of its own).
pub const BLOCK_TARGET_BYTES: usize = 16 * 1024;
/// Frames are packed into blocks of about this many raw bytes when blocks are compressed
/// with the segment's dictionary: a point read decodes a block, so a small one costs
/// little more than its frame, and the dictionary keeps small blocks small
/// (docs/design.md, "Compressed segments with a dictionary").
pub const DICT_BLOCK_TARGET_BYTES: usize = 512;
/// Bytes of kept frames a dictionary is made of, at most.
pub const DICTIONARY_TARGET_BYTES: usize = 16 * 1024;
/// The largest dictionary a footer may declare (a bound on what a reader allocates).
pub const MAX_DICTIONARY_BYTES: u32 = 1 << 20;
/// A dictionary sample is at most this many bytes of a frame (its start).
const SAMPLE_MAX_BYTES: usize = 2 * 1024;
/// Dictionary samples are taken at this many evenly spaced places of a segment, at most.
const SAMPLE_SLOTS: u64 = 256;
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
    /// A zstd frame holding the frames, compressed with the segment's dictionary
    /// (format 5).
    ZstdDict,
}

impl Codec {
    fn to_byte(self) -> u8 {
        match self {
            Codec::Stored => 0,
            Codec::Zstd => 1,
            Codec::ZstdDict => 2,
        }
    }
    fn from_byte(b: u8) -> Result<Self, DecodeError> {
        match b {
            0 => Ok(Codec::Stored),
            1 => Ok(Codec::Zstd),
            2 => Ok(Codec::ZstdDict),
            _ => Err(DecodeError::Invalid("block codec")),
        }
    }
}

/// Where one block is, as the block map says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockRef {
    /// Position of the block's first frame.
    pub first_position: u64,
    /// File offset of the block: of its header in formats 3-5, of its stored bytes since
    /// format 6.
    pub file_offset: u64,
    /// Bytes stored (after the header, in formats 3-5).
    pub stored_len: u32,
    /// Bytes of frames once decoded.
    pub raw_len: u32,
    /// How they are stored.
    pub codec: Codec,
    /// CRC-32 of the stored bytes when the map holds it (format 6); `None` in formats
    /// 3-5, where the block's header holds it.
    pub stored_crc: Option<u32>,
}

impl BlockRef {
    /// Bytes of the block in the file: its header (formats 3-5) and its stored bytes.
    pub fn file_len(&self) -> u64 {
        let header = if self.stored_crc.is_some() {
            0
        } else {
            BLOCK_HEADER_LEN as u64
        };
        header.saturating_add(u64::from(self.stored_len))
    }
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
    /// Bytes of the dictionary right after the segment header (format 5; 0: none).
    pub dictionary_len: u32,
    /// CRC-32 of the dictionary's bytes (0 when there is none).
    pub dictionary_crc: u32,
    /// Whether blocks have no header and the map is packed (format 6 and later, as the
    /// segment header's version says; not a byte of the footer).
    pub packed: bool,
}

impl Footer {
    /// File offset of the first block: right after the segment header and the dictionary.
    pub fn blocks_offset(&self) -> u64 {
        (SEGMENT_HEADER_LEN as u64).saturating_add(u64::from(self.dictionary_len))
    }
}

/// Encodes a block: header and stored bytes, appended to `out`.
pub fn encode_block(out: &mut Vec<u8>, codec: Codec, stored: &[u8], raw_len: u32) {
    let stored_len = u32::try_from(stored.len()).unwrap_or(u32::MAX);
    let start = out.len();
    out.reserve(BLOCK_HEADER_LEN.saturating_add(stored.len()));
    out.extend_from_slice(&BLOCK_MAGIC);
    out.push(codec.to_byte());
    out.extend_from_slice(&[0u8; 3]);
    out.extend_from_slice(&stored_len.to_le_bytes());
    out.extend_from_slice(&raw_len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(stored).to_le_bytes());
    let crc = crc32fast::hash(out.get(start..).unwrap_or_default());
    out.extend_from_slice(&crc.to_le_bytes());
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

/// A rewritten segment's dictionary, checked and prepared for decompression (parsed once,
/// kept with the open segment).
pub struct Dictionary {
    ddict: DDict<'static>,
    len: usize,
}

impl std::fmt::Debug for Dictionary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dictionary")
            .field("len", &self.len)
            .finish()
    }
}

impl Dictionary {
    /// Checks the dictionary's bytes (`footer.dictionary_len` of them, read at file offset
    /// [`SEGMENT_HEADER_LEN`]) against the footer's CRC and prepares it.
    ///
    /// # Errors
    /// [`DecodeError::ChecksumMismatch`] when the bytes do not match the CRC (a flipped
    /// bit in a dictionary is reported, never decoded with); [`DecodeError::Invalid`] when
    /// the footer declares no dictionary, the bytes are neither a dictionary of zstd's
    /// trainer nor raw content starting with a frame (what a scavenge writes), or zstd
    /// cannot prepare them.
    pub fn decode(bytes: &[u8], footer: &Footer) -> Result<Dictionary, DecodeError> {
        if footer.dictionary_len == 0
            || usize::try_from(footer.dictionary_len).ok() != Some(bytes.len())
        {
            return Err(DecodeError::Invalid("dictionary length"));
        }
        let computed = crc32fast::hash(bytes);
        if computed != footer.dictionary_crc {
            return Err(DecodeError::ChecksumMismatch {
                stored: footer.dictionary_crc,
                computed,
            });
        }
        if !usable_dictionary(bytes) {
            return Err(DecodeError::Invalid(
                "dictionary is neither trained by zstd nor frames",
            ));
        }
        let ddict = DDict::try_create(bytes)
            .ok_or(DecodeError::Invalid("dictionary cannot be prepared"))?;
        Ok(Dictionary {
            ddict,
            len: bytes.len(),
        })
    }
}

thread_local! {
    /// One decompression context per thread, reused by every block it decodes (creating
    /// one costs more than decoding a small block).
    static DECOMPRESSOR: RefCell<Option<DCtx<'static>>> = const { RefCell::new(None) };
}

/// Decompresses `stored` (one zstd frame) into exactly `raw_len` bytes, with `dictionary`
/// or none, in this thread's reused context: into one allocation, the one the decoded
/// block is kept in.
fn decompress(
    stored: &[u8],
    raw_len: usize,
    dictionary: Option<&Dictionary>,
) -> Result<Arc<[u8]>, DecodeError> {
    // The frame declares its content size: a block whose frame says otherwise is refused
    // before anything is allocated for it.
    match zstd::zstd_safe::get_frame_content_size(stored) {
        Ok(Some(n)) if u64::try_from(raw_len).ok() == Some(n) => {}
        _ => {
            return Err(DecodeError::Invalid(
                "compressed block declares another length",
            ));
        }
    }
    let mut raw: Arc<[u8]> = std::iter::repeat_n(0u8, raw_len).collect();
    let out = Arc::get_mut(&mut raw).ok_or(DecodeError::Invalid("decode buffer shared"))?;
    let written = DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = DCtx::try_create();
        }
        let dctx = slot
            .as_mut()
            .ok_or(DecodeError::Invalid("no decompression context"))?;
        let done = match dictionary {
            Some(d) => dctx.decompress_using_ddict(out, stored, &d.ddict),
            None => dctx.decompress(out, stored),
        };
        done.map_err(|_| DecodeError::Invalid("compressed block does not decode"))
    })?;
    if written != raw_len {
        return Err(DecodeError::Invalid("block decodes to another length"));
    }
    Ok(raw)
}

/// Checks a block's stored bytes against its header and decodes them into the frames
/// they hold (`raw_len` bytes, in one shared allocation); a block of codec
/// [`Codec::ZstdDict`] needs the segment's `dictionary`.
///
/// # Errors
/// [`DecodeError::ChecksumMismatch`] for stored bytes that do not match their CRC (a
/// bit flip in a compressed block is reported here, before anything is decoded);
/// [`DecodeError::Invalid`] when decompression fails or yields another length, or a
/// block of the dictionary codec comes without a dictionary.
pub fn decode_block(
    codec: Codec,
    stored: &[u8],
    raw_len: u32,
    data_crc: u32,
    dictionary: Option<&Dictionary>,
) -> Result<Arc<[u8]>, DecodeError> {
    let computed = crc32fast::hash(stored);
    if computed != data_crc {
        return Err(DecodeError::ChecksumMismatch {
            stored: data_crc,
            computed,
        });
    }
    let raw_len_usize = usize::try_from(raw_len).map_err(|_| DecodeError::Invalid("length"))?;
    let raw = match codec {
        Codec::Stored => Arc::from(stored),
        Codec::Zstd => decompress(stored, raw_len_usize, None)?,
        Codec::ZstdDict => {
            let d = dictionary.ok_or(DecodeError::Invalid("block needs a dictionary"))?;
            decompress(stored, raw_len_usize, Some(d))?
        }
    };
    if raw.len() != raw_len_usize {
        return Err(DecodeError::Invalid("block decodes to another length"));
    }
    Ok(raw)
}

/// Checks and decodes block `b` from `bytes`, its [`BlockRef::file_len`] bytes at its
/// file offset: the header (formats 3-5), which must agree with the map, then the stored
/// bytes, checked against their CRC before anything is decoded; a block of codec
/// [`Codec::ZstdDict`] needs the segment's `dictionary`.
///
/// # Errors
/// As [`decode_block`]; [`DecodeError::Truncated`] when `bytes` are short, and
/// [`DecodeError::Invalid`] when a block header differs from the map.
pub fn decode_block_at(
    b: &BlockRef,
    bytes: &[u8],
    dictionary: Option<&Dictionary>,
) -> Result<Arc<[u8]>, DecodeError> {
    let want = usize::try_from(b.file_len()).map_err(|_| DecodeError::Invalid("length"))?;
    let bytes = bytes.get(..want).ok_or(DecodeError::Truncated {
        needed: b.file_len(),
        available: bytes.len() as u64,
    })?;
    match b.stored_crc {
        Some(crc) => decode_block(b.codec, bytes, b.raw_len, crc, dictionary),
        None => {
            let (codec, stored_len, raw_len, crc) = decode_block_header(bytes)?;
            if codec != b.codec || stored_len != b.stored_len || raw_len != b.raw_len {
                return Err(DecodeError::Invalid(
                    "block header differs from the block map",
                ));
            }
            let stored = bytes.get(BLOCK_HEADER_LEN..).unwrap_or_default();
            decode_block(codec, stored, raw_len, crc, dictionary)
        }
    }
}

/// Encodes a block map record of formats 3-5.
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
    body.extend_from_slice(&footer.dictionary_len.to_le_bytes());
    body.extend_from_slice(&footer.dictionary_crc.to_le_bytes());
    let crc = crc32fast::hash(&body);
    body.extend_from_slice(&crc.to_le_bytes());
    let mut out = [0u8; FOOTER_LEN];
    out.copy_from_slice(&body);
    out
}

/// Appends the packed block map record of `block` (format 6), which starts `gap` bytes of
/// positions after the previous block's frames end (the first block: after the segment
/// header): the gap, the raw and stored lengths (LEB128), the codec, the CRC-32 of the
/// stored bytes (4 bytes).
fn encode_packed_record(out: &mut Vec<u8>, block: &BlockRef, gap: u64) {
    super::le::put_varint(out, gap);
    super::le::put_varint(out, u64::from(block.raw_len));
    super::le::put_varint(out, u64::from(block.stored_len));
    out.push(block.codec.to_byte());
    out.extend_from_slice(&block.stored_crc.unwrap_or(0).to_le_bytes());
}

/// Decodes and checks the footer (the last [`FOOTER_LEN`] bytes of a file `file_len`
/// bytes long whose header says it starts at `base` and is of format `version`).
///
/// # Errors
/// [`DecodeError`] when the footer does not check or places its tables outside the file.
pub fn decode_footer(
    bytes: &[u8],
    base: u64,
    file_len: u64,
    version: u32,
) -> Result<Footer, DecodeError> {
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
        dictionary_len: r.u32()?,
        dictionary_crc: r.u32()?,
        packed: version >= PACKED_MAP_VERSION,
    };
    if footer.dictionary_len > MAX_DICTIONARY_BYTES
        || (footer.dictionary_len == 0 && footer.dictionary_crc != 0)
    {
        return Err(DecodeError::Invalid("footer dictionary fields"));
    }
    let tables_end = (FOOTER_LEN as u64)
        .checked_add(footer.removed_offset)
        .and_then(|e| {
            footer
                .removed
                .checked_mul(REMOVED_RECORD_LEN as u64)
                .and_then(|n| n.checked_add(e))
        });
    // A packed map's length is what its records take (checked as they are decoded), at
    // least the smallest record per block.
    let map_fits = if footer.packed {
        footer
            .blocks
            .checked_mul(PACKED_RECORD_MIN)
            .and_then(|n| n.checked_add(footer.map_offset))
            .is_some_and(|min_end| min_end <= footer.removed_offset)
    } else {
        footer
            .blocks
            .checked_mul(BLOCK_MAP_RECORD_LEN as u64)
            .and_then(|n| n.checked_add(footer.map_offset))
            == Some(footer.removed_offset)
    };
    if footer.map_offset < footer.blocks_offset() || !map_fits || tables_end != Some(file_len) {
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
    let map_len = usize::try_from(footer.removed_offset.saturating_sub(footer.map_offset))
        .map_err(|_| DecodeError::Invalid("block map length"))?;
    let (map, runs) = tables
        .split_at_checked(map_len)
        .ok_or(DecodeError::Truncated {
            needed: map_len as u64,
            available: tables.len() as u64,
        })?;
    let mut r = Reader::new(map);
    let n = usize::try_from(footer.blocks).map_err(|_| DecodeError::Invalid("block count"))?;
    let record_min = if footer.packed {
        PACKED_RECORD_MIN as usize
    } else {
        BLOCK_MAP_RECORD_LEN
    };
    let mut blocks = Vec::with_capacity(n.min(map.len().checked_div(record_min).unwrap_or(0)));
    let mut next_offset = footer.blocks_offset();
    let mut min_position = base.saturating_add(SEGMENT_HEADER_LEN as u64);
    let length = |v: u64| u32::try_from(v).map_err(|_| DecodeError::Invalid("block length"));
    for _ in 0..n {
        let block = if footer.packed {
            let gap = r.varint()?;
            let raw_len = length(r.varint()?)?;
            let stored_len = length(r.varint()?)?;
            BlockRef {
                first_position: min_position
                    .checked_add(gap)
                    .ok_or(DecodeError::Invalid("block map out of order"))?,
                file_offset: next_offset,
                stored_len,
                raw_len,
                codec: Codec::from_byte(r.u8()?)?,
                stored_crc: Some(r.u32()?),
            }
        } else {
            let block = BlockRef {
                first_position: r.u64()?,
                file_offset: r.u64()?,
                stored_len: r.u32()?,
                raw_len: r.u32()?,
                codec: Codec::from_byte(r.u8()?)?,
                stored_crc: None,
            };
            if r.array::<7>()? != [0u8; 7] {
                return Err(DecodeError::Invalid("block map reserved bytes"));
            }
            block
        };
        if block.codec == Codec::ZstdDict && footer.dictionary_len == 0 {
            return Err(DecodeError::Invalid(
                "block needs a dictionary the segment lacks",
            ));
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
        next_offset = block.file_offset.saturating_add(block.file_len());
        min_position = block.first_position.saturating_add(raw);
        blocks.push(block);
    }
    if next_offset != footer.map_offset {
        return Err(DecodeError::Invalid(
            "blocks do not end where the map starts",
        ));
    }
    if r.remaining() != 0 {
        return Err(DecodeError::Invalid("bytes after the block map"));
    }
    let mut r = Reader::new(runs);
    let n = usize::try_from(footer.removed).map_err(|_| DecodeError::Invalid("run count"))?;
    let mut removed = Vec::with_capacity(n.min(runs.len() / REMOVED_RECORD_LEN));
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

/// Picks the kept frames a segment's dictionary is made of: the first kept frame at or
/// after each of up to 256 evenly spaced positions of the segment (at most
/// 2 KiB of each), thinned evenly to [`DICTIONARY_TARGET_BYTES`] at the end. Only frames
/// offered are sampled: a scavenge offers the frames it keeps, never a removed one (an
/// erased stream's bytes must not survive in a dictionary).
#[derive(Debug)]
pub struct DictionarySampler {
    stride: u64,
    next: u64,
    samples: Vec<Vec<u8>>,
}

impl DictionarySampler {
    /// A sampler for the frames at positions `first..end`.
    pub fn new(first: u64, end: u64) -> Self {
        DictionarySampler {
            stride: (end.saturating_sub(first) / SAMPLE_SLOTS).max(1),
            next: first,
            samples: Vec::new(),
        }
    }

    /// Offers a kept frame (its bytes, header included) at `position`, in position order.
    pub fn offer(&mut self, position: u64, frame: &[u8]) {
        if position < self.next || frame.len() < FRAME_HEADER_LEN {
            return;
        }
        let take = frame.len().min(SAMPLE_MAX_BYTES);
        self.samples
            .push(frame.get(..take).unwrap_or_default().to_vec());
        // The next slot after this frame's position.
        let slots = position
            .saturating_sub(self.next)
            .checked_div(self.stride)
            .unwrap_or(0)
            .saturating_add(1);
        self.next = self.next.saturating_add(slots.saturating_mul(self.stride));
    }

    /// The dictionary: zstd's trainer ([`train`]) run on the samples (at most
    /// [`DICTIONARY_TARGET_BYTES`]); when it cannot make one (too few samples), the samples
    /// themselves, chosen evenly across those taken, one after another up to that size
    /// (zstd takes any bytes as a dictionary). Empty when nothing was offered.
    ///
    /// `level` is the zstd level the dictionary will compress at (its entropy tables are
    /// made for it).
    pub fn finish(self, level: i32) -> Vec<u8> {
        if let Some(trained) = train(&self.samples, level)
            && usable_dictionary(&trained)
        {
            return trained;
        }
        self.raw()
    }

    /// The samples chosen evenly, one after another, up to [`DICTIONARY_TARGET_BYTES`]: a
    /// raw-content dictionary (it starts with a frame's magic, never with zstd's
    /// dictionary magic).
    fn raw(self) -> Vec<u8> {
        let total: usize = self.samples.iter().map(Vec::len).sum();
        let n = self.samples.len();
        // Keep every `step`-th sample so that what is kept spreads over the segment.
        let step = total.div_ceil(DICTIONARY_TARGET_BYTES).clamp(1, n.max(1));
        let mut out = Vec::with_capacity(total.min(DICTIONARY_TARGET_BYTES));
        for sample in self.samples.iter().step_by(step) {
            // Samples are far smaller than the target: the first one always fits.
            if out.len().saturating_add(sample.len()) > DICTIONARY_TARGET_BYTES {
                break;
            }
            out.extend_from_slice(sample);
        }
        out
    }
}

/// zstd's "fastCover" trainer's segment size (`k`) and d-mer size (`d`) for a dictionary:
/// what zstd's own search over four segment sizes picked on order events (k 1,511 of
/// 50..2,000, d 8), rounded. One run with them takes about a tenth of the search's time
/// and keeps as few bytes (docs/design.md, "Compressed segments with a dictionary").
const TRAINER_SEGMENT: u32 = 1024;
const TRAINER_DMER: u32 = 8;
/// log2 of the trainer's frequency table's entries: 2^16 (a 384 KiB table) is plenty
/// for a sample of at most 256 × 2 KiB; zstd's default 2^20 (6 MiB) mostly costs the time
/// to clear it.
const TRAINER_FREQUENCY_LOG: u32 = 16;

/// A dictionary of at most [`DICTIONARY_TARGET_BYTES`] trained by zstd on `samples`, with
/// its entropy tables for `level`; `None` when zstd cannot make one (too few or too small
/// samples).
#[allow(unsafe_code)]
fn train(samples: &[Vec<u8>], level: i32) -> Option<Vec<u8>> {
    let flat: Vec<u8> = samples.concat();
    let sizes: Vec<usize> = samples.iter().map(Vec::len).collect();
    let count = u32::try_from(sizes.len()).ok()?;
    let mut dictionary = vec![0u8; DICTIONARY_TARGET_BYTES];
    let parameters = zstd_sys::ZDICT_fastCover_params_t {
        k: TRAINER_SEGMENT,
        d: TRAINER_DMER,
        f: TRAINER_FREQUENCY_LOG,
        steps: 0,
        nbThreads: 0,
        splitPoint: 0.0,
        accel: 1,
        shrinkDict: 0,
        shrinkDictMaxRegression: 0,
        zParams: zstd_sys::ZDICT_params_t {
            compressionLevel: level,
            notificationLevel: 0,
            dictID: 0,
        },
    };
    // SAFETY: `dictionary` is writable for its whole length, which is the capacity
    // passed; `flat` holds exactly the sum of `sizes` bytes, and `sizes` has `count`
    // entries; zstd reads and writes nothing else and keeps no pointer after returning.
    let written = unsafe {
        zstd_sys::ZDICT_trainFromBuffer_fastCover(
            dictionary.as_mut_ptr().cast(),
            dictionary.len(),
            flat.as_ptr().cast(),
            sizes.as_ptr(),
            count,
            parameters,
        )
    };
    // SAFETY: a plain function of the returned code.
    if unsafe { zstd_sys::ZDICT_isError(written) } != 0 || written > dictionary.len() {
        return None;
    }
    dictionary.truncate(written);
    Some(dictionary)
}

/// Magic of a dictionary made by zstd's trainer (its entropy tables follow).
const ZSTD_DICTIONARY_MAGIC: u32 = 0xEC30_A437;

/// Whether `bytes` are a dictionary a scavenge writes: one made by zstd's trainer, or
/// raw content that starts with a frame (which zstd can never take for a trained one).
fn usable_dictionary(bytes: &[u8]) -> bool {
    let magic = bytes.get(..4).and_then(|m| <[u8; 4]>::try_from(m).ok());
    bytes.len() <= MAX_DICTIONARY_BYTES as usize
        && magic.is_some_and(|m| {
            let m = u32::from_le_bytes(m);
            m == FRAME_MAGIC || m == ZSTD_DICTIONARY_MAGIC
        })
}

/// A compression context with a prepared dictionary referenced in it, reused for every
/// block of a segment. (The context is dropped before the dictionary it points to.)
struct Encoder {
    cctx: CCtx<'static>,
    _cdict: CDict<'static>,
}

impl Encoder {
    /// A context that compresses at `level` with `dictionary` and writes zstd frames
    /// without the dictionary's id: a block is only ever decoded with its own segment's
    /// dictionary, and the id would cost 4 bytes of every small block.
    fn new(dictionary: &[u8], level: i32) -> Option<Encoder> {
        let mut cctx = CCtx::try_create()?;
        let cdict = CDict::try_create(dictionary, level)?;
        cctx.set_parameter(CParameter::DictIdFlag(false)).ok()?;
        cctx.ref_cdict(&cdict).ok()?;
        Some(Encoder {
            cctx,
            _cdict: cdict,
        })
    }
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder").finish_non_exhaustive()
    }
}

/// Whether a block holding `pending` raw bytes is full before a frame of `frame` bytes (a
/// block always takes its first frame, however large).
fn block_is_full(pending: usize, frame: usize, target: usize) -> bool {
    pending > 0 && pending.saturating_add(frame) > target
}

/// A block's stored form: compressed by `encoder` into `scratch` when that makes it
/// smaller, else `raw` as it is.
fn encode_raw<'a>(
    encoder: Option<&mut Encoder>,
    raw: &'a [u8],
    scratch: &'a mut Vec<u8>,
) -> (Codec, &'a [u8]) {
    let compressed = encoder.is_some_and(|e| {
        scratch.clear();
        scratch.reserve(zstd::zstd_safe::compress_bound(raw.len()));
        e.cctx.compress2(scratch, raw).is_ok() && scratch.len() < raw.len()
    });
    if compressed {
        (Codec::ZstdDict, scratch)
    } else {
        (Codec::Stored, raw)
    }
}

/// Blocks one thread of [`CompactWriter::push_frames_parallel`] encoded, in order: (first
/// position, raw length, codec, stored length, CRC of the stored bytes), and the stored
/// bytes one after another.
#[derive(Debug, Default)]
struct EncodedBlocks {
    blocks: Vec<(u64, usize, Codec, usize, u32)>,
    bytes: Vec<u8>,
}

/// Writes a rewritten segment from its surviving frames, in position order, into one
/// buffer: header, dictionary, blocks (compressed with the dictionary when that makes
/// them smaller, else stored), map, removed runs, footer.
#[derive(Debug)]
pub struct CompactWriter {
    out: Vec<u8>,
    base: u64,
    /// Blocks without headers and a packed map (format 6 and later).
    packed: bool,
    blocks: Vec<BlockRef>,
    pending: Vec<u8>,
    pending_first: u64,
    encoder: Option<Encoder>,
    /// The level the encoder was made with (its dictionary is in `out`, after the
    /// header), for the encoders of [`CompactWriter::push_frames_parallel`].
    level: i32,
    scratch: Vec<u8>,
    block_target: usize,
    dictionary_len: u32,
    dictionary_crc: u32,
    /// Raw bytes of frames taken in.
    pub raw_bytes: u64,
}

impl CompactWriter {
    /// Starts a rewritten segment at `base`, with header `version`, whose blocks are
    /// stored as they are.
    pub fn new(base: u64, version: u32) -> Self {
        let header = super::encode_segment_header(&super::SegmentHeader {
            version,
            kind: SEGMENT_KIND_COMPACTED,
            base_position: base,
        });
        CompactWriter {
            out: header.to_vec(),
            base,
            packed: version >= PACKED_MAP_VERSION,
            blocks: Vec::new(),
            pending: Vec::new(),
            pending_first: 0,
            encoder: None,
            level: 0,
            scratch: Vec::new(),
            block_target: BLOCK_TARGET_BYTES,
            dictionary_len: 0,
            dictionary_crc: 0,
            raw_bytes: 0,
        }
    }

    /// Starts a rewritten segment (header `version` ≥ 5) whose blocks of about
    /// `block_target` raw bytes are compressed with zstd at `level` and `dictionary`
    /// (from [`DictionarySampler::finish`]), stored once after the header. Without a
    /// dictionary (nothing sampled), or when zstd cannot prepare one, blocks are stored
    /// as they are.
    pub fn with_dictionary(
        base: u64,
        version: u32,
        level: i32,
        dictionary: &[u8],
        block_target: usize,
    ) -> Self {
        let mut w = CompactWriter::new(base, version);
        let len = u32::try_from(dictionary.len()).ok();
        let (Some(len), true) = (len, usable_dictionary(dictionary)) else {
            return w;
        };
        let encoder = Encoder::new(dictionary, level);
        if encoder.is_some() {
            w.out.extend_from_slice(dictionary);
            w.encoder = encoder;
            w.level = level;
            w.block_target = block_target.max(1);
            w.dictionary_len = len;
            w.dictionary_crc = crc32fast::hash(dictionary);
        }
        w
    }

    /// Takes in one surviving frame (its bytes exactly as read, header included), at
    /// `position`, after every frame taken so far. (A scavenge takes a segment's frames
    /// in at once, [`CompactWriter::push_frames_parallel`]; tests, fuzz targets and
    /// benchmarks one by one.)
    #[cfg_attr(not(any(test, feature = "internals")), allow(dead_code))]
    pub fn push_frame(&mut self, position: u64, frame: &[u8]) {
        if self.pending.is_empty() {
            self.pending_first = position;
        } else if block_is_full(self.pending.len(), frame.len(), self.block_target) {
            self.finish_block();
            self.pending_first = position;
        }
        self.pending.extend_from_slice(frame);
        self.raw_bytes = self.raw_bytes.saturating_add(frame.len() as u64);
    }

    /// Takes in surviving frames (position and bytes, in position order, after every
    /// frame taken so far) as [`CompactWriter::push_frame`] would, one after another, but
    /// compresses their blocks on up to `threads` threads at once (each with its own zstd
    /// context): the same blocks, the same bytes, in less time. A block under way from
    /// earlier `push_frame` calls is finished first (the frames here start a new one); a
    /// thread whose zstd context cannot be made stores its blocks as they are.
    pub fn push_frames_parallel<F: AsRef<[u8]> + Sync>(
        &mut self,
        frames: &[(u64, F)],
        threads: usize,
    ) {
        self.finish_block();
        // Blocks as `push_frame` cuts them: ranges of `frames`.
        let mut blocks: Vec<std::ops::Range<usize>> = Vec::new();
        let (mut start, mut raw) = (0usize, 0usize);
        for (i, (_, frame)) in frames.iter().enumerate() {
            let len = frame.as_ref().len();
            if i > start && block_is_full(raw, len, self.block_target) {
                blocks.push(start..i);
                (start, raw) = (i, 0);
            }
            raw = raw.saturating_add(len);
        }
        if start < frames.len() {
            blocks.push(start..frames.len());
        }
        // Contiguous runs of blocks, one per thread.
        let threads = threads.clamp(1, blocks.len().max(1));
        let per_thread = blocks.len().div_ceil(threads).max(1);
        let compresses = self.encoder.is_some();
        let dictionary_end = SEGMENT_HEADER_LEN.saturating_add(self.dictionary_len as usize);
        let dictionary = self
            .out
            .get(SEGMENT_HEADER_LEN..dictionary_end)
            .unwrap_or_default();
        let level = self.level;
        let encoded: Vec<EncodedBlocks> = std::thread::scope(|scope| {
            let handles: Vec<_> = blocks
                .chunks(per_thread)
                .map(|run| {
                    scope.spawn(move || {
                        let mut encoder = compresses
                            .then(|| Encoder::new(dictionary, level))
                            .flatten();
                        let (mut raw, mut scratch) = (Vec::new(), Vec::new());
                        let mut out = EncodedBlocks::default();
                        for range in run {
                            let members = frames.get(range.clone()).unwrap_or_default();
                            // A block of one frame (most, for events of more than a
                            // quarter KiB) is compressed where the frame lies.
                            let block: &[u8] = match members {
                                [(_, only)] => only.as_ref(),
                                _ => {
                                    raw.clear();
                                    for (_, frame) in members {
                                        raw.extend_from_slice(frame.as_ref());
                                    }
                                    &raw
                                }
                            };
                            let first = frames.get(range.start).map_or(0, |(p, _)| *p);
                            let (codec, stored) = encode_raw(encoder.as_mut(), block, &mut scratch);
                            out.blocks.push((
                                first,
                                block.len(),
                                codec,
                                stored.len(),
                                crc32fast::hash(stored),
                            ));
                            out.bytes.extend_from_slice(stored);
                        }
                        out
                    })
                })
                .collect();
            handles
                .into_iter()
                // A thread that panicked must not leave its blocks out of the file.
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        for run in &encoded {
            let mut at = 0usize;
            for &(first, raw_len, codec, stored_len, crc) in &run.blocks {
                let end = at.saturating_add(stored_len);
                let stored = run.bytes.get(at..end).unwrap_or_default();
                self.push_block(first, raw_len, codec, stored, crc);
                self.raw_bytes = self.raw_bytes.saturating_add(raw_len as u64);
                at = end;
            }
        }
    }

    fn finish_block(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let raw = std::mem::take(&mut self.pending);
        let mut scratch = std::mem::take(&mut self.scratch);
        let (codec, stored) = encode_raw(self.encoder.as_mut(), &raw, &mut scratch);
        let crc = crc32fast::hash(stored);
        self.push_block(self.pending_first, raw.len(), codec, stored, crc);
        // Both buffers are reused for the next block.
        self.scratch = scratch;
        self.pending = raw;
        self.pending.clear();
    }

    /// Appends one block: its first frame's position, its raw length, and its stored
    /// bytes (`codec`) with their CRC.
    fn push_block(
        &mut self,
        first_position: u64,
        raw_len: usize,
        codec: Codec,
        stored: &[u8],
        crc: u32,
    ) {
        let raw_len = u32::try_from(raw_len).unwrap_or(u32::MAX);
        let block = BlockRef {
            first_position,
            file_offset: self.out.len() as u64,
            stored_len: u32::try_from(stored.len()).unwrap_or(u32::MAX),
            raw_len,
            codec,
            stored_crc: self.packed.then_some(crc),
        };
        if self.packed {
            self.out.extend_from_slice(stored);
        } else {
            encode_block(&mut self.out, codec, stored, raw_len);
        }
        self.blocks.push(block);
    }

    /// Ends the segment: the map, the removed runs, the footer. Returns the file's bytes.
    pub fn finish(mut self, logical_end: u64, removed: &[RemovedRun]) -> Vec<u8> {
        self.finish_block();
        let map_offset = self.out.len() as u64;
        let mut tables = Vec::new();
        let mut frames_end = self.base.saturating_add(SEGMENT_HEADER_LEN as u64);
        for b in &self.blocks {
            if self.packed {
                let gap = b.first_position.saturating_sub(frames_end);
                encode_packed_record(&mut tables, b, gap);
                frames_end = b.first_position.saturating_add(u64::from(b.raw_len));
            } else {
                encode_block_ref(&mut tables, b);
            }
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
            dictionary_len: self.dictionary_len,
            dictionary_crc: self.dictionary_crc,
            packed: self.packed,
        };
        self.out.extend_from_slice(&tables);
        self.out.extend_from_slice(&encode_footer(&footer));
        self.out
    }
}

/// Runs the decoders of a rewritten segment on a whole file of arbitrary bytes, as far as
/// each gets: the dictionary's CRC (when the footer declares one that lies in the file) and
/// the footer's CRC are recomputed first, so that the checks behind them are reached; then
/// the footer, the block map and removed runs, the dictionary, every block the map names,
/// and the frames in each decoded block. Never panics, whatever the bytes: what the
/// `compact_segment` fuzz target and this module's property tests run.
#[cfg(any(test, feature = "internals"))]
pub fn decode_forged(mut bytes: Vec<u8>) {
    let len = bytes.len();
    let Some(f) = len.checked_sub(FOOTER_LEN) else {
        return;
    };
    let dict_len = super::le::u32_at(&bytes, f.saturating_add(52)).map_or(0, |n| n as usize);
    let dict_end = SEGMENT_HEADER_LEN.saturating_add(dict_len);
    if dict_len > 0 && dict_end <= f {
        let crc = crc32fast::hash(bytes.get(SEGMENT_HEADER_LEN..dict_end).unwrap_or_default());
        if let Some(field) = bytes.get_mut(f.saturating_add(56)..f.saturating_add(60)) {
            field.copy_from_slice(&crc.to_le_bytes());
        }
    }
    let crc = crc32fast::hash(bytes.get(f..len.saturating_sub(4)).unwrap_or_default());
    if let Some(field) = bytes.get_mut(len.saturating_sub(4)..) {
        field.copy_from_slice(&crc.to_le_bytes());
    }
    let version = super::le::u32_at(&bytes, 8).unwrap_or(0);
    let Ok(footer) = decode_footer(bytes.get(f..).unwrap_or_default(), 0, len as u64, version)
    else {
        return;
    };
    let Some(tables) = bytes.get(footer.map_offset as usize..f) else {
        return;
    };
    let Ok((blocks, _)) = decode_tables(tables, &footer, 0) else {
        return;
    };
    let dictionary = bytes
        .get(SEGMENT_HEADER_LEN..SEGMENT_HEADER_LEN.saturating_add(footer.dictionary_len as usize))
        .filter(|_| footer.dictionary_len > 0)
        .and_then(|d| Dictionary::decode(d, &footer).ok());
    for b in blocks {
        let start = usize::try_from(b.file_offset).unwrap_or(usize::MAX);
        let block = bytes.get(start..).unwrap_or_default();
        if let Ok(raw) = decode_block_at(&b, block, dictionary.as_ref()) {
            let _ = block_positions(&raw, b.first_position);
            let _ = find_in_block(&raw, b.first_position, b.first_position.wrapping_add(32));
        }
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

    fn version(bytes: &[u8]) -> u32 {
        u32::from_le_bytes(bytes[8..12].try_into().unwrap())
    }

    fn parse(bytes: &[u8], base: u64) -> (Footer, Vec<BlockRef>, Vec<RemovedRun>) {
        let footer = decode_footer(
            &bytes[bytes.len() - FOOTER_LEN..],
            base,
            bytes.len() as u64,
            version(bytes),
        )
        .unwrap();
        let tables = &bytes[footer.map_offset as usize..bytes.len() - FOOTER_LEN];
        let (blocks, removed) = decode_tables(tables, &footer, base).unwrap();
        (footer, blocks, removed)
    }

    fn dictionary(bytes: &[u8], footer: &Footer) -> Option<Dictionary> {
        (footer.dictionary_len > 0).then(|| {
            let start = SEGMENT_HEADER_LEN;
            Dictionary::decode(
                &bytes[start..start + footer.dictionary_len as usize],
                footer,
            )
            .unwrap()
        })
    }

    /// Every frame of a rewritten segment's bytes, decoded block by block: (position,
    /// offset in its block, block index).
    fn decode_all(bytes: &[u8], base: u64) -> Vec<u64> {
        let (footer, blocks, _) = parse(bytes, base);
        let dict = dictionary(bytes, &footer);
        let mut found = Vec::new();
        for b in &blocks {
            assert_eq!(b.stored_crc.is_some(), footer.packed);
            let raw = decode_block_at(b, &bytes[b.file_offset as usize..], dict.as_ref()).unwrap();
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
        found
    }

    /// The versions whose rewritten segments this build writes in tests: format 5 (block
    /// headers, fixed-size map records) and this build's (packed map).
    const VERSIONS: [u32; 2] = [5, crate::format::FORMAT_VERSION];

    /// 2,000 frames, every third removed, in a segment of `version`; returns the writer's
    /// file, the kept positions and the sampled dictionary.
    fn write(base: u64, compress: bool, version: u32) -> (Vec<u8>, Vec<u64>, Vec<u8>) {
        let mut frames = Vec::new();
        let mut p = base + 32;
        for i in 0..2000u64 {
            let f = frame(
                p,
                format!("{{\"n\":{i},\"pad\":\"aaaaaaaaaaaaaaaa\"}}").as_bytes(),
            );
            let len = f.len() as u64;
            if i % 3 != 0 {
                frames.push((p, f));
            }
            p += len;
        }
        let mut sampler = DictionarySampler::new(base + 32, p);
        for (q, f) in &frames {
            sampler.offer(*q, f);
        }
        let dict = sampler.finish(3);
        let mut w = if compress {
            CompactWriter::with_dictionary(base, version, 3, &dict, DICT_BLOCK_TARGET_BYTES)
        } else {
            CompactWriter::new(base, version)
        };
        for (q, f) in &frames {
            w.push_frame(*q, f);
        }
        let run = RemovedRun {
            hash: 1,
            check: 2,
            first_version: 0,
            count: 667,
            position: base + 32,
        };
        let bytes = w.finish(p, &[run]);
        let (footer, _, removed) = parse(&bytes, base);
        assert_eq!(footer.logical_end, p);
        assert_eq!(removed, vec![run]);
        (bytes, frames.iter().map(|(q, _)| *q).collect(), dict)
    }

    #[test]
    fn frames_keep_their_positions_through_blocks_stored_or_compressed_with_a_dictionary() {
        let base = 1 << 20;
        for (compress, version) in [false, true]
            .into_iter()
            .flat_map(|c| VERSIONS.map(|v| (c, v)))
        {
            let (bytes, positions, dict) = write(base, compress, version);
            let (footer, blocks, _) = parse(&bytes, base);
            assert!(blocks.len() > 1);
            assert_eq!(decode_all(&bytes, base), positions);
            if compress {
                assert!(blocks.iter().all(|b| b.codec == Codec::ZstdDict));
                assert!(
                    blocks
                        .iter()
                        .all(|b| b.raw_len as usize <= DICT_BLOCK_TARGET_BYTES)
                );
                assert_eq!(footer.dictionary_len as usize, dict.len());
                assert_eq!(&bytes[32..32 + dict.len()], &dict[..]);
                assert_eq!(blocks[0].file_offset, 32 + dict.len() as u64);
            } else {
                assert!(blocks.iter().all(|b| b.codec == Codec::Stored));
                assert_eq!((footer.dictionary_len, footer.dictionary_crc), (0, 0));
            }
        }
    }

    /// 3,000 frames; only the even ones are offered (kept), and only the odd ones hold
    /// the bytes `ODDX`.
    fn sampled() -> (Vec<(u64, Vec<u8>)>, DictionarySampler) {
        let mut frames = Vec::new();
        let mut p = 32;
        for i in 0..3000u64 {
            let tag = if i % 2 == 0 { "EVEN" } else { "ODDX" };
            let f = frame(
                p,
                format!("{{\"tag\":\"{tag}\",\"n\":{i:0>200}}}").as_bytes(),
            );
            let len = f.len() as u64;
            frames.push((p, f));
            p += len;
        }
        let mut sampler = DictionarySampler::new(32, p);
        for (q, f) in frames.iter().step_by(2) {
            sampler.offer(*q, f);
        }
        (frames, sampler)
    }

    #[test]
    fn blocks_compressed_on_several_threads_are_the_blocks_of_one() {
        let (frames, sampler) = sampled();
        let dict = sampler.finish(1);
        let end = frames.last().map_or(32, |(p, f)| p + f.len() as u64);
        let cases = VERSIONS
            .into_iter()
            .flat_map(|v| [(v, &dict[..], DICT_BLOCK_TARGET_BYTES), (v, &[][..], 0)]);
        for (version, dictionary, target) in cases {
            let writer = || match dictionary.is_empty() {
                true => CompactWriter::new(0, version),
                false => CompactWriter::with_dictionary(0, version, 1, dictionary, target),
            };
            let mut one = writer();
            for (p, f) in &frames {
                one.push_frame(*p, f);
            }
            let raw = one.raw_bytes;
            let one = one.finish(end, &[]);
            for threads in [1, 2, 3, 7] {
                let mut many = writer();
                many.push_frames_parallel(&frames, threads);
                assert_eq!(many.raw_bytes, raw);
                assert!(
                    many.finish(end, &[]) == one,
                    "version {version}, {threads} threads, dictionary {}",
                    !dictionary.is_empty()
                );
            }
        }
    }

    #[test]
    fn a_raw_dictionary_is_offered_frames_sampled_across_the_segment() {
        let (frames, sampler) = sampled();
        let dict = sampler.raw();
        assert!(dict.len() <= DICTIONARY_TARGET_BYTES && dict.len() > DICTIONARY_TARGET_BYTES / 2);
        assert!(usable_dictionary(&dict));
        let mut sampled = Vec::new();
        let mut at = 0;
        while at < dict.len() {
            let h = decode_frame_header(&dict[at..]).unwrap();
            let (i, f) = frames
                .iter()
                .enumerate()
                .find(|(_, (q, _))| *q == h.position)
                .map(|(i, (_, f))| (i, f))
                .unwrap();
            assert_eq!(&dict[at..at + f.len()], &f[..]);
            assert_eq!(i % 2, 0, "frame {i} was not offered");
            sampled.push(i);
            at += f.len();
        }
        // Spread over the whole segment, not its start.
        assert!(
            sampled[0] < 100 && *sampled.last().unwrap() > 2700,
            "{sampled:?}"
        );
    }

    #[test]
    fn a_trained_dictionary_holds_nothing_of_frames_not_offered() {
        let (frames, sampler) = sampled();
        let dict = sampler.finish(3);
        assert_eq!(dict[..4], ZSTD_DICTIONARY_MAGIC.to_le_bytes());
        assert!(dict.len() <= DICTIONARY_TARGET_BYTES);
        let has = |needle: &[u8]| dict.windows(needle.len()).any(|w| w == needle);
        assert!(has(b"EVEN"), "the trainer kept content of the samples");
        assert!(
            !has(b"ODDX"),
            "bytes of a frame not offered are in the dictionary"
        );
        // Too few samples to train on: the raw samples.
        let mut few = DictionarySampler::new(32, frames[3].0);
        for (q, f) in frames.iter().take(3) {
            few.offer(*q, f);
        }
        let dict = few.finish(1);
        assert_eq!(
            dict.len(),
            frames.iter().take(3).map(|(_, f)| f.len()).sum::<usize>()
        );
        assert_eq!(dict[..4], FRAME_MAGIC.to_le_bytes());
    }

    #[test]
    fn blocks_of_the_zstd_codec_without_a_dictionary_stay_readable() {
        let raw: Vec<u8> = [frame(32, &[b'a'; 500]), frame(32 + 564, &[b'b'; 500])].concat();
        let stored = zstd::bulk::compress(&raw, 3).unwrap();
        let crc = crc32fast::hash(&stored);
        let decoded = decode_block(Codec::Zstd, &stored, raw.len() as u32, crc, None).unwrap();
        assert_eq!(&*decoded, &raw[..]);
        assert!(decode_block(Codec::Zstd, &stored, raw.len() as u32 + 1, crc, None).is_err());
        // A dictionary block without its dictionary does not decode.
        assert!(decode_block(Codec::ZstdDict, &stored, raw.len() as u32, crc, None).is_err());
    }

    #[test]
    fn a_flipped_bit_anywhere_is_reported() {
        for version in VERSIONS {
            flipped_bits_are_reported(version);
        }
    }

    fn flipped_bits_are_reported(version: u32) {
        let base = 0;
        let (bytes, _, _) = write(base, true, version);
        let (footer, blocks, _) = parse(&bytes, base);
        let good = dictionary(&bytes, &footer).unwrap();
        let b = blocks[0];
        let start = b.file_offset as usize;
        for i in start..start + b.file_len() as usize {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            let ok = decode_block_at(&b, &bad[start..], Some(&good));
            assert!(ok.is_err(), "flip at {i} not reported (format {version})");
        }
        // In the block map and removed runs: their CRC.
        let tables = footer.map_offset as usize..bytes.len() - FOOTER_LEN;
        for i in tables.clone() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x04;
            assert!(
                decode_tables(&bad[tables.clone()], &footer, base).is_err(),
                "flip at {i} of the tables not reported (format {version})"
            );
        }
        // In the dictionary: never prepared, so never decoded with.
        for i in 32..32 + footer.dictionary_len as usize {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            let d = &bad[32..32 + footer.dictionary_len as usize];
            assert!(matches!(
                Dictionary::decode(d, &footer),
                Err(DecodeError::ChecksumMismatch { .. })
            ));
        }
        for i in bytes.len() - FOOTER_LEN..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 1;
            let footer = &bad[bad.len() - FOOTER_LEN..];
            assert!(decode_footer(footer, base, bad.len() as u64, version).is_err());
        }
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn frames_of_any_size_round_trip_through_dictionary_blocks(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..700), 1..60),
            target in 1usize..3000,
            kept_mod in 2u64..5,
            version in prop::sample::select(VERSIONS.to_vec()),
        ) {
            let mut frames = Vec::new();
            let mut p = 32u64;
            for (i, data) in payloads.iter().enumerate() {
                let f = frame(p, data);
                let len = f.len() as u64;
                if !(i as u64).is_multiple_of(kept_mod) {
                    frames.push((p, f));
                }
                p += len;
            }
            let mut sampler = DictionarySampler::new(32, p);
            for (q, f) in &frames {
                sampler.offer(*q, f);
            }
            let mut w = CompactWriter::with_dictionary(0, version, 3, &sampler.finish(3), target);
            for (q, f) in &frames {
                w.push_frame(*q, f);
            }
            let bytes = w.finish(p, &[]);
            let positions: Vec<u64> = frames.iter().map(|(q, _)| *q).collect();
            if positions.is_empty() {
                let (_, blocks, _) = parse(&bytes, 0);
                prop_assert!(blocks.is_empty());
            } else {
                prop_assert_eq!(decode_all(&bytes, 0), positions);
            }
        }

        #[test]
        fn decoding_a_damaged_or_forged_rewritten_segment_never_panics(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
            truncate in any::<bool>(),
            packed in any::<bool>(),
        ) {
            let (mut bytes, _, _) = write(0, true, VERSIONS[usize::from(packed)]);
            for (at, b) in edits {
                let i = at.index(bytes.len());
                bytes[i] = b;
            }
            if truncate {
                bytes.truncate(cut.index(bytes.len()));
            }
            decode_forged(bytes);
        }

        #[test]
        fn decoding_arbitrary_bytes_as_a_rewritten_segment_never_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..400),
        ) {
            decode_forged(bytes);
        }
    }
}
