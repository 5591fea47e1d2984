#!/usr/bin/env bash
# Dependency audit with cargo-deny (configuration: deny.toml).
#
#   bash scripts/audit.sh
#
# Always: `cargo deny check bans licenses sources` (no aws-lc-rs / OpenSSL, an allow-list of
# licenses, crates.io only). These need no network beyond the crates.io index cargo already uses.
#
# Advisories (RustSec database): checked only when a copy of the database is present in
# ~/.cargo/advisory-dbs, or when cargo-deny can fetch it now; otherwise skipped, and the output says
# so plainly. VEXIL_AUDIT_ADVISORIES=require makes a missing database an error.
#
# cargo-deny is installed from crates.io (`cargo install --locked`, into cargo's usual bin
# directory) when it is missing or another version; that build takes a few minutes once.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

DENY_VERSION="${VEXIL_CARGO_DENY_VERSION:-0.20.2}"
DB_DIR="${CARGO_HOME:-$HOME/.cargo}/advisory-dbs"

log() { printf 'audit: %s\n' "$*"; }

ensure_cargo_deny() {
    local have
    have="$(cargo deny --version 2>/dev/null | awk '{print $2}' || true)"
    if [ "$have" = "$DENY_VERSION" ]; then
        log "cargo-deny $have"
        return 0
    fi
    log "cargo-deny ${have:-missing}; installing cargo-deny@$DENY_VERSION from crates.io (once, a few minutes)"
    local start=$SECONDS
    cargo install "cargo-deny@$DENY_VERSION" --locked --quiet
    log "cargo-deny installed in $((SECONDS - start)) s"
}

ensure_cargo_deny

log "checking bans, licenses, sources"
cargo deny --log-level warn check bans licenses sources

# The advisory database: a copy on disk, or one fetched now (bounded in time).
db_present() {
    [ -d "$DB_DIR" ] && [ -n "$(find "$DB_DIR" -maxdepth 3 -name '*.toml' -print -quit 2>/dev/null)" ] \
        || [ -n "$(find "$DB_DIR" -maxdepth 2 -type d -name crates -print -quit 2>/dev/null)" ]
}

if db_present; then
    log "advisories: checking against the RustSec database in $DB_DIR (no fetch)"
    cargo deny --log-level warn check --disable-fetch advisories
elif timeout 120 cargo deny --log-level error fetch db >/dev/null 2>&1 && db_present; then
    log "advisories: fetched the RustSec database into $DB_DIR; checking"
    cargo deny --log-level warn check --disable-fetch advisories
else
    msg="advisories: SKIPPED: no RustSec advisory database in $DB_DIR and it cannot be fetched from here"
    if [ "${VEXIL_AUDIT_ADVISORIES:-}" = "require" ]; then
        log "ERROR: $msg (VEXIL_AUDIT_ADVISORIES=require)"
        exit 1
    fi
    log "$msg"
    log "advisories: to check them, put a copy of the advisory-db repository in $DB_DIR/<name>"
fi
log "ok"
