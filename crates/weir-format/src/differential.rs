//! Checking the fast decoding paths against the general one, where both run on the same
//! records: turned on by tests and by `weir conformance --check-fast-paths`, every batch
//! a fast path (JSON's flat columns, Avro's) decodes is decoded by the general path too,
//! and any difference — another Arrow batch, or a record the general path would have
//! reported as bad — is recorded. Off, it costs one atomic load per batch.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use weir_log::StoredRecord;

use crate::Layout;

static ON: AtomicBool = AtomicBool::new(false);
static COMPARED: AtomicU64 = AtomicU64::new(0);
static MISMATCHES: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Every fast path's batch is checked against the general path from now on.
pub fn enable() {
    ON.store(true, Ordering::SeqCst);
}

/// Records a fast path decoded and the general path checked, since the process started.
pub fn compared() -> u64 {
    COMPARED.load(Ordering::SeqCst)
}

/// The differences found so far (each: the layout's columns, the first record, both
/// results), taken.
pub fn take_mismatches() -> Vec<String> {
    std::mem::take(&mut *MISMATCHES.lock().unwrap_or_else(|e| e.into_inner()))
}

/// When checking is on: whether `fast`, a fast path's batch of `records`, is what the
/// general path makes of them (recorded where not).
pub(crate) fn check(
    layout: &Layout,
    schema: &SchemaRef,
    records: &[StoredRecord],
    fast: &RecordBatch,
) {
    if !ON.load(Ordering::Relaxed) {
        return;
    }
    let general = layout.decode_general(schema, records);
    COMPARED.fetch_add(records.len() as u64, Ordering::SeqCst);
    if general.batch == *fast && general.errors.is_empty() {
        return;
    }
    let columns: Vec<String> = layout
        .value_columns
        .iter()
        .map(|c| format!("{} {:?}", c.name, c.ty))
        .collect();
    let first = records
        .first()
        .and_then(|r| r.record.value.as_deref())
        .map(|v| String::from_utf8_lossy(v).into_owned());
    let why = format!(
        "value columns [{}], first record {first:?}: fast path {fast:?}; general path {:?} with errors {:?}",
        columns.join(", "),
        general.batch,
        general.errors
    );
    MISMATCHES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(why);
}

/// Layouts of flat JSON value columns of each scalar type the fast path takes (`B`
/// BOOLEAN, `I` INT, `L` BIGINT, `D` DOUBLE, `S` STRING), with a KAFKA string key column
/// and without: what the seeded differential test and the fuzz target decode with.
pub fn flat_json_layouts() -> Vec<Layout> {
    use crate::{Column, Format, FormatSpec};
    use weir_sql::ast::SqlType;
    [true, false]
        .into_iter()
        .map(|key| Layout {
            key_columns: if key {
                vec![Column::new("K", SqlType::String)]
            } else {
                vec![]
            },
            value_columns: vec![
                Column::new("B", SqlType::Boolean),
                Column::new("I", SqlType::Int),
                Column::new("L", SqlType::Bigint),
                Column::new("D", SqlType::Double),
                Column::new("S", SqlType::String),
            ],
            key_format: FormatSpec::new(Format::Kafka),
            value_format: FormatSpec::new(Format::Json),
            header_columns: Vec::new(),
        })
        .collect()
}

/// The layouts the fast path is checked with: [`flat_json_layouts`]; the same with ARRAY
/// columns as well (`A` ARRAY<DOUBLE>, `N` ARRAY<BIGINT>, `T` ARRAY<STRING>); and with
/// a STRUCT, a MAP and an ARRAY (`R` STRUCT<X DOUBLE, Yy STRING, Z BIGINT>, `M`
/// MAP<STRING, DOUBLE>, `A`). A layout with any of these goes the general path's other
/// way, through arrow-json, for all its columns.
pub fn json_layouts() -> Vec<Layout> {
    use crate::Column;
    use weir_sql::ast::{Ident, SqlType, StructFieldType};
    let flat = flat_json_layouts();
    let array = |t: SqlType| SqlType::Array(Box::new(t));
    let arrays = flat.clone().into_iter().map(|mut layout| {
        layout.value_columns.extend([
            Column::new("A", array(SqlType::Double)),
            Column::new("N", array(SqlType::Bigint)),
            Column::new("T", array(SqlType::String)),
        ]);
        layout
    });
    let field = |name: &str, ty: SqlType| StructFieldType {
        name: Ident::new(name),
        ty,
    };
    let nested = flat.clone().into_iter().map(|mut layout| {
        layout.value_columns.extend([
            Column::new(
                "R",
                SqlType::Struct(vec![
                    field("X", SqlType::Double),
                    field("Yy", SqlType::String),
                    field("Z", SqlType::Bigint),
                ]),
            ),
            Column::new(
                "M",
                SqlType::Map(Box::new(SqlType::String), Box::new(SqlType::Double)),
            ),
            Column::new("A", array(SqlType::Double)),
        ]);
        layout
    });
    let mut all = flat;
    all.extend(arrays);
    all.extend(nested);
    all
}

/// `values` as records of `partition` from offset `first` on, keyed `k0`, `k1`, ..., at
/// times 1000, 1001, ...: what the fast paths' tests decode.
pub(crate) fn stored<V: AsRef<[u8]>>(
    values: &[V],
    partition: u32,
    first: u64,
) -> Vec<StoredRecord> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| StoredRecord {
            partition,
            offset: first + i as u64,
            record: weir_log::Record::new(
                Some(format!("k{i}").as_bytes()),
                Some(v.as_ref()),
                1000 + i as i64,
            ),
        })
        .collect()
}

/// Decodes `values` as one batch (partition 2, offsets from `first`, keys `k0`, `k1`,
/// ...) through `layout`'s entry point (fast path first) and through its general path
/// alone: `Err` says how they differ, in their Arrow batches or their bad records.
pub fn compare(layout: &Layout, values: &[&[u8]], first: u64) -> Result<(), String> {
    let records = stored(values, 2, first);
    let schema = layout.schema();
    let (entry, general) = (
        layout.decode(&schema, &records),
        layout.decode_general(&schema, &records),
    );
    if entry.batch != general.batch {
        return Err(format!(
            "batches differ: entry point {:?}; general path {:?}",
            entry.batch, general.batch
        ));
    }
    if entry.errors != general.errors {
        return Err(format!(
            "bad records differ: entry point {:?}; general path {:?}",
            entry.errors, general.errors
        ));
    }
    Ok(())
}

/// The fuzz target's body (`crates/weir-format/fuzz`, `json_differential`): `data` cut at
/// 0xFE bytes (never in UTF-8 text) into records, each decoded alone and all together in
/// one batch with each of [`json_layouts`], checked as [`compare`] does (and the fast
/// path's own check enabled); panics at the first difference.
pub fn fuzz_json(data: &[u8]) {
    enable();
    let values: Vec<&[u8]> = data.split(|b| *b == 0xFE).collect();
    for layout in json_layouts() {
        let check = |batch: &[&[u8]], first: u64| {
            if let Err(why) = compare(&layout, batch, first) {
                panic!(
                    "records {:?}: {why}",
                    batch
                        .iter()
                        .map(|v| String::from_utf8_lossy(v))
                        .collect::<Vec<_>>()
                );
            }
        };
        for (i, v) in values.iter().enumerate() {
            check(std::slice::from_ref(v), i as u64);
        }
        check(&values, 0);
    }
    let mismatches = take_mismatches();
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
