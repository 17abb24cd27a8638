"""Blocking HTTP clients for the operations tests: a streaming request read on its own
thread with the arrival time of every event, and Prometheus text scrapes."""
from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


class Stream(threading.Thread):
    """POST /generate_stream; `events` holds (time.monotonic(), event) as they arrive."""

    def __init__(self, url: str, max_new_tokens: int, prompt: str = "Tell me a story."):
        super().__init__(daemon=True)
        body = {"inputs": prompt, "parameters": {"max_new_tokens": max_new_tokens}}
        self._request = urllib.request.Request(
            url + "/generate_stream", data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"})
        self.status: int | None = None
        self.events: list[tuple[float, dict]] = []
        self.first_event = threading.Event()
        self.start()

    def run(self) -> None:
        try:
            with urllib.request.urlopen(self._request, timeout=120) as response:
                self.status = response.status
                for line in response:
                    if line.startswith(b"data:"):
                        self.events.append((time.monotonic(), json.loads(line[5:])))
                        self.first_event.set()
        except urllib.error.HTTPError as exc:
            self.status = exc.code
            self.events.append((time.monotonic(), json.loads(exc.read())))
        finally:
            self.first_event.set()

    @property
    def error_at(self) -> float | None:
        return next((at for at, event in self.events if "error" in event), None)

    @property
    def finished(self) -> bool:
        return bool(self.events) and self.events[-1][1].get("generated_text") is not None


def post(url: str, path: str, body: dict, timeout_s: float = 60) -> tuple[int, dict]:
    request = urllib.request.Request(url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} from a Prometheus text endpoint."""
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def sample(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))
