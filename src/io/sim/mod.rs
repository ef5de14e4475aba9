//! A deterministic, fault-injecting, in-memory [`Storage`] backend for crash testing.
//!
//! # The model
//!
//! [`SimStorage`] keeps a whole file system in memory, behind one mutex, and is fully
//! deterministic given its `u64` seed and the sequence of calls made on it (it draws every
//! random decision from its own SplitMix64 generator).
//!
//! - **File data.** Every file (inode) has three byte images:
//!   - *live*: what reads see (the page cache);
//!   - *durable*: what survives a crash (the medium);
//!   - *clean*: what the kernel believes is on the medium. Normally equal to *durable*;
//!     it differs only after a failed sync (see fsyncgate below).
//!
//!   [`StorageFile::sync_data`] writes every sector whose live content differs from the
//!   clean image to the durable image, and sets the durable length to the live length.
//! - **Directory entries.** There is a *live* namespace (what `open`, `list`, `exists`
//!   see) and a *durable* one. `create`, `rename`, `remove` and `create_dir_all` change
//!   only the live namespace; [`Storage::sync_dir`] of a directory copies the live state
//!   of that directory's entries to the durable namespace. A crash forgets every entry
//!   change that was not synced: a created file vanishes, a removed one comes back, a
//!   rename reverts. Entries under a directory whose own entry is not durable vanish too.
//!   The root directory (`/`, or the empty path for relative paths) always exists.
//! - **Crash.** [`SimStorage::crash`] is a power cut followed by a reboot. For each file,
//!   every 512-byte sector whose live content differs from its durable content
//!   independently becomes one of (chosen by the seeded generator): the new bytes
//!   (kept), zeros, the old durable bytes, or garbage (random bytes). When the length
//!   changed since the last sync, the new length is the live one, the durable one, or a
//!   sector boundary in between, and the sectors in range get the same treatment.
//!   Exception: a sector that already held synced bytes (such as the partly filled last
//!   sector of an append-only file that was synced, then appended to) is written
//!   atomically by default: it comes back old or new, never zeroed or garbled, as most
//!   disks promise; [`SimStorage::set_tear_synced_sectors`] turns on the harsher model in
//!   which it may come back zeroed or garbled too, destroying the synced bytes. Torn
//!   writes fall out of this model: a multi-sector write may survive in part. After the
//!   crash the surviving bytes are both live and durable, every lock is released, and
//!   every file handle and lock guard from before the crash is *stale*: each call on it
//!   fails with `EIO` (so an old `Store` dropped after the crash cannot write into the
//!   new boot). The [`SimStorage`] itself (and its clones) stays valid: it is the new boot.
//! - **Faults**, configured through methods of [`SimStorage`]:
//!   - [`SimStorage::flip_bit`]: flips one bit of a file on the medium (and in the live
//!     view), as media corruption would;
//!   - [`SimStorage::fail_reads`]: reads overlapping a byte range of a file fail with `EIO`;
//!   - [`SimStorage::enospc_after`]: after `n` more bytes written, writes fail with `ENOSPC`
//!     (the part of a write that still fits is written);
//!   - [`SimStorage::fail_next_sync`]: the next `sync_data` (of one file, or any) fails
//!     with `EIO` with **fsyncgate** semantics: the file's dirty data is dropped from what
//!     will survive (the durable image stays old) but the live view still shows it, and
//!     the kernel now believes it clean, so a later sync of the same file reports success
//!     without persisting the dropped data (it does write out the file's length and any
//!     data written after the failure; dropped sectors keep their old bytes, zeros past
//!     the old end);
//!   - [`SimStorage::fail_after_ops`]: a crash point. Every mutating call (`write_at`,
//!     `sync_data`, `truncate`, `create`, `create_dir_all`, `rename`, `remove`,
//!     `sync_dir`) counts down; the call that brings the count to zero fails, and so does
//!     every later call of any kind, as if the machine had died there, until
//!     [`SimStorage::crash`]. A dying `write_at` writes a random prefix of its bytes to
//!     the live view first (which the crash may then keep, drop or tear).
//! - **Locks** ([`Storage::try_lock`]) live in memory: one exclusive holder or any number
//!   of shared holders per path; the guard releases on drop.
//! - [`StorageFile::map`] returns a copy of the live bytes.
//!
//! Nothing in this module panics: bad paths and stale handles are I/O errors.

mod file;
mod state;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::{LockGuard, Storage, StorageFile};
pub use crate::rng::SplitMix64;
use file::*;
pub use state::SECTOR;
use state::*;

/// The deterministic, fault-injecting, in-memory file system (see the module docs for the
/// model). Cloning gives another handle on the same file system.
pub struct SimStorage {
    state: Arc<Mutex<State>>,
    /// The boot this handle belongs to: a handle from before a crash (a "process" that
    /// should have died with the machine) fails every call, so it cannot write into the
    /// next boot.
    epoch: AtomicU64,
}

impl Clone for SimStorage {
    fn clone(&self) -> Self {
        SimStorage {
            state: Arc::clone(&self.state),
            epoch: AtomicU64::new(self.epoch.load(Ordering::Acquire)),
        }
    }
}

impl fmt::Debug for SimStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.state.lock();
        f.debug_struct("SimStorage")
            .field("files", &s.inodes.len())
            .field("entries", &s.live.len())
            .field("epoch", &s.epoch)
            .field("dead", &s.dead)
            .field("mutating_ops", &s.mutating_ops)
            .finish()
    }
}

impl SimStorage {
    /// An empty file system whose random decisions all derive from `seed`.
    pub fn new(seed: u64) -> Self {
        SimStorage {
            state: Arc::new(Mutex::new(State {
                rng: SplitMix64::new(seed ^ 0x5EED_5EED_5EED_5EED),
                epoch: 0,
                next_ino: 1,
                inodes: HashMap::new(),
                live: BTreeMap::new(),
                durable: BTreeMap::new(),
                locks: HashMap::new(),
                read_faults: Vec::new(),
                space_left: None,
                sync_fault: None,
                countdown: None,
                dead: false,
                mutating_ops: 0,
                crashes: 0,
                tear_synced_sectors: false,
            })),
            epoch: AtomicU64::new(0),
        }
    }

    /// A power cut and reboot: unsynced data and directory entries are lost, kept, zeroed
    /// or garbled per sector (see the module docs), locks are released, old file handles
    /// become stale, and a crash point set by [`SimStorage::fail_after_ops`] is cleared.
    /// Other faults (read errors, `ENOSPC`, a pending sync failure) stay armed.
    pub fn crash(&self) {
        let mut s = self.state.lock();
        s.crash();
        self.epoch.store(s.epoch, Ordering::Release);
    }

    /// The shared state, for a call through this handle; fails for a handle of an earlier
    /// boot.
    fn lock(&self) -> io::Result<parking_lot::MutexGuard<'_, State>> {
        let s = self.state.lock();
        if self.epoch.load(Ordering::Acquire) != s.epoch {
            return Err(io::Error::other(SimError(
                "this handle belongs to a boot before a crash".into(),
            )));
        }
        Ok(s)
    }

    /// Chooses the fate of an overwritten sector that already held synced bytes (e.g. the
    /// partly filled last sector of a log that is appended to after a sync) when a crash
    /// interrupts its rewrite.
    ///
    /// - `false` (the default): sector writes are atomic, as most disks promise: such a
    ///   sector comes back either with its old durable bytes or with the new ones.
    /// - `true`: the harshest model: it may also come back zeroed or garbled, destroying
    ///   the synced bytes it held. Sectors holding no synced bytes get every outcome in
    ///   both models.
    pub fn set_tear_synced_sectors(&self, tear: bool) {
        self.state.lock().tear_synced_sectors = tear;
    }

    /// Flips bit `bit` (0..8) of the byte at `offset` of the file at `path`, on the medium
    /// and in the live view (where those hold that byte).
    ///
    /// # Errors
    /// `NotFound` when there is no such file; `InvalidInput` when `bit > 7` or `offset` is
    /// beyond both the live and the durable length.
    pub fn flip_bit(&self, path: &Path, offset: u64, bit: u8) -> io::Result<()> {
        let mut s = self.state.lock();
        let ino = s.file_ino(&normalize(path))?;
        let inode = s.inode(ino)?;
        let at = usize::try_from(offset).unwrap_or(usize::MAX);
        if bit > 7 || (at >= inode.live.len() && at >= inode.durable.len()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                SimError(format!(
                    "no bit {bit} at offset {offset} of {}",
                    path.display()
                )),
            ));
        }
        let mask = 1u8 << bit;
        for image in [&mut inode.live, &mut inode.clean, &mut inode.durable] {
            if let Some(b) = image.get_mut(at) {
                *b ^= mask;
            }
        }
        Ok(())
    }

    /// From now on, reads of the file at `path` that overlap `range` fail with `EIO`
    /// (until [`SimStorage::clear_faults`]).
    ///
    /// # Errors
    /// `NotFound` when there is no such file.
    pub fn fail_reads(&self, path: &Path, range: Range<u64>) -> io::Result<()> {
        let mut s = self.state.lock();
        let ino = s.file_ino(&normalize(path))?;
        s.read_faults.push((ino, range));
        Ok(())
    }

    /// After `bytes` more bytes are written (to any file), writes fail with `ENOSPC`; the
    /// part of a write that still fits is written. Stays until [`SimStorage::clear_faults`].
    pub fn enospc_after(&self, bytes: u64) {
        self.state.lock().space_left = Some(bytes);
    }

    /// The next `sync_data` of the file at `path` (of any file when `None`) fails with
    /// `EIO`, with fsyncgate semantics (see the module docs).
    ///
    /// # Errors
    /// `NotFound` when `path` names no file.
    pub fn fail_next_sync(&self, path: Option<&Path>) -> io::Result<()> {
        let mut s = self.state.lock();
        let target = match path {
            Some(p) => Some(s.file_ino(&normalize(p))?),
            None => None,
        };
        s.sync_fault = Some(target);
        Ok(())
    }

    /// A crash point: the `n`-th mutating call from now (1 = the next one) fails, and so
    /// does every call after it until [`SimStorage::crash`]. `n == 0` kills the machine at
    /// once.
    pub fn fail_after_ops(&self, n: u64) {
        let mut s = self.state.lock();
        if n == 0 {
            s.dead = true;
            s.countdown = None;
        } else {
            s.countdown = Some(n);
        }
    }

    /// Disarms every fault: read errors, `ENOSPC`, a pending sync failure and a pending
    /// crash point (a machine that already died stays dead until [`SimStorage::crash`]).
    pub fn clear_faults(&self) {
        let mut s = self.state.lock();
        s.read_faults.clear();
        s.space_left = None;
        s.sync_fault = None;
        s.countdown = None;
    }

    /// Whether a crash point was reached and the machine is dead.
    pub fn is_dead(&self) -> bool {
        self.state.lock().dead
    }

    /// Whether a crash point armed by [`SimStorage::fail_after_ops`] is still pending.
    pub fn crash_point_pending(&self) -> bool {
        self.state.lock().countdown.is_some()
    }

    /// Mutating calls made so far (the calls a crash point counts).
    pub fn mutating_ops(&self) -> u64 {
        self.state.lock().mutating_ops
    }

    /// Crashes so far.
    pub fn crashes(&self) -> u64 {
        self.state.lock().crashes
    }

    /// Every file of the live namespace with its live length, sorted by path.
    pub fn files(&self) -> Vec<(PathBuf, u64)> {
        let s = self.state.lock();
        s.live
            .iter()
            .filter_map(|(p, e)| match e {
                Entry::File(ino) => s.inodes.get(ino).map(|i| (p.clone(), i.live.len() as u64)),
                Entry::Dir => None,
            })
            .collect()
    }

    /// The live bytes of the file at `path` (what reads see), if it exists.
    pub fn live_bytes(&self, path: &Path) -> Option<Vec<u8>> {
        let s = self.state.lock();
        let ino = s.file_ino(&normalize(path)).ok()?;
        s.inodes.get(&ino).map(|i| i.live.clone())
    }

    /// The durable bytes of the file at `path` in the live namespace (what its data would
    /// be after a crash if it had no unsynced changes), if it exists.
    pub fn durable_bytes(&self, path: &Path) -> Option<Vec<u8>> {
        let s = self.state.lock();
        let ino = s.file_ino(&normalize(path)).ok()?;
        s.inodes.get(&ino).map(|i| i.durable.clone())
    }

    /// Whether `path` has a durable directory entry (file or directory).
    pub fn entry_is_durable(&self, path: &Path) -> bool {
        let path = normalize(path);
        is_root(&path) || self.state.lock().durable.contains_key(&path)
    }

    fn open_file(&self, path: &Path, writable: bool) -> io::Result<Arc<dyn StorageFile>> {
        let s = self.state.lock();
        s.alive()?;
        let ino = s.file_ino(&normalize(path))?;
        Ok(Arc::new(SimFile {
            state: Arc::clone(&self.state),
            ino,
            epoch: s.epoch,
            writable,
            path: normalize(path),
        }))
    }
}

impl Storage for SimStorage {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut s = self.lock()?;
        s.count_op()?;
        let path = normalize(path);
        let mut todo = Vec::new();
        let mut cur = Some(path.as_path());
        while let Some(p) = cur {
            if is_root(p) {
                break;
            }
            match s.live.get(p) {
                Some(Entry::Dir) => break,
                Some(Entry::File(_)) => {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        SimError(format!("{} exists and is not a directory", p.display())),
                    ));
                }
                None => todo.push(p.to_path_buf()),
            }
            cur = p.parent();
        }
        for p in todo {
            s.live.insert(p, Entry::Dir);
        }
        Ok(())
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        self.open_file(path, true)
    }

    fn open_read_only(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        self.open_file(path, false)
    }

    fn create(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        let mut s = self.lock()?;
        s.count_op()?;
        let path = normalize(path);
        if is_root(&path) || s.live.contains_key(&path) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                SimError(format!("{} already exists", path.display())),
            ));
        }
        if !s.dir_exists(&parent_of(&path)) {
            return Err(not_found(&parent_of(&path)));
        }
        let ino = s.next_ino;
        s.next_ino = s.next_ino.saturating_add(1);
        s.inodes.insert(ino, Inode::default());
        s.live.insert(path.clone(), Entry::File(ino));
        Ok(Arc::new(SimFile {
            state: Arc::clone(&self.state),
            ino,
            epoch: s.epoch,
            writable: true,
            path,
        }))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let s = self.lock()?;
        s.alive()?;
        let dir = normalize(dir);
        if !s.dir_exists(&dir) {
            return Err(not_found(&dir));
        }
        Ok(s.live
            .keys()
            .filter(|p| p.parent() == Some(dir.as_path()))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
            .collect())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.lock()?;
        s.count_op()?;
        let (from, to) = (normalize(from), normalize(to));
        let ino = s.file_ino(&from)?;
        if s.live.get(&to) == Some(&Entry::Dir) || is_root(&to) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                SimError(format!("{} is a directory", to.display())),
            ));
        }
        if !s.dir_exists(&parent_of(&to)) {
            return Err(not_found(&parent_of(&to)));
        }
        s.live.remove(&from);
        s.live.insert(to, Entry::File(ino));
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut s = self.lock()?;
        s.count_op()?;
        let path = normalize(path);
        s.file_ino(&path)?;
        s.live.remove(&path);
        Ok(())
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        let mut s = self.lock()?;
        s.count_op()?;
        let path = normalize(path);
        if !s.dir_exists(&path) {
            return Err(not_found(&path));
        }
        if s.live.keys().any(|p| p.parent() == Some(path.as_path())) {
            return Err(io::Error::other(format!(
                "directory {} is not empty",
                path.display()
            )));
        }
        s.live.remove(&path);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.lock()?.sync_dir(&normalize(dir))
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        let s = self.lock()?;
        s.alive()?;
        let path = normalize(path);
        Ok(is_root(&path) || s.live.contains_key(&path))
    }

    fn try_lock(&self, path: &Path, shared: bool) -> io::Result<Option<Box<dyn LockGuard>>> {
        let mut s = self.lock()?;
        s.alive()?;
        let path = normalize(path);
        if shared && !s.live.contains_key(&path) {
            // Like the real backend: a reader creates nothing, and holds no lock.
            if !s.dir_exists(&parent_of(&path)) {
                return Err(not_found(&parent_of(&path)));
            }
            return Ok(Some(Box::new(SimNoLock)));
        }
        if !s.live.contains_key(&path) {
            // Like the real backend, the lock file is created if missing (not counted as a
            // crash point: it holds no data).
            if !s.dir_exists(&parent_of(&path)) {
                return Err(not_found(&parent_of(&path)));
            }
            let ino = s.next_ino;
            s.next_ino = s.next_ino.saturating_add(1);
            s.inodes.insert(ino, Inode::default());
            s.live.insert(path.clone(), Entry::File(ino));
        }
        let l = s.locks.entry(path.clone()).or_default();
        let granted = if shared {
            !l.exclusive
        } else {
            !l.exclusive && l.shared == 0
        };
        if !granted {
            return Ok(None);
        }
        if shared {
            l.shared = l.shared.saturating_add(1);
        } else {
            l.exclusive = true;
        }
        Ok(Some(Box::new(SimLock {
            state: Arc::clone(&self.state),
            path,
            epoch: s.epoch,
            shared,
        })))
    }
}
