//! The common case decoded straight into Arrow: a JSON object value of flat columns
//! (BOOLEAN, INT, BIGINT, DOUBLE, STRING), ARRAYs of them, STRUCTs of them and MAPs from
//! STRING to them, and no key or a KAFKA STRING key. (Items, fields and map values —
//! and, beside a nested column, every column's value, since the general path then reads
//! them all through arrow-json — are taken only as their own JSON type or null: what the
//! general path might read another way, a number in a string or a fraction in an
//! integer, it decides; so are objects with a name twice, in any case for a STRUCT, and
//! nesting two deep.) Each record's
//! object is read once, by the scanner in `scan.rs` or, where it declines, with
//! serde_json's streaming deserializer; fields the query does not declare are read as
//! the general path reads them but not kept, no `Value` or map is built.
//!
//! It only takes what it can decode exactly as the general path would; anything else (a
//! value of another JSON type than its column's, duplicate fields, a record that is not an
//! object, bad JSON) makes it give the whole batch back to the general path, which also
//! reports the bad records.

use std::sync::Arc;

use arrow::array::{ArrayRef, ArrowPrimitiveType, BooleanBuilder, PrimitiveArray, StringBuilder};
use arrow::datatypes::{DataType, Float64Type, Int32Type, Int64Type, SchemaRef};
use arrow::record_batch::RecordBatch;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, Visitor};
use weir_log::StoredRecord;
use weir_sql::ast::SqlType;

use crate::layout::{Format, Layout};

mod scan;

/// A scalar as it appeared in the JSON (or an Avro datum: [`crate::fastavro`]).
pub(crate) enum Scalar<'a> {
    Null,
    Bool(bool),
    I64(i64),
    U64(u64),
    F64(f64),
    Str(std::borrow::Cow<'a, str>),
    /// An array of scalars (JSON only), for an ARRAY column of a flat type: where its
    /// items lie in the record's item list ([`Fields::items`]), from and how many. (Not a
    /// boxed list: a type that holds itself has drop glue the compiler calls out of line,
    /// and every slot a record empties went through it — W1's decode ran 25% slower.)
    Items(u32, u32),
    /// An object of scalars (JSON only), for a STRUCT or MAP column of flat types: where
    /// its fields lie in the record's item list, from and how many.
    Object(u32, u32),
    /// An object or array with an object or array in it: not for these columns.
    Nested,
}

/// An array's item (its name empty) or an object's field, in a record's item list.
type Item<'de> = (std::borrow::Cow<'de, str>, Scalar<'de>);

const _: () = assert!(std::mem::size_of::<Scalar>() == 24);

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Scalar::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Scalar::I64(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Scalar::U64(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Scalar::F64(v))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(v.into()))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(v.to_string().into()))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Scalar::Str(v.into()))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
        Skip.visit_seq(a).map(|()| Scalar::Nested)
    }
    fn visit_map<A: MapAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
        Skip.visit_map(a).map(|()| Scalar::Nested)
    }
}

/// Skips a value (an undeclared field's, a nested one's) but reads it as the general path
/// does, so that what the general path rejects fails here too: numbers parsed (one out of
/// range, `1e309`, is an error), strings' escapes decoded (a lone surrogate is one).
/// serde's `IgnoredAny` checks neither.
struct Skip;

impl<'de> DeserializeSeed<'de> for Skip {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(Skip)
    }
}

impl<'de> Visitor<'de> for Skip {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<(), A::Error> {
        while a.next_element_seed(Skip)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<(), A::Error> {
        while a.next_key_seed(Skip)?.is_some() {
            a.next_value_seed(Skip)?;
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for ScalarVisitor {
    type Value = Scalar<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

/// A field's value: a scalar, or an array or object whose items or fields (scalars; an
/// array or object among them reads as [`Scalar::Nested`]) go to the record's item list.
struct ValueSeed<'x, 'de>(&'x mut Vec<Item<'de>>);

impl<'de> Visitor<'de> for ValueSeed<'_, 'de> {
    type Value = Scalar<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        ScalarVisitor.visit_unit()
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        ScalarVisitor.visit_none()
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Self::Value, E> {
        ScalarVisitor.visit_bool(v)
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
        ScalarVisitor.visit_i64(v)
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
        ScalarVisitor.visit_u64(v)
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
        ScalarVisitor.visit_f64(v)
    }
    fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        ScalarVisitor.visit_borrowed_str(v)
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        ScalarVisitor.visit_str(v)
    }
    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
        ScalarVisitor.visit_string(v)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
        let start = self.0.len();
        while let Some(item) = a.next_element_seed(ScalarVisitor)? {
            self.0.push((std::borrow::Cow::Borrowed(""), item));
        }
        Ok(items_at(start, self.0.len(), false))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
        let start = self.0.len();
        while let Some(name) = a.next_key_seed(KeySeed)? {
            let v = a.next_value_seed(ScalarVisitor)?;
            self.0.push((name, v));
        }
        Ok(items_at(start, self.0.len(), true))
    }
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_, 'de> {
    type Value = Scalar<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

/// The array (or object) of a record's items `start..end` (past `u32`'s range: one the
/// general path must read).
fn items_at<'de>(start: usize, end: usize, object: bool) -> Scalar<'de> {
    match (u32::try_from(start), u32::try_from(end - start)) {
        (Ok(s), Ok(n)) if object => Scalar::Object(s, n),
        (Ok(s), Ok(n)) => Scalar::Items(s, n),
        _ => Scalar::Nested,
    }
}

/// Whether an object's fields (at most 32) have distinct names (in any case, with
/// `any_case`): one with a name twice, or a long one, the general path reads. (serde_json
/// keeps a repeated name's last value at its first place; and a struct's field is found
/// in any case in an order its earlier fields' removals have shuffled.)
fn distinct_names(fields: &[Item], any_case: bool) -> bool {
    fields.len() <= 32
        && fields.iter().enumerate().all(|(i, (name, _))| {
            fields[..i].iter().all(|(other, _)| {
                if any_case {
                    !other.eq_ignore_ascii_case(name)
                } else {
                    other != name
                }
            })
        })
}

/// A field name, borrowed from the record's bytes unless it has escapes (serde's own
/// `Cow<str>` always copies).
struct KeySeed;

impl<'de> Visitor<'de> for KeySeed {
    type Value = std::borrow::Cow<'de, str>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a field name")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.to_string().into())
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(v.into())
    }
}

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = std::borrow::Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

/// A column of a primitive type built in a plain vector and a null buffer: Arrow's own
/// builder's append was a call per value here, not inlined into the decoding loop.
pub(crate) struct Prim<T: ArrowPrimitiveType> {
    values: Vec<T::Native>,
    nulls: arrow::array::builder::NullBufferBuilder,
}

impl<T: ArrowPrimitiveType> Prim<T> {
    pub(crate) fn with_capacity(n: usize) -> Self {
        Prim {
            values: Vec::with_capacity(n),
            nulls: arrow::array::builder::NullBufferBuilder::new(n),
        }
    }

    #[inline(always)]
    pub(crate) fn append_value(&mut self, v: T::Native) {
        self.values.push(v);
        self.nulls.append_non_null();
    }

    #[inline(always)]
    pub(crate) fn append_null(&mut self) {
        self.values.push(T::Native::default());
        self.nulls.append_null();
    }

    pub(crate) fn finish(mut self) -> PrimitiveArray<T> {
        PrimitiveArray::new(self.values.into(), self.nulls.finish())
    }
}

/// A column's builder; `push` takes a scalar as the general path would convert it, or
/// says no.
pub(crate) enum Builder {
    Bool(BooleanBuilder),
    Int(Prim<Int32Type>),
    Bigint(Prim<Int64Type>),
    Double(Prim<Float64Type>),
    Str(StringBuilder),
    /// An ARRAY of one of the flat types (JSON only): its items' builder, where each
    /// row's items end, and which rows are null.
    List {
        item: arrow::datatypes::FieldRef,
        items: Box<Builder>,
        ends: Vec<i32>,
        nulls: arrow::array::builder::NullBufferBuilder,
    },
    /// A STRUCT of flat types (JSON only, field names distinct in any case): its fields'
    /// names and builders, and which rows are null.
    Struct {
        fields: arrow::datatypes::Fields,
        children: Vec<Builder>,
        nulls: arrow::array::builder::NullBufferBuilder,
    },
    /// A MAP from STRING to a flat type (JSON only): its keys' and values' builders,
    /// where each row's entries end, and which rows are null.
    Map {
        entries: arrow::datatypes::FieldRef,
        keys: StringBuilder,
        values: Box<Builder>,
        ends: Vec<i32>,
        nulls: arrow::array::builder::NullBufferBuilder,
    },
}

impl Builder {
    pub(crate) fn new(dt: &DataType, ty: &SqlType, n: usize) -> Option<Builder> {
        Some(match (dt, ty) {
            (DataType::Boolean, SqlType::Boolean) => {
                Builder::Bool(BooleanBuilder::with_capacity(n))
            }
            (DataType::Int32, SqlType::Int) => Builder::Int(Prim::with_capacity(n)),
            (DataType::Int64, SqlType::Bigint) => Builder::Bigint(Prim::with_capacity(n)),
            (DataType::Float64, SqlType::Double) => Builder::Double(Prim::with_capacity(n)),
            (DataType::Utf8, SqlType::String) => {
                Builder::Str(StringBuilder::with_capacity(n, n * 8))
            }
            (DataType::List(item), SqlType::Array(t)) => {
                let items = Builder::new(item.data_type(), t, n * 4)?.flat()?;
                let mut ends = Vec::with_capacity(n + 1);
                ends.push(0);
                Builder::List {
                    item: item.clone(),
                    items: Box::new(items),
                    ends,
                    nulls: arrow::array::builder::NullBufferBuilder::new(n),
                }
            }
            (DataType::Struct(fields), SqlType::Struct(declared)) => {
                let distinct = fields.iter().enumerate().all(|(i, f)| {
                    fields[..i]
                        .iter()
                        .all(|g| !g.name().eq_ignore_ascii_case(f.name()))
                });
                if !distinct || fields.len() != declared.len() {
                    return None;
                }
                let children = fields
                    .iter()
                    .zip(declared)
                    .map(|(f, d)| Builder::new(f.data_type(), &d.ty, n)?.flat())
                    .collect::<Option<Vec<_>>>()?;
                Builder::Struct {
                    fields: fields.clone(),
                    children,
                    nulls: arrow::array::builder::NullBufferBuilder::new(n),
                }
            }
            (DataType::Map(entries, false), SqlType::Map(k, v)) if **k == SqlType::String => {
                let DataType::Struct(kv) = entries.data_type() else {
                    return None;
                };
                if kv.len() != 2 || kv[0].data_type() != &DataType::Utf8 {
                    return None;
                }
                let values = Builder::new(kv[1].data_type(), v, n * 4)?.flat()?;
                let mut ends = Vec::with_capacity(n + 1);
                ends.push(0);
                Builder::Map {
                    entries: entries.clone(),
                    keys: StringBuilder::with_capacity(n * 4, n * 32),
                    values: Box::new(values),
                    ends,
                    nulls: arrow::array::builder::NullBufferBuilder::new(n),
                }
            }
            _ => return None,
        })
    }

    /// This builder, if of a flat type (what an array, struct or map here may hold).
    fn flat(self) -> Option<Builder> {
        match self {
            Builder::List { .. } | Builder::Struct { .. } | Builder::Map { .. } => None,
            b => Some(b),
        }
    }

    /// Appends an array's item: only a value of the item's own JSON type (or null), which
    /// the general path (arrow-json) reads the same way; false for anything else, which
    /// it may read otherwise (numbers in strings, a fraction in an integer).
    fn push_item(&mut self, v: &Scalar) -> bool {
        match (self, v) {
            (Builder::Bool(b), Scalar::Null) => b.append_null(),
            (Builder::Int(b), Scalar::Null) => b.append_null(),
            (Builder::Bigint(b), Scalar::Null) => b.append_null(),
            (Builder::Double(b), Scalar::Null) => b.append_null(),
            (Builder::Str(b), Scalar::Null) => b.append_null(),
            (Builder::Bool(b), Scalar::Bool(x)) => b.append_value(*x),
            (Builder::Int(b), Scalar::I64(i)) => match i32::try_from(*i) {
                Ok(i) => b.append_value(i),
                Err(_) => return false,
            },
            (Builder::Bigint(b), Scalar::I64(i)) => b.append_value(*i),
            (Builder::Double(b), Scalar::F64(f)) => b.append_value(*f),
            (Builder::Double(b), Scalar::I64(i)) => b.append_value(*i as f64),
            (Builder::Double(b), Scalar::U64(u)) => b.append_value(*u as f64),
            (Builder::Str(b), Scalar::Str(s)) => b.append_value(s),
            _ => return false,
        }
        true
    }

    /// Appends `v` beside an ARRAY, STRUCT or MAP column, where the general path reads
    /// every column through arrow-json: an array (of `items`, the record's item list) to
    /// an ARRAY column, an object to a STRUCT or MAP column, and to the others a value
    /// only of its column's own JSON type; false when the general path must decide.
    fn push_strict(&mut self, v: Option<&Scalar>, items: &[Item]) -> bool {
        let run = |from: &u32, n: &u32| &items[*from as usize..(*from + *n) as usize];
        match (self, v) {
            (
                Builder::List {
                    items: into,
                    ends,
                    nulls,
                    ..
                },
                v,
            ) => {
                let end = *ends.last().expect("starts with 0");
                let next = match v {
                    None | Some(Scalar::Null) => {
                        nulls.append_null();
                        end
                    }
                    Some(Scalar::Items(from, n)) => {
                        let list = run(from, n);
                        if !list.iter().all(|(_, item)| into.push_item(item)) {
                            return false;
                        }
                        let Some(next) = i32::try_from(list.len())
                            .ok()
                            .and_then(|n| end.checked_add(n))
                        else {
                            return false;
                        };
                        nulls.append_non_null();
                        next
                    }
                    Some(_) => return false,
                };
                ends.push(next);
                true
            }
            (
                Builder::Struct {
                    fields,
                    children,
                    nulls,
                },
                v,
            ) => {
                match v {
                    None | Some(Scalar::Null) => {
                        nulls.append_null();
                        // (Each child's null: never false.)
                        children.iter_mut().all(|c| c.push_item(&Scalar::Null))
                    }
                    Some(Scalar::Object(from, n)) => {
                        let object = run(from, n);
                        if !distinct_names(object, true) {
                            return false;
                        }
                        // Each field by its exact name, else in any case (the object's
                        // names and the fields' are distinct in any case: at most one
                        // matches, and no field of the object is taken twice).
                        for (f, c) in fields.iter().zip(children.iter_mut()) {
                            let name = f.name().as_str();
                            let found = object.iter().find(|(k, _)| k == name).or_else(|| {
                                object.iter().find(|(k, _)| k.eq_ignore_ascii_case(name))
                            });
                            if !c.push_item(found.map_or(&Scalar::Null, |(_, v)| v)) {
                                return false;
                            }
                        }
                        nulls.append_non_null();
                        true
                    }
                    Some(_) => false,
                }
            }
            (
                Builder::Map {
                    keys,
                    values,
                    ends,
                    nulls,
                    ..
                },
                v,
            ) => {
                let end = *ends.last().expect("starts with 0");
                let next = match v {
                    None | Some(Scalar::Null) => {
                        nulls.append_null();
                        end
                    }
                    Some(Scalar::Object(from, n)) => {
                        let object = run(from, n);
                        if !distinct_names(object, false) {
                            return false;
                        }
                        for (k, v) in object {
                            if !values.push_item(v) {
                                return false;
                            }
                            keys.append_value(k);
                        }
                        let Some(next) = i32::try_from(object.len())
                            .ok()
                            .and_then(|n| end.checked_add(n))
                        else {
                            return false;
                        };
                        nulls.append_non_null();
                        next
                    }
                    Some(_) => return false,
                };
                ends.push(next);
                true
            }
            (b, Some(v)) => b.push_item(v),
            (b, None) => b.push(None),
        }
    }

    /// Appends `v`; false when the general path must decide.
    pub(crate) fn push(&mut self, v: Option<&Scalar>) -> bool {
        // A fractional number in an integer column is truncated, as the general path does.
        let integer = |s: &Scalar| match s {
            Scalar::I64(i) => Some(*i),
            Scalar::U64(u) => i64::try_from(*u).ok(),
            Scalar::F64(f) if f.is_finite() => Some(f.trunc() as i64),
            _ => None,
        };
        match (self, v) {
            (Builder::Bool(b), None | Some(Scalar::Null)) => b.append_null(),
            (Builder::Int(b), None | Some(Scalar::Null)) => b.append_null(),
            (Builder::Bigint(b), None | Some(Scalar::Null)) => b.append_null(),
            (Builder::Double(b), None | Some(Scalar::Null)) => b.append_null(),
            (Builder::Str(b), None | Some(Scalar::Null)) => b.append_null(),
            (Builder::Bool(b), Some(Scalar::Bool(x))) => b.append_value(*x),
            (Builder::Bigint(b), Some(s)) => match integer(s) {
                Some(i) => b.append_value(i),
                None => return false,
            },
            (Builder::Int(b), Some(s)) => match integer(s).and_then(|i| i32::try_from(i).ok()) {
                Some(i) => b.append_value(i),
                None => return false,
            },
            (Builder::Double(b), Some(Scalar::F64(f))) => b.append_value(*f),
            (Builder::Double(b), Some(Scalar::I64(i))) => b.append_value(*i as f64),
            (Builder::Double(b), Some(Scalar::U64(u))) => b.append_value(*u as f64),
            (Builder::Str(b), Some(Scalar::Str(s))) => b.append_value(s),
            _ => return false,
        }
        true
    }

    pub(crate) fn finish(self) -> ArrayRef {
        match self {
            Builder::Bool(mut b) => Arc::new(b.finish()),
            Builder::Int(b) => Arc::new(b.finish()),
            Builder::Bigint(b) => Arc::new(b.finish()),
            Builder::Double(b) => Arc::new(b.finish()),
            Builder::Str(mut b) => Arc::new(b.finish()),
            Builder::List {
                item,
                items,
                ends,
                mut nulls,
            } => Arc::new(arrow::array::ListArray::new(
                item,
                arrow::buffer::OffsetBuffer::new(ends.into()),
                items.finish(),
                nulls.finish(),
            )),
            Builder::Struct {
                fields,
                children,
                mut nulls,
            } => Arc::new(arrow::array::StructArray::new(
                fields,
                children.into_iter().map(Builder::finish).collect(),
                nulls.finish(),
            )),
            Builder::Map {
                entries,
                mut keys,
                values,
                ends,
                mut nulls,
            } => {
                let DataType::Struct(kv) = entries.data_type() else {
                    unreachable!("made with a struct of key and value")
                };
                let pairs = arrow::array::StructArray::new(
                    kv.clone(),
                    vec![Arc::new(keys.finish()), values.finish()],
                    None,
                );
                Arc::new(arrow::array::MapArray::new(
                    entries,
                    arrow::buffer::OffsetBuffer::new(ends.into()),
                    pairs,
                    nulls.finish(),
                    false,
                ))
            }
        }
    }
}

/// Collects one record's fields by column: an exact name wins over a case-insensitive
/// one, and the first case-insensitive match over later ones (as the general path).
struct Fields<'a, 'de> {
    names: &'a [String],
    /// Each name as the scanner can match it in one load ([`NamePattern`]), where it can.
    patterns: Vec<Option<NamePattern>>,
    exact: Vec<Option<Scalar<'de>>>,
    loose: Vec<Option<Scalar<'de>>>,
    /// The items of the record's arrays and fields of its objects, each array's or
    /// object's in a run ([`Scalar::Items`], [`Scalar::Object`]).
    items: Vec<Item<'de>>,
    duplicate: bool,
}

/// A column name of at most 15 bytes, none of them a quote, a backslash or a control
/// character, followed by its closing quote, as the 16 bytes after a field name's opening
/// quote would hold it (`bits`, little-endian), and the `mask` of those bytes: where the
/// record's bytes match, the field's name is exactly this name.
#[derive(Clone, Copy)]
struct NamePattern {
    bits: u128,
    mask: u128,
    /// The name's length and its closing quote.
    len: usize,
}

impl NamePattern {
    fn new(name: &str) -> Option<NamePattern> {
        let b = name.as_bytes();
        if b.len() > 15 || b.iter().any(|&c| c == b'"' || c == b'\\' || c < 0x20) {
            return None;
        }
        let mut bytes = [0u8; 16];
        bytes[..b.len()].copy_from_slice(b);
        bytes[b.len()] = b'"';
        let len = b.len() + 1;
        let mask = if len == 16 {
            u128::MAX
        } else {
            (1u128 << (8 * len)) - 1
        };
        Some(NamePattern {
            bits: u128::from_le_bytes(bytes),
            mask,
            len,
        })
    }

    /// Whether `bytes` (past a name's opening quote) start with this name and its quote.
    #[inline(always)]
    fn matches(&self, bytes: &[u8]) -> bool {
        match bytes.first_chunk::<16>() {
            Some(w) => u128::from_le_bytes(*w) & self.mask == self.bits,
            None => false,
        }
    }
}

fn name_patterns(names: &[String]) -> Vec<Option<NamePattern>> {
    names.iter().map(|n| NamePattern::new(n)).collect()
}

impl<'de> Fields<'_, 'de> {
    /// The column a field named `key` goes to, and whether by its exact name.
    fn slot(&self, key: &str) -> Option<(usize, bool)> {
        self.slot_bytes(key.as_bytes())
    }

    /// As [`Fields::slot`], for a name's UTF-8 bytes.
    fn slot_bytes(&self, key: &[u8]) -> Option<(usize, bool)> {
        match self.names.iter().position(|n| n.as_bytes() == key) {
            Some(c) => Some((c, true)),
            None => self
                .names
                .iter()
                .position(|n| n.as_bytes().eq_ignore_ascii_case(key))
                .map(|c| (c, false)),
        }
    }

    /// Keeps a field's value in its column's slot: an exact name wins over a
    /// case-insensitive one, the first case-insensitive match over later ones; a second
    /// value under one name marks the record a duplicate.
    #[inline(always)]
    fn put(&mut self, (c, exact): (usize, bool), v: Scalar<'de>) {
        if exact {
            if self.exact[c].replace(v).is_some() {
                self.duplicate = true;
            }
        } else if self.loose[c].is_none() {
            self.loose[c] = Some(v);
        } else {
            self.duplicate = true;
        }
    }

    /// Empties the slots (after a record the scanner gave up on half way).
    fn clear(&mut self) {
        self.exact
            .iter_mut()
            .chain(&mut self.loose)
            .for_each(|s| *s = None);
        self.items.clear();
        self.duplicate = false;
    }
}

impl<'de> Visitor<'de> for &mut Fields<'_, 'de> {
    type Value = bool;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<bool, A::Error> {
        while let Some(key) = a.next_key_seed(KeySeed)? {
            match self.slot(&key) {
                Some(at) => {
                    let v = a.next_value_seed(ValueSeed(&mut self.items))?;
                    self.put(at, v);
                }
                None => a.next_value_seed(Skip)?,
            }
        }
        Ok(true)
    }

    // Anything but an object: not for this path.
    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_str<E>(self, _: &str) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, _: A) -> Result<bool, A::Error> {
        Ok(false)
    }
}

/// Decodes `records` (none of them tombstones) into a batch with `schema`, or `None` when
/// the general path must (see the module doc).
pub(crate) fn decode(
    layout: &Layout,
    schema: &SchemaRef,
    records: &[StoredRecord],
) -> Option<RecordBatch> {
    if layout.value_format.format != Format::Json {
        return None;
    }
    let names: Vec<String> = layout
        .value_columns
        .iter()
        .map(|c| c.name.clone())
        .collect();
    let strict = layout.value_columns.iter().any(|c| {
        matches!(
            c.ty,
            SqlType::Array(_) | SqlType::Struct(_) | SqlType::Map(..)
        )
    });
    let mut fields_of = Fields {
        names: &names,
        patterns: name_patterns(&names),
        exact: (0..names.len()).map(|_| None).collect(),
        loose: (0..names.len()).map(|_| None).collect(),
        items: Vec::new(),
        duplicate: false,
    };
    flat_batch(layout, schema, records, |bytes, values| {
        // Emptied by the last record's `take`s, or by its failure (which ends the loop).
        debug_assert!(
            fields_of
                .exact
                .iter()
                .chain(&fields_of.loose)
                .all(Option::is_none)
        );
        fields_of.duplicate = false;
        fields_of.items.clear();
        // The scanner first; what it declines goes through serde_json's deserializer.
        if !scan::object(bytes, &mut fields_of) {
            fields_of.clear();
            let mut de = serde_json::Deserializer::from_slice(bytes);
            let object = de.deserialize_any(&mut fields_of).ok()?;
            if !object || fields_of.duplicate || de.end().is_err() {
                return None;
            }
        } else if fields_of.duplicate {
            return None;
        }
        for (c, b) in values.iter_mut().enumerate() {
            // Read where it lies (moving a scalar out of its slot costs more than the
            // push), then both slots emptied: the next record starts from empty ones.
            let v = match &fields_of.exact[c] {
                Some(v) => Some(v),
                None => fields_of.loose[c].as_ref(),
            };
            let pushed = if strict {
                b.push_strict(v, &fields_of.items)
            } else {
                b.push(v)
            };
            fields_of.exact[c] = None;
            fields_of.loose[c] = None;
            if !pushed {
                return None;
            }
        }
        Some(())
    })
}

/// The batch of a layout of flat value columns (wrapped) and no key or a KAFKA STRING key,
/// each record's value bytes put into the value columns' builders by `value`; `None` where
/// the layout is not such, or `value` declines a record.
pub(crate) fn flat_batch<'r>(
    layout: &Layout,
    schema: &SchemaRef,
    records: &'r [StoredRecord],
    mut value: impl FnMut(&'r [u8], &mut [Builder]) -> Option<()>,
) -> Option<RecordBatch> {
    let vf = &layout.value_format;
    if (layout.value_columns.len() == 1 && !vf.wrap_single)
        || layout.value_columns.is_empty()
        || !layout.header_columns.is_empty()
    {
        return None;
    }
    let string_key = match layout.key_columns.as_slice() {
        [] => false,
        [k] if layout.key_format.format == Format::Kafka && k.ty == SqlType::String => true,
        _ => return None,
    };
    let fields = schema.fields();
    let keys = layout.key_columns.len();
    if fields.len() != 3 + keys + layout.value_columns.len()
        || fields[0].data_type() != &DataType::Int64
        || fields[1].data_type() != &DataType::Int32
        || fields[2].data_type() != &DataType::Int64
    {
        return None;
    }
    let n = records.len();
    let mut rowtime = Prim::<Int64Type>::with_capacity(n);
    let mut partition = Prim::<Int32Type>::with_capacity(n);
    let mut offset = Prim::<Int64Type>::with_capacity(n);
    let mut key = if string_key {
        if fields[3].data_type() != &DataType::Utf8 {
            return None;
        }
        Some(StringBuilder::with_capacity(n, n * 8))
    } else {
        None
    };
    let mut values: Vec<Builder> = layout
        .value_columns
        .iter()
        .zip(&fields[3 + keys..])
        .map(|(c, f)| Builder::new(f.data_type(), &c.ty, n))
        .collect::<Option<_>>()?;
    for r in records {
        value(r.record.value.as_deref()?, &mut values)?;
        if let Some(k) = key.as_mut() {
            match r.record.key.as_deref() {
                None => k.append_null(),
                Some(bytes) => k.append_value(std::str::from_utf8(bytes).ok()?),
            }
        }
        rowtime.append_value(r.record.timestamp);
        partition.append_value(i32::try_from(r.partition).ok()?);
        offset.append_value(i64::try_from(r.offset).ok()?);
    }
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(rowtime.finish()),
        Arc::new(partition.finish()),
        Arc::new(offset.finish()),
    ];
    if let Some(mut k) = key {
        columns.push(Arc::new(k.finish()));
    }
    columns.extend(values.into_iter().map(Builder::finish));
    RecordBatch::try_new(schema.clone(), columns).ok()
}

#[cfg(test)]
mod tests {
    use weir_log::StoredRecord;

    use crate::layout::Layout;

    /// Flat columns of each scalar type, with a string key or without.
    fn layout(key: bool) -> Layout {
        crate::differential::flat_json_layouts().swap_remove(if key { 0 } else { 1 })
    }

    fn records(values: &[&str]) -> Vec<StoredRecord> {
        crate::differential::stored(values, 1, 10)
    }

    /// Whatever it takes, it decodes exactly as the general path; the rest it leaves.
    #[test]
    fn the_fast_path_agrees_with_the_general_one_or_declines() {
        let taken = [
            r#"{"B": true, "I": 1, "L": 2, "D": 3.5, "S": "x"}"#,
            r#"{"b": false, "i": -7, "l": 9007199254740993, "d": 1, "s": "é\"\n"}"#,
            r#"{"S": "exact", "s": "loose", "EXTRA": {"nested": [1, 2, {"x": null}]}}"#,
            r#"{"d": 1e300, "D": -0.0, "I": 2.9, "L": -3.7}"#,
            r#"{}"#,
            r#"{"B": null, "I": null, "L": null, "D": null, "S": null}"#,
            r#"  {"D": 0.1, "D2": "x"}  "#,
            r#"{"\u0044": 2.5, "S\u0000": "not S"}"#, // escaped names: owned, not borrowed
        ];
        let declined = [
            r#"{"I": "12"}"#,       // a string for a number: the general path converts
            r#"{"S": 12}"#,         // a number for a string
            r#"{"I": 3000000000}"#, // out of INT's range: an error there
            r#"{"B": "true"}"#,
            r#"{"S": [1]}"#,
            r#"{"I": 1, "I": 2}"#, // duplicate field
            r#"null"#,
            r#"[1, 2]"#,
            r#"{"I": 1"#, // bad JSON
            r#"{"I": 1} x"#,
        ];
        for key in [false, true] {
            let l = layout(key);
            let schema = l.schema();
            let all = records(&taken);
            let fast = super::decode(&l, &schema, &all).expect("taken");
            let general = l.decode_general(&schema, &all);
            assert!(general.errors.is_empty());
            assert_eq!(fast, general.batch);
            for d in declined {
                let mut batch = records(&taken);
                batch.extend(records(&[d]));
                assert!(super::decode(&l, &schema, &batch).is_none(), "{d}");
                // And the engine's entry point still decodes what the general path does.
                let (a, b) = (l.decode(&schema, &batch), l.decode_general(&schema, &batch));
                assert_eq!(a.batch, b.batch);
                assert_eq!(a.errors, b.errors);
            }
        }
    }

    /// With each layout of `json_layouts` that has a column `column` (with a key and
    /// without): the `taken` records are decoded by the fast path as by the general one;
    /// each of the `declined` in a batch after them makes the fast path give the batch
    /// back, and the entry point then decodes it as the general path does.
    fn taken_and_declined(column: &str, taken: &[&str], declined: &[&str]) {
        let layouts: Vec<Layout> = crate::differential::json_layouts()
            .into_iter()
            .filter(|l| l.value_columns.iter().any(|c| c.name == column))
            .collect();
        assert_eq!(layouts.len(), 2);
        for l in layouts {
            let schema = l.schema();
            let all = records(taken);
            let fast = super::decode(&l, &schema, &all).expect("taken");
            let general = l.decode_general(&schema, &all);
            assert!(general.errors.is_empty(), "{:?}", general.errors);
            assert_eq!(fast, general.batch);
            for d in declined {
                let mut batch = records(taken);
                batch.extend(records(&[*d]));
                assert!(super::decode(&l, &schema, &batch).is_none(), "{d}");
                let (a, b) = (l.decode(&schema, &batch), l.decode_general(&schema, &batch));
                assert_eq!(a.batch, b.batch, "{d}");
                assert_eq!(a.errors, b.errors, "{d}");
            }
        }
    }

    /// ARRAY columns of flat types: arrays of their items' own JSON type (or null items,
    /// or a null or missing array) are taken, as the general path decodes them; items
    /// the general path might read another way, or nested ones, it leaves.
    #[test]
    fn arrays_of_flat_items_are_taken_as_the_general_path_reads_them() {
        let taken = [
            r#"{"A": [1.5, -2, null, 1e300], "N": [9007199254740993, -1], "T": ["x", null, ""]}"#,
            r#"{"a": [], "N": null, "t": ["é"], "D": 0.1}"#,
            r#"{"B": true, "EXTRA": [[1], {"x": 2}]}"#,
            r#"{"A":[ 0.30000000000000004 ,5e-324],"T":[ "a" , "b" ]}"#,
            r#"{"A": [18446744073709551615, 9223372036854775807]}"#,
        ];
        let declined = [
            r#"{"N": [1.5]}"#,   // a fraction in an integer
            r#"{"N": ["12"]}"#,  // a number in a string
            r#"{"T": [12]}"#,    // a number for a string
            r#"{"A": [[1.5]]}"#, // nested
            r#"{"A": [{}]}"#,
            r#"{"A": 1.5}"#,  // not an array
            r#"{"S": [1]}"#,  // an array for a string
            r#"{"A": [1,]}"#, // bad JSON
        ];
        taken_and_declined("N", &taken, &declined);
    }

    /// STRUCT and MAP columns of flat types: objects of their fields' own JSON types (or
    /// null fields, or a null or missing object) are taken, as the general path decodes
    /// them — a struct's fields by exact name, else the first in any case; a map's entries
    /// in the object's order; what the general path might read another way it leaves.
    #[test]
    fn structs_and_maps_of_flat_fields_are_taken_as_the_general_path_reads_them() {
        let taken = [
            r#"{"R": {"X": 1.5, "Yy": "a", "Z": 7}, "M": {"b": 2, "a": -1.5e3, "c": null}}"#,
            r#"{"r": {"x": 2, "YY": "b", "W": [1, {}]}, "m": {"a": 1, "A": 2}}"#,
            r#"{"R": {"Yy": "exact"}, "M": null, "A": [1]}"#,
            r#"{"R": {}, "M": {"": 0, "X ": 1}}"#,
            r#"{"R": null}"#,
            r#"{"B": true, "EXTRA": {"x": {"y": 1}}}"#,
        ];
        let declined = [
            r#"{"R": {"X": "1.5"}}"#,       // a number in a string
            r#"{"R": {"Z": 1.5}}"#,         // a fraction in an integer
            r#"{"R": {"X": 1, "X": 2}}"#,   // a name twice
            r#"{"R": {"yy": 1, "YY": 2}}"#, // a name twice in any case
            r#"{"R": {"X": {"n": 1}}}"#,    // nested
            r#"{"R": [1]}"#,                // not an object
            r#"{"M": {"a": 1, "a": 2}}"#,   // a key twice
            r#"{"M": {"a": "1"}}"#,         // a number in a string
            r#"{"M": {"a": [1]}}"#,         // nested
            r#"{"M": "x"}"#,                // not an object
            r#"{"R": {"X": 1,}}"#,          // bad JSON
        ];
        taken_and_declined("R", &taken, &declined);
    }
}
