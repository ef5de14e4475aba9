//! Read iterators: one stream forward or backward, and `$all` in commit order.

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::sync::Arc;

use super::Store;
use super::event::{EventId, EventView, Position, RecordedEvent, ResumeToken};
use super::frame::DecodedFrame;
use super::lookup::{Found, Lookup};
use super::metadata::Retention;
use crate::error::{Error, Result};
use crate::format::{self, FrameHeader, FrameKind};
use crate::index::Entry;
use crate::log::LogFrames;

/// Index entries a forward stream reader fetches at once.
const ENTRY_BATCH: usize = 128;

pub(crate) fn check_stream_name(stream: &str) -> Result<()> {
    if stream.is_empty() {
        return Err(Error::InvalidArgument(
            "a stream name must not be empty".into(),
        ));
    }
    Ok(())
}

/// What a `$all` reader does with the events of one stream.
#[derive(Debug, Clone, Copy)]
enum Keep {
    All,
    /// A hard-deleted stream.
    None,
    Some(Retention),
}

/// The stream metadata a `$all` reader applies: the rules in force at its creation, with
/// the last versions of the streams whose rule keeps a number of events.
#[derive(Debug)]
struct AllRetention {
    lookup: Lookup,
    now_us: i64,
    /// Last versions looked up for `max_count` rules (bounded: cleared when full).
    last: rustc_hash::FxHashMap<String, Option<u64>>,
}

/// Streams with a `max_count` rule whose last version a `$all` reader remembers.
const LAST_VERSIONS_MAX: usize = 4096;

impl AllRetention {
    fn for_stream(&mut self, stream: &str) -> Result<Keep> {
        let visible = self.lookup.visible;
        let Some(rule) = self.lookup.inner.rule(stream, visible) else {
            return Ok(Keep::All);
        };
        if rule.tombstoned {
            return Ok(Keep::None);
        }
        let last = match (rule.max_count, self.last.get(stream)) {
            (None, _) => None,
            (Some(_), Some(last)) => *last,
            (Some(_), None) => {
                let last = self
                    .lookup
                    .inner
                    .resolve(stream, u64::MAX, visible)?
                    .map(|f| f.entry.last_version());
                if self.last.len() >= LAST_VERSIONS_MAX {
                    self.last.clear();
                }
                self.last.insert(stream.to_string(), last);
                last
            }
        };
        Ok(match Retention::new(&rule, last, self.now_us) {
            None => Keep::All,
            Some(r) => Keep::Some(r),
        })
    }
}

/// Hands the events of the events frame at `position` (read in place by a `$all` reader)
/// to `visit` as borrowed views, in version order, until `visit` breaks; events that the
/// stream's metadata hides are passed over. `locate` names the file and offset for errors.
/// (Stream readers get [`DecodedFrame`]s instead.)
///
/// [`DecodedFrame`]: super::frame::DecodedFrame
fn visit_frame(
    locate: &dyn Fn(u64) -> (std::path::PathBuf, u64),
    retention: &mut AllRetention,
    position: u64,
    frame: &[u8],
    mut visit: impl FnMut(EventView<'_>) -> ControlFlow<()>,
) -> Result<ControlFlow<()>> {
    let body = frame.get(format::FRAME_HEADER_LEN..).unwrap_or_default();
    let body = format::decode_frame_header(frame)
        .and_then(|h| format::decode_events_body(&h, body))
        .map_err(|e| {
            let (file, offset) = locate(position);
            Error::Corrupted {
                file,
                offset,
                reason: e.to_string(),
            }
        })?;
    let keep = retention.for_stream(body.stream)?;
    let rule = match keep {
        Keep::None => return Ok(ControlFlow::Continue(())),
        Keep::All => None,
        Keep::Some(r) => Some(r),
    };
    Ok(body.events.iter().enumerate().try_for_each(|(i, e)| {
        let version = body.first_version.saturating_add(i as u64);
        if let Some(r) = rule
            && !r.keeps(
                version,
                super::metadata::event_time_us(body.committed_at_us, e.timestamp_us),
            )
        {
            return ControlFlow::Continue(());
        }
        visit(EventView {
            stream: body.stream,
            version,
            position: Position(position),
            append_index: u32::try_from(i).unwrap_or(u32::MAX),
            id: EventId(e.id),
            event_type: e.event_type,
            timestamp_us: e.timestamp_us,
            committed_at_us: body.committed_at_us,
            schema_version: e.schema_version,
            metadata: e.metadata,
            data: e.data,
        })
    }))
}

/// A visitor that appends the events of one frame to `out` as owned events sharing one
/// stream name (what the iterators buffer).
fn push_owned(
    out: &mut VecDeque<RecordedEvent>,
) -> impl FnMut(EventView<'_>) -> ControlFlow<()> + '_ {
    let mut stream: Option<Arc<str>> = None;
    move |v| {
        let name = stream.get_or_insert_with(|| Arc::from(v.stream));
        out.push_back(v.to_recorded_in(Arc::clone(name)));
        ControlFlow::Continue(())
    }
}

/// Walks a stream's appends through the index, one frame at a time.
///
/// Backward, and for the first append forward, each step is one index lookup (the
/// append holding the wanted version). Forward after that, the cursor reads the index
/// ahead in key order, a batch of entries at a time: the stream's next append is the
/// entry with the next version whose frame names the stream (entries of colliding streams
/// are passed over); an entry with a greater version means the stream has no more.
#[derive(Debug)]
struct StreamCursor {
    lookup: Lookup,
    stream: String,
    /// Next version to look up; `None` when done.
    next: Option<u64>,
    backward: bool,
    /// Forward: index entries read ahead, in key order, each with its frame when the frame
    /// cache held it as the batch was read.
    ahead: VecDeque<(Entry, Option<Arc<DecodedFrame>>)>,
    /// Forward: the last entry read from the index, where the next batch starts.
    scanned: Option<Entry>,
    /// The stream metadata's rules when the reader was created, if they hide anything.
    retention: Option<Retention>,
    /// Forward: the last version to hand over (an as-of read's bound).
    last: u64,
}

impl StreamCursor {
    fn new(
        lookup: Lookup,
        stream: &str,
        from: u64,
        backward: bool,
        retention: Option<Retention>,
    ) -> Self {
        // Forward, the events below the retention floor are never looked up.
        let floor = retention.map_or(0, |r| r.floor);
        StreamCursor {
            lookup,
            stream: stream.to_string(),
            next: Some(if backward { from } else { from.max(floor) }),
            backward,
            ahead: VecDeque::new(),
            scanned: None,
            retention,
            last: u64::MAX,
        }
    }

    /// Whether the stream's metadata keeps the event.
    fn keeps(&self, e: &EventView<'_>) -> bool {
        self.retention.is_none_or(|r| {
            r.keeps(
                e.version,
                super::metadata::event_time_us(e.committed_at_us, e.timestamp_us),
            )
        })
    }

    /// Whether version `v` is in the read's range, reading from `from` within a frame.
    fn in_range(&self, v: u64, from: u64) -> bool {
        if self.backward {
            v <= from
        } else {
            v >= from && v <= self.last
        }
    }

    /// The next frame of the stream and the version to start at within it (forward: the
    /// first to keep; backward: the last).
    fn next_frame(&mut self) -> Result<Option<(Found, u64)>> {
        // Backward, the reader ends at the retention floor.
        if let (Some(next), Some(r)) = (self.next, self.retention)
            && next < r.floor
        {
            self.next = None;
        }
        let step = match (self.backward, self.scanned) {
            (false, Some(after)) => self.next_ahead(after),
            _ => self.next_lookup(),
        };
        match step {
            Ok(Some((_, from))) if !self.backward && from > self.last => {
                self.next = None;
                Ok(None)
            }
            step => step.inspect_err(|_| self.next = None),
        }
    }

    /// Forward, after the first append: the next entry read ahead with the wanted version.
    fn next_ahead(&mut self, mut after: Entry) -> Result<Option<(Found, u64)>> {
        let Some(version) = self.next else {
            return Ok(None);
        };
        loop {
            let Some((entry, cached)) = self.ahead.pop_front() else {
                // Each entry holds at least one version: a read that ends at `last` (as
                // of a bound) needs no more entries than versions are left.
                let wanted = self.last.saturating_sub(version).saturating_add(1);
                let limit = usize::try_from(wanted).map_or(ENTRY_BATCH, |w| w.min(ENTRY_BATCH));
                let batch = self
                    .lookup
                    .inner
                    .entries_after(&self.stream, &after, limit)?;
                let Some(last) = batch.last() else {
                    self.next = None;
                    return Ok(None);
                };
                // The stream's next frames are known now: the storage fetches them all
                // at once while they are read one by one (only those the read can reach:
                // a hint for frames past the bound would make the kernel read them).
                let reached = batch.partition_point(|e| e.first_version <= self.last);
                let mut cached = self
                    .lookup
                    .inner
                    .cached_frames(
                        batch.get(..reached).unwrap_or_default(),
                        self.lookup.visible,
                    )
                    .into_iter();
                after = *last;
                self.scanned = Some(after);
                self.ahead
                    .extend(batch.into_iter().map(|e| (e, cached.next().flatten())));
                continue;
            };
            if entry.first_version < version {
                continue;
            }
            if entry.first_version > version {
                // Keys sort by version: the stream has no append holding `version`.
                self.next = None;
                return Ok(None);
            }
            let found = match cached {
                // Cached whole below the bound (the cache's frames are checked and decoded).
                Some(frame) => (frame.stream() == self.stream).then_some(Found { entry, frame }),
                None => self
                    .lookup
                    .inner
                    .read_entry(&self.stream, entry, self.lookup.visible)?,
            };
            if let Some(found) = found {
                self.next = entry.last_version().checked_add(1);
                return Ok(Some((found, version)));
            }
        }
    }

    /// One index lookup: the append holding the wanted version.
    fn next_lookup(&mut self) -> Result<Option<(Found, u64)>> {
        let Some(version) = self.next else {
            return Ok(None);
        };
        // Forward, the index entries that follow are read before the first frame, so
        // that a cold read asks the storage for that frame together with the next ones
        // instead of waiting for it alone first.
        let prefetched = if self.backward {
            None
        } else {
            self.prefetch(version)?
        };
        let inner = &self.lookup.inner;
        let found = match inner.resolve(&self.stream, version, self.lookup.visible)? {
            // Backward from past the stream's end starts at its last event (as KurrentDB
            // reads it): the last append, if every version it holds is below `version`.
            None if self.backward && version != u64::MAX => inner
                .resolve(&self.stream, u64::MAX, self.lookup.visible)?
                .filter(|f| f.entry.last_version() < version),
            // Forward, only the append holding `version` (the index takes `u64::MAX` for
            // "the last append", which holds no such version).
            found => found.filter(|f| self.backward || f.entry.last_version() >= version),
        };
        let Some(found) = found else {
            self.next = None;
            return Ok(None);
        };
        let entry = found.entry;
        // The batch read ahead follows the entry found (it does not when the first
        // candidate was another stream's): it is the next batch.
        if let Some((first, batch, mut cached)) = prefetched
            && first.position == entry.position
        {
            let last_version = entry.last_version();
            // No entry after it: the stream ends with this frame.
            self.next = match batch.last() {
                Some(_) => last_version.checked_add(1),
                None => None,
            };
            self.scanned = Some(batch.last().copied().unwrap_or(entry));
            self.ahead.clear();
            self.ahead
                .extend(batch.iter().map(|e| (*e, cached.next().flatten())));
            return Ok(Some((found, version.min(last_version))));
        }
        let last = entry.last_version();
        // Backward from past the end starts at the last version.
        let version = version.min(last);
        self.next = if self.backward {
            entry.first_version.checked_sub(1)
        } else {
            self.scanned = Some(entry);
            last.checked_add(1)
        };
        Ok(Some((found, version)))
    }

    /// Forward, before the first frame is read: the index candidate for `version` and the
    /// batch of entries after it, with their frames the cache holds; the storage is
    /// asked for the others (the candidate's too) all at once. `None` when there is no
    /// candidate the read can see.
    #[allow(clippy::type_complexity)]
    fn prefetch(
        &self,
        version: u64,
    ) -> Result<
        Option<(
            Entry,
            Vec<Entry>,
            std::vec::IntoIter<Option<Arc<DecodedFrame>>>,
        )>,
    > {
        let inner = &self.lookup.inner;
        let Some(first) = inner.floor_entry(&self.stream, version)? else {
            return Ok(None);
        };
        if first.position >= self.lookup.visible || first.first_version > self.last {
            return Ok(None);
        }
        let wanted = self.last.saturating_sub(version).saturating_add(1);
        let limit = usize::try_from(wanted).map_or(ENTRY_BATCH, |w| w.min(ENTRY_BATCH));
        let batch = inner.entries_after(&self.stream, &first, limit)?;
        let reached = batch.partition_point(|e| e.first_version <= self.last);
        let mut asked = Vec::with_capacity(reached.saturating_add(1));
        asked.push(first);
        asked.extend_from_slice(batch.get(..reached).unwrap_or_default());
        let mut cached = inner.cached_frames(&asked, self.lookup.visible).into_iter();
        // The first one is read by the lookup that follows (through the cache).
        cached.next();
        Ok(Some((first, batch, cached)))
    }

    /// Hands every remaining event to `visit` until it breaks; returns how many it saw.
    /// After a break the cursor stands right after the last event handed over, so a later
    /// call goes on from there.
    fn visit(&mut self, mut visit: impl FnMut(EventView<'_>) -> ControlFlow<()>) -> Result<u64> {
        let mut seen = 0u64;
        while let Some((found, from)) = self.next_frame()? {
            let backward = self.backward;
            let mut last = None;
            let upcasters = &self.lookup.upcasters;
            let in_range = |v| self.in_range(v, from);
            // Most reads neither hide events by metadata nor upcast: their per-event step
            // is only the count and the caller's visit.
            let flow = if self.retention.is_none() && upcasters.is_empty() {
                found.frame.visit(in_range, backward, |e| {
                    seen += 1;
                    last = Some(e.version);
                    visit(e)
                })
            } else {
                found.frame.visit(in_range, backward, |e| {
                    if !self.keeps(&e) {
                        return ControlFlow::Continue(());
                    }
                    seen += 1;
                    last = Some(e.version);
                    upcasters.apply(e, &mut visit)
                })
            };
            if flow.is_break() {
                // The rest of this append comes next: look it up afresh.
                self.next = last.and_then(|v| {
                    if backward {
                        v.checked_sub(1)
                    } else {
                        v.checked_add(1)
                    }
                });
                self.scanned = None;
                self.ahead.clear();
                break;
            }
        }
        Ok(seen)
    }
}

/// The events of one stream, in version order (forward or backward). Created by
/// [`Store::read_stream`](crate::Store::read_stream) and
/// [`Store::read_stream_backward`](crate::Store::read_stream_backward).
///
/// It sees the appends that were committed when it was created. Each step looks up one
/// append in the index and reads only that frame: reading a stream never scans the log.
#[derive(Debug)]
pub struct StreamEvents {
    cursor: StreamCursor,
    buffer: VecDeque<RecordedEvent>,
}

impl StreamEvents {
    pub(crate) fn forward(
        lookup: Lookup,
        stream: &str,
        from: u64,
        retention: Option<Retention>,
    ) -> Self {
        Self::new(lookup, stream, from, false, retention)
    }

    pub(crate) fn backward(
        lookup: Lookup,
        stream: &str,
        from: Option<u64>,
        retention: Option<Retention>,
    ) -> Self {
        Self::new(lookup, stream, from.unwrap_or(u64::MAX), true, retention)
    }

    /// Forward from `from` up to version `last` (included).
    pub(crate) fn forward_until(
        lookup: Lookup,
        stream: &str,
        from: u64,
        last: u64,
        retention: Option<Retention>,
    ) -> Self {
        let mut events = Self::new(lookup, stream, from, false, retention);
        events.cursor.last = last;
        events
    }

    fn new(
        lookup: Lookup,
        stream: &str,
        from: u64,
        backward: bool,
        retention: Option<Retention>,
    ) -> Self {
        StreamEvents {
            cursor: StreamCursor::new(lookup, stream, from, backward, retention),
            buffer: VecDeque::new(),
        }
    }

    /// Hands the remaining events to `visit` as borrowed views (no allocation per event)
    /// until it returns [`ControlFlow::Break`]; returns how many it was given. Events
    /// already buffered by [`Iterator::next`] come first; after a break, the reader goes
    /// on (by either means) with the event after the last one handed over.
    ///
    /// # Errors
    /// A damaged frame or an I/O error, after which the reader ends.
    pub fn for_each_view(
        &mut self,
        mut visit: impl FnMut(EventView<'_>) -> ControlFlow<()>,
    ) -> Result<u64> {
        let mut seen = 0;
        while let Some(e) = self.buffer.pop_front() {
            seen += 1;
            if visit(e.view()).is_break() {
                return Ok(seen);
            }
        }
        Ok(seen + self.cursor.visit(visit)?)
    }

    fn fill(&mut self) -> Result<()> {
        while self.buffer.is_empty() {
            let Some((found, from)) = self.cursor.next_frame()? else {
                return Ok(());
            };
            let backward = self.cursor.backward;
            let cursor = &self.cursor;
            let mut push = push_owned(&mut self.buffer);
            let _always_continue = found.frame.visit(
                |v| cursor.in_range(v, from),
                backward,
                |e| {
                    if !cursor.keeps(&e) {
                        return ControlFlow::Continue(());
                    }
                    cursor.lookup.upcasters.apply(e, &mut push)
                },
            );
        }
        Ok(())
    }
}

impl Iterator for StreamEvents {
    type Item = Result<RecordedEvent>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Err(e) = self.fill() {
            self.cursor.next = None;
            self.buffer.clear();
            return Some(Err(e));
        }
        self.buffer.pop_front().map(Ok)
    }
}

/// Every event of every stream in commit order. Created by
/// [`Store::read_all`](crate::Store::read_all); sees the appends committed when it was created.
#[derive(Debug)]
pub struct AllEvents {
    frames: LogFrames,
    buffer: VecDeque<RecordedEvent>,
    /// Ended: by an error, or at the `until` bound.
    failed: bool,
    /// Boxed: a reader is moved around (subscriptions hold one) and this is its bulk.
    retention: Box<AllRetention>,
    /// Ends before the first append committed at or after this time (microseconds).
    until_us: Option<i64>,
    /// Applied to every event handed out.
    upcasters: super::Upcasters,
}

impl AllEvents {
    /// Reads `frames` (which end at `lookup`'s visible end).
    pub(crate) fn new(frames: LogFrames, lookup: Lookup) -> Self {
        AllEvents {
            frames,
            buffer: VecDeque::new(),
            failed: false,
            until_us: None,
            upcasters: lookup.upcasters.clone(),
            retention: Box::new(AllRetention {
                now_us: lookup.inner.now_us(),
                lookup,
                last: rustc_hash::FxHashMap::default(),
            }),
        }
    }

    /// Ends the reader before the first append committed at or after `time` (as
    /// [`Store::read_all_between`] does), wherever it started.
    #[must_use]
    pub fn until(self, time: std::time::SystemTime) -> Self {
        self.until_committed(super::event::timestamp_us(time))
    }

    /// Ends the reader before the first append committed at or after `until_us` (events
    /// of an append already buffered, the rest of the one a resume token starts inside,
    /// are held to the bound too).
    pub(crate) fn until_committed(mut self, until_us: i64) -> Self {
        self.until_us = Some(until_us);
        if self
            .buffer
            .front()
            .and_then(|e| e.committed_at_us)
            .is_some_and(|t| t >= until_us)
        {
            self.buffer.clear();
            self.failed = true;
        }
        self
    }

    /// Whether the events frame with this header and whole-frame bytes is past `until`.
    fn past_until(until_us: Option<i64>, header: &FrameHeader, frame: &[u8]) -> bool {
        let Some(until) = until_us else {
            return false;
        };
        let body = frame.get(format::FRAME_HEADER_LEN..).unwrap_or_default();
        format::decode_commit_time(header, body)
            .ok()
            .flatten()
            .is_some_and(|t| t >= until)
    }

    /// Drops the first `n` events of the append at `position`, if the reader starts there.
    fn skip_in(&mut self, position: Position, n: u32) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let first = match self.next() {
            None => return Ok(()),
            Some(first) => first?,
        };
        // `next` buffered the rest of the first append.
        let skipped = |e: &RecordedEvent| e.position == position && e.append_index < n;
        while self.buffer.front().is_some_and(skipped) {
            self.buffer.pop_front();
        }
        if !skipped(&first) {
            self.buffer.push_front(first);
        }
        Ok(())
    }

    /// Where the next unread append starts: pass it to `read_all` to resume after the
    /// events read so far (valid once the events of the current append are all read).
    pub fn next_position(&self) -> Position {
        Position(self.frames.next_position())
    }

    /// Hands the remaining events to `visit` as borrowed views, reading each frame in place
    /// (no allocation per event or frame), until it returns [`ControlFlow::Break`];
    /// returns how many it was given. Events already buffered by [`Iterator::next`] come
    /// first.
    ///
    /// # Errors
    /// A damaged frame or an I/O error, after which the reader ends.
    pub fn for_each_view(
        &mut self,
        mut visit: impl FnMut(EventView<'_>) -> ControlFlow<()>,
    ) -> Result<u64> {
        let mut seen = 0u64;
        while let Some(e) = self.buffer.pop_front() {
            seen += 1;
            if visit(e.view()).is_break() {
                return Ok(seen);
            }
        }
        if self.failed {
            return Ok(seen);
        }
        let log = Arc::clone(self.frames.log_arc());
        let mut rest = Vec::new();
        let until_us = self.until_us;
        loop {
            let mut broke = false;
            let mut past = false;
            let step = self.frames.next_with(|header, frame| {
                if header.kind != FrameKind::Events {
                    return Ok(ControlFlow::Continue(()));
                }
                if Self::past_until(until_us, header, frame) {
                    past = true;
                    return Ok(ControlFlow::Continue(()));
                }
                let retention = &mut self.retention;
                let upcasters = &self.upcasters;
                let locate = |p| log.locate(p);
                // After a break, the rest of this append is kept for the next call.
                let mut step = |e: EventView<'_>| {
                    if broke {
                        rest.push(e.to_recorded());
                    } else {
                        seen += 1;
                        broke = visit(e).is_break();
                    }
                    ControlFlow::Continue(())
                };
                // Without upcasters (most stores), the step is called directly.
                if upcasters.is_empty() {
                    visit_frame(&locate, retention, header.position, frame, step)
                } else {
                    visit_frame(&locate, retention, header.position, frame, |e| {
                        upcasters.apply(e, &mut step)
                    })
                }
            });
            if past {
                self.failed = true;
                return Ok(seen);
            }
            match step {
                None => return Ok(seen),
                Some(Ok(Ok(_))) if broke => {
                    self.buffer.extend(rest);
                    return Ok(seen);
                }
                Some(Ok(Ok(_))) => {}
                Some(Err(e) | Ok(Err(e))) => {
                    self.failed = true;
                    return Err(e);
                }
            }
        }
    }
}

impl Iterator for AllEvents {
    type Item = Result<RecordedEvent>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(e) = self.buffer.pop_front() {
                return Some(Ok(e));
            }
            if self.failed {
                return None;
            }
            let (header, bytes) = match self.frames.next()? {
                Ok(f) => f,
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            };
            if header.kind != FrameKind::Events {
                continue;
            }
            if Self::past_until(self.until_us, &header, &bytes) {
                self.failed = true;
                return None;
            }
            let log = self.frames.log();
            let upcasters = &self.upcasters;
            let mut push = push_owned(&mut self.buffer);
            if let Err(e) = visit_frame(
                &|p| log.locate(p),
                &mut self.retention,
                header.position,
                &bytes,
                |e| upcasters.apply(e, &mut push),
            ) {
                self.failed = true;
                return Some(Err(e));
            }
        }
    }
}

impl Store {
    /// Reads `stream` forward from version `from` (inclusive). Only committed appends are
    /// seen: under [`Durability::Sync`](crate::Durability::Sync), those on disk; otherwise, those acknowledged.
    /// Reading never waits for the writer.
    ///
    /// The stream's metadata ([`Store::set_stream_metadata`]) in force when the reader is
    /// created decides what it returns: events below `truncate_before`, past `max_count`
    /// or older than `max_age` are passed over (a soft-deleted stream reads as empty).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty stream name; [`Error::StreamDeleted`] for a
    /// hard-deleted stream. Errors while reading come as items of the iterator.
    pub fn read_stream(&self, stream: &str, from: u64) -> Result<StreamEvents> {
        check_stream_name(stream)?;
        let lookup = self.lookup();
        let retention = self.inner.retention(stream, lookup.visible)?;
        Ok(StreamEvents::forward(lookup, stream, from, retention))
    }

    /// Reads `stream` backward from version `from` (inclusive), or from its last event when
    /// `from` is `None` or past it.
    ///
    /// # Errors
    /// As [`Store::read_stream`].
    pub fn read_stream_backward(&self, stream: &str, from: Option<u64>) -> Result<StreamEvents> {
        check_stream_name(stream)?;
        let lookup = self.lookup();
        let retention = self.inner.retention(stream, lookup.visible)?;
        Ok(StreamEvents::backward(lookup, stream, from, retention))
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

    /// Reads every stream's events in commit order, from `from`: the start of the log
    /// ([`Position::START`]), the position of an append (its events included), or a
    /// [`ResumeToken`] (the events after the one that gave it).
    ///
    /// Events that their stream's metadata hides (as for [`Store::read_stream`]) and the
    /// events of hard-deleted streams are passed over. The changes of metadata themselves
    /// are events of the system stream [`METADATA_STREAM`](crate::METADATA_STREAM)
    /// (types [`METADATA_EVENT`](crate::METADATA_EVENT) and
    /// [`TOMBSTONE_EVENT`](crate::TOMBSTONE_EVENT)) and are read like any other; a
    /// consumer that wants only its own events skips streams starting with `$`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `from` is not the start of an append (a position past
    /// the end reads nothing), or is a token that skips more events than its append holds;
    /// I/O errors. Errors while reading come as items of the
    /// iterator.
    pub fn read_all(&self, from: impl Into<ResumeToken>) -> Result<AllEvents> {
        let token: ResumeToken = from.into();
        let from = token.position;
        let visible = self.visible();

        // A segment's start is where a reader that finished the previous segment stands
        // (`AllEvents::next_position`): valid, though no frame starts there.
        if from.0 != 0 && from.0 < visible && !self.inner.log.is_segment_base(from.0) {
            match self.inner.log.read_frame(from.0, visible) {
                Ok((header, bytes)) => {
                    // A token never skips more events than its append holds.
                    let events = format::decode_events_summary(&header, bytes.body())
                        .map_or(0, |(_, _, count)| count);
                    if header.kind == FrameKind::Events && token.skip > events {
                        return Err(Error::InvalidArgument(format!(
                            "resume token {token}: the append at {from} holds {events} event(s)"
                        )));
                    }
                }
                // A frame a scavenge removed: reading goes on at the next one kept.
                Err(Error::Scavenged { .. }) => {}
                Err(Error::Corrupted { .. } | Error::InvalidArgument(_)) => {
                    return Err(Error::InvalidArgument(format!(
                        "position {from} is not the start of an append"
                    )));
                }
                Err(other) => return Err(other),
            }
        }
        let lookup = super::lookup::Lookup {
            inner: Arc::clone(&self.inner) as Arc<dyn super::lookup::FrameLookup>,
            visible,
            upcasters: self.inner.options.upcasters.clone(),
        };
        let mut events = AllEvents::new(self.inner.log.frames(from.0, visible), lookup);
        events.skip_in(from, token.skip)?;
        Ok(events)
    }

    /// The stream's last committed version, `None` if it has no events or is soft deleted
    /// ([`Store::delete_stream`]; every event below its `truncate_before`). Rules that keep
    /// a number or an age of events do not change it. This is the version an
    /// [`ExpectedVersion`](crate::ExpectedVersion) is checked against.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty stream name; [`Error::StreamDeleted`] when
    /// the stream is hard deleted; I/O errors and damage met while looking it up.
    pub fn stream_version(&self, stream: &str) -> Result<Option<u64>> {
        check_stream_name(stream)?;
        let visible = self.visible();
        let rule = self.inner.registry.rule_at(stream, visible);
        if rule.is_some_and(|r| r.tombstoned) {
            return Err(Error::StreamDeleted {
                stream: stream.to_string(),
            });
        }
        let found = self.inner.resolve_visible(stream, u64::MAX, visible)?;
        let last = found.map(|f| f.entry.last_version());
        Ok(rule.map_or(last, |r| r.effective_last(last)))
    }
}
