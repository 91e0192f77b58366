//! Operator state that remembers what changed: a map keyed by text whose every change
//! goes through it, recording the keys touched since a checkpoint last took them. A
//! checkpoint then carries those entries (or their removal) instead of the whole state,
//! and costs what the batch changed, not what the state holds.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
type FastSet<K> = HashSet<K, foldhash::fast::RandomState>;

/// The map types a [`Tracked`] can hold.
pub(crate) trait KeyMap<V>: Default {
    fn get(&self, k: &str) -> Option<&V>;
    fn get_mut(&mut self, k: &str) -> Option<&mut V>;
    fn insert(&mut self, k: String, v: V) -> Option<V>;
    fn remove(&mut self, k: &str) -> Option<V>;
    fn keys_vec(&self) -> Vec<String>;
}

impl<V> KeyMap<V> for FastMap<String, V> {
    fn get(&self, k: &str) -> Option<&V> {
        HashMap::get(self, k)
    }
    fn get_mut(&mut self, k: &str) -> Option<&mut V> {
        HashMap::get_mut(self, k)
    }
    fn insert(&mut self, k: String, v: V) -> Option<V> {
        HashMap::insert(self, k, v)
    }
    fn remove(&mut self, k: &str) -> Option<V> {
        HashMap::remove(self, k)
    }
    fn keys_vec(&self) -> Vec<String> {
        self.keys().cloned().collect()
    }
}

impl<V> KeyMap<V> for BTreeMap<String, V> {
    fn get(&self, k: &str) -> Option<&V> {
        BTreeMap::get(self, k)
    }
    fn get_mut(&mut self, k: &str) -> Option<&mut V> {
        BTreeMap::get_mut(self, k)
    }
    fn insert(&mut self, k: String, v: V) -> Option<V> {
        BTreeMap::insert(self, k, v)
    }
    fn remove(&mut self, k: &str) -> Option<V> {
        BTreeMap::remove(self, k)
    }
    fn keys_vec(&self) -> Vec<String> {
        self.keys().cloned().collect()
    }
}

/// A map of state and the keys changed since [`Tracked::take_changes`] last ran.
/// Serialized as the map alone; read back with nothing changed.
#[derive(Debug, Clone)]
pub(crate) struct Tracked<M, V> {
    map: M,
    /// Off (the default) on engines that keep no checkpoints: nothing is recorded.
    tracking: bool,
    changed: FastSet<String>,
    /// Keys added since then: one removed again by the next take was never saved.
    born: FastSet<String>,
    _v: std::marker::PhantomData<V>,
}

impl<M: KeyMap<V>, V> Default for Tracked<M, V> {
    fn default() -> Self {
        Self {
            map: M::default(),
            tracking: false,
            changed: FastSet::default(),
            born: FastSet::default(),
            _v: std::marker::PhantomData,
        }
    }
}

impl<M: KeyMap<V>, V: Serialize> Tracked<M, V> {
    /// Records changes from now on (or stops, forgetting them).
    pub fn set_tracking(&mut self, on: bool) {
        self.tracking = on;
        if !on {
            self.clear_changes();
        }
    }

    fn mark(&mut self, k: &str) {
        if self.tracking && !self.changed.contains(k) {
            self.changed.insert(k.to_string());
        }
    }

    pub fn get(&self, k: &str) -> Option<&V> {
        self.map.get(k)
    }

    pub fn contains_key(&self, k: &str) -> bool {
        self.map.get(k).is_some()
    }

    /// The entry to change (counted as changed).
    pub fn get_mut(&mut self, k: &str) -> Option<&mut V> {
        self.map.get_mut(k)?;
        self.mark(k);
        self.map.get_mut(k)
    }

    pub fn insert(&mut self, k: String, v: V) -> Option<V> {
        self.mark(&k);
        let key = self.tracking.then(|| k.clone());
        let old = self.map.insert(k, v);
        if let (None, Some(key)) = (&old, key) {
            self.born.insert(key);
        }
        old
    }

    pub fn remove(&mut self, k: &str) -> Option<V> {
        let old = self.map.remove(k);
        if old.is_some() {
            self.mark(k);
        }
        old
    }

    /// The entry for `k`, made with `V::default()` when missing (counted as changed).
    pub fn entry_or_default(&mut self, k: String) -> &mut V
    where
        V: Default,
    {
        if self.map.get(&k).is_none() {
            self.map.insert(k.clone(), V::default());
            if self.tracking {
                self.born.insert(k.clone());
            }
        }
        self.mark(&k);
        self.map.get_mut(&k).expect("just inserted")
    }

    /// Changes every entry with `f`, removing those it says to drop (`false`); only
    /// entries `f` reports as changed (or drops) count as changed.
    pub fn update_all(&mut self, mut f: impl FnMut(&mut V) -> (bool, bool)) {
        for k in self.map.keys_vec() {
            let v = self.map.get_mut(&k).expect("listed");
            let (changed, keep) = f(v);
            if !keep {
                self.map.remove(&k);
                self.mark(&k);
            } else if changed {
                self.mark(&k);
            }
        }
    }

    /// Appends, under `path`, `[path + key, value]` to `set` for each changed entry still
    /// there and `path + key` to `del` for each removed one; forgets the changes.
    pub fn take_changes(&mut self, path: &[&str], delta: &mut crate::delta::Delta) {
        let changed: Vec<String> = self.changed.drain().collect();
        for k in changed {
            let mut p: Vec<&str> = path.to_vec();
            p.push(k.as_str());
            match self.map.get(&k) {
                Some(v) => delta.set(&p, v),
                None if self.born.contains(&k) => {}
                None => delta.del(&p),
            }
        }
        self.born.clear();
    }

    /// Forgets the changes (a full snapshot was taken).
    pub fn clear_changes(&mut self) {
        self.changed.clear();
        self.born.clear();
    }
}

impl<M: Serialize, V> Serialize for Tracked<M, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.map.serialize(s)
    }
}

impl<'de, M: Deserialize<'de>, V> Deserialize<'de> for Tracked<M, V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Self {
            map: M::deserialize(d)?,
            tracking: false,
            changed: FastSet::default(),
            born: FastSet::default(),
            _v: std::marker::PhantomData,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_name_what_was_set_and_removed_since_the_last_take() {
        use crate::delta::Delta;
        let take = |t: &mut Tracked<BTreeMap<String, i64>, i64>| {
            let mut d = Delta::default();
            t.take_changes(&["m"], &mut d);
            let v = crate::delta::decode(&d.into_bytes()).unwrap();
            let mut set = v["set"].as_array().unwrap().clone();
            let mut del = v["del"].as_array().unwrap().clone();
            set.sort_by_key(|e| e.to_string());
            del.sort_by_key(|e| e.to_string());
            (set, del)
        };
        let mut t: Tracked<BTreeMap<String, i64>, i64> = Tracked::default();
        t.insert("untracked".into(), 0);
        t.remove("untracked");
        t.set_tracking(true);
        t.insert("a".into(), 1);
        t.insert("b".into(), 2);
        let (set, del) = take(&mut t);
        assert_eq!(
            set,
            [
                serde_json::json!([["m", "a"], 1]),
                serde_json::json!([["m", "b"], 2])
            ]
        );
        assert!(del.is_empty());
        *t.get_mut("a").unwrap() = 5;
        t.remove("b");
        t.remove("nothing");
        *t.entry_or_default("c".into()) += 3;
        t.update_all(|v| (false, *v != 3));
        let (set, del) = take(&mut t);
        assert_eq!(set, [serde_json::json!([["m", "a"], 5])]);
        // c was made after the last take and is gone again: nothing to remove.
        assert_eq!(del, [serde_json::json!(["m", "b"])]);
        assert_eq!(
            serde_json::to_value(&t).unwrap(),
            serde_json::json!({"a": 5})
        );
        // Made and gone again between two takes: never saved, nothing to remove.
        t.insert("brief".into(), 1);
        t.remove("brief");
        let (set, del) = take(&mut t);
        assert!(set.is_empty() && del.is_empty(), "{set:?} {del:?}");
    }
}
