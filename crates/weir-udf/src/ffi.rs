//! The plugin side of the ABI: what `export_plugin!`'s C symbols call. Every entry point
//! catches panics, so a failing function becomes an error message for the host, never an
//! unwind across the boundary.

use std::collections::HashMap;
use std::ffi::{CStr, CString, c_char, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;

use arrow::array::{ArrayRef, make_array};
use arrow::ffi::{FFI_ArrowArray, FFI_ArrowSchema, from_ffi, to_ffi};

use crate::{Aggregate, Plugin};

/// Runs `f`, turning an error or a panic into `*err` and a non-zero return.
fn guarded(err: *mut *mut c_char, f: impl FnOnce() -> Result<(), String>) -> i32 {
    let message = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => return 0,
        Ok(Err(m)) => m,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            format!("the function panicked: {what}")
        }
    };
    if !err.is_null() {
        let c = CString::new(message.replace('\0', " ")).unwrap_or_default();
        // SAFETY: the host passes a valid place for the error pointer.
        unsafe { *err = c.into_raw() };
    }
    1
}

pub fn metadata(plugin: fn() -> &'static Plugin) -> *const c_char {
    static TEXT: OnceLock<CString> = OnceLock::new();
    TEXT.get_or_init(|| {
        let json = catch_unwind(|| plugin().metadata().to_string())
            .unwrap_or_else(|_| "{\"error\": \"the plugin panicked describing itself\"}".into());
        CString::new(json).unwrap_or_default()
    })
    .as_ptr()
}

/// # Safety
/// `json` is NUL-terminated; `err` is a valid place for an error pointer.
pub unsafe fn configure(json: *const c_char, err: *mut *mut c_char) -> i32 {
    guarded(err, || {
        if json.is_null() {
            return Err("no config".into());
        }
        // SAFETY: the host passes a NUL-terminated string.
        let text = unsafe { CStr::from_ptr(json) }
            .to_str()
            .map_err(|e| e.to_string())?;
        let values: HashMap<String, String> = serde_json::from_str(text)
            .map_err(|e| format!("config is not a JSON object of strings: {e}"))?;
        crate::set_config(values);
        Ok(())
    })
}

/// Moves `n` argument arrays in from the host.
///
/// # Safety
/// `args` and `schemas` point to `n` valid structures each.
unsafe fn import_args(
    args: *mut FFI_ArrowArray,
    schemas: *const FFI_ArrowSchema,
    n: u32,
) -> Result<Vec<ArrayRef>, String> {
    (0..n as usize)
        .map(|i| {
            // SAFETY: the ABI moves each argument array to the plugin.
            let array = unsafe { FFI_ArrowArray::from_raw(args.add(i)) };
            // SAFETY: the schema stays the host's; it is only read.
            let schema = unsafe { &*schemas.add(i) };
            let data = unsafe { from_ffi(array, schema) }.map_err(|e| e.to_string())?;
            Ok(make_array(data))
        })
        .collect()
}

/// Moves a result array out to the host.
///
/// # Safety
/// `out` and `out_schema` are valid places to write to.
unsafe fn export(
    array: ArrayRef,
    out: *mut FFI_ArrowArray,
    out_schema: *mut FFI_ArrowSchema,
) -> Result<(), String> {
    let (a, s) = to_ffi(&array.to_data()).map_err(|e| e.to_string())?;
    // SAFETY: the host gives places for the result; they hold no live structure.
    unsafe {
        std::ptr::write(out, a);
        std::ptr::write(out_schema, s);
    }
    Ok(())
}

/// # Safety
/// As the ABI says for `weir_udf_invoke`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn invoke(
    plugin: &Plugin,
    function: u32,
    args: *mut FFI_ArrowArray,
    schemas: *const FFI_ArrowSchema,
    n: u32,
    rows: u64,
    out: *mut FFI_ArrowArray,
    out_schema: *mut FFI_ArrowSchema,
    err: *mut *mut c_char,
) -> i32 {
    crate::clear_warnings();
    guarded(err, || {
        // SAFETY: per the ABI.
        let args = unsafe { import_args(args, schemas, n) }?;
        let def = plugin
            .scalars
            .get(function as usize)
            .ok_or_else(|| format!("no scalar function #{function}"))?;
        let result = (def.invoke)(&args, rows as usize)?;
        if result.len() != rows as usize {
            return Err(format!(
                "{} returned {} rows for a batch of {rows}",
                def.name,
                result.len()
            ));
        }
        // SAFETY: per the ABI.
        unsafe { export(result, out, out_schema) }
    })
}

type State = Box<dyn Aggregate>;

pub fn agg_new(plugin: &Plugin, function: u32) -> *mut c_void {
    match catch_unwind(AssertUnwindSafe(|| {
        plugin.aggregates.get(function as usize).map(|d| (d.new)())
    })) {
        Ok(Some(state)) => Box::into_raw(Box::new(state)) as *mut c_void,
        _ => std::ptr::null_mut(),
    }
}

/// # Safety
/// `state` came from `agg_new` and is not freed.
unsafe fn state<'a>(state: *mut c_void) -> Result<&'a mut State, String> {
    if state.is_null() {
        return Err("no aggregate state".into());
    }
    // SAFETY: as above.
    Ok(unsafe { &mut *(state as *mut State) })
}

/// # Safety
/// As the ABI says for `weir_udf_agg_update`.
pub unsafe fn agg_update(
    s: *mut c_void,
    args: *mut FFI_ArrowArray,
    schemas: *const FFI_ArrowSchema,
    n: u32,
    err: *mut *mut c_char,
) -> i32 {
    guarded(err, || {
        // SAFETY: per the ABI.
        let args = unsafe { import_args(args, schemas, n) }?;
        unsafe { state(s) }?.update(&args)
    })
}

/// # Safety
/// As the ABI says for `weir_udf_agg_state`.
pub unsafe fn agg_state(
    s: *mut c_void,
    bytes: *mut *mut u8,
    len: *mut u64,
    err: *mut *mut c_char,
) -> i32 {
    guarded(err, || {
        let data = unsafe { state(s) }?.state().into_boxed_slice();
        let n = data.len();
        let ptr = Box::into_raw(data) as *mut u8;
        // SAFETY: the host gives places for the pointer and length.
        unsafe {
            *bytes = ptr;
            *len = n as u64;
        }
        Ok(())
    })
}

/// # Safety
/// As the ABI says for `weir_udf_agg_merge`.
pub unsafe fn agg_merge(s: *mut c_void, bytes: *const u8, len: u64, err: *mut *mut c_char) -> i32 {
    guarded(err, || {
        let data: &[u8] = if len == 0 {
            &[]
        } else {
            // SAFETY: the host passes `len` readable bytes.
            unsafe { std::slice::from_raw_parts(bytes, len as usize) }
        };
        unsafe { state(s) }?.merge(data)
    })
}

/// # Safety
/// As the ABI says for `weir_udf_agg_result`.
pub unsafe fn agg_result(
    s: *mut c_void,
    out: *mut FFI_ArrowArray,
    out_schema: *mut FFI_ArrowSchema,
    err: *mut *mut c_char,
) -> i32 {
    guarded(err, || {
        let result = unsafe { state(s) }?.result()?;
        unsafe { export(result, out, out_schema) }
    })
}

/// # Safety
/// `s` came from `agg_new`; freed once.
pub unsafe fn agg_free(s: *mut c_void) {
    if !s.is_null() {
        // SAFETY: as above.
        drop(unsafe { Box::from_raw(s as *mut State) });
    }
}

/// # Safety
/// Bytes from `agg_state`, freed once.
pub unsafe fn free_bytes(bytes: *mut u8, len: u64) {
    if !bytes.is_null() {
        // SAFETY: as above: a boxed slice of `len` bytes.
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(bytes, len as usize)) });
    }
}

/// # Safety
/// A string from this plugin, freed once.
pub unsafe fn free_string(s: *mut c_char) {
    if !s.is_null() {
        // SAFETY: as above: made by CString::into_raw.
        drop(unsafe { CString::from_raw(s) });
    }
}

/// # Safety
/// `out` is a valid place for a string pointer.
pub unsafe fn take_warnings(out: *mut *mut c_char) -> i32 {
    let warnings = crate::drain_warnings();
    if out.is_null() {
        return 1;
    }
    let text = if warnings.is_empty() {
        std::ptr::null_mut()
    } else {
        let json = serde_json::Value::Array(
            warnings
                .into_iter()
                .map(|(row, message)| serde_json::json!({"row": row, "message": message}))
                .collect(),
        );
        CString::new(json.to_string().replace('\0', " "))
            .unwrap_or_default()
            .into_raw()
    };
    // SAFETY: checked non-null above; the host frees it with weir_udf_free_string.
    unsafe { *out = text };
    0
}
