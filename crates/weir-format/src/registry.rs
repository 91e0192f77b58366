//! Schemas by subject and id, as Confluent's Schema Registry keeps them: the writer's
//! schema of every record in the Confluent wire format (magic byte 0, a 4-byte schema id,
//! the body) is looked up here by its id.
//!
//! [`LocalRegistry`] is Weir's own, kept in a compacted internal topic of the log (as
//! Redpanda keeps its registry in `_schemas`), so schemas survive restarts and servers on
//! one Kafka cluster see the same ones. [`RemoteRegistry`] talks to an external registry
//! (`ksql.schema.registry.url`) over its REST API, caching what it read.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{Value, json};
use weir_log::{Log, Record, TopicConfig};

/// The kinds of schema a registry holds, named as its REST API names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SchemaType {
    Avro,
    Protobuf,
    Json,
}

impl SchemaType {
    /// `schemaType` as the REST API writes it (absent means AVRO).
    pub fn name(self) -> &'static str {
        match self {
            SchemaType::Avro => "AVRO",
            SchemaType::Protobuf => "PROTOBUF",
            SchemaType::Json => "JSON",
        }
    }

    pub fn from_name(name: Option<&str>) -> Result<SchemaType, RegistryError> {
        match name.map(str::to_ascii_uppercase).as_deref() {
            None | Some("AVRO") => Ok(SchemaType::Avro),
            Some("PROTOBUF") => Ok(SchemaType::Protobuf),
            Some("JSON") => Ok(SchemaType::Json),
            Some(other) => Err(RegistryError::Invalid(format!(
                "Unknown schema type {other}: AVRO, PROTOBUF or JSON"
            ))),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RegistryError {
    #[error("Subject '{0}' not found.")]
    SubjectNotFound(String),
    #[error("Version {1} not found for subject '{0}'.")]
    VersionNotFound(String, String),
    #[error("Schema {0} not found")]
    SchemaNotFound(u32),
    #[error("Invalid schema: {0}")]
    Invalid(String),
    #[error(
        "Schema being registered is incompatible with an earlier schema for subject \"{0}\": {1}"
    )]
    Incompatible(String, String),
    #[error("Schema registry unavailable: {0}")]
    Unavailable(String),
}

/// How [`RegistryError::Unavailable`] reads: a record that failed with it is not bad, the
/// registry did not answer.
pub const UNAVAILABLE: &str = "Schema registry unavailable";

impl RegistryError {
    /// Confluent's error code for the REST API.
    pub fn code(&self) -> (u16, u32) {
        match self {
            RegistryError::SubjectNotFound(_) => (404, 40401),
            RegistryError::VersionNotFound(..) => (404, 40402),
            RegistryError::SchemaNotFound(_) => (404, 40403),
            RegistryError::Invalid(_) => (422, 42201),
            RegistryError::Incompatible(..) => (409, 409),
            RegistryError::Unavailable(_) => (500, 50001),
        }
    }
}

/// A schema's reference to another (a Protobuf `import`, an Avro named type): the name it
/// is imported by, and the subject version holding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaReference {
    pub name: String,
    pub subject: String,
    pub version: u32,
}

impl SchemaReference {
    pub fn to_json(&self) -> Value {
        json!({"name": self.name, "subject": self.subject, "version": self.version})
    }

    pub fn from_json(v: &Value) -> Option<SchemaReference> {
        Some(SchemaReference {
            name: v["name"].as_str()?.to_string(),
            subject: v["subject"].as_str()?.to_string(),
            version: v["version"].as_u64()? as u32,
        })
    }
}

/// One schema as registered: its id, kind and text, parsed once when first used.
#[derive(Debug)]
pub struct RegisteredSchema {
    pub id: u32,
    pub schema_type: SchemaType,
    pub text: String,
    pub references: Vec<SchemaReference>,
    /// The referenced schemas' texts by import name, transitively (for compiling it).
    pub deps: Vec<(String, String)>,
    avro: OnceLock<Result<Arc<crate::avro::AvroSchema>, String>>,
    protobuf: OnceLock<Result<Arc<crate::protobuf::ProtoSchema>, String>>,
}

impl RegisteredSchema {
    pub fn new(id: u32, schema_type: SchemaType, text: String) -> Self {
        Self {
            id,
            schema_type,
            text,
            references: Vec::new(),
            deps: Vec::new(),
            avro: OnceLock::new(),
            protobuf: OnceLock::new(),
        }
    }

    /// With the schemas it references.
    pub fn with_references(
        mut self,
        references: Vec<SchemaReference>,
        deps: Vec<(String, String)>,
    ) -> Self {
        self.references = references;
        self.deps = deps;
        self
    }

    /// The Protobuf schema, compiled (once).
    pub fn protobuf(&self) -> Result<Arc<crate::protobuf::ProtoSchema>, String> {
        self.protobuf
            .get_or_init(|| {
                crate::protobuf::ProtoSchema::parse(&self.text, &self.deps).map(Arc::new)
            })
            .clone()
    }

    /// The Avro schema, parsed (once).
    pub fn avro(&self) -> Result<Arc<crate::avro::AvroSchema>, String> {
        self.avro
            .get_or_init(|| crate::avro::AvroSchema::parse(&self.text).map(Arc::new))
            .clone()
    }
}

/// A subject's version: which schema it is.
#[derive(Debug, Clone)]
pub struct Version {
    pub subject: String,
    pub version: u32,
    pub schema: Arc<RegisteredSchema>,
}

/// What Weir asks of a schema registry; the REST API Weir serves answers from it too.
pub trait SchemaRegistry: Send + Sync + std::fmt::Debug {
    fn by_id(&self, id: u32) -> Result<Arc<RegisteredSchema>, RegistryError>;
    /// `version`: a number, or `None` for the latest.
    fn version(&self, subject: &str, version: Option<u32>) -> Result<Version, RegistryError>;
    /// Registers `text`, referencing `references`, under `subject` (a new version unless
    /// the subject already has it) and returns its id; the same schema under any subject
    /// has the same id. `id`: the id it must have (Confluent's IMPORT mode, used to copy
    /// schemas between registries), refused if that id holds another schema.
    fn register_schema(
        &self,
        subject: &str,
        schema_type: SchemaType,
        text: &str,
        references: &[SchemaReference],
        id: Option<u32>,
    ) -> Result<u32, RegistryError>;
    fn subjects(&self) -> Result<Vec<String>, RegistryError>;
    fn versions(&self, subject: &str) -> Result<Vec<u32>, RegistryError>;

    fn register(
        &self,
        subject: &str,
        schema_type: SchemaType,
        text: &str,
    ) -> Result<u32, RegistryError> {
        self.register_schema(subject, schema_type, text, &[], None)
    }

    fn register_with_id(
        &self,
        subject: &str,
        schema_type: SchemaType,
        text: &str,
        id: u32,
    ) -> Result<u32, RegistryError> {
        self.register_schema(subject, schema_type, text, &[], Some(id))
    }

    /// The latest version of `subject`, `None` where it has none.
    fn latest(&self, subject: &str) -> Result<Option<Version>, RegistryError> {
        match self.version(subject, None) {
            Ok(v) => Ok(Some(v)),
            Err(RegistryError::SubjectNotFound(_)) | Err(RegistryError::VersionNotFound(..)) => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

/// A schema's text as compared for identity: Avro and JSON schemas as compact JSON,
/// Protobuf as written (trimmed).
pub fn normalize(schema_type: SchemaType, text: &str) -> Result<String, RegistryError> {
    normalize_with(schema_type, text, &[])
}

/// As [`normalize`], for a schema importing `deps`.
pub fn normalize_with(
    schema_type: SchemaType,
    text: &str,
    deps: &[(String, String)],
) -> Result<String, RegistryError> {
    match schema_type {
        SchemaType::Avro => {
            let v: Value = serde_json::from_str(text)
                .or_else(|_| serde_json::from_str(&format!("\"{text}\"")))
                .map_err(|e| RegistryError::Invalid(format!("not JSON: {e}")))?;
            let s = v.to_string();
            apache_avro::Schema::parse_str(&s)
                .map_err(|e| RegistryError::Invalid(e.to_string()))?;
            Ok(s)
        }
        SchemaType::Json => {
            let v: Value = serde_json::from_str(text)
                .map_err(|e| RegistryError::Invalid(format!("not JSON: {e}")))?;
            Ok(v.to_string())
        }
        SchemaType::Protobuf => {
            let text = text.trim().to_string();
            crate::protobuf::ProtoSchema::parse(&text, deps).map_err(RegistryError::Invalid)?;
            Ok(text)
        }
    }
}

/// Compatibility levels, as Confluent names them: a `_TRANSITIVE` level checks a new
/// version against every earlier one, the others against the latest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compatibility {
    None,
    Backward,
    Forward,
    Full,
    BackwardTransitive,
    ForwardTransitive,
    FullTransitive,
}

impl Compatibility {
    const ALL: [Compatibility; 7] = [
        Compatibility::None,
        Compatibility::Backward,
        Compatibility::Forward,
        Compatibility::Full,
        Compatibility::BackwardTransitive,
        Compatibility::ForwardTransitive,
        Compatibility::FullTransitive,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Compatibility::None => "NONE",
            Compatibility::Backward => "BACKWARD",
            Compatibility::Forward => "FORWARD",
            Compatibility::Full => "FULL",
            Compatibility::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Compatibility::ForwardTransitive => "FORWARD_TRANSITIVE",
            Compatibility::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    pub fn from_name(name: &str) -> Option<Compatibility> {
        Self::ALL
            .into_iter()
            .find(|level| level.name().eq_ignore_ascii_case(name))
    }

    /// Whether every earlier version is checked, not only the latest.
    pub fn transitive(self) -> bool {
        matches!(
            self,
            Compatibility::BackwardTransitive
                | Compatibility::ForwardTransitive
                | Compatibility::FullTransitive
        )
    }

    /// The check made against each version: NONE, BACKWARD, FORWARD or FULL.
    fn direction(self) -> Compatibility {
        match self {
            Compatibility::BackwardTransitive => Compatibility::Backward,
            Compatibility::ForwardTransitive => Compatibility::Forward,
            Compatibility::FullTransitive => Compatibility::Full,
            level => level,
        }
    }
}

/// Whether `new` may follow `old` under `level`: BACKWARD, whether `new` reads what
/// `old` wrote; FORWARD, the other way; FULL, both. Avro schemas by Avro's resolution
/// rules; Protobuf and JSON schemas as `compat.rs` says.
pub fn compatible(
    level: Compatibility,
    old: &RegisteredSchema,
    new: &RegisteredSchema,
) -> Result<(), String> {
    if old.schema_type != new.schema_type {
        return Err(format!(
            "schema type {} differs from the earlier {}",
            new.schema_type.name(),
            old.schema_type.name()
        ));
    }
    let level = level.direction();
    if level == Compatibility::None {
        return Ok(());
    }
    let json = |s: &RegisteredSchema| {
        serde_json::from_str::<serde_json::Value>(&s.text).map_err(|e| format!("not JSON: {e}"))
    };
    let reads = |writer: &RegisteredSchema, reader: &RegisteredSchema| match new.schema_type {
        SchemaType::Avro => {
            use apache_avro::schema_compatibility::SchemaCompatibility as C;
            C::can_read(&writer.avro()?.root, &reader.avro()?.root).map_err(|e| e.to_string())
        }
        SchemaType::Protobuf => {
            crate::compat::protobuf_reads(&*writer.protobuf()?, &*reader.protobuf()?)
        }
        SchemaType::Json => crate::compat::json_reads(&json(writer)?, &json(reader)?),
    };
    let backward = || reads(old, new).map_err(|e| format!("new schema cannot read old data: {e}"));
    let forward = || reads(new, old).map_err(|e| format!("old schema cannot read new data: {e}"));
    match level {
        Compatibility::Backward => backward(),
        Compatibility::Forward => forward(),
        _ => backward().and_then(|_| forward()),
    }
}

#[derive(Debug, Default)]
struct State {
    schemas: BTreeMap<u32, Arc<RegisteredSchema>>,
    /// (type, normalized text) → id.
    ids: BTreeMap<(SchemaType, String), u32>,
    /// subject → versions (version number → id); deleted versions removed.
    subjects: BTreeMap<String, BTreeMap<u32, u32>>,
    /// Highest version number each subject has used (not reused after a delete).
    last_version: BTreeMap<String, u32>,
    compatibility: BTreeMap<String, Compatibility>,
    /// Records of the topic applied so far (per partition 0).
    applied: u64,
}

/// Weir's own registry, kept in a compacted topic of the log. Every change is one record
/// (key: what changed; value: the change as JSON), applied in the topic's order, so any
/// server reading the topic builds the same registry.
pub struct LocalRegistry {
    log: Arc<dyn Log>,
    topic: String,
    state: Mutex<State>,
}

impl std::fmt::Debug for LocalRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalRegistry")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl LocalRegistry {
    /// Opens the registry kept in `topic` (created when missing), reading what it holds.
    pub fn open(log: Arc<dyn Log>, topic: &str) -> Result<Self, RegistryError> {
        let unavailable = |e: weir_log::LogError| RegistryError::Unavailable(e.to_string());
        if log.topic(topic).map_err(unavailable)?.is_none() {
            let config = TopicConfig {
                partitions: 1,
                compact: true,
                keep_forever: true,
                ..Default::default()
            };
            if let Err(e) = log.create_topic(topic, config) {
                // Another server may have made it meanwhile.
                if log.topic(topic).map_err(unavailable)?.is_none() {
                    return Err(unavailable(e));
                }
            }
        }
        let r = Self {
            log,
            topic: topic.to_string(),
            state: Mutex::new(State::default()),
        };
        r.refresh()?;
        Ok(r)
    }

    /// Applies the records written to the topic since the last look (by this server or
    /// another).
    fn refresh(&self) -> Result<(), RegistryError> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.refresh_locked(&mut state)
    }

    fn refresh_locked(&self, state: &mut State) -> Result<(), RegistryError> {
        let records = self
            .log
            .read_to_end(&self.topic, 0, state.applied)
            .map_err(|e| RegistryError::Unavailable(e.to_string()))?;
        for r in records {
            state.applied = r.offset + 1;
            let Some(value) = r.record.value else {
                continue;
            };
            let Ok(change) = serde_json::from_slice::<Value>(&value) else {
                continue;
            };
            apply(state, &change);
        }
        Ok(())
    }

    fn write(&self, state: &mut State, key: String, change: Value) -> Result<(), RegistryError> {
        let offset = self
            .log
            .append(
                &self.topic,
                0,
                &[Record {
                    key: Some(key.into_bytes()),
                    value: Some(change.to_string().into_bytes()),
                    timestamp: 0,
                    headers: Vec::new(),
                }],
            )
            .map_err(|e| RegistryError::Unavailable(e.to_string()))?;
        // Whatever others wrote before it, then the change itself.
        self.refresh_locked(state)?;
        if state.applied <= offset {
            apply(state, &change);
            state.applied = offset + 1;
        }
        Ok(())
    }

    /// The compatibility level of `subject` (its own, else the global one; BACKWARD by
    /// default, as Confluent's).
    pub fn compatibility(&self, subject: Option<&str>) -> Compatibility {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        subject
            .and_then(|s| state.compatibility.get(s))
            .or_else(|| state.compatibility.get(""))
            .copied()
            .unwrap_or(Compatibility::Backward)
    }

    /// Whether `subject` has a level of its own.
    pub fn own_compatibility(&self, subject: &str) -> Option<Compatibility> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.compatibility.get(subject).copied()
    }

    /// Sets the level of `subject`, or the global one (`None`).
    pub fn set_compatibility(
        &self,
        subject: Option<&str>,
        level: Compatibility,
    ) -> Result<(), RegistryError> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let subject = subject.unwrap_or_default();
        self.write(
            &mut state,
            format!("config:{subject}"),
            json!({"kind": "config", "subject": subject, "compatibility": level.name()}),
        )
    }

    /// Deletes a subject's versions (all, or one), returning the version numbers deleted.
    pub fn delete(&self, subject: &str, version: Option<u32>) -> Result<Vec<u32>, RegistryError> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.refresh_locked(&mut state)?;
        let versions = subject_versions(&state, subject)?;
        let doomed: Vec<u32> = match version {
            None => versions.keys().copied().collect(),
            Some(v) if versions.contains_key(&v) => vec![v],
            Some(v) => {
                return Err(RegistryError::VersionNotFound(
                    subject.to_string(),
                    v.to_string(),
                ));
            }
        };
        for v in &doomed {
            // The schema stays readable by id (compaction keeps this record, not the
            // registration it replaces), as Confluent's soft delete.
            let schema = state.schemas[&state.subjects[subject][v]].clone();
            self.write(
                &mut state,
                format!("subject:{subject}:{v}"),
                json!({"kind": "delete", "subject": subject, "version": v, "id": schema.id,
                       "schemaType": schema.schema_type.name(), "schema": schema.text,
                       "references": schema.references.iter().map(SchemaReference::to_json)
                           .collect::<Vec<_>>()}),
            )?;
        }
        Ok(doomed)
    }

    /// Whether `subject` has this schema; its version if so.
    pub fn lookup(
        &self,
        subject: &str,
        schema_type: SchemaType,
        text: &str,
    ) -> Result<Version, RegistryError> {
        let norm = normalize(schema_type, text)?;
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.refresh_locked(&mut state)?;
        let versions = subject_versions(&state, subject)?;
        let id = state.ids.get(&(schema_type, norm));
        versions
            .iter()
            .find(|(_, i)| Some(*i) == id)
            .map(|(v, i)| Version {
                subject: subject.to_string(),
                version: *v,
                schema: state.schemas[i].clone(),
            })
            .ok_or(RegistryError::SchemaNotFound(0))
    }

    /// Checks `text` against a version of `subject` (or the latest) under its level.
    pub fn check(
        &self,
        subject: &str,
        version: Option<u32>,
        schema_type: SchemaType,
        text: &str,
    ) -> Result<(), RegistryError> {
        let new = RegisteredSchema::new(0, schema_type, normalize(schema_type, text)?);
        let old = self.version(subject, version)?;
        compatible(self.compatibility(Some(subject)), &old.schema, &new)
            .map_err(|e| RegistryError::Incompatible(subject.to_string(), e))
    }
}

fn references_of(change: &Value) -> Vec<SchemaReference> {
    change["references"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(SchemaReference::from_json)
        .collect()
}

/// The texts a schema's references stand for, by import name, with theirs in turn.
fn resolve_deps(
    state: &State,
    references: &[SchemaReference],
) -> Result<Vec<(String, String)>, RegistryError> {
    let mut out = Vec::new();
    for r in references {
        let id = state
            .subjects
            .get(&r.subject)
            .and_then(|v| v.get(&r.version))
            .ok_or_else(|| {
                RegistryError::Invalid(format!(
                    "reference {} to version {} of subject '{}' not found",
                    r.name, r.version, r.subject
                ))
            })?;
        let schema = &state.schemas[id];
        out.extend(schema.deps.iter().cloned());
        out.push((r.name.clone(), schema.text.clone()));
    }
    Ok(out)
}

/// Records a schema a change names (with its references), readable by id from then on.
fn known_schema(state: &mut State, change: &Value, id: u32, schema_type: SchemaType, text: &str) {
    if !state.schemas.contains_key(&id) {
        let references = references_of(change);
        let deps = resolve_deps(state, &references).unwrap_or_default();
        state.schemas.insert(
            id,
            Arc::new(
                RegisteredSchema::new(id, schema_type, text.to_string())
                    .with_references(references, deps),
            ),
        );
    }
    state.ids.insert((schema_type, text.to_string()), id);
}

fn apply(state: &mut State, change: &Value) {
    let subject = change["subject"].as_str().unwrap_or_default().to_string();
    match change["kind"].as_str() {
        Some("schema") => {
            let (Some(id), Some(version), Some(text)) = (
                change["id"].as_u64(),
                change["version"].as_u64(),
                change["schema"].as_str(),
            ) else {
                return;
            };
            let Ok(schema_type) = SchemaType::from_name(change["schemaType"].as_str()) else {
                return;
            };
            let (id, version) = (id as u32, version as u32);
            known_schema(state, change, id, schema_type, text);
            state
                .subjects
                .entry(subject.clone())
                .or_default()
                .insert(version, id);
            let last = state.last_version.entry(subject).or_default();
            *last = (*last).max(version);
        }
        Some("delete") => {
            if let (Some(id), Some(text), Ok(schema_type)) = (
                change["id"].as_u64(),
                change["schema"].as_str(),
                SchemaType::from_name(change["schemaType"].as_str()),
            ) {
                known_schema(state, change, id as u32, schema_type, text);
            }
            if let Some(v) = change["version"].as_u64() {
                let last = state.last_version.entry(subject.clone()).or_default();
                *last = (*last).max(v as u32);
            }
            if let (Some(v), Some(versions)) =
                (change["version"].as_u64(), state.subjects.get_mut(&subject))
            {
                versions.remove(&(v as u32));
            }
        }
        Some("config") => {
            if let Some(level) = change["compatibility"]
                .as_str()
                .and_then(Compatibility::from_name)
            {
                state.compatibility.insert(subject, level);
            }
        }
        _ => {}
    }
}

impl SchemaRegistry for LocalRegistry {
    fn by_id(&self, id: u32) -> Result<Arc<RegisteredSchema>, RegistryError> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = state.schemas.get(&id) {
            return Ok(s.clone());
        }
        // Perhaps another server registered it since.
        self.refresh_locked(&mut state)?;
        state
            .schemas
            .get(&id)
            .cloned()
            .ok_or(RegistryError::SchemaNotFound(id))
    }

    fn version(&self, subject: &str, version: Option<u32>) -> Result<Version, RegistryError> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.refresh_locked(&mut state)?;
        let versions = subject_versions(&state, subject)?;
        let (v, id) = match version {
            None => versions.iter().next_back(),
            Some(v) => versions.get_key_value(&v),
        }
        .ok_or_else(|| {
            RegistryError::VersionNotFound(
                subject.to_string(),
                version.map_or("latest".into(), |v| v.to_string()),
            )
        })?;
        Ok(Version {
            subject: subject.to_string(),
            version: *v,
            schema: state.schemas[id].clone(),
        })
    }

    fn register_schema(
        &self,
        subject: &str,
        schema_type: SchemaType,
        text: &str,
        references: &[SchemaReference],
        id: Option<u32>,
    ) -> Result<u32, RegistryError> {
        self.register_as(subject, schema_type, text, references, id)
    }

    fn subjects(&self) -> Result<Vec<String>, RegistryError> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.refresh_locked(&mut state)?;
        Ok(state
            .subjects
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(s, _)| s.clone())
            .collect())
    }

    fn versions(&self, subject: &str) -> Result<Vec<u32>, RegistryError> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.refresh_locked(&mut state)?;
        Ok(subject_versions(&state, subject)?.keys().copied().collect())
    }
}

impl LocalRegistry {
    fn register_as(
        &self,
        subject: &str,
        schema_type: SchemaType,
        text: &str,
        references: &[SchemaReference],
        given: Option<u32>,
    ) -> Result<u32, RegistryError> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.refresh_locked(&mut state)?;
        let deps = resolve_deps(&state, references)?;
        let norm = normalize_with(schema_type, text, &deps)?;
        let known = state.ids.get(&(schema_type, norm.clone())).copied();
        let versions = state.subjects.get(subject).cloned().unwrap_or_default();
        if let Some(id) = given.or(known)
            && versions.values().any(|i| *i == id)
            && state.schemas.get(&id).is_some_and(|s| s.text == norm)
        {
            return Ok(id);
        }
        let level = subject_level(&state, subject);
        // The latest version first, then (transitive levels) the earlier ones.
        let checked = if level.transitive() {
            versions.len()
        } else {
            1
        };
        let new = RegisteredSchema::new(0, schema_type, norm.clone())
            .with_references(references.to_vec(), deps.clone());
        for (version, id) in versions.iter().rev().take(checked) {
            compatible(level, &state.schemas[id], &new).map_err(|e| {
                RegistryError::Incompatible(subject.to_string(), format!("version {version}: {e}"))
            })?;
        }
        let id = match (given, known) {
            (Some(g), _) => {
                if state.schemas.get(&g).is_some_and(|s| s.text != norm) {
                    return Err(RegistryError::Invalid(format!(
                        "id {g} already holds another schema"
                    )));
                }
                g
            }
            (None, Some(k)) => k,
            (None, None) => state.schemas.keys().next_back().map_or(1, |i| i + 1),
        };
        let version = state.last_version.get(subject).copied().unwrap_or(0) + 1;
        self.write(
            &mut state,
            format!("subject:{subject}:{version}"),
            json!({"kind": "schema", "subject": subject, "version": version, "id": id,
                   "schemaType": schema_type.name(), "schema": norm,
                   "references": references.iter().map(SchemaReference::to_json)
                       .collect::<Vec<_>>()}),
        )?;
        Ok(id)
    }
}

/// A subject's live versions (version → id); not found when it has none.
fn subject_versions<'a>(
    state: &'a State,
    subject: &str,
) -> Result<&'a BTreeMap<u32, u32>, RegistryError> {
    state
        .subjects
        .get(subject)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| RegistryError::SubjectNotFound(subject.to_string()))
}

fn subject_level(state: &State, subject: &str) -> Compatibility {
    state
        .compatibility
        .get(subject)
        .or_else(|| state.compatibility.get(""))
        .copied()
        .unwrap_or(Compatibility::Backward)
}

/// An external Schema Registry (`ksql.schema.registry.url`), over its REST API. Schemas by
/// id never change, so they are cached for good; subjects' latest versions are asked each
/// time (ksqlDB asks them only when a statement runs).
#[derive(Debug)]
pub struct RemoteRegistry {
    url: String,
    agent: ureq::Agent,
    by_id: Mutex<BTreeMap<u32, Arc<RegisteredSchema>>>,
    registered: Mutex<BTreeMap<(String, SchemaType, String), u32>>,
}

impl RemoteRegistry {
    pub fn new(url: &str) -> Self {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(std::time::Duration::from_secs(10)))
            .http_status_as_error(false)
            .build();
        Self {
            url: url.trim_end_matches('/').to_string(),
            agent: config.into(),
            by_id: Mutex::new(BTreeMap::new()),
            registered: Mutex::new(BTreeMap::new()),
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, RegistryError> {
        let url = format!("{}{path}", self.url);
        let unavailable =
            |e: &dyn std::fmt::Display| RegistryError::Unavailable(format!("{url}: {e}"));
        let response = match body {
            Some(b) => self
                .agent
                .post(&url)
                .header("Content-Type", "application/vnd.schemaregistry.v1+json")
                .send_json(b),
            None if method == "GET" => self.agent.get(&url).call(),
            None => self.agent.delete(&url).call(),
        }
        .map_err(|e| unavailable(&e))?;
        let status = response.status().as_u16();
        let body: Value = response
            .into_body()
            .read_json()
            .map_err(|e| unavailable(&e))?;
        if status < 300 {
            return Ok(body);
        }
        let message = body["message"].as_str().unwrap_or_default().to_string();
        Err(match body["error_code"].as_u64() {
            Some(40401) => RegistryError::SubjectNotFound(message),
            Some(40402) => RegistryError::VersionNotFound(message, String::new()),
            Some(40403) => RegistryError::SchemaNotFound(0),
            Some(409) => RegistryError::Incompatible(String::new(), message),
            Some(42201) | Some(422) => RegistryError::Invalid(message),
            _ => unavailable(&format!("HTTP {status}: {message}")),
        })
    }

    /// Registers a schema (with its id, in IMPORT mode, when given).
    fn post_schema(
        &self,
        subject: &str,
        schema_type: SchemaType,
        text: &str,
        references: &[SchemaReference],
        id: Option<u32>,
    ) -> Result<Value, RegistryError> {
        let mut body = json!({"schema": text});
        if schema_type != SchemaType::Avro {
            body["schemaType"] = json!(schema_type.name());
        }
        if !references.is_empty() {
            body["references"] = references.iter().map(SchemaReference::to_json).collect();
        }
        if let Some(id) = id {
            body["id"] = json!(id);
        }
        self.call("POST", &format!("/subjects/{subject}/versions"), Some(body))
    }

    /// A schema from an answer, with the schemas it references fetched (transitively).
    fn schema_of(&self, id: u32, body: &Value) -> Result<Arc<RegisteredSchema>, RegistryError> {
        let schema_type = SchemaType::from_name(body["schemaType"].as_str())?;
        let text = body["schema"]
            .as_str()
            .ok_or_else(|| RegistryError::Invalid("no schema in the answer".into()))?;
        let references: Vec<SchemaReference> = body["references"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(SchemaReference::from_json)
            .collect();
        let mut deps = Vec::new();
        for r in &references {
            let v = self.version(&r.subject, Some(r.version))?;
            deps.extend(v.schema.deps.iter().cloned());
            deps.push((r.name.clone(), v.schema.text.clone()));
        }
        Ok(Arc::new(
            RegisteredSchema::new(id, schema_type, text.to_string())
                .with_references(references, deps),
        ))
    }
}

impl SchemaRegistry for RemoteRegistry {
    fn by_id(&self, id: u32) -> Result<Arc<RegisteredSchema>, RegistryError> {
        if let Some(s) = self
            .by_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
        {
            return Ok(s.clone());
        }
        let body = self
            .call("GET", &format!("/schemas/ids/{id}"), None)
            .map_err(|e| match e {
                RegistryError::SchemaNotFound(_) => RegistryError::SchemaNotFound(id),
                e => e,
            })?;
        let schema = self.schema_of(id, &body)?;
        self.by_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, schema.clone());
        Ok(schema)
    }

    fn version(&self, subject: &str, version: Option<u32>) -> Result<Version, RegistryError> {
        let v = version.map_or("latest".into(), |v| v.to_string());
        let body = self
            .call("GET", &format!("/subjects/{subject}/versions/{v}"), None)
            .map_err(|e| match e {
                RegistryError::SubjectNotFound(_) => RegistryError::SubjectNotFound(subject.into()),
                RegistryError::VersionNotFound(..) => {
                    RegistryError::VersionNotFound(subject.into(), v.clone())
                }
                e => e,
            })?;
        let id = body["id"].as_u64().unwrap_or_default() as u32;
        Ok(Version {
            subject: subject.to_string(),
            version: body["version"].as_u64().unwrap_or_default() as u32,
            schema: self.schema_of(id, &body)?,
        })
    }

    fn register_schema(
        &self,
        subject: &str,
        schema_type: SchemaType,
        text: &str,
        references: &[SchemaReference],
        id: Option<u32>,
    ) -> Result<u32, RegistryError> {
        let key = (subject.to_string(), schema_type, text.to_string());
        if id.is_none()
            && references.is_empty()
            && let Some(id) = self
                .registered
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&key)
        {
            return Ok(*id);
        }
        let answer = self.post_schema(subject, schema_type, text, references, id)?;
        let id = answer["id"]
            .as_u64()
            .ok_or_else(|| RegistryError::Unavailable("no id in the answer".into()))?
            as u32;
        self.registered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, id);
        Ok(id)
    }

    fn subjects(&self) -> Result<Vec<String>, RegistryError> {
        let body = self.call("GET", "/subjects", None)?;
        Ok(body
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(String::from))
            .collect())
    }

    fn versions(&self, subject: &str) -> Result<Vec<u32>, RegistryError> {
        let body = self.call("GET", &format!("/subjects/{subject}/versions"), None)?;
        Ok(body
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_u64().map(|v| v as u32))
            .collect())
    }
}
