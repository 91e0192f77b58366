//! GROUP BY over a stream, without windows: `CREATE TABLE ... AS SELECT keys, AGG(...)
//! FROM stream [WHERE ...] GROUP BY keys`.
//!
//! A query runs in two steps. A stateless plan (the engine's ordinary [`SelectPlan`])
//! filters each batch and computes the grouping expressions and the aggregates'
//! arguments; then the [`Aggregator`] folds each row into its group's accumulators, in
//! order, and emits the group's new row: one change per input record, as ksqlDB does with
//! its record cache off. The output record's timestamp is the latest its group has seen.
//!
//! The state (every group's accumulators) is a JSON object, checkpointed with the query's
//! offsets and restored on restart, so a restarted query goes on with the same state.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use serde_json::{Value, json};
use weir_format::Column;
use weir_sql::ast::{Expr, SqlType};
use weir_sql::sqlparser::ast::{self as sql, FunctionArg, FunctionArgExpr, FunctionArguments};

use crate::error::{EngineError, Result};
use crate::functions::Functions;
use crate::plan::{SelectPlan, plan_push};

/// The aggregate functions computed here, by ksqlDB name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggKind {
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
            _ => return None,
        })
    }

    /// The result type for an argument of type `arg`.
    fn result_type(self, arg: Option<&SqlType>) -> Result<SqlType> {
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
            (
                AggKind::Min | AggKind::Max,
                Some(t @ (SqlType::Int | SqlType::Bigint | SqlType::Double | SqlType::String)),
            ) => t.clone(),
            (AggKind::CollectList | AggKind::CollectSet, Some(t)) => {
                SqlType::Array(Box::new(t.clone()))
            }
            (AggKind::LatestByOffset | AggKind::EarliestByOffset, Some(t)) => t.clone(),
            (_, t) => return Err(unsupported(t)),
        })
    }

    fn initial(self) -> Value {
        match self {
            AggKind::Count | AggKind::CountStar => json!(0),
            AggKind::Sum => json!(0),
            AggKind::Avg => json!([0.0, 0]),
            AggKind::CollectList | AggKind::CollectSet | AggKind::CountDistinct => json!([]),
            AggKind::Min | AggKind::Max | AggKind::LatestByOffset | AggKind::EarliestByOffset => {
                Value::Null
            }
        }
    }

    /// Folds one argument value into the state.
    fn update(self, state: &mut Value, arg: &Value, ty: Option<&SqlType>) {
        let number = |v: &Value| v.as_f64().unwrap_or(0.0);
        match self {
            AggKind::CountStar => *state = json!(state.as_i64().unwrap_or(0) + 1),
            AggKind::Count if !arg.is_null() => *state = json!(state.as_i64().unwrap_or(0) + 1),
            AggKind::Count => {}
            AggKind::Sum if arg.is_null() => {}
            AggKind::Sum => {
                *state = match ty {
                    Some(SqlType::Double) => json!(number(state) + number(arg)),
                    Some(SqlType::Int) => json!(
                        (state.as_i64().unwrap_or(0) as i32)
                            .wrapping_add(arg.as_i64().unwrap_or(0) as i32)
                    ),
                    _ => json!(
                        state
                            .as_i64()
                            .unwrap_or(0)
                            .wrapping_add(arg.as_i64().unwrap_or(0))
                    ),
                }
            }
            AggKind::Avg if arg.is_null() => {}
            AggKind::Avg => {
                let sum = number(&state[0]) + number(arg);
                let count = state[1].as_i64().unwrap_or(0) + 1;
                *state = json!([sum, count]);
            }
            AggKind::Min | AggKind::Max if arg.is_null() => {}
            AggKind::Min | AggKind::Max => {
                let replace = state.is_null() || {
                    let ord = match (&*state, arg) {
                        (Value::String(a), Value::String(b)) => b.cmp(a),
                        (a, b) => number(b)
                            .partial_cmp(&number(a))
                            .unwrap_or(std::cmp::Ordering::Equal),
                    };
                    if self == AggKind::Min {
                        ord.is_lt()
                    } else {
                        ord.is_gt()
                    }
                };
                if replace {
                    *state = arg.clone();
                }
            }
            AggKind::CollectList => {
                if let Value::Array(a) = state {
                    a.push(arg.clone());
                }
            }
            AggKind::CollectSet => {
                if let Value::Array(a) = state
                    && !a.contains(arg)
                {
                    a.push(arg.clone());
                }
            }
            AggKind::CountDistinct => {
                if let Value::Array(a) = state
                    && !arg.is_null()
                    && !a.contains(arg)
                {
                    a.push(arg.clone());
                }
            }
            AggKind::LatestByOffset if !arg.is_null() => *state = arg.clone(),
            AggKind::EarliestByOffset if !arg.is_null() && state.is_null() => *state = arg.clone(),
            AggKind::LatestByOffset | AggKind::EarliestByOffset => {}
        }
    }

    fn result(self, state: &Value) -> Value {
        match self {
            AggKind::Avg => {
                let count = state[1].as_i64().unwrap_or(0);
                if count == 0 {
                    json!(0.0)
                } else {
                    json!(state[0].as_f64().unwrap_or(0.0) / count as f64)
                }
            }
            AggKind::CountDistinct => json!(state.as_array().map_or(0, Vec::len)),
            _ => state.clone(),
        }
    }
}

/// One aggregate call of the select list.
#[derive(Debug, Clone)]
struct Call {
    kind: AggKind,
    /// Its argument among the stateless plan's projections, and the argument's type.
    arg: Option<(usize, SqlType)>,
}

/// A select item: a grouping expression (by index) or an aggregate call (by index).
#[derive(Debug, Clone)]
enum Output {
    Key(usize),
    Agg(usize),
}

/// A planned GROUP BY and its running state.
#[derive(Debug, Clone)]
pub struct Aggregator {
    /// Filters and computes `keys` then the aggregates' arguments, per batch.
    pub pre: SelectPlan,
    keys: Vec<SqlType>,
    calls: Vec<Call>,
    outputs: Vec<(String, Output)>,
    /// Key columns then value columns, as the sink declares them.
    pub output_layout_columns: (Vec<Column>, Vec<Column>),
    /// ROWTIME, ROWOFFSET, then the select items.
    output_schema: SchemaRef,
    output_types: Vec<SqlType>,
    /// Per group (its key values as JSON text): the latest timestamp, then each
    /// aggregate's state.
    state: HashMap<String, (i64, Vec<Value>)>,
}

fn aggregate_call(e: &Expr) -> Option<(AggKind, Vec<&Expr>, bool)> {
    let Expr::Function(f) = e else { return None };
    let kind = AggKind::from_name(&f.name.to_string())?;
    let FunctionArguments::List(list) = &f.args else {
        return None;
    };
    let mut args = Vec::new();
    let mut star = false;
    for a in &list.args {
        match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => args.push(e),
            FunctionArg::Unnamed(FunctionArgExpr::Wildcard) => star = true,
            _ => return None,
        }
    }
    Some((kind, args, star))
}

fn column_of(e: &Expr) -> Option<String> {
    match e {
        Expr::Identifier(id) => Some(id.value.clone()),
        Expr::CompoundIdentifier(parts) => parts.last().map(|p| p.value.clone()),
        _ => None,
    }
}

fn same(a: &Expr, b: &Expr) -> bool {
    match (column_of(a), column_of(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// Plans `query` (which has a GROUP BY) over `source`.
pub fn plan_aggregate(
    functions: &Functions,
    query: &weir_sql::ast::Query,
    source: &crate::catalog::Source,
) -> Result<Aggregator> {
    use weir_sql::ast::SelectItem;
    let unsupported = |what: &str| Err(EngineError::Unsupported(what.into()));
    if query.window.is_some() {
        return unsupported("windowed aggregation");
    }
    if query.having.is_some() {
        return unsupported("HAVING");
    }
    if query.partition_by.is_some() {
        return unsupported("PARTITION BY with GROUP BY");
    }
    let group_by = query.group_by.as_deref().unwrap_or_default();
    if group_by.is_empty() {
        return unsupported("aggregation without GROUP BY");
    }
    if matches!(query.emit, Some(weir_sql::ast::Emit::Final)) {
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
    // The stateless step computes the grouping expressions, then each call's argument.
    let mut pre_items: Vec<SelectItem> = group_by
        .iter()
        .enumerate()
        .map(|(i, e)| SelectItem::Expr {
            expr: e.clone(),
            alias: Some(sql::Ident::new(format!("WEIR_GROUP_{i}"))),
        })
        .collect();
    let mut calls = Vec::new();
    let mut outputs = Vec::new();
    let mut generated = 0;
    for item in &query.select {
        let SelectItem::Expr { expr, alias } = item else {
            return Err(EngineError::Invalid(
                "SELECT * is not supported with GROUP BY: name the columns".into(),
            ));
        };
        if let Some(k) = group_by.iter().position(|g| same(g, expr)) {
            let name = alias
                .as_ref()
                .map(|a| a.value.clone())
                .or_else(|| column_of(expr))
                .unwrap_or_else(|| {
                    generated += 1;
                    format!("KSQL_COL_{}", generated - 1)
                });
            outputs.push((name, Output::Key(k)));
            continue;
        }
        let Some((kind, args, star)) = aggregate_call(expr) else {
            return Err(EngineError::Unsupported(format!(
                "non-aggregate expression with GROUP BY: {expr}"
            )));
        };
        let kind = match (kind, star, args.len()) {
            (AggKind::Count, true, 0) => AggKind::CountStar,
            (AggKind::Count, false, 0) => AggKind::CountStar,
            (k, false, 1) => k,
            _ => return unsupported("this aggregate's arguments"),
        };
        let arg = if kind == AggKind::CountStar {
            None
        } else {
            pre_items.push(SelectItem::Expr {
                expr: args[0].clone(),
                alias: Some(sql::Ident::new(format!("WEIR_ARG_{}", calls.len()))),
            });
            Some(pre_items.len() - 1)
        };
        let name = alias.as_ref().map(|a| a.value.clone()).unwrap_or_else(|| {
            generated += 1;
            format!("KSQL_COL_{}", generated - 1)
        });
        outputs.push((name, Output::Agg(calls.len())));
        calls.push((kind, arg));
    }
    let pre_query = weir_sql::ast::Query {
        select: pre_items,
        from: query.from.clone(),
        window: None,
        where_clause: query.where_clause.clone(),
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
        .map(|(kind, arg)| {
            Ok(Call {
                kind,
                arg: arg
                    .map(|i| Ok::<_, EngineError>((i, type_of(i)?)))
                    .transpose()?,
            })
        })
        .collect::<Result<_>>()?;
    for (k, _) in group_by.iter().enumerate() {
        if !outputs
            .iter()
            .any(|(_, o)| matches!(o, Output::Key(i) if *i == k))
        {
            return Err(EngineError::Invalid(format!(
                "Key missing from projection (ie, SELECT). The query used to build the sink must include the grouping expression {} in its projection.",
                group_by[k]
            )));
        }
    }
    let mut key_cols = Vec::new();
    let mut value_cols = Vec::new();
    let mut output_types = Vec::new();
    let mut fields = vec![
        Field::new("ROWTIME", DataType::Int64, false),
        Field::new("ROWOFFSET", DataType::Int64, false),
    ];
    for (name, o) in &outputs {
        let ty = match o {
            Output::Key(k) => keys[*k].clone(),
            Output::Agg(a) => calls[*a]
                .kind
                .result_type(calls[*a].arg.as_ref().map(|(_, t)| t))?,
        };
        if format!("{ty}").contains("BYTES") {
            return Err(EngineError::Unsupported(
                "BYTES in aggregation results".into(),
            ));
        }
        let col = Column::new(name, ty.clone());
        fields.push(Field::new(name, weir_format::arrow_type(&ty), true));
        output_types.push(ty);
        match o {
            Output::Key(_) => key_cols.push(col),
            Output::Agg(_) => value_cols.push(col),
        }
    }
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
    if value_cols.is_empty() {
        return Err(EngineError::Invalid(
            "The projection contains no value columns.".into(),
        ));
    }
    Ok(Aggregator {
        pre,
        keys,
        calls,
        outputs,
        output_layout_columns: (key_cols, value_cols),
        output_schema: Arc::new(Schema::new(fields)),
        output_types,
        state: HashMap::new(),
    })
}

impl Aggregator {
    /// Folds the stateless step's output (ROWTIME, ROWOFFSET, keys, arguments) into the
    /// groups, row by row; one output row per input row with a non-null key. Rows whose
    /// result does not fit its columns are left out, returned by source offset with why.
    pub fn process(&mut self, pre: &RecordBatch) -> (RecordBatch, Vec<(u64, String)>) {
        let rowtimes = pre.column(0).as_primitive::<Int64Type>();
        let offsets = pre.column(1).as_primitive::<Int64Type>();
        let mut rows = Vec::with_capacity(pre.num_rows());
        for row in 0..pre.num_rows() {
            let key: Vec<Value> = self
                .keys
                .iter()
                .enumerate()
                .map(|(i, ty)| weir_format::convert::value_at(pre.column(2 + i), row, ty))
                .collect();
            // ksqlDB drops rows whose grouping key is null.
            if key.iter().all(Value::is_null) {
                continue;
            }
            let id = serde_json::to_string(&key).expect("JSON values serialize");
            let calls = &self.calls;
            let (time, states) = self
                .state
                .entry(id)
                .or_insert_with(|| (i64::MIN, calls.iter().map(|c| c.kind.initial()).collect()));
            *time = (*time).max(rowtimes.value(row));
            for (c, state) in calls.iter().zip(states.iter_mut()) {
                let arg = match &c.arg {
                    Some((i, ty)) => weir_format::convert::value_at(pre.column(2 + i), row, ty),
                    None => Value::Null,
                };
                c.kind.update(state, &arg, c.arg.as_ref().map(|(_, t)| t));
            }
            let mut out = vec![json!(*time), json!(offsets.value(row))];
            for (_, o) in &self.outputs {
                out.push(match o {
                    Output::Key(k) => key[*k].clone(),
                    Output::Agg(a) => calls[*a].kind.result(&states[*a]),
                });
            }
            rows.push(out);
        }
        let offsets_of: Vec<u64> = rows.iter().map(|r| r[1].as_u64().unwrap_or(0)).collect();
        let (batch, bad) = weir_format::convert::rows_to_batch(&self.output_schema, rows);
        let bad = bad
            .into_iter()
            .map(|(i, why)| {
                (
                    offsets_of[i],
                    format!("Error computing the aggregate: {why}"),
                )
            })
            .collect();
        (batch, bad)
    }

    /// The state, for a checkpoint.
    pub fn snapshot(&self) -> Value {
        Value::Object(
            self.state
                .iter()
                .map(|(k, (t, s))| (k.clone(), json!([t, s])))
                .collect(),
        )
    }

    /// Puts back a checkpoint's state.
    pub fn restore(&mut self, snapshot: &Value) {
        if let Some(m) = snapshot.as_object() {
            self.state = m
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), (v[0].as_i64()?, v[1].as_array()?.clone()))))
                .collect();
        }
    }

    pub fn explain(&self) -> String {
        let names: Vec<String> = self
            .outputs
            .iter()
            .zip(&self.output_types)
            .map(|((n, o), t)| match o {
                Output::Key(_) => format!("{n} {t} (key)"),
                Output::Agg(a) => format!("{n} := {:?} {t}", self.calls[*a].kind),
            })
            .collect();
        format!(
            "Aggregate (one change per input record): {}",
            names.join(", ")
        )
    }
}
