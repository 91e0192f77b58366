//! JSON: an object with one field per column (names matched regardless of case), or the
//! bare value when a single column is not wrapped (`WRAP_SINGLE_VALUE=false`, and keys).

use serde_json::{Map, Value};

use crate::layout::Column;

pub(crate) fn decode(
    bytes: &[u8],
    cols: &[Column],
    wrap_single: bool,
) -> Result<Vec<Value>, String> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("Invalid JSON: {e}"))?;
    if cols.len() == 1 && !wrap_single {
        return Ok(vec![v]);
    }
    match v {
        Value::Object(mut m) => Ok(cols
            .iter()
            .map(|c| {
                m.remove(&c.name)
                    .or_else(|| {
                        let k = m
                            .keys()
                            .find(|k| k.eq_ignore_ascii_case(&c.name))
                            .cloned()?;
                        m.remove(&k)
                    })
                    .unwrap_or(Value::Null)
            })
            .collect()),
        Value::Null => Ok(vec![Value::Null; cols.len()]),
        other => Err(format!(
            "Can't convert type. sourceType: {}, requiredType: STRUCT",
            json_kind(&other)
        )),
    }
}

pub(crate) fn encode(cols: &[Column], values: Vec<Value>, wrap_single: bool) -> Vec<u8> {
    let v = if cols.len() == 1 && !wrap_single {
        values.into_iter().next().unwrap_or(Value::Null)
    } else {
        Value::Object(
            cols.iter()
                .map(|c| c.name.clone())
                .zip(values)
                .collect::<Map<_, _>>(),
        )
    };
    serde_json::to_vec(&v).expect("JSON values serialize")
}

pub(crate) fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "NULL",
        Value::Bool(_) => "BOOLEAN",
        Value::Number(n) if n.is_f64() => "DOUBLE",
        Value::Number(_) => "BIGINT",
        Value::String(_) => "STRING",
        Value::Array(_) => "ARRAY",
        Value::Object(_) => "STRUCT",
    }
}
