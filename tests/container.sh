#!/usr/bin/env bash
# Builds deploy/container/Containerfile with podman and runs the image: /readyz, the
# image's HEALTHCHECK, one OTLP JSON span in and back out through the query API, a
# non-root user, the data volume, and a clean exit on `podman stop`.
#
# Pulls nothing: the base images are made locally. RUNTIME_IMAGE is a Debian bookworm
# root from debootstrap (deb.debian.org); RUST_IMAGE is that root plus gcc and libc6-dev,
# with this machine's Rust toolchain (rustc --print sysroot) mounted during the build.
# The build downloads crates from crates.io and compiles spindle in release mode inside
# the container: 12 minutes on 2 busy cores the first time, 2 to 4 minutes when the
# cargo cache mounts are warm (kept by podman across builds). Not part of scripts/test.
#
#   tests/container.sh           needs root, podman and debootstrap (apt-get install
#                                podman debootstrap; runc where crun cannot start)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> container: %s\n' "$*" >&2; }
fail() { printf 'FAIL container: %s\n' "$*" >&2; exit 1; }

command -v podman >/dev/null 2>&1 || fail "podman not installed (apt-get install podman)"
base=localhost/spindle-test/debian:bookworm-slim
builder=localhost/spindle-test/rust:bookworm
image=localhost/spindle:test
name=spindle-test-$$
work=$(mktemp -d)
cleanup() {
  podman "${podman_opts[@]}" rm -f "$name" >/dev/null 2>&1 || true
  rm -rf "$work"
}
podman_opts=()
trap cleanup EXIT

# RUNTIME_IMAGE: debootstrap's minbase, imported; kept for later runs.
if ! podman image exists "$base"; then
  command -v debootstrap >/dev/null 2>&1 || fail "debootstrap not installed (apt-get install debootstrap)"
  log "debootstrap bookworm into a local base image"
  debootstrap --variant=minbase bookworm "$work/rootfs" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 \
    || { tail -n 20 "$work/debootstrap.log" >&2; fail "debootstrap failed"; }
  tar -C "$work/rootfs" -c . | podman import - "$base" >/dev/null
  rm -rf "$work/rootfs"
fi

# Limits within this shell's hard limits: an engine that raises them needs
# CAP_SYS_RESOURCE, which sandboxes often withhold.
nofile=$(ulimit -Hn)
if [ "$nofile" = unlimited ] || [ "$nofile" -gt 65536 ]; then nofile=65536; fi
limits=(--ulimit "nofile=$nofile:$nofile" --ulimit nproc=4096:4096)
# crun refuses hybrid cgroup v1/v2 hosts ("cgroups in hybrid mode not supported"); runc
# runs there.
if ! podman run --rm --network none "${limits[@]}" "$base" true >"$work/probe.txt" 2>&1; then
  command -v runc >/dev/null 2>&1 || fail "podman cannot run a container: $(cat "$work/probe.txt")"
  podman_opts=(--runtime runc)
  podman "${podman_opts[@]}" run --rm --network none "${limits[@]}" "$base" true >"$work/probe-runc.txt" 2>&1 \
    || fail "podman cannot run a container, with crun: $(cat "$work/probe.txt"); with runc: $(cat "$work/probe-runc.txt")"
  log "the default OCI runtime failed ($(tail -n 1 "$work/probe.txt")); using runc"
fi
pod() { podman "${podman_opts[@]}" "$@"; }

# RUST_IMAGE: a C toolchain for the build scripts; Rust itself is mounted at build time.
if ! podman image exists "$builder"; then
  log "building the local builder image"
  printf '%s\n' "FROM $base" \
    'RUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends gcc libc6-dev ca-certificates && rm -rf /var/lib/apt/lists/*' \
    'ENV CARGO_HOME=/usr/local/cargo PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    >"$work/Containerfile.builder"
  pod build --pull=never --network host "${limits[@]}" -f "$work/Containerfile.builder" -t "$builder" "$work" \
    >"$work/builder.log" 2>&1 || { tail -n 20 "$work/builder.log" >&2; fail "builder image"; }
fi

# The image itself, from the repository's Containerfile. The host's CA store is mounted
# so that crates.io is reachable through a TLS-intercepting proxy the host trusts.
sysroot=$(rustc --print sysroot)
started=$(date +%s)
log "podman build -f deploy/container/Containerfile (a release build inside)"
pod build --pull=never --network host --format docker "${limits[@]}" \
  -v "$sysroot:/usr/local/rust:ro" -v /etc/ssl/certs:/etc/ssl/certs:ro \
  --build-arg RUST_IMAGE="$builder" --build-arg RUNTIME_IMAGE="$base" \
  -f deploy/container/Containerfile -t "$image" . >"$work/build.log" 2>&1 \
  || { tail -n 30 "$work/build.log" >&2; fail "podman build"; }
log "image built in $(($(date +%s) - started)) s"

# What the image declares.
inspect() { pod image inspect --format "$1" "$image"; }
[ "$(inspect '{{.Config.User}}')" = 10001:10001 ] || fail "image user is $(inspect '{{.Config.User}}')"
# shellcheck disable=SC2016 # Go templates, not shell
exposed=$(inspect '{{range $p, $_ := .Config.ExposedPorts}}{{$p}} {{end}}')
for p in 16686/tcp 4317/tcp 4318/tcp 14268/tcp 14250/tcp 9411/tcp 6831/udp 6832/udp 5778/tcp 14269/tcp; do
  [[ " $exposed " == *" $p "* ]] || fail "port $p not exposed: $exposed"
done
# shellcheck disable=SC2016
[[ "$(inspect '{{range $v, $_ := .Config.Volumes}}{{$v}} {{end}}')" == *"/var/lib/spindle"* ]] || fail "no data volume"
[ -n "$(inspect '{{.Config.Healthcheck}}')" ] || fail "no HEALTHCHECK"

read -r -a ports <<<"$(python3 -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))')"
query=http://127.0.0.1:${ports[0]}
otlp=http://127.0.0.1:${ports[1]}
admin=http://127.0.0.1:${ports[2]}
# podman's stderr goes to podman.log: without systemd it complains at every start and
# stop that it cannot schedule the periodic health checks (`podman healthcheck run`
# below runs the check once).
pod run -d --name "$name" "${limits[@]}" -v "$name:/var/lib/spindle" \
  -p "127.0.0.1:${ports[0]}:16686" -p "127.0.0.1:${ports[1]}:4318" -p "127.0.0.1:${ports[2]}:14269" \
  "$image" --log info >/dev/null 2>>"$work/podman.log" || { cat "$work/podman.log" >&2; fail "podman run"; }
ready=""
for _ in $(seq 300); do
  curl -fs "$admin/readyz" >/dev/null 2>&1 && { ready=1; break; }
  sleep 0.1
done
[ -n "$ready" ] || { pod logs "$name" >&2; fail "not ready within 30 s"; }
pod healthcheck run "$name" >/dev/null 2>>"$work/podman.log" || fail "HEALTHCHECK command reports unhealthy"
[ "$(pod exec "$name" id -u)" = 10001 ] || fail "server not running as uid 10001"
curl -fs "$query/" | grep -qi '<!doctype html' || fail "the UI is not served"

trace_id=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
now=$(date +%s%N)
curl -fs -X POST "$otlp/v1/traces" -H 'Content-Type: application/json' -d @- >/dev/null <<JSON \
  || fail "OTLP HTTP post refused"
{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"container-check"}}]},
 "scopeSpans":[{"spans":[{"traceId":"$trace_id","spanId":"00f067aa0ba902b7","name":"in-a-container",
 "kind":2,"startTimeUnixNano":"$((now - 5000000))","endTimeUnixNano":"$now"}]}]}]}
JSON
found=""
for _ in $(seq 50); do
  if curl -fs "$query/api/traces/$trace_id" >"$work/trace.json" 2>/dev/null && grep -q '"in-a-container"' "$work/trace.json"; then
    found=1
    break
  fi
  sleep 0.1
done
[ -n "$found" ] || fail "span not read back: $(cat "$work/trace.json" 2>/dev/null)"
pod exec "$name" test -f /var/lib/spindle/LOCK || fail "store not in the /var/lib/spindle volume"

pod stop -t 30 "$name" >/dev/null 2>>"$work/podman.log"
[ "$(pod inspect --format '{{.State.ExitCode}}' "$name")" = 0 ] || { pod logs "$name" >&2; fail "non-zero exit on stop"; }
pod rm "$name" >/dev/null 2>>"$work/podman.log"
pod volume rm "$name" >/dev/null
log "ok: image $image ran, answered /readyz and its HEALTHCHECK, stored and returned a span, stopped cleanly"
