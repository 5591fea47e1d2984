"""Real OpenFeature Python clients against the sidecar's lookup surfaces.

Run by `proxy/tests/openfeature.rs` (part of the test command) against the real `vexil-proxy` binary
on free ports given as VEXIL_GRPC_PORT, VEXIL_FLAGD_SYNC_PORT and VEXIL_OFREP_PORT. By hand, start
the servers on the default ports with a copy of flags.json, then run this script with the file's
path:

    cp proxy/tests/clients/flags.json /tmp/vexil-flags.json
    cargo run -p vexil-proxy --example lookup_servers -- /tmp/vexil-flags.json &
    python -m venv /tmp/of && /tmp/of/bin/pip install openfeature-sdk==0.10.0 \
        openfeature-provider-flagd==0.6.1 openfeature-provider-ofrep==0.3.0
    /tmp/of/bin/python proxy/tests/clients/openfeature_clients.py /tmp/vexil-flags.json

It resolves every type, a disabled flag, a missing flag and a type mismatch through the flagd
provider in RPC mode (flagd.evaluation.v2 on 8013) and in in-process mode (flagd.sync.v1 on 8015),
and through the OFREP provider (8016); for the flagd modes it edits the file and waits for the
configuration-changed event. Prints one line per check and exits non-zero on the first failure.
"""

import json
import os
import sys
import time

from openfeature import api
from openfeature.contrib.provider.flagd import FlagdProvider
from openfeature.contrib.provider.flagd.config import CacheType, ResolverType
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEvent
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason

FLAGS = sys.argv[1]


def write_flags(doc):
    tmp = FLAGS + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f)
    os.replace(tmp, FLAGS)


def check(mode, name, details, value, reason=None, error=None):
    ok = details.value == value and type(details.value) is type(value)
    ok = ok and (reason is None or details.reason == reason)
    ok = ok and details.error_code == error
    print(f"{'ok  ' if ok else 'FAIL'} {mode:10} {name:10} value={details.value!r} "
          f"reason={details.reason} variant={details.variant} error={details.error_code}")
    if not ok:
        sys.exit(1)


def run(mode, provider):
    changes = []
    api.add_handler(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, changes.append)
    api.set_provider_and_wait(provider)
    c = api.get_client()
    eu = EvaluationContext("user-1", {"country": "de", "tier": "gold"})
    check(mode, "boolean", c.get_boolean_details("bool-static", False), True, Reason.STATIC)
    check(mode, "string", c.get_string_details("string-targeted", "x", eu), "#00f",
          Reason.TARGETING_MATCH)
    check(mode, "integer", c.get_integer_details("int-flag", 0, eu), 1000, Reason.TARGETING_MATCH)
    check(mode, "float", c.get_float_details("float-flag", 0.0), 1.0, Reason.STATIC)
    check(mode, "object", c.get_object_details("object-flag", {}),
          {"size": 1, "tags": ["x", "y"]}, Reason.STATIC)
    check(mode, "disabled", c.get_boolean_details("disabled-flag", True), True, Reason.DISABLED)
    check(mode, "missing", c.get_boolean_details("no-such-flag", True), True, Reason.ERROR,
          ErrorCode.FLAG_NOT_FOUND)
    if mode != "ofrep":  # OFREP has no types on the wire; the Python client takes True as an int
        check(mode, "mismatch", c.get_integer_details("string-targeted", 7), 7, Reason.ERROR,
              ErrorCode.TYPE_MISMATCH)
        with open(FLAGS) as f:
            doc = json.load(f)
        doc["flags"]["bool-static"]["defaultVariant"] = "off"
        changes.clear()
        write_flags(doc)
        for _ in range(100):
            if any("bool-static" in (e.flags_changed or []) for e in changes):
                break
            time.sleep(0.05)
        else:
            print(f"FAIL {mode:10} no configuration change event: {changes}")
            sys.exit(1)
        print(f"ok   {mode:10} change     event with {sorted(changes[-1].flags_changed)}")
        time.sleep(0.2)
        check(mode, "changed", c.get_boolean_details("bool-static", True), False, Reason.STATIC)
        doc["flags"]["bool-static"]["defaultVariant"] = "on"
        write_flags(doc)
        time.sleep(0.6)
    api.shutdown()
    api.clear_providers()


GRPC = int(os.environ.get("VEXIL_GRPC_PORT", "8013"))
SYNC = int(os.environ.get("VEXIL_FLAGD_SYNC_PORT", "8015"))
OFREP = int(os.environ.get("VEXIL_OFREP_PORT", "8016"))
run("rpc", FlagdProvider(resolver_type=ResolverType.RPC, host="127.0.0.1", port=GRPC,
                         cache=CacheType.DISABLED))
run("in-process", FlagdProvider(resolver_type=ResolverType.IN_PROCESS, host="127.0.0.1", port=SYNC))
run("ofrep", OFREPProvider(f"http://127.0.0.1:{OFREP}"))
print("3 passed, 0 failed")
