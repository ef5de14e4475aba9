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

/// Answers `Gossip`: one member, this node, always the leader.
#[derive(Debug, Clone)]
pub(super) struct GossipService {
    /// The address clients reach this node at.
    pub(super) advertised: SocketAddr,
    /// This node's id for this run.
    pub(super) instance_id: uuid::Uuid,
}

#[tonic::async_trait]
impl gossip::gossip_server::Gossip for GossipService {
    async fn read(&self, _request: Request<()>) -> Result<Response<ClusterInfo>, Status> {
        let (msb, lsb) = self.instance_id.as_u64_pair();
        Ok(Response::new(ClusterInfo {
            members: vec![MemberInfo {
                instance_id: Some(super::proto::event_store::client::Uuid {
                    value: Some(super::proto::event_store::client::uuid::Value::Structured(
                        super::proto::event_store::client::uuid::Structured {
                            most_significant_bits: msb.cast_signed(),
                            least_significant_bits: lsb.cast_signed(),
                        },
                    )),
                }),
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
