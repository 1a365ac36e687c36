"""Kubernetes manifests, docker-compose.yml, fly.toml and the Cloud Run recipe.

The Kubernetes objects are checked against the API schemas with kubernetes-validate (strict, so
a misspelt field fails); every file is also checked for what makes the relay work: port 3001,
health probes on ``/health``, the non-root user of the image, and an ``AMESH_TRUST_PROXY`` value
that fits the proxy in front of it.
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.deploy import dockerfile

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "kubernetes"
RELAY_PORT = 3001
# What the relay accepts: 1/true/yes (one trusted hop) or a hop count.
TRUST_PROXY_VALUE = re.compile(r"1|true|yes|[1-9][0-9]*", re.I)


def runtime_stage() -> dockerfile.Stage:
    return dockerfile.parse((REPO / "Dockerfile.relay").read_text(encoding="utf-8"))[-1]


def image_uid() -> int:
    return int(runtime_stage().one("USER").text.partition(":")[0])


def k8s_objects() -> dict[str, dict[str, Any]]:
    """Every object in deploy/kubernetes, keyed by kind (one of each kind)."""
    objects: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            assert document["kind"] not in objects, f"second {document['kind']} in {path.name}"
            objects[document["kind"]] = document
    return objects


def validate(document: dict[str, Any]) -> None:
    kubernetes_validate.validate(document, kubernetes_validate.latest_version(), strict=True)


@pytest.mark.parametrize("kind", ["Deployment", "Service", "Ingress"])
def test_kubernetes_schema(kind: str) -> None:
    validate(k8s_objects()[kind])


def test_kubernetes_validation_is_strict() -> None:
    """A misspelt field is rejected, so the schema test above has teeth."""
    deployment = copy.deepcopy(k8s_objects()["Deployment"])
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    manifests = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == manifests


def named_port(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    return int(next(p["containerPort"] for p in container["ports"] if p["name"] == port))


def test_deployment() -> None:
    objects = k8s_objects()
    deployment = objects["Deployment"]
    # Sessions live in one process: two replicas would split the peers of a pairing.
    assert deployment["spec"]["replicas"] == 1
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= (
        deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    (container,) = pod["containers"]
    assert [p["containerPort"] for p in container["ports"]] == [RELAY_PORT]
    for probe in ("readinessProbe", "livenessProbe"):
        check = container[probe]["httpGet"]
        assert check["path"] == "/health"
        assert named_port(container, check["port"]) == RELAY_PORT
    env = {item["name"]: item["value"] for item in container["env"]}
    assert env["PORT"] == str(RELAY_PORT)
    assert TRUST_PROXY_VALUE.fullmatch(env["AMESH_TRUST_PROXY"])
    for kind in ("requests", "limits"):
        assert set(container["resources"][kind]) == {"cpu", "memory"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == image_uid()
    assert pod["automountServiceAccountToken"] is False
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert "volumes" not in pod, "the relay writes nothing, so it needs no volume"


def test_service_and_ingress_route_to_the_relay() -> None:
    objects = k8s_objects()
    pod_template = objects["Deployment"]["spec"]["template"]
    (container,) = pod_template["spec"]["containers"]
    service = objects["Service"]
    assert service["spec"]["selector"].items() <= pod_template["metadata"]["labels"].items()
    (service_port,) = service["spec"]["ports"]
    assert named_port(container, service_port["targetPort"]) == RELAY_PORT
    (rule,) = objects["Ingress"]["spec"]["rules"]
    (path,) = rule["http"]["paths"]
    backend = path["backend"]["service"]
    assert backend["name"] == service["metadata"]["name"]
    assert backend["port"]["name"] == service_port["name"]
    annotations = objects["Ingress"]["metadata"]["annotations"]
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 120


def test_compose() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))
    (relay,) = compose["services"].values()
    assert (REPO / relay["build"]["context"] / relay["build"]["dockerfile"]) == (
        REPO / "Dockerfile.relay"
    )
    assert relay["ports"] == [f"{RELAY_PORT}:{RELAY_PORT}"]
    assert relay["environment"]["PORT"] == str(RELAY_PORT)
    assert "AMESH_TRUST_PROXY" not in relay["environment"], "a published port is not a proxy"
    assert relay["read_only"] is True
    assert relay["restart"] == "unless-stopped"
    # The compose check must be the image's own HEALTHCHECK, not a drifting copy.
    assert relay["healthcheck"]["test"] == ["CMD", *runtime_stage().one("HEALTHCHECK").command()]
    assert relay["ulimits"]["nofile"]["soft"] > 10_000


def test_fly() -> None:
    fly = tomllib.loads((REPO / "fly.toml").read_text(encoding="utf-8"))
    assert (REPO / fly["build"]["dockerfile"]).is_file()
    service = fly["http_service"]
    assert service["internal_port"] == RELAY_PORT
    assert service["force_https"] is True
    assert service["min_machines_running"] == 0
    (check,) = service["checks"]
    assert (check["method"], check["path"]) == ("GET", "/health")
    assert fly["env"]["PORT"] == str(RELAY_PORT)
    # Fly appends the client and then the app's own address: the client is two hops from the right.
    assert fly["env"]["AMESH_TRUST_PROXY"] == "2"
    assert fly["kill_signal"] == runtime_stage().one("STOPSIGNAL").text


def test_cloud_run_recipe() -> None:
    script = REPO / "deploy" / "cloudrun" / "deploy.sh"
    assert os.access(script, os.X_OK)
    subprocess.run(["sh", "-n", str(script)], check=True)
    result = subprocess.run(
        [str(script)],
        env={"PATH": os.environ["PATH"], "PROJECT_ID": "test-project", "DRY_RUN": "1"},
        capture_output=True,
        text=True,
        check=True,
    )
    build, deploy, _describe = (line.split() for line in result.stdout.splitlines())
    assert build[:3] == ["gcloud", "builds", "submit"]
    config = yaml.safe_load((REPO / build[build.index("--config") + 1]).read_text("utf-8"))
    (step,) = config["steps"]
    assert step["args"][:3] == ["build", "-f", "Dockerfile.relay"]
    image = build[build.index("--substitutions") + 1].removeprefix("_IMAGE=")
    assert image == "us-central1-docker.pkg.dev/test-project/authmesh/authmesh-relay"

    assert deploy[:3] == ["gcloud", "run", "deploy"]
    flags = " ".join(deploy)
    for flag in (
        "--port 3001",
        "--session-affinity",
        "--min-instances 0",
        "--max-instances 3",
        "--set-env-vars AMESH_TRUST_PROXY=1",
        f"--image {image}",
    ):
        assert flag in flags


def test_cloud_run_recipe_needs_a_project() -> None:
    result = subprocess.run(
        [str(REPO / "deploy" / "cloudrun" / "deploy.sh")],
        env={"PATH": os.environ["PATH"], "DRY_RUN": "1"},
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "set PROJECT_ID" in result.stderr
