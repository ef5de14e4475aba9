//! streamlog itself, through its public API.

use std::ops::ControlFlow;
use std::path::Path;

use streamlog::{Durability, EventRef, ExpectedVersion, Options, Position, ScavengeOptions, Store};

use crate::engine::{EVENT_TYPE, Engine, Mode, Peer, Seen};

pub const PEER: Peer = Peer {
    name: "streamlog",
    open,
    buffered_label: "buffered (Durability::Buffered)",
    durable_label: "durable (Durability::Sync, group commit)",
    stream_read_note: None,
    scan_note: None,
    crash_copy: true,
    note: None,
};

struct Streamlog {
    store: Store,
}

fn open(dir: &Path, mode: Mode) -> anyhow::Result<Box<dyn Engine>> {
    let durability = match mode {
        Mode::Buffered => Durability::Buffered,
        Mode::Durable => Durability::Sync,
    };
    let store = Store::open_with(dir, Options::default().with_durability(durability))?;
    Ok(Box::new(Streamlog { store }))
}

/// Schema tag of the W6 state.
const SNAPSHOT_SCHEMA: &str = "compare-v1";

impl Engine for Streamlog {
    fn append(&self, stream: &str, events: &[&[u8]]) -> anyhow::Result<()> {
        // The borrowing append: the caller holds the bytes, as every peer's driver does.
        let refs: Vec<EventRef<'_>> = events
            .iter()
            .map(|d| EventRef::new(EVENT_TYPE, d))
            .collect();
        self.store
            .append_refs(stream, ExpectedVersion::Any, &refs)?;
        Ok(())
    }

    fn read_stream(
        &self,
        stream: &str,
        from: u64,
        f: &mut dyn FnMut(Seen<'_>),
    ) -> anyhow::Result<u64> {
        Ok(self.store.read_stream_with(stream, from, |e| {
            f(Seen {
                version: e.version,
                data: e.data,
            });
            ControlFlow::Continue(())
        })?)
    }

    fn save_snapshot(&self, stream: &str, version: u64, state: &[u8]) -> anyhow::Result<()> {
        Ok(self
            .store
            .save_snapshot(stream, version, SNAPSHOT_SCHEMA, state)?)
    }

    fn latest_snapshot(&self, stream: &str) -> anyhow::Result<Option<(u64, Vec<u8>)>> {
        Ok(self
            .store
            .latest_snapshot(stream)?
            .filter(|s| s.schema == SNAPSHOT_SCHEMA)
            .map(|s| (s.version, s.data)))
    }

    fn scan(&self, f: &mut dyn FnMut(Seen<'_>)) -> anyhow::Result<u64> {
        Ok(self.store.read_all_with(Position::START, |e| {
            f(Seen {
                version: e.version,
                data: e.data,
            });
            ControlFlow::Continue(())
        })?)
    }

    fn sync(&self) -> anyhow::Result<()> {
        Ok(self.store.sync()?)
    }

    fn compact(&self) -> anyhow::Result<&'static str> {
        self.store
            .scavenge(&ScavengeOptions::default().with_compress_all(true))?;
        Ok(
            "`streamlog scavenge --compress-all` (every segment, the active one sealed first, compressed)",
        )
    }

    fn close(self: Box<Self>) -> anyhow::Result<()> {
        Ok(self.store.close()?)
    }
}
