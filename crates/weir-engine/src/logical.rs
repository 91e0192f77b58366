//! A query's logical plan: a tree of typed nodes (scan, join, filter, repartition,
//! aggregate, having, project, sink), each with its output columns and the role each
//! column plays (key, value, window bound). It is written in the user's terms — the
//! expressions as the query spells them, the columns as the sink names them — and EXPLAIN
//! prints it, root (the sink) first, above the physical pipeline that runs it
//! (`pipeline.rs`).

use std::fmt::Write as _;

use weir_format::Column;
use weir_sql::ast::{Emit, Query, SelectItem, SourceKind, SqlType};

use crate::catalog::{Catalog, Source};

/// What a column is to the rows of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Key,
    Value,
    WindowStart,
    WindowEnd,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PlanColumn {
    pub name: String,
    pub ty: SqlType,
    pub role: Role,
}

/// One step of a query, in the user's terms.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// Reads a stream or table's topic.
    Scan {
        source: String,
        topic: String,
        kind: SourceKind,
    },
    /// Joins its inputs' rows.
    Join {
        kind: weir_sql::ast::JoinKind,
        on: String,
        within: Option<String>,
    },
    Filter {
        predicate: String,
    },
    /// PARTITION BY: a new key from expressions.
    Repartition {
        by: Vec<String>,
    },
    /// GROUP BY, with the window rows fall in and when results are emitted.
    Aggregate {
        keys: Vec<String>,
        calls: Vec<String>,
        window: Option<String>,
        emit: Emit,
    },
    Having {
        predicate: String,
    },
    /// The select list.
    Project {
        items: Vec<String>,
    },
    /// Writes a stream or table's topic.
    Sink {
        name: String,
        topic: String,
        kind: SourceKind,
    },
    /// Rows go to the client that asked (a push or pull query).
    Client,
}

/// A node, its output columns, and the nodes it reads.
#[derive(Debug, Clone, PartialEq)]
pub struct LogicalPlan {
    pub node: Node,
    pub schema: Vec<PlanColumn>,
    pub inputs: Vec<LogicalPlan>,
}

impl LogicalPlan {
    /// Whether the node's rows are a table's changelog (an aggregation's, or read from
    /// tables alone) rather than a stream's events.
    pub fn is_changelog(&self) -> bool {
        match &self.node {
            Node::Aggregate { .. } => true,
            Node::Scan { kind, .. } => *kind == SourceKind::Table,
            // A source that is not there (a placeholder without inputs) reads nothing.
            _ => !self.inputs.is_empty() && self.inputs.iter().all(LogicalPlan::is_changelog),
        }
    }

    /// The relation the query's rows come from: its scan, or its joins.
    fn relation(&self) -> &LogicalPlan {
        match &self.node {
            Node::Scan { .. } | Node::Join { .. } => self,
            _ => self.inputs.first().map_or(self, LogicalPlan::relation),
        }
    }

    /// Whether any scan under the node reads windowed keys.
    fn reads_windows(&self) -> bool {
        match &self.node {
            Node::Scan { .. } => self.schema.iter().any(|c| c.role == Role::WindowStart),
            _ => self.inputs.iter().any(LogicalPlan::reads_windows),
        }
    }

    fn over(node: Node, schema: Vec<PlanColumn>, input: LogicalPlan) -> LogicalPlan {
        LogicalPlan {
            node,
            schema,
            inputs: vec![input],
        }
    }

    /// Same columns as the input (filters).
    fn keeping(node: Node, input: LogicalPlan) -> LogicalPlan {
        LogicalPlan {
            node,
            schema: input.schema.clone(),
            inputs: vec![input],
        }
    }

    /// The tree, one node a line, each input indented under the node that reads it.
    pub fn tree(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, 0);
        out.pop();
        out
    }

    fn write(&self, out: &mut String, depth: usize) {
        let _ = write!(out, "{}> [ {} ]", "  ".repeat(depth), self.title());
        let detail = self.detail();
        if !detail.is_empty() {
            let _ = write!(out, " {detail}");
        }
        let _ = writeln!(out, " | Schema: {}", schema_text(&self.schema));
        for input in &self.inputs {
            input.write(out, depth + 1);
        }
    }

    fn title(&self) -> &'static str {
        match &self.node {
            Node::Scan { .. } => "SOURCE",
            Node::Join { .. } => "JOIN",
            Node::Filter { .. } => "FILTER",
            Node::Repartition { .. } => "REPARTITION",
            Node::Aggregate { .. } => "AGGREGATE",
            Node::Having { .. } => "HAVING",
            Node::Project { .. } => "PROJECT",
            Node::Sink { .. } => "SINK",
            Node::Client => "CLIENT",
        }
    }

    fn detail(&self) -> String {
        match &self.node {
            Node::Scan {
                source,
                topic,
                kind,
            } => format!("{} {source} (topic '{topic}')", kind_word(*kind)),
            Node::Join { kind, on, within } => {
                let mut s = format!("{kind} ON {on}");
                if let Some(w) = within {
                    let _ = write!(s, " WITHIN {w}");
                }
                s
            }
            Node::Filter { predicate } | Node::Having { predicate } => predicate.clone(),
            Node::Repartition { by } => format!("BY {}", by.join(", ")),
            Node::Aggregate {
                keys,
                calls,
                window,
                emit,
            } => {
                let mut s = format!("GROUP BY {}", keys.join(", "));
                if let Some(w) = window {
                    let _ = write!(s, " WINDOW {w}");
                }
                let _ = write!(
                    s,
                    " CALLS {} EMIT {}",
                    calls.join(", "),
                    match emit {
                        Emit::Changes => "CHANGES",
                        Emit::Final => "FINAL",
                    }
                );
                s
            }
            Node::Project { items } => items.join(", "),
            Node::Sink { name, topic, kind } => {
                format!("{} {name} (topic '{topic}')", kind_word(*kind))
            }
            Node::Client => String::new(),
        }
    }
}

/// An expression as the query spells it (ksqlDB's syntax).
fn text(e: &weir_sql::ast::Expr) -> String {
    weir_sql::ast::fmt_expr(e).to_string()
}

fn kind_word(kind: SourceKind) -> &'static str {
    match kind {
        SourceKind::Stream => "STREAM",
        SourceKind::Table => "TABLE",
    }
}

fn schema_text(schema: &[PlanColumn]) -> String {
    schema
        .iter()
        .map(|c| {
            let role = match c.role {
                Role::Key => " KEY",
                Role::Value => "",
                Role::WindowStart => " WINDOW START",
                Role::WindowEnd => " WINDOW END",
            };
            format!("{} {}{role}", c.name, c.ty)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Key columns then value columns, then window bounds when `windowed`.
fn columns(keys: &[Column], values: &[Column], windowed: bool) -> Vec<PlanColumn> {
    let mut out: Vec<PlanColumn> = keys
        .iter()
        .map(|c| PlanColumn {
            name: c.name.clone(),
            ty: c.ty.clone(),
            role: Role::Key,
        })
        .collect();
    if windowed {
        out.extend(window_bounds());
    }
    out.extend(values.iter().map(|c| PlanColumn {
        name: c.name.clone(),
        ty: c.ty.clone(),
        role: Role::Value,
    }));
    out
}

fn window_bounds() -> [PlanColumn; 2] {
    [
        PlanColumn {
            name: crate::WINDOW_BOUNDS[0].into(),
            ty: SqlType::Bigint,
            role: Role::WindowStart,
        },
        PlanColumn {
            name: crate::WINDOW_BOUNDS[1].into(),
            ty: SqlType::Bigint,
            role: Role::WindowEnd,
        },
    ]
}

fn source_columns(s: &Source) -> Vec<PlanColumn> {
    columns(
        &s.layout.key_columns,
        &s.layout.value_columns,
        s.window.is_some(),
    )
}

fn scan(s: &Source) -> LogicalPlan {
    LogicalPlan {
        node: Node::Scan {
            source: s.name.clone(),
            topic: s.topic.clone(),
            kind: s.kind,
        },
        schema: source_columns(s),
        inputs: vec![],
    }
}

/// ksqlDB's refusals of `CREATE STREAM|TABLE (kind) AS SELECT`, as checks on the
/// query's nodes (`plan` built without a sink): the result must be what the statement
/// says it makes.
pub(crate) fn check_result_kind(plan: &LogicalPlan, kind: SourceKind) -> crate::Result<()> {
    match (kind, plan.is_changelog()) {
        (SourceKind::Table, false) => Err(crate::EngineError::Invalid(
            "Invalid result type. Your SELECT query produces a STREAM. Please use CREATE STREAM AS SELECT statement instead.".into(),
        )),
        (SourceKind::Stream, true) => Err(crate::EngineError::Invalid(
            "Invalid result type. Your SELECT query produces a TABLE. Please use CREATE TABLE AS SELECT statement instead.".into(),
        )),
        _ => Ok(()),
    }
}

/// Persistent queries do not read windowed tables.
pub(crate) fn check_no_windowed_table(plan: &LogicalPlan) -> crate::Result<()> {
    let relation = plan.relation();
    if relation.is_changelog() && relation.reads_windows() {
        return Err(crate::EngineError::Invalid(
            "KSQL does not support persistent queries on windowed tables.".into(),
        ));
    }
    Ok(())
}

/// The query's nodes alone (no types, no sink): what the checks above look at before
/// it is planned.
pub(crate) fn shape(query: &Query, catalog: &Catalog) -> LogicalPlan {
    build(Parts {
        query,
        catalog,
        relation: None,
        aggregate: None,
        output: (&[], &[], false),
        sink: None,
    })
}

/// What planning found of a GROUP BY: its keys' types, and each aggregate call as the
/// query writes it with its result type.
pub(crate) struct Grouping {
    pub key_types: Vec<SqlType>,
    pub calls: Vec<(String, SqlType)>,
}

/// What the logical plan is built from: the query as written and what planning found.
pub(crate) struct Parts<'a> {
    pub query: &'a Query,
    pub catalog: &'a Catalog,
    /// A join's relation: the joined rows' columns.
    pub relation: Option<&'a Source>,
    pub aggregate: Option<Grouping>,
    /// The select list's columns (keys, values) and whether its rows carry a window.
    pub output: (&'a [Column], &'a [Column], bool),
    /// Where the rows go; `None`: a client.
    pub sink: Option<&'a Source>,
}

/// The logical plan of a planned query.
pub(crate) fn build(p: Parts<'_>) -> LogicalPlan {
    let q = p.query;
    let find = |name: &str| p.catalog.source(name);
    // The scans, joined left to right.
    let mut plan = match find(&q.from.source.name.value) {
        Some(s) => scan(s),
        None => LogicalPlan {
            node: Node::Client,
            schema: vec![],
            inputs: vec![],
        },
    };
    for (i, j) in q.from.joins.iter().enumerate() {
        let right = find(&j.source.name.value).map(scan).unwrap_or(LogicalPlan {
            node: Node::Client,
            schema: vec![],
            inputs: vec![],
        });
        let last = i + 1 == q.from.joins.len();
        let schema = match p.relation {
            Some(r) if last => source_columns(r),
            _ => plan.schema.iter().chain(&right.schema).cloned().collect(),
        };
        plan = LogicalPlan {
            node: Node::Join {
                kind: j.kind,
                on: text(&j.on),
                within: j.within.as_ref().map(|w| w.to_string()),
            },
            schema,
            inputs: vec![plan, right],
        };
    }
    if let Some(w) = &q.where_clause {
        plan = LogicalPlan::keeping(Node::Filter { predicate: text(w) }, plan);
    }
    if let Some(by) = &q.partition_by {
        plan = LogicalPlan::keeping(
            Node::Repartition {
                by: by.iter().map(text).collect(),
            },
            plan,
        );
    }
    if let Some(group_by) = &q.group_by {
        let empty = Grouping {
            key_types: Vec::new(),
            calls: Vec::new(),
        };
        let Grouping { key_types, calls } = p.aggregate.as_ref().unwrap_or(&empty);
        let keys: Vec<String> = group_by.iter().map(text).collect();
        let mut schema: Vec<PlanColumn> = keys
            .iter()
            .zip(key_types)
            .map(|(k, t)| PlanColumn {
                name: k.clone(),
                ty: t.clone(),
                role: Role::Key,
            })
            .collect();
        if q.window.is_some() {
            schema.extend(window_bounds());
        }
        schema.extend(calls.iter().map(|(c, t)| PlanColumn {
            name: c.clone(),
            ty: t.clone(),
            role: Role::Value,
        }));
        plan = LogicalPlan::over(
            Node::Aggregate {
                keys,
                calls: calls.iter().map(|(c, _)| c.clone()).collect(),
                window: q.window.as_ref().map(|w| w.to_string()),
                emit: q.emit.unwrap_or(Emit::Changes),
            },
            schema,
            plan,
        );
        if let Some(h) = &q.having {
            plan = LogicalPlan::keeping(Node::Having { predicate: text(h) }, plan);
        }
    }
    let (keys, values, windowed) = p.output;
    plan = LogicalPlan::over(
        Node::Project {
            items: q
                .select
                .iter()
                .map(|i| match i {
                    SelectItem::Expr { expr, alias } => match alias {
                        Some(a) => format!("{} AS {}", text(expr), weir_sql::ast::fmt_ident(a)),
                        None => text(expr),
                    },
                    other => other.to_string(),
                })
                .collect(),
        },
        columns(keys, values, windowed),
        plan,
    );
    match p.sink {
        Some(s) => LogicalPlan::over(
            Node::Sink {
                name: s.name.clone(),
                topic: s.topic.clone(),
                kind: s.kind,
            },
            source_columns(s),
            plan,
        ),
        None => LogicalPlan::keeping(Node::Client, plan),
    }
}
