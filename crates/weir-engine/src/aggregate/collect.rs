//! The collection and offset aggregates (COLLECT_LIST, COLLECT_SET, COUNT_DISTINCT, TOPK,
//! TOPKDISTINCT, HISTOGRAM, LATEST_BY_OFFSET, EARLIEST_BY_OFFSET, ATTR) and plugin
//! aggregates, as [`Accumulator`]s.
//!
//! The collection aggregates keep the values they hold in arrow's row format (one row
//! per value, encoded once per batch for the whole argument column), so any argument
//! type (structs, lists, maps) is held and compared as bytes and its results are built
//! back into Arrow arrays with one `convert_rows` per batch. Row bytes order like the
//! values do, which gives TOPK its order (`TopRows` keeps TOPK's rows with other
//! columns). Set-like aggregates over values holding a MAP put each map's entries in key
//! order before encoding ([`maps_in_key_order`]): ksqlDB's maps are equal in any entry
//! order, rows only when their bytes are.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int64Array, ListArray, MapArray, StructArray};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::DataType;

use super::accumulator::{Accumulator, Emitted, Op, grow_to, put_slice, take, take_slice};
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
    /// The values hold maps, and the aggregate compares them: each map's entries are put
    /// in key order first (ksqlDB's maps are equal whatever their entries' order; rows
    /// compare bytes).
    canonical: bool,
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
        let compares = matches!(
            kind,
            AggKind::CollectSet
                | AggKind::CountDistinct
                | AggKind::TopKDistinct
                | AggKind::Attr
                | AggKind::Histogram
        );
        Ok(RowStates {
            canonical: compares && holds_map(&arg_type),
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
            // MIN / MAX of the types without an accumulator of their own (DECIMAL, DATE,
            // TIME, TIMESTAMP, BYTES): rows compare as their values do.
            AggKind::Max if valid && values.first().is_none_or(|v| row > v.as_ref()) => {
                *values = vec![row.into()];
            }
            AggKind::Min if valid && values.first().is_none_or(|v| row < v.as_ref()) => {
                *values = vec![row.into()];
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
            AggKind::Attr | AggKind::Min | AggKind::Max => false,
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

/// The same values with every map's entries (at any depth) in key order, so that equal
/// maps have equal rows.
pub(crate) fn maps_in_key_order(array: &ArrayRef) -> Result<ArrayRef> {
    use arrow::compute::{SortColumn, lexsort_to_indices, take};
    if !holds_map(array.data_type()) {
        return Ok(array.clone());
    }
    Ok(match array.data_type() {
        DataType::Map(field, _) => {
            let map = array.as_any().downcast_ref::<MapArray>().expect("a map");
            let offsets = map.offsets();
            let (first, last) = (offsets[0] as usize, offsets[map.len()] as usize);
            let entries = map.entries().slice(first, last - first);
            // Which map each entry is of, then its key: sorting by both keeps each map's
            // entries together, in key order.
            let mut owner = Vec::with_capacity(last - first);
            for (i, w) in offsets.windows(2).enumerate() {
                owner.extend(std::iter::repeat_n(i as u32, (w[1] - w[0]) as usize));
            }
            let owner: ArrayRef = Arc::new(arrow::array::UInt32Array::from(owner));
            let order = lexsort_to_indices(
                &[
                    SortColumn {
                        values: owner,
                        options: None,
                    },
                    SortColumn {
                        values: entries.column(0).clone(),
                        options: None,
                    },
                ],
                None,
            )?;
            let sorted = take(&entries, &order, None)?;
            let sorted = sorted
                .as_any()
                .downcast_ref::<StructArray>()
                .expect("entries");
            let (fields, mut columns, nulls) = sorted.clone().into_parts();
            if columns.len() > 1 {
                columns[1] = maps_in_key_order(&columns[1])?;
            }
            let entries = StructArray::try_new(fields, columns, nulls)?;
            let offsets = OffsetBuffer::new(
                offsets
                    .iter()
                    .map(|o| o - offsets[0])
                    .collect::<Vec<i32>>()
                    .into(),
            );
            Arc::new(MapArray::try_new(
                field.clone(),
                offsets,
                entries,
                map.nulls().cloned(),
                false,
            )?)
        }
        DataType::List(_) => {
            let list = array.as_any().downcast_ref::<ListArray>().expect("a list");
            let (field, offsets, values, nulls) = list.clone().into_parts();
            Arc::new(ListArray::try_new(
                field,
                offsets,
                maps_in_key_order(&values)?,
                nulls,
            )?)
        }
        DataType::Struct(_) => {
            let st = array
                .as_any()
                .downcast_ref::<StructArray>()
                .expect("a struct");
            let (fields, columns, nulls) = st.clone().into_parts();
            let columns = columns
                .iter()
                .map(maps_in_key_order)
                .collect::<Result<Vec<_>>>()?;
            Arc::new(StructArray::try_new(fields, columns, nulls)?)
        }
        _ => array.clone(),
    })
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
        let mut arg = cast_to(args[0].clone(), &self.arg_type)?;
        if self.canonical {
            arg = maps_in_key_order(&arg)?;
        }
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

/// A plugin's aggregate: per group, the plugin's live state, made when the group first
/// needs it, and its bytes as of the last update that succeeded — what a failed update
/// (an error or a panic, perhaps half done) goes back to, and what a checkpoint saves.
pub(crate) struct PluginStates {
    plugin: PluginRef,
    live: Vec<Option<Box<dyn crate::functions::PluginAggregateState>>>,
    states: Vec<Vec<u8>>,
}

impl std::fmt::Debug for PluginStates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginStates")
            .field("states", &self.states)
            .finish_non_exhaustive()
    }
}

/// A copy holds the same bytes; its live states are made again from them when needed.
impl Clone for PluginStates {
    fn clone(&self) -> Self {
        PluginStates {
            plugin: self.plugin.clone(),
            live: Vec::new(),
            states: self.states.clone(),
        }
    }
}

impl PluginStates {
    pub fn new(plugin: PluginRef) -> PluginStates {
        PluginStates {
            plugin,
            live: Vec::new(),
            states: Vec::new(),
        }
    }

    /// Group `g`'s live state, made from its bytes if it has none.
    fn live(
        &mut self,
        g: usize,
    ) -> std::result::Result<&mut dyn crate::functions::PluginAggregateState, String> {
        if self.live.len() <= g {
            self.live.resize_with(g + 1, || None);
        }
        if self.live[g].is_none() {
            let mut s = self.plugin.0.new_state()?;
            if !self.states[g].is_empty() {
                s.merge(&self.states[g])?;
            }
            self.live[g] = Some(s);
        }
        Ok(self.live[g].as_deref_mut().expect("made above"))
    }

    /// Forgets group `g`'s live state: the next use makes it again from its bytes.
    fn forget(&mut self, g: usize) {
        if let Some(s) = self.live.get_mut(g) {
            *s = None;
        }
    }

    /// The argument as the plugin declares it.
    fn cast_arg(&self, arg: ArrayRef) -> std::result::Result<ArrayRef, String> {
        let want = self
            .plugin
            .0
            .arg_types()
            .first()
            .cloned()
            .unwrap_or(DataType::Null);
        if arg.data_type() != &want {
            arrow::compute::cast(&arg, &want).map_err(|e| e.to_string())
        } else {
            Ok(arg)
        }
    }

    /// Folds `rows` of the argument into group `g`'s live state in one `update`, and
    /// keeps its bytes; on failure the group is as it was before. With `emit`, the result
    /// of the state after it too.
    #[allow(clippy::type_complexity)]
    fn fold(
        &mut self,
        g: usize,
        arg: &ArrayRef,
        rows: &[u32],
        emit: bool,
    ) -> std::result::Result<Option<std::result::Result<ArrayRef, String>>, String> {
        let indices = arrow::array::UInt32Array::from(rows.to_vec());
        let taken =
            arrow::compute::take(arg.as_ref(), &indices, None).map_err(|e| e.to_string())?;
        let folded = self.live(g).and_then(|s| {
            s.update(&[taken])?;
            let bytes = s.state()?;
            Ok((bytes, emit.then(|| s.result())))
        });
        match folded {
            Ok((bytes, result)) => {
                self.states[g] = bytes;
                Ok(result.map(|r| r.and_then(|out| self.cast_result(out))))
            }
            Err(why) => {
                self.forget(g);
                Err(why)
            }
        }
    }

    /// A result as the plugin declares it: one row.
    fn cast_result(&self, out: ArrayRef) -> std::result::Result<ArrayRef, String> {
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

    fn result(&mut self, g: usize) -> std::result::Result<ArrayRef, String> {
        let out = self.live(g)?.result()?;
        self.cast_result(out)
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
        let arg = match self.cast_arg(args[0].clone()) {
            Ok(a) => Some(a),
            Err(why) => {
                // No row of the batch can be folded: each is reported, once.
                for op in ops {
                    if let Op::Fold(_, r) = op {
                        failed.push((*r, format!("Error in a plugin aggregate: {why}")));
                    }
                }
                None
            }
        };
        let return_type = self.plugin.0.return_type();
        let null = || arrow::array::new_null_array(&return_type, 1);
        let mut i = 0;
        while i < ops.len() {
            match ops[i] {
                Op::Reset(g) => {
                    self.states[g as usize].clear();
                    self.forget(g as usize);
                }
                Op::Fold(g, r) => {
                    // A group's consecutive rows go to the plugin in one update; a
                    // change right after them is computed from the same state.
                    let mut rows = vec![r];
                    while let Some(Op::Fold(next, r)) = ops.get(i + rows.len())
                        && *next == g
                    {
                        rows.push(*r);
                    }
                    i += rows.len() - 1;
                    let Some(arg) = &arg else {
                        i += 1;
                        continue;
                    };
                    let emit = matches!(ops.get(i + 1), Some(Op::Emit(e)) if *e == g);
                    match self.fold(g as usize, arg, &rows, emit) {
                        Ok(None) => {}
                        // The change right after the rows: taken here.
                        Ok(Some(result)) => {
                            i += 1;
                            match result {
                                Ok(a) => out.push(a),
                                Err(why) => {
                                    bad.push((out.len(), why));
                                    out.push(null());
                                }
                            }
                        }
                        // One at a time, so that only the rows that fail are left out.
                        Err(_) if rows.len() > 1 => {
                            for r in &rows {
                                if let Err(why) = self.fold(g as usize, arg, &[*r], false) {
                                    failed
                                        .push((*r, format!("Error in a plugin aggregate: {why}")));
                                }
                            }
                        }
                        Err(why) => failed.push((r, format!("Error in a plugin aggregate: {why}"))),
                    }
                }
                Op::Unfold(..) => {}
                Op::Emit(g) => match self.result(g as usize) {
                    Ok(a) => out.push(a),
                    Err(why) => {
                        bad.push((out.len(), why));
                        out.push(null());
                    }
                },
            }
            i += 1;
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
        self.forget(g as usize);
    }

    fn save(&self, g: u32, out: &mut Vec<u8>) {
        put_slice(out, &self.states[g as usize]);
    }

    fn load(&mut self, g: u32, bytes: &mut &[u8]) -> Result<()> {
        grow_to(&mut self.states, g as usize + 1, Vec::new());
        self.states[g as usize] = take_slice(bytes)?.to_vec();
        self.forget(g as usize);
        Ok(())
    }

    fn boxed_clone(&self) -> Box<dyn Accumulator> {
        Box::new(self.clone())
    }
}
