//! Subscriptions, measured in one run: `cargo bench --bench subscribe` (or
//! `-- a b c d` for some of the parts only).
//!
//! (a) In-process latency: a writer thread appends single events one at a time, a pause
//!     apart (each its own commit); a subscriber thread blocked in `next_timeout` on
//!     `subscribe_all(from_end)` notes when each event reaches it. Both read one clock
//!     (nanoseconds since a common `Instant`): the writer records when each `append` was
//!     called and when it returned in shared arrays indexed by the event's version, the
//!     subscriber when the event arrived; the latencies are computed after the run.
//!     "after return" is arrival − return (0 when the event arrived before `append`
//!     returned, which happens: the commit wakes subscribers before `append` returns; the
//!     table counts them); "after call" is arrival − the start of the `append` call.
//!     Under `Buffered` and `Sync`. Reference rows time a bare `Condvar` hand-off
//!     between two threads and a 100 µs sleep on this machine.
//! (b) The same with the subscriber on a read-only store opened beside the writer in this
//!     process (the path another process takes: the writer publishes `DIR/LIVE`, the
//!     follower is told by the file watcher), and with `streamlog tail DIR --from end` run
//!     as a child process, its JSON lines timed as they are read from its stdout.
//! (c) Filtered `$all` scan: a store of 500,000 events, 1% of type `Rare`; a filtered
//!     subscription (`Filter::event_types(["Rare"])`, and the same as a regex) from the
//!     start until `CaughtUp`, an unfiltered one, and `read_all_with` (borrowed, no copy):
//!     events scanned per second (median of 3 passes, after a warm-up pass).
//! (d) Idle subscribers, each a thread blocked in `next()` on a `from_end` `$all`
//!     subscription filtered to a type nobody appends (idle: nothing is delivered, but
//!     every commit wakes them): the process's RSS before and after making 1,000, and
//!     buffered append throughput (batch 1, 200,000 appends) with 0, 10, 100 and 1,000 of
//!     them, each on a fresh store (runs with subscribers stop after 15 s).
#![allow(clippy::unwrap_used, missing_docs)]

use std::io::{BufRead, BufReader};
use std::ops::ControlFlow;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use streamlog::{
    Delivery, Durability, ExpectedVersion, Filter, NewEvent, Options, Position, Store, SubscribeAll,
};

/// Events timed per latency measurement.
const LATENCY_EVENTS: usize = 2_000;
/// Pause between two timed appends (so that each is its own commit, and the subscriber is
/// asleep when it comes).
const PAUSE: Duration = Duration::from_micros(300);
/// Untimed appends before the timed ones (the subscriber is set up and following).
const WARM_EVENTS: usize = 50;
const EVENT_BYTES: usize = 150;

const SCAN_EVENTS: u64 = 500_000;
const SCAN_BATCH: u64 = 10;
const SCAN_PASSES: usize = 3;

const SUBSCRIBERS: usize = 1_000;
const THROUGHPUT_APPENDS: u64 = 200_000;
/// The run with subscribers stops early after this long (it reports what it did).
const THROUGHPUT_CAP: Duration = Duration::from_secs(15);

fn options(durability: Durability) -> Options {
    Options::default().with_durability(durability)
}

fn ns_since(t0: Instant) -> u64 {
    u64::try_from(t0.elapsed().as_nanos()).unwrap()
}

/// The process's resident memory in KiB: (VmRSS, RssAnon, RssFile).
fn rss_kib() -> (u64, u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    };
    (field("VmRSS:"), field("RssAnon:"), field("RssFile:"))
}

/// Percentile `p` (0..=100) of sorted `v`, nearest rank.
fn pct(v: &[u64], p: f64) -> u64 {
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn us(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1000.0)
}

struct Latencies {
    /// Arrival − return of `append`, saturating at 0.
    after_return: Vec<u64>,
    /// Arrival − start of the `append` call.
    after_call: Vec<u64>,
    /// Duration of the `append` calls.
    append: Vec<u64>,
    /// Events that arrived before their `append` returned.
    early: usize,
    /// `after_return` in append order.
    in_order: Vec<u64>,
}

impl Latencies {
    fn new(call: &[AtomicU64], ret: &[AtomicU64], arrived: &[u64]) -> Self {
        let mut l = Latencies {
            after_return: Vec::new(),
            after_call: Vec::new(),
            append: Vec::new(),
            early: 0,
            in_order: Vec::new(),
        };
        for ((c, r), &a) in call.iter().zip(ret).zip(arrived) {
            let (c, r) = (c.load(Ordering::Acquire), r.load(Ordering::Acquire));
            assert!(a > 0 && r >= c, "every timed event arrived");
            if a < r {
                l.early += 1;
            }
            l.after_return.push(a.saturating_sub(r));
            l.after_call.push(a - c);
            l.append.push(r - c);
        }
        l.in_order = l.after_return.clone();
        l.after_return.sort_unstable();
        l.after_call.sort_unstable();
        l.append.sort_unstable();
        l
    }

    fn row(&self, name: &str) -> String {
        let r = &self.after_return;
        // Delays over 5 ms (Kafka's published p99), and how many separate stretches of
        // consecutive appends they form (one stall delays every append until it ends).
        let over = |l: u64| l > 5_000_000;
        let slow = self.in_order.iter().filter(|&&l| over(l)).count();
        let stalls = self
            .in_order
            .iter()
            .zip(std::iter::once(&0).chain(&self.in_order))
            .filter(|&(&l, &prev)| over(l) && !over(prev))
            .count();
        let c = &self.after_call;
        format!(
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {}/{} | {slow} in {stalls} |",
            us(pct(r, 50.0)),
            us(pct(r, 99.0)),
            us(pct(r, 99.9)),
            us(pct(r, 100.0)),
            us(pct(c, 50.0)),
            us(pct(c, 99.0)),
            us(pct(c, 100.0)),
            us(pct(&self.append, 50.0)),
            self.early,
            r.len(),
        )
    }
}

const LATENCY_HEADER: &str = "| subscriber | after return p50 µs | p99 | p99.9 | max | after call p50 µs | p99 | max | append p50 µs | arrived before return | over 5 ms, in stalls |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|";

/// Where the subscriber runs.
#[derive(Clone, Copy, PartialEq)]
enum Follower {
    /// A subscription on the writer's own `Store`.
    SameStore,
    /// A subscription on a read-only `Store` opened beside the writer (this process).
    ReadOnly,
}

/// The writer's side of a latency run: warm-up appends to `warm` (until `ready` says the
/// subscriber sees them), then the timed appends to stream `lat` (version = index).
fn timed_appends(
    store: &Store,
    t0: Instant,
    call: &[AtomicU64],
    ret: &[AtomicU64],
    ready: &dyn Fn() -> bool,
) {
    let payload = [7u8; EVENT_BYTES];
    let mut warm = 0;
    while warm < WARM_EVENTS || !ready() {
        store
            .append(
                "warm",
                ExpectedVersion::Any,
                [NewEvent::new("Warm", payload)],
            )
            .unwrap();
        warm += 1;
        thread::sleep(PAUSE);
        assert!(
            warm < 100_000,
            "the subscriber never saw the warm-up appends"
        );
    }
    for i in 0..call.len() {
        let e = NewEvent::new("Lat", payload);
        call[i].store(ns_since(t0), Ordering::Release);
        let r = store.append("lat", ExpectedVersion::Any, [e]).unwrap();
        ret[i].store(ns_since(t0), Ordering::Release);
        assert_eq!(r.first_version, i as u64);
        thread::sleep(PAUSE);
    }
}

fn latency(durability: Durability, follower: Follower) -> Latencies {
    let tmp = tempfile::tempdir().unwrap();
    let writer = Store::open_with(tmp.path(), options(durability)).unwrap();
    writer
        .append("warm", ExpectedVersion::Any, [NewEvent::new("Warm", b"x")])
        .unwrap();
    let sub_store = match follower {
        Follower::SameStore => writer.clone(),
        Follower::ReadOnly => {
            Store::open_with(tmp.path(), Options::default().with_read_only(true)).unwrap()
        }
    };
    let mut sub = sub_store.subscribe_all(SubscribeAll::from_end()).unwrap();
    let t0 = Instant::now();
    let n = LATENCY_EVENTS;
    let call: Vec<AtomicU64> = (0..n).map(|_| AtomicU64::new(0)).collect();
    let ret: Vec<AtomicU64> = (0..n).map(|_| AtomicU64::new(0)).collect();
    let warm_seen = AtomicBool::new(false);
    let arrived = thread::scope(|s| {
        let warm_seen = &warm_seen;
        let subscriber = s.spawn(move || {
            let mut arrived = vec![0u64; n];
            let mut left = n;
            while left > 0 {
                match sub.next_timeout(Duration::from_secs(30)).unwrap() {
                    Some(Delivery::Event(e)) => {
                        let now = ns_since(t0);
                        if &*e.stream == "lat" {
                            arrived[usize::try_from(e.version).unwrap()] = now;
                            left -= 1;
                        } else {
                            warm_seen.store(true, Ordering::Release);
                        }
                    }
                    Some(_) => {}
                    None => panic!("no event for 30 s"),
                }
            }
            arrived
        });
        timed_appends(&writer, t0, &call, &ret, &|| {
            warm_seen.load(Ordering::Acquire)
        });
        subscriber.join().unwrap()
    });
    drop(sub_store);
    writer.close().unwrap();
    Latencies::new(&call, &ret, &arrived)
}

/// `streamlog tail DIR --from end` as a child process, its lines timed as read.
fn latency_tail(durability: Durability) -> Latencies {
    let tmp = tempfile::tempdir().unwrap();
    let writer = Store::open_with(tmp.path(), options(durability)).unwrap();
    writer
        .append("warm", ExpectedVersion::Any, [NewEvent::new("Warm", b"x")])
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_streamlog"))
        .arg("tail")
        .arg(tmp.path())
        .args(["--from", "end"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let t0 = Instant::now();
    let n = LATENCY_EVENTS;
    let call: Vec<AtomicU64> = (0..n).map(|_| AtomicU64::new(0)).collect();
    let ret: Vec<AtomicU64> = (0..n).map(|_| AtomicU64::new(0)).collect();
    let warm_seen = AtomicBool::new(false);
    let arrived = thread::scope(|s| {
        let warm_seen = &warm_seen;
        let reader = s.spawn(move || {
            let mut arrived = vec![0u64; n];
            let mut left = n;
            let mut lines = BufReader::new(stdout).lines();
            while left > 0 {
                let line = lines.next().expect("tail ended early").unwrap();
                let now = ns_since(t0);
                let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                if v["stream"] == "lat" {
                    arrived[usize::try_from(v["version"].as_u64().unwrap()).unwrap()] = now;
                    left -= 1;
                } else {
                    warm_seen.store(true, Ordering::Release);
                }
            }
            arrived
        });
        timed_appends(&writer, t0, &call, &ret, &|| {
            warm_seen.load(Ordering::Acquire)
        });
        reader.join().unwrap()
    });
    child.kill().unwrap();
    child.wait().unwrap();
    writer.close().unwrap();
    Latencies::new(&call, &ret, &arrived)
}

fn part_a(out: &mut String) {
    out.push_str(&format!(
        "\n(a) in-process: append returns -> subscriber thread has the event ({LATENCY_EVENTS} single-event appends, {} µs apart)\n{LATENCY_HEADER}\n",
        PAUSE.as_micros()
    ));
    for (name, d) in [
        ("Buffered", Durability::Buffered),
        ("Sync", Durability::Sync),
    ] {
        eprintln!("(a) {name}");
        let l = latency(d, Follower::SameStore);
        out.push_str(&l.row(&format!("same store, {name}")));
        out.push('\n');
    }
    out.push_str("\nreference: bare `std::sync::Condvar` hand-off between two threads (notify -> waiter awake)\n| pause | p50 µs | p99 | p99.9 | max |\n|---:|---:|---:|---:|---:|\n");
    for pause in [PAUSE, Duration::from_micros(750)] {
        let l = handoff(pause);
        out.push_str(&format!(
            "| {} µs | {} | {} | {} | {} |\n",
            pause.as_micros(),
            us(pct(&l, 50.0)),
            us(pct(&l, 99.0)),
            us(pct(&l, 99.9)),
            us(pct(&l, 100.0)),
        ));
    }
    // What a 100 µs sleep (the `LIVE` publisher's coalescing pause) takes here.
    let mut slept: Vec<u64> = (0..LATENCY_EVENTS)
        .map(|_| {
            let start = Instant::now();
            thread::sleep(Duration::from_micros(100));
            u64::try_from(start.elapsed().as_nanos()).unwrap()
        })
        .collect();
    slept.sort_unstable();
    out.push_str(&format!(
        "\nreference: `thread::sleep(100 µs)` takes p50 {} µs, p99 {} µs\n",
        us(pct(&slept, 50.0)),
        us(pct(&slept, 99.0))
    ));
}

fn part_b(out: &mut String) {
    out.push_str(&format!(
        "\n(b) following a live writer: append returns -> event delivered ({LATENCY_EVENTS} single-event appends, {} µs apart)\n{LATENCY_HEADER}\n",
        PAUSE.as_micros()
    ));
    for (name, d) in [
        ("Buffered", Durability::Buffered),
        ("Sync", Durability::Sync),
    ] {
        eprintln!("(b) read-only store, {name}");
        let l = latency(d, Follower::ReadOnly);
        out.push_str(&l.row(&format!("read-only store in this process, writer {name}")));
        out.push('\n');
    }
    for (name, d) in [
        ("Buffered", Durability::Buffered),
        ("Sync", Durability::Sync),
    ] {
        eprintln!("(b) streamlog tail, {name}");
        let l = latency_tail(d);
        out.push_str(&l.row(&format!("`streamlog tail` child process, writer {name}")));
        out.push('\n');
    }
}

/// Seconds of one pass of `scan`, median of `SCAN_PASSES`.
fn median_secs(mut scan: impl FnMut()) -> f64 {
    let mut t: Vec<f64> = (0..SCAN_PASSES)
        .map(|_| {
            let start = Instant::now();
            scan();
            start.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

/// Events and checkpoints a subscription delivers until it catches up.
fn until_caught_up(store: &Store, options: SubscribeAll) -> (u64, u64) {
    let mut sub = store.subscribe_all(options).unwrap();
    let (mut events, mut checkpoints) = (0, 0);
    loop {
        match sub.next().unwrap().unwrap() {
            Delivery::Event(_) => events += 1,
            Delivery::Checkpoint(_) => checkpoints += 1,
            Delivery::CaughtUp => return (events, checkpoints),
            _ => {}
        }
    }
}

fn part_c(out: &mut String) {
    eprintln!("(c) building {SCAN_EVENTS} events");
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open_with(tmp.path(), options(Durability::Buffered)).unwrap();
    let payload = [7u8; EVENT_BYTES];
    let build = Instant::now();
    let mut i = 0u64;
    while i < SCAN_EVENTS {
        let batch: Vec<NewEvent> = (i..i + SCAN_BATCH)
            .map(|k| NewEvent::new(if k % 100 == 0 { "Rare" } else { "Common" }, payload))
            .collect();
        let stream = format!("s-{}", (i / SCAN_BATCH) % 1000);
        store.append(&stream, ExpectedVersion::Any, batch).unwrap();
        i += SCAN_BATCH;
    }
    store.sync().unwrap();
    let build = build.elapsed().as_secs_f64();
    let rare = SCAN_EVENTS / 100;

    let borrowed = || {
        let mut n = 0u64;
        let mut bytes = 0usize;
        store
            .read_all_with(Position::START, |v| {
                n += 1;
                bytes += v.data.len();
                ControlFlow::Continue(())
            })
            .unwrap();
        assert_eq!(n, SCAN_EVENTS);
        std::hint::black_box(bytes);
    };
    borrowed(); // warm-up: the page cache and the frame cache
    eprintln!("(c) scanning");
    let t_borrowed = median_secs(borrowed);
    let t_unfiltered = median_secs(|| {
        let (e, _) = until_caught_up(&store, SubscribeAll::from_start());
        assert_eq!(e, SCAN_EVENTS);
    });
    let mut checkpoints = 0;
    let t_types = median_secs(|| {
        let (e, c) = until_caught_up(
            &store,
            SubscribeAll::from_start().filter(Filter::event_types(["Rare"])),
        );
        assert_eq!(e, rare);
        checkpoints = c;
    });
    let t_regex = median_secs(|| {
        let (e, _) = until_caught_up(
            &store,
            SubscribeAll::from_start().filter(Filter::event_type_regex("^Rare$").unwrap()),
        );
        assert_eq!(e, rare);
    });
    let rate = |t: f64| SCAN_EVENTS as f64 / t;
    out.push_str(&format!(
        "\n(c) $all scan of {SCAN_EVENTS} events ({EVENT_BYTES} B, {SCAN_BATCH} per append, 1% `Rare`; built in {build:.2} s), median of {SCAN_PASSES} passes, warm\n\
         | scan | delivered | s | events scanned/s | × unfiltered subscription |\n|---|---:|---:|---:|---:|\n"
    ));
    for (name, delivered, t) in [
        (
            "`read_all_with` (borrowed, no copy)".to_string(),
            SCAN_EVENTS,
            t_borrowed,
        ),
        (
            "subscription, unfiltered".to_string(),
            SCAN_EVENTS,
            t_unfiltered,
        ),
        (
            format!("subscription, `Filter::event_types([\"Rare\"])` (+{checkpoints} checkpoints)"),
            rare,
            t_types,
        ),
        (
            "subscription, `Filter::event_type_regex(\"^Rare$\")`".to_string(),
            rare,
            t_regex,
        ),
    ] {
        out.push_str(&format!(
            "| {name} | {delivered} | {t:.3} | {:.0} | {:.2} |\n",
            rate(t),
            t_unfiltered / t
        ));
    }
    out.push_str(&format!(
        "filtered (types) / unfiltered subscription: {:.2}; filtered (types) / read_all_with: {:.2}\n",
        t_unfiltered / t_types,
        t_borrowed / t_types
    ));
    store.close().unwrap();
}

/// Appends `n` single events (batch 1) to 1,000 streams, stopping early at `cap`
/// (checked every 10 appends); returns (appends, seconds).
fn append_run(store: &Store, n: u64, cap: Duration) -> (u64, f64) {
    let payload = [7u8; EVENT_BYTES];
    let streams: Vec<String> = (0..1000).map(|k| format!("t-{k}")).collect();
    let start = Instant::now();
    let mut done = 0;
    while done < n {
        let e = NewEvent::new("Tick", payload);
        store
            .append(&streams[(done % 1000) as usize], ExpectedVersion::Any, [e])
            .unwrap();
        done += 1;
        if done % 10 == 0 && start.elapsed() > cap {
            break;
        }
    }
    (done, start.elapsed().as_secs_f64())
}

/// RSS figures around the subscribers (KiB): before, subscriptions made, threads blocked,
/// after the appends.
type Rss = [(u64, u64, u64); 4];

/// Append throughput on a fresh store with `k` idle subscriber threads blocked in
/// `next()`: (appends, seconds, RSS).
fn with_subscribers(k: usize, cap: Duration) -> (u64, f64, Rss) {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open_with(tmp.path(), options(Durability::Buffered)).unwrap();
    // Warm-up: files, caches, the stream names.
    append_run(&store, 20_000, Duration::MAX);
    let mut rss = [rss_kib(); 4];
    let subs: Vec<_> = (0..k)
        .map(|_| {
            store
                .subscribe_all(SubscribeAll::from_end().filter(Filter::event_types(["Idle"])))
                .unwrap()
        })
        .collect();
    rss[1] = rss_kib();
    let started = Arc::new(AtomicUsize::new(0));
    let delivered = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = subs
        .into_iter()
        .map(|mut sub| {
            let started = Arc::clone(&started);
            let delivered = Arc::clone(&delivered);
            thread::spawn(move || {
                started.fetch_add(1, Ordering::AcqRel);
                // Blocks; ends when the store is closed.
                for d in sub.by_ref() {
                    if let Delivery::Event(_) = d.unwrap() {
                        delivered.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    while started.load(Ordering::Acquire) < k {
        thread::sleep(Duration::from_millis(10));
    }
    // Every thread is in `next()` by now.
    thread::sleep(Duration::from_millis(500));
    rss[2] = rss_kib();
    let (n, secs) = append_run(&store, THROUGHPUT_APPENDS, cap);
    rss[3] = rss_kib();
    store.close().unwrap();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(delivered.load(Ordering::Relaxed), 0, "idle subscribers");
    (n, secs, rss)
}

fn part_d(out: &mut String) {
    // 1,000 first: its RSS baseline is then the least inflated by the other runs'
    // (freed, retained) memory.
    let mut runs = Vec::new();
    let mut rss = None;
    for k in [SUBSCRIBERS, 0, 10, 100] {
        eprintln!("(d) appending with {k} subscribers");
        let cap = if k == 0 {
            Duration::MAX
        } else {
            THROUGHPUT_CAP
        };
        let (n, secs, r) = with_subscribers(k, cap);
        if k == SUBSCRIBERS {
            rss = Some(r);
        }
        runs.push((k, n, secs));
    }
    runs.sort_unstable_by_key(|r| r.0);
    let rate0 = runs[0].1 as f64 / runs[0].2;
    let mut rows = String::new();
    for (k, n, secs) in runs {
        let rate = n as f64 / secs;
        rows.push_str(&format!(
            "| {k} | {n} | {secs:.2} | {rate:.0} | {:.5} ({:.0}× slower) | {:.1} |\n",
            rate / rate0,
            rate0 / rate,
            secs * 1e6 / n as f64
        ));
    }
    let rss = rss.unwrap();
    let mib = |kib: u64| kib as f64 / 1024.0;
    let each = |kib: u64| (kib as f64 - rss[0].0 as f64) / SUBSCRIBERS as f64;
    out.push_str(&format!(
        "\n(d) idle subscribers: threads blocked in next() on from_end $all filtered to a type never appended\n\
         | RSS of the process with {SUBSCRIBERS} subscribers | VmRSS MiB | RssAnon MiB | RssFile MiB | VmRSS over before, KiB per subscriber |\n|---|---:|---:|---:|---:|\n"
    ));
    for (name, r) in [
        "before (store open, 20,000 appends)",
        "after creating the subscriptions (no threads)",
        "after their threads blocked in next()",
        "after the appends below",
    ]
    .iter()
    .zip(rss)
    {
        out.push_str(&format!(
            "| {name} | {:.1} | {:.1} | {:.1} | {:.1} |\n",
            mib(r.0),
            mib(r.1),
            mib(r.2),
            each(r.0)
        ));
    }
    out.push_str(&format!(
        "\n| subscribers | appends (Buffered, batch 1, {EVENT_BYTES} B) | s | appends/s | × none | µs per append |\n|---:|---:|---:|---:|---:|---:|\n{rows}\
         (runs with subscribers stop after {} s)\n",
        THROUGHPUT_CAP.as_secs()
    ));
}

/// The machine's own figure for comparison with (a): a bare `std` condition-variable
/// hand-off between two threads, `pause` apart (time of the notifying call -> waiter awake).
fn handoff(pause: Duration) -> Vec<u64> {
    let n = LATENCY_EVENTS;
    let shared = Arc::new((std::sync::Mutex::new(0usize), std::sync::Condvar::new()));
    let t0 = Instant::now();
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    let waiter = {
        let shared = Arc::clone(&shared);
        thread::spawn(move || {
            let mut arrived = vec![0u64; n];
            let mut seen = 0;
            let (lock, cond) = &*shared;
            let mut g = lock.lock().unwrap();
            while seen < n {
                while *g == seen {
                    g = cond.wait(g).unwrap();
                }
                let now = ns_since(t0);
                for a in &mut arrived[seen..*g] {
                    *a = now;
                }
                seen = *g;
            }
            arrived
        })
    };
    for i in 0..n {
        thread::sleep(pause);
        sent[i].store(ns_since(t0), Ordering::Release);
        let (lock, cond) = &*shared;
        *lock.lock().unwrap() += 1;
        cond.notify_one();
    }
    let arrived = waiter.join().unwrap();
    let mut l: Vec<u64> = arrived
        .iter()
        .zip(sent.iter())
        .map(|(a, s)| a.saturating_sub(s.load(Ordering::Acquire)))
        .collect();
    l.sort_unstable();
    l
}

fn main() {
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| matches!(a.as_str(), "a" | "b" | "c" | "d"))
        .collect();
    let run = |p: &str| wanted.is_empty() || wanted.iter().any(|w| w == p);
    let started = Instant::now();
    // (d) first: its RSS baseline is then not inflated by (or reusing) the others' memory.
    let mut d = String::new();
    if run("d") {
        part_d(&mut d);
    }
    let mut out = String::new();
    if run("a") {
        part_a(&mut out);
    }
    if run("b") {
        part_b(&mut out);
    }
    if run("c") {
        part_c(&mut out);
    }
    out.push_str(&d);
    println!("{out}");
    println!("total {:.1} s", started.elapsed().as_secs_f64());
}
