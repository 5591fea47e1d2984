#!/usr/bin/env python3
"""Check Vexil's Grafana dashboard and Prometheus alert rules (k8s/components/monitoring/).

Run through scripts/validate-monitoring.sh, which makes sure `promtool` (Debian's `prometheus`
package) is there.

  * the dashboard is a Grafana dashboard of the right shape: title, uid, schemaVersion, panels with
    unique ids, a grid position inside 24 columns, a Prometheus data source and queries with unique
    refIds; every $variable a query uses is one of its template variables (or Grafana's own);
  * every PromQL query of the dashboard (panels and template variables) parses: they are written,
    variables replaced, into a rules file of recording rules that `promtool check rules` checks;
  * the alert rules pass `promtool check rules`, and their unit tests (`*.rules.test.yml`)
    `promtool test rules`.

That every metric named exists is checked against the real binaries by
telemetry/tests/monitoring.rs. Before any of that, a broken dashboard must be refused: a checker
that accepts everything fails the run instead of passing it.
"""

import copy
import json
import os
import re
import subprocess
import sys
import tempfile

GRAFANA_VARIABLES = {"__rate_interval", "__interval", "__range", "__interval_ms", "__range_s"}
PANEL_TYPES = {"row", "timeseries", "stat", "gauge", "table", "bargauge", "text", "heatmap"}
# What each variable stands for when a query is parsed by promtool.
SUBSTITUTES = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h", "__interval_ms": "60000",
               "__range_s": "3600"}
VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


def dashboard_problems(d):
    """Every problem of dashboard `d`, each naming where it is; and its queries."""
    problems, queries = [], []

    def need(cond, where, what):
        if not cond:
            problems.append(f"{where}: {what}")
        return cond

    need(isinstance(d, dict), "dashboard", "not a JSON object")
    if problems:
        return problems, queries
    for key, kind in (("title", str), ("uid", str), ("schemaVersion", int), ("panels", list)):
        need(isinstance(d.get(key), kind), key, f"missing or not {kind.__name__}")
    templating = d.get("templating", {}).get("list", [])
    need(isinstance(templating, list), "templating.list", "not a list")
    variables = set()
    for i, v in enumerate(templating):
        where = f"templating.list[{i}]"
        if need(isinstance(v, dict) and isinstance(v.get("name"), str), where, "no name"):
            variables.add(v["name"])
        if isinstance(v, dict) and v.get("type") == "query":
            q = v.get("query")
            q = q.get("query") if isinstance(q, dict) else q
            if need(isinstance(q, str) and q, f"{where}.query", "no query"):
                m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", q.strip())
                if need(m, f"{where}.query", f"not label_values(SELECTOR, LABEL): {q}"):
                    queries.append((f"{where}.query", m.group(1)))
    ids, cells = set(), {}
    for i, p in enumerate(d.get("panels", [])):
        where = f"panels[{i}]"
        if not need(isinstance(p, dict), where, "not an object"):
            continue
        title = p.get("title")
        where = f"panels[{i}] ({title})"
        need(isinstance(title, str) and title, where, "no title")
        need(p.get("type") in PANEL_TYPES, where, f"unknown type {p.get('type')!r}")
        pid = p.get("id")
        need(isinstance(pid, int) and pid not in ids, where, f"id {pid!r} missing or not unique")
        ids.add(pid)
        g = p.get("gridPos", {})
        if need(all(isinstance(g.get(k), int) for k in "hwxy"), f"{where}.gridPos", "needs integer h, w, x, y"):
            need(g["w"] > 0 and g["h"] > 0 and g["x"] >= 0 and g["x"] + g["w"] <= 24,
                 f"{where}.gridPos", f"outside the 24 columns: {g}")
            overlapped = {cells[c] for c in ((x, y) for x in range(g["x"], g["x"] + g["w"])
                                             for y in range(g["y"], g["y"] + g["h"])) if c in cells}
            need(not overlapped, f"{where}.gridPos", f"overlaps {sorted(overlapped)}")
            cells.update({(x, y): title for x in range(g["x"], g["x"] + g["w"])
                          for y in range(g["y"], g["y"] + g["h"])})
        if p.get("type") == "row":
            continue
        ds = p.get("datasource", {})
        need(isinstance(ds, dict) and ds.get("type") == "prometheus", f"{where}.datasource", "not prometheus")
        targets = p.get("targets")
        if not need(isinstance(targets, list) and targets, f"{where}.targets", "no queries"):
            continue
        refs = set()
        for j, t in enumerate(targets):
            tw = f"{where}.targets[{j}]"
            ref = t.get("refId") if isinstance(t, dict) else None
            need(isinstance(ref, str) and ref not in refs, tw, f"refId {ref!r} missing or not unique")
            refs.add(ref)
            expr = t.get("expr") if isinstance(t, dict) else None
            if need(isinstance(expr, str) and expr.strip(), tw, "no expr"):
                queries.append((tw, expr))
    for where, expr in queries:
        for m in VARIABLE.finditer(expr):
            name = m.group(1) or m.group(2)
            need(name in variables or name in GRAFANA_VARIABLES, where, f"unknown variable ${name}")
    return problems, queries


def promtool(*args):
    r = subprocess.run(["promtool", *args], capture_output=True, text=True)
    return r.returncode, (r.stdout + r.stderr).strip()


def queries_parse(queries):
    """`promtool check rules` on the queries as recording rules; its problems."""
    def substitute(expr):
        return VARIABLE.sub(lambda m: SUBSTITUTES.get(m.group(1) or m.group(2), ".*"), expr)

    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query:{i}", "expr": substitute(e)} for i, (_, e) in enumerate(queries)]}]}
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        json.dump(rules, f)  # JSON is YAML
    try:
        code, out = promtool("check", "rules", f.name)
    finally:
        os.unlink(f.name)
    if code == 0:
        return []
    return [f"a dashboard query does not parse: {out}"] + [f"  query {i}: {w}: {e}" for i, (w, e) in enumerate(queries)]


def self_test(dashboard):
    broken = copy.deepcopy(dashboard)
    panel = next(p for p in broken["panels"] if p.get("type") != "row")
    panel["targets"] = []
    panel["gridPos"]["x"] = 20
    broken["panels"].append(copy.deepcopy(broken["panels"][0]))
    problems, _ = dashboard_problems(broken)
    if len(problems) < 3:
        print(f"FATAL self-test: a broken dashboard gave {problems}; the check checks nothing")
        sys.exit(2)
    if not queries_parse([("self-test", "sum(rate(x[5m])")]):
        print("FATAL self-test: promtool accepted a query that does not parse")
        sys.exit(2)
    print(f"self-test: a broken dashboard is refused, as it must be ({problems[0]})\n")


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "k8s/components/monitoring"
    errors = []
    dashboards = sorted(f for f in os.listdir(root) if f.endswith("dashboard.json"))
    rules = sorted(f for f in os.listdir(root) if f.endswith(".rules.yml"))
    tests = sorted(f for f in os.listdir(root) if f.endswith(".rules.test.yml"))
    if not dashboards or not rules:
        print(f"ERROR {root}: no dashboard (*dashboard.json) or no rules (*.rules.yml)")
        sys.exit(1)
    for name in dashboards:
        path = os.path.join(root, name)
        try:
            with open(path) as f:
                d = json.load(f)
        except ValueError as e:
            errors.append(f"{path}: not JSON: {e}")
            continue
        self_test(d)
        problems, queries = dashboard_problems(d)
        problems += queries_parse(queries)
        errors += [f"{path}: {p}" for p in problems]
        if not problems:
            print(f"ok    {path}: {len(d['panels'])} panels, {len(queries)} queries")
    for name in rules:
        path = os.path.join(root, name)
        code, out = promtool("check", "rules", path)
        if code:
            errors.append(f"{path}: promtool check rules:\n{out}")
        else:
            print(f"ok    {path}: {out.splitlines()[-1].strip()}")
    for name in tests:
        path = os.path.join(root, name)
        # The tests name their rules file relative to themselves.
        r = subprocess.run(["promtool", "test", "rules", name], cwd=root, capture_output=True, text=True)
        if r.returncode:
            out = (r.stdout + r.stderr).strip()
            errors.append(f"{path}: promtool test rules:\n{out}")
        else:
            print(f"ok    {path}: promtool test rules")
    print()
    for e in errors:
        print(f"ERROR {e}")
    if errors:
        print(f"validate-monitoring: {len(errors)} problem(s)")
        sys.exit(1)
    print(f"validate-monitoring: the dashboard and the alert rules of {root} are valid")


if __name__ == "__main__":
    main()
