"""Emits the known fixture spans through one OpenTelemetry Python exporter.

Usage: emit_otel.py EXPORTER ENDPOINT
EXPORTER is one of: otlp-proto-http, otlp-json-http, otlp-grpc, zipkin-json-v2,
zipkin-json-v1, zipkin-proto, jaeger-thrift-agent, jaeger-thrift-http,
jaeger-proto-grpc. The service is named after the exporter ("otel-py-<exporter>").

The trace, identical for every exporter (times are exact microseconds):
  GET /quote      server   start T0, 150 ms, tags http.request.method="GET",
                           http.response.status_code=200 (int), ratio=0.25 (double),
                           cached=true (bool)
    db_query      client   start T0+10 ms, 50 ms, db.system="postgresql", status ERROR
                           "timeout", event "cache miss" at T0+20 ms {symbol="AAPL", attempt=2}
    send_to_kafka producer start T0+70 ms, 30 ms, linked to db_query
"""

import sys

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Link, SpanKind, Status, StatusCode, set_span_in_context

T0 = 1_700_000_000_000_000_000  # ns, 2023-11-14T22:13:20Z
MS = 1_000_000


def exporter(name, endpoint):
    if name == "otlp-proto-http":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        return OTLPSpanExporter(endpoint=endpoint)
    if name == "otlp-json-http":
        from opentelemetry.exporter.otlp.json.http.trace_exporter import OTLPSpanExporter
        return OTLPSpanExporter(endpoint=endpoint)
    if name == "otlp-grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        return OTLPSpanExporter(endpoint=endpoint, insecure=True)
    if name in ("zipkin-json-v2", "zipkin-json-v1"):
        from opentelemetry.exporter.zipkin.json import ZipkinExporter
        from opentelemetry.exporter.zipkin.encoder import Protocol
        version = Protocol.V2 if name.endswith("v2") else Protocol.V1
        # The v1 encoder compares max_tag_value_length with 0 and fails on the None default.
        return ZipkinExporter(version=version, endpoint=endpoint, max_tag_value_length=4096)
    if name == "zipkin-proto":
        from opentelemetry.exporter.zipkin.proto.http import ZipkinExporter
        return ZipkinExporter(endpoint=endpoint)
    if name == "jaeger-thrift-agent":
        from opentelemetry.exporter.jaeger.thrift import JaegerExporter
        host, port = endpoint.split(":")
        return JaegerExporter(agent_host_name=host, agent_port=int(port))
    if name == "jaeger-thrift-http":
        from opentelemetry.exporter.jaeger.thrift import JaegerExporter
        return JaegerExporter(collector_endpoint=endpoint)
    if name == "jaeger-proto-grpc":
        from opentelemetry.exporter.jaeger.proto.grpc import JaegerExporter
        return JaegerExporter(collector_endpoint=endpoint, insecure=True)
    raise SystemExit(f"unknown exporter {name}")


def main():
    name, endpoint = sys.argv[1], sys.argv[2]
    provider = TracerProvider(resource=Resource.create({"service.name": f"otel-py-{name}", "host.name": "fixture-host"}))
    # One batch for the whole trace, so each fixture is a single payload.
    provider.add_span_processor(BatchSpanProcessor(exporter(name, endpoint), schedule_delay_millis=60_000))
    tracer = provider.get_tracer("spindle.fixtures", "1.0.0")

    root = tracer.start_span("GET /quote", kind=SpanKind.SERVER, start_time=T0, attributes={
        "http.request.method": "GET",
        "http.response.status_code": 200,
        "ratio": 0.25,
        "cached": True,
    })
    ctx = set_span_in_context(root)
    db = tracer.start_span("db_query", context=ctx, kind=SpanKind.CLIENT, start_time=T0 + 10 * MS,
                           attributes={"db.system": "postgresql"})
    db.add_event("cache miss", {"symbol": "AAPL", "attempt": 2}, timestamp=T0 + 20 * MS)
    db.set_status(Status(StatusCode.ERROR, "timeout"))
    db.end(end_time=T0 + 60 * MS)
    send = tracer.start_span("send_to_kafka", context=ctx, kind=SpanKind.PRODUCER, start_time=T0 + 70 * MS,
                             links=[Link(db.get_span_context())])
    send.end(end_time=T0 + 100 * MS)
    root.end(end_time=T0 + 150 * MS)
    provider.force_flush()
    provider.shutdown()


if __name__ == "__main__":
    main()
