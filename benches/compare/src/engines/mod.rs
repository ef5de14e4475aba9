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
    ];
    #[cfg(feature = "rocksdb")]
    peers.push(rocksdb::PEER);
    peers
}
