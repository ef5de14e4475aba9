//! Scavenge costs, measured in one run: `cargo bench --bench scavenge` (or `-- a`, `-- b`,
//! `-- c` for one part). Sizes: `STREAMLOG_BENCH_EVENTS` (default 400,000 events).
//!
//! (a) Throughput: a store of realistic JSON order events (varied fields, ~200-300 bytes)
//!     in which half the streams are deleted; the scavenge's input MB/s (logical bytes of
//!     the segments it read) against a raw sequential copy of the same segment files
//!     (read + write + fdatasync of each, page cache warm for both; timed right before
//!     and right after the scavenge, both together), and the ratio.
//! (b) Appends while a scavenge runs: buffered appends of one event by 4 threads for a
//!     fixed time, alone and while a scavenge of the (a) store runs beside them; the ratio.
//! (c) Bytes on disk and reads: the same store before and after `scavenge` with
//!     `compress_all` (nothing deleted): bytes of segment files per event; then a warm
//!     and a cold (page cache dropped with `posix_fadvise(DONTNEED)` on every file) read of
//!     one 1,000-event stream, compressed against uncompressed, and the ratio.
//! (d) Dictionary options, on the first segment of a store of the same events (format 5's
//!     codec, `CompactWriter::with_dictionary`): a raw-content dictionary (16 KiB of kept
//!     frames sampled evenly) against zstd's trainer on the same sample
//!     (`DictionarySampler::finish`), for blocks of 512 B, 1, 2 and 16 KiB of frames at
//!     level 3, the trained one at levels 1 and 2 on 512 B blocks, and zstd without a
//!     dictionary on 16 KiB blocks (format 4's codec): bytes of the file
//!     against the frames', time to make the dictionary, MB/s of frames written, mean time
//!     to decode one block (`decode_block`, as a point read does).
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use streamlog::io::sim::SplitMix64 as Rng;
use streamlog::{Durability, ExpectedVersion, NewEvent, Options, ScavengeOptions, Store};

fn events() -> u64 {
    std::env::var("STREAMLOG_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400_000)
}

fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir.join("segments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

fn segment_bytes(dir: &Path) -> u64 {
    files(dir)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

fn options() -> Options {
    Options::default()
        .with_durability(Durability::Buffered)
        .with_segment_size_bytes(16 << 20)
}

/// An order event with varied fields, as JSON.
fn order(rng: &mut Rng, n: u64) -> NewEvent {
    let kinds = [
        "OrderPlaced",
        "ItemAdded",
        "ItemRemoved",
        "PaymentTaken",
        "OrderShipped",
    ];
    let kind = kinds[(rng.next_u64() % kinds.len() as u64) as usize];
    let data = format!(
        "{{\"order_id\":\"ord-{n:08}\",\"customer\":\"cust-{:05}\",\"sku\":\"SKU-{:04}\",\"qty\":{},\"price_cents\":{},\"currency\":\"EUR\",\"address\":{{\"city\":\"{}\",\"zip\":\"{:05}\"}},\"note\":\"{}\"}}",
        rng.next_u64() % 20_000,
        rng.next_u64() % 5_000,
        1 + rng.next_u64() % 9,
        rng.next_u64() % 100_000,
        ["Berlin", "Lyon", "Porto", "Turku", "Graz"][(rng.next_u64() % 5) as usize],
        rng.next_u64() % 100_000,
        ["gift", "", "leave at door", "fragile", ""][(rng.next_u64() % 5) as usize],
    );
    NewEvent::new(kind, data).with_metadata(format!(
        "{{\"correlation\":\"c-{}\"}}",
        rng.next_u64() % 1_000_000
    ))
}

/// A store of `n` order events over 2,000 streams (plus one 1,000-event stream `hot`).
fn build(dir: &Path, n: u64) {
    let store = Store::open_with(dir, options()).unwrap();
    let mut rng = Rng::new(7);
    for i in 0..n {
        let s = format!("order-{}", i % 2000);
        store
            .append(&s, ExpectedVersion::Any, [order(&mut rng, i)])
            .unwrap();
        if i % (n / 1000).max(1) == 0 {
            store
                .append("hot", ExpectedVersion::Any, [order(&mut rng, i)])
                .unwrap();
        }
    }
    store.close().unwrap();
}

/// Raw sequential copy of the segment files: read each whole, write it, fdatasync.
fn raw_copy(dir: &Path, to: &Path) -> (u64, Duration) {
    // Into `to/segments`, so that a copy can be copied again.
    let to = &to.join("segments");
    std::fs::create_dir_all(to).unwrap();
    let start = Instant::now();
    let mut bytes = 0u64;
    for p in files(dir) {
        let data = std::fs::read(&p).unwrap();
        bytes += data.len() as u64;
        let f = std::fs::File::create(to.join(p.file_name().unwrap())).unwrap();
        std::io::Write::write_all(&mut &f, &data).unwrap();
        f.sync_data().unwrap();
    }
    (bytes, start.elapsed())
}

fn part_a(tmp: &Path) {
    let dir = tmp.join("a");
    build(&dir, events());
    let store = Store::open_with(&dir, options()).unwrap();
    for i in (0..2000).step_by(2) {
        store
            .delete_stream(&format!("order-{i}"), ExpectedVersion::Any)
            .unwrap();
    }
    let logical = segment_bytes(&dir);
    // Warm the page cache for both.
    for p in files(&dir) {
        std::fs::read(p).unwrap();
    }
    // The copy is timed right before and right after the scavenge (the second one of the
    // first one's files: the same bytes, in the page cache), and the scavenge is compared
    // with both together: one copy's speed swings with the disk's write-back.
    let (copied, before) = raw_copy(&dir, &tmp.join("a-copy"));
    let start = Instant::now();
    let report = store.scavenge(&ScavengeOptions::default()).unwrap();
    let scavenge_time = start.elapsed();
    let (copied_again, after) = raw_copy(&tmp.join("a-copy"), &tmp.join("a-copy-2"));
    let mbs = |bytes: u64, time: Duration| bytes as f64 / time.as_secs_f64() / 1e6;
    let copy_mbs = mbs(copied + copied_again, before + after);
    let scav_mbs = mbs(logical, scavenge_time);
    println!(
        "(a) scavenge of {} MB ({} events, half the streams deleted): {:.1} MB/s of input; raw copy {:.1} MB/s (before {:.1}, after {:.1}); ratio {:.2}; {} -> {} bytes, {} events removed",
        logical / 1_000_000,
        events(),
        scav_mbs,
        copy_mbs,
        mbs(copied, before),
        mbs(copied_again, after),
        scav_mbs / copy_mbs,
        report.bytes_before,
        report.bytes_after,
        report.events_removed
    );
    store.close().unwrap();
}

fn appends_for(store: &Store, run: Duration) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..4)
        .map(|w| {
            let (store, stop, done) = (store.clone(), Arc::clone(&stop), Arc::clone(&done));
            thread::spawn(move || {
                let mut rng = Rng::new(w);
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    store
                        .append(
                            &format!("live-{w}"),
                            ExpectedVersion::Any,
                            [order(&mut rng, n)],
                        )
                        .unwrap();
                    n += 1;
                }
                done.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();
    thread::sleep(run);
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

fn part_b(tmp: &Path) {
    let dir = tmp.join("b");
    build(&dir, events());
    let store = Store::open_with(&dir, options()).unwrap();
    let alone = appends_for(&store, Duration::from_secs(3));
    for i in (0..2000).step_by(2) {
        store
            .delete_stream(&format!("order-{i}"), ExpectedVersion::Any)
            .unwrap();
    }
    let scavenger = {
        let store = store.clone();
        thread::spawn(move || {
            let start = Instant::now();
            store.scavenge(&ScavengeOptions::default()).unwrap();
            start.elapsed()
        })
    };
    let during = appends_for(&store, Duration::from_secs(3));
    let took = scavenger.join().unwrap();
    println!(
        "(b) appends/s by 4 threads: alone {alone:.0}, while a scavenge runs {during:.0}; ratio {:.2} (the scavenge took {:.1} s)",
        during / alone,
        took.as_secs_f64()
    );
    store.close().unwrap();
}

/// Mean time to read the stream `hot` whole, over `rounds` reads (cold: caches dropped
/// before each).
fn read_hot(dir: &Path, cold: bool, rounds: u32) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..rounds {
        let store = Store::open_with(dir, options().with_frame_cache_bytes(0)).unwrap();
        if cold {
            drop_cache(dir);
        } else {
            let _ = store.read_stream("hot", 0).unwrap().count();
        }
        let start = Instant::now();
        let n = store.read_stream("hot", 0).unwrap().count();
        total += start.elapsed();
        assert!(n >= 1000);
    }
    total / rounds
}

fn drop_cache(dir: &Path) {
    #[cfg(target_os = "linux")]
    for p in files(dir) {
        let f = std::fs::File::open(&p).unwrap();
        let _ = rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = dir;
}

fn part_c(tmp: &Path) {
    let plain = tmp.join("c-plain");
    build(&plain, events());
    let compressed = tmp.join("c-zstd");
    build(&compressed, events());
    let store = Store::open_with(&compressed, options()).unwrap();
    store
        .scavenge(&ScavengeOptions::default().with_compress_all(true))
        .unwrap();
    store.close().unwrap();
    let n = events() + 1000;
    let (before, after) = (segment_bytes(&plain), segment_bytes(&compressed));
    println!(
        "(c) bytes of segment files: {} events, uncompressed {} ({:.0} B/event), compressed {} ({:.0} B/event); ratio {:.3}",
        n,
        before,
        before as f64 / n as f64,
        after,
        after as f64 / n as f64,
        after as f64 / before as f64
    );
    for cold in [false, true] {
        let rounds = if cold { 5 } else { 50 };
        let p = read_hot(&plain, cold, rounds);
        let c = read_hot(&compressed, cold, rounds);
        println!(
            "(c) {} read of a 1,000-event stream: uncompressed {:.2} ms, compressed {:.2} ms; ratio {:.2}",
            if cold { "cold" } else { "warm" },
            p.as_secs_f64() * 1e3,
            c.as_secs_f64() * 1e3,
            c.as_secs_f64() / p.as_secs_f64()
        );
    }
}

/// The events frames of a segment file, in order.
fn segment_frames(bytes: &[u8]) -> Vec<(u64, &[u8])> {
    let mut out = Vec::new();
    let mut offset = 32;
    while let Ok(h) = streamlog::format::decode_frame_header(&bytes[offset..]) {
        let len = h.frame_len() as usize;
        if h.kind == streamlog::format::FrameKind::Events {
            out.push((h.position, &bytes[offset..offset + len]));
        }
        offset += len;
    }
    out
}

/// Bytes, write time and mean decode time per block of a rewritten segment of `frames`.
fn write_and_decode(
    frames: &[(u64, &[u8])],
    end: u64,
    dictionary: Option<&[u8]>,
    target: usize,
    level: i32,
) -> (usize, Duration, Duration) {
    use streamlog::format::compact::{self, CompactWriter, Dictionary};
    let start = Instant::now();
    let bytes = match dictionary {
        Some(d) => {
            let version = streamlog::format::FORMAT_VERSION;
            let mut w = CompactWriter::with_dictionary(0, version, level, d, target);
            for (p, f) in frames {
                w.push_frame(*p, f);
            }
            w.finish(end, &[])
        }
        // Format 4's codec: zstd per 16 KiB block, no dictionary, a context per block.
        None => {
            let mut blocks = Vec::new();
            let mut pending = Vec::new();
            let mut len = 0;
            for (i, (_, f)) in frames.iter().enumerate() {
                pending.extend_from_slice(f);
                let next = frames.get(i + 1).map_or(usize::MAX, |(_, n)| n.len());
                if pending.len() + next > target {
                    let c = zstd::bulk::compress(&pending, 3).unwrap();
                    let mut block = Vec::new();
                    compact::encode_block(
                        &mut block,
                        compact::Codec::Zstd,
                        &c,
                        pending.len() as u32,
                    );
                    len += block.len() + compact::BLOCK_MAP_RECORD_LEN;
                    blocks.push(block);
                    pending.clear();
                }
            }
            let wrote = start.elapsed();
            let start = Instant::now();
            for b in &blocks {
                let (codec, stored_len, raw_len, crc) =
                    compact::decode_block_header(&b[..compact::BLOCK_HEADER_LEN]).unwrap();
                let stored = &b[compact::BLOCK_HEADER_LEN..][..stored_len as usize];
                std::hint::black_box(
                    compact::decode_block(codec, stored, raw_len, crc, None).unwrap(),
                );
            }
            return (len, wrote, start.elapsed() / blocks.len() as u32);
        }
    };
    let wrote = start.elapsed();
    let len = bytes.len();
    let footer = compact::decode_footer(
        &bytes[len - compact::FOOTER_LEN..],
        0,
        len as u64,
        streamlog::format::FORMAT_VERSION,
    )
    .unwrap();
    let (blocks, _) = compact::decode_tables(
        &bytes[footer.map_offset as usize..len - compact::FOOTER_LEN],
        &footer,
        0,
    )
    .unwrap();
    let dict = (footer.dictionary_len > 0).then(|| {
        Dictionary::decode(&bytes[32..32 + footer.dictionary_len as usize], &footer).unwrap()
    });
    let start = Instant::now();
    let rounds = 3;
    for _ in 0..rounds {
        for b in &blocks {
            let at = b.file_offset as usize;
            let raw = compact::decode_block_at(b, &bytes[at..], dict.as_ref()).unwrap();
            std::hint::black_box(raw);
        }
    }
    (len, wrote, start.elapsed() / (rounds * blocks.len() as u32))
}

fn part_d(tmp: &Path) {
    use streamlog::format::compact::DictionarySampler;
    let dir = tmp.join("d");
    build(&dir, events().min(100_000));
    let seg = std::fs::read(&files(&dir)[0]).unwrap();
    let frames = segment_frames(&seg);
    let raw: usize = frames.iter().map(|(_, f)| f.len()).sum();
    let (first, end) = (frames[0].0, seg.len() as u64);
    let sampler = || {
        let mut s = DictionarySampler::new(first, end);
        for (p, f) in &frames {
            s.offer(*p, f);
        }
        s
    };
    // Raw content: the sampled frames themselves, evenly, up to 16 KiB (what the
    // sampler falls back to when the trainer cannot make a dictionary).
    let start = Instant::now();
    let mut raw_dict = Vec::new();
    // One frame in every `step`: about 16 KiB of them, spread over the segment.
    let step = (raw / (16 << 10)).max(1);
    for (_, f) in frames.iter().step_by(step) {
        if raw_dict.len() + f.len() > 16 << 10 {
            break;
        }
        raw_dict.extend_from_slice(f);
    }
    let raw_time = start.elapsed();
    let start = Instant::now();
    let trained = sampler().finish(3);
    let trained_time = start.elapsed();
    println!(
        "(d) dictionary options on one segment: {} frames, {} bytes; trained dictionary {} bytes",
        frames.len(),
        raw,
        trained.len()
    );
    let mut rows = vec![(
        "zstd, no dictionary (format 4)",
        None,
        Duration::ZERO,
        16 << 10,
        3,
    )];
    for target in [512, 1024, 2048, 16 << 10] {
        rows.push((
            "raw content 16 KiB",
            Some(&raw_dict[..]),
            raw_time,
            target,
            3,
        ));
        rows.push((
            "trained (zstd trainer)",
            Some(&trained[..]),
            trained_time,
            target,
            3,
        ));
    }
    // Faster levels, with the trained dictionary and the blocks scavenges write.
    for level in [1, 2] {
        rows.push((
            "trained (zstd trainer)",
            Some(&trained[..]),
            trained_time,
            512,
            level,
        ));
    }
    for (name, dict, dict_time, target, level) in rows {
        let (len, wrote, decode) = write_and_decode(&frames, end, dict, target, level);
        println!(
            "(d) {name:<30} level {level} blocks of {target:>5} B: bytes {:.3} of the frames; dictionary made in {:.1} ms; written at {:.0} MB/s; {:.2} us to decode a block",
            len as f64 / raw as f64,
            dict_time.as_secs_f64() * 1e3,
            raw as f64 / wrote.as_secs_f64() / 1e6,
            decode.as_secs_f64() * 1e6
        );
    }
}

fn main() {
    let part = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let tmp = tempfile::tempdir().unwrap();
    let run = |p: &str| part.as_deref().is_none_or(|x| x == p);
    if run("a") {
        part_a(tmp.path());
    }
    if run("b") {
        part_b(tmp.path());
    }
    if run("c") {
        part_c(tmp.path());
    }
    if run("d") {
        part_d(tmp.path());
    }
}
