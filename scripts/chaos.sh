#!/usr/bin/env bash
# The chaos suite (node/tests/chaos.rs) on release builds.
#
#   scripts/chaos.sh --seed 7 [--topology pair]          replay one seed
#   scripts/chaos.sh --seeds 1..50 [--topology mesh3]    many seeds, then a summary table
#
# Options: --topology pair|mesh3|chain3|all (default all; a comma list works too),
# --ops N (operations per run, default 150), --bin-dir DIR (run the tandem-node
# and tandem binaries of DIR, e.g. another checkout's target/release).
# Seeds: 7, 1..50 (inclusive), or 1,5,9.
#
# Builds the chaos test, tandem-node and the tandem client in release, then runs
# the test binary once per (topology, seed), so one run cannot end the sweep.
# Each run's output: $TARGET/chaos-runs/<topology>-seed<N>.out; a failed run's
# report and node logs: $TARGET/tmp/chaos/<topology>-seed<N>/. Exits 1 if any
# run failed. Every node and proxy a run starts is stopped by the test itself.
set -euo pipefail
cd "$(dirname "$0")/.."

SEEDS="" TOPOLOGY=all OPS="" BIN_DIR=""
usage() { sed -n '2,17p' "$0"; exit "${1:-0}"; }
while [[ $# -gt 0 ]]; do
    case "$1" in
        --seed|--seeds) SEEDS=${2:?$1 needs a value}; shift 2 ;;
        --topology) TOPOLOGY=${2:?--topology needs a value}; shift 2 ;;
        --ops) OPS=${2:?--ops needs a value}; shift 2 ;;
        --bin-dir) BIN_DIR=${2:?--bin-dir needs a value}; shift 2 ;;
        -h|--help) usage 0 ;;
        *) echo "chaos.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
done
[[ -n "$SEEDS" ]] || { echo "chaos.sh: give --seed N or --seeds A..B" >&2; usage 2; }

# Expand the seed list and the topologies.
seeds=()
IFS=',' read -ra parts <<< "$SEEDS"
for p in "${parts[@]}"; do
    p=${p//=/}
    if [[ "$p" =~ ^([0-9]+)(\.\.|-)([0-9]+)$ ]]; then
        for ((s = BASH_REMATCH[1]; s <= BASH_REMATCH[3]; s++)); do seeds+=("$s"); done
    elif [[ "$p" =~ ^[0-9]+$ ]]; then
        seeds+=("$p")
    else
        echo "chaos.sh: bad seed list $SEEDS (want 7, 1..50 or 1,5,9)" >&2; exit 2
    fi
done
if [[ "$TOPOLOGY" == all ]]; then topologies=(pair mesh3 chain3); else IFS=',' read -ra topologies <<< "$TOPOLOGY"; fi
for t in "${topologies[@]}"; do
    case "$t" in pair|mesh3|chain3) ;; *) echo "chaos.sh: unknown topology $t" >&2; exit 2 ;; esac
done

TARGET=${CARGO_TARGET_DIR:-$PWD/target}
echo "==> building the chaos test, tandem-node and tandem (release)"
cargo build --release --quiet -p tandem-node --bin tandem-node -p tandem-tui --bin tandem
TEST_BIN=$(cargo test --release --quiet -p tandem-node --test chaos --no-run --message-format=json \
    | grep '"kind":\["test"\]' | grep '"name":"chaos"' \
    | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
[[ -x "$TEST_BIN" ]] || { echo "chaos.sh: cannot find the chaos test binary" >&2; exit 1; }
if [[ -n "$BIN_DIR" ]]; then export TANDEM_BIN_DIR=$BIN_DIR; fi
if [[ -n "$OPS" ]]; then export CHAOS_OPS=$OPS; fi

OUT=$TARGET/chaos-runs
mkdir -p "$OUT"
rows=() failed=0
for t in "${topologies[@]}"; do
    for s in "${seeds[@]}"; do
        out=$OUT/$t-seed$s.out
        start=$(date +%s.%N)
        CHAOS_SEEDS=$s CHAOS_TOPOLOGY=$t "$TEST_BIN" --exact run_seeds --nocapture >"$out" 2>&1 || true
        secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
        line=$(grep -a '^CHAOS-RESULT' "$out" | tail -n 1 || true)
        if [[ -n "$line" ]]; then
            IFS=$'\t' read -r _ _ _ result _ first <<< "$line"
        else
            result=CRASH
            first="no result line; see $out: $(grep -av '^\s*$' "$out" | tail -n 1 | cut -c1-160)"
        fi
        [[ "$result" == ok ]] || failed=$((failed + 1))
        row=$(printf '%6s  %-8s  %-6s  %7s  %s' "$s" "$t" "$result" "$secs" "$first")
        echo "$row"
        rows+=("$row")
    done
done

echo
printf '%6s  %-8s  %-6s  %7s  %s\n' seed topology result seconds "first failure"
printf '%s\n' "${rows[@]}"
echo "$failed of ${#rows[@]} runs failed; outputs in $OUT, failure reports in $TARGET/tmp/chaos/"
[[ $failed -eq 0 ]]
