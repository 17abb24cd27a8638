"""Prefix reuse: the scheduler's plan (no torch), then the engine's output with it on and off."""
from __future__ import annotations

from shard.prefix_cache import PrefixIndex
from shard.scheduler import Scheduler, SchedulerLimits
from shard.sequence import Sequence, StoppingParams

SYSTEM = list(range(100, 130))          # a 30-token "system prompt" shared by requests


def make_scheduler() -> Scheduler:
    limits = SchedulerLimits(max_batch_size=4, max_batch_prefill_tokens=64,
                             max_batch_total_tokens=400, max_total_tokens=100)
    return Scheduler(limits, 4, frozenset({2}), PrefixIndex(8))


def seq(request_id: str, prompt: list[int], **kw) -> Sequence:
    return Sequence(request_id, prompt, stopping=StoppingParams(max_new_tokens=3), **kw)


def run_step(scheduler: Scheduler):
    plan = scheduler.schedule()
    scheduler.update(plan, [7 if c.samples else None for c in plan.chunks])
    return plan


def test_a_prompt_sharing_a_running_requests_prefix_copies_it_and_computes_the_rest():
    scheduler = make_scheduler()
    first = seq("a", SYSTEM + [1, 2, 3])
    scheduler.add(first)
    run_step(scheduler)                                  # prefills all of "a"
    second = seq("b", SYSTEM + [4, 5, 6, 8])
    scheduler.add(second)
    plan = run_step(scheduler)
    (copy,) = plan.copies
    assert (copy.source_slot, copy.target_slot, copy.num_tokens) == (first.slot, second.slot, 30)
    chunk = next(c for c in plan.chunks if c.seq is second)
    assert (chunk.start, chunk.end) == (30, 34)
    assert second.num_cached == 30


def test_the_last_token_is_always_computed_even_for_the_same_prompt():
    scheduler = make_scheduler()
    scheduler.add(seq("a", SYSTEM))
    run_step(scheduler)
    again = seq("b", list(SYSTEM))
    scheduler.add(again)
    plan = run_step(scheduler)
    assert plan.copies[0].num_tokens == len(SYSTEM) - 1
    chunk = next(c for c in plan.chunks if c.seq is again)
    assert (chunk.start, chunk.end) == (len(SYSTEM) - 1, len(SYSTEM))
    assert len(again.output_ids) == 1               # that one token gave the first new token


def test_a_finished_requests_slot_is_reused_in_place_until_someone_else_takes_it():
    scheduler = make_scheduler()
    first = seq("a", SYSTEM + [1])
    scheduler.add(first)
    while scheduler.has_work:
        run_step(scheduler)
    second = seq("b", SYSTEM + [1, 7, 9])              # starts with a's prompt and output
    scheduler.add(second)
    plan = run_step(scheduler)
    assert second.slot == first.slot and plan.copies == ()
    assert plan.chunks[0].start == len(SYSTEM) + 2       # a's prompt plus its first token


def test_short_matches_and_prompt_logprob_requests_compute_everything():
    scheduler = make_scheduler()
    scheduler.add(seq("a", SYSTEM))
    run_step(scheduler)
    short = seq("b", SYSTEM[:5] + [1, 2, 3, 4, 5, 6])
    details = seq("c", SYSTEM + [9], prefill_logprobs=True)
    scheduler.add(short), scheduler.add(details)
    plan = run_step(scheduler)
    assert plan.copies == ()
    assert [c.start for c in plan.chunks if c.seq in (short, details)] == [0, 0]


def test_engine_output_is_the_same_with_and_without_prefix_reuse(harness_factory):
    outputs = {}
    for setting in ("on", "off"):
        harness = harness_factory("--prefix-caching", setting)
        prompts = {"first": SYSTEM + [40, 41], "second": SYSTEM + [42, 43, 44]}
        texts = {}
        for request_id, prompt in prompts.items():      # one after the other: reuse happens
            harness.submit(request_id, prompt, max_new_tokens=12,
                           stopping={"ignore_eos_token": True})
            texts[request_id] = [e.token.id for e in harness.collect(request_id)]
        outputs[setting] = texts
    assert outputs["on"] == outputs["off"]


def test_reuse_is_counted_in_the_shard_metrics(harness_factory):
    harness = harness_factory()
    for request_id in ("first", "second"):
        harness.submit(request_id, SYSTEM + [40], max_new_tokens=2,
                       stopping={"ignore_eos_token": True})
        harness.collect(request_id)
    counted = harness.engine.metrics.prefix_cached_tokens._value.get()
    assert counted == len(SYSTEM)      # all of the same 31-token prompt but its last token


def test_choices_of_one_prompt_sent_together_prefill_it_once():
    scheduler = make_scheduler()
    choices = [seq(name, SYSTEM + [1, 2]) for name in "abc"]
    for choice in choices:
        scheduler.add(choice)
    first = run_step(scheduler)
    assert [chunk.seq for chunk in first.chunks] == [choices[0]]     # the others wait one step
    second = run_step(scheduler)
    assert {(copy.source_slot, copy.num_tokens) for copy in second.copies} == {(choices[0].slot, 31)}
    assert [choice.num_cached for choice in choices] == [0, 31, 31]
    assert all(chunk.num_tokens == 1 for chunk in second.chunks)     # a decode and two last tokens


def test_a_different_prompt_does_not_wait():
    scheduler = make_scheduler()
    scheduler.add(seq("a", SYSTEM + [1, 2]))
    scheduler.add(seq("b", [7, 8, 9, 10]))
    assert len(run_step(scheduler).chunks) == 2
