// The TraceQL editor's logic: what is completed where, the tag-values filter, the
// suggestions, metrics detection, error positions, and the form → TraceQL translation.

import { describe, expect, test } from 'vitest';
import {
  type Context,
  INTRINSICS,
  completionContext,
  errorPosition,
  isMetricsQuery,
  suggestions,
  tokenize,
  valuesFromServer,
} from '../../src/model/traceql';

/** The context at the `|` marker (removed from the text). */
function at(marked: string): Context | null {
  const cursor = marked.indexOf('‸');
  return completionContext(marked.replace('‸', ''), cursor);
}

const tags = { span: ['http.route', 'symbol'], resource: ['service.name', 'host.name'] };
const labels = (ctx: Context | null, data = {}) => (ctx ? suggestions(ctx, data).map((s) => s.label) : []);

describe('tokenize', () => {
  test('attributes, operators, strings, durations and punctuation', () => {
    const t = tokenize('{ resource.service.name = "a \\"b\\"" && span:duration > 1.5ms } | rate() by (span.http.route)');
    expect(t.map((x) => x.text)).toEqual(['{', 'resource.service.name', '=', '"a \\"b\\""', '&&', 'span:duration', '>', '1.5ms', '}', '|', 'rate', '(', ')', 'by', '(', 'span.http.route', ')']);
    expect(t.map((x) => x.kind).slice(0, 8)).toEqual(['punct', 'ident', 'op', 'string', 'op', 'ident', 'op', 'number']);
  });

  test('an unterminated string is marked open; a quoted attribute name stays one identifier', () => {
    expect(tokenize('{ .a = "TK0').at(-1)).toMatchObject({ kind: 'string', open: true, text: '"TK0' });
    expect(tokenize('{ span."my attr" = 1 }')[1]).toMatchObject({ kind: 'ident', text: 'span."my attr"' });
  });
});

describe('completion context', () => {
  test('inside braces: attributes, with the word typed so far replaced', () => {
    expect(at('{ ‸')).toEqual({ kind: 'attribute', prefix: '', from: 2, to: 2 });
    expect(at('{‸}')).toMatchObject({ kind: 'attribute', prefix: '' });
    expect(at('{ resource.ser‸ }')).toEqual({ kind: 'attribute', prefix: 'resource.ser', from: 2, to: 14 });
    // In the middle of a word, the whole word is replaced.
    expect(at('{ span.sy‸mbol = 1 }')).toMatchObject({ kind: 'attribute', prefix: 'span.sy', from: 2, to: 13 });
    expect(at('{ .a = 1 && ‸')).toMatchObject({ kind: 'attribute', prefix: '' });
    expect(at('{ (.a = 1 || ‸')).toMatchObject({ kind: 'attribute' });
  });

  test('outside braces: nothing, except pipeline stages and by(…) attributes', () => {
    expect(at('‸')).toBeNull();
    expect(at('{ } ‸')).toBeNull();
    expect(at('{ } | ‸')).toMatchObject({ kind: 'pipeline', prefix: '' });
    expect(at('{ } | ra‸')).toMatchObject({ kind: 'pipeline', prefix: 'ra', from: 6 });
    expect(at('{ } | rate() by (‸')).toMatchObject({ kind: 'attribute', grouping: true });
    expect(at('{ } | rate() by (resource.service.name, span.‸')).toMatchObject({ kind: 'attribute', prefix: 'span.', grouping: true });
  });

  test('after an attribute and a space: operators; `!` starts one', () => {
    expect(at('{ span.symbol ‸')).toMatchObject({ kind: 'operator', prefix: '', attribute: 'span.symbol' });
    expect(at('{ span.symbol !‸')).toMatchObject({ kind: 'operator', prefix: '!', from: 14 });
    expect(labels(at('{ span.symbol !‸'))).toEqual(['!=', '!~']);
  });

  test('after a comparison: values of that attribute, filtered by the conditions before', () => {
    expect(at('{ span.symbol = ‸')).toMatchObject({ kind: 'value', attribute: 'span.symbol', prefix: '', quoted: false, filter: '{}' });
    expect(at('{ span.symbol=‸')).toMatchObject({ kind: 'value', attribute: 'span.symbol' });
    expect(at('{ span.symbol =~ TK‸')).toMatchObject({ kind: 'value', prefix: 'TK', from: 17 });
    expect(at('{ resource.service.name = "x" && span.symbol = ‸')).toMatchObject({ filter: '{resource.service.name="x"}' });
    expect(at('{ resource.service.name = "x" && kind = server && span.symbol != ‸')).toMatchObject({ filter: '{resource.service.name="x" && kind=server}' });
    // An `||` before: a value need not satisfy the other branch, so no filter.
    expect(at('{ resource.service.name = "x" || span.symbol = ‸')).toMatchObject({ filter: '{}' });
    // Only the current spanset's conditions count.
    expect(at('{ .a = 1 } && { span.symbol = ‸')).toMatchObject({ filter: '{}' });
  });

  test('in an open string: string values, replacing from the quote (and a closing quote after the cursor)', () => {
    expect(at('{ span.symbol = "TK‸')).toMatchObject({ kind: 'value', prefix: 'TK', quoted: true, from: 16, to: 19 });
    expect(at('{ span.symbol = "TK‸" }')).toMatchObject({ from: 16, to: 20 });
  });

  test('after a complete condition: && || } (offered on request)', () => {
    expect(at('{ span.symbol = "TK042" ‸')).toMatchObject({ kind: 'logical' });
    expect(at('{ status = error ‸')).toMatchObject({ kind: 'logical' });
    expect(at('{ span.symbol = "TK042"‸')).toBeNull();
  });
});

describe('suggestions', () => {
  test('with nothing typed: scopes, then every intrinsic, then the attribute names', () => {
    const l = labels(at('{ ‸'), { tags });
    expect(l.slice(0, 3)).toEqual(['span.', 'resource.', '.']);
    for (const i of INTRINSICS) expect(l).toContain(i);
    expect(l).toEqual(expect.arrayContaining(['span.http.route', 'span.symbol', 'resource.service.name', 'resource.host.name']));
    expect(l.indexOf('span:parentID')).toBeLessThan(l.indexOf('span.http.route'));
  });

  test('filtered by the prefix, then by later segments', () => {
    expect(labels(at('{ resource.s‸'), { tags })).toEqual(['resource.service.name']);
    expect(labels(at('{ span‸'), { tags })).toEqual(['span.', 'span:name', 'span:status', 'span:duration', 'span:kind', 'span:id', 'span:parentID', 'span.http.route', 'span.symbol', 'link:spanID']);
    expect(labels(at('{ trace:r‸'), { tags })).toEqual(['trace:rootService', 'trace:rootName']);
    // A bare word finds scoped names by their own part.
    expect(labels(at('{ sym‸'), { tags })).toEqual(['span.symbol']);
    expect(labels(at('{ dur‸'), { tags })).toEqual(['duration', 'span:duration', 'trace:duration']);
  });

  test('`.` lists the attributes of both scopes, unscoped, once each', () => {
    expect(labels(at('{ .‸'), { tags: { span: ['a', 'b'], resource: ['b', 'c'] } })).toEqual(['.a', '.b', '.c']);
    expect(labels(at('{ .h‸'), { tags })).toEqual(['.host.name', '.http.route']);
  });

  test('status and kind values are keywords; others come from the server, strings quoted', () => {
    expect(labels(at('{ status = ‸'))).toEqual(['error', 'ok', 'unset']);
    expect(labels(at('{ span:kind != ‸'))).toEqual(['server', 'client', 'producer', 'consumer', 'internal', 'unspecified']);
    expect(labels(at('{ kind = c‸'))).toEqual(['client', 'consumer']);
    const values = [
      { type: 'string', value: 'TK042' },
      { type: 'int', value: '3' },
      { type: 'string', value: 'say "hi"' },
    ];
    const items = suggestions(at('{ span.symbol = ‸')!, { values });
    expect(items.map((s) => s.insert)).toEqual(['"TK042"', '3', '"say \\"hi\\""']);
    expect(items[0]).toMatchObject({ kind: 'value', detail: 'string' });
    expect(labels(at('{ span.symbol = TK‸'), { values })).toEqual(['"TK042"']);
    // In an open string: strings only, matched on their content.
    expect(labels(at('{ span.symbol = "s‸'), { values })).toEqual(['"say \\"hi\\""']);
    expect(labels(at('{ span.symbol = "‸'), { values })).toEqual(['"TK042"', '"say \\"hi\\""']);
  });

  test('which values are asked of the server', () => {
    expect(valuesFromServer('span.symbol')).toBe(true);
    expect(valuesFromServer('name')).toBe(true);
    expect(valuesFromServer('trace:rootService')).toBe(true);
    for (const a of ['status', 'span:status', 'kind', 'span:kind', 'duration', 'span:duration', 'trace:duration', 'span:id', 'trace:id']) expect(valuesFromServer(a), a).toBe(false);
  });

  test('pipeline stages put the cursor inside empty parentheses', () => {
    const items = suggestions(at('{ } | ‸')!);
    expect(items.map((s) => s.label)).toEqual(expect.arrayContaining(['rate()', 'count_over_time()', 'quantile_over_time(duration, .99)', 'histogram_over_time(duration)', 'by()', 'select()']));
    expect(items.find((s) => s.label === 'rate()')!.back).toBe(1);
    expect(items.find((s) => s.label === 'quantile_over_time(duration, .99)')!.back).toBe(0);
    expect(labels(at('{ } | q‸'))).toEqual(['quantile_over_time(duration, .99)']);
  });
});

describe('metrics queries', () => {
  test.each([
    ['{ } | rate()', true],
    ['{ } | rate() by (resource.service.name)', true],
    ['{ status = error } | count_over_time() by (span.symbol)', true],
    ['{ } | quantile_over_time(duration, .5, .99)', true],
    ['{ } | histogram_over_time(duration)', true],
    ['{ } | sum_over_time(span.bytes)', true],
    ['{ } | min_over_time(duration)', true],
    ['{ } | max_over_time(duration)', true],
    ['{ } | avg_over_time(duration)', true],
    ['{ } | rate() by (span.a) | topk(5)', true],
    ['{ } | compare({ status = error })', true],
    ['{ }|rate()', true],
    ['{ status = error }', false],
    ['{ } | count() > 2', false],
    ['{ } | select(span.a)', false],
    ['{ name = "| rate()" }', false],
    ['{ span.rate = 1 }', false],
  ])('%s → %s', (q, yes) => {
    expect(isMetricsQuery(q)).toBe(yes);
  });
});

describe('error position', () => {
  test('line and column of the server message, as an offset into the query', () => {
    const q = '{ span.foo = }';
    expect(errorPosition("parse error at line 1, column 14: expected a value after '=', found '}'", q)).toEqual({ line: 1, column: 14, offset: 13 });
    expect(q[13]).toBe('}');
    const multi = '{ .a = 1 }\n&& { .b = }';
    expect(errorPosition('parse error at line 2, column 11: expected a value', multi)).toEqual({ line: 2, column: 11, offset: 21 });
    expect(multi[21]).toBe('}');
    // Columns count characters: an emoji before is one column, two UTF-16 units.
    const emoji = '{ .a = "😀" && }';
    expect(errorPosition('parse error at line 1, column 15: expected a condition', emoji)?.offset).toBe(15);
    expect(emoji[15]).toBe('}');
  });

  test('no position in the message, or one outside the query: none', () => {
    expect(errorPosition('invalid TraceQL query: unknown function foo', '{ } | foo()')).toBeNull();
    expect(errorPosition('parse error at line 3, column 1: x', '{ }')).toBeNull();
    // A column past the end (an error at the end of the input) points just after it.
    expect(errorPosition('parse error at line 1, column 4: unexpected end of input', '{ .')?.offset).toBe(3);
  });
});
