"""Render, lint and validate the facewire chart with Helm's own library (helm-python-sdk binds
libhelm_c, a C ABI over Helm's Go SDK), and check every rendered object against the Kubernetes
JSON schemas of kubernetes-validate in strict mode (unknown fields are errors)."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import yaml

import crds

CHART = Path(__file__).resolve().parent.parent / "facewire"
# The Kubernetes version whose schemas the rendered objects must satisfy.
KUBE_VERSION = os.environ.get("FACEWIRE_KUBE_VERSION", "1.35.0")
RELEASE = "demo"
NAMESPACE = "facewire"
SERVICES = ("receiver", "processor", "recognition", "frontend", "reconciler")
# Services that scale on the work queue's depth (KEDA or an HPA on an External metric), not CPU.
QUEUE_SCALED = ("processor", "recognition")
GRPC_SERVICES = ("receiver", "processor", "recognition")
# Services with an HTTP port only; the reconciler has no /readyz, so its readiness is /healthz.
HTTP_SERVICES = ("frontend", "reconciler")
READINESS_PATH = {"frontend": "/readyz", "reconciler": "/healthz"}


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses duplicate mapping keys: PyYAML keeps the last one silently,
    while the API server rejects or warns, so a template that emits a key twice is a bug."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def deep_merge(base: dict, override: dict) -> dict:
    """`override` merged into a copy of `base`, recursively (what `-f` files do)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def render_manifests(values: dict[str, Any] | None = None, **opts: Any) -> dict[str, str]:
    """The rendered templates, by path, as `helm template` would produce them."""
    opts.setdefault("name", RELEASE)
    opts.setdefault("namespace", NAMESPACE)
    opts.setdefault("is_install", True)
    with helm.Chart.load(CHART) as chart:
        return chart.render(values or {}, **opts)


def render(values: dict[str, Any] | None = None, **opts: Any) -> list[dict[str, Any]]:
    """Every rendered Kubernetes object (hooks and test pods included), NOTES.txt left out."""
    objects: list[dict[str, Any]] = []
    for path, text in sorted(render_manifests(values, **opts).items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.load_all(text, Loader=_UniqueKeyLoader):
            if doc:
                doc.setdefault("__source__", path)
                objects.append(doc)
    return objects


def notes(values: dict[str, Any] | None = None) -> str:
    return render_manifests(values)["facewire/templates/NOTES.txt"]


def validate_schema(values: dict[str, Any]) -> None:
    """Raises helm_python.HelmValuesError when values.schema.json rejects `values`."""
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(values)


def lint(values: dict[str, Any] | None = None) -> list[str]:
    """`helm lint --strict` findings of warning or error severity, as strings."""
    report = helm.lint(CHART, values or {}, strict=True, kube_version=f"v{KUBE_VERSION}")
    problems = [
        f"{m['path']}: {m['error'].strip()}" for m in report.get("messages", []) if m["severity"] >= 2
    ]
    problems += [e.strip() for e in report.get("errors", []) if e.strip() not in " ".join(problems)]
    return problems


def kube_validate(obj: dict[str, Any], version: str = KUBE_VERSION) -> None:
    """Validates one object against the strict Kubernetes schema; a kind without a schema is an
    error too (a typo in apiVersion or kind must not pass as 'unknown, skipped'). The KEDA kinds
    the chart renders (crds.SCHEMAS, exact apiVersion and kind) are checked against their own
    strict schemas instead."""
    data = {k: v for k, v in obj.items() if k != "__source__"}
    if crds.known(data):
        crds.validate(data, version)
        return
    kubernetes_validate.validate(data, version, strict=True)


def oldest_supported_kube_version() -> str:
    """The lowest Kubernetes version Chart.yaml's kubeVersion admits, e.g. '1.27.0'."""
    with helm.Chart.load(CHART) as chart:
        constraint = chart.metadata["kubeVersion"]
    import re

    match = re.fullmatch(r">=\s*(\d+\.\d+\.\d+)(-0)?", constraint.strip())
    assert match, f"unexpected kubeVersion constraint {constraint!r}"
    return match.group(1)


def find(objects: list[dict], kind: str, name: str) -> dict:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def kinds(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def deployment(objects: list[dict], component: str) -> dict:
    return find(objects, "Deployment", f"{RELEASE}-facewire-{component}")


def container(dep: dict) -> dict:
    containers = dep["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env_of(objects: list[dict], component: str) -> dict[str, str]:
    """The environment a service's container gets: ConfigMap and Secret (envFrom) and env."""
    ctr = container(deployment(objects, component))
    env: dict[str, Any] = {}
    for source in ctr.get("envFrom", []):
        if "configMapRef" in source:
            env.update(find(objects, "ConfigMap", source["configMapRef"]["name"])["data"])
        if "secretRef" in source:
            secret = [o for o in kinds(objects, "Secret") if o["metadata"]["name"] == source["secretRef"]["name"]]
            if secret:
                env.update(secret[0].get("stringData", {}))
    for item in ctr.get("env", []):
        env[item["name"]] = item.get("value", item.get("valueFrom"))
    return env


def check_autoscaling(objects: list[dict], values: dict) -> None:
    """The autoscalers are the ones `values` (the chart's defaults coalesced with the release's
    values) ask for, wired to what was rendered. Per service with autoscaling on: no fixed
    `replicas` on its Deployment (the autoscaler owns the count) and exactly one autoscaler
    aiming at it. The processors and recognition scale on the work queue's depth: with
    `autoscaling.keda` a KEDA ScaledObject whose rabbitmq trigger watches the queue the
    processors consume (FACEWIRE_QUEUE), authenticated by a rendered TriggerAuthentication
    that reads FACEWIRE_AMQP_URL from the very Secret the processors read; otherwise an HPA on
    the External metric facewire_queue_depth. The others scale on CPU."""
    scaling = values.get("autoscaling") or {}
    keda = scaling.get("keda", False)
    hpas = kinds(objects, "HorizontalPodAutoscaler")
    scaled_objects = kinds(objects, "ScaledObject")
    expected_hpas = expected_scaled_objects = 0
    for svc in SERVICES:
        want = values[svc]["autoscaling"]
        dep = deployment(objects, svc)
        name = dep["metadata"]["name"]
        target = {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        mine_hpa = [h for h in hpas if h["spec"]["scaleTargetRef"]["name"] == name]
        mine_so = [s for s in scaled_objects if s["spec"]["scaleTargetRef"]["name"] == name]
        if not want["enabled"]:
            assert not mine_hpa and not mine_so, f"{svc}: autoscaler rendered while autoscaling is off"
            assert dep["spec"]["replicas"] == values[svc]["replicaCount"], svc
            continue
        # A fixed count would fight the autoscaler on every upgrade.
        assert "replicas" not in dep["spec"], svc
        if svc in QUEUE_SCALED and keda:
            expected_scaled_objects += 1
            # KEDA makes its own HPA from the ScaledObject: a second one would fight it.
            assert not mine_hpa, f"{svc}: an HPA besides the ScaledObject"
            assert len(mine_so) == 1, svc
            spec = mine_so[0]["spec"]
            assert spec["scaleTargetRef"] == target, svc
            assert spec["minReplicaCount"] == want["minReplicas"], svc
            assert spec["maxReplicaCount"] == want["maxReplicas"], svc
            for key in ("pollingInterval", "cooldownPeriod"):
                assert spec.get(key) == scaling.get(key), f"{svc}: {key}"
            assert len(spec["triggers"]) == 1, svc
            trigger = spec["triggers"][0]
            assert trigger["type"] == "rabbitmq", svc
            # Exactly these keys: in particular no `host`, which would hold the credentials.
            assert trigger["metadata"] == {
                "protocol": "amqp",
                "queueName": env_of(objects, "processor")["FACEWIRE_QUEUE"],
                "mode": "QueueLength",
                "value": str(want["queueLength"]),
            }, svc
            ref = trigger["authenticationRef"]
            assert ref.get("kind", "TriggerAuthentication") == "TriggerAuthentication", svc
            auth = find(objects, "TriggerAuthentication", ref["name"])["spec"]
            secret_name = next(s["secretRef"]["name"] for s in container(dep)["envFrom"] if "secretRef" in s)
            assert auth == {"secretTargetRef": [{"parameter": "host", "name": secret_name,
                                                 "key": "FACEWIRE_AMQP_URL"}]}, svc
            rendered = [s for s in kinds(objects, "Secret") if s["metadata"]["name"] == secret_name]
            # The chart's own Secret, or existingSecret (which the chart does not render).
            assert bool(rendered) == (not values.get("existingSecret")), svc
            if rendered:
                assert rendered[0]["stringData"]["FACEWIRE_AMQP_URL"].startswith(("amqp://", "amqps://"))
        elif svc in QUEUE_SCALED:
            expected_hpas += 1
            assert not mine_so, svc
            assert len(mine_hpa) == 1, svc
            hpa = mine_hpa[0]
            assert hpa["apiVersion"] == "autoscaling/v2", svc
            assert hpa["spec"]["scaleTargetRef"] == target, svc
            assert hpa["spec"]["minReplicas"] == want["minReplicas"] >= 1, svc
            assert hpa["spec"]["maxReplicas"] == want["maxReplicas"], svc
            selector = scaling.get("metricSelector") or {"service": f"{RELEASE}-facewire-processor"}
            assert hpa["spec"]["metrics"] == [{
                "type": "External",
                "external": {
                    "metric": {"name": "facewire_queue_depth", "selector": {"matchLabels": selector}},
                    "target": {"type": "AverageValue", "averageValue": str(want["queueLength"])},
                },
            }], svc
        else:
            expected_hpas += 1
            assert not mine_so, svc
            assert len(mine_hpa) == 1, svc
            spec = mine_hpa[0]["spec"]
            assert spec["scaleTargetRef"] == target, svc
            assert (spec["minReplicas"], spec["maxReplicas"]) == (want["minReplicas"], want["maxReplicas"]), svc
            assert spec["metrics"] == [{"type": "Resource", "resource": {"name": "cpu", "target": {
                "type": "Utilization", "averageUtilization": want["targetCPUUtilizationPercentage"]}}}], svc
    assert len(hpas) == expected_hpas, "stray HorizontalPodAutoscalers"
    assert len(scaled_objects) == expected_scaled_objects, "stray ScaledObjects"
    # The TriggerAuthentication exists exactly when a ScaledObject needs it.
    assert len(kinds(objects, "TriggerAuthentication")) == (1 if expected_scaled_objects else 0)
