# Shared by bench/index.sh and bench/fetch.sh (sourced, not run).
# Expects the caller to define `die` and to set BUILD and BIN.

# Gives the `tandem` client a key of its own in DIR (made on first use; the
# first client over loopback to a fresh node becomes its admin) instead of
# ~/.config/tandem/client.key, and no pinning of node ids per address (each
# run starts nodes with new keys on reused ports). Clients from before TLS
# (db5f45b) ignore both variables.
client_env() {  # DIR
    export TANDEM_IDENTITY=$1/client.key
    export TANDEM_KNOWN_NODES=/dev/null
}

# User+system CPU seconds the process PID has used so far.
cpu_s() {
    awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"
}

# Warns when something else keeps the CPUs busy (sampled 0.5 s).
busy_check() {
    local a b busy
    a=$(head -1 /proc/stat)
    sleep 0.5
    b=$(head -1 /proc/stat)
    busy=$(awk -v a="$a" -v b="$b" 'BEGIN {
        n = split(a, x); split(b, y); t = 0
        for (i = 2; i <= n; i++) t += y[i] - x[i]
        idle = (y[5] - x[5]) + (y[6] - x[6])
        printf "%d", (t > 0 ? 100 * (t - idle) / t : 0) }')
    if ((busy > 20)); then
        echo "   WARNING: CPUs ${busy}% busy with other work: numbers are unreliable" >&2
    fi
}

# Builds the release binaries when BUILD=1, then copies them into a new
# scratch folder (SCRATCH, made from the mktemp template $1) and points BIN
# there, so a concurrent `cargo build` cannot swap binaries mid-run. Sets
# BUILT to the binaries' build time.
private_binaries() {
    if [[ $BUILD == 1 ]]; then
        echo "== building (release)"
        cargo build --release -q -p tandem-node -p tandem-tui
    fi
    [[ -x $BIN/tandem-node && -x $BIN/tandem ]] || die "no binaries in $BIN (run with BUILD=1)"
    BUILT=$(date -r "$BIN/tandem-node" '+%F %T')
    SCRATCH=$(mktemp -d "$1")
    mkdir "$SCRATCH/bin"
    cp "$BIN/tandem-node" "$BIN/tandem" "$SCRATCH/bin/"
    BIN=$SCRATCH/bin
}
