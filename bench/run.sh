#!/usr/bin/env bash
# Benchmarks sessionpipe against references measured in the same run, and
# prints every figure as a ratio. Usage: bench/run.sh [WORK_DIR]
#
# Needs: cargo, md5sum, find, /usr/bin/time; ccusage 20.0.24 is installed
# from npm into WORK_DIR when npm is available (skipped with a note if not).
# Takes a few minutes and about 4 GB of disk (BENCH_SKIP_HUGE=1 skips the
# 2 GiB transcript, BENCH_SKIP_100K=1 the 100,000-file tree).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-${TMPDIR:-/tmp}/sessionpipe-bench}
mkdir -p "$WORK"
cargo build --release --quiet --bin sessionpipe --example gen_corpus
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
BIN=$TARGET/release/sessionpipe
GEN=$TARGET/release/examples/gen_corpus
CONFIG=$WORK/empty.toml
: > "$CONFIG"
chmod 600 "$CONFIG"
DATA=$WORK/corpus
DB=$WORK/state.db

# Seconds (with ns resolution) a command takes, output discarded.
seconds() {
  local start end
  start=$(date +%s%N)
  "$@" > /dev/null 2>&1
  end=$(date +%s%N)
  awk -v s="$start" -v e="$end" 'BEGIN { printf "%.3f", (e - s) / 1e9 }'
}

# Median of three timings of a command; PREP (a shell function name or
# "true") runs untimed before each.
median3() {
  local prep=$1; shift
  local a b c
  $prep; a=$(seconds "$@")
  $prep; b=$(seconds "$@")
  $prep; c=$(seconds "$@")
  printf '%s\n%s\n%s\n' "$a" "$b" "$c" | sort -n | sed -n 2p
}

# Peak RSS in MiB of one run of a program (not a shell function).
peak_mib() {
  /usr/bin/time -f %M -o "$WORK/rss" "$@" > /dev/null 2>&1 || { echo "failed"; return; }
  awk '{ printf "%.1f", $1 / 1024 }' "$WORK/rss"
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

report() { # name ours reference-name reference target
  printf '%-44s %8ss vs %-22s %8ss = %5sx  (target %s)\n' "$1" "$2" "$3" "$4" "$(ratio "$2" "$4")" "$5"
}

sp() { "$BIN" --config "$CONFIG" --data-dir "$1" --db "$2" "${@:3}"; }
fresh_db() { rm -f "$DB" "$DB"-wal "$DB"-shm; }

echo "machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"

if [ ! -f "$DATA/.done" ]; then
  rm -rf "$DATA"
  echo "corpus: $("$GEN" "$DATA" --users 100 --files 2000) in 2000 files"
  touch "$DATA/.done"
fi
echo "corpus: $(du -sm "$DATA" | cut -f1) MB, $(find "$DATA" -name '*.jsonl' | wc -l) files, largest $(find "$DATA" -name '*.jsonl' -printf '%s\n' | sort -n | tail -1 | awk '{ printf "%.1f MB", $1 / 1048576 }')"
cat "$DATA"/*/*.jsonl > /dev/null   # page cache warm for everyone

md5_all() { find "$DATA" -name '*.jsonl' -print0 | xargs -0 md5sum; }
walk() { find "$DATA" -name '*.jsonl' -printf '%s %T@\n'; }

MD5=$(median3 true md5_all)
COLD=$(median3 fresh_db sp "$DATA" "$DB" run usage)
report "cold run usage (empty database)" "$COLD" "md5sum" "$MD5" "<= 1.5x"

CCUSAGE=${CCUSAGE:-}
if [ -z "$CCUSAGE" ] && command -v npm > /dev/null; then
  if [ ! -x "$WORK/npm/node_modules/.bin/ccusage" ]; then
    npm install --silent --prefix "$WORK/npm" ccusage@20.0.24 > /dev/null 2>&1 || true
  fi
  [ -x "$WORK/npm/node_modules/.bin/ccusage" ] && CCUSAGE=$WORK/npm/node_modules/.bin/ccusage
fi
if [ -n "$CCUSAGE" ]; then
  mkdir -p "$WORK/claude"
  ln -sfn "$DATA" "$WORK/claude/projects"
  cc() { CLAUDE_CONFIG_DIR="$WORK/claude" "$CCUSAGE" claude session --json --offline; }
  CC=$(median3 true cc)
  report "cold run usage" "$COLD" "ccusage session" "$CC" "<= 1.0x"
  # Same token totals, as a check that the comparison is fair.
  cc > "$WORK/ccusage.json"
  theirs=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1]))["totals"]; print(d["inputTokens"]+d["outputTokens"]+d["cacheCreationTokens"]+d["cacheReadTokens"])' "$WORK/ccusage.json" 2>/dev/null || echo "?")
  fresh_db; sp "$DATA" "$DB" run usage
  ours=$(python3 -c 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute("select sum(input_tokens+output_tokens+cache_creation_tokens+cache_read_tokens) from usage_session_summary").fetchone()[0])' "$DB" 2>/dev/null || echo "?")
  echo "token totals: sessionpipe $ours, ccusage $theirs"
else
  echo "cold run usage vs ccusage: skipped (ccusage 20.0.24 not found and npm unavailable)"
fi

fresh_db; sp "$DATA" "$DB" run usage
sleep 2   # past the racy window, as a cron tick would be
sp "$DATA" "$DB" run usage
UNCHANGED=$(median3 true sp "$DATA" "$DB" run usage)
WALK=$(median3 true walk)
report "unchanged rerun" "$UNCHANGED" "find -printf walk" "$WALK" "<= 3x"

append_1pct() {
  find "$DATA" -name '*.jsonl' | sort | awk 'NR % 100 == 0' | while read -r f; do
    printf '{"type":"user","timestamp":"2026-01-01T00:00:00Z","message":{"role":"user","content":"more"}}\n' >> "$f"
  done
}
append_1pct
APPEND=$(seconds sp "$DATA" "$DB" run usage)
report "rerun after appending to 1% of the files" "$APPEND" "cold run" "$COLD" "(informative)"

for jobs in 1 2 4; do
  fresh_db
  printf '%-44s %8s MiB  (target <= 64 MiB)\n' "peak RSS, cold run, --jobs $jobs" "$(peak_mib "$BIN" --config "$CONFIG" --data-dir "$DATA" --db "$DB" run usage --jobs "$jobs")"
done

if [ "${BENCH_SKIP_HUGE:-}" != 1 ]; then
  # One dense session: small tool results, ~390 events per MB, 800,000 events.
  HUGE=$WORK/huge
  [ -f "$HUGE/.done" ] || { rm -rf "$HUGE"; "$GEN" "$HUGE" --one-file-mb 2048 --result-words 20 > /dev/null; touch "$HUGE/.done"; }
  for jobs in 1 2; do
    rm -f "$WORK/huge.db"*
    printf '%-44s %8s MiB  (target <= %s MiB)\n' "peak RSS, one 2 GiB transcript, --jobs $jobs" \
      "$(peak_mib "$BIN" --config "$CONFIG" --data-dir "$HUGE" --db "$WORK/huge.db" run usage --jobs "$jobs")" \
      "$([ "$jobs" = 1 ] && echo 64 || echo 128)"
  done
  huge_cold() { rm -f "$WORK/huge.db"*; sp "$HUGE" "$WORK/huge.db" run usage; }
  H_OURS=$(seconds huge_cold)
  H_MD5=$(seconds md5sum "$HUGE/big/huge.jsonl")
  report "cold run, one 2 GiB transcript" "$H_OURS" "md5sum" "$H_MD5" "(informative)"
  echo "events in it: $(python3 -c 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute("select count(*) from usage_events").fetchone()[0])' "$WORK/huge.db" 2>/dev/null || echo "?")"
fi

if [ "${BENCH_SKIP_100K:-}" != 1 ]; then
  WIDE=$WORK/wide
  [ -f "$WIDE/.done" ] || { rm -rf "$WIDE"; "$GEN" "$WIDE" --users 500 --files 100000 --median-kb 1 > /dev/null; touch "$WIDE/.done"; }
  rm -f "$WORK/wide.db"*
  sp "$WIDE" "$WORK/wide.db" run usage
  sleep 2
  sp "$WIDE" "$WORK/wide.db" run usage
  wide_walk() { find "$WIDE" -name '*.jsonl' -printf '%s %T@\n'; }
  W_OURS=$(median3 true sp "$WIDE" "$WORK/wide.db" run usage)
  W_WALK=$(median3 true wide_walk)
  report "unchanged rerun, 100,000 files" "$W_OURS" "find -printf walk" "$W_WALK" "(informative)"
fi
