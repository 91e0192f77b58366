#!/usr/bin/env bash
# The connected-car demo, on the embedded default (no Kafka needed). Installs only what the
# demo needs (the apt packages the build needs and the ONNX Runtime library), builds `weir`
# and the anomaly plugin, checks the demo's statements (sql/connected_cars.sql), then runs
# `weir demo`: a server with its MQTT listener and the ONNX anomaly plugin, generated car
# data published over MQTT at QoS 2, flagged events live, precision and recall at the end.
# The test tooling (broker, Python clients) is scripts/test.sh's business, not the demo's.
#
#   scripts/demo.sh                      # 5,000 messages at 500/s
#   scripts/demo.sh --count 20000 --rate 0 --mqtt-listen 127.0.0.1:0
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
source scripts/setup.sh
need_build_packages
need_ort
# The debug build shares the test suite's build cache (a release build is a second full
# compile of DataFusion); `weir bench` is where release builds matter.
step "building weir and the anomaly plugin (from cold: several minutes)"
cargo build -q -p weir-cli -p udf-anomaly
weir=$CARGO_TARGET_DIR/debug/weir
step "checking the demo's statements: $weir check sql/connected_cars.sql"
"$weir" check sql/connected_cars.sql
step "starting the demo"
exec "$weir" demo --plugin "$CARGO_TARGET_DIR/debug/libanomaly.so" "$@"
