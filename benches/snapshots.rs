//! Snapshots and bounded replay, measured in one run: `cargo bench --bench snapshots`
//! (or `-- --events N` for the long stream; default 1,000,000).
//!
//! 1. `load::<A>` of a long stream under `SnapshotPolicy::EveryEvents(1000)` (after the
//!    first load saved a snapshot and 999 more events were appended) against loading a
//!    1,000-event stream with no snapshot.
//! 2. Sustained buffered append throughput with and without a snapshot saved every 100
//!    appends.
#![allow(clippy::unwrap_used, missing_docs)]

use std::time::Instant;

use streamlog::{
    Aggregate, Durability, EventView, ExpectedVersion, NewEvent, Options, SnapshotPolicy, Store,
};

#[derive(Default)]
struct Count {
    events: u64,
    bytes: u64,
}

impl Aggregate for Count {
    const SCHEMA: &'static str = "count-v1";
    fn apply(&mut self, e: &EventView<'_>) {
        self.events += 1;
        self.bytes += e.data.len() as u64;
    }
    fn encode(&self) -> Vec<u8> {
        let mut b = self.events.to_le_bytes().to_vec();
        b.extend_from_slice(&self.bytes.to_le_bytes());
        b
    }
    fn decode(b: &[u8]) -> Option<Self> {
        Some(Count {
            events: u64::from_le_bytes(b.get(0..8)?.try_into().ok()?),
            bytes: u64::from_le_bytes(b.get(8..16)?.try_into().ok()?),
        })
    }
}

fn options() -> Options {
    Options::default()
        .with_durability(Durability::Buffered)
        .with_snapshot_policy(SnapshotPolicy::EveryEvents(1000))
}

fn append(store: &Store, stream: &str, n: u64) {
    let mut left = n;
    while left > 0 {
        let k = left.min(100);
        let batch = (0..k).map(|_| NewEvent::new("E", [5u8; 150]));
        store.append(stream, ExpectedVersion::Any, batch).unwrap();
        left -= k;
    }
}

fn median_load_us(store: &Store, stream: &str, expect: u64) -> (f64, u64) {
    let mut times = Vec::new();
    let mut replayed = 0;
    for _ in 0..21 {
        let t = Instant::now();
        let l = store.load::<Count>(stream).unwrap();
        times.push(t.elapsed().as_secs_f64() * 1e6);
        assert_eq!(l.state.events, expect);
        replayed = l.replayed;
    }
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], replayed)
}

fn appends_per_s(store: &Store, appends: u64, snapshot_every: Option<u64>) -> f64 {
    let payload = [3u8; 150];
    let t = Instant::now();
    for i in 0..appends {
        let stream = format!("w-{}", i % 1000);
        let batch = (0..100).map(|_| NewEvent::new("E", payload));
        let r = store.append(&stream, ExpectedVersion::Any, batch).unwrap();
        if let Some(every) = snapshot_every
            && i % every == 0
        {
            store
                .save_snapshot(&stream, r.last_version, "count-v1", &[0u8; 64])
                .unwrap();
        }
    }
    appends as f64 / t.elapsed().as_secs_f64()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let events: u64 = args
        .iter()
        .position(|a| a == "--events")
        .and_then(|i| args.get(i + 1))
        .map_or(1_000_000, |v| v.parse().unwrap());
    // The baseline: a 1,000-event stream in a store without a policy (a full replay).
    let short_dir = tempfile::tempdir().unwrap();
    let short = Store::open_with(
        short_dir.path(),
        options().with_snapshot_policy(SnapshotPolicy::Never),
    )
    .unwrap();
    append(&short, "short", 1000);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), options()).unwrap();
    append(&store, "long", events);
    let t = Instant::now();
    let first = store.load::<Count>("long").unwrap();
    let first_ms = t.elapsed().as_secs_f64() * 1e3;
    assert_eq!(first.snapshot_saved, Some(events - 1));
    append(&store, "long", 999);
    let (short_us, short_replayed) = median_load_us(&short, "short", 1000);
    let (long_us, long_replayed) = median_load_us(&store, "long", events + 999);
    println!(
        "# snapshots: load of a {events}-event stream (policy every 1000 events) vs a 1000-event stream"
    );
    println!("| measure | value |");
    println!("|---|---:|");
    println!(
        "| first load of the long stream (full replay of {events} events, saves a snapshot), ms | {first_ms:.1} |"
    );
    println!(
        "| load of the 1,000-event stream (no snapshot, {short_replayed} replayed), µs, median of 21 | {short_us:.0} |"
    );
    println!(
        "| load of the {}-event stream (snapshot + {long_replayed} replayed), µs, median of 21 | {long_us:.0} |",
        events + 999
    );
    println!("| ratio long / short | {:.2} |", long_us / short_us);
    drop(store);

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), options()).unwrap();
    appends_per_s(&store, 2000, None); // warm-up
    let mut plain = Vec::new();
    let mut with = Vec::new();
    for _ in 0..5 {
        plain.push(appends_per_s(&store, 5000, None));
        with.push(appends_per_s(&store, 5000, Some(100)));
    }
    plain.sort_by(f64::total_cmp);
    with.sort_by(f64::total_cmp);
    let (p, w) = (plain[2], with[2]);
    println!("| buffered appends of 100 x 150 B, appends/s (median of 5 runs of 5,000) | {p:.0} |");
    println!("| the same with a snapshot saved every 100 appends, appends/s | {w:.0} |");
    println!("| ratio with / without | {:.3} |", w / p);
}
