//! Stores written by earlier releases open, read, verify and take appends with this build
//! (see tests/fixtures/README.md for how each fixture was written, and docs/format.md
//! "Older formats" for what an open of one does).

#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use streamlog::{
    AsOf, ExpectedVersion, NewEvent, Options, Position, RecordedEvent, ResumeToken, Store,
};

/// Copies a fixture into a fresh temporary directory (fixtures are never opened in place).
fn copy_fixture(name: &str) -> (tempfile::TempDir, PathBuf) {
    fn copy_dir(from: &Path, to: &Path) {
        fs::create_dir_all(to).unwrap();
        for entry in fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy_dir(&entry.path(), &target);
            } else {
                fs::copy(entry.path(), &target).unwrap();
            }
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    copy_dir(&src, &dir);
    (tmp, dir)
}

/// Every segment file of the store in `dir`, with its bytes.
fn segment_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    fs::read_dir(dir.join("segments"))
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let bytes = fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

fn all(store: &Store) -> Vec<RecordedEvent> {
    store
        .read_all(Position::START)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// What the v1 fixture holds, event by event (as the program in tests/fixtures/README.md
/// wrote it).
fn check_v1_content(events: &[RecordedEvent]) {
    assert_eq!(events.len(), 43);
    for (i, e) in events.iter().take(40).enumerate() {
        assert_eq!(&*e.stream, format!("account-{}", i % 3));
        assert_eq!(e.version, (i / 3) as u64);
        assert_eq!(e.event_type, "Deposited");
        assert_eq!(
            e.data,
            format!("{{\"amount\":{}}}", i * 10 + 1).into_bytes()
        );
        assert_eq!(e.metadata, format!("{{\"n\":{i}}}").into_bytes());
        assert_eq!(
            e.timestamp(),
            UNIX_EPOCH + Duration::from_secs(1_700_000_000 + i as u64)
        );
        // Format 1 recorded neither.
        assert_eq!((e.committed_at_us, e.schema_version), (None, 0));
    }
    let batch = &events[40..];
    assert!(batch.iter().all(|e| &*e.stream == "account-0"
        && e.event_type == "Withdrawn"
        && e.position == batch[0].position));
    assert_eq!(
        batch.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![14, 15, 16]
    );
}

#[test]
fn a_format_1_store_opens_and_reads_read_only() {
    let (_tmp, dir) = copy_fixture("v1-store");
    let store = Store::open_with(&dir, Options::default().with_read_only(true)).unwrap();
    let events = all(&store);
    check_v1_content(&events);
    assert_eq!(store.stream_version("account-0").unwrap(), Some(16));
    let stream: Vec<_> = store
        .read_stream("account-1", 0)
        .unwrap()
        .map(|e| e.unwrap().version)
        .collect();
    assert_eq!(stream, (0..13).collect::<Vec<_>>());
    let snap = store.latest_snapshot("account-0").unwrap().unwrap();
    assert_eq!(
        (snap.version, snap.schema.as_str(), snap.data.as_slice()),
        (16, "balance-v1", &1234i64.to_le_bytes()[..])
    );
    let batch_position = events[40].position;
    assert_eq!(
        store.checkpoint("projector").unwrap(),
        Some(ResumeToken::after(batch_position, 1))
    );
    assert!(store.verify(|_| {}).unwrap().is_clean());
    // Nothing was written: the files are the fixture's, byte for byte.
    let (_tmp2, pristine) = copy_fixture("v1-store");
    for seg in ["00000000000000000000.seg", "00000000000000004091.seg"] {
        assert_eq!(
            fs::read(dir.join("segments").join(seg)).unwrap(),
            fs::read(pristine.join("segments").join(seg)).unwrap()
        );
    }
}

#[test]
fn a_format_1_store_takes_appends_in_a_new_segment_and_keeps_its_old_bytes() {
    let (_tmp, dir) = copy_fixture("v1-store");
    let (_tmp2, pristine) = copy_fixture("v1-store");
    let store = Store::open(&dir).unwrap();
    check_v1_content(&all(&store));
    let r = store
        .append(
            "account-0",
            ExpectedVersion::Exact(16),
            [NewEvent::new("Deposited", "{\"amount\":5}").with_schema_version(2)],
        )
        .unwrap();
    assert_eq!(r.first_version, 17);
    // The format-1 segments are untouched; the append went to a new segment.
    for seg in ["00000000000000000000.seg", "00000000000000004091.seg"] {
        assert_eq!(
            fs::read(dir.join("segments").join(seg)).unwrap(),
            fs::read(pristine.join("segments").join(seg)).unwrap(),
            "{seg} changed"
        );
    }
    let segments = fs::read_dir(dir.join("segments")).unwrap().count();
    assert_eq!(segments, 3);
    assert_eq!(r.position, Position(5095 + 32));
    store.close().unwrap();

    for read_only in [false, true] {
        let store = Store::open_with(&dir, Options::default().with_read_only(read_only)).unwrap();
        let events = all(&store);
        check_v1_content(&events[..43]);
        let new = &events[43];
        assert_eq!((new.version, new.schema_version), (17, 2));
        assert!(new.committed_at_us.is_some());
        assert!(store.verify(|_| {}).unwrap().is_clean());
        // Time: the format-1 appends have no commit time and count as committed before
        // any time, so the first append at or after even the epoch is the new one.
        assert_eq!(store.position_at(UNIX_EPOCH).unwrap(), new.position);
        assert_eq!(
            store.position_at(new.committed_at().unwrap()).unwrap(),
            new.position
        );
        assert_eq!(
            store
                .stream_version_as_of("account-0", AsOf::Time(UNIX_EPOCH))
                .unwrap(),
            Some(16)
        );
        store.close().unwrap();
    }
}

#[test]
fn a_format_1_store_without_its_index_is_reindexed_from_format_1_frames() {
    let (_tmp, dir) = copy_fixture("v1-store");
    fs::remove_dir_all(dir.join("index")).unwrap();
    let store = Store::open(&dir).unwrap();
    assert!(
        store.recovery_report().index.rebuilt.is_some()
            || store.recovery_report().index.replayed_frames > 0
    );
    check_v1_content(&all(&store));
    let v: Vec<_> = store
        .read_stream_backward("account-0", None)
        .unwrap()
        .map(|e| e.unwrap().version)
        .collect();
    assert_eq!(v, (0..17).rev().collect::<Vec<_>>());
    assert!(store.verify(|_| {}).unwrap().is_clean());
}

/// What the v2 fixture holds as readers see it (tests/fixtures/README.md).
fn check_v2_content(store: &Store) {
    let events: Vec<RecordedEvent> = all(store)
        .into_iter()
        .filter(|e| !e.stream.starts_with('$'))
        .collect();
    // account-2 is soft deleted, account-3 tombstoned ($all passes over both), and
    // account-1 keeps its last 3 events.
    let per = |s: &str| events.iter().filter(|e| &*e.stream == s).count();
    assert_eq!(per("account-0"), 13);
    assert_eq!(per("account-1"), 3);
    assert_eq!(per("account-2"), 0);
    assert_eq!(per("account-3"), 0);
    let first = events.iter().find(|e| &*e.stream == "account-0").unwrap();
    assert_eq!(first.data, b"{\"amount\":1}".to_vec());
    assert_eq!(first.schema_version, 0);
    assert!(first.committed_at().is_some());
    assert!(matches!(
        store.read_stream("account-3", 0),
        Err(streamlog::Error::StreamDeleted { .. })
    ));
    assert_eq!(store.stream_version("account-2").unwrap(), None);
    let v = store.verify(|_| {}).unwrap();
    assert!(v.is_clean(), "{v:?}");
}

/// The versions of `stream` as of each of its events' commit times (and a microsecond
/// before each), searched on index entries of version 1 tables (which carry no commit
/// time) or of both versions, agree with a scan of the stream.
fn check_time_bounds(store: &Store, stream: &str) {
    let events: Vec<RecordedEvent> = store
        .read_stream(stream, 0)
        .unwrap()
        .map(|e| e.unwrap())
        .collect();
    assert!(events.len() >= 3, "{stream}: {} events", events.len());
    for e in &events {
        let t = e.committed_at().unwrap();
        for at in [t, t - std::time::Duration::from_micros(1)] {
            let want = events
                .iter()
                .filter(|x| x.committed_at().unwrap() <= at)
                .map(|x| x.version)
                .max();
            assert_eq!(
                store.stream_version_at(stream, at).unwrap(),
                want,
                "{stream} at {at:?}"
            );
        }
    }
}

#[test]
fn a_format_2_store_opens_reads_appends_and_scavenges() {
    let (_tmp, dir) = copy_fixture("v2-store");
    let old_segments = segment_files(&dir);
    {
        let store = Store::open_with(&dir, Options::default().with_read_only(true)).unwrap();
        check_v2_content(&store);
        // Its index table is of version 1: entries without commit times.
        check_time_bounds(&store, "account-0");
    }
    let store = Store::open_with(&dir, Options::default().with_segment_size_bytes(4096)).unwrap();
    check_v2_content(&store);
    // The first append starts a new segment; the old ones keep their bytes.
    store
        .append(
            "account-0",
            ExpectedVersion::Any,
            [NewEvent::new("Deposited", "{\"amount\":5}")],
        )
        .unwrap();
    for (path, bytes) in &old_segments {
        assert_eq!(&fs::read(path).unwrap(), bytes, "{}", path.display());
    }
    // A re-created soft-deleted stream goes on after its old versions.
    let r = store
        .append(
            "account-2",
            ExpectedVersion::NoStream,
            [NewEvent::new("Opened", "{}")],
        )
        .unwrap();
    assert_eq!(r.first_version, 10);
    let report = store
        .scavenge(&streamlog::ScavengeOptions::default())
        .unwrap();
    assert!(report.events_removed > 0, "{report:?}");
    let v = store.verify(|_| {}).unwrap();
    assert!(v.is_clean(), "{v:?}");
    assert_eq!(
        store
            .read_stream("account-2", 0)
            .unwrap()
            .map(|e| e.unwrap().version)
            .collect::<Vec<_>>(),
        vec![10]
    );
    store.close().unwrap();
    let store = Store::open(&dir).unwrap();
    let v = store.verify(|_| {}).unwrap();
    assert!(v.is_clean(), "{v:?}");
    assert_eq!(store.read_stream("account-1", 0).unwrap().count(), 3);
    // Rewritten by the scavenge and flushed at close: tables of version 2 now, holding
    // the old entries (no commit time) and the new ones (with theirs).
    check_time_bounds(&store, "account-0");
}

#[test]
fn a_format_3_store_with_rewritten_segments_opens_reads_appends_and_checkpoints() {
    let (_tmp, dir) = copy_fixture("v3-store");
    let old_segments = segment_files(&dir);
    let check = |store: &Store| {
        let events: Vec<RecordedEvent> = all(store)
            .into_iter()
            .filter(|e| !e.stream.starts_with('$'))
            .collect();
        let per = |s: &str| events.iter().filter(|e| &*e.stream == s).count();
        // The scavenge kept account-0 whole (13 events, then one more after it), the
        // last 3 of account-1, nothing of the deleted account-2 and account-3.
        assert_eq!(per("account-0"), 14);
        assert_eq!(per("account-1"), 3);
        assert_eq!(per("account-2"), 0);
        assert_eq!(per("account-3"), 0);
        let last = events.last().unwrap();
        assert_eq!(last.data, b"{\"amount\":7}".to_vec());
        assert_eq!(last.version, 13);
        // The named checkpoint, a version-1 file.
        let token = store.checkpoint("projector").unwrap().unwrap();
        assert_eq!(token.skip, 2);
        let v = store.verify(|_| {}).unwrap();
        assert!(v.is_clean(), "{v:?}");
    };
    {
        let store = Store::open_with(&dir, Options::default().with_read_only(true)).unwrap();
        check(&store);
        let info = store.info().unwrap();
        assert!(info.physical_bytes < info.bytes, "{info:?}");
    }
    let store = Store::open_with(&dir, Options::default().with_segment_size_bytes(4096)).unwrap();
    check(&store);
    let before = store.checkpoint("projector").unwrap().unwrap();
    // An append with a checkpoint (format 4) starts a new segment; the old ones keep
    // their bytes.
    let moved = ResumeToken::after(before.position, 2);
    store
        .append_and_checkpoint(
            "account-0",
            ExpectedVersion::Exact(13),
            [NewEvent::new("Deposited", "{\"amount\":8}")],
            "projector",
            moved,
        )
        .unwrap();
    assert_eq!(store.checkpoint("projector").unwrap(), Some(moved));
    for (path, bytes) in &old_segments {
        assert_eq!(&fs::read(path).unwrap(), bytes, "{}", path.display());
    }
    store.close().unwrap();
    let store = Store::open(&dir).unwrap();
    assert_eq!(store.checkpoint("projector").unwrap(), Some(moved));
    assert_eq!(store.stream_version("account-0").unwrap(), Some(14));
    let v = store.verify(|_| {}).unwrap();
    assert!(v.is_clean(), "{v:?}");
}

/// The content of the v4-store and v5-store programs (the v2-store program, an append
/// that carries a checkpoint, a scavenge, one more append), read through `store`.
fn check_v4_content(store: &Store) -> Vec<RecordedEvent> {
    let events: Vec<RecordedEvent> = all(store)
        .into_iter()
        .filter(|e| !e.stream.starts_with('$'))
        .collect();
    let per = |s: &str| events.iter().filter(|e| &*e.stream == s).count();
    // The scavenge kept account-0 whole (13 events, the checkpointed one and one
    // more), the last 3 of account-1, nothing of the deleted account-2 and account-3.
    assert_eq!(per("account-0"), 15);
    assert_eq!(per("account-1"), 3);
    assert_eq!(per("account-2"), 0);
    assert_eq!(per("account-3"), 0);
    let versions: Vec<u64> = store
        .read_stream("account-0", 0)
        .unwrap()
        .map(|e| e.unwrap().version)
        .collect();
    assert_eq!(versions, (0..15).collect::<Vec<_>>());
    let checkpointed = events
        .iter()
        .find(|e| e.version == 13 && &*e.stream == "account-0")
        .unwrap();
    assert_eq!(checkpointed.data, b"{\"amount\":5}".to_vec());
    assert_eq!(checkpointed.position, Position(6033));
    let last = events.last().unwrap();
    assert_eq!(
        (last.version, last.data.as_slice()),
        (14, &b"{\"amount\":7}"[..])
    );
    // The checkpoint the format-4 append carried (a version-2 file).
    let token = store.checkpoint("projector").unwrap().unwrap();
    assert_eq!(token.skip, 4);
    let v = store.verify(|_| {}).unwrap();
    assert!(v.is_clean(), "{v:?}");
    events
}

/// A copied v4-store or v5-store (the same program's content, in rewritten segments of
/// that format): read read-only and for writing with its old segments left byte for byte
/// as they were, then scavenged again with everything compressed, which rewrites them as
/// this build's format and reads the same.
fn reads_verifies_and_scavenges_again(dir: &Path, old_segments: &[(PathBuf, Vec<u8>)]) {
    let before = {
        let store = Store::open_with(dir, Options::default().with_read_only(true)).unwrap();
        let info = store.info().unwrap();
        assert!(info.physical_bytes < info.bytes, "{info:?}");
        check_v4_content(&store)
    };
    let store = Store::open_with(dir, Options::default().with_segment_size_bytes(4096)).unwrap();
    assert_eq!(check_v4_content(&store), before);
    for (path, bytes) in old_segments {
        assert_eq!(&fs::read(path).unwrap(), bytes, "{}", path.display());
    }
    // Scavenged again, with everything compressed: the old segments are rewritten as
    // this build's format (blocks compressed with a dictionary), and read the same.
    store
        .tombstone_stream("account-1", ExpectedVersion::Any)
        .unwrap();
    let report = store
        .scavenge(&streamlog::ScavengeOptions::default().with_compress_all(true))
        .unwrap();
    assert!(report.segments_rewritten >= 1, "{report:?}");
    assert!(report.events_removed >= 3, "{report:?}");
    let rewritten: Vec<_> = segment_files(dir)
        .into_iter()
        .filter(|(_, b)| b[12] == 3 && u32::from(b[8]) == streamlog::format::FORMAT_VERSION)
        .collect();
    assert!(!rewritten.is_empty());
    let after: Vec<RecordedEvent> = all(&store)
        .into_iter()
        .filter(|e| !e.stream.starts_with('$'))
        .collect();
    let kept: Vec<RecordedEvent> = before
        .iter()
        .filter(|e| &*e.stream != "account-1")
        .cloned()
        .collect();
    assert_eq!(after, kept);
    let v = store.verify(|_| {}).unwrap();
    assert!(v.is_clean(), "{v:?}");
    store.close().unwrap();
    let store = Store::open(dir).unwrap();
    let again: Vec<RecordedEvent> = all(&store)
        .into_iter()
        .filter(|e| !e.stream.starts_with('$'))
        .collect();
    assert_eq!(again, kept);
    assert!(store.verify(|_| {}).unwrap().is_clean());
}

#[test]
fn a_format_4_store_with_zstd_blocks_opens_reads_verifies_and_scavenges_again() {
    let (_tmp, dir) = copy_fixture("v4-store");
    let old_segments = segment_files(&dir);
    // Its rewritten segments are of version 4, in zstd blocks without a dictionary.
    for (path, bytes) in &old_segments {
        if bytes[12] == 3 {
            assert_eq!(bytes[8], 4, "{}", path.display());
            assert_eq!(&bytes[32..36], b"SLBK");
            assert_eq!(bytes[36], 1, "codec 1: zstd without a dictionary");
        }
    }
    reads_verifies_and_scavenges_again(&dir, &old_segments);
}

#[test]
fn a_format_5_store_with_dictionary_blocks_opens_reads_verifies_and_scavenges_again() {
    let (_tmp, dir) = copy_fixture("v5-store");
    let old_segments = segment_files(&dir);
    // Its rewritten segments are of version 5: a dictionary trained by zstd after the
    // header, then blocks with headers, compressed with it.
    for (path, bytes) in &old_segments {
        if bytes[12] == 3 {
            assert_eq!(bytes[8], 5, "{}", path.display());
            assert_eq!(
                &bytes[32..36],
                &[0x37, 0xA4, 0x30, 0xEC],
                "zstd's dictionary magic"
            );
            let footer = &bytes[bytes.len() - 64..];
            let dictionary = u32::from_le_bytes(footer[52..56].try_into().unwrap()) as usize;
            let block = 32 + dictionary;
            assert_eq!(&bytes[block..block + 4], b"SLBK");
            assert_eq!(bytes[block + 4], 2, "codec 2: zstd with the dictionary");
        }
    }
    reads_verifies_and_scavenges_again(&dir, &old_segments);
}
