//! The schema formats (AVRO, PROTOBUF, PROTOBUF_NOSR, JSON_SR): Confluent's framing, the
//! schema a side is written with, and reading a record by its writer's schema.

use std::sync::{Arc, OnceLock};

use serde_json::{Map, Value, json};
use weir_sql::ast::{Ident, SqlType, StructFieldType};

use crate::layout::{Column, Format, FormatSpec};
use crate::registry::{RegisteredSchema, SchemaRegistry, SchemaType};

/// A side's schema: what it is written with, and where the schemas of what it reads are.
#[derive(Debug, Clone)]
pub struct SchemaBinding {
    pub registry: Arc<dyn SchemaRegistry>,
    /// `<topic>-value` or `<topic>-key`.
    pub subject: String,
    /// The schema written (its `id` 0 until registered).
    pub write: Arc<RegisteredSchema>,
    /// The id once registered (sources register theirs at their first write).
    registered: Arc<OnceLock<u32>>,
    /// PROTOBUF: the message written (`*_SCHEMA_FULL_NAME`), else the schema's first.
    pub message: Option<String>,
}

impl PartialEq for SchemaBinding {
    fn eq(&self, other: &Self) -> bool {
        self.subject == other.subject && self.write.text == other.write.text
    }
}

impl Eq for SchemaBinding {}

impl SchemaBinding {
    /// Binds a side to `write`: registered now when it has an id, else at first use.
    pub fn new(
        registry: Arc<dyn SchemaRegistry>,
        subject: String,
        write: Arc<RegisteredSchema>,
    ) -> Self {
        let registered = Arc::new(OnceLock::new());
        if write.id != 0 {
            let _ = registered.set(write.id);
        }
        Self {
            registry,
            subject,
            write,
            registered,
            message: None,
        }
    }

    /// The write schema's id, registering it under the subject the first time.
    pub fn write_id(&self) -> Result<u32, String> {
        if let Some(id) = self.registered.get() {
            return Ok(*id);
        }
        let id = self
            .registry
            .register(&self.subject, self.write.schema_type, &self.write.text)
            .map_err(|e| e.to_string())?;
        let _ = self.registered.set(id);
        Ok(id)
    }
}

/// The registry schema kind of a format.
pub fn schema_type(format: Format) -> Option<SchemaType> {
    match format {
        Format::Avro => Some(SchemaType::Avro),
        Format::Protobuf | Format::ProtobufNoSr => Some(SchemaType::Protobuf),
        Format::JsonSr => Some(SchemaType::Json),
        _ => None,
    }
}

/// The schema text ksqlDB would write for these columns in `format`.
pub fn schema_for(
    format: Format,
    cols: &[Column],
    wrap: bool,
    full_name: Option<&str>,
    nullable: crate::protobuf::Nullable,
) -> Result<String, String> {
    match format {
        Format::Avro => crate::avro::schema_for(cols, wrap, full_name).map(|v| v.to_string()),
        Format::JsonSr => Ok(json_schema_for(cols, wrap).to_string()),
        Format::Protobuf | Format::ProtobufNoSr => {
            crate::protobuf::schema_for(cols, full_name, nullable)
        }
        _ => Err(format!("The {} format has no schema", format.name())),
    }
}

/// The columns a registered schema gives, and whether they are wrapped (a record/object)
/// or one bare value named `default_name`.
pub fn columns_of(
    schema: &RegisteredSchema,
    default_name: &str,
    message: Option<&str>,
) -> Result<(Vec<Column>, bool), String> {
    match schema.schema_type {
        SchemaType::Avro => crate::avro::columns_of(schema.avro()?.as_ref(), default_name),
        SchemaType::Json => {
            let v: Value = serde_json::from_str(&schema.text).map_err(|e| e.to_string())?;
            match json_object_fields(&v) {
                Some(fields) => Ok((
                    fields
                        .iter()
                        .map(|(n, t)| Ok(Column::new(n.clone(), json_sql_type(t, 0)?)))
                        .collect::<Result<_, String>>()?,
                    true,
                )),
                None => Ok((
                    vec![Column::new(default_name, json_sql_type(&v, 0)?)],
                    false,
                )),
            }
        }
        SchemaType::Protobuf => {
            let p = schema.protobuf()?;
            Ok((p.columns(&p.message(message)?)?, true))
        }
    }
}

/// The columns ksqlDB infers from a registered schema for one side: a record's fields in
/// upper case (a value's, or a key's of several fields), else one column `ROWKEY` /
/// `ROWVAL` holding the whole type (also for a record value not wrapped:
/// `WRAP_SINGLE_VALUE=false`). Returns the columns and whether they are wrapped.
pub fn infer_columns(
    schema: &RegisteredSchema,
    key: bool,
    wrap: Option<bool>,
    message: Option<&str>,
) -> Result<(Vec<Column>, bool), String> {
    let name = if key { "ROWKEY" } else { "ROWVAL" };
    let (cols, wrapped) = columns_of(schema, name, message)?;
    // A PROTOBUF key is always a message: its fields are the key columns.
    let key = key && schema.schema_type != SchemaType::Protobuf;
    // ksqlDB upper-cases the names it reads from Avro and JSON schemas (unquoted names in
    // queries find them), not Protobuf's, whose fields keep their case.
    let cols: Vec<Column> = if schema.schema_type == SchemaType::Protobuf {
        cols
    } else {
        cols.into_iter()
            .map(|c| Column::new(c.name.to_uppercase(), upper(c.ty)))
            .collect()
    };
    if wrapped && (wrap == Some(false) || (key && cols.len() == 1)) {
        let fields = cols
            .into_iter()
            .map(|c| StructFieldType {
                name: Ident::new(c.name),
                ty: c.ty,
            })
            .collect();
        return Ok((vec![Column::new(name, SqlType::Struct(fields))], false));
    }
    Ok((cols, wrapped))
}

/// A type with its struct fields' names in upper case, as ksqlDB reads inferred schemas.
fn upper(ty: SqlType) -> SqlType {
    match ty {
        SqlType::Struct(fields) => SqlType::Struct(
            fields
                .into_iter()
                .map(|f| StructFieldType {
                    name: Ident::new(f.name.value.to_uppercase()),
                    ty: upper(f.ty),
                })
                .collect(),
        ),
        SqlType::Array(t) => SqlType::Array(Box::new(upper(*t))),
        SqlType::Map(k, v) => SqlType::Map(k, Box::new(upper(*v))),
        t => t,
    }
}

/// Confluent's framing: magic byte 0 and the schema id, big-endian.
pub fn frame(id: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(0);
    out.extend_from_slice(&id.to_be_bytes());
    out
}

/// The schema id and body of a framed record.
pub fn unframe(bytes: &[u8]) -> Result<(u32, &[u8]), String> {
    match bytes {
        [0, a, b, c, d, body @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), body)),
        [m, ..] if *m != 0 => Err(format!(
            "Unknown magic byte: {m} (not in Confluent's schema-registry wire format)"
        )),
        _ => Err("Record too short for Confluent's schema-registry wire format".into()),
    }
}

fn binding(spec: &FormatSpec) -> Result<&SchemaBinding, String> {
    spec.schema
        .as_ref()
        .ok_or_else(|| format!("no schema bound for the {} format", spec.format.name()))
}

/// Decodes a record of a schema format as one JSON value (an object for a record/message).
pub(crate) fn decode(spec: &FormatSpec, bytes: &[u8]) -> Result<Value, String> {
    match spec.format {
        Format::Avro | Format::Protobuf => {
            let (id, body) = unframe(bytes)?;
            let writer = binding(spec)?
                .registry
                .by_id(id)
                .map_err(|e| e.to_string())?;
            decode_with(&writer, body)
        }
        Format::ProtobufNoSr => {
            let b = binding(spec)?;
            decode_body(&b.write, b.message.as_deref(), bytes)
        }
        Format::JsonSr => {
            // ksqlDB reads JSON_SR with or without the framing.
            let body = match bytes {
                [0, _, _, _, _, body @ ..] => body,
                b => b,
            };
            serde_json::from_slice(body).map_err(|e| format!("Invalid JSON: {e}"))
        }
        other => Err(format!("The {} format has no schema", other.name())),
    }
}

/// Decodes a body (framing removed) with the schema it was written with.
pub fn decode_with(schema: &RegisteredSchema, body: &[u8]) -> Result<Value, String> {
    match schema.schema_type {
        SchemaType::Avro => schema.avro()?.decode(body),
        SchemaType::Json => serde_json::from_slice(body).map_err(|e| format!("Invalid JSON: {e}")),
        SchemaType::Protobuf => schema.protobuf()?.decode_framed(body),
    }
}

/// Decodes a PROTOBUF_NOSR record: the message alone, no framing.
pub fn decode_body(
    schema: &RegisteredSchema,
    message: Option<&str>,
    bytes: &[u8],
) -> Result<Value, String> {
    let p = schema.protobuf()?;
    p.decode(&p.message(message)?, bytes)
}

/// Encodes a PROTOBUF_NOSR record: the message alone, no framing.
pub fn encode_body(
    schema: &RegisteredSchema,
    message: Option<&str>,
    v: &Value,
) -> Result<Vec<u8>, String> {
    let p = schema.protobuf()?;
    let mut out = Vec::with_capacity(64);
    p.encode(&p.message(message)?, v, false, &mut out)?;
    Ok(out)
}

/// Encodes a value (an object of the columns, or one bare value) with the side's schema.
pub(crate) fn encode(spec: &FormatSpec, v: &Value) -> Result<Vec<u8>, String> {
    let b = binding(spec)?;
    if spec.format == Format::ProtobufNoSr {
        return encode_body(&b.write, b.message.as_deref(), v);
    }
    let id = b.write_id()?;
    encode_framed(&b.write, id, b.message.as_deref(), v)
}

/// Encodes a value with a schema, framed with `id` (PROTOBUF: as its first message).
pub fn encode_with(schema: &RegisteredSchema, id: u32, v: &Value) -> Result<Vec<u8>, String> {
    encode_framed(schema, id, None, v)
}

/// As [`encode_with`], as the message named (PROTOBUF).
pub fn encode_framed(
    schema: &RegisteredSchema,
    id: u32,
    message: Option<&str>,
    v: &Value,
) -> Result<Vec<u8>, String> {
    let mut out = frame(id);
    match schema.schema_type {
        SchemaType::Avro => schema.avro()?.encode(v, &mut out)?,
        SchemaType::Json => {
            serde_json::to_writer(&mut out, v).map_err(|e| e.to_string())?;
        }
        SchemaType::Protobuf => {
            let p = schema.protobuf()?;
            p.encode(&p.message(message)?, v, true, &mut out)?;
        }
    }
    Ok(out)
}

/// The JSON schema ksqlDB's JSON_SR writes for columns (Kafka Connect's JSON schema).
fn json_schema_for(cols: &[Column], wrap: bool) -> Value {
    if cols.len() == 1 && !wrap {
        return json_type(&cols[0].ty);
    }
    json_object(cols.iter().map(|c| (c.name.as_str(), &c.ty)))
}

fn json_object<'a>(fields: impl Iterator<Item = (&'a str, &'a SqlType)>) -> Value {
    let mut props = Map::new();
    for (i, (name, ty)) in fields.enumerate() {
        props.insert(
            name.to_string(),
            json!({"connect.index": i, "oneOf": [{"type": "null"}, json_type(ty)]}),
        );
    }
    json!({"type": "object", "properties": props})
}

fn json_type(ty: &SqlType) -> Value {
    match ty {
        SqlType::Boolean => json!({"type": "boolean"}),
        SqlType::Int => json!({"type": "integer", "connect.type": "int32"}),
        SqlType::Bigint => json!({"type": "integer", "connect.type": "int64"}),
        SqlType::Double => json!({"type": "number", "connect.type": "float64"}),
        SqlType::String => json!({"type": "string"}),
        SqlType::Bytes => json!({"type": "string", "connect.type": "bytes"}),
        SqlType::Decimal { precision, scale } => json!({"type": "number",
            "title": "org.apache.kafka.connect.data.Decimal", "connect.type": "bytes",
            "connect.parameters": {"scale": scale.to_string(),
                                   "connect.decimal.precision": precision.to_string()}}),
        SqlType::Date => json!({"type": "integer", "connect.type": "int32",
            "title": "org.apache.kafka.connect.data.Date"}),
        SqlType::Time => json!({"type": "integer", "connect.type": "int32",
            "title": "org.apache.kafka.connect.data.Time"}),
        SqlType::Timestamp => json!({"type": "integer", "connect.type": "int64",
            "title": "org.apache.kafka.connect.data.Timestamp"}),
        SqlType::Array(t) => json!({"type": "array",
            "items": {"oneOf": [{"type": "null"}, json_type(t)]}}),
        SqlType::Map(k, v) if **k == SqlType::String => json!({"type": "object",
            "connect.type": "map",
            "additionalProperties": {"oneOf": [{"type": "null"}, json_type(v)]}}),
        SqlType::Map(k, v) => json!({"type": "array", "connect.type": "map",
            "items": {"type": "object", "properties": {
                "key": {"oneOf": [{"type": "null"}, json_type(k)]},
                "value": {"oneOf": [{"type": "null"}, json_type(v)]}}}}),
        SqlType::Struct(fields) => {
            json_object(fields.iter().map(|f| (f.name.value.as_str(), &f.ty)))
        }
        SqlType::Custom(_) => json!({}),
    }
}

/// An object schema's fields in order (`connect.index` where given, else as written).
fn json_object_fields(v: &Value) -> Option<Vec<(String, Value)>> {
    let v = json_non_null(v);
    if v["type"] != "object" || v.get("additionalProperties").is_some_and(|a| a.is_object()) {
        return None;
    }
    let props = v["properties"].as_object()?;
    let mut fields: Vec<(usize, String, Value)> = props
        .iter()
        .enumerate()
        .map(|(i, (k, t))| {
            let at = t["connect.index"].as_u64().map_or(i, |x| x as usize);
            (at, k.clone(), t.clone())
        })
        .collect();
    fields.sort_by_key(|f| f.0);
    Some(fields.into_iter().map(|(_, k, t)| (k, t)).collect())
}

/// `{"oneOf": [{"type": "null"}, T]}` as T.
fn json_non_null(v: &Value) -> &Value {
    match v["oneOf"].as_array().or(v["anyOf"].as_array()) {
        Some(options) => {
            let non_null: Vec<&Value> = options.iter().filter(|o| o["type"] != "null").collect();
            if non_null.len() == 1 { non_null[0] } else { v }
        }
        None => v,
    }
}

fn json_sql_type(v: &Value, depth: usize) -> Result<SqlType, String> {
    if depth > 64 {
        return Err("JSON schema nests too deeply".into());
    }
    let v = json_non_null(v);
    let title = v["title"].as_str().unwrap_or_default();
    let connect = v["connect.type"].as_str().unwrap_or_default();
    let ty = match &v["type"] {
        Value::Array(types) => types
            .iter()
            .find(|t| *t != "null")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        t => t.as_str().unwrap_or_default().to_string(),
    };
    Ok(match ty.as_str() {
        "boolean" => SqlType::Boolean,
        "integer" => match (title, connect) {
            ("org.apache.kafka.connect.data.Date", _) => SqlType::Date,
            ("org.apache.kafka.connect.data.Time", _) => SqlType::Time,
            ("org.apache.kafka.connect.data.Timestamp", _) => SqlType::Timestamp,
            (_, "int32" | "int16" | "int8") => SqlType::Int,
            _ => SqlType::Bigint,
        },
        "number" if title == "org.apache.kafka.connect.data.Decimal" => {
            let p = &v["connect.parameters"];
            let num = |k: &str| {
                p[k].as_str()
                    .and_then(|s| s.parse().ok())
                    .or(p[k].as_u64().map(|x| x as u32))
            };
            SqlType::Decimal {
                precision: num("connect.decimal.precision").unwrap_or(64),
                scale: num("scale").unwrap_or(0),
            }
        }
        "number" => SqlType::Double,
        "string" if connect == "bytes" => SqlType::Bytes,
        "string" => SqlType::String,
        "array" if connect == "map" => {
            let entry = json_non_null(&v["items"]);
            SqlType::Map(
                Box::new(json_sql_type(&entry["properties"]["key"], depth + 1)?),
                Box::new(json_sql_type(&entry["properties"]["value"], depth + 1)?),
            )
        }
        "array" => SqlType::Array(Box::new(json_sql_type(&v["items"], depth + 1)?)),
        "object" => match v.get("additionalProperties") {
            Some(a) if a.is_object() => SqlType::Map(
                Box::new(SqlType::String),
                Box::new(json_sql_type(a, depth + 1)?),
            ),
            _ => SqlType::Struct(
                json_object_fields(v)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(n, t)| {
                        Ok(StructFieldType {
                            name: Ident::new(n),
                            ty: json_sql_type(&t, depth + 1)?,
                        })
                    })
                    .collect::<Result<_, String>>()?,
            ),
        },
        other => return Err(format!("JSON schema type '{other}' is not supported")),
    })
}
