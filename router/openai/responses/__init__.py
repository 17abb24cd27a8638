"""OpenAI's Responses API (POST /v1/responses, GET and DELETE /v1/responses/{id}, GET
/v1/responses/{id}/input_items), built on the chat machinery: its input items become chat
messages, its tools chat's tools, and the generated text is read back into output items
(message text, function calls)."""
