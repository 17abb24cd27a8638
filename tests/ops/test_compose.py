"""docker-compose.yml, its Dockerfiles and its Prometheus and Grafana files, checked with
no Docker engine: the Compose specification's JSON schema (vendored by check-jsonschema),
promtool, and the references between the files that a typo would break."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib import resources

import jsonschema
import pytest

from tests.conftest import ROOT
from tests.ops.conftest import DEPLOY, image_env, instructions, load

COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_FILES = [COMPOSE, DEPLOY / "compose.gpu.yml"]
DOCKERFILES = [ROOT / "router" / "Dockerfile", ROOT / "shard" / "Dockerfile"]
GRAFANA = DEPLOY / "grafana"


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_compose_file_follows_the_compose_specification(path):
    schema = json.loads((resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(load(path))]
    assert not errors


def test_compose_references_resolve():
    compose = load(COMPOSE)
    services = compose["services"]
    for name, service in services.items():
        build = service.get("build")
        if build:
            assert (ROOT / build["context"] / build["dockerfile"]).is_file(), name
        for dependency, spec in service.get("depends_on", {}).items():
            assert dependency in services, name
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], dependency
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert (ROOT / source).exists() if source.startswith("./") else source in compose["volumes"]


def test_build_args_are_declared_by_their_dockerfiles():
    for path in COMPOSE_FILES:
        for service in load(path)["services"].values():
            build = service.get("build", {})
            declared = {args.split("=")[0] for instruction, args in
                        instructions(ROOT / build.get("dockerfile", "-")) if instruction == "ARG"} if build else set()
            assert set(build.get("args", {})) <= declared, (path.name, build)


def test_router_shards_and_prometheus_agree_on_names_and_ports():
    services = load(COMPOSE)["services"]
    shard_env = image_env(ROOT / "shard" / "Dockerfile")
    shards = sorted(name for name in services if name.startswith("shard-"))
    assert services["router"]["environment"]["SHARD_URI"].split(",") == [
        f"{name}:{shard_env['SHARD_PORT']}" for name in shards]
    assert "8080:8080" in services["router"]["ports"]
    targets = {job["job_name"]: job["static_configs"][0]["targets"]
               for job in load(DEPLOY / "prometheus.yml")["scrape_configs"]}
    assert targets == {"router": ["router:8080"],
                       "shards": [f"{name}:{shard_env['METRICS_PORT']}" for name in shards]}


def test_promtool_accepts_the_prometheus_config():
    result = subprocess.run(["promtool", "check", "config", str(DEPLOY / "prometheus.yml")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_provisions_the_dashboard_from_the_datasource_compose_runs():
    grafana = load(COMPOSE)["services"]["grafana"]
    mounts = dict(volume.split(":")[:2] for volume in grafana["volumes"])
    provider = load(GRAFANA / "provisioning" / "dashboards" / "sluice.yml")["providers"][0]
    assert mounts["./router/deploy/grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./router/deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (GRAFANA / "dashboards" / home.removeprefix(provider["options"]["path"] + "/")).is_file()
    datasource = load(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")["datasources"][0]
    assert datasource["url"] == "http://prometheus:9090"
    board = json.loads((GRAFANA / "dashboards" / "sluice.json").read_text())
    uids = {target["datasource"]["uid"] for panel in board["panels"] for target in panel["targets"]}
    assert uids == {datasource["uid"]}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_dockerfile_copies_what_exists_and_builds_stubs_as_make_does(dockerfile):
    steps = instructions(dockerfile)
    for instruction, args in steps:
        if instruction == "COPY" and not args.startswith("--from"):
            for source in args.split()[:-1]:
                assert (ROOT / source).exists(), source
    makefile = re.sub(r"\\\n\t*", " ", (ROOT / "Makefile").read_text())
    make_protoc = re.search(r"grpc_tools\.protoc (.*)", makefile).group(1).split()
    assert any(re.search(r"grpc_tools\.protoc (.*?)&&", args).group(1).split() == make_protoc
               for instruction, args in steps if instruction == "RUN" and "grpc_tools.protoc" in args)
    ignored = (dockerfile.parent / "Dockerfile.dockerignore").read_text().split()
    assert {".venv", ".git"} <= set(ignored)


def test_the_router_imports_without_the_packages_its_image_leaves_out():
    left_out = re.search(r"grep -vE '\^\(([a-z|]+)\)", (ROOT / "router" / "Dockerfile").read_text()).group(1)
    block = "; ".join(f"sys.modules[{name!r}] = None" for name in left_out.split("|"))
    code = f"import sys; {block}; import router.__main__, router.app"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
