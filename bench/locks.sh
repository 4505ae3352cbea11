#!/usr/bin/env bash
# Lock round trips on loopback (issue 14). See bench/LOCKS.md.
#
#   bench/locks.sh                    # build release; mesh of 3, chain of 4
#   ROUNDS=1000 RUNS=3 bench/locks.sh
#
# Each run starts fresh nodes that all trust each other (a mesh of 3: each
# dials the others; a chain of 4: each dials the next only), waits for the
# lock cluster to form and a file to reach every node, then times ROUNDS
# lock + unlock pairs over one client connection (tui/examples/lock_bench.rs)
# through the first node, and for the chain also through the last one.
#
# Environment: ROUNDS=1000, RUNS=3, BUILD=1 (0: use target/release as is),
# HEARTBEAT=500ms (--lock-heartbeat), KEEP=0 (1: keep the scratch folder).
set -euo pipefail
[[ ${TRACE:-0} == 1 ]] && set -x
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-1000}
RUNS=${RUNS:-3}
BUILD=${BUILD:-1}
HEARTBEAT=${HEARTBEAT:-500ms}
KEEP=${KEEP:-0}
BIN=target/release
die() { echo "bench/locks.sh: $*" >&2; exit 1; }
# shellcheck source=bench/lib.sh
source bench/lib.sh
if [[ $BUILD == 1 ]]; then
    cargo build --release -q -p tandem-tui --example lock_bench
fi
[[ -x target/release/examples/lock_bench ]] || die "no lock_bench (run with BUILD=1)"
private_binaries "${TMPDIR:-/tmp}/tandem-locks-bench.XXXXXX"
cp target/release/examples/lock_bench "$BIN/"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    if [[ $KEEP == 1 ]]; then echo "kept $SCRATCH"; else rm -rf "$SCRATCH"; fi
}
trap cleanup EXIT
client_env "$SCRATCH"

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Polls `cmd` until it succeeds, at most 30 s.
wait_for() {  # WHAT CMD...
    local what=$1; shift
    for _ in $(seq 300); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    die "timed out waiting for $what"
}

# Whether a node of RUN logged the forming of the lock cluster (the glob is
# expanded at each call: the logs appear as the nodes start).
formed() {  # RUN
    grep -q "lock cluster: formed" "$SCRATCH/$1"/n*.log
}

# Starts N nodes of TOPOLOGY (mesh or chain) in $SCRATCH/RUN; sets ADDRS.
start_cluster() {  # RUN TOPOLOGY N
    local run=$1 topo=$2 n=$3 i j
    local dirs=() ids=() ports=()
    for ((i = 0; i < n; i++)); do
        dirs[i]=$SCRATCH/$run/n$i
        mkdir -p "${dirs[i]}"
        ids[i]=$("$BIN/tandem-node" --dir "${dirs[i]}" id 2>/dev/null)
        ports[i]=$(free_port)
    done
    for ((i = 0; i < n; i++)); do
        for ((j = 0; j < n; j++)); do
            if ((i != j)); then
                "$BIN/tandem-node" --dir "${dirs[i]}" trust "${ids[j]}" --name "n$j" >/dev/null 2>&1
            fi
        done
    done
    ADDRS=()
    for ((i = 0; i < n; i++)); do
        local peers=()
        for ((j = i + 1; j < n; j++)); do
            if [[ $topo == mesh ]] || ((j == i + 1)); then
                peers+=(--peer "${ids[j]}@127.0.0.1:${ports[j]}")
            fi
        done
        RUST_LOG=info "$BIN/tandem-node" --dir "${dirs[i]}" --listen "127.0.0.1:${ports[i]}" \
            --name "n$i" --lock-heartbeat "$HEARTBEAT" "${peers[@]}" \
            >"$SCRATCH/$run/n$i.log" 2>&1 &
        PIDS+=($!)
        ADDRS[i]=127.0.0.1:${ports[i]}
    done
    wait_for "the lock cluster to form" formed "$run"
    echo "bench" >"${dirs[0]}/bench.txt"
    for ((i = 0; i < n; i++)); do
        wait_for "bench.txt on n$i" test -f "${dirs[i]}/bench.txt"
    done
}

stop_cluster() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    PIDS=()
}

results=()
measure() {  # LABEL ADDR
    local line
    line=$("$BIN/lock_bench" --node "$2" --path bench.txt --rounds "$ROUNDS")
    echo "   $1: $line"
    results+=("$1 $line")
}

echo "== lock + unlock round trips, $ROUNDS in a row per run, $RUNS runs (heartbeat $HEARTBEAT, binaries built $BUILT)"
busy_check
for ((r = 1; r <= RUNS; r++)); do
    start_cluster "mesh-$r" mesh 3
    measure "mesh3 via n0" "${ADDRS[0]}"
    stop_cluster
    start_cluster "chain-$r" chain 4
    measure "chain4 via n0" "${ADDRS[0]}"
    measure "chain4 via n3" "${ADDRS[3]}"
    stop_cluster
done

echo "== medians over runs (ms for one lock + unlock; s for $ROUNDS in a row)"
for label in "mesh3 via n0" "chain4 via n0" "chain4 via n3"; do
    printf '%s\n' "${results[@]}" | awk -v l="$label" '
        index($0, l) == 1 {
            n++
            for (i = 1; i <= NF; i++) {
                if ($i == "median_ms") m[n] = $(i + 1)
                if ($i == "p99_ms") p[n] = $(i + 1)
                if ($i == "total_s") t[n] = $(i + 1)
            }
        }
        function med(a, k,   i, j, x) {
            for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (a[j] < a[i]) { x = a[i]; a[i] = a[j]; a[j] = x }
            return a[int((k + 1) / 2)]
        }
        END { if (n) printf "   %-14s median %6.2f ms   p99 %6.2f ms   %d in a row %6.2f s\n", l, med(m, n), med(p, n), '"$ROUNDS"', med(t, n) }'
done
