//! KAFKA: Kafka's primitive serializers — INT as 4 big-endian bytes, BIGINT and DOUBLE as
//! 8, STRING as UTF-8, BYTES as is. One column per side.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Number, Value};
use weir_sql::ast::SqlType;

pub(crate) fn supports(ty: &SqlType) -> bool {
    matches!(
        ty,
        SqlType::Int | SqlType::Bigint | SqlType::Double | SqlType::String | SqlType::Bytes
    )
}

fn fixed<const N: usize>(bytes: &[u8], what: &str) -> Result<[u8; N], String> {
    bytes
        .try_into()
        .map_err(|_| format!("Size of data received by {what} is not {N}"))
}

pub(crate) fn decode(bytes: &[u8], ty: &SqlType) -> Result<Value, String> {
    Ok(match ty {
        SqlType::Int => Value::from(i32::from_be_bytes(fixed(bytes, "IntegerDeserializer")?)),
        SqlType::Bigint => Value::from(i64::from_be_bytes(fixed(bytes, "LongDeserializer")?)),
        SqlType::Double => {
            let f = f64::from_be_bytes(fixed(bytes, "DoubleDeserializer")?);
            Number::from_f64(f)
                .map(Value::Number)
                .unwrap_or(Value::Null)
        }
        SqlType::String => Value::String(
            String::from_utf8(bytes.to_vec()).map_err(|e| format!("Invalid UTF-8: {e}"))?,
        ),
        SqlType::Bytes => Value::String(BASE64.encode(bytes)),
        other => return Err(format!("The KAFKA format does not support type {other}")),
    })
}

pub(crate) fn encode(v: &Value, ty: &SqlType) -> Result<Option<Vec<u8>>, String> {
    if v.is_null() {
        return Ok(None);
    }
    let bad = || format!("Cannot write {v} as KAFKA {ty}");
    Ok(Some(match ty {
        SqlType::Int => (v
            .as_i64()
            .and_then(|i| i32::try_from(i).ok())
            .ok_or_else(bad)?)
        .to_be_bytes()
        .to_vec(),
        SqlType::Bigint => v.as_i64().ok_or_else(bad)?.to_be_bytes().to_vec(),
        SqlType::Double => v.as_f64().ok_or_else(bad)?.to_be_bytes().to_vec(),
        SqlType::String => match v {
            Value::String(s) => s.clone().into_bytes(),
            other => other.to_string().into_bytes(),
        },
        SqlType::Bytes => BASE64
            .decode(v.as_str().ok_or_else(bad)?)
            .map_err(|e| e.to_string())?,
        _ => return Err(bad()),
    }))
}
