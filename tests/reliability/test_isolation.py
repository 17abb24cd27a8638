"""No request sees another's tokens, whatever ids clients send: the router gives every shard
call an id of its own, and the shard keys each call by an id it makes itself. Real router,
real shard process, a tiny fp32 Llama (greedy, so every answer is known in advance)."""
from __future__ import annotations

import concurrent.futures
import json
import socket

import grpc
import pytest

from protos import shard_pb2, shard_pb2_grpc
from tests.reliability.real_stack import RealStack, running_stack, sse_events

PROMPTS = ("The quick brown fox", "Deep learning is a subfield")
NUM_TOKENS = 24


@pytest.fixture(scope="module")
def stack(tiny_model, tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("isolation") / "launcher.log", model_dir=tiny_model) as stack:
        yield stack


def stream_text(stack: RealStack, prompt: str, request_id: str, num_tokens: int = NUM_TOKENS) -> str:
    status, headers, body = stack.post("/generate_stream",
                                       {"inputs": prompt, "parameters": {"max_new_tokens": num_tokens}},
                                       headers={"x-request-id": request_id})
    assert status == 200, body
    assert headers["x-request-id"] == request_id  # the client's id stays in the response header
    events = sse_events(body)
    assert "error" not in events[-1], events[-1]
    return "".join(event["token"]["text"] for event in events)


@pytest.fixture(scope="module")
def expected(stack) -> dict[str, str]:
    answers = {prompt: stream_text(stack, prompt, "reference") for prompt in PROMPTS}
    first_tokens = {answer[:3] for answer in answers.values()}
    assert len(first_tokens) == len(PROMPTS), "the prompts must start their answers differently"
    return answers


def test_concurrent_requests_with_one_id_both_run(stack, expected):
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = {pool.submit(stream_text, stack, prompt, "same-id"): prompt for prompt in PROMPTS * 2}
        for future, prompt in futures.items():
            assert future.result(timeout=60) == expected[prompt]


def test_best_of_beside_a_client_that_uses_its_sub_id(stack, expected):
    """best_of once made shard calls `<id>-0`, `<id>-1`: a client running `v-0` broke them."""
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        other = pool.submit(stream_text, stack, PROMPTS[0], "v-0", 200)
        status, _, body = stack.post("/generate", {"inputs": PROMPTS[1], "parameters": {
            "max_new_tokens": 8, "best_of": 2, "do_sample": True}}, headers={"x-request-id": "v"})
        assert status == 200, body
        assert other.result(timeout=60)


def hang_up_after_first_event(stack: RealStack, prompt: str, request_id: str) -> None:
    body = json.dumps({"inputs": prompt, "parameters": {"max_new_tokens": 400}}).encode()
    host, port = stack.host_port
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(b"POST /generate_stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"x-request-id: " + request_id.encode() + b"\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        received = b""
        while b"data:" not in received:
            chunk = sock.recv(4096)
            assert chunk, "the stream closed before its first event"
            received += chunk


def test_reused_id_after_a_hang_up_gets_only_its_own_tokens(stack, expected):
    """A retrying proxy keeps the id: the retry must never receive the earlier call's tokens."""
    for attempt in range(20):
        hang_up_after_first_event(stack, PROMPTS[0], f"retry-{attempt}")
        assert stream_text(stack, PROMPTS[1], f"retry-{attempt}") == expected[PROMPTS[1]], attempt


def shard_uri(stack: RealStack) -> str:
    cmd = stack.processes()["shard"][0].cmdline()
    return f"127.0.0.1:{cmd[cmd.index('--port') + 1]}"


def test_shard_keys_calls_by_its_own_ids(stack, expected):
    """Straight to the shard over gRPC: two calls with one request_id, one of them cancelled
    after its first token, and a third with that id at once: each gets its own answer."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(stack_model_dir(stack) / "tokenizer.json"))

    def call(stub, prompt: str, num_tokens: int):
        return stub.Generate(shard_pb2.GenerateRequest(
            request_id="dup", input_ids=tokenizer.encode(prompt).ids,
            sampling=shard_pb2.SamplingParameters(), stopping=shard_pb2.StoppingParameters(
                max_new_tokens=num_tokens)))

    with grpc.insecure_channel(shard_uri(stack)) as channel:
        stub = shard_pb2_grpc.ShardStub(channel)
        for _ in range(10):
            cancelled = call(stub, PROMPTS[0], 400)
            next(cancelled)
            kept = call(stub, PROMPTS[1], NUM_TOKENS)
            cancelled.cancel()
            retry = call(stub, PROMPTS[1], NUM_TOKENS)
            for answer in (kept, retry):
                messages = list(answer)
                assert messages[-1].generated_text.text == expected[PROMPTS[1]]
                assert len(messages) == NUM_TOKENS


def stack_model_dir(stack: RealStack):
    from pathlib import Path

    cmd = stack.processes()["shard"][0].cmdline()
    return Path(cmd[cmd.index("--model-id") + 1])
