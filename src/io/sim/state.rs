//! The simulated machine's state: inodes with live, durable and clean images, the live and
//! durable namespaces, locks, the fault settings, and the crash that turns one into the
//! other (see the module docs of [`super`]).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io;
use std::ops::Range;
use std::path::{Component, Path, PathBuf};

/// Sector size of the crash model.
pub const SECTOR: usize = 512;

pub(super) const EIO: i32 = 5;
pub(super) const ENOSPC: i32 = 28;

pub(super) fn eio(what: &str) -> io::Error {
    io::Error::new(
        io::Error::from_raw_os_error(EIO).kind(),
        SimError(format!("{what} (os error {EIO}: simulated I/O error)")),
    )
}

pub(super) fn raw_eio() -> io::Error {
    io::Error::from_raw_os_error(EIO)
}

#[derive(Debug)]
pub(super) struct SimError(pub(super) String);

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SimError {}

use crate::rng::SplitMix64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Entry {
    File(u64),
    Dir,
}

#[derive(Debug, Default)]
pub(super) struct Inode {
    pub(super) live: Vec<u8>,
    pub(super) clean: Vec<u8>,
    pub(super) durable: Vec<u8>,
}

#[derive(Debug, Default)]
pub(super) struct LockState {
    pub(super) exclusive: bool,
    pub(super) shared: usize,
}

#[derive(Debug)]
pub(super) struct State {
    pub(super) rng: SplitMix64,
    /// Boot generation; handles from an older one are stale.
    pub(super) epoch: u64,
    pub(super) next_ino: u64,
    pub(super) inodes: HashMap<u64, Inode>,
    pub(super) live: BTreeMap<PathBuf, Entry>,
    pub(super) durable: BTreeMap<PathBuf, Entry>,
    pub(super) locks: HashMap<PathBuf, LockState>,
    pub(super) read_faults: Vec<(u64, Range<u64>)>,
    pub(super) space_left: Option<u64>,
    /// `Some(None)`: the next sync of any file fails; `Some(Some(ino))`: of that file.
    pub(super) sync_fault: Option<Option<u64>>,
    pub(super) countdown: Option<u64>,
    pub(super) dead: bool,
    pub(super) mutating_ops: u64,
    pub(super) crashes: u64,
    /// Whether an overwritten sector that held synced bytes may come back zeroed or garbled.
    pub(super) tear_synced_sectors: bool,
}

pub(super) fn normalize(path: &Path) -> PathBuf {
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

pub(super) fn is_root(path: &Path) -> bool {
    path.parent().is_none() || path.as_os_str().is_empty()
}

pub(super) fn parent_of(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}

pub(super) fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        SimError(format!("{}: no such file or directory", path.display())),
    )
}

pub(super) fn padded(bytes: &[u8], range: Range<usize>) -> Vec<u8> {
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
    pub(super) fn dir_exists(&self, path: &Path) -> bool {
        is_root(path) || self.live.get(path) == Some(&Entry::Dir)
    }

    pub(super) fn file_ino(&self, path: &Path) -> io::Result<u64> {
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
    pub(super) fn alive(&self) -> io::Result<()> {
        if self.dead {
            Err(eio("the simulated machine has died (crash point reached)"))
        } else {
            Ok(())
        }
    }

    /// Counts one mutating call; `Err` when it is the one that dies (or it is dead already).
    pub(super) fn count_op(&mut self) -> io::Result<()> {
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

    pub(super) fn check_handle(&self, epoch: u64) -> io::Result<()> {
        if epoch != self.epoch {
            return Err(eio("stale file handle from before a simulated crash"));
        }
        self.alive()
    }

    pub(super) fn inode(&mut self, ino: u64) -> io::Result<&mut Inode> {
        self.inodes
            .get_mut(&ino)
            .ok_or_else(|| eio("file handle refers to a vanished inode"))
    }

    pub(super) fn write(&mut self, ino: u64, buf: &[u8], offset: u64) -> io::Result<()> {
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

    pub(super) fn sync_file(&mut self, ino: u64) -> io::Result<()> {
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

    pub(super) fn sync_dir(&mut self, dir: &Path) -> io::Result<()> {
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

    pub(super) fn crash(&mut self) {
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

    pub(super) fn crash_file(&mut self, inode: &mut Inode) {
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
