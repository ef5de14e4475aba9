//! fjall (LSM): one partition of stream keys and commit-order keys.

use std::path::Path;

use fjall::{Config, Keyspace, PartitionCreateOptions, PartitionHandle, PersistMode};

use crate::engine::{
    Engine, Mode, Peer, Seen, Sequencer, decode_snapshot, encode_snapshot, encode_value,
    position_key, snapshot_key, stream_key, stream_range, visit_by_position, visit_stream,
};

pub const PEER: Peer = Peer {
    name: "fjall",
    open,
    buffered_label: "buffered (journal to OS buffers)",
    durable_label: "durable (batch durability PersistMode::SyncData)",
    stream_read_note: None,
    scan_note: Some("commit-order keys, one lookup per event"),
    crash_copy: true,
    note: None,
};

struct Fjall {
    keyspace: Keyspace,
    events: PartitionHandle,
    mode: Mode,
    seq: Sequencer,
}

fn open(dir: &Path, mode: Mode) -> anyhow::Result<Box<dyn Engine>> {
    let keyspace = Config::new(dir).open()?;
    let events = keyspace.open_partition("events", PartitionCreateOptions::default())?;
    Ok(Box::new(Fjall {
        keyspace,
        events,
        mode,
        seq: Sequencer::default(),
    }))
}

impl Engine for Fjall {
    fn append(&self, stream: &str, events: &[&[u8]]) -> anyhow::Result<()> {
        let mut batch = self.keyspace.batch().durability(match self.mode {
            Mode::Buffered => None,
            Mode::Durable => Some(PersistMode::SyncData),
        });
        let (version, position) = self.seq.assign(stream, events.len() as u64);
        for (i, d) in events.iter().enumerate() {
            let i = i as u64;
            let key = stream_key(stream, version + i);
            batch.insert(&self.events, key.clone(), encode_value(position + i, d));
            batch.insert(&self.events, position_key(position + i), key);
        }
        batch.commit()?;
        Ok(())
    }

    fn read_stream(
        &self,
        stream: &str,
        from: u64,
        f: &mut dyn FnMut(Seen<'_>),
    ) -> anyhow::Result<u64> {
        let (start, end) = stream_range(stream, from);
        visit_stream(self.events.range(start..end), f)
    }

    fn save_snapshot(&self, stream: &str, version: u64, state: &[u8]) -> anyhow::Result<()> {
        self.events
            .insert(snapshot_key(stream), encode_snapshot(version, state))?;
        if self.mode == Mode::Durable {
            self.keyspace.persist(PersistMode::SyncData)?;
        }
        Ok(())
    }

    fn latest_snapshot(&self, stream: &str) -> anyhow::Result<Option<(u64, Vec<u8>)>> {
        let v = self.events.get(snapshot_key(stream))?;
        v.map(|v| decode_snapshot(&v)).transpose()
    }

    fn scan(&self, f: &mut dyn FnMut(Seen<'_>)) -> anyhow::Result<u64> {
        visit_by_position(self.events.prefix(b"P"), |key| Ok(self.events.get(key)?), f)
    }

    fn sync(&self) -> anyhow::Result<()> {
        Ok(self.keyspace.persist(PersistMode::SyncData)?)
    }

    fn compact(&self) -> anyhow::Result<&'static str> {
        self.events.rotate_memtable_and_wait()?;
        self.events.major_compact()?;
        self.keyspace.persist(PersistMode::SyncAll)?;
        Ok("memtable flushed, then a major compaction (`major_compact`)")
    }

    fn close(self: Box<Self>) -> anyhow::Result<()> {
        self.keyspace.persist(PersistMode::SyncAll)?;
        drop(self);
        Ok(())
    }
}
