"""Exports one span with the OpenTelemetry Python SDK's OTLP exporter and prints the result.

Usage: export.py grpc|http ENDPOINT SERVICE
Headers come from the environment, as an operator sets them:
OTEL_EXPORTER_OTLP_HEADERS=Authorization=Bearer%20<token>. Exits 0 when the export
succeeded, 1 when the exporter reported a failure.
"""

import sys

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter


class Recording(SpanExporter):
    def __init__(self, inner):
        self.inner = inner
        self.results = []

    def export(self, spans):
        result = self.inner.export(spans)
        self.results.append(result)
        return result

    def shutdown(self):
        self.inner.shutdown()


def main():
    protocol, endpoint, service = sys.argv[1], sys.argv[2], sys.argv[3]
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        inner = OTLPSpanExporter(endpoint=endpoint, insecure=True)
    elif protocol == "http":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        inner = OTLPSpanExporter(endpoint=endpoint)
    else:
        raise SystemExit(f"unknown protocol {protocol}")
    exporter = Recording(inner)
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    provider.get_tracer("spindle.auth-test").start_span("authenticated export").end()
    provider.shutdown()
    print(" ".join(r.name for r in exporter.results))
    sys.exit(0 if exporter.results and all(r.name == "SUCCESS" for r in exporter.results) else 1)


if __name__ == "__main__":
    main()
