"""Checks through Spindle's Jaeger query API that a client's trace arrived intact.

Usage: verify.py QUERY_BASE_URL SERVICE [--zipkin] [--js-numbers] [--no-link]
Exits non-zero with a message naming the first difference.

The expected trace is the one every emitter in this folder sends (see emit_otel.py):
names, parent/child and follows-from references, start times and durations (µs), typed
tags, and the "cache miss" log. --zipkin: tags are strings and links do not exist;
--js-numbers: numbers arrive as float64 (JavaScript clients); --no-link: the client has
no links (OpenTracing clients express it as a FOLLOWS_FROM parent instead).
"""

import json
import sys
import urllib.request

T0_US = 1_700_000_000_000_000


def fail(message):
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def main():
    base, service = sys.argv[1].rstrip("/"), sys.argv[2]
    flags = set(sys.argv[3:])
    url = f"{base}/api/traces?service={service}&start={T0_US - 10**6}&end={T0_US + 10**6}&limit=20"
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.load(response)
    traces = body.get("data") or []
    if len(traces) != 1:
        fail(f"{service}: expected 1 trace, found {len(traces)}")
    trace = traces[0]
    spans = {s["operationName"]: s for s in trace["spans"]}
    if set(spans) != {"GET /quote", "db_query", "send_to_kafka"}:
        fail(f"{service}: spans {sorted(spans)}")
    root, db, send = spans["GET /quote"], spans["db_query"], spans["send_to_kafka"]
    if trace["processes"][root["processID"]]["serviceName"] != service:
        fail(f"{service}: process {trace['processes'][root['processID']]}")

    def near(actual, expected, what):
        if abs(actual - expected) > 1:
            fail(f"{service}: {what} is {actual}, expected {expected}")

    for span, start, duration in ((root, 0, 150_000), (db, 10_000, 50_000), (send, 70_000, 30_000)):
        near(span["startTime"], T0_US + start, span["operationName"] + " start")
        near(span["duration"], duration, span["operationName"] + " duration")

    def tag(span, key):
        for t in span["tags"]:
            if t["key"] == key:
                return t["type"], t["value"]
        return None

    strings = "--zipkin" in flags
    number = "float64" if "--js-numbers" in flags else "int64"
    expected = {
        "http.request.method": ("string", "GET"),
        "http.response.status_code": ("string", "200") if strings else (number, 200),
        "ratio": ("string", "0.25") if strings else ("float64", 0.25),
        "cached": ("string", "true") if strings else ("bool", True),
        "span.kind": ("string", "server"),
    }
    for key, value in expected.items():
        if tag(root, key) != value:
            fail(f"{service}: GET /quote tag {key} is {tag(root, key)}, expected {value}")
    if tag(db, "error") != ("bool", True) or tag(db, "span.kind") != ("string", "client"):
        fail(f"{service}: db_query tags {db['tags']}")
    if not db["references"] or db["references"][0] != {
        "refType": "CHILD_OF", "traceID": root["traceID"], "spanID": root["spanID"]}:
        fail(f"{service}: db_query references {db['references']}")
    logs = db["logs"]
    if len(logs) != 1 or logs[0]["fields"][0] != {"key": "event", "type": "string", "value": "cache miss"}:
        fail(f"{service}: db_query logs {logs}")
    near(logs[0]["timestamp"], T0_US + 20_000, "log timestamp")
    if not strings and "--no-link" not in flags:
        if not any(r["refType"] == "FOLLOWS_FROM" and r["spanID"] == db["spanID"] for r in send["references"]):
            fail(f"{service}: send_to_kafka references {send['references']}")
    print(f"ok {service}")


if __name__ == "__main__":
    main()
