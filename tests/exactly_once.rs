//! Atomic append + consumer checkpoint (`Store::append_and_checkpoint`): a processor that
//! writes its output events back to the store and saves its input position in the same
//! append handles every input exactly once, through power cuts at every I/O point, under
//! `Sync` and under `Buffered`; and which of a direct save and a carried checkpoint wins.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use streamlog::io::Storage;
use streamlog::io::sim::SimStorage;
use streamlog::{Durability, ExpectedVersion, NewEvent, Options, Position, ResumeToken, Store};

const DIR: &str = "/db";
const INPUTS: u64 = 24;

fn options(sim: &SimStorage, durability: Durability) -> Options {
    Options::default()
        .with_storage(Arc::new(sim.clone()))
        .with_segment_size_bytes(4096)
        // Small memtables, flushed inline: index flushes happen among the appends.
        .with_memtable_entries(16)
        .with_background_index_maintenance(false)
        .with_durability(durability)
}

/// The processor: for every input event after its checkpoint, one output event naming
/// the input, appended together with the checkpoint after that input. Stops at the first
/// error (the power failed).
fn process(store: &Store) -> streamlog::Result<()> {
    let from = store.checkpoint("proc")?.unwrap_or(ResumeToken::START);
    let inputs: Vec<_> = store.read_all(from)?.collect::<streamlog::Result<_>>()?;
    for e in inputs {
        if !e.stream.starts_with("in-") {
            continue;
        }
        let output = NewEvent::new("Handled", e.id.to_string());
        store.append_and_checkpoint(
            &format!("out-{}", &e.stream[3..]),
            ExpectedVersion::Any,
            [output],
            "proc",
            e.resume_token(),
        )?;
    }
    store.sync()
}

fn inputs(store: &Store) {
    for i in 0..INPUTS {
        // Some appends of two events: a checkpoint may point inside an append.
        let n = 1 + i % 2;
        let batch: Vec<_> = (0..n)
            .map(|j| NewEvent::new("Ordered", format!("{i}-{j}")))
            .collect();
        store
            .append(&format!("in-{}", i % 3), ExpectedVersion::Any, batch)
            .unwrap();
    }
    store.sync().unwrap();
}

fn check_exactly_once(store: &Store, what: &str) {
    let all: Vec<_> = store
        .read_all(Position::START)
        .unwrap()
        .map(|e| e.unwrap())
        .collect();
    let input_ids: Vec<String> = all
        .iter()
        .filter(|e| e.stream.starts_with("in-"))
        .map(|e| e.id.to_string())
        .collect();
    let mut handled: HashMap<String, usize> = HashMap::new();
    for e in all.iter().filter(|e| e.stream.starts_with("out-")) {
        *handled
            .entry(String::from_utf8(e.data.clone()).unwrap())
            .or_default() += 1;
    }
    for id in &input_ids {
        assert_eq!(
            handled.get(id).copied().unwrap_or(0),
            1,
            "{what}: input {id} handled {:?} times",
            handled.get(id)
        );
    }
    assert_eq!(
        handled.len(),
        input_ids.len(),
        "{what}: outputs for unknown inputs"
    );
    let last_input = all
        .iter()
        .rev()
        .find(|e| e.stream.starts_with("in-"))
        .unwrap();
    assert_eq!(
        store.checkpoint("proc").unwrap(),
        Some(last_input.resume_token()),
        "{what}"
    );
    let v = store.verify(|_| {}).unwrap();
    assert!(v.is_clean(), "{what}: {v:?}");
}

fn power_cuts(durability: Durability) {
    let mut cut_points = 0;
    for ops in (0..400u64).step_by(3) {
        let sim = SimStorage::new(ops);
        sim.create_dir_all(Path::new(DIR)).unwrap();
        sim.sync_dir(Path::new("/")).unwrap();
        let store = Store::open_with(DIR, options(&sim, durability)).unwrap();
        inputs(&store);
        sim.fail_after_ops(ops);
        let finished = process(&store).is_ok();
        sim.crash();
        drop(store);
        sim.clear_faults();
        let store = Store::open_with(DIR, options(&sim, durability)).unwrap();
        process(&store).unwrap();
        check_exactly_once(
            &store,
            &format!("{durability:?}, power cut after {ops} I/Os"),
        );
        store.close().unwrap();
        // Once more after a clean reopen: nothing left to do, nothing done twice.
        let store = Store::open_with(DIR, options(&sim, durability)).unwrap();
        process(&store).unwrap();
        check_exactly_once(
            &store,
            &format!("{durability:?}, reopened after {ops} I/Os"),
        );
        if finished {
            break;
        }
        cut_points += 1;
    }
    assert!(
        cut_points > 20,
        "the cuts fell inside the processing only {cut_points} times"
    );
}

#[test]
fn a_processor_writing_back_is_exactly_once_through_power_cuts_under_sync() {
    power_cuts(Durability::Sync);
}

#[test]
fn a_processor_writing_back_is_exactly_once_through_power_cuts_under_buffered() {
    power_cuts(Durability::Buffered);
}

fn store_at(dir: &Path) -> Store {
    Store::open_with(
        dir,
        Options::default()
            .with_segment_size_bytes(4096)
            .with_background_index_maintenance(false),
    )
    .unwrap()
}

#[test]
fn the_later_of_a_direct_save_and_a_carried_checkpoint_wins_across_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let t = |p: u64| ResumeToken::at(Position(p));
    {
        let store = store_at(dir);
        store
            .append_and_checkpoint(
                "a",
                ExpectedVersion::Any,
                [NewEvent::new("T", "1")],
                "c",
                t(1),
            )
            .unwrap();
        assert_eq!(store.checkpoint("c").unwrap(), Some(t(1)));
        store.save_checkpoint("c", t(2)).unwrap();
        assert_eq!(store.checkpoint("c").unwrap(), Some(t(2)));
        // Without a clean close: the next open replays the appends and their checkpoints.
        std::mem::forget(store);
    }
    // A second handle cannot open beside the forgotten one's lock in this process, so the
    // files are copied, as a crash would leave them.
    let copy = tempfile::tempdir().unwrap();
    copy_dir(dir, copy.path());
    {
        let store = store_at(copy.path());
        assert_eq!(
            store.checkpoint("c").unwrap(),
            Some(t(2)),
            "a direct save after"
        );
        store
            .append_and_checkpoint(
                "a",
                ExpectedVersion::Any,
                [NewEvent::new("T", "2")],
                "c",
                t(3),
            )
            .unwrap();
        assert_eq!(store.checkpoint("c").unwrap(), Some(t(3)));
        std::mem::forget(store);
    }
    let copy2 = tempfile::tempdir().unwrap();
    copy_dir(copy.path(), copy2.path());
    let store = store_at(copy2.path());
    assert_eq!(
        store.checkpoint("c").unwrap(),
        Some(t(3)),
        "a carried one after"
    );
    // Other handles (a follower in another process) read the same.
    let reader = Store::open_with(copy2.path(), Options::default().with_read_only(true)).unwrap();
    assert_eq!(reader.checkpoint("c").unwrap(), Some(t(3)));
}

#[test]
fn a_carried_checkpoint_whose_file_was_lost_comes_back_from_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let t = ResumeToken::after(Position(0), 1);
    let store = store_at(tmp.path());
    store
        .append(
            "in",
            ExpectedVersion::Any,
            [NewEvent::new("T", "x"), NewEvent::new("T", "y")],
        )
        .unwrap();
    store
        .append_and_checkpoint(
            "out",
            ExpectedVersion::Any,
            [NewEvent::new("T", "x")],
            "p",
            t,
        )
        .unwrap();
    std::mem::forget(store);
    let copy = tempfile::tempdir().unwrap();
    copy_dir(tmp.path(), copy.path());
    // As if the crash came between the append's sync and the file's rename.
    std::fs::remove_file(copy.path().join("checkpoints").join("p")).unwrap();
    let store = store_at(copy.path());
    assert_eq!(store.checkpoint("p").unwrap(), Some(t));
    assert!(copy.path().join("checkpoints").join("p").exists());
}

#[test]
fn a_damaged_checkpoint_file_is_replaced_by_the_next_carried_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let store = store_at(tmp.path());
    let t = ResumeToken::at(Position(1));
    store.save_checkpoint("p", t).unwrap();
    std::fs::write(tmp.path().join("checkpoints").join("p"), b"garbage").unwrap();
    assert!(matches!(
        store.checkpoint("p"),
        Err(streamlog::Error::Corrupted { .. })
    ));
    let t2 = ResumeToken::at(Position(2));
    store
        .append_and_checkpoint(
            "o",
            ExpectedVersion::Any,
            [NewEvent::new("T", "x")],
            "p",
            t2,
        )
        .unwrap();
    assert_eq!(store.checkpoint("p").unwrap(), Some(t2));
    store.close().unwrap();
    let store = store_at(tmp.path());
    assert_eq!(store.checkpoint("p").unwrap(), Some(t2));
}

#[test]
fn under_buffered_this_handle_reads_its_checkpoint_before_the_append_is_durable() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open_with(
        tmp.path(),
        Options::default().with_durability(Durability::Buffered),
    )
    .unwrap();
    let t = ResumeToken::at(Position(77));
    store
        .append_and_checkpoint("o", ExpectedVersion::Any, [NewEvent::new("T", "x")], "p", t)
        .unwrap();
    assert_eq!(store.checkpoint("p").unwrap(), Some(t));
    store.sync().unwrap();
    assert!(tmp.path().join("checkpoints").join("p").exists());
    assert_eq!(store.checkpoint("p").unwrap(), Some(t));
}

#[test]
fn bad_names_and_conflicts_save_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let store = store_at(tmp.path());
    let t = ResumeToken::at(Position(5));
    for bad in ["", ".x", "a/b"] {
        assert!(matches!(
            store.append_and_checkpoint(
                "o",
                ExpectedVersion::Any,
                [NewEvent::new("T", "x")],
                bad,
                t
            ),
            Err(streamlog::Error::InvalidArgument(_))
        ));
    }
    assert!(matches!(
        store.append_and_checkpoint(
            "$o",
            ExpectedVersion::Any,
            [NewEvent::new("T", "x")],
            "p",
            t
        ),
        Err(streamlog::Error::InvalidArgument(_))
    ));
    assert!(matches!(
        store.append_and_checkpoint(
            "o",
            ExpectedVersion::Exact(3),
            [NewEvent::new("T", "x")],
            "p",
            t
        ),
        Err(streamlog::Error::WrongExpectedVersion { .. })
    ));
    assert_eq!(store.checkpoint("p").unwrap(), None);
    assert_eq!(store.stream_version("o").unwrap(), None);
    // A retry of a stored append writes nothing, its checkpoint included.
    let e = NewEvent::new("T", "x");
    store
        .append_and_checkpoint("o", ExpectedVersion::NoStream, [e.clone()], "p", t)
        .unwrap();
    store
        .save_checkpoint("p", ResumeToken::at(Position(9)))
        .unwrap();
    let r = store
        .append_and_checkpoint("o", ExpectedVersion::NoStream, [e], "p", t)
        .unwrap();
    assert!(r.deduplicated);
    assert_eq!(
        store.checkpoint("p").unwrap(),
        Some(ResumeToken::at(Position(9)))
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else if entry.file_name() != "LOCK" {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// While a carried checkpoint's file cannot be written (here `checkpoints` is a file, not
/// a directory: a persistent error, as a read-only or full directory would be), the index
/// cannot be flushed past it. Appends go on until the index's memory is at its bound, then
/// are refused with an error that says why, before anything is written (never a wait
/// without end, never memory without bound), and go on again once the file can be
/// written. Nothing acknowledged is lost, across a reopen too.
fn appends_are_refused_while_a_checkpoint_file_cannot_be_written(background: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let options = || {
        Options::default()
            .with_memtable_entries(16)
            .with_background_index_maintenance(background)
    };
    let store = Store::open_with(tmp.path(), options()).unwrap();
    let blocker = tmp.path().join("checkpoints");
    let _ = std::fs::remove_dir_all(&blocker);
    std::fs::write(&blocker, b"not a directory").unwrap();
    let token = ResumeToken::at(Position(0));
    store
        .append_and_checkpoint(
            "out",
            ExpectedVersion::Any,
            [NewEvent::new("T", "x")],
            "p",
            token,
        )
        .unwrap();
    let mut acknowledged = 0u64;
    let refused = loop {
        match store.append("in", ExpectedVersion::Any, [NewEvent::new("T", "y")]) {
            Ok(_) => acknowledged += 1,
            Err(e) => break e,
        }
        assert!(
            acknowledged < 1_000,
            "never refused: the index's memory grows"
        );
    };
    assert!(
        matches!(refused, streamlog::Error::Io { .. }) && refused.to_string().contains("index"),
        "{refused}"
    );
    assert!(store.info().unwrap().index_error.is_some());
    // At most four memtables and the frozen one (16 entries each), and more than one.
    assert!((16..=5 * 16).contains(&acknowledged), "{acknowledged}");
    // The refused append wrote nothing.
    assert_eq!(
        store.read_stream("in", 0).unwrap().count() as u64,
        acknowledged
    );

    std::fs::remove_file(&blocker).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match store.append("in", ExpectedVersion::Any, [NewEvent::new("T", "y")]) {
            Ok(_) => break,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("still refused: {e}");
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("appends did not resume: {e}"),
        }
    }
    acknowledged += 1;
    assert_eq!(store.checkpoint("p").unwrap(), Some(token));
    assert!(store.info().unwrap().index_error.is_none());
    store.close().unwrap();
    let store = Store::open_with(tmp.path(), options()).unwrap();
    assert_eq!(
        store.read_stream("in", 0).unwrap().count() as u64,
        acknowledged
    );
    assert_eq!(store.read_stream("out", 0).unwrap().count(), 1);
    assert_eq!(store.checkpoint("p").unwrap(), Some(token));
}

#[test]
fn appends_are_refused_while_a_checkpoint_file_cannot_be_written_background_maintenance() {
    appends_are_refused_while_a_checkpoint_file_cannot_be_written(true);
}

#[test]
fn appends_are_refused_while_a_checkpoint_file_cannot_be_written_inline_maintenance() {
    appends_are_refused_while_a_checkpoint_file_cannot_be_written(false);
}
