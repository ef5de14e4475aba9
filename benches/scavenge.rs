//! Scavenge costs, measured in one run: `cargo bench --bench scavenge` (or `-- a`, `-- b`,
//! `-- c` for one part). Sizes: `STREAMLOG_BENCH_EVENTS` (default 400,000 events).
//!
//! (a) Throughput: a store of realistic JSON order events (varied fields, ~200-300 bytes)
//!     in which half the streams are deleted; the scavenge's input MB/s (logical bytes of
//!     the segments it read) against a raw sequential copy of the same segment files
//!     (read + write + fdatasync of each, page cache warm for both), and the ratio.
//! (b) Appends while a scavenge runs: buffered appends of one event by 4 threads for a
//!     fixed time, alone and while a scavenge of the (a) store runs beside them; the ratio.
//! (c) Bytes on disk and reads: the same store before and after `scavenge` with
//!     `compress_all` (nothing deleted): bytes of segment files per event; then a warm
//!     and a cold (page cache dropped with `posix_fadvise(DONTNEED)` on every file) read of
//!     one 1,000-event stream, compressed against uncompressed, and the ratio.
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use streamlog::io::sim::SplitMix64 as Rng;
use streamlog::{Durability, ExpectedVersion, NewEvent, Options, ScavengeOptions, Store};

fn events() -> u64 {
    std::env::var("STREAMLOG_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400_000)
}

fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir.join("segments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

fn segment_bytes(dir: &Path) -> u64 {
    files(dir)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

fn options() -> Options {
    Options::default()
        .with_durability(Durability::Buffered)
        .with_segment_size_bytes(16 << 20)
}

/// An order event with varied fields, as JSON.
fn order(rng: &mut Rng, n: u64) -> NewEvent {
    let kinds = [
        "OrderPlaced",
        "ItemAdded",
        "ItemRemoved",
        "PaymentTaken",
        "OrderShipped",
    ];
    let kind = kinds[(rng.next_u64() % kinds.len() as u64) as usize];
    let data = format!(
        "{{\"order_id\":\"ord-{n:08}\",\"customer\":\"cust-{:05}\",\"sku\":\"SKU-{:04}\",\"qty\":{},\"price_cents\":{},\"currency\":\"EUR\",\"address\":{{\"city\":\"{}\",\"zip\":\"{:05}\"}},\"note\":\"{}\"}}",
        rng.next_u64() % 20_000,
        rng.next_u64() % 5_000,
        1 + rng.next_u64() % 9,
        rng.next_u64() % 100_000,
        ["Berlin", "Lyon", "Porto", "Turku", "Graz"][(rng.next_u64() % 5) as usize],
        rng.next_u64() % 100_000,
        ["gift", "", "leave at door", "fragile", ""][(rng.next_u64() % 5) as usize],
    );
    NewEvent::new(kind, data).with_metadata(format!(
        "{{\"correlation\":\"c-{}\"}}",
        rng.next_u64() % 1_000_000
    ))
}

/// A store of `n` order events over 2,000 streams (plus one 1,000-event stream `hot`).
fn build(dir: &Path, n: u64) {
    let store = Store::open_with(dir, options()).unwrap();
    let mut rng = Rng::new(7);
    for i in 0..n {
        let s = format!("order-{}", i % 2000);
        store
            .append(&s, ExpectedVersion::Any, [order(&mut rng, i)])
            .unwrap();
        if i % (n / 1000).max(1) == 0 {
            store
                .append("hot", ExpectedVersion::Any, [order(&mut rng, i)])
                .unwrap();
        }
    }
    store.close().unwrap();
}

/// Raw sequential copy of the segment files: read each whole, write it, fdatasync.
fn raw_copy(dir: &Path, to: &Path) -> (u64, Duration) {
    std::fs::create_dir_all(to).unwrap();
    let start = Instant::now();
    let mut bytes = 0u64;
    for p in files(dir) {
        let data = std::fs::read(&p).unwrap();
        bytes += data.len() as u64;
        let f = std::fs::File::create(to.join(p.file_name().unwrap())).unwrap();
        std::io::Write::write_all(&mut &f, &data).unwrap();
        f.sync_data().unwrap();
    }
    (bytes, start.elapsed())
}

fn part_a(tmp: &Path) {
    let dir = tmp.join("a");
    build(&dir, events());
    let store = Store::open_with(&dir, options()).unwrap();
    for i in (0..2000).step_by(2) {
        store
            .delete_stream(&format!("order-{i}"), ExpectedVersion::Any)
            .unwrap();
    }
    let logical = segment_bytes(&dir);
    // Warm the page cache for both.
    for p in files(&dir) {
        std::fs::read(p).unwrap();
    }
    let (copied, copy_time) = raw_copy(&dir, &tmp.join("a-copy"));
    let start = Instant::now();
    let report = store.scavenge(&ScavengeOptions::default()).unwrap();
    let scavenge_time = start.elapsed();
    let copy_mbs = copied as f64 / copy_time.as_secs_f64() / 1e6;
    let scav_mbs = logical as f64 / scavenge_time.as_secs_f64() / 1e6;
    println!(
        "(a) scavenge of {} MB ({} events, half the streams deleted): {:.1} MB/s of input; raw copy {:.1} MB/s; ratio {:.2}; {} -> {} bytes, {} events removed",
        logical / 1_000_000,
        events(),
        scav_mbs,
        copy_mbs,
        scav_mbs / copy_mbs,
        report.bytes_before,
        report.bytes_after,
        report.events_removed
    );
    store.close().unwrap();
}

fn appends_for(store: &Store, run: Duration) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..4)
        .map(|w| {
            let (store, stop, done) = (store.clone(), Arc::clone(&stop), Arc::clone(&done));
            thread::spawn(move || {
                let mut rng = Rng::new(w);
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    store
                        .append(
                            &format!("live-{w}"),
                            ExpectedVersion::Any,
                            [order(&mut rng, n)],
                        )
                        .unwrap();
                    n += 1;
                }
                done.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();
    thread::sleep(run);
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

fn part_b(tmp: &Path) {
    let dir = tmp.join("b");
    build(&dir, events());
    let store = Store::open_with(&dir, options()).unwrap();
    let alone = appends_for(&store, Duration::from_secs(3));
    for i in (0..2000).step_by(2) {
        store
            .delete_stream(&format!("order-{i}"), ExpectedVersion::Any)
            .unwrap();
    }
    let scavenger = {
        let store = store.clone();
        thread::spawn(move || {
            let start = Instant::now();
            store.scavenge(&ScavengeOptions::default()).unwrap();
            start.elapsed()
        })
    };
    let during = appends_for(&store, Duration::from_secs(3));
    let took = scavenger.join().unwrap();
    println!(
        "(b) appends/s by 4 threads: alone {alone:.0}, while a scavenge runs {during:.0}; ratio {:.2} (the scavenge took {:.1} s)",
        during / alone,
        took.as_secs_f64()
    );
    store.close().unwrap();
}

/// Mean time to read the stream `hot` whole, over `rounds` reads (cold: caches dropped
/// before each).
fn read_hot(dir: &Path, cold: bool, rounds: u32) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..rounds {
        let store = Store::open_with(dir, options().with_frame_cache_bytes(0)).unwrap();
        if cold {
            drop_cache(dir);
        } else {
            let _ = store.read_stream("hot", 0).unwrap().count();
        }
        let start = Instant::now();
        let n = store.read_stream("hot", 0).unwrap().count();
        total += start.elapsed();
        assert!(n >= 1000);
    }
    total / rounds
}

fn drop_cache(dir: &Path) {
    #[cfg(target_os = "linux")]
    for p in files(dir) {
        let f = std::fs::File::open(&p).unwrap();
        let _ = rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = dir;
}

fn part_c(tmp: &Path) {
    let plain = tmp.join("c-plain");
    build(&plain, events());
    let compressed = tmp.join("c-zstd");
    build(&compressed, events());
    let store = Store::open_with(&compressed, options()).unwrap();
    store
        .scavenge(&ScavengeOptions::default().with_compress_all(true))
        .unwrap();
    store.close().unwrap();
    let n = events() + 1000;
    let (before, after) = (segment_bytes(&plain), segment_bytes(&compressed));
    println!(
        "(c) bytes of segment files: {} events, uncompressed {} ({:.0} B/event), compressed {} ({:.0} B/event); ratio {:.3}",
        n,
        before,
        before as f64 / n as f64,
        after,
        after as f64 / n as f64,
        after as f64 / before as f64
    );
    for cold in [false, true] {
        let rounds = if cold { 5 } else { 50 };
        let p = read_hot(&plain, cold, rounds);
        let c = read_hot(&compressed, cold, rounds);
        println!(
            "(c) {} read of a 1,000-event stream: uncompressed {:.2} ms, compressed {:.2} ms; ratio {:.2}",
            if cold { "cold" } else { "warm" },
            p.as_secs_f64() * 1e3,
            c.as_secs_f64() * 1e3,
            c.as_secs_f64() / p.as_secs_f64()
        );
    }
}

fn main() {
    let part = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let tmp = tempfile::tempdir().unwrap();
    let run = |p: &str| part.as_deref().is_none_or(|x| x == p);
    if run("a") {
        part_a(tmp.path());
    }
    if run("b") {
        part_b(tmp.path());
    }
    if run("c") {
        part_c(tmp.path());
    }
}
