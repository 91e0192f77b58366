//! Arrow types back to ksqlDB types: what a query's output columns are declared as.

use arrow::datatypes::DataType;
use weir_sql::ast::{Ident, SqlType, StructFieldType};

use crate::error::{EngineError, Result};

pub fn sql_type_of(dt: &DataType) -> Result<SqlType> {
    Ok(match dt {
        DataType::Boolean => SqlType::Boolean,
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::UInt8 | DataType::UInt16 => {
            SqlType::Int
        }
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => SqlType::Bigint,
        DataType::Float16 | DataType::Float32 | DataType::Float64 => SqlType::Double,
        DataType::Decimal128(p, s) => SqlType::Decimal {
            precision: *p as u32,
            scale: (*s).max(0) as u32,
        },
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => SqlType::String,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => SqlType::Bytes,
        DataType::Date32 | DataType::Date64 => SqlType::Date,
        DataType::Time32(_) | DataType::Time64(_) => SqlType::Time,
        DataType::Timestamp(..) => SqlType::Timestamp,
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            SqlType::Array(Box::new(sql_type_of(f.data_type())?))
        }
        DataType::Map(entries, _) => match entries.data_type() {
            DataType::Struct(kv) if kv.len() == 2 => SqlType::Map(
                Box::new(sql_type_of(kv[0].data_type())?),
                Box::new(sql_type_of(kv[1].data_type())?),
            ),
            other => {
                return Err(EngineError::Unsupported(format!(
                    "map entries of type {other}"
                )));
            }
        },
        DataType::Struct(fields) => SqlType::Struct(
            fields
                .iter()
                .map(|f| {
                    Ok(StructFieldType {
                        name: Ident::new(f.name()),
                        ty: sql_type_of(f.data_type())?,
                    })
                })
                .collect::<Result<_>>()?,
        ),
        // A bare NULL literal: ksqlDB gives it no type; STRING holds it.
        DataType::Null => SqlType::String,
        other => {
            return Err(EngineError::Unsupported(format!(
                "values of Arrow type {other}"
            )));
        }
    })
}

/// The Arrow type of `MAP<key, value>`, laid out as the formats read and write maps.
pub fn map_type(key: DataType, value: DataType) -> DataType {
    use arrow::datatypes::{Field, Fields};
    use std::sync::Arc;
    DataType::Map(
        Arc::new(Field::new(
            "entries",
            DataType::Struct(Fields::from(vec![
                Field::new("key", key, false),
                Field::new("value", value, true),
            ])),
            false,
        )),
        false,
    )
}

/// `a` as `ty`, cast when its type differs.
pub(crate) fn cast_to(a: arrow::array::ArrayRef, ty: &DataType) -> Result<arrow::array::ArrayRef> {
    if a.data_type() == ty {
        Ok(a)
    } else {
        Ok(arrow::compute::cast(&a, ty)?)
    }
}

/// A batch of `schema` from columns each cast to its field's type where it differs.
pub(crate) fn batch_as(
    schema: arrow::datatypes::SchemaRef,
    columns: Vec<arrow::array::ArrayRef>,
) -> Result<arrow::array::RecordBatch> {
    let columns = columns
        .into_iter()
        .zip(schema.fields())
        .map(|(c, f)| cast_to(c, f.data_type()))
        .collect::<Result<Vec<_>>>()?;
    Ok(arrow::array::RecordBatch::try_new(schema, columns)?)
}
