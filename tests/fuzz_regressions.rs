//! Regression cases found by the cargo-fuzz targets in `fuzz/` (see
//! docs/reliability-fuzz.md). Each open bug is `#[ignore]`d until it is fixed; run them with
//! `cargo test --test integration fuzz_regressions:: -- --ignored`.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;

use streamlog::index::{Entry, Manifest, Table, table_file_name, write_table};
use streamlog::io::Storage;
use streamlog::io::sim::SimStorage;
use streamlog::{ExpectedVersion, INDEX_DIR, NewEvent, Options, Position, RecordedEvent, Store};

const DB: &str = "/db";

fn options(storage: &SimStorage) -> Options {
    Options::default()
        .with_storage(Arc::new(storage.clone()))
        .with_segment_size_bytes(4096)
        .with_background_index_maintenance(false)
        .with_memtable_entries(16)
}

/// A cleanly closed store with index tables; returns its events.
fn build(storage: &SimStorage) -> Vec<RecordedEvent> {
    let store = Store::open_with(DB, options(storage)).unwrap();
    for i in 0..40u32 {
        let stream = if i % 2 == 0 { "account-1" } else { "account-2" };
        store
            .append(
                stream,
                ExpectedVersion::Any,
                [NewEvent::new("E", i.to_le_bytes())],
            )
            .unwrap();
    }
    store.close().unwrap();
    let store = Store::open_with(DB, options(storage)).unwrap();
    let events = store
        .read_all(Position::START)
        .unwrap()
        .collect::<streamlog::Result<Vec<_>>>()
        .unwrap();
    store.close().unwrap();
    events
}

fn index_dir() -> std::path::PathBuf {
    Path::new(DB).join(INDEX_DIR)
}

fn manifest(storage: &SimStorage) -> Manifest {
    Manifest::decode(&storage.live_bytes(&index_dir().join("MANIFEST")).unwrap()).unwrap()
}

/// Found by `segment_recovery` (mode 1: one byte of the template's index table
/// overwritten; input hex `01 00 00 10 00 00 00 ff 00`) and `index_table` (mode 1).
/// The index is derived data, yet a damaged block of a table is not detected at open
/// (`Table::open` checks header, footer and fences; block CRCs only when a block is read),
/// so the index is not rebuilt, and every stream read that needs the block fails with
/// `Corrupted` (on every reopen too) instead of returning the log's events.
#[test]
#[ignore = "known limitation: table block CRCs are checked on use (a full check at open would make \
            open time grow with the index); reads that need a damaged block fail with a typed \
            Corrupted error naming the index file, verify reports it, and reindex fixes it"]
fn damaged_index_block_does_not_break_stream_reads() {
    let storage = SimStorage::new(0);
    let events = build(&storage);
    let m = manifest(&storage);
    let table = index_dir().join(table_file_name(*m.tables.first().unwrap()));
    // First byte of the first block (after the 16-byte header).
    storage.flip_bit(&table, 16, 0).unwrap();
    let store = Store::open_with(DB, options(&storage)).unwrap();
    for stream in ["account-1", "account-2"] {
        let got = store
            .read_stream(stream, 0)
            .unwrap()
            .collect::<streamlog::Result<Vec<_>>>()
            .unwrap_or_else(|e| panic!("read_stream({stream:?}): {e}"));
        let want: Vec<_> = events
            .iter()
            .filter(|e| &*e.stream == stream)
            .cloned()
            .collect();
        assert_eq!(got, want);
    }
}

/// Found by `index_table` (mode 2: table bytes with the CRCs fixed by the harness; input
/// base64 `YXhg3nVudC3e3t6e/v3WV1twV25XV4c=`). An index entry whose `count` was huge made
/// the stream reader reserve room for `count` events before the frame was decoded: a
/// ~290 GB allocation request that aborted the process. Fixed: readers size their buffers
/// by the decoded frame (the events it really holds, bounded by its length). The index
/// only says where an append is; the events, their versions and their number come from
/// the frame. Here every entry is forged to claim `u32::MAX` events, with valid CRCs and
/// a manifest that still matches the log, so nothing at open notices.
#[test]
fn huge_count_in_index_entry_does_not_allocate_without_bound() {
    let storage = SimStorage::new(0);
    let events = build(&storage);
    let want: Vec<RecordedEvent> = events
        .iter()
        .filter(|e| &*e.stream == "account-1")
        .cloned()
        .collect();
    assert_eq!(want.len(), 20);
    let m = manifest(&storage);
    let dir = index_dir();
    let mut entries: Vec<Entry> = Vec::new();
    for &id in &m.tables {
        let t = Table::open(&storage, &dir, id).unwrap();
        t.for_each(|e| {
            entries.push(e);
            Ok(())
        })
        .unwrap();
    }
    entries.sort_by_key(|e| e.key());
    for e in &mut entries {
        e.count = u32::MAX;
    }
    for &id in &m.tables {
        storage.remove(&dir.join(table_file_name(id))).unwrap();
    }
    let id = m.next_table_id;
    write_table(&storage, &dir, id, entries.into_iter()).unwrap();
    Manifest {
        next_table_id: id + 1,
        tables: vec![id],
        ..m
    }
    .store(&storage, &dir)
    .unwrap();
    let store = Store::open_with(DB, options(&storage)).unwrap();
    // The reads return (no abort) and return the log's own events. Forward, the reader
    // steps to the version after the last one an entry claims (2^32 - 1 after the first
    // append), for which there is no entry: it ends after the first append's events, a
    // prefix of the stream, not an error.
    let forward = store
        .read_stream("account-1", 0)
        .unwrap()
        .collect::<streamlog::Result<Vec<_>>>()
        .unwrap();
    assert!(
        !forward.is_empty() && want.starts_with(&forward),
        "forward read: {forward:?}"
    );
    // Backward, the reader steps to the version before each entry's first one, which the
    // counts do not change: it sees every append.
    let mut backward = store
        .read_stream_backward("account-1", None)
        .unwrap()
        .collect::<streamlog::Result<Vec<_>>>()
        .unwrap();
    backward.reverse();
    assert_eq!(backward, want);
    // Verification names the damage: each entry's count disagrees with its frame.
    let report = store.verify(|_| {}).unwrap();
    assert!(
        report
            .index_problems
            .iter()
            .any(|p| p.contains("holds 4294967295 events")),
        "verify: {:?}",
        report.index_problems
    );
}

/// Found by `index_table` (mode 2, CRCs fixed by the harness; input hex
/// `616399908a00ffff000074ff2d6e326163636f756e742d6f726465727331`
/// `60b2b2ff30b2ffb2b2ffffffff0ab2ffff312d`), in 1.5 minutes. `Table::open`
/// (src/index/table.rs, the `expect_fences` computation) multiplies the footer's entry
/// count without checking: a footer with a valid CRC and a huge count panics with
/// "attempt to multiply with overflow" wherever overflow checks are on (debug builds,
/// `cargo test`, the fuzz build); in release it wraps. Reached from `Store::open` through
/// the index manifest's tables, so a damaged index could crash the open. Fixed: footer
/// counts are bounded by the file's length before any arithmetic.
#[test]
fn table_open_with_huge_entry_count_does_not_overflow() {
    let mut b = Vec::new();
    b.extend_from_slice(b"SLOGIDX\0");
    b.extend_from_slice(&1u32.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    let mut footer = Vec::new();
    footer.extend_from_slice(&u64::MAX.to_le_bytes()); // entries
    footer.extend_from_slice(&0u64.to_le_bytes()); // blocks
    footer.extend_from_slice(&16u64.to_le_bytes()); // fences offset
    footer.extend_from_slice(&0u32.to_le_bytes()); // fences crc
    footer.extend_from_slice(&0u32.to_le_bytes());
    footer.extend_from_slice(b"SLIDXEND");
    let crc = crc32(&footer);
    footer.extend_from_slice(&crc.to_le_bytes());
    footer.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&footer);
    let storage = SimStorage::new(0);
    let dir = Path::new("/t");
    storage.create_dir_all(dir).unwrap();
    let f = storage.create(&dir.join(table_file_name(0))).unwrap();
    f.write_at(&b, 0).unwrap();
    assert!(Table::open(&storage, dir, 0).is_err());
}

/// CRC-32 (IEEE), bitwise (the tests do not depend on crc32fast).
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &x in bytes {
        crc ^= u32::from(x);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
