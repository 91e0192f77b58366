//! Checkpoints that carry what changed: a query's operator state is a JSON tree whose
//! large parts are maps (groups, windows, table rows, join buffers by key). After a full
//! snapshot, each checkpoint holds only the entries that were set or removed since the
//! one before, so a checkpoint's size follows the batch's changes, not the whole state;
//! every [`FULL_EVERY`] checkpoints a full one bounds how many a recovery applies.

use serde_json::{Map, Value, json};

/// Checkpoints between full snapshots.
pub(crate) const FULL_EVERY: usize = 64;

/// The changes from `old` to `new`: `{"set": [[path, value], ...], "del": [path, ...]}`,
/// a path being the object keys down to the entry. Objects are compared key by key,
/// anything else as a whole.
pub(crate) fn diff(old: &Value, new: &Value) -> Value {
    let mut set = Vec::new();
    let mut del = Vec::new();
    walk(old, new, &mut Vec::new(), &mut set, &mut del);
    json!({"set": set, "del": del})
}

fn walk(
    old: &Value,
    new: &Value,
    path: &mut Vec<String>,
    set: &mut Vec<Value>,
    del: &mut Vec<Value>,
) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                path.push(k.clone());
                match a.get(k) {
                    Some(o) if o == v => {}
                    Some(o) => walk(o, v, path, set, del),
                    None => set.push(json!([path, v])),
                }
                path.pop();
            }
            for k in a.keys().filter(|k| !b.contains_key(*k)) {
                path.push(k.clone());
                del.push(json!(path));
                path.pop();
            }
        }
        _ if old != new => set.push(json!([path, new])),
        _ => {}
    }
}

/// Applies a [`diff`] to `state`.
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

    #[test]
    fn applying_the_diff_gives_the_new_state() {
        let old =
            json!({"groups": {"a": [1, [2]], "b": [3, [4]], "c": 5}, "time": 9, "keep": {"x": 1}});
        let new = json!({"groups": {"a": [1, [2]], "b": [3, [5]], "d": {"z": 1}}, "time": 10, "keep": {"x": 1}});
        let d = diff(&old, &new);
        assert_eq!(
            d,
            json!({"set": [[["groups", "b"], [3, [5]]], [["groups", "d"], {"z": 1}], [["time"], 10]],
                   "del": [["groups", "c"]]})
        );
        let mut state = old.clone();
        apply(&mut state, &d);
        assert_eq!(state, new);
        // From nothing, and back to nothing.
        let mut empty = json!({});
        apply(&mut empty, &diff(&json!({}), &new));
        assert_eq!(empty, new);
        let mut state = new.clone();
        apply(&mut state, &diff(&new, &json!({})));
        assert_eq!(state, json!({}));
    }
}
