//! A subscriber in a read-only handle that follows a live writer, on the simulated disk,
//! through power cuts: under `Sync` it never sees an event that the crash then takes back.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use streamlog::io::Storage;
use streamlog::io::sim::SimStorage;
use streamlog::{
    Delivery, Durability, EventId, ExpectedVersion, NewEvent, Options, RecordedEvent, Store,
    SubscribeAll,
};

const DIR: &str = "/db";

fn options(sim: &SimStorage) -> Options {
    Options::default()
        .with_storage(Arc::new(sim.clone()))
        .with_segment_size_bytes(4096)
        .with_memtable_entries(16)
        .with_background_index_maintenance(false)
        .with_durability(Durability::Sync)
}

/// Drains what the subscription delivers until it has been quiet for a while.
fn drain(sub: &mut streamlog::Subscription, into: &mut Vec<RecordedEvent>) {
    while let Ok(Some(d)) = sub.next_timeout(Duration::from_millis(150)) {
        if let Delivery::Event(e) = d {
            into.push(e);
        }
    }
}

#[test]
fn a_follower_never_delivers_an_event_a_power_cut_takes_back_under_sync() {
    let cycles: u64 = std::env::var("STREAMLOG_SIM_SUBSCRIBE_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    let mut delivered_total = 0;
    for seed in 0..cycles {
        let sim = SimStorage::new(seed);
        sim.create_dir_all(Path::new(DIR)).unwrap();
        sim.sync_dir(Path::new("/")).unwrap();
        let writer = Store::open_with(DIR, options(&sim)).unwrap();
        writer
            .append("s0", ExpectedVersion::Any, [NewEvent::new("T", "first")])
            .unwrap();
        let reader = Store::open_with(DIR, options(&sim).with_read_only(true)).unwrap();
        let mut sub = reader.subscribe_all(SubscribeAll::from_start()).unwrap();
        let mut delivered = Vec::new();
        // The power fails somewhere in the next appends (every I/O after that fails).
        sim.fail_after_ops(5 + seed * 7 % 60);
        let mut acked = 0;
        for i in 0..60u64 {
            let n = 1 + (i + seed) % 3;
            let batch: Vec<_> = (0..n)
                .map(|j| NewEvent::new("T", format!("{seed}-{i}-{j}")))
                .collect();
            if writer
                .append(&format!("s{}", i % 3), ExpectedVersion::Any, batch)
                .is_err()
            {
                break;
            }
            acked += 1;
            if i % 10 == 0 {
                drain(&mut sub, &mut delivered);
            }
        }
        // Let the follower catch up with everything published before the cut.
        std::thread::sleep(Duration::from_millis(120));
        drain(&mut sub, &mut delivered);
        sim.crash();
        drop(sub);
        drop(reader);
        drop(writer);
        sim.clear_faults();
        let recovered = Store::open_with(DIR, options(&sim)).unwrap();
        let after: Vec<(Arc<str>, u64, EventId)> = recovered
            .read_all(streamlog::Position::START)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.stream, e.version, e.id)
            })
            .collect();
        for e in &delivered {
            assert!(
                after.contains(&(e.stream.clone(), e.version, e.id)),
                "seed {seed}: the follower delivered {}@{} ({}), which the power cut took back \
                 ({acked} appends acknowledged)",
                e.stream,
                e.version,
                e.id
            );
        }
        assert!(!delivered.is_empty(), "seed {seed}: nothing delivered");
        delivered_total += delivered.len();
        recovered.close().unwrap();
    }
    println!("{cycles} power cuts, {delivered_total} delivered events checked");
}
