//! ksqlDB functions DataFusion does not have, as DataFusion scalar UDFs with ksqlDB's names
//! and semantics. (The rest resolve to DataFusion's own functions; see `functions.rs`.)

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, StringArray};
use arrow::datatypes::{DataType, Float64Type};
use datafusion::common::{Result, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};

use crate::types::sql_type_of;

/// The UDFs this module provides.
pub fn all() -> Vec<Arc<ScalarUDF>> {
    vec![
        Arc::new(ScalarUDF::from(GeoDistance::new())),
        Arc::new(ScalarUDF::from(ToJsonString::new())),
        Arc::new(ScalarUDF::from(ExtractJsonField::new())),
        Arc::new(ScalarUDF::from(Codec::new(CodecKind::ToBytes))),
        Arc::new(ScalarUDF::from(Codec::new(CodecKind::FromBytes))),
        Arc::new(ScalarUDF::from(Codec::new(CodecKind::Encode))),
        Arc::new(ScalarUDF::from(KsqlCast::new())),
    ]
}

/// `ksql_cast(x, 'arrow type')`: the CASTs DataFusion does not plan, written so by the
/// expression compiler: to a MAP type (its keys and values cast in turn), and a MAP,
/// STRUCT or ARRAY to STRING, written as ksqlDB's JVM writes them (`{k=1, j=2}`,
/// `Struct{F0=1,f1=3}`, `[1, 2]`).
#[derive(Debug, PartialEq, Eq, Hash)]
struct KsqlCast {
    signature: Signature,
}

impl KsqlCast {
    fn new() -> Self {
        Self {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }

    fn target(args: &datafusion::logical_expr::ReturnFieldArgs) -> Result<DataType> {
        match args.scalar_arguments.get(1).copied().flatten() {
            Some(datafusion::common::ScalarValue::Utf8(Some(t))) => t
                .parse::<DataType>()
                .map_err(|e| datafusion::error::DataFusionError::Plan(e.to_string())),
            _ => datafusion::common::plan_err!("ksql_cast needs a target type"),
        }
    }
}

/// A value as the JVM's `toString` writes it, for CAST to STRING.
fn java_text(array: &ArrayRef, row: usize) -> String {
    if array.is_null(row) {
        return "null".into();
    }
    match array.data_type() {
        DataType::Map(..) => {
            let m = array.as_map();
            let entries = m.value(row);
            let (k, v) = (entries.column(0), entries.column(1));
            let parts: Vec<String> = (0..entries.len())
                .map(|i| format!("{}={}", java_text(k, i), java_text(v, i)))
                .collect();
            format!("{{{}}}", parts.join(", "))
        }
        DataType::Struct(fields) => {
            let st = array.as_struct();
            let parts: Vec<String> = fields
                .iter()
                .zip(st.columns())
                .map(|(f, c)| format!("{}={}", f.name(), java_text(c, row)))
                .collect();
            format!("Struct{{{}}}", parts.join(","))
        }
        DataType::List(_) => {
            let items = array.as_list::<i32>().value(row);
            let parts: Vec<String> = (0..items.len()).map(|i| java_text(&items, i)).collect();
            format!("[{}]", parts.join(", "))
        }
        _ => match arrow::compute::cast(&array.slice(row, 1), &DataType::Utf8) {
            Ok(text) => text.as_string::<i32>().value(0).to_string(),
            Err(_) => String::new(),
        },
    }
}

impl ScalarUDFImpl for KsqlCast {
    fn name(&self) -> &str {
        "ksql_cast"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        datafusion::common::internal_err!("ksql_cast's type comes from its arguments")
    }

    fn return_field_from_args(
        &self,
        args: datafusion::logical_expr::ReturnFieldArgs,
    ) -> Result<arrow::datatypes::FieldRef> {
        let target = Self::target(&args)?;
        let from = args.arg_fields[0].data_type();
        if matches!(target, DataType::Map(..))
            && !matches!(from, DataType::Map(..) | DataType::Null)
        {
            return datafusion::common::plan_err!(
                "Cast of {} to {} is not supported",
                sql_type_of(from)
                    .map(|t| t.to_string())
                    .unwrap_or_else(|_| from.to_string()),
                sql_type_of(&target)
                    .map(|t| t.to_string())
                    .unwrap_or_else(|_| target.to_string())
            );
        }
        Ok(Arc::new(arrow::datatypes::Field::new(
            self.name(),
            target,
            true,
        )))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let array = args.args[0].to_array(args.number_rows)?;
        let target = args.return_field.data_type().clone();
        let nested = matches!(
            array.data_type(),
            DataType::Map(..) | DataType::Struct(_) | DataType::List(_)
        );
        if matches!(target, DataType::Utf8 | DataType::Utf8View) && nested {
            let out: StringArray = (0..array.len())
                .map(|row| (!array.is_null(row)).then(|| java_text(&array, row)))
                .collect();
            return Ok(ColumnarValue::Array(arrow::compute::cast(
                &(Arc::new(out) as ArrayRef),
                &target,
            )?));
        }
        Ok(ColumnarValue::Array(cast_as_java(&array, &target)?))
    }
}

/// `array` cast to `target` as ksqlDB casts: a narrower integer wraps (the JVM's
/// narrowing), a MAP's keys and values cast in turn; the rest as Arrow casts.
fn cast_as_java(array: &ArrayRef, target: &DataType) -> Result<ArrayRef> {
    use arrow::datatypes::{Int32Type, Int64Type};
    Ok(match (array.data_type(), target) {
        (DataType::Int64, DataType::Int32) => Arc::new(
            array
                .as_primitive::<Int64Type>()
                .unary::<_, Int32Type>(|v| v as i32),
        ),
        (DataType::Map(..), DataType::Map(field, sorted)) => {
            let m = array.as_map();
            let DataType::Struct(fields) = field.data_type() else {
                return exec_err!("a map's entries are a struct");
            };
            let keys = cast_as_java(m.keys(), fields[0].data_type())?;
            let values = cast_as_java(m.values(), fields[1].data_type())?;
            let entries =
                arrow::array::StructArray::try_new(fields.clone(), vec![keys, values], None)?;
            Arc::new(arrow::array::MapArray::try_new(
                field.clone(),
                m.offsets().clone(),
                entries,
                m.nulls().cloned(),
                *sorted,
            )?)
        }
        _ => arrow::compute::cast(array, target)?,
    })
}

fn float_arg(v: &ColumnarValue, rows: usize) -> Result<Float64Array> {
    let a = v.to_array(rows)?;
    Ok(arrow::compute::cast(&a, &DataType::Float64)?
        .as_primitive::<Float64Type>()
        .clone())
}

/// `GEO_DISTANCE(lat1, lon1, lat2, lon2 [, 'KM' | 'MI'])`: great-circle distance by the
/// haversine formula, in kilometers unless miles are asked for.
#[derive(Debug, PartialEq, Eq, Hash)]
struct GeoDistance {
    signature: Signature,
}

impl GeoDistance {
    fn new() -> Self {
        Self {
            signature: Signature::one_of(
                vec![TypeSignature::Any(4), TypeSignature::Any(5)],
                Volatility::Immutable,
            ),
        }
    }
}

fn earth_radius(unit: &str) -> Result<f64> {
    match unit.to_ascii_uppercase().as_str() {
        "KM" | "KILOMETER" | "KILOMETERS" | "KILOMETRE" | "KILOMETRES" => Ok(6371.0),
        "MI" | "MILE" | "MILES" => Ok(3959.0),
        other => exec_err!("GEO_DISTANCE unit must be KM or MI, not '{other}'"),
    }
}

impl ScalarUDFImpl for GeoDistance {
    fn name(&self) -> &str {
        "geo_distance"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        if args
            .iter()
            .take(4)
            .any(|t| !t.is_numeric() && *t != DataType::Null)
        {
            let names: Vec<String> = args
                .iter()
                .map(|t| {
                    crate::types::sql_type_of(t)
                        .map(|s| s.to_string())
                        .unwrap_or_else(|_| t.to_string())
                })
                .collect();
            return datafusion::common::plan_err!(
                "Function 'geo_distance' does not accept parameters ({})",
                names.join(", ")
            );
        }
        Ok(DataType::Float64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let coords: Vec<Float64Array> = args.args[..4]
            .iter()
            .map(|a| float_arg(a, n))
            .collect::<Result<_>>()?;
        let units = match args.args.get(4) {
            Some(u) => Some(arrow::compute::cast(&u.to_array(n)?, &DataType::Utf8)?),
            None => None,
        };
        let mut out = Vec::with_capacity(n);
        for row in 0..n {
            if coords.iter().any(|c| c.is_null(row)) {
                out.push(None);
                continue;
            }
            let [lat1, lon1, lat2, lon2] = [0, 1, 2, 3].map(|i| coords[i].value(row));
            for lat in [lat1, lat2] {
                if !(-90.0..=90.0).contains(&lat) {
                    return exec_err!(
                        "valid latitude values are in the range -90 to 90, got {lat}"
                    );
                }
            }
            for lon in [lon1, lon2] {
                if !(-180.0..=180.0).contains(&lon) {
                    return exec_err!(
                        "valid longitude values are in the range -180 to 180, got {lon}"
                    );
                }
            }
            // No unit (or a null one): kilometers.
            let radius = match &units {
                Some(u) if !u.is_null(row) => earth_radius(u.as_string::<i32>().value(row))?,
                _ => 6371.0,
            };
            // Degrees to radians as ksqlDB's JVM does it (`deg / 180 * PI`), so results
            // agree with ksqlDB's to the last digit.
            let rad = |deg: f64| deg / 180.0 * std::f64::consts::PI;
            let hav = |x: f64| (x / 2.0).sin().powi(2);
            // In this order: floating point is not associative.
            let a =
                hav(rad(lat2 - lat1)) + hav(rad(lon2 - lon1)) * rad(lat1).cos() * rad(lat2).cos();
            out.push(Some(2.0 * a.sqrt().asin() * radius));
        }
        Ok(ColumnarValue::Array(
            Arc::new(Float64Array::from(out)) as ArrayRef
        ))
    }
}

/// `TO_JSON_STRING(x)`: any value as JSON text, as ksqlDB writes it.
#[derive(Debug, PartialEq, Eq, Hash)]
struct ToJsonString {
    signature: Signature,
}

impl ToJsonString {
    fn new() -> Self {
        Self {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for ToJsonString {
    fn name(&self) -> &str {
        "to_json_string"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let array = args.args[0].to_array(args.number_rows)?;
        let ty = sql_type_of(array.data_type()).unwrap_or(weir_sql::ast::SqlType::String);
        // Dates, times and timestamps as ksqlDB writes them in JSON text: ISO strings.
        let temporal = match array.data_type() {
            DataType::Date32 | DataType::Time32(_) | DataType::Time64(_) => {
                Some(arrow::compute::cast(&array, &DataType::Utf8)?)
            }
            DataType::Timestamp(..) => {
                let millis = arrow::compute::cast(
                    &array,
                    &DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, None),
                )?;
                let millis = millis.as_primitive::<arrow::datatypes::TimestampMillisecondType>();
                Some(Arc::new(
                    millis
                        .iter()
                        .map(|m| {
                            m.and_then(chrono::DateTime::from_timestamp_millis)
                                .map(|t| t.naive_utc().format("%Y-%m-%dT%H:%M:%S%.3f").to_string())
                        })
                        .collect::<StringArray>(),
                ) as ArrayRef)
            }
            _ => None,
        };
        let out: StringArray = match temporal {
            Some(text) => {
                let text = text.as_string::<i32>();
                (0..text.len())
                    .map(|row| {
                        Some(if text.is_null(row) {
                            "null".to_string()
                        } else {
                            serde_json::Value::String(text.value(row).to_string()).to_string()
                        })
                    })
                    .collect()
            }
            None => (0..array.len())
                .map(|row| Some(weir_format::convert::value_at(&array, row, &ty).to_string()))
                .collect(),
        };
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

/// `EXTRACTJSONFIELD(json, '$.path')`: the value at a JSONPath (`$`, `.name`, `['name']`,
/// `[index]`) of a JSON string: strings as they are, other values as JSON text, NULL when
/// the path is missing or the text is not JSON.
#[derive(Debug, PartialEq, Eq, Hash)]
struct ExtractJsonField {
    signature: Signature,
}

impl ExtractJsonField {
    fn new() -> Self {
        Self {
            signature: Signature::exact(
                vec![DataType::Utf8, DataType::Utf8],
                Volatility::Immutable,
            ),
        }
    }
}

enum PathStep {
    Field(String),
    Index(i64),
}

/// Parses the JSONPath subset ksqlDB documents; `None` for a path it does not support.
fn parse_json_path(path: &str) -> Option<Vec<PathStep>> {
    let mut rest = path.trim().strip_prefix('$')?;
    let mut steps = Vec::new();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            steps.push(PathStep::Field(r[..end].to_string()));
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            let inner = r[..end].trim();
            let step = match inner.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
                Some(name) => PathStep::Field(name.to_string()),
                None => PathStep::Index(inner.parse().ok()?),
            };
            steps.push(step);
            rest = &r[end + 1..];
        } else {
            return None;
        }
    }
    Some(steps)
}

fn extract(json: &str, steps: &[PathStep]) -> Option<String> {
    use serde_json::value::RawValue;
    // The text's first JSON value (what follows it is ignored, as ksqlDB's parser does),
    // walked without re-writing numbers: `1.23450` comes out as written.
    let mut raw: &RawValue = serde_json::Deserializer::from_str(json)
        .into_iter::<&RawValue>()
        .next()?
        .ok()?;
    for step in steps {
        raw = match step {
            PathStep::Field(name) => {
                let mut m: std::collections::HashMap<String, &RawValue> =
                    serde_json::from_str(raw.get()).ok()?;
                m.remove(name)?
            }
            // ksqlDB's JSONPath has no negative indexes: `[-1]` finds nothing.
            PathStep::Index(i) => {
                let a: Vec<&RawValue> = serde_json::from_str(raw.get()).ok()?;
                if *i < 0 {
                    return None;
                }
                *a.get(*i as usize)?
            }
        };
    }
    let text = raw.get().trim();
    match text.as_bytes().first()? {
        b'"' => serde_json::from_str::<String>(text).ok(),
        b'n' => None,
        b'{' | b'[' => serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .map(|v| v.to_string()),
        _ => Some(text.to_string()),
    }
}

impl ScalarUDFImpl for ExtractJsonField {
    fn name(&self) -> &str {
        "extractjsonfield"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let json = args.args[0].to_array(n)?;
        let paths = args.args[1].to_array(n)?;
        let (json, paths) = (json.as_string::<i32>(), paths.as_string::<i32>());
        let out: StringArray = (0..n)
            .map(|row| {
                if json.is_null(row) || paths.is_null(row) {
                    return None;
                }
                let steps = parse_json_path(paths.value(row))?;
                extract(json.value(row), &steps)
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

/// The text encodings ksqlDB's byte functions take: `hex`, `utf8`, `ascii`, `base64`.
fn decode_text(text: &str, encoding: &str) -> std::result::Result<Vec<u8>, String> {
    use base64::Engine;
    match encoding.to_ascii_lowercase().as_str() {
        "utf8" => Ok(text.as_bytes().to_vec()),
        // As Java's `getBytes(US_ASCII)`: a character ASCII lacks becomes '?'.
        "ascii" => Ok(text
            .chars()
            .map(|c| if c.is_ascii() { c as u8 } else { b'?' })
            .collect()),
        "hex" => {
            let digits = text
                .strip_prefix("0x")
                .or_else(|| text.strip_prefix("0X"))
                .unwrap_or(text);
            let digits = if digits.len() % 2 == 1 {
                format!("0{digits}")
            } else {
                digits.to_string()
            };
            (0..digits.len())
                .step_by(2)
                .map(|i| {
                    u8::from_str_radix(&digits[i..i + 2], 16)
                        .map_err(|_| format!("'{text}' is not hex"))
                })
                .collect()
        }
        "base64" => base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| format!("not base64: {e}")),
        other => Err(format!(
            "Unsupported encoding '{other}': use hex, utf8, ascii or base64"
        )),
    }
}

fn encode_bytes(bytes: &[u8], encoding: &str) -> std::result::Result<String, String> {
    use base64::Engine;
    match encoding.to_ascii_lowercase().as_str() {
        "utf8" => String::from_utf8(bytes.to_vec()).map_err(|e| e.to_string()),
        // As Java's `new String(bytes, US_ASCII)`: a byte above 127 becomes U+FFFD.
        "ascii" => Ok(bytes
            .iter()
            .map(|b| if b.is_ascii() { *b as char } else { '\u{FFFD}' })
            .collect()),
        "hex" => Ok(bytes.iter().map(|b| format!("{b:02x}")).collect()),
        "base64" => Ok(base64::engine::general_purpose::STANDARD.encode(bytes)),
        other => Err(format!(
            "Unsupported encoding '{other}': use hex, utf8, ascii or base64"
        )),
    }
}

#[derive(Debug, PartialEq, Eq, Hash, Clone, Copy)]
enum CodecKind {
    /// `TO_BYTES(string, encoding)`
    ToBytes,
    /// `FROM_BYTES(bytes, encoding)`
    FromBytes,
    /// `ENCODE(string, input encoding, output encoding)`
    Encode,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Codec {
    kind: CodecKind,
    signature: Signature,
}

impl Codec {
    fn new(kind: CodecKind) -> Self {
        let args = match kind {
            CodecKind::ToBytes => vec![DataType::Utf8, DataType::Utf8],
            CodecKind::FromBytes => vec![DataType::Binary, DataType::Utf8],
            CodecKind::Encode => vec![DataType::Utf8, DataType::Utf8, DataType::Utf8],
        };
        Self {
            kind,
            signature: Signature::exact(args, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for Codec {
    fn name(&self) -> &str {
        match self.kind {
            CodecKind::ToBytes => "to_bytes",
            CodecKind::FromBytes => "from_bytes",
            CodecKind::Encode => "ksql_encode",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(if self.kind == CodecKind::ToBytes {
            DataType::Binary
        } else {
            DataType::Utf8
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let arrays: Vec<ArrayRef> = args
            .args
            .iter()
            .map(|a| a.to_array(n))
            .collect::<Result<_>>()?;
        let text = |i: usize, row: usize| -> Option<&str> {
            let a = arrays[i].as_string::<i32>();
            (!a.is_null(row)).then(|| a.value(row))
        };
        match self.kind {
            CodecKind::ToBytes => {
                let mut out = arrow::array::BinaryBuilder::new();
                for row in 0..n {
                    match (text(0, row), text(1, row)) {
                        (Some(s), Some(enc)) => match decode_text(s, enc) {
                            Ok(b) => out.append_value(b),
                            Err(e) => return exec_err!("TO_BYTES: {e}"),
                        },
                        _ => out.append_null(),
                    }
                }
                Ok(ColumnarValue::Array(Arc::new(out.finish())))
            }
            CodecKind::FromBytes => {
                let bytes = arrays[0].as_binary::<i32>();
                let mut out = arrow::array::StringBuilder::new();
                for row in 0..n {
                    match (bytes.is_null(row), text(1, row)) {
                        (false, Some(enc)) => match encode_bytes(bytes.value(row), enc) {
                            // FROM_BYTES writes hex in capitals (ENCODE does not).
                            Ok(s) if enc.eq_ignore_ascii_case("hex") => {
                                out.append_value(s.to_uppercase())
                            }
                            Ok(s) => out.append_value(s),
                            Err(e) => return exec_err!("FROM_BYTES: {e}"),
                        },
                        _ => out.append_null(),
                    }
                }
                Ok(ColumnarValue::Array(Arc::new(out.finish())))
            }
            CodecKind::Encode => {
                // ksqlDB's ENCODE gives NULL for input it cannot convert.
                let out: StringArray = (0..n)
                    .map(|row| {
                        let (s, from, to) = (text(0, row)?, text(1, row)?, text(2, row)?);
                        encode_bytes(&decode_text(s, from).ok()?, to).ok()
                    })
                    .collect();
                Ok(ColumnarValue::Array(Arc::new(out)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_paths_extract_like_ksqldb() {
        let doc = r#"{"name": "car", "v": 2, "tags": ["a", {"x": 1}], "o": {"k": null, "s": "t"}}"#;
        let get = |p: &str| extract(doc, &parse_json_path(p).unwrap());
        assert_eq!(get("$.name").as_deref(), Some("car"));
        assert_eq!(get("$.v").as_deref(), Some("2"));
        assert_eq!(get("$.tags[1]").as_deref(), Some(r#"{"x":1}"#));
        assert_eq!(get("$.tags[0]").as_deref(), Some("a"));
        assert_eq!(get("$.tags[-1]"), None);
        assert_eq!(get("$['o'].s").as_deref(), Some("t"));
        assert_eq!(get("$.o.k"), None);
        assert_eq!(get("$.missing"), None);
        assert_eq!(extract("not json", &parse_json_path("$.a").unwrap()), None);
        assert!(parse_json_path("name").is_none());
    }

    #[test]
    fn byte_encodings_round_trip() {
        for enc in ["hex", "utf8", "ascii", "base64"] {
            let bytes = decode_text(&encode_bytes(b"Hello!", enc).unwrap(), enc).unwrap();
            assert_eq!(bytes, b"Hello!", "{enc}");
        }
        assert_eq!(encode_bytes(b"\x01\xff", "hex").unwrap(), "01ff");
        assert_eq!(decode_text("0x1", "hex").unwrap(), [1]);
        assert!(decode_text("zz", "hex").is_err());
        assert_eq!(decode_text("aΕb", "ascii").unwrap(), b"a?b");
        assert_eq!(encode_bytes(&[b'a', 0xce], "ascii").unwrap(), "a\u{FFFD}");
        assert!(decode_text("x", "ebcdic").is_err());
    }
}
