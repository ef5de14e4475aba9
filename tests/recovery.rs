//! Recovery: torn tails are cut and reported, damage to attested data is refused.
//!
//! A "crash image" is a copy of the segment files taken while the store is open (after its
//! appends were acknowledged), so no clean-close checkpoint is in it.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};

use streamlog::{Error, ExpectedVersion, NewEvent, Options, Position, Store, TailKind};

const SEGMENT: &str = "segments/00000000000000000000.seg";

/// Writes `n` acknowledged (synced) appends and returns a crash image of them plus the
/// position of each append. Without preallocation, so that the image ends at the last
/// frame (see `a_crash_image_with_preallocated_space_recovers_every_append` for that).
fn crash_image(n: usize) -> (tempfile::TempDir, Vec<u64>) {
    let live = tempfile::tempdir().unwrap();
    let store =
        Store::open_with(live.path(), Options::default().with_preallocate_bytes(0)).unwrap();
    let positions = (0..n)
        .map(|i| {
            store
                .append(
                    &format!("s-{}", i % 3),
                    ExpectedVersion::Any,
                    [
                        NewEvent::new("E", format!("payload {i}")),
                        NewEvent::new("F", "x"),
                    ],
                )
                .unwrap()
                .position
                .0
        })
        .collect();
    let image = tempfile::tempdir().unwrap();
    copy_store(live.path(), image.path());
    drop(store);
    (image, positions)
}

fn copy_store(from: &Path, to: &Path) {
    fs::create_dir_all(to.join("segments")).unwrap();
    for e in fs::read_dir(from.join("segments")).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), to.join("segments").join(e.file_name())).unwrap();
    }
}

fn fresh_copy(image: &Path) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    copy_store(image, d.path());
    d
}

fn event_count(store: &Store) -> usize {
    let mut n = 0;
    for e in store.read_all(Position::START).unwrap() {
        e.unwrap();
        n += 1;
    }
    n
}

/// Cuts or extends a file to `len` bytes, as a crash or another program might.
fn set_len(path: &Path, len: u64) {
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

fn flip(path: &Path, offset: u64, bit: u8) {
    let mut bytes = fs::read(path).unwrap();
    bytes[offset as usize] ^= 1 << bit;
    fs::write(path, bytes).unwrap();
}

#[test]
fn torn_tail_at_every_byte_offset_of_the_last_frame_is_truncated_and_reported() {
    let (image, positions) = crash_image(6);
    let seg_len = fs::metadata(image.path().join(SEGMENT)).unwrap().len();
    let last = *positions.last().unwrap();
    for cut in last..seg_len {
        let dir = fresh_copy(image.path());
        let file = dir.path().join(SEGMENT);
        set_len(&file, cut);
        let store = Store::open(dir.path()).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        assert_eq!(event_count(&store), 10, "cut at {cut}");
        let report = store.recovery_report().clone();
        if cut == last {
            assert!(
                report.is_clean(),
                "cut at a frame boundary is a clean end: {report:?}"
            );
        } else {
            let t = report.truncated.expect("a torn tail is reported");
            assert_eq!((t.offset, t.position, t.frames_dropped), (last, last, 1));
            assert_eq!(t.bytes_dropped, cut - last);
            assert_eq!(t.file, file);
            assert_eq!(t.kind, TailKind::Torn);
        }
        // The log goes on from the cut, and a reopen is clean.
        store
            .append("s-0", ExpectedVersion::Any, [NewEvent::new("G", "after")])
            .unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert!(store.recovery_report().is_clean());
        assert_eq!(event_count(&store), 11);
    }
}

#[test]
fn garbage_over_the_last_frame_is_a_torn_tail_not_corruption() {
    let (image, positions) = crash_image(4);
    let last = *positions.last().unwrap();
    let seg_len = fs::metadata(image.path().join(SEGMENT)).unwrap().len();
    for start in last..seg_len {
        let dir = fresh_copy(image.path());
        let file = dir.path().join(SEGMENT);
        let mut bytes = fs::read(&file).unwrap();
        for (i, b) in bytes[start as usize..].iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(31).wrapping_add(7);
        }
        fs::write(&file, bytes).unwrap();
        let store = Store::open(dir.path()).unwrap_or_else(|e| panic!("garbage from {start}: {e}"));
        assert_eq!(event_count(&store), 6);
        let t = store.recovery_report().truncated.clone().unwrap();
        assert_eq!((t.offset, t.bytes_dropped), (last, seg_len - last));
    }
}

#[test]
fn bit_flips_below_the_attested_watermark_are_corruption() {
    let (image, positions) = crash_image(5);
    // Under Sync, the last append attests everything before it.
    let attested_end = *positions.last().unwrap();
    let mut tried = 0;
    for offset in positions[0]..attested_end {
        for bit in [0u8, 3, 7] {
            let dir = fresh_copy(image.path());
            let file = dir.path().join(SEGMENT);
            flip(&file, offset, bit);
            let frame_start = *positions.iter().rev().find(|&&p| p <= offset).unwrap();
            match Store::open(dir.path()) {
                Err(Error::Corrupted {
                    file: f, offset: o, ..
                }) => {
                    assert_eq!(f, file);
                    assert_eq!(o, frame_start, "flip at {offset}");
                }
                other => panic!("flip at {offset} bit {bit}: expected Corrupted, got {other:?}"),
            }
            tried += 1;
        }
    }
    assert!(tried > 100);
}

/// A cleanly closed store of three appends to "s"; returns their positions.
fn closed_store(dir: &Path) -> Vec<u64> {
    let store = Store::open(dir).unwrap();
    let positions = (0..3)
        .map(|i| {
            store
                .append(
                    "s",
                    ExpectedVersion::Any,
                    [NewEvent::new("E", format!("{i}"))],
                )
                .unwrap()
                .position
                .0
        })
        .collect();
    store.close().unwrap();
    positions
}

#[test]
fn after_a_clean_close_a_flip_in_an_indexed_append_is_reported_by_reads_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let positions = closed_store(dir.path());
    flip(&dir.path().join(SEGMENT), positions[1] + 40, 2);
    // Open does not scan what the index covers (that keeps open time bounded); the damage
    // is found by the first read of the frame and by verify, never silently skipped.
    let store = Store::open(dir.path()).unwrap();
    let read: Vec<_> = store.read_stream("s", 0).unwrap().collect();
    assert!(read[0].is_ok(), "{read:?}");
    assert!(
        matches!(read[1], Err(Error::Corrupted { offset, .. }) if offset == positions[1]),
        "{read:?}"
    );
    let report = store.verify(|_| {}).unwrap();
    let damage: Vec<_> = report.corruption().map(|d| d.offset).collect();
    assert_eq!(damage, vec![positions[1]]);
    drop(store);
    let report = streamlog::inspect::verify_dir(dir.path(), |_| {}).unwrap();
    assert_eq!(report.corruption().count(), 1);
}

#[test]
fn after_a_clean_close_a_flip_in_the_last_indexed_append_fails_the_open() {
    // Open checks that the last frame the index covers is still the one it indexed; a
    // damaged one sends it to a full replay, which finds the damage below the watermark.
    let dir = tempfile::tempdir().unwrap();
    let positions = closed_store(dir.path());
    flip(&dir.path().join(SEGMENT), positions[2] + 40, 2);
    match Store::open(dir.path()) {
        Err(Error::Corrupted { offset, .. }) => assert_eq!(offset, positions[2]),
        other => panic!("expected Corrupted, got {other:?}"),
    }
}

/// Twenty 500-byte appends in 4 KiB segments, closed cleanly.
fn multi_segment_store(dir: &Path) {
    let store = Store::open_with(dir, Options::default().with_segment_size_bytes(4096)).unwrap();
    for _ in 0..20 {
        store
            .append(
                "s",
                ExpectedVersion::Any,
                [NewEvent::new("E", "x".repeat(500))],
            )
            .unwrap();
    }
}

#[test]
fn a_damaged_segment_header_of_an_older_segment_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    multi_segment_store(dir.path());
    flip(&dir.path().join(SEGMENT), 3, 0);
    let r = Store::open_with(dir.path(), Options::default().with_segment_size_bytes(4096));
    assert!(
        matches!(r, Err(Error::Corrupted { offset: 0, .. })),
        "{r:?}"
    );
}

#[test]
fn a_zero_filled_tail_is_end_of_log() {
    let (image, _) = crash_image(3);
    let dir = fresh_copy(image.path());
    let file = dir.path().join(SEGMENT);
    let len = fs::metadata(&file).unwrap().len();
    set_len(&file, len + 8192);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(event_count(&store), 6);
    let t = store.recovery_report().truncated.clone().unwrap();
    assert_eq!(
        (t.offset, t.bytes_dropped, t.frames_dropped),
        (len, 8192, 0)
    );
    assert_eq!(t.reason, "zero-filled tail");
    assert_eq!(t.kind, TailKind::ZeroFilled);
    drop(store);
    assert_eq!(
        fs::metadata(&file).unwrap().len(),
        len + 32,
        "cut, then a checkpoint"
    );
}

#[test]
fn a_segment_whose_creation_did_not_complete_is_removed_and_reported() {
    let (image, _) = crash_image(3);
    let dir = fresh_copy(image.path());
    let len = fs::metadata(dir.path().join(SEGMENT)).unwrap().len();
    let torn: PathBuf = dir.path().join(format!("segments/{len:020}.seg"));
    fs::write(&torn, [0x53, 0x4c, 0x4f]).unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.recovery_report().removed_segments, vec![torn.clone()]);
    assert!(!torn.exists());
    assert_eq!(event_count(&store), 6);
    store
        .append("s-9", ExpectedVersion::Any, [NewEvent::new("E", "x")])
        .unwrap();
}

#[test]
fn a_gap_between_segments_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    multi_segment_store(dir.path());
    // Cut the first (sealed) segment short: the next one no longer lines up.
    let file = dir.path().join(SEGMENT);
    let len = fs::metadata(&file).unwrap().len();
    set_len(&file, len - 10);
    let r = Store::open_with(dir.path(), Options::default().with_segment_size_bytes(4096));
    assert!(matches!(r, Err(Error::Corrupted { .. })), "{r:?}");
}

#[test]
fn read_only_open_reports_a_torn_tail_without_cutting_it() {
    let (image, positions) = crash_image(3);
    let dir = fresh_copy(image.path());
    let file = dir.path().join(SEGMENT);
    let len = fs::metadata(&file).unwrap().len();
    set_len(&file, len - 5);
    let store = Store::open_with(dir.path(), Options::default().with_read_only(true)).unwrap();
    assert_eq!(event_count(&store), 4);
    let t = store.recovery_report().truncated.clone().unwrap();
    assert_eq!(t.offset, *positions.last().unwrap());
    drop(store);
    assert_eq!(
        fs::metadata(&file).unwrap().len(),
        len - 5,
        "read-only never writes"
    );
}

#[test]
fn verify_of_a_directory_classifies_corruption_and_torn_tails() {
    let (image, positions) = crash_image(4);
    let dir = fresh_copy(image.path());
    let file = dir.path().join(SEGMENT);
    flip(&file, positions[1] + 35, 1);
    let len = fs::metadata(&file).unwrap().len();
    set_len(&file, len - 3);
    let report = streamlog::inspect::verify_dir(dir.path(), |_| {}).unwrap();
    let found: Vec<_> = report
        .damage
        .iter()
        .map(|d| (d.offset, d.torn_tail))
        .collect();
    assert_eq!(found, vec![(positions[1], false), (positions[3], true)]);
    assert_eq!(report.corruption().count(), 1);
    assert_eq!(report.frames, 2, "frames 0 and 2 are intact");
    assert_eq!(
        fs::metadata(&file).unwrap().len(),
        len - 3,
        "verify never writes"
    );
}

#[test]
fn a_crash_image_with_preallocated_space_recovers_every_append() {
    let live = tempfile::tempdir().unwrap();
    let options = || {
        Options::default()
            .with_segment_size_bytes(8 << 10)
            .with_preallocate_bytes(4 << 10)
    };
    let store = Store::open_with(live.path(), options()).unwrap();
    let mut end = 0;
    for i in 0..400u32 {
        let r = store
            .append(
                &format!("s-{}", i % 5),
                ExpectedVersion::Any,
                [NewEvent::new("E", format!("payload {i}"))],
            )
            .unwrap();
        end = r.position.0;
    }
    let info = store.info().unwrap();
    assert!(info.segments > 2, "{info:?}");
    assert_eq!(info.bytes, info.head.0, "info counts log bytes, not zeros");
    let image = tempfile::tempdir().unwrap();
    copy_store(live.path(), image.path());
    // Sealed segments end at their last frame; the active one in zeros.
    let mut files: Vec<_> = fs::read_dir(image.path().join("segments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut base = 0;
    for f in &files {
        let name = f.file_name().unwrap().to_str().unwrap().to_string();
        assert_eq!(name, format!("{base:020}.seg"));
        base += fs::metadata(f).unwrap().len();
    }
    assert!(
        base > info.head.0,
        "the active segment holds preallocated zeros"
    );
    drop(store);
    // A clean close cuts the zeros.
    let total: u64 = fs::read_dir(live.path().join("segments"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert_eq!(
        total,
        info.head.0 + 32,
        "the log ends at the closing checkpoint"
    );

    // The crash image: every acknowledged append is there; the zeros are cut and reported.
    let store = Store::open_with(image.path(), options()).unwrap();
    assert_eq!(event_count(&store), 400);
    let t = store.recovery_report().truncated.clone().unwrap();
    assert_eq!(t.reason, "zero-filled tail");
    assert_eq!(t.kind, TailKind::ZeroFilled);
    assert_eq!((t.position, t.frames_dropped), (info.head.0, 0));
    assert!(end < t.position);
    store
        .append("s-0", ExpectedVersion::Any, [NewEvent::new("E", "after")])
        .unwrap();
    drop(store);
    let store = Store::open_with(image.path(), options()).unwrap();
    assert!(store.recovery_report().clean_shutdown);
    assert_eq!(event_count(&store), 401);
}
