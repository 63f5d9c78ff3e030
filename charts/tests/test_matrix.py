"""For the default values and every case of the matrix: the values pass the chart's schema,
`helm lint --strict` is clean, every rendered object is valid against the strict Kubernetes
schema, and the Deployments carry the replicas and strategy that the values asked for."""

from __future__ import annotations

import helm_python as helm
import pytest

import kubernetes_validate.utils as kv

from chartlib import (
    CHART,
    QUEUE_SCALED,
    SERVICES,
    check_autoscaling,
    deployment,
    kube_validate,
    lint,
    oldest_supported_kube_version,
    render,
    validate_schema,
)
from matrix import MATRIX

CASES = sorted(MATRIX)


def merged(values: dict) -> dict:
    """The values a release would really use: the chart's defaults coalesced with `values`."""
    with helm.Chart.load(CHART) as chart:
        return chart.merge_values(values)


@pytest.mark.parametrize("case", CASES)
def test_values_pass_the_schema(case: str) -> None:
    validate_schema(MATRIX[case])


@pytest.mark.parametrize("case", CASES)
def test_helm_lint_is_clean(case: str) -> None:
    assert lint(MATRIX[case]) == []


@pytest.mark.parametrize("case", CASES)
def test_every_object_is_valid_kubernetes(case: str) -> None:
    objects = render(MATRIX[case])
    assert objects, "nothing rendered"
    failures = []
    for obj in objects:
        try:
            kube_validate(obj)
        except (kv.ValidationError, kv.SchemaNotFoundError, kv.InvalidSchemaError) as err:  # collect all
            where = ".".join(str(p) for p in getattr(err, "path", []))
            failures.append(f"{obj['kind']}/{obj['metadata']['name']} ({obj['__source__']}) at {where}: "
                            f"{getattr(err, 'message', err)}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("case", CASES)
def test_replicas_and_strategy_are_the_values_given(case: str) -> None:
    values = merged(MATRIX[case])
    objects = render(MATRIX[case])
    # Replicas: fixed, or owned by the autoscaler the values ask for (CPU HPA, queue-depth HPA or
    # KEDA ScaledObject), which must aim at the rendered Deployment.
    check_autoscaling(objects, values)
    for svc in SERVICES:
        spec = deployment(objects, svc)["spec"]
        want = values[svc]
        assert spec["strategy"]["type"] == want["strategy"]["type"], svc
        if want["strategy"]["type"] == "RollingUpdate":
            assert spec["strategy"]["rollingUpdate"] == want["strategy"]["rollingUpdate"], svc
        else:
            assert "rollingUpdate" not in spec["strategy"], svc


def test_matrix_covers_what_ci_promises() -> None:
    """The matrix keeps the cases the issues name: replicas, strategies (incl. single node),
    HPA on and off, queue-depth scaling with KEDA (down to zero) and with the HPA, in-chart
    databases on and off, TLS on and off, NetworkPolicy on and off."""
    vals = {case: merged(v) for case, v in MATRIX.items()}
    flags = {
        "hpa": {v["receiver"]["autoscaling"]["enabled"] for v in vals.values()},
        "postgresql": {v["postgresql"]["enabled"] for v in vals.values()},
        "rabbitmq": {v["rabbitmq"]["enabled"] for v in vals.values()},
        "tls": {v["tls"]["enabled"] for v in vals.values()},
        "networkPolicy": {v["networkPolicy"]["enabled"] for v in vals.values()},
    }
    # Queue-depth scaling in both forms: KEDA and the HPA on the External metric.
    flags["keda"] = {bool((v.get("autoscaling") or {}).get("keda")) for v in vals.values()
                     if any(v[s]["autoscaling"]["enabled"] for s in QUEUE_SCALED)}
    assert all(seen == {True, False} for seen in flags.values()), flags
    assert any(v[s]["autoscaling"]["enabled"] and v[s]["autoscaling"]["minReplicas"] == 0
               for v in vals.values() for s in QUEUE_SCALED), "no scale-to-zero case"
    single_node = [v for v in vals.values()
                   if all(v[s]["strategy"].get("rollingUpdate") == {"maxSurge": 0, "maxUnavailable": 1}
                          for s in SERVICES)]
    assert single_node, "no single-node (maxSurge 0, maxUnavailable 1) case"
    assert {v["strategy"]["type"] for c in vals.values() for v in (c[s] for s in SERVICES)} == {
        "RollingUpdate", "Recreate"}


@pytest.mark.parametrize("version", ["oldest", "newest"])
@pytest.mark.parametrize("case", ["defaults", "production", "network-policy", "hpa-on",
                                  "keda-scale-to-zero", "queue-hpa"])
def test_valid_across_the_supported_kubernetes_range(case: str, version: str) -> None:
    """Chart.yaml promises kubeVersion >= X: the objects must be valid on X too, and on the
    newest Kubernetes kubernetes-validate knows."""
    wanted = oldest_supported_kube_version() if version == "oldest" else kv.latest_version() + ".0"
    for obj in render(MATRIX[case]):
        kube_validate(obj, wanted)
