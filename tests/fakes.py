"""Test doubles that speak the real protocols: a scripted shard servicer for the real
`Shard` gRPC service (served by a real grpc.aio server), and a tiny real tokenizer."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
from dataclasses import dataclass

import grpc
from tokenizers import Tokenizer, models, pre_tokenizers, processors

from protos import shard_pb2, shard_pb2_grpc

SPECIALS = ["[UNK]", "<s>", "</s>"]
WORDS = ["hello", "world", "the", "cat", "sat", "on", "mat", "how", "do", "you", "make", "cheese", "?"]
VOCAB = {token: index for index, token in enumerate(SPECIALS + WORDS)}
BOS_ID, EOS_ID = VOCAB["<s>"], VOCAB["</s>"]
# The fake's generated tokens cycle through these words: " the cat sat on the mat ..."
OUTPUT_WORDS = ["the", "cat", "sat", "on", "the", "mat"]


# Renders [{"role": "user", "content": "hello"}] as "user: hello\nassistant:".
CHAT_TEMPLATE = ("{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}assistant:{% endif %}")


def build_tokenizer(directory: str) -> str:
    """A word-level tokenizer (one token per whitespace-separated word, BOS added) saved as
    directory/tokenizer.json, with a chat template as transformers saves one; returns the
    directory, whose files the fake sends as the shard's Tokenizer call does."""
    tokenizer = Tokenizer(models.WordLevel(vocab=VOCAB, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", BOS_ID)])
    os.makedirs(directory, exist_ok=True)
    tokenizer.save(os.path.join(directory, "tokenizer.json"))
    with open(os.path.join(directory, "tokenizer_config.json"), "w") as file:
        json.dump({"bos_token": "<s>", "eos_token": "</s>"}, file)
    with open(os.path.join(directory, "chat_template.jinja"), "w") as file:
        file.write(CHAT_TEMPLATE)
    return directory


def output_text(num_tokens: int) -> str:
    """What the fake generates for `num_tokens` tokens ending by length."""
    return "".join(" " + OUTPUT_WORDS[index % len(OUTPUT_WORDS)] for index in range(num_tokens))


@dataclass
class Script:
    """How the fake behaves; tests change it between requests (plain attributes, read on
    every step, so setting them from the test thread is safe enough)."""

    token_delay_s: float = 0.002
    block: bool = False  # hold every request before its first token until cleared
    fail_after: int | None = None  # abort the call with INTERNAL after this many tokens
    eos_after: int | None = None  # the token after this many is EOS
    queue_time_ns: int = 3_000_000
    end_early_after: int | None = None  # end the stream after this many tokens, with no final message
    # The generated tokens' texts, one per message, then EOS; None: OUTPUT_WORDS, cycled.
    output_texts: list[str] | None = None


class FakeShard(shard_pb2_grpc.ShardServicer):
    def __init__(self, tokenizer_dir: str, max_total_tokens: int = 64, model_id: str = "fake-org/fake-model",
                 max_batch_total_tokens: int | None = None):
        self.tokenizer_dir = tokenizer_dir
        self.max_total_tokens = max_total_tokens
        # The KV budget the router's admission counts against (the fake itself holds any number).
        self.max_batch_total_tokens = max_batch_total_tokens or 4 * max_total_tokens
        self.model_id = model_id
        self.script = Script()
        self.healthy = True
        self.requests: list[shard_pb2.GenerateRequest] = []
        self.cancelled: list[str] = []  # request_ids whose call the client cancelled
        self.num_active = 0
        self._seeds = itertools.count(1000)

    async def Info(self, request, context):
        return shard_pb2.InfoResponse(
            model_id=self.model_id, dtype="float32", device="cpu", max_total_tokens=self.max_total_tokens,
            max_batch_total_tokens=self.max_batch_total_tokens)

    async def Tokenizer(self, request, context):
        # As the real shard: the files of its model directory, sent whole.
        files = {}
        for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
            path = os.path.join(self.tokenizer_dir, name)
            if os.path.isfile(path):
                with open(path, "rb") as file:
                    files[name] = file.read()
        return shard_pb2.TokenizerResponse(files=files)

    async def Health(self, request, context):
        if not self.healthy:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "scripted: unhealthy")
        return shard_pb2.HealthResponse(num_running=self.num_active, num_waiting=0)

    async def Generate(self, request, context):
        self.requests.append(request)
        self.num_active += 1
        try:
            while self.script.block:
                await asyncio.sleep(0.005)
            async for message in self._messages(request, context):
                yield message
        except (asyncio.CancelledError, GeneratorExit):  # grpc closes the generator when the client left
            self.cancelled.append(request.request_id)
            raise
        finally:
            self.num_active -= 1

    async def _messages(self, request, context):
        sampling = request.sampling
        seed = (sampling.seed if sampling.HasField("seed") else next(self._seeds)) if sampling.do_sample else None
        # Sampled calls differ in their logprobs, so best_of has a real choice to make.
        base_logprob = -0.1 - (seed % 7) * 0.05 if seed is not None else -0.1
        texts: list[str] = []
        for index in range(request.stopping.max_new_tokens):
            if self.script.fail_after is not None and index >= self.script.fail_after:
                await context.abort(grpc.StatusCode.INTERNAL, "scripted failure")
            if self.script.end_early_after is not None and index >= self.script.end_early_after:
                return
            await asyncio.sleep(self.script.token_delay_s)
            token, reason = self._next_token(index, request, texts)
            message = shard_pb2.GenerateResponse(token=token)
            message.token.logprob = base_logprob - 0.001 * index
            message.top_tokens.extend(self._top_tokens(request.top_n_tokens))
            if index == 0:
                message.queue_time_ns = self.script.queue_time_ns
                if request.prefill_logprobs:
                    message.prefill_tokens.extend(self._prefill(request.input_ids))
                    if request.top_n_tokens:   # the first prompt token has no alternatives
                        message.prefill_top_tokens.extend(
                            [shard_pb2.TopTokens()] + [shard_pb2.TopTokens(tokens=self._top_tokens(request.top_n_tokens))
                                                       for _ in request.input_ids[1:]])
            if reason is not None:
                message.generated_text.CopyFrom(shard_pb2.GeneratedText(
                    text="".join(texts), generated_tokens=index + 1, finish_reason=reason, seed=seed))
            yield message
            if reason is not None:
                return

    def _next_token(self, index: int, request, texts: list[str]):
        scripted = self.script.output_texts
        if (self.script.eos_after is not None and index == self.script.eos_after) or (
                scripted is not None and index == len(scripted)):
            return shard_pb2.Token(id=EOS_ID, text="</s>", special=True), shard_pb2.FINISH_REASON_EOS_TOKEN
        word = OUTPUT_WORDS[index % len(OUTPUT_WORDS)]
        token_text = " " + word if scripted is None else scripted[index]
        texts.append(token_text)
        text = "".join(texts)
        # As the real shard: no stop string ends the answer before min_new_tokens tokens.
        if index + 1 >= request.stopping.min_new_tokens and any(
                text.endswith(stop) for stop in request.stopping.stop_sequences):
            reason = shard_pb2.FINISH_REASON_STOP_SEQUENCE
        elif index + 1 == request.stopping.max_new_tokens:
            reason = shard_pb2.FINISH_REASON_LENGTH
        else:
            reason = None
        token_id = VOCAB[word] if scripted is None else VOCAB["[UNK]"]
        return shard_pb2.Token(id=token_id, text=token_text, special=False), reason

    @staticmethod
    def _top_tokens(count: int) -> list[shard_pb2.Token]:
        return [shard_pb2.Token(id=VOCAB[WORDS[rank]], text=" " + WORDS[rank], logprob=-0.5 * (rank + 1))
                for rank in range(count)]

    @staticmethod
    def _prefill(input_ids) -> list[shard_pb2.Token]:
        names = {index: token for token, index in VOCAB.items()}
        # The first prompt token has no logprob: NaN on the wire, null in TGI's JSON.
        return [shard_pb2.Token(id=token_id, text=names.get(token_id, "[UNK]"),
                                logprob=math.nan if position == 0 else -1.0 - position)
                for position, token_id in enumerate(input_ids)]
