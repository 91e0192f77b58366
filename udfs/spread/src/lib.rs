//! Example plugin: an aggregate. `SPREAD(x DOUBLE)` is the largest value minus the
//! smallest (NULLs ignored; NULL over no values). Its state is the running min and max,
//! serialized as 16 bytes so partial results merge.

use std::sync::Arc;

use weir_udf::arrow::array::{Array, ArrayRef, Float64Array};
use weir_udf::{Aggregate, AggregateDef};

#[derive(Default)]
struct Spread {
    range: Option<(f64, f64)>,
}

impl Spread {
    fn add(&mut self, v: f64) {
        self.range = Some(match self.range {
            None => (v, v),
            Some((lo, hi)) => (lo.min(v), hi.max(v)),
        });
    }
}

impl Aggregate for Spread {
    fn update(&mut self, args: &[ArrayRef]) -> Result<(), String> {
        let values = args
            .first()
            .and_then(|a| a.as_any().downcast_ref::<Float64Array>())
            .ok_or("SPREAD takes one DOUBLE argument")?;
        for v in values.iter().flatten() {
            self.add(v);
        }
        Ok(())
    }

    fn state(&self) -> Vec<u8> {
        match self.range {
            None => vec![],
            Some((lo, hi)) => [lo.to_le_bytes(), hi.to_le_bytes()].concat(),
        }
    }

    fn merge(&mut self, state: &[u8]) -> Result<(), String> {
        match state.len() {
            0 => Ok(()),
            16 => {
                let lo = f64::from_le_bytes(state[..8].try_into().expect("8 bytes"));
                let hi = f64::from_le_bytes(state[8..].try_into().expect("8 bytes"));
                self.add(lo);
                self.add(hi);
                Ok(())
            }
            n => Err(format!("SPREAD: a state of {n} bytes is not one of mine")),
        }
    }

    fn result(&self) -> Result<ArrayRef, String> {
        Ok(Arc::new(Float64Array::from(vec![
            self.range.map(|(lo, hi)| hi - lo),
        ])))
    }
}

fn spread() -> AggregateDef {
    AggregateDef {
        name: "SPREAD",
        description: "The largest value minus the smallest",
        args: vec![("x", "DOUBLE")],
        returns: "DOUBLE",
        config: vec![],
        new: || Box::<Spread>::default(),
    }
}

weir_udf::export_plugin! {
    library: "spread",
    version: env!("CARGO_PKG_VERSION"),
    author: "Weir examples",
    description: "An aggregate example",
    scalars: [],
    aggregates: [spread()],
}
