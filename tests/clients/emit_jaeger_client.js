// Emits the known fixture spans through Node `jaeger-client`.
//
// Usage: node emit_jaeger_client.js udp HOST PORT   (thrift binary over UDP, port 6832 style)
//        node emit_jaeger_client.js http URL        (thrift binary Batch over HTTP, 14268 style)
// Same trace as emit_jaeger_client.py; service "node-jaeger-client-<transport>".
'use strict';

const { initTracer, opentracing } = require('jaeger-client');

const T0 = 1700000000000; // ms

const [transport, a, b] = process.argv.slice(2);
const reporter = transport === 'udp'
  ? { agentHost: a, agentPort: Number(b), flushIntervalMs: 100 }
  : { collectorEndpoint: a, flushIntervalMs: 100 };
const tracer = initTracer(
  {
    serviceName: `node-jaeger-client-${transport}`,
    sampler: { type: 'const', param: 1 },
    reporter,
  },
  { tags: { 'host.name': 'fixture-host' }, logger: { info() {}, error(e) { console.error(e); } } },
);

const root = tracer.startSpan('GET /quote', {
  startTime: T0,
  tags: {
    'span.kind': 'server',
    'http.request.method': 'GET',
    'http.response.status_code': 200,
    ratio: 0.25,
    cached: true,
  },
});
const db = tracer.startSpan('db_query', {
  childOf: root,
  startTime: T0 + 10,
  tags: { 'span.kind': 'client', 'db.system': 'postgresql', error: true },
});
db.log({ event: 'cache miss', symbol: 'AAPL', attempt: 2 }, T0 + 20);
db.finish(T0 + 60);
const send = tracer.startSpan('send_to_kafka', {
  references: [opentracing.followsFrom(db.context())],
  startTime: T0 + 70,
  tags: { 'span.kind': 'producer' },
});
send.finish(T0 + 100);
root.finish(T0 + 150);
setTimeout(() => tracer.close(() => process.exit(0)), 500);
