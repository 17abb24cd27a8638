"""Prompt tokenization for validation, truncation and /tokenize. The tokenizer is the
tokenizer.json of the model the shard serves, sent by the shard (its Tokenizer call).
Encoding runs in a small thread pool so a long prompt never blocks the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor

from tokenizers import Encoding, Tokenizer

from router.errors import ValidationError


class PromptTokenizer:
    def __init__(self, tokenizer: Tokenizer, num_workers: int) -> None:
        self._tokenizer = tokenizer
        self._executor = ThreadPoolExecutor(max_workers=num_workers, thread_name_prefix="tokenizer")

    @classmethod
    async def load(cls, files: Mapping[str, bytes], num_workers: int) -> PromptTokenizer:
        """From the shard's tokenizer files (file name -> content)."""
        if "tokenizer.json" not in files:
            raise ValueError("the shard sent no tokenizer.json")
        tokenizer = await asyncio.to_thread(Tokenizer.from_buffer, files["tokenizer.json"])
        return cls(tokenizer, num_workers)

    @property
    def vocab_size(self) -> int:
        """Token ids are below this (added tokens included)."""
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    async def decode(self, ids: tuple[int, ...]) -> str:
        """A token-id prompt's text (special tokens kept), in the pool: it grows with the ids."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: self._tokenizer.decode(list(ids),
                                                                                       skip_special_tokens=False))

    async def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return (await self._encode(text, add_special_tokens)).ids

    async def tokenize_json(self, text: str, max_input_tokens: int, dumps: Callable[[object], str],
                            add_special_tokens: bool = True) -> bytes:
        """TGI's /tokenize answer, serialized: offsets are byte offsets into `text`. All of
        it runs in the pool, since every part grows with the text."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._tokenize_json, text, max_input_tokens, dumps,
                                          add_special_tokens)

    def _tokenize_json(self, text: str, max_input_tokens: int, dumps: Callable[[object], str],
                       add_special_tokens: bool) -> bytes:
        encoding = self._encode_in_worker(text, add_special_tokens)
        if len(encoding) > max_input_tokens:  # len(): no list of a million ids just to refuse them
            raise ValidationError(f"`inputs` must have less than {max_input_tokens} tokens. "
                                  f"Given: {len(encoding)}")
        byte_offsets = _byte_offsets(text)
        return dumps([
            {"id": token_id, "text": text[start:stop], "start": byte_offsets[start], "stop": byte_offsets[stop]}
            for token_id, (start, stop) in zip(encoding.ids, encoding.offsets)
        ]).encode("utf-8")

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _encode(self, text: str, add_special_tokens: bool = True) -> Encoding:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._encode_in_worker, text, add_special_tokens)

    def _encode_in_worker(self, text: str, add_special_tokens: bool = True) -> Encoding:
        # encode_batch, not encode: tokenizers' encode holds the GIL for part of its work,
        # which froze the event loop for seconds on a 2 MB prompt; encode_batch releases it.
        try:
            return self._tokenizer.encode_batch([text], add_special_tokens=add_special_tokens)[0]
        except Exception as exc:  # tokenizers raises plain Exceptions
            raise ValidationError(f"tokenizer error {exc}") from exc


def _byte_offsets(text: str) -> list[int]:
    """byte_offsets[i] is the UTF-8 byte offset of character i (with one past the end)."""
    offsets = [0] * (len(text) + 1)
    total = 0
    for index, char in enumerate(text):
        offsets[index] = total
        total += len(char.encode("utf-8"))
    offsets[len(text)] = total
    return offsets
