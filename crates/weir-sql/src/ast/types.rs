//! ksqlDB's SQL types as written in column lists, `CREATE TYPE` and `CAST`.

use std::fmt;

use sqlparser::ast::{
    ArrayElemTypeDef, DataType, ExactNumberInfo, Ident, ObjectName, StructBracketKind, StructField,
    TimezoneInfo,
};

use super::fmt_ident;

/// A ksqlDB type. `VARCHAR` and `STRING` are the same type, as are `INT` and `INTEGER`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SqlType {
    Boolean,
    Int,
    Bigint,
    Double,
    Decimal {
        precision: u32,
        scale: u32,
    },
    String,
    Bytes,
    Date,
    Time,
    Timestamp,
    Array(Box<SqlType>),
    Map(Box<SqlType>, Box<SqlType>),
    Struct(Vec<StructFieldType>),
    /// A type registered with `CREATE TYPE`.
    Custom(Ident),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StructFieldType {
    pub name: Ident,
    pub ty: SqlType,
}

impl SqlType {
    /// The base type named by a single word, if it is one of ksqlDB's.
    pub fn from_name(word: &str) -> Option<SqlType> {
        Some(match word {
            "BOOLEAN" => SqlType::Boolean,
            "INT" | "INTEGER" => SqlType::Int,
            "BIGINT" => SqlType::Bigint,
            "DOUBLE" => SqlType::Double,
            "STRING" | "VARCHAR" => SqlType::String,
            "BYTES" => SqlType::Bytes,
            "DATE" => SqlType::Date,
            "TIME" => SqlType::Time,
            "TIMESTAMP" => SqlType::Timestamp,
            _ => return None,
        })
    }

    /// The sqlparser form, used where a type sits inside an expression (`CAST`).
    pub fn to_data_type(&self) -> DataType {
        match self {
            SqlType::Boolean => DataType::Boolean,
            SqlType::Int => DataType::Integer(None),
            SqlType::Bigint => DataType::BigInt(None),
            SqlType::Double => DataType::Double(ExactNumberInfo::None),
            SqlType::Decimal { precision, scale } => DataType::Decimal(
                ExactNumberInfo::PrecisionAndScale(*precision as u64, *scale as i64),
            ),
            SqlType::String => DataType::String(None),
            SqlType::Bytes => DataType::Bytes(None),
            SqlType::Date => DataType::Date,
            SqlType::Time => DataType::Time(None, TimezoneInfo::None),
            SqlType::Timestamp => DataType::Timestamp(None, TimezoneInfo::None),
            SqlType::Array(t) => {
                DataType::Array(ArrayElemTypeDef::AngleBracket(Box::new(t.to_data_type())))
            }
            SqlType::Map(k, v) => {
                DataType::Map(Box::new(k.to_data_type()), Box::new(v.to_data_type()))
            }
            SqlType::Struct(fields) => DataType::Struct(
                fields
                    .iter()
                    .map(|f| StructField {
                        field_name: Some(f.name.clone()),
                        field_type: f.ty.to_data_type(),
                        options: None,
                    })
                    .collect(),
                StructBracketKind::AngleBrackets,
            ),
            SqlType::Custom(name) => DataType::Custom(ObjectName::from(vec![name.clone()]), vec![]),
        }
    }

    /// The inverse of [`SqlType::to_data_type`]; `None` for types ksqlDB does not have.
    pub fn from_data_type(dt: &DataType) -> Option<SqlType> {
        Some(match dt {
            DataType::Boolean => SqlType::Boolean,
            DataType::Integer(None) | DataType::Int(None) => SqlType::Int,
            DataType::BigInt(None) => SqlType::Bigint,
            DataType::Double(ExactNumberInfo::None) => SqlType::Double,
            DataType::Decimal(ExactNumberInfo::PrecisionAndScale(p, s)) => SqlType::Decimal {
                precision: u32::try_from(*p).ok()?,
                scale: u32::try_from(*s).ok()?,
            },
            DataType::String(None) | DataType::Varchar(None) => SqlType::String,
            DataType::Bytes(None) => SqlType::Bytes,
            DataType::Date => SqlType::Date,
            DataType::Time(None, TimezoneInfo::None) => SqlType::Time,
            DataType::Timestamp(None, TimezoneInfo::None) => SqlType::Timestamp,
            DataType::Array(ArrayElemTypeDef::AngleBracket(t)) => {
                SqlType::Array(Box::new(Self::from_data_type(t)?))
            }
            DataType::Map(k, v) => SqlType::Map(
                Box::new(Self::from_data_type(k)?),
                Box::new(Self::from_data_type(v)?),
            ),
            DataType::Struct(fields, _) => SqlType::Struct(
                fields
                    .iter()
                    .map(|f| {
                        Some(StructFieldType {
                            name: f.field_name.clone()?,
                            ty: Self::from_data_type(&f.field_type)?,
                        })
                    })
                    .collect::<Option<_>>()?,
            ),
            DataType::Custom(name, args) if args.is_empty() && name.0.len() == 1 => {
                SqlType::Custom(name.0[0].as_ident()?.clone())
            }
            _ => return None,
        })
    }
}

impl fmt::Display for SqlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SqlType::Boolean => f.write_str("BOOLEAN"),
            SqlType::Int => f.write_str("INTEGER"),
            SqlType::Bigint => f.write_str("BIGINT"),
            SqlType::Double => f.write_str("DOUBLE"),
            SqlType::Decimal { precision, scale } => write!(f, "DECIMAL({precision}, {scale})"),
            SqlType::String => f.write_str("STRING"),
            SqlType::Bytes => f.write_str("BYTES"),
            SqlType::Date => f.write_str("DATE"),
            SqlType::Time => f.write_str("TIME"),
            SqlType::Timestamp => f.write_str("TIMESTAMP"),
            SqlType::Array(t) => write!(f, "ARRAY<{t}>"),
            SqlType::Map(k, v) => write!(f, "MAP<{k}, {v}>"),
            SqlType::Struct(fields) => {
                f.write_str("STRUCT<")?;
                for (i, fld) in fields.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{} {}", fmt_ident(&fld.name), fld.ty)?;
                }
                f.write_str(">")
            }
            SqlType::Custom(name) => write!(f, "{}", fmt_ident(name)),
        }
    }
}
