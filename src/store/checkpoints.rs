//! Named consumer checkpoints: small files `DIR/checkpoints/NAME`, replaced atomically
//! (temp file → sync → rename → sync the directory), so a crash leaves the old checkpoint
//! or the new one, and a checkpoint costs the same few bytes however often it is saved.
//!
//! They are the consumers' state, not the store's data: any process that can write the
//! directory may save one, a read-only handle following a live writer included (that is
//! how `streamlog tail --checkpoint` resumes beside an application that writes). Saving
//! one is the only write a read-only handle makes, and only when asked.
//!
//! **Atomic append + checkpoint** ([`Store::append_and_checkpoint`]): the checkpoint
//! travels in the append's own frame (a trailer, format 4), so one write commits both.
//! The file is then a mirror of the log: it is rewritten once the frame is durable (by
//! whichever commit makes it so), and at open every trailer in the replayed tail of the
//! log is mirrored again (a crash may have come between the frame's sync and the file's
//! rename). The index maintainer never flushes past a trailer whose mirror has not been
//! written, so the replayed tail always holds every trailer that may still need it.
//!
//! Which save wins: each file records the log position it was saved at
//! (`saved_at`): for a direct [`Store::save_checkpoint`], the end of the log at that
//! moment; for a mirror, the end of the frame that carried it. A mirror is written only
//! over a file saved at an earlier position, so a later direct save is never undone by
//! replaying an older trailer, and an append with a checkpoint made after a direct save
//! replaces it.
//!
//! File layout (32 bytes, little-endian, version 2): magic `SLCK`, version (u32), position
//! (u64), skip (u32), saved at (u64), CRC-32 of the 28 bytes before it (u32). Version 1
//! files (24 bytes: no `saved at`) are read as saved at position 0.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format;
use crate::io::Storage;
use crate::store::{Inner, Position, ResumeToken, Store};

/// Directory of the checkpoint files in a store.
pub const CHECKPOINTS_DIR: &str = "checkpoints";
const MAGIC: [u8; 4] = *b"SLCK";
const VERSION: u32 = 2;
const LEN: usize = 32;
const LEN_V1: usize = 24;
/// Longest checkpoint name.
pub const MAX_CHECKPOINT_NAME_BYTES: usize = format::MAX_CHECKPOINT_NAME_LEN;

/// A checkpoint as a file holds it: the token and the log position it was saved at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Saved {
    pub(super) token: ResumeToken,
    pub(super) saved_at: u64,
}

/// A checkpoint carried by an append whose frame is not durable yet, or whose file has not
/// been written yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PendingCheckpoint {
    pub(super) name: String,
    pub(super) token: ResumeToken,
    /// End of the frame that carries it (its `saved_at` once mirrored).
    pub(super) frame_end: u64,
}

fn encode(saved: Saved) -> Vec<u8> {
    let mut b = Vec::with_capacity(LEN);
    b.extend_from_slice(&MAGIC);
    b.extend_from_slice(&VERSION.to_le_bytes());
    b.extend_from_slice(&saved.token.position.0.to_le_bytes());
    b.extend_from_slice(&saved.token.skip.to_le_bytes());
    b.extend_from_slice(&saved.saved_at.to_le_bytes());
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

fn decode(b: &[u8]) -> std::result::Result<Saved, String> {
    let mut r = format::le::Reader::new(b);
    let magic: [u8; 4] = r.array().map_err(|e| e.to_string())?;
    let version = r.u32().map_err(|e| e.to_string())?;
    if magic != MAGIC {
        return Err("not a checkpoint file (bad magic)".into());
    }
    let len = match version {
        1 => LEN_V1,
        VERSION => LEN,
        // Checked against the CRC first where it can be: a flipped version bit is damage.
        _ => {
            let plausible = [LEN_V1, LEN].into_iter().any(|len| {
                b.len() == len
                    && b.get(len - 4..)
                        .and_then(|c| c.try_into().ok())
                        .map(u32::from_le_bytes)
                        == Some(crc32fast::hash(b.get(..len - 4).unwrap_or_default()))
            });
            return Err(if plausible {
                format!("format version {version}, this build reads 1 and {VERSION}")
            } else {
                "checksum mismatch".into()
            });
        }
    };
    if b.len() != len {
        return Err(format!(
            "{} bytes, a version {version} checkpoint has {len}",
            b.len()
        ));
    }
    let position = r.u64().map_err(|e| e.to_string())?;
    let skip = r.u32().map_err(|e| e.to_string())?;
    let saved_at = if version == 1 {
        0
    } else {
        r.u64().map_err(|e| e.to_string())?
    };
    let crc = r.u32().map_err(|e| e.to_string())?;
    if crc != crc32fast::hash(b.get(..len - 4).unwrap_or_default()) {
        return Err("checksum mismatch".into());
    }
    Ok(Saved {
        token: ResumeToken {
            position: Position(position),
            skip,
        },
        saved_at,
    })
}

/// Checks a checkpoint name: 1 to 128 bytes of `A-Z a-z 0-9 . _ -`, not starting with `.`.
pub(super) fn check_name(name: &str) -> Result<()> {
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

impl Inner {
    fn checkpoint_path(&self, name: &str) -> Result<(PathBuf, PathBuf)> {
        check_name(name)?;
        let dir = self.dir.join(CHECKPOINTS_DIR);
        Ok((dir.join(name), dir))
    }

    /// The checkpoint file `name`, if there is one.
    pub(super) fn read_checkpoint_file(&self, name: &str) -> Result<Option<Saved>> {
        let (path, _) = self.checkpoint_path(name)?;
        let storage = self.options.storage.as_ref();
        let file = match storage.open_read_only(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("open", &path)(e)),
        };
        let mut buf = [0u8; LEN + 1];
        let n = file.read_at(&mut buf, 0).map_err(io_err("read", &path))?;
        decode(buf.get(..n).unwrap_or_default())
            .map(Some)
            .map_err(|reason| Error::corrupted(&path, 0, reason))
    }

    /// Replaces the checkpoint file `name` durably and atomically.
    fn write_checkpoint_file(&self, name: &str, saved: Saved) -> Result<()> {
        let (path, dir) = self.checkpoint_path(name)?;
        let storage: &dyn Storage = self.options.storage.as_ref();
        crate::io::create_dir_durably(storage, &dir).map_err(io_err("create", &dir))?;
        let tmp = dir.join(format!(".{name}.tmp"));
        if storage.exists(&tmp).map_err(io_err("stat", &tmp))? {
            storage.remove(&tmp).map_err(io_err("remove", &tmp))?;
        }
        let file = storage.create(&tmp).map_err(io_err("create", &tmp))?;
        file.write_at(&encode(saved), 0)
            .map_err(io_err("write", &tmp))?;
        file.sync_data().map_err(io_err("sync", &tmp))?;
        storage
            .rename(&tmp, &path)
            .map_err(io_err("rename", &tmp))?;
        storage.sync_dir(&dir).map_err(io_err("sync", &dir))
    }

    /// Writes the files of the pending checkpoints whose frames are durable now (each only
    /// over a file saved at an earlier position). Those that fail stay pending, to be
    /// tried again by the next commit; the first failure is returned.
    pub(super) fn mirror_checkpoints(&self) -> Result<()> {
        if self
            .pending_checkpoint_count
            .load(std::sync::atomic::Ordering::Acquire)
            == 0
        {
            return Ok(());
        }
        // One mirror at a time: each compares with the file before it replaces it.
        let _files = self.checkpoint_files.lock();
        let durable = self.log.durable();
        let ready: Vec<PendingCheckpoint> = {
            let pending = self.pending_checkpoints.lock();
            pending
                .iter()
                .filter(|p| p.frame_end <= durable)
                .cloned()
                .collect()
        };
        let mut first_error = None;
        for p in ready {
            // A damaged file holds nothing to keep: the log's checkpoint replaces it
            // (left pending, it would keep the index from flushing).
            let existing = match self.read_checkpoint_file(&p.name) {
                Err(Error::Corrupted { .. }) => Ok(None),
                other => other,
            };
            let result = existing.and_then(|file| {
                if file.is_some_and(|f| f.saved_at >= p.frame_end) {
                    return Ok(());
                }
                self.write_checkpoint_file(
                    &p.name,
                    Saved {
                        token: p.token,
                        saved_at: p.frame_end,
                    },
                )
            });
            match result {
                Ok(()) => self.forget_pending_checkpoint(&p),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// At a writer's open, after recovery: a checkpoint file saved past the end of the
    /// log (a direct save after appends that a crash then took back) is brought back to
    /// that end, so that the appends made from now on count as later; then the
    /// checkpoints carried by the replayed tail of the log are mirrored.
    pub(super) fn reconcile_checkpoints(&self, replayed: Vec<PendingCheckpoint>) -> Result<()> {
        let end = self.log.written();
        let dir = self.dir.join(CHECKPOINTS_DIR);
        let names = match self.options.storage.list(&dir) {
            Ok(names) => names,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io_err("list", &dir)(e)),
        };
        for name in names {
            if check_name(&name).is_err() {
                continue; // temporary files and strangers
            }
            // A damaged file is reported when it is read, not here.
            if let Ok(Some(saved)) = self.read_checkpoint_file(&name)
                && saved.saved_at > end
            {
                self.write_checkpoint_file(
                    &name,
                    Saved {
                        token: saved.token,
                        saved_at: end,
                    },
                )?;
            }
        }
        for p in replayed {
            self.add_pending_checkpoint(p);
        }
        self.mirror_checkpoints()
    }

    /// Notes a checkpoint carried by the frame that ends at `frame_end`.
    pub(super) fn add_pending_checkpoint(&self, p: PendingCheckpoint) {
        let mut pending = self.pending_checkpoints.lock();
        pending.push(p);
        self.pending_checkpoint_count
            .store(pending.len(), std::sync::atomic::Ordering::Release);
    }

    fn forget_pending_checkpoint(&self, p: &PendingCheckpoint) {
        let mut pending = self.pending_checkpoints.lock();
        if let Some(i) = pending.iter().position(|q| q == p) {
            pending.swap_remove(i);
        }
        self.pending_checkpoint_count
            .store(pending.len(), std::sync::atomic::Ordering::Release);
    }

    /// The end of the first frame at or below `end` whose checkpoint file is not written
    /// yet: the index must not cover it (the replay at the next open mirrors it).
    pub(super) fn unmirrored_checkpoint_below(&self, end: u64) -> Option<u64> {
        if self
            .pending_checkpoint_count
            .load(std::sync::atomic::Ordering::Acquire)
            == 0
        {
            return None;
        }
        self.pending_checkpoints
            .lock()
            .iter()
            .map(|p| p.frame_end)
            .filter(|&e| e <= end)
            .min()
    }

    /// Whether the frame ending at `frame_end` carries a checkpoint not mirrored yet.
    pub(super) fn carries_pending_checkpoint(&self, frame_end: u64) -> bool {
        self.pending_checkpoint_count
            .load(std::sync::atomic::Ordering::Acquire)
            != 0
            && self
                .pending_checkpoints
                .lock()
                .iter()
                .any(|p| p.frame_end == frame_end)
    }
}

impl Store {
    /// The resume token last saved under `name`, if any: by [`Store::save_checkpoint`], or
    /// by [`Store::append_and_checkpoint`] (through this handle, at once, even before the
    /// append is durable under `Periodic`/`Buffered`; through other handles and processes,
    /// once it is durable).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a name outside `A-Z a-z 0-9 . _ -` (1 to 128 bytes,
    /// not starting with `.`); [`Error::Corrupted`] when the file is damaged;
    /// [`Error::Io`] on read failure.
    pub fn checkpoint(&self, name: &str) -> Result<Option<ResumeToken>> {
        let inner = &*self.inner;
        let file = inner.read_checkpoint_file(name)?;
        let pending = inner
            .pending_checkpoints
            .lock()
            .iter()
            .filter(|p| p.name == name)
            .max_by_key(|p| p.frame_end)
            .cloned();
        Ok(match (file, pending) {
            (Some(f), Some(p)) if f.saved_at >= p.frame_end => Some(f.token),
            (_, Some(p)) => Some(p.token),
            (f, None) => f.map(|f| f.token),
        })
    }

    /// Saves `token` under `name`, durably and atomically: when this returns, a crash
    /// leaves this token (and before, the previous one). It replaces any checkpoint of
    /// that name carried by an earlier append.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad name (see [`Store::checkpoint`]); [`Error::Io`]
    /// when the file cannot be written (a read-only handle needs write access to the
    /// store's `checkpoints` directory, or to the store's directory to create it).
    pub fn save_checkpoint(&self, name: &str, token: ResumeToken) -> Result<()> {
        let inner = &*self.inner;
        check_name(name)?;
        let _files = inner.checkpoint_files.lock();
        // Saved at the end of everything appended before this call (a read-only handle:
        // at the end it sees), so that it wins over the checkpoints those appends carry.
        let saved_at = if inner.options.read_only {
            inner.visible()
        } else {
            inner.writer.lock().appender.head()
        };
        inner.write_checkpoint_file(name, Saved { token, saved_at })?;
        // Checkpoints of earlier appends not mirrored yet must not overwrite this one.
        let mut pending = inner.pending_checkpoints.lock();
        pending.retain(|p| p.name != name || p.frame_end > saved_at);
        inner
            .pending_checkpoint_count
            .store(pending.len(), std::sync::atomic::Ordering::Release);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_files_round_trip_and_refuse_damage() {
        let t = Saved {
            token: ResumeToken {
                position: Position(4096),
                skip: 3,
            },
            saved_at: 9000,
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
        assert!(decode(&b[..LEN_V1]).is_err());
    }

    #[test]
    fn version_1_files_read_as_saved_at_zero() {
        let mut b = Vec::new();
        b.extend_from_slice(&MAGIC);
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&4096u64.to_le_bytes());
        b.extend_from_slice(&2u32.to_le_bytes());
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(
            decode(&b),
            Ok(Saved {
                token: ResumeToken {
                    position: Position(4096),
                    skip: 2
                },
                saved_at: 0
            })
        );
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
