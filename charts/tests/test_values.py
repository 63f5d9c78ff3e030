"""What the chart promises, one behaviour per test: schema strictness, rolling on config
change, drain timing, probes, the headless recognition Service, hooks, security, TLS, auth,
NetworkPolicies, the `helm test` pod and NOTES."""

from __future__ import annotations

import copy

import helm_python as helm
import kubernetes_validate.utils as kv
import pytest

from chartlib import (
    GRPC_SERVICES,
    HTTP_SERVICES,
    READINESS_PATH,
    SERVICES,
    container,
    deployment,
    env_of,
    find,
    kinds,
    kube_validate,
    notes,
    render,
    validate_schema,
)
from matrix import EXTERNAL, each

# --- values.schema.json --------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        {"receiver": {"replicaCount": "3"}},
        {"receiver": {"replicaCount": -1}},
        {"processor": {"strategy": {"type": "BlueGreen"}}},
        {"recognition": {"strategy": {"rollingUpdate": {"maxSurge": "lots", "maxUnavailable": 0}}}},
        {"frontend": {"strategy": {"rollingUpdate": {"maxSurge": True, "maxUnavailable": 0}}}},
        {"receiver": {"autoscaling": {"enabled": "yes"}}},
        {"config": {"drainSeconds": "20s"}},
        {"config": {"logFormat": "xml"}},
        {"tls": {"enabled": 1}},
        {"database": {"url": "mysql://db/facewire"}},
        {"receiver": {"service": {"grpcPort": 70000}}},
        {"reconciler": {"replicaCount": "1"}},
        {"config": {"reconcileAfterSeconds": "60s"}},
        {"config": {"reconcileIntervalSeconds": 0}},
    ],
    ids=lambda v: repr(v),
)
def test_schema_rejects_wrong_types(bad: dict) -> None:
    with pytest.raises(helm.HelmValuesError):
        validate_schema(bad)


@pytest.mark.parametrize(
    "bad",
    [
        {"replicaCount": 3},  # the tutorial's top-level key, which this chart does not have
        {"receiver": {"replicas": 3}},
        {"receiver": {"strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0, "maxSurg": 2}}}},
        {"processor": {"autoscaling": {"enabled": False, "minReplicas": 1, "maxReplicas": 2,
                                       "targetCPUUtilizationPercentage": 50, "targetMemory": 80}}},
        {"postgresql": {"auth": {"pasword": "x"}}},
        {"networkPolicy": {"enable": True}},
        {"tls": {"secret": "x"}},
        {"reconciler": {"replicas": 1}},
        {"reconciler": {"deadlineSeconds": 60}},
    ],
    ids=lambda v: repr(v),
)
def test_schema_rejects_unknown_keys(bad: dict) -> None:
    with pytest.raises(helm.HelmValuesError, match="additional properties"):
        validate_schema(bad)


def test_render_refuses_values_the_schema_rejects() -> None:
    """`helm install` itself validates, not only the CI check."""
    with pytest.raises(helm.HelmError):
        render({"receiver": {"replicas": 3}})


# --- checks the schema cannot express ------------------------------------------------------


@pytest.mark.parametrize("surge,unavailable", [(0, 0), ("0%", 0), (0, "0%")])
def test_a_strategy_that_cannot_progress_is_refused(surge, unavailable) -> None:
    values = {"receiver": {"strategy": {"type": "RollingUpdate",
                                        "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}}}}
    with pytest.raises(helm.HelmRenderError, match="cannot both be 0"):
        render(values)


def test_hpa_min_above_max_is_refused() -> None:
    with pytest.raises(helm.HelmRenderError, match="exceeds maxReplicas"):
        render({"processor": {"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2,
                                              "targetCPUUtilizationPercentage": 50}}})


def test_external_database_needs_a_url() -> None:
    with pytest.raises(helm.HelmRenderError, match="database.url is required"):
        render({"postgresql": {"enabled": False}})
    with pytest.raises(helm.HelmRenderError, match="broker.url is required"):
        render({"rabbitmq": {"enabled": False}})


def test_tls_needs_a_secret_and_auth_needs_a_token() -> None:
    with pytest.raises(helm.HelmRenderError, match="tls.secretName"):
        render({"tls": {"enabled": True}})
    with pytest.raises(helm.HelmRenderError, match="auth.enabled needs"):
        render({"auth": {"enabled": True}})


# --- the strict Kubernetes validation really is strict ---------------------------------------


def test_strict_kubernetes_validation_rejects_unknown_fields_and_kinds() -> None:
    dep = copy.deepcopy(deployment(render(), "receiver"))
    kube_validate(dep)
    dep["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpcc"] = {}
    with pytest.raises(kv.ValidationError):
        kube_validate(dep)
    bad_kind = {"apiVersion": "apps/v1", "kind": "Deploymint", "metadata": {"name": "x"}}
    with pytest.raises(kv.SchemaNotFoundError):
        kube_validate(bad_kind)


def test_replicas_rendered_from_a_set_override() -> None:
    """What `helm upgrade --set receiver.replicaCount=7,receiver.strategy.rollingUpdate.maxSurge=3` does."""
    values = helm.parse_set_string("receiver.replicaCount=7,receiver.strategy.rollingUpdate.maxSurge=3")
    spec = deployment(render(values), "receiver")["spec"]
    assert spec["replicas"] == 7
    assert spec["strategy"]["rollingUpdate"] == {"maxSurge": 3, "maxUnavailable": 0}


# --- configuration rolls the pods ---------------------------------------------------------


def checksums(values: dict) -> dict[str, dict[str, str]]:
    # Fixed passwords: generated ones would differ on every offline render.
    fixed = {"postgresql": {"auth": {"password": "pg"}}, "rabbitmq": {"auth": {"password": "mq"}}}
    objects = render(_merge(fixed, values))
    return {svc: {k: v for k, v in deployment(objects, svc)["spec"]["template"]["metadata"]["annotations"].items()
                  if k.startswith("checksum/")} for svc in SERVICES}


def _merge(a: dict, b: dict) -> dict:
    from chartlib import deep_merge

    return deep_merge(a, b)


def test_checksum_annotations_change_with_config_and_secret_only() -> None:
    base = checksums({})
    assert all(set(c) == {"checksum/config", "checksum/secret"} for c in base.values())
    assert base == checksums({}), "checksums must be deterministic"

    config_changed = checksums({"config": {"drainSeconds": 30}})
    for svc in SERVICES:
        assert config_changed[svc]["checksum/config"] != base[svc]["checksum/config"], svc
        assert config_changed[svc]["checksum/secret"] == base[svc]["checksum/secret"], svc

    secret_changed = checksums({"postgresql": {"auth": {"password": "other"}}})
    for svc in SERVICES:
        assert secret_changed[svc]["checksum/secret"] != base[svc]["checksum/secret"], svc
        assert secret_changed[svc]["checksum/config"] == base[svc]["checksum/config"], svc

    # Scaling is not a configuration change: it must not restart every pod.
    assert checksums({"receiver": {"replicaCount": 9}}) == base


def test_generated_passwords_are_consistent_within_a_release() -> None:
    objects = render()
    secret = find(objects, "Secret", "demo-facewire")["stringData"]
    pg, mq = secret["postgres-password"], secret["rabbitmq-password"]
    assert len(pg) == 32 and len(mq) == 32 and pg != mq
    assert f":{pg}@demo-facewire-postgresql:5432/" in secret["FACEWIRE_DATABASE_URL"]
    # Namespace-qualified: the KEDA operator, in its own namespace, dials the same URL.
    assert f":{mq}@demo-facewire-rabbitmq.facewire.svc:5672/" in secret["FACEWIRE_AMQP_URL"]
    hook = find(objects, "Secret", "demo-facewire-migrate")["stringData"]
    assert hook["FACEWIRE_DATABASE_URL"] == secret["FACEWIRE_DATABASE_URL"]


# --- drain timing and probes --------------------------------------------------------------


@pytest.mark.parametrize("drain,sleep", [(20, 5), (60, 0), (0, 15)])
def test_grace_period_covers_prestop_and_drain(drain: int, sleep: int) -> None:
    objects = render({"config": {"drainSeconds": drain, "preStopSleepSeconds": sleep}})
    for svc in SERVICES:
        dep = deployment(objects, svc)
        pod = dep["spec"]["template"]["spec"]
        assert pod["terminationGracePeriodSeconds"] > drain + sleep, svc
        assert container(dep)["lifecycle"]["preStop"]["exec"]["command"] == ["/bin/sleep", str(sleep)]
        assert env_of(objects, svc)["FACEWIRE_DRAIN_SECONDS"] == str(drain)


def test_an_explicit_grace_period_too_short_to_drain_is_refused() -> None:
    with pytest.raises(helm.HelmRenderError, match="must exceed"):
        render({"receiver": {"terminationGracePeriodSeconds": 25}})  # 20 + 5 is not enough
    pod = deployment(render({"receiver": {"terminationGracePeriodSeconds": 90}}), "receiver")
    assert pod["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 90


def test_grpc_services_get_native_grpc_readiness_and_http_only_services_http() -> None:
    objects = render()
    for svc in GRPC_SERVICES:
        ctr = container(deployment(objects, svc))
        assert ctr["readinessProbe"]["grpc"]["port"] == 50051, svc
        assert {p["name"]: p["containerPort"] for p in ctr["ports"]} == {"grpc": 50051, "http": 8080}
    assert container(deployment(objects, "receiver"))["readinessProbe"]["grpc"]["service"] == "facewire.v1.ImageService"
    assert container(deployment(objects, "recognition"))["readinessProbe"]["grpc"]["service"] == "facewire.v1.RecognitionService"
    for svc in HTTP_SERVICES:
        ctr = container(deployment(objects, svc))
        assert ctr["readinessProbe"]["httpGet"] == {"path": READINESS_PATH[svc], "port": "http",
                                                    "scheme": "HTTP"}, svc
        assert [p["name"] for p in ctr["ports"]] == ["http"], svc
    # The reconciler's operations port has no /readyz (facewire_server::ops_routes(None)).
    assert container(deployment(objects, "reconciler"))["readinessProbe"]["httpGet"]["path"] == "/healthz"


@pytest.mark.parametrize("tls", [False, True], ids=["plaintext", "tls"])
def test_liveness_is_the_http_healthz_which_a_drain_does_not_fail(tls: bool) -> None:
    """On SIGTERM every gRPC health status, the overall "" included, turns NOT_SERVING for the
    drain; a liveness probe on gRPC health would have the kubelet kill the pod mid-drain. Every
    service serves /healthz on its HTTP port (8080, FACEWIRE_HTTP_ADDR), alive until it exits."""
    values = {"tls": {"enabled": True, "secretName": "fw-tls"}} if tls else {}
    objects = render(values)
    for svc in SERVICES:
        ctr = container(deployment(objects, svc))
        probe = ctr["livenessProbe"]
        assert "grpc" not in probe, svc
        assert probe["httpGet"] == {"path": "/healthz", "port": "http",
                                    "scheme": "HTTPS" if tls else "HTTP"}, svc
        assert {"name": "http", "containerPort": 8080, "protocol": "TCP"} in ctr["ports"], svc
        assert env_of(objects, svc)["FACEWIRE_HTTP_ADDR"] == "0.0.0.0:8080", svc


def test_values_of_older_releases_still_validate() -> None:
    """`helm upgrade --reuse-values` carries the old `health.livenessService` keys along."""
    old = {svc: {"health": {"readinessService": "", "livenessService": ""}} for svc in SERVICES}
    validate_schema(old)
    for svc in SERVICES:
        assert "grpc" not in container(deployment(render(old), svc))["livenessProbe"]


def test_every_service_runs_its_own_subcommand() -> None:
    objects = render()
    for svc in SERVICES:
        c = container(deployment(objects, svc))
        if svc == "receiver":
            # The lean binary, without OpenCV (see the ingest benchmark's RSS).
            assert c["command"] == ["/usr/local/bin/facewire-receiver"]
            assert "args" not in c
        else:
            assert "command" not in c
            assert c["args"] == [svc]
    job = find(objects, "Job", "demo-facewire-migrate")
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]


# --- the reconciler ------------------------------------------------------------------------


def test_reconciler_deployment_follows_its_values() -> None:
    """Without the reconciler, an image whose publish failed stays pending forever."""
    spec = deployment(render(), "reconciler")["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "RollingUpdate",
                                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    values = helm.parse_set_string("reconciler.replicaCount=3,reconciler.strategy.rollingUpdate.maxSurge=0,"
                                   "reconciler.strategy.rollingUpdate.maxUnavailable=1")
    objects = render(values)
    dep = deployment(objects, "reconciler")
    assert dep["spec"]["replicas"] == 3
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    recreate = deployment(render({"reconciler": {"strategy": {"type": "Recreate"}}}), "reconciler")
    assert recreate["spec"]["strategy"] == {"type": "Recreate"}
    ctr = container(dep)
    assert ctr["args"] == ["reconciler"] and "command" not in ctr
    assert ctr["image"].startswith("facewire/facewire:")
    # HTTP only: no gRPC port or probe; readiness and liveness on the operations port.
    assert ctr["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert ctr["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http", "scheme": "HTTP"}
    assert ctr["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http", "scheme": "HTTP"}
    # It reads no image files.
    pod = dep["spec"]["template"]["spec"]
    assert "images" not in {v["name"] for v in pod["volumes"]}
    # A metrics Service, selecting the reconciler's pods.
    svc = find(objects, "Service", "demo-facewire-reconciler")
    assert svc["spec"]["ports"] == [{"name": "http", "port": 8080, "targetPort": "http",
                                     "protocol": "TCP", "appProtocol": "http"}]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert all(labels[k] == v for k, v in svc["spec"]["selector"].items())
    assert labels["app.kubernetes.io/component"] == "reconciler"


def test_reconciler_gets_its_deadline_interval_and_backends() -> None:
    env = env_of(render(EXTERNAL), "reconciler")
    assert env["FACEWIRE_RECONCILE_AFTER_SECONDS"] == "60"
    assert env["FACEWIRE_RECONCILE_INTERVAL_SECONDS"] == "10"
    assert env["FACEWIRE_DATABASE_URL"] == EXTERNAL["database"]["url"]
    assert env["FACEWIRE_AMQP_URL"] == EXTERNAL["broker"]["url"]
    # The same database, broker and queue as the processors that consume what it re-queues.
    processor = env_of(render(EXTERNAL), "processor")
    for key in ("FACEWIRE_DATABASE_URL", "FACEWIRE_AMQP_URL"):
        assert env[key] == processor[key], key
    assert env.get("FACEWIRE_QUEUE") == processor.get("FACEWIRE_QUEUE")
    tuned = render({**EXTERNAL, "config": {"reconcileAfterSeconds": 300, "reconcileIntervalSeconds": 2.5,
                                           "extraEnv": {"FACEWIRE_QUEUE": "fw.images"}}})
    env = env_of(tuned, "reconciler")
    assert env["FACEWIRE_RECONCILE_AFTER_SECONDS"] == "300"
    assert env["FACEWIRE_RECONCILE_INTERVAL_SECONDS"] == "2.5"
    assert env["FACEWIRE_QUEUE"] == env_of(tuned, "processor")["FACEWIRE_QUEUE"] == "fw.images"
    # Plain digits, never Go's 1e+06.
    big = env_of(render({"config": {"reconcileAfterSeconds": 1000000}}), "reconciler")
    assert big["FACEWIRE_RECONCILE_AFTER_SECONDS"] == "1000000"
    setted = env_of(render(helm.parse_set_string("config.reconcileIntervalSeconds=30")), "reconciler")
    assert setted["FACEWIRE_RECONCILE_INTERVAL_SECONDS"] == "30"
    # Changing the deadline is a configuration change: the reconciler's pods roll.
    assert (checksums({"config": {"reconcileAfterSeconds": 120}})["reconciler"]["checksum/config"]
            != checksums({})["reconciler"]["checksum/config"])


# --- services and wiring ------------------------------------------------------------------


def test_recognition_is_headless_and_the_processor_resolves_it() -> None:
    objects = render()
    svc = find(objects, "Service", "demo-facewire-recognition-headless")
    assert svc["spec"]["clusterIP"] == "None"
    assert {p["name"]: p["port"] for p in svc["spec"]["ports"]} == {"grpc": 50051, "http": 8080}
    assert env_of(objects, "processor")["FACEWIRE_RECOGNITION_URL"] == "http://demo-facewire-recognition-headless:50051"
    assert env_of(objects, "frontend")["FACEWIRE_RECEIVER_URL"] == "http://demo-facewire-receiver:50051"
    recognition_pods = deployment(objects, "recognition")["spec"]["template"]["metadata"]["labels"]
    assert all(recognition_pods[k] == v for k, v in svc["spec"]["selector"].items())


def test_environment_contract() -> None:
    objects = render(EXTERNAL)
    for svc in SERVICES:
        env = env_of(objects, svc)
        assert env["FACEWIRE_DATABASE_URL"] == EXTERNAL["database"]["url"]
        assert env["FACEWIRE_AMQP_URL"] == EXTERNAL["broker"]["url"]
        assert env["FACEWIRE_GRPC_ADDR"] == "0.0.0.0:50051"
        assert env["FACEWIRE_HTTP_ADDR"] == "0.0.0.0:8080"
        assert env["FACEWIRE_LOG_FORMAT"] == "json"
        assert env["FACEWIRE_MODEL_DIR"] == "/opt/facewire/models"
        assert env["FACEWIRE_IMAGE_ROOT"] == "/var/lib/facewire/images"
        assert env["FACEWIRE_MATCH_THRESHOLD"] == "0.363"
        assert "FACEWIRE_TLS_CERT" not in env and "FACEWIRE_AUTH_TOKEN" not in env
        assert "FACEWIRE_TLS_CA" not in env
    # Credentials live in the Secret, never in the ConfigMap.
    cm = find(objects, "ConfigMap", "demo-facewire")["data"]
    assert not any("URL" in k and ("postgres" in v or "amqp" in v) for k, v in cm.items())


def test_image_volume_is_shared_by_receiver_processor_and_recognition() -> None:
    for values, want in [({}, {"emptyDir": {}}),
                         ({"images": {"existingClaim": "pics"}},
                          {"persistentVolumeClaim": {"claimName": "pics", "readOnly": True}})]:
        objects = render(values)
        for svc in SERVICES:
            pod = deployment(objects, svc)["spec"]["template"]["spec"]
            vols = {v["name"]: {k: x for k, x in v.items() if k != "name"} for v in pod["volumes"]}
            mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
            if svc in ("receiver", "processor", "recognition"):
                assert vols["images"] == want, svc
                assert mounts["images"]["mountPath"] == "/var/lib/facewire/images"
            else:
                assert "images" not in vols, svc


def test_face_index_snapshot_gets_a_volume_and_the_setting_on_recognition_only() -> None:
    path = "/var/lib/facewire/face-index/face-index.usearch"
    for values, want in [
        ({}, None),
        ({"recognition": {"faceIndexSnapshot": {"enabled": True}}}, {"emptyDir": {"sizeLimit": "2Gi"}}),
        ({"recognition": {"faceIndexSnapshot": {"enabled": True, "existingClaim": "faces"}}},
         {"persistentVolumeClaim": {"claimName": "faces"}}),
    ]:
        objects = render(values)
        for svc in SERVICES:
            pod = deployment(objects, svc)["spec"]["template"]["spec"]
            vols = {v["name"]: {k: x for k, x in v.items() if k != "name"} for v in pod["volumes"]}
            mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
            env = env_of(objects, svc)
            if svc == "recognition" and want is not None:
                assert vols["face-index"] == want
                assert mounts["face-index"] == "/var/lib/facewire/face-index"
                assert env["FACEWIRE_FACE_INDEX_SNAPSHOT"] == path
            else:
                assert "face-index" not in vols, svc
                assert "FACEWIRE_FACE_INDEX_SNAPSHOT" not in env, svc
        for obj in objects:
            kube_validate(obj)


def test_image_tag_defaults_to_app_version_and_can_be_set_per_service() -> None:
    with helm.Chart.load(__import__("chartlib").CHART) as chart:
        app_version = chart.metadata["appVersion"]
    objects = render({"recognition": {"image": {"repository": "registry.local/fw", "tag": "1.2.3",
                                                  "pullPolicy": "Always"}}})
    assert container(deployment(objects, "receiver"))["image"] == f"facewire/facewire:{app_version}"
    rec = container(deployment(objects, "recognition"))
    assert rec["image"] == "registry.local/fw:1.2.3" and rec["imagePullPolicy"] == "Always"


def test_pod_disruption_budgets_follow_values() -> None:
    objects = render({"recognition": {"podDisruptionBudget": {"enabled": True, "minAvailable": 2}},
                      "frontend": {"podDisruptionBudget": {"enabled": False}}})
    pdbs = {p["metadata"]["name"]: p["spec"] for p in kinds(objects, "PodDisruptionBudget")}
    assert pdbs["demo-facewire-receiver"]["maxUnavailable"] == 1
    assert pdbs["demo-facewire-recognition"]["minAvailable"] == 2
    assert "maxUnavailable" not in pdbs["demo-facewire-recognition"]
    assert "demo-facewire-frontend" not in pdbs


def test_hpa_off_renders_no_autoscaler() -> None:
    off = render()
    for kind in ("HorizontalPodAutoscaler", "ScaledObject", "TriggerAuthentication"):
        assert kinds(off, kind) == [], kind
    on = render(each({"autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 3,
                                      "targetCPUUtilizationPercentage": 80}}))
    assert len(kinds(on, "HorizontalPodAutoscaler")) == len(SERVICES)


# --- migration hook and in-chart databases --------------------------------------------------


def test_migration_hook_phases() -> None:
    in_chart = find(render(), "Job", "demo-facewire-migrate")["metadata"]["annotations"]
    assert in_chart["helm.sh/hook"] == "post-install,pre-upgrade"
    external = render(EXTERNAL)
    job = find(external, "Job", "demo-facewire-migrate")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    hook_secret = find(external, "Secret", "demo-facewire-migrate")
    assert hook_secret["metadata"]["annotations"]["helm.sh/hook-weight"] < job["metadata"]["annotations"]["helm.sh/hook-weight"]
    ref = job["spec"]["template"]["spec"]["containers"][0]["env"][1]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "demo-facewire-migrate", "key": "FACEWIRE_DATABASE_URL"}
    # The hook runs before the chart's ServiceAccount exists on install.
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "default"
    assert kinds(render({"migration": {"enabled": False}}), "Job") == []


def test_in_chart_databases_on_and_off() -> None:
    on = render()
    assert {s["metadata"]["name"] for s in kinds(on, "StatefulSet")} == {
        "demo-facewire-postgresql", "demo-facewire-rabbitmq"}
    assert kinds(render(EXTERNAL), "StatefulSet") == []
    existing = render({**{k: v for k, v in EXTERNAL.items() if k.endswith("sql") or k == "rabbitmq"},
                       "existingSecret": "creds"})
    assert [s for s in kinds(existing, "Secret") if s["metadata"]["name"] == "demo-facewire"] == []
    assert container(deployment(existing, "receiver"))["envFrom"][1] == {"secretRef": {"name": "creds"}}


# --- security -----------------------------------------------------------------------------


def test_every_pod_is_locked_down() -> None:
    objects = render({"networkPolicy": {"enabled": True}})
    pods = [(o["metadata"]["name"], o["spec"]["template"]["spec"]) for o in objects
            if o["kind"] in ("Deployment", "StatefulSet", "Job")]
    pods += [(o["metadata"]["name"], o["spec"]) for o in kinds(objects, "Pod")]
    assert len(pods) == len(SERVICES) + 2 + 1 + 1
    for name, pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["automountServiceAccountToken"] is False, name
        for ctr in pod["containers"]:
            sc = ctr["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            if "postgresql" not in name and "rabbitmq" not in name:
                assert sc["readOnlyRootFilesystem"] is True, name
    for svc in SERVICES:
        pod = deployment(objects, svc)["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsUser"] == 10001
        # Read-only root: everything written goes to emptyDirs.
        assert {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]} >= {"/tmp", "/var/lib/facewire/data"}


def test_tls_mounts_the_secret_and_switches_probes_and_urls() -> None:
    objects = render({"tls": {"enabled": True, "secretName": "fw-tls"}})
    for svc in SERVICES:
        dep = deployment(objects, svc)
        pod = dep["spec"]["template"]["spec"]
        ctr = container(dep)
        assert {"name": "tls", "secret": {"secretName": "fw-tls", "defaultMode": 0o440}} in pod["volumes"]
        assert {"name": "tls", "mountPath": "/etc/facewire/tls", "readOnly": True} in ctr["volumeMounts"]
        env = env_of(objects, svc)
        assert env["FACEWIRE_TLS_CERT"] == "/etc/facewire/tls/tls.crt"
        assert env["FACEWIRE_TLS_KEY"] == "/etc/facewire/tls/tls.key"
        # Every service is also a client of another (or may be): it trusts the CA.
        assert env["FACEWIRE_TLS_CA"] == "/etc/facewire/tls/ca.crt"
        # kubelet gRPC probes are plaintext only.
        assert "grpc" not in ctr["readinessProbe"]
        assert ctr["readinessProbe"]["httpGet"] == {"path": READINESS_PATH.get(svc, "/readyz"),
                                                    "port": "http", "scheme": "HTTPS"}, svc
    assert env_of(objects, "processor")["FACEWIRE_RECOGNITION_URL"].startswith("https://")
    assert env_of(objects, "frontend")["FACEWIRE_RECEIVER_URL"].startswith("https://")
    assert env_of(objects, "frontend")["FACEWIRE_RECOGNITION_URL"].startswith("https://")
    # A self-signed certificate is its own CA.
    self_signed = render({"tls": {"enabled": True, "secretName": "fw-tls", "caKey": "tls.crt"}})
    assert env_of(self_signed, "processor")["FACEWIRE_TLS_CA"] == "/etc/facewire/tls/tls.crt"
    test_pod = kinds(objects, "Pod")[0]
    assert "-insecure" in test_pod["spec"]["containers"][0]["args"][0]
    assert "-plaintext" not in test_pod["spec"]["containers"][0]["args"][0]


@pytest.mark.parametrize("values,secret,key", [
    ({"auth": {"enabled": True, "token": "t0k"}}, "demo-facewire", "FACEWIRE_AUTH_TOKEN"),
    ({"auth": {"enabled": True, "existingSecret": "tok", "existingSecretKey": "bearer"}}, "tok", "bearer"),
])
def test_auth_token_comes_from_a_secret(values: dict, secret: str, key: str) -> None:
    objects = render(values)
    for svc in SERVICES:
        env = env_of(objects, svc)
        assert env["FACEWIRE_AUTH_TOKEN"] == {"secretKeyRef": {"name": secret, "key": key}}, svc
    if secret == "demo-facewire":
        assert find(objects, "Secret", "demo-facewire")["stringData"]["FACEWIRE_AUTH_TOKEN"] == "t0k"
    assert "FACEWIRE_AUTH_TOKEN" not in find(objects, "ConfigMap", "demo-facewire")["data"]


def test_network_policy_lets_only_the_processor_reach_recognition() -> None:
    assert kinds(render(), "NetworkPolicy") == []
    objects = render({"networkPolicy": {"enabled": True}})
    policies = {p["metadata"]["name"]: p["spec"] for p in kinds(objects, "NetworkPolicy")}
    assert set(policies) == {f"demo-facewire-{c}" for c in (*SERVICES, "postgresql", "rabbitmq")}
    rec = policies["demo-facewire-recognition"]
    assert rec["policyTypes"] == ["Ingress"]
    peers = [peer["podSelector"]["matchLabels"] for rule in rec["ingress"] for peer in rule["from"]]
    assert {"app.kubernetes.io/name": "facewire", "app.kubernetes.io/instance": "demo",
            "app.kubernetes.io/component": "processor"} in peers
    assert all(p.get("app.kubernetes.io/component") in ("processor", None) for p in peers)
    # The only other peer is the health-check pod, which carries the label.
    checker = [p for p in peers if "facewire.io/health-check" in p]
    assert len(checker) == 1 and len(peers) == 2
    test_pod = kinds(objects, "Pod")[0]["metadata"]["labels"]
    assert all(test_pod[k] == v for k, v in checker[0].items())
    # Nobody may reach recognition without a `from`: every rule names its peers.
    assert all(rule.get("from") for rule in rec["ingress"])
    # The reconciler takes no requests: only the health check, on the HTTP port.
    recon = policies["demo-facewire-reconciler"]
    assert recon["ingress"] == [{"from": [{"podSelector": {"matchLabels": checker[0]}}],
                                 "ports": [{"port": "http", "protocol": "TCP"}]}]
    # It must reach the in-chart database and broker, like every facewire service.
    for backend in ("postgresql", "rabbitmq"):
        exprs = policies[f"demo-facewire-{backend}"]["ingress"][0]["from"][0]["podSelector"]["matchExpressions"]
        components = next(e["values"] for e in exprs if e["key"] == "app.kubernetes.io/component")
        assert set(SERVICES) <= set(components), backend


# --- helm test and NOTES ------------------------------------------------------------------


def test_helm_test_pod_checks_every_service() -> None:
    pods = kinds(render(), "Pod")
    assert len(pods) == 1
    pod = pods[0]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    script = pod["spec"]["containers"][0]["args"][0]
    for target in ("demo-facewire-receiver:50051", "demo-facewire-processor:50051",
                   "demo-facewire-recognition-headless:50051"):
        assert f"check {target}" in script
    assert "grpc.health.v1.Health/Check" in script
    assert "http://demo-facewire-frontend:8080/readyz" in script
    assert "http://demo-facewire-reconciler:8080/healthz" in script
    assert pod["spec"]["containers"][0]["image"].startswith("fullstorydev/grpcurl:")


def test_notes_show_the_grpcurl_call() -> None:
    text = notes()
    assert ("grpcurl -plaintext -d '{\"paths\":[{\"path\":\"unknown4456.jpg\"}]}' localhost:50051 "
            "facewire.v1.ImageService/SubmitImages") in text
    assert "port-forward service/demo-facewire-receiver 50051:50051" in text
    assert "grpcurl -insecure" in notes({"tls": {"enabled": True, "secretName": "x"}})


# --- the README's commands work -----------------------------------------------------------


def _readme_set_expressions() -> list[str]:
    import re

    from chartlib import CHART

    text = (CHART / "README.md").read_text().replace("\\\n", " ")
    commands = [line for line in text.splitlines() if line.lstrip().startswith(("helm install", "helm upgrade"))]
    assert commands, "README shows no helm install/upgrade command"
    return [m.strip("'") for cmd in commands for m in re.findall(r"--set (\S+)", cmd)]


def test_readme_set_values_pass_the_schema_and_render() -> None:
    expressions = _readme_set_expressions()
    assert "receiver.replicaCount=4,receiver.strategy.rollingUpdate.maxSurge=2" in expressions
    for expr in expressions:
        # A quoted URL may hold an ellipsis placeholder; the shape is what matters here.
        values = helm.parse_set_string(expr.replace("…", "x").replace("'", ""))
        validate_schema(values)
    # The production example as a whole renders.
    prod = {}
    for expr in expressions:
        if "enabled=false" in expr or "url=" in expr or "existingClaim" in expr:
            from chartlib import deep_merge

            prod = deep_merge(prod, helm.parse_set_string(expr.replace("…", "x").replace("'", "")))
    objects = render(prod)
    assert kinds(objects, "StatefulSet") == []


def test_readme_shows_the_grpcurl_call() -> None:
    from chartlib import CHART

    text = (CHART / "README.md").read_text()
    assert ("grpcurl -plaintext -d '{\"paths\":[{\"path\":\"unknown4456.jpg\"}]}' <host>:50051 "
            "facewire.v1.ImageService/SubmitImages") in text
