"""Every router Prometheus metric, on a registry per app (so tests can run several apps).

TGI's names are kept so existing dashboards work. TGI's counters have no `_total` suffix,
and prometheus_client always appends one to counters, so those few (ExactCounter) are
rendered by hand next to the registry's output, with `# TYPE ... counter`. Our own
counters (sluice_*) are ordinary prometheus_client Counters and do end in `_total`."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from router.priorities import PRIORITIES
from router.config import Limits

# TGI: 35 geometric buckets 0.0001 * 1.5^k (k = 1..35) for every `*duration` histogram.
DURATION_BUCKETS = tuple(0.0001 * 1.5**k for k in range(1, 36))
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ExactCounter:
    """A monotonic counter exposed under exactly `name`."""

    def __init__(self, name: str, documentation: str, label_name: str | None = None) -> None:
        self.name, self.documentation, self.label_name = name, documentation, label_name
        self._values: dict[str, int] = {}

    def inc(self, label_value: str = "") -> None:
        self._values[label_value] = self._values.get(label_value, 0) + 1

    def render(self) -> str:
        lines = [f"# HELP {self.name} {self.documentation}", f"# TYPE {self.name} counter"]
        for label_value, value in sorted(self._values.items()):
            labels = f'{{{self.label_name}="{label_value}"}}' if self.label_name else ""
            lines.append(f"{self.name}{labels} {value}")
        return "\n".join(lines) + "\n"


@dataclass(frozen=True, slots=True)
class ShardState:
    uri: str
    healthy: bool
    num_outstanding: int
    num_reserved_tokens: int
    max_batch_total_tokens: int
    num_waiting: int  # on the shard, as its last Health answer said
    num_running: int  # in the shard's batch, every router's calls (last Health answer)


_SHARD_GAUGES = (
    ("sluice_shard_healthy", "1 if the shard is in rotation", lambda s: 1.0 if s.healthy else 0.0),
    ("sluice_shard_outstanding_requests", "requests this router has open on the shard",
     lambda s: s.num_outstanding),
    ("sluice_shard_reserved_tokens", "prompt + max_new_tokens of this router's open calls on the shard",
     lambda s: s.num_reserved_tokens),
    ("sluice_shard_max_batch_total_tokens", "the shard's KV budget (admission refuses calls past it)",
     lambda s: s.max_batch_total_tokens),
    ("sluice_shard_waiting_requests", "requests queued on the shard, not yet in its batch (last health check)",
     lambda s: s.num_waiting),
    ("sluice_shard_running_requests", "requests in the shard's batch, every router's (last health check)",
     lambda s: s.num_running),
)


class _ShardCollector:
    """Per-shard gauges read at scrape time from the pool's own state."""

    def __init__(self, shard_states: Callable[[], Iterable[ShardState]]) -> None:
        self._shard_states = shard_states

    def collect(self):
        states = list(self._shard_states())
        families = []
        for name, documentation, value in _SHARD_GAUGES:
            family = GaugeMetricFamily(name, documentation, labels=["shard"])
            for state in states:
                family.add_metric([state.uri], value(state))
            families.append(family)
        return families


class Metrics:
    def __init__(self, limits: Limits, num_in_flight: Callable[[], int],
                 shard_states: Callable[[], Iterable[ShardState]]) -> None:
        self.registry = CollectorRegistry()
        self.request_count = ExactCounter("tgi_request_count", "generation requests received")
        self.request_success = ExactCounter("tgi_request_success", "requests that finished generating")
        self.request_failure = ExactCounter("tgi_request_failure", "failed requests by cause", "err")
        self._add_durations()
        self._add_lengths(limits)
        self._add_admission(num_in_flight)
        self.registry.register(_ShardCollector(shard_states))

    def _add_durations(self) -> None:
        def duration(name: str, doc: str) -> Histogram:
            return Histogram(name, doc, buckets=DURATION_BUCKETS, registry=self.registry)

        self.request_duration = duration("tgi_request_duration", "whole request time (s)")
        self.validation_duration = duration("tgi_request_validation_duration", "parse, tokenize, validate (s)")
        self.queue_duration = duration("tgi_request_queue_duration", "waiting in the shard queue (s)")
        self.inference_duration = duration("tgi_request_inference_duration", "prefill + decode time (s)")
        self.time_per_token = duration("tgi_request_mean_time_per_token_duration",
                                       "inference time / generated tokens (s)")
        self.ttft = duration("sluice_time_to_first_token_seconds", "request start to first token (s)")
        self.inter_token = duration("sluice_inter_token_latency_seconds", "gap between two tokens (s)")

    def _add_lengths(self, limits: Limits) -> None:
        registry = self.registry
        self.input_length = Histogram("tgi_request_input_length", "prompt tokens after truncation",
                                      buckets=_linear(limits.max_input_tokens), registry=registry)
        self.generated_tokens = Histogram("tgi_request_generated_tokens", "tokens generated per request",
                                          buckets=_linear(limits.max_total_tokens), registry=registry)
        self.max_new_tokens = Histogram("tgi_request_max_new_tokens", "resolved max_new_tokens",
                                        buckets=_linear(limits.max_total_tokens), registry=registry)

    def _add_admission(self, num_in_flight: Callable[[], int]) -> None:
        registry = self.registry
        self.queue_size = Gauge("tgi_queue_size", "admitted requests still waiting for their first token",
                                registry=registry)
        in_flight = Gauge("sluice_requests_in_flight", "admission permits held: shard calls queued or running",
                          registry=registry)
        in_flight.set_function(num_in_flight)
        self.rejected = Counter("sluice_requests_rejected", "requests refused at admission",
                                ["reason"], registry=registry)
        # Exported as 0 from the start: rate() needs a sample before the first 429 to count it.
        self.rejected.labels(reason="overloaded")
        self.cancelled = Counter("sluice_requests_cancelled", "requests whose client went away",
                                 registry=registry)
        self.deadlines = Counter("sluice_request_deadlines", "requests ended by a deadline: `queue` "
                                 "(no first token in time: 429) or `total` (cut while generating)",
                                 ["phase"], registry=registry)
        for phase in ("queue", "total"):
            self.deadlines.labels(phase=phase)
        self.priority_requests = Counter("sluice_priority_requests", "generation requests by priority class "
                                         "and admission outcome", ["priority", "outcome"], registry=registry)
        for priority in PRIORITIES:
            for outcome in ("admitted", "rejected"):
                self.priority_requests.labels(priority=priority, outcome=outcome)

    def render(self) -> bytes:
        counters = (self.request_count, self.request_success, self.request_failure)
        return generate_latest(self.registry) + "".join(c.render() for c in counters).encode()

    def record_failure(self, err: str) -> None:
        """`err` is TGI's label (validation, overloaded, generation, incomplete, dropped) or
        one of sluice's deadline outcomes (queue_timeout, deadline_exceeded)."""
        self.request_failure.inc(err)
        if err in ("overloaded", "queue_timeout"):
            self.rejected.labels(reason=err).inc()
        if err in ("queue_timeout", "deadline_exceeded"):
            self.deadlines.labels(phase="queue" if err == "queue_timeout" else "total").inc()
        elif err == "dropped":
            self.cancelled.inc()

    def record_validated(self, input_length: int, max_new_tokens: int, validation_s: float) -> None:
        self.input_length.observe(input_length)
        self.max_new_tokens.observe(max_new_tokens)
        self.validation_duration.observe(validation_s)

    def record_success(self, *, total_s: float, queue_s: float, inference_s: float,
                       generated_tokens: int) -> None:
        self.request_success.inc()
        self.request_duration.observe(total_s)
        self.queue_duration.observe(queue_s)
        self.inference_duration.observe(inference_s)
        self.generated_tokens.observe(generated_tokens)
        if generated_tokens:
            self.time_per_token.observe(inference_s / generated_tokens)


def _linear(limit: int) -> tuple[float, ...]:
    """TGI's token histograms: 100 equal buckets up to the limit."""
    step = max(limit / 100, 1e-9)
    return tuple(step * k for k in range(1, 101))
