"""Emits the known fixture spans through the Python `jaeger-client` (OpenTracing).

Usage: emit_jaeger_client.py AGENT_HOST AGENT_PORT
The client speaks thrift compact over UDP (the agent protocol of port 6831).
Same trace as emit_otel.py, in OpenTracing terms: tags instead of attributes,
`span.kind` tags, an `error=true` tag, a log with an `event` field, and a
FOLLOWS_FROM reference instead of a link. Service "py-jaeger-client".
"""

import sys
import time

import opentracing
from jaeger_client import Config

T0 = 1_700_000_000.0  # seconds


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    config = Config(
        config={
            "sampler": {"type": "const", "param": 1},
            "local_agent": {"reporting_host": host, "reporting_port": port},
            "logging": False,
            "tags": {"host.name": "fixture-host"},
        },
        service_name="py-jaeger-client",
        validate=True,
    )
    tracer = config.initialize_tracer()
    root = tracer.start_span("GET /quote", start_time=T0, tags={
        "span.kind": "server",
        "http.request.method": "GET",
        "http.response.status_code": 200,
        "ratio": 0.25,
        "cached": True,
    })
    db = tracer.start_span("db_query", child_of=root, start_time=T0 + 0.010,
                           tags={"span.kind": "client", "db.system": "postgresql", "error": True})
    db.log_kv({"event": "cache miss", "symbol": "AAPL", "attempt": 2}, timestamp=T0 + 0.020)
    db.finish(finish_time=T0 + 0.060)
    send = tracer.start_span("send_to_kafka", references=[opentracing.follows_from(db.context)],
                             start_time=T0 + 0.070, tags={"span.kind": "producer"})
    send.finish(finish_time=T0 + 0.100)
    root.finish(finish_time=T0 + 0.150)
    time.sleep(0.5)
    tracer.close()
    time.sleep(1.0)


if __name__ == "__main__":
    main()
