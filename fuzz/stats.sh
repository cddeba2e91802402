#!/usr/bin/env bash
# Prints one Markdown table row per fuzz log in fuzz/logs/: the figures docs/PERFORMANCE.md
# records (executions, wall time, exec/s, coverage, corpus, peak RSS, outcome).
set -uo pipefail # grep finds nothing in a log still running; that is not an error
cd "$(dirname "$0")"
echo "| target | executions | time (s) | exec/s | edges (cov) | corpus | peak RSS (MB) | result |"
echo "|---|---:|---:|---:|---:|---:|---:|---|"
for log in logs/*.log; do
  target=$(basename "$log" .log)
  last=$(grep -E '^#[0-9]+' "$log" | tail -1)
  execs=$(grep -m1 '^stat::number_of_executed_units' "$log" | awk '{print $2}')
  speed=$(grep -m1 '^stat::average_exec_per_sec' "$log" | awk '{print $2}')
  rss=$(grep -m1 '^stat::peak_rss_mb' "$log" | awk '{print $2}')
  secs=$(grep -m1 '^Done' "$log" | awk '{print $5}')
  cov=$(echo "$last" | sed -n 's/.*cov: \([0-9]*\).*/\1/p')
  corp=$(echo "$last" | sed -n 's/.*corp: \([0-9]*\/[0-9A-Za-z]*\).*/\1/p')
  if grep -qE 'ERROR: libFuzzer|panicked|deadly signal' "$log"; then
    result="CRASH"
  elif [ -n "$execs" ]; then
    result="no crash"
  else
    result="running or stopped"
    execs=$(echo "$last" | sed -n 's/^#\([0-9]*\).*/\1/p')
  fi
  echo "| $target | ${execs:-?} | ${secs:-?} | ${speed:-?} | ${cov:-?} | ${corp:-?} | ${rss:-?} | $result |"
done
