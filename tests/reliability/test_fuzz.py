"""A bounded schemathesis run against /api-doc/openapi.json of a real router (scripted shard
over real gRPC): every documented operation, with schema-valid and schema-violating bodies,
boundary values (its coverage phase) and random ones. No 5xx (but a 504 for a deadline the
request set itself), no hang (each request has a
timeout and the whole run a deadline), every response as documented, every error in TGI's
JSON shape, invalid input refused, every stream well-formed (fuzz_checks.py)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
CHECKS = ("no_server_error", "status_code_conformance", "content_type_conformance",
          "response_headers_conformance", "response_schema_conformance", "negative_data_rejection",
          "missing_required_header", "unsupported_method", "tgi_error_shape", "stream_events_conform")


def test_schemathesis_finds_nothing(start_router, tmp_path):
    router = start_router()
    command = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(HERE / "schemathesis.toml"),
               "--no-color", "run", router.url + "/api-doc/openapi.json", "--checks", ",".join(CHECKS),
               "--phases", "examples,coverage,fuzzing", "--max-examples", "10", "--seed", "20261126",
               "--request-timeout", "5", "--workers", "2", "--report", "junit",
               "--report-dir", str(tmp_path)]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.reliability.fuzz_checks"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=HERE.parent.parent)
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    assert "Tested: 21" in result.stdout, result.stdout[-3000:]
