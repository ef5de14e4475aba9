//! The store's public API, as a user sees it.
//!
//! Every scenario runs twice, on the real file system and on the simulated one (see
//! `backend`): `on_files::<scenario>` and `on_sim::<scenario>`.
#![allow(clippy::unwrap_used)]

use std::ops::ControlFlow;
use std::sync::Arc;

use crate::backend::{Backend, on_both_backends};
use streamlog::{
    AppendRequest, Durability, Error, EventId, EventRef, ExpectedVersion, NewEvent, Options,
    Position, RecordedEvent, Store,
};

fn ev(t: &str, data: &str) -> NewEvent {
    NewEvent::new(t.to_string(), data)
}

fn versions(events: impl Iterator<Item = streamlog::Result<RecordedEvent>>) -> Vec<u64> {
    events.map(|e| e.unwrap().version).collect()
}

fn small(disk: &impl Backend) -> Options {
    disk.options().with_segment_size_bytes(4096)
}

fn open_creates_the_directory_and_appends_read_back<B: Backend>() {
    let disk = B::new();
    let tmp = disk.tempdir();
    let dir = tmp.path().join("a/b/data");
    let store = Store::open_with(&dir, disk.options()).unwrap();
    assert!(disk.exists(&dir.join("LOCK")));
    assert!(disk.exists(&dir.join("segments/00000000000000000000.seg")));
    let r = store
        .append(
            "account-42",
            ExpectedVersion::NoStream,
            [ev("Deposited", r#"{"amount":100}"#).with_metadata("m")],
        )
        .unwrap();
    assert_eq!(
        (r.first_version, r.last_version, r.deduplicated),
        (0, 0, false)
    );
    let events: Vec<_> = store
        .read_stream("account-42", 0)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(&*e.stream, "account-42");
    assert_eq!(e.event_type, "Deposited");
    assert_eq!(e.data, br#"{"amount":100}"#);
    assert_eq!(e.metadata, b"m");
    assert_eq!(e.position, r.position);
    assert!(e.timestamp_us > 0);
}

fn versions_are_gap_free_per_stream_and_batches_are_contiguous<B: Backend>() {
    let disk = B::new();
    let tmp = disk.tempdir();
    let store = Store::open_with(
        tmp.path(),
        small(&disk).with_durability(Durability::Buffered),
    )
    .unwrap();
    let a = store
        .append(
            "s",
            ExpectedVersion::Any,
            (0..3).map(|i| ev("E", &i.to_string())),
        )
        .unwrap();
    let b = store
        .append("t", ExpectedVersion::Any, [ev("E", "x")])
        .unwrap();
    let c = store
        .append("s", ExpectedVersion::Exact(2), [ev("E", "3"), ev("E", "4")])
        .unwrap();
    assert_eq!((a.first_version, a.last_version), (0, 2));
    assert_eq!((b.first_version, b.last_version), (0, 0));
    assert_eq!((c.first_version, c.last_version), (3, 4));
    assert!(a.position < b.position && b.position < c.position);
    assert_eq!(
        versions(store.read_stream("s", 0).unwrap()),
        vec![0, 1, 2, 3, 4]
    );
    assert_eq!(versions(store.read_stream("s", 2).unwrap()), vec![2, 3, 4]);
    assert_eq!(
        versions(store.read_stream("s", 9).unwrap()),
        Vec::<u64>::new()
    );
    assert_eq!(store.stream_version("s").unwrap(), Some(4));
    assert_eq!(store.stream_version("nope").unwrap(), None);
}

fn expected_version_is_checked_for_every_variant<B: Backend>() {
    let disk = B::new();
    let tmp = disk.tempdir();
    let store = Store::open_with(tmp.path(), small(&disk)).unwrap();
    let wrong = |r: streamlog::Result<_>, want: Option<u64>| match r {
        Err(Error::WrongExpectedVersion { actual, .. }) => assert_eq!(actual, want),
        other => panic!("expected WrongExpectedVersion, got {other:?}"),
    };
    wrong(
        store.append("s", ExpectedVersion::StreamExists, [ev("E", "")]),
        None,
    );
    wrong(
        store.append("s", ExpectedVersion::Exact(0), [ev("E", "")]),
        None,
    );
    store
        .append("s", ExpectedVersion::NoStream, [ev("E", "")])
        .unwrap();
    wrong(
        store.append("s", ExpectedVersion::NoStream, [ev("E", "")]),
        Some(0),
    );
    wrong(
        store.append("s", ExpectedVersion::Exact(5), [ev("E", "")]),
        Some(0),
    );
    store
        .append("s", ExpectedVersion::StreamExists, [ev("E", "")])
        .unwrap();
    store
        .append("s", ExpectedVersion::Exact(1), [ev("E", "")])
        .unwrap();
    store
        .append("s", ExpectedVersion::Any, [ev("E", "")])
        .unwrap();
    assert_eq!(store.stream_version("s").unwrap(), Some(3));
}

fn retrying_an_append_returns_the_original_result_without_duplicating<B: Backend>() {
    let disk = B::new();
    let tmp = disk.tempdir();
    let store = Store::open_with(tmp.path(), small(&disk)).unwrap();
    let batch = vec![ev("A", "1"), ev("B", "2")];
    let first = store
        .append("s", ExpectedVersion::NoStream, batch.clone())
        .unwrap();
    store
        .append("s", ExpectedVersion::Any, [ev("C", "3")])
        .unwrap();
    // Same ids, same expected version: the original result.
    let again = store
        .append("s", ExpectedVersion::NoStream, batch.clone())
        .unwrap();
    assert!(again.deduplicated);
    assert_eq!(
        (again.first_version, again.last_version, again.position),
        (first.first_version, first.last_version, first.position)
    );
    // The last append retried with Any is recognised too.
    let last = vec![ev("D", "4")];
    let r1 = store
        .append("s", ExpectedVersion::Any, last.clone())
        .unwrap();
    let r2 = store.append("s", ExpectedVersion::Any, last).unwrap();
    assert!(r2.deduplicated && r2.first_version == r1.first_version);
    assert_eq!(
        versions(store.read_stream("s", 0).unwrap()),
        vec![0, 1, 2, 3]
    );
    // After a reopen, too.
    drop(store);
    let store = Store::open_with(tmp.path(), small(&disk)).unwrap();
    let again = store.append("s", ExpectedVersion::NoStream, batch).unwrap();
    assert!(again.deduplicated && again.first_version == 0);
    assert_eq!(store.stream_version("s").unwrap(), Some(3));
}

fn a_partly_matching_retry_is_an_idempotency_conflict<B: Backend>() {
    let disk = B::new();
    let tmp = disk.tempdir();
    let store = Store::open_with(tmp.path(), small(&disk)).unwrap();
    let a = ev("A", "1");
    let b = ev("B", "2");
    store
        .append("s", ExpectedVersion::NoStream, [a.clone(), b])
        .unwrap();
    let r = store.append("s", ExpectedVersion::NoStream, [a, ev("X", "other")]);
    assert!(matches!(r, Err(Error::IdempotencyConflict { .. })), "{r:?}");
    assert_eq!(store.stream_version("s").unwrap(), Some(1));
}

/// What README's "The model" says of ids: a retry is recognised by its ids alone, and only
/// at the place its expected version names; nothing else makes an id unique.
fn retries_are_recognised_by_ids_only_and_ids_may_repeat_elsewhere<B: Backend>() {
    let disk = B::new();
    let tmp = disk.tempdir();
    let store = Store::open_with(tmp.path(), small(&disk)).unwrap();
    let id = EventId::new();
    let original = store
        .append("s", ExpectedVersion::NoStream, [ev("A", "1").with_id(id)])
        .unwrap();
    // Same id, other type and data: taken for the original; the new contents are dropped.
    let retry = store
        .append("s", ExpectedVersion::NoStream, [ev("B", "2").with_id(id)])
        .unwrap();
    assert!(retry.deduplicated && retry.position == original.position);
    let stored: Vec<RecordedEvent> = store
        .read_stream("s", 0)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(stored.len(), 1);
    assert_eq!(
        (stored[0].event_type.as_str(), &stored[0].data[..]),
        ("A", &b"1"[..])
    );
    // The same id in another stream is another event.
    let other = store
        .append("t", ExpectedVersion::NoStream, [ev("A", "1").with_id(id)])
        .unwrap();
    assert!(!other.deduplicated);
    // And in the same stream, at a place the retry does not name (`Any` looks at the last
    // append only), it is stored again.
    store
        .append("s", ExpectedVersion::Any, [ev("C", "3")])
        .unwrap();
    let again = store
        .append("s", ExpectedVersion::Any, [ev("A", "1").with_id(id)])
        .unwrap();
    assert!(!again.deduplicated && again.first_version == 2);
    let ids: Vec<EventId> = store
        .read_stream("s", 0)
        .unwrap()
        .map(|e| e.unwrap().id)
        .collect();
    assert_eq!((ids[0], ids[2]), (id, id));
}

fn limits_are_typed_errors<B: Backend>() {
    let disk = B::new();
    let tmp = disk.tempdir();
    let opts = small(&disk)
        .with_max_event_bytes(100)
        .with_max_events_per_append(3)
        .with_max_stream_name_bytes(8);
    let store = Store::open_with(tmp.path(), opts).unwrap();
    let too_large = |r: streamlog::Result<_>, what: &str| match r {
        Err(Error::TooLarge { what: w, .. }) => assert_eq!(w, what),
        other => panic!("expected TooLarge {what}, got {other:?}"),
    };
    too_large(
        store.append("s", ExpectedVersion::Any, [ev("E", &"x".repeat(101))]),
        "max_event_bytes",
    );
    too_large(
        store.append("s", ExpectedVersion::Any, (0..4).map(|_| ev("E", ""))),
        "max_events_per_append",
    );
    too_large(
        store.append("nine-char", ExpectedVersion::Any, [ev("E", "")]),
        "max_stream_name_bytes",
    );
    too_large(
        store.append("s", ExpectedVersion::Any, [ev(&"t".repeat(300), "")]),
        "max_event_type_bytes",
    );
    let invalid =
        |r: streamlog::Result<_>| assert!(matches!(r, Err(Error::InvalidArgument(_))), "{r:?}");
    invalid(store.append("", ExpectedVersion::Any, [ev("E", "")]));
    invalid(store.append("$all", ExpectedVersion::Any, [ev("E", "")]));
    invalid(store.append("s", ExpectedVersion::Any, [ev("", "")]));
    invalid(store.append("s", ExpectedVersion::Any, Vec::new()));
    // A frame larger than a segment cannot be configured.
    let bad = Store::open_with(
        disk.tempdir().path(),
        disk.options()
            .with_segment_size_bytes(4096)
            .with_max_frame_bytes(8192),
    );
    assert!(matches!(bad, Err(Error::InvalidArgument(_))));
    assert_eq!(store.info().unwrap().events, 0);
}

fn a_second_open_of_the_same_directory_is_locked<B: Backend>() {
    let disk = B::new();
    let tmp = disk.tempdir();
    let store = Store::open_with(tmp.path(), disk.options()).unwrap();
    assert!(matches!(
        Store::open_with(tmp.path(), disk.options()),
        Err(Error::Locked { .. })
    ));
    // A read-only open is not locked out: it follows the live writer.
    let reader = Store::open_with(tmp.path(), disk.options().with_read_only(true)).unwrap();
    assert!(matches!(
        reader.append("s", ExpectedVersion::Any, [ev("T", "")]),
        Err(Error::ReadOnly)
    ));
    drop(reader);
    drop(store);
    Store::open_with(tmp.path(), disk.options()).unwrap();
}

fn a_read_only_open_without_a_lock_file_reads_and_creates_none<B: Backend>() {
    let disk = B::new();
    let tmp = disk.tempdir();
    let store = Store::open_with(tmp.path(), disk.options()).unwrap();
    store
        .append("s", ExpectedVersion::NoStream, [ev("T", "x")])
        .unwrap();
    store.close().unwrap();
    let lock = tmp.path().join(streamlog::LOCK_FILE);
    disk.remove(&lock);
    let reader = Store::open_with(tmp.path(), disk.options().with_read_only(true)).unwrap();
    assert_eq!(versions(reader.read_stream("s", 0).unwrap()), [0]);
    assert!(!disk.exists(&lock));
    drop(reader);
    assert!(!disk.exists(&lock));
    // A writer creates it again; a reader beside it follows it.
    let writer = Store::open_with(tmp.path(), disk.options()).unwrap();
    assert!(disk.exists(&lock));
    let reader = Store::open_with(tmp.path(), disk.options().with_read_only(true)).unwrap();
    assert_eq!(versions(reader.read_stream("s", 0).unwrap()), [0]);
    writer.close().unwrap();
}

fn rollover_spreads_the_log_over_segments_and_reads_cross_them<B: Backend>() {
    let disk = B::new();
    let tmp = disk.tempdir();
    let store = Store::open_with(
        tmp.path(),
        small(&disk).with_durability(Durability::Buffered),
    )
    .unwrap();
    for i in 0..200u32 {
        let stream = format!("s-{}", i % 7);
        store
            .append(
                &stream,
                ExpectedVersion::Any,
                [ev("E", &"p".repeat(100 + i as usize))],
            )
            .unwrap();
    }
    let info = store.info().unwrap();
    assert!(info.segments > 5, "{info:?}");
    assert_eq!(info.events, 200);
    assert_eq!(info.streams, 7);
    let all: Vec<_> = store
        .read_all(Position::START)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(all.len(), 200);
    assert!(all.windows(2).all(|w| w[0].position < w[1].position));
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e.data.len(), 100 + i);
    }
    // Backward across segments.
    let back = versions(store.read_stream_backward("s-3", None).unwrap());
    let expected: Vec<u64> = (0..store.stream_version("s-3").unwrap().unwrap() + 1)
        .rev()
        .collect();
    assert_eq!(back, expected);
    assert_eq!(
        versions(store.read_stream_backward("s-3", Some(4)).unwrap()),
        vec![4, 3, 2, 1, 0]
    );
    // Every segment file is named by its base position and they line up.
    let names = disk.list(&tmp.path().join("segments"));
    let mut expect_base = 0u64;
    for n in &names {
        assert_eq!(n, &format!("{expect_base:020}.seg"));
        expect_base += disk.len(&tmp.path().join("segments").join(n));
    }
    drop(store);
    let store = Store::open_with(tmp.path(), small(&disk)).unwrap();
    assert_eq!(store.read_all(Position::START).unwrap().count(), 200);
    assert!(store.recovery_report().clean_shutdown);
    assert!(store.recovery_report().is_clean());
}

fn read_all_resumes_from_an_append_position_and_rejects_other_positions<B: Backend>() {
    let disk = B::new();
    let tmp = disk.tempdir();
    let store = Store::open_with(tmp.path(), small(&disk)).unwrap();
    let mut positions = Vec::new();
    for i in 0..30 {
        positions.push(
            store
                .append("s", ExpectedVersion::Any, [ev("E", &i.to_string())])
                .unwrap()
                .position,
        );
    }
    let from = positions[17];
    let rest: Vec<_> = store
        .read_all(from)
        .unwrap()
        .map(|e| e.unwrap().version)
        .collect();
    assert_eq!(rest, (17..30).collect::<Vec<u64>>());
    assert!(matches!(
        store.read_all(Position(from.0 + 1)),
        Err(Error::InvalidArgument(_))
    ));
    // Past the end: nothing.
    assert_eq!(store.read_all(Position(u64::MAX)).unwrap().count(), 0);
    // next_position continues where a reader stopped.
    let mut it = store.read_all(Position::START).unwrap();
    for _ in 0..5 {
        it.next().unwrap().unwrap();
    }
    let resumed: Vec<_> = store
        .read_all(it.next_position())
        .unwrap()
        .map(|e| e.unwrap().version)
        .collect();
    assert_eq!(resumed, (5..30).collect::<Vec<u64>>());
}

fn concurrent_sync_appenders_share_commits_and_lose_nothing<B: Backend>() {
    let disk = B::new();
    let tmp = disk.tempdir();
    let store = Arc::new(Store::open_with(tmp.path(), disk.options()).unwrap());
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for i in 0..25 {
                    let r = store
                        .append(
                            &format!("w-{t}"),
                            ExpectedVersion::Any,
                            [ev("E", &format!("{t}/{i}"))],
                        )
                        .unwrap();
                    assert_eq!(r.first_version, i);
                    // Acknowledged under Sync: durable, hence visible.
                    assert!(store.info().unwrap().durable.0 > r.position.0);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let store = Arc::into_inner(store).unwrap();
    store.close().unwrap();
    let store = Store::open_with(tmp.path(), disk.options()).unwrap();
    for t in 0..16 {
        let data: Vec<_> = store
            .read_stream(&format!("w-{t}"), 0)
            .unwrap()
            .map(|e| String::from_utf8(e.unwrap().data).unwrap())
            .collect();
        assert_eq!(
            data,
            (0..25).map(|i| format!("{t}/{i}")).collect::<Vec<_>>()
        );
    }
}

fn readers_see_only_committed_appends_and_never_block<B: Backend>() {
    let disk = B::new();
    let tmp = disk.tempdir();
    let store = Arc::new(
        Store::open_with(
            tmp.path(),
            small(&disk).with_durability(Durability::Buffered),
        )
        .unwrap(),
    );
    let writer = {
        let store = Arc::clone(&store);
        std::thread::spawn(move || {
            for i in 0..500u64 {
                let expected = match i {
                    0 => ExpectedVersion::NoStream,
                    n => ExpectedVersion::Exact(n - 1),
                };
                store
                    .append("s", expected, [ev("E", &i.to_string())])
                    .unwrap();
            }
        })
    };
    // Whatever a reader sees is a gap-free prefix of whole appends.
    for _ in 0..50 {
        let seen = versions(store.read_stream("s", 0).unwrap());
        assert_eq!(seen, (0..seen.len() as u64).collect::<Vec<_>>());
        let all = store.read_all(Position::START).unwrap().count();
        assert!(all >= seen.len());
    }
    writer.join().unwrap();
    assert_eq!(store.read_stream("s", 0).unwrap().count(), 500);
}

fn periodic_durability_syncs_in_the_background<B: Backend>() {
    let disk = B::new();
    let tmp = disk.tempdir();
    let store = Store::open_with(
        tmp.path(),
        small(&disk).with_durability(Durability::Periodic(std::time::Duration::from_millis(10))),
    )
    .unwrap();
    let r = store
        .append("s", ExpectedVersion::Any, [ev("E", "x")])
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while store.info().unwrap().durable.0 <= r.position.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "background sync never ran"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // Acknowledged before sync: readable at once.
    assert_eq!(store.read_stream("s", 0).unwrap().count(), 1);
}

fn read_only_open_reads_but_refuses_writes<B: Backend>() {
    let disk = B::new();
    let tmp = disk.tempdir();
    {
        let store = Store::open_with(tmp.path(), disk.options()).unwrap();
        store
            .append("s", ExpectedVersion::Any, [ev("E", "x")])
            .unwrap();
    }
    let ro = Store::open_with(tmp.path(), disk.options().with_read_only(true)).unwrap();
    let ro2 = Store::open_with(tmp.path(), disk.options().with_read_only(true)).unwrap();
    assert_eq!(ro.read_stream("s", 0).unwrap().count(), 1);
    assert_eq!(ro2.read_all(Position::START).unwrap().count(), 1);
    assert!(matches!(
        ro.append("s", ExpectedVersion::Any, [ev("E", "y")]),
        Err(Error::ReadOnly)
    ));
    let missing = Store::open_with(
        tmp.path().join("nothing"),
        disk.options().with_read_only(true),
    );
    assert!(matches!(missing, Err(Error::InvalidArgument(_))));
}

fn verify_of_a_healthy_store_finds_no_damage<B: Backend>() {
    let disk = B::new();
    let tmp = disk.tempdir();
    let store = Store::open_with(tmp.path(), small(&disk)).unwrap();
    for i in 0..50 {
        store
            .append("s", ExpectedVersion::Any, [ev("E", &"v".repeat(i * 3))])
            .unwrap();
    }
    let mut progressed = 0;
    let report = store.verify(|n| progressed += n).unwrap();
    assert_eq!(report.events, 50);
    assert_eq!(report.frames, 50);
    assert!(report.damage.is_empty());
    assert!(progressed > 0);
}

fn explicit_ids_and_timestamps_are_stored<B: Backend>() {
    let disk = B::new();
    let tmp = disk.tempdir();
    let store = Store::open_with(tmp.path(), disk.options()).unwrap();
    let id: EventId = "0191e2b4-8f9a-7c3d-9e4f-0123456789ab".parse().unwrap();
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
    store
        .append(
            "s",
            ExpectedVersion::Any,
            [ev("E", "x").with_id(id).with_timestamp(t)],
        )
        .unwrap();
    let e = store.read_stream("s", 0).unwrap().next().unwrap().unwrap();
    assert_eq!(e.id, id);
    assert_eq!(e.timestamp(), t);
}

fn reopening_without_appending_does_not_grow_the_log<B: Backend>() {
    let disk = B::new();
    let tmp = disk.tempdir();
    {
        let store = Store::open_with(tmp.path(), disk.options()).unwrap();
        store
            .append("s", ExpectedVersion::Any, [ev("E", "x")])
            .unwrap();
    }
    let seg = tmp.path().join("segments/00000000000000000000.seg");
    let len = disk.len(&seg);
    for _ in 0..3 {
        let store = Store::open_with(tmp.path(), disk.options()).unwrap();
        assert!(store.recovery_report().clean_shutdown);
        let r = store.append("s", ExpectedVersion::Exact(5), [ev("E", "y")]);
        assert!(matches!(r, Err(Error::WrongExpectedVersion { .. })));
    }
    assert_eq!(disk.len(&seg), len);
}

fn borrowed_events_append_like_owned_ones_and_retry_idempotently<B: Backend>() {
    let disk = B::new();
    let tmp = disk.tempdir();
    let store = Store::open_with(tmp.path(), small(&disk)).unwrap();
    let payload = b"{\"amount\":7}";
    let refs = [
        EventRef::new("Deposited", payload),
        EventRef {
            metadata: b"m",
            ..EventRef::new("Withdrawn", b"x")
        },
    ];
    let r = store
        .append_refs("s", ExpectedVersion::NoStream, &refs)
        .unwrap();
    assert_eq!(
        (r.first_version, r.last_version, r.deduplicated),
        (0, 1, false)
    );
    let again = store
        .append_refs("s", ExpectedVersion::NoStream, &refs)
        .unwrap();
    assert!(again.deduplicated && again.position == r.position);
    let owned = store
        .append("s", ExpectedVersion::Exact(1), [ev("E", "owned")])
        .unwrap();
    assert_eq!(owned.first_version, 2);
    let got: Vec<_> = store
        .read_stream("s", 0)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(got[0].data, payload);
    assert_eq!(
        (got[1].event_type.as_str(), got[1].metadata.as_slice()),
        ("Withdrawn", &b"m"[..])
    );
    assert_eq!(got[0].id, refs[0].id);
    assert!(matches!(
        store.append_refs("s", ExpectedVersion::Any, &[]),
        Err(Error::InvalidArgument(_))
    ));
}

fn borrowed_readers_hand_over_what_the_iterators_yield_and_stop_on_break<B: Backend>() {
    let disk = B::new();
    let tmp = disk.tempdir();
    // Small segments: sealed (mapped) segments and the active one are both read.
    let store = Store::open_with(
        tmp.path(),
        small(&disk)
            .with_durability(Durability::Buffered)
            .with_frame_cache_bytes(1024),
    )
    .unwrap();
    for i in 0..120u32 {
        let stream = format!("s-{}", i % 3);
        let batch: Vec<_> = (0..1 + i % 4)
            .map(|j| ev("E", &format!("{i}.{j}")))
            .collect();
        store.append(&stream, ExpectedVersion::Any, batch).unwrap();
    }
    assert!(store.info().unwrap().segments > 3);
    let owned = |it: &mut dyn Iterator<Item = streamlog::Result<RecordedEvent>>| {
        it.map(Result::unwrap).collect::<Vec<_>>()
    };
    for _pass in 0..2 {
        // Twice: the second pass reads through the frame cache.
        for s in ["s-0", "s-1", "s-2"] {
            let expect = owned(&mut store.read_stream(s, 5).unwrap());
            let mut got = Vec::new();
            let n = store
                .read_stream_with(s, 5, |e| {
                    got.push(e.to_recorded());
                    ControlFlow::Continue(())
                })
                .unwrap();
            assert_eq!((n, &got), (expect.len() as u64, &expect));
            let expect = owned(&mut store.read_stream_backward(s, Some(30)).unwrap());
            let mut got = Vec::new();
            store
                .read_stream_backward(s, Some(30))
                .unwrap()
                .for_each_view(|e| {
                    got.push(e.to_recorded());
                    ControlFlow::Continue(())
                })
                .unwrap();
            assert_eq!(got, expect);
        }
    }
    let expect = owned(&mut store.read_all(Position::START).unwrap());
    let mut got = Vec::new();
    store
        .read_all_with(Position::START, |e| {
            got.push(e.to_recorded());
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(got, expect);

    // A break stops at once, and an iterator half read hands over the rest.
    let mut seen = 0;
    let n = store
        .read_all_with(Position::START, |_| {
            seen += 1;
            if seen == 7 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
    assert_eq!((n, seen), (7, 7));
    let mut all = store.read_all(Position::START).unwrap();
    let first: Vec<_> = all.by_ref().take(3).map(Result::unwrap).collect();
    let mut rest = Vec::new();
    all.for_each_view(|e| {
        rest.push(e.to_recorded());
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!([first, rest].concat(), expect);
}

fn a_reader_broken_off_inside_an_append_goes_on_with_the_next_event<B: Backend>() {
    let disk = B::new();
    let tmp = disk.tempdir();
    let store = Store::open_with(tmp.path(), disk.options()).unwrap();
    let batch = |n: usize| (0..n).map(|i| ev("T", &i.to_string())).collect::<Vec<_>>();
    store.append("s", ExpectedVersion::Any, batch(5)).unwrap();
    store.append("s", ExpectedVersion::Any, batch(5)).unwrap();
    let take = |n: usize| {
        let mut seen = Vec::new();
        move |e: streamlog::EventView<'_>| {
            seen.push(e.version);
            if seen.len() == n {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        }
    };
    // Forward: break at version 2 (inside the first append), then read on.
    let mut r = store.read_stream("s", 0).unwrap();
    assert_eq!(r.for_each_view(take(3)).unwrap(), 3);
    assert_eq!(versions(r.by_ref().take(4)), vec![3, 4, 5, 6]);
    let mut rest = Vec::new();
    r.for_each_view(|e| {
        rest.push(e.version);
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(rest, vec![7, 8, 9]);
    // Backward: break at version 7 (inside the second append).
    let mut r = store.read_stream_backward("s", None).unwrap();
    assert_eq!(r.for_each_view(take(3)).unwrap(), 3);
    assert_eq!(versions(r), vec![6, 5, 4, 3, 2, 1, 0]);
    // $all: break at the third event, the rest of its append comes next.
    let mut all = store.read_all(Position::START).unwrap();
    assert_eq!(all.for_each_view(take(3)).unwrap(), 3);
    assert_eq!(versions(all), vec![3, 4, 5, 6, 7, 8, 9]);
}

// Every scenario above runs on both backends: none is about the real file system alone.
// The lock scenarios are between stores of one process, which the simulator models too;
// flock between processes is tested through the CLI (tests/cli.rs).
/// `append_many`: each append checked and applied in order as if alone, the ones that
/// fail not stopping the others, and one commit for all of them.
fn append_many_applies_each_append_in_order_with_one_commit<B: Backend>() {
    let disk = B::new();
    let tmp = disk.tempdir();
    let options = small(&disk).with_background_index_maintenance(false);
    let store = Store::open_with(tmp.path(), options.clone()).unwrap();
    store
        .tombstone_stream("gone", ExpectedVersion::Any)
        .unwrap();
    let first = [EventRef::new("A", b"1")];
    let second = [EventRef::new("B", b"2")];
    let other = [EventRef::new("C", b"3")];
    let syncs = store.sync_stats().count;
    let results = store
        .append_many(&[
            AppendRequest {
                stream: "s",
                expected: ExpectedVersion::NoStream,
                events: &first,
            },
            // Sees the append before it in the same call.
            AppendRequest {
                stream: "s",
                expected: ExpectedVersion::Exact(0),
                events: &second,
            },
            AppendRequest {
                stream: "t",
                expected: ExpectedVersion::Exact(5),
                events: &other,
            },
            AppendRequest {
                stream: "$system",
                expected: ExpectedVersion::Any,
                events: &other,
            },
            AppendRequest {
                stream: "t",
                expected: ExpectedVersion::Any,
                events: &[],
            },
            AppendRequest {
                stream: "gone",
                expected: ExpectedVersion::Any,
                events: &other,
            },
            // A retry of the first: recognised, not written again.
            AppendRequest {
                stream: "s",
                expected: ExpectedVersion::NoStream,
                events: &first,
            },
            AppendRequest {
                stream: "t",
                expected: ExpectedVersion::NoStream,
                events: &other,
            },
        ])
        .unwrap();
    assert_eq!(results.len(), 8);
    let ok = |i: usize| results[i].as_ref().unwrap();
    assert_eq!((ok(0).first_version, ok(0).deduplicated), (0, false));
    assert_eq!(ok(1).first_version, 1);
    assert!(
        matches!(
            &results[2],
            Err(Error::WrongExpectedVersion { actual: None, .. })
        ),
        "{:?}",
        results[2]
    );
    assert!(
        matches!(&results[3], Err(Error::InvalidArgument(_))),
        "{:?}",
        results[3]
    );
    assert!(
        matches!(&results[4], Err(Error::InvalidArgument(_))),
        "{:?}",
        results[4]
    );
    assert!(
        matches!(&results[5], Err(Error::StreamDeleted { .. })),
        "{:?}",
        results[5]
    );
    assert!(ok(6).deduplicated && ok(6).position == ok(0).position);
    assert_eq!(ok(7).first_version, 0);
    // Acknowledged under Sync: durable, with one sync for the whole call.
    assert_eq!(store.sync_stats().count, syncs + 1);
    assert!(store.info().unwrap().durable.0 > ok(7).position.0);
    assert!(store.append_many(&[]).unwrap().is_empty());
    drop(store);

    let store = Store::open_with(tmp.path(), options.clone()).unwrap();
    assert_eq!(versions(store.read_stream("s", 0).unwrap()), vec![0, 1]);
    assert_eq!(versions(store.read_stream("t", 0).unwrap()), vec![0]);
    drop(store);
    let store = Store::open_with(tmp.path(), options.with_read_only(true)).unwrap();
    let r = store.append_many(&[AppendRequest {
        stream: "s",
        expected: ExpectedVersion::Any,
        events: &first,
    }]);
    assert!(matches!(r, Err(Error::ReadOnly)), "{r:?}");
}

on_both_backends! {
    open_creates_the_directory_and_appends_read_back,
    versions_are_gap_free_per_stream_and_batches_are_contiguous,
    expected_version_is_checked_for_every_variant,
    retrying_an_append_returns_the_original_result_without_duplicating,
    a_partly_matching_retry_is_an_idempotency_conflict,
    retries_are_recognised_by_ids_only_and_ids_may_repeat_elsewhere,
    limits_are_typed_errors,
    a_second_open_of_the_same_directory_is_locked,
    a_read_only_open_without_a_lock_file_reads_and_creates_none,
    rollover_spreads_the_log_over_segments_and_reads_cross_them,
    read_all_resumes_from_an_append_position_and_rejects_other_positions,
    concurrent_sync_appenders_share_commits_and_lose_nothing,
    readers_see_only_committed_appends_and_never_block,
    periodic_durability_syncs_in_the_background,
    read_only_open_reads_but_refuses_writes,
    verify_of_a_healthy_store_finds_no_damage,
    explicit_ids_and_timestamps_are_stored,
    reopening_without_appending_does_not_grow_the_log,
    borrowed_events_append_like_owned_ones_and_retry_idempotently,
    borrowed_readers_hand_over_what_the_iterators_yield_and_stop_on_break,
    a_reader_broken_off_inside_an_append_goes_on_with_the_next_event,
    append_many_applies_each_append_in_order_with_one_commit,
}

/// Forward from a version past the stream's end, `u64::MAX` included, reads nothing (the
/// index takes `u64::MAX` for "the last append"); backward from there starts at the last
/// event. An empty stream name is refused by `stream_version` as by every other call.
#[test]
fn reading_forward_from_past_the_end_reads_nothing_even_from_the_largest_version() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(
        dir.path(),
        Options::default().with_durability(Durability::Buffered),
    )
    .unwrap();
    for i in 0..6 {
        store
            .append(
                "b",
                ExpectedVersion::Any,
                [NewEvent::new("E", format!("{i}"))],
            )
            .unwrap();
    }
    let forward = |from: u64| -> Vec<u64> {
        store
            .read_stream("b", from)
            .unwrap()
            .map(|e| e.unwrap().version)
            .collect()
    };
    assert_eq!(forward(5), vec![5]);
    for from in [6, 1000, u64::MAX - 1, u64::MAX] {
        assert_eq!(forward(from), Vec::<u64>::new(), "from {from}");
    }
    let backward: Vec<u64> = store
        .read_stream_backward("b", Some(u64::MAX))
        .unwrap()
        .map(|e| e.unwrap().version)
        .collect();
    assert_eq!(backward, vec![5, 4, 3, 2, 1, 0]);
    assert!(matches!(
        store.stream_version(""),
        Err(Error::InvalidArgument(_))
    ));
}
