//! A deliberately broken plugin, for the host's tests: `FAULTY(x BIGINT)` returns `x`,
//! but panics on a negative value and fails (returns an error) on zero. The server must
//! survive both, and send only the bad rows to the processing log.

use weir_udf::udf;

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

weir_udf::export_plugin! {
    library: "faulty",
    version: env!("CARGO_PKG_VERSION"),
    author: "Weir tests",
    description: "Panics and errors on purpose",
    scalars: [faulty],
    aggregates: [],
}
