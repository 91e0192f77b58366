//! Example plugin: scalar functions written as plain Rust.
//!
//! `MULTIPLY(a, b)` for integers and doubles (two overloads), and
//! `HAVERSINE(lat1, lon1, lat2, lon2)`: the great-circle distance in kilometres, or in
//! miles when the server sets `weir.functions.haversine.unit=miles`.

use weir_udf::udf;

#[udf(description = "Multiplies two integers")]
fn multiply(a: i64, b: i64) -> i64 {
    a.wrapping_mul(b)
}

#[udf(name = "MULTIPLY", description = "Multiplies two doubles")]
fn multiply_double(a: f64, b: f64) -> f64 {
    a * b
}

#[udf(
    description = "Great-circle distance between two points given in degrees, in km (or miles)",
    config = "unit"
)]
fn haversine(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let radius = match weir_udf::config("haversine", "unit").as_deref() {
        Some("miles") | Some("MILES") => 3958.8,
        _ => 6371.0,
    };
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = (lat2 - lat1).to_radians();
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * radius * a.sqrt().asin()
}

weir_udf::export_plugin! {
    library: "multiply",
    version: env!("CARGO_PKG_VERSION"),
    author: "Weir examples",
    description: "Arithmetic and geography examples",
    scalars: [multiply, multiply_double, haversine],
    aggregates: [],
}
