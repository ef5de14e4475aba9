//! A KurrentDB-compatible gRPC server over a [`Store`] (feature `server`): the official
//! KurrentDB/EventStoreDB clients (Rust, .NET, Java, Node, Python, Go) append, read and
//! subscribe through it as they would with a KurrentDB node. Built on the public `Store`
//! API only; `streamlog serve` runs it.
//!
//! ```no_run
//! # async fn run() -> streamlog::Result<()> {
//! use streamlog::server::{Server, ServerOptions};
//!
//! let store = streamlog::Store::open("data")?;
//! let server = Server::bind(store, ServerOptions::new("127.0.0.1:2113".parse().unwrap())).await?;
//! server.run(async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```
//!
//! What is supported and how positions map is in docs/server.md. Blocking store calls
//! (appends wait for their fsync) run on tokio's blocking threads; reads and
//! subscriptions hand their answers over through small bounded channels, so a slow client
//! holds its own reader up and never grows the server's memory.

// The handlers answer with tonic's `Status` (large, but what every call returns in the
// end); boxing it on the way would only move the allocation.
#![allow(clippy::result_large_err)]

mod appender;
mod auth;
#[cfg(feature = "cluster")]
pub mod cluster;
mod connection;
mod convert;
mod features;
mod limits;
mod logline;
mod metadata;
mod metrics;
mod proto;
#[cfg(feature = "cluster")]
mod raft_network;
mod read;
mod streams;
mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use auth::{ClusterSecret, Users, hash_password};
#[cfg(feature = "cluster")]
pub use raft_network::{admin as cluster_admin, status as cluster_status};
pub use tls::{TlsIdentity, TlsRoots};

use tokio::sync::{mpsc, watch};
use tonic::Status;
use tonic::codegen::http;
use tonic::service::Routes;

use crate::error::{Error, Result};
use crate::store::Store;
use limits::Limits;
use proto::event_store::client::{gossip, server_features, streams as pb_streams};

/// KurrentDB's port, the default of `streamlog serve`.
pub const DEFAULT_PORT: u16 = 2113;

/// How a [`Server`] listens and what it accepts.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    listen: SocketAddr,
    max_message_bytes: usize,
    max_concurrent_streams: u32,
    max_append_bytes: usize,
    max_events_per_append: usize,
    shutdown_grace: Duration,
    tls: Option<TlsIdentity>,
    users: Option<Arc<Users>>,
    cluster_secret: Option<ClusterSecret>,
    metrics_listen: Option<SocketAddr>,
}

/// How long a client gets to finish its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl ServerOptions {
    /// Listening on `listen`, with the default limits: 16 MiB messages and appends, 10 000
    /// events an append, 256 concurrent calls per connection, 10 s for in-flight calls
    /// to finish at shutdown; plain HTTP/2 (no TLS), no authentication, no `/metrics`.
    pub fn new(listen: SocketAddr) -> Self {
        ServerOptions {
            listen,
            max_message_bytes: 16 << 20,
            max_concurrent_streams: 256,
            max_append_bytes: 16 << 20,
            max_events_per_append: 10_000,
            shutdown_grace: Duration::from_secs(10),
            tls: None,
            users: None,
            cluster_secret: None,
            metrics_listen: None,
        }
    }

    /// Serves over TLS with this certificate and key (clients connect with `tls=true`).
    pub fn with_tls(mut self, identity: TlsIdentity) -> Self {
        self.tls = Some(identity);
        self
    }

    /// Asks every call for the basic credentials of one of `users` (except
    /// `ServerFeatures` and `Gossip`, which clients call before anything else and which
    /// tell nothing about the data, and a cluster node's raft service, which
    /// [`ServerOptions::with_cluster_secret`] guards); others are answered
    /// UNAUTHENTICATED.
    pub fn with_users(mut self, users: Users) -> Self {
        self.users = Some(Arc::new(users));
        self
    }

    /// Asks the raft service's calls (a cluster node's raft traffic and administration,
    /// but its status) for `secret` (see [`ClusterSecret`]); the node's own raft client
    /// sends the secret given to [`cluster::ClusterNode::start`]. Required for a cluster
    /// node with users.
    pub fn with_cluster_secret(mut self, secret: ClusterSecret) -> Self {
        self.cluster_secret = Some(secret);
        self
    }

    /// Serves `/metrics` (Prometheus text format) over HTTP on `listen`.
    pub fn with_metrics_listen(mut self, listen: SocketAddr) -> Self {
        self.metrics_listen = Some(listen);
        self
    }

    /// The largest gRPC message accepted or sent, in bytes (at least 64 KiB).
    pub fn with_max_message_bytes(mut self, bytes: usize) -> Self {
        self.max_message_bytes = bytes.max(64 << 10);
        self
    }

    /// The most concurrent calls (HTTP/2 streams) one connection may have open (at least 1).
    pub fn with_max_concurrent_streams(mut self, streams: u32) -> Self {
        self.max_concurrent_streams = streams.max(1);
        self
    }

    /// The most bytes of event data and metadata one append may carry.
    pub fn with_max_append_bytes(mut self, bytes: usize) -> Self {
        self.max_append_bytes = bytes;
        self
    }

    /// How long calls still running at shutdown get to finish before they are cut.
    pub fn with_shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// The address to listen on.
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }
}

/// A bound server, ready to run (see the module docs).
#[derive(Debug)]
pub struct Server {
    store: Store,
    options: ServerOptions,
    listener: tokio::net::TcpListener,
    local_addr: SocketAddr,
    metrics_listener: Option<tokio::net::TcpListener>,
    #[cfg(feature = "cluster")]
    node: Option<cluster::ClusterNode>,
}

impl Server {
    /// Binds a server of a cluster node (see [`cluster`]): writes go through raft on the
    /// leader, followers answer them with the leader's address, the raft traffic between
    /// the nodes is served on the same port.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for options with users but no cluster secret (the
    /// raft calls between nodes would be open to anyone), and for a node that serves TLS
    /// but reaches its peers without (or the reverse): the nodes of a cluster serve TLS
    /// all or none, so such a node could not talk to its peers; otherwise as
    /// [`Server::bind`].
    #[cfg(feature = "cluster")]
    pub async fn bind_node(node: cluster::ClusterNode, options: ServerOptions) -> Result<Server> {
        if options.users.is_some() && options.cluster_secret.is_none() {
            return Err(Error::InvalidArgument(
                "a cluster node with users needs a cluster secret for its raft traffic \
                 (ServerOptions::with_cluster_secret, serve --cluster-secret-file)"
                    .into(),
            ));
        }
        match (options.tls.is_some(), node.uses_tls()) {
            (true, false) => {
                return Err(Error::InvalidArgument(
                    "a cluster node that serves TLS must reach its peers over TLS too: start \
                     it with trust roots (ClusterNode::start, serve --tls-ca or the node's own \
                     certificate)"
                        .into(),
                ));
            }
            (false, true) => {
                return Err(Error::InvalidArgument(
                    "a cluster node that reaches its peers over TLS must serve TLS too \
                     (ServerOptions::with_tls, serve --tls-cert)"
                        .into(),
                ));
            }
            _ => {}
        }
        let mut server = Server::bind(node.store(), options).await?;
        server.node = Some(node);
        Ok(server)
    }

    /// Binds the listening socket, and the metrics one if asked (port 0 picks a free port;
    /// see [`Server::local_addr`] and [`Server::metrics_addr`]).
    ///
    /// # Errors
    /// [`Error::Io`] when an address cannot be bound.
    pub async fn bind(store: Store, options: ServerOptions) -> Result<Server> {
        let listener = match tokio::net::TcpListener::bind(options.listen).await {
            Ok(l) => l,
            Err(e) => {
                let e = Error::io(format!("listen on {}", options.listen), e);
                logline::emit(
                    "error",
                    "start",
                    serde_json::json!({ "listen": options.listen.to_string(), "error": e.to_string() }),
                );
                return Err(e);
            }
        };
        let local_addr = listener
            .local_addr()
            .map_err(|e| Error::io("read the listening address", e))?;
        let metrics_listener = match options.metrics_listen {
            Some(addr) => match metrics::bind(addr).await {
                Ok(l) => Some(l),
                Err(e) => {
                    logline::emit(
                        "error",
                        "start",
                        serde_json::json!({ "metrics_listen": addr.to_string(), "error": e.to_string() }),
                    );
                    return Err(e);
                }
            },
            None => None,
        };
        Ok(Server {
            store,
            options,
            listener,
            local_addr,
            metrics_listener,
            #[cfg(feature = "cluster")]
            node: None,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address `/metrics` is served on, if it is.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// Serves until `shutdown` completes, then stops accepting connections, lets calls in
    /// flight finish (subscriptions end with UNAVAILABLE, so clients resubscribe
    /// elsewhere or later) for at most the shutdown grace, and returns. The store is left
    /// open: the caller closes it.
    ///
    /// # Errors
    /// [`Error::Io`] when the transport fails.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let metrics_addr = self.metrics_addr();
        let Server {
            store,
            options,
            listener,
            local_addr,
            metrics_listener,
            #[cfg(feature = "cluster")]
            node,
        } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        let limits = Limits {
            max_append_bytes: options.max_append_bytes,
            max_events_per_append: options.max_events_per_append,
            max_batches_in_flight: 64,
        };
        // A cluster node's appends are durable when its raft log syncs them.
        #[cfg(feature = "cluster")]
        let metrics = match &node {
            Some(node) => {
                let node = node.clone();
                metrics::Metrics::with_syncs(Box::new(move || node.log_sync_stats()))
            }
            None => metrics::Metrics::new(&store),
        };
        #[cfg(not(feature = "cluster"))]
        let metrics = metrics::Metrics::new(&store);
        if let Some(l) = metrics_listener {
            metrics::serve(Arc::clone(&metrics), l, stop_rx.clone());
        }
        // A cluster node's appends go through raft; a single node's are gathered into
        // groups (see `appender.rs`).
        #[cfg(feature = "cluster")]
        let single = node.is_none();
        #[cfg(not(feature = "cluster"))]
        let single = true;
        let appender = if single {
            Some(
                appender::Appender::start(&store)
                    .map_err(|e| Error::io("start the append threads", e))?,
            )
        } else {
            None
        };
        let streams = pb_streams::streams_server::StreamsServer::new(streams::StreamsService {
            store: store.clone(),
            appender: appender.clone(),
            limits,
            shutdown: stop_rx.clone(),
            metrics: Arc::clone(&metrics),
            #[cfg(feature = "cluster")]
            node: node.clone(),
        })
        .max_decoding_message_size(options.max_message_bytes)
        .max_encoding_message_size(options.max_message_bytes);
        let features = server_features::server_features_server::ServerFeaturesServer::new(
            features::FeaturesService,
        );
        let gossip = gossip::gossip_server::GossipServer::new(features::GossipService {
            advertised: local_addr,
            instance_id: uuid::Uuid::new_v4(),
            #[cfg(feature = "cluster")]
            node: node.clone(),
        });
        let routes = Routes::new(streams)
            .add_service(features)
            .add_service(gossip);
        #[cfg(feature = "cluster")]
        let routes = match &node {
            Some(node) => routes.add_service(
                proto::streamlog::raft::raft_server::RaftServer::new(raft_network::RaftService {
                    node: node.clone(),
                })
                .max_decoding_message_size(raft_network::MAX_RAFT_MESSAGE_BYTES)
                .max_encoding_message_size(raft_network::MAX_RAFT_MESSAGE_BYTES),
            ),
            None => routes,
        };
        let routes = routes.into_axum_router().fallback(unimplemented);
        #[cfg(feature = "cluster")]
        let node_id = node.as_ref().map(cluster::ClusterNode::id);
        #[cfg(not(feature = "cluster"))]
        let node_id: Option<u64> = None;
        logline::emit(
            "info",
            "start",
            serde_json::json!({
                "listen": local_addr.to_string(),
                "dir": store.path().display().to_string(),
                "durability": store.options().durability.to_string(),
                "protocol_version": features::PROTOCOL_VERSION,
                "tls": options.tls.is_some(),
                "authentication": options.users.is_some(),
                "cluster_secret": options.cluster_secret.is_some(),
                "metrics": metrics_addr.map(|a| a.to_string()),
                "node_id": node_id,
            }),
        );
        let incoming = accept(
            listener,
            options.tls.as_ref().map(TlsIdentity::acceptor),
            Arc::clone(&metrics),
            stop_rx.clone(),
        );
        let signal = async move {
            shutdown.await;
            logline::emit("info", "stopping", serde_json::json!({}));
            let _ = stop_tx.send(true);
        };
        let serve = tonic::transport::Server::builder()
            .max_concurrent_streams(Some(options.max_concurrent_streams))
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            .layer(auth::AuthLayer {
                users: options.users.clone(),
                cluster_secret: options.cluster_secret.clone(),
            })
            .add_routes(Routes::from(routes))
            .serve_with_incoming_shutdown(incoming, signal);
        let mut stopping = stop_rx;
        let grace = options.shutdown_grace;
        let result = tokio::select! {
            r = serve => r.map_err(|e| Error::io("serve gRPC", std::io::Error::other(e))),
            () = async {
                let _ = stopping.wait_for(|stop| *stop).await;
                tokio::time::sleep(grace).await;
            } => {
                logline::emit("warn", "grace_expired", serde_json::json!({
                    "grace_ms": u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
                }));
                Ok(())
            }
        };
        if let Some(appender) = appender {
            // The calls have ended (or their grace has): the threads let go of the store
            // before the caller closes it.
            let _ = tokio::task::spawn_blocking(move || appender.stop()).await;
        }
        match &result {
            Ok(()) => logline::emit("info", "stop", serde_json::json!({})),
            Err(e) => logline::emit(
                "error",
                "stop",
                serde_json::json!({ "error": e.to_string() }),
            ),
        }
        result
    }
}

/// Accepts connections on a task of its own, each TLS handshake on a task of its own (a
/// slow or silent client holds up nobody else), and hands the ready connections over
/// until the server stops or stops taking them.
fn accept(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    metrics: Arc<metrics::Metrics>,
    mut shutdown: watch::Receiver<bool>,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<connection::Connection>> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = streams::stopped(&mut shutdown) => return,
                () = tx.closed() => return,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    logline::emit(
                        "error",
                        "accept",
                        serde_json::json!({ "error": e.to_string() }),
                    );
                    // Out of descriptors, most likely: give the others time to close.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            connection::prepare(&stream);
            let Some(tls) = &tls else {
                let connection = connection::Connection::plain(stream, metrics.connection());
                if tx.send(Ok(connection)).await.is_err() {
                    return;
                }
                continue;
            };
            let (tls, tx, metrics) = (tls.clone(), tx.clone(), Arc::clone(&metrics));
            tokio::spawn(async move {
                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        let connection = connection::Connection::tls(stream, metrics.connection());
                        let _ = tx.send(Ok(connection)).await;
                    }
                    Ok(Err(e)) => logline::emit(
                        "warn",
                        "tls_handshake",
                        serde_json::json!({ "peer": peer.to_string(), "error": e.to_string() }),
                    ),
                    Err(_) => logline::emit(
                        "warn",
                        "tls_handshake",
                        serde_json::json!({ "peer": peer.to_string(), "error": "timed out" }),
                    ),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Answers every method this server does not implement.
async fn unimplemented(uri: http::Uri) -> http::Response<tonic::body::Body> {
    Status::unimplemented(format!(
        "{} is not implemented by streamlog's server (persistent subscriptions, projections, \
         users and operations are not; see docs/server.md)",
        uri.path()
    ))
    .into_http()
}
