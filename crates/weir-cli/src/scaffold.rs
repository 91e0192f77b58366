//! `weir udf new NAME`: a plugin crate that builds to a loadable `.so`, anywhere.
//!
//! The `weir-udf` SDK (and its `#[udf]` macro crate) this binary was built with is built
//! into the binary and written into the new crate's `sdk/` folder, so the crate builds
//! with nothing but crates.io: no checkout of Weir, no path into one, and always the ABI
//! this binary's server loads. `--sdk PATH` points at another copy instead.

use std::path::{Path, PathBuf};

/// The SDK's sources, as this binary was built with them.
const SDK_FILES: &[(&str, &str)] = &[
    (
        "weir-udf/src/lib.rs",
        include_str!("../../weir-udf/src/lib.rs"),
    ),
    (
        "weir-udf/src/ffi.rs",
        include_str!("../../weir-udf/src/ffi.rs"),
    ),
    (
        "weir-udf-macros/src/lib.rs",
        include_str!("../../weir-udf-macros/src/lib.rs"),
    ),
];

/// The SDK crates' manifests, standalone (the workspace's are inherited from Weir's root);
/// `udf_scaffold` builds a scaffold with them, and checks they name the dependencies
/// crates/weir-udf/Cargo.toml does.
fn sdk_manifests() -> [(&'static str, String); 2] {
    let version = env!("CARGO_PKG_VERSION");
    [
        (
            "weir-udf/Cargo.toml",
            format!(
                r#"[package]
name = "weir-udf"
description = "Write Weir user functions as plain Rust: the plugin ABI (C + Arrow C Data Interface) and the SDK"
version = "{version}"
edition = "2024"
license = "Apache-2.0"

[dependencies]
arrow = {{ version = "59", features = ["ffi"] }}
serde_json = {{ version = "1", features = ["float_roundtrip", "preserve_order"] }}
weir-udf-macros = {{ path = "../weir-udf-macros" }}
"#
            ),
        ),
        (
            "weir-udf-macros/Cargo.toml",
            format!(
                r#"[package]
name = "weir-udf-macros"
description = "The #[udf] attribute of the weir-udf SDK"
version = "{version}"
edition = "2024"
license = "Apache-2.0"

[lib]
proc-macro = true

[dependencies]
syn = {{ version = "2", features = ["full"] }}
quote = "1"
proc-macro2 = "1"
"#
            ),
        ),
    ]
}

/// Writes the built-in SDK under `root/sdk/`; the `weir-udf` crate's folder, relative.
fn write_sdk(root: &Path) -> Result<&'static str, String> {
    let manifests = sdk_manifests();
    let files = SDK_FILES
        .iter()
        .map(|(p, t)| (*p, *t))
        .chain(manifests.iter().map(|(p, t)| (*p, t.as_str())));
    for (path, text) in files {
        let path = root.join("sdk").join(path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok("sdk/weir-udf")
}

/// Where a given `weir-udf` SDK is, checked.
fn sdk_path(sdk: &Path) -> Result<PathBuf, String> {
    let path = sdk
        .canonicalize()
        .map_err(|_| format!("the weir-udf SDK is not at {}", sdk.display()))?;
    if !path.join("Cargo.toml").exists() {
        return Err(format!("{} is not the weir-udf crate", path.display()));
    }
    Ok(path)
}

/// Writes `<dir>/<name>/` with Cargo.toml and src/lib.rs; the folder it made.
pub fn new_plugin(name: &str, dir: &Path, sdk: Option<&Path>) -> Result<PathBuf, String> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!("'{name}': a plugin name is letters, digits and _"));
    }
    let given = sdk.map(sdk_path).transpose()?;
    let root = dir.join(name);
    if root.exists() {
        return Err(format!("{} already exists", root.display()));
    }
    std::fs::create_dir_all(root.join("src")).map_err(|e| e.to_string())?;
    let sdk = match given {
        Some(path) => path.display().to_string(),
        None => write_sdk(&root)?.to_string(),
    };
    let cargo = format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"

# A plugin builds on its own, outside any other workspace; sdk/ holds the weir-udf SDK
# of the `weir` that made it (`weir udf new`).
[workspace]

[lib]
crate-type = ["cdylib"]

[dependencies]
weir-udf = {{ path = "{sdk}" }}

[profile.release]
# A panic is caught at the plugin boundary and reported; keep unwinding on.
panic = "unwind"
"#
    );
    let upper = name.to_ascii_uppercase();
    let lib = format!(
        r#"//! The {name} plugin for Weir. Build with `cargo build --release`, then copy
//! target/release/lib{name}.so into the server's plugin folder (`weir server --plugin-dir DIR`).
//! It is callable within a couple of seconds, no restart: `SELECT {upper}(x) FROM s EMIT CHANGES;`

use weir_udf::udf;

/// Row-wise: NULL in gives NULL out unless a parameter is an `Option`.
#[udf(description = "Doubles a number")]
fn {name}(x: i64) -> i64 {{
    x * 2
}}

weir_udf::export_plugin! {{
    library: "{name}",
    version: env!("CARGO_PKG_VERSION"),
    author: "you",
    description: "What this library is for",
    scalars: [{name}],
    aggregates: [],
}}
"#
    );
    std::fs::write(root.join("Cargo.toml"), cargo).map_err(|e| e.to_string())?;
    std::fs::write(root.join("src/lib.rs"), lib).map_err(|e| e.to_string())?;
    Ok(root)
}
