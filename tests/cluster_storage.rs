//! The cluster layer's storage: openraft's own storage test suite against our raft log and
//! state machine, then what the suite never does: reopening, crashes and damage.
//!
//! Run with `cargo test --release --test integration cluster_storage::` (the `cluster`
//! feature, on by default, compiles this module).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{
    CommittedLeaderId, Entry, EntryPayload, LogId, Membership, RaftLogReader, RaftSnapshotBuilder,
    StorageError, Vote,
};
use streamlog::cluster::{Command, Proposal, RaftLog, Response, StoreStateMachine, TypeConfig};
use streamlog::io::FsStorage;
use streamlog::{ExpectedVersion, NewEvent, Options, Position};
use tempfile::TempDir;

struct Builder;

impl StoreBuilder<TypeConfig, RaftLog, StoreStateMachine, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, RaftLog, StoreStateMachine), StorageError<u64>> {
        let dir = tempfile::tempdir().unwrap();
        let log = RaftLog::open_with(dir.path().join("raft"), Arc::new(FsStorage), 4096).unwrap();
        let sm = StoreStateMachine::open(dir.path().join("sm"), Options::default()).unwrap();
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite_passes() {
    Suite::test_all(Builder).unwrap();
}

fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn entry(term: u64, index: u64) -> Entry<TypeConfig> {
    let stream = format!("s-{}", index % 7);
    // Commands in both layouts (docs/format.md): appends, and deletes, tombstones and
    // metadata; and batches of both.
    let payload = match index % 12 {
        0 => EntryPayload::Blank,
        3 => EntryPayload::Normal(Command::delete(stream, ExpectedVersion::Any).into()),
        6 => EntryPayload::Normal(
            Command::set_metadata(
                stream,
                ExpectedVersion::Any,
                br#"{"$maxCount":3,"owner":"x"}"#,
            )
            .unwrap()
            .into(),
        ),
        9 => EntryPayload::Normal(Command::tombstone(stream, ExpectedVersion::Exact(index)).into()),
        10 => EntryPayload::Normal(Proposal::Batch(vec![
            Command::append(
                stream.clone(),
                ExpectedVersion::Any,
                [NewEvent::new("E", vec![index as u8; 200])],
            ),
            Command::delete(stream.clone(), ExpectedVersion::Exact(index)),
            Command::append(
                stream,
                ExpectedVersion::NoStream,
                [NewEvent::new("F", vec![1; 3]), NewEvent::new("G", vec![])],
            ),
        ])),
        i if i % 3 == 1 => EntryPayload::Normal(
            Command::append(
                stream,
                ExpectedVersion::Any,
                [NewEvent::new("E", vec![index as u8; 200])],
            )
            .into(),
        ),
        _ => EntryPayload::Membership(Membership::new(vec![BTreeSet::from([1, 2, 3])], None)),
    };
    Entry {
        log_id: log_id(term, index),
        payload,
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn all_entries(log: &mut RaftLog) -> Vec<Entry<TypeConfig>> {
    log.try_get_log_entries(..).await.unwrap()
}

/// Entries, vote, committed and purged ids survive a reopen, after appends, a truncation
/// that reaches back into an earlier segment, and a purge that removes whole segments.
#[test]
fn raft_log_reopens_as_it_was_after_truncate_and_purge() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raft");
    rt().block_on(async {
        let mut log = RaftLog::open_with(&path, Arc::new(FsStorage), 4096).unwrap();
        for i in 1..=120 {
            log.blocking_append([entry(1, i)]).await.unwrap();
        }
        let segments_before = log.segment_count();
        assert!(segments_before > 5, "{segments_before} segments");
        log.save_vote(&Vote::new(3, 2)).await.unwrap();
        log.save_committed(Some(log_id(1, 60))).await.unwrap();

        // A conflicting tail: dropped from entry 81 on (several segments back), then
        // replaced by entries of a later term.
        log.truncate(log_id(1, 81)).await.unwrap();
        assert_eq!(log.entry_ids().last().unwrap().index, 80);
        assert!(log.segment_count() < segments_before);
        log.blocking_append((81..=90).map(|i| entry(2, i)))
            .await
            .unwrap();

        log.purge(log_id(1, 40)).await.unwrap();
        let purged_segments = log.segment_count();

        let before = all_entries(&mut log).await;
        assert_eq!(before.first().unwrap().log_id.index, 41);
        assert_eq!(before.last().unwrap().log_id, log_id(2, 90));
        let state = log.get_log_state().await.unwrap();
        drop(log);

        let mut log = RaftLog::open_with(&path, Arc::new(FsStorage), 4096).unwrap();
        assert!(log.recovery_report().truncated.is_none());
        assert_eq!(log.segment_count(), purged_segments);
        assert_eq!(all_entries(&mut log).await, before);
        assert_eq!(log.get_log_state().await.unwrap(), state);
        assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(3, 2)));
        assert_eq!(log.read_committed().await.unwrap(), Some(log_id(1, 60)));

        // The log goes on where it was; an append over held entries replaces them.
        log.blocking_append([entry(2, 91)]).await.unwrap();
        log.blocking_append([entry(3, 88)]).await.unwrap();
        // An entry the purge covered is not kept.
        log.blocking_append([entry(3, 20)]).await.unwrap();
        drop(log);
        let mut log = RaftLog::open_with(&path, Arc::new(FsStorage), 4096).unwrap();
        let ids: Vec<_> = all_entries(&mut log)
            .await
            .iter()
            .map(|e| e.log_id)
            .collect();
        assert_eq!(ids.len(), 88 - 40);
        assert_eq!(ids[ids.len() - 2..], [log_id(2, 87), log_id(3, 88)]);
    });
}

/// A purge past the last entry (a snapshot installed on a follower that was behind):
/// the log is empty from the purged id on and continues after it, also after a reopen.
/// The committed id in the raft log's state file (`log-state`: a 16-byte header, then
/// JSON).
fn committed_on_disk(dir: &std::path::Path) -> serde_json::Value {
    let bytes = std::fs::read(dir.join("log-state")).unwrap();
    let state: serde_json::Value = serde_json::from_slice(&bytes[16..]).unwrap();
    state["committed"].clone()
}

/// The committed id is written to the state file at most every so often on its own (an
/// older one on disk is safe: openraft re-learns it from the leader); a vote writes it
/// with it, and so does closing the log.
#[test]
fn raft_log_saves_the_committed_id_now_and_then_with_the_vote_and_at_close() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("raft");
    let hour = Duration::from_secs(3600);
    rt().block_on(async {
        let mut log = RaftLog::open_with(&dir, Arc::new(FsStorage), 4096)
            .unwrap()
            .saving_committed_every(hour);
        log.blocking_append((1..=5).map(|i| entry(1, i)))
            .await
            .unwrap();
        log.save_vote(&Vote::new(1, 1)).await.unwrap();
        log.save_committed(Some(log_id(1, 3))).await.unwrap();
        // In memory at once, on disk not yet.
        assert_eq!(log.read_committed().await.unwrap(), Some(log_id(1, 3)));
        assert!(committed_on_disk(&dir).is_null());

        // A vote writes the committed id with it.
        log.save_vote(&Vote::new(2, 1)).await.unwrap();
        assert_eq!(committed_on_disk(&dir)["index"], 3);

        // Closing the log writes it too.
        log.save_committed(Some(log_id(1, 5))).await.unwrap();
        assert_eq!(committed_on_disk(&dir)["index"], 3);
        drop(log);
        assert_eq!(committed_on_disk(&dir)["index"], 5);
        let mut log = RaftLog::open_with(&dir, Arc::new(FsStorage), 4096).unwrap();
        assert_eq!(log.read_committed().await.unwrap(), Some(log_id(1, 5)));
        assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(2, 1)));

        // With no interval, each one is written before `save_committed` returns.
        let mut log = log.saving_committed_every(Duration::ZERO);
        log.blocking_append([entry(2, 6)]).await.unwrap();
        log.save_committed(Some(log_id(2, 6))).await.unwrap();
        assert_eq!(committed_on_disk(&dir)["index"], 6);
    });
}

#[test]
fn raft_log_purged_past_its_end_continues_after_the_purged_id() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raft");
    rt().block_on(async {
        let mut log = RaftLog::open_with(&path, Arc::new(FsStorage), 4096).unwrap();
        log.blocking_append((1..=5).map(|i| entry(1, i)))
            .await
            .unwrap();
        log.purge(log_id(1, 50)).await.unwrap();
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id, Some(log_id(1, 50)));
        log.blocking_append([entry(2, 51)]).await.unwrap();
        drop(log);
        let mut log = RaftLog::open_with(&path, Arc::new(FsStorage), 4096).unwrap();
        let ids: Vec<_> = all_entries(&mut log)
            .await
            .iter()
            .map(|e| e.log_id)
            .collect();
        assert_eq!(ids, vec![log_id(2, 51)]);
        assert_eq!(
            log.get_log_state().await.unwrap().last_purged_log_id,
            Some(log_id(1, 50))
        );
    });
}

/// The engine's recovery rule holds for the raft log: a torn last frame (never
/// acknowledged: it was not synced) is cut and reported; damage below what a later
/// frame attests refuses the open.
#[test]
fn raft_log_cuts_a_torn_tail_and_refuses_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raft");
    rt().block_on(async {
        let mut log = RaftLog::open_with(&path, Arc::new(FsStorage), 1 << 20).unwrap();
        for i in 1..=10 {
            log.blocking_append([entry(1, i)]).await.unwrap();
        }
        drop(log);
    });
    let seg = std::fs::read_dir(path.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .max()
        .unwrap();
    let bytes = std::fs::read(&seg).unwrap();
    // A torn append after the last entry: half a copy of a frame.
    let mut torn = bytes.clone();
    torn.extend_from_slice(&bytes[32..32 + 40]);
    std::fs::write(&seg, &torn).unwrap();
    rt().block_on(async {
        let mut log = RaftLog::open_with(&path, Arc::new(FsStorage), 1 << 20).unwrap();
        let cut = log.recovery_report().truncated.expect("a torn tail");
        assert_eq!(cut.bytes_dropped, 40);
        assert_eq!(all_entries(&mut log).await.len(), 10);
    });
    // A flipped bit in the first entry, which the later entries attest as durable.
    let mut damaged = std::fs::read(&seg).unwrap();
    damaged[32 + 40] ^= 0x01;
    std::fs::write(&seg, &damaged).unwrap();
    let err = RaftLog::open_with(&path, Arc::new(FsStorage), 1 << 20).unwrap_err();
    assert!(matches!(err, streamlog::Error::Corrupted { .. }), "{err}");
}

fn append_entry(index: u64, stream: &str, expected: ExpectedVersion, id: u8) -> Entry<TypeConfig> {
    Entry {
        log_id: log_id(1, index),
        payload: EntryPayload::Normal(
            Command::append(
                stream,
                expected,
                [NewEvent::new("E", [id]).with_id(streamlog::EventId([id; 16]))],
            )
            .into(),
        ),
    }
}

/// Applying decides by expected version, the same on every replica; a retry with the
/// same event id is answered with the original result.
#[test]
fn state_machine_applies_appends_with_their_expected_versions() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let mut sm = StoreStateMachine::open(dir.path().join("sm"), Options::default())
            .unwrap()
            .saving_state_every(Duration::ZERO);
        let out = sm
            .apply([
                append_entry(1, "a", ExpectedVersion::NoStream, 1),
                append_entry(2, "a", ExpectedVersion::NoStream, 2),
                append_entry(3, "a", ExpectedVersion::Exact(0), 3),
                append_entry(4, "a", ExpectedVersion::Exact(0), 3),
            ])
            .await
            .unwrap();
        assert!(
            matches!(&out[0], Response::Appended(a) if a.first_version == 0 && !a.deduplicated)
        );
        assert_eq!(out[1], Response::WrongExpectedVersion { actual: Some(0) });
        assert!(matches!(&out[2], Response::Appended(a) if a.first_version == 1));
        assert!(matches!(&out[3], Response::Appended(a) if a.first_version == 1 && a.deduplicated));
        let (applied, _) = sm.applied_state().await.unwrap();
        assert_eq!(applied, Some(log_id(1, 4)));
        assert_eq!(sm.store().stream_version("a").unwrap(), Some(1));
    });
}

/// A batch entry applies its commands in order, each with its own expected version, and
/// answers their outcomes in that order; applied again after a restart (the applied id
/// not saved), every command the store already holds is matched, none written twice.
#[test]
fn state_machine_applies_a_batch_in_order_with_an_outcome_per_command() {
    let dir = tempfile::tempdir().unwrap();
    let sm_dir = dir.path().join("sm");
    let cmd = |stream: &str, expected, id: u8| {
        Command::append(
            stream,
            expected,
            [NewEvent::new("E", [id]).with_id(streamlog::EventId([id; 16]))],
        )
    };
    let batch = Entry {
        log_id: log_id(1, 2),
        payload: EntryPayload::Normal(Proposal::Batch(vec![
            cmd("a", ExpectedVersion::Exact(0), 2),
            // Sees the first command's append: refused.
            cmd("a", ExpectedVersion::Exact(0), 3),
            cmd("b", ExpectedVersion::NoStream, 4),
            Command::tombstone("c", ExpectedVersion::Any),
            cmd("c", ExpectedVersion::Any, 5),
            cmd("a", ExpectedVersion::Exact(1), 6),
        ])),
    };
    rt().block_on(async {
        let mut sm = StoreStateMachine::open(&sm_dir, Options::default())
            .unwrap()
            .saving_state_every(Duration::from_secs(3600));
        let first = append_entry(1, "a", ExpectedVersion::NoStream, 1);
        let out = sm.apply([first.clone(), batch.clone()]).await.unwrap();
        assert!(matches!(&out[0], Response::Appended(a) if a.first_version == 0));
        let Response::Batch(outcomes) = &out[1] else {
            panic!("a batch answers a batch: {:?}", out[1]);
        };
        assert_eq!(outcomes.len(), 6);
        assert!(matches!(&outcomes[0], Response::Appended(a) if a.first_version == 1));
        assert_eq!(
            outcomes[1],
            Response::WrongExpectedVersion { actual: Some(1) }
        );
        assert!(matches!(&outcomes[2], Response::Appended(a) if a.first_version == 0));
        assert!(matches!(&outcomes[3], Response::Appended(_)));
        assert_eq!(outcomes[4], Response::StreamDeleted);
        assert!(matches!(&outcomes[5], Response::Appended(a) if a.first_version == 2));
        let before = all_ids(&sm.store());
        drop(sm);

        // The applied id was never saved: both entries are applied again and matched.
        let mut sm = StoreStateMachine::open(&sm_dir, Options::default())
            .unwrap()
            .saving_state_every(Duration::ZERO);
        assert_eq!(sm.applied_state().await.unwrap().0, None);
        let out = sm.apply([first, batch]).await.unwrap();
        assert_eq!(out[0], Response::Recovered);
        let Response::Batch(outcomes) = &out[1] else {
            panic!("a batch answers a batch: {:?}", out[1]);
        };
        // The refused commands wrote nothing and are decided again the same way.
        assert_eq!(outcomes[0], Response::Recovered);
        assert_eq!(outcomes[2], Response::Recovered);
        assert_eq!(outcomes[3], Response::Recovered);
        assert_eq!(outcomes[5], Response::Recovered);
        assert_eq!(all_ids(&sm.store()), before);
        assert_eq!(sm.store().stream_version("a").unwrap(), Some(2));
    });
}

/// After a crash between the store taking appends and the applied id being saved, the
/// entries applied again are matched with what the store holds: nothing is appended
/// twice, and an entry that failed before still writes nothing.
#[test]
fn state_machine_reapplied_entries_do_not_duplicate_appends() {
    let dir = tempfile::tempdir().unwrap();
    let sm_dir = dir.path().join("sm");
    rt().block_on(async {
        let mut sm = StoreStateMachine::open(&sm_dir, Options::default())
            .unwrap()
            .saving_state_every(Duration::ZERO);
        sm.apply([append_entry(1, "a", ExpectedVersion::NoStream, 1)])
            .await
            .unwrap();
        // Saved state: applied = 1. Copy it aside, as a crash would leave it.
        let saved = std::fs::read(sm_dir.join("sm-state")).unwrap();
        let out = sm
            .apply([
                append_entry(2, "a", ExpectedVersion::Any, 2),
                append_entry(3, "b", ExpectedVersion::Exact(5), 3),
                append_entry(4, "a", ExpectedVersion::Any, 4),
            ])
            .await
            .unwrap();
        assert_eq!(out[1], Response::WrongExpectedVersion { actual: None });
        drop(sm);
        std::fs::write(sm_dir.join("sm-state"), &saved).unwrap();

        let mut sm = StoreStateMachine::open(&sm_dir, Options::default())
            .unwrap()
            .saving_state_every(Duration::ZERO);
        assert_eq!(sm.applied_state().await.unwrap().0, Some(log_id(1, 1)));
        // Entry 2 is matched, then the node stops again before entry 4 is: the saved
        // state must still let entry 4 be matched after the next open.
        let out = sm
            .apply([append_entry(2, "a", ExpectedVersion::Any, 2)])
            .await
            .unwrap();
        assert_eq!(out, [Response::Recovered]);
        drop(sm);
        let mut sm = StoreStateMachine::open(&sm_dir, Options::default())
            .unwrap()
            .saving_state_every(Duration::ZERO);
        let out = sm
            .apply([
                append_entry(3, "b", ExpectedVersion::Exact(5), 3),
                append_entry(4, "a", ExpectedVersion::Any, 4),
                append_entry(5, "a", ExpectedVersion::Exact(2), 5),
            ])
            .await
            .unwrap();
        assert_eq!(&out[..2], &[Response::Recovered, Response::Recovered]);
        assert!(matches!(&out[2], Response::Appended(a) if a.first_version == 3));
        let store = sm.store();
        let ids: Vec<u8> = store
            .read_all(Position::START)
            .unwrap()
            .map(|e| e.unwrap().id.0[0])
            .collect();
        assert_eq!(ids, vec![1, 2, 4, 5]);
        assert_eq!(store.stream_version("b").unwrap(), None);
    });
}

/// By default the applied state is saved now and then, not after every batch: a node that
/// stops before the next save applies the entries after the saved id again, and each one
/// the store already holds is matched, not written twice; the snapshot build saves it.
#[test]
fn state_machine_saves_its_state_now_and_then_and_matches_the_rest_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let sm_dir = dir.path().join("sm");
    let entries: Vec<_> = (1..=6u8)
        .map(|i| append_entry(u64::from(i), "a", ExpectedVersion::Any, i))
        .collect();
    rt().block_on(async {
        let mut sm = StoreStateMachine::open(&sm_dir, Options::default())
            .unwrap()
            .saving_state_every(Duration::from_secs(3600));
        for e in &entries[..4] {
            sm.apply([e.clone()]).await.unwrap();
        }
        assert_eq!(sm.applied_state().await.unwrap().0, Some(log_id(1, 4)));
        // Not saved yet: the node would start from nothing.
        assert!(!sm_dir.join("sm-state").exists());
        drop(sm);

        let mut sm = StoreStateMachine::open(&sm_dir, Options::default())
            .unwrap()
            .saving_state_every(Duration::from_secs(3600));
        assert_eq!(sm.applied_state().await.unwrap().0, None);
        let out = sm.apply(entries.clone()).await.unwrap();
        assert_eq!(out[..4].to_vec(), vec![Response::Recovered; 4]);
        assert!(matches!(&out[4], Response::Appended(a) if a.first_version == 4));
        assert!(matches!(&out[5], Response::Appended(a) if a.first_version == 5));
        // A snapshot saves the state it covers.
        let mut builder = sm.get_snapshot_builder().await;
        builder.build_snapshot().await.unwrap();
        drop(builder);
        drop(sm);
        let mut sm = StoreStateMachine::open(&sm_dir, Options::default()).unwrap();
        assert_eq!(sm.applied_state().await.unwrap().0, Some(log_id(1, 6)));
        let ids: Vec<u8> = sm
            .store()
            .read_all(Position::START)
            .unwrap()
            .map(|e| e.unwrap().id.0[0])
            .collect();
        assert_eq!(ids, vec![1, 2, 3, 4, 5, 6]);
    });
}

/// Stream and id of every record in `$all` (changes included, as records of
/// `$streams-metadata`).
fn all_ids(store: &streamlog::Store) -> Vec<(String, streamlog::EventId)> {
    store
        .read_all(Position::START)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.stream.to_string(), e.id)
        })
        .collect()
}

fn change_entry(index: u64, cmd: Command) -> Entry<TypeConfig> {
    Entry {
        log_id: log_id(1, index),
        payload: EntryPayload::Normal(cmd.into()),
    }
}

/// Deletes, tombstones and metadata are decided by their expected versions when applied,
/// as on a single store: a conflict writes nothing, a tombstoned stream refuses every
/// later change and append.
#[test]
fn state_machine_applies_deletes_tombstones_and_metadata_with_their_expected_versions() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let mut sm = StoreStateMachine::open(dir.path().join("sm"), Options::default())
            .unwrap()
            .saving_state_every(Duration::ZERO);
        let meta = br#"{"$maxCount":5,"owner":"ops"}"#;
        let out = sm
            .apply([
                append_entry(1, "a", ExpectedVersion::NoStream, 1),
                append_entry(2, "a", ExpectedVersion::Exact(0), 2),
                change_entry(3, Command::delete("a", ExpectedVersion::Exact(0))),
                change_entry(4, Command::delete("a", ExpectedVersion::Exact(1))),
                change_entry(
                    5,
                    Command::set_metadata("b", ExpectedVersion::Exact(0), meta).unwrap(),
                ),
                change_entry(
                    6,
                    Command::set_metadata("b", ExpectedVersion::NoStream, meta).unwrap(),
                ),
                change_entry(7, Command::tombstone("c", ExpectedVersion::NoStream)),
                append_entry(8, "c", ExpectedVersion::Any, 8),
                change_entry(9, Command::delete("c", ExpectedVersion::Any)),
                change_entry(
                    10,
                    Command::set_metadata("c", ExpectedVersion::Any, meta).unwrap(),
                ),
                change_entry(11, Command::delete("$all", ExpectedVersion::Any)),
            ])
            .await
            .unwrap();
        assert_eq!(out[2], Response::WrongExpectedVersion { actual: Some(1) });
        assert!(matches!(&out[3], Response::Appended(_)), "{:?}", out[3]);
        assert_eq!(out[4], Response::WrongExpectedVersion { actual: None });
        assert!(
            matches!(&out[5], Response::Appended(a) if a.first_version == 0),
            "{:?}",
            out[5]
        );
        assert!(matches!(&out[6], Response::Appended(_)), "{:?}", out[6]);
        assert_eq!(
            out[7..10],
            [
                Response::StreamDeleted,
                Response::StreamDeleted,
                Response::StreamDeleted
            ]
        );
        assert!(matches!(&out[10], Response::Refused(_)), "{:?}", out[10]);
        let store = sm.store();
        assert_eq!(store.stream_version("a").unwrap(), None);
        let b = store.stream_metadata("b").unwrap();
        assert_eq!((b.max_count, b.metadata_version), (Some(5), Some(0)));
        assert!(store.stream_metadata("c").unwrap().tombstoned);
    });
}

/// A delete or new metadata applied again after a crash is recognised by the id its
/// proposer fixed: `ExpectedVersion::Any` would let it write a second record (and move
/// the metadata version on this replica only).
#[test]
fn state_machine_reapplied_changes_are_not_written_twice() {
    let dir = tempfile::tempdir().unwrap();
    let sm_dir = dir.path().join("sm");
    let meta = br#"{"$maxCount":2}"#;
    let entries = [
        append_entry(2, "a", ExpectedVersion::NoStream, 2),
        change_entry(3, Command::delete("a", ExpectedVersion::Any)),
        change_entry(
            4,
            Command::set_metadata("b", ExpectedVersion::Any, meta).unwrap(),
        ),
        change_entry(5, Command::tombstone("d", ExpectedVersion::Any)),
    ];
    rt().block_on(async {
        let mut sm = StoreStateMachine::open(&sm_dir, Options::default())
            .unwrap()
            .saving_state_every(Duration::ZERO);
        sm.apply([append_entry(1, "z", ExpectedVersion::NoStream, 1)])
            .await
            .unwrap();
        let saved = std::fs::read(sm_dir.join("sm-state")).unwrap();
        let out = sm.apply(entries.clone()).await.unwrap();
        assert!(
            out.iter().all(|r| matches!(r, Response::Appended(_))),
            "{out:?}"
        );
        let before = (
            sm.store().stream_metadata("a").unwrap(),
            sm.store().stream_metadata("b").unwrap(),
            all_ids(&sm.store()),
        );
        drop(sm);
        std::fs::write(sm_dir.join("sm-state"), &saved).unwrap();

        let mut sm = StoreStateMachine::open(&sm_dir, Options::default())
            .unwrap()
            .saving_state_every(Duration::ZERO);
        let out = sm.apply(entries.clone()).await.unwrap();
        assert_eq!(out, vec![Response::Recovered; 4]);
        let store = sm.store();
        let after = (
            store.stream_metadata("a").unwrap(),
            store.stream_metadata("b").unwrap(),
            all_ids(&store),
        );
        assert_eq!(after, before);
        assert_eq!(
            store.stream_metadata("b").unwrap().metadata_version,
            Some(0)
        );
        assert!(store.stream_metadata("d").unwrap().tombstoned);
        // Applying goes on normally after the matched entries.
        let out = sm
            .apply([change_entry(
                6,
                Command::set_metadata("b", ExpectedVersion::Exact(0), meta).unwrap(),
            )])
            .await
            .unwrap();
        assert!(
            matches!(&out[0], Response::Appended(a) if a.first_version == 1),
            "{out:?}"
        );
    });
}

/// A snapshot built on one state machine and installed on another gives the same store:
/// the same events at the same positions.
#[test]
fn snapshot_ships_the_store_to_another_node() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let mut leader = StoreStateMachine::open(dir.path().join("l"), Options::default())
            .unwrap()
            .saving_state_every(Duration::ZERO);
        let mut follower = StoreStateMachine::open(dir.path().join("f"), Options::default())
            .unwrap()
            .saving_state_every(Duration::ZERO);
        let entries: Vec<_> = (1..=50)
            .map(|i| append_entry(i, &format!("s{}", i % 4), ExpectedVersion::Any, i as u8))
            .collect();
        leader.apply(entries).await.unwrap();
        let snap = leader
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        let mut incoming = follower.begin_receiving_snapshot().await.unwrap();
        let mut data = snap.snapshot;
        tokio::io::copy(&mut data, &mut *incoming).await.unwrap();
        follower
            .install_snapshot(&snap.meta, incoming)
            .await
            .unwrap();
        assert_eq!(
            follower.applied_state().await.unwrap().0,
            Some(log_id(1, 50))
        );
        let read = |sm: &StoreStateMachine| -> Vec<(u64, String, u64, u8)> {
            sm.store()
                .read_all(Position::START)
                .unwrap()
                .map(|e| {
                    let e = e.unwrap();
                    (e.position.0, e.stream.to_string(), e.version, e.id.0[0])
                })
                .collect()
        };
        assert_eq!(read(&follower), read(&leader));
        assert_eq!(read(&follower).len(), 50);
        // The follower goes on applying after the snapshot.
        let out = follower
            .apply([append_entry(51, "s0", ExpectedVersion::Any, 51)])
            .await
            .unwrap();
        assert!(matches!(&out[0], Response::Appended(_)));
        drop(follower);
        let follower = StoreStateMachine::open(dir.path().join("f"), Options::default())
            .unwrap()
            .saving_state_every(Duration::ZERO);
        assert_eq!(read(&follower).len(), 51);
    });
}

/// One step of the crash test's workload.
#[derive(Debug, Clone)]
enum Op {
    Append(Vec<(u64, u64)>),
    Vote(u64),
    Committed(u64, u64),
    Truncate(u64),
    Purge(u64, u64),
}

/// The ids the log holds after `op`, from `ids` and the purged index.
fn model_after(op: &Op, ids: &[LogId<u64>]) -> Vec<LogId<u64>> {
    match op {
        Op::Append(batch) => {
            let first = batch[0].1;
            let mut out: Vec<_> = ids.iter().copied().filter(|id| id.index < first).collect();
            out.extend(batch.iter().map(|&(t, i)| log_id(t, i)));
            out
        }
        Op::Truncate(i) => ids.iter().copied().filter(|id| id.index < *i).collect(),
        Op::Purge(_, i) => ids.iter().copied().filter(|id| id.index > *i).collect(),
        Op::Vote(_) | Op::Committed(..) => ids.to_vec(),
    }
}

async fn run_op(log: &mut RaftLog, op: &Op) -> Result<(), StorageError<u64>> {
    match op {
        Op::Append(batch) => {
            log.blocking_append(batch.iter().map(|&(t, i)| entry(t, i)))
                .await
        }
        Op::Vote(term) => log.save_vote(&Vote::new(*term, 1)).await,
        Op::Committed(t, i) => log.save_committed(Some(log_id(*t, *i))).await,
        Op::Truncate(i) => log.truncate(log_id(1, *i)).await,
        Op::Purge(t, i) => log.purge(log_id(*t, *i)).await,
    }
}

/// Power cuts at every mutating call of a workload of appends, votes, truncations and
/// purges (the simulated disk keeps, zeroes or garbles each unsynced sector): the log
/// reopens with every acknowledged operation in place, and the interrupted one either
/// done, not done, or (an append or a truncation) done up to some entry, never a hole.
#[test]
fn raft_log_survives_a_power_cut_at_every_write() {
    use streamlog::io::sim::SimStorage;
    let ops = vec![
        Op::Append((1..=10).map(|i| (1, i)).collect()),
        Op::Vote(1),
        Op::Append((11..=20).map(|i| (1, i)).collect()),
        Op::Truncate(15),
        Op::Append((15..=25).map(|i| (2, i)).collect()),
        Op::Committed(2, 18),
        Op::Purge(1, 8),
        Op::Append((26..=30).map(|i| (2, i)).collect()),
        Op::Vote(2),
        Op::Append((27..=29).map(|i| (3, i)).collect()),
        Op::Truncate(28),
        Op::Purge(2, 26),
    ];
    let dir = std::path::Path::new("/node/raft");
    let mut completed_runs = 0;
    for crash_at in 1..10_000u64 {
        let sim = SimStorage::new(crash_at);
        let outcome = rt().block_on(async {
            let mut log = RaftLog::open_with(dir, Arc::new(sim.clone()), 2048).unwrap();
            sim.fail_after_ops(crash_at);
            let mut ids: Vec<LogId<u64>> = Vec::new();
            let mut vote = None;
            for op in &ops {
                if run_op(&mut log, op).await.is_err() {
                    return (ids, vote, Some(op.clone()));
                }
                ids = model_after(op, &ids);
                if let Op::Vote(t) = op {
                    vote = Some(Vote::new(*t, 1));
                }
            }
            (ids, vote, None)
        });
        let (before, vote_before, in_flight) = outcome;
        sim.crash();
        rt().block_on(async {
            let mut log = RaftLog::open_with(dir, Arc::new(sim.clone()), 2048)
                .unwrap_or_else(|e| panic!("crash at op {crash_at}: reopen failed: {e}"));
            let got: Vec<LogId<u64>> = all_entries(&mut log)
                .await
                .iter()
                .map(|e| e.log_id)
                .collect();
            let ctx = format!("crash at op {crash_at}, in flight {in_flight:?}");
            match &in_flight {
                None => assert_eq!(got, before, "{ctx}"),
                Some(op @ Op::Append(_)) => {
                    let after = model_after(op, &before);
                    let old_or_new = got == after[..got.len().min(after.len())]
                        || (got.len() <= before.len() && got == before[..got.len()]);
                    assert!(old_or_new, "{ctx}: {got:?}");
                    // Acknowledged entries below the append's first index survive.
                    let first = match op {
                        Op::Append(b) => b[0].1,
                        _ => unreachable!(),
                    };
                    let kept_before: Vec<_> = before
                        .iter()
                        .copied()
                        .filter(|id| id.index < first)
                        .collect();
                    assert_eq!(got[..kept_before.len()], kept_before[..], "{ctx}");
                }
                Some(op @ Op::Truncate(_)) => {
                    let after = model_after(op, &before);
                    assert!(
                        got.len() >= after.len()
                            && got.len() <= before.len()
                            && got == before[..got.len()],
                        "{ctx}: {got:?}"
                    );
                }
                Some(op) => {
                    let after = model_after(op, &before);
                    assert!(got == before || got == after, "{ctx}: {got:?}");
                }
            }
            let vote = log.read_vote().await.unwrap();
            match &in_flight {
                Some(Op::Vote(t)) => {
                    assert!(
                        vote == vote_before || vote == Some(Vote::new(*t, 1)),
                        "{vote:?}"
                    )
                }
                _ => assert_eq!(vote, vote_before, "crash at op {crash_at}"),
            }
        });
        if in_flight.is_none() {
            completed_runs += 1;
            if completed_runs >= 3 {
                assert!(
                    crash_at > 50,
                    "the workload has more than {crash_at} writes"
                );
                break;
            }
        }
    }
}
