//! Files written by a newer streamlog (an intact header declaring a newer format version)
//! are refused with `Error::UnsupportedFormat`, never taken for damage, and never cut,
//! removed or replaced: not by a writer's open, not by a read-only open, not by a reindex.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};

use streamlog::{Durability, Error, ExpectedVersion, NewEvent, Options, Store};

fn options() -> Options {
    Options::default()
        .with_durability(Durability::Buffered)
        .with_background_index_maintenance(false)
}

/// A closed store with events in two streams, index tables and a snapshot.
fn filled_store(dir: &Path) {
    let store = Store::open_with(dir, options()).unwrap();
    for i in 0..20u32 {
        let stream = format!("s-{}", i % 2);
        store
            .append(&stream, ExpectedVersion::Any, [NewEvent::new("E", "x")])
            .unwrap();
    }
    store.save_snapshot("s-0", 3, "v1", b"state").unwrap();
    store.close().unwrap();
}

/// Every file under `dir` with its bytes.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(p) = todo.pop() {
        if p.is_dir() {
            todo.extend(fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else {
            out.push((p.clone(), fs::read(&p).unwrap()));
        }
    }
    out.sort();
    out
}

/// The one file under `dir` (recursively) that `pick` accepts.
fn find(dir: &Path, pick: impl Fn(&Path) -> bool) -> PathBuf {
    let found: Vec<PathBuf> = files(dir)
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| pick(p))
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    found.into_iter().next().unwrap()
}

fn event_segment(dir: &Path) -> PathBuf {
    dir.join(streamlog::SEGMENTS_DIR)
        .join(streamlog::segment::segment_file_name(0))
}

fn snapshot_segment(dir: &Path) -> PathBuf {
    find(&dir.join(streamlog::SNAPSHOTS_DIR), |p| {
        p.extension().is_some_and(|e| e == "seg")
    })
}

fn index_table(dir: &Path) -> PathBuf {
    find(&dir.join(streamlog::INDEX_DIR), |p| {
        p.extension().is_some_and(|e| e == "idx")
    })
}

fn manifest(dir: &Path) -> PathBuf {
    dir.join(streamlog::INDEX_DIR).join("MANIFEST")
}

/// Sets the u32 version at offset 8 of `path`; with `crc_over`, recomputes the CRC-32
/// stored right after the covered bytes (`..crc_over`, or all but the last 4 bytes when 0).
/// The segment format version this build writes, and one it does not read.
const FORMAT_VERSION: u32 = streamlog::format::FORMAT_VERSION;
const NEWER: u32 = FORMAT_VERSION + 1;

fn set_version(path: &Path, version: u32, crc_over: Option<usize>) {
    let mut b = fs::read(path).unwrap();
    b[8..12].copy_from_slice(&version.to_le_bytes());
    if let Some(n) = crc_over {
        let n = if n == 0 { b.len() - 4 } else { n };
        let crc = crc32fast::hash(&b[..n]);
        b[n..n + 4].copy_from_slice(&crc.to_le_bytes());
    }
    fs::write(path, b).unwrap();
}

/// Every way to open the store refuses it as written by a newer format, naming `file`,
/// and the directory is byte for byte what it was.
fn assert_refused_untouched(dir: &Path, file: &Path, found: u32, supported: u32) {
    let before = files(dir);
    let attempts: [(&str, streamlog::Result<()>); 3] = [
        ("open", Store::open_with(dir, options()).map(drop)),
        (
            "read-only open",
            Store::open_with(dir, options().with_read_only(true)).map(drop),
        ),
        ("reindex", Store::reindex(dir, options(), |_| {}).map(drop)),
    ];
    for (what, r) in attempts {
        match r {
            Err(Error::UnsupportedFormat {
                file: f,
                found: fd,
                supported: s,
            }) => {
                assert_eq!((f.as_path(), fd, s), (file, found, supported), "{what}");
            }
            other => panic!("{what}: {other:?}"),
        }
        assert!(files(dir) == before, "{what} changed the directory");
    }
}

#[test]
fn a_segment_of_a_newer_format_is_refused_and_left_as_it_is() {
    let tmp = tempfile::tempdir().unwrap();
    filled_store(tmp.path());
    let seg = event_segment(tmp.path());
    set_version(&seg, NEWER, Some(28));
    // The only (so the last) segment: not mistaken for a torn creation and removed.
    assert_refused_untouched(tmp.path(), &seg, NEWER, FORMAT_VERSION);
    let err = Store::open(tmp.path()).unwrap_err().to_string();
    assert!(err.contains("newer streamlog"), "{err}");
    assert!(err.contains(&format!("format version {NEWER}")), "{err}");
    // verify refuses too rather than call it damage.
    assert!(matches!(
        streamlog::inspect::verify_dir(tmp.path(), |_| {}),
        Err(Error::UnsupportedFormat { .. })
    ));
}

#[test]
fn a_newer_version_in_a_header_whose_crc_fails_is_damage() {
    let tmp = tempfile::tempdir().unwrap();
    filled_store(tmp.path());
    set_version(&event_segment(tmp.path()), NEWER, None);
    assert!(matches!(
        Store::open_with(tmp.path(), options().with_read_only(true)),
        Err(Error::Corrupted { .. })
    ));
}

#[test]
fn an_index_manifest_of_a_newer_format_is_never_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    filled_store(tmp.path());
    let m = manifest(tmp.path());
    set_version(&m, 7, Some(0));
    assert_refused_untouched(tmp.path(), &m, 7, 1);
}

#[test]
fn an_index_table_of_a_newer_format_is_never_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    filled_store(tmp.path());
    let t = index_table(tmp.path());
    set_version(&t, 3, None);
    assert_refused_untouched(tmp.path(), &t, 3, 2);
}

#[test]
fn a_snapshot_segment_of_a_newer_format_is_not_discarded() {
    let tmp = tempfile::tempdir().unwrap();
    filled_store(tmp.path());
    let seg = snapshot_segment(tmp.path());
    set_version(&seg, NEWER, Some(28));
    assert_refused_untouched(tmp.path(), &seg, NEWER, FORMAT_VERSION);
}
