//! sled 0.34: one tree of stream keys and commit-order keys, one batch per append.

use std::path::Path;

use crate::engine::{
    Engine, Mode, Peer, Seen, Sequencer, decode_snapshot, encode_snapshot, encode_value,
    position_key, snapshot_key, stream_key, stream_range, visit_by_position, visit_stream,
};

pub const PEER: Peer = Peer {
    name: "sled",
    open,
    buffered_label: "buffered (apply_batch)",
    durable_label: "not durable (apply_batch + Db::flush per append; sled 0.34 beta, no crash guarantee)",
    stream_read_note: None,
    scan_note: Some("commit-order keys, one lookup per event"),
    crash_copy: true,
    note: None,
};

struct Sled {
    db: sled::Db,
    mode: Mode,
    seq: Sequencer,
}

fn open(dir: &Path, mode: Mode) -> anyhow::Result<Box<dyn Engine>> {
    let db = sled::Config::new().path(dir).open()?;
    Ok(Box::new(Sled {
        db,
        mode,
        seq: Sequencer::default(),
    }))
}

impl Engine for Sled {
    fn append(&self, stream: &str, events: &[&[u8]]) -> anyhow::Result<()> {
        let mut batch = sled::Batch::default();
        let (version, position) = self.seq.assign(stream, events.len() as u64);
        for (i, d) in events.iter().enumerate() {
            let i = i as u64;
            let key = stream_key(stream, version + i);
            batch.insert(key.clone(), encode_value(position + i, d));
            batch.insert(&position_key(position + i)[..], key);
        }
        self.db.apply_batch(batch)?;
        if self.mode == Mode::Durable {
            self.db.flush()?;
        }
        Ok(())
    }

    fn read_stream(
        &self,
        stream: &str,
        from: u64,
        f: &mut dyn FnMut(Seen<'_>),
    ) -> anyhow::Result<u64> {
        let (start, end) = stream_range(stream, from);
        visit_stream(self.db.range(start..end), f)
    }

    fn save_snapshot(&self, stream: &str, version: u64, state: &[u8]) -> anyhow::Result<()> {
        self.db
            .insert(snapshot_key(stream), encode_snapshot(version, state))?;
        if self.mode == Mode::Durable {
            self.db.flush()?;
        }
        Ok(())
    }

    fn latest_snapshot(&self, stream: &str) -> anyhow::Result<Option<(u64, Vec<u8>)>> {
        let v = self.db.get(snapshot_key(stream))?;
        v.map(|v| decode_snapshot(&v)).transpose()
    }

    fn scan(&self, f: &mut dyn FnMut(Seen<'_>)) -> anyhow::Result<u64> {
        visit_by_position(self.db.scan_prefix(b"P"), |key| Ok(self.db.get(key)?), f)
    }

    fn sync(&self) -> anyhow::Result<()> {
        self.db.flush()?;
        Ok(())
    }

    fn close(self: Box<Self>) -> anyhow::Result<()> {
        self.db.flush()?;
        drop(self);
        Ok(())
    }
}
