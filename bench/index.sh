#!/usr/bin/env bash
# Index benchmark for tandem-node (issue 2). See bench/README.md.
#
#   bench/index.sh                      # 100,000 files, 3 runs
#   FILES=20000 RUNS=5 bench/index.sh   # smaller / more runs
#
# Environment:
#   FILES=100000   number of files (1-4 KiB of random bytes each)
#   PER_DIR=100    files per leaf directory (100,000 files -> 1000 leaf dirs)
#   RUNS=3         cold+warm runs; each run is printed, then the median
#   BUILD=1        0 = use the existing target/release binaries as they are
#   BIN_DIR=       take tandem-node and tandem from here instead of
#                  target/release (BUILD then defaults to 0)
#   DATA=          data-set folder to reuse (made if missing, kept afterwards);
#                  default: a fresh temp dir under /tmp, removed at the end
#   KEEP_LOGS=0    1 = keep the node logs (printed at exit)
#   REF=1          0 = skip the reference commands (cp -a of a million
#                  files takes minutes; the node runs are what is compared)
#   TIMEOUT=600    seconds any single wait may take before the bench fails
#   POLL=0.01      log polling interval (seconds)
#   RUST_LOG=info  passed to the node (its "indexed" line is at info level)
#   NODE_WRAP=     command put in front of tandem-node, e.g.
#                  NODE_WRAP="perf record -g -o /tmp/perf.data --"; signals, RSS
#                  and CPU go to the node itself, but timings include the
#                  wrapper's overhead: use it for profiles only
#
# Numbers are with a warm page cache: the data set was just written (or read
# by the reference step), and dropping caches needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
FILES=${FILES:-100000}
PER_DIR=${PER_DIR:-100}
RUNS=${RUNS:-3}
if [[ -n ${BIN_DIR:-} ]]; then BUILD=${BUILD:-0}; else BUILD=${BUILD:-1}; fi
TIMEOUT=${TIMEOUT:-600}
POLL=${POLL:-0.01}
export RUST_LOG=${RUST_LOG:-info}
export NO_COLOR=1
BIN=${BIN_DIR:-$ROOT/target/release}
read -r -a WRAP <<<"${NODE_WRAP:-}"

NODE_PID=    # the node (signals, /proc readings)
CHILD_PID=   # what this script started: the node, or NODE_WRAP around it
WORK=
SCRATCH=
cleanup() {
    local rc=$?
    trap '' INT TERM  # finish cleaning up even if signalled again
    if [[ -n $CHILD_PID ]] && alive "$CHILD_PID"; then
        kill -TERM "$NODE_PID" 2>/dev/null || true
        for _ in $(seq 1 100); do alive "$CHILD_PID" || break; sleep 0.1; done
        kill -KILL "$NODE_PID" "$CHILD_PID" 2>/dev/null || true
    fi
    [[ -n $CHILD_PID ]] && { wait "$CHILD_PID" 2>/dev/null || true; }
    if [[ -n $WORK && -d $WORK ]]; then
        rm -rf "$WORK"
    fi
    if [[ -n $SCRATCH && -d $SCRATCH ]]; then
        if [[ ${KEEP_LOGS:-0} == 1 ]]; then
            echo "index.sh: node logs kept in $SCRATCH" >&2
        else
            rm -rf "$SCRATCH"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

die() { echo "index.sh: error: $*" >&2; exit 1; }
# shellcheck source=bench/lib.sh
source bench/lib.sh  # the script has cd-ed to the repository root
now() { echo "$EPOCHREALTIME"; }
# Seconds between two $EPOCHREALTIME stamps, 3 decimals.
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
# True while PID runs (a zombie counts as gone).
alive() {
    local st
    st=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ -n $st && $st != Z ]]
}
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# "name value" lines from /proc/PID/status, in MiB: VmRSS VmHWM.
mem_mib() {
    awk '/^VmRSS:/ { r = $2 } /^VmHWM:/ { h = $2 }
         END { printf "%.1f %.1f", r / 1024, h / 1024 }' "/proc/$1/status"
}
# Converts Rust's Debug Duration ("1.23s", "456.7ms", "89µs") to seconds.
dur_s() {
    python3 -c '
import re, sys
m = re.fullmatch(r"([0-9.]+)(ns|µs|us|ms|s)", sys.argv[1])
print("%.3f" % (float(m[1]) * {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}[m[2]]) if m else "nan")
' "$1"
}


# --- build ------------------------------------------------------------------
private_binaries /tmp/tandem-bench-logs.XXXXXX
client_env "$SCRATCH"

# --- data set ---------------------------------------------------------------
if [[ -n ${DATA:-} ]]; then
    mkdir -p "$DATA"
    DATA=$(cd "$DATA" && pwd)
else
    WORK=$(mktemp -d /tmp/tandem-bench.XXXXXX)
    DATA=$WORK
fi
TREE=$DATA/tree
STAMP=$DATA/tree.ok
if [[ -f $STAMP && $(cat "$STAMP") == "$FILES $PER_DIR" ]]; then
    echo "== reusing data set $TREE ($FILES files)"
else
    echo "== generating $FILES files (1-4 KiB random) in $TREE"
    rm -rf "$TREE" "$STAMP"
    t0=$(now)
    python3 - "$TREE" "$FILES" "$PER_DIR" <<'PY'
import os, random, sys
root, n, per_dir = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(2)
leaves = max(1, (n + per_dir - 1) // per_dir)
fan = max(1, round(leaves ** 0.5))           # two levels: dNN/sNN
made = set()
for i in range(n):
    leaf = i % leaves
    d = os.path.join(root, "d%03d" % (leaf // fan), "s%03d" % (leaf % fan))
    if d not in made:
        os.makedirs(d, exist_ok=True)
        made.add(d)
    with open(os.path.join(d, "f%06d.bin" % i), "wb") as f:
        f.write(rng.randbytes(rng.randint(1024, 4096)))
PY
    sync
    echo "$FILES $PER_DIR" >"$STAMP"
    echo "   generated in $(elapsed "$t0" "$(now)") s"
fi
COPY=$DATA/copy
rm -rf "$COPY" "$TREE/.tandem"
NDIRS=$(find "$TREE" -mindepth 1 -type d -not -path "$TREE/.tandem*" | wc -l)
EXPECT_ENTRIES=$((FILES + NDIRS))

RES=$SCRATCH/results
LOGDIR=$SCRATCH
record() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$RES"; }   # metric run value

echo "== machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== source: $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- common node tui 2>/dev/null || echo ' (working tree has uncommitted changes)') (binaries built $BUILT)"
echo "== tree: $FILES files in $NDIRS directories, $(du -sh --apparent-size "$TREE" | cut -f1) apparent"

# --- reference: what this machine does with the same tree -------------------
echo "== reference (warm page cache)"
busy_check
ref() {  # name, command...
    local name=$1 t0 t1
    shift
    t0=$(now)
    "$@" >/dev/null
    t1=$(now)
    printf '     %-28s %8s s\n' "$name" "$(elapsed "$t0" "$t1")"
    record "ref:$name" "$run" "$(elapsed "$t0" "$t1")"
}
for run in $(seq 1 "$RUNS"); do
    [[ ${REF:-1} == 0 ]] && { echo "   skipped (REF=0)"; break; }
    echo "   run $run"
    ref "find -type f | wc -l" bash -c "find '$TREE' -type f | wc -l"
    ref "du -s" du -s "$TREE"
    ref "read all (find|xargs cat)" bash -c "find '$TREE' -type f -print0 | xargs -0 cat >/dev/null"
    ref "cp -a" cp -a "$TREE" "$COPY"
    ref "rm -rf copy" rm -rf "$COPY"
    sync
done

# --- node runs ----------------------------------------------------------------
LOG=
start_node() {  # sets CHILD_PID, NODE_PID, LOG, T_START
    LOG=$LOGDIR/node-$1.log
    : >"$LOG"
    T_START=$(now)
    "${WRAP[@]}" "$BIN/tandem-node" --dir "$TREE" --listen "127.0.0.1:$PORT" --name bench 2>"$LOG" &
    CHILD_PID=$!
    NODE_PID=$CHILD_PID
}
# Waits for the "indexed" line; sets T_READY and INDEXED_LINE.
wait_indexed() {
    local deadline=$((SECONDS + TIMEOUT))
    while :; do
        if INDEXED_LINE=$(grep -m1 ' indexed ' "$LOG"); then
            T_READY=$(now)
            if ((${#WRAP[@]})); then  # the node is the wrapper's child
                NODE_PID=$(pgrep -P "$CHILD_PID" | head -1)
                [[ -n $NODE_PID ]] || die "cannot find tandem-node under NODE_WRAP"
            fi
            return 0
        fi
        alive "$CHILD_PID" || { cat "$LOG" >&2; die "tandem-node exited before indexing"; }
        ((SECONDS < deadline)) || { tail -5 "$LOG" >&2; die "no 'indexed' line within ${TIMEOUT}s"; }
        sleep "$POLL"
    done
}
stop_node() {  # SIGTERM, wait for exit; sets STOP_S (seconds it took)
    local t0 deadline=$((SECONDS + TIMEOUT))
    t0=$(now)
    kill -TERM "$NODE_PID"
    while alive "$CHILD_PID"; do
        ((SECONDS < deadline)) || die "tandem-node did not stop within ${TIMEOUT}s of SIGTERM"
        sleep "$POLL"
    done
    local t1
    t1=$(now)
    local rc=0
    wait "$CHILD_PID" || rc=$?
    CHILD_PID=
    NODE_PID=
    ((rc == 0)) || die "tandem-node exited with status $rc (log: $LOG)"
    STOP_S=$(elapsed "$t0" "$t1")
}
# Parses "indexed DIR in X: N entries, M changed since last run".
parse_indexed() {
    local rest=${INDEXED_LINE##* in }
    LOGGED_S=$(dur_s "${rest%%:*}")
    ENTRIES=$(sed -n 's/.*: \([0-9]*\) entries, .*/\1/p' <<<"$INDEXED_LINE")
    CHANGED=$(sed -n 's/.* entries, \([0-9]*\) changed.*/\1/p' <<<"$INDEXED_LINE")
}
list_json() {  # run; times `tandem list --json`, checks the row count
    local out=$LOGDIR/list.json t0 t1 rows
    t0=$(now)
    # The client's peak RSS too, when GNU time is there to say it.
    if [[ -x /usr/bin/time ]]; then
        /usr/bin/time -f %M -o "$LOGDIR/list.rss" \
            timeout "$TIMEOUT" "$BIN/tandem" --node "127.0.0.1:$PORT" list --json >"$out"
        LIST_RSS=$(awk '{ printf "%.1f", $1 / 1024 }' "$LOGDIR/list.rss")
    else
        timeout "$TIMEOUT" "$BIN/tandem" --node "127.0.0.1:$PORT" list --json >"$out"
        LIST_RSS=
    fi
    t1=$(now)
    rows=$(grep -c '"path":' "$out" || true)
    [[ $rows == "$FILES" ]] || die "list --json returned $rows rows, expected $FILES"
    LIST_S=$(elapsed "$t0" "$t1")
    rm -f "$out"
}

echo "== node runs (PORT 127.0.0.1:<free port>, RUST_LOG=$RUST_LOG)"
busy_check
printf '   %-4s %-5s %8s %8s %8s %8s %8s %9s %9s %8s %7s\n' \
    run kind "ready s" "logged s" "cpu s" changed "list s" "RSS MiB" "HWM MiB" "stop s" "db MiB"
for run in $(seq 1 "$RUNS"); do
    for kind in cold warm; do
        if [[ $kind == cold ]]; then
            rm -rf "$TREE/.tandem"
            sync
        fi
        PORT=$(free_port)
        start_node "$run-$kind"
        wait_indexed
        parse_indexed
        ready=$(elapsed "$T_START" "$T_READY")
        cpu=$(cpu_s "$NODE_PID")
        read -r rss0 hwm0 <<<"$(mem_mib "$NODE_PID")"
        [[ $ENTRIES == "$EXPECT_ENTRIES" ]] ||
            die "$kind run $run: node indexed $ENTRIES entries, expected $EXPECT_ENTRIES ($INDEXED_LINE)"
        if [[ $kind == cold && $CHANGED != "$EXPECT_ENTRIES" ]]; then
            die "cold run $run: $CHANGED changed, expected every entry ($EXPECT_ENTRIES)"
        fi
        if [[ $kind == warm && $CHANGED != 0 ]]; then
            die "warm run $run: $CHANGED changed, expected 0 ($INDEXED_LINE)"
        fi
        list_json
        read -r rss hwm <<<"$(mem_mib "$NODE_PID")"
        db=$(du -cm "$TREE/.tandem"/index.db* | tail -1 | cut -f1)
        stop_node
        stop=$STOP_S
        printf '   %-4s %-5s %8s %8s %8s %8s %8s %9s %9s %8s %7s\n' \
            "$run" "$kind" "$ready" "$LOGGED_S" "$cpu" "$CHANGED" "$LIST_S" \
            "$rss0/$rss" "$hwm0/$hwm" "$stop" "$db"
        record "$kind:ready" "$run" "$ready"
        record "$kind:logged" "$run" "$LOGGED_S"
        record "$kind:before_scan" "$run" "$(awk -v a="$ready" -v b="$LOGGED_S" 'BEGIN { printf "%.3f", a - b }')"
        record "$kind:cpu" "$run" "$cpu"
        record "$kind:list" "$run" "$LIST_S"
        [[ -n $LIST_RSS ]] && record "$kind:list_rss" "$run" "$LIST_RSS"
        record "$kind:rss_ready" "$run" "$rss0"
        record "$kind:rss_list" "$run" "$rss"
        record "$kind:hwm_list" "$run" "$hwm"
        record "$kind:stop" "$run" "$stop"
    done
done
echo "   (RSS/HWM: after 'indexed' / after 'list --json'; cpu: node user+sys at 'indexed')"
busy_check

# --- summary -----------------------------------------------------------------
echo "== summary: median of $RUNS runs [min - max]"
python3 - "$RES" "$FILES" <<'PY'
import statistics, sys
from collections import defaultdict
vals = defaultdict(list)
for line in open(sys.argv[1]):
    k, _, v = line.rstrip("\n").split("\t")
    vals[k].append(float(v))
files = int(sys.argv[2])
# Issue 17's targets, for the two sizes it names (none for other sizes):
# cold index, warm restart (s) and RSS after either (MiB; 300 MB = 286 MiB).
TARGETS = {100_000: (2.5, 0.5, 40), 1_000_000: (30, 3, 286)}
cold_t, warm_t, rss_t = TARGETS.get(files, (None, None, None))
def row(label, key, unit, target=None):
    v = vals.get(key)
    if not v:
        return
    med = statistics.median(v)
    verdict = ""
    if target is not None:
        verdict = "  OK (target < %g %s)" % (target, unit) if med < target else "  OVER TARGET (< %g %s)" % (target, unit)
    print("   %-36s %9.3f %-3s [%.3f - %.3f]%s" % (label, med, unit, min(v), max(v), verdict))
row("cold start to 'indexed' (wall)", "cold:ready", "s", cold_t)
row("  as logged by the node", "cold:logged", "s")
row("  before the scan (wall - logged)", "cold:before_scan", "s")
row("  node CPU (user+sys)", "cold:cpu", "s")
row("warm restart to 'indexed' (wall)", "warm:ready", "s", warm_t)
row("  as logged by the node", "warm:logged", "s")
row("  before the scan (wall - logged)", "warm:before_scan", "s")
row("  node CPU (user+sys)", "warm:cpu", "s")
row("list --json, %d rows (after cold)" % files, "cold:list", "s")
row("list --json, %d rows (after warm)" % files, "warm:list", "s")
row("list --json: the client's peak RSS", "warm:list_rss", "MiB")
row("RSS after cold index", "cold:rss_ready", "MiB", rss_t)
row("RSS after warm restart", "warm:rss_ready", "MiB", rss_t)
row("RSS after cold index + list", "cold:rss_list", "MiB")
row("peak RSS (VmHWM), cold + list", "cold:hwm_list", "MiB")
row("RSS after warm index + list", "warm:rss_list", "MiB")
row("peak RSS (VmHWM), warm + list", "warm:hwm_list", "MiB")
row("SIGTERM to exit", "cold:stop", "s")
for k in sorted(vals):
    if k.startswith("ref:"):
        row("reference: " + k[4:], k, "s")
PY
