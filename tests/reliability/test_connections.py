"""Silent and slow connections cannot pile up (issue 12, item 4): the keep-alive timer
closes idle connections and those whose headers do not arrive, a body that does not arrive
gets 408, the router lifts its soft open-file limit to the hard one, and when it runs out
of descriptors anyway it logs that once per interval and keeps serving what is open.
Real router and shard processes (the launcher) on loopback, serving the tiny Llama."""
from __future__ import annotations

import json
import resource
import select
import socket
import threading
import time

import psutil

from tests.reliability.real_stack import RealStack, sse_events
from tests.router.support import wait_until

STREAM_TOKENS = 200


class Stream(threading.Thread):
    """A /generate_stream whose response headers are in (so its connection is open and
    served) before the test's sockets; a thread reads it to its end."""

    def __init__(self, stack: RealStack) -> None:
        super().__init__(daemon=True)
        self.conn = stack.connection(timeout_s=120)
        self.conn.request("POST", "/generate_stream", json.dumps({"inputs": "hello", "parameters": {
            "max_new_tokens": STREAM_TOKENS}}), {"Content-Type": "application/json"})
        self.response = self.conn.getresponse()
        self.body = b""
        self.start()

    def run(self) -> None:
        self.body = self.response.read()

    def check(self) -> None:
        self.join(120)
        self.conn.close()
        assert self.response.status == 200, self.body
        events = sse_events(self.body)
        assert "error" not in events[-1], events[-1]
        assert len(events) == STREAM_TOKENS and events[-1]["generated_text"] is not None


def silent_sockets(stack: RealStack, count: int) -> list[socket.socket]:
    """`count` connections that never send a byte; non-blocking, so that a full listen
    backlog does not hold up the test (the kernel completes them later)."""
    socks = []
    for _ in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(stack.host_port)
        socks.append(sock)
    return socks


def closed_by_server(sock: socket.socket, timeout_s: float) -> bool:
    """Whether the server closes `sock` within `timeout_s` (EOF, or a reset)."""
    readable, _, _ = select.select([sock], [], [], timeout_s)
    if not readable:
        return False
    try:
        return sock.recv(4096) == b""
    except ConnectionResetError:
        return True


def generate_ok(stack: RealStack) -> bool:
    try:
        return stack.post("/generate", {"inputs": "hi", "parameters": {"max_new_tokens": 2}}, timeout_s=2)[0] == 200
    except OSError:  # not accepted yet: the connection times out
        return False


def router_log_lines(stack: RealStack, text: str) -> int:
    return sum(text in line for line in stack.launcher.output().splitlines())


def test_silent_idle_and_slow_connections_are_closed_while_a_stream_runs(start_stack, tiny_model):
    stack = start_stack("--keep-alive-timeout-s", "1", "--request-body-timeout-s", "2", model_dir=tiny_model)
    stream = Stream(stack)
    started = time.monotonic()
    silent = silent_sockets(stack, 20)
    # Headers one byte at a time: bytes arriving do not extend the deadline.
    trickle = socket.create_connection(stack.host_port, timeout=5)
    trickle.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    while time.monotonic() - started < 5:  # 1 s, and slack for a loaded machine
        try:
            trickle.sendall(b"a")
        except (BrokenPipeError, ConnectionResetError):
            break
        if closed_by_server(trickle, 0.2):
            break
    else:
        raise AssertionError("a connection trickling its headers outlived the deadline")
    for sock in silent:
        assert closed_by_server(sock, max(0.1, started + 5 - time.monotonic())), "a silent socket stayed open"

    # After a response, an idle keep-alive connection is closed too.
    conn = stack.connection(timeout_s=5)
    conn.request("GET", "/health")
    assert conn.getresponse().read() == b""
    assert closed_by_server(conn.sock, 5), "an idle keep-alive connection stayed open"

    # Headers in time, but a body that stops after 10 of its 100 bytes: 408 at the body deadline.
    slow_body = stack.connection(timeout_s=5)
    sent = time.monotonic()
    slow_body.putrequest("POST", "/generate")
    slow_body.putheader("Content-Type", "application/json")
    slow_body.putheader("Content-Length", "100")
    slow_body.endheaders(b'{"inputs":')
    response = slow_body.getresponse()
    assert response.status == 408 and time.monotonic() - sent < 6
    assert json.loads(response.read())["error_type"] == "validation"

    stream.check()  # the stream ran beside all of it, untouched by the timers
    for sock in [*silent, trickle]:
        sock.close()
    conn.close()
    slow_body.close()


def test_the_router_raises_its_soft_open_file_limit_to_the_hard_one(start_stack, tiny_model):
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    soft = min(1024, hard // 2)
    stack = start_stack(model_dir=tiny_model, rlimit_nofile=(soft, hard))
    [router] = stack.processes()["router"]
    assert router.rlimit(psutil.RLIMIT_NOFILE) == (hard, hard)
    # The router raised it itself: the launcher still runs under the limit it was given.
    assert psutil.Process(stack.launcher.popen.pid).rlimit(psutil.RLIMIT_NOFILE) == (soft, hard)


def test_more_silent_sockets_than_the_file_limit_do_not_take_the_router_down(start_stack, tiny_model):
    stack = start_stack("--keep-alive-timeout-s", "2", model_dir=tiny_model, rlimit_nofile=(256, 256))
    stream = Stream(stack)
    silent = silent_sockets(stack, 300)
    try:
        assert wait_until(lambda: router_log_lines(stack, "Too many open files") > 0, 10, 0.2), \
            "the router never ran out of descriptors: the test proves nothing"
        stream.check()  # a stream open before the flood is served to its end
        # Once the timer has closed the silent sockets, new connections are accepted again.
        assert wait_until(lambda: generate_ok(stack), 30, 0.5), "new requests still fail"
    finally:
        for sock in silent:
            sock.close()
    assert stack.launcher.popen.poll() is None and stack.processes()["router"]
    # One line per 10 s, not a traceback per failed accept() (22,800 in 10 s before).
    assert router_log_lines(stack, "Too many open files") <= 5, stack.launcher.output()[-3000:]
    assert "Traceback" not in stack.launcher.output()
