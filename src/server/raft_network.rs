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
//! **TLS.** With [`TlsRoots`], the client connects over TLS (tonic's client TLS: rustls
//! with the ring provider, HTTP/2 by ALPN) and verifies the peer's certificate against
//! those roots and the host of the peer's address; a peer that fails is refused at the
//! handshake, so neither the raft traffic nor the secret reaches it. Without, plain
//! HTTP/2 (a cluster's nodes all serve TLS or none does).
//!
//! **Failures.** Every call is bounded by openraft's time to live for it; a node that
//! cannot be reached is reported `Unreachable` (openraft backs off), other transport
//! failures as network errors, and the remote node's raft errors as remote errors. A
//! node logs when a peer stops answering and why (a refused certificate, a peer that does
//! not speak TLS), once until the reason changes, and when it answers again.

use std::collections::BTreeMap;
use std::sync::Arc;
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
use super::cluster::{AdminRequest, ClusterNode, host_port};
use super::logline;
use super::proto::streamlog::raft::raft_client::RaftClient;
use super::proto::streamlog::raft::raft_server;
use super::proto::streamlog::raft::{RaftReply, RaftRequest};
use super::tls::TlsRoots;
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

/// A channel to `addr` (`HOST:PORT`), connected on first use: plain HTTP/2, or with
/// `tls` over TLS, the peer's certificate verified against those roots for the host of
/// `addr`.
///
/// # Errors
/// A message when the address does not make a URI, or its host no TLS server name.
pub(super) fn channel(addr: &str, tls: Option<&TlsRoots>) -> Result<Channel, String> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
        .map_err(|e| format!("bad address {addr:?}: {e}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5));
    if let Some(roots) = tls {
        // The name the peer's certificate must carry: the host of its address (an IPv6
        // host without its brackets).
        let (host, _) = host_port(addr).ok_or_else(|| format!("bad address {addr:?}"))?;
        endpoint = endpoint
            .tls_config(roots.client_config(&host))
            .map_err(|e| format!("address {addr:?}: no TLS server name: {}", chain(&e)))?;
    }
    Ok(endpoint.connect_lazy())
}

/// A client of the raft service at `addr` (see [`channel`]).
///
/// # Errors
/// As [`channel`].
pub(super) fn client(addr: &str, tls: Option<&TlsRoots>) -> Result<RaftClient<Channel>, String> {
    Ok(RaftClient::new(channel(addr, tls)?)
        .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES))
}

/// `error` and its sources, `: `-separated, each said once (tonic's transport errors
/// say what went wrong only in their sources: the refused certificate, the reset
/// connection, often repeated at several levels).
fn chain(error: &dyn std::error::Error) -> String {
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(e) = source {
        parts.push(e.to_string());
        source = e.source();
    }
    join_parts(parts)
}

/// `parts` joined with `: `, leaving out tonic's bare "transport error" (unless it is
/// all there is) and any part that another one already says.
fn join_parts(parts: Vec<String>) -> String {
    let mut kept: Vec<String> = Vec::new();
    let first = parts.first().cloned().unwrap_or_default();
    for part in parts {
        if part == "transport error" || kept.iter().any(|k| k.contains(&part)) {
            continue;
        }
        kept.retain(|k| !part.contains(k.as_str()));
        kept.push(part);
    }
    if kept.is_empty() {
        return first;
    }
    kept.join(": ")
}

/// What a failed call says, with a hint when the peer's certificate was refused or the
/// two ends do not agree on TLS (`tls`: whether the call was made over TLS).
fn describe(status: &Status, tls: bool) -> String {
    let mut parts = vec![status.message().to_string()];
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        parts.push(e.to_string());
        source = e.source();
    }
    let text = join_parts(parts);
    let hint = if tls {
        if text.contains("CaUsedAsEndEntity") {
            " (the node's certificate is a CA certificate, which a server's must not be: a \
             self-signed certificate shared by the nodes needs basicConstraints CA:FALSE; or \
             sign the nodes' certificates with a CA and give its certificate as --tls-ca)"
        } else if text.contains("invalid peer certificate") {
            " (the node's certificate does not verify against the trust roots: --tls-ca, or \
             without it the certificate chain of the node's own --tls-cert)"
        } else if text.contains("InvalidContentType")
            || text.contains("corrupt message")
            || text.contains("tls handshake eof")
            || text.contains("unexpected EOF")
        {
            " (the node does not seem to speak TLS: is it started without --tls-cert?)"
        } else {
            ""
        }
    } else if [
        "h2 protocol error",
        "broken pipe",
        "connection reset",
        "connection error",
        "connection closed",
    ]
    .iter()
    .any(|s| text.to_ascii_lowercase().contains(s))
    {
        // A TLS server answers a plain client's preface with a TLS alert and closes: the
        // client sees a protocol error or a closed connection, which one depends on
        // timing.
        " (if the node serves TLS, connect over TLS: --tls-ca)"
    } else {
        ""
    };
    format!("{text}{hint}")
}

/// The latest failure of each peer that does not answer, as logged.
pub(super) type PeerFailures = Arc<parking_lot::Mutex<BTreeMap<NodeId, String>>>;

/// openraft's network over gRPC: one [`GrpcConnection`] per target.
#[derive(Debug, Clone, Default)]
pub(super) struct GrpcNetwork {
    /// Sent with every call when the cluster has one.
    pub(super) secret: Option<ClusterSecret>,
    /// The roots the peers' certificates are verified against; plain HTTP/2 without.
    pub(super) tls: Option<TlsRoots>,
    /// Shared by the connections (openraft opens one per election round too), so a
    /// peer's failure is logged once until its reason changes.
    pub(super) failures: PeerFailures,
}

impl RaftNetworkFactory<TypeConfig> for GrpcNetwork {
    type Network = GrpcConnection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> GrpcConnection {
        GrpcConnection {
            target,
            addr: node.addr.clone(),
            client: client(&node.addr, self.tls.as_ref()),
            secret: self.secret.clone(),
            tls: self.tls.is_some(),
            failures: Arc::clone(&self.failures),
        }
    }
}

/// The client side of the raft service of one target node.
#[derive(Debug)]
pub(super) struct GrpcConnection {
    target: NodeId,
    addr: String,
    /// The client, or why the target's address makes none.
    client: Result<RaftClient<Channel>, String>,
    secret: Option<ClusterSecret>,
    tls: bool,
    failures: PeerFailures,
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
        let outcome = match tokio::time::timeout(ttl, call).await {
            Ok(Ok(reply)) => Ok(reply.into_inner().json.to_vec()),
            Ok(Err(status)) => {
                let why = describe(&status, self.tls);
                self.failed(&why);
                Err(match status.code() {
                    tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => {
                        CallError::Unreachable(format!("node {}: {why}", self.target))
                    }
                    _ => CallError::Network(format!("node {}: {why}", self.target)),
                })
            }
            // A slow answer is no news about the connection: not logged.
            Err(_) => Err(CallError::Unreachable(format!(
                "node {}: no answer within {} ms",
                self.target,
                ttl.as_millis()
            ))),
        };
        if outcome.is_ok() {
            self.answered();
        }
        outcome
    }

    /// Logs that the target failed for `why`, unless that was already said.
    fn failed(&self, why: &str) {
        let mut failures = self.failures.lock();
        if failures.get(&self.target).is_some_and(|w| w == why) {
            return;
        }
        failures.insert(self.target, why.to_string());
        logline::emit(
            "warn",
            "raft_peer_failed",
            serde_json::json!({ "peer": self.target, "address": self.addr, "error": why }),
        );
    }

    /// Logs that the target answers again after a logged failure.
    fn answered(&self) {
        if self.failures.lock().remove(&self.target).is_some() {
            logline::emit(
                "info",
                "raft_peer_answers",
                serde_json::json!({ "peer": self.target, "address": self.addr }),
            );
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
/// With `tls`, over TLS, the node's certificate verified against those roots (as the
/// nodes of a cluster that serves TLS reach each other); without, plain HTTP/2.
///
/// # Errors
/// [`Error::InvalidArgument`] for a bad address; [`Error::Io`] naming the node's answer
/// when it refuses (a follower names its leader; a node with a secret refuses a call
/// without it) or cannot be reached (its certificate refused, or the node and this call
/// not agreeing on TLS, said so).
///
/// [`Error::InvalidArgument`]: crate::Error::InvalidArgument
/// [`Error::Io`]: crate::Error::Io
pub async fn admin(
    addr: &str,
    request: &AdminRequest,
    secret: Option<&ClusterSecret>,
    tls: Option<&TlsRoots>,
) -> crate::Result<serde_json::Value> {
    let json = serde_json::to_vec(request)
        .map_err(|e| crate::Error::InvalidArgument(format!("encode: {e}")))?;
    call_admin(addr, json, Some(secret), tls).await
}

/// The status of the node at `addr` (its view of the cluster), as JSON; with `tls` as
/// [`admin`].
///
/// # Errors
/// As [`admin`].
pub async fn status(addr: &str, tls: Option<&TlsRoots>) -> crate::Result<serde_json::Value> {
    call_admin(addr, Vec::new(), None, tls).await
}

/// An `Admin` call (with the secret to send, if any) when `admin` is `Some`, else a
/// `Status` call (open: it needs no secret).
async fn call_admin(
    addr: &str,
    json: Vec<u8>,
    admin: Option<Option<&ClusterSecret>>,
    tls: Option<&TlsRoots>,
) -> crate::Result<serde_json::Value> {
    let mut client = client(addr, tls).map_err(crate::Error::InvalidArgument)?;
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
            // A single-node server has no raft service.
            None if status.code() == tonic::Code::Unimplemented => format!(
                "{addr} is not a cluster node (a single-node server: it was started without \
                 --node-id)"
            ),
            None => format!("{addr}: {}", describe(&status, tls.is_some())),
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

#[cfg(test)]
mod tests {
    use super::join_parts;

    #[test]
    fn an_error_chain_says_each_reason_once_without_tonics_bare_transport_error() {
        let parts = |p: &[&str]| p.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(
            join_parts(parts(&[
                "invalid peer certificate: UnknownIssuer",
                "transport error",
                "invalid peer certificate: UnknownIssuer",
            ])),
            "invalid peer certificate: UnknownIssuer"
        );
        // A later part that says more replaces the one it contains.
        assert_eq!(
            join_parts(parts(&[
                "error trying to connect",
                "tcp connect error",
                "tcp connect error: Connection refused"
            ])),
            "error trying to connect: tcp connect error: Connection refused"
        );
        assert_eq!(join_parts(parts(&["transport error"])), "transport error");
    }
}
