//! The live end of a store, for other processes. The writer publishes the end of what
//! readers may see (`Inner::visible`: durable under `Sync`, written otherwise) in
//! `DIR/LIVE`; a read-only opener that finds the writer's lock taken follows it: it reads
//! only up to the published end (so it never takes the writer's unfinished tail for a torn
//! one, and under `Sync` never sees an append that is not on disk), takes in new appends
//! and segments as the end moves, and wakes its subscribers. A file watcher (inotify
//! through the `notify` crate) tells it the file changed; a poll every
//! [`FOLLOW_POLL`] bounds the delay where watching is not available.
//!
//! `LIVE` is 20 bytes, rewritten in place and never synced (it only matters while the
//! writer runs): magic `SLLV`, format version (u32), position (u64), CRC-32 of the
//! position (u32), all little-endian. A reader that meets a half-written one reads again.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Inner;
use super::maintenance::{Signal, spawn_background};
use crate::error::{Error, Result};
use crate::format;
use crate::io::{LockGuard, Storage, StorageFile};

/// Name of the file holding the published end of the log.
pub const LIVE_FILE: &str = "LIVE";
const MAGIC: [u8; 4] = *b"SLLV";
const VERSION: u32 = 1;
const LEN: usize = 20;
/// How often a follower looks at `LIVE` without being told it changed.
pub const FOLLOW_POLL: Duration = Duration::from_millis(50);
/// How long the publisher lets commits gather before it writes `LIVE` again (so a burst
/// of appends costs one small write, not one each).
const PUBLISH_COALESCE: Duration = Duration::from_micros(100);

fn encode(position: u64) -> [u8; LEN] {
    let mut b = [0u8; LEN];
    let p = position.to_le_bytes();
    for (dst, src) in b.iter_mut().zip(
        MAGIC
            .iter()
            .chain(VERSION.to_le_bytes().iter())
            .chain(p.iter())
            .chain(crc32fast::hash(&p).to_le_bytes().iter()),
    ) {
        *dst = *src;
    }
    b
}

fn decode(b: &[u8]) -> Option<u64> {
    let mut r = format::le::Reader::new(b);
    let magic: [u8; 4] = r.array().ok()?;
    let version = r.u32().ok()?;
    let position = r.u64().ok()?;
    let crc = r.u32().ok()?;
    (magic == MAGIC && version == VERSION && crc == crc32fast::hash(&position.to_le_bytes()))
        .then_some(position)
}

/// The end the writer of the store in `dir` published, if it published one.
///
/// # Errors
/// I/O errors other than a missing file.
pub(crate) fn read_live(storage: &dyn Storage, dir: &Path) -> Result<Option<u64>> {
    let path = dir.join(LIVE_FILE);
    let file = match storage.open_read_only(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("open {}", path.display()), e)),
    };
    // A rewrite may be caught half done: read again.
    for _ in 0..16 {
        let mut buf = [0u8; LEN];
        let n = file
            .read_at(&mut buf, 0)
            .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
        if let Some(p) = buf.get(..n).and_then(decode) {
            return Ok(Some(p));
        }
        std::thread::yield_now();
    }
    Ok(None)
}

/// The lock guard of a follower, which holds none (the writer holds the lock).
#[derive(Debug)]
pub(super) struct Unlocked;
impl LockGuard for Unlocked {}

/// A writer's existing `LIVE` file, opened early in the store's open with its page asked
/// of the storage at once: on a cold page cache (after a machine crash) the first publish,
/// which rewrites part of that page, then does not wait for it to be read. `None` when
/// there is none yet ([`start_publisher`] creates it: nothing is created before the open
/// knows the store is one it can open).
pub(super) fn open_existing(
    storage: &dyn Storage,
    dir: &Path,
) -> Result<Option<Arc<dyn StorageFile>>> {
    let path = dir.join(LIVE_FILE);
    let exists = storage
        .exists(&path)
        .map_err(|e| Error::io(format!("stat {}", path.display()), e))?;
    if !exists {
        return Ok(None);
    }
    let file = storage
        .open(&path)
        .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
    // A hint: nothing depends on it.
    let _ = file.will_need(0, LEN as u64);
    Ok(Some(file))
}

/// Writer side: publishes the end in `LIVE` (the file [`open_existing`] opened, or a new
/// one) and starts the thread that keeps it current.
pub(super) fn start_publisher(
    inner: &Arc<Inner>,
    opened: Option<Arc<dyn StorageFile>>,
) -> Result<()> {
    let path = inner.dir.join(LIVE_FILE);
    let storage = inner.options.storage.as_ref();
    // The file opened early is used while its name still leads to it: one removed during
    // the open (by hand) would be published into unseen.
    let still_there = || {
        storage
            .exists(&path)
            .map_err(|e| Error::io(format!("stat {}", path.display()), e))
    };
    let file = match opened {
        Some(file) if still_there()? => file,
        _ => storage
            .create(&path)
            .map_err(|e| Error::io(format!("create {}", path.display()), e))?,
    };
    let _ = inner.live.set(file);
    inner.publish_live();
    let signal = Arc::new(Signal::default());
    inner.published.watch(Arc::clone(&signal));
    spawn_background(
        inner,
        "streamlog-live",
        signal,
        Duration::from_secs(1),
        move |inner| {
            std::thread::sleep(PUBLISH_COALESCE);
            inner.published.rearm();
            inner.publish_live();
        },
    )
}

/// Reader side: starts the thread that follows `LIVE` whenever a writer runs beside it.
pub(super) fn start_follower(inner: &Arc<Inner>) -> Result<()> {
    let signal = Arc::new(Signal::default());
    let wake = Arc::clone(&signal);
    // Watching is an optimisation: where it cannot be set up (no inotify, a simulated
    // disk), the poll alone follows the writer.
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Only writes (and new files: a new segment) matter; opening or reading files,
        // this follower's own reads of LIVE included, must not wake it.
        if event.is_ok_and(|e| {
            matches!(
                e.kind,
                notify::EventKind::Modify(_) | notify::EventKind::Create(_)
            )
        }) {
            wake.notify_work();
        }
    })
    .ok()
    .and_then(|mut w| {
        use notify::Watcher as _;
        w.watch(&inner.dir, notify::RecursiveMode::NonRecursive)
            .ok()
            .map(|()| w)
    });
    spawn_background(
        inner,
        "streamlog-follow",
        signal,
        FOLLOW_POLL,
        move |inner| {
            let _keep_watching = &watcher;
            if let Err(e) = inner.follow_live() {
                *inner.index_error.lock() = Some(format!("following the writer: {e}"));
            }
        },
    )
}

impl Inner {
    /// Writer side: writes the current visible end to `LIVE` (when it moved).
    pub(super) fn publish_live(&self) {
        let Some(file) = self.live.get() else { return };
        let v = self.visible();
        if self.live_published.swap(v, Ordering::AcqRel) != v || v == 0 {
            // Only live readers depend on it: a failure costs them freshness, nothing else.
            let _ = file.write_at(&encode(v), 0);
        }
    }

    /// Follows the writer's published end: new frames become visible and are indexed,
    /// subscribers are woken.
    pub(super) fn follow_live(&self) -> Result<()> {
        let Some(end) = read_live(self.options.storage.as_ref(), &self.dir)? else {
            return Ok(());
        };
        // A `LIVE` left by a writer that is gone may name an end its recovery cut (after a
        // power loss): it is trusted once a writer rewrote it after this handle opened
        // (that writer ran beside it, in this boot), or from the start when a writer held
        // the store at open. Readers never take the lock to find out, so they never keep
        // a writer from opening.
        if self.live_published.load(Ordering::Acquire) == end {
            return Ok(());
        }
        // The new frames are indexed, and their metadata records taken in, before
        // readers see them: no reader sees an event without the rule that hides it.
        let old = self.log.follow_files(end)?;
        if end <= old {
            return Ok(());
        }
        let from = old.max(self.indexed_to.load(Ordering::Acquire));
        if from < end {
            for item in self.log.frames(from, end) {
                let (header, bytes) = item?;
                // The same key the open's replay indexes by.
                if let Some((stream, first_version, count)) =
                    super::open::events_key(&header, bytes.body())
                {
                    self.index.record(
                        stream,
                        first_version,
                        count,
                        header.position,
                        header.crc,
                        crate::index::commit_time_of(&header, bytes.body()),
                    );
                    if stream == super::METADATA_STREAM {
                        self.apply_metadata_frame(&header, bytes.body(), old)?;
                    }
                }
            }
            self.indexed_to.fetch_max(end, Ordering::AcqRel);
            // The writer's flushed tables replace what this handle indexed by itself,
            // so its memtable stays bounded as the writer's is.
            if self.index.memtable_len() >= self.options.memtable_entries {
                self.index.adopt_flushed(end)?;
            }
        }
        self.log.publish_followed(end);
        self.published.notify();
        Ok(())
    }
}
