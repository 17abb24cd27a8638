"""The clients most e2e modules drive, on the stack `stack_url` (tests/conftest.py) starts."""
from __future__ import annotations

import openai
import pytest
from huggingface_hub import InferenceClient


@pytest.fixture(scope="module")
def sdk(stack_url) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack_url + "/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def hub(stack_url) -> InferenceClient:
    return InferenceClient(stack_url)
