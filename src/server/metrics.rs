//! `/metrics` in Prometheus text format (OpenMetrics), through `prometheus-client`:
//! appends, events and bytes appended, the store's commit-sync latency histogram, active
//! subscriptions and connections. Served over HTTP/1 by hyper on an address of its own
//! (`--metrics-listen`): the gRPC port speaks HTTP/2 only.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tonic::codegen::{Bytes, http};

use super::logline;
use super::streams::stopped;
use crate::Store;

/// The server's metrics and the registry that encodes them.
#[derive(Debug)]
pub(super) struct Metrics {
    registry: Registry,
    appends: Counter<u64, AtomicU64>,
    events: Counter<u64, AtomicU64>,
    bytes: Counter<u64, AtomicU64>,
    subscriptions: Gauge,
    connections: Gauge,
    connections_accepted: Counter<u64, AtomicU64>,
}

impl Metrics {
    /// Metrics of a server over `store` (whose sync timings are read at each scrape).
    pub(super) fn new(store: &Store) -> Arc<Metrics> {
        let store = store.clone();
        Metrics::with_syncs(Box::new(move || store.sync_stats()))
    }

    /// Metrics whose sync histogram is `syncs`, read at each scrape: on a cluster node,
    /// the raft log's (the syncs that make its appends durable), not its store's.
    pub(super) fn with_syncs(syncs: SyncSource) -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("streamlog");
        let appends = Counter::<u64, AtomicU64>::default();
        let events = Counter::<u64, AtomicU64>::default();
        let bytes = Counter::<u64, AtomicU64>::default();
        let subscriptions = Gauge::default();
        let connections = Gauge::default();
        let connections_accepted = Counter::<u64, AtomicU64>::default();
        registry.register(
            "appends",
            "Appends written through the server (one per append call or batch)",
            appends.clone(),
        );
        registry.register(
            "events_appended",
            "Events written through the server",
            events.clone(),
        );
        registry.register(
            "bytes_appended",
            "Bytes of event data and metadata written through the server",
            bytes.clone(),
        );
        registry.register(
            "subscriptions_active",
            "Subscriptions open now",
            subscriptions.clone(),
        );
        registry.register(
            "connections_active",
            "Client connections open now",
            connections.clone(),
        );
        registry.register(
            "connections_accepted",
            "Client connections accepted (after the TLS handshake, with TLS)",
            connections_accepted.clone(),
        );
        registry.register_collector(Box::new(SyncLatency { syncs }));
        Arc::new(Metrics {
            registry,
            appends,
            events,
            bytes,
            subscriptions,
            connections,
            connections_accepted,
        })
    }

    /// Counts an append of `events` events carrying `bytes` bytes.
    pub(super) fn appended(&self, events: usize, bytes: usize) {
        self.appends.inc();
        self.events
            .inc_by(u64::try_from(events).unwrap_or(u64::MAX));
        self.bytes.inc_by(u64::try_from(bytes).unwrap_or(u64::MAX));
    }

    /// A subscription opens; it is counted until the guard drops.
    pub(super) fn subscription(self: &Arc<Self>) -> Open {
        self.subscriptions.inc();
        Open {
            gauge: self.subscriptions.clone(),
        }
    }

    /// A connection opens; it is counted until the guard drops.
    pub(super) fn connection(self: &Arc<Self>) -> Open {
        self.connections_accepted.inc();
        self.connections.inc();
        Open {
            gauge: self.connections.clone(),
        }
    }

    /// The text a scrape answers.
    fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// Something counted in a gauge while it lives.
#[derive(Debug)]
pub(super) struct Open {
    gauge: Gauge,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// Where the commit-sync histogram comes from.
pub(super) type SyncSource = Box<dyn Fn() -> crate::SyncStats + Send + Sync>;

/// The commit-sync histogram ([`Store::sync_stats`], or a cluster node's raft log's),
/// read at each scrape.
struct SyncLatency {
    syncs: SyncSource,
}

impl std::fmt::Debug for SyncLatency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncLatency").finish_non_exhaustive()
    }
}

impl Collector for SyncLatency {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = (self.syncs)();
        // The encoder adds the buckets up itself: hand it each bucket's own count.
        let mut buckets = Vec::with_capacity(stats.buckets_us.len() + 1);
        let mut below = 0u64;
        for &(bound_us, cumulative) in &stats.buckets_us {
            buckets.push((bound_us as f64 / 1e6, cumulative.saturating_sub(below)));
            below = cumulative;
        }
        buckets.push((f64::MAX, stats.count.saturating_sub(below)));
        encoder
            .encode_descriptor(
                "fsync_duration_seconds",
                "How long the commit syncs (fdatasync, one per group commit) took: the \
                 store's, or on a cluster node the raft log's",
                None,
                MetricType::Histogram,
            )?
            .encode_histogram::<NoLabelSet>(stats.total.as_secs_f64(), stats.count, &buckets, None)
    }
}

/// Serves `GET /metrics` on `listener` until the server stops.
pub(super) fn serve(
    metrics: Arc<Metrics>,
    listener: tokio::net::TcpListener,
    mut shutdown: watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = stopped(&mut shutdown) => return,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    logline::emit(
                        "error",
                        "metrics_accept",
                        serde_json::json!({ "error": e.to_string() }),
                    );
                    // Out of descriptors, most likely: give the others time to close.
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let metrics = Arc::clone(&metrics);
            tokio::spawn(async move {
                let answer = service_fn(move |request: http::Request<Incoming>| {
                    let metrics = Arc::clone(&metrics);
                    async move { Ok::<_, std::convert::Infallible>(scrape(&metrics, &request)) }
                });
                // A scraper that goes away mid-answer is its own business.
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), answer)
                    .await;
            });
        }
    });
}

/// The answer to one HTTP request.
fn scrape(metrics: &Metrics, request: &http::Request<Incoming>) -> http::Response<Full<Bytes>> {
    let answer = |status: http::StatusCode, content_type: &str, body: String| {
        let mut response = http::Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        if let Ok(value) = http::HeaderValue::from_str(content_type) {
            response
                .headers_mut()
                .insert(http::header::CONTENT_TYPE, value);
        }
        response
    };
    if request.uri().path() != "/metrics" {
        return answer(
            http::StatusCode::NOT_FOUND,
            "text/plain",
            "not found: the metrics are at /metrics\n".into(),
        );
    }
    if request.method() != http::Method::GET && request.method() != http::Method::HEAD {
        return answer(
            http::StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET /metrics\n".into(),
        );
    }
    match metrics.encode() {
        Ok(text) => answer(
            http::StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            text,
        ),
        Err(_) => answer(
            http::StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            "the metrics could not be encoded\n".into(),
        ),
    }
}

/// Binds the metrics listener.
pub(super) async fn bind(addr: SocketAddr) -> crate::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| crate::Error::io(format!("listen for /metrics on {addr}"), e))
}
