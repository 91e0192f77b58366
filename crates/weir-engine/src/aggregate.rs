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

/// Hash maps keyed by group: foldhash rather than SipHash (the keys are ours, not an
/// attacker's choice of collisions to worry about per query).
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
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
    /// The value when every value of the group is the same (nulls included), else null.
    Attr,
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
            (AggKind::LatestByOffset | AggKind::EarliestByOffset | AggKind::Attr, Some(t)) => {
                t.clone()
            }
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
            AggKind::Min
            | AggKind::Max
            | AggKind::LatestByOffset
            | AggKind::EarliestByOffset
            | AggKind::Attr => Value::Null,
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
            // With other columns (arg2 their struct): structs, by sort column, equal ones
            // in arrival order.
            AggKind::TopK if arg2.is_object() => {
                if let Value::Array(a) = state {
                    let mut row = serde_json::Map::new();
                    row.insert("sort_col".into(), arg.clone());
                    if let Value::Object(others) = arg2 {
                        row.extend(others.clone());
                    }
                    a.push(Value::Object(row));
                    a.sort_by(|x, y| descending(&x["sort_col"], &y["sort_col"]));
                    a.truncate(params.n.unwrap_or(1));
                }
            }
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
            AggKind::Attr => match state {
                Value::Object(m) => {
                    if m.get("v") != Some(arg) {
                        m.insert("same".into(), json!(false));
                    }
                }
                _ => *state = json!({"v": arg, "same": true}),
            },
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
                match state {
                    Value::Array(a) if a.len() == 2 => {
                        a[0] = json!(sum);
                        a[1] = json!(count);
                    }
                    _ => *state = json!([sum, count]),
                }
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
            // `ksql.functions.collect_list.limit` / `collect_set.limit`: at most n values.
            AggKind::CollectList | AggKind::CollectSet
                if state
                    .as_array()
                    .is_some_and(|a| params.n.is_some_and(|n| a.len() >= n)) => {}
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
            AggKind::Attr if state["same"] == json!(true) => state["v"].clone(),
            AggKind::Attr => Value::Null,
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
    /// TOPK's other columns, carried in its result's structs.
    extra: Vec<(usize, SqlType)>,
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
    /// Session windows: the (source offset, argument values) of every row in it, to fold
    /// again when sessions merge.
    inputs: Vec<(i64, Vec<(Value, Value)>)>,
}

/// A group: its key values (JSON text) and, when windowed, its window's start and end.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct GroupId {
    key: String,
    window: Option<(i64, i64)>,
}

/// What a window clause asks for, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WindowSpec {
    /// TUMBLING is HOPPING with advance = size.
    Time {
        size: i64,
        advance: i64,
    },
    Session {
        gap: i64,
    },
}

/// ksqlDB's grace period when a window does not say (Kafka Streams' old default).
const DEFAULT_GRACE_MS: i64 = 24 * 3_600_000;

/// A windowed aggregation's event-time bookkeeping.
#[derive(Debug, Clone)]
struct Windowing {
    spec: WindowSpec,
    grace: i64,
    /// How long a window's state is kept after it ends (pull queries read it).
    retention: i64,
    emit_final: bool,
    /// The latest record timestamp seen: windows ending at or before it minus the grace
    /// period are closed.
    stream_time: i64,
    /// Records that arrived after every window they belong to had closed.
    late: u64,
    /// Session windows per group key.
    sessions: FastMap<String, std::collections::BTreeSet<(i64, i64)>>,
    /// EMIT FINAL: windows not yet emitted, by end.
    pending: std::collections::BTreeSet<(i64, i64, String)>,
    /// Stream time at the last purge of expired windows.
    purged_at: i64,
}

impl Windowing {
    fn new(w: &weir_sql::ast::WindowExpr, emit_final: bool) -> Windowing {
        use weir_sql::ast::WindowKind;
        let ms = |d: &weir_sql::ast::Duration| d.as_millis().min(i64::MAX as u64 / 4) as i64;
        let spec = match &w.kind {
            WindowKind::Tumbling { size } => WindowSpec::Time {
                size: ms(size),
                advance: ms(size),
            },
            WindowKind::Hopping { size, advance } => WindowSpec::Time {
                size: ms(size),
                advance: ms(advance),
            },
            WindowKind::Session { gap } => WindowSpec::Session { gap: ms(gap) },
        };
        // EMIT FINAL without a grace period closes a window at its end.
        let grace =
            w.grace
                .as_ref()
                .map(ms)
                .unwrap_or(if emit_final { 0 } else { DEFAULT_GRACE_MS });
        let span = match spec {
            WindowSpec::Time { size, .. } => size,
            WindowSpec::Session { gap } => gap,
        };
        Windowing {
            spec,
            grace,
            retention: w.retention.as_ref().map(ms).unwrap_or(0).max(span + grace),
            emit_final,
            stream_time: i64::MIN,
            late: 0,
            sessions: FastMap::default(),
            pending: Default::default(),
            purged_at: i64::MIN,
        }
    }

    fn key_window(&self) -> crate::catalog::KeyWindow {
        match self.spec {
            WindowSpec::Time { size, .. } => crate::catalog::KeyWindow::Time { size_ms: size },
            WindowSpec::Session { .. } => crate::catalog::KeyWindow::Session,
        }
    }

    /// The time windows a record at `time` falls in, oldest first.
    fn time_windows(size: i64, advance: i64, time: i64) -> Vec<(i64, i64)> {
        let mut out = Vec::new();
        if advance <= 0 || time < 0 {
            return out;
        }
        let mut start = time - time.rem_euclid(advance);
        while start > time - size && start >= 0 {
            out.push((start, start + size));
            start -= advance;
        }
        out.reverse();
        out
    }
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
    /// Their types, when one holds BYTES: values read as base64 go back in as the bytes.
    bytes_types: Option<Vec<SqlType>>,
    outputs: Vec<Output>,
    having: Option<Compiled>,
    /// Key columns then value columns, as the sink declares them.
    pub output_layout_columns: (Vec<Column>, Vec<Column>),
    /// ROWTIME, ROWOFFSET, then the select items.
    output_schema: SchemaRef,
    /// Per group (its key values as JSON text).
    state: FastMap<GroupId, Group>,
    /// The groups (and, over a table, the source rows) changed or removed since a
    /// checkpoint last took them: what the next checkpoint carries.
    changed: FastSet<GroupId>,
    changed_rows: FastSet<String>,
    /// The groups made since then: one gone again by the next checkpoint (a window
    /// opened and purged within a batch) was never saved, and needs no removal.
    born: FastSet<GroupId>,
    /// Off on engines that keep no checkpoints: nothing is recorded.
    tracking: bool,
    /// Over a table: where the source key columns and the WHERE condition are among the
    /// stateless step's projections, and per source key (JSON text) the group its row
    /// counts in and the argument values it added, to take back when the row changes.
    table: Option<TableInput>,
    window: Option<Windowing>,
    /// `weir.aggregate.coalesce`: a batch gives each group's last change only, not one
    /// per input record (fewer records out, same final state).
    pub coalesce: bool,
}

#[derive(Debug, Clone)]
struct TableInput {
    source_keys: Vec<(usize, SqlType)>,
    condition: Option<usize>,
    rows: FastMap<String, (String, Vec<(Value, Value)>)>,
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

/// Plans `query` (which has a GROUP BY) over `source`; for a sink, or for a push query's
/// client (`to_sink` false: the keys need not be selected, nor any value).
pub fn plan_aggregate(
    functions: &Functions,
    query: &weir_sql::ast::Query,
    source: &crate::catalog::Source,
    to_sink: bool,
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
            pre_items.push(SelectItem::Expr {
                expr: args[i].clone(),
                alias: Some(sql::Ident::new(format!("WEIR_ARG_{n}_{i}"))),
            });
            pre_items.len() - 1
        };
        let arg = (kind != AggKind::CountStar).then(|| column(0));
        let arg2 = (kind == AggKind::Correlation).then(|| column(1));
        let extra: Vec<usize> = extras.map(&mut column).collect();
        calls.push((kind, arg, arg2, params, plugin, extra));
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
        .map(|(kind, arg, arg2, params, plugin, extra)| {
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
    if let Some(w) = &window {
        for b in crate::WINDOW_BOUNDS {
            middle_fields.push(Field::new(b, DataType::Int64, true));
        }
        if matches!(w.spec, WindowSpec::Session { .. }) && calls.iter().any(|c| c.plugin.is_some())
        {
            return unsupported("plugin aggregates over session windows");
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
    if value_cols.is_empty() && to_sink {
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
        state: FastMap::default(),
        changed: Default::default(),
        changed_rows: Default::default(),
        born: Default::default(),
        tracking: false,
        table: from_table.then(|| TableInput {
            source_keys: table_columns
                .0
                .iter()
                .zip(&source.layout.key_columns)
                .map(|(i, c)| (*i, c.ty.clone()))
                .collect(),
            condition: table_columns.1,
            rows: FastMap::default(),
        }),
        window,
        coalesce: false,
        bytes_types: middle_types
            .iter()
            .any(|t| format!("{t}").contains("BYTES"))
            .then_some(middle_types),
    })
}

impl Aggregator {
    /// ksqlDB's `ksql.functions.collect_list.limit` and `collect_set.limit`: the most
    /// values those lists keep.
    pub fn limit_collections(&mut self, list: Option<usize>, set: Option<usize>) {
        for c in &mut self.calls {
            match c.kind {
                AggKind::CollectList => c.params.n = list,
                AggKind::CollectSet => c.params.n = set,
                _ => {}
            }
        }
    }

    /// A push query's columns: the select list, with a windowed result's WINDOWSTART and
    /// WINDOWEND after its key columns (as ksqlDB shows them). Each is (name, type, index
    /// of its column in a change batch).
    pub fn client_columns(&self) -> Result<Vec<(String, SqlType, usize)>> {
        let mut out = Vec::new();
        let fields = self.output_schema.fields();
        let window_at = self.outputs.iter().take_while(|o| o.is_key).count();
        for (i, o) in self.outputs.iter().enumerate() {
            if i == window_at && self.window.is_some() {
                for (k, b) in crate::WINDOW_BOUNDS.iter().enumerate() {
                    out.push((b.to_string(), SqlType::Bigint, 2 + self.outputs.len() + k));
                }
            }
            out.push((
                o.name.clone(),
                crate::types::sql_type_of(fields[2 + i].data_type())?,
                2 + i,
            ));
        }
        if self.window.is_some() && window_at == self.outputs.len() {
            for (k, b) in crate::WINDOW_BOUNDS.iter().enumerate() {
                out.push((b.to_string(), SqlType::Bigint, 2 + self.outputs.len() + k));
            }
        }
        Ok(out)
    }
}

/// The columns after the select list that carry a windowed result's window, for its key.
pub const WINDOW_COLUMNS: [&str; 2] = ["WEIR_WINDOW_START", "WEIR_WINDOW_END"];

/// Records `k` as changed (when tracking), cloning it only the first time.
fn mark<K: std::hash::Hash + Eq + Clone>(changed: &mut FastSet<K>, tracking: bool, k: &K) {
    if tracking && !changed.contains(k) {
        changed.insert(k.clone());
    }
}

/// The changes a batch makes: runs of rows or of tombstones, in order.
pub type Changes = Vec<crate::ChangeBatch>;

/// Why a change is made: the group's new row, or its removal (a merged session window).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Update,
    Delete,
}

/// A change's record timestamp, source offset, group and kind.
type Meta = (i64, i64, GroupId, Change);

impl Aggregator {
    /// The window kind of the output's keys, when the aggregation is windowed.
    pub fn key_window(&self) -> Option<crate::catalog::KeyWindow> {
        self.window.as_ref().map(Windowing::key_window)
    }

    /// Records dropped because they arrived after their windows closed.
    pub fn late_records(&self) -> u64 {
        self.window.as_ref().map_or(0, |w| w.late)
    }

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
        let mut meta: Vec<Meta> = Vec::with_capacity(pre.num_rows());
        let mut plugin_failures: Vec<(u64, String)> = Vec::new();
        let calls = &self.calls;
        let new_group = || Group {
            time: i64::MIN,
            states: calls.iter().map(|c| c.kind.initial()).collect(),
            emitted: false,
            inputs: Vec::new(),
        };
        // A group's row as the select list sees it: its keys, its results, its window.
        // (`known`: the key's values when at hand, else read back from its text.)
        let row_of_key = |id: &GroupId, group: &Group, known: Option<&[Value]>| -> Vec<Value> {
            let mut middle: Vec<Value> = match known {
                Some(k) => k.to_vec(),
                None => serde_json::from_str(&id.key).unwrap_or_default(),
            };
            middle.extend(calls.iter().zip(&group.states).map(|(c, s)| c.result(s)));
            if let Some((start, end)) = id.window {
                middle.push(json!(start));
                middle.push(json!(end));
            }
            middle
        };
        let row_of = |id: &GroupId, group: &Group| row_of_key(id, group, None);
        // Folds argument values into a group's states (not plugin aggregates).
        let fold = |states: &mut [Value], args: &[(Value, Value)]| {
            for ((c, state), (a, b)) in calls.iter().zip(states.iter_mut()).zip(args) {
                c.kind
                    .update(state, a, b, c.arg.as_ref().map(|(_, t)| t), c.params);
            }
        };
        // Session windows keep their rows (to fold again on merges); EMIT FINAL writes
        // nothing until a window closes.
        let session = matches!(
            self.window.as_ref().map(|w| w.spec),
            Some(WindowSpec::Session { .. })
        );
        let emit = self.window.as_ref().is_none_or(|w| !w.emit_final);
        for row in 0..pre.num_rows() {
            let value = |a: &Option<(usize, SqlType)>| match a {
                Some((i, ty)) => weir_format::convert::value_at(pre.column(2 + i), row, ty),
                None => Value::Null,
            };
            // A call's second value: CORRELATION's y, or TOPK's other columns as a struct.
            let second = |c: &Call| {
                if c.extra.is_empty() {
                    return value(&c.arg2);
                }
                Value::Object(
                    c.extra
                        .iter()
                        .enumerate()
                        .map(|(k, (i, ty))| {
                            (
                                format!("col{k}"),
                                weir_format::convert::value_at(pre.column(2 + i), row, ty),
                            )
                        })
                        .collect(),
                )
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
                if let Some((old, args)) = t.rows.remove(&source_key) {
                    mark(&mut self.changed_rows, self.tracking, &source_key);
                    let old = GroupId {
                        key: old,
                        window: None,
                    };
                    if let Some(group) = self.state.get_mut(&old) {
                        mark(&mut self.changed, self.tracking, &old);
                        for ((c, state), (a, _)) in
                            calls.iter().zip(group.states.iter_mut()).zip(&args)
                        {
                            c.kind.undo(state, a, c.arg.as_ref().map(|(_, t)| t));
                        }
                        group.time = group.time.max(time);
                        retracted = Some(old);
                    }
                }
                let passes = t.condition.is_none_or(|i| {
                    let c = pre.column(2 + i).as_boolean();
                    c.is_valid(row) && c.value(row)
                });
                if !tombstones && passes && !key.iter().any(Value::is_null) {
                    let id = serde_json::to_string(&key).expect("JSON values serialize");
                    let args = calls.iter().map(|c| (value(&c.arg), second(c))).collect();
                    mark(&mut self.changed_rows, self.tracking, &source_key);
                    t.rows.insert(source_key, (id, args));
                } else {
                    // Gone (deleted, or no longer passing the WHERE): only the retraction.
                    if let Some(old) = retracted {
                        let group = &self.state[&old];
                        rows.push(row_of(&old, group));
                        meta.push((group.time, offset, old, Change::Update));
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
            // The groups this row goes into: its key's, or its key's in each open window.
            let mut targets = Vec::new();
            match self.window.as_mut() {
                None => targets.push(GroupId {
                    key: id.clone(),
                    window: None,
                }),
                Some(w) => {
                    w.stream_time = w.stream_time.max(time);
                    let close = w.stream_time.saturating_sub(w.grace);
                    match w.spec {
                        WindowSpec::Time { size, advance } => {
                            let windows = Windowing::time_windows(size, advance, time);
                            let open: Vec<_> =
                                windows.iter().filter(|(_, end)| *end > close).collect();
                            if open.is_empty() {
                                w.late += 1;
                            }
                            for &(start, end) in open {
                                let gid = GroupId {
                                    key: id.clone(),
                                    window: Some((start, end)),
                                };
                                if w.emit_final && !self.state.contains_key(&gid) {
                                    w.pending.insert((end, start, id.clone()));
                                }
                                targets.push(gid);
                            }
                        }
                        WindowSpec::Session { gap } => {
                            let sessions = w.sessions.entry(id.clone()).or_default();
                            let merging: Vec<(i64, i64)> = sessions
                                .iter()
                                .filter(|(s, e)| {
                                    *e >= time.saturating_sub(gap) && *s <= time.saturating_add(gap)
                                })
                                .copied()
                                .collect();
                            let start = merging.iter().map(|m| m.0).fold(time, i64::min);
                            let end = merging.iter().map(|m| m.1).fold(time, i64::max);
                            if end < close {
                                w.late += 1;
                                continue;
                            }
                            let gid = GroupId {
                                key: id.clone(),
                                window: Some((start, end)),
                            };
                            // The sessions it joins are replaced by one: each gets a
                            // tombstone, and their rows are folded again, in offset order.
                            if merging != [(time, time)] {
                                let mut merged = new_group();
                                for m in &merging {
                                    sessions.remove(m);
                                    let old = GroupId {
                                        key: id.clone(),
                                        window: Some(*m),
                                    };
                                    if w.emit_final {
                                        w.pending.remove(&(m.1, m.0, id.clone()));
                                    }
                                    mark(&mut self.changed, self.tracking, &old);
                                    if let Some(g) = self.state.remove(&old) {
                                        if !w.emit_final {
                                            rows.push(row_of(&old, &g));
                                            meta.push((m.1, offset, old, Change::Delete));
                                        }
                                        merged.inputs.extend(g.inputs);
                                    }
                                }
                                merged.inputs.sort_by_key(|(o, _)| *o);
                                for (_, args) in &merged.inputs {
                                    fold(&mut merged.states, args);
                                }
                                merged.time = end;
                                mark(&mut self.changed, self.tracking, &gid);
                                if self.state.insert(gid.clone(), merged).is_none() {
                                    mark(&mut self.born, self.tracking, &gid);
                                }
                                sessions.insert((start, end));
                                if w.emit_final {
                                    w.pending.insert((end, start, id.clone()));
                                }
                            }
                            targets.push(gid);
                        }
                    }
                }
            }
            // A row that moved to another group: the old group's change first.
            if let Some(old) = retracted.filter(|old| old.key != id) {
                let group = &self.state[&old];
                rows.push(row_of(&old, group));
                meta.push((group.time, offset, old, Change::Update));
            }
            for gid in targets {
                mark(&mut self.changed, self.tracking, &gid);
                if !self.state.contains_key(&gid) {
                    mark(&mut self.born, self.tracking, &gid);
                }
                let group = self.state.entry(gid.clone()).or_insert_with(new_group);
                group.time = group.time.max(time);
                if session {
                    let args: Vec<(Value, Value)> =
                        calls.iter().map(|c| (value(&c.arg), second(c))).collect();
                    fold(&mut group.states, &args);
                    group.inputs.push((offset, args));
                    group.time = gid.window.map_or(time, |(_, end)| end);
                } else {
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
                                &second(c),
                                c.arg.as_ref().map(|(_, t)| t),
                                c.params,
                            ),
                        }
                    }
                }
                if emit {
                    rows.push(row_of_key(&gid, group, Some(&key)));
                    meta.push((group.time, offset, gid, Change::Update));
                }
            }
            // EMIT FINAL: the windows this record's time closed, once each.
            if let Some(w) = self.window.as_mut().filter(|w| w.emit_final) {
                while let Some(first) = w.pending.first().cloned() {
                    if first.0.saturating_add(w.grace) > w.stream_time {
                        break;
                    }
                    w.pending.pop_first();
                    let gid = GroupId {
                        key: first.2,
                        window: Some((first.1, first.0)),
                    };
                    if let Some(group) = self.state.get(&gid) {
                        rows.push(row_of(&gid, group));
                        meta.push((group.time, offset, gid, Change::Update));
                    }
                }
            }
        }
        self.purge();
        // BYTES read out as base64 text: back to what the Arrow decoder takes.
        if let Some(types) = &self.bytes_types {
            for row in rows.iter_mut() {
                for (v, t) in row.iter_mut().zip(types) {
                    // A value that does not convert stays as it was: its row is refused
                    // below and logged.
                    if let Ok(c) = weir_format::convert::coerce(v.clone(), t) {
                        *v = c;
                    }
                }
            }
        }
        let (batch, bad) = weir_format::convert::rows_to_batch(&self.middle, rows);
        let mut failed = plugin_failures;
        for (i, why) in bad.iter().rev() {
            let (_, offset, _, _) = meta.remove(*i);
            failed.push((
                offset as u64,
                format!("Error computing the aggregate: {why}"),
            ));
        }
        match self.changes(&batch, &meta) {
            Ok(changes) => (changes, failed),
            Err(e) => {
                failed.extend(meta.iter().map(|(_, o, _, _)| {
                    (*o as u64, format!("Error computing the aggregate: {e}"))
                }));
                (Vec::new(), failed)
            }
        }
    }

    /// Drops windows past their retention, so state is bounded by the open windows.
    fn purge(&mut self) {
        let Some(w) = self.window.as_mut() else {
            return;
        };
        // Scan at most once per retention's worth of stream time.
        if w.stream_time == i64::MIN
            || (w.purged_at != i64::MIN && w.stream_time - w.purged_at < w.retention.max(1))
        {
            return;
        }
        w.purged_at = w.stream_time;
        let expired = w.stream_time.saturating_sub(w.retention);
        let (changed, tracking) = (&mut self.changed, self.tracking);
        self.state.retain(|gid, _| {
            let keep = gid.window.is_none_or(|(_, end)| end > expired);
            if !keep {
                mark(changed, tracking, gid);
            }
            keep
        });
        for sessions in w.sessions.values_mut() {
            sessions.retain(|(_, end)| *end > expired);
        }
        w.sessions.retain(|_, s| !s.is_empty());
    }

    /// The select list and HAVING over the groups' rows.
    fn changes(&mut self, middle: &RecordBatch, meta: &[Meta]) -> Result<Changes> {
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
        if self.window.is_some() {
            let bound = |end: bool| -> ArrayRef {
                Arc::new(Int64Array::from_iter_values(meta.iter().map(|m| {
                    let (s, e) = m.2.window.unwrap_or_default();
                    if end { e } else { s }
                })))
            };
            columns.push(bound(false));
            columns.push(bound(true));
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
        for (i, (_, _, id, change)) in meta.iter().enumerate() {
            if *change == Change::Delete {
                kinds.push((i as u32, true));
                continue;
            }
            // A session merged away later in the batch: its change still stands.
            let Some(group) = self.state.get_mut(id) else {
                if pass[i] {
                    kinds.push((i as u32, false));
                }
                continue;
            };
            if pass[i] {
                if !group.emitted {
                    mark(&mut self.changed, self.tracking, id);
                }
                group.emitted = true;
                kinds.push((i as u32, false));
            } else if group.emitted {
                mark(&mut self.changed, self.tracking, id);
                group.emitted = false;
                kinds.push((i as u32, true));
            }
        }
        if self.coalesce {
            // Each group's last change of the batch, in the order of those last changes.
            let mut last: HashMap<&GroupId, usize> = HashMap::new();
            for (i, (row, _)) in kinds.iter().enumerate() {
                last.insert(&meta[*row as usize].2, i);
            }
            let keep: std::collections::HashSet<usize> = last.into_values().collect();
            kinds = kinds
                .into_iter()
                .enumerate()
                .filter(|(i, _)| keep.contains(i))
                .map(|(_, k)| k)
                .collect();
        }
        let mut changes = Vec::new();
        for run in kinds.chunk_by(|a, b| a.1 == b.1) {
            let indices = UInt32Array::from_iter_values(run.iter().map(|k| k.0));
            let batch = arrow::compute::take_record_batch(&all, &indices)
                .map_err(|e| EngineError::Execution(e.to_string()))?;
            changes.push(crate::ChangeBatch {
                tombstones: run[0].1,
                batch,
            });
        }
        Ok(changes)
    }

    /// The state, for a checkpoint.
    /// What changed since the last checkpoint (this, or a full [`Aggregator::snapshot`]
    /// followed by [`Aggregator::clear_changes`]), as [`crate::delta`] entries with paths
    /// under `"aggregate"`, laid out as the snapshot lays the state out: the groups (or
    /// windows) and table rows set or removed, and the window clock. Forgets it.
    pub fn take_changes(&mut self, delta: &mut crate::delta::DeltaText) {
        let changed: Vec<GroupId> = self.changed.drain().collect();
        for id in changed {
            let group = self.state.get(&id);
            match (&self.window, id.window, group) {
                (Some(_), Some((start, end)), Some(g)) => delta.set(
                    ("aggregate", "windows", format!("{start}/{end}/{}", id.key)),
                    (&id.key, start, end, g.time, &g.states, g.emitted, &g.inputs),
                ),
                (None, None, Some(g)) => {
                    let value = (g.time, &g.states, g.emitted);
                    match &self.table {
                        None => delta.set(("aggregate", &id.key), value),
                        Some(_) => delta.set(("aggregate", "groups", &id.key), value),
                    }
                }
                // Made and gone again since the last checkpoint: never saved.
                (_, _, None) if self.born.contains(&id) => {}
                (Some(_), Some((start, end)), None) => {
                    delta.del(("aggregate", "windows", format!("{start}/{end}/{}", id.key)))
                }
                (None, None, None) => match &self.table {
                    None => delta.del(("aggregate", &id.key)),
                    Some(_) => delta.del(("aggregate", "groups", &id.key)),
                },
                // Not in a snapshot.
                _ => {}
            }
        }
        self.born.clear();
        let rows: Vec<String> = self.changed_rows.drain().collect();
        if let Some(t) = &self.table {
            for key in rows {
                match t.rows.get(&key) {
                    Some(r) => delta.set(("aggregate", "rows", &key), r),
                    None => delta.del(("aggregate", "rows", &key)),
                }
            }
        }
        if let Some(w) = &self.window {
            delta.set(("aggregate", "stream_time"), w.stream_time);
            delta.set(("aggregate", "late"), w.late);
        }
    }

    /// Forgets the changes: a full snapshot was just taken.
    pub fn clear_changes(&mut self) {
        self.changed.clear();
        self.changed_rows.clear();
        self.born.clear();
    }

    /// Records which groups change, for checkpoints (durable engines only).
    pub fn set_tracking(&mut self, on: bool) {
        self.tracking = on;
        if !on {
            self.clear_changes();
        }
    }

    pub fn snapshot(&self) -> Value {
        let groups: serde_json::Map<String, Value> = self
            .state
            .iter()
            .filter(|(k, _)| k.window.is_none())
            .map(|(k, g)| (k.key.clone(), json!([g.time, g.states, g.emitted])))
            .collect();
        if let Some(w) = &self.window {
            // An object keyed per window, so that a checkpoint can carry only the windows
            // that changed (see `Engine::checkpoint`).
            let windows: serde_json::Map<String, Value> = self
                .state
                .iter()
                .filter_map(|(k, g)| {
                    let (start, end) = k.window?;
                    Some((
                        format!("{start}/{end}/{}", k.key),
                        json!([k.key, start, end, g.time, g.states, g.emitted, g.inputs]),
                    ))
                })
                .collect();
            return json!({
                "windows": windows,
                "stream_time": w.stream_time,
                "late": w.late,
            });
        }
        match &self.table {
            None => Value::Object(groups),
            Some(t) => json!({"groups": groups, "rows": t.rows}),
        }
    }

    /// Puts back a checkpoint's state.
    pub fn restore(&mut self, snapshot: &Value) {
        self.clear_changes();
        if let Some(w) = self.window.as_mut() {
            w.stream_time = snapshot["stream_time"].as_i64().unwrap_or(i64::MIN);
            w.late = snapshot["late"].as_u64().unwrap_or(0);
            self.state.clear();
            w.sessions.clear();
            w.pending.clear();
            let windows = snapshot["windows"]
                .as_object()
                .into_iter()
                .flat_map(|m| m.values());
            for v in windows {
                let (Some(key), Some(start), Some(end), Some(time), Some(states)) = (
                    v[0].as_str(),
                    v[1].as_i64(),
                    v[2].as_i64(),
                    v[3].as_i64(),
                    v[4].as_array(),
                ) else {
                    continue;
                };
                if matches!(w.spec, WindowSpec::Session { .. }) {
                    w.sessions
                        .entry(key.to_string())
                        .or_default()
                        .insert((start, end));
                }
                if w.emit_final && end.saturating_add(w.grace) > w.stream_time {
                    w.pending.insert((end, start, key.to_string()));
                }
                self.state.insert(
                    GroupId {
                        key: key.to_string(),
                        window: Some((start, end)),
                    },
                    Group {
                        time,
                        states: states.clone(),
                        emitted: v[5].as_bool().unwrap_or(true),
                        inputs: serde_json::from_value(v[6].clone()).unwrap_or_default(),
                    },
                );
            }
            return;
        }
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
                        GroupId {
                            key: k.clone(),
                            window: None,
                        },
                        Group {
                            time: v[0].as_i64()?,
                            states: v[1].as_array()?.clone(),
                            emitted: v[2].as_bool().unwrap_or(true),
                            inputs: Vec::new(),
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
