"""Strict schemas for the custom resources the chart renders, which kubernetes-validate (built-in
kinds only) does not know: KEDA's ScaledObject and TriggerAuthentication (keda.sh/v1alpha1).

They are written from KEDA 2.x's CRDs, kept to the fields KEDA defines (unknown fields are errors,
as in the strict Kubernetes schemas) with the types KEDA's API server checks: replica counts and
periods are integers, a trigger's `metadata` is a map of strings (`value: 20` unquoted is
rejected by the API server, so it is rejected here). The object's `metadata` is checked by the
Kubernetes ObjectMeta schema itself (see `validate`)."""

from __future__ import annotations

from typing import Any

import jsonschema
import kubernetes_validate
import kubernetes_validate.utils as kv

KEDA = "keda.sh/v1alpha1"

_INT32 = {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_NAME = {"type": "string", "minLength": 1, "maxLength": 253}

_SCALED_OBJECT_SPEC = {
    "type": "object",
    "additionalProperties": False,
    "required": ["scaleTargetRef", "triggers"],
    "properties": {
        "scaleTargetRef": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name"],
            "properties": {
                "apiVersion": {"type": "string"},
                "kind": {"type": "string"},
                "name": _NAME,
                "envSourceContainerName": {"type": "string"},
            },
        },
        "pollingInterval": _INT32,
        "cooldownPeriod": _INT32,
        "initialCooldownPeriod": _INT32,
        "idleReplicaCount": _INT32,
        "minReplicaCount": _INT32,
        "maxReplicaCount": _INT32,
        "advanced": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "restoreToOriginalReplicaCount": {"type": "boolean"},
                "horizontalPodAutoscalerConfig": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"name": {"type": "string"}, "behavior": {"type": "object"}},
                },
                "scalingModifiers": {"type": "object"},
            },
        },
        "fallback": {
            "type": "object",
            "additionalProperties": False,
            "required": ["failureThreshold", "replicas"],
            "properties": {
                "failureThreshold": _INT32,
                "replicas": _INT32,
                "behavior": {"type": "string"},
            },
        },
        "triggers": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["type", "metadata"],
                "properties": {
                    "type": {"type": "string", "minLength": 1},
                    "name": {"type": "string"},
                    "metadata": _STRING_MAP,
                    "authenticationRef": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["name"],
                        "properties": {
                            "name": _NAME,
                            "kind": {"enum": ["TriggerAuthentication", "ClusterTriggerAuthentication"]},
                        },
                    },
                    "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                    "useCachedMetrics": {"type": "boolean"},
                },
            },
        },
    },
}

_TRIGGER_AUTHENTICATION_SPEC = {
    "type": "object",
    "additionalProperties": False,
    "minProperties": 1,
    "properties": {
        "secretTargetRef": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["parameter", "name", "key"],
                "properties": {"parameter": _NAME, "name": _NAME, "key": _NAME},
            },
        },
        "configMapTargetRef": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["parameter", "name", "key"],
                "properties": {"parameter": _NAME, "name": _NAME, "key": _NAME},
            },
        },
        "env": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["parameter", "name"],
                "properties": {"parameter": _NAME, "name": _NAME, "containerName": {"type": "string"}},
            },
        },
        # Cloud secret stores and identities: accepted as objects, not used by this chart.
        "podIdentity": {"type": "object"},
        "hashiCorpVault": {"type": "object"},
        "azureKeyVault": {"type": "object"},
        "awsSecretManager": {"type": "object"},
        "gcpSecretManager": {"type": "object"},
        "boundServiceAccountToken": {"type": "array"},
    },
}


def _object(kind: str, spec: dict) -> dict:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": KEDA},
            "kind": {"const": kind},
            "metadata": {"type": "object"},
            "spec": spec,
        },
    }


SCHEMAS: dict[tuple[str, str], dict] = {
    (KEDA, "ScaledObject"): _object("ScaledObject", _SCALED_OBJECT_SPEC),
    (KEDA, "TriggerAuthentication"): _object("TriggerAuthentication", _TRIGGER_AUTHENTICATION_SPEC),
}


def known(obj: dict[str, Any]) -> bool:
    """Whether `obj` is a custom resource this module validates. Only these exact
    (apiVersion, kind) pairs: anything else, a misspelt KEDA kind included, goes to the
    Kubernetes schemas and fails there as unknown."""
    return (obj.get("apiVersion"), obj.get("kind")) in SCHEMAS


def validate(obj: dict[str, Any], version: str) -> None:
    """Validates a KEDA object against its strict schema, and its metadata against Kubernetes'
    ObjectMeta of `version` (by validating a ConfigMap that carries the same metadata). Raises
    kubernetes_validate's ValidationError, like the built-in kinds."""
    try:
        jsonschema.Draft202012Validator(SCHEMAS[(obj["apiVersion"], obj["kind"])]).validate(obj)
    except jsonschema.ValidationError as err:
        raise kv.ValidationError(err, version=version) from None
    kubernetes_validate.validate({"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj["metadata"]},
                                 version, strict=True)
