//! Immutable sorted index table files (`index/<id>.idx`), read through a mapping.
//!
//! Layout (all little-endian; see docs/format.md):
//! header (16 bytes) · blocks of up to 128 entries of 40 bytes (32 in version 1, which has
//! no commit times), each block followed by the CRC of its entries · fences (the first key
//! of each block, 24 bytes each) · footer (48 bytes). Entries are sorted by
//! `(stream_hash, first_version, position)`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::format::DecodeError;
use crate::format::le::{self, Reader};
use crate::io::{Mapping, Storage};

/// Magic at the start of an index table.
pub const TABLE_MAGIC: [u8; 8] = *b"SLOGIDX\0";
/// Magic in the footer of an index table.
pub const TABLE_FOOTER_MAGIC: [u8; 8] = *b"SLIDXEND";
/// Format version of the index tables written: 2 (entries carry their append's commit
/// time). Version 1 tables are still read; their entries have no commit time.
pub const TABLE_VERSION: u32 = 2;
/// Bytes of the table header.
pub const TABLE_HEADER_LEN: u64 = 16;
/// Bytes of one entry (table version 2).
pub const ENTRY_LEN: usize = 40;
/// Bytes of one entry of a version 1 table (no commit time).
pub const ENTRY_LEN_V1: usize = 32;
/// Entries per full block.
pub const BLOCK_ENTRIES: usize = 128;
/// The commit time stored for an entry that has none recorded (an entry carried over from
/// a version 1 table, or a snapshot's): searches read it from the frame instead. A real
/// commit time of this value would only cost such a read.
pub const NO_COMMIT_TIME: i64 = i64::MAX;

/// Bytes of a full block of entries of `entry_len` bytes, with their CRC.
const fn block_len(entry_len: usize) -> u64 {
    (BLOCK_ENTRIES * entry_len + 4) as u64
}
/// Bytes of one fence.
pub const FENCE_LEN: usize = 24;
/// Bytes of the footer.
pub const FOOTER_LEN: u64 = 48;

/// The version of the last of `count` events starting at `first_version` (an append has
/// at least one event; for `count` 0 this is `first_version`).
pub fn last_version(first_version: u64, count: u32) -> u64 {
    first_version
        .saturating_add(u64::from(count))
        .saturating_sub(1)
        .max(first_version)
}

/// One index entry: an append (frame) of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Entry {
    /// The stream hash ([`super::stream_hash`]).
    pub hash: u64,
    /// Version of the append's first event.
    pub first_version: u64,
    /// Position of the frame.
    pub position: u64,
    /// Events in the append.
    pub count: u32,
    /// A second, independent hash of the stream name ([`super::stream_check`]) that lets
    /// lookups skip the entries of a colliding stream without reading its frame.
    pub check: u32,
    /// When the append was committed, in microseconds since the Unix epoch (`i64::MIN` for
    /// a frame of format 1, which has none and counts as committed before every later
    /// one); `None` when not recorded (version 1 tables, snapshot entries).
    pub committed_at_us: Option<i64>,
}

impl Entry {
    /// The version of the append's last event.
    pub fn last_version(&self) -> u64 {
        last_version(self.first_version, self.count)
    }

    /// Whether the append holds `version`.
    pub fn holds(&self, version: u64) -> bool {
        version >= self.first_version && version <= self.last_version()
    }

    /// The sort key.
    pub fn key(&self) -> (u64, u64, u64) {
        (self.hash, self.first_version, self.position)
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.hash.to_le_bytes());
        out.extend_from_slice(&self.first_version.to_le_bytes());
        out.extend_from_slice(&self.position.to_le_bytes());
        out.extend_from_slice(&self.count.to_le_bytes());
        out.extend_from_slice(&self.check.to_le_bytes());
        out.extend_from_slice(&self.committed_at_us.unwrap_or(NO_COMMIT_TIME).to_le_bytes());
    }

    /// Decodes an entry of `entry_len` bytes ([`ENTRY_LEN`], or [`ENTRY_LEN_V1`] without
    /// a commit time).
    fn decode(b: &[u8], entry_len: usize) -> std::result::Result<Entry, DecodeError> {
        let mut r = Reader::new(b);
        Ok(Entry {
            hash: r.u64()?,
            first_version: r.u64()?,
            position: r.u64()?,
            count: r.u32()?,
            check: r.u32()?,
            committed_at_us: if entry_len == ENTRY_LEN {
                Some(r.i64()?).filter(|&t| t != NO_COMMIT_TIME)
            } else {
                None
            },
        })
    }
}

/// File name of table `id`.
pub fn table_file_name(id: u64) -> String {
    format!("{id:020}.idx")
}

/// Parses a table file name back into its id.
pub fn parse_table_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".idx")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Writes a table holding `entries` (sorted, as produced by a memtable or a merge) to
/// `dir/<id>.idx`: create, write, sync. The caller syncs the directory (by writing the
/// manifest that names it).
///
/// # Errors
/// I/O errors.
pub fn write_table(
    storage: &dyn Storage,
    dir: &Path,
    id: u64,
    entries: impl Iterator<Item = Entry>,
) -> Result<PathBuf> {
    let path = dir.join(table_file_name(id));
    let ctx = |what: &str| format!("{what} index table {}", path.display());
    let file = match storage.create(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            // Ids come from the manifest's next id, which no live table has: a file by this
            // name is debris of a crash (a table written, its manifest not).
            storage
                .remove(&path)
                .map_err(|e| Error::io(ctx("remove stale"), e))?;
            storage.create(&path)
        }
        other => other,
    }
    .map_err(|e| Error::io(ctx("create"), e))?;
    let mut buf = Vec::with_capacity(1 << 20);
    let mut written = 0u64;
    buf.extend_from_slice(&TABLE_MAGIC);
    buf.extend_from_slice(&TABLE_VERSION.to_le_bytes());
    buf.extend_from_slice(&0u32.to_le_bytes());
    let mut fences = Vec::new();
    let mut count = 0u64;
    let mut blocks = 0u64;
    let mut block_start = buf.len();
    let mut in_block = 0usize;
    let mut last_key = None;
    let flush = |buf: &mut Vec<u8>, written: &mut u64| -> Result<()> {
        file.write_at(buf, *written)
            .map_err(|e| Error::io(ctx("write"), e))?;
        *written = written.saturating_add(buf.len() as u64);
        buf.clear();
        Ok(())
    };
    for e in entries {
        debug_assert!(
            last_key < Some(e.key()),
            "index table entries must be sorted and unique"
        );
        last_key = Some(e.key());
        if in_block == 0 {
            fences.extend_from_slice(&e.hash.to_le_bytes());
            fences.extend_from_slice(&e.first_version.to_le_bytes());
            fences.extend_from_slice(&e.position.to_le_bytes());
            block_start = buf.len();
            blocks += 1;
        }
        e.encode(&mut buf);
        in_block += 1;
        count += 1;
        if in_block == BLOCK_ENTRIES {
            let crc = crc32fast::hash(buf.get(block_start..).unwrap_or_default());
            buf.extend_from_slice(&crc.to_le_bytes());
            in_block = 0;
            if buf.len() >= 1 << 20 {
                flush(&mut buf, &mut written)?;
                block_start = 0;
            }
        }
    }
    if in_block > 0 {
        let crc = crc32fast::hash(buf.get(block_start..).unwrap_or_default());
        buf.extend_from_slice(&crc.to_le_bytes());
    }
    let fences_offset = written.saturating_add(buf.len() as u64);
    let fences_crc = crc32fast::hash(&fences);
    buf.extend_from_slice(&fences);
    let footer_start = buf.len();
    buf.extend_from_slice(&count.to_le_bytes());
    buf.extend_from_slice(&blocks.to_le_bytes());
    buf.extend_from_slice(&fences_offset.to_le_bytes());
    buf.extend_from_slice(&fences_crc.to_le_bytes());
    buf.extend_from_slice(&0u32.to_le_bytes());
    buf.extend_from_slice(&TABLE_FOOTER_MAGIC);
    let crc = crc32fast::hash(buf.get(footer_start..).unwrap_or_default());
    buf.extend_from_slice(&crc.to_le_bytes());
    buf.extend_from_slice(&0u32.to_le_bytes());
    flush(&mut buf, &mut written)?;
    file.sync_data().map_err(|e| Error::io(ctx("sync"), e))?;
    Ok(path)
}

/// An open, immutable index table.
#[derive(Debug)]
pub struct Table {
    id: u64,
    path: PathBuf,
    map: Mapping,
    entries: u64,
    blocks: u64,
    fences_offset: u64,
    /// Bytes of one entry: [`ENTRY_LEN`], or [`ENTRY_LEN_V1`] for a version 1 table.
    entry_len: usize,
    /// One bit per block whose CRC has been checked (the file never changes once
    /// written): lookups pay for a block's CRC once per open, not on every read.
    verified: Vec<AtomicU64>,
}

impl Table {
    /// Opens and checks a table: header, footer, fences and the file's length. Block CRCs
    /// are checked when a block is read.
    ///
    /// # Errors
    /// [`Error::UnsupportedFormat`] when the header declares a newer table version;
    /// [`Error::Corrupted`] when a check fails; I/O errors.
    pub fn open(storage: &dyn Storage, dir: &Path, id: u64) -> Result<Table> {
        let path = dir.join(table_file_name(id));
        let file = storage
            .open_read_only(&path)
            .map_err(|e| Error::io(format!("open index table {}", path.display()), e))?;
        let map = file
            .map()
            .map_err(|e| Error::io(format!("map index table {}", path.display()), e))?;
        let bad = |offset: u64, reason: &str| Error::corrupted(&path, offset, reason.to_string());
        let len = map.len() as u64;
        if len < TABLE_HEADER_LEN + FOOTER_LEN {
            return Err(bad(0, "index table too short"));
        }
        let mut header = Reader::new(&map);
        if header.array() != Ok(TABLE_MAGIC) {
            return Err(bad(0, "bad index table magic"));
        }
        let entry_len = match header.u32() {
            Ok(TABLE_VERSION) => ENTRY_LEN,
            Ok(1) => ENTRY_LEN_V1,
            // Checked before anything a newer layout may have changed (the footer).
            Ok(found) if found > TABLE_VERSION => {
                return Err(Error::UnsupportedFormat {
                    file: path.clone(),
                    found,
                    supported: TABLE_VERSION,
                });
            }
            _ => return Err(bad(8, "unsupported index table version")),
        };
        if header.u32() != Ok(0) {
            return Err(bad(12, "index table header reserved bytes"));
        }
        let f = len - FOOTER_LEN;
        let Footer {
            entries,
            blocks,
            fences_offset,
            fences_crc,
        } = Footer::decode(map.get(f as usize..).unwrap_or_default())
            .map_err(|e| bad(f, &format!("bad index table footer: {e}")))?;
        // Counts come from the file: bound them by its length before any arithmetic, so
        // that a forged footer is an error, never an overflow.
        if entries > len / entry_len as u64 || blocks > len / FENCE_LEN as u64 {
            return Err(bad(f, "index table footer counts exceed the file's length"));
        }
        let expect_blocks = entries.div_ceil(BLOCK_ENTRIES as u64);
        let last = entries - (expect_blocks.saturating_sub(1)) * BLOCK_ENTRIES as u64;
        let expect_fences = if entries == 0 {
            TABLE_HEADER_LEN
        } else {
            TABLE_HEADER_LEN
                + (expect_blocks - 1) * block_len(entry_len)
                + last * entry_len as u64
                + 4
        };
        if blocks != expect_blocks
            || fences_offset != expect_fences
            || fences_offset.checked_add(blocks * FENCE_LEN as u64) != Some(f)
        {
            return Err(bad(
                f,
                "index table footer does not match the file's length",
            ));
        }
        let fences = map
            .get(fences_offset as usize..f as usize)
            .unwrap_or_default();
        if crc32fast::hash(fences) != fences_crc {
            return Err(bad(fences_offset, "index table fences checksum mismatch"));
        }
        Ok(Table {
            id,
            path,
            map,
            entries,
            blocks,
            fences_offset,
            entry_len,
            verified: (0..blocks.div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect(),
        })
    }

    /// The table's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The table's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of entries.
    pub fn len(&self) -> u64 {
        self.entries
    }

    /// Whether the table has no entries.
    #[cfg_attr(not(feature = "internals"), allow(dead_code))]
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    fn fence(&self, block: u64) -> (u64, u64, u64) {
        let at = (self.fences_offset + block * FENCE_LEN as u64) as usize;
        let mut r = Reader::at(&self.map, at);
        // `open` checked that the fences lie within the file, so these reads succeed.
        match (r.u64(), r.u64(), r.u64()) {
            (Ok(hash), Ok(first_version), Ok(position)) => (hash, first_version, position),
            _ => (0, 0, 0),
        }
    }

    /// The entries of `block`, after checking its CRC.
    fn block(&self, block: u64) -> Result<&[u8]> {
        let start = TABLE_HEADER_LEN + block * block_len(self.entry_len);
        let n = if block + 1 == self.blocks {
            self.entries - block * BLOCK_ENTRIES as u64
        } else {
            BLOCK_ENTRIES as u64
        };
        let end = start + n * self.entry_len as u64;
        let bytes = self
            .map
            .get(start as usize..end as usize)
            .unwrap_or_default();
        let (word, bit) = ((block / 64) as usize, 1u64 << (block % 64));
        let checked = self
            .verified
            .get(word)
            .is_some_and(|w| w.load(Ordering::Relaxed) & bit != 0);
        if !checked {
            if le::u32_at(&self.map, end as usize) != Ok(crc32fast::hash(bytes)) {
                return Err(Error::corrupted(
                    &self.path,
                    start,
                    "index table block checksum mismatch",
                ));
            }
            if let Some(w) = self.verified.get(word) {
                w.fetch_or(bit, Ordering::Relaxed);
            }
        }
        Ok(bytes)
    }

    /// The last block whose first key (fence) is at or below `key`; `None` when every
    /// block starts above it (or there are none).
    fn block_at_or_below(&self, key: (u64, u64, u64)) -> Option<u64> {
        let (mut lo, mut hi) = (0u64, self.blocks);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.fence(mid) <= key {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo.checked_sub(1)
    }

    /// Entries with `hash` and a key at or below `(hash, version, u64::MAX)`, greatest
    /// first, passed to `visit` until it returns `false`.
    ///
    /// # Errors
    /// [`Error::Corrupted`] when a block's checksum does not match.
    pub fn floor(
        &self,
        hash: u64,
        version: u64,
        mut visit: impl FnMut(Entry) -> bool,
    ) -> Result<()> {
        if self.blocks == 0 {
            return Ok(());
        }
        let key = (hash, version, u64::MAX);
        let Some(mut block) = self.block_at_or_below(key) else {
            return Ok(());
        };
        loop {
            let bytes = self.block(block)?;
            let entry = |i: usize| block_entry(bytes, i, self.entry_len);
            // The number of entries with a key <= `key`.
            let lo = partition_point(bytes, self.entry_len, |e| e.key() <= key);
            for i in (0..lo).rev() {
                match entry(i) {
                    Some(e) if e.hash == hash => {
                        if !visit(e) {
                            return Ok(());
                        }
                    }
                    _ => return Ok(()),
                }
            }
            match block.checked_sub(1) {
                Some(b) => block = b,
                None => return Ok(()),
            }
        }
    }

    /// Entries with `hash` and a key at or above `(hash, version, position)`, least first,
    /// passed to `visit` until it returns `false`.
    ///
    /// # Errors
    /// [`Error::Corrupted`] when a block's checksum does not match.
    pub fn ceiling(
        &self,
        hash: u64,
        version: u64,
        position: u64,
        mut visit: impl FnMut(Entry) -> bool,
    ) -> Result<()> {
        if self.blocks == 0 {
            return Ok(());
        }
        let key = (hash, version, position);
        // The key, if present, is in the last block whose first key is <= it.
        let mut block = self.block_at_or_below(key).unwrap_or(0);
        loop {
            let bytes = self.block(block)?;
            let entry = |i: usize| block_entry(bytes, i, self.entry_len);
            let n = bytes.len() / self.entry_len;
            // The first entry with a key >= `key`.
            let lo = partition_point(bytes, self.entry_len, |e| e.key() < key);
            for i in lo..n {
                match entry(i) {
                    Some(e) if e.hash == hash => {
                        if !visit(e) {
                            return Ok(());
                        }
                    }
                    _ => return Ok(()),
                }
            }
            block += 1;
            if block >= self.blocks {
                return Ok(());
            }
        }
    }

    /// Every entry in order (for merges and verification).
    ///
    /// # Errors
    /// [`Error::Corrupted`] when a block's checksum does not match.
    pub fn for_each(&self, mut visit: impl FnMut(Entry) -> Result<()>) -> Result<()> {
        for block in 0..self.blocks {
            for e in self
                .block(block)?
                .chunks_exact(self.entry_len)
                .filter_map(|b| Entry::decode(b, self.entry_len).ok())
            {
                visit(e)?;
            }
        }
        Ok(())
    }

    /// All entries in order, materialized block by block (for merges).
    pub fn iter(&self) -> TableIter<'_> {
        TableIter {
            table: self,
            block: 0,
            buf: Vec::new(),
            at: 0,
            failed: None,
        }
    }
}

/// Entry `i` of a block's bytes (entries of `entry_len` bytes), if it decodes.
fn block_entry(bytes: &[u8], i: usize, entry_len: usize) -> Option<Entry> {
    bytes
        .get(i * entry_len..(i + 1) * entry_len)
        .and_then(|b| Entry::decode(b, entry_len).ok())
}

/// Binary search in a block's bytes, in place: the number of leading entries for which
/// `before` holds (entries are sorted by key; one that does not decode ends the prefix).
fn partition_point(bytes: &[u8], entry_len: usize, before: impl Fn(&Entry) -> bool) -> usize {
    let (mut lo, mut hi) = (0usize, bytes.len() / entry_len);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if block_entry(bytes, mid, entry_len).is_some_and(|e| before(&e)) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// Iterator over a table's entries; a checksum failure ends it and is kept in `failed`.
#[derive(Debug)]
pub struct TableIter<'a> {
    table: &'a Table,
    block: u64,
    buf: Vec<Entry>,
    at: usize,
    /// The error that ended the iteration early, if any.
    pub failed: Option<Error>,
}

impl Iterator for TableIter<'_> {
    type Item = Entry;
    fn next(&mut self) -> Option<Entry> {
        loop {
            if let Some(e) = self.buf.get(self.at) {
                self.at += 1;
                return Some(*e);
            }
            if self.block >= self.table.blocks || self.failed.is_some() {
                return None;
            }
            match self.table.block(self.block) {
                Ok(bytes) => {
                    let entry_len = self.table.entry_len;
                    self.buf = bytes
                        .chunks_exact(entry_len)
                        .filter_map(|b| Entry::decode(b, entry_len).ok())
                        .collect();
                    self.at = 0;
                    self.block += 1;
                }
                Err(e) => {
                    self.failed = Some(e);
                    return None;
                }
            }
        }
    }
}

/// What a table's footer says, once its magic, CRC and last reserved word check.
struct Footer {
    entries: u64,
    blocks: u64,
    fences_offset: u64,
    fences_crc: u32,
}

impl Footer {
    fn decode(footer: &[u8]) -> std::result::Result<Footer, DecodeError> {
        let mut r = Reader::new(footer);
        let entries = r.u64()?;
        let blocks = r.u64()?;
        let fences_offset = r.u64()?;
        let fences_crc = r.u32()?;
        let _reserved = r.u32()?; // covered by the CRC; written as 0
        if r.array() != Ok(TABLE_FOOTER_MAGIC) {
            return Err(DecodeError::BadMagic);
        }
        let stored = r.u32()?;
        let computed = crc32fast::hash(footer.get(..40).unwrap_or_default());
        if stored != computed {
            return Err(DecodeError::ChecksumMismatch { stored, computed });
        }
        if r.u32()? != 0 {
            return Err(DecodeError::Invalid("index table footer reserved bytes"));
        }
        Ok(Footer {
            entries,
            blocks,
            fences_offset,
            fences_crc,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::io::FsStorage;

    fn entries(n: u64) -> Vec<Entry> {
        let mut v: Vec<Entry> = (0..n)
            .map(|i| Entry {
                hash: i % 37,
                first_version: i / 37 * 3,
                position: 1000 + i,
                count: 3,
                check: (i % 37) as u32,
                // Every kind of commit time: recorded, format 1's, not recorded.
                committed_at_us: match i % 3 {
                    0 => Some(1_800_000_000_000_000 + i as i64),
                    1 => Some(i64::MIN),
                    _ => None,
                },
            })
            .collect();
        v.sort();
        v
    }

    /// `entries` as a version 1 table (32-byte entries, no commit time), written by hand.
    fn write_v1_table(dir: &Path, id: u64, entries: &[Entry]) {
        let mut out = Vec::new();
        out.extend_from_slice(&TABLE_MAGIC);
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        let mut fences = Vec::new();
        let chunks: Vec<&[Entry]> = entries.chunks(BLOCK_ENTRIES).collect();
        for block in &chunks {
            let first = block[0];
            for x in [first.hash, first.first_version, first.position] {
                fences.extend_from_slice(&x.to_le_bytes());
            }
            let start = out.len();
            for e in *block {
                let mut b = Vec::new();
                e.encode(&mut b);
                out.extend_from_slice(&b[..ENTRY_LEN_V1]);
            }
            let crc = crc32fast::hash(&out[start..]);
            out.extend_from_slice(&crc.to_le_bytes());
        }
        let fences_offset = out.len() as u64;
        out.extend_from_slice(&fences);
        let footer = out.len();
        out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
        out.extend_from_slice(&(chunks.len() as u64).to_le_bytes());
        out.extend_from_slice(&fences_offset.to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&fences).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&TABLE_FOOTER_MAGIC);
        let crc = crc32fast::hash(&out[footer..]);
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        std::fs::write(dir.join(table_file_name(id)), out).unwrap();
    }

    #[test]
    fn a_version_1_table_reads_with_no_commit_times() {
        let dir = tempfile::tempdir().unwrap();
        for n in [0u64, 1, 128, 300] {
            let all = entries(n);
            write_v1_table(dir.path(), n, &all);
            let t = Table::open(&FsStorage, dir.path(), n).unwrap();
            let want: Vec<Entry> = all
                .iter()
                .map(|e| Entry {
                    committed_at_us: None,
                    ..*e
                })
                .collect();
            assert_eq!(t.iter().collect::<Vec<_>>(), want, "n {n}");
            if let Some(last) = want.last() {
                let mut got = None;
                t.floor(last.hash, last.first_version, |e| {
                    got = Some(e);
                    false
                })
                .unwrap();
                assert_eq!(got.map(|e| e.committed_at_us), Some(None));
                assert!(got.is_some_and(|e| e.key() <= last.key()));
            }
        }
    }

    #[test]
    fn a_written_table_answers_floor_queries_like_a_sorted_vec() {
        let dir = tempfile::tempdir().unwrap();
        for n in [0u64, 1, 127, 128, 129, 1000] {
            let all = entries(n);
            write_table(&FsStorage, dir.path(), n, all.iter().copied()).unwrap();
            let t = Table::open(&FsStorage, dir.path(), n).unwrap();
            assert_eq!(t.len(), n);
            assert_eq!(t.iter().collect::<Vec<_>>(), all);
            for hash in [0u64, 5, 36, 99] {
                for version in [0u64, 2, 3, 50, u64::MAX] {
                    let mut got = Vec::new();
                    t.floor(hash, version, |e| {
                        got.push(e);
                        true
                    })
                    .unwrap();
                    let want: Vec<Entry> = all
                        .iter()
                        .rev()
                        .filter(|e| e.hash == hash && e.first_version <= version)
                        .copied()
                        .collect();
                    assert_eq!(got, want, "n {n} hash {hash} version {version}");
                }
            }
        }
    }

    #[test]
    fn damage_is_detected_at_open_or_at_block_read() {
        let dir = tempfile::tempdir().unwrap();
        write_table(&FsStorage, dir.path(), 1, entries(300).into_iter()).unwrap();
        let path = dir.path().join(table_file_name(1));
        let good = std::fs::read(&path).unwrap();
        for offset in (0..good.len()).step_by(7) {
            let mut bad = good.clone();
            bad[offset] ^= 0x40;
            std::fs::write(&path, &bad).unwrap();
            let detected = match Table::open(&FsStorage, dir.path(), 1) {
                Err(Error::Corrupted { .. }) => true,
                Err(e) => panic!("{e}"),
                Ok(t) => t.for_each(|_| Ok(())).is_err(),
            };
            assert!(detected, "flip at {offset} undetected");
        }
        assert_eq!(parse_table_file_name(&table_file_name(42)), Some(42));
        assert_eq!(parse_table_file_name("42.idx"), None);
    }
}
