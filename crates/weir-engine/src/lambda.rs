//! ksqlDB's higher-order functions that DataFusion does not have, over Arrow arrays:
//! `REDUCE(collection, initial, lambda)` for arrays (`(state, x) => ...`) and maps
//! (`(state, k, v) => ...`). (TRANSFORM and FILTER over arrays are DataFusion's.)
//!
//! The lambda runs once per element position over every row that has an element there:
//! step `i` evaluates it on the states and `i`-th elements of those rows at once, so a
//! batch costs as many lambda evaluations as its longest collection has elements.

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
    vec![Arc::new(HigherOrderUDF::new_from_impl(Reduce::new()))]
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
