//! Format 2's costs and time travel, measured in one run: `cargo bench --bench time_travel`
//! (or `-- a`, `-- b`, `-- c` for one part).
//!
//! (a) Sector-aligned vs packed commits: durable (`Sync`) appends of one 150-byte event
//!     by 1 and by 64 threads for a fixed time each, on fresh stores in one temporary
//!     directory; appends per second, and bytes of segment files per event, for both
//!     settings, and the ratio aligned / packed.
//! (b) Finding a time: `position_at` on stores of 20,000 and of N events (default
//!     2,000,000; `STREAMLOG_BENCH_EVENTS` sets it), 1,000 random times each; the mean
//!     time per lookup, and the ratio of the large store to the small one.
//! (c) `load_as_of` vs `load`: one stream of 1,000,500 events (`STREAMLOG_BENCH_STREAM`
//!     sets the 1,000,000) with a snapshot every 1,000 versions, so that `load` of the
//!     latest state replays 500 events; the mean time of `load` and of `load_as_of` at
//!     random versions, positions and times, with the decoded-frame cache and without.
#![allow(clippy::unwrap_used, missing_docs)]

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use streamlog::io::sim::SplitMix64 as Rng;
use streamlog::{
    Aggregate, AsOf, Durability, EventView, ExpectedVersion, NewEvent, Options, Position,
    SnapshotPolicy, Store,
};

const EVENT_BYTES: usize = 150;
const ALIGN_RUN: Duration = Duration::from_secs(4);

fn segment_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir.join("segments"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

/// Appends/s and bytes per event with `writers` threads for `ALIGN_RUN`.
fn durable_appends(aligned: bool, writers: usize) -> (f64, f64) {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open_with(
        tmp.path(),
        Options::default()
            .with_durability(Durability::Sync)
            .with_sector_aligned_commits(aligned),
    )
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let payload = vec![b'x'; EVENT_BYTES];
    let start = Instant::now();
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let (store, stop, done, payload) = (
                store.clone(),
                Arc::clone(&stop),
                Arc::clone(&done),
                payload.clone(),
            );
            thread::spawn(move || {
                let stream = format!("s-{w}");
                while !stop.load(Ordering::Relaxed) {
                    store
                        .append(
                            &stream,
                            ExpectedVersion::Any,
                            [NewEvent::new("E", &payload)],
                        )
                        .unwrap();
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    thread::sleep(ALIGN_RUN);
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed);
    store.close().unwrap();
    let bytes = segment_bytes(tmp.path());
    (n as f64 / secs, bytes as f64 / n.max(1) as f64)
}

fn part_a() {
    println!(
        "(a) sector-aligned vs packed commits, Sync, {EVENT_BYTES}-byte events, {ALIGN_RUN:?} each"
    );
    println!(
        "| writers | packed appends/s | aligned appends/s | aligned / packed | packed bytes/event | aligned bytes/event |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for writers in [1, 64] {
        let (p_rate, p_bytes) = durable_appends(false, writers);
        let (a_rate, a_bytes) = durable_appends(true, writers);
        println!(
            "| {writers} | {p_rate:.0} | {a_rate:.0} | {:.2} | {p_bytes:.0} | {a_bytes:.0} |",
            a_rate / p_rate
        );
    }
}

/// A store of `n` events whose commit times advance 1 ms per append of 10 events.
fn timed_store(dir: &std::path::Path, n: u64) -> (Store, SystemTime, SystemTime) {
    let start = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let clock_us = Arc::new(AtomicU64::new(0));
    let c = Arc::clone(&clock_us);
    let store = Store::open_with(
        dir,
        Options::default()
            .with_durability(Durability::Buffered)
            .with_clock(streamlog::Clock::from_fn(move || {
                start + Duration::from_micros(c.load(Ordering::Relaxed))
            })),
    )
    .unwrap();
    let payload = vec![b'x'; 100];
    for i in 0..n / 10 {
        clock_us.fetch_add(1_000, Ordering::Relaxed);
        let batch: Vec<NewEvent> = (0..10).map(|_| NewEvent::new("E", &payload)).collect();
        store
            .append(&format!("s-{}", i % 1000), ExpectedVersion::Any, batch)
            .unwrap();
    }
    store.sync().unwrap();
    let end = start + Duration::from_micros(clock_us.load(Ordering::Relaxed));
    (store, start, end)
}

fn mean_lookup(store: &Store, start: SystemTime, end: SystemTime) -> Duration {
    let span = end.duration_since(start).unwrap().as_micros() as u64;
    let mut rng = Rng::new(5);
    let times: Vec<SystemTime> = (0..1000)
        .map(|_| start + Duration::from_micros(rng.below(span)))
        .collect();
    let t = Instant::now();
    for &at in &times {
        std::hint::black_box(store.position_at(at).unwrap());
    }
    t.elapsed() / times.len() as u32
}

fn part_b() {
    let large: u64 = std::env::var("STREAMLOG_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000);
    println!("(b) position_at: mean of 1,000 random times");
    let tmp = tempfile::tempdir().unwrap();
    let (small, s0, s1) = timed_store(&tmp.path().join("small"), 20_000);
    let small_t = mean_lookup(&small, s0, s1);
    let (big, b0, b1) = timed_store(&tmp.path().join("large"), large);
    let big_t = mean_lookup(&big, b0, b1);
    println!("| events | mean per lookup |");
    println!("|---:|---:|");
    println!("| 20,000 | {small_t:?} |");
    println!("| {large} | {big_t:?} |");
    println!(
        "large / small: {:.2}",
        big_t.as_secs_f64() / small_t.as_secs_f64()
    );
}

#[derive(Default)]
struct Sum(u64);
impl Aggregate for Sum {
    const SCHEMA: &'static str = "sum";
    fn apply(&mut self, e: &EventView<'_>) {
        self.0 += e.data.len() as u64;
    }
    fn encode(&self) -> Vec<u8> {
        self.0.to_le_bytes().to_vec()
    }
    fn decode(b: &[u8]) -> Option<Self> {
        Some(Sum(u64::from_le_bytes(b.try_into().ok()?)))
    }
}

fn part_c() {
    // With the decoded-frame cache (the default), `load` of the latest state finds its
    // frames cached from the previous round while `load_as_of` at random bounds mostly
    // does not; without the cache, both read and decode their frames every time.
    for cache in [32usize << 20, 0] {
        part_c_with(cache);
    }
}

fn part_c_with(frame_cache_bytes: usize) {
    let n: u64 = std::env::var("STREAMLOG_BENCH_STREAM")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    println!(
        "(c) load_as_of vs load: one stream of {n} + 500 events, a snapshot every 1,000 \
         versions, frame cache {} MiB",
        frame_cache_bytes >> 20
    );
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open_with(
        tmp.path(),
        Options::default()
            .with_durability(Durability::Buffered)
            .with_frame_cache_bytes(frame_cache_bytes)
            .with_snapshot_policy(SnapshotPolicy::EveryEvents(1_000)),
    )
    .unwrap();
    let payload = vec![b'x'; 100];
    let mut positions = Vec::new();
    // Half a snapshot interval past the last snapshot, as a stream usually is: `load` of
    // the latest state replays 500 events, `load_as_of` 0 to 999 (500 on average).
    for i in 0..n / 100 + 5 {
        let batch: Vec<NewEvent> = (0..100).map(|_| NewEvent::new("E", &payload)).collect();
        let r = store.append("acct", ExpectedVersion::Any, batch).unwrap();
        positions.push(r.position);
        if i % 10 == 9 {
            // Saves a snapshot every 1,000 events (the policy).
            store.load::<Sum>("acct").unwrap();
        }
    }
    store.sync().unwrap();
    let mut times = Vec::new();
    store
        .read_all_with(Position::START, |e| {
            if e.append_index == 0 && e.version % 10_000 == 0 {
                times.push(e.committed_at().unwrap());
            }
            ControlFlow::Continue(())
        })
        .unwrap();
    let rounds = 200u32;
    let t = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(store.load::<Sum>("acct").unwrap());
    }
    let latest = t.elapsed() / rounds;
    let mut rng = Rng::new(3);
    let mut row = |name: &str, bound: &mut dyn FnMut(&mut Rng) -> AsOf| {
        let t = Instant::now();
        for _ in 0..rounds {
            let b = bound(&mut rng);
            std::hint::black_box(store.load_as_of::<Sum>("acct", b).unwrap());
        }
        let d = t.elapsed() / rounds;
        println!(
            "| load_as_of {name} | {d:?} | {:.2} |",
            d.as_secs_f64() / latest.as_secs_f64()
        );
    };
    println!("| load | mean | / load of the latest |");
    println!("|---|---:|---:|");
    println!("| load (latest) | {latest:?} | 1.00 |");
    row("(version)", &mut |r| AsOf::Version(r.below(n)));
    row("(position)", &mut |r| {
        AsOf::Position(positions[r.below(positions.len() as u64) as usize])
    });
    row("(time)", &mut |r| {
        AsOf::Time(times[r.below(times.len() as u64) as usize])
    });
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let want = |p: &str| args.is_empty() || args.iter().any(|a| a == p);
    if want("a") {
        part_a();
    }
    if want("b") {
        part_b();
    }
    if want("c") {
        part_c();
    }
}
