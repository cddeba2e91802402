#!/usr/bin/env bash
# Seeds fuzz/corpus/<target>/ from the decoder fixtures captured from real clients
# (crates/spindle-codec/tests/fixtures). Safe to re-run; libFuzzer adds its own finds.
set -euo pipefail
cd "$(dirname "$0")"
FIX=../crates/spindle-codec/tests/fixtures
seed() { # seed TARGET GLOB...
  local target=$1; shift
  mkdir -p "corpus/$target"
  for pattern in "$@"; do
    for f in $FIX/$pattern; do
      [ -e "$f" ] && cp "$f" "corpus/$target/"
    done
  done
  return 0
}
seed otlp_proto 'otlp_proto_*.bin' 'otlp_grpc_*.bin'
seed otlp_json 'otlp_json_*.json'
seed jaeger_thrift_compact 'jaeger_compact_*.bin'
seed jaeger_thrift_binary 'jaeger_binary_*.bin'
seed jaeger_proto 'jaeger_proto_*.bin'
seed zipkin_json 'zipkin_v2_json_*.json'
seed zipkin_proto 'zipkin_v2_proto_*.bin'
seed zipkin_v1_json 'zipkin_v1_json_*.json'
seed sampling_file 'sampling_*.json'
# TraceQL: every example query of Tempo's documentation, one file each.
mkdir -p corpus/traceql
i=0
grep -v '^#' ../crates/spindle-traceql/tests/doc_examples.txt | grep -v '^$' | while IFS= read -r query; do
  i=$((i + 1)); printf '%s' "$query" > "corpus/traceql/doc_$i"
done
