#!/usr/bin/env python3
"""Validate the Kubernetes manifests of k8s/ against the Kubernetes API schemas.

Run through scripts/validate-k8s.sh, which installs what this needs (kubernetes-validate, whose
package carries the schemas of every Kubernetes version it knows: nothing is downloaded here).

  * every manifest file is validated, document by document, in strict mode (an unknown field is an
    error) against each --kubernetes-version;
  * every kustomization.yaml is checked: known keys only, and every file or folder it names exists;
  * when a kustomize is on the machine (`kustomize` or `kubectl kustomize`), every kustomization
    (components excepted) is rendered and the rendered documents are validated as well;
  * --also FILE validates more objects (the pods the injection webhook makes, kept as golden files
    by control/tests/webhook.rs);
  * Prometheus files (`*.rules.yml`, `*.rules.test.yml`) are not manifests: skipped here, checked by
    scripts/validate-monitoring.sh;
  * kinds without a bundled schema fail, except the cert-manager kinds of ALLOWED_WITHOUT_SCHEMA,
    which get a structural check only.

Before any of that, a deliberately invalid manifest must be refused: a validator that accepts
everything fails the run instead of passing it.
"""

import argparse
import os
import shutil
import subprocess
import sys

import yaml
import kubernetes_validate
from kubernetes_validate.utils import SchemaNotFoundError, ValidationError

# Custom resources whose schemas are not in kubernetes-validate: checked for shape only.
ALLOWED_WITHOUT_SCHEMA = {("cert-manager.io/v1", "Issuer"), ("cert-manager.io/v1", "Certificate")}

KUSTOMIZATION_KEYS = {
    "apiVersion", "kind", "namespace", "namePrefix", "nameSuffix", "labels", "commonLabels",
    "commonAnnotations", "resources", "components", "patches", "images", "replicas",
    "configMapGenerator", "secretGenerator", "generatorOptions",
}

# Files under k8s/ that are not Kubernetes manifests: Prometheus rules and their unit tests
# (scripts/validate-monitoring.sh checks them).
NOT_MANIFESTS = (".rules.yml", ".rules.test.yml")

BROKEN_POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "broken"},
    "spec": {"containers": [{"name": "app", "image": "x", "restartPolicy": 7, "imagePulPolicy": "Always"}]},
}


class Quiet(list):
    """Problems collected without being printed (the self-test's)."""


def fail(errors, message):
    errors.append(message)
    if not isinstance(errors, Quiet):
        print(f"ERROR {message}")


def validate_document(doc, where, versions, errors):
    """Validates one Kubernetes object against each version's schema."""
    if not isinstance(doc, dict) or "apiVersion" not in doc or "kind" not in doc:
        fail(errors, f"{where}: not a Kubernetes object (apiVersion and kind are required)")
        return
    name = f"{doc['kind']}/{doc.get('metadata', {}).get('name', '?')}"
    if (doc["apiVersion"], doc["kind"]) in ALLOWED_WITHOUT_SCHEMA:
        if not doc.get("metadata", {}).get("name") or not isinstance(doc.get("spec"), dict):
            fail(errors, f"{where}: {name}: metadata.name and spec are required")
        else:
            print(f"ok    {where}: {name} (custom resource: structure only)")
        return
    for version in versions:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except SchemaNotFoundError:
            fail(errors, f"{where}: {name}: no schema for {doc['apiVersion']} {doc['kind']} in Kubernetes {version}")
            return
        except ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            fail(errors, f"{where}: {name}: Kubernetes {version}: {path}: {e.message}")
            return
    print(f"ok    {where}: {name} (Kubernetes {', '.join(versions)})")


def check_kustomization(path, errors):
    """Known keys, and every local file or folder named exists."""
    with open(path) as f:
        k = yaml.safe_load(f) or {}
    base = os.path.dirname(path)
    before = len(errors)
    unknown = set(k) - KUSTOMIZATION_KEYS
    if unknown:
        fail(errors, f"{path}: unknown keys {sorted(unknown)}")
    named = list(k.get("resources", [])) + list(k.get("components", []))
    named += [p["path"] for p in k.get("patches", []) if isinstance(p, dict) and "path" in p]
    for generator in k.get("configMapGenerator", []) + k.get("secretGenerator", []):
        named += [f.split("=", 1)[-1] for f in generator.get("files", [])]
    for entry in named:
        if "://" in entry:
            fail(errors, f"{path}: remote resource {entry} (everything must be in the repository)")
        elif not os.path.exists(os.path.join(base, entry)):
            fail(errors, f"{path}: {entry} does not exist")
    for patch in k.get("patches", []):
        if isinstance(patch, dict) and "patch" in patch:
            try:
                yaml.safe_load(patch["patch"])
            except yaml.YAMLError as e:
                fail(errors, f"{path}: an inline patch is not YAML: {e}")
    if len(errors) == before:
        print(f"ok    {path}: kustomization")
    return k.get("kind") == "Component"


def renderer():
    """A kustomize command, when the machine has one."""
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        probe = subprocess.run(["kubectl", "kustomize", "--help"], capture_output=True)
        if probe.returncode == 0:
            return ["kubectl", "kustomize"]
    return None


def load_all(text, where, errors):
    try:
        return [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        fail(errors, f"{where}: not YAML: {e}")
        return []


def self_test(versions):
    """The validator must refuse an invalid manifest."""
    errors = Quiet()
    validate_document(BROKEN_POD, "self-test", versions, errors)
    if not errors:
        print("FATAL self-test: the validator accepted an invalid Pod; it validates nothing")
        sys.exit(2)
    print(f"self-test: an invalid Pod is refused, as it must be ({errors[0]})\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", default="k8s")
    parser.add_argument("-k", "--kubernetes-version", action="append", dest="versions",
                        help="Kubernetes version to validate against (repeatable)")
    parser.add_argument("--no-render", action="store_true", help="never render with kustomize")
    parser.add_argument("--also", action="append", default=[], metavar="FILE",
                        help="another file of Kubernetes objects to validate (YAML or JSON; repeatable)")
    args = parser.parse_args()
    versions = args.versions or ["1.30.0", "1.37.0"]
    self_test(versions)

    errors = []
    kustomizations = []
    files = sorted(
        os.path.join(d, f)
        for d, _, names in os.walk(args.root)
        for f in names
        if f.endswith((".yaml", ".yml")) and not f.endswith(NOT_MANIFESTS)
    )
    if not files:
        fail(errors, f"{args.root}: no manifests found")
    for path in files:
        if os.path.basename(path) in ("kustomization.yaml", "kustomization.yml"):
            is_component = check_kustomization(path, errors)
            if not is_component:
                kustomizations.append(os.path.dirname(path))
            continue
        with open(path) as f:
            docs = load_all(f.read(), path, errors)
        for i, doc in enumerate(docs):
            validate_document(doc, f"{path}#{i}", versions, errors)
    for path in args.also:
        with open(path) as f:
            docs = load_all(f.read(), path, errors)
        for i, doc in enumerate(docs):
            validate_document(doc, f"{path}#{i}", versions, errors)

    render = None if args.no_render else renderer()
    if render is None:
        print("\nno kustomize here (kustomize or kubectl): rendered output not validated")
    for k in kustomizations:
        if render is None:
            break
        result = subprocess.run(render + [k], capture_output=True, text=True)
        if result.returncode != 0:
            fail(errors, f"{' '.join(render)} {k}: {result.stderr.strip()}")
            continue
        docs = load_all(result.stdout, k, errors)
        print(f"\nrendered {k} with {' '.join(render)}: {len(docs)} objects")
        for doc in docs:
            validate_document(doc, f"{k} (rendered)", versions, errors)

    print()
    if errors:
        print(f"validate-k8s: {len(errors)} problem(s)")
        sys.exit(1)
    print(f"validate-k8s: every manifest under {args.root} is valid")


if __name__ == "__main__":
    main()
