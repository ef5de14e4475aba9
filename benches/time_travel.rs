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
//!     latest state replays 500 events; `load` and `load_as_of` at random versions,
//!     positions and times take turns (1,000 rounds warm, 300 cold), and the median, 90th
//!     percentile and mean of each kind are reported, with the ratios of the medians and
//!     of the 90th percentiles to `load`'s from the same run; with the decoded-frame cache,
//!     without it, and without it with the store's files evicted from the page cache
//!     before every load (`load` of the latest state otherwise rereads the same few
//!     frames from memory every round, while a bound in the past reaches anywhere).
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
    // does not; without the cache, both read and decode their frames every time. The
    // last setting also evicts the store's files from the page cache before every load,
    // of either kind: `load` of the latest state otherwise reads the same few frames
    // every round (in memory, in the CPU's caches even), a bound in the past frames
    // anywhere in the log; cold, both read from the disk.
    for (cache, cold) in [(32usize << 20, false), (0, false), (0, true)] {
        part_c_with(cache, cold);
    }
}

/// Drops the pages of every file under `dir` from the page cache (`POSIX_FADV_DONTNEED`
/// on files that are not dirty: the store is synced first).
fn evict(dir: &std::path::Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        if entry.file_type().unwrap().is_dir() {
            evict(&path);
        } else if let Ok(f) = std::fs::File::open(&path) {
            let _ = rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed);
        }
    }
}

fn part_c_with(frame_cache_bytes: usize, cold: bool) {
    let n: u64 = std::env::var("STREAMLOG_BENCH_STREAM")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    println!(
        "(c) load_as_of vs load: one stream of {n} + 500 events, a snapshot every 1,000 \
         versions, frame cache {} MiB, page cache {}",
        frame_cache_bytes >> 20,
        if cold {
            "evicted before every load"
        } else {
            "warm"
        }
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
    // Times to the microsecond (not only the commit times of appends, which a search
    // could remember), drawn as the other bounds are: a random append, then a random time
    // from its commit up to the next one's. (Drawn evenly between the first commit and
    // the last, bounds would crowd where appends were slow, such as the latest ones.)
    let mut commits: Vec<SystemTime> = Vec::with_capacity(positions.len() + 1);
    let mut at = None;
    store
        .read_all_with(Position::START, |e| {
            if at != Some(e.position) {
                at = Some(e.position);
                commits.push(e.committed_at().unwrap());
            }
            ControlFlow::Continue(())
        })
        .unwrap();
    let random_time = |rng: &mut Rng| {
        let i = rng.below(commits.len() as u64 - 1) as usize;
        let gap_us = commits[i + 1]
            .duration_since(commits[i])
            .unwrap()
            .as_micros() as u64;
        commits[i] + Duration::from_micros(rng.below(gap_us.max(1)))
    };
    // The four kinds of load take turns, in a rotating order, so that the machine's
    // changing load weighs on all of them alike. The ratios compare medians (and 90th
    // percentiles): on a shared machine, a few loads that another process delays move a
    // mean by more than the difference being measured.
    let rounds: usize = if cold { 300 } else { 1000 };
    let mut rng = Rng::new(3);
    let mut times: [Vec<Duration>; 4] = std::array::from_fn(|_| Vec::with_capacity(rounds));
    for round in 0..rounds {
        for k in 0..4 {
            let kind = (k + round) % 4;
            let bound = match kind {
                0 => None,
                1 => Some(AsOf::Version(rng.below(n))),
                2 => Some(AsOf::Position(
                    positions[rng.below(positions.len() as u64) as usize],
                )),
                _ => Some(AsOf::Time(random_time(&mut rng))),
            };
            if cold {
                evict(tmp.path());
            }
            let t = Instant::now();
            match bound {
                None => {
                    std::hint::black_box(store.load::<Sum>("acct").unwrap());
                }
                Some(b) => {
                    std::hint::black_box(store.load_as_of::<Sum>("acct", b).unwrap());
                }
            }
            times[kind].push(t.elapsed());
        }
    }
    // (median, 90th percentile, mean) of each kind.
    let stats = times.map(|mut t| {
        t.sort_unstable();
        let at = |q: f64| t[((t.len() - 1) as f64 * q).round() as usize];
        let mean = t.iter().sum::<Duration>() / t.len() as u32;
        (at(0.5), at(0.9), mean)
    });
    let latest = stats[0];
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "| load ({rounds} of each kind) | median | p90 | mean | median / latest | p90 / latest |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, (median, p90, mean)) in [
        "load (latest)",
        "load_as_of (version)",
        "load_as_of (position)",
        "load_as_of (time)",
    ]
    .iter()
    .zip(stats)
    {
        println!(
            "| {name} | {:.1} µs | {:.1} µs | {:.1} µs | {:.2} | {:.2} |",
            us(median),
            us(p90),
            us(mean),
            median.as_secs_f64() / latest.0.as_secs_f64(),
            p90.as_secs_f64() / latest.1.as_secs_f64(),
        );
    }
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
