//! One driver per peer engine.

mod commitlog;
mod fjall;
mod lmdb;
mod okaywal;
mod redb;
#[cfg(feature = "rocksdb")]
mod rocksdb;
mod sled;
mod sqlite;
mod streamlog;
mod umadb;

use crate::engine::Peer;

/// Every peer built into this binary, streamlog first.
pub fn all() -> Vec<Peer> {
    #[allow(unused_mut)]
    let mut peers = vec![
        streamlog::PEER,
        sqlite::PEER,
        redb::PEER,
        fjall::PEER,
        lmdb::PEER,
        sled::PEER,
        okaywal::PEER,
        commitlog::PEER,
        umadb::PEER,
    ];
    #[cfg(feature = "rocksdb")]
    peers.push(rocksdb::PEER);
    peers
}

/// Peers with a driver here that this binary was built without, and why.
pub fn left_out() -> Vec<(&'static str, &'static str)> {
    if cfg!(feature = "rocksdb") {
        Vec::new()
    } else {
        vec![(
            "RocksDB",
            "its driver is behind the `rocksdb` feature, off by default: it links Debian's RocksDB, which `benches/compare/rocksdb.sh` installs before it builds and runs the comparison with it (see benches/compare/README.md)",
        )]
    }
}
