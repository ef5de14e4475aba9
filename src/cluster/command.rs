//! What the replicated log carries (a [`Command`]) and what applying it answers (a
//! [`Response`]), and their byte encoding inside the raft log's record frames.

use serde::{Deserialize, Serialize};

use crate::format::DecodeError;
use crate::format::le::Reader;
use crate::{AppendResult, EventId, ExpectedVersion, NewEvent, Position};

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

/// A command of the replicated log: one append to one stream, applied by every replica
/// in log order with its expected version, so that every replica decides the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// The stream appended to.
    pub stream: String,
    /// What the stream's version must be for the append to succeed.
    pub expected: Expected,
    /// The events, ids and timestamps fixed.
    pub events: Vec<ProposedEvent>,
    /// The proposer's clock when it proposed the append, in microseconds since the Unix
    /// epoch: every replica stamps the append with it as its commit time (never going back
    /// in time: the store keeps commit times non-decreasing), so the replicas' logs agree.
    pub proposed_at_us: i64,
}

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
            events,
            proposed_at_us: now,
        }
    }

    /// Appends the command's encoding to `out` (the layout is in docs/format.md, "Raft
    /// log segments").
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
        out.extend_from_slice(&(self.events.len() as u64).to_le_bytes());
        for e in &self.events {
            out.extend_from_slice(&e.id);
            put_str(out, &e.event_type);
            put_bytes(out, &e.data);
            put_bytes(out, &e.metadata);
            out.extend_from_slice(&e.timestamp_us.to_le_bytes());
            out.extend_from_slice(&e.schema_version.to_le_bytes());
        }
    }

    /// Decodes what [`Command::encode`] wrote.
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Command, DecodeError> {
        let stream = get_str(r, "stream name")?;
        let expected = match r.u8()? {
            0 => Expected::Any,
            1 => Expected::NoStream,
            2 => Expected::StreamExists,
            3 => Expected::Exact(r.u64()?),
            _ => return Err(DecodeError::Invalid("expected version")),
        };
        let proposed_at_us = r.i64()?;
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
        Ok(Command {
            stream,
            expected,
            events,
            proposed_at_us,
        })
    }
}

/// A successful append, as [`AppendResult`] says it.
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

/// What applying one log entry answered: the outcome of its append, decided the same on
/// every replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// An entry with no command (a leader's blank entry, a membership change).
    Empty,
    /// The append was stored (or recognised as a retry of a stored one).
    Appended(Appended),
    /// The stream was not at the expected version: nothing was written.
    WrongExpectedVersion {
        /// The stream's actual last version, `None` when it does not exist.
        actual: Option<u64>,
    },
    /// The stream is tombstoned: nothing was written.
    StreamDeleted,
    /// The store refused the append for its input (a limit, a name, an idempotency
    /// conflict), the same way on every replica: nothing was written.
    Refused(String),
    /// Applied again after this replica restarted, matched against what its store
    /// already held: the original outcome was answered to the client before the restart.
    Recovered,
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
        let cmd = Command::append(
            "order-7",
            ExpectedVersion::Exact(3),
            [
                NewEvent::new("Placed", b"{}").with_metadata(b"m"),
                NewEvent::new("Paid", b"\x00\x01"),
            ],
        );
        let mut out = Vec::new();
        cmd.encode(&mut out);
        assert_eq!(Command::decode(&mut Reader::new(&out)).unwrap(), cmd);
        for cut in 0..out.len() {
            assert!(
                Command::decode(&mut Reader::new(&out[..cut])).is_err(),
                "cut {cut}"
            );
        }
    }
}
