#!/usr/bin/env bash
# Installs the real tracing clients into a scratch directory (never into the system):
# Python venvs from PyPI and Node's jaeger-client from npm. Idempotent; sourced by
# capture.sh and e2e.sh. Sets SCRATCH.
SCRATCH=${SCRATCH:-/tmp/spindle-clients}
mkdir -p "$SCRATCH"

venv() { # venv DIR PACKAGES...
  local dir=$1; shift
  if [ ! -f "$dir/.installed" ]; then
    python3 -m venv "$dir"
    "$dir/bin/pip" install --quiet --disable-pip-version-check "$@"
    touch "$dir/.installed"
  fi
}

# Current OpenTelemetry SDK with OTLP and Zipkin exporters.
venv "$SCRATCH/otel" opentelemetry-sdk opentelemetry-exporter-otlp-proto-http \
  opentelemetry-exporter-otlp-proto-grpc \
  opentelemetry-exporter-zipkin-json grpcio
# The OTLP JSON exporter is a beta pinned to its own SDK release.
venv "$SCRATCH/otel-json" opentelemetry-exporter-otlp-json-http
# The Jaeger exporters were last released as 1.21.0; they import SDK internals that
# later SDKs removed, hence a venv of their own.
venv "$SCRATCH/otel-jaeger" 'opentelemetry-sdk<=1.39' 'opentelemetry-api<=1.39' \
  opentelemetry-exporter-jaeger-thrift==1.21.0 opentelemetry-exporter-jaeger-proto-grpc==1.21.0 deprecated \
  'protobuf==3.20.3'
# The Zipkin protobuf exporter's generated code needs the protobuf 3 runtime.
venv "$SCRATCH/otel-zipkin-proto" opentelemetry-exporter-zipkin-proto-http 'protobuf==3.20.3'
# The OpenTracing-era Jaeger client (needs six, which it does not declare).
venv "$SCRATCH/jaeger-client" jaeger-client six
if [ ! -d "$SCRATCH/node/node_modules/jaeger-client" ]; then
  mkdir -p "$SCRATCH/node"
  (cd "$SCRATCH/node" && npm init -y >/dev/null && npm install --silent --no-audit --no-fund jaeger-client@3)
fi

