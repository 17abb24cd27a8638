"""router/deploy/k8s, checked offline: every resource the kustomization lists against the
Kubernetes API schemas (kubernetes-validate, strict: unknown fields fail), the wiring
between router, headless Service and StatefulSet, and the gRPC health check its probes
call, answered by a real shard."""
from __future__ import annotations

import subprocess
import sys

import grpc
import kubernetes_validate
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import ROOT, free_port
from tests.ops.conftest import DEPLOY, image_env

K8S = DEPLOY / "k8s"
# 1.27: the first release with gRPC probes on by default.
KUBERNETES_VERSIONS = ["1.27.0", kubernetes_validate.latest_version()]


def kustomization() -> dict:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def documents() -> list[dict]:
    return [doc for name in kustomization()["resources"]
            for doc in yaml.safe_load_all((K8S / name).read_text()) if doc]


def resource(kind: str, name: str) -> dict:
    return next(doc for doc in documents() if doc["kind"] == kind and doc["metadata"]["name"] == name)


def container(workload: dict) -> dict:
    (only,) = workload["spec"]["template"]["spec"]["containers"]
    return only


def test_the_kustomization_uses_only_what_this_check_renders():
    # Patches or generators would change the resources before Kubernetes sees them.
    assert set(kustomization()) <= {"apiVersion", "kind", "labels", "resources"}
    assert {doc["kind"] for doc in documents()} == {"Service", "StatefulSet", "Deployment"}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_resource_validates_against_the_kubernetes_schema(version):
    for doc in documents():
        kubernetes_validate.validate(doc, version, strict=True)


def test_router_finds_every_shard_by_its_headless_service_name():
    shards, headless = resource("StatefulSet", "sluice-shard"), resource("Service", "sluice-shard")
    assert headless["spec"]["clusterIP"] == "None"
    assert shards["spec"]["serviceName"] == headless["metadata"]["name"]
    assert headless["spec"]["selector"].items() <= shards["spec"]["template"]["metadata"]["labels"].items()
    grpc_port = int(image_env(ROOT / "shard" / "Dockerfile")["SHARD_PORT"])
    env = {var["name"]: var["value"] for var in container(resource("Deployment", "sluice-router"))["env"]}
    assert env["SHARD_URI"].split(",") == [f"sluice-shard-{index}.sluice-shard:{grpc_port}"
                                           for index in range(shards["spec"]["replicas"])]


def test_the_router_service_selects_the_router_pods():
    service, router = resource("Service", "sluice-router"), resource("Deployment", "sluice-router")
    assert service["spec"]["selector"].items() <= router["spec"]["template"]["metadata"]["labels"].items()
    port_names = {port["name"] for port in container(router)["ports"]}
    assert {port["targetPort"] for port in service["spec"]["ports"]} <= port_names


def test_probes_use_health_and_the_grpc_health_check():
    router = container(resource("Deployment", "sluice-router"))
    assert router["readinessProbe"]["httpGet"]["path"] == "/health"
    assert router["startupProbe"]["httpGet"]["path"] == "/health"
    shard = container(resource("StatefulSet", "sluice-shard"))
    grpc_port = int(image_env(ROOT / "shard" / "Dockerfile")["SHARD_PORT"])
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert shard[probe]["grpc"]["port"] == grpc_port


def test_prometheus_annotations_name_the_metrics_ports():
    metrics_port = image_env(ROOT / "shard" / "Dockerfile")["METRICS_PORT"]
    expected = {"sluice-router": "8080", "sluice-shard": metrics_port}
    for doc in documents():
        if doc["kind"] in ("Deployment", "StatefulSet"):
            annotations = doc["spec"]["template"]["metadata"]["annotations"]
            assert annotations["prometheus.io/scrape"] == "true"
            assert annotations["prometheus.io/port"] == expected[doc["metadata"]["name"]]
            ports = {str(port["containerPort"]) for port in container(doc)["ports"]}
            assert annotations["prometheus.io/port"] in ports


def test_a_live_shard_answers_the_standard_grpc_health_check(loopback_stack):
    for uri in loopback_stack.shard_uris:
        with grpc.insecure_channel(uri) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            for service in ("", "sluice.shard.v1.Shard"):
                reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.RpcError) as unknown:
                stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
            assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


def test_the_compose_healthcheck_command_tells_serving_from_down(loopback_stack):
    def probe(uri: str) -> int:
        return subprocess.run([sys.executable, "-m", "shard.health", uri], cwd=ROOT, timeout=30).returncode

    assert probe(loopback_stack.shard_uris[0]) == 0
    assert probe(f"127.0.0.1:{free_port()}") == 1
