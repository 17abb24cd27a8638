"""logit_bias, min_new_tokens and ignore_eos_token in the engine, on the tiny random Llama
(fp32, CPU): a bias of +100 forces a token and -100 bans it, greedy and sampled; EOS is
masked, and stop strings do not count, until min_new_tokens; with ignore_eos_token a
forced EOS does not end the answer."""
from __future__ import annotations

import pytest

from shard.sequence import FinishReason

PROMPT = [40, 41, 42, 43, 44, 45]
EOS = 2
SAMPLINGS = pytest.mark.parametrize("sampling", [{}, {"do_sample": True, "seed": 3, "temperature": 1.2},
                                                 {"repetition_penalty": 1.3}],
                                    ids=["greedy", "sampled", "penalised"])


@pytest.fixture
def harness(harness_factory):
    return harness_factory()


def generate(harness, request_id, max_new_tokens=12, **kw) -> tuple[list[int], FinishReason]:
    assert harness.submit(request_id, PROMPT, max_new_tokens, **kw) is None
    events = harness.collect(request_id)
    assert events[-1].error is None, events[-1].error
    return [event.token.id for event in events], events[-1].finished.finish_reason


@SAMPLINGS
def test_plus_100_forces_a_token(harness, sampling):
    ids, _ = generate(harness, "force", sampling={**sampling, "logit_bias": ((77, 100.0),)})
    assert ids == [77] * 12


@SAMPLINGS
def test_minus_100_bans_the_tokens_it_would_pick(harness, sampling):
    free, _ = generate(harness, "free", sampling=sampling)
    banned = tuple((token_id, -100.0) for token_id in set(free))
    ids, _ = generate(harness, "banned", sampling={**sampling, "logit_bias": banned})
    assert len(ids) == 12 and not set(ids) & set(free)


def test_a_bias_on_one_request_leaves_its_neighbours_alone(harness):
    free, _ = generate(harness, "alone")
    assert harness.submit("biased", PROMPT, 12, sampling={"logit_bias": ((free[0], -100.0),)}) is None
    assert harness.submit("plain", PROMPT, 12) is None
    biased, plain = harness.collect("biased"), harness.collect("plain")
    assert [event.token.id for event in plain] == free
    assert free[0] not in [event.token.id for event in biased]


def test_eos_is_masked_until_min_new_tokens(harness):
    forced_eos = {"logit_bias": ((EOS, 100.0),)}
    assert generate(harness, "eos", sampling=forced_eos) == ([EOS], FinishReason.EOS_TOKEN)
    ids, reason = generate(harness, "min", sampling=forced_eos, stopping={"min_new_tokens": 5})
    assert len(ids) == 6 and EOS not in ids[:5] and ids[5] == EOS and reason is FinishReason.EOS_TOKEN


def test_ignore_eos_runs_to_the_length_limit(harness):
    ids, reason = generate(harness, "ignore", sampling={"logit_bias": ((EOS, 100.0),)},
                           stopping={"ignore_eos_token": True})
    assert ids == [EOS] * 12 and reason is FinishReason.LENGTH


def run(harness, request_id, max_new_tokens=12, **kw) -> list:
    assert harness.submit(request_id, PROMPT, max_new_tokens, **kw) is None
    return harness.collect(request_id)


def test_stop_strings_wait_for_min_new_tokens(harness):
    """vLLM's min_tokens: a stop string complete before min_new_tokens tokens are out does
    not end the answer; the first one ending at or after that token does."""
    forced = {"logit_bias": ((77, 100.0),)}
    [probe] = run(harness, "probe", 1, sampling=forced)
    stop = probe.token.text
    assert stop and not probe.token.special
    stopping = {"stop_sequences": (stop,), "ignore_eos_token": True}
    early = run(harness, "early", sampling=forced, stopping=stopping)
    assert len(early) == 1 and early[-1].finished.finish_reason is FinishReason.STOP_SEQUENCE
    late = run(harness, "late", sampling=forced, stopping={**stopping, "min_new_tokens": 5})
    assert [event.token.id for event in late] == [77] * 5
    assert late[-1].finished.finish_reason is FinishReason.STOP_SEQUENCE
    assert late[-1].finished.text == stop * 5
