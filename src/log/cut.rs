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
    /// [`Error::ReadOnly`] on a read-only log; [`Error::Poisoned`] if the log is;
    /// [`Error::InvalidArgument`] when `position` is past the end, before the first frame,
    /// or not where a frame starts; otherwise the I/O error, which poisons the log.
    pub fn truncate_to(&self, position: u64) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly);
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
