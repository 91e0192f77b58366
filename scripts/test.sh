#!/usr/bin/env bash
# Installs what Weir's build and tests need on a fresh Debian 12 machine (as root), then
# runs the whole test suite. Idempotent: a second run skips what is installed.
#
#   scripts/test.sh            # install what is missing, then test
#   scripts/test.sh --setup    # install only
#
# Everything comes from the package registries (Debian apt, crates.io, PyPI); nothing is
# downloaded from anywhere else. Project-local tools go under .weir/ (git-ignored). The
# steps are in scripts/setup.sh, shared with scripts/demo.sh.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
# shellcheck source=scripts/setup.sh
source scripts/setup.sh

# What the build needs (as scripts/demo.sh), then the test tooling: real clients and peers
# the integration tests drive (mosquitto_pub, tmux for the shell, Python ksqlDB and Kafka
# clients), Mosquitto (the broker the MQTT bridge test subscribes to; curl and openssl for
# the TLS test), the tansu broker, and Debian's Chromium for the console's browser test (driven
# by Playwright from PyPI, pointed at /usr/bin/chromium: no browser download).
need_build_packages
need_ort
need_apt mosquitto-clients mosquitto curl tmux python3-pip python3-venv stunnel4 openssl chromium
need_python_clients
need_tansu

if [ "${1:-}" = "--setup" ]; then
  step "set-up complete"
  exit 0
fi

# --- the tests ----------------------------------------------------------------------------
if [ ! -f ../shared/conformance/ksql-qtt/cases.jsonl ]; then
  echo "weir tests: ../shared/conformance/ksql-qtt/cases.jsonl not found beside the clone" >&2
  exit 1
fi
# The build cache outlives clones: test binaries and incremental caches of builds older
# than two days are of code that is gone (they had grown to tens of GB on a dev machine).
step "pruning build artifacts older than two days from $CARGO_TARGET_DIR/debug"
find "$CARGO_TARGET_DIR/debug/deps" -maxdepth 1 -type f -perm -u+x ! -name '*.so' -mtime +2 -delete 2>/dev/null || true
find "$CARGO_TARGET_DIR/debug/incremental" -mindepth 1 -maxdepth 1 -mtime +2 -exec rm -rf {} + 2>/dev/null || true
# Short of space (every clone that builds here links its own test binaries, ~0.4 GB
# each): all test binaries and incremental caches go; they are linked again as needed.
mkdir -p "$CARGO_TARGET_DIR"
free_kb=$(df -Pk "$CARGO_TARGET_DIR" | awk 'NR == 2 { print $4 }')
if [ "${free_kb:-0}" -lt 20000000 ]; then
  step "under 20 GB free: removing test binaries and incremental caches from $CARGO_TARGET_DIR/debug"
  find "$CARGO_TARGET_DIR/debug/deps" -maxdepth 1 -type f -perm -u+x ! -name '*.*' -delete 2>/dev/null || true
  rm -rf "$CARGO_TARGET_DIR/debug/incremental"
fi
step "checking formatting"
cargo fmt --all -- --check
step "clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
step "building the workspace (the example plugins' .so files are test inputs)"
cargo build --workspace --quiet
step "running the test suite"
set +e
cargo test --workspace --no-fail-fast 2>&1 | tee "$CARGO_TARGET_DIR/last-test.log"
status=${PIPESTATUS[0]}
set -e
# One closing line over all test binaries: 'N passed, N failed'.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /passed;/) p += $(i-1); if ($i ~ /failed;/) f += $(i-1) } }
     END { printf "%d passed, %d failed\n", p, f }' "$CARGO_TARGET_DIR/last-test.log"
exit "$status"
