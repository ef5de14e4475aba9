//! Fault injection on the simulated storage backend: bit flips in a closed log are always
//! detected, a failed sync poisons the store (fsyncgate), and `ENOSPC` poisons it too;
//! in both cases reopening recovers every acknowledged append.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use streamlog::io::Storage;
use streamlog::io::sim::{SimStorage, SplitMix64 as Rng};
use streamlog::{Durability, Error, EventId, ExpectedVersion, NewEvent, Options, Position, Store};

const DIR: &str = "/db";
/// Size of a checkpoint frame (a frame header with an empty body).
const CHECKPOINT_FRAME_LEN: u64 = 32;

fn new_sim(seed: u64) -> SimStorage {
    let sim = SimStorage::new(seed);
    sim.create_dir_all(Path::new(DIR)).unwrap();
    sim.sync_dir(Path::new("/")).unwrap();
    sim
}

fn options(sim: &SimStorage, durability: Durability) -> Options {
    Options::default()
        .with_storage(Arc::new(sim.clone()))
        .with_segment_size_bytes(4096)
        .with_memtable_entries(16)
        .with_background_index_maintenance(false)
        .with_durability(durability)
}

/// One random append: (stream, ids). Payloads are derived from the ids.
fn batch(rng: &mut Rng) -> (String, Vec<[u8; 16]>) {
    let stream = format!("s{}", rng.below(3));
    let n = rng.range(1, 6);
    let ids = (0..n)
        .map(|_| {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
            id[8..].copy_from_slice(&rng.next_u64().to_le_bytes());
            id
        })
        .collect();
    (stream, ids)
}

fn payload(id: &[u8; 16]) -> Vec<u8> {
    let len = usize::from(id[0]) + 1;
    (0..len).map(|i| id[i % 16] ^ (i as u8)).collect()
}

fn append(store: &Store, stream: &str, ids: &[[u8; 16]]) -> streamlog::Result<()> {
    let events = ids.iter().map(|id| {
        NewEvent::new("E", payload(id))
            .with_id(EventId(*id))
            .with_timestamp(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
    });
    store
        .append(stream, ExpectedVersion::Any, events)
        .map(|_| ())
}

/// Every event of `read_all`, as (stream, version, id), checking payloads.
fn all_events(store: &Store) -> Vec<(String, u64, [u8; 16])> {
    store
        .read_all(Position::START)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            assert_eq!(e.data, payload(&e.id.0), "payload of {}", e.id);
            (e.stream.to_string(), e.version, e.id.0)
        })
        .collect()
}

/// Checks that the acknowledged appends are all there, in order, whole, with gap-free
/// versions, and that per-stream reads agree.
fn check_acked(store: &Store, acked: &[(String, Vec<[u8; 16]>)], ctx: &str) {
    let all = all_events(store);
    let acked_ids: Vec<[u8; 16]> = acked.iter().flat_map(|(_, ids)| ids.clone()).collect();
    let got: Vec<[u8; 16]> = all.iter().map(|e| e.2).collect();
    assert!(
        got.len() >= acked_ids.len() && got[..acked_ids.len()] == acked_ids[..],
        "{ctx}: acknowledged events missing or out of order ({} found, {} acknowledged)",
        got.len(),
        acked_ids.len()
    );
    for s in 0..3 {
        let name = format!("s{s}");
        let want: Vec<[u8; 16]> = all.iter().filter(|e| e.0 == name).map(|e| e.2).collect();
        let events: Vec<_> = store
            .read_stream(&name, 0)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        for (i, e) in events.iter().enumerate() {
            assert_eq!(
                e.version, i as u64,
                "{ctx}: stream {name} versions have a gap"
            );
        }
        let ids: Vec<[u8; 16]> = events.iter().map(|e| e.id.0).collect();
        assert_eq!(
            ids, want,
            "{ctx}: read_stream({name}) disagrees with read_all"
        );
    }
}

fn segment_files(sim: &SimStorage) -> Vec<(PathBuf, u64)> {
    let dir = Path::new(DIR).join("segments");
    sim.files()
        .into_iter()
        .filter(|(p, _)| {
            p.parent() == Some(dir.as_path()) && p.extension().is_some_and(|e| e == "seg")
        })
        .collect()
}

fn io_source_is(e: &Error, errno: i32) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = cur {
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && io.raw_os_error() == Some(errno)
        {
            return true;
        }
        cur = s.source();
    }
    false
}

#[test]
fn bit_flips_in_a_closed_log_are_never_silent() {
    let trials: u64 = if cfg!(debug_assertions) { 150 } else { 1_000 };
    let (mut corrupted, mut torn_checkpoint, mut by_verify) = (0u64, 0u64, 0u64);
    for seed in 0..trials {
        let mut rng = Rng::new(seed ^ 0xF11B);
        let sim = new_sim(seed);
        let store = Store::open_with(DIR, options(&sim, Durability::Sync)).unwrap();
        for _ in 0..rng.range(1, 25) {
            let (stream, ids) = batch(&mut rng);
            append(&store, &stream, &ids).unwrap();
        }
        store.close().unwrap();

        let files = segment_files(&sim);
        let total: u64 = files.iter().map(|f| f.1).sum();
        let mut at = rng.below(total);
        let (file, len) = files
            .iter()
            .find(|(_, len)| {
                if at < *len {
                    true
                } else {
                    at -= len;
                    false
                }
            })
            .cloned()
            .unwrap();
        let bit = rng.below(8) as u8;
        sim.flip_bit(&file, at, bit).unwrap();
        let last = &files.last().unwrap().0;
        let in_checkpoint = file == *last && at >= len - CHECKPOINT_FRAME_LEN;
        let ctx = format!(
            "seed {seed}: bit {bit} of byte {at} of {} ({len} bytes)",
            file.display()
        );
        match Store::open_with(DIR, options(&sim, Durability::Sync)) {
            Err(Error::Corrupted { .. }) => corrupted += 1,
            Ok(store) if in_checkpoint => {
                let report = store.recovery_report();
                assert!(
                    report.truncated.is_some() && !report.clean_shutdown,
                    "{ctx}: flip in the final checkpoint not reported: {report:?}"
                );
                torn_checkpoint += 1;
            }
            Ok(store) => {
                // Open does not scan the part of the log the index covers (bounded open
                // time); verify checks every frame and must find the flip.
                let report = store.verify(|_| {}).unwrap();
                assert!(
                    report.corruption().count() >= 1,
                    "{ctx}: silently accepted by open and verify: {report:?}"
                );
                by_verify += 1;
            }
            Err(e) => panic!("{ctx}: unexpected error {e:?}"),
        }
    }
    eprintln!(
        "bit flips: {trials} flips, {corrupted} refused as corruption at open, {by_verify} found by \
         verify, {torn_checkpoint} in the final checkpoint reported as a torn tail, 0 silent (100% detected)"
    );
    assert_eq!(corrupted + torn_checkpoint + by_verify, trials);
}

#[test]
fn eio_on_sync_poisons_and_loses_nothing_acknowledged() {
    for seed in 0..60u64 {
        let durability = if seed % 2 == 0 {
            Durability::Sync
        } else {
            Durability::Buffered
        };
        let ctx = format!("seed {seed} ({durability})");
        let mut rng = Rng::new(seed ^ 0xE10);
        let sim = new_sim(seed);
        let store = Store::open_with(DIR, options(&sim, durability)).unwrap();
        let mut acked = Vec::new();
        let mut unsynced = Vec::new();
        for _ in 0..rng.range(0, 30) {
            let (stream, ids) = batch(&mut rng);
            append(&store, &stream, &ids).unwrap();
            unsynced.push((stream, ids));
            if durability == Durability::Sync || rng.below(3) == 0 {
                store.sync().unwrap();
                acked.append(&mut unsynced);
            }
        }
        sim.fail_next_sync(None).unwrap();
        // The failing append (or, buffered, the sync after it) reports the I/O error.
        let (stream, failed_ids) = batch(&mut rng);
        let res = append(&store, &stream, &failed_ids);
        let err = match (durability, res) {
            (Durability::Sync, Err(e)) => e,
            (Durability::Sync, Ok(())) => {
                panic!("{ctx}: append acknowledged despite a failed sync")
            }
            (_, Err(e)) => e, // a rollover synced the old segment
            (_, Ok(())) => store.sync().expect_err("sync must fail"),
        };
        assert!(
            matches!(err, Error::Io { .. }) && io_source_is(&err, 5),
            "{ctx}: {err:?}"
        );
        // Poisoned from now on.
        let (s2, ids2) = batch(&mut rng);
        assert!(
            matches!(append(&store, &s2, &ids2), Err(Error::Poisoned)),
            "{ctx}"
        );
        assert!(matches!(store.sync(), Err(Error::Poisoned)), "{ctx}");
        // Durable data stays readable.
        if durability == Durability::Sync {
            check_acked(&store, &acked, &format!("{ctx}, poisoned store"));
        } else {
            let got: Vec<[u8; 16]> = all_events(&store).iter().map(|e| e.2).collect();
            let want: Vec<[u8; 16]> = acked.iter().flat_map(|(_, ids)| ids.clone()).collect();
            assert!(
                got.starts_with(&want),
                "{ctx}: poisoned store lost readable data"
            );
        }
        sim.crash();
        drop(store);
        let store = Store::open_with(DIR, options(&sim, durability)).unwrap();
        check_acked(&store, &acked, &ctx);
        let all = all_events(&store);
        for id in &failed_ids {
            assert!(
                !all.iter().any(|e| e.2 == *id),
                "{ctx}: an event of the failed append survived (its data was dropped)"
            );
        }
        store.close().unwrap();
    }
}

#[test]
fn enospc_poisons_and_reopen_recovers_everything_acknowledged() {
    for seed in 0..60u64 {
        let durability = if seed % 2 == 0 {
            Durability::Sync
        } else {
            Durability::Buffered
        };
        let crash = seed % 4 >= 2;
        let ctx = format!("seed {seed} ({durability}, crash {crash})");
        let mut rng = Rng::new(seed ^ 0xE05C);
        let sim = new_sim(seed);
        let store = Store::open_with(DIR, options(&sim, durability)).unwrap();
        let mut acked = Vec::new();
        for _ in 0..rng.range(0, 10) {
            let (stream, ids) = batch(&mut rng);
            append(&store, &stream, &ids).unwrap();
            store.sync().unwrap();
            acked.push((stream, ids));
        }
        sim.enospc_after(rng.below(6000));
        let mut unsynced = Vec::new();
        let err = loop {
            let (stream, ids) = batch(&mut rng);
            match append(&store, &stream, &ids) {
                Ok(()) => unsynced.push((stream, ids)),
                Err(e) => break e,
            }
            if durability == Durability::Sync {
                acked.append(&mut unsynced);
            } else if rng.below(3) == 0 {
                match store.sync() {
                    Ok(()) => acked.append(&mut unsynced),
                    Err(e) => break e,
                }
            }
        };
        assert!(
            matches!(err, Error::Io { .. }) && io_source_is(&err, 28),
            "{ctx}: {err:?}"
        );
        let (s2, ids2) = batch(&mut rng);
        assert!(
            matches!(append(&store, &s2, &ids2), Err(Error::Poisoned)),
            "{ctx}"
        );
        check_acked(&store, &acked, &format!("{ctx}, poisoned store"));
        if crash {
            sim.crash();
            drop(store);
        } else {
            assert!(
                store.close().is_err(),
                "{ctx}: close of a poisoned store succeeded"
            );
        }
        sim.clear_faults(); // space was freed
        let store = Store::open_with(DIR, options(&sim, durability)).unwrap();
        check_acked(&store, &acked, &ctx);
        // And the store works again.
        let (s3, ids3) = batch(&mut rng);
        append(&store, &s3, &ids3).unwrap();
        store.close().unwrap();
    }
}
