//! GROUP BY, with or without windows: `CREATE TABLE ... AS SELECT keys, AGG(...) FROM
//! source [WINDOW ...] [WHERE ...] GROUP BY keys [HAVING ...]`.
//!
//! A batch goes through three steps. A stateless plan (the engine's ordinary
//! [`SelectPlan`], planned in `plan.rs`) filters it and computes the grouping expressions
//! and the aggregates' arguments as Arrow columns. The [`Aggregator`] then turns each
//! row's key values into arrow's row format, interned to a dense group id per key and
//! window (`groups.rs`), and walks the rows once in order, deciding which groups each
//! row goes into (windows, sessions merging, a table row's old values taken back out)
//! and writing that down as a list of [`Op`]s. Each aggregate call's [`Accumulator`]
//! (`accumulator.rs`: typed vectors indexed by group id; `collect.rs`) replays the list
//! over the argument columns and gives a result column with one value per change. The
//! select list and HAVING are then evaluated as DataFusion expressions over the changes'
//! keys, results and windows: one change per input record, as ksqlDB gives with its
//! record cache off. A group that stops satisfying HAVING after it was emitted gets a
//! tombstone. The output record's timestamp is the latest its group has seen.
//!
//! The state (groups, their accumulators, a table's rows, the window clock) is saved in
//! the query's checkpoints as compact binary entries (base64 in the checkpoint record),
//! whole or as the entries changed since the last one, and restored on restart.

mod accumulator;
mod collect;
mod groups;
mod plan;
mod shards;

use std::collections::HashMap;
use std::sync::Arc;

/// Hash maps keyed by group: foldhash rather than SipHash (the keys are ours, not an
/// attacker's choice of collisions to worry about per query).
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, UInt32Array};
use arrow::datatypes::{DataType, Float64Type, Int32Type, Int64Type, SchemaRef};
use base64::Engine as _;
use serde_json::{Value, json};
use weir_format::Column;
use weir_sql::ast::SqlType;

use crate::error::{EngineError, Result};
use crate::plan::{Compiled, SelectPlan};
use crate::rowcodec::RowCodec;
use accumulator::{Accumulator, Op};
use groups::Groups;
pub(crate) use plan::is_aggregate_call;
pub use plan::plan_aggregate;
use plan::{AggKind, Call};
pub(crate) use shards::Shards;

/// The window clock of a batch folded by one shard of several ([`Shards`]): per row, the
/// stream time after it over the whole batch (all shards' rows), and after the batch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock<'a> {
    times: &'a [i64],
    end: i64,
}

/// One column of the output.
#[derive(Debug, Clone)]
struct Output {
    name: String,
    compiled: Compiled,
    is_key: bool,
}

/// What a window clause asks for, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WindowSpec {
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
pub(crate) struct Windowing {
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
    /// Session windows per group key id.
    sessions: FastMap<u32, std::collections::BTreeSet<(i64, i64)>>,
    /// EMIT FINAL: windows not yet emitted, by end (end, start, group id).
    pending: std::collections::BTreeSet<(i64, i64, u32)>,
    /// Stream time at the last purge of expired windows.
    purged_at: i64,
}

impl Windowing {
    pub(crate) fn new(w: &weir_sql::ast::WindowExpr, emit_final: bool) -> Windowing {
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
    /// Each call's result type.
    results: Vec<SqlType>,
    /// One per call, in order; and fresh ones (to restore into).
    accumulators: Vec<Box<dyn Accumulator>>,
    fresh: Vec<Box<dyn Accumulator>>,
    /// The stateless step's projections the calls take as arguments, and per call where
    /// its arguments are among them (the argument, then CORRELATION's second or TOPK's
    /// other columns).
    arg_columns: Vec<usize>,
    call_args: Vec<Vec<usize>>,
    /// Argument rows kept to fold again or take back (session windows, tables).
    stored_args: Option<RowCodec>,
    /// The grouping keys then the aggregate results (and the window bounds), as the
    /// select list and HAVING see them.
    middle: SchemaRef,
    outputs: Vec<Output>,
    having: Option<Compiled>,
    /// Key columns then value columns, as the sink declares them.
    pub output_layout_columns: (Vec<Column>, Vec<Column>),
    /// ROWTIME, ROWOFFSET, then the select items (then the window's bounds).
    output_schema: SchemaRef,
    groups: Groups,
    tracking: Tracking,
    /// Over a table: where the source key columns and the WHERE condition are among the
    /// stateless step's projections, and per source key the group its row counts in and
    /// the argument values it added, to take back when the row changes.
    table: Option<TableInput>,
    window: Option<Windowing>,
    /// `weir.aggregate.coalesce`: a batch gives each group's last change only, not one
    /// per input record (fewer records out, same final state).
    pub coalesce: bool,
    /// Grouped by exactly the key columns of the stream it reads: each group's rows come
    /// from one source partition (the producer's), so on servers sharing work its state
    /// divides by source partition ([`super::Shards::restore_units`]).
    pub(crate) by_source_key: bool,
    /// Its state divides by source partition (servers sharing work): each grouping key
    /// notes the partition its rows come from, and checkpoints carry it (`units`).
    pub(crate) units: bool,
    /// Dividing by partition: the source partition of the batch being folded.
    pub(crate) partition: Option<u32>,
}

#[derive(Debug, Clone)]
struct TableInput {
    source_keys: Vec<usize>,
    source: RowCodec,
    condition: Option<usize>,
    /// Per source key (row format): its group, and its argument row.
    rows: FastMap<Box<[u8]>, TableRow>,
}

/// A table row counted in a group: the group, and the row's arguments (row format).
type TableRow = (u32, Box<[u8]>);

/// A saved group that is gone: its window and its key's bytes.
type Removed = (Option<(i64, i64)>, Box<[u8]>);

/// What changed since the last checkpoint took it (durable engines only): groups set,
/// groups removed (their windows and keys), a table's rows. Group flags are vectors
/// indexed by group id (a list keeps the order marked, each id once while flagged).
#[derive(Debug, Clone, Default)]
struct Tracking {
    on: bool,
    changed: Vec<bool>,
    changed_list: Vec<u32>,
    /// Made since: one removed again was never saved, and needs no removal.
    born: Vec<bool>,
    /// Saved groups removed since, named in the next checkpoint.
    removed: Vec<Removed>,
    rows: FastSet<Box<[u8]>>,
}

impl Tracking {
    fn flag(flags: &mut Vec<bool>, g: u32) -> &mut bool {
        let g = g as usize;
        if flags.len() <= g {
            flags.resize((g + 1).max(flags.len() * 2), false);
        }
        &mut flags[g]
    }

    fn changed(&mut self, g: u32) {
        if self.on {
            let f = Tracking::flag(&mut self.changed, g);
            if !*f {
                *f = true;
                self.changed_list.push(g);
            }
        }
    }

    fn born(&mut self, g: u32) {
        if self.on {
            self.changed(g);
            *Tracking::flag(&mut self.born, g) = true;
        }
    }

    /// Group `g` is gone: whether it was saved (made before the last checkpoint).
    fn removed(&mut self, g: u32) -> bool {
        *Tracking::flag(&mut self.changed, g) = false;
        !std::mem::replace(Tracking::flag(&mut self.born, g), false)
    }

    /// The groups changed, each once; forgets them. (Every group flagged, changed or
    /// born, is on the list: clearing costs what changed, not how many groups there are.)
    fn take_changed(&mut self) -> Vec<u32> {
        let mut out = std::mem::take(&mut self.changed_list);
        for g in &out {
            if let Some(b) = self.born.get_mut(*g as usize) {
                *b = false;
            }
        }
        out.retain(|g| std::mem::replace(&mut self.changed[*g as usize], false));
        out
    }

    fn row(&mut self, key: &[u8]) {
        if self.on && !self.rows.contains(key) {
            self.rows.insert(key.into());
        }
    }

    fn clear(&mut self) {
        self.take_changed();
        self.removed.clear();
        self.rows.clear();
    }
}

/// What the planner hands over (see [`plan_aggregate`]).
struct Parts {
    pre: SelectPlan,
    keys: Vec<SqlType>,
    calls: Vec<Call>,
    results: Vec<SqlType>,
    middle: SchemaRef,
    outputs: Vec<Output>,
    having: Option<Compiled>,
    output_layout_columns: (Vec<Column>, Vec<Column>),
    output_schema: SchemaRef,
    /// Over a table: the source key columns' projections and types, and the WHERE's.
    table: Option<(Vec<usize>, Vec<SqlType>, Option<usize>)>,
    window: Option<Windowing>,
}

/// The changes a batch makes: runs of rows or of tombstones, in order.
pub type Changes = Vec<crate::ChangeBatch>;

/// Why a change is made: the group's new row, or its removal (a merged session window).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Update,
    Delete,
}

/// A change: its record timestamp, source offset, group and kind.
#[derive(Debug, Clone, Copy)]
struct Meta {
    time: i64,
    offset: i64,
    group: u32,
    change: Change,
}

/// The columns after the select list that carry a windowed result's window, for its key.
/// The most values `COLLECT_LIST` and `COLLECT_SET` keep per group unless
/// `ksql.functions.collect_list.limit` / `collect_set.limit` say otherwise (ksqlDB's
/// default): a group's state, and the output record that carries it, stay bounded.
pub const DEFAULT_COLLECT_LIMIT: usize = 1000;

pub const WINDOW_COLUMNS: [&str; 2] = ["WEIR_WINDOW_START", "WEIR_WINDOW_END"];

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
}

fn unb64(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(text)
        .ok()
}

impl Aggregator {
    /// Whether a call keeps a structured intermediate ksqlDB's DELIMITED sinks cannot
    /// hold (STDDEV_SAMPLE's), refused there as ksqlDB refuses it.
    pub(crate) fn has_structured_intermediate(&self) -> bool {
        self.calls.iter().any(|c| c.kind == AggKind::StddevSample)
    }

    fn new(p: Parts) -> Result<Aggregator> {
        let pre_type = |i: usize| p.pre.projections[i].compiled.data_type.clone();
        let mut arg_columns: Vec<usize> = p.calls.iter().flat_map(Call::columns).collect();
        arg_columns.sort_unstable();
        arg_columns.dedup();
        let at = |i: usize| arg_columns.iter().position(|a| *a == i).expect("listed");
        let call_args = p
            .calls
            .iter()
            .map(|c| c.columns().map(at).collect())
            .collect();
        let session = p
            .window
            .as_ref()
            .is_some_and(|w| matches!(w.spec, WindowSpec::Session { .. }));
        let arg_types: Vec<DataType> = arg_columns.iter().map(|i| pre_type(*i)).collect();
        let stored_args = (session || p.table.is_some())
            .then(|| RowCodec::new(&arg_types))
            .transpose()?;
        let key_types: Vec<DataType> = (0..p.keys.len()).map(pre_type).collect();
        let table = match p.table {
            None => None,
            Some((source_keys, _, condition)) => {
                let types: Vec<DataType> = source_keys.iter().map(|i| pre_type(*i)).collect();
                Some(TableInput {
                    source_keys,
                    source: RowCodec::new(&types)?,
                    condition,
                    rows: FastMap::default(),
                })
            }
        };
        let mut a = Aggregator {
            pre: p.pre,
            keys: p.keys,
            calls: p.calls,
            results: p.results,
            accumulators: Vec::new(),
            fresh: Vec::new(),
            arg_columns,
            call_args,
            stored_args,
            middle: p.middle,
            outputs: p.outputs,
            having: p.having,
            output_layout_columns: p.output_layout_columns,
            output_schema: p.output_schema,
            groups: Groups::new(&key_types)?,
            tracking: Tracking::default(),
            table,
            window: p.window,
            coalesce: false,
            by_source_key: false,
            units: false,
            partition: None,
        };
        a.fresh = a.new_accumulators()?;
        a.accumulators = a.fresh.clone();
        Ok(a)
    }

    /// A fresh accumulator per call.
    fn new_accumulators(&self) -> Result<Vec<Box<dyn Accumulator>>> {
        use accumulator::{Avg, Correlation, Count, MinMax, MinMaxString, StddevSamp, Sum};
        let keys = self.keys.len();
        self.calls
            .iter()
            .enumerate()
            .map(|(n, c)| -> Result<Box<dyn Accumulator>> {
                let arg = c.arg.as_ref().map(|(_, t)| t);
                let max = c.kind == AggKind::Max;
                Ok(match (c.kind, arg, &c.plugin) {
                    (_, _, Some(p)) => Box::new(collect::PluginStates::new(p.clone())),
                    (AggKind::CountStar, ..) => Box::new(Count::new(true)),
                    (AggKind::Count, ..) => Box::new(Count::new(false)),
                    (AggKind::Sum, Some(SqlType::Int), _) => Box::new(Sum::<Int32Type>::new()),
                    (AggKind::Sum, Some(SqlType::Bigint), _) => Box::new(Sum::<Int64Type>::new()),
                    (AggKind::Sum, Some(SqlType::Double), _) => Box::new(Sum::<Float64Type>::new()),
                    (AggKind::Avg, ..) => Box::new(Avg::default()),
                    (AggKind::Min | AggKind::Max, Some(SqlType::Int), _) => {
                        Box::new(MinMax::<Int32Type>::new(max))
                    }
                    (AggKind::Min | AggKind::Max, Some(SqlType::Bigint), _) => {
                        Box::new(MinMax::<Int64Type>::new(max))
                    }
                    (AggKind::Min | AggKind::Max, Some(SqlType::Double), _) => {
                        Box::new(MinMax::<Float64Type>::new(max))
                    }
                    (AggKind::Min | AggKind::Max, Some(SqlType::String), _) => {
                        Box::new(MinMaxString::new(max))
                    }
                    (AggKind::StddevSamp, ..) => Box::new(StddevSamp::default()),
                    (AggKind::StddevSample, ..) => Box::new(StddevSamp::root()),
                    (AggKind::Correlation, ..) => Box::new(Correlation::default()),
                    (AggKind::TopK, _, None) if !c.extra.is_empty() => {
                        let types: Vec<DataType> = c
                            .columns()
                            .map(|i| self.pre.projections[i].compiled.data_type.clone())
                            .collect();
                        Box::new(collect::TopRows::new(
                            c.params.n.unwrap_or(1),
                            &types,
                            self.middle.field(keys + n).data_type().clone(),
                        )?)
                    }
                    (kind, arg, None) => match &c.arg {
                        Some((i, _)) => Box::new(collect::RowStates::new(
                            kind,
                            c.params,
                            self.pre.projections[*i].compiled.data_type.clone(),
                            self.middle.field(keys + n).data_type().clone(),
                        )?),
                        None => {
                            return Err(EngineError::Invalid(format!(
                                "{kind:?} needs an argument: {}",
                                arg.map(|t| t.to_string()).unwrap_or_default()
                            )));
                        }
                    },
                })
            })
            .collect()
    }

    /// ksqlDB's `ksql.functions.collect_list.limit` and `collect_set.limit` (default
    /// [`DEFAULT_COLLECT_LIMIT`]): the most
    /// values those lists keep.
    pub fn limit_collections(&mut self, list: Option<usize>, set: Option<usize>) -> Result<()> {
        for c in &mut self.calls {
            match c.kind {
                AggKind::CollectList => c.params.n = list,
                AggKind::CollectSet => c.params.n = set,
                _ => {}
            }
        }
        self.fresh = self.new_accumulators()?;
        self.accumulators = self.fresh.clone();
        Ok(())
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

    /// The window kind of the output's keys, when the aggregation is windowed.
    pub fn key_window(&self) -> Option<crate::catalog::KeyWindow> {
        self.window.as_ref().map(Windowing::key_window)
    }

    /// ksqlDB's name of the window kind: TUMBLING, HOPPING or SESSION.
    pub fn window_type(&self) -> Option<&'static str> {
        self.window.as_ref().map(|w| match w.spec {
            WindowSpec::Time { size, advance } if size == advance => "TUMBLING",
            WindowSpec::Time { .. } => "HOPPING",
            WindowSpec::Session { .. } => "SESSION",
        })
    }

    /// Records dropped because they arrived after their windows closed.
    pub fn late_records(&self) -> u64 {
        self.window.as_ref().map_or(0, |w| w.late)
    }

    /// Whether its state can be split by key into shards that fold a batch at once
    /// ([`Shards`]): not over a table (a row moving to another key's group takes its
    /// old values out of a group another shard may hold), nor with EMIT FINAL (a record
    /// closes the windows of every key).
    pub(crate) fn shardable(&self) -> bool {
        self.table.is_none() && self.window.as_ref().is_none_or(|w| !w.emit_final)
    }

    /// The window clock, for a windowed aggregation: stream time.
    pub(crate) fn stream_time(&self) -> Option<i64> {
        self.window.as_ref().map(|w| w.stream_time)
    }

    /// A shard that had no rows of a batch keeps time with the others: its clock moves
    /// to `end` and windows past their retention go, as a fold would do.
    pub(crate) fn advance_clock(&mut self, end: i64) {
        if let Some(w) = self.window.as_mut() {
            w.stream_time = w.stream_time.max(end);
        }
        self.purge();
        self.end_batch();
    }

    /// Each row's grouping key of a batch of the stateless step's output, in the
    /// state's row format (what [`Aggregator::entry_key`] gives back for its group).
    pub(crate) fn key_rows(&self, pre: &RecordBatch) -> Result<arrow::row::Rows> {
        let columns: Vec<ArrayRef> = (0..self.keys.len())
            .map(|i| pre.column(2 + i).clone())
            .collect();
        self.groups.encode(&columns)
    }

    /// The key bytes of a checkpoint entry's name ([`entry_name`]).
    pub(crate) fn entry_key(&self, name: &str) -> Option<Vec<u8>> {
        let key = match self.window {
            None => name,
            Some(_) => name.splitn(3, '/').nth(2)?,
        };
        unb64(key)
    }

    /// Folds the stateless step's output (ROWTIME, ROWOFFSET, keys, arguments) into the
    /// groups, in order, and gives each row's change (runs of rows and of tombstones, in
    /// order). Rows whose result cannot be computed are left out, returned by source
    /// offset with why.
    pub fn fold_changes(
        &mut self,
        pre: &RecordBatch,
        tombstones: bool,
    ) -> (Changes, Vec<(u64, String)>) {
        self.fold_changes_at(pre, tombstones, None)
    }

    /// As [`Aggregator::fold_changes`], on `clock` when given (a shard's rows of a batch).
    pub(crate) fn fold_changes_at(
        &mut self,
        pre: &RecordBatch,
        tombstones: bool,
        clock: Option<Clock<'_>>,
    ) -> (Changes, Vec<(u64, String)>) {
        match self.fold(pre, tombstones, clock) {
            Ok(out) => out,
            Err(e) => {
                self.end_batch();
                let offsets = pre.column(1).as_primitive::<Int64Type>();
                let why = format!("Error computing the aggregate: {e}");
                let failed = offsets
                    .values()
                    .iter()
                    .map(|o| (*o as u64, why.clone()))
                    .collect();
                (Vec::new(), failed)
            }
        }
    }

    fn fold(
        &mut self,
        pre: &RecordBatch,
        tombstones: bool,
        clock: Option<Clock<'_>>,
    ) -> Result<(Changes, Vec<(u64, String)>)> {
        let n = pre.num_rows();
        let rowtimes = pre.column(0).as_primitive::<Int64Type>().clone();
        let offsets = pre.column(1).as_primitive::<Int64Type>().clone();
        let column = |i: usize| pre.column(2 + i).clone();
        let key_columns: Vec<ArrayRef> = (0..self.keys.len()).map(column).collect();
        let key_rows = self.groups.encode(&key_columns)?;
        // ksqlDB drops rows with a null grouping column.
        let key_nulls: Vec<_> = key_columns
            .iter()
            .filter_map(|c| c.logical_nulls())
            .collect();
        let arg_columns: Vec<ArrayRef> = self.arg_columns.iter().map(|i| column(*i)).collect();
        let arg_rows = match &self.stored_args {
            Some(r) if !arg_columns.is_empty() => Some(r.encode(&arg_columns)?),
            _ => None,
        };
        // A row's arguments as a kept row (none when the calls take no column).
        let arg_row = |row: usize| -> Box<[u8]> {
            arg_rows
                .as_ref()
                .map_or_else(Box::default, |r| r.row(row).as_ref().into())
        };
        let (source_rows, condition) = match &self.table {
            Some(t) => {
                let keys: Vec<ArrayRef> = t.source_keys.iter().map(|i| column(*i)).collect();
                let condition: Option<BooleanArray> =
                    t.condition.map(|i| column(i).as_boolean().clone());
                (Some(t.source.encode(&keys)?), condition)
            }
            None => (None, None),
        };
        // Session windows keep their rows (to fold again on merges); EMIT FINAL writes
        // nothing until a window closes.
        let session = matches!(
            self.window.as_ref().map(|w| w.spec),
            Some(WindowSpec::Session { .. })
        );
        let emit_each = self.window.as_ref().is_none_or(|w| !w.emit_final);
        // Argument rows kept from earlier batches, folded again or taken back: row
        // `n + i` of the arguments is `extra[i]`.
        let mut extra: Vec<Box<[u8]>> = Vec::new();
        let mut ops: Vec<Op> = Vec::with_capacity(3 * n);
        let mut meta: Vec<Meta> = Vec::with_capacity(n);
        let mut targets: Vec<u32> = Vec::new();
        let Aggregator {
            groups,
            tracking,
            table,
            window,
            partition,
            units,
            ..
        } = self;
        let partition = partition.filter(|_| *units);
        for row in 0..n {
            let time = rowtimes.value(row);
            let offset = offsets.value(row);
            let key = (!key_nulls.iter().any(|nulls| nulls.is_null(row)))
                .then(|| groups.intern(key_rows.row(row).as_ref()));
            if let (Some(p), Some(k)) = (partition, key) {
                groups.set_partition(k, p);
            }
            // Over a table: take the row's earlier values out of the group they were in.
            let mut retracted = None;
            if let Some(t) = table.as_mut() {
                let source = source_rows
                    .as_ref()
                    .expect("a table's source keys")
                    .row(row);
                if let Some((old, args)) = t.rows.remove(source.as_ref()) {
                    tracking.row(source.as_ref());
                    if groups.slots[old as usize].live {
                        tracking.changed(old);
                        ops.push(Op::Unfold(old, (n + extra.len()) as u32));
                        extra.push(args);
                        let slot = &mut groups.slots[old as usize];
                        slot.time = slot.time.max(time);
                        retracted = Some(old);
                    }
                }
                let passes = condition
                    .as_ref()
                    .is_none_or(|c| c.is_valid(row) && c.value(row));
                match key.filter(|_| !tombstones && passes) {
                    Some(k) => {
                        let (g, _) = open_group(groups, tracking, &mut ops, k, None);
                        tracking.row(source.as_ref());
                        t.rows.insert(source.as_ref().into(), (g, arg_row(row)));
                    }
                    None => {
                        // Gone (deleted, or no longer passing the WHERE): only the
                        // retraction.
                        if let Some(old) = retracted {
                            emit(
                                &mut ops,
                                &mut meta,
                                old,
                                groups.slots[old as usize].time,
                                offset,
                                Change::Update,
                            );
                        }
                        continue;
                    }
                }
            } else if tombstones {
                continue;
            }
            let Some(key) = key else { continue };
            // The groups this row goes into: its key's, or its key's in each open window.
            targets.clear();
            match window.as_mut() {
                None => targets.push(open_group(groups, tracking, &mut ops, key, None).0),
                Some(w) => {
                    w.stream_time = w.stream_time.max(clock.map_or(time, |c| c.times[row]));
                    let close = w.stream_time.saturating_sub(w.grace);
                    match w.spec {
                        WindowSpec::Time { size, advance } => {
                            for (start, end) in Windowing::time_windows(size, advance, time) {
                                if end <= close {
                                    continue;
                                }
                                let window = Some((start, end));
                                let (g, new) = open_group(groups, tracking, &mut ops, key, window);
                                if new && w.emit_final {
                                    w.pending.insert((end, start, g));
                                }
                                targets.push(g);
                            }
                            if targets.is_empty() {
                                w.late += 1;
                            }
                        }
                        WindowSpec::Session { gap } => {
                            let sessions = w.sessions.entry(key).or_default();
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
                            if merging == [(time, time)] {
                                let window = Some((time, time));
                                targets.push(open_group(groups, tracking, &mut ops, key, window).0);
                            } else {
                                // The sessions it joins are replaced by one: each gets a
                                // tombstone, and their rows are folded again, in offset
                                // order.
                                let mut inputs = Vec::new();
                                for m in &merging {
                                    sessions.remove(m);
                                    let Some(old) = groups.find(key, Some(*m)) else {
                                        continue;
                                    };
                                    if w.emit_final {
                                        w.pending.remove(&(m.1, m.0, old));
                                    } else {
                                        emit(&mut ops, &mut meta, old, m.1, offset, Change::Delete);
                                    }
                                    inputs.append(&mut groups.slots[old as usize].inputs);
                                    remove_group(groups, tracking, old);
                                }
                                inputs.sort_by_key(|(o, _)| *o);
                                let window = Some((start, end));
                                let (g, _) = open_group(groups, tracking, &mut ops, key, window);
                                for (_, args) in &inputs {
                                    ops.push(Op::Fold(g, (n + extra.len()) as u32));
                                    extra.push(args.clone());
                                }
                                let slot = &mut groups.slots[g as usize];
                                slot.inputs = inputs;
                                slot.time = end;
                                sessions.insert((start, end));
                                if w.emit_final {
                                    w.pending.insert((end, start, g));
                                }
                                targets.push(g);
                            }
                        }
                    }
                }
            }
            // A row that moved to another group: the old group's change first.
            if let Some(old) = retracted.filter(|old| groups.slots[*old as usize].key != key) {
                emit(
                    &mut ops,
                    &mut meta,
                    old,
                    groups.slots[old as usize].time,
                    offset,
                    Change::Update,
                );
            }
            for &g in &targets {
                tracking.changed(g);
                ops.push(Op::Fold(g, row as u32));
                let slot = &mut groups.slots[g as usize];
                slot.time = slot.time.max(time);
                if session {
                    slot.inputs.push((offset, arg_row(row)));
                    slot.time = slot.window.map_or(time, |(_, end)| end);
                }
                if emit_each {
                    emit(&mut ops, &mut meta, g, slot.time, offset, Change::Update);
                }
            }
            // EMIT FINAL: the windows this record's time closed, once each.
            if let Some(w) = window.as_mut().filter(|w| w.emit_final) {
                while let Some(&(end, start, g)) = w.pending.first() {
                    if end.saturating_add(w.grace) > w.stream_time {
                        break;
                    }
                    w.pending.pop_first();
                    let slot = &groups.slots[g as usize];
                    if slot.live && slot.window == Some((start, end)) {
                        emit(&mut ops, &mut meta, g, slot.time, offset, Change::Update);
                    }
                }
            }
        }
        if let (Some(c), Some(w)) = (clock, self.window.as_mut()) {
            w.stream_time = w.stream_time.max(c.end);
        }
        self.purge();
        // The argument columns, with the kept rows after the batch's.
        let args: Vec<ArrayRef> = if extra.is_empty() || arg_columns.is_empty() {
            arg_columns
        } else {
            let stored = self
                .stored_args
                .as_ref()
                .expect("kept rows have a converter")
                .decode(extra.iter().map(|b| b.as_ref()))?;
            arg_columns
                .iter()
                .zip(stored)
                .map(|(a, s)| arrow::compute::concat(&[a.as_ref(), s.as_ref()]))
                .collect::<std::result::Result<_, _>>()?
        };
        let slots = self.groups.slots.len();
        let mut failed_rows = Vec::new();
        let mut bad: std::collections::BTreeMap<usize, String> = Default::default();
        let mut results = Vec::with_capacity(self.calls.len());
        for (acc, positions) in self.accumulators.iter_mut().zip(&self.call_args) {
            let call_args: Vec<ArrayRef> = positions.iter().map(|p| args[*p].clone()).collect();
            let out = acc.run(&ops, slots, &call_args, &mut failed_rows)?;
            for (i, why) in out.bad {
                bad.entry(i).or_insert(why);
            }
            results.push(out.values);
        }
        let mut failed: Vec<(u64, String)> = failed_rows
            .into_iter()
            .filter(|(r, _)| (*r as usize) < n)
            .map(|(r, why)| (offsets.value(r as usize) as u64, why))
            .collect();
        // The changes' keys, results and windows, as the select list and HAVING see them.
        let mut columns = self.groups.key_columns(meta.iter().map(|m| m.group))?;
        columns.extend(results);
        if self.window.is_some() {
            let bound = |end: bool| -> ArrayRef {
                Arc::new(Int64Array::from_iter_values(meta.iter().map(|m| {
                    let (s, e) = self.groups.slots[m.group as usize]
                        .window
                        .unwrap_or_default();
                    if end { e } else { s }
                })))
            };
            columns.push(bound(false));
            columns.push(bound(true));
        }
        let mut middle = crate::types::batch_as(self.middle.clone(), columns)?;
        if !bad.is_empty() {
            let keep =
                BooleanArray::from_iter((0..meta.len()).map(|i| Some(!bad.contains_key(&i))));
            middle = arrow::compute::filter_record_batch(&middle, &keep)?;
            for (i, why) in bad.iter().rev() {
                let m = meta.remove(*i);
                failed.push((
                    m.offset as u64,
                    format!("Error computing the aggregate: {why}"),
                ));
            }
        }
        let changes = match self.changes(&middle, &meta) {
            Ok(changes) => changes,
            Err(e) => {
                failed.extend(meta.iter().map(|m| {
                    (
                        m.offset as u64,
                        format!("Error computing the aggregate: {e}"),
                    )
                }));
                Vec::new()
            }
        };
        self.end_batch();
        Ok((changes, failed))
    }

    /// The batch is done: what the groups removed in it held is dropped, and their
    /// slots can be reused.
    fn end_batch(&mut self) {
        for &g in self.groups.freed() {
            for acc in &mut self.accumulators {
                acc.free(g);
            }
        }
        self.groups.end_batch();
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
        let dead: Vec<u32> = self
            .groups
            .live()
            .filter(|g| {
                self.groups.slots[*g as usize]
                    .window
                    .is_some_and(|(_, end)| end <= expired)
            })
            .collect();
        for g in dead {
            remove_group(&mut self.groups, &mut self.tracking, g);
        }
        for sessions in w.sessions.values_mut() {
            sessions.retain(|(_, end)| *end > expired);
        }
        w.sessions.retain(|_, s| !s.is_empty());
        w.pending.retain(|(end, _, _)| *end > expired);
    }

    /// The select list and HAVING over the changes' rows.
    fn changes(&mut self, middle: &RecordBatch, meta: &[Meta]) -> Result<Changes> {
        let n = middle.num_rows();
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter_values(meta.iter().map(|m| m.time))),
            Arc::new(Int64Array::from_iter_values(meta.iter().map(|m| m.offset))),
        ];
        for o in &self.outputs {
            columns.push(o.compiled.expr.evaluate(middle)?.into_array(n)?);
        }
        if self.window.is_some() {
            let keys = self.keys.len();
            let calls = self.calls.len();
            columns.push(middle.column(keys + calls).clone());
            columns.push(middle.column(keys + calls + 1).clone());
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
        for (i, m) in meta.iter().enumerate() {
            if m.change == Change::Delete {
                kinds.push((i as u32, true));
                continue;
            }
            let slot = &mut self.groups.slots[m.group as usize];
            // A session merged away later in the batch: its change still stands.
            if !slot.live {
                if pass[i] {
                    kinds.push((i as u32, false));
                }
                continue;
            }
            if pass[i] {
                if !slot.emitted {
                    self.tracking.changed(m.group);
                }
                slot.emitted = true;
                kinds.push((i as u32, false));
            } else if slot.emitted {
                self.tracking.changed(m.group);
                slot.emitted = false;
                kinds.push((i as u32, true));
            }
        }
        if self.coalesce {
            // Each group's last change of the batch, in the order of those last changes.
            let mut last: FastMap<u32, usize> = FastMap::default();
            for (i, (row, _)) in kinds.iter().enumerate() {
                last.insert(meta[*row as usize].group, i);
            }
            let keep: FastSet<usize> = last.into_values().collect();
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

    /// A group's checkpoint entry (its key and window are in the entry's name, see
    /// [`path`]): its clock, HAVING flag, each call's state and (session windows) its
    /// rows.
    fn entry(&self, g: u32, out: &mut Vec<u8>) {
        let slot = &self.groups.slots[g as usize];
        out.extend_from_slice(&slot.time.to_le_bytes());
        out.push(slot.emitted as u8);
        for acc in &self.accumulators {
            acc.save(g, out);
        }
        if slot.inputs.is_empty() {
            return;
        }
        out.extend_from_slice(&(slot.inputs.len() as u32).to_le_bytes());
        for (offset, args) in &slot.inputs {
            out.extend_from_slice(&offset.to_le_bytes());
            accumulator::put_slice(out, args);
        }
    }

    /// Puts back a group from its checkpoint entry and its name (key and window).
    fn load_entry(&mut self, name: &str, mut bytes: &[u8]) -> Result<()> {
        use accumulator::{take, take_slice};
        let (window, key) = match self.window {
            None => (None, name),
            Some(_) => {
                let mut parts = name.splitn(3, '/');
                let mut bound = || parts.next().and_then(|s| s.parse::<i64>().ok());
                let (start, end) = (bound(), bound());
                let key = parts.next().unwrap_or_default();
                (Some(start.zip(end).ok_or_else(accumulator::corrupt)?), key)
            }
        };
        let key = unb64(key).ok_or_else(accumulator::corrupt)?;
        let b = &mut bytes;
        let time = i64::from_le_bytes(take(b)?);
        let emitted = take::<1>(b)? != [0];
        let k = self.groups.intern(&key);
        if self.groups.find(k, window).is_some() {
            return Err(accumulator::corrupt());
        }
        let g = self.groups.insert(k, window);
        for acc in &mut self.accumulators {
            acc.load(g, b)?;
        }
        // Session windows' rows; none when the entry ends here.
        let inputs = if b.is_empty() {
            0
        } else {
            u32::from_le_bytes(take(b)?)
        };
        let mut kept = Vec::with_capacity(inputs as usize);
        for _ in 0..inputs {
            let offset = i64::from_le_bytes(take(b)?);
            kept.push((offset, take_slice(b)?.into()));
        }
        let slot = &mut self.groups.slots[g as usize];
        slot.time = time;
        slot.emitted = emitted;
        slot.inputs = kept;
        if let (Some(w), Some((start, end))) = (self.window.as_mut(), window) {
            if matches!(w.spec, WindowSpec::Session { .. }) {
                w.sessions.entry(k).or_default().insert((start, end));
            }
            if w.emit_final && end.saturating_add(w.grace) > w.stream_time {
                w.pending.insert((end, start, g));
            }
        }
        Ok(())
    }

    /// What changed since the last checkpoint (this, or a full [`Aggregator::snapshot`]
    /// followed by [`Aggregator::clear_changes`]), as [`crate::delta`] entries with paths
    /// under `"aggregate"`, laid out as the snapshot lays the state out: the groups
    /// set or removed, a table's rows, and the window clock. Forgets it.
    pub fn take_changes(&mut self, delta: &mut crate::delta::Delta) {
        self.take_group_changes(delta);
        if let Some(w) = &self.window {
            put_clock(delta, w.stream_time, w.late);
        }
    }

    /// As [`Aggregator::take_changes`], without the window clock.
    fn take_group_changes(&mut self, delta: &mut crate::delta::Delta) {
        let mut entry = Vec::new();
        let mut prefix = String::new();
        for g in self.tracking.take_changed() {
            let slot = &self.groups.slots[g as usize];
            if slot.live {
                entry.clear();
                self.entry(g, &mut entry);
                prefix.clear();
                if let Some((s, e)) = slot.window {
                    use std::fmt::Write as _;
                    let _ = write!(prefix, "{s}/{e}/");
                }
                let key = self.groups.key_bytes(slot.key);
                delta.put(&["aggregate", "groups"], &prefix, key, &entry);
                // (A changed group's key may have changed partition: said with it.)
                let p = self.groups.partition(slot.key);
                if self.units && p != groups::NO_PARTITION {
                    delta.set(("aggregate", "units", b64(key)), p);
                }
            }
        }
        for (window, key) in self.tracking.removed.drain(..) {
            delta.del(("aggregate", "groups", entry_name(window, &key)));
        }
        let rows: Vec<Box<[u8]>> = self.tracking.rows.drain().collect();
        if let Some(t) = &self.table {
            for key in rows {
                match t.rows.get(&key) {
                    Some((g, args)) => {
                        let group = self.groups.key_bytes(self.groups.slots[*g as usize].key);
                        delta.set(("aggregate", "rows", b64(&key)), (b64(group), b64(args)))
                    }
                    None => delta.del(("aggregate", "rows", b64(&key))),
                }
            }
        }
    }

    /// Forgets the changes: a full snapshot was just taken.
    pub fn clear_changes(&mut self) {
        self.tracking.clear();
    }

    /// Records which groups change, for checkpoints (durable engines only).
    pub fn set_tracking(&mut self, on: bool) {
        self.tracking.on = on;
        if !on {
            self.clear_changes();
        }
    }

    /// The whole state, for a checkpoint.
    pub fn snapshot(&self) -> Value {
        let groups: serde_json::Map<String, Value> = self
            .groups
            .live()
            .map(|g| {
                let mut entry = Vec::new();
                self.entry(g, &mut entry);
                (path(&self.groups, g), Value::String(b64(&entry)))
            })
            .collect();
        let mut out = json!({ "groups": groups });
        if self.units {
            out["units"] = Value::Object(self.units_of(self.groups.live()));
        }
        if let Some(t) = &self.table {
            let rows: serde_json::Map<String, Value> = t
                .rows
                .iter()
                .map(|(k, (g, args))| {
                    let group = self.groups.key_bytes(self.groups.slots[*g as usize].key);
                    (b64(k), json!([b64(group), b64(args)]))
                })
                .collect();
            out["rows"] = Value::Object(rows);
        }
        if let Some(w) = &self.window {
            out["stream_time"] = json!(w.stream_time);
            out["late"] = json!(w.late);
        }
        out
    }

    /// Dividing by partition: the partition of the key of each group of `ids` that has
    /// one, by key (base64).
    fn units_of(&self, ids: impl Iterator<Item = u32>) -> serde_json::Map<String, Value> {
        let mut out = serde_json::Map::new();
        for g in ids {
            let k = self.groups.slots[g as usize].key;
            let p = self.groups.partition(k);
            if p != groups::NO_PARTITION {
                out.insert(b64(self.groups.key_bytes(k)), json!(p));
            }
        }
        out
    }

    /// Puts back a checkpoint's state; how many entries did not decode (skipped).
    pub fn restore(&mut self, snapshot: &Value) -> usize {
        let mut unread = 0;
        self.clear_changes();
        self.groups.clear();
        self.accumulators = self.fresh.clone();
        if let Some(w) = self.window.as_mut() {
            w.stream_time = snapshot["stream_time"].as_i64().unwrap_or(i64::MIN);
            w.late = snapshot["late"].as_u64().unwrap_or(0);
            w.sessions.clear();
            w.pending.clear();
        }
        for (name, v) in snapshot["groups"].as_object().into_iter().flatten() {
            let loaded = v
                .as_str()
                .and_then(unb64)
                .map(|bytes| self.load_entry(name, &bytes));
            if !matches!(loaded, Some(Ok(()))) {
                unread += 1;
            }
        }
        if let Some(mut t) = self.table.take() {
            t.rows.clear();
            for (k, v) in snapshot["rows"].as_object().into_iter().flatten() {
                let (Some(source), Some(key), Some(args)) = (
                    unb64(k),
                    v[0].as_str().and_then(unb64),
                    v[1].as_str().and_then(unb64),
                ) else {
                    unread += 1;
                    continue;
                };
                let k = self.groups.intern(&key);
                let g = match self.groups.find(k, None) {
                    Some(g) => g,
                    None => self.groups.insert(k, None),
                };
                t.rows.insert(source.into(), (g, args.into()));
            }
            self.table = Some(t);
        }
        // Dividing by partition: each key's partition (none for a key no group has).
        if self.units {
            for (k, p) in snapshot["units"].as_object().into_iter().flatten() {
                let key = unb64(k).and_then(|b| self.groups.key_id(&b));
                if let (Some(key), Some(p)) = (key, p.as_u64().and_then(|p| u32::try_from(p).ok()))
                {
                    self.groups.set_partition(key, p);
                }
            }
        }
        self.groups.end_batch();
        unread
    }

    /// The GROUP BY's key types, and each call as the query writes it with its result
    /// type: the logical plan's aggregate node.
    pub(crate) fn describe(&self) -> crate::logical::Grouping {
        crate::logical::Grouping {
            key_types: self.keys.clone(),
            calls: self
                .calls
                .iter()
                .zip(&self.results)
                .map(|(c, t)| (c.sql.clone(), t.clone()))
                .collect(),
        }
    }

    /// The physical stage: accumulators over groups, then the select list's columns.
    pub fn explain(&self) -> String {
        let calls: Vec<&str> = self.calls.iter().map(|c| c.sql.as_str()).collect();
        let changes = match (&self.window, self.coalesce) {
            (Some(w), _) if w.emit_final => "one change per window when it closes",
            (_, true) => "each group's last change per batch",
            _ => "one change per input record",
        };
        let outputs: Vec<String> = self
            .outputs
            .iter()
            .map(|o| format!("{}{}", o.name, if o.is_key { " (key)" } else { "" }))
            .collect();
        let mut text = format!(
            "Aggregate: {} per group of {} key column(s){} ({changes})\nProject: {}",
            calls.join(", "),
            self.keys.len(),
            self.window_type()
                .map(|w| format!(", {w} windows"))
                .unwrap_or_default(),
            outputs.join(", ")
        );
        if self.having.is_some() {
            text.push_str("\nHaving: over each group's results");
        }
        text
    }
}

/// A windowed aggregation's clock in a checkpoint's delta.
fn put_clock(delta: &mut crate::delta::Delta, stream_time: i64, late: u64) {
    delta.set(("aggregate", "stream_time"), stream_time);
    delta.set(("aggregate", "late"), late);
}

/// Group `g`'s result as the batch's next change: its `Emit` op and the change's time,
/// source offset and kind.
fn emit(ops: &mut Vec<Op>, meta: &mut Vec<Meta>, g: u32, time: i64, offset: i64, change: Change) {
    ops.push(Op::Emit(g));
    meta.push(Meta {
        time,
        offset,
        group: g,
        change,
    });
}

/// The group for a key and window, made (and started afresh) if there is none; whether
/// it is new.
fn open_group(
    groups: &mut Groups,
    tracking: &mut Tracking,
    ops: &mut Vec<Op>,
    key: u32,
    window: Option<(i64, i64)>,
) -> (u32, bool) {
    if let Some(g) = groups.find(key, window) {
        return (g, false);
    }
    let g = groups.insert(key, window);
    ops.push(Op::Reset(g));
    tracking.born(g);
    (g, true)
}

/// Removes a group; the next checkpoint removes its entry, unless it was made since the
/// last one.
fn remove_group(groups: &mut Groups, tracking: &mut Tracking, g: u32) {
    if tracking.on && tracking.removed(g) {
        let slot = &groups.slots[g as usize];
        let key = groups.key_bytes(slot.key).into();
        tracking.removed.push((slot.window, key));
    }
    groups.remove(g);
}

/// A group's entry name in checkpoints: its key's bytes, after its window's bounds.
fn path(groups: &Groups, g: u32) -> String {
    let slot = &groups.slots[g as usize];
    entry_name(slot.window, groups.key_bytes(slot.key))
}

fn entry_name(window: Option<(i64, i64)>, key: &[u8]) -> String {
    let key = b64(key);
    match window {
        Some((s, e)) => format!("{s}/{e}/{key}"),
        None => key,
    }
}
