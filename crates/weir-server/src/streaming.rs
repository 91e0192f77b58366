//! Push queries and PRINT over HTTP: `POST /query` (ksqlDB's old API: a JSON array written
//! one element per line) and `POST /query-stream` (the new API: a header, then one JSON
//! array per row, newline-delimited or as one JSON array).
//!
//! The response body reads the engine's bounded per-client channel directly. A client
//! that stops reading stops the body being polled, its channel fills, and the engine ends
//! that query with a message; a client that disconnects drops the body, which drops the
//! handle, which ends the query. Neither touches any other client.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::Response;
use serde_json::{Value, json};
use tokio::sync::watch;
use weir_engine::{Outcome, PushEvent, PushHandle};
use weir_sql::ast::Statement;

use crate::AppState;
use crate::entities::{code, generic_error, statement_error};
use crate::rest::{
    blocking, error_response, parse_body, properties, session_variables, streaming_response,
};

/// How often the old API writes a bare newline while no row comes (ksqlDB's disconnect
/// probe: a write to a vanished client fails and ends its query).
const OLD_API_PROBE: Duration = Duration::from_secs(1);

pub(crate) const DELIMITED: &str = "application/vnd.ksqlapi.delimited.v1";

#[derive(Clone, Copy, PartialEq, Debug)]
enum Framing {
    /// `/query`: `[{"header":...},\n{"row":...},\n ... {"finalMessage":...}]\n`.
    Old,
    /// `/query-stream` delimited: header line, then a JSON array per line.
    Delimited,
    /// `/query-stream` with `Accept: application/json`: `[header,[row],[row]]`.
    Json,
}

/// Counts a running push query against the server's limit while it lives.
struct PushSlot(Arc<AtomicUsize>);

impl Drop for PushSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Started {
    handle: PushHandle,
    is_print: bool,
    slot: PushSlot,
}

pub(crate) fn accepts(headers: &HeaderMap, media: &str) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains(media))
}

/// `POST /query {"ksql": "SELECT ...;", "streamsProperties": {...}}`.
pub(crate) async fn query(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let framing = if accepts(&headers, DELIMITED) {
        Framing::Delimited
    } else {
        Framing::Old
    };
    start_and_stream(state, &body, ("ksql", "streamsProperties"), framing).await
}

/// `POST /query-stream {"sql": "SELECT ...;", "properties": {...}}`.
pub(crate) async fn query_stream(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let framing = if accepts(&headers, "application/json") && !accepts(&headers, DELIMITED) {
        Framing::Json
    } else {
        Framing::Delimited
    };
    start_and_stream(state, &body, ("sql", "properties"), framing).await
}

/// Starts the query a request body names (`fields`: the names of its statement and
/// properties fields, which differ between the old API and the new).
async fn start_and_stream(
    state: Arc<AppState>,
    body: &Bytes,
    fields: (&str, &str),
    framing: Framing,
) -> Response {
    let request = match parse_body(body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let sql = request[fields.0].as_str().unwrap_or("").to_string();
    // Unknown keys are logged; a push query's answer has no place for warnings.
    let (props, _) = properties(&request[fields.1]);
    let vars = session_variables(&request["sessionVariables"]);
    let started = match start(&state, sql, props, &vars).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    tracing::info!(query_id = %started.handle.query_id, "push query started");
    let content_type = match framing {
        Framing::Delimited => DELIMITED,
        Framing::Old | Framing::Json => "application/json",
    };
    let rows = Rows {
        started,
        stopping: state.stopping.clone(),
    };
    streaming_response(content_type, Body::from_stream(body_stream(rows, framing)))
}

/// The one statement of a query request, with the request's variables substituted.
fn one_statement(sql: &str, vars: &weir_sql::Variables) -> weir_sql::Result<Statement> {
    let mut parsed = weir_sql::parse_script(sql, weir_sql::ParseOptions::default());
    match parsed.len() {
        1 => parsed.remove(0).resolve(vars),
        // Zero or several: the same error as parsing it alone.
        _ => weir_sql::parse_statement(sql),
    }
}

async fn start(
    state: &Arc<AppState>,
    sql: String,
    props: std::collections::BTreeMap<String, String>,
    vars: &weir_sql::Variables,
) -> Result<Started, Response> {
    let stmt = one_statement(&sql, vars)
        .map_err(|e| error_response(statement_error(&e.to_string(), &sql, vec![])))?;
    let is_print = match &stmt {
        Statement::Query(_) => false,
        Statement::Print(_) => true,
        _ => {
            return Err(error_response(statement_error(
                "Only SELECT and PRINT statements run on this endpoint; send others to /ksql",
                &sql,
                vec![],
            )));
        }
    };
    // Take a slot first, so concurrent requests cannot overshoot the limit.
    let taken = state.push_queries.fetch_add(1, Ordering::SeqCst);
    let slot = PushSlot(state.push_queries.clone());
    if taken >= state.max_push_queries {
        return Err(error_response(generic_error(
            code::MAX_PUSH_QUERIES_EXCEEDED,
            &format!(
                "Not executing statement: the server already runs the maximum of {} push queries",
                state.max_push_queries
            ),
        )));
    }
    let outcome = blocking(state, move |s| s.runtime.execute_with(&stmt, &props)).await?;
    match outcome {
        Ok(Outcome::Push(handle)) => Ok(Started {
            handle,
            is_print,
            slot,
        }),
        Ok(_) => Err(error_response(statement_error(
            "The statement did not start a query",
            &sql,
            vec![],
        ))),
        Err(e) => Err(error_response(statement_error(
            &e.to_string(),
            &sql,
            vec![],
        ))),
    }
}

struct Rows {
    started: Started,
    stopping: watch::Receiver<bool>,
}

enum Step {
    Event(PushEvent),
    /// The engine dropped the query (closed by `/close-query`, or terminated).
    Closed,
    Idle,
    Stopping,
}

impl Rows {
    async fn next(&mut self, idle: Duration) -> Step {
        if *self.stopping.borrow() {
            return Step::Stopping;
        }
        tokio::select! {
            r = self.started.handle.rows.recv_async() => match r {
                Ok(e) => Step::Event(e),
                Err(_) => Step::Closed,
            },
            _ = tokio::time::sleep(idle) => Step::Idle,
            _ = self.stopping.changed() => Step::Stopping,
        }
    }
}

fn header(handle: &PushHandle, framing: Framing) -> Option<String> {
    Some(match framing {
        Framing::Old => {
            let schema: Vec<String> = handle
                .columns
                .iter()
                .map(|(n, t)| format!("`{n}` {t}"))
                .collect();
            format!(
                "[{},\n",
                json!({"header": {"queryId": handle.query_id, "schema": schema.join(", ")}})
            )
        }
        Framing::Delimited | Framing::Json => {
            let h = json!({
                "queryId": handle.query_id,
                "columnNames": handle.columns.iter().map(|(n, _)| n).collect::<Vec<_>>(),
                "columnTypes": handle.columns.iter().map(|(_, t)| t.to_string()).collect::<Vec<_>>(),
            });
            match framing {
                Framing::Json => format!("[{h}"),
                _ => format!("{h}\n"),
            }
        }
    })
}

fn row_chunk(row: Vec<Value>, framing: Framing, is_print: bool) -> String {
    if is_print && framing != Framing::Json {
        // PRINT writes the record lines themselves.
        let line = match row.into_iter().next() {
            Some(Value::String(s)) => s,
            Some(other) => other.to_string(),
            None => String::new(),
        };
        return format!("{line}\n");
    }
    match framing {
        Framing::Old => format!("{},\n", json!({"row": {"columns": row}})),
        Framing::Delimited => format!("{}\n", Value::Array(row)),
        Framing::Json => format!(",{}", Value::Array(row)),
    }
}

/// The last chunk: why the stream ends (`None`: LIMIT reached or closed normally).
fn closing_chunk(error: Option<Value>, limit: bool, framing: Framing, is_print: bool) -> String {
    match (framing, error) {
        (Framing::Old, _) if is_print => String::new(),
        (Framing::Old, Some(e)) => format!("{}]\n", json!({"errorMessage": e})),
        (Framing::Old, None) => format!(
            "{}]\n",
            json!({"finalMessage": if limit { "Limit Reached" } else { "Query Completed" }})
        ),
        (Framing::Delimited, Some(e)) => format!("{e}\n"),
        (Framing::Delimited, None) => String::new(),
        (Framing::Json, Some(e)) => format!(",{e}]"),
        (Framing::Json, None) => "]".to_string(),
    }
}

fn body_stream(
    rows: Rows,
    framing: Framing,
) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> + Send {
    // PRINT over the old API is the record lines alone; the new API heads it like a
    // query (one STRING column), so clients learn its id for /close-query.
    let first = if rows.started.is_print && framing == Framing::Old {
        None
    } else {
        header(&rows.started.handle, framing)
    };
    futures_util::stream::unfold((Some(rows), first), move |(rows, pending)| async move {
        if let Some(chunk) = pending {
            return Some((Ok(Bytes::from(chunk)), (rows, None)));
        }
        let mut rows = rows?;
        let is_print = rows.started.is_print;
        let idle = if framing == Framing::Old {
            OLD_API_PROBE
        } else {
            Duration::from_secs(3600)
        };
        loop {
            let (chunk, done) = match rows.next(idle).await {
                Step::Event(PushEvent::Row(row)) => (row_chunk(row, framing, is_print), false),
                Step::Event(PushEvent::End(None)) => {
                    (closing_chunk(None, true, framing, is_print), true)
                }
                Step::Event(PushEvent::End(Some(message))) => {
                    tracing::warn!(query_id = %rows.started.handle.query_id, %message, "push query ended");
                    let e = generic_error(code::SERVER_ERROR, &message);
                    (closing_chunk(Some(e), false, framing, is_print), true)
                }
                Step::Closed => (closing_chunk(None, false, framing, is_print), true),
                Step::Stopping => {
                    let e =
                        generic_error(code::SERVER_SHUTTING_DOWN, "The server is shutting down");
                    (closing_chunk(Some(e), false, framing, is_print), true)
                }
                Step::Idle if framing == Framing::Old => ("\n".to_string(), false),
                Step::Idle => continue,
            };
            if done {
                tracing::info!(query_id = %rows.started.handle.query_id, "push query finished");
                let _ = &rows.started.slot;
                drop(rows);
                return Some((Ok(Bytes::from(chunk)), (None, None)));
            }
            return Some((Ok(Bytes::from(chunk)), (Some(rows), None)));
        }
    })
}

/// `GET /ws/query?request=<KsqlRequest JSON>`: the legacy websocket push-query stream
/// (old UIs): a message with the header (`{"header": {"queryId", "schema"}}`), one per
/// row (`{"row": {"columns": [...]}}`), and a last one saying why it ended
/// (`{"finalMessage": ...}` or `{"errorMessage": ...}`), then the socket closes. The
/// client closing it ends the query.
pub(crate) async fn ws_query(
    State(state): State<Arc<AppState>>,
    axum::extract::Query(params): axum::extract::Query<std::collections::HashMap<String, String>>,
    ws: axum::extract::ws::WebSocketUpgrade,
) -> Response {
    use axum::response::IntoResponse;
    let request = params.get("request").cloned().unwrap_or_default();
    let body = Bytes::from(request);
    let request = match parse_body(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let sql = request["ksql"].as_str().unwrap_or("").to_string();
    let (props, _) = properties(&request["streamsProperties"]);
    let vars = session_variables(&request["sessionVariables"]);
    let started = match start(&state, sql, props, &vars).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    tracing::info!(query_id = %started.handle.query_id, "websocket push query started");
    let stopping = state.stopping.clone();
    ws.on_upgrade(move |socket| ws_rows(socket, Rows { started, stopping }))
        .into_response()
}

async fn ws_rows(mut socket: axum::extract::ws::WebSocket, mut rows: Rows) {
    use axum::extract::ws::Message;
    let handle = &rows.started.handle;
    let schema: Vec<String> = handle
        .columns
        .iter()
        .map(|(n, t)| format!("`{n}` {t}"))
        .collect();
    let head = json!({"header": {"queryId": handle.query_id, "schema": schema.join(", ")}});
    if socket
        .send(Message::Text(head.to_string().into()))
        .await
        .is_err()
    {
        return;
    }
    loop {
        let message = tokio::select! {
            step = rows.next(Duration::from_secs(3600)) => step,
            incoming = socket.recv() => match incoming {
                // The client went away or closed: the query ends with the socket.
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                Some(Ok(_)) => continue,
            },
        };
        let (text, done) = match message {
            Step::Event(PushEvent::Row(row)) => (json!({"row": {"columns": row}}), false),
            Step::Event(PushEvent::End(None)) => (json!({"finalMessage": "Limit Reached"}), true),
            Step::Event(PushEvent::End(Some(m))) => (
                json!({"errorMessage": generic_error(code::SERVER_ERROR, &m)}),
                true,
            ),
            Step::Closed => (json!({"finalMessage": "Query Completed"}), true),
            Step::Stopping => (
                json!({"errorMessage": generic_error(code::SERVER_SHUTTING_DOWN, "The server is shutting down")}),
                true,
            ),
            Step::Idle => continue,
        };
        if socket
            .send(Message::Text(text.to_string().into()))
            .await
            .is_err()
        {
            break;
        }
        if done {
            let _ = socket.send(Message::Close(None)).await;
            break;
        }
    }
    tracing::info!(query_id = %rows.started.handle.query_id, "websocket push query finished");
}
