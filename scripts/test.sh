#!/usr/bin/env bash
# Run every Vexil test.
#
#   scripts/test.sh [ARGS...]
#
# 1. scripts/ensure-deps.sh   (PostgreSQL, Redis, test clients)
# 2. cargo nextest run --workspace --no-fail-fast [ARGS...]
#    (or `cargo test --workspace --no-fail-fast [ARGS...]` without nextest)
# 3. cargo test --workspace --doc   (nextest does not run doctests; skipped in
#    the plain `cargo test` fallback, which already runs them)
#
# ARGS go to the test runner of step 2, e.g. `scripts/test.sh -p vexil-engine`
# or `scripts/test.sh some_test_name`. When ARGS select packages (-p/--package)
# `--workspace` is left out. Doctests always cover the whole workspace.
#
# Honours CARGO_TARGET_DIR and the other usual cargo variables; never sets them.
# Set VEXIL_NO_NEXTEST=1 to force plain `cargo test`.
# Exits non-zero when any step fails; every step runs regardless, and a
# closing "tests: N passed, N failed" line sums up all runners.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf '\n--- test.sh: %s\n' "$*"; }

# Colour survives the `tee` below when a person is watching.
if [ -t 1 ] && [ -z "${CARGO_TERM_COLOR:-}" ]; then
    export CARGO_TERM_COLOR=always
fi

logdir="$(mktemp -d)"
trap 'rm -rf "$logdir"' EXIT

status=0
failed_steps=()

# ---------------------------------------------------------- 1. deps ----
say "ensure dependencies"
if ! bash scripts/ensure-deps.sh; then
    echo "test.sh: scripts/ensure-deps.sh failed; not running tests" >&2
    exit 1
fi

# Does the caller pick packages itself? (only looks before a `--`)
selects_package=false
for a in "$@"; do
    case "$a" in
        --) break ;;
        -p | -p?* | --package | --package=*) selects_package=true ;;
    esac
done
scope=(--workspace)
$selects_package && scope=()

# run_logged LOGFILE CMD...: run CMD with its output shown and copied to LOGFILE;
# returns CMD's exit status.
run_logged() {
    local logfile="$1"
    shift
    echo "+ $*"
    set +e
    "$@" 2>&1 | tee "$logfile"
    local rc="${PIPESTATUS[0]}"
    set -e
    return "$rc"
}

# ---------------------------------------------------- 2. main tests ----
if [ -z "${VEXIL_NO_NEXTEST:-}" ] && cargo nextest --version >/dev/null 2>&1; then
    runner=nextest
    say "cargo nextest run"
    if ! run_logged "$logdir/main.log" \
        cargo nextest run "${scope[@]}" --no-fail-fast "$@"; then
        status=1
        failed_steps+=("cargo nextest run")
    fi
else
    runner=cargo-test
    say "cargo test (cargo-nextest not available)"
    if ! run_logged "$logdir/main.log" \
        cargo test "${scope[@]}" --no-fail-fast "$@"; then
        status=1
        failed_steps+=("cargo test")
    fi
fi

# ------------------------------------------------------ 3. doctests ----
: >"$logdir/doc.log"
if [ "$runner" = nextest ]; then
    say "cargo test --doc"
    if ! run_logged "$logdir/doc.log" cargo test --workspace --doc; then
        status=1
        failed_steps+=("cargo test --doc")
    fi
else
    say "doctests already run by plain cargo test"
fi

# ------------------------------------------------------- summary ----
# Sum what the runners reported, so the closing line covers every test run
# (the doctest run alone may well report 0 tests).
strip_ansi() { sed 's/\x1b\[[0-9;]*[A-Za-z]//g' "$@"; }

passed=0 failed=0 skipped=0
num() { sed -n "s/.*[ :]\([0-9][0-9]*\) $1.*/\1/p" <<<"$2" | head -n1; }

# libtest: "test result: ok. 3 passed; 1 failed; 2 ignored; 0 measured; ..."
# Returns 1 when the log holds no such line.
add_libtest_results() {
    local line found=1
    while IFS= read -r line; do
        passed=$((passed + $(num 'passed;' "$line" || true) + 0))
        failed=$((failed + $(num 'failed;' "$line" || true) + 0))
        skipped=$((skipped + $(num 'ignored;' "$line" || true) + 0))
        found=0
    done < <(strip_ansi "$1" | grep -E '^test result: ' || true)
    return "$found"
}

# nextest: "     Summary [   1.234s] 12 tests run: 10 passed, 2 failed, 1 skipped"
# (may also say "N timed out"). Returns 1 when the log holds no such line.
add_nextest_results() {
    local line
    line="$(strip_ansi "$1" | grep -E '^ *Summary \[.*tests? run:' | tail -n1 || true)"
    [ -n "$line" ] || return 1
    passed=$((passed + $(num 'passed' "$line" || true) + 0))
    failed=$((failed + $(num 'failed' "$line" || true) + 0 + $(num 'timed out' "$line" || true) + 0))
    skipped=$((skipped + $(num 'skipped' "$line" || true) + 0))
}

# Only print a total when the main runner reported its own (a build failure
# reports none, and a total made of the doctests alone would mislead).
main_counted=false
if [ "$runner" = nextest ]; then
    add_nextest_results "$logdir/main.log" && main_counted=true
else
    add_libtest_results "$logdir/main.log" && main_counted=true
fi
add_libtest_results "$logdir/doc.log" || true

echo
if [ "${#failed_steps[@]}" -gt 0 ]; then
    echo "test.sh: FAILED steps: ${failed_steps[*]}"
fi
if $main_counted; then
    echo "tests: ${passed} passed, ${failed} failed, ${skipped} skipped"
fi
exit "$status"
