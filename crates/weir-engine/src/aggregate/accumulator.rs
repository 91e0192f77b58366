//! Accumulators: one aggregate call's state for every group, columnar (vectors indexed by
//! dense group id), driven by the batch's [`Op`]s in order.
//!
//! ksqlDB gives one change per input record, with the group's result after that record,
//! so a batch is not folded group by group: the aggregator walks the batch once and
//! writes down, in order, what happens to which group (`Reset`, `Fold`, `Unfold`,
//! `Emit`); each accumulator then replays that list in one tight loop over its own typed
//! vectors and the argument arrays, appending a result for every `Emit`. One file holds
//! the numeric ones (COUNT, SUM, AVG, MIN/MAX, STDDEV_SAMP, CORRELATION); the collection
//! and offset aggregates are in `collect.rs`, plugin aggregates in `plugin.rs`.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, PrimitiveArray, PrimitiveBuilder,
    StringBuilder,
};
use arrow::datatypes::{ArrowPrimitiveType, DataType, Float64Type, Int32Type, Int64Type};

use crate::error::{EngineError, Result};

/// One step of a batch for one group, in the order the records made them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// The group starts afresh: a new group (its slot may be reused), or a merged session
    /// folded again from its rows.
    Reset(u32),
    /// Argument row `.1` goes into group `.0`.
    Fold(u32, u32),
    /// Argument row `.1` comes back out of group `.0` (a table row replaced or deleted).
    Unfold(u32, u32),
    /// The group's current result is the next row of the batch's changes.
    Emit(u32),
}

/// What a run of ops gives: a result per `Emit`, and why some could not be computed
/// (by `Emit` index; those rows are dropped).
pub(crate) struct Emitted {
    pub values: ArrayRef,
    pub bad: Vec<(usize, String)>,
}

impl Emitted {
    /// Every emitted result computed.
    pub fn all(values: ArrayRef) -> Emitted {
        Emitted {
            values,
            bad: Vec::new(),
        }
    }
}

/// One aggregate call's state over all groups.
pub(crate) trait Accumulator: Send + std::fmt::Debug {
    /// Replays `ops` over `args` (this call's argument columns; rows past the batch are
    /// stored rows folded again), for `groups` group slots. Folds that fail (plugin
    /// aggregates) go to `failed` by argument row; the group keeps its state.
    fn run(
        &mut self,
        ops: &[Op],
        groups: usize,
        args: &[ArrayRef],
        failed: &mut Vec<(u32, String)>,
    ) -> Result<Emitted>;
    /// Group `g`'s state, appended to `out` (for checkpoints).
    fn save(&self, g: u32, out: &mut Vec<u8>);
    /// Sets group `g`'s state from what [`Accumulator::save`] wrote; advances `bytes`.
    fn load(&mut self, g: u32, bytes: &mut &[u8]) -> Result<()>;
    fn boxed_clone(&self) -> Box<dyn Accumulator>;
    /// Group `g` is gone: drop what its state holds (its slot waits for a `Reset`).
    fn free(&mut self, _g: u32) {}
}

impl Clone for Box<dyn Accumulator> {
    fn clone(&self) -> Self {
        self.boxed_clone()
    }
}

pub(crate) fn corrupt() -> EngineError {
    EngineError::Execution("checkpointed aggregate state does not decode".into())
}

/// Little-endian fixed-width reads from checkpoint bytes.
pub(crate) fn take<const N: usize>(bytes: &mut &[u8]) -> Result<[u8; N]> {
    let (head, rest) = bytes.split_first_chunk::<N>().ok_or_else(corrupt)?;
    *bytes = rest;
    Ok(*head)
}

pub(crate) fn take_slice<'a>(bytes: &mut &'a [u8]) -> Result<&'a [u8]> {
    let n = u32::from_le_bytes(take::<4>(bytes)?) as usize;
    if bytes.len() < n {
        return Err(corrupt());
    }
    let (head, rest) = bytes.split_at(n);
    *bytes = rest;
    Ok(head)
}

pub(crate) fn put_slice(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s);
}

/// An argument column as `T`'s array (cast when planned with another numeric type).
fn typed<T: ArrowPrimitiveType>(a: &ArrayRef) -> Result<PrimitiveArray<T>> {
    Ok(crate::types::cast_to(a.clone(), &T::DATA_TYPE)?
        .as_primitive::<T>()
        .clone())
}

pub(crate) fn grow_to<T: Clone>(v: &mut Vec<T>, n: usize, init: T) {
    if v.len() < n {
        v.resize(n, init);
    }
}

/// Whether row `r` holds a value (`NullArray` rows never do).
fn valid(a: &dyn Array, r: usize) -> bool {
    a.data_type() != &DataType::Null && a.is_valid(r)
}

/// COUNT(x) and COUNT(*): a count per group.
#[derive(Debug, Clone)]
pub(crate) struct Count {
    pub star: bool,
    counts: Vec<i64>,
}

impl Count {
    pub fn new(star: bool) -> Count {
        Count {
            star,
            counts: Vec::new(),
        }
    }
}

impl Accumulator for Count {
    fn run(
        &mut self,
        ops: &[Op],
        groups: usize,
        args: &[ArrayRef],
        _: &mut Vec<(u32, String)>,
    ) -> Result<Emitted> {
        grow_to(&mut self.counts, groups, 0);
        let arg = args.first().filter(|_| !self.star);
        let counts = |r: u32| arg.is_none_or(|a| valid(a.as_ref(), r as usize));
        let mut out = Vec::new();
        for op in ops {
            match *op {
                Op::Reset(g) => self.counts[g as usize] = 0,
                Op::Fold(g, r) if counts(r) => self.counts[g as usize] += 1,
                Op::Unfold(g, r) if counts(r) => self.counts[g as usize] -= 1,
                Op::Emit(g) => out.push(self.counts[g as usize]),
                _ => {}
            }
        }
        Ok(Emitted::all(Arc::new(Int64Array::from(out))))
    }

    fn save(&self, g: u32, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.counts[g as usize].to_le_bytes());
    }

    fn load(&mut self, g: u32, bytes: &mut &[u8]) -> Result<()> {
        grow_to(&mut self.counts, g as usize + 1, 0);
        self.counts[g as usize] = i64::from_le_bytes(take(bytes)?);
        Ok(())
    }

    fn boxed_clone(&self) -> Box<dyn Accumulator> {
        Box::new(self.clone())
    }
}

/// A number type SUM adds in: INT and BIGINT wrap around as Java's do; DOUBLE adds.
pub(crate) trait SumType:
    ArrowPrimitiveType<Native: Default + Copy + Send> + std::fmt::Debug + Send + 'static
{
    fn add(a: Self::Native, b: Self::Native) -> Self::Native;
    fn sub(a: Self::Native, b: Self::Native) -> Self::Native;
    fn to_bytes(v: Self::Native) -> [u8; 8];
    fn from_bytes(b: [u8; 8]) -> Self::Native;
}

impl SumType for Int32Type {
    fn add(a: i32, b: i32) -> i32 {
        a.wrapping_add(b)
    }
    fn sub(a: i32, b: i32) -> i32 {
        a.wrapping_sub(b)
    }
    fn to_bytes(v: i32) -> [u8; 8] {
        (v as i64).to_le_bytes()
    }
    fn from_bytes(b: [u8; 8]) -> i32 {
        i64::from_le_bytes(b) as i32
    }
}

impl SumType for Int64Type {
    fn add(a: i64, b: i64) -> i64 {
        a.wrapping_add(b)
    }
    fn sub(a: i64, b: i64) -> i64 {
        a.wrapping_sub(b)
    }
    fn to_bytes(v: i64) -> [u8; 8] {
        v.to_le_bytes()
    }
    fn from_bytes(b: [u8; 8]) -> i64 {
        i64::from_le_bytes(b)
    }
}

impl SumType for Float64Type {
    fn add(a: f64, b: f64) -> f64 {
        a + b
    }
    fn sub(a: f64, b: f64) -> f64 {
        a - b
    }
    fn to_bytes(v: f64) -> [u8; 8] {
        v.to_le_bytes()
    }
    fn from_bytes(b: [u8; 8]) -> f64 {
        f64::from_le_bytes(b)
    }
}

/// SUM: a sum per group, of the argument's type (no values: 0).
#[derive(Debug)]
pub(crate) struct Sum<T: SumType> {
    sums: Vec<T::Native>,
}

impl<T: SumType> Clone for Sum<T> {
    fn clone(&self) -> Self {
        Sum {
            sums: self.sums.clone(),
        }
    }
}

impl<T: SumType> Sum<T> {
    pub fn new() -> Sum<T> {
        Sum { sums: Vec::new() }
    }
}

impl<T: SumType> Accumulator for Sum<T> {
    fn run(
        &mut self,
        ops: &[Op],
        groups: usize,
        args: &[ArrayRef],
        _: &mut Vec<(u32, String)>,
    ) -> Result<Emitted> {
        grow_to(&mut self.sums, groups, T::Native::default());
        let arg = typed::<T>(&args[0])?;
        let mut out: PrimitiveBuilder<T> = PrimitiveBuilder::new();
        for op in ops {
            match *op {
                Op::Reset(g) => self.sums[g as usize] = T::Native::default(),
                Op::Fold(g, r) if arg.is_valid(r as usize) => {
                    let s = &mut self.sums[g as usize];
                    *s = T::add(*s, arg.value(r as usize));
                }
                Op::Unfold(g, r) if arg.is_valid(r as usize) => {
                    let s = &mut self.sums[g as usize];
                    *s = T::sub(*s, arg.value(r as usize));
                }
                Op::Emit(g) => out.append_value(self.sums[g as usize]),
                _ => {}
            }
        }
        Ok(Emitted::all(Arc::new(out.finish())))
    }

    fn save(&self, g: u32, out: &mut Vec<u8>) {
        out.extend_from_slice(&T::to_bytes(self.sums[g as usize]));
    }

    fn load(&mut self, g: u32, bytes: &mut &[u8]) -> Result<()> {
        grow_to(&mut self.sums, g as usize + 1, T::Native::default());
        self.sums[g as usize] = T::from_bytes(take(bytes)?);
        Ok(())
    }

    fn boxed_clone(&self) -> Box<dyn Accumulator> {
        Box::new(self.clone())
    }
}

/// AVG: a sum and a count per group; no values gives 0.0.
#[derive(Debug, Clone, Default)]
pub(crate) struct Avg {
    sums: Vec<f64>,
    counts: Vec<i64>,
}

impl Accumulator for Avg {
    fn run(
        &mut self,
        ops: &[Op],
        groups: usize,
        args: &[ArrayRef],
        _: &mut Vec<(u32, String)>,
    ) -> Result<Emitted> {
        grow_to(&mut self.sums, groups, 0.0);
        grow_to(&mut self.counts, groups, 0);
        let arg = typed::<Float64Type>(&args[0])?;
        let mut out = Vec::new();
        for op in ops {
            match *op {
                Op::Reset(g) => {
                    self.sums[g as usize] = 0.0;
                    self.counts[g as usize] = 0;
                }
                Op::Fold(g, r) if arg.is_valid(r as usize) => {
                    self.sums[g as usize] += arg.value(r as usize);
                    self.counts[g as usize] += 1;
                }
                Op::Unfold(g, r) if arg.is_valid(r as usize) => {
                    self.sums[g as usize] -= arg.value(r as usize);
                    self.counts[g as usize] -= 1;
                }
                Op::Emit(g) => {
                    let (s, c) = (self.sums[g as usize], self.counts[g as usize]);
                    out.push(if c == 0 { 0.0 } else { s / c as f64 });
                }
                _ => {}
            }
        }
        Ok(Emitted::all(Arc::new(Float64Array::from(out))))
    }

    fn save(&self, g: u32, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.sums[g as usize].to_le_bytes());
        out.extend_from_slice(&self.counts[g as usize].to_le_bytes());
    }

    fn load(&mut self, g: u32, bytes: &mut &[u8]) -> Result<()> {
        grow_to(&mut self.sums, g as usize + 1, 0.0);
        grow_to(&mut self.counts, g as usize + 1, 0);
        self.sums[g as usize] = f64::from_le_bytes(take(bytes)?);
        self.counts[g as usize] = i64::from_le_bytes(take(bytes)?);
        Ok(())
    }

    fn boxed_clone(&self) -> Box<dyn Accumulator> {
        Box::new(self.clone())
    }
}

/// MIN or MAX over INT, BIGINT or DOUBLE: the extreme seen per group (none: null). A NaN
/// neither replaces nor is replaced.
#[derive(Debug)]
pub(crate) struct MinMax<T: SumType> {
    pub max: bool,
    values: Vec<Option<T::Native>>,
}

impl<T: SumType> Clone for MinMax<T> {
    fn clone(&self) -> Self {
        MinMax {
            max: self.max,
            values: self.values.clone(),
        }
    }
}

impl<T: SumType> MinMax<T> {
    pub fn new(max: bool) -> MinMax<T> {
        MinMax {
            max,
            values: Vec::new(),
        }
    }
}

impl<T: SumType<Native: PartialOrd>> Accumulator for MinMax<T> {
    fn run(
        &mut self,
        ops: &[Op],
        groups: usize,
        args: &[ArrayRef],
        _: &mut Vec<(u32, String)>,
    ) -> Result<Emitted> {
        grow_to(&mut self.values, groups, None);
        let arg = typed::<T>(&args[0])?;
        let mut out: PrimitiveBuilder<T> = PrimitiveBuilder::new();
        for op in ops {
            match *op {
                Op::Reset(g) => self.values[g as usize] = None,
                Op::Fold(g, r) if arg.is_valid(r as usize) => {
                    let v = arg.value(r as usize);
                    let slot = &mut self.values[g as usize];
                    let replace = match slot {
                        None => true,
                        Some(old) if self.max => v > *old,
                        Some(old) => v < *old,
                    };
                    if replace {
                        *slot = Some(v);
                    }
                }
                Op::Emit(g) => out.append_option(self.values[g as usize]),
                _ => {}
            }
        }
        Ok(Emitted::all(Arc::new(out.finish())))
    }

    fn save(&self, g: u32, out: &mut Vec<u8>) {
        match self.values[g as usize] {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                out.extend_from_slice(&T::to_bytes(v));
            }
        }
    }

    fn load(&mut self, g: u32, bytes: &mut &[u8]) -> Result<()> {
        grow_to(&mut self.values, g as usize + 1, None);
        self.values[g as usize] = match take::<1>(bytes)? {
            [0] => None,
            _ => Some(T::from_bytes(take(bytes)?)),
        };
        Ok(())
    }

    fn boxed_clone(&self) -> Box<dyn Accumulator> {
        Box::new(self.clone())
    }
}

/// MIN or MAX over STRING (by bytes).
#[derive(Debug, Clone)]
pub(crate) struct MinMaxString {
    pub max: bool,
    values: Vec<Option<Box<str>>>,
}

impl MinMaxString {
    pub fn new(max: bool) -> MinMaxString {
        MinMaxString {
            max,
            values: Vec::new(),
        }
    }
}

impl Accumulator for MinMaxString {
    fn run(
        &mut self,
        ops: &[Op],
        groups: usize,
        args: &[ArrayRef],
        _: &mut Vec<(u32, String)>,
    ) -> Result<Emitted> {
        grow_to(&mut self.values, groups, None);
        let arg = crate::types::cast_to(args[0].clone(), &DataType::Utf8)?;
        let arg = arg.as_string::<i32>();
        let mut out = StringBuilder::new();
        for op in ops {
            match *op {
                Op::Reset(g) => self.values[g as usize] = None,
                Op::Fold(g, r) if arg.is_valid(r as usize) => {
                    let v = arg.value(r as usize);
                    let slot = &mut self.values[g as usize];
                    let replace = match slot.as_deref() {
                        None => true,
                        Some(old) if self.max => v > old,
                        Some(old) => v < old,
                    };
                    if replace {
                        *slot = Some(v.into());
                    }
                }
                Op::Emit(g) => out.append_option(self.values[g as usize].as_deref()),
                _ => {}
            }
        }
        Ok(Emitted::all(Arc::new(out.finish())))
    }

    fn save(&self, g: u32, out: &mut Vec<u8>) {
        match &self.values[g as usize] {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                put_slice(out, v.as_bytes());
            }
        }
    }

    fn load(&mut self, g: u32, bytes: &mut &[u8]) -> Result<()> {
        grow_to(&mut self.values, g as usize + 1, None);
        self.values[g as usize] = match take::<1>(bytes)? {
            [0] => None,
            _ => Some(
                std::str::from_utf8(take_slice(bytes)?)
                    .map_err(|_| corrupt())?
                    .into(),
            ),
        };
        Ok(())
    }

    fn boxed_clone(&self) -> Box<dyn Accumulator> {
        Box::new(self.clone())
    }
}

/// STDDEV_SAMP: count, sum and sum of squared deviations per group; the sample variance
/// (ksqlDB's result), 0.0 for fewer than two values. STDDEV_SAMPLE (`root`): its square
/// root, the sample standard deviation.
#[derive(Debug, Clone, Default)]
pub(crate) struct StddevSamp {
    state: Vec<(i64, f64, f64)>,
    root: bool,
}

impl StddevSamp {
    /// STDDEV_SAMPLE's: the square root of the variance.
    pub fn root() -> StddevSamp {
        StddevSamp {
            root: true,
            ..Default::default()
        }
    }
}

impl Accumulator for StddevSamp {
    fn run(
        &mut self,
        ops: &[Op],
        groups: usize,
        args: &[ArrayRef],
        _: &mut Vec<(u32, String)>,
    ) -> Result<Emitted> {
        grow_to(&mut self.state, groups, (0, 0.0, 0.0));
        let arg = typed::<Float64Type>(&args[0])?;
        let mut out = Vec::new();
        for op in ops {
            match *op {
                Op::Reset(g) => self.state[g as usize] = (0, 0.0, 0.0),
                Op::Fold(g, r) if arg.is_valid(r as usize) => {
                    // m2 += (n·x − sum)² / (n·(n+1)): ksqlDB's update, so results agree
                    // with its to the last digit.
                    let (n, sum, m2) = &mut self.state[g as usize];
                    let x = arg.value(r as usize);
                    if *n > 0 {
                        let c = *n as f64;
                        let d = c * x - *sum;
                        *m2 += d * d / (c * (c + 1.0));
                    }
                    *n += 1;
                    *sum += x;
                }
                Op::Emit(g) => {
                    let (n, _, m2) = self.state[g as usize];
                    // ksqlDB's STDDEV_SAMP gives the sample variance (no square root):
                    // its results, which ksqlDB's users have, are what we give.
                    let variance = if n < 2 { 0.0 } else { m2 / (n - 1) as f64 };
                    out.push(if self.root { variance.sqrt() } else { variance });
                }
                _ => {}
            }
        }
        Ok(Emitted::all(Arc::new(Float64Array::from(out))))
    }

    // Checkpoints hold count, mean and m2 (as they always have).
    fn save(&self, g: u32, out: &mut Vec<u8>) {
        let (n, sum, m2) = self.state[g as usize];
        let mean = if n > 0 { sum / n as f64 } else { 0.0 };
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(&mean.to_le_bytes());
        out.extend_from_slice(&m2.to_le_bytes());
    }

    fn load(&mut self, g: u32, bytes: &mut &[u8]) -> Result<()> {
        grow_to(&mut self.state, g as usize + 1, (0, 0.0, 0.0));
        let n = i64::from_le_bytes(take(bytes)?);
        let mean = f64::from_le_bytes(take(bytes)?);
        let m2 = f64::from_le_bytes(take(bytes)?);
        self.state[g as usize] = (n, mean * n as f64, m2);
        Ok(())
    }

    fn boxed_clone(&self) -> Box<dyn Accumulator> {
        Box::new(self.clone())
    }
}

/// CORRELATION(x, y): Pearson's r from the count and the sums of x, y, x², y², xy per
/// group; pairs with a null are skipped.
#[derive(Debug, Clone, Default)]
pub(crate) struct Correlation {
    state: Vec<[f64; 6]>,
}

impl Accumulator for Correlation {
    fn run(
        &mut self,
        ops: &[Op],
        groups: usize,
        args: &[ArrayRef],
        _: &mut Vec<(u32, String)>,
    ) -> Result<Emitted> {
        grow_to(&mut self.state, groups, [0.0; 6]);
        let x = typed::<Float64Type>(&args[0])?;
        let y = typed::<Float64Type>(&args[1])?;
        let mut out = Vec::new();
        for op in ops {
            match *op {
                Op::Reset(g) => self.state[g as usize] = [0.0; 6],
                Op::Fold(g, r) if x.is_valid(r as usize) && y.is_valid(r as usize) => {
                    let (x, y) = (x.value(r as usize), y.value(r as usize));
                    let s = &mut self.state[g as usize];
                    s[0] += 1.0;
                    s[1] += x;
                    s[2] += y;
                    s[3] += x * x;
                    s[4] += y * y;
                    s[5] += x * y;
                }
                Op::Emit(g) => {
                    let [n, sx, sy, sxx, syy, sxy] = self.state[g as usize];
                    out.push(
                        (n * sxy - sx * sy) / ((n * sxx - sx * sx) * (n * syy - sy * sy)).sqrt(),
                    );
                }
                _ => {}
            }
        }
        Ok(Emitted::all(Arc::new(Float64Array::from(out))))
    }

    fn save(&self, g: u32, out: &mut Vec<u8>) {
        for v in self.state[g as usize] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }

    fn load(&mut self, g: u32, bytes: &mut &[u8]) -> Result<()> {
        grow_to(&mut self.state, g as usize + 1, [0.0; 6]);
        for k in 0..6 {
            self.state[g as usize][k] = f64::from_le_bytes(take(bytes)?);
        }
        Ok(())
    }

    fn boxed_clone(&self) -> Box<dyn Accumulator> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(acc: &mut dyn Accumulator, ops: &[Op], args: &[ArrayRef]) -> ArrayRef {
        let mut failed = Vec::new();
        let out = acc.run(ops, 4, args, &mut failed).unwrap();
        assert!(failed.is_empty() && out.bad.is_empty());
        out.values
    }

    #[test]
    fn each_emit_sees_the_state_after_the_ops_before_it() {
        let args: Vec<ArrayRef> = vec![Arc::new(Int64Array::from(vec![
            Some(5),
            None,
            Some(7),
            Some(-2),
        ]))];
        use Op::*;
        let ops = [
            Reset(0),
            Fold(0, 0),
            Emit(0),
            Reset(1),
            Fold(1, 1),
            Emit(1),
            Fold(0, 2),
            Emit(0),
            Unfold(0, 0),
            Emit(0),
            Fold(1, 3),
            Emit(1),
        ];
        let sum = run(&mut Sum::<Int64Type>::new(), &ops, &args);
        assert_eq!(sum.as_primitive::<Int64Type>().values(), &[5, 0, 12, 7, -2]);
        let count = run(&mut Count::new(false), &ops, &args);
        assert_eq!(count.as_primitive::<Int64Type>().values(), &[1, 0, 2, 1, 1]);
        let star = run(&mut Count::new(true), &ops, &args);
        assert_eq!(star.as_primitive::<Int64Type>().values(), &[1, 1, 2, 1, 2]);
        let avg = run(&mut Avg::default(), &ops, &args);
        assert_eq!(
            avg.as_primitive::<Float64Type>().values(),
            &[5.0, 0.0, 6.0, 7.0, -2.0]
        );
        let max = run(&mut MinMax::<Int64Type>::new(true), &ops, &args);
        let max = max.as_primitive::<Int64Type>();
        assert_eq!(
            (0..5)
                .map(|i| max.is_valid(i).then(|| max.value(i)))
                .collect::<Vec<_>>(),
            vec![Some(5), None, Some(7), Some(7), Some(-2)]
        );
    }

    #[test]
    fn a_saved_state_loads_back_into_another_slot() {
        let args: Vec<ArrayRef> = vec![Arc::new(arrow::array::StringArray::from(vec![
            "pear", "apple", "zoo",
        ]))];
        use Op::*;
        let mut min = MinMaxString::new(false);
        run(
            &mut min,
            &[Reset(0), Fold(0, 0), Fold(0, 1), Fold(0, 2)],
            &args,
        );
        let mut saved = Vec::new();
        min.save(0, &mut saved);
        let mut other = MinMaxString::new(false);
        other.load(3, &mut saved.as_slice()).unwrap();
        let out = run(&mut other, &[Emit(3)], &args);
        assert_eq!(out.as_string::<i32>().value(0), "apple");
    }
}
