//! `streamlog-compare`: streamlog against peer embedded stores and the raw-file baseline.
//!
//! `cargo run --release -p streamlog-compare -- --out docs` runs every workload against
//! every peer and writes `benchmarks-compare.md` and `compare.svg` into `--out`.

mod engine;
mod engines;
mod raw;
mod report;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;

use crate::engine::{Engine, Mode, Peer, Seen};
use crate::report::{Cell, Report, Table};

/// Benchmarks streamlog against peer embedded stores and the raw file baseline.
#[derive(Parser, Debug, Clone)]
#[command(version)]
pub struct Args {
    /// Where to write benchmarks-compare.md and compare.svg.
    #[arg(long, default_value = "docs")]
    out: PathBuf,
    /// Scratch directory for the stores (default: a temporary directory under /tmp).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// W1: events appended (buffered), spread over --streams streams.
    #[arg(long, default_value_t = 500_000)]
    events: u64,
    /// W1: streams.
    #[arg(long, default_value_t = 1_000)]
    streams: u64,
    /// W1: events per append.
    #[arg(long, default_value_t = 100)]
    batch: u64,
    /// Bytes of data per event.
    #[arg(long, default_value_t = 150)]
    event_size: usize,
    /// W3: events of the stream read back; appended during W1 in batches of 10, spread
    /// evenly through the log.
    #[arg(long, default_value_t = 1_000)]
    target_events: u64,
    /// W3 and W6: timed warm reads (the median is reported).
    #[arg(long, default_value_t = 50)]
    reads: u32,
    /// W2: durable appends (batch 1) with one writer.
    #[arg(long, default_value_t = 2_000)]
    durable_appends: u64,
    /// W2: durable appends (batch 1) in total with --writers concurrent writers.
    #[arg(long, default_value_t = 8_000)]
    concurrent_appends: u64,
    /// W2: concurrent writers.
    #[arg(long, default_value_t = 64)]
    writers: u64,
    /// W6: events of the aggregate's stream, appended in appends of --batch.
    #[arg(long, default_value_t = 100_500)]
    aggregate_events: u64,
    /// W6: a snapshot of the aggregate is saved every this many events.
    #[arg(long, default_value_t = 1_000)]
    snapshot_every: u64,
    /// Bytes on disk of JSON events: events of orders and accounts with fields that vary
    /// by event kind, in appends of 1 to 4 events.
    #[arg(long, default_value_t = 100_000)]
    json_events: u64,
    /// JSON events: streams (half orders, half accounts).
    #[arg(long, default_value_t = 2_000)]
    json_streams: u64,
    /// Only these peers (comma-separated names, case-insensitive).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Skip the cold-cache measurement even when caches can be dropped.
    #[arg(long)]
    no_cold: bool,
}

/// The stream W3 reads.
const TARGET_STREAM: &str = "target";
/// Events per append to the W3 stream.
const TARGET_BATCH: u64 = 10;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.batch >= 1 && args.streams >= 1 && args.writers >= 1 && args.json_streams >= 1,
        "sizes must be at least 1"
    );
    anyhow::ensure!(
        args.target_events % TARGET_BATCH == 0,
        "--target-events must be a multiple of {TARGET_BATCH}"
    );
    anyhow::ensure!(
        args.snapshot_every >= 1 && args.snapshot_every.is_multiple_of(args.batch),
        "--snapshot-every must be a multiple of --batch"
    );
    let temp;
    let scratch = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            temp = tempfile::Builder::new()
                .prefix("streamlog-compare")
                .tempdir()?;
            temp.path().to_path_buf()
        }
    };
    // Why cold reads are not measured in this run, if they are not.
    let cold: Result<(), String> = if args.no_cold {
        Err("skipped (--no-cold)".to_string())
    } else {
        drop_caches().map_err(|e| format!("cold not measurable here ({e})"))
    };
    let all = engines::all();
    if let Some(unknown) = args
        .only
        .iter()
        .find(|o| !all.iter().any(|p| o.eq_ignore_ascii_case(p.name)))
    {
        if let Some((name, why)) = engines::left_out()
            .into_iter()
            .find(|(name, _)| unknown.eq_ignore_ascii_case(name))
        {
            anyhow::bail!("--only {unknown:?}: {name} is not in this build: {why}");
        }
        let names: Vec<&str> = all.iter().map(|p| p.name).collect();
        anyhow::bail!(
            "--only {unknown:?}: no such peer in this build; the peers are {}",
            names.join(", ")
        );
    }
    let peers: Vec<Peer> = all
        .into_iter()
        .filter(|p| {
            args.only.is_empty() || args.only.iter().any(|o| o.eq_ignore_ascii_case(p.name))
        })
        .collect();
    let started = Instant::now();
    let mut report = Report::new(&args, &scratch, cold.clone());
    report.notes = peers
        .iter()
        .filter_map(|p| Some((p.name.to_string(), p.note?)))
        .collect();
    report.left_out = engines::left_out();

    eprintln!("raw baseline …");
    let raw = run_raw(&args, &scratch, &cold)?;
    let mut results = Vec::new();
    for peer in &peers {
        eprintln!("{} …", peer.name);
        let dir = scratch.join(peer.name.replace([' ', '(', ')'], ""));
        let r = run_peer(peer, &args, &dir, &cold);
        let _ = std::fs::remove_dir_all(&dir);
        results.push((peer, r));
    }

    let cell = |peer: &Peer, label: &str, m: &Result<f64, String>| Cell {
        peer: peer.name.to_string(),
        label: label.to_string(),
        durable: peer.is_durable(),
        value: m.clone(),
    };
    let total_events = args.events + args.target_events;
    let mut t = Table::new(
        "W1",
        "buffered append",
        format!(
            "{} events of {} B in appends of {} over {} streams (plus the {}-event W3 stream in appends of {TARGET_BATCH}), then one sync; events/s",
            args.events, args.event_size, args.batch, args.streams, args.target_events
        ),
        "events/s",
        true,
        (
            "plain write of the same data bytes in writes of one batch, then fdatasync",
            raw.w1,
        ),
    );
    for (p, r) in &results {
        t.cells.push(cell(p, p.buffered_label, &r.w1));
    }
    report.tables.push(t);

    let mut t = Table::new(
        "W2×1",
        "durable append, 1 writer",
        format!(
            "{} appends of one {} B event, one writer; appends/s",
            args.durable_appends, args.event_size
        ),
        "appends/s",
        true,
        (
            "plain write + fdatasync per event, preallocated file",
            raw.w2.clone(),
        ),
    );
    for (p, r) in &results {
        t.cells.push(cell(p, p.durable_label, &r.w2_1));
    }
    report.tables.push(t);
    let mut t = Table::new(
        "W2×64",
        "durable append, concurrent writers",
        format!(
            "{} appends of one {} B event by {} concurrent writers, each to its own stream; appends/s",
            args.concurrent_appends, args.event_size, args.writers
        ),
        "appends/s",
        true,
        (
            "plain write + fdatasync per event, preallocated file, one thread",
            raw.w2,
        ),
    );
    for (p, r) in &results {
        t.cells.push(cell(p, p.durable_label, &r.w2_n));
    }
    report.tables.push(t);

    let mut t = Table::new(
        "W3 warm",
        "read one stream, warm",
        format!(
            "read the {}-event stream from the W1 store ({} events), warm, median of {}; µs",
            args.target_events, total_events, args.reads
        ),
        "µs",
        false,
        (
            "pread of the stream's bytes stored contiguously, warm",
            raw.w3_warm,
        ),
    );
    for (p, r) in &results {
        t.cells
            .push(cell(p, p.stream_read_note.unwrap_or(""), &r.w3_warm));
    }
    report.tables.push(t);
    let mut t = Table::new(
        "W3 cold",
        "read one stream, cold",
        "as W3 warm, once, after close, drop_caches, reopen, drop_caches (engine caches empty, page cache dropped; memory maps kept by open may stay); µs".to_string(),
        "µs",
        false,
        (
            "pread of the stream's bytes after drop_caches",
            raw.w3_cold.clone(),
        ),
    );
    for (p, r) in &results {
        t.cells
            .push(cell(p, p.stream_read_note.unwrap_or(""), &r.w3_cold));
    }
    report.tables.push(t);

    let mut t = Table::new(
        "W4",
        "full scan in commit order",
        format!(
            "every event of the W1 store ({total_events}) in commit order, warm (second scan); events/s"
        ),
        "events/s",
        true,
        (
            "sequential read (1 MiB reads) of a file of the events' data bytes, warm",
            raw.w4,
        ),
    );
    for (p, r) in &results {
        t.cells.push(cell(p, p.scan_note.unwrap_or(""), &r.w4));
    }
    report.tables.push(t);

    let mut t = Table::new(
        "W5 clean",
        "open after clean close",
        "open the W1 store after a clean close, page cache warm; ms".to_string(),
        "ms",
        false,
        ("open(2) + read of 4 KiB", raw.w5.clone()),
    );
    for (p, r) in &results {
        t.cells.push(cell(p, "", &r.w5_clean));
    }
    report.tables.push(t);
    let mut t = Table::new(
        "W5 crash",
        "open after a crash",
        format!(
            "open a copy of the W1 store's files taken while it was open (after its final sync) and written to disk before the open, {}; ms",
            if cold.is_ok() {
                "page cache cold for engines with a W3 cold figure (its drop_caches comes after the copy), as after a machine crash; warm for the others"
            } else {
                "page cache warm"
            }
        ),
        "ms",
        false,
        ("open(2) + read of 4 KiB", raw.w5),
    );
    for (p, r) in &results {
        t.cells.push(cell(p, "", &r.w5_crash));
    }
    report.tables.push(t);

    let tail = args.aggregate_events % args.snapshot_every;
    let mut t = Table::new(
        "W6",
        "load an aggregate",
        format!(
            "fold a {}-event stream into a 16-byte state, starting from its latest snapshot (one saved every {} events, so the load reads it and the {tail} events after it), store reopened, warm, median of {}; µs. Peers keep the snapshot as an application would: one record per stream, replaced",
            args.aggregate_events, args.snapshot_every, args.reads
        ),
        "µs",
        false,
        (
            "pread of the snapshot and the tail's bytes stored contiguously, warm",
            raw.w6,
        ),
    );
    for (p, r) in &results {
        t.cells
            .push(cell(p, p.stream_read_note.unwrap_or(""), &r.w6));
    }
    report.tables.push(t);

    report.json_what = format!(
        "{} JSON events of orders and accounts (fields varying by event kind, {:.0} B of data each on average) over {} streams, in appends of 1 to 4 events",
        args.json_events,
        json_mean_bytes(&args),
        args.json_streams
    );
    for (p, r) in &results {
        report.sizes.push(report::Sizes {
            peer: p.name.to_string(),
            w1: r.bytes_on_disk.clone(),
            w1_compacted: r.w1_compacted.clone(),
            json: r.json_bytes.clone(),
            json_compacted: r.json_compacted.clone(),
            compaction: r.compaction.clone(),
        });
    }
    report.elapsed = started.elapsed();
    report.write(&args.out)?;
    eprintln!(
        "wrote {} in {:.0} s",
        args.out.display(),
        report.elapsed.as_secs_f64()
    );
    Ok(())
}

/// What the raw baseline measured; figures in each table's unit.
struct Raw {
    w1: Result<f64, String>,
    w2: Result<f64, String>,
    w3_warm: Result<f64, String>,
    w3_cold: Result<f64, String>,
    w4: Result<f64, String>,
    w5: Result<f64, String>,
    w6: Result<f64, String>,
}

fn run_raw(args: &Args, scratch: &Path, cold: &Result<(), String>) -> anyhow::Result<Raw> {
    let path = scratch.join("raw.bin");
    let events = args.events + args.target_events;
    let bytes = events * args.event_size as u64;
    let write_bytes = (args.batch as usize) * args.event_size;
    let w1 = per_s(events, raw::write_then_sync(&path, bytes, write_bytes)?);
    let (w4_time, read) = {
        raw::read_sequential(&path)?;
        raw::read_sequential(&path)?
    };
    anyhow::ensure!(read == bytes, "raw read {read} of {bytes} bytes");
    let w4 = per_s(events, w4_time);
    let stream_bytes = (args.target_events as usize) * args.event_size;
    let offset = (bytes / 2).min(bytes.saturating_sub(stream_bytes as u64));
    raw::read_range(&path, offset, stream_bytes)?;
    let mut warm = (0..args.reads.max(1))
        .map(|_| raw::read_range(&path, offset, stream_bytes).map(us))
        .collect::<anyhow::Result<Vec<f64>>>()?;
    let w3_warm = median(&mut warm);
    let tail_bytes =
        16 + ((args.aggregate_events % args.snapshot_every) as usize) * args.event_size;
    raw::read_range(&path, offset, tail_bytes)?;
    let mut w6 = (0..args.reads.max(1))
        .map(|_| raw::read_range(&path, offset, tail_bytes).map(us))
        .collect::<anyhow::Result<Vec<f64>>>()?;
    let w6 = median(&mut w6);
    let w3_cold = match cold {
        Ok(()) => {
            drop_caches()?;
            Ok(us(raw::read_range(&path, offset, stream_bytes)?))
        }
        Err(why) => Err(why.clone()),
    };
    let w5 = raw::open_file(&path)?.as_secs_f64() * 1e3;
    std::fs::remove_file(&path)?;
    let sync_path = scratch.join("raw-sync.bin");
    let w2 = per_s(
        args.durable_appends,
        raw::write_sync_each(&sync_path, args.durable_appends, args.event_size)?,
    );
    std::fs::remove_file(&sync_path)?;
    Ok(Raw {
        w1: Ok(w1),
        w2: Ok(w2),
        w3_warm: Ok(w3_warm),
        w3_cold,
        w4: Ok(w4),
        w5: Ok(w5),
        w6: Ok(w6),
    })
}

/// What one peer measured; `Err` holds why a figure is missing.
pub struct PeerResult {
    w1: Result<f64, String>,
    w2_1: Result<f64, String>,
    w2_n: Result<f64, String>,
    w3_warm: Result<f64, String>,
    w3_cold: Result<f64, String>,
    w4: Result<f64, String>,
    w5_clean: Result<f64, String>,
    w5_crash: Result<f64, String>,
    w6: Result<f64, String>,
    bytes_on_disk: Result<u64, String>,
    /// The W1 store's bytes after the engine's compaction.
    w1_compacted: Result<u64, String>,
    json_bytes: Result<u64, String>,
    json_compacted: Result<u64, String>,
    /// What the engine's compaction ran, or why none ran.
    compaction: Result<&'static str, String>,
}

fn failed(e: anyhow::Error) -> String {
    format!("failed: {e:#}")
}

fn run_peer(peer: &Peer, args: &Args, dir: &Path, cold: &Result<(), String>) -> PeerResult {
    let mut r = PeerResult {
        w1: Err("not run".into()),
        w2_1: Err("not run".into()),
        w2_n: Err("not run".into()),
        w3_warm: Err("not run".into()),
        w3_cold: Err("not run".into()),
        w4: Err("not run".into()),
        w5_clean: Err("not run".into()),
        w5_crash: Err("not run".into()),
        w6: Err("not run".into()),
        bytes_on_disk: Err("not run".into()),
        w1_compacted: Err("not run".into()),
        json_bytes: Err("not run".into()),
        json_compacted: Err("not run".into()),
        compaction: Err("not run".into()),
    };
    if let Err(e) = load_and_read(peer, args, dir, cold, &mut r) {
        eprintln!("  {}: {e:#}", peer.name);
    }
    if r.bytes_on_disk.is_ok() {
        (r.w1_compacted, r.compaction) = compacted_size(peer, &dir.join("w1"));
    }
    let json_dir = dir.join("json");
    (r.json_bytes, r.json_compacted) = match json_store(peer, args, &json_dir) {
        Ok(written) => (Ok(written), compacted_size(peer, &json_dir).0),
        Err(e) => (Err(failed(e)), Err("not run".into())),
    };
    let _ = std::fs::remove_dir_all(&json_dir);
    r.w6 = if peer.stream_read_note.is_some_and(|n| n.starts_with("n/a")) {
        Err(peer.stream_read_note.unwrap_or("n/a").to_string())
    } else {
        aggregate(peer, args, &dir.join("w6")).map_err(|e| {
            let why = format!("{e:#}");
            if why.starts_with("n/a") {
                why
            } else {
                failed(e)
            }
        })
    };
    r.w2_1 = durable_appends(
        peer,
        &dir.join("w2-1"),
        args.event_size,
        args.durable_appends,
        1,
    )
    .map_err(failed);
    r.w2_n = durable_appends(
        peer,
        &dir.join("w2-n"),
        args.event_size,
        args.concurrent_appends,
        args.writers,
    )
    .map_err(failed);
    r
}

/// W1, then W5, W3 and W4 on the store W1 built.
fn load_and_read(
    peer: &Peer,
    args: &Args,
    dir: &Path,
    cold: &Result<(), String>,
    r: &mut PeerResult,
) -> anyhow::Result<()> {
    let store_dir = dir.join("w1");
    let crash_dir = dir.join("w1-crash");
    let total = args.events + args.target_events;
    let payload = payload(args.event_size);

    // W1: the W3 stream's appends are spread evenly among the others.
    let engine = (peer.open)(&store_dir, Mode::Buffered).map_err(|e| {
        r.w1 = Err(failed(anyhow::anyhow!("{e:#}")));
        e
    })?;
    let appends = args.events.div_ceil(args.batch);
    let target_appends = args.target_events / TARGET_BATCH;
    let every = (appends / target_appends.max(1)).max(1);
    let start = Instant::now();
    let w1 = (|| -> anyhow::Result<()> {
        let mut batch: Vec<&[u8]> = Vec::new();
        let mut target_done = 0;
        for i in 0..appends {
            let n = args.batch.min(args.events - i * args.batch);
            batch.clear();
            batch.extend((0..n).map(|_| payload.as_slice()));
            engine.append(&format!("stream-{}", i % args.streams), &batch)?;
            if i % every == 0 && target_done < target_appends {
                batch.clear();
                batch.extend((0..TARGET_BATCH).map(|_| payload.as_slice()));
                engine.append(TARGET_STREAM, &batch)?;
                target_done += 1;
            }
        }
        batch.clear();
        batch.extend((0..TARGET_BATCH).map(|_| payload.as_slice()));
        for _ in target_done..target_appends {
            engine.append(TARGET_STREAM, &batch)?;
        }
        engine.sync()
    })();
    let elapsed = start.elapsed();
    if let Err(e) = w1 {
        r.w1 = Err(failed(e));
        return Ok(());
    }
    r.w1 = Ok(per_s(total, elapsed));
    // A crash image: the files as they are while the store is open.
    r.w5_crash = if peer.crash_copy {
        copy_dir(&store_dir, &crash_dir)
            .map(|()| 0.0)
            .map_err(failed)
    } else {
        Err("n/a".into())
    };
    engine.close()?;
    r.bytes_on_disk = dir_size(&store_dir).map_err(failed);

    // W5 clean, then W3 warm and W4 on that instance.
    let start = Instant::now();
    let engine = (peer.open)(&store_dir, Mode::Buffered)?;
    r.w5_clean = Ok(ms(start.elapsed()));
    r.w3_warm = if peer.stream_read_note.is_some_and(|n| n.starts_with("n/a")) {
        Err(peer.stream_read_note.unwrap_or("n/a").to_string())
    } else {
        (|| {
            read_target(&*engine, args)?;
            let mut times = (0..args.reads.max(1))
                .map(|_| {
                    let t = Instant::now();
                    read_target(&*engine, args)?;
                    Ok(us(t.elapsed()))
                })
                .collect::<anyhow::Result<Vec<f64>>>()?;
            Ok(median(&mut times))
        })()
        .map_err(failed)
    };
    let can_scan = !peer.scan_note.is_some_and(|n| n.starts_with("n/a"));
    r.w4 = if !can_scan {
        Err(peer.scan_note.unwrap_or("n/a").to_string())
    } else {
        (|| {
            scan_all(&*engine, total)?;
            let t = Instant::now();
            scan_all(&*engine, total)?;
            Ok(per_s(total, t.elapsed()))
        })()
        .map_err(failed)
    };
    engine.close()?;

    // W3 cold.
    r.w3_cold = if r.w3_warm.is_err() {
        r.w3_warm.clone()
    } else if let Err(why) = cold {
        Err(why.clone())
    } else {
        (|| {
            drop_caches()?;
            let engine = (peer.open)(&store_dir, Mode::Buffered)?;
            drop_caches()?;
            let t = Instant::now();
            read_target(&*engine, args)?;
            let took = us(t.elapsed());
            engine.close()?;
            Ok(took)
        })()
        .map_err(failed)
    };

    // W5 crash.
    if r.w5_crash.is_ok() {
        r.w5_crash = (|| {
            let start = Instant::now();
            let engine = (peer.open)(&crash_dir, Mode::Buffered)?;
            let took = ms(start.elapsed());
            // The image must hold everything synced before it was taken.
            if can_scan {
                scan_all(&*engine, total)?;
            }
            engine.close()?;
            Ok(took)
        })()
        .map_err(failed);
    }
    Ok(())
}

/// Opens the closed store in `dir`, runs the engine's compaction and closes it: the bytes
/// on disk after, and what the compaction was (or why there was none).
fn compacted_size(peer: &Peer, dir: &Path) -> (Result<u64, String>, Result<&'static str, String>) {
    let engine = match (peer.open)(dir, Mode::Buffered) {
        Ok(e) => e,
        Err(e) => return (Err(failed(e)), Err("not run".into())),
    };
    let how = engine.compact().map_err(|e| {
        let why = format!("{e:#}");
        if why.starts_with("n/a") {
            why
        } else {
            failed(e)
        }
    });
    if let Err(e) = engine.close() {
        return (Err(failed(e)), how);
    }
    match &how {
        Ok(_) => (dir_size(dir).map_err(failed), how),
        Err(why) => (Err(why.clone()), how),
    }
}

/// The JSON events store: appends the events of [`json_appends`], syncs, closes; its
/// bytes on disk.
fn json_store(peer: &Peer, args: &Args, dir: &Path) -> anyhow::Result<u64> {
    let engine = (peer.open)(dir, Mode::Buffered)?;
    json_appends(args, |stream, events| {
        let refs: Vec<&[u8]> = events.iter().map(Vec::as_slice).collect();
        engine.append(stream, &refs)
    })?;
    engine.sync()?;
    engine.close()?;
    dir_size(dir)
}

/// Calls `append` with the JSON events' appends, in order: --json-events events of
/// [`json_event`], in appends of 1 to 4 events to streams picked at random among
/// --json-streams (even ones orders, odd ones accounts).
fn json_appends(
    args: &Args,
    mut append: impl FnMut(&str, &[Vec<u8>]) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
    let mut n = 0u64;
    let mut batch: Vec<Vec<u8>> = Vec::new();
    while n < args.json_events {
        let stream_n = rng.next() % args.json_streams;
        let order = stream_n.is_multiple_of(2);
        let stream = format!("{}-{stream_n}", if order { "order" } else { "account" });
        let size = (1 + rng.next() % 4).min(args.json_events - n);
        batch.clear();
        for _ in 0..size {
            batch.push(json_event(&mut rng, order, stream_n, n));
            n += 1;
        }
        append(&stream, &batch)?;
    }
    Ok(())
}

/// Mean bytes of data of the JSON events.
fn json_mean_bytes(args: &Args) -> f64 {
    let (mut events, mut bytes) = (0usize, 0usize);
    let _ = json_appends(args, |_, batch| {
        events += batch.len();
        bytes += batch.iter().map(Vec::len).sum::<usize>();
        Ok(())
    });
    bytes as f64 / events.max(1) as f64
}

/// A small deterministic generator (xorshift64) for the JSON events.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from.get((self.next() % from.len().max(1) as u64) as usize)
            .copied()
            .unwrap_or_default()
    }
}

/// One JSON event of an order or an account stream (event `n` of the run), with fields
/// that vary by event kind, as an application's events do.
fn json_event(rng: &mut XorShift, order: bool, stream: u64, n: u64) -> Vec<u8> {
    let at = 1_764_547_200 + n * 3 + rng.next() % 3;
    let json = if order {
        match rng.next() % 4 {
            0 => format!(
                r#"{{"type":"OrderPlaced","order_id":"ord-{stream:06}","customer_id":"cust-{:05}","placed_at":{at},"currency":"{}","channel":"{}","lines":[{{"sku":"SKU-{:05}","qty":{},"unit_price_cents":{}}},{{"sku":"SKU-{:05}","qty":{},"unit_price_cents":{}}}]}}"#,
                rng.next() % 50_000,
                rng.pick(&["EUR", "USD", "GBP", "SEK"]),
                rng.pick(&["web", "ios", "android", "store"]),
                rng.next() % 20_000,
                1 + rng.next() % 5,
                99 + rng.next() % 20_000,
                rng.next() % 20_000,
                1 + rng.next() % 5,
                99 + rng.next() % 20_000,
            ),
            1 => format!(
                r#"{{"type":"PaymentCaptured","order_id":"ord-{stream:06}","payment_id":"pay-{:016x}","amount_cents":{},"method":"{}","captured_at":{at}}}"#,
                rng.next(),
                100 + rng.next() % 90_000,
                rng.pick(&["card", "paypal", "sepa", "klarna"]),
            ),
            2 => format!(
                r#"{{"type":"OrderShipped","order_id":"ord-{stream:06}","carrier":"{}","tracking":"{}{:010}","shipped_at":{at},"address":{{"street":"{} {}","city":"{}","postcode":"{:05}","country":"{}"}}}}"#,
                rng.pick(&["DHL", "UPS", "PostNL", "La Poste"]),
                rng.pick(&["JD", "1Z", "3S", "LP"]),
                rng.next() % 10_000_000_000,
                1 + rng.next() % 300,
                rng.pick(&[
                    "Main Street",
                    "Rue de la Paix",
                    "Hauptstrasse",
                    "Kungsgatan"
                ]),
                rng.pick(&["Berlin", "Lyon", "Porto", "Turku", "Graz", "Leeds"]),
                rng.next() % 100_000,
                rng.pick(&["DE", "FR", "PT", "FI", "AT", "GB"]),
            ),
            _ => format!(
                r#"{{"type":"ItemReturned","order_id":"ord-{stream:06}","sku":"SKU-{:05}","qty":1,"reason":"{}","refund_cents":{},"at":{at}}}"#,
                rng.next() % 20_000,
                rng.pick(&["damaged", "wrong size", "not as described", "changed mind"]),
                99 + rng.next() % 20_000,
            ),
        }
    } else {
        match rng.next() % 3 {
            0 => format!(
                r#"{{"type":"AccountOpened","account_id":"acc-{stream:06}","owner":{{"name":"{} {}","email":"user{:06}@example.com"}},"plan":"{}","opened_at":{at}}}"#,
                rng.pick(&["Ada", "Alan", "Grace", "Linus", "Margaret", "Ken"]),
                rng.pick(&[
                    "Lovelace", "Turing", "Hopper", "Torvalds", "Hamilton", "Thompson"
                ]),
                rng.next() % 1_000_000,
                rng.pick(&["free", "pro", "team", "enterprise"]),
            ),
            1 => format!(
                r#"{{"type":"FundsDeposited","account_id":"acc-{stream:06}","amount_cents":{},"balance_cents":{},"source":"{}","at":{at}}}"#,
                rng.next() % 500_000,
                rng.next() % 5_000_000,
                rng.pick(&["transfer", "card", "cash"]),
            ),
            _ => format!(
                r#"{{"type":"FundsWithdrawn","account_id":"acc-{stream:06}","amount_cents":{},"balance_cents":{},"reference":"{:08x}-{:04x}","at":{at}}}"#,
                rng.next() % 200_000,
                rng.next() % 5_000_000,
                rng.next() % (1 << 32),
                rng.next() % (1 << 16),
            ),
        }
    };
    json.into_bytes()
}

/// The W6 stream.
const AGGREGATE_STREAM: &str = "aggregate";

/// The W6 state: events folded and the sum of their versions, 8 bytes each (LE).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Folded {
    events: u64,
    version_sum: u64,
}

impl Folded {
    fn apply(&mut self, e: Seen<'_>) {
        self.events += 1;
        self.version_sum = self.version_sum.wrapping_add(e.version);
        std::hint::black_box(e.data);
    }
    fn encode(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.events.to_le_bytes());
        b[8..].copy_from_slice(&self.version_sum.to_le_bytes());
        b
    }
    fn decode(b: &[u8]) -> anyhow::Result<Folded> {
        let word = |at: usize| -> anyhow::Result<u64> {
            let mut w = [0u8; 8];
            w.copy_from_slice(
                b.get(at..at + 8)
                    .ok_or_else(|| anyhow::anyhow!("short W6 state"))?,
            );
            Ok(u64::from_le_bytes(w))
        };
        Ok(Folded {
            events: word(0)?,
            version_sum: word(8)?,
        })
    }
}

/// W6: builds a stream of --aggregate-events events with a snapshot every
/// --snapshot-every, reopens, and times loads (latest snapshot + the events after it); µs.
fn aggregate(peer: &Peer, args: &Args, dir: &Path) -> anyhow::Result<f64> {
    let payload = payload(args.event_size);
    let engine = (peer.open)(dir, Mode::Buffered)?;
    let mut state = Folded::default();
    let mut version = 0u64;
    let mut batch: Vec<&[u8]> = Vec::new();
    while version < args.aggregate_events {
        let n = args.batch.min(args.aggregate_events - version);
        batch.clear();
        batch.extend((0..n).map(|_| payload.as_slice()));
        engine.append(AGGREGATE_STREAM, &batch)?;
        for v in version..version + n {
            state.apply(Seen {
                version: v,
                data: &payload,
            });
        }
        version += n;
        if version.is_multiple_of(args.snapshot_every) {
            engine.save_snapshot(AGGREGATE_STREAM, version - 1, &state.encode())?;
        }
    }
    engine.sync()?;
    engine.close()?;
    let engine = (peer.open)(dir, Mode::Buffered)?;
    let load = || -> anyhow::Result<Folded> {
        let (from, mut folded) = match engine.latest_snapshot(AGGREGATE_STREAM)? {
            Some((v, s)) => (v + 1, Folded::decode(&s)?),
            None => (0, Folded::default()),
        };
        engine.read_stream(AGGREGATE_STREAM, from, &mut |e| folded.apply(e))?;
        Ok(folded)
    };
    anyhow::ensure!(
        load()? == state,
        "the loaded aggregate differs from the one built"
    );
    let mut times = (0..args.reads.max(1))
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(load()?);
            Ok(us(t.elapsed()))
        })
        .collect::<anyhow::Result<Vec<f64>>>()?;
    engine.close()?;
    let _ = std::fs::remove_dir_all(dir);
    Ok(median(&mut times))
}

fn read_target(engine: &dyn Engine, args: &Args) -> anyhow::Result<()> {
    let mut expect = 0u64;
    let mut ok = true;
    let n = engine.read_stream(TARGET_STREAM, 0, &mut |e: Seen<'_>| {
        ok &= e.version == expect && e.data.len() == args.event_size;
        expect += 1;
        std::hint::black_box(e.data);
    })?;
    anyhow::ensure!(
        ok && n == args.target_events,
        "read {n} events of {TARGET_STREAM}, expected {} in order",
        args.target_events
    );
    Ok(())
}

fn scan_all(engine: &dyn Engine, total: u64) -> anyhow::Result<()> {
    let mut bytes = 0u64;
    let n = engine.scan(&mut |e: Seen<'_>| {
        bytes += e.data.len() as u64;
        std::hint::black_box(e.data);
    })?;
    anyhow::ensure!(n == total, "scan saw {n} events, expected {total}");
    std::hint::black_box(bytes);
    Ok(())
}

/// W2: `appends` single-event durable appends by `writers` threads, writer `w` appending
/// to stream `writer-w`; appends/s.
fn durable_appends(
    peer: &Peer,
    dir: &Path,
    event_size: usize,
    appends: u64,
    writers: u64,
) -> anyhow::Result<f64> {
    let engine = (peer.open)(dir, Mode::Durable)?;
    let data = payload(event_size);
    let next = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|s| -> anyhow::Result<()> {
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                let (engine, data, next) = (&*engine, &data, &next);
                s.spawn(move || -> anyhow::Result<()> {
                    let stream = format!("writer-{w}");
                    while next.fetch_add(1, Ordering::Relaxed) < appends {
                        engine.append(&stream, &[data.as_slice()])?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("a writer panicked"))??;
        }
        Ok(())
    })?;
    let elapsed = start.elapsed();
    engine.close()?;
    let _ = std::fs::remove_dir_all(dir);
    Ok(per_s(appends, elapsed))
}

/// Incompressible event data (xorshift bytes), so engines that compress (fjall) store and
/// read as many bytes as the others.
fn payload(len: usize) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}

fn per_s(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Drops the page cache (needs root and a writable /proc/sys).
fn drop_caches() -> anyhow::Result<()> {
    let status = std::process::Command::new("sync").status()?;
    anyhow::ensure!(status.success(), "sync failed");
    std::fs::write("/proc/sys/vm/drop_caches", "3")?;
    Ok(())
}

/// Copies `from` into `to` and writes the copy to disk (every file and directory synced),
/// as a crash image is: the engine's files as they were, on the disk a restarted machine
/// reads. Unsynced, the copy's pages would still be dirty in the page cache, and an engine
/// that syncs its files at open (as streamlog does after an unclean shutdown under
/// `Durability::Sync`, so that its readers see the whole durable log) would be timed
/// writing back the bench's own copy.
fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let target = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &target)?;
        } else {
            std::fs::copy(e.path(), &target)?;
            std::fs::File::open(&target)?.sync_all()?;
        }
    }
    std::fs::File::open(to)?.sync_all()?;
    Ok(())
}

/// Bytes allocated on disk (sparse files count what they use).
fn dir_size(dir: &Path) -> anyhow::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let m = e.metadata()?;
        total += if m.is_dir() {
            dir_size(&e.path())?
        } else {
            m.blocks() * 512
        };
    }
    Ok(total)
}
