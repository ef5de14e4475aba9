//! SQLite (rusqlite, bundled): one table, WAL mode.

use std::path::Path;

use parking_lot::Mutex;
use rusqlite::{Connection, params};

use crate::engine::{EVENT_TYPE, Engine, Mode, Peer, Seen, Sequencer, fsync_path};

pub const PEER: Peer = Peer {
    name: "SQLite",
    open,
    buffered_label: "buffered (WAL, synchronous=OFF)",
    durable_label: "durable (WAL, synchronous=FULL)",
    stream_read_note: None,
    scan_note: Some("ORDER BY position over an index on position"),
    crash_copy: true,
    note: None,
};

struct Sqlite {
    conn: Mutex<Connection>,
    seq: Sequencer,
    db: std::path::PathBuf,
}

fn open(dir: &Path, mode: Mode) -> anyhow::Result<Box<dyn Engine>> {
    std::fs::create_dir_all(dir)?;
    let db = dir.join("events.db");
    let conn = Connection::open(&db)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    let sync = match mode {
        Mode::Buffered => "OFF",
        Mode::Durable => "FULL",
    };
    conn.pragma_update(None, "synchronous", sync)?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS events(stream TEXT, version INTEGER, position INTEGER, \
         type TEXT, data BLOB, PRIMARY KEY(stream, version));
         CREATE INDEX IF NOT EXISTS events_position ON events(position);
         CREATE TABLE IF NOT EXISTS snapshots(stream TEXT PRIMARY KEY, version INTEGER, \
         state BLOB);",
    )?;
    Ok(Box::new(Sqlite {
        conn: Mutex::new(conn),
        seq: Sequencer::default(),
        db,
    }))
}

impl Engine for Sqlite {
    fn append(&self, stream: &str, events: &[&[u8]]) -> anyhow::Result<()> {
        let mut conn = self.conn.lock();
        let (version, position) = self.seq.assign(stream, events.len() as u64);
        let tx = conn.transaction()?;
        {
            let mut st = tx.prepare_cached(
                "INSERT INTO events(stream, version, position, type, data) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for (i, d) in events.iter().enumerate() {
                let i = i as i64;
                st.execute(params![
                    stream,
                    version as i64 + i,
                    position as i64 + i,
                    EVENT_TYPE,
                    d
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn read_stream(
        &self,
        stream: &str,
        from: u64,
        f: &mut dyn FnMut(Seen<'_>),
    ) -> anyhow::Result<u64> {
        let conn = self.conn.lock();
        let mut st = conn.prepare_cached(
            "SELECT version, data FROM events WHERE stream = ?1 AND version >= ?2 ORDER BY version",
        )?;
        let mut rows = st.query(params![stream, from as i64])?;
        let mut n = 0;
        while let Some(row) = rows.next()? {
            let version: i64 = row.get(0)?;
            let data = row.get_ref(1)?.as_blob()?;
            f(Seen {
                version: version as u64,
                data,
            });
            n += 1;
        }
        Ok(n)
    }

    fn save_snapshot(&self, stream: &str, version: u64, state: &[u8]) -> anyhow::Result<()> {
        let conn = self.conn.lock();
        conn.prepare_cached(
            "INSERT OR REPLACE INTO snapshots(stream, version, state) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![stream, version as i64, state])?;
        Ok(())
    }

    fn latest_snapshot(&self, stream: &str) -> anyhow::Result<Option<(u64, Vec<u8>)>> {
        let conn = self.conn.lock();
        let mut st =
            conn.prepare_cached("SELECT version, state FROM snapshots WHERE stream = ?1")?;
        let mut rows = st.query(params![stream])?;
        match rows.next()? {
            Some(row) => {
                let version: i64 = row.get(0)?;
                Ok(Some((version as u64, row.get(1)?)))
            }
            None => Ok(None),
        }
    }

    fn scan(&self, f: &mut dyn FnMut(Seen<'_>)) -> anyhow::Result<u64> {
        let conn = self.conn.lock();
        let mut st = conn.prepare_cached("SELECT version, data FROM events ORDER BY position")?;
        let mut rows = st.query([])?;
        let mut n = 0;
        while let Some(row) = rows.next()? {
            let version: i64 = row.get(0)?;
            let data = row.get_ref(1)?.as_blob()?;
            f(Seen {
                version: version as u64,
                data,
            });
            n += 1;
        }
        Ok(n)
    }

    fn sync(&self) -> anyhow::Result<()> {
        // synchronous=OFF never syncs: sync the WAL and the database file ourselves.
        let _conn = self.conn.lock();
        let mut wal = self.db.clone().into_os_string();
        wal.push("-wal");
        fsync_path(Path::new(&wal))?;
        fsync_path(&self.db)
    }

    fn close(self: Box<Self>) -> anyhow::Result<()> {
        self.conn
            .into_inner()
            .close()
            .map_err(|(_, e)| anyhow::Error::from(e))
    }
}
