//! The collection and offset aggregates (COLLECT_LIST, COLLECT_SET, COUNT_DISTINCT, TOPK,
//! TOPKDISTINCT, HISTOGRAM, LATEST_BY_OFFSET, EARLIEST_BY_OFFSET, ATTR) and plugin
//! aggregates, as [`Accumulator`]s.
//!
//! The collection aggregates still keep each group's state as a JSON value (lists of
//! values, a histogram's map) and fold one argument value at a time, converting the
//! argument cell to JSON and each emitted result back to Arrow; the numeric aggregates in
//! `accumulator.rs` are typed. Their checkpoint bytes are the state's JSON text.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde_json::{Value, json};
use weir_sql::ast::SqlType;

use super::accumulator::{Accumulator, Emitted, Op, corrupt, grow_to, put_slice, take_slice};
use super::plan::{AggKind, Params, PluginRef};
use crate::error::{EngineError, Result};

/// A collection or offset aggregate's states, one JSON value per group.
#[derive(Debug, Clone)]
pub(crate) struct JsonStates {
    kind: AggKind,
    params: Params,
    /// The argument's type, and CORRELATION's second or TOPK's other columns' types.
    arg: Option<SqlType>,
    others: Vec<SqlType>,
    result: SqlType,
    /// The result's one-field schema, for converting emitted values.
    field: SchemaRef,
    states: Vec<Value>,
}

impl JsonStates {
    pub fn new(
        kind: AggKind,
        params: Params,
        arg: Option<SqlType>,
        others: Vec<SqlType>,
        result: SqlType,
    ) -> JsonStates {
        let field = Arc::new(Schema::new(vec![Field::new(
            "result",
            weir_format::arrow_type(&result),
            true,
        )]));
        JsonStates {
            kind,
            params,
            arg,
            others,
            result,
            field,
            states: Vec::new(),
        }
    }

    /// A result column from JSON values; values that do not convert become nulls and are
    /// returned by index.
    fn to_array(&self, mut values: Vec<Value>) -> (ArrayRef, Vec<(usize, String)>) {
        // BYTES read out as base64 text: back to what the Arrow decoder takes.
        if format!("{}", self.result).contains("BYTES") {
            for v in values.iter_mut() {
                if let Ok(c) = weir_format::convert::coerce(v.clone(), &self.result) {
                    *v = c;
                }
            }
        }
        let rows = |values: &[Value]| values.iter().map(|v| vec![v.clone()]).collect();
        let (batch, bad) = weir_format::convert::rows_to_batch(&self.field, rows(&values));
        if bad.is_empty() {
            return (batch.column(0).clone(), bad);
        }
        for (i, _) in &bad {
            values[*i] = Value::Null;
        }
        let (batch, _) = weir_format::convert::rows_to_batch(&self.field, rows(&values));
        (batch.column(0).clone(), bad)
    }
}

impl Accumulator for JsonStates {
    fn run(
        &mut self,
        ops: &[Op],
        groups: usize,
        args: &[ArrayRef],
        _: &mut Vec<(u32, String)>,
    ) -> Result<Emitted> {
        let initial = self.kind.initial();
        grow_to(&mut self.states, groups, initial.clone());
        let value = |i: usize, ty: &SqlType, r: u32| match args.get(i) {
            Some(a) => weir_format::convert::value_at(a, r as usize, ty),
            None => Value::Null,
        };
        let first = |r: u32| match &self.arg {
            Some(t) => value(0, t, r),
            None => Value::Null,
        };
        // CORRELATION's y, or TOPK's other columns as a struct.
        let second = |r: u32| match self.others.as_slice() {
            [] => Value::Null,
            [t] if self.kind != AggKind::TopK => value(1, t, r),
            others => Value::Object(
                others
                    .iter()
                    .enumerate()
                    .map(|(k, t)| (format!("col{k}"), value(1 + k, t, r)))
                    .collect(),
            ),
        };
        let mut out = Vec::new();
        for op in ops {
            match *op {
                Op::Reset(g) => self.states[g as usize] = initial.clone(),
                Op::Fold(g, r) => self.kind.update(
                    &mut self.states[g as usize],
                    &first(r),
                    &second(r),
                    self.params,
                ),
                Op::Unfold(g, r) => self.kind.undo(&mut self.states[g as usize], &first(r)),
                Op::Emit(g) => out.push(self.kind.result(&self.states[g as usize], self.params)),
            }
        }
        let (values, bad) = self.to_array(out);
        Ok(Emitted { values, bad })
    }

    fn save(&self, g: u32, out: &mut Vec<u8>) {
        let text = serde_json::to_vec(&self.states[g as usize]).expect("JSON values serialize");
        put_slice(out, &text);
    }

    fn load(&mut self, g: u32, bytes: &mut &[u8]) -> Result<()> {
        grow_to(&mut self.states, g as usize + 1, self.kind.initial());
        self.states[g as usize] =
            serde_json::from_slice(take_slice(bytes)?).map_err(|_| corrupt())?;
        Ok(())
    }

    fn boxed_clone(&self) -> Box<dyn Accumulator> {
        Box::new(self.clone())
    }
}

/// A plugin's aggregate: per group, the plugin's serialized state, merged into a fresh
/// state to fold a row or to compute the result.
#[derive(Debug, Clone)]
pub(crate) struct PluginStates {
    plugin: PluginRef,
    states: Vec<Vec<u8>>,
}

impl PluginStates {
    pub fn new(plugin: PluginRef) -> PluginStates {
        PluginStates {
            plugin,
            states: Vec::new(),
        }
    }

    fn state(
        &self,
        bytes: &[u8],
    ) -> std::result::Result<Box<dyn crate::functions::PluginAggregateState>, String> {
        let mut s = self.plugin.0.new_state()?;
        if !bytes.is_empty() {
            s.merge(bytes)?;
        }
        Ok(s)
    }

    fn fold(&self, bytes: &mut Vec<u8>, arg: ArrayRef) -> std::result::Result<(), String> {
        let mut s = self.state(bytes)?;
        let want = self
            .plugin
            .0
            .arg_types()
            .first()
            .cloned()
            .unwrap_or(DataType::Null);
        let arg = if arg.data_type() != &want {
            arrow::compute::cast(&arg, &want).map_err(|e| e.to_string())?
        } else {
            arg
        };
        s.update(&[arg])?;
        *bytes = s.state()?;
        Ok(())
    }

    fn result(&self, bytes: &[u8]) -> std::result::Result<ArrayRef, String> {
        let out = self.state(bytes)?.result()?;
        let want = self.plugin.0.return_type();
        let out = if out.data_type() != &want {
            arrow::compute::cast(&out, &want).map_err(|e| e.to_string())?
        } else {
            out
        };
        Ok(if out.is_empty() {
            arrow::array::new_null_array(&want, 1)
        } else {
            out.slice(0, 1)
        })
    }
}

impl Accumulator for PluginStates {
    fn run(
        &mut self,
        ops: &[Op],
        groups: usize,
        args: &[ArrayRef],
        failed: &mut Vec<(u32, String)>,
    ) -> Result<Emitted> {
        grow_to(&mut self.states, groups, Vec::new());
        let mut out: Vec<ArrayRef> = Vec::new();
        let mut bad = Vec::new();
        for op in ops {
            match *op {
                Op::Reset(g) => self.states[g as usize].clear(),
                Op::Fold(g, r) => {
                    let mut bytes = std::mem::take(&mut self.states[g as usize]);
                    let arg = args[0].slice(r as usize, 1);
                    if let Err(why) = self.fold(&mut bytes, arg) {
                        failed.push((r, format!("Error in a plugin aggregate: {why}")));
                    }
                    self.states[g as usize] = bytes;
                }
                Op::Unfold(..) => {}
                Op::Emit(g) => match self.result(&self.states[g as usize]) {
                    Ok(a) => out.push(a),
                    Err(why) => {
                        bad.push((out.len(), why));
                        out.push(arrow::array::new_null_array(
                            &self.plugin.0.return_type(),
                            1,
                        ));
                    }
                },
            }
        }
        let values = if out.is_empty() {
            arrow::array::new_empty_array(&self.plugin.0.return_type())
        } else {
            let refs: Vec<&dyn Array> = out.iter().map(|a| a.as_ref()).collect();
            arrow::compute::concat(&refs).map_err(|e| EngineError::Execution(e.to_string()))?
        };
        Ok(Emitted { values, bad })
    }

    fn save(&self, g: u32, out: &mut Vec<u8>) {
        put_slice(out, &self.states[g as usize]);
    }

    fn load(&mut self, g: u32, bytes: &mut &[u8]) -> Result<()> {
        grow_to(&mut self.states, g as usize + 1, Vec::new());
        self.states[g as usize] = take_slice(bytes)?.to_vec();
        Ok(())
    }

    fn boxed_clone(&self) -> Box<dyn Accumulator> {
        Box::new(self.clone())
    }
}

impl AggKind {
    fn initial(self) -> Value {
        match self {
            AggKind::CollectList
            | AggKind::CollectSet
            | AggKind::CountDistinct
            | AggKind::TopK
            | AggKind::TopKDistinct => json!([]),
            AggKind::Histogram => json!({}),
            // The numeric aggregates and plugins have typed accumulators.
            _ => Value::Null,
        }
    }

    /// Folds one argument value (and CORRELATION's second) into the state.
    fn update(self, state: &mut Value, arg: &Value, arg2: &Value, params: Params) {
        let number = |v: &Value| v.as_f64().unwrap_or(0.0);
        let descending = |a: &Value, b: &Value| match (a, b) {
            (Value::String(x), Value::String(y)) => y.cmp(x),
            _ => number(b)
                .partial_cmp(&number(a))
                .unwrap_or(std::cmp::Ordering::Equal),
        };
        match self {
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
            // Seen marker: the first value, null or not.
            AggKind::EarliestByOffset if !params.ignore_nulls && !state.is_object() => {
                *state = json!({"v": arg});
            }
            AggKind::EarliestByOffset if !params.ignore_nulls => {}
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
            // The numeric aggregates and plugins have typed accumulators.
            _ => {}
        }
    }

    /// Takes one argument value back out of the state (a table row replaced or deleted).
    fn undo(self, state: &mut Value, arg: &Value) {
        match self {
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
            AggKind::CountDistinct => json!(state.as_array().map_or(0, Vec::len)),
            _ => state.clone(),
        }
    }
}
