//! Handles of the simulated machine: open files and lock guards, which go stale at a crash.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;

use super::state::*;
use crate::io::{LockGuard, Mapping, StorageFile};

/// A file opened on a [`SimStorage`](super::SimStorage).
pub(super) struct SimFile {
    pub(super) state: Arc<Mutex<State>>,
    pub(super) ino: u64,
    pub(super) epoch: u64,
    pub(super) writable: bool,
    pub(super) path: PathBuf,
}

impl fmt::Debug for SimFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimFile")
            .field("path", &self.path)
            .field("ino", &self.ino)
            .field("epoch", &self.epoch)
            .field("writable", &self.writable)
            .finish()
    }
}

impl SimFile {
    pub(super) fn check_writable(&self) -> io::Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                SimError(format!("{} is open read-only", self.path.display())),
            ))
        }
    }
}

impl StorageFile for SimFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut s = self.state.lock();
        s.check_handle(self.epoch)?;
        let end = offset.saturating_add(buf.len() as u64);
        if s.read_faults
            .iter()
            .any(|(ino, r)| *ino == self.ino && r.start < end && offset < r.end)
        {
            return Err(raw_eio());
        }
        let inode = s.inode(self.ino)?;
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let Some(avail) = inode.live.get(start..) else {
            return Ok(0);
        };
        let n = avail.len().min(buf.len());
        if let (Some(dst), Some(src)) = (buf.get_mut(..n), avail.get(..n)) {
            dst.copy_from_slice(src);
        }
        Ok(n)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut s = self.state.lock();
        s.check_handle(self.epoch)?;
        self.check_writable()?;
        s.write(self.ino, buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut s = self.state.lock();
        s.check_handle(self.epoch)?;
        s.sync_file(self.ino)
    }

    fn truncate(&self, len: u64) -> io::Result<()> {
        let mut s = self.state.lock();
        s.check_handle(self.epoch)?;
        self.check_writable()?;
        s.count_op()?;
        let len = usize::try_from(len).map_err(|_| eio("length out of range"))?;
        s.inode(self.ino)?.live.resize(len, 0);
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        let mut s = self.state.lock();
        s.check_handle(self.epoch)?;
        Ok(s.inode(self.ino)?.live.len() as u64)
    }

    fn map(&self) -> io::Result<Mapping> {
        let mut s = self.state.lock();
        s.check_handle(self.epoch)?;
        let ino = self.ino;
        if s.read_faults
            .iter()
            .any(|(i, r)| *i == ino && !r.is_empty())
        {
            return Err(raw_eio());
        }
        Ok(Mapping::from_bytes(s.inode(ino)?.live.clone()))
    }

    fn map_prefix(&self, len: u64) -> io::Result<Mapping> {
        let all = self.map()?;
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        let prefix = all.get(..len).ok_or_else(|| {
            io::Error::new(io::ErrorKind::UnexpectedEof, "map past the end of the file")
        })?;
        Ok(Mapping::from_bytes(prefix.to_vec()))
    }
}

pub(super) struct SimLock {
    pub(super) state: Arc<Mutex<State>>,
    pub(super) path: PathBuf,
    pub(super) epoch: u64,
    pub(super) shared: bool,
}

impl fmt::Debug for SimLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimLock")
            .field("path", &self.path)
            .field("shared", &self.shared)
            .finish()
    }
}

impl LockGuard for SimLock {}

/// A shared lock on a lock file that does not exist: holds nothing.
#[derive(Debug)]
pub(super) struct SimNoLock;

impl LockGuard for SimNoLock {}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut s = self.state.lock();
        if s.epoch != self.epoch {
            return; // the lock died with the machine
        }
        if let Some(l) = s.locks.get_mut(&self.path) {
            if self.shared {
                l.shared = l.shared.saturating_sub(1);
            } else {
                l.exclusive = false;
            }
            if !l.exclusive && l.shared == 0 {
                s.locks.remove(&self.path);
            }
        }
    }
}
