"""The shard's spans of one Generate call (README, "Tracing"): `generate`, with `queue`,
`prefill` and `decode` under it, children of the router's `shard call` span, whose W3C
traceparent comes in the gRPC metadata. Exported over OTLP/HTTP when --otlp-endpoint is
set. The spans are written when the call ends, from timestamps taken on the gRPC loop:
the engine thread does no tracing work."""
from __future__ import annotations

import time
from collections.abc import Iterable

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

SERVICE_NAME = "sluice-shard"


class ShardTracing:
    def __init__(self, endpoint: str | None) -> None:
        self._provider = self._tracer = None
        if endpoint:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            self._provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
            exporter = OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces", timeout=10)
            self._provider.add_span_processor(BatchSpanProcessor(exporter))
            self._tracer = self._provider.get_tracer("sluice.shard")

    def call(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> CallTrace | None:
        if self._tracer is None:
            return None
        carrier = {key: value for key, value in metadata or () if isinstance(value, str)}
        return CallTrace(self._tracer, propagate.extract(carrier))

    def shutdown(self) -> None:
        if self._provider is not None:
            self._provider.shutdown()


class CallTrace:
    """One call's timestamps (ns), turned into spans at its end."""

    def __init__(self, tracer, parent) -> None:
        self._tracer, self._parent = tracer, parent
        self.started_ns = time.time_ns()
        self.first_token_ns: int | None = None
        self.queue_s = 0.0
        self.num_tokens = 0

    def token(self, queue_time_s: float | None) -> None:
        if self.first_token_ns is None:
            self.first_token_ns = time.time_ns()
            self.queue_s = queue_time_s or 0.0
        self.num_tokens += 1

    def end(self, finished: bool) -> None:
        end_ns = time.time_ns()
        span = self._tracer.start_span("generate", context=self._parent, kind=SpanKind.SERVER,
                                       start_time=self.started_ns)
        span.set_attribute("sluice.generated_tokens", self.num_tokens)
        if not finished:
            span.set_status(Status(StatusCode.ERROR, "cancelled or failed before the end"))
        inside = trace.set_span_in_context(span)
        if self.first_token_ns is None:   # ended (cancelled, refused) before its first token
            phases = [("queue", self.started_ns, end_ns)]
        else:
            queue_end_ns = min(self.first_token_ns, self.started_ns + int(self.queue_s * 1e9))
            phases = [("queue", self.started_ns, queue_end_ns), ("prefill", queue_end_ns, self.first_token_ns),
                      ("decode", self.first_token_ns, end_ns)]
        for name, start_ns, stop_ns in phases:
            self._tracer.start_span(name, context=inside, start_time=start_ns).end(end_time=max(start_ns, stop_ns))
        span.end(end_time=end_ns)
