"""The router's error taxonomy: every failure a client can see, with its HTTP status,
TGI `error_type` and message. Pure Python, so schemas and validation can raise these
without importing aiohttp; middlewares.py turns them into JSON responses."""

from __future__ import annotations


class RouterError(Exception):
    """An error answered as `{"error": message, "error_type": error_type}`."""

    status: int = 500
    error_type: str = "internal"
    failure_label: str = "internal"  # the `err` label of tgi_request_failure
    close_connection: bool = False  # the connection's framing cannot be trusted after this
    param: str | None = None  # the request field at fault, for OpenAI's `error.param`

    def __init__(self, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}

    def to_dict(self) -> dict[str, str]:
        return {"error": self.message, "error_type": self.error_type}

    def to_openai_dict(self) -> dict:
        """The body on the /v1 routes. `error` is OpenAI's object, because the openai SDK
        puts only `error.message` into its exception text (and the JS client reads it in
        streams); `error_type` stays at the top, where huggingface_hub picks its exception
        class from in streams. huggingface_hub still shows the message, inside the object."""
        return {"error": {"message": self.message, "type": self.error_type, "param": self.param, "code": self.status},
                "error_type": self.error_type}


class ValidationError(RouterError):
    """A TGI ValidationError: the message is prefixed the way TGI prefixes it."""

    status = 422
    error_type = "validation"
    failure_label = "validation"
    prefix = "Input validation error: "

    def __init__(self, reason: str) -> None:
        super().__init__(self.prefix + reason)
        self.reason = reason


class InvalidParameter(ValidationError):
    """A ValidationError that names the field at fault in OpenAI's `error.param` (also what
    a field this server does not implement gets: refused, never ignored)."""

    def __init__(self, param: str, reason: str) -> None:
        super().__init__(reason)
        self.param = param


class ToolError(ValidationError):
    """TGI's tool_error: a request whose tools cannot be served as asked."""

    error_type = "tool_error"
    prefix = "Tool error: "


class TemplateError(RouterError):
    """The chat template is missing or failed to render these messages (TGI's wording)."""

    status = 422
    error_type = "template_error"
    failure_label = "validation"

    def __init__(self, reason: str) -> None:
        super().__init__(f"Template error: {reason}")


class RequestBodyError(RouterError):
    """The body could not be read as a request (TGI answers these in plain text from axum;
    we keep axum's wording but use the JSON shape so every client can map them)."""

    error_type = "validation"
    failure_label = "validation"

    def __init__(self, status: int, message: str, close_connection: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.close_connection = close_connection


class Overloaded(RouterError):
    status = 429
    error_type = "overloaded"
    failure_label = "overloaded"

    def __init__(self) -> None:
        # Retry-After lets clients back off instead of hammering (TGI sends none).
        super().__init__("Model is overloaded", headers={"Retry-After": "1"})


class QueueTimeout(RouterError):
    """No first token within the request's queue timeout, or its whole deadline
    (router/deadlines.py): refused as an overloaded server refuses, with Retry-After."""

    status = 429
    error_type = "queue_timeout"
    failure_label = "queue_timeout"

    def __init__(self, timeout_s: float) -> None:
        super().__init__(f"Queue timeout: generation did not start within {timeout_s:g} s",
                         headers={"Retry-After": "1"})


class DeadlineExceeded(RouterError):
    """The request's deadline passed while it generated: its answer is cut, not finished."""

    status = 504
    error_type = "deadline_exceeded"
    failure_label = "deadline_exceeded"

    def __init__(self, timeout_s: float, num_tokens: int) -> None:
        super().__init__(f"Deadline exceeded: the request's {timeout_s:g} s deadline passed after "
                         f"{num_tokens} generated tokens")


class GenerationError(RouterError):
    status = 424
    error_type = "generation"
    failure_label = "generation"

    def __init__(self, reason: str) -> None:
        super().__init__(f"Request failed during generation: {reason}")


class IncompleteGeneration(RouterError):
    status = 500
    error_type = "incomplete_generation"
    failure_label = "incomplete"

    def __init__(self) -> None:
        super().__init__("Incomplete generation")


class IncompleteGenerationStream(RouterError):
    status = 500
    error_type = "incomplete_generation_stream"
    failure_label = "incomplete"

    def __init__(self) -> None:
        super().__init__("Incomplete generation stream")


class HTTPError(RouterError):
    """An error aiohttp itself answers (404, 405): TGI answers these with an empty body."""

    failure_label = "validation"

    def __init__(self, status: int, reason: str, headers: dict[str, str]) -> None:
        super().__init__(reason, headers)
        self.status = status
        self.error_type = reason.lower().replace(" ", "_")  # not_found, method_not_allowed


class Unauthorized(RouterError):
    status = 401
    error_type = "unauthorized"

    def __init__(self) -> None:
        super().__init__("Unauthorized: missing or invalid `Authorization: Bearer <api key>` header")


class Unhealthy(RouterError):
    status = 503
    error_type = "healthcheck"

    def __init__(self) -> None:
        super().__init__("unhealthy")


class ShuttingDown(RouterError):
    """The router is draining after SIGTERM: retry, and a load balancer sends the retry to
    another replica. Also what a request still running at the end of the grace period gets."""

    status = 503
    error_type = "unavailable"
    failure_label = "shutdown"

    def __init__(self, message: str = "The server is shutting down") -> None:
        super().__init__(message, headers={"Retry-After": "1"})


class NotFound(RouterError):
    """An id in the path or body that names nothing here. OpenAI's type."""

    status = 404
    error_type = "invalid_request_error"
    failure_label = "validation"

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class ModelNotFound(NotFound):
    """GET /v1/models/{id} for a model this server does not serve. OpenAI's wording."""

    def __init__(self, model_id: str) -> None:
        super().__init__(f"The model `{model_id[:200]}` does not exist", "model")


class ResponseNotFound(NotFound):
    """No stored response has this id (/v1/responses): never stored, evicted, expired,
    deleted, or stored by another router process. OpenAI's wording."""

    def __init__(self, response_id: str, param: str | None = None) -> None:
        super().__init__(f"Response with id '{response_id[:100]}' not found.", param)
