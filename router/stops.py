"""Stop strings as the OpenAI routes promise them: never part of the answer. The shard
stops at the token that completes a stop string and reports the text with it (TGI's
semantics, kept on the native routes); here the answer is cut where the first stop
string begins, and a stream holds back any tail that could still become one, so no
chunk ever carries text that the final answer lacks."""

from __future__ import annotations


def cut_at_stop(text: str, stops: tuple[str, ...]) -> str:
    """`text` up to the earliest stop string in it (all of it when there is none)."""
    return text[:_first_stop(text, stops, 0)]


class StopTrimmer:
    """One streamed answer: feed each token's text, send what comes back."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self._stops = tuple(stop for stop in stops if stop)
        self._text = ""
        self._num_sent = 0  # characters of _text already released
        self._stopped = False

    def push(self, text: str, final: bool = False) -> str:
        """The text that is now safe to send; with `final`, everything that is left."""
        if self._stopped:
            return ""
        self._text += text
        # A stop string cannot begin in text already sent: that text never ended in one's prefix.
        stop_at = _first_stop(self._text, self._stops, self._num_sent)
        if stop_at < len(self._text):
            self._stopped = True
            end = stop_at
        elif final:
            end = len(self._text)
        else:
            end = len(self._text) - self._held_back()
        released = self._text[self._num_sent:end]
        self._num_sent = max(self._num_sent, end)
        return released

    def _held_back(self) -> int:
        """Length of the longest tail of the text that is the start of some stop string."""
        longest = 0
        for stop in self._stops:
            for length in range(min(len(stop) - 1, len(self._text)), longest, -1):
                if self._text.endswith(stop[:length]):
                    longest = length
                    break
        return longest


def _first_stop(text: str, stops: tuple[str, ...], start: int) -> int:
    positions = [text.find(stop, start) for stop in stops if stop]
    return min((position for position in positions if position >= 0), default=len(text))
