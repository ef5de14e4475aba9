//! `verify` checks that every stream's versions continue without a gap: a frame forged
//! with a valid CRC but a version gap is reported, by the library and by the CLI.

#![allow(clippy::unwrap_used)]

use std::fs::OpenOptions;
use std::io::Write;

use streamlog::format::{self, EventRecord, EventsFrame};
use streamlog::{ExpectedVersion, NewEvent, Store};

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

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_streamlog"))
        .arg("verify")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("\"version_problem\""), "{stdout}");
}
