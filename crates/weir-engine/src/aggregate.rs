//! GROUP BY over a stream, without windows: `CREATE TABLE ... AS SELECT keys, AGG(...)
//! FROM stream [WHERE ...] GROUP BY keys`.
//!
//! A query runs in three steps. A stateless plan (the engine's ordinary [`SelectPlan`])
//! filters each batch and computes the grouping expressions and the aggregates'
//! arguments; the [`Aggregator`] folds each row into its group's accumulators, in order;
//! then the select list and HAVING are evaluated over the group's keys and aggregate
//! results (aggregate calls replaced by columns), giving the group's new row: one change
//! per input record, as ksqlDB does with its record cache off. A group that stops
//! satisfying HAVING after it was emitted gets a tombstone. The output record's timestamp
//! is the latest its group has seen.
//!
//! The state (every group's accumulators) is a JSON object, checkpointed with the query's
//! offsets and restored on restart, so a restarted query goes on with the same state.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, UInt32Array};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use serde_json::{Value, json};
use weir_format::Column;
use weir_sql::ast::{Expr, SqlType};
use weir_sql::sqlparser::ast::{
    self as sql, FunctionArg, FunctionArgExpr, FunctionArguments, visit_expressions_mut,
};

use crate::error::{EngineError, Result};
use crate::functions::Functions;
use crate::plan::{
    Compiled, ExprCompiler, SelectPlan, column_name, plan_push, same_expr, source_alias,
};

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
    TopK,
    TopKDistinct,
    Histogram,
    StddevSamp,
    Correlation,
    /// A plugin's aggregate (see [`Call::plugin`]).
    Plugin,
}

/// Literal parameters of an aggregate call: how many values to keep (TOPK, the
/// `n` of LATEST_BY_OFFSET), and whether nulls are skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Params {
    n: Option<usize>,
    ignore_nulls: bool,
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
            "CORRELATION" => AggKind::Correlation,
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
            (
                AggKind::Min | AggKind::Max,
                Some(t @ (SqlType::Int | SqlType::Bigint | SqlType::Double | SqlType::String)),
            ) => t.clone(),
            (AggKind::CollectList | AggKind::CollectSet, Some(t)) => {
                SqlType::Array(Box::new(t.clone()))
            }
            (AggKind::LatestByOffset | AggKind::EarliestByOffset, Some(t))
                if params.n.is_some() =>
            {
                SqlType::Array(Box::new(t.clone()))
            }
            (AggKind::LatestByOffset | AggKind::EarliestByOffset, Some(t)) => t.clone(),
            (
                AggKind::TopK | AggKind::TopKDistinct,
                Some(t @ (SqlType::Int | SqlType::Bigint | SqlType::Double | SqlType::String)),
            ) => SqlType::Array(Box::new(t.clone())),
            (AggKind::Histogram, Some(SqlType::String)) => {
                SqlType::Map(Box::new(SqlType::String), Box::new(SqlType::Bigint))
            }
            (
                AggKind::StddevSamp | AggKind::Correlation,
                Some(SqlType::Int | SqlType::Bigint | SqlType::Double),
            ) => SqlType::Double,
            (_, t) => return Err(unsupported(t)),
        })
    }

    fn initial(self) -> Value {
        match self {
            AggKind::Count | AggKind::CountStar => json!(0),
            AggKind::Sum => json!(0),
            AggKind::Avg => json!([0.0, 0]),
            AggKind::CollectList
            | AggKind::CollectSet
            | AggKind::CountDistinct
            | AggKind::TopK
            | AggKind::TopKDistinct => json!([]),
            AggKind::Histogram => json!({}),
            AggKind::Plugin => json!([]),
            AggKind::StddevSamp => json!([0, 0.0, 0.0]),
            AggKind::Correlation => json!([0, 0.0, 0.0, 0.0, 0.0, 0.0]),
            AggKind::Min | AggKind::Max | AggKind::LatestByOffset | AggKind::EarliestByOffset => {
                Value::Null
            }
        }
    }

    /// Folds one argument value (and CORRELATION's second) into the state.
    fn update(
        self,
        state: &mut Value,
        arg: &Value,
        arg2: &Value,
        ty: Option<&SqlType>,
        params: Params,
    ) {
        let number = |v: &Value| v.as_f64().unwrap_or(0.0);
        let descending = |a: &Value, b: &Value| match (a, b) {
            (Value::String(x), Value::String(y)) => y.cmp(x),
            _ => number(b)
                .partial_cmp(&number(a))
                .unwrap_or(std::cmp::Ordering::Equal),
        };
        match self {
            // Plugin aggregates are folded by `plugin_update`.
            AggKind::Plugin => {}
            // The `n` forms keep a list: the last n (latest) or the first n (earliest).
            AggKind::LatestByOffset | AggKind::EarliestByOffset if params.n.is_some() => {
                let n = params.n.unwrap_or(1);
                if (arg.is_null() && params.ignore_nulls) || n == 0 {
                    return;
                }
                if !state.is_array() {
                    *state = json!([]);
                }
                if let Value::Array(a) = state {
                    if self == AggKind::LatestByOffset {
                        a.push(arg.clone());
                        if a.len() > n {
                            a.remove(0);
                        }
                    } else if a.len() < n {
                        a.push(arg.clone());
                    }
                }
            }
            AggKind::LatestByOffset if !params.ignore_nulls => *state = arg.clone(),
            AggKind::EarliestByOffset if !params.ignore_nulls => {
                if !state.is_object() {
                    // Seen marker: the first value, null or not.
                    *state = json!({"v": arg});
                }
            }
            AggKind::TopK | AggKind::TopKDistinct if arg.is_null() => {}
            AggKind::TopK | AggKind::TopKDistinct => {
                if let Value::Array(a) = state {
                    if self == AggKind::TopKDistinct && a.contains(arg) {
                        return;
                    }
                    a.push(arg.clone());
                    a.sort_by(descending);
                    a.truncate(params.n.unwrap_or(1));
                }
            }
            AggKind::Histogram if arg.is_null() => {}
            AggKind::Histogram => {
                if let (Value::Object(m), Some(k)) = (state, arg.as_str()) {
                    let c = m.get(k).and_then(Value::as_i64).unwrap_or(0);
                    m.insert(k.to_string(), json!(c + 1));
                }
            }
            AggKind::StddevSamp if arg.is_null() => {}
            AggKind::StddevSamp => {
                // Welford: count, mean, sum of squared deviations.
                let (n, mean, m2) = (
                    state[0].as_i64().unwrap_or(0) + 1,
                    number(&state[1]),
                    number(&state[2]),
                );
                let x = number(arg);
                let delta = x - mean;
                let mean = mean + delta / n as f64;
                *state = json!([n, mean, m2 + delta * (x - mean)]);
            }
            AggKind::Correlation if arg.is_null() || arg2.is_null() => {}
            AggKind::Correlation => {
                let (x, y) = (number(arg), number(arg2));
                let f = |i: usize| number(&state[i]);
                *state = json!([
                    state[0].as_i64().unwrap_or(0) + 1,
                    f(1) + x,
                    f(2) + y,
                    f(3) + x * x,
                    f(4) + y * y,
                    f(5) + x * y
                ]);
            }
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

    /// Takes one argument value back out of the state (a table row replaced or deleted).
    fn undo(self, state: &mut Value, arg: &Value, ty: Option<&SqlType>) {
        let number = |v: &Value| v.as_f64().unwrap_or(0.0);
        match self {
            AggKind::CountStar => *state = json!(state.as_i64().unwrap_or(0) - 1),
            AggKind::Count if !arg.is_null() => *state = json!(state.as_i64().unwrap_or(0) - 1),
            AggKind::Sum if !arg.is_null() => {
                *state = match ty {
                    Some(SqlType::Double) => json!(number(state) - number(arg)),
                    Some(SqlType::Int) => json!(
                        (state.as_i64().unwrap_or(0) as i32)
                            .wrapping_sub(arg.as_i64().unwrap_or(0) as i32)
                    ),
                    _ => json!(
                        state
                            .as_i64()
                            .unwrap_or(0)
                            .wrapping_sub(arg.as_i64().unwrap_or(0))
                    ),
                }
            }
            AggKind::Avg if !arg.is_null() => {
                let sum = number(&state[0]) - number(arg);
                let count = state[1].as_i64().unwrap_or(0) - 1;
                *state = json!([sum, count]);
            }
            AggKind::CollectList => {
                if let Value::Array(a) = state
                    && let Some(i) = a.iter().position(|v| v == arg)
                {
                    a.remove(i);
                }
            }
            AggKind::Histogram => {
                if let (Value::Object(m), Some(k)) = (state, arg.as_str()) {
                    let c = m.get(k).and_then(Value::as_i64).unwrap_or(0) - 1;
                    if c > 0 {
                        m.insert(k.to_string(), json!(c));
                    } else {
                        m.remove(k);
                    }
                }
            }
            _ => {}
        }
    }

    fn result(self, state: &Value, params: Params) -> Value {
        match self {
            AggKind::LatestByOffset | AggKind::EarliestByOffset if params.n.is_some() => {
                if state.is_null() {
                    json!([])
                } else {
                    state.clone()
                }
            }
            AggKind::EarliestByOffset if !params.ignore_nulls => state["v"].clone(),
            AggKind::Avg => {
                let count = state[1].as_i64().unwrap_or(0);
                if count == 0 {
                    json!(0.0)
                } else {
                    json!(state[0].as_f64().unwrap_or(0.0) / count as f64)
                }
            }
            AggKind::CountDistinct => json!(state.as_array().map_or(0, Vec::len)),
            AggKind::StddevSamp => {
                let n = state[0].as_i64().unwrap_or(0);
                let m2 = state[2].as_f64().unwrap_or(0.0);
                if n < 2 {
                    json!(0.0)
                } else {
                    double((m2 / (n - 1) as f64).sqrt())
                }
            }
            AggKind::Correlation => {
                let n = state[0].as_f64().unwrap_or(0.0);
                let f = |i: usize| state[i].as_f64().unwrap_or(0.0);
                let (sx, sy, sxx, syy, sxy) = (f(1), f(2), f(3), f(4), f(5));
                double((n * sxy - sx * sy) / ((n * sxx - sx * sx) * (n * syy - sy * sy)).sqrt())
            }
            _ => state.clone(),
        }
    }
}

/// A double as a JSON value; NaN and the infinities as ksqlDB writes them.
fn double(v: f64) -> Value {
    if v.is_nan() {
        json!("NaN")
    } else if v.is_infinite() {
        json!(if v > 0.0 { "Infinity" } else { "-Infinity" })
    } else {
        json!(v)
    }
}

/// One aggregate call.
#[derive(Debug, Clone)]
struct Call {
    kind: AggKind,
    /// Its argument among the stateless plan's projections, and the argument's type.
    arg: Option<(usize, SqlType)>,
    /// CORRELATION's second argument.
    arg2: Option<(usize, SqlType)>,
    params: Params,
    plugin: Option<PluginRef>,
}

/// A plugin aggregate a query calls (the version it was planned with).
#[derive(Clone)]
struct PluginRef(Arc<dyn crate::functions::PluginAggregate>);

impl std::fmt::Debug for PluginRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PluginAggregate")
    }
}

impl Call {
    /// The aggregate's result for a state.
    fn result(&self, state: &Value) -> Value {
        match &self.plugin {
            None => self.kind.result(state, self.params),
            Some(p) => plugin_result(&p.0, state).unwrap_or(Value::Null),
        }
    }
}

/// A plugin aggregate's state as JSON: its serialized bytes.
fn plugin_bytes(state: &Value) -> Vec<u8> {
    state
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|b| b.as_u64().map(|b| b as u8))
                .collect()
        })
        .unwrap_or_default()
}

fn plugin_state(
    p: &Arc<dyn crate::functions::PluginAggregate>,
    state: &Value,
) -> std::result::Result<Box<dyn crate::functions::PluginAggregateState>, String> {
    let mut s = p.new_state()?;
    let bytes = plugin_bytes(state);
    if !bytes.is_empty() {
        s.merge(&bytes)?;
    }
    Ok(s)
}

/// Folds one row's argument into a plugin aggregate's state.
fn plugin_update(
    p: &Arc<dyn crate::functions::PluginAggregate>,
    state: &mut Value,
    arg: ArrayRef,
) -> std::result::Result<(), String> {
    let mut s = plugin_state(p, state)?;
    let want = p.arg_types().first().cloned().unwrap_or(DataType::Null);
    let arg = if arg.data_type() != &want {
        arrow::compute::cast(&arg, &want).map_err(|e| e.to_string())?
    } else {
        arg
    };
    s.update(&[arg])?;
    *state = Value::Array(s.state()?.into_iter().map(|b| json!(b)).collect());
    Ok(())
}

fn plugin_result(
    p: &Arc<dyn crate::functions::PluginAggregate>,
    state: &Value,
) -> std::result::Result<Value, String> {
    let out = plugin_state(p, state)?.result()?;
    let ty = crate::types::sql_type_of(&p.return_type()).map_err(|e| e.to_string())?;
    Ok(if out.is_empty() {
        Value::Null
    } else {
        weir_format::convert::value_at(&out, 0, &ty)
    })
}

/// One column of the output.
#[derive(Debug, Clone)]
struct Output {
    name: String,
    compiled: Compiled,
    is_key: bool,
}

/// A group's running state.
#[derive(Debug, Clone)]
struct Group {
    /// The latest record timestamp it has seen.
    time: i64,
    states: Vec<Value>,
    /// Its last change was a row (not a tombstone or nothing): HAVING failing now
    /// retracts it.
    emitted: bool,
}

/// A planned GROUP BY and its running state.
#[derive(Debug, Clone)]
pub struct Aggregator {
    /// Filters and computes the grouping expressions then the aggregates' arguments.
    pub pre: SelectPlan,
    keys: Vec<SqlType>,
    calls: Vec<Call>,
    /// The grouping keys then the aggregate results, as the select list and HAVING see
    /// them.
    middle: SchemaRef,
    outputs: Vec<Output>,
    having: Option<Compiled>,
    /// Key columns then value columns, as the sink declares them.
    pub output_layout_columns: (Vec<Column>, Vec<Column>),
    /// ROWTIME, ROWOFFSET, then the select items.
    output_schema: SchemaRef,
    /// Per group (its key values as JSON text).
    state: HashMap<String, Group>,
    /// Over a table: where the source key columns and the WHERE condition are among the
    /// stateless step's projections, and per source key (JSON text) the group its row
    /// counts in and the argument values it added, to take back when the row changes.
    table: Option<TableInput>,
}

#[derive(Debug, Clone)]
struct TableInput {
    source_keys: Vec<(usize, SqlType)>,
    condition: Option<usize>,
    rows: HashMap<String, (String, Vec<(Value, Value)>)>,
}

fn aggregate_call(e: &Expr, functions: &Functions) -> Option<(AggKind, Vec<Expr>, bool)> {
    let Expr::Function(f) = e else { return None };
    let name = f.name.to_string();
    let kind = AggKind::from_name(&name)
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
    Some((kind, out, star))
}

fn ident(name: &str) -> Expr {
    Expr::Identifier(sql::Ident::with_quote('`', name))
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
    let mut generated = 0;
    for item in &query.select {
        let SelectItem::Expr { expr, alias } = item else {
            return Err(EngineError::Invalid(
                "SELECT * is not supported with GROUP BY: name the columns".into(),
            ));
        };
        let key = group_by.iter().position(|g| same_expr(g, expr));
        let name = match (alias, column_name(expr)) {
            (Some(a), _) => a.value.clone(),
            (None, Some(c)) => c,
            _ => {
                generated += 1;
                format!("KSQL_COL_{}", generated - 1)
            }
        };
        items.push((name, rewrite(expr), key));
    }
    let having = query.having.as_ref().map(&mut rewrite);
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
        let (kind, params) = match (*kind, *star, args.len()) {
            (AggKind::Count, _, 0) => (AggKind::CountStar, None),
            (k, false, c) if c == columns => (k, None),
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
            pre_items.push(SelectItem::Expr {
                expr: args[i].clone(),
                alias: Some(sql::Ident::new(format!("WEIR_ARG_{n}_{i}"))),
            });
            pre_items.len() - 1
        };
        let arg = (kind != AggKind::CountStar).then(|| column(0));
        let arg2 = (kind == AggKind::Correlation).then(|| column(1));
        calls.push((kind, arg, arg2, params, plugin));
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
        .map(|(kind, arg, arg2, params, plugin)| {
            let typed = |a: Option<usize>| {
                a.map(|i| Ok::<_, EngineError>((i, type_of(i)?)))
                    .transpose()
            };
            Ok(Call {
                kind,
                arg: typed(arg)?,
                arg2: typed(arg2)?,
                params,
                plugin,
            })
        })
        .collect::<Result<_>>()?;
    let mut middle_fields: Vec<Field> = group_names
        .iter()
        .zip(&keys)
        .map(|(n, t)| Field::new(n, weir_format::arrow_type(t), true))
        .collect();
    for (n, c) in calls.iter().enumerate() {
        let t = match &c.plugin {
            Some(p) => crate::types::sql_type_of(&p.0.return_type())?,
            None => c
                .kind
                .result_type(c.arg.as_ref().map(|(_, t)| t), c.params)?,
        };
        if format!("{t}").contains("BYTES") {
            return unsupported("BYTES in aggregation results");
        }
        middle_fields.push(Field::new(
            format!("WEIR_AGG_{n}"),
            weir_format::arrow_type(&t),
            true,
        ));
    }
    let middle = Arc::new(Schema::new(middle_fields));
    let alias = source_alias(query, source);
    let compiler = ExprCompiler::new(functions, &middle, Some(alias))?;
    for (k, g) in group_by.iter().enumerate() {
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
        if format!("{ty}").contains("BYTES") {
            return unsupported("BYTES in aggregation results");
        }
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
    // The key's columns come in GROUP BY order, whatever the select list's.
    key_cols.sort_by_key(|(k, _)| *k);
    let key_cols: Vec<Column> = key_cols.into_iter().map(|(_, c)| c).collect();
    let having = having
        .map(|h| {
            let c = compiler.compile(&h)?;
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
    if value_cols.is_empty() {
        return Err(EngineError::Invalid(
            "The projection contains no value columns.".into(),
        ));
    }
    Ok(Aggregator {
        pre,
        keys,
        calls,
        middle,
        outputs,
        having,
        output_layout_columns: (key_cols, value_cols),
        output_schema: Arc::new(Schema::new(fields)),
        state: HashMap::new(),
        table: from_table.then(|| TableInput {
            source_keys: table_columns
                .0
                .iter()
                .zip(&source.layout.key_columns)
                .map(|(i, c)| (*i, c.ty.clone()))
                .collect(),
            condition: table_columns.1,
            rows: HashMap::new(),
        }),
    })
}

/// The changes a batch makes: runs of rows or of tombstones, in order.
pub type Changes = Vec<(bool, RecordBatch)>;

impl Aggregator {
    /// Folds the stateless step's output (ROWTIME, ROWOFFSET, keys, arguments) into the
    /// groups, row by row, and gives each row's change (runs of rows and of tombstones,
    /// in order). Rows whose result cannot be computed are left out, returned by source
    /// offset with why.
    pub fn process(
        &mut self,
        pre: &RecordBatch,
        tombstones: bool,
    ) -> (Changes, Vec<(u64, String)>) {
        let rowtimes = pre.column(0).as_primitive::<Int64Type>();
        let offsets = pre.column(1).as_primitive::<Int64Type>();
        let mut rows = Vec::with_capacity(pre.num_rows());
        let mut meta = Vec::with_capacity(pre.num_rows());
        let mut plugin_failures: Vec<(u64, String)> = Vec::new();
        let calls = &self.calls;
        let new_group = || Group {
            time: i64::MIN,
            states: calls.iter().map(|c| c.kind.initial()).collect(),
            emitted: false,
        };
        // A group's row as the select list sees it: its keys, then its results.
        let row_of = |id: &str, group: &Group| -> Vec<Value> {
            let mut middle: Vec<Value> = serde_json::from_str(id).unwrap_or_default();
            middle.extend(calls.iter().zip(&group.states).map(|(c, s)| c.result(s)));
            middle
        };
        for row in 0..pre.num_rows() {
            let value = |a: &Option<(usize, SqlType)>| match a {
                Some((i, ty)) => weir_format::convert::value_at(pre.column(2 + i), row, ty),
                None => Value::Null,
            };
            let key: Vec<Value> = self
                .keys
                .iter()
                .enumerate()
                .map(|(i, ty)| weir_format::convert::value_at(pre.column(2 + i), row, ty))
                .collect();
            let time = rowtimes.value(row);
            let offset = offsets.value(row);
            // Over a table: take the row's earlier values out of the group they were in.
            let mut retracted = None;
            if let Some(t) = self.table.as_mut() {
                let source_key: Vec<Value> = t
                    .source_keys
                    .iter()
                    .map(|(i, ty)| weir_format::convert::value_at(pre.column(2 + i), row, ty))
                    .collect();
                let source_key = serde_json::to_string(&source_key).expect("JSON values serialize");
                if let Some((old, args)) = t.rows.remove(&source_key)
                    && let Some(group) = self.state.get_mut(&old)
                {
                    for ((c, state), (a, _)) in calls.iter().zip(group.states.iter_mut()).zip(&args)
                    {
                        c.kind.undo(state, a, c.arg.as_ref().map(|(_, t)| t));
                    }
                    group.time = group.time.max(time);
                    retracted = Some(old);
                }
                let passes = t.condition.is_none_or(|i| {
                    let c = pre.column(2 + i).as_boolean();
                    c.is_valid(row) && c.value(row)
                });
                if !tombstones && passes && !key.iter().any(Value::is_null) {
                    let id = serde_json::to_string(&key).expect("JSON values serialize");
                    let args = calls
                        .iter()
                        .map(|c| (value(&c.arg), value(&c.arg2)))
                        .collect();
                    t.rows.insert(source_key, (id, args));
                } else {
                    // Gone (deleted, or no longer passing the WHERE): only the retraction.
                    if let Some(old) = retracted {
                        let group = &self.state[&old];
                        rows.push(row_of(&old, group));
                        meta.push((group.time, offset, old));
                    }
                    continue;
                }
            } else if tombstones {
                continue;
            }
            // ksqlDB drops rows with a null grouping column.
            if key.iter().any(Value::is_null) {
                continue;
            }
            let id = serde_json::to_string(&key).expect("JSON values serialize");
            // A row that moved to another group: the old group's change first.
            if let Some(old) = retracted.filter(|old| *old != id) {
                let group = &self.state[&old];
                rows.push(row_of(&old, group));
                meta.push((group.time, offset, old));
            }
            let group = self.state.entry(id.clone()).or_insert_with(new_group);
            group.time = group.time.max(time);
            for (c, state) in calls.iter().zip(group.states.iter_mut()) {
                match (&c.plugin, &c.arg) {
                    (Some(p), Some((i, _))) => {
                        if let Err(why) =
                            plugin_update(&p.0, state, pre.column(2 + i).slice(row, 1))
                        {
                            plugin_failures.push((
                                offset as u64,
                                format!("Error in a plugin aggregate: {why}"),
                            ));
                        }
                    }
                    _ => c.kind.update(
                        state,
                        &value(&c.arg),
                        &value(&c.arg2),
                        c.arg.as_ref().map(|(_, t)| t),
                        c.params,
                    ),
                }
            }
            rows.push(row_of(&id, group));
            meta.push((group.time, offset, id));
        }
        let (batch, bad) = weir_format::convert::rows_to_batch(&self.middle, rows);
        let mut failed = plugin_failures;
        for (i, why) in bad.iter().rev() {
            let (_, offset, _) = meta.remove(*i);
            failed.push((
                offset as u64,
                format!("Error computing the aggregate: {why}"),
            ));
        }
        match self.changes(&batch, &meta) {
            Ok(changes) => (changes, failed),
            Err(e) => {
                failed.extend(
                    meta.iter().map(|(_, o, _)| {
                        (*o as u64, format!("Error computing the aggregate: {e}"))
                    }),
                );
                (Vec::new(), failed)
            }
        }
    }

    /// The select list and HAVING over the groups' rows.
    fn changes(&mut self, middle: &RecordBatch, meta: &[(i64, i64, String)]) -> Result<Changes> {
        let n = middle.num_rows();
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter_values(meta.iter().map(|m| m.0))),
            Arc::new(Int64Array::from_iter_values(meta.iter().map(|m| m.1))),
        ];
        for o in &self.outputs {
            columns.push(o.compiled.expr.evaluate(middle)?.into_array(n)?);
        }
        let all = RecordBatch::try_new(self.output_schema.clone(), columns)
            .map_err(|e| EngineError::Execution(e.to_string()))?;
        let pass: Vec<bool> = match &self.having {
            None => vec![true; n],
            Some(h) => {
                let mask = h.expr.evaluate(middle)?.into_array(n)?;
                let mask = mask.as_boolean();
                (0..n).map(|i| mask.is_valid(i) && mask.value(i)).collect()
            }
        };
        // Which rows become which change: a row, a tombstone, or nothing.
        let mut kinds: Vec<(u32, bool)> = Vec::new();
        for (i, (_, _, id)) in meta.iter().enumerate() {
            let group = self.state.get_mut(id).expect("the group exists");
            if pass[i] {
                group.emitted = true;
                kinds.push((i as u32, false));
            } else if group.emitted {
                group.emitted = false;
                kinds.push((i as u32, true));
            }
        }
        let mut changes = Vec::new();
        for run in kinds.chunk_by(|a, b| a.1 == b.1) {
            let indices = UInt32Array::from_iter_values(run.iter().map(|k| k.0));
            let batch = arrow::compute::take_record_batch(&all, &indices)
                .map_err(|e| EngineError::Execution(e.to_string()))?;
            changes.push((run[0].1, batch));
        }
        Ok(changes)
    }

    /// The state, for a checkpoint.
    pub fn snapshot(&self) -> Value {
        let groups: serde_json::Map<String, Value> = self
            .state
            .iter()
            .map(|(k, g)| (k.clone(), json!([g.time, g.states, g.emitted])))
            .collect();
        match &self.table {
            None => Value::Object(groups),
            Some(t) => json!({"groups": groups, "rows": t.rows}),
        }
    }

    /// Puts back a checkpoint's state.
    pub fn restore(&mut self, snapshot: &Value) {
        let snapshot = match self.table.as_mut() {
            None => snapshot,
            Some(t) => {
                if let Ok(rows) = serde_json::from_value(snapshot["rows"].clone()) {
                    t.rows = rows;
                }
                &snapshot["groups"]
            }
        };
        if let Some(m) = snapshot.as_object() {
            self.state = m
                .iter()
                .filter_map(|(k, v)| {
                    Some((
                        k.clone(),
                        Group {
                            time: v[0].as_i64()?,
                            states: v[1].as_array()?.clone(),
                            emitted: v[2].as_bool().unwrap_or(true),
                        },
                    ))
                })
                .collect();
        }
    }

    pub fn explain(&self) -> String {
        let calls: Vec<String> = self
            .calls
            .iter()
            .enumerate()
            .map(|(n, c)| format!("WEIR_AGG_{n} := {:?}", c.kind))
            .collect();
        let outputs: Vec<String> = self
            .outputs
            .iter()
            .map(|o| {
                format!(
                    "{}{} := {}",
                    o.name,
                    if o.is_key { " (key)" } else { "" },
                    o.compiled.expr
                )
            })
            .collect();
        let mut text = format!(
            "Aggregate by group (one change per input record): {}\nProject: {}",
            calls.join(", "),
            outputs.join(", ")
        );
        if let Some(h) = &self.having {
            text.push_str(&format!("\nHaving: {}", h.expr));
        }
        text
    }
}
