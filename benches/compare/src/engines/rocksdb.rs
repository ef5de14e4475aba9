//! RocksDB (the `rocksdb` feature, off by default; `benches/compare/rocksdb.sh` builds it
//! against Debian's RocksDB): stream keys, commit-order keys and snapshot records in the
//! default column family.

use std::path::Path;

use rocksdb::{DB, Direction, IteratorMode, Options, WriteBatch, WriteOptions};

use crate::engine::{
    Engine, Mode, Peer, Seen, Sequencer, decode_snapshot, encode_snapshot, encode_value,
    position_key, snapshot_key, stream_key, stream_prefix, visit_by_position, visit_stream,
};

pub const PEER: Peer = Peer {
    name: "RocksDB",
    open,
    buffered_label: "buffered (WAL, sync=false)",
    durable_label: "durable (WriteOptions::set_sync(true))",
    stream_read_note: None,
    scan_note: Some("commit-order keys, one lookup per event"),
    crash_copy: true,
    note: None,
};

struct Rocks {
    db: DB,
    mode: Mode,
    seq: Sequencer,
}

fn open(dir: &Path, mode: Mode) -> anyhow::Result<Box<dyn Engine>> {
    let mut options = Options::default();
    options.create_if_missing(true);
    let db = DB::open(&options, dir)?;
    Ok(Box::new(Rocks {
        db,
        mode,
        seq: Sequencer::default(),
    }))
}

impl Engine for Rocks {
    fn append(&self, stream: &str, events: &[&[u8]]) -> anyhow::Result<()> {
        let (version, position) = self.seq.assign(stream, events.len() as u64);
        let mut batch = WriteBatch::default();
        for (i, d) in events.iter().enumerate() {
            let i = i as u64;
            let key = stream_key(stream, version + i);
            batch.put(&key, encode_value(position + i, d));
            batch.put(position_key(position + i), &key);
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(self.mode == Mode::Durable);
        self.db.write_opt(batch, &wo)?;
        Ok(())
    }

    fn read_stream(
        &self,
        stream: &str,
        from: u64,
        f: &mut dyn FnMut(Seen<'_>),
    ) -> anyhow::Result<u64> {
        let prefix = stream_prefix(stream);
        let start = stream_key(stream, from);
        let kvs = self
            .db
            .iterator(IteratorMode::From(&start, Direction::Forward))
            .take_while(|kv| !matches!(kv, Ok((k, _)) if !k.starts_with(&prefix)));
        visit_stream(kvs, f)
    }

    fn save_snapshot(&self, stream: &str, version: u64, state: &[u8]) -> anyhow::Result<()> {
        let mut wo = WriteOptions::default();
        wo.set_sync(self.mode == Mode::Durable);
        self.db
            .put_opt(snapshot_key(stream), encode_snapshot(version, state), &wo)?;
        Ok(())
    }

    fn latest_snapshot(&self, stream: &str) -> anyhow::Result<Option<(u64, Vec<u8>)>> {
        let v = self.db.get(snapshot_key(stream))?;
        v.map(|v| decode_snapshot(&v)).transpose()
    }

    fn scan(&self, f: &mut dyn FnMut(Seen<'_>)) -> anyhow::Result<u64> {
        let positions = self
            .db
            .iterator(IteratorMode::From(b"P", Direction::Forward))
            .take_while(|kv| !matches!(kv, Ok((k, _)) if !k.starts_with(b"P")));
        visit_by_position(positions, |key| Ok(self.db.get(key)?), f)
    }

    fn sync(&self) -> anyhow::Result<()> {
        Ok(self.db.flush_wal(true)?)
    }

    fn close(self: Box<Self>) -> anyhow::Result<()> {
        self.db.flush_wal(true)?;
        drop(self);
        Ok(())
    }
}
