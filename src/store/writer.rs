//! The writer: appends checked against expected versions and retries, encoded into the
//! log's buffer, and group commit (one write and one sync for every waiting appender).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::event::{
    self, AppendResult, EventId, EventRef, ExpectedVersion, NewEvent, Position, ResumeToken,
};
use super::frame::DecodedFrame;
use super::lookup::Found;
use super::maintenance::Signal;
use super::{Durability, Inner, Store};
use crate::error::{Error, Result};
use crate::format::{self, EventRecord};
use crate::index::{StreamCache, StreamState};
use crate::log::Appender;
use crate::segment::FrameBytes;

/// Wakes readers that wait for appends to become visible (subscriptions). Costs the
/// commit path one atomic load while nobody waits.
#[derive(Debug, Default)]
pub(super) struct Published {
    waiters: AtomicUsize,
    lock: Mutex<()>,
    cond: Condvar,
    /// A background thread told of every change once per round (the `LIVE` publisher).
    watcher: std::sync::OnceLock<Arc<Signal>>,
    /// Whether the watcher waits to be told (so a burst of commits signals it once).
    watcher_armed: AtomicBool,
    /// The thread that wakes the waiters for the commit path, so that the writer never
    /// queues for the waiters' mutex behind the subscribers it wakes (with many of them,
    /// it would wait behind every one). Started with the first wait.
    waker: std::sync::OnceLock<Arc<Signal>>,
    waker_armed: AtomicBool,
}

impl Published {
    /// Tells `signal` of the next visibility change (and, after each [`Published::rearm`],
    /// of the next one again).
    pub(super) fn watch(&self, signal: Arc<Signal>) {
        let _ = self.watcher.set(signal);
        self.watcher_armed.store(true, Ordering::SeqCst);
    }

    /// The watcher is ready to be told of the next change.
    pub(super) fn rearm(&self) {
        self.watcher_armed.store(true, Ordering::SeqCst);
    }

    /// Called after visibility advanced.
    pub(super) fn notify(&self) {
        if self.watcher_armed.load(Ordering::Relaxed)
            && self.watcher_armed.swap(false, Ordering::SeqCst)
            && let Some(signal) = self.watcher.get()
        {
            signal.notify_work();
        }
        // Sequentially consistent with the waiter's increment: either the waiter is
        // counted here, or its check of `ready` comes after the visibility change.
        if self.waiters.load(Ordering::SeqCst) > 0 {
            match self.waker.get() {
                Some(waker) => {
                    if self.waker_armed.swap(false, Ordering::SeqCst) {
                        waker.notify_work();
                    }
                }
                None => self.wake_waiters(),
            }
        }
    }

    /// Wakes every waiter (the waker thread's work). With many waiters, then pauses
    /// before it can wake them again (2 µs per waiter beyond the first 32, at most 5 ms):
    /// every wake-up costs each waiter a context switch and a read, so waking a thousand
    /// idle subscribers on every commit would take the writer's cores from it. Commits
    /// during the pause are delivered together at its end; with few waiters there is no
    /// pause at all.
    pub(super) fn wake_waiters(&self) {
        // Armed first: a change after this point signals the waker again.
        self.waker_armed.store(true, Ordering::SeqCst);
        {
            let _guard = self.lock.lock();
            self.cond.notify_all();
        }
        let many = self.waiters.load(Ordering::Relaxed).saturating_sub(32);
        if many > 0 {
            let pause = Duration::from_micros(2 * many as u64).min(Duration::from_millis(5));
            std::thread::sleep(pause);
        }
    }

    /// Whether the waker thread runs; `signal` becomes its signal if not.
    pub(super) fn set_waker(&self, signal: Arc<Signal>) -> bool {
        if self.waker.set(signal).is_err() {
            return true;
        }
        self.waker_armed.store(true, Ordering::SeqCst);
        false
    }

    /// Whether the waker thread was started.
    pub(super) fn has_waker(&self) -> bool {
        self.waker.get().is_some()
    }

    /// Waits until `ready` holds or `timeout` passes; returns `ready`'s last answer.
    pub(super) fn wait_until(&self, ready: impl Fn() -> bool, timeout: Duration) -> bool {
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let deadline = Instant::now() + timeout;
        let mut guard = self.lock.lock();
        let mut ok = ready();
        while !ok {
            let timed_out = self.cond.wait_until(&mut guard, deadline).timed_out();
            ok = ready();
            if timed_out {
                break;
            }
        }
        drop(guard);
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        ok
    }
}

/// The writer's state, under one mutex.
#[derive(Debug)]
pub(super) struct Writer {
    pub(super) appender: Appender,
    pub(super) streams: StreamCache,
    /// Commit time of the latest append (microseconds since the Unix epoch): the next
    /// one is stamped no earlier.
    pub(super) last_commit_us: i64,
}

/// Sector size that [`Options::sector_aligned_commits`](crate::Options::sector_aligned_commits)(crate::Options) aligns commits to.
pub(super) const COMMIT_ALIGN_BYTES: u64 = 4096;

impl Store {
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
    /// - [`Error::WrongExpectedVersion`] when the stream is not at `expected` (a
    ///   soft-deleted stream counts as no stream: [`Store::stream_version`]);
    /// - [`Error::StreamDeleted`] when the stream is hard deleted;
    /// - [`Error::IdempotencyConflict`] when the ids match an earlier append only in part;
    /// - [`Error::InvalidArgument`] for an empty batch, an empty or reserved (`$`-prefixed)
    ///   stream name, or an empty event type;
    /// - [`Error::TooLarge`] when a limit of [`Options`](crate::Options) is exceeded;
    /// - [`Error::Poisoned`] after an earlier write or sync failure;
    /// - [`Error::ReadOnly`] on a read-only store; [`Error::Closed`] after
    ///   [`Store::close`] through another handle;
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
        if stream.starts_with('$') {
            return Err(Error::InvalidArgument(format!(
                "stream names starting with '$' are reserved: {stream:?}"
            )));
        }
        self.append_any_stream(stream, expected, events, None)
    }

    /// [`Store::append`] and [`Store::save_checkpoint`] in one atomic write: the
    /// checkpoint travels in the append's frame, so after any crash either the events are
    /// stored and `checkpoint(name)` returns `token`, or neither happened. A processor that
    /// reads events, writes the events they lead to and saves its input position this way
    /// never both processes an input again and writes its output twice (exactly once, for
    /// processors that write back to this store; at least once otherwise, see
    /// [`Store::save_checkpoint`]).
    ///
    /// ```
    /// # fn main() -> streamlog::Result<()> {
    /// # let dir = tempfile::tempdir().map_err(|e| streamlog::Error::InvalidArgument(e.to_string()))?;
    /// use streamlog::{ExpectedVersion, NewEvent, Position, ResumeToken, Store};
    ///
    /// let store = Store::open(dir.path())?;
    /// store.append("order-7", ExpectedVersion::Any, [NewEvent::new("Placed", br#"{"total":30}"#)])?;
    /// // The processor: for each order event after its checkpoint, an invoice event, and
    /// // its input position saved with it.
    /// let from = store.checkpoint("invoicer")?.unwrap_or(ResumeToken::START);
    /// for e in store.read_all(from)? {
    ///     let e = e?;
    ///     if !e.stream.starts_with("order-") {
    ///         continue;
    ///     }
    ///     let invoice = NewEvent::new("Invoiced", e.data.clone());
    ///     store.append_and_checkpoint(
    ///         &format!("invoice-{}", &e.stream[6..]),
    ///         ExpectedVersion::Any,
    ///         [invoice],
    ///         "invoicer",
    ///         e.resume_token(),
    ///     )?;
    /// }
    /// assert!(store.checkpoint("invoicer")?.is_some());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// A retry recognised as a duplicate (see [`Store::append`]) writes nothing, the
    /// checkpoint included. Under `Periodic` and `Buffered`, [`Store::checkpoint`] through
    /// this handle returns the new token at once, and other processes see it once the
    /// append is durable.
    ///
    /// # Errors
    /// As [`Store::append`], and [`Error::InvalidArgument`] for a bad checkpoint name
    /// (see [`Store::checkpoint`]).
    pub fn append_and_checkpoint(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: impl IntoIterator<Item = NewEvent>,
        name: &str,
        token: ResumeToken,
    ) -> Result<AppendResult> {
        super::checkpoints::check_name(name)?;
        if stream.starts_with('$') {
            return Err(Error::InvalidArgument(format!(
                "stream names starting with '$' are reserved: {stream:?}"
            )));
        }
        let events: Vec<NewEvent> = events.into_iter().collect();
        let refs: Vec<EventRef<'_>> = events.iter().map(NewEvent::as_ref).collect();
        self.append_any_stream(stream, expected, &refs, Some((name, token)))
    }

    /// [`Store::append_refs`] to any stream, system streams (`$`-prefixed) included: for
    /// the store's own records in system streams; with a consumer checkpoint to save in the
    /// same frame, for [`Store::append_and_checkpoint`].
    pub(crate) fn append_any_stream(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: &[EventRef<'_>],
        checkpoint: Option<(&str, ResumeToken)>,
    ) -> Result<AppendResult> {
        let inner = &*self.inner;
        if inner.options.read_only {
            return Err(Error::ReadOnly);
        }
        let now_us = event::timestamp_us(inner.options.clock.now());
        let records = records_of(events, now_us);
        let trailer = checkpoint.map(|(name, token)| format::CheckpointTrailer {
            name,
            position: token.position.0,
            skip: token.skip,
        });
        let frame_len = inner
            .options
            .check_records(stream, &records)?
            .saturating_add(trailer.map_or(0, |t| t.encoded_len()));
        inner.index_room()?;

        let (result, end) = {
            let mut writer = inner.writer.lock();
            inner.check_writable()?;
            match inner.append_locked(
                &mut writer,
                stream,
                expected,
                &records,
                frame_len,
                checkpoint,
            )? {
                Locked::Done(result, end) => (result, end),
                Locked::Refused { error, pending } => {
                    return Err(inner.conflict_after_commit(writer, pending, error));
                }
            }
        };
        inner.after_append(end)?;
        Ok(result)
    }

    /// Several appends, each to its own stream with its own expected version, under one
    /// hold of the writer's lock and with one commit: under [`Durability::Sync`], one
    /// write and one sync for all of them, and the call returns once every append that
    /// succeeded is on disk. For callers that collect appends from many clients, such as a
    /// server, whose threads would otherwise each wait for the writer and the commit.
    ///
    /// Each append is its own atomic unit, exactly as with [`Store::append_refs`], checked
    /// and applied in the order given: a later one sees the earlier ones (two appends to
    /// one stream with [`ExpectedVersion::Exact`] can both succeed), and one that fails
    /// does not stop the others. They are not atomic together: after a crash before this
    /// returns, any of them may be stored or not, each whole or not at all.
    ///
    /// ```
    /// # fn main() -> streamlog::Result<()> {
    /// # let dir = tempfile::tempdir().map_err(|e| streamlog::Error::InvalidArgument(e.to_string()))?;
    /// use streamlog::{AppendRequest, Error, EventRef, ExpectedVersion, Store};
    ///
    /// let store = Store::open(dir.path())?;
    /// let placed = [EventRef::new("Placed", br#"{"total":30}"#)];
    /// let paid = [EventRef::new("Paid", br#"{"amount":30}"#)];
    /// let results = store.append_many(&[
    ///     AppendRequest { stream: "order-1", expected: ExpectedVersion::NoStream, events: &placed },
    ///     AppendRequest { stream: "order-2", expected: ExpectedVersion::Exact(4), events: &paid },
    /// ])?;
    /// assert_eq!(results[0].as_ref().map(|r| r.first_version).ok(), Some(0));
    /// assert!(matches!(results[1], Err(Error::WrongExpectedVersion { .. })));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// The outer result fails when no append of the call can be acknowledged:
    /// [`Error::ReadOnly`], [`Error::Closed`], [`Error::Poisoned`], [`Error::Io`] when the
    /// write or sync fails (the store is poisoned from then on; none of the appends is
    /// acknowledged), and the index error of [`Store::append`] when the index cannot be
    /// flushed. Each inner result fails as [`Store::append_refs`] does for that append
    /// alone ([`Error::WrongExpectedVersion`], [`Error::StreamDeleted`],
    /// [`Error::IdempotencyConflict`], [`Error::InvalidArgument`], [`Error::TooLarge`]).
    pub fn append_many(&self, appends: &[AppendRequest<'_>]) -> Result<Vec<Result<AppendResult>>> {
        let inner = &*self.inner;
        if inner.options.read_only {
            return Err(Error::ReadOnly);
        }
        if appends.is_empty() {
            return Ok(Vec::new());
        }
        let now_us = event::timestamp_us(inner.options.clock.now());
        // Each append's records and frame length, or why it is refused before the lock.
        let prepared: Vec<Result<(Vec<EventRecord<'_>>, u64)>> = appends
            .iter()
            .map(|a| {
                if a.stream.starts_with('$') {
                    return Err(Error::InvalidArgument(format!(
                        "stream names starting with '$' are reserved: {:?}",
                        a.stream
                    )));
                }
                let records = records_of(a.events, now_us);
                let frame_len = inner.options.check_records(a.stream, &records)?;
                Ok((records, frame_len))
            })
            .collect();
        inner.index_room()?;

        let mut results = Vec::with_capacity(appends.len());
        // Everything below this must be durable before the call returns: the appends'
        // frames, and what a refused append lost to.
        let mut commit_to = 0;
        {
            let mut writer = inner.writer.lock();
            inner.check_writable()?;
            for (a, p) in appends.iter().zip(prepared) {
                let (records, frame_len) = match p {
                    Ok(p) => p,
                    Err(e) => {
                        results.push(Err(e));
                        continue;
                    }
                };
                match inner.append_locked(
                    &mut writer,
                    a.stream,
                    a.expected,
                    &records,
                    frame_len,
                    None,
                ) {
                    Ok(Locked::Done(result, end)) => {
                        commit_to = commit_to.max(end);
                        results.push(Ok(result));
                    }
                    Ok(Locked::Refused { error, pending }) => {
                        if pending {
                            commit_to = commit_to.max(writer.appender.head());
                        }
                        results.push(Err(error));
                    }
                    // A failed write poisons the store: nothing of the call is acknowledged.
                    Err(e) if inner.log.is_poisoned() => return Err(e),
                    Err(e) => results.push(Err(e)),
                }
            }
        }
        inner.after_append(commit_to)?;
        Ok(results)
    }

    /// Forces everything appended so far to disk. On a read-only store nothing was
    /// appended: there is nothing to force, and it returns `Ok` (unlike the calls that
    /// would write, which return [`Error::ReadOnly`]).
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
}

/// Whether a stream whose last version is `last` (`None`: no stream) is at `expected`.
pub(super) fn expected_matches(expected: ExpectedVersion, last: Option<u64>) -> bool {
    match expected {
        ExpectedVersion::Any => true,
        ExpectedVersion::NoStream => last.is_none(),
        ExpectedVersion::StreamExists => last.is_some(),
        ExpectedVersion::Exact(v) => last == Some(v),
    }
}

impl Inner {
    /// Refuses writes to a poisoned or closed store; called under the writer's lock,
    /// which the close takes to write its checkpoint, so no append lands after it.
    pub(super) fn check_writable(&self) -> Result<()> {
        if self.log.is_poisoned() {
            return Err(Error::Poisoned);
        }
        if self.closed.load(std::sync::atomic::Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// One append under the writer's lock: the hard-delete and expected-version checks,
    /// the retry lookup, and the frame encoded into the log's buffer (see
    /// [`Store::append`] for the rules). `frame_len` is what `check_records` returned for
    /// `records`, with the checkpoint's trailer added.
    fn append_locked(
        &self,
        writer: &mut Writer,
        stream: &str,
        expected: ExpectedVersion,
        records: &[EventRecord<'_>],
        frame_len: u64,
        checkpoint: Option<(&str, ResumeToken)>,
    ) -> Result<Locked> {
        // A hard-deleted stream refuses every append, retries of earlier ones too.
        let rule = self.registry.latest(stream);
        if let Some(r) = rule.as_ref().filter(|r| r.tombstoned) {
            return Ok(Locked::Refused {
                error: Error::StreamDeleted {
                    stream: stream.to_string(),
                },
                pending: r.position >= self.log.durable(),
            });
        }
        let state = self.stream_state(writer, stream)?;
        // After a soft delete, the stream is re-created at its truncate-before version.
        let created_at = rule
            .as_ref()
            .and_then(|r| r.metadata.truncate_before)
            .unwrap_or(0);
        if let Some((result, end)) =
            self.find_retry(writer, state, stream, expected, created_at, records)?
        {
            return Ok(Locked::Done(result, end));
        }
        let last = state.map(|s| s.last_version());
        // A soft-deleted stream does not exist for expected versions; its versions go on
        // after its old last one.
        let visible_last = rule
            .as_ref()
            .map_or(last, |r| r.rule().effective_last(last));
        if !expected_matches(expected, visible_last) {
            // The append this one lost to may not be durable yet, and readers see only
            // durable appends under `Sync`: the caller waits for it, so that a read
            // started after it returns sees the version it reports.
            let durable = self.log.durable();
            return Ok(Locked::Refused {
                error: Error::WrongExpectedVersion {
                    stream: stream.to_string(),
                    expected,
                    actual: visible_last,
                },
                pending: state.is_some_and(|s| s.position >= durable)
                    || rule.is_some_and(|r| r.position >= durable),
            });
        }
        let first_version = last.map_or(Some(0), |v| v.checked_add(1)).ok_or_else(|| {
            Error::InvalidArgument(format!("stream {stream:?} is at the last version"))
        })?;
        let trailer = checkpoint.map(|(name, token)| format::CheckpointTrailer {
            name,
            position: token.position.0,
            skip: token.skip,
        });
        let (position, end) =
            self.encode_append_with(writer, stream, first_version, records, frame_len, trailer)?;
        if let Some((name, token)) = checkpoint {
            self.add_pending_checkpoint(super::checkpoints::PendingCheckpoint {
                name: name.to_string(),
                token,
                frame_end: end,
            });
        }
        let result = AppendResult {
            first_version,
            last_version: crate::index::last_version(first_version, records.len() as u32),
            position: Position(position),
            deduplicated: false,
        };
        Ok(Locked::Done(result, end))
    }

    /// Encodes the append of `records` to `stream` at `first_version` into the writer's
    /// buffer (in `frame_len` bytes), indexes it, and hands it to the log outside `Sync`.
    /// Returns its position and the end of its frame.
    pub(super) fn encode_append(
        &self,
        writer: &mut Writer,
        stream: &str,
        first_version: u64,
        records: &[EventRecord<'_>],
        frame_len: u64,
    ) -> Result<(u64, u64)> {
        self.encode_append_with(writer, stream, first_version, records, frame_len, None)
    }

    /// [`Inner::encode_append`] with a consumer checkpoint after the events (`frame_len`
    /// counts it).
    pub(super) fn encode_append_with(
        &self,
        writer: &mut Writer,
        stream: &str,
        first_version: u64,
        records: &[EventRecord<'_>],
        frame_len: u64,
        checkpoint: Option<format::CheckpointTrailer<'_>>,
    ) -> Result<(u64, u64)> {
        let watermark = self.log.durable();
        // The commit time: the clock's, but never before the previous append's (the clock
        // may step back). Stamped under the writer's lock, so commit times follow positions.
        let committed_at_us =
            event::timestamp_us(self.options.clock.now()).max(writer.last_commit_us);
        writer.last_commit_us = committed_at_us;
        let (position, buf) = writer.appender.reserve(frame_len);
        let crc = format::encode_events_frame(
            buf,
            position,
            watermark,
            &format::EventsFrame {
                committed_at_us: Some(committed_at_us),
                stream,
                first_version,
                events: records,
                checkpoint,
            },
        )
        .crc;
        let count = records.len() as u32;
        self.index.record(
            stream,
            first_version,
            count,
            position,
            crc,
            Some(committed_at_us),
        );
        writer.streams.insert(
            stream,
            StreamState {
                first_version,
                count,
                position,
                first_id: records.first().map(|r| r.id).unwrap_or_default(),
            },
        );
        if self.options.durability != Durability::Sync {
            self.write_pending(writer, false)?;
        }
        if self.index_due() {
            self.maintenance.notify_work();
        }
        Ok((position, position.saturating_add(frame_len)))
    }

    /// After the writer's lock is released: waits (under `Sync`) until everything below
    /// `end` is durable, and keeps the index's memory in bounds.
    pub(super) fn after_append(&self, end: u64) -> Result<()> {
        if self.options.durability == Durability::Sync {
            self.commit(end)?;
        }
        if self.options.background_index_maintenance {
            self.index_backpressure();
        } else if self.index_due() {
            self.maintain_index(false);
        }
        Ok(())
    }

    /// Returns `conflict` once what it reports is visible: when the append or change it
    /// lost to is `pending` (not durable yet) under `Sync`, after committing it, so that a
    /// read started after the caller returns sees the state the conflict reports.
    pub(super) fn conflict_after_commit(
        &self,
        writer: parking_lot::MutexGuard<'_, Writer>,
        pending: bool,
        conflict: Error,
    ) -> Error {
        if !pending || self.options.durability != Durability::Sync {
            return conflict;
        }
        let head = writer.appender.head();
        drop(writer);
        match self.commit(head) {
            Ok(()) => conflict,
            Err(e) => e,
        }
    }

    /// [`Inner::resolve`] for the writer: frames written or still in its buffer.
    pub(super) fn resolve_for_writer(
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
            match self.frame_at(pos, self.log.written()) {
                Ok(frame) => Ok(Some(frame)),
                Err(Error::Scavenged { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        })
    }

    /// The stream's latest append as the writer sees it (including unwritten frames):
    /// from the bounded cache, or looked up in the index on a miss.
    pub(super) fn stream_state(
        &self,
        writer: &mut Writer,
        stream: &str,
    ) -> Result<Option<StreamState>> {
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

    /// Whether this append repeats one already stored at the place `expected` names
    /// (`NoStream`: version 0, or, after a soft delete, `created_at` where the stream was
    /// re-created, or the stream's last append). Returns the original result and the end of its frame (to wait for its
    /// durability).
    pub(super) fn find_retry(
        &self,
        writer: &Writer,
        state: Option<StreamState>,
        stream: &str,
        expected: ExpectedVersion,
        created_at: u64,
        records: &[EventRecord<'_>],
    ) -> Result<Option<(AppendResult, u64)>> {
        if expected == ExpectedVersion::NoStream && created_at > 0 {
            let found = self.find_retry(writer, state, stream, expected, 0, records)?;
            if found.is_some() {
                return Ok(found);
            }
            return self.find_retry_at(writer, state, stream, expected, created_at, records);
        }
        self.find_retry_at(writer, state, stream, expected, 0, records)
    }

    /// [`Inner::find_retry`], for `NoStream` at `created_at`.
    fn find_retry_at(
        &self,
        writer: &Writer,
        state: Option<StreamState>,
        stream: &str,
        expected: ExpectedVersion,
        created_at: u64,
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
            // A re-created stream's append may also be its last one (when its versions
            // are still below a `truncate_before` set beyond the old end).
            ExpectedVersion::NoStream if state.first_id == first_id => state.first_version,
            ExpectedVersion::NoStream => created_at,
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
            last_version: entry.last_version(),
            position: Position(entry.position),
            deduplicated: true,
        };
        Ok(Some((
            result,
            entry.position.saturating_add(frame.header().frame_len()),
        )))
    }

    /// Group commit: returns once everything below `end` is durable. The first waiter to
    /// find no commit in progress becomes the leader: it takes every frame encoded so far,
    /// writes them with one write per segment and syncs once, while later appenders queue
    /// their frames for the next leader.
    ///
    /// Then the files of the consumer checkpoints that appends carried and that are
    /// durable now are written (see `checkpoints.rs`); a failure there is not this
    /// caller's: those stay pending, and the index maintainer reports them.
    pub(super) fn commit(&self, end: u64) -> Result<()> {
        self.commit_log(end)?;
        let _ = self.mirror_checkpoints();
        Ok(())
    }

    fn commit_log(&self, end: u64) -> Result<()> {
        loop {
            let mut queue = self.commits.lock();
            if self.log.durable() >= end {
                // A sync outside the queue (the `Periodic` syncer, a segment's roll) may
                // have made this end durable after a commit woke this thread to lead the
                // next one: whoever returns with waiters left and no commit under way
                // wakes the next leader (and those already served), or they would sleep
                // until some later commit.
                if !queue.committing && !queue.waiters.is_empty() {
                    let woken = queue.take_woken(self.log.durable(), false);
                    drop(queue);
                    wake(woken);
                }
                return Ok(());
            }
            if self.log.is_poisoned() {
                // Nothing will be committed again: no waiter may sleep on.
                let woken = std::mem::take(&mut queue.waiters);
                drop(queue);
                wake(woken);
                return Err(Error::Poisoned);
            }
            if queue.committing {
                // Wait to be woken: by the commit that makes `end` durable (or fails), or
                // to lead the next one. No other commit wakes this thread.
                let waiter = Arc::new(CommitWaiter {
                    end,
                    thread: std::thread::current(),
                    woken: AtomicBool::new(false),
                    lead: AtomicBool::new(false),
                });
                queue.waiters.push(Arc::clone(&waiter));
                drop(queue);
                while !waiter.woken.load(Ordering::Acquire) {
                    std::thread::park();
                }
                // Checked without the lock: the threads one commit served return at once.
                // The one it woke to lead goes through the lock (see above).
                if !waiter.lead.load(Ordering::Relaxed) && self.log.durable() >= end {
                    return Ok(());
                }
                continue;
            }
            queue.committing = true;
            let res = parking_lot::MutexGuard::unlocked(&mut queue, || {
                // Frames leave the writer's buffer and reach the file under one lock, so
                // the writer always finds a frame in one place or the other (its retry
                // and stream lookups read frames that are not durable yet).
                self.write_pending(&mut self.writer.lock(), true)?;
                self.log.sync()
            });
            queue.committing = false;
            let woken = queue.take_woken(self.log.durable(), res.is_err());
            drop(queue);
            wake(woken);
            res?;
            if self.options.durability == Durability::Sync {
                self.published.notify();
            }
        }
    }

    /// Hands the frames encoded so far to the log (one write per segment). Before a sync
    /// (`commit`) under [`Options::sector_aligned_commits`](crate::Options::sector_aligned_commits), a padding frame first makes
    /// them end on a sector boundary.
    pub(super) fn write_pending(&self, writer: &mut Writer, commit: bool) -> Result<()> {
        if commit && self.options.sector_aligned_commits {
            let watermark = self.log.durable();
            if let Some((position, len, buf)) = writer.appender.reserve_padding(COMMIT_ALIGN_BYTES)
            {
                format::encode_padding_frame(buf, position, watermark, len);
            }
        }
        let chunks = writer.appender.take();
        self.log.write(&chunks)?;
        writer.appender.recycle(chunks);
        if self.options.durability != Durability::Sync {
            // Written is visible outside `Sync`.
            self.published.notify();
        }
        Ok(())
    }
}

/// Group commit's state, under one mutex: whether a leader is writing and syncing right
/// now, and the appenders waiting meanwhile.
#[derive(Debug, Default)]
pub(super) struct CommitQueue {
    committing: bool,
    waiters: Vec<Arc<CommitWaiter>>,
}

/// An appender waiting for a commit: the end it needs durable, how to wake it, and
/// whether it was woken to lead the next commit.
#[derive(Debug)]
struct CommitWaiter {
    end: u64,
    thread: std::thread::Thread,
    woken: AtomicBool,
    lead: AtomicBool,
}

/// Wakes waiters taken out of the queue.
fn wake(waiters: Vec<Arc<CommitWaiter>>) {
    for waiter in waiters {
        waiter.woken.store(true, Ordering::Release);
        waiter.thread.unpark();
    }
}

impl CommitQueue {
    /// After a commit made the log durable up to `durable` (or failed): takes out the
    /// waiters to wake. Those whose end is durable now (all of them after a failure), and
    /// the first of the rest, which leads the next commit. Waking only these (not every
    /// waiter, most of which would find their end still ahead and sleep again) halves
    /// the context switches of 64 writers.
    fn take_woken(&mut self, durable: u64, failed: bool) -> Vec<Arc<CommitWaiter>> {
        let mut woken = Vec::new();
        let mut leader = false;
        self.waiters.retain(|w| {
            let lead = !failed && !leader && w.end > durable;
            let wake = failed || w.end <= durable || lead;
            leader |= lead;
            if wake {
                // Before `woken`, whose release store publishes it.
                w.lead.store(lead, Ordering::Relaxed);
                woken.push(Arc::clone(w));
            }
            !wake
        });
        woken
    }
}

/// One append of [`Store::append_many`]: a stream, the version it is expected at, and the
/// events (borrowed, as in [`Store::append_refs`]).
#[derive(Debug, Clone, Copy)]
pub struct AppendRequest<'a> {
    /// The stream to append to (not `$`-prefixed).
    pub stream: &'a str,
    /// The version the stream must be at.
    pub expected: ExpectedVersion,
    /// The events, appended as one atomic unit.
    pub events: &'a [EventRef<'a>],
}

/// What an append came to under the writer's lock.
pub(super) enum Locked {
    /// Encoded (or found to be a retry of an earlier append): its result and the end of
    /// its frame, which must be durable before the result is returned under `Sync`.
    Done(AppendResult, u64),
    /// Refused for the stream's state (expected version, hard delete); `pending` when what
    /// it lost to is not durable yet (see [`Inner::conflict_after_commit`]).
    Refused { error: Error, pending: bool },
}

/// The records of `events` as the log stores them, stamped `now_us` unless they carry a
/// time of their own.
fn records_of<'a>(events: &[EventRef<'a>], now_us: i64) -> Vec<EventRecord<'a>> {
    events
        .iter()
        .map(|e| EventRecord {
            id: e.id.0,
            timestamp_us: e.timestamp.map_or(now_us, event::timestamp_us),
            schema_version: e.schema_version,
            event_type: e.event_type,
            metadata: e.metadata,
            data: e.data,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(ends: &[u64]) -> CommitQueue {
        CommitQueue {
            committing: false,
            waiters: ends
                .iter()
                .map(|&end| {
                    Arc::new(CommitWaiter {
                        end,
                        thread: std::thread::current(),
                        woken: AtomicBool::new(false),
                        lead: AtomicBool::new(false),
                    })
                })
                .collect(),
        }
    }

    fn ends(waiters: &[Arc<CommitWaiter>]) -> Vec<u64> {
        waiters.iter().map(|w| w.end).collect()
    }

    #[test]
    fn a_commit_wakes_the_waiters_it_made_durable_and_one_to_lead_the_next() {
        let mut q = queue(&[300, 100, 400, 200, 500]);
        let woken = q.take_woken(250, false);
        assert_eq!(ends(&woken), [300, 100, 200]);
        let leads: Vec<bool> = woken
            .iter()
            .map(|w| w.lead.load(Ordering::Relaxed))
            .collect();
        assert_eq!(leads, [true, false, false]);
        assert_eq!(ends(&q.waiters), [400, 500]);
        // Nothing durable for anyone: only the next leader.
        let woken = q.take_woken(250, false);
        assert_eq!(ends(&woken), [400]);
        assert_eq!(ends(&q.waiters), [500]);
    }

    #[test]
    fn a_failed_commit_wakes_every_waiter() {
        let mut q = queue(&[300, 100, 400]);
        assert_eq!(ends(&q.take_woken(0, true)), [300, 100, 400]);
        assert!(q.waiters.is_empty());
    }
}
