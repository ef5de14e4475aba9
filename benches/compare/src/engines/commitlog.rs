//! commitlog 0.2: one message per event in a single log.
//!
//! Its `flush` is `File::flush` (a no-op for files) plus an msync of the index: there is no
//! fsync of the messages, so nothing it acknowledges is durable.

use std::path::Path;

use commitlog::message::{MessageBuf, MessageSet};
use commitlog::{CommitLog, LogOptions, ReadLimit};
use parking_lot::Mutex;

use crate::engine::{Engine, Mode, Peer, Seen, Sequencer, decode_record, encode_record};

pub const PEER: Peer = Peer {
    name: "commitlog",
    open,
    buffered_label: "not durable (no fsync at all)",
    durable_label: "not durable (flush per append; commitlog never fsyncs)",
    stream_read_note: Some("full scan filtered by stream (no per-stream index)"),
    scan_note: None,
    crash_copy: true,
    note: Some("commitlog has no per-stream index: its W3 is a full scan filtered by stream."),
};

/// How much one read of the log returns.
const READ_LIMIT_BYTES: usize = 1 << 20;

/// Receives (stream, version, data) of each record.
type RecordFn<'a> = dyn FnMut(&[u8], u64, &[u8]) + 'a;

struct Commitlog {
    log: Mutex<CommitLog>,
    mode: Mode,
    seq: Sequencer,
}

fn open(dir: &Path, mode: Mode) -> anyhow::Result<Box<dyn Engine>> {
    let log = CommitLog::new(LogOptions::new(dir))?;
    Ok(Box::new(Commitlog {
        log: Mutex::new(log),
        mode,
        seq: Sequencer::default(),
    }))
}

impl Commitlog {
    /// Calls `f` with every record in offset order.
    fn each(&self, f: &mut RecordFn<'_>) -> anyhow::Result<()> {
        let log = self.log.lock();
        let mut offset = 0;
        let end = log.next_offset();
        while offset < end {
            let msgs = log
                .read(offset, ReadLimit::max_bytes(READ_LIMIT_BYTES))
                .map_err(|e| anyhow::anyhow!("commitlog read: {e:?}"))?;
            let mut last = None;
            for m in msgs.iter() {
                let (r, _) = decode_record(m.payload())?;
                f(r.stream, r.version, r.data);
                last = Some(m.offset());
            }
            offset = match last {
                Some(o) => o + 1,
                None => anyhow::bail!("commitlog returned nothing at offset {offset}"),
            };
        }
        Ok(())
    }
}

impl Engine for Commitlog {
    fn append(&self, stream: &str, events: &[&[u8]]) -> anyhow::Result<()> {
        let mut log = self.log.lock();
        let (version, position) = self.seq.assign(stream, events.len() as u64);
        let mut msgs = MessageBuf::default();
        let mut rec = Vec::new();
        for (i, d) in events.iter().enumerate() {
            let i = i as u64;
            rec.clear();
            encode_record(&mut rec, stream, version + i, position + i, d);
            msgs.push(&rec)
                .map_err(|e| anyhow::anyhow!("commitlog message: {e:?}"))?;
        }
        log.append(&mut msgs)
            .map_err(|e| anyhow::anyhow!("commitlog append: {e:?}"))?;
        if self.mode == Mode::Durable {
            log.flush()?;
        }
        Ok(())
    }

    fn read_stream(
        &self,
        stream: &str,
        from: u64,
        f: &mut dyn FnMut(Seen<'_>),
    ) -> anyhow::Result<u64> {
        let mut n = 0;
        self.each(&mut |s, version, data| {
            if s == stream.as_bytes() && version >= from {
                f(Seen { version, data });
                n += 1;
            }
        })?;
        Ok(n)
    }

    fn scan(&self, f: &mut dyn FnMut(Seen<'_>)) -> anyhow::Result<u64> {
        let mut n = 0;
        self.each(&mut |_, version, data| {
            f(Seen { version, data });
            n += 1;
        })?;
        Ok(n)
    }

    fn sync(&self) -> anyhow::Result<()> {
        Ok(self.log.lock().flush()?)
    }

    fn close(self: Box<Self>) -> anyhow::Result<()> {
        self.log.lock().flush()?;
        drop(self);
        Ok(())
    }
}
