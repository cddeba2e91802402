// TraceQL as the editor needs it: a tolerant tokenizer, what to complete at the cursor,
// the suggestions for it, whether a query is a metrics query, and where a parse error
// points. Pure: the tag names and values come in from `api/tempo.ts`.

export const INTRINSICS = [
  'name',
  'status',
  'statusMessage',
  'kind',
  'duration',
  'span:name',
  'span:status',
  'span:duration',
  'span:kind',
  'span:id',
  'span:parentID',
  'trace:rootService',
  'trace:rootName',
  'trace:duration',
  'trace:id',
  'event:name',
  'event:timeSinceStart',
  'link:traceID',
  'link:spanID',
  'instrumentation:name',
  'instrumentation:version',
] as const;

export const SCOPES = ['span.', 'resource.', '.'] as const;

export const STATUS_VALUES = ['error', 'ok', 'unset'];
export const KIND_VALUES = ['server', 'client', 'producer', 'consumer', 'internal', 'unspecified'];

/** Comparison operators, in the order the editor offers them. */
export const COMPARISONS = ['=', '!=', '=~', '!~', '>', '>=', '<', '<='];

/** Pipeline stages that turn spans into time series (`| rate()`, …). */
export const METRICS_FUNCTIONS = [
  'rate',
  'count_over_time',
  'quantile_over_time',
  'histogram_over_time',
  'sum_over_time',
  'min_over_time',
  'max_over_time',
  'avg_over_time',
  'topk',
  'bottomk',
  'compare',
];

/** What the editor offers after `|`: [insert, detail]; `()` puts the cursor between them. */
const PIPELINE: [string, string][] = [
  ['rate()', 'spans per second'],
  ['count_over_time()', 'spans per step'],
  ['quantile_over_time(duration, .99)', 'quantiles per step'],
  ['histogram_over_time(duration)', 'histogram per step'],
  ['sum_over_time()', 'sum per step'],
  ['min_over_time(duration)', 'minimum per step'],
  ['max_over_time(duration)', 'maximum per step'],
  ['avg_over_time(duration)', 'average per step'],
  ['compare()', 'attributes of a selection vs the rest'],
  ['topk(10)', 'top series'],
  ['bottomk(10)', 'bottom series'],
  ['select()', 'extra attributes on matched spans'],
  ['by()', 'group'],
  ['count()', 'spans per spanset'],
  ['avg(duration)', 'aggregate per spanset'],
  ['max(duration)', 'aggregate per spanset'],
  ['min(duration)', 'aggregate per spanset'],
  ['sum(duration)', 'aggregate per spanset'],
];

export type TokenKind = 'string' | 'ident' | 'number' | 'op' | 'punct';

export interface Token {
  kind: TokenKind;
  text: string;
  start: number;
  end: number;
  /** A string literal without its closing quote (the user is typing it). */
  open?: boolean;
}

const IDENT_START = /[A-Za-z_.]/;
const IDENT = /[A-Za-z0-9_.:\-/@]/;
const OP = /[=!~<>&|]/;

/** Tokens of `text`; never throws: unknown characters become one-character punctuation. */
export function tokenize(text: string): Token[] {
  const out: Token[] = [];
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    if (/\s/.test(c)) {
      i++;
      continue;
    }
    const start = i;
    if (c === '"' || c === '`') {
      i++;
      while (i < text.length && text[i] !== c) i += text[i] === '\\' && c === '"' ? 2 : 1;
      const open = i >= text.length;
      i = Math.min(i + 1, text.length);
      out.push({ kind: 'string', text: text.slice(start, i), start, end: i, open: open || undefined });
    } else if (/[0-9]/.test(c) || (c === '-' && /[0-9]/.test(text[i + 1] ?? ''))) {
      i++;
      while (i < text.length && /[0-9A-Za-zµ.]/.test(text[i])) i++;
      out.push({ kind: 'number', text: text.slice(start, i), start, end: i });
    } else if (IDENT_START.test(c)) {
      i++;
      // `span."name with spaces"`: a quoted attribute name continues the identifier.
      while (i < text.length) {
        if (IDENT.test(text[i])) i++;
        else if (text[i] === '"' && text[i - 1] === '.') {
          i++;
          while (i < text.length && text[i] !== '"') i += text[i] === '\\' ? 2 : 1;
          i = Math.min(i + 1, text.length);
        } else break;
      }
      out.push({ kind: 'ident', text: text.slice(start, i), start, end: i });
    } else if (OP.test(c)) {
      i++;
      while (i < text.length && OP.test(text[i])) i++;
      out.push({ kind: 'op', text: text.slice(start, i), start, end: i });
    } else {
      i++;
      out.push({ kind: 'punct', text: c, start, end: i });
    }
  }
  return out;
}

/** What the cursor is in front of, and which text a suggestion replaces ([from, to)). */
export type Context =
  | {
      kind: 'attribute';
      prefix: string;
      from: number;
      to: number;
      /** In `by(…)` or `select(…)`, not in a condition: no operator follows. */
      grouping?: boolean;
    }
  | { kind: 'operator'; prefix: string; from: number; to: number; attribute: string }
  | {
      kind: 'value';
      prefix: string;
      from: number;
      to: number;
      attribute: string;
      /** The user has opened a string literal. */
      quoted: boolean;
      /** The spanset's conditions before this one, as a TraceQL filter (`{}` when none). */
      filter: string;
    }
  | { kind: 'logical'; prefix: string; from: number; to: number }
  | { kind: 'pipeline'; prefix: string; from: number; to: number };

const isComparison = (t: Token | undefined) => t?.kind === 'op' && COMPARISONS.includes(t.text);

/** The context for completion at `cursor` in `text`, or null where nothing is offered. */
export function completionContext(text: string, cursor: number): Context | null {
  const before = text.slice(0, cursor);
  const tokens = tokenize(before);
  const last = tokens[tokens.length - 1];
  const touching = last !== undefined && last.end === cursor;

  // Inside a string literal: values of the attribute before the operator.
  if (last?.kind === 'string' && last.open) {
    const op = tokens[tokens.length - 2];
    const attr = tokens[tokens.length - 3];
    if (!isComparison(op) || attr?.kind !== 'ident') return null;
    const to = text[cursor] === last.text[0] ? cursor + 1 : cursor;
    return { kind: 'value', prefix: last.text.slice(1), from: last.start, to, attribute: attr.text, quoted: true, filter: valueFilter(tokens, tokens.length - 3) };
  }
  if (last?.kind === 'string' && touching) return null; // right after a closed string

  // The word being typed (if any) and the token before it.
  let prefix = '';
  let from = cursor;
  let prevIndex = tokens.length - 1;
  if (touching && (last.kind === 'ident' || last.kind === 'number')) {
    prefix = last.text;
    from = last.start;
    prevIndex--;
  } else if (touching && last.kind === 'op' && last.text === '!' && tokens[tokens.length - 2]?.kind === 'ident') {
    // `attr !`: an operator being typed.
    return { kind: 'operator', prefix: '!', from: last.start, to: cursor, attribute: tokens[tokens.length - 2].text };
  }
  const to = cursor + (/^[A-Za-z0-9_.:\-/@]*/.exec(text.slice(cursor))?.[0].length ?? 0);
  const prev = tokens[prevIndex];

  const { depth, inParens } = nesting(tokens.slice(0, prevIndex + 1));
  if (depth === 0) {
    // Outside spanset filters: pipeline stages after `|`, attributes inside `by(…)` or `select(…)`.
    if (prev?.kind === 'op' && prev.text === '|') return { kind: 'pipeline', prefix, from, to };
    if (inParens && (prev?.text === '(' || prev?.text === ',')) return { kind: 'attribute', prefix, from, to, grouping: true };
    return null;
  }
  if (isComparison(prev)) {
    const attr = tokens[prevIndex - 1];
    if (attr?.kind !== 'ident') return null;
    return { kind: 'value', prefix, from, to, attribute: attr.text, quoted: false, filter: valueFilter(tokens, prevIndex - 1) };
  }
  if (prev === undefined || prev.text === '{' || prev.text === '(' || prev.text === '&&' || prev.text === '||' || prev.text === '!' || prev.text === ',') {
    return { kind: 'attribute', prefix, from, to };
  }
  if (prefix) return null; // a word right after an operand: nothing sensible to offer
  if (prev.kind === 'ident' && !isComparison(tokens[prevIndex - 1])) return { kind: 'operator', prefix: '', from, to, attribute: prev.text };
  if (prev.kind === 'ident' || prev.kind === 'string' || prev.kind === 'number' || prev.text === ')') return { kind: 'logical', prefix: '', from, to };
  return null;
}

/** How deep in `{…}` the end of `tokens` is, and whether it is inside `(…)` outside them. */
function nesting(tokens: Token[]): { depth: number; inParens: boolean } {
  let depth = 0;
  let parens = 0;
  for (const t of tokens) {
    if (t.text === '{') depth++;
    else if (t.text === '}') depth = Math.max(0, depth - 1);
    else if (depth === 0 && t.text === '(') parens++;
    else if (depth === 0 && t.text === ')') parens = Math.max(0, parens - 1);
  }
  return { depth, inParens: parens > 0 };
}

/**
 * The conditions of the current spanset before the one at `attrIndex`, as a filter for the
 * tag-values lookup: `{resource.service.name="x" && span.kind=server}`. Only plain
 * `attr op value` conditions joined by `&&` narrow it; anything else (`||`, parentheses)
 * gives `{}`, since a value there need not satisfy them.
 */
export function valueFilter(tokens: Token[], attrIndex: number): string {
  let open = -1;
  let depth = 0;
  for (let k = attrIndex - 1; k >= 0; k--) {
    if (tokens[k].text === '}') depth++;
    else if (tokens[k].text === '{') {
      if (depth === 0) {
        open = k;
        break;
      }
      depth--;
    }
  }
  if (open < 0) return '{}';
  const inner = tokens.slice(open + 1, attrIndex);
  if (inner.length && inner[inner.length - 1].text === '&&') inner.pop();
  const conds: string[] = [];
  for (let k = 0; k < inner.length; k += 4) {
    const [a, op, v, join] = inner.slice(k, k + 4);
    if (a?.kind !== 'ident' || !isComparison(op) || !v || v.kind === 'op' || v.kind === 'punct' || v.open) return '{}';
    if (join && join.text !== '&&') return '{}';
    conds.push(`${a.text}${op.text}${v.text}`);
  }
  return `{${conds.join(' && ')}}`;
}

export type SuggestionKind = 'intrinsic' | 'scope' | 'attribute' | 'value' | 'operator' | 'keyword' | 'function';

export interface Suggestion {
  label: string;
  insert: string;
  kind: SuggestionKind;
  detail?: string;
  /** Where the cursor goes, counted back from the end of `insert` (inside `()`). */
  back?: number;
}

export interface TagValue {
  type: string;
  value: string;
}

export interface CompletionData {
  /** Attribute names by scope: `span`, `resource`. */
  tags?: { span: string[]; resource: string[] };
  /** Values of the context's attribute. */
  values?: TagValue[];
}

/** The intrinsic an attribute name is, if it is one, without `span:` (`span:kind` → `kind`). */
export function intrinsicOf(attribute: string): string | null {
  if (!(INTRINSICS as readonly string[]).includes(attribute)) return null;
  return attribute.startsWith('span:') ? attribute.slice(5) : attribute;
}

/** Intrinsics whose values are a fixed list, a duration or an id: nothing to ask the server. */
const NO_SERVER_VALUES = ['status', 'kind', 'duration', 'id', 'parentID', 'trace:duration', 'trace:id', 'event:timeSinceStart', 'link:traceID', 'link:spanID'];

/** Whether the values of `attribute` are worth asking the server for. */
export function valuesFromServer(attribute: string): boolean {
  const i = intrinsicOf(attribute);
  return i === null || !NO_SERVER_VALUES.includes(i);
}

/** A string as a TraceQL literal. */
export function quote(s: string): string {
  return `"${s.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
}

/** A tag value as TraceQL writes it: strings quoted, numbers, booleans and keywords bare. */
export function valueLiteral(v: TagValue): string {
  return v.type === 'string' ? quote(v.value) : v.value;
}

/**
 * Keeps the items whose label starts with `prefix`, then those with a later segment
 * (after `.` or `:`) that does, in their given order; case-insensitive.
 */
function filterByPrefix(items: Suggestion[], prefix: string, key: (s: Suggestion) => string = (s) => s.label): Suggestion[] {
  const p = prefix.toLowerCase();
  if (!p) return items;
  const first: Suggestion[] = [];
  const later: Suggestion[] = [];
  for (const it of items) {
    const l = key(it).toLowerCase();
    if (l === p) continue; // already typed in full
    if (l.startsWith(p)) first.push(it);
    else if (p.length >= 2 && /^\w/.test(p) && [...l.matchAll(/[.:]/g)].some((m) => l.startsWith(p, m.index + 1))) later.push(it);
  }
  return [...first, ...later];
}

const MAX_SUGGESTIONS = 100;

/** The suggestions for a context, given what the server said. */
export function suggestions(ctx: Context, data: CompletionData = {}): Suggestion[] {
  switch (ctx.kind) {
    case 'attribute': {
      const span = data.tags?.span ?? [];
      const resource = data.tags?.resource ?? [];
      let items: Suggestion[];
      if (ctx.prefix.startsWith('.')) {
        // Unscoped: either scope's attributes, once each.
        items = [...new Set([...span, ...resource])].sort().map((t) => ({ label: `.${t}`, insert: `.${t}`, kind: 'attribute' as const, detail: span.includes(t) ? 'span' : 'resource' }));
      } else {
        items = [
          ...SCOPES.filter((s) => s !== '.').map((s) => ({ label: s, insert: s, kind: 'scope' as const, detail: 'scope' })),
          ...(ctx.prefix ? [] : [{ label: '.', insert: '.', kind: 'scope' as const, detail: 'any scope' }]),
          ...INTRINSICS.map((i) => ({ label: i, insert: i, kind: 'intrinsic' as const, detail: 'intrinsic' })),
          ...span.map((t) => ({ label: `span.${t}`, insert: `span.${t}`, kind: 'attribute' as const, detail: 'span' })),
          ...resource.map((t) => ({ label: `resource.${t}`, insert: `resource.${t}`, kind: 'attribute' as const, detail: 'resource' })),
        ];
      }
      return filterByPrefix(items, ctx.prefix).slice(0, MAX_SUGGESTIONS);
    }
    case 'operator':
      return COMPARISONS.filter((o) => o.startsWith(ctx.prefix)).map((o) => ({ label: o, insert: o, kind: 'operator' }));
    case 'logical':
      return [
        { label: '&&', insert: '&&', kind: 'operator', detail: 'and' },
        { label: '||', insert: '||', kind: 'operator', detail: 'or' },
        { label: '}', insert: '}', kind: 'keyword', detail: 'end of spanset' },
      ];
    case 'pipeline':
      return filterByPrefix(
        PIPELINE.map(([insert, detail]) => ({ label: insert, insert, kind: 'function' as const, detail, back: insert.endsWith('()') ? 1 : 0 })),
        ctx.prefix,
      );
    case 'value': {
      const intrinsic = intrinsicOf(ctx.attribute);
      let values: TagValue[];
      if (intrinsic === 'status') values = STATUS_VALUES.map((value) => ({ type: 'keyword', value }));
      else if (intrinsic === 'kind') values = KIND_VALUES.map((value) => ({ type: 'keyword', value }));
      else values = data.values ?? [];
      // In an open string only strings fit; the typed text (after the quote) filters them.
      if (ctx.quoted) values = values.filter((v) => v.type === 'string');
      const items = values.map((v) => ({ label: valueLiteral(v), insert: valueLiteral(v), kind: 'value' as const, detail: v.type }));
      const typed = ctx.quoted ? ctx.prefix : ctx.prefix.replace(/^"/, '');
      return filterByPrefix(items, typed, (s) => (s.detail === 'string' ? s.label.slice(1) : s.label)).slice(0, MAX_SUGGESTIONS);
    }
  }
}

/** Whether the query ends in a metrics pipeline (`| rate()`, `| quantile_over_time(…)`, …). */
export function isMetricsQuery(query: string): boolean {
  const tokens = tokenize(query);
  let depth = 0;
  for (let k = 0; k < tokens.length; k++) {
    const t = tokens[k];
    if (t.text === '{') depth++;
    else if (t.text === '}') depth = Math.max(0, depth - 1);
    else if (depth === 0 && t.kind === 'op' && t.text === '|' && tokens[k + 1]?.kind === 'ident' && METRICS_FUNCTIONS.includes(tokens[k + 1].text)) return true;
  }
  return false;
}

export interface ErrorPosition {
  /** 1-based, as the server reports them. */
  line: number;
  column: number;
  /** Offset into the query (clamped to its length). */
  offset: number;
}

/** Where a parse error (`parse error at line 1, column 14: …`) points in `query`. */
export function errorPosition(message: string, query: string): ErrorPosition | null {
  const m = /line (\d+),? col(?:umn)? (\d+)/i.exec(message);
  if (!m) return null;
  const line = Number(m[1]);
  const column = Number(m[2]);
  const lines = query.split('\n');
  if (line < 1 || column < 1 || line > Math.max(lines.length, 1)) return null;
  let offset = 0;
  for (let k = 0; k < line - 1; k++) offset += lines[k].length + 1;
  // Columns count characters (code points), offsets UTF-16 units; a column past the end of
  // the line (an error at the end of the input) points just after it.
  offset += Array.from(lines[line - 1] ?? '')
    .slice(0, column - 1)
    .join('').length;
  return { line, column, offset };
}
