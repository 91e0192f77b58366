//! A GROUP BY's state split by grouping key into shards that fold a batch at once, one
//! thread each: the query's stateful stage uses as many cores as the engine's
//! parallelism (the runtime's workers), whatever the number of source partitions.
//!
//! A batch's rows go to the shard their key hashes to, each shard folds its rows in
//! order, and the shards' changes are merged back by source offset. A row's changes all
//! come from one shard (one key), and within a batch of one partition offsets only grow,
//! so the merge gives the very changes, in the very order, one aggregator would have
//! given. The window clock is the batch's, not the shard's: each shard is handed the
//! stream time after each of its rows as counted over every row (and after the batch),
//! so lateness, grace and retention are decided exactly as unsplit.
//!
//! Checkpoints hold one state (the shards' groups together, one clock): they are the
//! same whatever the number of shards, and a restore deals the groups out by key again.
//! Aggregations over a table, and EMIT FINAL, stay whole ([`Aggregator::shardable`]).
//!
//! On servers sharing work, a GROUP BY of a stream's key columns divides by source
//! partition ([`Shards::divide_by_partition`]): each shard's batches are folded with their
//! partition, which every grouping key notes as it is interned (`units` in checkpoints),
//! so that a server taking a partition takes that partition's groups from the checkpoint
//! of the server that held it ([`Shards::restore_units`]).

use std::collections::HashMap;
use std::hash::BuildHasher;

use arrow::array::{Array, AsArray, RecordBatch, UInt32Array};
use arrow::datatypes::Int64Type;
use serde_json::{Value, json};

use super::{Aggregator, Changes, Clock, b64};
use crate::delta::Delta;
use crate::error::{EngineError, Result};
use crate::pipeline::Operator;
use crate::{ChangeBatch, Problem};

/// Batches of at least this many rows fold on several threads; smaller ones fold shard
/// after shard on the caller's (a thread costs more than their fold).
const PARALLEL_ROWS: usize = 1024;

/// A GROUP BY as a pipeline stage: its state in one or more shards by key.
#[derive(Debug)]
pub(crate) struct Shards {
    shards: Vec<Aggregator>,
    /// The aggregator as planned, with no state: what new shards are made from.
    fresh: Aggregator,
    tracking: bool,
}

/// The shard of `n` that a grouping key (its row-format bytes) belongs to.
fn shard_of(key: &[u8], n: usize) -> usize {
    const HASH: foldhash::fast::FixedState = foldhash::fast::FixedState::with_seed(0x5745_4952);
    (HASH.hash_one(key) % n as u64) as usize
}

/// Rows failed, by source offset with why.
type Failed = Vec<(u64, String)>;

/// A shard's part of one batch: its rows (none: it only keeps time), and per row the
/// window clock after it, then after the whole batch.
struct Piece {
    part: Option<RecordBatch>,
    tombstones: bool,
    /// The source partition of the batch.
    partition: u32,
    times: Vec<i64>,
    end: i64,
}

impl Shards {
    pub fn new(aggregator: Aggregator) -> Shards {
        Shards {
            fresh: aggregator.clone(),
            shards: vec![aggregator],
            tracking: false,
        }
    }

    /// Notes from now on the partition of each grouping key, so that the state divides
    /// by source partition; whether it can (grouped by the source's key, so each key's
    /// rows come from one partition).
    pub fn divide_by_partition(&mut self) -> bool {
        if self.fresh.by_source_key {
            self.fresh.units = true;
            for s in &mut self.shards {
                s.units = true;
            }
        }
        self.fresh.units
    }

    /// Takes back, from each of `parts` (a state, and the partition wanted of it: that
    /// partition's groups, as the state's `units` says), those groups as one state: the
    /// newest window clock of them, the largest late count.
    pub fn restore_units(&mut self, parts: &[(&Value, u32)]) -> usize {
        let mut unread = 0;
        let (mut groups, mut units) = (serde_json::Map::new(), serde_json::Map::new());
        let (mut stream_time, mut late) = (None::<i64>, None::<u64>);
        for (state, unit) in parts {
            let of: HashMap<&str, u64> = state["units"]
                .as_object()
                .into_iter()
                .flatten()
                .filter_map(|(k, p)| Some((k.as_str(), p.as_u64()?)))
                .collect();
            for (name, entry) in state["groups"].as_object().into_iter().flatten() {
                match self.fresh.entry_key(name) {
                    Some(key) => {
                        if of.get(b64(&key).as_str()) == Some(&u64::from(*unit)) {
                            groups.insert(name.clone(), entry.clone());
                        }
                    }
                    None => unread += 1,
                }
            }
            for (k, p) in &of {
                if *p == u64::from(*unit) {
                    units.insert(k.to_string(), json!(p));
                }
            }
            if let Some(t) = state["stream_time"].as_i64() {
                stream_time = Some(stream_time.map_or(t, |m| m.max(t)));
                let l = state["late"].as_u64().unwrap_or(0);
                late = Some(late.map_or(l, |m| m.max(l)));
            }
        }
        let mut merged = json!({ "groups": groups, "units": units });
        if let Some(t) = stream_time {
            merged["stream_time"] = json!(t);
            merged["late"] = json!(late.unwrap_or(0));
        }
        unread + self.restore(&merged)
    }

    /// Splits the state into `n` shards (one where the aggregation cannot be split);
    /// whether the state was dealt out again (its change tracking then starts afresh:
    /// the next checkpoint should be a full one).
    pub fn set_count(&mut self, n: usize) -> bool {
        let n = if self.fresh.shardable() { n.max(1) } else { 1 };
        if n == self.shards.len() {
            return false;
        }
        let state = self.snapshot();
        self.shards = (0..n).map(|_| self.fresh.clone()).collect();
        for s in &mut self.shards {
            s.set_tracking(self.tracking);
        }
        self.restore(&state);
        true
    }

    /// Batches of the stateless step's output (with whether each holds tombstones)
    /// through the shards, in order, as if folded one after the other: per batch, its
    /// changes in order and the rows that failed.
    fn fold(&mut self, batches: &[(&RecordBatch, bool, u32)]) -> Result<Vec<(Changes, Failed)>> {
        let n = self.shards.len();
        if n == 1 {
            let one = &mut self.shards[0];
            return Ok(batches
                .iter()
                .map(|(b, t, p)| {
                    one.partition = Some(*p);
                    one.fold_changes(b, *t)
                })
                .collect());
        }
        let windowed = self.fresh.stream_time().is_some();
        // The window clock over all the batches: the rows a window counts (not a
        // stream's tombstones, not a row with a null key) move it on.
        let mut clock = self
            .shards
            .iter()
            .filter_map(Aggregator::stream_time)
            .max()
            .unwrap_or(i64::MIN);
        let mut pieces: Vec<Vec<Piece>> =
            (0..n).map(|_| Vec::with_capacity(batches.len())).collect();
        let mut rows_in_all = 0;
        for &(batch, tombstones, partition) in batches {
            let rows = batch.num_rows();
            rows_in_all += rows;
            // Each row's shard, by its key. A batch whose keys cannot be encoded goes
            // whole to one shard, which reports its rows as one aggregator would.
            let owners: Vec<usize> = match self.shards[0].key_rows(batch) {
                Ok(keys) => (0..rows)
                    .map(|r| shard_of(keys.row(r).as_ref(), n))
                    .collect(),
                Err(_) => vec![0; rows],
            };
            let mut picks: Vec<Vec<u32>> = vec![Vec::new(); n];
            for (row, &s) in owners.iter().enumerate() {
                picks[s].push(row as u32);
            }
            let mut times: Vec<Vec<i64>> = vec![Vec::new(); n];
            if windowed {
                let nulls: Vec<_> = (0..self.fresh.keys.len())
                    .filter_map(|i| batch.column(2 + i).logical_nulls())
                    .collect();
                let rowtimes = batch.column(0).as_primitive::<Int64Type>().values();
                for (row, &time) in rowtimes.iter().enumerate() {
                    if !tombstones && !nulls.iter().any(|b| b.is_null(row)) {
                        clock = clock.max(time);
                    }
                    times[owners[row]].push(clock);
                }
            }
            for ((shard, pick), times) in pieces.iter_mut().zip(picks).zip(times) {
                let part = match pick.len() {
                    0 => None,
                    len if len == rows => Some(batch.clone()),
                    _ => Some(
                        arrow::compute::take_record_batch(batch, &UInt32Array::from(pick))
                            .map_err(|e| EngineError::Execution(e.to_string()))?,
                    ),
                };
                shard.push(Piece {
                    part,
                    tombstones,
                    partition,
                    times,
                    end: clock,
                });
            }
        }
        let fold_pieces =
            |(shard, pieces): (&mut Aggregator, Vec<Piece>)| -> Vec<Option<(Changes, Failed)>> {
                pieces
                    .into_iter()
                    .map(|piece| match piece.part {
                        Some(part) => {
                            let clock = windowed.then_some(Clock {
                                times: &piece.times,
                                end: piece.end,
                            });
                            shard.partition = Some(piece.partition);
                            Some(shard.fold_changes_at(&part, piece.tombstones, clock))
                        }
                        None => {
                            shard.advance_clock(piece.end);
                            None
                        }
                    })
                    .collect()
            };
        let jobs = self.shards.iter_mut().zip(pieces);
        let folded: Vec<Vec<Option<(Changes, Failed)>>> = if rows_in_all >= PARALLEL_ROWS {
            // Each shard's job, taken by the thread that folds it.
            let jobs: Vec<_> = jobs.collect();
            let threads = jobs.len();
            crate::each_at_once(jobs, threads, |_, job| fold_pieces(job))
        } else {
            jobs.map(fold_pieces).collect()
        };
        // Per batch, the shards' changes merged.
        let mut per_shard: Vec<_> = folded.into_iter().map(Vec::into_iter).collect();
        let mut out = Vec::with_capacity(batches.len());
        for _ in batches {
            let mut lists = Vec::with_capacity(n);
            let mut failed = Vec::new();
            for shard in &mut per_shard {
                if let Some(Some((changes, bad))) = shard.next() {
                    lists.push(changes);
                    failed.extend(bad);
                }
            }
            failed.sort_by_key(|(offset, _)| *offset);
            out.push((merge(lists)?, failed));
        }
        Ok(out)
    }

    /// Every shard's state as one: the groups together, one clock (and, divided by
    /// partition, each key's partition).
    fn snapshot(&self) -> Value {
        if let [one] = self.shards.as_slice() {
            return one.snapshot();
        }
        let mut groups = serde_json::Map::new();
        let mut units = serde_json::Map::new();
        let (mut stream_time, mut late) = (None::<i64>, 0u64);
        for s in &self.shards {
            let mut state = s.snapshot();
            if let Some(g) = state["groups"].as_object_mut() {
                groups.append(g);
            }
            if let Some(u) = state["units"].as_object_mut() {
                units.append(u);
            }
            if let Some(t) = state["stream_time"].as_i64() {
                stream_time = Some(stream_time.map_or(t, |m| m.max(t)));
            }
            late += state["late"].as_u64().unwrap_or(0);
        }
        let mut out = json!({ "groups": groups });
        if self.fresh.units {
            out["units"] = Value::Object(units);
        }
        if let Some(t) = stream_time {
            out["stream_time"] = json!(t);
            out["late"] = json!(late);
        }
        out
    }

    /// Takes back a state, each group into the shard its key belongs to; how many entries
    /// could not be read.
    fn restore(&mut self, state: &Value) -> usize {
        let n = self.shards.len();
        if n == 1 {
            return self.shards[0].restore(state);
        }
        let mut dealt: Vec<serde_json::Map<String, Value>> = vec![Default::default(); n];
        let mut unread = 0;
        for (name, entry) in state["groups"].as_object().into_iter().flatten() {
            match self.fresh.entry_key(name) {
                Some(key) => {
                    dealt[shard_of(&key, n)].insert(name.clone(), entry.clone());
                }
                None => unread += 1,
            }
        }
        for (s, (shard, groups)) in self.shards.iter_mut().zip(dealt).enumerate() {
            let mut part = json!({ "groups": groups });
            // Each key's partition: every shard looks up those of its keys.
            if !state["units"].is_null() {
                part["units"] = state["units"].clone();
            }
            if !state["stream_time"].is_null() {
                part["stream_time"] = state["stream_time"].clone();
                // The count of late records, once.
                part["late"] = if s == 0 {
                    state["late"].clone()
                } else {
                    json!(0)
                };
            }
            unread += shard.restore(&part);
        }
        unread
    }
}

/// The shards' changes as one list, by source offset: the order one aggregator gives.
/// Runs of rows and of tombstones as the lists have them, merged.
fn merge(mut lists: Vec<Changes>) -> Result<Changes> {
    lists.retain(|l| !l.is_empty());
    if lists.len() <= 1 {
        return Ok(lists.pop().unwrap_or_default());
    }
    let batches: Vec<&ChangeBatch> = lists.iter().flatten().collect();
    let offsets: Vec<&[i64]> = batches
        .iter()
        .map(|c| {
            c.batch
                .column(1)
                .as_primitive::<Int64Type>()
                .values()
                .as_ref()
        })
        .collect();
    // Per list: its batches' range among `batches`, and where it is (batch, row).
    let mut ranges = Vec::with_capacity(lists.len());
    let mut at = 0;
    for l in &lists {
        ranges.push(at..at + l.len());
        at += l.len();
    }
    let mut cursors: Vec<(usize, usize)> = ranges.iter().map(|r| (r.start, 0)).collect();
    let records: Vec<&RecordBatch> = batches.iter().map(|c| &c.batch).collect();
    let mut out = Vec::new();
    let mut run: Vec<(usize, usize)> = Vec::new();
    let mut run_tombstones = false;
    loop {
        // The list whose next change has the lowest offset (the first such list on a tie).
        let mut next: Option<(usize, i64)> = None;
        for (l, &(b, r)) in cursors.iter().enumerate() {
            if b < ranges[l].end && next.is_none_or(|(_, o)| offsets[b][r] < o) {
                next = Some((l, offsets[b][r]));
            }
        }
        let Some((l, _)) = next else { break };
        let (b, r) = cursors[l];
        if !run.is_empty() && batches[b].tombstones != run_tombstones {
            out.push(interleave(&records, &run, run_tombstones)?);
            run.clear();
        }
        run_tombstones = batches[b].tombstones;
        run.push((b, r));
        cursors[l] = if r + 1 < records[b].num_rows() {
            (b, r + 1)
        } else {
            (b + 1, 0)
        };
    }
    if !run.is_empty() {
        out.push(interleave(&records, &run, run_tombstones)?);
    }
    Ok(out)
}

fn interleave(
    records: &[&RecordBatch],
    run: &[(usize, usize)],
    tombstones: bool,
) -> Result<ChangeBatch> {
    let batch = arrow::compute::interleave_record_batch(records, run)
        .map_err(|e| EngineError::Execution(e.to_string()))?;
    Ok(ChangeBatch { tombstones, batch })
}

impl Operator for Shards {
    fn process(
        &mut self,
        input: ChangeBatch,
        partition: u32,
        out: &mut Vec<ChangeBatch>,
        problems: &mut Vec<Problem>,
    ) -> Result<()> {
        for (mut changes, mut bad) in self.process_many(vec![(partition, vec![input])])? {
            out.append(&mut changes);
            problems.append(&mut bad);
        }
        Ok(())
    }

    /// Every batch of several partitions' steps, folded by the shards at once (one
    /// thread each for them all).
    fn process_many(
        &mut self,
        inputs: Vec<(u32, Vec<ChangeBatch>)>,
    ) -> Result<Vec<(Vec<ChangeBatch>, Vec<Problem>)>> {
        let batches: Vec<(&RecordBatch, bool, u32)> = inputs
            .iter()
            .flat_map(|(p, batches)| batches.iter().map(|c| (&c.batch, c.tombstones, *p)))
            .collect();
        let mut folded = self.fold(&batches)?.into_iter();
        let mut out = Vec::with_capacity(inputs.len());
        for (partition, batches) in &inputs {
            let (mut changes, mut problems) = (Vec::new(), Vec::new());
            for _ in batches {
                let (mut c, bad) = folded.next().expect("one result per batch");
                changes.append(&mut c);
                problems.extend(
                    bad.into_iter()
                        .map(|(offset, why)| Problem::new(*partition, offset, why)),
                );
            }
            out.push((changes, problems));
        }
        Ok(out)
    }

    fn set_shards(&mut self, n: usize) -> bool {
        self.set_count(n)
    }

    fn explain(&self) -> String {
        let text = self.fresh.explain();
        match self.shards.len() {
            1 => text,
            n => format!("{text}\nShards: {n} by grouping key, folded at once"),
        }
    }
    fn state_name(&self) -> Option<&'static str> {
        Some("aggregate")
    }
    fn set_tracking(&mut self, on: bool) {
        self.tracking = on;
        for s in &mut self.shards {
            s.set_tracking(on);
        }
    }
    fn take_changes(&mut self, delta: &mut Delta) {
        if let [one] = self.shards.as_mut_slice() {
            return one.take_changes(delta);
        }
        for s in &mut self.shards {
            s.take_group_changes(delta);
        }
        if let Some(time) = self.shards.iter().filter_map(Aggregator::stream_time).max() {
            super::put_clock(delta, time, self.late_records());
        }
    }
    fn clear_changes(&mut self) {
        for s in &mut self.shards {
            s.clear_changes();
        }
    }
    fn snapshot(&self) -> Value {
        Shards::snapshot(self)
    }
    fn restore(&mut self, state: &Value) -> usize {
        Shards::restore(self, state)
    }
    fn divide_by_partition(&mut self) -> bool {
        Shards::divide_by_partition(self)
    }
    fn restore_units(&mut self, parts: &[(&Value, u32)]) -> usize {
        Shards::restore_units(self, parts)
    }
    fn late_records(&self) -> u64 {
        self.shards.iter().map(Aggregator::late_records).sum()
    }
    fn window_type(&self) -> Option<&'static str> {
        self.fresh.window_type()
    }
}
