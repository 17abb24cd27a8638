"""Stop strings have a length cap (`--max-stop-sequence-length`): past it, a 422 in the
route's shape, on the native and the OpenAI routes, and the OpenAPI document shows the cap.
At the cap, a stop string works on every route and never reaches an OpenAI answer. Real
router and real shard processes (tiny fp32 Llama, seeded: every answer is known)."""
from __future__ import annotations

import json

from tests.reliability.real_stack import RealStack, sse_events

CAP = 120
PROMPT = "The quick brown fox"
NUM_TOKENS = 200
# Seeded sampling at a high temperature (OpenAI's highest): varied text (greedy repeats one token here).
TEMPERATURE, SEED = 2.0, 7


def generate(stack: RealStack, parameters: dict) -> tuple[int, dict]:
    status, _, body = stack.post("/generate", {"inputs": PROMPT, "parameters": {
        "do_sample": True, "temperature": TEMPERATURE, "seed": SEED, "max_new_tokens": NUM_TOKENS, **parameters}})
    return status, json.loads(body)


def completion(stack: RealStack, **fields) -> tuple[int, bytes]:
    status, _, body = stack.post("/v1/completions", {"model": "tgi", "prompt": PROMPT, "temperature": TEMPERATURE,
                                                     "seed": SEED, "max_tokens": NUM_TOKENS, **fields})
    return status, body


def test_a_stop_string_over_the_cap_is_refused_in_each_routes_shape(start_stack, tiny_model):
    stack = start_stack("--max-stop-sequence-length", str(CAP), model_dir=tiny_model)
    message = f"Input validation error: `stop` supports stop sequences of up to {CAP} characters. Given: {CAP + 1}"
    too_long = ["ok", "x" * (CAP + 1)]
    for path in ("/generate", "/generate_stream"):
        status, _, body = stack.post(path, {"inputs": PROMPT, "parameters": {"stop": too_long}})
        assert (status, json.loads(body)) == (422, {"error": message, "error_type": "validation"}), path
    for stop in (too_long, too_long[1]):  # OpenAI's `stop`: a list or one string
        status, body = completion(stack, stop=stop)
        assert status == 422 and json.loads(body) == {
            "error": {"message": message, "type": "validation", "param": None, "code": 422},
            "error_type": "validation"}
    status, _, body = stack.post("/v1/chat/completions", {"model": "tgi", "stop": too_long,
                                                          "messages": [{"role": "user", "content": "hi"}]})
    assert status == 422 and json.loads(body)["error"]["message"] == message
    # The document shows the cap where validation draws it.
    _, _, body = stack.get("/api-doc/openapi.json")
    schemas = json.loads(body)["components"]["schemas"]
    tgi_stop = schemas["GenerateRequest"]["properties"]["parameters"]["properties"]["stop"]
    assert tgi_stop["items"]["maxLength"] == CAP
    openai_stop = schemas["CompletionRequest"]["properties"]["stop"]["oneOf"]
    assert openai_stop[0]["maxLength"] == CAP and openai_stop[1]["items"]["maxLength"] == CAP
    assert "one by one" not in stack.launcher.output()


def test_a_stop_string_at_the_cap_works_on_every_route(start_stack, tiny_model):
    stack = start_stack("--max-stop-sequence-length", str(CAP), model_dir=tiny_model)
    status, reference = generate(stack, {})
    assert status == 200, reference
    answer = reference["generated_text"]
    start = len(answer) // 2 - CAP // 2
    stop = answer[start:start + CAP]
    assert len(stop) == CAP and answer.find(stop) == start

    # TGI's semantics: the text up to the token that completes the stop string, with it.
    status, stopped = generate(stack, {"stop": [stop], "details": True})
    assert status == 200, stopped
    assert stopped["details"]["finish_reason"] == "stop_sequence"
    text = stopped["generated_text"]
    assert answer.startswith(text) and text.find(stop) == start and len(text) < start + CAP + 16

    # OpenAI's: the answer ends where the stop string begins, streamed or not.
    status, body = completion(stack, stop=stop)
    assert status == 200, body
    choice = json.loads(body)["choices"][0]
    assert (choice["text"], choice["finish_reason"]) == (answer[:start], "stop")
    status, body = completion(stack, stop=["never-in-the-answer", stop], stream=True)
    assert status == 200, body
    chunks = [event["choices"][0]["text"] for event in sse_events(body) if event.get("choices")]
    assert "".join(chunks) == answer[:start]
    assert sse_events(body)[-1]["choices"][0]["finish_reason"] == "stop"
