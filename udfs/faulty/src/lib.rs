//! A deliberately broken plugin, for the host's tests: `FAULTY(x BIGINT)` returns `x`,
//! but panics on a negative value and fails (returns an error) on zero. The aggregate
//! `FAULTY_SUM(x BIGINT)` sums its rows one at a time and does the same, leaving the rows
//! before the bad one folded into its state: an update that fails half done. The server
//! must survive all of it, and send only the bad rows to the processing log.

use std::sync::Arc;

use weir_udf::arrow::array::{Array, ArrayRef, Int64Array};
use weir_udf::{Aggregate, AggregateDef, udf};

#[udf(description = "x, but panics when x < 0 and fails when x = 0")]
fn faulty(x: i64) -> Result<i64, String> {
    if x < 0 {
        panic!("faulty plugin: negative input {x}");
    }
    if x == 0 {
        return Err("zero is not allowed".into());
    }
    Ok(x)
}

#[derive(Default)]
struct FaultySum {
    sum: i64,
}

impl Aggregate for FaultySum {
    fn update(&mut self, args: &[ArrayRef]) -> Result<(), String> {
        let values = args
            .first()
            .and_then(|a| a.as_any().downcast_ref::<Int64Array>())
            .ok_or("FAULTY_SUM takes one BIGINT argument")?;
        for x in values.iter().flatten() {
            if x < 0 {
                panic!("faulty plugin: negative input {x}");
            }
            if x == 0 {
                return Err("zero is not allowed".into());
            }
            self.sum += x;
        }
        Ok(())
    }

    fn state(&self) -> Vec<u8> {
        self.sum.to_le_bytes().to_vec()
    }

    fn merge(&mut self, state: &[u8]) -> Result<(), String> {
        let bytes: [u8; 8] = state.try_into().map_err(|_| "not a FAULTY_SUM state")?;
        self.sum += i64::from_le_bytes(bytes);
        Ok(())
    }

    fn result(&self) -> Result<ArrayRef, String> {
        Ok(Arc::new(Int64Array::from(vec![self.sum])))
    }
}

fn faulty_sum() -> AggregateDef {
    AggregateDef {
        name: "FAULTY_SUM",
        description: "The sum; panics on a negative row and fails on zero, half way through",
        args: vec![("x", "BIGINT")],
        returns: "BIGINT",
        config: vec![],
        new: || Box::<FaultySum>::default(),
    }
}

weir_udf::export_plugin! {
    library: "faulty",
    version: env!("CARGO_PKG_VERSION"),
    author: "Weir tests",
    description: "Panics and errors on purpose",
    scalars: [faulty],
    aggregates: [faulty_sum()],
}
