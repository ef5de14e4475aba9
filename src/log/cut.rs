//! Cutting a log at either end: its tail at a frame boundary ([`Log::truncate_to`]) and
//! whole segments at its head ([`Log::remove_segments_before`]). The event log never does
//! either (its bytes are immutable once acknowledged); a replicated log does both: a
//! follower drops uncommitted entries that conflict with the leader's, and every node
//! drops the entries a snapshot covers.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Log;
use crate::error::{Error, Result};
use crate::segment::Segment;

// Only the cluster layer cuts a log.
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
impl Log {
    /// Cuts the log at `position`, which must be the position of a frame or the end of
    /// the log: that frame and everything after it are removed, durably, before this
    /// returns. Segments starting after the cut are removed (the newest first, so a crash
    /// in between leaves a prefix of the log, never a hole) and the directory synced; then
    /// the segment holding the cut is truncated there and synced, and becomes the active
    /// segment. Nothing that remains attests a position at or after the cut (a frame
    /// attests only positions below its own), so frames written there later are again a
    /// tail the recovery rule may cut.
    ///
    /// Readers must not hold frames at or after the cut: the bytes are gone.
    ///
    /// # Errors
    /// [`Error::ReadOnly`] on a read-only log; [`Error::InvalidArgument`] on a log made
    /// with [`Log::with_active_mapping`]; [`Error::Poisoned`] if the log is;
    /// [`Error::InvalidArgument`] when `position` is past the end, before the first frame,
    /// or not where a frame starts; otherwise the I/O error, which poisons the log.
    pub fn truncate_to(&self, position: u64) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        if self.map_active {
            return Err(Error::InvalidArgument(
                "a log whose active segment is read through a mapping is never cut".into(),
            ));
        }
        let _guard = self.write_lock.lock();
        if self.is_poisoned() {
            return Err(Error::Poisoned);
        }
        let end = self.written();
        if position > end {
            return Err(Error::InvalidArgument(format!(
                "cannot cut the log at {position}: it ends at {end}"
            )));
        }
        if position == end {
            return Ok(());
        }
        let segments = self.segments.read().clone();
        // The segment holding the cut: the last one whose first frame is at or before it.
        let idx = segments
            .iter()
            .rposition(|s| s.first_frame_position() <= position)
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "cannot cut the log at {position}: its first frame is after it"
                ))
            })?;
        let holder = segments
            .get(idx)
            .cloned()
            .ok_or_else(|| Error::InvalidArgument("no segment holds the cut".into()))?;
        // Only a frame boundary: a cut inside a frame would leave a torn frame below
        // positions that later frames attest.
        holder.read_frame(position, holder.file_len()?)?;

        for seg in segments.iter().skip(idx.saturating_add(1)).rev() {
            self.storage.remove(seg.path()).map_err(|e| {
                self.poison(Error::io(format!("remove {}", seg.path().display()), e))
            })?;
        }
        if segments.len() > idx.saturating_add(1) {
            self.storage
                .sync_dir(&self.dir)
                .map_err(|e| self.poison(Error::io(format!("sync {}", self.dir.display()), e)))?;
        }
        // A sealed segment may be mapped, and a mapping must never see its file shrink:
        // the cut goes through a fresh, unsealed handle that replaces it.
        let active = if holder.is_sealed() {
            let fresh = Segment::open(
                self.storage.as_ref(),
                holder.path(),
                holder.base(),
                self.kind,
                false,
            )?;
            if let Err(reason) = fresh.check_header()? {
                return Err(Error::corrupted(
                    holder.path(),
                    0,
                    format!("bad segment header: {reason}"),
                ));
            }
            Arc::new(fresh)
        } else {
            holder
        };
        active
            .truncate(position.saturating_sub(active.base()))
            .and_then(|()| active.sync())
            .map_err(|e| self.poison(e))?;
        {
            let mut list = self.segments.write();
            list.truncate(idx);
            list.push(active);
        }
        self.written.store(position, Ordering::Release);
        self.durable.fetch_min(position, Ordering::AcqRel);
        self.reserved.store(position, Ordering::Release);
        Ok(())
    }

    /// Removes the sealed segments that end at or before `position` (never the active
    /// one), the oldest first, then syncs the directory. Returns how many were removed.
    /// What remains is a contiguous suffix of the log at every step, so a crash in between
    /// leaves a log that opens. Readers holding a removed segment keep reading its bytes
    /// until they drop it.
    ///
    /// # Errors
    /// [`Error::ReadOnly`] on a read-only log; otherwise the I/O error of a removal or of
    /// the directory sync (the log is not poisoned: nothing it holds changed).
    pub fn remove_segments_before(&self, position: u64) -> Result<usize> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        let _guard = self.write_lock.lock();
        let segments = self.segments.read().clone();
        // A segment ends where the next one starts; the active (last) one is kept.
        let removable = segments
            .windows(2)
            .take_while(|pair| pair.get(1).is_some_and(|next| next.base() <= position))
            .count();
        for (done, seg) in segments.iter().take(removable).enumerate() {
            if let Err(e) = self.storage.remove(seg.path()) {
                self.segments.write().drain(..done);
                return Err(Error::io(format!("remove {}", seg.path().display()), e));
            }
        }
        self.segments.write().drain(..removable);
        if removable > 0 {
            self.storage
                .sync_dir(&self.dir)
                .map_err(|e| Error::io(format!("sync {}", self.dir.display()), e))?;
        }
        Ok(removable)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::format::{self, FRAME_HEADER_LEN, SEGMENT_KIND_RAFT};
    use crate::io::sim::SimStorage;
    use crate::log::Known;

    /// Frames of a log: positions and bodies.
    type Frames = Vec<(u64, Vec<u8>)>;

    fn open(storage: &SimStorage, dir: &Path) -> (Log, Frames) {
        try_open(storage, dir).unwrap()
    }

    /// Opens the log in `dir` (1 KiB segments); returns it and its frames' positions and
    /// bodies.
    fn try_open(storage: &SimStorage, dir: &Path) -> Result<(Log, Frames)> {
        let mut frames = Vec::new();
        let (log, _) = Log::open(
            Arc::new(storage.clone()),
            dir,
            SEGMENT_KIND_RAFT,
            1024,
            false,
            None,
            |_| Known::default(),
            |_, h, bytes| {
                frames.push((h.position, bytes.body().to_vec()));
                Ok(())
            },
        )?;
        Ok((log, frames))
    }

    /// Appends one record frame per body, synced; returns their positions.
    fn append(log: &Log, bodies: impl IntoIterator<Item = Vec<u8>>) -> Vec<u64> {
        let mut appender = log.appender();
        let mut positions = Vec::new();
        for body in bodies {
            let (position, out) = appender.reserve((FRAME_HEADER_LEN + body.len()) as u64);
            format::encode_record_frame(out, position, log.durable(), &body);
            positions.push(position);
        }
        log.write(&appender.take()).unwrap();
        log.sync().unwrap();
        positions
    }

    fn body(i: u8) -> Vec<u8> {
        vec![i; 200]
    }

    #[test]
    fn truncate_to_cuts_at_a_frame_across_segments_durably() {
        let storage = SimStorage::new(7);
        let dir = Path::new("/raft");
        crate::io::create_dir_durably(&storage, dir).unwrap();
        let (log, _) = open(&storage, dir);
        let positions = append(&log, (0..20).map(body));
        let segments = log.segment_bases().len();
        assert!(segments >= 4, "{segments} segments");

        // Not a frame boundary, past the end: refused, nothing changed.
        assert!(matches!(
            log.truncate_to(positions[5] + 1),
            Err(Error::Corrupted { .. } | Error::InvalidArgument(_))
        ));
        assert!(matches!(
            log.truncate_to(log.written() + 1),
            Err(Error::InvalidArgument(_))
        ));
        assert!(!log.is_poisoned());

        // Cut at frame 6 (segments back), then append other frames after it.
        log.truncate_to(positions[6]).unwrap();
        assert_eq!(log.written(), positions[6]);
        assert!(log.segment_bases().len() < segments);
        append(&log, (100..103).map(body));
        drop(log);

        // A power cut now loses nothing that was synced, and the cut stays cut.
        storage.crash();
        let (log, frames) = open(&storage, dir);
        let got: Vec<u8> = frames.iter().map(|(_, b)| b[0]).collect();
        assert_eq!(got, [0, 1, 2, 3, 4, 5, 100, 101, 102]);
        assert_eq!(frames[6].0, positions[6]);

        // Removing whole segments from the head keeps a log that opens.
        let keep_from = frames[4].0;
        let removed = log.remove_segments_before(keep_from).unwrap();
        assert!(removed > 0);
        assert!(log.segment_bases()[0] <= keep_from);
        drop(log);
        storage.crash();
        let (_, frames) = open(&storage, dir);
        let first = frames.first().unwrap().1[0];
        assert!(first <= 4, "{first}");
        assert_eq!(frames.last().unwrap().1[0], 102);
    }

    #[test]
    fn a_log_that_maps_its_active_segment_is_never_cut() {
        let storage = SimStorage::new(8);
        let dir = Path::new("/events");
        crate::io::create_dir_durably(&storage, dir).unwrap();
        let (log, _) = open(&storage, dir);
        let log = log.with_active_mapping();
        let positions = append(&log, (0..3).map(body));
        assert!(matches!(
            log.truncate_to(positions[1]),
            Err(Error::InvalidArgument(_))
        ));
        assert_eq!(log.written(), log.durable());
        assert!(log.written() > positions[2]);
    }

    #[test]
    fn an_open_after_a_crash_syncs_nothing_when_the_active_segment_holds_only_its_header() {
        let storage = SimStorage::new(9);
        let dir = Path::new("/log");
        crate::io::create_dir_durably(&storage, dir).unwrap();
        drop(open(&storage, dir));
        storage.crash();
        // Any sync now fails: the open must not need one.
        storage.fail_next_sync(None).unwrap();
        let (log, frames) = open(&storage, dir);
        assert!(frames.is_empty());
        assert!(!log.is_poisoned());
        storage.clear_faults();
        // The log takes frames, and what it syncs survives the next crash.
        append(&log, (1..3).map(body));
        drop(log);
        storage.crash();
        let (_, frames) = open(&storage, dir);
        let got: Vec<u8> = frames.iter().map(|(_, b)| b[0]).collect();
        assert_eq!(got, [1, 2]);
    }

    #[test]
    fn an_open_after_a_crash_leaves_a_tail_past_the_durable_part_to_the_next_sync() {
        let storage = SimStorage::new(10);
        let dir = Path::new("/log");
        crate::io::create_dir_durably(&storage, dir).unwrap();
        let (log, _) = open(&storage, dir);
        append(&log, (1..3).map(body));
        drop(log);
        storage.crash();
        // Nothing attests the last frame (no later frame or index covers it): the open
        // does not count it durable and does not sync it; the next sync does, and a
        // failure there poisons the log.
        storage.fail_next_sync(None).unwrap();
        let (log, frames) = open(&storage, dir);
        assert_eq!(frames.len(), 2);
        assert!(log.durable() < log.written());
        assert!(log.sync().is_err());
        assert!(log.is_poisoned());
    }
}
