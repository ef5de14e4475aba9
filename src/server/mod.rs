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

mod connection;
mod convert;
mod features;
mod limits;
mod logline;
mod proto;
mod read;
mod streams;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::watch;
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
}

impl ServerOptions {
    /// Listening on `listen`, with the default limits: 16 MiB messages and appends, 10 000
    /// events an append, 256 concurrent calls per connection, 10 s for in-flight calls
    /// to finish at shutdown.
    pub fn new(listen: SocketAddr) -> Self {
        ServerOptions {
            listen,
            max_message_bytes: 16 << 20,
            max_concurrent_streams: 256,
            max_append_bytes: 16 << 20,
            max_events_per_append: 10_000,
            shutdown_grace: Duration::from_secs(10),
        }
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
}

impl Server {
    /// Binds the listening socket (port 0 picks a free port; see [`Server::local_addr`]).
    ///
    /// # Errors
    /// [`Error::Io`] when the address cannot be bound.
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
        Ok(Server {
            store,
            options,
            listener,
            local_addr,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` completes, then stops accepting connections, lets calls in
    /// flight finish (subscriptions end with UNAVAILABLE, so clients resubscribe
    /// elsewhere or later) for at most the shutdown grace, and returns. The store is left
    /// open: the caller closes it.
    ///
    /// # Errors
    /// [`Error::Io`] when the transport fails.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let Server {
            store,
            options,
            listener,
            local_addr,
        } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        let limits = Limits {
            max_append_bytes: options.max_append_bytes,
            max_events_per_append: options.max_events_per_append,
            max_batches_in_flight: 64,
        };
        let streams = pb_streams::streams_server::StreamsServer::new(streams::StreamsService {
            store: store.clone(),
            limits,
            shutdown: stop_rx.clone(),
        })
        .max_decoding_message_size(options.max_message_bytes)
        .max_encoding_message_size(options.max_message_bytes);
        let features = server_features::server_features_server::ServerFeaturesServer::new(
            features::FeaturesService,
        );
        let gossip = gossip::gossip_server::GossipServer::new(features::GossipService {
            advertised: local_addr,
            instance_id: uuid::Uuid::new_v4(),
        });
        let routes = Routes::new(streams)
            .add_service(features)
            .add_service(gossip)
            .into_axum_router()
            .fallback(unimplemented);
        logline::emit(
            "info",
            "start",
            serde_json::json!({
                "listen": local_addr.to_string(),
                "dir": store.path().display().to_string(),
                "protocol_version": features::PROTOCOL_VERSION,
            }),
        );
        let incoming = tokio_stream::StreamExt::map(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            |accepted| accepted.map(connection::Connection::new),
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

/// Answers every method this server does not implement.
async fn unimplemented(uri: http::Uri) -> http::Response<tonic::body::Body> {
    Status::unimplemented(format!(
        "{} is not implemented by streamlog's server (persistent subscriptions, projections, \
         users and operations are not; see docs/server.md)",
        uri.path()
    ))
    .into_http()
}
