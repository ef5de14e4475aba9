//! The `io` layer: the small file API the engine uses, behind the [`Storage`] trait.
//!
//! Every byte the engine reads or writes goes through this trait, so a test can swap the
//! real file system ([`FsStorage`]) for a backend that loses unsynced data, tears writes or
//! fails syncs. The trait knows nothing of records or streams.
//!
//! Paths handed to a backend are always the full paths the engine built from the store's
//! directory; directory listings return plain file names.

mod fs;
pub mod sim;

pub use fs::FsStorage;

use std::fmt;
use std::io;
use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;

/// A file opened through a [`Storage`] backend.
///
/// All offsets are absolute byte offsets in the file. Implementations must be usable from
/// several threads at once (reads concurrent with one writer).
pub trait StorageFile: Send + Sync + fmt::Debug {
    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read (0 at end of file).
    ///
    /// # Errors
    /// Any I/O error of the backend.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;

    /// Writes all of `buf` at `offset`, extending the file if needed.
    ///
    /// # Errors
    /// Any I/O error of the backend (`ENOSPC`, `EIO`, …). After an error the bytes in the
    /// written range are unspecified.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;

    /// Makes the file's data durable (`fdatasync`).
    ///
    /// # Errors
    /// A failed sync. The engine never retries a failed sync: it poisons the store.
    fn sync_data(&self) -> io::Result<()>;

    /// Cuts or extends the file to `len` bytes.
    ///
    /// # Errors
    /// Any I/O error of the backend.
    fn truncate(&self, len: u64) -> io::Result<()>;

    /// The file's current length in bytes.
    ///
    /// # Errors
    /// Any I/O error of the backend.
    fn len(&self) -> io::Result<u64>;

    /// Whether the file is empty.
    ///
    /// # Errors
    /// Any I/O error of the backend.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Tells the backend that `len` bytes at `offset` will be read soon, so that it can
    /// start fetching them while the caller does other work (the real backend:
    /// `posix_fadvise(POSIX_FADV_WILLNEED)`, which queues the reads and returns). A hint
    /// only: it changes no byte and no later result. The default does nothing.
    ///
    /// # Errors
    /// Any I/O error of the backend; callers may ignore it, since nothing depends on it.
    fn will_need(&self, offset: u64, len: u64) -> io::Result<()> {
        let _ = (offset, len);
        Ok(())
    }

    /// A read-only view of the whole file, for files that will never change again
    /// (sealed segments). The real backend memory-maps the file.
    ///
    /// # Errors
    /// Any I/O error of the backend.
    fn map(&self) -> io::Result<Mapping>;

    /// A read-only view of the first `len` bytes, for a file whose first `len` bytes will
    /// never change again while the view lives, though bytes past them may (the active
    /// segment's written part). The real backend memory-maps just that prefix.
    ///
    /// # Errors
    /// Any I/O error of the backend; [`io::ErrorKind::UnexpectedEof`] when the file is
    /// shorter than `len`.
    fn map_prefix(&self, len: u64) -> io::Result<Mapping>;
}

/// A shared, read-only view of a whole immutable file.
#[derive(Clone)]
pub struct Mapping(Arc<dyn Deref<Target = [u8]> + Send + Sync>);

impl Mapping {
    /// Wraps any owned byte container (used by in-memory backends).
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Mapping(Arc::new(bytes))
    }

    pub(crate) fn from_arc(inner: Arc<dyn Deref<Target = [u8]> + Send + Sync>) -> Self {
        Mapping(inner)
    }
}

impl Deref for Mapping {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Mapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mapping").field("len", &self.len()).finish()
    }
}

/// Creates `path` and any missing ancestors, making each new directory entry durable by
/// syncing its parent (a directory that was created but whose parent was never synced can
/// vanish in a crash, with every file in it).
///
/// # Errors
/// Any I/O error of the backend.
pub fn create_dir_durably(storage: &dyn Storage, path: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut cur = Some(path);
    while let Some(p) = cur {
        if p.as_os_str().is_empty() || storage.exists(p)? {
            break;
        }
        missing.push(p);
        cur = p.parent();
    }
    if missing.is_empty() {
        return Ok(());
    }
    storage.create_dir_all(path)?;
    for created in missing.iter().rev() {
        match created.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => storage.sync_dir(parent)?,
            _ => storage.sync_dir(Path::new("."))?,
        }
    }
    Ok(())
}

/// A held directory lock; dropping it releases the lock.
pub trait LockGuard: Send + Sync + fmt::Debug {}

/// The file system as the engine sees it.
pub trait Storage: Send + Sync + fmt::Debug {
    /// Creates `path` and its parents if missing. The new directory entries are durable
    /// only after [`Storage::sync_dir`] of each parent.
    ///
    /// # Errors
    /// Any I/O error of the backend.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;

    /// Opens an existing file for reading and writing.
    ///
    /// # Errors
    /// `NotFound` when it does not exist; any other I/O error of the backend.
    fn open(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>>;

    /// Opens an existing file for reading only.
    ///
    /// # Errors
    /// `NotFound` when it does not exist; any other I/O error of the backend.
    fn open_read_only(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>>;

    /// Creates a new empty file; fails if it exists. The directory entry is durable only
    /// after [`Storage::sync_dir`].
    ///
    /// # Errors
    /// `AlreadyExists`, or any other I/O error of the backend.
    fn create(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>>;

    /// Names (not paths) of the entries in `dir`, in no particular order.
    ///
    /// # Errors
    /// `NotFound` when `dir` does not exist; any other I/O error of the backend.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;

    /// Atomically renames `from` to `to`, replacing `to`.
    ///
    /// # Errors
    /// Any I/O error of the backend.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;

    /// Removes a file.
    ///
    /// # Errors
    /// Any I/O error of the backend.
    fn remove(&self, path: &Path) -> io::Result<()>;

    /// Removes an empty directory.
    ///
    /// # Errors
    /// Any I/O error of the backend (a directory that is not empty is an error).
    fn remove_dir(&self, path: &Path) -> io::Result<()>;

    /// Makes the entries of directory `dir` (creations, renames, removals) durable.
    ///
    /// # Errors
    /// Any I/O error of the backend.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;

    /// Whether `path` exists.
    ///
    /// # Errors
    /// Any I/O error of the backend other than "not found".
    fn exists(&self, path: &Path) -> io::Result<bool>;

    /// Takes an exclusive (`shared == false`) or shared lock on the file at `path`, without
    /// waiting. `Ok(None)` means another holder has a conflicting lock, in this process or
    /// another.
    ///
    /// An exclusive lock creates the file if needed. A shared lock never creates or writes
    /// anything, so that a read-only opener needs no write access: when the file is missing
    /// (or, for a real file system, cannot be opened for reading) it returns a guard that
    /// holds no lock.
    ///
    /// # Errors
    /// Any I/O error of the backend.
    fn try_lock(&self, path: &Path, shared: bool) -> io::Result<Option<Box<dyn LockGuard>>>;
}
