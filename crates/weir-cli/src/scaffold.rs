//! `weir udf new NAME`: a plugin crate that builds to a loadable `.so`.

use std::path::{Path, PathBuf};

/// Where the `weir-udf` SDK is: `--sdk`, else the checkout this binary was built from.
fn sdk_path(sdk: Option<&Path>) -> Result<PathBuf, String> {
    let path = match sdk {
        Some(p) => p.to_path_buf(),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../weir-udf"),
    };
    let path = path.canonicalize().map_err(|_| {
        format!(
            "the weir-udf SDK is not at {} (pass --sdk PATH)",
            path.display()
        )
    })?;
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
    let sdk = sdk_path(sdk)?;
    let root = dir.join(name);
    if root.exists() {
        return Err(format!("{} already exists", root.display()));
    }
    std::fs::create_dir_all(root.join("src")).map_err(|e| e.to_string())?;
    let cargo = format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"

# A plugin builds on its own, outside any other workspace.
[workspace]

[lib]
crate-type = ["cdylib"]

[dependencies]
weir-udf = {{ path = "{sdk}" }}

[profile.release]
# A panic is caught at the plugin boundary and reported; keep unwinding on.
panic = "unwind"
"#,
        sdk = sdk.display()
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
