//! The index manifest (`index/MANIFEST`): names the live tables and the log position they
//! cover. Replaced atomically: written to `MANIFEST.tmp`, synced, renamed, directory synced.

use std::path::Path;

use crate::error::{Error, Result};
use crate::format::DecodeError;
use crate::format::le::{self, Reader};
use crate::io::Storage;

/// Name of the manifest file.
pub const MANIFEST_FILE: &str = "MANIFEST";
/// Name of the manifest being written.
pub const MANIFEST_TMP_FILE: &str = "MANIFEST.tmp";
/// Magic at the start of the manifest.
pub const MANIFEST_MAGIC: [u8; 8] = *b"SLOGMAN\0";
/// Format version of the manifest.
pub const MANIFEST_VERSION: u32 = 1;
/// Most tables a manifest may name (far above what the merge policy produces).
const MAX_TABLES: u32 = 4096;

/// What the manifest says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    /// Every frame below this position is in the listed tables; it was durable when the
    /// manifest was written.
    pub covered_position: u64,
    /// Position of the last frame below `covered_position` (0 if none) and its stored CRC:
    /// identifies the log the tables were built from, so a replaced log is detected.
    pub last_frame_position: u64,
    /// CRC field of that frame.
    pub last_frame_crc: u32,
    /// Events in the covered frames.
    pub events: u64,
    /// Event frames (appends) covered.
    pub appends: u64,
    /// Streams created in the covered frames (frames with first version 0).
    pub streams: u64,
    /// Id for the next table file.
    pub next_table_id: u64,
    /// Live tables, oldest first.
    pub tables: Vec<u64>,
}

impl Manifest {
    fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(80 + self.tables.len() * 8);
        b.extend_from_slice(&MANIFEST_MAGIC);
        b.extend_from_slice(&MANIFEST_VERSION.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        for v in [
            self.covered_position,
            self.last_frame_position,
            u64::from(self.last_frame_crc),
            self.events,
            self.appends,
            self.streams,
            self.next_table_id,
            self.tables.len() as u64,
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        for t in &self.tables {
            b.extend_from_slice(&t.to_le_bytes());
        }
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes a manifest.
    ///
    /// # Errors
    /// [`DecodeError`] saying what is wrong.
    pub fn decode(b: &[u8]) -> std::result::Result<Manifest, DecodeError> {
        let mut r = Reader::new(intact(b)?);
        r.take(MANIFEST_MAGIC.len())?; // checked by `intact`
        let version = r.u32()?;
        if version != MANIFEST_VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let _reserved = r.u32()?; // covered by the CRC; written as 0
        let covered_position = r.u64()?;
        let last_frame_position = r.u64()?;
        let last_frame_crc =
            u32::try_from(r.u64()?).map_err(|_| DecodeError::Invalid("last frame CRC"))?;
        let events = r.u64()?;
        let appends = r.u64()?;
        let streams = r.u64()?;
        let next_table_id = r.u64()?;
        let count = r.u64()?;
        if count > u64::from(MAX_TABLES) || r.remaining() as u64 != count * 8 {
            return Err(DecodeError::Invalid(
                "table count (does not match the manifest's length)",
            ));
        }
        let tables = (0..count)
            .map(|_| r.u64())
            .collect::<std::result::Result<_, _>>()?;
        Ok(Manifest {
            covered_position,
            last_frame_position,
            last_frame_crc,
            events,
            appends,
            streams,
            next_table_id,
            tables,
        })
    }

    /// Reads the manifest of `dir`: `Ok(None)` when there is none.
    ///
    /// # Errors
    /// [`Error::UnsupportedFormat`] for an intact manifest (magic and CRC valid) of a newer
    /// version, which must never be replaced by an older one; I/O errors. A damaged
    /// manifest is `Ok(Some(Err(reason)))`.
    pub fn load(
        storage: &dyn Storage,
        dir: &Path,
    ) -> Result<Option<std::result::Result<Manifest, DecodeError>>> {
        let path = dir.join(MANIFEST_FILE);
        let file = match storage.open_read_only(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(format!("open {}", path.display()), e)),
        };
        let len = file
            .len()
            .map_err(|e| Error::io(format!("stat {}", path.display()), e))?;
        if len > 1 << 20 {
            return Ok(Some(Err(DecodeError::Invalid(
                "file length (larger than any valid manifest)",
            ))));
        }
        let mut buf = vec![0u8; len as usize];
        let mut done = 0;
        while done < buf.len() {
            let n = file
                .read_at(buf.get_mut(done..).unwrap_or_default(), done as u64)
                .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
            if n == 0 {
                break;
            }
            done += n;
        }
        buf.truncate(done);
        if let Some(found) = newer_version(&buf) {
            return Err(Error::UnsupportedFormat {
                file: path,
                found,
                supported: MANIFEST_VERSION,
            });
        }
        Ok(Some(Manifest::decode(&buf)))
    }

    /// Replaces the manifest of `dir` atomically and durably.
    ///
    /// # Errors
    /// I/O errors.
    pub fn store(&self, storage: &dyn Storage, dir: &Path) -> Result<()> {
        let tmp = dir.join(MANIFEST_TMP_FILE);
        let path = dir.join(MANIFEST_FILE);
        let ctx = |what: &str| format!("{what} {}", tmp.display());
        if storage
            .exists(&tmp)
            .map_err(|e| Error::io(ctx("stat"), e))?
        {
            storage
                .remove(&tmp)
                .map_err(|e| Error::io(ctx("remove"), e))?;
        }
        let file = storage
            .create(&tmp)
            .map_err(|e| Error::io(ctx("create"), e))?;
        file.write_at(&self.encode(), 0)
            .map_err(|e| Error::io(ctx("write"), e))?;
        file.sync_data().map_err(|e| Error::io(ctx("sync"), e))?;
        storage
            .rename(&tmp, &path)
            .map_err(|e| Error::io(ctx("rename"), e))?;
        storage
            .sync_dir(dir)
            .map_err(|e| Error::io(format!("sync {}", dir.display()), e))
    }
}

/// The manifest's bytes before its CRC, once its magic and CRC check.
fn intact(b: &[u8]) -> std::result::Result<&[u8], DecodeError> {
    if Reader::new(b).array() != Ok(MANIFEST_MAGIC) {
        return Err(DecodeError::BadMagic);
    }
    let (body, crc) = b.split_at(b.len().saturating_sub(4));
    let stored = le::u32_at(crc, 0)?;
    let computed = crc32fast::hash(body);
    if stored != computed {
        return Err(DecodeError::ChecksumMismatch { stored, computed });
    }
    Ok(body)
}

/// The version of an intact manifest (magic and CRC valid) newer than this build reads.
fn newer_version(b: &[u8]) -> Option<u32> {
    let version = le::u32_at(intact(b).ok()?, MANIFEST_MAGIC.len()).ok()?;
    (version > MANIFEST_VERSION).then_some(version)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trips_and_detects_damage() {
        let m = Manifest {
            covered_position: 4096,
            last_frame_position: 4000,
            last_frame_crc: 0xDEAD_BEEF,
            events: 10,
            appends: 4,
            streams: 2,
            next_table_id: 9,
            tables: vec![3, 7, 8],
        };
        let b = m.encode();
        assert_eq!(Manifest::decode(&b), Ok(m));
        for i in 0..b.len() {
            let mut bad = b.clone();
            bad[i] ^= 1;
            assert!(Manifest::decode(&bad).is_err(), "flip at {i}");
        }
        assert!(Manifest::decode(&b[..b.len() - 1]).is_err());
    }
}
