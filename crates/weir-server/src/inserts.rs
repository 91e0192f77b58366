//! `POST /inserts-stream` (HTTP/2 only, as ksqlDB's): the first line names the target
//! stream, `{"target": "S"}`; each following line is one row as a JSON object (column
//! names case-insensitive). Every row is acknowledged on its own line as it is stored,
//! `{"status":"ok","seq":n}`, or refused, `{"status":"error","seq":n,...}`; a bad row never
//! ends the stream.
//!
//! The rows that have arrived are inserted together (up to 4,096 at a time) by
//! [`weir_engine::Engine::insert_rows`]: rows whose values have their columns' types go
//! into one Arrow batch and one append per partition; the others take the statement path
//! (`INSERT INTO ... VALUES`), with its checks, coercions and messages. Acknowledgements
//! go out in order once their rows are appended. With `Accept: application/json` (and
//! not ksqlDB's delimited type) the acknowledgements come as one JSON array instead,
//! `[{"status":"ok","seq":0},...]`, still each as its row is stored.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::Version;
use axum::response::Response;
use futures_util::StreamExt;
use serde_json::{Map, Value, json};

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
    let json = crate::streaming::accepts(request.headers(), "application/json")
        && !crate::streaming::accepts(request.headers(), crate::streaming::DELIMITED);
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
                Some(src) if !src.read_only => Ok(src.name.clone()),
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
    let name = match lookup {
        Ok(Ok(found)) => found,
        Ok(Err(message)) => return error_response(generic_error(code::BAD_REQUEST, &message)),
        Err(r) => return r,
    };
    tracing::info!(target = %name, "inserts stream opened");
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(256);
    tokio::spawn(async move {
        let mut seq: u64 = 0;
        let mut ended = false;
        let mut skipping = false;
        loop {
            // Every complete line that has arrived, up to a batch.
            let mut lines: Vec<Vec<u8>> = Vec::new();
            let mut at = 0;
            while lines.len() < MAX_BATCH
                && let Some(pos) = buf[at..].iter().position(|&b| b == b'\n')
            {
                lines.push(buf[at..at + pos + 1].to_vec());
                at += pos + 1;
            }
            buf.drain(..at);
            if !lines.is_empty() {
                if !insert_lines(&state, &name, lines, &mut seq, &tx).await {
                    return;
                }
                continue;
            }
            // A row longer than any record can be is refused (its ack says so) and the
            // rest of its line skipped: the server never buffers without bound.
            if buf.len() > MAX_LINE_BYTES {
                let ack = json!({
                    "@type": "generic_error", "status": "error", "seq": seq,
                    "error_code": code::BAD_REQUEST,
                    "message": format!("Row too long: more than {MAX_LINE_BYTES} bytes without a newline"),
                });
                seq += 1;
                if tx.send(Bytes::from(format!("{ack}\n"))).await.is_err() {
                    return;
                }
                buf.clear();
                skipping = true;
            }
            if ended {
                break;
            }
            match body.next().await {
                Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                Some(Err(_)) | None => ended = true,
            }
            // And whatever else has already arrived (HTTP/2 hands data over in frames of
            // 16 KiB): fewer, larger batches.
            while !ended && buf.len() < MAX_BUFFERED {
                match futures_util::FutureExt::now_or_never(body.next()) {
                    Some(Some(Ok(chunk))) => buf.extend_from_slice(&chunk),
                    Some(Some(Err(_))) | Some(None) => ended = true,
                    None => break,
                }
            }
            // The rest of a refused row, up to its newline.
            if skipping {
                match buf.iter().position(|&b| b == b'\n') {
                    Some(pos) => {
                        buf.drain(..=pos);
                        skipping = false;
                    }
                    None => buf.clear(),
                }
            }
            if ended && !buf.is_empty() {
                // The last row may come without a newline.
                buf.push(b'\n');
            }
        }
        tracing::info!(target = %name, rows = seq, "inserts stream closed");
    });
    if !json {
        let acks = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
        });
        return streaming_response(crate::streaming::DELIMITED, Body::from_stream(acks));
    }
    // One JSON array: `[` before the first ack, `,` before each other, `]` at the end.
    let acks = futures_util::stream::unfold((rx, 0u64, false), |(mut rx, sent, done)| async move {
        if done {
            return None;
        }
        let piece = match rx.recv().await {
            // (A chunk holds one or more acks, a line each.)
            Some(lines) => {
                let mut piece = Vec::with_capacity(lines.len() + 1);
                let mut sent = sent;
                for ack in lines.split(|&b| b == b'\n').filter(|a| !a.is_empty()) {
                    piece.push(if sent == 0 { b'[' } else { b',' });
                    piece.extend_from_slice(ack);
                    sent += 1;
                }
                return Some((
                    Ok::<_, std::convert::Infallible>(Bytes::from(piece)),
                    (rx, sent, false),
                ));
            }
            None if sent == 0 => Bytes::from_static(b"[]"),
            None => Bytes::from_static(b"]"),
        };
        Some((Ok(piece), (rx, sent, true)))
    });
    streaming_response("application/json", Body::from_stream(acks))
}

/// The most rows inserted together.
const MAX_BATCH: usize = 4096;

/// The longest row accepted: the embedded log's largest record.
const MAX_LINE_BYTES: usize = 8 << 20;

/// The most bytes of rows read ahead before inserting them.
const MAX_BUFFERED: usize = 1 << 20;

/// Inserts the rows of `lines` and sends their acks, in order; false when the client is
/// gone.
async fn insert_lines(
    state: &Arc<AppState>,
    target: &str,
    lines: Vec<Vec<u8>>,
    seq: &mut u64,
    tx: &tokio::sync::mpsc::Sender<Bytes>,
) -> bool {
    // Per line: a row (taken into `rows`), or why it is not one.
    let mut parsed: Vec<Result<(), String>> = Vec::with_capacity(lines.len());
    let mut rows: Vec<Map<String, Value>> = Vec::with_capacity(lines.len());
    for line in &lines {
        let text = String::from_utf8_lossy(line);
        if text.trim().is_empty() {
            continue;
        }
        parsed.push(match serde_json::from_str::<Value>(text.trim()) {
            Ok(Value::Object(row)) => {
                rows.push(row);
                Ok(())
            }
            Ok(_) => Err("Each row must be a JSON object".into()),
            Err(e) => Err(format!("Invalid JSON in inserts stream: {e}")),
        });
    }
    let stored = if rows.is_empty() {
        Ok(Vec::new())
    } else {
        let target = target.to_string();
        blocking(state, move |s| {
            let (outcomes, topic) = {
                let mut engine = s.runtime.engine();
                let outcomes = engine
                    .insert_rows(&target, rows)
                    .map_err(|e| e.to_string())?;
                let topic = engine.catalog().source(&target).map(|t| t.topic.clone());
                (outcomes, topic)
            };
            // Acknowledged once stored: synced outside the engine's lock, so statements
            // and queries go on while the disk works (and rows inserted meanwhile on other
            // connections share the fsync).
            if let Some(topic) = topic
                && outcomes.iter().any(|o| o.is_ok())
            {
                s.runtime
                    .log()
                    .sync_topic(&topic)
                    .map_err(|e| e.to_string())?;
            }
            Ok(outcomes)
        })
        .await
        .unwrap_or_else(|_| Err("internal error".into()))
    };
    let mut outcomes = match stored {
        Ok(o) => o.into_iter(),
        // The target went away or the log failed: every row of the batch says so.
        Err(why) => {
            let n = parsed.iter().filter(|p| p.is_ok()).count();
            vec![Err(why); n].into_iter()
        }
    };
    let mut acks = String::new();
    for p in parsed {
        let result = match p {
            Ok(_) => outcomes
                .next()
                .unwrap_or_else(|| Err("not inserted".into())),
            Err(why) => Err(why),
        };
        let n = *seq;
        *seq += 1;
        let ack = match result {
            Ok(()) => json!({"status": "ok", "seq": n}),
            Err(message) => json!({
                "@type": "generic_error", "status": "error", "seq": n,
                "error_code": code::BAD_REQUEST, "message": message,
            }),
        };
        acks.push_str(&ack.to_string());
        acks.push('\n');
    }
    acks.is_empty() || tx.send(Bytes::from(acks)).await.is_ok()
}
