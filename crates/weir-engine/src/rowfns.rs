//! ksqlDB scalar functions evaluated row by row over `ScalarValue`s: the long tail of
//! string, URL, regex, JSON, date/time, byte and collection functions whose per-row work
//! dwarfs the cost of the row loop. Each function declares its overloads with ksqlDB's
//! types; arguments coerce the way ksqlDB widens them (INT to BIGINT to DOUBLE).
//!
//! A row whose evaluation fails (a date that does not parse, a bad time zone) gives NULL,
//! as ksqlDB's functions do, and the rest of the batch goes on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arrow::array::{Array, ArrayRef, ListArray, MapBuilder, MapFieldNames, StringBuilder};
use arrow::datatypes::{DataType, Field, TimeUnit};
use datafusion::common::{Result, ScalarValue, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};
use serde_json::Value as Json;

use crate::javatime::{self, Zone};

/// An argument type in a function's signature.
#[derive(Debug, Clone, Copy, PartialEq)]
enum T {
    Str,
    Int,
    Big,
    Dbl,
    Bytes,
    Date,
    Time,
    Ts,
    Arr,
    Map,
    Any,
}

fn coerce(t: T, dt: &DataType) -> Option<DataType> {
    use DataType::*;
    let int_like = matches!(dt, Int8 | Int16 | Int32 | UInt8 | UInt16);
    let big_like = int_like || matches!(dt, Int64 | UInt32);
    Some(match (t, dt) {
        (T::Any, _) => dt.clone(),
        (_, Null) => match t {
            T::Arr | T::Map => Null,
            _ => target(t),
        },
        (T::Str, Utf8 | LargeUtf8 | Utf8View) => Utf8,
        // Integer literals plan as BIGINT; ksqlDB types them INT.
        (T::Int, _) if big_like || matches!(dt, Int64) => Int32,
        (T::Big, _) if big_like => Int64,
        (T::Dbl, _) if big_like || matches!(dt, Int64 | Float32 | Float64 | Decimal128(..)) => {
            Float64
        }
        (T::Bytes, Binary | LargeBinary | BinaryView) => Binary,
        (T::Date, Date32) => Date32,
        (T::Time, Time32(_) | Time64(_)) => Time32(TimeUnit::Millisecond),
        (T::Ts, Timestamp(..)) => target(T::Ts),
        (T::Arr, List(_)) => dt.clone(),
        (T::Map, Map(..)) => dt.clone(),
        _ => return None,
    })
}

fn target(t: T) -> DataType {
    match t {
        T::Str => DataType::Utf8,
        T::Int => DataType::Int32,
        T::Big => DataType::Int64,
        T::Dbl => DataType::Float64,
        T::Bytes => DataType::Binary,
        T::Date => DataType::Date32,
        T::Time => DataType::Time32(TimeUnit::Millisecond),
        T::Ts => DataType::Timestamp(TimeUnit::Millisecond, None),
        T::Arr | T::Map | T::Any => DataType::Null,
    }
}

type RetFn = Arc<dyn Fn(&[DataType]) -> DataType + Send + Sync>;
type EvalFn = Arc<
    dyn Fn(&[ScalarValue], &DataType) -> std::result::Result<ScalarValue, String> + Send + Sync,
>;

struct Overload {
    args: Vec<T>,
    variadic: Option<T>,
    ret: RetFn,
}

/// Null handling: most functions give NULL when any argument is NULL.
#[derive(Clone, Copy, PartialEq)]
enum Nulls {
    Propagate,
    Pass,
}

pub struct RowFn {
    name: &'static str,
    signature: Signature,
    overloads: Vec<Overload>,
    nulls: Nulls,
    eval: EvalFn,
}

impl std::fmt::Debug for RowFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowFn").field("name", &self.name).finish()
    }
}
impl PartialEq for RowFn {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}
impl Eq for RowFn {}
impl std::hash::Hash for RowFn {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state)
    }
}

impl RowFn {
    fn resolve(&self, args: &[DataType]) -> Option<(&Overload, Vec<DataType>)> {
        'next: for o in &self.overloads {
            let fits = match o.variadic {
                Some(_) => args.len() >= o.args.len(),
                None => args.len() == o.args.len(),
            };
            if !fits {
                continue;
            }
            let mut out = Vec::with_capacity(args.len());
            for (i, a) in args.iter().enumerate() {
                let t = o
                    .args
                    .get(i)
                    .copied()
                    .or(o.variadic)
                    .expect("arity checked");
                match coerce(t, a) {
                    Some(c) => out.push(c),
                    None => continue 'next,
                }
            }
            return Some((o, out));
        }
        None
    }

    fn describe_args(args: &[DataType]) -> String {
        args.iter()
            .map(|t| {
                crate::types::sql_type_of(t)
                    .map(|s| s.to_string())
                    .unwrap_or_else(|_| t.to_string())
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl ScalarUDFImpl for RowFn {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        match self.resolve(args) {
            Some((_, c)) => Ok(c),
            None => plan_err!(
                "Function '{}' does not accept parameters ({})",
                self.name.to_ascii_uppercase(),
                Self::describe_args(args)
            ),
        }
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        match self.resolve(args) {
            Some((o, c)) => Ok((o.ret)(&c)),
            None => plan_err!(
                "Function '{}' does not accept parameters ({})",
                self.name.to_ascii_uppercase(),
                Self::describe_args(args)
            ),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let ret = args.return_field.data_type().clone();
        let arrays: Vec<ArrayRef> = args
            .args
            .iter()
            .map(|a| a.to_array(n))
            .collect::<Result<_>>()?;
        let null = ScalarValue::try_from(&ret)?;
        let mut out = Vec::with_capacity(n);
        let mut row_args = Vec::with_capacity(arrays.len());
        for row in 0..n {
            row_args.clear();
            for a in &arrays {
                row_args.push(ScalarValue::try_from_array(a, row)?);
            }
            if self.nulls == Nulls::Propagate && row_args.iter().any(|v| v.is_null()) {
                out.push(null.clone());
                continue;
            }
            match (self.eval)(&row_args, &ret) {
                Ok(v) if v.is_null() => out.push(null.clone()),
                Ok(v) => out.push(v),
                Err(_) => out.push(null.clone()),
            }
        }
        if out.is_empty() {
            return Ok(ColumnarValue::Array(arrow::array::new_empty_array(&ret)));
        }
        let array = ScalarValue::iter_to_array(out)?;
        // Nested results may be built with other field names; the declared type wins.
        let array = if array.data_type() != &ret {
            arrow::compute::cast(&array, &ret)?
        } else {
            array
        };
        Ok(ColumnarValue::Array(array))
    }
}

struct Builder {
    name: &'static str,
    overloads: Vec<Overload>,
    nulls: Nulls,
    volatile: bool,
}

fn f(name: &'static str) -> Builder {
    Builder {
        name,
        overloads: Vec::new(),
        nulls: Nulls::Propagate,
        volatile: false,
    }
}

impl Builder {
    fn sig(mut self, args: &[T], ret: DataType) -> Self {
        self.overloads.push(Overload {
            args: args.to_vec(),
            variadic: None,
            ret: Arc::new(move |_| ret.clone()),
        });
        self
    }
    fn sig_fn(
        mut self,
        args: &[T],
        ret: impl Fn(&[DataType]) -> DataType + Send + Sync + 'static,
    ) -> Self {
        self.overloads.push(Overload {
            args: args.to_vec(),
            variadic: None,
            ret: Arc::new(ret),
        });
        self
    }
    fn variadic(mut self, args: &[T], rest: T, ret: DataType) -> Self {
        self.overloads.push(Overload {
            args: args.to_vec(),
            variadic: Some(rest),
            ret: Arc::new(move |_| ret.clone()),
        });
        self
    }
    fn pass_nulls(mut self) -> Self {
        self.nulls = Nulls::Pass;
        self
    }
    fn volatile(mut self) -> Self {
        self.volatile = true;
        self
    }
    fn eval(
        self,
        e: impl Fn(&[ScalarValue], &DataType) -> std::result::Result<ScalarValue, String>
        + Send
        + Sync
        + 'static,
    ) -> Arc<ScalarUDF> {
        let vol = if self.volatile {
            Volatility::Volatile
        } else {
            Volatility::Immutable
        };
        let nullary = self
            .overloads
            .iter()
            .any(|o| o.args.is_empty() && o.variadic.is_none());
        let signature = if nullary {
            Signature::one_of(
                vec![TypeSignature::Nullary, TypeSignature::UserDefined],
                vol,
            )
        } else {
            Signature::user_defined(vol)
        };
        Arc::new(ScalarUDF::from(RowFn {
            name: self.name,
            signature,
            overloads: self.overloads,
            nulls: self.nulls,
            eval: Arc::new(e),
        }))
    }
}

// ---- argument accessors ----

fn s(v: &ScalarValue) -> Option<&str> {
    match v {
        ScalarValue::Utf8(Some(x))
        | ScalarValue::LargeUtf8(Some(x))
        | ScalarValue::Utf8View(Some(x)) => Some(x),
        _ => None,
    }
}

fn i(v: &ScalarValue) -> Option<i64> {
    match v {
        ScalarValue::Int8(Some(x)) => Some(*x as i64),
        ScalarValue::Int16(Some(x)) => Some(*x as i64),
        ScalarValue::Int32(Some(x)) => Some(*x as i64),
        ScalarValue::Int64(Some(x)) => Some(*x),
        ScalarValue::UInt8(Some(x)) => Some(*x as i64),
        ScalarValue::UInt16(Some(x)) => Some(*x as i64),
        ScalarValue::UInt32(Some(x)) => Some(*x as i64),
        ScalarValue::Date32(Some(x)) => Some(*x as i64),
        ScalarValue::Time32Millisecond(Some(x)) => Some(*x as i64),
        ScalarValue::TimestampMillisecond(Some(x), _) => Some(*x),
        _ => None,
    }
}

fn d(v: &ScalarValue) -> Option<f64> {
    match v {
        ScalarValue::Float64(Some(x)) => Some(*x),
        ScalarValue::Float32(Some(x)) => Some(*x as f64),
        other => i(other).map(|x| x as f64),
    }
}

fn bytes(v: &ScalarValue) -> Option<&[u8]> {
    match v {
        ScalarValue::Binary(Some(b))
        | ScalarValue::LargeBinary(Some(b))
        | ScalarValue::BinaryView(Some(b)) => Some(b),
        _ => None,
    }
}

fn need(v: &ScalarValue) -> std::result::Result<&str, String> {
    s(v).ok_or_else(|| "expected a string".to_string())
}

fn needi(v: &ScalarValue) -> std::result::Result<i64, String> {
    i(v).ok_or_else(|| "expected an integer".to_string())
}

/// LPAD (`left`) or RPAD of a string or bytes.
fn pad(a: &[ScalarValue], left: bool) -> std::result::Result<ScalarValue, String> {
    let len = needi(&a[1])?;
    if len < 0 {
        return Ok(ScalarValue::Null);
    }
    let len = len as usize;
    fn padded<T: Clone>(input: &[T], len: usize, padding: &[T], left: bool) -> Option<Vec<T>> {
        if padding.is_empty() {
            return None;
        }
        if input.len() >= len {
            return Some(input[..len].to_vec());
        }
        let fill: Vec<T> = padding
            .iter()
            .cycle()
            .take(len - input.len())
            .cloned()
            .collect();
        Some(if left {
            [fill.as_slice(), input].concat()
        } else {
            [input, fill.as_slice()].concat()
        })
    }
    Ok(match (s(&a[0]), s(&a[2]), bytes(&a[0]), bytes(&a[2])) {
        (Some(input), Some(padding), _, _) => {
            let input: Vec<char> = input.chars().collect();
            let padding: Vec<char> = padding.chars().collect();
            match padded(&input, len, &padding, left) {
                Some(chars) => str_val(chars.into_iter().collect::<String>()),
                None => ScalarValue::Null,
            }
        }
        (_, _, Some(input), Some(padding)) => {
            ScalarValue::Binary(padded(input, len, padding, left))
        }
        _ => ScalarValue::Null,
    })
}

fn str_val(x: impl Into<String>) -> ScalarValue {
    ScalarValue::Utf8(Some(x.into()))
}

fn str_list(items: Vec<Option<String>>) -> ScalarValue {
    let values: Vec<ScalarValue> = items.into_iter().map(ScalarValue::Utf8).collect();
    ScalarValue::List(ScalarValue::new_list_nullable(&values, &DataType::Utf8))
}

fn str_map(entries: Vec<(String, Option<String>)>) -> ScalarValue {
    let mut b = MapBuilder::new(
        Some(MapFieldNames {
            entry: "entries".into(),
            key: "key".into(),
            value: "value".into(),
        }),
        StringBuilder::new(),
        StringBuilder::new(),
    );
    for (k, v) in entries {
        b.keys().append_value(k);
        b.values().append_option(v);
    }
    b.append(true)
        .expect("keys and values have the same length");
    ScalarValue::Map(Arc::new(b.finish()))
}

fn list_type(item: DataType) -> DataType {
    DataType::List(Arc::new(Field::new("item", item, true)))
}

fn str_map_type() -> DataType {
    crate::types::map_type(DataType::Utf8, DataType::Utf8)
}

fn zone_arg(args: &[ScalarValue], idx: usize) -> std::result::Result<Zone, String> {
    match args.get(idx) {
        Some(v) => javatime::zone(need(v)?),
        None => Ok(Zone::UTC),
    }
}

/// A regex cache: the same pattern is compiled once, not per row.
fn regex(pattern: &str) -> std::result::Result<regex::Regex, String> {
    static CACHE: Mutex<Option<HashMap<String, regex::Regex>>> = Mutex::new(None);
    let mut guard = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let cache = guard.get_or_insert_with(HashMap::new);
    if let Some(r) = cache.get(pattern) {
        return Ok(r.clone());
    }
    let r = regex::Regex::new(pattern).map_err(|e| e.to_string())?;
    if cache.len() > 256 {
        cache.clear();
    }
    cache.insert(pattern.to_string(), r.clone());
    Ok(r)
}

fn json_text(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Java's `URLEncoder.encode(s, UTF-8)`.
fn url_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'*' | b'_' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

/// Java's `URLDecoder.decode(s, UTF-8)`.
fn url_decode(s: &str) -> std::result::Result<String, String> {
    let plus = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|e| e.to_string())
}

fn parse_url(s: &str) -> std::result::Result<url::Url, String> {
    url::Url::parse(s).map_err(|e| format!("'{s}' is not a URL: {e}"))
}

/// Milliseconds in one of ksqlDB's time units (`DAYS`, `HOURS`, ..., singular or plural).
fn unit_millis(unit: &str) -> std::result::Result<i64, String> {
    let u = unit.to_ascii_uppercase();
    Ok(match u.trim_end_matches('S') {
        "MILLISECOND" => 1,
        "SECOND" => 1000,
        "MINUTE" => 60_000,
        "HOUR" => 3_600_000,
        "DAY" => 86_400_000,
        _ => return Err(format!("unknown time unit '{unit}'")),
    })
}

/// The bytes argument of `*_FROM_BYTES(bytes [, byte_order])`, `width` long, as the low
/// bytes of a big-endian 8-byte buffer.
fn from_bytes_num(a: &[ScalarValue], width: usize) -> std::result::Result<[u8; 8], String> {
    let b = bytes(&a[0]).ok_or("expected bytes")?;
    let order = a.get(1).and_then(s);
    if b.len() != width {
        return Err(format!(
            "Number of bytes must be equal to {width}, but found {}",
            b.len()
        ));
    }
    let little = match order.map(|o| o.to_ascii_uppercase()) {
        None => false,
        Some(o) if o == "BIG_ENDIAN" => false,
        Some(o) if o == "LITTLE_ENDIAN" => true,
        Some(o) => return Err(format!("unknown byte order '{o}'")),
    };
    let mut buf = [0u8; 8];
    for (k, byte) in b.iter().enumerate() {
        let idx = if little { width - 1 - k } else { k };
        buf[8 - width + idx] = *byte;
    }
    Ok(buf)
}

/// The functions this module provides.
pub fn all() -> Vec<Arc<ScalarUDF>> {
    use DataType as D;
    let ts = D::Timestamp(TimeUnit::Millisecond, None);
    let time = D::Time32(TimeUnit::Millisecond);
    vec![
        // ---- strings ----
        // ksqlDB's INITCAP: each word (after whitespace) capitalized, the rest lower case
        // (DataFusion's also starts a word after punctuation).
        f("initcap").sig(&[T::Str], D::Utf8).eval(|a, _| {
            let mut out = String::new();
            let mut start = true;
            for c in need(&a[0])?.chars() {
                if start {
                    out.extend(c.to_uppercase());
                } else {
                    out.extend(c.to_lowercase());
                }
                start = c.is_whitespace();
            }
            Ok(str_val(out))
        }),
        f("elt")
            .variadic(&[T::Int], T::Str, D::Utf8)
            .pass_nulls()
            .eval(|a, _| {
                let Some(n) = i(&a[0]) else {
                    return Ok(ScalarValue::Null);
                };
                Ok(
                    match usize::try_from(n)
                        .ok()
                        .filter(|n| *n >= 1)
                        .and_then(|n| a.get(n))
                    {
                        Some(v) => s(v).map(str_val).unwrap_or(ScalarValue::Null),
                        None => ScalarValue::Null,
                    },
                )
            }),
        f("field")
            .variadic(&[T::Str], T::Str, D::Int32)
            .pass_nulls()
            .eval(|a, _| {
                let pos = s(&a[0])
                    .and_then(|needle| a[1..].iter().position(|v| s(v) == Some(needle)))
                    .map(|p| p as i32 + 1)
                    .unwrap_or(0);
                Ok(ScalarValue::Int32(Some(pos)))
            }),
        f("instr")
            .sig(&[T::Str, T::Str], D::Int32)
            .sig(&[T::Str, T::Str, T::Int], D::Int32)
            .sig(&[T::Str, T::Str, T::Int, T::Int], D::Int32)
            .eval(|a, _| {
                let hay: Vec<char> = need(&a[0])?.chars().collect();
                let needle: Vec<char> = need(&a[1])?.chars().collect();
                let pos = a.get(2).map(needi).transpose()?.unwrap_or(1);
                let occurrence = a.get(3).map(needi).transpose()?.unwrap_or(1);
                let at = |k: usize| {
                    hay.len() >= k + needle.len() && hay[k..k + needle.len()] == needle[..]
                };
                let mut found: i64 = -1;
                if pos >= 0 {
                    let mut start = (pos - 1).max(0) as usize;
                    for _ in 0..occurrence.max(1) {
                        found = (start..=hay.len())
                            .find(|k| at(*k))
                            .map(|k| k as i64)
                            .unwrap_or(-1);
                        if found < 0 {
                            break;
                        }
                        start = found as usize + 1;
                    }
                } else {
                    let mut start = hay.len() as i64 + pos;
                    for _ in 0..occurrence.max(1) {
                        found = (0..=start.max(-1))
                            .rev()
                            .find(|k| at(*k as usize))
                            .unwrap_or(-1);
                        if found < 0 {
                            break;
                        }
                        start = found - 1;
                    }
                }
                Ok(ScalarValue::Int32(Some((found + 1) as i32)))
            }),
        f("chr")
            .sig(&[T::Int], D::Utf8)
            .sig(&[T::Str], D::Utf8)
            .eval(|a, _| {
                if let Some(code) = i(&a[0]) {
                    let c = u32::try_from(code)
                        .ok()
                        .and_then(char::from_u32)
                        .ok_or("not a code point")?;
                    return Ok(str_val(c.to_string()));
                }
                // "\u004b" escapes, surrogate pairs included.
                let text = need(&a[0])?;
                let units: Vec<u16> = text
                    .split("\\u")
                    .skip(1)
                    .map(|h| u16::from_str_radix(h, 16).map_err(|e| e.to_string()))
                    .collect::<std::result::Result<_, _>>()?;
                if units.is_empty() || !text.starts_with("\\u") {
                    return Err("not a \\u escape".into());
                }
                let out = String::from_utf16(&units).map_err(|e| e.to_string())?;
                if out.chars().count() != 1 {
                    return Err("not one character".into());
                }
                Ok(str_val(out))
            }),
        // SPLIT: every piece, empty ones included; an empty delimiter splits into characters
        // (bytes).
        f("split")
            .sig(&[T::Str, T::Str], list_type(D::Utf8))
            .sig(&[T::Bytes, T::Bytes], list_type(D::Binary))
            .eval(|a, _| {
                if let (Some(text), Some(delim)) = (s(&a[0]), s(&a[1])) {
                    let parts: Vec<Option<String>> = if text.is_empty() {
                        vec![Some(String::new())]
                    } else if delim.is_empty() {
                        text.chars().map(|c| Some(c.to_string())).collect()
                    } else {
                        text.split(delim).map(|p| Some(p.to_string())).collect()
                    };
                    return Ok(str_list(parts));
                }
                let (b, delim) = (
                    bytes(&a[0]).ok_or("expected bytes")?,
                    bytes(&a[1]).ok_or("expected bytes")?,
                );
                let mut parts: Vec<&[u8]> = Vec::new();
                if delim.is_empty() {
                    if b.is_empty() {
                        parts.push(b);
                    } else {
                        parts.extend(b.chunks(1));
                    }
                } else {
                    let mut start = 0;
                    let mut i = 0;
                    while i + delim.len() <= b.len() {
                        if &b[i..i + delim.len()] == delim {
                            parts.push(&b[start..i]);
                            i += delim.len();
                            start = i;
                        } else {
                            i += 1;
                        }
                    }
                    parts.push(&b[start..]);
                }
                let values: Vec<ScalarValue> = parts
                    .into_iter()
                    .map(|p| ScalarValue::Binary(Some(p.to_vec())))
                    .collect();
                Ok(ScalarValue::List(ScalarValue::new_list_nullable(
                    &values,
                    &DataType::Binary,
                )))
            }),
        // SUBSTRING(s, pos [, len]): 1-based; a negative position counts from the end.
        f("substring")
            .sig(&[T::Str, T::Int], D::Utf8)
            .sig(&[T::Str, T::Int, T::Int], D::Utf8)
            .sig(&[T::Bytes, T::Int], D::Binary)
            .sig(&[T::Bytes, T::Int, T::Int], D::Binary)
            .eval(|a, _| {
                let range = |len: usize| -> std::result::Result<(usize, usize), String> {
                    let len = len as i64;
                    let pos = needi(&a[1])?;
                    let start = if pos < 0 {
                        (len + pos).max(0)
                    } else {
                        (pos - 1).clamp(0, len)
                    };
                    let end = match a.get(2) {
                        Some(l) => (start + needi(l)?).clamp(start, len),
                        None => len,
                    };
                    Ok((start as usize, end as usize))
                };
                if let Some(text) = s(&a[0]) {
                    let chars: Vec<char> = text.chars().collect();
                    let (from, to) = range(chars.len())?;
                    return Ok(str_val(chars[from..to].iter().collect::<String>()));
                }
                let b = bytes(&a[0]).ok_or("expected a string or bytes")?;
                let (from, to) = range(b.len())?;
                Ok(ScalarValue::Binary(Some(b[from..to].to_vec())))
            }),
        f("split_to_map")
            .sig(&[T::Str, T::Str, T::Str], str_map_type())
            .eval(|a, _| {
                let (input, entry, kv) = (need(&a[0])?, need(&a[1])?, need(&a[2])?);
                if entry.is_empty() || kv.is_empty() {
                    return Err("delimiters must not be empty".into());
                }
                let mut map: Vec<(String, Option<String>)> = Vec::new();
                for e in input.split(entry).map(str::trim).filter(|e| !e.is_empty()) {
                    // As Guava's splitter: the text before the first and second delimiter.
                    let mut parts = e.split(kv);
                    if let (Some(k), Some(v)) = (parts.next(), parts.next()) {
                        map.retain(|(old, _)| old != k);
                        map.push((k.to_string(), Some(v.to_string())));
                    }
                }
                Ok(str_map(map))
            }),
        // ---- URLs ----
        f("url_encode_param")
            .sig(&[T::Str], D::Utf8)
            .eval(|a, _| Ok(str_val(url_encode(need(&a[0])?)))),
        f("url_decode_param")
            .sig(&[T::Str], D::Utf8)
            .eval(|a, _| Ok(str_val(url_decode(need(&a[0])?)?))),
        f("url_extract_fragment")
            .sig(&[T::Str], D::Utf8)
            .eval(|a, _| {
                Ok(parse_url(need(&a[0])?)?
                    .fragment()
                    .map(|s| str_val(url_decode(s).unwrap_or(s.into())))
                    .unwrap_or(ScalarValue::Null))
            }),
        f("url_extract_host").sig(&[T::Str], D::Utf8).eval(|a, _| {
            Ok(parse_url(need(&a[0])?)?
                .host_str()
                .map(str_val)
                .unwrap_or(ScalarValue::Null))
        }),
        f("url_extract_path").sig(&[T::Str], D::Utf8).eval(|a, _| {
            let text = need(&a[0])?;
            let u = parse_url(text)?;
            // A URL with no path after its authority has an empty one (as Java's URI
            // reads it), not the `/` the parser puts there.
            let after = text.split_once("://").map_or("", |(_, rest)| rest);
            let bare = !after.is_empty()
                && after
                    .find(['/', '?', '#'])
                    .is_none_or(|i| !after[i..].starts_with('/'));
            if bare && u.path() == "/" {
                return Ok(str_val(""));
            }
            Ok(str_val(
                url_decode(u.path()).unwrap_or_else(|_| u.path().into()),
            ))
        }),
        f("url_extract_port").sig(&[T::Str], D::Int32).eval(|a, _| {
            Ok(ScalarValue::Int32(
                parse_url(need(&a[0])?)?.port().map(i32::from),
            ))
        }),
        f("url_extract_protocol")
            .sig(&[T::Str], D::Utf8)
            .eval(|a, _| Ok(str_val(parse_url(need(&a[0])?)?.scheme()))),
        f("url_extract_query").sig(&[T::Str], D::Utf8).eval(|a, _| {
            Ok(parse_url(need(&a[0])?)?
                .query()
                .map(|q| str_val(url_decode(q).unwrap_or(q.into())))
                .unwrap_or(ScalarValue::Null))
        }),
        f("url_extract_parameter")
            .sig(&[T::Str, T::Str], D::Utf8)
            .eval(|a, _| {
                let u = parse_url(need(&a[0])?)?;
                let name = need(&a[1])?;
                let q = u.query().unwrap_or("");
                for pair in q.split('&') {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    if url_decode(k)? == name {
                        return Ok(str_val(url_decode(v)?));
                    }
                }
                Ok(ScalarValue::Null)
            }),
        // ---- regular expressions ----
        f("regexp_extract")
            .sig(&[T::Str, T::Str], D::Utf8)
            .sig(&[T::Str, T::Str, T::Int], D::Utf8)
            .eval(|a, _| {
                let re = regex(need(&a[0])?)?;
                let group = a.get(2).map(needi).transpose()?.unwrap_or(0) as usize;
                Ok(re
                    .captures(need(&a[1])?)
                    .and_then(|c| c.get(group))
                    .map(|m| str_val(m.as_str()))
                    .unwrap_or(ScalarValue::Null))
            }),
        f("regexp_extract_all")
            .sig(&[T::Str, T::Str], list_type(D::Utf8))
            .sig(&[T::Str, T::Str, T::Int], list_type(D::Utf8))
            .eval(|a, _| {
                let re = regex(need(&a[0])?)?;
                let group = a.get(2).map(needi).transpose()?.unwrap_or(0) as usize;
                let items = re
                    .captures_iter(need(&a[1])?)
                    .map(|c| c.get(group).map(|m| m.as_str().to_string()))
                    .collect();
                Ok(str_list(items))
            }),
        // ---- JSON ----
        f("is_json_string")
            .sig(&[T::Str], D::Boolean)
            .pass_nulls()
            .eval(|a, _| {
                Ok(ScalarValue::Boolean(Some(
                    s(&a[0]).is_some_and(|t| serde_json::from_str::<Json>(t).is_ok()),
                )))
            }),
        f("json_array_length")
            .sig(&[T::Str], D::Int32)
            .eval(|a, _| {
                match serde_json::from_str::<Json>(need(&a[0])?).map_err(|e| e.to_string())? {
                    Json::Array(items) => Ok(ScalarValue::Int32(Some(items.len() as i32))),
                    _ => Ok(ScalarValue::Null),
                }
            }),
        f("json_array_contains")
            .sig(&[T::Str, T::Any], D::Boolean)
            .pass_nulls()
            .eval(|a, _| {
                let Some(text) = s(&a[0]) else {
                    return Ok(ScalarValue::Boolean(Some(false)));
                };
                let Ok(Json::Array(items)) = serde_json::from_str::<Json>(text) else {
                    return Ok(ScalarValue::Boolean(Some(false)));
                };
                let found = items.iter().any(|item| match (&a[1], item) {
                    (v, Json::Null) => v.is_null(),
                    (v, Json::String(x)) => s(v) == Some(x.as_str()),
                    (ScalarValue::Boolean(Some(b)), Json::Bool(x)) => b == x,
                    (v, Json::Number(x)) => match (i(v), d(v)) {
                        (Some(n), _) => x.as_i64() == Some(n),
                        (None, Some(f)) => x.as_f64() == Some(f),
                        _ => false,
                    },
                    _ => false,
                });
                Ok(ScalarValue::Boolean(Some(found)))
            }),
        f("json_concat")
            .variadic(&[T::Str], T::Str, D::Utf8)
            .eval(|a, _| {
                let docs: Vec<Json> = a
                    .iter()
                    .map(|v| serde_json::from_str::<Json>(need(v)?).map_err(|e| e.to_string()))
                    .collect::<std::result::Result<_, _>>()?;
                let all_objects = docs.iter().all(|j| j.is_object());
                let out = if all_objects {
                    let mut m = serde_json::Map::new();
                    for j in docs {
                        if let Json::Object(o) = j {
                            m.extend(o);
                        }
                    }
                    Json::Object(m)
                } else {
                    let mut items = Vec::new();
                    for j in docs {
                        match j {
                            Json::Array(xs) => items.extend(xs),
                            other => items.push(other),
                        }
                    }
                    Json::Array(items)
                };
                Ok(str_val(out.to_string()))
            }),
        f("json_items").sig(&[T::Str], list_type(D::Utf8)).eval(
            |a, _| match serde_json::from_str::<Json>(need(&a[0])?).map_err(|e| e.to_string())? {
                Json::Array(items) => Ok(str_list(
                    items.iter().map(|j| Some(j.to_string())).collect(),
                )),
                _ => Err("not a JSON array".into()),
            },
        ),
        f("json_keys").sig(&[T::Str], list_type(D::Utf8)).eval(
            |a, _| match serde_json::from_str::<Json>(need(&a[0])?).map_err(|e| e.to_string())? {
                Json::Object(o) => Ok(str_list(o.keys().map(|k| Some(k.clone())).collect())),
                _ => Err("not a JSON object".into()),
            },
        ),
        f("json_records")
            .sig(&[T::Str], str_map_type())
            .eval(|a, _| {
                match serde_json::from_str::<Json>(need(&a[0])?).map_err(|e| e.to_string())? {
                    Json::Object(o) => Ok(str_map(
                        o.iter()
                            .map(|(k, v)| (k.clone(), Some(json_text(v))))
                            .collect(),
                    )),
                    _ => Err("not a JSON object".into()),
                }
            }),
        // ---- dates, times, timestamps ----
        f("stringtodate")
            .sig(&[T::Str, T::Str], D::Int32)
            .eval(|a, _| {
                Ok(ScalarValue::Int32(Some(javatime::parse_days(
                    need(&a[0])?,
                    need(&a[1])?,
                )?)))
            }),
        f("parse_date")
            .sig(&[T::Str, T::Str], D::Date32)
            .eval(|a, _| {
                Ok(ScalarValue::Date32(Some(javatime::parse_days(
                    need(&a[0])?,
                    need(&a[1])?,
                )?)))
            }),
        // The same text from INT days and from a DATE.
        f("datetostring")
            .sig(&[T::Int, T::Str], D::Utf8)
            .eval(format_days),
        f("format_date")
            .sig(&[T::Date, T::Str], D::Utf8)
            .eval(format_days),
        f("parse_time")
            .sig(&[T::Str, T::Str], time.clone())
            .eval(|a, _| {
                let ms = javatime::parse_millis(need(&a[0])?, need(&a[1])?, Zone::UTC)?;
                Ok(ScalarValue::Time32Millisecond(Some(
                    ms.rem_euclid(86_400_000) as i32,
                )))
            }),
        f("format_time")
            .sig(&[T::Time, T::Str], D::Utf8)
            .eval(|a, _| {
                Ok(str_val(javatime::format_millis(
                    needi(&a[0])?,
                    need(&a[1])?,
                    Zone::UTC,
                )?))
            }),
        f("stringtotimestamp")
            .sig(&[T::Str, T::Str], D::Int64)
            .sig(&[T::Str, T::Str, T::Str], D::Int64)
            .eval(|a, _| {
                let z = zone_arg(a, 2)?;
                Ok(ScalarValue::Int64(Some(javatime::parse_millis(
                    need(&a[0])?,
                    need(&a[1])?,
                    z,
                )?)))
            }),
        f("parse_timestamp")
            .sig(&[T::Str, T::Str], ts.clone())
            .sig(&[T::Str, T::Str, T::Str], ts.clone())
            .eval(|a, _| {
                let z = zone_arg(a, 2)?;
                Ok(ScalarValue::TimestampMillisecond(
                    Some(javatime::parse_millis(need(&a[0])?, need(&a[1])?, z)?),
                    None,
                ))
            }),
        // The same text from BIGINT millis and from a TIMESTAMP.
        f("timestamptostring")
            .sig(&[T::Big, T::Str], D::Utf8)
            .sig(&[T::Big, T::Str, T::Str], D::Utf8)
            .eval(format_instant),
        f("format_timestamp")
            .sig(&[T::Ts, T::Str], D::Utf8)
            .sig(&[T::Ts, T::Str, T::Str], D::Utf8)
            .eval(format_instant),
        f("convert_tz")
            .sig(&[T::Ts, T::Str, T::Str], ts.clone())
            .eval(|a, _| {
                let t = needi(&a[0])?;
                let (from, to) = (javatime::zone(need(&a[1])?)?, javatime::zone(need(&a[2])?)?);
                Ok(ScalarValue::TimestampMillisecond(
                    Some(t + (to.offset_at(t) - from.offset_at(t)) * 1000),
                    None,
                ))
            }),
        f("from_unixtime")
            .sig(&[T::Big], ts.clone())
            .eval(|a, _| Ok(ScalarValue::TimestampMillisecond(Some(needi(&a[0])?), None))),
        f("from_days")
            .sig(&[T::Int], D::Date32)
            .eval(|a, _| Ok(ScalarValue::Date32(Some(needi(&a[0])? as i32)))),
        f("unix_timestamp")
            .sig(&[], D::Int64)
            .sig(&[T::Ts], D::Int64)
            .volatile()
            .eval(|a, _| {
                Ok(ScalarValue::Int64(Some(match a.first() {
                    Some(v) => needi(v)?,
                    None => now_millis(),
                })))
            }),
        f("unix_date")
            .sig(&[], D::Int32)
            .sig(&[T::Date], D::Int32)
            .volatile()
            .eval(|a, _| {
                Ok(ScalarValue::Int32(Some(match a.first() {
                    Some(v) => needi(v)? as i32,
                    None => now_millis().div_euclid(86_400_000) as i32,
                })))
            }),
        f("dateadd")
            .sig(&[T::Str, T::Int, T::Date], D::Date32)
            .eval(|a, _| add_date(a, 1)),
        f("datesub")
            .sig(&[T::Str, T::Int, T::Date], D::Date32)
            .eval(|a, _| add_date(a, -1)),
        f("timeadd")
            .sig(&[T::Str, T::Int, T::Time], time.clone())
            .eval(|a, _| add_time(a, 1)),
        f("timesub")
            .sig(&[T::Str, T::Int, T::Time], time.clone())
            .eval(|a, _| add_time(a, -1)),
        f("timestampadd")
            .sig(&[T::Str, T::Big, T::Ts], ts.clone())
            .eval(|a, _| add_ts(a, 1)),
        f("timestampsub")
            .sig(&[T::Str, T::Big, T::Ts], ts.clone())
            .eval(|a, _| add_ts(a, -1)),
        // ---- numbers and bytes ----
        f("sign")
            .sig(&[T::Big], D::Int32)
            .sig(&[T::Dbl], D::Int32)
            .eval(|a, _| {
                let x = d(&a[0]).ok_or("expected a number")?;
                Ok(ScalarValue::Int32(Some(if x > 0.0 {
                    1
                } else if x < 0.0 {
                    -1
                } else {
                    0
                })))
            }),
        // Java's Math: NaN for a negative root or logarithm, -Infinity for log(0).
        f("sqrt").sig(&[T::Dbl], D::Float64).eval(|a, _| {
            Ok(ScalarValue::Float64(Some(
                d(&a[0]).ok_or("expected a number")?.sqrt(),
            )))
        }),
        f("ln").sig(&[T::Dbl], D::Float64).eval(|a, _| {
            Ok(ScalarValue::Float64(Some(
                d(&a[0]).ok_or("expected a number")?.ln(),
            )))
        }),
        f("log")
            .sig(&[T::Dbl], D::Float64)
            .sig(&[T::Dbl, T::Dbl], D::Float64)
            .eval(|a, _| {
                let x = d(a.last().expect("one or two arguments")).ok_or("expected a number")?;
                let out = match a.len() {
                    1 => x.ln(),
                    _ => {
                        let base = d(&a[0]).ok_or("expected a number")?;
                        if base <= 0.0 || base == 1.0 || x < 0.0 {
                            f64::NAN
                        } else {
                            x.ln() / base.ln()
                        }
                    }
                };
                Ok(ScalarValue::Float64(Some(out)))
            }),
        // ROUND(x) half up to a BIGINT; ROUND(x, n) half up to n places (n < 0: tens, ...).
        f("round")
            .sig(&[T::Big], D::Int64)
            .sig(&[T::Dbl], D::Int64)
            .sig(&[T::Big, T::Int], D::Int64)
            .sig(&[T::Dbl, T::Int], D::Float64)
            .eval(|a, ret| {
                let places = a.get(1).map(needi).transpose()?.unwrap_or(0);
                if let (Some(x), DataType::Int64) = (i(&a[0]), ret) {
                    let m = 10i64
                        .checked_pow((-places).max(0) as u32)
                        .unwrap_or(i64::MAX);
                    return Ok(ScalarValue::Int64(Some(
                        round_half_up(x as f64 / m as f64, 0) as i64 * m,
                    )));
                }
                let x = d(&a[0]).ok_or("expected a number")?;
                if a.len() == 1 {
                    return Ok(ScalarValue::Int64(Some(round_half_up(x, 0) as i64)));
                }
                Ok(ScalarValue::Float64(Some(round_half_up(x, places))))
            }),
        f("int_from_bytes")
            .sig(&[T::Bytes], D::Int32)
            .sig(&[T::Bytes, T::Str], D::Int32)
            .eval(|a, _| {
                let b = from_bytes_num(a, 4)?;
                Ok(ScalarValue::Int32(Some(i64::from_be_bytes(b) as i32)))
            }),
        f("bigint_from_bytes")
            .sig(&[T::Bytes], D::Int64)
            .sig(&[T::Bytes, T::Str], D::Int64)
            .eval(|a, _| {
                let b = from_bytes_num(a, 8)?;
                Ok(ScalarValue::Int64(Some(i64::from_be_bytes(b))))
            }),
        f("double_from_bytes")
            .sig(&[T::Bytes], D::Float64)
            .sig(&[T::Bytes, T::Str], D::Float64)
            .eval(|a, _| {
                let b = from_bytes_num(a, 8)?;
                Ok(ScalarValue::Float64(Some(f64::from_be_bytes(b))))
            }),
        // ---- collections ----
        f("slice")
            .sig_fn(&[T::Arr, T::Int, T::Int], |a| a[0].clone())
            .pass_nulls()
            .eval(|a, _| {
                let Some(items) = list_items(&a[0]) else {
                    return Ok(ScalarValue::Null);
                };
                let len = items.len() as i64;
                let from = i(&a[1]).unwrap_or(1).max(1);
                let to = i(&a[2]).unwrap_or(len).min(len);
                if from > to {
                    return Ok(one_list(&a[0], items.slice(0, 0)));
                }
                let part = items.slice((from - 1) as usize, (to - from + 1) as usize);
                Ok(one_list(&a[0], part))
            }),
        // A LIKE pattern with escape character `e` rewritten for `\\` as the escape.
        f("ksql_like_escape")
            .sig(&[T::Str, T::Str], D::Utf8)
            .eval(|a, _| {
                let (pattern, escape) = (need(&a[0])?, need(&a[1])?);
                let escape = escape.chars().next();
                let mut out = String::with_capacity(pattern.len() + 4);
                let mut chars = pattern.chars();
                while let Some(c) = chars.next() {
                    if Some(c) == escape {
                        if let Some(next) = chars.next() {
                            out.push('\\');
                            out.push(next);
                        }
                    } else if c == '\\' {
                        out.push_str("\\\\");
                    } else {
                        out.push(c);
                    }
                }
                Ok(str_val(out))
            }),
        // ---- ksqlDB's array and map functions where DataFusion's differ ----
        // ARRAY_LENGTH: the number of elements (not of nested elements).
        f("ksql_array_length")
            .sig(&[T::Arr], D::Int32)
            .eval(|a, _| {
                let ScalarValue::List(list) = &a[0] else {
                    return Ok(ScalarValue::Null);
                };
                Ok(ScalarValue::Int32(Some(list.value_length(0))))
            }),
        // ARRAY_SORT(list [, 'ASC' | 'DESC']): NULLs last either way.
        f("ksql_array_sort")
            .sig_fn(&[T::Arr], |a| a[0].clone())
            .sig_fn(&[T::Arr, T::Str], |a| a[0].clone())
            .eval(|a, _| {
                let ScalarValue::List(list) = &a[0] else {
                    return Ok(ScalarValue::Null);
                };
                let descending = match a.get(1).and_then(s) {
                    None => false,
                    Some(d) if d.eq_ignore_ascii_case("ASC") => false,
                    Some(d) if d.eq_ignore_ascii_case("DESC") => true,
                    Some(_) => return Ok(ScalarValue::Null),
                };
                let items = list.value(0);
                let sorted = arrow::compute::sort(
                    items.as_ref(),
                    Some(arrow::compute::SortOptions {
                        descending,
                        nulls_first: false,
                    }),
                )
                .map_err(|e| e.to_string())?;
                Ok(one_list(&a[0], sorted))
            }),
        // ARRAY_REMOVE(list, x): every element equal to `x` removed (NULLs for NULL).
        f("ksql_array_remove")
            .sig_fn(&[T::Arr, T::Any], |a| a[0].clone())
            .pass_nulls()
            .eval(|a, _| {
                let Some(items) = list_items(&a[0]) else {
                    return Ok(ScalarValue::Null);
                };
                let mut keep = Vec::with_capacity(items.len());
                for i in 0..items.len() {
                    let v = ScalarValue::try_from_array(&items, i).map_err(|e| e.to_string())?;
                    let same = if v.is_null() || a[1].is_null() {
                        v.is_null() && a[1].is_null()
                    } else {
                        v.cast_to(&a[1].data_type()).is_ok_and(|v| v == a[1])
                    };
                    if !same {
                        keep.push(i as u32);
                    }
                }
                let kept = arrow::compute::take(
                    items.as_ref(),
                    &arrow::array::UInt32Array::from(keep),
                    None,
                )
                .map_err(|e| e.to_string())?;
                Ok(one_list(&a[0], kept))
            }),
        // GENERATE_SERIES(start, end [, step]): counts down when start > end.
        f("ksql_generate_series")
            .sig(
                &[T::Int, T::Int],
                D::List(Arc::new(Field::new_list_field(D::Int32, true))),
            )
            .sig(
                &[T::Int, T::Int, T::Int],
                D::List(Arc::new(Field::new_list_field(D::Int32, true))),
            )
            .sig(
                &[T::Big, T::Big],
                D::List(Arc::new(Field::new_list_field(D::Int64, true))),
            )
            .sig(
                &[T::Big, T::Big, T::Int],
                D::List(Arc::new(Field::new_list_field(D::Int64, true))),
            )
            .eval(|a, ret| {
                let (start, end) = (needi(&a[0])?, needi(&a[1])?);
                let step = match a.get(2) {
                    Some(s) => needi(s)?,
                    None if start <= end => 1,
                    None => -1,
                };
                if step == 0 || (end - start).signum() * step.signum() < 0 {
                    return Err("GENERATE_SERIES: the step must go from start to end".into());
                }
                let count = (end - start) / step + 1;
                if count > 10_000_000 {
                    return Err(format!("GENERATE_SERIES of {count} values: too many"));
                }
                let values: Vec<i64> = (0..count).map(|i| start + i * step).collect();
                let elem = match ret {
                    DataType::List(f) => f.data_type().clone(),
                    _ => DataType::Int64,
                };
                let array: ArrayRef = Arc::new(arrow::array::Int64Array::from(values));
                let array = arrow::compute::cast(&array, &elem).map_err(|e| e.to_string())?;
                Ok(single_list(
                    Arc::new(Field::new_list_field(elem, true)),
                    array,
                ))
            }),
        // ENTRIES(map, sorted): the entries as STRUCT<K, V>s, by key when `sorted`.
        f("ksql_entries")
            .sig_fn(&[T::Map, T::Any], |a| {
                let (k, v) = match &a[0] {
                    DataType::Map(entries, _) => match entries.data_type() {
                        DataType::Struct(fs) if fs.len() == 2 => {
                            (fs[0].data_type().clone(), fs[1].data_type().clone())
                        }
                        _ => (DataType::Utf8, DataType::Null),
                    },
                    _ => (DataType::Utf8, DataType::Null),
                };
                let entry = DataType::Struct(
                    vec![Field::new("K", k, true), Field::new("V", v, true)].into(),
                );
                DataType::List(Arc::new(Field::new_list_field(entry, true)))
            })
            .eval(|a, ret| {
                let ScalarValue::Map(map) = &a[0] else {
                    return Ok(ScalarValue::Null);
                };
                let sorted = matches!(a[1], ScalarValue::Boolean(Some(true)));
                let entries = map.value(0);
                let (keys, values) = (entries.column(0).clone(), entries.column(1).clone());
                let order: Vec<u32> = if sorted {
                    arrow::compute::sort_to_indices(keys.as_ref(), None, None)
                        .map_err(|e| e.to_string())?
                        .values()
                        .to_vec()
                } else {
                    (0..keys.len() as u32).collect()
                };
                let order = arrow::array::UInt32Array::from(order);
                let take = |c: &ArrayRef| {
                    arrow::compute::take(c.as_ref(), &order, None).map_err(|e| e.to_string())
                };
                let DataType::List(item) = ret else {
                    return Err("ENTRIES returns a list".into());
                };
                let DataType::Struct(fields) = item.data_type() else {
                    return Err("ENTRIES returns structs".into());
                };
                let structs = arrow::array::StructArray::try_new(
                    fields.clone(),
                    vec![take(&keys)?, take(&values)?],
                    None,
                )
                .map_err(|e| e.to_string())?;
                Ok(single_list(item.clone(), Arc::new(structs)))
            }),
        // LPAD/RPAD as ksqlDB's: NULL for a negative length or empty padding; the input
        // cut to the length when longer; characters for strings, bytes for BYTES.
        f("ksql_lpad")
            .sig(&[T::Str, T::Int, T::Str], D::Utf8)
            .sig(&[T::Bytes, T::Int, T::Bytes], D::Binary)
            .eval(|a, _| pad(a, true)),
        f("ksql_rpad")
            .sig(&[T::Str, T::Int, T::Str], D::Utf8)
            .sig(&[T::Bytes, T::Int, T::Bytes], D::Binary)
            .eval(|a, _| pad(a, false)),
        // The sum of a list's elements (nulls skipped; NULL for a null or empty list):
        // what SUM_LIST adds up per row.
        f("ksql_list_sum")
            .sig_fn(&[T::Arr], |a| match &a[0] {
                DataType::List(f) => match f.data_type() {
                    DataType::Int8 | DataType::Int16 | DataType::Int32 => DataType::Int32,
                    DataType::Int64 => DataType::Int64,
                    _ => DataType::Float64,
                },
                _ => DataType::Float64,
            })
            .eval(|a, ret| {
                let ScalarValue::List(list) = &a[0] else {
                    return Ok(ScalarValue::Null);
                };
                let items = list.value(0);
                let mut total: Option<ScalarValue> = None;
                for i in 0..items.len() {
                    if items.is_null(i) {
                        continue;
                    }
                    let v = ScalarValue::try_from_array(&items, i)
                        .and_then(|v| v.cast_to(ret))
                        .map_err(|e| e.to_string())?;
                    total = Some(match total {
                        None => v,
                        Some(t) => t.add_checked(&v).map_err(|e| e.to_string())?,
                    });
                }
                Ok(total.unwrap_or(ScalarValue::Null))
            }),
        // ARRAY_JOIN(list [, delimiter]): elements as ksqlDB writes them ("null" for a
        // null element), joined by the delimiter (`,` when not given, none when NULL).
        f("ksql_array_join")
            .sig(&[T::Arr], D::Utf8)
            .sig(&[T::Arr, T::Str], D::Utf8)
            .pass_nulls()
            .eval(|a, _| {
                let Some(items) = list_items(&a[0]) else {
                    return Ok(ScalarValue::Null);
                };
                let delimiter = match a.get(1) {
                    None => ",",
                    Some(d) => s(d).unwrap_or(""),
                };
                let ty = crate::types::sql_type_of(items.data_type()).map_err(|e| e.to_string())?;
                let text: Vec<String> = (0..items.len())
                    .map(|i| match weir_format::convert::value_at(&items, i, &ty) {
                        Json::String(s) => s,
                        other => other.to_string(),
                    })
                    .collect();
                Ok(str_val(text.join(delimiter)))
            }),
        // CUBE_EXPLODE(list) is EXPLODE(ksql_cube(list)): every combination of the list
        // with each element kept or nulled, first element most significant, combinations
        // that keep a null element left out (they repeat one that nulls it).
        f("ksql_cube")
            .sig_fn(&[T::Arr], |a| {
                DataType::List(Arc::new(Field::new_list_field(a[0].clone(), true)))
            })
            .eval(|a, ret| {
                let ScalarValue::List(list) = &a[0] else {
                    return Ok(ScalarValue::Null);
                };
                let items = list.value(0);
                let n = items.len();
                if n > 16 {
                    return Err(format!("CUBE_EXPLODE of {n} elements: at most 16"));
                }
                let mut indices: Vec<Option<u32>> = Vec::new();
                let mut lengths = Vec::new();
                for mask in 0u32..(1 << n) {
                    let keeps = |i: usize| mask & (1 << (n - 1 - i)) != 0;
                    if (0..n).any(|i| keeps(i) && items.is_null(i)) {
                        continue;
                    }
                    indices.extend((0..n).map(|i| keeps(i).then_some(i as u32)));
                    lengths.push(n);
                }
                let values = arrow::compute::take(
                    items.as_ref(),
                    &arrow::array::UInt32Array::from(indices),
                    None,
                )
                .map_err(|e| e.to_string())?;
                let DataType::List(outer) = ret else {
                    return Err("ksql_cube returns a list".into());
                };
                let DataType::List(inner) = outer.data_type() else {
                    return Err("ksql_cube returns a list of lists".into());
                };
                let combos = ListArray::new(
                    inner.clone(),
                    arrow::buffer::OffsetBuffer::from_lengths(lengths.iter().copied()),
                    values,
                    None,
                );
                Ok(single_list(outer.clone(), Arc::new(combos)))
            }),
        f("as_map")
            .sig_fn(&[T::Arr, T::Arr], |a| {
                let item = |t: &DataType| match t {
                    DataType::List(f) => f.data_type().clone(),
                    _ => DataType::Utf8,
                };
                crate::types::map_type(item(&a[0]), item(&a[1]))
            })
            .eval(|a, ret| {
                let (ScalarValue::List(ks), ScalarValue::List(vs)) = (&a[0], &a[1]) else {
                    return Ok(ScalarValue::Null);
                };
                let (ks, vs) = (ks.value(0), vs.value(0));
                let n = ks.len().min(vs.len());
                let mut keys = Vec::new();
                let mut vals = Vec::new();
                for row in 0..n {
                    let k = ScalarValue::try_from_array(&ks, row).map_err(|e| e.to_string())?;
                    if k.is_null() {
                        continue;
                    }
                    let v = ScalarValue::try_from_array(&vs, row).map_err(|e| e.to_string())?;
                    upsert(&mut keys, &mut vals, k, v);
                }
                build_map(ret, keys, vals)
            }),
        f("map_union")
            .sig_fn(&[T::Map, T::Map], |a| {
                if a[0] == DataType::Null {
                    a[1].clone()
                } else {
                    a[0].clone()
                }
            })
            .pass_nulls()
            .eval(|a, ret| {
                let mut keys: Vec<ScalarValue> = Vec::new();
                let mut vals: Vec<ScalarValue> = Vec::new();
                let mut any = false;
                for m in a {
                    let ScalarValue::Map(m) = m else { continue };
                    if m.is_null(0) {
                        continue;
                    }
                    any = true;
                    let entries = m.value(0);
                    for row in 0..entries.len() {
                        let k = ScalarValue::try_from_array(entries.column(0), row)
                            .map_err(|e| e.to_string())?;
                        let v = ScalarValue::try_from_array(entries.column(1), row)
                            .map_err(|e| e.to_string())?;
                        upsert(&mut keys, &mut vals, k, v);
                    }
                }
                if !any {
                    return Ok(ScalarValue::Null);
                }
                build_map(ret, keys, vals)
            }),
    ]
}

/// Sets a map entry, keeping first-insertion order: a later value for a key wins.
fn upsert(
    keys: &mut Vec<ScalarValue>,
    vals: &mut Vec<ScalarValue>,
    k: ScalarValue,
    v: ScalarValue,
) {
    match keys.iter().position(|x| x == &k) {
        Some(p) => vals[p] = v,
        None => {
            keys.push(k);
            vals.push(v);
        }
    }
}

/// The items of a one-row list that is not NULL; `None` for NULL or another value.
fn list_items(v: &ScalarValue) -> Option<ArrayRef> {
    match v {
        ScalarValue::List(list) if !list.is_null(0) => Some(list.value(0)),
        _ => None,
    }
}

/// A one-row list of `values`, typed as the list `like`.
fn one_list(like: &ScalarValue, values: ArrayRef) -> ScalarValue {
    single_list(list_field(like), values)
}

/// A one-row list of `values`, whose item field is `item`.
fn single_list(item: Arc<Field>, values: ArrayRef) -> ScalarValue {
    ScalarValue::List(Arc::new(ListArray::new(
        item,
        arrow::buffer::OffsetBuffer::from_lengths([values.len()]),
        values,
        None,
    )))
}

fn list_field(v: &ScalarValue) -> Arc<Field> {
    match v.data_type() {
        DataType::List(f) => f,
        _ => Arc::new(Field::new("item", DataType::Null, true)),
    }
}

fn build_map(
    ret: &DataType,
    keys: Vec<ScalarValue>,
    vals: Vec<ScalarValue>,
) -> std::result::Result<ScalarValue, String> {
    let DataType::Map(entries, sorted) = ret else {
        return Err("not a map type".into());
    };
    let DataType::Struct(fields) = entries.data_type() else {
        return Err("not a map type".into());
    };
    let n = keys.len();
    let to_array =
        |vals: Vec<ScalarValue>, ty: &DataType| -> std::result::Result<ArrayRef, String> {
            if vals.is_empty() {
                return Ok(arrow::array::new_empty_array(ty));
            }
            let a = ScalarValue::iter_to_array(vals).map_err(|e| e.to_string())?;
            arrow::compute::cast(&a, ty).map_err(|e| e.to_string())
        };
    let k = to_array(keys, fields[0].data_type())?;
    let v = to_array(vals, fields[1].data_type())?;
    let st = arrow::array::StructArray::try_new(fields.clone(), vec![k, v], None)
        .map_err(|e| e.to_string())?;
    let map = arrow::array::MapArray::try_new(
        entries.clone(),
        arrow::buffer::OffsetBuffer::from_lengths([n]),
        st,
        None,
        *sorted,
    )
    .map_err(|e| e.to_string())?;
    Ok(ScalarValue::Map(Arc::new(map)))
}

/// `BigDecimal.valueOf(x).setScale(places, HALF_UP)`: rounds the shortest decimal text of
/// `x`, so 1.005 is 1.01 as in Java, not 1.00 as its binary value would give.
fn round_half_up(x: f64, places: i64) -> f64 {
    if !x.is_finite() {
        return x;
    }
    let text = format!("{x:e}");
    let (mantissa, exp) = text.split_once('e').expect("{:e} has an exponent");
    let exp: i64 = exp.parse().expect("an integer exponent");
    let negative = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(|c| c.is_ascii_digit()).collect();
    // value = 0.d1d2d3... * 10^(exp + 1); keep digits up to 10^-places.
    let point = exp + 1;
    let keep = point + places;
    if keep < 0 {
        return 0.0;
    }
    let keep = keep as usize;
    let mut kept: Vec<u8> = digits.bytes().take(keep).map(|b| b - b'0').collect();
    kept.resize(keep, 0);
    // Half up for positive numbers, half down for negative ones: ties go toward positive
    // infinity, as Java's Math.round, which ksqlDB's ROUND follows.
    let rest = digits.as_bytes().get(keep..).unwrap_or(&[]);
    let round_up = match rest.split_first() {
        Some((first, more)) if negative => {
            *first > b'5' || (*first == b'5' && more.iter().any(|d| *d != b'0'))
        }
        Some((first, _)) => *first >= b'5',
        None => false,
    };
    let mut value: f64 = 0.0;
    for dgt in &kept {
        value = value * 10.0 + *dgt as f64;
    }
    if round_up {
        value += 1.0;
    }
    // value is the rounded number * 10^places.
    let scaled = if places >= 0 {
        value / 10f64.powi(places as i32)
    } else {
        value * 10f64.powi((-places) as i32)
    };
    if negative && scaled != 0.0 {
        -scaled
    } else {
        scaled
    }
}

/// `(millis, pattern [, zone])` as text: TIMESTAMPTOSTRING and FORMAT_TIMESTAMP.
fn format_instant(a: &[ScalarValue], _: &DataType) -> std::result::Result<ScalarValue, String> {
    let z = zone_arg(a, 2)?;
    Ok(str_val(javatime::format_millis(
        needi(&a[0])?,
        need(&a[1])?,
        z,
    )?))
}

/// `(days, pattern)` as text: DATETOSTRING and FORMAT_DATE.
fn format_days(a: &[ScalarValue], _: &DataType) -> std::result::Result<ScalarValue, String> {
    Ok(str_val(javatime::format_millis(
        needi(&a[0])? * 86_400_000,
        need(&a[1])?,
        Zone::UTC,
    )?))
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn add_date(a: &[ScalarValue], sign: i64) -> std::result::Result<ScalarValue, String> {
    let unit = unit_millis(need(&a[0])?)?;
    let days = needi(&a[2])? * 86_400_000 + sign * needi(&a[1])? * unit;
    Ok(ScalarValue::Date32(
        Some(days.div_euclid(86_400_000) as i32),
    ))
}

fn add_time(a: &[ScalarValue], sign: i64) -> std::result::Result<ScalarValue, String> {
    let unit = unit_millis(need(&a[0])?)?;
    let t = (needi(&a[2])? + sign * needi(&a[1])? * unit).rem_euclid(86_400_000);
    Ok(ScalarValue::Time32Millisecond(Some(t as i32)))
}

fn add_ts(a: &[ScalarValue], sign: i64) -> std::result::Result<ScalarValue, String> {
    let unit = unit_millis(need(&a[0])?)?;
    Ok(ScalarValue::TimestampMillisecond(
        Some(needi(&a[2])? + sign * needi(&a[1])? * unit),
        None,
    ))
}
