//! The typed AST of ksqlDB's statements. Every node prints back to canonical ksqlDB SQL
//! through `Display` (DESCRIBE and SHOW QUERIES show statements this way), and printing
//! then parsing gives the same tree back.

mod expr;
mod query;
mod types;

use std::fmt;

pub(crate) use expr::chains_with;
pub use expr::fmt_expr;
pub use query::{
    AliasedSource, Duration, Emit, Join, JoinKind, Query, Relation, SelectItem, TimeUnit,
    WindowExpr, WindowKind, WithinExpr,
};
pub use sqlparser::ast::{Expr, Ident};
pub use types::{SqlType, StructFieldType};

/// One ksqlDB statement.
#[derive(Debug, Clone, PartialEq)]
pub enum Statement {
    /// `CREATE [OR REPLACE] [SOURCE] STREAM|TABLE [IF NOT EXISTS] name [(columns)] [WITH (...)]`
    CreateSource(CreateSource),
    /// `CREATE [OR REPLACE] STREAM|TABLE [IF NOT EXISTS] name [WITH (...)] AS SELECT ...`
    CreateAsSelect(CreateAsSelect),
    /// `INSERT INTO name [WITH (...)] SELECT ...`
    InsertInto {
        target: Ident,
        properties: Properties,
        query: Box<Query>,
    },
    /// `INSERT INTO name [(columns)] VALUES (...)`
    InsertValues {
        target: Ident,
        columns: Vec<Ident>,
        values: Vec<Expr>,
    },
    /// A push (`EMIT CHANGES`) or pull query.
    Query(Box<Query>),
    /// `SHOW|LIST ...`
    List { what: ListKind, extended: bool },
    /// `DESCRIBE name [EXTENDED]`, `DESCRIBE STREAMS|TABLES [EXTENDED]`
    Describe {
        target: DescribeTarget,
        extended: bool,
    },
    /// `DESCRIBE FUNCTION name`
    DescribeFunction { name: Ident },
    /// `EXPLAIN statement` or `EXPLAIN query_id`
    Explain(ExplainTarget),
    /// `TERMINATE query_id | ALL`
    Terminate(QueryTarget),
    /// `PAUSE query_id | ALL`
    Pause(QueryTarget),
    /// `RESUME query_id | ALL`
    Resume(QueryTarget),
    /// `DROP STREAM|TABLE [IF EXISTS] name [DELETE TOPIC]`
    DropSource {
        kind: SourceKind,
        if_exists: bool,
        name: Ident,
        delete_topic: bool,
    },
    /// `PRINT topic [FROM BEGINNING] [INTERVAL n] [LIMIT n]`
    Print(Print),
    /// `SET 'name' = 'value'`
    SetProperty { name: String, value: String },
    /// `UNSET 'name'`
    UnsetProperty { name: String },
    /// `DEFINE name = 'value'`
    DefineVariable { name: Ident, value: String },
    /// `UNDEFINE name`
    UndefineVariable { name: Ident },
    /// `RUN SCRIPT 'file.sql'` (a REPL command: the server refuses it, as ksqlDB's does)
    RunScript { path: String },
    /// `ASSERT [NOT EXISTS] TOPIC name [WITH (...)] [TIMEOUT n unit]`, `ASSERT [NOT
    /// EXISTS] SCHEMA [SUBJECT name] [ID n] [TIMEOUT n unit]`, and `ASSERT [NOT EXISTS]
    /// STREAM | TABLE name [TIMEOUT n unit]`.
    Assert(Assert),
    /// `CREATE TYPE [IF NOT EXISTS] name AS type`
    CreateType {
        if_not_exists: bool,
        name: Ident,
        ty: SqlType,
    },
    /// `DROP TYPE [IF EXISTS] name`
    DropType { if_exists: bool, name: Ident },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceKind {
    Stream,
    Table,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CreateSource {
    pub kind: SourceKind,
    pub or_replace: bool,
    /// `CREATE SOURCE ...`: a read-only source (a table materialized for pull queries).
    pub is_source: bool,
    pub if_not_exists: bool,
    pub name: Ident,
    pub columns: Vec<ColumnDef>,
    pub properties: Properties,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CreateAsSelect {
    pub kind: SourceKind,
    pub or_replace: bool,
    pub if_not_exists: bool,
    pub name: Ident,
    pub properties: Properties,
    pub query: Box<Query>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnDef {
    pub name: Ident,
    pub ty: SqlType,
    pub constraint: ColumnConstraint,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnConstraint {
    None,
    /// `KEY`: a stream's key column.
    Key,
    /// `PRIMARY KEY`: a table's key column.
    PrimaryKey,
    /// `HEADERS`: all record headers.
    Headers,
    /// `HEADER('name')`: one record header.
    Header(String),
}

/// `WITH (NAME = value, ...)`. Names are upper-cased: ksqlDB's properties are
/// case-insensitive.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Properties(pub Vec<(String, Literal)>);

impl Properties {
    pub fn get(&self, name: &str) -> Option<&Literal> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A property value.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    String(String),
    /// Kept as written so that `1.50` stays `1.50`.
    Number(String),
    Boolean(bool),
}

impl Literal {
    /// The value as text, as ksqlDB reads most properties.
    pub fn as_text(&self) -> String {
        match self {
            Literal::String(s) | Literal::Number(s) => s.clone(),
            Literal::Boolean(b) => b.to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    Streams,
    Tables,
    /// `[ALL] TOPICS`: `all` also lists internal topics.
    Topics {
        all: bool,
    },
    Queries,
    Properties,
    Functions,
    Types,
    Variables,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DescribeTarget {
    Source(Ident),
    Streams,
    Tables,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExplainTarget {
    Statement(Box<Statement>),
    QueryId(Ident),
}

#[derive(Debug, Clone, PartialEq)]
pub enum QueryTarget {
    All,
    Query(Ident),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Print {
    /// The topic as written: quoted names keep their case.
    pub topic: Ident,
    pub from_beginning: bool,
    /// Print every n-th record.
    pub interval: Option<u64>,
    pub limit: Option<u64>,
}

impl Statement {
    /// A short name for the statement's form, e.g. `CREATE STREAM AS SELECT`.
    pub fn kind(&self) -> &'static str {
        match self {
            Statement::CreateSource(c) => match c.kind {
                SourceKind::Stream => "CREATE STREAM",
                SourceKind::Table => "CREATE TABLE",
            },
            Statement::CreateAsSelect(c) => match c.kind {
                SourceKind::Stream => "CREATE STREAM AS SELECT",
                SourceKind::Table => "CREATE TABLE AS SELECT",
            },
            Statement::InsertInto { .. } => "INSERT INTO",
            Statement::InsertValues { .. } => "INSERT VALUES",
            Statement::Query(_) => "SELECT",
            Statement::List { what, .. } => match what {
                ListKind::Streams => "SHOW STREAMS",
                ListKind::Tables => "SHOW TABLES",
                ListKind::Topics { .. } => "SHOW TOPICS",
                ListKind::Queries => "SHOW QUERIES",
                ListKind::Properties => "SHOW PROPERTIES",
                ListKind::Functions => "SHOW FUNCTIONS",
                ListKind::Types => "SHOW TYPES",
                ListKind::Variables => "SHOW VARIABLES",
            },
            Statement::Describe { .. } => "DESCRIBE",
            Statement::DescribeFunction { .. } => "DESCRIBE FUNCTION",
            Statement::Explain(_) => "EXPLAIN",
            Statement::Terminate(_) => "TERMINATE",
            Statement::Pause(_) => "PAUSE",
            Statement::Resume(_) => "RESUME",
            Statement::DropSource {
                kind: SourceKind::Stream,
                ..
            } => "DROP STREAM",
            Statement::DropSource {
                kind: SourceKind::Table,
                ..
            } => "DROP TABLE",
            Statement::Print(_) => "PRINT",
            Statement::SetProperty { .. } => "SET",
            Statement::UnsetProperty { .. } => "UNSET",
            Statement::DefineVariable { .. } => "DEFINE",
            Statement::UndefineVariable { .. } => "UNDEFINE",
            Statement::RunScript { .. } => "RUN SCRIPT",
            Statement::Assert(a) => match &a.what {
                AssertWhat::Topic { .. } => "ASSERT TOPIC",
                AssertWhat::Schema { .. } => "ASSERT SCHEMA",
                AssertWhat::Source {
                    kind: SourceKind::Stream,
                    ..
                } => "ASSERT STREAM",
                AssertWhat::Source {
                    kind: SourceKind::Table,
                    ..
                } => "ASSERT TABLE",
            },
            Statement::CreateType { .. } => "CREATE TYPE",
            Statement::DropType { .. } => "DROP TYPE",
        }
    }
}

/// Prints an identifier as ksqlDB reads it back: quoted identifiers in back-quotes.
pub fn fmt_ident(ident: &Ident) -> impl fmt::Display + '_ {
    struct D<'a>(&'a Ident);
    impl fmt::Display for D<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self.0.quote_style {
                Some(_) => write!(f, "`{}`", self.0.value.replace('`', "``")),
                None => f.write_str(&self.0.value),
            }
        }
    }
    D(ident)
}

/// A string literal with ksqlDB's quoting (`'` doubled).
pub(crate) fn fmt_string(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

pub(crate) fn comma_list<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SourceKind::Stream => "STREAM",
            SourceKind::Table => "TABLE",
        })
    }
}

/// An ASSERT statement: what must (or, with NOT EXISTS, must not) exist, waited for up
/// to the timeout.
#[derive(Debug, Clone, PartialEq)]
pub struct Assert {
    pub not_exists: bool,
    pub what: AssertWhat,
    pub timeout: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AssertWhat {
    /// A topic, with the partitions and replicas WITH names.
    Topic { name: Ident, properties: Properties },
    /// A schema-registry subject or schema id.
    Schema {
        subject: Option<Ident>,
        id: Option<u64>,
    },
    /// A stream or table of the catalog.
    Source { kind: SourceKind, name: Ident },
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::String(s) => f.write_str(&fmt_string(s)),
            Literal::Number(n) => f.write_str(n),
            Literal::Boolean(true) => f.write_str("true"),
            Literal::Boolean(false) => f.write_str("false"),
        }
    }
}

impl fmt::Display for Properties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let items: Vec<String> = self.0.iter().map(|(k, v)| format!("{k}={v}")).collect();
        write!(f, "WITH ({})", items.join(", "))
    }
}

impl fmt::Display for ColumnDef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", fmt_ident(&self.name), self.ty)?;
        match &self.constraint {
            ColumnConstraint::None => Ok(()),
            ColumnConstraint::Key => f.write_str(" KEY"),
            ColumnConstraint::PrimaryKey => f.write_str(" PRIMARY KEY"),
            ColumnConstraint::Headers => f.write_str(" HEADERS"),
            ColumnConstraint::Header(k) => write!(f, " HEADER({})", fmt_string(k)),
        }
    }
}

impl fmt::Display for QueryTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueryTarget::All => f.write_str("ALL"),
            QueryTarget::Query(id) => write!(f, "{}", fmt_ident(id)),
        }
    }
}

fn create_head(
    f: &mut fmt::Formatter<'_>,
    or_replace: bool,
    is_source: bool,
    kind: SourceKind,
    if_not_exists: bool,
    name: &Ident,
) -> fmt::Result {
    f.write_str("CREATE ")?;
    if or_replace {
        f.write_str("OR REPLACE ")?;
    }
    if is_source {
        f.write_str("SOURCE ")?;
    }
    write!(f, "{kind} ")?;
    if if_not_exists {
        f.write_str("IF NOT EXISTS ")?;
    }
    write!(f, "{}", fmt_ident(name))
}

impl fmt::Display for Statement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Statement::CreateSource(c) => {
                create_head(
                    f,
                    c.or_replace,
                    c.is_source,
                    c.kind,
                    c.if_not_exists,
                    &c.name,
                )?;
                if !c.columns.is_empty() {
                    write!(f, " ({})", comma_list(&c.columns))?;
                }
                if !c.properties.is_empty() {
                    write!(f, " {}", c.properties)?;
                }
                Ok(())
            }
            Statement::CreateAsSelect(c) => {
                create_head(f, c.or_replace, false, c.kind, c.if_not_exists, &c.name)?;
                if !c.properties.is_empty() {
                    write!(f, " {}", c.properties)?;
                }
                write!(f, " AS {}", c.query)
            }
            Statement::InsertInto {
                target,
                properties,
                query,
            } => {
                write!(f, "INSERT INTO {}", fmt_ident(target))?;
                if !properties.is_empty() {
                    write!(f, " {properties}")?;
                }
                write!(f, " {query}")
            }
            Statement::InsertValues {
                target,
                columns,
                values,
            } => {
                write!(f, "INSERT INTO {}", fmt_ident(target))?;
                if !columns.is_empty() {
                    let cols: Vec<String> =
                        columns.iter().map(|c| fmt_ident(c).to_string()).collect();
                    write!(f, " ({})", cols.join(", "))?;
                }
                let vals: Vec<String> = values.iter().map(|v| fmt_expr(v).to_string()).collect();
                write!(f, " VALUES ({})", vals.join(", "))
            }
            Statement::Query(q) => write!(f, "{q}"),
            Statement::List { what, extended } => {
                f.write_str("SHOW ")?;
                f.write_str(match what {
                    ListKind::Streams => "STREAMS",
                    ListKind::Tables => "TABLES",
                    ListKind::Topics { all: true } => "ALL TOPICS",
                    ListKind::Topics { all: false } => "TOPICS",
                    ListKind::Queries => "QUERIES",
                    ListKind::Properties => "PROPERTIES",
                    ListKind::Functions => "FUNCTIONS",
                    ListKind::Types => "TYPES",
                    ListKind::Variables => "VARIABLES",
                })?;
                if *extended {
                    f.write_str(" EXTENDED")?;
                }
                Ok(())
            }
            Statement::Describe { target, extended } => {
                match target {
                    DescribeTarget::Source(name) => write!(f, "DESCRIBE {}", fmt_ident(name))?,
                    DescribeTarget::Streams => f.write_str("DESCRIBE STREAMS")?,
                    DescribeTarget::Tables => f.write_str("DESCRIBE TABLES")?,
                }
                if *extended {
                    f.write_str(" EXTENDED")?;
                }
                Ok(())
            }
            Statement::DescribeFunction { name } => {
                write!(f, "DESCRIBE FUNCTION {}", fmt_ident(name))
            }
            Statement::Explain(ExplainTarget::Statement(s)) => write!(f, "EXPLAIN {s}"),
            Statement::Explain(ExplainTarget::QueryId(id)) => {
                write!(f, "EXPLAIN {}", fmt_ident(id))
            }
            Statement::Terminate(t) => write!(f, "TERMINATE {t}"),
            Statement::Pause(t) => write!(f, "PAUSE {t}"),
            Statement::Resume(t) => write!(f, "RESUME {t}"),
            Statement::DropSource {
                kind,
                if_exists,
                name,
                delete_topic,
            } => {
                write!(f, "DROP {kind} ")?;
                if *if_exists {
                    f.write_str("IF EXISTS ")?;
                }
                write!(f, "{}", fmt_ident(name))?;
                if *delete_topic {
                    f.write_str(" DELETE TOPIC")?;
                }
                Ok(())
            }
            Statement::Print(p) => {
                write!(f, "PRINT {}", fmt_ident(&p.topic))?;
                if p.from_beginning {
                    f.write_str(" FROM BEGINNING")?;
                }
                if let Some(i) = p.interval {
                    write!(f, " INTERVAL {i}")?;
                }
                if let Some(l) = p.limit {
                    write!(f, " LIMIT {l}")?;
                }
                Ok(())
            }
            Statement::SetProperty { name, value } => {
                write!(f, "SET {} = {}", fmt_string(name), fmt_string(value))
            }
            Statement::UnsetProperty { name } => write!(f, "UNSET {}", fmt_string(name)),
            Statement::DefineVariable { name, value } => {
                write!(f, "DEFINE {} = {}", fmt_ident(name), fmt_string(value))
            }
            Statement::UndefineVariable { name } => write!(f, "UNDEFINE {}", fmt_ident(name)),
            Statement::RunScript { path } => write!(f, "RUN SCRIPT {}", fmt_string(path)),
            Statement::Assert(a) => {
                f.write_str("ASSERT ")?;
                if a.not_exists {
                    f.write_str("NOT EXISTS ")?;
                }
                match &a.what {
                    AssertWhat::Topic { name, properties } => {
                        write!(f, "TOPIC {}", fmt_ident(name))?;
                        if !properties.is_empty() {
                            write!(f, " {properties}")?;
                        }
                    }
                    AssertWhat::Schema { subject, id } => {
                        f.write_str("SCHEMA")?;
                        if let Some(s) = subject {
                            write!(f, " SUBJECT {}", fmt_ident(s))?;
                        }
                        if let Some(id) = id {
                            write!(f, " ID {id}")?;
                        }
                    }
                    AssertWhat::Source { kind, name } => {
                        let k = match kind {
                            SourceKind::Stream => "STREAM",
                            SourceKind::Table => "TABLE",
                        };
                        write!(f, "{k} {}", fmt_ident(name))?;
                    }
                }
                if let Some(t) = &a.timeout {
                    write!(f, " TIMEOUT {t}")?;
                }
                Ok(())
            }
            Statement::CreateType {
                if_not_exists,
                name,
                ty,
            } => {
                f.write_str("CREATE TYPE ")?;
                if *if_not_exists {
                    f.write_str("IF NOT EXISTS ")?;
                }
                write!(f, "{} AS {ty}", fmt_ident(name))
            }
            Statement::DropType { if_exists, name } => {
                f.write_str("DROP TYPE ")?;
                if *if_exists {
                    f.write_str("IF EXISTS ")?;
                }
                write!(f, "{}", fmt_ident(name))
            }
        }
    }
}
