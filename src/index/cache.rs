//! A bounded cache of the per-stream state the writer needs: the stream's latest append
//! and the id of its first event. Backed by the index: a miss is answered by a lookup.

use std::sync::Arc;

use crate::cache::Generations;

/// What the writer keeps about a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamState {
    /// Version of the latest append's first event.
    pub first_version: u64,
    /// Events in the latest append.
    pub count: u32,
    /// Position of the latest append.
    pub position: u64,
    /// Id of the latest append's first event (to recognise a retry cheaply).
    pub first_id: [u8; 16],
}

impl StreamState {
    /// The stream's last version.
    pub fn last_version(&self) -> u64 {
        super::table::last_version(self.first_version, self.count)
    }
}

/// At most `capacity` streams in a two-generation cache: it keeps the recently used ones.
#[derive(Debug)]
pub struct StreamCache(Generations<Arc<str>, StreamState>);

impl StreamCache {
    /// A cache of at most `capacity` streams (at least 2).
    pub fn new(capacity: usize) -> Self {
        StreamCache(Generations::new(capacity.max(2)))
    }

    /// The cached state of `stream`.
    pub fn get(&mut self, stream: &str) -> Option<StreamState> {
        self.0.get_mut(stream).copied()
    }

    /// Sets the state of `stream`.
    pub fn insert(&mut self, stream: &str, state: StreamState) {
        match self.0.get_mut(stream) {
            Some(s) => *s = state,
            None => self.0.insert(Arc::from(stream), state, 1),
        }
    }

    /// Streams cached now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether nothing is cached.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(v: u64) -> StreamState {
        StreamState {
            first_version: v,
            count: 1,
            position: v,
            first_id: [0; 16],
        }
    }

    #[test]
    fn the_cache_is_bounded_and_keeps_recent_streams() {
        let mut c = StreamCache::new(10);
        for i in 0..1000u64 {
            c.insert(&format!("s{i}"), st(i));
            assert!(c.len() <= 10);
            // A stream used all along stays.
            if i % 3 == 0 {
                c.insert("hot", st(i));
            }
            assert!(c.get("hot").is_some() || i == 0 && c.get("hot").is_some());
        }
        assert_eq!(c.get("s999"), Some(st(999)));
        assert_eq!(c.get("s0"), None);
    }
}
