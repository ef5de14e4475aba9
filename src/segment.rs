//! The `segment` layer: one segment file. Header, append, read a frame at an offset,
//! scan/validate, seal. Knows frames, not streams or the index.
//!
//! A segment named `<base>.seg` covers logical positions `base..base + file length`; its
//! 32-byte header occupies `base..base + 32`, so a frame's position is `base + offset`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::error::{Error, Result};
use crate::format::compact::{
    self, BlockRef, Codec, Dictionary, FOOTER_LEN, Footer, RemovedRun, SEGMENT_KIND_COMPACTED,
};
use crate::format::{
    self, DecodeError, FRAME_HEADER_LEN, FRAME_MAGIC, FrameHeader, SEGMENT_HEADER_LEN,
    SegmentHeader,
};
use crate::io::{Mapping, Storage, StorageFile};

/// Read-ahead size of sequential scans of files that are not mapped.
const READ_AHEAD_BYTES: usize = 1 << 20;
/// Bytes read at once by a point read of one frame.
const POINT_READ_BYTES: usize = 4096;
/// The active segment is read through a mapping once this many bytes of it are written,
/// and mapped afresh when this many more are written past the mapping's written part
/// (below that, the unmapped rest is read with `pread`): a reader of the log's end (a
/// subscriber woken per append) never maps and unmaps per frame.
const ACTIVE_MAP_STEP: u64 = 4 << 20;

/// File name of the segment starting at `base`: 20 zero-padded digits and `.seg`.
pub fn segment_file_name(base: u64) -> String {
    format!("{base:020}.seg")
}

/// Parses a segment file name back into its base position.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A rewritten segment's part that does not check: the file offset and what is wrong.
type Checked<T> = std::result::Result<T, (u64, DecodeError)>;

/// One segment file.
#[derive(Debug)]
pub struct Segment {
    path: PathBuf,
    base: u64,
    /// The segment file kind (events or snapshots).
    kind: u32,
    file: Arc<dyn StorageFile>,
    /// Set once the segment is sealed: a read-only view of the immutable file.
    map: RwLock<Option<Mapping>>,
    /// Whether mapping the sealed file failed (it is then read with `pread`).
    map_failed: std::sync::atomic::AtomicBool,
    /// While the segment is active, for logs that never cut written bytes: a view of the
    /// bytes written (immutable) when it was made, and their length. The zeroed space
    /// past them is overwritten by later appends and cut at sealing, so it is never
    /// mapped.
    active_map: RwLock<Option<(Mapping, u64)>>,
    /// Set once the segment is sealed: its (final) length. The mapping is made on first
    /// sequential read, not at sealing, so that opening a log of many segments costs no
    /// map per segment.
    sealed_len: std::sync::OnceLock<u64>,
    /// The format version its header declares: set when the header is checked (or the
    /// segment created).
    version: std::sync::OnceLock<u32>,
    /// Whether it is a rewritten segment (and then its block map): set on first need.
    compact: std::sync::OnceLock<Option<Arc<CompactMap>>>,
}

/// Blocks of a rewritten segment's map between two fences ([`CompactMap::block_for`]).
const FENCE_STRIDE: usize = 32;

/// What a rewritten segment's footer, block map and removed runs say (format 3, see
/// `format::compact`).
#[derive(Debug)]
pub struct CompactMap {
    footer: Footer,
    blocks: Vec<BlockRef>,
    /// Each block's first position, in order, and every [`FENCE_STRIDE`]th of them:
    /// what a lookup searches. The fences (a few KiB) stay in the processor's cache, so a
    /// lookup in a map of tens of thousands of blocks reads one short run of `starts`
    /// instead of a binary search's cache miss a level.
    starts: Vec<u64>,
    fences: Vec<u64>,
    removed: Vec<RemovedRun>,
    /// The dictionary of its compressed blocks (format 5), checked and prepared on first
    /// need, then kept: `Err` when it does not check (its blocks then report that).
    dictionary: std::sync::OnceLock<Checked<Arc<Dictionary>>>,
}

impl CompactMap {
    /// The position the segment ends at (the next segment's base).
    pub fn logical_end(&self) -> u64 {
        self.footer.logical_end
    }

    /// What the scavenge that wrote it removed.
    pub fn removed(&self) -> &[RemovedRun] {
        &self.removed
    }

    /// Index of the block that may hold `position`: the last one starting at or before it
    /// (a block's frames may spread over more positions than its bytes, where frames
    /// between them were removed).
    fn block_for(&self, position: u64) -> Option<usize> {
        let run = self
            .fences
            .partition_point(|&start| start <= position)
            .checked_sub(1)?;
        let from = run.saturating_mul(FENCE_STRIDE);
        let to = from.saturating_add(FENCE_STRIDE).min(self.starts.len());
        let within = self.starts.get(from..to)?;
        from.checked_add(within.partition_point(|&start| start <= position))?
            .checked_sub(1)
    }
}

/// The bytes of one frame: borrowed from a mapping or read into a buffer.
#[derive(Debug, Clone)]
pub struct FrameBytes {
    bytes: FrameStorage,
}

#[derive(Debug, Clone)]
enum FrameStorage {
    Mapped(Mapping, usize, usize),
    Owned(Arc<[u8]>),
    /// A frame inside a decoded block of a rewritten segment.
    Block(Arc<[u8]>, usize, usize),
}

impl std::ops::Deref for FrameBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.bytes {
            FrameStorage::Mapped(m, start, end) => m.get(*start..*end).unwrap_or_default(),
            FrameStorage::Owned(v) => v,
            FrameStorage::Block(b, start, end) => b.get(*start..*end).unwrap_or_default(),
        }
    }
}

impl AsRef<[u8]> for FrameBytes {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl FrameBytes {
    /// Wraps frame bytes that are not in a segment yet (encoded, not yet written).
    pub fn from_vec(bytes: Vec<u8>) -> Self {
        FrameBytes {
            bytes: FrameStorage::Owned(Arc::from(bytes)),
        }
    }

    /// The frame's body (after the header).
    pub fn body(&self) -> &[u8] {
        self.get(FRAME_HEADER_LEN..).unwrap_or_default()
    }
}

/// How a scan of a segment ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanEnd {
    /// The last frame ended exactly at the end of the file.
    Clean {
        /// File offset of the end.
        offset: u64,
    },
    /// From `offset` to the end of the file everything is zero: end of log.
    ZeroTail {
        /// File offset where the zeros start.
        offset: u64,
        /// How many zero bytes follow.
        bytes: u64,
    },
    /// A frame at `offset` is damaged (or torn: the caller decides which).
    Damaged {
        /// File offset of the bad frame.
        offset: u64,
        /// What is wrong.
        reason: DecodeError,
    },
}

impl Segment {
    /// Creates a new segment file at `dir/<base>.seg`: writes the header, syncs the file,
    /// then syncs the directory, so that the segment exists durably before anything in it
    /// is acknowledged.
    ///
    /// # Errors
    /// Any I/O error.
    pub fn create(storage: &dyn Storage, dir: &Path, base: u64, kind: u32) -> Result<Segment> {
        Self::create_aligned(storage, dir, base, kind, 0)
    }

    /// [`Segment::create`], with the header followed by a padding frame up to `align`
    /// bytes (when `align` is more than the header), written and synced with it: the first
    /// frame then starts in a sector of its own, and writing it never touches the synced
    /// header's sector.
    ///
    /// # Errors
    /// Any I/O error.
    pub fn create_aligned(
        storage: &dyn Storage,
        dir: &Path,
        base: u64,
        kind: u32,
        align: u64,
    ) -> Result<Segment> {
        let path = dir.join(segment_file_name(base));
        let ctx = |what: &str| format!("{what} {}", path.display());
        let file = storage
            .create(&path)
            .map_err(|e| Error::io(ctx("create segment"), e))?;
        let mut header = format::encode_segment_header(&SegmentHeader {
            version: format::FORMAT_VERSION,
            kind,
            base_position: base,
        })
        .to_vec();
        if align > SEGMENT_HEADER_LEN as u64 {
            let position = base.saturating_add(SEGMENT_HEADER_LEN as u64);
            let len = usize::try_from(align)
                .unwrap_or(0)
                .saturating_sub(SEGMENT_HEADER_LEN);
            format::encode_padding_frame(&mut header, position, base, len);
        }
        file.write_at(&header, 0)
            .map_err(|e| Error::io(ctx("write header of"), e))?;
        file.sync_data()
            .map_err(|e| Error::io(ctx("sync new segment"), e))?;
        storage
            .sync_dir(dir)
            .map_err(|e| Error::io(ctx("sync directory of"), e))?;
        Ok(Segment {
            path,
            base,
            kind,
            file,
            map: RwLock::new(None),
            map_failed: std::sync::atomic::AtomicBool::new(false),
            active_map: RwLock::new(None),
            sealed_len: std::sync::OnceLock::new(),
            version: std::sync::OnceLock::from(format::FORMAT_VERSION),
            compact: std::sync::OnceLock::from(None),
        })
    }

    /// Opens an existing segment file (header not yet checked: see [`Segment::check_header`]).
    ///
    /// # Errors
    /// Any I/O error.
    pub fn open(
        storage: &dyn Storage,
        path: &Path,
        base: u64,
        kind: u32,
        read_only: bool,
    ) -> Result<Segment> {
        let file = if read_only {
            storage.open_read_only(path)
        } else {
            storage.open(path)
        }
        .map_err(|e| Error::io(format!("open segment {}", path.display()), e))?;
        Ok(Segment {
            path: path.to_path_buf(),
            base,
            kind,
            file,
            map: RwLock::new(None),
            map_failed: std::sync::atomic::AtomicBool::new(false),
            active_map: RwLock::new(None),
            sealed_len: std::sync::OnceLock::new(),
            version: std::sync::OnceLock::new(),
            compact: std::sync::OnceLock::new(),
        })
    }

    /// The format version of its header, once checked (always, for a segment this build
    /// created or a log's open checked).
    pub fn version(&self) -> Option<u32> {
        self.version.get().copied()
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Logical position of the segment's first byte.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Logical position of the first frame.
    pub fn first_frame_position(&self) -> u64 {
        self.base.saturating_add(SEGMENT_HEADER_LEN as u64)
    }

    /// Reads a rewritten segment's footer and tables (once): `Ok(Ok(None))` for a segment
    /// that is not one (or whose header does not decode: [`Segment::check_header`] reports
    /// that), `Ok(Err((file offset, reason)))` for a rewritten one whose tables do not check.
    fn load_compact(&self) -> Result<Checked<Option<Arc<CompactMap>>>> {
        if let Some(found) = self.compact.get() {
            return Ok(Ok(found.clone()));
        }
        let mut buf = [0u8; SEGMENT_HEADER_LEN];
        let n = self.read_exact_or_eof(&mut buf, 0)?;
        let version = format::decode_segment_header(buf.get(..n).unwrap_or_default())
            .ok()
            .filter(|h| {
                self.kind == format::SEGMENT_KIND_EVENTS && h.kind == SEGMENT_KIND_COMPACTED
            })
            .map(|h| h.version)
            .filter(|&v| v >= 3);
        let Some(version) = version else {
            let _ = self.compact.set(None);
            return Ok(Ok(None));
        };
        let file_len = self
            .file
            .len()
            .map_err(|e| Error::io(format!("stat {}", self.path.display()), e))?;
        let footer_at = file_len.saturating_sub(FOOTER_LEN as u64);
        let mut footer = [0u8; FOOTER_LEN];
        let n = self.read_exact_or_eof(&mut footer, footer_at)?;
        let footer = match compact::decode_footer(
            footer.get(..n).unwrap_or_default(),
            self.base,
            file_len,
            version,
        ) {
            Ok(f) if f.dictionary_len > 0 && version < 5 => {
                return Ok(Err((
                    footer_at,
                    DecodeError::Invalid("a dictionary in a segment older than format 5"),
                )));
            }
            Ok(f) => f,
            Err(e) => return Ok(Err((footer_at, e))),
        };
        let tables_len = usize::try_from(footer_at.saturating_sub(footer.map_offset))
            .map_err(|_| Error::InvalidArgument("rewritten segment tables too large".into()))?;
        let mut tables = vec![0u8; tables_len];
        let n = self.read_exact_or_eof(&mut tables, footer.map_offset)?;
        let (blocks, removed) =
            match compact::decode_tables(tables.get(..n).unwrap_or_default(), &footer, self.base) {
                Ok(t) => t,
                Err(e) => return Ok(Err((footer.map_offset, e))),
            };
        let starts: Vec<u64> = blocks.iter().map(|b| b.first_position).collect();
        let fences = starts.iter().step_by(FENCE_STRIDE).copied().collect();
        let map = Arc::new(CompactMap {
            footer,
            blocks,
            starts,
            fences,
            removed,
            dictionary: std::sync::OnceLock::new(),
        });
        let _ = self.sealed_len.set(file_len);
        let _ = self.compact.set(Some(Arc::clone(&map)));
        Ok(Ok(Some(map)))
    }

    /// The block map of a rewritten segment; `None` for a segment as the writer wrote it.
    ///
    /// # Errors
    /// [`Error::Corrupted`] when a rewritten segment's footer or tables do not check;
    /// I/O errors.
    pub fn compact_map(&self) -> Result<Option<Arc<CompactMap>>> {
        self.load_compact()?.map_err(|(offset, reason)| {
            Error::corrupted(self.path.clone(), offset, reason.to_string())
        })
    }

    /// The checked, prepared dictionary of a rewritten segment's compressed blocks (read
    /// and checked once, then kept with the segment): `Ok(Err((file offset, reason)))`
    /// when it does not check.
    fn dictionary(&self, map: &CompactMap) -> Result<Checked<Arc<Dictionary>>> {
        if let Some(found) = map.dictionary.get() {
            return Ok(found.clone());
        }
        let len = usize::try_from(map.footer.dictionary_len).unwrap_or(usize::MAX);
        let bytes = self.read_range(SEGMENT_HEADER_LEN as u64, len)?;
        let checked = Dictionary::decode(&bytes, &map.footer)
            .map(Arc::new)
            .map_err(|reason| (SEGMENT_HEADER_LEN as u64, reason));
        Ok(map.dictionary.get_or_init(|| checked).clone())
    }

    /// For a rewritten segment with a dictionary: why the dictionary does not check, if it
    /// does not (every block compressed with it then reports the same reason).
    ///
    /// # Errors
    /// As [`Segment::compact_map`].
    pub fn dictionary_damage(&self) -> Result<Option<DecodeError>> {
        let Some(map) = self.compact_map()? else {
            return Ok(None);
        };
        if map.footer.dictionary_len == 0 {
            return Ok(None);
        }
        Ok(self.dictionary(&map)?.err().map(|(_, reason)| reason))
    }

    /// Whether it is a rewritten segment (as far as known: after its header was checked).
    pub fn is_compacted(&self) -> bool {
        self.compact.get().is_some_and(Option::is_some)
    }

    /// How many positions it covers: the file's length, or for a rewritten segment the
    /// length it had before (its logical end minus its base).
    ///
    /// # Errors
    /// As [`Segment::compact_map`].
    pub fn logical_len(&self) -> Result<u64> {
        match self.compact_map()? {
            Some(map) => Ok(map.logical_end().saturating_sub(self.base)),
            None => self.file_len(),
        }
    }

    /// The position a sealed segment ends at (its logical end); `None` for the active one.
    pub fn sealed_end(&self) -> Option<u64> {
        match self.compact.get() {
            Some(Some(map)) => Some(map.logical_end()),
            _ => self.sealed_len().map(|len| self.base.saturating_add(len)),
        }
    }

    /// Reads the bytes of a file range (`len` at `offset`; fewer at the end of the file).
    ///
    /// # Errors
    /// I/O errors.
    pub fn read_range(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        let n = self.read_exact_or_eof(&mut buf, offset)?;
        buf.truncate(n);
        Ok(buf)
    }

    /// The file's length in bytes.
    ///
    /// # Errors
    /// Any I/O error.
    pub fn file_len(&self) -> Result<u64> {
        if let Some(len) = self.sealed_len.get() {
            return Ok(*len);
        }
        self.file
            .len()
            .map_err(|e| Error::io(format!("stat {}", self.path.display()), e))
    }

    /// Reads and checks the header.
    ///
    /// # Errors
    /// [`Error::UnsupportedFormat`] when an intact header (magic and CRC valid) declares a
    /// format version newer than [`format::FORMAT_VERSION`]: such a segment is neither torn
    /// nor damaged, and must never be cut or removed. [`Error::Io`] on read failure. A bad
    /// header is returned as `Ok(Err(reason))` so the caller can tell a torn new segment
    /// from a damaged old one.
    pub fn check_header(&self) -> Result<Result<SegmentHeader, DecodeError>> {
        let mut buf = [0u8; SEGMENT_HEADER_LEN];
        let n = self.read_exact_or_eof(&mut buf, 0)?;
        let header = match format::decode_segment_header(buf.get(..n).unwrap_or_default()) {
            Ok(h) => h,
            Err(DecodeError::UnsupportedVersion(found)) if found > format::FORMAT_VERSION => {
                return Err(Error::UnsupportedFormat {
                    file: self.path.clone(),
                    found,
                    supported: format::FORMAT_VERSION,
                });
            }
            Err(e) => return Ok(Err(e)),
        };
        let rewritten = header.kind == SEGMENT_KIND_COMPACTED
            && self.kind == format::SEGMENT_KIND_EVENTS
            && header.version >= 3;
        if header.kind != self.kind && !rewritten {
            return Ok(Err(DecodeError::Invalid("segment kind")));
        }
        if rewritten && let Err((_, reason)) = self.load_compact()? {
            return Ok(Err(reason));
        }
        if header.base_position != self.base {
            return Ok(Err(DecodeError::Invalid(
                "segment header base differs from the file name",
            )));
        }
        let _ = self.version.set(header.version);
        Ok(Ok(header))
    }

    /// Tells the storage that the point reads ([`Segment::read_frame`]) of the frames at
    /// these file offsets (ascending) come soon, so that it fetches them all at once: the
    /// page-aligned range each point read covers, neighbours merged. A hint: errors are
    /// ignored, and nothing read changes.
    pub fn will_read_frames(&self, offsets: &[u64]) {
        let page = POINT_READ_BYTES as u64;
        self.will_need_merged(
            offsets
                .iter()
                .map(|&offset| (offset, offset.saturating_add(page))),
        );
    }

    /// Tells the storage that these byte ranges `[start, end)` of the file (ascending
    /// starts) are read soon, so that it fetches them all at once. A hint: errors are
    /// ignored, and nothing read changes.
    pub fn will_read_ranges(&self, ranges: &[(u64, u64)]) {
        self.will_need_merged(ranges.iter().copied());
    }

    /// Hints the storage with the byte ranges `[start, end)` of the file (ascending
    /// starts), each start rounded down to a point read's page and overlapping or touching
    /// neighbours merged into one hint. Errors are ignored: a hint changes nothing read.
    fn will_need_merged(&self, ranges: impl IntoIterator<Item = (u64, u64)>) {
        let page = POINT_READ_BYTES as u64;
        let mut pending: Option<(u64, u64)> = None;
        for (start, end) in ranges.into_iter().filter(|(s, e)| s < e) {
            let start = start - start % page;
            pending = match pending {
                Some((s, e)) if start <= e => Some((s, e.max(end))),
                Some((s, e)) => {
                    let _ = self.file.will_need(s, e - s);
                    Some((start, end))
                }
                None => Some((start, end)),
            };
        }
        if let Some((s, e)) = pending {
            let _ = self.file.will_need(s, e - s);
        }
    }

    /// For a rewritten segment: tells the storage that the frames at these positions
    /// (ascending) will be read soon, so that it fetches the blocks holding them (and the
    /// dictionary, before it is first needed) all at once, neighbours merged. A hint:
    /// nothing read changes. Does nothing for a segment as written or a rewritten one
    /// whose map is not loaded yet (its first read loads it).
    pub fn will_read_blocks(&self, positions: &[u64]) {
        let Some(Some(map)) = self.compact.get() else {
            return;
        };
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        if map.footer.dictionary_len > 0 && map.dictionary.get().is_none() {
            ranges.push((SEGMENT_HEADER_LEN as u64, map.footer.blocks_offset()));
        }
        let mut last = None;
        for &p in positions {
            let Some(i) = map.block_for(p) else {
                continue;
            };
            if last == Some(i) {
                continue;
            }
            last = Some(i);
            if let Some(b) = map.blocks.get(i) {
                ranges.push((b.file_offset, b.file_offset.saturating_add(b.file_len())));
            }
        }
        self.will_need_merged(ranges);
    }

    fn read_exact_or_eof(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            let n = self
                .file
                .read_at(
                    buf.get_mut(done..).unwrap_or_default(),
                    offset.saturating_add(done as u64),
                )
                .map_err(|e| Error::io(format!("read {}", self.path.display()), e))?;
            if n == 0 {
                break;
            }
            done = done.saturating_add(n);
        }
        Ok(done)
    }

    /// Writes `bytes` at file offset `offset` (appends go at the current end).
    ///
    /// # Errors
    /// Any I/O error; the store is poisoned by its caller.
    pub fn write_at(&self, bytes: &[u8], offset: u64) -> Result<()> {
        debug_assert!(!self.is_sealed(), "write to a sealed segment");
        self.file
            .write_at(bytes, offset)
            .map_err(|e| Error::io(format!("write {}", self.path.display()), e))
    }

    /// `fdatasync` of the file.
    ///
    /// # Errors
    /// Any I/O error; the store is poisoned by its caller.
    pub fn sync(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| Error::io(format!("sync {}", self.path.display()), e))
    }

    /// Cuts the file to `len` bytes (recovery of a torn tail; never on a sealed segment).
    ///
    /// # Errors
    /// Any I/O error.
    pub fn truncate(&self, len: u64) -> Result<()> {
        debug_assert!(!self.is_sealed(), "truncate of a sealed segment");
        self.file
            .truncate(len)
            .map_err(|e| Error::io(format!("truncate {}", self.path.display()), e))
    }

    /// Marks the segment immutable: its length is fixed from now on, and sequential reads
    /// go through a mapping of the file (made on first use).
    ///
    /// # Errors
    /// Any I/O error reading the length.
    pub fn seal(&self) -> Result<()> {
        if self.sealed_len.get().is_none() {
            let len = self
                .file
                .len()
                .map_err(|e| Error::io(format!("stat {}", self.path.display()), e))?;
            let _ = self.sealed_len.set(len);
        }
        Ok(())
    }

    /// The final length of a sealed segment; `None` for the active one.
    pub fn sealed_len(&self) -> Option<u64> {
        self.sealed_len.get().copied()
    }

    /// Whether the segment is sealed.
    pub fn is_sealed(&self) -> bool {
        self.sealed_len.get().is_some()
    }

    /// Where in the file the bytes at `offset` (as the segment's readers count: the
    /// position less the base) lie: the same offset in a segment as written, the start of
    /// the block holding that position in a rewritten one (for reports of damage).
    pub fn file_offset_of(&self, offset: u64) -> u64 {
        let Some(Some(map)) = self.compact.get() else {
            return offset;
        };
        if offset < SEGMENT_HEADER_LEN as u64 {
            return offset;
        }
        map.block_for(self.base.saturating_add(offset))
            .and_then(|i| map.blocks.get(i))
            .map_or(offset, |b| b.file_offset)
    }

    /// The mapping of a sealed segment, made on first use; `None` for the active segment
    /// (or if mapping fails, in which case reads use `pread`).
    fn mapping(&self) -> Option<Mapping> {
        if !self.is_sealed() {
            return None;
        }
        if let Some(m) = self.map.read().as_ref() {
            return Some(m.clone());
        }
        // A file that could not be mapped is read with `pread` from then on, not tried
        // again at every read (under this lock).
        if self.map_failed.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        let mut map = self.map.write();
        if map.is_none() {
            *map = self.file.map().ok();
            if map.is_none() {
                self.map_failed
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        map.clone()
    }

    /// A sequential reader over the file (mapping when sealed, read-ahead buffer if not).
    pub fn reader(self: &Arc<Self>) -> SegmentReader {
        let map = if self.is_compacted() {
            None
        } else {
            self.mapping()
        };
        self.new_reader(map, READ_AHEAD_BYTES)
    }

    /// A sequential reader of the frames below file offset `upto` (which must be written
    /// bytes, never cut while the reader lives): as [`Segment::reader`], and an active
    /// segment's written part is read through a mapping too (made, or made afresh, once
    /// 4 MiB more bytes are written than the last one covers), so that a
    /// scan of the log's newest part copies nothing out of the page cache either.
    ///
    /// Only for logs whose written bytes are never cut while open (the event log; see
    /// `Log::with_active_mapping`): a mapped page cut from its file faults on access.
    pub fn reader_upto(self: &Arc<Self>, upto: u64) -> SegmentReader {
        if self.is_sealed() || self.is_compacted() {
            return self.reader();
        }
        let current = self.active_map.read().clone();
        let mapped = match current {
            Some((m, valid)) if upto < valid.saturating_add(ACTIVE_MAP_STEP) => Some((m, valid)),
            _ if upto < ACTIVE_MAP_STEP => None,
            _ => {
                let mut slot = self.active_map.write();
                match slot.as_ref() {
                    Some((m, valid)) if upto < valid.saturating_add(ACTIVE_MAP_STEP) => {
                        Some((m.clone(), *valid))
                    }
                    _ => match self.file.map_prefix(upto) {
                        Ok(m) => {
                            *slot = Some((m.clone(), upto));
                            Some((m, upto))
                        }
                        Err(_) => slot.clone(),
                    },
                }
            }
        };
        let mut reader = self.new_reader(None, READ_AHEAD_BYTES);
        if let Some((m, valid)) = mapped {
            reader.map = Some(m);
            reader.map_valid = valid;
        }
        reader
    }

    fn new_reader(self: &Arc<Self>, map: Option<Mapping>, read_ahead: usize) -> SegmentReader {
        SegmentReader {
            segment: Arc::clone(self),
            map,
            map_valid: u64::MAX,
            buf: Vec::new(),
            buf_offset: 0,
            read_ahead,
            compact: self.compact.get().cloned().flatten(),
            block: None,
        }
    }

    /// A reader for a few reads at scattered places (a search): it reads a page at a time
    /// and, like [`Segment::read_frame`], never through the mapping (but a rewritten
    /// segment's blocks always are: [`SegmentReader`]'s block loading).
    pub fn point_reader(self: &Arc<Self>) -> SegmentReader {
        self.new_reader(None, POINT_READ_BYTES)
    }

    /// Reads and fully checks the frame at logical `position`, not reading past file
    /// offset `limit` (the caller's visibility bound).
    ///
    /// # Errors
    /// [`Error::Io`] on read failure, [`Error::Corrupted`] when the frame does not check.
    pub fn read_frame(
        self: &Arc<Self>,
        position: u64,
        limit: u64,
    ) -> Result<(FrameHeader, FrameBytes)> {
        // A point read: one pread of a page, which holds most frames whole (a second read
        // fetches the rest of a longer one). Not through the mapping even when sealed:
        // random reads through a mapping fault file pages into the process's resident set,
        // so memory would grow with the part of the log read, not with what is in use.
        // (A rewritten segment's compressed blocks are read through it: docs/design.md,
        // "Blocks are read through the segment's mapping".)
        self.new_reader(None, POINT_READ_BYTES)
            .frame_at(position, limit)
    }
}

/// Whether `len` bytes at file `offset` are read through a reader's mapping, given how far
/// it may be read (`map_valid`): always for a sealed segment's (`u64::MAX`; reads past its
/// end come back short), only within the written part it was made over for an active one.
fn map_covers(map_valid: u64, offset: u64, len: usize) -> bool {
    map_valid == u64::MAX || offset.saturating_add(len as u64) <= map_valid
}

/// Decodes and checks (CRC, its position) the frame at `start` of a decoded block of a
/// rewritten segment, which must be at `position`; returns its header and length.
fn check_frame_in_block(
    raw: &[u8],
    start: usize,
    position: u64,
) -> std::result::Result<(FrameHeader, usize), DecodeError> {
    let header = format::decode_frame_header(raw.get(start..).unwrap_or_default())?;
    let len = usize::try_from(header.frame_len()).map_err(|_| DecodeError::Invalid("length"))?;
    let bytes = raw
        .get(start..start.saturating_add(len))
        .ok_or(DecodeError::Truncated {
            needed: header.frame_len(),
            available: raw.len().saturating_sub(start) as u64,
        })?;
    format::check_frame(&header, bytes, position)?;
    Ok((header, len))
}

/// Sequential access to a segment's bytes.
#[derive(Debug)]
pub struct SegmentReader {
    segment: Arc<Segment>,
    map: Option<Mapping>,
    /// File offset up to which `map` may be read: the whole mapping of a sealed segment
    /// (`u64::MAX`), the part written when it was made for an active one. Bytes past it
    /// are read into `buf`.
    map_valid: u64,
    buf: Vec<u8>,
    buf_offset: u64,
    /// Bytes read at once when the buffer misses; 0 reads exactly what is asked.
    read_ahead: usize,
    /// A rewritten segment's block map: positions are found through it, and "offsets"
    /// in this reader's calls are positions minus the base, not file offsets.
    compact: Option<Arc<CompactMap>>,
    /// The last block decoded (its index in the map, its frames).
    block: Option<(usize, Arc<[u8]>)>,
}

impl SegmentReader {
    /// `len` bytes at file `offset`, or fewer at end of file: borrowed from the mapping, or
    /// from the reader's buffer, which is refilled (at least `read_ahead` bytes) on a miss.
    /// `len` bytes at file `offset` (fewer at the end of the file), read ahead up to
    /// `limit` at most: a reader of the log's end (a subscriber woken for one new frame)
    /// reads and buffers what it may see, not a whole read-ahead window of zeros.
    fn bytes_at(&mut self, offset: u64, len: usize, limit: u64) -> Result<&[u8]> {
        let in_map = map_covers(self.map_valid, offset, len);
        if let Some(m) = self.map.as_ref().filter(|_| in_map) {
            let start = usize::try_from(offset).unwrap_or(usize::MAX).min(m.len());
            let end = start.saturating_add(len).min(m.len());
            return Ok(m.get(start..end).unwrap_or_default());
        }
        let buf_end = self.buf_offset.saturating_add(self.buf.len() as u64);
        let want_end = offset.saturating_add(len as u64);
        if offset < self.buf_offset || want_end > buf_end {
            // A length read from a damaged header can be anything: never buffer more than
            // the file holds from `offset`.
            let len = if len > self.read_ahead {
                let file_len = self.segment.file_len()?;
                len.min(usize::try_from(file_len.saturating_sub(offset)).unwrap_or(usize::MAX))
            } else {
                len
            };
            let ahead = usize::try_from(limit.saturating_sub(offset))
                .unwrap_or(usize::MAX)
                .min(self.read_ahead);
            let fill = len.max(ahead);
            // Give back a buffer grown for one large frame.
            if self.buf.capacity() > fill.saturating_mul(4) {
                self.buf = Vec::new();
            }
            self.buf.resize(fill, 0);
            let n = self.segment.read_exact_or_eof(&mut self.buf, offset)?;
            self.buf.truncate(n);
            self.buf_offset = offset;
        }
        let start = usize::try_from(offset.saturating_sub(self.buf_offset)).unwrap_or(usize::MAX);
        let start = start.min(self.buf.len());
        let end = start.saturating_add(len).min(self.buf.len());
        Ok(self.buf.get(start..end).unwrap_or_default())
    }

    fn file_offset(&self, position: u64) -> u64 {
        position.saturating_sub(self.segment.base)
    }

    /// The segment being read.
    pub fn segment(&self) -> &Arc<Segment> {
        &self.segment
    }

    /// Reads and checks the frame at logical `position`, reading no further than file
    /// offset `limit`.
    ///
    /// # Errors
    /// [`Error::Io`] on read failure, [`Error::Corrupted`] when the frame does not check.
    pub fn frame_at(&mut self, position: u64, limit: u64) -> Result<(FrameHeader, FrameBytes)> {
        if let Some(map) = self.compact.clone() {
            let (header, raw, start, len) = self.compact_frame(&map, position)?;
            let bytes = FrameStorage::Block(raw, start, start.saturating_add(len));
            return Ok((header, FrameBytes { bytes }));
        }
        let offset = self.file_offset(position);
        match self.try_frame_at(offset, limit)? {
            Ok(found) => Ok(found),
            Err(reason) => Err(Error::corrupted(
                self.segment.path.clone(),
                offset,
                reason.to_string(),
            )),
        }
    }

    /// Like [`SegmentReader::frame_at`], but the bytes are borrowed from the reader (no
    /// allocation): for visiting frames one at a time.
    ///
    /// # Errors
    /// As [`SegmentReader::frame_at`].
    pub fn frame_ref_at(&mut self, position: u64, limit: u64) -> Result<(FrameHeader, &[u8])> {
        if let Some(map) = self.compact.clone() {
            let (header, _, start, len) = self.compact_frame(&map, position)?;
            let bytes = self
                .block
                .as_ref()
                .and_then(|(_, raw)| raw.get(start..start.saturating_add(len)))
                .unwrap_or_default();
            return Ok((header, bytes));
        }
        let offset = self.file_offset(position);
        let segment = Arc::clone(&self.segment);
        match self.try_frame_ref_at(offset, limit)? {
            Ok(found) => Ok(found),
            Err(reason) => Err(Error::corrupted(
                segment.path.clone(),
                offset,
                reason.to_string(),
            )),
        }
    }

    /// Like [`SegmentReader::frame_at`] by file offset, with decode failures as values.
    fn try_frame_at(
        &mut self,
        offset: u64,
        limit: u64,
    ) -> Result<Result<(FrameHeader, FrameBytes), DecodeError>> {
        let (map, valid) = (self.map.clone(), self.map_valid);
        let (header, bytes) = match self.try_frame_ref_at(offset, limit)? {
            Ok(found) => found,
            Err(e) => return Ok(Err(e)),
        };
        // Borrowed from the mapping exactly when `bytes_at` read it from there.
        let bytes = match map.filter(|_| map_covers(valid, offset, bytes.len())) {
            Some(m) => {
                let start = usize::try_from(offset).unwrap_or(usize::MAX);
                FrameStorage::Mapped(m, start, start.saturating_add(bytes.len()))
            }
            None => FrameStorage::Owned(Arc::from(bytes)),
        };
        Ok(Ok((header, FrameBytes { bytes })))
    }

    /// The checked frame at file `offset`, borrowed, with decode failures as values.
    fn try_frame_ref_at(
        &mut self,
        offset: u64,
        limit: u64,
    ) -> Result<Result<(FrameHeader, &[u8]), DecodeError>> {
        let position = self.segment.base.saturating_add(offset);
        if let Some(map) = self.compact.clone() {
            return match self.compact_lookup(&map, position)? {
                Ok(Some((header, _, start, len))) => Ok(Ok((
                    header,
                    self.block
                        .as_ref()
                        .and_then(|(_, raw)| raw.get(start..start.saturating_add(len)))
                        .unwrap_or_default(),
                ))),
                Ok(None) => Ok(Err(DecodeError::Invalid(
                    "no frame here: a scavenge removed it",
                ))),
                Err((_, reason)) => Ok(Err(reason)),
            };
        }
        let available = limit.saturating_sub(offset);
        let head = self.bytes_at(offset, FRAME_HEADER_LEN, limit)?;
        if (head.len() as u64) < FRAME_HEADER_LEN as u64 || available < FRAME_HEADER_LEN as u64 {
            return Ok(Err(DecodeError::Truncated {
                needed: FRAME_HEADER_LEN as u64,
                available: available.min(head.len() as u64),
            }));
        }
        let header = match format::decode_frame_header(head) {
            Ok(h) => h,
            Err(e) => return Ok(Err(e)),
        };
        let frame_len = header.frame_len();
        if frame_len > available {
            return Ok(Err(DecodeError::Truncated {
                needed: frame_len,
                available,
            }));
        }
        let len = usize::try_from(frame_len).unwrap_or(usize::MAX);
        let bytes = self.bytes_at(offset, len, limit)?;
        if bytes.len() != len {
            return Ok(Err(DecodeError::Truncated {
                needed: frame_len,
                available: bytes.len() as u64,
            }));
        }
        if let Err(e) = format::check_frame(&header, bytes, position) {
            return Ok(Err(e));
        }
        Ok(Ok((header, bytes)))
    }

    /// Scans frames from file offset `from` to `end` (the file length), calling `visit` for
    /// each valid frame in order, and says how the scan ended.
    ///
    /// # Errors
    /// I/O errors, and any error `visit` returns.
    pub fn scan(
        &mut self,
        from: u64,
        end: u64,
        mut visit: impl FnMut(&FrameHeader, &FrameBytes) -> Result<()>,
    ) -> Result<ScanEnd> {
        if let Some(map) = self.compact.clone() {
            return self.scan_compacted(&map, from, end, visit);
        }
        let mut offset = from;
        while offset < end {
            match self.try_frame_at(offset, end)? {
                Ok((header, bytes)) => {
                    visit(&header, &bytes)?;
                    offset = offset.saturating_add(header.frame_len());
                }
                Err(reason) => {
                    if self.is_zero(offset, end)? {
                        return Ok(ScanEnd::ZeroTail {
                            offset,
                            bytes: end.saturating_sub(offset),
                        });
                    }
                    return Ok(ScanEnd::Damaged { offset, reason });
                }
            }
        }
        Ok(ScanEnd::Clean { offset })
    }

    fn is_zero(&mut self, from: u64, end: u64) -> Result<bool> {
        let mut offset = from;
        while offset < end {
            let want = usize::try_from(end.saturating_sub(offset))
                .unwrap_or(usize::MAX)
                .min(READ_AHEAD_BYTES);
            let chunk = self.bytes_at(offset, want, end)?;
            if chunk.is_empty() {
                break;
            }
            if chunk.iter().any(|&b| b != 0) {
                return Ok(false);
            }
            offset = offset.saturating_add(chunk.len() as u64);
        }
        Ok(true)
    }

    /// Finds the next offset at or after `from` (and before `end`) where a complete, valid
    /// frame that knows its own position starts. Used after damage, to tell corruption
    /// (valid frames follow that attest the damaged range) from a torn tail, and to let
    /// `verify` and `dump` go on past damage.
    ///
    /// # Errors
    /// I/O errors.
    pub fn resync(&mut self, from: u64, end: u64) -> Result<Option<u64>> {
        if self.compact.is_some() {
            let base = self.segment.base;
            return Ok(self
                .next_kept(base.saturating_add(from), true)?
                .filter(|&p| p < base.saturating_add(end))
                .map(|p| p.saturating_sub(base)));
        }
        let magic = FRAME_MAGIC.to_le_bytes();
        let mut offset = from;
        // Frames are mostly small: look near `from` first, then in growing windows.
        let mut step = 4096usize;
        while offset < end {
            let window = usize::try_from(end.saturating_sub(offset))
                .unwrap_or(usize::MAX)
                .min(step);
            step = step.saturating_mul(2).min(READ_AHEAD_BYTES);
            let chunk = self.bytes_at(offset, window, end)?.to_vec();
            if chunk.len() < magic.len() {
                return Ok(None);
            }
            let mut i = 0usize;
            while let Some(w) = chunk.get(i..i.saturating_add(magic.len())) {
                if w == magic {
                    let at = offset.saturating_add(i as u64);
                    if self.try_frame_at(at, end)?.is_ok() {
                        return Ok(Some(at));
                    }
                }
                i = i.saturating_add(1);
            }
            // Step so that a magic straddling the window edge is still seen.
            offset = offset.saturating_add((chunk.len().saturating_sub(magic.len() - 1)) as u64);
        }
        Ok(None)
    }

    /// The frame at file `offset` if it is valid, without turning damage into an error.
    ///
    /// # Errors
    /// I/O errors.
    pub fn frame_at_offset(
        &mut self,
        offset: u64,
        end: u64,
    ) -> Result<Result<(FrameHeader, FrameBytes), DecodeError>> {
        self.try_frame_at(offset, end)
    }

    /// Decodes block `i` of a rewritten segment, or takes the one decoded last. Its bytes
    /// are read through the segment's mapping (a rewritten segment is sealed for good),
    /// with a `pread` only where mapping failed: a `pread` of a few hundred bytes cost
    /// more than decoding them.
    fn load_block(&mut self, map: &CompactMap, i: usize) -> Result<Checked<Arc<[u8]>>> {
        if let Some((j, raw)) = &self.block
            && *j == i
        {
            return Ok(Ok(Arc::clone(raw)));
        }
        let Some(b) = map.blocks.get(i).copied() else {
            return Ok(Err((0, DecodeError::Invalid("no such block"))));
        };
        let len = usize::try_from(b.file_len()).unwrap_or(usize::MAX);
        let mapping = self.segment.mapping();
        let read;
        let bytes: &[u8] = match &mapping {
            Some(m) => {
                let start = usize::try_from(b.file_offset)
                    .unwrap_or(usize::MAX)
                    .min(m.len());
                m.get(start..start.saturating_add(len).min(m.len()))
                    .unwrap_or_default()
            }
            None => {
                read = self.segment.read_range(b.file_offset, len)?;
                &read
            }
        };
        let dictionary = if b.codec == Codec::ZstdDict {
            match self.segment.dictionary(map)? {
                Ok(d) => Some(d),
                Err(e) => return Ok(Err(e)),
            }
        } else {
            None
        };
        let decoded = compact::decode_block_at(&b, bytes, dictionary.as_deref());
        match decoded {
            Ok(raw) => {
                self.block = Some((i, Arc::clone(&raw)));
                Ok(Ok(raw))
            }
            Err(e) => Ok(Err((b.file_offset, e))),
        }
    }

    /// The checked frame at `position` of a rewritten segment: its header, the decoded
    /// block and where the frame is in it; `Ok(None)` when a scavenge removed it.
    /// `Err((file offset, reason))` when the block or the frame does not check.
    #[allow(clippy::type_complexity)]
    fn compact_lookup(
        &mut self,
        map: &CompactMap,
        position: u64,
    ) -> Result<Checked<Option<(FrameHeader, Arc<[u8]>, usize, usize)>>> {
        let Some(i) = map.block_for(position) else {
            return Ok(Ok(None));
        };
        let Some(b) = map.blocks.get(i).copied() else {
            return Ok(Ok(None));
        };
        let raw = match self.load_block(map, i)? {
            Ok(raw) => raw,
            Err(e) => return Ok(Err(e)),
        };
        let found = (|| {
            let Some(start) = compact::find_in_block(&raw, b.first_position, position)? else {
                return Ok(None);
            };
            let (header, len) = check_frame_in_block(&raw, start, position)?;
            Ok(Some((header, start, len)))
        })();
        Ok(match found {
            Ok(Some((header, start, len))) => Ok(Some((header, raw, start, len))),
            Ok(None) => Ok(None),
            Err(e) => Err((b.file_offset, e)),
        })
    }

    /// [`SegmentReader::compact_lookup`] with its outcomes as errors.
    fn compact_frame(
        &mut self,
        map: &CompactMap,
        position: u64,
    ) -> Result<(FrameHeader, Arc<[u8]>, usize, usize)> {
        match self.compact_lookup(map, position)? {
            Ok(Some(found)) => Ok(found),
            Ok(None) => Err(Error::Scavenged { position }),
            Err((offset, reason)) => Err(Error::corrupted(
                self.segment.path.clone(),
                offset,
                reason.to_string(),
            )),
        }
    }

    /// For a rewritten segment: the position of the first surviving frame at or after
    /// `position` (`None`: none in this segment). A block that does not decode is passed
    /// over (reading its frames reports the damage). For a segment as written, `position`
    /// itself.
    ///
    /// # Errors
    /// I/O errors.
    pub fn next_frame_at_or_after(&mut self, position: u64) -> Result<Option<u64>> {
        self.next_kept(position, false)
    }

    /// [`SegmentReader::next_frame_at_or_after`]; a block that does not decode is passed
    /// over when `skip_damaged` (to go on after damage), else `position` itself is
    /// returned, so that reading there reports the damage instead of skipping frames.
    fn next_kept(&mut self, position: u64, skip_damaged: bool) -> Result<Option<u64>> {
        let Some(map) = self.compact.clone() else {
            return Ok(Some(position));
        };
        let mut i = map.block_for(position).map_or(0, |b| b.saturating_add(1));
        if let Some(prev) = i.checked_sub(1)
            && let Some(b) = map.blocks.get(prev).copied()
        {
            let found = match self.load_block(&map, prev)? {
                Ok(raw) => compact::block_positions(&raw, b.first_position)
                    .map(|positions| {
                        positions
                            .iter()
                            .find(|(p, _)| *p >= position)
                            .map(|&(p, _)| p)
                    })
                    .map_err(|_| ()),
                Err(_) => Err(()),
            };
            match found {
                Ok(Some(p)) => return Ok(Some(p)),
                Ok(None) => {}
                Err(()) if !skip_damaged => return Ok(Some(position)),
                Err(()) => {}
            }
        }
        while let Some(b) = map.blocks.get(i) {
            if b.first_position >= position {
                return Ok(Some(b.first_position));
            }
            i = i.saturating_add(1);
        }
        Ok(None)
    }

    /// [`SegmentReader::scan`] of a rewritten segment: its surviving frames with
    /// positions from `base + from` to `base + end`.
    fn scan_compacted(
        &mut self,
        map: &CompactMap,
        from: u64,
        end: u64,
        mut visit: impl FnMut(&FrameHeader, &FrameBytes) -> Result<()>,
    ) -> Result<ScanEnd> {
        let base = self.segment.base;
        let (from_p, end_p) = (base.saturating_add(from), base.saturating_add(end));
        for (i, b) in map.blocks.iter().enumerate() {
            // Blocks wholly before `from`: the next one starts at or before it.
            if map
                .blocks
                .get(i.saturating_add(1))
                .is_some_and(|next| next.first_position <= from_p)
            {
                continue;
            }
            if b.first_position >= end_p {
                break;
            }
            let block_offset = b.first_position.saturating_sub(base);
            let raw = match self.load_block(map, i)? {
                Ok(raw) => raw,
                Err((_, reason)) => {
                    return Ok(ScanEnd::Damaged {
                        offset: block_offset.max(from),
                        reason,
                    });
                }
            };
            let positions = match compact::block_positions(&raw, b.first_position) {
                Ok(p) => p,
                Err(reason) => {
                    return Ok(ScanEnd::Damaged {
                        offset: block_offset.max(from),
                        reason,
                    });
                }
            };
            for (position, start) in positions {
                if position < from_p {
                    continue;
                }
                if position >= end_p {
                    break;
                }
                let checked = check_frame_in_block(&raw, start, position);
                match checked {
                    Ok((header, len)) => {
                        let bytes = FrameBytes {
                            bytes: FrameStorage::Block(
                                Arc::clone(&raw),
                                start,
                                start.saturating_add(len),
                            ),
                        };
                        visit(&header, &bytes)?;
                    }
                    Err(reason) => {
                        return Ok(ScanEnd::Damaged {
                            offset: position.saturating_sub(base),
                            reason,
                        });
                    }
                }
            }
        }
        Ok(ScanEnd::Clean { offset: end })
    }

    /// Raw bytes at file `offset` (up to `len`), for inspection of damaged frames.
    ///
    /// # Errors
    /// I/O errors.
    pub fn raw(&mut self, offset: u64, len: usize) -> Result<Vec<u8>> {
        Ok(self.bytes_at(offset, len, u64::MAX)?.to_vec())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::format::{EventRecord, encode_events_frame};
    use crate::io::FsStorage;

    fn new_segment(dir: &Path, base: u64) -> Arc<Segment> {
        Arc::new(
            Segment::create(&FsStorage, dir, base, crate::format::SEGMENT_KIND_EVENTS).unwrap(),
        )
    }

    fn frame(position: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let e = EventRecord {
            id: [1; 16],
            timestamp_us: 0,
            schema_version: 0,
            event_type: "T",
            metadata: b"",
            data: payload,
        };
        let frame = crate::format::EventsFrame {
            committed_at_us: Some(0),
            stream: "s",
            first_version: 0,
            events: &[e],
            checkpoint: None,
        };
        encode_events_frame(&mut out, position, 0, &frame);
        out
    }

    #[test]
    fn file_names_are_20_digit_base_positions() {
        assert_eq!(segment_file_name(268_435_456), "00000000000268435456.seg");
        assert_eq!(
            parse_segment_file_name("00000000000268435456.seg"),
            Some(268_435_456)
        );
        assert_eq!(parse_segment_file_name("268435456.seg"), None);
        assert_eq!(parse_segment_file_name("0000000000026843545x.seg"), None);
        assert_eq!(parse_segment_file_name("00000000000268435456.tmp"), None);
    }

    #[test]
    fn a_damaged_frame_length_never_buffers_more_than_the_file_holds() {
        let dir = tempfile::tempdir().unwrap();
        let seg = new_segment(dir.path(), 0);
        let mut f = frame(32, b"x");
        // Body length (bytes 4..8 of the frame header): about 4 GiB.
        f[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        seg.write_at(&f, 32).unwrap();
        let mut reader = SegmentReader {
            segment: Arc::clone(&seg),
            map: None,
            map_valid: u64::MAX,
            buf: Vec::new(),
            buf_offset: 0,
            read_ahead: POINT_READ_BYTES,
            compact: None,
            block: None,
        };
        // Even with no limit from the caller, the frame reads as truncated.
        assert!(matches!(
            reader.frame_at(32, u64::MAX),
            Err(Error::Corrupted { .. })
        ));
        assert!(
            reader.buf.capacity() <= 2 * POINT_READ_BYTES,
            "buffered {} bytes for a {}-byte file",
            reader.buf.capacity(),
            seg.file_len().unwrap()
        );
    }

    #[test]
    fn frames_written_are_read_back_sealed_or_not() {
        let dir = tempfile::tempdir().unwrap();
        let seg = new_segment(dir.path(), 1000);
        assert!(seg.check_header().unwrap().is_ok());
        let a = frame(1032, b"first");
        let b = frame(1032 + a.len() as u64, b"second");
        seg.write_at(&a, 32).unwrap();
        seg.write_at(&b, 32 + a.len() as u64).unwrap();
        let end = seg.file_len().unwrap();
        for sealed in [false, true] {
            if sealed {
                seg.seal().unwrap();
            }
            let (h, bytes) = seg.read_frame(1032 + a.len() as u64, end).unwrap();
            assert_eq!(&bytes[..], &b[..]);
            assert_eq!(h.position, 1032 + a.len() as u64);
            let mut seen = Vec::new();
            let how = seg
                .reader()
                .scan(32, end, |h, _| {
                    seen.push(h.position);
                    Ok(())
                })
                .unwrap();
            assert_eq!(seen, vec![1032, 1032 + a.len() as u64]);
            assert_eq!(how, ScanEnd::Clean { offset: end });
        }
    }

    /// Writes frames of `payload` at file offsets from `offset` until past `until`;
    /// returns their positions and where the last one ends.
    fn write_frames(seg: &Segment, mut offset: u64, until: u64, payload: &[u8]) -> (Vec<u64>, u64) {
        let mut positions = Vec::new();
        while offset < until {
            let f = frame(seg.base() + offset, payload);
            seg.write_at(&f, offset).unwrap();
            positions.push(seg.base() + offset);
            offset += f.len() as u64;
        }
        (positions, offset)
    }

    #[test]
    fn an_active_segment_is_read_through_a_mapping_of_its_written_part_only() {
        // The in-memory backend's mapping is a copy of the bytes when it is made: reading
        // past the written part through it would see zeros, not later frames.
        let sim = crate::io::sim::SimStorage::new(7);
        sim.create_dir_all(Path::new("/d")).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let storages: [(&dyn Storage, &Path); 2] =
            [(&FsStorage, tmp.path()), (&sim, Path::new("/d"))];
        for (storage, dir) in storages {
            let seg = Arc::new(
                Segment::create(storage, dir, 0, crate::format::SEGMENT_KIND_EVENTS).unwrap(),
            );
            let payload = vec![7u8; 60_000];
            let (first, end1) = write_frames(&seg, 32, ACTIVE_MAP_STEP, &payload);
            // Zeroed space ahead of the end, as preallocation leaves it.
            seg.write_at(&vec![0u8; 1 << 20], end1).unwrap();
            let read = |upto: u64| {
                let mut reader = seg.reader_upto(upto);
                let mut seen = Vec::new();
                let how = reader
                    .scan(32, upto, |h, bytes| {
                        assert!(
                            bytes[..] == frame(h.position, &payload)[..],
                            "{}",
                            h.position
                        );
                        seen.push(h.position);
                        Ok(())
                    })
                    .unwrap();
                assert_eq!(how, ScanEnd::Clean { offset: upto });
                (reader.map.is_some(), reader.map_valid, seen)
            };
            let (mapped, valid, seen) = read(end1);
            assert!(mapped, "{} bytes written: mapped", end1);
            assert_eq!(valid, end1);
            assert_eq!(seen, first);
            // Frames written over the zeroed space after the mapping was made: read with
            // `pread` past its written part, by a reader that still shares that mapping.
            let (more, end2) = write_frames(&seg, end1, end1 + (512 << 10), &payload);
            let (mapped, valid, seen) = read(end2);
            assert!(mapped);
            assert_eq!(valid, end1, "not mapped afresh for less than a step");
            assert_eq!(seen, [first.clone(), more.clone()].concat());
            let (frame_header, bytes) = seg.reader_upto(end2).frame_at(more[0], end2).unwrap();
            assert_eq!(frame_header.position, more[0]);
            assert_eq!(bytes.len() as u64, frame_header.frame_len());
            // A step further on, the mapping is made afresh over the new written part.
            let (_, end3) = write_frames(&seg, end2, end1 + ACTIVE_MAP_STEP, &payload);
            let (mapped, valid, seen) = read(end3);
            assert!(mapped);
            assert_eq!(valid, end3);
            assert_eq!(
                seen.len() as u64,
                seen.iter().filter(|&&p| p < end3).count() as u64
            );
            // Below a step's worth of written bytes, nothing is mapped.
            let small = Arc::new(
                Segment::create(storage, dir, 1 << 40, crate::format::SEGMENT_KIND_EVENTS).unwrap(),
            );
            let (_, end) = write_frames(&small, 32, 1 << 20, &payload);
            assert!(small.reader_upto(end).map.is_none());
        }
    }

    #[test]
    fn scan_tells_zero_tail_from_damage_and_resync_finds_the_next_frame() {
        let dir = tempfile::tempdir().unwrap();
        let seg = new_segment(dir.path(), 0);
        let a = frame(32, b"aaaa");
        let b_pos = 32 + a.len() as u64;
        let b = frame(b_pos, b"bbbb");
        seg.write_at(&a, 32).unwrap();
        seg.write_at(&b, b_pos).unwrap();
        seg.write_at(&[0u8; 100], b_pos + b.len() as u64).unwrap();
        let end = seg.file_len().unwrap();
        let how = seg.reader().scan(32, end, |_, _| Ok(())).unwrap();
        assert_eq!(
            how,
            ScanEnd::ZeroTail {
                offset: b_pos + b.len() as u64,
                bytes: 100
            }
        );
        // Damage frame a: the scan stops there, and resync finds frame b.
        seg.write_at(&[0xFF], 40).unwrap();
        let how = seg.reader().scan(32, end, |_, _| Ok(())).unwrap();
        assert!(
            matches!(how, ScanEnd::Damaged { offset: 32, .. }),
            "{how:?}"
        );
        assert_eq!(seg.reader().resync(33, end).unwrap(), Some(b_pos));
    }
}
