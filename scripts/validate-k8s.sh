#!/usr/bin/env bash
# Validate every Kubernetes manifest of k8s/ (and the pods the injection webhook makes) against the
# Kubernetes API schemas, offline.
#
#   scripts/validate-k8s.sh [-k 1.33.0 ...]
#
# The validator is kubernetes-validate from PyPI, whose package carries the schemas of every
# Kubernetes version it knows (nothing is fetched at run time). It is installed, pinned, into a
# virtualenv at $VEXIL_PYTOOLS (default ~/.cache/vexil/pytools) when missing. Every file is
# validated in strict mode (unknown fields are errors) against Kubernetes 1.30 (native sidecars are
# on by default since 1.29) and 1.37; with kustomize or kubectl on the machine, every kustomization
# is also rendered and its output validated. Exits non-zero on any invalid manifest.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/pytools.sh
source scripts/pytools.sh

pytools_install "kubernetes-validate==1.37.0"
golden=(control/tests/fixtures/admission/*.injected.json)
also=()
for f in "${golden[@]}"; do
    [ -e "$f" ] && also+=(--also "$f")
done
exec "$PYTOOLS/bin/python" scripts/validate_k8s.py k8s "${also[@]}" "$@"
