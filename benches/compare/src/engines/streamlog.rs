//! streamlog itself, through its public API.

use std::path::Path;

use streamlog::{Durability, ExpectedVersion, NewEvent, Options, Position, Store};

use crate::engine::{EVENT_TYPE, Engine, Mode, Peer, Seen};

pub const PEER: Peer = Peer {
    name: "streamlog",
    open,
    buffered_label: "buffered (Durability::Buffered)",
    durable_label: "durable (Durability::Sync, group commit)",
    stream_read_note: None,
    scan_note: None,
    crash_copy: true,
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

impl Engine for Streamlog {
    fn append(&self, stream: &str, events: &[&[u8]]) -> anyhow::Result<()> {
        self.store.append(
            stream,
            ExpectedVersion::Any,
            events.iter().map(|d| NewEvent::new(EVENT_TYPE, d)),
        )?;
        Ok(())
    }

    fn read_stream(&self, stream: &str, f: &mut dyn FnMut(Seen<'_>)) -> anyhow::Result<u64> {
        let mut n = 0;
        for e in self.store.read_stream(stream, 0)? {
            let e = e?;
            f(Seen {
                version: e.version,
                data: &e.data,
            });
            n += 1;
        }
        Ok(n)
    }

    fn scan(&self, f: &mut dyn FnMut(Seen<'_>)) -> anyhow::Result<u64> {
        let mut n = 0;
        for e in self.store.read_all(Position::START)? {
            let e = e?;
            f(Seen {
                version: e.version,
                data: &e.data,
            });
            n += 1;
        }
        Ok(n)
    }

    fn sync(&self) -> anyhow::Result<()> {
        Ok(self.store.sync()?)
    }

    fn close(self: Box<Self>) -> anyhow::Result<()> {
        Ok(self.store.close()?)
    }
}
