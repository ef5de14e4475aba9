//! The simulator's own tests: the crash model, fsyncgate, namespaces, locks.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use super::*;
use crate::io::{Storage, StorageFile};

fn p(s: &str) -> &Path {
    Path::new(s)
}

/// A file `/d/f` whose entry is durable, with `durable` synced and `extra` written after.
fn setup(seed: u64, durable: &[u8], extra: &[u8]) -> (SimStorage, Arc<dyn StorageFile>) {
    let sim = SimStorage::new(seed);
    sim.create_dir_all(p("/d")).unwrap();
    sim.sync_dir(p("/")).unwrap();
    let f = sim.create(p("/d/f")).unwrap();
    f.write_at(durable, 0).unwrap();
    f.sync_data().unwrap();
    sim.sync_dir(p("/d")).unwrap();
    f.write_at(extra, durable.len() as u64).unwrap();
    (sim, f)
}

fn read_all(sim: &SimStorage, path: &str) -> Vec<u8> {
    let f = sim.open(p(path)).unwrap();
    let mut buf = vec![0u8; f.len().unwrap() as usize];
    let n = f.read_at(&mut buf, 0).unwrap();
    assert_eq!(n, buf.len());
    buf
}

#[test]
fn synced_data_survives_a_crash_exactly() {
    for seed in 0..50 {
        let (sim, f) = setup(seed, &[7u8; 3000], b"");
        f.sync_data().unwrap();
        sim.crash();
        assert_eq!(read_all(&sim, "/d/f"), vec![7u8; 3000]);
    }
}

#[test]
fn unsynced_data_is_kept_lost_zeroed_or_garbled_per_sector() {
    let mut outcomes = std::collections::BTreeSet::new();
    for seed in 0..200 {
        let (sim, _f) = setup(seed, &[1u8; 512], &[2u8; 4096]);
        sim.crash();
        let after = read_all(&sim, "/d/f");
        // The synced sector is untouched.
        assert_eq!(&after[..512], &[1u8; 512][..]);
        assert!(after.len() >= 512 && after.len() <= 512 + 4096);
        assert_eq!(after.len() % 512, 0);
        for sector in after[512..].chunks(512) {
            let kind = if sector.iter().all(|&b| b == 2) {
                "kept"
            } else if sector.iter().all(|&b| b == 0) {
                "zero"
            } else {
                "garbage"
            };
            outcomes.insert(kind);
        }
        if after.len() == 512 {
            outcomes.insert("cut");
        }
    }
    for kind in ["kept", "zero", "garbage", "cut"] {
        assert!(outcomes.contains(kind), "never saw {kind}: {outcomes:?}");
    }
}

#[test]
fn overwritten_sectors_may_revert_to_the_old_bytes() {
    let mut saw_old = false;
    let mut saw_new = false;
    for seed in 0..100 {
        let (sim, f) = setup(seed, &[1u8; 1024], b"");
        f.write_at(&[3u8; 1024], 0).unwrap();
        sim.crash();
        let after = read_all(&sim, "/d/f");
        assert_eq!(after.len(), 1024);
        saw_old |= after[..512] == [1u8; 512];
        saw_new |= after[..512] == [3u8; 512];
    }
    assert!(saw_old && saw_new);
}

#[test]
fn directory_entries_need_sync_dir() {
    let sim = SimStorage::new(1);
    sim.create_dir_all(p("/d")).unwrap();
    sim.sync_dir(p("/")).unwrap();
    let f = sim.create(p("/d/new")).unwrap();
    f.write_at(b"x", 0).unwrap();
    f.sync_data().unwrap();
    sim.crash();
    assert!(
        !sim.exists(p("/d/new")).unwrap(),
        "unsynced creation survived"
    );

    let f = sim.create(p("/d/a")).unwrap();
    f.write_at(b"hello", 0).unwrap();
    f.sync_data().unwrap();
    sim.sync_dir(p("/d")).unwrap();
    sim.rename(p("/d/a"), p("/d/b")).unwrap();
    assert!(sim.exists(p("/d/b")).unwrap());
    sim.crash();
    assert!(sim.exists(p("/d/a")).unwrap() && !sim.exists(p("/d/b")).unwrap());

    sim.remove(p("/d/a")).unwrap();
    assert!(!sim.exists(p("/d/a")).unwrap());
    sim.crash();
    assert_eq!(read_all(&sim, "/d/a"), b"hello");

    sim.rename(p("/d/a"), p("/d/b")).unwrap();
    sim.sync_dir(p("/d")).unwrap();
    sim.crash();
    assert_eq!(sim.list(p("/d")).unwrap(), vec!["b".to_string()]);

    // A directory whose entry is not durable takes its files with it.
    sim.create_dir_all(p("/e/f")).unwrap();
    let g = sim.create(p("/e/f/g")).unwrap();
    g.sync_data().unwrap();
    sim.sync_dir(p("/e/f")).unwrap();
    sim.sync_dir(p("/e")).unwrap();
    sim.crash();
    assert!(!sim.exists(p("/e")).unwrap() && !sim.exists(p("/e/f/g")).unwrap());
}

#[test]
fn fsyncgate_failed_sync_drops_dirty_data_and_a_later_sync_lies() {
    for seed in 0..30 {
        let (sim, f) = setup(seed, b"old.", b"new data");
        sim.fail_next_sync(Some(p("/d/f"))).unwrap();
        let e = f.sync_data().unwrap_err();
        assert_eq!(e.raw_os_error(), Some(EIO));
        // The live view still shows the data...
        assert_eq!(read_all(&sim, "/d/f"), b"old.new data");
        // ...and a later sync succeeds without persisting it.
        f.sync_data().unwrap();
        sim.crash();
        // The later sync writes out the new length; the dropped data reads as zeros.
        assert_eq!(
            read_all(&sim, "/d/f"),
            b"old.\0\0\0\0\0\0\0\0",
            "seed {seed}"
        );
        // Without a later sync, neither data nor length survive.
        let (sim, f) = setup(seed, b"old.", b"new data");
        sim.fail_next_sync(None).unwrap();
        assert!(f.sync_data().is_err());
        sim.crash();
        assert_eq!(read_all(&sim, "/d/f"), b"old.", "seed {seed}");
    }
    // Data written after the failure is persisted by a later sync.
    let (sim, f) = setup(3, &[1u8; 512], &[2u8; 512]);
    sim.fail_next_sync(None).unwrap();
    assert!(f.sync_data().is_err());
    f.write_at(&[4u8; 512], 1024).unwrap();
    f.sync_data().unwrap();
    sim.crash();
    let after = read_all(&sim, "/d/f");
    assert_eq!(after.len(), 1536);
    assert_eq!(&after[..512], &[1u8; 512][..]);
    assert_eq!(
        &after[512..1024],
        &[0u8; 512][..],
        "dropped sector came back"
    );
    assert_eq!(&after[1024..], &[4u8; 512][..]);
}

#[test]
fn same_seed_same_outcome() {
    let run = |seed: u64| {
        let (sim, f) = setup(seed, &[9u8; 700], &[5u8; 5000]);
        f.write_at(&[6u8; 100], 10).unwrap();
        sim.crash();
        read_all(&sim, "/d/f")
    };
    for seed in 0..20 {
        assert_eq!(run(seed), run(seed));
    }
    assert!((0..20).any(|s| run(s) != run(s + 1)));
}

#[test]
fn crash_point_kills_every_later_call_until_crash() {
    let (sim, f) = setup(5, b"abc", b"");
    sim.fail_after_ops(2);
    f.write_at(b"d", 3).unwrap();
    assert!(f.sync_data().is_err());
    assert!(sim.is_dead());
    assert!(f.write_at(b"e", 4).is_err());
    assert!(sim.create(p("/d/g")).is_err());
    assert!(f.read_at(&mut [0u8; 1], 0).is_err());
    sim.crash();
    assert!(!sim.is_dead());
    // The old handle is stale; a new one works.
    assert!(f.write_at(b"x", 0).is_err());
    let g = sim.open(p("/d/f")).unwrap();
    g.write_at(b"x", 0).unwrap();
    let data = read_all(&sim, "/d/f");
    assert!(data.starts_with(b"xbc"));
}

#[test]
fn bit_flips_read_faults_and_enospc() {
    let (sim, f) = setup(6, b"\x00\x00", b"");
    sim.flip_bit(p("/d/f"), 1, 3).unwrap();
    assert_eq!(read_all(&sim, "/d/f"), vec![0, 8]);
    sim.crash();
    assert_eq!(read_all(&sim, "/d/f"), vec![0, 8]);
    assert!(sim.flip_bit(p("/d/f"), 2, 0).is_err());
    assert!(sim.flip_bit(p("/nope"), 0, 0).is_err());

    sim.fail_reads(p("/d/f"), 1..2).unwrap();
    let g = sim.open(p("/d/f")).unwrap();
    assert!(g.read_at(&mut [0u8; 1], 0).is_ok());
    assert_eq!(
        g.read_at(&mut [0u8; 2], 0).unwrap_err().raw_os_error(),
        Some(EIO)
    );
    sim.clear_faults();
    assert!(g.read_at(&mut [0u8; 2], 0).is_ok());

    sim.enospc_after(3);
    g.write_at(b"ab", 2).unwrap();
    let e = g.write_at(b"cd", 4).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(ENOSPC));
    assert_eq!(read_all(&sim, "/d/f"), vec![0, 8, b'a', b'b', b'c']);
    drop(f);
}

#[test]
fn locks_are_exclusive_or_shared_and_die_with_the_machine() {
    let sim = SimStorage::new(0);
    sim.create_dir_all(p("/d")).unwrap();
    let a = sim.try_lock(p("/d/LOCK"), false).unwrap().unwrap();
    assert!(sim.try_lock(p("/d/LOCK"), false).unwrap().is_none());
    assert!(sim.try_lock(p("/d/LOCK"), true).unwrap().is_none());
    drop(a);
    let s1 = sim.try_lock(p("/d/LOCK"), true).unwrap().unwrap();
    let s2 = sim.try_lock(p("/d/LOCK"), true).unwrap().unwrap();
    assert!(sim.try_lock(p("/d/LOCK"), false).unwrap().is_none());
    drop(s1);
    assert!(sim.try_lock(p("/d/LOCK"), false).unwrap().is_none());
    drop(s2);
    let old = sim.try_lock(p("/d/LOCK"), false).unwrap().unwrap();
    sim.crash();
    // The directory was never synced: recreate it in the new boot.
    sim.create_dir_all(p("/d")).unwrap();
    let new = sim.try_lock(p("/d/LOCK"), false).unwrap().unwrap();
    drop(old); // must not release the new boot's lock
    assert!(sim.try_lock(p("/d/LOCK"), false).unwrap().is_none());
    drop(new);
}

#[test]
fn map_is_a_copy_of_the_live_bytes() {
    let (_sim, f) = setup(0, b"sealed", b"+more");
    assert_eq!(&*f.map().unwrap(), b"sealed+more");
}
