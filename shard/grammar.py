"""Grammars for constrained decoding: compiles a request's GrammarSpec into an llguidance
matcher, off the engine loop and off the gRPC event loop, and keeps recent ones.

The llguidance tokenizer is built once, on the first grammar (it takes about a second),
from the model's tokenizer.json with the model's EOS ids, so a matcher allows EOS exactly
when its grammar is complete. Each compiled grammar is kept as a pristine matcher (already
asked for one mask, which warms its lexer); every request gets a deep copy of it.

Compiles run on threads of their own at a lower priority: llguidance releases the GIL
while it builds a matcher, and on a saturated CPU the running requests' steps come first.
"""
from __future__ import annotations

import asyncio
import os
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

import llguidance
import numpy
from tokenizers import Tokenizer

from protos.json_layout import JSON_LAYOUT
from shard.sequence import GrammarSpec

MAX_CACHED_GRAMMARS = 64
# Two compiles at once: a huge schema does not hold up everyone else's small ones.
NUM_COMPILE_THREADS = 2
COMPILE_NICENESS = 10            # added to the engine's


class GrammarError(ValueError):
    """The grammar does not compile; the message is llguidance's."""


class Constraint:
    """One request's place in its grammar. Used on the engine thread only: the runner
    writes its mask, the engine advances it by each token the request takes."""

    __slots__ = ("_matcher", "num_mask_words")

    def __init__(self, matcher: llguidance.LLMatcher, vocab_size: int):
        self._matcher = matcher
        self.num_mask_words = (vocab_size + 31) // 32   # one bit per token id

    def write_mask(self, words: numpy.ndarray) -> str | None:
        """Bit t of `words` (int32, num_mask_words of them, little-endian) set where token t
        may come next; returns why not, if the grammar broke (resource limits)."""
        self._matcher.unsafe_compute_mask_ptr(words.ctypes.data, words.nbytes)
        return self._error()

    def advance(self, token_id: int) -> str | None:
        """Takes the token; returns why not, if the grammar refuses it."""
        self._matcher.consume_token(token_id)
        return self._error()

    @property
    def is_complete(self) -> bool:
        """Nothing more can follow (but EOS): the output is whole."""
        return self._matcher.is_stopped()

    def _error(self) -> str | None:
        if not self._matcher.is_error():
            return None
        # llguidance appends a dump of the parser's state after the first line.
        return "grammar: " + self._matcher.get_error().split("\n", 1)[0]


class GrammarCompiler:
    def __init__(self, tokenizer_json: str, eos_token_ids: frozenset[int], vocab_size: int,
                 max_cached: int = MAX_CACHED_GRAMMARS):
        # The text, not a path: the model directory may be gone once the shard has loaded
        # (a volume mounted for the start only), and the first grammar may come much later.
        self._tokenizer_json: str | None = tokenizer_json
        self._eos_token_ids = sorted(eos_token_ids)
        self._vocab_size = vocab_size            # the model's: the width of its logits
        self._max_cached = max_cached
        self._tokenizer: llguidance.LLTokenizer | None = None
        self._cache: OrderedDict[tuple[str, str], llguidance.LLMatcher | str] = OrderedDict()
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(NUM_COMPILE_THREADS, thread_name_prefix="grammar",
                                            initializer=_yield_to_the_engine)

    async def compile_off_loop(self, spec: GrammarSpec) -> Constraint:
        """compile() on the compile threads: the engine's steps and this event loop go on."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.compile, spec)

    def compile(self, spec: GrammarSpec) -> Constraint:
        """A fresh constraint for one request; raises GrammarError. Blocks while compiling."""
        key = (spec.kind, spec.value)
        with self._lock:
            compiled = self._cache.get(key)
            if compiled is not None:
                self._cache.move_to_end(key)
        if compiled is None:
            compiled = self._compile(spec)      # outside the lock: compiles run side by side
            with self._lock:
                self._cache[key] = compiled
                while len(self._cache) > self._max_cached:
                    self._cache.popitem(last=False)
        if isinstance(compiled, str):
            raise GrammarError(compiled)
        with self._lock:     # the pristine matcher is shared: copy it one thread at a time
            matcher = compiled.deep_copy()
        return Constraint(matcher, self.tokenizer().vocab_size)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _compile(self, spec: GrammarSpec) -> llguidance.LLMatcher | str:
        """The pristine matcher, or why the grammar is refused (refusals are cached too)."""
        try:
            grammar = _to_llguidance(spec)
        except ValueError as exc:          # text llguidance cannot read as the kind says
            return str(exc)
        matcher = llguidance.LLMatcher(self.tokenizer(), grammar, log_level=0)
        if matcher.is_error():
            return matcher.get_error()
        # One mask here builds the lexer states a first step would otherwise build on the
        # engine loop; the copies start from them.
        matcher.compute_bitmask()
        if matcher.is_error():
            return matcher.get_error()
        return matcher

    def tokenizer(self) -> llguidance.LLTokenizer:
        with self._lock:
            if self._tokenizer is None:
                text, self._tokenizer_json = self._tokenizer_json, None  # llguidance keeps its own
                # Masks must cover every logit: the model's vocabulary may have padding rows
                # beyond the tokenizer's (never allowed), and llguidance wants the larger.
                num_tokens = Tokenizer.from_str(text).get_vocab_size(with_added_tokens=True)
                self._tokenizer = llguidance.LLTokenizer(
                    text, n_vocab=max(num_tokens, self._vocab_size),
                    eos_token=self._eos_token_ids)
            return self._tokenizer


def _yield_to_the_engine() -> None:
    """Compile threads run at a lower priority (Linux: per thread): on a busy CPU the steps
    of running requests come first, and a huge schema compiles in what they leave."""
    try:
        thread = threading.get_native_id()
        niceness = os.getpriority(os.PRIO_PROCESS, thread) + COMPILE_NICENESS
        os.setpriority(os.PRIO_PROCESS, thread, min(niceness, 19))
    except (AttributeError, OSError):   # not Linux, or not allowed: compile at full priority
        pass


def _to_llguidance(spec: GrammarSpec) -> str:
    if spec.kind == "json_schema":
        # The layout rides inside the schema object. Boolean schemas have none: `true` is
        # also `{}`, which takes it; `false` allows nothing anyway.
        value = "{}" if spec.value.strip() == "true" else spec.value
        layout = None if value.strip() == "false" else JSON_LAYOUT
        return llguidance.LLMatcher.grammar_from_json_schema(value, defaults=layout)
    if spec.kind == "regex":
        return llguidance.LLMatcher.grammar_from_regex(spec.value)
    if spec.kind == "lark":
        return llguidance.LLMatcher.grammar_from_lark(spec.value)
    raise ValueError(f"unsupported grammar type: {spec.kind}")
