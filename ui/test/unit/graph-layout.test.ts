import { expect, test } from 'vitest';
import { layoutGraph } from '../../src/model/graph-layout';

test('the seed pipeline lays out callers left of callees, labels between them', () => {
  const ids = ['ingestion-service', 'kafka', 'processor-service', 'storage-service', 'postgresql'];
  const edges = [
    ['ingestion-service', 'kafka'],
    ['kafka', 'processor-service'],
    ['kafka', 'storage-service'],
    ['storage-service', 'postgresql'],
  ].map(([from, to]) => ({ from, to, label: { width: 80, height: 16 } }));
  const g = layoutGraph({ nodes: ids.map((id) => ({ id, width: 120, height: 40 })), edges });
  const x = Object.fromEntries(g.nodes.map((n) => [n.id, n.x]));
  expect(x['ingestion-service']).toBeLessThan(x.kafka);
  expect(x.kafka).toBeLessThan(x['processor-service']);
  expect(x['storage-service']).toBeLessThan(x.postgresql);
  for (const e of g.edges) {
    expect(e.points.length).toBeGreaterThanOrEqual(2);
    expect(e.labelX).toBeGreaterThan(x[e.from]);
    expect(e.labelX).toBeLessThan(x[e.to]);
  }
  expect(g.width).toBeGreaterThan(0);
});

test('self loops are dropped rather than breaking the layout', () => {
  const g = layoutGraph({ nodes: [{ id: 'a', width: 10, height: 10 }], edges: [{ from: 'a', to: 'a' }] });
  expect(g.edges).toEqual([]);
  expect(g.nodes).toHaveLength(1);
});
