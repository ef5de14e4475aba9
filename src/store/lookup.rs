//! Finding a stream's frames: index candidates confirmed by the stream name in the frame,
//! visibility (what readers may see), and the decoded frame cache.

use std::fmt;
use std::sync::Arc;

use super::frame::DecodedFrame;
use super::metadata::{Retention, Rule};
use super::{Durability, Inner};
use crate::error::{Error, Result};
use crate::index::Entry;

/// A frame of a stream, found through the index and confirmed by its stream name.
#[derive(Debug)]
pub(crate) struct Found {
    pub(crate) entry: Entry,
    pub(crate) frame: Arc<DecodedFrame>,
}

/// What a stream reader needs: the frame of a stream holding a version, confirmed by its
/// stream name, among the frames below `visible`.
pub(crate) trait FrameLookup: Send + Sync + fmt::Debug {
    fn resolve(&self, stream: &str, version: u64, visible: u64) -> Result<Option<Found>>;
    /// The index entry that may be `stream`'s frame holding `version` (the greatest
    /// candidate at or below it; not confirmed by reading the frame).
    fn floor_entry(&self, stream: &str, version: u64) -> Result<Option<Entry>>;
    /// Index entries that may be `stream`'s and come after `after` in key order (a batch
    /// of about `limit`; empty when there are no more).
    fn entries_after(&self, stream: &str, after: &Entry, limit: usize) -> Result<Vec<Entry>>;
    /// The frame `entry` points at, if it is below `visible` and `stream`'s.
    fn read_entry(&self, stream: &str, entry: Entry, visible: u64) -> Result<Option<Found>>;
    /// The stream metadata's rule for `stream` as readers below `visible` apply it.
    fn rule(&self, stream: &str, visible: u64) -> Option<Rule>;
    /// Now, by the store's clock, in microseconds since the Unix epoch (ages are counted
    /// from it).
    fn now_us(&self) -> i64;
    /// The frames of `entries` (which a reader is about to read, in order) that the frame
    /// cache holds whole below `visible`, looked up under one lock (`None` for the
    /// others); those not cached are asked of the storage all at once, so that a cold read
    /// waits for the disk about once instead of once per frame.
    fn cached_frames(&self, entries: &[Entry], visible: u64) -> Vec<Option<Arc<DecodedFrame>>>;
}

/// A reader's view: the store and the visibility bound at the reader's creation.
#[derive(Debug, Clone)]
pub(crate) struct Lookup {
    pub(crate) inner: Arc<dyn FrameLookup>,
    pub(crate) visible: u64,
    /// Applied to every event handed out.
    pub(crate) upcasters: super::Upcasters,
}

impl FrameLookup for Inner {
    fn now_us(&self) -> i64 {
        super::event::timestamp_us(self.options.clock.now())
    }

    fn resolve(&self, stream: &str, version: u64, visible: u64) -> Result<Option<Found>> {
        self.resolve_visible(stream, version, visible)
    }

    fn floor_entry(&self, stream: &str, version: u64) -> Result<Option<Entry>> {
        let (hash, check) = self.index.keys(stream);
        self.index.floor(hash, check, version, &[])
    }

    fn entries_after(&self, stream: &str, after: &Entry, limit: usize) -> Result<Vec<Entry>> {
        let (hash, check) = self.index.keys(stream);
        self.index
            .entries_after(hash, check, after.first_version, after.position, limit)
    }

    fn read_entry(&self, stream: &str, entry: Entry, visible: u64) -> Result<Option<Found>> {
        if entry.position >= visible {
            return Ok(None);
        }
        let frame = match self.frame_at(entry.position, visible) {
            Ok(frame) => frame,
            // An entry left by a scavenge a crash interrupted: no frame there any more.
            Err(Error::Scavenged { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok((frame.stream() == stream).then_some(Found { entry, frame }))
    }

    fn rule(&self, stream: &str, visible: u64) -> Option<Rule> {
        self.registry.rule_at(stream, visible)
    }

    fn cached_frames(&self, entries: &[Entry], visible: u64) -> Vec<Option<Arc<DecodedFrame>>> {
        let mut missing = Vec::new();
        let found = {
            let mut cached = self.frames.lock();
            entries
                .iter()
                .map(|e| {
                    let hit = cached
                        .get_mut(&e.position)
                        .filter(|f| e.position.saturating_add(f.header().frame_len()) <= visible)
                        .map(|f| Arc::clone(f));
                    if hit.is_none() && e.position < visible {
                        missing.push(e.position);
                    }
                    hit
                })
                .collect()
        };
        // One frame is read right away anyway: a hint would only add a system call.
        if missing.len() >= 2 {
            missing.sort_unstable();
            self.log.will_read_frames(&missing);
        }
        found
    }
}

impl Inner {
    /// Appends are visible to readers up to here.
    pub(super) fn visible(&self) -> u64 {
        match self.options.durability {
            Durability::Sync => self.log.durable(),
            _ => self.log.written(),
        }
    }

    /// What a stream reader created now, seeing below `visible`, keeps of `stream`
    /// (`None`: everything).
    ///
    /// # Errors
    /// [`Error::StreamDeleted`] for a hard-deleted stream; errors looking up its last
    /// version (for a `max_count` rule).
    pub(super) fn retention(&self, stream: &str, visible: u64) -> Result<Option<Retention>> {
        let Some(rule) = self.registry.rule_at(stream, visible) else {
            return Ok(None);
        };
        if rule.tombstoned {
            return Err(Error::StreamDeleted {
                stream: stream.to_string(),
            });
        }
        let last = match rule.max_count {
            Some(_) => self
                .resolve_visible(stream, u64::MAX, visible)?
                .map(|f| f.entry.last_version()),
            None => None,
        };
        let now_us = super::event::timestamp_us(self.options.clock.now());
        Ok(Retention::new(&rule, last, now_us))
    }

    /// `Error::Corrupted` for the frame at `position`, naming its file and file offset.
    pub(super) fn corrupted_at(&self, position: u64, reason: impl std::fmt::Display) -> Error {
        let (file, offset) = self.log.locate(position);
        Error::corrupted(file, offset, reason.to_string())
    }

    /// Finds the frame of `stream` holding `version` (or, for `u64::MAX`, its last frame)
    /// through the index, confirming each candidate by the stream name in the frame that
    /// `read` returns (`None` for a frame that is not to be seen). Candidates of colliding
    /// streams are skipped. `None` when the stream has no frame holding `version` (for
    /// `u64::MAX`: no frame at all).
    pub(super) fn resolve(
        &self,
        stream: &str,
        version: u64,
        read: impl Fn(u64) -> Result<Option<Arc<DecodedFrame>>>,
    ) -> Result<Option<Found>> {
        let (hash, check) = self.index.keys(stream);
        let mut exclude = Vec::new();
        while let Some(entry) = self.index.floor(hash, check, version, &exclude)? {
            if let Some(frame) = read(entry.position)?
                && frame.stream() == stream
            {
                // The stream's frame at or below `version`: it holds `version` only if
                // the version is not past its last event.
                let holds = version == u64::MAX || entry.holds(version);
                return Ok(holds.then_some(Found { entry, frame }));
            }
            exclude.push(entry.position);
        }
        Ok(None)
    }

    /// [`Inner::resolve`] for readers: only frames below `visible`.
    pub(super) fn resolve_visible(
        &self,
        stream: &str,
        version: u64,
        visible: u64,
    ) -> Result<Option<Found>> {
        self.resolve(stream, version, |pos| {
            if pos >= visible {
                return Ok(None);
            }
            match self.frame_at(pos, visible) {
                Ok(frame) => Ok(Some(frame)),
                Err(Error::Scavenged { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        })
    }

    /// The events frame at `position` (ending at or below `limit`), decoded: from the
    /// frame cache, or read, checked, decoded and cached.
    pub(super) fn frame_at(&self, position: u64, limit: u64) -> Result<Arc<DecodedFrame>> {
        if self.options.frame_cache_bytes > 0
            && let Some(hit) = self.frames.lock().get_mut(&position)
            && position.saturating_add(hit.header().frame_len()) <= limit
        {
            return Ok(Arc::clone(hit));
        }
        let (header, bytes) = self.log.read_frame(position, limit)?;
        let frame = Arc::new(
            DecodedFrame::decode(header, bytes).map_err(|e| self.corrupted_at(position, e))?,
        );
        if self.options.frame_cache_bytes > 0 {
            let weight = frame.weight();
            self.frames
                .lock()
                .insert(position, Arc::clone(&frame), weight);
        }
        Ok(frame)
    }
}
