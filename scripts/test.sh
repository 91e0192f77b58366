#!/usr/bin/env bash
# Installs what Weir's build and tests need on a fresh Debian 12 machine (as root), then
# runs the whole test suite. Idempotent: a second run skips what is installed.
#
#   scripts/test.sh            # install what is missing, then test
#   scripts/test.sh --setup    # install only
#
# Everything comes from the package registries (Debian apt, crates.io, PyPI); nothing is
# downloaded from anywhere else. Project-local tools go under .weir/ (git-ignored).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
# shellcheck source=scripts/env.sh
source scripts/env.sh

say() { printf '\033[1m[weir setup]\033[0m %s\n' "$*"; }

# --- apt packages ---------------------------------------------------------------------
apt_packages=(cmake libcurl4-openssl-dev libssl-dev zlib1g-dev pkg-config kcat mosquitto-clients tmux python3-pip python3-venv)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing apt packages: ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# --- ONNX Runtime shared library, from the PyPI wheel -----------------------------------
ort_version=1.31.1
if [ ! -f "$WEIR_ORT_LIB" ]; then
  say "fetching onnxruntime==$ort_version from PyPI for libonnxruntime"
  tmp=$(mktemp -d)
  python3 -m pip download --quiet --no-deps --only-binary=:all: "onnxruntime==$ort_version" -d "$tmp"
  mkdir -p "$(dirname "$WEIR_ORT_LIB")"
  python3 - "$tmp" "$WEIR_ORT_LIB" "$ort_version" <<'PY'
import glob, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/onnxruntime-*.whl")[0]
member = f"onnxruntime/capi/libonnxruntime.so.{sys.argv[3]}"
with zipfile.ZipFile(wheel) as z, open(sys.argv[2], "wb") as out:
    out.write(z.read(member))
PY
  rm -rf "$tmp"
fi

# --- Python clients the integration tests drive (a ksqlDB client nobody here wrote) ---------
venv=.weir/venv
# ksql-python-ng passes `cert=` to httpx.get, which httpx 0.28 removed: pin 0.27.
# confluent-kafka (bundles its own librdkafka) is the external Kafka producer of the seed
# demo's test, as kafkacat was in the original demo.
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import ksql, httpx, confluent_kafka; assert httpx.__version__ == "0.27.2"' 2>/dev/null; then
  say "installing ksql-python-ng and confluent-kafka from PyPI into $venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "ksql-python-ng==0.29.0.1" "httpx[http2]==0.27.2" "confluent-kafka==2.13.0"
fi

# --- tansu, the Kafka-API broker the integration tests run against -----------------------
if ! command -v tansu >/dev/null 2>&1; then
  say "installing the tansu broker with cargo (about 10 minutes, once per machine)"
  cargo install tansu --locked --features dynostore,libsql
fi

if [ "${1:-}" = "--setup" ]; then
  say "set-up complete"
  exit 0
fi

# --- the tests ----------------------------------------------------------------------------
if [ ! -f ../shared/conformance/ksql-qtt/cases.jsonl ]; then
  echo "weir tests: ../shared/conformance/ksql-qtt/cases.jsonl not found beside the clone" >&2
  exit 1
fi
say "checking formatting"
cargo fmt --all -- --check
say "clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
say "building the workspace (the example plugins' .so files are test inputs)"
cargo build --workspace --quiet
say "running the test suite"
set +e
cargo test --workspace --no-fail-fast 2>&1 | tee "$CARGO_TARGET_DIR/last-test.log"
status=${PIPESTATUS[0]}
set -e
# One closing line over all test binaries: 'N passed, N failed'.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /passed;/) p += $(i-1); if ($i ~ /failed;/) f += $(i-1) } }
     END { printf "%d passed, %d failed\n", p, f }' "$CARGO_TARGET_DIR/last-test.log"
exit "$status"
