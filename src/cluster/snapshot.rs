//! Raft snapshots of the state machine: the store's segment files, whole, up to the end
//! that matches the applied log id.
//!
//! **Why the files and not a streamed copy of the events.** A copy of the segment bytes
//! is the store exactly: the same positions (so `$all` positions and resume tokens agree
//! with the leader's), the same commit times, the same frames for metadata and
//! tombstones, with no append to run per event on the receiver. The index is derived data
//! and is rebuilt by the receiving store when it opens; aggregate snapshots are a cache
//! and are not shipped. The cost: a receiver's open reindexes the whole log.
//!
//! Archive layout (little-endian): magic `SLRAFTSN` (8 bytes), version (u32, `1`), file
//! count (u32); then per file: name length (u16), name (UTF-8, `segments/<20 digits>.seg`),
//! byte count (u64), CRC-32 of the bytes (u32), the bytes.

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::segment::parse_segment_file_name;

const MAGIC: [u8; 8] = *b"SLRAFTSN";
const VERSION: u32 = 1;
/// Copy buffer size.
const CHUNK_BYTES: usize = 1 << 20;

fn io_err(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::io(format!("{what} {}", path.display()), e)
}

/// Writes the archive of the store in `store_dir` up to log position `head` to `path`
/// (through a temporary file, synced and renamed: `path` is whole or absent).
///
/// # Errors
/// I/O errors.
pub(crate) fn write_archive(store_dir: &Path, head: u64, path: &Path) -> Result<()> {
    let segments_dir = store_dir.join(crate::SEGMENTS_DIR);
    let mut files: Vec<(u64, String)> = fs::read_dir(&segments_dir)
        .map_err(|e| io_err("list", &segments_dir, e))?
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().to_string_lossy().into_owned();
            parse_segment_file_name(&name).map(|base| (base, name))
        })
        .filter(|(base, _)| *base < head)
        .collect();
    files.sort_unstable();
    let tmp = path.with_extension("tmp");
    let out = File::create(&tmp).map_err(|e| io_err("create", &tmp, e))?;
    let mut w = BufWriter::new(out);
    let write =
        |w: &mut BufWriter<File>, b: &[u8]| w.write_all(b).map_err(|e| io_err("write", &tmp, e));
    write(&mut w, &MAGIC)?;
    write(&mut w, &VERSION.to_le_bytes())?;
    write(
        &mut w,
        &u32::try_from(files.len()).unwrap_or(u32::MAX).to_le_bytes(),
    )?;
    let mut buf = vec![0u8; CHUNK_BYTES];
    for (base, name) in files {
        let src_path = segments_dir.join(&name);
        let src = File::open(&src_path).map_err(|e| io_err("open", &src_path, e))?;
        let file_len = src
            .metadata()
            .map_err(|e| io_err("stat", &src_path, e))?
            .len();
        let len = file_len.min(head.saturating_sub(base));
        // The CRC comes before the bytes: one pass to compute it, one to copy.
        let crc = crc_of(&src, len, &mut buf, &src_path)?;
        let rel = format!("{}/{name}", crate::SEGMENTS_DIR);
        write(
            &mut w,
            &u16::try_from(rel.len()).unwrap_or(u16::MAX).to_le_bytes(),
        )?;
        write(&mut w, rel.as_bytes())?;
        write(&mut w, &len.to_le_bytes())?;
        write(&mut w, &crc.to_le_bytes())?;
        copy_prefix(&src, len, &mut buf, &src_path, |chunk| write(&mut w, chunk))?;
    }
    let out = w
        .into_inner()
        .map_err(|e| io_err("write", &tmp, e.into_error()))?;
    out.sync_data().map_err(|e| io_err("sync", &tmp, e))?;
    drop(out);
    fs::rename(&tmp, path).map_err(|e| io_err("rename", &tmp, e))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

fn crc_of(src: &File, len: u64, buf: &mut [u8], path: &Path) -> Result<u32> {
    let mut hasher = crc32fast::Hasher::new();
    copy_prefix(src, len, buf, path, |chunk| {
        hasher.update(chunk);
        Ok(())
    })?;
    Ok(hasher.finalize())
}

/// Hands the first `len` bytes of `src` to `sink`, a chunk at a time.
fn copy_prefix(
    src: &File,
    len: u64,
    buf: &mut [u8],
    path: &Path,
    mut sink: impl FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let mut done = 0u64;
    while done < len {
        let want = usize::try_from(len - done)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let chunk = buf.get_mut(..want).unwrap_or_default();
        src.read_exact_at(chunk, done)
            .map_err(|e| io_err("read", path, e))?;
        sink(chunk)?;
        done += want as u64;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err("sync", dir, e))
}

/// Saves a received snapshot (the handle openraft wrote it through) at `path`, synced.
///
/// # Errors
/// I/O errors.
pub(crate) async fn save_received(mut file: tokio::fs::File, path: &Path) -> Result<()> {
    use tokio::io::{AsyncSeekExt, AsyncWriteExt};
    let ctx = |e| io_err("save snapshot", path, e);
    file.flush().await.map_err(ctx)?;
    file.seek(std::io::SeekFrom::Start(0)).await.map_err(ctx)?;
    let tmp = path.with_extension("tmp");
    let mut out = tokio::fs::File::create(&tmp).await.map_err(ctx)?;
    tokio::io::copy(&mut file, &mut out).await.map_err(ctx)?;
    out.flush().await.map_err(ctx)?;
    out.sync_data().await.map_err(ctx)?;
    drop(out);
    tokio::fs::rename(&tmp, path).await.map_err(ctx)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Unpacks the archive at `path` into a new store directory `dir` (created; every file and
/// directory synced before this returns).
///
/// # Errors
/// [`Error::Corrupted`] when the archive does not check (magic, version, names, CRCs,
/// length); I/O errors.
pub(crate) fn unpack_archive(path: &Path, dir: &Path) -> Result<()> {
    let bad = |offset: u64, reason: String| Error::corrupted(path, offset, reason);
    let file = File::open(path).map_err(|e| io_err("open", path, e))?;
    let total = file.metadata().map_err(|e| io_err("stat", path, e))?.len();
    let mut r = BufReader::with_capacity(CHUNK_BYTES, file);
    let mut at = 0u64;
    let read = |r: &mut BufReader<File>, buf: &mut [u8], at: &mut u64| -> Result<()> {
        r.read_exact(buf)
            .map_err(|_| bad(*at, "snapshot archive ends early".into()))?;
        *at += buf.len() as u64;
        Ok(())
    };
    let mut head = [0u8; 16];
    read(&mut r, &mut head, &mut at)?;
    if head.get(..8) != Some(&MAGIC[..]) {
        return Err(bad(0, "not a snapshot archive (bad magic)".into()));
    }
    let le32 = |b: &[u8]| b.try_into().map(u32::from_le_bytes).unwrap_or(u32::MAX);
    let version = le32(head.get(8..12).unwrap_or_default());
    if version != VERSION {
        return Err(bad(8, format!("snapshot archive version {version}")));
    }
    let count = le32(head.get(12..16).unwrap_or_default());
    let segments_dir = dir.join(crate::SEGMENTS_DIR);
    fs::create_dir_all(&segments_dir).map_err(|e| io_err("create", &segments_dir, e))?;
    let mut buf = vec![0u8; CHUNK_BYTES];
    for _ in 0..count {
        let mut len2 = [0u8; 2];
        read(&mut r, &mut len2, &mut at)?;
        let mut name = vec![0u8; usize::from(u16::from_le_bytes(len2))];
        read(&mut r, &mut name, &mut at)?;
        let name = String::from_utf8(name).map_err(|_| bad(at, "file name not UTF-8".into()))?;
        let file_name = name
            .strip_prefix(crate::SEGMENTS_DIR)
            .and_then(|n| n.strip_prefix('/'))
            .filter(|n| parse_segment_file_name(n).is_some())
            .ok_or_else(|| bad(at, format!("unexpected file {name:?}")))?;
        let mut fixed = [0u8; 12];
        read(&mut r, &mut fixed, &mut at)?;
        let len = fixed
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .unwrap_or(u64::MAX);
        let crc = le32(fixed.get(8..12).unwrap_or_default());
        if len > total.saturating_sub(at) {
            return Err(bad(
                at,
                format!("{name} claims {len} bytes past the archive's end"),
            ));
        }
        let out_path: PathBuf = segments_dir.join(file_name);
        let mut out = File::create(&out_path).map_err(|e| io_err("create", &out_path, e))?;
        let mut hasher = crc32fast::Hasher::new();
        let mut left = len;
        while left > 0 {
            let want = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
            let chunk = buf.get_mut(..want).unwrap_or_default();
            read(&mut r, chunk, &mut at)?;
            hasher.update(chunk);
            out.write_all(chunk)
                .map_err(|e| io_err("write", &out_path, e))?;
            left -= want as u64;
        }
        if hasher.finalize() != crc {
            return Err(bad(at, format!("{name}: checksum mismatch")));
        }
        out.sync_data().map_err(|e| io_err("sync", &out_path, e))?;
    }
    if at != total {
        return Err(bad(at, "bytes after the last file".into()));
    }
    sync_dir(&segments_dir)?;
    sync_dir(dir)?;
    sync_dir(dir.parent().unwrap_or(Path::new(".")))
}
