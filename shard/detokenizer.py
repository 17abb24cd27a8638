"""Token ids -> text, incrementally, and stop strings matched on that text.

`tokenizers.decoders.DecodeStream` holds back bytes until they complete a UTF-8
character, so a token's text may be "" and the joined texts always equal the decoded
whole. Special tokens (EOS, chat markers) carry their literal text, marked special, and
are left out of the generated text, as TGI does.
"""
from __future__ import annotations

from tokenizers import Tokenizer
from tokenizers.decoders import DecodeStream


class IncrementalDetokenizer:
    def __init__(self, tokenizer: Tokenizer, special_ids: frozenset[int]):
        self._tokenizer = tokenizer
        self._special_ids = special_ids
        self._stream = DecodeStream(skip_special_tokens=False)
        self._parts: list[str] = []

    def step(self, token_id: int) -> tuple[str, bool]:
        """The new text this token completes, and whether the token is special."""
        if token_id in self._special_ids:
            return self._tokenizer.id_to_token(token_id) or "", True
        text = self._stream.step(self._tokenizer, token_id) or ""
        self._parts.append(text)
        return text, False

    @property
    def text(self) -> str:
        return "".join(self._parts)


def token_text(tokenizer: Tokenizer, token_id: int) -> str:
    """A single token's own text, for prefill and top-n tokens (TGI decodes them alone)."""
    return tokenizer.decode([token_id], skip_special_tokens=False)


class StopMatcher:
    """Finds a stop string in the generated text, also when it spans several tokens."""

    def __init__(self, stop_sequences: tuple[str, ...]):
        self._stops = tuple(s for s in stop_sequences if s)
        self._keep = max((len(s) for s in self._stops), default=0) - 1
        self._tail = ""

    def feed(self, text: str) -> bool:
        if not self._stops or not text:
            return False
        window = self._tail + text
        self._tail = window[-self._keep:] if self._keep > 0 else ""
        return any(stop in window for stop in self._stops)
