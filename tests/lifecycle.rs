//! Stream lifecycle: metadata rules (max count, max age, truncate-before), soft delete and
//! re-creation, hard delete (tombstone), as every read path, a reopen, a power cut, a
//! follower in another process and concurrent writers see them.
#![allow(clippy::unwrap_used)]

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant, SystemTime};

use streamlog::io::Storage;
use streamlog::io::sim::SimStorage;
use streamlog::{
    Aggregate, Delivery, Durability, Error, EventView, ExpectedVersion, METADATA_STREAM, NewEvent,
    Options, Position, RecordedEvent, Store, StreamMetadata, SubscribeAll, SubscribeStream,
};

fn ev(data: &str) -> NewEvent {
    NewEvent::new("T", data)
}

fn append_n(store: &Store, stream: &str, n: u64) {
    for i in 0..n {
        store
            .append(stream, ExpectedVersion::Any, [ev(&i.to_string())])
            .unwrap();
    }
}

fn stream_versions(store: &Store, stream: &str) -> Vec<u64> {
    store
        .read_stream(stream, 0)
        .unwrap()
        .map(|e| e.unwrap().version)
        .collect()
}

fn backward_versions(store: &Store, stream: &str) -> Vec<u64> {
    store
        .read_stream_backward(stream, None)
        .unwrap()
        .map(|e| e.unwrap().version)
        .collect()
}

/// The user events of `$all` (the system stream's left out), as (stream, version).
fn all_user_events(store: &Store) -> Vec<(String, u64)> {
    store
        .read_all(Position::START)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| !e.stream.starts_with('$'))
        .map(|e| (e.stream.to_string(), e.version))
        .collect()
}

/// Events a subscription delivers until it catches up.
fn until_caught_up(sub: streamlog::Subscription) -> Vec<RecordedEvent> {
    let mut out = Vec::new();
    for d in sub {
        match d.unwrap() {
            Delivery::Event(e) => out.push(e),
            Delivery::CaughtUp => break,
            _ => {}
        }
    }
    out
}

#[test]
fn every_read_path_honours_max_count_and_truncate_before() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    append_n(&store, "a", 10);
    append_n(&store, "b", 3);
    let r = store
        .set_stream_metadata(
            "a",
            ExpectedVersion::NoStream,
            &StreamMetadata::new().with_max_count(4),
        )
        .unwrap();
    assert_eq!((r.first_version, r.last_version), (0, 0));
    assert_eq!(stream_versions(&store, "a"), [6, 7, 8, 9]);
    assert_eq!(backward_versions(&store, "a"), [9, 8, 7, 6]);
    // From a version inside the hidden part: starts at the first kept one.
    let from2: Vec<u64> = store
        .read_stream("a", 2)
        .unwrap()
        .map(|e| e.unwrap().version)
        .collect();
    assert_eq!(from2, [6, 7, 8, 9]);
    let back_from_7: Vec<u64> = store
        .read_stream_backward("a", Some(7))
        .unwrap()
        .map(|e| e.unwrap().version)
        .collect();
    assert_eq!(back_from_7, [7, 6]);
    let mut viewed = Vec::new();
    store
        .read_stream_with("a", 0, |e| {
            viewed.push(e.version);
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(viewed, [6, 7, 8, 9]);
    let expect_all: Vec<(String, u64)> = (6..10)
        .map(|v| ("a".to_string(), v))
        .chain((0..3).map(|v| ("b".to_string(), v)))
        .collect();
    assert_eq!(all_user_events(&store), expect_all);
    let mut viewed = Vec::new();
    store
        .read_all_with(Position::START, |e| {
            if !e.stream.starts_with('$') {
                viewed.push((e.stream.to_string(), e.version));
            }
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(viewed, expect_all);
    // Subscriptions read through the same readers.
    let sub = store.subscribe_stream(SubscribeStream::new("a")).unwrap();
    let got: Vec<u64> = until_caught_up(sub).iter().map(|e| e.version).collect();
    assert_eq!(got, [6, 7, 8, 9]);
    let sub = store.subscribe_all(SubscribeAll::from_start()).unwrap();
    let got: Vec<(String, u64)> = until_caught_up(sub)
        .iter()
        .filter(|e| !e.stream.starts_with('$'))
        .map(|e| (e.stream.to_string(), e.version))
        .collect();
    assert_eq!(got, expect_all);
    // The count follows the stream: one more event hides one more.
    append_n(&store, "a", 1);
    assert_eq!(stream_versions(&store, "a"), [7, 8, 9, 10]);
    // Truncate-before and max-count together: the stricter wins.
    store
        .set_stream_metadata(
            "a",
            ExpectedVersion::Exact(0),
            &StreamMetadata::new()
                .with_max_count(4)
                .with_truncate_before(9),
        )
        .unwrap();
    assert_eq!(stream_versions(&store, "a"), [9, 10]);
    assert_eq!(backward_versions(&store, "a"), [10, 9]);
    // Lifting the rules makes every event readable again (nothing was removed).
    store
        .set_stream_metadata("a", ExpectedVersion::Exact(1), &StreamMetadata::new())
        .unwrap();
    assert_eq!(stream_versions(&store, "a"), (0..11).collect::<Vec<_>>());
    assert_eq!(store.stream_version("a").unwrap(), Some(10));
}

#[test]
fn max_age_hides_events_committed_longer_ago_than_it() {
    // The age of an event counts from its commit time, which the store stamps from its
    // clock (here a clock the test moves); a timestamp the caller gives does not count.
    let tmp = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let clock_at = std::sync::Arc::new(std::sync::Mutex::new(now - Duration::from_secs(7200)));
    let read_clock = std::sync::Arc::clone(&clock_at);
    let store = Store::open_with(
        tmp.path(),
        streamlog::Options::default().with_clock(streamlog::Clock::from_fn(move || {
            *read_clock.lock().unwrap()
        })),
    )
    .unwrap();
    store
        .append("s", ExpectedVersion::NoStream, [ev("old"), ev("old2")])
        .unwrap();
    *clock_at.lock().unwrap() = now;
    store
        .append(
            "s",
            ExpectedVersion::Exact(1),
            // Backdated by its writer: still committed now, so still young.
            [ev("new").with_timestamp(now - Duration::from_secs(100_000))],
        )
        .unwrap();
    store
        .set_stream_metadata(
            "s",
            ExpectedVersion::NoStream,
            &StreamMetadata::new().with_max_age(Duration::from_secs(3600)),
        )
        .unwrap();
    assert_eq!(stream_versions(&store, "s"), [2]);
    assert_eq!(backward_versions(&store, "s"), [2]);
    assert_eq!(all_user_events(&store), [("s".to_string(), 2)]);
    // Aged-out events do not make the stream disappear for expected versions.
    assert_eq!(store.stream_version("s").unwrap(), Some(2));
    let m = store.stream_metadata("s").unwrap();
    assert_eq!(m.max_age, Some(Duration::from_secs(3600)));
    assert!(!m.deleted);
}

#[test]
fn soft_delete_empties_the_stream_and_an_append_recreates_it_after_the_old_versions() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    append_n(&store, "order-1", 3);
    append_n(&store, "other", 1);
    // The expected version is checked.
    assert!(matches!(
        store.delete_stream("order-1", ExpectedVersion::Exact(1)),
        Err(Error::WrongExpectedVersion {
            actual: Some(2),
            ..
        })
    ));
    let d = store
        .delete_stream("order-1", ExpectedVersion::Exact(2))
        .unwrap();
    assert!(d.position > Position::START);
    assert_eq!(stream_versions(&store, "order-1"), Vec::<u64>::new());
    assert_eq!(backward_versions(&store, "order-1"), Vec::<u64>::new());
    assert_eq!(store.stream_version("order-1").unwrap(), None);
    assert_eq!(all_user_events(&store), [("other".to_string(), 0)]);
    let m = store.stream_metadata("order-1").unwrap();
    assert!(m.deleted && !m.tombstoned);
    assert_eq!(m.truncate_before, Some(3));
    // The delete is an event of the system stream, read like any other.
    let system: Vec<RecordedEvent> = store
        .read_stream(METADATA_STREAM, 0)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(system.len(), 1);
    assert_eq!(system[0].position, d.position);
    // A deleted stream does not exist for expected versions.
    assert!(matches!(
        store.append("order-1", ExpectedVersion::StreamExists, [ev("x")]),
        Err(Error::WrongExpectedVersion { actual: None, .. })
    ));
    let r = store
        .append("order-1", ExpectedVersion::NoStream, [ev("again")])
        .unwrap();
    assert_eq!(r.first_version, 3, "versions go on after the old last one");
    assert_eq!(stream_versions(&store, "order-1"), [3]);
    assert!(!store.stream_metadata("order-1").unwrap().deleted);
    // All of it survives a reopen.
    drop(store);
    let store = Store::open(tmp.path()).unwrap();
    assert_eq!(stream_versions(&store, "order-1"), [3]);
    assert_eq!(store.stream_version("order-1").unwrap(), Some(3));
    assert_eq!(
        store.stream_metadata("order-1").unwrap().metadata_version,
        Some(0)
    );
}

#[derive(Debug, Default)]
struct Sum(i64);

impl Aggregate for Sum {
    const SCHEMA: &'static str = "sum";
    fn apply(&mut self, e: &EventView<'_>) {
        self.0 += std::str::from_utf8(e.data).unwrap().parse::<i64>().unwrap();
    }
    fn encode(&self) -> Vec<u8> {
        self.0.to_le_bytes().to_vec()
    }
    fn decode(b: &[u8]) -> Option<Self> {
        Some(Sum(i64::from_le_bytes(b.try_into().ok()?)))
    }
}

#[test]
fn load_replays_only_kept_events_and_uses_no_snapshot_that_includes_hidden_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open_with(
        tmp.path(),
        Options::default().with_snapshot_policy(streamlog::SnapshotPolicy::EveryEvents(1)),
    )
    .unwrap();
    append_n(&store, "acc", 5); // 0+1+2+3+4
    let loaded = store.load::<Sum>("acc").unwrap();
    assert_eq!((loaded.state.0, loaded.snapshot_saved), (10, Some(4)));
    store
        .set_stream_metadata(
            "acc",
            ExpectedVersion::NoStream,
            &StreamMetadata::new().with_truncate_before(3),
        )
        .unwrap();
    let loaded = store.load::<Sum>("acc").unwrap();
    assert_eq!(loaded.state.0, 3 + 4, "the state of the kept events only");
    assert_eq!(loaded.snapshot_version, None);
    assert_eq!(loaded.replayed, 2);
    assert_eq!(
        loaded.snapshot_saved, None,
        "no snapshot of a partial state"
    );
    assert!(
        loaded.ignored_snapshots.iter().any(|s| s.contains("hides")),
        "{:?}",
        loaded.ignored_snapshots
    );
    // Soft deleted: an empty state.
    store
        .delete_stream("acc", ExpectedVersion::Exact(4))
        .unwrap();
    let loaded = store.load::<Sum>("acc").unwrap();
    assert_eq!((loaded.state.0, loaded.version), (0, None));
    // Hard deleted: an error, like every read.
    store
        .tombstone_stream("acc", ExpectedVersion::NoStream)
        .unwrap();
    assert!(matches!(
        store.load::<Sum>("acc"),
        Err(Error::StreamDeleted { .. })
    ));
}

#[test]
fn a_tombstone_refuses_every_later_call_and_survives_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    append_n(&store, "gone", 2);
    append_n(&store, "kept", 2);
    assert!(matches!(
        store.tombstone_stream("gone", ExpectedVersion::NoStream),
        Err(Error::WrongExpectedVersion { .. })
    ));
    store
        .tombstone_stream("gone", ExpectedVersion::Exact(1))
        .unwrap();
    let check = |store: &Store| {
        let deleted = |r: Result<(), Error>| matches!(r, Err(Error::StreamDeleted { stream }) if stream == "gone");
        assert!(deleted(
            store
                .append("gone", ExpectedVersion::Any, [ev("x")])
                .map(drop)
        ));
        assert!(deleted(store.read_stream("gone", 0).map(drop)));
        assert!(deleted(store.read_stream_backward("gone", None).map(drop)));
        assert!(deleted(store.stream_version("gone").map(drop)));
        assert!(deleted(
            store
                .subscribe_stream(SubscribeStream::new("gone").from_end())
                .map(drop)
        ));
        assert!(deleted(
            store.delete_stream("gone", ExpectedVersion::Any).map(drop)
        ));
        assert!(deleted(
            store
                .tombstone_stream("gone", ExpectedVersion::Any)
                .map(drop)
        ));
        assert!(deleted(
            store
                .set_stream_metadata("gone", ExpectedVersion::Any, &StreamMetadata::new())
                .map(drop)
        ));
        assert!(store.stream_metadata("gone").unwrap().tombstoned);
        assert_eq!(
            all_user_events(store),
            [("kept".to_string(), 0), ("kept".to_string(), 1)]
        );
        assert_eq!(stream_versions(store, "kept"), [0, 1]);
    };
    check(&store);
    drop(store);
    let store = Store::open(tmp.path()).unwrap();
    check(&store);
    drop(store);
    let reader = Store::open_with(tmp.path(), Options::default().with_read_only(true)).unwrap();
    assert!(matches!(
        reader.read_stream("gone", 0),
        Err(Error::StreamDeleted { .. })
    ));
}

#[test]
fn system_streams_and_bad_metadata_are_refused_with_typed_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    // Nobody forges a delete by appending to the system stream.
    let forged = NewEvent::new("$tombstone", r#"{"stream":"victim"}"#);
    assert!(matches!(
        store.append(METADATA_STREAM, ExpectedVersion::Any, [forged]),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        store.delete_stream(METADATA_STREAM, ExpectedVersion::Any),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        store.set_stream_metadata("$x", ExpectedVersion::Any, &StreamMetadata::new()),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        store.delete_stream("", ExpectedVersion::Any),
        Err(Error::InvalidArgument(_))
    ));
    for bad in [
        StreamMetadata::new().with_max_count(0),
        StreamMetadata::new().with_max_age(Duration::ZERO),
        StreamMetadata::new().with_max_age(Duration::from_millis(10)),
        StreamMetadata::new().with_max_age(Duration::from_secs(u64::MAX)),
        StreamMetadata::new().with_truncate_before(u64::MAX),
        StreamMetadata::new().with_custom(b"not json".to_vec()),
        StreamMetadata::new().with_custom(b"[1,2]".to_vec()),
        StreamMetadata::new().with_custom(br#"{"$maxCount":1}"#.to_vec()),
    ] {
        assert!(
            matches!(
                store.set_stream_metadata("s", ExpectedVersion::Any, &bad),
                Err(Error::InvalidArgument(_))
            ),
            "{bad:?}"
        );
    }
    assert_eq!(store.stream_metadata("s").unwrap(), StreamMetadata::new());
    assert!(
        store.read_all(Position::START).unwrap().next().is_none(),
        "nothing was written"
    );
}

#[test]
fn the_metadata_version_guards_changes_and_user_keys_are_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let m = StreamMetadata::new().with_custom(br#"{"owner":"billing","tags":[1,2]}"#.to_vec());
    store
        .set_stream_metadata("s", ExpectedVersion::NoStream, &m)
        .unwrap();
    assert!(matches!(
        store.set_stream_metadata("s", ExpectedVersion::NoStream, &m),
        Err(Error::WrongExpectedVersion {
            actual: Some(0),
            ..
        })
    ));
    let got = store.stream_metadata("s").unwrap();
    assert_eq!(
        got.custom.as_deref(),
        Some(&br#"{"owner":"billing","tags":[1,2]}"#[..])
    );
    assert_eq!(got.metadata_version, Some(0));
    let r = store
        .set_stream_metadata("s", ExpectedVersion::Exact(0), &got.with_max_count(3))
        .unwrap();
    assert_eq!(r.first_version, 1);
    let got = store.stream_metadata("s").unwrap();
    assert_eq!(
        String::from_utf8(got.to_json()).unwrap(),
        r#"{"$maxCount":3,"owner":"billing","tags":[1,2]}"#
    );
    assert_eq!(
        StreamMetadata::from_json(&got.to_json()).unwrap().max_count,
        Some(3)
    );
}

/// A read-only open beside a live writer (another process's, here another handle) sees
/// the writer's deletes and metadata changes as it follows the log.
#[test]
fn a_follower_sees_the_writers_lifecycle_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let writer = Store::open(tmp.path()).unwrap();
    append_n(&writer, "a", 3);
    append_n(&writer, "b", 3);
    let reader = Store::open_with(tmp.path(), Options::default().with_read_only(true)).unwrap();
    // The writer publishes its visible end for other handles from a background thread,
    // just after its commits: a reader opened right after them may start a little
    // behind, and follows.
    let deadline = Instant::now() + Duration::from_secs(10);
    while stream_versions(&reader, "a") != [0, 1, 2] {
        assert!(
            Instant::now() < deadline,
            "the follower never saw the appends"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    writer
        .set_stream_metadata(
            "a",
            ExpectedVersion::NoStream,
            &StreamMetadata::new().with_max_count(1),
        )
        .unwrap();
    writer.tombstone_stream("b", ExpectedVersion::Any).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let b_gone = matches!(reader.read_stream("b", 0), Err(Error::StreamDeleted { .. }));
        if b_gone && stream_versions(&reader, "a") == [2] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the follower never saw the changes"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(all_user_events(&reader), [("a".to_string(), 2)]);
}

fn sim_options(sim: &SimStorage) -> Options {
    Options::default()
        .with_storage(Arc::new(sim.clone()))
        .with_segment_size_bytes(4096)
        .with_background_index_maintenance(false)
        .with_durability(Durability::Sync)
}

fn new_sim(seed: u64) -> SimStorage {
    let sim = SimStorage::new(seed);
    sim.create_dir_all(Path::new("/db")).unwrap();
    sim.sync_dir(Path::new("/")).unwrap();
    sim
}

/// Under `Sync`, a delete or tombstone that returned is on disk: a power cut right after
/// it (everything unsynced lost) keeps it, and the stream reads as it did.
#[test]
fn acknowledged_deletes_survive_a_power_cut() {
    for seed in 0..20u64 {
        let sim = new_sim(seed);
        let store = Store::open_with("/db", sim_options(&sim)).unwrap();
        append_n(&store, "soft", 3);
        append_n(&store, "hard", 2);
        append_n(&store, "ruled", 4);
        store
            .delete_stream("soft", ExpectedVersion::Exact(2))
            .unwrap();
        store
            .tombstone_stream("hard", ExpectedVersion::Any)
            .unwrap();
        store
            .set_stream_metadata(
                "ruled",
                ExpectedVersion::NoStream,
                &StreamMetadata::new().with_max_count(2),
            )
            .unwrap();
        sim.crash();
        drop(store);
        let store = Store::open_with("/db", sim_options(&sim)).unwrap();
        assert_eq!(
            stream_versions(&store, "soft"),
            Vec::<u64>::new(),
            "seed {seed}"
        );
        assert_eq!(store.stream_version("soft").unwrap(), None, "seed {seed}");
        assert!(
            matches!(
                store.read_stream("hard", 0),
                Err(Error::StreamDeleted { .. })
            ),
            "seed {seed}"
        );
        assert_eq!(stream_versions(&store, "ruled"), [2, 3], "seed {seed}");
        // Versions of the soft-deleted stream go on after a crash too.
        let r = store
            .append("soft", ExpectedVersion::NoStream, [ev("x")])
            .unwrap();
        assert_eq!(r.first_version, 3, "seed {seed}");
    }
}

/// A tombstone whose sync fails is never acknowledged, and no reader ever sees it: readers
/// see only durable changes, as they see only durable appends.
#[test]
fn a_delete_whose_sync_fails_is_neither_acknowledged_nor_seen() {
    for seed in 0..10u64 {
        let sim = new_sim(seed);
        let store = Store::open_with("/db", sim_options(&sim)).unwrap();
        append_n(&store, "s", 2);
        sim.fail_next_sync(None).unwrap();
        let r = store.tombstone_stream("s", ExpectedVersion::Any);
        assert!(matches!(r, Err(Error::Io { .. })), "seed {seed}: {r:?}");
        assert_eq!(stream_versions(&store, "s"), [0, 1], "seed {seed}");
        assert_eq!(store.stream_version("s").unwrap(), Some(1));
        assert!(!store.stream_metadata("s").unwrap().tombstoned);
        assert!(matches!(
            store.delete_stream("s", ExpectedVersion::Any),
            Err(Error::Poisoned)
        ));
        drop(store);
        sim.clear_faults();
        sim.crash();
        let store = Store::open_with("/db", sim_options(&sim)).unwrap();
        // Either way the stream is whole or tombstoned, never torn.
        match store.read_stream("s", 0) {
            Ok(events) => assert_eq!(events.count(), 2, "seed {seed}"),
            Err(Error::StreamDeleted { .. }) => {}
            Err(e) => panic!("seed {seed}: {e}"),
        }
    }
}

/// A successful call: when it started and ended (since the test's start), where it landed.
type Recorded = (Duration, Duration, Position, Call);

/// One recorded call of the concurrent test.
#[derive(Debug, Clone)]
enum Call {
    Append {
        expected: ExpectedVersion,
        first_version: u64,
    },
    Delete {
        expected: ExpectedVersion,
    },
}

/// Appenders and a deleter race on one stream. Each successful call has a position in
/// the log; replayed in position order, every call's expectation held at its place (the
/// checks are atomic with the writes), versions go on gap-free across deletes, a call
/// that finished before another started is before it in the log, and the only failures
/// are conflicts. A tombstone at the end stops everyone with `StreamDeleted`.
#[test]
fn concurrent_appends_and_deletes_are_linearizable() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let t0 = Instant::now();
    // (start, end, position, call)
    let history: Arc<Mutex<Vec<Recorded>>> = Arc::default();
    let threads = 5;
    let barrier = Arc::new(Barrier::new(threads));
    let mut handles = Vec::new();
    for t in 0..threads {
        let (store, history, barrier) = (store.clone(), history.clone(), barrier.clone());
        handles.push(std::thread::spawn(move || {
            barrier.wait();
            let mut deleted_seen = false;
            for i in 0..60 {
                let expected = match store.stream_version("s") {
                    Ok(Some(v)) => ExpectedVersion::Exact(v),
                    Ok(None) => ExpectedVersion::NoStream,
                    Err(Error::StreamDeleted { .. }) => {
                        deleted_seen = true;
                        break;
                    }
                    Err(e) => panic!("{e}"),
                };
                let start = t0.elapsed();
                let deleting = t == 0 && i % 3 == 0;
                // Half the deletes expect nothing, so that some win against busy appenders.
                let expected = if deleting && i % 2 == 0 {
                    ExpectedVersion::Any
                } else {
                    expected
                };
                let r = if deleting {
                    store
                        .delete_stream("s", expected)
                        .map(|d| (d.position, Call::Delete { expected }))
                } else {
                    store
                        .append("s", expected, [ev(&format!("{t}-{i}"))])
                        .map(|r| {
                            (
                                r.position,
                                Call::Append {
                                    expected,
                                    first_version: r.first_version,
                                },
                            )
                        })
                };
                let end = t0.elapsed();
                match r {
                    Ok((position, call)) => {
                        history.lock().unwrap().push((start, end, position, call))
                    }
                    Err(Error::WrongExpectedVersion { .. }) => {}
                    Err(Error::StreamDeleted { .. }) => {
                        deleted_seen = true;
                        break;
                    }
                    Err(e) => panic!("not a conflict: {e}"),
                }
            }
            deleted_seen
        }));
    }
    let tombstoner = {
        let (store, history) = (store.clone(), history.clone());
        std::thread::spawn(move || {
            // Once the race has run for a while (on a busy machine too).
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                let h = history.lock().unwrap();
                let deleted = h.iter().any(|c| matches!(c.3, Call::Delete { .. }));
                if deleted && h.len() >= 40 {
                    break;
                }
                drop(h);
                std::thread::sleep(Duration::from_millis(1));
            }
            store.tombstone_stream("s", ExpectedVersion::Any).unwrap()
        })
    };
    for h in handles {
        h.join().unwrap();
    }
    let tomb = tombstoner.join().unwrap();
    let mut history = history.lock().unwrap().clone();
    history.sort_by_key(|h| h.2);
    // Replay in log order against a model of the stream.
    let (mut last, mut truncate_before): (Option<u64>, Option<u64>) = (None, None);
    let visible =
        |last: Option<u64>, tb: Option<u64>| last.filter(|&l| tb.is_none_or(|tb| l >= tb));
    let matches = |e: ExpectedVersion, v: Option<u64>| match e {
        ExpectedVersion::Any => true,
        ExpectedVersion::NoStream => v.is_none(),
        ExpectedVersion::StreamExists => v.is_some(),
        ExpectedVersion::Exact(x) => v == Some(x),
    };
    let (mut appends, mut deletes) = (0, 0);
    for (_, _, position, call) in &history {
        assert!(
            *position < tomb.position,
            "nothing succeeds after the tombstone"
        );
        match call {
            Call::Append {
                expected,
                first_version,
            } => {
                assert!(
                    matches(*expected, visible(last, truncate_before)),
                    "{call:?}"
                );
                assert_eq!(
                    *first_version,
                    last.map_or(0, |l| l + 1),
                    "gap-free versions"
                );
                last = Some(*first_version);
                appends += 1;
            }
            Call::Delete { expected } => {
                assert!(
                    matches(*expected, visible(last, truncate_before)),
                    "{call:?}"
                );
                if let Some(l) = last {
                    truncate_before = Some(l + 1);
                }
                deletes += 1;
            }
        }
    }
    assert!(
        appends > 10 && deletes > 0,
        "{appends} appends, {deletes} deletes"
    );
    // Real time: a call that returned before another started comes first in the log.
    for a in &history {
        for b in &history {
            if a.1 < b.0 {
                assert!(a.2 < b.2, "{a:?} returned before {b:?} started");
            }
        }
    }
    assert!(matches!(
        store.read_stream("s", 0),
        Err(Error::StreamDeleted { .. })
    ));
}
