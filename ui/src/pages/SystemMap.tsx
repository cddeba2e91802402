// The system map: every service and the Kafka/database peers they talk to, as a DAG,
// from `/api/spindle/graph`: nodes (virtual peers drawn dashed) and per-edge calls,
// error ratio and p99, computed by the server over every trace in the range.

import * as analytics from '../api/analytics';
import { Empty, ErrorState, Loading, LookbackSelect, useAsync } from '../components/common';
import { serviceColor } from '../model/format';
import type { GraphLayout } from '../model/graph-layout';
import { edgeLabel, peerTag } from '../model/monitor';
import { LOOKBACKS } from '../model/query';
import { href, navigate } from '../router';

const NODE_H = 44;
/** Average width of an 11px label character, to size labels before they are drawn. */
const LABEL_CHAR_W = 6.2;

export function SystemMapPage(props: { query: URLSearchParams }) {
  const lookback = props.query.get('lookback') ?? '24h';
  const [data, reload] = useAsync(
    async (signal) => {
      const end = Date.now() * 1000;
      const start = end - (LOOKBACKS[lookback] ?? LOOKBACKS['24h']);
      const [graph, { layoutGraph }] = await Promise.all([analytics.graph({ start, end }, signal), import('../model/graph-layout')]);
      const layout = layoutGraph({
        nodes: graph.nodes.map((n) => ({ id: n.id, width: Math.max(120, n.id.length * 7.5 + 40), height: NODE_H })),
        edges: graph.edges.map((e) => ({ from: e.parent, to: e.child, label: { width: edgeLabel(e).length * LABEL_CHAR_W, height: 16 } })),
      });
      return { graph, layout };
    },
    [lookback],
  );
  return (
    <div class="map-page">
      <div class="card toolbar">
        <h1>System map</h1>
        <div class="spacer" />
        <LookbackSelect value={lookback} />
      </div>
      {data.state === 'loading' && <Loading what="the dependency graph" />}
      {data.state === 'error' && <ErrorState error={data.error} retry={reload} />}
      {data.state === 'done' &&
        (data.value.layout.nodes.length === 0 ? (
          <Empty title="No services yet">Send spans to Spindle (OTLP on :4317 or :4318) and the services and their calls appear here.</Empty>
        ) : (
          <div class="card">
            <MapSvg layout={data.value.layout} graph={data.value.graph} />
            <p class="muted note">
              Calls, error % and p99 per edge over every trace that started in the range (<code>/api/spindle/graph</code>). Dashed nodes are peers that send no spans: one per Kafka topic (<code>messaging.destination.name</code>), databases (
              <code>db.system</code>) and other callees (<code>peer.service</code>). Click a service for its page, a peer for the spans that call it.
            </p>
          </div>
        ))}
    </div>
  );
}

function MapSvg(props: { layout: GraphLayout; graph: analytics.Graph }) {
  const { layout, graph } = props;
  const edges = new Map(graph.edges.map((e) => [`${e.parent}\u0000${e.child}`, e]));
  const nodes = new Map(graph.nodes.map((n) => [n.id, n]));
  const open = (id: string) => {
    if (nodes.get(id)?.kind === 'service') navigate(`/service/${encodeURIComponent(id)}`);
    else navigate(href('/search', { tags: peerTag(id, graph) }));
  };
  return (
    <svg class="map" viewBox={`0 0 ${layout.width} ${layout.height}`} width={layout.width} height={layout.height} role="img" aria-label="Service dependency graph" data-testid="system-map">
      <defs>
        <marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="9" markerHeight="9" markerUnits="userSpaceOnUse" orient="auto-start-reverse">
          <path d="M0,0 L10,5 L0,10 z" class="arrowhead" />
        </marker>
      </defs>
      {layout.edges.map((e) => {
        const s = edges.get(`${e.from}\u0000${e.to}`);
        const n = s?.callCount ?? 0;
        const d = e.points.map((p, i) => `${i ? 'L' : 'M'}${p.x},${p.y}`).join(' ');
        return (
          <g class={`edge${s && s.errorCount > 0 ? ' erroring' : ''}`} data-edge={`${e.from}->${e.to}`}>
            <path d={d} marker-end="url(#arrow)" style={{ strokeWidth: Math.min(1.5 + Math.log10(n + 1), 5) }} />
          </g>
        );
      })}
      {/* Labels after every edge, on a card-coloured plate, so no line runs through one. */}
      {layout.edges.map((e) => {
        const s = edges.get(`${e.from}\u0000${e.to}`);
        const text = s ? edgeLabel(s) : '';
        const w = text.length * LABEL_CHAR_W;
        return (
          <g class="edge-label" data-edge-label={`${e.from}->${e.to}`}>
            <rect x={e.labelX - w / 2} y={e.labelY - 8} width={w} height={16} rx={3} />
            <text x={e.labelX} y={e.labelY} text-anchor="middle" dominant-baseline="middle">
              {text}
            </text>
          </g>
        );
      })}
      {layout.nodes.map((n) => {
        const virtual = nodes.get(n.id)?.virtual ?? false;
        return (
          <g
            class={`node${virtual ? ' virtual' : ''}`}
            transform={`translate(${n.x - n.width / 2},${n.y - n.height / 2})`}
            onClick={() => open(n.id)}
            role="link"
            tabIndex={0}
            data-node={n.id}
            onKeyDown={(e) => e.key === 'Enter' && open(n.id)}
          >
            <rect width={n.width} height={n.height} rx={virtual ? 22 : 8} style={{ stroke: serviceColor(n.id) }} />
            <rect width={6} height={n.height} rx={3} style={{ fill: serviceColor(n.id), stroke: 'none' }} />
            <text x={n.width / 2 + 3} y={n.height / 2 + 1} text-anchor="middle" dominant-baseline="middle">
              {n.id}
            </text>
            <title>{virtual ? `${n.id}: a peer named by spans (it sends none itself)` : `${n.id}: open the service page`}</title>
          </g>
        );
      })}
    </svg>
  );
}
