//! A scavenge crashed at every I/O point of it (simulated storage, power cut): nothing live
//! is lost, nothing dead comes back once its segment was switched, positions never change,
//! and the store verifies clean after the next open (which rebuilds the index) and after a
//! scavenge that finishes the job.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use streamlog::io::sim::SimStorage;
use streamlog::{
    Durability, ExpectedVersion, NewEvent, Options, Position, ScavengeOptions, Store,
    StreamMetadata,
};

const DIR: &str = "/db";

fn options(sim: &SimStorage) -> Options {
    Options::default()
        .with_storage(Arc::new(sim.clone()))
        .with_durability(Durability::Sync)
        .with_segment_size_bytes(4096)
        .with_memtable_entries(16)
        .with_background_index_maintenance(false)
}

/// Streams `keep-0..3` (kept), `gone` (tombstoned) and `trim` (max count 5), interleaved.
fn populate(sim: &SimStorage) {
    let store = Store::open_with(DIR, options(sim)).unwrap();
    for i in 0..60u64 {
        store
            .append(
                &format!("keep-{}", i % 4),
                ExpectedVersion::Any,
                [NewEvent::new("K", i.to_string())],
            )
            .unwrap();
        store
            .append(
                "gone",
                ExpectedVersion::Any,
                [NewEvent::new("G", i.to_string())],
            )
            .unwrap();
        store
            .append(
                "trim",
                ExpectedVersion::Any,
                [NewEvent::new("T", i.to_string())],
            )
            .unwrap();
    }
    store
        .tombstone_stream("gone", ExpectedVersion::Any)
        .unwrap();
    store
        .set_stream_metadata(
            "trim",
            ExpectedVersion::Any,
            &StreamMetadata::new().with_max_count(5),
        )
        .unwrap();
    store.close().unwrap();
}

/// The events readers see, as (stream, version, position, data).
fn visible(store: &Store) -> Vec<(String, u64, u64, Vec<u8>)> {
    store
        .read_all(Position::START)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.stream.to_string(), e.version, e.position.0, e.data)
        })
        .filter(|e| !e.0.starts_with('$'))
        .collect()
}

#[test]
fn a_crash_at_any_point_of_a_scavenge_loses_nothing_live_and_resurrects_nothing() {
    let reference = {
        let sim = SimStorage::new(1);
        populate(&sim);
        let store = Store::open_with(DIR, options(&sim)).unwrap();
        visible(&store)
    };
    assert_eq!(reference.len(), 4 * 15 + 5);
    let mut completed_at = None;
    for point in 1..2000u64 {
        let sim = SimStorage::new(point);
        populate(&sim);
        let store = Store::open_with(DIR, options(&sim)).unwrap();
        sim.fail_after_ops(point);
        let result = store.scavenge(&ScavengeOptions::default());
        let died = sim.is_dead();
        drop(store);
        sim.crash();
        let ctx = format!("crash at I/O {point} of a scavenge");
        let store = Store::open_with(DIR, options(&sim)).unwrap_or_else(|e| panic!("{ctx}: {e}"));
        assert_eq!(visible(&store), reference, "{ctx}");
        for s in ["keep-0", "keep-3"] {
            assert_eq!(store.read_stream(s, 0).unwrap().count(), 15, "{ctx}");
        }
        let trim: Vec<u64> = store
            .read_stream("trim", 0)
            .unwrap()
            .map(|e| e.unwrap().version)
            .collect();
        assert_eq!(trim, (55..60).collect::<Vec<_>>(), "{ctx}");
        let v = store.verify(|_| {}).unwrap();
        assert!(v.is_clean(), "{ctx}: {v:?}");
        // The next scavenge finishes the job.
        store.scavenge(&ScavengeOptions::default()).unwrap();
        assert_eq!(visible(&store), reference, "{ctx}, scavenged again");
        assert_eq!(store.reclaimable().unwrap().events_removed, 0, "{ctx}");
        let v = store.verify(|_| {}).unwrap();
        assert!(v.is_clean(), "{ctx}, scavenged again: {v:?}");
        store.close().unwrap();
        if !died {
            assert!(result.unwrap().events_removed > 0);
            completed_at = Some(point);
            break;
        }
    }
    let completed_at = completed_at.expect("a scavenge finishes within 2000 I/O operations");
    eprintln!("scavenge crash points tried: {completed_at}; nothing lost or resurrected");
}
