"""Exports one span through the OpenTelemetry Python OTLP exporter, over TLS.

Usage: export_otlp.py grpc|http ENDPOINT SERVICE SPAN_NAME

TLS comes from the exporter's own environment variables, as an application would set
them: OTEL_EXPORTER_OTLP_CERTIFICATE (the CA to trust), and for mutual TLS
OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and OTEL_EXPORTER_OTLP_CLIENT_KEY. Prints the trace
id; exits 1 when the export did not succeed.
"""

import sys

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExportResult


def main():
    transport, endpoint, service, name = sys.argv[1:5]
    if transport == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    elif transport == "http":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    else:
        raise SystemExit(f"unknown transport {transport}")
    exporter = OTLPSpanExporter(endpoint=endpoint, timeout=10)
    # No span processor: the ended span is exported by hand, so that the result is known.
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    span = provider.get_tracer("spindle.tls-test").start_span(name)
    span.end()
    result = exporter.export([span])
    exporter.shutdown()
    print(format(span.get_span_context().trace_id, "032x"))
    if result != SpanExportResult.SUCCESS:
        print(f"export failed: {result}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
