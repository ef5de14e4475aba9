//! Options of a [`Store`](crate::Store): durability and every size limit, with checked bounds.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::event::EventRef;
use crate::error::{Error, Result};
use crate::format::{self, EventRecord, FRAME_HEADER_LEN, SEGMENT_HEADER_LEN};
use crate::io::{FsStorage, Storage};

/// When an append is acknowledged relative to the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Durability {
    /// `append` returns only after its frame is on disk (`fdatasync`). Concurrent appenders
    /// share one write and one sync (group commit). A returned append survives any crash.
    Sync,
    /// `append` returns once the frame is handed to the OS; a background thread syncs every
    /// `interval`. A crash of the machine may lose the appends of the last interval (whole
    /// appends, never part of one); a crash of the process alone loses nothing.
    Periodic(Duration),
    /// `append` returns once the frame is handed to the OS; the OS decides when it reaches
    /// the disk, or [`Store::sync`](crate::Store::sync) forces it. Same crash guarantees as
    /// `Periodic`, over an unbounded window.
    Buffered,
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Durability::Sync => write!(f, "sync"),
            Durability::Periodic(d) => write!(f, "periodic({}ms)", d.as_millis()),
            Durability::Buffered => write!(f, "buffered"),
        }
    }
}

/// Smallest allowed segment size.
pub const MIN_SEGMENT_SIZE_BYTES: u64 = 4096;
/// Largest allowed segment size (1 TiB).
pub const MAX_SEGMENT_SIZE_BYTES: u64 = 1 << 40;

/// How to open a store. Start from [`Options::default`] and adjust with the `with_*` methods.
#[derive(Clone)]
#[non_exhaustive]
pub struct Options {
    /// Durability of appends. Default: [`Durability::Sync`].
    pub durability: Durability,
    /// Size at which a new segment file is started. Default 256 MiB; bounds
    /// [`MIN_SEGMENT_SIZE_BYTES`]..=[`MAX_SEGMENT_SIZE_BYTES`].
    pub segment_size_bytes: u64,
    /// Longest stream name in bytes. Default 256; at most 65,535.
    pub max_stream_name_bytes: usize,
    /// Longest event type name in bytes. Default 256; at most 65,535.
    pub max_event_type_bytes: usize,
    /// Largest event (data plus metadata) in bytes. Default 16 MiB; at most the frame limit.
    pub max_event_bytes: u64,
    /// Most events in one append. Default 10,000.
    pub max_events_per_append: usize,
    /// Largest frame (one append, encoded) in bytes. Default 64 MiB; at most the segment
    /// size less the segment and frame headers, and at most 4 GiB.
    pub max_frame_bytes: u64,
    /// Index entries (one per append) kept in memory before they are flushed to an index
    /// table file. Default 65,536 (about 6 MiB); at least 16.
    pub memtable_entries: usize,
    /// The memtable is also flushed once the log it covers reaches this many bytes, which
    /// bounds what an open after a crash replays whatever the appends' size or the log's
    /// length (the index covers the rest). The flush runs on the index maintainer's thread,
    /// off the append path; it first syncs the log up to what it covers, so a much smaller
    /// bound costs writers throughput. Default 1 MiB (an open after a crash reads and
    /// checks at most about that much of the log, plus what a flush still in progress
    /// covers: about 0.15 ms a MiB on a warm page cache); at least 1.
    pub memtable_log_bytes: u64,
    /// Streams whose latest append the writer keeps in memory (a bounded cache backed by
    /// the index). Default 65,536 (about 8 MiB); at least 2.
    pub stream_cache_entries: usize,
    /// Bytes of checked frames that stream readers keep in memory, so that a stream read
    /// again costs no read of the file and no checksum. Default 32 MiB; 0 turns it off.
    pub frame_cache_bytes: usize,
    /// Under [`Durability::Sync`]: zeroed bytes kept written ahead of the log's end, so
    /// that each append's `fdatasync` overwrites allocated blocks instead of growing the
    /// file (a size change makes the file system commit its journal too). Cut at a clean
    /// close and when a segment is sealed; after a crash, recovery cuts them as a
    /// zero-filled tail. Default 1 MiB; 0 turns it off. Ignored by the other modes.
    pub preallocate_bytes: u64,
    /// When [`Store::load`](crate::Store::load) saves snapshots by itself. Default: never.
    pub snapshot_policy: crate::SnapshotPolicy,
    /// Snapshots of each stream kept when old ones are reclaimed. Default 2; at least 1.
    pub snapshots_kept_per_stream: usize,
    /// Reclaim old snapshots when the snapshot files hold this many (0: only when
    /// [`Store::reclaim_snapshots`](crate::Store::reclaim_snapshots) is called).
    /// Default 100,000.
    pub snapshot_reclaim_threshold: u64,
    /// Flush and merge index tables on a background thread (default `true`). With `false`,
    /// the append that fills the memtable flushes it and runs the merges itself, and no
    /// thread does I/O behind the caller's back: what deterministic simulation needs.
    pub background_index_maintenance: bool,
    /// Test-only: every stream gets the same index keys, to exercise collision handling.
    #[doc(hidden)]
    pub forced_hash_collisions: bool,
    /// Open without writing anything: no truncation of a torn tail, a shared lock, and
    /// every write returns [`Error::ReadOnly`]. Default false. Needs only read access to
    /// the directory: the lock file is opened for reading, and when it is missing or
    /// unreadable the store is read without a lock (nothing is created). Beside a writer
    /// in another process, a read-only store sees what the writer has published in its
    /// `LIVE` file, a fraction of a millisecond after acknowledging it (a background
    /// thread publishes each committed end): an append acknowledged just before may not be
    /// seen yet.
    pub read_only: bool,
    /// The file system. Default: the real one ([`FsStorage`]).
    pub storage: Arc<dyn Storage>,
    /// End every group commit on a 4 KiB boundary of its segment file (with a padding
    /// frame), so that no later write touches a sector that holds acknowledged data: the
    /// log then needs no power-safe overwrite from the disk. Costs space (up to a sector
    /// per commit) and some speed: see docs/design.md. Default false.
    pub sector_aligned_commits: bool,
    /// Where commit times come from. Default: the system clock.
    pub clock: Clock,
    /// Upcasters applied to events of older schema versions on every read path.
    /// Default: none.
    pub upcasters: crate::Upcasters,
}

/// The clock the store reads commit times from (and the timestamps of events given none).
/// Commit times never go backwards within a store even when the clock does: an append is
/// stamped with the later of the clock and the previous commit time.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> SystemTime + Send + Sync>);

impl Clock {
    /// The system's wall clock.
    pub fn system() -> Self {
        Clock(Arc::new(SystemTime::now))
    }

    /// A clock read by calling `now` (for tests: a clock that jumps, or goes backwards).
    pub fn from_fn(now: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        Clock(Arc::new(now))
    }

    /// The current time by this clock.
    pub fn now(&self) -> SystemTime {
        (self.0)()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Clock")
    }
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("durability", &self.durability)
            .field("segment_size_bytes", &self.segment_size_bytes)
            .field("max_stream_name_bytes", &self.max_stream_name_bytes)
            .field("max_event_type_bytes", &self.max_event_type_bytes)
            .field("max_event_bytes", &self.max_event_bytes)
            .field("max_events_per_append", &self.max_events_per_append)
            .field("max_frame_bytes", &self.max_frame_bytes)
            .field("memtable_entries", &self.memtable_entries)
            .field("memtable_log_bytes", &self.memtable_log_bytes)
            .field("stream_cache_entries", &self.stream_cache_entries)
            .field("frame_cache_bytes", &self.frame_cache_bytes)
            .field("preallocate_bytes", &self.preallocate_bytes)
            .field(
                "background_index_maintenance",
                &self.background_index_maintenance,
            )
            .field("forced_hash_collisions", &self.forced_hash_collisions)
            .field("read_only", &self.read_only)
            .field("storage", &self.storage)
            .field("sector_aligned_commits", &self.sector_aligned_commits)
            .field("upcasters", &self.upcasters)
            .finish()
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            durability: Durability::Sync,
            segment_size_bytes: 256 << 20,
            max_stream_name_bytes: 256,
            max_event_type_bytes: 256,
            max_event_bytes: 16 << 20,
            max_events_per_append: 10_000,
            max_frame_bytes: 64 << 20,
            memtable_entries: 65_536,
            memtable_log_bytes: 1 << 20,
            stream_cache_entries: 65_536,
            frame_cache_bytes: 32 << 20,
            preallocate_bytes: 1 << 20,
            snapshot_policy: crate::SnapshotPolicy::Never,
            snapshots_kept_per_stream: 2,
            snapshot_reclaim_threshold: 100_000,
            background_index_maintenance: true,
            forced_hash_collisions: false,
            read_only: false,
            storage: Arc::new(FsStorage),
            sector_aligned_commits: false,
            clock: Clock::system(),
            upcasters: crate::Upcasters::new(),
        }
    }
}

impl Options {
    /// Sets [`Options::durability`].
    pub fn with_durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Sets [`Options::segment_size_bytes`], lowering `max_frame_bytes` and
    /// `max_event_bytes` to fit when needed.
    pub fn with_segment_size_bytes(mut self, bytes: u64) -> Self {
        self.segment_size_bytes = bytes;
        let fit = bytes.saturating_sub((SEGMENT_HEADER_LEN + FRAME_HEADER_LEN) as u64);
        self.max_frame_bytes = self.max_frame_bytes.min(fit);
        self.max_event_bytes = self.max_event_bytes.min(self.max_frame_bytes);
        self
    }

    /// Sets [`Options::max_stream_name_bytes`].
    pub fn with_max_stream_name_bytes(mut self, bytes: usize) -> Self {
        self.max_stream_name_bytes = bytes;
        self
    }

    /// Sets [`Options::max_event_bytes`].
    pub fn with_max_event_bytes(mut self, bytes: u64) -> Self {
        self.max_event_bytes = bytes;
        self
    }

    /// Sets [`Options::max_events_per_append`].
    pub fn with_max_events_per_append(mut self, n: usize) -> Self {
        self.max_events_per_append = n;
        self
    }

    /// Sets [`Options::max_frame_bytes`].
    pub fn with_max_frame_bytes(mut self, bytes: u64) -> Self {
        self.max_frame_bytes = bytes;
        self
    }

    /// Sets [`Options::memtable_entries`].
    pub fn with_memtable_entries(mut self, n: usize) -> Self {
        self.memtable_entries = n;
        self
    }

    /// Sets [`Options::memtable_log_bytes`].
    pub fn with_memtable_log_bytes(mut self, bytes: u64) -> Self {
        self.memtable_log_bytes = bytes;
        self
    }

    /// Sets [`Options::stream_cache_entries`].
    pub fn with_stream_cache_entries(mut self, n: usize) -> Self {
        self.stream_cache_entries = n;
        self
    }

    /// Sets [`Options::frame_cache_bytes`].
    pub fn with_frame_cache_bytes(mut self, bytes: usize) -> Self {
        self.frame_cache_bytes = bytes;
        self
    }

    /// Sets [`Options::preallocate_bytes`].
    pub fn with_preallocate_bytes(mut self, bytes: u64) -> Self {
        self.preallocate_bytes = bytes;
        self
    }

    /// Sets [`Options::snapshot_policy`].
    pub fn with_snapshot_policy(mut self, policy: crate::SnapshotPolicy) -> Self {
        self.snapshot_policy = policy;
        self
    }

    /// Sets [`Options::snapshots_kept_per_stream`].
    pub fn with_snapshots_kept_per_stream(mut self, keep: usize) -> Self {
        self.snapshots_kept_per_stream = keep;
        self
    }

    /// Sets [`Options::snapshot_reclaim_threshold`].
    pub fn with_snapshot_reclaim_threshold(mut self, snapshots: u64) -> Self {
        self.snapshot_reclaim_threshold = snapshots;
        self
    }

    /// Sets [`Options::background_index_maintenance`].
    pub fn with_background_index_maintenance(mut self, background: bool) -> Self {
        self.background_index_maintenance = background;
        self
    }

    /// Test-only: gives every stream the same index keys.
    #[doc(hidden)]
    pub fn with_forced_hash_collisions(mut self) -> Self {
        self.forced_hash_collisions = true;
        self
    }

    /// Sets [`Options::sector_aligned_commits`].
    pub fn with_sector_aligned_commits(mut self, aligned: bool) -> Self {
        self.sector_aligned_commits = aligned;
        self
    }

    /// Sets [`Options::upcasters`].
    pub fn with_upcasters(mut self, upcasters: crate::Upcasters) -> Self {
        self.upcasters = upcasters;
        self
    }

    /// Sets [`Options::clock`].
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Sets [`Options::read_only`].
    pub fn with_read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// Sets [`Options::storage`].
    pub fn with_storage(mut self, storage: Arc<dyn Storage>) -> Self {
        self.storage = storage;
        self
    }

    /// Checks an append of `events` to `stream` against every limit of these options,
    /// as [`Store::append`](crate::Store::append) does, without writing anything; returns
    /// the bytes it takes in the log (its frame, compared with
    /// [`Options::max_frame_bytes`]).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty batch, an empty or reserved stream name or
    /// an empty event type; [`Error::TooLarge`] when a limit is exceeded.
    pub fn check_append(&self, stream: &str, events: &[EventRef<'_>]) -> Result<u64> {
        let records: Vec<EventRecord<'_>> = events
            .iter()
            .map(|e| EventRecord {
                id: e.id.0,
                timestamp_us: 0,
                schema_version: e.schema_version,
                event_type: e.event_type,
                metadata: e.metadata,
                data: e.data,
            })
            .collect();
        if stream.starts_with('$') {
            return Err(Error::InvalidArgument(format!(
                "stream names starting with '$' are reserved: {stream:?}"
            )));
        }
        self.check_records(stream, &records)
    }

    /// [`Options::check_append`] on encoded records, for any stream name (system streams,
    /// `$`-prefixed, included: callers check that).
    pub(crate) fn check_records(&self, stream: &str, records: &[EventRecord<'_>]) -> Result<u64> {
        let o = self;
        super::read::check_stream_name(stream)?;
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

    /// Checks every bound.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the first option out of bounds.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::InvalidArgument(msg));
        if !(MIN_SEGMENT_SIZE_BYTES..=MAX_SEGMENT_SIZE_BYTES).contains(&self.segment_size_bytes) {
            return bad(format!(
                "segment_size_bytes must be within {MIN_SEGMENT_SIZE_BYTES}..={MAX_SEGMENT_SIZE_BYTES}, not {}",
                self.segment_size_bytes
            ));
        }
        let frame_fit = self
            .segment_size_bytes
            .saturating_sub((SEGMENT_HEADER_LEN + FRAME_HEADER_LEN) as u64)
            .min(u64::from(u32::MAX));
        if self.max_frame_bytes < 64 || self.max_frame_bytes > frame_fit {
            return bad(format!(
                "max_frame_bytes must be within 64..={frame_fit} for this segment size, not {}",
                self.max_frame_bytes
            ));
        }
        if self.max_event_bytes == 0 || self.max_event_bytes > self.max_frame_bytes {
            return bad(format!(
                "max_event_bytes must be within 1..=max_frame_bytes ({}), not {}",
                self.max_frame_bytes, self.max_event_bytes
            ));
        }
        if self.max_stream_name_bytes == 0 || self.max_stream_name_bytes > usize::from(u16::MAX) {
            return bad(format!(
                "max_stream_name_bytes must be within 1..=65535, not {}",
                self.max_stream_name_bytes
            ));
        }
        if self.max_event_type_bytes == 0 || self.max_event_type_bytes > usize::from(u16::MAX) {
            return bad(format!(
                "max_event_type_bytes must be within 1..=65535, not {}",
                self.max_event_type_bytes
            ));
        }
        if self.max_events_per_append == 0 || self.max_events_per_append > u32::MAX as usize {
            return bad(format!(
                "max_events_per_append must be within 1..={}, not {}",
                u32::MAX,
                self.max_events_per_append
            ));
        }
        if self.memtable_entries < 16 {
            return bad(format!(
                "memtable_entries must be at least 16, not {}",
                self.memtable_entries
            ));
        }
        if self.memtable_log_bytes == 0 {
            return bad("memtable_log_bytes must be at least 1".into());
        }
        if self.snapshots_kept_per_stream == 0 {
            return bad("snapshots_kept_per_stream must be at least 1".into());
        }
        if self.stream_cache_entries < 2 {
            return bad(format!(
                "stream_cache_entries must be at least 2, not {}",
                self.stream_cache_entries
            ));
        }
        if let Durability::Periodic(d) = self.durability
            && d.is_zero()
        {
            return bad("a periodic durability interval must be positive".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bounds_are_checked() {
        assert!(Options::default().validate().is_ok());
        assert!(
            Options::default()
                .with_segment_size_bytes(4096)
                .validate()
                .is_ok()
        );
        assert!(
            Options::default()
                .with_segment_size_bytes(100)
                .validate()
                .is_err()
        );
        assert!(
            Options::default()
                .with_max_frame_bytes(1 << 40)
                .validate()
                .is_err()
        );
        assert!(
            Options::default()
                .with_max_events_per_append(0)
                .validate()
                .is_err()
        );
        assert!(
            Options::default()
                .with_max_stream_name_bytes(70_000)
                .validate()
                .is_err()
        );
        assert!(
            Options::default()
                .with_durability(Durability::Periodic(Duration::ZERO))
                .validate()
                .is_err()
        );
    }
}
