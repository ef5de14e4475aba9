//! The `store` layer: the public API. Options, appends with expected version and
//! idempotency, group commit, reads, verification.

mod event;
mod options;
mod read;

pub use event::{AppendResult, EventId, ExpectedVersion, NewEvent, Position, RecordedEvent};
pub use options::{Durability, MAX_SEGMENT_SIZE_BYTES, MIN_SEGMENT_SIZE_BYTES, Options};
pub(crate) use read::events_in_frame;
pub use read::{AllEvents, StreamEvents};

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use parking_lot::{Condvar, Mutex, RwLock};

use crate::error::{Error, Result};
use crate::format::{self, EventRecord, FRAME_HEADER_LEN, FrameKind};
use crate::index::{FrameRef, StreamIndex};
use crate::io::LockGuard;
use crate::log::{Appender, Log, RecoveryReport, VerifyReport};

/// Name of the lock file in the store directory.
pub const LOCK_FILE: &str = "LOCK";
/// Name of the directory holding the segment files.
pub const SEGMENTS_DIR: &str = "segments";

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
    /// The writer's side: position assignment, encoded-but-unwritten frames.
    writer: Mutex<Appender>,
    index: RwLock<StreamIndex>,
    events: AtomicU64,
    /// Group commit: whether a leader is writing and syncing right now.
    committing: Mutex<bool>,
    committed: Condvar,
    recovery: RecoveryReport,
    /// End of the log when it was opened.
    opened_at: u64,
    closed: AtomicBool,
    background: Mutex<Option<BackgroundSync>>,
    _lock: Box<dyn LockGuard>,
}

/// The `Periodic` durability thread and its stop flag.
type BackgroundSync = (JoinHandle<()>, Arc<(Mutex<bool>, Condvar)>);

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
        options.validate()?;
        let dir = dir.as_ref().to_path_buf();
        let storage = Arc::clone(&options.storage);
        let segments_dir = dir.join(SEGMENTS_DIR);
        if options.read_only {
            if !storage
                .exists(&segments_dir)
                .map_err(|e| Error::io(format!("stat {}", segments_dir.display()), e))?
            {
                return Err(Error::InvalidArgument(format!(
                    "no streamlog store in {}",
                    dir.display()
                )));
            }
        } else {
            let created = !storage
                .exists(&segments_dir)
                .map_err(|e| Error::io(format!("stat {}", segments_dir.display()), e))?;
            storage
                .create_dir_all(&segments_dir)
                .map_err(|e| Error::io(format!("create {}", segments_dir.display()), e))?;
            if created {
                storage
                    .sync_dir(&dir)
                    .map_err(|e| Error::io(format!("sync {}", dir.display()), e))?;
            }
        }
        let lock_path = dir.join(LOCK_FILE);
        let lock = storage
            .try_lock(&lock_path, options.read_only)
            .map_err(|e| Error::io(format!("lock {}", lock_path.display()), e))?
            .ok_or(Error::Locked {
                path: lock_path.clone(),
            })?;

        let mut index = StreamIndex::default();
        let mut events = 0u64;
        let (log, recovery) = Log::open(
            storage,
            &segments_dir,
            options.segment_size_bytes,
            options.read_only,
            |segment, header, bytes| {
                if header.kind != FrameKind::Events {
                    return Ok(());
                }
                let corrupted = |reason: String| {
                    let offset = header.position.saturating_sub(segment.base());
                    Error::corrupted(segment.path(), offset, reason)
                };
                let body = format::decode_events_body(bytes.body())
                    .map_err(|e| corrupted(e.to_string()))?;
                let first_id = body.events.first().map(|e| e.id).unwrap_or_default();
                let count = body.events.len() as u32;
                if let Some(last) = index.last_version(body.stream)
                    && last.checked_add(1) != Some(body.first_version)
                {
                    return Err(corrupted(format!(
                        "stream {:?} jumps from version {last} to {}",
                        body.stream, body.first_version
                    )));
                }
                if index.last_version(body.stream).is_none() && body.first_version != 0 {
                    return Err(corrupted(format!(
                        "stream {:?} starts at version {}",
                        body.stream, body.first_version
                    )));
                }
                index.record(
                    body.stream,
                    FrameRef {
                        first_version: body.first_version,
                        count,
                        position: header.position,
                    },
                    first_id,
                );
                events += u64::from(count);
                Ok(())
            },
        )?;
        let log = Arc::new(log);
        let inner = Arc::new(Inner {
            opened_at: log.written(),
            writer: Mutex::new(log.appender()),
            log,
            dir,
            options,
            index: RwLock::new(index),
            events: AtomicU64::new(events),
            committing: Mutex::new(false),
            committed: Condvar::new(),
            recovery,
            closed: AtomicBool::new(false),
            background: Mutex::new(None),
            _lock: lock,
        });
        if let (Durability::Periodic(interval), false) =
            (inner.options.durability, inner.options.read_only)
        {
            start_periodic_sync(&inner, interval);
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
        let inner = &*self.inner;
        if inner.options.read_only {
            return Err(Error::ReadOnly);
        }
        let events: Vec<NewEvent> = events.into_iter().collect();
        let now_us = event::timestamp_us(SystemTime::now());
        let records: Vec<EventRecord<'_>> = events
            .iter()
            .map(|e| EventRecord {
                id: e.id.0,
                timestamp_us: e.timestamp.map_or(now_us, event::timestamp_us),
                event_type: &e.event_type,
                metadata: &e.metadata,
                data: &e.data,
            })
            .collect();
        let frame_len = inner.check_append(stream, &records)?;

        let (result, end) = {
            let mut writer = inner.writer.lock();
            if inner.log.is_poisoned() {
                return Err(Error::Poisoned);
            }
            if let Some(found) = inner.find_retry(&writer, stream, expected, &records)? {
                found
            } else {
                let last = inner.index.read().last_version(stream);
                let ok = match expected {
                    ExpectedVersion::Any => true,
                    ExpectedVersion::NoStream => last.is_none(),
                    ExpectedVersion::StreamExists => last.is_some(),
                    ExpectedVersion::Exact(v) => last == Some(v),
                };
                if !ok {
                    return Err(Error::WrongExpectedVersion {
                        stream: stream.to_string(),
                        expected,
                        actual: last,
                    });
                }
                let first_version =
                    last.map_or(Some(0), |v| v.checked_add(1)).ok_or_else(|| {
                        Error::InvalidArgument(format!("stream {stream:?} is at the last version"))
                    })?;
                let watermark = inner.log.durable();
                let (position, buf) = writer.reserve(frame_len);
                format::encode_events_frame(
                    buf,
                    position,
                    watermark,
                    stream,
                    first_version,
                    &records,
                );
                let count = records.len() as u32;
                inner.index.write().record(
                    stream,
                    FrameRef {
                        first_version,
                        count,
                        position,
                    },
                    records.first().map(|r| r.id).unwrap_or_default(),
                );
                inner.events.fetch_add(u64::from(count), Ordering::Relaxed);
                if inner.options.durability != Durability::Sync {
                    let chunks = writer.take();
                    inner.log.write(&chunks)?;
                    writer.recycle(chunks);
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
        let head = self.inner.writer.lock().head();
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
        Ok(StreamEvents::forward(
            Arc::clone(&self.inner.log),
            self.index_reader(),
            stream,
            from,
            self.visible(),
        ))
    }

    /// Reads `stream` backward from version `from` (inclusive), or from its last event when
    /// `from` is `None`.
    ///
    /// # Errors
    /// As [`Store::read_stream`].
    pub fn read_stream_backward(&self, stream: &str, from: Option<u64>) -> Result<StreamEvents> {
        read::check_stream_name(stream)?;
        Ok(StreamEvents::backward(
            Arc::clone(&self.inner.log),
            self.index_reader(),
            stream,
            from,
            self.visible(),
        ))
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

    /// The stream's last version, `None` if it has no events.
    pub fn stream_version(&self, stream: &str) -> Option<u64> {
        let idx = self.inner.index.read();
        let frame = idx.last_frame(stream)?.0;
        (frame.position < self.visible()).then(|| frame.last_version())
    }

    /// A summary of the store.
    ///
    /// # Errors
    /// I/O errors reading file sizes.
    pub fn info(&self) -> Result<StoreInfo> {
        let files = self.inner.log.segment_files()?;
        let idx = self.inner.index.read();
        Ok(StoreInfo {
            segments: files.len(),
            bytes: files.iter().map(|(_, len)| len).sum(),
            events: self.inner.events.load(Ordering::Relaxed),
            streams: idx.stream_count(),
            appends: idx.frame_count(),
            head: Position(self.inner.log.written()),
            durable: Position(self.inner.log.durable()),
            durability: self.inner.options.durability,
        })
    }

    /// Checks every frame of every segment (CRC, position, structure) and reports what it
    /// found; never writes. `progress` is called with the bytes checked so far, as they go.
    ///
    /// # Errors
    /// I/O errors.
    pub fn verify(&self, progress: impl FnMut(u64)) -> Result<VerifyReport> {
        self.inner
            .log
            .verify(self.visible(), progress, read::events_in_frame)
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

    fn index_reader(&self) -> read::IndexHandle {
        read::IndexHandle(Arc::clone(&self.inner) as Arc<dyn read::FrameLookup>)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // Errors are visible through `close`; a drop can only do its best.
        let _ = self.inner.close();
    }
}

impl read::FrameLookup for Inner {
    fn frame_of(&self, stream: &str, version: u64) -> Option<FrameRef> {
        self.index.read().frame_of(stream, version)
    }
    fn last_version(&self, stream: &str) -> Option<u64> {
        self.index.read().last_version(stream)
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

    /// Whether this append repeats one already stored at the place `expected` names. Returns
    /// the original result and the end of its frame (to wait for its durability).
    fn find_retry(
        &self,
        writer: &Appender,
        stream: &str,
        expected: ExpectedVersion,
        records: &[EventRecord<'_>],
    ) -> Result<Option<(AppendResult, u64)>> {
        let Some(first_id) = records.first().map(|r| r.id) else {
            return Ok(None);
        };
        let candidate = {
            let idx = self.index.read();
            match expected {
                ExpectedVersion::Any | ExpectedVersion::StreamExists => {
                    match idx.last_frame(stream) {
                        Some((frame, id)) if id == first_id => Some(frame),
                        _ => None,
                    }
                }
                ExpectedVersion::NoStream => idx.frame_of(stream, 0),
                ExpectedVersion::Exact(v) => v.checked_add(1).and_then(|n| idx.frame_of(stream, n)),
            }
        };
        let Some(frame) = candidate else {
            return Ok(None);
        };
        // Read the stored append: from the log, or from the writer's unwritten bytes.
        let stored: Vec<u8> = match writer.pending_frame(frame.position) {
            Some(bytes) => bytes.to_vec(),
            None => self
                .log
                .read_frame(frame.position, self.log.written())?
                .1
                .to_vec(),
        };
        let header = format::decode_frame_header(&stored)
            .map_err(|e| Error::corrupted(&self.dir, frame.position, e.to_string()))?;
        let len = usize::try_from(header.frame_len()).unwrap_or(usize::MAX);
        let body = stored
            .get(FRAME_HEADER_LEN..len)
            .ok_or_else(|| Error::corrupted(&self.dir, frame.position, "short frame"))?;
        let body = format::decode_events_body(body)
            .map_err(|e| Error::corrupted(&self.dir, frame.position, e.to_string()))?;
        // Within the stored append, where would this one start?
        let start_version = match expected {
            ExpectedVersion::Exact(v) => v.saturating_add(1),
            ExpectedVersion::NoStream => 0,
            _ => frame.first_version,
        };
        let skip =
            usize::try_from(start_version.saturating_sub(body.first_version)).unwrap_or(usize::MAX);
        let stored_ids: Vec<[u8; 16]> = body.events.iter().skip(skip).map(|e| e.id).collect();
        let new_ids: Vec<[u8; 16]> = records.iter().map(|r| r.id).collect();
        if stored_ids.first() != Some(&first_id) {
            return Ok(None);
        }
        if skip != 0 || stored_ids != new_ids {
            return Err(Error::IdempotencyConflict {
                stream: stream.to_string(),
                reason: format!(
                    "event {} is already stored at version {start_version}, but the append's \
                     events differ from the stored append of {} events at version {}",
                    EventId(first_id),
                    body.events.len(),
                    body.first_version
                ),
            });
        }
        let result = AppendResult {
            first_version: frame.first_version,
            last_version: frame.last_version(),
            position: Position(frame.position),
            deduplicated: true,
        };
        Ok(Some((
            result,
            frame.position.saturating_add(header.frame_len()),
        )))
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
                let chunks = self.writer.lock().take();
                self.log.write(&chunks)?;
                self.writer.lock().recycle(chunks);
                self.log.sync()
            });
            *committing = false;
            self.committed.notify_all();
            res?;
        }
    }

    fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        if let Some((handle, stop)) = self.background.lock().take() {
            *stop.0.lock() = true;
            stop.1.notify_all();
            let _ = handle.join();
        }
        if self.options.read_only {
            return Ok(());
        }
        if self.log.is_poisoned() {
            return Err(Error::Poisoned);
        }
        let head = self.writer.lock().head();
        if self.recovery.clean_shutdown && head == self.opened_at {
            // Nothing appended since a clean open: the checkpoint already on disk still
            // attests the whole log.
            return Ok(());
        }
        self.commit(head)?;
        let end = {
            let mut writer = self.writer.lock();
            let (position, buf) = writer.reserve(FRAME_HEADER_LEN as u64);
            // Everything before the checkpoint is durable now, unless a new segment was
            // started for it, whose header attests everything before it.
            let watermark = self.log.durable().min(position);
            format::encode_checkpoint_frame(buf, position, watermark);
            position.saturating_add(FRAME_HEADER_LEN as u64)
        };
        self.commit(end)
    }
}

fn start_periodic_sync(inner: &Arc<Inner>, interval: Duration) {
    let weak: Weak<Inner> = Arc::downgrade(inner);
    let stop = Arc::new((Mutex::new(false), Condvar::new()));
    let stop2 = Arc::clone(&stop);
    let handle = std::thread::Builder::new()
        .name("streamlog-sync".into())
        .spawn(move || {
            loop {
                {
                    let mut stopped = stop2.0.lock();
                    if *stopped {
                        return;
                    }
                    stop2.1.wait_for(&mut stopped, interval);
                    if *stopped {
                        return;
                    }
                }
                let Some(inner) = weak.upgrade() else { return };
                // A failure poisons the log; appends report it from then on.
                if inner.log.sync().is_err() {
                    return;
                }
            }
        });
    if let Ok(handle) = handle {
        *inner.background.lock() = Some((handle, stop));
    }
}
