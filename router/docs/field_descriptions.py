"""The prose of the OpenAPI document: one description per request field, TGI's and
OpenAI's, read by openapi.py. A parsed field missing here breaks the document's build."""

DESCRIPTIONS = {
    # TGI's parameters
    "best_of": "Generate this many sequences and return the one with the highest mean token logprob "
               "(needs sampling; not when streaming)",
    "temperature": "Sampling temperature", "repetition_penalty": "Penalty for repeated tokens (1.0: none)",
    "frequency_penalty": "Penalty growing with each token's count so far",
    "presence_penalty": "Penalty for any token already generated (OpenAI's meaning)",
    "top_k": "Sample from the k most likely tokens", "top_p": "Nucleus sampling: the smallest set of tokens "
    "whose probabilities add up to top_p", "typical_p": "Typical decoding mass",
    "do_sample": "Sample instead of greedy decoding (default true when `parameters` is absent)",
    "max_new_tokens": "Most tokens to generate (default: the rest of the context)",
    "return_full_text": "Prepend the prompt to the generated text", "stop": "Stop before any of these strings",
    "truncate": "Keep only this many prompt tokens (from the end)", "watermark": "Accepted and ignored",
    "details": "Return finish reason, token details and seed",
    "decoder_input_details": "Return the prompt tokens' logprobs (not when streaming)",
    "seed": "Random seed for sampling", "top_n_tokens": "Return this many most likely tokens at each step",
    "grammar": "Constrain the output to a JSON Schema (`json`, or its alias `json_object`: the schema or a "
               "JSON string of one; `json_schema`: `{\"name\", \"schema\"}`) or a regular expression the "
               "whole output matches (`regex`). Every token is masked by it, and the answer ends (eos_token) "
               "once it is complete; an invalid or over-long one gets 422",
    "request_timeout_s": "sluice's: seconds the whole request may take; past it the answer ends with a "
                         "`deadline_exceeded` error (504, or the stream's last event). Wins over the "
                         "X-Request-Timeout header",
    "queue_timeout_s": "sluice's: seconds the request may wait for its first token; past it a 429 with "
                       "Retry-After (`queue_timeout`). Wins over the X-Queue-Timeout header",
    "priority": "sluice's: `high`, `normal` (default) or `low`. Low requests are refused first under overload; "
                "waiting requests join the batch in class order. Wins over the X-Priority header",
    "min_new_tokens": "An extension (vLLM's `min_tokens`): EOS is masked until this many tokens are generated",
    "ignore_eos_token": "An extension (vLLM's `ignore_eos`): EOS does not end the answer, which runs to "
                        "`max_new_tokens` or a stop string",
    "adapter_id": "Not supported: refused with 422",
    # OpenAI's fields
    "model": "Any name: this server serves one model", "messages": "The conversation so far",
    "prompt": "A prompt, or several (one choice each): text, or token ids (a list of integers, or a list of "
              "such lists)", "max_tokens": "Most tokens to generate per choice",
    "max_completion_tokens": "The newer name of `max_tokens`, used when that is absent",
    "n": "Choices per prompt, each its own generation (prompts x n at most --max-client-batch-size)",
    "logit_bias": "Token id (as a string) -> a bias from -100 to 100 added to its logit before sampling: "
                  "-100 bans the token, 100 all but forces it",
    "min_tokens": "vLLM's extension: EOS is masked until this many tokens are generated",
    "ignore_eos": "vLLM's extension: EOS does not end the answer, which runs to `max_tokens` or a stop string",
    "stream": "Answer with server-sent events", "stream_options": "`include_usage`: a last chunk with usage; `continuous_usage_stats` (vLLM's): usage so far on every chunk",
    "logprobs": "Return the chosen tokens' logprobs (chat), or this many alternatives (completions)",
    "top_logprobs": "Alternatives per token (needs `logprobs`)",
    "tools": "Functions the model may call (`type` `function`; `function.name`, unique; `description`; "
             "`parameters`, a JSON Schema of the arguments). They are shown to the model through its chat "
             "template, or a default tool prompt. The answer is one or more calls (exactly one with "
             "`parallel_tool_calls` false or a named `tool_choice`), whose arguments always follow the schema, "
             "or under `tool_choice` `auto` a text answer",
    "tool_choice": "`auto` (the default with tools: a call, or a plain text answer), `required` (a call to "
                   "one of `tools`), `none` (a text answer; tools are not shown), or "
                   "`{\"type\": \"function\", \"function\": {\"name\": ...}}` (a call to that tool)",
    "parallel_tool_calls": "Whether an answer may hold several tool calls (default true; with `tool_choice` "
                           "`auto` or `required`). False, or a named function, is exactly one call",
    "tool_prompt": "TGI's: the text that introduces the tools, in place of the default tool prompt's (which "
                   "says how to write a call). It ends the last message after a `---` line, followed by the "
                   "tools as JSON; with a chat template that renders `tools` itself, it is appended alone. "
                   "Ignored without tools or with `tool_choice` `none`",
    "response_format": "`text` (unconstrained), `json_object` (any JSON object) or `json_schema` (output "
                       "that follows `json_schema.schema`; `strict` is accepted, and the output always "
                       "follows the schema). Also TGI's grammar objects (`json`, `json_object` or `regex` "
                       "with a `value`, as huggingface_hub sends them). An invalid schema gets 422",
    "suffix": "Not supported: must be empty",
    "echo": "Put the prompt before the answer; with `logprobs`, the prompt tokens' logprobs and alternatives "
            "first (null for the first token). With `max_tokens: 0`, the prompt alone is scored (lm-eval's "
            "loglikelihood). Not when streaming",
    # OpenAI's Responses fields (router/docs/responses_api.py: those named as chat's but meaning otherwise)
    "input": "A user message as a string, or a list of items: messages (role user, system, developer or "
             "assistant; text content), `function_call` items and their `function_call_output`",
    "instructions": "A system message before the input (not carried over by `previous_response_id`)",
    "max_output_tokens": "Most tokens to generate (default: the rest of the context); an answer cut by it is "
                         "`incomplete`",
    "text": "`format`: `{\"type\": \"text\"}`, `{\"type\": \"json_object\"}` (any JSON object) or "
            "`{\"type\": \"json_schema\", \"name\", \"schema\", \"strict\"}` (output that follows the "
            "schema); `verbosity`: `medium` only",
    "metadata": "Up to 16 string pairs (keys up to 64 characters, values up to 512), echoed and stored",
    "user": "Echoed", "safety_identifier": "Echoed", "prompt_cache_key": "Echoed (prompt caching is automatic)",
    "store": "Keep the finished response in this router process for GET and `previous_response_id` "
             "(default true; bounded by --responses-store-max-count, -max-bytes and -ttl-s)",
    "previous_response_id": "Continue from a stored response: its input and output come before `input` "
                            "(404 if this router process does not have it)",
    "background": "Not supported: false or null only", "include": "Not supported: empty or null only",
    "truncation": "Not supported: `disabled` or null only (a prompt over the context gets 422)",
    "reasoning": "Not supported: null only", "conversation": "Not supported: null only (use `previous_response_id`)",
    "max_tool_calls": "Not supported: null only (`parallel_tool_calls: false` makes at most one call)",
}
