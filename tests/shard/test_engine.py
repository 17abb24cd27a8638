"""The engine on a tiny random-weight Llama (fp32, CPU): correctness against
transformers, continuous batching, cancellation, seeds, parameters."""
from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from shard.sequence import FinishReason

PROMPT = [40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51]


def token_ids(events) -> list[int]:
    return [e.token.id for e in events]


def hf_greedy(model_dir, prompt, max_new_tokens):
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    out = model.generate(torch.tensor([prompt]), max_new_tokens=max_new_tokens, do_sample=False,
                         eos_token_id=None, pad_token_id=0)
    return out[0, len(prompt):].tolist()


# "torch": the path of GPUs and of CPUs without the compiled kernels, kept tested here.
KERNELS = pytest.mark.parametrize("kernels", ["auto", "torch"])


@KERNELS
def test_greedy_matches_transformers_with_chunked_prefill(harness_factory, tiny_model_dir,
                                                          kernels):
    harness = harness_factory("--max-batch-prefill-tokens", "5",    # 12-token prompt: 3 chunks
                              "--kernels", kernels)
    harness.submit("a", PROMPT, max_new_tokens=16, stopping={"ignore_eos_token": True})
    events = harness.collect("a")
    assert token_ids(events) == hf_greedy(tiny_model_dir, PROMPT, 16)
    assert events[-1].finished.finish_reason is FinishReason.LENGTH
    assert events[-1].finished.generated_tokens == 16


@KERNELS
def test_greedy_is_batch_invariant_among_mixed_concurrent_requests(harness_factory, kernels):
    alone = harness_factory("--kernels", kernels)
    alone.submit("solo", PROMPT, max_new_tokens=24, stopping={"ignore_eos_token": True})
    expected = token_ids(alone.collect("solo"))

    busy = harness_factory("--max-batch-prefill-tokens", "48", "--kernels", kernels)
    for i in range(31):
        prompt = [(7 * i + j) % 250 + 3 for j in range(3 + (i * 5) % 40)]
        sampling = {"do_sample": True, "seed": i, "temperature": 0.7} if i % 3 else {}
        busy.submit(f"other-{i}", prompt, max_new_tokens=4 + i % 20, sampling=sampling,
                    stopping={"ignore_eos_token": True})
    busy.submit("solo", PROMPT, max_new_tokens=24, stopping={"ignore_eos_token": True})
    assert token_ids(busy.collect("solo")) == expected
    for i in range(31):
        busy.collect(f"other-{i}")


def test_same_seed_same_output_whatever_else_is_in_the_batch(harness_factory):
    sampling = {"do_sample": True, "seed": 1234, "temperature": 1.5, "top_k": 50}
    alone = harness_factory()
    alone.submit("s", PROMPT, max_new_tokens=20, sampling=sampling,
                 stopping={"ignore_eos_token": True})
    expected = alone.collect("s")
    busy = harness_factory()
    for i in range(6):
        busy.submit(f"x{i}", PROMPT[i:], max_new_tokens=30, sampling={"do_sample": True},
                    stopping={"ignore_eos_token": True})
    busy.submit("s", PROMPT, max_new_tokens=20, sampling=sampling,
                stopping={"ignore_eos_token": True})
    got = busy.collect("s")
    assert token_ids(got) == token_ids(expected)
    assert got[-1].finished.seed == 1234
    other = harness_factory()
    other.submit("t", PROMPT, max_new_tokens=20, sampling={**sampling, "seed": 99},
                 stopping={"ignore_eos_token": True})
    assert token_ids(other.collect("t")) != token_ids(expected)


def test_request_joins_a_running_batch_and_gets_tokens_before_it_ends(harness_factory):
    harness = harness_factory()
    harness.submit("long", PROMPT, max_new_tokens=200, stopping={"ignore_eos_token": True})
    for _ in range(3):
        harness.next_event("long")
    harness.submit("late", PROMPT[:4], max_new_tokens=3, stopping={"ignore_eos_token": True})
    late = harness.collect("late")
    assert late[-1].finished is not None
    assert harness.engine.scheduler.running and harness.engine.scheduler.running[0].request_id == "long"
    harness.engine.abort("long")


def test_cancelled_request_frees_its_slot_for_the_next_waiting_one(harness_factory):
    harness = harness_factory("--max-batch-size", "1")
    harness.submit("first", PROMPT, max_new_tokens=400, stopping={"ignore_eos_token": True})
    harness.next_event("first")
    harness.submit("second", PROMPT, max_new_tokens=3, stopping={"ignore_eos_token": True})
    harness.engine.abort("first")
    events = harness.collect("second")
    assert events[-1].finished.generated_tokens == 3
    scheduler = harness.engine.scheduler
    assert scheduler.slots.num_free == 1 and scheduler.num_reserved_tokens == 0


def test_request_that_can_never_fit_is_refused_and_one_that_can_waits(harness_factory):
    harness = harness_factory("--max-batch-total-tokens", "64", "--max-total-tokens", "64")
    assert "context" in harness.submit("huge", PROMPT, max_new_tokens=100).message
    assert harness.submit("a", PROMPT, max_new_tokens=40, stopping={"ignore_eos_token": True}) is None
    assert harness.submit("b", PROMPT, max_new_tokens=40, stopping={"ignore_eos_token": True}) is None
    assert harness.collect("a")[-1].finished.generated_tokens == 40
    assert harness.collect("b")[-1].finished.generated_tokens == 40


def test_prefill_logprobs_and_top_n_tokens(harness_factory):
    harness = harness_factory("--max-batch-prefill-tokens", "5")
    harness.submit("d", PROMPT, max_new_tokens=3, prefill_logprobs=True, top_n_tokens=3,
                   stopping={"ignore_eos_token": True})
    events = harness.collect("d")
    prefill = events[0].prefill_tokens
    assert [t.id for t in prefill] == PROMPT
    assert math.isnan(prefill[0].logprob)
    assert all(t.logprob < 0 for t in prefill[1:])
    for event in events:
        assert len(event.top_tokens) == 3
        assert event.top_tokens[0].logprob >= event.top_tokens[-1].logprob
        assert event.token.logprob <= 0
    assert events[0].token.id == events[0].top_tokens[0].id     # greedy picks the top one
    assert all(not e.prefill_tokens for e in events[1:])


def test_penalties_watermark_and_warpers_change_the_choice_but_stay_valid(harness_factory):
    harness = harness_factory()
    variants = {
        "plain": {},
        "repetition": {"repetition_penalty": 5.0},
        "frequency": {"frequency_penalty": 2.0},
        "presence": {"presence_penalty": 2.0},
        "watermark": {"watermark": True},
        "typical": {"do_sample": True, "typical_p": 0.5, "seed": 3},
        "top_p": {"do_sample": True, "top_p": 0.3, "seed": 3},
    }
    outputs = {}
    for name, sampling in variants.items():
        harness.submit(name, PROMPT, max_new_tokens=24, sampling=sampling,
                       stopping={"ignore_eos_token": True})
    for name in variants:
        outputs[name] = token_ids(harness.collect(name))
        assert len(outputs[name]) == 24
    assert outputs["repetition"] != outputs["plain"]
    assert outputs["frequency"] != outputs["plain"]
    assert outputs["presence"] != outputs["plain"]
    assert outputs["watermark"] != outputs["plain"]
    # A strong repetition penalty makes repeats rarer than in the plain greedy output.
    assert len(set(outputs["repetition"])) >= len(set(outputs["plain"]))


def test_stop_sequence_spanning_tokens_finishes_the_request(harness_factory):
    harness = harness_factory()
    sampling = {"do_sample": True, "seed": 7, "temperature": 3.0}
    harness.submit("probe", PROMPT, max_new_tokens=24, sampling=sampling,
                   stopping={"ignore_eos_token": True})
    texts = [e.token.text for e in harness.collect("probe")]
    full = "".join(texts)
    # A stop string made of the last character of token k-1 and the first of token k,
    # at its first occurrence in the text.
    for k in range(2, len(texts)):
        cut = len("".join(texts[:k]))
        stop = full[cut - 1:cut + 1]
        if texts[k - 1] and texts[k] and full.find(stop) == cut - 1:
            break
    else:
        raise AssertionError(f"no usable token boundary in {texts}")
    harness.submit("stop", PROMPT, max_new_tokens=24, sampling=sampling,
                   stopping={"ignore_eos_token": True, "stop_sequences": ("zz-unused", stop)})
    events = harness.collect("stop")
    assert events[-1].finished.finish_reason is FinishReason.STOP_SEQUENCE
    assert len(events) == k + 1
    assert events[-1].finished.text == "".join(texts[:k + 1])


class FaultyRunner:
    """Wraps the real runner; any step that includes `bad_request_id` raises, as a model
    bug or an out-of-memory error triggered by one request would."""

    def __init__(self, runner, bad_request_id: str):
        self._runner, self._bad = runner, bad_request_id

    def execute(self, plan):
        if any(c.seq.request_id == self._bad for c in plan.chunks):
            raise RuntimeError("injected fault")
        return self._runner.execute(plan)

    def forget(self, request_id):
        self._runner.forget(request_id)


def test_a_request_that_breaks_the_model_fails_alone(harness_factory):
    harness = harness_factory()
    harness.engine.runner = FaultyRunner(harness.engine.runner, "bad")
    harness.submit("good", PROMPT, max_new_tokens=30, stopping={"ignore_eos_token": True})
    harness.next_event("good")
    harness.submit("bad", PROMPT, max_new_tokens=30)
    assert "injected fault" in harness.collect("bad")[-1].error
    good = harness.collect("good")
    assert good[-1].finished.generated_tokens == 30 and all(e.error is None for e in good)
    harness.submit("after", PROMPT, max_new_tokens=3)
    assert harness.collect("after")[-1].finished is not None


def test_token_ids_outside_the_vocabulary_are_refused(harness_factory):
    harness = harness_factory()
    refusal = harness.submit("oov", [1, 2, 10_000_000], max_new_tokens=3)
    assert refusal.invalid_input and "outside the vocabulary" in refusal.message
