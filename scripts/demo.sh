#!/usr/bin/env bash
# Tandem demo: builds the binaries, starts two nodes on sample folders under
# demo/, and shows the merged file table. Stops the nodes it started (by PID)
# on exit or Ctrl-C. Usage: scripts/demo.sh [--clean]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEMO=$ROOT/demo
[[ "${1:-}" == "--clean" ]] && rm -rf "$DEMO"

cargo build --release --bin tandem-node --bin tandem
BIN=$ROOT/target/release
mkdir -p "$DEMO/serverA/docs" "$DEMO/serverB" "$DEMO/logs"
[[ -f "$DEMO/serverA/readme.txt" ]] || echo "Hello from server A" > "$DEMO/serverA/readme.txt"
[[ -f "$DEMO/serverA/docs/notes.md" ]] || printf '# Notes\n\nSynced by Tandem.\n' > "$DEMO/serverA/docs/notes.md"
[[ -f "$DEMO/serverB/only-on-b.txt" ]] || echo "Only on B" > "$DEMO/serverB/only-on-b.txt"

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

"$BIN/tandem-node" --dir "$DEMO/serverA" --name A --listen 127.0.0.1:7001 --peer 127.0.0.1:7002 \
    2>"$DEMO/logs/serverA.log" & PIDS+=($!)
"$BIN/tandem-node" --dir "$DEMO/serverB" --name B --listen 127.0.0.1:7002 --peer 127.0.0.1:7001 \
    2>"$DEMO/logs/serverB.log" & PIDS+=($!)

for addr in 127.0.0.1:7001 127.0.0.1:7002; do
    for _ in $(seq 1 100); do
        "$BIN/tandem" --node "$addr" list >/dev/null 2>&1 && break
        sleep 0.1
    done
done
echo "== node A (127.0.0.1:7001) =="
"$BIN/tandem" --node 127.0.0.1:7001 list
echo "== node B (127.0.0.1:7002) =="
"$BIN/tandem" --node 127.0.0.1:7002 list
echo
echo "Nodes are running (logs in demo/logs/). Edit files under demo/serverA or demo/serverB"
echo "and run: $BIN/tandem --node 127.0.0.1:7001 list     Press Ctrl-C to stop both nodes."
wait
