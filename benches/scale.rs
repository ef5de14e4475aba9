//! Index at scale: open time, stream reads and memory of a large store against a small one,
//! measured in the same run. `cargo bench --bench scale` (defaults: 10,000,000 events in
//! 1,000,000 streams against 10,000 events), or with `-- --events N --streams S`.
//!
//! Phases (each run as its own process by the driver, so that peak memory is per phase):
//! `build DIR EVENTS STREAMS`, `open DIR`, `read DIR STREAMS N` (N random streams),
//! `tail DIR FRAMES` (a crash image with an un-checkpointed tail of FRAMES appends).
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use streamlog::{Durability, ExpectedVersion, NewEvent, Options, Store};

const EVENT_BYTES: usize = 150;
const BATCH: u64 = 10;
const PROBE: &str = "probe";

fn buffered() -> Options {
    Options::default().with_durability(Durability::Buffered)
}

/// A store of `events` events: appends of 10 events to random streams among `streams`,
/// plus one 100-event stream (`probe`) written as 10 appends spread through the log.
fn build(dir: &Path, events: u64, streams: u64) {
    let store = Store::open_with(dir, buffered()).unwrap();
    let payload = [7u8; EVENT_BYTES];
    let appends = events / BATCH;
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    for i in 0..appends {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let stream = format!("s-{}", rng % streams);
        let batch = (0..BATCH).map(|_| NewEvent::new("E", payload));
        store.append(&stream, ExpectedVersion::Any, batch).unwrap();
        if i % (appends / 10).max(1) == 0 {
            let batch = (0..10).map(|_| NewEvent::new("P", payload));
            store.append(PROBE, ExpectedVersion::Any, batch).unwrap();
        }
    }
    store.close().unwrap();
}

fn open_ms(dir: &Path) -> f64 {
    let t = Instant::now();
    let store = Store::open_with(dir, buffered()).unwrap();
    let ms = t.elapsed().as_secs_f64() * 1e3;
    assert!(store.recovery_report().clean_shutdown);
    ms
}

fn read_probe_us(store: &Store) -> f64 {
    let t = Instant::now();
    let n = store
        .read_stream(PROBE, 0)
        .unwrap()
        .map(|e| e.unwrap().version)
        .sum::<u64>();
    assert_eq!(n, (0..100).sum::<u64>());
    t.elapsed().as_secs_f64() * 1e6
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn drop_caches() -> bool {
    Command::new("sh")
        .args(["-c", "sync && echo 3 > /proc/sys/vm/drop_caches"])
        .status()
        .is_ok_and(|s| s.success())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Phase `open`: median open time of 5, warm and cold stream reads.
fn phase_open(dir: &Path) {
    let open = median((0..5).map(|_| open_ms(dir)).collect());
    let cold = if drop_caches() {
        let t = Instant::now();
        let store = Store::open_with(dir, buffered()).unwrap();
        let open_cold = t.elapsed().as_secs_f64() * 1e3;
        let read_cold = read_probe_us(&store);
        format!("{open_cold:.2} {read_cold:.1}")
    } else {
        "- -".into()
    };
    let store = Store::open_with(dir, buffered()).unwrap();
    let warm = median((0..50).map(|_| read_probe_us(&store)).collect());
    println!("{open:.3} {cold} {warm:.1} {}", peak_rss_kib());
}

/// Phase `read`: open and read `n` random streams; prints peak RSS (KiB).
fn phase_read(dir: &Path, streams: u64, n: u64) {
    let store = Store::open_with(dir, buffered()).unwrap();
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut events = 0usize;
    let t = Instant::now();
    for _ in 0..n {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        for e in store
            .read_stream(&format!("s-{}", rng % streams), 0)
            .unwrap()
        {
            e.unwrap();
            events += 1;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    println!("{events} {secs:.3} {}", peak_rss_kib());
}

/// Phase `tail`: copy the store while it holds `frames` appends past its last index flush
/// (a crash image), then time opening the copy.
fn phase_tail(dir: &Path, frames: u64) {
    let image = dir.with_extension(format!("tail{frames}"));
    let _ = std::fs::remove_dir_all(&image);
    {
        let opts = buffered().with_memtable_entries((frames as usize + 1).max(16) * 4);
        let store = Store::open_with(dir, opts).unwrap();
        for _ in 0..frames {
            let batch = (0..BATCH).map(|_| NewEvent::new("E", [1u8; EVENT_BYTES]));
            store.append("tail", ExpectedVersion::Any, batch).unwrap();
        }
        store.sync().unwrap();
        for sub in ["segments", "index"] {
            std::fs::create_dir_all(image.join(sub)).unwrap();
            for e in std::fs::read_dir(dir.join(sub)).unwrap() {
                let e = e.unwrap();
                std::fs::copy(e.path(), image.join(sub).join(e.file_name())).unwrap();
            }
        }
        drop(store);
    }
    // Write the copy out first, so that the open below does not pay for it.
    Command::new("sync").status().unwrap();
    let t = Instant::now();
    let store = Store::open_with(&image, buffered()).unwrap();
    let ms = t.elapsed().as_secs_f64() * 1e3;
    let replayed = store.recovery_report().index.replayed_frames;
    drop(store);
    std::fs::remove_dir_all(&image).unwrap();
    println!("{ms:.3} {replayed}");
}

fn run_phase(args: &[&str]) -> Vec<String> {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .map(String::from)
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    match a.as_slice() {
        ["build", dir, events, streams] => {
            return build(
                Path::new(dir),
                events.parse().unwrap(),
                streams.parse().unwrap(),
            );
        }
        ["open", dir] => return phase_open(Path::new(dir)),
        ["read", dir, streams, n] => {
            return phase_read(Path::new(dir), streams.parse().unwrap(), n.parse().unwrap());
        }
        ["tail", dir, frames] => return phase_tail(Path::new(dir), frames.parse().unwrap()),
        _ => {}
    }
    let flag = |name: &str, default: u64| {
        a.iter()
            .position(|x| *x == name)
            .and_then(|i| a.get(i + 1))
            .map_or(default, |v| v.parse().unwrap())
    };
    let (events, streams) = (flag("--events", 10_000_000), flag("--streams", 1_000_000));
    let root: PathBuf = std::env::var_os("STREAMLOG_SCALE_DIR").map_or_else(
        || std::env::temp_dir().join("streamlog-scale"),
        PathBuf::from,
    );
    let _ = std::fs::remove_dir_all(&root);
    let small = root.join("small");
    let large = root.join("large");
    let t = Instant::now();
    run_phase(&["build", small.to_str().unwrap(), "10000", "1000"]);
    run_phase(&[
        "build",
        large.to_str().unwrap(),
        &events.to_string(),
        &streams.to_string(),
    ]);
    let build_s = t.elapsed().as_secs_f64();
    println!(
        "# streamlog index at scale: {events} events / {streams} streams vs 10000 / 1000 (built in {build_s:.0} s)"
    );
    let s = run_phase(&["open", small.to_str().unwrap()]);
    let l = run_phase(&["open", large.to_str().unwrap()]);
    let f = |v: &[String], i: usize| v[i].parse::<f64>().unwrap_or(f64::NAN);
    println!("| measure | 10k store | {events} store | ratio |");
    println!("|---|---:|---:|---:|");
    for (name, i) in [
        ("open after clean close, ms (median of 5)", 0),
        ("open, cold cache, ms", 1),
        ("read 100-event stream, cold cache, µs", 2),
        ("read 100-event stream, warm, µs (median of 50)", 3),
    ] {
        println!(
            "| {name} | {:.2} | {:.2} | {:.2} |",
            f(&s, i),
            f(&l, i),
            f(&l, i) / f(&s, i)
        );
    }
    let r = run_phase(&[
        "read",
        large.to_str().unwrap(),
        &streams.to_string(),
        "10000",
    ]);
    println!(
        "| open + read 10,000 random streams ({} events) of the large store: peak RSS | | {:.1} MiB in {} s | |",
        r[0],
        f(&r, 2) / 1024.0,
        r[1]
    );
    for frames in [0u64, 10_000, 100_000] {
        let t = run_phase(&["tail", large.to_str().unwrap(), &frames.to_string()]);
        println!(
            "| open after a crash with {frames} un-indexed appends (replayed {}): ms | | {} | |",
            t[1], t[0]
        );
    }
    let bytes: u64 = std::fs::read_dir(large.join("segments"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    let index: u64 = std::fs::read_dir(large.join("index"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    println!(
        "large store: {:.0} MiB of segments, {:.1} MiB of index",
        bytes as f64 / 1048576.0,
        index as f64 / 1048576.0
    );
    let _ = std::fs::remove_dir_all(&root);
}
