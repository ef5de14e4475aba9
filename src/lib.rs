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
//! ## Layers
//! One module per layer, bottom up: [`io`] (the [`Storage`](io::Storage) trait, the real
//! file backend and the fault-injecting simulator), [`mod@format`] (byte layout, pure
//! codecs), [`segment`] (one segment file), [`log`] (the ordered segments, rollover,
//! recovery), [`index`] (stream → appends, persistent and bounded), [`snapshot`] (snapshot
//! files), and the store (this crate's root API: [`Store`], [`Aggregate`]). A lower layer
//! never calls up; recovery is the read path. [`inspect`] verifies and dumps a directory
//! without writing.
//!
//! ## Durability
//! See [`Durability`]: by default an append returns only once it is on disk, and concurrent
//! appenders share one write and one `fdatasync` (group commit). A failed sync poisons the
//! store: every later write returns [`Error::Poisoned`], durable data stays readable, and
//! reopening recovers.

#![deny(clippy::unwrap_used)]

mod cache;
mod error;
mod expected_version;
pub mod format;
pub mod index;
pub mod inspect;
pub mod io;
pub mod log;
mod rng;
pub mod segment;
pub mod snapshot;
mod store;

pub use error::{Error, Result};
pub use log::{Damage, TailKind, TruncatedTail, VerifyReport};
pub use store::{
    Aggregate, AllEvents, AppendResult, Durability, EventId, EventRef, EventView, ExpectedVersion,
    INDEX_DIR, LOCK_FILE, Loaded, MAX_SEGMENT_SIZE_BYTES, MIN_SEGMENT_SIZE_BYTES, NewEvent,
    Options, Position, RecordedEvent, RecoveryReport, SEGMENTS_DIR, SNAPSHOTS_DIR, Snapshot,
    SnapshotPolicy, Store, StoreInfo, StreamEvents,
};
