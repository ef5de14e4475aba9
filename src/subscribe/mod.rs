//! The `subscribe` layer: catch-up then live subscriptions to `$all` and to one stream,
//! server-side filters, and named consumer checkpoints. It sits beside the store and reads
//! through its readers; the writer's commit wakes it (no polling). A subscriber reads the
//! log from where it is, so the switch from catch-up to live cannot lose or repeat an
//! event; once live, filtered `$all` subscribers are served by one shared reader per
//! store (`hub`), which checks each event once per distinct filter and hands matches out
//! through a queue of at most [`HANDOFF_CAPACITY`] deliveries per subscriber: one that
//! falls further behind reads the log by itself again, so memory stays bounded.
//!
//! What a subscriber sees is what readers see: under [`Durability::Sync`](crate::Durability)
//! only durable appends (never one a crash could take back); under `Periodic` and
//! `Buffered`, acknowledged appends, which a machine crash (not a process crash) may take
//! back.

mod filter;
mod hub;
#[cfg(feature = "tokio")]
mod stream;

pub use crate::store::{CHECKPOINTS_DIR, MAX_CHECKPOINT_NAME_BYTES};
pub use filter::Filter;
pub use hub::HANDOFF_CAPACITY;
#[cfg(feature = "tokio")]
pub use stream::SubscriptionStream;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hub::{Hub, Joined, Slot, Taken};

use crate::error::Result;
use crate::store::{AllEvents, Position, RecordedEvent, ResumeToken, Store};

/// How long a blocked subscription sleeps between checks that its store is still open
/// (a commit wakes it at once).
const WAIT_SLICE: Duration = Duration::from_millis(200);

/// Events a stream subscription reads ahead at most (bounded memory).
const STREAM_BATCH: usize = 256;

/// Default for [`SubscribeAll::checkpoint_every`].
pub const DEFAULT_CHECKPOINT_EVERY: u64 = 1024;

/// What a subscription hands over.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Delivery {
    /// The next event. Its [`RecordedEvent::resume_token`] resumes right after it.
    Event(RecordedEvent),
    /// Progress while a filter skips events: everything before this token was scanned.
    /// Saving it lets a consumer of rare events resume without rescanning.
    Checkpoint(ResumeToken),
    /// The subscription has delivered everything committed when it caught up; what follows
    /// is live.
    CaughtUp,
}

/// Where a `$all` subscription starts, and what it delivers.
#[derive(Debug, Clone)]
pub struct SubscribeAll {
    from: AllFrom,
    filter: Option<Filter>,
    checkpoint_every: u64,
}

#[derive(Debug, Clone, Copy)]
enum AllFrom {
    Token(ResumeToken),
    End,
}

impl SubscribeAll {
    /// From the first event of the log.
    pub fn from_start() -> Self {
        SubscribeAll::from(ResumeToken::START)
    }

    /// From the events committed after the subscription starts (live only).
    pub fn from_end() -> Self {
        SubscribeAll {
            from: AllFrom::End,
            filter: None,
            checkpoint_every: DEFAULT_CHECKPOINT_EVERY,
        }
    }

    /// From a resume token (an event's, or a checkpoint's) or the position of an append.
    pub fn from(token: impl Into<ResumeToken>) -> Self {
        SubscribeAll {
            from: AllFrom::Token(token.into()),
            filter: None,
            checkpoint_every: DEFAULT_CHECKPOINT_EVERY,
        }
    }

    /// Delivers only the events `filter` passes.
    pub fn filter(mut self, filter: Filter) -> Self {
        self.filter = Some(filter);
        self
    }

    /// With a filter: a [`Delivery::Checkpoint`] after at most this many scanned events
    /// that it skipped (at least 1; default [`DEFAULT_CHECKPOINT_EVERY`]). One also comes
    /// when the subscription catches up.
    pub fn checkpoint_every(mut self, events: u64) -> Self {
        self.checkpoint_every = events.max(1);
        self
    }
}

impl From<ResumeToken> for SubscribeAll {
    fn from(token: ResumeToken) -> Self {
        SubscribeAll::from(token)
    }
}

/// Where a stream subscription starts.
#[derive(Debug, Clone)]
pub struct SubscribeStream {
    stream: String,
    from: Option<u64>,
}

impl SubscribeStream {
    /// `stream` from its first event.
    pub fn new(stream: impl Into<String>) -> Self {
        SubscribeStream {
            stream: stream.into(),
            from: Some(0),
        }
    }

    /// From version `version` (inclusive): pass the last handled version + 1 to resume.
    pub fn from_version(mut self, version: u64) -> Self {
        self.from = Some(version);
        self
    }

    /// From the events appended after the subscription starts.
    pub fn from_end(mut self) -> Self {
        self.from = None;
        self
    }
}

/// A catch-up then live subscription: an iterator that blocks until the next delivery,
/// woken by the writer's commit. It ends (returns `None`) when the store is closed, or
/// after an error.
///
/// `next` blocks; [`Subscription::next_timeout`] waits at most a given time (for callers
/// that must notice a shutdown of their own).
#[derive(Debug)]
pub struct Subscription {
    store: Store,
    source: Source,
    pending: VecDeque<Delivery>,
    caught_up: bool,
    failed: bool,
}

/// A filtered `$all` subscription's place in its store's hub.
#[derive(Debug)]
struct HubLink {
    hub: Arc<Hub>,
    id: u64,
    slot: Arc<Slot>,
    /// It joined while the hub was ahead: it reads the log by itself up to here first.
    backfill_until: Option<u64>,
}

// One per subscription, made once and never moved in bulk: boxing the `$all` reader
// would only add an indirection to every read.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Source {
    All {
        /// Everything before this was scanned.
        next: ResumeToken,
        reader: Option<AllEvents>,
        filter: Option<Filter>,
        checkpoint_every: u64,
        skipped: u64,
        /// While live with a filter: the store's shared reader serves it.
        link: Option<Box<HubLink>>,
    },
    Stream {
        name: String,
        next_version: u64,
    },
}

impl Store {
    /// Subscribes to `$all`: the events from `options`' start, then live ones as they
    /// commit, in commit order, filtered. See [`Subscription`].
    ///
    /// ```
    /// use streamlog::{Delivery, ExpectedVersion, Filter, NewEvent, Store, SubscribeAll};
    ///
    /// # fn main() -> streamlog::Result<()> {
    /// # let dir = tempfile::tempdir().map_err(|e| streamlog::Error::InvalidArgument(e.to_string()))?;
    /// let store = Store::open(dir.path())?;
    /// store.append("order-1", ExpectedVersion::Any, [NewEvent::new("OrderPlaced", b"{}")])?;
    /// let mut sub = store.subscribe_all(SubscribeAll::from_start().filter(Filter::event_type_prefix("Order")))?;
    /// let mut checkpoint = streamlog::ResumeToken::START;
    /// while let Some(item) = sub.next() {
    ///     match item? {
    ///         Delivery::Event(e) => checkpoint = e.resume_token(), // project(&e)
    ///         Delivery::Checkpoint(p) => checkpoint = p,
    ///         Delivery::CaughtUp => break, // a real processor would go on, live
    ///         _ => {}
    ///     }
    /// }
    /// assert_ne!(checkpoint, streamlog::ResumeToken::START);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) when the token is not in
    /// the log; I/O errors reading its first append.
    pub fn subscribe_all(&self, options: SubscribeAll) -> Result<Subscription> {
        let next = match options.from {
            AllFrom::Token(t) => {
                // Checks that the token names an append, now rather than at the first read.
                drop(self.read_all(t)?);
                t
            }
            AllFrom::End => ResumeToken::at(Position(self.visible())),
        };
        Ok(Subscription {
            store: self.clone(),
            source: Source::All {
                next,
                reader: None,
                filter: options.filter,
                checkpoint_every: options.checkpoint_every,
                skipped: 0,
                link: None,
            },
            pending: VecDeque::new(),
            caught_up: false,
            failed: false,
        })
    }

    /// Subscribes to one stream: its events from `options`' start, then live ones as they
    /// commit. See [`Subscription`].
    ///
    /// # Errors
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for an empty stream name;
    /// I/O errors looking up its version.
    pub fn subscribe_stream(&self, options: SubscribeStream) -> Result<Subscription> {
        let next_version = match options.from {
            Some(v) => {
                // Checks the name.
                drop(self.read_stream(&options.stream, v)?);
                v
            }
            None => self
                .stream_version(&options.stream)?
                .map_or(0, |v| v.saturating_add(1)),
        };
        Ok(Subscription {
            store: self.clone(),
            source: Source::Stream {
                name: options.stream,
                next_version,
            },
            pending: VecDeque::new(),
            caught_up: false,
            failed: false,
        })
    }
}

impl Subscription {
    /// The next delivery, waiting at most `timeout` for one: `Ok(None)` when none came in
    /// time (or the store was closed).
    ///
    /// # Errors
    /// A damaged frame or an I/O error while reading; the subscription ends after it.
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Option<Delivery>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(d) = self.pending.pop_front() {
                return Ok(Some(d));
            }
            if self.failed {
                return Ok(None);
            }
            if let Some(slot) = self.served_by_hub() {
                let now = Instant::now();
                if self.store.is_closed() || now >= deadline {
                    return Ok(None);
                }
                let slice = deadline.saturating_duration_since(now).min(WAIT_SLICE);
                match slot.take(slice) {
                    Taken::Delivery(d) => self.took_from_hub(d),
                    Taken::Detached(resume) => self.leave_hub(Some(resume)),
                    Taken::Empty => {}
                }
                continue;
            }
            let waiting_at = match self.fill() {
                Ok(at) => at,
                Err(e) => {
                    self.failed = true;
                    return Err(e);
                }
            };
            let Some(at) = waiting_at else { continue };
            if !self.caught_up {
                self.caught_up = true;
                if let Source::All {
                    next,
                    filter: Some(_),
                    skipped,
                    ..
                } = &mut self.source
                {
                    *skipped = 0;
                    self.pending.push_back(Delivery::Checkpoint(*next));
                }
                self.pending.push_back(Delivery::CaughtUp);
                continue;
            }
            if self.join_hub() {
                continue;
            }
            let now = Instant::now();
            if self.store.is_closed() || now >= deadline {
                return Ok(None);
            }
            let slice = deadline.saturating_duration_since(now).min(WAIT_SLICE);
            self.store.wait_visible_beyond(at, slice);
        }
    }

    /// The hand-off to take deliveries from, when the hub serves this subscription (and it
    /// has read by itself what it had to first).
    fn served_by_hub(&self) -> Option<Arc<Slot>> {
        match &self.source {
            Source::All {
                link: Some(link), ..
            } if link.backfill_until.is_none() => Some(Arc::clone(&link.slot)),
            _ => None,
        }
    }

    /// A delivery from the hub: it moves the subscription on as one read by itself would.
    fn took_from_hub(&mut self, d: Delivery) {
        if let Source::All { next, skipped, .. } = &mut self.source {
            match &d {
                Delivery::Event(e) => *next = e.resume_token(),
                Delivery::Checkpoint(t) => *next = *t,
                Delivery::CaughtUp => {}
            }
            *skipped = 0;
        }
        self.pending.push_back(d);
    }

    /// Leaves the hub; with `resume` (it was detached), reads the log by itself from
    /// there (everything before it was delivered).
    fn leave_hub(&mut self, resume: Option<ResumeToken>) {
        if let Source::All {
            next,
            reader,
            skipped,
            link,
            ..
        } = &mut self.source
            && let Some(l) = link.take()
        {
            l.hub.leave(l.id);
            if let Some(t) = resume {
                *next = t;
                *reader = None;
                *skipped = 0;
            }
        }
    }

    /// A caught-up filtered `$all` subscription with nothing new to read joins its store's
    /// hub (see `hub`'s module docs); `true` when it did.
    fn join_hub(&mut self) -> bool {
        let Source::All {
            next,
            reader: None,
            filter: Some(filter),
            checkpoint_every,
            skipped,
            link: link @ None,
        } = &mut self.source
        else {
            return false;
        };
        if !self.caught_up || next.skip != 0 {
            return false;
        }
        let hub = Hub::of(&self.store);
        let Some((id, slot, joined)) = hub.join(
            &self.store,
            next.position.0,
            filter,
            *checkpoint_every,
            *skipped,
        ) else {
            return false;
        };
        *link = Some(Box::new(HubLink {
            hub,
            id,
            slot,
            backfill_until: match joined {
                Joined::Now => None,
                Joined::After(p) => Some(p),
            },
        }));
        true
    }

    /// Reads what is there into `pending`; returns `Some(position)` when it found nothing
    /// new: the visible end it would wait beyond.
    fn fill(&mut self) -> Result<Option<u64>> {
        match &mut self.source {
            Source::All {
                next,
                reader,
                filter,
                checkpoint_every,
                skipped,
                link,
            } => {
                // Joined while the hub was ahead: up to where the hub's deliveries start,
                // it reads by itself.
                let until = link.as_ref().and_then(|l| l.backfill_until);
                if let (Some(l), Some(u)) = (link.as_mut(), until)
                    && next.position.0 >= u
                {
                    l.backfill_until = None;
                    *reader = None;
                    return Ok(None);
                }
                let r = match reader {
                    Some(r) => r,
                    None => {
                        let visible = self.store.visible();
                        if next.position.0 >= visible {
                            return Ok(Some(visible));
                        }
                        reader.insert(self.store.read_all(*next)?)
                    }
                };
                let pending = &mut self.pending;
                let every = *checkpoint_every;
                let mut reached = false;
                r.for_each_view(|v| {
                    if until.is_some_and(|u| v.position.0 >= u) {
                        // The hub delivers this one.
                        reached = true;
                        return std::ops::ControlFlow::Break(());
                    }
                    *next = v.resume_token();
                    match filter {
                        Some(f) if !f.matches_event(&v) => {
                            *skipped += 1;
                            if *skipped >= every {
                                *skipped = 0;
                                pending.push_back(Delivery::Checkpoint(*next));
                                return std::ops::ControlFlow::Break(());
                            }
                            std::ops::ControlFlow::Continue(())
                        }
                        _ => {
                            *skipped = 0;
                            pending.push_back(Delivery::Event(v.to_recorded()));
                            std::ops::ControlFlow::Break(())
                        }
                    }
                })?;
                if let (true, Some(u), Some(l)) = (reached, until, link.as_mut()) {
                    *next = ResumeToken::at(Position(u));
                    l.backfill_until = None;
                    *reader = None;
                } else if pending.is_empty() {
                    // The reader reached the end it was made with: go on from the next
                    // append with a new one.
                    *next = ResumeToken::at(r.next_position());
                    *reader = None;
                }
                Ok(None)
            }
            Source::Stream { name, next_version } => {
                let visible = self.store.visible();
                let events = self.store.read_stream(name, *next_version)?;
                for e in events.take(STREAM_BATCH) {
                    let e = e?;
                    *next_version = e.version.saturating_add(1);
                    self.pending.push_back(Delivery::Event(e));
                }
                Ok(self.pending.is_empty().then_some(visible))
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.leave_hub(None);
    }
}

impl Iterator for Subscription {
    type Item = Result<Delivery>;

    /// Blocks until the next delivery; `None` once the store is closed (or after an error).
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.next_timeout(WAIT_SLICE) {
                Ok(Some(d)) => return Some(Ok(d)),
                Ok(None) if self.failed || self.store.is_closed() => return None,
                Ok(None) => {}
                Err(e) => return Some(Err(e)),
            }
        }
    }
}
