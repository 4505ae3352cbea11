#!/usr/bin/env bash
# Fetch throughput of one node on loopback (issue 5). See bench/CACHE.md.
#
#   bench/fetch.sh                     # build release, 3 rounds
#   ROUNDS=5 CACHED=8 bench/fetch.sh   # more runs
#   BUILD=0 bench/fetch.sh             # use target/release as it is
#
# Each round starts a fresh tandem-node (so its file cache is empty) on a
# temp dir holding big32.bin (32 MiB random) and big256.bin (256 MiB random),
# waits until `tandem list` shows both, then times `tandem fetch`:
#   uncached   big32.bin, the round's first fetch: the node reads the file
#              (from the page cache) and hashes it, caches it, sends it
#   cached     big32.bin, CACHED more times: served from the node's cache
#   stream     big256.bin (larger than the 64 MiB cache): read from disk block
#              by block, verified, never cached
# into DEST (on the data's filesystem; the client fsyncs the file, as
# `tandem fetch` always does), and the cached/stream runs again into SHM
# (tmpfs, where fsync is free), which shows the transfer without the disk.
# Reference, timed in the same rounds: `cp` of the same file into the same
# dir followed by `sync FILE` (an fsync of that file, like the client's), and
# `cp` into SHM.
#
# Environment:
#   ROUNDS=3      node starts; one uncached and one stream run per round
#   CACHED=5      cached fetches per round and destination
#   BUILD=1       0 = use the binaries in BIN_DIR / target/release as they are
#   BIN_DIR=      take tandem-node and tandem from here (BUILD defaults to 0)
#   CACHE_SIZE=64MiB     node --cache-size
#   CACHE_POLICY=moka    node --cache-policy
#   WORKDIR=/tmp  where the temp data and DEST dirs are made
#   SHM=/dev/shm  tmpfs for the second destination; SHM= (empty) skips it
#   TIMEOUT=120   seconds any single wait or command may take
#   KEEP_LOGS=0   1 = keep node logs (and perf data) in the scratch dir
#   PERF=0        1 = in the last round, `perf record -g` the node during the
#                 cached fetches into SHM, and one client fetch, then print
#                 the top symbols (needs perf; timings of that round include
#                 perf overhead, so they are reported but left out of the
#                 summary)
#   RUST_LOG=info passed to the node
#
# MB/s = 10^6 bytes per second of wall time of the whole `tandem fetch`
# process (start, connect, handshake, request, transfer, hash check, fsync,
# rename). The client's own figure (it prints the time from just before
# the request to the rename) is shown as well. Numbers are with a warm page
# cache (the files were just written); dropping caches needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ROUNDS=${ROUNDS:-3}
CACHED=${CACHED:-5}
if [[ -n ${BIN_DIR:-} ]]; then BUILD=${BUILD:-0}; else BUILD=${BUILD:-1}; fi
CACHE_SIZE=${CACHE_SIZE:-64MiB}
CACHE_POLICY=${CACHE_POLICY:-moka}
WORKDIR=${WORKDIR:-/tmp}
SHM=${SHM-/dev/shm}
TIMEOUT=${TIMEOUT:-120}
PERF=${PERF:-0}
export RUST_LOG=${RUST_LOG:-info}
export NO_COLOR=1
BIN=${BIN_DIR:-$ROOT/target/release}

NODE_PID=
PERF_PID=
WORK=
SHMDIR=
SCRATCH=
alive() {  # true while PID runs (a zombie counts as gone)
    local st
    st=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ -n $st && $st != Z ]]
}
stop_pid() {  # SIGTERM (or $2), wait up to 10 s, then SIGKILL; reaps it
    local pid=$1 sig=${2:-TERM}
    [[ -n $pid ]] || return 0
    if alive "$pid"; then
        kill -"$sig" "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do alive "$pid" || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    local rc=$?
    trap '' INT TERM
    stop_pid "$PERF_PID" INT
    stop_pid "$NODE_PID"
    if [[ -n $WORK && -d $WORK ]]; then rm -rf "$WORK"; fi
    if [[ -n $SHMDIR && -d $SHMDIR ]]; then rm -rf "$SHMDIR"; fi
    if [[ -n $SCRATCH && -d $SCRATCH ]]; then
        if [[ ${KEEP_LOGS:-0} == 1 ]]; then
            echo "fetch.sh: logs kept in $SCRATCH" >&2
        else
            rm -rf "$SCRATCH"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

die() { echo "fetch.sh: error: $*" >&2; exit 1; }
# shellcheck source=bench/lib.sh
source bench/lib.sh  # the script has cd-ed to the repository root
now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.4f", b - a }'; }
mbps() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.0f", (s > 0 ? n / s / 1e6 : 0) }'; }
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# --- build ------------------------------------------------------------------
private_binaries /tmp/tandem-fetch-logs.XXXXXX
client_env "$SCRATCH"
if [[ $PERF == 1 ]]; then
    command -v perf >/dev/null || die "PERF=1 needs perf"
fi

# --- data ---------------------------------------------------------------------
WORK=$(mktemp -d "$WORKDIR/tandem-fetch.XXXXXX")
DATA=$WORK/data   # the node's directory
DEST=$WORK/out    # where fetches and the cp reference go (same filesystem)
mkdir -p "$DATA" "$DEST"
if [[ -n $SHM ]]; then
    [[ -d $SHM && -w $SHM ]] || die "SHM=$SHM is not a writable directory (SHM= skips it)"
    SHMDIR=$(mktemp -d "$SHM/tandem-fetch.XXXXXX")
fi
echo "== writing big32.bin (32 MiB) and big256.bin (256 MiB) of random bytes"
head -c $((32 << 20)) /dev/urandom >"$DATA/big32.bin"
head -c $((256 << 20)) /dev/urandom >"$DATA/big256.bin"
sync
SIZE32=$(stat -c %s "$DATA/big32.bin")

FS=$(df -PT "$DEST" | awk 'NR == 2 { print $2 }')
echo "== machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo), kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== data + DEST: $WORK ($FS)${SHMDIR:+; SHM: $SHMDIR ($(df -PT "$SHMDIR" | awk 'NR == 2 { print $2 }'))}"
echo "== source: $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- common node tui 2>/dev/null || echo ' (working tree has uncommitted changes)') (binaries built $BUILT)"
echo "== node: --cache-size $CACHE_SIZE --cache-policy $CACHE_POLICY, RUST_LOG=$RUST_LOG"

RES=$SCRATCH/results
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RES"; }  # kind round seconds bytes

# --- node ---------------------------------------------------------------------
PORT=
ADDR=
LOG=
start_node() {  # round
    PORT=$(free_port)
    ADDR=127.0.0.1:$PORT
    LOG=$SCRATCH/node-$1.log
    "$BIN/tandem-node" --dir "$DATA" --listen "$ADDR" --name bench \
        --cache-size "$CACHE_SIZE" --cache-policy "$CACHE_POLICY" 2>"$LOG" &
    NODE_PID=$!
}
wait_listed() {  # until `tandem list` shows both files
    local deadline=$((SECONDS + TIMEOUT)) out
    while :; do
        alive "$NODE_PID" || { cat "$LOG" >&2; die "tandem-node exited"; }
        if out=$(timeout 10 "$BIN/tandem" --node "$ADDR" list --json 2>/dev/null) &&
            grep -q '"big32.bin"' <<<"$out" && grep -q '"big256.bin"' <<<"$out"; then
            return 0
        fi
        ((SECONDS < deadline)) || { tail -5 "$LOG" >&2; die "files not listed within ${TIMEOUT}s"; }
        sleep 0.05
    done
}
stop_node() {
    local deadline=$((SECONDS + TIMEOUT)) rc=0
    kill -TERM "$NODE_PID"
    while alive "$NODE_PID"; do
        ((SECONDS < deadline)) || die "tandem-node did not stop within ${TIMEOUT}s"
        sleep 0.05
    done
    wait "$NODE_PID" || rc=$?
    NODE_PID=
    ((rc == 0)) || die "tandem-node exited with status $rc (log: $LOG)"
}

# Times one `tandem fetch FILE --to DIR`; prints a row, records it, checks
# the bytes. Args: kind round file dir [wrapper...]
fetch_run() {
    local kind=$1 round=$2 file=$3 dir=$4 out t0 t1 wall own size cpu rc=0 TIMEFORMAT='%U %S'
    shift 4
    rm -f "$dir/$file"
    out=$SCRATCH/fetch.out
    t0=$(now)
    # `time` reports the user+sys CPU of the client (waited-for descendants).
    { time timeout "$TIMEOUT" "$@" "$BIN/tandem" --node "$ADDR" fetch "$file" --to "$dir" \
        >"$out" 2>"$SCRATCH/fetch.err" || rc=$?; } 2>"$SCRATCH/fetch.time"
    t1=$(now)
    ((rc == 0)) || { cat "$SCRATCH/fetch.err" >&2; die "fetch $file failed"; }
    wall=$(elapsed "$t0" "$t1")
    cpu=$(awk '{ printf "%.3f", $1 + $2 }' "$SCRATCH/fetch.time")
    # "big32.bin saved to DIR/big32.bin (32.0 MiB, 41.23ms, from bench)"
    own=$(python3 -c '
import re, sys
m = re.search(r", ([0-9.]+)(ns|µs|us|ms|s), from ", sys.stdin.read())
print("%.4f" % (float(m[1]) * {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}[m[2]]) if m else "nan")
' <"$out")
    size=$(stat -c %s "$DATA/$file")
    cmp -s "$DATA/$file" "$dir/$file" || die "$kind: $dir/$file differs from the source"
    rm -f "$dir/$file"
    printf '     %-22s %5s %9s s %7s MB/s   (client says %s s, %s MB/s; client CPU %s s)\n' \
        "$kind" "$round" "$wall" "$(mbps "$size" "$wall")" "$own" "$(mbps "$size" "$own")" "$cpu"
    record "$kind" "$round" "$wall" "$size"
    record "$kind (client's own time)" "$round" "$own" "$size"
    record "cpu:$kind" "$round" "$cpu" "$size"
}
ref_cp() {  # kind round file dir sync(0|1)
    local kind=$1 round=$2 file=$3 dir=$4 dosync=$5 t0 t1 wall size
    rm -f "$dir/ref-$file"
    t0=$(now)
    cp "$DATA/$file" "$dir/ref-$file"
    if [[ $dosync == 1 ]]; then sync "$dir/ref-$file"; fi
    t1=$(now)
    wall=$(elapsed "$t0" "$t1")
    size=$(stat -c %s "$DATA/$file")
    rm -f "$dir/ref-$file"
    printf '     %-22s %5s %9s s %7s MB/s\n' "$kind" "$round" "$wall" "$(mbps "$size" "$wall")"
    record "$kind" "$round" "$wall" "$size"
}
cache_check() {  # the node's own count: hits and misses so far
    timeout "$TIMEOUT" "$BIN/tandem" --node "$ADDR" cache --json |
        python3 -c 'import json, sys; r = json.load(sys.stdin); print(r.get("hits"), r.get("misses"), r.get("used"))' 2>/dev/null ||
        echo "? ? ?"
}

echo "== rounds (each: fresh node on 127.0.0.1:<free port>, empty cache)"
for round in $(seq 1 "$ROUNDS"); do
    profile=0
    if [[ $PERF == 1 && $round == "$ROUNDS" ]]; then profile=1; fi
    tag=$round
    if ((profile)); then tag="$round*"; fi
    busy_check
    t0=$(now)
    start_node "$round"
    wait_listed
    echo "   round $round (node up and listing in $(elapsed "$t0" "$(now)") s)"
    cpu0=$(cpu_s "$NODE_PID")
    fetch_run "fetch32 uncached" "$tag" big32.bin "$DEST"
    cpu1=$(cpu_s "$NODE_PID")
    for _ in $(seq 1 "$CACHED"); do fetch_run "fetch32 cached" "$tag" big32.bin "$DEST"; done
    cpu2=$(cpu_s "$NODE_PID")
    if [[ -n $SHMDIR ]]; then
        if ((profile)); then
            perf record -q -F 1999 -g -p "$NODE_PID" -o "$SCRATCH/perf-node.data" 2>"$SCRATCH/perf-node.err" &
            PERF_PID=$!
            sleep 0.5
        fi
        for _ in $(seq 1 "$CACHED"); do fetch_run "fetch32 cached shm" "$tag" big32.bin "$SHMDIR"; done
        if ((profile)); then
            stop_pid "$PERF_PID" INT
            PERF_PID=
            fetch_run "fetch32 cached shm+perf" "$tag" big32.bin "$SHMDIR" \
                perf record -q -F 1999 -g -o "$SCRATCH/perf-client.data" --
        fi
    fi
    cpu3=$(cpu_s "$NODE_PID")
    fetch_run "fetch256 stream" "$tag" big256.bin "$DEST"
    if [[ -n $SHMDIR ]]; then fetch_run "fetch256 stream shm" "$tag" big256.bin "$SHMDIR"; fi
    cpu4=$(cpu_s "$NODE_PID")
    read -r hits misses used <<<"$(cache_check)"
    nshm=0
    if [[ -n $SHMDIR ]]; then nshm=$CACHED; fi
    if ((profile)) && [[ -n $SHMDIR ]]; then nshm=$((nshm + 1)); fi
    echo "     node CPU: uncached $(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN { printf "%.2f", b - a }') s," \
        "cached $(awk -v a="$cpu1" -v b="$cpu2" -v n="$CACHED" 'BEGIN { printf "%.3f", (b - a) / n }') s/fetch," \
        "stream(s) $(awk -v a="$cpu3" -v b="$cpu4" 'BEGIN { printf "%.2f", b - a }') s;" \
        "cache: $hits hits, $misses misses, $used bytes used (expected $((CACHED + nshm)) hits)"
    record "nodecpu:fetch32 uncached" "$tag" "$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN { printf "%.3f", b - a }')" "$SIZE32"
    record "nodecpu:fetch32 cached" "$tag" "$(awk -v a="$cpu1" -v b="$cpu2" -v n="$CACHED" 'BEGIN { printf "%.4f", (b - a) / n }')" "$SIZE32"
    [[ $hits == "$((CACHED + nshm))" ]] || echo "     WARNING: the node counted $hits cache hits, expected $((CACHED + nshm))" >&2
    stop_node
    ref_cp "cp32+sync" "$tag" big32.bin "$DEST" 1
    ref_cp "cp256+sync" "$tag" big256.bin "$DEST" 1
    if [[ -n $SHMDIR ]]; then
        ref_cp "cp32 shm" "$tag" big32.bin "$SHMDIR" 0
        ref_cp "cp256 shm" "$tag" big256.bin "$SHMDIR" 0
    fi
    if ((profile)); then echo "     (* = profiled round: perf overhead included, left out of the summary)"; fi
done
busy_check

# --- summary -----------------------------------------------------------------
echo "== summary: median MB/s (10^6 bytes/s) of wall time [min - max], n runs"
python3 - "$RES" <<'PY'
import statistics, sys
from collections import OrderedDict
rows = OrderedDict()
cpu = OrderedDict()
for line in open(sys.argv[1]):
    kind, rnd, secs, size = line.rstrip("\n").split("\t")
    if rnd.endswith("*"):
        continue
    s = float(secs)
    if s != s or s < 0:
        continue
    if kind.startswith(("cpu:", "nodecpu:")):
        who, k = kind.split(":", 1)
        cpu.setdefault(k, {}).setdefault(who, []).append(s)
        continue
    if s > 0:
        rows.setdefault(kind, []).append(int(size) / s / 1e6)
if not rows:
    print("   (no runs outside the profiled round: use ROUNDS >= 2 with PERF=1)")
for kind, v in rows.items():
    med = statistics.median(v)
    note = ""
    if kind == "fetch32 cached":
        note = "  OK (target >= 1000 MB/s)" if med >= 1000 else "  BELOW TARGET (>= 1000 MB/s)"
    print("   %-38s %7.0f  [%.0f - %.0f]  n=%d%s" % (kind, med, min(v), max(v), len(v), note))
print("== CPU seconds per fetch, median (client: user+sys of the process; node: /proc delta, 10 ms ticks)")
for kind, d in cpu.items():
    parts = []
    for who, label in (("cpu", "client"), ("nodecpu", "node")):
        if who in d:
            parts.append("%s %.3f s" % (label, statistics.median(d[who])))
    print("   %-38s %s" % (kind, ", ".join(parts)))
PY

if [[ $PERF == 1 ]]; then
    for who in node client; do
        f=$SCRATCH/perf-$who.data
        [[ -f $f ]] || continue
        echo "== perf: $who, top symbols (self time, cached fetches into SHM)"
        perf report -i "$f" --stdio --no-children --sort dso,symbol -g none --percent-limit 1.5 2>/dev/null |
            grep -v '^#' | grep -v '^$' | head -25 || true
    done
fi
