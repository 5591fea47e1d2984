#!/usr/bin/env bash
# Instructions per proxied request, counted by callgrind (repeatable whatever else the machine
# does): vexil-proxy with `hop`'s configuration (50 flags, 20 injected, context from 6 headers)
# beside bare pingora (bench/src/bin/bare-pingora.rs), each proxying GET requests in absolute form
# on one keep-alive connection to a local upstream. Each proxy runs twice, with N1 and N2
# requests; per request = (I(N2) - I(N1)) / (N2 - N1), so start-up and shutdown cancel out.
#
#   bench/scripts/callgrind-hop.sh            # builds the release binaries first
#   N1=500 N2=2500 OUT=/tmp/cg bench/scripts/callgrind-hop.sh
#   USERS=10000 bench/scripts/callgrind-hop.sh   # a new x-user-id per request (decision cache misses)
#   CACHE_ENTRIES=0 WHO=vexil bench/scripts/callgrind-hop.sh   # the decision cache off
#   FAST_PATH=0 WHO=vexil bench/scripts/callgrind-hop.sh   # [downstream] fast_path = false
#   SHADOW_RATIO=0.01 WHO=vexil bench/scripts/callgrind-hop.sh   # a proposal per injected flag,
#       sampled at 1 % (0: the same sidecar without proposals); the sidecar serves a persisted
#       snapshot with control out of reach, and the instructions in `Injector::inject` (the
#       decisions) are printed too, free of the reconnection attempts' noise
#   PROFILE=debug NO_BUILD=1 ...                                  # the debug binaries
#
# Leaves the callgrind files in $OUT (callgrind_annotate --inclusive=yes $OUT/vexil-2500.out).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
N1=${N1:-500}
N2=${N2:-2500}
USERS=${USERS:-1}
OUT=${OUT:-$root/target/callgrind-hop}
PROFILE=${PROFILE:-release}
T=${CARGO_TARGET_DIR:-$root/target}/$PROFILE
here="$root/bench/scripts"
mkdir -p "$OUT"
if [ -z "${NO_BUILD:-}" ]; then
    cargo build --release --manifest-path "$root/Cargo.toml" -p vexil-proxy -p vexil-bench \
        --bin vexil-proxy --bin bare-pingora --example hop_config >&2
fi
"$T/examples/hop_config" "$OUT"
# CACHE_ENTRIES=0: the decision cache off.
if [ -n "${CACHE_ENTRIES:-}" ]; then
    printf '\n[cache]\nmax_entries = %s\n' "$CACHE_ENTRIES" >>"$OUT/proxy.toml"
fi
# FAST_PATH=0: the HTTP/1.1 fast path off (every request through pingora's proxy); on by default.
if [ "${FAST_PATH:-1}" = 0 ]; then
    printf '\n[downstream]\nfast_path = false\n' >>"$OUT/proxy.toml"
fi
python3 "$here/callgrind-upstream.py" 19100 &
up=$!
trap 'kill $up 2>/dev/null || true' EXIT
sleep 0.5

# one NAME N CMD...: runs CMD under callgrind, sends N requests, prints the instructions counted.
one() {
    local name=$1 n=$2
    shift 2
    valgrind --tool=callgrind --callgrind-out-file="$OUT/$name-$n-$USERS.out" "$@" >"$OUT/$name-$n-$USERS.log" 2>&1 &
    local p=$!
    for _ in $(seq 1 600); do
        python3 -c "import socket; socket.create_connection(('127.0.0.1', 19101), 0.2)" 2>/dev/null && break
        sleep 0.2
    done
    sleep 2
    python3 "$here/callgrind-load.py" 19101 127.0.0.1:19100 "$n" "$USERS" >&2
    kill -INT "$p"
    wait "$p" || true
    grep -h "^summary:\|^totals:" "$OUT/$name-$n-$USERS.out" | tail -1 | awk '{print $2}'
}

# inject NAME N: the instructions counted in Injector::inject, callees included.
inject() {
    callgrind_annotate --inclusive=yes --threshold=100 "$OUT/$1-$2-$USERS.out" 2>/dev/null |
        grep 'Injector::inject ' | head -1 | awk '{gsub(",", "", $1); print $1}'
}

for who in ${WHO:-vexil pingora}; do
    if [ "$who" = vexil ] && [ -n "${SHADOW_RATIO:-}" ]; then
        # The persisted snapshot (and proposals) hop_config wrote; control never answers.
        cmd=("$T/vexil-proxy" --control quic://127.0.0.1:9 --environment hop --token bench
            --ca-file "$OUT/tls/ca.pem" --state-dir "$OUT/state" --usage-interval-secs 0
            --config "$OUT/proxy.toml" --threads 1
            --outbound-addr 127.0.0.1:19101 --admin-addr 127.0.0.1:19102 --grpc-addr 127.0.0.1:19103
            --sync-addr 127.0.0.1:19104 --ofrep-addr 127.0.0.1:19105 --shutdown-grace-secs 0)
    elif [ "$who" = vexil ]; then
        cmd=("$T/vexil-proxy" --flags-file "$OUT/flags.json" --config "$OUT/proxy.toml" --threads 1
            --outbound-addr 127.0.0.1:19101 --admin-addr 127.0.0.1:19102 --grpc-addr 127.0.0.1:19103
            --sync-addr 127.0.0.1:19104 --ofrep-addr 127.0.0.1:19105 --shutdown-grace-secs 0)
    else
        cmd=("$T/bare-pingora" 127.0.0.1:19101 127.0.0.1:19100)
    fi
    a=$(one "$who" "$N1" "${cmd[@]}")
    b=$(one "$who" "$N2" "${cmd[@]}")
    echo "$who: $(((b - a) / (N2 - N1))) instructions per request ($a at $N1, $b at $N2)"
    if [ "$who" = vexil ] && [ -n "${SHADOW_RATIO:-}" ]; then
        ia=$(inject "$who" "$N1")
        ib=$(inject "$who" "$N2")
        echo "$who: $(((ib - ia) / (N2 - N1))) instructions per request in Injector::inject ($ia at $N1, $ib at $N2)"
    fi
done
