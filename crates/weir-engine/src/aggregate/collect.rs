//! The collection and offset aggregates (COLLECT_LIST, COLLECT_SET, COUNT_DISTINCT, TOPK,
//! TOPKDISTINCT, HISTOGRAM, LATEST_BY_OFFSET, EARLIEST_BY_OFFSET, ATTR) and plugin
//! aggregates, as [`Accumulator`]s.
//!
//! The collection aggregates keep the values they hold in arrow's row format (one row
//! per value, encoded once per batch for the whole argument column), so any argument
//! type (structs, lists, maps) is held and compared as bytes and its results are built
//! back into Arrow arrays with one `convert_rows` per batch. Row bytes order like the
//! values do, which gives TOPK its order (`TopRows` keeps TOPK's rows with other
//! columns). Only set-like aggregates over values holding a MAP keep JSON states
//! (`JsonStates`): maps equal in any entry order, which their rows do not.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int64Array, ListArray, MapArray, StructArray};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde_json::{Value, json};
use weir_sql::ast::SqlType;

use super::accumulator::{Accumulator, Emitted, Op, corrupt, grow_to, put_slice, take, take_slice};
use super::plan::{AggKind, Params, PluginRef};
use crate::error::{EngineError, Result};
use crate::rowcodec::RowCodec;
use crate::types::cast_to;

type Bytes = Box<[u8]>;

/// A collection or offset aggregate's states: per group the values it holds, as rows.
#[derive(Debug)]
pub(crate) struct RowStates {
    kind: AggKind,
    params: Params,
    arg_type: DataType,
    result_type: DataType,
    codec: RowCodec,
    values: Vec<Vec<Bytes>>,
    /// HISTOGRAM: each value's count; ATTR: 1 once two values differed.
    counts: Vec<Vec<i64>>,
}

impl Clone for RowStates {
    fn clone(&self) -> Self {
        let mut c = RowStates::new(
            self.kind,
            self.params,
            self.arg_type.clone(),
            self.result_type.clone(),
        )
        .expect("the same types convert");
        c.values = self.values.clone();
        c.counts = self.counts.clone();
        c
    }
}

impl RowStates {
    pub fn new(
        kind: AggKind,
        params: Params,
        arg_type: DataType,
        result_type: DataType,
    ) -> Result<RowStates> {
        Ok(RowStates {
            codec: RowCodec::new(std::slice::from_ref(&arg_type))?,
            kind,
            params,
            arg_type,
            result_type,
            values: Vec::new(),
            counts: Vec::new(),
        })
    }

    /// Folds one value (its row; `valid`: not null) into a group's values.
    fn fold(&mut self, g: usize, row: &[u8], valid: bool) {
        let Params { n, ignore_nulls } = self.params;
        let values = &mut self.values[g];
        match self.kind {
            AggKind::LatestByOffset | AggKind::EarliestByOffset if n.is_some() => {
                let n = n.unwrap_or(1);
                if (!valid && ignore_nulls) || n == 0 {
                    return;
                }
                if self.kind == AggKind::LatestByOffset {
                    values.push(row.into());
                    if values.len() > n {
                        values.remove(0);
                    }
                } else if values.len() < n {
                    values.push(row.into());
                }
            }
            AggKind::LatestByOffset if valid || !ignore_nulls => *values = vec![row.into()],
            AggKind::EarliestByOffset if (valid || !ignore_nulls) && values.is_empty() => {
                values.push(row.into())
            }
            AggKind::LatestByOffset | AggKind::EarliestByOffset => {}
            AggKind::Attr => match values.first() {
                None => values.push(row.into()),
                Some(v) if v.as_ref() != row => self.counts[g] = vec![1],
                Some(_) => {}
            },
            // `ksql.functions.collect_list.limit` / `collect_set.limit`: at most n values.
            AggKind::CollectList | AggKind::CollectSet if n.is_some_and(|n| values.len() >= n) => {}
            AggKind::CollectList => values.push(row.into()),
            AggKind::CollectSet if !values.iter().any(|v| v.as_ref() == row) => {
                values.push(row.into())
            }
            AggKind::CountDistinct if valid && !values.iter().any(|v| v.as_ref() == row) => {
                values.push(row.into())
            }
            // Largest first; equal values in arrival order.
            AggKind::TopK | AggKind::TopKDistinct if valid => {
                if self.kind == AggKind::TopKDistinct && values.iter().any(|v| v.as_ref() == row) {
                    return;
                }
                let at = values.partition_point(|v| v.as_ref() >= row);
                values.insert(at, row.into());
                values.truncate(n.unwrap_or(1));
            }
            AggKind::Histogram if valid => {
                let counts = &mut self.counts[g];
                match values.iter().position(|v| v.as_ref() == row) {
                    Some(i) => counts[i] += 1,
                    None => {
                        values.push(row.into());
                        counts.push(1);
                    }
                }
            }
            _ => {}
        }
    }

    /// Takes one value back out (a table row replaced or deleted).
    fn unfold(&mut self, g: usize, row: &[u8], valid: bool) {
        let values = &mut self.values[g];
        match self.kind {
            AggKind::CollectList => {
                if let Some(i) = values.iter().position(|v| v.as_ref() == row) {
                    values.remove(i);
                }
            }
            AggKind::Histogram if valid => {
                if let Some(i) = values.iter().position(|v| v.as_ref() == row) {
                    let counts = &mut self.counts[g];
                    counts[i] -= 1;
                    if counts[i] <= 0 {
                        values.remove(i);
                        counts.remove(i);
                    }
                }
            }
            _ => {}
        }
    }

    /// The values of these rows, as an array of the argument's type.
    fn decode<'a>(&self, rows: impl Iterator<Item = &'a [u8]>) -> Result<ArrayRef> {
        let mut columns = self.codec.decode(rows)?;
        Ok(columns.pop().expect("one column"))
    }

    /// What group `g` gives now, appended to the batch's results.
    fn emit(&self, g: usize, out: &mut Snapshot) {
        let values = &self.values[g];
        let value = match self.kind {
            AggKind::CountDistinct => {
                out.lengths.push(values.len());
                return;
            }
            // The first value while every value has been the same, else null.
            AggKind::Attr => values.first().filter(|_| self.counts[g].is_empty()),
            AggKind::Histogram => {
                out.counts.extend(&self.counts[g]);
                None
            }
            _ => values.first(),
        };
        if self.collects() {
            out.lengths.push(values.len());
            for v in values {
                out.push(v);
            }
        } else {
            out.push(value.map_or(self.codec.null_row(), |v| v.as_ref()));
        }
    }

    /// Whether the result is the values held (a list, or a histogram's map), not one.
    fn collects(&self) -> bool {
        match self.kind {
            AggKind::LatestByOffset | AggKind::EarliestByOffset => self.params.n.is_some(),
            AggKind::Attr => false,
            _ => true,
        }
    }

    fn results(&self, out: &Snapshot) -> Result<ArrayRef> {
        let rows = || out.rows();
        let lengths = || OffsetBuffer::<i32>::from_lengths(out.lengths.iter().copied());
        if !self.collects() {
            return cast_to(self.decode(rows())?, &self.result_type);
        }
        match (&self.result_type, self.kind) {
            (_, AggKind::CountDistinct) => Ok(Arc::new(Int64Array::from_iter_values(
                out.lengths.iter().map(|n| *n as i64),
            ))),
            (DataType::Map(entries, sorted), _) => {
                let DataType::Struct(fields) = entries.data_type() else {
                    return Err(EngineError::Execution("a map of entries".into()));
                };
                let keys = cast_to(self.decode(rows())?, fields[0].data_type())?;
                let counts = Arc::new(Int64Array::from(out.counts.clone()));
                let counts = cast_to(counts, fields[1].data_type())?;
                let entries_array = StructArray::try_new(fields.clone(), vec![keys, counts], None)?;
                Ok(Arc::new(MapArray::try_new(
                    entries.clone(),
                    lengths(),
                    entries_array,
                    None,
                    *sorted,
                )?))
            }
            (DataType::List(field), _) => {
                let values = cast_to(self.decode(rows())?, field.data_type())?;
                Ok(Arc::new(ListArray::try_new(
                    field.clone(),
                    lengths(),
                    values,
                    None,
                )?))
            }
            (other, kind) => Err(EngineError::Execution(format!(
                "{kind:?} cannot give {other}"
            ))),
        }
    }
}

/// Whether values of this type hold a map: maps equal in ksqlDB whatever their entries'
/// order, which their rows do not.
pub(crate) fn holds_map(t: &DataType) -> bool {
    match t {
        DataType::Map(..) => true,
        DataType::List(f) | DataType::LargeList(f) => holds_map(f.data_type()),
        DataType::Struct(fields) => fields.iter().any(|f| holds_map(f.data_type())),
        _ => false,
    }
}

/// The results of a batch's emits as they were when emitted: rows in one buffer, and
/// per emit how many (lists, maps) and a histogram's counts.
#[derive(Debug, Default)]
struct Snapshot {
    bytes: Vec<u8>,
    ends: Vec<usize>,
    lengths: Vec<usize>,
    counts: Vec<i64>,
}

impl Snapshot {
    fn push(&mut self, row: &[u8]) {
        self.bytes.extend_from_slice(row);
        self.ends.push(self.bytes.len());
    }

    fn rows(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(&self.ends).map(|(s, e)| &self.bytes[s..*e])
    }
}

/// TOPK(sort, other columns..., k): the top k rows of each group, largest sort value first
/// and equal ones in arrival order, as structs of the sort column (`sort_col`) and the
/// others (`col0`, ...). Each row is kept as its sort value's row (to order by) and the
/// whole row's.
#[derive(Debug, Clone)]
pub(crate) struct TopRows {
    k: usize,
    sort: RowCodec,
    rows: RowCodec,
    result_type: DataType,
    tops: Vec<Vec<(Bytes, Bytes)>>,
}

impl TopRows {
    pub fn new(k: usize, types: &[DataType], result_type: DataType) -> Result<TopRows> {
        Ok(TopRows {
            k,
            sort: RowCodec::new(&types[..1])?,
            rows: RowCodec::new(types)?,
            result_type,
            tops: Vec::new(),
        })
    }

    fn results(&self, out: &Snapshot) -> Result<ArrayRef> {
        let DataType::List(item) = &self.result_type else {
            return Err(EngineError::Execution("TOPK gives a list".into()));
        };
        let DataType::Struct(fields) = item.data_type() else {
            return Err(EngineError::Execution(
                "TOPK gives a list of structs".into(),
            ));
        };
        let columns = self
            .rows
            .decode(out.rows())?
            .into_iter()
            .zip(fields.iter())
            .map(|(c, f)| cast_to(c, f.data_type()))
            .collect::<Result<Vec<_>>>()?;
        let structs = StructArray::try_new(fields.clone(), columns, None)?;
        Ok(Arc::new(ListArray::try_new(
            item.clone(),
            OffsetBuffer::<i32>::from_lengths(out.lengths.iter().copied()),
            Arc::new(structs),
            None,
        )?))
    }
}

impl Accumulator for TopRows {
    fn run(
        &mut self,
        ops: &[Op],
        groups: usize,
        args: &[ArrayRef],
        _: &mut Vec<(u32, String)>,
    ) -> Result<Emitted> {
        grow_to(&mut self.tops, groups, Vec::new());
        let sorts = self.sort.encode(&args[..1])?;
        let rows = self.rows.encode(args)?;
        let nulls = args[0].logical_nulls();
        let mut out = Snapshot::default();
        for op in ops {
            match *op {
                Op::Reset(g) => self.tops[g as usize].clear(),
                Op::Fold(g, r) if nulls.as_ref().is_none_or(|n| n.is_valid(r as usize)) => {
                    let sort = sorts.row(r as usize);
                    let top = &mut self.tops[g as usize];
                    let at = top.partition_point(|(s, _)| s.as_ref() >= sort.as_ref());
                    top.insert(
                        at,
                        (sort.as_ref().into(), rows.row(r as usize).as_ref().into()),
                    );
                    top.truncate(self.k);
                }
                Op::Emit(g) => {
                    let top = &self.tops[g as usize];
                    out.lengths.push(top.len());
                    for (_, row) in top {
                        out.push(row);
                    }
                }
                _ => {}
            }
        }
        Ok(Emitted::all(self.results(&out)?))
    }

    fn free(&mut self, g: u32) {
        if let Some(t) = self.tops.get_mut(g as usize) {
            *t = Vec::new();
        }
    }

    fn save(&self, g: u32, out: &mut Vec<u8>) {
        let top = &self.tops[g as usize];
        out.extend_from_slice(&(top.len() as u32).to_le_bytes());
        for (sort, row) in top {
            put_slice(out, sort);
            put_slice(out, row);
        }
    }

    fn load(&mut self, g: u32, bytes: &mut &[u8]) -> Result<()> {
        grow_to(&mut self.tops, g as usize + 1, Vec::new());
        let n = u32::from_le_bytes(take(bytes)?);
        let mut top = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let sort = take_slice(bytes)?.into();
            top.push((sort, take_slice(bytes)?.into()));
        }
        self.tops[g as usize] = top;
        Ok(())
    }

    fn boxed_clone(&self) -> Box<dyn Accumulator> {
        Box::new(self.clone())
    }
}

impl Accumulator for RowStates {
    fn run(
        &mut self,
        ops: &[Op],
        groups: usize,
        args: &[ArrayRef],
        _: &mut Vec<(u32, String)>,
    ) -> Result<Emitted> {
        grow_to(&mut self.values, groups, Vec::new());
        grow_to(&mut self.counts, groups, Vec::new());
        let arg = cast_to(args[0].clone(), &self.arg_type)?;
        let rows = self.codec.encode(std::slice::from_ref(&arg))?;
        let nulls = arg.logical_nulls();
        let valid = |r: u32| nulls.as_ref().is_none_or(|n| n.is_valid(r as usize));
        let mut out = Snapshot::default();
        for op in ops {
            match *op {
                Op::Reset(g) => {
                    self.values[g as usize].clear();
                    self.counts[g as usize].clear();
                }
                Op::Fold(g, r) => self.fold(g as usize, rows.row(r as usize).as_ref(), valid(r)),
                Op::Unfold(g, r) => {
                    self.unfold(g as usize, rows.row(r as usize).as_ref(), valid(r))
                }
                Op::Emit(g) => self.emit(g as usize, &mut out),
            }
        }
        Ok(Emitted::all(self.results(&out)?))
    }

    fn free(&mut self, g: u32) {
        if let Some(v) = self.values.get_mut(g as usize) {
            *v = Vec::new();
        }
        if let Some(c) = self.counts.get_mut(g as usize) {
            *c = Vec::new();
        }
    }

    fn save(&self, g: u32, out: &mut Vec<u8>) {
        let (values, counts) = (&self.values[g as usize], &self.counts[g as usize]);
        out.extend_from_slice(&(values.len() as u32).to_le_bytes());
        for v in values {
            put_slice(out, v);
        }
        out.extend_from_slice(&(counts.len() as u32).to_le_bytes());
        for c in counts {
            out.extend_from_slice(&c.to_le_bytes());
        }
    }

    fn load(&mut self, g: u32, bytes: &mut &[u8]) -> Result<()> {
        grow_to(&mut self.values, g as usize + 1, Vec::new());
        grow_to(&mut self.counts, g as usize + 1, Vec::new());
        let n = u32::from_le_bytes(take(bytes)?);
        let mut values = Vec::with_capacity(n as usize);
        for _ in 0..n {
            values.push(take_slice(bytes)?.into());
        }
        let n = u32::from_le_bytes(take(bytes)?);
        let mut counts = Vec::with_capacity(n as usize);
        for _ in 0..n {
            counts.push(i64::from_le_bytes(take(bytes)?));
        }
        self.values[g as usize] = values;
        self.counts[g as usize] = counts;
        Ok(())
    }

    fn boxed_clone(&self) -> Box<dyn Accumulator> {
        Box::new(self.clone())
    }
}

/// COLLECT_SET, COUNT_DISTINCT, TOPKDISTINCT or ATTR over values that hold a MAP: one
/// JSON value per group, whose equality ignores map entries' order as ksqlDB's does.
#[derive(Debug, Clone)]
pub(crate) struct JsonStates {
    kind: AggKind,
    params: Params,
    /// The argument's type.
    arg: Option<SqlType>,
    result: SqlType,
    /// The result's one-field schema, for converting emitted values.
    field: SchemaRef,
    states: Vec<Value>,
}

impl JsonStates {
    pub fn new(kind: AggKind, params: Params, arg: Option<SqlType>, result: SqlType) -> JsonStates {
        let field = Arc::new(Schema::new(vec![Field::new(
            "result",
            weir_format::arrow_type(&result),
            true,
        )]));
        JsonStates {
            kind,
            params,
            arg,
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
        let first = |r: u32| match (&self.arg, args.first()) {
            (Some(t), Some(a)) => weir_format::convert::value_at(a, r as usize, t),
            _ => Value::Null,
        };
        let mut out = Vec::new();
        for op in ops {
            match *op {
                Op::Reset(g) => self.states[g as usize] = initial.clone(),
                Op::Fold(g, r) => {
                    self.kind
                        .update(&mut self.states[g as usize], &first(r), self.params)
                }
                Op::Unfold(g, r) => self.kind.undo(&mut self.states[g as usize], &first(r)),
                Op::Emit(g) => out.push(self.kind.result(&self.states[g as usize], self.params)),
            }
        }
        let (values, bad) = self.to_array(out);
        Ok(Emitted { values, bad })
    }

    fn free(&mut self, g: u32) {
        if let Some(s) = self.states.get_mut(g as usize) {
            *s = Value::Null;
        }
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

    fn free(&mut self, g: u32) {
        if let Some(s) = self.states.get_mut(g as usize) {
            *s = Vec::new();
        }
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

    /// Folds one argument value into the state.
    fn update(self, state: &mut Value, arg: &Value, params: Params) {
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
