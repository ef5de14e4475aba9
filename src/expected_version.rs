//! The expectation an append states about its stream, on the ground floor: the error type
//! reports it, and the store checks it. (Parsing it from text lives with the store's model.)

use std::fmt;

/// What an append expects of the stream's current state; checked atomically with the write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExpectedVersion {
    /// No expectation.
    Any,
    /// The stream must not exist (have no events).
    NoStream,
    /// The stream must exist.
    StreamExists,
    /// The stream's last version must be exactly this.
    Exact(u64),
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => write!(f, "any"),
            ExpectedVersion::NoStream => write!(f, "no-stream"),
            ExpectedVersion::StreamExists => write!(f, "exists"),
            ExpectedVersion::Exact(v) => write!(f, "{v}"),
        }
    }
}
