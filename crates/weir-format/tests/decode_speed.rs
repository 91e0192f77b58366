//! Decoding speed of the JSON paths alone, as figures (not a timed test; ignored unless
//! asked for): `cargo test --release -p weir-format --test decode_speed -- --ignored
//! --nocapture`. `w1_decode_speed`: W1's car-sensor records (the same as `weir bench w1`
//! makes) through the entry point, with the minor page faults each round took;
//! `nested_decode_speed`: records with a STRUCT, a MAP and an ARRAY column through the
//! entry point (fast path) and through the general path alone.

use std::time::Instant;
use weir_format::{Column, Format, FormatSpec, Layout};
use weir_sql::ast::SqlType;

fn minflt() -> i64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap();
    let rest = &s[s.rfind(')').unwrap() + 2..];
    rest.split_whitespace().nth(7).unwrap().parse().unwrap()
}

#[test]
#[ignore]
fn w1_decode_speed() {
    let layout = Layout {
        key_columns: vec![Column::new("CAR_ID", SqlType::String)],
        value_columns: vec![
            Column::new("TS", SqlType::Bigint),
            Column::new("SPEED", SqlType::Double),
            Column::new("RPM", SqlType::Int),
            Column::new("ENGINE_TEMP", SqlType::Double),
            Column::new("LAT", SqlType::Double),
            Column::new("LON", SqlType::Double),
        ],
        key_format: FormatSpec::new(Format::Kafka),
        value_format: FormatSpec::new(Format::Json),
        header_columns: Vec::new(),
    };
    let n = 2_000_000u64;
    let all: Vec<weir_log::StoredRecord> = (0..n)
        .map(|i| {
            let car = i % 10_000;
            let x = i.wrapping_mul(2_654_435_761) % 1_000_000;
            let speed = (x % 1300) as f64 / 10.0;
            let value = format!(
                r#"{{"TS":{},"SPEED":{speed},"RPM":{},"ENGINE_TEMP":{},"LAT":{},"LON":{}}}"#,
                1_700_000_000_000u64 + i,
                800 + x % 5000,
                70.0 + (x % 400) as f64 / 10.0,
                48.0 + (x % 1000) as f64 / 1000.0,
                11.0 + (x % 997) as f64 / 1000.0
            );
            weir_log::StoredRecord {
                partition: 0,
                offset: i,
                record: weir_log::Record::new(
                    Some(format!("car-{car}").as_bytes()),
                    Some(value.as_bytes()),
                    1000 + i as i64,
                ),
            }
        })
        .collect();
    let schema = layout.schema();
    for round in 0..5 {
        let f0 = minflt();
        let t = Instant::now();
        let mut rows = 0;
        for c in all.chunks(4096) {
            rows += layout.decode(&schema, c).batch.num_rows();
        }
        let s = t.elapsed().as_secs_f64();
        println!(
            "round {round}: {:.0} rows/s, {} minor faults",
            rows as f64 / s,
            minflt() - f0
        );
    }
}

#[test]
#[ignore]
fn nested_decode_speed() {
    let layout = weir_format::differential::json_layouts().pop().unwrap();
    let n = 500_000u64;
    let all: Vec<weir_log::StoredRecord> = (0..n)
        .map(|i| {
            let x = i.wrapping_mul(2_654_435_761) % 1_000_000;
            let value = format!(
                r#"{{"B":true,"I":{},"L":{},"D":{},"S":"car-{}","R":{{"X":{},"Yy":"s{}","Z":{}}},"M":{{"a":{},"b":{}}},"A":[{},{},{}]}}"#,
                x % 1000, i, x as f64 / 7.0, i % 100, x as f64 / 3.0, x % 10, i, x % 17, x % 19, x as f64 / 11.0, x % 5, x % 3
            );
            weir_log::StoredRecord { partition: 0, offset: i, record: weir_log::Record::new(Some(b"k".as_slice()), Some(value.as_bytes()), 1000 + i as i64) }
        })
        .collect();
    let schema = layout.schema();
    for round in 0..3 {
        let t = Instant::now();
        let mut rows = 0;
        for c in all.chunks(4096) {
            rows += layout.decode(&schema, c).batch.num_rows();
        }
        let fast = rows as f64 / t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut rows = 0;
        for c in all.chunks(4096) {
            rows += layout.decode_general(&schema, c).batch.num_rows();
        }
        let general = rows as f64 / t.elapsed().as_secs_f64();
        println!(
            "nested round {round}: entry point {fast:.0} rows/s, general path {general:.0} rows/s"
        );
    }
}
