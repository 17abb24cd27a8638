"""Token ids -> text, incrementally, and stop strings matched on that text.

`tokenizers.decoders.DecodeStream` holds back bytes until they complete a UTF-8
character, so a token's text may be "" and the joined texts always equal the decoded
whole. Special tokens (EOS, chat markers) carry their literal text, marked special, and
are left out of the generated text, as TGI does.
"""
from __future__ import annotations

from tokenizers import Tokenizer
from tokenizers.decoders import DecodeStream

# The router's matcher, so both sides agree on where a stop string ends (both images carry router/).
from router.stops import StopAutomaton


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
    """Finds a stop string in the generated text, also when it spans several tokens. One
    automaton per stop string: a token costs time in its own length only, whatever the
    stop strings' lengths or the text's so far."""

    def __init__(self, stop_sequences: tuple[str, ...]):
        self._automata = [StopAutomaton(stop) for stop in stop_sequences if stop]

    def feed(self, text: str) -> bool:
        # Every automaton sees every character, so each stays current whichever one matches.
        return any([automaton.feed(text) for automaton in self._automata])
