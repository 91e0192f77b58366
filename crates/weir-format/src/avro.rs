//! AVRO: Avro's binary encoding, read and written by walking the writer's (or the sink's)
//! schema, straight to and from the JSON values every format goes through. Schemas for
//! columns are made as ksqlDB makes them (a record `KsqlDataSourceSchema` in namespace
//! `io.confluent.ksql.avro_schemas`, every field an optional union with a null default),
//! and columns are read back from a registered schema (ksqlDB's schema inference).

use std::collections::HashMap;

use apache_avro::Schema;
use apache_avro::schema::{Name, ResolvedSchema};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Number, Value, json};
use weir_sql::ast::{Ident, SqlType, StructFieldType};

use crate::layout::Column;

pub const DEFAULT_NAME: &str = "KsqlDataSourceSchema";
pub const DEFAULT_NAMESPACE: &str = "io.confluent.ksql.avro_schemas";

/// A parsed Avro schema with its named types, for following references.
#[derive(Debug)]
pub struct AvroSchema {
    pub root: Schema,
    names: HashMap<Name, Schema>,
}

impl AvroSchema {
    pub fn parse(text: &str) -> Result<AvroSchema, String> {
        let root = Schema::parse_str(text).map_err(|e| e.to_string())?;
        let names = ResolvedSchema::try_from(&root)
            .map_err(|e| e.to_string())?
            .get_names()
            .iter()
            .map(|(n, s)| (n.clone(), (*s).clone()))
            .collect();
        Ok(AvroSchema { root, names })
    }

    fn resolve<'a>(&'a self, s: &'a Schema) -> Result<&'a Schema, String> {
        match s {
            Schema::Ref { name } => self
                .names
                .get(name)
                .ok_or_else(|| format!("Avro schema refers to unknown type {}", name.name)),
            s => Ok(s),
        }
    }

    /// Decodes one datum (the body after any framing) as a JSON value.
    pub fn decode(&self, mut body: &[u8]) -> Result<Value, String> {
        let v = self.read(&self.root, &mut body)?;
        Ok(v)
    }

    /// Reads past one value of `s` (a field no column wants).
    pub(crate) fn skip(&self, s: &Schema, buf: &mut &[u8]) -> Result<(), String> {
        self.read(s, buf).map(|_| ())
    }

    /// Encodes a JSON value as one datum of this schema.
    pub fn encode(&self, v: &Value, out: &mut Vec<u8>) -> Result<(), String> {
        self.write(&self.root, v, out)
    }

    fn read(&self, s: &Schema, buf: &mut &[u8]) -> Result<Value, String> {
        let s = self.resolve(s)?;
        Ok(match s {
            Schema::Null => Value::Null,
            Schema::Boolean => Value::Bool(take(buf, 1)?[0] != 0),
            Schema::Int | Schema::Long | Schema::Date | Schema::TimeMillis => {
                Value::from(read_long(buf)?)
            }
            Schema::TimestampMillis | Schema::LocalTimestampMillis => Value::from(read_long(buf)?),
            Schema::TimeMicros | Schema::TimestampMicros | Schema::LocalTimestampMicros => {
                Value::from(read_long(buf)?.div_euclid(1_000))
            }
            Schema::TimestampNanos | Schema::LocalTimestampNanos => {
                Value::from(read_long(buf)?.div_euclid(1_000_000))
            }
            Schema::Float => float(f32::from_le_bytes(take(buf, 4)?.try_into().expect("4")) as f64),
            Schema::Double => float(f64::from_le_bytes(take(buf, 8)?.try_into().expect("8"))),
            Schema::Bytes => Value::String(BASE64.encode(read_bytes(buf)?)),
            Schema::Fixed(f) => Value::String(BASE64.encode(take(buf, f.size)?)),
            Schema::String | Schema::Uuid => Value::String(
                std::str::from_utf8(read_bytes(buf)?)
                    .map_err(|e| format!("Avro string is not UTF-8: {e}"))?
                    .to_string(),
            ),
            Schema::Enum(e) => {
                let i = read_long(buf)?;
                Value::String(
                    e.symbols
                        .get(i as usize)
                        .ok_or_else(|| format!("Avro enum index {i} out of range"))?
                        .clone(),
                )
            }
            Schema::Array(a) => {
                let mut items = Vec::new();
                read_blocks(buf, |buf| {
                    items.push(self.read(&a.items, buf)?);
                    Ok(())
                })?;
                Value::Array(items)
            }
            Schema::Map(m) => {
                let mut entries = Map::new();
                read_blocks(buf, |buf| {
                    let k = std::str::from_utf8(read_bytes(buf)?)
                        .map_err(|e| format!("Avro map key is not UTF-8: {e}"))?
                        .to_string();
                    entries.insert(k, self.read(&m.types, buf)?);
                    Ok(())
                })?;
                Value::Object(entries)
            }
            Schema::Union(u) => {
                let i = read_long(buf)?;
                let branch = u
                    .variants()
                    .get(i as usize)
                    .ok_or_else(|| format!("Avro union index {i} out of range"))?;
                self.read(branch, buf)?
            }
            Schema::Record(r) => {
                let mut o = Map::new();
                for f in &r.fields {
                    o.insert(f.name.clone(), self.read(&f.schema, buf)?);
                }
                Value::Object(o)
            }
            Schema::Decimal(d) => {
                let raw = match self.resolve(&d.inner)? {
                    Schema::Fixed(f) => take(buf, f.size)?,
                    _ => read_bytes(buf)?,
                };
                let unscaled = twos_complement(raw)?;
                let text = crate::convert::decimal_text(unscaled, d.scale as i8);
                serde_json::from_str::<Number>(&text)
                    .map(Value::Number)
                    .unwrap_or(Value::String(text))
            }
            Schema::BigDecimal | Schema::Duration | Schema::Ref { .. } => {
                return Err(format!("Avro type {s:?} is not supported"));
            }
        })
    }

    fn write(&self, s: &Schema, v: &Value, out: &mut Vec<u8>) -> Result<(), String> {
        let s = self.resolve(s)?;
        let mismatch = || format!("cannot write {} as Avro {}", kind(v), avro_kind(s));
        match s {
            Schema::Union(u) => {
                let (i, branch) = u
                    .variants()
                    .iter()
                    .enumerate()
                    .find(|(_, b)| self.accepts(b, v))
                    .ok_or_else(mismatch)?;
                write_long(i as i64, out);
                return self.write(branch, v, out);
            }
            Schema::Null if v.is_null() => {}
            Schema::Boolean => out.push(match v {
                Value::Bool(b) => *b as u8,
                Value::String(s) if s.eq_ignore_ascii_case("true") => 1,
                Value::String(s) if s.eq_ignore_ascii_case("false") => 0,
                _ => return Err(mismatch()),
            }),
            Schema::Int | Schema::Date | Schema::TimeMillis => {
                let i = integer(v).ok_or_else(mismatch)?;
                let i = i32::try_from(i).map_err(|_| format!("{i} does not fit an Avro int"))?;
                write_long(i as i64, out);
            }
            Schema::Long | Schema::TimestampMillis | Schema::LocalTimestampMillis => {
                write_long(integer(v).ok_or_else(mismatch)?, out)
            }
            Schema::TimeMicros | Schema::TimestampMicros | Schema::LocalTimestampMicros => {
                write_long(integer(v).ok_or_else(mismatch)? * 1_000, out)
            }
            Schema::TimestampNanos | Schema::LocalTimestampNanos => {
                write_long(integer(v).ok_or_else(mismatch)? * 1_000_000, out)
            }
            Schema::Float => {
                out.extend_from_slice(&(double(v).ok_or_else(mismatch)? as f32).to_le_bytes())
            }
            Schema::Double => out.extend_from_slice(&double(v).ok_or_else(mismatch)?.to_le_bytes()),
            Schema::Bytes => {
                let b = bytes(v).ok_or_else(mismatch)?;
                write_long(b.len() as i64, out);
                out.extend_from_slice(&b);
            }
            Schema::Fixed(f) => {
                let b = bytes(v).ok_or_else(mismatch)?;
                if b.len() != f.size {
                    return Err(format!(
                        "Avro fixed of size {} given {} bytes",
                        f.size,
                        b.len()
                    ));
                }
                out.extend_from_slice(&b);
            }
            Schema::String | Schema::Uuid => {
                let text = match v {
                    Value::String(s) => s.clone(),
                    Value::Null => return Err(mismatch()),
                    other => other.to_string(),
                };
                write_long(text.len() as i64, out);
                out.extend_from_slice(text.as_bytes());
            }
            Schema::Enum(e) => {
                let sym = v.as_str().ok_or_else(mismatch)?;
                let i = e.symbols.iter().position(|s| s == sym).ok_or_else(|| {
                    format!("'{sym}' is not a symbol of Avro enum {}", e.name.name)
                })?;
                write_long(i as i64, out);
            }
            Schema::Array(a) => {
                let items = v.as_array().ok_or_else(mismatch)?;
                if !items.is_empty() {
                    write_long(items.len() as i64, out);
                    for i in items {
                        self.write(&a.items, i, out)?;
                    }
                }
                write_long(0, out);
            }
            Schema::Map(m) => {
                let entries = v.as_object().ok_or_else(mismatch)?;
                if !entries.is_empty() {
                    write_long(entries.len() as i64, out);
                    for (k, x) in entries {
                        write_long(k.len() as i64, out);
                        out.extend_from_slice(k.as_bytes());
                        self.write(&m.types, x, out)?;
                    }
                }
                write_long(0, out);
            }
            Schema::Record(r) => {
                let o = v.as_object().ok_or_else(mismatch)?;
                for f in &r.fields {
                    let x = o
                        .get(&f.name)
                        .or_else(|| {
                            o.iter()
                                .find(|(k, _)| k.eq_ignore_ascii_case(&f.name))
                                .map(|(_, x)| x)
                        })
                        .or(f.default.as_ref())
                        .unwrap_or(&Value::Null);
                    self.write(&f.schema, x, out)
                        .map_err(|e| format!("field {}: {e}", f.name))?;
                }
            }
            Schema::Decimal(d) => {
                let unscaled = unscaled(v, d.scale as u32).ok_or_else(mismatch)?;
                let mut b = unscaled.to_be_bytes().to_vec();
                match self.resolve(&d.inner)? {
                    Schema::Fixed(f) => {
                        let b = b.split_off(16usize.saturating_sub(f.size));
                        out.extend_from_slice(&b);
                    }
                    _ => {
                        // The shortest two's complement that keeps the sign.
                        while b.len() > 1
                            && ((b[0] == 0 && b[1] & 0x80 == 0)
                                || (b[0] == 0xff && b[1] & 0x80 != 0))
                        {
                            b.remove(0);
                        }
                        write_long(b.len() as i64, out);
                        out.extend_from_slice(&b);
                    }
                }
            }
            _ => return Err(mismatch()),
        }
        Ok(())
    }

    /// Whether a union branch takes this value (the first that does is written).
    fn accepts(&self, s: &Schema, v: &Value) -> bool {
        let Ok(s) = self.resolve(s) else {
            return false;
        };
        match (s, v) {
            (Schema::Null, Value::Null) => true,
            (_, Value::Null) => false,
            (Schema::Boolean, Value::Bool(_)) => true,
            (Schema::Boolean, Value::String(s)) => {
                s.eq_ignore_ascii_case("true") || s.eq_ignore_ascii_case("false")
            }
            (
                Schema::Int
                | Schema::Long
                | Schema::Date
                | Schema::TimeMillis
                | Schema::TimeMicros
                | Schema::TimestampMillis
                | Schema::TimestampMicros
                | Schema::TimestampNanos
                | Schema::LocalTimestampMillis
                | Schema::LocalTimestampMicros
                | Schema::LocalTimestampNanos,
                v,
            ) => integer(v).is_some(),
            (Schema::Float | Schema::Double, v) => double(v).is_some(),
            (Schema::Decimal(d), v) => unscaled(v, d.scale as u32).is_some(),
            (
                Schema::String | Schema::Uuid | Schema::Bytes | Schema::Fixed(_),
                Value::String(_),
            ) => true,
            (Schema::Enum(e), Value::String(s)) => e.symbols.contains(s),
            (Schema::Array(_), Value::Array(_)) => true,
            (Schema::Map(_), Value::Object(_)) => true,
            (Schema::Record(r), Value::Object(o)) => o.keys().all(|k| {
                r.fields
                    .iter()
                    .any(|f| f.name == *k || f.name.eq_ignore_ascii_case(k))
            }),
            _ => false,
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn avro_kind(s: &Schema) -> String {
    match s {
        Schema::Record(r) => format!("record {}", r.name.name),
        other => format!("{:?}", apache_avro::schema::SchemaKind::from(other)).to_lowercase(),
    }
}

pub(crate) fn float(f: f64) -> Value {
    match Number::from_f64(f) {
        Some(n) => Value::Number(n),
        None if f.is_nan() => Value::String("NaN".into()),
        None if f > 0.0 => Value::String("Infinity".into()),
        None => Value::String("-Infinity".into()),
    }
}

fn integer(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| {
            let f = n.as_f64()?;
            (f.fract() == 0.0).then_some(f as i64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn double(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            s => s.trim().parse().ok(),
        },
        _ => None,
    }
}

fn bytes(v: &Value) -> Option<Vec<u8>> {
    BASE64.decode(v.as_str()?).ok()
}

/// A decimal's digits at `scale` (rounded half up where the text has more), from its text.
pub fn unscaled(v: &Value, scale: u32) -> Option<i128> {
    let text = match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.trim().to_string(),
        _ => return None,
    };
    let (mantissa, exp) = match text.find(['e', 'E']) {
        Some(i) => (&text[..i], text[i + 1..].parse::<i32>().ok()?),
        None => (text.as_str(), 0),
    };
    let neg = mantissa.starts_with('-');
    let digits = mantissa.trim_start_matches(['-', '+']);
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let all: String = format!("{int}{frac}");
    if all.is_empty() || !all.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // value = all × 10^(exp − frac.len()); wanted: value × 10^scale.
    let shift = exp - frac.len() as i32 + scale as i32;
    let mut n: i128 = all.parse().ok()?;
    if shift >= 0 {
        n = n.checked_mul(10i128.checked_pow(shift as u32)?)?;
    } else {
        let d = 10i128.checked_pow((-shift) as u32).unwrap_or(i128::MAX);
        let (q, r) = (n / d, n % d);
        n = if r * 2 >= d { q + 1 } else { q };
    }
    Some(if neg { -n } else { n })
}

fn take<'a>(buf: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
    if buf.len() < n {
        return Err("record ends early".into());
    }
    let (head, rest) = buf.split_at(n);
    *buf = rest;
    Ok(head)
}

/// A zig-zag varint (Avro's int and long; Confluent's Protobuf message indexes).
pub(crate) fn read_long(buf: &mut &[u8]) -> Result<i64, String> {
    let mut n: u64 = 0;
    let mut shift = 0;
    loop {
        let b = take(buf, 1)?[0];
        if shift >= 64 {
            return Err("varint too long".into());
        }
        n |= ((b & 0x7f) as u64) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    Ok((n >> 1) as i64 ^ -((n & 1) as i64))
}

pub(crate) fn write_long(v: i64, out: &mut Vec<u8>) {
    let mut n = ((v << 1) ^ (v >> 63)) as u64;
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn read_bytes<'a>(buf: &mut &'a [u8]) -> Result<&'a [u8], String> {
    let n = read_long(buf)?;
    if n < 0 {
        return Err("negative Avro length".into());
    }
    take(buf, n as usize)
}

fn read_blocks(
    buf: &mut &[u8],
    mut each: impl FnMut(&mut &[u8]) -> Result<(), String>,
) -> Result<(), String> {
    loop {
        let mut count = read_long(buf)?;
        if count == 0 {
            return Ok(());
        }
        if count < 0 {
            count = -count;
            read_long(buf)?; // the block's size in bytes
        }
        for _ in 0..count {
            each(buf)?;
        }
    }
}

fn twos_complement(b: &[u8]) -> Result<i128, String> {
    if b.len() > 16 {
        return Err("Avro decimal wider than 38 digits".into());
    }
    let fill = if b.first().is_some_and(|x| x & 0x80 != 0) {
        0xff
    } else {
        0
    };
    let mut full = [fill; 16];
    full[16 - b.len()..].copy_from_slice(b);
    Ok(i128::from_be_bytes(full))
}

/// Whether a column name can be an Avro (or Protobuf) field name.
pub(crate) fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The Avro schema ksqlDB writes for `cols`: a record, or the single column's type when it
/// is not wrapped. `full_name`: the record's name (`VALUE_SCHEMA_FULL_NAME`).
pub fn schema_for(cols: &[Column], wrap: bool, full_name: Option<&str>) -> Result<Value, String> {
    let full = full_name.unwrap_or("");
    let (namespace, name) = match full.rsplit_once('.') {
        Some((ns, n)) => (Some(ns), n),
        None if full.is_empty() => (Some(DEFAULT_NAMESPACE), DEFAULT_NAME),
        None => (None, full),
    };
    if cols.len() == 1 && !wrap {
        return Ok(optional(type_for(&cols[0].ty, name)?));
    }
    let mut record = record_for(cols.iter().map(|c| (c.name.as_str(), &c.ty)), name)?;
    if let Some(ns) = namespace {
        record["namespace"] = json!(ns);
    }
    Ok(record)
}

fn record_for<'a>(
    fields: impl Iterator<Item = (&'a str, &'a SqlType)>,
    name: &str,
) -> Result<Value, String> {
    let mut out = Vec::new();
    for (field, ty) in fields {
        if !valid_name(field) {
            return Err(format!(
                "Schema is not compatible with Avro: Illegal initial character: {field}"
            ));
        }
        out.push(json!({"name": field, "type": optional(type_for(ty, &format!("{name}_{field}"))?), "default": null}));
    }
    Ok(json!({"type": "record", "name": name, "fields": out}))
}

fn optional(t: Value) -> Value {
    json!(["null", t])
}

fn type_for(ty: &SqlType, name: &str) -> Result<Value, String> {
    Ok(match ty {
        SqlType::Boolean => json!("boolean"),
        SqlType::Int => json!("int"),
        SqlType::Bigint => json!("long"),
        SqlType::Double => json!("double"),
        SqlType::String => json!("string"),
        SqlType::Bytes => json!("bytes"),
        SqlType::Decimal { precision, scale } => {
            json!({"type": "bytes", "logicalType": "decimal", "precision": precision, "scale": scale})
        }
        SqlType::Date => json!({"type": "int", "logicalType": "date"}),
        SqlType::Time => json!({"type": "int", "logicalType": "time-millis"}),
        SqlType::Timestamp => json!({"type": "long", "logicalType": "timestamp-millis"}),
        SqlType::Array(t) => json!({"type": "array", "items": optional(type_for(t, name)?)}),
        SqlType::Map(k, v) => {
            if **k != SqlType::String {
                return Err(format!("Avro only supports MAPs with STRING keys, got {k}"));
            }
            json!({"type": "map", "values": optional(type_for(v, name)?)})
        }
        SqlType::Struct(fields) => {
            record_for(fields.iter().map(|f| (f.name.value.as_str(), &f.ty)), name)?
        }
        SqlType::Custom(n) => return Err(format!("type {n} was not resolved")),
    })
}

/// The columns a registered schema gives (ksqlDB's schema inference): a record's fields,
/// or one column `default_name` for any other type (then not wrapped: `false`).
pub fn columns_of(schema: &AvroSchema, default_name: &str) -> Result<(Vec<Column>, bool), String> {
    let root = schema.resolve(&schema.root)?;
    match unwrap_optional(root) {
        Schema::Record(r) => Ok((
            r.fields
                .iter()
                .map(|f| Ok(Column::new(f.name.clone(), schema.sql_type(&f.schema, 0)?)))
                .collect::<Result<_, String>>()?,
            true,
        )),
        other => Ok((
            vec![Column::new(default_name, schema.sql_type(other, 0)?)],
            false,
        )),
    }
}

fn unwrap_optional(s: &Schema) -> &Schema {
    match s {
        Schema::Union(u) => {
            let non_null: Vec<&Schema> = u
                .variants()
                .iter()
                .filter(|v| !matches!(v, Schema::Null))
                .collect();
            if non_null.len() == 1 { non_null[0] } else { s }
        }
        s => s,
    }
}

impl AvroSchema {
    fn sql_type(&self, s: &Schema, depth: usize) -> Result<SqlType, String> {
        if depth > 64 {
            return Err("Avro schema nests too deeply (a recursive type?)".into());
        }
        let s = unwrap_optional(self.resolve(s)?);
        Ok(match self.resolve(s)? {
            Schema::Boolean => SqlType::Boolean,
            Schema::Int => SqlType::Int,
            Schema::Long => SqlType::Bigint,
            Schema::Float | Schema::Double => SqlType::Double,
            Schema::String | Schema::Enum(_) | Schema::Uuid => SqlType::String,
            Schema::Bytes | Schema::Fixed(_) => SqlType::Bytes,
            Schema::Decimal(d) => SqlType::Decimal {
                precision: d.precision as u32,
                scale: d.scale as u32,
            },
            Schema::Date => SqlType::Date,
            Schema::TimeMillis | Schema::TimeMicros => SqlType::Time,
            Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos => SqlType::Timestamp,
            Schema::Array(a) => SqlType::Array(Box::new(self.sql_type(&a.items, depth + 1)?)),
            Schema::Map(m) => SqlType::Map(
                Box::new(SqlType::String),
                Box::new(self.sql_type(&m.types, depth + 1)?),
            ),
            Schema::Record(r) => SqlType::Struct(
                r.fields
                    .iter()
                    .map(|f| {
                        Ok(StructFieldType {
                            name: Ident::new(f.name.clone()),
                            ty: self.sql_type(&f.schema, depth + 1)?,
                        })
                    })
                    .collect::<Result<_, String>>()?,
            ),
            Schema::Union(_) => {
                return Err("Avro unions of several types are not supported".into());
            }
            other => return Err(format!("Avro type {other:?} is not supported")),
        })
    }
}
