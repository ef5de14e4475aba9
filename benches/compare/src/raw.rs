//! The physical baseline: plain files, written and read with plain system calls.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// Writes `total_bytes` in writes of `write_bytes`, then one `fdatasync`; returns the time.
pub fn write_then_sync(
    path: &Path,
    total_bytes: u64,
    write_bytes: usize,
) -> anyhow::Result<Duration> {
    let buf = pattern(write_bytes);
    let mut file = File::create(path)?;
    let start = Instant::now();
    let mut left = total_bytes;
    while left > 0 {
        let n = left.min(write_bytes as u64) as usize;
        file.write_all(buf.get(..n).unwrap_or(&buf))?;
        left -= n as u64;
    }
    file.sync_data()?;
    Ok(start.elapsed())
}

/// `appends` writes of `write_bytes`, each followed by `fdatasync`; returns the time.
pub fn write_sync_each(path: &Path, appends: u64, write_bytes: usize) -> anyhow::Result<Duration> {
    let buf = pattern(write_bytes);
    // Preallocated and synced before the clock starts, as log engines do with their
    // segments: each fdatasync then flushes data only, with no file-size change to journal.
    let mut file = File::create(path)?;
    file.write_all(&vec![0u8; (appends as usize).saturating_mul(write_bytes)])?;
    file.sync_all()?;
    file.seek(SeekFrom::Start(0))?;
    let start = Instant::now();
    for _ in 0..appends {
        file.write_all(&buf)?;
        file.sync_data()?;
    }
    Ok(start.elapsed())
}

/// Reads the whole file sequentially in 1 MiB reads; returns the time and the bytes read.
pub fn read_sequential(path: &Path) -> anyhow::Result<(Duration, u64)> {
    let mut buf = vec![0u8; 1 << 20];
    let start = Instant::now();
    let mut file = File::open(path)?;
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        std::hint::black_box(&buf);
    }
    Ok((start.elapsed(), total))
}

/// Reads `len` contiguous bytes at `offset` (one stream's events stored together: the
/// least a per-stream read must fetch); returns the time.
pub fn read_range(path: &Path, offset: u64, len: usize) -> anyhow::Result<Duration> {
    let mut buf = vec![0u8; len];
    let start = Instant::now();
    let file = File::open(path)?;
    file.read_exact_at(&mut buf, offset)?;
    std::hint::black_box(&buf);
    Ok(start.elapsed())
}

/// Opens a file and reads its first 4 KiB (what any store must do at least to open).
pub fn open_file(path: &Path) -> anyhow::Result<Duration> {
    let mut buf = [0u8; 4096];
    let start = Instant::now();
    let file = File::open(path)?;
    let _ = file.read_at(&mut buf, 0)?;
    std::hint::black_box(&buf);
    Ok(start.elapsed())
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| b"0123456789abcdefghijklmnopqrstuvwxyz"[i % 36])
        .collect()
}
