//! # streamlog
//!
//! An embeddable event store: a segmented, append-only, checksummed binary log with
//! per-stream reads, idempotent appends guarded by expected versions, group commit, and
//! crash recovery that tells a torn tail (cut and reported) from corruption (refused).
//!
//! ```
//! use streamlog::{ExpectedVersion, NewEvent, Position, Store};
//!
//! # fn main() -> streamlog::Result<()> {
//! # let dir = tempfile::tempdir().map_err(|e| streamlog::Error::InvalidArgument(e.to_string()))?;
//! let store = Store::open(dir.path().join("data"))?; // creates the directory if needed
//! let r = store.append(
//!     "account-42",
//!     ExpectedVersion::NoStream,
//!     [NewEvent::new("Deposited", br#"{"amount":100}"#)],
//! )?;
//! assert_eq!((r.first_version, r.last_version), (0, 0));
//!
//! // Appending again with a stale expectation is refused.
//! let err = store.append("account-42", ExpectedVersion::NoStream, [NewEvent::new("Deposited", b"{}")]);
//! assert!(matches!(err, Err(streamlog::Error::WrongExpectedVersion { .. })));
//!
//! for e in store.read_stream("account-42", 0)? {
//!     let e = e?;
//!     assert_eq!((e.version, e.event_type.as_str()), (0, "Deposited"));
//! }
//! assert_eq!(store.read_all(Position::START)?.count(), 1);
//! store.close()?;
//! # Ok(())
//! # }
//! ```
//!
//! ## What you use, in the order you need it
//! - [`Store`]: [`Store::open`] / [`Store::open_with`] with [`Options`] (limits, sizes,
//!   and [`Durability`]: by default an append returns only once it is on disk, and
//!   concurrent appenders share one write and one `fdatasync`, group commit).
//! - Appends: [`Store::append`] with [`NewEvent`]s (or [`Store::append_refs`] with
//!   borrowed [`EventRef`]s), guarded by an [`ExpectedVersion`]; the [`AppendResult`]
//!   says where they landed. Retrying with the same event ids is idempotent.
//! - Reads: [`Store::read_stream`], [`Store::read_stream_backward`], [`Store::read_all`]
//!   ([`RecordedEvent`]s), or borrowed [`EventView`]s through [`Store::read_stream_with`],
//!   [`Store::read_all_with`] and the readers' `for_each_view`.
//! - State: an [`Aggregate`] loaded by [`Store::load`] from the latest [`Snapshot`] and
//!   the events after it, with a [`SnapshotPolicy`].
//! - Time travel: every event carries its commit time ([`RecordedEvent::committed_at`],
//!   never decreasing within a store; [`Clock`] is where it comes from).
//!   [`Store::position_at`] finds a time in the log by binary search,
//!   [`Store::read_all_between`] reads between two times, and [`Store::read_stream_as_of`],
//!   [`Store::stream_version_as_of`] and [`Store::load_as_of`] answer as of an [`AsOf`]
//!   bound (a version, a position or a time).
//! - Schema evolution: [`Upcasters`] in [`Options::with_upcasters`] rewrite events of
//!   older schema versions ([`NewEvent::with_schema_version`]) on every read path.
//! - Lifecycle: [`Store::set_stream_metadata`] ([`StreamMetadata`]: keep the newest N
//!   events, events younger than an age, or from a version on; free user metadata),
//!   [`Store::delete_stream`] (soft: the stream reads as empty, a later append re-creates
//!   it) and [`Store::tombstone_stream`] (hard: [`Error::StreamDeleted`] from then on).
//! - Processors: [`Store::subscribe_all`] ([`SubscribeAll`], with a [`Filter`]) and
//!   [`Store::subscribe_stream`] ([`SubscribeStream`]) catch up, then stay live; each
//!   [`Delivery::Event`] carries a [`ResumeToken`] to save with
//!   [`Store::save_checkpoint`] and resume from with [`Store::checkpoint`].
//! - Other processes: [`Options::with_read_only`] opens a store that another process
//!   writes; it follows that writer's commits and can subscribe.
//! - Errors: one [`Error`] enum; a conflict is [`Error::WrongExpectedVersion`]. A failed
//!   sync poisons the store: every later write returns [`Error::Poisoned`], durable data
//!   stays readable, and reopening recovers.
//! - What happened: [`Store::recovery_report`], [`Store::info`], [`Store::verify`].
//!
//! ## Crash-testing your own code
//! [`io`] holds the [`Storage`](io::Storage) trait the store does all its I/O through, the
//! real file backend, and a deterministic, fault-injecting simulated disk
//! ([`io::sim::SimStorage`]: power cuts that lose unsynced sectors, torn writes, bit flips,
//! failing syncs). Open a store on it with [`Options::with_storage`].
//!
//! ## Async code
//! With the `tokio` feature, `Subscription::into_stream` makes a subscription a
//! `futures_core::Stream`. The store's other calls block (an append under `Sync` waits
//! for its fsync): call them through `tokio::task::spawn_blocking` with a clone of the
//! [`Store`] (a clone is a cheap handle).
//!
//! ## Inspecting a store
//! [`inspect`] verifies and dumps a store directory without ever writing to it.
//!
//! ## Internals
//! The engine's layers (`format`, `segment`, `log`, `index`, `snapshot`) are private; the
//! cargo feature `internals` makes them public for the fuzz targets and codec benchmarks,
//! with no stability promise. docs/design.md describes them: one module per layer, bottom
//! up, a lower layer never calling up, recovery being the read path.

#![deny(clippy::unwrap_used)]

mod cache;
#[cfg(feature = "cluster")]
pub mod cluster;
mod error;
mod expected_version;
pub mod inspect;
pub mod io;
mod rng;
#[cfg(feature = "server")]
pub mod server;
mod store;
mod subscribe;

// The engine's layers: public only with the `internals` feature (fuzz targets, codec
// benchmarks). Without it, what only those callers use is unused here.
#[cfg(feature = "internals")]
pub mod format;
#[cfg(not(feature = "internals"))]
mod format;
#[cfg(feature = "internals")]
pub mod index;
#[cfg(not(feature = "internals"))]
mod index;
#[cfg(feature = "internals")]
pub mod log;
#[cfg(not(feature = "internals"))]
mod log;
#[cfg(feature = "internals")]
pub mod segment;
#[cfg(not(feature = "internals"))]
mod segment;
#[cfg(feature = "internals")]
pub mod snapshot;
#[cfg(not(feature = "internals"))]
mod snapshot;

pub use error::{Error, Result};
pub use index::IndexReport;
pub use log::{Damage, SYNC_BUCKET_BOUNDS_US, SyncStats, TailKind, TruncatedTail, VerifyReport};
pub use snapshot::{SnapshotCheck, SnapshotReport};
pub use store::{
    Aggregate, AllEvents, AppendRequest, AppendResult, AsOf, Clock, DeleteResult, Durability,
    ERASED_EVENT, EventId, EventRef, EventView, ExpectedVersion, INDEX_DIR, LIVE_FILE, LOCK_FILE,
    Loaded, MAX_SEGMENT_SIZE_BYTES, METADATA_EVENT, METADATA_STREAM, MIN_SEGMENT_SIZE_BYTES,
    NewEvent, Options, Position, RecordedEvent, RecoveryReport, ResumeToken, SCAVENGE_MARKER,
    SEGMENTS_DIR, SNAPSHOTS_DIR, ScavengeOptions, ScavengeReport, Snapshot, SnapshotPolicy, Store,
    StoreInfo, StreamEvents, StreamMetadata, TOMBSTONE_EVENT, Upcast, Upcasters,
};
#[cfg(feature = "tokio")]
pub use subscribe::SubscriptionStream;
pub use subscribe::{
    CHECKPOINTS_DIR, DEFAULT_CHECKPOINT_EVERY, Delivery, Filter, HANDOFF_CAPACITY,
    MAX_CHECKPOINT_NAME_BYTES, SubscribeAll, SubscribeStream, Subscription,
};
