//! What the engine knows: streams and tables with their topics and record layouts, and
//! the types registered with CREATE TYPE.

use std::collections::BTreeMap;

use weir_format::Layout;
use weir_sql::ast::{SourceKind, SqlType, StructFieldType};

use crate::error::{EngineError, Result};

#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub kind: SourceKind,
    pub topic: String,
    pub layout: Layout,
    /// The column that holds event time, if not the record timestamp.
    pub timestamp_column: Option<String>,
    /// How a STRING timestamp column reads (`TIMESTAMP_FORMAT`, a Java pattern).
    pub timestamp_format: Option<String>,
    /// The statement that created it, in canonical form (DESCRIBE shows it).
    pub statement: String,
    /// The persistent query that writes it, if any.
    pub written_by: Option<String>,
    /// Created with CREATE SOURCE: read-only.
    pub read_only: bool,
    /// Its records have windowed keys (`WINDOW_TYPE` in its WITH clause, or a windowed
    /// aggregation writes it).
    pub window: Option<KeyWindow>,
}

/// How a windowed key carries its window, as Kafka Streams lays it out: the key's bytes,
/// then the window start (time windows: the end is start + size), or the end then the
/// start (session windows), each an 8-byte big-endian count of milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyWindow {
    Time { size_ms: i64 },
    Session,
}

impl KeyWindow {
    /// From a source's `WINDOW_TYPE` and `WINDOW_SIZE`.
    pub fn from_properties(window_type: &str, size: Option<&str>) -> Option<KeyWindow> {
        if window_type.eq_ignore_ascii_case("SESSION") {
            return Some(KeyWindow::Session);
        }
        let size = size.and_then(|s| weir_sql::parse_window_size(s).ok())?;
        Some(KeyWindow::Time {
            size_ms: size as i64,
        })
    }

    /// ksqlDB's name for the window type (DESCRIBE).
    pub fn type_name(&self) -> &'static str {
        match self {
            KeyWindow::Time { .. } => "TIME",
            KeyWindow::Session => "SESSION",
        }
    }

    /// Appends the window to a key's bytes.
    pub fn append(&self, key: &mut Vec<u8>, start: i64, end: i64) {
        match self {
            KeyWindow::Time { .. } => key.extend_from_slice(&start.to_be_bytes()),
            KeyWindow::Session => {
                key.extend_from_slice(&end.to_be_bytes());
                key.extend_from_slice(&start.to_be_bytes());
            }
        }
    }

    /// Splits a windowed key into the key's bytes and the window's start and end.
    pub fn split<'a>(&self, key: &'a [u8]) -> Option<(&'a [u8], i64, i64)> {
        let word = |b: &[u8]| i64::from_be_bytes(b.try_into().expect("8 bytes"));
        match self {
            KeyWindow::Time { size_ms } => {
                let at = key.len().checked_sub(8)?;
                let start = word(&key[at..]);
                Some((&key[..at], start, start.saturating_add(*size_ms)))
            }
            KeyWindow::Session => {
                let at = key.len().checked_sub(16)?;
                Some((&key[..at], word(&key[at + 8..]), word(&key[at..at + 8])))
            }
        }
    }
}

impl Source {
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            SourceKind::Stream => "stream",
            SourceKind::Table => "table",
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct Catalog {
    sources: BTreeMap<String, Source>,
    types: BTreeMap<String, SqlType>,
}

impl Catalog {
    pub fn source(&self, name: &str) -> Option<&Source> {
        self.sources.get(name)
    }

    pub fn source_mut(&mut self, name: &str) -> Option<&mut Source> {
        self.sources.get_mut(name)
    }

    pub fn sources(&self) -> impl Iterator<Item = &Source> {
        self.sources.values()
    }

    pub fn add_source(&mut self, source: Source, or_replace: bool) -> Result<()> {
        if let Some(existing) = self.sources.get(&source.name)
            && or_replace
            && (existing.read_only || source.read_only)
        {
            return Err(EngineError::Invalid(format!(
                "Cannot add {} '{}': CREATE OR REPLACE is not supported on source {}s.",
                source.kind_name(),
                source.name,
                source.kind_name()
            )));
        }
        if let Some(existing) = self.sources.get(&source.name)
            && !(or_replace && existing.kind == source.kind)
        {
            return Err(EngineError::AlreadyExists {
                kind: source.kind_name(),
                name: source.name.clone(),
                existing: existing.kind_name(),
            });
        }
        self.sources.insert(source.name.clone(), source);
        Ok(())
    }

    pub fn remove_source(&mut self, name: &str) -> Option<Source> {
        self.sources.remove(name)
    }

    pub fn types(&self) -> impl Iterator<Item = (&String, &SqlType)> {
        self.types.iter()
    }

    pub fn add_type(&mut self, name: &str, ty: SqlType, if_not_exists: bool) -> Result<()> {
        if self.types.contains_key(name) {
            if if_not_exists {
                return Ok(());
            }
            return Err(EngineError::Invalid(format!(
                "Cannot register custom type '{name}' since it is already registered"
            )));
        }
        let ty = self.resolve(&ty)?;
        self.types.insert(name.to_string(), ty);
        Ok(())
    }

    pub fn drop_type(&mut self, name: &str, if_exists: bool) -> Result<()> {
        if self.types.remove(name).is_none() && !if_exists {
            return Err(EngineError::Invalid(format!("Type {name} does not exist")));
        }
        Ok(())
    }

    /// Replaces registered type names with the types they stand for.
    pub fn resolve(&self, ty: &SqlType) -> Result<SqlType> {
        Ok(match ty {
            SqlType::Custom(name) => self
                .types
                .get(&name.value)
                .cloned()
                .ok_or_else(|| EngineError::Invalid(format!("Unknown type: {}", name.value)))?,
            SqlType::Array(t) => SqlType::Array(Box::new(self.resolve(t)?)),
            SqlType::Map(k, v) => {
                SqlType::Map(Box::new(self.resolve(k)?), Box::new(self.resolve(v)?))
            }
            SqlType::Struct(fields) => SqlType::Struct(
                fields
                    .iter()
                    .map(|f| {
                        Ok(StructFieldType {
                            name: f.name.clone(),
                            ty: self.resolve(&f.ty)?,
                        })
                    })
                    .collect::<Result<_>>()?,
            ),
            other => other.clone(),
        })
    }
}
