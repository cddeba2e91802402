#!/usr/bin/env bash
# Holds the README to what it prints: runs its quick-start command exactly as written (the
# first line of the block after the `readme-test: quick-start` marker), waits for the UI and
# the API it promises, runs every block marked `readme-test: run` against that server, and
# checks that the block's second line is the command CI runs (.ci/run). A README edit that
# breaks the front door fails here.
#
# The quick-start command is `cargo run --release`, so this builds the release binary
# (minutes on a cold 2-core machine) and binds Spindle's default ports.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> readme: %s\n' "$*" >&2; }
fail() { printf 'readme check failed: %s\n' "$*" >&2; exit 1; }

# The fenced block that follows a marker line, as lines (without the fences).
block_after() { # marker-regex occurrence(1-based)
  awk -v marker="$1" -v want="$2" '
    $0 ~ "<!-- readme-test: " marker { seen++; armed = (seen == want); next }
    armed && /^```/ { if (inside) exit; inside = 1; next }
    armed && inside { print }
  ' README.md
}

# A command line without its trailing `# comment`.
strip_comment() { sed -E 's/[[:space:]]+#.*$//; s/[[:space:]]+$//'; }

quick_start=$(block_after 'quick-start' 1)
[ -n "$quick_start" ] || fail "no block after a 'readme-test: quick-start' marker in README.md"
start_cmd=$(sed -n 1p <<<"$quick_start" | strip_comment)
test_cmd=$(sed -n 2p <<<"$quick_start" | strip_comment)
[ -n "$start_cmd" ] && [ -n "$test_cmd" ] || fail "the quick-start block needs two command lines"

# The second command is the suite: .ci/run must run exactly it.
grep -Eq "^exec ${test_cmd}\$" .ci/run || fail ".ci/run does not run the README's test command '$test_cmd'"
[ -x "$test_cmd" ] || fail "'$test_cmd' is not an executable file"

for port in 4317 4318 16686 14269; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    fail "port $port is already in use; the quick-start command binds Spindle's default ports"
  fi
done

had_data=0; [ -e spindle-data ] && had_data=1
out=$(mktemp)
log "running the quick-start command as printed: $start_cmd"
setsid bash -c "$start_cmd" >"$out" 2>&1 &
pid=$!
cleanup() {
  kill -TERM -- "-$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- "-$pid" 2>/dev/null || true
  [ "$had_data" = 1 ] || rm -rf spindle-data
  rm -f "$out" "$out.err"
}
trap cleanup EXIT

# A cold release build takes minutes on 2 cores.
deadline=$((SECONDS + ${README_START_TIMEOUT:-1800}))
until curl -fs http://localhost:14269/readyz >/dev/null 2>&1; do
  kill -0 "$pid" 2>/dev/null || { tail -n 40 "$out" >&2; fail "'$start_cmd' exited before Spindle was ready"; }
  [ $SECONDS -lt $deadline ] || { tail -n 40 "$out" >&2; fail "Spindle not ready within the timeout"; }
  sleep 1
done
log "ready after ${SECONDS}s"

# What the README's comment promises: the UI and the API on :16686, OTLP on :4317 and :4318.
curl -fs http://localhost:16686/ | grep -qi '<!doctype html' || fail "no UI page on http://localhost:16686/"
curl -fs http://localhost:16686/api/services | grep -q '"data"' || fail "no Jaeger API on :16686"
(exec 3<>/dev/tcp/127.0.0.1/4317) 2>/dev/null || fail "nothing listens on :4317 (OTLP gRPC)"
(exec 3<>/dev/tcp/127.0.0.1/4318) 2>/dev/null || fail "nothing listens on :4318 (OTLP HTTP)"
[ -d spindle-data ] || fail "no ./spindle-data, where the README says data goes"

# Every runnable example block, as printed; the last command of each reads back what the
# block sent, so its answer must hold the span the block wrote.
n=1
while block=$(block_after 'run' "$n") && [ -n "$block" ]; do
  log "running README example block $n"
  # curl's progress meter goes to stderr: shown only when the block fails.
  answer=$(bash -euo pipefail -c "$block" 2>"$out.err") || { cat "$out.err" >&2; fail "README example block $n failed"; }
  sent_names=$(grep -oE '"name": ?"[^"]+"' <<<"$block" | sed -E 's/.*"([^"]+)"$/\1/')
  [ -n "$sent_names" ] || fail "README example block $n sends no named span"
  while read -r name; do
    grep -q "\"operationName\":\"$name\"" <<<"$answer" || fail "block $n: span '$name' not read back: $answer"
  done <<<"$sent_names"
  n=$((n + 1))
done
[ "$n" -gt 1 ] || fail "no 'readme-test: run' blocks in README.md"
log "ok: quick start and $((n - 1)) example blocks work as printed"
