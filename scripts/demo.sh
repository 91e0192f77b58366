#!/usr/bin/env bash
# The connected-car demo, on the embedded default (no Kafka needed): installs what is
# missing (scripts/test.sh --setup), builds `weir` and the anomaly plugin, checks the
# demo's statements (sql/connected_cars.sql), then runs `weir demo`: a server with its
# MQTT listener and the ONNX anomaly plugin, generated car data published over MQTT at
# QoS 2, flagged events live, precision and recall at the end.
#
#   scripts/demo.sh                      # 5,000 messages at 500/s
#   scripts/demo.sh --count 20000 --rate 0 --mqtt-listen 127.0.0.1:0
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash scripts/test.sh --setup
source scripts/env.sh
# The debug build shares the test suite's build cache (a release build is a second full
# compile of DataFusion); `weir bench` is where release builds matter.
cargo build -q -p weir-cli -p udf-anomaly
"$CARGO_TARGET_DIR/debug/weir" check sql/connected_cars.sql
exec "$CARGO_TARGET_DIR/debug/weir" demo "$@"
