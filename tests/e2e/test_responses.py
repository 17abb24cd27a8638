"""OpenAI's Responses API on the real stack (router + shard + SmolLM2) through the real openai
SDK, unchanged: responses.create whole and streamed, the responses.stream helper,
retrieve and delete, a previous_response_id follow-up (its prompt holds the first turn),
a function tool round trip (a function_call, its function_call_output sent back, then a
text answer) and text.format json_schema output that validates (jsonschema). The model
is tiny: shapes and validity are asserted, not the quality of the content."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest

MAX_TOKENS = 120
WEATHER_PARAMETERS = {"type": "object", "required": ["city"], "additionalProperties": False,
                      "properties": {"city": {"type": "string", "maxLength": 30}}}
WEATHER = {"type": "function", "name": "get_weather", "description": "The current weather in a city",
           "parameters": WEATHER_PARAMETERS}
CITY = {"type": "object", "required": ["city", "country"], "additionalProperties": False, "properties": {
    "city": {"type": "string", "maxLength": 30}, "country": {"type": "string", "maxLength": 30}}}


def text_of(response) -> str:
    [message] = response.output
    assert message.type == "message" and message.role == "assistant" and message.id.startswith("msg_")
    [part] = message.content
    assert part.type == "output_text"
    return part.text


def test_create_returns_a_response(sdk):
    response = sdk.responses.create(model="tgi", input="What is the capital of France?", temperature=0,
                                    max_output_tokens=MAX_TOKENS, instructions="Answer in one sentence.",
                                    metadata={"test": "e2e"})
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.status in ("completed", "incomplete") and response.output_text == text_of(response) != ""
    assert response.metadata == {"test": "e2e"} and response.instructions == "Answer in one sentence."
    usage = response.usage
    assert usage.input_tokens > 0 and 0 < usage.output_tokens <= MAX_TOKENS
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    retrieved = sdk.responses.retrieve(response.id)
    assert retrieved.id == response.id and retrieved.output_text == response.output_text
    sdk.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(response.id)


def test_length_ends_incomplete(sdk):
    response = sdk.responses.create(model="tgi", input="Tell me a long story about a dragon.", max_output_tokens=5,
                                    temperature=0)
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    assert response.usage.output_tokens == 5


def test_create_streamed_events(sdk):
    events = list(sdk.responses.create(model="tgi", input="Say hello.", max_output_tokens=40, temperature=0,
                                       stream=True))
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert [event.type for event in events[:4]] == ["response.created", "response.in_progress",
                                                    "response.output_item.added", "response.content_part.added"]
    assert events[-1].type in ("response.completed", "response.incomplete")
    deltas = [event.delta for event in events if event.type == "response.output_text.delta"]
    [done] = [event for event in events if event.type == "response.output_text.done"]
    assert deltas and "".join(deltas) == done.text == events[-1].response.output_text
    assert events[-1].response.usage.output_tokens >= len(deltas)


def test_the_stream_helper_and_a_follow_up(sdk):
    with sdk.responses.stream(model="tgi", input="My name is Olivier. Say hi to me.", max_output_tokens=300,
                              temperature=0) as stream:
        texts = [event.delta for event in stream if event.type == "response.output_text.delta"]
        first = stream.get_final_response()  # needs response.completed: SmolLM2 ends a greeting on its own
    assert first.status == "completed" and "".join(texts) == first.output_text
    follow_up = sdk.responses.create(model="tgi", input="What is my name?", previous_response_id=first.id,
                                     max_output_tokens=MAX_TOKENS, temperature=0)
    assert follow_up.previous_response_id == first.id and follow_up.output_text
    alone = sdk.responses.create(model="tgi", input="What is my name?", max_output_tokens=1, temperature=0)
    # The follow-up's prompt holds the first turn (question and answer) before the new input.
    assert follow_up.usage.input_tokens > alone.usage.input_tokens + first.usage.output_tokens
    with pytest.raises(openai.NotFoundError):
        sdk.responses.create(model="tgi", input="hi", previous_response_id="resp_unknown", max_output_tokens=5)


def test_a_function_tool_round_trip(sdk):
    question = [{"role": "user", "content": "What is the weather like in Paris today?"}]
    first = sdk.responses.create(model="tgi", input=question, tools=[WEATHER], temperature=0,
                                 tool_choice={"type": "function", "name": "get_weather"}, max_output_tokens=MAX_TOKENS)
    [call] = first.output
    assert call.type == "function_call" and call.name == "get_weather" and call.status == "completed"
    assert call.id.startswith("fc_") and call.call_id.startswith("call_")
    jsonschema.validate(json.loads(call.arguments), WEATHER_PARAMETERS)
    result = {"type": "function_call_output", "call_id": call.call_id, "output": json.dumps({"sky": "sunny"})}
    second = sdk.responses.create(model="tgi", input=[*question, *first.output, result], tools=[WEATHER],
                                  tool_choice="none", max_output_tokens=MAX_TOKENS, temperature=0)
    assert second.output_text == text_of(second) != ""
    # The same round trip by previous_response_id, streamed by the helper.
    with sdk.responses.stream(model="tgi", input=[result], previous_response_id=first.id, tools=[WEATHER],
                              tool_choice="none", max_output_tokens=MAX_TOKENS, temperature=0) as stream:
        events = list(stream)
    assert events[-1].type in ("response.completed", "response.incomplete")
    assert events[-1].response.previous_response_id == first.id and events[-1].response.output_text


def test_streamed_call_arguments_join(sdk):
    events = list(sdk.responses.create(model="tgi", input="Weather in Rome?", tools=[WEATHER], temperature=0,
                                       tool_choice="required", parallel_tool_calls=False,
                                       max_output_tokens=MAX_TOKENS, stream=True))
    fragments = [event.delta for event in events if event.type == "response.function_call_arguments.delta"]
    [done] = [event for event in events if event.type == "response.function_call_arguments.done"]
    assert "".join(fragments) == done.arguments == events[-1].response.output[0].arguments
    jsonschema.validate(json.loads(done.arguments), WEATHER_PARAMETERS)


@pytest.mark.parametrize("stream", [False, True])
def test_text_format_json_schema(sdk, stream):
    text = {"format": {"type": "json_schema", "name": "city", "schema": CITY, "strict": True}}
    question = "Where is the Eiffel tower? Answer in JSON."
    if stream:
        with sdk.responses.stream(model="tgi", input=question, text=text, max_output_tokens=MAX_TOKENS,
                                  temperature=0) as events:
            response = events.get_final_response()
    else:
        response = sdk.responses.create(model="tgi", input=question, text=text, max_output_tokens=MAX_TOKENS,
                                        temperature=0)
    assert response.status == "completed" and response.text.format.type == "json_schema"
    jsonschema.validate(json.loads(response.output_text), CITY)
