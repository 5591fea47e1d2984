#!/usr/bin/env bash
# Check docker-compose.yml and the Dockerfile's use of the binaries, without a Docker engine:
#   1. the compose file against the Compose Specification schema (check-jsonschema, from PyPI,
#      carries it: nothing is fetched at run time), and `docker compose config` when the compose
#      plugin is installed;
#   2. every flag and VEXIL_* variable given to vexil-control (compose services and the k8s
#      Deployment) exists in `vexil-control serve --help`; vexil-proxy's are listed as pending
#      until the proxy parses them (see scripts/validate_compose.py);
#   3. the Dockerfile's stages build binaries of the workspace.
# Builds the two binaries (debug) when needed; honours CARGO_TARGET_DIR. Exits non-zero on a problem.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/pytools.sh
source scripts/pytools.sh
pytools_install "check-jsonschema==0.39.0"

status=0
echo "== docker-compose.yml against the Compose Specification"
"$PYTOOLS/bin/check-jsonschema" --builtin-schema vendor.compose-spec docker-compose.yml || status=1
if docker compose version >/dev/null 2>&1; then
    echo "== docker compose config"
    docker compose config --quiet || status=1
else
    echo "(no docker compose plugin here: 'docker compose config' skipped)"
fi

echo "== flags and variables of the binaries"
help="$(mktemp -d)"
trap 'rm -rf "$help"' EXIT
cargo run --quiet -p vexil-control -- serve --help >"$help/control.txt"
cargo run --quiet -p vexil-proxy -- --help >"$help/proxy.txt"
"$PYTOOLS/bin/python" scripts/validate_compose.py "$help/control.txt" "$help/proxy.txt" \
    docker-compose.yml k8s/base/deployment.yaml || status=1

echo "== Dockerfile"
for bin in vexil-control vexil-proxy; do
    if grep -q "target/release/$bin" Dockerfile && [ -f "${bin#vexil-}/src/main.rs" ]; then
        echo "ok      Dockerfile builds $bin"
    else
        echo "ERROR   Dockerfile: $bin is not built, or not a binary of the workspace"
        status=1
    fi
done

[ "$status" -eq 0 ] && echo "validate-compose: ok" || echo "validate-compose: FAILED"
exit "$status"
