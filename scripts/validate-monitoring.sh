#!/usr/bin/env bash
# Check the Grafana dashboard and the Prometheus alert rules of k8s/components/monitoring/: the
# dashboard's shape and that its queries parse, `promtool check rules` and `promtool test rules`
# (scripts/validate_monitoring.py says what exactly). promtool comes with Debian's `prometheus`
# package, which scripts/ensure-deps.sh installs. That every metric named exists is checked against
# the real binaries by telemetry/tests/monitoring.rs (part of the test suite).
#
#   scripts/validate-monitoring.sh [DIR]
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v promtool >/dev/null 2>&1; then
    echo "validate-monitoring: promtool not found; scripts/ensure-deps.sh installs it (apt-get install prometheus)" >&2
    exit 1
fi
exec python3 scripts/validate_monitoring.py "$@"
