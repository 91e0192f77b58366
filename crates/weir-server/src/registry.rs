//! Confluent's Schema Registry REST API, served from Weir's own registry (kept in the log),
//! on the server's port and behind its authentication: the calls Confluent's serializers
//! and registry clients make (subjects and versions, schemas by id, lookup, compatibility
//! and its configuration). With `ksql.schema.registry.url` set, Weir uses that registry
//! instead and these routes say so.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use weir_format::registry::{
    Compatibility, LocalRegistry, RegistryError, SchemaReference, SchemaRegistry, SchemaType,
    Version,
};

use crate::AppState;

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/subjects", get(subjects))
        .route("/subjects/{subject}", post(lookup).delete(delete_subject))
        .route("/subjects/{subject}/versions", get(versions).post(register))
        .route(
            "/subjects/{subject}/versions/{version}",
            get(version).delete(delete_version),
        )
        .route(
            "/subjects/{subject}/versions/{version}/schema",
            get(version_schema),
        )
        .route("/schemas/ids/{id}", get(by_id))
        .route("/schemas/ids/{id}/schema", get(by_id_schema))
        .route("/schemas/ids/{id}/versions", get(id_versions))
        .route("/schemas/types", get(types))
        .route("/config", get(global_config).put(set_global_config))
        .route(
            "/config/{subject}",
            get(subject_config).put(set_subject_config),
        )
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            post(check),
        )
        .route(
            "/mode",
            get(|| async { reply(Ok(json!({"mode": "READWRITE"}))) }),
        )
}

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

fn reply(r: Result<Value, RegistryError>) -> Response {
    match r {
        Ok(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
            body.to_string(),
        )
            .into_response(),
        Err(e) => {
            let (status, code) = e.code();
            (
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
                json!({"error_code": code, "message": e.to_string()}).to_string(),
            )
                .into_response()
        }
    }
}

/// Runs a registry call off the async threads (it reads and appends to the log).
async fn with_registry(
    state: &Arc<AppState>,
    f: impl FnOnce(&LocalRegistry) -> Result<Value, RegistryError> + Send + 'static,
) -> Response {
    let Some(registry) = state.schemas.clone() else {
        return reply(Err(RegistryError::Unavailable(
            "this server uses the external schema registry named by ksql.schema.registry.url"
                .into(),
        )));
    };
    match tokio::task::spawn_blocking(move || f(&registry)).await {
        Ok(r) => reply(r),
        Err(e) => reply(Err(RegistryError::Unavailable(e.to_string()))),
    }
}

/// A version number, or `latest` / `-1`.
fn parse_version(subject: &str, v: &str) -> Result<Option<u32>, RegistryError> {
    match v {
        "latest" | "-1" => Ok(None),
        n => n
            .parse::<u32>()
            .map(Some)
            .map_err(|_| RegistryError::VersionNotFound(subject.into(), n.into())),
    }
}

/// A registration or lookup request: the schema, its type and references.
fn request(body: &Bytes) -> Result<(SchemaType, String, Vec<SchemaReference>), RegistryError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| RegistryError::Invalid(format!("the request is not JSON: {e}")))?;
    let text = v["schema"]
        .as_str()
        .ok_or_else(|| RegistryError::Invalid("the request has no \"schema\"".into()))?
        .to_string();
    let schema_type = SchemaType::from_name(v["schemaType"].as_str())?;
    let references = v["references"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            SchemaReference::from_json(r)
                .ok_or_else(|| RegistryError::Invalid(format!("bad reference {r}")))
        })
        .collect::<Result<_, _>>()?;
    Ok((schema_type, text, references))
}

fn schema_json(v: &weir_format::registry::RegisteredSchema, mut out: Value) -> Value {
    out["schema"] = json!(v.text);
    if v.schema_type != SchemaType::Avro {
        out["schemaType"] = json!(v.schema_type.name());
    }
    if !v.references.is_empty() {
        out["references"] = v.references.iter().map(SchemaReference::to_json).collect();
    }
    out
}

fn version_json(v: &Version) -> Value {
    schema_json(
        &v.schema,
        json!({"subject": v.subject, "version": v.version, "id": v.schema.id}),
    )
}

async fn subjects(State(state): State<Arc<AppState>>) -> Response {
    with_registry(&state, |r| Ok(json!(r.subjects()?))).await
}

async fn versions(State(state): State<Arc<AppState>>, Path(subject): Path<String>) -> Response {
    with_registry(&state, move |r| Ok(json!(r.versions(&subject)?))).await
}

async fn version(
    State(state): State<Arc<AppState>>,
    Path((subject, v)): Path<(String, String)>,
) -> Response {
    with_registry(&state, move |r| {
        let v = parse_version(&subject, &v)?;
        Ok(version_json(&r.version(&subject, v)?))
    })
    .await
}

/// The schema text alone (Confluent answers with the schema itself).
async fn version_schema(
    State(state): State<Arc<AppState>>,
    Path((subject, v)): Path<(String, String)>,
) -> Response {
    with_registry(&state, move |r| {
        let v = parse_version(&subject, &v)?;
        raw(&r.version(&subject, v)?.schema.text)
    })
    .await
}

fn raw(text: &str) -> Result<Value, RegistryError> {
    // Avro and JSON schemas are JSON already; a .proto text is answered as a string.
    Ok(serde_json::from_str(text).unwrap_or_else(|_| json!(text)))
}

async fn register(
    State(state): State<Arc<AppState>>,
    Path(subject): Path<String>,
    body: Bytes,
) -> Response {
    with_registry(&state, move |r| {
        let (schema_type, text, references) = request(&body)?;
        let id = r.register_schema(&subject, schema_type, &text, &references, None)?;
        Ok(json!({"id": id}))
    })
    .await
}

async fn lookup(
    State(state): State<Arc<AppState>>,
    Path(subject): Path<String>,
    body: Bytes,
) -> Response {
    with_registry(&state, move |r| {
        let (schema_type, text, _) = request(&body)?;
        Ok(version_json(&r.lookup(&subject, schema_type, &text)?))
    })
    .await
}

async fn delete_subject(
    State(state): State<Arc<AppState>>,
    Path(subject): Path<String>,
) -> Response {
    with_registry(&state, move |r| Ok(json!(r.delete(&subject, None)?))).await
}

async fn delete_version(
    State(state): State<Arc<AppState>>,
    Path((subject, v)): Path<(String, String)>,
) -> Response {
    with_registry(&state, move |r| {
        let v = match parse_version(&subject, &v)? {
            Some(v) => v,
            None => r.version(&subject, None)?.version,
        };
        let deleted = r.delete(&subject, Some(v))?;
        Ok(json!(deleted.first().copied().unwrap_or(v)))
    })
    .await
}

async fn by_id(
    State(state): State<Arc<AppState>>,
    Path(id): Path<u32>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    with_registry(&state, move |r| {
        let schema = r.by_id(id)?;
        let mut out = schema_json(schema.as_ref(), json!({}));
        // Confluent's Protobuf clients ask for the schema as a serialized descriptor.
        if query.get("format").map(String::as_str) == Some("serialized")
            && schema.schema_type == SchemaType::Protobuf
        {
            let p = schema.protobuf().map_err(RegistryError::Invalid)?;
            if let Some(serialized) = p.serialized() {
                out["schema"] = json!(serialized);
            }
        }
        Ok(out)
    })
    .await
}

async fn by_id_schema(State(state): State<Arc<AppState>>, Path(id): Path<u32>) -> Response {
    with_registry(&state, move |r| raw(&r.by_id(id)?.text)).await
}

async fn id_versions(State(state): State<Arc<AppState>>, Path(id): Path<u32>) -> Response {
    with_registry(&state, move |r| {
        r.by_id(id)?;
        let mut out = Vec::new();
        for subject in r.subjects()? {
            for v in r.versions(&subject)? {
                if r.version(&subject, Some(v))?.schema.id == id {
                    out.push(json!({"subject": subject, "version": v}));
                }
            }
        }
        Ok(json!(out))
    })
    .await
}

async fn types() -> Response {
    reply(Ok(json!(["JSON", "PROTOBUF", "AVRO"])))
}

async fn global_config(State(state): State<Arc<AppState>>) -> Response {
    with_registry(&state, |r| {
        Ok(json!({"compatibilityLevel": r.compatibility(None).name()}))
    })
    .await
}

async fn subject_config(
    State(state): State<Arc<AppState>>,
    Path(subject): Path<String>,
) -> Response {
    with_registry(&state, move |r| match r.own_compatibility(&subject) {
        Some(level) => Ok(json!({"compatibilityLevel": level.name()})),
        None => Ok(json!({"compatibilityLevel": r.compatibility(None).name()})),
    })
    .await
}

fn level_of(body: &Bytes) -> Result<Compatibility, RegistryError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| RegistryError::Invalid(format!("the request is not JSON: {e}")))?;
    let name = v["compatibility"].as_str().unwrap_or_default();
    Compatibility::from_name(name).ok_or_else(|| {
        RegistryError::Invalid(format!(
            "Invalid compatibility level '{name}': NONE, BACKWARD, FORWARD or FULL (optionally _TRANSITIVE)"
        ))
    })
}

async fn set_global_config(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    with_registry(&state, move |r| {
        let level = level_of(&body)?;
        r.set_compatibility(None, level)?;
        Ok(json!({"compatibility": level.name()}))
    })
    .await
}

async fn set_subject_config(
    State(state): State<Arc<AppState>>,
    Path(subject): Path<String>,
    body: Bytes,
) -> Response {
    with_registry(&state, move |r| {
        let level = level_of(&body)?;
        r.set_compatibility(Some(&subject), level)?;
        Ok(json!({"compatibility": level.name()}))
    })
    .await
}

async fn check(
    State(state): State<Arc<AppState>>,
    Path((subject, v)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    with_registry(&state, move |r| {
        let v = parse_version(&subject, &v)?;
        let (schema_type, text, _) = request(&body)?;
        match r.check(&subject, v, schema_type, &text) {
            Ok(()) => Ok(json!({"is_compatible": true})),
            Err(RegistryError::Incompatible(_, why)) => {
                Ok(json!({"is_compatible": false, "messages": [why]}))
            }
            Err(e) => Err(e),
        }
    })
    .await
}
