{{/* Names and labels shared by every template. */}}
{{- define "tensile.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "tensile.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "tensile.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
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
