#!/usr/bin/env bash
# Benchmarks sessionpipe against references measured in the same run, and
# prints every figure as a ratio. Usage: bench/run.sh [WORK_DIR]
# Unchanged reruns run with a week of one-minute runs in the run history.
#
# Two corpora of 2,000 transcripts each, written by examples/gen_corpus.rs:
# a dense one (~300 tool uses per MiB, small tool results: the costliest
# bytes to read) and a real-shaped one (~64 per MiB, large tool results, as
# real transcripts are), both with subagent transcripts beside some sessions.
#
# Needs: cargo, md5sum, find, /usr/bin/time, python3; ccusage 20.0.24 is
# installed from npm into WORK_DIR when npm is available (skipped with a note
# if not). Takes about ten minutes and 6 GB of disk. Each comparison runs
# its commands in turn, BENCH_RUNS rounds (default 5; BENCH_SHORT_RUNS,
# default 21, for reruns and walks, which take milliseconds), and gives the
# median of each and of their ratio round by round. BENCH_SKIP_HUGE=1
# skips the 1 and 2 GiB transcripts, BENCH_SKIP_100K=1 the 100,000-file
# tree, BENCH_SKIP_PG=1 the cold runs into a PostgreSQL server of its own
# (started from /usr/lib/postgresql/*/bin on a unix socket in WORK_DIR,
# fsync on, and stopped at the end; as nobody when run as root).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-${TMPDIR:-/tmp}/sessionpipe-bench}
RUNS=${BENCH_RUNS:-5}
# Runs of the commands that take milliseconds (reruns and walks): more, for
# a steadier median at no cost worth counting.
SHORT_RUNS=${BENCH_SHORT_RUNS:-21}
mkdir -p "$WORK"
cargo build --release --quiet --bin sessionpipe --example gen_corpus
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
BIN=$TARGET/release/sessionpipe
GEN=$TARGET/release/examples/gen_corpus
CONFIG=$WORK/empty.toml
: > "$CONFIG"
chmod 600 "$CONFIG"
DB=$WORK/state.db

# Seconds (with us resolution) a command takes, output discarded; a command
# that fails stops the benchmark (a failure must not pass for a fast run).
# The clock is bash's own: a `date` forked around each run would add a
# millisecond or two to both sides of a ten-millisecond comparison.
seconds() {
  local start end
  start=$EPOCHREALTIME
  "$@" > /dev/null 2>&1 || { echo "bench: failed: $*" >&2; kill -TERM $$; exit 1; }
  end=$EPOCHREALTIME
  awk -v s="$start" -v e="$end" 'BEGIN { printf "%.4f", e - s }'
}

# Times the functions named, in turn, $RUNS rounds, one line of seconds per
# round into $WORK/rounds; a function F with a function prep_F beside it has
# that run, untimed, before each of its runs. Ratios are then taken round by
# round (see `col`): the machine's speed drifting between two blocks of runs
# cannot pass for a difference between the commands.
rounds() {
  local i f line
  : > "$WORK/rounds"
  for i in $(seq "$RUNS"); do
    line=""
    for f in "$@"; do
      if declare -F "prep_$f" > /dev/null; then "prep_$f"; fi
      line="$line $(seconds "$f")"
    done
    echo "$line" >> "$WORK/rounds"
  done
}

# The median of column N of the rounds or, given M, of column N over column
# M round by round.
col() {
  awk -v n="$1" -v m="${2:-0}" '{ if (m) printf "%.6f\n", $n / $m; else print $n }' "$WORK/rounds" \
    | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}

# Peak RSS in MiB of one run of a program (not a shell function).
peak_mib() {
  /usr/bin/time -f %M -o "$WORK/rss" "$@" > /dev/null 2>&1 || { echo "failed"; return; }
  awk '{ printf "%.1f", $1 / 1024 }' "$WORK/rss"
}

# One line of figures: NAME, then column N of the rounds (ours) against
# column M (the reference, named REF), then TARGET.
report() { # name n ref-name m target
  printf '%-46s %8ss vs %-20s %8ss = %5.2fx  (target %s)\n' \
    "$1" "$(col "$2")" "$3" "$(col "$4")" "$(col "$2" "$4")" "$5"
}

# The same for one run of each: OURS seconds against REF seconds.
report_one() { # name ours ref-name ref target
  printf '%-46s %8ss vs %-20s %8ss = %5.2fx  (target %s)\n' \
    "$1" "$2" "$3" "$4" "$(awk -v a="$2" -v b="$4" 'BEGIN { print a / b }')" "$5"
}

sp() { "$BIN" --config "$CONFIG" --data-dir "$1" --db "$2" "${@:3}"; }
fresh_db() { rm -f "$DB" "$DB"-wal "$DB"-shm; }
sql() { python3 -c 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute(sys.argv[2]).fetchone()[0])' "$@" 2>/dev/null || echo "?"; }
files_of() { find "$1" -name '*.jsonl' -print0; }
# A week of one-minute runs of usage in the history of database $1, as a
# cron job's database holds after its first week: what a run reads of it is
# part of an unchanged rerun, and the first run of an hour prunes it (as one
# tick in sixty of a one-minute job does; a round that crosses an hour
# measures that one). They end a minute ago, older than the runs already
# there both by time and by id.
week_of_runs() {
  python3 - "$1" <<'PY'
import datetime, sqlite3, sys
db = sqlite3.connect(sys.argv[1])
now = datetime.datetime.now(datetime.timezone.utc)
runs = 10080
def minute(i):
    return (now - datetime.timedelta(minutes=runs - i)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
first = db.execute("SELECT coalesce(min(id), 1) FROM runs").fetchone()[0]
db.executemany("INSERT INTO runs (id, processor_name, started_at, finished_at, exit_code, source)"
               " VALUES (?1, 'usage', ?2, ?2, 0, '')",
               [(first - runs + i, minute(i)) for i in range(runs)])
db.commit()
db.close()
PY
}
megabytes() { find "$1" -name '*.jsonl' -printf '%s\n' | awk '{ s += $1 } END { printf "%.0f", s / 1048576 }'; }

# Writes a corpus once: DIR, then gen_corpus's flags.
corpus() {
  local dir=$1; shift
  [ -f "$dir/.done" ] || { rm -rf "$dir"; "$GEN" "$dir" "$@" > /dev/null; touch "$dir/.done"; }
  files_of "$dir" | xargs -0 cat > /dev/null   # page cache warm for everyone
}

CCUSAGE=${CCUSAGE:-}
if [ -z "$CCUSAGE" ] && command -v npm > /dev/null; then
  if [ ! -x "$WORK/npm/node_modules/.bin/ccusage" ]; then
    npm install --silent --prefix "$WORK/npm" ccusage@20.0.24 > /dev/null 2>&1 || true
  fi
  [ -x "$WORK/npm/node_modules/.bin/ccusage" ] && CCUSAGE=$WORK/npm/node_modules/.bin/ccusage
fi

echo "machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); medians of $RUNS rounds ($SHORT_RUNS for reruns and walks), ratios round by round"

# Every cold-pass figure of one corpus: NAME DIR.
cold_figures() {
  local name=$1 data=$2
  cold() { sp "$data" "$DB" run usage; }
  prep_cold() { fresh_db; }
  md5_all() { files_of "$data" | xargs -0 md5sum; }
  md5_two() { files_of "$data" | xargs -0 -P 2 -n 64 md5sum; }
  local timed=(cold md5_all md5_two)
  if [ -n "$CCUSAGE" ]; then
    mkdir -p "$WORK/claude-$name"
    ln -sfn "$data" "$WORK/claude-$name/projects"
    cc() { CLAUDE_CONFIG_DIR="$WORK/claude-$name" "$CCUSAGE" claude session --json --offline; }
    timed+=(cc)
  fi
  rounds "${timed[@]}"
  printf -v "COLD_$name" '%s' "$(col 1)"
  local mb events
  mb=$(megabytes "$data")
  events=$(sql "$DB" "select count(*) from usage_events")
  sql "$DB" "pragma wal_checkpoint(truncate)" > /dev/null
  echo "$name corpus: $mb MiB in $(files_of "$data" | tr -cd '\0' | wc -c) files ($(find "$data" -path '*/subagents/*' -name '*.jsonl' | wc -l) subagent transcripts), $events events = $(awk -v e="$events" -v m="$mb" 'BEGIN { printf "%.0f", e / m }') per MiB"
  report "$name: cold run usage" 1 "md5sum" 2 "<= 1.5x"
  # The floor: every byte is hashed (MD5), here with both cores at it.
  report "$name: cold run usage" 1 "md5sum on 2 cores" 3 "(informative)"
  if [ -n "$CCUSAGE" ]; then
    report "$name: cold run usage" 1 "ccusage session" 4 "<= 1.0x"
    # ccusage hashes nothing: below 1.0, it reads every byte faster than
    # both cores can hash them, the floor of a run that must hash them all.
    report "$name: ccusage session" 4 "md5sum on 2 cores" 3 "(informative)"
    # The same token totals: the comparison is fair.
    cc > "$WORK/ccusage.json"
    local theirs ours
    theirs=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1]))["totals"]; print(d["inputTokens"]+d["outputTokens"]+d["cacheCreationTokens"]+d["cacheReadTokens"])' "$WORK/ccusage.json" 2>/dev/null || echo "?")
    ours=$(sql "$DB" "select sum(input_tokens+output_tokens+cache_creation_tokens+cache_read_tokens) from usage_session_summary")
    echo "$name: token totals: sessionpipe $ours, ccusage $theirs"
  else
    echo "$name: cold run vs ccusage: skipped (ccusage 20.0.24 not found and npm unavailable)"
  fi
  local db_mb
  db_mb=$(du -m "$DB" | cut -f1)
  printf '%-46s %8s MB per GB of transcripts  (informative)\n' "$name: database size" "$(awk -v d="$db_mb" -v m="$mb" 'BEGIN { printf "%.0f", d * 1024 / m }')"
  sleep 2   # past the racy window, as a cron tick would be
  sp "$data" "$DB" run usage
  week_of_runs "$DB"
  rerun() { sp "$data" "$DB" run usage; }
  walk() { find "$data" -name '*.jsonl' -printf '%s %T@\n'; }
  RUNS=$SHORT_RUNS rounds rerun walk
  report "$name: unchanged rerun, a week of runs" 1 "find -printf walk" 2 "<= 1.5x"
}

DENSE=$WORK/dense
REAL=$WORK/real
corpus "$DENSE" --shape dense --users 100 --files 2000
corpus "$REAL" --shape real --users 100 --files 2000
cold_figures dense "$DENSE"
cold_figures real "$REAL"

# The same cold runs into a local PostgreSQL, against the runs into SQLite.
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort | tail -1 || true)
if [ "${BENCH_SKIP_PG:-}" != 1 ] && [ -n "$PG_BIN" ]; then
  PG=$WORK/pg
  rm -rf "$PG"; mkdir -p "$PG"
  as_owner() { if [ "$(id -u)" = 0 ]; then setpriv --reuid=nobody --regid=nogroup --clear-groups "$@"; else "$@"; fi; }
  [ "$(id -u)" = 0 ] && chown nobody:nogroup "$PG"
  (cd "$PG" && as_owner "$PG_BIN/initdb" -D "$PG/data" -U postgres --auth=trust > /dev/null)
  (cd "$PG" && as_owner "$PG_BIN/pg_ctl" start -w -D "$PG/data" -l "$PG/log" -o "-k $PG -c listen_addresses='' -p 5433" > /dev/null)
  trap '(cd "$PG" && as_owner "$PG_BIN/pg_ctl" stop -m fast -D "$PG/data" > /dev/null)' EXIT
  ADDRESS="postgresql://postgres@$(printf %s "$PG" | sed 's|/|%2F|g'):5433/bench"
  fresh_pg() { PGOPTIONS='-c client_min_messages=warning' psql -X -q -h "$PG" -p 5433 -U postgres -d postgres -c "DROP DATABASE IF EXISTS bench" -c "CREATE DATABASE bench"; }
  pg_cold() { sp "$data" "$ADDRESS" run usage; }
  prep_pg_cold() { fresh_pg; }
  for name in dense real; do
    data=$DENSE; [ "$name" = real ] && data=$REAL
    rounds pg_cold cold
    report "$name: cold run usage into PostgreSQL" 1 "into SQLite" 2 "<= 2.0x"
  done
else
  echo "cold runs into PostgreSQL: skipped (BENCH_SKIP_PG=1, or no /usr/lib/postgresql/*/bin)"
fi

jobs1() { sp "$DENSE" "$DB" run usage --jobs 1; }
jobs2() { sp "$DENSE" "$DB" run usage --jobs 2; }
prep_jobs1() { fresh_db; }
prep_jobs2() { fresh_db; }
rounds jobs1 jobs2
report "dense: cold run usage --jobs 1" 1 "--jobs 2" 2 ">= 1.3x"

# On a copy: the corpus itself stays as generated for the next run.
GROWN=$WORK/grown
rm -rf "$GROWN"; cp -a "$DENSE" "$GROWN"
fresh_db; sp "$GROWN" "$DB" run usage
sleep 2; sp "$GROWN" "$DB" run usage
find "$GROWN" -name '*.jsonl' | sort | awk 'NR % 100 == 0' | while read -r f; do
  printf '{"type":"user","timestamp":"2026-01-01T00:00:00Z","message":{"role":"user","content":"more"}}\n' >> "$f"
done
report_one "dense: rerun after appending to 1% of files" "$(seconds sp "$GROWN" "$DB" run usage)" "cold run" "$COLD_dense" "(informative)"
rm -rf "$GROWN"

for jobs in 1 2 4; do
  fresh_db
  printf '%-46s %8s MiB  (target <= 64 MiB)\n' "peak RSS, dense cold run, --jobs $jobs" "$(peak_mib "$BIN" --config "$CONFIG" --data-dir "$DENSE" --db "$DB" run usage --jobs "$jobs")"
done

if [ "${BENCH_SKIP_HUGE:-}" != 1 ]; then
  # One real-shaped 1 GiB session: the reading of one file, start to end.
  GIG=$WORK/gig
  corpus "$GIG" --shape real --subagents 0 --one-file-mb 1024
  gig_cold() { sp "$GIG" "$WORK/gig.db" run usage; }
  prep_gig_cold() { rm -f "$WORK/gig.db"*; }
  gig_md5() { md5sum "$GIG/big/huge.jsonl"; }
  rounds gig_cold gig_md5
  report "one 1 GiB real-shaped session, cold" 1 "md5sum" 2 "<= 1.5x"
  # One dense 2 GiB session: more records than memory may hold.
  HUGE=$WORK/huge
  corpus "$HUGE" --one-file-mb 2048 --result-words 20
  for jobs in 1 2; do
    rm -f "$WORK/huge.db"*
    printf '%-46s %8s MiB  (target <= 64 MiB)\n' "peak RSS, one dense 2 GiB session, --jobs $jobs" \
      "$(peak_mib "$BIN" --config "$CONFIG" --data-dir "$HUGE" --db "$WORK/huge.db" run usage --jobs "$jobs")"
  done
  huge_cold() { rm -f "$WORK/huge.db"*; sp "$HUGE" "$WORK/huge.db" run usage; }
  report_one "one dense 2 GiB session, cold" "$(seconds huge_cold)" "md5sum" "$(seconds md5sum "$HUGE/big/huge.jsonl")" "(informative)"
  echo "events in it: $(sql "$WORK/huge.db" "select count(*) from usage_events")"
fi

if [ "${BENCH_SKIP_100K:-}" != 1 ]; then
  WIDE=$WORK/wide-1000
  corpus "$WIDE" --users 1000 --files 100000 --median-kb 1
  rm -f "$WORK/wide.db"*
  sp "$WIDE" "$WORK/wide.db" run usage
  sleep 2
  sp "$WIDE" "$WORK/wide.db" run usage
  week_of_runs "$WORK/wide.db"
  wide_walk() { find "$WIDE" -name '*.jsonl' -printf '%s %T@\n'; }
  wide_rerun() { sp "$WIDE" "$WORK/wide.db" run usage; }
  RUNS=$SHORT_RUNS rounds wide_rerun wide_walk
  report "unchanged rerun, 100,000 files, a week of runs" 1 "find -printf walk" 2 "<= 1.5x"
fi
