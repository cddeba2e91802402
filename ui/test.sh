#!/usr/bin/env bash
# The web UI's tests: the type check (tsc over src/ and test/), vitest unit tests, then the
# browser suite (playwright-core driving Debian's Chromium) against a freshly built `spindle`
# (and, for the sign-in test, the OpenID provider of tests/oidc).
# Installs what is missing first — node_modules (npm ci, here and in tests/oidc) and
# /usr/bin/chromium (apt) — and is quick when all is there.
# Exits non-zero on any failure. Screenshots: target/ui-screenshots/; bench: target/ui-bench.json.
set -euo pipefail
cd "$(dirname "$0")"
log() { printf '==> ui: %s\n' "$*" >&2; }

command -v npm >/dev/null || { echo "ui/test.sh needs Node.js 20+ and npm (apt-get install nodejs npm)" >&2; exit 1; }

# npm ci only when the lockfile changed since the last install.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  log "npm ci"
  npm ci --no-audit --no-fund --loglevel=error
fi

# The OpenID provider the sign-in browser test logs in through (tests/oidc/issuer.js).
oidc=../tests/oidc
if [ ! -f "$oidc/node_modules/.package-lock.json" ] || [ "$oidc/package-lock.json" -nt "$oidc/node_modules/.package-lock.json" ]; then
  log "npm ci (tests/oidc)"
  (cd "$oidc" && npm ci --no-audit --no-fund --loglevel=error)
fi

log "tsc --noEmit (type check of src/ and test/)"
npm run --silent typecheck

if [ ! -x "${CHROMIUM_PATH:-/usr/bin/chromium}" ]; then
  log "installing Debian's chromium"
  if [ "$(id -u)" -eq 0 ]; then sudo=; else sudo=sudo; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium fonts-dejavu-core >/dev/null
fi

log "vitest (unit)"
npx vitest run

# cargo's build script rebuilds ui/dist when the sources changed, so the binary under test
# embeds exactly the UI in this tree.
log "cargo build -p spindle-server"
(cd .. && cargo build -p spindle-server --locked)
export SPINDLE_BIN="${SPINDLE_BIN:-$(cd .. && pwd)/target/debug/spindle}"

log "vitest (browser, against $SPINDLE_BIN)"
npx vitest run --config vitest.e2e.config.ts
