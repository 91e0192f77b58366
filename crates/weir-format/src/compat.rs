//! Whether data written with one Protobuf or JSON schema can be read with another: the
//! registry's compatibility checks for those kinds (Avro's follow Avro's own resolution
//! rules, in `registry.rs`). Each check walks both schemas and names the first change
//! that breaks reading; BACKWARD asks it of (old writer, new reader), FORWARD of (new
//! writer, old reader), FULL of both.

use std::cmp::Ordering;
use std::collections::BTreeSet;

use prost_reflect::{Cardinality, Kind, MessageDescriptor, Syntax};
use serde_json::Value;

use crate::protobuf::ProtoSchema;

/// Whether a reader using `reader` decodes what `writer` encoded. Fields are matched by
/// number; adding or removing an optional field is fine (an unknown field is skipped, a
/// missing one takes its default). Breaking: the written message (the file's first)
/// missing from the reader by full name (renamed, or its package changed), proto2/proto3
/// swapped, a field's kind changed (scalar, enum, message, map, repeated) or its scalar
/// type changed outside the types that share a wire encoding, a message or enum field
/// naming another type, a required field added or removed, or two fields that were
/// apart moved into one `oneof`.
pub fn protobuf_reads(writer: &ProtoSchema, reader: &ProtoSchema) -> Result<(), String> {
    let root = writer.message(None)?;
    let Some(read_root) = reader.pool().get_message_by_name(root.full_name()) else {
        return Err(format!("message {} is gone", root.full_name()));
    };
    if syntax(&root) != syntax(&read_root) {
        return Err(format!(
            "syntax changed from {:?} to {:?}",
            syntax(&root),
            syntax(&read_root)
        ));
    }
    let mut pending = vec![root];
    let mut seen = BTreeSet::new();
    while let Some(w) = pending.pop() {
        if !seen.insert(w.full_name().to_string()) {
            continue;
        }
        // Messages the writer no longer uses may go; one it writes is checked through
        // the field that names it.
        let Some(r) = reader.pool().get_message_by_name(w.full_name()) else {
            continue;
        };
        message_reads(&w, &r)?;
        pending.extend(w.child_messages());
        pending.extend(w.fields().filter_map(|f| match f.kind() {
            Kind::Message(m) => Some(m),
            _ => None,
        }));
    }
    Ok(())
}

fn syntax(m: &MessageDescriptor) -> Syntax {
    m.parent_file().syntax()
}

fn message_reads(w: &MessageDescriptor, r: &MessageDescriptor) -> Result<(), String> {
    let name = w.full_name();
    for wf in w.fields() {
        let Some(rf) = r.get_field(wf.number()) else {
            if wf.cardinality() == Cardinality::Required {
                return Err(format!("required field {name}.{} removed", wf.name()));
            }
            continue;
        };
        let field = format!("field {name}.{} (number {})", rf.name(), rf.number());
        if (wf.is_map(), wf.is_list()) != (rf.is_map(), rf.is_list()) {
            return Err(format!("{field} changed between single, repeated and map"));
        }
        if (wf.cardinality() == Cardinality::Required)
            != (rf.cardinality() == Cardinality::Required)
        {
            return Err(format!("{field} changed between required and not"));
        }
        match (wf.kind(), rf.kind()) {
            (Kind::Message(a), Kind::Message(b)) if a.full_name() != b.full_name() => {
                return Err(format!(
                    "{field} changed type from {} to {}",
                    a.full_name(),
                    b.full_name()
                ));
            }
            (Kind::Enum(a), Kind::Enum(b)) if a.full_name() != b.full_name() => {
                return Err(format!(
                    "{field} changed type from {} to {}",
                    a.full_name(),
                    b.full_name()
                ));
            }
            (Kind::Message(_), Kind::Message(_)) | (Kind::Enum(_), Kind::Enum(_)) => {}
            (a, b) => {
                if wire_group(&a).is_none() || wire_group(&a) != wire_group(&b) {
                    return Err(format!("{field} changed type from {a:?} to {b:?}"));
                }
            }
        }
    }
    for rf in r.fields() {
        if rf.cardinality() == Cardinality::Required && w.get_field(rf.number()).is_none() {
            return Err(format!("required field {name}.{} added", rf.name()));
        }
    }
    for oneof in r.oneofs() {
        let moved = oneof
            .fields()
            .filter(|f| {
                w.get_field(f.number())
                    .is_some_and(|wf| wf.containing_oneof().is_none())
            })
            .count();
        if moved > 1 {
            return Err(format!(
                "{moved} fields of {name} moved into oneof {}",
                oneof.name()
            ));
        }
    }
    Ok(())
}

/// Scalar types that share a wire encoding (a value written as one reads as another);
/// `None` for messages and enums.
fn wire_group(kind: &Kind) -> Option<u8> {
    Some(match kind {
        Kind::Int32 | Kind::Uint32 | Kind::Int64 | Kind::Uint64 | Kind::Bool => 0,
        Kind::Sint32 | Kind::Sint64 => 1,
        Kind::Fixed32 | Kind::Sfixed32 => 2,
        Kind::Fixed64 | Kind::Sfixed64 => 3,
        Kind::String | Kind::Bytes => 4,
        Kind::Float => 5,
        Kind::Double => 6,
        Kind::Message(_) | Kind::Enum(_) => return None,
    })
}

/// Whether every document valid under `writer` is valid under `reader` (JSON Schema),
/// as far as these keywords go: `type` (an integer reads as a number), `enum`/`const`,
/// `required`, `properties` and `additionalProperties`, `items`, `oneOf`/`anyOf`
/// (each alternative written must be read by one alternative), local `$ref`s
/// (`#/definitions/..`, `#/$defs/..`), and the bounds `minimum`, `maximum`,
/// `minLength`, `maxLength`, `minItems`, `maxItems`. A property the reader adds is not
/// held against it unless required (an open content model lets a writer have written
/// anything there; refusing that would refuse every added column).
pub fn json_reads(writer: &Value, reader: &Value) -> Result<(), String> {
    let roots = Roots { writer, reader };
    roots.reads("#", writer, reader, 0)
}

struct Roots<'a> {
    writer: &'a Value,
    reader: &'a Value,
}

/// How deep references are followed (a recursive schema is compared this far).
const MAX_DEPTH: usize = 64;

impl Roots<'_> {
    fn reads(&self, at: &str, w: &Value, r: &Value, depth: usize) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Ok(());
        }
        let (w, r) = (
            resolve(self.writer, w, depth)?,
            resolve(self.reader, r, depth)?,
        );
        match (w, r) {
            (_, Value::Bool(true)) | (Value::Bool(false), _) => return Ok(()),
            (_, Value::Bool(false)) => return Err(format!("{at}: the new schema accepts nothing")),
            _ => {}
        }
        // Alternatives: each one written must be read.
        if let Some(alts) = alternatives(w) {
            for (i, wa) in alts.iter().enumerate() {
                self.reads(&format!("{at}/{i}"), wa, r, depth + 1)?;
            }
            return Ok(());
        }
        if let Some(alts) = alternatives(r) {
            let mut first = None;
            for ra in alts {
                match self.reads(at, w, ra, depth + 1) {
                    Ok(()) => return Ok(()),
                    Err(e) => {
                        first.get_or_insert(e);
                    }
                }
            }
            return Err(first.unwrap_or_else(|| format!("{at}: no alternative reads it")));
        }
        let (wt, rt) = (types(w), types(r));
        if let Some(rt) = &rt {
            let missing: Vec<&str> = match &wt {
                Some(wt) => wt
                    .iter()
                    .filter(|t| !(rt.contains(*t) || (**t == "integer" && rt.contains("number"))))
                    .copied()
                    .collect(),
                None => vec!["any type"],
            };
            if let Some(t) = missing.first() {
                return Err(format!("{at}: {t} is no longer accepted"));
            }
        }
        if let Some(allowed) = values(r) {
            let Some(written) = values(w) else {
                return Err(format!("{at}: values are now restricted to an enum"));
            };
            if let Some(v) = written.iter().find(|v| !allowed.contains(v)) {
                return Err(format!("{at}: value {v} is no longer accepted"));
            }
        }
        for (key, tighter) in [
            ("minimum", Ordering::Greater),
            ("minLength", Ordering::Greater),
            ("minItems", Ordering::Greater),
            ("maximum", Ordering::Less),
            ("maxLength", Ordering::Less),
            ("maxItems", Ordering::Less),
        ] {
            let Some(rb) = r.get(key).and_then(Value::as_f64) else {
                continue;
            };
            let narrower = match w.get(key).and_then(Value::as_f64) {
                Some(wb) => rb.partial_cmp(&wb) == Some(tighter),
                None => true,
            };
            if narrower {
                return Err(format!("{at}: {key} narrowed to {rb}"));
            }
        }
        self.object_reads(at, w, r, depth)?;
        if let Some(ri) = r.get("items") {
            let wi = w.get("items").unwrap_or(&Value::Bool(true));
            self.reads(&format!("{at}/items"), wi, ri, depth + 1)?;
        }
        Ok(())
    }

    fn object_reads(&self, at: &str, w: &Value, r: &Value, depth: usize) -> Result<(), String> {
        let required = |s: &Value| -> BTreeSet<String> {
            s.get("required")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default()
        };
        let was = required(w);
        if let Some(p) = required(r).into_iter().find(|p| !was.contains(p)) {
            return Err(format!("{at}: property {p} is now required"));
        }
        let empty = serde_json::Map::new();
        let props = |s| properties(s).unwrap_or(&empty);
        let (wp, rp) = (props(w), props(r));
        let open = Value::Bool(true);
        let r_extra = r.get("additionalProperties").unwrap_or(&open);
        for (name, ws) in wp {
            let at = format!("{at}/properties/{name}");
            match rp.get(name) {
                Some(rs) => self.reads(&at, ws, rs, depth + 1)?,
                None => self
                    .reads(&at, ws, r_extra, depth + 1)
                    .map_err(|_| format!("{at}: removed, and other properties are refused"))?,
            }
        }
        // What the writer let through beyond its properties must be read too.
        let w_extra = w.get("additionalProperties").unwrap_or(&open);
        if w_extra != &Value::Bool(false) && r_extra != &Value::Bool(true) {
            self.reads(
                &format!("{at}/additionalProperties"),
                w_extra,
                r_extra,
                depth + 1,
            )?;
        }
        Ok(())
    }
}

/// `s` itself, or what its local `$ref` points at in `root`.
fn resolve<'a>(root: &'a Value, s: &'a Value, depth: usize) -> Result<&'a Value, String> {
    let Some(reference) = s.get("$ref").and_then(Value::as_str) else {
        return Ok(s);
    };
    let Some(path) = reference.strip_prefix('#') else {
        return Err(format!("reference {reference} is not a local one"));
    };
    let target = root
        .pointer(path)
        .ok_or_else(|| format!("reference {reference} points at nothing"))?;
    if depth > MAX_DEPTH {
        return Ok(target);
    }
    resolve(root, target, depth + 1)
}

fn properties(s: &Value) -> Option<&serde_json::Map<String, Value>> {
    s.get("properties")?.as_object()
}

fn alternatives(s: &Value) -> Option<&Vec<Value>> {
    s.get("oneOf")
        .or_else(|| s.get("anyOf"))
        .and_then(Value::as_array)
}

/// The types `s` accepts (`None`: any).
fn types(s: &Value) -> Option<BTreeSet<&str>> {
    match s.get("type")? {
        Value::String(t) => Some(BTreeSet::from([t.as_str()])),
        Value::Array(ts) => Some(ts.iter().filter_map(Value::as_str).collect()),
        _ => None,
    }
}

/// The values `s` is restricted to (`enum`, `const`), if any.
fn values(s: &Value) -> Option<Vec<&Value>> {
    if let Some(c) = s.get("const") {
        return Some(vec![c]);
    }
    Some(s.get("enum")?.as_array()?.iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn proto(text: &str) -> ProtoSchema {
        ProtoSchema::parse(text, &[]).unwrap()
    }

    const V1: &str = r#"syntax = "proto3"; package cars;
        message Reading { string car = 1; int32 speed = 2; Place at = 3; repeated double r = 4; }
        message Place { double lat = 1; double lon = 2; }"#;

    #[test]
    fn protobuf_changes_that_keep_or_break_reading() {
        let v1 = proto(V1);
        let reads = |text: &str| {
            let v2 = proto(text);
            (protobuf_reads(&v1, &v2), protobuf_reads(&v2, &v1))
        };
        // Fields added and removed, int32 to int64 (same wire type), a field renamed.
        let (back, fwd) = reads(
            r#"syntax = "proto3"; package cars;
            message Reading { string id = 1; int64 speed = 2; Place at = 3; bool ok = 5; }
            message Place { double lat = 1; double lon = 2; double alt = 3; }"#,
        );
        assert_eq!((back, fwd), (Ok(()), Ok(())));
        for (text, why) in [
            (
                V1.replace("int32 speed", "string speed"),
                "field cars.Reading.speed (number 2) changed type from int32 to string",
            ),
            (
                V1.replace("double lat", "float lat"),
                "field cars.Place.lat (number 1) changed type from double to float",
            ),
            (
                V1.replace("repeated double r", "double r"),
                "field cars.Reading.r (number 4) changed between single, repeated and map",
            ),
            (
                V1.replace("package cars;", "package trucks;"),
                "message cars.Reading is gone",
            ),
            (
                V1.replace("Place at = 3", "Other at = 3") + "message Other { double lat = 1; }",
                "field cars.Reading.at (number 3) changed type from cars.Place to cars.Other",
            ),
            (
                V1.replace(
                    "string car = 1; int32 speed = 2;",
                    "oneof id { string car = 1; int32 speed = 2; }",
                ),
                "2 fields of cars.Reading moved into oneof id",
            ),
            (
                V1.replace("proto3", "proto2")
                    .replace("string car", "optional string car")
                    .replace("int32 speed", "optional int32 speed")
                    .replace("Place at", "optional Place at")
                    .replace("double lat", "optional double lat")
                    .replace("double lon", "optional double lon"),
                "syntax changed from proto3 to proto2",
            ),
        ] {
            let (back, _) = reads(&text);
            assert_eq!(back, Err(why.to_string()), "{text}");
        }
    }

    #[test]
    fn json_schema_changes_that_keep_or_break_reading() {
        let v1 = json!({
            "type": "object",
            "properties": {
                "car": {"type": "string"},
                "speed": {"type": "integer", "maximum": 300},
                "tags": {"type": "array", "items": {"type": "string"}},
                "at": {"oneOf": [{"type": "null"}, {"$ref": "#/definitions/Place"}]}
            },
            "required": ["car"],
            "definitions": {"Place": {"type": "object", "properties": {"lat": {"type": "number"}}}}
        });
        // speed read as a number, a bound widened, a property added, a required one
        // made optional, a nullable place read through a changed definition's name.
        let mut v2 = v1.clone();
        v2["properties"]["speed"] = json!({"type": "number", "maximum": 400});
        v2["properties"]["driver"] = json!({"type": "string"});
        v2["required"] = json!([]);
        v2["definitions"] = json!({"Spot": {"type": "object", "properties": {"lat": {"type": ["number", "null"]}}}});
        v2["properties"]["at"]["oneOf"][1] = json!({"$ref": "#/definitions/Spot"});
        assert_eq!(json_reads(&v1, &v2), Ok(()));
        // The other way round: a property required that was not.
        assert_eq!(
            json_reads(&v2, &v1),
            Err("#: property car is now required".into())
        );
        assert_eq!(
            json_reads(&json!({"type": "number"}), &json!({"type": "integer"})),
            Err("#: number is no longer accepted".into())
        );
        let breaks = |edit: &dyn Fn(&mut Value), why: &str| {
            let mut v2 = v1.clone();
            edit(&mut v2);
            assert_eq!(json_reads(&v1, &v2), Err(why.to_string()), "{v2}");
        };
        breaks(
            &|v| v["required"] = json!(["car", "speed"]),
            "#: property speed is now required",
        );
        breaks(
            &|v| v["properties"]["speed"]["maximum"] = json!(200),
            "#/properties/speed: maximum narrowed to 200",
        );
        breaks(
            &|v| v["properties"]["tags"]["items"] = json!({"type": "integer"}),
            "#/properties/tags/items: string is no longer accepted",
        );
        breaks(
            &|v| {
                v["properties"].as_object_mut().unwrap().remove("car");
                v["additionalProperties"] = json!(false);
            },
            "#/properties/car: removed, and other properties are refused",
        );
        breaks(
            &|v| v["properties"]["at"] = json!({"$ref": "#/definitions/Place"}),
            "#/properties/at/0: null is no longer accepted",
        );
        breaks(
            &|v| v["properties"]["car"]["enum"] = json!(["a", "b"]),
            "#/properties/car: values are now restricted to an enum",
        );
    }
}
