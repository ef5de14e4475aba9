//! State-machine property test: the store against a `BTreeMap` model, with reopen and
//! process-crash transitions (a crash image is the files as they are while the store is
//! open: what a `kill -9` leaves behind).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs;
use std::ops::ControlFlow;
use std::path::Path;

use proptest::prelude::*;
use streamlog::{
    Durability, Error, ExpectedVersion, NewEvent, Options, Position, RecordedEvent, Store,
};

#[derive(Debug, Clone)]
enum Expect {
    Any,
    NoStream,
    Exists,
    /// The stream's actual last version plus this delta (0 = right).
    Exact(i8),
}

#[derive(Debug, Clone)]
enum Op {
    Append {
        stream: u8,
        expect: Expect,
        sizes: Vec<u16>,
    },
    Retry,
    Reopen,
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    let expect = prop_oneof![
        3 => Just(Expect::Any),
        1 => Just(Expect::NoStream),
        1 => Just(Expect::Exists),
        3 => (-1i8..=1).prop_map(Expect::Exact),
    ];
    prop_oneof![
        12 => (0u8..4, expect, proptest::collection::vec(0u16..600, 1..5))
            .prop_map(|(stream, expect, sizes)| Op::Append { stream, expect, sizes }),
        2 => Just(Op::Retry),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash),
    ]
}

#[derive(Default)]
struct Model {
    streams: BTreeMap<String, Vec<Vec<u8>>>,
    all: Vec<(String, u64)>,
}

/// Small segments, a 16-entry memtable, a 4-stream cache and a 2 KiB frame cache, so that
/// rollover, index flushes, merges, cache misses and evictions all happen within a few
/// dozen appends.
fn options(collide: bool) -> Options {
    let o = Options::default()
        .with_segment_size_bytes(4096)
        .with_durability(Durability::Buffered)
        .with_memtable_entries(16)
        .with_stream_cache_entries(4)
        .with_frame_cache_bytes(2048)
        .with_background_index_maintenance(false);
    if collide {
        o.with_forced_hash_collisions()
    } else {
        o
    }
}

/// What a kill -9 leaves: the segment and index files as they are.
fn copy_store(from: &Path, to: &Path) {
    for sub in ["segments", "index"] {
        if !from.join(sub).exists() {
            continue;
        }
        fs::create_dir_all(to.join(sub)).unwrap();
        for e in fs::read_dir(from.join(sub)).unwrap() {
            let e = e.unwrap();
            fs::copy(e.path(), to.join(sub).join(e.file_name())).unwrap();
        }
    }
}

fn check(store: &Store, model: &Model) {
    for (name, events) in &model.streams {
        let owned: Vec<RecordedEvent> = store
            .read_stream(name, 0)
            .unwrap()
            .map(|e| e.unwrap())
            .collect();
        let got: Vec<_> = owned.iter().map(|e| e.data.clone()).collect();
        assert_eq!(&got, events, "stream {name}");
        // The borrowing reader hands over exactly what the iterator yields.
        let mut viewed = Vec::new();
        let n = store
            .read_stream_with(name, 0, |e| {
                viewed.push(e.to_recorded());
                ControlFlow::Continue(())
            })
            .unwrap();
        assert_eq!(n, owned.len() as u64);
        assert_eq!(viewed, owned, "read_stream_with of {name}");
        let back: Vec<_> = store
            .read_stream_backward(name, None)
            .unwrap()
            .map(|e| e.unwrap().version)
            .collect();
        assert_eq!(back, (0..events.len() as u64).rev().collect::<Vec<_>>());
        assert_eq!(
            store.stream_version(name).unwrap(),
            (events.len() as u64).checked_sub(1)
        );
    }
    let owned: Vec<RecordedEvent> = store
        .read_all(Position::START)
        .unwrap()
        .map(|e| e.unwrap())
        .collect();
    let all: Vec<_> = owned
        .iter()
        .map(|e| (e.stream.to_string(), e.version))
        .collect();
    assert_eq!(all, model.all);
    let mut viewed = Vec::new();
    store
        .read_all_with(Position::START, |e| {
            viewed.push(e.to_recorded());
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(viewed, owned, "read_all_with");
}

fn run(ops: Vec<Op>, collide: bool) {
    let mut dirs = vec![tempfile::tempdir().unwrap()];
    let mut store = Store::open_with(dirs[0].path(), options(collide)).unwrap();
    let mut model = Model::default();
    let mut last_append: Option<(String, ExpectedVersion, Vec<NewEvent>, u64)> = None;
    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Append {
                stream,
                expect,
                sizes,
            } => {
                let name = format!("stream-{stream}");
                let current = model.streams.get(&name).map_or(0, Vec::len) as u64;
                let last = current.checked_sub(1);
                let (expected, ok) = match expect {
                    Expect::Any => (ExpectedVersion::Any, true),
                    Expect::NoStream => (ExpectedVersion::NoStream, last.is_none()),
                    Expect::Exists => (ExpectedVersion::StreamExists, last.is_some()),
                    Expect::Exact(d) => {
                        let v = last.unwrap_or(0) as i64 + i64::from(d);
                        if v < 0 {
                            continue;
                        }
                        (ExpectedVersion::Exact(v as u64), last == Some(v as u64))
                    }
                };
                let events: Vec<NewEvent> = sizes
                    .iter()
                    .enumerate()
                    .map(|(i, &n)| NewEvent::new("E", vec![(step + i) as u8; usize::from(n)]))
                    .collect();
                let r = store.append(&name, expected, events.clone());
                if ok {
                    let r = r.unwrap();
                    assert_eq!(r.first_version, current, "step {step}");
                    assert!(!r.deduplicated);
                    let entry = model.streams.entry(name.clone()).or_default();
                    for (i, e) in events.iter().enumerate() {
                        entry.push(e.data.clone());
                        model.all.push((name.clone(), current + i as u64));
                    }
                    last_append = Some((name, expected, events, current));
                } else {
                    assert!(
                        matches!(r, Err(Error::WrongExpectedVersion { .. })),
                        "step {step}: {r:?}"
                    );
                }
            }
            Op::Retry => {
                if let Some((name, expected, events, first)) = &last_append {
                    let r = store.append(name, *expected, events.clone()).unwrap();
                    assert!(r.deduplicated, "step {step}");
                    assert_eq!(r.first_version, *first);
                }
            }
            Op::Reopen => {
                let dir = dirs.last().unwrap().path().to_path_buf();
                drop(store);
                store = Store::open_with(&dir, options(collide)).unwrap();
                assert!(store.recovery_report().clean_shutdown);
            }
            Op::Crash => {
                let image = tempfile::tempdir().unwrap();
                copy_store(dirs.last().unwrap().path(), image.path());
                drop(store);
                store = Store::open_with(image.path(), options(collide)).unwrap();
                assert!(
                    store.recovery_report().is_clean(),
                    "a process crash tears nothing"
                );
                dirs.push(image);
            }
        }
        check(&store, &model);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn store_behaves_like_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        run(ops, false);
    }

    #[test]
    fn store_behaves_like_the_model_when_every_stream_hash_collides(
        ops in proptest::collection::vec(op(), 1..40),
    ) {
        run(ops, true);
    }
}
