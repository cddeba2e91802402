#!/usr/bin/env bash
# A/B measurement of what tracing costs clstock-api: the same closed-loop load against the
# API exporting every span to Spindle, then with OTEL_SDK_DISABLED=true, alternating.
#
#   cargo build --release -p clstock --bins --examples && cargo build -p spindle-server
#   apps/clstock/scripts/tracing-overhead.sh [PATH] [WORKERS] [SECONDS]
#
# Environment: LAT (market-data median latency in ms, default 0), ROUNDS (default 4), and any
# OTEL_* variable for the traced API (e.g. OTEL_BSP_MAX_QUEUE_SIZE=16384).
set -euo pipefail
cd "$(dirname "$0")/../../.."
path=${1:-/predict/AAPL} workers=${2:-4} seconds=${3:-10}
bin=target/release spindle=${SPINDLE_BIN:-target/debug/spindle}
work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait "${pids[@]}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
udp() { python3 -c 'import socket; s=socket.socket(type=socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
grpc=$(port) admin=$(port) market=$(port) api=$(port)
"$spindle" serve --data-dir "$work/data" --otlp-grpc-addr 127.0.0.1:$grpc --otlp-http-addr 127.0.0.1:$(port) \
  --query-addr 127.0.0.1:$(port) --admin-addr 127.0.0.1:$admin --jaeger-http-addr 127.0.0.1:$(port) \
  --jaeger-grpc-addr 127.0.0.1:$(port) --zipkin-addr 127.0.0.1:$(port) --sampling-addr 127.0.0.1:$(port) \
  --jaeger-compact-addr 127.0.0.1:$(udp) --jaeger-binary-addr 127.0.0.1:$(udp) >"$work/spindle.log" 2>&1 &
pids+=($!)
until curl -sf "127.0.0.1:$admin/readyz" >/dev/null; do sleep 0.2; done
export OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$grpc RUST_LOG=warn
"$bin/market-data-service" --listen 127.0.0.1:$market --latency-ms "${LAT:-0}" --error-rate 0 --empty-rate 0 >"$work/market.log" 2>&1 &
pids+=($!)
for round in $(seq "${ROUNDS:-4}"); do
  for mode in traced untraced; do
    disabled=false; [ $mode = untraced ] && disabled=true
    OTEL_SDK_DISABLED=$disabled "$bin/clstock-api" --listen 127.0.0.1:$api --market-data-url http://127.0.0.1:$market \
      --model-path "$work/model.json" >>"$work/api-$mode.log" 2>&1 &
    pid=$!
    until curl -sf "127.0.0.1:$api/healthz" >/dev/null; do sleep 0.1; done
    echo "$round $mode $path $("$bin/examples/load" --url http://127.0.0.1:$api --path "$path" --concurrency "$workers" --seconds "$seconds")"
    kill $pid; wait $pid 2>/dev/null || true
  done
done
echo "spans dropped by the traced api: $(grep -o 'dropped_total=[0-9]*' "$work/api-traced.log" | tail -1 || echo none)"
