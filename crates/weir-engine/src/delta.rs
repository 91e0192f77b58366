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

/// A checkpoint's delta as the operators write it, in binary: each entry serialized
/// straight from their state into one buffer (no JSON tree built and dropped per entry).
/// Operations, each a tag byte then its fields (`bytes` = u32 LE length, then the bytes):
///
/// ```text
/// GROUP n:u8 name:bytes{n}          the path the PUTs after it are under
/// PUT   prefix:bytes key:bytes value:bytes   entry `prefix + base64(key)` = base64(value)
/// SET   json:bytes                  `[path, value]`, any JSON value
/// DEL   json:bytes                  a path, removed
/// ```
///
/// [`decode`] reads it back into the form [`apply`] applies (the same a JSON delta
/// had, so checkpoints written as JSON by earlier versions still restore).
#[derive(Debug, Default)]
pub(crate) struct Delta {
    buf: Vec<u8>,
    /// The path of the last GROUP, while PUTs follow it.
    open: Option<Vec<&'static str>>,
}

const GROUP: u8 = 1;
const PUT: u8 = 2;
const SET: u8 = 3;
const DEL: u8 = 4;

fn put_bytes(buf: &mut Vec<u8>, b: &[u8]) {
    buf.extend_from_slice(&(b.len() as u32).to_le_bytes());
    buf.extend_from_slice(b);
}

impl Delta {
    /// A delta written after `bytes` (in their buffer, whose capacity is reused).
    pub fn after(bytes: Vec<u8>) -> Delta {
        Delta {
            buf: bytes,
            open: None,
        }
    }

    /// The entry at `path` (an array of keys) is `value`.
    pub fn set(&mut self, path: impl serde::Serialize, value: impl serde::Serialize) {
        self.open = None;
        self.buf.push(SET);
        let entry = serde_json::to_vec(&(path, value)).expect("state serializes");
        put_bytes(&mut self.buf, &entry);
    }

    /// The entry at `path` then `prefix + base64(key)` is `base64(value)` (as a snapshot
    /// names and holds it); consecutive entries under one path share one GROUP.
    pub fn put(&mut self, path: &[&'static str], prefix: &str, key: &[u8], value: &[u8]) {
        if self.open.as_deref() != Some(path) {
            self.buf.push(GROUP);
            self.buf.push(path.len() as u8);
            for p in path {
                put_bytes(&mut self.buf, p.as_bytes());
            }
            self.open = Some(path.to_vec());
        }
        self.buf.push(PUT);
        put_bytes(&mut self.buf, prefix.as_bytes());
        put_bytes(&mut self.buf, key);
        put_bytes(&mut self.buf, value);
    }

    /// The entry at `path` is gone.
    pub fn del(&mut self, path: impl serde::Serialize) {
        self.buf.push(DEL);
        put_bytes(
            &mut self.buf,
            &serde_json::to_vec(&path).expect("paths serialize"),
        );
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}

/// A binary delta ([`Delta`]) as `{"set": [...], "del": [...]}`, the form [`apply`]
/// reads; `None` if it is damaged.
pub(crate) fn decode(mut b: &[u8]) -> Option<Value> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD_NO_PAD;
    fn take<'a>(b: &mut &'a [u8]) -> Option<&'a [u8]> {
        let (len, rest) = b.split_first_chunk::<4>()?;
        let len = u32::from_le_bytes(*len) as usize;
        let (field, rest) = (rest.get(..len)?, rest.get(len..)?);
        *b = rest;
        Some(field)
    }
    let (mut set, mut del): (Vec<Value>, Vec<Value>) = (Vec::new(), Vec::new());
    let mut group: Option<(Value, Map<String, Value>)> = None;
    let close = |group: &mut Option<(Value, Map<String, Value>)>, set: &mut Vec<Value>| {
        if let Some((path, put)) = group.take() {
            set.push(serde_json::json!({"in": path, "put": put}));
        }
    };
    while let Some((&op, rest)) = b.split_first() {
        b = rest;
        match op {
            GROUP => {
                close(&mut group, &mut set);
                let (&n, rest) = b.split_first()?;
                b = rest;
                let mut path = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    path.push(Value::String(
                        std::str::from_utf8(take(&mut b)?).ok()?.into(),
                    ));
                }
                group = Some((Value::Array(path), Map::new()));
            }
            PUT => {
                let prefix = std::str::from_utf8(take(&mut b)?).ok()?;
                let (key, value) = (take(&mut b)?, take(&mut b)?);
                let mut name = String::with_capacity(prefix.len() + key.len() * 4 / 3 + 4);
                name.push_str(prefix);
                b64.encode_string(key, &mut name);
                group
                    .as_mut()?
                    .1
                    .insert(name, Value::String(b64.encode(value)));
            }
            SET => {
                close(&mut group, &mut set);
                set.push(serde_json::from_slice(take(&mut b)?).ok()?);
            }
            DEL => del.push(serde_json::from_slice(take(&mut b)?).ok()?),
            _ => return None,
        }
    }
    close(&mut group, &mut set);
    Some(serde_json::json!({"set": set, "del": del}))
}

/// The first byte of a checkpoint written with a binary delta: the record is this, the
/// header's length (u32 LE), the header (JSON: the checkpoint's fields, with
/// `"delta": true`), then the delta ([`Delta`]). Other checkpoints are JSON text.
pub(crate) const BINARY: u8 = 0xB1;

/// A checkpoint record's value (its parts joined) as JSON, its delta decoded.
pub fn parse_checkpoint(value: &[u8]) -> Option<Value> {
    if value.first() != Some(&BINARY) {
        return serde_json::from_slice(value).ok();
    }
    let (header, ops) = split_binary(value)?;
    let mut v: Value = serde_json::from_slice(header).ok()?;
    v["delta"] = decode(ops)?;
    Some(v)
}

/// A checkpoint record's fields without its state: the header of a binary one, the
/// whole text of a JSON one.
pub(crate) fn checkpoint_head(value: &[u8]) -> Option<&[u8]> {
    if value.first() != Some(&BINARY) {
        return Some(value);
    }
    split_binary(value).map(|(header, _)| header)
}

fn split_binary(value: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = u32::from_le_bytes(value.get(1..5)?.try_into().ok()?) as usize;
    Some((value.get(5..5 + len)?, value.get(5 + len..)?))
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
        let mut delta = Delta::default();
        delta.put(&["aggregate", "groups"], "1/2/", b"a", b"x");
        delta.put(&["aggregate", "groups"], "1/2/", b"b", b"y");
        delta.set(("aggregate", "late"), 3);
        delta.put(&["join", "rows"], "", b"c", b"z");
        let delta = decode(&delta.into_bytes()).unwrap();
        assert_eq!(delta.to_string().matches("\"put\"").count(), 2, "{delta}");
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
        let mut delta = Delta::default();
        delta.put(&["aggregate", "groups"], "10/20/", b"key", b"new state");
        delta.del(("aggregate", "groups", "10/20/a2V5"));
        delta.del(("aggregate", "groups", "gone"));
        let delta = decode(&delta.into_bytes()).unwrap();
        let mut state = json!({"aggregate": {"groups": {"10/20/a2V5": "old", "gone": "x"}}});
        apply(&mut state, &delta);
        assert_eq!(
            state,
            json!({"aggregate": {"groups": {"10/20/a2V5": "bmV3IHN0YXRl"}}})
        );
    }

    /// A binary checkpoint reads back as the JSON one would; a damaged one not at all.
    #[test]
    fn a_binary_checkpoint_parses_as_its_json_form() {
        let mut delta = Delta::default();
        delta.put(&["aggregate", "groups"], "", b"k", b"v");
        let header = br#"{"query":"Q","offsets":[3],"delta":true}"#;
        let mut record = vec![BINARY];
        record.extend_from_slice(&(header.len() as u32).to_le_bytes());
        record.extend_from_slice(header);
        record.extend_from_slice(&delta.into_bytes());
        let v = parse_checkpoint(&record).unwrap();
        assert_eq!(v["query"], "Q");
        assert_eq!(v["delta"]["set"][0]["put"]["aw"], "dg");
        assert_eq!(checkpoint_head(&record), Some(&header[..]));
        assert!(parse_checkpoint(&record[..record.len() - 1]).is_none());
        assert_eq!(parse_checkpoint(br#"{"query":"Q"}"#).unwrap()["query"], "Q");
    }
}
