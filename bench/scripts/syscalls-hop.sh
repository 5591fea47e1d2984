#!/usr/bin/env bash
# System calls per proxied request, counted by `strace -c -f` attached to each proxy while it
# serves N GET requests in absolute form (hop's six context headers) on one keep-alive connection
# to a local upstream: vexil-proxy with hop's configuration (fast path on, then off), bare pingora
# (bench/src/bin/bare-pingora.rs) and nginx (one added header, a keep-alive upstream). The counts
# say where the system half of hop's CPU per request goes; strace slows each call, so only the
# counts mean anything, not the times.
#
#   bench/scripts/syscalls-hop.sh                # builds the release binaries first
#   N=2000 NO_BUILD=1 bench/scripts/syscalls-hop.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
N=${N:-2000}
OUT=${OUT:-$root/target/syscalls-hop}
T=${CARGO_TARGET_DIR:-$root/target}/release
here="$root/bench/scripts"
mkdir -p "$OUT/nginx-tmp"
if [ -z "${NO_BUILD:-}" ]; then
    cargo build --release --manifest-path "$root/Cargo.toml" -p vexil-proxy -p vexil-bench \
        --bin vexil-proxy --bin bare-pingora --example hop_config >&2
fi
"$T/examples/hop_config" "$OUT"
cp "$OUT/proxy.toml" "$OUT/proxy-slow.toml"
printf '\n[downstream]\nfast_path = false\n' >>"$OUT/proxy-slow.toml"
printf '\n[downstream]\nfast_path = true\n' >>"$OUT/proxy.toml"
cat >"$OUT/nginx.conf" <<EOF
daemon off; master_process off; worker_processes 1; pid $OUT/nginx.pid; error_log $OUT/nginx.err warn;
events { worker_connections 4096; }
http {
  access_log off; keepalive_requests 1000000;
  client_body_temp_path $OUT/nginx-tmp; proxy_temp_path $OUT/nginx-tmp;
  fastcgi_temp_path $OUT/nginx-tmp; uwsgi_temp_path $OUT/nginx-tmp; scgi_temp_path $OUT/nginx-tmp;
  upstream echo { server 127.0.0.1:19100; keepalive 64; keepalive_requests 1000000; }
  server { listen 127.0.0.1:19101; location / { proxy_pass http://echo; proxy_http_version 1.1;
    proxy_set_header Connection ""; proxy_set_header vexil-flags "checkout=?1"; } }
}
EOF
python3 "$here/callgrind-upstream.py" 19100 &
up=$!
trap 'kill $up 2>/dev/null || true' EXIT
sleep 0.5

# one NAME CMD...: starts CMD, warms it up, counts its system calls over N requests.
one() {
    local name=$1
    shift
    "$@" >"$OUT/$name.log" 2>&1 &
    local p=$!
    for _ in $(seq 1 100); do
        python3 -c "import socket; socket.create_connection(('127.0.0.1', 19101), 0.2)" 2>/dev/null && break
        sleep 0.1
    done
    python3 "$here/callgrind-load.py" 19101 127.0.0.1:19100 200 >/dev/null
    strace -c -f -q -o "$OUT/$name.strace" -p "$p" &
    local s=$!
    sleep 1
    python3 "$here/callgrind-load.py" 19101 127.0.0.1:19100 "$N" >/dev/null
    sleep 0.5
    kill -INT "$s"
    wait "$s" || true
    kill -INT "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
    # strace -c: "% time seconds usecs/call calls errors syscall", then a total line.
    echo "== $name: system calls per request (N=$N)"
    awk -v n="$N" 'NF >= 5 && $1 ~ /^[0-9.]+$/ {
            printf "  %-16s %6.2f%s\n", $NF, $4 / n, (NF == 6 ? "  (" $5 " errors)" : "") }' \
        "$OUT/$name.strace"
}

vexil=("$T/vexil-proxy" --flags-file "$OUT/flags.json" --threads 1
    --outbound-addr 127.0.0.1:19101 --admin-addr 127.0.0.1:19102 --grpc-addr 127.0.0.1:19103
    --sync-addr 127.0.0.1:19104 --ofrep-addr 127.0.0.1:19105 --shutdown-grace-secs 0)
for who in ${WHO:-vexil-fast vexil-pingora bare-pingora nginx}; do
    case $who in
    vexil-fast) one "$who" "${vexil[@]}" --config "$OUT/proxy.toml" ;;
    vexil-pingora) one "$who" "${vexil[@]}" --config "$OUT/proxy-slow.toml" ;;
    bare-pingora) one "$who" "$T/bare-pingora" 127.0.0.1:19101 127.0.0.1:19100 ;;
    nginx) one "$who" /usr/sbin/nginx -c "$OUT/nginx.conf" ;;
    esac
done
