//! Three openraft nodes in one process on our raft log and state machine, connected by
//! direct calls (the servers' gRPC network is tested in server-tests): elections,
//! replicated appends with expected versions and retries, a new node brought up to date
//! by a snapshot after the leader purged its log, a retry recognised by the next leader
//! after the first stops, and replicated deletes, tombstones and metadata.
//!
//! Run with `cargo test --release --test integration cluster_raft::` (the `cluster` feature,
//! on by default, compiles this module).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{Config, Raft, SnapshotPolicy};
use parking_lot::Mutex;
use streamlog::cluster::{
    BasicNode, Command, RaftLog, Replaced, Response, StoreStateMachine, TypeConfig,
};
use streamlog::{Delivery, EventId, ExpectedVersion, NewEvent, Options, Position, SubscribeAll};

type NodeRaft = Raft<TypeConfig>;

/// Delivers each request by calling the target node's `Raft` directly.
#[derive(Clone, Default)]
struct Router {
    nodes: Arc<Mutex<BTreeMap<u64, NodeRaft>>>,
}

struct Conn {
    router: Router,
    target: u64,
}

impl RaftNetworkFactory<TypeConfig> for Router {
    type Network = Conn;

    async fn new_client(&mut self, target: u64, _node: &BasicNode) -> Conn {
        Conn {
            router: self.clone(),
            target,
        }
    }
}

impl Conn {
    // The error is openraft's, as its network trait returns it.
    #[allow(clippy::result_large_err)]
    fn raft<E: std::error::Error>(&self) -> Result<NodeRaft, RPCError<u64, BasicNode, E>> {
        self.router
            .nodes
            .lock()
            .get(&self.target)
            .cloned()
            .ok_or_else(|| {
                RPCError::Network(NetworkError::new(&std::io::Error::other("no such node")))
            })
    }
}

impl RaftNetwork<TypeConfig> for Conn {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        let raft = self.raft()?;
        raft.append_entries(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        let raft = self.raft()?;
        raft.install_snapshot(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        _option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        let raft = self.raft()?;
        raft.vote(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

struct Node {
    id: u64,
    raft: NodeRaft,
    sm: StoreStateMachine,
}

async fn start(router: &Router, dir: &std::path::Path, id: u64) -> Node {
    let config = Config {
        heartbeat_interval: 100,
        election_timeout_min: 400,
        election_timeout_max: 800,
        // Snapshots and purges happen during the test: the new node must get one.
        snapshot_policy: SnapshotPolicy::LogsSinceLast(20),
        max_in_snapshot_log_to_keep: 0,
        purge_batch_size: 1,
        ..Config::default()
    }
    .validate()
    .unwrap();
    let log = RaftLog::open(dir.join(format!("n{id}/raft"))).unwrap();
    let sm = StoreStateMachine::open(dir.join(format!("n{id}/sm")), Options::default()).unwrap();
    let raft = Raft::new(id, Arc::new(config), router.clone(), log, sm.clone())
        .await
        .unwrap();
    router.nodes.lock().insert(id, raft.clone());
    Node { id, raft, sm }
}

fn events(sm: &StoreStateMachine) -> Vec<(String, u64, EventId)> {
    sm.store()
        .read_all(Position::START)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.stream.to_string(), e.version, e.id)
        })
        .collect()
}

fn append(stream: &str, expected: ExpectedVersion, id: u8) -> Command {
    Command::append(
        stream,
        expected,
        [NewEvent::new("E", [id]).with_id(EventId([id; 16]))],
    )
}

/// Starts nodes 1 to 3, initializes them as a cluster and waits for a leader; returns
/// the nodes and the leader's id.
async fn three_nodes(router: &Router, dir: &std::path::Path) -> (Vec<Node>, u64) {
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(start(router, dir, id).await);
    }
    let members: BTreeMap<u64, BasicNode> = (1..=3)
        .map(|id| (id, BasicNode::new(format!("n{id}"))))
        .collect();
    nodes[0].raft.initialize(members).await.unwrap();
    let m = nodes[0]
        .raft
        .wait(Some(Duration::from_secs(10)))
        .metrics(|m| m.current_leader.is_some(), "a leader")
        .await
        .unwrap();
    (nodes, m.current_leader.unwrap())
}

/// Waits until every node of `nodes` applied what `leader` applied.
async fn caught_up<'a>(leader: &NodeRaft, nodes: impl IntoIterator<Item = &'a Node>) {
    let last = leader.metrics().borrow().last_applied.unwrap().index;
    for n in nodes {
        n.raft
            .wait(Some(Duration::from_secs(10)))
            .applied_index_at_least(Some(last), "caught up")
            .await
            .unwrap();
    }
}

/// Waits (10 s at most) until `survivor` sees a leader other than `old`, and returns it.
async fn new_leader(router: &Router, survivor: &Node, old: u64) -> NodeRaft {
    let m = survivor
        .raft
        .wait(Some(Duration::from_secs(10)))
        .metrics(
            |m| m.current_leader.is_some_and(|l| l != old),
            "a new leader",
        )
        .await
        .unwrap();
    router
        .nodes
        .lock()
        .get(&m.current_leader.unwrap())
        .cloned()
        .unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn three_nodes_replicate_catch_up_a_new_node_by_snapshot_and_survive_the_leader() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let router = Router::default();
        let (nodes, leader_id) = three_nodes(&router, dir.path()).await;
        let leader = router.nodes.lock().get(&leader_id).cloned().unwrap();

        // Every replica decides by expected version the same way.
        for i in 0..60u8 {
            let expected = if i == 0 {
                ExpectedVersion::NoStream
            } else {
                ExpectedVersion::Exact(u64::from(i) - 1)
            };
            let r = leader
                .client_write(append("order-1", expected, i).into())
                .await
                .unwrap();
            assert!(
                matches!(r.data, Response::Appended(a) if a.first_version == u64::from(i)),
                "{:?}",
                r.data
            );
        }
        let stale = leader
            .client_write(append("order-1", ExpectedVersion::Exact(3), 200).into())
            .await
            .unwrap();
        assert_eq!(
            stale.data,
            Response::WrongExpectedVersion { actual: Some(59) }
        );
        // A retry of an append already stored answers its original result.
        let retry = leader
            .client_write(append("order-1", ExpectedVersion::Exact(58), 59).into())
            .await
            .unwrap();
        assert!(
            matches!(retry.data, Response::Appended(a) if a.first_version == 59 && a.deduplicated),
            "{:?}",
            retry.data
        );
        let last = leader.metrics().borrow().last_applied.unwrap().index;
        for n in &nodes {
            n.raft
                .wait(Some(Duration::from_secs(10)))
                .applied_index(Some(last), "caught up")
                .await
                .unwrap();
        }
        let want = events(&nodes[0].sm);
        assert_eq!(want.len(), 60);
        for n in &nodes[1..] {
            assert_eq!(events(&n.sm), want);
        }

        // The leader's log was purged behind its snapshots: a new node can only catch
        // up by installing one.
        let purged = leader.metrics().borrow().purged;
        assert!(purged.is_some_and(|p| p.index > 1), "purged: {purged:?}");
        let n4 = start(&router, dir.path(), 4).await;
        // A subscription follows the new node's store as it stands before it joins; the
        // snapshot replaces that store, and says so to whoever took it.
        let (empty, mut replaced) = n4.sm.store_watched();
        let mut subscription = empty.subscribe_all(SubscribeAll::from_start()).unwrap();
        assert!(!replaced.is_replaced());
        let others: Vec<Replaced> = nodes.iter().map(|n| n.sm.store_watched().1).collect();
        leader
            .add_learner(4, BasicNode::new("n4"), true)
            .await
            .unwrap();
        n4.raft
            .wait(Some(Duration::from_secs(10)))
            .applied_index_at_least(Some(last), "learner caught up")
            .await
            .unwrap();
        assert!(n4.raft.metrics().borrow().snapshot.is_some());
        assert_eq!(events(&n4.sm), want);
        tokio::time::timeout(Duration::from_secs(10), replaced.wait())
            .await
            .expect("the snapshot install replaced the store");
        assert!(replaced.is_replaced());
        // The replaced store got none of the events: a subscription on it would wait for
        // ever, which is why the server ends those subscriptions.
        assert!(empty.read_all(Position::START).unwrap().next().is_none());
        let mut delivered = Vec::new();
        while let Some(d) = subscription
            .next_timeout(Duration::from_millis(100))
            .unwrap()
        {
            if let Delivery::Event(e) = d {
                delivered.push(e.id);
            }
        }
        assert!(delivered.is_empty(), "{delivered:?}");
        assert!(!n4.sm.store_watched().1.is_replaced());
        // The nodes that were up to date installed nothing.
        assert!(others.iter().all(|r| !r.is_replaced()));

        // The leader stops: the two other voters elect a new one, which recognises a
        // retry of an append the old leader stored, and goes on.
        router.nodes.lock().remove(&leader_id);
        leader.shutdown().await.unwrap();
        let survivors: Vec<&Node> = nodes
            .iter()
            .chain([&n4])
            .filter(|n| n.id != leader_id)
            .collect();
        let new_leader = new_leader(&router, survivors[0], leader_id).await;
        let retry = new_leader
            .client_write(append("order-1", ExpectedVersion::Exact(58), 59).into())
            .await
            .unwrap();
        assert!(
            matches!(retry.data, Response::Appended(a) if a.first_version == 59 && a.deduplicated),
            "{:?}",
            retry.data
        );
        let next = new_leader
            .client_write(append("order-1", ExpectedVersion::Exact(59), 60).into())
            .await
            .unwrap();
        assert!(
            matches!(next.data, Response::Appended(a) if a.first_version == 60 && !a.deduplicated),
            "{:?}",
            next.data
        );
        let last = new_leader.metrics().borrow().last_applied.unwrap().index;
        for n in &survivors {
            n.raft
                .wait(Some(Duration::from_secs(10)))
                .applied_index_at_least(Some(last), "caught up")
                .await
                .unwrap();
        }
        let want = events(&survivors[0].sm);
        assert_eq!(want.len(), 61);
        for n in &survivors[1..] {
            assert_eq!(events(&n.sm), want);
        }

        for n in survivors {
            n.raft.shutdown().await.unwrap();
        }
    });
}

/// Deletes, tombstones and metadata are replicated commands: every node holds them (the
/// same records), every node decides later writes the same, and a new leader goes on
/// refusing appends to a tombstoned stream.
#[test]
fn deletes_tombstones_and_metadata_are_replicated_and_survive_the_leader() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let router = Router::default();
        let (nodes, leader_id) = three_nodes(&router, dir.path()).await;
        let leader = router.nodes.lock().get(&leader_id).cloned().unwrap();
        for (i, stream) in ["soft", "hard", "meta"].into_iter().enumerate() {
            for v in 0..3u8 {
                let expected = match v {
                    0 => ExpectedVersion::NoStream,
                    v => ExpectedVersion::Exact(u64::from(v) - 1),
                };
                let r = leader
                    .client_write(append(stream, expected, 10 * i as u8 + v + 1).into())
                    .await
                    .unwrap();
                assert!(matches!(r.data, Response::Appended(_)), "{:?}", r.data);
            }
        }
        let write = |cmd: Command| {
            let leader = leader.clone();
            async move { leader.client_write(cmd.into()).await.unwrap().data }
        };
        // A stale expected version is refused by the replicated decision.
        assert_eq!(
            write(Command::delete("soft", ExpectedVersion::Exact(1))).await,
            Response::WrongExpectedVersion { actual: Some(2) }
        );
        let r = write(Command::delete("soft", ExpectedVersion::Exact(2))).await;
        assert!(matches!(r, Response::Appended(_)), "{r:?}");
        let r = write(Command::tombstone("hard", ExpectedVersion::Exact(2))).await;
        assert!(matches!(r, Response::Appended(_)), "{r:?}");
        let meta = br#"{"$maxCount":1,"owner":"ops"}"#;
        let r =
            write(Command::set_metadata("meta", ExpectedVersion::NoStream, meta).unwrap()).await;
        assert!(
            matches!(r, Response::Appended(a) if a.first_version == 0),
            "{r:?}"
        );
        assert_eq!(
            write(Command::set_metadata("meta", ExpectedVersion::NoStream, meta).unwrap()).await,
            Response::WrongExpectedVersion { actual: Some(0) }
        );
        assert_eq!(
            write(append("hard", ExpectedVersion::Any, 99)).await,
            Response::StreamDeleted
        );

        // A follower does not take a delete: it names the leader.
        let follower = nodes.iter().find(|n| n.id != leader_id).unwrap();
        let refused = follower
            .raft
            .client_write(Command::tombstone("soft", ExpectedVersion::Any).into())
            .await
            .unwrap_err();
        let forward = refused.forward_to_leader().expect("a not-leader answer");
        assert_eq!(forward.leader_id, Some(leader_id));

        caught_up(&leader, &nodes).await;
        let want = events(&nodes[0].sm);
        for n in &nodes {
            assert_eq!(events(&n.sm), want, "node {}", n.id);
            let store = n.sm.store();
            assert_eq!(store.stream_version("soft").unwrap(), None, "node {}", n.id);
            assert!(matches!(
                store.stream_version("hard"),
                Err(streamlog::Error::StreamDeleted { .. })
            ));
            let m = store.stream_metadata("meta").unwrap();
            assert_eq!((m.max_count, m.metadata_version), (Some(1), Some(0)));
            let readable: Vec<u64> = store
                .read_stream("meta", 0)
                .unwrap()
                .map(|e| e.unwrap().version)
                .collect();
            assert_eq!(readable, [2], "node {}", n.id);
        }

        // The leader stops; the new one refuses appends to the tombstoned stream as the
        // old one did, and re-creates the soft-deleted one after its old versions.
        router.nodes.lock().remove(&leader_id);
        leader.shutdown().await.unwrap();
        let survivors: Vec<&Node> = nodes.iter().filter(|n| n.id != leader_id).collect();
        let new_leader = new_leader(&router, survivors[0], leader_id).await;
        let r = new_leader
            .client_write(append("hard", ExpectedVersion::Any, 98).into())
            .await
            .unwrap();
        assert_eq!(r.data, Response::StreamDeleted);
        let r = new_leader
            .client_write(Command::tombstone("hard", ExpectedVersion::Any).into())
            .await
            .unwrap();
        assert_eq!(r.data, Response::StreamDeleted);
        let r = new_leader
            .client_write(append("soft", ExpectedVersion::NoStream, 97).into())
            .await
            .unwrap();
        assert!(
            matches!(r.data, Response::Appended(a) if a.first_version == 3),
            "{:?}",
            r.data
        );
        caught_up(&new_leader, survivors.iter().copied()).await;
        let want = events(&survivors[0].sm);
        assert_eq!(events(&survivors[1].sm), want);
        for n in survivors {
            n.raft.shutdown().await.unwrap();
        }
    });
}
