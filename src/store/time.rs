//! Time travel: commit times, the position committed at a time, and reads and loads as of
//! a bound (a version, a position or a time).
//!
//! The log is its own time index for `$all`. Every append of format 2 carries its commit
//! time, commit times never decrease along the log, and every frame names its own position
//! under its CRC, so a frame boundary can be found from any byte offset. Finding the first
//! append committed at or after a time is then a binary search: over the segments by the
//! commit time of their first append, then over byte offsets inside one segment, each
//! probe reading the first frame after the offset.
//!
//! A stream's version as of a position or a time is searched on its index entries, which
//! carry each append's position and commit time (index tables of version 2): index
//! lookups only, then one frame read to confirm the answer against streams sharing the
//! stream's keys. Entries of version 1 tables have no commit time; for them the search
//! reads the frame's (remembered for later searches).

use std::ops::ControlFlow;
use std::time::SystemTime;

use super::aggregate::{Aggregate, Loaded};
use super::event::{self, Position, ResumeToken};
use super::lookup::Found;
use super::read::{self, AllEvents, StreamEvents};
use super::{Inner, Store};
use crate::error::Result;
use crate::format::{self, FrameKind, SEGMENT_HEADER_LEN};
use crate::index::Entry;

/// Below this many bytes, the search inside a segment walks frames instead of probing
/// (and the search for the last commit time looks back this far first).
const WALK_BYTES: u64 = 8 << 10;

/// Commit times a store remembers for its searches for a time over index entries that do
/// not carry one (version 1 tables; 16 bytes each, plus the map's overhead): enough for
/// the first dozen levels of the searches' binary trees, which every search over a stream
/// shares. Cleared when full.
pub(super) const COMMIT_TIMES_MAX: usize = 4096;

/// A bound for reads and loads "as of" a point in the past.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    /// Up to and including this stream version.
    Version(u64),
    /// Up to and including the append at this log position (appends at positions at or
    /// below it).
    Position(Position),
    /// Up to and including the appends committed at or before this time.
    Time(SystemTime),
}

/// A position or a time bound, as the search over a stream's appends compares them.
#[derive(Debug, Clone, Copy)]
enum Bound {
    /// The appends at positions at or below it.
    Position(u64),
    /// The appends committed at or before it (microseconds since the Unix epoch).
    Time(i64),
}

impl Bound {
    /// Whether the stream's frame `found` (read, and confirmed by its stream name) is
    /// within the bound.
    fn holds_for(self, found: &Found) -> bool {
        match self {
            Bound::Position(p) => found.entry.position <= p,
            Bound::Time(t_us) => found.frame.committed_at_us().unwrap_or(i64::MIN) <= t_us,
        }
    }
}

/// One events frame met by a search: where it starts and ends, and its commit time
/// (`i64::MIN` for format 1, whose frames have none: they count as committed before every
/// frame of format 2, which follow them in the log).
#[derive(Debug, Clone, Copy)]
struct Stamp {
    position: u64,
    end: u64,
    committed_at_us: i64,
}

impl Inner {
    /// The first events frame starting at or after `from` (any offset) and ending at or
    /// below `end`, in the segment holding `from` or a later one.
    fn first_stamp_from(&self, from: u64, end: u64) -> Result<Option<Stamp>> {
        self.walk_stamps(from, false, end, ControlFlow::Break)
    }

    /// Walks the events frames starting at or after `from` up to `end`, in order, until
    /// `visit` breaks (its value is returned). `from` may be any offset unless `exact`
    /// says a frame starts there; after the first frame, every frame must start where the
    /// one before it ends (a gap is damage, reported, never passed over), except in a
    /// rewritten segment, whose gaps are the frames a scavenge removed (its block map
    /// finds the next surviving frame, and its blocks are checked by their CRCs). Each step is one
    /// small read (the frame search reads 4 KiB around it): a probe of the binary search
    /// costs a frame, not a read-ahead buffer.
    fn walk_stamps<T>(
        &self,
        from: u64,
        exact: bool,
        end: u64,
        mut visit: impl FnMut(Stamp) -> ControlFlow<T>,
    ) -> Result<Option<T>> {
        let (mut at, mut exact) = (from, exact);
        while at < end {
            let found = self.log.frame_from_checked(at, end)?;
            if exact
                && found.as_ref().is_none_or(|(h, _)| h.position != at)
                && !self.log.is_rewritten_at(at)
            {
                // Not where the previous frame ended: unless the segment ends here, the
                // bytes at `at` are damaged.
                let segment_ends = found.is_none()
                    || self.log.is_segment_base(
                        found
                            .as_ref()
                            .map_or(at, |(h, _)| h.position)
                            .saturating_sub(SEGMENT_HEADER_LEN as u64),
                    );
                if !segment_ends {
                    return Err(self.corrupted_at(at, "no valid frame where the previous one ends"));
                }
            }
            let Some((header, bytes)) = found else {
                // Nothing more in this segment: the next one starts where it ends.
                match self.log.segment_bases().into_iter().find(|&b| b > at) {
                    Some(next) if next < end => {
                        at = next;
                        exact = false;
                        continue;
                    }
                    _ => return Ok(None),
                }
            };
            exact = true;
            let frame_end = header.position.saturating_add(header.frame_len());
            if header.kind == FrameKind::Events {
                let committed_at_us = format::decode_commit_time(&header, bytes.body())
                    .map_err(|e| self.corrupted_at(header.position, e))?
                    .unwrap_or(i64::MIN);
                let stamp = Stamp {
                    position: header.position,
                    end: frame_end,
                    committed_at_us,
                };
                if let ControlFlow::Break(t) = visit(stamp) {
                    return Ok(Some(t));
                }
            }
            at = frame_end;
        }
        Ok(None)
    }

    /// The commit time of the last append below `end` (`None` when there is none of
    /// format 2): where the writer's clock resumes at open, so that commit times never go
    /// back across a restart. Reads only the end of the log. `last_append`, when known,
    /// is the position of an append with no append after it below `end` (the last one
    /// the open replayed, or the index's last covered frame when it replayed none): its
    /// frame, already read by the open, is read again instead of searching windows back
    /// from the end.
    pub(super) fn last_commit_before(
        &self,
        end: u64,
        last_append: Option<u64>,
    ) -> Result<Option<i64>> {
        if let Some(at) = last_append.filter(|&p| p < end)
            && let Some(t) = self.last_commit_from(at, end)?
        {
            return Ok(t);
        }
        let bases = self.log.segment_bases();
        for (i, &base) in bases.iter().enumerate().rev() {
            let seg_end = bases.get(i + 1).copied().unwrap_or(end).min(end);
            if seg_end <= base {
                continue;
            }
            let mut window = WALK_BYTES;
            loop {
                let from = seg_end.saturating_sub(window).max(base);
                if let Some(t) = self.last_commit_from(from, seg_end)? {
                    return Ok(t);
                }
                if from == base {
                    break;
                }
                window = window.saturating_mul(4);
            }
        }
        Ok(None)
    }

    /// The commit time of the last append in `from..end` (`Some(None)`: one of format 1,
    /// which has none), or `None` when that range holds no append. Frame by frame, each
    /// found by the CRC-checked search: a damaged frame (in the part the index covers,
    /// which open does not check) is passed over here, and reported by the read or verify
    /// that meets it.
    fn last_commit_from(&self, from: u64, end: u64) -> Result<Option<Option<i64>>> {
        let (mut last, mut at) = (None, from);
        while let Some((header, bytes)) = self.log.frame_from(at, end)? {
            if header.kind == FrameKind::Events
                && let Ok(t) = format::decode_commit_time(&header, bytes.body())
            {
                last = Some(t);
            }
            at = header.position.saturating_add(header.frame_len());
        }
        Ok(last)
    }

    /// The position of the first append committed at or after `t_us` below `end`, or
    /// `end` when there is none.
    fn position_at(&self, t_us: i64, end: u64) -> Result<u64> {
        let bases: Vec<u64> = self
            .log
            .segment_bases()
            .into_iter()
            .filter(|&b| b < end)
            .collect();
        // Segments whose first append at or after their start was committed before `t`:
        // the answer is in the last of them, or is the first append after it. A segment
        // without appends (an upgraded store's emptied format-1 segment, one a scavenge
        // emptied, or the last one, just started) takes the key of the first append after
        // it (none: after every time), so that the keys never decrease along the log.
        let (mut lo, mut hi) = (0usize, bases.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let base = bases.get(mid).copied().unwrap_or(end);
            let key = self
                .first_stamp_from(base, end)?
                .map_or(i64::MAX, |s| s.committed_at_us);
            if key < t_us {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        if let Some(seg) = lo.checked_sub(1) {
            let base = bases.get(seg).copied().unwrap_or(end);
            let seg_end = bases.get(seg + 1).copied().unwrap_or(end);
            if let Some(p) = self.position_in_segment(t_us, base, seg_end)? {
                return Ok(p);
            }
        }
        // The first append of the next segment (the first segment when every one starts
        // at or after `t`).
        match bases.get(lo) {
            Some(&base) => Ok(self
                .first_stamp_from(base, end)?
                .map_or(end, |s| s.position)),
            None => Ok(end),
        }
    }

    /// Within one segment: the first append committed at or after `t_us`.
    fn position_in_segment(&self, t_us: i64, base: u64, seg_end: u64) -> Result<Option<u64>> {
        // Every append starting before `lo` was committed before `t`; the first append
        // starting at or after `hi` was committed at or after it, or there is none.
        let (mut lo, mut hi) = (base, seg_end);
        while hi.saturating_sub(lo) > WALK_BYTES {
            let mid = lo + (hi - lo) / 2;
            match self.first_stamp_from(mid, seg_end)? {
                Some(s) if s.position < hi && s.committed_at_us < t_us => lo = s.end,
                _ => hi = mid,
            }
        }
        self.walk_stamps(lo, lo != base, seg_end, |s| {
            if s.committed_at_us >= t_us {
                ControlFlow::Break(s.position)
            } else {
                ControlFlow::Continue(())
            }
        })
    }

    /// The last version of `stream` within `as_of` (visible below `visible`). A version
    /// bound is the answer itself; a position or a time bound is a binary search over the
    /// stream's appends on their index entries alone (each entry carries its position and
    /// its commit time), then confirmed with one frame read ([`Inner::confirm_bound`]).
    fn version_as_of(&self, stream: &str, as_of: AsOf, visible: u64) -> Result<Option<u64>> {
        let Some(current) = self.resolve_visible(stream, u64::MAX, visible)? else {
            return Ok(None);
        };
        let last = current.entry.last_version();
        // Versions below the first one a scavenge left have no entries and no frames: the
        // search is over the versions that survive. As of a bound before the first of
        // them, the stream has no version (what it had then is gone).
        let floor = self.registry.scavenged_floor(stream);
        let bound = match as_of {
            AsOf::Version(bound) => return Ok((bound >= floor).then(|| bound.min(last))),
            AsOf::Position(p) => Bound::Position(p.0),
            AsOf::Time(t) => Bound::Time(event::timestamp_us(t)),
        };
        // The stream's last append, read and confirmed by its name: within the bound, it
        // is the answer; if not, no version from its first on is.
        if bound.holds_for(&current) {
            return Ok(Some(last));
        }
        let (hash, check) = self.index.keys(stream);
        // Versions up to `ok` are within the bound (by the entries searched so far);
        // versions from `late` on are not.
        let (mut ok, mut late) = (None::<u64>, current.entry.first_version);
        loop {
            let start = ok.map_or(floor, |v| v.saturating_add(1));
            if start >= late {
                break;
            }
            let mid = start + (late - start) / 2;
            let entry = self
                .index
                .floor(hash, check, mid, &[])?
                .filter(|e| e.position < visible);
            let probed = match entry {
                Some(e) => Some((e, self.entry_within(&e, bound, visible)?)),
                None => None,
            };
            match probed {
                // Every version of the probed append is settled at once.
                Some((e, true)) => ok = Some(e.last_version().clamp(mid, late - 1)),
                Some((e, false)) => late = e.first_version.clamp(start, mid),
                None => late = mid,
            }
        }
        if self.confirm_bound(stream, ok, floor, last, bound, hash, check, visible)? {
            return Ok(ok);
        }
        // Misled by the entries of a stream sharing this one's keys (or by stale ones): the
        // search again, each probe confirmed through the stream's own frames.
        search_prefix(floor, last, |v| {
            Ok(self
                .resolve_visible(stream, v, visible)?
                .is_some_and(|f| bound.holds_for(&f)))
        })
    }

    /// Whether the append of `entry` is within `bound`: by its position, or by the commit
    /// time its entry records (read from its frame when the entry has none: entries of
    /// version 1 index tables).
    fn entry_within(&self, entry: &Entry, bound: Bound, visible: u64) -> Result<bool> {
        Ok(match bound {
            Bound::Position(p) => entry.position <= p,
            Bound::Time(t_us) => match entry.committed_at_us {
                Some(at) => at <= t_us,
                None => self.commit_time_at(entry.position, visible)? <= t_us,
            },
        })
    }

    /// Whether `found` (the answer of the search on the index entries: the last version of
    /// `stream` from `floor` on within `bound`, `None` for none) is right, though the entries
    /// searched may include those of another stream with the same keys. For `Some(v)` below the stream's
    /// `last` version, it holds when the stream's own frame holding `v` (read, and
    /// confirmed by its name) is within the bound and ends at `v`, and no entry with
    /// these keys that starts at `v + 1` is within it: the stream's append holding `v + 1`
    /// starts there (versions have no gaps), so it is after the bound, and so is every
    /// later one. One frame read, which the load that follows reads again from the page
    /// cache (it is the last one it replays).
    #[allow(clippy::too_many_arguments)]
    fn confirm_bound(
        &self,
        stream: &str,
        found: Option<u64>,
        floor: u64,
        last: u64,
        bound: Bound,
        hash: u64,
        check: u32,
        visible: u64,
    ) -> Result<bool> {
        let Some(v) = found else {
            // No version within the bound: the stream's first surviving append is after it.
            return Ok(!self
                .resolve_visible(stream, floor, visible)?
                .is_some_and(|f| bound.holds_for(&f)));
        };
        let Some(holding) = self.resolve_visible(stream, v, visible)? else {
            return Ok(false);
        };
        if !bound.holds_for(&holding) {
            return Ok(false);
        }
        if v >= last {
            return Ok(true);
        }
        if holding.entry.last_version() != v {
            return Ok(false);
        }
        let next = v.saturating_add(1);
        let mut seen = Vec::new();
        while let Some(e) = self.index.floor(hash, check, next, &seen)? {
            if e.first_version != next {
                break;
            }
            if e.position < visible && self.entry_within(&e, bound, visible)? {
                return Ok(false);
            }
            seen.push(e.position);
        }
        Ok(true)
    }

    /// The commit time of the events frame at `position` (`i64::MIN` for format 1):
    /// remembered from an earlier search, from the frame cache, or from the frame read and
    /// checked, its events left undecoded.
    fn commit_time_at(&self, position: u64, visible: u64) -> Result<i64> {
        if let Some(&t) = self.commit_times.lock().get(&position) {
            return Ok(t);
        }
        let cached = if self.options.frame_cache_bytes > 0 {
            self.frames
                .lock()
                .get_mut(&position)
                .map(|hit| hit.committed_at_us().unwrap_or(i64::MIN))
        } else {
            None
        };
        let t = match cached {
            Some(t) => t,
            None => {
                let (header, bytes) = self.log.read_frame(position, visible)?;
                if header.kind != FrameKind::Events {
                    return Err(
                        self.corrupted_at(position, "the index names a frame that holds no events")
                    );
                }
                format::decode_commit_time(&header, bytes.body())
                    .map_err(|e| self.corrupted_at(position, e))?
                    .unwrap_or(i64::MIN)
            }
        };
        let mut remembered = self.commit_times.lock();
        if remembered.len() >= COMMIT_TIMES_MAX {
            remembered.clear();
        }
        remembered.insert(position, t);
        Ok(t)
    }
}

/// The largest version in `first..=last` for which `within` holds, when the versions it
/// holds for form a prefix (`None` when it holds for none): a binary search.
fn search_prefix(
    first: u64,
    last: u64,
    mut within: impl FnMut(u64) -> Result<bool>,
) -> Result<Option<u64>> {
    let (mut lo, mut hi) = (first, last.saturating_add(1));
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if within(mid)? {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Ok(lo.checked_sub(1).filter(|_| lo > first))
}

impl Store {
    /// Where a reader of `$all` starts to see the appends committed at or after `time`:
    /// the position of the first of them, or the end of the log when there is none yet.
    /// Costs O(log n) frame reads (a binary search on the log's commit times), never a
    /// scan. Appends written by format 1 have no commit time and count as committed
    /// before every later append.
    ///
    /// # Errors
    /// Damage met by the search; I/O errors.
    pub fn position_at(&self, time: SystemTime) -> Result<Position> {
        let end = self.inner.visible();
        Ok(Position(
            self.inner.position_at(event::timestamp_us(time), end)?,
        ))
    }

    /// Every event committed at or after `since` (without it: from the start) and, with
    /// `until`, before `until`, in commit order: [`Store::read_all`] from
    /// [`Store::position_at`], stopped at the first append committed at or after `until`.
    ///
    /// # Errors
    /// As [`Store::position_at`] and [`Store::read_all`].
    pub fn read_all_between(
        &self,
        since: Option<SystemTime>,
        until: Option<SystemTime>,
    ) -> Result<AllEvents> {
        let from = match since {
            Some(t) => ResumeToken::at(self.position_at(t)?),
            None => ResumeToken::START,
        };
        let events = self.read_all(from)?;
        Ok(match until {
            Some(t) => events.until_committed(event::timestamp_us(t)),
            None => events,
        })
    }

    /// The version `stream` had as of `as_of`: its last version within the bound, or
    /// `None` when it had no event then. O(log n) index lookups. Versions a scavenge
    /// removed are not found: as of a time or position before the stream's first
    /// surviving append, the answer is `None`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for an invalid stream
    /// name; [`Error::StreamDeleted`](crate::Error::StreamDeleted) when the stream is hard
    /// deleted (as for [`Store::stream_version`]); damage or I/O errors.
    pub fn stream_version_as_of(&self, stream: &str, as_of: AsOf) -> Result<Option<u64>> {
        read::check_stream_name(stream)?;
        let visible = self.inner.visible();
        // Hard deleted: an error, as for every read of the stream.
        if self
            .inner
            .registry
            .rule_at(stream, visible)
            .is_some_and(|r| r.tombstoned)
        {
            return Err(crate::error::Error::StreamDeleted {
                stream: stream.to_string(),
            });
        }
        self.inner.version_as_of(stream, as_of, visible)
    }

    /// The version `stream` had at `time`: its last event committed at or before it.
    ///
    /// # Errors
    /// As [`Store::stream_version_as_of`].
    pub fn stream_version_at(&self, stream: &str, time: SystemTime) -> Result<Option<u64>> {
        self.stream_version_as_of(stream, AsOf::Time(time))
    }

    /// The events of `stream` from version `from` up to the bound `as_of`, in version
    /// order.
    ///
    /// # Errors
    /// As [`Store::stream_version_as_of`].
    pub fn read_stream_as_of(&self, stream: &str, from: u64, as_of: AsOf) -> Result<StreamEvents> {
        read::check_stream_name(stream)?;
        let lookup = self.lookup();
        // The stream's metadata in force now applies (a deleted or expired event is not
        // returned by a read of the past either); hard deleted: an error.
        let retention = self.inner.retention(stream, lookup.visible)?;
        let last = self.inner.version_as_of(stream, as_of, lookup.visible)?;
        Ok(match last {
            Some(last) => StreamEvents::forward_until(lookup, stream, from, last, retention),
            None => StreamEvents::forward_until(lookup, stream, 1, 0, retention),
        })
    }

    /// Loads aggregate `A` of `stream` as it was at `as_of`: from the latest usable
    /// snapshot at or below the bound (not only the latest one), then the events after it
    /// up to the bound. Saves no snapshot. The stream's metadata in force now applies, as
    /// for [`Store::load`]: while it may hide events, no snapshot is used.
    ///
    /// # Errors
    /// As [`Store::stream_version_as_of`]; errors reading the events (snapshot problems
    /// are reported in [`Loaded`]).
    pub fn load_as_of<A: Aggregate>(&self, stream: &str, as_of: AsOf) -> Result<Loaded<A>> {
        read::check_stream_name(stream)?;
        let lookup = self.lookup();
        let retention = self.inner.retention(stream, lookup.visible)?;
        let rules = self
            .inner
            .registry
            .rule_at(stream, lookup.visible)
            .filter(|r| r.hides_any());
        let bound = self.inner.version_as_of(stream, as_of, lookup.visible)?;
        let mut loaded = Loaded {
            state: A::default(),
            version: None,
            snapshot_version: None,
            replayed: 0,
            ignored_snapshots: Vec::new(),
            snapshot_saved: None,
            snapshot_error: None,
        };
        let Some(bound) = bound else {
            return Ok(loaded);
        };
        let (snap, ignored) = self
            .inner
            .snapshots
            .latest_at_or_below(stream, bound, |b| {
                if b.schema != A::SCHEMA {
                    Err(format!("schema {:?}, not {:?}", b.schema, A::SCHEMA))
                } else if A::decode(b.payload).is_none() {
                    Err("does not decode".into())
                } else {
                    Ok(())
                }
            })
            // Snapshot files that do not open (a newer format, I/O): a full replay.
            .unwrap_or_else(|e| (None, vec![format!("snapshots: {e}")]));
        loaded.ignored_snapshots = ignored;
        if let (Some(s), Some(_)) = (&snap, rules) {
            loaded.ignored_snapshots.push(format!(
                "snapshot at version {}: not used while the stream's metadata (max count, \
                 max age, truncate-before or a delete) hides events",
                s.version
            ));
        } else if let Some(s) = snap
            && let Some(decoded) = A::decode(&s.data)
        {
            loaded.state = decoded;
            loaded.snapshot_version = Some(s.version);
            loaded.version = Some(s.version);
        }
        let from = loaded.snapshot_version.map_or(0, |v| v + 1);
        let (mut state, mut version, mut replayed) = (loaded.state, loaded.version, 0u64);
        StreamEvents::forward_until(lookup, stream, from, bound, retention).for_each_view(|e| {
            state.apply(&e);
            version = Some(e.version);
            replayed += 1;
            ControlFlow::Continue(())
        })?;
        loaded.state = state;
        loaded.version = version;
        loaded.replayed = replayed;
        Ok(loaded)
    }
}
