"""Priority classes against scripted shards: the class reaches the shard from the header or
TGI's parameter, a bad one is a 422, low requests are refused first (the reserved share),
and both outcomes are counted per class. tests/reliability/test_priorities.py shows the
shard admitting a waiting high request before an older low one."""

from __future__ import annotations

import threading

import requests

from protos import shard_pb2
from tests.router.support import wait_until
from tests.router.test_router_deadlines import post, samples

HELLO = {"inputs": "hello", "parameters": {"max_new_tokens": 2}}


def test_the_class_reaches_the_shard_from_the_parameter_or_the_header(stack):
    post(stack, "/generate", HELLO)
    assert stack.fake.requests[-1].priority == shard_pb2.PRIORITY_NORMAL
    post(stack, "/generate", HELLO, {"X-Priority": "High"})
    assert stack.fake.requests[-1].priority == shard_pb2.PRIORITY_HIGH
    body = {"inputs": "hello", "parameters": {"max_new_tokens": 2, "priority": "low"}}
    post(stack, "/generate_stream", body, {"X-Priority": "high"})     # the parameter wins
    assert stack.fake.requests[-1].priority == shard_pb2.PRIORITY_LOW
    chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    assert post(stack, "/v1/chat/completions", chat, {"X-Priority": "low"}).status_code == 200
    assert stack.fake.requests[-1].priority == shard_pb2.PRIORITY_LOW


def test_an_unknown_class_is_a_422(stack):
    response = post(stack, "/generate", HELLO, {"X-Priority": "urgent"})
    assert response.status_code == 422
    assert response.json()["error"] == ("Input validation error: `X-Priority` must be one of high, normal, low. "
                                        "Given: 'urgent'")
    response = post(stack, "/generate", {"inputs": "hi", "parameters": {"priority": "asap"}})
    assert response.status_code == 422 and "`parameters.priority` must be one of" in response.json()["error"]


def test_low_requests_are_shed_first_and_counted_by_class(make_stack):
    stack = make_stack(max_concurrent_requests=4, priority_reserve_share=0.5)
    stack.fake.script.block = True
    holders = [threading.Thread(target=post, args=(stack, "/generate", HELLO, {"X-Priority": "low"}))
               for _ in range(2)]
    for holder in holders:
        holder.start()
    assert wait_until(lambda: stack.fake.num_active == 2, 5.0)
    # Two of four permits held: a third low request would enter the reserved half.
    response = post(stack, "/generate", HELLO, {"X-Priority": "low"})
    assert response.status_code == 429 and response.json()["error_type"] == "overloaded"
    normal = threading.Thread(target=post, args=(stack, "/generate", HELLO))
    high = threading.Thread(target=post, args=(stack, "/generate", HELLO, {"X-Priority": "high"}))
    normal.start(), high.start()
    assert wait_until(lambda: stack.fake.num_active == 4, 5.0)
    assert post(stack, "/generate", HELLO, {"X-Priority": "high"}).status_code == 429   # all four held
    stack.fake.script.block = False
    for thread in (*holders, normal, high):
        thread.join(10)
    metrics = samples(stack)
    assert metrics['sluice_priority_requests_total{outcome="admitted",priority="low"}'] == 2
    assert metrics['sluice_priority_requests_total{outcome="rejected",priority="low"}'] == 1
    assert metrics['sluice_priority_requests_total{outcome="admitted",priority="high"}'] == 1
    assert metrics['sluice_priority_requests_total{outcome="rejected",priority="high"}'] == 1
    assert metrics['sluice_priority_requests_total{outcome="admitted",priority="normal"}'] == 1
    assert requests.get(stack.url + "/health", timeout=5).status_code == 200
