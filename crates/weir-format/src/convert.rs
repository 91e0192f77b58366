//! The one place where column values change representation: ksqlDB types to Arrow types,
//! JSON values (the common intermediate of every format) into Arrow arrays, and Arrow
//! values back to JSON values.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Field, Fields, Float64Type, Int32Type, Int64Type,
    SchemaRef, Time32MillisecondType, TimeUnit, TimestampMillisecondType,
};
use arrow_json::ReaderBuilder;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Number, Value};
use weir_sql::ast::SqlType;

/// The Arrow type that holds a ksqlDB type.
pub fn arrow_type(ty: &SqlType) -> DataType {
    match ty {
        SqlType::Boolean => DataType::Boolean,
        SqlType::Int => DataType::Int32,
        SqlType::Bigint => DataType::Int64,
        SqlType::Double => DataType::Float64,
        SqlType::Decimal { precision, scale } => {
            DataType::Decimal128(*precision as u8, *scale as i8)
        }
        SqlType::String => DataType::Utf8,
        SqlType::Bytes => DataType::Binary,
        SqlType::Date => DataType::Date32,
        SqlType::Time => DataType::Time32(TimeUnit::Millisecond),
        SqlType::Timestamp => DataType::Timestamp(TimeUnit::Millisecond, None),
        SqlType::Array(t) => DataType::List(Arc::new(Field::new("item", arrow_type(t), true))),
        SqlType::Map(k, v) => DataType::Map(
            Arc::new(Field::new(
                "entries",
                DataType::Struct(Fields::from(vec![
                    Field::new("key", arrow_type(k), false),
                    Field::new("value", arrow_type(v), true),
                ])),
                false,
            )),
            false,
        ),
        SqlType::Struct(fields) => DataType::Struct(Fields::from(
            fields
                .iter()
                .map(|f| Field::new(&f.name.value, arrow_type(&f.ty), true))
                .collect::<Vec<_>>(),
        )),
        // Custom types are resolved by the catalog before a layout is built.
        SqlType::Custom(_) => DataType::Utf8,
    }
}

/// ksqlDB reads JSON leniently: numbers written as strings, `"true"` for booleans, an
/// object or array where a STRING is declared (kept as its JSON text), struct fields in
/// any case. Brings a value to the shape its column's Arrow decoder takes.
pub fn coerce(v: Value, ty: &SqlType) -> Result<Value, String> {
    Ok(match (v, ty) {
        (Value::Null, _) => Value::Null,
        (Value::String(s), SqlType::Boolean) => match s.to_ascii_lowercase().as_str() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => {
                return Err(format!(
                    "Can't convert type. sourceType: STRING, requiredType: BOOLEAN, value: {s}"
                ));
            }
        },
        (v @ (Value::Object(_) | Value::Array(_)), SqlType::String) => Value::String(v.to_string()),
        (Value::String(s), SqlType::Bytes) => {
            let bytes = BASE64
                .decode(s.as_bytes())
                .map_err(|e| format!("Value is not valid base64: {e}"))?;
            Value::String(bytes.iter().map(|b| format!("{b:02x}")).collect())
        }
        (Value::Array(items), SqlType::Array(t)) => Value::Array(
            items
                .into_iter()
                .map(|i| coerce(i, t))
                .collect::<Result<_, _>>()?,
        ),
        (Value::Object(m), SqlType::Map(_, v)) => Value::Object(
            m.into_iter()
                .map(|(k, x)| Ok((k, coerce(x, v)?)))
                .collect::<Result<_, String>>()?,
        ),
        (Value::Object(mut m), SqlType::Struct(fields)) => {
            let mut out = Map::new();
            for f in fields {
                let name = &f.name.value;
                let found = m.remove(name).or_else(|| {
                    let k = m.keys().find(|k| k.eq_ignore_ascii_case(name)).cloned()?;
                    m.remove(&k)
                });
                out.insert(name.clone(), coerce(found.unwrap_or(Value::Null), &f.ty)?);
            }
            Value::Object(out)
        }
        (v @ Value::Object(_), t) | (v @ Value::Array(_), t)
            if !matches!(t, SqlType::Custom(_)) =>
        {
            let kind = if v.is_object() { "STRUCT" } else { "ARRAY" };
            return Err(format!(
                "Can't convert type. sourceType: {kind}, requiredType: {t}"
            ));
        }
        (v, _) => v,
    })
}

/// Builds a batch from rows of JSON values (one per schema field). Rows that do not fit
/// their columns are left out and returned with the reason, by index.
pub fn rows_to_batch(
    schema: &SchemaRef,
    rows: Vec<Vec<Value>>,
) -> (RecordBatch, Vec<(usize, String)>) {
    if schema.fields().iter().all(|f| flat(f.data_type())) {
        return flat_rows_to_batch(schema, rows);
    }
    let objects: Vec<Value> = rows
        .into_iter()
        .map(|row| {
            let map: Map<String, Value> = schema
                .fields()
                .iter()
                .zip(row)
                .map(|(f, v)| (f.name().clone(), v))
                .collect();
            Value::Object(map)
        })
        .collect();
    match build(schema, &objects) {
        Ok(batch) => (batch, Vec::new()),
        Err(_) => {
            // Find the rows at fault one by one; the rest still make a batch.
            let mut good = Vec::with_capacity(objects.len());
            let mut bad = Vec::new();
            for (i, o) in objects.into_iter().enumerate() {
                match build(schema, std::slice::from_ref(&o)) {
                    Ok(_) => good.push(o),
                    Err(e) => bad.push((i, e)),
                }
            }
            let batch =
                build(schema, &good).unwrap_or_else(|_| RecordBatch::new_empty(schema.clone()));
            (batch, bad)
        }
    }
}

fn flat(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Boolean | DataType::Int32 | DataType::Int64 | DataType::Float64 | DataType::Utf8
    )
}

enum FlatValue {
    Bool(bool),
    I64(i64),
    F64(f64),
    Str(String),
}

/// One value of a flat column, converted as arrow-json would (numbers from strings,
/// anything into a string), or why not.
fn flat_value(v: &Value, dt: &DataType) -> Result<Option<FlatValue>, String> {
    let bad = || format!("cannot convert {v} to {dt}");
    // A fractional number in an integer column is truncated, as ksqlDB (and arrow-json) do.
    let integer = |n: &Number| {
        n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite())
                .map(|f| f.trunc() as i64)
        })
    };
    Ok(Some(match (v, dt) {
        (Value::Null, _) => return Ok(None),
        (Value::Bool(b), DataType::Boolean) => FlatValue::Bool(*b),
        (Value::Number(n), DataType::Int64) => FlatValue::I64(integer(n).ok_or_else(bad)?),
        (Value::Number(n), DataType::Int32) => FlatValue::I64(
            integer(n)
                .filter(|i| i32::try_from(*i).is_ok())
                .ok_or_else(bad)?,
        ),
        (Value::String(s), DataType::Int64 | DataType::Int32) => {
            let i = s.trim().parse::<i64>().map_err(|_| bad())?;
            if *dt == DataType::Int32 && i32::try_from(i).is_err() {
                return Err(bad());
            }
            FlatValue::I64(i)
        }
        (Value::Number(n), DataType::Float64) => FlatValue::F64(n.as_f64().ok_or_else(bad)?),
        (Value::String(s), DataType::Float64) => {
            FlatValue::F64(s.trim().parse::<f64>().map_err(|_| bad())?)
        }
        (Value::String(s), DataType::Utf8) => FlatValue::Str(s.clone()),
        (Value::Number(n), DataType::Utf8) => FlatValue::Str(n.to_string()),
        (Value::Bool(b), DataType::Utf8) => FlatValue::Str(b.to_string()),
        _ => return Err(bad()),
    }))
}

/// Builds a batch of flat columns straight from the values, with no JSON objects in
/// between: the common case, and twice the work saved.
fn flat_rows_to_batch(
    schema: &SchemaRef,
    rows: Vec<Vec<Value>>,
) -> (RecordBatch, Vec<(usize, String)>) {
    use arrow::array::{BooleanBuilder, Float64Builder, Int32Builder, Int64Builder, StringBuilder};
    let mut bad = Vec::new();
    let mut converted: Vec<Vec<Option<FlatValue>>> = Vec::with_capacity(rows.len());
    for (i, row) in rows.into_iter().enumerate() {
        let typed: Result<Vec<_>, String> = schema
            .fields()
            .iter()
            .zip(row)
            .map(|(f, v)| match (v, f.data_type()) {
                // A string into a string column moves; it is not copied.
                (Value::String(s), DataType::Utf8) => Ok(Some(FlatValue::Str(s))),
                (v, dt) => flat_value(&v, dt).map_err(|e| format!("column {}: {e}", f.name())),
            })
            .collect();
        match typed {
            Ok(t) => converted.push(t),
            Err(e) => bad.push((i, e)),
        }
    }
    let n = converted.len();
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(c, f)| -> ArrayRef {
            let values = converted.iter().map(|row| row[c].as_ref());
            match f.data_type() {
                DataType::Boolean => {
                    let mut b = BooleanBuilder::with_capacity(n);
                    values.for_each(|v| {
                        b.append_option(if let Some(FlatValue::Bool(x)) = v {
                            Some(*x)
                        } else {
                            None
                        })
                    });
                    Arc::new(b.finish())
                }
                DataType::Int32 => {
                    let mut b = Int32Builder::with_capacity(n);
                    values.for_each(|v| {
                        b.append_option(if let Some(FlatValue::I64(x)) = v {
                            Some(*x as i32)
                        } else {
                            None
                        })
                    });
                    Arc::new(b.finish())
                }
                DataType::Int64 => {
                    let mut b = Int64Builder::with_capacity(n);
                    values.for_each(|v| {
                        b.append_option(if let Some(FlatValue::I64(x)) = v {
                            Some(*x)
                        } else {
                            None
                        })
                    });
                    Arc::new(b.finish())
                }
                DataType::Float64 => {
                    let mut b = Float64Builder::with_capacity(n);
                    values.for_each(|v| {
                        b.append_option(if let Some(FlatValue::F64(x)) = v {
                            Some(*x)
                        } else {
                            None
                        })
                    });
                    Arc::new(b.finish())
                }
                _ => {
                    // Sized to the bytes it will hold: long strings are not copied again
                    // each time the buffer would have grown.
                    let bytes = converted
                        .iter()
                        .map(|row| match &row[c] {
                            Some(FlatValue::Str(x)) => x.len(),
                            _ => 0,
                        })
                        .sum();
                    let mut b = StringBuilder::with_capacity(n, bytes);
                    values.for_each(|v| {
                        b.append_option(if let Some(FlatValue::Str(x)) = v {
                            Some(x.as_str())
                        } else {
                            None
                        })
                    });
                    Arc::new(b.finish())
                }
            }
        })
        .collect();
    // Pseudo-columns are non-nullable and always present, so the batch always builds.
    let batch = RecordBatch::try_new(schema.clone(), columns)
        .unwrap_or_else(|_| RecordBatch::new_empty(schema.clone()));
    (batch, bad)
}

fn build(schema: &SchemaRef, objects: &[Value]) -> Result<RecordBatch, String> {
    if objects.is_empty() {
        return Ok(RecordBatch::new_empty(schema.clone()));
    }
    let mut decoder = ReaderBuilder::new(schema.clone())
        .with_coerce_primitive(true)
        .with_batch_size(objects.len().max(1))
        .build_decoder()
        .map_err(|e| e.to_string())?;
    decoder.serialize(objects).map_err(|e| e.to_string())?;
    match decoder.flush().map_err(|e| e.to_string())? {
        Some(b) => Ok(b),
        None => Ok(RecordBatch::new_empty(schema.clone())),
    }
}

/// The value at `row` as JSON, in ksqlDB's JSON conventions (TIMESTAMP as epoch millis,
/// DATE as days, TIME as millis of day, BYTES as base64, DECIMAL as a number).
pub fn value_at(array: &ArrayRef, row: usize, ty: &SqlType) -> Value {
    if array.is_null(row) {
        return Value::Null;
    }
    match array.data_type() {
        DataType::Boolean => Value::Bool(array.as_boolean().value(row)),
        // The common types read directly: this runs for every value written.
        DataType::Int32 => Value::from(array.as_primitive::<Int32Type>().value(row)),
        DataType::Int8 | DataType::Int16 => {
            match arrow::compute::cast(&array.slice(row, 1), &DataType::Int64) {
                Ok(a) => Value::from(a.as_primitive::<Int64Type>().value(0)),
                Err(_) => Value::Null,
            }
        }
        DataType::Int64 => Value::from(array.as_primitive::<Int64Type>().value(row)),
        DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => {
            match arrow::compute::cast(&array.slice(row, 1), &DataType::Int64) {
                Ok(a) => Value::from(a.as_primitive::<Int64Type>().value(0)),
                Err(_) => Value::Null,
            }
        }
        DataType::Float32 | DataType::Float64 => {
            let v = match array.data_type() {
                DataType::Float64 => array.as_primitive::<Float64Type>().value(row),
                _ => match arrow::compute::cast(&array.slice(row, 1), &DataType::Float64) {
                    Ok(a) => a.as_primitive::<Float64Type>().value(0),
                    Err(_) => return Value::Null,
                },
            };
            // JSON has no NaN or infinities: ksqlDB writes them as strings.
            match Number::from_f64(v) {
                Some(n) => Value::Number(n),
                None if v.is_nan() => Value::String("NaN".into()),
                None if v > 0.0 => Value::String("Infinity".into()),
                None => Value::String("-Infinity".into()),
            }
        }
        DataType::Decimal128(_, scale) => {
            let raw = array.as_primitive::<Decimal128Type>().value(row);
            decimal_value(raw, *scale)
        }
        DataType::Utf8 => Value::String(array.as_string::<i32>().value(row).to_string()),
        DataType::LargeUtf8 => Value::String(array.as_string::<i64>().value(row).to_string()),
        DataType::Utf8View => Value::String(array.as_string_view().value(row).to_string()),
        DataType::Binary => Value::String(BASE64.encode(array.as_binary::<i32>().value(row))),
        DataType::Date32 => Value::from(array.as_primitive::<Date32Type>().value(row)),
        DataType::Time32(TimeUnit::Millisecond) => {
            Value::from(array.as_primitive::<Time32MillisecondType>().value(row))
        }
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            Value::from(array.as_primitive::<TimestampMillisecondType>().value(row))
        }
        DataType::Timestamp(..) => match arrow::compute::cast(
            &array.slice(row, 1),
            &DataType::Timestamp(TimeUnit::Millisecond, None),
        ) {
            Ok(a) => Value::from(a.as_primitive::<TimestampMillisecondType>().value(0)),
            Err(_) => Value::Null,
        },
        DataType::List(_) | DataType::LargeList(_) => {
            let inner_ty = match ty {
                SqlType::Array(t) => (**t).clone(),
                _ => SqlType::String,
            };
            let list = match array.data_type() {
                DataType::List(_) => array.as_list::<i32>().value(row),
                _ => array.as_list::<i64>().value(row),
            };
            Value::Array(
                (0..list.len())
                    .map(|i| value_at(&list, i, &inner_ty))
                    .collect(),
            )
        }
        DataType::Map(..) => {
            let (kt, vt) = match ty {
                SqlType::Map(k, v) => ((**k).clone(), (**v).clone()),
                _ => (SqlType::String, SqlType::String),
            };
            let entries = array.as_map().value(row);
            let keys = entries.column(0);
            let values = entries.column(1);
            let mut m = Map::new();
            for i in 0..entries.len() {
                let k = match value_at(keys, i, &kt) {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                m.insert(k, value_at(values, i, &vt));
            }
            Value::Object(m)
        }
        DataType::Struct(fields) => {
            let s = array.as_struct();
            let mut m = Map::new();
            for (i, f) in fields.iter().enumerate() {
                let fty = match ty {
                    SqlType::Struct(fs) => fs
                        .iter()
                        .find(|x| x.name.value == *f.name())
                        .map(|x| x.ty.clone()),
                    _ => None,
                }
                .unwrap_or(SqlType::String);
                m.insert(f.name().clone(), value_at(s.column(i), row, &fty));
            }
            Value::Object(m)
        }
        _ => match arrow::compute::cast(&array.slice(row, 1), &DataType::Utf8) {
            Ok(a) => Value::String(a.as_string::<i32>().value(0).to_string()),
            Err(_) => Value::Null,
        },
    }
}

/// A decimal as a JSON number with exactly its scale's digits (`1.20` stays `1.20`).
fn decimal_value(raw: i128, scale: i8) -> Value {
    let text = decimal_text(raw, scale);
    serde_json::from_str::<Number>(&text)
        .map(Value::Number)
        .unwrap_or(Value::String(text))
}

pub fn decimal_text(raw: i128, scale: i8) -> String {
    if scale <= 0 {
        return (raw * 10i128.pow((-scale) as u32)).to_string();
    }
    let neg = raw < 0;
    let digits = raw.unsigned_abs().to_string();
    let scale = scale as usize;
    let padded = if digits.len() <= scale {
        format!("{}{digits}", "0".repeat(scale + 1 - digits.len()))
    } else {
        digits
    };
    let (int, frac) = padded.split_at(padded.len() - scale);
    format!("{}{int}.{frac}", if neg { "-" } else { "" })
}
