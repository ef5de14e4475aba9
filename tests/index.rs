//! The persistent stream index: rebuilds, damage, staleness, collisions.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};

use streamlog::{Durability, Error, ExpectedVersion, NewEvent, Options, Position, Store};

fn options() -> Options {
    Options::default()
        .with_durability(Durability::Buffered)
        .with_segment_size_bytes(64 * 1024)
        .with_memtable_entries(16)
        .with_background_index_maintenance(false)
}

/// The files of `live` as they are while its store is open: a crash image.
fn crash_image(live: &Path) -> tempfile::TempDir {
    let image = tempfile::tempdir().unwrap();
    for sub in ["segments", "index"] {
        fs::create_dir_all(image.path().join(sub)).unwrap();
        for e in fs::read_dir(live.join(sub)).unwrap() {
            let e = e.unwrap();
            fs::copy(e.path(), image.path().join(sub).join(e.file_name())).unwrap();
        }
    }
    image
}

/// 40 streams, 300 appends of 1..4 events; returns every stream's events as read.
fn fill(dir: &Path, opts: Options) -> Vec<(String, Vec<Vec<u8>>)> {
    let store = Store::open_with(dir, opts).unwrap();
    for i in 0..300u32 {
        let stream = format!("stream-{}", (i * 7) % 40);
        let events = (0..1 + i % 4).map(|j| NewEvent::new("E", format!("{i}/{j}")));
        store.append(&stream, ExpectedVersion::Any, events).unwrap();
    }
    let all = contents(&store);
    store.close().unwrap();
    all
}

fn contents(store: &Store) -> Vec<(String, Vec<Vec<u8>>)> {
    (0..40)
        .map(|s| {
            let name = format!("stream-{s}");
            let data = store
                .read_stream(&name, 0)
                .unwrap()
                .map(|e| e.unwrap().data)
                .collect();
            (name, data)
        })
        .collect()
}

fn index_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = fs::read_dir(dir.join("index"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "idx"))
        .collect();
    v.sort();
    v
}

#[test]
fn the_index_persists_and_open_replays_only_the_uncovered_tail() {
    let dir = tempfile::tempdir().unwrap();
    let want = fill(dir.path(), options());
    let tables = index_files(dir.path());
    assert!(!tables.is_empty());
    assert!(
        tables.len() <= 8,
        "merges keep the table count logarithmic: {tables:?}"
    );
    let store = Store::open_with(dir.path(), options()).unwrap();
    let r = store.recovery_report();
    assert!(r.clean_shutdown);
    assert!(r.index.rebuilt.is_none());
    assert_eq!(r.index.replayed_frames, 0, "{r:?}");
    assert_eq!(r.frames, 1, "only the closing checkpoint is scanned");
    assert_eq!(contents(&store), want);
    let info = store.info().unwrap();
    assert_eq!((info.appends, info.streams), (300, 40));
    assert!(store.verify(|_| {}).unwrap().index_problems.is_empty());
}

#[test]
fn rebuilding_the_index_gives_the_same_answers_as_building_it_incrementally() {
    let dir = tempfile::tempdir().unwrap();
    let want = fill(dir.path(), options());
    let before = index_files(dir.path());
    let report = Store::reindex(dir.path(), options(), |_| {}).unwrap();
    assert_eq!(report.index.rebuilt.as_deref(), Some("rebuild requested"));
    assert_eq!(report.index.replayed_frames, 300);
    let after = index_files(dir.path());
    assert!(
        after.iter().all(|p| !before.contains(p)),
        "old tables are removed"
    );
    let store = Store::open_with(dir.path(), options()).unwrap();
    assert_eq!(contents(&store), want);
    assert!(store.verify(|_| {}).unwrap().index_problems.is_empty());
    // Beside the live writer, verify checks what the writer published.
    let live = streamlog::inspect::verify_dir(dir.path(), |_| {}).unwrap();
    assert!(
        live.damage.is_empty() && live.index_problems.is_empty(),
        "{live:?}"
    );
    drop(store);
    let report = streamlog::inspect::verify_dir(dir.path(), |_| {}).unwrap();
    assert!(
        report.index_problems.is_empty(),
        "{:?}",
        report.index_problems
    );
}

#[test]
fn a_missing_index_is_rebuilt_from_the_segments() {
    let dir = tempfile::tempdir().unwrap();
    let want = fill(dir.path(), options());
    fs::remove_dir_all(dir.path().join("index")).unwrap();
    let store = Store::open_with(dir.path(), options()).unwrap();
    assert_eq!(store.recovery_report().index.replayed_frames, 300);
    assert_eq!(contents(&store), want);
}

#[test]
fn damaged_or_missing_index_files_are_detected_and_rebuilt_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let want = fill(dir.path(), options());
    let image = tempfile::tempdir().unwrap();
    let copy = |to: &Path| {
        for sub in ["segments", "index"] {
            fs::create_dir_all(to.join(sub)).unwrap();
            for e in fs::read_dir(dir.path().join(sub)).unwrap() {
                let e = e.unwrap();
                fs::copy(e.path(), to.join(sub).join(e.file_name())).unwrap();
            }
        }
    };
    copy(image.path());
    type Damage = Box<dyn Fn(&Path)>;
    let damage: Vec<(&str, Damage)> = vec![
        (
            "manifest flipped",
            Box::new(|d: &Path| flip(&d.join("index/MANIFEST"), 20)),
        ),
        (
            "manifest truncated",
            Box::new(|d: &Path| truncate(&d.join("index/MANIFEST"), 10)),
        ),
        (
            "table removed",
            Box::new(|d: &Path| fs::remove_file(&index_files(d)[0]).unwrap()),
        ),
        (
            "table header flipped",
            Box::new(|d: &Path| flip(&index_files(d)[0], 3)),
        ),
        (
            "table footer flipped",
            Box::new(|d: &Path| {
                let t = &index_files(d)[0];
                flip(t, fs::metadata(t).unwrap().len() - 20)
            }),
        ),
    ];
    for (what, damage) in damage {
        let d = tempfile::tempdir().unwrap();
        copy(d.path());
        damage(d.path());
        let report = streamlog::inspect::verify_dir(d.path(), |_| {}).unwrap();
        assert!(!report.index_problems.is_empty(), "{what}: verify sees it");
        let store = Store::open_with(d.path(), options()).unwrap_or_else(|e| panic!("{what}: {e}"));
        let r = store.recovery_report();
        assert!(r.index.rebuilt.is_some(), "{what}: {r:?}");
        assert_eq!(r.index.replayed_frames, 300, "{what}");
        assert_eq!(contents(&store), want, "{what}");
    }
}

#[test]
fn a_damaged_table_block_fails_the_reads_that_touch_it_until_reindex() {
    let dir = tempfile::tempdir().unwrap();
    let want = fill(dir.path(), options());
    // The largest table: flip a byte inside its first block's entries.
    let table = index_files(dir.path())
        .into_iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    flip(&table, 16 + 40);
    let store = Store::open_with(dir.path(), options()).unwrap();
    let failed = (0..40).any(|s| {
        store
            .read_stream(&format!("stream-{s}"), 0)
            .unwrap()
            .any(|e| matches!(e, Err(Error::Corrupted { ref file, .. }) if *file == table))
    });
    assert!(failed, "block checksums are checked on use");
    assert!(!store.verify(|_| {}).unwrap().index_problems.is_empty());
    drop(store);
    Store::reindex(dir.path(), options(), |_| {}).unwrap();
    let store = Store::open_with(dir.path(), options()).unwrap();
    assert_eq!(contents(&store), want);
}

/// A store filled at `a`, whose segments are then replaced by those of another log of
/// `appends` appends to "other" (its index stays).
fn under_another_log(a: &Path, appends: usize) {
    let b = tempfile::tempdir().unwrap();
    fill(a, options());
    let store = Store::open_with(b.path(), options()).unwrap();
    for i in 0..appends {
        store
            .append(
                "other",
                ExpectedVersion::Any,
                [NewEvent::new("X", format!("{i:>8}"))],
            )
            .unwrap();
    }
    store.close().unwrap();
    fs::remove_dir_all(a.join("segments")).unwrap();
    fs::create_dir_all(a.join("segments")).unwrap();
    for e in fs::read_dir(b.path().join("segments")).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), a.join("segments").join(e.file_name())).unwrap();
    }
}

#[test]
fn an_index_built_from_another_log_is_stale_and_rebuilt() {
    let a = tempfile::tempdir().unwrap();
    // Another log, longer, under a's index.
    under_another_log(a.path(), 600);
    let store = Store::open_with(a.path(), options()).unwrap();
    assert!(store.recovery_report().index.rebuilt.is_some());
    assert_eq!(store.read_stream("stream-0", 0).unwrap().count(), 0);
    assert_eq!(store.read_stream("other", 0).unwrap().count(), 600);
    assert_eq!(store.read_all(Position::START).unwrap().count(), 600);
}

/// A log shorter than what the index covered may be another log, or this one with
/// acknowledged frames lost: the open cannot tell, so it refuses (corruption is never
/// quietly rebuilt over), and an explicit reindex accepts the log as it is.
#[test]
fn a_log_shorter_than_its_index_is_refused_until_a_reindex() {
    let a = tempfile::tempdir().unwrap();
    under_another_log(a.path(), 10);
    match Store::open_with(a.path(), options()) {
        Err(streamlog::Error::Corrupted { reason, .. }) => {
            assert!(reason.contains("missing"), "{reason}");
        }
        other => panic!("expected Corrupted, got {other:?}"),
    }
    Store::reindex(a.path(), options(), |_| {}).unwrap();
    let store = Store::open_with(a.path(), options()).unwrap();
    assert_eq!(store.read_all(Position::START).unwrap().count(), 10);
}

#[test]
fn streams_sharing_a_hash_keep_their_own_versions() {
    let dir = tempfile::tempdir().unwrap();
    let opts = || {
        options()
            .with_forced_hash_collisions()
            .with_stream_cache_entries(2)
    };
    let store = Store::open_with(dir.path(), opts()).unwrap();
    for round in 0..30u64 {
        for s in ["a", "b", "c"] {
            let expected = if round == 0 {
                ExpectedVersion::NoStream
            } else {
                ExpectedVersion::Exact(round - 1)
            };
            store
                .append(s, expected, [NewEvent::new("E", format!("{s}{round}"))])
                .unwrap();
        }
    }
    let check = |store: &Store| {
        for s in ["a", "b", "c"] {
            assert_eq!(store.stream_version(s).unwrap(), Some(29));
            let data: Vec<_> = store
                .read_stream(s, 0)
                .unwrap()
                .map(|e| String::from_utf8(e.unwrap().data).unwrap())
                .collect();
            assert_eq!(data, (0..30).map(|r| format!("{s}{r}")).collect::<Vec<_>>());
            let back = store.read_stream_backward(s, Some(10)).unwrap().count();
            assert_eq!(back, 11);
            // From past the end: from the last event, as KurrentDB reads it.
            let past: Vec<u64> = store
                .read_stream_backward(s, Some(500))
                .unwrap()
                .map(|e| e.unwrap().version)
                .collect();
            assert_eq!(past, (0..30).rev().collect::<Vec<_>>());
        }
        assert_eq!(store.stream_version("d").unwrap(), None);
        assert!(matches!(
            store.append("a", ExpectedVersion::Exact(28), [NewEvent::new("E", "x")]),
            Err(Error::WrongExpectedVersion {
                actual: Some(29),
                ..
            })
        ));
    };
    check(&store);
    drop(store);
    let store = Store::open_with(dir.path(), opts()).unwrap();
    check(&store);
}

fn flip(path: &Path, offset: u64) {
    let mut b = fs::read(path).unwrap();
    b[offset as usize] ^= 0x20;
    fs::write(path, b).unwrap();
}

fn truncate(path: &Path, len: u64) {
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

#[test]
fn the_memtable_is_flushed_by_log_bytes_too_so_a_crash_replays_a_bounded_tail() {
    let live = tempfile::tempdir().unwrap();
    // Few large appends: the memtable never fills by entries, but covers 8 KiB at most.
    let opts = || {
        options()
            .with_memtable_entries(10_000)
            .with_memtable_log_bytes(8 * 1024)
    };
    let store = Store::open_with(live.path(), opts()).unwrap();
    for i in 0..100u32 {
        let data = vec![b'x'; 1000 + i as usize];
        store
            .append(
                &format!("s-{}", i % 3),
                ExpectedVersion::Any,
                [NewEvent::new("E", data)],
            )
            .unwrap();
    }
    store.sync().unwrap();
    assert!(
        !index_files(live.path()).is_empty(),
        "the memtable was flushed"
    );
    // A crash image: the files as they are while the store is open.
    let image = crash_image(live.path());
    drop(store);
    let store = Store::open_with(image.path(), opts()).unwrap();
    let r = store.recovery_report();
    assert!(r.index.rebuilt.is_none(), "{r:?}");
    assert!(
        r.index.replayed_frames <= 9,
        "replayed {} of 100 appends",
        r.index.replayed_frames
    );
    assert_eq!(store.info().unwrap().appends, 100);
    assert_eq!(store.read_all(Position::START).unwrap().count(), 100);
}

#[test]
fn by_default_an_open_after_a_crash_replays_about_a_mib_of_log_at_most() {
    let live = tempfile::tempdir().unwrap();
    // Default bounds, except that maintenance runs on the append path (so the test
    // needs no waiting): 120 appends of 100 KB, 12 MB of log, far fewer appends than
    // the memtable holds.
    let opts = || {
        Options::default()
            .with_durability(Durability::Buffered)
            .with_background_index_maintenance(false)
    };
    let store = Store::open_with(live.path(), opts()).unwrap();
    for i in 0..120u32 {
        store
            .append(
                &format!("s-{}", i % 3),
                ExpectedVersion::Any,
                [NewEvent::new("E", vec![b'x'; 100_000])],
            )
            .unwrap();
    }
    store.sync().unwrap();
    let image = crash_image(live.path());
    drop(store);
    let store = Store::open_with(image.path(), opts()).unwrap();
    let r = store.recovery_report();
    assert!(r.index.rebuilt.is_none(), "{r:?}");
    // 1 MiB of log is 11 of these appends.
    assert!(
        r.index.replayed_frames <= 12,
        "replayed {} of 120 appends",
        r.index.replayed_frames
    );
    assert_eq!(store.read_all(Position::START).unwrap().count(), 120);
}

#[test]
fn an_open_after_a_crash_syncs_the_recovered_tail_only_under_sync() {
    let live = tempfile::tempdir().unwrap();
    // The index covers none of the log, and nothing attests the last appends.
    let opts = |durability| {
        Options::default()
            .with_durability(durability)
            .with_background_index_maintenance(false)
    };
    let store = Store::open_with(live.path(), opts(Durability::Buffered)).unwrap();
    for i in 0..25u32 {
        store
            .append(
                &format!("s-{}", i % 3),
                ExpectedVersion::Any,
                [NewEvent::new("E", vec![b'x'; 100])],
            )
            .unwrap();
    }
    let buffered_image = crash_image(live.path());
    let sync_image = crash_image(live.path());
    drop(store);

    // Buffered promises nothing before a sync: the open makes nothing durable, every
    // event is readable, and the next sync covers the recovered tail.
    let store = Store::open_with(buffered_image.path(), opts(Durability::Buffered)).unwrap();
    let info = store.info().unwrap();
    assert!(!store.recovery_report().clean_shutdown);
    assert!(info.durable < info.head, "{info:?}");
    assert_eq!(store.sync_stats().count, 0);
    assert_eq!(store.read_all(Position::START).unwrap().count(), 25);
    store.sync().unwrap();
    let info = store.info().unwrap();
    assert_eq!(info.durable, info.head);
    assert_eq!(store.sync_stats().count, 1);
    drop(store);

    // Under Sync readers see only durable frames: the open makes the whole tail durable,
    // so that every event is visible at once.
    let store = Store::open_with(sync_image.path(), opts(Durability::Sync)).unwrap();
    let info = store.info().unwrap();
    assert_eq!(info.durable, info.head, "{info:?}");
    assert_eq!(store.sync_stats().count, 1);
    assert_eq!(store.read_all(Position::START).unwrap().count(), 25);
    store.close().unwrap();

    // After a clean close every event is below the closing checkpoint's watermark: no
    // mode syncs at open, and under Sync every event is visible at once.
    for durability in [Durability::Sync, Durability::Buffered] {
        let store = Store::open_with(sync_image.path(), opts(durability)).unwrap();
        assert!(store.recovery_report().clean_shutdown);
        assert_eq!(store.sync_stats().count, 0, "{durability:?}");
        assert_eq!(store.read_all(Position::START).unwrap().count(), 25);
        store.close().unwrap();
    }
}

#[test]
fn reindex_of_a_path_without_a_store_creates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nothing-here");
    let err = Store::reindex(&missing, streamlog::Options::default(), |_| {}).unwrap_err();
    assert!(
        matches!(err, streamlog::Error::InvalidArgument(_)),
        "{err:?}"
    );
    assert!(!missing.exists(), "reindex created {}", missing.display());
}
