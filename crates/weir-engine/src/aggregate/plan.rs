//! Planning a GROUP BY: the stateless step that computes the grouping expressions and the
//! aggregates' arguments, the aggregate calls (one accumulator each), the select list and
//! HAVING over the group's keys and results, and the sink's key columns.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema};
use serde_json::{Value, json};
use weir_format::Column;
use weir_sql::ast::{Expr, SqlType};
use weir_sql::sqlparser::ast::{
    self as sql, FunctionArg, FunctionArgExpr, FunctionArguments, visit_expressions_mut,
};

use super::{Aggregator, Output, Parts, WINDOW_COLUMNS, Windowing};
use crate::error::{EngineError, Result};
use crate::functions::Functions;
use crate::plan::{ExprCompiler, column_name, plan_push, same_expr, source_alias};

/// The aggregate functions computed here, by ksqlDB name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AggKind {
    Count,
    CountStar,
    CountDistinct,
    Sum,
    Avg,
    Min,
    Max,
    CollectList,
    CollectSet,
    LatestByOffset,
    EarliestByOffset,
    TopK,
    TopKDistinct,
    Histogram,
    StddevSamp,
    /// ksqlDB's STDDEV_SAMPLE: the sample standard deviation (STDDEV_SAMP's root).
    StddevSample,
    Correlation,
    /// The value when every value of the group is the same (nulls included), else null.
    Attr,
    /// A plugin's aggregate (see [`Call::plugin`]).
    Plugin,
}

/// Literal parameters of an aggregate call: how many values to keep (TOPK, the
/// `n` of LATEST_BY_OFFSET), and whether nulls are skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Params {
    pub n: Option<usize>,
    pub ignore_nulls: bool,
}

/// The types MIN, MAX and TOPK order, as ksqlDB's do: numbers, strings, decimals, dates,
/// times, timestamps and bytes.
fn ordered(t: &SqlType) -> bool {
    matches!(
        t,
        SqlType::Int
            | SqlType::Bigint
            | SqlType::Double
            | SqlType::String
            | SqlType::Decimal { .. }
            | SqlType::Date
            | SqlType::Time
            | SqlType::Timestamp
            | SqlType::Bytes
    )
}

impl AggKind {
    fn from_name(name: &str) -> Option<AggKind> {
        Some(match name.to_ascii_uppercase().as_str() {
            "COUNT" => AggKind::Count,
            "COUNT_DISTINCT" => AggKind::CountDistinct,
            "SUM" => AggKind::Sum,
            "AVG" => AggKind::Avg,
            "MIN" => AggKind::Min,
            "MAX" => AggKind::Max,
            "COLLECT_LIST" => AggKind::CollectList,
            "COLLECT_SET" => AggKind::CollectSet,
            "LATEST_BY_OFFSET" => AggKind::LatestByOffset,
            "EARLIEST_BY_OFFSET" => AggKind::EarliestByOffset,
            "TOPK" => AggKind::TopK,
            "TOPKDISTINCT" => AggKind::TopKDistinct,
            "HISTOGRAM" => AggKind::Histogram,
            "STDDEV_SAMP" => AggKind::StddevSamp,
            "STDDEV_SAMPLE" => AggKind::StddevSample,
            "CORRELATION" => AggKind::Correlation,
            "ATTR" => AggKind::Attr,
            _ => return None,
        })
    }

    /// The result type for an argument of type `arg`.
    fn result_type(self, arg: Option<&SqlType>, params: Params) -> Result<SqlType> {
        let unsupported = |t: Option<&SqlType>| {
            EngineError::Invalid(format!(
                "Function {self:?} does not accept parameters ({})",
                t.map(|t| t.to_string()).unwrap_or_default()
            ))
        };
        Ok(match (self, arg) {
            (AggKind::Count | AggKind::CountStar | AggKind::CountDistinct, _) => SqlType::Bigint,
            (AggKind::Avg, Some(SqlType::Int | SqlType::Bigint | SqlType::Double)) => {
                SqlType::Double
            }
            (AggKind::Sum, Some(t @ (SqlType::Int | SqlType::Bigint | SqlType::Double))) => {
                t.clone()
            }
            (AggKind::Min | AggKind::Max, Some(t)) if ordered(t) => t.clone(),
            (AggKind::CollectList | AggKind::CollectSet, Some(t)) => {
                SqlType::Array(Box::new(t.clone()))
            }
            (AggKind::LatestByOffset | AggKind::EarliestByOffset, Some(t))
                if params.n.is_some() =>
            {
                SqlType::Array(Box::new(t.clone()))
            }
            (AggKind::LatestByOffset | AggKind::EarliestByOffset | AggKind::Attr, Some(t)) => {
                t.clone()
            }
            (AggKind::TopK | AggKind::TopKDistinct, Some(t)) if ordered(t) => {
                SqlType::Array(Box::new(t.clone()))
            }
            (AggKind::Histogram, Some(SqlType::String)) => {
                SqlType::Map(Box::new(SqlType::String), Box::new(SqlType::Bigint))
            }
            (
                AggKind::StddevSamp | AggKind::StddevSample | AggKind::Correlation,
                Some(SqlType::Int | SqlType::Bigint | SqlType::Double),
            ) => SqlType::Double,
            (_, t) => return Err(unsupported(t)),
        })
    }

    /// Whether a table's updates can take a value back out (see [`AggKind::undo`]).
    fn undoable(self) -> bool {
        matches!(
            self,
            AggKind::Count
                | AggKind::CountStar
                | AggKind::Sum
                | AggKind::Avg
                | AggKind::CollectList
                | AggKind::Histogram
        )
    }
}

/// One aggregate call.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub kind: AggKind,
    /// Its argument among the stateless plan's projections, and the argument's type.
    pub arg: Option<(usize, SqlType)>,
    /// CORRELATION's second argument.
    pub arg2: Option<(usize, SqlType)>,
    /// TOPK's other columns, carried in its result's structs.
    pub extra: Vec<(usize, SqlType)>,
    pub params: Params,
    pub plugin: Option<PluginRef>,
    /// The call as the query writes it (`AVG(SPEED)`), for the logical plan.
    pub sql: String,
}

impl Call {
    /// The stateless step's projections it takes: its argument, then CORRELATION's
    /// second or TOPK's other columns.
    pub fn columns(&self) -> impl Iterator<Item = usize> + '_ {
        self.arg
            .iter()
            .chain(&self.arg2)
            .chain(&self.extra)
            .map(|(i, _)| *i)
    }
}

/// A plugin aggregate a query calls (the version it was planned with).
#[derive(Clone)]
pub(crate) struct PluginRef(pub Arc<dyn crate::functions::PluginAggregate>);

impl std::fmt::Debug for PluginRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PluginAggregate")
    }
}

/// Whether `e` calls an aggregate function (built in or a plugin's).
pub(crate) fn is_aggregate_call(e: &Expr, functions: &Functions) -> bool {
    let Expr::Function(f) = e else { return false };
    let name = f.name.to_string();
    AggKind::from_name(&name).is_some()
        || name.eq_ignore_ascii_case("SUM_LIST")
        || functions.plugin_aggregate(&name).is_some()
}

fn aggregate_call(e: &Expr, functions: &Functions) -> Option<(AggKind, Vec<Expr>, bool)> {
    let Expr::Function(f) = e else { return None };
    let name = f.name.to_string();
    let sum_list = name.eq_ignore_ascii_case("SUM_LIST");
    let kind = AggKind::from_name(if sum_list { "SUM" } else { &name })
        .or_else(|| functions.plugin_aggregate(&name).map(|_| AggKind::Plugin))?;
    let args = match &f.args {
        FunctionArguments::List(list) => &list.args[..],
        FunctionArguments::None => &[],
        FunctionArguments::Subquery(_) => return None,
    };
    let mut out = Vec::new();
    let mut star = false;
    for a in args {
        match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => out.push(e.clone()),
            FunctionArg::Unnamed(FunctionArgExpr::Wildcard) => star = true,
            _ => return None,
        }
    }
    if sum_list {
        // SUM_LIST(list): the SUM of each row's list summed (nulls skipped).
        out = out
            .into_iter()
            .map(|e| {
                weir_sql::function_call(
                    weir_sql::sqlparser::ast::Ident::new("ksql_list_sum"),
                    vec![FunctionArg::Unnamed(FunctionArgExpr::Expr(e))],
                )
            })
            .collect();
    }
    Some((kind, out, star))
}

fn ident(name: &str) -> Expr {
    Expr::Identifier(sql::Ident::with_quote('`', name))
}

/// Plans a GROUP BY query over `source`. A failure names what the statement wrote, not
/// the internal columns planning made of it.
pub fn plan_aggregate(
    functions: &Functions,
    query: &weir_sql::ast::Query,
    source: &crate::catalog::Source,
    to_sink: bool,
) -> Result<Aggregator> {
    let mut names = Vec::new();
    plan(functions, query, source, to_sink, &mut names).map_err(|e| crate::names::rename(e, &names))
}

/// Plans the aggregation, noting each internal column name it makes and the text that
/// name stands for.
fn plan(
    functions: &Functions,
    query: &weir_sql::ast::Query,
    source: &crate::catalog::Source,
    to_sink: bool,
    names: &mut Vec<(String, String)>,
) -> Result<Aggregator> {
    use weir_sql::ast::SelectItem;
    let unsupported = |what: &str| Err(EngineError::Unsupported(what.into()));
    if query.window.is_some() && source.kind == weir_sql::ast::SourceKind::Table {
        return Err(EngineError::Invalid(
            "Windowing not supported for table aggregations.".into(),
        ));
    }
    if query.partition_by.is_some() {
        return unsupported("PARTITION BY with GROUP BY");
    }
    let group_by = query.group_by.as_deref().unwrap_or_default();
    if group_by.is_empty() {
        return unsupported("aggregation without GROUP BY");
    }
    let emit_final = matches!(query.emit, Some(weir_sql::ast::Emit::Final));
    if emit_final && query.window.is_none() {
        return Err(EngineError::Invalid(
            "EMIT FINAL is only supported for windowed aggregations.".into(),
        ));
    }
    if source.layout.value_format.format == weir_format::Format::Kafka {
        return Err(EngineError::Invalid(format!(
            "Source(s) {} are using the 'KAFKA' value format. This format does not yet support GROUP BY.",
            source.name
        )));
    }
    // The grouping expressions' names where the select list and HAVING see them: a
    // column keeps its name.
    let group_names: Vec<String> = group_by
        .iter()
        .enumerate()
        .map(|(i, g)| column_name(g).unwrap_or_else(|| format!("WEIR_GROUP_{i}")))
        .collect();
    // Aggregate calls become columns `WEIR_AGG_n`; grouping expressions that are not
    // columns become theirs.
    let mut found: Vec<(AggKind, Vec<Expr>, bool, Expr)> = Vec::new();
    let mut failure = None;
    let mut rewrite = |e: &Expr| -> Expr {
        let mut e = e.clone();
        if let Some(i) = group_by
            .iter()
            .position(|g| column_name(g).is_none() && g == &e)
        {
            return ident(&group_names[i]);
        }
        // First the aggregate calls (their arguments stay as written: the stateless step
        // computes them), then grouping expressions in what is left.
        let _ = visit_expressions_mut(&mut e, |x: &mut Expr| {
            if let Some((kind, args, star)) = aggregate_call(x, functions) {
                let n = match found.iter().position(|f| &f.3 == x) {
                    Some(n) => n,
                    None => {
                        if args.iter().any(|a| aggregate_call(a, functions).is_some()) {
                            failure = Some("aggregate calls inside aggregate calls");
                        }
                        found.push((kind, args, star, x.clone()));
                        found.len() - 1
                    }
                };
                *x = ident(&format!("WEIR_AGG_{n}"));
            }
            std::ops::ControlFlow::<()>::Continue(())
        });
        let _ = visit_expressions_mut(&mut e, |x: &mut Expr| {
            if let Some(i) = group_by
                .iter()
                .position(|g| column_name(g).is_none() && g == x)
            {
                *x = ident(&group_names[i]);
            }
            std::ops::ControlFlow::<()>::Continue(())
        });
        e
    };
    let mut items = Vec::new();
    let mut namer = crate::plan::ColumnNamer::new(
        source.layout.columns().map(|c| c.name.as_str()),
        &query.select,
    );
    // `*` stands for the source's columns where every one of them is grouped by.
    let all_grouped = source.layout.columns().all(|c| {
        group_by
            .iter()
            .any(|g| column_name(g).is_some_and(|n| n == c.name))
    });
    let mut select = Vec::with_capacity(query.select.len());
    for item in &query.select {
        match item {
            SelectItem::Wildcard if all_grouped => {
                select.extend(source.layout.columns().map(|c| SelectItem::Expr {
                    expr: Expr::Identifier(sql::Ident::with_quote('`', &c.name)),
                    alias: None,
                }))
            }
            other => select.push(other.clone()),
        }
    }
    for item in &select {
        let SelectItem::Expr { expr, alias } = item else {
            return Err(EngineError::Invalid(
                "SELECT * is not supported with GROUP BY unless every column is grouped by: name the columns".into(),
            ));
        };
        let key = group_by.iter().position(|g| same_expr(g, expr));
        let name = match (alias, column_name(expr)) {
            (Some(a), _) => a.value.clone(),
            (None, Some(c)) => {
                namer.given(&c);
                c
            }
            _ => crate::plan::item_name(expr, &mut namer),
        };
        items.push((name, rewrite(expr), key));
    }
    let having = query.having.as_ref().map(&mut rewrite);
    let text = |e: &Expr| weir_sql::ast::fmt_expr(e).to_string();
    // Quoted first: the rewritten expressions read `WEIR_AGG_n`.
    for q in ["`", ""] {
        names.extend(
            group_by
                .iter()
                .enumerate()
                .map(|(i, g)| (format!("{q}WEIR_GROUP_{i}{q}"), text(g))),
        );
        names.extend(
            found
                .iter()
                .enumerate()
                .map(|(n, f)| (format!("{q}WEIR_AGG_{n}{q}"), text(&f.3))),
        );
    }
    if let Some(why) = failure {
        return unsupported(why);
    }
    // The stateless step: grouping expressions, then each call's argument.
    let mut pre_items: Vec<SelectItem> = group_by
        .iter()
        .enumerate()
        .map(|(i, e)| SelectItem::Expr {
            expr: e.clone(),
            alias: Some(sql::Ident::new(format!("WEIR_GROUP_{i}"))),
        })
        .collect();
    let mut calls = Vec::new();
    for (n, (kind, args, star, call)) in found.iter().enumerate() {
        let plugin = match call {
            Expr::Function(f) if *kind == AggKind::Plugin => functions
                .plugin_aggregate(&f.name.to_string())
                .map(PluginRef),
            _ => None,
        };
        // Literal parameters after the column arguments.
        let literal = |e: &Expr| match e {
            Expr::Value(v) => match &v.value {
                sql::Value::Number(s, _) => s.parse::<usize>().ok().map(|n| json!(n)),
                sql::Value::Boolean(b) => Some(json!(b)),
                _ => None,
            },
            _ => None,
        };
        let columns = match kind {
            AggKind::Correlation => 2,
            _ => 1,
        };
        // TOPK(sort, other, ..., k): the top k rows as structs of the sort column and the
        // others (`sort_col`, `col0`, ...).
        let extras = if *kind == AggKind::TopK && args.len() >= 3 {
            1..args.len() - 1
        } else {
            0..0
        };
        let (kind, params) = match (*kind, *star, args.len()) {
            (AggKind::Count, _, 0) => (AggKind::CountStar, None),
            (k, false, c) if c == columns => (k, None),
            (AggKind::TopK, false, c) if c >= 3 => (
                AggKind::TopK,
                Some(
                    args[c - 1..]
                        .iter()
                        .map(literal)
                        .collect::<Option<Vec<_>>>(),
                ),
            ),
            (
                k @ (AggKind::TopK
                | AggKind::TopKDistinct
                | AggKind::LatestByOffset
                | AggKind::EarliestByOffset),
                false,
                2 | 3,
            ) => (
                k,
                Some(args[1..].iter().map(literal).collect::<Option<Vec<_>>>()),
            ),
            _ => return unsupported("this aggregate's arguments"),
        };
        let params = match (kind, params) {
            (_, None) => Params {
                n: None,
                ignore_nulls: true,
            },
            (_, Some(None)) => return unsupported("non-literal aggregate parameters"),
            (AggKind::TopK | AggKind::TopKDistinct, Some(Some(p))) if p.len() == 1 => Params {
                n: p[0].as_u64().map(|n| n as usize),
                ignore_nulls: true,
            },
            (_, Some(Some(p))) => match p.as_slice() {
                [Value::Bool(b)] => Params {
                    n: None,
                    ignore_nulls: *b,
                },
                [n] if n.is_u64() => Params {
                    n: n.as_u64().map(|n| n as usize),
                    ignore_nulls: true,
                },
                [n, Value::Bool(b)] if n.is_u64() => Params {
                    n: n.as_u64().map(|n| n as usize),
                    ignore_nulls: *b,
                },
                _ => return unsupported("these aggregate parameters"),
            },
        };
        if matches!(kind, AggKind::TopK | AggKind::TopKDistinct) && params.n.is_none() {
            return unsupported("TOPK without its size");
        }
        let mut column = |i: usize| {
            names.push((format!("WEIR_ARG_{n}_{i}"), text(&args[i])));
            pre_items.push(SelectItem::Expr {
                expr: args[i].clone(),
                alias: Some(sql::Ident::new(format!("WEIR_ARG_{n}_{i}"))),
            });
            pre_items.len() - 1
        };
        let arg = (kind != AggKind::CountStar).then(|| column(0));
        let arg2 = (kind == AggKind::Correlation).then(|| column(1));
        let extra: Vec<usize> = extras.map(&mut column).collect();
        let sql = weir_sql::ast::fmt_expr(call).to_string();
        calls.push((kind, arg, arg2, params, plugin, extra, sql));
    }
    // Over a table, each row is an upsert of its source key: the stateless step also
    // gives that key, and the WHERE as a column (a row that fails it leaves its group).
    let from_table = source.kind == weir_sql::ast::SourceKind::Table;
    let mut table_columns = (Vec::new(), None);
    if from_table {
        if let Some((kind, ..)) = calls.iter().find(|(k, ..)| !k.undoable()) {
            return Err(EngineError::Unsupported(format!("{kind:?} over a table")));
        }
        for (i, k) in source.layout.key_columns.iter().enumerate() {
            pre_items.push(SelectItem::Expr {
                expr: ident(&k.name),
                alias: Some(sql::Ident::new(format!("WEIR_SOURCE_KEY_{i}"))),
            });
            table_columns.0.push(pre_items.len() - 1);
        }
        if let Some(w) = &query.where_clause {
            pre_items.push(SelectItem::Expr {
                expr: w.clone(),
                alias: Some(sql::Ident::new("WEIR_WHERE")),
            });
            table_columns.1 = Some(pre_items.len() - 1);
        }
    }
    let pre_query = weir_sql::ast::Query {
        select: pre_items,
        from: query.from.clone(),
        window: None,
        where_clause: if from_table {
            None
        } else {
            query.where_clause.clone()
        },
        group_by: None,
        partition_by: None,
        having: None,
        emit: None,
        limit: None,
    };
    let pre = plan_push(functions, &pre_query, source)?;
    let type_of = |i: usize| crate::types::sql_type_of(&pre.projections[i].compiled.data_type);
    let keys: Vec<SqlType> = (0..group_by.len()).map(type_of).collect::<Result<_>>()?;
    let calls: Vec<Call> = calls
        .into_iter()
        .map(|(kind, arg, arg2, params, plugin, extra, sql)| {
            let typed = |a: Option<usize>| {
                a.map(|i| Ok::<_, EngineError>((i, type_of(i)?)))
                    .transpose()
            };
            Ok(Call {
                kind,
                arg: typed(arg)?,
                arg2: typed(arg2)?,
                extra: extra
                    .into_iter()
                    .map(|i| Ok::<_, EngineError>((i, type_of(i)?)))
                    .collect::<Result<_>>()?,
                params,
                plugin,
                sql,
            })
        })
        .collect::<Result<_>>()?;
    let mut middle_fields: Vec<Field> = group_names
        .iter()
        .zip(&keys)
        .map(|(n, t)| Field::new(n, weir_format::arrow_type(t), true))
        .collect();
    let mut middle_types: Vec<SqlType> = keys.clone();
    for (n, c) in calls.iter().enumerate() {
        let t = match &c.plugin {
            Some(p) => crate::types::sql_type_of(&p.0.return_type())?,
            None if !c.extra.is_empty() => {
                let sort = c.arg.as_ref().map(|(_, t)| t.clone());
                let field = |name: &str, ty: SqlType| weir_sql::ast::StructFieldType {
                    name: sql::Ident::with_quote('`', name),
                    ty,
                };
                let mut fields = vec![field("sort_col", sort.unwrap_or(SqlType::String))];
                for (k, (_, t)) in c.extra.iter().enumerate() {
                    fields.push(field(&format!("col{k}"), t.clone()));
                }
                SqlType::Array(Box::new(SqlType::Struct(fields)))
            }
            None => c
                .kind
                .result_type(c.arg.as_ref().map(|(_, t)| t), c.params)?,
        };
        middle_types.push(t.clone());
        middle_fields.push(Field::new(
            format!("WEIR_AGG_{n}"),
            weir_format::arrow_type(&t),
            true,
        ));
    }
    let window = query.window.as_ref().map(|w| Windowing::new(w, emit_final));
    if window.is_some() {
        for b in crate::WINDOW_BOUNDS {
            middle_fields.push(Field::new(b, DataType::Int64, true));
        }
    }
    let middle = Arc::new(Schema::new(middle_fields));
    let alias = source_alias(query, source);
    let compiler = ExprCompiler::new(functions, &middle, Some(alias))?;
    for (k, g) in group_by.iter().enumerate().filter(|_| to_sink) {
        if !items.iter().any(|(_, _, key)| *key == Some(k)) {
            return Err(EngineError::Invalid(format!(
                "Key missing from projection (ie, SELECT). The query used to build the sink must include the grouping expression {g} in its projection."
            )));
        }
    }
    let mut outputs = Vec::new();
    let mut key_cols = Vec::new();
    let mut value_cols = Vec::new();
    let mut fields = vec![
        Field::new("ROWTIME", DataType::Int64, false),
        Field::new("ROWOFFSET", DataType::Int64, false),
    ];
    for (name, expr, key) in items {
        let compiled = compiler.compile(&expr)?;
        let ty = crate::types::sql_type_of(&compiled.data_type)?;
        fields.push(Field::new(&name, compiled.data_type.clone(), true));
        let col = Column::new(&name, ty);
        if let Some(k) = key {
            key_cols.push((k, col));
        } else {
            value_cols.push(col);
        }
        outputs.push(Output {
            name,
            compiled,
            is_key: key.is_some(),
        });
    }
    if window.is_some() {
        for b in WINDOW_COLUMNS {
            fields.push(Field::new(b, DataType::Int64, false));
        }
    }
    // The key's columns come in GROUP BY order, whatever the select list's.
    key_cols.sort_by_key(|(k, _)| *k);
    let key_cols: Vec<Column> = key_cols.into_iter().map(|(_, c)| c).collect();
    let having = having
        .map(|h| {
            let c = compiler.compile_predicate(&h)?;
            if c.data_type != DataType::Boolean {
                return Err(EngineError::Invalid(format!(
                    "Type error in HAVING expression: Should evaluate to boolean but is {}",
                    c.data_type
                )));
            }
            Ok(c)
        })
        .transpose()?;
    let mut seen = std::collections::HashSet::new();
    for c in key_cols.iter().chain(&value_cols) {
        if !seen.insert(c.name.as_str()) {
            return Err(EngineError::Invalid(format!(
                "Duplicate value columns found in schema: `{}` {}",
                c.name, c.ty
            )));
        }
    }
    // AVG keeps a (sum, count) pair, which DELIMITED cannot hold (ksqlDB's rule).
    if calls.iter().any(|c| c.kind == AggKind::Avg)
        && source.layout.value_format.format == weir_format::Format::Delimited
    {
        return Err(EngineError::Invalid(
            "One of the functions used in the statement has an intermediate type that the value format can not handle. Please remove the function or change the format.".into(),
        ));
    }
    if value_cols.is_empty() && to_sink {
        return Err(EngineError::Invalid(
            "The projection contains no value columns.".into(),
        ));
    }
    let results = middle_types.split_off(keys.len());
    // Grouped by the stream's key columns, each once, and by nothing else.
    let key_names = &source.layout.key_columns;
    let by_source_key = !from_table
        && source.window.is_none()
        && !key_names.is_empty()
        && group_by.len() == key_names.len()
        && key_names.iter().all(|k| {
            group_by
                .iter()
                .filter(|g| column_name(g).is_some_and(|n| n.eq_ignore_ascii_case(&k.name)))
                .count()
                == 1
        });
    let mut aggregator = Aggregator::new(Parts {
        pre,
        keys,
        calls,
        results,
        middle,
        outputs,
        having,
        output_layout_columns: (key_cols, value_cols),
        output_schema: Arc::new(Schema::new(fields)),
        table: from_table.then(|| {
            (
                table_columns.0.clone(),
                source
                    .layout
                    .key_columns
                    .iter()
                    .map(|c| c.ty.clone())
                    .collect(),
                table_columns.1,
            )
        }),
        window,
    })?;
    aggregator.by_source_key = by_source_key;
    Ok(aggregator)
}
