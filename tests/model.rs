//! State-machine property test: the store against a `BTreeMap` model, with reopen and
//! process-crash transitions (a crash image is the files as they are while the store is
//! open: what a `kill -9` leaves behind), and stream lifecycle transitions: metadata
//! (max count, truncate-before), soft delete and re-creation, hard delete.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs;
use std::ops::ControlFlow;
use std::path::Path;

use proptest::prelude::*;
use streamlog::{
    Durability, Error, ExpectedVersion, METADATA_STREAM, NewEvent, Options, Position,
    RecordedEvent, ScavengeOptions, Store, StreamMetadata,
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
    Delete {
        stream: u8,
        expect: Expect,
    },
    Tombstone {
        stream: u8,
        expect: Expect,
    },
    SetMetadata {
        stream: u8,
        /// Against the metadata version.
        expect: Expect,
        max_count: Option<u64>,
        truncate_before: Option<u64>,
    },
    /// A scavenge: reads must not change, and what it removed stays removed.
    Scavenge,
}

fn op() -> impl Strategy<Value = Op> {
    let expect = prop_oneof![
        3 => Just(Expect::Any),
        1 => Just(Expect::NoStream),
        1 => Just(Expect::Exists),
        3 => (-1i8..=1).prop_map(Expect::Exact),
    ];
    prop_oneof![
        12 => (0u8..4, expect.clone(), proptest::collection::vec(0u16..600, 1..5))
            .prop_map(|(stream, expect, sizes)| Op::Append { stream, expect, sizes }),
        2 => Just(Op::Retry),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash),
        1 => Just(Op::Scavenge),
        1 => (0u8..4, expect.clone()).prop_map(|(stream, expect)| Op::Delete { stream, expect }),
        1 => (0u8..8, expect.clone()).prop_map(|(stream, expect)| Op::Tombstone { stream, expect }),
        2 => (0u8..4, expect, proptest::option::of(1u64..4), proptest::option::of(0u64..6))
            .prop_map(|(stream, expect, max_count, truncate_before)| Op::SetMetadata {
                stream,
                expect,
                max_count,
                truncate_before,
            }),
    ]
}

/// One stream as the model sees it.
#[derive(Default)]
struct StreamModel {
    /// Every event ever appended (deleted ones too), by version.
    events: Vec<Vec<u8>>,
    max_count: Option<u64>,
    truncate_before: Option<u64>,
    metadata_version: Option<u64>,
    tombstoned: bool,
    /// The appends, as (first version, events), in order.
    appends: Vec<(u64, u64)>,
    /// The first version a scavenge left: removed versions never come back.
    floor: u64,
}

impl StreamModel {
    fn last(&self) -> Option<u64> {
        (self.events.len() as u64).checked_sub(1)
    }

    /// The last version as expected versions see it (`None` when soft deleted).
    fn visible_last(&self) -> Option<u64> {
        self.last()
            .filter(|&l| self.truncate_before.is_none_or(|tb| l >= tb))
    }

    fn keeps(&self, version: u64) -> bool {
        let last = self.last().unwrap_or(0);
        !self.tombstoned
            && version >= self.floor
            && self.truncate_before.is_none_or(|tb| version >= tb)
            && self.max_count.is_none_or(|n| version + n > last)
    }

    /// What a scavenge removes: the leading appends whose events are all hidden, never
    /// the last one.
    fn scavenge(&mut self) {
        let Some((&last, leading)) = self.appends.split_last() else {
            return;
        };
        let _ = last;
        let mut floor = self.floor;
        for &(first, n) in leading {
            if (first..first + n).any(|v| self.keeps(v)) {
                break;
            }
            floor = floor.max(first + n);
        }
        self.floor = floor;
    }

    fn kept(&self) -> Vec<u64> {
        (0..self.events.len() as u64)
            .filter(|&v| self.keeps(v))
            .collect()
    }
}

#[derive(Default)]
struct Model {
    streams: BTreeMap<String, StreamModel>,
    /// Every event in commit order (hidden ones too).
    all: Vec<(String, u64)>,
    /// Events of the system stream of stream metadata.
    system_events: u64,
}

impl Model {
    /// The expected version `expect` makes of `last`, and whether it holds; `None` when
    /// it names a version below 0.
    fn expected(expect: &Expect, last: Option<u64>) -> Option<(ExpectedVersion, bool)> {
        Some(match expect {
            Expect::Any => (ExpectedVersion::Any, true),
            Expect::NoStream => (ExpectedVersion::NoStream, last.is_none()),
            Expect::Exists => (ExpectedVersion::StreamExists, last.is_some()),
            Expect::Exact(d) => {
                let v = last.map_or(0, |l| l as i64) + i64::from(*d);
                if v < 0 {
                    return None;
                }
                (ExpectedVersion::Exact(v as u64), last == Some(v as u64))
            }
        })
    }

    fn record_system_event(&mut self) {
        self.all
            .push((METADATA_STREAM.to_string(), self.system_events));
        self.system_events += 1;
    }
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
    for (name, stream) in &model.streams {
        if stream.tombstoned {
            assert!(matches!(
                store.read_stream(name, 0),
                Err(Error::StreamDeleted { .. })
            ));
            assert!(matches!(
                store.read_stream_backward(name, None),
                Err(Error::StreamDeleted { .. })
            ));
            assert!(matches!(
                store.stream_version(name),
                Err(Error::StreamDeleted { .. })
            ));
            assert!(store.stream_metadata(name).unwrap().tombstoned);
            continue;
        }
        let kept = stream.kept();
        let events: Vec<Vec<u8>> = kept
            .iter()
            .map(|&v| stream.events[v as usize].clone())
            .collect();
        let owned: Vec<RecordedEvent> = store
            .read_stream(name, 0)
            .unwrap()
            .map(|e| e.unwrap())
            .collect();
        let got: Vec<_> = owned.iter().map(|e| e.data.clone()).collect();
        assert_eq!(got, events, "stream {name}");
        let versions: Vec<u64> = owned.iter().map(|e| e.version).collect();
        assert_eq!(versions, kept, "stream {name}");
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
        assert_eq!(back, kept.iter().rev().copied().collect::<Vec<_>>());
        assert_eq!(store.stream_version(name).unwrap(), stream.visible_last());
        let m = store.stream_metadata(name).unwrap();
        assert_eq!(
            (
                m.max_count,
                m.truncate_before,
                m.metadata_version,
                m.tombstoned
            ),
            (
                stream.max_count,
                stream.truncate_before,
                stream.metadata_version,
                false
            ),
            "metadata of {name}"
        );
        assert_eq!(
            m.deleted,
            stream.last().is_some() && stream.visible_last().is_none()
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
    let expected_all: Vec<(String, u64)> = model
        .all
        .iter()
        .filter(|(s, v)| model.streams.get(s).is_none_or(|m| m.keeps(*v)))
        .cloned()
        .collect();
    assert_eq!(all, expected_all);
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
        match op.clone() {
            Op::Append {
                stream,
                expect,
                sizes,
            } => {
                let name = format!("stream-{stream}");
                let m = model.streams.entry(name.clone()).or_default();
                let current = m.events.len() as u64;
                let Some((expected, ok)) = Model::expected(&expect, m.visible_last()) else {
                    continue;
                };
                let tombstoned = m.tombstoned;
                let events: Vec<NewEvent> = sizes
                    .iter()
                    .enumerate()
                    .map(|(i, &n)| NewEvent::new("E", vec![(step + i) as u8; usize::from(n)]))
                    .collect();
                let r = store.append(&name, expected, events.clone());
                if tombstoned {
                    assert!(
                        matches!(r, Err(Error::StreamDeleted { .. })),
                        "step {step}: {r:?}"
                    );
                } else if ok {
                    let r = r.unwrap();
                    assert_eq!(r.first_version, current, "step {step}");
                    assert!(!r.deduplicated);
                    let entry = model.streams.entry(name.clone()).or_default();
                    entry.appends.push((current, events.len() as u64));
                    for (i, e) in events.iter().enumerate() {
                        entry.events.push(e.data.clone());
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
                    let r = store.append(name, *expected, events.clone());
                    if model.streams[name].tombstoned {
                        assert!(matches!(r, Err(Error::StreamDeleted { .. })), "{r:?}");
                    } else {
                        let r = r.unwrap();
                        assert!(r.deduplicated, "step {step}");
                        assert_eq!(r.first_version, *first);
                    }
                }
            }
            Op::Delete { stream, expect } | Op::Tombstone { stream, expect } => {
                let hard = matches!(op, Op::Tombstone { .. });
                let name = format!("stream-{stream}");
                let m = model.streams.entry(name.clone()).or_default();
                let Some((expected, ok)) = Model::expected(&expect, m.visible_last()) else {
                    continue;
                };
                let r = if hard {
                    store.tombstone_stream(&name, expected)
                } else {
                    store.delete_stream(&name, expected)
                };
                if m.tombstoned {
                    assert!(matches!(r, Err(Error::StreamDeleted { .. })), "{r:?}");
                } else if ok {
                    r.unwrap();
                    if hard {
                        m.tombstoned = true;
                    } else if let Some(last) = m.last() {
                        m.truncate_before = Some(last + 1);
                    }
                    m.metadata_version = Some(m.metadata_version.map_or(0, |v| v + 1));
                    model.record_system_event();
                } else {
                    assert!(
                        matches!(r, Err(Error::WrongExpectedVersion { .. })),
                        "step {step}: {r:?}"
                    );
                }
            }
            Op::SetMetadata {
                stream,
                expect,
                max_count,
                truncate_before,
            } => {
                let name = format!("stream-{stream}");
                let m = model.streams.entry(name.clone()).or_default();
                let Some((expected, ok)) = Model::expected(&expect, m.metadata_version) else {
                    continue;
                };
                let mut metadata = StreamMetadata::new();
                metadata.max_count = max_count;
                metadata.truncate_before = truncate_before;
                let r = store.set_stream_metadata(&name, expected, &metadata);
                if m.tombstoned {
                    assert!(matches!(r, Err(Error::StreamDeleted { .. })), "{r:?}");
                } else if ok {
                    let r = r.unwrap();
                    let version = m.metadata_version.map_or(0, |v| v + 1);
                    assert_eq!(r.first_version, version);
                    m.metadata_version = Some(version);
                    m.max_count = max_count;
                    m.truncate_before = truncate_before;
                    model.record_system_event();
                } else {
                    assert!(
                        matches!(r, Err(Error::WrongExpectedVersion { .. })),
                        "step {step}: {r:?}"
                    );
                }
            }
            // Floors are kept by stream keys, which the collision test mode makes equal for
            // every stream: scavenges are modelled without it.
            Op::Scavenge if collide => {}
            Op::Scavenge => {
                store.scavenge(&ScavengeOptions::default()).unwrap();
                for m in model.streams.values_mut() {
                    if !m.tombstoned {
                        m.scavenge();
                    }
                }
                let v = store.verify(|_| {}).unwrap();
                assert!(v.is_clean(), "step {step}: {v:?}");
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
