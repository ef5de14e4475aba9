//! Criterion benchmarks of the engine's hot paths. Run with `cargo bench --bench engine`.
//! Throughput is set so reports read in events/s (and bytes/s for the codec).
#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;
use std::ops::ControlFlow;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use streamlog::format::{self, EventRecord, FRAME_HEADER_LEN};
use streamlog::{Durability, ExpectedVersion, NewEvent, Options, Position, Store};

const EVENT_BYTES: usize = 150;
const BATCH: usize = 100;

fn batch(i: usize) -> Vec<NewEvent> {
    (0..BATCH)
        .map(|j| NewEvent::new("Deposited", vec![(i + j) as u8; EVENT_BYTES]))
        .collect()
}

/// `EventId::new` (a UUIDv7 that reads the clock for every id) against the `uuid`
/// crate's `Uuid::now_v7` (the clock for every id too): an append of owned events makes one id
/// per event, so this is on the append path.
fn ids(c: &mut Criterion) {
    let mut g = c.benchmark_group("ids");
    g.throughput(Throughput::Elements(1));
    g.bench_function("EventId::new", |b| b.iter(streamlog::EventId::new));
    g.bench_function("uuid::Uuid::now_v7", |b| b.iter(uuid::Uuid::now_v7));
    g.finish();
}

fn codec(c: &mut Criterion) {
    let payload = vec![7u8; EVENT_BYTES];
    let records: Vec<EventRecord<'_>> = (0..BATCH)
        .map(|_| EventRecord {
            id: [1; 16],
            timestamp_us: 1,
            schema_version: 0,
            event_type: "Deposited",
            metadata: b"",
            data: &payload,
        })
        .collect();
    let mut frame = Vec::new();
    let events = format::EventsFrame {
        committed_at_us: Some(1),
        stream: "account-42",
        first_version: 0,
        events: &records,
        checkpoint: None,
    };
    format::encode_events_frame(&mut frame, 4096, 0, &events);
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Bytes(frame.len() as u64));
    g.bench_function("encode frame of 100 x 150 B events", |b| {
        let mut out = Vec::with_capacity(frame.len());
        b.iter(|| {
            out.clear();
            format::encode_events_frame(&mut out, 4096, 0, black_box(&events))
        })
    });
    g.bench_function("check + decode frame of 100 x 150 B events", |b| {
        b.iter(|| {
            let h = format::decode_frame_header(black_box(&frame)).unwrap();
            format::check_frame(&h, &frame, 4096).unwrap();
            format::decode_events_body(&h, &frame[FRAME_HEADER_LEN..])
                .unwrap()
                .events
                .len()
        })
    });
    g.finish();
}

fn append(c: &mut Criterion) {
    let mut g = c.benchmark_group("append");
    g.throughput(Throughput::Elements(BATCH as u64));
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(
        dir.path(),
        Options::default().with_durability(Durability::Buffered),
    )
    .unwrap();
    let mut i = 0usize;
    g.bench_function("buffered, batch of 100 x 150 B", |b| {
        b.iter_batched(
            || {
                i += 1;
                (format!("s-{}", i % 1000), batch(i))
            },
            |(stream, events)| store.append(&stream, ExpectedVersion::Any, events).unwrap(),
            BatchSize::SmallInput,
        )
    });
    drop(store);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    g.throughput(Throughput::Elements(1));
    g.bench_function("sync, 1 x 150 B", |b| {
        b.iter(|| {
            store
                .append(
                    "s",
                    ExpectedVersion::Any,
                    [NewEvent::new("E", [0u8; EVENT_BYTES])],
                )
                .unwrap()
        })
    });
    g.finish();
}

fn reads(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(
        dir.path(),
        Options::default().with_durability(Durability::Buffered),
    )
    .unwrap();
    // 1,000 streams of 100 events, interleaved, then one 1,000-event stream spread through.
    for i in 0..1000 {
        store
            .append(&format!("s-{i}"), ExpectedVersion::Any, batch(i))
            .unwrap();
        store
            .append(
                "long",
                ExpectedVersion::Any,
                [NewEvent::new("E", [1u8; EVENT_BYTES])],
            )
            .unwrap();
    }
    store.sync().unwrap();
    let mut g = c.benchmark_group("read");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("one 1,000-event stream (1,000 appends)", |b| {
        b.iter(|| {
            store
                .read_stream("long", 0)
                .unwrap()
                .map(|e| e.unwrap().data.len())
                .sum::<usize>()
        })
    });
    g.bench_function("one 1,000-event stream (1,000 appends), borrowed", |b| {
        b.iter(|| {
            let mut bytes = 0;
            store
                .read_stream_with("long", 0, |e| {
                    bytes += e.data.len();
                    ControlFlow::Continue(())
                })
                .unwrap();
            bytes
        })
    });
    g.throughput(Throughput::Elements(101_000));
    g.sample_size(10);
    g.bench_function("$all scan, 101,000 events, borrowed", |b| {
        b.iter(|| {
            let mut versions = 0;
            store
                .read_all_with(Position::START, |e| {
                    versions += e.version;
                    ControlFlow::Continue(())
                })
                .unwrap();
            versions
        })
    });
    g.bench_function("$all scan, 101,000 events", |b| {
        b.iter(|| {
            store
                .read_all(Position::START)
                .unwrap()
                .map(|e| e.unwrap().version)
                .sum::<u64>()
        })
    });
    g.finish();
    drop(store);

    let mut g = c.benchmark_group("open");
    g.sample_size(10);
    g.throughput(Throughput::Elements(101_000));
    g.bench_function("open after clean close, 101,000 events", |b| {
        b.iter(|| Store::open(dir.path()).unwrap().info().unwrap().events)
    });
    g.finish();
}

criterion_group!(benches, ids, codec, append, reads);
criterion_main!(benches);
