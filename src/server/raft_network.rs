//! The raft network between the nodes of a cluster over gRPC: the `streamlog.raft.Raft`
//! service (`proto/streamlog/raft.proto`), its server ([`RaftService`]) and its client
//! ([`GrpcNetwork`], openraft's `RaftNetworkFactory` over tonic channels).
//!
//! **Encoding.** openraft's messages are serde types; they travel as JSON (serde_json,
//! already the format of the raft state files and of membership entries), except their
//! bulk: the entries of an AppendEntries go in the raft log's own binary record
//! encoding (the events' bytes as they are, not JSON arrays of numbers; the codec the
//! log already checks), and a snapshot chunk goes as raw bytes. openraft sends snapshots
//! in chunks (`snapshot_max_chunk_size`, 3 MiB by default).
//!
//! **Authentication.** With a [`ClusterSecret`], every call carries it in the
//! `streamlog-cluster-secret` header and the server's authentication layer refuses raft
//! and administration calls without it (`Status` stays open).
//!
//! **Failures.** Every call is bounded by openraft's time to live for it; a node that
//! cannot be reached is reported `Unreachable` (openraft backs off), other transport
//! failures as network errors, and the remote node's raft errors as remote errors.

use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use super::auth::{CLUSTER_SECRET_HEADER, ClusterSecret};
use super::cluster::{AdminRequest, ClusterNode};
use super::proto::streamlog::raft::raft_client::RaftClient;
use super::proto::streamlog::raft::raft_server;
use super::proto::streamlog::raft::{RaftReply, RaftRequest};
use crate::cluster::{BasicNode, NodeId, TypeConfig, decode_entries, encode_entries};

/// The largest raft message sent or accepted (a batch of entries or a snapshot chunk).
pub(super) const MAX_RAFT_MESSAGE_BYTES: usize = 1 << 30;

/// How long a connection to a peer may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>, Status> {
    serde_json::to_vec(value).map_err(|e| Status::internal(format!("encode: {e}")))
}

fn from_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Status> {
    serde_json::from_slice(bytes)
        .map_err(|e| Status::invalid_argument(format!("a raft message does not decode: {e}")))
}

/// Serves the raft traffic of one node, and the administration of the cluster.
#[derive(Debug, Clone)]
pub(super) struct RaftService {
    pub(super) node: ClusterNode,
}

#[tonic::async_trait]
impl raft_server::Raft for RaftService {
    async fn append_entries(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let RaftRequest { json, data } = request.into_inner();
        let mut rpc: AppendEntriesRequest<TypeConfig> = from_json(&json)?;
        rpc.entries = decode_entries(&data).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let result = self.node.raft().append_entries(rpc).await;
        Ok(Response::new(RaftReply {
            json: to_json(&result)?.into(),
        }))
    }

    async fn vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let rpc: VoteRequest<NodeId> = from_json(&request.into_inner().json)?;
        let result = self.node.raft().vote(rpc).await;
        Ok(Response::new(RaftReply {
            json: to_json(&result)?.into(),
        }))
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let RaftRequest { json, data } = request.into_inner();
        let mut rpc: InstallSnapshotRequest<TypeConfig> = from_json(&json)?;
        rpc.data = data.to_vec();
        let result = self.node.raft().install_snapshot(rpc).await;
        Ok(Response::new(RaftReply {
            json: to_json(&result)?.into(),
        }))
    }

    async fn admin(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let admin: AdminRequest = from_json(&request.into_inner().json)?;
        let answer = self.node.admin(admin).await?;
        Ok(Response::new(RaftReply {
            json: to_json(&answer)?.into(),
        }))
    }

    async fn status(&self, _request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        Ok(Response::new(RaftReply {
            json: to_json(&self.node.status())?.into(),
        }))
    }
}

/// A channel to `addr` (`HOST:PORT`, plain HTTP/2), connected on first use.
///
/// # Errors
/// A message when the address does not make a URI.
pub(super) fn channel(addr: &str) -> Result<Channel, String> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| format!("bad address {addr:?}: {e}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5));
    Ok(endpoint.connect_lazy())
}

/// A client of the raft service at `addr`.
///
/// # Errors
/// A message when the address does not make a URI.
pub(super) fn client(addr: &str) -> Result<RaftClient<Channel>, String> {
    Ok(RaftClient::new(channel(addr)?)
        .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES))
}

/// openraft's network over gRPC: one [`GrpcConnection`] per target.
#[derive(Debug, Clone, Default)]
pub(super) struct GrpcNetwork {
    /// Sent with every call when the cluster has one.
    pub(super) secret: Option<ClusterSecret>,
}

impl RaftNetworkFactory<TypeConfig> for GrpcNetwork {
    type Network = GrpcConnection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> GrpcConnection {
        GrpcConnection {
            target,
            client: client(&node.addr),
            secret: self.secret.clone(),
        }
    }
}

/// The client side of the raft service of one target node.
#[derive(Debug)]
pub(super) struct GrpcConnection {
    target: NodeId,
    /// The client, or why the target's address makes none.
    client: Result<RaftClient<Channel>, String>,
    secret: Option<ClusterSecret>,
}

/// `request` with the cluster's secret, when there is one.
fn with_secret<T>(request: T, secret: Option<&ClusterSecret>) -> Request<T> {
    let mut request = Request::new(request);
    if let Some(secret) = secret {
        request
            .metadata_mut()
            .insert(CLUSTER_SECRET_HEADER, secret.header_value());
    }
    request
}

/// Why a call failed before the target answered.
enum CallError {
    /// Not reachable (connection refused, timed out): openraft backs off.
    Unreachable(String),
    /// Another transport or protocol failure.
    Network(String),
}

impl CallError {
    fn into_rpc<E: std::error::Error>(self) -> RPCError<NodeId, BasicNode, E> {
        match self {
            CallError::Unreachable(m) => {
                RPCError::Unreachable(Unreachable::new(&std::io::Error::other(m)))
            }
            CallError::Network(m) => {
                RPCError::Network(NetworkError::new(&std::io::Error::other(m)))
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Method {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

impl GrpcConnection {
    /// Sends one request and returns the answer's JSON.
    async fn call(
        &mut self,
        method: Method,
        request: RaftRequest,
        ttl: Duration,
    ) -> Result<Vec<u8>, CallError> {
        let client = match &mut self.client {
            Ok(c) => c,
            Err(m) => return Err(CallError::Unreachable(m.clone())),
        };
        let mut request = with_secret(request, self.secret.as_ref());
        request.set_timeout(ttl);
        let call = async {
            match method {
                Method::AppendEntries => client.append_entries(request).await,
                Method::Vote => client.vote(request).await,
                Method::InstallSnapshot => client.install_snapshot(request).await,
            }
        };
        match tokio::time::timeout(ttl, call).await {
            Ok(Ok(reply)) => Ok(reply.into_inner().json.to_vec()),
            Ok(Err(status)) => Err(match status.code() {
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => {
                    CallError::Unreachable(format!("node {}: {}", self.target, status.message()))
                }
                _ => CallError::Network(format!("node {}: {status}", self.target)),
            }),
            Err(_) => Err(CallError::Unreachable(format!(
                "node {}: no answer within {} ms",
                self.target,
                ttl.as_millis()
            ))),
        }
    }

    /// Decodes the target's `Result` of a raft call.
    fn answer<T: DeserializeOwned, E: std::error::Error + DeserializeOwned>(
        &self,
        json: &[u8],
    ) -> Result<T, RPCError<NodeId, BasicNode, E>> {
        let result: Result<T, E> = serde_json::from_slice(json).map_err(|e| {
            CallError::Network(format!("node {}: bad answer: {e}", self.target)).into_rpc()
        })?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl GrpcConnection {
    /// One raft call: `rpc` as JSON with its bulk `data` beside it, bounded by openraft's
    /// time to live for it, and the target's `Result` decoded.
    async fn send<T: DeserializeOwned, E: std::error::Error + DeserializeOwned>(
        &mut self,
        method: Method,
        rpc: &impl Serialize,
        data: Vec<u8>,
        option: &RPCOption,
    ) -> Result<T, RPCError<NodeId, BasicNode, E>> {
        let json = serde_json::to_vec(rpc)
            .map_err(|e| CallError::Network(format!("encode: {e}")).into_rpc())?;
        let request = RaftRequest {
            json: json.into(),
            data: data.into(),
        };
        let reply = self
            .call(method, request, option.hard_ttl())
            .await
            .map_err(CallError::into_rpc)?;
        self.answer(&reply)
    }
}

impl RaftNetwork<TypeConfig> for GrpcConnection {
    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        // The entries travel in the raft log's record encoding, beside the JSON.
        let entries = std::mem::take(&mut rpc.entries);
        let data =
            encode_entries(&entries).map_err(|e| CallError::Network(e.to_string()).into_rpc())?;
        self.send(Method::AppendEntries, &rpc, data, &option).await
    }

    async fn install_snapshot(
        &mut self,
        mut rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        // The chunk travels raw, beside the JSON.
        let data = std::mem::take(&mut rpc.data);
        self.send(Method::InstallSnapshot, &rpc, data, &option)
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.send(Method::Vote, &rpc, Vec::new(), &option).await
    }
}

/// Sends an administration request to the node at `addr` (its leader for membership
/// changes), with the cluster's secret when it has one, and returns its JSON answer.
///
/// # Errors
/// [`Error::InvalidArgument`] for a bad address; [`Error::Io`] naming the node's answer
/// when it refuses (a follower names its leader; a node with a secret refuses a call
/// without it) or cannot be reached.
pub async fn admin(
    addr: &str,
    request: &AdminRequest,
    secret: Option<&ClusterSecret>,
) -> crate::Result<serde_json::Value> {
    let json = serde_json::to_vec(request)
        .map_err(|e| crate::Error::InvalidArgument(format!("encode: {e}")))?;
    call_admin(addr, json, Some(secret)).await
}

/// The status of the node at `addr` (its view of the cluster), as JSON.
///
/// # Errors
/// As [`admin`].
pub async fn status(addr: &str) -> crate::Result<serde_json::Value> {
    call_admin(addr, Vec::new(), None).await
}

/// An `Admin` call (with the secret to send, if any) when `admin` is `Some`, else a
/// `Status` call (open: it needs no secret).
async fn call_admin(
    addr: &str,
    json: Vec<u8>,
    admin: Option<Option<&ClusterSecret>>,
) -> crate::Result<serde_json::Value> {
    let mut client = client(addr).map_err(crate::Error::InvalidArgument)?;
    let request = RaftRequest {
        json: json.into(),
        data: Default::default(),
    };
    let reply = match admin {
        Some(secret) => client.admin(with_secret(request, secret)).await,
        None => client.status(request).await,
    };
    let reply = reply.map_err(|status| {
        let leader = status
            .metadata()
            .get("leader-endpoint-host")
            .zip(status.metadata().get("leader-endpoint-port"))
            .and_then(|(h, p)| Some(format!("{}:{}", h.to_str().ok()?, p.to_str().ok()?)));
        let message = match leader {
            Some(l) => format!("{addr} is not the leader; the leader is {l}"),
            None => format!("{addr}: {}", status.message()),
        };
        crate::Error::io("cluster administration", std::io::Error::other(message))
    })?;
    serde_json::from_slice(&reply.into_inner().json).map_err(|e| {
        crate::Error::io(
            "cluster administration",
            std::io::Error::other(format!("{addr} answered something else than JSON: {e}")),
        )
    })
}
