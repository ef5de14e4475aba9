//! Stream metadata over the protocol: clients read and write the metadata of stream `S`
//! as the events of the stream `$$S` (one JSON object each, KurrentDB's `$maxCount`,
//! `$maxAge`, `$tb` and user keys). The server maps them onto
//! [`Store::set_stream_metadata`] and [`Store::stream_metadata`]: an append to `$$S`
//! replaces `S`'s metadata (its expected revision is the metadata version), and a read of
//! `$$S` answers the current metadata as the stream's one readable event, at the metadata
//! version.

use std::collections::HashMap;

use tonic::Status;

use super::convert;
use super::proto::event_store::client::streams::read_resp::read_event::RecordedEvent;
use crate::{AppendResult, Error, EventId, ExpectedVersion, NewEvent, Store, StreamMetadata};

/// The prefix of a metadata stream's name.
const PREFIX: &str = "$$";

/// The stream whose metadata `stream` is, when it is a metadata stream (`$$S` → `S`).
pub(super) fn target(stream: &str) -> Option<&str> {
    stream.strip_prefix(PREFIX).filter(|s| !s.is_empty())
}

/// Replaces `target`'s metadata with the last of `events` (earlier ones would be replaced
/// at once), if its metadata is at `expected`.
///
/// # Errors
/// [`Error::InvalidArgument`] when the event's data is not metadata JSON; the errors of
/// [`Store::set_stream_metadata`].
pub(super) fn set(
    store: &Store,
    target: &str,
    expected: ExpectedVersion,
    events: &[NewEvent],
) -> crate::Result<AppendResult> {
    let Some(last) = events.last() else {
        return Err(Error::InvalidArgument(
            "an append to a metadata stream carries the metadata".into(),
        ));
    };
    let metadata = StreamMetadata::from_json(&last.data)?;
    store.set_stream_metadata(target, expected, &metadata)
}

/// The version of `target`'s metadata, `None` when it never had any.
///
/// # Errors
/// Those of [`Store::stream_metadata`].
pub(super) fn version(store: &Store, target: &str) -> crate::Result<Option<u64>> {
    Ok(store.stream_metadata(target)?.metadata_version)
}

/// `target`'s current metadata as the one event of its metadata stream `stream`, when
/// it has any.
///
/// # Errors
/// [`Error::StreamDeleted`] when `target` is hard deleted; those of
/// [`Store::stream_metadata`].
pub(super) fn read(
    store: &Store,
    stream: &str,
    target: &str,
    uuid_as_string: bool,
) -> Result<Option<RecordedEvent>, Status> {
    let m = store
        .stream_metadata(target)
        .map_err(|e| convert::status(&e))?;
    if m.tombstoned {
        return Err(convert::status(&Error::StreamDeleted {
            stream: target.to_owned(),
        }));
    }
    let Some(version) = m.metadata_version else {
        return Ok(None);
    };
    let mut metadata = HashMap::with_capacity(3);
    metadata.insert("type".to_owned(), crate::METADATA_EVENT.to_owned());
    metadata.insert("content-type".to_owned(), "application/json".to_owned());
    metadata.insert("created".to_owned(), convert::now_ticks().to_string());
    // The change's own id and position are not kept with the metadata: the id is derived
    // from the version (stable across reads), and the position is 0.
    let mut id = [0u8; 16];
    id[8..].copy_from_slice(&version.to_le_bytes());
    Ok(Some(RecordedEvent {
        id: Some(convert::uuid(EventId(id), uuid_as_string)),
        stream_identifier: Some(convert::stream_identifier(stream)),
        stream_revision: version,
        prepare_position: 0,
        commit_position: 0,
        metadata,
        custom_metadata: Vec::new(),
        data: m.to_json(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_double_dollar_names_with_a_stream_are_metadata_streams() {
        assert_eq!(target("$$order-1"), Some("order-1"));
        assert_eq!(target("$$"), None);
        assert_eq!(target("$order-1"), None);
        assert_eq!(target("order-1"), None);
    }
}
