"""The playground page in real headless Chromium against the real router and shard: both
panels side by side, Stop, and the errors people must be able to read."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

from tests.playground.conftest import API_KEY, ARTIFACTS, metric

# Records which panel shows text first, from inside the page, so no polling gap can blur it.
WATCH_FIRST_TEXT = """() => {
  window.firstText = [];
  for (const name of ["stream", "plain"]) {
    const output = document.querySelector(`#panel-${name} .output`);
    new MutationObserver(() => {
      if (output.textContent && !window.firstText.includes(name)) window.firstText.push(name);
    }).observe(output, {childList: true, characterData: true, subtree: true});
  }
}"""


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read().decode()


def open_playground(page, url: str, max_new_tokens: int, prompt: str | None = None, chat: bool = True):
    page.goto(url + "/playground")
    page.fill("#max-new-tokens", str(max_new_tokens))
    page.fill("#temperature", "0")
    if prompt is not None:
        page.fill("#prompt", prompt)
    page.set_checked("#chat-template", chat)


def wait_until_idle(page) -> None:
    page.wait_for_function("() => !document.querySelector('#generate').disabled")


def panel(page, name: str) -> dict[str, str]:
    root = f"#panel-{name}"
    return {key: page.inner_text(f"{root} .{key}") for key in ("status", "output", "error", "count")}


def test_root_is_health_for_clients_and_a_link_for_browsers(playground_url):
    status, _, body = get(playground_url + "/")
    assert (status, body) == (200, "")
    status, headers, body = get(playground_url + "/", {"Accept": "text/html,application/xhtml+xml"})
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert 'href="/playground"' in body and "SmolLM2" in body


def test_page_is_served_without_the_key_that_generation_needs(auth_url):
    status, _, body = get(auth_url + "/playground")
    assert status == 200 and 'data-api-key="required"' in body
    for asset in ("/static/playground.js", "/static/playground.css"):
        assert get(auth_url + asset)[0] == 200
    request = urllib.request.Request(auth_url + "/generate", data=b'{"inputs": "hi"}',
                                     headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(request, timeout=10)
        raise AssertionError("generation without the key must be refused")
    except urllib.error.HTTPError as err:
        assert err.code == 401


def test_stream_shows_text_first_and_both_end_with_the_same_greedy_text(page, playground_url):
    open_playground(page, playground_url, max_new_tokens=24)
    page.evaluate(WATCH_FIRST_TEXT)
    page.click("#generate")
    page.wait_for_selector("#panel-stream .output:not(:empty)")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "playground-streaming.png")
    wait_until_idle(page)
    page.locator("body").screenshot(path=ARTIFACTS / "playground.png")

    assert page.evaluate("window.firstText") == ["stream", "plain"]
    stream, plain = panel(page, "stream"), panel(page, "plain")
    assert stream["status"] == plain["status"] == "done · length"
    assert stream["output"] and stream["output"] == plain["output"]
    assert stream["count"] == plain["count"] == "24"
    arrivals = page.evaluate("[panels.stream.arrivals, panels.plain.arrivals]")
    # Streamed tokens arrive spread out and before the non-streamed answer, which lands at once.
    assert arrivals[0][-1] > arrivals[0][0] and len(set(arrivals[1])) == 1
    assert arrivals[0][0] < arrivals[1][0]


def test_stop_cancels_both_requests_on_the_server(page, playground_url):
    cancelled = metric(playground_url, "sluice_requests_cancelled_total")
    # A prompt the model keeps continuing, so generation cannot end before Stop.
    open_playground(page, playground_url, max_new_tokens=400, chat=False,
                    prompt="Count to one thousand: 1, 2, 3, 4, 5, 6, 7, 8,")
    page.click("#generate")
    page.wait_for_selector("#panel-stream .output:not(:empty)")
    page.click("#stop")
    wait_until_idle(page)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "playground-stopped.png")

    assert panel(page, "stream")["status"] == panel(page, "plain")["status"] == "stopped"
    assert int(panel(page, "stream")["count"]) < 400
    deadline = time.monotonic() + 20
    while metric(playground_url, "sluice_requests_cancelled_total") < cancelled + 2:
        assert time.monotonic() < deadline, "the router never saw the two requests go away"
        time.sleep(0.2)
    while metric(playground_url, "sluice_requests_in_flight") != 0:
        assert time.monotonic() < deadline, "the slots were not freed"
        time.sleep(0.2)


def test_validation_error_shows_the_servers_message(page, playground_url):
    open_playground(page, playground_url, max_new_tokens=100_000)
    page.click("#generate")
    wait_until_idle(page)
    for name in ("stream", "plain"):
        shown = panel(page, name)
        assert shown["status"] == "error"
        assert shown["error"].startswith("Input validation error: ") and "max_new_tokens" in shown["error"]


def test_dropped_stream_is_reported_as_such(page, playground_url):
    # The one stubbed response: a stream that ends after one token, without its last event.
    event = {"index": 1, "token": {"id": 1, "text": "Deep", "logprob": -0.1, "special": False},
             "generated_text": None, "details": None}
    page.route("**/generate_stream", lambda route: route.fulfill(
        status=200, content_type="text/event-stream", body=f"data: {json.dumps(event)}\n\n"))
    open_playground(page, playground_url, max_new_tokens=2)
    page.click("#generate")
    wait_until_idle(page)
    stream = panel(page, "stream")
    assert stream["status"] == "error" and stream["output"] == "Deep"
    assert stream["error"].startswith("Stream dropped")
    assert panel(page, "plain")["status"] == "done · length"


def test_a_stream_cut_mid_answer_resumes_and_ends_like_the_plain_one(page, resume_url):
    """A network blip: the real stream's first three events reach the page, then the
    connection ends. The page reconnects to /stream/{token} with Last-Event-ID and gets
    the rest from the server, which kept generating."""
    def cut(route) -> None:
        real = route.fetch()
        first_three = b"\n\n".join(real.body().split(b"\n\n")[:3]) + b"\n\n"
        assert first_three.startswith(b"id: 1\ndata: ")
        route.fulfill(status=200, body=first_three, headers={
            "Content-Type": "text/event-stream", "X-Resume-Token": real.headers["x-resume-token"]})

    page.route("**/generate_stream", cut)
    open_playground(page, resume_url, max_new_tokens=12)
    page.click("#generate")
    wait_until_idle(page)
    stream, plain = panel(page, "stream"), panel(page, "plain")
    assert stream["status"] == "done · length", stream
    assert stream["output"] == plain["output"] and len(stream["output"]) > 0


def test_api_key_is_asked_for_and_a_busy_server_says_retry(page, auth_url):
    open_playground(page, auth_url, max_new_tokens=8)
    assert page.is_visible("#api-key")
    page.click("#generate")
    wait_until_idle(page)
    for name in ("stream", "plain"):
        assert panel(page, name)["error"].startswith("Unauthorized")

    # With the key, both requests get in; the router has room for one, the other gets 429.
    page.fill("#api-key", API_KEY)
    page.click("#generate")
    wait_until_idle(page)
    shown = sorted((panel(page, "stream"), panel(page, "plain")), key=lambda p: p["status"])
    assert shown[0]["status"] == "done · length" and shown[0]["output"]
    assert shown[1]["status"] == "error" and shown[1]["error"] == "Server busy, retry in a moment."
