//! Recovery: torn tails are cut and reported, damage to attested data is refused.
//!
//! A "crash image" is a copy of the segment files taken while the store is open (after its
//! appends were acknowledged), so no clean-close checkpoint is in it.
//!
//! Every scenario but one runs twice, on the real file system and on the simulated one
//! (see `backend`): `on_files::<scenario>` and `on_sim::<scenario>`.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use crate::backend::{Backend, Files, TestDir, on_both_backends};
use streamlog::{Error, ExpectedVersion, NewEvent, Position, Store, TailKind};

const SEGMENT: &str = "segments/00000000000000000000.seg";

/// Writes `n` acknowledged (synced) appends and returns a crash image of them plus the
/// position of each append. Without preallocation, so that the image ends at the last
/// frame (see `a_crash_image_with_preallocated_space_recovers_every_append` for that).
fn crash_image(disk: &impl Backend, n: usize) -> (TestDir, Vec<u64>) {
    let live = disk.tempdir();
    let store = Store::open_with(live.path(), disk.options().with_preallocate_bytes(0)).unwrap();
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
    let image = disk.tempdir();
    copy_store(disk, live.path(), image.path());
    drop(store);
    (image, positions)
}

fn copy_store(disk: &impl Backend, from: &Path, to: &Path) {
    disk.create_dir_all(&to.join("segments"));
    for name in disk.list(&from.join("segments")) {
        let bytes = disk.read(&from.join("segments").join(&name));
        disk.create(&to.join("segments").join(&name), &bytes);
    }
}

fn fresh_copy(disk: &impl Backend, image: &Path) -> TestDir {
    let d = disk.tempdir();
    copy_store(disk, image, d.path());
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

fn torn_tail_at_every_byte_offset_of_the_last_frame_is_truncated_and_reported<B: Backend>() {
    let disk = B::new();
    let (image, positions) = crash_image(&disk, 6);
    let seg_len = disk.len(&image.path().join(SEGMENT));
    let last = *positions.last().unwrap();
    for cut in last..seg_len {
        let dir = fresh_copy(&disk, image.path());
        let file = dir.path().join(SEGMENT);
        disk.set_len(&file, cut);
        let store = Store::open_with(dir.path(), disk.options())
            .unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
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
        let store = Store::open_with(dir.path(), disk.options()).unwrap();
        assert!(store.recovery_report().is_clean());
        assert_eq!(event_count(&store), 11);
    }
}

fn garbage_over_the_last_frame_is_a_torn_tail_not_corruption<B: Backend>() {
    let disk = B::new();
    let (image, positions) = crash_image(&disk, 4);
    let last = *positions.last().unwrap();
    let seg_len = disk.len(&image.path().join(SEGMENT));
    for start in last..seg_len {
        let dir = fresh_copy(&disk, image.path());
        let file = dir.path().join(SEGMENT);
        let garbage: Vec<u8> = (0..seg_len - start)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(7))
            .collect();
        disk.write_at(&file, start, &garbage);
        let store = Store::open_with(dir.path(), disk.options())
            .unwrap_or_else(|e| panic!("garbage from {start}: {e}"));
        assert_eq!(event_count(&store), 6);
        let t = store.recovery_report().truncated.clone().unwrap();
        assert_eq!((t.offset, t.bytes_dropped), (last, seg_len - last));
    }
}

fn bit_flips_below_the_attested_watermark_are_corruption<B: Backend>() {
    let disk = B::new();
    let (image, positions) = crash_image(&disk, 5);
    // Under Sync, the last append attests everything before it.
    let attested_end = *positions.last().unwrap();
    let mut tried = 0;
    for offset in positions[0]..attested_end {
        for bit in [0u8, 3, 7] {
            let dir = fresh_copy(&disk, image.path());
            let file = dir.path().join(SEGMENT);
            disk.flip(&file, offset, bit);
            let frame_start = *positions.iter().rev().find(|&&p| p <= offset).unwrap();
            match Store::open_with(dir.path(), disk.options()) {
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
fn closed_store(disk: &impl Backend, dir: &Path) -> Vec<u64> {
    let store = Store::open_with(dir, disk.options()).unwrap();
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

fn after_a_clean_close_a_flip_in_an_indexed_append_is_reported_by_reads_and_verify<B: Backend>() {
    let disk = B::new();
    let dir = disk.tempdir();
    let positions = closed_store(&disk, dir.path());
    disk.flip(&dir.path().join(SEGMENT), positions[1] + 40, 2);
    // Open does not scan what the index covers (that keeps open time bounded); the damage
    // is found by the first read of the frame and by verify, never silently skipped.
    let store = Store::open_with(dir.path(), disk.options()).unwrap();
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
    // `inspect::verify_dir` reads the real file system only (it takes no `Options`).
    if let Some(report) = disk.verify_dir(dir.path()) {
        assert_eq!(report.corruption().count(), 1);
    }
}

fn after_a_clean_close_a_flip_in_the_last_indexed_append_fails_the_open<B: Backend>() {
    // Open checks that the last frame the index covers is still the one it indexed; a
    // damaged one sends it to a full replay, which finds the damage below the watermark.
    let disk = B::new();
    let dir = disk.tempdir();
    let positions = closed_store(&disk, dir.path());
    disk.flip(&dir.path().join(SEGMENT), positions[2] + 40, 2);
    match Store::open_with(dir.path(), disk.options()) {
        Err(Error::Corrupted { offset, .. }) => assert_eq!(offset, positions[2]),
        other => panic!("expected Corrupted, got {other:?}"),
    }
}

/// A log cut short below what its index covered lost acknowledged appends (a file cut or
/// restored from an older copy, not a crash: a crash loses only what was never
/// attested). The open refuses, whether the cut falls inside a frame (which the log's own
/// rule would take for a torn tail) or between two; before, it rebuilt the index over
/// what was left and gave the lost versions to new appends, saying nothing.
fn a_log_cut_below_what_its_index_covered_fails_the_open<B: Backend>() {
    let disk = B::new();
    for inside_a_frame in [false, true] {
        let dir = disk.tempdir();
        let positions = closed_store(&disk, dir.path());
        let segment = dir.path().join(SEGMENT);
        let cut = positions[1] + if inside_a_frame { 20 } else { 0 };
        disk.set_len(&segment, cut);
        match Store::open_with(dir.path(), disk.options()) {
            // Inside a frame, the cut frame is damage below the attested position; between
            // two, the log just ends too early.
            Err(Error::Corrupted { reason, .. }) => assert!(
                reason.contains(if inside_a_frame {
                    "below the attested durable position"
                } else {
                    "they are missing"
                }),
                "{reason}"
            ),
            other => panic!("expected Corrupted, got {other:?}"),
        }
        // Nothing was cut or written: the file is as the damage left it.
        assert_eq!(disk.len(&segment), cut);
    }
}

/// Twenty 500-byte appends in 4 KiB segments, closed cleanly.
fn multi_segment_store(disk: &impl Backend, dir: &Path) {
    let store = Store::open_with(dir, disk.options().with_segment_size_bytes(4096)).unwrap();
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

fn a_damaged_segment_header_of_an_older_segment_is_corruption<B: Backend>() {
    let disk = B::new();
    let dir = disk.tempdir();
    multi_segment_store(&disk, dir.path());
    disk.flip(&dir.path().join(SEGMENT), 3, 0);
    let r = Store::open_with(dir.path(), disk.options().with_segment_size_bytes(4096));
    assert!(
        matches!(r, Err(Error::Corrupted { offset: 0, .. })),
        "{r:?}"
    );
}

fn a_zero_filled_tail_is_end_of_log<B: Backend>() {
    let disk = B::new();
    let (image, _) = crash_image(&disk, 3);
    let dir = fresh_copy(&disk, image.path());
    let file = dir.path().join(SEGMENT);
    let len = disk.len(&file);
    disk.set_len(&file, len + 8192);
    let store = Store::open_with(dir.path(), disk.options()).unwrap();
    assert_eq!(event_count(&store), 6);
    let t = store.recovery_report().truncated.clone().unwrap();
    assert_eq!(
        (t.offset, t.bytes_dropped, t.frames_dropped),
        (len, 8192, 0)
    );
    assert_eq!(t.reason, "zero-filled tail");
    assert_eq!(t.kind, TailKind::ZeroFilled);
    drop(store);
    assert_eq!(disk.len(&file), len + 32, "cut, then a checkpoint");
}

fn a_segment_whose_creation_did_not_complete_is_removed_and_reported<B: Backend>() {
    let disk = B::new();
    let (image, _) = crash_image(&disk, 3);
    let dir = fresh_copy(&disk, image.path());
    let len = disk.len(&dir.path().join(SEGMENT));
    let torn: PathBuf = dir.path().join(format!("segments/{len:020}.seg"));
    disk.create(&torn, &[0x53, 0x4c, 0x4f]);
    let store = Store::open_with(dir.path(), disk.options()).unwrap();
    assert_eq!(store.recovery_report().removed_segments, vec![torn.clone()]);
    assert!(!disk.exists(&torn));
    assert_eq!(event_count(&store), 6);
    store
        .append("s-9", ExpectedVersion::Any, [NewEvent::new("E", "x")])
        .unwrap();
}

fn a_gap_between_segments_is_corruption<B: Backend>() {
    let disk = B::new();
    let dir = disk.tempdir();
    multi_segment_store(&disk, dir.path());
    // Cut the first (sealed) segment short: the next one no longer lines up.
    let file = dir.path().join(SEGMENT);
    let len = disk.len(&file);
    disk.set_len(&file, len - 10);
    let r = Store::open_with(dir.path(), disk.options().with_segment_size_bytes(4096));
    assert!(matches!(r, Err(Error::Corrupted { .. })), "{r:?}");
}

fn read_only_open_reports_a_torn_tail_without_cutting_it<B: Backend>() {
    let disk = B::new();
    let (image, positions) = crash_image(&disk, 3);
    let dir = fresh_copy(&disk, image.path());
    let file = dir.path().join(SEGMENT);
    let len = disk.len(&file);
    disk.set_len(&file, len - 5);
    let store = Store::open_with(dir.path(), disk.options().with_read_only(true)).unwrap();
    assert_eq!(event_count(&store), 4);
    let t = store.recovery_report().truncated.clone().unwrap();
    assert_eq!(t.offset, *positions.last().unwrap());
    drop(store);
    assert_eq!(disk.len(&file), len - 5, "read-only never writes");
}

/// Real file system only: `inspect::verify_dir`, the subject here, takes a path and no
/// `Options`, so it cannot read a simulated store.
#[test]
fn verify_of_a_directory_classifies_corruption_and_torn_tails() {
    let disk = Files;
    let (image, positions) = crash_image(&disk, 4);
    let dir = fresh_copy(&disk, image.path());
    let file = dir.path().join(SEGMENT);
    disk.flip(&file, positions[1] + 35, 1);
    let len = disk.len(&file);
    disk.set_len(&file, len - 3);
    let report = disk.verify_dir(dir.path()).unwrap();
    let found: Vec<_> = report
        .damage
        .iter()
        .map(|d| (d.offset, d.torn_tail))
        .collect();
    assert_eq!(found, vec![(positions[1], false), (positions[3], true)]);
    assert_eq!(report.corruption().count(), 1);
    assert_eq!(report.frames, 2, "frames 0 and 2 are intact");
    assert_eq!(disk.len(&file), len - 3, "verify never writes");
}

fn a_crash_image_with_preallocated_space_recovers_every_append<B: Backend>() {
    let disk = B::new();
    let live = disk.tempdir();
    let options = || {
        disk.options()
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
    let image = disk.tempdir();
    copy_store(&disk, live.path(), image.path());
    // Sealed segments end at their last frame; the active one in zeros.
    let mut base = 0;
    for name in disk.list(&image.path().join("segments")) {
        assert_eq!(name, format!("{base:020}.seg"));
        base += disk.len(&image.path().join("segments").join(name));
    }
    assert!(
        base > info.head.0,
        "the active segment holds preallocated zeros"
    );
    drop(store);
    // A clean close cuts the zeros.
    let segments = live.path().join("segments");
    let total: u64 = disk
        .list(&segments)
        .into_iter()
        .map(|name| disk.len(&segments.join(name)))
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

on_both_backends! {
    torn_tail_at_every_byte_offset_of_the_last_frame_is_truncated_and_reported,
    garbage_over_the_last_frame_is_a_torn_tail_not_corruption,
    bit_flips_below_the_attested_watermark_are_corruption,
    after_a_clean_close_a_flip_in_an_indexed_append_is_reported_by_reads_and_verify,
    after_a_clean_close_a_flip_in_the_last_indexed_append_fails_the_open,
    a_log_cut_below_what_its_index_covered_fails_the_open,
    a_damaged_segment_header_of_an_older_segment_is_corruption,
    a_zero_filled_tail_is_end_of_log,
    a_segment_whose_creation_did_not_complete_is_removed_and_reported,
    a_gap_between_segments_is_corruption,
    read_only_open_reports_a_torn_tail_without_cutting_it,
    a_crash_image_with_preallocated_space_recovers_every_append,
}
