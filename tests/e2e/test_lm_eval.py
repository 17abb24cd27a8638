"""lm-eval (EleutherAI's harness, its `local-completions` model) against the real stack
(router + shard + SmolLM2), on two tiny tasks this module writes from local JSONL files:
a `multiple_choice` task (loglikelihood: token-id prompts with `echo` and `logprobs`) and
a `generate_until` task (token-id prompts with `stop`), both with lm-eval's default
`tokenized_requests`. Both must finish and report a score; the loglikelihoods lm-eval
logged must be the ones /v1/completions echoes for the same tokens, and its generations
the answers the server gives for the same prompts."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from transformers import AutoTokenizer

MC_DOCS = [
    {"question": "The capital of France is", "choices": ["Paris", "banana bread pudding xyz"], "answer": 0},
    {"question": "Two plus two equals", "choices": ["four", "purple"], "answer": 0},
    {"question": "The opposite of hot is", "choices": ["cold", "Tuesday", "seventeen"], "answer": 0},
    {"question": "A dog says", "choices": ["meow", "woof"], "answer": 1},
    {"question": "The sky on a clear day is", "choices": ["green", "blue", "loud"], "answer": 1},
    {"question": "Water freezes at zero degrees", "choices": ["Celsius", "of separation"], "answer": 0},
]
GEN_DOCS = [
    {"question": "What is the capital of France?", "answer": "Paris"},
    {"question": "What is 2 + 2?", "answer": "4"},
    {"question": "What color is the sky on a clear day?", "answer": "Blue"},
    {"question": "How many legs does a dog have?", "answer": "4"},
    {"question": "What is the opposite of hot?", "answer": "Cold"},
]
MAX_GEN_TOKS = 8
# Run in a child: the HF_*_OFFLINE switches must be set before datasets/huggingface_hub
# import, and a hang stays bounded by the subprocess timeout.
RUNNER = """
import json, sys
import lm_eval
from lm_eval.api.registry import get_model
from lm_eval.tasks import TaskManager
include_path, model_args, out_path = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
lm = get_model("local-completions")(**model_args)
out = lm_eval.simple_evaluate(model=lm, tasks=["sluice_mc", "sluice_gen"], log_samples=True,
                              task_manager=TaskManager(include_path=include_path))
with open(out_path, "w") as f:
    json.dump({"results": out["results"], "samples": out["samples"],
               "tokenized_requests": lm.tokenized_requests}, f, default=str)
"""


def write_task(directory: Path, name: str, docs: list[dict], config: dict) -> None:
    data = directory / f"{name}.jsonl"
    data.write_text("".join(json.dumps(doc) + "\n" for doc in docs))
    task = {"task": name, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data)}},
            "test_split": "test", **config}
    (directory / f"{name}.yaml").write_text(yaml.safe_dump(task))


def write_tasks(directory: Path) -> Path:
    write_task(directory, "sluice_mc", MC_DOCS, {
        "output_type": "multiple_choice", "doc_to_text": "{{question}}", "doc_to_choice": "choices",
        "doc_to_target": "answer", "metric_list": [{"metric": "acc"}]})
    write_task(directory, "sluice_gen", GEN_DOCS, {
        "output_type": "generate_until", "doc_to_text": "Q: {{question}}\nA:", "doc_to_target": "{{answer}}",
        "generation_kwargs": {"until": ["\n"], "max_gen_toks": MAX_GEN_TOKS, "do_sample": False},
        "metric_list": [{"metric": "exact_match", "ignore_case": True, "ignore_punctuation": True}]})
    return directory


@pytest.fixture(scope="module")
def served_model(sdk) -> str:
    return sdk.models.list().data[0].id


@pytest.fixture(scope="module")
def evaluation(stack_url, served_model, default_model_dir, tmp_path_factory) -> dict:
    """One lm-eval run of both tasks: its results and logged samples."""
    tmp = tmp_path_factory.mktemp("lm_eval")
    (tmp / "tasks").mkdir()
    include_path = write_tasks(tmp / "tasks")
    model_args = {"base_url": stack_url + "/v1/completions", "model": served_model,
                  "tokenizer": str(default_model_dir), "tokenizer_backend": "huggingface",
                  "batch_size": 4, "num_concurrent": 1, "max_retries": 1, "timeout": 60}
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "HF_DATASETS_CACHE": str(tmp / "datasets"), "TOKENIZERS_PARALLELISM": "false"}
    out_path = tmp / "out.json"
    run = subprocess.run([sys.executable, "-c", RUNNER, str(include_path), json.dumps(model_args), str(out_path)],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-6000:]
    return json.loads(out_path.read_text())


def test_both_tasks_finish_with_a_score(evaluation):
    assert evaluation["tokenized_requests"] is True    # lm-eval's default: token-id prompts
    results = evaluation["results"]
    for task, metric, num_docs in (("sluice_mc", "acc,none", len(MC_DOCS)),
                                   ("sluice_gen", "exact_match,none", len(GEN_DOCS))):
        score = results[task][metric]
        assert isinstance(score, float) and 0.0 <= score <= 1.0, (task, score)
        assert len(evaluation["samples"][task]) == num_docs


def test_every_choice_has_a_finite_negative_loglikelihood(evaluation):
    for sample in evaluation["samples"]["sluice_mc"]:
        logliks = [loglik for loglik, _ in sample["filtered_resps"]]
        assert len(logliks) == len(sample["doc"]["choices"])
        assert all(math.isfinite(loglik) and loglik < 0 for loglik in logliks), logliks
        assert len(set(logliks)) == len(logliks), logliks    # the choices are told apart


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-eval's split (api/model.py _encode_pair): trailing spaces go with the continuation."""
    stripped = context.rstrip()
    continuation, context = context[len(stripped):] + continuation, stripped
    whole = tokenizer(context + continuation, add_special_tokens=False).input_ids
    context_ids = tokenizer(context, add_special_tokens=False).input_ids
    return context_ids, whole[len(context_ids):]


def test_loglikelihoods_are_the_servers_echo(evaluation, sdk, served_model, default_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(default_model_dir)
    for sample in evaluation["samples"]["sluice_mc"][:3]:
        for (context, continuation), (loglik, _) in zip(sample["arguments"], sample["filtered_resps"]):
            context_ids, continuation_ids = encode_pair(tokenizer, context, continuation)
            scored = sdk.completions.create(model=served_model, prompt=context_ids + continuation_ids,
                                            max_tokens=0, echo=True, logprobs=1, temperature=0)
            token_logprobs = scored.choices[0].logprobs.token_logprobs
            assert len(token_logprobs) == len(context_ids) + len(continuation_ids)
            assert math.isclose(sum(token_logprobs[len(context_ids):]), loglik, abs_tol=1e-3), \
                (context, continuation, loglik)


def test_generations_are_the_servers_answers(evaluation, sdk, served_model):
    samples = evaluation["samples"]["sluice_gen"]
    for sample in samples:
        (context, _), = sample["arguments"]
        answer = sdk.completions.create(model=served_model, prompt=context, max_tokens=MAX_GEN_TOKS,
                                        stop=["\n"], temperature=0)
        assert sample["resps"][0][0] == answer.choices[0].text, (context, sample["resps"])
    assert any(sample["resps"][0][0].strip() for sample in samples)
