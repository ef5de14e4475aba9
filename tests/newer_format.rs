//! Files written by a newer streamlog (an intact header declaring a newer format version)
//! are refused with `Error::UnsupportedFormat`, never taken for damage, and never cut,
//! removed or replaced: not by a writer's open, not by a read-only open, not by a reindex.
//! (Snapshot files are refused by their first use, which an open does not make.)
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

/// A snapshot aggregate of a counter: its state is the number of events applied.
#[derive(Debug, Default)]
struct Count(u64);

impl streamlog::Aggregate for Count {
    const SCHEMA: &'static str = "v1";
    fn apply(&mut self, _: &streamlog::EventView<'_>) {
        self.0 += 1;
    }
    fn encode(&self) -> Vec<u8> {
        self.0.to_le_bytes().to_vec()
    }
    fn decode(bytes: &[u8]) -> Option<Self> {
        Some(Count(u64::from_le_bytes(bytes.try_into().ok()?)))
    }
}

/// Snapshot files are opened at their first use: a store whose snapshot files are of a
/// newer format opens and serves its events; every use of the snapshots refuses them, a
/// load replays the events instead and says why, and no snapshot file is touched.
#[test]
fn a_snapshot_segment_of_a_newer_format_is_refused_by_every_use_and_not_discarded() {
    let tmp = tempfile::tempdir().unwrap();
    filled_store(tmp.path());
    let seg = snapshot_segment(tmp.path());
    set_version(&seg, NEWER, Some(28));
    let snapshot_files = || files(&tmp.path().join(streamlog::SNAPSHOTS_DIR));
    let before = snapshot_files();
    let refused = |what: &str, r: streamlog::Result<()>| match r {
        Err(Error::UnsupportedFormat {
            file,
            found,
            supported,
        }) => assert_eq!(
            (file.as_path(), found, supported),
            (seg.as_path(), NEWER, FORMAT_VERSION),
            "{what}"
        ),
        other => panic!("{what}: {other:?}"),
    };
    for read_only in [false, true] {
        let store = Store::open_with(tmp.path(), options().with_read_only(read_only)).unwrap();
        assert_eq!(store.read_stream("s-0", 0).unwrap().count(), 10);
        refused("snapshot_report", store.snapshot_report().map(drop));
        refused("latest_snapshot", store.latest_snapshot("s-0").map(drop));
        let loaded = store.load::<Count>("s-0").unwrap();
        assert_eq!((loaded.state.0, loaded.snapshot_version), (10, None));
        assert!(
            loaded.ignored_snapshots.iter().any(|i| i.contains("newer")),
            "{:?}",
            loaded.ignored_snapshots
        );
        if !read_only {
            refused(
                "save_snapshot",
                store.save_snapshot("s-1", 2, "v1", &2u64.to_le_bytes()),
            );
        }
        store.close().unwrap();
        assert!(snapshot_files() == before, "read_only {read_only}");
    }
    Store::reindex(tmp.path(), options(), |_| {}).unwrap();
    assert!(snapshot_files() == before, "reindex");
    // A scavenge ends by dropping snapshots, an erasure by dropping the stream's: both
    // are refused before anything is written, not half done.
    let store = Store::open_with(tmp.path(), options()).unwrap();
    let head = store.head();
    refused(
        "scavenge",
        store
            .scavenge(&streamlog::ScavengeOptions::default().with_compress_all(true))
            .map(drop),
    );
    refused(
        "erase_stream",
        store.erase_stream("s-0", ExpectedVersion::Any).map(drop),
    );
    assert_eq!(store.head(), head);
    assert_eq!(store.read_stream("s-0", 0).unwrap().count(), 10);
    assert!(!tmp.path().join(streamlog::SCAVENGE_MARKER).exists());
    store.close().unwrap();
    assert!(snapshot_files() == before, "scavenge, erase");
    let store = Store::open_with(tmp.path(), options()).unwrap();
    assert_eq!(store.recovery_report().index.rebuilt, None);
    assert_eq!(store.read_stream("s-0", 0).unwrap().count(), 10);
}
