//! `POST /inserts-stream` (HTTP/2 only, as ksqlDB's): the first line names the target
//! stream, `{"target": "S"}`; each following line is one row as a JSON object (column
//! names case-insensitive). Every row is acknowledged on its own line as it is stored,
//! `{"status":"ok","seq":n}`, or refused, `{"status":"error","seq":n,...}`; a bad row never
//! ends the stream.
//!
//! A row is turned into `INSERT INTO ... VALUES` with literals typed after the stream's
//! columns, so it takes the same checks, coercions and encoding as the statement.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::Version;
use axum::response::Response;
use futures_util::StreamExt;
use serde_json::{Map, Value, json};
use weir_format::Column;
use weir_sql::ast::SqlType;

use crate::AppState;
use crate::entities::{code, generic_error};
use crate::rest::{blocking, error_response, streaming_response};

pub(crate) async fn inserts_stream(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Response {
    if request.version() != Version::HTTP_2 {
        return error_response(generic_error(
            code::HTTP2_ONLY,
            "This endpoint is only available when using HTTP2",
        ));
    }
    let mut body = request.into_body().into_data_stream();
    let mut buf: Vec<u8> = Vec::new();
    // The first line names the target.
    let first = loop {
        if let Some(pos) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            break line;
        }
        match body.next().await {
            Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
            Some(Err(e)) => {
                return error_response(generic_error(code::BAD_REQUEST, &e.to_string()));
            }
            None => break std::mem::take(&mut buf),
        }
    };
    let target = match serde_json::from_slice::<Value>(&first) {
        Ok(v) => v["target"].as_str().map(str::to_string),
        Err(_) => None,
    };
    let Some(target) = target else {
        return error_response(generic_error(
            code::BAD_REQUEST,
            "The first line must be a JSON object naming the target: {\"target\": \"STREAM\"}",
        ));
    };
    let lookup = {
        let target = target.clone();
        blocking(&state, move |s| {
            let engine = s.runtime.engine();
            let source = engine
                .catalog()
                .source(&target)
                .or_else(|| engine.catalog().source(&target.to_ascii_uppercase()))
                .cloned();
            match source {
                Some(src) if !src.read_only => Ok((
                    src.name.clone(),
                    src.layout
                        .key_columns
                        .iter()
                        .chain(&src.layout.value_columns)
                        .cloned()
                        .collect::<Vec<Column>>(),
                )),
                Some(src) => Err(format!(
                    "Cannot insert into read-only {}: {}",
                    src.kind_name(),
                    src.name
                )),
                None => Err(format!(
                    "Cannot insert values into an unknown stream/table: {target}"
                )),
            }
        })
        .await
    };
    let (name, columns) = match lookup {
        Ok(Ok(found)) => found,
        Ok(Err(message)) => return error_response(generic_error(code::BAD_REQUEST, &message)),
        Err(r) => return r,
    };
    tracing::info!(target = %name, "inserts stream opened");
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(256);
    tokio::spawn(async move {
        let mut seq: u64 = 0;
        let mut ended = false;
        loop {
            while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                if !insert_line(&state, &name, &columns, &line, &mut seq, &tx).await {
                    return;
                }
            }
            if ended {
                break;
            }
            match body.next().await {
                Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                Some(Err(_)) | None => ended = true,
            }
            if ended && !buf.is_empty() {
                // The last row may come without a newline.
                buf.push(b'\n');
            }
        }
        tracing::info!(target = %name, rows = seq, "inserts stream closed");
    });
    let acks = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
    });
    streaming_response(
        "application/vnd.ksqlapi.delimited.v1",
        Body::from_stream(acks),
    )
}

/// Inserts one line's row and sends its ack; false when the client is gone.
async fn insert_line(
    state: &Arc<AppState>,
    target: &str,
    columns: &[Column],
    line: &[u8],
    seq: &mut u64,
    tx: &tokio::sync::mpsc::Sender<Bytes>,
) -> bool {
    let text = String::from_utf8_lossy(line);
    if text.trim().is_empty() {
        return true;
    }
    let n = *seq;
    *seq += 1;
    let result = match serde_json::from_str::<Value>(text.trim()) {
        Ok(Value::Object(row)) => match insert_statement(target, columns, &row) {
            Ok(sql) => blocking(state, move |s| {
                s.runtime
                    .engine()
                    .execute_sql(&sql)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
            .await
            .unwrap_or_else(|_| Err("internal error".into())),
            Err(e) => Err(e),
        },
        Ok(_) => Err("Each row must be a JSON object".into()),
        Err(e) => Err(format!("Invalid JSON in inserts stream: {e}")),
    };
    let ack = match result {
        Ok(()) => json!({"status": "ok", "seq": n}),
        Err(message) => json!({
            "@type": "generic_error", "status": "error", "seq": n,
            "error_code": code::BAD_REQUEST, "message": message,
        }),
    };
    tx.send(Bytes::from(format!("{ack}\n"))).await.is_ok()
}

fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

fn quote_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `INSERT INTO `T` (`A`, ...) VALUES (...)` for one JSON row.
pub(crate) fn insert_statement(
    target: &str,
    columns: &[Column],
    row: &Map<String, Value>,
) -> Result<String, String> {
    let mut names = Vec::new();
    let mut values = Vec::new();
    for (key, value) in row {
        let column = columns
            .iter()
            .find(|c| c.name == *key)
            .or_else(|| columns.iter().find(|c| c.name == key.to_ascii_uppercase()))
            .ok_or_else(|| format!("Column name {key} does not exist."))?;
        names.push(quote_ident(&column.name));
        values.push(literal(value, &column.ty, &column.name)?);
    }
    Ok(format!(
        "INSERT INTO {} ({}) VALUES ({});",
        quote_ident(target),
        names.join(", "),
        values.join(", ")
    ))
}

fn literal(value: &Value, ty: &SqlType, field: &str) -> Result<String, String> {
    let mismatch = || {
        format!(
            "Can't coerce a field of type {} ({value}) into type {ty} for {field}",
            json_type(value)
        )
    };
    Ok(match (value, ty) {
        (Value::Null, _) => "NULL".into(),
        (Value::Bool(b), SqlType::Boolean) => if *b { "TRUE" } else { "FALSE" }.into(),
        (
            Value::Number(n),
            SqlType::Int | SqlType::Bigint | SqlType::Double | SqlType::Decimal { .. },
        ) => n.to_string(),
        (Value::Number(n), SqlType::Timestamp | SqlType::Date | SqlType::Time) => n.to_string(),
        (Value::Number(n), SqlType::String) => quote_str(&n.to_string()),
        (Value::Bool(b), SqlType::String) => quote_str(&b.to_string()),
        (Value::String(s), SqlType::Bytes) => format!("TO_BYTES({}, 'base64')", quote_str(s)),
        (
            Value::String(s),
            SqlType::Int | SqlType::Bigint | SqlType::Double | SqlType::Decimal { .. },
        ) => {
            s.trim().parse::<f64>().map_err(|_| mismatch())?;
            s.trim().to_string()
        }
        (Value::String(s), SqlType::Boolean) => match s.to_ascii_lowercase().as_str() {
            "true" => "TRUE".into(),
            "false" => "FALSE".into(),
            _ => return Err(mismatch()),
        },
        (Value::String(s), _)
            if !matches!(
                ty,
                SqlType::Array(_) | SqlType::Map(..) | SqlType::Struct(_)
            ) =>
        {
            quote_str(s)
        }
        (Value::Array(items), SqlType::Array(elem)) => format!(
            "ARRAY[{}]",
            items
                .iter()
                .map(|v| literal(v, elem, field))
                .collect::<Result<Vec<_>, _>>()?
                .join(", ")
        ),
        (Value::Object(entries), SqlType::Map(_, v)) => format!(
            "MAP({})",
            entries
                .iter()
                .map(|(k, e)| Ok(format!("{} := {}", quote_str(k), literal(e, v, field)?)))
                .collect::<Result<Vec<_>, String>>()?
                .join(", ")
        ),
        (Value::Object(entries), SqlType::Struct(fields)) => {
            let mut parts = Vec::new();
            for (k, e) in entries {
                let f = fields
                    .iter()
                    .find(|f| f.name.value == *k)
                    .or_else(|| {
                        fields
                            .iter()
                            .find(|f| f.name.value == k.to_ascii_uppercase())
                    })
                    .ok_or_else(|| format!("Field {k} does not exist in {field}"))?;
                parts.push(format!(
                    "{} := {}",
                    quote_ident(&f.name.value),
                    literal(e, &f.ty, field)?
                ));
            }
            format!("STRUCT({})", parts.join(", "))
        }
        _ => return Err(mismatch()),
    })
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "NULL",
        Value::Bool(_) => "BOOLEAN",
        Value::Number(_) => "NUMBER",
        Value::String(_) => "STRING",
        Value::Array(_) => "ARRAY",
        Value::Object(_) => "OBJECT",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_becomes_an_insert_with_literals_typed_after_the_columns() {
        let columns = vec![
            Column::new("ID", SqlType::Bigint),
            Column::new("NAME", SqlType::String),
            Column::new("TAGS", SqlType::Array(Box::new(SqlType::String))),
        ];
        let row: Map<String, Value> = serde_json::from_str(r#"{"id": 7, "nope": "x"}"#).unwrap();
        let err = insert_statement("S", &columns, &row).unwrap_err();
        assert!(err.contains("nope"), "{err}");
        let row: Map<String, Value> =
            serde_json::from_str(r#"{"id": 7, "Name": "o'neil", "TAGS": ["a", null]}"#).unwrap();
        assert_eq!(
            insert_statement("S", &columns, &row).unwrap(),
            "INSERT INTO `S` (`ID`, `NAME`, `TAGS`) VALUES (7, 'o''neil', ARRAY['a', NULL]);"
        );
        let row: Map<String, Value> = serde_json::from_str(r#"{"id": "x"}"#).unwrap();
        assert!(insert_statement("S", &columns, &row).is_err());
    }
}
