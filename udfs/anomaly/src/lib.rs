//! The connected-car demo's anomaly detector as a Weir plugin: an autoencoder (ONNX, run
//! by ONNX Runtime through `ort`) scores 210 sensor readings by how badly it can
//! reconstruct them.
//!
//! - `ANOMALY(sensorinput VARCHAR) -> VARCHAR`: the demo's contract. Split on `#`, trim,
//!   210 readings; the mean squared reconstruction error, as a string. Input that does not
//!   hold 210 numbers gives NULL and a row warning (the server's processing log).
//! - `ANOMALY_SCORE(VARCHAR) -> DOUBLE` and `ANOMALY_SCORE(ARRAY<DOUBLE>) -> DOUBLE`: the
//!   same score as a number.
//!
//! Every call scores its whole batch in one inference run. The ONNX session is created
//! once per load of the plugin, on first use.
//!
//! Config (server properties `weir.functions.anomaly.<key>`):
//! - `model`: an `.onnx` file to use instead; default `anomaly.onnx` beside the plugin
//!   file, else the demo's model, which is built into the plugin (`model/anomaly.onnx`),
//!   so the `.so` alone is enough.
//! - `ort_library`: ONNX Runtime's shared library; default `ORT_DYLIB_PATH`, else
//!   `libonnxruntime.so.1.31.1` beside the plugin file.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use ort::session::Session;
use ort::value::Tensor;
use weir_udf::arrow::array::{
    Array, ArrayRef, Float64Array, Float64Builder, ListArray, StringArray, StringBuilder,
};
use weir_udf::udf;

/// Readings per message, as the demo's model takes them.
pub const READINGS: usize = 210;
const ORT_LIBRARY: &str = "libonnxruntime.so.1.31.1";

fn config(key: &str) -> Option<String> {
    weir_udf::config("anomaly", key)
        .or_else(|| weir_udf::config("anomaly_score", key))
        .filter(|v| !v.trim().is_empty())
}

/// The folder the plugin file was found in.
fn plugin_dir() -> Option<PathBuf> {
    weir_udf::config("plugin", "path").and_then(|p| Path::new(&p).parent().map(Path::to_path_buf))
}

fn first_existing(candidates: Vec<Option<PathBuf>>) -> Option<PathBuf> {
    candidates.into_iter().flatten().find(|p| p.exists())
}

/// The demo's autoencoder, built in: the plugin file needs nothing beside it but ONNX
/// Runtime.
const BUILT_IN_MODEL: &[u8] = include_bytes!("../model/anomaly.onnx");

/// A model file to load instead of the built-in one: configured, or beside the plugin.
pub fn model_path() -> Option<PathBuf> {
    match config("model") {
        Some(p) => Some(PathBuf::from(p)),
        None => first_existing(vec![plugin_dir().map(|d| d.join("anomaly.onnx"))]),
    }
}

pub fn ort_library() -> Option<PathBuf> {
    match config("ort_library") {
        Some(p) => Some(PathBuf::from(p)),
        None => first_existing(vec![
            std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from),
            plugin_dir().map(|d| d.join(ORT_LIBRARY)),
        ]),
    }
}

type Model = Result<Arc<Mutex<Session>>, String>;

/// The session, loaded on first use (once per load of this plugin).
fn model() -> Result<Arc<Mutex<Session>>, String> {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(load).clone()
}

fn load() -> Model {
    let library = ort_library().ok_or(
        "no ONNX Runtime library: set weir.functions.anomaly.ort_library or ORT_DYLIB_PATH, or put libonnxruntime.so.1.31.1 beside the plugin (the onnxruntime==1.31.1 wheel from PyPI has it; scripts/demo.sh fetches it into .weir/lib)",
    )?;
    let env = ort::init_from(&library)
        .map_err(|e| format!("loading ONNX Runtime from {}: {e}", library.display()))?
        .with_name("weir-anomaly")
        .build()
        .map_err(|e| format!("starting ONNX Runtime: {e}"))?;
    let mut builder = Session::builder(&env).map_err(|e| format!("starting ONNX Runtime: {e}"))?;
    let session = match model_path() {
        Some(model) => builder
            .commit_from_file(&model)
            .map_err(|e| format!("loading the model {}: {e}", model.display()))?,
        None => builder
            .commit_from_memory(BUILT_IN_MODEL)
            .map_err(|e| format!("loading the built-in model: {e}"))?,
    };
    Ok(Arc::new(Mutex::new(session)))
}

/// Parses the demo's `r1# r2# ...`: 210 numbers, split on `#`, trimmed.
pub fn parse_readings(text: &str) -> Result<Vec<f64>, String> {
    let out = weir_udf::parse_numbers(text, '#', "reading")?;
    if out.len() != READINGS {
        return Err(format!(
            "{} readings, the model takes {READINGS}",
            out.len()
        ));
    }
    Ok(out)
}

/// Scores rows of 210 readings in one inference run: the mean squared reconstruction
/// error of each, in the readings' units.
pub fn score(rows: &[Vec<f64>]) -> Result<Vec<f64>, String> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    // The session first: it loads ONNX Runtime from the configured library, which must
    // happen before any other ort call (a tensor would load the default one).
    let session = model()?;
    let flat: Vec<f32> = rows.iter().flatten().map(|v| *v as f32).collect();
    let input = Tensor::from_array(([rows.len(), READINGS], flat)).map_err(|e| e.to_string())?;
    let mut session = session.lock().unwrap_or_else(|e| e.into_inner());
    let outputs = session
        .run(ort::inputs!["sensor" => input])
        .map_err(|e| format!("inference failed: {e}"))?;
    let (_, recon) = outputs["reconstruction"]
        .try_extract_tensor::<f32>()
        .map_err(|e| e.to_string())?;
    Ok(rows
        .iter()
        .enumerate()
        .map(|(r, x)| {
            let rec = &recon[r * READINGS..(r + 1) * READINGS];
            x.iter()
                .zip(rec)
                .map(|(a, b)| (a - *b as f64).powi(2))
                .sum::<f64>()
                / READINGS as f64
        })
        .collect())
}

/// Rows per thread below which a batch is parsed on the calling thread alone.
const MIN_ROWS_PER_THREAD: usize = 256;

/// `parse` of every row, in row order. Turning 210 numbers of text into doubles costs more
/// than the batch's inference, so a large batch is split across the machine's cores.
fn parse_rows<T: Send>(rows: usize, parse: &(impl Fn(usize) -> T + Sync)) -> Vec<T> {
    // Asking the system reads cgroup files: once per load, not per call.
    static CORES: OnceLock<usize> = OnceLock::new();
    let cores = *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let threads = cores.min(rows / MIN_ROWS_PER_THREAD).max(1);
    if threads == 1 {
        return (0..rows).map(parse).collect();
    }
    let chunk = rows.div_ceil(threads);
    std::thread::scope(|scope| {
        let parts: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    (t * chunk..rows.min((t + 1) * chunk))
                        .map(parse)
                        .collect::<Vec<T>>()
                })
            })
            .collect();
        // A panic in a part is the call's panic, which the SDK turns into an error.
        parts
            .into_iter()
            .flat_map(|p| p.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

/// Scores the rows that parse; the others are NULL with a row warning.
fn score_column(
    rows: usize,
    parse: impl Fn(usize) -> Option<Result<Vec<f64>, String>> + Sync,
) -> Result<Vec<Option<f64>>, String> {
    let mut good = Vec::new();
    let mut at = Vec::new();
    // Row warnings are the calling thread's: recorded here, not where rows are parsed.
    for (row, parsed) in parse_rows(rows, &parse).into_iter().enumerate() {
        match parsed {
            None => {}
            Some(Ok(values)) => {
                at.push(row);
                good.push(values);
            }
            Some(Err(why)) => weir_udf::row_warning(row, why),
        }
    }
    let scores = score(&good)?;
    let mut out = vec![None; rows];
    for (row, s) in at.into_iter().zip(scores) {
        out[row] = Some(s);
    }
    Ok(out)
}

fn strings(args: &[ArrayRef]) -> Result<&StringArray, String> {
    args.first()
        .and_then(|a| a.as_any().downcast_ref::<StringArray>())
        .ok_or_else(|| "expected a VARCHAR argument".to_string())
}

fn text_scores(args: &[ArrayRef], rows: usize) -> Result<Vec<Option<f64>>, String> {
    let input = strings(args)?;
    score_column(rows, |r| {
        (!input.is_null(r)).then(|| parse_readings(input.value(r)))
    })
}

#[udf(
    batch,
    args = "sensorinput STRING",
    returns = "STRING",
    description = "Mean squared reconstruction error of 210 '#'-separated readings under the autoencoder, as a string (the demo's contract); NULL if they do not parse",
    config = "model, ort_library"
)]
fn anomaly(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    let mut out = StringBuilder::new();
    for s in text_scores(args, rows)? {
        out.append_option(s.map(|v| v.to_string()));
    }
    Ok(Arc::new(out.finish()))
}

#[udf(
    batch,
    name = "ANOMALY_SCORE",
    args = "sensorinput STRING",
    returns = "DOUBLE",
    description = "Mean squared reconstruction error of 210 '#'-separated readings, as a number",
    config = "model, ort_library"
)]
fn anomaly_score_text(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    Ok(Arc::new(Float64Array::from(text_scores(args, rows)?)))
}

#[udf(
    batch,
    name = "ANOMALY_SCORE",
    args = "readings ARRAY<DOUBLE>",
    returns = "DOUBLE",
    description = "Mean squared reconstruction error of an array of 210 readings",
    config = "model, ort_library"
)]
fn anomaly_score_array(args: &[ArrayRef], rows: usize) -> Result<ArrayRef, String> {
    let list = args
        .first()
        .and_then(|a| a.as_any().downcast_ref::<ListArray>())
        .ok_or("expected an ARRAY<DOUBLE> argument")?;
    let scores = score_column(rows, |r| {
        if list.is_null(r) {
            return None;
        }
        let values = list.value(r);
        let Some(values) = values.as_any().downcast_ref::<Float64Array>() else {
            return Some(Err("expected ARRAY<DOUBLE>".into()));
        };
        if values.null_count() > 0 {
            return Some(Err("the array holds NULLs".into()));
        }
        if values.len() != READINGS {
            return Some(Err(format!(
                "{} readings, the model takes {READINGS}",
                values.len()
            )));
        }
        Some(Ok(values.values().to_vec()))
    })?;
    let mut out = Float64Builder::with_capacity(rows);
    for s in scores {
        out.append_option(s);
    }
    Ok(Arc::new(out.finish()))
}

weir_udf::export_plugin! {
    library: "anomaly",
    version: env!("CARGO_PKG_VERSION"),
    author: "Weir",
    description: "The connected-car demo's autoencoder anomaly score (ONNX Runtime)",
    scalars: [anomaly, anomaly_score_text, anomaly_score_array],
    aggregates: [],
}
