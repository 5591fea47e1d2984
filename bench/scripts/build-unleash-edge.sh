#!/usr/bin/env bash
# Builds Unleash Edge (the `lookup` scenario's peer baseline) once, from crates.io, into a cache
# directory, and prints the binary's path: pass it as VEXIL_UNLEASH_EDGE. About 15 minutes on two
# cores the first time; at once afterwards. The harness itself never downloads anything.
#
#   export VEXIL_UNLEASH_EDGE="$(bench/scripts/build-unleash-edge.sh)"
#   cargo run --release -p vexil-bench -- lookup
set -euo pipefail

version=${UNLEASH_EDGE_VERSION:-20.1.0}
root=${VEXIL_CACHE:-$HOME/.cache/vexil}/unleash-edge-$version
bin="$root/bin/unleash-edge"
if [ ! -x "$bin" ]; then
    echo "building unleash-edge $version into $root (once)" >&2
    cargo install unleash-edge --version "$version" --locked --root "$root" \
        --target-dir "${TMPDIR:-/tmp}/unleash-edge-build" >&2
    rm -rf "${TMPDIR:-/tmp}/unleash-edge-build"
fi
"$bin" --help >/dev/null
echo "$bin"
