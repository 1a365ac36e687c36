"""Kubernetes manifests, docker-compose.yml, fly.toml, the nginx cluster site and the Cloud Run
recipe.

The Kubernetes objects are checked against the API schemas with kubernetes-validate (strict, so
a misspelt field fails); every file is also checked for what makes the relay work: port 3001,
health probes on ``/health``, the non-root user of the image, and an ``AMESH_TRUST_PROXY`` value
that fits the proxy in front of it. The variants with several relays sharing a Redis (the
``cluster`` kustomization, the compose profile ``cluster``, ``REDIS_URL`` for Cloud Run) are
checked for the wiring between relays, Redis and the load balancer. Neither kubectl nor Docker
runs here, so the kustomize patch is applied by :func:`strategic_merge`, and the compose
profile's nginx site runs in a real nginx in front of real relays sharing a real redis-server:
two peers pair across relays, and failures spread over the relays add up.
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
import tomllib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from tests.deploy import dockerfile
from tests.support.cluster import Cluster, metrics_of, running_cluster
from tests.support.nginxproc import NGINX, checked_command, serving
from tests.support.redisproc import RedisServer
from tests.support.relay_clients import open_client
from tests.support.relayproc import free_port, free_ports

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "kubernetes"
BASE = K8S / "base"
CLUSTER = K8S / "cluster"
NGINX_CLUSTER_SITE = REPO / "deploy" / "nginx" / "cluster.conf"
RELAY_PORT = 3001
FAILURE_LIMIT = 3
ACK = {"type": "ack", "message": "session_open"}
PEER_FOUND = {"type": "peer_found"}
needs_nginx = pytest.mark.skipif(not Path(NGINX).exists(), reason="nginx is not installed")
# What the relay accepts: 1/true/yes (one trusted hop) or a hop count.
TRUST_PROXY_VALUE = re.compile(r"1|true|yes|[1-9][0-9]*", re.I)


def runtime_stage() -> dockerfile.Stage:
    return dockerfile.parse((REPO / "Dockerfile.relay").read_text(encoding="utf-8"))[-1]


def image_uid() -> int:
    return int(runtime_stage().one("USER").text.partition(":")[0])


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def k8s_objects(directory: Path = BASE) -> dict[str, dict[str, Any]]:
    """Every object in the resource files of a kustomization, keyed by kind (one of each)."""
    objects: dict[str, dict[str, Any]] = {}
    for name in load_yaml(directory / "kustomization.yaml")["resources"]:
        if (directory / name).is_dir():
            continue
        for document in yaml.safe_load_all((directory / name).read_text(encoding="utf-8")):
            assert document["kind"] not in objects, f"second {document['kind']} in {name}"
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
    kustomization = load_yaml(BASE / "kustomization.yaml")
    manifests = {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == manifests


def test_default_kustomization_is_the_single_relay() -> None:
    """`kubectl apply -k deploy/kubernetes` applies the base unchanged."""
    kustomization = load_yaml(K8S / "kustomization.yaml")
    assert kustomization["resources"] == ["base"]
    assert set(kustomization) == {"apiVersion", "kind", "resources"}
    assert {p.name for p in K8S.glob("*.yaml")} == {"kustomization.yaml"}


def relay_container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def named_port(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    return int(next(p["containerPort"] for p in container["ports"] if p["name"] == port))


def test_deployment() -> None:
    objects = k8s_objects()
    deployment = objects["Deployment"]
    # Without Redis, sessions live in one process: two replicas would split a pairing's peers.
    assert deployment["spec"]["replicas"] == 1
    assert "AMESH_REDIS_URL" not in {item["name"] for item in relay_container(deployment)["env"]}
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


# --- deploy/kubernetes/cluster: the base with more replicas and a shared Redis ---------------


def strategic_merge(base: Any, patch: Any) -> Any:
    """Enough of Kubernetes' strategic merge patch for the cluster patch: maps merge key by key,
    lists whose items all have a ``name`` (containers, env) merge item by item on that name, and
    anything else is replaced. (kubectl merges ports by containerPort; the patch has none.)"""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for key, value in patch.items():
            merged[key] = strategic_merge(base[key], value) if key in base else value
        return merged
    named = isinstance(base, list) and isinstance(patch, list)
    if named and all(isinstance(item, dict) and "name" in item for item in [*base, *patch]):
        merged_items = list(base)
        for item in patch:
            names = [existing["name"] for existing in merged_items]
            if item["name"] in names:
                index = names.index(item["name"])
                merged_items[index] = strategic_merge(merged_items[index], item)
            else:
                merged_items.append(item)
        return merged_items
    return copy.deepcopy(patch)


def cluster_kustomization() -> dict[str, Any]:
    return load_yaml(CLUSTER / "kustomization.yaml")


def cluster_patches() -> list[dict[str, Any]]:
    return [load_yaml(CLUSTER / patch["path"]) for patch in cluster_kustomization()["patches"]]


def cluster_deployment() -> dict[str, Any]:
    """The relay Deployment as `kubectl apply -k deploy/kubernetes/cluster` creates it."""
    deployment = k8s_objects()["Deployment"]
    for patch in cluster_patches():
        assert (patch["kind"], patch["metadata"]["name"]) == (
            deployment["kind"],
            deployment["metadata"]["name"],
        ), "every cluster patch targets the relay Deployment of the base"
        deployment = strategic_merge(deployment, patch)
    return deployment


def cluster_objects() -> dict[str, dict[str, Any]]:
    return k8s_objects(CLUSTER)


def test_cluster_kustomization_references_existing_files() -> None:
    kustomization = cluster_kustomization()
    resources = kustomization["resources"]
    # kustomize refuses a base that contains the overlay, hence base/ beside cluster/.
    assert "../base" in resources
    for name in resources:
        target = CLUSTER / name
        assert (target / "kustomization.yaml").is_file() if target.is_dir() else target.is_file()
    patches = [patch["path"] for patch in kustomization["patches"]]
    assert all((CLUSTER / path).is_file() for path in patches)
    listed = {name for name in [*resources, *patches] if not name.startswith("..")}
    assert {p.name for p in CLUSTER.glob("*.yaml")} - {"kustomization.yaml"} == listed


@pytest.mark.parametrize("kind", sorted(k8s_objects(CLUSTER)))
def test_cluster_schema(kind: str) -> None:
    validate(cluster_objects()[kind])


def test_cluster_relay_deployment() -> None:
    """The patched Deployment is valid, runs several replicas and finds Redis by its Service."""
    deployment = cluster_deployment()
    validate(deployment)
    assert deployment["spec"]["replicas"] > 1
    container = relay_container(deployment)
    env = {item["name"]: item["value"] for item in container["env"]}
    assert TRUST_PROXY_VALUE.fullmatch(env["AMESH_TRUST_PROXY"]), "the base's env is kept"
    redis_url = urlsplit(env["AMESH_REDIS_URL"])
    assert redis_url.scheme in ("redis", "rediss")
    service = cluster_objects()["Service"]
    (service_port,) = service["spec"]["ports"]
    assert (redis_url.hostname, redis_url.port) == (
        service["metadata"]["name"],
        service_port["port"],
    )
    # A replica that lost Redis leaves the Service (/health 503) but is not restarted.
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    liveness = container["livenessProbe"]
    assert liveness["httpGet"]["path"] == "/metrics"
    assert named_port(container, liveness["httpGet"]["port"]) == RELAY_PORT


def test_cluster_redis_is_hardened_and_private() -> None:
    objects = cluster_objects()
    assert set(objects) == {
        "PersistentVolumeClaim",
        "Deployment",
        "Service",
        "NetworkPolicy",
        "PodDisruptionBudget",
    }
    relay_labels = k8s_objects()["Deployment"]["spec"]["template"]["metadata"]["labels"]
    deployment = objects["Deployment"]
    pod_template = deployment["spec"]["template"]
    redis_labels = pod_template["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= redis_labels.items()
    relay_service = k8s_objects()["Service"]
    assert not relay_service["spec"]["selector"].items() <= redis_labels.items(), (
        "the relay Service must not route clients to Redis"
    )

    pod = pod_template["spec"]
    (container,) = pod["containers"]
    assert container["image"].startswith("redis:7")
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    for kind in ("requests", "limits"):
        assert set(container["resources"][kind]) == {"cpu", "memory"}
    assert {"readinessProbe", "livenessProbe"} <= set(container)

    # Used bootstrap token ids survive a Redis restart: append-only file on the claimed volume.
    args = container["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
    (mount,) = container["volumeMounts"]
    assert args[args.index("--dir") + 1] == mount["mountPath"]
    (volume,) = pod["volumes"]
    assert volume["name"] == mount["name"]
    assert (
        volume["persistentVolumeClaim"]["claimName"]
        == objects["PersistentVolumeClaim"]["metadata"]["name"]
    )
    assert deployment["spec"]["strategy"]["type"] == "Recreate", "one pod owns the volume"

    service = objects["Service"]
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"].items() <= redis_labels.items()
    (service_port,) = service["spec"]["ports"]
    assert named_port(container, service_port["targetPort"]) == 6379

    # Only relay pods may connect to Redis.
    policy = objects["NetworkPolicy"]["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= redis_labels.items()
    assert policy["policyTypes"] == ["Ingress"]
    (rule,) = policy["ingress"]
    (source,) = rule["from"]
    assert source["podSelector"]["matchLabels"].items() <= relay_labels.items()
    (port,) = rule["ports"]
    assert named_port(container, port["port"]) == 6379

    budget = objects["PodDisruptionBudget"]["spec"]
    assert budget["selector"]["matchLabels"].items() <= relay_labels.items()
    assert budget["maxUnavailable"] < cluster_deployment()["spec"]["replicas"]


def compose_services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = load_yaml(REPO / "docker-compose.yml")["services"]
    return services


def test_compose() -> None:
    """`docker compose up -d` (no profile) starts the single relay and nothing else."""
    default = {name: s for name, s in compose_services().items() if "profiles" not in s}
    (relay,) = default.values()
    assert (REPO / relay["build"]["context"] / relay["build"]["dockerfile"]) == (
        REPO / "Dockerfile.relay"
    )
    assert relay["ports"] == [f"{RELAY_PORT}:{RELAY_PORT}"]
    assert relay["environment"]["PORT"] == str(RELAY_PORT)
    assert "AMESH_TRUST_PROXY" not in relay["environment"], "a published port is not a proxy"
    assert "AMESH_REDIS_URL" not in relay["environment"]
    assert relay["read_only"] is True
    assert relay["restart"] == "unless-stopped"
    # The compose check must be the image's own HEALTHCHECK, not a drifting copy.
    assert relay["healthcheck"]["test"] == ["CMD", *runtime_stage().one("HEALTHCHECK").command()]
    assert relay["ulimits"]["nofile"]["soft"] > 10_000


def cluster_upstream(site: str) -> set[str]:
    """``host:port`` of every server in the nginx cluster site's upstream block."""
    (block,) = re.findall(r"upstream \w+ \{(.*?)\}", site, re.S)
    return set(re.findall(r"^\s*server ([\w.-]+:\d+);", block, re.M))


def test_compose_cluster_profile() -> None:
    """`docker compose --profile cluster up -d`: Redis, two relays sharing it, nginx in front."""
    services = compose_services()
    cluster = {name: s for name, s in services.items() if "cluster" in s.get("profiles", [])}
    relays = {name: s for name, s in cluster.items() if "build" in s}
    assert set(cluster) - set(relays) == {"redis", "nginx"}
    assert len(relays) >= 2

    redis_service = cluster["redis"]
    assert redis_service["image"].startswith("redis:7")
    command = redis_service["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert redis_service["read_only"] is True
    assert "ports" not in redis_service, "Redis must not be published"

    networks = load_yaml(REPO / "docker-compose.yml")["networks"]
    (backend,) = redis_service["networks"]
    assert networks[backend]["internal"] is True

    for name, relay in relays.items():
        assert (REPO / relay["build"]["context"] / relay["build"]["dockerfile"]) == (
            REPO / "Dockerfile.relay"
        )
        assert "ports" not in relay, f"{name} is reached through nginx only"
        assert relay["networks"] == [backend]
        env = relay["environment"]
        redis_url = urlsplit(env["AMESH_REDIS_URL"])
        assert (redis_url.scheme, redis_url.hostname, redis_url.port) == ("redis", "redis", 6379)
        assert env["AMESH_TRUST_PROXY"] == "1", "nginx is the one proxy that appends"
        assert relay["depends_on"]["redis"]["condition"] == "service_healthy"
        assert relay["read_only"] is True
        assert relay["healthcheck"]["test"] == services["relay"]["healthcheck"]["test"]

    nginx = cluster["nginx"]
    ((published, container_port),) = (p.split(":") for p in nginx["ports"])
    assert published != str(RELAY_PORT), "the single relay keeps port 3001"
    (mount,) = nginx["volumes"]
    source, target, mode = mount.split(":")
    assert (REPO / source).resolve() == NGINX_CLUSTER_SITE
    assert target.startswith("/etc/nginx/conf.d/") and mode == "ro"
    assert backend in nginx["networks"]
    for name in relays:
        assert nginx["depends_on"][name]["condition"] == "service_healthy"

    site = NGINX_CLUSTER_SITE.read_text(encoding="utf-8")
    assert re.search(rf"^\s*listen {container_port};", site, re.M)
    assert cluster_upstream(site) == {f"{n}:{r['environment']['PORT']}" for n, r in relays.items()}


def nginx_cluster_site(public_port: int, relay_ports: Sequence[int]) -> str:
    """cluster.conf serving 127.0.0.1:``public_port`` in front of ``relay_ports`` (each compose
    service name and the listener replaced exactly once)."""
    site = NGINX_CLUSTER_SITE.read_text(encoding="utf-8")
    servers = sorted(cluster_upstream(site))
    for old, new in [
        ("listen 8080;", f"listen 127.0.0.1:{public_port};"),
        *(
            (f"server {server};", f"server 127.0.0.1:{port};")
            for server, port in zip(servers, relay_ports, strict=True)
        ),
    ]:
        assert site.count(old) == 1, f"{NGINX_CLUSTER_SITE.name} has {old!r} not exactly once"
        site = site.replace(old, new)
    return site


def cluster_site_relays() -> int:
    return len(cluster_upstream(NGINX_CLUSTER_SITE.read_text(encoding="utf-8")))


@needs_nginx
def test_nginx_cluster_site(tmp_path: Path) -> None:
    """Round robin with WebSocket upgrades, hour-long timeouts and X-Forwarded-For appended;
    the real nginx accepts it once the compose service names are replaced by loopback ports."""
    site = NGINX_CLUSTER_SITE.read_text(encoding="utf-8")
    directives = {line.split("#")[0].strip() for line in site.splitlines()}
    assert not directives & {"ip_hash;", "sticky;"}, "no affinity: the relays forward"
    assert not any(directive.startswith("hash ") for directive in directives)
    assert {
        "proxy_http_version 1.1;",
        "proxy_set_header Upgrade $http_upgrade;",
        "proxy_set_header Connection $authmesh_connection_upgrade;",
        "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "proxy_read_timeout 3600s;",
    } <= directives
    public_port, *relay_ports = free_ports(1 + cluster_site_relays())
    checked_command(tmp_path, nginx_cluster_site(public_port, relay_ports))


@pytest.fixture
def nginx_cluster(tmp_path: Path, redis_server: RedisServer) -> Iterator[Cluster]:
    """Relays sharing a fresh Redis database behind a real nginx running cluster.conf, trusting
    the one hop nginx appends; :attr:`Cluster.port` is nginx's."""
    env = {"AMESH_TRUST_PROXY": "1", "AMESH_PAIRING_FAILURE_LIMIT": str(FAILURE_LIMIT)}
    with running_cluster(redis_server, cluster_site_relays(), env) as cluster:
        cluster.port = free_port()
        relay_ports = [instance.port for instance in cluster.instances]
        with serving(tmp_path, nginx_cluster_site(cluster.port, relay_ports), cluster.port):
            yield cluster


@needs_nginx
async def test_nginx_cluster_site_pairs_across_relays(nginx_cluster: Cluster) -> None:
    """Round robin puts the two peers on different relays, which pair them through Redis."""
    target = await open_client(nginx_cluster)
    controller = await open_client(nginx_cluster)
    try:
        assert await target.request({"type": "listen", "otc": "482916"}) == ACK
        assert await controller.request({"type": "connect", "otc": "482916"}) == PEER_FOUND
        assert await target.recv_json() == PEER_FOUND
        await target.send({"type": "data", "payload": "x" * 1024})
        assert await controller.recv_json() == {"type": "data", "payload": "x" * 1024}
        # One relay forwards the controller's socket, the other handles it as a guest.
        crossing = sorted(
            (metrics["authmesh_relay_forwarded_sockets"], metrics["authmesh_relay_guest_sockets"])
            for metrics in map(metrics_of, (instance.port for instance in nginx_cluster.instances))
        )
        assert crossing == [(0, 1), (1, 0)], "the peers did not land on different relays"
    finally:
        await target.close()
        await controller.close()


@needs_nginx
async def test_nginx_cluster_site_shares_failure_counts(nginx_cluster: Cluster) -> None:
    """nginx appends the real peer, so a forged X-Forwarded-For buys no fresh bucket, and the
    failures, spread over both relays by round robin, add up in Redis."""
    answers = []
    for attempt in range(FAILURE_LIMIT + 1):
        forged = {"X-Forwarded-For": f"198.51.100.{attempt + 1}"}
        guesser = await open_client(nginx_cluster, forged)
        try:
            answers.append(await guesser.request({"type": "connect", "otc": "000000"}))
        finally:
            await guesser.close()
    assert answers == [{"type": "error", "code": "otc_not_found"}] * FAILURE_LIMIT + [
        {"type": "error", "code": "rate_limited"}
    ]


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


CLOUD_RUN_SCRIPT = REPO / "deploy" / "cloudrun" / "deploy.sh"


def cloud_run_dry_run(settings: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """deploy.sh with DRY_RUN=1 and only ``settings`` (plus PATH) in its environment."""
    return subprocess.run(
        [str(CLOUD_RUN_SCRIPT)],
        env={"PATH": os.environ["PATH"], "DRY_RUN": "1", **settings},
        capture_output=True,
        text=True,
        timeout=30,
    )


def cloud_run_deploy_flags(settings: dict[str, str]) -> dict[str, str]:
    """The ``gcloud run deploy`` flags deploy.sh would pass, as {flag: value or ""}."""
    result = cloud_run_dry_run({"PROJECT_ID": "test-project", **settings})
    assert result.returncode == 0, result.stderr
    _build, deploy, _describe = (line.split() for line in result.stdout.splitlines())
    assert deploy[:4] == ["gcloud", "run", "deploy", "authmesh-relay"]
    flags: dict[str, str] = {}
    for word in deploy[4:]:
        if word.startswith("--"):
            assert word not in flags, f"{word} given twice"
            flags[word] = ""
        else:
            flags[next(reversed(flags))] = word
    return flags


def test_cloud_run_recipe() -> None:
    assert os.access(CLOUD_RUN_SCRIPT, os.X_OK)
    subprocess.run(["sh", "-n", str(CLOUD_RUN_SCRIPT)], check=True)
    result = cloud_run_dry_run({"PROJECT_ID": "test-project"})
    assert result.returncode == 0, result.stderr
    build, _deploy, _describe = (line.split() for line in result.stdout.splitlines())
    assert build[:3] == ["gcloud", "builds", "submit"]
    config = yaml.safe_load((REPO / build[build.index("--config") + 1]).read_text("utf-8"))
    (step,) = config["steps"]
    assert step["args"][:3] == ["build", "-f", "Dockerfile.relay"]
    image = build[build.index("--substitutions") + 1].removeprefix("_IMAGE=")
    assert image == "us-central1-docker.pkg.dev/test-project/authmesh/authmesh-relay"

    flags = cloud_run_deploy_flags({})
    assert (
        flags.items()
        >= {
            "--image": image,
            "--port": "3001",
            "--session-affinity": "",
            "--min-instances": "0",
            "--max-instances": "3",
            "--set-env-vars": "AMESH_TRUST_PROXY=1",
        }.items()
    )
    assert not any(flag.startswith(("--vpc", "--network", "--set-secrets")) for flag in flags)


REDIS_ADDRESS = "redis://10.0.0.3:6379/0"


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (
            {"REDIS_URL": REDIS_ADDRESS, "VPC_CONNECTOR": "authmesh"},
            {
                "--vpc-connector": "authmesh",
                "--set-env-vars": f"AMESH_TRUST_PROXY=1,AMESH_REDIS_URL={REDIS_ADDRESS}",
            },
        ),
        (
            {"REDIS_URL_SECRET": "authmesh-redis-url", "NETWORK": "default", "SUBNET": "relays"},
            {
                "--network": "default",
                "--subnet": "relays",
                "--set-env-vars": "AMESH_TRUST_PROXY=1",
                "--set-secrets": "AMESH_REDIS_URL=authmesh-redis-url:latest",
            },
        ),
    ],
    ids=["url-connector", "secret-direct-egress"],
)
def test_cloud_run_recipe_with_redis(settings: dict[str, str], expected: dict[str, str]) -> None:
    """Memorystore through the VPC, several instances without affinity, CPU between requests."""
    flags = cloud_run_deploy_flags(settings)
    assert (
        flags.items()
        >= {
            **expected,
            "--vpc-egress": "private-ranges-only",
            "--max-instances": "3",
            "--no-session-affinity": "",
            "--no-cpu-throttling": "",
        }.items()
    )
    assert "--session-affinity" not in flags


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"REDIS_URL": REDIS_ADDRESS}, "set VPC_CONNECTOR"),
        (
            {"REDIS_URL": REDIS_ADDRESS, "REDIS_URL_SECRET": "s", "VPC_CONNECTOR": "c"},
            "not both",
        ),
    ],
)
def test_cloud_run_recipe_refuses_an_unusable_redis_setup(
    settings: dict[str, str], message: str
) -> None:
    """Refused before anything is built, in one sentence naming the fix."""
    result = cloud_run_dry_run({"PROJECT_ID": "test-project", **settings})
    assert result.returncode == 2
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert message in line


def test_cloud_run_recipe_needs_a_project() -> None:
    result = cloud_run_dry_run({})
    assert result.returncode != 0
    assert "set PROJECT_ID" in result.stderr
