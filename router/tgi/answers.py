"""Response JSON in TGI's exact shapes (tgi-api.md sections 3, 4 and 9).
Key order follows TGI's structs, since some clients and tests compare raw bytes."""

from __future__ import annotations

from router.inference import Generation
from router.validation import ValidRequest
from router.wire import Finished, Token, TokenDelta


def _prefill_json(token: Token) -> dict:
    # Prefill tokens carry no `special`; the first one's logprob is null.
    return {"id": token.id, "text": token.text, "logprob": token.logprob}


def full_text(valid: ValidRequest, text: str) -> str:
    return valid.inputs + text if valid.parameters.return_full_text else text


def generate_body(valid: ValidRequest, generations: list[Generation]) -> dict:
    """/generate's object; `generations` is sorted best first."""
    best = generations[0]
    body: dict = {"generated_text": full_text(valid, best.finished.text)}
    params = valid.parameters
    if not (params.details or params.decoder_input_details):
        return body
    details = _finish_json(best.finished)
    details.update(_token_lists(valid, best))
    if len(generations) > 1:
        details["best_of_sequences"] = [_sequence_json(valid, other) for other in generations[1:]]
    if params.top_n_tokens:
        details["top_tokens"] = _top_tokens_json(best)
    body["details"] = details
    return body


def _finish_json(finished: Finished) -> dict:
    return {"finish_reason": finished.finish_reason, "generated_tokens": finished.generated_tokens,
            "seed": finished.seed}


def _token_lists(valid: ValidRequest, generation: Generation) -> dict:
    prefill = generation.prefill if valid.parameters.decoder_input_details else ()
    return {"prefill": [_prefill_json(token) for token in prefill],
            "tokens": [token.to_json() for token in generation.tokens]}


def _top_tokens_json(generation: Generation) -> list[list[dict]]:
    return [[token.to_json() for token in top] for top in generation.top_tokens]


def _sequence_json(valid: ValidRequest, generation: Generation) -> dict:
    sequence = {"generated_text": full_text(valid, generation.finished.text)}
    sequence.update(_finish_json(generation.finished))
    sequence.update(_token_lists(valid, generation))
    if valid.parameters.top_n_tokens:
        sequence["top_tokens"] = _top_tokens_json(generation)
    return sequence


def stream_event(index: int, delta: TokenDelta, valid: ValidRequest) -> dict:
    """One SSE event; `generated_text` and `details` stay null until the last one."""
    event: dict = {"index": index, "token": delta.token.to_json()}
    if delta.top_tokens:
        event["top_tokens"] = [token.to_json() for token in delta.top_tokens]
    event["generated_text"] = None
    event["details"] = None
    finished = delta.finished
    if finished is not None:
        event["generated_text"] = full_text(valid, finished.text)
        if valid.parameters.details:
            event["details"] = {**_finish_json(finished), "input_length": valid.input_length}
    return event
