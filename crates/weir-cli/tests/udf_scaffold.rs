//! `weir udf new` writes a plugin crate that builds to a loadable .so.

use std::process::Command;

#[test]
fn the_scaffold_is_a_cdylib_crate_on_the_sdk_with_an_exported_function() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["udf", "new", "speed_check", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let root = dir.path().join("speed_check");
    let cargo = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    assert!(cargo.contains(r#"crate-type = ["cdylib"]"#), "{cargo}");
    // The SDK is in the crate, not a path into Weir's source tree.
    assert!(
        cargo.contains(r#"weir-udf = { path = "sdk/weir-udf" }"#),
        "{cargo}"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("sdk/weir-udf/src/lib.rs")).unwrap(),
        include_str!("../../weir-udf/src/lib.rs")
    );
    // Its manifest names the dependencies the SDK crate in this workspace has.
    let deps = |text: &str| -> Vec<String> {
        let section = text.split("[dependencies]").nth(1).unwrap_or("");
        let mut names: Vec<String> = section
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim()))
            .filter(|k| !k.is_empty() && !k.starts_with('['))
            .map(|k| k.trim_end_matches(".workspace").to_string())
            .collect();
        names.sort();
        names
    };
    for krate in ["weir-udf", "weir-udf-macros"] {
        let written =
            std::fs::read_to_string(root.join(format!("sdk/{krate}/Cargo.toml"))).unwrap();
        let ours = std::fs::read_to_string(format!(
            "{}/../{krate}/Cargo.toml",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        assert_eq!(deps(&written), deps(&ours), "{krate}: {written}");
    }
    let lib = std::fs::read_to_string(root.join("src/lib.rs")).unwrap();
    assert!(
        lib.contains("#[udf(") && lib.contains("scalars: [speed_check]"),
        "{lib}"
    );

    // Twice is refused; so is a bad name.
    let again = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["udf", "new", "speed_check", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    let bad = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["udf", "new", "no-dashes"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
}

/// Made outside any checkout, the scaffold builds with cargo alone and the host loads the
/// `.so` and calls its function.
#[test]
fn the_scaffold_builds_on_its_own_and_its_function_runs() {
    use arrow::array::{Array, ArrayRef, Int64Array};
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["udf", "new", "doubled"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // A target folder kept between runs (the shared build cache) when there is one.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(|d| std::path::PathBuf::from(d).join("udf-scaffold"))
        .unwrap_or_else(|| dir.path().join("target"));
    let build = Command::new(env!("CARGO"))
        .args(["build", "--quiet"])
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(dir.path().join("doubled"))
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "{}",
        String::from_utf8_lossy(&build.stderr)
    );
    let plugin =
        weir_udf_host::Plugin::load(&target.join("debug/libdoubled.so"), &Default::default())
            .unwrap();
    let index = plugin
        .scalars
        .iter()
        .position(|f| f.name == "DOUBLED")
        .expect("DOUBLED is exported");
    let input: ArrayRef = std::sync::Arc::new(Int64Array::from(vec![Some(1), None, Some(21)]));
    let result = plugin.invoke(index, &[input], 3).unwrap();
    let result = result.as_any().downcast_ref::<Int64Array>().unwrap();
    assert_eq!(result.iter().collect::<Vec<_>>(), [Some(2), None, Some(42)]);
}
