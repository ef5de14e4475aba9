//! Small state files replaced atomically: write a temporary file, sync it, rename it over
//! the old one, sync the directory. A reader finds the old contents or the new, never a
//! mix; a file that does not check (magic, length, CRC) is corruption, never a default.
//!
//! Layout: magic `SLRAFTMT` (8 bytes), body length (u32 LE), CRC-32 of the body (u32 LE),
//! body (JSON).

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::io::Storage;

const MAGIC: [u8; 8] = *b"SLRAFTMT";
const HEADER_LEN: usize = 16;
/// Larger state files are refused as damaged (they hold a vote, a few log ids, a
/// membership).
const MAX_BODY_BYTES: usize = 16 << 20;

/// Replaces `dir/name` with `value`, durably, before returning.
///
/// # Errors
/// I/O errors; serialization errors as [`Error::InvalidArgument`].
pub(crate) fn write_atomic<T: Serialize>(
    storage: &dyn Storage,
    dir: &Path,
    name: &str,
    value: &T,
) -> Result<()> {
    let body = serde_json::to_vec(value)
        .map_err(|e| Error::InvalidArgument(format!("encode {name}: {e}")))?;
    let mut bytes = Vec::with_capacity(HEADER_LEN + body.len());
    bytes.extend_from_slice(&MAGIC);
    bytes.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_le_bytes());
    bytes.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    bytes.extend_from_slice(&body);
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let ctx = |what: &str, p: &Path| format!("{what} {}", p.display());
    if storage
        .exists(&tmp)
        .map_err(|e| Error::io(ctx("stat", &tmp), e))?
    {
        storage
            .remove(&tmp)
            .map_err(|e| Error::io(ctx("remove", &tmp), e))?;
    }
    let file = storage
        .create(&tmp)
        .map_err(|e| Error::io(ctx("create", &tmp), e))?;
    file.write_at(&bytes, 0)
        .map_err(|e| Error::io(ctx("write", &tmp), e))?;
    file.sync_data()
        .map_err(|e| Error::io(ctx("sync", &tmp), e))?;
    drop(file);
    storage
        .rename(&tmp, &path)
        .map_err(|e| Error::io(ctx("rename", &tmp), e))?;
    storage
        .sync_dir(dir)
        .map_err(|e| Error::io(ctx("sync", dir), e))?;
    Ok(())
}

/// Reads `dir/name`, `None` when it does not exist.
///
/// # Errors
/// [`Error::Corrupted`] when the file does not check or decode; I/O errors.
pub(crate) fn read<T: DeserializeOwned>(
    storage: &dyn Storage,
    dir: &Path,
    name: &str,
) -> Result<Option<T>> {
    let path = dir.join(name);
    if !storage
        .exists(&path)
        .map_err(|e| Error::io(format!("stat {}", path.display()), e))?
    {
        return Ok(None);
    }
    let file = storage
        .open_read_only(&path)
        .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
    let len = file
        .len()
        .map_err(|e| Error::io(format!("stat {}", path.display()), e))?;
    let len = usize::try_from(len)
        .ok()
        .filter(|&l| l <= HEADER_LEN + MAX_BODY_BYTES)
        .ok_or_else(|| Error::corrupted(&path, 0, format!("{len} bytes is too long")))?;
    let mut bytes = vec![0u8; len];
    let mut read = 0;
    while read < len {
        let n = file
            .read_at(bytes.get_mut(read..).unwrap_or_default(), read as u64)
            .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
        if n == 0 {
            break;
        }
        read += n;
    }
    bytes.truncate(read);
    let bad = |reason: &str| Error::corrupted(&path, 0, reason.to_string());
    if bytes.get(..8) != Some(&MAGIC[..]) {
        return Err(bad("bad magic"));
    }
    let body_len = bytes
        .get(8..12)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_le_bytes)
        .ok_or_else(|| bad("short header"))?;
    let crc = bytes
        .get(12..16)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_le_bytes)
        .ok_or_else(|| bad("short header"))?;
    let body = usize::try_from(body_len)
        .ok()
        .and_then(|l| bytes.get(HEADER_LEN..HEADER_LEN.checked_add(l)?))
        .ok_or_else(|| bad("body shorter than its length"))?;
    if crc32fast::hash(body) != crc {
        return Err(bad("checksum mismatch"));
    }
    serde_json::from_slice(body)
        .map(Some)
        .map_err(|e| bad(&format!("does not decode: {e}")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::io::FsStorage;

    #[test]
    fn a_state_file_reads_back_and_a_damaged_one_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FsStorage;
        assert_eq!(read::<Vec<u64>>(&storage, dir.path(), "s").unwrap(), None);
        write_atomic(&storage, dir.path(), "s", &vec![1u64, 2]).unwrap();
        write_atomic(&storage, dir.path(), "s", &vec![3u64]).unwrap();
        assert_eq!(
            read::<Vec<u64>>(&storage, dir.path(), "s").unwrap(),
            Some(vec![3])
        );
        let path = dir.path().join("s");
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            read::<Vec<u64>>(&storage, dir.path(), "s"),
            Err(Error::Corrupted { .. })
        ));
    }
}
