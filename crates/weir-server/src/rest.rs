//! The routes, authentication, and the non-streaming endpoints: `/ksql`, `/close-query`,
//! `/info`, `/healthcheck`, `/status`, `/is_valid_property`, `/chc/*`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use weir_sql::ast::Statement;
use weir_sql::{ParseOptions, parse_script};

use crate::AppState;
use crate::entities::{self, code, generic_error, statement_error};

pub(crate) fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/ksql", post(ksql))
        .route("/query", post(crate::streaming::query))
        .route("/query-stream", post(crate::streaming::query_stream))
        .route("/inserts-stream", post(crate::inserts::inserts_stream))
        .route("/close-query", post(close_query))
        .route("/ws/query", get(crate::streaming::ws_query))
        .route("/ksql/terminate", post(terminate_cluster))
        .route("/info", get(info))
        .route("/healthcheck", get(healthcheck))
        .route("/status", get(statuses))
        .route("/status/{kind}/{entity}/{action}", get(status))
        .route("/is_valid_property/{property}", get(is_valid_property))
        .route("/metrics", get(metrics))
        .route("/chc/live", get(live))
        .route("/chc/ready", get(|| async { StatusCode::OK }))
        // Confluent's Schema Registry API, from Weir's own registry.
        .merge(crate::registry::routes())
        // The web console (docs/console.md).
        .merge(crate::console::routes())
        .fallback(|| async { (StatusCode::NOT_FOUND, "Not Found") })
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .with_state(state)
}

/// A JSON response; the HTTP status of an error is its ksqlDB code / 100.
pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.to_string(),
    )
        .into_response()
}

pub(crate) fn error_response(body: Value) -> Response {
    let code = body["error_code"].as_u64().unwrap_or(50000);
    let status = StatusCode::from_u16((code / 100) as u16).unwrap_or(StatusCode::BAD_REQUEST);
    json_response(status, &body)
}

/// Runs engine work off the async threads (statements wait for the query worker's batch).
pub(crate) async fn blocking<T: Send + 'static>(
    state: &Arc<AppState>,
    f: impl FnOnce(&AppState) -> T + Send + 'static,
) -> Result<T, Response> {
    let state = state.clone();
    tokio::task::spawn_blocking(move || f(&state))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "engine call failed");
            error_response(generic_error(code::SERVER_ERROR, &e.to_string()))
        })
}

/// Parses a request body as JSON; any content type is accepted, as ksqlDB does.
pub(crate) fn parse_body(body: &Bytes) -> Result<Value, Response> {
    serde_json::from_slice(body).map_err(|e| {
        error_response(generic_error(
            code::BAD_REQUEST,
            &format!("Invalid JSON in request: {e}"),
        ))
    })
}

/// A JSON object of properties as strings (`{"auto.offset.reset": "earliest"}`), and a
/// warning for each key Weir does not read, naming the nearest known one (logged too;
/// see [`property_warning`]).
pub(crate) fn properties(v: &Value) -> (BTreeMap<String, String>, Vec<Value>) {
    let props: BTreeMap<String, String> = v
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), v)
                })
                .collect()
        })
        .unwrap_or_default();
    let warnings = props.keys().filter_map(|k| property_warning(k)).collect();
    (props, warnings)
}

/// How long an ASSERT waits for what it asserts: its TIMEOUT, else the request's or the
/// default `ksql.assert.topic.default.timeout.ms` / `ksql.assert.schema.default.timeout.ms`
/// (1 second).
fn assert_timeout(
    a: &weir_sql::ast::Assert,
    props: &BTreeMap<String, String>,
) -> std::time::Duration {
    if let Some(t) = &a.timeout {
        return std::time::Duration::from_millis(t.as_millis());
    }
    let key = match a.what {
        weir_sql::ast::AssertWhat::Schema { .. } => "ksql.assert.schema.default.timeout.ms",
        _ => "ksql.assert.topic.default.timeout.ms",
    };
    let ms = props
        .get(key)
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(1000);
    std::time::Duration::from_millis(ms)
}

/// A request's `sessionVariables` object (`{"topic": "cars", "n": 3}`): values as text.
pub(crate) fn session_variables(v: &Value) -> weir_sql::Variables {
    weir_sql::Variables::from_pairs(v.as_object().into_iter().flatten().map(|(k, v)| {
        let v = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        (k.as_str(), v)
    }))
}

/// The warning for a request property Weir does not read (logged, and returned for the
/// entities' `warnings`); `None` for a known one.
pub(crate) fn property_warning(key: &str) -> Option<Value> {
    let warning = weir_engine::settings::unknown_key_warning(key)?;
    tracing::warn!(property = %key, "{warning}");
    Some(json!({"message": warning}))
}

async fn authenticate(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_string();
    let response = authenticated(&state, request, next).await;
    state.requests.count(&path, response.status().as_u16());
    response
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let text = blocking(&state, |s| {
        let engine = s.runtime.engine();
        let queries = engine.query_metrics();
        let push = engine.push_query_count();
        drop(engine);
        crate::metrics::render(
            &queries,
            push,
            &s.requests,
            s.mqtt.as_deref(),
            &s.bridges,
            &s.sinks,
        )
    })
    .await
    .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn authenticated(state: &Arc<AppState>, request: Request, next: Next) -> Response {
    let Some(users) = &state.users else {
        return next.run(request).await;
    };
    if request.uri().path().starts_with("/chc/") {
        return next.run(request).await;
    }
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok());
    match users.check(header) {
        Some(_) => next.run(request).await,
        None => {
            tracing::warn!(path = %request.uri().path(), "request refused: no valid credentials");
            let mut r = error_response(generic_error(
                code::UNAUTHORIZED,
                "Unauthorized: valid credentials are required",
            ));
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"weir\""),
            );
            r
        }
    }
}

const QUERY_ENDPOINT_MESSAGE: &str = "The following statement types should be issued to the websocket endpoint '/query':\n\t* PRINT\n\t* SELECT";

/// `POST /ksql`: runs each statement in turn and answers an entity per statement; the
/// first that fails ends the request with a `statement_error` carrying the entities of
/// those that ran. SET/UNSET apply to the rest of the request only.
async fn ksql(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let request = match parse_body(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(sql) = request["ksql"].as_str().map(str::to_string) else {
        return error_response(generic_error(
            code::BAD_REQUEST,
            "The request needs a \"ksql\" field with the statements to run",
        ));
    };
    // Unknown keys are warned about in every entity's `warnings` from where they were set.
    let (mut props, mut warnings) = properties(&request["streamsProperties"]);
    let mut vars = session_variables(&request["sessionVariables"]);
    let result = blocking(&state, move |state| {
        let mut done: Vec<Value> = Vec::new();
        for parsed in parse_script(&sql, ParseOptions::default()) {
            // Statements run with the variables as they stand when each one's turn comes.
            let text = format!("{};", parsed.resolved_text(&vars).trim());
            let stmt = match parsed.resolve(&vars) {
                Ok(s) => s,
                Err(e) => return Err(statement_error(&e.to_string(), &text, done)),
            };
            match vars.apply(&stmt) {
                Some(weir_sql::Applied::NotDefined(message)) => {
                    done.push(json!({
                        "@type": "warning_entity",
                        "statementText": text,
                        "message": message,
                        "warnings": [],
                    }));
                    continue;
                }
                Some(_) => continue,
                None => {}
            }
            match &stmt {
                Statement::List {
                    what: weir_sql::ast::ListKind::Variables,
                    ..
                } => {
                    let list: Vec<Value> = vars
                        .iter()
                        .map(|(name, value)| json!({"name": name, "value": value}))
                        .collect();
                    done.push(json!({
                        "@type": "variables",
                        "statementText": text,
                        "variables": list,
                        "warnings": warnings.clone(),
                    }));
                    continue;
                }
                Statement::Query(_) | Statement::Print(_) => {
                    let mut e = statement_error(QUERY_ENDPOINT_MESSAGE, &text, done);
                    e["error_code"] = json!(code::QUERY_ENDPOINT);
                    return Err(e);
                }
                Statement::SetProperty { name, value } => {
                    warnings.extend(property_warning(name));
                    props.insert(name.clone(), value.clone());
                    continue;
                }
                Statement::UnsetProperty { name } => {
                    props.remove(name);
                    continue;
                }
                _ => {}
            }
            // An ASSERT is checked again until its timeout, the engine free meanwhile.
            if let Statement::Assert(a) = &stmt {
                let deadline = std::time::Instant::now() + assert_timeout(a, &props);
                loop {
                    let checked = state.runtime.engine().execute_with(&stmt, &props);
                    match checked {
                        Err(_) if std::time::Instant::now() < deadline => {
                            std::thread::sleep(std::time::Duration::from_millis(100));
                        }
                        _ => break,
                    }
                }
            }
            let mut engine = state.runtime.engine();
            let dropped_topic = match &stmt {
                Statement::DropSource { name, .. } => engine
                    .catalog()
                    .source(&name.value)
                    .map(|s| s.topic.clone()),
                _ => None,
            };
            let outcome = match engine.execute_with(&stmt, &props) {
                Ok(o) => o,
                Err(e) => {
                    tracing::info!(statement = %text, error = %e, "statement failed");
                    return Err(statement_error(&e.to_string(), &text, done));
                }
            };
            // The function list says which plugin files were refused, and why.
            let mut entity_warnings = warnings.clone();
            if let Statement::List {
                what: weir_sql::ast::ListKind::Functions,
                ..
            } = &stmt
            {
                entity_warnings.extend(
                    engine
                        .functions()
                        .plugin_refusals()
                        .iter()
                        .map(|r| json!({"message": r})),
                );
            }
            drop(engine);
            let sequence = state.sequence.fetch_add(1, Ordering::SeqCst) + 1;
            if let Some((mut entity, status)) =
                entities::entity(&stmt, &text, outcome, sequence, dropped_topic.as_deref())
            {
                if !entity_warnings.is_empty() {
                    entity["warnings"] = Value::Array(entity_warnings);
                }
                if let Some((id, status)) = status {
                    tracing::info!(command = %id, message = %status.message, "statement ran");
                    state
                        .statuses
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(id, status);
                }
                done.push(entity);
            }
        }
        Ok(done)
    })
    .await;
    match result {
        Ok(Ok(entities)) => json_response(StatusCode::OK, &Value::Array(entities)),
        Ok(Err(error)) => error_response(error),
        Err(r) => r,
    }
}

/// `POST /ksql/terminate {"deleteTopicList": ["FOO", "bar.*"]}`: TERMINATE CLUSTER, as
/// ksqlDB's: every persistent query terminated, every stream and table dropped (each
/// through the command log, as if typed), and the topics of the dropped sources whose
/// names match a pattern of the list (a regex over the whole name, any case) deleted.
async fn terminate_cluster(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let request = if body.is_empty() {
        json!({})
    } else {
        match parse_body(&body) {
            Ok(v) => v,
            Err(r) => return r,
        }
    };
    let mut patterns = Vec::new();
    for p in request["deleteTopicList"].as_array().into_iter().flatten() {
        let Some(p) = p.as_str() else { continue };
        match regex::Regex::new(&format!("(?i)^(?:{p})$")) {
            Ok(r) => patterns.push(r),
            Err(e) => {
                return error_response(generic_error(
                    code::BAD_REQUEST,
                    &format!("Invalid pattern in deleteTopicList: {p}: {e}"),
                ));
            }
        }
    }
    let result = blocking(&state, move |state| -> Result<(), String> {
        let mut engine = state.runtime.engine();
        engine
            .execute(&Statement::Terminate(weir_sql::ast::QueryTarget::All))
            .map_err(|e| e.to_string())?;
        // Sinks before the sources they read: drop what nothing else reads, until none is left.
        loop {
            let sources: Vec<(String, weir_sql::ast::SourceKind, String)> = engine
                .catalog()
                .sources()
                .map(|s| (s.name.clone(), s.kind, s.topic.clone()))
                .collect();
            if sources.is_empty() {
                break;
            }
            let mut dropped_any = false;
            let mut last = String::new();
            for (name, kind, topic) in sources {
                let delete_topic = patterns.iter().any(|p| p.is_match(&topic));
                let stmt = Statement::DropSource {
                    kind,
                    if_exists: true,
                    name: weir_sql::ast::Ident::with_quote('`', name),
                    delete_topic,
                };
                match engine.execute(&stmt) {
                    Ok(_) => dropped_any = true,
                    Err(e) => last = e.to_string(),
                }
            }
            if !dropped_any {
                return Err(last);
            }
        }
        Ok(())
    })
    .await;
    match result {
        Ok(Ok(())) => {
            tracing::warn!("TERMINATE CLUSTER: every query terminated and every source dropped");
            json_response(
                StatusCode::OK,
                &json!([{
                    "@type": "currentStatus",
                    "statementText": "TERMINATE CLUSTER;",
                    "commandId": "cluster/TERMINATE/terminate",
                    "commandStatus": {"status": "SUCCESS", "message": "Cluster terminated.", "queryId": null},
                    "commandSequenceNumber": state.sequence.fetch_add(1, Ordering::SeqCst) + 1,
                    "warnings": [],
                }]),
            )
        }
        Ok(Err(message)) => error_response(generic_error(code::SERVER_ERROR, &message)),
        Err(r) => r,
    }
}

/// `POST /close-query {"queryId": ...}`: ends a push query; its stream closes.
async fn close_query(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let request = match parse_body(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(id) = request["queryId"].as_str().map(str::to_string) else {
        return error_response(generic_error(
            code::BAD_REQUEST,
            "The request needs a \"queryId\" field",
        ));
    };
    let closed = {
        let id = id.clone();
        blocking(&state, move |s| s.runtime.engine().close_push_query(&id)).await
    };
    match closed {
        Ok(true) => {
            tracing::info!(query_id = %id, "push query closed by request");
            StatusCode::OK.into_response()
        }
        Ok(false) => error_response(generic_error(
            code::BAD_REQUEST,
            &format!("No query with id {id}"),
        )),
        Err(r) => r,
    }
}

async fn info(State(state): State<Arc<AppState>>) -> Response {
    let stopping = *state.stopping.borrow();
    json_response(
        StatusCode::OK,
        &json!({"KsqlServerInfo": {
            "version": crate::KSQL_COMPATIBLE_VERSION,
            "kafkaClusterId": state.cluster_id,
            "ksqlServiceId": state.service_id,
            "serverStatus": if stopping { "TERMINATING" } else { "RUNNING" },
        }}),
    )
}

/// Live while every query worker runs (a lost one means queries may not advance).
async fn live(State(state): State<Arc<AppState>>) -> StatusCode {
    if state.runtime.worker_alive() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// Healthy when the log answers and the query worker runs; neither waits on query work
/// (no engine lock).
async fn healthcheck(State(state): State<Arc<AppState>>) -> Response {
    let log_ok = blocking(&state, |s| s.runtime.log().list_topics().is_ok())
        .await
        .unwrap_or(false);
    let worker_ok = state.runtime.worker_alive();
    let healthy = log_ok && worker_ok;
    let body = json!({
        "isHealthy": healthy,
        "details": {
            "metastore": {"isHealthy": true},
            "kafka": {"isHealthy": log_ok},
            "commandRunner": {"isHealthy": worker_ok},
        },
        "serverState": "READY",
    });
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(status, &body)
}

async fn statuses(State(state): State<Arc<AppState>>) -> Response {
    let all: serde_json::Map<String, Value> = state
        .statuses
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(k, v)| (k.clone(), json!(v.status)))
        .collect();
    json_response(StatusCode::OK, &json!({"commandStatuses": all}))
}

async fn status(
    State(state): State<Arc<AppState>>,
    Path((kind, entity, action)): Path<(String, String, String)>,
) -> Response {
    let statuses = state.statuses.lock().unwrap_or_else(|e| e.into_inner());
    let found = statuses
        .get(&format!("{kind}/{entity}/{action}"))
        .or_else(|| statuses.get(&format!("{kind}/`{entity}`/{action}")));
    match found {
        Some(s) => json_response(StatusCode::OK, &s.to_json()),
        None => error_response(generic_error(
            code::NOT_FOUND,
            &format!("Command not found: {kind}/{entity}/{action}"),
        )),
    }
}

/// `true` for a property Weir reads, `false` for an unknown one in ksqlDB's or Weir's
/// namespaces (`ksql.`, `weir.`), and ksqlDB's 400 for any other name.
async fn is_valid_property(Path(property): Path<String>) -> Response {
    if weir_engine::settings::is_known(&property) {
        json_response(StatusCode::OK, &json!(true))
    } else if property.starts_with("ksql.") || property.starts_with("weir.") {
        json_response(StatusCode::OK, &json!(false))
    } else {
        error_response(generic_error(
            code::BAD_REQUEST,
            &format!(
                "Not recognizable as ksql, streams, consumer, or producer property: '{property}'"
            ),
        ))
    }
}

/// An empty streaming-friendly body with a content type.
pub(crate) fn streaming_response(content_type: &'static str, body: Body) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
