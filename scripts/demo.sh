#!/usr/bin/env bash
# Tandem demo launcher.
#
#   scripts/demo.sh              build, start two nodes on sample folders, open the UI on A
#   scripts/demo.sh --headless   two nodes on fresh folders of their own, then a
#                                scripted tour that checks each step
#   scripts/demo.sh --clean      start the UI's demo from fresh sample folders
#
# Nodes: A on 127.0.0.1:7001 (demo/serverA), B on 127.0.0.1:7002 (demo/serverB);
# logs in demo/logs/. The headless tour uses demo/tour/ instead, made afresh
# each time, so what someone did in the UI never changes what it checks.
# One demo runs at a time (they share the ports). The nodes this script starts
# are stopped (by PID) when the UI quits, the tour ends, or the script is
# interrupted.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEMO=$ROOT/demo
HEADLESS=0
CLEAN=0
for arg in "$@"; do
    case "$arg" in
        --headless) HEADLESS=1 ;;
        --clean) CLEAN=1 ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "demo.sh: unknown option $arg (try --help)" >&2; exit 2 ;;
    esac
done
A_ADDR=${TANDEM_DEMO_A:-127.0.0.1:7001}
B_ADDR=${TANDEM_DEMO_B:-127.0.0.1:7002}
BIG_MB=${TANDEM_DEMO_BIG_MB:-300}

# Before anything is cleaned or a log truncated: is another demo running?
mkdir -p "$ROOT/target"
LOCK=$ROOT/target/demo.lock
exec 9>>"$LOCK"
if ! flock -n 9; then
    echo "demo.sh: another demo is running ($(cat "$LOCK" 2>/dev/null || echo "see: pgrep -af demo.sh")); stop it first (q in its UI, or Ctrl-C)" >&2
    exit 1
fi
echo "PID $$, started $(date +%T)" >"$LOCK"
if ((CLEAN == 1)); then rm -rf "$DEMO"; fi
if ((HEADLESS == 1)); then
    # The tour checks what the sample files do: it starts from them.
    DEMO=$DEMO/tour
    rm -rf "$DEMO"
fi

echo "==> building release binaries"
cargo build --release --quiet --bin tandem-node --bin tandem
BIN=$ROOT/target/release
# The demo's own client key (not the user's): it is the first client of the
# demo's nodes (over loopback), so it becomes their admin with nothing to type.
export TANDEM_IDENTITY=$DEMO/client.key

A=$DEMO/serverA
B=$DEMO/serverB
mkdir -p "$A/docs/notes" "$A/images" "$B/reports" "$DEMO/logs"
if [[ ! -f "$A/README.txt" ]]; then
    echo "==> creating sample files"
    printf 'Hello from server A.\nEdit me on either side and watch the other.\n' > "$A/README.txt"
    printf '# Meeting notes\n\n- ship the demo\n- lock files before editing\n' > "$A/docs/notes/meeting.md"
    # A 1x1 PNG and a one-page PDF, written byte for byte.
    printf '\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\xcf\xc0\xf0\x1f\x00\x05\x00\x01\xff\xa5\xf6E@\x00\x00\x00\x00IEND\xaeB`\x82' > "$A/images/pixel.png"
    printf '%%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj 2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj 3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 200 100]>>endobj\ntrailer<</Root 1 0 R>>\n%%%%EOF\n' > "$B/reports/q3.pdf"
    printf 'Only on B at first.\n' > "$B/only-on-b.txt"
    printf 'Only on A at first.\n' > "$A/only-on-a.txt"
    # The same file with different content on each side: the newer one wins,
    # the other is kept in .tandem/conflicts/ on the node that had it.
    printf 'plan, version from A\n' > "$A/plan.txt"
    touch -d '1 hour ago' "$A/plan.txt"
    printf 'plan, version from B (newer)\n' > "$B/plan.txt"
    echo "==> making a ${BIG_MB} MB file on A"
    head -c "$((BIG_MB * 1024 * 1024))" /dev/urandom > "$A/big.bin"
fi

PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Each node's key is made on first use; naming a peer's id in --peer
# trusts it, so the two nodes accept only each other.
A_ID=$("$BIN/tandem-node" --dir "$A" id)
B_ID=$("$BIN/tandem-node" --dir "$B" id)
echo "==> starting node A ($A_ID) on $A_ADDR and node B ($B_ID) on $B_ADDR (logs in ${DEMO#"$ROOT"/}/logs/)"
"$BIN/tandem-node" --dir "$A" --name A --listen "$A_ADDR" --peer "$B_ID@$B_ADDR" 2>"$DEMO/logs/serverA.log" &
PIDS+=($!)
"$BIN/tandem-node" --dir "$B" --name B --listen "$B_ADDR" --peer "$A_ID@$A_ADDR" 2>"$DEMO/logs/serverB.log" &
PIDS+=($!)

t() { "$BIN/tandem" "$@"; }
# wait_for DESCRIPTION SECONDS COMMAND...: polls COMMAND until it succeeds.
wait_for() {
    local what=$1 secs=$2
    shift 2
    local deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            echo "FAILED: $what (waited ${secs}s); see ${DEMO#"$ROOT"/}/logs/" >&2
            return 1
        fi
        for p in "${PIDS[@]}"; do
            kill -0 "$p" 2>/dev/null || { echo "FAILED: a node exited; see ${DEMO#"$ROOT"/}/logs/" >&2; return 1; }
        done
        sleep 0.1
    done
}
wait_for "node A answers" 60 t --node "$A_ADDR" list
wait_for "node B answers" 60 t --node "$B_ADDR" list

if ((HEADLESS == 0)); then
    echo "==> opening the UI on node A (q quits; the nodes stop with it)"
    t --node "$A_ADDR"
    exit 0
fi

step() { echo; echo "==> $*"; }
ok() { echo "    ok: $*"; }
in_sync() { cmp -s "$A/$1" "$B/$1"; }

step "waiting for the two folders to converge (includes the ${BIG_MB} MB file)"
wait_for "big.bin reaches B" 300 in_sync big.bin
wait_for "only-on-a.txt reaches B" 30 in_sync only-on-a.txt
wait_for "only-on-b.txt reaches A" 30 in_sync only-on-b.txt
wait_for "plan.txt converges" 30 in_sync plan.txt
grep -q "version from B" "$A/plan.txt" || { echo "FAILED: plan.txt: the newer version (B) should win" >&2; exit 1; }
compgen -G "$A/.tandem/conflicts/plan.conflict-*" >/dev/null || { echo "FAILED: A's losing plan.txt was not kept in conflicts" >&2; exit 1; }
ok "both folders hold the same files; plan.txt: B's newer version won, A's kept as $(ls "$A/.tandem/conflicts/")"

step "the merged table (tandem --node $A_ADDR list)"
t --node "$A_ADDR" list

step "the losing plan.txt, kept on A, as any node lists it (tandem --node $B_ADDR conflicts)"
t --node "$B_ADDR" conflicts
t --node "$B_ADDR" conflicts --json | grep -q '"path": "plan.txt"' || { echo "FAILED: B does not list A's conflict copy of plan.txt" >&2; exit 1; }
ok "A's copy is listed through B, with the ID that restores or discards it"

step "create a file on B, see it on A"
echo "made on B at $(date +%T)" > "$B/hello-from-b.txt"
wait_for "hello-from-b.txt reaches A" 10 in_sync hello-from-b.txt
ok "A has hello-from-b.txt: $(cat "$A/hello-from-b.txt")"

step "lock README.txt through A, edit it on B: the change is held"
t --node "$A_ADDR" --name demo lock --path README.txt
before=$(cat "$A/README.txt")
echo "edited on B while locked" >> "$B/README.txt"
has_held() { local h; h=$(t --node "$A_ADDR" held --json) && grep -q README.txt <<<"$h"; }
wait_for "B holds the change" 10 has_held
t --node "$A_ADDR" held
[[ "$(cat "$A/README.txt")" == "$before" ]] || { echo "FAILED: A's README.txt changed while locked" >&2; exit 1; }
ok "A's copy is unchanged while locked"

step "unlock: the held change is released and arrives on A"
t --node "$A_ADDR" --name demo unlock --path README.txt
wait_for "the released change reaches A" 10 in_sync README.txt
ok "A now has: $(tail -1 "$A/README.txt")"

step "fetch a file through A's cache, twice (--force replaces the first copy), and show the cache"
mkdir -p "$DEMO/downloads"
rm -f "$DEMO/downloads/meeting.md"
t --node "$A_ADDR" fetch docs/notes/meeting.md --to "$DEMO/downloads"
t --node "$A_ADDR" fetch docs/notes/meeting.md --to "$DEMO/downloads" --force
t --node "$A_ADDR" cache
cache_json=$(t --node "$A_ADDR" cache --json)
grep -q '"hits": [1-9]' <<<"$cache_json" || { echo "FAILED: the second fetch was not a cache hit" >&2; exit 1; }
ok "second fetch served from the cache"

step "put a local file into the cluster through A, see it on B"
echo "deposited at $(date +%T)" > "$DEMO/deposit.txt"
t --node "$A_ADDR" --name demo put "$DEMO/deposit.txt" --as inbox/deposit.txt --force
wait_for "inbox/deposit.txt reaches B" 10 in_sync inbox/deposit.txt
ok "B has inbox/deposit.txt"

step "the nodes"
t --node "$A_ADDR" nodes

echo
echo "tour complete: every step behaved"
