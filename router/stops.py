"""Stop strings as the OpenAI routes promise them: never part of the answer. The shard
stops at the token that completes a stop string and reports the text with it (TGI's
semantics, kept on the native routes); here the answer is cut where the first stop
string begins, and a stream holds back any tail that could still become one, so no
chunk ever carries text that the final answer lacks.

Both sides follow each stop string with a StopAutomaton (the shard's StopMatcher too), so
a token costs time in its own length only, not in the answer's or the stop strings'."""

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
        """Advance over `text`; True when the stop string ends inside it."""
        stop, fallback, matched, length = self.stop, self._fallback, self.matched, len(self.stop)
        if not matched:
            # Nothing under way: skip, at C speed, to where the stop string could begin (most
            # tokens have no such place).
            start = text.find(stop[0])
            if start < 0:
                return False
            text = text[start:]
        for char in text:
            while matched and stop[matched] != char:
                matched = fallback[matched - 1]
            if stop[matched] == char:
                matched += 1
                if matched == length:
                    self.matched = fallback[matched - 1]  # overlapping matches stay findable
                    return True
        self.matched = matched
        return False


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


def cut_at_stop(text: str, stops: tuple[str, ...]) -> str:
    """`text` up to the earliest stop string in it (all of it when there is none)."""
    return text[:_first_stop(text, stops)]


class StopTrimmer:
    """One streamed answer: feed each token's text, send what comes back."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self._stops = tuple(stop for stop in stops if stop)
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
        if any([automaton.feed(text) for automaton in self._automata]):
            # Another stop string may begin earlier than the one that ended: cut at the earliest.
            self._stopped = True
            self._pending = ""
            return pending[:_first_stop(pending, self._stops)]
        held = 0 if final else self._held_back(len(pending))
        self._pending = pending[len(pending) - held:]
        return pending[:len(pending) - held]

    def _held_back(self, num_pending: int) -> int:
        """Length of the longest tail of the text that is the start of some stop string."""
        return min(max((automaton.matched for automaton in self._automata), default=0), num_pending)


def _first_stop(text: str, stops: tuple[str, ...]) -> int:
    positions = [text.find(stop) for stop in stops if stop]
    return min((position for position in positions if position >= 0), default=len(text))
