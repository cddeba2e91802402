#!/usr/bin/env bash
# Captures real payloads from real tracing client libraries as decoder fixtures.
#
# Installs the clients into a scratch directory (never into the system), starts
# listener.py on loopback ports, runs each emitter against it, and copies the raw
# bytes into crates/spindle-codec/tests/fixtures/ as <name>.<ext>. Re-run it when a
# client changes; commit the fixtures it writes.
#
#   tests/clients/capture.sh            # all clients
#   SCRATCH=/tmp/x tests/clients/capture.sh
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUT=${OUT:-$ROOT/crates/spindle-codec/tests/fixtures}
# Loopback ports unlikely to clash with a Spindle or Jaeger running on its defaults.
UDP_COMPACT=46831 UDP_BINARY=46832 HTTP=49411 GRPC=44250

mkdir -p "$OUT"
# shellcheck source=setup.sh
source "$HERE/setup.sh"

FAILED=""
LISTENER_PY="$SCRATCH/otel/bin/python"   # has grpcio for the gRPC capture

# capture NAME EXT COMMAND...: runs COMMAND against a fresh listener and stores what arrived.
capture() {
  local name=$1 ext=$2; shift 2
  local dir="$SCRATCH/capture/$name"
  rm -rf "$dir"; mkdir -p "$dir"
  "$LISTENER_PY" "$HERE/listener.py" "$dir" $UDP_COMPACT $UDP_BINARY $HTTP $GRPC >"$dir.log" 2>&1 &
  local pid=$!
  for _ in $(seq 50); do grep -q listening "$dir.log" 2>/dev/null && break; sleep 0.1; done
  "$@" || echo "warning: $name emitter exited non-zero" >&2
  sleep 1
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  local files=("$dir"/*.bin)
  if [ ! -e "${files[0]}" ]; then
    echo "error: $name captured nothing" >&2
    FAILED="$FAILED $name"
    return 0
  fi
  local i=0
  for f in "${files[@]}"; do
    i=$((i + 1))
    local target="$OUT/$name.$ext"
    [ ${#files[@]} -gt 1 ] && target="$OUT/$name.$i.$ext"
    cp "$f" "$target"
    cp "$f.meta" "$target.meta"
    echo "fixture $target ($(stat -c %s "$target") bytes): $(cat "$f.meta")"
  done
}

OTEL="$SCRATCH/otel/bin/python $HERE/emit_otel.py"
OTEL_JAEGER="$SCRATCH/otel-jaeger/bin/python $HERE/emit_otel.py"
H=http://127.0.0.1:$HTTP

capture otlp_proto_otel_python bin $OTEL otlp-proto-http "$H/v1/traces"
capture otlp_json_otel_python json "$SCRATCH/otel-json/bin/python" "$HERE/emit_otel.py" otlp-json-http "$H/v1/traces"
capture otlp_grpc_otel_python bin $OTEL otlp-grpc "127.0.0.1:$GRPC"
capture zipkin_v2_json_otel_python json $OTEL zipkin-json-v2 "$H/api/v2/spans"
capture zipkin_v1_json_otel_python json $OTEL zipkin-json-v1 "$H/api/v1/spans"
capture zipkin_v2_proto_otel_python bin "$SCRATCH/otel-zipkin-proto/bin/python" "$HERE/emit_otel.py" zipkin-proto "$H/api/v2/spans"
capture jaeger_compact_otel_python bin $OTEL_JAEGER jaeger-thrift-agent "127.0.0.1:$UDP_COMPACT"
capture jaeger_binary_http_otel_python bin $OTEL_JAEGER jaeger-thrift-http "$H/api/traces"
capture jaeger_proto_grpc_otel_python bin $OTEL_JAEGER jaeger-proto-grpc "127.0.0.1:$GRPC"
capture jaeger_compact_py_jaeger_client bin \
  "$SCRATCH/jaeger-client/bin/python" "$HERE/emit_jaeger_client.py" 127.0.0.1 $UDP_COMPACT
capture jaeger_binary_udp_node_jaeger_client bin \
  env NODE_PATH="$SCRATCH/node/node_modules" node "$HERE/emit_jaeger_client.js" udp 127.0.0.1 $UDP_BINARY
capture jaeger_binary_http_node_jaeger_client bin \
  env NODE_PATH="$SCRATCH/node/node_modules" node "$HERE/emit_jaeger_client.js" http "$H/api/traces"

if [ -n "$FAILED" ]; then
  echo "error: no payload from:$FAILED" >&2
  exit 1
fi
