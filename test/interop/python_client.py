"""grpcio (Python, C-core) interop client for Roster's conformance suite.

Implements the client side of grpc/grpc doc/interop-test-descriptions.md for the cases listed in
test/interop/cases.ts. Stubs are written by hand with channel.unary_unary & co. over messages_pb2 /
empty_pb2, which test/interop/python-client.ts generates with protoc into a temporary directory passed as
--pb2_dir (generated code is never committed).

--test_case takes one case or a comma-separated list. With --json, one JSON line per case is printed:
{"case": name, "ok": bool, "error": str|null, "ms": float}. The exit status is 1 if any case failed.

Limits of grpcio that shape some cases (documented per case below):
  * grpcio cannot read the compressed flag of received messages, so server_compressed_* check status and
    payload sizes only (the grpc-js client additionally checks the flags on the wire);
  * grpcio cannot switch compression per message inside one stream, so client_compressed_streaming sends
    its compressed and its uncompressed message on two calls.
"""

import argparse
import json
import os
import queue
import sys
import threading
import time

import grpc

ECHO_INITIAL_KEY = "x-grpc-test-echo-initial"
ECHO_TRAILING_KEY = "x-grpc-test-echo-trailing-bin"
SPECIAL_STATUS_MESSAGE = "\t\ntest with whitespace\r\nand Unicode BMP \u263a and non-BMP \U0001f608\t\n"
CALL_TIMEOUT_S = 10.0
LARGE_REQUEST_SIZE = 271828
LARGE_RESPONSE_SIZE = 314159

messages_pb2 = None
empty_pb2 = None


class CaseFailure(Exception):
    pass


def check(condition, message):
    if not condition:
        raise CaseFailure(message)


def zeros(size):
    return messages_pb2.Payload(type=messages_pb2.COMPRESSABLE, body=b"\0" * size)


def assert_zeros(payload, size, what):
    body = payload.body
    check(len(body) == size, "%s: payload is %d bytes, expected %d" % (what, len(body), size))
    check(body.count(0) == size, "%s: payload is not all zeros" % what)


def expect_code(code, what, fn):
    try:
        fn()
    except grpc.RpcError as err:
        check(
            err.code() is code,
            "%s: expected %s, got %s: %r" % (what, code, err.code(), err.details()),
        )
        return err
    raise CaseFailure("%s: expected %s, but the call succeeded" % (what, code))


class Pipe:
    """Request iterator fed from the test; bounded: gives up (half-closes) after CALL_TIMEOUT_S idle."""

    def __init__(self):
        self._queue = queue.Queue()

    def __iter__(self):
        return self

    def __next__(self):
        try:
            item = self._queue.get(timeout=CALL_TIMEOUT_S)
        except queue.Empty:
            raise StopIteration
        if item is None:
            raise StopIteration
        return item

    def add(self, request):
        self._queue.put(request)

    def close(self):
        self._queue.put(None)


class TestStub:
    def __init__(self, channel):
        m = messages_pb2
        e = empty_pb2
        p = "/grpc.testing.TestService/"
        self.EmptyCall = channel.unary_unary(p + "EmptyCall", e.Empty.SerializeToString, e.Empty.FromString)
        self.UnaryCall = channel.unary_unary(
            p + "UnaryCall", m.SimpleRequest.SerializeToString, m.SimpleResponse.FromString
        )
        self.StreamingOutputCall = channel.unary_stream(
            p + "StreamingOutputCall",
            m.StreamingOutputCallRequest.SerializeToString,
            m.StreamingOutputCallResponse.FromString,
        )
        self.StreamingInputCall = channel.stream_unary(
            p + "StreamingInputCall",
            m.StreamingInputCallRequest.SerializeToString,
            m.StreamingInputCallResponse.FromString,
        )
        self.FullDuplexCall = channel.stream_stream(
            p + "FullDuplexCall",
            m.StreamingOutputCallRequest.SerializeToString,
            m.StreamingOutputCallResponse.FromString,
        )
        self.UnimplementedCall = channel.unary_unary(
            p + "UnimplementedCall", e.Empty.SerializeToString, e.Empty.FromString
        )
        self.UnimplementedServiceCall = channel.unary_unary(
            "/grpc.testing.UnimplementedService/UnimplementedCall",
            e.Empty.SerializeToString,
            e.Empty.FromString,
        )


def large_request(**kwargs):
    return messages_pb2.SimpleRequest(
        response_size=LARGE_RESPONSE_SIZE, payload=zeros(LARGE_REQUEST_SIZE), **kwargs
    )


def empty_unary(stub):
    response = stub.EmptyCall(empty_pb2.Empty(), timeout=CALL_TIMEOUT_S)
    check(response is not None, "EmptyCall: response is None")
    check(response.ByteSize() == 0, "EmptyCall: response is not empty")


def large_unary(stub):
    response = stub.UnaryCall(large_request(), timeout=CALL_TIMEOUT_S)
    assert_zeros(response.payload, LARGE_RESPONSE_SIZE, "UnaryCall")


def client_streaming(stub):
    requests = (
        messages_pb2.StreamingInputCallRequest(payload=zeros(size)) for size in (27182, 8, 1828, 45904)
    )
    response = stub.StreamingInputCall(requests, timeout=CALL_TIMEOUT_S)
    check(
        response.aggregated_payload_size == 74922,
        "aggregated_payload_size %d != 74922" % response.aggregated_payload_size,
    )


def server_streaming(stub):
    sizes = (31415, 9, 2653, 58979)
    request = messages_pb2.StreamingOutputCallRequest(
        response_parameters=[messages_pb2.ResponseParameters(size=s) for s in sizes]
    )
    call = stub.StreamingOutputCall(request, timeout=CALL_TIMEOUT_S)
    responses = list(call)
    check(len(responses) == len(sizes), "got %d responses, expected %d" % (len(responses), len(sizes)))
    for i, (response, size) in enumerate(zip(responses, sizes)):
        assert_zeros(response.payload, size, "response %d" % i)
    check(call.code() is grpc.StatusCode.OK, "status %s, expected OK" % call.code())


def ping_pong(stub):
    steps = ((31415, 27182), (9, 8), (2653, 1828), (58979, 45904))
    pipe = Pipe()
    call = stub.FullDuplexCall(pipe, timeout=CALL_TIMEOUT_S)
    try:
        for i, (response_size, request_size) in enumerate(steps):
            pipe.add(
                messages_pb2.StreamingOutputCallRequest(
                    response_parameters=[messages_pb2.ResponseParameters(size=response_size)],
                    payload=zeros(request_size),
                )
            )
            response = next(call, None)
            check(response is not None, "ping %d: stream ended before a reply" % i)
            assert_zeros(response.payload, response_size, "pong %d" % i)
    finally:
        pipe.close()
    rest = list(call)
    check(len(rest) == 0, "got %d extra responses after the 4th" % len(rest))
    check(call.code() is grpc.StatusCode.OK, "status %s, expected OK" % call.code())


def empty_stream(stub):
    call = stub.FullDuplexCall(iter(()), timeout=CALL_TIMEOUT_S)
    responses = list(call)
    check(len(responses) == 0, "got %d responses, expected none" % len(responses))
    check(call.code() is grpc.StatusCode.OK, "status %s, expected OK" % call.code())


def timeout_on_sleeping_server(stub):
    pipe = Pipe()
    try:
        call = stub.FullDuplexCall(pipe, timeout=0.001)
        pipe.add(messages_pb2.StreamingOutputCallRequest(payload=zeros(27182)))
        expect_code(grpc.StatusCode.DEADLINE_EXCEEDED, "FullDuplexCall with 1 ms deadline", lambda: list(call))
    finally:
        pipe.close()


def cancel_after_begin(stub):
    pipe = Pipe()
    try:
        future = stub.StreamingInputCall.future(pipe, timeout=CALL_TIMEOUT_S)
        future.cancel()
        check(future.cancelled(), "future.cancelled() is False after cancel()")
        check(future.code() is grpc.StatusCode.CANCELLED, "status %s, expected CANCELLED" % future.code())
    finally:
        pipe.close()


def cancel_after_first_response(stub):
    pipe = Pipe()
    try:
        call = stub.FullDuplexCall(pipe, timeout=CALL_TIMEOUT_S)
        pipe.add(
            messages_pb2.StreamingOutputCallRequest(
                response_parameters=[messages_pb2.ResponseParameters(size=31415)], payload=zeros(27182)
            )
        )
        first = next(call, None)
        check(first is not None, "stream ended before the first response")
        assert_zeros(first.payload, 31415, "first response")
        call.cancel()
        expect_code(grpc.StatusCode.CANCELLED, "FullDuplexCall cancelled after first response", lambda: list(call))
    finally:
        pipe.close()


def status_code_and_message(stub):
    echo = messages_pb2.EchoStatus(code=2, message="test status message")
    err = expect_code(
        grpc.StatusCode.UNKNOWN,
        "UnaryCall",
        lambda: stub.UnaryCall(messages_pb2.SimpleRequest(response_status=echo), timeout=CALL_TIMEOUT_S),
    )
    check(err.details() == echo.message, "UnaryCall: message %r" % err.details())
    request = messages_pb2.StreamingOutputCallRequest(response_status=echo)
    call = stub.FullDuplexCall(iter((request,)), timeout=CALL_TIMEOUT_S)
    err = expect_code(grpc.StatusCode.UNKNOWN, "FullDuplexCall", lambda: list(call))
    check(err.details() == echo.message, "FullDuplexCall: message %r" % err.details())


def special_status_message(stub):
    echo = messages_pb2.EchoStatus(code=2, message=SPECIAL_STATUS_MESSAGE)
    err = expect_code(
        grpc.StatusCode.UNKNOWN,
        "UnaryCall",
        lambda: stub.UnaryCall(messages_pb2.SimpleRequest(response_status=echo), timeout=CALL_TIMEOUT_S),
    )
    check(
        err.details() == SPECIAL_STATUS_MESSAGE,
        "status message %r, expected %r" % (err.details(), SPECIAL_STATUS_MESSAGE),
    )


def custom_metadata(stub):
    initial_value = "test_initial_metadata_value"
    trailing_value = b"\xab\xab\xab"
    metadata = ((ECHO_INITIAL_KEY, initial_value), (ECHO_TRAILING_KEY, trailing_value))

    def check_echo(what, initial, trailing):
        got_initial = [v for k, v in initial if k == ECHO_INITIAL_KEY]
        check(
            got_initial == [initial_value],
            "%s: initial metadata %s = %r, expected %r" % (what, ECHO_INITIAL_KEY, got_initial, initial_value),
        )
        got_trailing = [v for k, v in trailing if k == ECHO_TRAILING_KEY]
        check(
            got_trailing == [trailing_value],
            "%s: trailing metadata %s = %r, expected %r" % (what, ECHO_TRAILING_KEY, got_trailing, trailing_value),
        )

    response, call = stub.UnaryCall.with_call(large_request(), metadata=metadata, timeout=CALL_TIMEOUT_S)
    assert_zeros(response.payload, LARGE_RESPONSE_SIZE, "UnaryCall")
    check_echo("UnaryCall", call.initial_metadata(), call.trailing_metadata())

    request = messages_pb2.StreamingOutputCallRequest(
        response_parameters=[messages_pb2.ResponseParameters(size=LARGE_RESPONSE_SIZE)],
        payload=zeros(LARGE_REQUEST_SIZE),
    )
    call = stub.FullDuplexCall(iter((request,)), metadata=metadata, timeout=CALL_TIMEOUT_S)
    responses = list(call)
    check(len(responses) == 1, "FullDuplexCall: got %d responses, expected 1" % len(responses))
    assert_zeros(responses[0].payload, LARGE_RESPONSE_SIZE, "FullDuplexCall")
    check(call.code() is grpc.StatusCode.OK, "FullDuplexCall: status %s, expected OK" % call.code())
    check_echo("FullDuplexCall", call.initial_metadata(), call.trailing_metadata())


def unimplemented_method(stub):
    expect_code(
        grpc.StatusCode.UNIMPLEMENTED,
        "TestService/UnimplementedCall",
        lambda: stub.UnimplementedCall(empty_pb2.Empty(), timeout=CALL_TIMEOUT_S),
    )


def unimplemented_service(stub):
    expect_code(
        grpc.StatusCode.UNIMPLEMENTED,
        "UnimplementedService/UnimplementedCall",
        lambda: stub.UnimplementedServiceCall(empty_pb2.Empty(), timeout=CALL_TIMEOUT_S),
    )


def client_compressed_unary(stub):
    def request(expect):
        return large_request(expect_compressed=messages_pb2.BoolValue(value=expect))

    # 1. Feature probe: an uncompressed request that claims to be compressed must be rejected.
    expect_code(
        grpc.StatusCode.INVALID_ARGUMENT,
        "probe (uncompressed, expect_compressed=true)",
        lambda: stub.UnaryCall(request(True), timeout=CALL_TIMEOUT_S, compression=grpc.Compression.NoCompression),
    )
    # 2. Compressed request.
    response = stub.UnaryCall(request(True), timeout=CALL_TIMEOUT_S, compression=grpc.Compression.Gzip)
    assert_zeros(response.payload, LARGE_RESPONSE_SIZE, "compressed request")
    # 3. Uncompressed request.
    response = stub.UnaryCall(request(False), timeout=CALL_TIMEOUT_S, compression=grpc.Compression.NoCompression)
    assert_zeros(response.payload, LARGE_RESPONSE_SIZE, "uncompressed request")


def server_compressed_unary(stub):
    # grpcio cannot see the compressed flag of a received message: status and sizes only.
    for compressed in (True, False):
        request = large_request(response_compressed=messages_pb2.BoolValue(value=compressed))
        response = stub.UnaryCall(request, timeout=CALL_TIMEOUT_S)
        assert_zeros(response.payload, LARGE_RESPONSE_SIZE, "response_compressed=%s" % compressed)


def client_compressed_streaming(stub):
    def request(expect, size):
        return messages_pb2.StreamingInputCallRequest(
            expect_compressed=messages_pb2.BoolValue(value=expect), payload=zeros(size)
        )

    # 1. Feature probe on an uncompressed call.
    expect_code(
        grpc.StatusCode.INVALID_ARGUMENT,
        "probe (uncompressed, expect_compressed=true)",
        lambda: stub.StreamingInputCall(
            iter((request(True, 27182),)), timeout=CALL_TIMEOUT_S, compression=grpc.Compression.NoCompression
        ),
    )
    # 2./3. grpcio sets compression per call, not per message: the spec's single call carrying a compressed
    # then an uncompressed message becomes one gzip call and one uncompressed call; the sizes add up to 73086.
    compressed = stub.StreamingInputCall(
        iter((request(True, 27182),)), timeout=CALL_TIMEOUT_S, compression=grpc.Compression.Gzip
    )
    uncompressed = stub.StreamingInputCall(
        iter((request(False, 45904),)), timeout=CALL_TIMEOUT_S, compression=grpc.Compression.NoCompression
    )
    total = compressed.aggregated_payload_size + uncompressed.aggregated_payload_size
    check(total == 73086, "aggregated_payload_size %d + %d != 73086" % (
        compressed.aggregated_payload_size, uncompressed.aggregated_payload_size))


def server_compressed_streaming(stub):
    # grpcio cannot see the compressed flag of a received message: status and sizes only.
    sizes = (31415, 92653)
    request = messages_pb2.StreamingOutputCallRequest(
        response_parameters=[
            messages_pb2.ResponseParameters(compressed=messages_pb2.BoolValue(value=True), size=sizes[0]),
            messages_pb2.ResponseParameters(compressed=messages_pb2.BoolValue(value=False), size=sizes[1]),
        ]
    )
    call = stub.StreamingOutputCall(request, timeout=CALL_TIMEOUT_S)
    responses = list(call)
    check(len(responses) == 2, "got %d responses, expected 2" % len(responses))
    for i, (response, size) in enumerate(zip(responses, sizes)):
        assert_zeros(response.payload, size, "response %d" % i)
    check(call.code() is grpc.StatusCode.OK, "status %s, expected OK" % call.code())


CASES = {
    f.__name__: f
    for f in (
        empty_unary,
        large_unary,
        client_streaming,
        server_streaming,
        ping_pong,
        empty_stream,
        timeout_on_sleeping_server,
        cancel_after_begin,
        cancel_after_first_response,
        status_code_and_message,
        special_status_message,
        custom_metadata,
        unimplemented_method,
        unimplemented_service,
        client_compressed_unary,
        server_compressed_unary,
        client_compressed_streaming,
        server_compressed_streaming,
    )
}


def run_case(name, target):
    options = [
        ("grpc.max_receive_message_length", -1),
        ("grpc.max_send_message_length", -1),
        # Loopback tests: never route through an http_proxy / grpc_proxy from the environment.
        ("grpc.enable_http_proxy", 0),
    ]
    with grpc.insecure_channel(target, options=options) as channel:
        CASES[name](TestStub(channel))


def describe(err):
    if isinstance(err, CaseFailure):
        return str(err)
    if isinstance(err, grpc.RpcError) and hasattr(err, "code"):
        return "unexpected RPC error %s: %r" % (err.code(), err.details())
    return "unexpected error %s: %s" % (type(err).__name__, err)


def main():
    global messages_pb2, empty_pb2
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server_host", default="127.0.0.1")
    parser.add_argument("--server_port", type=int, required=True)
    parser.add_argument("--test_case", required=True, help="case name or comma-separated list")
    parser.add_argument("--pb2_dir", required=True, help="directory with generated messages_pb2/empty_pb2")
    parser.add_argument("--json", action="store_true", help="print one JSON result line per case")
    args = parser.parse_args()

    sys.path.insert(0, os.path.abspath(args.pb2_dir))
    import empty_pb2 as _empty_pb2
    import messages_pb2 as _messages_pb2

    empty_pb2, messages_pb2 = _empty_pb2, _messages_pb2

    host = args.server_host
    target = "[%s]:%d" % (host, args.server_port) if ":" in host else "%s:%d" % (host, args.server_port)
    names = [n for n in args.test_case.split(",") if n]
    unknown = [n for n in names if n not in CASES]
    if unknown:
        parser.error("unknown test case(s): %s" % ", ".join(unknown))

    failed = 0
    for name in names:
        started = time.monotonic()
        error = None
        try:
            run_case(name, target)
        except Exception as err:  # noqa: BLE001 - every failure becomes a case result
            error = describe(err)
        ms = round((time.monotonic() - started) * 1000, 1)
        if error is not None:
            failed += 1
        if args.json:
            print(json.dumps({"case": name, "ok": error is None, "error": error, "ms": ms}), flush=True)
        elif error is None:
            print("PASS %s (%.1f ms)" % (name, ms), flush=True)
        else:
            print("FAIL %s: %s" % (name, error), flush=True)
    code = 1 if failed else 0
    # Threads left by cancelled or timed-out calls must not keep the process alive.
    if threading.active_count() > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
