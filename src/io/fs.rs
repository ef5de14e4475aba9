//! The real-file backend of [`Storage`](super::Storage). This module holds the crate's only
//! `unsafe` code: the memory map of sealed segments.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use super::{LockGuard, Mapping, Storage, StorageFile};

/// The real file system (POSIX `pread`/`pwrite`, `fdatasync`, directory `fsync`, `flock`).
#[derive(Debug, Default, Clone, Copy)]
pub struct FsStorage;

#[derive(Debug)]
struct FsFile {
    file: File,
}

impl StorageFile for FsFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        loop {
            match self.file.read_at(buf, offset) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn truncate(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
    fn will_need(&self, offset: u64, len: u64) -> io::Result<()> {
        // `posix_fadvise` through rustix (safe; the crate denies `unsafe`): the kernel
        // starts reading the pages and returns without waiting for them.
        let Some(len) = std::num::NonZeroU64::new(len) else {
            return Ok(());
        };
        rustix::fs::fadvise(&self.file, offset, Some(len), rustix::fs::Advice::WillNeed)
            .map_err(io::Error::from)
    }

    #[allow(unsafe_code)]
    fn map(&self) -> io::Result<Mapping> {
        if self.len()? == 0 {
            return Ok(Mapping::from_bytes(Vec::new()));
        }
        // SAFETY: the engine maps whole only sealed segments: files it will never write,
        // truncate or remove while the store is open (the directory is held under an
        // exclusive lock, and recovery truncates only the last segment, which is never
        // mapped whole). The remaining hazard is another program truncating the file
        // behind our back, which would fault on access; that is outside the contract
        // documented in docs/reliability.md ("nobody else writes the directory while it
        // is open").
        let map = unsafe { memmap2::Mmap::map(&self.file)? };
        Ok(Mapping::from_arc(Arc::new(map)))
    }

    #[allow(unsafe_code)]
    fn map_prefix(&self, len: u64) -> io::Result<Mapping> {
        if self.len()? < len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "map past the end of the file",
            ));
        }
        let Ok(bytes) = usize::try_from(len) else {
            return Err(io::Error::other("mapping larger than the address space"));
        };
        if bytes == 0 {
            return Ok(Mapping::from_bytes(Vec::new()));
        }
        // SAFETY: as `map`, for the active segment's written part: the event log never
        // rewrites, truncates or removes bytes it has written while the store is open (its
        // appends go past them; it cuts only zeroed space past its end, at sealing and at
        // close), and a log that cuts written bytes (the cluster's raft log) never maps its
        // active segment. The view covers only those bytes, so nothing it holds changes
        // while it lives.
        let map = unsafe { memmap2::MmapOptions::new().len(bytes).map(&self.file)? };
        Ok(Mapping::from_arc(Arc::new(map)))
    }
}

#[derive(Debug)]
struct FsLock {
    _file: File,
}

impl LockGuard for FsLock {}

/// What a shared lock returns when there is no lock file it can open: nothing to hold.
#[derive(Debug)]
struct NoLock;

impl LockGuard for NoLock {}

impl Storage for FsStorage {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::create_dir_all(path)
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Arc::new(FsFile { file }))
    }

    fn open_read_only(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        let file = OpenOptions::new().read(true).open(path)?;
        Ok(Arc::new(FsFile { file }))
    }

    fn create(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        Ok(Arc::new(FsFile { file }))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        fs::remove_dir(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        path.try_exists()
    }

    fn try_lock(&self, path: &Path, shared: bool) -> io::Result<Option<Box<dyn LockGuard>>> {
        let file = if shared {
            // A reader needs no write access: `flock` takes a shared lock through a
            // read-only descriptor. Without a lock file it can read (a copy made without
            // it, another account's store) there is nothing to lock, and creating one
            // would be a write.
            match OpenOptions::new().read(true).open(path) {
                Ok(file) => file,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied
                    ) =>
                {
                    return Ok(Some(Box::new(NoLock)));
                }
                Err(e) => return Err(e),
            }
        } else {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)?
        };
        let res = if shared {
            file.try_lock_shared()
        } else {
            file.try_lock()
        };
        match res {
            Ok(()) => Ok(Some(Box::new(FsLock { _file: file }))),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(e),
        }
    }
}
