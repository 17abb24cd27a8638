"""`python -m shard` with the default SmolLM2 model, driven over real gRPC on loopback."""
from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from tokenizers import Tokenizer

from protos import shard_pb2
from shard.detokenizer import IncrementalDetokenizer
from tests.shard.conftest import SHARD_METRICS_PORT

PROMPT = "<|im_start|>user\nWhat is Deep Learning?<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def tokenizer(default_model_dir) -> Tokenizer:
    return Tokenizer.from_file(str(default_model_dir / "tokenizer.json"))


@pytest.fixture
def stub(served_shard):
    return served_shard


def request(tokenizer, request_id, max_new_tokens=8, prompt=PROMPT, **kw):
    sampling = shard_pb2.SamplingParameters(**kw.pop("sampling", {}))
    stopping = shard_pb2.StoppingParameters(max_new_tokens=max_new_tokens,
                                            **kw.pop("stopping", {}))
    return shard_pb2.GenerateRequest(request_id=request_id,
                                     input_ids=tokenizer.encode(prompt).ids,
                                     sampling=sampling, stopping=stopping, **kw)


def test_info_reports_the_model_but_no_path_on_the_shards_host(stub, default_model_dir):
    info = stub.Info(shard_pb2.InfoRequest())
    assert info.model_id == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert info.dtype == "float32" and info.device == "cpu"
    assert info.max_total_tokens > 0 and info.max_batch_total_tokens >= info.max_total_tokens
    assert str(default_model_dir).encode() not in info.SerializeToString()


def test_tokenizer_sends_the_model_directorys_tokenizer_files(stub, default_model_dir):
    files = stub.Tokenizer(shard_pb2.TokenizerRequest()).files
    assert set(files) == {"tokenizer.json", "tokenizer_config.json", "chat_template.jinja"}
    for name, content in files.items():
        assert content == (default_model_dir / name).read_bytes(), name


def test_generate_streams_one_message_per_token_and_finishes(stub, tokenizer):
    responses = list(stub.Generate(request(tokenizer, "r1", max_new_tokens=10)))
    assert len(responses) == 10
    assert all(not r.HasField("generated_text") for r in responses[:-1])
    final = responses[-1].generated_text
    assert final.finish_reason == shard_pb2.FINISH_REASON_LENGTH
    assert final.generated_tokens == 10 and not final.HasField("seed")
    assert final.text == "".join(r.token.text for r in responses)
    assert final.text.startswith("Deep Learning")


def test_a_request_joins_mid_decode_and_finishes_first(stub, tokenizer):
    long = stub.Generate(request(tokenizer, "long", max_new_tokens=200,
                                 stopping={"ignore_eos_token": True}))
    for _ in range(3):
        next(long)
    short = list(stub.Generate(request(tokenizer, "short", max_new_tokens=3)))
    assert short[-1].HasField("generated_text")
    # The long stream is still going after the short one finished.
    assert not next(long).HasField("generated_text")
    long.cancel()


def test_cancelling_the_call_frees_the_slot(stub, tokenizer):
    call = stub.Generate(request(tokenizer, "gone", max_new_tokens=400,
                                 stopping={"ignore_eos_token": True}))
    next(call)
    assert stub.Health(shard_pb2.HealthRequest()).num_running >= 1
    call.cancel()
    deadline = time.monotonic() + 2
    while stub.Health(shard_pb2.HealthRequest()).num_running and time.monotonic() < deadline:
        time.sleep(0.02)
    assert stub.Health(shard_pb2.HealthRequest()).num_running == 0
    # The gauges follow within a second, although no step runs after the abort.
    deadline = time.monotonic() + 1
    while shard_metric("sluice_shard_batch_size") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert shard_metric("sluice_shard_batch_size") == 0
    assert shard_metric("sluice_shard_kv_tokens_used") == 0


def shard_metric(name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{SHARD_METRICS_PORT}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not exported")


def test_same_seed_same_text_and_the_seed_is_reported(stub, tokenizer):
    sampling = {"do_sample": True, "temperature": 0.9, "seed": 42}
    texts = [list(stub.Generate(request(tokenizer, f"seed-{i}", 12, sampling=sampling)))[-1]
             for i in range(2)]
    assert texts[0].generated_text.text == texts[1].generated_text.text
    assert texts[0].generated_text.seed == 42


def test_stop_string_across_tokens(stub, tokenizer):
    probe = list(stub.Generate(request(tokenizer, "probe", max_new_tokens=12)))
    texts = [r.token.text for r in probe]
    assert texts[0] == "Deep" and texts[1] == " Learning"
    stop = "p Lea"          # the end of "Deep" and the start of " Learning"
    responses = list(stub.Generate(request(tokenizer, "stop", max_new_tokens=12,
                                           stopping={"stop_sequences": [stop]})))
    assert len(responses) == 2
    final = responses[-1].generated_text
    assert final.finish_reason == shard_pb2.FINISH_REASON_STOP_SEQUENCE
    assert final.text == "Deep Learning"


def test_a_request_that_can_never_fit_is_refused(stub, tokenizer):
    with pytest.raises(grpc.RpcError) as failure:
        list(stub.Generate(request(tokenizer, "huge", max_new_tokens=10_000_000)))
    assert failure.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "exceeds" in failure.value.details()


def test_incremental_detokenizer_never_splits_a_character(tokenizer):
    text = "Emoji 😀👍🏽, 中文字符 and café — ok"
    ids = tokenizer.encode(text).ids
    detokenizer = IncrementalDetokenizer(tokenizer, frozenset())
    pieces = [detokenizer.step(i)[0] for i in ids]
    assert "".join(pieces) == text == detokenizer.text
    assert "" in pieces                      # some tokens complete no character on their own
    assert all("\ufffd" not in p for p in pieces)


def test_greedy_output_is_the_same_alone_and_among_32_mixed_requests(stub, tokenizer):
    def run(i):
        if i == 0:
            return list(stub.Generate(request(tokenizer, "inv-solo-b", 20)))
        question = f"Tell me fact number {i} about {['cats', 'the sea', 'Rome'][i % 3]}." * (1 + i % 4)
        sampling = {"do_sample": True, "seed": i, "top_p": 0.9} if i % 2 else {}
        prompt = f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
        return list(stub.Generate(request(tokenizer, f"inv-{i}", 5 + i % 17, prompt=prompt,
                                          sampling=sampling)))

    alone = [r.token.id for r in stub.Generate(request(tokenizer, "inv-solo-a", 20))]
    with ThreadPoolExecutor(32) as pool:
        # Start the others first, so the probe joins a batch that is already decoding.
        others = [pool.submit(run, i) for i in range(1, 32)]
        time.sleep(0.3)
        probe = pool.submit(run, 0).result()
        assert all(f.result()[-1].HasField("generated_text") for f in others)
    assert [r.token.id for r in probe] == alone


def test_shard_metrics_are_exported(stub, tokenizer):
    list(stub.Generate(request(tokenizer, "metrics", max_new_tokens=3)))
    with urllib.request.urlopen(f"http://127.0.0.1:{SHARD_METRICS_PORT}/metrics", timeout=5) as response:
        text = response.read().decode()
    for name in ("sluice_shard_queue_size", "sluice_shard_batch_size", "sluice_shard_kv_tokens_used",
                 "sluice_shard_step_duration_seconds_bucket", "sluice_shard_generated_tokens_total"):
        assert name in text
    assert 'kind="prefill"' in text and 'kind="decode"' in text


def test_cuda_without_a_gpu_is_a_clear_startup_error():
    result = subprocess.run([sys.executable, "-m", "shard", "--device", "cuda"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "no CUDA device is available" in result.stderr
