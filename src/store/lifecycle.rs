//! A stream's lifecycle through the store: soft delete, hard delete (tombstone), and its
//! metadata. Each change is one event of the system stream
//! [`METADATA_STREAM`](super::METADATA_STREAM), appended like any other (same writer lock,
//! same group commit, same durability), so a change and a concurrent append are ordered
//! like two appends.

use std::sync::Arc;

use super::event::{self, AppendResult, EventId, ExpectedVersion, Position};
use super::metadata::{
    ERASED_EVENT, METADATA_EVENT, METADATA_STREAM, StreamMetadata, TOMBSTONE_EVENT,
    encode_erased_event, encode_metadata_event, encode_tombstone_event,
};
use super::read::check_stream_name;
use super::writer::expected_matches;
use super::{Inner, Store};
use crate::error::{Error, Result};
use crate::format::EventRecord;

/// Where a delete was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeleteResult {
    /// The position in `$all` of the delete's record (an event of
    /// [`METADATA_STREAM`](crate::METADATA_STREAM)).
    pub position: Position,
}

/// One change of a stream's lifecycle.
pub(crate) enum Change<'a> {
    /// New metadata, expected at a metadata version.
    Metadata(&'a StreamMetadata),
    /// Soft delete, expected at a stream version.
    Delete,
    /// Hard delete, expected at a stream version.
    Tombstone,
    /// Hard delete recorded without the stream's name (an erasure), expected at a stream
    /// version; allowed after a tombstone.
    Erase,
}

impl Store {
    /// Soft-deletes `stream`: from now on it reads as empty (its events are hidden by a
    /// `truncate_before` of its last version + 1), and [`Store::stream_version`] is
    /// `None`, so an append expecting [`ExpectedVersion::NoStream`] re-creates it; its
    /// versions then go on after the old last version (as in KurrentDB), and only the new
    /// events are read. The other metadata of the stream is kept.
    ///
    /// `expected` is checked against the stream's version atomically with the delete
    /// (under the writer's lock, like an append), and the delete is as durable as an
    /// append when this returns (see [`Durability`](crate::Durability)).
    ///
    /// # Errors
    /// - [`Error::WrongExpectedVersion`] when the stream is not at `expected`;
    /// - [`Error::StreamDeleted`] when it is hard deleted;
    /// - [`Error::InvalidArgument`] for an empty or reserved (`$`-prefixed) stream name;
    /// - [`Error::TooLarge`] for a name over [`Options::max_stream_name_bytes`](crate::Options);
    /// - [`Error::ReadOnly`], [`Error::Closed`], [`Error::Poisoned`], [`Error::Io`] as
    ///   for [`Store::append`].
    pub fn delete_stream(&self, stream: &str, expected: ExpectedVersion) -> Result<DeleteResult> {
        let r = self.change(stream, expected, Change::Delete)?;
        Ok(DeleteResult {
            position: r.position,
        })
    }

    /// Hard-deletes `stream` (a tombstone): from now on every append to it, every read of
    /// it (stream reads, subscriptions, loads, [`Store::stream_version`]) and every
    /// further delete or metadata change returns [`Error::StreamDeleted`], and `$all`
    /// passes over its events. It survives reopening and crashes like an append: when this
    /// returns under [`Durability::Sync`](crate::Durability::Sync), the tombstone is on disk.
    ///
    /// # Errors
    /// As [`Store::delete_stream`].
    pub fn tombstone_stream(
        &self,
        stream: &str,
        expected: ExpectedVersion,
    ) -> Result<DeleteResult> {
        let r = self.change(stream, expected, Change::Tombstone)?;
        Ok(DeleteResult {
            position: r.position,
        })
    }

    /// Replaces `stream`'s metadata with `metadata` (its rules and user metadata; the
    /// reported fields are ignored), if the stream's metadata is at version `expected`
    /// (as KurrentDB checks the revision of `$$stream`): [`ExpectedVersion::NoStream`]
    /// for a stream that never had metadata, or the `metadata_version` that
    /// [`Store::stream_metadata`] reported. Reads honour the new rules at once. Returns
    /// where the change was recorded, with the new metadata version as its first and last
    /// version.
    ///
    /// A soft delete is a metadata change too (it sets `truncate_before`): lowering
    /// `truncate_before` or removing it makes deleted events readable again, since
    /// nothing is removed from disk yet.
    ///
    /// # Errors
    /// - [`Error::WrongExpectedVersion`] when the metadata is not at `expected` (its
    ///   `actual` is the metadata version);
    /// - [`Error::InvalidArgument`] for a value [`StreamMetadata::check`] refuses, or an
    ///   empty or reserved stream name;
    /// - the other errors of [`Store::delete_stream`].
    pub fn set_stream_metadata(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        metadata: &StreamMetadata,
    ) -> Result<AppendResult> {
        self.change(stream, expected, Change::Metadata(metadata))
    }

    /// The metadata of `stream` as readers see it now, with its version and deleted
    /// state: the defaults (no rules, no version) for a stream that never had any. A
    /// hard-deleted stream reports `tombstoned` (and no error).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty stream name; I/O errors and damage met
    /// while looking up the stream's last version.
    pub fn stream_metadata(&self, stream: &str) -> Result<StreamMetadata> {
        check_stream_name(stream)?;
        let visible = self.visible();
        let Some(record) = self.inner.registry.at(stream, visible) else {
            return Ok(StreamMetadata::default());
        };
        let mut m = record.metadata.clone();
        m.metadata_version = Some(record.version);
        m.tombstoned = record.tombstoned;
        if !record.tombstoned && m.truncate_before.is_some() {
            let last = self
                .inner
                .resolve_visible(stream, u64::MAX, visible)?
                .map(|f| f.entry.last_version());
            m.deleted = last.is_some() && record.rule().effective_last(last).is_none();
        }
        Ok(m)
    }

    /// Records the erasure of `stream` (see [`Store::erase_stream`]).
    pub(super) fn erase_record(&self, stream: &str, expected: ExpectedVersion) -> Result<()> {
        self.change(stream, expected, Change::Erase).map(|_| ())
    }

    /// Records `change` of `stream` in the system stream, under the writer's lock, as an
    /// event with a new id.
    fn change(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        change: Change<'_>,
    ) -> Result<AppendResult> {
        self.change_with_id(stream, expected, change, EventId::new())
    }

    /// Records `change` of `stream` as [`Store::delete_stream`],
    /// [`Store::tombstone_stream`] or [`Store::set_stream_metadata`] do, with `id` as the
    /// id of its event in the system stream: a replicated log fixes the id when the
    /// change is proposed, so every replica writes the same record and a replica that
    /// applies the change again after a crash recognises it by its id. The metadata of a
    /// [`Change::Metadata`] is checked here as [`Store::set_stream_metadata`] does.
    ///
    /// # Errors
    /// As [`Store::delete_stream`] and [`Store::set_stream_metadata`].
    pub(crate) fn change_with_id(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        change: Change<'_>,
        id: EventId,
    ) -> Result<AppendResult> {
        if let Change::Metadata(metadata) = &change {
            metadata.check()?;
        }
        let inner = &*self.inner;
        check_stream_name(stream)?;
        if stream.starts_with('$') {
            return Err(Error::InvalidArgument(format!(
                "stream names starting with '$' are reserved (no metadata or deletes): \
                 {stream:?}"
            )));
        }
        if stream.len() > inner.options.max_stream_name_bytes {
            return Err(Error::TooLarge {
                what: "max_stream_name_bytes",
                size: stream.len() as u64,
                limit: inner.options.max_stream_name_bytes as u64,
            });
        }
        if inner.options.read_only {
            return Err(Error::ReadOnly);
        }
        inner.index_room()?;
        let now_us = event::timestamp_us(inner.options.clock.now());
        let (result, end) = {
            let mut writer = inner.writer.lock();
            inner.check_writable()?;
            let durable = inner.log.durable();
            let record = inner.registry.latest(stream);
            let record_pending = record.as_ref().is_some_and(|r| r.position >= durable);
            let erasing_tombstoned = matches!(change, Change::Erase)
                && !inner.registry.is_erased(stream)
                && record.as_ref().is_some_and(|r| r.tombstoned);
            if record.as_ref().is_some_and(|r| r.tombstoned) && !erasing_tombstoned {
                let deleted = Error::StreamDeleted {
                    stream: stream.to_string(),
                };
                return Err(inner.conflict_after_commit(writer, record_pending, deleted));
            }
            let current = record
                .as_ref()
                .map(|r| r.metadata.clone())
                .unwrap_or_default();
            let (event_type, data) = match change {
                Change::Metadata(new) => {
                    let actual = record.as_ref().map(|r| r.version);
                    if !expected_matches(expected, actual) {
                        let conflict = Error::WrongExpectedVersion {
                            stream: stream.to_string(),
                            expected,
                            actual,
                        };
                        return Err(inner.conflict_after_commit(writer, record_pending, conflict));
                    }
                    let stored = StreamMetadata {
                        metadata_version: None,
                        deleted: false,
                        tombstoned: false,
                        ..new.clone()
                    };
                    (METADATA_EVENT, encode_metadata_event(stream, &stored))
                }
                Change::Delete | Change::Tombstone | Change::Erase => {
                    let state = inner.stream_state(&mut writer, stream)?;
                    let last = state.map(|s| s.last_version());
                    let actual = record
                        .as_ref()
                        .map_or(last, |r| r.rule().effective_last(last));
                    if !erasing_tombstoned && !expected_matches(expected, actual) {
                        let conflict = Error::WrongExpectedVersion {
                            stream: stream.to_string(),
                            expected,
                            actual,
                        };
                        let pending =
                            record_pending || state.is_some_and(|s| s.position >= durable);
                        return Err(inner.conflict_after_commit(writer, pending, conflict));
                    }
                    if matches!(change, Change::Erase) {
                        (ERASED_EVENT, encode_erased_event(inner.index.keys(stream)))
                    } else if matches!(change, Change::Tombstone) {
                        (TOMBSTONE_EVENT, encode_tombstone_event(stream))
                    } else {
                        let deleted = StreamMetadata {
                            truncate_before: last
                                .map(|l| l.saturating_add(1))
                                .or(current.truncate_before),
                            ..current
                        };
                        (METADATA_EVENT, encode_metadata_event(stream, &deleted))
                    }
                }
            };
            let records = [EventRecord {
                id: id.0,
                timestamp_us: now_us,
                schema_version: 0,
                event_type,
                metadata: &[],
                data: &data,
            }];
            let frame_len = inner.options.check_records(METADATA_STREAM, &records)?;
            let system = inner.stream_state(&mut writer, METADATA_STREAM)?;
            let first_version = system.map_or(0, |s| s.last_version().saturating_add(1));
            let (position, end) = inner.encode_append(
                &mut writer,
                METADATA_STREAM,
                first_version,
                &records,
                frame_len,
            )?;
            inner
                .registry
                .apply_event(position, event_type, &data, inner.visible())
                .map_err(|why| {
                    Error::InvalidArgument(format!("stream metadata for {stream:?}: {why}"))
                })?;
            let version = record.map_or(0, |r| r.version.saturating_add(1));
            let result = AppendResult {
                first_version: version,
                last_version: version,
                position: Position(position),
                deduplicated: false,
            };
            (result, end)
        };
        inner.after_append(end)?;
        Ok(result)
    }
}

impl Inner {
    /// Reads the system stream of stream metadata below `visible` into the registry
    /// (at open).
    ///
    /// # Errors
    /// Errors reading the stream; [`Error::Corrupted`] for an event in it that the store
    /// did not write.
    pub(super) fn load_registry(self: &Arc<Self>, visible: u64) -> Result<()> {
        // Walked through its index entries rather than as a stream: a scavenge may have
        // removed the records of erased streams from its middle (versions with gaps).
        let (hash, check) = self.index.keys(METADATA_STREAM);
        let mut after = crate::index::Entry {
            hash,
            first_version: 0,
            position: 0,
            count: 0,
            check,
            committed_at_us: None,
        };
        loop {
            let batch =
                self.index
                    .entries_after(hash, check, after.first_version, after.position, 256)?;
            let Some(last) = batch.last() else {
                return Ok(());
            };
            after = *last;
            for entry in batch {
                if entry.position >= visible {
                    continue;
                }
                let frame = match self.frame_at(entry.position, visible) {
                    Ok(frame) => frame,
                    // An entry of a frame a scavenge removed (the index is rewritten
                    // after the segments): nothing to take in.
                    Err(Error::Scavenged { .. }) => continue,
                    Err(e) => return Err(e),
                };
                if frame.stream() != METADATA_STREAM {
                    continue;
                }
                for i in 0..frame.len() {
                    let Some(e) = frame.view(i) else { continue };
                    self.registry
                        .apply_event(entry.position, e.event_type, e.data, visible)
                        .map_err(|why| {
                            self.corrupted_at(
                                entry.position,
                                format!("event {} of {METADATA_STREAM}: {why}", e.version),
                            )
                        })?;
                }
            }
        }
    }

    /// Takes in the events of a frame of the system stream (a follower indexing the
    /// writer's frames).
    pub(super) fn apply_metadata_frame(
        &self,
        header: &crate::format::FrameHeader,
        body: &[u8],
        settled: u64,
    ) -> Result<()> {
        let position = header.position;
        let body = crate::format::decode_events_body(header, body)
            .map_err(|e| self.corrupted_at(position, e))?;
        for e in &body.events {
            self.registry
                .apply_event(position, e.event_type, e.data, settled)
                .map_err(|why| {
                    self.corrupted_at(position, format!("an event of {METADATA_STREAM}: {why}"))
                })?;
        }
        Ok(())
    }
}
