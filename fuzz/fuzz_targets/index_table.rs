//! Index tables and the manifest on arbitrary bytes.
//!
//! Directly: `Table::open` + `floor` + `for_each` + `iter`, and `Manifest::decode`, never
//! panic. Through the store: next to a valid log, a damaged index never makes the open
//! fail (it is derived data: rebuilt and reported in `recovery_report().index.rebuilt`) and
//! reads return exactly the log's events.
//!
//! The first input byte picks a mode:
//! - 0: raw bytes become `index/00000000000000000000.idx`, named by a valid manifest;
//! - 1: the template's real table 0 with a few bytes overwritten;
//! - 2: as 1, then the harness fixes every CRC of the table (forged: the store must still
//!   open, but reads are only held to not panicking: a table with valid CRCs is trusted);
//! - 3: raw bytes become `index/MANIFEST` next to the real table 0;
//! - 4: as 3 with the manifest's CRC fixed (forged, as in 2).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use streamlog::index::{Entry, Manifest, Table, table_file_name};
use streamlog::io::sim::SimStorage;
use streamlog::{INDEX_DIR, Store};
use streamlog_fuzz::{
    DB, Expect, Input, check_store, fix_table_crcs, index_options, index_template, put,
};

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let mode = input.u8() % 5;
    let hash = input.u64();
    let version = input.u64();
    let t = index_template();
    let table0 = t.table0.as_deref().expect("template table");
    let (table, manifest_bytes, forged) = match mode {
        0 => (input.rest().to_vec(), None, false),
        1 | 2 => {
            let mut b = table0.to_vec();
            let n = 1 + input.u8() % 8;
            for _ in 0..n {
                let at = input.u32() as usize % b.len();
                b[at] = input.u8();
            }
            if mode == 2 {
                fix_table_crcs(&mut b);
            }
            (b, None, mode == 2)
        }
        _ => {
            let mut m = input.rest().to_vec();
            if mode == 4 && m.len() >= 4 {
                let body = m.len() - 4;
                let crc = crc32fast::hash(&m[..body]);
                m[body..].copy_from_slice(&crc.to_le_bytes());
            }
            (table0.to_vec(), Some(m), mode == 4)
        }
    };

    // Directly.
    if let Some(m) = &manifest_bytes {
        let _ = Manifest::decode(m);
    }
    let direct_ok = direct(&table, hash, version);
    if mode == 0 {
        let mut fixed = table.clone();
        fix_table_crcs(&mut fixed);
        direct(&fixed, hash, version);
        let _ = Manifest::decode(&table);
    }

    // Through the store.
    let storage = SimStorage::new(0);
    for (p, bytes) in t.segments() {
        put(&storage, &Path::new(DB).join(p), bytes);
    }
    let index_dir = Path::new(DB).join(INDEX_DIR);
    put(&storage, &index_dir.join(table_file_name(0)), &table);
    match &manifest_bytes {
        Some(m) => put(&storage, &index_dir.join("MANIFEST"), m),
        None => {
            let real = t.manifest.clone().expect("template manifest");
            let m = Manifest {
                next_table_id: real.next_table_id.max(1),
                tables: vec![0],
                ..real
            };
            m.store(&storage, &index_dir).expect("store manifest");
        }
    }
    let store = Store::open_with(DB, index_options(&storage))
        .unwrap_or_else(|e| panic!("a damaged index made the open fail: {e}"));
    if manifest_bytes.is_none() && !direct_ok {
        assert!(
            store.recovery_report().index.rebuilt.is_some(),
            "table 0 does not open, yet the index was not rebuilt"
        );
    }
    let expect = if forged {
        Expect::Forged
    } else {
        Expect::Exactly(&t.events)
    };
    check_store(&store, expect);
    store.close().expect("close");
    let store = Store::open_with(DB, index_options(&storage))
        .unwrap_or_else(|e| panic!("reopen after close failed: {e}"));
    check_store(&store, expect);
    store.close().expect("close 2");
});

/// Opens `bytes` as table 0 and walks it; returns whether it opened.
fn direct(bytes: &[u8], hash: u64, version: u64) -> bool {
    let storage = SimStorage::new(0);
    let dir = Path::new("/t");
    put(&storage, &dir.join(table_file_name(0)), bytes);
    let Ok(table) = Table::open(&storage, dir, 0) else {
        return false;
    };
    let mut seen: Vec<Entry> = Vec::new();
    let walked = table.for_each(|e| {
        seen.push(e);
        Ok(())
    });
    assert!(
        seen.len() as u64 <= table.len(),
        "for_each yields more entries than the table holds"
    );
    let iterated: Vec<Entry> = table.iter().collect();
    if walked.is_ok() {
        assert!(iterated == seen, "iter and for_each disagree");
    }
    for (h, v) in [(hash, version), (hash, u64::MAX)]
        .into_iter()
        .chain(seen.first().map(|e| (e.hash, e.first_version)))
        .chain(seen.last().map(|e| (e.hash, u64::MAX)))
    {
        let mut n = 0u64;
        let _ = table.floor(h, v, |e| {
            assert_eq!(e.hash, h, "floor visits another hash");
            // (No order assertion: a table with forged CRCs need not be sorted.)
            n += 1;
            n <= table.len()
        });
        assert!(
            n <= table.len(),
            "floor visits more entries than the table holds"
        );
    }
    true
}
