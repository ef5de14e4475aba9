//! Snapshots through the store: saving, the latest usable one, aggregate loads (snapshot +
//! the events after it) with the snapshot policy, and reclamation.

use std::ops::ControlFlow;

use super::read::{self, StreamEvents};
use super::{Aggregate, Loaded, Snapshot, SnapshotPolicy, Store};
use crate::error::{Error, Result};
use crate::format;

impl Store {
    /// Saves a snapshot of `stream`'s state at `version` (the last event the state
    /// includes), tagged with `schema`. It is readable at once and durable after a clean
    /// close (or [`Store::sync`]); after a crash the latest snapshots may be gone, which
    /// only means a longer replay. Snapshots never change events.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the stream has no event at `version`, the stream name
    /// is empty or longer than 65,535 bytes, or the schema tag is empty or longer than
    /// 65,535 bytes; [`Error::TooLarge`] beyond `max_frame_bytes`; [`Error::ReadOnly`]; I/O
    /// errors.
    pub fn save_snapshot(
        &self,
        stream: &str,
        version: u64,
        schema: &str,
        data: &[u8],
    ) -> Result<()> {
        if self.inner.options.read_only {
            return Err(Error::ReadOnly);
        }
        read::check_stream_name(stream)?;
        if stream.len() > usize::from(u16::MAX) {
            return Err(Error::InvalidArgument(format!(
                "a snapshot's stream name must be at most 65535 bytes, not {}",
                stream.len()
            )));
        }
        if schema.is_empty() || schema.len() > usize::from(u16::MAX) {
            return Err(Error::InvalidArgument(format!(
                "a snapshot needs a schema tag of 1..=65535 bytes, not {}",
                schema.len()
            )));
        }
        // A version the stream's metadata hides (deleted, truncated, expired by count) is
        // no state a reader can reach: its snapshot would bring deleted events back.
        let floor = self.first_kept_version(stream)?;
        if version < floor {
            return Err(Error::InvalidArgument(format!(
                "cannot snapshot {stream:?} at version {version}: the stream's metadata hides \
                 the versions below {floor} (deleted, truncated or past its max count)"
            )));
        }
        match self.stream_version(stream)? {
            Some(last) if last >= version => {}
            Some(last) => {
                return Err(Error::InvalidArgument(format!(
                    "cannot snapshot {stream:?} at version {version}: its last version is {last}"
                )));
            }
            None => {
                return Err(Error::InvalidArgument(format!(
                    "cannot snapshot {stream:?} at version {version}: the stream has no events"
                )));
            }
        }
        let body = format::SnapshotBody {
            stream,
            version,
            schema,
            payload: data,
        };
        self.inner
            .snapshots
            .save(&body, self.inner.options.max_frame_bytes)?;
        self.maybe_reclaim_snapshots();
        Ok(())
    }

    /// The latest snapshot of `stream` that is intact, not newer than the stream, and not
    /// at a version its metadata hides (a snapshot taken before a delete, a
    /// truncate-before or a max count hid its version holds deleted events).
    ///
    /// # Errors
    /// [`Error::StreamDeleted`] for a hard-deleted stream; I/O errors reading the stream's
    /// version or opening the snapshot files ([`Error::UnsupportedFormat`] for snapshot
    /// files of a newer format); damaged snapshots are skipped, not errors.
    pub fn latest_snapshot(&self, stream: &str) -> Result<Option<Snapshot>> {
        let Some(last) = self.stream_version(stream)? else {
            return Ok(None);
        };
        let floor = self.first_kept_version(stream)?;
        let hidden = |b: &format::SnapshotBody<'_>| {
            if b.version < floor {
                Err(format!(
                    "version {} is hidden by the stream's metadata",
                    b.version
                ))
            } else {
                Ok(())
            }
        };
        Ok(self.inner.snapshots.latest(stream, last, hidden)?.0)
    }

    /// The lowest version of `stream` its metadata does not hide by version
    /// (truncate-before, a delete, max count; 0 without such a rule).
    fn first_kept_version(&self, stream: &str) -> Result<u64> {
        let visible = self.inner.visible();
        Ok(self
            .inner
            .retention(stream, visible)?
            .map_or(0, |r| r.floor))
    }

    /// Loads aggregate `A` of `stream`: its latest usable snapshot (intact, of schema
    /// `A::SCHEMA`, decodable, not newer than the stream) plus the events after it, or a
    /// full replay when there is none. Saves a snapshot afterwards when
    /// [`Options::snapshot_policy`](crate::Options::snapshot_policy) says so.
    ///
    /// # Errors
    /// Errors reading the events (snapshot problems are reported in [`Loaded`], never
    /// errors).
    pub fn load<A: Aggregate>(&self, stream: &str) -> Result<Loaded<A>> {
        read::check_stream_name(stream)?;
        let lookup = self.lookup();
        // Hard deleted: an error, as for every read of the stream.
        let retention = self.inner.retention(stream, lookup.visible)?;
        let current = self
            .inner
            .resolve_visible(stream, u64::MAX, lookup.visible)?;
        let current = current.map(|f| f.entry.last_version());
        // A snapshot's state includes every event up to its version: while the stream's
        // metadata may hide some of them, no snapshot is used (or saved), and the state
        // is replayed from the events that are kept.
        let rules = self
            .inner
            .registry
            .rule_at(stream, lookup.visible)
            .filter(|r| r.hides_any());
        let (mut state, mut snapshot_version, mut ignored) = (A::default(), None, Vec::new());
        if let Some(cur) = current {
            let found = self.inner.snapshots.latest(stream, cur, |b| {
                if b.schema != A::SCHEMA {
                    Err(format!("schema {:?}, not {:?}", b.schema, A::SCHEMA))
                } else if A::decode(b.payload).is_none() {
                    Err("does not decode".into())
                } else {
                    Ok(())
                }
            });
            // Snapshot files that do not open (a newer format, I/O): a full replay.
            let (snap, passed) = found.unwrap_or_else(|e| (None, vec![format!("snapshots: {e}")]));
            ignored = passed;
            if let (Some(s), Some(_)) = (&snap, rules) {
                ignored.push(format!(
                    "snapshot at version {}: not used while the stream's metadata (max count, \
                     max age, truncate-before or a delete) hides events",
                    s.version
                ));
            } else if let Some(s) = snap
                && let Some(decoded) = A::decode(&s.data)
            {
                state = decoded;
                snapshot_version = Some(s.version);
            }
        }
        let from = snapshot_version.map_or(0, |v| v + 1);
        let mut version = snapshot_version;
        let mut replayed = 0u64;
        StreamEvents::forward(lookup, stream, from, retention).for_each_view(|e| {
            state.apply(&e);
            version = Some(e.version);
            replayed += 1;
            ControlFlow::Continue(())
        })?;
        let mut loaded = Loaded {
            state,
            version,
            snapshot_version,
            replayed,
            ignored_snapshots: ignored,
            snapshot_saved: None,
            snapshot_error: None,
        };
        let due = match (self.inner.options.snapshot_policy, version) {
            (_, None) => false,
            _ if rules.is_some() => false,
            (SnapshotPolicy::Never, _) => false,
            (SnapshotPolicy::EveryEvents(n), Some(v)) => {
                v + 1 - snapshot_version.map_or(0, |s| s + 1) >= n.max(1)
            }
            (SnapshotPolicy::WhenReplayedMoreThan(n), _) => replayed > n,
        };
        if let (true, Some(v), false) = (due, version, self.inner.options.read_only) {
            match self.save_snapshot(stream, v, A::SCHEMA, &loaded.state.encode()) {
                Ok(()) => loaded.snapshot_saved = Some(v),
                Err(e) => loaded.snapshot_error = Some(e.to_string()),
            }
        }
        Ok(loaded)
    }

    /// Rewrites the snapshot files keeping the latest
    /// [`Options::snapshots_kept_per_stream`](crate::Options::snapshots_kept_per_stream) snapshots of each stream, crash-safely
    /// (a new generation of snapshot files, switched to atomically). Appends and reads go on
    /// meanwhile. Returns (snapshots kept, snapshots dropped).
    ///
    /// # Errors
    /// [`Error::ReadOnly`], I/O errors (the old snapshot files stay in force).
    pub fn reclaim_snapshots(&self) -> Result<(u64, u64)> {
        self.inner
            .snapshots
            .reclaim(self.inner.options.snapshots_kept_per_stream)
    }

    /// Reclaims when the snapshot files hold many more snapshots than the policy keeps.
    fn maybe_reclaim_snapshots(&self) {
        let threshold = self.inner.options.snapshot_reclaim_threshold;
        if let Ok((count, _)) = self.inner.snapshots.stats()
            && threshold > 0
            && count >= threshold
        {
            // A failure leaves the old files in force; it is retried at the next save.
            let _ = self.reclaim_snapshots();
        }
    }
}
