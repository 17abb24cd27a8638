"""Stop strings as the OpenAI routes promise them: never part of the answer. The shard
stops at the token that completes a stop string and reports the text with it (TGI's
semantics, kept on the native routes); here the answer is cut where the first stop
string begins, and a stream holds back any tail that could still become one, so no
chunk ever carries text that the final answer lacks.

Both sides follow each stop string with a StopAutomaton (the shard's StopMatcher too), so
a token costs time in its own length only, not in the answer's or the stop strings'.

With min_tokens (vLLM's meaning), a stop string ends the answer only when it ends in
token min_tokens or later: one complete in the first min_tokens - 1 tokens is text like
any other, on the shard (shard/engine.py) and here alike."""

from __future__ import annotations


class StopAutomaton:
    """Knuth-Morris-Pratt over one stop string, fed the text as it arrives. `matched` is the
    length of the longest tail of the text so far that begins the stop string: a fallback
    table (the stop string against itself) keeps it current in amortised O(1) a character."""

    __slots__ = ("stop", "matched", "_fallback")

    def __init__(self, stop: str) -> None:
        if not stop:
            raise ValueError("a stop string must not be empty")
        self.stop = stop
        self.matched = 0
        self._fallback = _fallback_table(stop)

    def feed(self, text: str) -> bool:
        """Advance over all of `text` (a match that does not count, before min_tokens, must
        leave it current); True when the stop string ends inside it."""
        stop, fallback, matched, length = self.stop, self._fallback, self.matched, len(self.stop)
        if not matched:
            # Nothing under way: skip, at C speed, to where the stop string could begin (most
            # tokens have no such place).
            start = text.find(stop[0])
            if start < 0:
                return False
            text = text[start:]
        found = False
        for char in text:
            while matched and stop[matched] != char:
                matched = fallback[matched - 1]
            if stop[matched] == char:
                matched += 1
                if matched == length:
                    found, matched = True, fallback[matched - 1]  # overlapping matches stay findable
        self.matched = matched
        return found


def _fallback_table(stop: str) -> list[int]:
    """For each prefix stop[:i + 1], the length of its longest proper prefix that is also its suffix."""
    table = [0] * len(stop)
    length = 0
    for index in range(1, len(stop)):
        while length and stop[index] != stop[length]:
            length = table[length - 1]
        if stop[index] == stop[length]:
            length += 1
        table[index] = length
    return table


def cut_at_stop(text: str, stops: tuple[str, ...], after: int = 0) -> str:
    """`text` up to the earliest stop string in it that ends past its first `after`
    characters (all of it when there is none)."""
    return text[:_first_stop(text, stops, after)]


def stop_floor(tokens, min_tokens: int | None) -> int:
    """How many characters of a whole answer no stop string may end in: the text of its
    first min_tokens - 1 tokens (`tokens`: the shard's, special ones not in the text)."""
    floor = max((min_tokens or 0) - 1, 0)
    return sum(len(token.text) for token in tokens[:floor] if not token.special)


class StopTrimmer:
    """One streamed answer: feed each token's text, send what comes back."""

    def __init__(self, stops: tuple[str, ...], min_tokens: int | None = None) -> None:
        self._stops = tuple(stop for stop in stops if stop)
        self._num_to_skip = max((min_tokens or 0) - 1, 0)  # tokens whose stop strings do not count
        self._automata = [StopAutomaton(stop) for stop in self._stops]
        # Text not yet released: at most the tail that may still begin a stop string, so a
        # stop string that ends in new text begins in here.
        self._pending = ""
        self._stopped = False

    def push(self, text: str, final: bool = False) -> str:
        """The text that is now safe to send; with `final`, everything that is left."""
        if self._stopped:
            return ""
        pending = self._pending + text
        matched = any([automaton.feed(text) for automaton in self._automata])
        if matched and self._num_to_skip == 0:
            # Another stop string may begin earlier than the one that ended: cut at the
            # earliest of those ending in this text.
            self._stopped = True
            self._pending = ""
            return pending[:_first_stop(pending, self._stops, len(pending) - len(text))]
        self._num_to_skip = max(self._num_to_skip - 1, 0)
        held = 0 if final else self._held_back(len(pending))
        self._pending = pending[len(pending) - held:]
        return pending[:len(pending) - held]

    def _held_back(self, num_pending: int) -> int:
        """Length of the longest tail of the text that is the start of some stop string."""
        return min(max((automaton.matched for automaton in self._automata), default=0), num_pending)


def _first_stop(text: str, stops: tuple[str, ...], after: int = 0) -> int:
    """Where the earliest stop string ending past text[:after] begins."""
    positions = [text.find(stop, max(after - len(stop) + 1, 0)) for stop in stops if stop]
    return min((position for position in positions if position >= 0), default=len(text))
