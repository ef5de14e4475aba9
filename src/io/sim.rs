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

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io;
use std::ops::Range;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::{LockGuard, Mapping, Storage, StorageFile};

/// Sector size of the crash model.
pub const SECTOR: usize = 512;

const EIO: i32 = 5;
const ENOSPC: i32 = 28;

fn eio(what: &str) -> io::Error {
    io::Error::new(
        io::Error::from_raw_os_error(EIO).kind(),
        SimError(format!("{what} (os error {EIO}: simulated I/O error)")),
    )
}

fn raw_eio() -> io::Error {
    io::Error::from_raw_os_error(EIO)
}

#[derive(Debug)]
struct SimError(String);

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SimError {}

pub use crate::rng::SplitMix64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    File(u64),
    Dir,
}

#[derive(Debug, Default)]
struct Inode {
    live: Vec<u8>,
    clean: Vec<u8>,
    durable: Vec<u8>,
}

#[derive(Debug, Default)]
struct LockState {
    exclusive: bool,
    shared: usize,
}

#[derive(Debug)]
struct State {
    rng: SplitMix64,
    /// Boot generation; handles from an older one are stale.
    epoch: u64,
    next_ino: u64,
    inodes: HashMap<u64, Inode>,
    live: BTreeMap<PathBuf, Entry>,
    durable: BTreeMap<PathBuf, Entry>,
    locks: HashMap<PathBuf, LockState>,
    read_faults: Vec<(u64, Range<u64>)>,
    space_left: Option<u64>,
    /// `Some(None)`: the next sync of any file fails; `Some(Some(ino))`: of that file.
    sync_fault: Option<Option<u64>>,
    countdown: Option<u64>,
    dead: bool,
    mutating_ops: u64,
    crashes: u64,
    /// Whether an overwritten sector that held synced bytes may come back zeroed or garbled.
    tear_synced_sectors: bool,
}

fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

fn is_root(path: &Path) -> bool {
    path.parent().is_none() || path.as_os_str().is_empty()
}

fn parent_of(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        SimError(format!("{}: no such file or directory", path.display())),
    )
}

fn padded(bytes: &[u8], range: Range<usize>) -> Vec<u8> {
    let mut out = vec![0u8; range.len()];
    let end = range.end.min(bytes.len());
    if range.start < end
        && let (Some(dst), Some(src)) = (
            out.get_mut(..end - range.start),
            bytes.get(range.start..end),
        )
    {
        dst.copy_from_slice(src);
    }
    out
}

impl State {
    fn dir_exists(&self, path: &Path) -> bool {
        is_root(path) || self.live.get(path) == Some(&Entry::Dir)
    }

    fn file_ino(&self, path: &Path) -> io::Result<u64> {
        match self.live.get(path) {
            Some(Entry::File(ino)) => Ok(*ino),
            Some(Entry::Dir) => Err(io::Error::other(SimError(format!(
                "{} is a directory",
                path.display()
            )))),
            None => Err(not_found(path)),
        }
    }

    /// Fails when the machine is dead (a crash point was hit).
    fn alive(&self) -> io::Result<()> {
        if self.dead {
            Err(eio("the simulated machine has died (crash point reached)"))
        } else {
            Ok(())
        }
    }

    /// Counts one mutating call; `Err` when it is the one that dies (or it is dead already).
    fn count_op(&mut self) -> io::Result<()> {
        self.alive()?;
        self.mutating_ops = self.mutating_ops.saturating_add(1);
        if let Some(n) = self.countdown.as_mut() {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.dead = true;
                self.countdown = None;
                return Err(eio("the simulated machine died during this call"));
            }
        }
        Ok(())
    }

    fn check_handle(&self, epoch: u64) -> io::Result<()> {
        if epoch != self.epoch {
            return Err(eio("stale file handle from before a simulated crash"));
        }
        self.alive()
    }

    fn inode(&mut self, ino: u64) -> io::Result<&mut Inode> {
        self.inodes
            .get_mut(&ino)
            .ok_or_else(|| eio("file handle refers to a vanished inode"))
    }

    fn write(&mut self, ino: u64, buf: &[u8], offset: u64) -> io::Result<()> {
        let was_dead = self.dead;
        let counted = self.count_op();
        let mut len = buf.len();
        if counted.is_err() {
            if was_dead {
                return counted;
            }
            // The call that dies: a random prefix reaches the page cache.
            len = usize::try_from(self.rng.below(buf.len() as u64 + 1)).unwrap_or(0);
        }
        let mut result = counted;
        if result.is_ok()
            && let Some(left) = self.space_left.as_mut()
        {
            let fits = usize::try_from(*left).unwrap_or(usize::MAX);
            if len > fits {
                len = fits;
                result = Err(io::Error::from_raw_os_error(ENOSPC));
            }
            *left = left.saturating_sub(len as u64);
        }
        let start = usize::try_from(offset).map_err(|_| eio("offset out of range"))?;
        let end = start
            .checked_add(len)
            .ok_or_else(|| eio("offset out of range"))?;
        let src = buf.get(..len).unwrap_or_default();
        let inode = self.inode(ino)?;
        if inode.live.len() < end {
            inode.live.resize(end, 0);
        }
        if let Some(dst) = inode.live.get_mut(start..end) {
            dst.copy_from_slice(src);
        }
        result
    }

    fn sync_file(&mut self, ino: u64) -> io::Result<()> {
        self.count_op()?;
        let fault = match self.sync_fault {
            Some(None) => true,
            Some(Some(target)) => target == ino,
            None => false,
        };
        if fault {
            self.sync_fault = None;
            let inode = self.inode(ino)?;
            // fsyncgate: the dirty pages are marked clean without reaching the medium.
            inode.clean = inode.live.clone();
            return Err(raw_eio());
        }
        let inode = self.inode(ino)?;
        let live_len = inode.live.len();
        let mut durable = std::mem::take(&mut inode.durable);
        durable.resize(live_len, 0);
        let mut at = 0usize;
        while at < live_len {
            let end = at.saturating_add(SECTOR).min(live_len);
            let live = inode.live.get(at..end).unwrap_or_default();
            if padded(&inode.clean, at..end) != live
                && let Some(dst) = durable.get_mut(at..end)
            {
                dst.copy_from_slice(live);
            }
            at = end;
        }
        inode.durable = durable;
        inode.clean = inode.live.clone();
        Ok(())
    }

    fn sync_dir(&mut self, dir: &Path) -> io::Result<()> {
        self.count_op()?;
        if !self.dir_exists(dir) {
            return Err(not_found(dir));
        }
        let children: Vec<PathBuf> = self
            .live
            .keys()
            .chain(self.durable.keys())
            .filter(|p| p.parent() == Some(dir))
            .cloned()
            .collect();
        for p in children {
            match self.live.get(&p) {
                Some(e) => {
                    self.durable.insert(p, *e);
                }
                None => {
                    self.durable.remove(&p);
                }
            }
        }
        Ok(())
    }

    fn crash(&mut self) {
        self.epoch = self.epoch.wrapping_add(1);
        self.crashes = self.crashes.saturating_add(1);
        self.locks.clear();
        self.dead = false;
        self.countdown = None;
        // The namespace: what was durable, minus entries under non-durable directories.
        let durable = std::mem::take(&mut self.durable);
        let survives = |p: &Path| {
            let mut cur = p.parent();
            while let Some(dir) = cur {
                if is_root(dir) {
                    return true;
                }
                if durable.get(dir) != Some(&Entry::Dir) {
                    return false;
                }
                cur = dir.parent();
            }
            true
        };
        let namespace: BTreeMap<PathBuf, Entry> = durable
            .iter()
            .filter(|(p, _)| survives(p))
            .map(|(p, e)| (p.clone(), *e))
            .collect();
        let mut inos: Vec<u64> = namespace
            .values()
            .filter_map(|e| match e {
                Entry::File(ino) => Some(*ino),
                Entry::Dir => None,
            })
            .collect();
        inos.sort_unstable();
        inos.dedup();
        let mut inodes = std::mem::take(&mut self.inodes);
        inodes.retain(|ino, _| inos.binary_search(ino).is_ok());
        for ino in &inos {
            if let Some(inode) = inodes.get_mut(ino) {
                self.crash_file(inode);
            }
        }
        self.inodes = inodes;
        self.live = namespace.clone();
        self.durable = namespace;
        self.read_faults
            .retain(|(ino, _)| inos.binary_search(ino).is_ok());
        self.sync_fault = match self.sync_fault {
            Some(Some(ino)) if inos.binary_search(&ino).is_err() => None,
            other => other,
        };
    }

    fn crash_file(&mut self, inode: &mut Inode) {
        let live_len = inode.live.len();
        let durable_len = inode.durable.len();
        let clean_len = inode.clean.len();
        let new_len = if live_len == clean_len || live_len == durable_len {
            // No size change since the kernel last wrote the size out (or the change was
            // lost with a failed sync): the medium's length stands.
            durable_len
        } else {
            match self.rng.below(3) {
                0 => live_len,
                1 => durable_len,
                _ => {
                    let lo = live_len.min(durable_len);
                    let hi = live_len.max(durable_len);
                    let at = lo.saturating_add(
                        usize::try_from(self.rng.below((hi - lo) as u64 + 1)).unwrap_or(0),
                    );
                    (at / SECTOR * SECTOR).clamp(lo, hi)
                }
            }
        };
        let mut out = vec![0u8; new_len];
        let mut at = 0usize;
        while at < new_len {
            let end = at.saturating_add(SECTOR).min(new_len);
            let live = padded(&inode.live, at..end);
            let old = padded(&inode.durable, at..end);
            let clean = padded(&inode.clean, at..end);
            let chosen = if live == old || live == clean {
                // Unchanged, or dropped by a failed sync: the medium has the old bytes.
                old
            } else if at < inode.durable.len() && !self.tear_synced_sectors {
                // The sector holds synced bytes: its rewrite is atomic (old or new).
                if self.rng.below(2) == 0 { live } else { old }
            } else {
                match self.rng.below(4) {
                    0 => live,
                    1 => vec![0u8; end - at],
                    2 => old,
                    _ => {
                        let mut g = vec![0u8; end - at];
                        self.rng.fill(&mut g);
                        g
                    }
                }
            };
            if let Some(dst) = out.get_mut(at..end) {
                dst.copy_from_slice(&chosen);
            }
            at = end;
        }
        inode.live = out.clone();
        inode.clean = out.clone();
        inode.durable = out;
    }
}

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

/// A file opened on a [`SimStorage`].
struct SimFile {
    state: Arc<Mutex<State>>,
    ino: u64,
    epoch: u64,
    writable: bool,
    path: PathBuf,
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
    fn check_writable(&self) -> io::Result<()> {
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
}

struct SimLock {
    state: Arc<Mutex<State>>,
    path: PathBuf,
    epoch: u64,
    shared: bool,
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
struct SimNoLock;

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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn p(s: &str) -> &Path {
        Path::new(s)
    }

    /// A file `/d/f` whose entry is durable, with `durable` synced and `extra` written after.
    fn setup(seed: u64, durable: &[u8], extra: &[u8]) -> (SimStorage, Arc<dyn StorageFile>) {
        let sim = SimStorage::new(seed);
        sim.create_dir_all(p("/d")).unwrap();
        sim.sync_dir(p("/")).unwrap();
        let f = sim.create(p("/d/f")).unwrap();
        f.write_at(durable, 0).unwrap();
        f.sync_data().unwrap();
        sim.sync_dir(p("/d")).unwrap();
        f.write_at(extra, durable.len() as u64).unwrap();
        (sim, f)
    }

    fn read_all(sim: &SimStorage, path: &str) -> Vec<u8> {
        let f = sim.open(p(path)).unwrap();
        let mut buf = vec![0u8; f.len().unwrap() as usize];
        let n = f.read_at(&mut buf, 0).unwrap();
        assert_eq!(n, buf.len());
        buf
    }

    #[test]
    fn synced_data_survives_a_crash_exactly() {
        for seed in 0..50 {
            let (sim, f) = setup(seed, &[7u8; 3000], b"");
            f.sync_data().unwrap();
            sim.crash();
            assert_eq!(read_all(&sim, "/d/f"), vec![7u8; 3000]);
        }
    }

    #[test]
    fn unsynced_data_is_kept_lost_zeroed_or_garbled_per_sector() {
        let mut outcomes = std::collections::BTreeSet::new();
        for seed in 0..200 {
            let (sim, _f) = setup(seed, &[1u8; 512], &[2u8; 4096]);
            sim.crash();
            let after = read_all(&sim, "/d/f");
            // The synced sector is untouched.
            assert_eq!(&after[..512], &[1u8; 512][..]);
            assert!(after.len() >= 512 && after.len() <= 512 + 4096);
            assert_eq!(after.len() % 512, 0);
            for sector in after[512..].chunks(512) {
                let kind = if sector.iter().all(|&b| b == 2) {
                    "kept"
                } else if sector.iter().all(|&b| b == 0) {
                    "zero"
                } else {
                    "garbage"
                };
                outcomes.insert(kind);
            }
            if after.len() == 512 {
                outcomes.insert("cut");
            }
        }
        for kind in ["kept", "zero", "garbage", "cut"] {
            assert!(outcomes.contains(kind), "never saw {kind}: {outcomes:?}");
        }
    }

    #[test]
    fn overwritten_sectors_may_revert_to_the_old_bytes() {
        let mut saw_old = false;
        let mut saw_new = false;
        for seed in 0..100 {
            let (sim, f) = setup(seed, &[1u8; 1024], b"");
            f.write_at(&[3u8; 1024], 0).unwrap();
            sim.crash();
            let after = read_all(&sim, "/d/f");
            assert_eq!(after.len(), 1024);
            saw_old |= after[..512] == [1u8; 512];
            saw_new |= after[..512] == [3u8; 512];
        }
        assert!(saw_old && saw_new);
    }

    #[test]
    fn directory_entries_need_sync_dir() {
        let sim = SimStorage::new(1);
        sim.create_dir_all(p("/d")).unwrap();
        sim.sync_dir(p("/")).unwrap();
        let f = sim.create(p("/d/new")).unwrap();
        f.write_at(b"x", 0).unwrap();
        f.sync_data().unwrap();
        sim.crash();
        assert!(
            !sim.exists(p("/d/new")).unwrap(),
            "unsynced creation survived"
        );

        let f = sim.create(p("/d/a")).unwrap();
        f.write_at(b"hello", 0).unwrap();
        f.sync_data().unwrap();
        sim.sync_dir(p("/d")).unwrap();
        sim.rename(p("/d/a"), p("/d/b")).unwrap();
        assert!(sim.exists(p("/d/b")).unwrap());
        sim.crash();
        assert!(sim.exists(p("/d/a")).unwrap() && !sim.exists(p("/d/b")).unwrap());

        sim.remove(p("/d/a")).unwrap();
        assert!(!sim.exists(p("/d/a")).unwrap());
        sim.crash();
        assert_eq!(read_all(&sim, "/d/a"), b"hello");

        sim.rename(p("/d/a"), p("/d/b")).unwrap();
        sim.sync_dir(p("/d")).unwrap();
        sim.crash();
        assert_eq!(sim.list(p("/d")).unwrap(), vec!["b".to_string()]);

        // A directory whose entry is not durable takes its files with it.
        sim.create_dir_all(p("/e/f")).unwrap();
        let g = sim.create(p("/e/f/g")).unwrap();
        g.sync_data().unwrap();
        sim.sync_dir(p("/e/f")).unwrap();
        sim.sync_dir(p("/e")).unwrap();
        sim.crash();
        assert!(!sim.exists(p("/e")).unwrap() && !sim.exists(p("/e/f/g")).unwrap());
    }

    #[test]
    fn fsyncgate_failed_sync_drops_dirty_data_and_a_later_sync_lies() {
        for seed in 0..30 {
            let (sim, f) = setup(seed, b"old.", b"new data");
            sim.fail_next_sync(Some(p("/d/f"))).unwrap();
            let e = f.sync_data().unwrap_err();
            assert_eq!(e.raw_os_error(), Some(EIO));
            // The live view still shows the data...
            assert_eq!(read_all(&sim, "/d/f"), b"old.new data");
            // ...and a later sync succeeds without persisting it.
            f.sync_data().unwrap();
            sim.crash();
            // The later sync writes out the new length; the dropped data reads as zeros.
            assert_eq!(
                read_all(&sim, "/d/f"),
                b"old.\0\0\0\0\0\0\0\0",
                "seed {seed}"
            );
            // Without a later sync, neither data nor length survive.
            let (sim, f) = setup(seed, b"old.", b"new data");
            sim.fail_next_sync(None).unwrap();
            assert!(f.sync_data().is_err());
            sim.crash();
            assert_eq!(read_all(&sim, "/d/f"), b"old.", "seed {seed}");
        }
        // Data written after the failure is persisted by a later sync.
        let (sim, f) = setup(3, &[1u8; 512], &[2u8; 512]);
        sim.fail_next_sync(None).unwrap();
        assert!(f.sync_data().is_err());
        f.write_at(&[4u8; 512], 1024).unwrap();
        f.sync_data().unwrap();
        sim.crash();
        let after = read_all(&sim, "/d/f");
        assert_eq!(after.len(), 1536);
        assert_eq!(&after[..512], &[1u8; 512][..]);
        assert_eq!(
            &after[512..1024],
            &[0u8; 512][..],
            "dropped sector came back"
        );
        assert_eq!(&after[1024..], &[4u8; 512][..]);
    }

    #[test]
    fn same_seed_same_outcome() {
        let run = |seed: u64| {
            let (sim, f) = setup(seed, &[9u8; 700], &[5u8; 5000]);
            f.write_at(&[6u8; 100], 10).unwrap();
            sim.crash();
            read_all(&sim, "/d/f")
        };
        for seed in 0..20 {
            assert_eq!(run(seed), run(seed));
        }
        assert!((0..20).any(|s| run(s) != run(s + 1)));
    }

    #[test]
    fn crash_point_kills_every_later_call_until_crash() {
        let (sim, f) = setup(5, b"abc", b"");
        sim.fail_after_ops(2);
        f.write_at(b"d", 3).unwrap();
        assert!(f.sync_data().is_err());
        assert!(sim.is_dead());
        assert!(f.write_at(b"e", 4).is_err());
        assert!(sim.create(p("/d/g")).is_err());
        assert!(f.read_at(&mut [0u8; 1], 0).is_err());
        sim.crash();
        assert!(!sim.is_dead());
        // The old handle is stale; a new one works.
        assert!(f.write_at(b"x", 0).is_err());
        let g = sim.open(p("/d/f")).unwrap();
        g.write_at(b"x", 0).unwrap();
        let data = read_all(&sim, "/d/f");
        assert!(data.starts_with(b"xbc"));
    }

    #[test]
    fn bit_flips_read_faults_and_enospc() {
        let (sim, f) = setup(6, b"\x00\x00", b"");
        sim.flip_bit(p("/d/f"), 1, 3).unwrap();
        assert_eq!(read_all(&sim, "/d/f"), vec![0, 8]);
        sim.crash();
        assert_eq!(read_all(&sim, "/d/f"), vec![0, 8]);
        assert!(sim.flip_bit(p("/d/f"), 2, 0).is_err());
        assert!(sim.flip_bit(p("/nope"), 0, 0).is_err());

        sim.fail_reads(p("/d/f"), 1..2).unwrap();
        let g = sim.open(p("/d/f")).unwrap();
        assert!(g.read_at(&mut [0u8; 1], 0).is_ok());
        assert_eq!(
            g.read_at(&mut [0u8; 2], 0).unwrap_err().raw_os_error(),
            Some(EIO)
        );
        sim.clear_faults();
        assert!(g.read_at(&mut [0u8; 2], 0).is_ok());

        sim.enospc_after(3);
        g.write_at(b"ab", 2).unwrap();
        let e = g.write_at(b"cd", 4).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(ENOSPC));
        assert_eq!(read_all(&sim, "/d/f"), vec![0, 8, b'a', b'b', b'c']);
        drop(f);
    }

    #[test]
    fn locks_are_exclusive_or_shared_and_die_with_the_machine() {
        let sim = SimStorage::new(0);
        sim.create_dir_all(p("/d")).unwrap();
        let a = sim.try_lock(p("/d/LOCK"), false).unwrap().unwrap();
        assert!(sim.try_lock(p("/d/LOCK"), false).unwrap().is_none());
        assert!(sim.try_lock(p("/d/LOCK"), true).unwrap().is_none());
        drop(a);
        let s1 = sim.try_lock(p("/d/LOCK"), true).unwrap().unwrap();
        let s2 = sim.try_lock(p("/d/LOCK"), true).unwrap().unwrap();
        assert!(sim.try_lock(p("/d/LOCK"), false).unwrap().is_none());
        drop(s1);
        assert!(sim.try_lock(p("/d/LOCK"), false).unwrap().is_none());
        drop(s2);
        let old = sim.try_lock(p("/d/LOCK"), false).unwrap().unwrap();
        sim.crash();
        // The directory was never synced: recreate it in the new boot.
        sim.create_dir_all(p("/d")).unwrap();
        let new = sim.try_lock(p("/d/LOCK"), false).unwrap().unwrap();
        drop(old); // must not release the new boot's lock
        assert!(sim.try_lock(p("/d/LOCK"), false).unwrap().is_none());
        drop(new);
    }

    #[test]
    fn map_is_a_copy_of_the_live_bytes() {
        let (_sim, f) = setup(0, b"sealed", b"+more");
        assert_eq!(&*f.map().unwrap(), b"sealed+more");
    }
}
