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
