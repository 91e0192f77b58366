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
