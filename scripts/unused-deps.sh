#!/usr/bin/env bash
# Fails when a crate of the workspace declares a dependency its code never uses (cargo-machete).
# A false positive (a crate named only by generated code) is listed, with the reason, under
# `[package.metadata.cargo-machete] ignored` in that crate's Cargo.toml.
#
# cargo-machete is installed from crates.io (`cargo install --locked`) when it is missing or
# another version; that build takes about a minute once.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

VERSION="${VEXIL_CARGO_MACHETE_VERSION:-0.9.2}"

have="$(cargo machete --version 2>/dev/null | awk '{print $NF}' || true)"
if [ "$have" != "$VERSION" ]; then
    echo "unused-deps: cargo-machete ${have:-missing}; installing cargo-machete@$VERSION (once)"
    cargo install "cargo-machete@$VERSION" --locked --quiet
fi
# The cargo-fuzz crate is its own workspace with its own lock file; it is checked too.
cargo machete
