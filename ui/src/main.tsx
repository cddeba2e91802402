// The app shell: top bar, theme, routes.

import { render } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import * as analytics from './api/analytics';
import { TENANT_PARAM, selectTenant, session, startSession } from './api/session';
import { AccountArea, SessionGate, useSession } from './components/Account';
import { ErrorState, Link } from './components/common';
import { openTraceFile } from './local-traces';
import { AlertsPage } from './pages/Alerts';
import { ComparePage } from './pages/Compare';
import { SearchPage } from './pages/Search';
import { ServicePage } from './pages/Service';
import { SystemMapPage } from './pages/SystemMap';
import { TracePage } from './pages/TracePage';
import { NAVIGATE_EVENT, navigate, setQuery, useLocation } from './router';
import './styles.css';

type Theme = 'light' | 'dark';

function initialTheme(): Theme {
  const saved = localStorage.getItem('spindle.theme');
  if (saved === 'light' || saved === 'dark') return saved;
  return matchMedia('(prefers-color-scheme: dark)').matches ? 'dark' : 'light';
}

function TopBar() {
  const s = useSession();
  const [theme, setTheme] = useState<Theme>(initialTheme);
  const [fileError, setFileError] = useState<string | null>(null);
  const fileInput = useRef<HTMLInputElement>(null);
  const loc = useLocation();
  useEffect(() => {
    document.documentElement.dataset.theme = theme;
    localStorage.setItem('spindle.theme', theme);
  }, [theme]);
  const section = loc.path.split('/')[1] || 'search';
  const nav = (path: string, label: string, key: string) => (
    <Link href={path} class={section === key ? 'active' : undefined}>
      {label}
    </Link>
  );
  return (
    <header class="topbar">
      <Link href="/search" class="brand">
        <svg viewBox="0 0 24 24" width="20" height="20" aria-hidden="true">
          <path d="M3 6h12M6 12h15M3 18h9" stroke="currentColor" stroke-width="3" stroke-linecap="round" />
        </svg>
        Spindle
      </Link>
      <nav>
        {nav('/search', 'Search', 'search')}
        {nav('/compare', 'Compare', 'compare')}
        {nav('/map', 'System map', 'map')}
        <Link href="/alerts" class={section === 'alerts' ? 'active' : undefined}>
          Alerts
          {s.ready && s.auth === 'ok' && <FiringCount key={s.tenant ?? ''} />}
        </Link>
      </nav>
      <div class="spacer" />
      <TraceIdJump />
      <button type="button" onClick={() => fileInput.current?.click()} title="Open a Jaeger or OTLP JSON file">
        Open JSON
      </button>
      <input
        ref={fileInput}
        type="file"
        accept=".json,application/json"
        hidden
        data-testid="open-file"
        onChange={async (e) => {
          const f = (e.currentTarget as HTMLInputElement).files?.[0];
          if (!f) return;
          try {
            setFileError(null);
            await openTraceFile(f);
          } catch (err) {
            setFileError(`${f.name}: ${(err as Error).message}`);
          }
          (e.target as HTMLInputElement).value = '';
        }}
      />
      <button type="button" class="icon" aria-label="Toggle dark theme" title="Light / dark" onClick={() => setTheme(theme === 'dark' ? 'light' : 'dark')}>
        {theme === 'dark' ? '☀' : '☾'}
      </button>
      <AccountArea path={loc.path + location.search} />
      {fileError && (
        <div class="toast" role="alert" onClick={() => setFileError(null)}>
          Cannot open {fileError}
        </div>
      )}
    </header>
  );
}

/** The number of firing alerts, next to the nav link; checked every 30 s. */
function FiringCount() {
  const [firing, setFiring] = useState(0);
  useEffect(() => {
    const ctl = new AbortController();
    const check = () =>
      analytics.alerts(ctl.signal).then(
        (list) => setFiring(list.filter((a) => a.state === 'firing').length),
        () => undefined,
      );
    check();
    const timer = setInterval(check, 30_000);
    return () => {
      clearInterval(timer);
      ctl.abort();
    };
  }, []);
  return firing ? (
    <span class="nav-count" data-testid="firing-count" title={`${firing} alert${firing === 1 ? '' : 's'} firing`}>
      {firing}
    </span>
  ) : null;
}

function TraceIdJump() {
  const [id, setId] = useState('');
  return (
    <form
      class="jump"
      onSubmit={(e) => {
        e.preventDefault();
        const v = id.trim().toLowerCase();
        if (/^[0-9a-f]{1,32}$/.test(v)) {
          navigate(`/trace/${v}`);
          setId('');
        }
      }}
    >
      <input placeholder="Trace ID…" value={id} onInput={(e) => setId((e.target as HTMLInputElement).value)} aria-label="Go to trace id" />
    </form>
  );
}

function Routes() {
  const { path, query } = useLocation();
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  switch (parts[0] ?? 'search') {
    case 'search':
      return <SearchPage query={query} />;
    case 'trace':
      if (parts[1]) return <TracePage key={parts[1]} traceId={parts[1]} query={query} />;
      break;
    case 'compare':
      return <ComparePage query={query} ids={parts.slice(1)} />;
    case 'map':
    case 'dependencies':
      return <SystemMapPage query={query} />;
    case 'alerts':
      return <AlertsPage />;
    case 'service':
      if (parts[1]) return <ServicePage key={parts[1]} service={parts[1]} query={query} />;
      break;
  }
  return <ErrorState error={`no page at ${path}`} hint={<Link href="/search">Go to search</Link>} />;
}

function App() {
  const s = useSession();
  const loc = useLocation();
  // Pages start once whoami has answered, so their first requests go to the right tenant;
  // a new tenant remounts them, so everything on screen is reloaded for it.
  return (
    <>
      <TopBar />
      <main>{s.auth !== 'ok' ? <SessionGate state={s} path={loc.path + location.search} /> : s.ready ? <Routes key={s.tenant ?? ''} /> : null}</main>
    </>
  );
}

/**
 * The URL's `tenant` parameter selects the tenant; a URL without one gets the one in
 * effect, so the address bar always says which tenant the page shows. Listening before
 * the app does, this runs before the pages see the new location.
 */
function syncTenant() {
  const inUrl = new URLSearchParams(location.search).get(TENANT_PARAM);
  const tenant = selectTenant(inUrl);
  if (session().ready && inUrl !== tenant) setQuery({ [TENANT_PARAM]: tenant }, true);
}
addEventListener('popstate', syncTenant);
addEventListener(NAVIGATE_EVENT, syncTenant);
startSession(new URLSearchParams(location.search).get(TENANT_PARAM)).then(syncTenant);

render(<App />, document.getElementById('app')!);
