//! Columns in arrow's row format: one row of bytes per record, compared and hashed as
//! bytes, and turned back into arrays with one call per batch. Operator state (join
//! buffers and table rows, aggregates' kept arguments) holds rows this way.

use arrow::array::ArrayRef;
use arrow::datatypes::DataType;
use arrow::row::{RowConverter, Rows, SortField};

use crate::error::Result;

#[derive(Debug)]
pub(crate) struct RowCodec {
    types: Vec<DataType>,
    converter: RowConverter,
    /// A row of nulls in every column.
    null_row: Box<[u8]>,
}

impl Clone for RowCodec {
    fn clone(&self) -> RowCodec {
        RowCodec::new(&self.types).expect("the same types convert")
    }
}

impl RowCodec {
    pub fn new(types: &[DataType]) -> Result<RowCodec> {
        let fields: Vec<SortField> = types.iter().map(|t| SortField::new(t.clone())).collect();
        let converter = RowConverter::new(fields)?;
        let null_row = if types.is_empty() {
            Box::default()
        } else {
            let nulls: Vec<ArrayRef> = types
                .iter()
                .map(|t| arrow::array::new_null_array(t, 1))
                .collect();
            converter.convert_columns(&nulls)?.row(0).as_ref().into()
        };
        Ok(RowCodec {
            types: types.to_vec(),
            converter,
            null_row,
        })
    }

    /// Columns as rows (each cast to the codec's type when it differs).
    pub fn encode(&self, columns: &[ArrayRef]) -> Result<Rows> {
        let cast: Vec<ArrayRef> = columns
            .iter()
            .zip(&self.types)
            .map(|(c, t)| crate::types::cast_to(c.clone(), t))
            .collect::<Result<_>>()?;
        Ok(self.converter.convert_columns(&cast)?)
    }

    /// Rows back into columns.
    pub fn decode<'a>(&self, rows: impl Iterator<Item = &'a [u8]>) -> Result<Vec<ArrayRef>> {
        let parser = self.converter.parser();
        Ok(self.converter.convert_rows(rows.map(|r| parser.parse(r)))?)
    }

    pub fn null_row(&self) -> &[u8] {
        &self.null_row
    }
}
