//! `streamlog bench`: append throughput and latency, read throughput, and a plain-file
//! baseline writing the same bytes in the same number of writes, all measured in one run.
//!
//! Without `--durability` it runs twice: first durable (`Sync`, the library's default,
//! against "write + fdatasync", a plain file synced after every write), then buffered
//! (against "page cache write", plain writes that the OS flushes when it likes), so the
//! headline is what users get by default, and each figure has its own baseline.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use streamlog::{Durability, EventRef, ExpectedVersion, Options, Position, Store};

use crate::output::{Obj, line};
use crate::{CliError, CliResult, progress_bar};

/// Most writer threads `bench` starts.
const MAX_WRITERS: usize = 4096;
/// The interval of `--durability periodic`.
const PERIODIC_INTERVAL: Duration = Duration::from_millis(100);
/// Bytes of zeros written at a time when the sync baseline preallocates its file.
const PREALLOCATE_CHUNK_BYTES: usize = 1 << 20;
/// Events appended when `--events` is not given, buffered or periodic.
const DEFAULT_EVENTS: u64 = 1_000_000;
/// Events appended when `--events` is not given, sync: at one fdatasync per append of 100
/// events, a few seconds on a disk that syncs a few hundred times a second.
const DEFAULT_SYNC_EVENTS: u64 = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DurabilityArg {
    /// fdatasync before every append returns (group commit).
    Sync,
    /// Background fdatasync every 100 ms.
    Periodic,
    /// The OS decides when data reaches the disk.
    Buffered,
}

impl DurabilityArg {
    fn durability(self) -> Durability {
        match self {
            DurabilityArg::Sync => Durability::Sync,
            DurabilityArg::Periodic => Durability::Periodic(PERIODIC_INTERVAL),
            DurabilityArg::Buffered => Durability::Buffered,
        }
    }

    /// The plain-file baseline this durability is measured against, named for what it is.
    fn baseline_name(self) -> &'static str {
        match self {
            DurabilityArg::Sync => "write + fdatasync",
            DurabilityArg::Periodic => "write + fdatasync every 100 ms",
            DurabilityArg::Buffered => "page cache write",
        }
    }

    fn name(self) -> &'static str {
        match self {
            DurabilityArg::Sync => "sync",
            DurabilityArg::Periodic => "periodic",
            DurabilityArg::Buffered => "buffered",
        }
    }
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Store directory (default: a fresh temporary directory, removed afterwards).
    #[arg(long, value_name = "D")]
    dir: Option<PathBuf>,
    /// Events to append in total [default: 100000 for sync, 1000000 otherwise].
    #[arg(long, value_name = "N")]
    events: Option<u64>,
    /// Bytes of data per event.
    #[arg(long, value_name = "B", default_value_t = 150)]
    event_size: usize,
    /// Streams to spread the appends over (round-robin).
    #[arg(long, value_name = "S", default_value_t = 1000)]
    streams: u64,
    /// Events per append.
    #[arg(long, value_name = "K", default_value_t = 100)]
    batch: u64,
    /// Writer threads sharing the store.
    #[arg(long, value_name = "W", default_value_t = 1)]
    writers: usize,
    /// Durability of the store (periodic syncs every 100 ms) [default: sync, then
    /// buffered, each against its own baseline; with --dir, in D/sync and D/buffered].
    #[arg(long, value_enum)]
    durability: Option<DurabilityArg>,
    /// One JSON object instead of human-readable lines.
    #[arg(long)]
    json: bool,
}

impl BenchArgs {
    fn validate(&self) -> CliResult {
        let usage = |m: &str| Err(CliError::Usage(m.to_string()));
        if self.events == Some(0) {
            return usage("--events must be at least 1");
        }
        if self.batch == 0 {
            return usage("--batch must be at least 1");
        }
        if self.batch > Options::default().max_events_per_append as u64 {
            return Err(CliError::Usage(format!(
                "--batch must be at most {} (the store's max_events_per_append)",
                Options::default().max_events_per_append
            )));
        }
        if self.streams == 0 {
            return usage("--streams must be at least 1");
        }
        if self.writers == 0 {
            return usage("--writers must be at least 1");
        }
        if self.writers > MAX_WRITERS {
            return Err(CliError::Usage(format!(
                "--writers must be at most {MAX_WRITERS}"
            )));
        }
        if self.event_size == 0 {
            return usage("--event-size must be at least 1");
        }
        let limits = Options::default();
        if self.event_size as u64 > limits.max_event_bytes {
            return Err(CliError::Usage(format!(
                "--event-size must be at most {} (the store's max_event_bytes)",
                limits.max_event_bytes
            )));
        }
        // The largest append: a full batch to the longest stream name.
        let payload = vec![0u8; self.event_size];
        let event = EventRef::new(EVENT_TYPE, &payload);
        let batch = usize::try_from(self.batch).unwrap_or(usize::MAX);
        if let Err(e) = limits.check_append(
            &stream_name(self.streams.saturating_sub(1)),
            &vec![event; batch],
        ) {
            return Err(CliError::Usage(format!(
                "--batch {} of --event-size {} makes appends the store refuses: {e}",
                self.batch, self.event_size
            )));
        }
        Ok(())
    }
}

/// One measured run: the arguments with the durability and event count resolved.
struct Plan {
    events: u64,
    event_size: usize,
    streams: u64,
    batch: u64,
    writers: usize,
    durability: DurabilityArg,
}

impl Plan {
    fn new(a: &BenchArgs, durability: DurabilityArg) -> Plan {
        let default_events = match durability {
            DurabilityArg::Sync => DEFAULT_SYNC_EVENTS,
            DurabilityArg::Periodic | DurabilityArg::Buffered => DEFAULT_EVENTS,
        };
        Plan {
            events: a.events.unwrap_or(default_events),
            event_size: a.event_size,
            streams: a.streams,
            batch: a.batch,
            writers: a.writers,
            durability,
        }
    }

    fn workload(&self) -> String {
        format!(
            "append_refs {}, {} B events, batch {}, {} writer{}, {} stream{}",
            self.durability.name(),
            self.event_size,
            self.batch,
            self.writers,
            if self.writers == 1 { "" } else { "s" },
            self.streams,
            if self.streams == 1 { "" } else { "s" },
        )
    }
}

/// The type of every event the benchmark appends.
const EVENT_TYPE: &str = "BenchEvent";

fn stream_name(i: u64) -> String {
    format!("bench-{i}")
}

/// A latency histogram in nanoseconds, 1 ns to 1 hour, 3 significant digits (larger
/// values saturate).
fn new_histogram() -> CliResult<Histogram<u64>> {
    Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3)
        .map_err(|e| CliError::Other(format!("histogram: {e}")))
}

/// What the writer threads measured.
struct AppendRun {
    latency_ns: Histogram<u64>,
    seconds: f64,
    appends: u64,
}

fn run_appends(store: &Arc<Store>, a: &Plan) -> CliResult<AppendRun> {
    let appends = a.events.div_ceil(a.batch);
    let payload: Arc<[u8]> = (0..a.event_size)
        .map(|i| b"0123456789abcdefghijklmnopqrstuvwxyz"[i % 36])
        .collect();
    let next = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let bar = progress_bar(a.events, "append");
    let start = Instant::now();
    let results: Vec<CliResult<Histogram<u64>>> = std::thread::scope(|s| {
        let mut handles = Vec::with_capacity(a.writers);
        for w in 0..a.writers {
            let store = Arc::clone(store);
            let payload = Arc::clone(&payload);
            let (next, stop, bar) = (&next, &stop, &bar);
            let spawned = std::thread::Builder::new()
                .name(format!("bench-writer-{w}"))
                .spawn_scoped(s, move || -> CliResult<Histogram<u64>> {
                    let mut hist = new_histogram()?;
                    while !stop.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= appends {
                            break;
                        }
                        let n = a.batch.min(a.events - i * a.batch);
                        let stream = stream_name(i % a.streams);
                        // Borrowed events (`append_refs`): each has its own id, and its
                        // data is the payload's bytes, with no copy per event.
                        let events: Vec<EventRef<'_>> = (0..n)
                            .map(|_| EventRef::new(EVENT_TYPE, &payload))
                            .collect();
                        let t = Instant::now();
                        let r = store.append_refs(&stream, ExpectedVersion::Any, &events);
                        let ns = u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX);
                        if let Err(e) = r {
                            stop.store(true, Ordering::Relaxed);
                            return Err(e.into());
                        }
                        hist.saturating_record(ns);
                        bar.inc(n);
                    }
                    Ok(hist)
                });
            match spawned {
                Ok(h) => handles.push(h),
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    // The scope joins the writers already started; they see `stop`.
                    return vec![Err(CliError::Other(format!(
                        "cannot start a writer thread: {e}"
                    )))];
                }
            }
        }
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(CliError::Other("a writer thread panicked".into())))
            })
            .collect()
    });
    let seconds = start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let mut latency_ns = new_histogram()?;
    for r in results {
        latency_ns
            .add(r?)
            .map_err(|e| CliError::Other(format!("histogram: {e}")))?;
    }
    Ok(AppendRun {
        latency_ns,
        seconds,
        appends,
    })
}

/// What the plain-file baseline measured.
struct Baseline {
    seconds: f64,
    writes: u64,
    syncs: u64,
    final_sync_seconds: f64,
}

/// Writes `bytes` to a plain file in `dir` in `writes` writes of (nearly) equal size:
/// `write_all` plus `sync_data` after each write for sync, a `sync_data` every 100 ms for
/// periodic, none for buffered. Then one final `sync_data`, timed apart. For sync, the
/// file is preallocated first (zeros written and synced, untimed), as streamlog's active
/// segment is: each `sync_data` then flushes data only, the fastest a plain file allows.
fn run_baseline(
    dir: &Path,
    bytes: u64,
    writes: u64,
    durability: DurabilityArg,
) -> CliResult<Baseline> {
    let path = dir.join(".streamlog-bench-baseline");
    let io = |what: &str, e: std::io::Error| {
        CliError::Other(format!("baseline: {what} {}: {e}", path.display()))
    };
    let writes = writes.max(1);
    let base = bytes / writes;
    let extra = bytes % writes;
    let buf_len = usize::try_from(base + 1)
        .map_err(|_| CliError::Other("baseline: write too large".into()))?;
    let buf: Vec<u8> = (0..buf_len).map(|i| (i % 251) as u8).collect();
    let mut file = File::create(&path).map_err(|e| io("create", e))?;
    let result = (|| -> CliResult<Baseline> {
        if durability == DurabilityArg::Sync {
            // In chunks: a large --events must not need its whole size in memory.
            let zeros = vec![0u8; PREALLOCATE_CHUNK_BYTES];
            let mut left = bytes;
            while left > 0 {
                let n = usize::try_from(left).map_or(zeros.len(), |l| l.min(zeros.len()));
                file.write_all(&zeros[..n])
                    .map_err(|e| io("preallocate", e))?;
                left -= n as u64;
            }
            file.sync_all().map_err(|e| io("sync", e))?;
            file.seek(SeekFrom::Start(0)).map_err(|e| io("seek", e))?;
        }
        let mut syncs = 0u64;
        let start = Instant::now();
        let mut last_sync = start;
        for i in 0..writes {
            let len = if i < extra { buf_len } else { buf_len - 1 };
            file.write_all(&buf[..len]).map_err(|e| io("write", e))?;
            let sync = match durability {
                DurabilityArg::Sync => true,
                DurabilityArg::Periodic => last_sync.elapsed() >= PERIODIC_INTERVAL,
                DurabilityArg::Buffered => false,
            };
            if sync {
                file.sync_data().map_err(|e| io("sync", e))?;
                syncs += 1;
                last_sync = Instant::now();
            }
        }
        let seconds = start.elapsed().as_secs_f64();
        let t = Instant::now();
        file.sync_data().map_err(|e| io("sync", e))?;
        Ok(Baseline {
            seconds,
            writes,
            syncs,
            final_sync_seconds: t.elapsed().as_secs_f64(),
        })
    })();
    drop(file);
    let removed = std::fs::remove_file(&path).map_err(|e| io("remove", e));
    let baseline = result?;
    removed?;
    Ok(baseline)
}

fn per_s(n: f64, seconds: f64) -> f64 {
    if seconds > 0.0 { n / seconds } else { 0.0 }
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

/// Rounds for display in JSON (3 decimals).
fn r3(x: f64) -> f64 {
    (x * 1e3).round() / 1e3
}

/// Rounds seconds for display in JSON (microseconds).
fn r6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// What one run's summary line needs.
struct Outcome {
    durability: DurabilityArg,
    mb_per_s: f64,
    events_per_s: f64,
    ratio: f64,
}

pub fn run(a: BenchArgs, out: &mut impl Write) -> CliResult {
    a.validate()?;
    let temp;
    let (root, temporary) = match &a.dir {
        Some(d) => {
            // The bench writes a store of its own: never into someone's store or files.
            let used = std::fs::read_dir(d).is_ok_and(|mut entries| entries.next().is_some());
            if used || d.is_file() {
                return Err(CliError::Usage(format!(
                    "--dir {}: must be a new or empty directory (bench writes its own store there)",
                    d.display()
                )));
            }
            (d.clone(), false)
        }
        None => {
            temp = tempfile::tempdir().map_err(|e| {
                CliError::Other(format!("cannot create a temporary directory: {e}"))
            })?;
            (temp.path().to_path_buf(), true)
        }
    };
    let dir_text = |dir: &Path| {
        if temporary {
            format!("{} (temporary, removed)", dir.display())
        } else {
            dir.display().to_string()
        }
    };
    match a.durability {
        Some(durability) => {
            run_one(
                &Plan::new(&a, durability),
                &root,
                &dir_text(&root),
                a.json,
                out,
            )?;
        }
        None => {
            // What users get by default first, then the fast mode for comparison; each
            // in a store of its own.
            let mut outcomes = Vec::with_capacity(2);
            for durability in [DurabilityArg::Sync, DurabilityArg::Buffered] {
                let dir = root.join(durability.name());
                if !a.json && !outcomes.is_empty() {
                    writeln!(out)?;
                }
                outcomes.push(run_one(
                    &Plan::new(&a, durability),
                    &dir,
                    &dir_text(&dir),
                    a.json,
                    out,
                )?);
            }
            if !a.json {
                writeln!(out)?;
                for o in &outcomes {
                    writeln!(
                        out,
                        "summary      {:<8} {:.0} events/s, {:.1} MB/s = {:.3} × {}",
                        o.durability.name(),
                        o.events_per_s,
                        o.mb_per_s,
                        o.ratio,
                        o.durability.baseline_name()
                    )?;
                }
            }
        }
    }
    Ok(())
}

/// Runs one plan in a store at `dir` (created), prints its report, and returns its summary.
fn run_one(
    a: &Plan,
    dir: &Path,
    dir_text: &str,
    json: bool,
    out: &mut impl Write,
) -> CliResult<Outcome> {
    let store = Arc::new(Store::open_with(
        dir,
        Options::default().with_durability(a.durability.durability()),
    )?);
    let bytes_before = store.info()?.bytes;
    let run = run_appends(&store, a)?;

    // Everything appended reaches the disk (already so for sync).
    let t = Instant::now();
    store.sync()?;
    let final_sync_seconds = t.elapsed().as_secs_f64();
    let info = store.info()?;
    let bytes = info.bytes.saturating_sub(bytes_before);

    // Reads, with the borrowing readers (the fast path): one stream twice (the second
    // read finds its frames in the frame cache), then everything in commit order.
    let first = stream_name(0);
    let read_stream = || -> CliResult<(u64, f64)> {
        let t = Instant::now();
        let mut bytes = 0usize;
        let n = store.read_stream_with(&first, 0, |e| {
            bytes += e.data.len();
            ControlFlow::Continue(())
        })?;
        std::hint::black_box(bytes);
        Ok((n, t.elapsed().as_secs_f64() * 1e6))
    };
    let (read_stream_events, read_stream_us) = read_stream()?;
    let (_, read_stream_warm_us) = read_stream()?;
    let t = Instant::now();
    let mut bytes_seen = 0usize;
    let read_all_events = store.read_all_with(Position::START, |e| {
        bytes_seen += e.data.len();
        ControlFlow::Continue(())
    })?;
    std::hint::black_box(bytes_seen);
    let read_all_seconds = t.elapsed().as_secs_f64();
    let read_all_bytes = info.bytes;

    let store = Arc::into_inner(store)
        .ok_or_else(|| CliError::Other("the store is still shared after the benchmark".into()))?;
    store.close()?;

    let baseline = run_baseline(dir, bytes, run.appends, a.durability)?;

    let h = &run.latency_ns;
    let q = |quantile: f64| h.value_at_quantile(quantile) as f64 / 1000.0;
    let (p50, p99, p999, max) = (q(0.5), q(0.99), q(0.999), h.max() as f64 / 1000.0);
    let mean = h.mean() / 1000.0;
    // Share of the writers' wall time spent inside `store.append_refs`; the rest is
    // building the events (`EventRef::new`: a UUIDv7 id each).
    let in_append_share = {
        let busy = a.writers as f64 * run.seconds * 1e6;
        if busy > 0.0 {
            (mean * run.appends as f64 / busy).min(1.0)
        } else {
            0.0
        }
    };
    let mb_per_s = per_s(mb(bytes), run.seconds);
    let baseline_mb_per_s = per_s(mb(bytes), baseline.seconds);
    let ratio = if baseline_mb_per_s > 0.0 {
        mb_per_s / baseline_mb_per_s
    } else {
        0.0
    };
    let events_per_s = per_s(a.events as f64, run.seconds);
    let appends_per_s = per_s(run.appends as f64, run.seconds);
    let baseline_syncs_per_s = per_s(baseline.syncs as f64, baseline.seconds);
    let read_all_events_per_s = per_s(read_all_events as f64, read_all_seconds);
    let read_all_mb_per_s = per_s(mb(read_all_bytes), read_all_seconds);

    if json {
        let obj = Obj::new()
            .field("workload", a.workload())
            .field("durability", a.durability.name())
            .field("events", a.events)
            .field("event_size", a.event_size)
            .field("batch", a.batch)
            .field("writers", a.writers)
            .field("streams", a.streams)
            .field("appends", run.appends)
            .field("bytes", bytes)
            .field("seconds", r6(run.seconds))
            .field("events_per_s", r3(events_per_s))
            .field("appends_per_s", r3(appends_per_s))
            .field("mb_per_s", r3(mb_per_s))
            .field("latency_p50_us", r3(p50))
            .field("latency_p99_us", r3(p99))
            .field("latency_p999_us", r3(p999))
            .field("latency_max_us", r3(max))
            .field("latency_mean_us", r3(mean))
            .field("in_append_share", r3(in_append_share))
            .field("final_sync_ms", r3(final_sync_seconds * 1e3))
            .field("baseline", a.durability.baseline_name())
            .field("baseline_writes", baseline.writes)
            .field("baseline_syncs", baseline.syncs)
            .field("baseline_seconds", r6(baseline.seconds))
            .field("baseline_mb_per_s", r3(baseline_mb_per_s));
        let obj = if a.durability == DurabilityArg::Sync {
            obj.field("baseline_syncs_per_s", r3(baseline_syncs_per_s))
        } else {
            obj
        };
        let obj = obj
            .field(
                "baseline_final_sync_ms",
                r3(baseline.final_sync_seconds * 1e3),
            )
            .field("ratio", (ratio * 10_000.0).round() / 10_000.0)
            .field("read_stream", first.as_str())
            .field("read_stream_events", read_stream_events)
            .field("read_stream_us", r3(read_stream_us))
            .field("read_stream_warm_us", r3(read_stream_warm_us))
            .field("read_all_events", read_all_events)
            .field("read_all_bytes", read_all_bytes)
            .field("read_all_seconds", r6(read_all_seconds))
            .field("read_all_events_per_s", r3(read_all_events_per_s))
            .field("read_all_mb_per_s", r3(read_all_mb_per_s))
            .field("dir", dir_text);
        line(out, obj)?;
    } else {
        let sync_note = if a.durability == DurabilityArg::Sync {
            format!(", {:.0} write+fdatasync/s", baseline_syncs_per_s)
        } else {
            String::new()
        };
        let how = match a.durability {
            DurabilityArg::Sync => "a preallocated plain file, write_all + sync_data each",
            DurabilityArg::Periodic => "a plain file, write_all, sync_data every 100 ms",
            DurabilityArg::Buffered => "a plain file, write_all, no sync",
        };
        writeln!(out, "workload     {}", a.workload())?;
        writeln!(
            out,
            "append       {} events, {:.1} MB in {:.3} s: {:.0} events/s, {:.1} MB/s, {:.0} appends/s",
            a.events,
            mb(bytes),
            run.seconds,
            events_per_s,
            mb_per_s,
            appends_per_s
        )?;
        writeln!(
            out,
            "latency      p50 {p50:.1} µs, p99 {p99:.1} µs, p99.9 {p999:.1} µs, max {max:.1} µs per append"
        )?;
        writeln!(
            out,
            "in append    {:.0}% of the writers' time (the rest builds the events)",
            in_append_share * 100.0
        )?;
        writeln!(
            out,
            "baseline     {}: {how}, {} writes: {:.3} s, {:.1} MB/s{sync_note}",
            a.durability.baseline_name(),
            baseline.writes,
            baseline.seconds,
            baseline_mb_per_s
        )?;
        writeln!(
            out,
            "ratio        {ratio:.3} (streamlog MB/s / {} MB/s)",
            a.durability.baseline_name()
        )?;
        writeln!(
            out,
            "final sync   streamlog {:.1} ms, baseline {:.1} ms",
            final_sync_seconds * 1e3,
            baseline.final_sync_seconds * 1e3
        )?;
        writeln!(
            out,
            "read_stream  {read_stream_events} events of {first} in {read_stream_us:.0} µs, again in {read_stream_warm_us:.0} µs (read_stream_with)"
        )?;
        writeln!(
            out,
            "read_all     {read_all_events} events, {:.1} MB in {read_all_seconds:.3} s: {read_all_events_per_s:.0} events/s, {read_all_mb_per_s:.1} MB/s (read_all_with)",
            mb(read_all_bytes)
        )?;
        writeln!(out, "dir          {dir_text}")?;
    }
    Ok(Outcome {
        durability: a.durability,
        mb_per_s,
        events_per_s,
        ratio,
    })
}
