#!/usr/bin/env bash
# Make sure the machine has what the Vexil build and test suite need:
#   - PostgreSQL on 127.0.0.1:5432 (trust auth, database `test`)
#   - Redis on 127.0.0.1:6379
#   - protox (for the Rust OpenFeature test client) and the Python OpenFeature clients
#   - Node.js with the JavaScript OpenFeature clients (the pod-in-a-box tests) and playwright-core
#   - Chromium (Debian's package), driven by playwright-core in the console tests
#   - promtool (Debian's `prometheus` package), for scripts/validate-monitoring.sh
# Either service is installed from the distribution's packages (apt-get, as root or with
# passwordless sudo) when it is missing, and started when it is down. The build itself needs only
# cargo and a C compiler (see shims/libz-ng-sys).
#
# Idempotent: does nothing but report when everything is already there.
# Prints one short line per thing it found or did.
#
# Exit status:
#   0  everything needed is there (or, outside CI, a service is down and was
#      only warned about)
#   1  (with CI=true) a service is down and could not be installed or started
set -euo pipefail

log()  { printf 'ensure-deps: %s\n' "$*"; }
warn() { printf 'ensure-deps: WARNING: %s\n' "$*" >&2; }
err()  { printf 'ensure-deps: ERROR: %s\n' "$*" >&2; }

is_ci() {
    case "${CI:-}" in
        true | TRUE | True | 1 | yes) return 0 ;;
        *) return 1 ;;
    esac
}

failures=0
WAIT_SECS="${ENSURE_DEPS_WAIT_SECS:-30}"

# Run a command as root: directly when we are root, else through passwordless
# sudo. Returns 127 when neither is possible.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
        sudo -n "$@"
    else
        return 127
    fi
}

can_be_root() {
    [ "$(id -u)" -eq 0 ] && return 0
    command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1
}

# A service was not reachable and could not be brought up.
service_down() {
    if is_ci; then
        err "$1"
        failures=$((failures + 1))
    else
        warn "$1 (continuing; tests that need it will say so)"
    fi
}

# ------------------------------------------------------------ packages ----
# apt_install PKG...: install Debian packages (no questions, waiting for a held dpkg lock).
# Returns 1, with the reason printed, when that is not possible here.
apt_install() {
    if ! command -v apt-get >/dev/null 2>&1 || ! can_be_root; then
        warn "cannot install $* here (needs apt-get, and root or passwordless sudo)"
        return 1
    fi
    log "installing $* with apt-get"
    local aptlog
    aptlog="$(mktemp)"
    if as_root env DEBIAN_FRONTEND=noninteractive apt-get -q update </dev/null >"$aptlog" 2>&1 \
        && as_root env DEBIAN_FRONTEND=noninteractive apt-get -q -y \
            -o DPkg::Lock::Timeout=300 install --no-install-recommends "$@" \
            </dev/null >>"$aptlog" 2>&1; then
        rm -f "$aptlog"
        return 0
    fi
    warn "'apt-get install $*' failed; last output:"
    tail -n 20 "$aptlog" | sed 's/^/    /' >&2
    rm -f "$aptlog"
    return 1
}

# A PostgreSQL that this script installed gets what the tests expect of the machine's own: trust
# authentication on the loopback addresses and a database `test`. Only ever done right after
# installing it here, never to a server someone else set up.
configure_fresh_postgres() {
    local hba
    hba="$(ls /etc/postgresql/*/main/pg_hba.conf 2>/dev/null | head -n1)"
    [ -n "$hba" ] || return 1
    as_root sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
    # shellcheck disable=SC2046
    as_root pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main reload \
        </dev/null >/dev/null 2>&1 || true
}

# ----------------------------------------------------------- services ----
pg_up() {
    command -v pg_isready >/dev/null 2>&1 || return 1
    pg_isready -q -h 127.0.0.1 -p 5432 -t 2 </dev/null >/dev/null 2>&1
}

redis_up() {
    command -v redis-cli >/dev/null 2>&1 || return 1
    local reply
    reply="$(timeout 5 redis-cli -h 127.0.0.1 -p 6379 ping </dev/null 2>/dev/null || true)"
    [ "$reply" = "PONG" ]
}

# wait_for NAME CHECK_FN: poll CHECK_FN for up to WAIT_SECS seconds.
wait_for() {
    local name="$1" check="$2" i
    for ((i = 0; i < WAIT_SECS; i++)); do
        if "$check"; then
            log "$name: started, answering after ~${i}s"
            return 0
        fi
        sleep 1
    done
    "$check" && { log "$name: started, answering after ~${WAIT_SECS}s"; return 0; }
    return 1
}

ensure_postgres() {
    if pg_up; then
        log "postgresql: up on 127.0.0.1:5432"
        return 0
    fi
    local fresh=false
    if ! command -v pg_ctlcluster >/dev/null 2>&1 || [ ! -d /etc/postgresql ]; then
        if apt_install postgresql && configure_fresh_postgres; then
            fresh=true
        fi
    fi
    if ! command -v pg_isready >/dev/null 2>&1; then
        service_down "postgresql: pg_isready not found; cannot check or start PostgreSQL"
        return 0
    fi
    if ! command -v pg_ctlcluster >/dev/null 2>&1 || [ ! -d /etc/postgresql ]; then
        service_down "postgresql: not answering on 127.0.0.1:5432 and pg_ctlcluster/etc/postgresql not found to start it"
        return 0
    fi
    log "postgresql: not answering on 127.0.0.1:5432, starting it"
    local out
    out="$(mktemp)"
    # Output goes to a file, not a pipe: a daemon holding our pipe would hang callers.
    # The unquoted $(ls ...) is deliberate: it is the machine's documented start command.
    # shellcheck disable=SC2046
    if ! pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start \
            </dev/null >"$out" 2>&1; then
        # "already running" style failures are fine if it then answers.
        sed 's/^/    /' "$out" >&2
    fi
    rm -f "$out"
    if wait_for postgresql pg_up; then
        if $fresh; then
            psql -h 127.0.0.1 -U postgres -d postgres -qc 'CREATE DATABASE test' </dev/null >/dev/null 2>&1 || true
        fi
        return 0
    fi
    service_down "postgresql: still not answering on 127.0.0.1:5432 after ${WAIT_SECS}s"
}

ensure_redis() {
    if redis_up; then
        log "redis: up on 127.0.0.1:6379"
        return 0
    fi
    if ! command -v redis-server >/dev/null 2>&1; then
        apt_install redis-server || true
    fi
    if ! command -v redis-cli >/dev/null 2>&1; then
        service_down "redis: redis-cli not found; cannot check or start Redis"
        return 0
    fi
    if ! command -v redis-server >/dev/null 2>&1; then
        service_down "redis: not answering on 127.0.0.1:6379 and redis-server not found to start it"
        return 0
    fi
    log "redis: not answering on 127.0.0.1:6379, starting it"
    mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
    local out
    out="$(mktemp)"
    if ! redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
            --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log \
            </dev/null >"$out" 2>&1; then
        sed 's/^/    /' "$out" >&2
    fi
    rm -f "$out"
    if wait_for redis redis_up; then
        return 0
    fi
    service_down "redis: still not answering on 127.0.0.1:6379 after ${WAIT_SECS}s (log: /var/log/redis/ci.log)"
}

# The real OpenFeature Python clients the sidecar is tested against (proxy/tests/openfeature.rs),
# pinned, in a virtualenv from PyPI (~/.cache/vexil/pytools, or $VEXIL_PYTOOLS).
ensure_openfeature_clients() {
    # shellcheck source=scripts/pytools.sh
    . "$(dirname "${BASH_SOURCE[0]}")/pytools.sh"
    if pytools_install openfeature-sdk==0.10.0 openfeature-provider-flagd==0.6.1 \
            openfeature-provider-ofrep==0.3.0; then
        log "openfeature clients: $PYTOOLS"
        return 0
    fi
    service_down "openfeature clients: could not install them into $PYTOOLS"
}

# A `protoc` for the Rust OpenFeature test client (proxy/tests/clients/rust, outside the workspace),
# whose dependency runs prost-build: protox's protoc-compatible CLI, built once from crates.io into
# .tools/. Vexil's own protobuf code uses protox as a library and needs nothing.
ensure_protox() {
    local root
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    if [ -x "$root/.tools/bin/protox" ]; then
        log "protox: $root/.tools/bin/protox"
        return 0
    fi
    log "protox: installing into $root/.tools (once)"
    if cargo install protox@0.10.0 --features bin --locked --root "$root/.tools" --quiet; then
        return 0
    fi
    service_down "protox: cargo install failed"
}

# The stock JavaScript OpenFeature providers the pod-in-a-box tests run (control/tests/pod.rs),
# pinned by control/tests/pod/package-lock.json, installed with `npm ci` into
# ~/.cache/vexil/jstools (or $VEXIL_JSTOOLS); again only when the lock file changed.
ensure_js_clients() {
    local root dir
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    dir="${VEXIL_JSTOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/vexil/jstools}"
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        log "node: not found, installing nodejs and npm"
        apt_install nodejs npm || true
    fi
    if ! command -v npm >/dev/null 2>&1; then
        service_down "javascript clients: node and npm are needed (apt-get install nodejs npm)"
        return 0
    fi
    if [ -d "$dir/node_modules" ] && cmp -s "$root/control/tests/pod/package-lock.json" "$dir/package-lock.json"; then
        log "javascript clients: $dir"
        return 0
    fi
    log "javascript clients: npm ci into $dir"
    mkdir -p "$dir"
    cp "$root/control/tests/pod/package.json" "$root/control/tests/pod/package-lock.json" "$dir/"
    if (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null); then
        return 0
    fi
    rm -f "$dir/package-lock.json"
    service_down "javascript clients: npm ci failed in $dir"
}

# Debian's Chromium, which playwright-core drives in the console's browser tests
# (control/tests/console.rs); a test tool's own browser download is never used.
ensure_chromium() {
    if command -v chromium >/dev/null 2>&1; then
        log "chromium: $(command -v chromium)"
        return 0
    fi
    log "chromium: not found, installing it"
    apt_install chromium || true
    command -v chromium >/dev/null 2>&1 \
        || service_down "chromium: needed by the console's browser tests (apt-get install chromium)"
}

# promtool checks the alert rules and the dashboard's queries (scripts/validate-monitoring.sh). It
# comes with the Prometheus server's package; the server itself is not started.
ensure_promtool() {
    if command -v promtool >/dev/null 2>&1; then
        log "promtool: $(command -v promtool)"
        return 0
    fi
    log "promtool: not found, installing prometheus (for promtool only)"
    apt_install prometheus || true
    if command -v promtool >/dev/null 2>&1; then
        return 0
    fi
    service_down "promtool: apt-get install prometheus failed"
}

ensure_protox
ensure_promtool
ensure_postgres
ensure_redis
ensure_openfeature_clients
ensure_js_clients
ensure_chromium

if [ "$failures" -gt 0 ]; then
    err "$failures required item(s) missing; see above"
    exit 1
fi
exit 0
