//! Crash/restart property test of the real `Store` on the simulated storage backend.
//!
//! Each seed drives a random workload (appends of 1..8 events of random sizes to a handful
//! of streams, expected-version conflicts, syncs, clean close + reopen) and crashes the
//! simulated machine: at random I/O points (a crash point armed with `fail_after_ops`, so
//! writes, syncs, segment creation, directory syncs, recovery's own truncation and syncs,
//! and the close all get hit) and plainly between operations. After each crash the store is
//! reopened and checked against an oracle:
//!
//! - the open succeeds (a crash is never `Corrupted`);
//! - `read_all` shows exactly the appends verified after the previous open followed by a
//!   prefix of the appends attempted since, each whole (all or nothing), with the right
//!   ids, types, payloads and versions, and that prefix covers every *acknowledged* append
//!   (`Ok` under `Durability::Sync`; followed by an `Ok` `sync()` or close under `Buffered`);
//! - per-stream reads agree with `read_all`, versions are gap-free from 0;
//! - the recovery report agrees with what was found.
//!
//! A failure prints its seed and step. `STREAMLOG_SIM_SEED=<seed>` replays exactly that
//! seed; `STREAMLOG_SIM_CYCLES=<n>` sets how many crash cycles each test runs (the long
//! version).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use streamlog::io::Storage;
use streamlog::io::sim::{SimStorage, SplitMix64 as Rng};
use streamlog::{Durability, Error, EventId, ExpectedVersion, NewEvent, Options, Position, Store};

const DIR: &str = "/db";
const STREAMS: u64 = 5;
/// Crash cycles per test function in the default run (two functions run in parallel).
/// Debug builds run fewer: the engine's per-read 1 MiB read-ahead buffer is zero-filled
/// element by element without optimizations, which dominates the run (see the report).
const DEFAULT_CYCLES: u64 = if cfg!(debug_assertions) { 200 } else { 2_600 };
/// Cycles of one seed before starting over with an empty store (keeps the log small).
const CYCLES_PER_SEED: u64 = if cfg!(debug_assertions) { 20 } else { 40 };

#[derive(Debug, Clone, PartialEq, Eq)]
struct Ev {
    id: [u8; 16],
    ty: String,
    data: Vec<u8>,
    metadata: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Append {
    stream: String,
    first_version: u64,
    events: Vec<Ev>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    crash_cycles: u64,
    clean_reopens: u64,
    appends_attempted: u64,
    acked_events_checked: u64,
    unacked_appends_lost: u64,
    unacked_appends_survived: u64,
    crash_points_hit: u64,
    seeds: u64,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.crash_cycles += o.crash_cycles;
        self.clean_reopens += o.clean_reopens;
        self.appends_attempted += o.appends_attempted;
        self.acked_events_checked += o.acked_events_checked;
        self.unacked_appends_lost += o.unacked_appends_lost;
        self.unacked_appends_survived += o.unacked_appends_survived;
        self.crash_points_hit += o.crash_points_hit;
        self.seeds += o.seeds;
    }
}

/// How the previous boot ended, which decides what the next open must show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    Fresh,
    Crash,
    CleanClose,
}

struct Run {
    durability: Durability,
    /// `Options::sector_aligned_commits`.
    aligned: bool,
    rng: Rng,
    sim: SimStorage,
    /// Appends verified present at the last open, in log order.
    base: Vec<Append>,
    /// Appends attempted since then that may have been written, in order.
    pending: Vec<Append>,
    /// How many of `pending` (a prefix) are acknowledged.
    acked: usize,
    /// Whether a write or sync failed in this boot (the store is poisoned).
    failed: bool,
    /// Whether a fault (crash point) was armed in this boot.
    armed: bool,
    step: u64,
    cycle: u64,
    trace: Vec<String>,
    stats: Stats,
    /// A store from before a crash, dropped only after the next open.
    zombie: Option<Store>,
}

type Outcome<T> = Result<T, String>;

impl Run {
    fn new(seed: u64, durability: Durability, model: CrashModel) -> Self {
        let sim = SimStorage::new(seed);
        sim.set_tear_synced_sectors(model.tear_synced);
        sim.create_dir_all(Path::new(DIR)).unwrap();
        sim.sync_dir(Path::new("/")).unwrap();
        Run {
            durability,
            aligned: model.aligned,
            rng: Rng::new(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0x00C0_FFEE),
            sim,
            base: Vec::new(),
            pending: Vec::new(),
            acked: 0,
            failed: false,
            armed: false,
            step: 0,
            cycle: 0,
            trace: Vec::new(),
            stats: Stats::default(),
            zombie: None,
        }
    }

    fn note(&mut self, s: String) {
        self.step += 1;
        if self.trace.len() >= 40 {
            self.trace.remove(0);
        }
        self.trace
            .push(format!("[cycle {} step {}] {s}", self.cycle, self.step));
    }

    fn options(&self) -> Options {
        Options::default()
            .with_storage(Arc::new(self.sim.clone()))
            .with_segment_size_bytes(4096)
            .with_memtable_entries(16)
            .with_background_index_maintenance(false)
            .with_durability(self.durability)
            .with_sector_aligned_commits(self.aligned)
    }

    /// The next version of each stream in the store's in-memory view (base + pending).
    fn next_version(&self, stream: &str) -> u64 {
        self.base
            .iter()
            .chain(&self.pending)
            .filter(|a| a.stream == stream)
            .map(|a| a.first_version + a.events.len() as u64)
            .max()
            .unwrap_or(0)
    }

    fn fault_possible(&self) -> bool {
        self.armed || self.failed
    }

    fn crash(&mut self, store: Option<Store>) {
        self.sim.crash();
        self.stats.crash_cycles += 1;
        if let Some(store) = store {
            if self.rng.chance(50) {
                self.note("crash; old store dropped now".into());
                drop(store); // its close must fail quietly against stale handles
            } else {
                self.note("crash; old store kept alive until after the next open".into());
                self.zombie = Some(store);
            }
        } else {
            self.note("crash".into());
        }
    }

    /// Opens the store after `ended`; on a crash point during recovery, crashes and retries.
    fn open(&mut self, ended: Ended) -> Outcome<Store> {
        let mut ended = ended;
        loop {
            self.armed = false;
            if ended == Ended::Crash && self.rng.chance(15) {
                let n = self.rng.range(1, 5);
                self.sim.fail_after_ops(n);
                self.armed = true;
                self.note(format!("arm crash point during recovery: op {n}"));
            }
            self.note("open".into());
            let opened = Store::open_with(DIR, self.options());
            if let Some(z) = self.zombie.take() {
                drop(z);
            }
            match opened {
                Ok(store) if self.armed && self.sim.is_dead() => {
                    // The machine died in what open does after recovery (an index flush,
                    // whose failure open tolerates: index files are derived data). Treat it
                    // as a crash during open.
                    self.note("open succeeded but the machine died during it".into());
                    self.stats.crash_points_hit += 1;
                    drop(store);
                    self.crash(None);
                    ended = Ended::Crash;
                }
                Ok(store) => {
                    self.verify(&store, ended)?;
                    return Ok(store);
                }
                Err(e) if self.armed && self.sim.is_dead() => {
                    self.note(format!("open died at the crash point: {e}"));
                    self.stats.crash_points_hit += 1;
                    self.crash(None);
                    ended = Ended::Crash;
                }
                Err(e) => return Err(format!("open after {ended:?} failed: {e:?}")),
            }
        }
    }

    fn verify(&mut self, store: &Store, ended: Ended) -> Outcome<()> {
        self.sim.clear_faults();
        self.armed = false;
        let report = store.recovery_report().clone();
        let mut seen: Vec<Append> = Vec::new();
        let mut last_pos = None;
        for e in store
            .read_all(Position::START)
            .map_err(|e| format!("read_all: {e:?}"))?
        {
            let e = e.map_err(|e| format!("read_all item: {e:?}"))?;
            let ev = Ev {
                id: e.id.0,
                ty: e.event_type.clone(),
                data: e.data.clone(),
                metadata: e.metadata.clone(),
            };
            if last_pos == Some(e.position) {
                let a = seen.last_mut().unwrap();
                if e.stream.as_ref() != a.stream
                    || e.version != a.first_version + a.events.len() as u64
                {
                    return Err(format!(
                        "read_all: inconsistent event within an append: {e:?}"
                    ));
                }
                a.events.push(ev);
            } else {
                if last_pos.is_some_and(|p| p >= e.position) {
                    return Err(format!("read_all: positions not increasing at {e:?}"));
                }
                last_pos = Some(e.position);
                seen.push(Append {
                    stream: e.stream.to_string(),
                    first_version: e.version,
                    events: vec![ev],
                });
            }
        }
        let expected: Vec<&Append> = self.base.iter().chain(&self.pending).collect();
        let must = self.base.len() + self.acked;
        for (i, a) in seen.iter().enumerate() {
            match expected.get(i) {
                Some(x) if *x == a => {}
                Some(x) => {
                    return Err(format!(
                        "append #{i} in the log differs from the attempted one (acknowledged: {}):\n  found    {}\n  expected {}",
                        i < must,
                        short(a),
                        short(x)
                    ));
                }
                None => {
                    return Err(format!(
                        "append #{i} in the log was never attempted: {}",
                        short(a)
                    ));
                }
            }
        }
        if seen.len() < must {
            return Err(format!(
                "acknowledged appends lost: {} in the log, {} acknowledged (first missing: {})",
                seen.len(),
                must,
                short(expected[seen.len()])
            ));
        }
        if ended == Ended::CleanClose && seen.len() != expected.len() {
            return Err(format!(
                "after a clean close {} of {} appends are present",
                seen.len(),
                expected.len()
            ));
        }
        if ended != Ended::Fresh && seen.len() < self.base.len() {
            return Err("appends verified at an earlier open vanished".into());
        }
        let new_unacked = self.pending.len() - self.acked;
        let survived = seen.len().saturating_sub(must);
        self.stats.unacked_appends_survived += survived as u64;
        self.stats.unacked_appends_lost += (new_unacked - survived) as u64;
        self.stats.acked_events_checked += seen
            .iter()
            .take(must)
            .map(|a| a.events.len() as u64)
            .sum::<u64>();

        // Per-stream reads agree with read_all; versions gap-free from 0.
        let mut by_stream: BTreeMap<&str, Vec<(u64, &Ev)>> = BTreeMap::new();
        for a in &seen {
            for (k, ev) in a.events.iter().enumerate() {
                by_stream
                    .entry(a.stream.as_str())
                    .or_default()
                    .push((a.first_version + k as u64, ev));
            }
        }
        for s in 0..STREAMS {
            let name = format!("s{s}");
            let want = by_stream.get(name.as_str()).cloned().unwrap_or_default();
            for (i, (v, _)) in want.iter().enumerate() {
                if *v != i as u64 {
                    return Err(format!("stream {name}: version {v} at index {i} (gap)"));
                }
            }
            let got: Vec<_> = store
                .read_stream(&name, 0)
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("read_stream {name}: {e:?}"))?;
            if got.len() != want.len() {
                return Err(format!(
                    "stream {name}: read_stream has {} events, read_all {}",
                    got.len(),
                    want.len()
                ));
            }
            for (g, (v, ev)) in got.iter().zip(&want) {
                if g.version != *v
                    || g.id.0 != ev.id
                    || g.event_type != ev.ty
                    || g.data != ev.data
                    || g.metadata != ev.metadata
                {
                    return Err(format!("stream {name}: read_stream differs at version {v}"));
                }
            }
            // The last version, read backward (independent of `stream_version`'s signature).
            let version = store
                .read_stream_backward(&name, None)
                .unwrap()
                .next()
                .transpose()
                .map_err(|e| format!("read_stream_backward {name}: {e:?}"))?
                .map(|e| e.version);
            if version != want.len().checked_sub(1).map(|v| v as u64) {
                return Err(format!(
                    "stream {name}: last version {version:?}, {} events",
                    want.len()
                ));
            }
        }

        // The recovery report agrees with what was found.
        let info = store.info().map_err(|e| format!("info: {e:?}"))?;
        let seg_files = self
            .sim
            .list(&Path::new(DIR).join("segments"))
            .unwrap()
            .iter()
            .filter(|n| n.ends_with(".seg"))
            .count();
        let events: u64 = seen.iter().map(|a| a.events.len() as u64).sum();
        if report.segments != seg_files || info.segments != seg_files {
            return Err(format!(
                "report says {} segments, info {}, directory has {seg_files}: {report:?}",
                report.segments, info.segments
            ));
        }
        // Recovery scans only what the index does not cover, so count through info.
        if info.appends != seen.len() as u64 || info.events != events {
            return Err(format!(
                "report scanned {} frames / info {} events for {} appends / {events} events",
                report.frames,
                info.events,
                seen.len()
            ));
        }
        if let Some(t) = &report.truncated {
            if t.position != info.head.0 || t.position < report.attested_position {
                return Err(format!(
                    "truncated tail inconsistent with head {} / attested {}: {t:?}",
                    info.head.0, report.attested_position
                ));
            }
            if report.clean_shutdown {
                return Err(format!(
                    "clean shutdown reported with a truncated tail: {report:?}"
                ));
            }
        }
        if report.attested_position > info.head.0 {
            return Err(format!(
                "attested {} beyond head {}",
                report.attested_position, info.head.0
            ));
        }
        if ended == Ended::CleanClose && !(report.clean_shutdown && report.is_clean()) {
            return Err(format!("clean close not reported as clean: {report:?}"));
        }
        // After a crash, an open under `Sync` syncs what it recovered (its readers see
        // only durable frames): all of it is durable. Under `Buffered` it does not: nothing
        // is promised before a sync, and the next one covers the tail; what is attested
        // stays durable. After a clean shutdown no open needs to: everything below the
        // closing checkpoint's watermark (every event) was synced before the checkpoint was
        // written. (An index flush at open syncs the rest.) Reads above prove every
        // acknowledged event is visible.
        let durable_at_least = if report.clean_shutdown || self.durability != Durability::Sync {
            report.attested_position
        } else {
            info.head.0
        };
        if info.durable.0 < durable_at_least || info.durable.0 > info.head.0 {
            return Err(format!(
                "after open durable {} (at least {durable_at_least}), head {}, report {report:?}",
                info.durable, info.head
            ));
        }

        self.note(format!(
            "verified after {ended:?}: {} appends ({} acknowledged), report {:?}",
            seen.len(),
            must,
            report
        ));
        self.base = seen;
        self.pending.clear();
        self.acked = 0;
        self.failed = false;
        Ok(())
    }

    fn random_append(&mut self, store: &Store) -> Outcome<()> {
        let stream = format!("s{}", self.rng.below(STREAMS));
        let next = self.next_version(&stream);
        let exists = next > 0;
        let (expected, ok) = match self.rng.below(100) {
            0..60 => (
                if exists {
                    ExpectedVersion::Exact(next - 1)
                } else {
                    ExpectedVersion::NoStream
                },
                true,
            ),
            60..75 => (ExpectedVersion::Any, true),
            75..85 => (ExpectedVersion::StreamExists, exists),
            85..92 => (ExpectedVersion::NoStream, !exists),
            _ => {
                let v = next + self.rng.below(3);
                (ExpectedVersion::Exact(v), false)
            }
        };
        let count = self.rng.range(1, 8) as usize;
        let big = self.rng.chance(10);
        let events: Vec<Ev> = (0..count)
            .map(|_| {
                let len = if big {
                    self.rng.range(200, 3000 / count as u64)
                } else {
                    self.rng.range(0, 120)
                } as usize;
                let mut id = [0u8; 16];
                id.copy_from_slice(&self.rng.bytes(16));
                let meta_len = self.rng.below(8) as usize;
                Ev {
                    id,
                    ty: format!("T{}", self.rng.below(4)),
                    data: self.rng.bytes(len),
                    metadata: self.rng.bytes(meta_len),
                }
            })
            .collect();
        let append = Append {
            stream: stream.clone(),
            first_version: next,
            events: events.clone(),
        };
        let new_events = events.iter().map(|e| {
            NewEvent::new(e.ty.clone(), &e.data)
                .with_id(EventId(e.id))
                .with_metadata(&e.metadata)
                .with_timestamp(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        });
        self.stats.appends_attempted += 1;
        let res = store.append(&stream, expected, new_events);
        self.note(format!(
            "append {stream} expected {expected} ({} events, {} bytes) -> {}",
            count,
            events.iter().map(|e| e.data.len()).sum::<usize>(),
            match &res {
                Ok(r) => format!(
                    "Ok {}..={} @{}",
                    r.first_version, r.last_version, r.position
                ),
                Err(e) => format!("Err {e}"),
            }
        ));
        match res {
            Ok(r) => {
                if !ok {
                    return Err(format!(
                        "append with {expected} succeeded but should conflict"
                    ));
                }
                if r.first_version != next
                    || r.last_version != next + count as u64 - 1
                    || r.deduplicated
                {
                    return Err(format!(
                        "append result {r:?}, expected first version {next}"
                    ));
                }
                if self.failed {
                    return Err("append succeeded after an earlier failure (not poisoned)".into());
                }
                self.pending.push(append);
                if self.durability == Durability::Sync {
                    self.acked = self.pending.len();
                }
            }
            Err(Error::WrongExpectedVersion { actual, .. }) => {
                if ok {
                    return Err(format!(
                        "append with {expected} conflicted (actual {actual:?})"
                    ));
                }
                if actual != next.checked_sub(1) {
                    return Err(format!(
                        "conflict reports actual {actual:?}, model {}",
                        next as i64 - 1
                    ));
                }
            }
            Err(Error::Poisoned) => {
                if !self.failed {
                    return Err("Poisoned without an earlier failure".into());
                }
            }
            Err(e) => {
                if !self.fault_possible() || self.failed {
                    return Err(format!("unexpected append error: {e:?}"));
                }
                if !matches!(e, Error::Io { .. }) {
                    return Err(format!("append failed with a non-I/O error: {e:?}"));
                }
                if !ok {
                    return Err(format!("conflicting append failed with I/O instead: {e:?}"));
                }
                // It may or may not have reached the disk.
                self.pending.push(append);
                self.failed = true;
            }
        }
        Ok(())
    }

    fn sync(&mut self, store: &Store) -> Outcome<()> {
        let res = store.sync();
        self.note(format!("sync -> {res:?}"));
        match res {
            Ok(()) => {
                if self.failed {
                    return Err("sync succeeded after an earlier failure".into());
                }
                self.acked = self.pending.len();
            }
            Err(Error::Poisoned) if self.failed => {}
            Err(e) if self.fault_possible() && !self.failed => {
                if !matches!(e, Error::Io { .. }) {
                    return Err(format!("sync failed with a non-I/O error: {e:?}"));
                }
                self.failed = true;
            }
            Err(e) => return Err(format!("unexpected sync error: {e:?}")),
        }
        Ok(())
    }

    fn mid_boot_read(&mut self, store: &Store) -> Outcome<()> {
        if self.failed {
            return Ok(());
        }
        let name = format!("s{}", self.rng.below(STREAMS));
        let want: Vec<[u8; 16]> = self
            .base
            .iter()
            .chain(&self.pending)
            .filter(|a| a.stream == name)
            .flat_map(|a| a.events.iter().map(|e| e.id))
            .collect();
        let got = store
            .read_stream(&name, 0)
            .unwrap()
            .collect::<Result<Vec<_>, _>>();
        match got {
            Ok(got) => {
                let got: Vec<[u8; 16]> = got.iter().map(|e| e.id.0).collect();
                if got != want {
                    return Err(format!(
                        "mid-boot read of {name}: {} events, model {}",
                        got.len(),
                        want.len()
                    ));
                }
            }
            Err(e) if self.sim.is_dead() => self.note(format!("read after death: {e}")),
            Err(e) => return Err(format!("mid-boot read of {name}: {e:?}")),
        }
        Ok(())
    }

    /// One boot: ops, then a crash or a clean close. Returns how it ended.
    fn boot(&mut self, store: Store) -> Outcome<Ended> {
        let ops = self.rng.range(1, 12);
        let arm_at = if self.rng.chance(55) {
            Some(self.rng.below(ops))
        } else {
            None
        };
        for i in 0..ops {
            if arm_at == Some(i) {
                let n = self.rng.range(1, 2 * (ops - i) + 4);
                self.sim.fail_after_ops(n);
                self.armed = true;
                self.note(format!("arm crash point: mutating op {n} from here"));
            }
            match self.rng.below(100) {
                0..75 => self.random_append(&store)?,
                75..90 => self.sync(&store)?,
                _ => self.mid_boot_read(&store)?,
            }
            if self.sim.is_dead() {
                break;
            }
        }
        if self.sim.is_dead() {
            self.stats.crash_points_hit += 1;
            self.crash(Some(store));
            return Ok(Ended::Crash);
        }
        match self.rng.below(100) {
            0..50 => {
                self.crash(Some(store));
                Ok(Ended::Crash)
            }
            r => {
                if r >= 80 && !self.armed {
                    let n = self.rng.range(1, 4);
                    self.sim.fail_after_ops(n);
                    self.armed = true;
                    self.note(format!("arm crash point during close: op {n}"));
                }
                let res = store.close();
                self.note(format!("close -> {res:?}"));
                match res {
                    Ok(()) => {
                        if self.failed {
                            return Err("close succeeded after a failure".into());
                        }
                        self.acked = self.pending.len();
                        if self.sim.is_dead() {
                            // The crash point was reached in work a close may fail
                            // (publishing `LIVE` for readers): the close still stands.
                            self.stats.crash_points_hit += 1;
                            self.crash(None);
                            return Ok(Ended::CleanClose);
                        }
                        if self.sim.crash_point_pending() {
                            // The crash point was not reached: disarm it, and crash now
                            // (half the time) to test that a clean close is durable.
                            self.sim.clear_faults();
                        }
                        if self.rng.chance(30) {
                            self.crash(None);
                            // A durable clean close must survive the crash intact.
                            Ok(Ended::CleanClose)
                        } else {
                            self.stats.clean_reopens += 1;
                            Ok(Ended::CleanClose)
                        }
                    }
                    Err(e) if self.fault_possible() => {
                        if self.sim.is_dead() {
                            self.stats.crash_points_hit += 1;
                        }
                        self.note(format!("close failed: {e}"));
                        self.crash(None);
                        Ok(Ended::Crash)
                    }
                    Err(e) => Err(format!("close failed unexpectedly: {e:?}")),
                }
            }
        }
    }

    fn run(&mut self, cycles: u64) -> Outcome<()> {
        let mut ended = Ended::Fresh;
        while self.cycle < cycles {
            self.cycle += 1;
            let store = self.open(ended)?;
            ended = self.boot(store)?;
        }
        let store = self.open(ended)?;
        store.close().map_err(|e| format!("final close: {e:?}"))?;
        Ok(())
    }
}

fn short(a: &Append) -> String {
    format!(
        "{} v{}..{} ({} events, first id {:02x?})",
        a.stream,
        a.first_version,
        a.first_version + a.events.len() as u64,
        a.events.len(),
        &a.events[0].id[..4]
    )
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn run_seed(seed: u64, durability: Durability, model: CrashModel, cycles: u64) -> Stats {
    let mut run = Run::new(seed, durability, model);
    let res = catch_unwind(AssertUnwindSafe(|| run.run(cycles)));
    let msg = match res {
        Ok(Ok(())) => {
            run.stats.seeds = 1;
            return run.stats;
        }
        Ok(Err(msg)) => msg,
        Err(panic) => {
            let p = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            format!("panic: {p}")
        }
    };
    panic!(
        "simulated crash test failed: seed {seed} ({durability}) at cycle {} step {}:\n{msg}\n\
         recent steps:\n  {}\nreplay: STREAMLOG_SIM_SEED={seed} cargo test --test integration sim_crash::",
        run.cycle,
        run.step,
        run.trace.join("\n  ")
    );
}

/// How crashes treat sectors, and whether the store aligns its commits to them.
#[derive(Clone, Copy)]
struct CrashModel {
    /// An interrupted write may tear a sector that already held synced bytes.
    tear_synced: bool,
    /// `Options::sector_aligned_commits`.
    aligned: bool,
}

const PACKED: CrashModel = CrashModel {
    tear_synced: false,
    aligned: false,
};

fn drive(durability: Durability, seed_base: u64, model: CrashModel) {
    let start = Instant::now();
    let mut total = Stats::default();
    if let Some(seed) = env_u64("STREAMLOG_SIM_SEED") {
        let cycles = env_u64("STREAMLOG_SIM_CYCLES").unwrap_or(CYCLES_PER_SEED);
        total.add(&run_seed(seed, durability, model, cycles));
    } else {
        let target = env_u64("STREAMLOG_SIM_CYCLES").unwrap_or(DEFAULT_CYCLES);
        let mut seed = seed_base;
        while total.crash_cycles < target {
            total.add(&run_seed(seed, durability, model, CYCLES_PER_SEED));
            seed += 1;
        }
    }
    eprintln!(
        "sim_crash {durability}: {} crash cycles ({} crash points hit, {} clean reopens) over {} seeds, \
         {} appends attempted, {} acknowledged events checked, lost 0 acknowledged, \
         {} unacknowledged appends lost / {} survived, in {:.1?}",
        total.crash_cycles,
        total.crash_points_hit,
        total.clean_reopens,
        total.seeds,
        total.appends_attempted,
        total.acked_events_checked,
        total.unacked_appends_lost,
        total.unacked_appends_survived,
        start.elapsed()
    );
}

#[test]
fn crash_cycles_sync_durability() {
    drive(Durability::Sync, 1_000_000, PACKED);
}

#[test]
fn crash_cycles_buffered_durability_with_explicit_sync() {
    drive(Durability::Buffered, 2_000_000, PACKED);
}

/// The harsher crash model in which an interrupted rewrite of a sector that already held
/// synced bytes may zero or garble it (`SimStorage::set_tear_synced_sectors(true)`), with
/// `Options::sector_aligned_commits`: every commit ends on a sector boundary, so no write
/// after a sync touches a sector holding acknowledged bytes, and nothing acknowledged is
/// lost.
#[test]
fn crash_cycles_sync_durability_torn_synced_sectors() {
    drive(
        Durability::Sync,
        1_000_000,
        CrashModel {
            tear_synced: true,
            aligned: true,
        },
    );
}

/// The same crash model with packed commits (the default): the next append writes into
/// the partly filled last sector of the previous commit, so a crash during it can destroy
/// that acknowledged frame. Packed commits rely on the disk's power-safe overwrite of a
/// sector (see README); this documents what happens without it.
#[test]
#[ignore = "packed commits need power-safe sector overwrites: acknowledged appends are lost \
            when a crash tears the sector they share with a later append \
            (replay: STREAMLOG_SIM_SEED=1000000, cycle 5)"]
fn crash_cycles_sync_durability_torn_synced_sectors_packed_commits() {
    drive(
        Durability::Sync,
        1_000_000,
        CrashModel {
            tear_synced: true,
            aligned: false,
        },
    );
}
