//! A bounded two-generation cache, used for the writer's per-stream state (by count) and
//! for checked frames read by stream readers (by bytes). Not a layer: it knows nothing of
//! files or formats.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash};

/// Two generations of at most `budget / 2` weight each: a hit in the older one promotes
/// the entry; when the young generation is full, the old one is dropped. So the cache
/// holds at most `budget` weight (plus one entry) and keeps what was used recently, at the
/// cost of one hash lookup per hit and no per-entry bookkeeping. `S` hashes the keys:
/// the standard keyed hash by default (keys that callers choose), or a faster one for
/// keys they do not (file positions).
pub(crate) struct Generations<K, V, S = RandomState> {
    half: usize,
    young: HashMap<K, (V, usize), S>,
    young_weight: usize,
    old: HashMap<K, (V, usize), S>,
}

impl<K, V, S> std::fmt::Debug for Generations<K, V, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generations")
            .field("budget", &self.half.saturating_mul(2))
            .field("young", &self.young.len())
            .field("young_weight", &self.young_weight)
            .field("old", &self.old.len())
            .finish()
    }
}

impl<K: Hash + Eq, V, S: BuildHasher + Default> Generations<K, V, S> {
    /// A cache of at most `budget` weight; each generation holds at least one entry.
    pub(crate) fn new(budget: usize) -> Self {
        Generations {
            half: budget / 2,
            young: HashMap::default(),
            young_weight: 0,
            old: HashMap::default(),
        }
    }

    /// Drops every entry.
    pub(crate) fn clear(&mut self) {
        self.young.clear();
        self.old.clear();
        self.young_weight = 0;
    }

    /// The cached value of `key`, promoted to the young generation.
    pub(crate) fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if !self.young.contains_key(key) {
            let (k, (v, weight)) = self.old.remove_entry(key)?;
            self.push_young(k, v, weight);
        }
        self.young.get_mut(key).map(|(v, _)| v)
    }

    /// Caches `value` of `weight` under `key`, replacing what was there.
    pub(crate) fn insert(&mut self, key: K, value: V, weight: usize) {
        if let Some(slot) = self.young.get_mut(&key) {
            self.young_weight = self
                .young_weight
                .saturating_sub(slot.1)
                .saturating_add(weight);
            *slot = (value, weight);
            return;
        }
        self.old.remove(&key);
        self.push_young(key, value, weight);
    }

    fn push_young(&mut self, key: K, value: V, weight: usize) {
        if !self.young.is_empty() && self.young_weight.saturating_add(weight) > self.half {
            self.old = std::mem::take(&mut self.young);
            self.young_weight = 0;
        }
        self.young_weight = self.young_weight.saturating_add(weight);
        self.young.insert(key, (value, weight));
    }

    /// Entries cached now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }

    /// Total weight cached now.
    #[cfg(test)]
    pub(crate) fn weight(&self) -> usize {
        self.young_weight
            .saturating_add(self.old.values().map(|(_, w)| *w).sum::<usize>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_is_bounded_and_recently_used_entries_stay() {
        let mut c: Generations<u64, Vec<u8>> = Generations::new(1000);
        for i in 0..10_000u64 {
            let w = (i % 50) as usize + 1;
            c.insert(i, vec![0; w], w);
            assert!(c.weight() <= 1000 + 50, "weight {} over budget", c.weight());
            if i % 3 == 0 && c.get_mut(&u64::MAX).is_none() {
                c.insert(u64::MAX, vec![1], 1);
            }
        }
        assert!(c.get_mut(&u64::MAX).is_some(), "a hot entry was dropped");
        assert!(c.get_mut(&9_999).is_some(), "the newest entry was dropped");
        assert!(c.get_mut(&0).is_none(), "the oldest entry is still there");
    }

    #[test]
    fn replacing_an_entry_updates_its_weight() {
        let mut c: Generations<&str, u32> = Generations::new(100);
        c.insert("a", 1, 40);
        c.insert("a", 2, 10);
        assert_eq!(c.weight(), 10);
        assert_eq!(c.get_mut("a").copied(), Some(2));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn an_entry_heavier_than_the_budget_is_still_held_alone() {
        let mut c: Generations<u8, ()> = Generations::new(10);
        c.insert(1, (), 100);
        assert!(c.get_mut(&1).is_some());
        c.insert(2, (), 100);
        // 1 moved to the old generation when 2 came in; both are reachable until a third.
        assert!(c.get_mut(&2).is_some());
        assert!(c.len() <= 2);
    }
}
