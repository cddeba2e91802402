// Lays the service graph out left to right with dagre (Sugiyama-style layered layout):
// callers left of callees, edge crossings minimised. Loaded on demand by the map page.

import { Graph, layout } from '@dagrejs/dagre';

export interface GraphInput {
  nodes: { id: string; width: number; height: number }[];
  /** `label` sizes the edge's label, for which dagre reserves room between the ranks. */
  edges: { from: string; to: string; label?: { width: number; height: number } }[];
}

export interface PlacedNode {
  id: string;
  x: number; // centre
  y: number;
  width: number;
  height: number;
}

export interface PlacedEdge {
  from: string;
  to: string;
  points: { x: number; y: number }[];
  /** Centre of the edge's label. */
  labelX: number;
  labelY: number;
}

export interface GraphLayout {
  nodes: PlacedNode[];
  edges: PlacedEdge[];
  width: number;
  height: number;
}

export function layoutGraph(input: GraphInput): GraphLayout {
  const g = new Graph({ multigraph: false });
  g.setGraph({ rankdir: 'LR', nodesep: 30, edgesep: 20, ranksep: 60, marginx: 20, marginy: 20 });
  g.setDefaultEdgeLabel(() => ({}));
  for (const n of input.nodes) g.setNode(n.id, { width: n.width, height: n.height });
  for (const e of input.edges) if (e.from !== e.to) g.setEdge(e.from, e.to, { width: e.label?.width ?? 0, height: e.label?.height ?? 0, labelpos: 'c' });
  layout(g);
  const label = g.graph();
  return {
    nodes: input.nodes.map((n) => {
      const p = g.node(n.id);
      return { id: n.id, x: p.x, y: p.y, width: n.width, height: n.height };
    }),
    edges: input.edges
      .filter((e) => e.from !== e.to)
      .map((e) => {
        const placed = g.edge(e.from, e.to);
        const points = (placed?.points ?? []).map((p: { x: number; y: number }) => ({ x: p.x, y: p.y }));
        const mid = points[Math.floor(points.length / 2)] ?? { x: 0, y: 0 };
        return { from: e.from, to: e.to, points, labelX: placed?.x ?? mid.x, labelY: placed?.y ?? mid.y };
      }),
    width: label.width ?? 0,
    height: label.height ?? 0,
  };
}
