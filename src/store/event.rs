//! The user-facing model: events, ids, positions, expected versions.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::Error;
pub use crate::expected_version::ExpectedVersion;

/// A position in `$all`: the logical byte offset of an append's frame in the log. All
/// events of one append share it; positions increase in commit order.
///
/// The number is public because applications store it (as a checkpoint, in a read model,
/// in another database) and must get it back: it is stable for the life of the store
/// (rewriting segments keeps every surviving event's position) and comparable. It is not
/// arithmetic: the position of the next append is not this one plus anything a caller can
/// know, and [`Store::read_all`](crate::Store::read_all) refuses a number that is not the
/// start of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position(pub u64);

impl Position {
    /// The start of the log.
    pub const START: Position = Position(0);
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for ExpectedVersion {
    type Err = Error;

    /// Parses `any`, `no-stream`, `exists` or a version number.
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "any" => Ok(ExpectedVersion::Any),
            "no-stream" => Ok(ExpectedVersion::NoStream),
            "exists" => Ok(ExpectedVersion::StreamExists),
            n => n.parse().map(ExpectedVersion::Exact).map_err(|e| {
                let why = match e.kind() {
                    std::num::IntErrorKind::PosOverflow => {
                        format!("a version is at most {}", u64::MAX)
                    }
                    _ => "it must be any, no-stream, exists or a number".to_string(),
                };
                Error::InvalidArgument(format!("expected version {n:?}: {why}"))
            }),
        }
    }
}

/// A place in `$all` to resume reading from: the position of an append and how many of its
/// events come before the place. Every event gives the token right after it
/// ([`RecordedEvent::resume_token`]), so a reader that saves it and resumes from it gets
/// exactly the events that follow, also inside an append of several events.
///
/// Its text form is `POSITION` or `POSITION:SKIP` (e.g. `4096:2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ResumeToken {
    /// The append to resume in (or, with `skip` 0, at).
    pub position: Position,
    /// Events of that append already delivered.
    pub skip: u32,
}

impl ResumeToken {
    /// The start of `$all`.
    pub const START: ResumeToken = ResumeToken {
        position: Position::START,
        skip: 0,
    };

    /// The place at the start of the append at `position`.
    pub fn at(position: Position) -> Self {
        ResumeToken { position, skip: 0 }
    }

    /// The place right after event `append_index` of the append at `position`.
    pub fn after(position: Position, append_index: u32) -> Self {
        ResumeToken {
            position,
            skip: append_index.saturating_add(1),
        }
    }
}

impl From<Position> for ResumeToken {
    fn from(position: Position) -> Self {
        ResumeToken::at(position)
    }
}

impl fmt::Display for ResumeToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.skip == 0 {
            write!(f, "{}", self.position)
        } else {
            write!(f, "{}:{}", self.position, self.skip)
        }
    }
}

impl FromStr for ResumeToken {
    type Err = Error;

    /// Parses `POSITION` or `POSITION:SKIP`.
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || {
            Error::InvalidArgument(format!(
                "a resume token is POSITION or POSITION:SKIP (numbers), not {s:?}"
            ))
        };
        let (p, k) = s.split_once(':').unwrap_or((s, "0"));
        Ok(ResumeToken {
            position: Position(p.parse().map_err(|_| bad())?),
            skip: k.parse().map_err(|_| bad())?,
        })
    }
}

/// A 16-byte event id (a UUID). Generated ids are UUIDv7: time-ordered and random.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventId(pub [u8; 16]);

impl EventId {
    /// A fresh, unique id: a UUIDv7 (RFC 9562) with the Unix time in milliseconds when it
    /// was made, a 12-bit counter that orders ids made in the same millisecond by the same
    /// thread, and 62 random bits from a per-thread generator seeded from the OS's CSPRNG.
    /// The clock is read for every id. The ids of one thread are strictly increasing: when
    /// the clock stands still or steps back, the counter counts on from the last id (and,
    /// exhausted, borrows the next millisecond), so an id's time is never earlier than
    /// the previous id's.
    pub fn new() -> Self {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() * 1000 + u64::from(d.subsec_millis()));
        ID_GENERATOR.with(|g| {
            let mut g = g.borrow_mut();
            if now_ms > g.last_ms {
                g.last_ms = now_ms;
                g.counter = g.next_random() & 0x1FF; // random start, room to count up
            } else {
                g.counter += 1;
                if g.counter > 0xFFF {
                    // Counter exhausted within one millisecond: borrow the next one.
                    g.last_ms += 1;
                    g.counter = 0;
                }
            }
            let rand_b = g.next_random();
            let hi = (g.last_ms << 16) | 0x7000 | g.counter;
            let lo = (rand_b & 0x3FFF_FFFF_FFFF_FFFF) | 0x8000_0000_0000_0000;
            EventId(*uuid::Uuid::from_u64_pair(hi, lo).as_bytes())
        })
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

/// Per-thread state of [`EventId::new`].
struct IdGenerator {
    last_ms: u64,
    counter: u64,
    random: crate::rng::SplitMix64,
}

impl IdGenerator {
    fn seeded() -> Self {
        let seed = uuid::Uuid::new_v4().as_u64_pair();
        IdGenerator {
            last_ms: 0,
            counter: 0,
            random: crate::rng::SplitMix64::new(seed.0 ^ seed.1.rotate_left(32)),
        }
    }

    fn next_random(&mut self) -> u64 {
        self.random.next_u64()
    }
}

thread_local! {
    static ID_GENERATOR: std::cell::RefCell<IdGenerator> = std::cell::RefCell::new(IdGenerator::seeded());
}

impl Default for EventId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        uuid::Uuid::from_bytes(self.0).hyphenated().fmt(f)
    }
}

impl FromStr for EventId {
    type Err = Error;

    /// Parses a UUID in any of its usual text forms.
    fn from_str(s: &str) -> Result<Self, Error> {
        uuid::Uuid::parse_str(s)
            .map(|u| EventId(*u.as_bytes()))
            .map_err(|e| Error::InvalidArgument(format!("event id {s:?} is not a UUID: {e}")))
    }
}

/// An event to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// Unique id; retrying an append with the same ids is idempotent.
    pub id: EventId,
    /// Event type name, e.g. `"Deposited"` (a `&'static str` costs no allocation).
    pub event_type: Cow<'static, str>,
    /// Payload.
    pub data: Vec<u8>,
    /// Metadata (opaque to the store).
    pub metadata: Vec<u8>,
    /// When the event happened; `None` takes the time of the append.
    pub timestamp: Option<SystemTime>,
    /// Version of the data's schema, for upcasters (0: none).
    pub schema_version: u32,
}

impl NewEvent {
    /// An event with a fresh id, no metadata and the append's time.
    pub fn new(event_type: impl Into<Cow<'static, str>>, data: impl AsRef<[u8]>) -> Self {
        NewEvent {
            id: EventId::new(),
            event_type: event_type.into(),
            data: data.as_ref().to_vec(),
            metadata: Vec::new(),
            timestamp: None,
            schema_version: 0,
        }
    }

    /// Sets the id (to make retries idempotent).
    pub fn with_id(mut self, id: EventId) -> Self {
        self.id = id;
        self
    }

    /// Sets the metadata.
    pub fn with_metadata(mut self, metadata: impl AsRef<[u8]>) -> Self {
        self.metadata = metadata.as_ref().to_vec();
        self
    }

    /// Sets the timestamp.
    pub fn with_timestamp(mut self, timestamp: SystemTime) -> Self {
        self.timestamp = Some(timestamp);
        self
    }

    /// Sets the schema version of the data (see [`Upcasters`](crate::Upcasters)).
    pub fn with_schema_version(mut self, version: u32) -> Self {
        self.schema_version = version;
        self
    }
}

/// An event to append that borrows its bytes (see [`Store::append_refs`](crate::Store::append_refs)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventRef<'a> {
    /// Unique id; retrying an append with the same ids is idempotent.
    pub id: EventId,
    /// Event type name.
    pub event_type: &'a str,
    /// Payload.
    pub data: &'a [u8],
    /// Metadata.
    pub metadata: &'a [u8],
    /// When the event happened; `None` takes the time of the append.
    pub timestamp: Option<SystemTime>,
    /// Version of the data's schema (0: none).
    pub schema_version: u32,
}

impl<'a> EventRef<'a> {
    /// An event with a fresh id, no metadata and the append's time.
    pub fn new(event_type: &'a str, data: &'a [u8]) -> Self {
        EventRef {
            id: EventId::new(),
            event_type,
            data,
            metadata: &[],
            timestamp: None,
            schema_version: 0,
        }
    }
}

impl NewEvent {
    /// A borrowed view of this event.
    pub fn as_ref(&self) -> EventRef<'_> {
        EventRef {
            id: self.id,
            event_type: &self.event_type,
            data: &self.data,
            metadata: &self.metadata,
            timestamp: self.timestamp,
            schema_version: self.schema_version,
        }
    }
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    /// The stream it belongs to.
    pub stream: Arc<str>,
    /// 0-based, gap-free version within the stream.
    pub version: u64,
    /// Position of the append (frame) that wrote it.
    pub position: Position,
    /// Its place within that append (0 for the first event): with `position`, where a
    /// reader resumes after it ([`RecordedEvent::resume_token`]).
    pub append_index: u32,
    /// Its id.
    pub id: EventId,
    /// Its type name.
    pub event_type: String,
    /// When the event happened, as the writer said (or the append's time), in
    /// microseconds since the Unix epoch. The store does not check it: see `committed_at_us`.
    pub timestamp_us: i64,
    /// When the store committed the append, in microseconds since the Unix epoch: never
    /// earlier than an earlier append's within the store. `None` for events written by
    /// format 1, which did not record it.
    pub committed_at_us: Option<i64>,
    /// Version of the data's schema as written (0: none), or as an upcaster left it.
    pub schema_version: u32,
    /// Metadata.
    pub metadata: Vec<u8>,
    /// Payload.
    pub data: Vec<u8>,
}

impl RecordedEvent {
    /// Where a reader of `$all` resumes right after this event (see [`ResumeToken`]).
    pub fn resume_token(&self) -> ResumeToken {
        ResumeToken::after(self.position, self.append_index)
    }

    /// The timestamp as a `SystemTime`.
    pub fn timestamp(&self) -> SystemTime {
        system_time(self.timestamp_us)
    }

    /// The commit time as a `SystemTime` (`None` for events of format 1).
    pub fn committed_at(&self) -> Option<SystemTime> {
        self.committed_at_us.map(system_time)
    }

    /// The event as a borrowed view.
    pub fn view(&self) -> EventView<'_> {
        EventView {
            stream: &self.stream,
            version: self.version,
            position: self.position,
            append_index: self.append_index,
            id: self.id,
            event_type: &self.event_type,
            timestamp_us: self.timestamp_us,
            committed_at_us: self.committed_at_us,
            schema_version: self.schema_version,
            metadata: &self.metadata,
            data: &self.data,
        }
    }
}

/// An event as stored, borrowed from the store's buffers: what
/// [`Store::read_stream_with`](crate::Store::read_stream_with) and
/// [`Store::read_all_with`](crate::Store::read_all_with) hand to their callback, so that
/// reading allocates nothing per event. [`EventView::to_recorded`] makes an owned copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventView<'a> {
    /// The stream it belongs to.
    pub stream: &'a str,
    /// 0-based, gap-free version within the stream.
    pub version: u64,
    /// Position of the append (frame) that wrote it.
    pub position: Position,
    /// Its place within that append (0 for the first event).
    pub append_index: u32,
    /// Its id.
    pub id: EventId,
    /// Its type name.
    pub event_type: &'a str,
    /// When the event happened, as the writer said (or the append's time), in
    /// microseconds since the Unix epoch. The store does not check it: see `committed_at_us`.
    pub timestamp_us: i64,
    /// When the store committed the append, in microseconds since the Unix epoch: never
    /// earlier than an earlier append's within the store. `None` for events written by
    /// format 1, which did not record it.
    pub committed_at_us: Option<i64>,
    /// Version of the data's schema as written (0: none).
    pub schema_version: u32,
    /// Metadata.
    pub metadata: &'a [u8],
    /// Payload.
    pub data: &'a [u8],
}

impl EventView<'_> {
    /// Where a reader of `$all` resumes right after this event (see [`ResumeToken`]).
    pub fn resume_token(&self) -> ResumeToken {
        ResumeToken::after(self.position, self.append_index)
    }

    /// The timestamp as a `SystemTime`.
    pub fn timestamp(&self) -> SystemTime {
        system_time(self.timestamp_us)
    }

    /// The commit time as a `SystemTime` (`None` for events of format 1).
    pub fn committed_at(&self) -> Option<SystemTime> {
        self.committed_at_us.map(system_time)
    }

    /// An owned copy.
    pub fn to_recorded(self) -> RecordedEvent {
        self.to_recorded_in(Arc::from(self.stream))
    }

    /// An owned copy naming its stream by `stream` (shared by the events of one append).
    pub(crate) fn to_recorded_in(self, stream: Arc<str>) -> RecordedEvent {
        RecordedEvent {
            stream,
            version: self.version,
            position: self.position,
            append_index: self.append_index,
            id: self.id,
            event_type: self.event_type.to_string(),
            timestamp_us: self.timestamp_us,
            committed_at_us: self.committed_at_us,
            schema_version: self.schema_version,
            metadata: self.metadata.to_vec(),
            data: self.data.to_vec(),
        }
    }
}

pub(crate) fn system_time(timestamp_us: i64) -> SystemTime {
    let d = std::time::Duration::from_micros(timestamp_us.unsigned_abs());
    if timestamp_us >= 0 {
        UNIX_EPOCH.checked_add(d).unwrap_or(UNIX_EPOCH)
    } else {
        UNIX_EPOCH.checked_sub(d).unwrap_or(UNIX_EPOCH)
    }
}

/// Microseconds since the Unix epoch (negative before it), saturating.
pub(crate) fn timestamp_us(t: SystemTime) -> i64 {
    let micros = |d: std::time::Duration| {
        i64::try_from(d.as_secs())
            .unwrap_or(i64::MAX)
            .saturating_mul(1_000_000)
            .saturating_add(i64::from(d.subsec_micros()))
    };
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => micros(d),
        Err(e) => micros(e.duration()).saturating_neg(),
    }
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct AppendResult {
    /// Version of the first appended event.
    pub first_version: u64,
    /// Version of the last appended event.
    pub last_version: u64,
    /// Position of the append's frame.
    pub position: Position,
    /// `true` when this call was a retry of an append already stored: nothing new was
    /// written and the original result is returned.
    pub deduplicated: bool,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn expected_version_parses_its_display() {
        for e in [
            ExpectedVersion::Any,
            ExpectedVersion::NoStream,
            ExpectedVersion::StreamExists,
            ExpectedVersion::Exact(42),
        ] {
            assert_eq!(e.to_string().parse::<ExpectedVersion>().unwrap(), e);
        }
        assert!("latest".parse::<ExpectedVersion>().is_err());
    }

    #[test]
    fn event_ids_are_unique_ordered_uuid_v7s() {
        let ids: Vec<EventId> = (0..100_000).map(|_| EventId::new()).collect();
        for w in ids.windows(2) {
            assert!(w[0] < w[1], "ids of one thread are strictly increasing");
        }
        let u = uuid::Uuid::from_bytes(ids[0].0);
        assert_eq!(u.get_version_num(), 7);
        assert_eq!(u.get_variant(), uuid::Variant::RFC4122);
        let (secs, _) = u.get_timestamp().unwrap().to_unix();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(now.abs_diff(secs) < 60);
        let other: EventId = std::thread::spawn(EventId::new).join().unwrap();
        assert!(!ids.contains(&other));
    }

    fn unix_ms(id: EventId) -> u64 {
        let (secs, nanos) = uuid::Uuid::from_bytes(id.0)
            .get_timestamp()
            .unwrap()
            .to_unix();
        secs * 1000 + u64::from(nanos / 1_000_000)
    }

    #[test]
    fn an_event_id_carries_the_time_it_was_made() {
        let now_ms = || {
            let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
            d.as_secs() * 1000 + u64::from(d.subsec_millis())
        };
        // A quiet thread: each id is made well after the one before it.
        std::thread::spawn(move || {
            let mut prev = EventId::new();
            for _ in 0..3 {
                std::thread::sleep(std::time::Duration::from_millis(15));
                let before = now_ms();
                let id = EventId::new();
                let after = now_ms();
                let ms = unix_ms(id);
                assert!(
                    (before..=after).contains(&ms),
                    "id made at {before}..={after} ms carries {ms} ms"
                );
                assert!(id > prev);
                prev = id;
            }
        })
        .join()
        .unwrap();
    }

    #[test]
    fn event_ids_round_trip_as_uuid_text() {
        let a = EventId::new();
        assert_eq!(a.to_string().parse::<EventId>().unwrap(), a);
        assert!("not-a-uuid".parse::<EventId>().is_err());
    }

    #[test]
    fn timestamps_round_trip_through_micros() {
        let t = UNIX_EPOCH + std::time::Duration::from_micros(1_700_000_000_123_456);
        let e = RecordedEvent {
            stream: Arc::from("s"),
            version: 0,
            position: Position(0),
            append_index: 0,
            id: EventId([0; 16]),
            event_type: "T".into(),
            timestamp_us: timestamp_us(t),
            committed_at_us: Some(timestamp_us(t) + 1),
            schema_version: 0,
            metadata: vec![],
            data: vec![],
        };
        assert_eq!(e.timestamp(), t);
        assert_eq!(
            e.committed_at(),
            Some(t + std::time::Duration::from_micros(1))
        );
    }
}
