//! `verify` checks that every stream's versions continue without a gap: a frame forged
//! with a valid CRC but a version gap is reported, by the library and by the CLI. It
//! checks the snapshot files' frames too.

#![allow(clippy::unwrap_used)]

use std::fs::OpenOptions;
use std::io::Write;

use streamlog::format::{self, EventRecord, EventsFrame};
use streamlog::{ExpectedVersion, NewEvent, Store};

use crate::snapshots::files_under;

/// A store of five appends to "s".
fn store_of_five_events(dir: &std::path::Path) -> Store {
    let store = Store::open(dir).unwrap();
    for i in 0..5 {
        store
            .append(
                "s",
                ExpectedVersion::Any,
                [NewEvent::new("E", format!("{i}"))],
            )
            .unwrap();
    }
    store
}

/// `streamlog verify DIR`, which must exit 5 (corruption found); its stdout.
fn cli_verify_exits_5(dir: &std::path::Path) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_streamlog"))
        .arg("verify")
        .arg(dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_forged_frame_with_a_version_gap_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store
        .append("s", ExpectedVersion::NoStream, [NewEvent::new("E", "0")])
        .unwrap();
    assert!(store.verify(|_| {}).unwrap().is_clean());
    store.close().unwrap();

    // After the clean close: a frame that checks (CRC, position) and names version 5 of
    // a stream whose last version is 0.
    let seg = dir.path().join("segments/00000000000000000000.seg");
    let len = std::fs::metadata(&seg).unwrap().len();
    let records = [EventRecord {
        id: [9; 16],
        timestamp_us: 0,
        schema_version: 0,
        event_type: "E",
        metadata: b"",
        data: b"forged",
    }];
    let mut bytes = Vec::new();
    format::encode_events_frame(
        &mut bytes,
        len,
        len,
        &EventsFrame {
            committed_at_us: Some(0),
            stream: "s",
            first_version: 5,
            events: &records,
            checkpoint: None,
        },
    );
    OpenOptions::new()
        .append(true)
        .open(&seg)
        .unwrap()
        .write_all(&bytes)
        .unwrap();

    let store = Store::open(dir.path()).unwrap();
    let report = store.verify(|_| {}).unwrap();
    assert!(report.damage.is_empty(), "the frame itself checks");
    assert_eq!(report.version_problems.len(), 1, "{report:?}");
    assert!(report.version_problems[0].contains("version 5"));
    assert!(!report.is_clean());
    store.close().unwrap();

    let offline = streamlog::inspect::verify_dir(dir.path(), |_| {}).unwrap();
    assert_eq!(offline.version_problems.len(), 1, "{offline:?}");

    let stdout = cli_verify_exits_5(dir.path());
    assert!(stdout.contains("\"version_problem\""), "{stdout}");
}

/// A flipped bit in a snapshot frame is reported by `verify` (library, offline and CLI),
/// with the scavenge as its fix; after the scavenge nothing is left to report, and no
/// event was touched.
#[test]
fn a_damaged_snapshot_frame_is_reported_until_a_scavenge_leaves_it_out() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_of_five_events(dir.path());
    for v in [0u64, 2, 4] {
        store
            .save_snapshot("s", v, "sum", format!("state-at-{v}-padding").as_bytes())
            .unwrap();
    }
    let report = store.verify(|_| {}).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.snapshots.frames, 3);
    store.close().unwrap();

    let mut damaged = None;
    for path in files_under(&dir.path().join("snapshots"), "seg") {
        let mut bytes = std::fs::read(&path).unwrap();
        if let Some(at) = bytes.windows(10).position(|w| w == b"state-at-2") {
            bytes[at] ^= 0x01;
            std::fs::write(&path, bytes).unwrap();
            damaged = Some(path);
        }
    }
    let damaged = damaged.unwrap();

    let offline = streamlog::inspect::verify_dir(dir.path(), |_| {}).unwrap();
    assert!(offline.damage.is_empty(), "{offline:?}");
    assert_eq!(offline.snapshots.frames, 2, "{offline:?}");
    assert_eq!(offline.snapshots.corruption().count(), 1, "{offline:?}");
    assert_eq!(offline.snapshots.damage[0].file, damaged);
    assert!(!offline.is_clean());
    let stdout = cli_verify_exits_5(dir.path());
    assert!(
        stdout.contains("\"fix\":\"streamlog scavenge\""),
        "{stdout}"
    );
    assert!(stdout.contains("\"snapshot_corrupted\":1"), "{stdout}");

    let store = Store::open(dir.path()).unwrap();
    let report = store.verify(|_| {}).unwrap();
    assert_eq!(report.snapshots.corruption().count(), 1, "{report:?}");
    let scavenged = store
        .scavenge(&streamlog::ScavengeOptions::default())
        .unwrap();
    assert_eq!(scavenged.snapshots_dropped, 1, "{scavenged:?}");
    let report = store.verify(|_| {}).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!((report.events, report.snapshots.frames), (5, 2));
    store.close().unwrap();
    assert!(
        streamlog::inspect::verify_dir(dir.path(), |_| {})
            .unwrap()
            .is_clean()
    );
}

/// `verify` never writes, even where it is a store's first use of its snapshot files (a
/// writer's first use opens them for writing: it would create them, or cut and replace
/// what it finds damaged).
#[test]
fn verify_writes_nothing_to_snapshot_files_it_never_opened() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store
        .append("s", ExpectedVersion::Any, [NewEvent::new("E", "0")])
        .unwrap();
    let report = store.verify(|_| {}).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.snapshots.generation, 0);
    assert!(
        !dir.path().join("snapshots").join("CURRENT").exists(),
        "verify created snapshot files"
    );
    store.close().unwrap();
}

/// In a rewritten (compressed) segment `verify` names the damaged block by its offset in
/// the file, as a read of it does, and never calls it a torn tail.
#[test]
fn damage_in_a_rewritten_segment_is_reported_at_its_place_in_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for i in 0..300 {
        store
            .append(
                "s",
                ExpectedVersion::Any,
                [NewEvent::new(
                    "E",
                    format!("{{\"n\":{i},\"pad\":\"abcdefghijklmnop{i}\"}}"),
                )],
            )
            .unwrap();
    }
    store
        .scavenge(&streamlog::ScavengeOptions::default().with_compress_all(true))
        .unwrap();
    // The index's last frame in the next segment: the open does not read the damage.
    store
        .append("t", ExpectedVersion::Any, [NewEvent::new("E", "x")])
        .unwrap();
    store.close().unwrap();
    let seg = dir.path().join("segments/00000000000000000000.seg");
    let mut bytes = std::fs::read(&seg).unwrap();
    let len = bytes.len();
    // Among the blocks: past the header and the dictionary, before the map and footer.
    bytes[len * 7 / 10] ^= 0x10;
    std::fs::write(&seg, bytes).unwrap();

    let store = Store::open(dir.path()).unwrap();
    let read_offset = store
        .read_stream("s", 0)
        .unwrap()
        .find_map(|e| match e {
            Err(streamlog::Error::Corrupted { offset, .. }) => Some(offset),
            _ => None,
        })
        .unwrap();
    let report = store.verify(|_| {}).unwrap();
    let damage: Vec<_> = report
        .damage
        .iter()
        .map(|d| (d.offset, d.torn_tail))
        .collect();
    assert_eq!(damage, vec![(read_offset, false)], "{report:?}");
    assert!(read_offset < len as u64);
}

/// A flipped byte in a snapshot index table hides snapshots from every lookup: `verify`
/// reports it with the scavenge as its fix, and the scavenge's rewrite of the snapshot
/// files makes a new index, after which loads find the snapshot again.
#[test]
fn a_damaged_snapshot_index_is_reported_and_mended_by_a_scavenge() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_of_five_events(dir.path());
    store.save_snapshot("s", 4, "sum", b"state-at-4").unwrap();
    store.close().unwrap();
    let tables = files_under(&dir.path().join("snapshots"), "idx");
    assert_eq!(tables.len(), 1, "{tables:?}");
    // A byte of the table's one block of entries (past its 16-byte header).
    let mut bytes = std::fs::read(&tables[0]).unwrap();
    bytes[20] ^= 0xff;
    std::fs::write(&tables[0], bytes).unwrap();

    let store = Store::open(dir.path()).unwrap();
    assert!(
        store.latest_snapshot("s").unwrap().is_none(),
        "the damage hides it"
    );
    let report = store.verify(|_| {}).unwrap();
    assert!(!report.snapshots.index_problems.is_empty(), "{report:?}");
    assert!(!report.is_clean());
    store.close().unwrap();
    let stdout = cli_verify_exits_5(dir.path());
    assert!(stdout.contains("\"snapshot_index_problem\""), "{stdout}");

    let store = Store::open(dir.path()).unwrap();
    store
        .scavenge(&streamlog::ScavengeOptions::default())
        .unwrap();
    assert_eq!(store.latest_snapshot("s").unwrap().unwrap().version, 4);
    assert!(store.verify(|_| {}).unwrap().is_clean());
    store.close().unwrap();
}
