//! Work beside the appends: index maintenance (memtable flushes and merges, with
//! backpressure), background threads, and the clean close.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::Inner;
use crate::error::{Error, Result};
use crate::format::{self, FRAME_HEADER_LEN};

/// A stop flag and a condition variable to wake a background thread.
#[derive(Debug, Default)]
pub(super) struct Signal {
    state: Mutex<(bool, bool)>, // (stop, work to do)
    cond: Condvar,
}

impl Signal {
    pub(super) fn notify_work(&self) {
        self.state.lock().1 = true;
        self.cond.notify_all();
    }
    pub(super) fn stop(&self) {
        self.state.lock().0 = true;
        self.cond.notify_all();
    }
    /// Whether the thread was told to stop.
    pub(super) fn is_stopped(&self) -> bool {
        self.state.lock().0
    }
    /// Waits for work, a stop or `timeout`; returns `false` on stop.
    pub(super) fn wait(&self, timeout: Duration) -> bool {
        let mut st = self.state.lock();
        if !st.0 && !st.1 {
            self.cond.wait_for(&mut st, timeout);
        }
        st.1 = false;
        !st.0
    }
}

/// A background thread and the signal that stops it.
#[derive(Debug)]
pub(super) struct Background {
    pub(super) handle: JoinHandle<()>,
    pub(super) signal: Arc<Signal>,
}

impl Inner {
    /// Whether the memtable is due to be flushed: full, or covering
    /// [`Options::memtable_log_bytes`] of log.
    pub(super) fn index_due(&self) -> bool {
        self.index.memtable_full()
            || self
                .log
                .written()
                .saturating_sub(self.index.memtable_start())
                >= self.options.memtable_log_bytes
    }

    /// One round of index maintenance: freeze a due memtable (or any, when `all`), make
    /// the log durable through what it covers, flush it to a table, then merge tables.
    /// Errors are kept for `info` and retried at the next round: index files are derived
    /// data, and the entries stay in memory until written.
    pub(super) fn maintain_index(&self, all: bool) {
        let result = (|| -> Result<()> {
            if !self.index.has_frozen() && (all || self.index_due()) {
                let writer = self.writer.lock();
                self.index.freeze(writer.appender.head());
            }
            if let Some(covered) = self.index.frozen_covered() {
                self.commit(covered)?;
                // The next open replays the log from the index's end: a consumer
                // checkpoint an append carried below it must have its file first.
                if self.unmirrored_checkpoint_below(covered).is_some() {
                    self.mirror_checkpoints()?;
                }
                if let Some(end) = self.unmirrored_checkpoint_below(covered) {
                    return Err(Error::io(
                        format!("the checkpoint of the append ending at {end} has no file yet"),
                        std::io::Error::other("the index waits for it"),
                    ));
                }
                self.index.flush_frozen()?;
                self.maintenance_done.notify_all();
            }
            while !self.index.memtable_full() && self.index.merge_once()? {}
            Ok(())
        })();
        *self.index_error.lock() = result.err().map(|e| e.to_string());
    }

    /// The most index entries the memtable may hold before appends wait for the index
    /// maintainer (four memtables' worth).
    fn index_memory_limit(&self) -> usize {
        self.options.memtable_entries.saturating_mul(4)
    }

    /// Wakes the background index maintainer and waits until it flushes a memtable, or
    /// 100 ms.
    fn await_maintenance(&self) {
        let mut guard = self.maintenance_lock.lock();
        self.maintenance.notify_work();
        self.maintenance_done
            .wait_for(&mut guard, Duration::from_millis(100));
    }

    /// Appenders wait here, after their append, when the index maintainer fell far behind,
    /// so that memory stays bounded. They stop waiting when a round of maintenance fails:
    /// their appends are done, and the next ones are refused by [`Inner::index_room`]
    /// until the index can be flushed again.
    pub(super) fn index_backpressure(&self) {
        let limit = self.index_memory_limit();
        while self.index.memtable_len() >= limit && !self.log.is_poisoned() {
            self.await_maintenance();
            if self.index_error.lock().is_some() {
                return;
            }
        }
    }

    /// Called before an append takes the writer's lock: when the memtable is at its bound
    /// and the index cannot be flushed (the last round of maintenance failed, e.g. a
    /// checkpoint file or an index table cannot be written), the append is refused before
    /// anything is written, instead of growing memory without bound or waiting forever.
    /// One more round of maintenance is tried first (in this thread when maintenance is
    /// inline), so appends go on as soon as the cause is gone.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] saying why the index cannot be flushed.
    pub(super) fn index_room(&self) -> Result<()> {
        let limit = self.index_memory_limit();
        if self.index.memtable_len() < limit || self.index_error.lock().is_none() {
            return Ok(());
        }
        if self.options.background_index_maintenance {
            self.await_maintenance();
        } else {
            self.maintain_index(false);
        }
        if self.index.memtable_len() < limit {
            return Ok(());
        }
        match self.index_error.lock().clone() {
            Some(why) => Err(Error::io(
                format!(
                    "append refused: the index holds {} entries in memory and cannot be \
                     flushed (see `info().index_error`); appends resume once it can",
                    self.index.memtable_len()
                ),
                std::io::Error::other(why),
            )),
            None => Ok(()),
        }
    }

    pub(super) fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        // Subscribers waiting for appends learn that none will come.
        self.published.notify();
        for bg in std::mem::take(&mut *self.background.lock()) {
            bg.signal.stop();
            // A store thread that held the last handle closes the store itself: it ends
            // right after, and cannot wait for itself.
            if bg.handle.thread().id() != std::thread::current().id() {
                let _ = bg.handle.join();
            }
        }
        // Readers following from other processes see the last appends.
        self.publish_live();
        if self.options.read_only {
            return Ok(());
        }
        if self.log.is_poisoned() {
            return Err(Error::Poisoned);
        }
        // Snapshots are a cache: a failure to sync them loses nothing but time.
        let snapshot_sync = self.snapshots.sync();
        let head = self.writer.lock().appender.head();
        if self.recovery.clean_shutdown
            && head == self.opened_at
            && self.index.manifest().covered_position < head
            && self.recovery.index.rebuilt.is_none()
        {
            // Nothing appended since a clean open, and the index does not cover the
            // checkpoint that ends the log: the next open will replay it and see the clean
            // shutdown. (An index rebuilt at the open is written now, though: its old files
            // describe another log, and would be rebuilt over at every open.)
            return snapshot_sync;
        }
        self.commit(head)?;
        // Flush the index first, so that the next open replays only the checkpoint below
        // (and so sees the clean shutdown).
        self.maintain_index(true);
        if self.index.has_frozen() {
            self.maintain_index(true);
        }
        let end = {
            let mut writer = self.writer.lock();
            let (position, buf) = writer.appender.reserve(FRAME_HEADER_LEN as u64);
            // Everything before the checkpoint is durable now, unless a new segment was
            // started for it, whose header attests everything before it.
            let watermark = self.log.durable().min(position);
            format::encode_checkpoint_frame(buf, position, watermark);
            position.saturating_add(FRAME_HEADER_LEN as u64)
        };
        self.commit(end)?;
        // The next open finds the log ending at the checkpoint, not in preallocated zeros.
        self.log.trim()?;
        if let Some(e) = self.index_error.lock().take() {
            return Err(Error::io(
                "flushing the index at close",
                std::io::Error::other(e),
            ));
        }
        snapshot_sync
    }
}

/// Starts a background thread that runs `work` whenever `signal` says so, or every
/// `interval`, until stopped. It holds only a weak reference to the store.
pub(super) fn spawn_background(
    inner: &Arc<Inner>,
    name: &str,
    signal: Arc<Signal>,
    interval: Duration,
    work: impl Fn(&Inner) + Send + 'static,
) -> Result<()> {
    let weak: Weak<Inner> = Arc::downgrade(inner);
    let thread_signal = Arc::clone(&signal);
    let handle = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            while thread_signal.wait(interval) {
                let Some(inner) = weak.upgrade() else { return };
                work(&inner);
            }
        })
        .map_err(|e| Error::io(format!("start thread {name}"), e))?;
    inner.background.lock().push(Background { handle, signal });
    Ok(())
}
