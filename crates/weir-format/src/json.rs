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
    columns(v, cols, wrap_single)
}

/// A decoded value's columns: its fields by name (regardless of case), or the value itself
/// for one unwrapped column.
pub(crate) fn columns(v: Value, cols: &[Column], wrap_single: bool) -> Result<Vec<Value>, String> {
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

/// Whether a column of this Arrow and SQL type can be written by [`encode_flat_row`].
pub(crate) fn writes_flat(dt: &arrow::datatypes::DataType, ty: &weir_sql::ast::SqlType) -> bool {
    use arrow::datatypes::DataType as D;
    use weir_sql::ast::SqlType as S;
    matches!(
        (dt, ty),
        (D::Boolean, S::Boolean)
            | (D::Int32, S::Int)
            | (D::Int64, S::Bigint)
            | (D::Float64, S::Double)
            | (D::Utf8, S::String)
    )
}

/// One row of flat columns as a JSON object, byte for byte what [`encode`] writes for the
/// same values (NaN and infinities as strings, as ksqlDB writes them).
pub(crate) fn encode_flat_row(
    names: &[Vec<u8>],
    arrays: &[&arrow::array::ArrayRef],
    row: usize,
) -> Vec<u8> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{DataType as D, Float64Type, Int32Type, Int64Type};
    let mut out = Vec::with_capacity(16 * names.len() + 2);
    out.push(b'{');
    for (i, (name, a)) in names.iter().zip(arrays).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(name);
        out.push(b':');
        if a.is_null(row) {
            out.extend_from_slice(b"null");
            continue;
        }
        let written = match a.data_type() {
            D::Boolean => serde_json::to_writer(&mut out, &a.as_boolean().value(row)),
            D::Int32 => serde_json::to_writer(&mut out, &a.as_primitive::<Int32Type>().value(row)),
            D::Int64 => serde_json::to_writer(&mut out, &a.as_primitive::<Int64Type>().value(row)),
            D::Float64 => {
                let f = a.as_primitive::<Float64Type>().value(row);
                if f.is_finite() {
                    serde_json::to_writer(&mut out, &f)
                } else if f.is_nan() {
                    serde_json::to_writer(&mut out, "NaN")
                } else if f > 0.0 {
                    serde_json::to_writer(&mut out, "Infinity")
                } else {
                    serde_json::to_writer(&mut out, "-Infinity")
                }
            }
            _ => serde_json::to_writer(&mut out, a.as_string::<i32>().value(row)),
        };
        written.expect("writing JSON to a Vec cannot fail");
    }
    out.push(b'}');
    out
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

#[cfg(test)]
mod flat_tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, StringArray};
    use weir_sql::ast::SqlType;

    use crate::convert::value_at;
    use crate::layout::Column;

    #[test]
    fn the_flat_writer_writes_what_the_general_encoder_writes() {
        let arrays: Vec<ArrayRef> = vec![
            Arc::new(BooleanArray::from(vec![Some(true), None, Some(false)])),
            Arc::new(Int32Array::from(vec![Some(-7), Some(i32::MAX), None])),
            Arc::new(Int64Array::from(vec![None, Some(i64::MIN), Some(0)])),
            Arc::new(Float64Array::from(vec![
                Some(1.0),
                Some(f64::NAN),
                Some(-1.5e300),
            ])),
            Arc::new(Float64Array::from(vec![
                Some(f64::INFINITY),
                Some(0.1),
                Some(f64::NEG_INFINITY),
            ])),
            Arc::new(StringArray::from(vec![Some("é\"\n\\"), None, Some("")])),
        ];
        let types = [
            SqlType::Boolean,
            SqlType::Int,
            SqlType::Bigint,
            SqlType::Double,
            SqlType::Double,
            SqlType::String,
        ];
        let cols: Vec<Column> = types
            .iter()
            .enumerate()
            .map(|(i, t)| Column::new(format!("C{i}\u{e9}"), t.clone()))
            .collect();
        let names: Vec<Vec<u8>> = cols
            .iter()
            .map(|c| serde_json::to_vec(&c.name).unwrap())
            .collect();
        let refs: Vec<&ArrayRef> = arrays.iter().collect();
        for row in 0..3 {
            assert!(
                arrays
                    .iter()
                    .zip(&types)
                    .all(|(a, t)| super::writes_flat(a.data_type(), t))
            );
            let values = arrays
                .iter()
                .zip(&types)
                .map(|(a, t)| value_at(a, row, t))
                .collect();
            assert_eq!(
                String::from_utf8(super::encode_flat_row(&names, &refs, row)).unwrap(),
                String::from_utf8(super::encode(&cols, values, true)).unwrap()
            );
        }
    }
}
