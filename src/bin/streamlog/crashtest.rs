//! `streamlog crashtest`: the process-level kill -9 test of the durability contract.
//!
//! The parent re-runs this executable as a hidden `crashtest-writer` child that appends
//! from several threads with `Durability::Sync` and prints one acknowledgement line per
//! append that returned `Ok`. The parent SIGKILLs the child at a random (seeded) moment,
//! reopens the store and checks that every acknowledged event is there, byte for byte, at
//! its version; that every stored event is one the writer made (its type, metadata and
//! data are derived from its id); that versions are gap-free; and that everything seen in
//! earlier cycles is still there. The next cycle's writer continues on the same directory.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Args;
use serde_json::Value;
use streamlog::{EventId, ExpectedVersion, NewEvent, Options, Position, RecordedEvent, Store};

use crate::output::{Obj, array, line};
use crate::{CliError, CliResult, progress_bar};

/// Streams the writer appends to: `crash-0` .. `crash-31`.
const STREAMS: u64 = 32;
/// Largest batch (events per append).
const MAX_BATCH: u64 = 8;
/// Largest event payload in bytes.
const MAX_PAYLOAD: u64 = 4096;
/// Most writer threads.
const MAX_WRITERS: usize = 256;
/// Default segment size: small, so that rollover (segment creation) is killed too.
const DEFAULT_SEGMENT_SIZE: u64 = 4 << 20;
/// Smallest segment size accepted (a full batch of the largest events must fit).
const MIN_SEGMENT_SIZE: u64 = 64 << 10;
/// Every this many cycles (and in the last) the check reads the whole store.
const DEEP_CHECK_EVERY: u64 = 25;
/// Most stderr bytes of a child kept for a failure message.
const STDERR_KEEP: usize = 4096;

/// Arguments of `streamlog crashtest`.
#[derive(Debug, Args)]
pub struct CrashtestArgs {
    /// Store directory, absent or empty (default: a fresh temporary directory, removed
    /// afterwards).
    #[arg(long, value_name = "D")]
    dir: Option<PathBuf>,
    /// Kill cycles to run.
    #[arg(long, value_name = "N", default_value_t = 50)]
    cycles: u64,
    /// Appending threads in the writer process.
    #[arg(long, value_name = "W", default_value_t = 4)]
    writers: usize,
    /// Seed of the kill delays and of the workload (default: from the clock).
    #[arg(long, value_name = "S")]
    seed: Option<u64>,
    /// Segment size of the store in bytes (small by default so rollovers get killed too).
    #[arg(long, value_name = "B", default_value_t = DEFAULT_SEGMENT_SIZE)]
    segment_size: u64,
    /// One JSON object instead of human-readable lines.
    #[arg(long)]
    json: bool,
}

/// Arguments of the hidden `streamlog crashtest-writer`: the child process that gets killed.
#[derive(Debug, Args)]
pub struct WriterArgs {
    /// Store directory.
    dir: PathBuf,
    /// Appending threads.
    #[arg(long, value_name = "W", default_value_t = 4)]
    writers: usize,
    /// Seed of the workload and of the event contents.
    #[arg(long, value_name = "S", default_value_t = 0)]
    seed: u64,
    /// Cycle number, part of every event id so ids never repeat across cycles.
    #[arg(long, value_name = "C", default_value_t = 0)]
    cycle: u32,
    /// Segment size of the store in bytes.
    #[arg(long, value_name = "B", default_value_t = DEFAULT_SEGMENT_SIZE)]
    segment_size: u64,
}

use streamlog::io::sim::SplitMix64 as Rng;

/// Mixes two values into one well-distributed value.
fn mix(a: u64, b: u64) -> u64 {
    Rng::new(a ^ b.rotate_left(29).wrapping_mul(0xD6E8_FEB8_6659_FD93)).next_u64()
}

fn stream_name(i: u64) -> String {
    format!("crash-{i}")
}

fn store_options(segment_size: u64) -> Options {
    Options::default().with_segment_size_bytes(segment_size)
}

/// The id of event `seq` of writer thread `writer` in cycle `cycle`: 12 bytes of
/// (cycle, writer, seq) and a 4-byte check derived from the seed, so that the parent can
/// tell the writer's ids from anything else.
fn event_id(seed: u64, cycle: u32, writer: u16, seq: u64) -> EventId {
    let mut b = [0u8; 16];
    b[0..4].copy_from_slice(&cycle.to_le_bytes());
    b[4..6].copy_from_slice(&writer.to_le_bytes());
    b[6..12].copy_from_slice(&seq.to_le_bytes()[0..6]);
    let check = id_check(seed, &b);
    b[12..16].copy_from_slice(&check);
    EventId(b)
}

fn id_check(seed: u64, id: &[u8; 16]) -> [u8; 4] {
    let mut lo = [0u8; 8];
    let mut hi = [0u8; 8];
    lo.copy_from_slice(&id[0..8]);
    hi[0..4].copy_from_slice(&id[8..12]);
    let h = mix(mix(seed, u64::from_le_bytes(lo)), u64::from_le_bytes(hi));
    let mut out = [0u8; 4];
    out.copy_from_slice(&h.to_le_bytes()[0..4]);
    out
}

/// What the event with this id must contain: its type and data. (Its metadata is the
/// stream name.)
fn event_content(seed: u64, id: &EventId) -> (String, Vec<u8>) {
    let mut h = seed;
    for chunk in id.0.chunks(8) {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        h = mix(h, u64::from_le_bytes(w));
    }
    let mut rng = Rng::new(h);
    // Mostly small payloads, some medium, a few up to MAX_PAYLOAD.
    let len = match rng.below(100) {
        0..70 => rng.below(256),
        70..95 => 256 + rng.below(768),
        _ => 1024 + rng.below(MAX_PAYLOAD - 1024 + 1),
    };
    let event_type = format!("Crash{}", rng.below(7));
    let mut data = Vec::with_capacity(len as usize + 8);
    while (data.len() as u64) < len {
        data.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    data.truncate(len as usize);
    (event_type, data)
}

fn new_event(seed: u64, id: EventId, stream: &str) -> NewEvent {
    let (event_type, data) = event_content(seed, &id);
    NewEvent::new(event_type, data)
        .with_id(id)
        .with_metadata(stream.as_bytes())
}

/// Checks that a stored event is one the writer made: a valid id and the content derived
/// from it.
fn check_event(seed: u64, e: &RecordedEvent) -> Result<(), String> {
    let at = || format!("{}@{} (id {})", e.stream, e.version, e.id);
    let mut bare = e.id.0;
    bare[12..16].fill(0);
    if id_check(seed, &bare) != e.id.0[12..16] {
        return Err(format!("{}: the id was not made by the writer", at()));
    }
    let known = e
        .stream
        .strip_prefix("crash-")
        .and_then(|n| n.parse::<u64>().ok())
        .is_some_and(|n| n < STREAMS && stream_name(n) == *e.stream);
    if !known {
        return Err(format!("{}: not one of the writer's streams", at()));
    }
    if e.metadata != e.stream.as_bytes() {
        return Err(format!(
            "{}: metadata {:?} is not the stream name",
            at(),
            String::from_utf8_lossy(&e.metadata)
        ));
    }
    let (event_type, data) = event_content(seed, &e.id);
    if e.event_type != event_type {
        return Err(format!(
            "{}: type {:?}, expected {event_type:?}",
            at(),
            e.event_type
        ));
    }
    if e.data != data {
        let first_diff = e
            .data
            .iter()
            .zip(&data)
            .position(|(a, b)| a != b)
            .unwrap_or(e.data.len().min(data.len()));
        return Err(format!(
            "{}: data differs ({} bytes stored, {} expected, first difference at byte {first_diff})",
            at(),
            e.data.len(),
            data.len()
        ));
    }
    Ok(())
}

/// What a writer thread tells the main thread of the writer process.
enum WriterMsg {
    /// An acknowledgement line (without its newline).
    Ack(String),
    /// An append failed; the writer exits with it.
    Failed(streamlog::Error),
}

/// The hidden `crashtest-writer`: appends until killed, printing one line per append that
/// returned `Ok`. Only returns on an error.
pub fn writer(a: WriterArgs, out: &mut impl Write) -> CliResult {
    if a.writers == 0 || a.writers > MAX_WRITERS {
        return Err(CliError::Usage(format!(
            "--writers must be within 1..={MAX_WRITERS}"
        )));
    }
    let store = Arc::new(Store::open_with(&a.dir, store_options(a.segment_size))?);
    let (tx, rx) = mpsc::channel::<WriterMsg>();
    for w in 0..a.writers {
        let store = Arc::clone(&store);
        let tx = tx.clone();
        let (seed, cycle) = (a.seed, a.cycle);
        let writer = u16::try_from(w).unwrap_or(u16::MAX);
        thread::Builder::new()
            .name(format!("crashtest-writer-{w}"))
            .spawn(move || writer_thread(&store, seed, cycle, writer, &tx))
            .map_err(|e| CliError::Other(format!("cannot start a writer thread: {e}")))?;
    }
    drop(tx);
    drop(store);
    // One thread writes stdout: a line is printed (and flushed) only after its append
    // returned Ok.
    for msg in rx {
        match msg {
            WriterMsg::Ack(text) => {
                out.write_all(text.as_bytes())?;
                out.write_all(b"\n")?;
                out.flush()?;
            }
            WriterMsg::Failed(e) => return Err(CliError::Store(e)),
        }
    }
    Err(CliError::Other("every writer thread stopped".into()))
}

fn writer_thread(store: &Store, seed: u64, cycle: u32, writer: u16, tx: &mpsc::Sender<WriterMsg>) {
    let mut rng = Rng::new(mix(mix(seed, u64::from(cycle)), u64::from(writer)));
    let mut seq = 0u64;
    loop {
        let stream = stream_name(rng.below(STREAMS));
        let batch = 1 + rng.below(MAX_BATCH);
        let ids: Vec<EventId> = (0..batch)
            .map(|_| {
                seq += 1;
                event_id(seed, cycle, writer, seq)
            })
            .collect();
        let events: Vec<NewEvent> = ids.iter().map(|&id| new_event(seed, id, &stream)).collect();
        match store.append(&stream, ExpectedVersion::Any, events) {
            Ok(r) => {
                let ack = Obj::new()
                    .field("stream", stream.as_str())
                    .field("first_version", r.first_version)
                    .field("last_version", r.last_version)
                    .raw(
                        "ids",
                        &array(
                            ids.iter()
                                .map(|id| Value::String(id.to_string()).to_string()),
                        ),
                    )
                    .finish();
                if tx.send(WriterMsg::Ack(ack)).is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = tx.send(WriterMsg::Failed(e));
                return;
            }
        }
    }
}

/// One acknowledged append, as parsed from a writer's line.
#[derive(Debug)]
struct Ack {
    stream: String,
    first_version: u64,
    ids: Vec<EventId>,
}

fn parse_ack(line: &[u8]) -> Result<Ack, String> {
    let v: Value = serde_json::from_slice(line).map_err(|e| format!("invalid JSON: {e}"))?;
    let stream = v
        .get("stream")
        .and_then(Value::as_str)
        .ok_or("no \"stream\"")?
        .to_string();
    let first_version = v
        .get("first_version")
        .and_then(Value::as_u64)
        .ok_or("no \"first_version\"")?;
    let last_version = v
        .get("last_version")
        .and_then(Value::as_u64)
        .ok_or("no \"last_version\"")?;
    let ids = v
        .get("ids")
        .and_then(Value::as_array)
        .ok_or("no \"ids\"")?
        .iter()
        .map(|id| {
            id.as_str()
                .ok_or_else(|| "an id is not a string".to_string())?
                .parse::<EventId>()
                .map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    if last_version.checked_sub(first_version).map(|n| n + 1) != Some(ids.len() as u64) {
        return Err(format!(
            "versions {first_version}..={last_version} do not match {} ids",
            ids.len()
        ));
    }
    Ok(Ack {
        stream,
        first_version,
        ids,
    })
}

/// Why the test failed.
#[derive(Debug)]
enum FailureKind {
    /// The store refused to open as corrupted after a kill.
    Corruption(streamlog::Error),
    /// Acknowledged (or previously seen) events are missing or different.
    Lost,
    /// Anything else: the writer died by itself, open failed otherwise, bad content.
    Other,
}

#[derive(Debug)]
struct Failure {
    cycle: u64,
    kind: FailureKind,
    message: String,
}

/// Totals over all cycles.
#[derive(Debug, Default)]
struct Totals {
    cycles: u64,
    acked_appends: u64,
    acked_events: u64,
    events_checked: u64,
    lost: u64,
    corrupted_opens: u64,
    torn_tails: u64,
    bytes_truncated: u64,
    zero_tails: u64,
    segments_removed: u64,
    unacked_appends_found: u64,
    kills_before_first_ack: u64,
    max_open_ms: f64,
    events_stored: u64,
}

/// The state of the store as the parent last saw it: per stream, the ids by version.
type History = HashMap<String, Vec<EventId>>;

struct Crashtest<'a> {
    args: &'a CrashtestArgs,
    dir: PathBuf,
    exe: PathBuf,
    seed: u64,
    rng: Rng,
    history: History,
    totals: Totals,
}

impl Crashtest<'_> {
    /// Runs one cycle: spawn, kill, reopen, check.
    fn cycle(&mut self, cycle: u64) -> Result<(), Failure> {
        let fail = |kind, message: String| Failure {
            cycle,
            kind,
            message,
        };
        let other = |message: String| fail(FailureKind::Other, message);
        // One cycle in ten is killed within 3 ms of the spawn: during start-up, open and
        // recovery. The others after 5..300 ms.
        let delay_us = if self.rng.below(10) == 0 {
            self.rng.below(3_000)
        } else {
            5_000 + self.rng.below(295_001)
        };
        let cycle32 = u32::try_from(cycle).map_err(|_| other("too many cycles".into()))?;
        let mut child = Command::new(&self.exe)
            .arg("crashtest-writer")
            .arg(&self.dir)
            .args(["--writers", &self.args.writers.to_string()])
            .args(["--seed", &self.seed.to_string()])
            .args(["--cycle", &cycle32.to_string()])
            .args(["--segment-size", &self.args.segment_size.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| other(format!("cannot start {}: {e}", self.exe.display())))?;
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let out_reader = thread::spawn(move || read_complete_lines(stdout));
        let err_reader = thread::spawn(move || {
            let mut text = Vec::new();
            if let Some(mut s) = stderr {
                let _ = s.read_to_end(&mut text);
            }
            text.truncate(STDERR_KEEP);
            String::from_utf8_lossy(&text).into_owned()
        });
        thread::sleep(Duration::from_micros(delay_us));
        let exited_by_itself: Option<ExitStatus> = child
            .try_wait()
            .map_err(|e| other(format!("cannot wait for the writer: {e}")))?;
        if exited_by_itself.is_none() {
            // SIGKILL on Unix.
            child
                .kill()
                .map_err(|e| other(format!("cannot kill the writer: {e}")))?;
        }
        let status = child
            .wait()
            .map_err(|e| other(format!("cannot wait for the writer: {e}")))?;
        let lines = out_reader
            .join()
            .map_err(|_| other("the stdout reader panicked".into()))?;
        let child_stderr = err_reader.join().unwrap_or_default();
        if exited_by_itself.is_some() {
            return Err(other(format!(
                "the writer exited by itself ({status}) before the kill after {:.1} ms: {}",
                delay_us as f64 / 1000.0,
                child_stderr.trim()
            )));
        }
        let mut acks = Vec::with_capacity(lines.len());
        for (i, l) in lines.iter().enumerate() {
            let ack = parse_ack(l).map_err(|e| {
                other(format!(
                    "acknowledgement line {} of the writer is malformed ({e}): {}",
                    i + 1,
                    String::from_utf8_lossy(l)
                ))
            })?;
            acks.push(ack);
        }
        if acks.is_empty() {
            self.totals.kills_before_first_ack += 1;
        }

        // Reopen: a kill is never corruption.
        let t = Instant::now();
        let store = match Store::open_with(&self.dir, store_options(self.args.segment_size)) {
            Ok(s) => s,
            Err(e @ streamlog::Error::Corrupted { .. }) => {
                self.totals.corrupted_opens += 1;
                let message = format!("reopening after the kill failed: {e}");
                return Err(fail(FailureKind::Corruption(e), message));
            }
            Err(e) => return Err(other(format!("reopening after the kill failed: {e}"))),
        };
        let open_ms = t.elapsed().as_secs_f64() * 1e3;
        self.totals.max_open_ms = self.totals.max_open_ms.max(open_ms);
        let report = store.recovery_report();
        if let Some(t) = &report.truncated {
            // A tail of zeros is the space the writer preallocated (or sectors of
            // unsynced frames left as zeros): cut, but nothing torn was in it.
            if t.kind == streamlog::TailKind::ZeroFilled && t.frames_dropped == 0 {
                self.totals.zero_tails += 1;
            } else {
                self.totals.torn_tails += 1;
                self.totals.bytes_truncated += t.bytes_dropped;
            }
        }
        self.totals.segments_removed += report.removed_segments.len() as u64;

        // What is stored: gap-free versions, content derived from the id. Every
        // DEEP_CHECK_EVERY cycles (and the last) everything is read and checked; otherwise
        // what is new since the last cycle, joined to the last event seen before (the
        // reopen itself checks the CRC of every frame). Anything odd in the quick check
        // falls back to the full one, which names the damage.
        let deep =
            cycle % DEEP_CHECK_EVERY == DEEP_CHECK_EVERY - 1 || cycle + 1 == self.args.cycles;
        let quick = if deep {
            None
        } else {
            self.read_new(&store).ok()
        };
        let now = match quick {
            Some(now) => now,
            None => self.read_everything(&store).map_err(other)?,
        };

        // Nothing seen before is gone; every acknowledged event is at its version.
        let mut lost = 0u64;
        let mut first_loss: Option<String> = None;
        let empty = Vec::new();
        for (stream, before) in &self.history {
            let ids = now.get(stream).unwrap_or(&empty);
            for (v, id) in before.iter().enumerate() {
                if ids.get(v) != Some(id) {
                    lost += 1;
                    first_loss.get_or_insert_with(|| {
                        format!(
                            "{stream}@{v}: event {id} from an earlier cycle is {}",
                            ids.get(v)
                                .map_or("missing".to_string(), |x| format!("replaced by {x}"))
                        )
                    });
                }
            }
        }
        let mut acked_positions: HashMap<&str, Vec<(u64, usize)>> = HashMap::new();
        for ack in &acks {
            let ids = now.get(&ack.stream).unwrap_or(&empty);
            for (i, id) in ack.ids.iter().enumerate() {
                let v = ack.first_version + i as u64;
                let found = usize::try_from(v).ok().and_then(|v| ids.get(v));
                if found != Some(id) {
                    lost += 1;
                    first_loss.get_or_insert_with(|| {
                        format!(
                            "{}@{v}: acknowledged event {id} is {}",
                            ack.stream,
                            found.map_or("missing".to_string(), |x| format!("replaced by {x}"))
                        )
                    });
                }
            }
            acked_positions
                .entry(ack.stream.as_str())
                .or_default()
                .push((ack.first_version, ack.ids.len()));
        }
        self.totals.acked_appends += acks.len() as u64;
        self.totals.acked_events += acks.iter().map(|a| a.ids.len() as u64).sum::<u64>();
        self.totals.lost += lost;
        if let Some(m) = first_loss {
            return Err(fail(
                FailureKind::Lost,
                format!("{lost} acknowledged event(s) lost; first: {m}"),
            ));
        }

        // Appends that completed but were killed before their line was printed.
        for (stream, ids) in &now {
            let from = self.history.get(stream).map_or(0, Vec::len) as u64;
            let mut acked: BTreeMap<u64, usize> = BTreeMap::new();
            for &(first, n) in acked_positions.get(stream.as_str()).into_iter().flatten() {
                acked.insert(first, n);
            }
            // Count the appends (first events) of this cycle's new events not acknowledged.
            let mut v = from;
            while v < ids.len() as u64 {
                if let Some(&n) = acked.get(&v) {
                    v += n as u64;
                } else {
                    // An unacknowledged append: its events share the writer's seq run.
                    self.totals.unacked_appends_found += 1;
                    v += 1;
                    while v < ids.len() as u64
                        && !acked.contains_key(&v)
                        && same_append(&ids[v as usize - 1], &ids[v as usize])
                    {
                        v += 1;
                    }
                }
            }
        }

        self.history = now;
        store
            .close()
            .map_err(|e| other(format!("closing the store after the check failed: {e}")))?;
        Ok(())
    }

    /// Reads and checks every event in the store; returns the ids by stream and version.
    fn read_everything(&mut self, store: &Store) -> Result<History, String> {
        let mut now: History = HashMap::new();
        let events = store
            .read_all(Position::START)
            .map_err(|e| format!("read_all failed: {e}"))?;
        let mut stored = 0u64;
        for e in events {
            let e = e.map_err(|e| format!("read_all failed: {e}"))?;
            check_event(self.seed, &e).map_err(|m| format!("bad event {m}"))?;
            let ids = now.entry(e.stream.to_string()).or_default();
            if e.version != ids.len() as u64 {
                return Err(format!(
                    "stream {} jumps from {} events to version {}",
                    e.stream,
                    ids.len(),
                    e.version
                ));
            }
            ids.push(e.id);
            stored += 1;
        }
        self.totals.events_checked += stored;
        self.totals.events_stored = stored;
        // Per-stream reads agree with read_all.
        for (stream, ids) in &now {
            let version = store
                .stream_version(stream)
                .map_err(|e| format!("stream_version({stream}) failed: {e}"))?;
            if version != ids.len().checked_sub(1).map(|v| v as u64) {
                let version = version.map_or("none (no stream)".to_string(), |v| v.to_string());
                return Err(format!(
                    "stream_version({stream}) is {version}, read_all has {} events",
                    ids.len()
                ));
            }
            let from = self.history.get(stream).map_or(0, Vec::len);
            let got = self.read_stream_ids(store, stream, from)?;
            if ids.get(from..) != Some(&got[..]) {
                return Err(format!(
                    "read_stream({stream}) from {from} does not give what read_all does"
                ));
            }
        }
        Ok(now)
    }

    /// The quick check: per stream, the last event seen before must still be there and be
    /// followed, gap-free, by new events the writer made. Returns the ids by stream and
    /// version (the earlier ones taken from the history).
    fn read_new(&mut self, store: &Store) -> Result<History, String> {
        let mut now = self.history.clone();
        let mut stored = 0u64;
        for i in 0..STREAMS {
            let stream = stream_name(i);
            let ids = now.entry(stream.clone()).or_default();
            let before = ids.len();
            if let Some(last) = before.checked_sub(1) {
                let e = store
                    .read_stream(&stream, last as u64)
                    .map_err(|e| format!("read_stream failed: {e}"))?
                    .next()
                    .ok_or_else(|| format!("{stream}@{last} is missing"))?
                    .map_err(|e| format!("read_stream({stream}) failed: {e}"))?;
                if e.version != last as u64 || Some(&e.id) != ids.last() {
                    return Err(format!("{stream}@{last} changed"));
                }
            }
            let new = self.read_stream_ids(store, &stream, before)?;
            ids.extend(new);
            let version = store
                .stream_version(&stream)
                .map_err(|e| format!("stream_version({stream}) failed: {e}"))?;
            if version != ids.len().checked_sub(1).map(|v| v as u64) {
                return Err(format!(
                    "stream_version({stream}) disagrees with read_stream"
                ));
            }
            if ids.is_empty() {
                now.remove(&stream);
            }
            stored += now.get(&stream).map_or(0, Vec::len) as u64;
        }
        if stored
            != store
                .info()
                .map_err(|e| format!("info failed: {e}"))?
                .events
        {
            return Err("events outside the writer's streams".into());
        }
        self.totals.events_stored = stored;
        Ok(now)
    }

    /// Reads `stream` from version `from`, checking versions and content; returns the ids.
    fn read_stream_ids(
        &mut self,
        store: &Store,
        stream: &str,
        from: usize,
    ) -> Result<Vec<EventId>, String> {
        let mut ids = Vec::new();
        let events = store
            .read_stream(stream, from as u64)
            .map_err(|e| format!("read_stream failed: {e}"))?;
        for e in events {
            let e = e.map_err(|e| format!("read_stream({stream}) failed: {e}"))?;
            if *e.stream != *stream || e.version != (from + ids.len()) as u64 {
                return Err(format!(
                    "read_stream({stream}) gives {}@{} where version {} was expected",
                    e.stream,
                    e.version,
                    from + ids.len()
                ));
            }
            check_event(self.seed, &e).map_err(|m| format!("bad event {m}"))?;
            ids.push(e.id);
        }
        self.totals.events_checked += ids.len() as u64;
        Ok(ids)
    }
}

/// Whether `b` directly follows `a` from the same writer thread of the same cycle (so the
/// two were probably one append).
fn same_append(a: &EventId, b: &EventId) -> bool {
    let seq = |id: &EventId| {
        let mut w = [0u8; 8];
        w[0..6].copy_from_slice(&id.0[6..12]);
        u64::from_le_bytes(w)
    };
    a.0[0..6] == b.0[0..6] && seq(a).checked_add(1) == Some(seq(b))
}

/// Reads `stdout` to its end and returns its complete lines (a torn last line, without
/// its newline, is not an acknowledgement and is dropped).
fn read_complete_lines(stdout: Option<impl Read>) -> Vec<Vec<u8>> {
    let mut lines = Vec::new();
    let Some(stdout) = stdout else {
        return lines;
    };
    let mut reader = BufReader::new(stdout);
    loop {
        let mut buf = Vec::new();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                if buf.last() == Some(&b'\n') {
                    buf.pop();
                    lines.push(buf);
                } else {
                    break;
                }
            }
        }
    }
    lines
}

fn is_empty_dir(dir: &Path) -> std::io::Result<bool> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e),
    }
}

fn clock_seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    mix(nanos, u64::from(std::process::id()))
}

/// `streamlog crashtest`.
pub fn run(a: CrashtestArgs, out: &mut impl Write) -> CliResult {
    if a.cycles == 0 || a.cycles > u64::from(u32::MAX) {
        return Err(CliError::Usage(
            "--cycles must be within 1..=4294967295".into(),
        ));
    }
    if a.writers == 0 || a.writers > MAX_WRITERS {
        return Err(CliError::Usage(format!(
            "--writers must be within 1..={MAX_WRITERS}"
        )));
    }
    if a.segment_size < MIN_SEGMENT_SIZE {
        return Err(CliError::Usage(format!(
            "--segment-size must be at least {MIN_SEGMENT_SIZE}"
        )));
    }
    store_options(a.segment_size)
        .validate()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let temp;
    let dir = match &a.dir {
        Some(d) => {
            let empty = is_empty_dir(d)
                .map_err(|e| CliError::Other(format!("cannot read {}: {e}", d.display())))?;
            if !empty {
                return Err(CliError::Usage(format!(
                    "--dir {} must be absent or empty (the test checks everything in the store)",
                    d.display()
                )));
            }
            d.clone()
        }
        None => {
            temp = tempfile::tempdir().map_err(|e| {
                CliError::Other(format!("cannot create a temporary directory: {e}"))
            })?;
            temp.path().join("store")
        }
    };
    let exe = std::env::current_exe()
        .map_err(|e| CliError::Other(format!("cannot find this executable: {e}")))?;
    let seed = a.seed.unwrap_or_else(clock_seed);
    let mut test = Crashtest {
        args: &a,
        dir: dir.clone(),
        exe,
        seed,
        rng: Rng::new(mix(seed, 0x6b69_6c6c)),
        history: HashMap::new(),
        totals: Totals::default(),
    };
    let bar = progress_bar(a.cycles, "crashtest");
    let start = Instant::now();
    let mut failure = None;
    for c in 0..a.cycles {
        let r = test.cycle(c);
        test.totals.cycles += 1;
        bar.inc(1);
        bar.set_message(format!(
            "{} acked events, {} lost",
            test.totals.acked_events, test.totals.lost
        ));
        if let Err(f) = r {
            failure = Some(f);
            break;
        }
    }
    bar.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();
    let t = &test.totals;
    let ok = failure.is_none() && t.lost == 0 && t.corrupted_opens == 0;
    let replay = format!(
        "streamlog crashtest --seed {seed} --cycles {} --writers {}{}",
        a.cycles,
        a.writers,
        if a.segment_size == DEFAULT_SEGMENT_SIZE {
            String::new()
        } else {
            format!(" --segment-size {}", a.segment_size)
        }
    );
    let failure_text = failure
        .as_ref()
        .map(|f| format!("cycle {}: {}", f.cycle, f.message));
    let dir_text = match &a.dir {
        Some(d) => d.display().to_string(),
        None => format!("{} (temporary, removed)", dir.display()),
    };
    if a.json {
        let obj = Obj::new()
            .field("cycles", t.cycles)
            .field("writers", a.writers)
            .field("acknowledged_appends", t.acked_appends)
            .field("acknowledged_events", t.acked_events)
            .field("events_checked", t.events_checked)
            .field("events_stored", t.events_stored)
            .field("lost", t.lost)
            .field("corrupted_opens", t.corrupted_opens)
            .field("torn_tails_truncated", t.torn_tails)
            .field("bytes_truncated", t.bytes_truncated)
            .field("zero_tails_cut", t.zero_tails)
            .field("segments_removed", t.segments_removed)
            .field("unacknowledged_appends_found", t.unacked_appends_found)
            .field("kills_before_first_ack", t.kills_before_first_ack)
            .field("max_open_ms", (t.max_open_ms * 1000.0).round() / 1000.0)
            .field("seconds", (seconds * 1000.0).round() / 1000.0)
            .field("seed", seed)
            .field("segment_size", a.segment_size)
            .field("dir", dir_text)
            .field("ok", ok);
        let obj = match &failure_text {
            Some(f) => obj
                .field("failure", f.as_str())
                .field("replay", replay.as_str()),
            None => obj.raw("failure", "null"),
        };
        line(out, obj)?;
    } else {
        writeln!(
            out,
            "crashtest    {} cycles of kill -9, {} writer threads, seed {seed}",
            t.cycles, a.writers
        )?;
        writeln!(
            out,
            "acknowledged {} appends, {} events; lost {}",
            t.acked_appends, t.acked_events, t.lost
        )?;
        writeln!(
            out,
            "checked      {} events read back and checked byte for byte (all every {DEEP_CHECK_EVERY} cycles, else the new ones); {} stored at the end",
            t.events_checked, t.events_stored
        )?;
        writeln!(
            out,
            "recovery     {} corrupted opens, {} torn tails truncated ({} bytes), {} zero-filled tails cut, {} unfinished segments removed, max open {:.1} ms",
            t.corrupted_opens,
            t.torn_tails,
            t.bytes_truncated,
            t.zero_tails,
            t.segments_removed,
            t.max_open_ms
        )?;
        writeln!(
            out,
            "unacked      {} appends stored but killed before their acknowledgement; {} kills before the first acknowledgement",
            t.unacked_appends_found, t.kills_before_first_ack
        )?;
        writeln!(out, "time         {seconds:.1} s")?;
        writeln!(out, "dir          {dir_text}")?;
        match &failure_text {
            None => writeln!(out, "result       ok")?,
            Some(f) => {
                writeln!(out, "result       FAILED at {f}")?;
                writeln!(out, "replay       {replay}")?;
            }
        }
    }
    out.flush()?;
    match failure {
        None => Ok(()),
        Some(f) => {
            let context = format!("crashtest failed at cycle {} (seed {seed})", f.cycle);
            Err(match f.kind {
                FailureKind::Corruption(streamlog::Error::Corrupted {
                    file,
                    offset,
                    reason,
                }) => CliError::Store(streamlog::Error::Corrupted {
                    file,
                    offset,
                    reason: format!("{reason} [{context}; replay: {replay}]"),
                }),
                _ => CliError::Other(format!("{context}: {}; replay: {replay}", f.message)),
            })
        }
    }
}
