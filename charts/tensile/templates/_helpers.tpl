{{/* Names and labels shared by every template. */}}
{{- define "tensile.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 50 | trimSuffix "-" -}}
{{- end -}}

{{/* 50 characters leave room for the longest suffix (-worker-defaults) in a 63-character name. */}}
{{- define "tensile.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "tensile.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "tensile.labels" -}}
app.kubernetes.io/name: {{ include "tensile.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "tensile.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tensile.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "tensile.serviceAccountName" -}}
{{- default (include "tensile.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "tensile.operatorImage" -}}
{{- printf "%s:%s" .Values.operator.image.repository (default .Chart.AppVersion .Values.operator.image.tag) -}}
{{- end -}}

{{- define "tensile.workerImage" -}}
{{- printf "%s:%s" .Values.workers.image.repository (default .Chart.AppVersion .Values.workers.image.tag) -}}
{{- end -}}

{{- define "tensile.natsUrl" -}}
{{- if .Values.nats.bundled.enabled -}}
{{- printf "nats://%s-nats.%s.svc:4222" (include "tensile.fullname" .) .Release.Namespace -}}
{{- else -}}
{{- required "nats.external.url is required when nats.bundled.enabled is false" .Values.nats.external.url -}}
{{- end -}}
{{- end -}}

{{- define "tensile.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets: {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* The operator's affinity: operator.affinity as given, else the podAntiAffinity preset. */}}
{{- define "tensile.operatorAffinity" -}}
{{- if .Values.operator.affinity -}}
{{- toYaml .Values.operator.affinity -}}
{{- else if eq .Values.operator.podAntiAffinity "hard" -}}
podAntiAffinity:
  requiredDuringSchedulingIgnoredDuringExecution:
    - topologyKey: kubernetes.io/hostname
      labelSelector:
        matchLabels:
          {{- include "tensile.selectorLabels" . | nindent 10 }}
          app.kubernetes.io/component: operator
{{- else if eq .Values.operator.podAntiAffinity "soft" -}}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "tensile.selectorLabels" . | nindent 12 }}
            app.kubernetes.io/component: operator
{{- end -}}
{{- end -}}
