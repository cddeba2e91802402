#!/usr/bin/env bash
# End-to-end check with real clients against a RUNNING Spindle: every client sends the
# known trace to Spindle's real ports, then verify.py reads it back through the Jaeger
# query API and compares service, names, parents, times, typed tags and logs.
#
#   tests/clients/e2e.sh                       # Spindle on 127.0.0.1 with default ports
#   SPINDLE_HOST=127.0.0.2 QUERY=http://127.0.0.2:16686 tests/clients/e2e.sh
#
# Each client uses its own service name, so runs do not disturb each other; the trace's
# timestamps are fixed (2023-11-14), so a Spindle whose retention drops old data must
# accept them for the duration of the test.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=setup.sh
source "$HERE/setup.sh"

HOST=${SPINDLE_HOST:-127.0.0.1}
QUERY=${QUERY:-http://$HOST:16686}
OTEL="$SCRATCH/otel/bin/python $HERE/emit_otel.py"
OTEL_JSON="$SCRATCH/otel-json/bin/python $HERE/emit_otel.py"
OTEL_JAEGER="$SCRATCH/otel-jaeger/bin/python $HERE/emit_otel.py"
OTEL_ZIPKIN_PROTO="$SCRATCH/otel-zipkin-proto/bin/python $HERE/emit_otel.py"
NODE="env NODE_PATH=$SCRATCH/node/node_modules node $HERE/emit_jaeger_client.js"

$OTEL otlp-grpc "$HOST:4317"
$OTEL otlp-proto-http "http://$HOST:4318/v1/traces"
$OTEL_JSON otlp-json-http "http://$HOST:4318/v1/traces"
$OTEL zipkin-json-v2 "http://$HOST:9411/api/v2/spans"
$OTEL_ZIPKIN_PROTO zipkin-proto "http://$HOST:9411/api/v2/spans"
$OTEL_JAEGER jaeger-thrift-agent "$HOST:6831"
$OTEL_JAEGER jaeger-thrift-http "http://$HOST:14268/api/traces"
$OTEL_JAEGER jaeger-proto-grpc "$HOST:14250"
"$SCRATCH/jaeger-client/bin/python" "$HERE/emit_jaeger_client.py" "$HOST" 6831
$NODE udp "$HOST" 6832
$NODE http "http://$HOST:14268/api/traces"
sleep 2 # UDP and batching receivers ingest asynchronously

VERIFY="$SCRATCH/otel/bin/python $HERE/verify.py $QUERY"
failed=0
check() { $VERIFY "$@" || failed=$((failed + 1)); }
check otel-py-otlp-grpc
check otel-py-otlp-proto-http
check otel-py-otlp-json-http
check otel-py-zipkin-json-v2 --zipkin
check otel-py-zipkin-proto --zipkin
check otel-py-jaeger-thrift-agent
check otel-py-jaeger-thrift-http
check otel-py-jaeger-proto-grpc
check py-jaeger-client --no-link
check node-jaeger-client-udp --no-link --js-numbers
check node-jaeger-client-http --no-link --js-numbers
echo "$((11 - failed)) passed, $failed failed"
[ "$failed" -eq 0 ]
