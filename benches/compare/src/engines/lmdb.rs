//! LMDB through heed: one database of stream keys and commit-order keys.

use std::ops::Bound;
use std::path::Path;

use heed::types::Bytes;
use heed::{Database, Env, EnvFlags, EnvOpenOptions};

use crate::engine::{
    Engine, Mode, Peer, Seen, Sequencer, decode_snapshot, encode_snapshot, encode_value,
    position_key, snapshot_key, stream_key, stream_range, visit_by_position, visit_stream,
};

pub const PEER: Peer = Peer {
    name: "LMDB (heed)",
    open,
    buffered_label: "buffered (MDB_NOSYNC)",
    durable_label: "durable (default: sync on commit)",
    stream_read_note: None,
    scan_note: Some("commit-order keys, one lookup per event"),
    crash_copy: true,
    note: None,
};

/// Upper bound of the memory map (sparse; only what is written takes disk space).
const MAP_SIZE_BYTES: usize = 32 << 30;

struct Lmdb {
    env: Env,
    db: Database<Bytes, Bytes>,
    seq: Sequencer,
}

#[allow(unsafe_code)]
fn open(dir: &Path, mode: Mode) -> anyhow::Result<Box<dyn Engine>> {
    std::fs::create_dir_all(dir)?;
    let mut options = EnvOpenOptions::new();
    options.map_size(MAP_SIZE_BYTES);
    if mode == Mode::Buffered {
        // SAFETY: MDB_NOSYNC only weakens durability (a machine crash may lose the last
        // commits); the harness syncs with `force_sync` before it counts anything as done.
        unsafe {
            options.flags(EnvFlags::NO_SYNC);
        }
    }
    // SAFETY: each directory is opened by one Env at a time in this process, and no other
    // process touches it while the benchmark runs.
    let env = unsafe { options.open(dir)? };
    let mut wtxn = env.write_txn()?;
    let db: Database<Bytes, Bytes> = env.create_database(&mut wtxn, None)?;
    wtxn.commit()?;
    Ok(Box::new(Lmdb {
        env,
        db,
        seq: Sequencer::default(),
    }))
}

impl Engine for Lmdb {
    fn append(&self, stream: &str, events: &[&[u8]]) -> anyhow::Result<()> {
        let mut wtxn = self.env.write_txn()?;
        let (version, position) = self.seq.assign(stream, events.len() as u64);
        for (i, d) in events.iter().enumerate() {
            let i = i as u64;
            let key = stream_key(stream, version + i);
            self.db
                .put(&mut wtxn, &key, &encode_value(position + i, d))?;
            self.db.put(&mut wtxn, &position_key(position + i), &key)?;
        }
        wtxn.commit()?;
        Ok(())
    }

    fn read_stream(
        &self,
        stream: &str,
        from: u64,
        f: &mut dyn FnMut(Seen<'_>),
    ) -> anyhow::Result<u64> {
        let rtxn = self.env.read_txn()?;
        let (start, end) = stream_range(stream, from);
        let range = (
            Bound::Included(start.as_slice()),
            Bound::Excluded(end.as_slice()),
        );
        visit_stream(self.db.range(&rtxn, &range)?, f)
    }

    fn save_snapshot(&self, stream: &str, version: u64, state: &[u8]) -> anyhow::Result<()> {
        let mut wtxn = self.env.write_txn()?;
        self.db.put(
            &mut wtxn,
            &snapshot_key(stream),
            &encode_snapshot(version, state),
        )?;
        wtxn.commit()?;
        Ok(())
    }

    fn latest_snapshot(&self, stream: &str) -> anyhow::Result<Option<(u64, Vec<u8>)>> {
        let rtxn = self.env.read_txn()?;
        let v = self.db.get(&rtxn, &snapshot_key(stream))?;
        v.map(decode_snapshot).transpose()
    }

    fn scan(&self, f: &mut dyn FnMut(Seen<'_>)) -> anyhow::Result<u64> {
        let rtxn = self.env.read_txn()?;
        visit_by_position(
            self.db.prefix_iter(&rtxn, b"P")?,
            |key| Ok(self.db.get(&rtxn, key)?),
            f,
        )
    }

    fn sync(&self) -> anyhow::Result<()> {
        Ok(self.env.force_sync()?)
    }

    fn close(self: Box<Self>) -> anyhow::Result<()> {
        let Lmdb { env, .. } = *self;
        env.force_sync()?;
        env.prepare_for_closing().wait();
        Ok(())
    }
}
