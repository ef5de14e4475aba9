//! `ServerFeatures.GetSupportedMethods` and `Gossip.Read`: what clients ask when they
//! connect.

use std::net::SocketAddr;

use tonic::{Request, Response, Status};

use super::convert;
use super::proto::event_store::client::gossip::{self, ClusterInfo, EndPoint, MemberInfo};
use super::proto::event_store::client::server_features::{self, SupportedMethod, SupportedMethods};

/// The server version clients are told. Clients compare it with the KurrentDB versions
/// that brought each feature; streamlog speaks the protocol of the 24.x servers.
pub(super) const PROTOCOL_VERSION: &str = "24.10.0";

/// The methods this server implements, honestly: (service, method, features).
const SUPPORTED: &[(&str, &str, &[&str])] = &[
    (
        "event_store.client.streams.streams",
        "read",
        &["position", "events", "filter"],
    ),
    ("event_store.client.streams.streams", "append", &[]),
    ("event_store.client.streams.streams", "batchappend", &[]),
    ("event_store.client.streams.streams", "delete", &[]),
    ("event_store.client.streams.streams", "tombstone", &[]),
    (
        "event_store.client.server_features.serverfeatures",
        "getsupportedmethods",
        &[],
    ),
    ("event_store.client.gossip.gossip", "read", &[]),
];

/// Answers `ServerFeatures`.
#[derive(Debug, Clone, Default)]
pub(super) struct FeaturesService;

#[tonic::async_trait]
impl server_features::server_features_server::ServerFeatures for FeaturesService {
    async fn get_supported_methods(
        &self,
        _request: Request<()>,
    ) -> Result<Response<SupportedMethods>, Status> {
        Ok(Response::new(SupportedMethods {
            methods: SUPPORTED
                .iter()
                .map(|(service, method, features)| SupportedMethod {
                    method_name: (*method).to_owned(),
                    service_name: (*service).to_owned(),
                    features: features.iter().map(|f| (*f).to_owned()).collect(),
                })
                .collect(),
            event_store_server_version: PROTOCOL_VERSION.to_owned(),
        }))
    }
}

/// Answers `Gossip`: one member, this node, always the leader; or a cluster's members.
#[derive(Debug, Clone)]
pub(super) struct GossipService {
    /// The address clients reach this node at.
    pub(super) advertised: SocketAddr,
    /// This node's id for this run.
    pub(super) instance_id: uuid::Uuid,
    /// The raft node when the server is a node of a cluster: the members come from it.
    #[cfg(feature = "cluster")]
    pub(super) node: Option<super::cluster::ClusterNode>,
}

/// A UUID in the protocol's structured form.
fn structured_uuid(id: uuid::Uuid) -> super::proto::event_store::client::Uuid {
    use super::proto::event_store::client::uuid;
    let (msb, lsb) = id.as_u64_pair();
    super::proto::event_store::client::Uuid {
        value: Some(uuid::Value::Structured(uuid::Structured {
            most_significant_bits: msb.cast_signed(),
            least_significant_bits: lsb.cast_signed(),
        })),
    }
}

/// The members of a cluster as KurrentDB's gossip lists them: leader, followers, learners
/// as read-only replicas (which clients with the default preference never pick for
/// writes); each member's instance id is derived from its node id, stable across runs.
#[cfg(feature = "cluster")]
fn cluster_members(node: &super::cluster::ClusterNode) -> Vec<MemberInfo> {
    use super::cluster::Role;
    use gossip::member_info::VNodeState;
    node.members()
        .into_iter()
        .filter_map(|m| {
            let (address, port) = m.endpoint()?;
            let state = match m.role {
                Role::Leader => VNodeState::Leader,
                Role::Follower => VNodeState::Follower,
                Role::Learner => VNodeState::ReadOnlyReplica,
                Role::Unknown => VNodeState::Unknown,
            };
            Some(MemberInfo {
                instance_id: Some(structured_uuid(uuid::Uuid::from_u64_pair(0, m.id))),
                time_stamp: convert::now_ticks(),
                state: state as i32,
                is_alive: m.alive,
                http_end_point: Some(EndPoint {
                    address,
                    port: u32::from(port),
                }),
            })
        })
        .collect()
}

#[tonic::async_trait]
impl gossip::gossip_server::Gossip for GossipService {
    async fn read(&self, _request: Request<()>) -> Result<Response<ClusterInfo>, Status> {
        #[cfg(feature = "cluster")]
        if let Some(node) = &self.node {
            return Ok(Response::new(ClusterInfo {
                members: cluster_members(node),
            }));
        }
        Ok(Response::new(ClusterInfo {
            members: vec![MemberInfo {
                instance_id: Some(structured_uuid(self.instance_id)),
                time_stamp: convert::now_ticks(),
                state: gossip::member_info::VNodeState::Leader as i32,
                is_alive: true,
                http_end_point: Some(EndPoint {
                    address: self.advertised.ip().to_string(),
                    port: u32::from(self.advertised.port()),
                }),
            }],
        }))
    }
}
