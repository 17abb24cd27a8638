"""ShardConfig from flags and environment, and the errors a bad value gives."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest

from shard.config import ShardConfig, build_parser, from_args
from tests.conftest import ROOT

# Every field with a fixed set of values, its environment variable and one allowed value
# other than the default.
CHOICE_FIELDS = {
    "load_format": ("LOAD_FORMAT", "dummy"),
    "dtype": ("DTYPE", "bfloat16"),
    "device": ("DEVICE", "cuda"),
    "quantize": ("QUANTIZE", "int4"),
    "kernels": ("KERNELS", "torch"),
    "prefix_caching": ("PREFIX_CACHING", "off"),
}


def test_every_choice_field_is_covered_here():
    declared = {f.name for f in dataclasses.fields(ShardConfig) if f.metadata["choices"]}
    assert declared == set(CHOICE_FIELDS)


def test_defaults():
    config = from_args([], environ={"XDG_CACHE_HOME": "/xdg"})
    assert (config.model_id, config.cache_dir) == (None, "/xdg/sluice")
    assert (config.dtype, config.device, config.load_format) == ("auto", "cpu", "auto")
    assert (config.quantize, config.kernels, config.prefix_caching) == ("auto", "auto", "on")
    assert (config.hostname, config.port, config.metrics_port) == ("127.0.0.1", 50051, 0)
    assert (config.max_batch_size, config.max_waiting_tokens, config.waiting_served_ratio) == \
        (128, 20, 0.0)
    assert config.max_total_tokens is None and config.num_threads is None


def test_flags_and_environment_with_the_command_line_winning():
    environ = {"SHARD_PORT": "7000", "SHARD_HOSTNAME": "0.0.0.0", "SLUICE_CACHE_DIR": "/c",
               "MAX_BATCH_SIZE": "8", "WAITING_SERVED_RATIO": "1.5", "DTYPE": "float16",
               "MAX_TOTAL_TOKENS": "256"}
    config = from_args([], environ=environ)
    assert (config.port, config.hostname, config.cache_dir) == (7000, "0.0.0.0", "/c")
    assert (config.max_batch_size, config.waiting_served_ratio) == (8, 1.5)
    assert (config.dtype, config.max_total_tokens) == ("float16", 256)
    config = from_args(["--port", "7001", "--dtype", "float32", "--max-total-tokens", "64"],
                       environ=environ)
    assert (config.port, config.dtype, config.max_total_tokens) == (7001, "float32", 64)


@pytest.mark.parametrize("name", sorted(CHOICE_FIELDS))
def test_every_choice_field_takes_an_allowed_value_from_flag_and_environment(name):
    env_name, value = CHOICE_FIELDS[name]
    assert getattr(from_args([], environ={env_name: value}), name) == value
    assert getattr(from_args(["--" + name.replace("_", "-"), value], environ={}), name) == value


@pytest.mark.parametrize("name", sorted(CHOICE_FIELDS))
def test_every_choice_field_refuses_banana_from_flag_and_environment(name):
    env_name, _ = CHOICE_FIELDS[name]
    flag = "--" + name.replace("_", "-")
    message = rf"{flag} \(env {env_name}\) must be one of .*\. Given: 'banana'"
    with pytest.raises(ValueError, match=message):
        from_args([], environ={env_name: "banana"})
    with pytest.raises(ValueError, match=message):
        from_args([flag, "banana"], environ={})


@pytest.mark.parametrize("argv, message", [
    (["--max-batch-size", "0"], "`max_batch_size` must be > 0"),
    (["--max-waiting-tokens", "0"], "`max_waiting_tokens` must be > 0"),
    (["--max-total-tokens", "-1"], "`max_total_tokens` must be > 0"),
    (["--waiting-served-ratio", "-1"], "`waiting_served_ratio` must be >= 0"),
    (["--port", "70000"], "ports must be in"),
])
def test_invalid_numbers_raise_value_error(argv, message):
    with pytest.raises(ValueError, match=message):
        from_args(argv, environ={})


def test_help_names_each_flags_environment_variable():
    text = " ".join(build_parser({}).format_help().split())    # argparse wraps lines
    assert "[env SHARD_PORT; default 50051]" in text and "[env SLUICE_CACHE_DIR]" in text
    assert "--dtype {auto,float32,bfloat16,float16}" in text


def run_shard(*argv: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shard", *argv], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, **env})


def test_python_m_shard_help_and_a_bad_environment_value():
    assert run_shard("--help").returncode == 0
    result = run_shard(DTYPE="banana")
    assert result.returncode == 2
    assert "--dtype (env DTYPE) must be one of auto, float32, bfloat16, float16" in result.stderr
    assert "Traceback" not in result.stderr
