"""The values matrix the chart must render, lint and validate for. Each case is named by what it
exercises; every value set is also checked to render replicas and strategy as given."""

from __future__ import annotations

from typing import Any

SERVICES = ("receiver", "processor", "recognition", "frontend", "reconciler")

EXTERNAL = {
    "postgresql": {"enabled": False},
    "rabbitmq": {"enabled": False},
    "database": {"url": "postgres://facewire:secret@db.example.internal:5432/facewire"},
    "broker": {"url": "amqp://facewire:secret@mq.example.internal:5672/%2f"},
}


def each(block: dict[str, Any]) -> dict[str, Any]:
    """The same settings for every service."""
    return {svc: block for svc in SERVICES}


def strategy(max_surge: Any, max_unavailable: Any) -> dict[str, Any]:
    return {
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": max_surge, "maxUnavailable": max_unavailable},
        }
    }


MATRIX: dict[str, dict[str, Any]] = {
    "defaults": {},
    "replicas-and-surge": {
        "receiver": {"replicaCount": 5, **strategy(2, 1)},
        "processor": {"replicaCount": 3, **strategy(1, 0)},
        "recognition": {"replicaCount": 4, **strategy(2, 0)},
        "frontend": {"replicaCount": 2, **strategy(0, 1)},
        "reconciler": {"replicaCount": 3, **strategy(1, 1)},
    },
    # The tutorial's warning: a single node may not fit a surge pod, so replace one at a time.
    "single-node": each({"replicaCount": 1, **strategy(0, 1)}),
    "percentages": each({"replicaCount": 4, **strategy("25%", "25%")}),
    "recreate": each({"replicaCount": 2, "strategy": {"type": "Recreate"}}),
    "hpa-on": each({"autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 7,
                                    "targetCPUUtilizationPercentage": 60}}),
    # Processors and recognition on the queue depth through KEDA, both down to zero when the
    # queue is empty; the request-driven receiver keeps its CPU HPA.
    "keda-scale-to-zero": {
        "autoscaling": {"keda": True},
        "receiver": {"autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 6,
                                     "targetCPUUtilizationPercentage": 70}},
        "processor": {"autoscaling": {"enabled": True, "minReplicas": 0, "maxReplicas": 20,
                                      "queueLength": 25}},
        "recognition": {"autoscaling": {"enabled": True, "minReplicas": 0, "maxReplicas": 8},
                        "podDisruptionBudget": {"enabled": True, "minAvailable": 1}},
        "networkPolicy": {"enabled": True},
    },
    # KEDA against an external broker whose URL lives in a Secret the chart does not manage.
    "keda-existing-secret": {
        "postgresql": {"enabled": False},
        "rabbitmq": {"enabled": False},
        "existingSecret": "facewire-credentials",
        "autoscaling": {"keda": True, "pollingInterval": 5, "cooldownPeriod": 60},
        "config": {"queueName": "fw.work"},
        "processor": {"autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 4}},
    },
    # The same scaling without KEDA: HPAs on the External metric facewire_queue_depth.
    "queue-hpa": {
        "autoscaling": {"keda": False},
        "processor": {"autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 12}},
        "recognition": {"autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 6,
                                        "queueLength": 8}},
        "frontend": {"autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 3,
                                     "targetCPUUtilizationPercentage": 80}},
    },
    "external-databases": dict(EXTERNAL),
    "existing-secret": {
        "postgresql": {"enabled": False},
        "rabbitmq": {"enabled": False},
        "existingSecret": "facewire-credentials",
    },
    "in-chart-postgresql-external-broker": {
        "rabbitmq": {"enabled": False},
        "broker": {"url": "amqps://facewire:secret@mq.example.internal:5671/facewire"},
    },
    "in-chart-persistent": {
        "postgresql": {"persistence": {"enabled": True, "size": "2Gi", "storageClass": "fast"}},
        "rabbitmq": {"persistence": {"enabled": True, "size": "1Gi"}},
    },
    "tls-and-auth": {
        "tls": {"enabled": True, "secretName": "facewire-tls"},
        "auth": {"enabled": True, "token": "s3cret-token"},
    },
    "network-policy": {
        "networkPolicy": {
            "enabled": True,
            "metricsFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}],
        }
    },
    "production": {
        **EXTERNAL,
        "images": {"existingClaim": "facewire-images"},
        "tls": {"enabled": True, "secretName": "facewire-tls"},
        "auth": {"enabled": True, "existingSecret": "facewire-auth", "existingSecretKey": "bearer"},
        "networkPolicy": {"enabled": True},
        "receiver": {"replicaCount": 3, **strategy(1, 0),
                     "service": {"type": "LoadBalancer"},
                     "autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 12,
                                     "targetCPUUtilizationPercentage": 70}},
        "processor": {"replicaCount": 6, **strategy("50%", 0)},
        "recognition": {"replicaCount": 3, **strategy(1, 1),
                        "podDisruptionBudget": {"enabled": True, "minAvailable": 2}},
        "frontend": {"replicaCount": 2, "podDisruptionBudget": {"enabled": False}},
        "reconciler": {"replicaCount": 2, **strategy(0, 1)},
        "imagePullSecrets": [{"name": "registry"}],
        "config": {"drainSeconds": 45, "reconcileAfterSeconds": 300, "reconcileIntervalSeconds": 30,
                   "extraEnv": {"FACEWIRE_PREFETCH": "32"}},
    },
}
