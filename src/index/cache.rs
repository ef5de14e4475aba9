//! A bounded cache of the per-stream state the writer needs: the stream's latest append
//! and the id of its first event. Backed by the index: a miss is answered by a lookup.

use std::collections::HashMap;
use std::sync::Arc;

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
        self.first_version
            .saturating_add(u64::from(self.count))
            .saturating_sub(1)
    }
}

/// Two generations of at most `capacity / 2` streams each: a lookup in the older one
/// promotes the entry; when the young generation is full, the old one is dropped. So the
/// cache holds at most `capacity` streams and keeps the recently used ones.
#[derive(Debug)]
pub struct StreamCache {
    half: usize,
    young: HashMap<Arc<str>, StreamState>,
    old: HashMap<Arc<str>, StreamState>,
}

impl StreamCache {
    /// A cache of at most `capacity` streams (at least 2).
    pub fn new(capacity: usize) -> Self {
        StreamCache {
            half: (capacity / 2).max(1),
            young: HashMap::new(),
            old: HashMap::new(),
        }
    }

    /// The cached state of `stream`.
    pub fn get(&mut self, stream: &str) -> Option<StreamState> {
        if let Some(s) = self.young.get(stream) {
            return Some(*s);
        }
        let (name, state) = self.old.remove_entry(stream)?;
        self.insert_named(name, state);
        Some(state)
    }

    /// Sets the state of `stream`.
    pub fn insert(&mut self, stream: &str, state: StreamState) {
        if let Some(s) = self.young.get_mut(stream) {
            *s = state;
            return;
        }
        let name = self
            .old
            .remove_entry(stream)
            .map_or_else(|| Arc::from(stream), |(n, _)| n);
        self.insert_named(name, state);
    }

    fn insert_named(&mut self, name: Arc<str>, state: StreamState) {
        if self.young.len() >= self.half {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.insert(name, state);
    }

    /// Streams cached now.
    pub fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }

    /// Whether nothing is cached.
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
