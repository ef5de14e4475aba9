//! Stream metadata and deletes as ordinary events: the public [`StreamMetadata`], its
//! KurrentDB-style JSON, the records of the system stream [`METADATA_STREAM`], and the
//! in-memory registry every read path consults (stream → its metadata records).
//!
//! Every change (metadata, soft delete, tombstone) is one event of the one system stream
//! `$streams-metadata`, whose data names the stream it is about. The store reads that
//! stream completely when it opens and keeps the result here; the writer adds each new
//! record under its lock, a follower as it indexes the writer's frames. A record carries
//! the position of its frame, so a reader applies only the records below the end it sees:
//! never a change that a crash could still take back under `Sync`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::RwLock;
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// The system stream holding every stream's metadata changes and tombstones.
pub const METADATA_STREAM: &str = "$streams-metadata";
/// Event type of a metadata change (soft deletes included) in [`METADATA_STREAM`].
pub const METADATA_EVENT: &str = "$metadata";
/// Event type of a hard delete in [`METADATA_STREAM`].
pub const TOMBSTONE_EVENT: &str = "$tombstone";
/// Event type of an erasure record in [`METADATA_STREAM`]: the stream, named only by its
/// index keys (never by its name, which the erasure removes from every file), is hard
/// deleted for good (see [`Store::erase_stream`](crate::Store::erase_stream)).
pub const ERASED_EVENT: &str = "$erased";

/// The JSON keys of the metadata the store enforces (the rest is the user's).
const MAX_COUNT_KEY: &str = "$maxCount";
const MAX_AGE_KEY: &str = "$maxAge";
const TRUNCATE_BEFORE_KEY: &str = "$tb";

/// The largest value of a count, age (seconds) or version in metadata: KurrentDB's signed
/// 64-bit range, so that its clients read back what they wrote.
const MAX_VALUE: u64 = i64::MAX as u64;

/// The metadata of a stream: its retention rules and free user metadata, and (reported by
/// [`Store::stream_metadata`](crate::Store::stream_metadata) only) its deleted state.
///
/// Reads honour the rules at once: an event past `max_count` (only the newest `max_count`
/// are kept), older than `max_age`, or below version `truncate_before` is never returned
/// by a stream read, `$all`, a subscription or an aggregate load. Nothing is removed from
/// disk yet; lifting a rule makes the events readable again.
///
/// Build one with [`StreamMetadata::new`] and the `with_` methods:
///
/// ```
/// use std::time::Duration;
/// use streamlog::StreamMetadata;
///
/// let m = StreamMetadata::new()
///     .with_max_count(100)
///     .with_max_age(Duration::from_secs(3600))
///     .with_custom(br#"{"owner":"billing"}"#.to_vec());
/// assert_eq!(
///     m.to_json(),
///     br#"{"$maxCount":100,"$maxAge":3600,"owner":"billing"}"#.to_vec()
/// );
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamMetadata {
    /// Keep only the newest this many events (at least 1).
    pub max_count: Option<u64>,
    /// Hide events older than this (whole seconds, at least one), measured from the
    /// event's commit time (for events written by format 1, which have none, from its
    /// timestamp).
    pub max_age: Option<Duration>,
    /// Hide the events below this version. A soft delete sets it to the stream's last
    /// version + 1.
    pub truncate_before: Option<u64>,
    /// Free user metadata: the bytes of a JSON object, whose keys are stored beside the
    /// store's own (`$maxCount`, `$maxAge`, `$tb`, which it must not contain).
    pub custom: Option<Vec<u8>>,
    /// Reported: the version of the stream's metadata (0 for its first change), `None`
    /// when it never had any. Pass it as the expected version of the next change.
    /// Ignored by [`Store::set_stream_metadata`](crate::Store::set_stream_metadata).
    pub metadata_version: Option<u64>,
    /// Reported: the stream is soft deleted (it has events, all below `truncate_before`)
    /// and reads as empty until its next append. Ignored when set.
    pub deleted: bool,
    /// Reported: the stream is hard deleted. Ignored when set.
    pub tombstoned: bool,
}

impl StreamMetadata {
    /// No rules, no user metadata.
    pub fn new() -> Self {
        StreamMetadata::default()
    }

    /// Keeps only the newest `n` events.
    pub fn with_max_count(mut self, n: u64) -> Self {
        self.max_count = Some(n);
        self
    }

    /// Hides events older than `age`.
    pub fn with_max_age(mut self, age: Duration) -> Self {
        self.max_age = Some(age);
        self
    }

    /// Hides the events below `version`.
    pub fn with_truncate_before(mut self, version: u64) -> Self {
        self.truncate_before = Some(version);
        self
    }

    /// Sets the user metadata (the bytes of a JSON object).
    pub fn with_custom(mut self, json: impl Into<Vec<u8>>) -> Self {
        self.custom = Some(json.into());
        self
    }

    /// The metadata as KurrentDB stores it: one JSON object with `$maxCount`, `$maxAge`
    /// (seconds) and `$tb` when set, then the user's keys in their order. The reported
    /// fields (version, deleted state) are not part of it.
    pub fn to_json(&self) -> Vec<u8> {
        Value::Object(self.json_object()).to_string().into_bytes()
    }

    /// Parses KurrentDB-style metadata JSON (as [`StreamMetadata::to_json`] writes it):
    /// `$maxCount`, `$maxAge` and `$tb` become the rules, every other key is kept as user
    /// metadata.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the bytes are not a JSON object, or a rule is not a
    /// number in its range (see [`StreamMetadata::check`]).
    pub fn from_json(json: &[u8]) -> Result<StreamMetadata> {
        let value: Value = serde_json::from_slice(json)
            .map_err(|e| Error::InvalidArgument(format!("stream metadata is not JSON: {e}")))?;
        let Value::Object(mut map) = value else {
            return Err(Error::InvalidArgument(
                "stream metadata must be a JSON object".into(),
            ));
        };
        let mut take = |key: &str| -> Result<Option<u64>> {
            match map.shift_remove(key) {
                None | Some(Value::Null) => Ok(None),
                // The range of each value is checked below (`check`); here only that
                // it is a whole number at all.
                Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "{key} must be a whole number (at most {MAX_VALUE}), not {v}"
                    ))
                }),
            }
        };
        let max_count = take(MAX_COUNT_KEY)?;
        let max_age = take(MAX_AGE_KEY)?.map(Duration::from_secs);
        let truncate_before = take(TRUNCATE_BEFORE_KEY)?;
        let custom = (!map.is_empty()).then(|| Value::Object(map).to_string().into_bytes());
        let m = StreamMetadata {
            max_count,
            max_age,
            truncate_before,
            custom,
            ..StreamMetadata::default()
        };
        m.check()?;
        Ok(m)
    }

    /// Checks the values a change may store.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `max_count` is 0, `max_age` is under a second or
    /// not whole seconds, a value is beyond 2^63 - 1, or `custom` is not a JSON object or
    /// holds one of the store's keys.
    pub fn check(&self) -> Result<()> {
        let bad = |why: String| Err(Error::InvalidArgument(why));
        if let Some(n) = self.max_count
            && !(1..=MAX_VALUE).contains(&n)
        {
            return bad(format!(
                "max_count must be from 1 to {MAX_VALUE}, not {n} (to hide every event, \
                 delete the stream)"
            ));
        }
        if let Some(age) = self.max_age
            && (age.subsec_nanos() != 0 || !(1..=MAX_VALUE).contains(&age.as_secs()))
        {
            return bad(format!(
                "max_age must be whole seconds from 1 to {MAX_VALUE}, not {age:?}"
            ));
        }
        if let Some(tb) = self.truncate_before
            && tb > MAX_VALUE
        {
            return bad(format!(
                "truncate_before must be at most {MAX_VALUE}, not {tb}"
            ));
        }
        self.custom_object().map(|_| ())
    }

    /// The user metadata as a JSON object (empty without any).
    fn custom_object(&self) -> Result<Map<String, Value>> {
        let Some(bytes) = &self.custom else {
            return Ok(Map::new());
        };
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| Error::InvalidArgument(format!("user metadata is not JSON: {e}")))?;
        let Value::Object(map) = value else {
            return Err(Error::InvalidArgument(
                "user metadata must be a JSON object".into(),
            ));
        };
        if let Some(k) = map.keys().find(|k| {
            matches!(
                k.as_str(),
                MAX_COUNT_KEY | MAX_AGE_KEY | TRUNCATE_BEFORE_KEY
            )
        }) {
            return Err(Error::InvalidArgument(format!(
                "user metadata must not hold the store's key {k:?} (set the rule instead)"
            )));
        }
        Ok(map)
    }

    fn json_object(&self) -> Map<String, Value> {
        let mut map = Map::new();
        if let Some(n) = self.max_count {
            map.insert(MAX_COUNT_KEY.into(), n.into());
        }
        if let Some(age) = self.max_age {
            map.insert(MAX_AGE_KEY.into(), age.as_secs().into());
        }
        if let Some(tb) = self.truncate_before {
            map.insert(TRUNCATE_BEFORE_KEY.into(), tb.into());
        }
        // Checked before it is stored; what fails to parse here was never stored.
        for (k, v) in self.custom_object().unwrap_or_default() {
            map.insert(k, v);
        }
        map
    }
}

/// The rules in force for one stream, as a reader applies them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Rule {
    pub(crate) max_count: Option<u64>,
    pub(crate) max_age_s: Option<u64>,
    pub(crate) truncate_before: Option<u64>,
    pub(crate) tombstoned: bool,
}

impl Rule {
    /// Whether the rule can hide any event.
    pub(crate) fn hides_any(&self) -> bool {
        self.tombstoned
            || self.max_count.is_some()
            || self.max_age_s.is_some()
            || self.truncate_before.is_some_and(|tb| tb > 0)
    }

    /// The stream's last version as readers and expected versions see it: `None` when it
    /// has no events or all are below `truncate_before` (soft deleted).
    pub(crate) fn effective_last(&self, last: Option<u64>) -> Option<u64> {
        match (last, self.truncate_before) {
            (Some(l), Some(tb)) if l < tb => None,
            (l, _) => l,
        }
    }
}

/// The time an event's age is measured from, in microseconds since the Unix epoch: its
/// commit time (format 2), which the store stamps and never lets go back; for events of
/// format 1, which have none, the timestamp they were appended with.
pub(crate) fn event_time_us(committed_at_us: Option<i64>, timestamp_us: i64) -> i64 {
    committed_at_us.unwrap_or(timestamp_us)
}

/// The rules of one stream as a reader created at one moment applies them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Retention {
    /// The lowest version kept (truncate-before and max-count together).
    pub(crate) floor: u64,
    /// Events with a time below this are hidden (max-age), if set.
    pub(crate) oldest_us: Option<i64>,
}

impl Retention {
    /// The retention of a stream under `rule` whose last version is `last`, read at
    /// `now_us`. `None` when it keeps everything.
    pub(crate) fn new(rule: &Rule, last: Option<u64>, now_us: i64) -> Option<Retention> {
        let by_count = match (rule.max_count, last) {
            (Some(n), Some(last)) => last.saturating_add(1).saturating_sub(n),
            _ => 0,
        };
        let floor = rule.truncate_before.unwrap_or(0).max(by_count);
        let oldest_us = rule.max_age_s.map(|s| {
            let age_us = i64::try_from(s.saturating_mul(1_000_000)).unwrap_or(i64::MAX);
            now_us.saturating_sub(age_us)
        });
        (floor > 0 || oldest_us.is_some()).then_some(Retention { floor, oldest_us })
    }

    /// Whether an event at `version` whose age counts from `time_us` (see
    /// [`event_time_us`]) is kept.
    pub(crate) fn keeps(&self, version: u64, time_us: i64) -> bool {
        version >= self.floor && self.oldest_us.is_none_or(|oldest| time_us >= oldest)
    }
}

/// One change of a stream's metadata, as stored in [`METADATA_STREAM`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    /// Position of the frame holding it.
    pub(crate) position: u64,
    /// The stream's metadata version after it.
    pub(crate) version: u64,
    pub(crate) metadata: StreamMetadata,
    pub(crate) tombstoned: bool,
}

impl Record {
    pub(crate) fn rule(&self) -> Rule {
        Rule {
            max_count: self.metadata.max_count,
            max_age_s: self.metadata.max_age.map(|a| a.as_secs()),
            truncate_before: self.metadata.truncate_before,
            tombstoned: self.tombstoned,
        }
    }
}

/// The event data of a metadata change of `stream`.
pub(crate) fn encode_metadata_event(stream: &str, metadata: &StreamMetadata) -> Vec<u8> {
    let mut map = Map::new();
    map.insert("stream".into(), stream.into());
    map.insert("metadata".into(), Value::Object(metadata.json_object()));
    Value::Object(map).to_string().into_bytes()
}

/// The event data of the tombstone of `stream`.
pub(crate) fn encode_tombstone_event(stream: &str) -> Vec<u8> {
    let mut map = Map::new();
    map.insert("stream".into(), stream.into());
    Value::Object(map).to_string().into_bytes()
}

/// The event data of the erasure of the stream with index keys `(hash, check)`:
/// `{"erased":"<16 hex digits>:<8 hex digits>"}`.
pub(crate) fn encode_erased_event(keys: (u64, u32)) -> Vec<u8> {
    format!("{{\"erased\":\"{:016x}:{:08x}\"}}", keys.0, keys.1).into_bytes()
}

/// The keys an erasure record names.
fn decode_erased_event(data: &[u8]) -> std::result::Result<(u64, u32), String> {
    let value: Value = serde_json::from_slice(data).map_err(|e| format!("not JSON: {e}"))?;
    let text = value
        .get("erased")
        .and_then(Value::as_str)
        .ok_or("no \"erased\" keys")?;
    let (hash, check) = text.split_once(':').ok_or("erased keys not hash:check")?;
    let hash = u64::from_str_radix(hash, 16).map_err(|e| format!("erased hash: {e}"))?;
    let check = u32::from_str_radix(check, 16).map_err(|e| format!("erased check: {e}"))?;
    Ok((hash, check))
}

/// The stream an event of [`METADATA_STREAM`] is about (`None` for an erasure record,
/// which names none).
pub(crate) fn record_stream(event_type: &str, data: &[u8]) -> Option<String> {
    if event_type == ERASED_EVENT {
        return None;
    }
    decode_event(event_type, data)
        .ok()
        .map(|(stream, _)| stream)
}

/// Decodes an event of [`METADATA_STREAM`]: the stream it is about, its metadata (`None`
/// for a tombstone).
///
/// # Errors
/// A description of what is wrong, for an event the store did not write.
fn decode_event(
    event_type: &str,
    data: &[u8],
) -> std::result::Result<(String, Option<StreamMetadata>), String> {
    let value: Value = serde_json::from_slice(data).map_err(|e| format!("not JSON: {e}"))?;
    let stream = value
        .get("stream")
        .and_then(Value::as_str)
        .ok_or("no \"stream\" name")?
        .to_string();
    match event_type {
        TOMBSTONE_EVENT => Ok((stream, None)),
        METADATA_EVENT => {
            let metadata = value.get("metadata").ok_or("no \"metadata\"")?;
            let metadata = StreamMetadata::from_json(metadata.to_string().as_bytes())
                .map_err(|e| e.to_string())?;
            Ok((stream, Some(metadata)))
        }
        other => Err(format!("unknown event type {other:?}")),
    }
}

/// The records of one stream that readers or the writer may still need, oldest first.
#[derive(Debug, Default)]
struct Records {
    list: Vec<Record>,
    /// The first record is visible to every reader: older ones were pruned, and a reader
    /// created before it (seeing none of the kept records) applies it, a change it would
    /// have seen had it started a moment later, rather than no rule at all.
    first_settled: bool,
}

impl Records {
    /// The record a reader seeing below `visible` applies.
    fn at(&self, visible: u64) -> Option<&Record> {
        self.list
            .iter()
            .rev()
            .find(|r| r.position < visible)
            .or_else(|| self.list.first().filter(|_| self.first_settled))
    }
}

/// Stream → its metadata records, oldest first: the latest one (which may not be visible
/// yet) and those readers may still need (the newest one below the visible end, and every
/// one after it).
#[derive(Debug, Default)]
pub(crate) struct Registry {
    streams: RwLock<rustc_hash::FxHashMap<String, Records>>,
    /// Streams with records, erased streams and scavenged streams together: while 0, a
    /// read path skips the registry's locks.
    len: AtomicUsize,
    /// Erased streams, by index keys (an erasure record names no stream): hard deleted.
    erased: RwLock<rustc_hash::FxHashMap<(u64, u32), u64>>,
    /// Streams a scavenge removed events of, by index keys: the first version that
    /// survives. Reads start there even when the rule that hid the events is lifted.
    scavenged: RwLock<rustc_hash::FxHashMap<(u64, u32), u64>>,
    /// How stream names map to index keys.
    hashing: parking_lot::Mutex<crate::index::Hashing>,
}

impl Registry {
    /// Takes in the event `event_type`/`data` of [`METADATA_STREAM`] at `position`.
    /// Records below `settled` (visible to every reader from now on) are pruned but for
    /// the newest of them.
    ///
    /// # Errors
    /// A description of what is wrong with the event.
    pub(crate) fn apply_event(
        &self,
        position: u64,
        event_type: &str,
        data: &[u8],
        settled: u64,
    ) -> std::result::Result<(), String> {
        if event_type == ERASED_EVENT {
            let keys = decode_erased_event(data)?;
            self.erased.write().entry(keys).or_insert(position);
            self.update_len();
            return Ok(());
        }
        let (stream, metadata) = decode_event(event_type, data)?;
        let mut streams = self.streams.write();
        let records = streams.entry(stream).or_default();
        let previous = records.list.last();
        // A follower that failed halfway takes the same frames in again.
        if previous.is_some_and(|r| r.position >= position) {
            return Ok(());
        }
        let version = previous.map_or(0, |r| r.version.saturating_add(1));
        let record = match metadata {
            Some(metadata) => Record {
                position,
                version,
                metadata,
                tombstoned: previous.is_some_and(|r| r.tombstoned),
            },
            None => Record {
                position,
                version,
                metadata: previous.map(|r| r.metadata.clone()).unwrap_or_default(),
                tombstoned: true,
            },
        };
        records.list.push(record);
        if let Some(keep_from) = records.list.iter().rposition(|r| r.position < settled) {
            records.list.drain(..keep_from);
            records.first_settled = true;
        }
        drop(streams);
        self.update_len();
        Ok(())
    }

    fn update_len(&self) {
        let n = self
            .streams
            .read()
            .len()
            .saturating_add(self.erased.read().len())
            .saturating_add(self.scavenged.read().len());
        self.len.store(n, Ordering::Release);
    }

    /// Uses `hashing` to find erased and scavenged streams by name (the index's).
    pub(crate) fn set_hashing(&self, hashing: crate::index::Hashing) {
        *self.hashing.lock() = hashing;
    }

    /// Whether the stream was erased (below `visible`, or at all when `visible` is
    /// `u64::MAX`).
    fn erased_at(&self, stream: &str, visible: u64) -> Option<Record> {
        if self.erased.read().is_empty() {
            return None;
        }
        let keys = self.hashing.lock().keys(stream);
        let position = *self.erased.read().get(&keys)?;
        (position < visible).then(|| Record {
            position,
            version: 0,
            metadata: StreamMetadata::default(),
            tombstoned: true,
        })
    }

    /// Whether the stream was erased, seen or not.
    pub(crate) fn is_erased(&self, stream: &str) -> bool {
        self.erased_at(stream, u64::MAX).is_some()
    }

    /// Takes in what a scavenge removed of the stream with `keys`: every version below
    /// `first_surviving` is gone.
    pub(crate) fn note_scavenged(&self, keys: (u64, u32), first_surviving: u64) {
        {
            let mut map = self.scavenged.write();
            let floor = map.entry(keys).or_insert(0);
            *floor = (*floor).max(first_surviving);
        }
        self.update_len();
    }

    /// The first version of the stream a scavenge left (0: it removed none).
    pub(crate) fn scavenged_floor(&self, stream: &str) -> u64 {
        if self.scavenged.read().is_empty() {
            return 0;
        }
        let hashing = *self.hashing.lock();
        if matches!(hashing, crate::index::Hashing::ForcedCollisions) {
            // Every stream has the same keys in that test mode: no floor is known.
            return 0;
        }
        let keys = hashing.keys(stream);
        self.scavenged.read().get(&keys).copied().unwrap_or(0)
    }

    /// The stream's latest record, visible or not (for the writer).
    pub(crate) fn latest(&self, stream: &str) -> Option<Record> {
        if self.len.load(Ordering::Acquire) == 0 {
            return None;
        }
        if let Some(erased) = self.erased_at(stream, u64::MAX) {
            return Some(erased);
        }
        self.streams
            .read()
            .get(stream)
            .and_then(|r| r.list.last().cloned())
    }

    /// The stream's latest record below `visible` (for readers).
    pub(crate) fn at(&self, stream: &str, visible: u64) -> Option<Record> {
        if self.len.load(Ordering::Acquire) == 0 {
            return None;
        }
        if let Some(erased) = self.erased_at(stream, visible) {
            return Some(erased);
        }
        self.streams
            .read()
            .get(stream)
            .and_then(|r| r.at(visible).cloned())
    }

    /// The rule in force for `stream` below `visible`, if it has any.
    pub(crate) fn rule_at(&self, stream: &str, visible: u64) -> Option<Rule> {
        if self.len.load(Ordering::Acquire) == 0 {
            return None;
        }
        if let Some(erased) = self.erased_at(stream, visible) {
            return Some(erased.rule());
        }
        let rule = self
            .streams
            .read()
            .get(stream)
            .and_then(|r| r.at(visible).map(Record::rule));
        // What a scavenge removed stays removed when the rule that hid it is lifted: the
        // first surviving version acts as a truncate-before.
        match self.scavenged_floor(stream) {
            0 => rule,
            floor => {
                let mut rule = rule.unwrap_or_default();
                rule.truncate_before = Some(rule.truncate_before.unwrap_or(0).max(floor));
                Some(rule)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trips_rules_and_user_keys_in_order() {
        let m = StreamMetadata::new()
            .with_max_count(5)
            .with_truncate_before(2)
            .with_custom(br#"{"z":1,"a":{"b":[true]}}"#.to_vec());
        let json = m.to_json();
        assert_eq!(
            String::from_utf8_lossy(&json),
            r#"{"$maxCount":5,"$tb":2,"z":1,"a":{"b":[true]}}"#
        );
        assert_eq!(StreamMetadata::from_json(&json).ok(), Some(m));
    }

    #[test]
    fn bad_values_are_refused() {
        for json in [
            &br#"{"$maxCount":0}"#[..],
            br#"{"$maxCount":-1}"#,
            br#"{"$maxAge":"1h"}"#,
            br#"{"$tb":1.5}"#,
            br#"{"$tb":9223372036854775808}"#,
            br#"[1]"#,
            b"{",
        ] {
            assert!(
                matches!(
                    StreamMetadata::from_json(json),
                    Err(Error::InvalidArgument(_))
                ),
                "{}",
                String::from_utf8_lossy(json)
            );
        }
        let sub_second = StreamMetadata::new().with_max_age(Duration::from_millis(1500));
        assert!(matches!(sub_second.check(), Err(Error::InvalidArgument(_))));
        let forged = StreamMetadata::new().with_custom(br#"{"$tb":3}"#.to_vec());
        assert!(matches!(forged.check(), Err(Error::InvalidArgument(_))));
    }

    #[test]
    fn readers_apply_only_records_below_their_end() {
        let r = Registry::default();
        let data = encode_metadata_event("s", &StreamMetadata::new().with_max_count(1));
        assert_eq!(r.apply_event(100, METADATA_EVENT, &data, 0), Ok(()));
        let data = encode_tombstone_event("s");
        assert_eq!(r.apply_event(200, TOMBSTONE_EVENT, &data, 0), Ok(()));
        assert_eq!(r.rule_at("s", 100), None);
        assert_eq!(r.rule_at("s", 101).map(|r| r.tombstoned), Some(false));
        assert_eq!(r.rule_at("s", 201).map(|r| r.tombstoned), Some(true));
        assert_eq!(r.rule_at("s", 201).and_then(|r| r.max_count), Some(1));
        assert_eq!(r.latest("s").map(|r| r.version), Some(1));
        assert!(r.apply_event(300, "other", &data, 0).is_err());
    }

    #[test]
    fn a_reader_older_than_every_kept_record_applies_the_settled_one() {
        let r = Registry::default();
        let one = encode_metadata_event("s", &StreamMetadata::new().with_max_count(1));
        let two = encode_metadata_event("s", &StreamMetadata::new().with_max_count(2));
        assert_eq!(r.apply_event(100, METADATA_EVENT, &one, 0), Ok(()));
        // Settled up to 300: the first record is pruned.
        assert_eq!(r.apply_event(200, METADATA_EVENT, &two, 300), Ok(()));
        let at = |visible| r.rule_at("s", visible).and_then(|r| r.max_count);
        assert_eq!(at(150), Some(2), "not \"no rule\"");
        assert_eq!(at(250), Some(2));
        // A pending record is never applied by an older reader.
        let three = encode_metadata_event("s", &StreamMetadata::new().with_max_count(3));
        assert_eq!(r.apply_event(400, METADATA_EVENT, &three, 300), Ok(()));
        assert_eq!(at(350), Some(2));
        assert_eq!(at(401), Some(3));
        let fresh = Registry::default();
        assert_eq!(fresh.apply_event(500, METADATA_EVENT, &one, 0), Ok(()));
        assert_eq!(
            fresh.rule_at("s", 400),
            None,
            "a pending first record is not applied"
        );
    }

    #[test]
    fn retention_keeps_the_newest_and_the_young() {
        let rule = Rule {
            max_count: Some(2),
            truncate_before: Some(1),
            ..Rule::default()
        };
        let r = Retention::new(&rule, Some(9), 0).map(|r| r.floor);
        assert_eq!(r, Some(8));
        let rule = Rule {
            max_age_s: Some(10),
            ..Rule::default()
        };
        let Some(r) = Retention::new(&rule, Some(9), 100_000_000) else {
            panic!("max_age hides events");
        };
        assert!(r.keeps(0, 90_000_000));
        assert!(!r.keeps(0, 89_999_999));
        assert!(Retention::new(&Rule::default(), Some(9), 0).is_none());
    }
}
