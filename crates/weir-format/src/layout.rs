//! A source's record layout: which columns come from the key and which from the value, and
//! in what format each side is written.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use serde_json::Value;
use weir_log::StoredRecord;
use weir_sql::ast::SqlType;

use crate::convert::{arrow_type, rows_to_batch, value_at};

/// `ROWTIME` (record timestamp, ms), `ROWPARTITION`, `ROWOFFSET`: first in every decoded batch.
pub const PSEUDO_COLUMNS: [&str; 3] = ["ROWTIME", "ROWPARTITION", "ROWOFFSET"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Delimited,
    Kafka,
    /// No data on this side (`KEY_FORMAT='NONE'`): no columns may come from it.
    None,
    /// Avro in Confluent's wire format: magic byte 0, the writer schema's registry id,
    /// then the Avro binary body.
    Avro,
    /// Protobuf in Confluent's wire format (magic byte, schema id, message indexes).
    Protobuf,
    /// Protobuf without the registry framing: the schema is the columns'.
    ProtobufNoSr,
    /// JSON text after Confluent's framing, its JSON schema in the registry.
    JsonSr,
}

impl Format {
    /// The format named in `WITH (...)`, case-insensitively.
    pub fn from_name(name: &str) -> Result<Format, FormatError> {
        match name.to_ascii_uppercase().as_str() {
            "JSON" => Ok(Format::Json),
            "DELIMITED" => Ok(Format::Delimited),
            "KAFKA" => Ok(Format::Kafka),
            "NONE" => Ok(Format::None),
            "AVRO" => Ok(Format::Avro),
            "PROTOBUF" => Ok(Format::Protobuf),
            "PROTOBUF_NOSR" => Ok(Format::ProtobufNoSr),
            "JSON_SR" => Ok(Format::JsonSr),
            other => Err(FormatError::UnknownFormat(other.to_string())),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Format::Json => "JSON",
            Format::Delimited => "DELIMITED",
            Format::Kafka => "KAFKA",
            Format::None => "NONE",
            Format::Avro => "AVRO",
            Format::Protobuf => "PROTOBUF",
            Format::ProtobufNoSr => "PROTOBUF_NOSR",
            Format::JsonSr => "JSON_SR",
        }
    }

    /// Whether records carry a schema id to look up in a schema registry.
    pub fn uses_registry(&self) -> bool {
        matches!(self, Format::Avro | Format::Protobuf | Format::JsonSr)
    }

    /// Whether the format has a schema (registered or made from the columns).
    pub fn has_schema(&self) -> bool {
        self.uses_registry() || *self == Format::ProtobufNoSr
    }
}

/// One side's format with its options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatSpec {
    pub format: Format,
    /// DELIMITED's field separator (`VALUE_DELIMITER` / `KEY_DELIMITER`), default `,`.
    pub delimiter: char,
    /// Whether a single column is written wrapped in an object (JSON) — ksqlDB's
    /// `WRAP_SINGLE_VALUE`. Keys are never wrapped.
    pub wrap_single: bool,
    /// Schema formats: the schema this side is written with and where writers' schemas
    /// are looked up (bound by the engine when the source or sink is made).
    pub schema: Option<crate::sr::SchemaBinding>,
}

impl FormatSpec {
    pub fn new(format: Format) -> Self {
        Self {
            format,
            delimiter: ',',
            wrap_single: true,
            schema: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub ty: SqlType,
}

impl Column {
    pub fn new(name: impl Into<String>, ty: SqlType) -> Self {
        Self {
            name: name.into(),
            ty,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub key_columns: Vec<Column>,
    pub value_columns: Vec<Column>,
    pub key_format: FormatSpec,
    pub value_format: FormatSpec,
    /// Columns read from the record's headers (`HEADERS`, `HEADER('name')`), after the
    /// value columns; never written.
    pub header_columns: Vec<HeaderColumn>,
}

/// A column read from a record's headers, as ksqlDB's `HEADERS` (every header, as
/// `ARRAY<STRUCT<KEY STRING, VALUE BYTES>>`) and `HEADER('name')` (the last header of that
/// name, `BYTES`) columns. Weir's own headers (`weir.*`) are not the user's: left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderColumn {
    pub column: Column,
    /// `None`: every header; `Some(name)`: the last header named so.
    pub key: Option<String>,
}

impl HeaderColumn {
    /// The column's value for one record's headers, as the general decoder reads values
    /// (BYTES as base64 text).
    fn value(&self, headers: &[weir_log::Header]) -> Value {
        use base64::Engine as _;
        let b64 = |v: &Option<Vec<u8>>| {
            v.as_ref().map_or(Value::Null, |v| {
                Value::String(base64::engine::general_purpose::STANDARD.encode(v))
            })
        };
        let user = headers.iter().filter(|h| !h.is_weir());
        match &self.key {
            Some(key) => user
                .rev()
                .find(|h| h.name == key.as_str())
                .map_or(Value::Null, |h| b64(&h.value)),
            None => {
                // The struct's field names as the column declares them.
                let (k, v) = match &self.column.ty {
                    SqlType::Array(item) => match item.as_ref() {
                        SqlType::Struct(fields) if fields.len() == 2 => {
                            (fields[0].name.value.clone(), fields[1].name.value.clone())
                        }
                        _ => ("KEY".into(), "VALUE".into()),
                    },
                    _ => ("KEY".into(), "VALUE".into()),
                };
                Value::Array(
                    user.map(|h| {
                        let mut o = serde_json::Map::new();
                        o.insert(k.clone(), Value::String(h.name.to_string()));
                        o.insert(v.clone(), b64(&h.value));
                        Value::Object(o)
                    })
                    .collect(),
                )
            }
        }
    }

    /// Checks the column's type: `HEADERS` is `ARRAY<STRUCT<KEY STRING, VALUE BYTES>>`,
    /// `HEADER('name')` is `BYTES`, as ksqlDB requires.
    pub fn validate(&self) -> Result<(), FormatError> {
        let ok = match &self.key {
            Some(_) => self.column.ty == SqlType::Bytes,
            None => matches!(&self.column.ty, SqlType::Array(item) if matches!(item.as_ref(),
                SqlType::Struct(f) if f.len() == 2
                    && f[0].name.value.eq_ignore_ascii_case("KEY") && f[0].ty == SqlType::String
                    && f[1].name.value.eq_ignore_ascii_case("VALUE") && f[1].ty == SqlType::Bytes)),
        };
        if ok {
            return Ok(());
        }
        Err(FormatError::Encode(match &self.key {
            Some(_) => format!(
                "Invalid type for HEADER('{}') column: expected BYTES, got {}",
                self.key.as_deref().unwrap_or_default(),
                self.column.ty
            ),
            None => format!(
                "Invalid type for HEADERS column: expected ARRAY<STRUCT<`KEY` STRING, `VALUE` BYTES>>, got {}",
                self.column.ty
            ),
        }))
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    #[error(
        "Unknown format: {0}. Supported formats: JSON, DELIMITED, KAFKA, NONE, AVRO, PROTOBUF, PROTOBUF_NOSR, JSON_SR"
    )]
    UnknownFormat(String),
    #[error("The {format} format does not support type {ty} (column {column})")]
    UnsupportedType {
        format: &'static str,
        ty: String,
        column: String,
    },
    #[error("The {format} format holds one column, but the {side} has {count}")]
    SingleColumnOnly {
        format: &'static str,
        side: &'static str,
        count: usize,
    },
    #[error("{side} format NONE cannot hold columns ({columns})")]
    NoneWithColumns { side: &'static str, columns: String },
    #[error("{0}")]
    Encode(String),
}

/// A record's key and value bytes; `None` for a null key or a side with no columns.
pub type EncodedRecord = (Option<Vec<u8>>, Option<Vec<u8>>);

/// A record that did not decode, for the processing log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub partition: u32,
    pub offset: u64,
    pub message: String,
}

/// The records that decoded, as one batch, and the ones that did not.
#[derive(Debug)]
pub struct Decoded {
    pub batch: RecordBatch,
    pub errors: Vec<DecodeError>,
    /// Set when a record could not be read because the schema registry did not answer:
    /// no fault of the record, so the caller reads the batch again later instead of
    /// logging it as bad.
    pub unavailable: Option<String>,
}

impl Layout {
    /// Checks that each side's format can hold its columns.
    pub fn validate(&self) -> Result<(), FormatError> {
        for (side, spec, cols) in [
            ("key", &self.key_format, &self.key_columns),
            ("value", &self.value_format, &self.value_columns),
        ] {
            match spec.format {
                Format::None if !cols.is_empty() => {
                    let columns = cols
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ");
                    return Err(FormatError::NoneWithColumns { side, columns });
                }
                Format::Kafka if cols.len() > 1 => {
                    return Err(FormatError::SingleColumnOnly {
                        format: "KAFKA",
                        side,
                        count: cols.len(),
                    });
                }
                Format::Kafka => {
                    for c in cols {
                        if !crate::kafka::supports(&c.ty) {
                            return Err(FormatError::UnsupportedType {
                                format: "KAFKA",
                                ty: c.ty.to_string(),
                                column: c.name.clone(),
                            });
                        }
                    }
                }
                Format::Delimited => {
                    for c in cols {
                        if matches!(
                            c.ty,
                            SqlType::Array(_) | SqlType::Map(..) | SqlType::Struct(_)
                        ) {
                            return Err(FormatError::UnsupportedType {
                                format: "DELIMITED",
                                ty: c.ty.to_string(),
                                column: c.name.clone(),
                            });
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Its columns: the key columns, the value columns, then the header columns.
    pub fn columns(&self) -> impl Iterator<Item = &Column> {
        self.key_columns
            .iter()
            .chain(&self.value_columns)
            .chain(self.header_columns.iter().map(|h| &h.column))
    }

    /// The Arrow schema of decoded batches: pseudo-columns, key columns, value columns.
    pub fn schema(&self) -> SchemaRef {
        let mut fields = vec![
            Field::new(PSEUDO_COLUMNS[0], DataType::Int64, false),
            Field::new(PSEUDO_COLUMNS[1], DataType::Int32, false),
            Field::new(PSEUDO_COLUMNS[2], DataType::Int64, false),
        ];
        for c in self.columns() {
            fields.push(Field::new(&c.name, arrow_type(&c.ty), true));
        }
        Arc::new(Schema::new(fields))
    }

    fn decode_side(
        spec: &FormatSpec,
        cols: &[Column],
        bytes: Option<&[u8]>,
    ) -> Result<Vec<Value>, String> {
        if cols.is_empty() {
            return Ok(Vec::new());
        }
        let Some(bytes) = bytes else {
            return Ok(vec![Value::Null; cols.len()]);
        };
        let raw = match spec.format {
            Format::Json => crate::json::decode(bytes, cols, spec.wrap_single)?,
            Format::Delimited => crate::delimited::decode(bytes, cols, spec.delimiter)?,
            Format::Kafka => vec![crate::kafka::decode(bytes, &cols[0].ty)?],
            Format::None => return Ok(Vec::new()),
            Format::Avro | Format::Protobuf | Format::ProtobufNoSr | Format::JsonSr => {
                let value = crate::sr::decode(spec, bytes)?;
                crate::json::columns(value, cols, spec.wrap_single)?
            }
        };
        raw.into_iter()
            .zip(cols)
            .map(|(v, c)| crate::convert::coerce(v, &c.ty))
            .collect()
    }

    /// Decodes records into a batch with [`Layout::schema`]. Tombstones (records without a
    /// value) are left out; [`Layout::decode_tombstones`] reads them.
    pub fn decode(&self, schema: &SchemaRef, records: &[StoredRecord]) -> Decoded {
        if let Some(batch) = crate::fastjson::decode(self, schema, records)
            .or_else(|| crate::fastavro::decode(self, schema, records))
        {
            crate::differential::check(self, schema, records, &batch);
            return Decoded {
                batch,
                errors: Vec::new(),
                unavailable: None,
            };
        }
        self.decode_records(schema, records, false)
    }

    /// The general path alone (for tests that compare it with the fast one).
    #[doc(hidden)]
    pub fn decode_general(&self, schema: &SchemaRef, records: &[StoredRecord]) -> Decoded {
        self.decode_records(schema, records, false)
    }

    /// Decodes tombstones (records without a value) as rows whose value columns are null.
    /// A stream forwards them: a query's output for a tombstone is a tombstone.
    pub fn decode_tombstones(&self, schema: &SchemaRef, records: &[StoredRecord]) -> Decoded {
        self.decode_records(schema, records, true)
    }

    fn decode_records(
        &self,
        schema: &SchemaRef,
        records: &[StoredRecord],
        tombstones: bool,
    ) -> Decoded {
        let mut rows = Vec::with_capacity(records.len());
        let mut origins = Vec::with_capacity(records.len());
        let mut errors = Vec::new();
        for r in records {
            if r.record.value.is_none() != tombstones {
                continue;
            }
            let key =
                Self::decode_side(&self.key_format, &self.key_columns, r.record.key.as_deref());
            let value = Self::decode_side(
                &self.value_format,
                &self.value_columns,
                r.record.value.as_deref(),
            );
            match (key, value) {
                (Ok(k), Ok(v)) => {
                    let mut row = Vec::with_capacity(3 + k.len() + v.len());
                    row.push(Value::from(r.record.timestamp));
                    row.push(Value::from(r.partition));
                    row.push(Value::from(r.offset));
                    row.extend(k);
                    row.extend(v);
                    // Made as JSON would hold them (BYTES as base64), so coerced alike:
                    // it cannot fail on what `value` makes.
                    row.extend(self.header_columns.iter().map(|h| {
                        crate::convert::coerce(h.value(&r.record.headers), &h.column.ty)
                            .unwrap_or(Value::Null)
                    }));
                    rows.push(row);
                    origins.push((r.partition, r.offset));
                }
                (Err(e), _) => errors.push(DecodeError {
                    partition: r.partition,
                    offset: r.offset,
                    message: format!("Failed to deserialize key: {e}"),
                }),
                (_, Err(e)) => errors.push(DecodeError {
                    partition: r.partition,
                    offset: r.offset,
                    message: format!("Failed to deserialize value: {e}"),
                }),
            }
        }
        let (batch, bad) = rows_to_batch(schema, rows);
        for (i, message) in bad {
            let (partition, offset) = origins[i];
            errors.push(DecodeError {
                partition,
                offset,
                message: format!("Failed to deserialize value: {message}"),
            });
        }
        errors.sort_by_key(|e| (e.partition, e.offset));
        let unavailable = errors
            .iter()
            .find(|e| e.message.contains(crate::registry::UNAVAILABLE))
            .map(|e| e.message.clone());
        Decoded {
            batch,
            errors,
            unavailable,
        }
    }

    fn encode_side(
        spec: &FormatSpec,
        cols: &[Column],
        values: Vec<Value>,
        is_key: bool,
    ) -> Result<Option<Vec<u8>>, FormatError> {
        match spec.format {
            Format::None => Ok(None),
            _ if cols.is_empty() => Ok(None),
            // A null key: one null key column, or all-null DELIMITED key fields. (A JSON key
            // of several columns stays an object of nulls.)
            _ if is_key
                && (cols.len() == 1
                    || spec.format == Format::Delimited
                    || spec.format.has_schema())
                && values.iter().all(Value::is_null) =>
            {
                Ok(None)
            }
            Format::Json => Ok(Some(crate::json::encode(cols, values, spec.wrap_single))),
            Format::Delimited => Ok(Some(crate::delimited::encode(
                cols,
                &values,
                spec.delimiter,
            ))),
            Format::Kafka => {
                crate::kafka::encode(&values[0], &cols[0].ty).map_err(FormatError::Encode)
            }
            Format::Avro | Format::Protobuf | Format::ProtobufNoSr | Format::JsonSr => {
                let v = if cols.len() == 1 && !spec.wrap_single {
                    values.into_iter().next().unwrap_or(Value::Null)
                } else {
                    Value::Object(cols.iter().map(|c| c.name.clone()).zip(values).collect())
                };
                crate::sr::encode(spec, &v)
                    .map(Some)
                    .map_err(FormatError::Encode)
            }
        }
    }

    /// Encodes a batch whose columns are the key columns then the value columns (by name)
    /// into (key, value) bytes, one pair per row. A row whose values are all null still
    /// has a value; `None` only where a side has no columns.
    pub fn encode(&self, batch: &RecordBatch) -> Result<Vec<EncodedRecord>, FormatError> {
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| FormatError::Encode(format!("column {name} missing from the batch")))
        };
        let keys = self
            .key_columns
            .iter()
            .map(|c| column(&c.name))
            .collect::<Result<Vec<_>, _>>()?;
        let vals = self
            .value_columns
            .iter()
            .map(|c| column(&c.name))
            .collect::<Result<Vec<_>, _>>()?;
        // JSON objects of flat columns are written straight from the arrays, with the same
        // bytes the general path writes, without a JSON value per row.
        let flat_json = (self.value_format.format == Format::Json
            && (self.value_columns.len() > 1 || self.value_format.wrap_single))
            .then(|| crate::json::FlatWriter::new(&self.value_columns, &vals))
            .flatten();
        // AVRO records of flat columns in the sink's own schema likewise.
        let flat_avro = match (&self.value_format.schema, self.value_format.format) {
            (Some(b), Format::Avro) if flat_json.is_none() => {
                crate::fastavro::FlatWriter::new(b, &self.value_columns, &vals)
                    .map_err(FormatError::Encode)?
            }
            _ => None,
        };
        // One KAFKA key column of a flat type: its bytes straight from the array.
        let mut fast_keys = match (self.key_format.format, keys.as_slice()) {
            (Format::Kafka, [a]) => kafka_keys(a, &self.key_columns[0].ty),
            _ => None,
        }
        .map(Vec::into_iter);
        let mut out = Vec::with_capacity(batch.num_rows());
        for row in 0..batch.num_rows() {
            let fast_key = fast_keys.as_mut().and_then(Iterator::next);
            let k: Vec<Value> = match fast_key {
                Some(_) => Vec::new(),
                None => keys
                    .iter()
                    .zip(&self.key_columns)
                    .map(|(a, c)| value_at(a, row, &c.ty))
                    .collect(),
            };
            let value = if let Some(w) = &flat_json {
                Some(w.row(row))
            } else if let Some(w) = &flat_avro {
                Some(w.row(&vals, row))
            } else {
                let v: Vec<Value> = vals
                    .iter()
                    .zip(&self.value_columns)
                    .map(|(a, c)| value_at(a, row, &c.ty))
                    .collect();
                Self::encode_side(&self.value_format, &self.value_columns, v, false)?
            };
            let key = match fast_key {
                Some(key) => key,
                None => Self::encode_side(&self.key_format, &self.key_columns, k, true)?,
            };
            out.push((key, value));
        }
        Ok(out)
    }
}

/// A KAFKA-format key column's bytes per row (None: a null key), written as
/// `kafka::encode` writes them, for the types whose array holds them as they are.
fn kafka_keys(a: &ArrayRef, ty: &SqlType) -> Option<Vec<Option<Vec<u8>>>> {
    use arrow::array::AsArray;
    use arrow::datatypes::{Float64Type, Int32Type, Int64Type};
    let n = a.len();
    let each = |f: &dyn Fn(usize) -> Vec<u8>| -> Vec<Option<Vec<u8>>> {
        (0..n).map(|i| a.is_valid(i).then(|| f(i))).collect()
    };
    Some(match (ty, a.data_type()) {
        (SqlType::String, DataType::Utf8) => {
            let s = a.as_string::<i32>();
            each(&|i| s.value(i).as_bytes().to_vec())
        }
        (SqlType::Int, DataType::Int32) => {
            let v = a.as_primitive::<Int32Type>();
            each(&|i| v.value(i).to_be_bytes().to_vec())
        }
        (SqlType::Bigint, DataType::Int64) => {
            let v = a.as_primitive::<Int64Type>();
            each(&|i| v.value(i).to_be_bytes().to_vec())
        }
        (SqlType::Double, DataType::Float64) => {
            let v = a.as_primitive::<Float64Type>();
            each(&|i| v.value(i).to_be_bytes().to_vec())
        }
        _ => return None,
    })
}
