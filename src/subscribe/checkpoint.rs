//! Named consumer checkpoints: small files `DIR/checkpoints/NAME`, replaced atomically
//! (temp file → sync → rename → sync the directory), so a crash leaves the old checkpoint
//! or the new one, and a checkpoint costs the same few bytes however often it is saved.
//!
//! They are the consumers' state, not the store's data: any process that can write the
//! directory may save one, a read-only handle following a live writer included (that is
//! how `streamlog tail --checkpoint` resumes beside an application that writes). Saving
//! one is the only write a read-only handle makes, and only when asked.
//!
//! File layout (24 bytes, little-endian): magic `SLCK`, format version (u32), position
//! (u64), skip (u32), CRC-32 of the 20 bytes before it (u32).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format;
use crate::io::Storage;
use crate::store::{Position, ResumeToken, Store};

/// Directory of the checkpoint files in a store.
pub const CHECKPOINTS_DIR: &str = "checkpoints";
const MAGIC: [u8; 4] = *b"SLCK";
const VERSION: u32 = 1;
const LEN: usize = 24;
/// Longest checkpoint name.
pub const MAX_CHECKPOINT_NAME_BYTES: usize = 128;

fn encode(token: ResumeToken) -> Vec<u8> {
    let mut b = Vec::with_capacity(LEN);
    b.extend_from_slice(&MAGIC);
    b.extend_from_slice(&VERSION.to_le_bytes());
    b.extend_from_slice(&token.position.0.to_le_bytes());
    b.extend_from_slice(&token.skip.to_le_bytes());
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

fn decode(b: &[u8]) -> std::result::Result<ResumeToken, String> {
    let mut r = format::le::Reader::new(b);
    let magic: [u8; 4] = r.array().map_err(|e| e.to_string())?;
    let version = r.u32().map_err(|e| e.to_string())?;
    let position = r.u64().map_err(|e| e.to_string())?;
    let skip = r.u32().map_err(|e| e.to_string())?;
    let crc = r.u32().map_err(|e| e.to_string())?;
    if magic != MAGIC {
        return Err("not a checkpoint file (bad magic)".into());
    }
    if crc != crc32fast::hash(b.get(..LEN - 4).unwrap_or_default()) {
        return Err("checksum mismatch".into());
    }
    if version != VERSION {
        return Err(format!(
            "format version {version}, this build reads {VERSION}"
        ));
    }
    Ok(ResumeToken {
        position: Position(position),
        skip,
    })
}

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_CHECKPOINT_NAME_BYTES
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "a checkpoint name is 1..={MAX_CHECKPOINT_NAME_BYTES} of A-Z a-z 0-9 . _ - and does \
             not start with '.', not {name:?}"
        )))
    }
}

fn io_err(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let context = format!("{what} {}", path.display());
    move |e| Error::io(context, e)
}

impl Store {
    fn checkpoint_path(&self, name: &str) -> Result<(PathBuf, PathBuf)> {
        check_name(name)?;
        let dir = self.path().join(CHECKPOINTS_DIR);
        Ok((dir.join(name), dir))
    }

    /// The resume token last saved under `name`, if any.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a name outside `A-Z a-z 0-9 . _ -` (1 to 128 bytes,
    /// not starting with `.`); [`Error::Corrupted`] when the file is damaged;
    /// [`Error::Io`] on read failure.
    pub fn checkpoint(&self, name: &str) -> Result<Option<ResumeToken>> {
        let (path, _) = self.checkpoint_path(name)?;
        let storage = self.options().storage.as_ref();
        let file = match storage.open_read_only(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("open", &path)(e)),
        };
        let mut buf = [0u8; LEN];
        let n = file.read_at(&mut buf, 0).map_err(io_err("read", &path))?;
        decode(buf.get(..n).unwrap_or_default())
            .map(Some)
            .map_err(|reason| Error::corrupted(&path, 0, reason))
    }

    /// Saves `token` under `name`, durably and atomically: when this returns, a crash
    /// leaves this token (and before, the previous one).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad name (see [`Store::checkpoint`]); [`Error::Io`]
    /// when the file cannot be written (a read-only handle needs write access to the
    /// store's `checkpoints` directory, or to the store's directory to create it).
    pub fn save_checkpoint(&self, name: &str, token: ResumeToken) -> Result<()> {
        let (path, dir) = self.checkpoint_path(name)?;
        let storage: &dyn Storage = self.options().storage.as_ref();
        crate::io::create_dir_durably(storage, &dir).map_err(io_err("create", &dir))?;
        let tmp = dir.join(format!(".{name}.tmp"));
        if storage.exists(&tmp).map_err(io_err("stat", &tmp))? {
            storage.remove(&tmp).map_err(io_err("remove", &tmp))?;
        }
        let file = storage.create(&tmp).map_err(io_err("create", &tmp))?;
        file.write_at(&encode(token), 0)
            .map_err(io_err("write", &tmp))?;
        file.sync_data().map_err(io_err("sync", &tmp))?;
        storage
            .rename(&tmp, &path)
            .map_err(io_err("rename", &tmp))?;
        storage.sync_dir(&dir).map_err(io_err("sync", &dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_files_round_trip_and_refuse_damage() {
        let t = ResumeToken {
            position: Position(4096),
            skip: 3,
        };
        let b = encode(t);
        assert_eq!(b.len(), LEN);
        assert_eq!(decode(&b), Ok(t));
        for i in 0..b.len() * 8 {
            let mut d = b.clone();
            if let Some(byte) = d.get_mut(i / 8) {
                *byte ^= 1 << (i % 8);
            }
            assert!(decode(&d).is_err(), "flip of bit {i} went unnoticed");
        }
        assert!(decode(&b[..10]).is_err());
    }

    #[test]
    fn checkpoint_names_are_plain_file_names() {
        for good in ["projector", "orders.v2", "a-b_c", "0"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", ".hidden", "a/b", "..", "a b", &"x".repeat(129)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
