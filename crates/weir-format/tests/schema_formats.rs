//! The schema-registry formats: the registry's ids and versions (kept across a restart,
//! compatibility checked), Avro records read and written by their schemas in Confluent's
//! framing, JSON_SR, and columns inferred from registered schemas as ksqlDB infers them.

use std::sync::Arc;

use serde_json::{Value, json};
use weir_format::protobuf::Nullable;
use weir_format::registry::{
    Compatibility, LocalRegistry, RegisteredSchema, RegistryError, SchemaRegistry, SchemaType,
};
use weir_format::sr::{self, SchemaBinding};
use weir_format::{Column, Format, FormatSpec, Layout};
use weir_log::{EmbeddedLog, EmbeddedLogConfig, Record, StoredRecord};
use weir_sql::ast::SqlType;

fn log(dir: &std::path::Path) -> Arc<EmbeddedLog> {
    Arc::new(EmbeddedLog::open(dir, EmbeddedLogConfig::default()).unwrap())
}

const V1: &str = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"}]}"#;
const V2: &str = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"},{"name":"b","type":["null","string"],"default":null}]}"#;
const BREAKS: &str = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"},{"name":"c","type":"string"}]}"#;

#[test]
fn protobuf_and_json_schemas_are_checked_for_compatibility() {
    let dir = tempfile::tempdir().unwrap();
    let r = LocalRegistry::open(log(dir.path()), "_weir_schemas").unwrap();
    // Protobuf and JSON schemas are checked as Avro ones are (BACKWARD): a field's type
    // changed (int32 to string) or a property made required is refused; a field added
    // (and int32 widened to int64) is not.
    let proto = |fields: &str| format!("syntax = \"proto3\"; message R {{ {fields} }}");
    r.register("p-value", SchemaType::Protobuf, &proto("int32 a = 1;"))
        .unwrap();
    let refused = r
        .register("p-value", SchemaType::Protobuf, &proto("string a = 1;"))
        .unwrap_err();
    assert!(
        refused.to_string().contains(
            "new schema cannot read old data: field R.a (number 1) changed type from int32 to string"
        ),
        "{refused}"
    );
    r.register(
        "p-value",
        SchemaType::Protobuf,
        &proto("int64 a = 1; string b = 2;"),
    )
    .unwrap();
    let object = |required: &str| {
        format!(
            r#"{{"type":"object","properties":{{"a":{{"type":"integer"}},"b":{{"type":"string"}}}},"required":[{required}]}}"#
        )
    };
    r.register("j-value", SchemaType::Json, &object(r#""a""#))
        .unwrap();
    let refused = r
        .register("j-value", SchemaType::Json, &object(r#""a","b""#))
        .unwrap_err();
    assert!(
        matches!(refused, RegistryError::Incompatible(..)),
        "{refused}"
    );
    r.register("j-value", SchemaType::Json, &object(""))
        .unwrap();
    assert_eq!(r.versions("j-value").unwrap(), vec![1, 2]);
}

#[test]
fn a_transitive_level_checks_every_earlier_version() {
    let dir = tempfile::tempdir().unwrap();
    let r = LocalRegistry::open(log(dir.path()), "_weir_schemas").unwrap();
    let record = |fields: &str| format!(r#"{{"type":"record","name":"R","fields":[{fields}]}}"#);
    let a = r#"{"name":"a","type":"int"}"#;
    let b_default = r#"{"name":"b","type":"string","default":"x"}"#;
    let b = r#"{"name":"b","type":"string"}"#;
    // v3 reads v2's data (it has b) but not v1's (no b, and v3 gives it no default).
    let (v1, v2, v3) = (record(a), record(&format!("{a},{b_default}")), record(b));
    for (subject, level, v3_ok) in [
        ("plain-value", Compatibility::Backward, true),
        ("all-value", Compatibility::BackwardTransitive, false),
    ] {
        r.set_compatibility(Some(subject), level).unwrap();
        r.register(subject, SchemaType::Avro, &v1).unwrap();
        r.register(subject, SchemaType::Avro, &v2).unwrap();
        let third = r.register(subject, SchemaType::Avro, &v3);
        assert_eq!(third.is_ok(), v3_ok, "{subject}: {third:?}");
        if let Err(e) = third {
            assert!(
                e.to_string()
                    .contains("version 1: new schema cannot read old data"),
                "{e}"
            );
        }
    }
    assert_eq!(
        Compatibility::from_name("backward_transitive").map(Compatibility::name),
        Some("BACKWARD_TRANSITIVE")
    );
}

#[test]
fn registry_gives_ids_and_versions_and_keeps_them_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let r = LocalRegistry::open(log(dir.path()), "_weir_schemas").unwrap();
        let a = r.register("t-value", SchemaType::Avro, V1).unwrap();
        // The same schema again (even spaced differently): the same id, no new version.
        let spaced = V1.replace(',', " , ");
        assert_eq!(r.register("t-value", SchemaType::Avro, &spaced).unwrap(), a);
        // The same schema under another subject: the same id.
        assert_eq!(r.register("u-value", SchemaType::Avro, V1).unwrap(), a);
        let b = r.register("t-value", SchemaType::Avro, V2).unwrap();
        assert_ne!(a, b);
        assert_eq!(r.versions("t-value").unwrap(), vec![1, 2]);
        // A field without a default cannot be read from old data: refused (BACKWARD).
        let refused = r.register("t-value", SchemaType::Avro, BREAKS).unwrap_err();
        assert!(
            matches!(refused, RegistryError::Incompatible(..)),
            "{refused}"
        );
        assert!(matches!(
            r.register("t-value", SchemaType::Avro, "{not json"),
            Err(RegistryError::Invalid(_))
        ));
    }
    let r = LocalRegistry::open(log(dir.path()), "_weir_schemas").unwrap();
    let latest = r.latest("t-value").unwrap().unwrap();
    assert_eq!(latest.version, 2);
    assert!(latest.schema.text.contains("\"b\""));
    assert_eq!(r.by_id(latest.schema.id).unwrap().text, latest.schema.text);
    assert_eq!(r.subjects().unwrap(), vec!["t-value", "u-value"]);
    assert!(matches!(
        r.by_id(99),
        Err(RegistryError::SchemaNotFound(99))
    ));
    assert!(r.latest("nobody-value").unwrap().is_none());
    // New ids never reuse old ones after a restart.
    let c = r
        .register("v-value", SchemaType::Json, r#"{"type":"object"}"#)
        .unwrap();
    assert!(c > latest.schema.id);
}

fn cols() -> Vec<Column> {
    vec![
        Column::new("ID", SqlType::Bigint),
        Column::new("NAME", SqlType::String),
        Column::new(
            "PRICE",
            SqlType::Decimal {
                precision: 6,
                scale: 2,
            },
        ),
        Column::new("TAGS", SqlType::Array(Box::new(SqlType::String))),
        Column::new(
            "ATTRS",
            SqlType::Map(Box::new(SqlType::String), Box::new(SqlType::Int)),
        ),
        Column::new("DAY", SqlType::Date),
        Column::new("BLOB", SqlType::Bytes),
    ]
}

fn layout_with(format: Format, registry: Arc<dyn SchemaRegistry>) -> Layout {
    let cols = cols();
    let text = sr::schema_for(format, &cols, true, None, Nullable::Defaults).unwrap();
    let schema_type = sr::schema_type(format).unwrap();
    let write = Arc::new(RegisteredSchema::new(0, schema_type, text));
    let mut spec = FormatSpec::new(format);
    spec.schema = Some(SchemaBinding::new(registry, "orders-value".into(), write));
    Layout {
        key_columns: vec![],
        value_columns: cols,
        key_format: FormatSpec::new(Format::None),
        value_format: spec,
        header_columns: vec![],
    }
}

fn registry() -> (tempfile::TempDir, Arc<dyn SchemaRegistry>) {
    let dir = tempfile::tempdir().unwrap();
    let registry = Arc::new(LocalRegistry::open(log(dir.path()), "_weir_schemas").unwrap());
    (dir, registry)
}

fn row() -> Value {
    json!({"ID": 7, "NAME": "widget", "PRICE": -12.5, "TAGS": ["a", null],
           "ATTRS": {"x": 1}, "DAY": 19000, "BLOB": "AAEC/w=="})
}

#[test]
fn avro_records_round_trip_through_the_registry_framing() {
    let (_dir, registry) = registry();
    let layout = layout_with(Format::Avro, registry.clone());
    let binding = layout.value_format.schema.clone().unwrap();
    let id = binding.write_id().unwrap();
    // The schema is as ksqlDB writes it: optional fields in KsqlDataSourceSchema.
    let registered = registry.latest("orders-value").unwrap().unwrap();
    assert_eq!(registered.schema.id, id);
    let schema: Value = serde_json::from_str(&registered.schema.text).unwrap();
    assert_eq!(schema["name"], "KsqlDataSourceSchema");
    assert_eq!(schema["fields"][2]["type"][1]["logicalType"], "decimal");

    let bytes = sr::encode_with(&binding.write, id, &row()).unwrap();
    assert_eq!(bytes[0], 0, "magic byte");
    assert_eq!(u32::from_be_bytes(bytes[1..5].try_into().unwrap()), id);
    let records = vec![
        StoredRecord {
            partition: 0,
            offset: 0,
            record: Record::new(None, Some(&bytes), 5),
        },
        // Not in the wire format: reported, the good record kept.
        StoredRecord {
            partition: 0,
            offset: 1,
            record: Record::new(None, Some(b"{\"ID\":1}"), 6),
        },
        // A schema id nobody registered.
        StoredRecord {
            partition: 0,
            offset: 2,
            record: Record::new(None, Some(&[0, 0, 0, 0, 42, 2]), 7),
        },
    ];
    let decoded = layout.decode(&layout.schema(), &records);
    assert_eq!(decoded.batch.num_rows(), 1);
    assert_eq!(decoded.errors.len(), 2);
    assert!(
        decoded.errors[0].message.contains("magic byte"),
        "{:?}",
        decoded.errors
    );
    assert!(
        decoded.errors[1].message.contains("42"),
        "{:?}",
        decoded.errors
    );
    // Written back from the batch, the value reads as the row did.
    let encoded = layout.encode(&decoded.batch).unwrap();
    let (_, value) = &encoded[0];
    let (back_id, body) = sr::unframe(value.as_ref().unwrap()).unwrap();
    assert_eq!(back_id, id);
    let back = sr::decode_with(&registry.by_id(back_id).unwrap(), body).unwrap();
    assert_eq!(
        back,
        json!({"ID": 7, "NAME": "widget", "PRICE": -12.50, "TAGS": ["a", null],
                            "ATTRS": {"x": 1}, "DAY": 19000, "BLOB": "AAEC/w=="})
    );
}

#[test]
fn avro_written_by_another_schema_is_read_by_field_name() {
    let (_dir, registry) = registry();
    let layout = layout_with(Format::Avro, registry.clone());
    // A producer's own schema: other field order, lower-case names, a field we lack.
    let theirs = r#"{"type":"record","name":"Order","namespace":"shop","fields":[
        {"name":"extra","type":"string"},{"name":"name","type":"string"},{"name":"id","type":"long"}]}"#;
    let id = registry
        .register("orders-value", SchemaType::Avro, theirs)
        .unwrap_or_else(|_| {
            registry
                .register("other-value", SchemaType::Avro, theirs)
                .unwrap()
        });
    let schema = registry.by_id(id).unwrap();
    let bytes =
        sr::encode_with(&schema, id, &json!({"extra": "x", "name": "bolt", "id": 3})).unwrap();
    let decoded = layout.decode(
        &layout.schema(),
        &[StoredRecord {
            partition: 0,
            offset: 0,
            record: Record::new(None, Some(&bytes), 1),
        }],
    );
    assert!(decoded.errors.is_empty(), "{:?}", decoded.errors);
    let names = decoded.batch.column_by_name("NAME").unwrap();
    assert_eq!(
        weir_format::convert::value_at(names, 0, &SqlType::String),
        json!("bolt")
    );
    let price = decoded.batch.column_by_name("PRICE").unwrap();
    assert!(price.is_null(0));
}

#[test]
fn json_sr_is_framed_json_with_a_connect_schema() {
    let (_dir, registry) = registry();
    let layout = layout_with(Format::JsonSr, registry.clone());
    let binding = layout.value_format.schema.clone().unwrap();
    let id = binding.write_id().unwrap();
    let bytes = sr::encode_with(&binding.write, id, &row()).unwrap();
    assert_eq!(&bytes[..5], &sr::frame(id)[..]);
    assert_eq!(serde_json::from_slice::<Value>(&bytes[5..]).unwrap(), row());
    let decoded = layout.decode(
        &layout.schema(),
        &[StoredRecord {
            partition: 0,
            offset: 0,
            record: Record::new(None, Some(&bytes), 1),
        }],
    );
    assert!(decoded.errors.is_empty(), "{:?}", decoded.errors);
    assert_eq!(decoded.batch.num_rows(), 1);
    // Its schema infers the same columns back.
    let (inferred, wrapped) =
        sr::infer_columns(&registry.by_id(id).unwrap(), false, None, None).unwrap();
    assert!(wrapped);
    assert_eq!(inferred, cols());
}

#[test]
fn columns_are_inferred_as_ksqldb_infers_them() {
    let avro = |text: &str| RegisteredSchema::new(1, SchemaType::Avro, text.to_string());
    // A record value: its fields, upper-cased, nested ones too.
    let s = avro(
        r#"{"type":"record","name":"r","fields":[{"name":"c1","type":{"type":"record","name":"n","fields":[{"name":"f1","type":"int"}]}},{"name":"when","type":["null",{"type":"long","logicalType":"timestamp-millis"}]}]}"#,
    );
    let (cols, wrapped) = sr::infer_columns(&s, false, None, None).unwrap();
    assert!(wrapped);
    assert_eq!(cols[0].name, "C1");
    assert_eq!(cols[0].ty.to_string(), "STRUCT<F1 INTEGER>");
    assert_eq!(cols[1], Column::new("WHEN", SqlType::Timestamp));
    // Not wrapped: one ROWVAL column of the record's type.
    let (cols, wrapped) = sr::infer_columns(&s, false, Some(false), None).unwrap();
    assert!(!wrapped);
    assert_eq!(cols.len(), 1);
    assert_eq!(cols[0].name, "ROWVAL");
    // A primitive key: ROWKEY; a key record of several fields: one column each.
    let (cols, _) = sr::infer_columns(&avro(r#""long""#), true, None, None).unwrap();
    assert_eq!(cols, vec![Column::new("ROWKEY", SqlType::Bigint)]);
    let k = avro(
        r#"{"type":"record","name":"k","fields":[{"name":"K","type":"int"},{"name":"K2","type":"int"}]}"#,
    );
    let (cols, wrapped) = sr::infer_columns(&k, true, None, None).unwrap();
    assert!(wrapped);
    assert_eq!(
        cols.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        ["K", "K2"]
    );
    // Columns Avro cannot name or hold are refused when the schema is made.
    assert!(
        sr::schema_for(
            Format::Avro,
            &[Column::new("a-b", SqlType::Int)],
            true,
            None,
            Nullable::Defaults
        )
        .is_err()
    );
    let map = SqlType::Map(Box::new(SqlType::Int), Box::new(SqlType::Int));
    assert!(
        sr::schema_for(
            Format::Avro,
            &[Column::new("M", map)],
            true,
            None,
            Nullable::Defaults
        )
        .is_err()
    );
}

fn proto_cols() -> Vec<Column> {
    let mut c = cols();
    c.push(Column::new("AT", SqlType::Timestamp));
    c.push(Column::new("WHEN", SqlType::Time));
    c.push(Column::new(
        "INNER",
        SqlType::Struct(vec![weir_sql::ast::StructFieldType {
            name: weir_sql::ast::Ident::new("F0"),
            ty: SqlType::Int,
        }]),
    ));
    c
}

fn proto_row() -> Value {
    json!({"ID": 7, "NAME": "widget", "PRICE": -12.5, "TAGS": ["a", "b"],
           "ATTRS": {"x": 1}, "DAY": 19000, "BLOB": "AAEC/w==", "AT": 1700000000123i64,
           "WHEN": 45296789, "INNER": {"F0": 3}})
}

#[test]
fn protobuf_records_round_trip_with_the_well_known_types() {
    let (_dir, registry) = registry();
    let text = sr::schema_for(
        Format::Protobuf,
        &proto_cols(),
        true,
        None,
        Nullable::Defaults,
    )
    .unwrap();
    // As ksqlDB writes it: ConnectDefault1, nested structs as nested messages, Google's
    // and Confluent's types for dates, times and decimals.
    assert!(text.contains("message ConnectDefault1"), "{text}");
    assert!(text.contains("confluent.type.Decimal PRICE"), "{text}");
    assert!(text.contains("google.protobuf.Timestamp AT"), "{text}");
    assert!(text.contains("message ConnectDefault2"), "{text}");
    let id = registry
        .register("p-value", SchemaType::Protobuf, &text)
        .unwrap();
    let schema = registry.by_id(id).unwrap();
    let bytes = sr::encode_with(&schema, id, &proto_row()).unwrap();
    assert_eq!(bytes[5], 0, "the first message's indexes: one 0 byte");
    let back = sr::decode_with(&schema, &bytes[5..]).unwrap();
    assert_eq!(
        back,
        json!({"ID": 7, "NAME": "widget", "PRICE": -12.50, "TAGS": ["a", "b"],
        "ATTRS": {"x": 1}, "DAY": 19000, "BLOB": "AAEC/w==", "AT": 1700000000123i64,
        "WHEN": 45296789, "INNER": {"F0": 3}})
    );
    // The columns come back from the schema as they were declared.
    let (inferred, _) = sr::infer_columns(&schema, false, None, None).unwrap();
    assert_eq!(inferred, proto_cols());
    // Nulls: proto3 defaults unless the schema makes fields optional or wrapped.
    let nulls = json!({"ID": null, "NAME": null, "INNER": null});
    let back =
        sr::decode_with(&schema, &sr::encode_with(&schema, id, &nulls).unwrap()[5..]).unwrap();
    assert_eq!(
        (&back["ID"], &back["NAME"], &back["INNER"]),
        (&json!(0), &json!(""), &Value::Null)
    );
    for nullable in [Nullable::Optional, Nullable::Wrapper] {
        let cols = vec![
            Column::new("I", SqlType::Int),
            Column::new("S", SqlType::String),
        ];
        let text = sr::schema_for(Format::Protobuf, &cols, true, None, nullable).unwrap();
        let s = RegisteredSchema::new(1, SchemaType::Protobuf, text.clone());
        let v = json!({"I": null, "S": "x"});
        let back = sr::decode_with(&s, &sr::encode_with(&s, 1, &v).unwrap()[5..]).unwrap();
        assert_eq!(back, v, "{nullable:?}: {text}");
    }
}

#[test]
fn protobuf_names_a_message_by_its_indexes_and_compiles_references() {
    let (_dir, registry) = registry();
    let two = r#"syntax = "proto3"; message A { int32 a = 1; } message B { string b = 1; }"#;
    let id = registry
        .register("two-value", SchemaType::Protobuf, two)
        .unwrap();
    let schema = registry.by_id(id).unwrap();
    let bytes = sr::encode_framed(&schema, id, Some("B"), &json!({"b": "hi"})).unwrap();
    // Message indexes [1]: count 1, index 1, zig-zag encoded.
    assert_eq!(&bytes[5..7], &[2, 2]);
    assert_eq!(
        sr::decode_with(&schema, &bytes[5..]).unwrap(),
        json!({"b": "hi"})
    );
    // A schema importing another registered one.
    registry
        .register(
            "event.proto",
            SchemaType::Protobuf,
            r#"syntax = "proto3"; message Event { int64 ts = 1; }"#,
        )
        .unwrap();
    let main = r#"syntax = "proto3"; import "event.proto"; message Log { Event event = 1; }"#;
    assert!(
        registry
            .register("log-value", SchemaType::Protobuf, main)
            .is_err(),
        "import unresolved"
    );
    let reference = weir_format::registry::SchemaReference {
        name: "event.proto".into(),
        subject: "event.proto".into(),
        version: 1,
    };
    let id = registry
        .register_schema("log-value", SchemaType::Protobuf, main, &[reference], None)
        .unwrap();
    let schema = registry.by_id(id).unwrap();
    let v = json!({"event": {"ts": 5}});
    assert_eq!(
        sr::decode_with(&schema, &sr::encode_with(&schema, id, &v).unwrap()[5..]).unwrap(),
        v
    );
    // Not a schema: refused with the compiler's reason.
    let bad = registry
        .register("bad-value", SchemaType::Protobuf, "message {")
        .unwrap_err();
    assert!(bad.to_string().contains("Invalid PROTOBUF schema"), "{bad}");
}
