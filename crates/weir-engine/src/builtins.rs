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
    ]
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

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
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
        let out: StringArray = (0..array.len())
            .map(|row| Some(weir_format::convert::value_at(&array, row, &ty).to_string()))
            .collect();
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
    let mut v: serde_json::Value = serde_json::from_str(json).ok()?;
    for step in steps {
        v = match (step, v) {
            (PathStep::Field(name), serde_json::Value::Object(mut m)) => m.remove(name)?,
            (PathStep::Index(i), serde_json::Value::Array(mut a)) => {
                let i = if *i < 0 { a.len() as i64 + i } else { *i };
                if i < 0 || i as usize >= a.len() {
                    return None;
                }
                a.swap_remove(i as usize)
            }
            _ => return None,
        };
    }
    match v {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s),
        other => Some(other.to_string()),
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
        assert_eq!(get("$.tags[-2]").as_deref(), Some("a"));
        assert_eq!(get("$['o'].s").as_deref(), Some("t"));
        assert_eq!(get("$.o.k"), None);
        assert_eq!(get("$.missing"), None);
        assert_eq!(extract("not json", &parse_json_path("$.a").unwrap()), None);
        assert!(parse_json_path("name").is_none());
    }
}
