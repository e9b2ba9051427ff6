//! The process-wide table behind [`super::Text`] and [`super::List`]: one shared `Arc` per
//! distinct value, so equal values made anywhere share one allocation.
//!
//! Values no status holds any more (only the table does) are dropped when the table has
//! doubled since it was last swept (and first at 1,024 values), so a long-running daemon's
//! table stays proportional to what its statuses hold.

use std::collections::HashSet;
use std::hash::Hash;
use std::sync::Arc;

/// The shared values of one type, and the size at which the table is next swept.
pub struct Table<K: ?Sized> {
    pub(super) set: HashSet<Arc<K>, foldhash::fast::RandomState>,
    sweep_at: usize,
}

impl<K: ?Sized + Hash + Eq> Table<K> {
    /// An empty table.
    pub fn new() -> Self {
        Table {
            set: HashSet::default(),
            sweep_at: 1024,
        }
    }

    /// The table's value equal to `value`, or `make()` (which must equal it) entered in the
    /// table, sweeping the table when it has grown to its threshold.
    pub fn intern(&mut self, value: &K, make: impl FnOnce() -> Arc<K>) -> Arc<K> {
        if let Some(shared) = self.set.get(value) {
            return shared.clone();
        }
        let made = make();
        self.set.insert(made.clone());
        if self.set.len() >= self.sweep_at {
            // Held only by the table: no status uses it any more.
            self.set.retain(|v| Arc::strong_count(v) > 1);
            self.sweep_at = (self.set.len() * 2).max(1024);
        }
        made
    }

    /// The size at which the table is next swept.
    #[cfg(test)]
    pub fn sweep_at(&self) -> usize {
        self.sweep_at
    }
}

impl<K: ?Sized + Hash + Eq> Default for Table<K> {
    fn default() -> Self {
        Table::new()
    }
}
