//! The bounds a server keeps on what clients send and hold.

/// Limits of one server (see [`ServerOptions`](super::ServerOptions)).
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// Bytes of event data and metadata in one append.
    pub(super) max_append_bytes: usize,
    /// Events in one append.
    pub(super) max_events_per_append: usize,
    /// Batches of one `BatchAppend` call being received or appended at once.
    pub(super) max_batches_in_flight: usize,
}
