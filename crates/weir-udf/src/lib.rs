//! Write Weir user functions as plain Rust and load them into a running server.
//!
//! ```ignore
//! use weir_udf::udf;
//!
//! #[udf(description = "Multiplies two integers")]
//! fn multiply(a: i64, b: i64) -> i64 {
//!     a * b
//! }
//!
//! weir_udf::export_plugin! {
//!     library: "multiply",
//!     version: env!("CARGO_PKG_VERSION"),
//!     author: "you",
//!     description: "Arithmetic",
//!     scalars: [multiply],
//!     aggregates: [],
//! }
//! ```
//!
//! Build the crate as a `cdylib` and drop the `.so` into the server's plugin folder.
//!
//! # The ABI (version [`ABI_VERSION`])
//!
//! A plugin is a shared library exporting these C symbols (`export_plugin!` writes them):
//!
//! | symbol | what it does |
//! |---|---|
//! | `uint32_t weir_udf_abi_version(void)` | the ABI version it was built for |
//! | `const char *weir_udf_metadata(void)` | its self-description, JSON (below), static |
//! | `int32_t weir_udf_configure(const char *json, char **err)` | config keys, before any call |
//! | `int32_t weir_udf_invoke(uint32_t f, FFI_ArrowArray *args, const FFI_ArrowSchema *schemas, uint32_t n, uint64_t rows, FFI_ArrowArray *out, FFI_ArrowSchema *out_schema, char **err)` | scalar `f` over one batch |
//! | `void *weir_udf_agg_new(uint32_t f)` | a fresh aggregate state |
//! | `int32_t weir_udf_agg_update(void *s, FFI_ArrowArray *args, const FFI_ArrowSchema *schemas, uint32_t n, char **err)` | fold a batch in |
//! | `int32_t weir_udf_agg_state(void *s, uint8_t **bytes, uint64_t *len, char **err)` | the state, serialized |
//! | `int32_t weir_udf_agg_merge(void *s, const uint8_t *bytes, uint64_t len, char **err)` | merge a serialized state |
//! | `int32_t weir_udf_agg_result(void *s, FFI_ArrowArray *out, FFI_ArrowSchema *out_schema, char **err)` | the result, a one-row array |
//! | `void weir_udf_agg_free(void *s)`, `void weir_udf_free_bytes(uint8_t *, uint64_t)`, `void weir_udf_free_string(char *)` | release |
//! | `int32_t weir_udf_take_warnings(char **json)` (optional) | the row warnings of this thread's last `weir_udf_invoke`: a JSON array of `{"row", "message"}`, or NULL for none |
//!
//! A row warning ([`row_warning`]) is how a function says "this row's input was bad, I
//! returned NULL for it" without failing the batch: the server sends each to the
//! processing log.
//!
//! Calls return 0 on success; otherwise non-zero with `*err` set to a message the host
//! frees with `weir_udf_free_string`. Argument arrays are moved into the plugin (it
//! releases them); result arrays are moved out to the host. A panic inside a function is
//! caught at the boundary and returned as an error: it never unwinds into the host.
//!
//! Metadata: `{"abi": 1, "library", "version", "author", "description", "scalars": [{"name",
//! "description", "args": [{"name", "type"}], "returns", "variadic", "deterministic",
//! "config": [..]}], "aggregates": [same]}`; a function's index is its place in its list.
//! Types are ksqlDB's: `INTEGER`, `BIGINT`, `DOUBLE`, `BOOLEAN`, `STRING`, `ARRAY<DOUBLE>`, ...

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

pub use arrow;
use arrow::array::{
    Array, ArrayRef, BooleanArray, BooleanBuilder, Float64Array, Float64Builder, Int32Array,
    Int32Builder, Int64Array, Int64Builder, ListArray, ListBuilder, StringArray, StringBuilder,
};
use arrow::datatypes::{DataType, Field};
pub use weir_udf_macros::udf;

pub mod ffi;

/// The plugin ABI this SDK builds; the host refuses plugins of another.
pub const ABI_VERSION: u32 = 1;

/// Evaluates a scalar function over one batch: the argument arrays and the row count.
pub type InvokeFn = fn(&[ArrayRef], usize) -> Result<ArrayRef, String>;

/// A scalar function as a plugin exports it.
#[derive(Clone)]
pub struct ScalarDef {
    pub name: &'static str,
    pub description: &'static str,
    /// Argument names and ksqlDB types.
    pub args: Vec<(&'static str, &'static str)>,
    pub returns: &'static str,
    pub variadic: bool,
    pub deterministic: bool,
    /// Config keys it reads (`weir.functions.<name>.<key>`).
    pub config: Vec<&'static str>,
    pub invoke: InvokeFn,
}

/// The running state of an aggregate over one group.
pub trait Aggregate: Send + 'static {
    /// Folds one batch of argument rows in.
    fn update(&mut self, args: &[ArrayRef]) -> Result<(), String>;
    /// The state as bytes (for merging, and for checkpoints).
    fn state(&self) -> Vec<u8>;
    /// Merges another state of the same function, as `state` wrote it.
    fn merge(&mut self, state: &[u8]) -> Result<(), String>;
    /// The result: an array of one row.
    fn result(&self) -> Result<ArrayRef, String>;
}

/// An aggregate function as a plugin exports it.
#[derive(Clone)]
pub struct AggregateDef {
    pub name: &'static str,
    pub description: &'static str,
    pub args: Vec<(&'static str, &'static str)>,
    pub returns: &'static str,
    pub config: Vec<&'static str>,
    pub new: fn() -> Box<dyn Aggregate>,
}

/// What a plugin library holds.
pub struct Plugin {
    pub library: &'static str,
    pub version: &'static str,
    pub author: &'static str,
    pub description: &'static str,
    pub scalars: Vec<ScalarDef>,
    pub aggregates: Vec<AggregateDef>,
}

impl Plugin {
    /// The self-description the host reads (`weir_udf_metadata`).
    pub fn metadata(&self) -> serde_json::Value {
        use serde_json::json;
        let args = |args: &[(&str, &str)]| {
            args.iter()
                .map(|(n, t)| json!({"name": n, "type": t}))
                .collect::<Vec<_>>()
        };
        json!({
            "abi": ABI_VERSION,
            "library": self.library,
            "version": self.version,
            "author": self.author,
            "description": self.description,
            "scalars": self.scalars.iter().map(|s| json!({
                "name": s.name, "description": s.description, "args": args(&s.args),
                "returns": s.returns, "variadic": s.variadic,
                "deterministic": s.deterministic, "config": s.config,
            })).collect::<Vec<_>>(),
            "aggregates": self.aggregates.iter().map(|a| json!({
                "name": a.name, "description": a.description, "args": args(&a.args),
                "returns": a.returns, "variadic": false, "deterministic": true,
                "config": a.config,
            })).collect::<Vec<_>>(),
        })
    }
}

thread_local! {
    static WARNINGS: std::cell::RefCell<Vec<(usize, String)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Records that `row` of the batch being computed had bad input (the function returns
/// NULL or a fallback for it). The server puts the message in its processing log; the
/// batch goes on.
pub fn row_warning(row: usize, message: impl Into<String>) {
    WARNINGS.with(|w| w.borrow_mut().push((row, message.into())));
}

pub(crate) fn clear_warnings() {
    WARNINGS.with(|w| w.borrow_mut().clear());
}

pub(crate) fn drain_warnings() -> Vec<(usize, String)> {
    WARNINGS.with(|w| std::mem::take(&mut *w.borrow_mut()))
}

/// Parses numbers separated by `separator`, each trimmed (`"1.5# 2 #3"`): how plugins
/// that take readings as delimited text (the demo's `r1#...#r210`) read them. An error
/// names the first value, by its 1-based position and `what` it is, that is not a finite
/// number.
pub fn parse_numbers(text: &str, separator: char, what: &str) -> Result<Vec<f64>, String> {
    // (A whitespace separator is also what a field's padding is: the general path.)
    if let Ok(sep) = u8::try_from(separator)
        && sep.is_ascii()
        && !sep.is_ascii_whitespace()
        && let Some(values) = plain_decimals(text.as_bytes(), sep)
    {
        return Ok(values);
    }
    let mut out = Vec::new();
    for (i, part) in text.split(separator).enumerate() {
        let part = part.trim();
        let v = match plain_decimal(part.as_bytes()) {
            Some(v) => v,
            None => part.parse().map_err(|_| {
                let shown: String = part.chars().take(20).collect();
                format!("{what} {} is not a number: '{shown}'", i + 1)
            })?,
        };
        if !v.is_finite() {
            return Err(format!("{what} {} is not finite", i + 1));
        }
        out.push(v);
    }
    Ok(out)
}

/// [`parse_numbers`]' fast path, in one pass over the bytes: every field
/// `[+-]digits[.digits]` between ASCII whitespace, whose digits form an integer of at most
/// 2^53 with at most 22 of them after the point, read as it is scanned and computed as
/// Clinger's fast path does (the integer and the power of ten are exact doubles, so one
/// division rounds correctly, to what `str::parse` gives). `None` as soon as a field is
/// anything else (exponents, `inf`, long mantissas); the general path then parses the
/// text again (and names what is wrong).
fn plain_decimals(bytes: &[u8], separator: u8) -> Option<Vec<f64>> {
    const POW10: [f64; 23] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
        1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
    ];
    // At least two bytes a field (a digit and a separator): room for all, no count pass.
    let mut out = Vec::with_capacity(bytes.len() / 2 + 1);
    let n = bytes.len();
    let mut i = 0;
    loop {
        while i < n && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let negative = match bytes.get(i) {
            Some(b'-') => {
                i += 1;
                true
            }
            Some(b'+') => {
                i += 1;
                false
            }
            _ => false,
        };
        // Wrapping: a mantissa of more than 19 digits is refused below anyway.
        let (mut mantissa, mut digits) = (0u64, 0usize);
        while i < n {
            let d = bytes[i].wrapping_sub(b'0');
            if d > 9 {
                break;
            }
            mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(d));
            digits += 1;
            i += 1;
        }
        let mut after_point = 0;
        if i < n && bytes[i] == b'.' {
            i += 1;
            let start = i;
            while i < n {
                let d = bytes[i].wrapping_sub(b'0');
                if d > 9 {
                    break;
                }
                mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(d));
                i += 1;
            }
            after_point = i - start;
            digits += after_point;
        }
        if digits == 0 || digits > 19 || mantissa > 1 << 53 || after_point >= POW10.len() {
            return None;
        }
        let v = mantissa as f64 / POW10[after_point];
        out.push(if negative { -v } else { v });
        while i < n && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        match bytes.get(i) {
            None => return Some(out),
            Some(c) if *c == separator => i += 1,
            Some(_) => return None,
        }
    }
}

/// One field as [`plain_decimals`] reads it (the general path's first try).
fn plain_decimal(bytes: &[u8]) -> Option<f64> {
    match plain_decimals(bytes, b'\n')?.as_slice() {
        [v] => Some(*v),
        _ => None,
    }
}

static CONFIG: OnceLock<RwLock<HashMap<String, String>>> = OnceLock::new();

fn config_map() -> &'static RwLock<HashMap<String, String>> {
    CONFIG.get_or_init(|| RwLock::new(HashMap::new()))
}

/// A config value the server passed at load: `weir.functions.<function>.<key>` in the
/// server's properties. `function` is matched case-insensitively.
pub fn config(function: &str, key: &str) -> Option<String> {
    config_map()
        .read()
        .ok()?
        .get(&format!("{}.{key}", function.to_ascii_lowercase()))
        .cloned()
}

pub(crate) fn set_config(values: HashMap<String, String>) {
    if let Ok(mut m) = config_map().write() {
        *m = values
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
    }
}

/// The Arrow type a ksqlDB type name stands for.
pub fn arrow_type(sql: &str) -> Option<DataType> {
    let t = sql.trim().to_ascii_uppercase();
    Some(match t.as_str() {
        "INT" | "INTEGER" => DataType::Int32,
        "BIGINT" => DataType::Int64,
        "DOUBLE" => DataType::Float64,
        "BOOLEAN" => DataType::Boolean,
        "STRING" | "VARCHAR" => DataType::Utf8,
        _ => {
            let inner = t.strip_prefix("ARRAY<")?.strip_suffix('>')?;
            DataType::List(Arc::new(Field::new("item", arrow_type(inner)?, true)))
        }
    })
}

/// A Rust type a `#[udf]` function takes: how to read it from an argument array.
pub trait SqlArg<'a>: Sized {
    const SQL: &'static str;
    type Array: 'a;
    fn downcast(array: &'a ArrayRef) -> Result<Self::Array, String>;
    /// The value at `row`, `None` when null.
    fn get(array: &Self::Array, row: usize) -> Option<Self>;
}

/// A Rust type a `#[udf]` function returns: how to build the result array.
pub trait SqlRet: Sized {
    const SQL: &'static str;
    type Builder;
    fn builder(rows: usize) -> Self::Builder;
    fn push(builder: &mut Self::Builder, value: Option<Self>);
    fn finish(builder: Self::Builder) -> ArrayRef;
}

fn wrong_type(array: &ArrayRef, sql: &str) -> String {
    format!("expected a {sql} argument, got {}", array.data_type())
}

macro_rules! primitive {
    ($t:ty, $sql:literal, $array:ty, $builder:ty) => {
        impl<'a> SqlArg<'a> for $t {
            const SQL: &'static str = $sql;
            type Array = &'a $array;
            fn downcast(array: &'a ArrayRef) -> Result<Self::Array, String> {
                array
                    .as_any()
                    .downcast_ref::<$array>()
                    .ok_or_else(|| wrong_type(array, $sql))
            }
            fn get(array: &Self::Array, row: usize) -> Option<Self> {
                (!array.is_null(row)).then(|| array.value(row))
            }
        }
        impl SqlRet for $t {
            const SQL: &'static str = $sql;
            type Builder = $builder;
            fn builder(rows: usize) -> Self::Builder {
                <$builder>::with_capacity(rows)
            }
            fn push(builder: &mut Self::Builder, value: Option<Self>) {
                builder.append_option(value)
            }
            fn finish(mut builder: Self::Builder) -> ArrayRef {
                Arc::new(builder.finish())
            }
        }
    };
}

primitive!(i32, "INTEGER", Int32Array, Int32Builder);
primitive!(i64, "BIGINT", Int64Array, Int64Builder);
primitive!(f64, "DOUBLE", Float64Array, Float64Builder);

impl<'a> SqlArg<'a> for bool {
    const SQL: &'static str = "BOOLEAN";
    type Array = &'a BooleanArray;
    fn downcast(array: &'a ArrayRef) -> Result<Self::Array, String> {
        array
            .as_any()
            .downcast_ref::<BooleanArray>()
            .ok_or_else(|| wrong_type(array, "BOOLEAN"))
    }
    fn get(array: &Self::Array, row: usize) -> Option<Self> {
        (!array.is_null(row)).then(|| array.value(row))
    }
}

impl SqlRet for bool {
    const SQL: &'static str = "BOOLEAN";
    type Builder = BooleanBuilder;
    fn builder(rows: usize) -> Self::Builder {
        BooleanBuilder::with_capacity(rows)
    }
    fn push(builder: &mut Self::Builder, value: Option<Self>) {
        builder.append_option(value)
    }
    fn finish(mut builder: Self::Builder) -> ArrayRef {
        Arc::new(builder.finish())
    }
}

impl<'a> SqlArg<'a> for &'a str {
    const SQL: &'static str = "STRING";
    type Array = &'a StringArray;
    fn downcast(array: &'a ArrayRef) -> Result<Self::Array, String> {
        array
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| wrong_type(array, "STRING"))
    }
    fn get(array: &Self::Array, row: usize) -> Option<Self> {
        (!array.is_null(row)).then(|| array.value(row))
    }
}

impl<'a> SqlArg<'a> for String {
    const SQL: &'static str = "STRING";
    type Array = &'a StringArray;
    fn downcast(array: &'a ArrayRef) -> Result<Self::Array, String> {
        <&str as SqlArg>::downcast(array)
    }
    fn get(array: &Self::Array, row: usize) -> Option<Self> {
        (!array.is_null(row)).then(|| array.value(row).to_string())
    }
}

impl SqlRet for String {
    const SQL: &'static str = "STRING";
    type Builder = StringBuilder;
    fn builder(rows: usize) -> Self::Builder {
        StringBuilder::with_capacity(rows, rows * 8)
    }
    fn push(builder: &mut Self::Builder, value: Option<Self>) {
        builder.append_option(value)
    }
    fn finish(mut builder: Self::Builder) -> ArrayRef {
        Arc::new(builder.finish())
    }
}

impl<'a> SqlArg<'a> for Vec<f64> {
    const SQL: &'static str = "ARRAY<DOUBLE>";
    type Array = &'a ListArray;
    fn downcast(array: &'a ArrayRef) -> Result<Self::Array, String> {
        array
            .as_any()
            .downcast_ref::<ListArray>()
            .filter(|l| l.value_type() == DataType::Float64)
            .ok_or_else(|| wrong_type(array, "ARRAY<DOUBLE>"))
    }
    fn get(array: &Self::Array, row: usize) -> Option<Self> {
        if array.is_null(row) {
            return None;
        }
        let values = array.value(row);
        let values = values.as_any().downcast_ref::<Float64Array>()?;
        Some(values.iter().map(|v| v.unwrap_or(f64::NAN)).collect())
    }
}

impl SqlRet for Vec<f64> {
    const SQL: &'static str = "ARRAY<DOUBLE>";
    type Builder = ListBuilder<Float64Builder>;
    fn builder(rows: usize) -> Self::Builder {
        ListBuilder::with_capacity(Float64Builder::new(), rows)
    }
    fn push(builder: &mut Self::Builder, value: Option<Self>) {
        match value {
            Some(v) => {
                builder.values().append_slice(&v);
                builder.append(true);
            }
            None => builder.append(false),
        }
    }
    fn finish(mut builder: Self::Builder) -> ArrayRef {
        Arc::new(builder.finish())
    }
}

/// Declares the plugin: its library name, version, author, description, and the
/// functions it exports (the names of `#[udf]` functions and of aggregate definitions).
/// Writes the ABI's C symbols.
#[macro_export]
macro_rules! export_plugin {
    (
        library: $library:expr,
        version: $version:expr,
        author: $author:expr,
        description: $description:expr,
        scalars: [$($scalar:ident),* $(,)?],
        aggregates: [$($aggregate:expr),* $(,)?] $(,)?
    ) => {
        fn __weir_plugin() -> &'static $crate::Plugin {
            static PLUGIN: ::std::sync::OnceLock<$crate::Plugin> = ::std::sync::OnceLock::new();
            PLUGIN.get_or_init(|| $crate::Plugin {
                library: $library,
                version: $version,
                author: $author,
                description: $description,
                scalars: vec![$($scalar::def()),*],
                aggregates: vec![$($aggregate),*],
            })
        }

        #[unsafe(no_mangle)]
        pub extern "C" fn weir_udf_abi_version() -> u32 {
            $crate::ABI_VERSION
        }

        #[unsafe(no_mangle)]
        pub extern "C" fn weir_udf_metadata() -> *const ::std::os::raw::c_char {
            $crate::ffi::metadata(__weir_plugin)
        }

        /// # Safety
        /// As the ABI says: a NUL-terminated JSON object, and a place for an error.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn weir_udf_configure(
            json: *const ::std::os::raw::c_char,
            err: *mut *mut ::std::os::raw::c_char,
        ) -> i32 {
            unsafe { $crate::ffi::configure(json, err) }
        }

        /// # Safety
        /// As the ABI says: `n` argument arrays and schemas, moved in.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn weir_udf_invoke(
            function: u32,
            args: *mut $crate::arrow::ffi::FFI_ArrowArray,
            schemas: *const $crate::arrow::ffi::FFI_ArrowSchema,
            n: u32,
            rows: u64,
            out: *mut $crate::arrow::ffi::FFI_ArrowArray,
            out_schema: *mut $crate::arrow::ffi::FFI_ArrowSchema,
            err: *mut *mut ::std::os::raw::c_char,
        ) -> i32 {
            unsafe { $crate::ffi::invoke(__weir_plugin(), function, args, schemas, n, rows, out, out_schema, err) }
        }

        /// # Safety
        /// `out` is a valid place for a string pointer.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn weir_udf_take_warnings(out: *mut *mut ::std::os::raw::c_char) -> i32 {
            unsafe { $crate::ffi::take_warnings(out) }
        }

        #[unsafe(no_mangle)]
        pub extern "C" fn weir_udf_agg_new(function: u32) -> *mut ::std::ffi::c_void {
            $crate::ffi::agg_new(__weir_plugin(), function)
        }

        /// # Safety
        /// As the ABI says.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn weir_udf_agg_update(
            state: *mut ::std::ffi::c_void,
            args: *mut $crate::arrow::ffi::FFI_ArrowArray,
            schemas: *const $crate::arrow::ffi::FFI_ArrowSchema,
            n: u32,
            err: *mut *mut ::std::os::raw::c_char,
        ) -> i32 {
            unsafe { $crate::ffi::agg_update(state, args, schemas, n, err) }
        }

        /// # Safety
        /// As the ABI says.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn weir_udf_agg_state(
            state: *mut ::std::ffi::c_void,
            bytes: *mut *mut u8,
            len: *mut u64,
            err: *mut *mut ::std::os::raw::c_char,
        ) -> i32 {
            unsafe { $crate::ffi::agg_state(state, bytes, len, err) }
        }

        /// # Safety
        /// As the ABI says.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn weir_udf_agg_merge(
            state: *mut ::std::ffi::c_void,
            bytes: *const u8,
            len: u64,
            err: *mut *mut ::std::os::raw::c_char,
        ) -> i32 {
            unsafe { $crate::ffi::agg_merge(state, bytes, len, err) }
        }

        /// # Safety
        /// As the ABI says.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn weir_udf_agg_result(
            state: *mut ::std::ffi::c_void,
            out: *mut $crate::arrow::ffi::FFI_ArrowArray,
            out_schema: *mut $crate::arrow::ffi::FFI_ArrowSchema,
            err: *mut *mut ::std::os::raw::c_char,
        ) -> i32 {
            unsafe { $crate::ffi::agg_result(state, out, out_schema, err) }
        }

        /// # Safety
        /// A state from `weir_udf_agg_new`, once.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn weir_udf_agg_free(state: *mut ::std::ffi::c_void) {
            unsafe { $crate::ffi::agg_free(state) }
        }

        /// # Safety
        /// Bytes from `weir_udf_agg_state`, once.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn weir_udf_free_bytes(bytes: *mut u8, len: u64) {
            unsafe { $crate::ffi::free_bytes(bytes, len) }
        }

        /// # Safety
        /// A string this plugin returned, once.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn weir_udf_free_string(s: *mut ::std::os::raw::c_char) {
            unsafe { $crate::ffi::free_string(s) }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fast path gives exactly what `str::parse` gives, bit for bit, or steps aside.
    #[test]
    fn plain_decimals_parse_exactly_as_the_standard_parser() {
        let mut cases: Vec<String> = [
            "0",
            "-0",
            "0.0",
            "+1.5",
            "1.",
            ".5",
            "-.5",
            "0.1",
            "0.30000000000000004",
            "9007199254740992",
            "9007199254740993",
            "1.7976931348623157",
            "00012.5000",
            "123456789012345678901",
            "4.9e-324",
            "1e5",
            "inf",
            "",
            "-",
            ".",
            "1.2.3",
            "1,5",
            "0.0000000000000000000001",
            "0.00000000000000000000001",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Seeded random decimals: sign, up to 12 integer and 12 fraction digits.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        for _ in 0..200_000 {
            let mut s = String::new();
            match next(3) {
                0 => s.push('-'),
                1 if next(4) == 0 => s.push('+'),
                _ => {}
            }
            for _ in 0..next(13) {
                s.push(char::from(b'0' + next(10) as u8));
            }
            if next(4) != 0 {
                s.push('.');
                for _ in 0..next(13) {
                    s.push(char::from(b'0' + next(10) as u8));
                }
            }
            cases.push(s);
        }
        let mut fast = 0;
        for case in &cases {
            let reference = case.parse::<f64>().ok();
            // Stepping aside (None) is always allowed: the general parser decides.
            if let Some(v) = plain_decimal(case.as_bytes()) {
                fast += 1;
                assert_eq!(Some(v.to_bits()), reference.map(f64::to_bits), "{case:?}");
            }
        }
        assert!(fast > cases.len() * 3 / 4, "{fast} of {}", cases.len());
    }

    /// The one-pass fast path and the field-by-field general path agree on any text.
    #[test]
    fn the_fast_path_agrees_with_the_general_one() {
        let general = |text: &str, sep: char| -> Option<Vec<u64>> {
            let mut out = Vec::new();
            for part in text.split(sep) {
                let v: f64 = part.trim().parse().ok()?;
                if !v.is_finite() {
                    return None;
                }
                out.push(v.to_bits());
            }
            Some(out)
        };
        let pieces = [
            "2.10",
            " 2.13",
            "-0.5 ",
            "7",
            "",
            " ",
            "1e3",
            "+.5",
            "x",
            "3.",
            "12345678901234567890",
            "\t4.25",
            "0.000001",
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        for _ in 0..50_000 {
            let sep = ['#', ',', ' '][next(3)];
            let text: Vec<&str> = (0..1 + next(6))
                .map(|_| pieces[next(pieces.len())])
                .collect();
            let text = text.join(&sep.to_string());
            let reference = general(&text, sep);
            if sep != ' ' {
                let fast = plain_decimals(text.as_bytes(), sep as u8)
                    .map(|v| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
                if let Some(fast) = fast {
                    assert_eq!(Some(fast), reference, "{text:?}");
                }
            }
            assert_eq!(
                parse_numbers(&text, sep, "v")
                    .ok()
                    .map(|v| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>()),
                reference,
                "{text:?}"
            );
        }
    }

    #[test]
    fn parse_numbers_names_the_first_bad_value() {
        assert_eq!(
            parse_numbers(" 1.5# -2 #3e2", '#', "reading").unwrap(),
            [1.5, -2.0, 300.0]
        );
        assert_eq!(
            parse_numbers("1#x#3", '#', "reading").unwrap_err(),
            "reading 2 is not a number: 'x'"
        );
        assert_eq!(
            parse_numbers("1#inf", '#', "reading").unwrap_err(),
            "reading 2 is not finite"
        );
    }
}
