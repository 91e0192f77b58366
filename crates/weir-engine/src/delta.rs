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

/// A checkpoint's delta as the operators write it: each entry serialized straight from
/// their state (no JSON tree built and dropped per entry), joined into the record at
/// the end.
#[derive(Debug, Default)]
pub(crate) struct DeltaText {
    set: Vec<String>,
    del: Vec<String>,
}

impl DeltaText {
    /// The entry at `path` (an array of keys) is `value`.
    pub fn set(&mut self, path: impl serde::Serialize, value: impl serde::Serialize) {
        self.set
            .push(serde_json::to_string(&(path, value)).expect("state serializes"));
    }

    /// The entry at `path` is gone.
    pub fn del(&mut self, path: impl serde::Serialize) {
        self.del
            .push(serde_json::to_string(&path).expect("paths serialize"));
    }

    /// `{"set": [...], "del": [...]}`, the form [`apply`] reads.
    pub fn to_json(&self) -> String {
        format!(
            "{{\"set\":[{}],\"del\":[{}]}}",
            self.set.join(","),
            self.del.join(",")
        )
    }
}

/// Applies a delta, `{"set": [[path, value], ...], "del": [path, ...]}` (a path being
/// the object keys down to the entry), to `state`.
pub(crate) fn apply(state: &mut Value, delta: &Value) {
    for entry in delta["set"].as_array().into_iter().flatten() {
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
}
