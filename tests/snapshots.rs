//! Snapshots and bounded replay: a snapshot is a cache, never the source of truth.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use streamlog::{
    Aggregate, Durability, EventView, ExpectedVersion, NewEvent, Options, ScavengeOptions,
    SnapshotPolicy, Store,
};

/// A running sum and count of the events' numbers; encodes as 16 bytes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Sum {
    total: i64,
    events: u64,
}

impl Aggregate for Sum {
    const SCHEMA: &'static str = "sum-v1";
    fn apply(&mut self, e: &EventView<'_>) {
        self.total += std::str::from_utf8(e.data).unwrap().parse::<i64>().unwrap();
        self.events += 1;
    }
    fn encode(&self) -> Vec<u8> {
        let mut b = self.total.to_le_bytes().to_vec();
        b.extend_from_slice(&self.events.to_le_bytes());
        b
    }
    fn decode(b: &[u8]) -> Option<Self> {
        Some(Sum {
            total: i64::from_le_bytes(b.get(0..8)?.try_into().ok()?),
            events: u64::from_le_bytes(b.get(8..16)?.try_into().ok()?),
        })
    }
}

/// The same state under another schema tag: its snapshots must be ignored by `Sum`.
#[derive(Debug, Default)]
struct SumV2(Sum);
impl Aggregate for SumV2 {
    const SCHEMA: &'static str = "sum-v2";
    fn apply(&mut self, e: &EventView<'_>) {
        self.0.apply(e)
    }
    fn encode(&self) -> Vec<u8> {
        // A different layout: events first.
        let mut b = self.0.events.to_le_bytes().to_vec();
        b.extend_from_slice(&self.0.total.to_le_bytes());
        b
    }
    fn decode(_: &[u8]) -> Option<Self> {
        None
    }
}

fn options() -> Options {
    Options::default()
        .with_durability(Durability::Buffered)
        .with_segment_size_bytes(8192)
        .with_background_index_maintenance(false)
}

fn append_numbers(store: &Store, stream: &str, numbers: impl IntoIterator<Item = i64>) {
    for n in numbers {
        store
            .append(
                stream,
                ExpectedVersion::Any,
                [NewEvent::new("N", n.to_string())],
            )
            .unwrap();
    }
}

fn full_sum(n: i64) -> Sum {
    Sum {
        total: (0..n).sum(),
        events: n as u64,
    }
}

#[test]
fn load_uses_the_latest_snapshot_and_replays_only_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), options()).unwrap();
    append_numbers(&store, "s", 0..100);
    let at_59 = Sum {
        total: (0..60).sum(),
        events: 60,
    };
    store
        .save_snapshot("s", 59, Sum::SCHEMA, &at_59.encode())
        .unwrap();
    let loaded = store.load::<Sum>("s").unwrap();
    assert_eq!(loaded.state, full_sum(100));
    assert_eq!(
        (loaded.snapshot_version, loaded.replayed, loaded.version),
        (Some(59), 40, Some(99))
    );
    assert!(loaded.ignored_snapshots.is_empty());
    let snap = store.latest_snapshot("s").unwrap().unwrap();
    assert_eq!((snap.version, snap.schema.as_str()), (59, "sum-v1"));
    // A snapshot survives a clean close.
    drop(store);
    let store = Store::open_with(dir.path(), options()).unwrap();
    assert_eq!(store.load::<Sum>("s").unwrap().snapshot_version, Some(59));
    assert_eq!(store.info().unwrap().snapshots, 1);
}

#[test]
fn save_snapshot_says_which_argument_is_out_of_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), options()).unwrap();
    append_numbers(&store, "s", 0..1);
    let message = |r: streamlog::Result<()>| match r {
        Err(streamlog::Error::InvalidArgument(m)) => m,
        other => panic!("expected InvalidArgument, got {other:?}"),
    };
    let m = message(store.save_snapshot(&"s".repeat(65_536), 0, Sum::SCHEMA, b""));
    assert!(m.contains("stream name") && !m.contains("schema"), "{m}");
    for schema in [String::new(), "t".repeat(65_536)] {
        let m = message(store.save_snapshot("s", 0, &schema, b""));
        assert!(m.contains("schema tag") && !m.contains("stream"), "{m}");
    }
    store
        .save_snapshot("s", 0, Sum::SCHEMA, &full_sum(1).encode())
        .unwrap();
}

#[test]
fn snapshots_of_another_schema_or_newer_than_the_stream_are_ignored_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), options()).unwrap();
    append_numbers(&store, "s", 0..10);
    store
        .save_snapshot("s", 4, Sum::SCHEMA, &full_sum(5).encode())
        .unwrap();
    store
        .save_snapshot("s", 8, SumV2::SCHEMA, &SumV2(full_sum(9)).encode())
        .unwrap();
    // Undecodable bytes under the right tag.
    store.save_snapshot("s", 9, Sum::SCHEMA, b"junk").unwrap();
    let loaded = store.load::<Sum>("s").unwrap();
    assert_eq!(loaded.state, full_sum(10));
    assert_eq!(loaded.snapshot_version, Some(4));
    assert_eq!(
        loaded.ignored_snapshots.len(),
        2,
        "{:?}",
        loaded.ignored_snapshots
    );
    // A snapshot cannot name a version the stream does not have.
    assert!(store.save_snapshot("s", 10, Sum::SCHEMA, b"x").is_err());
    assert!(store.save_snapshot("nope", 0, Sum::SCHEMA, b"x").is_err());
}

#[test]
fn losing_or_damaging_snapshot_files_never_loses_events() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open_with(dir.path(), options()).unwrap();
        append_numbers(&store, "s", 0..50);
        for v in [9u64, 19, 29, 39, 49] {
            store
                .save_snapshot("s", v, Sum::SCHEMA, &full_sum(v as i64 + 1).encode())
                .unwrap();
        }
    }
    let snap_files = files_under(&dir.path().join("snapshots"), "seg");
    assert!(!snap_files.is_empty());
    // Damage every byte of the newest snapshot frames' region: the load falls back.
    for f in &snap_files {
        let mut b = fs::read(f).unwrap();
        let n = b.len();
        for x in &mut b[n - 40..] {
            *x ^= 0xA5;
        }
        fs::write(f, b).unwrap();
    }
    let store = Store::open_with(dir.path(), options()).unwrap();
    let loaded = store.load::<Sum>("s").unwrap();
    assert_eq!(loaded.state, full_sum(50));
    assert!(
        loaded.snapshot_version.is_some_and(|v| v < 49),
        "{loaded:?}"
    );
    drop(store);
    // Removing the snapshot directory entirely: a full replay.
    fs::remove_dir_all(dir.path().join("snapshots")).unwrap();
    let store = Store::open_with(dir.path(), options()).unwrap();
    let loaded = store.load::<Sum>("s").unwrap();
    assert_eq!(
        (loaded.state, loaded.snapshot_version, loaded.replayed),
        (full_sum(50), None, 50)
    );
}

/// An open reads no snapshot file (they are opened at their first use): damage there is
/// found, cut and reported by the first use, and the events never wait for it.
#[test]
fn snapshot_files_are_opened_at_their_first_use_and_report_what_they_found() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open_with(dir.path(), options()).unwrap();
        append_numbers(&store, "s", 0..20);
        for v in [9u64, 19] {
            store
                .save_snapshot("s", v, Sum::SCHEMA, &full_sum(v as i64 + 1).encode())
                .unwrap();
        }
        store.close().unwrap();
    }
    // A torn tail in the snapshot log: half a frame more.
    let seg = files_under(&dir.path().join("snapshots"), "seg")
        .pop()
        .unwrap();
    let mut bytes = fs::read(&seg).unwrap();
    let torn = bytes.len() / 4;
    bytes.extend(bytes[bytes.len() - torn..].to_vec());
    fs::write(&seg, &bytes).unwrap();
    let store = Store::open_with(dir.path(), options()).unwrap();
    assert_eq!(store.read_stream("s", 0).unwrap().count(), 20);
    // The open left the torn tail where it was.
    assert_eq!(fs::read(&seg).unwrap(), bytes);
    let report = store.snapshot_report().unwrap();
    assert_eq!(report.truncated_bytes, torn as u64, "{report:?}");
    assert_eq!(
        (report.snapshots, report.discarded.as_deref()),
        (2, None),
        "{report:?}"
    );
    assert_eq!(fs::read(&seg).unwrap().len(), bytes.len() - torn);
    assert_eq!(store.load::<Sum>("s").unwrap().snapshot_version, Some(19));
    // Asked again: the same report, nothing opened twice.
    assert_eq!(store.snapshot_report().unwrap(), report);
    store.close().unwrap();
    let store = Store::open_with(dir.path(), options()).unwrap();
    let report = store.snapshot_report().unwrap();
    assert_eq!(
        (report.truncated_bytes, report.snapshots),
        (0, 2),
        "{report:?}"
    );
}

/// A `snapshots/CURRENT` that names no generation, or one whose directory is gone, is
/// damage: reported, never quietly taken for a new generation; the events are untouched
/// and new snapshots go into a fresh generation.
#[test]
fn a_damaged_snapshot_current_file_is_reported_and_snapshots_start_afresh() {
    for (current, says) in [
        ("garbage\n", "does not name a generation"),
        ("9\n", "names generation 9, whose directory"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open_with(dir.path(), options()).unwrap();
            append_numbers(&store, "s", 0..10);
            store
                .save_snapshot("s", 9, Sum::SCHEMA, &full_sum(10).encode())
                .unwrap();
            store.close().unwrap();
        }
        fs::write(dir.path().join("snapshots").join("CURRENT"), current).unwrap();
        for read_only in [true, false] {
            let store = Store::open_with(dir.path(), options().with_read_only(read_only)).unwrap();
            let report = store.snapshot_report().unwrap();
            assert!(
                report
                    .discarded
                    .as_deref()
                    .is_some_and(|d| d.contains(says)),
                "{current:?} read_only {read_only}: {report:?}"
            );
            assert_eq!(report.snapshots, 0, "{report:?}");
            let loaded = store.load::<Sum>("s").unwrap();
            assert_eq!(
                (&loaded.state, loaded.snapshot_version),
                (&full_sum(10), None)
            );
            if !read_only {
                assert!(
                    report.generation > 9 || current.starts_with('g'),
                    "{report:?}"
                );
                store
                    .save_snapshot("s", 9, Sum::SCHEMA, &full_sum(10).encode())
                    .unwrap();
                store.close().unwrap();
            }
        }
        let store = Store::open_with(dir.path(), options()).unwrap();
        let report = store.snapshot_report().unwrap();
        assert_eq!(
            (report.snapshots, report.discarded),
            (1, None),
            "{current:?}"
        );
        assert_eq!(store.load::<Sum>("s").unwrap().snapshot_version, Some(9));
    }
}

/// A lost `snapshots/CURRENT` beside a later generation is damage too (the first
/// generation alone may be its own creation cut short, and is taken up); and a generation
/// a writer cannot make live is not left behind, however often the snapshots are used.
#[test]
fn a_lost_current_file_is_reported_and_failed_generations_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let snapshots = dir.path().join("snapshots");
    let generations = || {
        let mut names: Vec<String> = fs::read_dir(&snapshots)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.len() == 20)
            .collect();
        names.sort();
        names
    };
    {
        let store = Store::open_with(dir.path(), options()).unwrap();
        append_numbers(&store, "s", 0..10);
        store
            .save_snapshot("s", 9, Sum::SCHEMA, &full_sum(10).encode())
            .unwrap();
        store.reclaim_snapshots().unwrap();
        store.reclaim_snapshots().unwrap();
        store.close().unwrap();
    }
    assert_eq!(generations(), ["00000000000000000003"]);
    fs::remove_file(snapshots.join("CURRENT")).unwrap();
    // CURRENT cannot be written: its temporary name is taken by a directory.
    fs::create_dir_all(snapshots.join("CURRENT.tmp").join("x")).unwrap();
    let store = Store::open_with(dir.path(), options()).unwrap();
    for _ in 0..5 {
        assert!(store.snapshot_report().is_err());
        assert_eq!(generations(), ["00000000000000000003"]);
    }
    // Events are served meanwhile, and a load replays them.
    let loaded = store.load::<Sum>("s").unwrap();
    assert_eq!(
        (&loaded.state, loaded.snapshot_version),
        (&full_sum(10), None)
    );
    fs::remove_dir_all(snapshots.join("CURRENT.tmp")).unwrap();
    let report = store.snapshot_report().unwrap();
    assert!(
        report
            .discarded
            .as_deref()
            .is_some_and(|d| d.contains("is missing while generation directories up to 3")),
        "{report:?}"
    );
    assert_eq!((report.generation, report.snapshots), (4, 0), "{report:?}");
    assert_eq!(generations(), ["00000000000000000004"]);
}

/// A store's snapshot files next to an older copy of its log (as after a restore of the
/// log alone from a backup): `then` writes after the copy of what `first` wrote is taken,
/// and the log and index go back to that copy.
fn with_an_older_log(first: impl Fn(&Store), then: impl Fn(&Store)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let old_log = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), options()).unwrap();
    first(&store);
    store.close().unwrap();
    copy_tree(
        &dir.path().join("segments"),
        &old_log.path().join("segments"),
    );
    let store = Store::open_with(dir.path(), options()).unwrap();
    then(&store);
    store.close().unwrap();
    fs::remove_dir_all(dir.path().join("segments")).unwrap();
    fs::remove_dir_all(dir.path().join("index")).unwrap();
    copy_tree(
        &old_log.path().join("segments"),
        &dir.path().join("segments"),
    );
    dir
}

/// Many snapshots past the stream's version (a reader beside a writer that saves them
/// often, a log restored from an older backup) never hide the usable one below it.
#[test]
fn snapshots_past_the_stream_never_use_up_the_search() {
    let dir = with_an_older_log(
        |store| {
            append_numbers(store, "s", 0..10);
            store
                .save_snapshot("s", 4, Sum::SCHEMA, &full_sum(5).encode())
                .unwrap();
        },
        |store| {
            append_numbers(store, "s", 10..60);
            // Far more than the 16 candidates one search looks at.
            for v in 10u64..60 {
                store
                    .save_snapshot("s", v, Sum::SCHEMA, &full_sum(v as i64 + 1).encode())
                    .unwrap();
            }
        },
    );
    let store = Store::open_with(dir.path(), options()).unwrap();
    assert_eq!(
        store.latest_snapshot("s").unwrap().map(|s| s.version),
        Some(4)
    );
    let loaded = store.load::<Sum>("s").unwrap();
    assert_eq!(
        (&loaded.state, loaded.snapshot_version, loaded.replayed),
        (&full_sum(10), Some(4), 5)
    );
    assert_eq!(
        loaded.ignored_snapshots,
        ["snapshot at version 59 is newer than the stream (version 9)"]
    );
}

#[test]
fn a_snapshot_newer_than_a_restored_stream_is_ignored() {
    let dir = with_an_older_log(
        |store| append_numbers(store, "s", 0..10),
        |store| {
            append_numbers(store, "s", 10..20);
            store
                .save_snapshot("s", 19, Sum::SCHEMA, &full_sum(20).encode())
                .unwrap();
        },
    );
    let store = Store::open_with(dir.path(), options()).unwrap();
    let loaded = store.load::<Sum>("s").unwrap();
    assert_eq!(
        (&loaded.state, loaded.snapshot_version),
        (&full_sum(10), None)
    );
    assert!(
        loaded.ignored_snapshots[0].contains("newer than the stream"),
        "{loaded:?}"
    );
}

#[test]
fn the_policy_saves_snapshots_so_loads_stay_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(
        dir.path(),
        options().with_snapshot_policy(SnapshotPolicy::EveryEvents(100)),
    )
    .unwrap();
    append_numbers(&store, "s", 0..1000);
    let first = store.load::<Sum>("s").unwrap();
    assert_eq!((first.replayed, first.snapshot_saved), (1000, Some(999)));
    append_numbers(&store, "s", 1000..1050);
    let second = store.load::<Sum>("s").unwrap();
    assert_eq!(second.state, full_sum(1050));
    assert_eq!((second.replayed, second.snapshot_saved), (50, None));
    append_numbers(&store, "s", 1050..1150);
    let third = store.load::<Sum>("s").unwrap();
    assert_eq!((third.replayed, third.snapshot_saved), (150, Some(1149)));
}

#[test]
fn reclaiming_keeps_the_latest_snapshots_of_each_stream() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), options().with_snapshots_kept_per_stream(2)).unwrap();
    for s in ["a", "b", "c"] {
        append_numbers(&store, s, 0..30);
        for v in (0..30).step_by(3) {
            store
                .save_snapshot(s, v, Sum::SCHEMA, &full_sum(v as i64 + 1).encode())
                .unwrap();
        }
    }
    let before = store.info().unwrap();
    assert_eq!(before.snapshots, 30);
    let (kept, dropped) = store.reclaim_snapshots().unwrap();
    assert_eq!((kept, dropped), (6, 24));
    let after = store.info().unwrap();
    assert_eq!(after.snapshots, 6);
    assert!(after.snapshot_bytes < before.snapshot_bytes);
    for s in ["a", "b", "c"] {
        let l = store.load::<Sum>(s).unwrap();
        assert_eq!((l.state, l.snapshot_version), (full_sum(30), Some(27)));
    }
    drop(store);
    let store = Store::open_with(dir.path(), options()).unwrap();
    assert_eq!(store.info().unwrap().snapshots, 6);
    assert_eq!(store.load::<Sum>("b").unwrap().snapshot_version, Some(27));
    // Only one generation is left on disk.
    let gens = fs::read_dir(dir.path().join("snapshots"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().is_dir())
        .count();
    assert_eq!(gens, 1);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Snapshot + tail replay equals full replay, wherever the snapshots are.
    #[test]
    fn snapshot_plus_tail_equals_full_replay(
        numbers in proptest::collection::vec(-1000i64..1000, 1..120),
        points in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_with(dir.path(), options()).unwrap();
        append_numbers(&store, "s", numbers.iter().copied());
        let mut at: Vec<usize> = points.iter().map(|i| i.index(numbers.len())).collect();
        at.sort_unstable();
        for v in at {
            let state = Sum { total: numbers[..=v].iter().sum(), events: v as u64 + 1 };
            store.save_snapshot("s", v as u64, Sum::SCHEMA, &state.encode()).unwrap();
        }
        let want = Sum { total: numbers.iter().sum(), events: numbers.len() as u64 };
        let loaded = store.load::<Sum>("s").unwrap();
        prop_assert_eq!(&loaded.state, &want);
        prop_assert_eq!(loaded.version, Some(numbers.len() as u64 - 1));
        drop(store);
        let store = Store::open_with(dir.path(), options()).unwrap();
        prop_assert_eq!(store.load::<Sum>("s").unwrap().state, want);
    }
}

/// The files under `dir` (at any depth) whose names end in `.ext`.
pub(crate) fn files_under(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p, ext));
        } else if p.extension().is_some_and(|e| e == ext) {
            out.push(p);
        }
    }
    out
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// A snapshot taken before a soft delete holds the deleted events: once the stream is
/// re-created, it is not offered as the latest, no new one may be saved at a deleted
/// version, and a scavenge that removes those versions drops it.
#[test]
fn snapshots_of_deleted_versions_are_not_offered_refused_and_dropped_by_a_scavenge() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), options()).unwrap();
    append_numbers(&store, "a", 0..3);
    store
        .save_snapshot("a", 2, Sum::SCHEMA, &full_sum(3).encode())
        .unwrap();
    assert_eq!(store.latest_snapshot("a").unwrap().unwrap().version, 2);
    store.delete_stream("a", ExpectedVersion::Any).unwrap();
    append_numbers(&store, "a", [10]);
    assert_eq!(store.stream_version("a").unwrap(), Some(3));
    assert!(
        store.latest_snapshot("a").unwrap().is_none(),
        "a snapshot of deleted versions is offered"
    );
    let refused = store.save_snapshot("a", 1, Sum::SCHEMA, &full_sum(2).encode());
    assert!(
        matches!(&refused, Err(streamlog::Error::InvalidArgument(m)) if m.contains("hides")),
        "{refused:?}"
    );
    // A snapshot of the re-created stream is offered.
    store
        .save_snapshot("a", 3, Sum::SCHEMA, b"new-state-16byte")
        .unwrap();
    assert_eq!(store.latest_snapshot("a").unwrap().unwrap().version, 3);
    let report = store.scavenge(&ScavengeOptions::default()).unwrap();
    assert_eq!(report.snapshots_dropped, 1, "{report:?}");
    assert_eq!(store.latest_snapshot("a").unwrap().unwrap().version, 3);
    store.close().unwrap();
    // Nothing of the old state is left in the snapshot files.
    let old_state = full_sum(3).encode();
    for entry in walk(&dir.path().join("snapshots")) {
        let bytes = fs::read(&entry).unwrap();
        assert!(
            !bytes.windows(old_state.len()).any(|w| w == old_state),
            "{} still holds the deleted state",
            entry.display()
        );
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A snapshot frame damaged in the middle of the snapshot files (a bit flip, not a torn
/// tail) is passed over, never returned: loads fall back to an older snapshot or a
/// replay, and a scavenge or an erasure that rewrites the snapshot files leaves it out
/// instead of failing on it.
#[test]
fn a_damaged_snapshot_frame_in_the_middle_fails_no_scavenge_nor_erasure() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open_with(dir.path(), options()).unwrap();
        append_numbers(&store, "a", 0..10);
        append_numbers(&store, "b", 0..10);
        for v in [2u64, 5, 8] {
            for s in ["a", "b"] {
                store
                    .save_snapshot(s, v, Sum::SCHEMA, &full_sum(v as i64 + 1).encode())
                    .unwrap();
            }
        }
        store.close().unwrap();
    }
    // The first snapshot frame's state (of "a" at version 2): its bytes flipped.
    let state = full_sum(3).encode();
    let mut flipped = state.clone();
    flipped[0] ^= 0x01;
    let holding = |bytes: &[u8]| {
        files_under(&dir.path().join("snapshots"), "seg")
            .into_iter()
            .filter(|f| {
                fs::read(f)
                    .unwrap()
                    .windows(bytes.len())
                    .any(|w| w == bytes)
            })
            .collect::<Vec<_>>()
    };
    let files = holding(&state);
    assert_eq!(files.len(), 1);
    let mut b = fs::read(&files[0]).unwrap();
    let at = b.windows(state.len()).position(|w| w == state).unwrap();
    b[at] ^= 0x01;
    fs::write(&files[0], b).unwrap();
    let store = Store::open_with(dir.path(), options()).unwrap();
    assert_eq!(store.load::<Sum>("a").unwrap().state, full_sum(10));
    store.delete_stream("b", ExpectedVersion::Any).unwrap();
    let report = store.scavenge(&ScavengeOptions::default()).unwrap();
    // The deleted stream's three snapshots, and the damaged frame.
    assert_eq!(report.snapshots_dropped, 4, "{report:?}");
    assert!(
        holding(&flipped).is_empty(),
        "the damaged frame was carried over"
    );
    let loaded = store.load::<Sum>("a").unwrap();
    assert_eq!(loaded.state, full_sum(10));
    assert_eq!(loaded.snapshot_version, Some(8));
    store.erase_stream("a", ExpectedVersion::Any).unwrap();
    store.close().unwrap();
    assert!(
        holding(&full_sum(9).encode()).is_empty(),
        "an erased stream's snapshot stays"
    );
}

/// A reclamation that keeps the latest snapshots of each stream passes over a damaged
/// one among them (it is left out) instead of failing at it for good.
#[test]
fn a_damaged_latest_snapshot_fails_no_reclamation() {
    let dir = tempfile::tempdir().unwrap();
    let opts = || options().with_snapshots_kept_per_stream(1);
    {
        let store = Store::open_with(dir.path(), opts()).unwrap();
        append_numbers(&store, "a", 0..10);
        // Saved out of order, so that the newest (8) is not the last frame of the files.
        for v in [2u64, 8, 5] {
            store
                .save_snapshot("a", v, Sum::SCHEMA, &full_sum(v as i64 + 1).encode())
                .unwrap();
        }
        store.close().unwrap();
    }
    let newest = full_sum(9).encode();
    let mut damaged = 0;
    for f in files_under(&dir.path().join("snapshots"), "seg") {
        let mut b = fs::read(&f).unwrap();
        if let Some(at) = b.windows(newest.len()).position(|w| w == newest) {
            b[at] ^= 0x01;
            fs::write(&f, b).unwrap();
            damaged += 1;
        }
    }
    assert_eq!(damaged, 1);
    let store = Store::open_with(dir.path(), opts()).unwrap();
    let (kept, dropped) = store.reclaim_snapshots().unwrap();
    // The damaged 8 is not among the kept, so 5 is the latest intact one of "a".
    assert_eq!((kept, dropped), (1, 2));
    let loaded = store.load::<Sum>("a").unwrap();
    assert_eq!(
        (loaded.state, loaded.snapshot_version),
        (full_sum(10), Some(5))
    );
    store.close().unwrap();
}
