//! The `segment` layer: one segment file. Header, append, read a frame at an offset,
//! scan/validate, seal. Knows frames, not streams or the index.
//!
//! A segment named `<base>.seg` covers logical positions `base..base + file length`; its
//! 32-byte header occupies `base..base + 32`, so a frame's position is `base + offset`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::error::{Error, Result};
use crate::format::{
    self, DecodeError, FRAME_HEADER_LEN, FRAME_MAGIC, FrameHeader, SEGMENT_HEADER_LEN,
    SegmentHeader,
};
use crate::io::{Mapping, Storage, StorageFile};

/// Read-ahead size of sequential scans of files that are not mapped.
const READ_AHEAD_BYTES: usize = 1 << 20;
/// Bytes read at once by a point read of one frame.
const POINT_READ_BYTES: usize = 4096;

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
    /// Set once the segment is sealed: its (final) length. The mapping is made on first
    /// sequential read, not at sealing, so that opening a log of many segments costs no
    /// map per segment.
    sealed_len: std::sync::OnceLock<u64>,
    /// The format version its header declares: set when the header is checked (or the
    /// segment created).
    version: std::sync::OnceLock<u32>,
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
}

impl std::ops::Deref for FrameBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.bytes {
            FrameStorage::Mapped(m, start, end) => m.get(*start..*end).unwrap_or_default(),
            FrameStorage::Owned(v) => v,
        }
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
            sealed_len: std::sync::OnceLock::new(),
            version: std::sync::OnceLock::from(format::FORMAT_VERSION),
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
            sealed_len: std::sync::OnceLock::new(),
            version: std::sync::OnceLock::new(),
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
        if header.kind != self.kind {
            return Ok(Err(DecodeError::Invalid("segment kind")));
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
        let mut pending: Option<(u64, u64)> = None;
        for &offset in offsets {
            let start = offset - offset % page;
            let end = offset.saturating_add(page);
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

    /// The mapping of a sealed segment, made on first use; `None` for the active segment
    /// (or if mapping fails, in which case reads use `pread`).
    fn mapping(&self) -> Option<Mapping> {
        if !self.is_sealed() {
            return None;
        }
        if let Some(m) = self.map.read().as_ref() {
            return Some(m.clone());
        }
        let mut map = self.map.write();
        if map.is_none() {
            *map = self.file.map().ok();
        }
        map.clone()
    }

    /// A sequential reader over the file (mapping when sealed, read-ahead buffer if not).
    pub fn reader(self: &Arc<Self>) -> SegmentReader {
        SegmentReader {
            segment: Arc::clone(self),
            map: self.mapping(),
            buf: Vec::new(),
            buf_offset: 0,
            read_ahead: READ_AHEAD_BYTES,
        }
    }

    /// A reader for a few reads at scattered places (a search): it reads a page at a time
    /// and, like [`Segment::read_frame`], never through the mapping.
    pub fn point_reader(self: &Arc<Self>) -> SegmentReader {
        SegmentReader {
            segment: Arc::clone(self),
            map: None,
            buf: Vec::new(),
            buf_offset: 0,
            read_ahead: POINT_READ_BYTES,
        }
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
        SegmentReader {
            segment: Arc::clone(self),
            map: None,
            buf: Vec::new(),
            buf_offset: 0,
            read_ahead: POINT_READ_BYTES,
        }
        .frame_at(position, limit)
    }
}

/// Sequential access to a segment's bytes.
#[derive(Debug)]
pub struct SegmentReader {
    segment: Arc<Segment>,
    map: Option<Mapping>,
    buf: Vec<u8>,
    buf_offset: u64,
    /// Bytes read at once when the buffer misses; 0 reads exactly what is asked.
    read_ahead: usize,
}

impl SegmentReader {
    /// `len` bytes at file `offset`, or fewer at end of file: borrowed from the mapping, or
    /// from the reader's buffer, which is refilled (at least `read_ahead` bytes) on a miss.
    /// `len` bytes at file `offset` (fewer at the end of the file), read ahead up to
    /// `limit` at most: a reader of the log's end (a subscriber woken for one new frame)
    /// reads and buffers what it may see, not a whole read-ahead window of zeros.
    fn bytes_at(&mut self, offset: u64, len: usize, limit: u64) -> Result<&[u8]> {
        if let Some(m) = &self.map {
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
        let map = self.map.clone();
        let (header, bytes) = match self.try_frame_ref_at(offset, limit)? {
            Ok(found) => found,
            Err(e) => return Ok(Err(e)),
        };
        let bytes = match map {
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
            buf: Vec::new(),
            buf_offset: 0,
            read_ahead: POINT_READ_BYTES,
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
