//! RocksDB (opt-in feature `rocksdb`): stream keys and commit-order keys in the default
//! column family.

use std::path::Path;

use rocksdb::{DB, Direction, IteratorMode, Options, WriteBatch, WriteOptions};

use crate::engine::{
    Engine, Mode, Peer, Seen, Sequencer, encode_value, position_key, stream_key, stream_prefix,
    value_data, version_of_key,
};

pub const PEER: Peer = Peer {
    name: "RocksDB",
    open,
    buffered_label: "buffered (WAL, sync=false)",
    durable_label: "durable (WriteOptions::set_sync(true))",
    stream_read_note: None,
    scan_note: Some("commit-order keys, one lookup per event"),
    crash_copy: true,
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
        let mut n = 0;
        for kv in self
            .db
            .iterator(IteratorMode::From(&start, Direction::Forward))
        {
            let (k, v) = kv?;
            if !k.starts_with(&prefix) {
                break;
            }
            f(Seen {
                version: version_of_key(&k)?,
                data: value_data(&v)?,
            });
            n += 1;
        }
        Ok(n)
    }

    fn scan(&self, f: &mut dyn FnMut(Seen<'_>)) -> anyhow::Result<u64> {
        let mut n = 0;
        for kv in self
            .db
            .iterator(IteratorMode::From(b"P", Direction::Forward))
        {
            let (k, key) = kv?;
            if !k.starts_with(b"P") {
                break;
            }
            let v = self
                .db
                .get(&key)?
                .ok_or_else(|| anyhow::anyhow!("dangling position key"))?;
            f(Seen {
                version: version_of_key(&key)?,
                data: value_data(&v)?,
            });
            n += 1;
        }
        Ok(n)
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
