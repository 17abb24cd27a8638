"""Tracing through the real stack: a request with a W3C traceparent comes back as spans
from both processes, exported over OTLP/HTTP to a receiver in this test process (the
opentelemetry-proto messages a Collector takes), with every parent link intact."""
from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (ExportTraceServiceRequest,
                                                                      ExportTraceServiceResponse)

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN_ID = "00f067aa0ba902b7"


class OtlpReceiver:
    """POST /v1/traces with protobuf bodies: (service, span name, trace id, span id, parent id)."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, str, str, str, str]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                export = ExportTraceServiceRequest.FromString(self.rfile.read(int(self.headers["Content-Length"])))
                for resource_spans in export.resource_spans:
                    service = next(a.value.string_value for a in resource_spans.resource.attributes
                                   if a.key == "service.name")
                    for scope in resource_spans.scope_spans:
                        receiver.spans += [(service, s.name, s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex())
                                           for s in scope.spans]
                body = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def of_trace(self, trace_id: str) -> dict[tuple[str, str], tuple[str, str]]:
        """(service, name) -> (span id, parent id) for one trace's spans."""
        return {(service, name): (span_id, parent) for service, name, trace, span_id, parent in self.spans
                if trace == trace_id}


@pytest.fixture
def receiver():
    otlp = OtlpReceiver()
    yield otlp
    otlp.server.shutdown()


def test_a_traceparent_comes_back_in_spans_from_the_router_and_the_shard(start_stack, tiny_model, receiver,
                                                                        monkeypatch):
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")   # export within 0.1 s, not 5
    stack = start_stack("--otlp-endpoint", receiver.url, model_dir=tiny_model)
    status, _, body = stack.post("/generate_stream", {"inputs": "hello", "parameters": {"max_new_tokens": 4}},
                                 {"traceparent": f"00-{TRACE_ID}-{CLIENT_SPAN_ID}-01"})
    assert status == 200, body
    expected = {("sluice-router", "POST /generate_stream"), ("sluice-router", "validate"),
                ("sluice-router", "shard call"), ("sluice-shard", "generate"), ("sluice-shard", "queue"),
                ("sluice-shard", "prefill"), ("sluice-shard", "decode")}
    deadline = time.monotonic() + 30
    while not expected <= set(receiver.of_trace(TRACE_ID)) and time.monotonic() < deadline:
        time.sleep(0.1)
    spans = receiver.of_trace(TRACE_ID)
    assert expected <= set(spans), sorted(spans)
    parent = {name: spans[key][1] for key in expected for name in [key[1]]}
    span_id = {key[1]: spans[key][0] for key in expected}
    assert parent["POST /generate_stream"] == CLIENT_SPAN_ID          # the client's span is the root's parent
    assert parent["validate"] == parent["shard call"] == span_id["POST /generate_stream"]
    assert parent["generate"] == span_id["shard call"]                # across the gRPC hop
    assert parent["queue"] == parent["prefill"] == parent["decode"] == span_id["generate"]
    # Without a traceparent a request starts a trace of its own; probes make no spans.
    assert stack.get("/health")[0] == 200
    assert stack.post("/generate", {"inputs": "hi", "parameters": {"max_new_tokens": 2}})[0] == 200

    def own_roots() -> list:
        return [span for span in receiver.spans if span[1] == "POST /generate" and span[4] == ""]

    while not own_roots() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(own_roots()) == 1 and own_roots()[0][2] != TRACE_ID
    assert all(name != "GET /health" for _, name, *_ in receiver.spans)
