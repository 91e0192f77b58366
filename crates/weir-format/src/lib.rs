//! `weir-format` turns the bytes of log records into Arrow [`RecordBatch`]es with a
//! source's declared columns, and batches back into record bytes, by ksqlDB's rules:
//! key columns from the record key, value columns from the value, the pseudo-columns
//! `ROWTIME`, `ROWPARTITION` and `ROWOFFSET`, JSON field names matched regardless of case,
//! single values unwrapped where ksqlDB unwraps them. A record that does not decode is
//! reported with its partition, offset and reason, and the rest of the batch goes on.
//!
//! Every format goes through one intermediate, a JSON value per column, so type
//! conversion to and from Arrow lives in one place ([`convert`]).

pub mod avro;
pub mod compat;
pub mod convert;
mod delimited;
pub mod differential;
mod fastavro;
mod fastjson;
mod json;
mod kafka;
mod layout;
pub mod protobuf;
pub mod registry;
pub mod sr;

pub use layout::{
    Column, DecodeError, Decoded, Format, FormatError, FormatSpec, HeaderColumn, Layout,
    PSEUDO_COLUMNS,
};

pub use convert::arrow_type;
