//! Replication on [openraft](https://docs.rs/openraft/0.9) (cargo feature `cluster`): the
//! pieces a raft node of streamlog is made of.
//!
//! - [`RaftLog`]: the raft log storage (openraft's `RaftLogStorage` and `RaftLogReader`)
//!   on the engine's own segmented, checksummed log, with its recovery rule; the vote,
//!   the committed and the purged log id saved by atomic replace.
//! - [`StoreStateMachine`]: the state machine (openraft's `RaftStateMachine`), a
//!   [`Store`](crate::Store) that applies each [`Command`] (an append, a delete, a
//!   tombstone, new stream metadata) with its expected version; the [`Response`] is its
//!   outcome. An entry carries a [`Proposal`]: one command, or a batch of them applied in
//!   order. Snapshots ship the store's segment files.
//! - [`TypeConfig`]: the openraft types of a streamlog cluster, for `openraft::Raft`.
//!
//! A node is `openraft::Raft::<TypeConfig>::new(id, config, network, log, state_machine)`
//! with a network of the caller's; docs/design.md ("The cluster layer") says what is done
//! and what is not.
//!
//! ```
//! use streamlog::cluster::{Command, RaftLog, StoreStateMachine};
//! use streamlog::{ExpectedVersion, NewEvent, Options};
//!
//! # fn main() -> streamlog::Result<()> {
//! # let dir = tempfile::tempdir().map_err(|e| streamlog::Error::InvalidArgument(e.to_string()))?;
//! let log = RaftLog::open(dir.path().join("raft"))?;
//! let sm = StoreStateMachine::open(dir.path().join("sm"), Options::default())?;
//! // What a client proposes through `Raft::client_write`:
//! let cmd = Command::append("order-7", ExpectedVersion::NoStream, [NewEvent::new("Placed", b"{}")]);
//! # let _ = (log, sm, cmd);
//! # Ok(())
//! # }
//! ```

mod command;
mod log_store;
pub(crate) mod meta;
mod snapshot;
mod state_machine;

pub use command::{Appended, Command, Expected, Operation, Proposal, ProposedEvent, Response};
pub use log_store::{
    DEFAULT_RAFT_SEGMENT_BYTES, DEFAULT_SAVE_COMMITTED_EVERY, RaftLog, decode_entries,
    encode_entries,
};
pub use openraft;
pub use openraft::BasicNode;
pub use state_machine::{Replaced, StoreSnapshotBuilder, StoreStateMachine};

/// A node's id in a cluster.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// The openraft types of a streamlog cluster: entries carry [`Command`]s, applying one
    /// answers a [`Response`], snapshots are files.
    pub TypeConfig:
        D = Proposal,
        R = Response,
        NodeId = NodeId,
        Node = BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);
