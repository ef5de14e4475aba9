//! redb: one table of stream keys and commit-order keys (see `engine::stream_key`).

use std::path::Path;

use redb::{Database, Durability, ReadableDatabase, TableDefinition};

use crate::engine::{
    Engine, Mode, Peer, Seen, Sequencer, decode_snapshot, encode_snapshot, encode_value,
    position_key, snapshot_key, stream_key, stream_range, value_data, version_of_key,
};

pub const PEER: Peer = Peer {
    name: "redb",
    open,
    buffered_label: "buffered (Durability::None)",
    durable_label: "durable (Durability::Immediate)",
    stream_read_note: None,
    scan_note: Some("commit-order keys, one lookup per event"),
    crash_copy: true,
    note: None,
};

const EVENTS: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("events");

struct Redb {
    db: Database,
    mode: Mode,
    seq: Sequencer,
}

fn open(dir: &Path, mode: Mode) -> anyhow::Result<Box<dyn Engine>> {
    std::fs::create_dir_all(dir)?;
    let db = Database::create(dir.join("events.redb"))?;
    let txn = db.begin_write()?;
    txn.open_table(EVENTS)?;
    txn.commit()?;
    Ok(Box::new(Redb {
        db,
        mode,
        seq: Sequencer::default(),
    }))
}

impl Engine for Redb {
    fn append(&self, stream: &str, events: &[&[u8]]) -> anyhow::Result<()> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(match self.mode {
            Mode::Buffered => Durability::None,
            Mode::Durable => Durability::Immediate,
        })?;
        {
            let mut t = txn.open_table(EVENTS)?;
            let (version, position) = self.seq.assign(stream, events.len() as u64);
            for (i, d) in events.iter().enumerate() {
                let i = i as u64;
                let key = stream_key(stream, version + i);
                t.insert(key.as_slice(), encode_value(position + i, d).as_slice())?;
                t.insert(position_key(position + i).as_slice(), key.as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    fn read_stream(
        &self,
        stream: &str,
        from: u64,
        f: &mut dyn FnMut(Seen<'_>),
    ) -> anyhow::Result<u64> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(EVENTS)?;
        let (start, end) = stream_range(stream, from);
        let mut n = 0;
        for kv in t.range(start.as_slice()..end.as_slice())? {
            let (k, v) = kv?;
            f(Seen {
                version: version_of_key(k.value())?,
                data: value_data(v.value())?,
            });
            n += 1;
        }
        Ok(n)
    }

    fn scan(&self, f: &mut dyn FnMut(Seen<'_>)) -> anyhow::Result<u64> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(EVENTS)?;
        let mut n = 0;
        for kv in t.range(&b"P"[..]..&b"Q"[..])? {
            let (_, key) = kv?;
            let v = t
                .get(key.value())?
                .ok_or_else(|| anyhow::anyhow!("dangling position key"))?;
            f(Seen {
                version: version_of_key(key.value())?,
                data: value_data(v.value())?,
            });
            n += 1;
        }
        Ok(n)
    }

    fn save_snapshot(&self, stream: &str, version: u64, state: &[u8]) -> anyhow::Result<()> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(match self.mode {
            Mode::Buffered => Durability::None,
            Mode::Durable => Durability::Immediate,
        })?;
        txn.open_table(EVENTS)?.insert(
            snapshot_key(stream).as_slice(),
            encode_snapshot(version, state).as_slice(),
        )?;
        txn.commit()?;
        Ok(())
    }

    fn latest_snapshot(&self, stream: &str) -> anyhow::Result<Option<(u64, Vec<u8>)>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(EVENTS)?;
        let v = t.get(snapshot_key(stream).as_slice())?;
        v.map(|v| decode_snapshot(v.value())).transpose()
    }

    fn sync(&self) -> anyhow::Result<()> {
        // An Immediate commit makes the earlier Durability::None commits durable too.
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        txn.commit()?;
        Ok(())
    }

    fn close(self: Box<Self>) -> anyhow::Result<()> {
        drop(self);
        Ok(())
    }
}
