//! Subscriptions: catch-up then live, resume tokens, filters, named checkpoints.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use streamlog::{
    Delivery, Durability, ExpectedVersion, Filter, NewEvent, Options, Position, RecordedEvent,
    ResumeToken, Store, SubscribeAll, SubscribeStream,
};

fn ev(t: &str, d: &str) -> NewEvent {
    NewEvent::new(t.to_string(), d)
}

/// Events delivered until `n` events came (checkpoints and caught-up markers skipped).
fn take_events(sub: &mut streamlog::Subscription, n: usize) -> Vec<RecordedEvent> {
    let mut out = Vec::new();
    while out.len() < n {
        match sub.next_timeout(Duration::from_secs(20)).unwrap() {
            Some(Delivery::Event(e)) => out.push(e),
            Some(_) => {}
            None => panic!("no delivery within 20 s after {} of {n} events", out.len()),
        }
    }
    out
}

fn all_events(store: &Store) -> Vec<RecordedEvent> {
    store
        .read_all(Position::START)
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn key(e: &RecordedEvent) -> (String, u64) {
    (e.stream.to_string(), e.version)
}

fn switch_from_catch_up_to_live_loses_and_repeats_nothing(durability: Durability) {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open_with(
        tmp.path(),
        Options::default()
            .with_durability(durability)
            .with_segment_size_bytes(64 * 1024),
    )
    .unwrap();
    let writers = 3;
    let per_writer = 150;
    let done = AtomicBool::new(false);
    let (delivered, total) = std::thread::scope(|s| {
        for w in 0..writers {
            let store = store.clone();
            s.spawn(move || {
                for i in 0..per_writer {
                    let n = 1 + i % 3;
                    let batch: Vec<_> = (0..n).map(|j| ev("T", &format!("{w}-{i}-{j}"))).collect();
                    store
                        .append(&format!("s-{}", i % 4), ExpectedVersion::Any, batch)
                        .unwrap();
                }
            });
        }
        // Subscribers start at different moments of the writing.
        let subs: Vec<_> = (0..3)
            .map(|k| {
                std::thread::sleep(Duration::from_millis(5 * k));
                store.subscribe_all(SubscribeAll::from_start()).unwrap()
            })
            .collect();
        let total: usize = (0..per_writer).map(|i| 1 + i % 3).sum::<usize>() * writers;
        let delivered: Vec<Vec<RecordedEvent>> = subs
            .into_iter()
            .map(|mut sub| take_events(&mut sub, total))
            .collect();
        done.store(true, Ordering::SeqCst);
        (delivered, total)
    });
    let expect = all_events(&store);
    assert_eq!(expect.len(), total);
    for got in delivered {
        assert_eq!(
            got.iter().map(key).collect::<Vec<_>>(),
            expect.iter().map(key).collect::<Vec<_>>(),
            "a subscriber saw the log in another order, or missed or repeated an event"
        );
        assert_eq!(got, expect);
    }
}

#[test]
fn catch_up_then_live_is_exactly_the_log_under_sync() {
    switch_from_catch_up_to_live_loses_and_repeats_nothing(Durability::Sync);
}

#[test]
fn catch_up_then_live_is_exactly_the_log_under_buffered() {
    switch_from_catch_up_to_live_loses_and_repeats_nothing(Durability::Buffered);
}

#[test]
fn catch_up_then_live_is_exactly_the_log_under_periodic() {
    switch_from_catch_up_to_live_loses_and_repeats_nothing(Durability::Periodic(
        Duration::from_millis(2),
    ));
}

#[test]
fn resuming_after_any_event_delivers_exactly_what_follows_even_inside_an_append() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    store
        .append(
            "a",
            ExpectedVersion::Any,
            [ev("T", "0"), ev("T", "1"), ev("T", "2")],
        )
        .unwrap();
    store
        .append("b", ExpectedVersion::Any, [ev("T", "3")])
        .unwrap();
    store
        .append("a", ExpectedVersion::Any, [ev("T", "4"), ev("T", "5")])
        .unwrap();
    let all = all_events(&store);
    for (i, e) in all.iter().enumerate() {
        let token = e.resume_token();
        // Through read_all, through a subscription, and through the token's text form.
        let read: Vec<_> = store.read_all(token).unwrap().map(Result::unwrap).collect();
        assert_eq!(read, all[i + 1..], "read_all after event {i} ({token})");
        let mut sub = store
            .subscribe_all(SubscribeAll::from(
                token.to_string().parse::<ResumeToken>().unwrap(),
            ))
            .unwrap();
        let got = take_events(&mut sub, all.len() - i - 1);
        assert_eq!(got, all[i + 1..], "subscription after event {i} ({token})");
        assert_eq!(
            sub.next_timeout(Duration::from_millis(50)).unwrap(),
            Some(Delivery::CaughtUp)
        );
    }
    // A position in the middle of a frame is refused, with a typed error.
    let p = all[0].position.0 + 1;
    assert!(matches!(
        store.subscribe_all(SubscribeAll::from(Position(p))),
        Err(streamlog::Error::InvalidArgument(_))
    ));
}

#[test]
fn from_end_is_caught_up_at_once_and_then_live() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    store
        .append("a", ExpectedVersion::Any, [ev("Old", "")])
        .unwrap();
    let mut sub = store.subscribe_all(SubscribeAll::from_end()).unwrap();
    assert_eq!(
        sub.next_timeout(Duration::from_millis(10)).unwrap(),
        Some(Delivery::CaughtUp)
    );
    assert_eq!(sub.next_timeout(Duration::from_millis(10)).unwrap(), None);
    let writer = store.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(30));
        writer
            .append("a", ExpectedVersion::Any, [ev("New", "")])
            .unwrap();
    });
    let got = take_events(&mut sub, 1);
    assert_eq!(got[0].event_type, "New");
    t.join().unwrap();
}

#[test]
fn a_stream_subscription_catches_up_then_follows_its_stream_only() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    for i in 0..5 {
        store
            .append("mine", ExpectedVersion::Any, [ev("T", &i.to_string())])
            .unwrap();
        store
            .append("other", ExpectedVersion::Any, [ev("T", "x")])
            .unwrap();
    }
    let mut sub = store
        .subscribe_stream(SubscribeStream::new("mine").from_version(2))
        .unwrap();
    let got = take_events(&mut sub, 3);
    assert_eq!(
        got.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![2, 3, 4]
    );
    assert_eq!(
        sub.next_timeout(Duration::from_millis(10)).unwrap(),
        Some(Delivery::CaughtUp)
    );
    let writer = store.clone();
    let t = std::thread::spawn(move || {
        for i in 5..8 {
            writer
                .append("other", ExpectedVersion::Any, [ev("T", "x")])
                .unwrap();
            writer
                .append("mine", ExpectedVersion::Any, [ev("T", &i.to_string())])
                .unwrap();
        }
    });
    let got = take_events(&mut sub, 3);
    assert!(got.iter().all(|e| &*e.stream == "mine"));
    assert_eq!(
        got.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![5, 6, 7]
    );
    t.join().unwrap();
    // From the end: only what comes after.
    let mut live = store
        .subscribe_stream(SubscribeStream::new("mine").from_end())
        .unwrap();
    assert_eq!(
        live.next_timeout(Duration::from_millis(10)).unwrap(),
        Some(Delivery::CaughtUp)
    );
    store
        .append("mine", ExpectedVersion::Any, [ev("T", "8")])
        .unwrap();
    assert_eq!(take_events(&mut live, 1)[0].version, 8);
}

#[test]
fn a_filtered_subscription_reports_progress_while_it_skips() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open_with(
        tmp.path(),
        Options::default().with_durability(Durability::Buffered),
    )
    .unwrap();
    for i in 0..100 {
        let t = if i % 50 == 49 { "OrderPlaced" } else { "Noise" };
        store
            .append("s", ExpectedVersion::Any, [ev(t, "")])
            .unwrap();
    }
    let mut sub = store
        .subscribe_all(
            SubscribeAll::from_start()
                .filter(Filter::event_type_prefix("Order"))
                .checkpoint_every(10),
        )
        .unwrap();
    let mut deliveries = Vec::new();
    loop {
        let d = sub.next_timeout(Duration::from_secs(5)).unwrap().unwrap();
        let end = d == Delivery::CaughtUp;
        deliveries.push(d);
        if end {
            break;
        }
    }
    let events: Vec<_> = deliveries
        .iter()
        .filter_map(|d| match d {
            Delivery::Event(e) => Some(e.version),
            _ => None,
        })
        .collect();
    assert_eq!(events, vec![49, 99]);
    let checkpoints: Vec<ResumeToken> = deliveries
        .iter()
        .filter_map(|d| match d {
            Delivery::Checkpoint(t) => Some(*t),
            _ => None,
        })
        .collect();
    // 49 skipped before the first match, 49 before the second: 4 each at K = 10, and
    // one when it caught up.
    assert_eq!(checkpoints.len(), 9, "{deliveries:?}");
    assert!(checkpoints.windows(2).all(|w| w[0] < w[1]));
    // A checkpoint resumes where it says: after it come the matches not yet seen.
    let all = all_events(&store);
    let last_before_second = checkpoints[7];
    let rest: Vec<_> = store
        .read_all(last_before_second)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.event_type.starts_with("Order"))
        .collect();
    assert_eq!(rest, vec![all[99].clone()]);
}

#[test]
fn named_checkpoints_are_durable_and_survive_a_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    assert_eq!(store.checkpoint("projector").unwrap(), None);
    store
        .append("a", ExpectedVersion::Any, [ev("T", ""), ev("T", "")])
        .unwrap();
    let e = all_events(&store).remove(0);
    store
        .save_checkpoint("projector", e.resume_token())
        .unwrap();
    store
        .save_checkpoint("other", ResumeToken::at(Position(0)))
        .unwrap();
    assert_eq!(
        store.checkpoint("projector").unwrap(),
        Some(e.resume_token())
    );
    assert!(store.checkpoint("").is_err());
    drop(store);
    let store = Store::open(tmp.path()).unwrap();
    assert_eq!(
        store.checkpoint("projector").unwrap(),
        Some(e.resume_token())
    );
    // A follower of a live writer saves its own checkpoints beside it.
    let reader = Store::open_with(tmp.path(), Options::default().with_read_only(true)).unwrap();
    reader
        .save_checkpoint("tail", ResumeToken::at(Position(0)))
        .unwrap();
    assert_eq!(
        store.checkpoint("tail").unwrap(),
        Some(ResumeToken::at(Position(0)))
    );
    assert!(store.checkpoint("../escape").is_err());
}

#[test]
fn a_subscription_ends_when_the_store_is_closed() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let mut sub = store.subscribe_all(SubscribeAll::from_start()).unwrap();
    let t = std::thread::spawn(move || sub.by_ref().count());
    std::thread::sleep(Duration::from_millis(50));
    store.close().unwrap();
    // It delivered CaughtUp, then ended.
    assert_eq!(t.join().unwrap(), 1);
}

#[derive(Debug, Clone)]
enum F {
    StreamPrefix(String),
    TypePrefix(String),
    Types(Vec<String>),
    StreamRegex(String),
    TypeRegex(String),
}

fn filter_of(f: &F) -> Filter {
    match f {
        F::StreamPrefix(p) => Filter::stream_prefix(p.clone()),
        F::TypePrefix(p) => Filter::event_type_prefix(p.clone()),
        F::Types(t) => Filter::event_types(t.clone()),
        F::StreamRegex(r) => Filter::stream_regex(r).unwrap(),
        F::TypeRegex(r) => Filter::event_type_regex(r).unwrap(),
    }
}

/// The oracle: the same predicate written out plainly.
fn oracle(f: &F, e: &RecordedEvent) -> bool {
    match f {
        F::StreamPrefix(p) => e.stream.starts_with(p.as_str()),
        F::TypePrefix(p) => e.event_type.starts_with(p.as_str()),
        F::Types(t) => t.contains(&e.event_type),
        F::StreamRegex(r) => match r.as_str() {
            "^(?!x)" => !e.stream.starts_with('x'),
            "y$" => e.stream.ends_with('y'),
            _ => unreachable!(),
        },
        F::TypeRegex(r) => match r.as_str() {
            "^A|B$" => e.event_type.starts_with('A') || e.event_type.ends_with('B'),
            _ => unreachable!(),
        },
    }
}

fn filters() -> impl Strategy<Value = F> {
    let names = "[xy]{0,2}";
    prop_oneof![
        names.prop_map(F::StreamPrefix),
        "[AB]{0,2}".prop_map(F::TypePrefix),
        proptest::collection::vec("[AB]{1,2}", 0..3).prop_map(F::Types),
        prop_oneof![Just("^(?!x)".to_string()), Just("y$".to_string())].prop_map(F::StreamRegex),
        Just("^A|B$".to_string()).prop_map(F::TypeRegex),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn filtered_subscriptions_deliver_what_a_scan_and_filter_finds(
        appends in proptest::collection::vec(("[xy]{1,3}", proptest::collection::vec("[AB]{1,2}", 1..4)), 1..40),
        f in filters(),
        every in 1u64..8,
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open_with(tmp.path(), Options::default().with_durability(Durability::Buffered)).unwrap();
        for (stream, types) in &appends {
            let batch: Vec<_> = types.iter().map(|t| ev(t, "")).collect();
            store.append(stream, ExpectedVersion::Any, batch).unwrap();
        }
        let expect: Vec<_> = all_events(&store).into_iter().filter(|e| oracle(&f, e)).collect();
        let mut sub = store.subscribe_all(SubscribeAll::from_start().filter(filter_of(&f)).checkpoint_every(every)).unwrap();
        let mut got = Vec::new();
        let mut last = ResumeToken::START;
        loop {
            match sub.next_timeout(Duration::from_secs(5)).unwrap().unwrap() {
                Delivery::Event(e) => { prop_assert!(e.resume_token() > last); last = e.resume_token(); got.push(e) }
                Delivery::Checkpoint(t) => { prop_assert!(t >= last); last = t }
                Delivery::CaughtUp => break,
                _ => {}
            }
        }
        prop_assert_eq!(got, expect);
    }
}

/// A read-only open beside a live writer (the writer's lock is taken: in another process,
/// or here through another open file) follows what the writer publishes.
fn reader_follows_a_live_writer(durability: Durability) {
    let tmp = tempfile::tempdir().unwrap();
    let writer = Store::open_with(
        tmp.path(),
        Options::default()
            .with_durability(durability)
            .with_segment_size_bytes(64 * 1024),
    )
    .unwrap();
    writer
        .append("a", ExpectedVersion::Any, [ev("T", "before")])
        .unwrap();
    writer.sync().unwrap();
    let reader = Store::open_with(tmp.path(), Options::default().with_read_only(true))
        .expect("a read-only open beside a live writer");
    assert!(
        reader.recovery_report().truncated.is_none(),
        "the writer's tail is not torn"
    );
    let mut sub = reader.subscribe_all(SubscribeAll::from_start()).unwrap();
    let first = take_events(&mut sub, 1);
    assert_eq!(first[0].data, b"before");
    // Enough appends to roll over to new segments while the reader follows.
    let payload = "x".repeat(1000);
    for i in 0..200 {
        writer
            .append(
                &format!("s-{}", i % 3),
                ExpectedVersion::Any,
                [ev("T", &payload)],
            )
            .unwrap();
    }
    writer.sync().unwrap();
    let got = take_events(&mut sub, 200);
    let expect: Vec<_> = all_events(&writer).into_iter().skip(1).collect();
    assert_eq!(got, expect, "the follower sees the writer's log, in order");
    assert!(writer.info().unwrap().segments > 1);
    // Stream reads through the follower's index, and versions.
    assert_eq!(
        reader.stream_version("s-0").unwrap(),
        writer.stream_version("s-0").unwrap()
    );
    let n = reader.read_stream("s-1", 0).unwrap().count();
    assert_eq!(n, 67);
    // It never writes.
    assert!(matches!(
        reader.append("a", ExpectedVersion::Any, [ev("T", "")]),
        Err(streamlog::Error::ReadOnly)
    ));
}

#[test]
fn a_followers_index_memory_stays_bounded_as_the_writer_flushes() {
    let tmp = tempfile::tempdir().unwrap();
    let small = |o: Options| {
        o.with_memtable_entries(64)
            .with_memtable_log_bytes(16 * 1024)
    };
    let writer = Store::open_with(
        tmp.path(),
        // The writer flushes its memtable in the appending thread, as soon as it is due.
        small(
            Options::default()
                .with_durability(Durability::Buffered)
                .with_background_index_maintenance(false),
        ),
    )
    .unwrap();
    writer
        .append("a", ExpectedVersion::Any, [ev("T", "0")])
        .unwrap();
    writer.sync().unwrap();
    let reader =
        Store::open_with(tmp.path(), small(Options::default().with_read_only(true))).unwrap();
    let mut sub = reader.subscribe_all(SubscribeAll::from_start()).unwrap();
    let mut seen = take_events(&mut sub, 1).len();
    let mut most = 0;
    for round in 0..20 {
        for i in 0..100 {
            writer
                .append(
                    &format!("s-{}", i % 7),
                    ExpectedVersion::Any,
                    [ev("T", "x")],
                )
                .unwrap();
        }
        writer.sync().unwrap();
        seen += take_events(&mut sub, 100).len();
        most = most.max(reader.info().unwrap().index_memory_entries);
        eprintln!(
            "round {round}: reader {:?} writer {:?}",
            reader.info().unwrap(),
            writer.info().unwrap()
        );
        assert!(
            most <= 2 * 64 + 100,
            "round {round}: {most} entries in the follower's memory"
        );
    }
    assert_eq!(seen, 2001);
    // Reads through the adopted tables see every event once.
    for s in 0..7 {
        let stream = format!("s-{s}");
        let versions: Vec<u64> = reader
            .read_stream(&stream, 0)
            .unwrap()
            .map(|e| e.unwrap().version)
            .collect();
        assert_eq!(
            versions,
            (0..versions.len() as u64).collect::<Vec<_>>(),
            "{stream}"
        );
        assert_eq!(
            reader.stream_version(&stream).unwrap(),
            writer.stream_version(&stream).unwrap()
        );
    }
    assert!(reader.info().unwrap().index_tables > 0);
}

#[test]
fn a_read_only_open_follows_a_live_writer_under_sync() {
    reader_follows_a_live_writer(Durability::Sync);
}

#[test]
fn a_read_only_open_follows_a_live_writer_under_buffered() {
    reader_follows_a_live_writer(Durability::Buffered);
}

#[tokio::test(flavor = "current_thread")]
async fn a_subscription_is_a_stream_for_async_code() {
    use std::pin::Pin;
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    store
        .append("a", ExpectedVersion::Any, [ev("T", "0")])
        .unwrap();
    let mut stream = store
        .subscribe_all(SubscribeAll::from_start())
        .unwrap()
        .into_stream()
        .unwrap();
    let mut next = async || {
        std::future::poll_fn(|cx| futures_core::Stream::poll_next(Pin::new(&mut stream), cx)).await
    };
    assert!(matches!(next().await, Some(Ok(Delivery::Event(_)))));
    assert_eq!(next().await.unwrap().unwrap(), Delivery::CaughtUp);
    // A live append, from a blocking task as async code should make it.
    let writer = store.clone();
    tokio::task::spawn_blocking(move || {
        writer
            .append("a", ExpectedVersion::Any, [ev("T", "1")])
            .unwrap();
    });
    match tokio::time::timeout(Duration::from_secs(10), next())
        .await
        .unwrap()
    {
        Some(Ok(Delivery::Event(e))) => assert_eq!(e.version, 1),
        other => panic!("{other:?}"),
    }
}

/// Opening read-only beside a writer that is appending, again and again, never meets
/// "corruption": the open reads nothing past the end the writer published, where the
/// files change under it.
#[test]
fn read_only_opens_beside_a_busy_writer_never_report_corruption() {
    let tmp = tempfile::tempdir().unwrap();
    let writer = Store::open_with(
        tmp.path(),
        Options::default().with_segment_size_bytes(64 * 1024 * 1024),
    )
    .unwrap();
    // A log long enough that an open's scan takes a while, its tail in the active segment.
    let big = "b".repeat(2000);
    for _ in 0..400 {
        let batch: Vec<_> = (0..10).map(|_| ev("T", &big)).collect();
        writer.append("s", ExpectedVersion::Any, batch).unwrap();
    }
    // The writer publishes its end a moment after a commit.
    std::thread::sleep(Duration::from_millis(50));
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let payload = "p".repeat(300);
            // Bounded, so that a fast disk does not fill it.
            for _ in 0..20_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let batch: Vec<_> = (0..10).map(|_| ev("T", &payload)).collect();
                writer.append("s", ExpectedVersion::Any, batch).unwrap();
            }
        });
        for _ in 0..60 {
            let reader = Store::open_with(tmp.path(), Options::default().with_read_only(true))
                .expect("a read-only open beside a busy writer");
            let n = reader
                .read_all(Position::START)
                .unwrap()
                .inspect(|e| assert!(e.is_ok(), "{e:?}"))
                .count();
            assert!(n >= 1);
            assert!(reader.info().is_ok());
        }
        stop.store(true, Ordering::Relaxed);
    });
}

/// Whether a thread of this process has the name `name` (Linux: /proc/self/task).
fn thread_named(name: &str) -> bool {
    std::fs::read_dir("/proc/self/task")
        .map(|tasks| {
            tasks.filter_map(Result::ok).any(|t| {
                std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name)
            })
        })
        .unwrap_or(false)
}

/// Filtered subscribers join and leave the store's shared reader all the time while
/// writers append: slow ones overflow their hand-off and read the log by themselves, some
/// drop their subscription and resume from their last token, some start late. Each must
/// see exactly the matching events of the log, in order, once.
#[test]
fn filtered_subscribers_joining_and_leaving_the_shared_reader_lose_and_repeat_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(
        dir.path(),
        Options::default().with_durability(Durability::Buffered),
    )
    .unwrap();
    const WRITERS: usize = 3;
    const APPENDS: usize = 1500;
    let done = std::sync::Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut rng = streamlog::io::sim::SplitMix64::new(w as u64 + 1);
                for i in 0..APPENDS {
                    let n = 1 + rng.below(3) as usize;
                    let batch: Vec<NewEvent> = (0..n)
                        .map(|k| {
                            let t = if rng.below(3) == 0 { "Hot" } else { "Cold" };
                            ev(t, &format!("{w}-{i}-{k}"))
                        })
                        .collect();
                    store
                        .append(&format!("s-{w}"), ExpectedVersion::Any, batch)
                        .unwrap();
                    if i % 64 == 0 {
                        std::thread::sleep(Duration::from_micros(200));
                    }
                }
            })
        })
        .collect();
    let subscribers: Vec<_> = (0..10u64)
        .map(|s| {
            let store = store.clone();
            let done = std::sync::Arc::clone(&done);
            std::thread::spawn(move || {
                let mut rng = streamlog::io::sim::SplitMix64::new(100 + s);
                let filter = || {
                    if s % 2 == 0 {
                        Filter::event_types(["Hot"])
                    } else {
                        Filter::event_type_prefix("Ho")
                    }
                };
                if s % 5 == 4 {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let mut got: Vec<(u64, u32)> = Vec::new();
                let mut from = ResumeToken::START;
                let mut sub = store
                    .subscribe_all(
                        SubscribeAll::from(from)
                            .filter(filter())
                            .checkpoint_every(50),
                    )
                    .unwrap();
                let mut idle = 0;
                loop {
                    match sub.next_timeout(Duration::from_millis(100)).unwrap() {
                        Some(Delivery::Event(e)) => {
                            idle = 0;
                            got.push((e.position.0, e.append_index));
                            from = e.resume_token();
                            // Slow subscribers: their hand-off overflows now and then.
                            if s % 3 == 0 && rng.below(40) == 0 {
                                std::thread::sleep(Duration::from_millis(3));
                            }
                            // Some drop their subscription and resume from the token.
                            if s % 3 == 1 && rng.below(60) == 0 {
                                drop(sub);
                                sub = store
                                    .subscribe_all(
                                        SubscribeAll::from(from)
                                            .filter(filter())
                                            .checkpoint_every(50),
                                    )
                                    .unwrap();
                            }
                        }
                        Some(Delivery::Checkpoint(t)) => {
                            assert!(t >= from, "a checkpoint went back: {t} < {from}");
                            from = t;
                        }
                        Some(_) => {}
                        None if done.load(Ordering::Acquire) => {
                            idle += 1;
                            if idle > 5 {
                                break;
                            }
                        }
                        None => {}
                    }
                }
                got
            })
        })
        .collect();
    let mut hub_seen = false;
    for w in writers {
        while !w.is_finished() {
            hub_seen |= thread_named("streamlog-hub");
            std::thread::sleep(Duration::from_millis(2));
        }
        w.join().unwrap();
    }
    done.store(true, Ordering::Release);
    let want: Vec<(u64, u32)> = all_events(&store)
        .iter()
        .filter(|e| e.event_type == "Hot")
        .map(|e| (e.position.0, e.append_index))
        .collect();
    assert!(want.len() > 1000, "only {} matching events", want.len());
    for (s, sub) in subscribers.into_iter().enumerate() {
        let got = sub.join().unwrap();
        assert_eq!(got.len(), want.len(), "subscriber {s}: count");
        assert!(
            got == want,
            "subscriber {s}: not the log's matching events in order"
        );
    }
    assert!(hub_seen, "the shared reader never ran");
}
