//! okaywal: a write-ahead log; one entry (one chunk of encoded records) per append.
//!
//! okaywal is a write-ahead log for another store: recovery hands each entry to the
//! `LogManager` and then checkpoints it away, and there is no read-back API after a
//! reopen. So it takes part in the append and open workloads only; `scan` below reads
//! chunks back by position within one session and is not used by the harness.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use okaywal::{
    Configuration, Entry, EntryId, LogManager, LogPosition, ReadChunkResult, SegmentReader,
    WriteAheadLog,
};
use parking_lot::Mutex;

use crate::engine::{Engine, Mode, Peer, Seen, Sequencer, decode_record, encode_record};

pub const PEER: Peer = Peer {
    name: "okaywal",
    open,
    buffered_label: "durable anyway (no buffered mode: every commit syncs)",
    durable_label: "durable (EntryWriter::commit syncs)",
    stream_read_note: Some("n/a: a log with no per-stream index"),
    scan_note: Some(
        "n/a: a WAL; recovery hands each entry to the manager once, then checkpoints it away (no read-back API)",
    ),
    crash_copy: true,
    note: Some(
        "okaywal is a write-ahead log in front of another store: after recovery it has handed its entries to the application and keeps no readable data or index, so its W5 figures are not comparable with stores that can serve reads once open.",
    ),
};

type Positions = Arc<Mutex<Vec<LogPosition>>>;

struct Okaywal {
    wal: WriteAheadLog,
    positions: Positions,
    seq: Sequencer,
}

/// Records where each recovered entry's chunks are; never checkpoints anything away.
#[derive(Debug)]
struct Manager {
    positions: Positions,
}

impl LogManager for Manager {
    fn recover(&mut self, entry: &mut Entry<'_>) -> std::io::Result<()> {
        loop {
            match entry.read_chunk()? {
                ReadChunkResult::Chunk(chunk) => {
                    self.positions.lock().push(chunk.log_position());
                    chunk.skip_remaining_bytes()?;
                }
                ReadChunkResult::EndOfEntry | ReadChunkResult::AbortedEntry => return Ok(()),
            }
        }
    }

    fn checkpoint_to(
        &mut self,
        _last_checkpointed_id: EntryId,
        _checkpointed_entries: &mut SegmentReader,
        _wal: &WriteAheadLog,
    ) -> std::io::Result<()> {
        Ok(())
    }
}

fn open(dir: &Path, _mode: Mode) -> anyhow::Result<Box<dyn Engine>> {
    let positions = Positions::default();
    let wal = Configuration::default_for(dir)
        .checkpoint_after_bytes(u64::MAX)
        .open(Manager {
            positions: Arc::clone(&positions),
        })?;
    Ok(Box::new(Okaywal {
        wal,
        positions,
        seq: Sequencer::default(),
    }))
}

impl Engine for Okaywal {
    fn append(&self, stream: &str, events: &[&[u8]]) -> anyhow::Result<()> {
        let (version, position) = self.seq.assign(stream, events.len() as u64);
        let mut buf = Vec::with_capacity(events.iter().map(|d| d.len() + 64).sum());
        for (i, d) in events.iter().enumerate() {
            let i = i as u64;
            encode_record(&mut buf, stream, version + i, position + i, d);
        }
        let mut entry = self.wal.begin_entry()?;
        let chunk = entry.write_chunk(&buf)?;
        entry.commit()?;
        self.positions.lock().push(chunk.position);
        Ok(())
    }

    fn read_stream(
        &self,
        _stream: &str,
        _from: u64,
        _f: &mut dyn FnMut(Seen<'_>),
    ) -> anyhow::Result<u64> {
        anyhow::bail!("okaywal has no per-stream read")
    }

    fn scan(&self, f: &mut dyn FnMut(Seen<'_>)) -> anyhow::Result<u64> {
        let positions = self.positions.lock().clone();
        let mut n = 0;
        let mut buf = Vec::new();
        for p in positions {
            buf.clear();
            self.wal.read_at(p)?.read_to_end(&mut buf)?;
            let mut rest = buf.as_slice();
            while !rest.is_empty() {
                let (r, tail) = decode_record(rest)?;
                f(Seen {
                    version: r.version,
                    data: r.data,
                });
                n += 1;
                rest = tail;
            }
        }
        Ok(n)
    }

    fn sync(&self) -> anyhow::Result<()> {
        Ok(())
    }

    fn close(self: Box<Self>) -> anyhow::Result<()> {
        let Okaywal { wal, .. } = *self;
        wal.shutdown()?;
        Ok(())
    }
}
