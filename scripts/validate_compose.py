#!/usr/bin/env python3
"""Check that docker-compose.yml and the Kubernetes manifests call the Vexil binaries with flags and
VEXIL_* variables the binaries have.

Run through scripts/validate-compose.sh. Reads `vexil-control serve --help` and `vexil-proxy --help`
(paths given as arguments, from `cargo run`). A flag or variable of vexil-control that it does not
know fails the run; vexil-proxy's are listed as pending while the sidecar's serving mode (the sync
client, issue-tracked) has not landed, and fail once `vexil-proxy --help` shows a `--control` flag.
"""

import os
import re
import sys

import yaml


def known(help_text):
    flags = set(re.findall(r"(--[a-z0-9][a-z0-9-]*)", help_text))
    env = set(re.findall(r"env: (VEXIL_[A-Z0-9_]+)", help_text))
    return flags, env


def read_by_code(src):
    """VEXIL_* variables the code reads itself, outside clap (VEXIL_LOG, VEXIL_ADMIN_TOKEN)."""
    names = set()
    for d, _, files in os.walk(src):
        for f in files:
            if f.endswith(".rs"):
                with open(os.path.join(d, f)) as fh:
                    text = fh.read()
                    names |= set(re.findall(r'(?:var|from_env)\("(VEXIL_[A-Z0-9_]+)"\)', text))
                    # A variable named by a constant (`const LOG_FILTER_VAR: &str = "VEXIL_LOG"`).
                    names |= set(re.findall(r'_VAR: &str = "(VEXIL_[A-Z0-9_]+)"', text))
    return names


def used(command, environment):
    flags = {arg.split("=", 1)[0] for arg in command if arg.startswith("--")}
    if isinstance(environment, dict):
        names = set(environment)
    else:
        names = {e.split("=", 1)[0] for e in environment or []}
    return flags, {n for n in names if n.startswith("VEXIL_")}


def compose_uses(path):
    """(binary, where, flags, variables) of each compose service built from the Dockerfile."""
    with open(path) as f:
        compose = yaml.safe_load(f)
    for name, service in compose["services"].items():
        target = (service.get("build") or {}).get("target")
        if target not in ("control", "proxy"):
            continue
        command = service.get("command") or []
        if isinstance(command, str):
            command = command.split()
        binary = "vexil-control" if target == "control" else "vexil-proxy"
        yield (binary, f"{path}: {name}", *used(command, service.get("environment")))


def k8s_uses(path):
    """(binary, where, flags, variables) of the vexil containers of a Kubernetes manifest."""
    with open(path) as f:
        for doc in yaml.safe_load_all(f):
            spec = ((doc or {}).get("spec") or {}).get("template", {}).get("spec", {})
            for c in spec.get("containers", []):
                if "vexil-control" in c.get("image", ""):
                    env = {e["name"]: None for e in c.get("env", [])}
                    yield ("vexil-control", f"{path}: {c['name']}", *used(c.get("args", []), env))


def main():
    control_help, proxy_help, compose, *manifests = sys.argv[1:]
    with open(control_help) as f:
        flags, env = known(f.read())
        # Both binaries install their logging from vexil-telemetry, which reads VEXIL_LOG.
        control = (flags, env | read_by_code("control/src") | read_by_code("telemetry/src"))
    with open(proxy_help) as f:
        flags, env = known(f.read())
        proxy = (flags, env | read_by_code("proxy/src") | read_by_code("telemetry/src"))
    proxy_serves = "--control" in proxy[0]
    problems = 0
    uses = list(compose_uses(compose))
    for m in manifests:
        uses += list(k8s_uses(m))
    for binary, where, flags, env in uses:
        have_flags, have_env = control if binary == "vexil-control" else proxy
        missing = sorted(flags - have_flags) + sorted(env - have_env)
        if not missing:
            print(f"ok      {where}: {binary} knows {', '.join(sorted(flags | env)) or 'no flags'}")
        elif binary == "vexil-proxy" and not proxy_serves:
            print(f"pending {where}: {binary} does not parse {', '.join(missing)} yet")
        else:
            print(f"ERROR   {where}: {binary} has no {', '.join(missing)}")
            problems += 1
    if not uses:
        print(f"ERROR   {compose}: no service built from the Dockerfile")
        problems += 1
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
