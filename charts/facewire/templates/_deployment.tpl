{{/*
One facewire service as a Deployment. Every service runs the same image: the `facewire`
binary with its own subcommand, except the receiver, which runs the lean
`facewire-receiver`. Call with (dict "root" $ "component" "receiver").
  grpc:   whether the service serves gRPC (and so gets native gRPC probes); the frontend and
          the reconciler serve HTTP only
  readyz: whether its operations port serves /readyz; the reconciler serves only /healthz and
          /metrics, so its readiness is /healthz (it takes no traffic: readiness only says it
          started, i.e. reached the database and the broker)
  images: whether it needs the shared image volume (recognition reads an image to embed
          a face a person drew on it)
*/}}
{{- define "facewire.deployment" -}}
{{- $root := .root }}
{{- $component := .component }}
{{- $svc := index $root.Values $component }}
{{- $grpc := not (has $component (list "frontend" "reconciler")) }}
{{- $readyz := ne $component "reconciler" }}
{{- $images := has $component (list "receiver" "processor" "recognition") }}
{{- $snapshot := dict }}
{{- if eq $component "recognition" }}
{{- $snapshot = $svc.faceIndexSnapshot | default dict }}
{{- end }}
{{- $ctx := dict "root" $root "component" $component }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "facewire.fullname" $root }}-{{ $component }}
  labels:
    {{- include "facewire.componentLabels" $ctx | nindent 4 }}
spec:
  {{- if not $svc.autoscaling.enabled }}
  replicas: {{ $svc.replicaCount }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "facewire.selectorLabels" $ctx | nindent 6 }}
  strategy:
    type: {{ $svc.strategy.type }}
    {{- if eq $svc.strategy.type "RollingUpdate" }}
    rollingUpdate:
      maxSurge: {{ $svc.strategy.rollingUpdate.maxSurge }}
      maxUnavailable: {{ $svc.strategy.rollingUpdate.maxUnavailable }}
    {{- end }}
  template:
    metadata:
      labels:
        {{- include "facewire.componentLabels" $ctx | nindent 8 }}
        {{- with $svc.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        # A change of configuration or credentials changes the pod template, so the pods roll.
        checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
        checksum/secret: {{ include (print $root.Template.BasePath "/secret.yaml") $root | sha256sum }}
        {{- with $svc.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "facewire.serviceAccountName" $root }}
      automountServiceAccountToken: {{ $root.Values.serviceAccount.automountServiceAccountToken }}
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      terminationGracePeriodSeconds: {{ include "facewire.terminationGracePeriodSeconds" (dict "root" $root "svc" $svc) }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      containers:
        - name: {{ $component }}
          image: {{ include "facewire.image" (dict "root" $root "image" $svc.image) | quote }}
          imagePullPolicy: {{ $svc.image.pullPolicy }}
          {{- if eq $component "receiver" }}
          # The lean receiver binary: no OpenCV mapped, a third of the all-in-one's memory.
          command: ["/usr/local/bin/facewire-receiver"]
          {{- else }}
          args: [{{ $component | quote }}]
          {{- end }}
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          ports:
            {{- if $grpc }}
            - name: grpc
              containerPort: 50051
              protocol: TCP
            {{- end }}
            - name: http
              containerPort: 8080
              protocol: TCP
          envFrom:
            - configMapRef:
                name: {{ include "facewire.fullname" $root }}
            - secretRef:
                name: {{ include "facewire.secretName" $root }}
          {{- if or $root.Values.auth.enabled $svc.extraEnv $snapshot.enabled }}
          env:
            {{- if $snapshot.enabled }}
            - name: FACEWIRE_FACE_INDEX_SNAPSHOT
              value: {{ printf "%s/face-index.usearch" (trimSuffix "/" $snapshot.mountPath) | quote }}
            {{- end }}
            {{- if $root.Values.auth.enabled }}
            - name: FACEWIRE_AUTH_TOKEN
              valueFrom:
                secretKeyRef:
                  name: {{ include "facewire.authSecretName" $root }}
                  key: {{ include "facewire.authSecretKey" $root }}
            {{- end }}
            {{- with $svc.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          {{- end }}
          {{- $scheme := ternary "HTTPS" "HTTP" $root.Values.tls.enabled }}
          {{- if and $grpc (not $root.Values.tls.enabled) }}
          readinessProbe:
            grpc:
              port: 50051
              service: {{ $svc.health.readinessService | quote }}
            periodSeconds: 5
            failureThreshold: 2
          {{- else }}
          {{- /* The frontend and the reconciler have no gRPC, and kubelet gRPC probes cannot
          speak TLS; /readyz reports the same health (NOT_SERVING while a dependency is down or
          draining). The reconciler has no /readyz: its /healthz answers once it is up. */}}
          readinessProbe:
            httpGet:
              path: {{ ternary "/readyz" "/healthz" $readyz }}
              port: http
              scheme: {{ $scheme }}
            periodSeconds: 5
            failureThreshold: 2
          {{- end }}
          {{- /* Liveness is the operations port's /healthz, which every service serves and
          which answers as long as the process does: never gRPC health, whose statuses
          (the overall "" too) turn NOT_SERVING for the drain on SIGTERM, so a liveness probe
          on them would have the kubelet kill a pod in the middle of its drain. */}}
          livenessProbe:
            httpGet:
              path: /healthz
              port: http
              scheme: {{ $scheme }}
            initialDelaySeconds: 10
            periodSeconds: 10
            failureThreshold: 3
          lifecycle:
            # Keep serving while the endpoint removal reaches every client and proxy; SIGTERM
            # (and the drain of FACEWIRE_DRAIN_SECONDS) follows this sleep.
            preStop:
              exec:
                command: ["/bin/sleep", {{ $root.Values.config.preStopSleepSeconds | toString | quote }}]
          resources:
            {{- toYaml $svc.resources | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            - name: data
              mountPath: {{ $root.Values.config.dataDir }}
            {{- if $snapshot.enabled }}
            - name: face-index
              mountPath: {{ $snapshot.mountPath }}
            {{- end }}
            {{- if $images }}
            - name: images
              mountPath: {{ $root.Values.images.mountPath }}
              readOnly: {{ $root.Values.images.readOnly }}
            {{- end }}
            {{- if $root.Values.tls.enabled }}
            - name: tls
              mountPath: /etc/facewire/tls
              readOnly: true
            {{- end }}
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: 256Mi
        - name: data
          emptyDir:
            sizeLimit: 1Gi
        {{- if $snapshot.enabled }}
        - name: face-index
          {{- if $snapshot.existingClaim }}
          persistentVolumeClaim:
            claimName: {{ $snapshot.existingClaim }}
          {{- else }}
          emptyDir:
            sizeLimit: {{ $snapshot.sizeLimit }}
          {{- end }}
        {{- end }}
        {{- if $images }}
        - name: images
          {{- if $root.Values.images.existingClaim }}
          persistentVolumeClaim:
            claimName: {{ $root.Values.images.existingClaim }}
            readOnly: {{ $root.Values.images.readOnly }}
          {{- else }}
          emptyDir: {}
          {{- end }}
        {{- end }}
        {{- if $root.Values.tls.enabled }}
        - name: tls
          secret:
            secretName: {{ $root.Values.tls.secretName }}
            defaultMode: 0440
        {{- end }}
      {{- with $svc.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $svc.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $svc.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $svc.topologySpreadConstraints }}
      topologySpreadConstraints:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end }}

{{/*
The optional autoscaler of one service: on the work queue's depth for the processors and
recognition (facewire.queueAutoscaler), on CPU for the others. Call with
(dict "root" $ "component" "receiver").
*/}}
{{- define "facewire.hpa" -}}
{{- $svc := index .root.Values .component }}
{{- if $svc.autoscaling.enabled }}
{{- if has .component (splitList " " (include "facewire.queueScaledComponents" .root)) }}
{{- include "facewire.queueAutoscaler" . }}
{{- else }}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "facewire.fullname" .root }}-{{ .component }}
  labels:
    {{- include "facewire.componentLabels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "facewire.fullname" .root }}-{{ .component }}
  minReplicas: {{ $svc.autoscaling.minReplicas }}
  maxReplicas: {{ $svc.autoscaling.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ $svc.autoscaling.targetCPUUtilizationPercentage }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Scaling on the work queue's depth, for a service whose load is the queue's (the processors, and
recognition, which they call): with autoscaling.keda a KEDA ScaledObject whose rabbitmq trigger
reads the queue's ready messages itself, through the broker URL of the credentials Secret (the
TriggerAuthentication of keda.yaml); otherwise an autoscaling/v2 HPA on the External metric
facewire_queue_depth, the processors' gauge of the same count served by prometheus-adapter.
Either way the target is autoscaling.queueLength waiting messages per replica. The processors
all report the same queue, so the adapter rule takes the max of their series (see README).
Call with (dict "root" $ "component" "processor").
*/}}
{{- define "facewire.queueAutoscaler" -}}
{{- $root := .root }}
{{- $svc := index $root.Values .component }}
{{- $scaling := include "facewire.queueScaling" $root | fromJson }}
{{- $fullname := include "facewire.fullname" $root }}
{{- $queueLength := int $svc.autoscaling.queueLength | toString }}
{{- if dig "keda" false $scaling }}
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: {{ $fullname }}-{{ .component }}
  labels:
    {{- include "facewire.componentLabels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ $fullname }}-{{ .component }}
  {{- if hasKey $scaling "pollingInterval" }}
  pollingInterval: {{ int $scaling.pollingInterval }}
  {{- end }}
  {{- if hasKey $scaling "cooldownPeriod" }}
  cooldownPeriod: {{ int $scaling.cooldownPeriod }}
  {{- end }}
  minReplicaCount: {{ int $svc.autoscaling.minReplicas }}
  maxReplicaCount: {{ int $svc.autoscaling.maxReplicas }}
  triggers:
    - type: rabbitmq
      metadata:
        # AMQP: a passive declare counts the ready messages, as the processors' gauge does
        # (in-flight, unacknowledged ones are not waiting). The URL, and so the vhost, comes
        # from the TriggerAuthentication: never a credential in the ScaledObject.
        protocol: amqp
        queueName: {{ include "facewire.queueName" $root | quote }}
        mode: QueueLength
        value: {{ $queueLength | quote }}
      authenticationRef:
        name: {{ $fullname }}-amqp
        kind: TriggerAuthentication
{{- else }}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ $fullname }}-{{ .component }}
  labels:
    {{- include "facewire.componentLabels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ $fullname }}-{{ .component }}
  minReplicas: {{ int $svc.autoscaling.minReplicas }}
  maxReplicas: {{ int $svc.autoscaling.maxReplicas }}
  metrics:
    - type: External
      external:
        metric:
          name: facewire_queue_depth
          selector:
            matchLabels:
              {{- $selector := dig "metricSelector" (dict) $scaling | default (dict "service" (printf "%s-processor" $fullname)) }}
              {{- toYaml $selector | nindent 14 }}
        target:
          # The queue's depth divided by this gives the replicas wanted.
          type: AverageValue
          averageValue: {{ $queueLength | quote }}
{{- end }}
{{- end }}

{{/* The PodDisruptionBudget of one service. Call with (dict "root" $ "component" "receiver"). */}}
{{- define "facewire.pdb" -}}
{{- $svc := index .root.Values .component }}
{{- if $svc.podDisruptionBudget.enabled }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "facewire.fullname" .root }}-{{ .component }}
  labels:
    {{- include "facewire.componentLabels" . | nindent 4 }}
spec:
  {{- if hasKey $svc.podDisruptionBudget "minAvailable" }}
  minAvailable: {{ $svc.podDisruptionBudget.minAvailable }}
  {{- else }}
  maxUnavailable: {{ $svc.podDisruptionBudget.maxUnavailable }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "facewire.selectorLabels" . | nindent 6 }}
{{- end }}
{{- end }}
