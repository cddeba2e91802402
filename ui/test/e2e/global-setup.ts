// One spindle for the whole browser suite, loaded with the seed pipeline's traces and a
// 10k-span trace; the tests get its URL and the ids through `inject`.

import type { TestProject } from 'vitest/node';
import { bigTrace, pipelineTrace, pipelineWorkload } from './fixtures';
import { type Spindle, postOtlp, startSpindle } from './server';

declare module 'vitest' {
  export interface ProvidedContext {
    baseUrl: string;
    fastTrace: string;
    slowTrace: string;
    errorTrace: string;
    bigTrace: string;
    bigSpans: number;
    syncTrace: string;
  }
}

/**
 * Two rules: one fires on processor-service's failed calculate_bsm spans (three of the
 * workload's traces), one on storage-service's db_write p99 above a minute stays inactive.
 */
export const ALERT_RULES = `evaluation_interval: 300ms
rules:
  - name: ProcessorErrors
    service: processor-service
    window: 1h
    condition: {type: error_trace}
    labels: {severity: page}
    annotations: {summary: processor-service failed a message}
  - name: StorageSlowWrites
    service: storage-service
    operation: db_write
    window: 1h
    condition: {type: latency_above, quantile: 0.99, threshold_ms: 60000}
`;

let spindle: Spindle | undefined;

export default async function setup(project: TestProject) {
  spindle = await startSpindle({ alertRules: ALERT_RULES });
  const now = Date.now() * 1000;
  const workload = pipelineWorkload(40, now);
  for (let k = 0; k < workload.length; k += 10) {
    await postOtlp(spindle, { resourceSpans: workload.slice(k, k + 10).flatMap((t) => t.data.resourceSpans) });
  }
  // A pair that differs in the expected ways: B's calculate_bsm is 5× slower and its
  // db_write was retried twice, so compare shows both latency and structure changes.
  const fast = pipelineTrace(9001, now - 60e6);
  const slow = pipelineTrace(9002, now - 30e6, { slow: 5, retries: 3 });
  const error = pipelineTrace(9003, now - 10e6, { failure: 'db', retries: 3, linkTo: { traceId: fast.traceId, spanId: fast.rootSpanId } });
  await postOtlp(spindle, { resourceSpans: [fast, slow, error].flatMap((t) => t.data.resourceSpans) });
  const big = bigTrace(10_000, now - 120e6);
  for (const part of big.parts) await postOtlp(spindle, part);
  // A small synchronous trace (children inside their parents, some in parallel): there the
  // critical path has one definition, so the UI's must equal the server's span for span.
  const sync = bigTrace(36, now - 90e6, 11);
  for (const part of sync.parts) await postOtlp(spindle, part);

  project.provide('baseUrl', spindle.queryUrl);
  project.provide('fastTrace', fast.traceId);
  project.provide('slowTrace', slow.traceId);
  project.provide('errorTrace', error.traceId);
  project.provide('bigTrace', big.traceId);
  project.provide('bigSpans', 10_000);
  project.provide('syncTrace', sync.traceId);
  return async () => {
    await spindle?.stop();
  };
}
