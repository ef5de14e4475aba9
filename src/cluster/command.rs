//! What the replicated log carries (a [`Command`]) and what applying it answers (a
//! [`Response`]), and their byte encoding inside the raft log's record frames.

use serde::{Deserialize, Serialize};

use crate::format::DecodeError;
use crate::format::le::Reader;
use crate::{AppendResult, EventId, ExpectedVersion, NewEvent, Position, StreamMetadata};

/// Most events one command may carry (the store's own limit is checked when it is
/// applied; this bound only keeps a damaged or hostile record from asking for a huge
/// allocation when decoded).
const MAX_EVENTS_PER_COMMAND: usize = 1 << 20;

/// An expected version as the replicated log carries it (see [`ExpectedVersion`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expected {
    /// [`ExpectedVersion::Any`].
    Any,
    /// [`ExpectedVersion::NoStream`].
    NoStream,
    /// [`ExpectedVersion::StreamExists`].
    StreamExists,
    /// [`ExpectedVersion::Exact`].
    Exact(u64),
}

impl From<ExpectedVersion> for Expected {
    fn from(e: ExpectedVersion) -> Self {
        match e {
            ExpectedVersion::Any => Expected::Any,
            ExpectedVersion::NoStream => Expected::NoStream,
            ExpectedVersion::StreamExists => Expected::StreamExists,
            ExpectedVersion::Exact(n) => Expected::Exact(n),
        }
    }
}

impl From<Expected> for ExpectedVersion {
    fn from(e: Expected) -> Self {
        match e {
            Expected::Any => ExpectedVersion::Any,
            Expected::NoStream => ExpectedVersion::NoStream,
            Expected::StreamExists => ExpectedVersion::StreamExists,
            Expected::Exact(n) => ExpectedVersion::Exact(n),
        }
    }
}

/// One event of a proposed append, with everything fixed by the proposer (the id and
/// the timestamp included), so that every replica stores the same bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposedEvent {
    /// The event id (idempotent retries are recognised by it).
    pub id: [u8; 16],
    /// The event type.
    pub event_type: String,
    /// The payload.
    pub data: Vec<u8>,
    /// The metadata.
    pub metadata: Vec<u8>,
    /// The event's timestamp, in microseconds since the Unix epoch.
    pub timestamp_us: i64,
    /// The schema version of the payload.
    pub schema_version: u32,
}

impl ProposedEvent {
    /// The event as the store takes it.
    pub fn to_new_event(&self) -> NewEvent {
        let timestamp = if self.timestamp_us >= 0 {
            std::time::UNIX_EPOCH
                + std::time::Duration::from_micros(self.timestamp_us.unsigned_abs())
        } else {
            std::time::UNIX_EPOCH
                - std::time::Duration::from_micros(self.timestamp_us.unsigned_abs())
        };
        NewEvent::new(self.event_type.clone(), &self.data)
            .with_id(EventId(self.id))
            .with_metadata(&self.metadata)
            .with_timestamp(timestamp)
            .with_schema_version(self.schema_version)
    }
}

/// What a [`Command`] does to its stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operation {
    /// Appends the events ([`Store::append`](crate::Store::append)), their ids and
    /// timestamps fixed.
    Append(Vec<ProposedEvent>),
    /// Soft-deletes the stream ([`Store::delete_stream`](crate::Store::delete_stream)),
    /// the expected version checked against the stream's version.
    Delete {
        /// The id of the change's record in the system stream, fixed by the proposer.
        id: [u8; 16],
    },
    /// Hard-deletes the stream
    /// ([`Store::tombstone_stream`](crate::Store::tombstone_stream)), the expected
    /// version checked against the stream's version.
    Tombstone {
        /// The id of the change's record in the system stream, fixed by the proposer.
        id: [u8; 16],
    },
    /// Replaces the stream's metadata
    /// ([`Store::set_stream_metadata`](crate::Store::set_stream_metadata)), the expected
    /// version checked against the metadata version.
    SetMetadata {
        /// The id of the change's record in the system stream, fixed by the proposer.
        id: [u8; 16],
        /// The metadata as KurrentDB-style JSON ([`StreamMetadata::from_json`]).
        json: Vec<u8>,
    },
}

/// A command of the replicated log: one change of one stream (an append, a delete, a
/// tombstone or new metadata), applied by every replica in log order with its expected
/// version, so that every replica decides the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// The stream changed.
    pub stream: String,
    /// What the stream's version (its metadata version for [`Operation::SetMetadata`])
    /// must be for the change to be made.
    pub expected: Expected,
    /// What is done.
    pub operation: Operation,
    /// The proposer's clock when it proposed the change, in microseconds since the Unix
    /// epoch: every replica stamps the change with it as its commit time (never going back
    /// in time: the store keeps commit times non-decreasing), so the replicas' logs agree.
    pub proposed_at_us: i64,
}

/// What one raft entry carries: one [`Command`], or a batch of them applied one after
/// another in order, each with its own expected version and its own outcome.
///
/// A leader appends and syncs its log once per entry, and openraft 0.9 waits for that sync
/// before it takes the next entry; the server therefore gathers the commands of concurrent
/// clients into one batch entry (see `ClusterNode::write`), so that they share one sync,
/// one replication round and one apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Proposal {
    /// One command; its entry answers the command's [`Response`].
    One(Command),
    /// Commands applied in this order; the entry answers [`Response::Batch`] with their
    /// outcomes in the same order.
    Batch(Vec<Command>),
}

impl From<Command> for Proposal {
    fn from(cmd: Command) -> Self {
        Proposal::One(cmd)
    }
}

/// Most commands one batch may carry when decoded (a bound on what a damaged or hostile
/// record may ask for; the server gathers far fewer).
pub(crate) const MAX_COMMANDS_PER_BATCH: usize = 1 << 16;

/// How the raft log lays out a command's payload (docs/format.md, "Raft log segments"):
/// appends keep the layout of the first release; the other changes have their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// An append: the event count and the events after the common fields.
    Append,
    /// A delete, a tombstone or new metadata: a kind byte, the record id and, for
    /// metadata, its JSON after the common fields.
    Change,
}

/// Kind bytes of a [`Layout::Change`] command.
const CHANGE_DELETE: u8 = 1;
const CHANGE_TOMBSTONE: u8 = 2;
const CHANGE_METADATA: u8 = 3;

impl Command {
    /// An append command from store-level values: the events keep their ids (a
    /// [`NewEvent`] always has one), and every event without a timestamp gets the
    /// proposer's time, fixed here once.
    pub fn append(
        stream: impl Into<String>,
        expected: ExpectedVersion,
        events: impl IntoIterator<Item = NewEvent>,
    ) -> Command {
        let now = now_us();
        let events = events
            .into_iter()
            .map(|e| ProposedEvent {
                id: e.id.0,
                event_type: e.event_type.into_owned(),
                data: e.data,
                metadata: e.metadata,
                timestamp_us: e.timestamp.map_or(now, system_time_us),
                schema_version: e.schema_version,
            })
            .collect();
        Command {
            stream: stream.into(),
            expected: expected.into(),
            operation: Operation::Append(events),
            proposed_at_us: now,
        }
    }

    /// A soft delete of `stream` if it is at `expected` (see
    /// [`Store::delete_stream`](crate::Store::delete_stream)), its record id and time
    /// fixed here.
    pub fn delete(stream: impl Into<String>, expected: ExpectedVersion) -> Command {
        Command::change(
            stream,
            expected,
            Operation::Delete {
                id: EventId::new().0,
            },
        )
    }

    /// A hard delete of `stream` if it is at `expected` (see
    /// [`Store::tombstone_stream`](crate::Store::tombstone_stream)), its record id and
    /// time fixed here.
    pub fn tombstone(stream: impl Into<String>, expected: ExpectedVersion) -> Command {
        Command::change(
            stream,
            expected,
            Operation::Tombstone {
                id: EventId::new().0,
            },
        )
    }

    /// New metadata for `stream` if its metadata is at version `expected` (see
    /// [`Store::set_stream_metadata`](crate::Store::set_stream_metadata)), as
    /// KurrentDB-style JSON, its record id and time fixed here.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] when `json` is not metadata that
    /// [`StreamMetadata::from_json`] takes: refused before it is proposed, so nothing the
    /// replicas would all refuse goes into the log.
    pub fn set_metadata(
        stream: impl Into<String>,
        expected: ExpectedVersion,
        json: &[u8],
    ) -> crate::Result<Command> {
        StreamMetadata::from_json(json)?;
        Ok(Command::change(
            stream,
            expected,
            Operation::SetMetadata {
                id: EventId::new().0,
                json: json.to_vec(),
            },
        ))
    }

    fn change(
        stream: impl Into<String>,
        expected: ExpectedVersion,
        operation: Operation,
    ) -> Command {
        Command {
            stream: stream.into(),
            expected: expected.into(),
            operation,
            proposed_at_us: now_us(),
        }
    }

    /// The id of the first record the command writes when it succeeds: its first event,
    /// or the record of its change (`None` for an append of no events).
    pub fn first_record_id(&self) -> Option<[u8; 16]> {
        match &self.operation {
            Operation::Append(events) => events.first().map(|e| e.id),
            Operation::Delete { id }
            | Operation::Tombstone { id }
            | Operation::SetMetadata { id, .. } => Some(*id),
        }
    }

    /// How the raft log lays out this command.
    pub(crate) fn layout(&self) -> Layout {
        match self.operation {
            Operation::Append(_) => Layout::Append,
            _ => Layout::Change,
        }
    }

    /// Appends the command's encoding in its [`Command::layout`] to `out` (the layouts
    /// are in docs/format.md, "Raft log segments").
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        put_str(out, &self.stream);
        match self.expected {
            Expected::Any => out.push(0),
            Expected::NoStream => out.push(1),
            Expected::StreamExists => out.push(2),
            Expected::Exact(n) => {
                out.push(3);
                out.extend_from_slice(&n.to_le_bytes());
            }
        }
        out.extend_from_slice(&self.proposed_at_us.to_le_bytes());
        match &self.operation {
            Operation::Append(events) => {
                out.extend_from_slice(&(events.len() as u64).to_le_bytes());
                for e in events {
                    out.extend_from_slice(&e.id);
                    put_str(out, &e.event_type);
                    put_bytes(out, &e.data);
                    put_bytes(out, &e.metadata);
                    out.extend_from_slice(&e.timestamp_us.to_le_bytes());
                    out.extend_from_slice(&e.schema_version.to_le_bytes());
                }
            }
            Operation::Delete { id } => {
                out.push(CHANGE_DELETE);
                out.extend_from_slice(id);
            }
            Operation::Tombstone { id } => {
                out.push(CHANGE_TOMBSTONE);
                out.extend_from_slice(id);
            }
            Operation::SetMetadata { id, json } => {
                out.push(CHANGE_METADATA);
                out.extend_from_slice(id);
                put_bytes(out, json);
            }
        }
    }

    /// Decodes what [`Command::encode`] wrote in `layout`.
    pub(crate) fn decode(r: &mut Reader<'_>, layout: Layout) -> Result<Command, DecodeError> {
        let stream = get_str(r, "stream name")?;
        let expected = match r.u8()? {
            0 => Expected::Any,
            1 => Expected::NoStream,
            2 => Expected::StreamExists,
            3 => Expected::Exact(r.u64()?),
            _ => return Err(DecodeError::Invalid("expected version")),
        };
        let proposed_at_us = r.i64()?;
        let operation = match layout {
            Layout::Append => {
                let count = usize::try_from(r.u64()?)
                    .ok()
                    .filter(|&n| n <= MAX_EVENTS_PER_COMMAND)
                    .ok_or(DecodeError::Invalid("event count"))?;
                let mut events = Vec::with_capacity(count.min(1024));
                for _ in 0..count {
                    events.push(ProposedEvent {
                        id: r.array()?,
                        event_type: get_str(r, "event type")?,
                        data: get_bytes(r)?,
                        metadata: get_bytes(r)?,
                        timestamp_us: r.i64()?,
                        schema_version: r.u32()?,
                    });
                }
                Operation::Append(events)
            }
            Layout::Change => match r.u8()? {
                CHANGE_DELETE => Operation::Delete { id: r.array()? },
                CHANGE_TOMBSTONE => Operation::Tombstone { id: r.array()? },
                CHANGE_METADATA => Operation::SetMetadata {
                    id: r.array()?,
                    json: get_bytes(r)?,
                },
                _ => return Err(DecodeError::Invalid("stream change kind")),
            },
        };
        Ok(Command {
            stream,
            expected,
            operation,
            proposed_at_us,
        })
    }
}

/// A successful append, as [`AppendResult`] says it; for a delete, a tombstone or new
/// metadata, the change's record: the stream's new metadata version as first and last
/// version, and the record's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Appended {
    /// Version of the first appended event.
    pub first_version: u64,
    /// Version of the last appended event.
    pub last_version: u64,
    /// Position of the append in this replica's log.
    pub position: u64,
    /// Whether it was a retry of an append already stored.
    pub deduplicated: bool,
}

impl From<AppendResult> for Appended {
    fn from(r: AppendResult) -> Self {
        Appended {
            first_version: r.first_version,
            last_version: r.last_version,
            position: r.position.0,
            deduplicated: r.deduplicated,
        }
    }
}

impl From<Appended> for AppendResult {
    fn from(a: Appended) -> Self {
        AppendResult {
            first_version: a.first_version,
            last_version: a.last_version,
            position: Position(a.position),
            deduplicated: a.deduplicated,
        }
    }
}

/// What applying one log entry answered: the outcome of its command, decided the same on
/// every replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// An entry with no command (a leader's blank entry, a membership change).
    Empty,
    /// The append or the change was stored (an append maybe recognised as a retry of a
    /// stored one).
    Appended(Appended),
    /// The stream (its metadata for new metadata) was not at the expected version:
    /// nothing was written.
    WrongExpectedVersion {
        /// The stream's actual last version (metadata version), `None` when it does not
        /// exist (never had metadata).
        actual: Option<u64>,
    },
    /// The stream is tombstoned: nothing was written.
    StreamDeleted,
    /// The store refused the command for its input (a limit, a name, an idempotency
    /// conflict), the same way on every replica: nothing was written.
    Refused(String),
    /// Applied again after this replica restarted, matched against what its store
    /// already held: the original outcome was answered to the client before the restart.
    Recovered,
    /// The outcomes of a [`Proposal::Batch`]'s commands, in its order.
    Batch(Vec<Response>),
}

/// Microseconds since the Unix epoch of `t` (negative before it).
pub(crate) fn system_time_us(t: std::time::SystemTime) -> i64 {
    match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_micros()).map_or(i64::MIN, |us| -us),
    }
}

/// The system clock in microseconds since the Unix epoch.
pub(crate) fn now_us() -> i64 {
    system_time_us(std::time::SystemTime::now())
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_bytes(out, s.as_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u64).to_le_bytes());
    out.extend_from_slice(b);
}

fn get_bytes(r: &mut Reader<'_>) -> Result<Vec<u8>, DecodeError> {
    let len = usize::try_from(r.u64()?).map_err(|_| DecodeError::Invalid("length"))?;
    Ok(r.take(len)?.to_vec())
}

fn get_str(r: &mut Reader<'_>, what: &'static str) -> Result<String, DecodeError> {
    let len = usize::try_from(r.u64()?).map_err(|_| DecodeError::Invalid("length"))?;
    Ok(r.str(len, what)?.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_command_decodes_to_what_was_encoded_and_truncations_are_errors() {
        let commands = [
            (
                Command::append(
                    "order-7",
                    ExpectedVersion::Exact(3),
                    [
                        NewEvent::new("Placed", b"{}").with_metadata(b"m"),
                        NewEvent::new("Paid", b"\x00\x01"),
                    ],
                ),
                Layout::Append,
            ),
            (
                Command::delete("order-7", ExpectedVersion::Any),
                Layout::Change,
            ),
            (
                Command::tombstone("order-7", ExpectedVersion::Exact(1)),
                Layout::Change,
            ),
            (
                Command::set_metadata("order-7", ExpectedVersion::NoStream, br#"{"$maxCount":2}"#)
                    .unwrap(),
                Layout::Change,
            ),
        ];
        for (cmd, layout) in commands {
            assert_eq!(cmd.layout(), layout);
            let mut out = Vec::new();
            cmd.encode(&mut out);
            assert_eq!(
                Command::decode(&mut Reader::new(&out), layout).unwrap(),
                cmd
            );
            for cut in 0..out.len() {
                assert!(
                    Command::decode(&mut Reader::new(&out[..cut]), layout).is_err(),
                    "{cmd:?} cut {cut}"
                );
            }
        }
    }

    #[test]
    fn an_append_keeps_the_layout_of_the_first_release() {
        // Written by the encoder before deletes were replicated (one event, exact 3).
        let mut old = Vec::new();
        put_str(&mut old, "s");
        old.push(3);
        old.extend_from_slice(&3u64.to_le_bytes());
        old.extend_from_slice(&7i64.to_le_bytes());
        old.extend_from_slice(&1u64.to_le_bytes());
        old.extend_from_slice(&[9; 16]);
        put_str(&mut old, "E");
        put_bytes(&mut old, b"d");
        put_bytes(&mut old, b"");
        old.extend_from_slice(&5i64.to_le_bytes());
        old.extend_from_slice(&0u32.to_le_bytes());
        let cmd = Command::decode(&mut Reader::new(&old), Layout::Append).unwrap();
        assert_eq!(cmd.first_record_id(), Some([9; 16]));
        let mut again = Vec::new();
        cmd.encode(&mut again);
        assert_eq!(again, old);
    }

    #[test]
    fn metadata_that_does_not_parse_is_refused_before_it_is_proposed() {
        assert!(matches!(
            Command::set_metadata("s", ExpectedVersion::Any, b"[1]"),
            Err(crate::Error::InvalidArgument(_))
        ));
        assert!(matches!(
            Command::set_metadata("s", ExpectedVersion::Any, br#"{"$maxCount":-1}"#),
            Err(crate::Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn an_unknown_change_kind_is_an_error() {
        let mut out = Vec::new();
        Command::delete("s", ExpectedVersion::Any).encode(&mut out);
        let kind = out.len() - 17;
        out[kind] = 9;
        assert!(Command::decode(&mut Reader::new(&out), Layout::Change).is_err());
    }
}
