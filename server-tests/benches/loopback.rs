//! `streamlog serve` over loopback against the embedded store, in the same run:
//!
//! 1. durable appends per second with 1 and 64 concurrent clients (one connection each)
//!    against 1 and 64 embedded threads, all under `Durability::Sync`, through two load
//!    generators: the official KurrentDB Rust client, and the lean client of
//!    `streamlog_server_tests::lean` (the same `Streams.Append` protocol, generated from
//!    the workspace's own `.proto` files, with less CPU of its own an append); with the
//!    CPU time per append of the whole process (server and clients, or the embedded
//!    threads), and of the server and of the clients apart (each on a runtime of its own);
//! 2. end-to-end latency from an append's call to its event reaching a live subscriber
//!    (p50/p99), through gRPC and embedded (`Store::subscribe_stream`);
//! 3. `$all` read throughput (events/s) through gRPC and embedded (`Store::read_all`),
//!    over the same store.
//!
//! `cargo bench -p streamlog-server-tests --bench loopback [-- SECONDS] [--appends]
//! [--server ADDR]` (default 5 s a case). `--appends` runs the appends only; `--server
//! ADDR` runs only the gRPC appends, against a server in another process (e.g. `streamlog
//! serve`), so that the CPU time printed is the clients' alone. Prints one JSON object per
//! case and Markdown tables.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kurrentdb::{
    Client, ClientSettings, EventData, ReadAllOptions, StreamPosition, SubscribeToStreamOptions,
};

use streamlog::{Delivery, ExpectedVersion, NewEvent, ResumeToken, Store, SubscribeStream};
use streamlog_server_tests::lean::LeanClient;
use streamlog_server_tests::serve_in_process;

/// Events in the store that the `$all` read cases read.
const ALL_EVENTS: u64 = 200_000;
/// Events per append while that store is filled.
const FILL_BATCH: u64 = 100;

/// Bytes of data of each event (a small JSON document).
const PAYLOAD: &str =
    r#"{"amount":1234,"currency":"EUR","note":"benchmark event of about one hundred bytes"}"#;

/// The paths of the appends cases, as the tables name them.
const EMBEDDED: &str = "embedded";
const OFFICIAL: &str = "gRPC, official client";
const LEAN: &str = "gRPC, lean client";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let seconds: u64 = args.iter().find_map(|a| a.parse().ok()).unwrap_or(5);
    let appends_only = args.iter().any(|a| a == "--appends");
    let external: Option<std::net::SocketAddr> =
        args.iter().position(|a| a == "--server").map(|i| {
            args.get(i + 1)
                .and_then(|a| a.parse().ok())
                .expect("--server HOST:PORT")
        });
    let duration = Duration::from_secs(seconds);
    let mut rows = Vec::new();
    for clients in [1usize, 64] {
        if external.is_none() {
            rows.push((EMBEDDED, clients, embedded(clients, duration)));
        }
        rows.push((
            OFFICIAL,
            clients,
            grpc(Load::Official, clients, duration, external),
        ));
        rows.push((LEAN, clients, grpc(Load::Lean, clients, duration, external)));
    }
    println!();
    println!("| path | clients | appends/s | CPU µs / append: process | server | clients |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (path, clients, rate) in &rows {
        let (server, client) = match rate.sides_us {
            Some((s, c)) => (format!("{s:.0}"), format!("{c:.0}")),
            None => ("".into(), "".into()),
        };
        println!(
            "| {path} | {clients} | {:.0} | {:.0} | {server} | {client} |",
            rate.appends_per_s, rate.cpu_us_per_append
        );
    }
    for clients in [1usize, 64] {
        let e = rows
            .iter()
            .find(|r| r.0 == EMBEDDED && r.1 == clients)
            .map(|r| r.2.appends_per_s);
        for path in [OFFICIAL, LEAN] {
            let g = rows
                .iter()
                .find(|r| r.0 == path && r.1 == clients)
                .map(|r| r.2.appends_per_s);
            if let (Some(e), Some(g)) = (e, g) {
                println!(
                    "{path} / embedded with {clients} client(s): {:.0}%",
                    100.0 * g / e
                );
            }
        }
    }
    if appends_only || external.is_some() {
        return;
    }

    let embedded_latency = latency_embedded(duration);
    let grpc_latency = latency_grpc(duration);
    println!();
    println!("| append → subscriber | events | p50 µs | p99 µs |");
    println!("|---|---:|---:|---:|");
    for (path, l) in [
        ("embedded", &embedded_latency),
        ("gRPC loopback", &grpc_latency),
    ] {
        println!(
            "| {path} | {} | {:.0} | {:.0} |",
            l.events, l.p50_us, l.p99_us
        );
    }
    println!(
        "gRPC / embedded latency: p50 {:.1}x, p99 {:.1}x",
        grpc_latency.p50_us / embedded_latency.p50_us,
        grpc_latency.p99_us / embedded_latency.p99_us
    );

    let (embedded_read, grpc_read) = read_all_throughput();
    println!();
    println!("| $all read | events | events/s |");
    println!("|---|---:|---:|");
    println!("| embedded | {ALL_EVENTS} | {embedded_read:.0} |");
    println!("| gRPC loopback | {ALL_EVENTS} | {grpc_read:.0} |");
    println!(
        "gRPC / embedded $all read: {:.0}%",
        100.0 * grpc_read / embedded_read
    );
}

/// Latencies of one append → subscriber case.
struct Latency {
    events: usize,
    p50_us: f64,
    p99_us: f64,
}

fn latency_report(path: &str, mut samples: Vec<Duration>) -> Latency {
    samples.sort_unstable();
    let at = |q: f64| {
        let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i].as_secs_f64() * 1e6
    };
    let l = Latency {
        events: samples.len(),
        p50_us: at(0.50),
        p99_us: at(0.99),
    };
    println!(
        "{}",
        serde_json::json!({"case": "append_to_subscriber", "path": path, "events": l.events,
            "p50_us": l.p50_us.round(), "p99_us": l.p99_us.round()})
    );
    l
}

/// One writer appends (durably, one event at a time) for `duration`; a subscriber on
/// the same stream notes when each event reaches it. The event carries the nanoseconds
/// since `origin` at which its append was called.
fn latency_embedded(duration: Duration) -> Latency {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path().join("store")).expect("open");
    let origin = Instant::now();
    let mut subscription = store
        .subscribe_stream(SubscribeStream::new("latency"))
        .expect("subscribe");
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, stop) = (store.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let t = origin.elapsed().as_nanos() as u64;
                store
                    .append(
                        "latency",
                        ExpectedVersion::Any,
                        [NewEvent::new("Ping", t.to_le_bytes())],
                    )
                    .expect("append");
                sent += 1;
            }
            sent
        })
    };
    let mut samples = Vec::new();
    let deadline = Instant::now() + duration;
    while Instant::now() < deadline {
        if let Some(Delivery::Event(e)) = subscription
            .next_timeout(Duration::from_millis(100))
            .expect("delivery")
        {
            let sent = u64::from_le_bytes(e.data[..8].try_into().expect("8 bytes"));
            samples.push(origin.elapsed() - Duration::from_nanos(sent));
        }
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
    drop(subscription);
    store.close().expect("close");
    latency_report("embedded", samples)
}

/// The same through the server: one client appends, another subscribes.
fn latency_grpc(duration: Duration) -> Latency {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path().join("store")).expect("open");
        let (addr, stop_server, served) = serve_in_process(&store).await;
        let settings: ClientSettings = format!("esdb://{addr}?tls=false")
            .parse()
            .expect("settings");
        let (writer, reader) = (
            Client::new(settings.clone()).expect("client"),
            Client::new(settings).expect("client"),
        );
        writer.server_info().await.expect("connect");
        reader.server_info().await.expect("connect");
        let origin = Instant::now();
        let mut subscription = reader
            .subscribe_to_stream("latency", &SubscribeToStreamOptions::default())
            .await;
        let stop = Arc::new(AtomicBool::new(false));
        let appender = {
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let t = origin.elapsed().as_nanos() as u64;
                    let event = EventData::binary("Ping", t.to_le_bytes().to_vec().into());
                    writer
                        .append_to_stream("latency", &Default::default(), event)
                        .await
                        .expect("append");
                }
            })
        };
        let mut samples = Vec::new();
        let deadline = tokio::time::Instant::now() + duration;
        while let Ok(next) = tokio::time::timeout_at(deadline, subscription.next()).await {
            let e = next.expect("event");
            let data = &e.get_original_event().data;
            let sent = u64::from_le_bytes(data[..8].try_into().expect("8 bytes"));
            samples.push(origin.elapsed() - Duration::from_nanos(sent));
        }
        stop.store(true, Ordering::Relaxed);
        appender.await.expect("appender");
        drop(subscription);
        let _ = stop_server.send(());
        served.await.expect("server task").expect("server");
        store.close().expect("close");
        latency_report("grpc loopback", samples)
    })
}

/// Fills a store with `ALL_EVENTS` events (100 streams, appends of `FILL_BATCH`), then
/// reads `$all` from the start embedded and through the server, each twice (the second
/// read counts: both from the page cache). Returns events/s (embedded, gRPC).
fn read_all_throughput() -> (f64, f64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path().join("store")).expect("open");
    for batch in 0..ALL_EVENTS / FILL_BATCH {
        let events = (0..FILL_BATCH).map(|_| NewEvent::new("Deposited", PAYLOAD));
        store
            .append(
                &format!("account-{}", batch % 100),
                ExpectedVersion::Any,
                events,
            )
            .expect("fill");
    }
    let embedded_once = || {
        let start = Instant::now();
        let mut n = 0u64;
        for e in store.read_all(ResumeToken::START).expect("read $all") {
            e.expect("event");
            n += 1;
        }
        assert_eq!(n, ALL_EVENTS);
        n as f64 / start.elapsed().as_secs_f64()
    };
    embedded_once();
    let embedded = embedded_once();
    println!(
        "{}",
        serde_json::json!({"case": "read_all", "path": "embedded", "events": ALL_EVENTS,
            "events_per_s": embedded.round()})
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let grpc = runtime.block_on(async {
        let (addr, stop_server, served) = serve_in_process(&store).await;
        let client = Client::new(
            format!("esdb://{addr}?tls=false")
                .parse()
                .expect("settings"),
        )
        .expect("client");
        client.server_info().await.expect("connect");
        let mut rate = 0.0;
        for _ in 0..2 {
            let start = Instant::now();
            let mut read = client
                .read_all(
                    &ReadAllOptions::default()
                        .position(StreamPosition::Start)
                        .max_count(usize::MAX),
                )
                .await
                .expect("read $all");
            let mut n = 0u64;
            while read.next().await.expect("event").is_some() {
                n += 1;
            }
            assert_eq!(n, ALL_EVENTS);
            rate = n as f64 / start.elapsed().as_secs_f64();
        }
        let _ = stop_server.send(());
        served.await.expect("server task").expect("server");
        rate
    });
    println!(
        "{}",
        serde_json::json!({"case": "read_all", "path": "grpc loopback", "events": ALL_EVENTS,
            "events_per_s": grpc.round()})
    );
    store.close().expect("close");
    (embedded, grpc)
}

/// The CPU time (user and system, all threads) this process has used so far: from
/// `/proc/self/stat`, in clock ticks of 10 ms (Linux's `USER_HZ`); zero elsewhere.
fn process_cpu() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return Duration::ZERO;
    };
    // The fields after the command name (in parentheses, which may hold spaces):
    // utime and stime are the 14th and 15th fields of the line.
    let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return Duration::ZERO;
    };
    let ticks: u64 = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse::<u64>().ok())
        .sum();
    Duration::from_millis(ticks * 10)
}

/// One appends case: its rate, and the CPU time of the process per append.
struct Rate {
    appends_per_s: f64,
    cpu_us_per_append: f64,
    /// The server's and the clients' CPU time per append (gRPC cases).
    sides_us: Option<(f64, f64)>,
}

fn report(path: &str, clients: usize, appends: u64, elapsed: Duration, cpu: Duration) -> Rate {
    let rate = Rate {
        appends_per_s: appends as f64 / elapsed.as_secs_f64(),
        cpu_us_per_append: cpu.as_secs_f64() * 1e6 / appends.max(1) as f64,
        sides_us: None,
    };
    println!(
        "{}",
        serde_json::json!({"path": path, "clients": clients, "appends": appends,
            "seconds": elapsed.as_secs_f64(), "appends_per_s": rate.appends_per_s.round(),
            "cpu_s": cpu.as_secs_f64(), "cpu_us_per_append": rate.cpu_us_per_append.round()})
    );
    rate
}

fn embedded(clients: usize, duration: Duration) -> Rate {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path().join("store")).expect("open");
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let (start, cpu_start) = (Instant::now(), process_cpu());
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
        EMBEDDED,
        clients,
        count.load(Ordering::Relaxed),
        start.elapsed(),
        process_cpu().saturating_sub(cpu_start),
    );
    store.close().expect("close");
    rate
}

/// Which client a gRPC appends case drives the server with.
#[derive(Clone, Copy)]
enum Load {
    /// The official KurrentDB Rust client (`kurrentdb`).
    Official,
    /// [`LeanClient`].
    Lean,
}

/// A connected client of either kind.
enum Connected {
    Official(Client),
    Lean(LeanClient),
}

impl Connected {
    async fn connect(load: Load, addr: std::net::SocketAddr) -> Connected {
        match load {
            Load::Official => {
                let settings: ClientSettings = format!("esdb://{addr}?tls=false")
                    .parse()
                    .expect("settings");
                let client = Client::new(settings).expect("client");
                client.server_info().await.expect("connect");
                Connected::Official(client)
            }
            Load::Lean => Connected::Lean(LeanClient::connect(addr).await.expect("connect")),
        }
    }

    /// Appends one event of `PAYLOAD` to `stream`, with any expected version.
    async fn append(&mut self, stream: &str) {
        match self {
            Connected::Official(client) => {
                let event = EventData::binary("Deposited", PAYLOAD.as_bytes().to_vec().into());
                client
                    .append_to_stream(stream, &Default::default(), event)
                    .await
                    .expect("append");
            }
            Connected::Lean(client) => {
                client
                    .append_any(stream, "Deposited", PAYLOAD.as_bytes().to_vec().into())
                    .await
                    .expect("append");
            }
        }
    }
}

/// CPU time used so far by this process's threads, summed by side: the server's (its
/// runtime's threads, named `bench-server`, and the store's and server's own threads,
/// named `streamlog-…`) and the clients' (`bench-client`). From `/proc/self/task`, in
/// clock ticks of 10 ms; zero elsewhere. Threads that ended are no longer counted, so
/// read it while the case's threads live.
fn sides_cpu() -> (Duration, Duration) {
    let (mut server, mut client) = (0u64, 0u64);
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return (Duration::ZERO, Duration::ZERO);
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = &stat[open + 1..close];
        let ticks: u64 = stat[close + 1..]
            .split_whitespace()
            .skip(11)
            .take(2)
            .filter_map(|f| f.parse::<u64>().ok())
            .sum();
        if name.starts_with("bench-server") || name.starts_with("streamlog-") {
            server += ticks;
        } else if name.starts_with("bench-client") {
            client += ticks;
        }
    }
    (
        Duration::from_millis(server * 10),
        Duration::from_millis(client * 10),
    )
}

fn runtime(threads_named: &str) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .thread_name(threads_named)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Appends through a server, `clients` connections each appending one event at a time
/// to its own stream: the server in this process (on a runtime of its own, so that its
/// CPU time and the clients' are told apart), or `external`.
fn grpc(
    load: Load,
    clients: usize,
    duration: Duration,
    external: Option<std::net::SocketAddr>,
) -> Rate {
    let dir = tempfile::tempdir().expect("tempdir");
    let server_runtime = runtime("bench-server");
    let local = match external {
        Some(_) => None,
        None => {
            let store = Store::open(dir.path().join("store")).expect("open");
            let (addr, stop_server, served) = server_runtime.block_on(serve_in_process(&store));
            Some((store, addr, stop_server, served))
        }
    };
    let addr = match (&local, external) {
        (Some((_, addr, _, _)), _) => *addr,
        (None, Some(addr)) => addr,
        (None, None) => unreachable!("a server in this process or another"),
    };
    let path = match load {
        Load::Official => OFFICIAL,
        Load::Lean => LEAN,
    };
    let rate = runtime("bench-client").block_on(async move {
        // Connect before the clock starts; all at once, since the official client waits
        // its discovery interval (500 ms) before connecting.
        let connected =
            futures::future::join_all((0..clients).map(|_| Connected::connect(load, addr))).await;
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicU64::new(0));
        // Each run writes streams of its own, so that runs against one external server
        // do not append to each other's streams.
        let run = uuid::Uuid::new_v4().simple().to_string();
        let (start, cpu_start, sides_start) = (Instant::now(), process_cpu(), sides_cpu());
        let tasks: Vec<_> = connected
            .into_iter()
            .enumerate()
            .map(|(c, mut client)| {
                let (stop, count) = (Arc::clone(&stop), Arc::clone(&count));
                let stream = format!("bench-{run}-{c}");
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        client.append(&stream).await;
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
        let (elapsed, cpu, sides) = (
            start.elapsed(),
            process_cpu().saturating_sub(cpu_start),
            sides_cpu(),
        );
        let appends = count.load(Ordering::Relaxed);
        let per_append_us = |d: Duration| d.as_secs_f64() * 1e6 / appends.max(1) as f64;
        let (server_us, client_us) = (
            per_append_us(sides.0.saturating_sub(sides_start.0)),
            per_append_us(sides.1.saturating_sub(sides_start.1)),
        );
        println!(
            "{}",
            serde_json::json!({"path": path, "clients": clients,
                "server_cpu_us_per_append": server_us.round(),
                "client_cpu_us_per_append": client_us.round()})
        );
        let mut rate = report(path, clients, appends, elapsed, cpu);
        rate.sides_us = Some((server_us, client_us));
        rate
    });
    if let Some((store, _, stop_server, served)) = local {
        let _ = stop_server.send(());
        server_runtime
            .block_on(served)
            .expect("server task")
            .expect("server");
        store.close().expect("close");
    }
    rate
}
