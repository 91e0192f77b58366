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
    let sdk = cargo
        .split("path = \"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    assert!(
        std::path::Path::new(sdk).join("src/lib.rs").exists(),
        "{sdk}"
    );
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
