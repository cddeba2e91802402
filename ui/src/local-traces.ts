// Traces opened from a file on disk. They live in memory only: a reload forgets them and
// the trace page says to open the file again.

import { parseTraceFile } from './model/formats';
import type { JaegerTrace } from './model/trace';
import { href, navigate } from './router';

const opened = new Map<string, JaegerTrace>();
let lastFile: JaegerTrace[] = [];

export function localTrace(id: string): JaegerTrace | undefined {
  return opened.get(id);
}

export function localTraces(): JaegerTrace[] {
  return lastFile;
}

/** Parses the file and shows its trace (or, for several, the list of them). */
export async function openTraceFile(file: File): Promise<void> {
  const traces = parseTraceFile(await file.text());
  lastFile = traces;
  for (const t of traces) opened.set(t.traceID, t);
  if (traces.length === 1) navigate(href(`/trace/${traces[0].traceID}`, { source: 'file' }));
  else navigate(href('/search', { source: 'file' }));
}
