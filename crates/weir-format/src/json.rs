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

/// Whether a column of this Arrow and SQL type can be written by [`FlatWriter`].
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

/// A flat column's array, its type looked up once for the batch.
enum FlatColumn<'a> {
    Bool(&'a arrow::array::BooleanArray),
    Int(&'a [i32]),
    Bigint(&'a [i64]),
    Double(&'a [f64]),
    Str(&'a arrow::array::StringArray),
}

/// Writes rows of flat columns as JSON objects, byte for byte what [`encode`] writes for
/// the same values (NaN and infinities as strings, as ksqlDB writes them): the arrays'
/// types are matched once per batch, numbers written by the formatters serde_json uses.
pub(crate) struct FlatWriter<'a> {
    /// Each column's name as a JSON string and `:`, after `{` or `,`.
    names: Vec<Vec<u8>>,
    columns: Vec<(FlatColumn<'a>, Option<&'a arrow::buffer::NullBuffer>)>,
    /// The bytes a row is given first: its names and punctuation, and a little per value.
    guess: usize,
}

impl<'a> FlatWriter<'a> {
    /// A writer for these columns (names and arrays in order); `None` when one is not of
    /// a type [`writes_flat`] accepts.
    pub(crate) fn new(cols: &[Column], arrays: &[&'a arrow::array::ArrayRef]) -> Option<Self> {
        use arrow::array::{Array, AsArray};
        use arrow::datatypes::{DataType as D, Float64Type, Int32Type, Int64Type};
        let mut names = Vec::with_capacity(cols.len());
        let mut columns = Vec::with_capacity(cols.len());
        for (i, (c, a)) in cols.iter().zip(arrays.iter().copied()).enumerate() {
            if !writes_flat(a.data_type(), &c.ty) {
                return None;
            }
            let mut name = vec![if i == 0 { b'{' } else { b',' }];
            serde_json::to_writer(&mut name, &c.name).expect("strings serialize");
            name.push(b':');
            names.push(name);
            let column = match a.data_type() {
                D::Boolean => FlatColumn::Bool(a.as_boolean()),
                D::Int32 => FlatColumn::Int(a.as_primitive::<Int32Type>().values()),
                D::Int64 => FlatColumn::Bigint(a.as_primitive::<Int64Type>().values()),
                D::Float64 => FlatColumn::Double(a.as_primitive::<Float64Type>().values()),
                _ => FlatColumn::Str(a.as_string::<i32>()),
            };
            columns.push((column, a.nulls().filter(|n| n.null_count() > 0)));
        }
        let guess = names.iter().map(Vec::len).sum::<usize>() + 12 * names.len() + 2;
        Some(FlatWriter {
            names,
            columns,
            guess,
        })
    }

    /// Row `row` as a JSON object.
    pub(crate) fn row(&self, row: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.guess);
        if self.names.is_empty() {
            out.push(b'{');
        }
        for (name, (column, nulls)) in self.names.iter().zip(&self.columns) {
            out.extend_from_slice(name);
            if nulls.is_some_and(|n| n.is_null(row)) {
                out.extend_from_slice(b"null");
                continue;
            }
            match column {
                FlatColumn::Bool(a) => {
                    out.extend_from_slice(if a.value(row) { b"true" } else { b"false" })
                }
                FlatColumn::Int(v) => {
                    out.extend_from_slice(itoa::Buffer::new().format(v[row]).as_bytes())
                }
                FlatColumn::Bigint(v) => {
                    out.extend_from_slice(itoa::Buffer::new().format(v[row]).as_bytes())
                }
                FlatColumn::Double(v) => {
                    let f = v[row];
                    if f.is_finite() {
                        out.extend_from_slice(zmij::Buffer::new().format_finite(f).as_bytes());
                    } else if f.is_nan() {
                        out.extend_from_slice(b"\"NaN\"");
                    } else if f > 0.0 {
                        out.extend_from_slice(b"\"Infinity\"");
                    } else {
                        out.extend_from_slice(b"\"-Infinity\"");
                    }
                }
                FlatColumn::Str(a) => {
                    let s = a.value(row);
                    // serde_json escapes `"`, `\\` and control characters only.
                    if s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
                        serde_json::to_writer(&mut out, s).expect("writing to a Vec");
                    } else {
                        out.push(b'"');
                        out.extend_from_slice(s.as_bytes());
                        out.push(b'"');
                    }
                }
            }
        }
        out.push(b'}');
        out
    }
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

    /// Writes every row of `arrays` with the flat writer and with the general encoder.
    fn both_writers(arrays: &[ArrayRef], types: &[SqlType]) {
        let cols: Vec<Column> = types
            .iter()
            .enumerate()
            .map(|(i, t)| Column::new(format!("C{i}\u{e9}\"\n"), t.clone()))
            .collect();
        let refs: Vec<&ArrayRef> = arrays.iter().collect();
        let writer = super::FlatWriter::new(&cols, &refs).expect("flat columns");
        for row in 0..arrays[0].len() {
            let values = arrays
                .iter()
                .zip(types)
                .map(|(a, t)| value_at(a, row, t))
                .collect();
            assert_eq!(
                String::from_utf8(writer.row(row)).unwrap(),
                String::from_utf8(super::encode(&cols, values, true)).unwrap()
            );
        }
    }

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
        for (a, t) in arrays.iter().zip(&types) {
            assert!(super::writes_flat(a.data_type(), t));
        }
        both_writers(&arrays, &types);
        // No columns: an empty object.
        let none = super::FlatWriter::new(&[], &[]).expect("no columns");
        assert_eq!(none.row(0), b"{}");
    }

    /// Seeded values of every flat type (doubles of every magnitude and sign, integers at
    /// their bounds, strings with quotes, backslashes, control and non-ASCII characters,
    /// nulls), written by both writers.
    #[test]
    fn the_flat_writer_matches_the_general_encoder_on_seeded_values() {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let rows = 20_000;
        let (mut b, mut i, mut l, mut d, mut s) = (vec![], vec![], vec![], vec![], vec![]);
        let pieces = [
            "a", "é", "\"", "\\", "\u{1}", "\u{1f}", " ", "\u{7f}", "€", "\t", "/",
        ];
        for _ in 0..rows {
            let null = next() % 7 == 0;
            b.push((!null).then(|| next() % 2 == 0));
            i.push((!null).then(|| match next() % 4 {
                0 => i32::MIN,
                1 => i32::MAX,
                _ => next() as i32,
            }));
            l.push((!null).then(|| match next() % 4 {
                0 => i64::MIN,
                1 => i64::MAX,
                _ => (next() as i64) >> (next() % 63),
            }));
            d.push((!null).then(|| match next() % 8 {
                0 => f64::from_bits(next()),
                1 => (next() % 100_000) as f64 / 100.0,
                2 => -((next() % 1_000) as f64) * 1.609,
                3 => [0.0, -0.0, f64::MIN_POSITIVE, f64::MAX, 5e-324, 1e16, 1e-7]
                    [next() as usize % 7],
                _ => (next() as f64) * 10f64.powi((next() % 80) as i32 - 40),
            }));
            s.push((!null).then(|| {
                (0..next() % 6)
                    .map(|_| pieces[next() as usize % pieces.len()])
                    .collect::<String>()
            }));
        }
        let arrays: Vec<ArrayRef> = vec![
            Arc::new(BooleanArray::from(b)),
            Arc::new(Int32Array::from(i)),
            Arc::new(Int64Array::from(l)),
            Arc::new(Float64Array::from(d)),
            Arc::new(StringArray::from(s)),
        ];
        both_writers(
            &arrays,
            &[
                SqlType::Boolean,
                SqlType::Int,
                SqlType::Bigint,
                SqlType::Double,
                SqlType::String,
            ],
        );
    }
}
