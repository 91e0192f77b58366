//! Rows inserted as JSON objects (`/inserts-stream`): many rows at once into a stream or
//! table, each accepted or refused on its own, in order.
//!
//! Rows whose values already have their columns' types (numbers for numeric columns,
//! strings for strings, and so on, nested alike) go straight into one Arrow batch, are
//! encoded by the target's layout and appended per partition in one call: the fast path.
//! A row that needs a conversion (a string for a number, a number for a string) or is
//! refused by the batch builder goes through the statement path instead: it becomes
//! `INSERT INTO ... VALUES` with literals typed after the columns, so it gets exactly the
//! statement's checks, coercions and messages. Either way the records land in the order
//! the rows came.

use std::collections::BTreeMap;

use arrow::datatypes::{Field, Schema};
use serde_json::{Map, Value};
use weir_format::Column;
use weir_log::{Record, partition_for_key};
use weir_sql::ast::SqlType;

use crate::error::{EngineError, Result};
use crate::{Engine, now_ms};

/// Whether one row was stored, or why not.
pub type RowOutcome = std::result::Result<(), String>;

impl Engine {
    /// Inserts `rows` (JSON objects, column names case-insensitive) into stream or table
    /// `target`; one outcome per row, in order. `Err` only when the target cannot take
    /// rows at all (unknown, read-only) or the log fails.
    pub fn insert_rows(
        &mut self,
        target: &str,
        rows: Vec<Map<String, Value>>,
    ) -> Result<Vec<RowOutcome>> {
        let source = self.insert_target(target)?;
        let columns: Vec<Column> = row_columns(&source).into_iter().cloned().collect();
        let schema = row_schema(columns.iter());
        let partitions = self
            .log
            .topic(&source.topic)?
            .ok_or_else(|| EngineError::Execution(format!("topic {} is gone", source.topic)))?
            .config
            .partitions;

        let mut outcomes: Vec<RowOutcome> = Vec::with_capacity(rows.len());
        let mut i = 0;
        while i < rows.len() {
            // The longest run of rows from `i` that need no conversion.
            let mut typed_rows = Vec::new();
            while let Some(values) = rows
                .get(i + typed_rows.len())
                .and_then(|r| typed_row(&columns, r))
            {
                typed_rows.push(values);
            }
            if typed_rows.is_empty() {
                outcomes.push(self.insert_by_statement(&source.name, &columns, &rows[i]));
                i += 1;
                continue;
            }
            let n = typed_rows.len();
            let (batch, bad) = weir_format::convert::rows_to_batch(&schema, typed_rows);
            if !bad.is_empty() {
                // A row the builder refuses: the run goes row by row through statements,
                // which say why and keep the order.
                for row in &rows[i..i + n] {
                    outcomes.push(self.insert_by_statement(&source.name, &columns, row));
                }
                i += n;
                continue;
            }
            let encoded = source.layout.encode(&batch)?;
            let now = now_ms();
            let mut by_partition: BTreeMap<u32, Vec<Record>> = BTreeMap::new();
            for (key, value) in encoded {
                let partition = key
                    .as_deref()
                    .map_or(0, |k| partition_for_key(k, partitions));
                by_partition.entry(partition).or_default().push(Record {
                    key,
                    value,
                    timestamp: now,
                    headers: vec![],
                });
            }
            for (partition, records) in by_partition {
                self.log.append(&source.topic, partition, &records)?;
            }
            outcomes.extend(std::iter::repeat_n(Ok(()), n));
            i += n;
        }
        Ok(outcomes)
    }

    /// The stream or table `target`, when rows may be inserted into it.
    pub(crate) fn insert_target(&self, target: &str) -> Result<crate::Source> {
        let source = self.stream(target)?;
        if source.read_only {
            return Err(EngineError::Invalid(format!(
                "Cannot insert values into read-only {}: {target}",
                source.kind_name()
            )));
        }
        Ok(source)
    }

    /// One row through `INSERT INTO ... VALUES`.
    fn insert_by_statement(
        &mut self,
        target: &str,
        columns: &[Column],
        row: &Map<String, Value>,
    ) -> RowOutcome {
        let sql = insert_statement(target, columns, row)?;
        self.execute_sql(&sql)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// A source's key then value columns: what an inserted row holds (never its header
/// columns, which are read from records, not written).
pub(crate) fn row_columns(source: &crate::Source) -> Vec<&Column> {
    let layout = &source.layout;
    layout
        .key_columns
        .iter()
        .chain(&layout.value_columns)
        .collect()
}

/// The Arrow schema of inserted rows with these columns.
pub(crate) fn row_schema<'c>(
    columns: impl Iterator<Item = &'c Column>,
) -> arrow::datatypes::SchemaRef {
    std::sync::Arc::new(Schema::new(
        columns
            .map(|c| Field::new(&c.name, weir_format::arrow_type(&c.ty), true))
            .collect::<Vec<_>>(),
    ))
}

/// Where the column a row's field names is (exact, else upper-cased as an unquoted name
/// would be).
fn column_index(columns: &[Column], key: &str) -> Option<usize> {
    columns.iter().position(|c| c.name == key).or_else(|| {
        let upper = key.to_ascii_uppercase();
        columns.iter().position(|c| c.name == upper)
    })
}

/// The row's values in column order when every value already has its column's type
/// (missing columns null); `None` when one needs a conversion or names no column.
fn typed_row(columns: &[Column], row: &Map<String, Value>) -> Option<Vec<Value>> {
    let mut values = vec![Value::Null; columns.len()];
    for (key, value) in row {
        let i = column_index(columns, key)?;
        values[i] = typed(value, &columns[i].ty)?;
    }
    Some(values)
}

/// `value` as a column of type `ty` holds it, when no conversion is needed.
fn typed(value: &Value, ty: &SqlType) -> Option<Value> {
    Some(match (value, ty) {
        (Value::Null, _) => Value::Null,
        (Value::Bool(_), SqlType::Boolean) => value.clone(),
        (Value::Number(n), SqlType::Int) => {
            i32::try_from(n.as_i64()?).ok()?;
            value.clone()
        }
        (Value::Number(n), SqlType::Bigint) => {
            n.as_i64()?;
            value.clone()
        }
        (Value::Number(_), SqlType::Double) => value.clone(),
        (Value::String(_), SqlType::String) => value.clone(),
        (Value::Array(items), SqlType::Array(elem)) => Value::Array(
            items
                .iter()
                .map(|v| typed(v, elem))
                .collect::<Option<Vec<_>>>()?,
        ),
        (Value::Object(entries), SqlType::Map(k, v)) if **k == SqlType::String => Value::Object(
            entries
                .iter()
                .map(|(key, e)| Some((key.clone(), typed(e, v)?)))
                .collect::<Option<Map<_, _>>>()?,
        ),
        (Value::Object(entries), SqlType::Struct(fields)) => {
            let mut out = Map::new();
            for (k, e) in entries {
                let f = fields.iter().find(|f| f.name.value == *k).or_else(|| {
                    fields
                        .iter()
                        .find(|f| f.name.value == k.to_ascii_uppercase())
                })?;
                out.insert(f.name.value.clone(), typed(e, &f.ty)?);
            }
            Value::Object(out)
        }
        // Decimals, bytes, times and every conversion: the statement path.
        _ => return None,
    })
}

fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

fn quote_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `INSERT INTO `T` (`A`, ...) VALUES (...)` for one JSON row.
pub fn insert_statement(
    target: &str,
    columns: &[Column],
    row: &Map<String, Value>,
) -> std::result::Result<String, String> {
    let mut names = Vec::new();
    let mut values = Vec::new();
    for (key, value) in row {
        let column = column_index(columns, key)
            .map(|i| &columns[i])
            .ok_or_else(|| format!("Column name {key} does not exist."))?;
        names.push(quote_ident(&column.name));
        values.push(literal(value, &column.ty, &column.name)?);
    }
    Ok(format!(
        "INSERT INTO {} ({}) VALUES ({});",
        quote_ident(target),
        names.join(", "),
        values.join(", ")
    ))
}

fn literal(value: &Value, ty: &SqlType, field: &str) -> Result<String, String> {
    let mismatch = || {
        format!(
            "Can't coerce a field of type {} ({value}) into type {ty} for {field}",
            json_type(value)
        )
    };
    Ok(match (value, ty) {
        (Value::Null, _) => "NULL".into(),
        (Value::Bool(b), SqlType::Boolean) => if *b { "TRUE" } else { "FALSE" }.into(),
        (
            Value::Number(n),
            SqlType::Int | SqlType::Bigint | SqlType::Double | SqlType::Decimal { .. },
        ) => n.to_string(),
        (Value::Number(n), SqlType::Timestamp | SqlType::Date | SqlType::Time) => n.to_string(),
        (Value::Number(n), SqlType::String) => quote_str(&n.to_string()),
        (Value::Bool(b), SqlType::String) => quote_str(&b.to_string()),
        (Value::String(s), SqlType::Bytes) => format!("TO_BYTES({}, 'base64')", quote_str(s)),
        (
            Value::String(s),
            SqlType::Int | SqlType::Bigint | SqlType::Double | SqlType::Decimal { .. },
        ) => {
            s.trim().parse::<f64>().map_err(|_| mismatch())?;
            s.trim().to_string()
        }
        (Value::String(s), SqlType::Boolean) => match s.to_ascii_lowercase().as_str() {
            "true" => "TRUE".into(),
            "false" => "FALSE".into(),
            _ => return Err(mismatch()),
        },
        (Value::String(s), _)
            if !matches!(
                ty,
                SqlType::Array(_) | SqlType::Map(..) | SqlType::Struct(_)
            ) =>
        {
            quote_str(s)
        }
        (Value::Array(items), SqlType::Array(elem)) => format!(
            "ARRAY[{}]",
            items
                .iter()
                .map(|v| literal(v, elem, field))
                .collect::<Result<Vec<_>, _>>()?
                .join(", ")
        ),
        (Value::Object(entries), SqlType::Map(_, v)) => format!(
            "MAP({})",
            entries
                .iter()
                .map(|(k, e)| Ok(format!("{} := {}", quote_str(k), literal(e, v, field)?)))
                .collect::<Result<Vec<_>, String>>()?
                .join(", ")
        ),
        (Value::Object(entries), SqlType::Struct(fields)) => {
            let mut parts = Vec::new();
            for (k, e) in entries {
                let f = fields
                    .iter()
                    .find(|f| f.name.value == *k)
                    .or_else(|| {
                        fields
                            .iter()
                            .find(|f| f.name.value == k.to_ascii_uppercase())
                    })
                    .ok_or_else(|| format!("Field {k} does not exist in {field}"))?;
                parts.push(format!(
                    "{} := {}",
                    quote_ident(&f.name.value),
                    literal(e, &f.ty, field)?
                ));
            }
            format!("STRUCT({})", parts.join(", "))
        }
        _ => return Err(mismatch()),
    })
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "NULL",
        Value::Bool(_) => "BOOLEAN",
        Value::Number(_) => "NUMBER",
        Value::String(_) => "STRING",
        Value::Array(_) => "ARRAY",
        Value::Object(_) => "OBJECT",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    #[test]
    fn a_row_becomes_an_insert_with_literals_typed_after_the_columns() {
        let columns = vec![
            Column::new("ID", SqlType::Bigint),
            Column::new("NAME", SqlType::String),
            Column::new("TAGS", SqlType::Array(Box::new(SqlType::String))),
        ];
        let row: Map<String, Value> = serde_json::from_str(r#"{"id": 7, "nope": "x"}"#).unwrap();
        let err = insert_statement("S", &columns, &row).unwrap_err();
        assert!(err.contains("nope"), "{err}");
        let row: Map<String, Value> =
            serde_json::from_str(r#"{"id": 7, "Name": "o'neil", "TAGS": ["a", null]}"#).unwrap();
        assert_eq!(
            insert_statement("S", &columns, &row).unwrap(),
            "INSERT INTO `S` (`ID`, `NAME`, `TAGS`) VALUES (7, 'o''neil', ARRAY['a', NULL]);"
        );
        let row: Map<String, Value> = serde_json::from_str(r#"{"id": "x"}"#).unwrap();
        assert!(insert_statement("S", &columns, &row).is_err());
    }
}
