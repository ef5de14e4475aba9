//! A 3-node `streamlog serve` cluster on loopback against a single `streamlog serve`, in
//! the same run, with the official KurrentDB Rust client:
//!
//! 1. durable appends per second with 1 and 64 concurrent clients (one event of ~86 bytes
//!    an append, each client to its own stream, expected version any, one connection
//!    each, all to the leader), and the same against a second 3-node cluster whose nodes
//!    serve TLS and reach each other over TLS (certificates from a CA made with rcgen,
//!    `--tls-ca`; the clients over TLS too, checking the CA);
//! 2. failover time over KILLS kills of the leader (SIGKILL): from the kill to the first
//!    append acknowledged among those sent after it (one writer that moves to the next
//!    node when its node does not answer, and follows "not leader" answers); the killed
//!    node is restarted before the next kill.
//!
//! `cargo bench -p streamlog-server-tests --bench cluster [-- SECONDS [KILLS]]` (default
//! 5 s a case, 20 kills; 0 kills skips the failover part; needs the `streamlog` binary of the same build: run
//! `cargo build --release` first, or set `STREAMLOG_BIN`). Prints one JSON object per
//! case and Markdown tables.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kurrentdb::{AppendToStreamOptions, Client, ClientSettings, EventData};
use streamlog::server::TlsRoots;
use streamlog_server_tests::Nodes;

const PAYLOAD: &str =
    r#"{"amount":1234,"currency":"EUR","note":"benchmark event of about one hundred bytes"}"#;

fn client(addr: &str) -> Client {
    connect(&format!("esdb://{addr}?tls=false"))
}

fn connect(connection: &str) -> Client {
    let settings: ClientSettings = connection.parse().expect("settings");
    Client::new(settings).expect("client")
}

/// A 3-node cluster in `root` serving TLS: a CA and one certificate for 127.0.0.1 that it
/// signed, shared by the nodes, `--tls-ca` the CA. Returns the cluster and the CA file.
fn tls_cluster(root: &std::path::Path) -> (Nodes, std::path::PathBuf) {
    std::fs::create_dir_all(root).expect("dir");
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA");
    let key = rcgen::KeyPair::generate().expect("node key");
    let certificate = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .expect("node params")
        .signed_by(&key, &ca)
        .expect("node certificate");
    let files = [
        root.join("ca.pem"),
        root.join("node.pem"),
        root.join("node.key"),
    ];
    std::fs::write(&files[0], ca.pem()).expect("write the CA");
    std::fs::write(&files[1], certificate.pem()).expect("write the certificate");
    std::fs::write(&files[2], key.serialize_pem()).expect("write the key");
    let path = |p: &std::path::PathBuf| p.to_str().expect("UTF-8 path").to_owned();
    let args = vec![
        "--tls-cert".to_owned(),
        path(&files[1]),
        "--tls-key".to_owned(),
        path(&files[2]),
        "--tls-ca".to_owned(),
        path(&files[0]),
    ];
    let roots = TlsRoots::from_pem_file(&files[0]).expect("roots");
    let [ca, _, _] = files;
    (
        Nodes::cluster_with_node_args(root, 3, |_| args.clone(), Some(roots)),
        ca,
    )
}

/// The index of the cluster's leader, waiting up to 30 s for one.
async fn wait_leader(cluster: &Nodes) -> usize {
    cluster
        .wait_leader(None, Duration::from_secs(30))
        .await
        .expect("no leader within 30 s")
        .0
}

/// Appends per second of `clients` clients of the node at `addr` for `duration`, counted
/// from when every client has connected (the official client waits its discovery
/// interval, 500 ms, before its first connection: connected one after another, the first
/// clients would append for half a minute before the clock starts).
async fn throughput(connection: &str, clients: usize, duration: Duration) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let connected = futures::future::join_all((0..clients).map(|_| async {
        let client = connect(connection);
        client.server_info().await.expect("connect");
        client
    }))
    .await;
    let start_line = Arc::new(tokio::sync::Barrier::new(clients + 1));
    let mut tasks = Vec::new();
    for (c, client) in connected.into_iter().enumerate() {
        let (done, stop, start_line) = (
            Arc::clone(&done),
            Arc::clone(&stop),
            Arc::clone(&start_line),
        );
        tasks.push(tokio::spawn(async move {
            let stream = format!("bench-{c}");
            start_line.wait().await;
            while !stop.load(Ordering::Relaxed) {
                let event = EventData::binary("Paid", PAYLOAD.as_bytes().to_vec().into());
                client
                    .append_to_stream(stream.as_str(), &AppendToStreamOptions::default(), event)
                    .await
                    .expect("append");
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    start_line.wait().await;
    let start = Instant::now();
    tokio::time::sleep(duration).await;
    let n = done.load(Ordering::Relaxed);
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("client task");
    }
    n as f64 / elapsed.as_secs_f64()
}

/// One writer appending continuously to the cluster, noting when each acknowledged append
/// was sent and returned.
fn failover_writer(
    addrs: Vec<String>,
    stop: Arc<AtomicBool>,
    acks: Arc<std::sync::Mutex<Vec<(Instant, Instant)>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut node = 0;
        let mut c = client(&addrs[node]);
        let mut failures = 0;
        while !stop.load(Ordering::Relaxed) {
            let sent = Instant::now();
            let event = EventData::binary("Paid", PAYLOAD.as_bytes().to_vec().into());
            let r = tokio::time::timeout(
                Duration::from_secs(2),
                c.append_to_stream("failover", &AppendToStreamOptions::default(), event),
            )
            .await;
            match r {
                Ok(Ok(_)) => {
                    failures = 0;
                    acks.lock().expect("acks").push((sent, Instant::now()));
                }
                Ok(Err(kurrentdb::Error::NotLeaderException(_))) => {}
                _ => {
                    failures += 1;
                    if failures >= 2 {
                        node = (node + 1) % addrs.len();
                        c = client(&addrs[node]);
                        failures = 0;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    })
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse::<u64>().ok());
    let seconds = args.next().unwrap_or(5);
    let kills = args.next().unwrap_or(20) as usize;
    let duration = Duration::from_secs(seconds);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let root = tempfile::tempdir().expect("tempdir");
        let single = Nodes::single(&root.path().join("single"));
        let cluster = Nodes::cluster(&root.path().join("cluster"), 3);
        let (tls, ca) = tls_cluster(&root.path().join("tls-cluster"));
        let leader = wait_leader(&cluster).await;
        let tls_leader = wait_leader(&tls).await;
        let tls_connection = format!(
            "esdb://{}?tls=true&tlsCaFile={}",
            tls.nodes[tls_leader].addr,
            ca.display()
        );
        // The single node answers once it listens.
        let deadline = Instant::now() + Duration::from_secs(30);
        while client(&single.nodes[0].addr).server_info().await.is_err() {
            assert!(Instant::now() < deadline, "the single node does not answer");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut rows = Vec::new();
        let plain = |addr: &str| format!("esdb://{addr}?tls=false");
        for clients in [1usize, 64] {
            let s = throughput(&plain(&single.nodes[0].addr), clients, duration).await;
            let c = throughput(&plain(&cluster.nodes[leader].addr), clients, duration).await;
            let t = throughput(&tls_connection, clients, duration).await;
            for (path, rate) in [
                ("single node", s),
                ("3-node cluster", c),
                ("3-node cluster, TLS", t),
            ] {
                println!(
                    "{}",
                    serde_json::json!({"case": "durable_appends", "path": path,
                        "clients": clients, "appends_per_s": rate.round()})
                );
            }
            rows.push((clients, s, c, t));
        }
        drop(single);
        drop(tls);

        let mut cluster = cluster;
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(std::sync::Mutex::new(Vec::new()));
        let addrs = cluster.nodes.iter().map(|n| n.addr.clone()).collect();
        let writer = failover_writer(addrs, Arc::clone(&stop), Arc::clone(&acks));
        let mut failovers = Vec::new();
        for k in 0..kills {
            let leader = wait_leader(&cluster).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let at = Instant::now();
            cluster.kill(leader);
            let deadline = at + Duration::from_secs(60);
            let took = loop {
                let first = acks
                    .lock()
                    .expect("acks")
                    .iter()
                    .filter(|(sent, _)| *sent > at)
                    .map(|(_, done)| *done)
                    .min();
                if let Some(t) = first {
                    break t - at;
                }
                assert!(
                    Instant::now() < deadline,
                    "no append within 60 s of kill {k}"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            };
            println!(
                "{}",
                serde_json::json!({"case": "failover", "kill": k + 1, "ms": took.as_millis()})
            );
            failovers.push(took.as_secs_f64() * 1e3);
            cluster.launch(leader);
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        stop.store(true, Ordering::Relaxed);
        let _ = writer.await;

        println!();
        println!(
            "| clients | single node appends/s | 3-node cluster appends/s | cluster / single \
             | 3-node cluster with TLS appends/s | TLS / plain cluster |"
        );
        println!("|---:|---:|---:|---:|---:|---:|");
        for (clients, s, c, t) in &rows {
            println!(
                "| {clients} | {s:.0} | {c:.0} | {:.0}% | {t:.0} | {:.0}% |",
                100.0 * c / s,
                100.0 * t / c
            );
        }
        if failovers.is_empty() {
            return;
        }
        failovers.sort_by(f64::total_cmp);
        println!();
        println!(
            "failover (leader SIGKILL → first acknowledged append sent after it) over {} kills: \
             p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            failovers.len(),
            percentile(&failovers, 0.50),
            percentile(&failovers, 0.99),
            failovers.last().copied().unwrap_or(0.0)
        );
    });
}
