"""Several tool calls in one answer (parallel_tool_calls, OpenAI's default), against the
scripted fake shard over real HTTP and gRPC: calls one per line come back as several
`tool_calls`, each with its own id; streamed, each call's first delta has its index, id
and name and its fragments join to exactly its arguments, wherever the token boundaries
fall, also when one token ends one call and starts the next; the openai SDK's stream
helper reassembles them."""

from __future__ import annotations

import json

import pytest

from router.openai.tool_parser import ToolCallParser
from tests.router.test_router_openai import sse_chunks
from tests.router.test_router_tools import ARGUMENTS, CALL, MESSAGES, TIME, WEATHER, chat, pieces, sdk, splits

TIME_ARGUMENTS = '{"zone": "UTC"}'
CALLS = f'{CALL}\n{{"name": "get_time", "arguments": {TIME_ARGUMENTS}}}\n{CALL}'
EXPECTED = [("get_weather", ARGUMENTS), ("get_time", TIME_ARGUMENTS), ("get_weather", ARGUMENTS)]


@pytest.fixture
def stack(make_stack):
    return make_stack(max_total_tokens=4096)


def test_the_answer_holds_every_call(stack):
    stack.fake.script.output_texts = pieces(CALLS, [3, 70, 78, 79, 120])
    choice = chat(stack, tools=[WEATHER, TIME], tool_choice="required").json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    calls = choice["message"]["tool_calls"]
    assert [(call["function"]["name"], call["function"]["arguments"]) for call in calls] == EXPECTED
    assert len({call["id"] for call in calls}) == 3 and all(call["type"] == "function" for call in calls)


# One token holding `}}\n{"name"`, the newline alone, and each character alone.
@pytest.mark.parametrize("split", [*splits(CALLS), pieces(CALLS, [CALLS.index("}}\n") + 1, CALLS.index("}}\n") + 9]),
                                   pieces(CALLS, [CALLS.index("\n"), CALLS.index("\n") + 1])],
                         ids=lambda split: f"{len(split)}-tokens")
def test_streamed_calls_keep_apart(stack, split):
    stack.fake.script.output_texts = split
    chunks = sse_chunks(chat(stack, tools=[WEATHER, TIME], stream=True))
    deltas = [call for chunk in chunks for choice in chunk["choices"] for call in choice["delta"].get("tool_calls", [])]
    indexes = [delta["index"] for delta in deltas]
    assert indexes == sorted(indexes) and set(indexes) == {0, 1, 2}
    calls = []
    for index in range(3):
        first, *rest = [delta for delta in deltas if delta["index"] == index]
        assert first["id"].startswith("call_") and first["function"]["arguments"] == ""
        assert all("id" not in delta and "name" not in delta["function"] for delta in rest)
        calls.append((first["id"], first["function"]["name"], "".join(d["function"]["arguments"] for d in rest)))
    assert [(name, arguments) for _, name, arguments in calls] == EXPECTED
    assert len({call_id for call_id, _, _ in calls}) == 3
    assert [choice["finish_reason"] for choice in chunks[-1]["choices"]] == ["tool_calls"]
    assert all("content" not in choice["delta"] for chunk in chunks for choice in chunk["choices"])


def test_the_openai_sdk_reassembles_every_call(stack):
    stack.fake.script.output_texts = pieces(CALLS, [2, 9, 20, 33, 34, 47, 60, 75, 76, 101])
    with sdk(stack).chat.completions.stream(model="m", messages=MESSAGES, tools=[WEATHER, TIME]) as stream:
        final = stream.get_final_completion()
    calls = final.choices[0].message.tool_calls
    assert [(call.function.name, call.function.arguments) for call in calls] == EXPECTED
    assert all(json.loads(call.function.arguments) for call in calls)


def test_the_parser_reads_calls_in_one_piece_and_drops_the_last_brace():
    parser = ToolCallParser()
    events = parser.feed(CALLS) + parser.finish()
    assert [(event.kind, event.index) for event in events] == [
        ("name", 0), ("arguments", 0), ("name", 1), ("arguments", 1), ("name", 2), ("arguments", 2)]
    assert [(call.name, call.arguments, call.complete) for call in parser.calls] == [(*e, True) for e in EXPECTED]
