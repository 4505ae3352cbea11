#!/usr/bin/env bash
# Fuzzing tandem-common with cargo-fuzz (the targets are in fuzz/fuzz_targets/).
#
#   scripts/fuzz.sh                          every target, 20 s each
#   scripts/fuzz.sh --seconds 3600 frame     one target for an hour
#   scripts/fuzz.sh --seconds 600 frame path several targets, 10 minutes each
#   scripts/fuzz.sh --list                   the targets
#
# Options: --seconds N per target (default 20); --jobs N targets at a time
# (default 1); --sanitizer address|none (default address: AddressSanitizer,
# slower to build and run; CI uses none to fit its time, safe Rust needing
# it little). Each sanitizer builds into its own fuzz/target/<sanitizer>/.
#
# Bounded: each target runs N seconds (libFuzzer's -max_total_time), with
# -timeout=10 per input and a hard stop at N+120 s; the build stops after
# 20 minutes. Installs cargo-fuzz if missing. Compiler: a nightly rustup
# already has, else `rustup toolchain install nightly --profile minimal`,
# else stable with RUSTC_BOOTSTRAP=1 (the nightly flags cargo-fuzz passes
# work there, AddressSanitizer included; checked with stable 1.95).
#
# Inputs: each run reads the committed seeds in fuzz/corpus/<target>/ and
# writes what it discovers to fuzz/target/corpus/<target>/ (kept between
# runs, never committed, so the next run starts from there). A failing
# input lands in fuzz/artifacts/<target>/; replay it with
#   cargo +nightly fuzz run <target> fuzz/artifacts/<target>/<file>
# The script runs every target asked for, then exits 1 if any failed.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_EACH=20 JOBS=1 SANITIZER=address
TARGETS=()
usage() { sed -n '2,28p' "$0"; exit "${1:-0}"; }
while [[ $# -gt 0 ]]; do
    case "$1" in
        --seconds) SECONDS_EACH=${2:?--seconds needs a value}; shift 2 ;;
        --jobs) JOBS=${2:?--jobs needs a value}; shift 2 ;;
        --sanitizer) SANITIZER=${2:?--sanitizer needs a value}; shift 2 ;;
        --list) sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^tandem-fuzz$'; exit 0 ;;
        -h|--help) usage 0 ;;
        -*) echo "fuzz.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
        *) TARGETS+=("$1"); shift ;;
    esac
done
[[ "$SECONDS_EACH" =~ ^[1-9][0-9]*$ ]] || { echo "fuzz.sh: --seconds wants a whole number" >&2; exit 2; }
[[ "$JOBS" =~ ^[1-9][0-9]*$ ]] || { echo "fuzz.sh: --jobs wants a whole number" >&2; exit 2; }
case "$SANITIZER" in address|none) ;; *) echo "fuzz.sh: --sanitizer address or none" >&2; exit 2 ;; esac
ALL=$(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^tandem-fuzz$')
if [[ ${#TARGETS[@]} -eq 0 ]]; then mapfile -t TARGETS <<< "$ALL"; fi
for t in "${TARGETS[@]}"; do
    grep -qx "$t" <<< "$ALL" || { echo "fuzz.sh: no target $t (try --list)" >&2; exit 2; }
done

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz"
    cargo install cargo-fuzz --locked --quiet
fi

nightly=$(rustup toolchain list | sed -n 's/^\(nightly[^ ]*\).*/\1/p' | head -n 1)
if [[ -z "$nightly" ]] && timeout 300 rustup toolchain install nightly --profile minimal >/dev/null 2>&1; then
    nightly=nightly
fi
if [[ -n "$nightly" ]]; then
    TOOLCHAIN=+$nightly
else
    echo "==> no nightly toolchain: using stable with RUSTC_BOOTSTRAP=1"
    TOOLCHAIN=+stable
    export RUSTC_BOOTSTRAP=1
fi
echo "==> cargo $TOOLCHAIN fuzz ($(rustc "$TOOLCHAIN" --version))"

# Its own target dir, whatever CARGO_TARGET_DIR says: other RUSTFLAGS, and
# the main workspace's build must not share it.
BUILD=(-s "$SANITIZER" --target-dir "fuzz/target/$SANITIZER")
echo "==> building ${#TARGETS[@]} fuzz targets (release, sanitizer: $SANITIZER)"
start=$(date +%s)
if [[ ${#TARGETS[@]} -eq $(wc -l <<< "$ALL") ]]; then
    timeout 1200 cargo "$TOOLCHAIN" fuzz build "${BUILD[@]}"
else
    for t in "${TARGETS[@]}"; do timeout 1200 cargo "$TOOLCHAIN" fuzz build "${BUILD[@]}" "$t"; done
fi
echo "==> built in $(($(date +%s) - start)) s"

# Runs one target; its log goes to fuzz/target/fuzz-<target>.log and one
# line of result to fuzz/target/fuzz-<target>.result.
run_one() {
    local t=$1 work=fuzz/target/corpus/$1 log=fuzz/target/fuzz-$1.log runs speed
    mkdir -p "$work" "fuzz/artifacts/$t"
    if timeout $((SECONDS_EACH + 120)) cargo "$TOOLCHAIN" fuzz run "${BUILD[@]}" "$t" \
        "$work" "fuzz/corpus/$t" -- -max_total_time="$SECONDS_EACH" -timeout=10 \
        -print_final_stats=1 -print_funcs=0 >"$log" 2>&1; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
        speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
        printf '%-16s ok   %10s runs %8s/s\n' "$t" "${runs:-?}" "${speed:-?}" >"${log%.log}.result"
    else
        printf '%-16s FAILED (log: %s)\n' "$t" "$log" >"${log%.log}.result"
        grep -v '^#[0-9]' "$log" | tail -n 40 >&2 || true
    fi
}

echo "==> running each target ${SECONDS_EACH} s, $JOBS at a time"
rm -f fuzz/target/fuzz-*.result
running=0
for t in "${TARGETS[@]}"; do
    echo "==> $t"
    run_one "$t" &
    running=$((running + 1))
    if [[ $running -ge $JOBS ]]; then
        wait -n || true
        running=$((running - 1))
    fi
done
wait

echo "==> fuzzing summary"
failed=()
for t in "${TARGETS[@]}"; do
    line=$(cat "fuzz/target/fuzz-$t.result" 2>/dev/null || echo "$t FAILED (no result)")
    echo "  $line"
    if [[ "$line" == *FAILED* ]]; then failed+=("$t"); fi
done
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "fuzz.sh: failing inputs are in fuzz/artifacts/ (${failed[*]})" >&2
    exit 1
fi
