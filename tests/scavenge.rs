//! Scavenge and erasure: space comes back, every surviving event keeps its position, reads,
//! resume tokens and `verify` stay right, across reopen; an erased stream leaves no byte of
//! its data, metadata or name in any file of the store.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use streamlog::{
    Error, ExpectedVersion, NewEvent, Options, Position, RecordedEvent, ResumeToken,
    ScavengeOptions, Store, StreamMetadata,
};

fn options() -> Options {
    // Small segments: a scavenge has several sealed segments to rewrite.
    Options::default().with_segment_size_bytes(64 * 1024)
}

fn all(store: &Store) -> Vec<RecordedEvent> {
    store
        .read_all(Position::START)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn stream(store: &Store, s: &str) -> Vec<RecordedEvent> {
    store
        .read_stream(s, 0)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn key(e: &RecordedEvent) -> (String, u64, u64, u32, Vec<u8>) {
    (
        e.stream.to_string(),
        e.version,
        e.position.0,
        e.append_index,
        e.data.clone(),
    )
}

fn log_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir.join("segments"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

/// A store of orders and customers: customer-7 is deleted, customer-8 has max_count 2,
/// customer-9 is tombstoned.
fn populate(store: &Store) {
    for i in 0..600u64 {
        let s = format!("customer-{}", i % 10);
        let events: Vec<NewEvent> = (0..1 + i % 3)
            .map(|j| {
                NewEvent::new(
                    "OrderPlaced",
                    format!(
                        "{{\"order\":{i},\"line\":{j},\"note\":\"{}\"}}",
                        "x".repeat(40)
                    ),
                )
            })
            .collect();
        store.append(&s, ExpectedVersion::Any, events).unwrap();
    }
    store
        .delete_stream("customer-7", ExpectedVersion::Any)
        .unwrap();
    store
        .set_stream_metadata(
            "customer-8",
            ExpectedVersion::Any,
            &StreamMetadata::new().with_max_count(2),
        )
        .unwrap();
    store
        .tombstone_stream("customer-9", ExpectedVersion::Any)
        .unwrap();
}

#[test]
fn scavenge_keeps_every_live_event_at_its_position_and_gives_space_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let store = Store::open_with(&dir, options()).unwrap();
    populate(&store);
    let before_all: Vec<_> = all(&store).iter().map(key).collect();
    let before_streams: Vec<Vec<_>> = (0..9)
        .map(|i| {
            stream(&store, &format!("customer-{i}"))
                .iter()
                .map(key)
                .collect()
        })
        .collect();
    let reclaimable = store.reclaimable().unwrap();
    assert!(reclaimable.events_removed > 0);
    let bytes_before = log_bytes(&dir);

    let report = store.scavenge(&ScavengeOptions::default()).unwrap();
    assert!(report.segments_rewritten > 0, "{report:?}");
    assert!(report.bytes_after < report.bytes_before, "{report:?}");
    assert_eq!(report.events_removed, reclaimable.events_removed);
    assert!(log_bytes(&dir) < bytes_before);

    let check = |store: &Store| {
        assert_eq!(all(store).iter().map(key).collect::<Vec<_>>(), before_all);
        for (i, before) in before_streams.iter().enumerate() {
            let s = format!("customer-{i}");
            assert_eq!(
                &stream(store, &s).iter().map(key).collect::<Vec<_>>(),
                before,
                "{s}"
            );
        }
        assert!(matches!(
            store.read_stream("customer-9", 0),
            Err(Error::StreamDeleted { .. })
        ));
        let v = store.verify(|_| {}).unwrap();
        assert!(v.is_clean(), "{v:?}");
        // Resuming inside the log from any event's token gives exactly what follows.
        let events = all(store);
        for (n, e) in events.iter().enumerate().step_by(97) {
            let rest: Vec<_> = store
                .read_all(e.resume_token())
                .unwrap()
                .map(|r| key(&r.unwrap()))
                .collect();
            assert_eq!(rest, events[n + 1..].iter().map(key).collect::<Vec<_>>());
        }
    };
    check(&store);
    assert_eq!(
        store.reclaimable().unwrap().events_removed,
        0,
        "a second look finds nothing more to remove"
    );
    // Appends go on after it, versions continue.
    let r = store
        .append(
            "customer-7",
            ExpectedVersion::NoStream,
            [NewEvent::new("Back", "{}")],
        )
        .unwrap();
    assert!(r.first_version > 0);
    drop(store);
    let store = Store::open_with(&dir, options()).unwrap();
    let after_reopen = all(&store);
    assert_eq!(after_reopen.last().unwrap().stream.as_ref(), "customer-7");
    let v = store.verify(|_| {}).unwrap();
    assert!(v.is_clean(), "{v:?}");
    // A second scavenge over rewritten segments is a no-op for them and keeps them right.
    store.scavenge(&ScavengeOptions::default()).unwrap();
    assert_eq!(all(&store).len(), after_reopen.len());
    let v = store.verify(|_| {}).unwrap();
    assert!(v.is_clean(), "{v:?}");
}

#[test]
fn lifting_a_rule_after_a_scavenge_does_not_bring_back_removed_events_or_gaps() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let store = Store::open_with(&dir, options()).unwrap();
    for i in 0..100u64 {
        store
            .append(
                "s",
                ExpectedVersion::Any,
                [NewEvent::new("E", format!("{i}"))],
            )
            .unwrap();
        store
            .append(
                "other",
                ExpectedVersion::Any,
                [NewEvent::new("E", format!("{i}"))],
            )
            .unwrap();
    }
    store
        .set_stream_metadata(
            "s",
            ExpectedVersion::Any,
            &StreamMetadata::new().with_max_count(10),
        )
        .unwrap();
    store.scavenge(&ScavengeOptions::default()).unwrap();
    store
        .set_stream_metadata("s", ExpectedVersion::Any, &StreamMetadata::new())
        .unwrap();
    let versions: Vec<u64> = stream(&store, "s").iter().map(|e| e.version).collect();
    assert_eq!(versions, (90..100).collect::<Vec<_>>());
    drop(store);
    let store = Store::open_with(&dir, options()).unwrap();
    let versions: Vec<u64> = stream(&store, "s").iter().map(|e| e.version).collect();
    assert_eq!(versions, (90..100).collect::<Vec<_>>());
    assert_eq!(stream(&store, "other").len(), 100);
}

/// Every file under `dir`, read whole.
fn files(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        if entry.file_type().unwrap().is_dir() {
            out.extend(files(&path));
        } else {
            out.push((path.clone(), std::fs::read(&path).unwrap()));
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn an_erased_stream_leaves_no_byte_of_its_name_data_or_metadata_in_any_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let name = "customer-ZQXJ-4711";
    let secret = b"jane.doe@example.org";
    let meta = b"GDPR-subject-ZQXJ";
    {
        let store = Store::open_with(&dir, options()).unwrap();
        for i in 0..300u64 {
            store
                .append(
                    "orders",
                    ExpectedVersion::Any,
                    [NewEvent::new("Placed", format!("{{\"n\":{i}}}"))],
                )
                .unwrap();
            if i % 3 == 0 {
                store
                    .append(
                        name,
                        ExpectedVersion::Any,
                        [NewEvent::new(
                            "EmailChanged",
                            format!("{{\"email\":\"{}\"}}", String::from_utf8_lossy(secret)),
                        )
                        .with_metadata(meta)],
                    )
                    .unwrap();
            }
        }
        store
            .set_stream_metadata(
                name,
                ExpectedVersion::Any,
                &StreamMetadata::new()
                    .with_custom(format!("{{\"tag\":\"{}\"}}", String::from_utf8_lossy(meta))),
            )
            .unwrap();
        store.save_snapshot(name, 99, "profile-v1", secret).unwrap();
        store
            .save_snapshot("orders", 10, "count-v1", b"11")
            .unwrap();
        store.close().unwrap();
    }
    let store = Store::open_with(&dir, options()).unwrap();
    let found = |needle: &[u8]| {
        files(&dir)
            .into_iter()
            .filter(|(_, bytes)| contains(bytes, needle))
            .map(|(p, _)| p)
            .collect::<Vec<_>>()
    };
    assert!(
        !found(name.as_bytes()).is_empty(),
        "the test must see the name before"
    );
    assert!(!found(secret).is_empty());
    let report = store.erase_stream(name, ExpectedVersion::Any).unwrap();
    assert!(report.events_removed >= 100, "{report:?}");
    assert_eq!(report.snapshots_dropped, 1, "{report:?}");
    for needle in [name.as_bytes(), secret, meta] {
        assert_eq!(
            found(needle),
            Vec::<std::path::PathBuf>::new(),
            "{}",
            String::from_utf8_lossy(needle)
        );
    }
    assert!(matches!(
        store.append(name, ExpectedVersion::Any, [NewEvent::new("Again", "{}")]),
        Err(Error::StreamDeleted { .. })
    ));
    assert!(matches!(
        store.read_stream(name, 0),
        Err(Error::StreamDeleted { .. })
    ));
    assert_eq!(stream(&store, "orders").len(), 300);
    assert!(store.latest_snapshot("orders").unwrap().is_some());
    let v = store.verify(|_| {}).unwrap();
    assert!(v.is_clean(), "{v:?}");
    store.close().unwrap();
    // After reopening: still erased, still clean, still no trace.
    let store = Store::open_with(&dir, options()).unwrap();
    assert!(matches!(
        store.append(name, ExpectedVersion::Any, [NewEvent::new("Again", "{}")]),
        Err(Error::StreamDeleted { .. })
    ));
    assert_eq!(
        all(&store)
            .iter()
            .filter(|e| !e.stream.starts_with('$'))
            .count(),
        300
    );
    let v = store.verify(|_| {}).unwrap();
    assert!(v.is_clean(), "{v:?}");
    store.close().unwrap();
    for needle in [name.as_bytes(), secret, meta] {
        assert_eq!(found(needle), Vec::<std::path::PathBuf>::new());
    }
}

#[test]
fn a_checkpoint_at_a_removed_event_resumes_at_the_next_surviving_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let store = Store::open_with(&dir, options()).unwrap();
    let mut tokens = Vec::new();
    for i in 0..50u64 {
        let r = store
            .append(
                "gone",
                ExpectedVersion::Any,
                [NewEvent::new("E", format!("{i}"))],
            )
            .unwrap();
        tokens.push(ResumeToken::after(r.position, 0));
        store
            .append(
                "kept",
                ExpectedVersion::Any,
                [NewEvent::new("E", format!("{i}"))],
            )
            .unwrap();
    }
    store
        .tombstone_stream("gone", ExpectedVersion::Any)
        .unwrap();
    store.scavenge(&ScavengeOptions::default()).unwrap();
    for (i, t) in tokens.iter().enumerate() {
        let rest: Vec<u64> = store
            .read_all(*t)
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.stream.as_ref() == "kept")
            .map(|e| e.version)
            .collect();
        assert_eq!(rest, (i as u64..50).collect::<Vec<_>>());
    }
}

#[test]
fn compressing_all_covers_the_active_segment_and_appends_go_on_after_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    // One large segment: everything written is in the active segment.
    let store = Store::open_with(&dir, Options::default()).unwrap();
    for i in 0..300u64 {
        let data = format!("{{\"order\":{i},\"note\":\"{}\"}}", "y".repeat(60));
        store
            .append(
                &format!("order-{}", i % 7),
                ExpectedVersion::Any,
                [NewEvent::new("OrderPlaced", data)],
            )
            .unwrap();
    }
    let before = all(&store);
    // Without compress_all nothing is dead, so nothing is sealed or rewritten.
    let r = store.scavenge(&ScavengeOptions::default()).unwrap();
    assert_eq!(r.segments_rewritten, 0, "{r:?}");
    let r = store
        .scavenge(&ScavengeOptions::default().with_compress_all(true))
        .unwrap();
    assert_eq!(r.segments_rewritten, 1, "{r:?}");
    assert!(r.bytes_after < r.bytes_before, "{r:?}");
    let first = std::fs::read(
        dir.join("segments")
            .join(streamlog::segment::segment_file_name(0)),
    )
    .unwrap();
    assert!(
        footer(&first).dictionary_len > 0,
        "the segment is compressed"
    );
    assert_eq!(first.len() as u64, r.bytes_after);
    // Nothing appended since: nothing more to seal or rewrite.
    let segments = std::fs::read_dir(dir.join("segments")).unwrap().count();
    let r = store
        .scavenge(&ScavengeOptions::default().with_compress_all(true))
        .unwrap();
    assert_eq!(r.segments_rewritten, 0, "{r:?}");
    assert_eq!(
        std::fs::read_dir(dir.join("segments")).unwrap().count(),
        segments
    );
    let keys = |v: &[RecordedEvent]| v.iter().map(key).collect::<Vec<_>>();
    assert_eq!(keys(&all(&store)), keys(&before));
    // Appends go on in the next segment; a second pass has nothing new to compress but
    // the few events appended since.
    store
        .append(
            "order-1",
            ExpectedVersion::Exact(42),
            [NewEvent::new("T", "{}")],
        )
        .unwrap();
    let r = store
        .scavenge(&ScavengeOptions::default().with_compress_all(true))
        .unwrap();
    assert_eq!(r.segments_rewritten, 1, "{r:?}");
    store.close().unwrap();
    let store = Store::open_with(&dir, Options::default()).unwrap();
    assert_eq!(all(&store).len(), before.len() + 1);
    assert_eq!(stream(&store, "order-1").len(), 44);
    let v = store.verify(|_| {}).unwrap();
    assert_eq!(v.corruption().count(), 0, "{v:?}");
}

/// The footer of the rewritten segment file `bytes` (based at 0).
fn footer(bytes: &[u8]) -> streamlog::format::compact::Footer {
    use streamlog::format::compact::{FOOTER_LEN, decode_footer};
    let version = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
    decode_footer(
        &bytes[bytes.len() - FOOTER_LEN..],
        0,
        bytes.len() as u64,
        version,
    )
    .unwrap()
}

/// A store whose first segment was rewritten (compressed) by a scavenge; its events
/// before the damage, and the path of that segment.
fn scavenged_store(dir: &Path) -> (Vec<RecordedEvent>, std::path::PathBuf) {
    let store = Store::open_with(dir, options()).unwrap();
    populate(&store);
    store.scavenge(&ScavengeOptions::default()).unwrap();
    let good = all(&store);
    store.close().unwrap();
    let seg = dir
        .join("segments")
        .join(streamlog::segment::segment_file_name(0));
    (good, seg)
}

/// Damage in a rewritten segment is reported by reads and by `verify`, and nothing damaged
/// is returned.
fn check_damage_reported(dir: &Path, good: &[RecordedEvent]) {
    let store = Store::open_with(dir, options()).unwrap();
    let read: Vec<_> = store.read_all(Position::START).unwrap().collect();
    assert!(
        read.iter()
            .any(|r| matches!(r, Err(Error::Corrupted { .. }))),
        "the damage is reported"
    );
    for e in read.iter().filter_map(|r| r.as_ref().ok()) {
        assert!(
            good.iter().any(|g| key(g) == key(e)),
            "nothing damaged is returned"
        );
    }
    let v = store.verify(|_| {}).unwrap();
    assert_eq!(v.corruption().count(), 1, "{v:?}");
}

#[test]
fn a_flipped_bit_in_a_compressed_block_is_reported_never_returned() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let (good, seg) = scavenged_store(&dir);
    // Flip one bit in the middle of the first block (after the dictionary).
    let mut bytes = std::fs::read(&seg).unwrap();
    let first = footer(&bytes).blocks_offset() as usize;
    // Since format 6 a block is its stored bytes only: here a zstd frame.
    assert_eq!(
        &bytes[first..first + 4],
        &[0x28, 0xB5, 0x2F, 0xFD],
        "the dictionary is followed by a compressed block"
    );
    bytes[first + 20] ^= 0x04;
    std::fs::write(&seg, &bytes).unwrap();
    check_damage_reported(&dir, &good);
}

#[test]
fn a_flipped_bit_in_a_dictionary_is_reported_never_decoded_with() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let (good, seg) = scavenged_store(&dir);
    let mut bytes = std::fs::read(&seg).unwrap();
    let f = footer(&bytes);
    assert!(f.dictionary_len > 1000, "{f:?}");
    bytes[32 + f.dictionary_len as usize / 2] ^= 0x20;
    std::fs::write(&seg, &bytes).unwrap();
    check_damage_reported(&dir, &good);
}

#[test]
fn a_dictionary_is_made_only_of_kept_frames() {
    // Most frames of the first segments belong to a stream that is then hard deleted;
    // its bytes are in no file after the scavenge, dictionaries included, while the kept
    // stream's blocks are compressed with one.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let store = Store::open_with(&dir, options()).unwrap();
    for i in 0..2000u64 {
        let (s, tag) = if i % 10 == 0 {
            ("kept", "KEPT")
        } else {
            ("gone", "QZDEADQZ")
        };
        store
            .append(
                s,
                ExpectedVersion::Any,
                [NewEvent::new(
                    "Noted",
                    format!(
                        "{{\"tag\":\"{tag}\",\"n\":{i},\"pad\":\"{}\"}}",
                        "y".repeat(60)
                    ),
                )],
            )
            .unwrap();
    }
    store
        .tombstone_stream("gone", ExpectedVersion::Any)
        .unwrap();
    let report = store.scavenge(&ScavengeOptions::default()).unwrap();
    assert!(report.segments_rewritten >= 2, "{report:?}");
    assert_eq!(stream(&store, "kept").len(), 200);
    store.close().unwrap();
    let mut dictionaries = 0;
    for (path, bytes) in files(&dir) {
        assert!(
            !contains(&bytes, b"QZDEADQZ"),
            "{} holds a removed frame's bytes",
            path.display()
        );
        if path.extension().is_some_and(|x| x == "seg") && bytes[12] == 3 {
            dictionaries += usize::from(footer(&bytes).dictionary_len > 0);
        }
    }
    assert!(
        dictionaries >= 2,
        "{dictionaries} segments with a dictionary"
    );
    let store = Store::open_with(&dir, options()).unwrap();
    assert_eq!(stream(&store, "kept").len(), 200);
    let v = store.verify(|_| {}).unwrap();
    assert!(v.is_clean(), "{v:?}");
}

#[test]
fn appends_readers_and_a_subscriber_go_on_while_scavenges_run() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use streamlog::{Delivery, Filter, SubscribeAll};

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let store = Store::open_with(&dir, options()).unwrap();
    for i in 0..2000u64 {
        store
            .append(
                "dead",
                ExpectedVersion::Any,
                [NewEvent::new("D", format!("{i:0>80}"))],
            )
            .unwrap();
    }
    store
        .tombstone_stream("dead", ExpectedVersion::Any)
        .unwrap();
    let mut sub = store
        .subscribe_all(SubscribeAll::from_start().filter(Filter::stream_prefix("live-")))
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let (store, stop) = (store.clone(), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) || i < 200 {
                    let r = store
                        .append(
                            &format!("live-{w}"),
                            ExpectedVersion::Any,
                            [NewEvent::new("L", format!("{w}-{i}"))],
                        )
                        .unwrap();
                    acked.push((r.first_version, format!("{w}-{i}")));
                    i += 1;
                }
                acked
            })
        })
        .collect();
    let reader = {
        let (store, stop) = (store.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                // Every read sees each live stream's events gap-free from version 0.
                for w in 0..3 {
                    let versions: Vec<u64> = store
                        .read_stream(&format!("live-{w}"), 0)
                        .unwrap()
                        .map(|e| e.unwrap().version)
                        .collect();
                    assert_eq!(versions, (0..versions.len() as u64).collect::<Vec<_>>());
                }
            }
        })
    };
    for _ in 0..3 {
        store.scavenge(&ScavengeOptions::default()).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let acked: Vec<Vec<(u64, String)>> = writers.into_iter().map(|h| h.join().unwrap()).collect();
    reader.join().unwrap();
    let total: usize = acked.iter().map(Vec::len).sum();
    let mut seen: Vec<Vec<(u64, String)>> = vec![Vec::new(); 3];
    let mut n = 0;
    while n < total {
        match sub
            .next_timeout(std::time::Duration::from_secs(10))
            .unwrap()
        {
            Some(Delivery::Event(e)) => {
                let w: usize = e.stream.strip_prefix("live-").unwrap().parse().unwrap();
                seen[w].push((e.version, String::from_utf8(e.data).unwrap()));
                n += 1;
            }
            Some(_) => {}
            None => panic!("the subscriber stopped after {n} of {total} events"),
        }
    }
    assert_eq!(
        seen, acked,
        "the subscriber saw every acknowledged append once, in order"
    );
    assert!(all(&store).iter().all(|e| e.stream.as_ref() != "dead"));
    let v = store.verify(|_| {}).unwrap();
    assert!(v.is_clean(), "{v:?}");
}

#[test]
fn info_counts_the_streams_that_keep_an_event_through_scavenges_and_a_reindex() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let store = Store::open_with(&dir, options()).unwrap();
    let note = |s: &str| {
        store
            .append(s, ExpectedVersion::Any, [NewEvent::new("Noted", "{}")])
            .unwrap();
    };
    for _ in 0..3 {
        for s in ["kept", "truncated", "recreated", "gone", "erased"] {
            note(s);
        }
    }
    store
        .set_stream_metadata(
            "truncated",
            ExpectedVersion::Any,
            &StreamMetadata::new().with_max_count(1),
        )
        .unwrap();
    store
        .delete_stream("recreated", ExpectedVersion::Any)
        .unwrap();
    note("recreated");
    store
        .tombstone_stream("gone", ExpectedVersion::Any)
        .unwrap();
    // Five user streams and `$streams-metadata`.
    assert_eq!(store.info().unwrap().streams, 6);
    store.scavenge(&ScavengeOptions::default()).unwrap();
    // `truncated` and `recreated` lost their first events, not their last ones; `gone`
    // lost everything.
    assert_eq!(stream(&store, "truncated").len(), 1);
    assert_eq!(stream(&store, "recreated").len(), 1);
    assert_eq!(store.info().unwrap().streams, 5);
    store.erase_stream("erased", ExpectedVersion::Any).unwrap();
    assert_eq!(store.info().unwrap().streams, 4);
    store.close().unwrap();
    let store = Store::open_with(&dir, options()).unwrap();
    assert_eq!(store.info().unwrap().streams, 4, "after a reopen");
    store.close().unwrap();
    Store::reindex(&dir, options(), |_| {}).unwrap();
    let store = Store::open_with(&dir, options()).unwrap();
    assert_eq!(store.info().unwrap().streams, 4, "after a reindex");
}

#[test]
fn nothing_is_reclaimable_where_a_scavenge_would_rewrite_nothing() {
    // Clean closes leave a checkpoint frame each, and a scavenge does not rewrite a
    // segment for them alone: they are not reported as reclaimable either.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    for i in 0..5 {
        let store = Store::open_with(&dir, options()).unwrap();
        store
            .append(
                "s",
                ExpectedVersion::Any,
                [NewEvent::new("Noted", format!("{i}"))],
            )
            .unwrap();
        store.close().unwrap();
    }
    let store = Store::open_with(&dir, options()).unwrap();
    let reclaimable = store.reclaimable().unwrap();
    assert_eq!(
        (reclaimable.dead_bytes, reclaimable.frames_removed),
        (0, 0),
        "{reclaimable:?}"
    );
    let report = store.scavenge(&ScavengeOptions::default()).unwrap();
    assert_eq!(
        (report.segments_rewritten, report.frames_removed),
        (0, 0),
        "{report:?}"
    );
}

#[test]
fn compressing_all_again_after_clean_closes_leaves_no_empty_segments() {
    // Each clean close adds a checkpoint frame to the active segment; markers alone are
    // nothing to compress, so repeated `--compress-all` runs seal nothing more.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let store = Store::open_with(&dir, options()).unwrap();
    for i in 0..50u64 {
        store
            .append(
                "s",
                ExpectedVersion::Any,
                [NewEvent::new("Noted", format!("{i}"))],
            )
            .unwrap();
    }
    store.close().unwrap();
    let segments = || std::fs::read_dir(dir.join("segments")).unwrap().count();
    let mut counts = Vec::new();
    for _ in 0..3 {
        let store = Store::open_with(&dir, options()).unwrap();
        store
            .scavenge(&ScavengeOptions::default().with_compress_all(true))
            .unwrap();
        store.close().unwrap();
        counts.push(segments());
    }
    assert_eq!(counts[1], counts[0], "{counts:?}");
    assert_eq!(counts[2], counts[0], "{counts:?}");
    let store = Store::open_with(&dir, options()).unwrap();
    assert_eq!(stream(&store, "s").len(), 50);
    assert!(store.verify(|_| {}).unwrap().is_clean());
}
