//! Loading the example plugins through the host, and refusing broken ones.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Float64Array, Int64Array};
use weir_udf_host::{Change, Plugin, PluginDir};

/// A plugin library the workspace built (`cargo build --workspace`).
pub fn built(name: &str) -> PathBuf {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let path = target.join("debug").join(format!("lib{name}.so"));
    assert!(
        path.exists(),
        "{} is not built: run `cargo build --workspace` first (scripts/test.sh does)",
        path.display()
    );
    path
}

/// Compiles C source into a shared library: plugins that are broken on purpose.
fn c_library(dir: &Path, name: &str, source: &str) -> PathBuf {
    let c = dir.join(format!("{name}.c"));
    std::fs::write(&c, source).unwrap();
    let so = dir.join(format!("{name}.so"));
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&so)
        .arg(&c)
        .status()
        .expect("a C compiler");
    assert!(status.success());
    so
}

#[test]
fn a_plugin_describes_itself_and_scores_a_whole_batch_per_call() {
    let config = HashMap::from([("haversine.unit".to_string(), "miles".to_string())]);
    let plugin = Plugin::load(&built("multiply"), &config).unwrap();
    assert_eq!(plugin.library, "multiply");
    assert_eq!(plugin.author, "Weir examples");
    let names: Vec<&str> = plugin.scalars.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["MULTIPLY", "MULTIPLY", "HAVERSINE"]);
    assert_eq!(plugin.scalars[0].returns, "BIGINT");
    assert_eq!(plugin.scalars[1].returns, "DOUBLE");
    assert_eq!(plugin.scalars[2].config, ["unit"]);

    let a: ArrayRef = Arc::new(Int64Array::from(vec![Some(2), None, Some(-4)]));
    let b: ArrayRef = Arc::new(Int64Array::from(vec![Some(21), Some(5), Some(3)]));
    let out = plugin.invoke(0, &[a, b], 3).unwrap();
    let out = out.as_any().downcast_ref::<Int64Array>().unwrap();
    assert_eq!(out.iter().collect::<Vec<_>>(), [Some(42), None, Some(-12)]);
    // The copy it was opened from is gone already (a killed process leaves none behind);
    // the loaded library keeps working.
    let scratch = std::env::temp_dir().join(format!("weir-plugins-{}", std::process::id()));
    let left: Vec<_> = std::fs::read_dir(&scratch)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.iter()
            .all(|n| !n.to_string_lossy().starts_with("multiply-")),
        "copies left in {}: {left:?}",
        scratch.display()
    );

    // Berlin to Paris in miles: the config reached the plugin.
    let f = |v: f64| -> ArrayRef { Arc::new(Float64Array::from(vec![v])) };
    let d = plugin
        .invoke(2, &[f(52.52), f(13.405), f(48.8566), f(2.3522)], 1)
        .unwrap();
    let miles = d.as_any().downcast_ref::<Float64Array>().unwrap().value(0);
    assert!((miles - 545.0).abs() < 5.0, "{miles}");
}

#[test]
fn an_aggregate_folds_batches_and_merges_partial_states() {
    let plugin = Plugin::load(&built("spread"), &HashMap::new()).unwrap();
    assert_eq!(plugin.aggregates[0].name, "SPREAD");
    let batch = |v: Vec<Option<f64>>| -> Vec<ArrayRef> { vec![Arc::new(Float64Array::from(v))] };
    let mut left = plugin.new_aggregate(0).unwrap();
    left.update(&batch(vec![Some(3.0), None, Some(7.5)]))
        .unwrap();
    let mut right = plugin.new_aggregate(0).unwrap();
    right.update(&batch(vec![Some(-1.0)])).unwrap();
    left.merge(&right.state().unwrap()).unwrap();
    let result = left.result().unwrap();
    let result = result.as_any().downcast_ref::<Float64Array>().unwrap();
    assert_eq!(result.value(0), 8.5);
    assert!(
        left.merge(&[1, 2, 3])
            .unwrap_err()
            .contains("not one of mine")
    );
}

#[test]
fn a_panic_or_an_error_in_a_plugin_is_an_error_for_the_caller_not_a_crash() {
    let plugin = Plugin::load(&built("faulty"), &HashMap::new()).unwrap();
    let x = |v: Vec<i64>| -> Vec<ArrayRef> { vec![Arc::new(Int64Array::from(v))] };
    let err = plugin.invoke(0, &x(vec![1, -5, 3]), 3).unwrap_err();
    assert!(
        err.contains("panicked") && err.contains("negative input -5"),
        "{err}"
    );
    let err = plugin.invoke(0, &x(vec![0]), 1).unwrap_err();
    assert!(err.contains("zero is not allowed"), "{err}");
    // And the plugin still works afterwards.
    let ok = plugin.invoke(0, &x(vec![7]), 1).unwrap();
    assert_eq!(
        ok.as_any().downcast_ref::<Int64Array>().unwrap().value(0),
        7
    );
}

#[test]
fn libraries_that_are_not_weir_plugins_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_library = dir.path().join("junk.so");
    std::fs::write(&not_a_library, b"not an ELF file").unwrap();
    assert!(
        Plugin::load(&not_a_library, &HashMap::new())
            .unwrap_err()
            .contains("cannot load")
    );

    let other_abi = c_library(
        dir.path(),
        "other_abi",
        "unsigned weir_udf_abi_version(void) { return 99; }",
    );
    let err = Plugin::load(&other_abi, &HashMap::new()).unwrap_err();
    assert!(err.contains("ABI 99") && err.contains("ABI 1"), "{err}");

    let missing = c_library(
        dir.path(),
        "missing",
        "unsigned weir_udf_abi_version(void) { return 1; }",
    );
    let err = Plugin::load(&missing, &HashMap::new()).unwrap_err();
    assert!(err.contains("missing symbol weir_udf_metadata"), "{err}");
}

#[test]
fn the_folder_watch_loads_replaces_and_forgets_plugins() {
    let dir = tempfile::tempdir().unwrap();
    let mut watch = PluginDir::new(dir.path(), HashMap::new());
    assert!(watch.initial_scan().is_empty());

    std::fs::copy(built("multiply"), dir.path().join("multiply.so")).unwrap();
    std::fs::write(dir.path().join("broken.so"), b"nope").unwrap();
    // Seen once: not settled yet. Seen twice unchanged: acted on.
    assert!(watch.scan().is_empty());
    let changes = watch.scan();
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert!(
        changes
            .iter()
            .any(|c| matches!(c, Change::Loaded(p) if p.library == "multiply"))
    );
    assert!(
        changes
            .iter()
            .any(|c| matches!(c, Change::Refused { path, .. } if path.ends_with("broken.so")))
    );
    assert!(watch.scan().is_empty(), "nothing changed");

    // Replacing the file loads it anew; the old version stays usable by its holders.
    let old = watch.plugins().next().unwrap().clone();
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::copy(built("spread"), dir.path().join("multiply.so")).unwrap();
    watch.scan();
    let changes = watch.scan();
    assert!(
        matches!(&changes[..], [Change::Replaced { old: o, new }] if o.library == "multiply" && new.library == "spread"),
        "{changes:?}"
    );
    let a: ArrayRef = Arc::new(Int64Array::from(vec![6]));
    let product = old.invoke(0, &[a.clone(), a], 1).unwrap();
    assert_eq!(
        product
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .value(0),
        36,
        "the replaced version, still held, computes as before"
    );

    std::fs::remove_file(dir.path().join("multiply.so")).unwrap();
    let changes = watch.scan();
    assert!(
        matches!(&changes[..], [Change::Removed(p)] if p.library == "spread"),
        "{changes:?}"
    );
}
