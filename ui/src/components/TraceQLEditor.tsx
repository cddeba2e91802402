// The TraceQL editor: a textarea with a completion list at the cursor. Inside `{ }` it
// offers scopes, intrinsics and the server's attribute names; after `attr =` the values
// (the server's, narrowed by the conditions before; fixed lists for status and kind);
// after `|` the pipeline stages. ↑↓ move, Enter or Tab accept, Escape closes,
// Ctrl+Space opens; Enter with the list closed (or Ctrl+Enter) runs the query.

import { useEffect, useRef, useState } from 'preact/hooks';
import * as tempo from '../api/tempo';
import { type CompletionData, type Context, type Suggestion, completionContext, suggestions, valuesFromServer } from '../model/traceql';

interface Menu {
  ctx: Context;
  items: Suggestion[];
  active: number;
  left: number;
  top: number;
}

export interface TraceQLEditorProps {
  value: string;
  onInput: (value: string) => void;
  onRun: () => void;
  /** The server refused the query: the editor is outlined as an error. */
  invalid?: boolean;
  /** Set the cursor here once (e.g. at a parse error's column). */
  focusAt?: { offset: number } | null;
}

/** The caret's position inside a textarea, measured on a hidden copy of it. */
function caretCoordinates(el: HTMLTextAreaElement, pos: number): { left: number; top: number } {
  const style = getComputedStyle(el);
  const mirror = document.createElement('div');
  for (const p of ['boxSizing', 'width', 'paddingTop', 'paddingRight', 'paddingBottom', 'paddingLeft', 'borderTopWidth', 'borderRightWidth', 'borderBottomWidth', 'borderLeftWidth', 'borderStyle', 'fontFamily', 'fontSize', 'fontWeight', 'lineHeight', 'letterSpacing', 'tabSize'] as const)
    mirror.style[p] = style[p];
  Object.assign(mirror.style, { position: 'absolute', visibility: 'hidden', whiteSpace: 'pre-wrap', overflowWrap: 'break-word', top: '0', left: '-9999px', overflow: 'hidden' });
  mirror.textContent = el.value.slice(0, pos);
  const marker = document.createElement('span');
  marker.textContent = el.value.slice(pos) || '.';
  mirror.append(marker);
  document.body.append(mirror);
  const lineHeight = parseFloat(style.lineHeight) || parseFloat(style.fontSize) * 1.4;
  const coords = { left: marker.offsetLeft - el.scrollLeft, top: marker.offsetTop - el.scrollTop + lineHeight };
  mirror.remove();
  return coords;
}

/** Contexts whose list opens by itself while typing; the others wait for Ctrl+Space. */
const AUTO_OPEN: Context['kind'][] = ['attribute', 'operator', 'value', 'pipeline'];

export function TraceQLEditor(props: TraceQLEditorProps) {
  const ta = useRef<HTMLTextAreaElement>(null);
  const [menu, setMenu] = useState<Menu | null>(null);
  const [loading, setLoading] = useState(false);
  const tagsCache = useRef<Promise<{ span: string[]; resource: string[] }> | null>(null);
  const valuesCache = useRef(new Map<string, Promise<tempo.TagValue[]>>());
  const generation = useRef(0);
  const list = useRef<HTMLUListElement>(null);

  useEffect(() => {
    const el = ta.current;
    if (!el || !props.focusAt) return;
    el.focus();
    el.setSelectionRange(props.focusAt.offset, props.focusAt.offset);
  }, [props.focusAt]);

  useEffect(() => {
    list.current?.querySelector('[aria-selected=true]')?.scrollIntoView({ block: 'nearest' });
  }, [menu?.active, menu?.items]);

  const loadTags = () => {
    // Failures give no attribute names (intrinsics and scopes still work) and are retried next time.
    tagsCache.current ??= Promise.all([tempo.tags('span'), tempo.tags('resource')]).then(
      ([span, resource]) => ({ span, resource }),
      () => {
        tagsCache.current = null;
        return { span: [], resource: [] };
      },
    );
    return tagsCache.current;
  };
  const loadValues = (tag: string, filter: string) => {
    const key = `${tag}\u0000${filter}`;
    let p = valuesCache.current.get(key);
    if (!p) {
      p = tempo.tagValues(tag, filter).catch(() => {
        valuesCache.current.delete(key);
        return [];
      });
      valuesCache.current.set(key, p);
    }
    return p;
  };

  /** Recomputes the list for the cursor; `explicit`: asked for with Ctrl+Space (or kept open). */
  const refresh = async (explicit: boolean) => {
    const el = ta.current;
    if (!el) return;
    const gen = ++generation.current;
    const cursor = el.selectionStart;
    if (cursor !== el.selectionEnd) return setMenu(null);
    const ctx = completionContext(el.value, cursor);
    if (!ctx || (!explicit && !AUTO_OPEN.includes(ctx.kind))) return setMenu(null);
    const data: CompletionData = {};
    const pending: Promise<unknown>[] = [];
    if (ctx.kind === 'attribute') pending.push(loadTags().then((t) => (data.tags = t)));
    if (ctx.kind === 'value' && valuesFromServer(ctx.attribute)) pending.push(loadValues(ctx.attribute, ctx.filter).then((v) => (data.values = v)));
    if (pending.length) {
      setLoading(true);
      await Promise.all(pending);
      if (gen !== generation.current) return;
      setLoading(false);
    }
    const items = suggestions(ctx, data);
    if (!items.length) return setMenu(null);
    const at = caretCoordinates(el, ctx.from);
    setMenu((old) => ({ ctx, items, active: old && old.ctx.kind === ctx.kind && old.ctx.from === ctx.from ? Math.min(old.active, items.length - 1) : 0, left: el.offsetLeft + at.left, top: el.offsetTop + at.top }));
  };

  const close = () => {
    generation.current++;
    setLoading(false);
    setMenu(null);
  };

  const accept = (item: Suggestion) => {
    const el = ta.current;
    if (!el || !menu) return;
    const { from, to } = menu.ctx;
    // Attributes and operators are followed by a space, so the next list opens at once.
    const ctx = menu.ctx;
    const spaced = (item.kind === 'attribute' || item.kind === 'intrinsic' || item.kind === 'operator') && ctx.kind !== 'logical' && !(ctx.kind === 'attribute' && ctx.grouping) && el.value[to] !== ' ';
    const insert = item.insert + (spaced ? ' ' : '');
    const text = el.value.slice(0, from) + insert + el.value.slice(to);
    const cursor = from + insert.length - (item.back ?? 0);
    el.value = text;
    el.setSelectionRange(cursor, cursor);
    props.onInput(text);
    close();
    if (item.kind === 'scope' || spaced || item.back) void refresh(false);
  };

  const onKeyDown = (e: KeyboardEvent) => {
    if (e.key === ' ' && e.ctrlKey) {
      e.preventDefault();
      void refresh(true);
      return;
    }
    if (menu) {
      const n = menu.items.length;
      switch (e.key) {
        case 'ArrowDown':
          e.preventDefault();
          setMenu({ ...menu, active: (menu.active + 1) % n });
          return;
        case 'ArrowUp':
          e.preventDefault();
          setMenu({ ...menu, active: (menu.active - 1 + n) % n });
          return;
        case 'PageDown':
          e.preventDefault();
          setMenu({ ...menu, active: Math.min(n - 1, menu.active + 8) });
          return;
        case 'PageUp':
          e.preventDefault();
          setMenu({ ...menu, active: Math.max(0, menu.active - 8) });
          return;
        case 'Enter':
        case 'Tab':
          if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) break;
          e.preventDefault();
          accept(menu.items[menu.active]);
          return;
        case 'Escape':
          e.preventDefault();
          e.stopPropagation();
          close();
          return;
      }
    }
    if (e.key === 'Enter' && !e.shiftKey) {
      e.preventDefault();
      close();
      props.onRun();
    }
  };

  const rows = Math.min(Math.max(props.value.split('\n').length, 1), 12);
  const active = menu ? `traceql-option-${menu.active}` : undefined;
  return (
    <div class="traceql-editor">
      <textarea
        ref={ta}
        class={`traceql-input mono${props.invalid ? ' invalid' : ''}`}
        name="traceql"
        rows={rows}
        value={props.value}
        spellcheck={false}
        autocomplete="off"
        autocapitalize="off"
        placeholder='{ resource.service.name = "api" && status = error }'
        aria-label="TraceQL query"
        aria-autocomplete="list"
        aria-expanded={!!menu}
        aria-controls="traceql-completions"
        aria-activedescendant={active}
        onInput={(e) => {
          const ev = e as InputEvent;
          props.onInput((e.target as HTMLTextAreaElement).value);
          // Typing opens the list; deleting only updates one that is open.
          if (ev.inputType?.startsWith('insert') || menu) void refresh(false);
        }}
        onKeyDown={onKeyDown}
        onBlur={close}
        onClick={() => menu && void refresh(true)}
      />
      {loading && !menu && <span class="traceql-loading spinner" aria-hidden="true" />}
      {menu && (
        <ul ref={list} id="traceql-completions" class="completions" role="listbox" data-testid="completions" style={{ left: `${menu.left}px`, top: `${menu.top}px` }}>
          {menu.items.map((it, k) => (
            <li
              id={`traceql-option-${k}`}
              role="option"
              aria-selected={k === menu.active}
              class={k === menu.active ? 'active' : undefined}
              data-kind={it.kind}
              // mousedown, not click: the textarea keeps the focus (its blur closes the list).
              onMouseDown={(e) => {
                e.preventDefault();
                accept(it);
              }}
              onMouseMove={() => k !== menu.active && setMenu({ ...menu, active: k })}
            >
              <span class="label">{it.label}</span>
              {it.detail && <span class="kind">{it.detail}</span>}
            </li>
          ))}
        </ul>
      )}
    </div>
  );
}
