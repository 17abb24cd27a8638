"""The linear stop-string matching (router/stops.py, also the shard's StopMatcher) against
the naive definitions, on random strings and random token boundaries. Small alphabets, so
prefixes overlap and partial matches are common: the cases a fallback table must get right.
With min_tokens, the stream and the whole answer are cut alike, where the shard stopped."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from router.stops import StopAutomaton, StopTrimmer, cut_at_stop, stop_floor
from router.wire import Token
from shard.detokenizer import StopMatcher

ALPHABET = "ab\u00e9"  # and a non-ASCII character: lengths are in characters
texts = st.text(alphabet=ALPHABET, max_size=60)
stop_lists = st.lists(st.text(alphabet=ALPHABET, min_size=1, max_size=8), max_size=4)
chunk_lists = st.lists(texts, max_size=12)


def naive_held_back(text: str, stops: tuple[str, ...]) -> int:
    """The longest tail of `text` that begins some stop string (and is not all of it)."""
    return max((length for stop in stops for length in range(1, min(len(stop) - 1, len(text)) + 1)
                if text.endswith(stop[:length])), default=0)


class NaiveTrimmer:
    """What StopTrimmer must send, from the whole text each time (as it once did)."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops, self.text, self.sent, self.stopped = tuple(s for s in stops if s), "", 0, False

    def push(self, text: str, final: bool = False) -> str:
        if self.stopped:
            return ""
        self.text += text
        found = [self.text.find(stop, self.sent) for stop in self.stops]
        found = [position for position in found if position >= 0]
        if found:
            self.stopped, end = True, min(found)
        else:
            end = len(self.text) if final else len(self.text) - naive_held_back(self.text, self.stops)
        released, self.sent = self.text[self.sent:end], max(self.sent, end)
        return released


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=ALPHABET, min_size=1, max_size=8), chunk_lists)
def test_the_automaton_tracks_the_longest_tail_that_begins_the_stop(stop, chunks):
    automaton, text = StopAutomaton(stop), ""
    for chunk in chunks:
        before = text
        text += chunk
        found = automaton.feed(chunk)
        # It reports the first time the stop string ends, whatever the chunk boundaries.
        assert found == (stop in text and stop not in before)
        if found:
            return
        assert automaton.matched == naive_held_back(text, (stop,))


@settings(max_examples=200, deadline=None)
@given(stop_lists, chunk_lists, st.booleans())
def test_the_trimmer_sends_what_the_naive_one_does(stops, chunks, final):
    stops = tuple(stops)
    trimmer, naive = StopTrimmer(stops), NaiveTrimmer(stops)
    for index, chunk in enumerate(chunks):
        last = final and index == len(chunks) - 1
        assert trimmer.push(chunk, last) == naive.push(chunk, last), (stops, chunks[:index + 1])


@settings(max_examples=200, deadline=None)
@given(stop_lists, texts)
def test_cut_at_stop_ends_before_the_earliest_stop(stops, text):
    cut = cut_at_stop(text, tuple(stops))
    assert text.startswith(cut) and not any(stop in cut for stop in stops)
    assert cut == text or any(text[len(cut):].startswith(stop) for stop in stops)


@settings(max_examples=200, deadline=None)
@given(stop_lists, chunk_lists)
def test_the_shards_matcher_stops_at_the_token_that_ends_a_stop(stops, chunks):
    matcher, text = StopMatcher(tuple(stops)), ""
    for chunk in chunks:
        text += chunk
        expected = any(stop in text for stop in stops)
        assert matcher.feed(chunk) == expected
        if expected:
            return


def ends_in(text: str, start: int, stops: tuple[str, ...]) -> bool:
    """Whether some stop string ends in text[start:] (brute force)."""
    return any(text[:end].endswith(stop) for stop in stops for end in range(start + 1, len(text) + 1))


def shard_chunks(chunks: list[str], stops: tuple[str, ...], min_tokens: int) -> list[str]:
    """The tokens a shard sends: up to the first one, from token min_tokens on, in which a
    stop string ends."""
    for index in range(len(chunks)):
        before = "".join(chunks[:index])
        if index + 1 >= min_tokens and ends_in(before + chunks[index], len(before), stops):
            return chunks[:index + 1]
    return chunks


@settings(max_examples=300, deadline=None)
@given(stop_lists, chunk_lists, st.integers(0, 8))
def test_with_min_tokens_the_stream_and_the_whole_answer_cut_alike(stops, chunks, min_tokens):
    stops = tuple(stops)
    sent = shard_chunks(chunks, stops, min_tokens)
    text = "".join(sent)
    tokens = [Token(id=0, text=chunk, logprob=None, special=False) for chunk in sent]
    floor = stop_floor(tokens, min_tokens)
    cut = cut_at_stop(text, stops, floor)
    # The earliest stop string ending past the first min_tokens - 1 tokens' text begins the cut.
    assert text.startswith(cut) and not ends_in(cut, floor, stops)
    assert cut == text or any(text[len(cut):].startswith(stop) and len(cut) + len(stop) > floor for stop in stops)
    trimmer = StopTrimmer(stops, min_tokens)
    streamed = "".join(trimmer.push(chunk, index == len(sent) - 1) for index, chunk in enumerate(sent))
    assert streamed == cut, (stops, sent, min_tokens)


def test_a_long_stop_string_with_overlapping_prefixes():
    stop = "ab" * 500 + "c"
    trimmer = StopTrimmer((stop,))
    sent = "".join(trimmer.push(piece) for piece in ["x"] + ["ab"] * 700)
    assert sent == "x" + "ab" * 200  # the last 1,000 characters may still begin the stop string
    assert trimmer.push("c") == ""  # and they did
    assert trimmer.push("more") == ""
