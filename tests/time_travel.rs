//! Commit times, finding a time in the log, and reads and loads as of a version, a
//! position or a time, checked against a model of what was appended (and a plain scan).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use streamlog::io::sim::SplitMix64 as Rng;
use streamlog::{
    Aggregate, AsOf, Clock, Durability, EventView, ExpectedVersion, NewEvent, Options, Position,
    RecordedEvent, Store,
};

/// A clock the test moves by hand (microseconds since the epoch).
fn manual_clock() -> (Arc<AtomicI64>, Clock) {
    let now = Arc::new(AtomicI64::new(1_800_000_000_000_000));
    let read = Arc::clone(&now);
    let clock = Clock::from_fn(move || {
        UNIX_EPOCH + Duration::from_micros(read.load(Ordering::SeqCst) as u64)
    });
    (now, clock)
}

fn at(us: i64) -> SystemTime {
    let d = Duration::from_micros(us.unsigned_abs());
    if us >= 0 {
        UNIX_EPOCH + d
    } else {
        UNIX_EPOCH - d
    }
}

fn all(store: &Store) -> Vec<RecordedEvent> {
    store
        .read_all(Position::START)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn commit_times_never_go_back_even_when_the_clock_does_and_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (now, clock) = manual_clock();
    let options = Options::default()
        .with_durability(Durability::Buffered)
        .with_clock(clock);
    let store = Store::open_with(dir.path(), options.clone()).unwrap();
    let t0 = now.load(Ordering::SeqCst);
    let caller_time = UNIX_EPOCH + Duration::from_secs(4_000_000_000); // year 2096
    store
        .append(
            "s",
            ExpectedVersion::Any,
            [NewEvent::new("A", "1").with_timestamp(caller_time)],
        )
        .unwrap();
    now.store(t0 - 5_000_000, Ordering::SeqCst); // the clock steps back 5 s
    store
        .append("s", ExpectedVersion::Any, [NewEvent::new("B", "2")])
        .unwrap();
    now.store(t0 + 1_000, Ordering::SeqCst);
    store
        .append("s", ExpectedVersion::Any, [NewEvent::new("C", "3")])
        .unwrap();
    store.close().unwrap();
    // Reopened with a clock an hour behind: commit times go on from the last one.
    now.store(t0 - 3_600_000_000, Ordering::SeqCst);
    let store = Store::open_with(dir.path(), options).unwrap();
    store
        .append("s", ExpectedVersion::Any, [NewEvent::new("D", "4")])
        .unwrap();
    let events = all(&store);
    let committed: Vec<i64> = events.iter().map(|e| e.committed_at_us.unwrap()).collect();
    assert_eq!(committed, vec![t0, t0, t0 + 1_000, t0 + 1_000]);
    // The event's own timestamp is the caller's, unchecked; or the append's clock time.
    assert_eq!(events[0].timestamp(), caller_time);
    assert_eq!(events[1].timestamp_us, t0 - 5_000_000);
}

/// The files of `from` copied into `to` as they are (a crash image of an open store).
fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn commit_times_go_on_from_the_last_append_after_a_crash_whatever_the_index_covers() {
    // The open finds the last append's commit time from the tail it replays, or from the
    // index's last covered frame when it replays none: both with a clock an hour behind.
    for (flushes, tail) in [(true, 0u64), (true, 3), (false, 5)] {
        let dir = tempfile::tempdir().unwrap();
        let (now, clock) = manual_clock();
        let options = Options::default()
            .with_durability(Durability::Buffered)
            .with_background_index_maintenance(false)
            .with_memtable_entries(16)
            .with_clock(clock);
        let store = Store::open_with(dir.path(), options.clone()).unwrap();
        let appends = if flushes { 32 } else { 0 } + tail;
        for i in 0..appends {
            now.fetch_add(1_000, Ordering::SeqCst);
            store
                .append(
                    &format!("s-{}", i % 3),
                    ExpectedVersion::Any,
                    [NewEvent::new("E", "x")],
                )
                .unwrap();
        }
        store.sync().unwrap();
        let last = now.load(Ordering::SeqCst);
        let image = tempfile::tempdir().unwrap();
        copy_tree(dir.path(), image.path());
        drop(store);
        now.store(last - 3_600_000_000, Ordering::SeqCst);
        let store = Store::open_with(image.path(), options).unwrap();
        assert!(!store.recovery_report().clean_shutdown);
        assert_eq!(
            store.recovery_report().index.replayed_frames,
            tail,
            "{flushes} {tail}"
        );
        store
            .append("s-0", ExpectedVersion::Any, [NewEvent::new("E", "after")])
            .unwrap();
        let events = all(&store);
        assert_eq!(events.len() as u64, appends + 1);
        assert_eq!(
            events.last().unwrap().committed_at_us,
            Some(last),
            "{flushes} {tail}"
        );
    }
}

/// Appends with a clock that moves by random steps (often not at all), across several
/// small segments, then checks `position_at` and `read_all_between` against a scan.
fn check_time_search(aligned: bool, durability: Durability) {
    let dir = tempfile::tempdir().unwrap();
    let (now, clock) = manual_clock();
    let options = Options::default()
        .with_durability(durability)
        .with_segment_size_bytes(64 << 10)
        .with_sector_aligned_commits(aligned)
        .with_clock(clock);
    let store = Store::open_with(dir.path(), options.clone()).unwrap();
    let mut rng = Rng::new(7);
    let start = now.load(Ordering::SeqCst);
    for i in 0..600u64 {
        if rng.below(3) != 0 {
            now.fetch_add(rng.below(2_000) as i64, Ordering::SeqCst);
        }
        let n = 1 + rng.below(3) as usize;
        let events: Vec<NewEvent> = (0..n)
            .map(|j| NewEvent::new("E", vec![b'x'; (rng.below(300) + j as u64) as usize]))
            .collect();
        store
            .append(&format!("s-{}", i % 7), ExpectedVersion::Any, events)
            .unwrap();
        if i == 300 {
            store.close().unwrap();
            return check_after_reopen(dir, options, start, now);
        }
    }
}

fn check_after_reopen(dir: tempfile::TempDir, options: Options, start: i64, now: Arc<AtomicI64>) {
    let store = Store::open_with(dir.path(), options).unwrap();
    let mut rng = Rng::new(11);
    for i in 0..300u64 {
        now.fetch_add(rng.below(1_500) as i64, Ordering::SeqCst);
        store
            .append(
                &format!("t-{}", i % 5),
                ExpectedVersion::Any,
                [NewEvent::new("E", vec![b'y'; rng.below(200) as usize])],
            )
            .unwrap();
    }
    let segments = std::fs::read_dir(dir.path().join("segments"))
        .unwrap()
        .count();
    assert!(segments > 2, "the log should span segments ({segments})");
    let events = all(&store);
    let end = store.info().unwrap().head.0;
    let end_now = now.load(Ordering::SeqCst);
    let mut probes: Vec<i64> = events.iter().map(|e| e.committed_at_us.unwrap()).collect();
    probes.extend([start - 1, start, end_now, end_now + 1, i64::MIN / 2]);
    for _ in 0..50 {
        probes.push(start + rng.below((end_now - start + 10) as u64) as i64);
    }
    for t in probes {
        let expected = events
            .iter()
            .find(|e| e.committed_at_us.unwrap() >= t)
            .map_or(end, |e| e.position.0);
        let found = store.position_at(at(t)).unwrap().0;
        // The search may land on a segment's start, before the padding that precedes
        // the first append: reading from there gives the same events.
        let from_found: Vec<_> = store
            .read_all(Position(found))
            .unwrap()
            .map(|e| e.unwrap().id)
            .collect();
        let from_expected: Vec<_> = events
            .iter()
            .filter(|e| e.position.0 >= expected)
            .map(|e| e.id)
            .collect();
        assert!(
            from_found == from_expected,
            "time {t}: found {found} ({} events after it), expected {expected} ({})",
            from_found.len(),
            from_expected.len()
        );
        assert!(found <= expected, "time {t}: {found} past {expected}");
    }
    // Between two times: exactly the events committed in [since, until).
    for _ in 0..30 {
        let a = start + rng.below((end_now - start + 10) as u64) as i64;
        let b = a + rng.below(200_000) as i64;
        let got: Vec<_> = store
            .read_all_between(Some(at(a)), Some(at(b)))
            .unwrap()
            .map(|e| e.unwrap().id)
            .collect();
        let want: Vec<_> = events
            .iter()
            .filter(|e| (a..b).contains(&e.committed_at_us.unwrap()))
            .map(|e| e.id)
            .collect();
        assert!(
            got == want,
            "between {a} and {b}: {} events, not {}",
            got.len(),
            want.len()
        );
        let mut seen = Vec::new();
        store
            .read_all_between(Some(at(a)), Some(at(b)))
            .unwrap()
            .for_each_view(|e| {
                seen.push(e.id);
                std::ops::ControlFlow::Continue(())
            })
            .unwrap();
        assert!(
            seen == want,
            "between {a} and {b}, borrowed: {} events, not {}",
            seen.len(),
            want.len()
        );
    }
    assert!(store.verify(|_| {}).unwrap().is_clean());
}

#[test]
fn position_at_a_time_agrees_with_a_scan_packed() {
    check_time_search(false, Durability::Buffered);
}

#[test]
fn position_at_a_time_agrees_with_a_scan_sector_aligned() {
    check_time_search(true, Durability::Sync);
}

#[test]
fn sector_aligned_commits_end_on_4_kib_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options::default()
        .with_sector_aligned_commits(true)
        .with_segment_size_bytes(1 << 20);
    let store = Store::open_with(dir.path(), options.clone()).unwrap();
    for i in 0..50u64 {
        store
            .append(
                "s",
                ExpectedVersion::Any,
                [NewEvent::new("E", vec![1u8; (i * 37 % 5000) as usize])],
            )
            .unwrap();
        let durable = store.info().unwrap().durable.0;
        // The segment holding the end (named by its base position): the end's offset
        // in that file is on a sector boundary.
        let base = std::fs::read_dir(dir.path().join("segments"))
            .unwrap()
            .map(|e| {
                let name = e.unwrap().file_name().into_string().unwrap();
                name.trim_end_matches(".seg").parse::<u64>().unwrap()
            })
            .filter(|&b| b < durable)
            .max()
            .unwrap();
        assert_eq!(
            (durable - base) % 4096,
            0,
            "after append {i}: {durable} in {base}"
        );
    }
    store.close().unwrap();
    let store = Store::open_with(dir.path(), options).unwrap();
    assert!(store.recovery_report().clean_shutdown);
    assert_eq!(all(&store).len(), 50);
    assert!(store.verify(|_| {}).unwrap().is_clean());
}

#[derive(Default, Debug, PartialEq)]
struct Sum {
    total: u64,
    count: u64,
}

impl Aggregate for Sum {
    const SCHEMA: &'static str = "sum-v1";
    fn apply(&mut self, e: &EventView<'_>) {
        self.total += std::str::from_utf8(e.data).unwrap().parse::<u64>().unwrap();
        self.count += 1;
    }
    fn encode(&self) -> Vec<u8> {
        [self.total.to_le_bytes(), self.count.to_le_bytes()].concat()
    }
    fn decode(bytes: &[u8]) -> Option<Self> {
        Some(Sum {
            total: u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?),
            count: u64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?),
        })
    }
}

/// One event of the model: (stream, version, value, position, commit time).
type ModelEvent = (String, u64, u64, u64, i64);

/// Which model events a bound keeps.
type Keep = Box<dyn Fn(&ModelEvent) -> bool>;

/// The model: every event of every stream with where and when it was committed.
#[test]
fn reads_and_loads_as_of_a_bound_match_the_model_across_snapshots_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    as_of_model(dir.path(), Options::default(), None);
}

/// The same with a power cut instead of a clean close halfway (on the simulated disk,
/// under `Sync`: every acknowledged append survives, and the model keeps them all).
#[test]
fn reads_and_loads_as_of_a_bound_match_the_model_across_a_crash() {
    let sim = streamlog::io::sim::SimStorage::new(3);
    let options = Options::default()
        .with_durability(Durability::Sync)
        .with_storage(Arc::new(sim.clone()))
        .with_background_index_maintenance(false)
        .with_memtable_entries(64);
    as_of_model(std::path::Path::new("/store"), options, Some(sim));
}

fn as_of_model(
    dir: &std::path::Path,
    options: Options,
    crash: Option<streamlog::io::sim::SimStorage>,
) {
    let (now, clock) = manual_clock();
    let options = match crash {
        Some(_) => options,
        None => options.with_durability(Durability::Buffered),
    }
    .with_segment_size_bytes(32 << 10)
    .with_clock(clock);
    let mut store = Store::open_with(dir, options.clone()).unwrap();
    let mut rng = Rng::new(99);
    // (stream, version, value, position, committed_at)
    let mut model: Vec<ModelEvent> = Vec::new();
    let mut last_t = i64::MIN;
    for i in 0..400u64 {
        now.fetch_add(rng.below(3) as i64 * 1_000, Ordering::SeqCst);
        let stream = format!("acct-{}", rng.below(3));
        let n = 1 + rng.below(3);
        let values: Vec<u64> = (0..n).map(|_| rng.below(100)).collect();
        let r = store
            .append(
                &stream,
                ExpectedVersion::Any,
                values
                    .iter()
                    .map(|v| NewEvent::new("Added", v.to_string()))
                    .collect::<Vec<_>>(),
            )
            .unwrap();
        // The commit time the store must have given it: the clock, never before the
        // previous one.
        let t = now.load(Ordering::SeqCst).max(last_t);
        last_t = t;
        for (k, v) in values.iter().enumerate() {
            model.push((
                stream.clone(),
                r.first_version + k as u64,
                *v,
                r.position.0,
                t,
            ));
        }
        // Snapshots at scattered versions (not only the latest).
        if rng.below(10) == 0 {
            let state = store.load::<Sum>(&stream).unwrap();
            store
                .save_snapshot(
                    &stream,
                    state.version.unwrap(),
                    Sum::SCHEMA,
                    &state.state.encode(),
                )
                .unwrap();
        }
        if i == 250 {
            let reopen = match &crash {
                Some(sim) => {
                    sim.crash();
                    drop(store);
                    // A handle of the new boot.
                    options.clone().with_storage(Arc::new(sim.clone()))
                }
                None => {
                    store.close().unwrap();
                    options.clone()
                }
            };
            store = Store::open_with(dir, reopen).unwrap();
            if crash.is_some() {
                assert!(!store.recovery_report().clean_shutdown);
            }
            // Commit times go on from before the cut even with the clock set back.
            now.fetch_sub(10_000_000, Ordering::SeqCst);
        }
    }
    let fold = |stream: &str, keep: &dyn Fn(&ModelEvent) -> bool| {
        let mut s = Sum::default();
        let mut last = None;
        for e in model.iter().filter(|e| e.0 == stream && keep(e)) {
            s.total += e.2;
            s.count += 1;
            last = Some(e.1);
        }
        (s, last)
    };
    let end_time = last_t;
    let start_time = model[0].4;
    for _ in 0..120 {
        let stream = format!("acct-{}", rng.below(3));
        let (bound, keep): (AsOf, Keep) = match rng.below(3) {
            0 => {
                let v = rng.below(200);
                (AsOf::Version(v), Box::new(move |e| e.1 <= v))
            }
            1 => {
                let p = model[rng.below(model.len() as u64) as usize].3 + rng.below(2);
                (AsOf::Position(Position(p)), Box::new(move |e| e.3 <= p))
            }
            _ => {
                let t = start_time - 10 + rng.below((end_time - start_time + 20) as u64) as i64;
                (AsOf::Time(at(t)), Box::new(move |e| e.4 <= t))
            }
        };
        let (want, last) = fold(&stream, &keep);
        assert_eq!(
            store.stream_version_as_of(&stream, bound).unwrap(),
            last,
            "{stream} as of {bound:?}"
        );
        let loaded = store.load_as_of::<Sum>(&stream, bound).unwrap();
        assert_eq!(loaded.state, want, "{stream} loaded as of {bound:?}");
        assert_eq!(loaded.version, last);
        if let (Some(s), Some(l)) = (loaded.snapshot_version, last) {
            assert!(s <= l, "a snapshot past the bound was used");
        }
        let read: Vec<u64> = store
            .read_stream_as_of(&stream, 0, bound)
            .unwrap()
            .map(|e| e.unwrap().version)
            .collect();
        let expected: Vec<u64> = model
            .iter()
            .filter(|e| e.0 == stream && keep(e))
            .map(|e| e.1)
            .collect();
        assert_eq!(read, expected, "{stream} read as of {bound:?}");
        if let AsOf::Time(t) = bound {
            assert_eq!(store.stream_version_at(&stream, t).unwrap(), last);
        }
    }
    // Snapshots below the latest were used at least once.
    let old = store
        .load_as_of::<Sum>(
            "acct-0",
            AsOf::Version(model.iter().filter(|e| e.0 == "acct-0").count() as u64 / 2),
        )
        .unwrap();
    assert!(old.replayed < 200);
}

/// With every stream's index keys colliding, a search on the index entries alone is misled
/// by the other streams' entries; the answer is confirmed through the frames and searched
/// again when it does not hold.
#[test]
fn as_of_a_position_is_right_when_stream_keys_collide() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(
        dir.path(),
        Options::default()
            .with_durability(Durability::Buffered)
            .with_forced_hash_collisions(),
    )
    .unwrap();
    let mut model: Vec<(String, u64, u64)> = Vec::new();
    for i in 0..60u64 {
        let stream = if i % 3 == 0 { "a" } else { "b" };
        let r = store
            .append(stream, ExpectedVersion::Any, [NewEvent::new("E", "x")])
            .unwrap();
        model.push((stream.to_string(), r.first_version, r.position.0));
    }
    for &(_, _, p) in &model {
        for stream in ["a", "b"] {
            let want = model
                .iter()
                .filter(|e| e.0 == stream && e.2 <= p)
                .map(|e| e.1)
                .max();
            assert_eq!(
                store
                    .stream_version_as_of(stream, AsOf::Position(Position(p)))
                    .unwrap(),
                want,
                "{stream} as of {p}"
            );
        }
    }
}

#[test]
fn as_of_a_time_is_right_when_stream_keys_collide() {
    let dir = tempfile::tempdir().unwrap();
    let start = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let clock_us = Arc::new(AtomicU64::new(0));
    let c = Arc::clone(&clock_us);
    let store = Store::open_with(
        dir.path(),
        Options::default()
            .with_durability(Durability::Buffered)
            .with_forced_hash_collisions()
            .with_clock(streamlog::Clock::from_fn(move || {
                start + Duration::from_micros(c.load(Ordering::Relaxed))
            })),
    )
    .unwrap();
    // Streams "a" and "b" share their index keys: a search guided by the other stream's
    // entries must still answer for its own.
    let mut model: Vec<(String, u64, u64)> = Vec::new();
    for i in 0..90u64 {
        clock_us.fetch_add(10, Ordering::Relaxed);
        let stream = if i % 3 == 0 { "a" } else { "b" };
        let r = store
            .append(stream, ExpectedVersion::Any, [NewEvent::new("E", "x")])
            .unwrap();
        model.push((
            stream.to_string(),
            r.first_version,
            clock_us.load(Ordering::Relaxed),
        ));
    }
    for at in 0..=91 * 10 {
        let at = at as u64;
        for stream in ["a", "b"] {
            let want = model
                .iter()
                .filter(|e| e.0 == stream && e.2 <= at)
                .map(|e| e.1)
                .max();
            let time = start + Duration::from_micros(at);
            assert_eq!(
                store
                    .stream_version_as_of(stream, AsOf::Time(time))
                    .unwrap(),
                want,
                "{stream} as of {at} µs"
            );
        }
    }
}

/// The commit time each index entry carries is its frame's, whether the entry was recorded
/// by the append, replayed from the log after a power cut, or rebuilt by a reindex, and it
/// survives the flush to a table and the reopen.
#[test]
fn index_entries_carry_their_frames_commit_times_across_reopen_crash_and_reindex() {
    use std::collections::BTreeMap;
    use streamlog::index::{Manifest, Table};
    use streamlog::io::sim::SimStorage;

    let sim = SimStorage::new(11);
    let dir = std::path::Path::new("/store");
    let (now, clock) = manual_clock();
    let options = || {
        Options::default()
            .with_durability(Durability::Sync)
            .with_storage(Arc::new(sim.clone()))
            .with_background_index_maintenance(false)
            .with_memtable_entries(16)
            .with_clock(clock.clone())
    };
    let append = |store: &Store, n: u64| {
        for i in 0..n {
            // Several appends share a commit time, and the clock steps back once.
            now.fetch_add([0, 7, 1_000][(i % 3) as usize], Ordering::SeqCst);
            if i == n / 2 {
                now.fetch_sub(50_000, Ordering::SeqCst);
            }
            store
                .append(
                    &format!("s-{}", i % 4),
                    ExpectedVersion::Any,
                    [NewEvent::new("E", "x")],
                )
                .unwrap();
        }
    };
    // Every entry of the index tables against a scan of the log: the same frames, with
    // the same commit times.
    let check = |when: &str| {
        let store = Store::open_with(dir, options().with_read_only(true)).unwrap();
        let scan: BTreeMap<u64, i64> = all(&store)
            .iter()
            .map(|e| {
                let t = e.committed_at().unwrap();
                let us = t.duration_since(UNIX_EPOCH).unwrap().as_micros() as i64;
                (e.position.0, us)
            })
            .collect();
        drop(store);
        let index_dir = dir.join(streamlog::INDEX_DIR);
        let manifest = Manifest::load(&sim, &index_dir).unwrap().unwrap().unwrap();
        let mut entries = BTreeMap::new();
        for &id in &manifest.tables {
            Table::open(&sim, &index_dir, id)
                .unwrap()
                .for_each(|e| {
                    entries.insert(e.position, e.committed_at_us);
                    Ok(())
                })
                .unwrap();
        }
        let want: BTreeMap<u64, Option<i64>> = scan.iter().map(|(&p, &t)| (p, Some(t))).collect();
        assert_eq!(entries, want, "{when}");
        scan.len()
    };
    let store = Store::open_with(dir, options()).unwrap();
    append(&store, 100);
    store.close().unwrap();
    assert_eq!(check("after a clean close"), 100);

    // Appends after the index's covered position, lost from memory by a power cut: the
    // open replays them from the log into the index.
    let store = Store::open_with(dir, options()).unwrap();
    append(&store, 50);
    sim.crash();
    drop(store);
    let store = Store::open_with(dir, options()).unwrap();
    assert!(store.recovery_report().index.replayed_frames > 0);
    append(&store, 10);
    store.close().unwrap();
    assert_eq!(check("after a crash and the replay"), 160);

    Store::reindex(dir, options(), |_| {}).unwrap();
    assert_eq!(check("after a reindex"), 160);
}

/// After scavenges (plain, then compressing everything, then a reopen) removed the
/// prefixes of streams with a rule, finding a time in the log still agrees with a scan,
/// and a stream's version and events as of a time or position are those of its surviving
/// versions: a rewritten segment's gaps (removed frames) are no damage, and versions
/// below the first surviving one are not searched for.
#[test]
fn time_travel_after_scavenges_agrees_with_a_scan_and_the_surviving_versions() {
    use streamlog::{ScavengeOptions, StreamMetadata};
    let dir = tempfile::tempdir().unwrap();
    let (now, clock) = manual_clock();
    let options = Options::default()
        .with_durability(Durability::Buffered)
        .with_segment_size_bytes(64 << 10)
        .with_clock(clock);
    let mut store = Store::open_with(dir.path(), options.clone()).unwrap();
    let mut rng = Rng::new(5);
    // (stream, version, position, committed_at) of every append (one event each).
    let mut model: Vec<(String, u64, u64, i64)> = Vec::new();
    let mut append = |store: &Store, rng: &mut Rng, stream: &str| {
        now.fetch_add(1 + rng.below(2_000) as i64, Ordering::SeqCst);
        let r = store
            .append(
                stream,
                ExpectedVersion::Any,
                [NewEvent::new(
                    "E",
                    vec![b'z'; 100 + rng.below(300) as usize],
                )],
            )
            .unwrap();
        let t = store
            .read_stream(stream, r.first_version)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .committed_at_us
            .unwrap();
        model.push((stream.to_string(), r.first_version, r.position.0, t));
    };
    for _ in 0..900 {
        let stream = format!("s-{}", rng.below(5));
        append(&store, &mut rng, &stream);
    }
    // s-0: no rule. s-1: the last 3 kept. s-2: truncated before version 40. s-3: deleted,
    // then re-created. s-4: hard deleted.
    store
        .set_stream_metadata(
            "s-1",
            ExpectedVersion::Any,
            &StreamMetadata::new().with_max_count(3),
        )
        .unwrap();
    store
        .set_stream_metadata(
            "s-2",
            ExpectedVersion::Any,
            &StreamMetadata::new().with_truncate_before(40),
        )
        .unwrap();
    store.delete_stream("s-3", ExpectedVersion::Any).unwrap();
    store.tombstone_stream("s-4", ExpectedVersion::Any).unwrap();
    for _ in 0..20 {
        append(&store, &mut rng, "s-3");
    }
    let last = |s: &str| {
        model
            .iter()
            .filter(|e| e.0 == s)
            .map(|e| e.1)
            .max()
            .unwrap()
    };
    let deleted_below = model
        .iter()
        .filter(|e| e.0 == "s-3")
        .map(|e| e.1)
        .max()
        .unwrap()
        - 19;
    let floors = [
        ("s-0", 0),
        ("s-1", last("s-1") - 2),
        ("s-2", 40),
        ("s-3", deleted_below),
    ];
    let start = model[0].3;
    let end_time = model.last().unwrap().3;
    for round in 0..3 {
        match round {
            0 => drop(store.scavenge(&ScavengeOptions::default()).unwrap()),
            1 => drop(
                store
                    .scavenge(&ScavengeOptions::default().with_compress_all(true))
                    .unwrap(),
            ),
            _ => {
                store.close().unwrap();
                store = Store::open_with(dir.path(), options.clone()).unwrap();
            }
        }
        assert!(store.verify(|_| {}).unwrap().is_clean(), "round {round}");
        let events = all(&store);
        let end = store.info().unwrap().head.0;
        let mut probes: Vec<i64> = model.iter().map(|e| e.3).collect();
        probes.extend([start - 1, end_time + 1]);
        for t in probes.iter().copied().step_by(3) {
            let found = store.position_at(at(t)).unwrap().0;
            let expected = events
                .iter()
                .find(|e| e.committed_at_us.unwrap() >= t)
                .map_or(end, |e| e.position.0);
            let from_found = store
                .read_all(Position(found))
                .unwrap()
                .map(|e| e.unwrap().id)
                .collect::<Vec<_>>();
            let from_expected: Vec<_> = events
                .iter()
                .filter(|e| e.position.0 >= expected)
                .map(|e| e.id)
                .collect();
            assert!(
                from_found == from_expected,
                "round {round}, time {t}: found {found}, expected {expected}"
            );
            let between: Vec<_> = store
                .read_all_between(Some(at(t)), Some(at(t + 5_000)))
                .unwrap()
                .map(|e| e.unwrap().id)
                .collect();
            let want: Vec<_> = events
                .iter()
                .filter(|e| (t..t + 5_000).contains(&e.committed_at_us.unwrap()))
                .map(|e| e.id)
                .collect();
            assert!(between == want, "round {round}, between {t} and +5 ms");
        }
        for (stream, floor) in floors {
            let versions: Vec<_> = model.iter().filter(|e| e.0 == stream).collect();
            for e in versions.iter().step_by(2) {
                for (bound, within) in [
                    (
                        AsOf::Time(at(e.3)),
                        Box::new(|m: &&(String, u64, u64, i64)| m.3 <= e.3)
                            as Box<dyn Fn(&&(String, u64, u64, i64)) -> bool>,
                    ),
                    (
                        AsOf::Position(Position(e.2)),
                        Box::new(|m: &&(String, u64, u64, i64)| m.2 <= e.2),
                    ),
                ] {
                    let had = versions.iter().filter(|m| within(m)).map(|m| m.1).max();
                    let want = had.filter(|&v| v >= floor);
                    assert_eq!(
                        store.stream_version_as_of(stream, bound).unwrap(),
                        want,
                        "round {round}: {stream} as of {bound:?}"
                    );
                    // The events read as of the bound: those the stream shows now (its
                    // metadata applies), up to the bound.
                    let visible: Vec<u64> = store
                        .read_stream(stream, 0)
                        .unwrap()
                        .map(|e| e.unwrap().version)
                        .collect();
                    let read: Vec<u64> = store
                        .read_stream_as_of(stream, 0, bound)
                        .unwrap()
                        .map(|e| e.unwrap().version)
                        .collect();
                    let expected: Vec<u64> = visible
                        .into_iter()
                        .filter(|v| want.is_some_and(|w| *v <= w))
                        .collect();
                    assert_eq!(
                        read, expected,
                        "round {round}: {stream} read as of {bound:?}"
                    );
                }
            }
        }
        // A version bound below the first surviving version finds none either.
        for (stream, floor) in floors {
            let last = model
                .iter()
                .filter(|e| e.0 == stream)
                .map(|e| e.1)
                .max()
                .unwrap();
            for v in [0, floor.saturating_sub(1), floor, last, last + 5] {
                let want = (v >= floor).then(|| v.min(last));
                assert_eq!(
                    store
                        .stream_version_as_of(stream, AsOf::Version(v))
                        .unwrap(),
                    want,
                    "round {round}: {stream} as of version {v}"
                );
            }
        }
        for bound in [AsOf::Time(at(end_time)), AsOf::Version(0)] {
            assert!(
                matches!(
                    store.stream_version_as_of("s-4", bound),
                    Err(streamlog::Error::StreamDeleted { .. })
                ),
                "round {round}: a hard-deleted stream's version as of {bound:?}"
            );
        }
    }
}

/// `until` holds for the rest of an append a resume token starts inside: its events were
/// committed with the append, at or after the bound.
#[test]
fn until_holds_for_the_rest_of_the_append_a_token_starts_inside() {
    let dir = tempfile::tempdir().unwrap();
    let (now, clock) = manual_clock();
    let store = Store::open_with(
        dir.path(),
        Options::default()
            .with_durability(Durability::Buffered)
            .with_clock(clock),
    )
    .unwrap();
    let t0 = now.load(Ordering::SeqCst);
    store
        .append("a", ExpectedVersion::Any, [NewEvent::new("E", "0")])
        .unwrap();
    now.store(t0 + 1_000, Ordering::SeqCst);
    let r = store
        .append(
            "a",
            ExpectedVersion::Any,
            [NewEvent::new("E", "1"), NewEvent::new("E", "2")],
        )
        .unwrap();
    let token: streamlog::ResumeToken = format!("{}:1", r.position.0).parse().unwrap();
    for (until, want) in [(t0 + 1_000, 0), (t0 + 1_001, 1)] {
        let read: Vec<_> = store
            .read_all(token)
            .unwrap()
            .until(at(until))
            .map(|e| e.unwrap().version)
            .collect();
        assert_eq!(read.len(), want, "until {until}: {read:?}");
    }
}

/// A damaged block of a rewritten segment is reported by the search for a time (its
/// gaps are not damage, but a block that does not check is), never passed over as if
/// the segment ended there.
#[test]
fn a_damaged_block_of_a_rewritten_segment_is_reported_by_the_search_for_a_time() {
    use streamlog::ScavengeOptions;
    let dir = tempfile::tempdir().unwrap();
    let (now, clock) = manual_clock();
    let options = Options::default()
        .with_durability(Durability::Buffered)
        .with_segment_size_bytes(64 << 10)
        .with_frame_cache_bytes(0)
        .with_clock(clock);
    let store = Store::open_with(dir.path(), options.clone()).unwrap();
    let mut times = Vec::new();
    for i in 0..600u64 {
        now.fetch_add(1_000, Ordering::SeqCst);
        store
            .append(
                &format!("s-{}", i % 4),
                ExpectedVersion::Any,
                [NewEvent::new(
                    "E",
                    format!("{{\"n\":{i},\"pad\":\"{}\"}}", "p".repeat(150)),
                )],
            )
            .unwrap();
        times.push(now.load(Ordering::SeqCst));
    }
    store
        .scavenge(&ScavengeOptions::default().with_compress_all(true))
        .unwrap();
    let before: Vec<u64> = times
        .iter()
        .map(|&t| store.position_at(at(t)).unwrap().0)
        .collect();
    store.close().unwrap();
    // A byte in the middle of the first (rewritten) segment: inside its blocks.
    let mut segs: Vec<_> = std::fs::read_dir(dir.path().join("segments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segs.sort();
    let mut bytes = std::fs::read(&segs[0]).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&segs[0], &bytes).unwrap();
    let store = Store::open_with(dir.path(), options).unwrap();
    let mut reported = 0;
    for (t, want) in times.iter().zip(&before) {
        match store.position_at(at(*t)) {
            Ok(p) => assert_eq!(p.0, *want, "time {t}: a wrong answer, not an error"),
            Err(streamlog::Error::Corrupted { .. }) => reported += 1,
            Err(e) => panic!("time {t}: {e}"),
        }
    }
    assert!(reported > 0, "the damaged block was never reported");
}
