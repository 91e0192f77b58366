//! The web console at `/`: a page and its script and styles, built into the binary (no
//! CDN, nothing fetched at run time), and the two reads it needs that the ksqlDB API does
//! not give: each persistent query's operators with their row counts, and the latest
//! processing-log entries. Everything else it asks of the ksqlDB endpoints (`/ksql`,
//! `/query-stream`, `/info`), as any client would, under the same authentication.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde_json::{Value, json};

use crate::AppState;
use crate::rest::{blocking, json_response};

const INDEX: &str = include_str!("../console/index.html");
const SCRIPT: &str = include_str!("../console/app.js");
const STYLE: &str = include_str!("../console/app.css");

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(index))
        .route("/console/app.js", get(|| asset("text/javascript", SCRIPT)))
        .route("/console/app.css", get(|| asset("text/css", STYLE)))
        .route("/console/api/queries", get(queries))
        .route("/console/api/processing-log", get(processing_log))
}

/// A browser (asking for HTML) gets the console; other clients the redirect to `/info`
/// that ksqlDB answers.
async fn index(headers: HeaderMap) -> Response {
    let html = headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if html {
        asset("text/html; charset=utf-8", INDEX).await
    } else {
        Redirect::temporary("/info").into_response()
    }
}

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// Each persistent query: its state, counters, source lag, and operators with the rows
/// into and out of each since it started.
async fn queries(State(state): State<Arc<AppState>>) -> Response {
    let body = blocking(&state, |s| {
        let engine = s.runtime.engine();
        let lags: std::collections::HashMap<String, u64> = engine
            .query_metrics()
            .into_iter()
            .map(|m| (m.id, m.lag))
            .collect();
        let views: Vec<_> = engine.queries().collect();
        drop(engine);
        views
            .into_iter()
            .map(|q| {
                let stages: Vec<Value> = q
                    .stages
                    .iter()
                    .enumerate()
                    .map(|(i, plan)| {
                        let (rows_in, rows_out) = q.stage_rows.get(i).copied().unwrap_or_default();
                        json!({"plan": plan, "rowsIn": rows_in, "rowsOut": rows_out})
                    })
                    .collect();
                json!({
                    "id": q.id,
                    "state": q.state(),
                    "error": q.error.as_ref().map(|e| e.message.clone()),
                    "statement": q.statement,
                    "sources": q.sources,
                    "sink": q.sink,
                    "sinkTopic": q.sink_topic,
                    "consumed": q.stats.consumed,
                    "produced": q.stats.produced,
                    "errors": q.stats.errors,
                    "lag": lags.get(&q.id).copied().unwrap_or(0),
                    "stages": stages,
                })
            })
            .collect::<Vec<Value>>()
    })
    .await;
    match body {
        Ok(list) => json_response(StatusCode::OK, &Value::Array(list)),
        Err(r) => r,
    }
}

#[derive(serde::Deserialize)]
struct LogParams {
    limit: Option<u64>,
}

/// The newest processing-log entries (at most `limit`, default 100), newest first, each
/// `{offset, timestamp, entry}` with the entry's JSON as the engine wrote it.
async fn processing_log(
    State(state): State<Arc<AppState>>,
    Query(params): Query<LogParams>,
) -> Response {
    let limit = params.limit.unwrap_or(100).clamp(1, 1000);
    let body = blocking(&state, move |s| -> Result<Vec<Value>, String> {
        let log = s.runtime.engine().log().clone();
        let topic = weir_engine::PROCESSING_LOG_TOPIC;
        if log.topic(topic).map_err(|e| e.to_string())?.is_none() {
            return Ok(Vec::new());
        }
        let (start, end) = log.offsets(topic, 0).map_err(|e| e.to_string())?;
        let from = end.saturating_sub(limit).max(start);
        let mut records = log
            .read(topic, 0, from, limit as usize)
            .map_err(|e| e.to_string())?;
        records.reverse();
        Ok(records
            .into_iter()
            .map(|r| {
                let entry = r
                    .record
                    .value
                    .as_deref()
                    .and_then(|v| serde_json::from_slice::<Value>(v).ok())
                    .unwrap_or(Value::Null);
                json!({"offset": r.offset, "timestamp": r.record.timestamp, "entry": entry})
            })
            .collect())
    })
    .await;
    match body {
        Ok(Ok(list)) => json_response(StatusCode::OK, &Value::Array(list)),
        Ok(Err(e)) => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"error_code": 50300, "message": e}),
        ),
        Err(r) => r,
    }
}
