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

CHART = Path(__file__).resolve().parent.parent / "facewire"
# The Kubernetes version whose schemas the rendered objects must satisfy.
KUBE_VERSION = os.environ.get("FACEWIRE_KUBE_VERSION", "1.35.0")
RELEASE = "demo"
NAMESPACE = "facewire"
SERVICES = ("receiver", "processor", "recognition", "frontend", "reconciler")
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
    error too (a typo in apiVersion or kind must not pass as 'unknown, skipped')."""
    data = {k: v for k, v in obj.items() if k != "__source__"}
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
