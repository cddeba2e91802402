#!/usr/bin/env bash
# Runs fuzz targets for a fixed number of executions and prints libFuzzer's final stats.
#
#   fuzz/run.sh                       # every target, 10M executions each
#   RUNS=1000000 fuzz/run.sh zipkin_json jaeger_proto
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`) and a nightly toolchain; without nightly,
# RUSTC_BOOTSTRAP=1 lets stable build it. Builds with debug assertions (-a) so integer
# overflow panics are found too, and without AddressSanitizer (-s none): the decoders are
# safe Rust, and on two shared cores ASan's 3x slowdown costs more executions than it buys.
# Corpora start from the fixtures (fuzz/seed.sh).
set -euo pipefail
cd "$(dirname "$0")"
RUNS=${RUNS:-10000000}
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
  mapfile -t TARGETS < <(cargo +nightly fuzz list 2>/dev/null || RUSTC_BOOTSTRAP=1 cargo fuzz list)
fi
TOOLCHAIN=+nightly
rustup toolchain list | grep -q '^nightly' || { TOOLCHAIN=""; export RUSTC_BOOTSTRAP=1; }
./seed.sh
mkdir -p logs
for target in "${TARGETS[@]}"; do
  start=$(date +%s)
  status=0
  # shellcheck disable=SC2086
  cargo $TOOLCHAIN fuzz run -O -a -s none "$target" "corpus/$target" -- \
    -runs="$RUNS" -max_len=65536 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    >"logs/$target.log" 2>&1 || status=$?
  end=$(date +%s)
  if [ "$status" -ne 0 ]; then
    echo "$target: FAILED (exit $status), see fuzz/logs/$target.log and fuzz/artifacts/$target/"
    continue
  fi
  execs=$(grep -m1 '^stat::number_of_executed_units' "logs/$target.log" | awk '{print $2}')
  speed=$(grep -m1 '^stat::average_exec_per_sec' "logs/$target.log" | awk '{print $2}')
  echo "$target: $execs executions in $((end - start)) s ($speed exec/s), corpus $(ls "corpus/$target" | wc -l) inputs, no crash"
done
