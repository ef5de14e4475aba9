//! Between the protocol's values and streamlog's: event ids, expected versions, positions,
//! recorded events, and errors as gRPC statuses.
//!
//! ## Positions
//! A KurrentDB position is a pair (commit, prepare) per event; a streamlog position is
//! one per append, and a [`ResumeToken`] (position, skip) names a place between two events.
//! Event `i` (0-based) of the append at position `P` is sent as
//! `prepare = P`, `commit = P + i + 1`: `commit - prepare` is how many events of the
//! append come up to and including it, which is the `skip` of the token right after it.
//! Frames are longer than the number of events they hold, so `commit` stays below the
//! next append's position, and positions keep their order. Back from a client:
//! - a subscription (which starts *after* the position it is given) resumes from the token
//!   `(prepare, commit - prepare)`;
//! - a read (which starts *at* the position) starts from `(prepare, commit - prepare - 1)`.
//!
//! A checkpoint or "caught up" token `(P, s)` is sent as `prepare = P`, `commit = P + s`,
//! which a subscription resumes from exactly (`s = 0`, "before the append at `P`", is the
//! pair `commit == prepare` that no event has).

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use tonic::{Code, Status};

use super::proto::event_store::client as pb;
use crate::{Error, EventId, ExpectedVersion, NewEvent, Position, RecordedEvent, ResumeToken};

/// The (commit, prepare) pair of an event.
pub(super) fn event_position(position: Position, append_index: u32) -> (u64, u64) {
    (
        position
            .0
            .saturating_add(u64::from(append_index))
            .saturating_add(1),
        position.0,
    )
}

/// The (commit, prepare) pair of a place between events.
pub(super) fn token_position(token: ResumeToken) -> (u64, u64) {
    (
        token.position.0.saturating_add(u64::from(token.skip)),
        token.position.0,
    )
}

/// The token a subscription resumes from after the event at `(commit, prepare)`.
///
/// # Errors
/// `INVALID_ARGUMENT` for a pair this server never sent.
pub(super) fn token_after(commit: u64, prepare: u64) -> Result<ResumeToken, Status> {
    let skip = commit.checked_sub(prepare).ok_or_else(|| {
        Status::invalid_argument(format!(
            "position commit {commit} is below prepare {prepare}: not a position of this server"
        ))
    })?;
    let skip = u32::try_from(skip).map_err(|_| {
        Status::invalid_argument(format!(
            "position ({commit}, {prepare}) is not a position of this server"
        ))
    })?;
    Ok(ResumeToken {
        position: Position(prepare),
        skip,
    })
}

/// The token a read starts from at the event at `(commit, prepare)`.
///
/// # Errors
/// `INVALID_ARGUMENT` for a pair this server never sent.
pub(super) fn token_at(commit: u64, prepare: u64) -> Result<ResumeToken, Status> {
    let mut token = token_after(commit, prepare)?;
    token.skip = token.skip.saturating_sub(1);
    Ok(token)
}

/// An event id from the protocol's UUID (either form).
///
/// # Errors
/// `INVALID_ARGUMENT` for a missing or malformed id.
pub(super) fn event_id(id: Option<pb::Uuid>) -> Result<EventId, Status> {
    let value = id
        .and_then(|id| id.value)
        .ok_or_else(|| Status::invalid_argument("an event has no id"))?;
    let uuid = match value {
        pb::uuid::Value::Structured(s) => uuid::Uuid::from_u64_pair(
            s.most_significant_bits.cast_unsigned(),
            s.least_significant_bits.cast_unsigned(),
        ),
        pb::uuid::Value::String(s) => uuid::Uuid::parse_str(&s)
            .map_err(|e| Status::invalid_argument(format!("event id {s:?} is not a UUID: {e}")))?,
    };
    Ok(EventId(uuid.into_bytes()))
}

/// The protocol's UUID of an event id, in the form the reader asked for.
pub(super) fn uuid(id: EventId, as_string: bool) -> pb::Uuid {
    let uuid = uuid::Uuid::from_bytes(id.0);
    let value = if as_string {
        pb::uuid::Value::String(uuid.hyphenated().to_string())
    } else {
        let (msb, lsb) = uuid.as_u64_pair();
        pb::uuid::Value::Structured(pb::uuid::Structured {
            most_significant_bits: msb.cast_signed(),
            least_significant_bits: lsb.cast_signed(),
        })
    };
    pb::Uuid { value: Some(value) }
}

/// A stream name from the protocol's identifier.
///
/// # Errors
/// `INVALID_ARGUMENT` for a missing, empty or non-UTF-8 name.
pub(super) fn stream_name(id: Option<pb::StreamIdentifier>) -> Result<String, Status> {
    let id = id.ok_or_else(|| Status::invalid_argument("no stream identifier"))?;
    let name = String::from_utf8(id.stream_name)
        .map_err(|_| Status::invalid_argument("a stream name is not UTF-8"))?;
    if name.is_empty() {
        return Err(Status::invalid_argument("a stream name is empty"));
    }
    Ok(name)
}

/// The protocol's identifier of a stream.
pub(super) fn stream_identifier(name: &str) -> pb::StreamIdentifier {
    pb::StreamIdentifier {
        stream_name: name.as_bytes().to_vec(),
    }
}

/// The expected version of the protocol's four forms (absent means "any").
pub(super) fn expected(revision: Option<u64>, no_stream: bool, exists: bool) -> ExpectedVersion {
    match (revision, no_stream, exists) {
        (Some(r), _, _) => ExpectedVersion::Exact(r),
        (None, true, _) => ExpectedVersion::NoStream,
        (None, false, true) => ExpectedVersion::StreamExists,
        (None, false, false) => ExpectedVersion::Any,
    }
}

/// An event to append from a proposed message's parts.
///
/// # Errors
/// `INVALID_ARGUMENT` without an id or a `type`.
pub(super) fn new_event(
    id: Option<pb::Uuid>,
    mut metadata: HashMap<String, String>,
    custom_metadata: Vec<u8>,
    data: Vec<u8>,
) -> Result<NewEvent, Status> {
    let id = event_id(id)?;
    let event_type = metadata
        .remove("type")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Status::invalid_argument("an event has no \"type\" in its metadata"))?;
    let mut event = NewEvent::new(event_type, data).with_id(id);
    event.metadata = custom_metadata;
    Ok(event)
}

/// A recorded event as the protocol carries it.
pub(super) fn recorded_event(
    e: RecordedEvent,
    uuid_as_string: bool,
) -> pb::streams::read_resp::read_event::RecordedEvent {
    let (commit, prepare) = event_position(e.position, e.append_index);
    let content_type = if serde_json::from_slice::<serde::de::IgnoredAny>(&e.data).is_ok() {
        "application/json"
    } else {
        "application/octet-stream"
    };
    let ticks = e.timestamp_us.saturating_mul(10);
    let mut metadata = HashMap::with_capacity(3);
    metadata.insert("type".to_owned(), e.event_type);
    metadata.insert("content-type".to_owned(), content_type.to_owned());
    metadata.insert("created".to_owned(), ticks.to_string());
    pb::streams::read_resp::read_event::RecordedEvent {
        id: Some(uuid(e.id, uuid_as_string)),
        stream_identifier: Some(stream_identifier(&e.stream)),
        stream_revision: e.version,
        prepare_position: prepare,
        commit_position: commit,
        metadata,
        custom_metadata: e.metadata,
        data: e.data,
    }
}

/// A protobuf timestamp of now.
pub(super) fn now_timestamp() -> prost_types::Timestamp {
    prost_types::Timestamp::from(SystemTime::now())
}

/// Now in 100 ns ticks since the Unix epoch, for the gossip member's time stamp.
pub(super) fn now_ticks() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_nanos() / 100).unwrap_or(i64::MAX)
}

/// The gRPC status of a store error (a conflict is answered in the message, not here).
pub(super) fn status(e: &Error) -> Status {
    let code = match e {
        Error::InvalidArgument(_) | Error::TooLarge { .. } => Code::InvalidArgument,
        Error::WrongExpectedVersion { .. }
        | Error::IdempotencyConflict { .. }
        | Error::StreamDeleted { .. } => Code::FailedPrecondition,
        Error::Corrupted { .. } => Code::DataLoss,
        Error::Poisoned | Error::Closed | Error::ReadOnly | Error::Locked { .. } => {
            Code::Unavailable
        }
        _ => Code::Internal,
    };
    if !matches!(code, Code::InvalidArgument | Code::FailedPrecondition) {
        // The store's own trouble (not the client's): the operator must hear of it.
        super::logline::emit(
            "error",
            "store_error",
            serde_json::json!({ "code": format!("{code:?}"), "error": e.to_string() }),
        );
    }
    let message = match e {
        // KurrentDB's text, which clients parse (Python's turns it into
        // `WrongCurrentVersionError`, or `NotFoundError` for a stream that does not exist);
        // the numbers are KurrentDB's: -1 no stream, -2 any, -4 stream exists.
        Error::WrongExpectedVersion {
            stream,
            expected,
            actual,
        } => {
            let expected = match expected {
                ExpectedVersion::Exact(v) => i128::from(*v),
                ExpectedVersion::Any => -2,
                ExpectedVersion::NoStream => -1,
                ExpectedVersion::StreamExists => -4,
            };
            let actual = actual.map_or(-1, i128::from);
            format!(
                "{e}: operation failed due to WrongExpectedVersion. Stream: {stream}, Expected version: {expected}, Actual version: {actual}"
            )
        }
        _ => e.to_string(),
    };
    let mut status = Status::new(code, message);
    // The trailers KurrentDB sends, which the official clients read.
    let trailers = status.metadata_mut();
    let mut put = |key: &'static str, value: String| {
        if let Ok(v) = value.parse() {
            trailers.insert(key, v);
        }
    };
    match e {
        Error::StreamDeleted { stream } => {
            put("exception", "stream-deleted".into());
            put("stream-name", stream.clone());
        }
        Error::WrongExpectedVersion {
            stream,
            expected,
            actual,
        } => {
            put("exception", "wrong-expected-version".into());
            put("stream-name", stream.clone());
            put("expected-version", expected.to_string());
            put(
                "actual-version",
                actual.map_or_else(|| "-1".to_string(), |v| v.to_string()),
            );
        }
        _ => {}
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_position_round_trips_to_the_next_event_and_to_itself() {
        let (commit, prepare) = event_position(Position(4096), 2);
        assert_eq!((commit, prepare), (4099, 4096));
        assert_eq!(
            token_after(commit, prepare).ok(),
            Some(ResumeToken::after(Position(4096), 2))
        );
        assert_eq!(
            token_at(commit, prepare).ok(),
            Some(ResumeToken {
                position: Position(4096),
                skip: 2
            })
        );
    }

    #[test]
    fn a_checkpoint_position_resumes_at_its_token() {
        for token in [
            ResumeToken::at(Position(512)),
            ResumeToken::after(Position(512), 0),
        ] {
            let (commit, prepare) = token_position(token);
            assert_eq!(token_after(commit, prepare).ok(), Some(token));
        }
    }

    #[test]
    fn a_position_this_server_never_sent_is_refused() {
        assert!(token_after(1, 2).is_err());
        assert!(token_after(u64::MAX, 0).is_err());
    }

    #[test]
    fn uuids_round_trip_in_both_forms() {
        let id = EventId::new();
        for as_string in [false, true] {
            assert_eq!(event_id(Some(uuid(id, as_string))).ok(), Some(id));
        }
        assert!(event_id(None).is_err());
    }
}
