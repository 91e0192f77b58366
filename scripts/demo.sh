#!/usr/bin/env bash
# The connected-car demo, on the embedded default (no Kafka needed).
#
# What runs today: the set-up, a release build of `weir`, and `weir check` over the demo's
# statements (sql/connected-cars.sql), exactly as the demo types them. The streaming engine,
# server, MQTT listener and anomaly plugin land with the following issues; this script then
# becomes `weir demo`, which publishes generated car data and flags anomalies live.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash scripts/test.sh --setup
source scripts/env.sh
# The debug build shares the test suite's build cache (a release build is a second full
# compile of DataFusion); `weir bench` is where release builds matter.
cargo build -q -p weir-cli
"$CARGO_TARGET_DIR/debug/weir" check --canonical sql/connected-cars.sql
