#!/usr/bin/env bash
# 20,000 x 4 KiB in 200 folders (by default) into an empty peer, each run on
# a freshly made ext4 file system (a loop-mounted image), beside `cp -a`,
# `cp -a` + `sync`, `rsync -a` and `rsync -a` + `sync` of the same tree, and
# the floor of an atomic, durable install (`node/examples/install_floor.rs`:
# each file written under a temp name in a folder of its own, made durable,
# renamed into place; in batches of 128 files as the node does, and in one
# batch), each on a fresh file system of its own in the same run. Prints
# each run, then the medians.
# Needs root (mkfs, mount).
#
#   bench/fresh_fs.sh                          # target/release, 3 runs
#   RUNS=5 BIN_DIRS="/a/release /b/release" bench/fresh_fs.sh   # A/B, alternating
#   DIRS=1000 PER_DIR=1000 SIZE=2048 IMG_SIZE=24G MKFS_OPTS="-N 3000000" \
#       RUNS=1 TIMEOUT=1800 POLL=1 \
#       bench/fresh_fs.sh                      # the million-file row (sync.sh case 10)
#
# Why: on this machine kind, ext4 spends much of a small-file copy scanning
# inodes freed in the last seconds (`recently_deleted` in the inode
# allocator), so a run right after a tree was deleted is 2-3x slower, for
# Tandem, rsync and cp alike; bench/sync.sh case 3 swings with it. A fresh
# file system per run has none.
#
# Environment: FLOOR (the install_floor binary; built here by default),
# RUNS=3, BIN_DIRS (space-separated; default target/release, not
# built here), IMG=/var/tmp/tandem-fresh-fs.img (a sparse image of IMG_SIZE=4G),
# MNT=/mnt/tandem-fresh-fs, TIMEOUT=300 (seconds per run), the tree: DIRS=200
# folders of PER_DIR=100 files of SIZE=4096 random bytes, POLL=0.05 (seconds
# between counts of B's "received" lines: Tandem's time is late by up to
# that; counting a million lines often would take a core from the nodes).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RUNS=${RUNS:-3}
BIN_DIRS=${BIN_DIRS:-$ROOT/target/release}
IMG=${IMG:-/var/tmp/tandem-fresh-fs.img}
MNT=${MNT:-/mnt/tandem-fresh-fs}
TIMEOUT=${TIMEOUT:-300}
DIRS=${DIRS:-200}
PER_DIR=${PER_DIR:-100}
SIZE=${SIZE:-4096}
IMG_SIZE=${IMG_SIZE:-4G}
MKFS_OPTS=${MKFS_OPTS:-}
FILES=$((DIRS * PER_DIR))
POLL=${POLL:-0.05}
if [[ -z "${FLOOR:-}" ]]; then
    cargo build --release -q -p tandem-node --example install_floor
    FLOOR=$ROOT/target/release/examples/install_floor
fi
SRC=$(mktemp -d /var/tmp/tandem-fresh-src.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    mountpoint -q "$MNT" && umount "$MNT"
    rm -rf "$SRC" "$IMG"
}
trap cleanup EXIT
[[ $(id -u) == 0 ]] || { echo "fresh_fs.sh: needs root (mkfs, mount)" >&2; exit 2; }
python3 - "$SRC/tree" "$DIRS" "$PER_DIR" "$SIZE" <<'PY'
import os, sys
root, dirs, per_dir, size = sys.argv[1], *map(int, sys.argv[2:])
for d in range(dirs):
    os.makedirs(f"{root}/d{d:04}", exist_ok=True)
    for f in range(per_dir):
        with open(f"{root}/d{d:04}/f{f:04}.bin", "wb") as fh:
            fh.write(os.urandom(size))
PY
mkdir -p "$MNT"
now() { date +%s.%N; }
fresh() {
    mountpoint -q "$MNT" && umount "$MNT"
    truncate -s "$IMG_SIZE" "$IMG"
    # shellcheck disable=SC2086 # options, split on purpose
    mkfs.ext4 -q -F $MKFS_OPTS "$IMG"
    mount -o loop "$IMG" "$MNT"
    cp -a "$SRC/tree" "$MNT/A"
    sync
}
# Times `$@` (a copy of $MNT/A to $MNT/C) on a fresh file system: prints the
# seconds for the copy and for the copy + sync.
timed_copy() {
    fresh
    local t0 t1 t2
    t0=$(now); "$@"; t1=$(now); sync; t2=$(now)
    echo "$(echo "$t1 - $t0" | bc) $(echo "$t2 - $t0" | bc)"
}
# Peak resident set of a running process, in MiB.
peak_mib() { awk '/VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
declare -A RESULTS
one_run() {
    local bin=$1 w=$MNT
    local cp_s cps_s rs_s rss_s fl_s fl1_s x
    read -r cp_s cps_s <<<"$(timed_copy cp -a "$w/A" "$w/C")"
    read -r rs_s rss_s <<<"$(timed_copy rsync -a "$w/A/" "$w/C/")"
    # The floor makes its files durable itself (its time includes that).
    read -r fl_s x <<<"$(timed_copy "$FLOOR" "$w/A" "$w/C" "$w/SC/tmp" 128)"
    read -r fl1_s x <<<"$(timed_copy "$FLOOR" "$w/A" "$w/C" "$w/SC/tmp")"
    fresh  # the copies' inodes are not left recently freed
    local ida idb pa pb t0 t1
    ida=$("$bin/tandem-node" --dir "$w/A" --state-dir "$w/SA" id 2>/dev/null | tail -1)
    idb=$("$bin/tandem-node" --dir "$w/B" --state-dir "$w/SB" id 2>/dev/null | tail -1)
    pa=$((20000 + RANDOM % 20000)); pb=$((pa + 1))
    RUST_LOG=info NO_COLOR=1 "$bin/tandem-node" --dir "$w/A" --state-dir "$w/SA" \
        --listen "127.0.0.1:$pa" --peer "$idb@127.0.0.1:$pb" >"$w/a.log" 2>&1 &
    local apid=$!; PIDS+=("$apid")
    local deadline=$(( $(date +%s) + TIMEOUT ))
    until grep -q "indexed " "$w/a.log"; do
        (( $(date +%s) < deadline )) || { echo "A never indexed" >&2; return 1; }
        sleep 0.05
    done
    sync
    t0=$(now)
    RUST_LOG=info NO_COLOR=1 "$bin/tandem-node" --dir "$w/B" --state-dir "$w/SB" \
        --listen "127.0.0.1:$pb" --peer "$ida@127.0.0.1:$pa" >"$w/b.log" 2>&1 &
    local bpid=$!; PIDS+=("$bpid")
    local n=0
    until (( n >= FILES )); do
        (( $(date +%s) < deadline )) || { echo "only $n files reached B" >&2; return 1; }
        sleep "$POLL"
        n=$(grep -c "received " "$w/b.log" || true)
    done
    sync
    t1=$(now)
    local rss_a rss_b
    rss_a=$(peak_mib "$apid"); rss_b=$(peak_mib "$bpid")
    kill "$apid" "$bpid"; wait "$apid" "$bpid" 2>/dev/null || true
    PIDS=()
    local files; files=$(find "$w/B" -type f -name 'f*.bin' | wc -l)
    local t; t=$(echo "$t1 - $t0" | bc)
    printf '%-34s cp -a %5.2f  +sync %5.2f  rsync -a %5.2f  +sync %5.2f  floor %5.2f (one batch %5.2f)  tandem %5.2f s = %4.2fx cp -a+sync  peak RSS A %s + B %s MiB  B files %d\n' \
        "$bin" "$cp_s" "$cps_s" "$rs_s" "$rss_s" "$fl_s" "$fl1_s" "$t" "$(echo "$t / $cps_s" | bc -l)" "$rss_a" "$rss_b" "$files"
    RESULTS[$bin]+="$cp_s $cps_s $rs_s $rss_s $t $rss_a $rss_b $fl_s $fl1_s;"
}
for ((r = 1; r <= RUNS; r++)); do
    for b in $BIN_DIRS; do
        echo -n "run $r: "
        one_run "$b"
    done
done
echo "medians of $RUNS runs:"
for b in $BIN_DIRS; do
    cols=()
    for i in 1 2 3 4 5 6 7 8 9; do
        cols+=("$(median $(tr ';' '\n' <<<"${RESULTS[$b]}" | awk -v i="$i" 'NF { print $i }'))")
    done
    printf '%-34s cp -a %5.2f  +sync %5.2f  rsync -a %5.2f  +sync %5.2f  floor %5.2f (one batch %5.2f)  tandem %5.2f s = %4.2fx cp -a+sync, %4.2fx rsync -a+sync, %4.2fx the floor  peak RSS A %s + B %s MiB\n' \
        "$b" "${cols[0]}" "${cols[1]}" "${cols[2]}" "${cols[3]}" "${cols[7]}" "${cols[8]}" "${cols[4]}" \
        "$(echo "${cols[4]} / ${cols[1]}" | bc -l)" "$(echo "${cols[4]} / ${cols[3]}" | bc -l)" "$(echo "${cols[4]} / ${cols[7]}" | bc -l)" "${cols[5]}" "${cols[6]}"
done
