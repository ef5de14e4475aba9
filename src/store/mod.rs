//! The `store` layer: the public API. Options, appends with expected version and
//! idempotency, group commit, reads, verification.

mod aggregate;
mod event;
mod frame;
mod options;
mod read;

pub use crate::snapshot::Snapshot;
pub use aggregate::{Aggregate, Loaded, SnapshotPolicy};
pub use event::{
    AppendResult, EventId, EventRef, EventView, ExpectedVersion, NewEvent, Position, RecordedEvent,
};
pub use options::{Durability, MAX_SEGMENT_SIZE_BYTES, MIN_SEGMENT_SIZE_BYTES, Options};
pub(crate) use read::events_in_frame;
pub use read::{AllEvents, StreamEvents};

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use parking_lot::{Condvar, Mutex};

use crate::cache::Generations;
use crate::error::{Error, Result};
use crate::format::{self, EventRecord, FRAME_HEADER_LEN, FrameKind};
use crate::index::{Entry, Hashing, Index, StreamCache, StreamState};
use crate::io::LockGuard;
use crate::log::{Appender, Log, RecoveryReport, VerifyReport};
use crate::segment::{FrameBytes, Segment};
use crate::snapshot::SnapshotStore;
use frame::DecodedFrame;

/// Name of the lock file in the store directory.
pub const LOCK_FILE: &str = "LOCK";
/// Name of the directory holding the segment files.
pub const SEGMENTS_DIR: &str = "segments";
/// Name of the directory holding the index files.
pub const INDEX_DIR: &str = "index";
/// Name of the directory holding the snapshot files.
pub const SNAPSHOTS_DIR: &str = "snapshots";

/// An open event store. Share it between threads with `Arc<Store>`; every method takes
/// `&self`. Dropping it closes it cleanly (see [`Store::close`] to see errors).
#[derive(Debug)]
pub struct Store {
    inner: Arc<Inner>,
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
    snapshots: SnapshotStore,
    /// Group commit: whether a leader is writing and syncing right now.
    committing: Mutex<bool>,
    committed: Condvar,
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
    _lock: Box<dyn LockGuard>,
}

/// The writer's state, under one mutex.
#[derive(Debug)]
struct Writer {
    appender: Appender,
    streams: StreamCache,
}

/// A stop flag and a condition variable to wake a background thread.
#[derive(Debug, Default)]
struct Signal {
    state: Mutex<(bool, bool)>, // (stop, work to do)
    cond: Condvar,
}

impl Signal {
    fn notify_work(&self) {
        self.state.lock().1 = true;
        self.cond.notify_all();
    }
    fn stop(&self) {
        self.state.lock().0 = true;
        self.cond.notify_all();
    }
    /// Waits for work, a stop or `timeout`; returns `false` on stop.
    fn wait(&self, timeout: Duration) -> bool {
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
struct Background {
    handle: JoinHandle<()>,
    signal: Arc<Signal>,
}

/// A frame of a stream, found through the index and confirmed by its stream name.
#[derive(Debug)]
pub(crate) struct Found {
    pub(crate) entry: Entry,
    pub(crate) frame: Arc<DecodedFrame>,
}

/// A summary of an open store.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreInfo {
    /// Segment files.
    pub segments: usize,
    /// Bytes in all segment files.
    pub bytes: u64,
    /// Events stored.
    pub events: u64,
    /// Streams with at least one event.
    pub streams: u64,
    /// Appends (frames of events) stored.
    pub appends: u64,
    /// End of the log: where the next append goes.
    pub head: Position,
    /// Everything below this is on disk.
    pub durable: Position,
    /// The durability mode in force.
    pub durability: Durability,
    /// Live index table files.
    pub index_tables: usize,
    /// Log position the index files cover (the log after it is replayed at open).
    pub index_covered: Position,
    /// The last error writing index files, if any (retried; no data is at risk).
    pub index_error: Option<String>,
    /// Snapshots stored.
    pub snapshots: u64,
    /// Bytes of the snapshot segment files.
    pub snapshot_bytes: u64,
}

impl Store {
    /// Opens the store in `dir` with default options, creating the directory if needed.
    ///
    /// # Errors
    /// See [`Store::open_with`].
    pub fn open(dir: impl AsRef<Path>) -> Result<Store> {
        Store::open_with(dir, Options::default())
    }

    /// Opens the store in `dir`, creating it if needed (unless read-only), and recovers:
    /// every segment is checked, a torn tail is cut off and reported in
    /// [`Store::recovery_report`].
    ///
    /// # Errors
    /// - [`Error::InvalidArgument`] when an option is out of bounds, or (read-only) there
    ///   is no store in `dir`;
    /// - [`Error::Locked`] when another `Store` has the directory open;
    /// - [`Error::Corrupted`] when data attested as durable is damaged;
    /// - [`Error::Io`] on I/O failure.
    pub fn open_with(dir: impl AsRef<Path>, options: Options) -> Result<Store> {
        Store::open_inner(dir.as_ref(), options, false, &mut |_| {})
    }

    /// Rebuilds the index of the store in `dir` from its segments: opens it, replays every
    /// frame into a fresh index (reporting each frame's size to `progress`), writes the new
    /// index files, removes the old ones, and closes the store. The index is derived data,
    /// so this never loses events; use it after `verify` reports index problems.
    ///
    /// # Errors
    /// As [`Store::open_with`], and I/O errors writing the index.
    pub fn reindex(
        dir: impl AsRef<Path>,
        options: Options,
        mut progress: impl FnMut(u64),
    ) -> Result<RecoveryReport> {
        if options.read_only {
            return Err(Error::ReadOnly);
        }
        let store = Store::open_inner(dir.as_ref(), options, true, &mut progress)?;
        let report = store.recovery_report().clone();
        store.close()?;
        Ok(report)
    }

    fn open_inner(
        dir: &Path,
        options: Options,
        rebuild_index: bool,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Store> {
        options.validate()?;
        let dir = dir.to_path_buf();
        let storage = Arc::clone(&options.storage);
        let segments_dir = dir.join(SEGMENTS_DIR);
        let stat = |p: &Path| {
            storage
                .exists(p)
                .map_err(|e| Error::io(format!("stat {}", p.display()), e))
        };
        if options.read_only {
            if !stat(&segments_dir)? {
                return Err(Error::InvalidArgument(format!(
                    "no streamlog store in {}",
                    dir.display()
                )));
            }
        } else {
            crate::io::create_dir_durably(storage.as_ref(), &segments_dir)
                .map_err(|e| Error::io(format!("create {}", segments_dir.display()), e))?;
        }
        let lock_path = dir.join(LOCK_FILE);
        let lock = storage
            .try_lock(&lock_path, options.read_only)
            .map_err(|e| Error::io(format!("lock {}", lock_path.display()), e))?
            .ok_or(Error::Locked {
                path: lock_path.clone(),
            })?;

        let hashing = if options.forced_hash_collisions {
            Hashing::ForcedCollisions
        } else {
            Hashing::Standard
        };
        let (index, mut index_report) = Index::open(
            Arc::clone(&storage),
            &dir.join(INDEX_DIR),
            hashing,
            options.memtable_entries,
            options.read_only,
        )?;
        if rebuild_index {
            index.reset();
            index_report.rebuilt = Some("rebuild requested".into());
        }
        let manifest = index.manifest();
        let mut replayed = 0u64;
        let mut stale = None;
        let (log, mut recovery) = Log::open(
            Arc::clone(&storage),
            &segments_dir,
            format::SEGMENT_KIND_EVENTS,
            options.segment_size_bytes,
            options.read_only,
            |segments| match check_manifest(segments, &manifest) {
                Ok(()) => manifest.covered_position,
                Err(reason) => {
                    // Entries of these tables may point anywhere: rebuild from the start.
                    index.reset();
                    stale = Some(reason);
                    0
                }
            },
            |_segment, header, bytes| {
                if header.kind == FrameKind::Events
                    && let Ok((stream, first_version, count)) =
                        format::decode_events_summary(bytes.body())
                {
                    index.record(stream, first_version, count, header.position, header.crc);
                    replayed += 1;
                }
                progress(header.frame_len());
                Ok(())
            },
        )?;
        if let Some(reason) = stale {
            index_report.rebuilt = Some(reason);
        }
        index_report.replayed_frames = replayed;
        recovery.index = index_report;
        let (snapshots, snapshot_report) = SnapshotStore::open(
            Arc::clone(&storage),
            &dir.join(SNAPSHOTS_DIR),
            hashing,
            options.segment_size_bytes,
            options.read_only,
        )?;
        recovery.snapshots = snapshot_report;
        // Space is preallocated only where every append is synced: there it saves the
        // file system a journal commit per fdatasync; elsewhere it would only double the
        // bytes written.
        let log = Arc::new(match options.durability {
            Durability::Sync => log.with_preallocation(options.preallocate_bytes),
            _ => log,
        });
        let inner = Arc::new(Inner {
            opened_at: log.written(),
            writer: Mutex::new(Writer {
                appender: log.appender(),
                streams: StreamCache::new(options.stream_cache_entries),
            }),
            log,
            dir,
            index,
            frames: Mutex::new(Generations::new(options.frame_cache_bytes)),
            snapshots,
            committing: Mutex::new(false),
            committed: Condvar::new(),
            recovery,
            closed: AtomicBool::new(false),
            background: Mutex::new(Vec::new()),
            maintenance: Arc::new(Signal::default()),
            maintenance_done: Condvar::new(),
            maintenance_lock: Mutex::new(()),
            index_error: Mutex::new(None),
            options,
            _lock: lock,
        });
        if !inner.options.read_only {
            if let Durability::Periodic(interval) = inner.options.durability {
                spawn_background(
                    &inner,
                    "streamlog-sync",
                    Arc::new(Signal::default()),
                    interval,
                    |inner| {
                        // A failure poisons the log; appends report it from then on.
                        let _ = inner.log.sync();
                    },
                )?;
            }
            if inner.options.background_index_maintenance {
                let signal = Arc::clone(&inner.maintenance);
                spawn_background(
                    &inner,
                    "streamlog-index",
                    signal,
                    Duration::from_secs(1),
                    |inner| {
                        inner.maintain_index(false);
                    },
                )?;
                if inner.index_due() {
                    inner.maintenance.notify_work();
                }
            } else if inner.index_due() {
                inner.maintain_index(false);
            }
        }
        Ok(Store { inner })
    }

    /// The directory the store lives in.
    pub fn path(&self) -> &Path {
        &self.inner.dir
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &Options {
        &self.inner.options
    }

    /// What recovery found and did when the store was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.inner.recovery
    }

    /// Appends `events` to `stream` as one atomic unit: after any crash either all of them
    /// are stored or none. Versions continue gap-free from the stream's last version.
    ///
    /// When this returns `Ok` under [`Durability::Sync`], the events are on disk. Under
    /// `Periodic` and `Buffered` they are readable at once and reach the disk later (see
    /// [`Durability`]).
    ///
    /// Retrying an append that already succeeded (same event ids at the same place in the
    /// stream: right after the `expected` version, or as the stream's last append for
    /// `Any`/`StreamExists`) returns the original result with `deduplicated: true` and
    /// writes nothing.
    ///
    /// # Errors
    /// - [`Error::WrongExpectedVersion`] when the stream is not at `expected`;
    /// - [`Error::IdempotencyConflict`] when the ids match an earlier append only in part;
    /// - [`Error::InvalidArgument`] for an empty batch, an empty or reserved (`$`-prefixed)
    ///   stream name, or an empty event type;
    /// - [`Error::TooLarge`] when a limit of [`Options`] is exceeded;
    /// - [`Error::Poisoned`] after an earlier write or sync failure;
    /// - [`Error::ReadOnly`] on a read-only store;
    /// - [`Error::Io`] when the write or sync fails (the store is poisoned from then on).
    pub fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: impl IntoIterator<Item = NewEvent>,
    ) -> Result<AppendResult> {
        let events: Vec<NewEvent> = events.into_iter().collect();
        let refs: Vec<EventRef<'_>> = events.iter().map(NewEvent::as_ref).collect();
        self.append_refs(stream, expected, &refs)
    }

    /// [`Store::append`] for events that borrow their bytes: the same append, with no
    /// allocation per event (the fast path for callers that already hold the bytes).
    ///
    /// # Errors
    /// As [`Store::append`].
    pub fn append_refs(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: &[EventRef<'_>],
    ) -> Result<AppendResult> {
        let inner = &*self.inner;
        if inner.options.read_only {
            return Err(Error::ReadOnly);
        }
        let now_us = event::timestamp_us(SystemTime::now());
        let records: Vec<EventRecord<'_>> = events
            .iter()
            .map(|e| EventRecord {
                id: e.id.0,
                timestamp_us: e.timestamp.map_or(now_us, event::timestamp_us),
                event_type: e.event_type,
                metadata: e.metadata,
                data: e.data,
            })
            .collect();
        let frame_len = inner.check_append(stream, &records)?;

        let (result, end) = {
            let mut writer = inner.writer.lock();
            if inner.log.is_poisoned() {
                return Err(Error::Poisoned);
            }
            let state = inner.stream_state(&mut writer, stream)?;
            if let Some(found) = inner.find_retry(&writer, state, stream, expected, &records)? {
                found
            } else {
                let last = state.map(|s| s.last_version());
                let ok = match expected {
                    ExpectedVersion::Any => true,
                    ExpectedVersion::NoStream => last.is_none(),
                    ExpectedVersion::StreamExists => last.is_some(),
                    ExpectedVersion::Exact(v) => last == Some(v),
                };
                if !ok {
                    let conflict = Error::WrongExpectedVersion {
                        stream: stream.to_string(),
                        expected,
                        actual: last,
                    };
                    // The append this one lost to may not be durable yet, and readers see
                    // only durable appends under `Sync`: wait for it, so that a read
                    // started after this returns sees the version it reports.
                    let pending = state.is_some_and(|s| s.position >= inner.log.durable());
                    if !pending || inner.options.durability != Durability::Sync {
                        return Err(conflict);
                    }
                    let head = writer.appender.head();
                    drop(writer);
                    inner.commit(head)?;
                    return Err(conflict);
                }
                let first_version =
                    last.map_or(Some(0), |v| v.checked_add(1)).ok_or_else(|| {
                        Error::InvalidArgument(format!("stream {stream:?} is at the last version"))
                    })?;
                let watermark = inner.log.durable();
                let (position, buf) = writer.appender.reserve(frame_len);
                let at = buf.len();
                format::encode_events_frame(
                    buf,
                    position,
                    watermark,
                    stream,
                    first_version,
                    &records,
                );
                let crc = buf
                    .get(at + 8..at + 12)
                    .and_then(|b| b.try_into().ok())
                    .map_or(0, u32::from_le_bytes);
                let count = records.len() as u32;
                inner
                    .index
                    .record(stream, first_version, count, position, crc);
                writer.streams.insert(
                    stream,
                    StreamState {
                        first_version,
                        count,
                        position,
                        first_id: records.first().map(|r| r.id).unwrap_or_default(),
                    },
                );
                if inner.options.durability != Durability::Sync {
                    inner.write_pending(&mut writer)?;
                }
                if inner.index_due() {
                    inner.maintenance.notify_work();
                }
                let result = AppendResult {
                    first_version,
                    last_version: first_version.saturating_add(u64::from(count) - 1),
                    position: Position(position),
                    deduplicated: false,
                };
                (result, position.saturating_add(frame_len))
            }
        };
        if inner.options.durability == Durability::Sync {
            inner.commit(end)?;
        }
        if inner.options.background_index_maintenance {
            inner.index_backpressure();
        } else if inner.index_due() {
            inner.maintain_index(false);
        }
        Ok(result)
    }

    /// Forces everything appended so far to disk.
    ///
    /// # Errors
    /// [`Error::Poisoned`] after an earlier failure; [`Error::Io`] when the sync fails
    /// (which poisons the store).
    pub fn sync(&self) -> Result<()> {
        if self.inner.options.read_only {
            return Ok(());
        }
        let head = self.inner.writer.lock().appender.head();
        self.inner.commit(head)
    }

    /// Reads `stream` forward from version `from` (inclusive). Only committed appends are
    /// seen: under [`Durability::Sync`], those on disk; otherwise, those acknowledged.
    /// Reading never waits for the writer.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty stream name. Errors while reading come as
    /// items of the iterator.
    pub fn read_stream(&self, stream: &str, from: u64) -> Result<StreamEvents> {
        read::check_stream_name(stream)?;
        Ok(StreamEvents::forward(self.lookup(), stream, from))
    }

    /// Reads `stream` backward from version `from` (inclusive), or from its last event when
    /// `from` is `None`.
    ///
    /// # Errors
    /// As [`Store::read_stream`].
    pub fn read_stream_backward(&self, stream: &str, from: Option<u64>) -> Result<StreamEvents> {
        read::check_stream_name(stream)?;
        Ok(StreamEvents::backward(self.lookup(), stream, from))
    }

    /// Hands `stream`'s events from version `from` (inclusive) to `visit`, in version
    /// order, as borrowed [`EventView`]s, until `visit` returns [`ControlFlow::Break`] or
    /// the stream ends; returns how many it handed over. Sees what
    /// [`Store::read_stream`] sees, without allocating per event: the fastest way to
    /// replay a stream.
    ///
    /// ```
    /// use std::ops::ControlFlow;
    /// use streamlog::{ExpectedVersion, NewEvent, Store};
    ///
    /// # fn main() -> streamlog::Result<()> {
    /// # let dir = tempfile::tempdir().map_err(|e| streamlog::Error::InvalidArgument(e.to_string()))?;
    /// let store = Store::open(dir.path())?;
    /// store.append("cart-7", ExpectedVersion::Any, [NewEvent::new("Added", b"3"), NewEvent::new("Added", b"4")])?;
    /// let mut total = 0;
    /// let n = store.read_stream_with("cart-7", 0, |e| {
    ///     total += std::str::from_utf8(e.data).map_or(0, |s| s.parse::<u32>().unwrap_or(0));
    ///     ControlFlow::Continue(())
    /// })?;
    /// assert_eq!((n, total), (2, 7));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty stream name; [`Error::Corrupted`] or
    /// [`Error::Io`] when a frame cannot be read (events before it were handed over).
    pub fn read_stream_with(
        &self,
        stream: &str,
        from: u64,
        visit: impl FnMut(EventView<'_>) -> ControlFlow<()>,
    ) -> Result<u64> {
        self.read_stream(stream, from)?.for_each_view(visit)
    }

    /// Hands every stream's events from `from` (as [`Store::read_all`]) to `visit` in
    /// commit order, as borrowed [`EventView`]s read in place, until `visit` returns
    /// [`ControlFlow::Break`] or the log ends; returns how many it handed over.
    ///
    /// # Errors
    /// As [`Store::read_all`], and [`Error::Corrupted`] or [`Error::Io`] when a frame
    /// cannot be read (events before it were handed over).
    pub fn read_all_with(
        &self,
        from: Position,
        visit: impl FnMut(EventView<'_>) -> ControlFlow<()>,
    ) -> Result<u64> {
        self.read_all(from)?.for_each_view(visit)
    }

    /// Reads every stream's events in commit order, from `from` (inclusive): the start of
    /// the log ([`Position::START`]) or the position of an append.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `from` is not the start of an append; I/O errors.
    /// Errors while reading come as items of the iterator.
    pub fn read_all(&self, from: Position) -> Result<AllEvents> {
        let visible = self.visible();
        if from.0 != 0 && from.0 < visible {
            self.inner
                .log
                .read_frame(from.0, visible)
                .map_err(|e| match e {
                    Error::Corrupted { .. } | Error::InvalidArgument(_) => Error::InvalidArgument(
                        format!("position {from} is not the start of an append"),
                    ),
                    other => other,
                })?;
        }
        Ok(AllEvents::new(self.inner.log.frames(from.0, visible)))
    }

    /// The stream's last committed version, `None` if it has no events.
    ///
    /// # Errors
    /// I/O errors and damage met while looking it up.
    pub fn stream_version(&self, stream: &str) -> Result<Option<u64>> {
        let found = self
            .inner
            .resolve_visible(stream, u64::MAX, self.visible())?;
        Ok(found.map(|f| f.entry.first_version + u64::from(f.entry.count) - 1))
    }

    /// A summary of the store.
    ///
    /// # Errors
    /// I/O errors reading file sizes.
    pub fn info(&self) -> Result<StoreInfo> {
        let files = self.inner.log.segment_files()?;
        let (snapshots, snapshot_bytes) = self.inner.snapshots.stats()?;
        let totals = self.inner.index.totals();
        let manifest = self.inner.index.manifest();
        Ok(StoreInfo {
            segments: files.len(),
            // The log's bytes: positions count them, and the files' lengths may include
            // preallocated zeros past the end.
            bytes: files
                .iter()
                .map(|(_, len)| len)
                .sum::<u64>()
                .min(self.inner.log.written()),
            events: totals.events,
            streams: totals.streams,
            appends: totals.appends,
            head: Position(self.inner.log.written()),
            durable: Position(self.inner.log.durable()),
            durability: self.inner.options.durability,
            index_tables: self.inner.index.table_count(),
            index_covered: Position(manifest.covered_position),
            index_error: self.inner.index_error.lock().clone(),
            snapshots,
            snapshot_bytes,
        })
    }

    /// Checks every frame of every segment (CRC, position, structure), and the index
    /// against the log: every append must be found through the index at its position, and
    /// the index must hold no other entries. Reports what it found; never writes.
    /// `progress` is called with the bytes checked, as they go.
    ///
    /// # Errors
    /// I/O errors.
    pub fn verify(&self, progress: impl FnMut(u64)) -> Result<VerifyReport> {
        let visible = self.visible();
        let mut report = self
            .inner
            .log
            .verify(visible, progress, read::events_in_frame)?;
        let mut frames = 0u64;
        for item in self.inner.log.frames(0, visible) {
            let Ok((header, bytes)) = item else { break };
            if header.kind != FrameKind::Events {
                continue;
            }
            let Ok((stream, first_version, _)) = format::decode_events_summary(bytes.body()) else {
                continue;
            };
            frames += 1;
            match self.inner.resolve_visible(stream, first_version, visible) {
                Ok(Some(f)) if f.entry.position == header.position => {}
                Ok(other) => report.index_problems.push(format!(
                    "append of {stream:?} at version {first_version} (position {}) is found at {:?} through the index",
                    header.position,
                    other.map(|f| f.entry.position)
                )),
                Err(e) => report.index_problems.push(format!("index lookup failed: {e}")),
            }
        }
        let mut entries = 0u64;
        self.inner
            .index
            .for_each_entry(|e| {
                if e.position < visible {
                    entries += 1;
                }
                Ok(())
            })
            .unwrap_or_else(|e| {
                report
                    .index_problems
                    .push(format!("index table damaged: {e}"))
            });
        if entries != frames {
            report.index_problems.push(format!(
                "the index holds {entries} entries for {frames} appends in the log"
            ));
        }
        Ok(report)
    }

    /// Saves a snapshot of `stream`'s state at `version` (the last event the state
    /// includes), tagged with `schema`. It is readable at once and durable after a clean
    /// close (or [`Store::sync`]); after a crash the latest snapshots may be gone, which
    /// only means a longer replay. Snapshots never change events.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the stream has no event at `version`, or the schema
    /// tag is empty or longer than 65,535 bytes; [`Error::TooLarge`] beyond
    /// `max_frame_bytes`; [`Error::ReadOnly`]; I/O errors.
    pub fn save_snapshot(
        &self,
        stream: &str,
        version: u64,
        schema: &str,
        data: &[u8],
    ) -> Result<()> {
        if self.inner.options.read_only {
            return Err(Error::ReadOnly);
        }
        read::check_stream_name(stream)?;
        if schema.is_empty()
            || schema.len() > usize::from(u16::MAX)
            || stream.len() > usize::from(u16::MAX)
        {
            return Err(Error::InvalidArgument(
                "a snapshot needs a schema tag of 1..=65535 bytes".into(),
            ));
        }
        match self.stream_version(stream)? {
            Some(last) if last >= version => {}
            last => {
                return Err(Error::InvalidArgument(format!(
                    "cannot snapshot {stream:?} at version {version}: its last version is {last:?}"
                )));
            }
        }
        let body = format::SnapshotBody {
            stream,
            version,
            schema,
            payload: data,
        };
        self.inner
            .snapshots
            .save(&body, self.inner.options.max_frame_bytes)?;
        self.maybe_reclaim_snapshots();
        Ok(())
    }

    /// The latest snapshot of `stream` that is intact and not newer than the stream.
    ///
    /// # Errors
    /// I/O errors reading the stream's version; damaged snapshots are skipped, not errors.
    pub fn latest_snapshot(&self, stream: &str) -> Result<Option<Snapshot>> {
        let Some(last) = self.stream_version(stream)? else {
            return Ok(None);
        };
        Ok(self.inner.snapshots.latest(stream, last, |_| Ok(()))?.0)
    }

    /// Loads aggregate `A` of `stream`: its latest usable snapshot (intact, of schema
    /// `A::SCHEMA`, decodable, not newer than the stream) plus the events after it, or a
    /// full replay when there is none. Saves a snapshot afterwards when
    /// [`Options::snapshot_policy`] says so.
    ///
    /// # Errors
    /// Errors reading the events (snapshot problems are reported in [`Loaded`], never
    /// errors).
    pub fn load<A: Aggregate>(&self, stream: &str) -> Result<Loaded<A>> {
        read::check_stream_name(stream)?;
        let lookup = self.lookup();
        let current = self
            .inner
            .resolve_visible(stream, u64::MAX, lookup.visible)?;
        let current = current.map(|f| f.entry.first_version + u64::from(f.entry.count) - 1);
        let (mut state, mut snapshot_version, mut ignored) = (A::default(), None, Vec::new());
        if let Some(cur) = current {
            let (snap, passed) = self.inner.snapshots.latest(stream, cur, |b| {
                if b.schema != A::SCHEMA {
                    Err(format!("schema {:?}, not {:?}", b.schema, A::SCHEMA))
                } else if A::decode(b.payload).is_none() {
                    Err("does not decode".into())
                } else {
                    Ok(())
                }
            })?;
            ignored = passed;
            if let Some(s) = snap
                && let Some(decoded) = A::decode(&s.data)
            {
                state = decoded;
                snapshot_version = Some(s.version);
            }
        }
        let from = snapshot_version.map_or(0, |v| v + 1);
        let mut version = snapshot_version;
        let mut replayed = 0u64;
        StreamEvents::forward(lookup, stream, from).for_each_view(|e| {
            state.apply(&e);
            version = Some(e.version);
            replayed += 1;
            ControlFlow::Continue(())
        })?;
        let mut loaded = Loaded {
            state,
            version,
            snapshot_version,
            replayed,
            ignored_snapshots: ignored,
            snapshot_saved: None,
            snapshot_error: None,
        };
        let due = match (self.inner.options.snapshot_policy, version) {
            (_, None) => false,
            (SnapshotPolicy::Never, _) => false,
            (SnapshotPolicy::EveryEvents(n), Some(v)) => {
                v + 1 - snapshot_version.map_or(0, |s| s + 1) >= n.max(1)
            }
            (SnapshotPolicy::WhenReplayedMoreThan(n), _) => replayed > n,
        };
        if let (true, Some(v), false) = (due, version, self.inner.options.read_only) {
            match self.save_snapshot(stream, v, A::SCHEMA, &loaded.state.encode()) {
                Ok(()) => loaded.snapshot_saved = Some(v),
                Err(e) => loaded.snapshot_error = Some(e.to_string()),
            }
        }
        Ok(loaded)
    }

    /// Rewrites the snapshot files keeping the latest
    /// [`Options::snapshots_kept_per_stream`] snapshots of each stream, crash-safely
    /// (see [`crate::snapshot::SnapshotStore::reclaim`]). Appends and reads go on
    /// meanwhile. Returns (snapshots kept, snapshots dropped).
    ///
    /// # Errors
    /// [`Error::ReadOnly`], I/O errors (the old snapshot files stay in force).
    pub fn reclaim_snapshots(&self) -> Result<(u64, u64)> {
        self.inner
            .snapshots
            .reclaim(self.inner.options.snapshots_kept_per_stream)
    }

    /// Reclaims when the snapshot files hold many more snapshots than the policy keeps.
    fn maybe_reclaim_snapshots(&self) {
        let threshold = self.inner.options.snapshot_reclaim_threshold;
        if let Ok((count, _)) = self.inner.snapshots.stats()
            && threshold > 0
            && count >= threshold
        {
            // A failure leaves the old files in force; it is retried at the next save.
            let _ = self.reclaim_snapshots();
        }
    }

    /// Closes the store: makes everything durable and writes a checkpoint frame that
    /// attests the whole log, so that any later damage anywhere is reported as corruption.
    ///
    /// # Errors
    /// [`Error::Poisoned`] or [`Error::Io`] when the final sync fails.
    pub fn close(self) -> Result<()> {
        self.inner.close()
    }

    fn visible(&self) -> u64 {
        self.inner.visible()
    }

    fn lookup(&self) -> read::Lookup {
        read::Lookup {
            inner: Arc::clone(&self.inner) as Arc<dyn read::FrameLookup>,
            visible: self.visible(),
        }
    }
}

/// Checks that the index manifest describes this log: what it covers exists, and the last
/// frame it indexed is still the same frame.
pub(crate) fn check_manifest(
    segments: &[Arc<Segment>],
    manifest: &crate::index::Manifest,
) -> std::result::Result<(), String> {
    if manifest.covered_position == 0 {
        return Ok(());
    }
    let end = match segments.last() {
        Some(seg) => seg
            .base()
            .saturating_add(seg.file_len().map_err(|e| e.to_string())?),
        None => 0,
    };
    if manifest.covered_position > end {
        return Err(format!(
            "the index covers the log up to position {} but the log ends at {end}",
            manifest.covered_position
        ));
    }
    if manifest.last_frame_position == 0 {
        return Ok(());
    }
    let pos = manifest.last_frame_position;
    let seg = segments
        .iter()
        .rev()
        .find(|s| s.base() <= pos)
        .ok_or_else(|| format!("the index's last frame at {pos} is not in the log"))?;
    let limit = seg.file_len().map_err(|e| e.to_string())?;
    match seg.read_frame(pos, limit) {
        Ok((h, _)) if h.crc == manifest.last_frame_crc => Ok(()),
        Ok(_) => Err(format!(
            "the frame at {pos} is not the one the index was built from"
        )),
        Err(e) => Err(format!(
            "the index's last frame at {pos} does not read: {e}"
        )),
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // Errors are visible through `close`; a drop can only do its best.
        let _ = self.inner.close();
    }
}

impl read::FrameLookup for Inner {
    fn resolve(&self, stream: &str, version: u64, visible: u64) -> Result<Option<Found>> {
        self.resolve_visible(stream, version, visible)
    }

    fn entries_after(&self, stream: &str, after: &Entry, limit: usize) -> Result<Vec<Entry>> {
        let (hash, check) = self.index.keys(stream);
        self.index
            .entries_after(hash, check, after.first_version, after.position, limit)
    }

    fn read_entry(&self, stream: &str, entry: Entry, visible: u64) -> Result<Option<Found>> {
        if entry.position >= visible {
            return Ok(None);
        }
        let frame = self.frame_at(entry.position, visible)?;
        Ok((frame.stream() == stream).then_some(Found { entry, frame }))
    }
}

impl Inner {
    /// Appends are visible to readers up to here.
    fn visible(&self) -> u64 {
        match self.options.durability {
            Durability::Sync => self.log.durable(),
            _ => self.log.written(),
        }
    }

    /// Checks an append against every limit; returns its frame length.
    fn check_append(&self, stream: &str, records: &[EventRecord<'_>]) -> Result<u64> {
        let o = &self.options;
        read::check_stream_name(stream)?;
        if stream.starts_with('$') {
            return Err(Error::InvalidArgument(format!(
                "stream names starting with '$' are reserved: {stream:?}"
            )));
        }
        if stream.len() > o.max_stream_name_bytes {
            return Err(Error::TooLarge {
                what: "max_stream_name_bytes",
                size: stream.len() as u64,
                limit: o.max_stream_name_bytes as u64,
            });
        }
        if records.is_empty() {
            return Err(Error::InvalidArgument(
                "an append needs at least one event".into(),
            ));
        }
        if records.len() > o.max_events_per_append {
            return Err(Error::TooLarge {
                what: "max_events_per_append",
                size: records.len() as u64,
                limit: o.max_events_per_append as u64,
            });
        }
        for r in records {
            if r.event_type.is_empty() {
                return Err(Error::InvalidArgument(
                    "an event type must not be empty".into(),
                ));
            }
            if r.event_type.len() > o.max_event_type_bytes {
                return Err(Error::TooLarge {
                    what: "max_event_type_bytes",
                    size: r.event_type.len() as u64,
                    limit: o.max_event_type_bytes as u64,
                });
            }
            let size = (r.data.len() as u64).saturating_add(r.metadata.len() as u64);
            if size > o.max_event_bytes {
                return Err(Error::TooLarge {
                    what: "max_event_bytes",
                    size,
                    limit: o.max_event_bytes,
                });
            }
        }
        let frame_len =
            format::events_body_len(stream, records).saturating_add(FRAME_HEADER_LEN as u64);
        if frame_len > o.max_frame_bytes {
            return Err(Error::TooLarge {
                what: "max_frame_bytes",
                size: frame_len,
                limit: o.max_frame_bytes,
            });
        }
        Ok(frame_len)
    }

    /// `Error::Corrupted` for the frame at `position`, naming its file and file offset.
    fn corrupted_at(&self, position: u64, reason: impl std::fmt::Display) -> Error {
        let (file, offset) = self.log.locate(position);
        Error::corrupted(file, offset, reason.to_string())
    }

    /// Finds the frame of `stream` holding `version` (or, for `u64::MAX`, its last frame)
    /// through the index, confirming each candidate by the stream name in the frame that
    /// `read` returns (`None` for a frame that is not to be seen). Candidates of colliding
    /// streams are skipped. `None` when the stream has no frame holding `version` (for
    /// `u64::MAX`: no frame at all).
    fn resolve(
        &self,
        stream: &str,
        version: u64,
        read: impl Fn(u64) -> Result<Option<Arc<DecodedFrame>>>,
    ) -> Result<Option<Found>> {
        let (hash, check) = self.index.keys(stream);
        let mut exclude = Vec::new();
        while let Some(entry) = self.index.floor(hash, check, version, &exclude)? {
            if let Some(frame) = read(entry.position)?
                && frame.stream() == stream
            {
                // The stream's frame at or below `version`: it holds `version` only if
                // the version is not past its last event.
                let holds = version == u64::MAX
                    || version < entry.first_version.saturating_add(u64::from(entry.count));
                return Ok(holds.then_some(Found { entry, frame }));
            }
            exclude.push(entry.position);
        }
        Ok(None)
    }

    /// [`Inner::resolve`] for readers: only frames below `visible`.
    fn resolve_visible(&self, stream: &str, version: u64, visible: u64) -> Result<Option<Found>> {
        self.resolve(stream, version, |pos| {
            if pos >= visible {
                return Ok(None);
            }
            self.frame_at(pos, visible).map(Some)
        })
    }

    /// The events frame at `position` (ending at or below `limit`), decoded: from the
    /// frame cache, or read, checked, decoded and cached.
    fn frame_at(&self, position: u64, limit: u64) -> Result<Arc<DecodedFrame>> {
        if self.options.frame_cache_bytes > 0
            && let Some(hit) = self.frames.lock().get_mut(&position)
            && position.saturating_add(hit.header().frame_len()) <= limit
        {
            return Ok(Arc::clone(hit));
        }
        let (header, bytes) = self.log.read_frame(position, limit)?;
        let frame = Arc::new(
            DecodedFrame::decode(header, bytes).map_err(|e| self.corrupted_at(position, e))?,
        );
        if self.options.frame_cache_bytes > 0 {
            let weight = frame.weight();
            self.frames
                .lock()
                .insert(position, Arc::clone(&frame), weight);
        }
        Ok(frame)
    }

    /// [`Inner::resolve`] for the writer: frames written or still in its buffer.
    fn resolve_for_writer(
        &self,
        appender: &Appender,
        stream: &str,
        version: u64,
    ) -> Result<Option<Found>> {
        self.resolve(stream, version, |pos| {
            if let Some(pending) = appender.pending_frame(pos) {
                let header = format::decode_frame_header(pending).map_err(|e| {
                    Error::InvalidArgument(format!("unreadable pending frame at {pos}: {e}"))
                })?;
                let len = usize::try_from(header.frame_len()).unwrap_or(usize::MAX);
                let bytes = pending.get(..len).unwrap_or_default().to_vec();
                let frame = DecodedFrame::decode(header, FrameBytes::from_vec(bytes))
                    .map_err(|e| self.corrupted_at(pos, e))?;
                return Ok(Some(Arc::new(frame)));
            }
            self.frame_at(pos, self.log.written()).map(Some)
        })
    }

    /// The stream's latest append as the writer sees it (including unwritten frames):
    /// from the bounded cache, or looked up in the index on a miss.
    fn stream_state(&self, writer: &mut Writer, stream: &str) -> Result<Option<StreamState>> {
        if let Some(s) = writer.streams.get(stream) {
            return Ok(Some(s));
        }
        let Some(found) = self.resolve_for_writer(&writer.appender, stream, u64::MAX)? else {
            return Ok(None);
        };
        let first_id = found.frame.view(0).map(|e| e.id.0).unwrap_or_default();
        let state = StreamState {
            first_version: found.entry.first_version,
            count: found.entry.count,
            position: found.entry.position,
            first_id,
        };
        writer.streams.insert(stream, state);
        Ok(Some(state))
    }

    /// Whether this append repeats one already stored at the place `expected` names. Returns
    /// the original result and the end of its frame (to wait for its durability).
    fn find_retry(
        &self,
        writer: &Writer,
        state: Option<StreamState>,
        stream: &str,
        expected: ExpectedVersion,
        records: &[EventRecord<'_>],
    ) -> Result<Option<(AppendResult, u64)>> {
        let (Some(first_id), Some(state)) = (records.first().map(|r| r.id), state) else {
            return Ok(None);
        };
        let version = match expected {
            ExpectedVersion::Any | ExpectedVersion::StreamExists if state.first_id == first_id => {
                state.first_version
            }
            ExpectedVersion::Any | ExpectedVersion::StreamExists => return Ok(None),
            ExpectedVersion::NoStream => 0,
            ExpectedVersion::Exact(v) if v < state.last_version() => v.saturating_add(1),
            ExpectedVersion::Exact(_) => return Ok(None),
        };
        let Some(found) = self.resolve_for_writer(&writer.appender, stream, version)? else {
            return Ok(None);
        };
        let entry = found.entry;
        let frame = &found.frame;
        // Within the stored append, where would this one start?
        let skip =
            usize::try_from(version.saturating_sub(frame.first_version())).unwrap_or(usize::MAX);
        let stored_ids: Vec<[u8; 16]> = (skip..frame.len())
            .filter_map(|i| frame.view(i).map(|e| e.id.0))
            .collect();
        let new_ids: Vec<[u8; 16]> = records.iter().map(|r| r.id).collect();
        if stored_ids.first() != Some(&first_id) {
            return Ok(None);
        }
        if skip != 0 || stored_ids != new_ids {
            return Err(Error::IdempotencyConflict {
                stream: stream.to_string(),
                reason: format!(
                    "event {} is already stored at version {version}, but the append's \
                     events differ from the stored append of {} events at version {}",
                    EventId(first_id),
                    frame.len(),
                    frame.first_version()
                ),
            });
        }
        let result = AppendResult {
            first_version: entry.first_version,
            last_version: entry.first_version + u64::from(entry.count) - 1,
            position: Position(entry.position),
            deduplicated: true,
        };
        Ok(Some((
            result,
            entry.position.saturating_add(frame.header().frame_len()),
        )))
    }

    /// Whether the memtable is due to be flushed: full, or covering
    /// [`Options::memtable_log_bytes`] of log.
    fn index_due(&self) -> bool {
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
    fn maintain_index(&self, all: bool) {
        let result = (|| -> Result<()> {
            if !self.index.has_frozen() && (all || self.index_due()) {
                let writer = self.writer.lock();
                self.index.freeze(writer.appender.head());
            }
            if let Some(covered) = self.index.frozen_covered() {
                self.commit(covered)?;
                self.index.flush_frozen()?;
                self.maintenance_done.notify_all();
            }
            while !self.index.memtable_full() && self.index.merge_once()? {}
            Ok(())
        })();
        *self.index_error.lock() = result.err().map(|e| e.to_string());
    }

    /// Appenders wait here when the index maintainer fell far behind, so that memory stays
    /// bounded (four memtables' worth).
    fn index_backpressure(&self) {
        let limit = self.options.memtable_entries.saturating_mul(4);
        let mut guard = self.maintenance_lock.lock();
        while self.index.memtable_len() >= limit && !self.log.is_poisoned() {
            self.maintenance.notify_work();
            self.maintenance_done
                .wait_for(&mut guard, Duration::from_millis(100));
        }
    }

    /// Group commit: returns once everything below `end` is durable. The first waiter to
    /// find no commit in progress becomes the leader: it takes every frame encoded so far,
    /// writes them with one write per segment and syncs once, while later appenders queue
    /// their frames for the next leader.
    fn commit(&self, end: u64) -> Result<()> {
        let mut committing = self.committing.lock();
        loop {
            if self.log.durable() >= end {
                return Ok(());
            }
            if self.log.is_poisoned() {
                return Err(Error::Poisoned);
            }
            if *committing {
                self.committed.wait(&mut committing);
                continue;
            }
            *committing = true;
            let res = parking_lot::MutexGuard::unlocked(&mut committing, || {
                // Frames leave the writer's buffer and reach the file under one lock, so
                // the writer always finds a frame in one place or the other (its retry
                // and stream lookups read frames that are not durable yet).
                self.write_pending(&mut self.writer.lock())?;
                self.log.sync()
            });
            *committing = false;
            self.committed.notify_all();
            res?;
        }
    }

    /// Hands the frames encoded so far to the log (one write per segment).
    fn write_pending(&self, writer: &mut Writer) -> Result<()> {
        let chunks = writer.appender.take();
        self.log.write(&chunks)?;
        writer.appender.recycle(chunks);
        Ok(())
    }

    fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        for bg in std::mem::take(&mut *self.background.lock()) {
            bg.signal.stop();
            let _ = bg.handle.join();
        }
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
        {
            // Nothing appended since a clean open, and the index does not cover the
            // checkpoint that ends the log: the next open will replay it and see the clean
            // shutdown.
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
fn spawn_background(
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
