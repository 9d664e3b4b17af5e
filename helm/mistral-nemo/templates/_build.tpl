{{/*
The engine-build container, shared by the build Job and the init-container mode, and the volumes the
GPU pods mount.
*/}}

{{/* Environment every script that deals with the engine directory gets. */}}
{{- define "mistral-nemo.engineEnv" -}}
- name: ENGINE_DIR
  value: {{ include "mistral-nemo.engineDir" . | quote }}
- name: BUILD_SPEC
  value: {{ include "mistral-nemo.buildSpec" . | quote }}
{{- end -}}

{{- define "mistral-nemo.buildContainer" -}}
- name: build-engine
  image: {{ include "mistral-nemo.image" . | quote }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args: ["bash", "/opt/nemo/scripts/build-engine.sh"]
  env:
    {{- include "mistral-nemo.engineEnv" . | nindent 4 }}
    - name: MODEL_SOURCE
      value: {{ .Values.model.source | quote }}
    - name: MODEL_DIR
      value: {{ include "mistral-nemo.modelDir" . | quote }}
    - name: TOKENIZER_FILE
      value: {{ .Values.model.tokenizerFile | quote }}
    - name: SERVED_MODEL_NAME
      value: {{ .Values.model.servedModelName | quote }}
    - name: RUNTIME
      value: {{ .Values.engine.runtime | quote }}
    - name: PROFILE
      value: {{ .Values.engine.profile | quote }}
    - name: TP
      value: {{ include "mistral-nemo.tp" . | quote }}
    - name: QUANTIZATION
      value: {{ include "mistral-nemo.quantization" . | quote }}
    - name: KV_CACHE_DTYPE
      value: {{ include "mistral-nemo.kvCacheDtype" . | quote }}
    - name: EXPECTED_TRTLLM_VERSION
      value: {{ .Values.engine.trtllmVersion | quote }}
    - name: EXPECTED_GPU_PRODUCT
      value: {{ .Values.gpu.product | quote }}
    - name: CHECKPOINT_ARGS
      value: {{ join "\n" .Values.engine.checkpointArgs | quote }}
    - name: ENGINE_ARGS
      value: {{ join "\n" .Values.engine.engineArgs | quote }}
    - name: REPOSITORY_ARGS
      value: {{ join "\n" .Values.engine.repositoryArgs | quote }}
    {{- if .Values.lora.source }}
    # The repository names the adapter directory as Triton and the gateway mount it; nothing is read from it here.
    - name: LORA_DIR
      value: {{ include "mistral-nemo.loraDir" . | quote }}
    {{- if .Values.lora.maxRank }}
    - name: MAX_LORA_RANK
      value: {{ .Values.lora.maxRank | quote }}
    {{- end }}
    {{- end }}
    # Hugging Face caches (calibration data, downloads) live on the cache volume.
    - name: HF_HOME
      value: {{ printf "%s/hf-home" (include "mistral-nemo.cacheMountPath" .) | quote }}
    {{- if eq .Values.model.source "download" }}
    - name: HF_MODEL_NAME
      value: {{ .Values.model.name | quote }}
    - name: HF_MODEL_REVISION
      value: {{ .Values.model.revision | quote }}
    - name: HF_ALLOW_PATTERNS
      value: {{ join "\n" .Values.model.download.allowPatterns | quote }}
    {{- with .Values.model.download.endpoint }}
    - name: HF_ENDPOINT
      value: {{ . | quote }}
    {{- end }}
    {{- with .Values.model.download.tokenSecret.name }}
    - name: HF_TOKEN
      valueFrom:
        secretKeyRef:
          name: {{ . | quote }}
          key: {{ $.Values.model.download.tokenSecret.key | quote }}
    {{- end }}
    {{- end }}
  resources:
    {{- include "mistral-nemo.gpuResources" (dict "ctx" . "resources" .Values.engineBuild.resources) | nindent 4 }}
  securityContext:
    {{- include "mistral-nemo.containerSecurityContext" (dict "ctx" . "override" .Values.engineBuild.containerSecurityContext) | nindent 4 }}
  volumeMounts:
    - name: cache
      mountPath: {{ include "mistral-nemo.cacheMountPath" . }}
    - name: scripts
      mountPath: /opt/nemo/scripts
      readOnly: true
    - name: shm
      mountPath: /dev/shm
    - name: tmp
      mountPath: /tmp
    {{- if eq .Values.model.source "pvc" }}
    - name: model
      mountPath: /model
      readOnly: true
      {{- with .Values.model.pvc.subPath }}
      subPath: {{ . | quote }}
      {{- end }}
    {{- end }}
{{- end -}}

{{/* Volumes of a GPU pod (build Job or Triton). withModel: mount the model claim (builders only). */}}
{{- define "mistral-nemo.gpuPodVolumes" -}}
{{- $ctx := .ctx -}}
- name: cache
  persistentVolumeClaim:
    claimName: {{ include "mistral-nemo.cacheClaimName" $ctx }}
- name: scripts
  configMap:
    name: {{ include "mistral-nemo.scriptsName" $ctx }}
- name: shm
  emptyDir:
    medium: Memory
    sizeLimit: {{ $ctx.Values.triton.shmSize | quote }}
- name: tmp
  emptyDir: {}
{{- if and .withModel (eq $ctx.Values.model.source "pvc") }}
- name: model
  persistentVolumeClaim:
    claimName: {{ $ctx.Values.model.pvc.existingClaim | quote }}
    readOnly: true
{{- end }}
{{- end -}}
