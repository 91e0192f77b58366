//! The common case decoded straight into Arrow: a JSON object value of flat columns
//! (BOOLEAN, INT, BIGINT, DOUBLE, STRING) or ARRAYs of them, and no key or a KAFKA
//! STRING key. (An array's items — and, beside an ARRAY column, every column's value,
//! since the general path then reads them all through arrow-json — are taken only as
//! their own JSON type or null: what the general path might read another way, a number
//! in a string or a fraction in an integer, it decides.) Each record's
//! object is read once, by the scanner in `scan.rs` or, where it declines, with
//! serde_json's streaming deserializer; fields the query does not declare are read as
//! the general path reads them but not kept, no `Value` or map is built.
//!
//! It only takes what it can decode exactly as the general path would; anything else (a
//! value of another JSON type than its column's, duplicate fields, a record that is not an
//! object, bad JSON) makes it give the whole batch back to the general path, which also
//! reports the bad records.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int32Builder, Int64Builder, StringBuilder,
};
use arrow::datatypes::{DataType, SchemaRef};
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
    /// An object, or an array with an object in it: not for these columns.
    Nested,
}

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

/// A field's value: a scalar, or an array whose items (scalars; an array or object among
/// them reads as [`Scalar::Nested`]) go to the record's item list.
struct ValueSeed<'x, 'de>(&'x mut Vec<Scalar<'de>>);

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
            self.0.push(item);
        }
        Ok(items_at(start, self.0.len()))
    }
    fn visit_map<A: MapAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
        ScalarVisitor.visit_map(a)
    }
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_, 'de> {
    type Value = Scalar<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

/// The array of a record's items `start..end` (past `u32`'s range: one the general path
/// must read, as an object would be).
fn items_at<'de>(start: usize, end: usize) -> Scalar<'de> {
    match (u32::try_from(start), u32::try_from(end - start)) {
        (Ok(s), Ok(n)) => Scalar::Items(s, n),
        _ => Scalar::Nested,
    }
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

/// A column's builder; `push` takes a scalar as the general path would convert it, or
/// says no.
pub(crate) enum Builder {
    Bool(BooleanBuilder),
    Int(Int32Builder),
    Bigint(Int64Builder),
    Double(Float64Builder),
    Str(StringBuilder),
    /// An ARRAY of one of the flat types (JSON only): its items' builder, where each
    /// row's items end, and which rows are null.
    List {
        item: arrow::datatypes::FieldRef,
        items: Box<Builder>,
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
            (DataType::Int32, SqlType::Int) => Builder::Int(Int32Builder::with_capacity(n)),
            (DataType::Int64, SqlType::Bigint) => Builder::Bigint(Int64Builder::with_capacity(n)),
            (DataType::Float64, SqlType::Double) => {
                Builder::Double(Float64Builder::with_capacity(n))
            }
            (DataType::Utf8, SqlType::String) => {
                Builder::Str(StringBuilder::with_capacity(n, n * 8))
            }
            (DataType::List(item), SqlType::Array(t)) => {
                let items = Builder::new(item.data_type(), t, n * 4)?;
                if matches!(items, Builder::List { .. }) {
                    return None;
                }
                let mut ends = Vec::with_capacity(n + 1);
                ends.push(0);
                Builder::List {
                    item: item.clone(),
                    items: Box::new(items),
                    ends,
                    nulls: arrow::array::builder::NullBufferBuilder::new(n),
                }
            }
            _ => return None,
        })
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

    /// Appends `v` beside an ARRAY column, where the general path reads every column
    /// through arrow-json: an array of `items` (the record's item list) to an ARRAY
    /// column, and to the others a value only of its column's own JSON type; false when
    /// the general path must decide.
    fn push_strict(&mut self, v: Option<&Scalar>, items: &[Scalar]) -> bool {
        let Builder::List {
            items: into,
            ends,
            nulls,
            ..
        } = self
        else {
            return match v {
                Some(v) => self.push_item(v),
                None => self.push(None),
            };
        };
        let end = *ends.last().expect("starts with 0");
        match v {
            None | Some(Scalar::Null) => nulls.append_null(),
            Some(Scalar::Items(from, n)) => {
                let (from, n) = (*from as usize, *n as usize);
                if !items[from..from + n]
                    .iter()
                    .all(|item| into.push_item(item))
                {
                    return false;
                }
                let Some(next) = i32::try_from(n).ok().and_then(|n| end.checked_add(n)) else {
                    return false;
                };
                ends.push(next);
                nulls.append_non_null();
                return true;
            }
            Some(_) => return false,
        }
        ends.push(end);
        true
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
            Builder::Int(mut b) => Arc::new(b.finish()),
            Builder::Bigint(mut b) => Arc::new(b.finish()),
            Builder::Double(mut b) => Arc::new(b.finish()),
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
        }
    }
}

/// Collects one record's fields by column: an exact name wins over a case-insensitive
/// one, and the first case-insensitive match over later ones (as the general path).
struct Fields<'a, 'de> {
    names: &'a [String],
    exact: Vec<Option<Scalar<'de>>>,
    loose: Vec<Option<Scalar<'de>>>,
    /// The items of the record's arrays, each array's in a run ([`Scalar::Items`]).
    items: Vec<Scalar<'de>>,
    duplicate: bool,
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
    let strict = layout
        .value_columns
        .iter()
        .any(|c| matches!(c.ty, SqlType::Array(_)));
    let mut fields_of = Fields {
        names: &names,
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
    let mut rowtime = Int64Builder::with_capacity(n);
    let mut partition = Int32Builder::with_capacity(n);
    let mut offset = Int64Builder::with_capacity(n);
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
        let layouts: Vec<Layout> = crate::differential::json_layouts()
            .into_iter()
            .filter(|l| l.value_columns.len() > 5)
            .collect();
        assert_eq!(layouts.len(), 2);
        for l in layouts {
            let schema = l.schema();
            let all = records(&taken);
            let fast = super::decode(&l, &schema, &all).expect("taken");
            let general = l.decode_general(&schema, &all);
            assert!(general.errors.is_empty(), "{:?}", general.errors);
            assert_eq!(fast, general.batch);
            for d in declined {
                let mut batch = records(&taken);
                batch.extend(records(&[d]));
                assert!(super::decode(&l, &schema, &batch).is_none(), "{d}");
                let (a, b) = (l.decode(&schema, &batch), l.decode_general(&schema, &batch));
                assert_eq!(a.batch, b.batch, "{d}");
                assert_eq!(a.errors, b.errors, "{d}");
            }
        }
    }
}
