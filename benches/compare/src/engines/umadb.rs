//! UmaDB's engine (`umadb-core`), embedded: an event store on a copy-on-write B+ tree in one
//! file, with Dynamic Consistency Boundary semantics (events carry tags; reads and append
//! conditions are queries over types and tags; positions are global and gap-free).
//!
//! Driven the way its own server drives it: one writer thread
//! (`writer_thread_blocking`, fed by a channel) takes every append request waiting and
//! commits them together, up to 2,000 events per commit (the server's
//! `APPEND_BATCH_MAX_EVENTS`); reads go through `DcbEventStoreSync::read`.
//!
//! Durability, from its source (`Mvcc::commit`): each commit writes the dirty pages,
//! `fdatasync`s, writes the new header page (double-buffered), `fdatasync`s again, and
//! only then answers. There is no buffered mode (the crate's `no_fsync` switch is fixed
//! off), so W1 here is durable anyway.
//!
//! The mapping: a stream is a tag (`stream:NAME`); DCB has no per-stream version, so a
//! stream read counts versions from where it starts. A snapshot is an event of its own
//! (tag `snapshot:NAME`) holding the version and the position it covers, the latest one
//! found by a backwards read with limit 1, as an application on UmaDB would keep it; the
//! load then reads the stream from the position after it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, watch};
use umadb_core::db::UmaDb;
use umadb_core::mvcc::{Mvcc, StorageOptions};
use umadb_core::writer_thread_blocking::writer_thread_blocking;
use umadb_core::writer_thread_request::WriterThreadRequest;
use umadb_dcb::{DcbEvent, DcbEventStoreSync, DcbQuery, DcbQueryItem};

use crate::engine::{EVENT_TYPE, Engine, Mode, Peer, Seen, Sequencer};

pub const PEER: Peer = Peer {
    name: "UmaDB",
    open,
    buffered_label: "durable anyway (no buffered mode: every commit syncs twice)",
    durable_label: "durable (commit: pages, fdatasync, header, fdatasync; one writer thread groups waiting appends, as its server does)",
    stream_read_note: None,
    scan_note: None,
    crash_copy: true,
    note: Some(
        "UmaDB (`umadb-core`, embedded, driven as its own server drives it: one writer thread commits every append waiting, up to 2,000 events) is an event store with Dynamic Consistency Boundary semantics: a stream here is a tag, positions are global, and there are no per-stream versions (the reader counts them). Every commit writes its pages, `fdatasync`s, writes the header, `fdatasync`s: it has no buffered mode, so its W1 is durable. Its W6 snapshot is an event of its own with the position it covers; the load reads the stream from the position after it.",
    ),
};

/// Events per commit at most, as UmaDB's server sets it.
const APPEND_BATCH_MAX_EVENTS: usize = 2000;
/// Requests waiting for the writer thread at most.
const QUEUE_REQUESTS: usize = 1024;
/// Events per read call in a full scan (the server's largest read batch).
const SCAN_PAGE_EVENTS: u32 = 5000;
/// The type of snapshot events.
const SNAPSHOT_TYPE: &str = "Snapshot";

struct Umadb {
    db: UmaDb,
    requests: mpsc::Sender<WriterThreadRequest>,
    writer: Option<JoinHandle<()>>,
    seq: Sequencer,
    /// Per stream: the last version appended in this session and its position.
    last: Mutex<HashMap<String, (u64, u64)>>,
    /// Per stream: (version, position) where the latest snapshot loaded leaves off, so the
    /// read that follows it starts at the next position.
    resume: Mutex<HashMap<String, (u64, u64)>>,
}

fn open(dir: &Path, _mode: Mode) -> anyhow::Result<Box<dyn Engine>> {
    // `db_path` takes a directory only if it exists (else it names the file).
    std::fs::create_dir_all(dir)?;
    let mvcc = Arc::new(Mvcc::new(false, StorageOptions::default().db_path(dir))?);
    let (requests, rx) = mpsc::channel(QUEUE_REQUESTS);
    let (head_tx, _head_rx) = watch::channel(None);
    let writer_mvcc = Arc::clone(&mvcc);
    let writer = std::thread::Builder::new()
        .name("umadb-writer".into())
        .spawn(move || writer_thread_blocking(writer_mvcc, rx, head_tx, APPEND_BATCH_MAX_EVENTS))?;
    Ok(Box::new(Umadb {
        db: UmaDb::from_arc(mvcc),
        requests,
        writer: Some(writer),
        seq: Sequencer::default(),
        last: Mutex::new(HashMap::new()),
        resume: Mutex::new(HashMap::new()),
    }))
}

/// Events carrying `tag`, whatever their type.
fn tag_query(tag: String) -> DcbQuery {
    DcbQuery {
        items: vec![DcbQueryItem {
            types: Vec::new(),
            tags: vec![tag],
        }],
    }
}

impl Umadb {
    /// Appends through the writer thread; the position of the last event once durable.
    fn submit(&self, events: Vec<DcbEvent>) -> anyhow::Result<u64> {
        let (response_tx, response) = oneshot::channel();
        self.requests
            .blocking_send(WriterThreadRequest::Append {
                events,
                condition: None,
                tracking_info: None,
                response_tx,
                cancel: None,
            })
            .map_err(|_| anyhow::anyhow!("the UmaDB writer thread stopped"))?;
        Ok(response
            .blocking_recv()
            .map_err(|_| anyhow::anyhow!("the UmaDB writer thread dropped a request"))??)
    }
}

impl Engine for Umadb {
    fn append(&self, stream: &str, events: &[&[u8]]) -> anyhow::Result<()> {
        let n = events.len() as u64;
        let tag = format!("stream:{stream}");
        let batch = events
            .iter()
            .map(|d| DcbEvent {
                event_type: EVENT_TYPE.to_string(),
                tags: vec![tag.clone()],
                data: d.to_vec(),
                uuid: None,
                metadata: Vec::new(),
            })
            .collect();
        // Versions are the driver's bookkeeping (for snapshots); UmaDB orders by position.
        let (version, _) = self.seq.assign(stream, n);
        let position = self.submit(batch)?;
        if n > 0 {
            self.last
                .lock()
                .insert(stream.to_string(), (version + n - 1, position));
        }
        Ok(())
    }

    fn read_stream(
        &self,
        stream: &str,
        from: u64,
        f: &mut dyn FnMut(Seen<'_>),
    ) -> anyhow::Result<u64> {
        // Start at the position after the snapshot just loaded when it covers `from`;
        // otherwise read the stream from its start and pass over the first `from` events.
        let resume = self
            .resume
            .lock()
            .get(stream)
            .copied()
            .filter(|&(v, _)| v + 1 == from);
        let (start, mut version) = match resume {
            Some((v, position)) => (Some(position + 1), v + 1),
            None => (None, 0),
        };
        let query = tag_query(format!("stream:{stream}"));
        let mut n = 0;
        for e in self.db.read(Some(query), start, false, None)? {
            let e = e?;
            if version >= from {
                f(Seen {
                    version,
                    data: &e.event.data,
                });
                n += 1;
            }
            version += 1;
        }
        Ok(n)
    }

    fn save_snapshot(&self, stream: &str, version: u64, state: &[u8]) -> anyhow::Result<()> {
        let position = match self.last.lock().get(stream) {
            Some(&(v, p)) if v == version => p,
            _ => anyhow::bail!("a snapshot of {stream} at {version}, not its last append"),
        };
        let mut data = Vec::with_capacity(16 + state.len());
        data.extend_from_slice(&version.to_le_bytes());
        data.extend_from_slice(&position.to_le_bytes());
        data.extend_from_slice(state);
        self.submit(vec![DcbEvent {
            event_type: SNAPSHOT_TYPE.to_string(),
            tags: vec![format!("snapshot:{stream}")],
            data,
            uuid: None,
            metadata: Vec::new(),
        }])?;
        Ok(())
    }

    fn latest_snapshot(&self, stream: &str) -> anyhow::Result<Option<(u64, Vec<u8>)>> {
        let query = tag_query(format!("snapshot:{stream}"));
        let Some(e) = self.db.read(Some(query), None, true, Some(1))?.next() else {
            return Ok(None);
        };
        let data = e?.event.data;
        let word = |at: usize| -> anyhow::Result<u64> {
            let mut w = [0u8; 8];
            w.copy_from_slice(
                data.get(at..at + 8)
                    .ok_or_else(|| anyhow::anyhow!("short snapshot event"))?,
            );
            Ok(u64::from_le_bytes(w))
        };
        let (version, position) = (word(0)?, word(8)?);
        self.resume
            .lock()
            .insert(stream.to_string(), (version, position));
        Ok(Some((version, data.get(16..).unwrap_or_default().to_vec())))
    }

    fn scan(&self, f: &mut dyn FnMut(Seen<'_>)) -> anyhow::Result<u64> {
        // In pages, as a reader of the whole log would; `start` is inclusive.
        let mut start = None;
        let mut n = 0;
        loop {
            let mut last = None;
            for e in self.db.read(None, start, false, Some(SCAN_PAGE_EVENTS))? {
                let e = e?;
                last = Some(e.position);
                // DCB events have a global position, not a per-stream version.
                f(Seen {
                    version: e.position,
                    data: &e.event.data,
                });
                n += 1;
            }
            match last {
                Some(p) => start = Some(p + 1),
                None => return Ok(n),
            }
        }
    }

    fn sync(&self) -> anyhow::Result<()> {
        // Every commit is already on disk when the append returns.
        Ok(())
    }

    fn close(mut self: Box<Self>) -> anyhow::Result<()> {
        self.requests
            .blocking_send(WriterThreadRequest::Shutdown)
            .map_err(|_| anyhow::anyhow!("the UmaDB writer thread stopped"))?;
        if let Some(w) = self.writer.take() {
            w.join()
                .map_err(|_| anyhow::anyhow!("the UmaDB writer thread panicked"))?;
        }
        Ok(())
    }
}
