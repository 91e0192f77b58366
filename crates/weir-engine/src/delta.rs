//! Checkpoints that carry what changed: a query's operator state is a JSON tree whose
//! large parts are maps (groups, windows, table rows, join buffers by key). After a full
//! snapshot, each checkpoint holds only the entries that were set or removed since the
//! one before, as the operators report them (`Aggregator::take_changes`,
//! `Joiner::take_changes`), so a checkpoint's cost follows the batch's changes, not the
//! whole state; every [`FULL_EVERY`] checkpoints a full one bounds how many a recovery
//! applies.

use serde_json::{Map, Value};

/// Checkpoints between full snapshots.
pub(crate) const FULL_EVERY: usize = 64;

/// A full snapshot is also taken once the deltas written since the last one add up to
/// its size, but no sooner than this many bytes of them: a small state's checkpoints stay
/// deltas (a few bytes each), a large one's are bounded to about twice the state.
pub(crate) const FULL_AFTER_DELTA_BYTES: usize = 1 << 20;

/// A checkpoint's delta as the operators write it: each entry serialized straight from
/// their state into one buffer (no JSON tree built and dropped per entry), the record's
/// text before it included ([`DeltaText::after`]), so the record is written once.
#[derive(Debug)]
pub(crate) struct DeltaText {
    /// The text before the delta, `{"set":[`, then the set entries.
    set: String,
    /// Where the set entries start in `set`.
    set_start: usize,
    /// The path of the group of entries `set` ends with, still open (see
    /// [`DeltaText::set_base64`]).
    open: Option<Vec<&'static str>>,
    del: String,
}

impl Default for DeltaText {
    fn default() -> Self {
        DeltaText::after(String::new())
    }
}

impl DeltaText {
    /// A delta written after `text` (in its buffer, whose capacity is reused).
    pub fn after(mut text: String) -> DeltaText {
        text.push_str("{\"set\":[");
        DeltaText {
            set_start: text.len(),
            set: text,
            open: None,
            del: String::new(),
        }
    }

    fn next_set(&mut self) {
        self.close_group();
        if self.set.len() > self.set_start {
            self.set.push(',');
        }
    }

    /// Ends the open group of entries, if any.
    fn close_group(&mut self) {
        if self.open.take().is_some() {
            self.set.push_str("}}");
        }
    }

    /// The entry at `path` (an array of keys) is `value`.
    pub fn set(&mut self, path: impl serde::Serialize, value: impl serde::Serialize) {
        self.next_set();
        let entry = serde_json::to_string(&(path, value)).expect("state serializes");
        self.set.push_str(&entry);
    }

    /// The entry at `path` then `prefix + base64(key)` is `base64(value)` (`path` and
    /// `prefix` need no JSON escaping; base64 never does). Consecutive entries under one
    /// path (a step's groups) go into one object, `{"in": path, "put": {name: value,
    /// ...}}`, so the path is written once, not per entry.
    pub fn set_base64(&mut self, path: &[&'static str], prefix: &str, key: &[u8], value: &[u8]) {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD_NO_PAD;
        if self.open.as_deref() == Some(path) {
            self.set.push(',');
        } else {
            self.next_set();
            self.set.push_str("{\"in\":[");
            for (i, p) in path.iter().enumerate() {
                if i > 0 {
                    self.set.push(',');
                }
                self.set.push('"');
                self.set.push_str(p);
                self.set.push('"');
            }
            self.set.push_str("],\"put\":{");
            self.open = Some(path.to_vec());
        }
        self.set.push('"');
        self.set.push_str(prefix);
        b64.encode_string(key, &mut self.set);
        self.set.push_str("\":\"");
        b64.encode_string(value, &mut self.set);
        self.set.push('"');
    }

    /// The entry at `path` is gone.
    pub fn del(&mut self, path: impl serde::Serialize) {
        if !self.del.is_empty() {
            self.del.push(',');
        }
        self.del
            .push_str(&serde_json::to_string(&path).expect("paths serialize"));
    }

    /// The text before the delta, then `{"set": [...], "del": [...]}` (the form
    /// [`apply`] reads).
    pub fn into_json(mut self) -> String {
        self.close_group();
        self.set.push_str("],\"del\":[");
        self.set.push_str(&self.del);
        self.set.push_str("]}");
        self.set
    }
}

/// Applies a delta, `{"set": [[path, value] or {"in": path, "put": {name: value, ...}},
/// ...], "del": [path, ...]}` (a path being the object keys down to the entry), to
/// `state`.
pub(crate) fn apply(state: &mut Value, delta: &Value) {
    // Removals first: an entry removed and made again since the last checkpoint (a
    // group's slot reused) is in both, and stays.
    remove(state, delta);
    for entry in delta["set"].as_array().into_iter().flatten() {
        if let Some(put) = entry.get("put").and_then(Value::as_object) {
            let mut at = &mut *state;
            for k in keys(&entry["in"]) {
                if !at.is_object() {
                    *at = Value::Object(Map::new());
                }
                at = at
                    .as_object_mut()
                    .expect("an object")
                    .entry(k)
                    .or_insert_with(|| Value::Object(Map::new()));
            }
            if !at.is_object() {
                *at = Value::Object(Map::new());
            }
            let m = at.as_object_mut().expect("an object");
            for (k, v) in put {
                m.insert(k.clone(), v.clone());
            }
            continue;
        }
        let path = keys(&entry[0]);
        let Some((last, parents)) = path.split_last() else {
            *state = entry[1].clone();
            continue;
        };
        let mut at = &mut *state;
        for k in parents {
            if !at.is_object() {
                *at = Value::Object(Map::new());
            }
            at = at
                .as_object_mut()
                .expect("an object")
                .entry(k.clone())
                .or_insert_with(|| Value::Object(Map::new()));
        }
        if !at.is_object() {
            *at = Value::Object(Map::new());
        }
        at.as_object_mut()
            .expect("an object")
            .insert(last.clone(), entry[1].clone());
    }
}

/// The delta's removals.
fn remove(state: &mut Value, delta: &Value) {
    for path in delta["del"].as_array().into_iter().flatten() {
        let path = keys(path);
        let Some((last, parents)) = path.split_last() else {
            continue;
        };
        let mut at = Some(&mut *state);
        for k in parents {
            at = at.and_then(|v| v.get_mut(k));
        }
        if let Some(Value::Object(m)) = at {
            m.remove(last);
        }
    }
}

fn keys(path: &Value) -> Vec<String> {
    path.as_array()
        .into_iter()
        .flatten()
        .filter_map(|k| k.as_str().map(String::from))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn applying_a_delta_sets_and_removes_entries() {
        let old =
            json!({"groups": {"a": [1, [2]], "b": [3, [4]], "c": 5}, "time": 9, "keep": {"x": 1}});
        let delta = json!({"set": [[["groups", "b"], [3, [5]]], [["groups", "d"], {"z": 1}], [["time"], 10]],
                           "del": [["groups", "c"], ["groups", "never"]]});
        let mut state = old.clone();
        apply(&mut state, &delta);
        assert_eq!(
            state,
            json!({"groups": {"a": [1, [2]], "b": [3, [5]], "d": {"z": 1}}, "time": 10, "keep": {"x": 1}})
        );
        // Into nothing: the objects on the way are made.
        let mut empty = json!({});
        apply(&mut empty, &json!({"set": [[["m", "k"], 1]], "del": []}));
        assert_eq!(empty, json!({"m": {"k": 1}}));
    }

    #[test]
    fn entries_under_one_path_are_written_as_one_group_and_applied_as_many() {
        let mut delta = DeltaText::default();
        delta.set_base64(&["aggregate", "groups"], "1/2/", b"a", b"x");
        delta.set_base64(&["aggregate", "groups"], "1/2/", b"b", b"y");
        delta.set(("aggregate", "late"), 3);
        delta.set_base64(&["join", "rows"], "", b"c", b"z");
        let text = delta.into_json();
        assert_eq!(text.matches("\"put\"").count(), 2, "{text}");
        let delta: Value = serde_json::from_str(&text).unwrap();
        let mut state = json!({"aggregate": {"groups": {"old": "o"}}});
        apply(&mut state, &delta);
        assert_eq!(
            state,
            json!({"aggregate": {"groups": {"old": "o", "1/2/YQ": "eA", "1/2/Yg": "eQ"}, "late": 3},
                   "join": {"rows": {"Yw": "eg"}}})
        );
    }

    #[test]
    fn an_entry_removed_and_made_again_stays() {
        let mut delta = DeltaText::default();
        delta.set_base64(&["aggregate", "groups"], "10/20/", b"key", b"new state");
        delta.del(("aggregate", "groups", "10/20/a2V5"));
        delta.del(("aggregate", "groups", "gone"));
        let delta: Value = serde_json::from_str(&delta.into_json()).unwrap();
        let mut state = json!({"aggregate": {"groups": {"10/20/a2V5": "old", "gone": "x"}}});
        apply(&mut state, &delta);
        assert_eq!(
            state,
            json!({"aggregate": {"groups": {"10/20/a2V5": "bmV3IHN0YXRl"}}})
        );
    }
}
