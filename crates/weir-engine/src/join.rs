//! Joins: stream-stream (WITHIN), stream-table, table-table on the key and on a foreign
//! key, and chains of them (n-way, left-deep).
//!
//! Planning turns the sources into one relation the rest of the engine plans over as if
//! it were a single source: every column of every source, named `ALIAS_COLUMN` (the
//! "wide" row), plus the join's key as the relation's key column. The query's column
//! references are rewritten to those names (`l.b` → `L_B`, `b` → the one source's `B`),
//! so the ordinary stateless plan, GROUP BY and sink writing run unchanged over the
//! joined rows.
//!
//! At run time a [`Joiner`] reads every source, orders the records by timestamp (keeping
//! each source's order), and pushes each run of records from one source up the join tree.
//! Each join node keeps what its shape needs: stream-stream joins a buffer of each side's
//! records within the window and its grace; stream-table joins the table's rows;
//! table-table joins both sides' rows (foreign-key joins also an index from foreign key to
//! left rows). The semantics are Kafka Streams' as ksqlDB's conformance cases expect them:
//! a stream record joins what the other side holds when it arrives (outer joins emit it
//! with nulls at once when nothing matches), table changes give the new joined row or a
//! tombstone, and the output timestamp is the later of the joined records'.
//!
//! The state (buffers, table rows, offsets) is checkpointed with the query.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Join state by key: foldhash rather than SipHash.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use weir_format::{Column, Layout};
use weir_sql::ast::{Expr, JoinKind, Query, SelectItem, SourceKind, SqlType, fmt_expr};
use weir_sql::sqlparser::ast::{self as sql, visit_expressions_mut};

use crate::catalog::Source;
use crate::error::{EngineError, Result};
use crate::functions::Functions;
use crate::plan::{Compiled, ExprCompiler, column_name};
use crate::rowcodec::RowCodec;
use crate::tracked::Tracked;

/// Grace period of a stream-stream join that does not say: Kafka Streams' old default.
const DEFAULT_GRACE_MS: i64 = 24 * 3_600_000;

/// One source of a join.
#[derive(Debug, Clone)]
pub struct JoinInput {
    pub source: Source,
    pub alias: String,
    /// Where its columns (keys then values) sit in the wide row.
    start: usize,
    width: usize,
    /// Next offset to read, per partition.
    pub offsets: Vec<u64>,
    /// Its records as batches (a stream's tombstones join nothing).
    decoder: crate::pipeline::Decoder,
}

impl JoinInput {
    /// Its columns as the wide row holds them: ROWTIME, ROWPARTITION, ROWOFFSET (as
    /// decoding gives them), its keys, its values.
    pub(crate) fn columns(&self) -> impl Iterator<Item = Column> + '_ {
        use weir_format::PSEUDO_COLUMNS as P;
        [
            Column::new(P[0], SqlType::Bigint),
            Column::new(P[1], SqlType::Int),
            Column::new(P[2], SqlType::Bigint),
        ]
        .into_iter()
        .chain(self.source.layout.columns().cloned())
        // A windowed source's rows end with their window's bounds.
        .chain(
            crate::WINDOW_BOUNDS
                .into_iter()
                .filter(|_| self.source.window.is_some())
                .map(|b| Column::new(b, SqlType::Bigint)),
        )
    }

    /// Where its window's bounds are in the wide row, when it is windowed.
    fn window_columns(&self) -> Option<(usize, usize)> {
        self.source
            .window
            .map(|_| (self.start + self.width - 2, self.start + self.width - 1))
    }

    pub(crate) fn is_stream(&self) -> bool {
        self.source.kind == SourceKind::Stream
    }
}

/// One source's columns of a record in arrow's row format (see [`WideCodec`]).
type Part = Arc<[u8]>;

/// A wide row: per source, its columns as one row (none: that source's columns are null
/// in it). Joining two rows takes the right source's part into the left row.
#[derive(Debug, Clone, PartialEq)]
struct Wide(smallvec::SmallVec<[Option<Part>; 4]>);

impl Serialize for Wide {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD_NO_PAD;
        let parts: Vec<Option<String>> = self
            .0
            .iter()
            .map(|p| p.as_ref().map(|p| b64.encode(p)))
            .collect();
        parts.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Wide {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Wide, D::Error> {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD_NO_PAD;
        let parts: Vec<Option<String>> = Deserialize::deserialize(d)?;
        parts
            .into_iter()
            .map(|p| {
                p.map(|p| b64.decode(p).map(Part::from))
                    .transpose()
                    .map_err(serde::de::Error::custom)
            })
            .collect::<std::result::Result<_, _>>()
            .map(Wide)
    }
}

/// A record, or a join's result, on its way up the tree.
#[derive(Debug, Clone)]
struct Event {
    pub ts: i64,
    /// The wide row: the columns of the sources under the node that made it; others null.
    pub row: Wide,
    /// A table's delete.
    pub delete: bool,
    /// The relation's key (its key columns as a row) at the node that made it; none: null.
    pub key: Option<Part>,
    /// The source record it comes from (partition, offset): where a problem with it is
    /// reported.
    pub origin: Origin,
}

/// A source record's partition and offset.
type Origin = (u32, u64);

/// Records a join could not process: where each is, and why (for the processing log).
type Failures = Vec<crate::Problem>;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    ts: i64,
    row: Wide,
}

/// Wide rows in and out of Arrow: per source, its columns' codec and place.
#[derive(Debug, Clone)]
struct WideCodec {
    schema: SchemaRef,
    /// Per source: where its columns start in the wide schema, and their codec.
    sources: Vec<(usize, RowCodec)>,
}

impl WideCodec {
    fn new(schema: SchemaRef, inputs: &[JoinInput]) -> Result<WideCodec> {
        let sources = inputs
            .iter()
            .map(|i| {
                let types: Vec<_> = schema.fields()[i.start..i.start + i.width]
                    .iter()
                    .map(|f| f.data_type().clone())
                    .collect();
                Ok((i.start, RowCodec::new(&types)?))
            })
            .collect::<Result<_>>()?;
        Ok(WideCodec { schema, sources })
    }

    /// The source whose columns hold wide column `i`.
    fn source_of(&self, i: usize) -> usize {
        self.sources
            .iter()
            .rposition(|(start, _)| *start <= i)
            .unwrap_or(0)
    }

    /// One source's columns for these events (nulls where the event lacks it).
    fn columns(&self, source: usize, events: &[&Wide]) -> Result<Vec<ArrayRef>> {
        let codec = &self.sources[source].1;
        codec.decode(events.iter().map(|w| match &w.0[source] {
            Some(p) => p.as_ref(),
            None => codec.null_row(),
        }))
    }

    /// The wide batch of these events.
    fn batch(&self, events: &[&Wide]) -> Result<RecordBatch> {
        let mut columns = Vec::with_capacity(self.schema.fields().len());
        for s in 0..self.sources.len() {
            columns.extend(self.columns(s, events)?);
        }
        Ok(RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &arrow::array::RecordBatchOptions::new().with_row_count(Some(events.len())),
        )?)
    }

    /// Wide column `i` of these events.
    fn column(&self, i: usize, events: &[&Wide]) -> Result<ArrayRef> {
        let s = self.source_of(i);
        let mut columns = self.columns(s, events)?;
        Ok(columns.swap_remove(i - self.sources[s].0))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// Both sides streams: records within `before`/`after` of each other join.
    StreamStream { before: i64, after: i64, grace: i64 },
    /// A stream looks up a table's current row.
    StreamTable,
    /// Two tables on the (right) table's key.
    TableTable,
    /// The left table's expression refers to the right table's key.
    ForeignKey,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct NodeState {
    /// Per join key (JSON text): the stream side's buffered records, or the table side's
    /// row (one entry).
    left: Tracked<FastMap<String, Vec<Entry>>, Vec<Entry>>,
    right: Tracked<FastMap<String, Vec<Entry>>, Vec<Entry>>,
    /// Foreign-key joins: per left key (JSON text), its foreign key and row ...
    left_rows: Tracked<BTreeMap<String, (String, Entry)>, (String, Entry)>,
    /// ... and per foreign key, the left keys that refer to it.
    referrers: Tracked<FastMap<String, BTreeSet<String>>, BTreeSet<String>>,
    stream_time: i64,
    purged_at: i64,
}

impl NodeState {
    /// A stream-table join's table row for a key (its entry under the key's text).
    fn table_row(&self, key: &str) -> Option<&Entry> {
        self.right.get(key).and_then(|v| v.first())
    }
}

#[derive(Debug, Clone)]
struct JoinNode {
    kind: JoinKind,
    shape: Shape,
    left: Node,
    right: Node,
    left_key: Compiled,
    right_key: Compiled,
    /// Where each key is in the wide row when it is a plain column (no evaluation).
    left_column: Option<usize>,
    right_column: Option<usize>,
    /// Windowed sources: where each side's window bounds are; rows match only within
    /// the same window.
    windows: Option<((usize, usize), (usize, usize))>,
    /// The join key's codec (both sides' keys are cast to the left key's type).
    key_codec: RowCodec,
    /// The right source: merging takes its part from the right side. (Joins are
    /// left-deep: the right child is one source.)
    right_source: usize,
    /// Foreign-key joins: the left table's key columns in the wide row, and their codec
    /// (the relation's key).
    left_primary: Vec<usize>,
    primary_codec: Option<RowCodec>,
    state: NodeState,
}

#[derive(Debug, Clone)]
enum Node {
    Source(usize),
    Join(Box<JoinNode>),
}

impl Node {
    fn contains(&self, source: usize) -> bool {
        match self {
            Node::Source(s) => *s == source,
            Node::Join(j) => j.left.contains(source) || j.right.contains(source),
        }
    }

    fn is_stream(&self, inputs: &[JoinInput]) -> bool {
        match self {
            Node::Source(s) => inputs[*s].is_stream(),
            Node::Join(j) => matches!(j.shape, Shape::StreamStream { .. } | Shape::StreamTable),
        }
    }

    fn push(
        &mut self,
        source: usize,
        events: Vec<Event>,
        wide: &WideCodec,
        failures: &mut Failures,
    ) -> Result<Vec<Event>> {
        match self {
            Node::Source(s) => Ok(if *s == source { events } else { Vec::new() }),
            Node::Join(j) => {
                if j.left.contains(source) {
                    let events = j.left.push(source, events, wide, failures)?;
                    j.on_side(true, events, wide, failures)
                } else {
                    let events = j.right.push(source, events, wide, failures)?;
                    j.on_side(false, events, wide, failures)
                }
            }
        }
    }

    fn snapshot(&self) -> Value {
        match self {
            Node::Source(_) => Value::Null,
            Node::Join(j) => json!({
                "state": serde_json::to_value(&j.state).unwrap_or(Value::Null),
                "left": j.left.snapshot(),
                "right": j.right.snapshot(),
            }),
        }
    }

    /// What changed since the last checkpoint, as [`crate::delta`] entries under `path`
    /// (the node's place in the snapshot); forgets it.
    fn take_changes(&mut self, path: &[&str], delta: &mut crate::delta::Delta) {
        let Node::Join(j) = self else { return };
        let at = |last: &'static str| -> Vec<&str> {
            let mut p = path.to_vec();
            p.push(last);
            p
        };
        let state = at("state");
        let field = |name: &'static str| -> Vec<&str> {
            let mut p = state.clone();
            p.push(name);
            p
        };
        j.state.left.take_changes(&field("left"), delta);
        j.state.right.take_changes(&field("right"), delta);
        j.state.left_rows.take_changes(&field("left_rows"), delta);
        j.state.referrers.take_changes(&field("referrers"), delta);
        for (name, v) in [
            ("stream_time", j.state.stream_time),
            ("purged_at", j.state.purged_at),
        ] {
            delta.set(field(name), v);
        }
        j.left.take_changes(&at("left"), delta);
        j.right.take_changes(&at("right"), delta);
    }

    fn set_tracking(&mut self, on: bool) {
        if let Node::Join(j) = self {
            j.state.left.set_tracking(on);
            j.state.right.set_tracking(on);
            j.state.left_rows.set_tracking(on);
            j.state.referrers.set_tracking(on);
            j.left.set_tracking(on);
            j.right.set_tracking(on);
        }
    }

    fn clear_changes(&mut self) {
        if let Node::Join(j) = self {
            j.state.left.clear_changes();
            j.state.right.clear_changes();
            j.state.left_rows.clear_changes();
            j.state.referrers.clear_changes();
            j.left.clear_changes();
            j.right.clear_changes();
        }
    }

    /// Puts back the nodes' states; how many did not decode (they start empty).
    fn restore(&mut self, v: &Value) -> usize {
        let Node::Join(j) = self else { return 0 };
        let unread = match serde_json::from_value(v["state"].clone()) {
            Ok(s) => {
                j.state = s;
                0
            }
            Err(_) => 1,
        };
        unread + j.left.restore(&v["left"]) + j.right.restore(&v["right"])
    }
}

/// A join key as one node matches it.
#[derive(Debug, Clone)]
struct JoinKey<'a> {
    /// The key as a row of the relation's key (none: null, which joins nothing).
    value: Option<Part>,
    /// Its state entries' name: the key's row in hex (which orders like the keys), and
    /// for windowed sources the window.
    text: &'a str,
}

impl JoinKey<'_> {
    fn is_null(&self) -> bool {
        self.value.is_none()
    }
}

/// Bytes as hex text: names of state entries that sort as the bytes do.
fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    hex_into(&mut s, bytes);
    s
}

fn hex_into(s: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
}

fn unhex(text: &str) -> Option<Part> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()
        .map(Part::from)
}

/// Evaluates a key expression over a wide batch. When the batch fails, each row is
/// evaluated alone: a row whose key cannot be computed gets a null key (it joins
/// nothing) and why goes to `failures`.
fn eval_keys(
    c: &Compiled,
    batch: &RecordBatch,
    events: &[Event],
    failures: &mut Failures,
) -> Result<ArrayRef> {
    let eval = |b: &RecordBatch| -> std::result::Result<ArrayRef, String> {
        c.expr
            .evaluate(b)
            .and_then(|v| v.into_array(b.num_rows()))
            .map_err(|e| e.to_string())
    };
    if let Ok(keys) = eval(batch) {
        return Ok(keys);
    }
    let mut parts: Vec<ArrayRef> = Vec::with_capacity(events.len());
    for (i, e) in events.iter().enumerate() {
        match eval(&batch.slice(i, 1)) {
            Ok(k) => parts.push(k),
            Err(why) => {
                failures.push(crate::Problem::new(
                    e.origin.0,
                    e.origin.1,
                    format!("Error computing the join key: {why}"),
                ));
                parts.push(arrow::array::new_null_array(&c.data_type, 1));
            }
        }
    }
    let refs: Vec<&dyn Array> = parts.iter().map(|a| a.as_ref()).collect();
    Ok(arrow::compute::concat(&refs)?)
}

impl JoinNode {
    /// The left row with the right source's columns taken from `right`.
    fn merge(&self, left: &Wide, right: &Wide) -> Wide {
        let mut row = left.clone();
        row.0[self.right_source] = right.0[self.right_source].clone();
        row
    }

    fn on_side(
        &mut self,
        from_left: bool,
        events: Vec<Event>,
        wide: &WideCodec,
        failures: &mut Failures,
    ) -> Result<Vec<Event>> {
        if events.is_empty() {
            return Ok(events);
        }
        let (expr, column) = if from_left {
            (&self.left_key, self.left_column)
        } else {
            (&self.right_key, self.right_column)
        };
        let rows: Vec<&Wide> = events.iter().map(|e| &e.row).collect();
        let keys = match column {
            Some(i) => wide.column(i, &rows)?,
            None => eval_keys(expr, &wide.batch(&rows)?, &events, failures)?,
        };
        let key_rows = self.key_codec.encode(std::slice::from_ref(&keys))?;
        let nulls = keys.logical_nulls();
        // Windowed: the key to match is the key and the window.
        let bounds = match self.windows {
            Some((l, r)) => {
                let (s, end) = if from_left { l } else { r };
                Some((wide.column(s, &rows)?, wide.column(end, &rows)?))
            }
            None => None,
        };
        // Foreign-key joins: the left rows' own keys.
        let primary = match (&self.primary_codec, from_left) {
            (Some(codec), true) => {
                let columns = self
                    .left_primary
                    .iter()
                    .map(|i| wide.column(*i, &rows))
                    .collect::<Result<Vec<_>>>()?;
                Some(codec.encode(&columns)?)
            }
            _ => None,
        };
        drop(rows);
        let mut out = Vec::new();
        let mut text = String::new();
        for (n, e) in events.into_iter().enumerate() {
            self.state.stream_time = self.state.stream_time.max(e.ts);
            let value: Option<Part> = nulls
                .as_ref()
                .is_none_or(|b| b.is_valid(n))
                .then(|| key_rows.row(n).as_ref().into());
            text.clear();
            if let Some(v) = &value {
                hex_into(&mut text, v);
            }
            if let (Some((s, end)), Some(_)) = (&bounds, &value) {
                let bound = |a: &ArrayRef| {
                    let a = a.as_primitive::<arrow::datatypes::Int64Type>();
                    a.is_valid(n).then(|| a.value(n))
                };
                text.push_str(&format!("@{:?}/{:?}", bound(s), bound(end)));
            }
            let k = JoinKey { value, text: &text };
            let pk = primary.as_ref().map(|p| {
                let bytes: Part = p.row(n).as_ref().into();
                let text = hex(&bytes);
                (bytes, text)
            });
            match self.shape {
                Shape::StreamStream { before, after, .. } => {
                    self.stream_stream(from_left, e, k, (before, after), &mut out)
                }
                Shape::StreamTable => self.stream_table(from_left, e, k, &mut out),
                Shape::TableTable => self.table_table(from_left, e, k, &mut out),
                Shape::ForeignKey => self.foreign_key(from_left, e, k, pk, &mut out),
            }
            if let Shape::StreamStream {
                before,
                after,
                grace,
            } = self.shape
            {
                self.purge(before + after + grace);
            }
        }
        Ok(out)
    }

    fn stream_stream(
        &mut self,
        from_left: bool,
        e: Event,
        k: JoinKey,
        (before, after): (i64, i64),
        out: &mut Vec<Event>,
    ) {
        if k.is_null() {
            return;
        }
        let other = if from_left {
            &self.state.right
        } else {
            &self.state.left
        };
        let mut matched = Vec::new();
        for o in other.get(k.text).into_iter().flatten() {
            // A right record within [left - before, left + after] of a left one.
            let within = if from_left {
                o.ts >= e.ts - before && o.ts <= e.ts + after
            } else {
                e.ts >= o.ts - before && e.ts <= o.ts + after
            };
            if within {
                matched.push(o.clone());
            }
        }
        let outer = match self.kind {
            JoinKind::Inner => false,
            JoinKind::Left => from_left,
            JoinKind::Right => !from_left,
            JoinKind::Full => true,
        };
        if matched.is_empty() && outer {
            out.push(Event {
                ts: e.ts,
                row: e.row.clone(),
                delete: false,
                key: k.value.clone(),
                origin: e.origin,
            });
        }
        for o in matched {
            let row = if from_left {
                self.merge(&e.row, &o.row)
            } else {
                self.merge(&o.row, &e.row)
            };
            out.push(Event {
                ts: e.ts.max(o.ts),
                row,
                delete: false,
                key: k.value.clone(),
                origin: e.origin,
            });
        }
        let own = if from_left {
            &mut self.state.left
        } else {
            &mut self.state.right
        };
        own.entry_or_default(k.text.to_string()).push(Entry {
            ts: e.ts,
            row: e.row,
        });
    }

    /// Drops buffered stream records older than the window and its grace allow.
    fn purge(&mut self, span: i64) {
        let st = self.state.stream_time;
        if self.state.purged_at != 0 && st - self.state.purged_at < span.max(1) {
            return;
        }
        self.state.purged_at = st;
        let oldest = st.saturating_sub(span);
        for side in [&mut self.state.left, &mut self.state.right] {
            side.update_all(|entries| {
                let before = entries.len();
                entries.retain(|e| e.ts >= oldest);
                (entries.len() != before, !entries.is_empty())
            });
        }
    }

    fn stream_table(&mut self, from_left: bool, e: Event, k: JoinKey, out: &mut Vec<Event>) {
        if !from_left {
            // The table's change: kept for the stream records to come.
            if k.is_null() {
                return;
            }
            if e.delete {
                self.state.right.remove(k.text);
            } else {
                self.state.right.insert(
                    k.text.to_string(),
                    vec![Entry {
                        ts: e.ts,
                        row: e.row,
                    }],
                );
            }
            return;
        }
        let found = (!k.is_null())
            .then(|| self.state.table_row(k.text))
            .flatten();
        match found {
            Some(r) => out.push(Event {
                ts: e.ts,
                row: self.merge(&e.row, &r.row),
                delete: false,
                key: k.value,
                origin: e.origin,
            }),
            None if self.kind == JoinKind::Left => out.push(Event {
                ts: e.ts,
                row: e.row,
                delete: false,
                key: k.value,
                origin: e.origin,
            }),
            None => {}
        }
    }

    fn table_table(&mut self, from_left: bool, e: Event, k: JoinKey, out: &mut Vec<Event>) {
        if k.is_null() {
            return;
        }
        let (own, other) = if from_left {
            (&mut self.state.left, &self.state.right)
        } else {
            (&mut self.state.right, &self.state.left)
        };
        let old = if e.delete {
            own.remove(k.text)
        } else {
            own.insert(
                k.text.to_string(),
                vec![Entry {
                    ts: e.ts,
                    row: e.row.clone(),
                }],
            )
        };
        let other = other.get(k.text).and_then(|v| v.first()).cloned();
        // Whether this side's row shows without the other's, and the other's without it.
        let (own_outer, other_outer) = match (self.kind, from_left) {
            (JoinKind::Inner, _) => (false, false),
            (JoinKind::Full, _) => (true, true),
            (JoinKind::Left, true) | (JoinKind::Right, false) => (true, false),
            (JoinKind::Left, false) | (JoinKind::Right, true) => (false, true),
        };
        let ts = other.as_ref().map_or(e.ts, |o| o.ts.max(e.ts));
        let merged = |own: &Wide, other: &Wide| {
            if from_left {
                self.merge(own, other)
            } else {
                self.merge(other, own)
            }
        };
        // The change: the joined row, the other side's row alone, or a delete.
        let change = match (e.delete, &other) {
            (false, Some(o)) => Some((merged(&e.row, &o.row), false)),
            (false, None) if own_outer => Some((e.row, false)),
            (true, Some(o)) if other_outer => Some((o.row.clone(), false)),
            (true, Some(_)) => Some((e.row, true)),
            (true, None) if own_outer && old.is_some() => Some((e.row, true)),
            _ => None,
        };
        if let Some((row, delete)) = change {
            out.push(Event {
                ts,
                row,
                delete,
                key: k.value,
                origin: e.origin,
            });
        }
    }

    /// `pk`: from the left, the left row's own key (its row, and its entries' name).
    fn foreign_key(
        &mut self,
        from_left: bool,
        e: Event,
        k: JoinKey,
        pk: Option<(Part, String)>,
        out: &mut Vec<Event>,
    ) {
        let left_join = self.kind == JoinKind::Left;
        if from_left {
            let Some((primary, pk)) = pk else { return };
            let old = self.state.left_rows.remove(&pk);
            if let Some((fk, _)) = &old
                && let Some(set) = self.state.referrers.get_mut(fk)
            {
                set.remove(&pk);
            }
            let tombstone = |out: &mut Vec<Event>| {
                out.push(Event {
                    ts: e.ts,
                    row: e.row.clone(),
                    delete: true,
                    key: Some(primary.clone()),
                    origin: e.origin,
                })
            };
            if e.delete {
                if old.is_some() {
                    tombstone(out);
                }
                return;
            }
            let fk = k.text;
            let right = (!k.is_null())
                .then(|| self.state.right.get(fk))
                .flatten()
                .and_then(|v| v.first())
                .cloned();
            match right {
                Some(r) => out.push(Event {
                    ts: e.ts.max(r.ts),
                    row: self.merge(&e.row, &r.row),
                    delete: false,
                    key: Some(primary.clone()),
                    origin: e.origin,
                }),
                None if left_join => out.push(Event {
                    ts: e.ts,
                    row: e.row.clone(),
                    delete: false,
                    key: Some(primary.clone()),
                    origin: e.origin,
                }),
                None => {
                    let had_result = old
                        .as_ref()
                        .is_some_and(|(fk, _)| self.state.right.contains_key(fk));
                    if had_result {
                        tombstone(out);
                    }
                }
            }
            if !k.is_null() {
                self.state
                    .referrers
                    .entry_or_default(fk.to_string())
                    .insert(pk.clone());
            }
            self.state.left_rows.insert(
                pk,
                (
                    fk.to_string(),
                    Entry {
                        ts: e.ts,
                        row: e.row,
                    },
                ),
            );
            return;
        }
        if k.is_null() {
            return;
        }
        if e.delete {
            if self.state.right.remove(k.text).is_none() {
                return;
            }
        } else {
            self.state.right.insert(
                k.text.to_string(),
                vec![Entry {
                    ts: e.ts,
                    row: e.row.clone(),
                }],
            );
        }
        // In key order (the names are the keys' rows in hex), as Kafka Streams'
        // subscription store gives them.
        let referrers: Vec<String> = self
            .state
            .referrers
            .get(k.text)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        for pk in referrers {
            let Some((_, l)) = self.state.left_rows.get(&pk) else {
                continue;
            };
            let ts = l.ts.max(e.ts);
            let (row, delete) = match (e.delete, left_join) {
                (false, _) => (self.merge(&l.row, &e.row), false),
                (true, true) => (l.row.clone(), false),
                (true, false) => (l.row.clone(), true),
            };
            out.push(Event {
                ts,
                row,
                delete,
                key: unhex(&pk),
                origin: e.origin,
            });
        }
    }
}

/// A planned join and its running state.
#[derive(Debug, Clone)]
pub struct Joiner {
    pub inputs: Vec<JoinInput>,
    root: Node,
    /// The wide rows' schema and codec.
    codec: WideCodec,
    /// The relation's key columns' codec (the events' keys).
    key_codec: RowCodec,
    /// The joined rows as one source: the key (the join expression), then the sources'
    /// columns; the query is planned over it.
    pub relation: Source,
    /// Which wide columns are the relation's value columns.
    value_columns: Vec<usize>,
    /// Input records processed: the relation rows' ROWOFFSET, so that recovery can tell
    /// which outputs were written.
    pub seq: i64,
    /// After a restart: per step since the last checkpoint, in order, the offsets (per
    /// source, per partition) it read up to, so the first steps read the same records
    /// again (one whose offsets are already passed reads nothing).
    pub replay: std::collections::VecDeque<Vec<Vec<u64>>>,
    /// Whether the state records its changes (for checkpoints; see `tracked.rs`).
    tracking: bool,
    /// During a step: the user's headers of the records read that had any, by (source,
    /// partition, offset), and those of the relation rows made so far, by their offset
    /// (the sequence number): each joined row carries the headers of the record that
    /// made it, as Kafka Streams forwards them.
    headers_in: HeaderMap<(usize, u32, u64)>,
    headers_out: HeaderMap<u64>,
    /// Threads a step may use to read and decode its sources' partitions, and to look up
    /// a stream's rows in a table, at once (`Engine::set_parallelism`; 1: one after the
    /// other). The output is the same whatever the number.
    pub threads: usize,
    /// Records a step reads per source partition: doubles while steps read full batches
    /// in well under [`crate::STEP_TARGET`], halves when one takes longer
    /// ([`Joiner::paced`]).
    batch: usize,
    /// Whether the last step read a full batch from some partition.
    filled: bool,
}

/// Rows a part of a stream-table lookup holds at least, when a step looks up on several
/// threads.
const LOOKUP_PART: usize = 4096;

/// Headers by where their record is.
type HeaderMap<K> = std::collections::BTreeMap<K, Vec<weir_log::Header>>;

/// What a join query is planned into.
pub struct JoinPlan {
    pub joiner: Joiner,
    /// The query over the relation (column references rewritten, no joins).
    pub query: Query,
}

fn quoted(name: &str) -> Expr {
    Expr::Identifier(sql::Ident::with_quote('`', name))
}

/// Rewrites column references to the wide row's names.
fn rewrite_columns(e: &mut Expr, inputs: &[JoinInput]) -> Result<()> {
    let mut failure = None;
    let _ = visit_expressions_mut(e, |x: &mut Expr| {
        match x {
            Expr::CompoundIdentifier(parts) if parts.len() == 2 => {
                if let Some(i) = inputs
                    .iter()
                    .find(|i| i.alias.eq_ignore_ascii_case(&parts[0].value))
                {
                    let c = &parts[1].value;
                    if i.columns().any(|col| &col.name == c) {
                        *x = quoted(&format!("{}_{c}", i.alias));
                    } else {
                        failure = Some(format!(
                            "Column '{}.{c}' cannot be resolved.",
                            parts[0].value
                        ));
                    }
                }
            }
            // Bare ROWTIME and the like are the joined row's own.
            Expr::Identifier(id) if weir_format::PSEUDO_COLUMNS.contains(&id.value.as_str()) => {}
            Expr::Identifier(id) => {
                let c = &id.value;
                let owners: Vec<&JoinInput> = inputs
                    .iter()
                    .filter(|i| i.columns().any(|col| &col.name == c))
                    .collect();
                match owners.len() {
                    0 => {}
                    1 => *x = quoted(&format!("{}_{c}", owners[0].alias)),
                    _ => {
                        failure = Some(format!(
                            "Column '{c}' is ambiguous. Could be any of: {}",
                            owners
                                .iter()
                                .map(|o| format!("{}.{c}", o.alias))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ))
                    }
                }
            }
            _ => {}
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    match failure {
        Some(why) => Err(EngineError::Invalid(why)),
        None => Ok(()),
    }
}

/// A table-table join whose left side is not on its source's key (before n-way checks).
fn foreign_key_join(j: &weir_sql::ast::Join, right_index: usize, inputs: &[JoinInput]) -> bool {
    let sql::Expr::BinaryOp { left, right, .. } = &j.on else {
        return false;
    };
    if inputs[right_index].is_stream() || inputs[..right_index].iter().any(|i| i.is_stream()) {
        return false;
    }
    let right_mentions = sources_of(right, &inputs[..=right_index]).contains(&right_index);
    let left_expr = if right_mentions { left } else { right };
    let is_key_of_some = inputs[..right_index].iter().any(|i| {
        let keys = &i.source.layout.key_columns;
        keys.len() == 1
            && referenced_column(left_expr, &inputs[..right_index])
                .is_some_and(|(_, c)| c == keys[0].name)
    });
    !is_key_of_some
}

/// `SOURCE.COLUMN` for a column reference (ksqlDB's error messages), else the expression.
fn qualified(e: &Expr, inputs: &[JoinInput]) -> String {
    match referenced_column(e, inputs) {
        Some((i, c)) => format!("{}.{c}", inputs[i].source.name),
        None => fmt_expr(e).to_string(),
    }
}

/// The sources (by index) an expression refers to.
fn sources_of(e: &Expr, inputs: &[JoinInput]) -> BTreeSet<usize> {
    let mut out = BTreeSet::new();
    let _ = weir_sql::sqlparser::ast::visit_expressions(e, |x: &Expr| {
        match x {
            Expr::CompoundIdentifier(parts) if parts.len() == 2 => {
                if let Some(i) = inputs
                    .iter()
                    .position(|i| i.alias.eq_ignore_ascii_case(&parts[0].value))
                {
                    out.insert(i);
                }
            }
            Expr::Identifier(id) => {
                out.extend(
                    inputs
                        .iter()
                        .enumerate()
                        .filter(|(_, i)| i.columns().any(|c| c.name == id.value))
                        .map(|(k, _)| k),
                );
            }
            _ => {}
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    out
}

/// The wide-row column a plain column reference names, if it is one.
fn referenced_column(e: &Expr, inputs: &[JoinInput]) -> Option<(usize, String)> {
    let (alias, c) = match e {
        Expr::CompoundIdentifier(p) if p.len() == 2 => (Some(&p[0].value), &p[1].value),
        Expr::Identifier(id) => (None, &id.value),
        _ => return None,
    };
    let mut owners = inputs.iter().enumerate().filter(|(_, i)| {
        alias.is_none_or(|a| i.alias.eq_ignore_ascii_case(a))
            && i.columns().any(|col| &col.name == c)
    });
    let (i, _) = owners.next()?;
    if owners.next().is_some() {
        return None;
    }
    Some((i, c.clone()))
}

/// ksqlDB's error for a table joined on something other than its key.
fn not_on_table_key(table: &JoinInput, e: &Expr) -> EngineError {
    let keys: Vec<&str> = table
        .source
        .layout
        .key_columns
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    EngineError::Invalid(format!(
        "Cannot repartition a TABLE source. If this is a join, make sure that the criteria uses the TABLE's key column {} instead of {}",
        keys.join(", "),
        fmt_expr(e)
    ))
}

/// Plans the joins of `query` over the catalog's sources.
pub fn plan_join(
    functions: &Functions,
    query: &Query,
    lookup: impl Fn(&str) -> Result<Source>,
) -> Result<JoinPlan> {
    let invalid = |why: String| Err(EngineError::Invalid(why));
    let unsupported = |why: &str| Err(EngineError::Unsupported(why.into()));
    let mut inputs: Vec<JoinInput> = Vec::new();
    let mut add = |name: &sql::Ident, alias: &Option<sql::Ident>| -> Result<()> {
        let source = lookup(&name.value)?;
        let alias = alias
            .as_ref()
            .map_or(source.name.clone(), |a| a.value.clone());
        if inputs
            .iter()
            .any(|i| i.alias == alias || i.source.name == source.name)
        {
            return Err(EngineError::Invalid(format!(
                "Can not join '{}' to '{}': self joins are not yet supported.",
                source.name, source.name
            )));
        }
        // Windowed sources join windowed sources with the same windows, window for
        // window, on their keys (ksqlDB does not re-key windowed sources).
        if let Some(first) = inputs.first()
            && first.source.window != source.window
        {
            return Err(EngineError::Invalid(
                "Implicit repartitioning of windowed sources is not supported.".into(),
            ));
        }
        let start = inputs.last().map_or(0, |i| i.start + i.width);
        let width =
            3 + source.layout.columns().count() + if source.window.is_some() { 2 } else { 0 };
        let schema = match source.window {
            None => source.layout.schema(),
            Some(_) => crate::with_window_bounds(&source.layout.schema()),
        };
        inputs.push(JoinInput {
            decoder: crate::pipeline::Decoder::new(&source, schema, true),
            source,
            alias,
            start,
            width,
            offsets: Vec::new(),
        });
        Ok(())
    };
    add(&query.from.source.name, &query.from.source.alias)?;
    for j in &query.from.joins {
        add(&j.source.name, &j.source.alias)?;
    }
    let kafka: Vec<&str> = inputs
        .iter()
        .filter(|i| i.source.layout.value_format.format == weir_format::Format::Kafka)
        .map(|i| i.source.name.as_str())
        .collect();
    if !kafka.is_empty() {
        return invalid(format!(
            "Source(s) {} are using the 'KAFKA' value format. This format does not yet support JOIN.",
            kafka.join(", ")
        ));
    }
    let wide_fields: Vec<Field> = inputs
        .iter()
        .flat_map(|i| {
            i.columns()
                .map(|c| {
                    Field::new(
                        format!("{}_{}", i.alias, c.name),
                        weir_format::arrow_type(&c.ty),
                        true,
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let wide = Arc::new(Schema::new(wide_fields));
    let compiler = ExprCompiler::new(functions, &wide, None)?;
    // Left-deep: each join adds one source to what is joined so far.
    let mut root = Node::Source(0);
    let mut root_key: Vec<Column> = Vec::new();
    let mut key_columns: Vec<String> = Vec::new();
    for (n, j) in query.from.joins.iter().enumerate() {
        let right_index = n + 1;
        let right_input = &inputs[right_index];
        // Which side of `a = b` belongs to the source being joined.
        let sql::Expr::BinaryOp {
            left: a,
            op: sql::BinaryOperator::Eq,
            right: b,
        } = &j.on
        else {
            return invalid(format!(
                "Unsupported join expression: {}. Only equality joins are supported.",
                fmt_expr(&j.on)
            ));
        };
        let mentions = |e: &Expr, i: usize| sources_of(e, &inputs[..=right_index]).contains(&i);
        let (left_expr, right_expr) = if mentions(b, right_index) && !mentions(a, right_index) {
            (a.as_ref().clone(), b.as_ref().clone())
        } else if mentions(a, right_index) && !mentions(b, right_index) {
            (b.as_ref().clone(), a.as_ref().clone())
        } else {
            return invalid(format!(
                "Invalid comparison expression '{}' in join '{}'. Each side of the join comparision must contain references from exactly one source.",
                fmt_expr(&j.on),
                fmt_expr(&j.on)
            ));
        };
        let scope: Vec<JoinInput> = inputs[..=right_index].to_vec();
        let mut l = left_expr.clone();
        rewrite_columns(&mut l, &scope[..right_index])?;
        let mut r = right_expr.clone();
        rewrite_columns(&mut r, &scope[right_index..])?;
        let left_key = compiler.compile(&l)?;
        let right_key = compiler.compile(&r)?;
        let lt = crate::types::sql_type_of(&left_key.data_type)?;
        let rt = crate::types::sql_type_of(&right_key.data_type)?;
        let integer = |t: &SqlType| matches!(t, SqlType::Int | SqlType::Bigint);
        // INT with BIGINT joins as BIGINT; INT with INT stays INT (the key's type).
        let lt = if integer(&lt) && integer(&rt) && lt != rt {
            SqlType::Bigint
        } else {
            lt
        };
        // Tables are not repartitioned: keys of schema-registry formats, written with
        // their type's schema, join only when the types are the same.
        let tables_with_schema_keys = inputs[..=right_index]
            .iter()
            .all(|i| i.source.kind == weir_sql::ast::SourceKind::Table)
            && inputs[..=right_index]
                .iter()
                .any(|i| i.source.layout.key_format.format.has_schema());
        let lt = if tables_with_schema_keys {
            crate::types::sql_type_of(&left_key.data_type)?
        } else {
            lt
        };
        if lt != rt && (tables_with_schema_keys || !(integer(&lt) && integer(&rt))) {
            return invalid(format!(
                "Invalid join condition: types don't match. Got {}{{{lt}}} = {}{{{rt}}}.",
                fmt_expr(&left_expr),
                fmt_expr(&right_expr)
            ));
        }
        if right_input.source.window.is_some() {
            let on_key = |e: &Expr, i: &JoinInput| {
                column_name(e).is_some_and(|c| {
                    i.source
                        .layout
                        .key_columns
                        .iter()
                        .any(|k| c == format!("{}_{}", i.alias, k.name))
                })
            };
            if !on_key(&l, &inputs[0]) || !on_key(&r, right_input) {
                return invalid(
                    "Implicit repartitioning of windowed sources is not supported. See https://github.com/confluentinc/ksql/issues/4385.".into(),
                );
            }
        }
        let left_stream = root.is_stream(&inputs);
        let right_stream = right_input.is_stream();
        let is_right_primary = |e: &Expr| {
            column_name(e).is_some_and(|c| {
                right_input.source.layout.key_columns.len() == 1
                    && right_input.source.layout.key_columns[0].name == c
            })
        };
        let shape = match (left_stream, right_stream, &j.within) {
            (true, true, Some(w)) => {
                let ms =
                    |d: &weir_sql::ast::Duration| d.as_millis().min(i64::MAX as u64 / 4) as i64;
                let before = ms(&w.before);
                let after = w.after.as_ref().map(ms).unwrap_or(before);
                Shape::StreamStream {
                    before,
                    after,
                    grace: w.grace.as_ref().map(ms).unwrap_or(DEFAULT_GRACE_MS),
                }
            }
            (true, true, None) => {
                return invalid(
                    "Stream-Stream joins must have a WITHIN clause specified. None was provided. To learn about how to specify a WITHIN clause with a stream-stream join, please visit: https://docs.confluent.io/current/ksql/docs/syntax-reference.html#create-stream-as-select".into(),
                );
            }
            (_, _, Some(_)) => {
                return invalid(format!(
                    "A window definition was provided for a {}-{} join. Windows are only supported on Stream-Stream joins.",
                    if left_stream { "Stream" } else { "Table" },
                    if right_stream { "Stream" } else { "Table" },
                ));
            }
            (false, true, None) => {
                return invalid(format!(
                    "Invalid join order: table-stream joins are not supported; only stream-table joins. Got {} [{}] {}.",
                    inputs[0].source.name, j.kind, right_input.source.name
                ));
            }
            (true, false, None) => {
                if !is_right_primary(&right_expr) {
                    return Err(not_on_table_key(right_input, &right_expr));
                }
                if matches!(j.kind, JoinKind::Right | JoinKind::Full) {
                    return invalid(format!(
                        "{} is not supported with stream-table joins.",
                        j.kind
                    ));
                }
                Shape::StreamTable
            }
            (false, false, None) => {
                if !is_right_primary(&right_expr) {
                    return Err(not_on_table_key(right_input, &right_expr));
                }
                // The left side on its key: a key join; on anything else: a foreign key.
                let left_primary = match &root {
                    Node::Source(s) => {
                        let keys = &inputs[*s].source.layout.key_columns;
                        let lcol = column_name(&l);
                        keys.len() == 1
                            && lcol.as_deref()
                                == Some(&format!("{}_{}", inputs[*s].alias, keys[0].name))
                    }
                    Node::Join(_) => column_name(&l).is_some_and(|c| key_columns.contains(&c)),
                };
                let foreign = !left_primary
                    || query
                        .from
                        .joins
                        .iter()
                        .enumerate()
                        .any(|(m, other)| m != n && foreign_key_join(other, m + 1, &inputs));
                if foreign && query.from.joins.len() > 1 {
                    return invalid(format!(
                        "Invalid join condition: foreign-key table-table joins are not supported as part of n-way joins. Got {} = {}.",
                        qualified(&left_expr, &inputs),
                        qualified(&right_expr, &inputs)
                    ));
                }
                if left_primary {
                    Shape::TableTable
                } else {
                    if !matches!(j.kind, JoinKind::Inner | JoinKind::Left) {
                        return invalid(format!(
                            "Invalid join type: full-outer join not supported for foreign-key table-table join. Got {} [{}] {}.",
                            inputs[0].source.name, j.kind, right_input.source.name
                        ));
                    }
                    if !matches!(root, Node::Source(_)) {
                        return unsupported("foreign-key joins after another join");
                    }
                    Shape::ForeignKey
                }
            }
        };
        let left_primary: Vec<(usize, SqlType)> = match (&shape, &root) {
            (Shape::ForeignKey, Node::Source(s)) => {
                let i = &inputs[*s];
                i.source
                    .layout
                    .key_columns
                    .iter()
                    .enumerate()
                    .map(|(k, c)| (i.start + 3 + k, c.ty.clone()))
                    .collect()
            }
            _ => Vec::new(),
        };
        let primary_codec = (shape == Shape::ForeignKey)
            .then(|| {
                let types: Vec<_> = left_primary
                    .iter()
                    .map(|(_, t)| weir_format::arrow_type(t))
                    .collect();
                RowCodec::new(&types)
            })
            .transpose()?;
        // The relation's key: the left table's key for a foreign-key join, else the join
        // expression, named after the column it is when it is one.
        if shape == Shape::ForeignKey {
            let i = &inputs[0];
            root_key = i
                .source
                .layout
                .key_columns
                .iter()
                .map(|c| Column::new(format!("{}_{}", i.alias, c.name), c.ty.clone()))
                .collect();
            key_columns = root_key.iter().map(|c| c.name.clone()).collect();
        } else {
            // A full outer join's key may come from either side: a synthetic ROWKEY, as
            // when neither side of the criteria is a column.
            let name = match j.kind {
                JoinKind::Full => None,
                JoinKind::Right => column_name(&r).or_else(|| column_name(&l)),
                _ => column_name(&l).or_else(|| column_name(&r)),
            }
            .unwrap_or_else(|| "ROWKEY".to_string());
            root_key = vec![Column::new(&name, lt.clone())];
            // The columns that hold the key: both sides' join columns, and those of the
            // joins before when this one joins on their key.
            let (lc, rc) = (column_name(&l), column_name(&r));
            key_columns = if j.kind == JoinKind::Full {
                vec![name]
            } else if lc.as_ref().is_some_and(|c| key_columns.contains(c)) {
                key_columns.extend(rc);
                key_columns
            } else {
                [lc, rc].into_iter().flatten().collect()
            };
        }
        root = Node::Join(Box::new(JoinNode {
            kind: j.kind,
            shape,
            left: root,
            right: Node::Source(right_index),
            windows: inputs[0]
                .window_columns()
                .zip(inputs[right_index].window_columns()),
            left_column: column_name(&l).and_then(|c| wide.index_of(&c).ok()),
            right_column: column_name(&r).and_then(|c| wide.index_of(&c).ok()),
            left_key,
            right_key,
            key_codec: RowCodec::new(&[weir_format::arrow_type(&lt)])?,
            right_source: right_index,
            left_primary: left_primary.iter().map(|(i, _)| *i).collect(),
            primary_codec,
            state: NodeState::default(),
        }));
    }
    let relation_kind = if root.is_stream(&inputs) {
        SourceKind::Stream
    } else {
        SourceKind::Table
    };
    // The relation: the key, then every wide column that is not the key.
    let key_names: Vec<String> = root_key.iter().map(|c| c.name.clone()).collect();
    let mut value_columns = Vec::new();
    let mut values = Vec::new();
    for (i, f) in wide.fields().iter().enumerate() {
        if key_names.contains(f.name()) {
            continue;
        }
        value_columns.push(i);
        let ty = crate::types::sql_type_of(f.data_type())?;
        values.push(Column::new(f.name(), ty));
    }
    let first = &inputs[0].source;
    let relation = Source {
        name: first.name.clone(),
        kind: relation_kind,
        topic: first.topic.clone(),
        layout: Layout {
            key_columns: root_key,
            value_columns: values,
            key_format: first.layout.key_format.clone(),
            value_format: first.layout.value_format.clone(),
            header_columns: Vec::new(),
        },
        timestamp_column: None,
        timestamp_format: None,
        statement: String::new(),
        written_by: None,
        read_only: true,
        // Joined windowed sources make windowed rows.
        window: first.window,
    };
    // The query over the relation.
    let mut q = query.clone();
    q.from.joins.clear();
    q.from.source.alias = None;
    // Selecting a join column selects the key.
    let select_name = |e: &Expr| -> Option<String> {
        let (i, c) = referenced_column(e, &inputs)?;
        let ambiguous = inputs
            .iter()
            .filter(|x| x.columns().any(|col| col.name == c))
            .count()
            > 1;
        Some(if ambiguous && matches!(e, Expr::CompoundIdentifier(_)) {
            format!("{}_{c}", inputs[i].alias)
        } else {
            c
        })
    };
    let mut select = Vec::new();
    for item in &query.select {
        match item {
            // `*`: the key, then every source's columns (not their pseudo-columns).
            SelectItem::Wildcard => {
                let names = key_names.iter().cloned().chain(
                    inputs
                        .iter()
                        .flat_map(|i| {
                            i.columns()
                                .skip(3)
                                .filter(|c| !crate::WINDOW_BOUNDS.contains(&c.name.as_str()))
                                .map(|c| format!("{}_{}", i.alias, c.name))
                                .collect::<Vec<_>>()
                        })
                        .filter(|n| !key_names.contains(n)),
                );
                for n in names {
                    select.push(SelectItem::Expr {
                        expr: quoted(&n),
                        alias: Some(sql::Ident::new(n)),
                    });
                }
            }
            SelectItem::QualifiedWildcard(a) => {
                let Some(i) = inputs
                    .iter()
                    .find(|i| i.alias.eq_ignore_ascii_case(&a.value))
                else {
                    return invalid(format!("Unknown source in {}.*", a.value));
                };
                for c in i
                    .columns()
                    .skip(3)
                    .filter(|c| !crate::WINDOW_BOUNDS.contains(&c.name.as_str()))
                {
                    let wide_name = format!("{}_{}", i.alias, c.name);
                    select.push(SelectItem::Expr {
                        expr: quoted(&wide_name),
                        alias: Some(sql::Ident::new(wide_name)),
                    });
                }
            }
            SelectItem::Expr { expr, alias } => {
                let name = alias
                    .clone()
                    .or_else(|| select_name(expr).map(sql::Ident::new));
                let mut e = expr.clone();
                rewrite_columns(&mut e, &inputs)?;
                // Under GROUP BY or PARTITION BY the key is theirs. The first item that
                // names a join column is the key; another (the other side's) is a value.
                let key_taken = select
                    .iter()
                    .any(|i| matches!(i, SelectItem::Expr { expr, .. } if key_names.len() == 1 && *expr == quoted(&key_names[0])));
                if let Some(c) = column_name(&e)
                    && key_columns.contains(&c)
                    && key_names.len() == 1
                    && query.group_by.is_none()
                    && query.partition_by.is_none()
                    && (!key_taken || c == key_names[0])
                {
                    e = quoted(&key_names[0]);
                }
                select.push(SelectItem::Expr {
                    expr: e,
                    alias: name,
                });
            }
        }
    }
    // `r.*` alone holds the key through the other side's join column.
    if key_names.len() == 1 && query.group_by.is_none() && query.partition_by.is_none() {
        let key = quoted(&key_names[0]);
        let holds_key = select
            .iter()
            .any(|i| matches!(i, SelectItem::Expr { expr, .. } if *expr == key));
        if !holds_key
            && let Some(SelectItem::Expr { expr, .. }) = select.iter_mut().find(|i| {
                matches!(i, SelectItem::Expr { expr, .. }
                    if column_name(expr).is_some_and(|c| key_columns.contains(&c)))
            })
        {
            *expr = key;
        }
    }
    q.select = select;
    for e in q
        .where_clause
        .iter_mut()
        .chain(q.having.iter_mut())
        .chain(q.group_by.iter_mut().flatten())
        .chain(q.partition_by.iter_mut().flatten())
    {
        rewrite_columns(e, &inputs)?;
    }
    let key_types: Vec<_> = relation
        .layout
        .key_columns
        .iter()
        .map(|c| weir_format::arrow_type(&c.ty))
        .collect();
    Ok(JoinPlan {
        joiner: Joiner {
            codec: WideCodec::new(wide, &inputs)?,
            key_codec: RowCodec::new(&key_types)?,
            inputs,
            root,
            relation,
            value_columns,
            seq: 0,
            replay: Default::default(),
            tracking: false,
            headers_in: Default::default(),
            headers_out: Default::default(),
            threads: 1,
            batch: crate::BATCH_RECORDS,
            filled: false,
        },
        query: q,
    })
}

impl Joiner {
    /// Pushes a run of one source's records through the joins: the joined events they
    /// make; why a record's join key could not be computed goes to `failures`.
    fn push(
        &mut self,
        source: usize,
        events: Vec<Event>,
        failures: &mut Failures,
    ) -> Result<Vec<Event>> {
        self.root.push(source, events, &self.codec, failures)
    }

    /// The relation's batch for events (all rows or all deletes).
    fn relation_batch(&mut self, source: usize, events: Vec<Event>) -> Result<RecordBatch> {
        self.carry_headers(events.iter().map(|e| (source, e.origin.0, e.origin.1)));
        let rows: Vec<&Wide> = events.iter().map(|e| &e.row).collect();
        let wide = self.codec.batch(&rows)?;
        let null_key = self.key_codec.null_row();
        let keys = self
            .key_codec
            .decode(events.iter().map(|e| e.key.as_deref().unwrap_or(null_key)))?;
        let times = arrow::array::Int64Array::from_iter_values(events.iter().map(|e| e.ts));
        self.relation_of(&wide, Arc::new(times), keys)
    }

    /// Notes the headers of the relation rows about to be made (the next sequence
    /// numbers, in order), from the records (source, partition, offset) that made them.
    fn carry_headers(&mut self, made_by: impl Iterator<Item = (usize, u32, u64)>) {
        if self.headers_in.is_empty() {
            return;
        }
        for (i, at) in made_by.enumerate() {
            if let Some(h) = self.headers_in.get(&at) {
                self.headers_out
                    .insert((self.seq + 1) as u64 + i as u64, h.clone());
            }
        }
    }

    /// The relation's batch of joined rows: their wide batch, event times and key columns;
    /// each row takes the next sequence number as its offset.
    fn relation_of(
        &mut self,
        wide: &RecordBatch,
        times: ArrayRef,
        keys: Vec<ArrayRef>,
    ) -> Result<RecordBatch> {
        use arrow::array::{Int32Array, Int64Array};
        let schema = match self.relation.window {
            None => self.relation.layout.schema(),
            Some(_) => crate::with_window_bounds(&self.relation.layout.schema()),
        };
        let n = wide.num_rows();
        let first = self.seq + 1;
        self.seq += n as i64;
        let mut columns: Vec<ArrayRef> = vec![
            times,
            Arc::new(Int32Array::from(vec![0; n])),
            Arc::new(Int64Array::from_iter_values(first..first + n as i64)),
        ];
        columns.extend(keys);
        columns.extend(self.value_columns.iter().map(|i| wide.column(*i).clone()));
        if self.relation.window.is_some() {
            // A windowed row's window: that of the first source present in it.
            let windows: Vec<(usize, usize)> = self
                .inputs
                .iter()
                .filter_map(JoinInput::window_columns)
                .collect();
            let bound = |i: usize| wide.column(i).as_primitive::<arrow::datatypes::Int64Type>();
            let mut starts = Vec::with_capacity(n);
            let mut ends = Vec::with_capacity(n);
            for row in 0..n {
                let w = windows.iter().find(|(s, _)| bound(*s).is_valid(row));
                let value = |i: usize| bound(i).is_valid(row).then(|| bound(i).value(row));
                starts.push(w.and_then(|(s, _)| value(*s)));
                ends.push(w.and_then(|(_, e)| value(*e)));
            }
            columns.push(Arc::new(Int64Array::from(starts)));
            columns.push(Arc::new(Int64Array::from(ends)));
        }
        crate::types::batch_as(schema, columns)
    }

    pub fn snapshot(&self) -> Value {
        json!({
            "offsets": self.inputs.iter().map(|i| i.offsets.clone()).collect::<Vec<_>>(),
            "seq": self.seq,
            "nodes": self.root.snapshot(),
        })
    }

    /// What changed since the last checkpoint (this or a full [`Joiner::snapshot`]
    /// followed by [`Joiner::clear_changes`]), as [`crate::delta`] entries with paths
    /// under `"join"`: the offsets and sequence, and the state entries set or removed.
    pub fn take_changes(&mut self, delta: &mut crate::delta::Delta) {
        let offsets: Vec<&Vec<u64>> = self.inputs.iter().map(|i| &i.offsets).collect();
        delta.set(("join", "offsets"), offsets);
        delta.set(("join", "seq"), self.seq);
        self.root.take_changes(&["join", "nodes"], delta);
    }

    /// Forgets the changes: a full snapshot was just taken.
    pub fn clear_changes(&mut self) {
        self.root.clear_changes();
    }

    /// Records which state entries change, for checkpoints (durable engines only).
    pub fn set_tracking(&mut self, on: bool) {
        self.tracking = on;
        self.root.set_tracking(on);
    }

    /// Puts back a checkpoint's state; how many join nodes' states did not decode.
    pub fn restore(&mut self, v: &Value) -> usize {
        if let Some(all) = v["offsets"].as_array() {
            for (i, o) in self.inputs.iter_mut().zip(all) {
                if let Ok(o) = serde_json::from_value::<Vec<u64>>(o.clone())
                    && o.len() == i.offsets.len()
                {
                    i.offsets = o;
                }
            }
        }
        self.seq = v["seq"].as_i64().unwrap_or(self.seq);
        let unread = self.root.restore(&v["nodes"]);
        // Restored maps start untracked.
        let tracking = self.tracking;
        self.set_tracking(tracking);
        unread
    }

    /// Whether a join is on a foreign key.
    pub fn has_foreign_key(&self) -> bool {
        matches!(&self.root, Node::Join(j) if j.shape == Shape::ForeignKey)
    }

    pub fn explain(&self) -> String {
        fn show(n: &Node, inputs: &[JoinInput]) -> String {
            match n {
                Node::Source(s) => inputs[*s].source.name.clone(),
                Node::Join(j) => format!(
                    "({} {} {} [{:?}] ON {} = {})",
                    show(&j.left, inputs),
                    j.kind,
                    show(&j.right, inputs),
                    j.shape,
                    j.left_key.expr,
                    j.right_key.expr
                ),
            }
        }
        format!("Join: {}", show(&self.root, &self.inputs))
    }
}

/// What a join's step read, decoded, per source and partition, and the offsets each
/// partition will have reached once they are processed.
pub struct Taken {
    /// The (source, partition)s that read records, in order.
    parts: Vec<ReadPart>,
    pub ends: Vec<Vec<u64>>,
    /// Read again as a recovery intent says: that intent is still in the log (no
    /// checkpoint comes while a join replays), so none is written for it.
    pub replayed: bool,
}

impl Taken {
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }
}

/// Every row of some batches as (batch, row), ordered by their times (`times`, a column
/// per batch) as a stable sort of the batches one after the other would order them: by
/// time, then batch, then row. Batches each in time order (a partition's records
/// usually are) are merged, taking runs from one batch while it stays ahead of the others,
/// with no sort of the whole.
fn time_order(times: &[&arrow::array::Int64Array]) -> Vec<(usize, usize)> {
    use std::cmp::Reverse;
    let total = times.iter().map(|t| t.len()).sum();
    let mut order: Vec<(usize, usize)> = Vec::with_capacity(total);
    let sorted = |t: &&arrow::array::Int64Array| t.values().windows(2).all(|w| w[0] <= w[1]);
    if !times.iter().all(sorted) {
        order.extend(
            times
                .iter()
                .enumerate()
                .flat_map(|(b, t)| (0..t.len()).map(move |r| (b, r))),
        );
        order.sort_by_key(|(b, r)| times[*b].value(*r));
        return order;
    }
    // Each batch's next row's (time, batch), least first.
    let mut heads: std::collections::BinaryHeap<Reverse<(i64, usize)>> = times
        .iter()
        .enumerate()
        .filter(|(_, t)| !t.is_empty())
        .map(|(b, t)| Reverse((t.value(0), b)))
        .collect();
    let mut next = vec![0usize; times.len()];
    while let Some(Reverse((_, b))) = heads.pop() {
        let values = times[b].values();
        // Its rows while they come before every other batch's next one.
        let bound = heads.peek().map(|Reverse(h)| *h);
        let mut r = next[b];
        loop {
            order.push((b, r));
            r += 1;
            if r == values.len() || bound.is_some_and(|h| (values[r], b) > h) {
                break;
            }
        }
        next[b] = r;
        if r < values.len() {
            heads.push(Reverse((values[r], b)));
        }
    }
    order
}

/// Whether some partition read `batch` records.
fn parts_filled(read: &[Result<Option<ReadPart>>], batch: usize) -> bool {
    read.iter()
        .any(|r| matches!(r, Ok(Some(part)) if part.records as usize >= batch))
}

/// One source partition's records of a step, decoded.
struct ReadPart {
    source: usize,
    partition: u32,
    /// The offset after its last record.
    end: u64,
    records: u64,
    bytes: u64,
    changes: Vec<crate::ChangeBatch>,
    problems: Vec<crate::Problem>,
    /// The user headers of the records that had any, by offset.
    headers: Vec<(u64, Vec<weir_log::Header>)>,
}

/// What one step of a join read and made.
pub struct JoinStep {
    pub consumed: u64,
    /// Bytes of the records read (keys and values).
    pub bytes: u64,
    /// Records that did not decode, or had no usable event time: (partition, offset, why).
    pub problems: Vec<crate::Problem>,
    /// The relation's rows, in runs of rows (false) and of deletes (true).
    pub changes: Vec<crate::ChangeBatch>,
    /// The headers each relation row carries (that of the record that made it), by the
    /// row's offset; rows without any are absent.
    pub headers: std::collections::BTreeMap<u64, Vec<weir_log::Header>>,
}

impl Joiner {
    /// Reads and decodes a step's records: a batch from every partition of every source
    /// (several at once on up to `threads` threads; decoding has no effect beyond the
    /// step, so it may come before the intent is written). A step
    /// interrupted before its checkpoint is replayed over exactly the same records after
    /// a restart (the durable driver records [`Taken::ends`] as an intent before the
    /// step is processed; recovery sets `replay` from the intents since the checkpoint),
    /// so its outputs get the same sequence numbers and recovery recognizes those
    /// already written.
    pub fn read(&mut self, log: &dyn weir_log::Log) -> Result<Taken> {
        let replay = self.replay.pop_front();
        // Every (source, partition) read and decoded at once on up to `threads` threads.
        let pairs: Vec<(usize, usize)> = self
            .inputs
            .iter()
            .enumerate()
            .flat_map(|(j, input)| (0..input.offsets.len()).map(move |p| (j, p)))
            .collect();
        let (inputs, batch) = (&self.inputs, self.batch);
        let replay_ref = replay.as_ref();
        let decode_part =
            |j: usize, p: usize, records: &[weir_log::StoredRecord]| -> Result<Option<ReadPart>> {
                let Some(last) = records.last() else {
                    return Ok(None);
                };
                let mut problems = Vec::new();
                let headers = crate::pipeline::user_headers(records).collect();
                Ok(Some(ReadPart {
                    source: j,
                    partition: p as u32,
                    end: last.offset + 1,
                    records: records.len() as u64,
                    bytes: crate::pipeline::payload_bytes(records),
                    changes: inputs[j].decoder.decode(records, p as u32, &mut problems)?,
                    problems,
                    headers,
                }))
            };
        let read_one = |k: usize| -> Result<Option<ReadPart>> {
            let (j, p) = pairs[k];
            let input = &inputs[j];
            let from = input.offsets[p];
            match replay_ref.and_then(|r| r.get(j)?.get(p).copied()) {
                Some(end) => {
                    let mut all = Vec::new();
                    let mut next = from;
                    while next < end {
                        let got =
                            log.read(&input.source.topic, p as u32, next, (end - next) as usize)?;
                        let Some(last) = got.last() else { break };
                        next = last.offset + 1;
                        all.extend(got);
                    }
                    decode_part(j, p, &all)
                }
                None => crate::pipeline::with_records(|records| {
                    log.read_into(&input.source.topic, p as u32, from, batch, records)?;
                    decode_part(j, p, records)
                }),
            }
        };
        let read: Vec<Result<Option<ReadPart>>> = if self.threads > 1 {
            crate::at_once(pairs.len(), self.threads, read_one)
        } else {
            (0..pairs.len()).map(read_one).collect()
        };
        self.filled = replay.is_none() && parts_filled(&read, batch);
        let mut ends: Vec<Vec<u64>> = self.inputs.iter().map(|i| i.offsets.clone()).collect();
        let mut parts = Vec::new();
        for part in read {
            if let Some(part) = part? {
                ends[part.source][part.partition as usize] = part.end;
                parts.push(part);
            }
        }
        Ok(Taken {
            parts,
            ends,
            replayed: replay.is_some(),
        })
    }

    /// Sizes the next step's batches after how long this one took (`took`, its output
    /// written): twice as large while steps read full batches in under half of
    /// [`crate::STEP_TARGET`] (up to [`crate::MAX_BATCH_RECORDS`]), half as large after
    /// one that took longer (down to [`crate::BATCH_RECORDS`]), so that a worker gets back
    /// to its other queries soon.
    pub fn paced(&mut self, took: std::time::Duration) {
        if took > crate::STEP_TARGET {
            self.batch = (self.batch / 2).max(crate::BATCH_RECORDS);
        } else if self.filled && took < crate::STEP_TARGET / 2 {
            self.batch = (self.batch * 2).min(crate::MAX_BATCH_RECORDS);
        }
    }

    /// Orders a step's records by timestamp (each source's own order kept) and pushes
    /// them through the joins.
    pub fn process(&mut self, taken: Taken) -> Result<JoinStep> {
        // Left over only by a step that failed.
        self.headers_in.clear();
        self.headers_out.clear();
        let mut consumed = 0u64;
        let mut bytes = 0u64;
        let mut problems: Vec<crate::Problem> = Vec::new();
        // (source, partition, decoded batch), in the order read.
        let mut decoded: Vec<(usize, u32, crate::ChangeBatch)> = Vec::new();
        for part in taken.parts {
            let (j, partition) = (part.source, part.partition);
            self.inputs[j].offsets[partition as usize] = part.end;
            consumed += part.records;
            bytes += part.bytes;
            for (offset, user) in part.headers {
                self.headers_in.insert((j, partition, offset), user);
            }
            problems.extend(part.problems);
            for change in part.changes {
                decoded.push((j, partition, change));
            }
        }
        let changes = match self.lookup_source(&decoded) {
            Some(s) => {
                let batches: Vec<RecordBatch> = decoded.into_iter().map(|d| d.2.batch).collect();
                self.lookup(s, batches)?
            }
            None => self.join_rows(decoded, &mut problems)?,
        };
        self.headers_in.clear();
        Ok(JoinStep {
            consumed,
            bytes,
            problems,
            changes,
            headers: std::mem::take(&mut self.headers_out),
        })
    }

    /// The stream source whose decoded records `decoded` are, when they can be joined as
    /// batches ([`Joiner::lookup`]): the join is one stream looking up one table by a
    /// column, unwindowed, and the step holds only that stream's rows (no table change
    /// to order them against).
    fn lookup_source(&self, decoded: &[(usize, u32, crate::ChangeBatch)]) -> Option<usize> {
        let Node::Join(j) = &self.root else {
            return None;
        };
        let (Node::Source(s), Node::Source(_)) = (&j.left, &j.right) else {
            return None;
        };
        let key_on_stream = j.left_column.is_some_and(|i| self.codec.source_of(i) == *s);
        let only_stream_rows = !decoded.is_empty()
            && decoded
                .iter()
                .all(|(source, _, c)| source == s && !c.tombstones);
        (j.shape == Shape::StreamTable
            && j.windows.is_none()
            && self.relation.window.is_none()
            && key_on_stream
            && only_stream_rows)
            .then_some(*s)
    }

    /// Joins a step's rows of stream `s` to the table column by column: the rows in the
    /// order the record path takes them (by event time, each partition's order kept),
    /// each row's key looked up in the table's rows, the stream's columns taken for the
    /// rows that join and the table's decoded from the rows they matched.
    fn lookup(&mut self, s: usize, batches: Vec<RecordBatch>) -> Result<Vec<crate::ChangeBatch>> {
        use arrow::datatypes::{Int32Type, Int64Type};
        let times: Vec<&arrow::array::Int64Array> = batches
            .iter()
            .map(|b| b.column(0).as_primitive::<Int64Type>())
            .collect();
        // Every row as (batch, row), in event time order (stable): the batches are not
        // put together, each part takes its rows from them.
        let order = time_order(&times);
        let Node::Join(j) = &mut self.root else {
            unreachable!("lookup_source checked the shape")
        };
        if let Some(latest) = times.iter().filter_map(|t| arrow::compute::max(*t)).max() {
            j.state.stream_time = j.state.stream_time.max(latest);
        }
        let j = &*j;
        let t = j.right_source;
        // A column of the stream's batches, to take rows from.
        let column = |c: usize| -> Vec<&dyn arrow::array::Array> {
            batches.iter().map(|b| b.column(c).as_ref()).collect()
        };
        let key_column = j.left_column.expect("checked") - self.codec.sources[s].0;
        // The rows looked up in parts of the time order, at once on up to `threads`
        // threads; the parts in order.
        let total = order.len();
        let parts = if self.threads > 1 && total >= 2 * LOOKUP_PART {
            self.threads
        } else {
            1
        };
        let (codec, key_codec) = (&self.codec, &self.key_codec);
        // One part: its rows that join (as (batch, row)), and their wide batch, key
        // columns and times.
        type Looked = (Vec<(usize, usize)>, RecordBatch, Vec<ArrayRef>, ArrayRef);
        let look_up = |part: usize| -> Result<Option<Looked>> {
            let at = &order[(total * part / parts)..(total * (part + 1) / parts)];
            let keys = arrow::compute::interleave(&column(key_column), at)?;
            let key_rows = j.key_codec.encode(std::slice::from_ref(&keys))?;
            let nulls = keys.logical_nulls();
            // Per joined row: its place in the part, the table's part it matched (none:
            // nulls).
            let mut joined: Vec<u32> = Vec::with_capacity(at.len());
            // (Borrowed from the table's state, which is only read here: no reference
            // count is touched, which the threads would contend for.)
            let mut matched: Vec<Option<&[u8]>> = Vec::with_capacity(at.len());
            let mut text = String::new();
            for n in 0..at.len() {
                let found = if nulls.as_ref().is_none_or(|b| b.is_valid(n)) {
                    text.clear();
                    hex_into(&mut text, key_rows.row(n).as_ref());
                    j.state.table_row(&text).map(|e| e.row.0[t].as_deref())
                } else {
                    None
                };
                if found.is_some() || j.kind == JoinKind::Left {
                    joined.push(n as u32);
                    matched.push(found.flatten());
                }
            }
            if joined.is_empty() {
                return Ok(None);
            }
            let rows: Vec<(usize, usize)> = joined.iter().map(|n| at[*n as usize]).collect();
            let null_row = codec.sources[t].1.null_row();
            let mut columns: Vec<ArrayRef> = Vec::with_capacity(codec.schema.fields().len());
            for (source, (_, part_codec)) in codec.sources.iter().enumerate() {
                if source == s {
                    for c in 0..batches[0].num_columns() {
                        columns.push(arrow::compute::interleave(&column(c), &rows)?);
                    }
                } else {
                    columns
                        .extend(part_codec.decode(matched.iter().map(|p| p.unwrap_or(null_row)))?);
                }
            }
            let wide = RecordBatch::try_new_with_options(
                codec.schema.clone(),
                columns,
                &arrow::array::RecordBatchOptions::new().with_row_count(Some(rows.len())),
            )?;
            let null_key = key_codec.null_row();
            let key_columns = key_codec.decode(joined.iter().map(|n| {
                let n = *n as usize;
                if nulls.as_ref().is_none_or(|b| b.is_valid(n)) {
                    key_rows.row(n).data()
                } else {
                    null_key
                }
            }))?;
            let times = arrow::compute::interleave(&column(0), &rows)?;
            Ok(Some((rows, wide, key_columns, times)))
        };
        let done: Vec<Result<Option<Looked>>> = if parts > 1 {
            crate::at_once(parts, parts, look_up)
        } else {
            vec![look_up(0)]
        };
        // In order: each part's rows take the next sequence numbers (and the headers of
        // the records that made them).
        let partitions: Vec<_> = batches
            .iter()
            .map(|b| b.column(1).as_primitive::<Int32Type>())
            .collect();
        let offsets: Vec<_> = batches
            .iter()
            .map(|b| b.column(2).as_primitive::<Int64Type>())
            .collect();
        let mut out = Vec::with_capacity(done.len());
        for part in done {
            let Some((rows, wide, key_columns, times)) = part? else {
                continue;
            };
            self.carry_headers(rows.iter().map(|(b, r)| {
                (
                    s,
                    partitions[*b].value(*r) as u32,
                    offsets[*b].value(*r) as u64,
                )
            }));
            out.push(crate::ChangeBatch {
                tombstones: false,
                batch: self.relation_of(&wide, times, key_columns)?,
            });
        }
        Ok(out)
    }

    /// Joins a step's decoded rows record by record through the join tree, in event
    /// time order (each source's order kept).
    fn join_rows(
        &mut self,
        decoded: Vec<(usize, u32, crate::ChangeBatch)>,
        problems: &mut Vec<crate::Problem>,
    ) -> Result<Vec<crate::ChangeBatch>> {
        let mut pending: Vec<(i64, usize, bool, Part, Origin)> = Vec::new();
        for (j, partition, crate::ChangeBatch { tombstones, batch }) in decoded {
            let times = batch
                .column(0)
                .as_primitive::<arrow::datatypes::Int64Type>();
            let offsets = batch
                .column(2)
                .as_primitive::<arrow::datatypes::Int64Type>();
            let parts = self.codec.sources[j].1.encode(batch.columns())?;
            for row in 0..batch.num_rows() {
                let origin = (partition, offsets.value(row) as u64);
                let part: Part = parts.row(row).as_ref().into();
                pending.push((times.value(row), j, tombstones, part, origin));
            }
        }

        let mut out_changes = Vec::new();
        pending.sort_by_key(|p| p.0);
        let sources = self.inputs.len();
        for run in pending.chunk_by(|a, b| a.1 == b.1 && a.2 == b.2) {
            let source = run[0].1;
            let events: Vec<Event> = run
                .iter()
                .map(|(ts, _, delete, part, origin)| {
                    let mut row = Wide(smallvec::smallvec![None; sources]);
                    row.0[source] = Some(part.clone());
                    Event {
                        ts: *ts,
                        row,
                        delete: *delete,
                        key: None,
                        origin: *origin,
                    }
                })
                .collect();
            let mut failures = Failures::new();
            let out = self.push(source, events, &mut failures)?;
            problems.extend(failures);
            // Runs of rows and of deletes, in order.
            let mut run: Vec<Event> = Vec::new();
            for e in out {
                if run.last().is_some_and(|l| l.delete != e.delete) {
                    let tombstones = run[0].delete;
                    out_changes.push(crate::ChangeBatch {
                        tombstones,
                        batch: self.relation_batch(source, std::mem::take(&mut run))?,
                    });
                }
                run.push(e);
            }
            if let Some(first) = run.first() {
                let tombstones = first.delete;
                out_changes.push(crate::ChangeBatch {
                    tombstones,
                    batch: self.relation_batch(source, run)?,
                });
            }
        }
        Ok(out_changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names_order_as_their_rows_and_read_back() {
        let codec = RowCodec::new(&[arrow::datatypes::DataType::Int64]).unwrap();
        let keys: ArrayRef = Arc::new(arrow::array::Int64Array::from(vec![-5, 9, 10, 300]));
        let rows = codec.encode(&[keys]).unwrap();
        let names: Vec<String> = (0..4).map(|i| hex(rows.row(i).as_ref())).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(sorted, names, "numbers order by value, not by their text");
        for (i, name) in names.iter().enumerate() {
            assert_eq!(unhex(name).as_deref(), Some(rows.row(i).as_ref()));
        }
        assert_eq!(unhex("0g"), None);
    }

    #[test]
    fn a_steps_rows_merge_into_the_order_a_stable_sort_gives() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for case in 0..400 {
            // Batches each in time order (ties within and across them), or, one case in
            // five, not.
            let batches: Vec<arrow::array::Int64Array> = (0..next(6))
                .map(|_| {
                    let mut t = next(20) as i64;
                    let mut values: Vec<i64> = (0..next(40))
                        .map(|_| {
                            t += next(3) as i64;
                            t
                        })
                        .collect();
                    if case % 5 == 0 && values.len() > 1 {
                        let other = next(values.len() as u64) as usize;
                        values.swap(0, other);
                    }
                    arrow::array::Int64Array::from(values)
                })
                .collect();
            let times: Vec<&arrow::array::Int64Array> = batches.iter().collect();
            let mut expected: Vec<(usize, usize)> = times
                .iter()
                .enumerate()
                .flat_map(|(b, t)| (0..t.len()).map(move |r| (b, r)))
                .collect();
            expected.sort_by_key(|(b, r)| times[*b].value(*r));
            assert_eq!(time_order(&times), expected, "case {case}: {batches:?}");
        }
    }
}
