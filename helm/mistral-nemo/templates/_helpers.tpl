{{/*
Names, labels and the values every template derives (image, tensor parallel size, engine cache key).
*/}}

{{- define "mistral-nemo.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* `<release>-<chart>`, or the release name alone when it already contains the chart name. */}}
{{- define "mistral-nemo.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* A component's resource name: `<fullname>-<component>`, kept within 63 characters. */}}
{{- define "mistral-nemo.componentName" -}}
{{- $full := include "mistral-nemo.fullname" .ctx -}}
{{- printf "%s-%s" ($full | trunc (int (sub 62 (len .component)))) .component | trimSuffix "-" -}}
{{- end -}}

{{- define "mistral-nemo.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels of one component; usage: include "mistral-nemo.selectorLabels" (dict "ctx" $ "component" "triton") */}}
{{- define "mistral-nemo.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mistral-nemo.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Full labels of one component's resources. */}}
{{- define "mistral-nemo.labels" -}}
helm.sh/chart: {{ include "mistral-nemo.chart" .ctx }}
{{ include "mistral-nemo.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: {{ include "mistral-nemo.name" .ctx }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "mistral-nemo.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "mistral-nemo.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* `repository@digest` when a digest is given, else `repository:tag` (tag defaults to appVersion). */}}
{{- define "mistral-nemo.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* `imagePullSecrets:` of a pod, or nothing. */}}
{{- define "mistral-nemo.imagePullSecrets" -}}
{{- with .Values.image.pullSecrets -}}
imagePullSecrets:
{{- range . }}
  - name: {{ . | quote }}
{{- end }}
{{- end -}}
{{- end -}}

{{/* Tensor parallel size: engine.tensorParallelSize, else `tpN` in the profile name; the two must agree. */}}
{{- define "mistral-nemo.tp" -}}
{{- $fromProfile := regexFind "tp[0-9]+" .Values.engine.profile | trimPrefix "tp" -}}
{{- $explicit := int .Values.engine.tensorParallelSize -}}
{{- if and $explicit $fromProfile (ne $explicit (int $fromProfile)) -}}
{{- fail (printf "engine.tensorParallelSize=%d contradicts engine.profile=%s (tp%s)" $explicit .Values.engine.profile $fromProfile) -}}
{{- end -}}
{{- if $explicit -}}
{{- $explicit -}}
{{- else if $fromProfile -}}
{{- int $fromProfile -}}
{{- else -}}
{{- fail (printf "engine.profile=%s names no tensor parallel size (tpN): set engine.tensorParallelSize" .Values.engine.profile) -}}
{{- end -}}
{{- end -}}

{{/* Weight/activation precision: engine.quantization, else fp8 or bf16 in the profile name. */}}
{{- define "mistral-nemo.quantization" -}}
{{- $fromProfile := regexFind "fp8|bf16" .Values.engine.profile -}}
{{- if .Values.engine.quantization -}}
{{- .Values.engine.quantization -}}
{{- else if $fromProfile -}}
{{- $fromProfile -}}
{{- else -}}
{{- fail (printf "engine.profile=%s names no precision (fp8 or bf16): set engine.quantization" .Values.engine.profile) -}}
{{- end -}}
{{- end -}}

{{- define "mistral-nemo.kvCacheDtype" -}}
{{- default (include "mistral-nemo.quantization" .) .Values.engine.kvCacheDtype -}}
{{- end -}}

{{/* Short hash of the model's identity (name and revision). */}}
{{- define "mistral-nemo.modelHash" -}}
{{- printf "%s@%s" .Values.model.name .Values.model.revision | sha256sum | trunc 12 -}}
{{- end -}}

{{/*
Engine cache key: GPU product / profile / model hash / TensorRT-LLM version. An engine only runs on the
GPU model and TensorRT-LLM version it was built with, so each combination gets its own directory.
*/}}
{{- define "mistral-nemo.engineKey" -}}
{{- $gpu := regexReplaceAll "[^a-z0-9]+" (lower .Values.gpu.product) "-" | trimAll "-" -}}
{{- /* the engine runtime keeps its key of before engine.runtime; the pytorch one builds into a key of its own */ -}}
{{- $runtime := ternary "-pytorch" "" (eq .Values.engine.runtime "pytorch") -}}
{{- printf "%s/%s/%s/trtllm-%s%s" $gpu .Values.engine.profile (include "mistral-nemo.modelHash" .) .Values.engine.trtllmVersion $runtime -}}
{{- end -}}

{{- define "mistral-nemo.engineKeyHash" -}}
{{- include "mistral-nemo.engineKey" . | sha256sum | trunc 16 -}}
{{- end -}}

{{- define "mistral-nemo.cacheMountPath" -}}/cache{{- end -}}

{{/* Directory of one engine key on the cache volume: checkpoint/, engine/, repository/, BUILD_COMPLETE. */}}
{{- define "mistral-nemo.engineDir" -}}
{{- printf "%s/engines/%s" (include "mistral-nemo.cacheMountPath" .) (include "mistral-nemo.engineKey" .) -}}
{{- end -}}

{{- define "mistral-nemo.modelRepositoryDir" -}}
{{- printf "%s/repository" (include "mistral-nemo.engineDir" .) -}}
{{- end -}}

{{/* The Hugging Face directory as the build container sees it. */}}
{{- define "mistral-nemo.modelDir" -}}
{{- if eq .Values.model.source "pvc" -}}
/model
{{- else -}}
{{- printf "%s/hf/%s/%s" (include "mistral-nemo.cacheMountPath" .) .Values.model.name .Values.model.revision -}}
{{- end -}}
{{- end -}}

{{/*
Everything that decides the build's output. The build writes it to BUILD_COMPLETE when it succeeds;
Triton pods wait until the file holds exactly this text.
*/}}
{{- define "mistral-nemo.buildSpec" -}}
{{- /* engine.runtime enters the spec only when it is pytorch: engine builds keep their spec of before */ -}}
{{- $spec := dict "key" (include "mistral-nemo.engineKey" .) "model" (printf "%s@%s" .Values.model.name .Values.model.revision) "tp" (int (include "mistral-nemo.tp" .)) "quantization" (include "mistral-nemo.quantization" .) "kvCache" (include "mistral-nemo.kvCacheDtype" .) "tokenizer" .Values.model.tokenizerFile "servedModelName" .Values.model.servedModelName "checkpointArgs" .Values.engine.checkpointArgs "engineArgs" .Values.engine.engineArgs "repositoryArgs" .Values.engine.repositoryArgs -}}
{{- if eq .Values.engine.runtime "pytorch" }}{{ $_ := set $spec "runtime" "pytorch" }}{{ end -}}
{{- /* LoRA renders a different repository (lora_dir, max rank); the adapters themselves are rescanned, not built */ -}}
{{- if .Values.lora.source }}{{ $_ := set $spec "lora" (dict "dir" (include "mistral-nemo.loraDir" .) "maxRank" (int .Values.lora.maxRank)) }}{{ end -}}
{{- $spec | toJson -}}
{{- end -}}

{{/* Where Triton and the gateway see the LoRA adapters (the `lora_dir` the rendered repository names). */}}
{{- define "mistral-nemo.loraDir" -}}/opt/nemo/lora{{- end -}}

{{/* The adapters' directory on the cache volume (lora.source=download), one per release. */}}
{{- define "mistral-nemo.loraCacheSubPath" -}}
{{- printf "lora/%s" (include "mistral-nemo.fullname" .) -}}
{{- end -}}

{{/* The pod volume that holds the adapters; empty without lora.source. */}}
{{- define "mistral-nemo.loraVolume" -}}
{{- $lora := .Values.lora -}}
{{- if eq $lora.source "pvc" -}}
- name: lora-adapters
  persistentVolumeClaim:
    claimName: {{ $lora.pvc.existingClaim | quote }}
    readOnly: true
{{- else if eq $lora.source "download" -}}
- name: lora-adapters
  persistentVolumeClaim:
    claimName: {{ include "mistral-nemo.cacheClaimName" . | quote }}
    readOnly: true
{{- else if eq $lora.source "configMap" -}}
{{- /* One directory per adapter, named by it, as the runtime scans them. No subPath on the mount, so a changed
       ConfigMap reaches the pods without a restart. */}}
- name: lora-adapters
  projected:
    sources:
      {{- range $lora.configMaps }}
      - configMap:
          name: {{ .configMap | quote }}
          items:
            - key: adapter_config.json
              path: {{ printf "%s/adapter_config.json" .name | quote }}
            - key: adapter_model.safetensors
              path: {{ printf "%s/adapter_model.safetensors" .name | quote }}
      {{- end }}
{{- end -}}
{{- end -}}

{{/* The read-only mount of the adapters at loraDir; empty without lora.source. */}}
{{- define "mistral-nemo.loraVolumeMount" -}}
{{- $lora := .Values.lora -}}
{{- if $lora.source -}}
- name: lora-adapters
  mountPath: {{ include "mistral-nemo.loraDir" . }}
  readOnly: true
  {{- if eq $lora.source "download" }}
  subPath: {{ include "mistral-nemo.loraCacheSubPath" . | quote }}
  {{- else if and (eq $lora.source "pvc") $lora.pvc.subPath }}
  subPath: {{ $lora.pvc.subPath | quote }}
  {{- end }}
{{- end -}}
{{- end -}}

{{- define "mistral-nemo.loraDownloadJobName" -}}
{{- $hash := printf "%s|%s" (toJson .Values.lora.download.adapters) (include "mistral-nemo.image" .) | sha256sum | trunc 10 -}}
{{- printf "%s-lora-%s" (include "mistral-nemo.fullname" . | trunc 47 | trimSuffix "-") $hash -}}
{{- end -}}

{{/* lora.download.adapters as download-adapters.sh reads them: `<name> <repo> <revision>` per line. */}}
{{- define "mistral-nemo.loraDownloadList" -}}
{{- range .Values.lora.download.adapters -}}
{{ printf "%s %s %s" .name .repo (default "main" .revision) }}
{{ end -}}
{{- end -}}

{{- define "mistral-nemo.cacheClaimName" -}}
{{- default (include "mistral-nemo.componentName" (dict "ctx" . "component" "cache")) .Values.cache.existingClaim -}}
{{- end -}}

{{- define "mistral-nemo.scriptsName" -}}
{{- include "mistral-nemo.componentName" (dict "ctx" . "component" "scripts") -}}
{{- end -}}

{{/* The build Job's name changes whenever its pod template would, because a Job's template is immutable. */}}
{{- define "mistral-nemo.buildJobName" -}}
{{- $hash := printf "%s|%s" (include "mistral-nemo.buildSpec" .) (include "mistral-nemo.image" .) | sha256sum | trunc 10 -}}
{{- printf "%s-engine-%s" (include "mistral-nemo.fullname" . | trunc 45 | trimSuffix "-") $hash -}}
{{- end -}}

{{- define "mistral-nemo.tritonName" -}}
{{- include "mistral-nemo.componentName" (dict "ctx" . "component" "triton") -}}
{{- end -}}

{{- define "mistral-nemo.gatewayName" -}}
{{- include "mistral-nemo.componentName" (dict "ctx" . "component" "gateway") -}}
{{- end -}}

{{- define "mistral-nemo.tritonHeadlessName" -}}
{{- include "mistral-nemo.componentName" (dict "ctx" . "component" "triton-headless") -}}
{{- end -}}

{{/* "true" when the gateway Deployment (and its Service, PDB, HPA, Ingress, NetworkPolicy) is rendered, else "". */}}
{{- define "mistral-nemo.gatewayDeployment" -}}
{{- if and .Values.gateway.enabled (eq .Values.routing.mode "gateway") -}}true{{- end -}}
{{- end -}}

{{/* "true" with routing.mode=inferencePool: InferencePool, endpoint picker, HTTPRoute, gateway in the Triton pods. */}}
{{- define "mistral-nemo.inferencePool" -}}
{{- if eq .Values.routing.mode "inferencePool" -}}true{{- end -}}
{{- end -}}

{{/* The engine type llm-d-router's metrics extractor knows Triton's TensorRT-LLM metric names by (pod label llm-d.ai/engine-type). */}}
{{- define "mistral-nemo.engineType" -}}triton-tensorrt-llm{{- end -}}

{{- define "mistral-nemo.inferencePoolName" -}}
{{- include "mistral-nemo.componentName" (dict "ctx" . "component" "pool") -}}
{{- end -}}

{{- define "mistral-nemo.pickerName" -}}
{{- include "mistral-nemo.componentName" (dict "ctx" . "component" "endpoint-picker") -}}
{{- end -}}

{{/* The picker image: `repository@digest` when a digest is given, else `repository:tag`. */}}
{{- define "mistral-nemo.pickerImage" -}}
{{- $image := .Values.routing.inferencePool.picker.image -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository $image.tag -}}
{{- end -}}
{{- end -}}

{{/* Ports of the endpoint picker, as llm-d-router's chart and image (EXPOSE) have them. */}}
{{- define "mistral-nemo.pickerExtProcPort" -}}9002{{- end -}}
{{- define "mistral-nemo.pickerHealthPort" -}}9003{{- end -}}
{{- define "mistral-nemo.pickerMetricsPort" -}}9090{{- end -}}

{{/*
The gateway Deployment's Triton target: gateway.tritonUrl, else every ready Triton pod through the headless
Service's fully qualified name (`dns:///`: the gateway resolves all pod addresses and balances requests over them
with gateway.tritonLoadBalancing; a ClusterIP would pin its one HTTP/2 connection to one pod).
*/}}
{{- define "mistral-nemo.gatewayTritonUrl" -}}
{{- default (printf "dns:///%s.%s.svc.%s:8001" (include "mistral-nemo.tritonHeadlessName" .) .Release.Namespace .Values.clusterDomain) .Values.gateway.tritonUrl -}}
{{- end -}}

{{/* "true" when the headless Triton Service is rendered: asked for, or needed by the gateway Deployment's default target. */}}
{{- define "mistral-nemo.tritonHeadless" -}}
{{- if or .Values.triton.service.headless (and (include "mistral-nemo.gatewayDeployment" .) (not .Values.gateway.tritonUrl)) -}}true{{- end -}}
{{- end -}}

{{/*
`nemo-gateway` arguments for load shedding, one flag per gateway.admission value above 0 (a gateway without the
flags still starts with the defaults): --max-in-flight, --max-queued, --max-queue-wait-s. As a YAML list.
*/}}
{{- define "mistral-nemo.gatewayAdmissionArgs" -}}
{{- $admission := .Values.gateway.admission -}}
{{- $args := list -}}
{{- if gt (int $admission.maxInFlight) 0 -}}
{{- $args = concat $args (list "--max-in-flight" (toString (int $admission.maxInFlight))) -}}
{{- end -}}
{{- if gt (int $admission.maxQueued) 0 -}}
{{- $args = concat $args (list "--max-queued" (toString (int $admission.maxQueued))) -}}
{{- end -}}
{{- if gt (float64 $admission.maxQueueWaitSeconds) 0.0 -}}
{{- $args = concat $args (list "--max-queue-wait-s" (toString $admission.maxQueueWaitSeconds)) -}}
{{- end -}}
{{- toYaml $args -}}
{{- end -}}

{{/* Where the gateway Deployment's pods mount the SQLite response store's volume. */}}
{{- define "mistral-nemo.responseStoreDir" -}}/var/lib/nemo-gateway{{- end -}}

{{/*
`nemo-gateway` arguments for the response store (gateway.responseStore): --response-store (the SQLite file on the
store volume when the pod has one, else in the pod's /tmp; the PostgreSQL URL; '' for none) and
--response-retention. As a YAML list. Usage: include "mistral-nemo.gatewayStoreArgs" (dict "ctx" $ "storeVolume" "name-or-empty")
*/}}
{{- define "mistral-nemo.gatewayStoreArgs" -}}
{{- $store := .ctx.Values.gateway.responseStore -}}
{{- $where := "" -}}
{{- if eq $store.type "sqlite" -}}
{{- $where = printf "%s/responses.sqlite3" (ternary (include "mistral-nemo.responseStoreDir" .ctx) "/tmp/nemo-gateway" (not (empty .storeVolume))) -}}
{{- else if eq $store.type "postgres" -}}
{{- $where = required "gateway.responseStore.type=postgres needs gateway.responseStore.postgres.url" $store.postgres.url -}}
{{- end -}}
{{- toYaml (list "--response-store" $where "--response-retention" (toString (int $store.retentionSeconds))) -}}
{{- end -}}

{{/* "true" when more than one pod runs a gateway: the gateway Deployment's pods, or with routing.mode=inferencePool the Triton pods that carry one each. */}}
{{- define "mistral-nemo.severalGatewayPods" -}}
{{- $scaled := ternary .Values.triton .Values.gateway (not (empty (include "mistral-nemo.inferencePool" .))) -}}
{{- if or $scaled.autoscaling.enabled (gt (int $scaled.replicaCount) 1) -}}true{{- end -}}
{{- end -}}

{{/* "true" when the gateway Deployment keeps its SQLite response store on a PersistentVolumeClaim the chart creates. */}}
{{- define "mistral-nemo.responseStoreClaim" -}}
{{- $store := .Values.gateway.responseStore -}}
{{- if and (include "mistral-nemo.gatewayDeployment" .) (eq $store.type "sqlite") $store.sqlite.persistence (not $store.sqlite.existingClaim) -}}true{{- end -}}
{{- end -}}

{{- define "mistral-nemo.responseStoreClaimName" -}}
{{- default (printf "%s-responses" (include "mistral-nemo.gatewayName" .)) .Values.gateway.responseStore.sqlite.existingClaim -}}
{{- end -}}

{{/*
The `nemo-gateway` container, for the gateway Deployment and (routing.mode=inferencePool) the Triton pods.
Usage: include "mistral-nemo.gatewayContainer" (dict "ctx" $ "tritonUrl" "..." "lbPolicy" true "port" 8000 "portName" "http"
"tmpVolume" "tmp" "storeVolume" "responses") (storeVolume: the SQLite store's volume, mounted when given)
*/}}
{{- define "mistral-nemo.gatewayContainer" -}}
{{- $ctx := .ctx -}}
{{- $gw := $ctx.Values.gateway -}}
- name: gateway
  image: {{ include "mistral-nemo.image" $ctx | quote }}
  imagePullPolicy: {{ $ctx.Values.image.pullPolicy }}
  args:
    - nemo-gateway
    - --triton-url
    - {{ .tritonUrl | quote }}
    {{- if .lbPolicy }}
    - --triton-lb-policy
    - {{ $gw.tritonLoadBalancing | quote }}
    {{- end }}
    - --host
    - "0.0.0.0"
    - --port
    - {{ .port | quote }}
    - --served-model-name
    - {{ $ctx.Values.model.servedModelName | quote }}
    - --chat-path
    - {{ $gw.chatPath | quote }}
    - --request-timeout
    - {{ $gw.requests.timeoutSeconds | toString | quote }}
    - --body-timeout
    - {{ $gw.requests.bodyTimeoutSeconds | toString | quote }}
    - --max-body-bytes
    - {{ int $gw.requests.maxBodyBytes | toString | quote }}
    {{- range (include "mistral-nemo.gatewayAdmissionArgs" $ctx | fromYamlArray) }}
    - {{ . | quote }}
    {{- end }}
    {{- range (include "mistral-nemo.gatewayStoreArgs" (dict "ctx" $ctx "storeVolume" .storeVolume) | fromYamlArray) }}
    - {{ . | quote }}
    {{- end }}
    {{- range $gw.extraArgs }}
    - {{ . | quote }}
    {{- end }}
  env:
    - name: NIM_SERVED_MODEL_NAME
      value: {{ $ctx.Values.model.servedModelName | quote }}
    {{- if $gw.apiKey.enabled }}
    - name: NEMO_GATEWAY_API_KEY
      valueFrom:
        secretKeyRef:
          name: {{ include "mistral-nemo.gatewaySecretName" $ctx | quote }}
          key: {{ $gw.apiKey.secretKey | quote }}
    {{- end }}
    {{- if and (eq $gw.responseStore.type "postgres") $gw.responseStore.postgres.passwordSecret }}
    - name: PGPASSWORD
      valueFrom:
        secretKeyRef:
          name: {{ $gw.responseStore.postgres.passwordSecret | quote }}
          key: {{ $gw.responseStore.postgres.passwordKey | quote }}
    {{- end }}
    # The root filesystem is read-only: no bytecode caches, scratch space in /tmp.
    - name: PYTHONDONTWRITEBYTECODE
      value: "1"
    - name: HOME
      value: /tmp
    {{- with $gw.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  ports:
    - name: {{ .portName }}
      containerPort: {{ .port }}
      protocol: TCP
  readinessProbe:
    httpGet:
      path: /v1/health/ready
      port: {{ .portName }}
    {{- toYaml $gw.readinessProbe | nindent 4 }}
  livenessProbe:
    httpGet:
      path: /v1/health/live
      port: {{ .portName }}
    {{- toYaml $gw.livenessProbe | nindent 4 }}
  lifecycle:
    preStop:
      exec:
        command: ["sleep", {{ $gw.preStopSleepSeconds | quote }}]
  resources:
    {{- toYaml $gw.resources | nindent 4 }}
  securityContext:
    {{- include "mistral-nemo.containerSecurityContext" (dict "ctx" $ctx "override" $gw.containerSecurityContext) | nindent 4 }}
  volumeMounts:
    - name: {{ .tmpVolume }}
      mountPath: /tmp
    {{- if .storeVolume }}
    - name: {{ .storeVolume }}
      mountPath: {{ include "mistral-nemo.responseStoreDir" $ctx }}
    {{- end }}
    {{- if $ctx.Values.lora.mountInGateway }}
    {{- with (include "mistral-nemo.loraVolumeMount" $ctx) }}
    {{- . | nindent 4 }}
    {{- end }}
    {{- end }}
{{- end -}}

{{- define "mistral-nemo.gatewaySecretName" -}}
{{- default (printf "%s-api-key" (include "mistral-nemo.gatewayName" .)) .Values.gateway.apiKey.existingSecret -}}
{{- end -}}

{{/*
`.base` with `.override` merged on top, as JSON: maps merge key by key, any other value of the override wins,
false and 0 included (sprig's mergeOverwrite skips those, so `runAsNonRoot: false` would not override).
*/}}
{{- define "mistral-nemo.merge" -}}
{{- $merged := deepCopy .base -}}
{{- range $key, $value := .override -}}
{{- if and (kindIs "map" $value) (kindIs "map" (get $merged $key)) -}}
{{- $_ := set $merged $key (include "mistral-nemo.merge" (dict "base" (get $merged $key) "override" $value) | fromJson) -}}
{{- else -}}
{{- $_ := set $merged $key (deepCopy $value) -}}
{{- end -}}
{{- end -}}
{{- toJson $merged -}}
{{- end -}}

{{/* Container security context: the chart-wide one with a component's overrides merged on top. */}}
{{- define "mistral-nemo.containerSecurityContext" -}}
{{- include "mistral-nemo.merge" (dict "base" .ctx.Values.containerSecurityContext "override" .override) | fromJson | toYaml -}}
{{- end -}}

{{/* Pod security context of the GPU pods (Triton, the build Job): podSecurityContext with triton.podSecurityContext on top. */}}
{{- define "mistral-nemo.gpuPodSecurityContext" -}}
{{- include "mistral-nemo.merge" (dict "base" .Values.podSecurityContext "override" .Values.triton.podSecurityContext) | fromJson | toYaml -}}
{{- end -}}

{{- define "mistral-nemo.tritonAdminSecretName" -}}
{{- default (include "mistral-nemo.componentName" (dict "ctx" . "component" "triton-admin-key")) .Values.triton.adminKey.existingSecret -}}
{{- end -}}

{{/*
Triton's admin APIs and the header that must carry the admin key: the API groups and header of `nemo-serve`
(build/nemo_ops/launcher.py RESTRICTED_APIS and ADMIN_KEY_HEADER; a chart test holds the two equal). Health,
metadata, model config and inference stay open, so the probes and the gateway need no key.
*/}}
{{- define "mistral-nemo.tritonRestrictedApis" -}}shared-memory,model-repository,statistics,trace,logging{{- end -}}
{{- define "mistral-nemo.tritonAdminKeyHeader" -}}nemo-admin-key{{- end -}}
{{- define "mistral-nemo.tritonAdminKeyEnv" -}}NEMO_TRITON_ADMIN_KEY{{- end -}}

{{/*
One NetworkPolicyPeer from a list of namespace names and pod labels, as JSON, or "" when both are empty and
`.anyNamespace` is false. Namespaces and labels together select those pods in those namespaces; labels alone
select pods in the release namespace, or in every namespace with `.anyNamespace`; namespaces alone select
every pod in them; neither selects every pod in every namespace (`.anyNamespace` only).
*/}}
{{- define "mistral-nemo.policyPeer" -}}
{{- $peer := dict -}}
{{- if .namespaces -}}
{{- $_ := set $peer "namespaceSelector" (dict "matchExpressions" (list (dict "key" "kubernetes.io/metadata.name" "operator" "In" "values" .namespaces))) -}}
{{- else if .anyNamespace -}}
{{- $_ := set $peer "namespaceSelector" (dict) -}}
{{- end -}}
{{- with .podLabels -}}
{{- $_ := set $peer "podSelector" (dict "matchLabels" .) -}}
{{- end -}}
{{- if $peer -}}
{{- toJson $peer -}}
{{- end -}}
{{- end -}}

{{/* Node selector of GPU pods: triton.nodeSelector plus the GPU product label when pinned. */}}
{{- define "mistral-nemo.gpuNodeSelector" -}}
{{- $selector := deepCopy .Values.triton.nodeSelector -}}
{{- if .Values.gpu.pinProduct -}}
{{- $_ := set $selector .Values.gpu.productLabel .Values.gpu.product -}}
{{- end -}}
{{- with $selector -}}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end -}}
{{- end -}}

{{/* Topology spread constraints; a constraint without labelSelector gets the component's selector labels. */}}
{{- define "mistral-nemo.topologySpread" -}}
{{- $ctx := .ctx -}}
{{- $component := .component -}}
{{- $constraints := list -}}
{{- range .constraints -}}
{{- $constraint := deepCopy . -}}
{{- if not (hasKey $constraint "labelSelector") -}}
{{- $_ := set $constraint "labelSelector" (dict "matchLabels" (include "mistral-nemo.selectorLabels" (dict "ctx" $ctx "component" $component) | fromYaml)) -}}
{{- end -}}
{{- $constraints = append $constraints $constraint -}}
{{- end -}}
{{- with $constraints -}}
topologySpreadConstraints:
{{- toYaml . | nindent 2 }}
{{- end -}}
{{- end -}}

{{/* GPU count of a container: one per tensor-parallel rank. */}}
{{- define "mistral-nemo.gpuResources" -}}
{{- $resources := deepCopy .resources -}}
{{- $limits := default (dict) (get $resources "limits") -}}
{{- $_ := set $limits .ctx.Values.gpu.resourceName (int (include "mistral-nemo.tp" .ctx)) -}}
{{- $_ := set $resources "limits" $limits -}}
{{- toYaml $resources -}}
{{- end -}}

{{/* Cross-field checks the schema cannot express. */}}
{{- define "mistral-nemo.validate" -}}
{{- if and (eq .Values.model.source "pvc") (not .Values.model.pvc.existingClaim) -}}
{{- fail "model.source=pvc needs model.pvc.existingClaim: the claim that holds the Hugging Face directory" -}}
{{- end -}}
{{- if and .Values.triton.autoscaling.enabled (gt (int .Values.triton.autoscaling.minReplicas) (int .Values.triton.autoscaling.maxReplicas)) -}}
{{- fail (printf "triton.autoscaling.minReplicas (%d) exceeds maxReplicas (%d)" (int .Values.triton.autoscaling.minReplicas) (int .Values.triton.autoscaling.maxReplicas)) -}}
{{- end -}}
{{- if le (int .Values.triton.terminationGracePeriodSeconds) (add 10 (int .Values.triton.preStopSleepSeconds)) -}}
{{- fail (printf "triton.terminationGracePeriodSeconds (%d) must exceed triton.preStopSleepSeconds + 10 (%d) to leave Triton time to drain" (int .Values.triton.terminationGracePeriodSeconds) (add 10 (int .Values.triton.preStopSleepSeconds))) -}}
{{- end -}}
{{- if and .Values.gateway.ingress.enabled (not .Values.gateway.enabled) -}}
{{- fail "gateway.ingress.enabled needs gateway.enabled: the Ingress routes to the gateway" -}}
{{- end -}}
{{- if and .Values.gateway.enabled .Values.gateway.autoscaling.enabled (gt (int .Values.gateway.autoscaling.minReplicas) (int .Values.gateway.autoscaling.maxReplicas)) -}}
{{- fail (printf "gateway.autoscaling.minReplicas (%d) exceeds maxReplicas (%d)" (int .Values.gateway.autoscaling.minReplicas) (int .Values.gateway.autoscaling.maxReplicas)) -}}
{{- end -}}
{{- if and .Values.gateway.enabled (eq .Values.gateway.responseStore.type "sqlite") (include "mistral-nemo.severalGatewayPods" .) -}}
{{- fail "gateway.responseStore.type=sqlite keeps the stored responses in one pod's own file, and this release runs several gateway pods (gateway.replicaCount > 1, autoscaling, or routing.mode=inferencePool with several Triton pods): each would find only the responses it stored. Use gateway.responseStore.type=postgres, which every pod shares, or one gateway pod" -}}
{{- end -}}
{{- if include "mistral-nemo.inferencePool" . -}}
{{- if not .Values.gateway.enabled -}}
{{- fail "routing.mode=inferencePool needs gateway.enabled: the pool's model servers are the gateway containers in the Triton pods (OpenAI API on routing.inferencePool.port)" -}}
{{- end -}}
{{- if .Values.gateway.ingress.enabled -}}
{{- fail "gateway.ingress.enabled needs routing.mode=gateway: with inferencePool there is no gateway Service; clients come through your Gateway and the HTTPRoute" -}}
{{- end -}}
{{- if and .Values.routing.inferencePool.httpRoute.create (not .Values.routing.inferencePool.httpRoute.gateway.name) -}}
{{- fail "routing.inferencePool.httpRoute.gateway.name is required: the Gateway the HTTPRoute to the InferencePool attaches to" -}}
{{- end -}}
{{- $picker := .Values.routing.inferencePool.picker -}}
{{- if not (or (eq $picker.configFile "default-plugins.yaml") (hasKey $picker.extraConfigFiles $picker.configFile)) -}}
{{- fail (printf "routing.inferencePool.picker.configFile=%s is neither default-plugins.yaml nor a key of routing.inferencePool.picker.extraConfigFiles" $picker.configFile) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.triton.adminKey.existingSecret .Values.triton.adminKey.value -}}
{{- fail "triton.adminKey.value and triton.adminKey.existingSecret exclude each other: the key is either in your Secret or in the one the chart creates" -}}
{{- end -}}
{{- $adapters := list -}}
{{- if eq .Values.lora.source "configMap" }}{{ $adapters = .Values.lora.configMaps }}{{ end -}}
{{- if eq .Values.lora.source "download" }}{{ $adapters = .Values.lora.download.adapters }}{{ end -}}
{{- $names := list -}}
{{- range $adapters -}}
{{- if has .name $names -}}
{{- fail (printf "lora: the adapter name %s is listed twice; each adapter is served under its own name" .name) -}}
{{- end -}}
{{- $names = append $names .name -}}
{{- end -}}
{{- if has .Values.model.servedModelName $names -}}
{{- fail (printf "lora: the adapter name %s is model.servedModelName; the base model keeps its name" .Values.model.servedModelName) -}}
{{- end -}}
{{- $_ := include "mistral-nemo.tp" . -}}
{{- $_ := include "mistral-nemo.quantization" . -}}
{{- end -}}
