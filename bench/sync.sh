#!/usr/bin/env bash
# Node-to-node sync benchmarks for tandem-node on loopback. See bench/SYNC.md.
#
#   bench/sync.sh                       # every case, default run counts
#   CASES="1 4" RUNS=3 bench/sync.sh    # some cases only
#
# Cases: 1 latency of a new 4 KiB file; 2 1 GiB as 256 x 4 MiB into an empty
# peer; 3 20,000 x 4 KiB in 200 folders into an empty peer, followed by 6 idle
# CPU; 4 4 KiB changed inside a 256 MiB file; 5 a 100 MiB file renamed.
# Over a slow link (a delay-and-bandwidth proxy, node/examples/wan_link.rs, that
# B dials A through): 7 latency of a new 4 KiB file; 8 2,000 x 4 KiB into an
# empty peer; 9 one 64 MiB file into an empty peer (8 and 9 beside rsync -a to
# an rsync daemon through the same kind of link). CASES=wan is 7 8 9. Case 10,
# 1,000,000 x 2 KiB in 1,000 folders into an empty peer, runs only when named
# (one run takes about ten minutes and 12 GB of disk).
#
# Environment:
#   CASES="1 2 3 4 5"  which cases (6, idle CPU, runs inside 3; IDLE=0 skips it;
#                      the WAN cases 7 8 9 run only when named)
#   RUNS=5             runs of the fast cases (3, 4, 5, 8, 9); each printed, then the median
#   RUNS_BIG=3         runs of the 1 GiB case
#   RUNS_HUGE=1        runs of the million-file case (10)
#   SAMPLES=50         latency samples per write mode (case 1)
#   IDLE=20            seconds of idle CPU measurement after each 20k run
#   DIAL=both          both nodes get --peer ID@ADDR for the other (as a cluster is set up);
#                      b = only B dials A (shows the cost of the duplicate-link race);
#                      A then trusts B's id with `tandem-node ... trust ID` before it starts.
#                      Ids come from `tandem-node --dir D --state-dir S id` before the nodes
#                      start; binaries without `id` (before db5f45b, no TLS) get plain
#                      --peer ADDR (the helper detects which and prints it).
#   SETTLE=1           seconds to let the link go quiet before reading TCP counters
#   TIMEOUT=600        seconds any single wait may take before the case fails
#   BUILD=1            0 = use the existing target/release binaries as they are
#   BIN_DIR=           take tandem-node from here instead of target/release
#   KEEP_LOGS=0        1 = keep the node logs (path printed at exit)
#   JSON=              also write all results as JSON to this file
#   RUST_LOG=info      passed to the nodes (the "received" lines are at info)
#   WAN_DELAY=25ms     one-way delay of the WAN link, each direction (cases 7-9)
#   WAN_RATE=100mbit   its bandwidth, each direction (bits with SI prefixes; 0 = none)
#   WAN_LINK=          the proxy binary (default target/release/examples/wan_link,
#                      built with BUILD=1; taken from here even with BIN_DIR)
#   TRANSFER_FLOOR=    case 2's floor (node/examples/transfer_floor.rs: the tree
#                      over one TLS connection, each file made durable and renamed
#                      into place; timed without BLAKE3, with it on both ends,
#                      and on the receiver only;
#                      default target/release/examples/transfer_floor, built with
#                      BUILD=1; the column stays empty without it)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CASES=${CASES:-1 2 3 4 5}
RUNS=${RUNS:-5}
RUNS_BIG=${RUNS_BIG:-3}
RUNS_HUGE=${RUNS_HUGE:-1}
SAMPLES=${SAMPLES:-50}
IDLE=${IDLE:-20}
SETTLE=${SETTLE:-1}
TIMEOUT=${TIMEOUT:-600}
DIAL=${DIAL:-both}
WAN_DELAY=${WAN_DELAY:-25ms}
WAN_RATE=${WAN_RATE:-100mbit}
WAN=0
for c in ${CASES//,/ }; do [[ $c == 7 || $c == 8 || $c == 9 || $c == wan ]] && WAN=1; done
if [[ -n ${BIN_DIR:-} ]]; then BUILD=${BUILD:-0}; else BUILD=${BUILD:-1}; fi
BIN=${BIN_DIR:-$ROOT/target/release}
export RUST_LOG=${RUST_LOG:-info}
export NO_COLOR=1

WORK=
PY_PID=
KEPT=
alive() {
    local st
    st=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ -n $st && $st != Z ]]
}
stop_pid() { # PID [seconds]: SIGTERM, wait with a deadline, then SIGKILL
    local pid=$1 secs=${2:-20} i
    alive "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < secs * 10; i++)); do alive "$pid" || return 0; sleep 0.1; done
    echo "sync.sh: pid $pid ignored SIGTERM for ${secs}s; killing" >&2
    kill -KILL "$pid" 2>/dev/null || true
}
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n $PY_PID ]]; then
        stop_pid "$PY_PID" 60
        wait "$PY_PID" 2>/dev/null || true
    fi
    # Nodes the helper started (it stops them itself; this is for when it died).
    if [[ -n $WORK && -f $WORK/pids ]]; then
        while read -r pid; do
            [[ -n $pid ]] || continue
            if alive "$pid" && grep -qaE 'tandem-node|wan_link|rsync' "/proc/$pid/cmdline" 2>/dev/null; then
                stop_pid "$pid" 20
            fi
        done <"$WORK/pids"
    fi
    if [[ -n $WORK && -d $WORK ]]; then
        if [[ ${KEEP_LOGS:-0} == 1 && -d $WORK/logs ]]; then
            KEPT=$(mktemp -d /tmp/tandem-sync-logs.XXXXXX)
            cp -a "$WORK/logs/." "$KEPT/"
            echo "sync.sh: node logs kept in $KEPT" >&2
        fi
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

die() { echo "sync.sh: error: $*" >&2; exit 1; }

command -v python3 >/dev/null || die "python3 is required"
command -v ss >/dev/null || die "ss (iproute2) is required"
if [[ $BUILD == 1 ]]; then
    echo "building (release)..."
    # tandem-tui is not needed here: if it does not build, build the node alone.
    if ! cargo build --release -p tandem-node -p tandem-tui; then
        echo "sync.sh: building both failed; building tandem-node alone" >&2
        cargo build --release -p tandem-node
    fi
fi
if [[ $WAN == 1 && -z ${WAN_LINK:-} && $BUILD == 1 ]]; then
    cargo build --release -p tandem-node --example wan_link
fi
WAN_LINK=${WAN_LINK:-$ROOT/target/release/examples/wan_link}
if [[ $CASES == *2* && -z ${TRANSFER_FLOOR:-} && $BUILD == 1 ]]; then
    cargo build --release -p tandem-node --example transfer_floor ||
        echo "sync.sh: building transfer_floor failed; case 2 runs without its floor" >&2
fi
TRANSFER_FLOOR=${TRANSFER_FLOOR:-$ROOT/target/release/examples/transfer_floor}
[[ -x $BIN/tandem-node ]] || die "no $BIN/tandem-node (build it or set BIN_DIR)"
[[ $WAN == 0 || -x $WAN_LINK ]] || die "no $WAN_LINK for the WAN cases (BUILD=1, or set WAN_LINK)"
if ! command -v rsync >/dev/null; then
    echo "rsync is missing; installing it for the comparison column..."
    if ! (apt-get install -y rsync >/dev/null 2>&1 ||
        (apt-get update >/dev/null 2>&1 && apt-get install -y rsync >/dev/null 2>&1)); then
        echo "sync.sh: could not install rsync; the rsync -a column stays empty" >&2
    fi
fi

df -h /tmp
WORK=$(mktemp -d /tmp/tandem-sync-bench.XXXXXX)
: >"$WORK/pids"

echo
echo "date:    $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "machine: $(nproc) CPUs, kernel $(uname -r), /tmp on $(findmnt -no FSTYPE -T /tmp 2>/dev/null || stat -f -c %T /tmp)," \
    "$(awk '/MemTotal/ { printf "%.1f GiB RAM", $2 / 1048576 }' /proc/meminfo)"
echo "node:    $BIN/tandem-node ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$([[ -z $(git -C "$ROOT" status --porcelain -- node common 2>/dev/null) ]] || echo ', with uncommitted changes in node/ or common/'))"
echo "tools:   $(cp --version | sed -n 1p); $({ rsync --version 2>/dev/null || echo 'no rsync'; } | sed -n 1p)"
echo "load:    $(cut -d' ' -f1-3 /proc/loadavg); CPU pressure: $(sed -n 1p /proc/pressure/cpu 2>/dev/null); IO pressure: $(sed -n 1p /proc/pressure/io 2>/dev/null)"
echo "settings: CASES='$CASES' RUNS=$RUNS RUNS_BIG=$RUNS_BIG RUNS_HUGE=$RUNS_HUGE SAMPLES=$SAMPLES IDLE=$IDLE SETTLE=$SETTLE DIAL=$DIAL$([[ $WAN == 0 ]] || echo " WAN_DELAY=$WAN_DELAY WAN_RATE=$WAN_RATE")"

# Run a private copy: other people rebuilding target/release mid-run must not
# swap the binary under the benchmark.
mkdir -p "$WORK/bin"
cp "$BIN/tandem-node" "$WORK/bin/tandem-node"
[[ $WAN == 0 ]] || cp "$WAN_LINK" "$WORK/bin/wan_link"
[[ ! -x $TRANSFER_FLOOR ]] || cp "$TRANSFER_FLOOR" "$WORK/bin/transfer_floor"

python3 "$ROOT/bench/sync_helpers.py" \
    --bin "$WORK/bin" --work "$WORK" --pidfile "$WORK/pids" --cases "$CASES" \
    --runs "$RUNS" --runs-big "$RUNS_BIG" --runs-huge "$RUNS_HUGE" --samples "$SAMPLES" --idle "$IDLE" \
    --settle "$SETTLE" --timeout "$TIMEOUT" --dial "$DIAL" ${JSON:+--json "$JSON"} \
    --wan-link "$WORK/bin/wan_link" --transfer-floor "$WORK/bin/transfer_floor" --wan-delay "$WAN_DELAY" --wan-rate "$WAN_RATE" &
PY_PID=$!
rc=0
wait "$PY_PID" || rc=$?
PY_PID=
exit "$rc"
