//! PROTOBUF and PROTOBUF_NOSR: `.proto` text compiled (protox) into descriptors, records
//! read and written as dynamic messages (prost-reflect) to and from the JSON values every
//! format goes through, with Confluent's and Google's well-known types as ksqlDB maps them
//! (`google.protobuf.Timestamp` TIMESTAMP, `google.type.Date` DATE,
//! `google.type.TimeOfDay` TIME, `confluent.type.Decimal` DECIMAL, the wrappers as
//! nullable scalars). Schemas for columns are made as ksqlDB makes them (a message
//! `ConnectDefault1`, nested structs as nested messages `ConnectDefault2`, ...).

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use prost::Message as _;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor,
    ReflectMessage, Value as PValue,
};
use protox::file::{File, FileResolver, GoogleFileResolver};
use serde_json::{Map, Number, Value};
use weir_sql::ast::{Ident, SqlType, StructFieldType};

use crate::layout::Column;

const MAIN: &str = "weir_schema.proto";

/// Files Confluent's and Google's serializers import, served without a download.
const BUILTIN: [(&str, &str); 4] = [
    (
        "confluent/meta.proto",
        r#"syntax = "proto3";
package confluent;
import "google/protobuf/descriptor.proto";
message Meta { string doc = 1; map<string, string> params = 2; repeated string tags = 3; }
extend google.protobuf.FileOptions { Meta file_meta = 1088; }
extend google.protobuf.MessageOptions { Meta message_meta = 1088; }
extend google.protobuf.FieldOptions { Meta field_meta = 1088; }
extend google.protobuf.EnumOptions { Meta enum_meta = 1088; }
extend google.protobuf.EnumValueOptions { Meta enum_value_meta = 1088; }
"#,
    ),
    (
        "confluent/type/decimal.proto",
        r#"syntax = "proto3";
package confluent.type;
message Decimal { bytes value = 1; uint32 precision = 2; int32 scale = 3; }
"#,
    ),
    (
        "google/type/date.proto",
        r#"syntax = "proto3";
package google.type;
message Date { int32 year = 1; int32 month = 2; int32 day = 3; }
"#,
    ),
    (
        "google/type/timeofday.proto",
        r#"syntax = "proto3";
package google.type;
message TimeOfDay { int32 hours = 1; int32 minutes = 2; int32 seconds = 3; int32 nanos = 4; }
"#,
    ),
];

struct Resolver {
    files: HashMap<String, File>,
    google: GoogleFileResolver,
}

impl FileResolver for Resolver {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        if let Some(file) = self.files.get(name) {
            return Ok(file.clone());
        }
        if let Some((_, text)) = BUILTIN.iter().find(|(n, _)| *n == name) {
            return File::from_source(name, text);
        }
        self.google.open_file(name)
    }
}

/// A compiled `.proto` schema: its messages, the first the one written unless named.
#[derive(Debug)]
pub struct ProtoSchema {
    pool: DescriptorPool,
    /// The top-level messages of the schema's own file, in order.
    messages: Vec<MessageDescriptor>,
}

impl ProtoSchema {
    /// Compiles `text`; `deps` are the files it imports by name (schema references).
    pub fn parse(text: &str, deps: &[(String, String)]) -> Result<ProtoSchema, String> {
        let invalid = |e: String| format!("Invalid PROTOBUF schema: {e}");
        let mut files = HashMap::new();
        for (name, dep) in deps {
            files.insert(name.clone(), source_file(name, dep).map_err(invalid)?);
        }
        files.insert(MAIN.into(), source_file(MAIN, text).map_err(invalid)?);
        let mut compiler = protox::Compiler::with_file_resolver(Resolver {
            files,
            google: GoogleFileResolver::new(),
        });
        compiler.include_imports(true);
        compiler
            .open_file(MAIN)
            .map_err(|e| invalid(e.to_string()))?;
        let pool = compiler.descriptor_pool();
        let file = pool
            .get_file_by_name(MAIN)
            .ok_or("Invalid PROTOBUF schema: not compiled")?;
        let messages: Vec<MessageDescriptor> = file.messages().collect();
        if messages.is_empty() {
            return Err("Invalid PROTOBUF schema: it defines no message".into());
        }
        Ok(ProtoSchema { pool, messages })
    }

    /// Every message and type it knows (its own and those it imports).
    pub(crate) fn pool(&self) -> &DescriptorPool {
        &self.pool
    }

    /// The message written: the one named (full name, or simple name), else the first.
    pub fn message(&self, name: Option<&str>) -> Result<MessageDescriptor, String> {
        match name {
            None => Ok(self.messages[0].clone()),
            Some(n) => self
                .pool
                .get_message_by_name(n)
                .or_else(|| self.pool.all_messages().find(|m| m.name() == n))
                .ok_or_else(|| format!("Schema for {n} not found in the PROTOBUF schema")),
        }
    }

    /// The indexes Confluent's framing gives a message: its path from the file's top level.
    fn indexes(&self, m: &MessageDescriptor) -> Vec<i64> {
        let mut path = Vec::new();
        let mut cur = m.clone();
        loop {
            match cur.parent_message() {
                Some(parent) => {
                    let i = parent.child_messages().position(|c| c == cur).unwrap_or(0);
                    path.push(i as i64);
                    cur = parent;
                }
                None => {
                    let i = self.messages.iter().position(|c| *c == cur).unwrap_or(0);
                    path.push(i as i64);
                    break;
                }
            }
        }
        path.reverse();
        path
    }

    fn by_indexes(&self, path: &[i64]) -> Result<MessageDescriptor, String> {
        let missing = || format!("no message at indexes {path:?} in the PROTOBUF schema");
        let first = *path.first().unwrap_or(&0) as usize;
        let mut m = self.messages.get(first).cloned().ok_or_else(missing)?;
        for i in path.iter().skip(1) {
            let child = m.child_messages().nth(*i as usize);
            m = child.ok_or_else(missing)?;
        }
        Ok(m)
    }

    /// Reads a body after the schema id: the message indexes, then the message.
    pub fn decode_framed(&self, mut body: &[u8]) -> Result<Value, String> {
        let count = crate::avro::read_long(&mut body)?;
        let path = if count == 0 {
            vec![0]
        } else {
            (0..count)
                .map(|_| crate::avro::read_long(&mut body))
                .collect::<Result<Vec<_>, _>>()?
        };
        let m = self.by_indexes(&path)?;
        self.decode(&m, body)
    }

    /// Reads one message of type `m` (no framing).
    pub fn decode(&self, m: &MessageDescriptor, body: &[u8]) -> Result<Value, String> {
        let msg = DynamicMessage::decode(m.clone(), body)
            .map_err(|e| format!("Invalid PROTOBUF message: {e}"))?;
        Ok(message_to_json(&msg))
    }

    /// Writes a value as message `m`, with the message indexes of Confluent's framing
    /// first when `framed`.
    pub fn encode(
        &self,
        m: &MessageDescriptor,
        v: &Value,
        framed: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        if framed {
            let path = self.indexes(m);
            if path == [0] {
                out.push(0);
            } else {
                crate::avro::write_long(path.len() as i64, out);
                for i in path {
                    crate::avro::write_long(i, out);
                }
            }
        }
        let msg = json_to_message(m, v)?;
        msg.encode(out).map_err(|e| e.to_string())
    }

    /// The columns of message `m` (ksqlDB's schema inference).
    pub fn columns(&self, m: &MessageDescriptor) -> Result<Vec<Column>, String> {
        m.fields()
            .map(|f| Ok(Column::new(f.name(), field_type(&f, 0)?)))
            .collect()
    }
}

/// A schema as a file to compile: `.proto` text, or a serialized `FileDescriptorProto` in
/// base64 (what Confluent's Protobuf serializers register).
fn source_file(name: &str, text: &str) -> Result<File, String> {
    let t = text.trim();
    if !t.is_empty()
        && !t.contains(char::is_whitespace)
        && let Ok(bytes) = BASE64.decode(t)
        && let Ok(mut proto) = prost_reflect::prost_types::FileDescriptorProto::decode(&bytes[..])
    {
        proto.name = Some(name.to_string());
        return Ok(File::from_file_descriptor_proto(proto));
    }
    File::from_source(name, &with_meta_import(text)).map_err(|e| e.to_string())
}

impl ProtoSchema {
    /// The schema as a serialized `FileDescriptorProto` in base64 (the registry API's
    /// `format=serialized`).
    pub fn serialized(&self) -> Option<String> {
        let file = self.pool.get_file_by_name(MAIN)?;
        Some(BASE64.encode(file.file_descriptor_proto().encode_to_vec()))
    }
}

/// Confluent's schemas use `(confluent.field_meta)` without importing its definition.
fn with_meta_import(text: &str) -> String {
    if !text.contains("confluent.field_meta") || text.contains("confluent/meta.proto") {
        return text.to_string();
    }
    let import = "\nimport \"confluent/meta.proto\";\n";
    match text.find("syntax") {
        Some(i) => match text[i..].find(';') {
            Some(j) => format!("{}{import}{}", &text[..i + j + 1], &text[i + j + 1..]),
            None => format!("{import}{text}"),
        },
        None => format!("{import}{text}"),
    }
}

fn is_wrapper(name: &str) -> bool {
    matches!(
        name,
        "google.protobuf.BoolValue"
            | "google.protobuf.Int32Value"
            | "google.protobuf.Int64Value"
            | "google.protobuf.UInt32Value"
            | "google.protobuf.UInt64Value"
            | "google.protobuf.FloatValue"
            | "google.protobuf.DoubleValue"
            | "google.protobuf.StringValue"
            | "google.protobuf.BytesValue"
    )
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719468;
    let era = if z >= 0 { z } else { z - 146096 } / 146097;
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn int_field(msg: &DynamicMessage, name: &str) -> i64 {
    match msg.get_field_by_name(name).as_deref() {
        Some(PValue::I32(v)) => *v as i64,
        Some(PValue::I64(v)) => *v,
        Some(PValue::U32(v)) => *v as i64,
        Some(PValue::U64(v)) => *v as i64,
        _ => 0,
    }
}

fn message_to_json(msg: &DynamicMessage) -> Value {
    let desc = msg.descriptor();
    match desc.full_name() {
        "google.protobuf.Timestamp" => {
            Value::from(int_field(msg, "seconds") * 1000 + int_field(msg, "nanos") / 1_000_000)
        }
        "google.type.Date" => Value::from(days_from_civil(
            int_field(msg, "year"),
            int_field(msg, "month"),
            int_field(msg, "day"),
        )),
        "google.type.TimeOfDay" => Value::from(
            ((int_field(msg, "hours") * 60 + int_field(msg, "minutes")) * 60
                + int_field(msg, "seconds"))
                * 1000
                + int_field(msg, "nanos") / 1_000_000,
        ),
        "confluent.type.Decimal" => {
            let bytes = match msg.get_field_by_name("value").as_deref() {
                Some(PValue::Bytes(b)) => b.to_vec(),
                _ => Vec::new(),
            };
            let unscaled = if bytes.is_empty() {
                0
            } else {
                let fill = if bytes[0] & 0x80 != 0 { 0xff } else { 0 };
                let mut full = [fill; 16];
                let n = bytes.len().min(16);
                full[16 - n..].copy_from_slice(&bytes[bytes.len() - n..]);
                i128::from_be_bytes(full)
            };
            let text = crate::convert::decimal_text(unscaled, int_field(msg, "scale") as i8);
            serde_json::from_str::<Number>(&text)
                .map(Value::Number)
                .unwrap_or(Value::String(text))
        }
        name if is_wrapper(name) => match desc.get_field_by_name("value") {
            Some(f) => value_to_json(&msg.get_field(&f), &f.kind()),
            None => Value::Null,
        },
        _ => {
            let mut o = Map::new();
            for f in desc.fields() {
                let absent_is_null = (f.supports_presence()
                    || matches!(f.kind(), Kind::Message(_)))
                    && !f.is_list()
                    && !f.is_map();
                let v = if absent_is_null && !msg.has_field(&f) {
                    Value::Null
                } else {
                    value_to_json(&msg.get_field(&f), &f.kind())
                };
                o.insert(f.name().to_string(), v);
            }
            Value::Object(o)
        }
    }
}

fn value_to_json(v: &PValue, kind: &Kind) -> Value {
    match v {
        PValue::Bool(b) => Value::Bool(*b),
        PValue::I32(i) => Value::from(*i),
        PValue::I64(i) => Value::from(*i),
        PValue::U32(i) => Value::from(*i),
        PValue::U64(i) => Value::from(*i),
        PValue::F32(f) => crate::avro::float(*f as f64),
        PValue::F64(f) => crate::avro::float(*f),
        PValue::String(s) => Value::String(s.clone()),
        PValue::Bytes(b) => Value::String(BASE64.encode(b)),
        PValue::EnumNumber(n) => match kind {
            Kind::Enum(e) => e
                .get_value(*n)
                .map_or(Value::from(*n), |v| Value::String(v.name().to_string())),
            _ => Value::from(*n),
        },
        PValue::Message(m) => message_to_json(m),
        PValue::List(items) => Value::Array(items.iter().map(|i| value_to_json(i, kind)).collect()),
        PValue::Map(entries) => {
            let value_kind = match kind {
                Kind::Message(m) if m.is_map_entry() => m.map_entry_value_field().kind(),
                k => k.clone(),
            };
            let mut keys: Vec<(&MapKey, &PValue)> = entries.iter().collect();
            keys.sort_by(|a, b| a.0.cmp(b.0));
            Value::Object(
                keys.into_iter()
                    .map(|(k, v)| {
                        let k = match k {
                            MapKey::Bool(b) => b.to_string(),
                            MapKey::I32(i) => i.to_string(),
                            MapKey::I64(i) => i.to_string(),
                            MapKey::U32(i) => i.to_string(),
                            MapKey::U64(i) => i.to_string(),
                            MapKey::String(s) => s.clone(),
                        };
                        (k, value_to_json(v, &value_kind))
                    })
                    .collect(),
            )
        }
    }
}

fn field_of<'a>(o: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    o.get(name).or_else(|| {
        o.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

/// A decimal field's scale: its `confluent.field_meta` params, else the value's own.
fn decimal_meta(f: Option<&FieldDescriptor>, key: &str) -> Option<i64> {
    let f = f?;
    let options = f.options();
    let ext = f
        .parent_pool()
        .get_extension_by_name("confluent.field_meta")?;
    if !options.has_extension(&ext) {
        return None;
    }
    let meta = options.get_extension(&ext);
    let PValue::Message(meta) = meta.as_ref() else {
        return None;
    };
    match meta.get_field_by_name("params").as_deref() {
        Some(PValue::Map(params)) => match params.get(&MapKey::String(key.into())) {
            Some(PValue::String(s)) => s.trim().parse().ok(),
            _ => None,
        },
        _ => None,
    }
}

fn json_to_message(m: &MessageDescriptor, v: &Value) -> Result<DynamicMessage, String> {
    json_to_message_in(m, v, None)
}

fn json_to_message_in(
    m: &MessageDescriptor,
    v: &Value,
    field: Option<&FieldDescriptor>,
) -> Result<DynamicMessage, String> {
    let mut msg = DynamicMessage::new(m.clone());
    let int = |v: &Value| -> Result<i64, String> {
        crate::avro::unscaled(v, 0)
            .map(|n| n as i64)
            .ok_or_else(|| format!("cannot write {v} as a number"))
    };
    match m.full_name() {
        "google.protobuf.Timestamp" => {
            let ms = int(v)?;
            msg.set_field_by_name("seconds", PValue::I64(ms.div_euclid(1000)));
            msg.set_field_by_name(
                "nanos",
                PValue::I32((ms.rem_euclid(1000) * 1_000_000) as i32),
            );
        }
        "google.type.Date" => {
            let (y, mo, d) = civil_from_days(int(v)?);
            msg.set_field_by_name("year", PValue::I32(y as i32));
            msg.set_field_by_name("month", PValue::I32(mo as i32));
            msg.set_field_by_name("day", PValue::I32(d as i32));
        }
        "google.type.TimeOfDay" => {
            let ms = int(v)?;
            msg.set_field_by_name("hours", PValue::I32((ms / 3_600_000) as i32));
            msg.set_field_by_name("minutes", PValue::I32((ms / 60_000 % 60) as i32));
            msg.set_field_by_name("seconds", PValue::I32((ms / 1000 % 60) as i32));
            msg.set_field_by_name("nanos", PValue::I32((ms % 1000 * 1_000_000) as i32));
        }
        "confluent.type.Decimal" => {
            let scale = decimal_meta(field, "scale").unwrap_or_else(|| {
                let text = v.to_string();
                text.split_once('.')
                    .map_or(0, |(_, f)| f.trim_matches('"').len() as i64)
            });
            let unscaled = crate::avro::unscaled(v, scale as u32)
                .ok_or_else(|| format!("cannot write {v} as a decimal"))?;
            let mut b = unscaled.to_be_bytes().to_vec();
            while b.len() > 1
                && ((b[0] == 0 && b[1] & 0x80 == 0) || (b[0] == 0xff && b[1] & 0x80 != 0))
            {
                b.remove(0);
            }
            msg.set_field_by_name("value", PValue::Bytes(b.into()));
            if let Some(p) = decimal_meta(field, "precision") {
                msg.set_field_by_name("precision", PValue::U32(p as u32));
            }
            msg.set_field_by_name("scale", PValue::I32(scale as i32));
        }
        name if is_wrapper(name) => {
            if let Some(f) = m.get_field_by_name("value") {
                msg.set_field(&f, scalar(&f.kind(), v, Some(&f))?);
            }
        }
        _ => {
            let o = v
                .as_object()
                .ok_or_else(|| format!("cannot write {v} as PROTOBUF message {}", m.name()))?;
            for f in m.fields() {
                let Some(x) = field_of(o, f.name()) else {
                    continue;
                };
                if x.is_null() {
                    continue;
                }
                let value = if f.is_map() {
                    let entry = match f.kind() {
                        Kind::Message(e) => e,
                        _ => return Err("a map field without entries".into()),
                    };
                    let (kf, vf) = (entry.map_entry_key_field(), entry.map_entry_value_field());
                    let entries = x
                        .as_object()
                        .ok_or_else(|| format!("cannot write {x} as a map"))?;
                    let mut out = HashMap::new();
                    for (k, item) in entries {
                        let key = match scalar(&kf.kind(), &Value::String(k.clone()), None)? {
                            PValue::Bool(b) => MapKey::Bool(b),
                            PValue::I32(i) => MapKey::I32(i),
                            PValue::I64(i) => MapKey::I64(i),
                            PValue::U32(i) => MapKey::U32(i),
                            PValue::U64(i) => MapKey::U64(i),
                            PValue::String(s) => MapKey::String(s),
                            _ => return Err("unsupported PROTOBUF map key".into()),
                        };
                        let value = if item.is_null() {
                            DynamicMessage::new(entry.clone())
                                .get_field(&vf)
                                .into_owned()
                        } else {
                            scalar(&vf.kind(), item, Some(&vf))?
                        };
                        out.insert(key, value);
                    }
                    PValue::Map(out)
                } else if f.is_list() {
                    let items = x
                        .as_array()
                        .ok_or_else(|| format!("cannot write {x} as a list"))?;
                    PValue::List(
                        items
                            .iter()
                            .map(|i| {
                                if i.is_null() {
                                    Ok(default_of(&f.kind()))
                                } else {
                                    scalar(&f.kind(), i, Some(&f))
                                }
                            })
                            .collect::<Result<_, String>>()?,
                    )
                } else {
                    scalar(&f.kind(), x, Some(&f))
                        .map_err(|e| format!("field {}: {e}", f.name()))?
                };
                msg.set_field(&f, value);
            }
        }
    }
    Ok(msg)
}

fn default_of(kind: &Kind) -> PValue {
    match kind {
        Kind::Message(m) => PValue::Message(DynamicMessage::new(m.clone())),
        Kind::Enum(_) => PValue::EnumNumber(0),
        Kind::Bool => PValue::Bool(false),
        Kind::String => PValue::String(String::new()),
        Kind::Bytes => PValue::Bytes(Default::default()),
        Kind::Float => PValue::F32(0.0),
        Kind::Double => PValue::F64(0.0),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => PValue::I32(0),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => PValue::I64(0),
        Kind::Uint32 | Kind::Fixed32 => PValue::U32(0),
        Kind::Uint64 | Kind::Fixed64 => PValue::U64(0),
    }
}

fn scalar(kind: &Kind, v: &Value, field: Option<&FieldDescriptor>) -> Result<PValue, String> {
    let bad = || format!("cannot write {v} as PROTOBUF {kind:?}");
    let int = || -> Result<i64, String> {
        match v {
            Value::Number(n) => n
                .as_i64()
                .or_else(|| n.as_u64().map(|u| u as i64))
                .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
                .ok_or_else(bad),
            Value::String(s) => s.trim().parse().map_err(|_| bad()),
            Value::Bool(b) => Ok(*b as i64),
            _ => Err(bad()),
        }
    };
    let double = || -> Result<f64, String> {
        match v {
            Value::Number(n) => n.as_f64().ok_or_else(bad),
            Value::String(s) => match s.as_str() {
                "NaN" => Ok(f64::NAN),
                "Infinity" => Ok(f64::INFINITY),
                "-Infinity" => Ok(f64::NEG_INFINITY),
                s => s.trim().parse().map_err(|_| bad()),
            },
            _ => Err(bad()),
        }
    };
    Ok(match kind {
        Kind::Bool => PValue::Bool(match v {
            Value::Bool(b) => *b,
            Value::String(s) if s.eq_ignore_ascii_case("true") => true,
            Value::String(s) if s.eq_ignore_ascii_case("false") => false,
            _ => return Err(bad()),
        }),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            PValue::I32(i32::try_from(int()?).map_err(|_| bad())?)
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => PValue::I64(int()?),
        Kind::Uint32 | Kind::Fixed32 => PValue::U32(u32::try_from(int()?).map_err(|_| bad())?),
        Kind::Uint64 | Kind::Fixed64 => PValue::U64(match v {
            Value::Number(n) if n.as_u64().is_some() => n.as_u64().unwrap_or_default(),
            _ => u64::try_from(int()?).map_err(|_| bad())?,
        }),
        Kind::Float => PValue::F32(double()? as f32),
        Kind::Double => PValue::F64(double()?),
        Kind::String => PValue::String(match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }),
        Kind::Bytes => PValue::Bytes(
            BASE64
                .decode(v.as_str().ok_or_else(bad)?)
                .map_err(|_| bad())?
                .into(),
        ),
        Kind::Enum(e) => match v {
            Value::String(s) => PValue::EnumNumber(
                e.get_value_by_name(s)
                    .map(|x| x.number())
                    .ok_or_else(|| format!("'{s}' is not a value of enum {}", e.name()))?,
            ),
            _ => PValue::EnumNumber(int()? as i32),
        },
        Kind::Message(m) => PValue::Message(json_to_message_in(m, v, field)?),
    })
}

fn field_type(f: &FieldDescriptor, depth: usize) -> Result<SqlType, String> {
    if depth > 64 {
        return Err("PROTOBUF schema nests too deeply (a recursive message?)".into());
    }
    if f.is_map() {
        let Kind::Message(entry) = f.kind() else {
            return Err("a map field without entries".into());
        };
        let key = kind_type(&entry.map_entry_key_field(), depth)?;
        let value = kind_type(&entry.map_entry_value_field(), depth)?;
        return Ok(SqlType::Map(Box::new(key), Box::new(value)));
    }
    let t = kind_type(f, depth)?;
    Ok(if f.is_list() {
        SqlType::Array(Box::new(t))
    } else {
        t
    })
}

fn kind_type(f: &FieldDescriptor, depth: usize) -> Result<SqlType, String> {
    Ok(match f.kind() {
        Kind::Bool => SqlType::Boolean,
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => SqlType::Int,
        Kind::Uint32 | Kind::Fixed32 => SqlType::Bigint,
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 | Kind::Uint64 | Kind::Fixed64 => {
            SqlType::Bigint
        }
        Kind::Float | Kind::Double => SqlType::Double,
        Kind::String | Kind::Enum(_) => SqlType::String,
        Kind::Bytes => SqlType::Bytes,
        Kind::Message(m) => match m.full_name() {
            "google.protobuf.Timestamp" => SqlType::Timestamp,
            "google.type.Date" => SqlType::Date,
            "google.type.TimeOfDay" => SqlType::Time,
            "confluent.type.Decimal" => SqlType::Decimal {
                precision: decimal_meta(Some(f), "precision").unwrap_or(64) as u32,
                scale: decimal_meta(Some(f), "scale").unwrap_or(0) as u32,
            },
            name if is_wrapper(name) => match m.get_field_by_name("value") {
                Some(v) => kind_type(&v, depth + 1)?,
                None => SqlType::String,
            },
            _ => SqlType::Struct(
                m.fields()
                    .map(|x| {
                        Ok(StructFieldType {
                            name: Ident::new(x.name()),
                            ty: field_type(&x, depth + 1)?,
                        })
                    })
                    .collect::<Result<_, String>>()?,
            ),
        },
    })
}

/// How nulls are written (ksqlDB's `*_PROTOBUF_NULLABLE_REPRESENTATION`): proto3
/// defaults (nulls read back as 0, "", false), `optional` fields, or wrapper messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nullable {
    Defaults,
    Optional,
    Wrapper,
}

/// The `.proto` text ksqlDB writes for `cols`. `full_name`: the message's name, with its
/// package when dotted.
pub fn schema_for(
    cols: &[Column],
    full_name: Option<&str>,
    nullable: Nullable,
) -> Result<String, String> {
    let (package, name) = match full_name.map(str::trim) {
        Some(n) if !n.is_empty() => match n.rsplit_once('.') {
            Some((p, n)) => (Some(p), n.to_string()),
            None => (None, n.to_string()),
        },
        _ => (None, "ConnectDefault1".to_string()),
    };
    let mut imports = std::collections::BTreeSet::new();
    let mut counter = 1;
    let body = message_text(
        &name,
        cols.iter().map(|c| (c.name.as_str(), &c.ty)),
        nullable,
        &mut imports,
        &mut counter,
        1,
    )?;
    let mut out = String::from("syntax = \"proto3\";\n\n");
    if let Some(p) = package {
        out.push_str(&format!("package {p};\n\n"));
    }
    for i in &imports {
        out.push_str(&format!("import \"{i}\";\n"));
    }
    if !imports.is_empty() {
        out.push('\n');
    }
    out.push_str(&body);
    Ok(out)
}

fn message_text<'a>(
    name: &str,
    fields: impl Iterator<Item = (&'a str, &'a SqlType)>,
    nullable: Nullable,
    imports: &mut std::collections::BTreeSet<&'static str>,
    counter: &mut usize,
    indent: usize,
) -> Result<String, String> {
    let pad = "  ".repeat(indent);
    let mut lines = Vec::new();
    let mut nested = Vec::new();
    for (i, (field, ty)) in fields.enumerate() {
        if !crate::avro::valid_name(field) {
            return Err(format!("Invalid PROTOBUF field name: {field}"));
        }
        let (repeated, ty) = match ty {
            SqlType::Array(t) => ("repeated ", t.as_ref()),
            t => ("", t),
        };
        let type_text = match ty {
            SqlType::Map(k, v) => {
                if **k != SqlType::String {
                    return Err("PROTOBUF format only supports MAP types with STRING keys".into());
                }
                if !repeated.is_empty() {
                    return Err("PROTOBUF cannot hold an ARRAY of MAPs".into());
                }
                let v = scalar_text(v, nullable, imports, counter, &mut nested, indent, false)?;
                format!("map<string, {v}>")
            }
            SqlType::Array(_) => return Err("PROTOBUF cannot hold an ARRAY of ARRAYs".into()),
            t => scalar_text(
                t,
                nullable,
                imports,
                counter,
                &mut nested,
                indent,
                repeated.is_empty(),
            )?,
        };
        let (type_text, options) = match ty {
            SqlType::Decimal { precision, scale } => {
                imports.insert("confluent/meta.proto");
                (
                    type_text,
                    format!(
                        " [(confluent.field_meta) = {{ params: [{{ key: \"precision\", value: \"{precision}\" }}, {{ key: \"scale\", value: \"{scale}\" }}] }}]"
                    ),
                )
            }
            _ => (type_text, String::new()),
        };
        let optional = if repeated.is_empty()
            && nullable == Nullable::Optional
            && !matches!(ty, SqlType::Map(..) | SqlType::Struct(_))
            && !type_text.contains('.')
        {
            "optional "
        } else {
            ""
        };
        lines.push(format!(
            "{pad}{repeated}{optional}{type_text} {field} = {}{options};",
            i + 1
        ));
    }
    let mut out = format!("{}message {name} {{\n", "  ".repeat(indent - 1));
    for l in lines {
        out.push_str(&l);
        out.push('\n');
    }
    for n in nested {
        out.push_str(&n);
    }
    out.push_str(&format!("{}}}\n", "  ".repeat(indent - 1)));
    Ok(out)
}

fn scalar_text(
    ty: &SqlType,
    nullable: Nullable,
    imports: &mut std::collections::BTreeSet<&'static str>,
    counter: &mut usize,
    nested: &mut Vec<String>,
    indent: usize,
    single: bool,
) -> Result<String, String> {
    let wrap = |imports: &mut std::collections::BTreeSet<&'static str>, w: &str, plain: &str| {
        if nullable == Nullable::Wrapper && single {
            imports.insert("google/protobuf/wrappers.proto");
            format!("google.protobuf.{w}")
        } else {
            plain.to_string()
        }
    };
    Ok(match ty {
        SqlType::Boolean => wrap(imports, "BoolValue", "bool"),
        SqlType::Int => wrap(imports, "Int32Value", "int32"),
        SqlType::Bigint => wrap(imports, "Int64Value", "int64"),
        SqlType::Double => wrap(imports, "DoubleValue", "double"),
        SqlType::String => wrap(imports, "StringValue", "string"),
        SqlType::Bytes => wrap(imports, "BytesValue", "bytes"),
        SqlType::Decimal { .. } => {
            imports.insert("confluent/type/decimal.proto");
            "confluent.type.Decimal".into()
        }
        SqlType::Date => {
            imports.insert("google/type/date.proto");
            "google.type.Date".into()
        }
        SqlType::Time => {
            imports.insert("google/type/timeofday.proto");
            "google.type.TimeOfDay".into()
        }
        SqlType::Timestamp => {
            imports.insert("google/protobuf/timestamp.proto");
            "google.protobuf.Timestamp".into()
        }
        SqlType::Struct(fields) => {
            *counter += 1;
            let name = format!("ConnectDefault{counter}");
            nested.push(message_text(
                &name,
                fields.iter().map(|f| (f.name.value.as_str(), &f.ty)),
                nullable,
                imports,
                counter,
                indent + 1,
            )?);
            name
        }
        SqlType::Array(_) | SqlType::Map(..) => {
            return Err("PROTOBUF cannot nest an ARRAY or MAP here".into());
        }
        SqlType::Custom(n) => return Err(format!("type {n} was not resolved")),
    })
}
