// The selected span: what it did, where it ran, what happened inside it, what it links to.

import { formatDuration, formatTime } from '../model/format';
import { type Span, type Tag, type Trace, tagValue } from '../model/trace';
import { href } from '../router';
import { Link, ServiceBadge } from './common';

function TagTable(props: { tags: Tag[]; testid?: string }) {
  if (!props.tags.length) return <p class="muted">none</p>;
  return (
    <table class="kv" data-testid={props.testid}>
      <tbody>
        {props.tags.map((t) => (
          <tr>
            <th title={t.type}>{t.key}</th>
            <td class={t.key === 'error' || (t.key === 'otel.status_code' && t.value === 'ERROR') ? 'error-text' : undefined}>{String(t.value)}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

export function SpanDetail(props: { span: Span; trace: Trace; onSelect: (s: Span) => void; onClose: () => void }) {
  const { span: s, trace } = props;
  const status = tagValue(s.tags, 'otel.status_code');
  const statusMsg = tagValue(s.tags, 'otel.status_description');
  const parent = s.parent;
  const links = s.references.filter((r) => r.refType === 'FOLLOWS_FROM' || (r.refType === 'CHILD_OF' && r.spanID !== parent?.spanID));
  return (
    <aside class="span-detail" aria-label="Span detail" data-testid="span-detail">
      <header>
        <div>
          <h2>{s.operationName}</h2>
          <ServiceBadge service={s.service} href={`/service/${encodeURIComponent(s.service)}`} />
        </div>
        <button type="button" class="icon" aria-label="Close span detail" onClick={props.onClose}>
          ✕
        </button>
      </header>
      <dl class="facts">
        <dt>Duration</dt>
        <dd>{formatDuration(s.duration)}</dd>
        <dt>Start</dt>
        <dd>
          +{formatDuration(s.startTime - trace.startTime)} <span class="muted">({formatTime(s.startTime)})</span>
        </dd>
        <dt>Kind</dt>
        <dd>{s.kind || 'unspecified'}</dd>
        <dt>Status</dt>
        <dd class={s.error ? 'error-text' : undefined} data-testid="span-status">
          {s.error ? 'ERROR' : String(status ?? 'UNSET')}
          {statusMsg !== undefined && `: ${statusMsg}`}
        </dd>
        <dt>Span ID</dt>
        <dd class="mono">{s.spanID}</dd>
        {parent && (
          <>
            <dt>Parent</dt>
            <dd>
              <button type="button" class="linklike" onClick={() => props.onSelect(parent)}>
                {parent.service}: {parent.operationName}
              </button>
            </dd>
          </>
        )}
        {s.orphan && (
          <>
            <dt>Parent</dt>
            <dd class="warn-text">missing from this trace (span {s.references[0]?.spanID})</dd>
          </>
        )}
      </dl>
      <h3>Attributes</h3>
      <TagTable tags={s.tags} testid="span-attributes" />
      <h3>Resource</h3>
      <TagTable tags={[{ key: 'service.name', type: 'string', value: s.process.serviceName }, ...s.process.tags]} testid="span-resource" />
      <h3>Events ({s.logs.length})</h3>
      {s.logs.length ? (
        <ol class="events">
          {s.logs.map((l) => (
            <li>
              <div>
                <b>{String(tagValue(l.fields, 'event') ?? 'log')}</b>{' '}
                <span class="muted" title={formatTime(l.timestamp)}>
                  +{formatDuration(l.timestamp - s.startTime)} in span · +{formatDuration(l.timestamp - trace.startTime)} in trace
                </span>
              </div>
              <TagTable tags={l.fields.filter((f) => f.key !== 'event')} />
            </li>
          ))}
        </ol>
      ) : (
        <p class="muted">none</p>
      )}
      <h3>Links ({links.length})</h3>
      {links.length ? (
        <ul class="links">
          {links.map((r) => {
            const local = r.traceID === trace.traceID ? trace.byId.get(r.spanID) : undefined;
            return (
              <li>
                <span class="muted">{r.refType === 'FOLLOWS_FROM' ? 'follows from' : 'child of'}</span>{' '}
                {local ? (
                  <button type="button" class="linklike" onClick={() => props.onSelect(local)}>
                    {local.service}: {local.operationName}
                  </button>
                ) : (
                  <Link href={href(`/trace/${r.traceID}`, { span: r.spanID })} class="mono">
                    {r.traceID.slice(0, 16)}…/{r.spanID}
                  </Link>
                )}
              </li>
            );
          })}
        </ul>
      ) : (
        <p class="muted">none</p>
      )}
      {s.warnings?.length ? (
        <>
          <h3>Warnings</h3>
          <ul class="warn-text">
            {s.warnings.map((w) => (
              <li>{w}</li>
            ))}
          </ul>
        </>
      ) : null}
    </aside>
  );
}
