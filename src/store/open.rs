//! Opening a store: the directory and its lock, the index, the log's recovery replayed
//! into the index, the snapshot files, and the background threads.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::checkpoints::PendingCheckpoint;
use super::live;
use super::maintenance::{Signal, spawn_background};
use super::writer::{self, Published, Writer};
use super::{
    Closer, INDEX_DIR, Inner, LOCK_FILE, RecoveryReport, SEGMENTS_DIR, SNAPSHOTS_DIR, Store,
};
use super::{Durability, Options, Position, ResumeToken};
use crate::cache::Generations;
use crate::error::{Error, Result};
use crate::format::{self, FrameHeader, FrameKind};
use crate::index::{Hashing, Index, IndexedLogFiles, StreamCache, open_indexed_log};
use crate::io::LockGuard;
use crate::log::Log;
use crate::snapshot::SnapshotStore;

impl Store {
    /// Opens the store in `dir` with default options, creating the directory if needed.
    ///
    /// # Errors
    /// See [`Store::open_with`].
    pub fn open(dir: impl AsRef<Path>) -> Result<Store> {
        Store::open_with(dir, Options::default())
    }

    /// Opens the store in `dir`, creating it if needed (unless read-only), and recovers:
    /// every segment is checked, a torn tail is cut off and reported in
    /// [`Store::recovery_report`].
    ///
    /// # Errors
    /// - [`Error::InvalidArgument`] when an option is out of bounds, or (read-only) there
    ///   is no store in `dir`;
    /// - [`Error::Locked`] when another `Store` has the directory open;
    /// - [`Error::Corrupted`] when data attested as durable is damaged;
    /// - [`Error::UnsupportedFormat`] when a segment or index file was written by a newer
    ///   streamlog (nothing is changed; snapshot files are opened, and refused, at their
    ///   first use);
    /// - [`Error::Io`] on I/O failure.
    pub fn open_with(dir: impl AsRef<Path>, options: Options) -> Result<Store> {
        Store::open_inner(dir.as_ref(), options, false, &mut |_| {})
    }

    /// Rebuilds the index of the store in `dir` from its segments: opens it, replays every
    /// frame into a fresh index (reporting each frame's size to `progress`), writes the new
    /// index files, removes the old ones, and closes the store. The index is derived data,
    /// so this never loses events; use it after `verify` reports index problems.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `dir` holds no store (nothing is created); otherwise
    /// as [`Store::open_with`], and I/O errors writing the index.
    pub fn reindex(
        dir: impl AsRef<Path>,
        options: Options,
        mut progress: impl FnMut(u64),
    ) -> Result<RecoveryReport> {
        if options.read_only {
            return Err(Error::ReadOnly);
        }
        // A rebuild is of a store that exists: never create one.
        let segments_dir = dir.as_ref().join(SEGMENTS_DIR);
        let exists = options
            .storage
            .exists(&segments_dir)
            .map_err(|e| Error::io(format!("stat {}", segments_dir.display()), e))?;
        if !exists {
            return Err(Error::InvalidArgument(format!(
                "no streamlog store in {}",
                dir.as_ref().display()
            )));
        }
        let store = Store::open_inner(dir.as_ref(), options, true, &mut progress)?;
        let report = store.recovery_report().clone();
        store.close()?;
        Ok(report)
    }

    /// Opens in named steps: the directory and its lock, the index, the log (its recovery
    /// replayed into the index), the snapshot files, the shared state, the background
    /// threads.
    fn open_inner(
        dir: &Path,
        options: Options,
        rebuild_index: bool,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Store> {
        options.validate()?;
        // A read-only open beside a live writer follows the end it publishes.
        let (lock, live_end) = match lock_dir(dir, &options) {
            // A reader holds no lock: a writer may start beside it (and is then followed).
            Ok(_) if options.read_only => (Box::new(live::Unlocked) as Box<dyn LockGuard>, None),
            Ok(lock) => (lock, None),
            Err(Error::Locked { path }) if options.read_only => {
                match live::read_live(options.storage.as_ref(), dir)? {
                    Some(end) => (Box::new(live::Unlocked) as Box<dyn LockGuard>, Some(end)),
                    None => return Err(Error::Locked { path }),
                }
            }
            Err(e) => return Err(e),
        };
        let live_file = if options.read_only {
            None
        } else {
            live::open_existing(options.storage.as_ref(), dir)?
        };
        let hashing = if options.forced_hash_collisions {
            Hashing::ForcedCollisions
        } else {
            Hashing::Standard
        };
        // A scavenge a crash interrupted may have switched segments without rewriting the
        // index after them: the index (derived data) is rebuilt from the segments.
        let marker = dir.join(super::scavenge::SCAVENGE_MARKER);
        let interrupted_scavenge = options
            .storage
            .exists(&marker)
            .map_err(|e| Error::io(format!("stat {}", marker.display()), e))?;
        let rebuild_index = rebuild_index || interrupted_scavenge;
        let OpenedLog {
            index,
            log,
            mut recovery,
            replayed_checkpoints,
            last_append,
        } = open_log_and_index(dir, &options, hashing, rebuild_index, live_end, progress)?;
        // Under `Sync` readers see only durable frames, and every append acknowledged
        // before a crash was durable: what the crash left only in the OS cache is made
        // durable now, so that the whole log is visible. The other modes promise nothing
        // before a sync, and their next one (`Store::sync`, the periodic syncer, an index
        // flush, `close`) covers the tail: their open after a crash syncs nothing. After a
        // clean close every event lies below the closing checkpoint's watermark, already
        // durable: no mode syncs (the checkpoint itself is covered by the next sync).
        if options.durability == Durability::Sync && !recovery.clean_shutdown {
            log.sync()?;
        }
        if rebuild_index || recovery.index.rebuilt.is_some() {
            // Replayed appends count a stream by its first event, which a scavenge may
            // have removed while later ones remain.
            index.recount_streams()?;
        }
        // Opened at their first use: see `SnapshotStore::open`.
        let snapshots = SnapshotStore::open(
            Arc::clone(&options.storage),
            &dir.join(SNAPSHOTS_DIR),
            hashing,
            options.segment_size_bytes,
            options.read_only,
        );
        // What the files hold beyond the published end is the writer's, not a torn tail.
        let indexed_to = log.written();
        if let Some(end) = live_end {
            log.clamp_to(end);
            if recovery
                .truncated
                .as_ref()
                .is_some_and(|t| t.position >= end)
            {
                recovery.truncated = None;
            }
            recovery.removed_segments.clear();
        }
        // Space is preallocated only where every append is synced: there it saves the
        // file system a journal commit per fdatasync; elsewhere it would only double the
        // bytes written.
        let log = match options.durability {
            Durability::Sync => log.with_preallocation(options.preallocate_bytes),
            _ => log,
        };
        // The event log's written bytes are never cut while it is open: scans read its
        // active segment through a mapping, as they read sealed ones.
        let log = log.with_active_mapping();
        let log = Arc::new(if options.sector_aligned_commits {
            log.with_commit_alignment(writer::COMMIT_ALIGN_BYTES)
        } else {
            log
        });
        let inner = Arc::new(Inner {
            opened_at: log.written(),
            writer: Mutex::new(Writer {
                appender: log.appender(),
                streams: StreamCache::new(options.stream_cache_entries),
                last_commit_us: i64::MIN,
            }),
            log,
            dir: dir.to_path_buf(),
            index,
            frames: Mutex::new(Generations::new(options.frame_cache_bytes)),
            commit_times: Mutex::new(rustc_hash::FxHashMap::default()),
            subscription_hub: std::sync::OnceLock::new(),
            snapshots,
            registry: super::metadata::Registry::default(),
            published: Published::default(),
            indexed_to: std::sync::atomic::AtomicU64::new(indexed_to),
            live: std::sync::OnceLock::new(),
            live_published: std::sync::atomic::AtomicU64::new(
                match (options.read_only, live_end) {
                    // Beside a writer: trust what it publishes from now on.
                    (true, Some(end)) => end,
                    (true, None) => {
                        live::read_live(options.storage.as_ref(), dir)?.unwrap_or(u64::MAX)
                    }
                    (false, _) => 0,
                },
            ),
            commits: Mutex::new(Default::default()),
            recovery,
            closed: AtomicBool::new(false),
            background: Mutex::new(Vec::new()),
            maintenance: Arc::new(Signal::default()),
            maintenance_done: Condvar::new(),
            maintenance_lock: Mutex::new(()),
            index_error: Mutex::new(None),
            scavenging: Mutex::new(()),
            pending_checkpoints: Mutex::new(Vec::new()),
            pending_checkpoint_count: std::sync::atomic::AtomicUsize::new(0),
            checkpoint_files: Mutex::new(()),
            options,
            _lock: lock,
        });
        // Stream metadata and deletes, before any read or write can need them; and where
        // scavenges left each stream's first surviving version.
        inner.registry.set_hashing(hashing);
        let system_keys = hashing.keys(super::METADATA_STREAM);
        for seg in inner.log.segments() {
            if let Some(map) = seg.compact_map()? {
                for run in map.removed() {
                    if (run.hash, run.check) != system_keys {
                        inner.registry.note_scavenged(
                            (run.hash, run.check),
                            run.first_version.saturating_add(run.count),
                        );
                    }
                }
            }
        }
        inner.load_registry(inner.visible())?;
        if !inner.options.read_only {
            // Checkpoints saved with appends in the replayed tail: their files may not
            // have been written before the crash.
            inner.reconcile_checkpoints(replayed_checkpoints)?;
            // Commit times go on from the last append's, whatever the clock says now.
            let last = inner.last_commit_before(inner.log.written(), last_append)?;
            inner.writer.lock().last_commit_us = last.unwrap_or(i64::MIN);
            start_background(&inner)?;
            live::start_publisher(&inner, live_file)?;
            if interrupted_scavenge {
                // The rebuilt index is written before the marker goes: until then, the
                // next open rebuilds it again.
                inner.maintain_index(true);
                if inner.index_error.lock().is_none() {
                    let storage = inner.options.storage.as_ref();
                    storage
                        .remove(&marker)
                        .and_then(|()| storage.sync_dir(dir))
                        .map_err(|e| Error::io(format!("remove {}", marker.display()), e))?;
                }
            }
        } else {
            live::start_follower(&inner)?;
        }
        Ok(Store {
            _closer: Arc::new(Closer(Arc::clone(&inner))),
            inner,
        })
    }
}

/// Checks (read-only) or creates the store directory, and takes its lock.
fn lock_dir(dir: &Path, options: &Options) -> Result<Box<dyn LockGuard>> {
    let storage = options.storage.as_ref();
    let segments_dir = dir.join(SEGMENTS_DIR);
    if options.read_only {
        let exists = storage
            .exists(&segments_dir)
            .map_err(|e| Error::io(format!("stat {}", segments_dir.display()), e))?;
        if !exists {
            return Err(Error::InvalidArgument(format!(
                "no streamlog store in {}",
                dir.display()
            )));
        }
    } else {
        crate::io::create_dir_durably(storage, &segments_dir)
            .map_err(|e| Error::io(format!("create {}", segments_dir.display()), e))?;
    }
    let lock_path = dir.join(LOCK_FILE);
    // A reader's open holds a shared lock for a moment (to learn whether a writer runs):
    // a writer that meets one tries again for a little while before it reports `Locked`.
    let attempts = if options.read_only { 1 } else { 20 };
    for _ in 1..attempts {
        let lock = storage
            .try_lock(&lock_path, options.read_only)
            .map_err(|e| Error::io(format!("lock {}", lock_path.display()), e))?;
        if let Some(lock) = lock {
            return Ok(lock);
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    storage
        .try_lock(&lock_path, options.read_only)
        .map_err(|e| Error::io(format!("lock {}", lock_path.display()), e))?
        .ok_or(Error::Locked { path: lock_path })
}

/// The event log and its index as an open found them.
struct OpenedLog {
    index: Index,
    log: Log,
    recovery: RecoveryReport,
    /// The consumer checkpoints carried by the replayed frames.
    replayed_checkpoints: Vec<PendingCheckpoint>,
    /// The position of an append with none after it, when known: the last one replayed,
    /// or else the index's last covered frame.
    last_append: Option<u64>,
}

/// Opens the index and the log of events, the log's recovery replayed into the index
/// (all of it when `rebuild` is asked).
fn open_log_and_index(
    dir: &Path,
    options: &Options,
    hashing: Hashing,
    rebuild: bool,
    live_end: Option<u64>,
    progress: &mut dyn FnMut(u64),
) -> Result<OpenedLog> {
    let files = IndexedLogFiles {
        index_dir: &dir.join(INDEX_DIR),
        segments_dir: &dir.join(SEGMENTS_DIR),
        kind: format::SEGMENT_KIND_EVENTS,
        segment_size: options.segment_size_bytes,
        memtable_entries: options.memtable_entries,
        hashing,
        read_only: options.read_only,
        rebuild,
        read_limit: live_end,
        covered_is_attested: true,
    };
    let checkpoints = std::cell::RefCell::new(Vec::new());
    let last_replayed = std::cell::Cell::new(None);
    let key = key_fn(|header, body| {
        if header.kind == FrameKind::Events
            && header.has_checkpoint()
            && let Ok(events) = format::decode_events_body(header, body)
            && let Some(c) = events.checkpoint
        {
            checkpoints.borrow_mut().push(PendingCheckpoint {
                name: c.name.to_string(),
                token: ResumeToken {
                    position: Position(c.position),
                    skip: c.skip,
                },
                frame_end: header.position.saturating_add(header.frame_len()),
            });
        }
        let key = events_key(header, body);
        if key.is_some() {
            last_replayed.set(Some(header.position));
        }
        key
    });
    let (index, log, recovery, index_report) =
        open_indexed_log(&options.storage, files, key, progress)?;
    // The last append: the last one replayed, or else the index's last covered frame.
    let last_append = last_replayed
        .get()
        .or(Some(index.manifest().last_frame_position).filter(|&p| p != 0));
    Ok(OpenedLog {
        index,
        log,
        recovery: RecoveryReport::from_log(recovery, index_report),
        replayed_checkpoints: checkpoints.into_inner(),
        last_append,
    })
}

/// Gives a closure the signature the index's replay asks for (a key borrowing from the
/// body it is given, whatever its lifetime).
fn key_fn<F>(f: F) -> F
where
    F: for<'b> Fn(&FrameHeader, &'b [u8]) -> Option<(&'b str, u64, u32)>,
{
    f
}

/// The index key of an events frame: its stream, first version and event count.
pub(super) fn events_key<'b>(header: &FrameHeader, body: &'b [u8]) -> Option<(&'b str, u64, u32)> {
    if header.kind != FrameKind::Events {
        return None;
    }
    format::decode_events_summary(header, body).ok()
}

/// Starts the writer's background threads: the `Periodic` syncer and the index
/// maintainer (or runs a due maintenance round now, without one).
fn start_background(inner: &Arc<Inner>) -> Result<()> {
    if let Durability::Periodic(interval) = inner.options.durability {
        spawn_background(
            inner,
            "streamlog-sync",
            Arc::new(Signal::default()),
            interval,
            |inner| {
                // A failure poisons the log; appends report it from then on.
                let _ = inner.log.sync();
            },
        )?;
    }
    if inner.options.background_index_maintenance {
        spawn_background(
            inner,
            "streamlog-index",
            Arc::clone(&inner.maintenance),
            Duration::from_secs(1),
            |inner| inner.maintain_index(false),
        )?;
        if inner.index_due() {
            inner.maintenance.notify_work();
        }
    } else if inner.index_due() {
        inner.maintain_index(false);
    }
    Ok(())
}
