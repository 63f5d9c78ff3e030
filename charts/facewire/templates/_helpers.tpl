{{/*
Names. Resource names are `<fullname>-<component>`; Kubernetes limits names to 63 characters.
*/}}
{{- define "facewire.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "facewire.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "facewire.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "facewire.labels" -}}
helm.sh/chart: {{ include "facewire.chart" . }}
app.kubernetes.io/name: {{ include "facewire.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: facewire
{{- end }}

{{/*
Selector labels of one component. Call with (dict "root" $ "component" "receiver").
Selectors are immutable on a Deployment, so they hold nothing that changes between versions.
*/}}
{{- define "facewire.selectorLabels" -}}
app.kubernetes.io/name: {{ include "facewire.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "facewire.componentLabels" -}}
{{ include "facewire.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "facewire.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "facewire.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* An image reference; the tag defaults to the chart's appVersion. Call with (dict "root" $ "image" .image). */}}
{{- define "facewire.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) }}
{{- end }}

{{/* http or https, for URLs between the services. */}}
{{- define "facewire.scheme" -}}
{{- if .Values.tls.enabled }}https{{ else }}http{{ end }}
{{- end }}

{{/*
Seconds Kubernetes waits between SIGTERM and SIGKILL. It must cover the preStop sleep (which
runs before SIGTERM reaches the process and counts against the same budget) plus the drain,
with a margin for the process to exit. Call with (dict "root" $ "svc" .Values.receiver).
*/}}
{{- define "facewire.terminationGracePeriodSeconds" -}}
{{- $needed := add .root.Values.config.drainSeconds .root.Values.config.preStopSleepSeconds }}
{{- $grace := int .svc.terminationGracePeriodSeconds }}
{{- if eq $grace 0 }}
{{- add $needed 10 }}
{{- else if le $grace (int $needed) }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed config.drainSeconds + config.preStopSleepSeconds (%d), or SIGKILL cuts the drain short" $grace (int $needed)) }}
{{- else }}
{{- $grace }}
{{- end }}
{{- end }}

{{/*
A generated credential that stays the same across upgrades: an explicit value wins; else the
value already in the release's Secret (found with `lookup` on a live cluster); else a new
random one. The result is memoised for the rest of this render, so the Secret, the hook Secret
and the checksum annotations all see the same value.
Call with (list $ "postgres-password" .Values.postgresql.auth.password).
*/}}
{{- define "facewire.credential" -}}
{{- $root := index . 0 }}
{{- $key := index . 1 }}
{{- $explicit := index . 2 }}
{{- if $explicit }}
{{- $explicit }}
{{- else }}
{{- $memo := $root.Values._generatedCredentials | default dict }}
{{- if not (hasKey $memo $key) }}
{{- $value := "" }}
{{- $existing := lookup "v1" "Secret" $root.Release.Namespace (include "facewire.fullname" $root) }}
{{- if and $existing (hasKey ($existing.data | default dict) $key) }}
{{- $value = index $existing.data $key | b64dec }}
{{- else }}
{{- $value = randAlphaNum 32 }}
{{- end }}
{{- $_ := set $memo $key $value }}
{{- $_ := set $root.Values "_generatedCredentials" $memo }}
{{- end }}
{{- index $memo $key }}
{{- end }}
{{- end }}

{{/* FACEWIRE_DATABASE_URL. */}}
{{- define "facewire.databaseUrl" -}}
{{- if .Values.postgresql.enabled }}
{{- $pg := .Values.postgresql.auth }}
{{- printf "postgres://%s:%s@%s-postgresql:5432/%s" (urlquery $pg.username) (urlquery (include "facewire.credential" (list . "postgres-password" $pg.password))) (include "facewire.fullname" .) $pg.database }}
{{- else }}
{{- required "database.url is required when postgresql.enabled is false and existingSecret is empty" .Values.database.url }}
{{- end }}
{{- end }}

{{/*
FACEWIRE_AMQP_URL. The in-chart broker is named with its namespace (<service>.<namespace>.svc):
the KEDA operator, which runs in its own namespace, dials the same URL (keda.yaml).
*/}}
{{- define "facewire.amqpUrl" -}}
{{- if .Values.rabbitmq.enabled }}
{{- $mq := .Values.rabbitmq.auth }}
{{- printf "amqp://%s:%s@%s-rabbitmq.%s.svc:5672/%%2f" (urlquery $mq.username) (urlquery (include "facewire.credential" (list . "rabbitmq-password" $mq.password))) (include "facewire.fullname" .) .Release.Namespace }}
{{- else }}
{{- required "broker.url is required when rabbitmq.enabled is false and existingSecret is empty" .Values.broker.url }}
{{- end }}
{{- end }}

{{/* The Secret with FACEWIRE_DATABASE_URL and FACEWIRE_AMQP_URL. */}}
{{- define "facewire.secretName" -}}
{{- default (include "facewire.fullname" .) .Values.existingSecret }}
{{- end }}

{{/* The Secret and key holding FACEWIRE_AUTH_TOKEN. */}}
{{- define "facewire.authSecretName" -}}
{{- if .Values.auth.existingSecret }}{{ .Values.auth.existingSecret }}{{ else }}{{ include "facewire.secretName" . }}{{ end }}
{{- end }}
{{- define "facewire.authSecretKey" -}}
{{- if .Values.auth.existingSecret }}{{ .Values.auth.existingSecretKey }}{{ else }}FACEWIRE_AUTH_TOKEN{{ end }}
{{- end }}

{{/*
FACEWIRE_QUEUE, the work queue: config.queueName, unless config.extraEnv sets FACEWIRE_QUEUE (how
it was set before config.queueName existed). Values reused from an older release have neither:
then the binary's own default, which those releases ran with.
*/}}
{{- define "facewire.queueName" -}}
{{- $extra := .Values.config.extraEnv | default dict }}
{{- if hasKey $extra "FACEWIRE_QUEUE" }}
{{- index $extra "FACEWIRE_QUEUE" | toString }}
{{- else }}
{{- .Values.config.queueName | default "facewire.images" }}
{{- end }}
{{- end }}

{{/* The services that scale on the work queue's depth rather than on CPU. */}}
{{- define "facewire.queueScaledComponents" -}}
processor recognition
{{- end }}

{{/*
The top-level `autoscaling` block; empty in values reused from a release older than it
(`helm upgrade --reuse-values` keeps the old values and drops the new chart's defaults).
*/}}
{{- define "facewire.queueScaling" -}}
{{- toJson (.Values.autoscaling | default dict) }}
{{- end }}

{{/* "true" when some service scales with KEDA: it is queue scaled, enabled, and autoscaling.keda is on. */}}
{{- define "facewire.kedaInUse" -}}
{{- $scaling := include "facewire.queueScaling" . | fromJson }}
{{- $inUse := false }}
{{- if dig "keda" false $scaling }}
{{- range $component := splitList " " (include "facewire.queueScaledComponents" .) }}
{{- if (index $.Values $component).autoscaling.enabled }}
{{- $inUse = true }}
{{- end }}
{{- end }}
{{- end }}
{{- $inUse }}
{{- end }}

{{/* Checks that span several values and that a JSON schema cannot express. */}}
{{- define "facewire.validate" -}}
{{- range $component := list "receiver" "processor" "recognition" "frontend" "reconciler" }}
{{- $svc := index $.Values $component }}
{{- if eq $svc.strategy.type "RollingUpdate" }}
{{- $ru := $svc.strategy.rollingUpdate }}
{{- if and (eq (toString $ru.maxSurge) "0") (or (eq (toString $ru.maxUnavailable) "0") (eq (toString $ru.maxUnavailable) "0%")) }}
{{- fail (printf "%s.strategy.rollingUpdate: maxSurge and maxUnavailable cannot both be 0 (the rollout could never make progress)" $component) }}
{{- end }}
{{- if and (eq (toString $ru.maxSurge) "0%") (or (eq (toString $ru.maxUnavailable) "0") (eq (toString $ru.maxUnavailable) "0%")) }}
{{- fail (printf "%s.strategy.rollingUpdate: maxSurge and maxUnavailable cannot both be 0 (the rollout could never make progress)" $component) }}
{{- end }}
{{- end }}
{{- if and $svc.autoscaling.enabled (gt (int $svc.autoscaling.minReplicas) (int $svc.autoscaling.maxReplicas)) }}
{{- fail (printf "%s.autoscaling: minReplicas (%d) exceeds maxReplicas (%d)" $component (int $svc.autoscaling.minReplicas) (int $svc.autoscaling.maxReplicas)) }}
{{- end }}
{{- end }}
{{- $keda := dig "keda" false (include "facewire.queueScaling" . | fromJson) }}
{{- range $component := splitList " " (include "facewire.queueScaledComponents" .) }}
{{- $as := (index $.Values $component).autoscaling }}
{{- if $as.enabled }}
{{- if not (hasKey $as "queueLength") }}
{{- fail (printf "%s.autoscaling.queueLength is required: %s scales on the work queue's depth, not on CPU; set the number of waiting messages per replica (values.yaml has the chart's default)" $component $component) }}
{{- end }}
{{- if and (not $keda) (lt (int $as.minReplicas) 1) }}
{{- fail (printf "%s.autoscaling.minReplicas is 0, which needs autoscaling.keda=true: a HorizontalPodAutoscaler cannot scale to zero (without the alpha HPAScaleToZero feature gate), and with no processor running nothing would report facewire_queue_depth to scale back up" $component) }}
{{- end }}
{{- end }}
{{- end }}
{{- if and .Values.networkPolicy.enabled .Values.rabbitmq.enabled (eq (include "facewire.kedaInUse" .) "true") (not (hasKey .Values.networkPolicy "kedaFrom")) }}
{{- fail "networkPolicy.kedaFrom must list the KEDA operator's pods (NetworkPolicyPeers): with networkPolicy.enabled only the peers listed there may reach the in-chart RabbitMQ besides facewire, and KEDA reads the queue's depth from it ([] if KEDA reaches it another way)" }}
{{- end }}
{{- if and .Values.tls.enabled (not .Values.tls.secretName) }}
{{- fail "tls.secretName is required when tls.enabled is true" }}
{{- end }}
{{- if and .Values.auth.enabled (not .Values.auth.existingSecret) (not .Values.auth.token) (not .Values.existingSecret) }}
{{- fail "auth.enabled needs auth.token, auth.existingSecret or existingSecret (with FACEWIRE_AUTH_TOKEN)" }}
{{- end }}
{{- end }}
