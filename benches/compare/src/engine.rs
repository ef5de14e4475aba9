//! The driver trait every peer implements, and the logical data they all store.

use std::collections::HashMap;
use std::path::Path;

use parking_lot::Mutex;

/// How appends are acknowledged in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Handed to the OS (or the engine's buffers); made durable by one `sync` at the end.
    Buffered,
    /// On disk before `append` returns, with the engine's own "durable commit" setting.
    Durable,
}

/// The event type every benchmark event carries.
pub const EVENT_TYPE: &str = "BenchEvent";

/// One stored event as read back: what a reader gets for each event.
#[derive(Debug, Clone, Copy)]
pub struct Seen<'a> {
    pub version: u64,
    pub data: &'a [u8],
}

/// An open store of one engine. Every engine stores the same logical events: stream,
/// version (gap-free per stream), global position (commit order), type, data.
pub trait Engine: Send + Sync {
    /// Appends `events` (their data) as one atomic batch to `stream`, with the versions
    /// following the stream's last one.
    fn append(&self, stream: &str, events: &[&[u8]]) -> anyhow::Result<()>;
    /// Calls `f` for every event of `stream` from version `from` on, in version order;
    /// returns how many.
    fn read_stream(
        &self,
        stream: &str,
        from: u64,
        f: &mut dyn FnMut(Seen<'_>),
    ) -> anyhow::Result<u64>;
    /// W6: keeps `state` as the snapshot of `stream` at `version`. Engines without
    /// snapshots keep it the way an application would: one record per stream, replaced.
    fn save_snapshot(&self, _stream: &str, _version: u64, _state: &[u8]) -> anyhow::Result<()> {
        anyhow::bail!("n/a: no place for a snapshot next to a plain log")
    }
    /// W6: the latest snapshot of `stream`: (version, state).
    fn latest_snapshot(&self, _stream: &str) -> anyhow::Result<Option<(u64, Vec<u8>)>> {
        anyhow::bail!("n/a: no place for a snapshot next to a plain log")
    }
    /// Calls `f` for every event of every stream in commit order; returns how many.
    fn scan(&self, f: &mut dyn FnMut(Seen<'_>)) -> anyhow::Result<u64>;
    /// Makes everything appended so far durable (as far as the engine can).
    fn sync(&self) -> anyhow::Result<()>;
    /// Gives space back the way the engine's users would (its compaction), blocking until
    /// it is done; returns what it ran, as a short phrase for the report. An `Err`
    /// starting with "n/a" says the driver runs none.
    fn compact(&self) -> anyhow::Result<&'static str> {
        anyhow::bail!("n/a: the driver runs no compaction")
    }
    /// Closes cleanly.
    fn close(self: Box<Self>) -> anyhow::Result<()>;
}

/// What a peer can honestly do; shown next to its figures.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub name: &'static str,
    /// Opens (creating if needed) a store in `dir`.
    pub open: fn(&Path, Mode) -> anyhow::Result<Box<dyn Engine>>,
    /// What `Mode::Buffered` really gives, one short phrase.
    pub buffered_label: &'static str,
    /// What `Mode::Durable` really gives, one short phrase; starts with "not durable" when
    /// an acknowledged append can be lost in a machine crash.
    pub durable_label: &'static str,
    /// How `read_stream` works when the engine has no per-stream index, if so.
    pub stream_read_note: Option<&'static str>,
    /// How `scan` works when unusual.
    pub scan_note: Option<&'static str>,
    /// Whether a copy of the files taken while open can be opened (W5 crash).
    pub crash_copy: bool,
    /// What a reader of the report must know to read this peer's figures, if anything;
    /// printed only when the peer is in the run.
    pub note: Option<&'static str>,
}

impl Peer {
    /// Whether durable-mode appends are really on disk when acknowledged.
    pub fn is_durable(&self) -> bool {
        !self.durable_label.starts_with("not durable")
    }
}

/// Assigns versions and positions for engines that do not do it themselves (all but
/// streamlog). Positions count events, from 0, in assignment order.
#[derive(Debug, Default)]
pub struct Sequencer {
    state: Mutex<(u64, HashMap<String, u64>)>,
}

impl Sequencer {
    /// Reserves `n` versions of `stream` and `n` positions: (first version, first position).
    pub fn assign(&self, stream: &str, n: u64) -> (u64, u64) {
        let mut s = self.state.lock();
        let pos = s.0;
        s.0 += n;
        let next = s.1.entry(stream.to_string()).or_insert(0);
        let version = *next;
        *next += n;
        (version, pos)
    }
}

/// Key of an event in key-value engines: `S` + stream + 0 + version (big-endian, so keys
/// sort by version).
pub fn stream_key(stream: &str, version: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(stream.len() + 10);
    k.push(b'S');
    k.extend_from_slice(stream.as_bytes());
    k.push(0);
    k.extend_from_slice(&version.to_be_bytes());
    k
}

/// Key range of the events of `stream` from version `from` on: [start, end).
pub fn stream_range(stream: &str, from: u64) -> (Vec<u8>, Vec<u8>) {
    let mut end = stream_prefix(stream);
    if let Some(last) = end.last_mut() {
        *last = 1;
    }
    (stream_key(stream, from), end)
}

/// Key of a stream's snapshot record in key-value engines: `N` + stream.
pub fn snapshot_key(stream: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(stream.len() + 1);
    k.push(b'N');
    k.extend_from_slice(stream.as_bytes());
    k
}

/// Value of a snapshot record: version (LE u64), state.
pub fn encode_snapshot(version: u64, state: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + state.len());
    v.extend_from_slice(&version.to_le_bytes());
    v.extend_from_slice(state);
    v
}

/// The (version, state) of a snapshot record.
pub fn decode_snapshot(value: &[u8]) -> anyhow::Result<(u64, Vec<u8>)> {
    let head = value
        .get(..8)
        .ok_or_else(|| anyhow::anyhow!("short snapshot record"))?;
    let mut b = [0u8; 8];
    b.copy_from_slice(head);
    Ok((
        u64::from_le_bytes(b),
        value.get(8..).unwrap_or_default().to_vec(),
    ))
}

/// Prefix of every key of `stream`.
pub fn stream_prefix(stream: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(stream.len() + 2);
    k.push(b'S');
    k.extend_from_slice(stream.as_bytes());
    k.push(0);
    k
}

/// Key of the commit-order entry of an event: `P` + position (big-endian). Its value is the
/// event's stream key.
pub fn position_key(position: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = b'P';
    k[1..].copy_from_slice(&position.to_be_bytes());
    k
}

/// The version at the end of a stream key.
pub fn version_of_key(key: &[u8]) -> anyhow::Result<u64> {
    let tail = key
        .len()
        .checked_sub(8)
        .and_then(|at| key.get(at..))
        .ok_or_else(|| anyhow::anyhow!("short key"))?;
    let mut b = [0u8; 8];
    b.copy_from_slice(tail);
    Ok(u64::from_be_bytes(b))
}

/// Value of an event in key-value engines: position (LE u64), type length (u8), type, data.
pub fn encode_value(position: u64, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(9 + EVENT_TYPE.len() + data.len());
    v.extend_from_slice(&position.to_le_bytes());
    v.push(EVENT_TYPE.len() as u8);
    v.extend_from_slice(EVENT_TYPE.as_bytes());
    v.extend_from_slice(data);
    v
}

/// The data of an encoded value.
pub fn value_data(value: &[u8]) -> anyhow::Result<&[u8]> {
    let type_len = *value.get(8).ok_or_else(|| anyhow::anyhow!("short value"))? as usize;
    value
        .get(9 + type_len..)
        .ok_or_else(|| anyhow::anyhow!("short value"))
}

/// Reads a stream from a key-value engine: `kvs` are the stream's (stream key, encoded
/// value) pairs in key order. Returns how many events were seen.
pub fn visit_stream<K, V, E>(
    kvs: impl IntoIterator<Item = Result<(K, V), E>>,
    f: &mut dyn FnMut(Seen<'_>),
) -> anyhow::Result<u64>
where
    K: AsRef<[u8]>,
    V: AsRef<[u8]>,
    E: Into<anyhow::Error>,
{
    let mut n = 0;
    for kv in kvs {
        let (k, v) = kv.map_err(Into::into)?;
        f(Seen {
            version: version_of_key(k.as_ref())?,
            data: value_data(v.as_ref())?,
        });
        n += 1;
    }
    Ok(n)
}

/// Scans a key-value engine in commit order: `positions` are the (position key, stream
/// key) pairs in key order, and `get` fetches a stream key's encoded value. Returns how
/// many events were seen.
pub fn visit_by_position<K, P, V, E>(
    positions: impl IntoIterator<Item = Result<(P, K), E>>,
    get: impl Fn(&[u8]) -> anyhow::Result<Option<V>>,
    f: &mut dyn FnMut(Seen<'_>),
) -> anyhow::Result<u64>
where
    K: AsRef<[u8]>,
    V: AsRef<[u8]>,
    E: Into<anyhow::Error>,
{
    let mut n = 0;
    for kv in positions {
        let (_, key) = kv.map_err(Into::into)?;
        let v = get(key.as_ref())?.ok_or_else(|| anyhow::anyhow!("dangling position key"))?;
        f(Seen {
            version: version_of_key(key.as_ref())?,
            data: value_data(v.as_ref())?,
        });
        n += 1;
    }
    Ok(n)
}

/// A self-contained record for log engines (okaywal, commitlog): stream length (u16),
/// stream, version, position, type length, type, data.
pub fn encode_record(out: &mut Vec<u8>, stream: &str, version: u64, position: u64, data: &[u8]) {
    out.extend_from_slice(&(stream.len() as u16).to_le_bytes());
    out.extend_from_slice(stream.as_bytes());
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&position.to_le_bytes());
    out.push(EVENT_TYPE.len() as u8);
    out.extend_from_slice(EVENT_TYPE.as_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(data);
}

/// A decoded log record.
pub struct Record<'a> {
    pub stream: &'a [u8],
    pub version: u64,
    pub data: &'a [u8],
}

/// Decodes one record from the front of `buf`; returns it and the rest.
pub fn decode_record(buf: &[u8]) -> anyhow::Result<(Record<'_>, &[u8])> {
    let bad = || anyhow::anyhow!("bad record");
    let sl = buf.get(..2).ok_or_else(bad)?;
    let stream_len = u16::from_le_bytes([sl[0], sl[1]]) as usize;
    let mut at = 2;
    let stream = buf.get(at..at + stream_len).ok_or_else(bad)?;
    at += stream_len;
    let mut u = [0u8; 8];
    u.copy_from_slice(buf.get(at..at + 8).ok_or_else(bad)?);
    let version = u64::from_le_bytes(u);
    at += 16;
    let type_len = *buf.get(at).ok_or_else(bad)? as usize;
    at += 1 + type_len;
    let mut l = [0u8; 4];
    l.copy_from_slice(buf.get(at..at + 4).ok_or_else(bad)?);
    let data_len = u32::from_le_bytes(l) as usize;
    at += 4;
    let data = buf.get(at..at + data_len).ok_or_else(bad)?;
    at += data_len;
    Ok((
        Record {
            stream,
            version,
            data,
        },
        buf.get(at..).ok_or_else(bad)?,
    ))
}

/// fsyncs a file an engine wrote, for engines without a "sync now" call in buffered mode.
pub fn fsync_path(path: &Path) -> anyhow::Result<()> {
    if path.exists() {
        std::fs::File::open(path)?.sync_all()?;
    }
    Ok(())
}
