//! The one error type of the crate.

use std::fmt;
use std::path::PathBuf;

use crate::expected_version::ExpectedVersion;

/// Everything that can go wrong in streamlog.
///
/// Operating errors (disk, file contents, caller input) are values of this enum; nothing
/// read from disk or passed in by a caller makes the crate panic.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation failed. `context` says what the engine was doing.
    Io {
        /// What the engine was doing, e.g. `"sync segment 00000000000000000000.seg"`.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Data that was attested as durable is damaged. The store refuses to open rather than
    /// silently cutting acknowledged data.
    Corrupted {
        /// The damaged file.
        file: PathBuf,
        /// Byte offset of the damage inside `file`.
        offset: u64,
        /// What is wrong there.
        reason: String,
    },
    /// The stream was not at the version the append expected.
    WrongExpectedVersion {
        /// The stream appended to.
        stream: String,
        /// What the caller expected.
        expected: ExpectedVersion,
        /// The stream's actual last version, `None` when the stream does not exist.
        actual: Option<u64>,
    },
    /// Another `Store` (in this process or another) holds the directory's lock.
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// An earlier write or sync failed; the store refuses all further writes because the
    /// state of unsynced data is unknown (see "fsyncgate"). Reopen to recover.
    Poisoned,
    /// A caller-supplied argument is not acceptable.
    InvalidArgument(String),
    /// A caller-supplied value exceeds a configured limit.
    TooLarge {
        /// Which limit, e.g. `"max_event_bytes"`.
        what: &'static str,
        /// The offending size.
        size: u64,
        /// The limit in force.
        limit: u64,
    },
    /// A retried append matched an earlier one only partly (some event ids were already
    /// written at that place, others differ), so it is neither a fresh append nor a retry.
    IdempotencyConflict {
        /// The stream appended to.
        stream: String,
        /// What is inconsistent.
        reason: String,
    },
    /// The store was opened read-only and a write was attempted.
    ReadOnly,
    /// The store was closed (through [`Store::close`](crate::Store::close) on one of its
    /// handles) and a write was attempted through another.
    Closed,
    /// A file of the store was written by a newer streamlog, in a format version this build
    /// does not read (its header is intact: this is not damage). The store (for a segment
    /// or index file) or every use of its snapshots (for a snapshot file) is refused, and
    /// nothing in it is changed or replaced; open it with a newer streamlog.
    UnsupportedFormat {
        /// The file whose format is newer (a segment, an index manifest or table, a
        /// snapshot segment).
        file: PathBuf,
        /// The format version the file declares.
        found: u32,
        /// The newest format version of that kind of file this build reads.
        supported: u32,
    },
    /// The stream was hard deleted ([`Store::tombstone_stream`](crate::Store::tombstone_stream)):
    /// it can never be appended to, read or deleted again.
    StreamDeleted {
        /// The deleted stream.
        stream: String,
    },
    /// No frame is at this position any more: a scavenge removed it, because every event
    /// in it was deleted, expired or truncated (see
    /// [`Store::scavenge`](crate::Store::scavenge)). Reads that start or resume there go
    /// on at the next surviving frame; this error reaches a caller only from a read of
    /// that exact frame.
    Scavenged {
        /// The position that was read.
        position: u64,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn corrupted(
        file: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
    ) -> Self {
        Error::Corrupted {
            file: file.into(),
            offset,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { context, source } => write!(f, "I/O error while {context}: {source}"),
            Error::Corrupted {
                file,
                offset,
                reason,
            } => write!(
                f,
                "corrupted data in {} at offset {offset}: {reason}",
                file.display()
            ),
            Error::WrongExpectedVersion {
                stream,
                expected,
                actual,
            } => match actual {
                Some(v) => write!(
                    f,
                    "wrong expected version for stream {stream:?}: expected {expected}, stream is at version {v}"
                ),
                None => write!(
                    f,
                    "wrong expected version for stream {stream:?}: expected {expected}, stream does not exist"
                ),
            },
            Error::Locked { path } => write!(
                f,
                "the store is locked by another process or handle ({})",
                path.display()
            ),
            Error::Poisoned => write!(
                f,
                "the store is poisoned by an earlier failed write or sync; reopen it to recover"
            ),
            Error::InvalidArgument(msg) => write!(f, "invalid argument: {msg}"),
            Error::TooLarge { what, size, limit } => {
                write!(f, "{what} exceeded: {size} > {limit}")
            }
            Error::IdempotencyConflict { stream, reason } => {
                write!(
                    f,
                    "append to {stream:?} partly matches an earlier append: {reason}"
                )
            }
            Error::ReadOnly => write!(f, "the store is open read-only"),
            Error::Closed => write!(f, "the store is closed"),
            Error::UnsupportedFormat {
                file,
                found,
                supported,
            } => write!(
                f,
                "{} was written by a newer streamlog (format version {found}; this build reads \
                 up to version {supported})",
                file.display()
            ),
            Error::StreamDeleted { stream } => {
                write!(f, "stream {stream:?} is deleted (hard delete, tombstone)")
            }
            Error::Scavenged { position } => write!(
                f,
                "no frame at position {position} any more: a scavenge removed its deleted or \
                 expired events"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
