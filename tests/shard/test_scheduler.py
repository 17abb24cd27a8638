"""The scheduler alone, driven by a scripted "model" (fixed token ids); no torch."""
from __future__ import annotations

import subprocess
import time
import sys

from shard.scheduler import Scheduler, SchedulerLimits
from shard.sequence import FinishReason, Sequence, SequenceStatus, StoppingParams

EOS = 2


def make_scheduler(**overrides) -> Scheduler:
    limits = dict(max_batch_size=4, max_batch_prefill_tokens=16, max_batch_total_tokens=200,
                  max_total_tokens=100)
    limits.update(overrides)
    return Scheduler(SchedulerLimits(**limits), num_slots=limits["max_batch_size"],
                     eos_token_ids=frozenset({EOS}))


def make_seq(request_id: str, num_prompt: int = 4, max_new_tokens: int = 5) -> Sequence:
    return Sequence(request_id, list(range(10, 10 + num_prompt)),
                    stopping=StoppingParams(max_new_tokens=max_new_tokens))


def step(scheduler: Scheduler, token_id: int = 7):
    plan = scheduler.schedule()
    scheduler.update(plan, [token_id if c.samples else None for c in plan.chunks])
    return plan


def test_scheduler_does_not_import_torch():
    code = ("import sys; sys.modules['torch'] = None; import shard.scheduler, shard.sequence, "
            "shard.slots; print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "ok", result.stderr


def test_prompt_longer_than_budget_is_prefilled_in_chunks_while_others_decode():
    scheduler = make_scheduler(max_batch_prefill_tokens=8)
    short = make_seq("short", num_prompt=3, max_new_tokens=20)
    scheduler.add(short)
    step(scheduler)                                   # short: prefill + first token
    long = make_seq("long", num_prompt=20)
    scheduler.add(long)
    sizes = []
    for _ in range(3):
        plan = step(scheduler)
        by_id = {c.seq.request_id: c.num_tokens for c in plan.chunks}
        assert by_id["short"] == 1                    # short decodes on every step
        sizes.append(by_id.get("long"))
    assert sizes == [7, 7, 6]                         # 20 prompt tokens in budget-sized chunks
    assert long.status is SequenceStatus.DECODING and long.output_ids == [7]


def test_finishes_on_length_before_eos_and_frees_slot():
    scheduler = make_scheduler()
    seq = make_seq("a", max_new_tokens=2)
    scheduler.add(seq)
    step(scheduler, token_id=5)
    step(scheduler, token_id=EOS)                     # EOS at the last position: `length`
    assert seq.finish_reason is FinishReason.LENGTH
    assert scheduler.slots.num_free == 4 and scheduler.num_reserved_tokens == 0


def test_eos_finishes_unless_ignored():
    scheduler = make_scheduler()
    a = make_seq("a")
    b = Sequence("b", [1, 2], stopping=StoppingParams(max_new_tokens=5, ignore_eos_token=True))
    scheduler.add(a)
    scheduler.add(b)
    step(scheduler, token_id=EOS)
    assert a.finish_reason is FinishReason.EOS_TOKEN
    assert not b.status.is_finished


def test_kv_budget_makes_requests_wait_and_refuses_impossible_ones():
    scheduler = make_scheduler(max_batch_total_tokens=20)
    assert "max-batch-total-tokens" in scheduler.check_fits(make_seq("huge", 10, 15))
    assert "context" in make_scheduler(max_total_tokens=10).check_fits(make_seq("long", 8, 5))
    first, second = make_seq("first", 4, 10), make_seq("second", 4, 10)   # 14 tokens each
    scheduler.add(first)
    scheduler.add(second)
    plan = step(scheduler)
    assert [c.seq.request_id for c in plan.chunks] == ["first"]           # second waits
    while not first.status.is_finished:
        step(scheduler)
    plan = step(scheduler)
    assert [c.seq.request_id for c in plan.chunks] == ["second"]


def test_abort_frees_slot_for_the_next_waiting_request():
    scheduler = make_scheduler(max_batch_size=1)
    a, b = make_seq("a", max_new_tokens=50), make_seq("b")
    scheduler.add(a)
    scheduler.add(b)
    step(scheduler)
    assert scheduler.abort("a") is a and a.status is SequenceStatus.ABORTED
    plan = step(scheduler)
    assert [c.seq.request_id for c in plan.chunks] == ["b"] and b.slot == 0


def test_waiting_served_ratio_delays_joins_until_max_waiting_tokens():
    scheduler = make_scheduler(waiting_served_ratio=2.0, max_waiting_tokens=3)
    scheduler.add(make_seq("a", max_new_tokens=50))
    step(scheduler)
    scheduler.add(make_seq("b"))
    joined_at = None
    for i in range(5):
        plan = step(scheduler)
        if any(c.seq.request_id == "b" for c in plan.chunks):
            joined_at = i
            break
    assert joined_at == 2          # 1 waiting < 2.0 x 1 running, until 3 steps without a join


def test_lowest_slot_first_keeps_the_batch_packed():
    scheduler = make_scheduler()
    seqs = [make_seq(str(i), max_new_tokens=50) for i in range(3)]
    for seq in seqs:
        scheduler.add(seq)
    step(scheduler)
    assert [s.slot for s in seqs] == [0, 1, 2]
    scheduler.abort("1")
    late = make_seq("late")
    scheduler.add(late)
    step(scheduler)
    assert late.slot == 1


def test_plan_lists_decode_chunks_first_by_slot_then_prompt_chunks():
    scheduler = make_scheduler()
    for name in "abc":
        scheduler.add(make_seq(name, max_new_tokens=50))
    step(scheduler)
    scheduler.abort("a")                              # slot 0 is free again
    scheduler.add(make_seq("late", num_prompt=1))     # takes slot 0; its prompt is one token
    scheduler.add(make_seq("long", num_prompt=10))
    plan = scheduler.schedule()
    assert [(c.seq.request_id, c.is_decode) for c in plan.chunks] == [
        ("late", True), ("b", True), ("c", True), ("long", False)]
    assert plan.num_decode == 3 and plan.has_prefill


def test_waiting_requests_join_in_priority_order_and_age_up():
    scheduler = make_scheduler(max_batch_size=1, priority_aging_s=10.0)
    scheduler.add(make_seq("running", max_new_tokens=50))
    step(scheduler)
    now = time.monotonic()
    for request_id, priority, waited_s in [("low-old", 2, 25.0), ("low", 2, 1.0), ("normal", 1, 2.0),
                                           ("high", 0, 0.0), ("normal-new", 1, 0.5)]:
        seq = make_seq(request_id)
        seq.priority, seq.arrival_s = priority, now - waited_s
        scheduler.add(seq)
    scheduler.abort("running")
    order = []
    while scheduler.has_work:
        plan = step(scheduler)
        order += [c.seq.request_id for c in plan.chunks if c.start == 0]
        for seq in list(scheduler.running):
            scheduler.abort(seq.request_id)
    # 25 s of waiting lifted the oldest low request two classes: level with high, and earlier.
    assert order == ["low-old", "high", "normal", "normal-new", "low"]
