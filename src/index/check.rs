//! Checking an index against the log it was built from: the one check behind
//! `Store::verify` and the inspection of a directory.

use std::collections::HashMap;

use super::Index;
use crate::error::Result;

/// Checks that every stream's appends continue its versions without a gap or an overlap,
/// fed the appends in log order.
#[derive(Debug, Default)]
pub struct VersionContinuity {
    next: HashMap<String, u64>,
    problems: Vec<String>,
    /// Versions a scavenge removed, by stream keys: `(first, end)` ranges.
    removed: HashMap<(u64, u32), Vec<(u64, u64)>>,
    hashing: super::Hashing,
}

impl VersionContinuity {
    /// Takes in the removed runs that rewritten segments record (so that the versions a
    /// scavenge took out are no gap), streams named by `hashing`'s keys.
    pub fn with_removed(
        mut self,
        hashing: super::Hashing,
        runs: impl IntoIterator<Item = crate::format::compact::RemovedRun>,
    ) -> Self {
        self.hashing = hashing;
        for run in runs {
            self.removed
                .entry((run.hash, run.check))
                .or_default()
                .push((
                    run.first_version,
                    run.first_version.saturating_add(run.count),
                ));
        }
        for ranges in self.removed.values_mut() {
            ranges.sort_unstable();
        }
        self
    }

    /// Whether removed runs of `stream` cover every version from `from` to `to`.
    fn removed_covers(&self, stream: &str, from: u64, to: u64) -> bool {
        let Some(ranges) = self.removed.get(&self.hashing.keys(stream)) else {
            return false;
        };
        let mut at = from;
        for &(first, end) in ranges {
            if first <= at && end > at {
                at = end;
            }
            if at >= to {
                return true;
            }
        }
        at >= to
    }

    /// The next append of the log: `count` events of `stream` from `first_version`, at
    /// `position`.
    pub fn see(&mut self, stream: &str, first_version: u64, count: u32, position: u64) {
        let expected = self.next.get(stream).copied().unwrap_or(0);
        if first_version != expected
            && !(first_version > expected && self.removed_covers(stream, expected, first_version))
        {
            self.problems.push(format!(
                "stream {stream:?}: the append at position {position} starts at version \
                 {first_version}, but the stream's previous append ends before {expected}"
            ));
        }
        let next = first_version.saturating_add(u64::from(count));
        match self.next.get_mut(stream) {
            Some(v) => *v = next,
            None => {
                self.next.insert(stream.to_string(), next);
            }
        }
    }

    /// The problems found, in words.
    pub fn into_problems(self) -> Vec<String> {
        self.problems
    }
}

impl Index {
    /// Checks this index against the appends of its log. `appends` hands each events frame
    /// below `limit` to its visitor as `(stream, first version, event count, position)`, in
    /// log order, and returns whether it met damage in the log. Every append must be found
    /// through the index at its position with its event count, and the index must hold no
    /// other entry below `limit`
    /// (not compared when the log is damaged: the frame check reports that). Returns the
    /// problems found, in words; an empty list means the index matches the log.
    ///
    /// # Errors
    /// Any error of `appends` (reading the log).
    pub fn check_against_log(
        &self,
        limit: u64,
        appends: impl FnOnce(&mut dyn FnMut(&str, u64, u32, u64)) -> Result<bool>,
    ) -> Result<Vec<String>> {
        let mut problems = Vec::new();
        let mut frames = 0u64;
        let log_damaged = appends(&mut |stream, first_version, count, position| {
            frames += 1;
            let (hash, check) = self.keys(stream);
            // Entries of colliding streams at the same version are passed over.
            let mut exclude = Vec::new();
            loop {
                match self.floor(hash, check, first_version, &exclude) {
                    Ok(Some(e)) if e.position == position && e.count == count => break,
                    Ok(Some(e)) if e.position == position => {
                        problems.push(format!(
                            "the index says the append of {stream:?} at version \
                             {first_version} (position {position}) holds {} events; it holds \
                             {count}",
                            e.count
                        ));
                        break;
                    }
                    Ok(Some(e)) if e.first_version == first_version => exclude.push(e.position),
                    Ok(_) => {
                        problems.push(format!(
                            "the append of {stream:?} at version {first_version} (position \
                             {position}) is not found through the index"
                        ));
                        break;
                    }
                    Err(e) => {
                        problems.push(format!("index lookup failed: {e}"));
                        break;
                    }
                }
            }
        })?;
        let mut entries = 0u64;
        let counted = self.for_each_entry(|e| {
            if e.position < limit {
                entries += 1;
            }
            Ok(())
        });
        match counted {
            Err(e) => problems.push(format!("index table damaged: {e}")),
            Ok(()) if entries != frames && !log_damaged => problems.push(format!(
                "the index holds {entries} entries for {frames} appends in the log"
            )),
            Ok(()) => {}
        }
        Ok(problems)
    }
}
