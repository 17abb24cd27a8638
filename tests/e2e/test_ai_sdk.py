"""The Vercel AI SDK (`ai` with `@ai-sdk/openai-compatible`, in Node, unchanged) against the
real stack (router + shard + SmolLM2) on /v1/chat/completions, driven by tests/node/ai_sdk.mjs:

- `generateObject` with zod schemas (a nested object, an array of objects, enum fields,
  required and optional fields): the SDK must send them as `response_format` json_schema,
  equal to the JSON Schemas written here, and the object it returns must validate against
  them (jsonschema); `output: "no-schema"` sends json_object and must return an object.
- `generateText` with a tool whose `execute` runs in Node, over two steps
  (`stopWhen: stepCountIs(2)`, the v5+ spelling of `maxSteps: 2`; the first step with
  tool_choice required, the second auto): the first step's calls validate against the
  tool's parameters, execute ran on exactly those inputs and its results are in the steps
  and sent back to the server as `tool` messages, and the second step gives text or valid calls.
- `streamText` with the same tool: each streamed call's input deltas join into JSON equal
  to the call's input, which validates, and execute's result follows it in the stream.

The model is tiny, so only shapes and validity are checked, never content. Strings and
arrays are bounded so that answers and calls complete well within max tokens (200)."""

from __future__ import annotations

import json
import subprocess

import jsonschema
import pytest

from tests.e2e.test_openai_clients import NODE_DIR, check_node_setup


def obj(properties: dict, required: list[str] | None = None) -> dict:
    return {"type": "object", "properties": properties, "required": list(properties) if required is None else required,
            "additionalProperties": False}


def text(max_length: int) -> dict:
    return {"type": "string", "maxLength": max_length}


def integer(low: int, high: int) -> dict:
    return {"type": "integer", "minimum": low, "maximum": high}


def enum(*values: str) -> dict:
    return {"type": "string", "enum": list(values)}


# The zod schemas of tests/node/ai_sdk.mjs, in JSON Schema.
SCHEMAS = {
    "nested": obj({"name": text(30), "age": integer(0, 120),
                   "address": obj({"city": text(30), "country": text(30)})}),
    "array": obj({"fruits": {"minItems": 1, "maxItems": 3, "type": "array",
                             "items": obj({"name": text(20), "count": integer(0, 99)})}}),
    "enum": obj({"color": enum("red", "green", "blue"), "size": enum("small", "medium", "large")}),
    "required": obj({"id": integer(1, 9999), "title": text(40), "done": {"type": "boolean"}, "note": text(20)},
                    required=["id", "title", "done"]),
}
WEATHER = obj({"city": text(30), "unit": enum("celsius", "fahrenheit")})
MAX_TOKENS = 200


def run_ai_sdk(url: str, call: str, *args: str) -> dict:
    check_node_setup()
    if not (NODE_DIR / "node_modules" / "ai").is_dir():
        pytest.fail("the AI SDK in tests/node is missing: run `make test-deps`")
    result = subprocess.run(["node", "ai_sdk.mjs", call, url, *args], cwd=NODE_DIR, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def sent_schema(schema: dict) -> dict:
    """What the SDK derived from zod, less the draft marker it adds."""
    assert schema.pop("$schema") == "http://json-schema.org/draft-07/schema#"
    return schema


def check_request(body: dict) -> None:
    assert body["model"] == "tgi" and body["max_tokens"] == MAX_TOKENS and body["temperature"] == 0


@pytest.mark.parametrize("name", list(SCHEMAS))
def test_generate_object(stack_url, name):
    output = run_ai_sdk(stack_url, "object", name)
    [request] = output["requests"]
    check_request(request)
    response_format = request["response_format"]
    assert response_format["type"] == "json_schema" and response_format["json_schema"]["strict"] is True
    assert sent_schema(response_format["json_schema"]["schema"]) == SCHEMAS[name]
    jsonschema.validate(output["object"], SCHEMAS[name])
    assert output["finishReason"] == "stop"


def test_generate_object_without_schema(stack_url):
    output = run_ai_sdk(stack_url, "any-object")
    [request] = output["requests"]
    check_request(request)
    assert request["response_format"] == {"type": "json_object"}
    assert isinstance(output["object"], dict) and output["finishReason"] == "stop"


def weather_result(tool_input: dict) -> dict:
    """What the tool's execute in ai_sdk.mjs returns for an input."""
    return {**tool_input, "temperature": 21 if tool_input["unit"] == "celsius" else 70}


def check_tool_request(body: dict, tool_choice: str) -> None:
    check_request(body)
    [weather] = body["tools"]
    assert weather["type"] == "function" and weather["function"]["name"] == "get_weather"
    assert sent_schema(weather["function"]["parameters"]) == WEATHER
    assert body["tool_choice"] == tool_choice


def check_step(step: dict) -> list[dict]:
    """A step's calls validate and each has execute's result; returns the calls' inputs."""
    calls, results = step["toolCalls"], step["toolResults"]
    for call in calls:
        assert call["toolName"] == "get_weather" and call["toolCallId"].startswith("call_")
        jsonschema.validate(call["input"], WEATHER)
    assert [result["toolCallId"] for result in results] == [call["toolCallId"] for call in calls]
    assert [result["output"] for result in results] == [weather_result(call["input"]) for call in calls]
    return [call["input"] for call in calls]


def check_results_sent_back(second_request: dict, first_step: dict) -> None:
    """The second request replays the first step's calls and carries execute's results."""
    messages = second_request["messages"]
    calls = [message for message in messages if message["role"] == "assistant"][0]["tool_calls"]
    assert [call["id"] for call in calls] == [call["toolCallId"] for call in first_step["toolCalls"]]
    tool_messages = [message for message in messages if message["role"] == "tool"]
    assert [message["tool_call_id"] for message in tool_messages] == [call["id"] for call in calls]
    assert [json.loads(message["content"]) for message in tool_messages] == [
        result["output"] for result in first_step["toolResults"]]


def check_two_steps(output: dict) -> None:
    first, second = output["requests"]
    check_tool_request(first, "required")
    check_tool_request(second, "auto")
    check_results_sent_back(second, output["steps"][0])
    [step_one, step_two] = output["steps"]
    assert step_one["finishReason"] == "tool-calls" and step_one["toolCalls"]
    inputs = check_step(step_one)
    if step_two["toolCalls"]:
        assert step_two["finishReason"] == "tool-calls"
        inputs += check_step(step_two)
    else:
        assert step_two["text"] and step_two["finishReason"] in ("stop", "length")
    assert output["executed"] == inputs


def test_generate_text_with_tool_two_steps(stack_url):
    output = run_ai_sdk(stack_url, "tool-steps")
    check_two_steps(output)
    assert output["text"] == output["steps"][-1]["text"]


def streamed_inputs(parts: list[dict]) -> dict[str, str]:
    """Each streamed call's input deltas, joined, by call id."""
    inputs: dict[str, str] = {}
    for part in parts:
        if part["type"] == "tool-input-start":
            assert part["id"] not in inputs and part["toolName"] == "get_weather"
            inputs[part["id"]] = ""
        elif part["type"] == "tool-input-delta":
            inputs[part["id"]] += part["delta"]
    return inputs


def test_stream_text_with_tool(stack_url):
    output = run_ai_sdk(stack_url, "tool-stream")
    for request in output["requests"]:
        assert request["stream"] is True
    check_two_steps(output)
    parts = output["parts"]
    calls = [part for part in parts if part["type"] == "tool-call"]
    assert calls and {part["toolCallId"]: part["input"] for part in calls} == {
        call_id: json.loads(joined) for call_id, joined in streamed_inputs(parts).items()}
    for call in calls:
        jsonschema.validate(call["input"], WEATHER)
        [result] = [part for part in parts if part["type"] == "tool-result" and part["toolCallId"] == call["toolCallId"]]
        assert parts.index(result) > parts.index(call) and result["output"] == weather_result(call["input"])
    assert [part["type"] for part in parts][-1] == "finish"
    assert [part["finishReason"] for part in parts if part["type"] == "finish-step"][0] == "tool-calls"
