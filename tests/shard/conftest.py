"""Shard fixtures: a tiny random-weight Llama with a real byte-level BPE tokenizer, an
engine harness that collects the events the engine thread publishes, and one
`python -m shard` with the default SmolLM2 over real gRPC for the modules that drive it."""
from __future__ import annotations

import queue
import threading
from pathlib import Path

import grpc
import pytest
from prometheus_client import CollectorRegistry

from protos import shard_pb2, shard_pb2_grpc

from shard.config import from_args
from shard.metrics import ShardMetrics
from shard.runtime import build_engine
from shard.sequence import SamplingParams, Sequence, StoppingParams
from tests.conftest import Process, free_port

# Where the served shard's Prometheus metrics are (the `served_shard` fixture).
SHARD_METRICS_PORT = free_port()

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Deep learning is a subfield of machine learning based on neural networks.",
    "Streaming sends tokens to the client as soon as they are generated.",
    "Continuous batching keeps every request moving while others join and leave.",
] * 20


def make_tiny_model(path: Path, vocab_size: int = 320) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(CORPUS, trainer)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(path / "tokenizer.json"))
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=64,
                         intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=512, eos_token_id=2,
                         bos_token_id=1, tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


class Harness:
    """An engine on its own thread plus per-request event queues."""

    def __init__(self, model_dir: Path, *flags: str):
        self._queues: dict[str, queue.Queue] = {}
        self._lock = threading.Lock()
        config = from_args(["--model-id", str(model_dir), "--dtype", "float32", *flags])
        self.engine, self.info = build_engine(config, self._publish,
                                              ShardMetrics(CollectorRegistry()))
        self.engine.start()

    def _publish(self, events) -> None:
        for event in events:
            self._queue(event.request_id).put(event)

    def _queue(self, request_id: str) -> queue.Queue:
        with self._lock:
            return self._queues.setdefault(request_id, queue.Queue())

    def submit(self, request_id: str, prompt_ids: list[int], max_new_tokens: int = 8,
               **kw) -> str | None:
        sampling = SamplingParams(**kw.pop("sampling", {}))
        stopping = StoppingParams(max_new_tokens=max_new_tokens, **kw.pop("stopping", {}))
        return self.engine.submit(Sequence(request_id, list(prompt_ids), sampling, stopping, **kw))

    def next_event(self, request_id: str, timeout_s: float = 30.0):
        return self._queue(request_id).get(timeout=timeout_s)

    def collect(self, request_id: str, timeout_s: float = 30.0) -> list:
        events = []
        while True:
            event = self.next_event(request_id, timeout_s)
            events.append(event)
            if event.finished is not None or event.error is not None:
                return events

    def close(self) -> None:
        self.engine.stop()


@pytest.fixture
def harness_factory(tiny_model_dir):
    made = []

    def make(*flags: str) -> Harness:
        made.append(Harness(tiny_model_dir, *flags))
        return made[-1]

    yield make
    for harness in made:
        harness.close()


@pytest.fixture(scope="session")
def served_shard(default_model_dir, tmp_path_factory):
    """A stub of one `python -m shard` (SmolLM2, float32, prefill chunks of 64 tokens), shared
    by the gRPC test modules: each leaves it idle, as it found it."""
    port = free_port()
    process = Process(["-m", "shard", "--port", str(port), "--dtype", "float32",
                       "--max-batch-prefill-tokens", "64", "--metrics-port", str(SHARD_METRICS_PORT)],
                      tmp_path_factory.mktemp("shard") / "shard.log")
    # The Tokenizer reply is one message with the whole tokenizer.json, and the huge-schema
    # test sends one: allow more than the client's 4 MiB default both ways.
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[
        ("grpc.max_receive_message_length", 64 * 1024 * 1024),
        ("grpc.max_send_message_length", 16 * 1024 * 1024)])
    stub = shard_pb2_grpc.ShardStub(channel)

    def healthy() -> bool:
        try:
            stub.Health(shard_pb2.HealthRequest(), timeout=1)
            return True
        except grpc.RpcError:
            return False

    try:
        process.wait_for(healthy, 300, "shard")
        yield stub
    finally:
        channel.close()
        process.stop()
