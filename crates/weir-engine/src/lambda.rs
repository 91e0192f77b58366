//! ksqlDB's higher-order functions over Arrow arrays, arrays and maps alike:
//! `TRANSFORM(arr, x => ...)`, `TRANSFORM(map, (k, v) => key, (k, v) => value)`,
//! `FILTER(arr, x => ...)`, `FILTER(map, (k, v) => ...)`, and
//! `REDUCE(collection, initial, (state, x) => ...)` / `(state, k, v) => ...`.
//!
//! TRANSFORM and FILTER evaluate their lambdas once per batch, over every element of
//! every row at once (a column the lambda reads from its row repeated per element).
//! REDUCE evaluates its lambda once per element position: step `i` runs it on the
//! states and `i`-th elements of the rows that have one.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, UInt32Array};
use arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, HigherOrderFunctionArgs, HigherOrderReturnFieldArgs, HigherOrderSignature,
    HigherOrderUDF, HigherOrderUDFImpl, LambdaParametersProgress, ValueOrLambda, Volatility,
};

/// The higher-order functions this module provides.
pub fn all() -> Vec<Arc<HigherOrderUDF>> {
    vec![
        Arc::new(HigherOrderUDF::new_from_impl(Reduce::new())),
        Arc::new(HigherOrderUDF::new_from_impl(Elementwise::new(
            Kind::Transform,
        ))),
        Arc::new(HigherOrderUDF::new_from_impl(Elementwise::new(
            Kind::Filter,
        ))),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Transform,
    Filter,
}

/// TRANSFORM and FILTER, over an array or a map.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Elementwise {
    kind: Kind,
    signature: HigherOrderSignature,
}

impl Elementwise {
    fn new(kind: Kind) -> Self {
        Self {
            kind,
            signature: HigherOrderSignature::user_defined(Volatility::Immutable),
        }
    }

    fn lambdas(&self, collection: &DataType) -> usize {
        match (self.kind, collection) {
            (Kind::Transform, DataType::Map(..)) => 2,
            _ => 1,
        }
    }
}

/// The elements of a list or map column, flattened: the rebased offsets, each element's
/// row, and the element arrays (a list's values, or a map's keys and values).
struct Flat {
    offsets: arrow::buffer::OffsetBuffer<i32>,
    rows: UInt32Array,
    columns: Vec<ArrayRef>,
}

fn flatten(collection: &ArrayRef) -> Result<Flat> {
    let (offsets, columns): (&[i32], Vec<ArrayRef>) = match collection.data_type() {
        DataType::List(_) => {
            let l = collection.as_list::<i32>();
            (l.value_offsets(), vec![l.values().clone()])
        }
        DataType::Map(..) => {
            let m = collection.as_map();
            (
                m.value_offsets(),
                vec![m.keys().clone(), m.values().clone()],
            )
        }
        other => return exec_err!("expected an ARRAY or a MAP, not {other}"),
    };
    let first = offsets[0];
    let last = offsets[offsets.len() - 1];
    let columns = columns
        .into_iter()
        .map(|c| c.slice(first as usize, (last - first) as usize))
        .collect();
    let rebased: Vec<i32> = offsets.iter().map(|o| o - first).collect();
    let rows = UInt32Array::from_iter_values(
        rebased
            .windows(2)
            .enumerate()
            .flat_map(|(r, w)| std::iter::repeat_n(r as u32, (w[1] - w[0]) as usize)),
    );
    Ok(Flat {
        offsets: arrow::buffer::OffsetBuffer::new(rebased.into()),
        rows,
        columns,
    })
}

impl HigherOrderUDFImpl for Elementwise {
    fn name(&self) -> &str {
        match self.kind {
            Kind::Transform => "transform",
            Kind::Filter => "filter",
        }
    }

    fn signature(&self) -> &HigherOrderSignature {
        &self.signature
    }

    fn coerce_value_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        Ok(arg_types.to_vec())
    }

    fn lambda_parameters(
        &self,
        _step: usize,
        fields: &[ValueOrLambda<FieldRef, Option<FieldRef>>],
    ) -> Result<LambdaParametersProgress> {
        let Some(ValueOrLambda::Value(collection)) = fields.first() else {
            return plan_err!(
                "{} takes an ARRAY or a MAP first",
                self.name().to_uppercase()
            );
        };
        let want = self.lambdas(collection.data_type());
        if fields.len() != want + 1 {
            return plan_err!(
                "{} of {} takes {want} lambda(s)",
                self.name().to_uppercase(),
                collection.data_type()
            );
        }
        let params = element_fields(collection.data_type())?;
        Ok(LambdaParametersProgress::Complete(vec![params; want]))
    }

    fn return_field_from_args(&self, args: HigherOrderReturnFieldArgs) -> Result<FieldRef> {
        let Some(ValueOrLambda::Value(collection)) = args.arg_fields.first() else {
            return plan_err!(
                "{} takes an ARRAY or a MAP first",
                self.name().to_uppercase()
            );
        };
        let lambda = |i: usize| match args.arg_fields.get(i) {
            Some(ValueOrLambda::Lambda(f)) => Ok(f.data_type().clone()),
            _ => plan_err!(
                "{} takes lambdas after its collection",
                self.name().to_uppercase()
            ),
        };
        let ty = match (self.kind, collection.data_type()) {
            (Kind::Filter, t) => t.clone(),
            (Kind::Transform, DataType::List(_)) => {
                DataType::List(Arc::new(Field::new_list_field(lambda(1)?, true)))
            }
            (Kind::Transform, DataType::Map(..)) => crate::types::map_type(lambda(1)?, lambda(2)?),
            (_, other) => return plan_err!("TRANSFORM takes an ARRAY or a MAP, not {other}"),
        };
        Ok(Arc::new(Field::new("", ty, true)))
    }

    fn invoke_with_args(&self, args: HigherOrderFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let Some(ValueOrLambda::Value(collection)) = args.args.first() else {
            return exec_err!("{} takes an ARRAY or a MAP first", self.name());
        };
        let collection = collection.to_array(n)?;
        let flat = flatten(&collection)?;
        let nulls = collection.nulls().cloned();
        let elements = flat.rows.len();
        let run = |i: usize| -> Result<ArrayRef> {
            let Some(ValueOrLambda::Lambda(lambda)) = args.args.get(i) else {
                return exec_err!("{} takes lambdas after its collection", self.name());
            };
            let first = || Ok(flat.columns[0].clone());
            let second = || {
                Ok(flat
                    .columns
                    .get(1)
                    .cloned()
                    .unwrap_or_else(|| flat.columns[0].clone()))
            };
            let params: Vec<&dyn Fn() -> Result<ArrayRef>> = if flat.columns.len() == 2 {
                vec![&first, &second]
            } else {
                vec![&first]
            };
            lambda
                .evaluate(&params, |captured| {
                    Ok(arrow::compute::take_arrays(captured, &flat.rows, None)?)
                })?
                .into_array(elements)
        };
        let out: ArrayRef = match (self.kind, args.return_type()) {
            (Kind::Transform, DataType::List(field)) => Arc::new(arrow::array::ListArray::try_new(
                field.clone(),
                flat.offsets.clone(),
                arrow::compute::cast(&run(1)?, field.data_type())?,
                nulls,
            )?),
            (Kind::Transform, DataType::Map(entries, sorted)) => {
                let DataType::Struct(fields) = entries.data_type() else {
                    return exec_err!("a map's entries are a struct");
                };
                let keys = arrow::compute::cast(&run(1)?, fields[0].data_type())?;
                if keys.null_count() > 0 {
                    return exec_err!("TRANSFORM of a map gave a NULL key");
                }
                let values = arrow::compute::cast(&run(2)?, fields[1].data_type())?;
                let entries_array =
                    arrow::array::StructArray::try_new(fields.clone(), vec![keys, values], None)?;
                Arc::new(arrow::array::MapArray::try_new(
                    entries.clone(),
                    flat.offsets.clone(),
                    entries_array,
                    nulls,
                    *sorted,
                )?)
            }
            (Kind::Filter, _) => {
                let keep = run(1)?;
                let keep = keep.as_boolean();
                // NULL keeps nothing, as false does.
                let keep = arrow::array::BooleanArray::from_iter(
                    (0..keep.len()).map(|i| Some(keep.is_valid(i) && keep.value(i))),
                );
                let mut lengths = vec![0usize; n];
                for (i, &r) in flat.rows.values().iter().enumerate() {
                    if keep.value(i) {
                        lengths[r as usize] += 1;
                    }
                }
                let offsets = arrow::buffer::OffsetBuffer::from_lengths(lengths);
                let kept: Vec<ArrayRef> = flat
                    .columns
                    .iter()
                    .map(|c| arrow::compute::filter(c.as_ref(), &keep))
                    .collect::<std::result::Result<_, _>>()?;
                match collection.data_type() {
                    DataType::List(field) => Arc::new(arrow::array::ListArray::try_new(
                        field.clone(),
                        offsets,
                        kept[0].clone(),
                        nulls,
                    )?),
                    DataType::Map(entries, sorted) => {
                        let DataType::Struct(fields) = entries.data_type() else {
                            return exec_err!("a map's entries are a struct");
                        };
                        let entries_array =
                            arrow::array::StructArray::try_new(fields.clone(), kept, None)?;
                        Arc::new(arrow::array::MapArray::try_new(
                            entries.clone(),
                            offsets,
                            entries_array,
                            nulls,
                            *sorted,
                        )?)
                    }
                    other => return exec_err!("FILTER takes an ARRAY or a MAP, not {other}"),
                }
            }
            (_, other) => return exec_err!("TRANSFORM gives an ARRAY or a MAP, not {other}"),
        };
        Ok(ColumnarValue::Array(out))
    }
}

/// `REDUCE(collection, initial, lambda)`: the state, starting at `initial`, replaced by
/// the lambda's result for each element in turn; `initial` for a NULL or empty
/// collection. Its type is the initial state's.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Reduce {
    signature: HigherOrderSignature,
}

impl Reduce {
    fn new() -> Self {
        Self {
            signature: HigherOrderSignature::exact(
                vec![
                    ValueOrLambda::Value(()),
                    ValueOrLambda::Value(()),
                    ValueOrLambda::Lambda(()),
                ],
                Volatility::Immutable,
            ),
        }
    }
}

/// The lambda's parameters for a collection of this type after the state: an array's
/// element, or a map's key and value.
fn element_fields(collection: &DataType) -> Result<Vec<FieldRef>> {
    match collection {
        DataType::List(f) | DataType::LargeList(f) => Ok(vec![f.clone()]),
        DataType::Map(entries, _) => match entries.data_type() {
            DataType::Struct(fields) if fields.len() == 2 => {
                Ok(vec![fields[0].clone(), fields[1].clone()])
            }
            other => plan_err!("REDUCE: a map's entries are a key and a value, not {other}"),
        },
        DataType::Null => Ok(vec![Arc::new(Field::new("", DataType::Null, true))]),
        other => plan_err!("REDUCE takes an ARRAY or a MAP, not {other}"),
    }
}

impl HigherOrderUDFImpl for Reduce {
    fn name(&self) -> &str {
        "reduce"
    }

    fn signature(&self) -> &HigherOrderSignature {
        &self.signature
    }

    fn coerce_value_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        Ok(arg_types.to_vec())
    }

    fn lambda_parameters(
        &self,
        _step: usize,
        fields: &[ValueOrLambda<FieldRef, Option<FieldRef>>],
    ) -> Result<LambdaParametersProgress> {
        let [
            ValueOrLambda::Value(collection),
            ValueOrLambda::Value(initial),
            _,
        ] = fields
        else {
            return plan_err!("REDUCE takes a collection, an initial state and a lambda");
        };
        let mut params = vec![Arc::new(Field::new("", initial.data_type().clone(), true))];
        params.extend(element_fields(collection.data_type())?);
        Ok(LambdaParametersProgress::Complete(vec![params]))
    }

    fn return_field_from_args(&self, args: HigherOrderReturnFieldArgs) -> Result<FieldRef> {
        let [_, ValueOrLambda::Value(initial), _] = args.arg_fields else {
            return plan_err!("REDUCE takes a collection, an initial state and a lambda");
        };
        Ok(Arc::new(Field::new("", initial.data_type().clone(), true)))
    }

    fn invoke_with_args(&self, args: HigherOrderFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let [
            ValueOrLambda::Value(collection),
            ValueOrLambda::Value(initial),
            ValueOrLambda::Lambda(lambda),
        ] = &args.args[..]
        else {
            return exec_err!("REDUCE takes a collection, an initial state and a lambda");
        };
        let state_type = args.return_type().clone();
        let collection = collection.to_array(n)?;
        let mut state = arrow::compute::cast(&initial.to_array(n)?, &state_type)?;
        // Each row's elements: where they start in `values`, and how many.
        let (starts, lengths, values): (Vec<usize>, Vec<usize>, Vec<ArrayRef>) =
            match collection.data_type() {
                DataType::List(_) => {
                    let l = collection.as_list::<i32>();
                    let (s, len) = spans(l.value_offsets(), |r| l.is_null(r), n);
                    (s, len, vec![l.values().clone()])
                }
                DataType::Map(..) => {
                    let m = collection.as_map();
                    let (s, len) = spans(m.value_offsets(), |r| m.is_null(r), n);
                    (s, len, vec![m.keys().clone(), m.values().clone()])
                }
                DataType::Null => return Ok(ColumnarValue::Array(state)),
                other => return exec_err!("REDUCE takes an ARRAY or a MAP, not {other}"),
            };
        let longest = lengths.iter().copied().max().unwrap_or(0);
        for i in 0..longest {
            let rows: Vec<u32> = (0..n)
                .filter(|&r| lengths[r] > i)
                .map(|r| r as u32)
                .collect();
            let rows = UInt32Array::from(rows);
            let elements = UInt32Array::from_iter_values(
                rows.values()
                    .iter()
                    .map(|&r| (starts[r as usize] + i) as u32),
            );
            let state_now = arrow::compute::take(state.as_ref(), &rows, None)?;
            let params: Vec<ArrayRef> = values
                .iter()
                .map(|v| arrow::compute::take(v.as_ref(), &elements, None))
                .collect::<std::result::Result<_, _>>()?;
            let state_param = || Ok(state_now.clone());
            let first = || Ok(params[0].clone());
            let second = || Ok(params.get(1).cloned().unwrap_or_else(|| params[0].clone()));
            let param_fns: Vec<&dyn Fn() -> Result<ArrayRef>> = if params.len() == 2 {
                vec![&state_param, &first, &second]
            } else {
                vec![&state_param, &first]
            };
            let next = lambda
                .evaluate(&param_fns, |captured| {
                    Ok(arrow::compute::take_arrays(captured, &rows, None)?)
                })?
                .into_array(rows.len())?;
            let next = arrow::compute::cast(&next, &state_type)?;
            // The rows stepped take their new state; the others keep theirs.
            let mut at = 0usize;
            let picks: Vec<(usize, usize)> = (0..n)
                .map(|r| {
                    if lengths[r] > i {
                        at += 1;
                        (1, at - 1)
                    } else {
                        (0, r)
                    }
                })
                .collect();
            state = arrow::compute::interleave(&[state.as_ref(), next.as_ref()], &picks)?;
        }
        Ok(ColumnarValue::Array(state))
    }
}

/// Start and length of each row's run of a list or map (0 for a null one).
fn spans(
    offsets: &[i32],
    is_null: impl Fn(usize) -> bool,
    rows: usize,
) -> (Vec<usize>, Vec<usize>) {
    (0..rows)
        .map(|r| {
            let start = offsets[r] as usize;
            let len = if is_null(r) {
                0
            } else {
                (offsets[r + 1] - offsets[r]) as usize
            };
            (start, len)
        })
        .unzip()
}
