# Shared environment for Weir's scripts: one cargo target dir outside the clone (so
# fresh clones and CI reuse the build), and where the ONNX Runtime library lives.
# Source it: `source scripts/env.sh`.
_weir_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weir-target}"
export PATH="$HOME/.cargo/bin:$PATH"
export WEIR_ORT_LIB="${WEIR_ORT_LIB:-$_weir_root/.weir/lib/libonnxruntime.so.1.31.1}"
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$WEIR_ORT_LIB}"
mkdir -p "$CARGO_TARGET_DIR"
unset _weir_root
