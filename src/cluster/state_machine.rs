//! The state machine: a streamlog [`Store`], written only by applying log entries.
//!
//! **Applying.** Each command is one [`Store::append`] (or one delete, tombstone or
//! metadata change, its record's id fixed by the proposer) with its expected version, in
//! log order, on one thread, with the proposer's time as the commit time (an injected
//! [`Clock`]): every replica decides the same, and the outcome (appended,
//! `WrongExpectedVersion`, `StreamDeleted`, refused) is the entry's [`Response`].
//! Retries of an append (same event ids) are recognised by the store as on a single node,
//! whichever leader proposed them.
//!
//! **Durability.** The store runs with [`Durability::Buffered`]: the replicated log is
//! what makes an entry durable (a quorum holds it on disk before any replica applies it),
//! so applying waits for no disk. Now and then (every
//! [`StoreStateMachine::DEFAULT_SAVE_EVERY`] of applying, on a membership change, and
//! before a snapshot is built) the store is synced, then the applied log id is saved with
//! the store's end (`DIR/sm-state`, atomic replace). The raft log keeps every entry after
//! the saved id (it is purged only up to a snapshot, which saves it first). After a crash
//! the store holds the appends up to the saved end and maybe some after them (a prefix of
//! the log: the engine's recovery keeps whole appends in order). Openraft applies the entries after
//! the saved id again; each one whose append (or change record) the store already holds
//! is matched with it (by its first record id, frame after frame) instead of being
//! written twice, and one that wrote nothing then is skipped: its original answer went
//! out before the crash.
//! Once the store's end is reached, entries are applied normally.
//!
//! **Snapshots** are the store's segment files up to the end matching the applied log id,
//! shipped whole (see [`super::snapshot`]). Installing one replaces the store: readers
//! take the new one from then on, and a [`Replaced`] taken with the old one tells
//! subscriptions on it to end.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, watch};

use super::command::{Command, Operation, Proposal, Response};
use super::snapshot;
use super::{BasicNode, NodeId, TypeConfig};
use crate::error::{Error, Result};
use crate::io::FsStorage;
use crate::store::LifecycleChange;
use crate::{
    Clock, Durability, EventId, ExpectedVersion, Options, Position, Store, StreamMetadata,
};

/// The state file's name in the state machine's directory.
const STATE_FILE: &str = "sm-state";
/// The snapshots' directory in the state machine's directory.
const SNAPSHOTS_DIR: &str = "snapshots";
/// Prefix of the store directories (one per installed snapshot, the state file names the
/// live one).
const STORE_DIR_PREFIX: &str = "store";

/// What the state file holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SmStateFile {
    /// The live store's directory name.
    store_dir: String,
    applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    /// The store's end (log position) when `applied` was saved.
    store_end: u64,
    /// The latest snapshot: its metadata and its file's name in `snapshots/`.
    snapshot: Option<(SnapshotMeta<NodeId, BasicNode>, String)>,
}

impl Default for SmStateFile {
    fn default() -> Self {
        SmStateFile {
            store_dir: STORE_DIR_PREFIX.to_string(),
            applied: None,
            membership: StoredMembership::default(),
            store_end: 0,
            snapshot: None,
        }
    }
}

/// The state machine of a node: a [`Store`] in `DIR/store…/`, with its applied log id and
/// snapshots beside it (see the module docs). A cheap handle: clones share it.
#[derive(Clone)]
pub struct StoreStateMachine {
    inner: Arc<Mutex<Inner>>,
    /// How often, at most, applying saves the applied state.
    save_every: std::time::Duration,
    /// The store as it stands, for reads (replaced when a snapshot is installed).
    store: Arc<parking_lot::RwLock<Store>>,
    /// How many stores snapshot installs replaced: bumped under `store`'s write lock, so
    /// a reader takes a store and its number together (see [`Replaced`]).
    installs: Arc<watch::Sender<u64>>,
}

/// Tells when the store a handle was taken with ([`StoreStateMachine::store_watched`])
/// has been replaced by a snapshot install. The replaced store never changes again: a
/// subscription on it would wait for events that go to the new store.
#[derive(Debug, Clone)]
pub struct Replaced {
    installs: watch::Receiver<u64>,
    /// The install count when the store was taken.
    taken_at: u64,
}

impl Replaced {
    /// Whether the store has been replaced.
    pub fn is_replaced(&self) -> bool {
        *self.installs.borrow() != self.taken_at
    }

    /// Completes once the store has been replaced (at once if it already was); never if
    /// the state machine goes away without replacing it.
    pub async fn wait(&mut self) {
        let taken_at = self.taken_at;
        let gone = self.installs.wait_for(|n| *n != taken_at).await.is_err();
        if gone {
            std::future::pending::<()>().await;
        }
    }
}

impl std::fmt::Debug for StoreStateMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreStateMachine").finish_non_exhaustive()
    }
}

struct Inner {
    dir: PathBuf,
    options: Options,
    state: SmStateFile,
    /// The commit time the next append gets (the store's clock reads it).
    clock_us: Arc<AtomicI64>,
    /// Appends the store held past `state.store_end` when it was opened: position and
    /// first event id of each, in log order, still to be matched with their entries.
    replay: VecDeque<(u64, [u8; 16])>,
    /// Names snapshot files uniquely within this process.
    snapshot_seq: u64,
    /// When the state file was last written (or the state machine opened).
    saved_at: std::time::Instant,
}

impl StoreStateMachine {
    /// How often, at most, applying saves the applied state by default: a crash costs a
    /// restart the re-applying of at most this much (matched with what the store holds,
    /// never written twice), and applying is spared a store sync and a state-file
    /// replacement (three `fdatasync`s) per batch.
    pub const DEFAULT_SAVE_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

    /// Saves the applied state after every applied batch when `every` is zero, else at
    /// most once per `every` (see the module docs).
    #[must_use]
    pub fn saving_state_every(mut self, every: std::time::Duration) -> StoreStateMachine {
        self.save_every = every;
        self
    }

    /// Opens (or creates) the state machine in `dir`, its store opened with `options`
    /// (their durability and clock are replaced: see the module docs).
    ///
    /// # Errors
    /// The store's open errors; [`Error::Corrupted`] when the state file does not check or
    /// the store ends before the end the state file saved.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<StoreStateMachine> {
        let dir = dir.as_ref().to_path_buf();
        let storage = FsStorage;
        crate::io::create_dir_durably(&storage, &dir.join(SNAPSHOTS_DIR))
            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        let state: SmStateFile = super::meta::read(&storage, &dir, STATE_FILE)?.unwrap_or_default();
        remove_leftovers(&dir, &state)?;
        let clock_us = Arc::new(AtomicI64::new(0));
        let store = open_store(&dir.join(&state.store_dir), &options, &clock_us)?;
        let head = store.head().0;
        if head < state.store_end {
            return Err(Error::corrupted(
                dir.join(&state.store_dir),
                head,
                format!(
                    "the store ends at {head} but its applied state was saved at {}",
                    state.store_end
                ),
            ));
        }
        let replay = appends_after(&store, state.store_end)?;
        Ok(StoreStateMachine {
            inner: Arc::new(Mutex::new(Inner {
                dir,
                options,
                state,
                clock_us,
                replay,
                snapshot_seq: 0,
                saved_at: std::time::Instant::now(),
            })),
            save_every: Self::DEFAULT_SAVE_EVERY,
            store: Arc::new(parking_lot::RwLock::new(store)),
            installs: Arc::new(watch::channel(0).0),
        })
    }

    /// The store, for reads. Writes go through the replicated log only; a write through
    /// this handle would make this replica differ from the others.
    pub fn store(&self) -> Store {
        self.store.read().clone()
    }

    /// The store as it stands, with what tells when a snapshot install replaces it (for
    /// subscriptions, which follow one store). As [`StoreStateMachine::store`], for reads
    /// only.
    pub fn store_watched(&self) -> (Store, Replaced) {
        let store = self.store.read();
        let replaced = Replaced {
            installs: self.installs.subscribe(),
            taken_at: *self.installs.borrow(),
        };
        (store.clone(), replaced)
    }

    fn apply_command(&self, inner: &mut Inner, cmd: &Command) -> Result<Response> {
        if let Some(&(_, first_id)) = inner.replay.front() {
            // Before the restart, the store took the changes up to its end: this entry
            // either wrote the next of them, or wrote nothing.
            if cmd.first_record_id() == Some(first_id) {
                inner.replay.pop_front();
            }
            return Ok(Response::Recovered);
        }
        inner.clock_us.store(cmd.proposed_at_us, Ordering::Release);
        let store = self.store.read().clone();
        let expected = ExpectedVersion::from(cmd.expected);
        let stream = cmd.stream.as_str();
        let outcome = match &cmd.operation {
            Operation::Append(events) => {
                let events: Vec<_> = events.iter().map(|e| e.to_new_event()).collect();
                store.append(stream, expected, events)
            }
            Operation::Delete { id } => {
                store.change_with_id(stream, expected, LifecycleChange::Delete, EventId(*id))
            }
            Operation::Tombstone { id } => {
                store.change_with_id(stream, expected, LifecycleChange::Tombstone, EventId(*id))
            }
            Operation::SetMetadata { id, json } => StreamMetadata::from_json(json).and_then(|m| {
                store.change_with_id(
                    stream,
                    expected,
                    LifecycleChange::Metadata(&m),
                    EventId(*id),
                )
            }),
        };
        match outcome {
            Ok(r) => Ok(Response::Appended(r.into())),
            Err(Error::WrongExpectedVersion { actual, .. }) => {
                Ok(Response::WrongExpectedVersion { actual })
            }
            Err(Error::StreamDeleted { .. }) => Ok(Response::StreamDeleted),
            Err(
                e @ (Error::InvalidArgument(_)
                | Error::TooLarge { .. }
                | Error::IdempotencyConflict { .. }),
            ) => Ok(Response::Refused(e.to_string())),
            Err(e) => Err(e),
        }
    }

    async fn apply_entries(
        &self,
        entries: impl IntoIterator<Item = Entry<TypeConfig>>,
    ) -> std::result::Result<Vec<Response>, StorageError<NodeId>> {
        let mut inner = self.inner.lock().await;
        let mut out = Vec::new();
        let mut state = inner.state.clone();
        let mut membership_changed = false;
        for entry in entries {
            let response = match &entry.payload {
                EntryPayload::Blank => Response::Empty,
                EntryPayload::Normal(Proposal::One(cmd)) => self
                    .apply_command(&mut inner, cmd)
                    .map_err(|e| StorageIOError::apply(entry.log_id, &e))?,
                EntryPayload::Normal(Proposal::Batch(cmds)) => Response::Batch(
                    cmds.iter()
                        .map(|cmd| self.apply_command(&mut inner, cmd))
                        .collect::<Result<Vec<_>>>()
                        .map_err(|e| StorageIOError::apply(entry.log_id, &e))?,
                ),
                EntryPayload::Membership(m) => {
                    state.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                    membership_changed = true;
                    Response::Empty
                }
            };
            state.applied = Some(entry.log_id);
            out.push(response);
        }
        inner.state = state;
        if membership_changed || inner.saved_at.elapsed() >= self.save_every {
            let store = self.store.read().clone();
            save_state(&mut inner, &store).map_err(|e| StorageIOError::write_state_machine(&e))?;
        }
        Ok(out)
    }
}

/// Syncs the store, then saves the applied state with the store's end: the store holds
/// everything the saved id covers.
fn save_state(inner: &mut Inner, store: &Store) -> Result<()> {
    store.sync()?;
    let head = store.head().0;
    // While appends are matched after a restart, the store's end is past what the applied
    // id covers: the saved end is where the first append still to be matched starts.
    inner.state.store_end = inner.replay.front().map_or(head, |&(p, _)| p);
    super::meta::write_atomic(&FsStorage, &inner.dir, STATE_FILE, &inner.state)?;
    inner.saved_at = std::time::Instant::now();
    Ok(())
}

/// Opens the store of the state machine: buffered (the replicated log is the durable
/// record), stamped with the proposers' times.
fn open_store(dir: &Path, options: &Options, clock_us: &Arc<AtomicI64>) -> Result<Store> {
    let clock_us = Arc::clone(clock_us);
    let options = options
        .clone()
        .with_durability(Durability::Buffered)
        .with_clock(Clock::from_fn(move || {
            let us = clock_us.load(Ordering::Acquire);
            let at = std::time::Duration::from_micros(us.max(0).unsigned_abs());
            std::time::UNIX_EPOCH + at
        }));
    Store::open_with(dir, options)
}

/// Position and first event id of each append in `store` at or after `from`.
fn appends_after(store: &Store, from: u64) -> Result<VecDeque<(u64, [u8; 16])>> {
    let mut out: VecDeque<(u64, [u8; 16])> = VecDeque::new();
    for e in store.read_all(Position(from))? {
        let e = e?;
        if out.back().is_none_or(|(p, _)| *p != e.position.0) {
            out.push_back((e.position.0, e.id.0));
        }
    }
    Ok(out)
}

/// Removes store directories other than the live one (an install that did not finish,
/// or the store a finished install replaced) and unfinished snapshot files.
fn remove_leftovers(dir: &Path, state: &SmStateFile) -> Result<()> {
    let io = |p: &Path, e| Error::io(format!("clean up {}", p.display()), e);
    for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
        let entry = entry.map_err(|e| io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(STORE_DIR_PREFIX) && name != state.store_dir {
            std::fs::remove_dir_all(entry.path()).map_err(|e| io(&entry.path(), e))?;
        }
    }
    let snaps = dir.join(SNAPSHOTS_DIR);
    let keep = state.snapshot.as_ref().map(|(_, name)| name.as_str());
    for entry in std::fs::read_dir(&snaps).map_err(|e| io(&snaps, e))? {
        let entry = entry.map_err(|e| io(&snaps, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if Some(name.as_str()) != keep {
            std::fs::remove_file(entry.path()).map_err(|e| io(&entry.path(), e))?;
        }
    }
    Ok(())
}

/// Builds a snapshot of the store as it stood at a given applied log id.
#[derive(Debug)]
pub struct StoreSnapshotBuilder {
    sm: StoreStateMachine,
}

impl RaftSnapshotBuilder<TypeConfig> for StoreSnapshotBuilder {
    async fn build_snapshot(
        &mut self,
    ) -> std::result::Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        // The apply lock is held while the files are copied: the store's end must match
        // the applied id. Copying is sequential reads of the segments.
        let mut inner = self.sm.inner.lock().await;
        let err = |e: Error| StorageError::from(StorageIOError::write_snapshot(None, &e));
        let store = self.sm.store.read().clone();
        let head = store.head().0;
        inner.snapshot_seq += 1;
        let meta = SnapshotMeta {
            last_log_id: inner.state.applied,
            last_membership: inner.state.membership.clone(),
            snapshot_id: format!(
                "{}-{}-{}",
                inner.state.applied.map_or(0, |l| l.index),
                inner.state.applied.map_or(0, |l| l.leader_id.term),
                inner.snapshot_seq
            ),
        };
        let name = format!("{}.snap", meta.snapshot_id);
        let path = inner.dir.join(SNAPSHOTS_DIR).join(&name);
        snapshot::write_archive(store.path(), head, &path).map_err(err)?;
        let old = inner.state.snapshot.replace((meta.clone(), name));
        // The snapshot lets the raft log be purged up to its id: the applied state saved
        // with it (the store synced first) must cover that id.
        if let Err(e) = save_state(&mut inner, &store) {
            inner.state.snapshot = old;
            return Err(err(e));
        }
        if let Some((_, old_name)) = old {
            let _ = std::fs::remove_file(inner.dir.join(SNAPSHOTS_DIR).join(old_name));
        }
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| err(Error::io(format!("open {}", path.display()), e)))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(file),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StoreStateMachine {
    type SnapshotBuilder = StoreSnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> std::result::Result<
        (Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>),
        StorageError<NodeId>,
    > {
        let inner = self.inner.lock().await;
        Ok((inner.state.applied, inner.state.membership.clone()))
    }

    async fn apply<I>(
        &mut self,
        entries: I,
    ) -> std::result::Result<Vec<Response>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.apply_entries(entries).await
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        StoreSnapshotBuilder { sm: self.clone() }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> std::result::Result<Box<tokio::fs::File>, StorageError<NodeId>> {
        let mut inner = self.inner.lock().await;
        inner.snapshot_seq += 1;
        let path = inner
            .dir
            .join(SNAPSHOTS_DIR)
            .join(format!("incoming-{}.tmp", inner.snapshot_seq));
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .await
            .map_err(|e| {
                StorageIOError::write_snapshot(
                    None,
                    &Error::io(format!("create {}", path.display()), e),
                )
            })?;
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<tokio::fs::File>,
    ) -> std::result::Result<(), StorageError<NodeId>> {
        let signature = Some(meta.signature());
        let err =
            |e: Error| StorageError::from(StorageIOError::write_snapshot(signature.clone(), &e));
        let mut inner = self.inner.lock().await;
        inner.snapshot_seq += 1;
        let name = format!("{}.snap", meta.snapshot_id);
        let snap_path = inner.dir.join(SNAPSHOTS_DIR).join(&name);
        snapshot::save_received(*snapshot, &snap_path)
            .await
            .map_err(err)?;
        let store_dir = format!(
            "{STORE_DIR_PREFIX}-{}-{}",
            meta.snapshot_id, inner.snapshot_seq
        );
        let new_dir = inner.dir.join(&store_dir);
        snapshot::unpack_archive(&snap_path, &new_dir).map_err(err)?;
        let store = open_store(&new_dir, &inner.options, &inner.clock_us).map_err(err)?;
        let head = store.head().0;
        let mut state = inner.state.clone();
        let old_dir = std::mem::replace(&mut state.store_dir, store_dir);
        state.applied = meta.last_log_id;
        state.membership = meta.last_membership.clone();
        state.store_end = head;
        let old_snapshot = state.snapshot.replace((meta.clone(), name));
        super::meta::write_atomic(&FsStorage, &inner.dir, STATE_FILE, &state).map_err(err)?;
        inner.state = state;
        inner.replay.clear();
        let old_store = {
            let mut live = self.store.write();
            let old = std::mem::replace(&mut *live, store);
            self.installs.send_modify(|n| *n = n.wrapping_add(1));
            old
        };
        drop(old_store);
        let _ = std::fs::remove_dir_all(inner.dir.join(old_dir));
        if let Some((_, old_name)) = old_snapshot
            && old_name != format!("{}.snap", meta.snapshot_id)
        {
            let _ = std::fs::remove_file(inner.dir.join(SNAPSHOTS_DIR).join(old_name));
        }
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> std::result::Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let inner = self.inner.lock().await;
        let Some((meta, name)) = inner.state.snapshot.clone() else {
            return Ok(None);
        };
        let path = inner.dir.join(SNAPSHOTS_DIR).join(name);
        let file = tokio::fs::File::open(&path).await.map_err(|e| {
            StorageIOError::read_snapshot(
                Some(meta.signature()),
                &Error::io(format!("open {}", path.display()), e),
            )
        })?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(file),
        }))
    }
}
