//! AVRO's common case decoded straight into Arrow, as [`crate::fastjson`] does for JSON: a
//! record of flat columns (BOOLEAN, INT, BIGINT, DOUBLE, STRING) and no key or a KAFKA
//! STRING key. Each record is walked once along its writer's schema (looked up by the id
//! in its framing, planned once per id): the fields the columns name go to their builders
//! as they are read, the others are skipped; no JSON value is built.
//!
//! It takes only what it decodes exactly as the general path would; anything else (a
//! field of a type its column does not take as it is, a writer schema that is not a
//! record, a record that does not decode, a registry that does not answer) gives the whole
//! batch back to the general path, which also reports the bad records.

use std::sync::Arc;

use apache_avro::Schema;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use weir_log::StoredRecord;

use crate::avro::AvroSchema;
use crate::fastjson::{Scalar, flat_batch};
use crate::layout::{Format, Layout};
use weir_sql::ast::SqlType;

/// How a writer's record maps onto the columns: per field in order, its column (if any).
struct Plan {
    schema: Arc<AvroSchema>,
    columns: Vec<Option<usize>>,
}

impl Plan {
    /// Fields matched as the general path matches them: an exact name, else the first
    /// field of the same name in another case.
    fn new(schema: Arc<AvroSchema>, names: &[String]) -> Option<Plan> {
        let Schema::Record(r) = &schema.root else {
            return None;
        };
        let mut columns = vec![None; r.fields.len()];
        for (c, name) in names.iter().enumerate() {
            let at = r.fields.iter().position(|f| f.name == *name).or_else(|| {
                r.fields
                    .iter()
                    .position(|f| f.name.eq_ignore_ascii_case(name))
            });
            if let Some(i) = at {
                columns[i] = Some(c);
            }
        }
        Some(Plan { schema, columns })
    }
}

/// A flat value of an Avro schema (a union of null and one flat type included), read off
/// `buf`; `None` for any other schema (the general path decides).
fn scalar<'a>(s: &Schema, buf: &mut &'a [u8]) -> Option<Scalar<'a>> {
    use crate::avro::read_long;
    Some(match s {
        Schema::Null => Scalar::Null,
        Schema::Boolean => {
            let (b, rest) = buf.split_first()?;
            *buf = rest;
            Scalar::Bool(*b != 0)
        }
        Schema::Int | Schema::Long => Scalar::I64(read_long(buf).ok()?),
        Schema::Float | Schema::Double => {
            let f = if matches!(s, Schema::Float) {
                let (b, rest) = buf.split_at_checked(4)?;
                *buf = rest;
                f32::from_le_bytes(b.try_into().ok()?) as f64
            } else {
                let (b, rest) = buf.split_at_checked(8)?;
                *buf = rest;
                f64::from_le_bytes(b.try_into().ok()?)
            };
            // NaN and the infinities read as strings there.
            if !f.is_finite() {
                return None;
            }
            Scalar::F64(f)
        }
        Schema::String => {
            let n = usize::try_from(read_long(buf).ok()?).ok()?;
            let (b, rest) = buf.split_at_checked(n)?;
            *buf = rest;
            Scalar::Str(std::str::from_utf8(b).ok()?.into())
        }
        Schema::Union(u) => {
            let i = usize::try_from(read_long(buf).ok()?).ok()?;
            return scalar(u.variants().get(i)?, buf);
        }
        _ => return None,
    })
}

/// A flat column's Avro type, as the sink's own schema writes it: `["null", T]`.
#[derive(Clone, Copy)]
enum Flat {
    Boolean,
    Int,
    Long,
    Double,
    String,
}

/// Writes AVRO records of flat columns straight from their arrays, byte for byte what the
/// general path writes with the same schema: where the sink's schema is a record of
/// `["null", T]` fields, one per column in order, of the columns' own types.
pub(crate) struct FlatWriter {
    frame: Vec<u8>,
    kinds: Vec<Flat>,
}

impl FlatWriter {
    /// `None` where the schema or the arrays are other (the general path writes them).
    pub(crate) fn new(
        binding: &crate::sr::SchemaBinding,
        cols: &[crate::layout::Column],
        arrays: &[&arrow::array::ArrayRef],
    ) -> Result<Option<FlatWriter>, String> {
        use arrow::datatypes::DataType as D;
        let Ok(schema) = binding.write.avro() else {
            return Ok(None);
        };
        let Schema::Record(r) = &schema.root else {
            return Ok(None);
        };
        if r.fields.len() != cols.len() || arrays.len() != cols.len() {
            return Ok(None);
        }
        let mut kinds = Vec::with_capacity(cols.len());
        for ((f, c), a) in r.fields.iter().zip(cols).zip(arrays) {
            let Schema::Union(u) = &f.schema else {
                return Ok(None);
            };
            let kind = match (u.variants(), a.data_type()) {
                ([Schema::Null, Schema::Boolean], D::Boolean) => Flat::Boolean,
                ([Schema::Null, Schema::Int], D::Int32) => Flat::Int,
                ([Schema::Null, Schema::Long], D::Int64) => Flat::Long,
                ([Schema::Null, Schema::Double], D::Float64) => Flat::Double,
                ([Schema::Null, Schema::String], D::Utf8) => Flat::String,
                _ => return Ok(None),
            };
            if !f.name.eq_ignore_ascii_case(&c.name) {
                return Ok(None);
            }
            kinds.push(kind);
        }
        // The id now (a sink's is registered already; a source's at its first write).
        let frame = crate::sr::frame(binding.write_id()?);
        Ok(Some(FlatWriter { frame, kinds }))
    }

    pub(crate) fn row(&self, arrays: &[&arrow::array::ArrayRef], row: usize) -> Vec<u8> {
        use crate::avro::write_long;
        use arrow::array::{Array, AsArray};
        use arrow::datatypes::{Float64Type, Int32Type, Int64Type};
        let mut out = Vec::with_capacity(self.frame.len() + 12 * self.kinds.len());
        out.extend_from_slice(&self.frame);
        for (kind, a) in self.kinds.iter().zip(arrays) {
            if a.is_null(row) {
                out.push(0); // the union's null
                continue;
            }
            out.push(2); // the union's second branch, zig-zag encoded
            match kind {
                Flat::Boolean => out.push(a.as_boolean().value(row) as u8),
                Flat::Int => write_long(a.as_primitive::<Int32Type>().value(row) as i64, &mut out),
                Flat::Long => write_long(a.as_primitive::<Int64Type>().value(row), &mut out),
                Flat::Double => {
                    out.extend_from_slice(&a.as_primitive::<Float64Type>().value(row).to_le_bytes())
                }
                Flat::String => {
                    let s = a.as_string::<i32>().value(row);
                    write_long(s.len() as i64, &mut out);
                    out.extend_from_slice(s.as_bytes());
                }
            }
        }
        out
    }
}

pub(crate) fn decode(
    layout: &Layout,
    schema: &SchemaRef,
    records: &[StoredRecord],
) -> Option<RecordBatch> {
    // Flat columns only (Avro arrays, records and maps are left to the general path).
    if layout.value_format.format != Format::Avro
        || layout.value_columns.iter().any(|c| {
            matches!(
                c.ty,
                SqlType::Array(_) | SqlType::Struct(_) | SqlType::Map(..)
            )
        })
    {
        return None;
    }
    let registry = &layout.value_format.schema.as_ref()?.registry;
    let names: Vec<String> = layout
        .value_columns
        .iter()
        .map(|c| c.name.clone())
        .collect();
    // Per schema id (a topic has one or a few: looked for in turn, not hashed).
    let mut plans: Vec<(u32, Plan)> = Vec::new();
    let mut slots: Vec<Option<Scalar>> = Vec::new();
    flat_batch(layout, schema, records, |bytes, values| {
        let (id, mut body) = crate::sr::unframe(bytes).ok()?;
        let plan = match plans.iter().position(|(known, _)| *known == id) {
            Some(i) => &plans[i].1,
            None => {
                let writer = registry.by_id(id).ok()?.avro().ok()?;
                plans.push((id, Plan::new(writer, &names)?));
                &plans[plans.len() - 1].1
            }
        };
        let Schema::Record(r) = &plan.schema.root else {
            return None;
        };
        slots.clear();
        slots.resize_with(values.len(), || None);
        for (f, column) in r.fields.iter().zip(&plan.columns) {
            match column {
                Some(c) => slots[*c] = Some(scalar(&f.schema, &mut body)?),
                // Not a column: read past it, whatever it is.
                None => {
                    plan.schema.skip(&f.schema, &mut body).ok()?;
                }
            }
        }
        if !body.is_empty() {
            return None;
        }
        for (b, v) in values.iter_mut().zip(slots.drain(..)) {
            if !b.push(v.as_ref()) {
                return None;
            }
        }
        Some(())
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::{Value, json};
    use weir_log::{EmbeddedLog, EmbeddedLogConfig, Record, StoredRecord};
    use weir_sql::ast::SqlType;

    use crate::layout::{Column, Format, FormatSpec, Layout};
    use crate::registry::{LocalRegistry, RegisteredSchema, SchemaRegistry, SchemaType};
    use crate::sr::SchemaBinding;

    fn layout(key: bool, registry: Arc<dyn SchemaRegistry>) -> Layout {
        let cols = vec![
            Column::new("B", SqlType::Boolean),
            Column::new("I", SqlType::Int),
            Column::new("L", SqlType::Bigint),
            Column::new("D", SqlType::Double),
            Column::new("S", SqlType::String),
        ];
        let text = crate::avro::schema_for(&cols, true, None)
            .unwrap()
            .to_string();
        let mut spec = FormatSpec::new(Format::Avro);
        spec.schema = Some(SchemaBinding::new(
            registry,
            "t-value".into(),
            Arc::new(RegisteredSchema::new(0, SchemaType::Avro, text)),
        ));
        Layout {
            key_columns: if key {
                vec![Column::new("K", SqlType::String)]
            } else {
                vec![]
            },
            value_columns: cols,
            key_format: FormatSpec::new(Format::Kafka),
            value_format: spec,
            header_columns: Vec::new(),
        }
    }

    fn record_schema(fields: Value) -> String {
        json!({"type": "record", "name": "W", "fields": fields}).to_string()
    }

    /// Records written with `writer` (registered under its own subject), as stored.
    fn written(registry: &dyn SchemaRegistry, writer: &str, values: &[Value]) -> Vec<StoredRecord> {
        static SUBJECTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = SUBJECTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let subject = format!("w{n}-value");
        let id = registry
            .register(&subject, SchemaType::Avro, writer)
            .unwrap();
        let schema = registry.by_id(id).unwrap();
        let encoded: Vec<Vec<u8>> = values
            .iter()
            .map(|v| crate::sr::encode_with(&schema, id, v).unwrap())
            .collect();
        crate::differential::stored(&encoded, 1, 10)
    }

    /// Whatever it takes, it decodes exactly as the general path; the rest it leaves.
    #[test]
    fn the_fast_path_agrees_with_the_general_one_or_declines() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(EmbeddedLog::open(dir.path(), EmbeddedLogConfig::default()).unwrap());
        let registry: Arc<dyn SchemaRegistry> =
            Arc::new(LocalRegistry::open(log, "_weir_schemas").unwrap());
        let opt = |t: &str| json!(["null", t]);
        // The columns' own schema; a producer's with other names, types and extra fields.
        let exact = record_schema(json!([
            {"name": "B", "type": opt("boolean")}, {"name": "I", "type": opt("int")},
            {"name": "L", "type": opt("long")}, {"name": "D", "type": opt("double")},
            {"name": "S", "type": opt("string")}]));
        let theirs = record_schema(json!([
            {"name": "extra", "type": {"type": "array", "items": {"type": "map", "values": "long"}}},
            {"name": "s", "type": "string"}, {"name": "d", "type": "float"},
            {"name": "nested", "type": {"type": "record", "name": "N", "fields": [
                {"name": "x", "type": {"type": "bytes", "logicalType": "decimal", "precision": 4, "scale": 2}}]}},
            {"name": "l", "type": "int"}, {"name": "S", "type": opt("string")}]));
        let mut taken = written(
            registry.as_ref(),
            &exact,
            &[
                json!({"B": true, "I": 1, "L": 2, "D": 3.5, "S": "x"}),
                json!({"B": null, "I": null, "L": null, "D": null, "S": null}),
                json!({"B": false, "I": -7, "L": 9007199254740993i64, "D": -0.0, "S": "é\"\n"}),
            ],
        );
        taken.extend(written(
            registry.as_ref(),
            &theirs,
            &[
                json!({"extra": [{"a": 1}, {}], "s": "loose", "d": 1.25, "nested": {"x": 1.5},
                   "l": 4, "S": "exact"}),
                json!({"extra": [], "s": "", "d": -2.0, "nested": {"x": 0}, "l": -1, "S": null}),
            ],
        ));
        let declined = [
            // A string where INT is declared: the general path converts.
            (
                record_schema(json!([{"name": "I", "type": "string"}])),
                json!({"I": "12"}),
            ),
            // A number where STRING is declared.
            (
                record_schema(json!([{"name": "S", "type": "long"}])),
                json!({"S": 12}),
            ),
            // Out of INT's range: an error there.
            (
                record_schema(json!([{"name": "I", "type": "long"}])),
                json!({"I": 3000000000i64}),
            ),
            // NaN: a string there.
            (
                record_schema(json!([{"name": "D", "type": "double"}])),
                json!({"D": "NaN"}),
            ),
            // Not a record.
            ("\"long\"".to_string(), json!(5)),
            // A bytes column... for a STRING: the general path decides.
            (
                record_schema(json!([{"name": "S", "type": "bytes"}])),
                json!({"S": "AAE="}),
            ),
        ];
        for key in [false, true] {
            let l = layout(key, registry.clone());
            let schema = l.schema();
            let fast = super::decode(&l, &schema, &taken).expect("taken");
            let general = l.decode_general(&schema, &taken);
            assert!(general.errors.is_empty(), "{:?}", general.errors);
            assert_eq!(fast, general.batch);
            for (writer, value) in &declined {
                let mut batch = taken.clone();
                batch.extend(written(
                    registry.as_ref(),
                    writer,
                    std::slice::from_ref(value),
                ));
                assert!(super::decode(&l, &schema, &batch).is_none(), "{writer}");
                let (a, b) = (l.decode(&schema, &batch), l.decode_general(&schema, &batch));
                assert_eq!(a.batch, b.batch);
                assert_eq!(a.errors, b.errors);
            }
            // Written back: the flat writer's bytes are the general path's.
            let vals: Vec<&arrow::array::ArrayRef> = l
                .value_columns
                .iter()
                .map(|c| fast.column_by_name(&c.name).unwrap())
                .collect();
            let binding = l.value_format.schema.as_ref().unwrap();
            let w = super::FlatWriter::new(binding, &l.value_columns, &vals)
                .unwrap()
                .expect("the sink's own schema");
            for row in 0..fast.num_rows() {
                let obj: serde_json::Map<String, Value> = l
                    .value_columns
                    .iter()
                    .zip(&vals)
                    .map(|(c, a)| (c.name.clone(), crate::convert::value_at(a, row, &c.ty)))
                    .collect();
                let general = crate::sr::encode(&l.value_format, &Value::Object(obj)).unwrap();
                assert_eq!(w.row(&vals, row), general, "row {row}");
            }
            // Not framed: declined, and reported by the general path.
            let mut batch = taken.clone();
            batch.push(StoredRecord {
                partition: 1,
                offset: 99,
                record: Record::new(None, Some(b"{\"B\":true}"), 5),
            });
            assert!(super::decode(&l, &schema, &batch).is_none());
            assert_eq!(l.decode(&schema, &batch).errors.len(), 1);
        }
    }
}
