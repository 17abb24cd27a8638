"""Sampling values the shard cannot compute: the router refuses what float32 cannot hold
(422, the field named), and the shard samples any value it receives without failing the
batch: tiny temperatures and penalties give their limit (greedy) answer, and a request
whose values still leave no token fails alone, without the step being re-run request by
request. Real router and real shard processes (tiny fp32 Llama), and straight gRPC calls
to that shard for what the router would refuse."""
from __future__ import annotations

import concurrent.futures
import json
import math

import grpc
from tokenizers import Tokenizer

from protos import shard_pb2, shard_pb2_grpc
from tests.reliability.real_stack import RealStack, sse_events

PROMPT = "The quick brown fox"
FLOAT32_MIN = 2.0 ** -126  # the smallest normal float32
SUBNORMAL = 1e-45  # float32's smallest subnormal; 1e-46 is 0 there
RETRIED = "retrying its requests one by one"


def generate(stack: RealStack, parameters: dict, path: str = "/generate") -> tuple[int, dict]:
    status, _, body = stack.post(path, {"inputs": PROMPT, "parameters": {"max_new_tokens": 24, **parameters}})
    return status, json.loads(body)


def long_stream(stack: RealStack, started: concurrent.futures.Future) -> list[dict]:
    """A plain greedy stream of 400 tokens, running beside the others."""
    conn = stack.connection(120)
    body = json.dumps({"inputs": PROMPT, "parameters": {"max_new_tokens": 400, "details": True}})
    conn.request("POST", "/generate_stream", body, {"Content-Type": "application/json"})
    response = conn.getresponse()
    first = response.readline()
    started.set_result(True)
    events = sse_events(first + response.read())
    conn.close()
    return events


def assert_completed(events: list[dict]) -> None:
    assert events and "error" not in events[-1], events[-1:]
    assert events[-1]["details"]["generated_tokens"] == 400


def test_values_float32_cannot_hold_are_refused_beside_a_running_request(start_stack, tiny_model):
    stack = start_stack(model_dir=tiny_model)
    refused = [({"temperature": SUBNORMAL, "do_sample": True}, "temperature"),
               ({"temperature": 1e-46}, "temperature"), ({"temperature": 1e39}, "temperature"),
               ({"repetition_penalty": SUBNORMAL}, "repetition_penalty"),
               ({"repetition_penalty": SUBNORMAL, "do_sample": True}, "repetition_penalty"),
               ({"repetition_penalty": 1e39}, "repetition_penalty"),
               ({"top_p": 1e-46}, "top_p"), ({"typical_p": 1e-40}, "typical_p")]
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        started = concurrent.futures.Future()
        running = pool.submit(long_stream, stack, started)
        started.result(timeout=60)
        for parameters, name in refused:
            for path in ("/generate", "/generate_stream"):
                status, body = generate(stack, parameters, path)
                assert status == 422 and body["error_type"] == "validation", (parameters, body)
                assert f"`{name}` must be >= 1.1754944e-38" in body["error"], body
        status, _, body = stack.post("/v1/completions", {"prompt": PROMPT, "max_tokens": 4, "temperature": SUBNORMAL})
        assert status == 422 and "`temperature`" in json.loads(body)["error"]["message"], body
        # TGI's own rules keep their messages; OpenAI's temperature 0 is still greedy.
        assert generate(stack, {"temperature": 0.0})[1]["error"].endswith("`temperature` must be strictly positive")
        status, _, body = stack.post("/v1/completions", {"prompt": PROMPT, "max_tokens": 24, "temperature": 0})
        assert status == 200 and json.loads(body)["choices"][0]["text"] == generate(stack, {})[1]["generated_text"]
        # At float32's bounds: the limit answers. The least temperature is greedy.
        greedy = generate(stack, {})[1]["generated_text"]
        for temperature in (FLOAT32_MIN, 1e-30):
            status, body = generate(stack, {"temperature": temperature, "do_sample": True, "seed": 1})
            assert (status, body["generated_text"]) == (200, greedy), temperature
        for penalty in (FLOAT32_MIN, 3.4e38):
            status, body = generate(stack, {"repetition_penalty": penalty, "details": True})
            assert status == 200 and body["details"]["generated_tokens"] == 24, body
            assert all(math.isfinite(token["logprob"]) for token in body["details"]["tokens"]), body
        assert_completed(running.result(timeout=120))
    assert RETRIED not in stack.launcher.output()


def shard_call(stub, tokenizer: Tokenizer, sampling: shard_pb2.SamplingParameters, num_tokens: int = 16):
    return stub.Generate(shard_pb2.GenerateRequest(
        request_id="direct", input_ids=tokenizer.encode(PROMPT).ids, sampling=sampling,
        stopping=shard_pb2.StoppingParameters(max_new_tokens=num_tokens, ignore_eos_token=True)))


def token_ids(call) -> list[int]:
    return [message.token.id for message in call]


def test_the_shard_samples_what_it_is_sent_and_fails_a_broken_request_alone(start_stack, tiny_model):
    """Values the router refuses, sent straight to the shard: subnormal temperatures and
    penalties (which once overflowed to inf and NaN) get the limit answer, and a NaN
    temperature fails that request alone while a request beside it runs on."""
    stack = start_stack(model_dir=tiny_model)
    cmd = stack.processes()["shard"][0].cmdline()
    tokenizer = Tokenizer.from_file(str(tiny_model / "tokenizer.json"))
    with grpc.insecure_channel(f"127.0.0.1:{cmd[cmd.index('--port') + 1]}") as channel, \
            concurrent.futures.ThreadPoolExecutor(1) as pool:
        stub = shard_pb2_grpc.ShardStub(channel)
        started = concurrent.futures.Future()
        running = pool.submit(long_stream, stack, started)
        started.result(timeout=60)
        greedy = token_ids(shard_call(stub, tokenizer, shard_pb2.SamplingParameters()))
        sampled = token_ids(shard_call(stub, tokenizer, shard_pb2.SamplingParameters(
            do_sample=True, temperature=SUBNORMAL, seed=3)))
        assert sampled == greedy
        penalised = token_ids(shard_call(stub, tokenizer, shard_pb2.SamplingParameters(
            repetition_penalty=SUBNORMAL)))
        assert len(penalised) == 16
        assert token_ids(shard_call(stub, tokenizer, shard_pb2.SamplingParameters(
            do_sample=True, repetition_penalty=SUBNORMAL, temperature=SUBNORMAL, seed=3))) == penalised
        broken = shard_call(stub, tokenizer, shard_pb2.SamplingParameters(do_sample=True, temperature=math.nan))
        try:
            token_ids(broken)
            raise AssertionError("a NaN temperature sampled")
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.INTERNAL and "sampling failed" in error.details()
        assert_completed(running.result(timeout=120))
    output = stack.launcher.output()
    assert "sampling failed" in output and RETRIED not in output
