"""OpenTelemetry spans for a request's path through the router (README, "Tracing"),
exported over OTLP/HTTP when --otlp-endpoint is set (the server span is
middlewares.tracing_middleware's); without it the API's no-op tracer,
which costs next to nothing. An incoming W3C `traceparent` becomes the parent of the
router's span, and the shard call's span travels to the shard in the gRPC metadata.

    POST /generate_stream (server span: receive -> last byte)
    +-- validate
    +-- shard call (lease -> the stream's end; events: first token)
        +-- [shard] generate -> queue, prefill, decode
"""

from __future__ import annotations

from opentelemetry import propagate, trace
from opentelemetry.trace import NoOpTracer, Span, SpanKind, Tracer

SERVICE_NAME = "sluice-router"


class Tracing:
    """The tracer, and the provider that exports its spans (None: tracing off)."""

    def __init__(self, endpoint: str | None, service_name: str = SERVICE_NAME) -> None:
        self._provider = None
        self.tracer: Tracer = NoOpTracer()
        if endpoint:
            # Imported only when on: the SDK's exporter thread and its HTTP session.
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            self._provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
            exporter = OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces", timeout=10)
            self._provider.add_span_processor(BatchSpanProcessor(exporter))
            self.tracer = self._provider.get_tracer("sluice.router")

    def shutdown(self) -> None:
        """Flushes the spans still queued (blocking: call it off the event loop)."""
        if self._provider is not None:
            self._provider.shutdown()


def shard_call_span(tracer: Tracer) -> tuple[Span, tuple[tuple[str, str], ...]]:
    """A span for one shard call, child of the current one, and the gRPC metadata that
    carries it to the shard. Ended by the caller (it outlives any one `with` block)."""
    span = tracer.start_span("shard call", kind=SpanKind.CLIENT)
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    return span, tuple(carrier.items())
