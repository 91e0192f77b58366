//! Groups: grouping key values in arrow's row format, interned to dense key ids, and
//! per (key, window) a dense group id that indexes every accumulator's vectors.
//!
//! A group removed in a batch (a window purged, a session merged away) keeps its slot
//! until the batch ends, so the batch's changes can still read its key and window; then
//! the slot is reused, and a key no group uses any more is forgotten.

use std::collections::HashMap;

use arrow::array::ArrayRef;
use arrow::datatypes::DataType;
use arrow::row::Rows;

use crate::error::Result;
use crate::rowcodec::RowCodec;

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The window part of an unwindowed group's identity.
const NO_WINDOW: (i64, i64) = (i64::MIN, i64::MIN);
/// A key whose source partition is not known (or not noted).
pub(crate) const NO_PARTITION: u32 = u32::MAX;

/// One group slot.
#[derive(Debug, Clone)]
pub(crate) struct Slot {
    pub key: u32,
    pub window: Option<(i64, i64)>,
    /// The latest record timestamp it has seen.
    pub time: i64,
    /// Its last change was a row (not a tombstone or nothing): HAVING failing now
    /// retracts it.
    pub emitted: bool,
    pub live: bool,
    /// Session windows: the (source offset, argument row) of every row in it, to fold
    /// again when sessions merge.
    pub inputs: Vec<(i64, Box<[u8]>)>,
}

#[derive(Debug, Clone)]
struct Key {
    bytes: Box<[u8]>,
    /// The source partition its rows come from (servers sharing a GROUP BY of the key;
    /// [`NO_PARTITION`] until known).
    partition: u32,
    /// Its live groups: (window start, end, group id), sorted by window, found by a binary
    /// search (one when unwindowed; the open windows of a time window; the sessions).
    groups: smallvec::SmallVec<[(i64, i64, u32); 2]>,
}

#[derive(Debug, Clone)]
pub(crate) struct Groups {
    codec: RowCodec,
    key_ids: FastMap<Box<[u8]>, u32>,
    keys: Vec<Key>,
    free_keys: Vec<u32>,
    /// Keys that may have no group left: checked at the end of the batch.
    unused: Vec<u32>,
    pub slots: Vec<Slot>,
    free: Vec<u32>,
    /// Removed during this batch: free after it.
    freed: Vec<u32>,
}

impl Groups {
    pub fn new(key_types: &[DataType]) -> Result<Groups> {
        Ok(Groups {
            codec: RowCodec::new(key_types)?,
            key_ids: FastMap::default(),
            keys: Vec::new(),
            free_keys: Vec::new(),
            unused: Vec::new(),
            slots: Vec::new(),
            free: Vec::new(),
            freed: Vec::new(),
        })
    }

    /// The key columns of a batch as rows.
    pub fn encode(&self, columns: &[ArrayRef]) -> Result<Rows> {
        self.codec.encode(columns)
    }

    /// The key id of these key bytes, made if new.
    pub fn intern(&mut self, bytes: &[u8]) -> u32 {
        if let Some(&k) = self.key_ids.get(bytes) {
            return k;
        }
        let key = Key {
            bytes: bytes.into(),
            partition: NO_PARTITION,
            groups: Default::default(),
        };
        let k = match self.free_keys.pop() {
            Some(k) => {
                self.keys[k as usize] = key;
                k
            }
            None => {
                self.keys.push(key);
                (self.keys.len() - 1) as u32
            }
        };
        self.key_ids.insert(bytes.into(), k);
        self.unused.push(k);
        k
    }

    /// The key id of these key bytes, if a group has them.
    pub fn key_id(&self, bytes: &[u8]) -> Option<u32> {
        self.key_ids.get(bytes).copied()
    }

    /// The source partition key `key`'s rows come from ([`NO_PARTITION`] if not known).
    pub fn partition(&self, key: u32) -> u32 {
        self.keys[key as usize].partition
    }

    pub fn set_partition(&mut self, key: u32, partition: u32) {
        self.keys[key as usize].partition = partition;
    }

    pub fn key_bytes(&self, key: u32) -> &[u8] {
        &self.keys[key as usize].bytes
    }

    pub fn find(&self, key: u32, window: Option<(i64, i64)>) -> Option<u32> {
        let (s, e) = window.unwrap_or(NO_WINDOW);
        let groups = &self.keys[key as usize].groups;
        groups
            .binary_search_by(|(gs, ge, _)| (*gs, *ge).cmp(&(s, e)))
            .ok()
            .map(|i| groups[i].2)
    }

    /// A new group (the caller knows there is none for this key and window).
    pub fn insert(&mut self, key: u32, window: Option<(i64, i64)>) -> u32 {
        let slot = Slot {
            key,
            window,
            time: i64::MIN,
            emitted: false,
            live: true,
            inputs: Vec::new(),
        };
        let g = match self.free.pop() {
            Some(g) => {
                self.slots[g as usize] = slot;
                g
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        };
        let (s, e) = window.unwrap_or(NO_WINDOW);
        let groups = &mut self.keys[key as usize].groups;
        let at = groups.partition_point(|(gs, ge, _)| (*gs, *ge) < (s, e));
        groups.insert(at, (s, e, g));
        g
    }

    /// Removes a group; its slot stays readable until [`Groups::end_batch`].
    pub fn remove(&mut self, g: u32) {
        let slot = &mut self.slots[g as usize];
        if !slot.live {
            return;
        }
        slot.live = false;
        slot.inputs = Vec::new();
        let (s, e) = slot.window.unwrap_or(NO_WINDOW);
        let key = &mut self.keys[slot.key as usize];
        if let Ok(i) = key
            .groups
            .binary_search_by(|(gs, ge, _)| (*gs, *ge).cmp(&(s, e)))
        {
            key.groups.remove(i);
        }
        if key.groups.is_empty() {
            self.unused.push(slot.key);
        }
        self.freed.push(g);
    }

    /// The groups removed during this batch.
    pub fn freed(&self) -> &[u32] {
        &self.freed
    }

    /// The batch is done: removed groups' slots and unused keys can be reused.
    pub fn end_batch(&mut self) {
        self.free.append(&mut self.freed);
        for k in std::mem::take(&mut self.unused) {
            let key = &mut self.keys[k as usize];
            if key.groups.is_empty() && !key.bytes.is_empty() {
                self.key_ids.remove(&key.bytes);
                key.bytes = Box::default();
                self.free_keys.push(k);
            }
        }
    }

    /// Every group goes.
    pub fn clear(&mut self) {
        self.key_ids.clear();
        self.keys.clear();
        self.free_keys.clear();
        self.unused.clear();
        self.slots.clear();
        self.free.clear();
        self.freed.clear();
    }

    /// The key columns of these groups, in order.
    pub fn key_columns(&self, groups: impl Iterator<Item = u32>) -> Result<Vec<ArrayRef>> {
        self.codec
            .decode(groups.map(|g| self.key_bytes(self.slots[g as usize].key)))
    }

    /// The live groups.
    pub fn live(&self) -> impl Iterator<Item = u32> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.live)
            .map(|(g, _)| g as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_found_by_key_and_window_and_their_slots_reused_after_the_batch() {
        let mut groups = Groups::new(&[DataType::Utf8]).unwrap();
        let keys: ArrayRef = std::sync::Arc::new(arrow::array::StringArray::from(vec!["a", "b"]));
        let rows = groups.encode(&[keys]).unwrap();
        let (a, b) = (
            groups.intern(rows.row(0).as_ref()),
            groups.intern(rows.row(1).as_ref()),
        );
        // Windows made out of order are still found (a hopping window's many per key).
        let mut made = Vec::new();
        for start in [30, 10, 20, 0] {
            made.push((start, groups.insert(a, Some((start, start + 40)))));
        }
        let unwindowed = groups.insert(b, None);
        for (start, g) in &made {
            assert_eq!(groups.find(a, Some((*start, start + 40))), Some(*g));
        }
        assert_eq!(groups.find(a, Some((5, 45))), None);
        assert_eq!(groups.find(b, None), Some(unwindowed));
        // A removed group is gone at once; its slot is reused only after the batch.
        groups.remove(made[1].1);
        assert_eq!(groups.find(a, Some((10, 50))), None);
        assert_eq!(groups.find(a, Some((20, 60))), Some(made[2].1));
        let fresh = groups.insert(a, Some((40, 80)));
        assert_ne!(fresh, made[1].1);
        groups.end_batch();
        assert_eq!(groups.insert(a, Some((50, 90))), made[1].1);
        // A key left with no group is forgotten at the end of the batch.
        groups.remove(unwindowed);
        groups.end_batch();
        assert_eq!(groups.live().count(), 5);
        let again = groups.intern(b"never seen");
        assert_eq!(again, b, "the forgotten key's id is reused");
    }
}
