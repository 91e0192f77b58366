//! The host side of Weir's plugin ABI (`weir_udf`): loading a plugin library, checking
//! it, calling its functions a batch at a time, and watching a plugin folder.
//!
//! A library is copied before it is opened, so replacing the file on disk loads new code
//! (the dynamic loader would hand back the mapped old one for the same path) while
//! queries planned against the old version keep theirs: each function holds an `Arc` of
//! the library it came from, which stays mapped until the last user is gone.

mod scalar;
mod watch;

use std::collections::HashMap;
use std::ffi::{CStr, CString, c_char, c_void};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{ArrayRef, make_array};
use arrow::datatypes::DataType;
use arrow::ffi::{FFI_ArrowArray, FFI_ArrowSchema, from_ffi, to_ffi};
use libloading::Library;
use serde_json::Value;

pub use scalar::PluginScalar;
pub use watch::{Change, PluginDir};

type AbiVersionFn = unsafe extern "C" fn() -> u32;
type MetadataFn = unsafe extern "C" fn() -> *const c_char;
type ConfigureFn = unsafe extern "C" fn(*const c_char, *mut *mut c_char) -> i32;
type InvokeFn = unsafe extern "C" fn(
    u32,
    *mut FFI_ArrowArray,
    *const FFI_ArrowSchema,
    u32,
    u64,
    *mut FFI_ArrowArray,
    *mut FFI_ArrowSchema,
    *mut *mut c_char,
) -> i32;
type AggNewFn = unsafe extern "C" fn(u32) -> *mut c_void;
type AggUpdateFn = unsafe extern "C" fn(
    *mut c_void,
    *mut FFI_ArrowArray,
    *const FFI_ArrowSchema,
    u32,
    *mut *mut c_char,
) -> i32;
type AggStateFn =
    unsafe extern "C" fn(*mut c_void, *mut *mut u8, *mut u64, *mut *mut c_char) -> i32;
type AggMergeFn = unsafe extern "C" fn(*mut c_void, *const u8, u64, *mut *mut c_char) -> i32;
type AggResultFn = unsafe extern "C" fn(
    *mut c_void,
    *mut FFI_ArrowArray,
    *mut FFI_ArrowSchema,
    *mut *mut c_char,
) -> i32;
type AggFreeFn = unsafe extern "C" fn(*mut c_void);
type FreeBytesFn = unsafe extern "C" fn(*mut u8, u64);
type FreeStringFn = unsafe extern "C" fn(*mut c_char);

/// The symbols of a loaded plugin.
struct Api {
    configure: ConfigureFn,
    invoke: InvokeFn,
    agg_new: AggNewFn,
    agg_update: AggUpdateFn,
    agg_state: AggStateFn,
    agg_merge: AggMergeFn,
    agg_result: AggResultFn,
    agg_free: AggFreeFn,
    free_bytes: FreeBytesFn,
    free_string: FreeStringFn,
    /// Optional (plugins built before it lack it): the last call's row warnings.
    take_warnings: Option<TakeWarningsFn>,
}

type TakeWarningsFn = unsafe extern "C" fn(*mut *mut c_char) -> i32;

thread_local! {
    static ROW_WARNINGS: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The row warnings plugin calls on this thread made since the last take, each as
/// `FUNCTION: message` (the engine sends them to the processing log).
pub fn take_row_warnings() -> Vec<String> {
    ROW_WARNINGS.with(|w| std::mem::take(&mut *w.borrow_mut()))
}

/// One function as a plugin describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionMeta {
    /// Upper-cased SQL name.
    pub name: String,
    pub description: String,
    /// Argument names and ksqlDB types.
    pub args: Vec<(String, String)>,
    pub arg_types: Vec<DataType>,
    pub returns: String,
    pub return_type: DataType,
    pub variadic: bool,
    pub deterministic: bool,
    pub config: Vec<String>,
}

/// A plugin library, opened and checked.
pub struct Plugin {
    /// The file in the plugin folder.
    pub path: PathBuf,
    /// Which load of that file this is (1 for the first; a replaced file loads anew).
    pub generation: u64,
    pub library: String,
    pub version: String,
    pub author: String,
    pub description: String,
    pub scalars: Vec<FunctionMeta>,
    pub aggregates: Vec<FunctionMeta>,
    api: Api,
    // Last: dropped after everything that points into it.
    _lib: Library,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("path", &self.path)
            .field("library", &self.library)
            .field("version", &self.version)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

static LOADS: AtomicU64 = AtomicU64::new(0);

fn scratch_dir() -> PathBuf {
    std::env::temp_dir().join(format!("weir-plugins-{}", std::process::id()))
}

fn parse_functions(list: &Value, kind: &str) -> Result<Vec<FunctionMeta>, String> {
    let Some(items) = list.as_array() else {
        return Err(format!("metadata: `{kind}` is not a list"));
    };
    items
        .iter()
        .map(|f| {
            let name = f["name"]
                .as_str()
                .filter(|n| !n.is_empty())
                .ok_or_else(|| format!("metadata: a {kind} entry has no name"))?
                .to_ascii_uppercase();
            let bad_type = |t: &str| format!("metadata: {name}: unknown type '{t}'");
            let mut args = Vec::new();
            let mut arg_types = Vec::new();
            for a in f["args"].as_array().into_iter().flatten() {
                let ty = a["type"].as_str().unwrap_or("");
                arg_types.push(weir_udf::arrow_type(ty).ok_or_else(|| bad_type(ty))?);
                args.push((
                    a["name"].as_str().unwrap_or("").to_string(),
                    ty.to_ascii_uppercase(),
                ));
            }
            let returns = f["returns"].as_str().unwrap_or("").to_string();
            let return_type = weir_udf::arrow_type(&returns).ok_or_else(|| bad_type(&returns))?;
            Ok(FunctionMeta {
                name,
                description: f["description"].as_str().unwrap_or("").to_string(),
                args,
                arg_types,
                returns: returns.to_ascii_uppercase(),
                return_type,
                variadic: f["variadic"].as_bool().unwrap_or(false),
                deterministic: f["deterministic"].as_bool().unwrap_or(true),
                config: f["config"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c.as_str().map(str::to_string))
                    .collect(),
            })
        })
        .collect()
}

impl Plugin {
    /// Opens the library at `path`, checks its ABI version, symbols and metadata, and
    /// hands it `config` (`<function>.<key>` → value, from `weir.functions.*`). The error
    /// says what is wrong with the file.
    pub fn load(path: &Path, config: &HashMap<String, String>) -> Result<Arc<Plugin>, String> {
        let generation = LOADS.fetch_add(1, Ordering::SeqCst) + 1;
        let dir = scratch_dir();
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_else(|| "plugin".into());
        let copy = dir.join(format!("{stem}-{generation}.so"));
        std::fs::copy(path, &copy).map_err(|e| format!("cannot read: {e}"))?;
        let result = Self::open(path, &copy, generation, config);
        // The opened library stays mapped without its file: the copy goes at once, so a
        // process that ends without dropping its plugins (killed, or exiting) leaves no
        // copies behind.
        let _ = std::fs::remove_file(&copy);
        let _ = std::fs::remove_dir(&dir);
        result.map(Arc::new)
    }

    fn open(
        path: &Path,
        copy: &Path,
        generation: u64,
        config: &HashMap<String, String>,
    ) -> Result<Plugin, String> {
        // SAFETY: loading runs the library's initializers; a plugin is trusted code the
        // operator put in the folder. Everything after this goes through the checked ABI.
        let lib = unsafe { Library::new(copy) }.map_err(|e| format!("cannot load: {e}"))?;
        macro_rules! symbol {
            ($name:literal, $ty:ty) => {{
                // SAFETY: the type is the ABI's for this symbol.
                let s = unsafe { lib.get::<$ty>($name) }.map_err(|_| {
                    format!(
                        "missing symbol {} (not a Weir plugin, or built without export_plugin!)",
                        String::from_utf8_lossy(&$name[..$name.len() - 1])
                    )
                })?;
                *s
            }};
        }
        let abi: AbiVersionFn = symbol!(b"weir_udf_abi_version\0", AbiVersionFn);
        // SAFETY: an ABI function without arguments.
        let version = unsafe { abi() };
        if version != weir_udf::ABI_VERSION {
            return Err(format!(
                "built for plugin ABI {version}; this server speaks ABI {} (rebuild it against weir-udf {})",
                weir_udf::ABI_VERSION,
                env!("CARGO_PKG_VERSION")
            ));
        }
        let metadata: MetadataFn = symbol!(b"weir_udf_metadata\0", MetadataFn);
        let api = Api {
            configure: symbol!(b"weir_udf_configure\0", ConfigureFn),
            invoke: symbol!(b"weir_udf_invoke\0", InvokeFn),
            agg_new: symbol!(b"weir_udf_agg_new\0", AggNewFn),
            agg_update: symbol!(b"weir_udf_agg_update\0", AggUpdateFn),
            agg_state: symbol!(b"weir_udf_agg_state\0", AggStateFn),
            agg_merge: symbol!(b"weir_udf_agg_merge\0", AggMergeFn),
            agg_result: symbol!(b"weir_udf_agg_result\0", AggResultFn),
            agg_free: symbol!(b"weir_udf_agg_free\0", AggFreeFn),
            free_bytes: symbol!(b"weir_udf_free_bytes\0", FreeBytesFn),
            free_string: symbol!(b"weir_udf_free_string\0", FreeStringFn),
            // SAFETY: the type is the ABI's for this symbol.
            take_warnings: unsafe { lib.get::<TakeWarningsFn>(b"weir_udf_take_warnings\0") }
                .ok()
                .map(|s| *s),
        };
        // SAFETY: the ABI returns a static NUL-terminated string.
        let text = unsafe {
            let p = metadata();
            if p.is_null() {
                return Err("bad metadata: none".into());
            }
            CStr::from_ptr(p).to_string_lossy().to_string()
        };
        let meta: Value = serde_json::from_str(&text).map_err(|e| format!("bad metadata: {e}"))?;
        if meta["abi"].as_u64() != Some(weir_udf::ABI_VERSION as u64) {
            return Err(format!("bad metadata: abi is {}", meta["abi"]));
        }
        let library = meta["library"]
            .as_str()
            .filter(|l| !l.is_empty())
            .ok_or("bad metadata: no library name")?
            .to_string();
        let scalars =
            parse_functions(&meta["scalars"], "scalars").map_err(|e| format!("bad {e}"))?;
        let aggregates =
            parse_functions(&meta["aggregates"], "aggregates").map_err(|e| format!("bad {e}"))?;
        let plugin = Plugin {
            path: path.to_path_buf(),
            generation,
            library,
            version: meta["version"].as_str().unwrap_or("").to_string(),
            author: meta["author"].as_str().unwrap_or("").to_string(),
            description: meta["description"].as_str().unwrap_or("").to_string(),
            scalars,
            aggregates,
            api,
            _lib: lib,
        };
        // Where the plugin was found (not the copy it runs from): files it ships beside
        // itself (a model) are looked up there. `weir_udf::config("plugin", "path")`.
        let mut config = config.clone();
        config.insert("plugin.path".into(), path.display().to_string());
        let json = serde_json::to_string(&config).unwrap_or_else(|_| "{}".into());
        let json = CString::new(json).map_err(|e| e.to_string())?;
        let mut err = std::ptr::null_mut();
        // SAFETY: per the ABI.
        let rc = unsafe { (plugin.api.configure)(json.as_ptr(), &mut err) };
        if rc != 0 {
            return Err(format!("refused its config: {}", plugin.take_error(err)));
        }
        Ok(plugin)
    }

    fn take_error(&self, err: *mut c_char) -> String {
        if err.is_null() {
            return "failed without a message".into();
        }
        // SAFETY: a string the plugin made, freed by the plugin once.
        unsafe {
            let s = CStr::from_ptr(err).to_string_lossy().to_string();
            (self.api.free_string)(err);
            s
        }
    }

    fn export_args(
        args: &[ArrayRef],
    ) -> Result<(Vec<FFI_ArrowArray>, Vec<FFI_ArrowSchema>), String> {
        let mut arrays = Vec::with_capacity(args.len());
        let mut schemas = Vec::with_capacity(args.len());
        for a in args {
            let (array, schema) = to_ffi(&a.to_data()).map_err(|e| e.to_string())?;
            arrays.push(array);
            schemas.push(schema);
        }
        Ok((arrays, schemas))
    }

    fn import(array: FFI_ArrowArray, schema: FFI_ArrowSchema) -> Result<ArrayRef, String> {
        // SAFETY: the plugin moved a valid array and schema out to us.
        let data = unsafe { from_ffi(array, &schema) }.map_err(|e| e.to_string())?;
        Ok(make_array(data))
    }

    /// Calls scalar function `index` over one batch: one FFI crossing per batch.
    pub fn invoke(&self, index: usize, args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
        let (mut arrays, schemas) = Self::export_args(args)?;
        let mut out = FFI_ArrowArray::empty();
        let mut out_schema = FFI_ArrowSchema::empty();
        let mut err = std::ptr::null_mut();
        // SAFETY: per the ABI; the plugin moves the argument arrays out (leaving them
        // released), and writes the result.
        let rc = unsafe {
            (self.api.invoke)(
                index as u32,
                arrays.as_mut_ptr(),
                schemas.as_ptr(),
                arrays.len() as u32,
                rows as u64,
                &mut out,
                &mut out_schema,
                &mut err,
            )
        };
        if rc != 0 {
            return Err(self.take_error(err));
        }
        self.collect_warnings(index);
        Self::import(out, out_schema)
    }

    /// Moves the plugin's row warnings for its last call into [`take_row_warnings`].
    fn collect_warnings(&self, index: usize) {
        let Some(take) = self.api.take_warnings else {
            return;
        };
        let mut text = std::ptr::null_mut();
        // SAFETY: per the ABI; a non-null result is ours to free.
        if unsafe { take(&mut text) } != 0 || text.is_null() {
            return;
        }
        let json = self.take_error(text);
        let name = self.scalars.get(index).map_or("?", |f| f.name.as_str());
        let warnings: Vec<Value> = serde_json::from_str(&json).unwrap_or_default();
        ROW_WARNINGS.with(|w| {
            w.borrow_mut().extend(
                warnings
                    .iter()
                    .map(|v| format!("{name}: {}", v["message"].as_str().unwrap_or_default())),
            )
        });
    }

    /// A fresh state of aggregate `index`.
    pub fn new_aggregate(self: &Arc<Self>, index: usize) -> Result<AggregateState, String> {
        // SAFETY: per the ABI.
        let ptr = unsafe { (self.api.agg_new)(index as u32) };
        if ptr.is_null() {
            return Err(format!("{}: no aggregate #{index}", self.library));
        }
        Ok(AggregateState {
            plugin: self.clone(),
            ptr,
        })
    }
}

/// The running state of a plugin aggregate over one group.
pub struct AggregateState {
    plugin: Arc<Plugin>,
    ptr: *mut c_void,
}

// SAFETY: the SDK's states are `Send` (`Aggregate: Send`), and each is used by one owner.
unsafe impl Send for AggregateState {}

impl AggregateState {
    pub fn update(&mut self, args: &[ArrayRef]) -> Result<(), String> {
        let (mut arrays, schemas) = Plugin::export_args(args)?;
        let mut err = std::ptr::null_mut();
        // SAFETY: per the ABI.
        let rc = unsafe {
            (self.plugin.api.agg_update)(
                self.ptr,
                arrays.as_mut_ptr(),
                schemas.as_ptr(),
                arrays.len() as u32,
                &mut err,
            )
        };
        if rc != 0 {
            return Err(self.plugin.take_error(err));
        }
        Ok(())
    }

    pub fn state(&self) -> Result<Vec<u8>, String> {
        let mut bytes = std::ptr::null_mut();
        let mut len = 0u64;
        let mut err = std::ptr::null_mut();
        // SAFETY: per the ABI; the bytes are copied, then freed by the plugin.
        unsafe {
            if (self.plugin.api.agg_state)(self.ptr, &mut bytes, &mut len, &mut err) != 0 {
                return Err(self.plugin.take_error(err));
            }
            let copy = if bytes.is_null() {
                vec![]
            } else {
                std::slice::from_raw_parts(bytes, len as usize).to_vec()
            };
            (self.plugin.api.free_bytes)(bytes, len);
            Ok(copy)
        }
    }

    pub fn merge(&mut self, state: &[u8]) -> Result<(), String> {
        let mut err = std::ptr::null_mut();
        // SAFETY: per the ABI.
        let rc = unsafe {
            (self.plugin.api.agg_merge)(self.ptr, state.as_ptr(), state.len() as u64, &mut err)
        };
        if rc != 0 {
            return Err(self.plugin.take_error(err));
        }
        Ok(())
    }

    /// The result, an array of one row.
    pub fn result(&self) -> Result<ArrayRef, String> {
        let mut out = FFI_ArrowArray::empty();
        let mut out_schema = FFI_ArrowSchema::empty();
        let mut err = std::ptr::null_mut();
        // SAFETY: per the ABI.
        let rc =
            unsafe { (self.plugin.api.agg_result)(self.ptr, &mut out, &mut out_schema, &mut err) };
        if rc != 0 {
            return Err(self.plugin.take_error(err));
        }
        Plugin::import(out, out_schema)
    }
}

impl Drop for AggregateState {
    fn drop(&mut self) {
        // SAFETY: the state came from agg_new and is freed once.
        unsafe { (self.plugin.api.agg_free)(self.ptr) }
    }
}

/// `weir.functions.<function>.<key>=value` server properties as the config a plugin
/// gets: `<function>.<key>` → value.
pub fn plugin_config<'a>(
    properties: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> HashMap<String, String> {
    properties
        .into_iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("weir.functions.")
                .or_else(|| k.strip_prefix("ksql.functions."))
                .map(|rest| (rest.to_ascii_lowercase(), v.clone()))
        })
        .collect()
}
