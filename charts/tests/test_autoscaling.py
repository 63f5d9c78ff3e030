"""Autoscaling on the work queue's depth: the processors and recognition scale on the messages
waiting in the queue, through a KEDA ScaledObject (`autoscaling.keda`, down to zero) or an
autoscaling/v2 HPA on the External metric `facewire_queue_depth`; the request-driven services
keep their CPU HPA. Also: the KEDA objects' own strict validation, the values of older releases,
the NetworkPolicy KEDA needs, and the README's prometheus-adapter rule."""

from __future__ import annotations

import copy
import re

import helm_python as helm
import kubernetes_validate.utils as kv
import pytest
import yaml

from chartlib import (
    CHART,
    QUEUE_SCALED,
    check_autoscaling,
    deep_merge,
    deployment,
    env_of,
    find,
    kinds,
    kube_validate,
    render,
    validate_schema,
)
from matrix import EXTERNAL


def merged(values: dict) -> dict:
    with helm.Chart.load(CHART) as chart:
        return chart.merge_values(values)


def queue_scaled(keda: bool, min_replicas: int = 1, **extra: dict) -> dict:
    """Processors and recognition scaling on the queue, in one of the two forms."""
    values = {"autoscaling": {"keda": keda},
              **{svc: {"autoscaling": {"enabled": True, "minReplicas": min_replicas, "maxReplicas": 9}}
                 for svc in QUEUE_SCALED}}
    return deep_merge(values, extra)


def rendered_and_checked(values: dict) -> list[dict]:
    objects = render(values)
    check_autoscaling(objects, merged(values))
    for obj in objects:
        kube_validate(obj)
    return objects


# --- the two forms ------------------------------------------------------------------------


def test_keda_form_scales_processors_and_recognition_to_zero_on_the_queue() -> None:
    objects = rendered_and_checked(queue_scaled(keda=True, min_replicas=0))
    processor = find(objects, "ScaledObject", "demo-facewire-processor")["spec"]
    recognition = find(objects, "ScaledObject", "demo-facewire-recognition")["spec"]
    assert processor["minReplicaCount"] == recognition["minReplicaCount"] == 0
    # The chart's per-replica targets: recognition, which does the CPU-heavy part, gets more
    # replicas for the same backlog than the processors that drive it.
    assert processor["triggers"][0]["metadata"]["value"] == "20"
    assert recognition["triggers"][0]["metadata"]["value"] == "10"
    assert processor["pollingInterval"] == 15 and processor["cooldownPeriod"] == 300
    # Both watch the queue the processors consume, through the same broker credentials.
    assert (processor["triggers"][0]["metadata"]["queueName"]
            == recognition["triggers"][0]["metadata"]["queueName"]
            == env_of(objects, "processor")["FACEWIRE_QUEUE"] == "facewire.images")
    assert processor["triggers"][0]["authenticationRef"] == recognition["triggers"][0]["authenticationRef"]
    assert kinds(objects, "HorizontalPodAutoscaler") == []


def test_hpa_form_scales_on_the_external_queue_depth_metric() -> None:
    objects = rendered_and_checked(queue_scaled(keda=False))
    for svc in QUEUE_SCALED:
        metric = find(objects, "HorizontalPodAutoscaler", f"demo-facewire-{svc}")["spec"]["metrics"][0]
        # Both follow the processors' gauge: recognition's load is what the processors send it.
        assert metric["external"]["metric"]["selector"] == {
            "matchLabels": {"service": "demo-facewire-processor"}}
    assert kinds(objects, "ScaledObject") == [] and kinds(objects, "TriggerAuthentication") == []
    # The series can be selected otherwise (e.g. pod-annotation scraping has no `service` label).
    custom = queue_scaled(keda=False, autoscaling={"metricSelector": {"job": "facewire-processor"}})
    hpa = find(rendered_and_checked(custom), "HorizontalPodAutoscaler", "demo-facewire-recognition")
    assert hpa["spec"]["metrics"][0]["external"]["metric"]["selector"] == {
        "matchLabels": {"job": "facewire-processor"}}


def test_the_processor_service_carries_the_default_metric_selector_name() -> None:
    """The default selector is `service: <fullname>-processor`: the name of the Service whose
    /metrics a ServiceMonitor scrapes, so that label must be the processor Service's name."""
    svc = find(render(), "Service", "demo-facewire-processor")
    assert {p["name"]: p["port"] for p in svc["spec"]["ports"]}["http"] == 8080


@pytest.mark.parametrize("keda", [False, True], ids=["hpa", "keda"])
def test_request_driven_services_keep_the_cpu_hpa(keda: bool) -> None:
    cpu = {"enabled": True, "minReplicas": 2, "maxReplicas": 5, "targetCPUUtilizationPercentage": 65}
    values = queue_scaled(keda=keda, receiver={"autoscaling": cpu}, frontend={"autoscaling": cpu},
                          reconciler={"autoscaling": cpu})
    objects = rendered_and_checked(values)
    for svc in ("receiver", "frontend", "reconciler"):
        hpa = find(objects, "HorizontalPodAutoscaler", f"demo-facewire-{svc}")
        assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu", svc


def test_only_the_enabled_service_gets_an_autoscaler() -> None:
    values = {"autoscaling": {"keda": True},
              "recognition": {"autoscaling": {"enabled": True, "minReplicas": 0, "maxReplicas": 3}}}
    objects = rendered_and_checked(values)
    assert [s["metadata"]["name"] for s in kinds(objects, "ScaledObject")] == ["demo-facewire-recognition"]
    assert deployment(objects, "processor")["spec"]["replicas"] == 2
    assert "replicas" not in deployment(objects, "recognition")["spec"]
    # KEDA on but nothing scaled by it: no TriggerAuthentication.
    assert kinds(render({"autoscaling": {"keda": True}}), "TriggerAuthentication") == []


# --- the queue and the broker credentials ---------------------------------------------------


@pytest.mark.parametrize("values,queue", [
    ({}, "facewire.images"),
    ({"config": {"queueName": "fw.work"}}, "fw.work"),
    # The older way to set it: extraEnv's FACEWIRE_QUEUE wins, and is written once.
    ({"config": {"queueName": "fw.work", "extraEnv": {"FACEWIRE_QUEUE": "fw.legacy"}}}, "fw.legacy"),
])
def test_the_trigger_watches_the_queue_the_services_use(values: dict, queue: str) -> None:
    objects = rendered_and_checked(deep_merge(queue_scaled(keda=True), values))
    for svc in ("receiver", "processor", "reconciler"):
        assert env_of(objects, svc)["FACEWIRE_QUEUE"] == queue, svc
    for so in kinds(objects, "ScaledObject"):
        assert so["spec"]["triggers"][0]["metadata"]["queueName"] == queue


@pytest.mark.parametrize("backend", ["in-chart", "external", "existing-secret"])
def test_keda_reads_the_broker_url_from_the_services_secret_and_nowhere_else(backend: str) -> None:
    values = queue_scaled(keda=True, rabbitmq={"auth": {"password": "mq-Pa55"}})
    if backend == "external":
        values = deep_merge(values, EXTERNAL)
    elif backend == "existing-secret":
        values = deep_merge(values, {"postgresql": {"enabled": False}, "rabbitmq": {"enabled": False},
                                     "existingSecret": "creds"})
    objects = rendered_and_checked(values)
    auth = find(objects, "TriggerAuthentication", "demo-facewire-amqp")["spec"]["secretTargetRef"]
    assert auth == [{"parameter": "host", "name": "creds" if backend == "existing-secret" else "demo-facewire",
                     "key": "FACEWIRE_AMQP_URL"}]
    # No URL, user or password in any KEDA object.
    keda_text = yaml.safe_dump([o for o in objects if o["apiVersion"].startswith("keda.sh/")])
    for needle in ("amqp://", "amqps://", "mq-Pa55", "secret@", "host:"):
        assert needle not in keda_text, needle
    if backend == "in-chart":
        # KEDA's operator runs in another namespace: the in-chart broker's name must resolve there.
        url = find(objects, "Secret", "demo-facewire")["stringData"]["FACEWIRE_AMQP_URL"]
        assert "@demo-facewire-rabbitmq.facewire.svc:5672/" in url


# --- what the values may say ------------------------------------------------------------------


@pytest.mark.parametrize("svc", QUEUE_SCALED)
def test_scale_to_zero_needs_keda(svc: str) -> None:
    values = {svc: {"autoscaling": {"enabled": True, "minReplicas": 0, "maxReplicas": 4}}}
    with pytest.raises(helm.HelmRenderError, match=rf"{svc}.autoscaling.minReplicas is 0, which needs "
                                                   r"autoscaling.keda=true.*HPAScaleToZero"):
        render(values)
    rendered_and_checked(deep_merge(values, {"autoscaling": {"keda": True}}))
    # Not enabled: minReplicas 0 is not used, so it is no error.
    render({svc: {"autoscaling": {"enabled": False, "minReplicas": 0, "maxReplicas": 4}}})


@pytest.mark.parametrize("svc", QUEUE_SCALED)
def test_queue_length_is_required_once_queue_scaling_is_on(svc: str) -> None:
    values = {svc: {"autoscaling": {"enabled": True, "queueLength": None}}}
    with pytest.raises(helm.HelmRenderError, match=rf"{svc}.autoscaling.queueLength is required"):
        render(values)
    render({svc: {"autoscaling": {"enabled": False, "queueLength": None}}})


@pytest.mark.parametrize(
    "bad",
    [
        {"autoscaling": {"keda": "yes"}},
        {"autoscaling": {"keda": True, "pollingInterval": 0}},
        {"autoscaling": {"keda": True, "cooldownPeriod": "5m"}},
        {"autoscaling": {"metricSelector": {"service": 1}}},
        {"processor": {"autoscaling": {"queueLength": 0}}},
        {"recognition": {"autoscaling": {"queueLength": "10"}}},
        {"processor": {"autoscaling": {"minReplicas": -1}}},
        # The CPU-scaled services cannot go to zero at all.
        {"receiver": {"autoscaling": {"minReplicas": 0}}},
        {"config": {"queueName": ""}},
    ],
    ids=lambda v: repr(v),
)
def test_schema_rejects_wrong_autoscaling_values(bad: dict) -> None:
    with pytest.raises(helm.HelmValuesError):
        validate_schema(bad)


@pytest.mark.parametrize(
    "bad",
    [
        {"autoscaling": {"kedaa": True}},
        {"autoscaling": {"enabled": True}},  # the per-service key at the top level
        {"recognition": {"autoscaling": {"queueLenght": 5}}},
        {"receiver": {"autoscaling": {"queueLength": 5}}},  # request driven: CPU only
        {"frontend": {"autoscaling": {"queueLength": 5}}},
    ],
    ids=lambda v: repr(v),
)
def test_schema_rejects_unknown_autoscaling_keys(bad: dict) -> None:
    with pytest.raises(helm.HelmValuesError, match="additional properties"):
        validate_schema(bad)


def test_values_of_older_releases_still_validate_and_render() -> None:
    """`helm upgrade --reuse-values` keeps an older release's values and drops this chart's new
    defaults: no top-level `autoscaling`, no `config.queueName`, no `queueLength` or
    `networkPolicy.kedaFrom`, and processors and recognition still carrying
    `targetCPUUtilizationPercentage`. (A null deletes a default, as in a values file.)"""
    old = {
        "autoscaling": None,
        "config": {"queueName": None},
        "networkPolicy": {"enabled": True, "kedaFrom": None},
        **{svc: {"autoscaling": {"queueLength": None, "targetCPUUtilizationPercentage": 75}}
           for svc in QUEUE_SCALED},
    }
    validate_schema(old)
    objects = render(old)
    assert env_of(objects, "processor")["FACEWIRE_QUEUE"] == "facewire.images"
    assert kinds(objects, "HorizontalPodAutoscaler") == [] == kinds(objects, "ScaledObject")
    # A release that had CPU autoscaling on the processors is told what changed.
    with pytest.raises(helm.HelmRenderError, match="processor.autoscaling.queueLength is required"):
        render(deep_merge(old, {"processor": {"autoscaling": {"enabled": True}}}))
    upgraded = deep_merge(old, {"processor": {"autoscaling": {"enabled": True, "queueLength": 30}}})
    hpa = find(rendered_and_checked(upgraded), "HorizontalPodAutoscaler", "demo-facewire-processor")
    assert hpa["spec"]["metrics"][0]["external"]["target"]["averageValue"] == "30"


# --- NetworkPolicy and PodDisruptionBudget --------------------------------------------------


def _rabbitmq_ingress(objects: list[dict]) -> list[dict]:
    return find(objects, "NetworkPolicy", "demo-facewire-rabbitmq")["spec"]["ingress"]


def test_network_policy_lets_the_keda_operator_reach_the_in_chart_broker() -> None:
    policy = {"networkPolicy": {"enabled": True}}
    keda_rules = [r for r in _rabbitmq_ingress(rendered_and_checked(queue_scaled(keda=True, **policy)))
                  if r["from"][0].get("namespaceSelector")]
    assert keda_rules == [{
        "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}},
                  "podSelector": {"matchLabels": {"app.kubernetes.io/name": "keda-operator"}}}],
        "ports": [{"port": 5672, "protocol": "TCP"}],
    }]
    # Without KEDA only facewire's pods reach the broker.
    assert len(_rabbitmq_ingress(render(queue_scaled(keda=False, **policy)))) == 1
    # [] says KEDA reaches the broker some other way; a missing key is refused.
    assert len(_rabbitmq_ingress(render(queue_scaled(keda=True, networkPolicy={
        "enabled": True, "kedaFrom": []})))) == 1
    with pytest.raises(helm.HelmRenderError, match="networkPolicy.kedaFrom must list the KEDA operator"):
        render(queue_scaled(keda=True, networkPolicy={"enabled": True, "kedaFrom": None}))


@pytest.mark.parametrize("pdb", [{"enabled": True, "maxUnavailable": 1},
                                 {"enabled": True, "minAvailable": 1}], ids=["maxUnavailable", "minAvailable"])
def test_pod_disruption_budgets_stay_valid_when_scaled_to_zero(pdb: dict) -> None:
    """A PDB only limits evictions: with no pod left it allows nothing and blocks nothing, and it
    does not stop KEDA from scaling to zero (scaling is not an eviction)."""
    values = queue_scaled(keda=True, min_replicas=0,
                          **{svc: {"podDisruptionBudget": pdb} for svc in QUEUE_SCALED})
    objects = rendered_and_checked(values)
    for svc in QUEUE_SCALED:
        spec = find(objects, "PodDisruptionBudget", f"demo-facewire-{svc}")["spec"]
        assert {k: v for k, v in spec.items() if k != "selector"} == {k: v for k, v in pdb.items()
                                                                     if k != "enabled"}


# --- the KEDA objects are validated, strictly, and only they skip the Kubernetes schemas ------


def test_keda_objects_get_a_strict_schema_of_their_own() -> None:
    objects = render(queue_scaled(keda=True))
    scaled = copy.deepcopy(find(objects, "ScaledObject", "demo-facewire-processor"))
    auth = copy.deepcopy(find(objects, "TriggerAuthentication", "demo-facewire-amqp"))
    kube_validate(scaled)
    kube_validate(auth)

    def broken(obj: dict, path: str, value) -> dict:
        out = copy.deepcopy(obj)
        *parents, last = path.split(".")
        node = out
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[last] = value
        return out

    for obj, path, value in [
        (scaled, "spec.minReplicas", 0),  # the HPA's name for it, not KEDA's
        (scaled, "spec.minReplicaCount", "0"),
        (scaled, "spec.triggers", []),
        (scaled, "spec.scaleTargetRef.namespace", "x"),
        (scaled, "spec.triggers.0.metadata.value", 20),  # KEDA wants strings
        (scaled, "spec.triggers.0.authenticationRef.kind", "Secret"),
        (scaled, "metadata.lables", {}),  # metadata is checked as Kubernetes ObjectMeta
        (auth, "spec.secretTargetRef.0.secret", "x"),
        (auth, "spec.secretRef", []),
    ]:
        with pytest.raises(kv.ValidationError):
            kube_validate(broken(obj, path, value))
    # A misspelt kind or version is not a known CRD: it goes to the Kubernetes schemas and fails.
    for api_version, kind in [("keda.sh/v1alpha1", "ScaledObjects"), ("keda.sh/v1", "ScaledObject"),
                              ("keda.sh/v1alpha1", "ScaledJob")]:
        with pytest.raises(kv.SchemaNotFoundError):
            kube_validate({**scaled, "apiVersion": api_version, "kind": kind})


# --- the README ---------------------------------------------------------------------------


def _readme() -> str:
    return (CHART / "README.md").read_text()


def test_readme_shows_a_prometheus_adapter_rule_for_the_chart_metric() -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", _readme(), flags=re.S)
    rules = [yaml.safe_load(b) for b in blocks if "facewire_queue_depth" in b and "seriesQuery" in b]
    assert len(rules) == 1, "README must show one prometheus-adapter rule for facewire_queue_depth"
    external = rules[0]["rules"]["external"]
    assert len(external) == 1
    rule = external[0]
    assert "facewire_queue_depth" in rule["seriesQuery"]
    assert rule["name"]["as"] == "facewire_queue_depth"
    # Every processor reports the whole queue: summing would multiply it by the replicas.
    assert rule["metricsQuery"].lstrip().startswith("max(")
    assert "<<.LabelMatchers>>" in rule["metricsQuery"]
    assert rule["resources"]["overrides"]["namespace"] == {"resource": "namespace"}
    # The HPA's default selector label survives the aggregation.
    assert re.search(r"by \(([^)]*\bservice\b[^)]*)\)", rule["metricsQuery"])


def test_readme_explains_scale_to_zero_and_the_drain() -> None:
    text = _readme()
    for phrase in ("autoscaling.keda", "minReplicas: 0", "HPAScaleToZero", "SIGTERM",
                   "terminationGracePeriodSeconds", "redeliver", "TriggerAuthentication",
                   "processor.autoscaling.queueLength", "recognition.autoscaling.queueLength"):
        assert phrase in text, phrase
