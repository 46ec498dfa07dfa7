//! The newest version handled per incident: a bounded least-recently-used map, and its shared
//! form that the lanes and the poller use together.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

/// [`HandledVersions`] shared in-process: the lanes record what their passes handled, and the
/// poller does not enqueue a version this process already handled.
#[derive(Debug, Clone)]
pub(crate) struct SharedVersions(Arc<Mutex<HandledVersions>>);

impl SharedVersions {
    /// An empty shared map holding at most `capacity` incidents.
    pub(crate) fn new(capacity: usize) -> Self {
        SharedVersions(Arc::new(Mutex::new(HandledVersions::new(capacity))))
    }

    /// The highest version handled for `sys_id`.
    pub(crate) fn get(&self, sys_id: &str) -> Option<u64> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(sys_id)
    }

    /// Records that `version` was handled.
    pub(crate) fn record(&self, sys_id: &str, version: u64) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record(sys_id, version);
    }
}

/// `sys_id → highest sys_mod_count handled`, forgetting the least recently touched incident
/// beyond `capacity`.
#[derive(Debug)]
pub(crate) struct HandledVersions {
    capacity: usize,
    tick: u64,
    entries: HashMap<String, (u64, u64)>,
    order: BTreeMap<u64, String>,
}

impl HandledVersions {
    /// An empty map holding at most `capacity` incidents.
    pub(crate) fn new(capacity: usize) -> Self {
        HandledVersions {
            capacity: capacity.max(1),
            tick: 0,
            entries: HashMap::new(),
            order: BTreeMap::new(),
        }
    }

    /// The highest version handled for `sys_id`.
    pub(crate) fn get(&mut self, sys_id: &str) -> Option<u64> {
        let (version, _) = *self.entries.get(sys_id)?;
        self.touch(sys_id, version);
        Some(version)
    }

    /// Records that `version` was handled (a lower version never replaces a higher one).
    pub(crate) fn record(&mut self, sys_id: &str, version: u64) {
        let newest = self
            .entries
            .get(sys_id)
            .map_or(version, |(v, _)| (*v).max(version));
        self.touch(sys_id, newest);
        while self.entries.len() > self.capacity {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
        }
    }

    fn touch(&mut self, sys_id: &str, version: u64) {
        self.tick += 1;
        if let Some((_, stamp)) = self.entries.get(sys_id) {
            self.order.remove(stamp);
        }
        self.entries.insert(sys_id.to_owned(), (version, self.tick));
        self.order.insert(self.tick, sys_id.to_owned());
    }

    /// How many incidents are remembered.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_highest_and_evicts_the_least_recent() {
        let mut v = HandledVersions::new(2);
        v.record("a", 3);
        v.record("a", 2);
        assert_eq!(v.get("a"), Some(3));
        v.record("b", 1);
        assert_eq!(v.get("a"), Some(3)); // a is now the most recent
        v.record("c", 7);
        assert_eq!(v.len(), 2);
        assert_eq!(v.get("b"), None, "b was least recently used");
        assert_eq!(v.get("a"), Some(3));
        assert_eq!(v.get("c"), Some(7));
    }
}
