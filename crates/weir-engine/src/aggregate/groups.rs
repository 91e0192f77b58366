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
    /// Live groups with this key.
    groups: u32,
}

#[derive(Debug, Clone)]
pub(crate) struct Groups {
    codec: RowCodec,
    key_ids: FastMap<Box<[u8]>, u32>,
    keys: Vec<Key>,
    free_keys: Vec<u32>,
    /// Keys that may have no group left: checked at the end of the batch.
    unused: Vec<u32>,
    index: FastMap<(u32, i64, i64), u32>,
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
            index: FastMap::default(),
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
            groups: 0,
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

    pub fn key_bytes(&self, key: u32) -> &[u8] {
        &self.keys[key as usize].bytes
    }

    pub fn find(&self, key: u32, window: Option<(i64, i64)>) -> Option<u32> {
        let (s, e) = window.unwrap_or(NO_WINDOW);
        self.index.get(&(key, s, e)).copied()
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
        self.index.insert((key, s, e), g);
        self.keys[key as usize].groups += 1;
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
        self.index.remove(&(slot.key, s, e));
        let key = &mut self.keys[slot.key as usize];
        key.groups -= 1;
        if key.groups == 0 {
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
            if key.groups == 0 && !key.bytes.is_empty() {
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
        self.index.clear();
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
