"""Shard fixtures: a tiny random-weight Llama with a real byte-level BPE tokenizer, and an
engine harness that collects the events the engine thread publishes."""
from __future__ import annotations

import queue
import threading
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from shard.config import from_args
from shard.metrics import ShardMetrics
from shard.runtime import build_engine
from shard.sequence import SamplingParams, Sequence, StoppingParams

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
