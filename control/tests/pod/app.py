"""The application of a pod-in-a-box test (`control/tests/pod.rs`): it knows nothing of Vexil and
reads only what the injection webhook put in its environment.

    app.py http URL      GET URL through HTTP_PROXY (as any HTTP client does); print the JSON answer
    app.py providers     the stock Python flagd provider (RPC) and OFREP provider against the flags
                         of `flags.json`, configured by FLAGD_* and OFREP_ENDPOINT only
    app.py defaults      the same providers while no flag is loaded: every lookup gets the code's
                         default
    app.py serve PORT    serve HTTP on 127.0.0.1:PORT, answering each request with the JSON of its
                         headers (the app behind an inbound sidecar)

Prints one line per check and exits non-zero on the first failure.
"""

import json
import os
import sys
import urllib.request

from openfeature import api
from openfeature.contrib.provider.flagd import FlagdProvider
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason


def check(mode, name, details, value, reason=None, error=None):
    ok = details.value == value and type(details.value) is type(value)
    ok = ok and (reason is None or details.reason == reason)
    ok = ok and details.error_code == error
    print(f"{'ok  ' if ok else 'FAIL'} python {mode:6} {name:9} value={details.value!r} "
          f"reason={details.reason} error={details.error_code}", flush=True)
    if not ok:
        sys.exit(1)


def providers():
    for mode, provider in [
        ("rpc", FlagdProvider()),
        ("ofrep", OFREPProvider(os.environ["OFREP_ENDPOINT"])),
    ]:
        api.set_provider_and_wait(provider)
        c = api.get_client()
        eu = EvaluationContext("user-1", {"country": "de", "tier": "gold"})
        check(mode, "boolean", c.get_boolean_details("bool-static", False), True, Reason.STATIC)
        check(mode, "string", c.get_string_details("string-targeted", "x", eu), "#00f",
              Reason.TARGETING_MATCH)
        check(mode, "integer", c.get_integer_details("int-flag", 0, eu), 1000,
              Reason.TARGETING_MATCH)
        check(mode, "float", c.get_float_details("float-flag", 0.0), 1.0, Reason.STATIC)
        check(mode, "object", c.get_object_details("object-flag", {}),
              {"size": 1, "tags": ["x", "y"]}, Reason.STATIC)
        # Disabled: the code's default (not the flag's default variant, true), reason DISABLED.
        check(mode, "disabled", c.get_boolean_details("disabled-flag", False), False,
              Reason.DISABLED)
        check(mode, "missing", c.get_boolean_details("no-such-flag", True), True, Reason.ERROR,
              ErrorCode.FLAG_NOT_FOUND)
        check(mode, "mistyped", c.get_integer_details("string-targeted", 7), 7, Reason.ERROR,
              ErrorCode.TYPE_MISMATCH)
        api.shutdown()
        api.clear_providers()
    print("python providers: all passed", flush=True)


def defaults():
    for mode, provider in [
        ("rpc", FlagdProvider()),
        ("ofrep", OFREPProvider(os.environ["OFREP_ENDPOINT"])),
    ]:
        api.set_provider_and_wait(provider)
        c = api.get_client()
        check(mode, "default", c.get_boolean_details("bool-static", False), False, Reason.ERROR,
              ErrorCode.FLAG_NOT_FOUND)
        api.shutdown()
        api.clear_providers()
    print("python defaults: all passed", flush=True)


def http(url):
    request = urllib.request.Request(url, headers={"x-user-id": "alice"})
    with urllib.request.urlopen(request, timeout=10) as response:
        print(json.dumps(json.load(response)), flush=True)


def serve(port):
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Echo(BaseHTTPRequestHandler):
        def do_GET(self):
            headers = {}
            for name, value in self.headers.items():
                name = name.lower()
                headers[name] = f"{headers[name]}, {value}" if name in headers else value
            body = json.dumps({"path": self.path, "headers": headers}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    print(f"serving on 127.0.0.1:{port}", flush=True)
    HTTPServer(("127.0.0.1", port), Echo).serve_forever()


if sys.argv[1] == "http":
    http(sys.argv[2])
elif sys.argv[1] == "providers":
    providers()
elif sys.argv[1] == "defaults":
    defaults()
elif sys.argv[1] == "serve":
    serve(int(sys.argv[2]))
else:
    sys.exit(f"unknown mode {sys.argv[1]!r}")
