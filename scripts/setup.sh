# Set-up steps shared by scripts/demo.sh and scripts/test.sh. Source it, then call the steps
# a script needs; each installs only what is missing and prints one progress line with the
# time elapsed since the script started. Everything comes from the package registries
# (Debian apt, crates.io, PyPI); project-local tools go under .weir/ (git-ignored).
# shellcheck source=scripts/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
weir_started=${weir_started:-$(date +%s)}

# One progress line: elapsed seconds, then what is happening.
step() {
  local s=$(($(date +%s) - weir_started))
  printf '\033[1m[weir %2d:%02d]\033[0m %s\n' $((s / 60)) $((s % 60)) "$*"
}

# Debian packages, installed only where missing.
need_apt() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    step "apt packages present: $*"
    return
  fi
  step "installing apt packages: ${missing[*]}"
  local sudo=
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# What building weir needs: rdkafka's vendored librdkafka (cmake, curl, ssl, zlib).
need_build_packages() {
  need_apt cmake libcurl4-openssl-dev libssl-dev zlib1g-dev pkg-config
}

# The ONNX Runtime shared library the anomaly plugin loads, from the PyPI wheel.
need_ort() {
  local version=1.31.1
  if [ -f "$WEIR_ORT_LIB" ]; then
    step "ONNX Runtime present: $WEIR_ORT_LIB"
    return
  fi
  step "fetching onnxruntime==$version from PyPI for libonnxruntime"
  local tmp
  tmp=$(mktemp -d)
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: "onnxruntime==$version" -d "$tmp"
  mkdir -p "$(dirname "$WEIR_ORT_LIB")"
  python3 - "$tmp" "$WEIR_ORT_LIB" "$version" <<'PY'
import glob, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/onnxruntime-*.whl")[0]
member = f"onnxruntime/capi/libonnxruntime.so.{sys.argv[3]}"
with zipfile.ZipFile(wheel) as z, open(sys.argv[2], "wb") as out:
    out.write(z.read(member))
PY
  rm -rf "$tmp"
}

# Python clients the integration tests drive: two ksqlDB clients nobody here wrote,
# ksql-python-ng and ksqldb (requests + httpx over HTTP/2; ksql-python-ng passes `cert=`
# to httpx.get, which httpx 0.28 removed: pin 0.27), and confluent-kafka (its own librdkafka), the external Kafka producer of the seed demo's test, with its Schema
# Registry client and Avro, Protobuf and JSON Schema serializers (fastavro, protobuf,
# jsonschema) for the schema-registry test; Playwright for the console's browser test (its
# driver only: the browser is Debian's chromium).
need_python_clients() {
  local venv=.weir/venv
  if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import ksql, ksqldb, httpx, confluent_kafka, fastavro, jsonschema, google.protobuf, confluent_kafka.schema_registry.protobuf, playwright; assert httpx.__version__ == "0.27.2"' 2>/dev/null; then
    step "Python test clients present in $venv"
    return
  fi
  step "installing ksql-python-ng, ksqldb and confluent-kafka from PyPI into $venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "ksql-python-ng==0.29.0.1" "ksqldb==1.0.1" "httpx[http2]==0.27.2" "confluent-kafka[avro,json,protobuf,schemaregistry]==2.13.0" "fastavro==1.13.1" "jsonschema==4.26.0" "protobuf==7.36.2" "playwright==1.56.0"
}

# tansu, the Kafka-API broker the integration tests run against.
need_tansu() {
  if command -v tansu >/dev/null 2>&1; then
    step "tansu broker present: $(command -v tansu)"
    return
  fi
  step "installing the tansu broker with cargo (about 10 minutes, once per machine)"
  # Its own temporary build folder: the shared one would hold its lock for the whole build.
  env -u CARGO_TARGET_DIR cargo install --quiet tansu --locked --features dynostore,libsql
}
