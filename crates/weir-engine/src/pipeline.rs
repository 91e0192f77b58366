//! One pipeline for every query: an input (a topic's records decoded to Arrow batches, or
//! the joins of several topics), a chain of [`Operator`]s over batches of changes, and a
//! sink the query's kind chooses — the sink topic of a persistent query (lib.rs, with
//! checkpoints and recovery), a push query's client (push.rs), or the rows a pull query
//! collects (pull.rs).
//!
//! A step goes stage by stage: the input's batches for the step, then each operator over
//! every batch the stage before made, in order. So a stateless stage that fails a step
//! (`weir.fail.on.function.error`) does so before any stateful one has seen its rows, and
//! a stopped query resumes with its state as it was.

use arrow::array::AsArray;
use arrow::datatypes::{Int64Type, SchemaRef};
use serde_json::Value;
use weir_format::Layout;
use weir_log::{Log, StoredRecord};

use crate::catalog::KeyWindow;
use crate::delta::Delta;
use crate::error::{EngineError, Result};
use crate::plan::SelectPlan;
use crate::{ChangeBatch, Problem};

/// What a step read and what its operators made of it, for the sink.
#[derive(Debug, Default)]
pub(crate) struct Step {
    /// Source records read.
    pub consumed: u64,
    /// Bytes of the records read (keys and values).
    pub bytes: u64,
    /// The offset after the last record read, of the partition stepped (topic inputs;
    /// the caller moves the input on with [`Pipeline::advance`] once the output is safe).
    pub next: Option<u64>,
    /// The batch size it read with (adaptive reads of a topic input; see
    /// [`Pipeline::advance`]).
    pub requested: Option<usize>,
    /// The last stage's changes, in order.
    pub changes: Vec<ChangeBatch>,
    /// The changes already encoded for the sink, one per change (when computed where the
    /// partitions of a step run at once); empty otherwise.
    pub encoded: Vec<crate::Encoded>,
    /// Its output already written to the sink (a stateless query's partitions write
    /// their own, each on its thread): what the query counts of it. `None` until then.
    pub written: Option<Written>,
    /// Records that could not be processed: for the processing log.
    pub problems: Vec<Problem>,
    /// The user's headers (not Weir's own) of the records read that had any, by offset:
    /// the outputs a record makes carry them, as Kafka Streams carries a record's headers
    /// to what it forwards. For a join, by the joined rows' offsets (sequence numbers).
    pub headers: std::collections::BTreeMap<u64, Vec<weir_log::Header>>,
    /// Rows into and out of each stage run where the partitions' steps ran at once
    /// ([`shared_step`]), for [`Pipeline::stage_rows`].
    pub stage_rows: Vec<(u64, u64)>,
}

/// What writing a step's output to the sink came to, for the query's figures.
#[derive(Debug, Default)]
pub(crate) struct Written {
    /// Output records (rows and deletes).
    pub produced: u64,
    /// Bytes of the keys and values written.
    pub bytes: u64,
    /// Each output's latency from its event time to its write.
    pub latency: crate::meta::LatencyHistogram,
}

/// The rows (and deletes) in some batches of changes.
fn rows(changes: &[ChangeBatch]) -> u64 {
    changes.iter().map(|c| c.batch.num_rows() as u64).sum()
}

/// A stage over batches of changes (rows or deletes). Stateful stages also say what of
/// their state changed, for checkpoints, and take it back on recovery.
pub(crate) trait Operator: Send + std::fmt::Debug {
    /// One batch in; what it makes of it appended to `out` (in order); rows it could not
    /// process to `problems`. `partition` is the source partition the rows came from.
    fn process(
        &mut self,
        input: ChangeBatch,
        partition: u32,
        out: &mut Vec<ChangeBatch>,
        problems: &mut Vec<Problem>,
    ) -> Result<()>;

    /// Several partitions' batches, in partition order: what [`Operator::process`] on
    /// each in turn gives (per partition, its changes and problems), for a stage that can
    /// do them at once (a GROUP BY in shards: one thread per shard for them all).
    fn process_many(
        &mut self,
        inputs: Vec<(u32, Vec<ChangeBatch>)>,
    ) -> Result<Vec<(Vec<ChangeBatch>, Vec<Problem>)>> {
        let mut out = Vec::with_capacity(inputs.len());
        for (partition, batches) in inputs {
            let (mut changes, mut problems) = (Vec::new(), Vec::new());
            for c in batches {
                self.process(c, partition, &mut changes, &mut problems)?;
            }
            out.push((changes, problems));
        }
        Ok(out)
    }

    /// The stage as one that keeps no state, so that several partitions' batches can run
    /// through it at once; `None` for a stage with state.
    fn shared(&self) -> Option<&dyn SharedStage> {
        None
    }

    /// Splits a stateful stage's work over `n` threads where it can (its state dealt
    /// out into shards); whether its state moved (see [`Pipeline::set_threads`]).
    fn set_shards(&mut self, _n: usize) -> bool {
        false
    }

    /// EXPLAIN's lines for this stage.
    fn explain(&self) -> String;

    /// The name its state goes under in checkpoints; `None` for a stateless stage.
    fn state_name(&self) -> Option<&'static str> {
        None
    }
    /// Whether to note which entries of the state change (durable queries only).
    fn set_tracking(&mut self, _on: bool) {}
    /// The entries set or removed since the last call.
    fn take_changes(&mut self, _delta: &mut Delta) {}
    fn clear_changes(&mut self) {}
    /// The whole state.
    fn snapshot(&self) -> Value {
        Value::Null
    }
    /// Takes back a snapshot; the number of entries it could not read.
    fn restore(&mut self, _state: &Value) -> usize {
        0
    }
    /// Servers sharing work: notes from now on which source partition each entry of its
    /// state belongs to, so that the state divides by partition; whether it can.
    fn divide_by_partition(&mut self) -> bool {
        false
    }
    /// Takes back, of each `(state, partition)`, that partition's entries, as one state;
    /// the number of entries it could not read.
    fn restore_units(&mut self, _parts: &[(&Value, u32)]) -> usize {
        0
    }
    /// Records dropped for arriving after their window closed.
    fn late_records(&self) -> u64 {
        0
    }
    /// The window the stage groups by, as EXPLAIN names it.
    fn window_type(&self) -> Option<&'static str> {
        None
    }
}

/// A stage without state, run by several threads at once (one per partition).
pub(crate) trait SharedStage: Sync {
    /// As [`Operator::process`].
    fn process_shared(
        &self,
        input: ChangeBatch,
        partition: u32,
        out: &mut Vec<ChangeBatch>,
        problems: &mut Vec<Problem>,
    ) -> Result<()>;
}

/// Filter, projections, explode and re-key of a query: stateless.
#[derive(Debug)]
pub(crate) struct Project {
    pub plan: SelectPlan,
    /// `weir.fail.on.function.error`: a batch that fails stops the query (its step
    /// returns [`EngineError::Stopped`]) instead of sending its bad rows to the
    /// processing log.
    pub stop_on_error: bool,
    /// Where functions report rows they returned NULL for (see `Functions`).
    pub warnings: Option<fn() -> Vec<String>>,
    /// EXPLAIN names its columns: they are the query's (not an aggregation's inputs).
    pub named: bool,
}

/// Needs no `&mut`: several partitions' batches may run through it at once.
impl SharedStage for Project {
    fn process_shared(
        &self,
        input: ChangeBatch,
        partition: u32,
        out: &mut Vec<ChangeBatch>,
        problems: &mut Vec<Problem>,
    ) -> Result<()> {
        let ChangeBatch { tombstones, batch } = input;
        // Warnings left over from elsewhere are not this batch's.
        if let Some(take) = self.warnings {
            take();
        }
        // A table's delete passes the WHERE (the key leaves what was derived from it).
        let plan = self.plan.for_run(tombstones);
        let offsets = || {
            let o = batch
                .schema()
                .index_of("ROWOFFSET")
                .ok()
                .map(|i| batch.column(i).as_primitive::<Int64Type>().clone());
            match o {
                Some(o) if !o.is_empty() => (o.value(0), o.value(o.len() - 1)),
                _ => (0, 0),
            }
        };
        if self.stop_on_error {
            match plan.apply(&batch) {
                Ok(b) => out.push(ChangeBatch {
                    tombstones,
                    batch: b,
                }),
                Err(e) => {
                    let (first, last) = offsets();
                    return Err(EngineError::Stopped {
                        partition,
                        offset: first.max(0) as u64,
                        message: format!("offsets {first}..{last}: {e}"),
                    });
                }
            }
        } else {
            let (outs, failures) = plan.apply_each(&batch);
            problems.extend(failures.into_iter().map(|(offset, e)| {
                Problem::new(
                    partition,
                    offset,
                    format!("Error computing expression: {e}"),
                )
            }));
            out.extend(outs.into_iter().map(|b| ChangeBatch {
                tombstones,
                batch: b,
            }));
        }
        // Rows a function returned NULL for, saying why.
        if let Some(take) = self.warnings {
            let warned = take();
            if !warned.is_empty() {
                let (first, last) = offsets();
                problems.extend(warned.into_iter().map(|w| {
                    Problem::new(
                        partition,
                        first.max(0) as u64,
                        format!("Function warning (offsets {first}..{last}): {w}"),
                    )
                }));
            }
        }
        Ok(())
    }
}

impl Operator for Project {
    fn process(
        &mut self,
        input: ChangeBatch,
        partition: u32,
        out: &mut Vec<ChangeBatch>,
        problems: &mut Vec<Problem>,
    ) -> Result<()> {
        self.process_shared(input, partition, out, problems)
    }

    fn shared(&self) -> Option<&dyn SharedStage> {
        Some(self)
    }

    fn explain(&self) -> String {
        let plan = &self.plan;
        let mut lines = Vec::new();
        if let Some(f) = &plan.filter {
            lines.push(format!("Filter: {}", f.expr));
        }
        let projections: Vec<String> = plan
            .projections
            .iter()
            .map(|p| match self.named {
                true => format!("{} := {}", p.name, p.compiled.expr),
                false => p.compiled.expr.to_string(),
            })
            .collect();
        lines.push(format!("Project: {}", projections.join(", ")));
        if plan.projections.iter().any(|p| p.explode) {
            lines.push("Explode: one row per element".into());
        }
        if plan.repartitions {
            lines.push("Repartition: key from PARTITION BY".into());
        }
        lines.join("\n")
    }
}

/// How a source's records become batches of changes: its layout, the decoded schema,
/// its event-time column, its windowed keys, and which tombstones go on.
#[derive(Debug, Clone)]
pub(crate) struct Decoder {
    layout: Layout,
    /// The decoded batches' schema (the first stage's input).
    schema: SchemaRef,
    /// The column that holds event time, with its format when it is a string.
    timestamp: Option<(String, Option<String>)>,
    /// The keys carry windows (a stream over a windowed aggregation's topic).
    window: Option<KeyWindow>,
    /// The source is a table: its tombstones delete, and go through every stage.
    is_table: bool,
    /// A stream's tombstones stop here (ksqlDB drops them at a WHERE, an aggregation
    /// over a stream ignores them, a join joins nothing with them; otherwise they are
    /// forwarded).
    drop_stream_tombstones: bool,
}

impl Decoder {
    /// Decodes `source`'s records into `schema` (its columns, then its window's bounds
    /// when its keys are windowed).
    pub fn new(
        source: &crate::catalog::Source,
        schema: SchemaRef,
        drop_stream_tombstones: bool,
    ) -> Decoder {
        Decoder {
            layout: source.layout.clone(),
            schema,
            timestamp: source
                .timestamp_column
                .clone()
                .map(|c| (c, source.timestamp_format.clone())),
            window: source.window,
            is_table: source.kind == weir_sql::ast::SourceKind::Table,
            drop_stream_tombstones,
        }
    }

    /// Decodes records into batches of one kind of change each (records and tombstones
    /// keep their order).
    pub fn decode(
        &self,
        records: &[StoredRecord],
        partition: u32,
        problems: &mut Vec<Problem>,
    ) -> Result<Vec<ChangeBatch>> {
        let mut changes = Vec::new();
        // A table's record without a key updates no row: skipped (logged), as ksqlDB's
        // tables skip them.
        let keyed;
        let records = if self.is_table
            && !self.layout.key_columns.is_empty()
            && records.iter().any(|r| r.record.key.is_none())
        {
            for r in records.iter().filter(|r| r.record.key.is_none()) {
                problems.push(crate::Problem::new(
                    partition,
                    r.offset,
                    "Skipping a table's record with a null key: it updates no row",
                ));
            }
            keyed = records
                .iter()
                .filter(|r| r.record.key.is_some())
                .cloned()
                .collect::<Vec<_>>();
            &keyed[..]
        } else {
            records
        };
        for run in records.chunk_by(|a, b| a.record.value.is_none() == b.record.value.is_none()) {
            let tombstones = run[0].record.value.is_none();
            if tombstones && !self.is_table && self.drop_stream_tombstones {
                continue;
            }
            let decoded = crate::decode_run(
                &self.layout,
                &self.schema,
                run,
                tombstones,
                self.timestamp.as_ref(),
                self.window,
                partition,
                problems,
            )?;
            changes.push(ChangeBatch {
                tombstones,
                batch: decoded.batch,
            });
        }
        Ok(changes)
    }
}

/// The bytes of records' keys and values.
pub(crate) fn payload_bytes(records: &[StoredRecord]) -> u64 {
    records
        .iter()
        .map(|r| {
            (r.record.key.as_ref().map_or(0, Vec::len)
                + r.record.value.as_ref().map_or(0, Vec::len)) as u64
        })
        .sum()
}

/// One topic's records, decoded to Arrow batches.
#[derive(Debug)]
pub(crate) struct TopicInput {
    pub topic: String,
    /// The source's name, as EXPLAIN shows it.
    pub name: String,
    decoder: Decoder,
    /// Next offset to read, per partition.
    pub offsets: Vec<u64>,
    /// Records to read per step, by partition (adapts to load).
    batch_records: Vec<usize>,
    /// Whether each partition's last step read records: where two or more did, the next
    /// step computes them at once ([`Pipeline::shared`]).
    busy: Vec<bool>,
    /// How large each partition's batch may grow: lowered when a step takes longer than
    /// [`crate::STEP_TARGET`] (a worker shared with other queries and push queries gets
    /// back to them soon), raised again when steps are quick.
    batch_cap: Vec<usize>,
    /// A batch read and decoded ahead, on another thread while the last step's batch went
    /// through the operators ([`Pipeline::step_reading_ahead`]): its partition, the
    /// offset it was read from, and what was read. Taken by the next step of that
    /// partition if the input is still at that offset; dropped otherwise.
    ahead: Option<(u32, u64, (Step, Vec<ChangeBatch>))>,
    /// Steps of several partitions read ahead while the step before them went through the
    /// stages with state ([`Pipeline::split_at_state`]): taken by the next step of the
    /// partitions (each used only if its partition is still where it was read from).
    ahead_steps: Vec<AheadSteps>,
}

/// A partition's steps read ahead: read, decoded and through the stages without state,
/// while the step before went through the stages with state (see `shared_steps` in
/// lib.rs).
#[derive(Debug)]
pub(crate) struct AheadSteps {
    pub partition: u32,
    /// The offset its first step read from: the steps are used only by a step of the
    /// partition that starts there.
    pub from: u64,
    /// The steps in the order read, each with the time it took.
    pub steps: Vec<(Step, std::time::Duration)>,
    /// Whether its last batch was full (records may be waiting behind it): else the step
    /// that uses them also reads what came since.
    pub full: bool,
}

/// The stages with state of a pipeline (from the first with state on), borrowed apart
/// from its input and the stages before them ([`Pipeline::split_at_state`]).
pub(crate) struct Stateful<'a> {
    operators: &'a mut [Box<dyn Operator>],
    stage_rows: &'a mut [(u64, u64)],
}

impl Stateful<'_> {
    /// Several partitions' steps at once (in partition order, as if one after the
    /// other), each stage taking them all together ([`Operator::process_many`]): per
    /// partition, its changes; problems added to its list.
    pub fn run_many(
        &mut self,
        mut inputs: Vec<(u32, Vec<ChangeBatch>)>,
        problems: &mut [&mut Vec<Problem>],
    ) -> Result<Vec<Vec<ChangeBatch>>> {
        for (op, counts) in self.operators.iter_mut().zip(self.stage_rows.iter_mut()) {
            counts.0 += inputs.iter().map(|(_, c)| rows(c)).sum::<u64>();
            let partitions: Vec<u32> = inputs.iter().map(|(p, _)| *p).collect();
            inputs = op
                .process_many(inputs)?
                .into_iter()
                .zip(partitions)
                .zip(problems.iter_mut())
                .map(|(((changes, mut bad), p), problems)| {
                    problems.append(&mut bad);
                    (p, changes)
                })
                .collect();
            counts.1 += inputs.iter().map(|(_, c)| rows(c)).sum::<u64>();
        }
        Ok(inputs.into_iter().map(|(_, changes)| changes).collect())
    }
}

impl TopicInput {
    pub fn new(
        source: &crate::catalog::Source,
        schema: SchemaRef,
        drop_stream_tombstones: bool,
        offsets: Vec<u64>,
    ) -> Self {
        TopicInput {
            topic: source.topic.clone(),
            name: source.name.clone(),
            decoder: Decoder::new(source, schema, drop_stream_tombstones),
            batch_records: vec![crate::BATCH_RECORDS; offsets.len()],
            batch_cap: vec![crate::MAX_BATCH_RECORDS; offsets.len()],
            busy: vec![true; offsets.len()],
            offsets,
            ahead: None,
            ahead_steps: Vec::new(),
        }
    }

    /// Reads the partition's next records (at most `limit`, or as many as the partition's
    /// adaptive batch size says, adapted by [`Pipeline::advance`]) and decodes them: the
    /// step so far (what was read, problems) and the decoded changes.
    fn take(
        &self,
        log: &dyn Log,
        partition: u32,
        limit: Option<usize>,
    ) -> Result<(Step, Vec<ChangeBatch>)> {
        self.take_from(log, partition, self.offsets[partition as usize], limit)
    }

    /// As [`Self::take`], from offset `from` of the partition.
    fn take_from(
        &self,
        log: &dyn Log,
        partition: u32,
        from: u64,
        limit: Option<usize>,
    ) -> Result<(Step, Vec<ChangeBatch>)> {
        let p = partition as usize;
        let max = limit.unwrap_or(self.batch_records[p]);
        let mut taken = with_records(|records| {
            log.read_into(&self.topic, partition, from, max, records)?;
            self.decode(partition, records)
        })?;
        taken.0.requested = limit.is_none().then_some(self.batch_records[p]);
        Ok(taken)
    }

    /// The records from offset `from` to before `until`, as [`Self::take_from`]; and
    /// whether the log held records that far when read (else a later read may find some
    /// before `until` that this one did not).
    fn take_range(
        &self,
        log: &dyn Log,
        partition: u32,
        from: u64,
        until: u64,
    ) -> Result<((Step, Vec<ChangeBatch>), bool)> {
        let max = until.saturating_sub(from) as usize;
        with_records(|records| {
            log.read_into(&self.topic, partition, from, max, records)?;
            let reached = records.last().is_some_and(|r| r.offset + 1 >= until);
            let before = records.partition_point(|r| r.offset < until);
            Ok((self.decode(partition, &records[..before])?, reached))
        })
    }

    /// The step so far of records read from the partition, and their decoded changes.
    fn decode(&self, partition: u32, records: &[StoredRecord]) -> Result<(Step, Vec<ChangeBatch>)> {
        let mut step = Step::default();
        let Some(last) = records.last() else {
            return Ok((step, Vec::new()));
        };
        step.next = Some(last.offset + 1);
        step.consumed = records.len() as u64;
        step.bytes = payload_bytes(records);
        step.headers.extend(user_headers(records));
        let changes = self
            .decoder
            .decode(records, partition, &mut step.problems)?;
        Ok((step, changes))
    }
}

/// The user's headers of the records that have any, by offset.
pub(crate) fn user_headers(
    records: &[StoredRecord],
) -> impl Iterator<Item = (u64, Vec<weir_log::Header>)> + '_ {
    records
        .iter()
        .filter(|r| !r.record.headers.is_empty())
        .map(|r| (r.offset, r.record.user_headers()))
        .filter(|(_, user)| !user.is_empty())
}

thread_local! {
    /// The records this thread read last, kept so that its next read writes over their
    /// buffers instead of allocating (and later freeing) one or two per record.
    static READ: std::cell::RefCell<Vec<StoredRecord>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The most bytes of record buffers a thread keeps between reads ([`with_records`]).
const KEPT_READ_BYTES: usize = 8 << 20;

/// Runs `f` with the thread's kept records to read into; lets them go after if they
/// hold more than [`KEPT_READ_BYTES`].
pub(crate) fn with_records<T>(f: impl FnOnce(&mut Vec<StoredRecord>) -> T) -> T {
    READ.with(|kept| {
        let Ok(mut records) = kept.try_borrow_mut() else {
            return f(&mut Vec::new());
        };
        let out = f(&mut records);
        let held: usize = records
            .iter()
            .map(|r| {
                r.record.key.as_ref().map_or(0, Vec::capacity)
                    + r.record.value.as_ref().map_or(0, Vec::capacity)
            })
            .sum();
        if held > KEPT_READ_BYTES {
            *records = Vec::new();
        }
        out
    })
}

/// How many parts reading ahead reads the next batch in ([`Pipeline::step_reading_ahead`]),
/// and the fewest records a part has (a smaller batch is read whole).
const AHEAD_PARTS: u64 = 8;
const AHEAD_PART_MIN: u64 = 128;

/// Where a pipeline's rows come from.
#[derive(Debug)]
pub(crate) enum Input {
    Topic(Box<TopicInput>),
    /// The joins of several sources, read together in timestamp order (see `join.rs`);
    /// it keeps its own offsets and state.
    Join(Box<crate::join::Joiner>),
    /// Batches decoded elsewhere, all taken by the first step: a pull query's snapshot
    /// of a table (or of a stream's records so far).
    Snapshot(Vec<ChangeBatch>),
}

/// A query's input and operators.
#[derive(Debug)]
pub(crate) struct Pipeline {
    pub input: Input,
    pub operators: Vec<Box<dyn Operator>>,
    /// Per operator, the rows that went in and came out since the pipeline was built
    /// (the console's pipeline view).
    pub stage_rows: Vec<(u64, u64)>,
    /// Servers sharing work: its state divides by source partition
    /// ([`Pipeline::divide_state_by_partition`]).
    pub by_partition: bool,
}

/// What a query's stateless stage does with rows that fail: stop the query
/// (`weir.fail.on.function.error`) or send them to the processing log; and where
/// functions report the rows they returned NULL for.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct OnError {
    pub stop: bool,
    pub warnings: Option<fn() -> Vec<String>>,
}

impl Pipeline {
    /// A query's pipeline: its joins, or `source`'s topic from `offsets`; then `plan`;
    /// then `aggregate`, if any.
    pub fn assemble(
        source: &crate::catalog::Source,
        join: Option<Box<crate::join::Joiner>>,
        plan: SelectPlan,
        aggregate: Option<crate::aggregate::Aggregator>,
        offsets: Vec<u64>,
        on_error: OnError,
    ) -> Pipeline {
        // ksqlDB drops a stream's tombstones at a WHERE, and forwards them otherwise (a
        // table's always: they delete); an aggregation over a stream ignores them.
        let drop_stream_tombstones = plan.filter.is_some() || aggregate.is_some();
        let input = match join {
            Some(j) => Input::Join(j),
            None => Input::Topic(Box::new(TopicInput::new(
                source,
                plan.input_schema.clone(),
                drop_stream_tombstones,
                offsets,
            ))),
        };
        let operators = operators(plan, aggregate, on_error);
        Pipeline {
            input,
            stage_rows: vec![(0, 0); operators.len()],
            operators,
            by_partition: false,
        }
    }

    /// The partitions stepped one at a time (a join's sources are stepped together).
    pub fn partitions(&self) -> u32 {
        match &self.input {
            Input::Topic(t) => t.offsets.len() as u32,
            Input::Join(_) | Input::Snapshot(_) => 1,
        }
    }

    /// Reads the next records of `partition` (at most `limit`; `None`: the adaptive batch
    /// size) and runs them through the operators. For a durable query (`intent_for`, its
    /// id) a join's step is recorded before it is processed ([`crate::write_intent`]).
    /// A topic input stays where it was until [`Pipeline::advance`].
    pub fn step(
        &mut self,
        log: &dyn Log,
        partition: u32,
        limit: Option<usize>,
        intent_for: Option<crate::Intents>,
    ) -> Result<Step> {
        let mut step = Step::default();
        let changes = match &mut self.input {
            Input::Join(joiner) => {
                let taken = joiner.read(log)?;
                if let Some(at) = intent_for
                    && !taken.is_empty()
                    && !taken.replayed
                {
                    crate::write_intent(log, at, &taken.ends)?;
                }
                let j = joiner.process(taken)?;
                step.consumed = j.consumed;
                step.bytes = j.bytes;
                step.problems = j.problems;
                step.headers = j.headers;
                j.changes
            }
            Input::Snapshot(batches) => {
                let batches = std::mem::take(batches);
                step.consumed = batches.iter().map(|b| b.batch.num_rows() as u64).sum();
                batches
            }
            Input::Topic(t) => {
                let (taken, changes) = t.take(log, partition, limit)?;
                step = taken;
                if step.consumed == 0 {
                    return Ok(step);
                }
                changes
            }
        };
        step.changes = self.run(changes, partition, &mut step.problems)?;
        Ok(step)
    }

    /// As [`Pipeline::step`] (a topic input; `None` for another), with `finish` (writing
    /// the output) after the operators, while another thread reads and decodes the
    /// partition's next batch, for the next step: on a query that has a partition busy
    /// alone, a step costs the longer of the two, not both. The batch read ahead is kept
    /// with the input ([`TopicInput::ahead`]) and used only by a step of the same partition
    /// from the offset it was read from (after this step is committed with
    /// [`Pipeline::advance`]); a step that fails leaves the input where it was, and the
    /// batch read ahead is then not used.
    pub fn step_reading_ahead(
        &mut self,
        log: &dyn Log,
        partition: u32,
        finish: impl Fn(&mut Step) -> Result<()> + Sync,
    ) -> Option<Result<Step>> {
        let Pipeline {
            input: Input::Topic(t),
            operators,
            stage_rows,
            ..
        } = self
        else {
            return None;
        };
        let from = t.offsets[partition as usize];
        let taken = match t.ahead.take() {
            Some((p, at, taken)) if p == partition && at == from => Ok(taken),
            _ => t.take(log, partition, None),
        };
        let (step, changes) = match taken {
            Ok(taken) => taken,
            Err(e) => return Some(Err(e)),
        };
        let Some(next) = step.next.filter(|_| step.consumed > 0) else {
            return Some(Ok(step));
        };
        enum Job<'a> {
            Run(
                Box<(Step, Vec<ChangeBatch>)>,
                &'a mut [Box<dyn Operator>],
                &'a mut Vec<(u64, u64)>,
            ),
            Read(u64, u64),
        }
        enum Done {
            Ran(Result<Step>),
            Read(Result<((Step, Vec<ChangeBatch>), bool)>),
        }
        let input: &TopicInput = t;
        // The next batch in parts, each a job: the helper reads and decodes them in turn,
        // and the thread that ran the operators takes those left when it is done (reading
        // and decoding is the longer half where decoding is cheap, as AVRO's).
        let size = t.batch_records[partition as usize] as u64;
        let parts = if size >= AHEAD_PARTS * AHEAD_PART_MIN {
            AHEAD_PARTS
        } else {
            1
        };
        let mut jobs = vec![Job::Run(Box::new((step, changes)), operators, stage_rows)];
        for i in 0..parts {
            let bound = |i: u64| next + size * i / parts;
            jobs.push(Job::Read(bound(i), bound(i + 1)));
        }
        let mut done = crate::each_at_once(jobs, 2, |_, job| match job {
            Job::Run(taken, operators, stage_rows) => Done::Ran({
                let (mut step, changes) = *taken;
                run_stages(
                    operators,
                    stage_rows,
                    0,
                    changes,
                    partition,
                    &mut step.problems,
                )
                .and_then(|changes| {
                    step.changes = changes;
                    finish(&mut step)?;
                    Ok(step)
                })
            }),
            Job::Read(from, until) => Done::Read(input.take_range(log, partition, from, until)),
        })
        .into_iter();
        let Some(Done::Ran(ran)) = done.next() else {
            unreachable!("the jobs' results come in their order")
        };
        // The parts joined, up to the first that failed or found the log ending before
        // its end (the parts after it may have missed records appended meanwhile).
        let mut read: Option<(Step, Vec<ChangeBatch>)> = None;
        for part in done {
            let Done::Read(Ok(((step, changes), reached))) = part else {
                break;
            };
            let whole = read.get_or_insert_with(Default::default);
            whole.0.consumed += step.consumed;
            whole.0.bytes += step.bytes;
            whole.0.next = step.next.or(whole.0.next);
            whole.0.problems.extend(step.problems);
            whole.0.headers.extend(step.headers);
            whole.1.extend(changes);
            if !reached {
                break;
            }
        }
        if let Some(mut read) = read
            && read.0.consumed > 0
        {
            read.0.requested = Some(size as usize);
            t.ahead = Some((partition, next, read));
        }
        Some(ran)
    }

    /// What stepping its partitions at once needs ([`shared_step`]): a topic input of
    /// several partitions, two or more of which read records at their last step, and
    /// the stages without state that come first (all of them, or those before the first
    /// with state: [`Pipeline::run_from`] runs the rest); `None` otherwise (idle, it
    /// steps them one after the other, as cheaply as ever).
    pub fn shared(&self) -> Option<(&TopicInput, Vec<&dyn SharedStage>)> {
        let Input::Topic(t) = &self.input else {
            return None;
        };
        if t.busy.iter().filter(|b| **b).count() < 2 {
            return None;
        }
        let stages: Vec<&dyn SharedStage> =
            self.operators.iter().map_while(|o| o.shared()).collect();
        (!stages.is_empty()).then_some((t, stages))
    }

    /// Lets the pipeline use `threads` threads: a join reads, decodes and looks up on
    /// them with its state whole (see `Joiner::threads`); over a topic, whose rows come
    /// in offset order, a stateful stage's state is dealt out into half as many shards
    /// ([`crate::shards_for`], see `aggregate/shards.rs`). Whether state moved: the next
    /// checkpoint should then be a full one.
    pub fn set_threads(&mut self, threads: usize) -> bool {
        match &mut self.input {
            Input::Topic(_) => {}
            Input::Join(joiner) => {
                joiner.threads = threads.max(1);
                return false;
            }
            Input::Snapshot(_) => return false,
        }
        let n = crate::shards_for(threads);
        let mut moved = false;
        for op in &mut self.operators {
            moved |= op.set_shards(n);
        }
        moved
    }

    /// Adds the rows a step counted in its stages from `first` on ([`Step::stage_rows`]).
    pub fn count_stage_rows(&mut self, step: &Step) {
        self.stage_rows.resize(self.operators.len(), (0, 0));
        for (total, (i, o)) in self.stage_rows.iter_mut().zip(&step.stage_rows) {
            total.0 += i;
            total.1 += o;
        }
    }

    /// Each operator as EXPLAIN shows it.
    pub fn stage_names(&self) -> Vec<String> {
        self.operators.iter().map(|o| o.explain()).collect()
    }

    /// Runs batches of changes through every operator, stage by stage.
    pub fn run(
        &mut self,
        changes: Vec<ChangeBatch>,
        partition: u32,
        problems: &mut Vec<Problem>,
    ) -> Result<Vec<ChangeBatch>> {
        self.run_from(0, changes, partition, problems)
    }

    /// As [`Pipeline::run`], from stage `first` on (those before it ran elsewhere).
    pub fn run_from(
        &mut self,
        first: usize,
        changes: Vec<ChangeBatch>,
        partition: u32,
        problems: &mut Vec<Problem>,
    ) -> Result<Vec<ChangeBatch>> {
        run_stages(
            &mut self.operators,
            &mut self.stage_rows,
            first,
            changes,
            partition,
            problems,
        )
    }

    /// A topic input's pipeline split at `first`, its first stage with state: the input
    /// and the stages without state before it (to read and compute the next steps of its
    /// partitions, [`crate::shared_rounds`]) beside the stages with state (to run the
    /// last steps meanwhile). `None` for another input, or where a stage before `first`
    /// has state.
    pub fn split_at_state(
        &mut self,
        first: usize,
    ) -> Option<(&TopicInput, Vec<&dyn SharedStage>, Stateful<'_>)> {
        let Pipeline {
            input: Input::Topic(t),
            operators,
            stage_rows,
            ..
        } = self
        else {
            return None;
        };
        stage_rows.resize(operators.len(), (0, 0));
        let first = first.min(operators.len());
        let (before, after) = operators.split_at_mut(first);
        let stages: Vec<&dyn SharedStage> = before.iter().map_while(|o| o.shared()).collect();
        if stages.len() != first {
            return None;
        }
        let stateful = Stateful {
            operators: after,
            stage_rows: &mut stage_rows[first..],
        };
        Some((t, stages, stateful))
    }

    /// Whether no stage has state.
    pub fn stateless(&self) -> bool {
        self.operators.iter().all(|o| o.shared().is_some())
    }

    /// The steps read ahead for the next step ([`TopicInput::ahead_steps`]), taken (none
    /// is left behind).
    pub fn take_ahead(&mut self) -> Vec<AheadSteps> {
        match &mut self.input {
            Input::Topic(t) => std::mem::take(&mut t.ahead_steps),
            _ => Vec::new(),
        }
    }

    /// Keeps steps read ahead for the next step to take.
    pub fn keep_ahead(&mut self, ahead: Vec<AheadSteps>) {
        if let Input::Topic(t) = &mut self.input {
            t.ahead_steps = ahead;
        }
    }

    /// Moves a topic input past what `step` read, which took `took` from read to written
    /// (a join sizes its next batch after `took`: `Joiner::paced`).
    /// An adaptive read that filled its batch doubles the next (up to the cap), one that
    /// got less than a quarter halves it.
    pub fn advance(&mut self, partition: u32, step: &Step, took: std::time::Duration) {
        let t = match &mut self.input {
            Input::Topic(t) => t,
            Input::Join(joiner) => return joiner.paced(took),
            Input::Snapshot(_) => return,
        };
        let p = partition as usize;
        t.busy[p] = step.consumed > 0;
        if let Some(max) = step.requested {
            let got = step.consumed as usize;
            t.batch_records[p] = if got == max {
                (max * 2).min(t.batch_cap[p])
            } else if got < max / 4 {
                (max / 2).max(crate::MIN_BATCH_RECORDS)
            } else {
                max
            };
        }
        if let Some(next) = step.next {
            t.offsets[p] = next;
            if took > crate::STEP_TARGET {
                t.batch_records[p] = (t.batch_records[p] / 2).max(crate::MIN_BATCH_RECORDS);
                t.batch_cap[p] = t.batch_records[p];
            } else if took < crate::STEP_TARGET / 2 {
                t.batch_cap[p] = (t.batch_cap[p] * 2).min(crate::MAX_BATCH_RECORDS);
            }
        }
    }

    pub fn join(&self) -> Option<&crate::join::Joiner> {
        match &self.input {
            Input::Join(j) => Some(j),
            _ => None,
        }
    }

    pub fn join_mut(&mut self) -> Option<&mut crate::join::Joiner> {
        match &mut self.input {
            Input::Join(j) => Some(j),
            _ => None,
        }
    }

    /// The offsets of a topic input (empty for a join, which keeps its own).
    pub fn offsets(&self) -> &[u64] {
        match &self.input {
            Input::Topic(t) => &t.offsets,
            Input::Join(_) | Input::Snapshot(_) => &[],
        }
    }

    /// Per source topic read, the next offset of each of its partitions (a topic input's,
    /// or each of a join's sources').
    pub fn source_offsets(&self) -> Vec<(String, Vec<u64>)> {
        match &self.input {
            Input::Topic(t) => vec![(t.topic.clone(), t.offsets.clone())],
            Input::Join(j) => j
                .inputs
                .iter()
                .filter(|i| !i.offsets.is_empty())
                .map(|i| (i.source.topic.clone(), i.offsets.clone()))
                .collect(),
            Input::Snapshot(_) => Vec::new(),
        }
    }

    pub fn set_offsets(&mut self, offsets: Vec<u64>) {
        if let Input::Topic(t) = &mut self.input
            && offsets.len() == t.offsets.len()
        {
            t.offsets = offsets;
        }
    }

    /// Whether any stage (or the joins) keeps state that checkpoints carry.
    pub fn has_state(&self) -> bool {
        self.join().is_some() || self.operators.iter().any(|o| o.state_name().is_some())
    }

    pub fn set_tracking(&mut self, on: bool) {
        if let Some(j) = self.join_mut() {
            j.set_tracking(on);
        }
        for op in &mut self.operators {
            op.set_tracking(on);
        }
    }

    /// What changed in the state since the last checkpoint.
    pub fn take_changes(&mut self, delta: &mut Delta) {
        for op in &mut self.operators {
            op.take_changes(delta);
        }
        if let Some(j) = self.join_mut() {
            j.take_changes(delta);
        }
    }

    /// The whole state: `{"aggregate": ..., "join": ...}`, each stage's under its name.
    pub fn snapshot(&mut self) -> Value {
        let mut full = serde_json::json!({"aggregate": null, "join": null});
        for op in &mut self.operators {
            if let Some(name) = op.state_name() {
                full[name] = op.snapshot();
                op.clear_changes();
            }
        }
        if let Some(j) = self.join_mut() {
            full["join"] = j.snapshot();
            j.clear_changes();
        }
        full
    }

    /// Servers sharing work: has its state divide by source partition, where it can (a
    /// GROUP BY of the source's key columns; not a join); whether it does. A query whose
    /// state divides is shared partition by partition, as one without state is.
    pub fn divide_state_by_partition(&mut self) -> bool {
        let joins = self.join().is_some();
        let stateful: Vec<&mut Box<dyn Operator>> = self
            .operators
            .iter_mut()
            .filter(|o| o.state_name().is_some())
            .collect();
        self.by_partition =
            !joins && !stateful.is_empty() && stateful.into_iter().all(|o| o.divide_by_partition());
        self.by_partition
    }

    /// Takes back, of each `(state, partition)` (whole states, as [`Pipeline::snapshot`]
    /// gives them), that partition's part, as one state; the number of entries that
    /// could not be read.
    pub fn restore_units(&mut self, parts: &[(&Value, u32)]) -> usize {
        let mut unread = 0;
        for op in &mut self.operators {
            if let Some(name) = op.state_name() {
                let mine: Vec<(&Value, u32)> = parts.iter().map(|(s, u)| (&s[name], *u)).collect();
                unread += op.restore_units(&mine);
            }
        }
        unread
    }

    /// Takes back a snapshot; the number of entries that could not be read.
    pub fn restore(&mut self, state: &Value) -> usize {
        let mut unread = 0;
        for op in &mut self.operators {
            if let Some(name) = op.state_name() {
                unread += op.restore(&state[name]);
            }
        }
        if let Some(j) = self.join_mut() {
            unread += j.restore(&state["join"]);
        }
        unread
    }

    pub fn late_records(&self) -> u64 {
        self.operators.iter().map(|o| o.late_records()).sum()
    }

    pub fn window_type(&self) -> Option<&'static str> {
        self.operators.iter().find_map(|o| o.window_type())
    }

    /// The names of the sources read.
    pub fn sources(&self) -> Vec<String> {
        match &self.input {
            Input::Topic(t) => vec![t.name.clone()],
            Input::Join(j) => j.inputs.iter().map(|i| i.source.name.clone()).collect(),
            Input::Snapshot(_) => Vec::new(),
        }
    }

    /// EXPLAIN's text: the query's logical plan, then this pipeline — the input, each
    /// stage, then the sink (`sink_topic`, or the client).
    pub fn explain(
        &self,
        logical: &crate::logical::LogicalPlan,
        sink_topic: Option<&str>,
    ) -> String {
        let mut lines = vec![logical.tree(), String::new(), "Pipeline:".to_string()];
        match &self.input {
            Input::Topic(t) => lines.push(format!(
                "Source: topic '{}' ({}), decoded to Arrow batches",
                t.topic, t.name
            )),
            Input::Join(j) => {
                for i in &j.inputs {
                    lines.push(format!(
                        "Source: topic '{}' ({}), decoded to Arrow batches",
                        i.source.topic, i.source.name
                    ));
                }
                lines.push(j.explain());
            }
            Input::Snapshot(_) => lines.push("Source: a snapshot of the source's rows".into()),
        }
        for op in &self.operators {
            let text = op.explain();
            if !text.is_empty() {
                lines.push(text);
            }
        }
        lines.push(match sink_topic {
            Some(t) => format!("Sink: topic '{t}'"),
            None => "Sink: the client".to_string(),
        });
        lines.join("\n")
    }
}

/// A pipeline over one topic: `plan`, then `aggregate` when there is one.
pub(crate) fn operators(
    plan: SelectPlan,
    aggregate: Option<crate::aggregate::Aggregator>,
    on_error: OnError,
) -> Vec<Box<dyn Operator>> {
    let mut ops: Vec<Box<dyn Operator>> = vec![Box::new(Project {
        plan,
        stop_on_error: on_error.stop,
        warnings: on_error.warnings,
        named: aggregate.is_none(),
    })];
    if let Some(a) = aggregate {
        ops.push(Box::new(crate::aggregate::Shards::new(a)));
    }
    ops
}

/// As [`Pipeline::step`] with the adaptive batch size, over what [`Pipeline::shared`]
/// gives: several partitions' steps run at once, each on its own thread. It reads from
/// `from`, or where the partition's input stands.
pub(crate) fn shared_step(
    input: &TopicInput,
    stages: &[&dyn SharedStage],
    log: &dyn Log,
    partition: u32,
    from: Option<u64>,
) -> Result<Step> {
    let from = from.unwrap_or(input.offsets[partition as usize]);
    let (mut step, mut changes) = input.take_from(log, partition, from, None)?;
    for stage in stages {
        let went_in = rows(&changes);
        let mut out = Vec::with_capacity(changes.len());
        for c in changes {
            stage.process_shared(c, partition, &mut out, &mut step.problems)?;
        }
        step.stage_rows.push((went_in, rows(&out)));
        changes = out;
    }
    step.changes = changes;
    Ok(step)
}

/// The `operators` from `first` on over `changes`, each counting its rows in and out in
/// `stage_rows` ([`Pipeline::run_from`]).
fn run_stages(
    operators: &mut [Box<dyn Operator>],
    stage_rows: &mut Vec<(u64, u64)>,
    first: usize,
    mut changes: Vec<ChangeBatch>,
    partition: u32,
    problems: &mut Vec<Problem>,
) -> Result<Vec<ChangeBatch>> {
    stage_rows.resize(operators.len(), (0, 0));
    for (op, counts) in operators.iter_mut().zip(stage_rows.iter_mut()).skip(first) {
        counts.0 += rows(&changes);
        let mut out = Vec::with_capacity(changes.len());
        for c in changes {
            op.process(c, partition, &mut out, problems)?;
        }
        counts.1 += rows(&out);
        changes = out;
    }
    Ok(changes)
}
