//! Cluster mode (features `server` and `cluster`): a [`ClusterNode`] is one raft node of a
//! streamlog cluster, served by the same gRPC server as the KurrentDB services.
//!
//! - The raft traffic between nodes is the `streamlog.raft.Raft` service
//!   (`proto/streamlog/raft.proto`): the server's `raft_network` module holds its client
//!   (openraft's `RaftNetworkFactory` over tonic channels) and its server.
//! - Writes (appends, deletes, tombstones, stream metadata) go through raft on the leader
//!   (`ClusterNode::write`); a follower answers them with KurrentDB's "not leader" error, which names the leader's address
//!   (`not_leader`), so official clients reconnect there.
//! - Reads come from the node's state-machine store: on the leader after openraft's
//!   linearizability check when the client sends `requires-leader: true` (official
//!   clients do with their default node preference); from any node's store otherwise.
//! - `Gossip.Read` lists the members with their roles ([`ClusterNode::members`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, ClientWriteError, ForwardToLeader, RaftError};
use openraft::{ChangeMembers, Config, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use tonic::Status;
use tonic::metadata::MetadataValue;

use crate::cluster::{
    BasicNode, Command, NodeId, Operation, Proposal, RaftLog, Response, StoreStateMachine,
    TypeConfig,
};
use crate::error::{Error, Result};
use crate::{Options, Store};

/// The openraft node type of a cluster node.
pub type NodeRaft = openraft::Raft<TypeConfig>;

/// How long a linearizable read waits for the leader to confirm its leadership.
const READ_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a write waits for its entry to be committed and applied.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Most commands the leader gathers into one batch entry.
const MAX_BATCH_COMMANDS: usize = 512;
/// A batch takes no more commands once their events hold this many bytes.
const MAX_BATCH_BYTES: usize = 8 << 20;
/// Tasks that propose batches: one gathers the next batch while another's is in flight.
const PROPOSERS: usize = 2;

/// Where a node keeps its raft log under its directory.
pub const RAFT_LOG_DIR: &str = "raft";
/// Where a node keeps its state machine (its store) under its directory.
pub const STATE_MACHINE_DIR: &str = "sm";

/// Raft timings of a cluster node.
#[derive(Debug, Clone, Copy)]
pub struct ClusterTimings {
    /// How often the leader sends heartbeats, in milliseconds.
    pub heartbeat_ms: u64,
    /// The shortest election timeout, in milliseconds.
    pub election_timeout_min_ms: u64,
    /// The longest election timeout, in milliseconds.
    pub election_timeout_max_ms: u64,
}

impl Default for ClusterTimings {
    /// 100 ms heartbeats, elections after 500 to 1000 ms without one: a lost leader is
    /// replaced in about a second on a local network.
    fn default() -> Self {
        ClusterTimings {
            heartbeat_ms: 100,
            election_timeout_min_ms: 500,
            election_timeout_max_ms: 1000,
        }
    }
}

/// One member of a cluster as `--peer ID=HOST:PORT` names it.
///
/// # Errors
/// [`Error::InvalidArgument`] when `spec` is not `ID=HOST:PORT` with a numeric id, a
/// non-empty host and a port in 1..=65535.
pub fn parse_peer(spec: &str) -> Result<(NodeId, String)> {
    let bad =
        |why: &str| Error::InvalidArgument(format!("peer {spec:?}: {why} (want ID=HOST:PORT)"));
    let (id, addr) = spec.split_once('=').ok_or_else(|| bad("no '='"))?;
    let id: NodeId = id
        .trim()
        .parse()
        .map_err(|_| bad("the id is not a number"))?;
    check_address(addr).map_err(|why| bad(&why))?;
    Ok((id, addr.to_string()))
}

/// Checks that `addr` is `HOST:PORT` (an IPv6 host in brackets).
///
/// # Errors
/// Why it is not.
pub fn check_address(addr: &str) -> std::result::Result<(), String> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| format!("address {addr:?} has no port"))?;
    if host.is_empty() {
        return Err(format!("address {addr:?} has no host"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("address {addr:?}: bad port {port:?}")),
    }
}

/// Splits `HOST:PORT` (brackets of an IPv6 host removed).
pub(super) fn host_port(addr: &str) -> Option<(String, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host.to_string(), port.parse().ok()?))
}

/// A running raft node of a cluster: its raft instance and its state-machine store. A
/// cheap handle: clones share the node.
#[derive(Clone)]
pub struct ClusterNode {
    inner: Arc<NodeInner>,
}

struct NodeInner {
    id: NodeId,
    raft: NodeRaft,
    sm: StoreStateMachine,
    /// Writes waiting to be proposed (see [`propose_batches`]).
    queue: tokio::sync::mpsc::UnboundedSender<PendingWrite>,
    /// The roots the peers' certificates are verified against, when the node reaches
    /// them over TLS.
    tls: Option<super::TlsRoots>,
    /// The peers whose last raft call failed (and why): the leader calls every member
    /// at least once per heartbeat.
    failures: super::raft_network::PeerFailures,
    /// The raft log (a handle sharing the one raft writes), for its sync timings.
    log: RaftLog,
    /// The node directory's lock, held while the node runs.
    _lock: Box<dyn crate::io::LockGuard>,
}

impl std::fmt::Debug for ClusterNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterNode")
            .field("id", &self.inner.id)
            .finish_non_exhaustive()
    }
}

impl ClusterNode {
    /// Opens the node's raft log (`DIR/raft/`) and state machine (`DIR/sm/`, a store
    /// opened with `options`), starts raft with a gRPC network to the peers, and, when the
    /// raft state is empty and `id` is the lowest id of `peers`, initializes the cluster
    /// with every peer as a voter (the others wait for its first message). A node with
    /// saved state goes on from it; `peers` then only matters for that first start.
    /// `secret`, when given, goes with every raft call to the peers (they must have been
    /// started with the same; see [`super::ClusterSecret`]). With `tls`, the node reaches
    /// its peers over TLS and verifies their certificates against those roots, for the
    /// host of each peer's address (the peers serve TLS: serve this node with
    /// [`super::ServerOptions::with_tls`] too, which [`super::Server::bind_node`] checks);
    /// without, over plain HTTP/2.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `id` is not one of `peers` or an address does not
    /// parse (or, with `tls`, its host makes no TLS server name); the open errors of the
    /// log and the store; [`Error::Io`] when raft cannot start.
    pub async fn start(
        dir: &Path,
        id: NodeId,
        peers: &BTreeMap<NodeId, String>,
        options: Options,
        timings: ClusterTimings,
        secret: Option<super::ClusterSecret>,
        tls: Option<super::TlsRoots>,
    ) -> Result<ClusterNode> {
        if !peers.contains_key(&id) {
            return Err(Error::InvalidArgument(format!(
                "node id {id} is not in the peer list ({})",
                peers
                    .keys()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        for addr in peers.values() {
            check_address(addr).map_err(Error::InvalidArgument)?;
            // A channel is made (not connected) to find a host that makes no TLS server
            // name now, not at the first raft call.
            super::raft_network::channel(addr, tls.as_ref()).map_err(Error::InvalidArgument)?;
        }
        let config = Config {
            cluster_name: "streamlog".into(),
            heartbeat_interval: timings.heartbeat_ms,
            election_timeout_min: timings.election_timeout_min_ms,
            election_timeout_max: timings.election_timeout_max_ms,
            // A chunk of a snapshot is a few MiB written to disk on the receiver.
            install_snapshot_timeout: 5_000,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(10_000),
            ..Config::default()
        }
        .validate()
        .map_err(|e| Error::InvalidArgument(format!("raft configuration: {e}")))?;
        let (lock, recorded) = claim_node_dir(dir, &options)?;
        let (log_dir, sm_dir) = (dir.join(RAFT_LOG_DIR), dir.join(STATE_MACHINE_DIR));
        let node_dir = dir.to_path_buf();
        let storage = Arc::clone(&options.storage);
        let log = tokio::task::spawn_blocking(move || {
            let log = RaftLog::open(log_dir)?;
            match recorded {
                Some(r) if r == id => {}
                // A raft log with something in it was written by node `r`.
                Some(r) if !log.is_blank() => {
                    return Err(Error::InvalidArgument(format!(
                        "{} is the directory of node {r}, not of node {id} (check --node-id)",
                        node_dir.display()
                    )));
                }
                // A node that never took part in a cluster is anyone's; a node of an older
                // release (no NODE_ID yet) is taken to be the one started on it.
                _ => crate::cluster::meta::write_atomic(
                    storage.as_ref(),
                    &node_dir,
                    NODE_ID_FILE,
                    &id,
                )?,
            }
            Ok::<_, Error>(log)
        })
        .await
        .map_err(|e| Error::io("open the node", std::io::Error::other(e)))??;
        // A node with nothing in its raft log that the cluster's leader has replicated to
        // lost its directory: under its old identity, raft would take it for a member
        // that still holds what it acknowledged (and stop on the first entry its log
        // lacks). It must be removed and added again instead.
        if log.is_blank()
            && let Some((leader, matched)) = remembered_by_leader(id, peers, tls.as_ref()).await
        {
            return Err(Error::InvalidArgument(format!(
                "{}: node {id} has no raft state, but the cluster's leader (node {leader}) \
                 has replicated its log up to index {matched} to node {id}: this node lost \
                 its data. Remove it (streamlog cluster remove --leader LEADER {id}), start \
                 it again on an empty directory, then add it back (streamlog cluster \
                 add-learner, promote); see docs/server.md, \"A node that lost its \
                 directory\"",
                dir.display()
            )));
        }
        let (log, sm) = tokio::task::spawn_blocking(move || {
            let sm = StoreStateMachine::open(sm_dir, options)?;
            Ok::<_, Error>((log, sm))
        })
        .await
        .map_err(|e| Error::io("open the node", std::io::Error::other(e)))??;
        let failures = super::raft_network::PeerFailures::default();
        let network = super::raft_network::GrpcNetwork {
            secret,
            tls: tls.clone(),
            failures: Arc::clone(&failures),
        };
        let log_handle = log.clone();
        let raft = NodeRaft::new(id, Arc::new(config), network, log, sm.clone())
            .await
            .map_err(|e| Error::io("start raft", std::io::Error::other(e)))?;
        let lowest = peers.keys().next().copied();
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| Error::io("start raft", std::io::Error::other(e)))?;
        if !initialized && lowest == Some(id) {
            let members: BTreeMap<NodeId, BasicNode> = peers
                .iter()
                .map(|(id, addr)| (*id, BasicNode::new(addr.clone())))
                .collect();
            // Refused only when the node was initialized meanwhile (by a leader's
            // message): nothing to do then.
            if let Err(e) = raft.initialize(members).await {
                super::logline::emit(
                    "info",
                    "cluster_initialize",
                    serde_json::json!({ "node_id": id, "result": e.to_string() }),
                );
            }
        }
        let (queue, pending) = tokio::sync::mpsc::unbounded_channel();
        let pending = Arc::new(tokio::sync::Mutex::new(pending));
        for _ in 0..PROPOSERS {
            tokio::spawn(propose_batches(raft.clone(), Arc::clone(&pending)));
        }
        Ok(ClusterNode {
            inner: Arc::new(NodeInner {
                id,
                raft,
                sm,
                queue,
                tls,
                failures,
                log: log_handle,
                _lock: lock,
            }),
        })
    }

    /// How long the node's raft log syncs took: what makes its appends durable (its
    /// store is written without syncs of its own, see [`crate::cluster`]).
    pub fn log_sync_stats(&self) -> crate::SyncStats {
        self.inner.log.sync_stats()
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// Whether the node reaches its peers over TLS (it was started with trust roots).
    pub fn uses_tls(&self) -> bool {
        self.inner.tls.is_some()
    }

    /// The node's raft instance.
    pub fn raft(&self) -> &NodeRaft {
        &self.inner.raft
    }

    /// The node's state-machine store as it stands (replaced when a snapshot is
    /// installed), for reads. Writes go through raft only.
    pub fn store(&self) -> Store {
        self.inner.sm.store()
    }

    /// The node's store with what tells when a snapshot install replaces it (see
    /// [`crate::cluster::Replaced`]), for subscriptions.
    pub fn store_watched(&self) -> (Store, crate::cluster::Replaced) {
        self.inner.sm.store_watched()
    }

    /// Resolves when raft stops on its own, with why: a fatal error (a storage failure, or
    /// a raft log that lost entries the cluster counts on, as after a node's directory was
    /// wiped while the cluster remembers it). The node then answers nothing usefully; the
    /// reason is logged (`"event":"raft_stopped"`, level `error`) and a server should
    /// stop. Never resolves while raft runs, nor after [`ClusterNode::shutdown`] (which
    /// is no failure).
    pub async fn failed(&self) -> String {
        let mut metrics = self.inner.raft.metrics();
        loop {
            let state = metrics.borrow().running_state.clone();
            match state {
                Ok(()) => {}
                Err(openraft::error::Fatal::Stopped) => std::future::pending::<()>().await,
                Err(e) => {
                    let why = e.to_string();
                    super::logline::emit(
                        "error",
                        "raft_stopped",
                        serde_json::json!({
                            "node_id": self.inner.id,
                            "error": why,
                            "hint": "if this node's directory was wiped or restored from an \
                                     older copy, remove the node (streamlog cluster remove), \
                                     start it on an empty directory, then add it again \
                                     (add-learner, promote)",
                        }),
                    );
                    return why;
                }
            }
            if metrics.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Stops raft (the caller closes nothing else: the store is dropped with the node).
    ///
    /// # Errors
    /// [`Error::Io`] when raft reports a failure while stopping.
    pub async fn shutdown(&self) -> Result<()> {
        self.inner
            .raft
            .shutdown()
            .await
            .map_err(|e| Error::io("stop raft", std::io::Error::other(e)))
    }

    /// Proposes a command (an append, a delete, a tombstone, new metadata) through raft
    /// and waits for its replicated outcome.
    ///
    /// # Errors
    /// A not-leader status (with the leader's address) on a follower, UNAVAILABLE when no
    /// leader is known or the write timed out.
    ///
    /// Commands written concurrently are gathered into one entry (a [`Proposal::Batch`],
    /// see [`propose_batches`]), each still applied on its own with its own outcome.
    pub(super) async fn write(&self, cmd: Command) -> std::result::Result<Response, Status> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let bytes = command_bytes(&cmd);
        self.inner
            .queue
            .send(PendingWrite { cmd, bytes, answer })
            .map_err(|_| Status::unavailable("this node is shutting down"))?;
        answered
            .await
            .map_err(|_| Status::unavailable("this node is shutting down"))?
    }
}

/// A write waiting for its batch.
struct PendingWrite {
    cmd: Command,
    /// The bytes of its events (what bounds a batch).
    bytes: usize,
    answer: tokio::sync::oneshot::Sender<std::result::Result<Response, Status>>,
}

/// The bytes of a command's events or metadata.
fn command_bytes(cmd: &Command) -> usize {
    match &cmd.operation {
        Operation::Append(events) => events
            .iter()
            .map(|e| e.data.len() + e.metadata.len() + e.event_type.len())
            .sum(),
        Operation::SetMetadata { json, .. } => json.len(),
        Operation::Delete { .. } | Operation::Tombstone { .. } => 0,
    }
    .saturating_add(cmd.stream.len())
}

/// Takes the writes queued so far (at most [`MAX_BATCH_COMMANDS`] or [`MAX_BATCH_BYTES`]),
/// proposes them as one entry and answers each with its own outcome; until the queue
/// closes.
///
/// openraft 0.9's leader appends and syncs its log one entry at a time and takes the next
/// entry only after the sync, so each entry costs a sync and holds up the raft task: one
/// entry per client write bounded a cluster by the disk's syncs per second. Batches let the
/// writes that arrive during one sync share the next.
async fn propose_batches(
    raft: NodeRaft,
    pending: Arc<tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<PendingWrite>>>,
) {
    loop {
        let batch = {
            let mut queue = pending.lock().await;
            let Some(first) = queue.recv().await else {
                return;
            };
            let mut bytes = first.bytes;
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH_COMMANDS && bytes < MAX_BATCH_BYTES {
                match queue.try_recv() {
                    Ok(next) => {
                        bytes = bytes.saturating_add(next.bytes);
                        batch.push(next);
                    }
                    Err(_) => break,
                }
            }
            batch
        };
        let (mut cmds, answers): (Vec<Command>, Vec<_>) =
            batch.into_iter().map(|w| (w.cmd, w.answer)).unzip();
        let proposal = match cmds.pop() {
            Some(only) if cmds.is_empty() => Proposal::One(only),
            Some(last) => {
                cmds.push(last);
                Proposal::Batch(cmds)
            }
            None => continue,
        };
        match (write_proposal(&raft, proposal).await, answers.len()) {
            (Ok(Response::Batch(responses)), n) if responses.len() == n => {
                for (answer, response) in answers.into_iter().zip(responses) {
                    let _ = answer.send(Ok(response));
                }
            }
            (Ok(response), 1) if !matches!(response, Response::Batch(_)) => {
                for answer in answers {
                    let _ = answer.send(Ok(response.clone()));
                }
            }
            (Ok(_), _) => {
                for answer in answers {
                    let _ = answer.send(Err(Status::internal(
                        "a batch of writes was answered with the wrong number of outcomes",
                    )));
                }
            }
            (Err(status), _) => {
                for answer in answers {
                    let _ = answer.send(Err(status.clone()));
                }
            }
        }
    }
}

/// Proposes one entry and waits for its outcome.
async fn write_proposal(
    raft: &NodeRaft,
    proposal: Proposal,
) -> std::result::Result<Response, Status> {
    match tokio::time::timeout(WRITE_TIMEOUT, raft.client_write(proposal)).await {
        Ok(Ok(r)) => Ok(r.data),
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => Err(not_leader(&f)),
        Ok(Err(e)) => Err(Status::unavailable(format!(
            "the write was not replicated: {e}"
        ))),
        Err(_) => Err(Status::unavailable(format!(
            "the write was not committed within {} s (is a quorum of the cluster up?); \
                 retry it (an append with the same event ids)",
            WRITE_TIMEOUT.as_secs()
        ))),
    }
}

impl ClusterNode {
    /// Waits until this node may answer a read: at once when `requires_leader` is false
    /// (a follower's store, maybe behind the leader's), else after openraft confirmed
    /// this node leads and its store holds everything committed before the call.
    ///
    /// # Errors
    /// A not-leader status on a follower; UNAVAILABLE when the leadership cannot be
    /// confirmed in time.
    pub(super) async fn ready_to_read(
        &self,
        requires_leader: bool,
    ) -> std::result::Result<(), Status> {
        if !requires_leader {
            return Ok(());
        }
        match tokio::time::timeout(READ_CHECK_TIMEOUT, self.inner.raft.ensure_linearizable()).await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
                Err(not_leader(&f))
            }
            Ok(Err(e)) => Err(Status::unavailable(format!(
                "this node cannot confirm it leads: {e}"
            ))),
            Err(_) => Err(Status::unavailable(
                "this node could not confirm it leads in time (is a quorum up?)",
            )),
        }
    }

    /// The members as this node sees them: id, address, role, and whether it is known to
    /// be alive.
    pub fn members(&self) -> Vec<Member> {
        let m = self.inner.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let leader = m.current_leader;
        let heard = m.millis_since_quorum_ack;
        membership
            .nodes()
            .map(|(id, node)| {
                let role = if Some(*id) == leader {
                    Role::Leader
                } else if voters.contains(id) {
                    if leader.is_some() {
                        Role::Follower
                    } else {
                        Role::Unknown
                    }
                } else {
                    Role::Learner
                };
                // The leader knows who answers its heartbeats (it has a quorum, or it
                // would step down soon): a member whose last call failed is not alive.
                // Others know themselves and the leader they hear.
                let alive = *id == self.inner.id
                    || Some(*id) == leader
                    || (leader == Some(self.inner.id)
                        && heard.is_some_and(|ms| ms < 5_000)
                        && replicated_recently(&m, *id)
                        && !self.inner.failures.lock().contains_key(id));
                Member {
                    id: *id,
                    address: node.addr.clone(),
                    role,
                    alive,
                }
            })
            .collect()
    }

    /// This node's view as JSON, for `streamlog cluster status`.
    pub fn status(&self) -> serde_json::Value {
        let m = self.inner.raft.metrics().borrow().clone();
        serde_json::json!({
            "node_id": self.inner.id,
            "state": format!("{:?}", m.state),
            "current_term": m.current_term,
            "current_leader": m.current_leader,
            "last_log_index": m.last_log_index,
            "last_applied": m.last_applied.map(|l| l.index),
            "snapshot": m.snapshot.map(|l| l.index),
            "purged": m.purged.map(|l| l.index),
            "members": self.members(),
            "replication": m.replication.as_ref().map(|r| {
                r.iter()
                    .map(|(id, l)| (id.to_string(), serde_json::json!(l.map(|l| l.index))))
                    .collect::<serde_json::Map<_, _>>()
            }),
        })
    }

    /// Carries out a membership change (on the leader).
    pub(super) async fn admin(
        &self,
        request: AdminRequest,
    ) -> std::result::Result<serde_json::Value, Status> {
        let raft = &self.inner.raft;
        let map_err = |e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>| match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => not_leader(&f),
            RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
                Status::failed_precondition(e.to_string())
            }
            RaftError::Fatal(e) => Status::unavailable(e.to_string()),
        };
        match request {
            AdminRequest::AddLearner { id, address } => {
                check_address(&address).map_err(Status::invalid_argument)?;
                super::raft_network::channel(&address, self.inner.tls.as_ref())
                    .map_err(Status::invalid_argument)?;
                let r = raft
                    .add_learner(id, BasicNode::new(address), true)
                    .await
                    .map_err(map_err)?;
                Ok(serde_json::json!({ "added_learner": id, "log_index": r.log_id.index }))
            }
            AdminRequest::Promote { ids } => {
                let r = raft
                    .change_membership(ChangeMembers::AddVoterIds(ids.clone()), false)
                    .await
                    .map_err(map_err)?;
                Ok(serde_json::json!({ "promoted": ids, "log_index": r.log_id.index }))
            }
            AdminRequest::Remove { ids } => {
                let voters: BTreeSet<NodeId> = raft
                    .metrics()
                    .borrow()
                    .membership_config
                    .membership()
                    .voter_ids()
                    .collect();
                let removed_voters: BTreeSet<NodeId> = ids.intersection(&voters).copied().collect();
                if !removed_voters.is_empty() {
                    raft.change_membership(ChangeMembers::RemoveVoters(removed_voters), true)
                        .await
                        .map_err(map_err)?;
                }
                let r = raft
                    .change_membership(ChangeMembers::RemoveNodes(ids.clone()), false)
                    .await
                    .map_err(map_err)?;
                Ok(serde_json::json!({ "removed": ids, "log_index": r.log_id.index }))
            }
        }
    }
}

/// Whether a peer that leads the cluster has replicated entries to node `id` (it then
/// reports the index matched): asked of every other peer, each for at most a second. An
/// unreachable peer, or one that does not lead, says nothing.
async fn remembered_by_leader(
    id: NodeId,
    peers: &BTreeMap<NodeId, String>,
    tls: Option<&super::TlsRoots>,
) -> Option<(NodeId, u64)> {
    for (&peer, addr) in peers.iter().filter(|(p, _)| **p != id) {
        let Ok(Ok(status)) = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            super::raft_network::status(addr, tls),
        )
        .await
        else {
            continue;
        };
        let leads = status
            .get("current_leader")
            .and_then(serde_json::Value::as_u64)
            == Some(peer)
            && status.get("node_id").and_then(serde_json::Value::as_u64) == Some(peer);
        let matched = status
            .get("replication")
            .and_then(|r| r.get(id.to_string()))
            .and_then(serde_json::Value::as_u64);
        if leads && let Some(matched) = matched {
            return Some((peer, matched));
        }
    }
    None
}

/// The file in a node's directory that names its node id (a state file as `log-state`,
/// docs/format.md): written at its first start, checked at every later one.
pub const NODE_ID_FILE: &str = "NODE_ID";

/// Takes a node directory: refuses a plain store's directory, takes the directory's
/// lock (before anything in it is opened, so a second node on it recovers nothing), and
/// reads the node id it belongs to, if one was recorded (see [`NODE_ID_FILE`]).
fn claim_node_dir(
    dir: &Path,
    options: &Options,
) -> Result<(Box<dyn crate::io::LockGuard>, Option<NodeId>)> {
    let storage = options.storage.as_ref();
    let stat = |p: &Path| {
        storage
            .exists(p)
            .map_err(|e| Error::io(format!("stat {}", p.display()), e))
    };
    if stat(&dir.join(crate::store::SEGMENTS_DIR))? {
        return Err(Error::InvalidArgument(format!(
            "{} is a store, not a cluster node's directory: give the node a directory of its \
             own (a store is not made into a node)",
            dir.display()
        )));
    }
    crate::io::create_dir_durably(storage, dir)
        .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    let lock_path = dir.join(crate::store::LOCK_FILE);
    let lock = storage
        .try_lock(&lock_path, false)
        .map_err(|e| Error::io(format!("lock {}", lock_path.display()), e))?
        .ok_or(Error::Locked { path: lock_path })?;
    let recorded = crate::cluster::meta::read::<NodeId>(storage, dir, NODE_ID_FILE)?;
    Ok((lock, recorded))
}

/// Whether the leader's replication to `id` has reached past the entries it had when it
/// was elected (a member that answers).
fn replicated_recently(m: &openraft::RaftMetrics<NodeId, BasicNode>, id: NodeId) -> bool {
    m.replication
        .as_ref()
        .and_then(|r| r.get(&id).copied().flatten())
        .is_some()
}

/// A member's role, as this node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// The leader this node knows of.
    Leader,
    /// A voter following the leader.
    Follower,
    /// A non-voting member (a learner, KurrentDB's read-only replica).
    Learner,
    /// A voter while no leader is known.
    Unknown,
}

/// A member of the cluster, as [`ClusterNode::members`] lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Its node id.
    pub id: NodeId,
    /// Its address (`HOST:PORT`), as the peer list or `cluster add-learner` gave it.
    pub address: String,
    /// Its role.
    pub role: Role,
    /// Whether this node knows it to be alive.
    pub alive: bool,
}

impl Member {
    /// The host and port clients connect to.
    pub fn endpoint(&self) -> Option<(String, u16)> {
        host_port(&self.address)
    }
}

/// A membership change asked through the `Admin` call.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum AdminRequest {
    /// Adds a learner (non-voting), which the leader brings up to date before answering.
    AddLearner {
        /// The new node's id.
        id: NodeId,
        /// Its address.
        address: String,
    },
    /// Makes learners voters.
    Promote {
        /// The learners' ids.
        ids: BTreeSet<NodeId>,
    },
    /// Removes members (voters first become learners, then leave).
    Remove {
        /// Their ids.
        ids: BTreeSet<NodeId>,
    },
}

/// KurrentDB's "not leader" answer: NOT_FOUND with the `exception: not-leader` trailer and
/// the leader's host and port, which official clients read to reconnect to the leader.
/// Without a known leader (an election under way, or a node that has not joined an
/// initialized cluster yet), UNAVAILABLE: clients then look for a node again.
pub(super) fn not_leader(f: &ForwardToLeader<NodeId, BasicNode>) -> Status {
    let Some((host, port)) = f.leader_node.as_ref().and_then(|n| host_port(&n.addr)) else {
        return Status::unavailable(
            "this node is not the leader and knows no leader yet: an election is under way, \
             or this node is not in an initialized cluster yet (a new node waits for the \
             lowest-id node's first message, or for `streamlog cluster add-learner`); retry",
        );
    };
    let mut status = Status::not_found("Leader info available");
    let md = status.metadata_mut();
    md.insert("exception", MetadataValue::from_static("not-leader"));
    if let Ok(v) = MetadataValue::try_from(host.as_str()) {
        md.insert("leader-endpoint-host", v);
    }
    md.insert("leader-endpoint-port", MetadataValue::from(u32::from(port)));
    status
}

/// Whether a call asks for the leader, as KurrentDB reads `requires-leader`: `true` asks
/// for the leader (official clients send it with their default node preference, so their
/// reads are linearizable by default); `false` or no header (a client that prefers
/// followers or any node) lets any node answer from its own store.
pub(super) fn requires_leader(metadata: &tonic::metadata::MetadataMap) -> bool {
    metadata
        .get("requires-leader")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}
