//! The `store` layer: the public API. Each file holds one part of it:
//!
//! - `open`: opening and recovery (directory, lock, index, log replay, snapshots);
//! - `writer`: appends, expected versions, idempotent retries, group commit;
//! - `lookup`: finding a stream's frames through the index, visibility, the frame cache;
//! - `read`: stream and `$all` readers;
//! - `snapshots`: snapshots and aggregate loads;
//! - `metadata`: stream metadata and deletes as events of a system stream, and the
//!   registry of them every read path consults;
//! - `lifecycle`: delete, tombstone, reading and changing stream metadata;
//! - `maintenance`: index upkeep, background threads, the clean close;
//! - `report`: info and verification;
//! - `event`, `options`, `aggregate`, `frame`: the types of the model.

mod aggregate;
mod checkpoints;
mod event;
mod frame;
mod lifecycle;
mod live;
mod lookup;
mod maintenance;
mod metadata;
mod open;
mod options;
mod read;
mod report;
mod scavenge;
mod snapshots;
mod time;
mod upcast;
mod writer;

pub use crate::snapshot::Snapshot;
pub use aggregate::{Aggregate, Loaded, SnapshotPolicy};
pub use checkpoints::{CHECKPOINTS_DIR, MAX_CHECKPOINT_NAME_BYTES};
pub use event::{
    AppendResult, EventId, EventRef, EventView, ExpectedVersion, NewEvent, Position, RecordedEvent,
    ResumeToken,
};
#[cfg(feature = "cluster")]
pub(crate) use lifecycle::Change as LifecycleChange;
pub use lifecycle::DeleteResult;
pub use live::LIVE_FILE;
pub(crate) use live::read_live;
pub use metadata::{
    ERASED_EVENT, METADATA_EVENT, METADATA_STREAM, StreamMetadata, TOMBSTONE_EVENT,
};
pub use options::{Clock, Durability, MAX_SEGMENT_SIZE_BYTES, MIN_SEGMENT_SIZE_BYTES, Options};
pub use read::{AllEvents, StreamEvents};
pub(crate) use report::count_and_check_versions;
pub use report::{RecoveryReport, StoreInfo};
pub use scavenge::{SCAVENGE_MARKER, ScavengeOptions, ScavengeReport};
pub use time::AsOf;
pub use upcast::{Upcast, Upcasters};
pub use writer::AppendRequest;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use parking_lot::{Condvar, Mutex};

use crate::cache::Generations;
use crate::error::Result;
use crate::index::Index;
use crate::io::LockGuard;
use crate::log::Log;
use crate::snapshot::{SnapshotReport, SnapshotStore};
use frame::DecodedFrame;
use maintenance::{Background, Signal};
use writer::{Published, Writer};

/// Name of the lock file in the store directory.
pub const LOCK_FILE: &str = "LOCK";
/// Name of the directory holding the segment files.
pub const SEGMENTS_DIR: &str = "segments";
/// Name of the directory holding the index files.
pub const INDEX_DIR: &str = "index";
/// Name of the directory holding the snapshot files.
pub const SNAPSHOTS_DIR: &str = "snapshots";

/// An open event store. Every method takes `&self`; clone it to share it between threads
/// or tasks (a clone is another handle to the same store, costing one reference count).
/// Dropping the last handle closes the store cleanly (see [`Store::close`] to see errors).
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<Inner>,
    /// Closes the store when the last handle goes (readers may hold `inner` longer).
    _closer: Arc<Closer>,
}

/// Closes the store it holds when dropped.
#[derive(Debug)]
struct Closer(Arc<Inner>);

impl Drop for Closer {
    fn drop(&mut self) {
        // Errors are visible through `close`; a drop can only do its best.
        let _ = self.0.close();
    }
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    options: Options,
    log: Arc<Log>,
    /// The writer's side: position assignment, encoded-but-unwritten frames, and the
    /// per-stream state it needs.
    writer: Mutex<Writer>,
    index: Index,
    /// Checked frames read by stream readers, by position, bounded in bytes
    /// ([`Options::frame_cache_bytes`]). Frames below the visible end never change, so
    /// the cache needs no invalidation; it dies with the store.
    frames: Mutex<Generations<u64, Arc<DecodedFrame>, rustc_hash::FxBuildHasher>>,
    /// Commit times of the appends that searches for a time probed, by position (at most
    /// [`time::COMMIT_TIMES_MAX`]): every search over a stream starts with the same
    /// probes. Frames below the visible end never change, so it needs no invalidation.
    commit_times: Mutex<rustc_hash::FxHashMap<u64, i64>>,
    snapshots: SnapshotStore,
    /// Stream metadata and deletes, read from the system stream at open and kept current
    /// by the writer (or, in a follower, as it indexes the writer's frames).
    registry: metadata::Registry,
    /// Wakes readers waiting for new visible appends (subscriptions).
    published: Published,
    /// The subscription layer's per-store state (its shared reader), created with the
    /// first subscription that needs it. Typed there: the store only keeps it.
    subscription_hub: std::sync::OnceLock<Arc<dyn std::any::Any + Send + Sync>>,
    /// Writer: the `LIVE` file it publishes its visible end in.
    live: std::sync::OnceLock<Arc<dyn crate::io::StorageFile>>,
    /// Writer: the end last written to `LIVE`. Reader: `LIVE`'s content when it opened
    /// (a `LIVE` left by a writer that is gone is trusted only once rewritten).
    live_published: std::sync::atomic::AtomicU64,
    /// The log position up to which the index holds every append (a follower indexes
    /// what the writer publishes from there on).
    indexed_to: std::sync::atomic::AtomicU64,
    /// Group commit: whether a leader is writing and syncing right now, and who waits.
    commits: Mutex<writer::CommitQueue>,
    recovery: RecoveryReport,
    /// End of the log when it was opened.
    opened_at: u64,
    closed: AtomicBool,
    /// Background threads: the `Periodic` syncer and the index maintainer.
    background: Mutex<Vec<Background>>,
    /// Wakes the index maintainer (the flag says it has work).
    maintenance: Arc<Signal>,
    /// Signalled when the maintainer has flushed a memtable (for backpressure).
    maintenance_done: Condvar,
    maintenance_lock: Mutex<()>,
    /// The last error of the index maintainer (index files are derived data: a failure to
    /// write them loses nothing and is retried).
    index_error: Mutex<Option<String>>,
    /// One scavenge at a time.
    scavenging: Mutex<()>,
    /// Checkpoints carried by appends whose files are not written yet (see
    /// `checkpoints.rs`), and their number (read without the lock on the commit path).
    pending_checkpoints: Mutex<Vec<checkpoints::PendingCheckpoint>>,
    pending_checkpoint_count: std::sync::atomic::AtomicUsize,
    /// One checkpoint file replaced at a time.
    checkpoint_files: Mutex<()>,
    _lock: Box<dyn LockGuard>,
}

impl Store {
    /// The directory the store lives in.
    pub fn path(&self) -> &Path {
        &self.inner.dir
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &Options {
        &self.inner.options
    }

    /// What recovery found and did when the store was opened: the log and the index.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.inner.recovery
    }

    /// What opening the snapshot files found (a torn tail cut, a damaged generation
    /// discarded). They are opened at their first use, not by [`Store::open`], so that an
    /// open reads only what appends and reads need; this opens them if nothing has yet.
    ///
    /// # Errors
    /// [`Error::UnsupportedFormat`] for snapshot files of a newer format; I/O errors
    /// creating new snapshot files.
    pub fn snapshot_report(&self) -> Result<SnapshotReport> {
        self.inner.snapshots.report()
    }

    /// Closes the store: makes everything durable and writes a checkpoint frame that
    /// attests the whole log, so that any later damage anywhere is reported as corruption.
    /// It closes the store for every handle: later writes through other clones return
    /// [`Error::Closed`](crate::Error::Closed); reads of what is stored go on working.
    ///
    /// # Errors
    /// [`Error::Poisoned`](crate::Error::Poisoned) or [`Error::Io`](crate::Error::Io)
    /// when the final sync fails.
    pub fn close(self) -> Result<()> {
        self.inner.close()
    }

    /// End of the log: where the next append goes ([`StoreInfo::head`], without the
    /// rest of [`Store::info`]'s work).
    pub fn head(&self) -> Position {
        Position(self.inner.log.written())
    }

    /// End of what readers see now (a frame boundary).
    pub(crate) fn visible(&self) -> u64 {
        self.inner.visible()
    }

    /// Waits until readers see beyond `position`, the store is closed, or `timeout`
    /// passes; returns whether they see beyond it.
    pub(crate) fn wait_visible_beyond(&self, position: u64, timeout: std::time::Duration) -> bool {
        wait_visible_beyond(&self.inner, position, timeout)
    }

    /// The subscription layer's per-store state, created by `init` the first time.
    pub(crate) fn subscription_hub(
        &self,
        init: impl FnOnce() -> Arc<dyn std::any::Any + Send + Sync>,
    ) -> Arc<dyn std::any::Any + Send + Sync> {
        Arc::clone(self.inner.subscription_hub.get_or_init(init))
    }

    /// A handle that does not keep the store open (see [`StoreRef`]).
    pub(crate) fn downgrade(&self) -> StoreRef {
        StoreRef {
            inner: Arc::downgrade(&self.inner),
            closer: Arc::downgrade(&self._closer),
        }
    }

    /// Starts a thread of the store's own that runs `body` with a [`StoreRef`] and a
    /// function that says whether the store is closing; `close` tells it so and waits for
    /// it to end.
    ///
    /// # Errors
    /// [`Error::Io`](crate::Error::Io) when the thread cannot be started.
    pub(crate) fn spawn_worker(
        &self,
        name: &str,
        body: impl FnOnce(StoreRef, Arc<dyn Fn() -> bool + Send + Sync>) + Send + 'static,
    ) -> Result<()> {
        let signal = Arc::new(Signal::default());
        let stopped = Arc::clone(&signal);
        let stop: Arc<dyn Fn() -> bool + Send + Sync> = Arc::new(move || stopped.is_stopped());
        let handle = self.downgrade();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || body(handle, stop))
            .map_err(|e| crate::Error::io(format!("start thread {name}"), e))?;
        self.inner.background.lock().push(Background {
            handle: thread,
            signal,
        });
        Ok(())
    }

    /// Whether [`Store::close`] was called on any handle.
    pub(crate) fn is_closed(&self) -> bool {
        self.inner.closed.load(std::sync::atomic::Ordering::Acquire)
    }

    fn lookup(&self) -> lookup::Lookup {
        lookup::Lookup {
            inner: Arc::clone(&self.inner) as Arc<dyn lookup::FrameLookup>,
            visible: self.visible(),
            upcasters: self.inner.options.upcasters.clone(),
        }
    }
}

/// Waits until readers of `inner` see beyond `position`, the store is closed, or `timeout`
/// passes; returns whether they see beyond it.
fn wait_visible_beyond(inner: &Arc<Inner>, position: u64, timeout: std::time::Duration) -> bool {
    if !inner.published.has_waker() {
        let signal = Arc::new(maintenance::Signal::default());
        if !inner.published.set_waker(Arc::clone(&signal)) {
            // Without the thread, the commit path wakes waiters itself.
            let _ = maintenance::spawn_background(
                inner,
                "streamlog-wake",
                signal,
                std::time::Duration::from_secs(1),
                |inner| inner.published.wake_waiters(),
            );
        }
    }
    inner.published.wait_until(
        || inner.visible() > position || inner.closed.load(std::sync::atomic::Ordering::Acquire),
        timeout,
    );
    inner.visible() > position
}

/// A handle on a store that does not keep it open, for the store's own threads that
/// serve its handles (the subscription layer's shared reader): it reaches the store only
/// while the store is open and some [`Store`] handle is alive.
#[derive(Debug, Clone)]
pub(crate) struct StoreRef {
    inner: std::sync::Weak<Inner>,
    closer: std::sync::Weak<Closer>,
}

impl StoreRef {
    /// A full handle, while the store is open and some handle is alive.
    pub(crate) fn upgrade(&self) -> Option<Store> {
        let closer = self.closer.upgrade()?;
        let inner = self.inner.upgrade()?;
        let store = Store {
            inner,
            _closer: closer,
        };
        (!store.is_closed()).then_some(store)
    }

    /// [`Store::wait_visible_beyond`], holding the store only while it waits (at most
    /// `timeout`); `false` at once when the store is closed or gone.
    pub(crate) fn wait_visible_beyond(&self, position: u64, timeout: std::time::Duration) -> bool {
        match self.inner.upgrade() {
            Some(inner) if !inner.closed.load(std::sync::atomic::Ordering::Acquire) => {
                wait_visible_beyond(&inner, position, timeout)
            }
            _ => false,
        }
    }
}
