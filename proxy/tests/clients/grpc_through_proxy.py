"""gRPC through the sidecar, as an application configured only by `http_proxy` (grpcio then opens a
CONNECT tunnel): a gRPC server answering with the metadata it received, and a client calling it
(`proxy/tests/dataplane.rs`).

    grpc_through_proxy.py                    server and client; http_proxy points at the sidecar
    grpc_through_proxy.py serve              the server alone: prints {"port": N}, runs until stdin closes
    grpc_through_proxy.py call TARGET [AUTHORITY]
                                             the client alone, to TARGET (no proxy: h2c with prior
                                             knowledge), with AUTHORITY as :authority if given

The client prints one JSON line per check:
{"check": NAME, "metadata": {...}} with the metadata the server received, or
{"check": NAME, "code": ..., "details": ..., "trailers": {...}} for a failure; exits non-zero when
a call behaves unlike a direct call.
"""

import json
import sys
import threading
import time
from concurrent import futures

import grpc


def received(context):
    return {k: v for k, v in context.invocation_metadata() if not k.endswith("-bin")}


def unary(request, context):
    return json.dumps({"metadata": received(context), "request": request.decode()}).encode()


def server_stream(request, context):
    for i in range(3):
        yield json.dumps({"metadata": received(context), "i": i}).encode()


def client_stream(requests, context):
    parts = [r.decode() for r in requests]
    return json.dumps({"metadata": received(context), "parts": parts}).encode()


def bidi(requests, context):
    for r in requests:
        yield json.dumps({"metadata": received(context), "echo": r.decode()}).encode()


def fail(request, context):
    context.set_trailing_metadata((("why", "told-to"),))
    context.abort(grpc.StatusCode.FAILED_PRECONDITION, "refused on purpose")


def slow(request, context):
    time.sleep(2)
    return b"late"


def serve():
    identity = lambda b: b  # noqa: E731  (raw bytes in and out: no generated code needed)
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary, identity, identity),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream, identity, identity),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream, identity, identity),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi, identity, identity),
        "Fail": grpc.unary_unary_rpc_method_handler(fail, identity, identity),
        "Slow": grpc.unary_unary_rpc_method_handler(slow, identity, identity),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("echo.Echo", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def out(**line):
    print(json.dumps(line), flush=True)


def calls(target, authority=None):
    options = [("grpc.default_authority", authority)] if authority else []
    channel = grpc.insecure_channel(target, options=options)
    md = (("x-user-id", "alice"), ("vexil-flags", "bool-static=?0, forged=?1"))
    call = lambda kind, name: getattr(channel, kind)(f"/echo.Echo/{name}")  # noqa: E731

    r = json.loads(call("unary_unary", "Unary")(b"hello", metadata=md, timeout=10))
    out(check="unary", metadata=r["metadata"], request=r["request"])

    for i, m in enumerate(call("unary_stream", "ServerStream")(b"x", metadata=md, timeout=10)):
        out(check=f"server_stream_{i}", metadata=json.loads(m)["metadata"])

    r = json.loads(call("stream_unary", "ClientStream")(
        iter([b"a", b"b", b"c"]), metadata=md, timeout=10))
    out(check="client_stream", metadata=r["metadata"], parts=r["parts"])

    for i, m in enumerate(call("stream_stream", "Bidi")(
            iter([b"one", b"two"]), metadata=md, timeout=10)):
        out(check=f"bidi_{i}", metadata=json.loads(m)["metadata"], echo=json.loads(m)["echo"])

    try:
        call("unary_unary", "Fail")(b"", metadata=md, timeout=10)
        sys.exit("Fail: no error")
    except grpc.RpcError as e:
        out(check="status", code=e.code().name, details=e.details(),
            trailers=dict(e.trailing_metadata() or ()))

    try:
        call("unary_unary", "Slow")(b"", metadata=md, timeout=0.5)
        sys.exit("Slow: no deadline")
    except grpc.RpcError as e:
        out(check="deadline", code=e.code().name, details=e.details(), trailers={})
    channel.close()


def main():
    if sys.argv[1:2] == ["serve"]:
        server, port = serve()
        out(port=port)
        sys.stdin.read()
        server.stop(None)
    elif sys.argv[1:2] == ["call"]:
        calls(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
    else:
        server, port = serve()
        # The target must not be in no_proxy: grpcio reads http_proxy for it.
        calls(f"127.0.0.1:{port}")
        server.stop(None)


if __name__ == "__main__":
    threading.excepthook = lambda args: sys.exit(f"thread failed: {args.exc_value}")
    main()
