//! Aggregates: state rebuilt from a stream's events, loaded as the latest snapshot plus the
//! events after it.

use super::event::EventView;

/// State folded from the events of one stream, that can be saved as a snapshot.
///
/// ```
/// use streamlog::{Aggregate, EventView};
///
/// #[derive(Default)]
/// struct Balance(i64);
///
/// impl Aggregate for Balance {
///     const SCHEMA: &'static str = "balance-v1";
///     fn apply(&mut self, e: &EventView<'_>) {
///         let amount: i64 = std::str::from_utf8(e.data).ok().and_then(|s| s.parse().ok()).unwrap_or(0);
///         match e.event_type {
///             "Deposited" => self.0 += amount,
///             "Withdrawn" => self.0 -= amount,
///             _ => {}
///         }
///     }
///     fn encode(&self) -> Vec<u8> { self.0.to_le_bytes().to_vec() }
///     fn decode(bytes: &[u8]) -> Option<Self> { Some(Balance(i64::from_le_bytes(bytes.try_into().ok()?))) }
/// }
/// ```
pub trait Aggregate: Default {
    /// Tag of the encoding [`Aggregate::encode`] produces. Change it whenever the encoding
    /// changes: snapshots with another tag are ignored (and the state replayed), never
    /// misread.
    const SCHEMA: &'static str;

    /// Folds one event into the state.
    fn apply(&mut self, event: &EventView<'_>);

    /// Encodes the state for a snapshot.
    fn encode(&self) -> Vec<u8>;

    /// Decodes a snapshot of this schema; `None` makes the load ignore the snapshot.
    fn decode(bytes: &[u8]) -> Option<Self>;
}

/// When [`Store::load`](crate::Store::load) saves a snapshot by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SnapshotPolicy {
    /// Never.
    #[default]
    Never,
    /// When the stream is at least this many events past its latest snapshot (so a load
    /// never replays more than about this many events twice).
    EveryEvents(u64),
    /// When a load replayed more than this many events.
    WhenReplayedMoreThan(u64),
}

/// The result of [`Store::load`](crate::Store::load).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Loaded<A> {
    /// The state.
    pub state: A,
    /// The stream's version the state includes; `None` for a stream with no events.
    pub version: Option<u64>,
    /// The version of the snapshot the load started from, if it used one.
    pub snapshot_version: Option<u64>,
    /// Events replayed after the snapshot (all of them without one).
    pub replayed: u64,
    /// Snapshots passed over and why (damaged, another schema, newer than the stream,
    /// not decodable).
    pub ignored_snapshots: Vec<String>,
    /// The version of a snapshot the policy saved during this load.
    pub snapshot_saved: Option<u64>,
    /// Why the policy's snapshot could not be saved (the load itself succeeded).
    pub snapshot_error: Option<String>,
}
