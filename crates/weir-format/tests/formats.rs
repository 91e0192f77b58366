//! Records in each format decode to the declared columns by ksqlDB's rules, bad records
//! are reported without losing the good ones, and batches encode back to the same bytes.

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, Int32Type, Int64Type};
use serde_json::{Value, json};
use weir_format::{Column, Format, FormatSpec, Layout};
use weir_log::{Record, StoredRecord};
use weir_sql::ast::SqlType;

fn stored(offset: u64, key: Option<&[u8]>, value: Option<&[u8]>) -> StoredRecord {
    StoredRecord {
        partition: 0,
        offset,
        record: Record::new(key, value, 1000 + offset as i64),
    }
}

fn col(name: &str, ty: SqlType) -> Column {
    Column::new(name, ty)
}

fn layout(
    key: Vec<Column>,
    key_format: Format,
    value: Vec<Column>,
    value_format: FormatSpec,
) -> Layout {
    let mut key_spec = FormatSpec::new(key_format);
    key_spec.wrap_single = false;
    Layout {
        key_columns: key,
        value_columns: value,
        key_format: key_spec,
        value_format,
        header_columns: Vec::new(),
    }
}

fn json_rows(layout: &Layout, batch: &RecordBatch) -> Vec<Value> {
    let schema = layout.schema();
    (0..batch.num_rows())
        .map(|r| {
            let mut m = serde_json::Map::new();
            for (i, f) in schema.fields().iter().enumerate().skip(3) {
                let ty = layout
                    .key_columns
                    .iter()
                    .chain(&layout.value_columns)
                    .find(|c| c.name == *f.name())
                    .unwrap()
                    .ty
                    .clone();
                m.insert(
                    f.name().clone(),
                    weir_format::convert::value_at(batch.column(i), r, &ty),
                );
            }
            Value::Object(m)
        })
        .collect()
}

#[test]
fn json_values_match_columns_regardless_of_case_and_coerce_like_ksqldb() {
    let l = layout(
        vec![col("ID", SqlType::String)],
        Format::Json,
        vec![
            col("SPEED", SqlType::Double),
            col("COUNT", SqlType::Int),
            col("NAME", SqlType::String),
            col("OK", SqlType::Boolean),
            col("TAGS", SqlType::Array(Box::new(SqlType::Int))),
            col(
                "ATTRS",
                SqlType::Map(Box::new(SqlType::String), Box::new(SqlType::Bigint)),
            ),
            col(
                "POS",
                SqlType::Struct(vec![weir_sql::ast::StructFieldType {
                    name: weir_sql::ast::Ident::new("LAT"),
                    ty: SqlType::Double,
                }]),
            ),
            col(
                "PRICE",
                SqlType::Decimal {
                    precision: 4,
                    scale: 2,
                },
            ),
        ],
        FormatSpec::new(Format::Json),
    );
    let schema = l.schema();
    let recs = [
        stored(0, Some(b"\"car-1\""), Some(br#"{"speed": 88.5, "Count": "3", "NAME": 42, "ok": "TRUE", "tags": [1, 2], "attrs": {"a": 1}, "pos": {"lat": 1.5}, "price": 1.20}"#)),
        stored(1, None, Some(br#"{"SPEED": null, "extra": 1}"#)),
        stored(2, Some(b"\"car-3\""), Some(br#"{"name": {"nested": true}}"#)),
    ];
    let d = l.decode(&schema, &recs);
    assert!(d.errors.is_empty(), "{:?}", d.errors);
    let rows = json_rows(&l, &d.batch);
    assert_eq!(
        rows[0],
        json!({"ID": "car-1", "SPEED": 88.5, "COUNT": 3, "NAME": "42", "OK": true, "TAGS": [1, 2], "ATTRS": {"a": 1}, "POS": {"LAT": 1.5}, "PRICE": 1.2})
    );
    assert_eq!(rows[1]["ID"], Value::Null);
    assert_eq!(rows[1]["SPEED"], Value::Null);
    assert_eq!(rows[2]["NAME"], json!("{\"nested\":true}"));
    // Pseudo-columns come from the record.
    assert_eq!(
        d.batch
            .column(0)
            .as_primitive::<Int64Type>()
            .values()
            .to_vec(),
        vec![1000, 1001, 1002]
    );
    assert_eq!(
        d.batch
            .column(2)
            .as_primitive::<Int64Type>()
            .values()
            .to_vec(),
        vec![0, 1, 2]
    );
}

#[test]
fn records_that_do_not_decode_are_reported_and_the_rest_kept() {
    let l = layout(
        vec![],
        Format::None,
        vec![col("A", SqlType::Int), col("B", SqlType::String)],
        FormatSpec::new(Format::Json),
    );
    let schema = l.schema();
    let recs = [
        stored(10, None, Some(br#"{"a": 1, "b": "x"}"#)),
        stored(11, None, Some(b"not json")),
        stored(12, None, Some(br#"{"a": "not a number"}"#)),
        stored(13, None, Some(br#"{"a": 99999999999}"#)),
        stored(14, None, Some(br#"[1, 2]"#)),
        stored(15, None, None),
        stored(16, None, Some(br#"{"a": 2}"#)),
    ];
    let d = l.decode(&schema, &recs);
    assert_eq!(d.batch.num_rows(), 2);
    assert_eq!(
        d.batch
            .column(3)
            .as_primitive::<Int32Type>()
            .values()
            .to_vec(),
        vec![1, 2]
    );
    let bad: Vec<u64> = d.errors.iter().map(|e| e.offset).collect();
    assert_eq!(
        bad,
        vec![11, 12, 13, 14],
        "the tombstone at 15 is skipped, not an error"
    );
    assert!(
        d.errors[0]
            .message
            .starts_with("Failed to deserialize value: Invalid JSON"),
        "{}",
        d.errors[0].message
    );
}

#[test]
fn unwrapped_single_values() {
    let mut spec = FormatSpec::new(Format::Json);
    spec.wrap_single = false;
    let l = layout(
        vec![col("K", SqlType::Bigint)],
        Format::Json,
        vec![col("V", SqlType::Double)],
        spec,
    );
    let d = l.decode(&l.schema(), &[stored(0, Some(b"7"), Some(b"2.5"))]);
    assert_eq!(json_rows(&l, &d.batch), [json!({"K": 7, "V": 2.5})]);
    let encoded = l.encode(&d.batch).unwrap();
    assert_eq!(encoded, [(Some(b"7".to_vec()), Some(b"2.5".to_vec()))]);
}

#[test]
fn delimited_reads_the_connected_car_message() {
    let l = layout(
        vec![],
        Format::None,
        vec![
            col("EVENTID", SqlType::Int),
            col("SENSORINPUT", SqlType::String),
        ],
        FormatSpec::new(Format::Delimited),
    );
    let msg = "99999,2.10# 2.13# 2.19# 2.28#4.80# 5.02";
    let d = l.decode(
        &l.schema(),
        &[
            stored(0, Some(b"car/engine/temperature"), Some(msg.as_bytes())),
            stored(1, None, Some(b"1,2,3")),
            stored(2, None, Some(b",\"quoted, with comma\"")),
        ],
    );
    assert_eq!(
        json_rows(&l, &d.batch),
        [
            json!({"EVENTID": 99999, "SENSORINPUT": "2.10# 2.13# 2.19# 2.28#4.80# 5.02"}),
            json!({"EVENTID": null, "SENSORINPUT": "quoted, with comma"})
        ]
    );
    assert_eq!(d.errors.len(), 1);
    assert!(
        d.errors[0]
            .message
            .contains("Unexpected field count, csvFields:3 schemaFields:2")
    );
    let back = l.encode(&d.batch).unwrap();
    assert_eq!(back[0].1.as_deref(), Some(msg.as_bytes()));
    assert_eq!(back[1].1.as_deref(), Some(&b",\"quoted, with comma\""[..]));
}

#[test]
fn delimited_uses_the_configured_delimiter_and_java_number_formatting() {
    let mut spec = FormatSpec::new(Format::Delimited);
    spec.delimiter = '|';
    let l = layout(
        vec![],
        Format::None,
        vec![
            col("EVENTID", SqlType::Int),
            col("ANOMALY_VAL", SqlType::Double),
        ],
        spec,
    );
    let d = l.decode(
        &l.schema(),
        &[
            stored(0, None, Some(b"99999|4.193955593608823")),
            stored(1, None, Some(b"1|3")),
        ],
    );
    assert_eq!(
        d.batch
            .column(4)
            .as_primitive::<Float64Type>()
            .values()
            .to_vec(),
        vec![4.193955593608823, 3.0]
    );
    let back: Vec<String> = l
        .encode(&d.batch)
        .unwrap()
        .into_iter()
        .map(|(_, v)| String::from_utf8(v.unwrap()).unwrap())
        .collect();
    assert_eq!(back, ["99999|4.193955593608823", "1|3.0"]);
}

#[test]
fn kafka_primitives_are_big_endian() {
    let l = layout(
        vec![col("K", SqlType::Int)],
        Format::Kafka,
        vec![col("V", SqlType::Bigint)],
        FormatSpec::new(Format::Kafka),
    );
    let d = l.decode(
        &l.schema(),
        &[
            stored(0, Some(&7i32.to_be_bytes()), Some(&(-5i64).to_be_bytes())),
            stored(1, Some(&[1, 2]), Some(&0i64.to_be_bytes())),
        ],
    );
    assert_eq!(json_rows(&l, &d.batch), [json!({"K": 7, "V": -5})]);
    assert_eq!(
        d.errors[0].message,
        "Failed to deserialize key: Size of data received by IntegerDeserializer is not 4"
    );
    assert_eq!(
        l.encode(&d.batch).unwrap(),
        [(
            Some(7i32.to_be_bytes().to_vec()),
            Some((-5i64).to_be_bytes().to_vec())
        )]
    );
}

#[test]
fn kafka_keys_of_each_type_encode_back_to_their_bytes() {
    let keys: [(SqlType, Vec<u8>); 4] = [
        (SqlType::String, "car-7 ü".as_bytes().to_vec()),
        (SqlType::Int, (-3i32).to_be_bytes().to_vec()),
        (SqlType::Bigint, (1i64 << 40).to_be_bytes().to_vec()),
        (SqlType::Double, 2.5f64.to_be_bytes().to_vec()),
    ];
    for (ty, bytes) in keys {
        let l = layout(
            vec![col("K", ty.clone())],
            Format::Kafka,
            vec![col("V", SqlType::Int), col("W", SqlType::String)],
            FormatSpec::new(Format::Json),
        );
        let value = br#"{"V":1,"W":"x"}"#;
        let d = l.decode(
            &l.schema(),
            &[
                stored(0, Some(&bytes), Some(value)),
                stored(1, None, Some(value)),
            ],
        );
        assert!(d.errors.is_empty(), "{ty}: {:?}", d.errors);
        assert_eq!(
            l.encode(&d.batch).unwrap(),
            [
                (Some(bytes.clone()), Some(value.to_vec())),
                (None, Some(value.to_vec()))
            ],
            "{ty}"
        );
    }
}

#[test]
fn layouts_refuse_columns_their_format_cannot_hold() {
    let arr = SqlType::Array(Box::new(SqlType::Int));
    assert!(
        layout(
            vec![],
            Format::None,
            vec![col("A", arr)],
            FormatSpec::new(Format::Delimited)
        )
        .validate()
        .is_err()
    );
    assert!(
        layout(
            vec![col("K", SqlType::Int)],
            Format::None,
            vec![],
            FormatSpec::new(Format::Json)
        )
        .validate()
        .is_err()
    );
    assert!(
        layout(
            vec![],
            Format::None,
            vec![col("A", SqlType::Int), col("B", SqlType::Int)],
            FormatSpec::new(Format::Kafka)
        )
        .validate()
        .is_err()
    );
    assert!(
        layout(
            vec![],
            Format::None,
            vec![col("A", SqlType::Boolean)],
            FormatSpec::new(Format::Kafka)
        )
        .validate()
        .is_err()
    );
    assert!(Format::from_name("xml").is_err());
    assert_eq!(Format::from_name("AvRo"), Ok(Format::Avro));
    assert_eq!(Format::from_name("protobuf_nosr"), Ok(Format::ProtobufNoSr));
    assert_eq!(Format::from_name("json"), Ok(Format::Json));
}
