//! The engine's answers to statements that look rather than change: SHOW/LIST, DESCRIBE,
//! DESCRIBE FUNCTION and EXPLAIN; and the start of push queries and PRINT.

use std::sync::Arc;

use weir_format::{Column, HeaderColumn, PSEUDO_COLUMNS};
use weir_sql::ast::{DescribeTarget, ExplainTarget, ListKind, Print, Query, Statement};

use crate::catalog::Source;
use crate::error::{EngineError, Result};
use crate::meta::*;
use crate::pipeline::{OnError, Pipeline};

use crate::push::{
    CLIENT_BUFFER_ROWS, MAX_CLIENT_BUFFER_ROWS, PushHandle, PushKind, PushQuery, start_offsets,
};
use crate::types::sql_type_of;
use crate::{Engine, Outcome, QueryView};

fn source_info(s: &Source) -> SourceInfo {
    SourceInfo {
        name: s.name.clone(),
        kind: s.kind_name().to_ascii_uppercase(),
        topic: s.topic.clone(),
        key_format: s.layout.key_format.format.name().to_string(),
        value_format: s.layout.value_format.format.name().to_string(),
        is_windowed: s.window.is_some(),
        window_type: s.window.map(|w| w.type_name().to_string()),
    }
}

fn fields(keys: &[Column], values: &[Column], headers: &[HeaderColumn]) -> Vec<FieldInfo> {
    let field = |c: &Column, kind: Option<&str>, header_key: Option<&String>| FieldInfo {
        name: c.name.clone(),
        ty: c.ty.to_string(),
        key: kind.map(str::to_string),
        header_key: header_key.cloned(),
        schema: schema_info(&c.ty),
    };
    keys.iter()
        .map(|c| field(c, Some("KEY"), None))
        .chain(values.iter().map(|c| field(c, None, None)))
        .chain(
            headers
                .iter()
                .map(|h| field(&h.column, Some("HEADER"), h.key.as_ref())),
        )
        .collect()
}

pub(crate) fn summary(q: &QueryView) -> QuerySummary {
    QuerySummary {
        id: q.id.clone(),
        query_string: q.statement.clone(),
        sinks: vec![q.sink.clone()],
        sink_kafka_topics: vec![q.sink_topic.clone()],
        query_type: "PERSISTENT".into(),
        state: q.state().into(),
    }
}

impl Engine {
    pub(crate) fn list(&self, what: ListKind) -> Result<Outcome> {
        let sources = |kind: &str| -> Vec<SourceInfo> {
            self.catalog
                .sources()
                .filter(|s| s.kind_name().eq_ignore_ascii_case(kind))
                .map(source_info)
                .collect()
        };
        Ok(Outcome::Listing(match what {
            ListKind::Streams => Listing::Streams(sources("stream")),
            ListKind::Tables => Listing::Tables(sources("table")),
            ListKind::Topics { all } => Listing::Topics(
                self.log
                    .list_topics()?
                    .into_iter()
                    // Internal topics (the command log, checkpoints) only with ALL.
                    .filter(|t| all || !t.name.starts_with("_weir"))
                    .map(|t| TopicSummary {
                        name: t.name,
                        partitions: t.config.partitions,
                        replicas: t.config.replicas,
                    })
                    .collect(),
            ),
            ListKind::Queries => {
                Listing::Queries(
                    self.queries()
                        .map(|q| summary(&q))
                        .chain(self.push_queries.iter().filter(|(_, p)| !p.ended()).map(
                            |(id, p)| QuerySummary {
                                id: id.clone(),
                                query_string: p.statement.clone(),
                                sinks: vec![],
                                sink_kafka_topics: vec![],
                                query_type: "PUSH".into(),
                                state: "RUNNING".into(),
                            },
                        ))
                        .collect(),
                )
            }
            // The session's properties, and the defaults of those it did not set.
            ListKind::Properties => Listing::Properties(
                self.properties
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .chain(
                        crate::settings::SETTINGS
                            .iter()
                            .filter(|s| {
                                s.scope == crate::settings::Scope::Session
                                    && !s.default.is_empty()
                                    && !self.properties.contains_key(s.key)
                            })
                            .map(|s| (s.key.to_string(), s.default.to_string())),
                    )
                    .collect(),
            ),
            ListKind::Functions => Listing::Functions(self.function_list()),
            ListKind::Types => Listing::Types(
                self.catalog
                    .types()
                    .map(|(n, t)| TypeInfo {
                        name: n.clone(),
                        ty: t.to_string(),
                        schema: schema_info(t),
                    })
                    .collect(),
            ),
            ListKind::Variables => {
                return Err(EngineError::Unsupported(
                    "variables (DEFINE) in the engine".into(),
                ));
            }
        }))
    }

    /// Whether a built-in function resolves here (is one the engine can run).
    pub(crate) fn runs(&self, b: &crate::ksql_functions::Builtin) -> bool {
        use crate::ksql_functions::Kind;
        use datafusion::sql::planner::ContextProvider;
        match b.kind {
            Kind::Aggregate | Kind::Table => true,
            Kind::Scalar => {
                b.name == "AS_VALUE"
                    || self.functions.scalar(b.name).is_some()
                    || self.functions.get_higher_order_meta(b.name).is_some()
            }
        }
    }

    /// ksqlDB's functions this engine runs, and the plugins' (SHOW FUNCTIONS).
    fn function_list(&self) -> Vec<FunctionSummary> {
        let mut out: Vec<FunctionSummary> = crate::ksql_functions::BUILTINS
            .iter()
            .filter(|b| self.runs(b))
            .filter(|b| self.functions.plugin(b.name).is_none())
            .map(|b| FunctionSummary {
                name: b.name.to_string(),
                kind: b.kind.as_str().into(),
                category: b.category.into(),
            })
            .chain(self.functions.plugins().map(|p| FunctionSummary {
                name: p.name.clone(),
                kind: p.kind.clone(),
                category: format!("PLUGIN ({})", p.library),
            }))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out.dedup_by(|a, b| a.name == b.name);
        out
    }

    pub(crate) fn describe_function(&self, name: &str) -> Result<Outcome> {
        if let Some(p) = self.functions.plugin(name) {
            return Ok(Outcome::FunctionDescribed(FunctionDescription {
                name: p.name.clone(),
                kind: p.kind.clone(),
                description: p.description.clone(),
                syntax: p
                    .signatures
                    .iter()
                    .map(|s| format!("{}{s}", p.name))
                    .collect::<Vec<_>>()
                    .join("\n"),
                signatures: p.signatures.clone(),
                author: p.author.clone(),
                version: p.version.clone(),
                path: format!(
                    "{} (load #{}; queries started before a reload keep the version they started with)",
                    p.path, p.generation
                ),
            }));
        }
        let Some(b) = crate::ksql_functions::find(name).filter(|b| self.runs(b)) else {
            return Err(EngineError::Invalid(format!(
                "Can't find any functions with the name '{}'",
                name.to_ascii_uppercase()
            )));
        };
        Ok(Outcome::FunctionDescribed(FunctionDescription {
            name: b.name.to_string(),
            kind: b.kind.as_str().into(),
            description: b.description.into(),
            syntax: String::new(),
            signatures: vec![],
            author: "Confluent".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            path: "internal".into(),
        }))
    }

    fn describe_source(&self, s: &Source, extended: bool) -> Result<SourceDescription> {
        let (partitions, replication) = self
            .log
            .topic(&s.topic)?
            .map(|t| (t.config.partitions, t.config.replicas))
            .unwrap_or((0, 0));
        // One pass, one query locked at a time.
        let (mut writes, mut reads, mut total) = (Vec::new(), Vec::new(), QueryStats::default());
        for q in self.queries() {
            if q.sink == s.name {
                writes.push(summary(&q));
                total.consumed += q.stats.consumed;
                total.produced += q.stats.produced;
                total.errors += q.stats.errors;
                total.late += q.late;
                total.last_message_ms = total.last_message_ms.max(q.stats.last_message_ms);
            }
            if q.source == s.name {
                reads.push(summary(&q));
            }
        }
        let statistics = extended.then_some(total);
        // ROWTIME and the other pseudo columns are not part of a source's schema.
        let values: Vec<Column> = s
            .layout
            .value_columns
            .iter()
            .filter(|c| !PSEUDO_COLUMNS.contains(&c.name.as_str()))
            .cloned()
            .collect();
        Ok(SourceDescription {
            source: source_info(s),
            fields: fields(&s.layout.key_columns, &values, &s.layout.header_columns),
            statement: s.statement.clone(),
            timestamp: s.timestamp_column.clone().unwrap_or_default(),
            read_queries: reads,
            write_queries: writes,
            partitions,
            replication,
            extended,
            statistics,
        })
    }

    pub(crate) fn describe(&self, target: &DescribeTarget, extended: bool) -> Result<Outcome> {
        let kind = match target {
            DescribeTarget::Source(name) => {
                let s = self.catalog.source(&name.value).ok_or_else(|| {
                    EngineError::Invalid(format!(
                        "Could not find STREAM/TABLE '{}' in the Metastore",
                        name.value
                    ))
                })?;
                return Ok(Outcome::Described(vec![self.describe_source(s, extended)?]));
            }
            DescribeTarget::Streams => "stream",
            DescribeTarget::Tables => "table",
        };
        let out = self
            .catalog
            .sources()
            .filter(|s| s.kind_name() == kind)
            .map(|s| self.describe_source(s, extended))
            .collect::<Result<_>>()?;
        Ok(Outcome::Described(out))
    }

    /// SHOW QUERIES EXTENDED: each persistent query as EXPLAIN describes it.
    pub(crate) fn explain_queries(&self) -> Result<Outcome> {
        let ids: Vec<String> = self.queries().map(|q| q.id.clone()).collect();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Outcome::Explained(d) = self.explain(&ExplainTarget::QueryId(
                weir_sql::ast::Ident::with_quote('`', id),
            ))? {
                out.push(d);
            }
        }
        Ok(Outcome::QueriesExplained(out))
    }

    pub(crate) fn explain(&self, target: &ExplainTarget) -> Result<Outcome> {
        match target {
            ExplainTarget::QueryId(id) => {
                let q = self
                    .queries()
                    .find(|q| q.id.eq_ignore_ascii_case(&id.value))
                    .ok_or_else(|| {
                        EngineError::Invalid(format!("Query with id:{} does not exist", id.value))
                    })?;
                Ok(Outcome::Explained(QueryDescription {
                    id: q.id.clone(),
                    statement_text: q.statement.clone(),
                    fields: fields(
                        &q.sink_layout.key_columns,
                        &q.sink_layout.value_columns,
                        &[],
                    ),
                    sources: q.sources.clone(),
                    sinks: vec![q.sink.clone()],
                    window_type: q.window_type.map(String::from),
                    execution_plan: q.execution_plan.clone(),
                    state: Some(q.state().into()),
                    statistics: Some(QueryStats {
                        late: q.late,
                        ..q.stats
                    }),
                    errors: q.error.iter().cloned().collect(),
                }))
            }
            ExplainTarget::Statement(stmt) => {
                let query = match stmt.as_ref() {
                    Statement::Query(q) => q.as_ref(),
                    Statement::CreateAsSelect(c) => &c.query,
                    Statement::InsertInto { query, .. } => query.as_ref(),
                    other => {
                        return Err(EngineError::Invalid(format!(
                            "EXPLAIN supports queries, not {} statements",
                            other.kind()
                        )));
                    }
                };
                // Planned as the statement would run: joins, the stateless plan, GROUP BY.
                let to_sink = !matches!(stmt.as_ref(), Statement::Query(_));
                let relation = self.relation(query)?;
                let (plan, aggregate) = self.plan_over(&relation, to_sink)?;
                let crate::Relation { source, join, .. } = relation;
                let join = join.map(Box::new);
                let windowed = match &aggregate {
                    Some(a) => a.key_window().is_some(),
                    None => plan.window_bounds.is_some(),
                };
                // CREATE ... AS SELECT: the sink it would create.
                let sink = match stmt.as_ref() {
                    Statement::CreateAsSelect(c) => Some(Source {
                        name: c.name.value.clone(),
                        kind: c.kind,
                        topic: c
                            .properties
                            .get("KAFKA_TOPIC")
                            .map(|t| t.as_text())
                            .unwrap_or_else(|| c.name.value.clone()),
                        layout: plan.output_layout(&source.layout),
                        timestamp_column: None,
                        timestamp_format: None,
                        statement: stmt.to_string(),
                        written_by: None,
                        read_only: false,
                        window: aggregate
                            .as_ref()
                            .and_then(|a| a.key_window())
                            .or(plan.window_bounds.and(source.window)),
                    }),
                    Statement::InsertInto { target, .. } => {
                        self.catalog.source(&target.value).cloned()
                    }
                    _ => None,
                };
                let logical = crate::logical::build(crate::logical::Parts {
                    query,
                    catalog: &self.catalog,
                    relation: join.as_ref().map(|_| &source),
                    aggregate: aggregate.as_ref().map(|a| a.describe()),
                    output: (
                        &plan.output_layout_columns.0,
                        &plan.output_layout_columns.1,
                        windowed,
                    ),
                    sink: sink.as_ref(),
                });
                let fields = fields(
                    &plan.output_layout_columns.0,
                    &plan.output_layout_columns.1,
                    &[],
                );
                let pipeline = Pipeline::assemble(
                    &source,
                    join,
                    plan,
                    aggregate,
                    Vec::new(),
                    OnError::default(),
                );
                Ok(Outcome::Explained(QueryDescription {
                    id: String::new(),
                    statement_text: stmt.to_string(),
                    fields,
                    sources: pipeline.sources(),
                    sinks: sink.iter().map(|s| s.name.clone()).collect(),
                    window_type: pipeline.window_type().map(String::from),
                    execution_plan: pipeline
                        .explain(&logical, sink.as_ref().map(|s| s.topic.as_str())),
                    state: None,
                    statistics: None,
                    errors: vec![],
                }))
            }
        }
    }

    /// Whether new queries start at the beginning of their source (`auto.offset.reset`,
    /// from the request's properties, else the session's).
    pub(crate) fn earliest(&self, overrides: &std::collections::BTreeMap<String, String>) -> bool {
        let get = |props| crate::settings::streams_property(props, "auto.offset.reset");
        get(overrides)
            .or_else(|| get(&self.properties))
            .is_some_and(|v| v.eq_ignore_ascii_case("earliest"))
    }

    fn register_push(
        &mut self,
        statement: String,
        topic: String,
        kind: PushKind,
        columns: Vec<(String, weir_sql::ast::SqlType)>,
        limit: Option<u64>,
    ) -> Result<Outcome> {
        self.push_counter += 1;
        let id = format!(
            "transient_{}_{}",
            topic.replace(|c: char| !c.is_ascii_alphanumeric(), "_"),
            self.push_counter
        );
        // `weir.push.buffer.rows`: how far a client may fall behind before its query ends.
        let buffer = self
            .properties
            .get("weir.push.buffer.rows")
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|n| *n > 0)
            .unwrap_or(CLIENT_BUFFER_ROWS);
        // A client may not make the server hold more than this for it.
        if buffer > MAX_CLIENT_BUFFER_ROWS {
            return Err(EngineError::Invalid(format!(
                "weir.push.buffer.rows is {buffer}: at most {MAX_CLIENT_BUFFER_ROWS} rows may wait for a client"
            )));
        }
        let (sender, rows) = flume::bounded(buffer + 1);
        let alive = Arc::new(());
        let ended = Arc::new(std::sync::atomic::AtomicBool::new(false));
        self.push_queries.insert(
            id.clone(),
            crate::PushEntry {
                statement,
                query: Arc::new(std::sync::Mutex::new(PushQuery {
                    id: id.clone(),
                    topic,
                    kind,
                    buffer,
                    full_since: None,
                    sender,
                    limit,
                    sent: 0,
                    alive: alive.clone(),
                    ended: ended.clone(),
                })),
                ended,
            },
        );
        Ok(Outcome::Push(PushHandle {
            query_id: id,
            columns,
            rows,
            _alive: alive,
        }))
    }

    /// Starts `SELECT ... EMIT CHANGES`: its rows arrive on the returned handle.
    /// `overrides` are per-request properties (`auto.offset.reset`).
    pub fn start_push_query(
        &mut self,
        query: &Query,
        overrides: &std::collections::BTreeMap<String, String>,
    ) -> Result<Outcome> {
        if query.emit.is_none() {
            return self.pull_query(query);
        }
        let earliest = self.earliest(overrides);
        // Planned as for a persistent query; a join's inputs start where this query does.
        let mut relation = self.relation(query)?;
        if let Some(j) = relation.join.as_mut() {
            for input in &mut j.inputs {
                input.offsets = start_offsets(self.log.as_ref(), &input.source.topic, earliest)?;
            }
        }
        // GROUP BY: the client gets each group's changes (with the window's bounds).
        let (plan, aggregate) = self.plan_over(&relation, false)?;
        let crate::Relation {
            source,
            query,
            join,
            ..
        } = relation;
        let join = join.map(Box::new);
        let query = &query;
        let placed = match &aggregate {
            Some(a) => a.client_columns()?,
            None => plan
                .output_schema
                .fields()
                .iter()
                .enumerate()
                .skip(2)
                // The hidden window columns carry a windowed source's bounds to a sink's
                // key; a client sees the bounds it selects (as WINDOWSTART/WINDOWEND).
                .filter(|(_, f)| !crate::aggregate::WINDOW_COLUMNS.contains(&f.name().as_str()))
                .map(|(i, f)| Ok((f.name().clone(), sql_type_of(f.data_type())?, i)))
                .collect::<Result<Vec<_>>>()?,
        };
        let columns: Vec<(String, weir_sql::ast::SqlType)> = placed
            .iter()
            .map(|(n, t, _)| (n.clone(), t.clone()))
            .collect();
        // The pipeline a persistent query would run, the client its sink.
        let offsets = match join {
            Some(_) => Vec::new(),
            None => start_offsets(self.log.as_ref(), &source.topic, earliest)?,
        };
        let kind = PushKind::Select {
            pipeline: Box::new(Pipeline::assemble(
                &source,
                join,
                plan,
                aggregate,
                offsets,
                OnError {
                    stop: false,
                    warnings: self.functions.warning_source,
                },
            )),
            types: columns.iter().map(|(_, t)| t.clone()).collect(),
            at: placed.iter().map(|(_, _, i)| *i).collect(),
        };
        let stmt = Statement::Query(Box::new(query.clone())).to_string();
        self.register_push(stmt, source.topic.clone(), kind, columns, query.limit)
    }

    /// Starts `PRINT topic`: one text line per record.
    pub(crate) fn start_print(&mut self, p: &Print) -> Result<Outcome> {
        // An unquoted name may be written in any case: match it to an existing topic.
        let topics = self.log.list_topics()?;
        let topic = topics
            .iter()
            .find(|t| t.name == p.topic.value)
            .or_else(|| topics.iter().find(|t| t.name.eq_ignore_ascii_case(&p.topic.value)))
            .map(|t| t.name.clone())
            .ok_or_else(|| {
                EngineError::Invalid(format!(
                    "Could not find topic '{}', or the KSQL user does not have permissions to list the topic.",
                    p.topic.value
                ))
            })?;
        let kind = PushKind::Print {
            offsets: start_offsets(self.log.as_ref(), &topic, p.from_beginning)?,
            interval: p.interval.unwrap_or(1).max(1),
            seen: 0,
        };
        let columns = vec![("RECORD".to_string(), weir_sql::ast::SqlType::String)];
        let stmt = Statement::Print(p.clone()).to_string();
        self.register_push(stmt, topic, kind, columns, p.limit)
    }

    /// Ends a push query (the client closed it). False if there was none of that id.
    pub fn close_push_query(&mut self, id: &str) -> bool {
        self.push_queries.remove(id).is_some()
    }

    /// Whether a push query of this id is running.
    pub fn has_push_query(&self, id: &str) -> bool {
        self.push_queries.get(id).is_some_and(|e| !e.ended())
    }
}
