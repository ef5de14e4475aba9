//! Durable appends per second through `streamlog serve` over loopback, with 1 and 64
//! concurrent clients (official KurrentDB Rust client, one connection each), against the
//! embedded store in the same run (1 and 64 threads), all under `Durability::Sync`.
//!
//! `cargo bench -p streamlog-server-tests --bench loopback [-- SECONDS]` (default 5 s a
//! case). Prints one JSON object per case and a Markdown table.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kurrentdb::{Client, ClientSettings, EventData};
use streamlog::server::{Server, ServerOptions};
use streamlog::{ExpectedVersion, NewEvent, Store};

/// Bytes of data of each event (a small JSON document).
const PAYLOAD: &str =
    r#"{"amount":1234,"currency":"EUR","note":"benchmark event of about one hundred bytes"}"#;

fn main() {
    let seconds: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5);
    let duration = Duration::from_secs(seconds);
    let mut rows = Vec::new();
    for clients in [1usize, 64] {
        rows.push(("embedded", clients, embedded(clients, duration)));
        rows.push(("grpc loopback", clients, grpc(clients, duration)));
    }
    println!();
    println!("| path | clients | appends/s |");
    println!("|---|---:|---:|");
    for (path, clients, rate) in &rows {
        println!("| {path} | {clients} | {rate:.0} |");
    }
    for clients in [1usize, 64] {
        let e = rows
            .iter()
            .find(|r| r.0 == "embedded" && r.1 == clients)
            .map(|r| r.2);
        let g = rows
            .iter()
            .find(|r| r.0 == "grpc loopback" && r.1 == clients)
            .map(|r| r.2);
        if let (Some(e), Some(g)) = (e, g) {
            println!(
                "gRPC / embedded with {clients} client(s): {:.0}%",
                100.0 * g / e
            );
        }
    }
}

fn report(path: &str, clients: usize, appends: u64, elapsed: Duration) -> f64 {
    let rate = appends as f64 / elapsed.as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"path": path, "clients": clients, "appends": appends,
            "seconds": elapsed.as_secs_f64(), "appends_per_s": rate.round()})
    );
    rate
}

fn embedded(clients: usize, duration: Duration) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path().join("store")).expect("open");
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let (store, stop, count) = (store.clone(), Arc::clone(&stop), Arc::clone(&count));
            std::thread::spawn(move || {
                let stream = format!("bench-{c}");
                while !stop.load(Ordering::Relaxed) {
                    store
                        .append(
                            &stream,
                            ExpectedVersion::Any,
                            [NewEvent::new("Deposited", PAYLOAD)],
                        )
                        .expect("append");
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("thread");
    }
    let rate = report(
        "embedded",
        clients,
        count.load(Ordering::Relaxed),
        start.elapsed(),
    );
    store.close().expect("close");
    rate
}

fn grpc(clients: usize, duration: Duration) -> f64 {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path().join("store")).expect("open");
        let server = Server::bind(
            store.clone(),
            ServerOptions::new("127.0.0.1:0".parse().expect("addr")),
        )
        .await
        .expect("bind");
        let addr = server.local_addr();
        let (stop_server, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        let settings: ClientSettings = format!("esdb://{addr}?tls=false")
            .parse()
            .expect("settings");
        let mut connected = Vec::new();
        for _ in 0..clients {
            let client = Client::new(settings.clone()).expect("client");
            // Connect (and read the server's features) before the clock starts.
            client.server_info().await.expect("connect");
            connected.push(client);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let tasks: Vec<_> = connected
            .into_iter()
            .enumerate()
            .map(|(c, client)| {
                let (stop, count) = (Arc::clone(&stop), Arc::clone(&count));
                tokio::spawn(async move {
                    let stream = format!("bench-{c}");
                    while !stop.load(Ordering::Relaxed) {
                        let event =
                            EventData::binary("Deposited", PAYLOAD.as_bytes().to_vec().into());
                        client
                            .append_to_stream(stream.as_str(), &Default::default(), event)
                            .await
                            .expect("append");
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        tokio::time::sleep(duration).await;
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.expect("task");
        }
        let rate = report(
            "grpc loopback",
            clients,
            count.load(Ordering::Relaxed),
            start.elapsed(),
        );
        let _ = stop_server.send(());
        served.await.expect("server task").expect("server");
        store.close().expect("close");
        rate
    })
}
