//! Every statement form but SELECT's body: CREATE / DROP / INSERT, the catalog commands
//! (SHOW, DESCRIBE, EXPLAIN), query control (TERMINATE, PAUSE, RESUME), PRINT, and
//! session commands (SET, UNSET, DEFINE, UNDEFINE, RUN SCRIPT).

use sqlparser::tokenizer::Token;

use super::StatementParser;
use super::types::parse_type;
use crate::ast::{
    ColumnConstraint, ColumnDef, CreateAsSelect, CreateSource, DescribeTarget, ExplainTarget,
    ListKind, Literal, Print, Properties, QueryTarget, SourceKind, Statement, TimeUnit,
};
use crate::error::{ParseError, Position, Result};

const STATEMENT_WORDS: &str = "ASSERT, CREATE, DEFINE, DESCRIBE, DROP, EXPLAIN, INSERT, LIST, PAUSE, PRINT, RESUME, RUN SCRIPT, SELECT, SET, SHOW, TERMINATE, UNDEFINE or UNSET";

impl StatementParser<'_> {
    pub(super) fn statement(&mut self) -> Result<Statement> {
        let word = match &self.peek().token {
            Token::Word(w) if w.quote_style.is_none() => w.value.clone(),
            _ => return Err(self.expected(STATEMENT_WORDS)),
        };
        match word.as_str() {
            "SELECT" => Ok(Statement::Query(Box::new(self.query()?))),
            "CREATE" => self.create(),
            "INSERT" => self.insert(),
            "DROP" => self.drop(),
            "SHOW" | "LIST" => self.list(),
            "DESCRIBE" => self.describe(),
            "EXPLAIN" => self.explain(),
            "TERMINATE" => {
                self.p.next_token();
                Ok(Statement::Terminate(self.query_target()?))
            }
            "PAUSE" => {
                self.p.next_token();
                Ok(Statement::Pause(self.query_target()?))
            }
            "RESUME" => {
                self.p.next_token();
                Ok(Statement::Resume(self.query_target()?))
            }
            "PRINT" => self.print(),
            "ASSERT" => self.assert(),
            "SET" => {
                self.p.next_token();
                let name = self.string()?;
                self.expect_token(&Token::Eq)?;
                let value = self.string()?;
                Ok(Statement::SetProperty { name, value })
            }
            "UNSET" => {
                self.p.next_token();
                Ok(Statement::UnsetProperty {
                    name: self.string()?,
                })
            }
            "DEFINE" => {
                self.p.next_token();
                let name = self.ident()?;
                self.expect_token(&Token::Eq)?;
                let value = self.string()?;
                Ok(Statement::DefineVariable { name, value })
            }
            "UNDEFINE" => {
                self.p.next_token();
                Ok(Statement::UndefineVariable {
                    name: self.ident()?,
                })
            }
            "RUN" => {
                self.p.next_token();
                self.expect_kw("SCRIPT")?;
                Ok(Statement::RunScript {
                    path: self.string()?,
                })
            }
            _ => Err(self.expected(STATEMENT_WORDS)),
        }
    }

    fn source_kind(&mut self) -> Option<SourceKind> {
        if self.eat_kw("STREAM") {
            Some(SourceKind::Stream)
        } else if self.eat_kw("TABLE") {
            Some(SourceKind::Table)
        } else {
            None
        }
    }

    fn create(&mut self) -> Result<Statement> {
        self.expect_kw("CREATE")?;
        if self.eat_kw("TYPE") {
            let if_not_exists = self.eat_kws(&["IF", "NOT", "EXISTS"]);
            let name = self.ident()?;
            self.expect_kw("AS")?;
            let ty = parse_type(&mut self.p).map_err(|e| self.convert(e))?;
            return Ok(Statement::CreateType {
                if_not_exists,
                name,
                ty,
            });
        }
        let or_replace = self.eat_kws(&["OR", "REPLACE"]);
        let source_at = self.here();
        let is_source = self.eat_kw("SOURCE");
        let Some(kind) = self.source_kind() else {
            return Err(self.expected(if or_replace || is_source {
                "STREAM or TABLE"
            } else {
                "STREAM, TABLE or TYPE"
            }));
        };
        let if_not_exists = self.eat_kws(&["IF", "NOT", "EXISTS"]);
        let name = self.ident()?;
        let columns = if self.peek().token == Token::LParen {
            self.columns(kind)?
        } else {
            Vec::new()
        };
        let properties = if self.eat_kw("WITH") {
            self.properties()?
        } else {
            Properties::default()
        };
        if self.peek_kw("AS") {
            if !columns.is_empty() {
                return Err(self.expected(
                    "end of statement (a CREATE ... AS SELECT takes its columns from the query)",
                ));
            }
            if is_source {
                return Err(ParseError::new(
                    source_at,
                    "CREATE SOURCE cannot be used with AS SELECT",
                ));
            }
            self.p.next_token();
            let query = Box::new(self.query()?);
            return Ok(Statement::CreateAsSelect(CreateAsSelect {
                kind,
                or_replace,
                if_not_exists,
                name,
                properties,
                query,
            }));
        }
        Ok(Statement::CreateSource(CreateSource {
            kind,
            or_replace,
            is_source,
            if_not_exists,
            name,
            columns,
            properties,
        }))
    }

    fn columns(&mut self, kind: SourceKind) -> Result<Vec<ColumnDef>> {
        self.expect_token(&Token::LParen)?;
        let mut columns = Vec::new();
        loop {
            let at = self.here();
            let name = self.ident()?;
            let ty = parse_type(&mut self.p).map_err(|e| self.convert(e))?;
            let constraint = if self.eat_kws(&["PRIMARY", "KEY"]) {
                ColumnConstraint::PrimaryKey
            } else if self.eat_kw("KEY") {
                ColumnConstraint::Key
            } else if self.eat_kw("HEADERS") {
                ColumnConstraint::Headers
            } else if self.eat_kw("HEADER") {
                self.expect_token(&Token::LParen)?;
                let key = self.string()?;
                self.expect_token(&Token::RParen)?;
                ColumnConstraint::Header(key)
            } else {
                ColumnConstraint::None
            };
            match (kind, &constraint) {
                (SourceKind::Stream, ColumnConstraint::PrimaryKey) => {
                    return Err(ParseError::new(
                        at,
                        format!(
                            "Column `{}` is a 'PRIMARY KEY' column: please use 'KEY' for streams.",
                            name.value
                        ),
                    ));
                }
                (SourceKind::Table, ColumnConstraint::Key) => {
                    return Err(ParseError::new(
                        at,
                        format!(
                            "Column `{}` is a 'KEY' column: please use 'PRIMARY KEY' for tables.",
                            name.value
                        ),
                    ));
                }
                _ => {}
            }
            columns.push(ColumnDef {
                name,
                ty,
                constraint,
            });
            if !self.eat_token(&Token::Comma) {
                break;
            }
        }
        self.expect_token(&Token::RParen)?;
        Ok(columns)
    }

    /// `ASSERT [NOT EXISTS] TOPIC | SCHEMA | STREAM | TABLE ... [TIMEOUT n unit]`.
    fn assert(&mut self) -> Result<Statement> {
        self.expect_kw("ASSERT")?;
        let not_exists = self.eat_kws(&["NOT", "EXISTS"]);
        // A name: an identifier, or a string in single quotes (kept as written).
        let name = |p: &mut Self| -> Result<crate::ast::Ident> {
            match p.peek().token.clone() {
                Token::SingleQuotedString(s) => {
                    p.p.next_token();
                    Ok(crate::ast::Ident::with_quote('`', s))
                }
                _ => p.ident(),
            }
        };
        let what = if self.eat_kw("TOPIC") {
            let name = name(self)?;
            let properties = if self.eat_kw("WITH") {
                self.properties()?
            } else {
                Properties::default()
            };
            crate::ast::AssertWhat::Topic { name, properties }
        } else if self.eat_kw("SCHEMA") {
            let subject = self.optional_clause(&["SUBJECT"], |p| name(p))?;
            let id = self.optional_clause(&["ID"], Self::uint)?;
            if subject.is_none() && id.is_none() {
                return Err(self.expected("SUBJECT or ID"));
            }
            crate::ast::AssertWhat::Schema { subject, id }
        } else if self.eat_kw("STREAM") {
            crate::ast::AssertWhat::Source {
                kind: SourceKind::Stream,
                name: self.ident()?,
            }
        } else if self.eat_kw("TABLE") {
            crate::ast::AssertWhat::Source {
                kind: SourceKind::Table,
                name: self.ident()?,
            }
        } else {
            return Err(self.expected("TOPIC, SCHEMA, STREAM or TABLE"));
        };
        let timeout = self.optional_clause(&["TIMEOUT"], Self::duration)?;
        self.expect_end()?;
        Ok(Statement::Assert(crate::ast::Assert {
            not_exists,
            what,
            timeout,
        }))
    }

    /// `(NAME = literal, ...)`, checked where ksqlDB checks at parse time.
    fn properties(&mut self) -> Result<Properties> {
        self.expect_token(&Token::LParen)?;
        let mut props: Vec<(String, Literal, Position)> = Vec::new();
        loop {
            let at = self.here();
            let name = match self.peek().token.clone() {
                Token::SingleQuotedString(s) => {
                    self.p.next_token();
                    s.to_uppercase()
                }
                _ => self.ident()?.value.to_uppercase(),
            };
            self.expect_token(&Token::Eq)?;
            let value = self.literal()?;
            if props.iter().any(|(n, _, _)| *n == name) {
                return Err(ParseError::new(
                    at,
                    format!("Duplicate property name: {name}"),
                ));
            }
            props.push((name, value, at));
            if !self.eat_token(&Token::Comma) {
                break;
            }
        }
        self.expect_token(&Token::RParen)?;
        check_window_properties(&props)?;
        Ok(Properties(
            props.into_iter().map(|(n, v, _)| (n, v)).collect(),
        ))
    }

    fn literal(&mut self) -> Result<Literal> {
        let negative = self.eat_token(&Token::Minus);
        let t = self.peek().clone();
        let lit = match t.token {
            Token::SingleQuotedString(s) if !negative => Literal::String(s),
            Token::Number(n, _) => Literal::Number(if negative { format!("-{n}") } else { n }),
            Token::Word(w)
                if !negative
                    && w.quote_style.is_none()
                    && (w.value == "TRUE" || w.value == "FALSE") =>
            {
                Literal::Boolean(w.value == "TRUE")
            }
            _ => return Err(self.expected("a string, number or boolean")),
        };
        self.p.next_token();
        Ok(lit)
    }

    fn insert(&mut self) -> Result<Statement> {
        self.expect_kw("INSERT")?;
        self.expect_kw("INTO")?;
        let target = self.ident()?;
        let mut columns = Vec::new();
        if self.eat_token(&Token::LParen) {
            loop {
                columns.push(self.ident()?);
                if !self.eat_token(&Token::Comma) {
                    break;
                }
            }
            self.expect_token(&Token::RParen)?;
            if !self.peek_kw("VALUES") {
                return Err(self.expected("VALUES"));
            }
        }
        if self.eat_kw("VALUES") {
            self.expect_token(&Token::LParen)?;
            let mut values = Vec::new();
            if !self.eat_token(&Token::RParen) {
                loop {
                    values.push(self.expr()?);
                    if !self.eat_token(&Token::Comma) {
                        break;
                    }
                }
                self.expect_token(&Token::RParen)?;
            }
            return Ok(Statement::InsertValues {
                target,
                columns,
                values,
            });
        }
        let properties = if self.eat_kw("WITH") {
            self.properties()?
        } else {
            Properties::default()
        };
        if !self.peek_kw("SELECT") {
            return Err(self.expected(if properties.is_empty() {
                "VALUES, WITH or SELECT"
            } else {
                "SELECT"
            }));
        }
        let query = Box::new(self.query()?);
        Ok(Statement::InsertInto {
            target,
            properties,
            query,
        })
    }

    fn drop(&mut self) -> Result<Statement> {
        self.expect_kw("DROP")?;
        if self.eat_kw("TYPE") {
            let if_exists = self.eat_kws(&["IF", "EXISTS"]);
            return Ok(Statement::DropType {
                if_exists,
                name: self.ident()?,
            });
        }
        let Some(kind) = self.source_kind() else {
            return Err(self.expected("STREAM, TABLE or TYPE"));
        };
        let if_exists = self.eat_kws(&["IF", "EXISTS"]);
        let name = self.ident()?;
        let delete_topic = self.eat_kws(&["DELETE", "TOPIC"]);
        Ok(Statement::DropSource {
            kind,
            if_exists,
            name,
            delete_topic,
        })
    }

    fn list(&mut self) -> Result<Statement> {
        self.p.next_token(); // SHOW | LIST
        let what = if self.eat_kw("STREAMS") {
            ListKind::Streams
        } else if self.eat_kw("TABLES") {
            ListKind::Tables
        } else if self.eat_kw("TOPICS") {
            ListKind::Topics { all: false }
        } else if self.eat_kws(&["ALL", "TOPICS"]) {
            ListKind::Topics { all: true }
        } else if self.eat_kw("QUERIES") {
            ListKind::Queries
        } else if self.eat_kw("PROPERTIES") {
            ListKind::Properties
        } else if self.eat_kw("FUNCTIONS") {
            ListKind::Functions
        } else if self.eat_kw("TYPES") {
            ListKind::Types
        } else if self.eat_kw("VARIABLES") {
            ListKind::Variables
        } else {
            return Err(self.expected(
                "STREAMS, TABLES, TOPICS, QUERIES, PROPERTIES, FUNCTIONS, TYPES or VARIABLES",
            ));
        };
        let extended = matches!(
            what,
            ListKind::Streams | ListKind::Tables | ListKind::Topics { .. } | ListKind::Queries
        ) && self.eat_kw("EXTENDED");
        Ok(Statement::List { what, extended })
    }

    fn describe(&mut self) -> Result<Statement> {
        self.expect_kw("DESCRIBE")?;
        // `DESCRIBE FUNCTION f`, unless FUNCTION is itself the name of a source being described.
        if self.peek_kw("FUNCTION") && matches!(self.p.peek_nth_token_ref(1).token, Token::Word(_))
        {
            self.p.next_token();
            return Ok(Statement::DescribeFunction {
                name: self.ident()?,
            });
        }
        // A source that is itself named STREAMS or TABLES needs back-quotes, as in ksqlDB.
        let target = if self.eat_kw("STREAMS") {
            DescribeTarget::Streams
        } else if self.eat_kw("TABLES") {
            DescribeTarget::Tables
        } else {
            DescribeTarget::Source(self.ident()?)
        };
        let extended = self.eat_kw("EXTENDED");
        Ok(Statement::Describe { target, extended })
    }

    fn explain(&mut self) -> Result<Statement> {
        self.expect_kw("EXPLAIN")?;
        let starts_statement = ["SELECT", "CREATE", "INSERT"]
            .iter()
            .any(|k| self.peek_kw(k));
        if starts_statement {
            let inner = self.statement()?;
            Ok(Statement::Explain(ExplainTarget::Statement(Box::new(
                inner,
            ))))
        } else {
            Ok(Statement::Explain(ExplainTarget::QueryId(self.ident()?)))
        }
    }

    fn query_target(&mut self) -> Result<QueryTarget> {
        if self.eat_kw("ALL") {
            Ok(QueryTarget::All)
        } else {
            Ok(QueryTarget::Query(self.ident()?))
        }
    }

    fn print(&mut self) -> Result<Statement> {
        self.expect_kw("PRINT")?;
        let t = self.peek().clone();
        let topic = match t.token {
            Token::SingleQuotedString(s) => {
                self.p.next_token();
                sqlparser::ast::Ident::with_quote('`', s)
            }
            _ => self.ident()?,
        };
        let from_beginning = self.eat_kws(&["FROM", "BEGINNING"]);
        let interval = if self.eat_kw("INTERVAL") || self.eat_kw("SAMPLE") {
            Some(self.uint()?)
        } else {
            None
        };
        let limit = self.optional_clause(&["LIMIT"], Self::uint)?;
        Ok(Statement::Print(Print {
            topic,
            from_beginning,
            interval,
            limit,
        }))
    }
}

/// ksqlDB validates the window properties of a windowed source when it parses them.
fn check_window_properties(props: &[(String, Literal, Position)]) -> Result<()> {
    let find = |name: &str| props.iter().find(|(n, _, _)| n == name);
    let window_type = match find("WINDOW_TYPE") {
        Some((_, v, at)) => {
            let t = v.as_text().to_uppercase();
            if !["SESSION", "HOPPING", "TUMBLING"].contains(&t.as_str()) {
                return Err(ParseError::new(
                    *at,
                    format!(
                        "Configuration WINDOW_TYPE is invalid: '{}'. Expected one of SESSION, HOPPING, TUMBLING",
                        v.as_text()
                    ),
                ));
            }
            Some(t)
        }
        None => None,
    };
    if let Some((_, v, at)) = find("WINDOW_SIZE") {
        if window_type.as_deref() == Some("SESSION") {
            return Err(ParseError::new(
                *at,
                "'WINDOW_SIZE' should not be set for SESSION windows.",
            ));
        }
        parse_window_size(&v.as_text()).map_err(|why| {
            ParseError::new(
                *at,
                format!(
                    "Configuration WINDOW_SIZE is invalid: Invalid duration: '{}'. {why}",
                    v.as_text()
                ),
            )
        })?;
    }
    Ok(())
}

/// `'30 SECONDS'` → milliseconds.
pub fn parse_window_size(text: &str) -> std::result::Result<u64, String> {
    let mut parts = text.split_whitespace();
    let (Some(n), Some(unit), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err("Expected '<number> <unit>'".to_string());
    };
    let n: u64 = n
        .parse()
        .map_err(|_| format!("Not a whole number: '{n}'"))?;
    let unit = unit.to_uppercase();
    let unit = TimeUnit::from_word(&unit).ok_or_else(|| format!("Unknown time unit: '{unit}'"))?;
    Ok(n.saturating_mul(unit.millis()))
}
